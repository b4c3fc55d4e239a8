//! Ports of client-go's region request sender tests (`internal/locate/region_request_test.go`
//! and `region_request3_test.go`) for leader reads and writes.
//!
//! Most scenarios run the client machine against the simulated cluster (three stores, three
//! replicas, every message 1 ms one way) and judge the trace: which store got how many
//! requests, whether PD was asked for the region again, and how much virtual time went into
//! backoff. Scenarios that need a cluster that lies (a follower answering a write, a leader
//! hint PD does not know) drive [`Core`] directly with a scripted store instead, as client-go's
//! `fnClient` does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::Duration;

use bytes::Bytes;
use tikv_core::machine::testing::Responder;
use tikv_core::machine::{Command, Core, Event, Output, RawCommand, RequestId};
use tikv_core::rpc::{PdRequest, PdResponse, Request, Response, StoreRequest, StoreResponse};
use tikv_core::{Config, Error, Time};
use tikv_proto::rpc::RpcError;
use tikv_proto::status::{Code, Status};
use tikv_proto::{errorpb, metapb, pdpb};
use tikv_sim::cluster::ClusterConfig;
use tikv_sim::faults::{FaultAction, FaultRule};
use tikv_sim::{SimConfig, SimServer};
use tikv_tests::simulation::{Answer, ClusterFault, Network, Op, Setup, Simulation};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

// ---------------------------------------------------------------------------------------------
// Helpers: commands, region errors, the simulation and reading its trace.
// ---------------------------------------------------------------------------------------------

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn put_command(key: &str, value: &str) -> Command {
    Command::Raw(RawCommand::Put {
        key: bytes(key),
        value: bytes(value),
        ttl_secs: 0,
        cf: String::new(),
        atomic: false,
    })
}

fn get_command(key: &str) -> Command {
    Command::Raw(RawCommand::Get {
        key: bytes(key),
        cf: String::new(),
    })
}

fn put(key: &str, value: &str) -> Op {
    Op::put(key, value)
}

fn get(key: &str) -> Op {
    Op::get(key)
}

fn region_error(f: impl FnOnce(&mut errorpb::Error)) -> errorpb::Error {
    let mut err = errorpb::Error {
        message: "injected".to_owned(),
        ..Default::default()
    };
    f(&mut err);
    err
}

fn not_leader(leader: Option<metapb::Peer>) -> errorpb::Error {
    region_error(|e| {
        e.not_leader = Some(errorpb::NotLeader {
            region_id: 0,
            leader,
        })
    })
}

/// A setup whose network takes exactly 1 ms each way and loses nothing.
fn setup() -> Setup {
    Setup {
        network: Network {
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(1),
            reply_loss_per_mille: 0,
        },
        ..Setup::default()
    }
}

fn simulation(setup: Setup) -> Simulation {
    Simulation::new(1, setup).unwrap_or_else(|err| panic!("{err}"))
}

/// A three-store cluster whose client has written `k1` once (so that the region, its leader
/// on store 1, and store 1's address are cached), with the trace cleared.
fn warm_with(setup: Setup) -> Simulation {
    let mut sim = simulation(setup);
    let result = sim
        .run(put("k1", "v0"))
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(matches!(result, Ok(Answer::Unit)), "{result:?}");
    sim.take_trace();
    sim
}

fn warm() -> Simulation {
    warm_with(setup())
}

/// What one operation did: its result, its trace, and the virtual time it took.
struct Outcome {
    result: Result<Answer, Error>,
    trace: Vec<String>,
    elapsed: Duration,
}

impl Outcome {
    /// `store-N Command` for every store request sent, in order.
    fn store_sends(&self) -> Vec<String> {
        self.trace
            .iter()
            .filter_map(|line| {
                let (_, sent) = line.split_once(" -> #")?;
                let mut words = sent.split_whitespace().skip(1);
                let address = words.next()?;
                let command = words.next()?;
                (address.starts_with("store-") && command != "health.Check")
                    .then(|| format!("{address} {command}"))
            })
            .collect()
    }

    /// Number of requests of this PD method (`pd.GetRegion`, `pd.GetStore`, ...).
    fn pd_calls(&self, method: &str) -> usize {
        self.trace
            .iter()
            .filter(|line| line.contains(" -> #") && line.contains(&format!(" {method} ")))
            .count()
    }

    /// Number of region lookups (by key or by id).
    fn region_lookups(&self) -> usize {
        self.pd_calls("pd.GetRegion") + self.pd_calls("pd.GetRegionById")
    }

    fn text(&self) -> String {
        self.trace.join("\n")
    }
}

fn outcome(sim: &mut Simulation, op: Op) -> Outcome {
    let start = sim.now();
    let result = match sim.run(op) {
        Ok(result) => result,
        other => panic!("{other:?}\n{}", sim.trace().join("\n")),
    };
    Outcome {
        result,
        trace: sim.take_trace(),
        elapsed: sim.now().saturating_since(start),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn sends(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Arms a region error on `store_id` for the next `times` requests of `command`.
fn inject(sim: &mut Simulation, store_id: u64, command: &str, err: errorpb::Error, times: u32) {
    sim.with(|cluster| {
        cluster.faults.inject(FaultRule {
            store_id: Some(store_id),
            command: Some(command.to_owned()),
            region_id: None,
            action: FaultAction::RegionError(Box::new(err)),
            remaining: times,
        })
    });
}

fn inject_action(
    sim: &mut Simulation,
    store_id: u64,
    command: &str,
    action: FaultAction,
    times: u32,
) {
    sim.with(|cluster| {
        cluster.faults.inject(FaultRule {
            store_id: Some(store_id),
            command: Some(command.to_owned()),
            region_id: None,
            action,
            remaining: times,
        })
    });
}

fn expect_ok(outcome: &Outcome) {
    assert!(
        matches!(outcome.result, Ok(Answer::Unit | Answer::Value(_))),
        "{:?}\n{}",
        outcome.result,
        outcome.text()
    );
}

fn expect_value(outcome: &Outcome, value: &str) {
    assert_eq!(
        outcome.result,
        Ok(Answer::Value(Some(bytes(value)))),
        "{}",
        outcome.text()
    );
}

fn expect_exhausted(outcome: &Outcome, expected_kind: &str) -> u64 {
    match &outcome.result {
        Err(Error::BackoffExhausted { kind, slept_ms, .. }) => {
            assert_eq!(kind.to_string(), expected_kind, "{}", outcome.text());
            *slept_ms
        }
        other => panic!("{other:?}\n{}", outcome.text()),
    }
}

fn with_budget(budget_ms: u64) -> Setup {
    let mut setup = setup();
    setup.client = setup.client.clone().with_raw_max_backoff(ms(budget_ms));
    setup
}

// ---------------------------------------------------------------------------------------------
// region_request_test.go: TestOnRegionError and one test per region error kind.
// ---------------------------------------------------------------------------------------------

/// TestOnRegionError: StaleCommand is retried on the same peer after a staleCommand backoff
/// (2 ms, then 4 ms), without asking PD.
#[test]
fn on_region_error_stale_command() {
    let mut sim = warm();
    let stale = region_error(|e| e.stale_command = Some(Default::default()));
    inject(&mut sim, 1, "RawPut", stale, 2);
    let out = outcome(&mut sim, put("k1", "v1"));
    expect_ok(&out);
    assert_eq!(
        out.store_sends(),
        sends(&["store-1 RawPut"; 3]),
        "{}",
        out.text()
    );
    assert_eq!(out.region_lookups(), 0, "{}", out.text());
    // Three round trips of 2 ms plus 2 + 4 ms of backoff.
    assert_eq!(out.elapsed, ms(12), "{}", out.text());
}

/// TestOnRegionError with a budget too small: StaleCommand forever ends in a typed backoff
/// error naming the kind, after exactly the sleeps the budget allows (2+4+...+64 = 126 ms
/// for a 100 ms budget: the sleep that crosses the budget is still granted).
#[test]
fn on_region_error_stale_command_exhausts_budget() {
    let mut sim = warm_with(with_budget(100));
    let stale = region_error(|e| e.stale_command = Some(Default::default()));
    inject(&mut sim, 1, "RawPut", stale, 1_000);
    let out = outcome(&mut sim, put("k1", "v1"));
    let slept = expect_exhausted(&out, "staleCommand");
    assert_eq!(slept, 126);
    assert_eq!(
        out.store_sends(),
        sends(&["store-1 RawPut"; 7]),
        "{}",
        out.text()
    );
    assert_eq!(out.region_lookups(), 0, "{}", out.text());
    assert_eq!(out.elapsed, ms(7 * 2 + 126), "{}", out.text());
}

/// NotLeader naming the new leader: retried at once on that leader (its store address looked
/// up, the region not), and the next request goes straight there (client-go's leader tracking
/// in `TestRegionRequestSenderLeaderFollower` style).
#[test]
fn on_region_error_not_leader_with_leader() {
    let mut sim = warm();
    sim.apply(ClusterFault::TransferLeader {
        key: bytes("k1"),
        store_id: 2,
    });
    sim.take_trace();
    let out = outcome(&mut sim, put("k1", "v1"));
    expect_ok(&out);
    assert_eq!(
        out.store_sends(),
        sends(&["store-1 RawPut", "store-2 RawPut"]),
        "{}",
        out.text()
    );
    assert_eq!(out.region_lookups(), 0, "{}", out.text());
    assert_eq!(out.pd_calls("pd.GetStore"), 1, "{}", out.text());
    // No backoff: two store round trips and one PD round trip.
    assert_eq!(out.elapsed, ms(6), "{}", out.text());

    let next = outcome(&mut sim, get("k1"));
    expect_value(&next, "v1");
    assert_eq!(
        next.store_sends(),
        sends(&["store-2 RawGet"]),
        "{}",
        next.text()
    );
    assert_eq!(next.region_lookups(), 0);
}

/// NotLeader without a leader (an election in progress): as client-go's replica selector, the
/// client keeps the region, backs off (regionScheduling, 2 ms) and tries the next peer, whose
/// answer (a follower naming the leader) leads back to the leader. PD is not asked.
#[test]
fn on_region_error_not_leader_without_leader() {
    let mut sim = warm();
    inject(&mut sim, 1, "RawPut", not_leader(None), 1);
    let out = outcome(&mut sim, put("k1", "v1"));
    expect_ok(&out);
    let sent = out.store_sends();
    assert_eq!(
        sent.first().map(String::as_str),
        Some("store-1 RawPut"),
        "{}",
        out.text()
    );
    assert_eq!(
        sent.get(1).map(String::as_str),
        Some("store-2 RawPut"),
        "{}",
        out.text()
    );
    assert_eq!(
        sent.last().map(String::as_str),
        Some("store-1 RawPut"),
        "{}",
        out.text()
    );
    assert_eq!(out.region_lookups(), 0, "{}", out.text());
    assert!(out.elapsed < ms(5_000), "{:?}", out.elapsed);
    // Once a leader is elected on a running store, requests succeed again.
    sim.apply(ClusterFault::ElectAway(1));
    sim.take_trace();
    let next = outcome(&mut sim, put("key", "value2"));
    expect_ok(&next);
}

/// NotLeader naming a leader on a store outside the cached peers (the region gained a peer):
/// the cached region is stale, so it is loaded again and the request goes to the new leader.
#[test]
fn on_region_error_not_leader_new_leader_not_in_cached_peers() {
    let mut setup = setup();
    setup.cluster = SimConfig {
        cluster: ClusterConfig {
            store_count: 4,
            replica_count: 3,
            ..ClusterConfig::default()
        },
        ..SimConfig::default()
    };
    let mut sim = warm_with(setup);
    let region_id = region_of(&sim, "k1");
    sim.with(|cluster| {
        cluster
            .cluster
            .add_peer(region_id, 4, metapb::PeerRole::Voter)
    })
    .unwrap_or_else(|err| panic!("{err}"));
    sim.apply(ClusterFault::TransferLeader {
        key: bytes("k1"),
        store_id: 4,
    });
    sim.take_trace();
    let out = outcome(&mut sim, put("k1", "v1"));
    expect_ok(&out);
    let sent = out.store_sends();
    assert_eq!(
        sent.first().map(String::as_str),
        Some("store-1 RawPut"),
        "{}",
        out.text()
    );
    assert_eq!(
        sent.last().map(String::as_str),
        Some("store-4 RawPut"),
        "{}",
        out.text()
    );
    assert_eq!(sent.len(), 2, "{}", out.text());
    assert_eq!(out.region_lookups(), 1, "{}", out.text());
    // No backoff: two store round trips, a region lookup and a store lookup.
    assert_eq!(out.elapsed, ms(8), "{}", out.text());
    let next = outcome(&mut sim, get("k1"));
    expect_value(&next, "v1");
    assert_eq!(
        next.store_sends(),
        sends(&["store-4 RawGet"]),
        "{}",
        next.text()
    );
}

/// EpochNotMatch carrying the current regions (a split): the client regroups with them at
/// once, without backoff and without asking PD.
#[test]
fn on_region_error_epoch_not_match_with_current_regions() {
    let mut sim = warm();
    sim.apply(ClusterFault::Split(bytes("k5")));
    let new = region_of(&sim, "k7");
    assert_ne!(region_of(&sim, "k1"), new);
    sim.take_trace();
    let out = outcome(&mut sim, put("k7", "v7"));
    expect_ok(&out);
    assert_eq!(
        out.store_sends(),
        sends(&["store-1 RawPut"; 2]),
        "{}",
        out.text()
    );
    assert!(
        out.text().contains("EpochNotMatch(2 current regions)"),
        "{}",
        out.text()
    );
    assert!(
        out.trace.last().is_some_and(|l| l.contains("done ok"))
            && out.text().contains(&format!("RawPut region={new}")),
        "{}",
        out.text()
    );
    assert_eq!(out.region_lookups(), 0, "{}", out.text());
    assert_eq!(out.elapsed, ms(4), "{}", out.text());
}

/// EpochNotMatch without current regions (a stale epoch the server cannot explain): drop the
/// region, back off (regionMiss, 2 ms), ask PD.
#[test]
fn on_region_error_epoch_not_match_stale() {
    let mut sim = warm();
    let err = region_error(|e| e.epoch_not_match = Some(Default::default()));
    inject(&mut sim, 1, "RawPut", err, 1);
    let out = outcome(&mut sim, put("k1", "v1"));
    expect_ok(&out);
    assert_eq!(
        out.store_sends(),
        sends(&["store-1 RawPut"; 2]),
        "{}",
        out.text()
    );
    assert_eq!(out.region_lookups(), 1, "{}", out.text());
    assert_eq!(out.elapsed, ms(8), "{}", out.text());
}

/// RegionNotFound and KeyNotInRegion: the region is dropped and looked up again after a
/// regionMiss backoff.
#[test]
fn on_region_error_region_not_found() {
    for (name, err) in [
        (
            "RegionNotFound",
            region_error(|e| e.region_not_found = Some(Default::default())),
        ),
        (
            "KeyNotInRegion",
            region_error(|e| e.key_not_in_region = Some(Default::default())),
        ),
    ] {
        let mut sim = warm();
        inject(&mut sim, 1, "RawPut", err, 1);
        let out = outcome(&mut sim, put("k1", "v1"));
        expect_ok(&out);
        assert!(out.text().contains(name), "{}", out.text());
        assert_eq!(
            out.store_sends(),
            sends(&["store-1 RawPut"; 2]),
            "{name}\n{}",
            out.text()
        );
        assert_eq!(out.region_lookups(), 1, "{name}\n{}", out.text());
        assert_eq!(out.elapsed, ms(8), "{name}\n{}", out.text());
    }
}

/// ServerIsBusy: the same peer again after a tikvServerBusy backoff (2 s base, equal jitter:
/// between 1 and 2 s); the region stays cached.
#[test]
fn on_region_error_server_is_busy() {
    let mut sim = warm();
    let busy = region_error(|e| e.server_is_busy = Some(Default::default()));
    inject(&mut sim, 1, "RawPut", busy, 1);
    let out = outcome(&mut sim, put("k1", "v1"));
    expect_ok(&out);
    assert_eq!(
        out.store_sends(),
        sends(&["store-1 RawPut"; 2]),
        "{}",
        out.text()
    );
    assert_eq!(out.region_lookups(), 0, "{}", out.text());
    assert!(
        out.elapsed >= ms(1_004) && out.elapsed < ms(2_004),
        "{:?}\n{}",
        out.elapsed,
        out.text()
    );
}

/// DiskFull: the same peer again after a tikvDiskFull backoff (500 ms, no jitter).
#[test]
fn on_region_error_disk_full() {
    let mut sim = warm();
    let full = region_error(|e| {
        e.disk_full = Some(errorpb::DiskFull {
            store_id: vec![1],
            reason: "full".to_owned(),
        })
    });
    inject(&mut sim, 1, "RawPut", full, 1);
    let out = outcome(&mut sim, put("k1", "v1"));
    expect_ok(&out);
    assert_eq!(
        out.store_sends(),
        sends(&["store-1 RawPut"; 2]),
        "{}",
        out.text()
    );
    assert_eq!(out.region_lookups(), 0, "{}", out.text());
    assert_eq!(out.elapsed, ms(504), "{}", out.text());
}

/// RecoveryInProgress: the region is dropped and reloaded after a regionRecoveryInProgress
/// backoff (100 ms base, equal jitter: 50 to 100 ms).
#[test]
fn on_region_error_recovery_in_progress() {
    let mut sim = warm();
    let err = region_error(|e| e.recovery_in_progress = Some(Default::default()));
    inject(&mut sim, 1, "RawPut", err, 1);
    let out = outcome(&mut sim, put("k1", "v1"));
    expect_ok(&out);
    assert_eq!(
        out.store_sends(),
        sends(&["store-1 RawPut"; 2]),
        "{}",
        out.text()
    );
    assert_eq!(out.region_lookups(), 1, "{}", out.text());
    assert!(
        out.elapsed >= ms(56) && out.elapsed < ms(106),
        "{:?}\n{}",
        out.elapsed,
        out.text()
    );
}

/// Errors that end the request: FlashbackInProgress, FlashbackNotPrepared, RaftEntryTooLarge
/// and UndeterminedResult are not retried (one send, no backoff, no PD lookup). Each fails
/// with its region error kind, and an undetermined result as `Error::Undetermined` (the
/// write may have applied: it must not look refused).
#[test]
fn on_region_error_fatal_kinds_fail_at_once() {
    let cases = [
        (
            "FlashbackInProgress",
            region_error(|e| {
                e.flashback_in_progress = Some(errorpb::FlashbackInProgress {
                    region_id: 2,
                    flashback_start_ts: 7,
                })
            }),
        ),
        (
            "FlashbackNotPrepared",
            region_error(|e| e.flashback_not_prepared = Some(Default::default())),
        ),
        (
            "RaftEntryTooLarge",
            region_error(|e| e.raft_entry_too_large = Some(Default::default())),
        ),
        (
            "UndeterminedResult",
            region_error(|e| e.undetermined_result = Some(Default::default())),
        ),
    ];
    for (name, err) in cases {
        let mut sim = warm();
        inject(&mut sim, 1, "RawPut", err, 1);
        let out = outcome(&mut sim, put("k1", "v1"));
        let kind = match &out.result {
            Err(Error::Region { kind, .. }) => kind.to_string(),
            Err(Error::Undetermined(_)) => "undetermined result".to_owned(),
            other => panic!("{name}: {other:?}\n{}", out.text()),
        };
        let expected = match name {
            "FlashbackInProgress" => "flashback in progress",
            "FlashbackNotPrepared" => "flashback not prepared",
            "RaftEntryTooLarge" => "raft entry too large",
            _ => "undetermined result",
        };
        assert_eq!(kind, expected, "{name}");
        assert_eq!(
            out.store_sends(),
            sends(&["store-1 RawPut"]),
            "{name}\n{}",
            out.text()
        );
        assert_eq!(out.region_lookups(), 0, "{name}");
        assert_eq!(out.elapsed, ms(2), "{name}\n{}", out.text());
        // The cluster is fine afterwards: the next request succeeds on the cached route.
        let next = outcome(&mut sim, get("k1"));
        expect_value(&next, "v0");
        assert_eq!(next.store_sends(), sends(&["store-1 RawGet"]), "{name}");
    }
}

/// A leader that moves while the client backs off: the retry meets NotLeader and follows it.
#[test]
fn on_region_error_leader_moved_during_retry() {
    let mut sim = warm();
    let stale = region_error(|e| e.stale_command = Some(Default::default()));
    inject(&mut sim, 1, "RawPut", stale, 1);
    // The StaleCommand answer arrives at +2 ms; the leader moves during the 2 ms backoff.
    let at = sim.now() + ms(3);
    sim.schedule(
        at,
        ClusterFault::TransferLeader {
            key: bytes("k1"),
            store_id: 3,
        },
    );
    let out = outcome(&mut sim, put("k1", "v1"));
    expect_ok(&out);
    assert_eq!(
        out.store_sends(),
        sends(&["store-1 RawPut", "store-1 RawPut", "store-3 RawPut"]),
        "{}",
        out.text()
    );
    assert_eq!(out.region_lookups(), 0, "{}", out.text());
}

/// TestOnRegionError, peers that keep naming each other as the leader (a stale view on both):
/// hints are followed at once only a few times in a row, then with regionScheduling backoffs,
/// so the request ends in a typed error within its budget instead of spinning.
#[test]
fn on_region_error_not_leader_ping_pong() {
    let mut script = Script::new(|address, _, _| {
        let other = if address == "store-1" { 2 } else { 1 };
        Reply::RegionError(not_leader(Some(peer(other))))
    });
    script.config = script.config.clone().with_raw_max_backoff(ms(100));
    let op = script.submit(put_command("key", "value"));
    script.run();
    match script.result(op) {
        Err(Error::BackoffExhausted { kind, slept_ms, .. }) => {
            assert_eq!(kind.to_string(), "regionScheduling");
            assert_eq!(*slept_ms, 126);
        }
        other => panic!("{other:?}\n{}", script.trace.join("\n")),
    }
    let sent = script.store_sends.len();
    // Nine sends per round (eight hints followed at once, then a backoff), seven rounds:
    // regionScheduling sleeps of 2..64 ms add up to 126 ms, past the 100 ms budget.
    assert_eq!(sent, 63, "{}", script.trace.join("\n"));
    assert!(
        script
            .store_sends
            .iter()
            .all(|(a, _)| a == "store-1" || a == "store-2"),
        "{}",
        script.trace.join("\n")
    );
    assert_eq!(script.region_lookups, 1, "{}", script.trace.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// region_request_test.go: send failures, cancellation, store checks.
// ---------------------------------------------------------------------------------------------

fn single_store(budget_ms: u64) -> Setup {
    let mut setup = with_budget(budget_ms);
    setup.cluster = SimConfig {
        cluster: ClusterConfig {
            store_count: 1,
            replica_count: 1,
            ..ClusterConfig::default()
        },
        ..SimConfig::default()
    };
    setup
}

/// TestOnSendFailedWithStoreRestart: with the only store down the request fails with a typed
/// error once the budget is spent (tikvRPC backoffs between attempts); after the restart the
/// region is located again and the request succeeds.
#[test]
fn on_send_failed_with_store_restart() {
    let mut sim = warm_with(single_store(1_000));
    sim.apply(ClusterFault::StopStore(1));
    sim.take_trace();
    let out = outcome(&mut sim, put("k1", "v1"));
    let slept = expect_exhausted(&out, "tikvRPC");
    assert!(slept >= 1_000, "{slept}");
    // Five attempts, each failing in the transport; with a single peer every failure drops
    // the region, so every retry asks PD for it again.
    assert_eq!(
        out.store_sends(),
        sends(&["store-1 RawPut"; 5]),
        "{}",
        out.text()
    );
    assert_eq!(out.region_lookups(), 4, "{}", out.text());
    sim.apply(ClusterFault::RestartStore(1));
    sim.take_trace();
    // "Locate region again is needed": the region was dropped by the last failure.
    let out = outcome(&mut sim, put("k1", "v2"));
    expect_ok(&out);
    assert_eq!(
        out.store_sends(),
        sends(&["store-1 RawPut"]),
        "{}",
        out.text()
    );
    assert_eq!(out.region_lookups(), 1, "{}", out.text());
    let next = outcome(&mut sim, get("k1"));
    expect_value(&next, "v2");
}

/// TestOnSendFailedWithCloseKnownStoreThenUseNewOne: the cached leader's store (store 2) stops
/// and store 1 takes over; the send failure moves the request to another peer, which reaches
/// the new leader.
#[test]
fn on_send_failed_with_close_known_store_then_use_new_one() {
    let mut sim = simulation(setup());
    sim.apply(ClusterFault::TransferLeader {
        key: bytes("k1"),
        store_id: 2,
    });
    let warm = outcome(&mut sim, put("k1", "v0"));
    expect_ok(&warm);
    assert_eq!(
        warm.store_sends(),
        sends(&["store-2 RawPut"]),
        "{}",
        warm.text()
    );
    sim.apply(ClusterFault::StopStore(2));
    sim.apply(ClusterFault::TransferLeader {
        key: bytes("k1"),
        store_id: 1,
    });
    sim.take_trace();
    let out = outcome(&mut sim, put("k1", "v1"));
    expect_ok(&out);
    // The failed leader, then the next peer (store 3), which names store 1.
    assert_eq!(
        out.store_sends(),
        sends(&["store-2 RawPut", "store-3 RawPut", "store-1 RawPut"]),
        "{}",
        out.text()
    );
    assert_eq!(out.region_lookups(), 0, "{}", out.text());
    // One tikvRPC backoff (100 ms base, equal jitter) after the failed send.
    assert!(
        out.elapsed >= ms(50) && out.elapsed < ms(120),
        "{:?}\n{}",
        out.elapsed,
        out.text()
    );
}

/// TestOnSendFailedWithCancelled: the caller gives up while its write is in flight, and the
/// store's answer says the call was cancelled. client-go hands `context.Canceled` back to the
/// caller and retries nothing. Here the caller's cancellation is dropping its future (the
/// driver cancels the operation in the machine; the caller is gone, so no error is
/// delivered), and the late CANCELLED answer is dropped: no other store request, PD lookup
/// or probe follows, and the machine holds no operation. Then, as in the Go test once the
/// store is back to normal, the next write succeeds, on the cached region.
#[test]
fn on_send_failed_with_cancelled() {
    let mut sim = warm();
    let cancelled = FaultAction::Status(Status::new(Code::Cancelled, "context canceled"));
    inject_action(&mut sim, 1, "RawPut", cancelled, 1);
    let client = sim.client().clone();
    let raw = client.raw();
    let start = sim.now();
    {
        let mut put = std::pin::pin!(raw.put("k1", "v1"));
        let executor = sim.runtime().executor().clone();
        // Half a round trip: the request has left, its answer has not come.
        let mut timer = executor.sleep_until(executor.now() + ms(1));
        let finished = sim
            .block_on(std::future::poll_fn(|cx| {
                if put.as_mut().poll(cx).is_ready() {
                    return std::task::Poll::Ready(true);
                }
                timer.as_mut().poll(cx).map(|()| false)
            }))
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(!finished, "the write was still out when its caller left");
    }
    // Long enough for the answer, and for any retry or backoff it could have caused.
    sim.sleep(ms(500)).unwrap_or_else(|err| panic!("{err}"));
    let ops = sim
        .block_on(client.ops_in_flight())
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(ops, Ok(0));
    let out = Outcome {
        result: Ok(Answer::Unit),
        trace: sim.take_trace(),
        elapsed: sim.now().saturating_since(start),
    };
    assert_eq!(
        out.store_sends(),
        sends(&["store-1 RawPut"]),
        "{}",
        out.text()
    );
    assert!(
        out.trace
            .iter()
            .any(|line| line.contains("<- #") && line.to_lowercase().contains("cancel")),
        "the cancelled answer came back: {}",
        out.text()
    );
    assert!(
        !out.trace
            .iter()
            .any(|line| line.contains(" pd.") || line.contains("health.Check")),
        "{}",
        out.text()
    );

    let next = outcome(&mut sim, put("k1", "v2"));
    expect_ok(&next);
    assert_eq!(
        next.store_sends(),
        sends(&["store-1 RawPut"]),
        "{}",
        next.text()
    );
    assert_eq!(next.region_lookups(), 0, "{}", next.text());
    let read = outcome(&mut sim, get("k1"));
    expect_value(&read, "v2");
}

/// The other half of client-go's `onSendFail` for `codes.Canceled`: a store that answers
/// CANCELLED although the caller did not cancel (keepalive, a proxy, a store shutting down)
/// is treated as a send failure and retried.
#[test]
fn on_send_failed_with_cancelled_by_peer_is_retried() {
    let mut sim = warm();
    let cancelled = FaultAction::Status(Status::new(Code::Cancelled, "cancelled by peer"));
    inject_action(&mut sim, 1, "RawPut", cancelled, 1);
    let out = outcome(&mut sim, put("k1", "v1"));
    expect_ok(&out);
    // Treated as a send failure: the next peer, which names the leader again.
    assert_eq!(
        out.store_sends(),
        sends(&["store-1 RawPut", "store-2 RawPut", "store-1 RawPut"]),
        "{}",
        out.text()
    );
    assert!(
        out.elapsed >= ms(50) && out.elapsed < ms(110),
        "{:?}\n{}",
        out.elapsed,
        out.text()
    );
    let next = outcome(&mut sim, get("k1"));
    expect_value(&next, "v1");
}

/// TestNoReloadRegionWhenCtxCanceled: a request abandoned by its caller (its future dropped
/// while the request is on its way) reports nothing and leaves the region cache alone: the
/// machine holds no operation afterwards, and the next request needs no PD lookup.
#[test]
fn no_reload_region_when_ctx_canceled() {
    let mut sim = warm();
    let client = sim.client().clone();
    let raw = client.raw();
    {
        let mut put = std::pin::pin!(raw.put("k1", "v1"));
        let executor = sim.runtime().executor().clone();
        // Half a round trip: the request has left, its answer has not come.
        let mut timer = executor.sleep_until(executor.now() + ms(1));
        let finished = sim
            .block_on(std::future::poll_fn(|cx| {
                if put.as_mut().poll(cx).is_ready() {
                    return std::task::Poll::Ready(true);
                }
                timer.as_mut().poll(cx).map(|()| false)
            }))
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(!finished);
    }
    let ops = sim
        .block_on(client.ops_in_flight())
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(ops, Ok(0));
    sim.sleep(ms(10)).unwrap_or_else(|err| panic!("{err}"));
    sim.take_trace();
    let out = outcome(&mut sim, get("k1"));
    assert!(
        matches!(out.result, Ok(Answer::Value(_))),
        "{:?}",
        out.result
    );
    assert_eq!(
        out.store_sends(),
        sends(&["store-1 RawGet"]),
        "{}",
        out.text()
    );
    assert_eq!(out.region_lookups(), 0, "{}", out.text());
}

/// TestOnMaxTimestampNotSyncedError: retried on the same peer after maxTsNotSynced backoffs
/// (2 ms, 4 ms) until it succeeds.
#[test]
fn on_max_timestamp_not_synced_error() {
    let mut sim = warm();
    let err = region_error(|e| e.max_timestamp_not_synced = Some(Default::default()));
    inject(&mut sim, 1, "RawPut", err, 2);
    let out = outcome(&mut sim, put("k1", "v1"));
    expect_ok(&out);
    assert_eq!(
        out.store_sends(),
        sends(&["store-1 RawPut"; 3]),
        "{}",
        out.text()
    );
    assert_eq!(out.region_lookups(), 0, "{}", out.text());
    assert_eq!(out.elapsed, ms(12), "{}", out.text());
}

/// A TCP relay in front of a store's port that counts the client connections it carries, so
/// a test can see connections open and close.
struct Relay {
    address: String,
    counts: Arc<RelayCounts>,
    accept: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct RelayCounts {
    /// Connections the client opened.
    accepted: AtomicUsize,
    /// Connections the client closed (its side ended).
    closed: AtomicUsize,
}

impl Relay {
    /// Relays every connection made to a fresh loopback port to `target`.
    async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let address = listener
            .local_addr()
            .unwrap_or_else(|err| panic!("{err}"))
            .to_string();
        let counts = Arc::<RelayCounts>::default();
        let shared = Arc::clone(&counts);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                shared.accepted.fetch_add(1, AtomicOrdering::SeqCst);
                let Ok(store) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (store_read, store_write) = store.into_split();
                let closed = Arc::clone(&shared);
                tokio::spawn(async move {
                    relay_bytes(client_read, store_write).await;
                    closed.closed.fetch_add(1, AtomicOrdering::SeqCst);
                });
                tokio::spawn(relay_bytes(store_read, client_write));
            }
        });
        Self {
            address,
            counts,
            accept,
        }
    }

    fn accepted(&self) -> usize {
        self.counts.accepted.load(AtomicOrdering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.counts.closed.load(AtomicOrdering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies bytes from `from` to `to` until `from` ends or either side fails; dropping `to`
/// then passes the end on.
async fn relay_bytes(from: OwnedReadHalf, to: OwnedWriteHalf) {
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        if from.readable().await.is_err() {
            return;
        }
        let read = match from.try_read(&mut buffer) {
            Ok(0) => return,
            Ok(read) => read,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        };
        let mut written = 0;
        while written < read {
            if to.writable().await.is_err() {
                return;
            }
            match to.try_write(&buffer[written..read]) {
                Ok(n) => written += n,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }
}

/// TestCloseConnectionOnStoreNotMatch: a store answering StoreNotMatch makes the client close
/// its connection to the address the request went to (client-go's `CloseAddr`, every
/// version of the address's pool): the address may now belong to another store or resolve
/// elsewhere. A real client (one connection per store) talks to the simulated cluster's only
/// store through a relay that counts connections: the retry after StoreNotMatch dials a new
/// connection, the one that carried StoreNotMatch is closed, and the new one is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_connection_on_store_not_match() {
    let server = SimServer::start(SimConfig {
        cluster: ClusterConfig {
            store_count: 1,
            replica_count: 1,
            ..ClusterConfig::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap_or_else(|err| panic!("{err}"));
    let store = server
        .store_addresses()
        .first()
        .map(|(_, address)| address.clone())
        .unwrap_or_else(|| panic!("no store"));
    let relay = Relay::start(store).await;
    server
        .with(|sim| {
            sim.cluster
                .set_store_address(1, &relay.address, &relay.address)
        })
        .unwrap_or_else(|err| panic!("{err}"));
    let config = Config::default().with_connections_per_store(1);
    let client =
        tikv_tokio::connect([server.pd_address()], config).unwrap_or_else(|err| panic!("{err}"));
    let raw = client.raw();
    let limit = Duration::from_secs(30);
    let put = tokio::time::timeout(limit, raw.put("k1", "v0")).await;
    assert_eq!(put, Ok(Ok(())));
    assert_eq!(relay.accepted(), 1);

    let err = region_error(|e| e.store_not_match = Some(Default::default()));
    server.with(|sim| {
        sim.faults.inject(FaultRule {
            store_id: Some(1),
            command: Some("RawGet".to_owned()),
            region_id: None,
            action: FaultAction::RegionError(Box::new(err)),
            remaining: 1,
        })
    });
    let got = tokio::time::timeout(limit, raw.get("k1")).await;
    assert_eq!(got, Ok(Ok(Some(bytes("v0")))));
    // The retry could not reuse the only connection: it was closed, and a new one dialled.
    assert_eq!(relay.accepted(), 2);
    // The closed connection goes away once its task has ended.
    tokio::time::timeout(limit, async {
        while relay.closed() < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the connection that met StoreNotMatch stayed open"));
    // The new connection stays: later requests use it.
    let again = tokio::time::timeout(limit, raw.get("k1")).await;
    assert_eq!(again, Ok(Ok(Some(bytes("v0")))));
    assert_eq!((relay.accepted(), relay.closed()), (2, 1));
}

/// TestCloseConnectionOnStoreNotMatch, in the machine: StoreNotMatch also makes the client ask
/// PD for the store again (and the region) before retrying.
#[test]
fn close_connection_on_store_not_match_re_resolves_the_store() {
    let mut sim = warm();
    let err = region_error(|e| e.store_not_match = Some(Default::default()));
    inject(&mut sim, 1, "RawGet", err, 1);
    let out = outcome(&mut sim, get("k1"));
    expect_value(&out, "v0");
    assert_eq!(
        out.store_sends(),
        sends(&["store-1 RawGet"; 2]),
        "{}",
        out.text()
    );
    assert_eq!(out.pd_calls("pd.GetStore"), 1, "{}", out.text());
    assert_eq!(out.region_lookups(), 1, "{}", out.text());
}

/// TestClusterIDInReq / TestSendReqCtx: every store request carries the cluster id, the region
/// id and epoch, and the peer it is addressed to.
#[test]
fn cluster_id_in_req() {
    let mut script = Script::new(|_, _, _| Reply::Ok);
    let op = script.submit(get_command("a"));
    script.run();
    assert!(matches!(script.result(op), Ok(Output::Value(_))));
    assert_eq!(script.store_sends.len(), 1);
    let (address, request) = &script.store_sends[0];
    assert_eq!(address, "store-1");
    let context = request.context().unwrap_or_else(|| panic!("no context"));
    assert_eq!(context.cluster_id, CLUSTER_ID);
    assert_eq!(context.region_id, REGION_ID);
    assert_eq!(context.region_epoch, Some(epoch()));
    assert_eq!(context.peer, Some(peer(1)));
    assert!(!context.is_retry_request);
}

// ---------------------------------------------------------------------------------------------
// region_request3_test.go: three stores.
// ---------------------------------------------------------------------------------------------

/// TestSwitchPeerWhenNoLeader: the leader says NotLeader without naming one and PD still
/// names it (an election in progress that PD has not seen); client-go moves on to the other
/// peers, one of which answers.
#[test]
fn switch_peer_when_no_leader() {
    let mut script = Script::new(|address, _, _| {
        if address == "store-1" {
            Reply::RegionError(not_leader(None))
        } else {
            Reply::Ok
        }
    });
    script.config = script.config.clone().with_raw_max_backoff(ms(5_000));
    let op = script.submit(put_command("key", "value"));
    script.run();
    assert!(
        matches!(script.result(op), Ok(Output::Unit)),
        "{:?}\n{}",
        script.result(op),
        script.trace.join("\n")
    );
    let last = script.store_sends.last().map(|(a, _)| a.as_str());
    assert_ne!(last, Some("store-1"));
}

/// TestSwitchPeerWhenNoLeaderErrorWithNewLeaderInfo: NotLeader naming the next peer is followed
/// at once: exactly two requests, no backoff, and the region stays cached (no PD lookup for
/// the next request, which goes to the new leader).
#[test]
fn switch_peer_when_no_leader_error_with_new_leader_info() {
    let mut script = Script::new(|_, _, n| match n {
        0 => Reply::RegionError(not_leader(Some(peer(2)))),
        _ => Reply::Ok,
    });
    let op = script.submit(get_command("a"));
    script.run();
    assert!(
        matches!(script.result(op), Ok(Output::Value(_))),
        "{}",
        script.trace.join("\n")
    );
    let addresses: Vec<&str> = script.store_sends.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        addresses,
        ["store-1", "store-2"],
        "{}",
        script.trace.join("\n")
    );
    assert_eq!(script.region_lookups, 1);
    let first_done = script.now;
    assert_eq!(
        first_done,
        Time::from_millis(6),
        "{}",
        script.trace.join("\n")
    );
    let op = script.submit(get_command("a"));
    script.run();
    assert!(matches!(script.result(op), Ok(Output::Value(_))));
    assert_eq!(script.store_sends.len(), 3);
    assert_eq!(script.store_sends[2].0, "store-2");
    assert_eq!(script.region_lookups, 1, "{}", script.trace.join("\n"));
}

/// TestSendReqWithReplicaSelector, "Normal": one request, no backoff.
#[test]
fn send_req_with_replica_selector_normal() {
    let mut sim = warm();
    let out = outcome(&mut sim, put("key", "value"));
    expect_ok(&out);
    assert_eq!(out.store_sends(), sends(&["store-1 RawPut"]));
    assert_eq!(out.elapsed, ms(2));
}

/// TestSendReqWithReplicaSelector, "switch to the next peer due to store failure and the
/// leader is on the next peer": one failed send, one tikvRPC backoff, then the new leader;
/// later requests go to it directly.
#[test]
fn send_req_with_replica_selector_store_down_leader_on_next_peer() {
    let mut sim = warm();
    sim.apply(ClusterFault::TransferLeader {
        key: bytes("k1"),
        store_id: 2,
    });
    sim.apply(ClusterFault::StopStore(1));
    sim.take_trace();
    let out = outcome(&mut sim, put("key", "value"));
    expect_ok(&out);
    assert_eq!(
        out.store_sends(),
        sends(&["store-1 RawPut", "store-2 RawPut"]),
        "{}",
        out.text()
    );
    assert!(
        out.elapsed >= ms(50) && out.elapsed < ms(110),
        "{:?}\n{}",
        out.elapsed,
        out.text()
    );
    let next = outcome(&mut sim, put("key", "value2"));
    expect_ok(&next);
    assert_eq!(
        next.store_sends(),
        sends(&["store-2 RawPut"]),
        "{}",
        next.text()
    );
    assert_eq!(next.elapsed, ms(2));
}

/// TestSendReqWithReplicaSelector, "leader failure but the new leader is not elected": every
/// attempt fails (the leader is down, the followers point at it) until the budget runs out;
/// the error is typed.
#[test]
fn send_req_with_replica_selector_leader_down_not_elected() {
    let mut sim = warm_with(with_budget(1_000));
    sim.apply(ClusterFault::StopStore(1));
    sim.take_trace();
    let out = outcome(&mut sim, put("key", "value"));
    assert!(
        matches!(out.result, Err(Error::BackoffExhausted { .. })),
        "{:?}\n{}",
        out.result,
        out.text()
    );
    // The dead leader, then a follower that names it again, and so on: one tikvRPC backoff
    // per failed send to the leader, the region kept (its leader is right, just down).
    let sent = out.store_sends();
    assert!(sent.len() >= 4, "{}", out.text());
    for (i, send) in sent.iter().enumerate() {
        let expected = if i % 2 == 0 {
            "store-1 RawPut"
        } else {
            "store-2 RawPut"
        };
        assert_eq!(send, expected, "{}", out.text());
    }
    assert_eq!(out.region_lookups(), 0, "{}", out.text());
    // Bounded: the budget (1 s) stops it well before the 20 s default.
    assert!(out.elapsed < ms(5_000), "{:?}", out.elapsed);
    // Once a leader is elected on a running store, requests succeed again.
    sim.apply(ClusterFault::ElectAway(1));
    sim.take_trace();
    let next = outcome(&mut sim, put("key", "value2"));
    expect_ok(&next);
}

/// TestSendReqWithReplicaSelector, "no leader": every peer says NotLeader without a leader;
/// each answer backs off (regionScheduling) and moves to the next peer, keeping the region,
/// until the budget runs out.
#[test]
fn send_req_with_replica_selector_no_leader() {
    let mut sim = warm_with(with_budget(100));
    for store in 1..=3 {
        inject(&mut sim, store, "RawPut", not_leader(None), 1_000);
    }
    let out = outcome(&mut sim, put("key", "value"));
    let slept = expect_exhausted(&out, "regionScheduling");
    // regionScheduling: 2, 4, 8, 16, 32, 64 ms.
    assert_eq!(slept, 126);
    let sent = out.store_sends();
    assert_eq!(sent.len(), 7, "{}", out.text());
    // Round robin over the three peers.
    assert_eq!(
        sent[..4],
        sends(&[
            "store-1 RawPut",
            "store-2 RawPut",
            "store-3 RawPut",
            "store-1 RawPut"
        ])[..]
    );
    assert_eq!(out.region_lookups(), 0, "{}", out.text());
}

/// TestSendReqWithReplicaSelector, "retry the same replica on MaxTimestampNotSynced /
/// ReadIndexNotReady / ProposalInMergingMode": always the leader, never PD, until the budget
/// runs out.
#[test]
fn send_req_with_replica_selector_retry_same_replica() {
    let cases = [
        (
            "maxTsNotSynced",
            region_error(|e| e.max_timestamp_not_synced = Some(Default::default())),
        ),
        (
            "regionScheduling",
            region_error(|e| e.read_index_not_ready = Some(Default::default())),
        ),
        (
            "regionScheduling",
            region_error(|e| e.proposal_in_merging_mode = Some(Default::default())),
        ),
    ];
    for (kind, err) in cases {
        let mut sim = warm_with(with_budget(100));
        inject(&mut sim, 1, "RawPut", err, 1_000);
        let out = outcome(&mut sim, put("key", "value"));
        let slept = expect_exhausted(&out, kind);
        assert_eq!(slept, 126, "{kind}");
        assert_eq!(
            out.store_sends(),
            sends(&["store-1 RawPut"; 7]),
            "{kind}\n{}",
            out.text()
        );
        assert_eq!(out.region_lookups(), 0, "{kind}\n{}", out.text());
    }
}

/// TestSendReqWithReplicaSelector, "invalidate region on StoreNotMatch / RegionNotFound /
/// EpochNotMatch": each drops the region, so the retry asks PD again. (A NotLeader naming no
/// usable leader moves to the next peer instead; see `send_req_with_replica_selector_no_leader`.)
#[test]
fn send_req_with_replica_selector_invalidate_region() {
    let cases = [
        region_error(|e| e.store_not_match = Some(Default::default())),
        region_error(|e| e.region_not_found = Some(Default::default())),
        region_error(|e| e.epoch_not_match = Some(Default::default())),
    ];
    for err in cases {
        let mut sim = warm();
        let description = format!("{err:?}");
        inject(&mut sim, 1, "RawPut", err, 1);
        let out = outcome(&mut sim, put("key", "value"));
        expect_ok(&out);
        assert_eq!(
            out.store_sends(),
            sends(&["store-1 RawPut"; 2]),
            "{description}\n{}",
            out.text()
        );
        assert_eq!(out.region_lookups(), 1, "{description}\n{}", out.text());
    }
}

/// TestSendReqWithReplicaSelector, "unknown region errors": a region error with no known field
/// drops the region and retries after a regionMiss backoff.
#[test]
fn send_req_with_replica_selector_unknown_region_error() {
    let mut sim = warm();
    inject(&mut sim, 1, "RawPut", errorpb::Error::default(), 1);
    let out = outcome(&mut sim, put("key", "value"));
    expect_ok(&out);
    assert_eq!(
        out.store_sends(),
        sends(&["store-1 RawPut"; 2]),
        "{}",
        out.text()
    );
    assert_eq!(out.region_lookups(), 1, "{}", out.text());
    assert_eq!(out.elapsed, ms(8), "{}", out.text());
}

/// TestSendReqWithReplicaSelector, "runs out of all replicas": every store down, the request
/// fails with a typed error after tikvRPC backoffs, having tried more than one store.
#[test]
fn send_req_with_replica_selector_all_stores_down() {
    let mut sim = warm_with(with_budget(1_000));
    for store in 1..=3 {
        sim.apply(ClusterFault::StopStore(store));
    }
    sim.take_trace();
    let out = outcome(&mut sim, put("key", "value"));
    assert!(
        matches!(out.result, Err(Error::BackoffExhausted { .. })),
        "{:?}\n{}",
        out.result,
        out.text()
    );
    let sent = out.store_sends();
    for store in ["store-1 RawPut", "store-2 RawPut", "store-3 RawPut"] {
        assert!(sent.iter().any(|s| s == store), "{store}\n{}", out.text());
    }
    // Each failure costs one backoff, so the sends are bounded by the budget.
    assert!(sent.len() <= 8, "{}", out.text());
    assert!(out.elapsed < ms(5_000), "{:?}", out.elapsed);
}

/// TestSendReqFirstTimeout (leader read): the leader does not answer; after the request's
/// deadline the client tries another peer, which sends it back to the (now answering) leader.
#[test]
fn send_req_first_timeout_leader_read() {
    let mut setup = setup();
    setup.client = setup.client.clone().with_read_timeout_short(ms(200));
    let mut sim = warm_with(setup);
    inject_action(&mut sim, 1, "RawGet", FaultAction::Drop, 1);
    let out = outcome(&mut sim, get("k1"));
    expect_value(&out, "v0");
    assert_eq!(
        out.store_sends(),
        sends(&["store-1 RawGet", "store-2 RawGet", "store-1 RawGet"]),
        "{}",
        out.text()
    );
    assert_eq!(out.region_lookups(), 0, "{}", out.text());
    // The 200 ms deadline, one tikvRPC backoff (50 to 100 ms), a few round trips.
    assert!(
        out.elapsed >= ms(250) && out.elapsed < ms(310),
        "{:?}\n{}",
        out.elapsed,
        out.text()
    );
}

/// TestSendReqFirstTimeout (write): a write that keeps timing out is retried with tikvRPC
/// backoffs (no fast retry for writes) and fails with a typed error once the budget is spent.
#[test]
fn send_req_first_timeout_write() {
    let mut setup = with_budget(1_000);
    setup.client = setup.client.clone().with_read_timeout_short(ms(10));
    let mut sim = warm_with(setup);
    for store in 1..=3 {
        inject_action(&mut sim, store, "RawPut", FaultAction::Drop, 1_000);
    }
    let out = outcome(&mut sim, put("key", "value"));
    let slept = expect_exhausted(&out, "tikvRPC");
    assert!(slept >= 1_000, "{slept}");
    let sent = out.store_sends();
    for store in ["store-1 RawPut", "store-2 RawPut", "store-3 RawPut"] {
        assert!(sent.iter().any(|s| s == store), "{store}\n{}", out.text());
    }
    assert!(
        out.text().contains("deadline of 10ms exceeded"),
        "{}",
        out.text()
    );
}

/// TestLeaderStuck: the leader stops answering and, 200 ms later, leadership moves to a
/// follower; the request (2 s timeout) reaches the new leader within 2.5 s.
#[test]
fn leader_stuck() {
    let mut setup = setup();
    setup.client = setup.client.clone().with_read_timeout_short(ms(2_000));
    let mut sim = warm_with(setup);
    inject_action(&mut sim, 1, "RawPut", FaultAction::Drop, 1_000);
    let at = sim.now() + ms(200);
    sim.schedule(
        at,
        ClusterFault::TransferLeader {
            key: bytes("k1"),
            store_id: 2,
        },
    );
    let out = outcome(&mut sim, put("key", "value1"));
    expect_ok(&out);
    assert_eq!(
        out.store_sends(),
        sends(&["store-1 RawPut", "store-2 RawPut"]),
        "{}",
        out.text()
    );
    assert!(
        out.elapsed >= ms(2_000),
        "{:?}\n{}",
        out.elapsed,
        out.text()
    );
    assert!(out.elapsed < ms(2_500), "{:?}\n{}", out.elapsed, out.text());
}

fn region_of(sim: &Simulation, key: &str) -> u64 {
    sim.with(|cluster| {
        cluster
            .cluster
            .region_by_key(key.as_bytes())
            .map(|region| region.id)
    })
    .unwrap_or_else(|| panic!("no region for {key}"))
}

// ---------------------------------------------------------------------------------------------
// A scripted cluster for exact control: one region on stores 1-3, PD naming store 1 as the
// leader, and a store function deciding every store answer (client-go's `fnClient`).
// ---------------------------------------------------------------------------------------------

const CLUSTER_ID: u64 = 1;
const REGION_ID: u64 = 2;

fn epoch() -> metapb::RegionEpoch {
    metapb::RegionEpoch {
        conf_ver: 1,
        version: 1,
    }
}

fn peer(store_id: u64) -> metapb::Peer {
    metapb::Peer {
        id: 10 + store_id,
        store_id,
        ..Default::default()
    }
}

fn scripted_region() -> metapb::Region {
    metapb::Region {
        id: REGION_ID,
        region_epoch: Some(epoch()),
        peers: (1..=3).map(peer).collect(),
        ..Default::default()
    }
}

/// A scripted store's answer.
enum Reply {
    /// The normal (empty) response.
    Ok,
    /// A response carrying this region error.
    RegionError(errorpb::Error),
}

/// Drives a [`Core`] against PD answers for [`scripted_region`] and a store function called
/// with the address, the request and how many store requests came before it.
struct Script<F> {
    config: Config,
    core: Option<Core>,
    store: F,
    pd: Responder,
    now: Time,
    /// Replies in flight: (arrival, sequence) → reply.
    queue: BTreeMap<(Time, u64), (RequestId, Result<Response, RpcError>)>,
    seq: u64,
    results: BTreeMap<u64, Result<Output, Error>>,
    store_sends: Vec<(String, StoreRequest)>,
    region_lookups: usize,
    trace: Vec<String>,
}

impl<F: FnMut(&str, &StoreRequest, usize) -> Reply> Script<F> {
    fn new(store: F) -> Self {
        Self {
            config: Config::default().with_rng_seed(1),
            core: None,
            store,
            pd: Responder::default(),
            now: Time::ZERO,
            queue: BTreeMap::new(),
            seq: 0,
            results: BTreeMap::new(),
            store_sends: Vec::new(),
            region_lookups: 0,
            trace: Vec::new(),
        }
    }

    /// Starts `command` now; returns its op number.
    fn submit(&mut self, command: Command) -> u64 {
        let config = self.config.clone();
        let now = self.now;
        let core = self.core.get_or_insert_with(|| {
            Core::new(config, vec!["pd:2379".to_owned()], now).unwrap_or_else(|err| panic!("{err}"))
        });
        let op = core.handle_command(now, command);
        op.get()
    }

    fn result(&self, op: u64) -> &Result<Output, Error> {
        self.results
            .get(&op)
            .unwrap_or_else(|| panic!("op {op} not finished\n{}", self.trace.join("\n")))
    }

    fn answer_pd(
        &mut self,
        request: &Request,
        transmit: &tikv_core::machine::Transmit,
    ) -> Result<Response, RpcError> {
        let header = Some(pdpb::ResponseHeader {
            cluster_id: CLUSTER_ID,
            ..Default::default()
        });
        let Request::Pd(pd) = request else {
            return self.pd.answer(transmit);
        };
        match pd.as_ref() {
            PdRequest::GetRegion(_) | PdRequest::GetRegionById(_) | PdRequest::GetPrevRegion(_) => {
                self.region_lookups += 1;
                let response = pdpb::GetRegionResponse {
                    header,
                    region: Some(scripted_region()),
                    leader: Some(peer(1)),
                    ..Default::default()
                };
                Ok(Response::Pd(Box::new(match pd.as_ref() {
                    PdRequest::GetRegionById(_) => PdResponse::GetRegionById(response),
                    PdRequest::GetPrevRegion(_) => PdResponse::GetPrevRegion(response),
                    _ => PdResponse::GetRegion(response),
                })))
            }
            PdRequest::GetStore(get) => Ok(Response::Pd(Box::new(PdResponse::GetStore(
                pdpb::GetStoreResponse {
                    header,
                    store: Some(metapb::Store {
                        id: get.store_id,
                        address: format!("store-{}", get.store_id),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )))),
            _ => self.pd.answer(transmit),
        }
    }

    /// Runs until every operation finished (bounded).
    fn run(&mut self) {
        let Some(mut core) = self.core.take() else {
            return;
        };
        for _ in 0..100_000 {
            while let Some(transmit) = core.poll_transmit() {
                self.trace.push(format!(
                    "{} -> #{} {} {}",
                    self.now,
                    transmit.id.get(),
                    transmit.address,
                    tikv_core::machine::testing::describe(&transmit.request)
                ));
                let reply = match &transmit.request {
                    Request::Store(request) => {
                        let n = self.store_sends.len();
                        self.store_sends
                            .push((transmit.address.to_string(), (**request).clone()));
                        let mut response = StoreResponse::empty_for(request);
                        if let Reply::RegionError(err) = (self.store)(&transmit.address, request, n)
                        {
                            response.set_region_error(err);
                        }
                        Ok(Response::Store(Box::new(response)))
                    }
                    other => self.answer_pd(&other.clone(), &transmit),
                };
                self.seq += 1;
                self.queue
                    .insert((self.now + ms(1), self.seq), (transmit.id, reply));
            }
            while let Some(Event::Done(op, result)) = core.poll_event() {
                self.trace
                    .push(format!("{} op{} done {result:?}", self.now, op.get()));
                self.results.insert(op.get(), result);
            }
            if core.ops_in_flight() == 0 && self.queue.is_empty() {
                self.core = Some(core);
                return;
            }
            let next_reply = self.queue.keys().next().map(|(at, _)| *at);
            let next_timer = core.poll_timeout();
            let Some(next) = [next_reply, next_timer].into_iter().flatten().min() else {
                panic!("stuck\n{}", self.trace.join("\n"));
            };
            self.now = self.now.max(next);
            if next_timer.is_some_and(|at| at <= self.now) {
                core.handle_timeout(self.now);
            } else if let Some((_, (id, reply))) = self.queue.pop_first() {
                core.handle_reply(self.now, id, reply);
            }
        }
        panic!("livelock\n{}", self.trace.join("\n"));
    }
}
