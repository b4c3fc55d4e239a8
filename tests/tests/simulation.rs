//! Deterministic simulations: the client machine against the simulated cluster in one loop
//! with virtual time. Replay a seed with `TIKV_SIM_SEED=<seed>`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tikv_core::machine::{Command, Output, PdCommand, RawCommand};
use tikv_tests::simulation::workload::{RawWorkload, run_raw_workload};
use tikv_tests::simulation::{ClusterFault, Network, Setup, SimError, Simulation, seeds};

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn put(key: &str, value: &str) -> Command {
    Command::Raw(RawCommand::Put {
        key: bytes(key),
        value: bytes(value),
        ttl_secs: 0,
        cf: String::new(),
        atomic: false,
    })
}

fn get(key: &str) -> Command {
    Command::Raw(RawCommand::Get {
        key: bytes(key),
        cf: String::new(),
    })
}

fn batch_put(pairs: &[(&str, &str)]) -> Command {
    Command::Raw(RawCommand::BatchPut {
        pairs: pairs.iter().map(|(k, v)| (bytes(k), bytes(v))).collect(),
        ttls_secs: Vec::new(),
        cf: String::new(),
        atomic: false,
    })
}

/// A simulation for trace snapshots: every message takes exactly 1 ms, nothing is lost.
fn scenario() -> Simulation {
    let setup = Setup {
        network: Network {
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(1),
            reply_loss_per_mille: 0,
        },
        ..Setup::default()
    };
    Simulation::new(1, setup).unwrap_or_else(|err| panic!("{err}"))
}

fn run(sim: &mut Simulation, command: Command) -> Output {
    match sim.run(command) {
        Ok(Some(Ok(output))) => output,
        other => panic!("{other:?}\n{}", sim.trace().join("\n")),
    }
}

fn trace_text(sim: &Simulation) -> String {
    sim.trace().join("\n")
}

#[test]
fn batch_put_across_a_split_regroups_after_epoch_not_match() {
    let mut sim = scenario();
    run(&mut sim, put("k1", "warm"));
    sim.take_trace();
    sim.apply(ClusterFault::Split(bytes("k5")));
    let output = run(
        &mut sim,
        batch_put(&[("k1", "a"), ("k3", "b"), ("k7", "c")]),
    );
    assert_eq!(output, Output::Unit);
    let trace = trace_text(&sim);
    assert!(trace.contains("EpochNotMatch"), "{trace}");
    assert_eq!(run(&mut sim, get("k7")), Output::Value(Some(bytes("c"))));
    assert_eq!(run(&mut sim, get("k1")), Output::Value(Some(bytes("a"))));
    insta::assert_snapshot!(trace);
}

#[test]
fn scan_walks_three_regions() {
    let mut sim = scenario();
    sim.apply(ClusterFault::Split(bytes("k3")));
    sim.apply(ClusterFault::Split(bytes("k6")));
    run(
        &mut sim,
        batch_put(&[("k1", "a"), ("k4", "b"), ("k7", "c"), ("k8", "d")]),
    );
    sim.take_trace();
    let output = run(
        &mut sim,
        Command::Raw(RawCommand::Scan {
            start: bytes("k0"),
            end: Bytes::new(),
            limit: 10,
            key_only: false,
            reverse: false,
            cf: String::new(),
        }),
    );
    let pairs = vec![
        (bytes("k1"), bytes("a")),
        (bytes("k4"), bytes("b")),
        (bytes("k7"), bytes("c")),
        (bytes("k8"), bytes("d")),
    ];
    assert_eq!(output, Output::Pairs(pairs));
    let trace = trace_text(&sim);
    assert_eq!(trace.matches("RawScan").count(), 3, "{trace}");
    insta::assert_snapshot!(trace);
}

#[test]
fn get_meets_not_leader_after_a_leader_transfer() {
    let mut sim = scenario();
    run(&mut sim, put("k1", "v"));
    sim.take_trace();
    sim.apply(ClusterFault::TransferLeader {
        key: bytes("k1"),
        store_id: 2,
    });
    assert_eq!(run(&mut sim, get("k1")), Output::Value(Some(bytes("v"))));
    let trace = trace_text(&sim);
    assert!(trace.contains("NotLeader(leader on store 2)"), "{trace}");
    assert!(trace.contains("store-2 RawGet"), "{trace}");
    insta::assert_snapshot!(trace);
}

#[test]
fn many_timestamp_waiters_share_one_tso_request() {
    let mut sim = scenario();
    let ops: Vec<_> = (0..8)
        .map(|_| sim.submit(Command::Pd(PdCommand::Timestamp)))
        .collect();
    let done = sim.run_until_idle().unwrap_or_else(|err| panic!("{err}"));
    let mut timestamps = Vec::new();
    for op in &ops {
        match done.iter().find(|(id, _)| id == op) {
            Some((_, Ok(Output::Timestamp(ts)))) => timestamps.push(*ts),
            other => panic!("{op:?}: {other:?}"),
        }
    }
    let mut distinct = timestamps.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), ops.len(), "{timestamps:?}");
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
    let result = sim.run(put("k1", "v"));
    assert!(
        matches!(result, Err(SimError::Livelock { steps: 5, .. })),
        "{result:?}"
    );
}

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
    let other = run_raw_workload(seed + 1, &workload).unwrap_or_else(|err| panic!("{err}"));
    assert_ne!(first.trace, other.trace);
}

#[test]
fn raw_workload_under_chaos_loses_no_acknowledged_write() {
    let defaults: Vec<u64> = (1..=24).collect();
    let seeds = seeds(&defaults).unwrap_or_else(|err| panic!("{err}"));
    let workload = RawWorkload {
        stop_stores: false,
        ..RawWorkload::default()
    };
    for seed in seeds {
        let started = Instant::now();
        println!("simulation seed {seed} (replay: TIKV_SIM_SEED={seed})");
        let report = match run_raw_workload(seed, &workload) {
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
        assert_eq!(report.history.len(), workload.ops);
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
fn leader_on_a_restarted_store_is_reached_again() {
    let mut sim = scenario();
    run(&mut sim, put("k1", "v"));
    sim.take_trace();
    // Store 1 leads the only region. It goes down, the client marks it unreachable, and it
    // comes back 50 ms later still leading the region.
    sim.apply(ClusterFault::StopStore(1));
    let back = sim.now() + Duration::from_millis(50);
    sim.schedule(back, ClusterFault::RestartStore(1));
    let output = run(&mut sim, get("k1"));
    assert_eq!(output, Output::Value(Some(bytes("v"))));
    let trace = trace_text(&sim);
    let sends = trace.matches("RawGet").count();
    assert!(
        sends < 50 && sim.now() < tikv_core::Time::from_millis(5_000),
        "{sends} RawGet sends, finished at {}:\n{}",
        sim.now(),
        sim.trace()[..60.min(sim.trace().len())].join("\n")
    );
}

#[test]
fn raw_workload_with_store_restarts_loses_no_acknowledged_write() {
    let defaults: Vec<u64> = (1..=24).collect();
    let seeds = seeds(&defaults).unwrap_or_else(|err| panic!("{err}"));
    for seed in seeds {
        println!("simulation seed {seed} (replay: TIKV_SIM_SEED={seed})");
        let report = match run_raw_workload(seed, &RawWorkload::default()) {
            Ok(report) => report,
            Err(err) => panic!("seed {seed}: {err}"),
        };
        println!(
            "seed {seed}: {} ok, {} failed, {:?}",
            report.succeeded, report.failed, report.trouble
        );
        assert_eq!(report.violations, Vec::new(), "seed {seed}");
    }
}
