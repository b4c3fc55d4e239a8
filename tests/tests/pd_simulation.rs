//! The client against PD as a group, on the simulated runtime with virtual time: leader
//! failover, elections, members joining and leaving, broken Tso streams, idle PD connections.
//! Tests named `test_*` port PD client tests from `tikv/pd`'s
//! `tests/integrations/client/client_test.go`; the others name the PD behaviour they rely on.
//! Replay a seed with `TIKV_SIM_SEED=<seed>`.

use std::time::{Duration, Instant};

use tikv_core::{Config, Error, Timestamp};
use tikv_sim::SimConfig;
use tikv_sim::cluster::ClusterConfig;
use tikv_tests::simulation::workload::{RawWorkload, run_raw_workload};
use tikv_tests::simulation::{ClusterFault, Network, Setup, Simulation, pd_address, seeds};

/// A cluster of `members` PD members and three stores; the client knows `endpoints` (empty:
/// every member).
fn group(members: u32, endpoints: Vec<String>, client: Config) -> Simulation {
    let setup = Setup {
        client,
        cluster: SimConfig {
            cluster: ClusterConfig {
                pd_members: members,
                ..ClusterConfig::default()
            },
            ..SimConfig::default()
        },
        pd_endpoints: endpoints,
        network: Network {
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(1),
            reply_loss_per_mille: 0,
        },
        ..Setup::default()
    };
    Simulation::new(1, setup).unwrap_or_else(|err| panic!("{err}"))
}

fn timestamp(sim: &mut Simulation) -> Result<Timestamp, Error> {
    let client = sim.client().clone();
    sim.block_on(async move { client.current_timestamp().await })
        .unwrap_or_else(|err| panic!("{err}\n{}", sim.trace().join("\n")))
}

fn must_timestamp(sim: &mut Simulation) -> u64 {
    match timestamp(sim) {
        Ok(ts) => ts.version(),
        Err(err) => panic!("{err}\n{}", sim.trace().join("\n")),
    }
}

fn leader(sim: &Simulation) -> Option<u64> {
    sim.with(|cluster| cluster.cluster.pd_leader().map(|m| m.id))
}

/// Lines of the trace where the client sent a PD request to `address`.
fn sent_to(sim: &Simulation, address: &str) -> usize {
    let needle = format!(" {address} pd.");
    sim.trace()
        .iter()
        .filter(|line| line.contains("-> #") && line.contains(&needle))
        .count()
}

/// Ports `TestClientLeaderChange`: the leader's process stops, another member is elected,
/// and timestamps keep coming from the new leader without going back.
#[test]
fn test_client_leader_change() {
    let mut sim = group(3, Vec::new(), Config::default());
    let ts1 = must_timestamp(&mut sim);
    let old = leader(&sim).unwrap_or_else(|| panic!("no leader"));
    sim.apply(ClusterFault::StopPdLeader);
    let new = leader(&sim).unwrap_or_else(|| panic!("no leader after the stop"));
    assert_ne!(old, new);
    sim.take_trace();
    let ts2 = must_timestamp(&mut sim);
    assert!(ts1 < ts2);
    let new_address = pd_address(usize::try_from(new - 1).unwrap_or(0));
    assert!(
        sent_to(&sim, &new_address) > 0,
        "{}",
        sim.trace().join("\n")
    );
    // The client's endpoint list is PD's member list, as PD's `updateURLs` keeps it.
    let client = sim.client().clone();
    let view = sim
        .block_on(async move { client.pd_view().await })
        .unwrap_or_else(|err| panic!("{err}"))
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(view.leader.as_deref(), Some(new_address.as_str()));
    let mut members = sim.pd_addresses();
    members.sort();
    assert_eq!(view.endpoints, members);
}

/// Ports `TestGetTSAfterTransferLeader`: the leader resigns and another member takes the
/// lease; the next timestamp comes from the new leader.
#[test]
fn test_get_ts_after_transfer_leader() {
    let mut sim = group(2, Vec::new(), Config::default());
    must_timestamp(&mut sim);
    sim.apply(ClusterFault::MovePdLeader(None));
    assert_eq!(leader(&sim), Some(2));
    sim.take_trace();
    must_timestamp(&mut sim);
    assert!(
        sent_to(&sim, &pd_address(1)) > 0,
        "{}",
        sim.trace().join("\n")
    );
}

/// Ports `TestLeaderTransferAndMoveCluster`: timestamps never go back while the leadership
/// moves three times, three members join, and the three original members stop. The client
/// was given only the original members' addresses: it follows the group through the member
/// lists PD reports (`updateMember`).
#[test]
fn test_leader_transfer_and_move_cluster() {
    let original: Vec<String> = (0..3).map(pd_address).collect();
    let mut sim = group(3, original, Config::default());
    let mut last = must_timestamp(&mut sim);
    let mut next = |sim: &mut Simulation| {
        let ts = must_timestamp(sim);
        assert!(last < ts, "{ts} after {last}");
        last = ts;
    };
    for _ in 0..3 {
        let old = leader(&sim);
        sim.apply(ClusterFault::MovePdLeader(None));
        assert_ne!(leader(&sim), old);
        next(&mut sim);
    }
    // ABC -> ABCDEF.
    let joined: Vec<u64> = (0..3)
        .map(|_| sim.with(|cluster| cluster.cluster.add_pd_member()))
        .collect();
    for (index, member) in joined.iter().enumerate() {
        let url = format!("http://{}", pd_address(3 + index));
        sim.with(|cluster| cluster.cluster.set_pd_member_url(*member, &url))
            .unwrap_or_else(|err| panic!("{err}"));
        next(&mut sim);
        sim.sleep(Duration::from_secs(5))
            .unwrap_or_else(|err| panic!("{err}"));
    }
    // ABCDEF -> DEF: each old member stops and leaves the group (3 of 6 members running
    // would be no quorum).
    for member in 1..=3 {
        sim.apply(ClusterFault::StopPdMember(member));
        sim.with(|cluster| cluster.cluster.remove_pd_member(member))
            .unwrap_or_else(|err| panic!("{err}"));
        next(&mut sim);
    }
    let new = leader(&sim).unwrap_or_else(|| panic!("no leader"));
    assert!(joined.contains(&new), "leader {new}");
}

/// Ports `TestUnavailableTimeAfterLeaderIsReady`: while the leader is stopped and the
/// election runs, timestamp requests wait (or fail); once the new leader is ready, the client
/// is served again within one second.
#[test]
fn test_unavailable_time_after_leader_is_ready() {
    let mut sim = group(3, Vec::new(), Config::default());
    must_timestamp(&mut sim);
    sim.with(|cluster| cluster.cluster.set_pd_auto_elect(false));
    let election = Duration::from_secs(3);
    let stopped_at = sim.now();
    sim.apply(ClusterFault::StopPdLeader);
    sim.schedule(stopped_at + election, ClusterFault::ElectPdLeader);
    let ready_at = stopped_at + election;
    let mut served_after_ready = None;
    let mut last = 0;
    while sim.now() < ready_at + Duration::from_secs(2) {
        let asked = sim.now();
        match timestamp(&mut sim) {
            Ok(ts) => {
                assert!(ts.version() > last);
                last = ts.version();
                if asked >= ready_at || sim.now() >= ready_at {
                    served_after_ready.get_or_insert(sim.now());
                }
            }
            Err(err) => assert!(sim.now() < ready_at, "failed after the election: {err}"),
        }
        sim.sleep(Duration::from_millis(10))
            .unwrap_or_else(|err| panic!("{err}"));
    }
    let served = served_after_ready.unwrap_or_else(|| panic!("never served again"));
    assert!(
        served.saturating_since(ready_at) < Duration::from_secs(1),
        "served {:?} after the leader was ready\n{}",
        served.saturating_since(ready_at),
        sim.trace().join("\n")
    );
}

/// Follows PD's `GrpcServer::Tso`, which ends a stream with an error status: the client
/// opens a new stream and the next timestamp comes without waiting for a timeout.
#[test]
fn tso_stream_broken_by_the_server_is_reestablished() {
    let mut sim = group(1, Vec::new(), Config::default());
    let before = must_timestamp(&mut sim);
    assert_eq!(
        sim.net_log().tso_streams.get(pd_address(0).as_str()),
        Some(&1)
    );
    sim.apply(ClusterFault::BreakTsoStreams);
    sim.sleep(Duration::from_millis(10))
        .unwrap_or_else(|err| panic!("{err}"));
    let asked = sim.now();
    let after = must_timestamp(&mut sim);
    assert!(before < after);
    let took = sim.now().saturating_since(asked);
    assert!(
        took < Duration::from_millis(100),
        "took {took:?}\n{}",
        sim.trace().join("\n")
    );
    assert_eq!(
        sim.net_log().tso_streams.get(pd_address(0).as_str()),
        Some(&2)
    );
    // Broken while requests are in flight: they fail over to a new stream too.
    let client = sim.client().clone();
    let many = sim
        .block_on(async move {
            let asks = (0..8).map(|_| client.current_timestamp());
            futures_util::future::join_all(asks).await
        })
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(many.iter().all(Result::is_ok), "{many:?}");
}

/// Follows PD's `GrpcServer::Tso` on a member that lost its lease mid-stream
/// (`Allocator::GenerateTSO` fails with "not leader"): the client rediscovers the leader and
/// opens a stream there.
#[test]
fn tso_stream_on_a_former_leader_fails_over_to_the_new_one() {
    let mut sim = group(3, Vec::new(), Config::default());
    must_timestamp(&mut sim);
    sim.apply(ClusterFault::MovePdLeader(Some(3)));
    must_timestamp(&mut sim);
    let log = sim.net_log();
    assert_eq!(
        log.tso_streams.get(pd_address(2).as_str()),
        Some(&1),
        "{log:?}"
    );
}

/// client-go keeps PD connections through the PD client's gRPC channels, which close after
/// a period without calls (gRPC's channel idleness); the driver's PD task does the same after
/// `connection_idle_timeout`, and the next PD call dials again.
#[test]
fn idle_pd_connection_is_closed_and_redialled() {
    let config = Config::default()
        .with_connection_idle_timeout(Duration::from_millis(250))
        .with_store_refresh_interval(Duration::ZERO);
    let mut sim = group(1, Vec::new(), config);
    let pd = pd_address(0);
    must_timestamp(&mut sim);
    assert_eq!(sim.open_connections().get(&pd), Some(&1));
    assert_eq!(sim.net_log().connects.get(&pd), Some(&1));
    // Busy: calls closer together than the timeout keep the connection.
    for _ in 0..3 {
        sim.sleep(Duration::from_millis(100))
            .unwrap_or_else(|err| panic!("{err}"));
        must_timestamp(&mut sim);
    }
    assert_eq!(sim.net_log().connects.get(&pd), Some(&1));
    // Idle: the connection goes away.
    sim.sleep(Duration::from_secs(1))
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(sim.open_connections().get(&pd), None);
    // The next call dials again.
    must_timestamp(&mut sim);
    assert_eq!(sim.net_log().connects.get(&pd), Some(&2));
    assert_eq!(sim.open_connections().get(&pd), Some(&1));
    assert_eq!(sim.net_log().tso_streams.get(&pd), Some(&2));
}

/// PD leader failover in the middle of a raw workload, with PD faults in the chaos schedule
/// (leader stops and resignations with elections held open, broken Tso streams) besides the
/// store faults: no acknowledged write is lost, every read is explained, and timestamps
/// never go back.
#[test]
fn raw_workload_with_pd_failover_loses_no_acknowledged_write() {
    let defaults: Vec<u64> = (1..=12).collect();
    let seeds = seeds(&defaults).unwrap_or_else(|err| panic!("{err}"));
    let workload = RawWorkload {
        pd_members: 3,
        pd_faults: true,
        ..RawWorkload::default()
    };
    for seed in seeds {
        let started = Instant::now();
        println!("simulation seed {seed} (replay: TIKV_SIM_SEED={seed})");
        let report =
            run_raw_workload(seed, &workload).unwrap_or_else(|err| panic!("seed {seed}: {err}"));
        println!(
            "seed {seed}: {} ok, {} failed, virtual {}, real {:?}, {:?}",
            report.succeeded,
            report.failed,
            report.end,
            started.elapsed(),
            report.trouble
        );
        let tail = report.trace.len().saturating_sub(200);
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {}\n{}",
            report.violations[0],
            report.trace[tail..].join("\n")
        );
        assert!(
            report.timestamp_violations.is_empty(),
            "seed {seed}: {:?}",
            report.timestamp_violations
        );
        let pd_faults = report
            .trace
            .iter()
            .filter(|l| l.contains(" fault ") && (l.contains("PD") || l.contains("Tso")))
            .count();
        assert!(pd_faults > 0, "seed {seed}: no PD fault");
        assert!(
            report.succeeded * 2 > workload.ops,
            "seed {seed}: only {} of {} succeeded",
            report.succeeded,
            workload.ops
        );
        let timestamps = report
            .history
            .iter()
            .filter(|r| matches!(r.command, tikv_tests::simulation::Op::Timestamp))
            .count();
        assert!(timestamps > 0, "seed {seed}: no timestamp asked");
    }
}

/// A Tso stream whose answer never comes is given up once the request's deadline passed:
/// the next timestamp goes over a new stream. PD answers a Tso stream in order, so a
/// stream that misses one answer can answer nothing after it (client-go's TSO dispatcher
/// cancels a stream that misses its deadline and opens a new one). Found by the bank
/// simulation, where a lost answer left every later answer matched to the request before
/// it, so every timestamp after it timed out.
#[test]
fn tso_stream_that_misses_an_answer_is_replaced() {
    let mut sim = group(1, Vec::new(), Config::default());
    must_timestamp(&mut sim);
    let reliable = Network {
        min_latency: Duration::from_millis(1),
        max_latency: Duration::from_millis(1),
        reply_loss_per_mille: 0,
    };
    // The next answer is lost, and only that one.
    sim.set_network(Network {
        reply_loss_per_mille: 1_000,
        ..reliable.clone()
    });
    let client = sim.client().clone();
    let mut first = Box::pin(async move { client.current_timestamp().await });
    let executor = sim.runtime().executor().clone();
    let until = executor.now() + Duration::from_millis(100);
    let polled = sim.block_on(async {
        futures_util::future::select(first.as_mut(), executor.sleep_until(until)).await;
    });
    assert!(polled.is_ok());
    sim.set_network(reliable);
    // The lost answer's request fails or is retried; either way timestamps come again.
    let _ = sim
        .block_on(first)
        .unwrap_or_else(|err| panic!("{err}\n{}", sim.trace().join("\n")));
    let started = sim.now();
    for _ in 0..3 {
        must_timestamp(&mut sim);
    }
    assert!(
        sim.now().saturating_since(started) < Duration::from_secs(1),
        "timestamps came only after {:?}:\n{}",
        sim.now() - started,
        sim.trace().join("\n")
    );
    assert!(sim.net_log().tso_streams.values().sum::<usize>() >= 2);
}
