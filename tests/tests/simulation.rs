//! Deterministic simulations: the real client (driver, batch client, machine) against the
//! simulated cluster on the simulated runtime, with virtual time. Replay a seed with
//! `TIKV_SIM_SEED=<seed>`.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tikv_core::{Client, Config, Error, Runtime as _};
use tikv_sim::faults::{FaultAction, FaultRule};
use tikv_tests::simulation::checker::{self, Record};
use tikv_tests::simulation::workload::{RawWorkload, run_raw_workload};
use tikv_tests::simulation::{
    Answer, ClusterFault, Network, Op, PD_ADDRESS, Setup, SimError, Simulation, seeds,
};

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// A simulation for trace snapshots: every message takes exactly 1 ms, nothing is lost.
fn scenario() -> Simulation {
    scenario_with(Config::default())
}

fn scenario_with(client: Config) -> Simulation {
    let setup = Setup {
        client,
        network: Network {
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(1),
            reply_loss_per_mille: 0,
        },
        ..Setup::default()
    };
    Simulation::new(1, setup).unwrap_or_else(|err| panic!("{err}"))
}

fn run(sim: &mut Simulation, op: Op) -> Answer {
    match sim.run(op) {
        Ok(Ok(answer)) => answer,
        other => panic!("{other:?}\n{}", sim.trace().join("\n")),
    }
}

fn trace_text(sim: &Simulation) -> String {
    sim.trace().join("\n")
}

/// Polls `future` for the virtual time `duration`, then hands it back unfinished (it must not
/// finish in that time).
fn poll_for<F: Future + Unpin>(sim: &mut Simulation, future: &mut F, duration: Duration)
where
    F::Output: std::fmt::Debug,
{
    let executor = sim.runtime().executor().clone();
    let mut timer = executor.sleep_until(executor.now() + duration);
    let polled = sim.block_on(std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = std::pin::Pin::new(&mut *future).poll(cx) {
            return Poll::Ready(Some(output));
        }
        timer.as_mut().poll(cx).map(|()| None)
    }));
    match polled {
        Ok(None) => {}
        other => panic!("expected the future to still wait: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios with snapshotted traces.
// ---------------------------------------------------------------------------------------------

#[test]
fn batch_put_across_a_split_regroups_after_epoch_not_match() {
    let mut sim = scenario();
    run(&mut sim, Op::put("k1", "warm"));
    sim.take_trace();
    sim.apply(ClusterFault::Split(bytes("k5")));
    let answer = run(
        &mut sim,
        Op::batch_put(&[("k1", "a"), ("k3", "b"), ("k7", "c")]),
    );
    assert_eq!(answer, Answer::Unit);
    let trace = trace_text(&sim);
    assert!(trace.contains("EpochNotMatch"), "{trace}");
    assert_eq!(
        run(&mut sim, Op::get("k7")),
        Answer::Value(Some(bytes("c")))
    );
    assert_eq!(
        run(&mut sim, Op::get("k1")),
        Answer::Value(Some(bytes("a")))
    );
    insta::assert_snapshot!(trace);
}

#[test]
fn scan_walks_three_regions() {
    let mut sim = scenario();
    sim.apply(ClusterFault::Split(bytes("k3")));
    sim.apply(ClusterFault::Split(bytes("k6")));
    run(
        &mut sim,
        Op::batch_put(&[("k1", "a"), ("k4", "b"), ("k7", "c"), ("k8", "d")]),
    );
    sim.take_trace();
    let answer = run(&mut sim, Op::scan("k0", "", 10));
    let pairs = vec![
        (bytes("k1"), bytes("a")),
        (bytes("k4"), bytes("b")),
        (bytes("k7"), bytes("c")),
        (bytes("k8"), bytes("d")),
    ];
    assert_eq!(answer, Answer::Pairs(pairs));
    let trace = trace_text(&sim);
    assert_eq!(trace.matches("RawScan").count(), 3, "{trace}");
    insta::assert_snapshot!(trace);
}

#[test]
fn get_meets_not_leader_after_a_leader_transfer() {
    let mut sim = scenario();
    run(&mut sim, Op::put("k1", "v"));
    sim.take_trace();
    sim.apply(ClusterFault::TransferLeader {
        key: bytes("k1"),
        store_id: 2,
    });
    assert_eq!(
        run(&mut sim, Op::get("k1")),
        Answer::Value(Some(bytes("v")))
    );
    let trace = trace_text(&sim);
    assert!(trace.contains("NotLeader(leader on store 2)"), "{trace}");
    assert!(trace.contains("store-2 RawGet"), "{trace}");
    insta::assert_snapshot!(trace);
}

#[test]
fn many_timestamp_waiters_share_one_tso_request() {
    let mut sim = scenario();
    let results = sim
        .run_concurrently(vec![Op::Timestamp; 8])
        .unwrap_or_else(|err| panic!("{err}"));
    let mut distinct: Vec<tikv_core::Timestamp> = results
        .iter()
        .map(|result| match result {
            Ok(Answer::Timestamp(ts)) => *ts,
            other => panic!("{other:?}"),
        })
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 8, "{results:?}");
    let trace = trace_text(&sim);
    assert_eq!(trace.matches("pd.Tso").count(), 1, "{trace}");
    assert!(trace.contains("pd.Tso count=8"), "{trace}");
    insta::assert_snapshot!(trace);
}

#[test]
fn step_limit_catches_a_run_that_does_not_finish() {
    let setup = Setup {
        max_steps: 5,
        ..Setup::default()
    };
    let mut sim = Simulation::new(1, setup).unwrap_or_else(|err| panic!("{err}"));
    let result = sim.run(Op::put("k1", "v"));
    assert!(
        matches!(result, Err(SimError::Livelock { steps: 5, .. })),
        "{result:?}"
    );
}

#[test]
fn leader_on_a_restarted_store_is_reached_again() {
    let mut sim = scenario();
    run(&mut sim, Op::put("k1", "v"));
    sim.take_trace();
    // Store 1 leads the only region. It goes down, the client marks it unreachable, and it
    // comes back 50 ms later still leading the region.
    sim.apply(ClusterFault::StopStore(1));
    let back = sim.now() + Duration::from_millis(50);
    sim.schedule(back, ClusterFault::RestartStore(1));
    let answer = run(&mut sim, Op::get("k1"));
    assert_eq!(answer, Answer::Value(Some(bytes("v"))));
    let trace = sim.trace();
    let sends = trace_text(&sim).matches("RawGet").count();
    assert!(
        sends < 50 && sim.now() < tikv_core::Time::from_millis(5_000),
        "{sends} RawGet sends, finished at {}:\n{}",
        sim.now(),
        trace[..60.min(trace.len())].join("\n")
    );
}

/// A scheduled `ApplyLag` fault slows a store's followers down at its virtual time (what
/// `Sim::set_apply_lag` does to TiKV's apply progress) and is traced like any fault.
#[test]
fn apply_lag_fault_changes_a_followers_lag_at_its_time() {
    use tikv_sim::replica::ApplyLag;
    let mut sim = scenario();
    run(&mut sim, Op::put("k1", "v"));
    let lag = ApplyLag {
        delay_ms: 500,
        entries: 0,
    };
    let at = sim.now() + Duration::from_millis(100);
    sim.schedule(
        at,
        ClusterFault::ApplyLag {
            store_id: Some(2),
            lag,
        },
    );
    assert_eq!(
        sim.with(|cluster| cluster.replicas().apply_lag(2)),
        ApplyLag::default()
    );
    sim.sleep(Duration::from_millis(200))
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(sim.with(|cluster| cluster.replicas().apply_lag(2)), lag);
    assert_eq!(
        sim.with(|cluster| cluster.replicas().apply_lag(3)),
        ApplyLag::default()
    );
    assert!(
        trace_text(&sim).contains("fault apply lag of store 2 to 500 ms, 0 entries: set"),
        "{}",
        trace_text(&sim)
    );
}

// ---------------------------------------------------------------------------------------------
// Workloads under chaos, judged by the history checker.
// ---------------------------------------------------------------------------------------------

#[test]
fn same_seed_gives_the_same_trace() {
    let workload = RawWorkload {
        ops: 40,
        ..RawWorkload::default()
    };
    let seed = seeds(&[7]).unwrap_or_else(|err| panic!("{err}"))[0];
    println!("simulation seed {seed} (replay: TIKV_SIM_SEED={seed})");
    let first = run_raw_workload(seed, &workload).unwrap_or_else(|err| panic!("{err}"));
    let second = run_raw_workload(seed, &workload).unwrap_or_else(|err| panic!("{err}"));
    assert!(first.trace.len() > 100, "{}", first.trace.len());
    assert_eq!(first.trace, second.trace);
    assert_eq!(first.steps, second.steps);
    let other = run_raw_workload(seed + 1, &workload).unwrap_or_else(|err| panic!("{err}"));
    assert_ne!(first.trace, other.trace);
}

fn check_workload(seeds: Vec<u64>, workload: &RawWorkload) {
    for seed in seeds {
        let started = Instant::now();
        println!("simulation seed {seed} (replay: TIKV_SIM_SEED={seed})");
        let report = match run_raw_workload(seed, workload) {
            Ok(report) => report,
            Err(err) => panic!("seed {seed}: {err}"),
        };
        println!(
            "seed {seed}: {} ok, {} failed, {} steps, virtual {}, real {:?}, {:?}",
            report.succeeded,
            report.failed,
            report.steps,
            report.end,
            started.elapsed(),
            report.trouble
        );
        if let Ok(path) = std::env::var("TIKV_SIM_TRACE") {
            std::fs::write(format!("{path}.{seed}"), report.trace.join("\n"))
                .unwrap_or_else(|err| panic!("{err}"));
        }
        if !report.violations.is_empty() {
            let tail = report.trace.len().saturating_sub(200);
            panic!(
                "seed {seed}: {} violations, first: {}\n{}",
                report.violations.len(),
                report.violations[0],
                report.trace[tail..].join("\n")
            );
        }
        assert_eq!(report.history.len(), workload.ops + workload.keys);
        assert!(
            report.succeeded * 2 > workload.ops,
            "seed {seed}: only {} of {} succeeded",
            report.succeeded,
            workload.ops
        );
        let faults = report
            .trace
            .iter()
            .filter(|l| l.contains(" fault "))
            .count();
        assert!(faults > 5, "seed {seed}: only {faults} faults");
    }
}

#[test]
fn raw_workload_under_chaos_loses_no_acknowledged_write() {
    let defaults: Vec<u64> = (1..=24).collect();
    let seeds = seeds(&defaults).unwrap_or_else(|err| panic!("{err}"));
    let workload = RawWorkload {
        stop_stores: false,
        ..RawWorkload::default()
    };
    check_workload(seeds, &workload);
}

#[test]
fn raw_workload_with_store_restarts_loses_no_acknowledged_write() {
    let defaults: Vec<u64> = (1..=24).collect();
    let seeds = seeds(&defaults).unwrap_or_else(|err| panic!("{err}"));
    check_workload(seeds, &RawWorkload::default());
}

/// A store that acknowledges a write without applying it (a lost write) is caught by the
/// checker's final read of every key, even though nothing read the key during the run.
#[test]
fn checker_catches_a_lost_write() {
    let mut sim = scenario();
    let keys = vec![bytes("k1"), bytes("k2")];
    let mut history = Vec::new();
    let mut clock = 0;
    let mut record = |sim: &mut Simulation, op: Op| {
        clock += 2;
        let result = sim.run(op.clone()).unwrap_or_else(|err| panic!("{err}"));
        assert!(result.is_ok(), "{result:?}");
        history.push(Record {
            op: history.len() as u64 + 1,
            command: op,
            started: clock - 1,
            finished: Some((clock, result)),
        });
    };
    record(&mut sim, Op::put("k1", "a"));
    sim.with(|cluster| {
        cluster.faults.inject(FaultRule::command(
            "RawPut",
            FaultAction::AckWithoutApply,
            1,
        ))
    });
    record(&mut sim, Op::put("k2", "b"));
    record(&mut sim, Op::put("k1", "c"));
    assert_eq!(
        checker::check(&keys, &history),
        Vec::new(),
        "nothing read yet"
    );

    let client = sim.client().clone();
    let reads = sim
        .block_on(async { checker::final_reads(&client, &keys, &history, 3).await })
        .unwrap_or_else(|err| panic!("{err}"))
        .unwrap_or_else(|err| panic!("{err}"));
    history.extend(reads);
    let violations = checker::check(&keys, &history);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].key, bytes("k2"));
    assert_eq!(violations[0].seen, None);
    assert_eq!(violations[0].allowed, vec![Some(bytes("b"))]);
}

// ---------------------------------------------------------------------------------------------
// The driver: cancellation, backpressure, close, TLS, on the simulated runtime.
// ---------------------------------------------------------------------------------------------

/// Dropping a get's future before it finished cancels the operation in the machine: once
/// the cancel is handled, the machine holds no operation (client-go: a cancelled context
/// abandons the request).
#[test]
fn dropped_get_future_leaves_no_operation_in_the_machine() {
    let mut sim = scenario();
    run(&mut sim, Op::put("k1", "v"));
    // The store never answers the next get.
    sim.with(|cluster| {
        cluster
            .faults
            .inject(FaultRule::command("RawGet", FaultAction::Drop, 1))
    });
    let client = sim.client().clone();
    let raw = client.raw();
    let mut get = Box::pin(raw.get("k1"));
    poll_for(&mut sim, &mut get, Duration::from_millis(100));
    let before = sim
        .block_on(client.ops_in_flight())
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(before, Ok(1));
    drop(get);
    let after = sim
        .block_on(client.ops_in_flight())
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(after, Ok(0));
    // The client goes on: the next get is answered.
    assert_eq!(
        run(&mut sim, Op::get("k1")),
        Answer::Value(Some(bytes("v")))
    );
}

/// A future dropped before the driver even took its command starts nothing.
#[test]
fn future_dropped_before_its_command_started_starts_nothing() {
    let mut sim = scenario();
    run(&mut sim, Op::put("k1", "v"));
    let client = sim.client().clone();
    let raw = client.raw();
    {
        // Polled once: the command is queued, and the driver has not run yet.
        let mut get = pin!(raw.get("k1"));
        let waker = futures_util::task::noop_waker();
        let polled = get
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker));
        assert!(polled.is_pending());
    }
    sim.take_trace();
    let ops = sim
        .block_on(client.ops_in_flight())
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(ops, Ok(0));
    assert!(!trace_text(&sim).contains("RawGet"), "{}", trace_text(&sim));
}

/// With a command queue of 4, 64 concurrent callers wait for room instead of queueing
/// beyond it; every one gets its answer.
#[test]
fn full_command_queue_makes_callers_wait() {
    let sim_setup = Setup {
        network: Network {
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(1),
            reply_loss_per_mille: 0,
        },
        ..Setup::default()
    };
    let mut sim = Simulation::new(1, sim_setup).unwrap_or_else(|err| panic!("{err}"));
    let client = Client::start_with(
        sim.runtime().clone(),
        vec![PD_ADDRESS.to_owned()],
        Config::default(),
        tikv_core::driver::Options {
            queue_capacity: 4,
            ..tikv_core::driver::Options::default()
        },
    )
    .unwrap_or_else(|err| panic!("{err}"));
    let raw = client.raw();
    let results = sim
        .block_on(futures_util::future::join_all(
            (0..64).map(|i| raw.put(format!("k{i:02}"), "v")),
        ))
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(client.command_queue_peak(), 4);
    let values = sim
        .block_on(raw.batch_get((0..64).map(|i| format!("k{i:02}"))))
        .unwrap_or_else(|err| panic!("{err}"))
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(values.iter().all(|v| v.as_deref() == Some(&b"v"[..])));
}

/// `close` lets an operation in flight finish, refuses new ones with `Error::Closed`, and
/// resolves only once every connection (PD's and the store's) is closed and every task of
/// the client has ended.
#[test]
fn close_finishes_in_flight_work_then_closes_every_connection() {
    let mut sim = scenario();
    run(&mut sim, Op::put("k1", "v"));
    assert!(!sim.open_connections().is_empty());
    // The next get takes 300 ms at the store.
    sim.with(|cluster| {
        cluster
            .faults
            .inject(FaultRule::command("RawGet", FaultAction::Delay(300), 1))
    });
    let client = sim.client().clone();
    let raw = client.raw();
    let started = sim.now();
    let (get, after) = sim
        .block_on(async {
            let (get, ()) = futures_util::future::join(raw.get("k1"), client.close()).await;
            (get, raw.get("k1").await)
        })
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        get,
        Ok(Some(bytes("v"))),
        "the operation in flight finished"
    );
    assert_eq!(after, Err(Error::Closed));
    assert!(sim.now() >= started + Duration::from_millis(300));
    assert_eq!(
        sim.open_connections(),
        Default::default(),
        "every connection closed"
    );
    // Only the simulated servers' own tasks may still be winding down; give them a moment.
    sim.sleep(Duration::from_millis(10))
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(sim.runtime().executor().tasks(), 0);
    // Closing again is immediate.
    sim.block_on(client.close())
        .unwrap_or_else(|err| panic!("{err}"));
}

/// The simulated network has no TLS: a configuration asking for it is refused rather than
/// silently served in plaintext.
#[test]
fn simulated_runtime_refuses_tls() {
    let sim = scenario();
    let config = Config::default().with_tls(tikv_core::config::TlsConfig {
        ca_pem: b"-----BEGIN CERTIFICATE-----".to_vec(),
        identity: None,
    });
    let started = Client::start(sim.runtime().clone(), vec![PD_ADDRESS.to_owned()], config);
    assert!(
        matches!(started, Err(Error::InvalidArgument(_))),
        "{started:?}"
    );
    assert!(sim.runtime().configure(&Config::default()).is_ok());
}
