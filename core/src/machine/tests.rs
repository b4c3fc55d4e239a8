//! Tests of the client machine against scripted answers.

use bytes::Bytes;
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

use super::testing::{Fault, RegionFault, Responder, describe, run, settle};
use super::*;
use crate::command::MAX_RAW_SCAN_LIMIT;
use crate::config::{ApiVersion, Config};
use crate::rpc::{PdRequest, Request};

/// A machine for the scripted cluster; the periodic store refresh is off so that traces show
/// only what each test provokes (`store_list_refresh_*` tests turn it on).
fn core() -> Core {
    let config = Config {
        store_refresh_interval: std::time::Duration::ZERO,
        pd_member_refresh_interval: std::time::Duration::ZERO,
        ..Config::default()
    };
    match Core::new(config, vec!["pd:2379".into()], Time::ZERO) {
        Ok(core) => core,
        Err(err) => panic!("{err}"),
    }
}

fn get(key: &str) -> Command {
    Command::Raw(RawCommand::Get {
        key: Bytes::copy_from_slice(key.as_bytes()),
        cf: String::new(),
    })
}

fn drain(core: &mut Core) -> Vec<Transmit> {
    std::iter::from_fn(|| core.poll_transmit()).collect()
}

#[test]
fn first_operation_discovers_pd_then_locates_region_and_store() {
    let mut core = core();
    let op = core.handle_command(Time::ZERO, get("k"));
    let outcome = run(&mut core, &mut Responder::default(), &[], Time::ZERO, 100);
    let outcome = outcome.unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        outcome.results.get(&op),
        Some(&Ok(Output::Value(Some(Bytes::new()))))
    );
    insta::assert_snapshot!("first_get", outcome.trace.join("\n"));
    assert_eq!(core.cluster_id(), 1);
}

#[test]
fn concurrent_misses_for_one_key_share_one_region_lookup() {
    let mut core = core();
    let ops: Vec<OpId> = (0..10)
        .map(|_| core.handle_command(Time::ZERO, get("hot")))
        .collect();
    let outcome = run(&mut core, &mut Responder::default(), &[], Time::ZERO, 200)
        .unwrap_or_else(|err| panic!("{err}"));
    let lookups = outcome
        .trace
        .iter()
        .filter(|line| line.contains("pd.GetRegion"))
        .count();
    assert_eq!(lookups, 1, "{:#?}", outcome.trace);
    let stores = outcome
        .trace
        .iter()
        .filter(|l| l.contains("pd.GetStore"))
        .count();
    assert_eq!(stores, 1);
    for op in ops {
        assert!(matches!(
            outcome.results.get(&op),
            Some(Ok(Output::Value(_)))
        ));
    }
}

#[test]
fn tso_waiters_are_served_by_one_request() {
    let mut core = core();
    let ops: Vec<OpId> = (0..50)
        .map(|_| core.handle_command(Time::ZERO, Command::Pd(PdCommand::Timestamp)))
        .collect();
    let outcome = run(&mut core, &mut Responder::default(), &[], Time::ZERO, 100)
        .unwrap_or_else(|err| panic!("{err}"));
    let tso: Vec<&String> = outcome
        .trace
        .iter()
        .filter(|l| l.contains("pd.Tso"))
        .collect();
    assert_eq!(tso.len(), 1, "{tso:?}");
    assert!(tso[0].contains("count=50"));
    let mut timestamps: Vec<u64> = ops
        .iter()
        .map(|op| match outcome.results.get(op) {
            Some(Ok(Output::Timestamp(ts))) => ts.version(),
            other => panic!("{other:?}"),
        })
        .collect();
    // Handed out in request order, consecutive.
    assert!(timestamps.windows(2).all(|w| w[1] == w[0] + 1));
    timestamps.dedup();
    assert_eq!(timestamps.len(), 50);
    insta::assert_snapshot!("tso_batch", outcome.trace.join("\n"));
}

#[test]
fn timestamps_requested_during_a_tso_call_go_in_the_next_one() {
    let mut core = core();
    core.handle_command(Time::ZERO, Command::Pd(PdCommand::Timestamp));
    let sent = drain(&mut core);
    // Discovery first.
    assert!(matches!(
        sent[0].request.as_pd(),
        Some(PdRequest::GetMembers(_))
    ));
    let mut responder = Responder::default();
    let reply = responder.answer(&sent[0]);
    core.handle_reply(Time::ZERO, sent[0].id, reply);
    let sent = drain(&mut core);
    assert_eq!(sent.len(), 1);
    core.handle_command(Time::ZERO, Command::Pd(PdCommand::Timestamp));
    core.handle_command(Time::ZERO, Command::Pd(PdCommand::Timestamp));
    assert!(
        drain(&mut core).is_empty(),
        "one TSO request in flight at a time"
    );
    let reply = responder.answer(&sent[0]);
    core.handle_reply(Time::ZERO, sent[0].id, reply);
    let next = drain(&mut core);
    assert_eq!(next.len(), 1);
    assert!(matches!(next[0].request.as_pd(), Some(PdRequest::Tso(t)) if t.count == 2));
}

#[test]
fn not_leader_with_hint_retries_without_backoff() {
    let mut core = core();
    let op = core.handle_command(Time::ZERO, get("k"));
    let faults = [
        Fault::None,
        Fault::None,
        Fault::None,
        Fault::Region(RegionFault::NotLeader),
    ];
    let outcome = run(
        &mut core,
        &mut Responder::default(),
        &faults,
        Time::ZERO,
        100,
    )
    .unwrap_or_else(|err| panic!("{err}"));
    assert!(matches!(
        outcome.results.get(&op),
        Some(Ok(Output::Value(_)))
    ));
    assert!(
        !outcome.trace.iter().any(|l| l.ends_with("timeout")),
        "{:#?}",
        outcome.trace
    );
    insta::assert_snapshot!("get_not_leader", outcome.trace.join("\n"));
}

#[test]
fn server_busy_backs_off_then_succeeds() {
    let mut core = core();
    let op = core.handle_command(Time::ZERO, get("k"));
    let faults = [
        Fault::None,
        Fault::None,
        Fault::None,
        Fault::Region(RegionFault::ServerIsBusy),
    ];
    let outcome = run(
        &mut core,
        &mut Responder::default(),
        &faults,
        Time::ZERO,
        100,
    )
    .unwrap_or_else(|err| panic!("{err}"));
    assert!(matches!(
        outcome.results.get(&op),
        Some(Ok(Output::Value(_)))
    ));
    assert!(outcome.trace.iter().any(|l| l.ends_with("timeout")));
}

#[test]
fn dropped_reply_times_out_and_retries() {
    let mut core = core();
    let op = core.handle_command(Time::ZERO, get("k"));
    let faults = [Fault::None, Fault::None, Fault::None, Fault::Drop];
    let outcome = run(
        &mut core,
        &mut Responder::default(),
        &faults,
        Time::ZERO,
        100,
    )
    .unwrap_or_else(|err| panic!("{err}"));
    assert!(matches!(
        outcome.results.get(&op),
        Some(Ok(Output::Value(_)))
    ));
    let timeout_line = outcome
        .trace
        .iter()
        .position(|l| l.ends_with("timeout"))
        .unwrap_or_else(|| panic!("{:#?}", outcome.trace));
    // The deadline is the short read timeout (30 s).
    assert!(
        outcome.trace[timeout_line].starts_with("30."),
        "{:#?}",
        outcome.trace
    );
}

#[test]
fn an_always_failing_cluster_fails_the_operation_within_its_budget() {
    let mut core = core();
    let op = core.handle_command(Time::ZERO, get("k"));
    let mut faults = vec![Fault::None, Fault::None, Fault::None];
    faults.extend(std::iter::repeat_n(Fault::Transport, 10_000));
    let outcome = run(
        &mut core,
        &mut Responder::default(),
        &faults,
        Time::ZERO,
        100_000,
    )
    .unwrap_or_else(|err| panic!("{err}"));
    // Store calls and the PD lookups that follow them all fail: whichever budget runs out
    // first ends the operation, with a typed error, in bounded virtual time.
    match outcome.results.get(&op) {
        Some(Err(Error::BackoffExhausted { .. } | Error::Rpc(_))) => {}
        other => panic!("{other:?}"),
    }
    let last = outcome.trace.last().cloned().unwrap_or_default();
    let secs: f64 = last
        .split('s')
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or(f64::MAX);
    assert!(secs < 120.0, "{last}");
}

#[test]
fn store_failures_alone_exhaust_the_tikv_rpc_budget() {
    let mut core = core();
    let op = core.handle_command(Time::ZERO, get("k"));
    let mut responder = Responder::default();
    let mut now = Time::ZERO;
    let mut result = None;
    for _ in 0..100_000 {
        while let Some(transmit) = core.poll_transmit() {
            let reply = match transmit.request {
                Request::Store(_) => Err(RpcError::ConnectionLost("down".into())),
                Request::Pd(_) | Request::Health(_) => responder.answer(&transmit),
            };
            core.handle_reply(now, transmit.id, reply);
        }
        if let Some(Event::Done(done, outcome)) = core.poll_event() {
            assert_eq!(done, op);
            result = Some(outcome);
            break;
        }
        if let Some(at) = core.poll_timeout() {
            now = now.max(at);
            core.handle_timeout(now);
        }
    }
    match result {
        Some(Err(Error::BackoffExhausted { kind, .. })) => {
            assert_eq!(kind, crate::backoff::BackoffKind::TiKvRpc);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unreachable_pd_fails_operations_with_a_typed_error() {
    let mut core = core();
    let op = core.handle_command(Time::ZERO, get("k"));
    let faults = vec![Fault::Transport; 10_000];
    let outcome = run(
        &mut core,
        &mut Responder::default(),
        &faults,
        Time::ZERO,
        100_000,
    )
    .unwrap_or_else(|err| panic!("{err}"));
    assert!(
        matches!(outcome.results.get(&op), Some(Err(_))),
        "{:?}",
        outcome.results
    );
}

#[test]
fn invalid_input_fails_fast() {
    let mut core = core();
    let cases = vec![
        get(""),
        Command::Raw(RawCommand::Scan {
            start: Bytes::new(),
            end: Bytes::new(),
            limit: MAX_RAW_SCAN_LIMIT + 1,
            key_only: false,
            reverse: false,
            cf: String::new(),
        }),
        Command::Raw(RawCommand::CompareAndSwap {
            key: Bytes::from_static(b"k"),
            previous: None,
            value: Bytes::new(),
            cf: String::new(),
            atomic: false,
        }),
        Command::Raw(RawCommand::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::new(),
            ttl_secs: 10,
            cf: String::new(),
            atomic: false,
        }),
        Command::Raw(RawCommand::BatchPut {
            pairs: vec![(Bytes::from_static(b"k"), Bytes::new())],
            ttls_secs: vec![1, 2],
            cf: String::new(),
            atomic: false,
        }),
    ];
    for command in cases {
        let op = core.handle_command(Time::ZERO, command.clone());
        match core.poll_event() {
            Some(Event::Done(done, Err(Error::InvalidArgument(_)))) => assert_eq!(done, op),
            other => panic!("{command:?} gave {other:?}"),
        }
    }
    assert_eq!(core.ops_in_flight(), 0);
    assert!(core.poll_transmit().is_none());
}

#[test]
fn ttl_is_accepted_with_v1ttl() {
    let config = Config::default().with_api_version(ApiVersion::V1Ttl);
    let mut core =
        Core::new(config, vec!["pd:2379".into()], Time::ZERO).unwrap_or_else(|err| panic!("{err}"));
    let op = core.handle_command(
        Time::ZERO,
        Command::Raw(RawCommand::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            ttl_secs: 10,
            cf: String::new(),
            atomic: false,
        }),
    );
    let outcome = run(&mut core, &mut Responder::default(), &[], Time::ZERO, 100)
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(outcome.results.get(&op), Some(&Ok(Output::Unit)));
}

#[test]
fn cancelled_operation_reports_nothing_and_ignores_late_replies() {
    let mut core = core();
    let op = core.handle_command(Time::ZERO, get("k"));
    let sent = drain(&mut core);
    core.cancel(Time::ZERO, op);
    let reply = Responder::default().answer(&sent[0]);
    core.handle_reply(Time::ZERO, sent[0].id, reply);
    assert_eq!(core.ops_in_flight(), 0);
    assert!(core.poll_event().is_none());
}

#[test]
fn empty_endpoint_list_is_rejected() {
    assert!(matches!(
        Core::new(Config::default(), Vec::new(), Time::ZERO),
        Err(Error::InvalidArgument(_))
    ));
}

/// A random fault for the property test.
#[derive(Clone, Debug)]
struct AnyFault(Fault);

impl Arbitrary for AnyFault {
    fn arbitrary(g: &mut Gen) -> Self {
        let kinds = [
            Fault::None,
            Fault::None,
            Fault::None,
            Fault::Transport,
            Fault::Drop,
            Fault::Region(RegionFault::NotLeader),
            Fault::Region(RegionFault::NoLeader),
            Fault::Region(RegionFault::EpochNotMatch),
            Fault::Region(RegionFault::ServerIsBusy),
            Fault::Region(RegionFault::RegionNotFound),
            Fault::Region(RegionFault::StaleCommand),
            Fault::Region(RegionFault::EpochBehind {
                version: 1,
                conf_ver: 0,
            }),
        ];
        Self(g.choose(&kinds).cloned().unwrap_or(Fault::None))
    }
}

/// Whatever faults hit the requests, every operation finishes (with a value or a typed error)
/// within a bounded number of steps, operations cancelled at once finish with no event, and
/// the machine ends empty: once the requests still out (dropped ones, background lookups,
/// probes) are answered or time out, no operation, request, timer or waiter is left. The
/// periodic store refresh is off, as it re-arms forever.
#[test]
fn every_operation_finishes_under_any_faults() {
    fn property(faults: Vec<AnyFault>, ops: u8, seed: u64, cancel: u8) -> TestResult {
        let config = Config {
            store_refresh_interval: std::time::Duration::ZERO,
            pd_member_refresh_interval: std::time::Duration::ZERO,
            ..Config::default()
        }
        .with_rng_seed(seed);
        let Ok(mut core) = Core::new(config, vec!["pd:2379".into()], Time::ZERO) else {
            return TestResult::failed();
        };
        let count = usize::from(ops % 6) + 1;
        let mut ids = Vec::new();
        for i in 0..count {
            let command = match i % 6 {
                0 => get("a"),
                1 => Command::Pd(PdCommand::Timestamp),
                2 => Command::Raw(RawCommand::BatchGet {
                    keys: vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
                    cf: String::new(),
                }),
                3 => Command::Raw(RawCommand::Scan {
                    start: Bytes::from_static(b"a"),
                    end: Bytes::from_static(b"z"),
                    limit: 10,
                    key_only: false,
                    reverse: i % 2 == 0,
                    cf: String::new(),
                }),
                4 => Command::Raw(RawCommand::DeleteRange {
                    start: Bytes::new(),
                    end: Bytes::new(),
                    cf: String::new(),
                }),
                _ => Command::Raw(RawCommand::Checksum {
                    start: Bytes::new(),
                    end: Bytes::new(),
                }),
            };
            ids.push(core.handle_command(Time::ZERO, command));
        }
        // Operations whose bit is set in `cancel` are abandoned while parked on discovery.
        let mut cancelled = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            if (cancel >> i) & 1 == 1 {
                let before = core.ops_in_flight();
                core.cancel(Time::ZERO, *id);
                if core.ops_in_flight() < before {
                    cancelled.push(*id);
                }
            }
        }
        ids.retain(|id| !cancelled.contains(id));
        let faults: Vec<Fault> = faults.into_iter().map(|f| f.0).collect();
        let mut responder = Responder::default();
        let outcome = match run(&mut core, &mut responder, &faults, Time::ZERO, 200_000) {
            Ok(outcome) => outcome,
            Err(err) => return TestResult::error(err),
        };
        if let Some(missing) = ids.iter().find(|id| !outcome.results.contains_key(id)) {
            return TestResult::error(format!("operation {} never finished", missing.0));
        }
        if let Some(reported) = cancelled.iter().find(|id| outcome.results.contains_key(id)) {
            return TestResult::error(format!("cancelled operation {} reported", reported.0));
        }
        let end = core.services.now();
        if let Err(err) = settle(&mut core, &mut responder, end, 10_000) {
            return TestResult::error(err);
        }
        let left = core.leftovers();
        if left.is_empty() {
            TestResult::passed()
        } else {
            TestResult::error(format!("the machine still holds {left:#?}"))
        }
    }
    QuickCheck::new()
        .tests(200)
        .quickcheck(property as fn(Vec<AnyFault>, u8, u64, u8) -> TestResult);
}

#[test]
fn api_v2_loads_the_keyspace_then_prefixes_keys() {
    let config = Config::default().with_keyspace("ks");
    let mut core =
        Core::new(config, vec!["pd:2379".into()], Time::ZERO).unwrap_or_else(|err| panic!("{err}"));
    let ops: Vec<OpId> = (0..3)
        .map(|_| core.handle_command(Time::ZERO, get("k")))
        .collect();
    let mut responder = Responder::default();
    let mut keys = Vec::new();
    let mut results = Vec::new();
    let mut loads = 0;
    for _ in 0..100 {
        let sent = drain(&mut core);
        if sent.is_empty() {
            break;
        }
        for transmit in sent {
            match (transmit.request.as_pd(), transmit.request.as_store()) {
                (Some(PdRequest::LoadKeyspace(r)), _) => {
                    assert_eq!(r.name, "ks");
                    loads += 1;
                }
                (_, Some(crate::rpc::StoreRequest::RawGet(r))) => {
                    keys.push(r.key.clone());
                    assert_eq!(
                        r.context.as_ref().and_then(|c| c.keyspace),
                        Some(tikv_proto::kvrpcpb::context::Keyspace::KeyspaceId(1))
                    );
                }
                _ => {}
            }
            let reply = responder.answer(&transmit);
            core.handle_reply(Time::ZERO, transmit.id, reply);
        }
        while let Some(Event::Done(op, result)) = core.poll_event() {
            results.push((op, result));
        }
    }
    assert_eq!(loads, 1, "waiting operations share one keyspace load");
    assert_eq!(keys.len(), 3);
    assert!(
        keys.iter().all(|k| k.as_ref() == b"r\x00\x00\x01k"),
        "{keys:?}"
    );
    assert_eq!(results.len(), ops.len());
}

#[test]
fn a_send_failure_probes_the_store_once() {
    let mut core = core();
    let a = core.handle_command(Time::ZERO, get("a"));
    let b = core.handle_command(Time::ZERO, get("a"));
    // Discovery, region, store, then both gets fail in the transport.
    let faults = [
        Fault::None,
        Fault::None,
        Fault::None,
        Fault::Transport,
        Fault::Transport,
    ];
    let outcome = run(
        &mut core,
        &mut Responder::default(),
        &faults,
        Time::ZERO,
        200,
    )
    .unwrap_or_else(|err| panic!("{err}"));
    let probes = outcome
        .trace
        .iter()
        .filter(|line| line.contains("health.Check"))
        .count();
    assert_eq!(probes, 1, "{:#?}", outcome.trace);
    for op in [a, b] {
        assert!(
            matches!(outcome.results.get(&op), Some(Ok(_))),
            "{:?}",
            outcome.results
        );
    }
}

#[test]
fn low_resolution_timestamp_reuses_a_recent_one() {
    let mut core = core();
    let mut responder = Responder::default();
    let first = core.handle_command(Time::ZERO, Command::Pd(PdCommand::Timestamp));
    let outcome =
        run(&mut core, &mut responder, &[], Time::ZERO, 100).unwrap_or_else(|err| panic!("{err}"));
    let Some(Ok(Output::Timestamp(ts))) = outcome.results.get(&first).cloned() else {
        panic!("{:?}", outcome.results);
    };
    // Within the staleness bound: answered at once, no request.
    let cached = core.handle_command(
        Time::from_millis(1_000),
        Command::Pd(PdCommand::LowResolutionTimestamp),
    );
    assert!(core.poll_transmit().is_none());
    assert_eq!(
        core.poll_event(),
        Some(Event::Done(cached, Ok(Output::Timestamp(ts))))
    );
    // Past it: a fresh timestamp from TSO.
    let fresh = core.handle_command(
        Time::from_millis(3_000),
        Command::Pd(PdCommand::LowResolutionTimestamp),
    );
    let outcome = run(
        &mut core,
        &mut responder,
        &[],
        Time::from_millis(3_000),
        100,
    )
    .unwrap_or_else(|err| panic!("{err}"));
    assert!(matches!(outcome.results.get(&fresh), Some(Ok(Output::Timestamp(t))) if *t > ts));
}

fn refreshing_core() -> Core {
    let config = Config {
        store_refresh_interval: std::time::Duration::from_secs(15),
        pd_member_refresh_interval: std::time::Duration::ZERO,
        ..Config::default()
    };
    match Core::new(config, vec!["pd:2379".into()], Time::ZERO) {
        Ok(core) => core,
        Err(err) => panic!("{err}"),
    }
}

/// Runs one get from `now` and returns the trace.
fn get_trace(core: &mut Core, responder: &mut Responder, now: Time) -> Vec<String> {
    let op = core.handle_command(now, get("k"));
    let outcome = run(core, responder, &[], now, 100).unwrap_or_else(|err| panic!("{err}"));
    assert!(
        matches!(outcome.results.get(&op), Some(Ok(Output::Value(_)))),
        "{:#?}",
        outcome.trace
    );
    outcome.trace
}

/// Fires the store refresh due at 15 s and returns its transmit.
fn store_refresh_transmit(core: &mut Core) -> Transmit {
    let at = Time::from_micros(15_000_000);
    assert_eq!(core.poll_timeout(), Some(at));
    core.handle_timeout(at);
    let transmit = core
        .poll_transmit()
        .unwrap_or_else(|| panic!("no store refresh sent"));
    assert_eq!(describe(&transmit.request), "pd.GetAllStores");
    transmit
}

#[test]
fn store_list_refresh_picks_up_a_moved_store() {
    let mut core = refreshing_core();
    let mut responder = Responder::default();
    get_trace(&mut core, &mut responder, Time::ZERO);
    // The store moves; the periodic refresh learns it before any request fails.
    responder.store_address = "store-1-moved:20160".to_owned();
    let refresh = store_refresh_transmit(&mut core);
    let now = Time::from_micros(15_000_000);
    core.handle_reply(now, refresh.id, responder.answer(&refresh));
    // Refreshing goes on.
    assert_eq!(core.poll_timeout(), Some(Time::from_micros(30_000_000)));
    let trace = get_trace(&mut core, &mut responder, now);
    assert!(
        trace
            .iter()
            .any(|line| line.contains("store-1-moved:20160 RawGet")),
        "{trace:#?}"
    );
    assert!(
        !trace.iter().any(|line| line.contains("pd.GetStore")),
        "{trace:#?}"
    );
}

#[test]
fn store_list_refresh_drops_stores_pd_no_longer_lists() {
    let mut core = refreshing_core();
    let mut responder = Responder::default();
    get_trace(&mut core, &mut responder, Time::ZERO);
    let refresh = store_refresh_transmit(&mut core);
    let now = Time::from_micros(15_000_000);
    let empty = Response::Pd(Box::new(crate::rpc::PdResponse::GetAllStores(
        tikv_proto::pdpb::GetAllStoresResponse {
            header: Some(tikv_proto::pdpb::ResponseHeader {
                cluster_id: 1,
                ..Default::default()
            }),
            ..Default::default()
        },
    )));
    core.handle_reply(now, refresh.id, Ok(empty));
    // The store is forgotten, so the next request asks PD where it is again.
    let trace = get_trace(&mut core, &mut responder, now);
    assert!(
        trace.iter().any(|line| line.contains("pd.GetStore id=1")),
        "{trace:#?}"
    );
}

fn pd_error_stores() -> Response {
    Response::Pd(Box::new(crate::rpc::PdResponse::GetAllStores(
        tikv_proto::pdpb::GetAllStoresResponse {
            header: Some(tikv_proto::pdpb::ResponseHeader {
                cluster_id: 1,
                error: Some(tikv_proto::pdpb::Error {
                    r#type: tikv_proto::pdpb::ErrorType::Unknown as i32,
                    message: "busy".into(),
                }),
            }),
            ..Default::default()
        },
    )))
}

#[test]
fn store_list_refresh_failure_waits_for_the_next_round() {
    let mut core = refreshing_core();
    let mut responder = Responder::default();
    get_trace(&mut core, &mut responder, Time::ZERO);
    let refresh = store_refresh_transmit(&mut core);
    let mut now = Time::from_micros(15_000_000);
    core.handle_reply(now, refresh.id, Ok(pd_error_stores()));
    // PD keeps failing: each round retries within PD's backoff budget, gives up, and the next
    // round starts an interval later.
    let mut sent_at = Vec::new();
    while now < Time::from_micros(120_000_000) {
        while let Some(transmit) = core.poll_transmit() {
            assert_eq!(describe(&transmit.request), "pd.GetAllStores");
            sent_at.push(now);
            core.handle_reply(now, transmit.id, Ok(pd_error_stores()));
        }
        let Some(at) = core.poll_timeout() else {
            panic!("store refreshing stopped after {sent_at:?}");
        };
        now = now.max(at);
        core.handle_timeout(now);
    }
    // The first round's budget is 20 s, so a request after 15 + 20 + 15 s belongs to a later
    // round.
    assert!(
        sent_at
            .iter()
            .any(|at| *at >= Time::from_micros(50_000_000)),
        "{sent_at:?}"
    );
    // The client still works, with the store it resolved before.
    let trace = get_trace(&mut core, &mut responder, now);
    assert!(
        !trace.iter().any(|line| line.contains("pd.GetStore")),
        "{trace:#?}"
    );
}

/// A batch region lookup answered with regions that start after the key asked for (PD
/// reporting a hole, as during a split) is retried after a backoff, not at once in a loop.
#[test]
fn batch_region_lookup_with_a_hole_backs_off() {
    let mut core = core();
    let mut responder = Responder::default();
    let op = core.handle_command(
        Time::ZERO,
        Command::Raw(RawCommand::BatchGet {
            keys: vec![Bytes::from_static(b"a"), Bytes::from_static(b"c")],
            cf: String::new(),
        }),
    );
    let mut now = Time::ZERO;
    let mut scans = Vec::new();
    for _ in 0..100 {
        while let Some(transmit) = core.poll_transmit() {
            let reply = match &transmit.request {
                Request::Pd(pd) if matches!(**pd, PdRequest::BatchScanRegions(_)) => {
                    scans.push(now);
                    let region = tikv_proto::metapb::Region {
                        id: 2,
                        start_key: Bytes::from_static(b"b"),
                        region_epoch: Some(tikv_proto::metapb::RegionEpoch {
                            conf_ver: 1,
                            version: 1,
                        }),
                        peers: vec![tikv_proto::metapb::Peer {
                            id: 3,
                            store_id: 1,
                            ..Default::default()
                        }],
                        ..Default::default()
                    };
                    if scans.len() < 3 {
                        // The hole: nothing holds "a".
                        Ok(Response::Pd(Box::new(
                            crate::rpc::PdResponse::BatchScanRegions(
                                tikv_proto::pdpb::BatchScanRegionsResponse {
                                    header: Some(tikv_proto::pdpb::ResponseHeader {
                                        cluster_id: 1,
                                        ..Default::default()
                                    }),
                                    regions: vec![tikv_proto::pdpb::Region {
                                        leader: region.peers.first().copied(),
                                        region: Some(region),
                                        ..Default::default()
                                    }],
                                },
                            ),
                        )))
                    } else {
                        responder.answer(&transmit)
                    }
                }
                _ => responder.answer(&transmit),
            };
            core.handle_reply(now, transmit.id, reply);
        }
        if let Some(Event::Done(done, result)) = core.poll_event() {
            assert_eq!(done, op);
            assert!(matches!(result, Ok(Output::Values(_))), "{result:?}");
            break;
        }
        let Some(at) = core.poll_timeout() else {
            panic!("stuck after lookups at {scans:?}");
        };
        now = now.max(at);
        core.handle_timeout(now);
    }
    assert!(scans.len() >= 3, "{scans:?}");
    // Every retry came after a backoff.
    assert!(scans.windows(2).all(|w| w[1] > w[0]), "{scans:?}");
}

/// Drives `core` until `op` finishes, answering with `answer` (or the responder when it
/// returns `None`); returns the result and the times of the answered requests.
fn drive_until_done(
    core: &mut Core,
    op: OpId,
    responder: &mut Responder,
    mut answer: impl FnMut(&Transmit) -> Option<Result<Response, RpcError>>,
) -> Result<Output, Error> {
    let mut now = Time::ZERO;
    for _ in 0..10_000 {
        while let Some(transmit) = core.poll_transmit() {
            let reply = answer(&transmit).unwrap_or_else(|| responder.answer(&transmit));
            core.handle_reply(now, transmit.id, reply);
        }
        if let Some(Event::Done(done, result)) = core.poll_event() {
            assert_eq!(done, op);
            return result;
        }
        let Some(at) = core.poll_timeout() else {
            panic!("op {op:?} stuck");
        };
        now = now.max(at);
        core.handle_timeout(now);
    }
    panic!("op {op:?} did not finish");
}

fn pd_reply(response: crate::rpc::PdResponse) -> Option<Result<Response, RpcError>> {
    Some(Ok(Response::Pd(Box::new(response))))
}

fn ok_header() -> Option<tikv_proto::pdpb::ResponseHeader> {
    Some(tikv_proto::pdpb::ResponseHeader {
        cluster_id: 1,
        ..Default::default()
    })
}

/// A split whose scatter PD partly refuses still reports the new regions, with the scatter
/// error beside them; the split regions leave the cache.
#[test]
fn split_reports_new_regions_and_a_failed_scatter() {
    let mut core = core();
    let mut responder = Responder::default();
    let op = core.handle_command(
        Time::ZERO,
        Command::Region(RegionCommand::SplitRegions {
            mode: KeyMode::Raw,
            keys: vec![Bytes::from_static(b"m")],
            scatter: true,
            scatter_group: "t1".into(),
        }),
    );
    let mut scatter_asked = Vec::new();
    let result = drive_until_done(&mut core, op, &mut responder, |transmit| {
        match &transmit.request {
            Request::Store(store) => {
                let crate::rpc::StoreRequest::SplitRegion(split) = &**store else {
                    return None;
                };
                assert_eq!(split.split_keys, [Bytes::from_static(b"m")]);
                assert!(split.is_raw_kv);
                let region = |id: u64| tikv_proto::metapb::Region {
                    id,
                    ..Default::default()
                };
                Some(Ok(Response::Store(Box::new(
                    crate::rpc::StoreResponse::SplitRegion(
                        tikv_proto::kvrpcpb::SplitRegionResponse {
                            regions: vec![region(10), region(2)],
                            ..Default::default()
                        },
                    ),
                ))))
            }
            Request::Pd(pd) => match &**pd {
                PdRequest::ScatterRegion(scatter) => {
                    scatter_asked.push((scatter.regions_id.clone(), scatter.group.clone()));
                    pd_reply(crate::rpc::PdResponse::ScatterRegion(
                        tikv_proto::pdpb::ScatterRegionResponse {
                            header: ok_header(),
                            finished_percentage: 0,
                            failed_regions_id: vec![10],
                        },
                    ))
                }
                _ => None,
            },
            Request::Health(_) => None,
        }
    });
    assert_eq!(scatter_asked, [(vec![10], "t1".to_owned())]);
    let Ok(Output::Split(outcome)) = result else {
        panic!("{result:?}");
    };
    assert_eq!(outcome.region_ids, [10]);
    assert!(
        matches!(
            &outcome.scatter_error,
            Some(Error::Pd {
                kind: crate::error::PdErrorKind::ScatterFailed,
                ..
            })
        ),
        "{outcome:?}"
    );
}

/// Waiting for a scatter that never finishes gives up when the budget is spent; a check
/// answers at once.
#[test]
fn wait_scatter_region_finish_gives_up_after_its_budget() {
    let running = || {
        pd_reply(crate::rpc::PdResponse::GetOperator(
            tikv_proto::pdpb::GetOperatorResponse {
                header: ok_header(),
                region_id: 7,
                desc: Bytes::from_static(b"scatter-region"),
                status: tikv_proto::pdpb::OperatorStatus::Running as i32,
                ..Default::default()
            },
        ))
    };
    let mut core = core();
    let mut responder = Responder::default();
    let op = core.handle_command(
        Time::ZERO,
        Command::Region(RegionCommand::WaitScatterRegionFinish {
            region_id: 7,
            budget: std::time::Duration::from_millis(200),
        }),
    );
    let mut polls = 0;
    let result = drive_until_done(&mut core, op, &mut responder, |transmit| {
        match &transmit.request {
            Request::Pd(pd) if matches!(**pd, PdRequest::GetOperator(_)) => {
                polls += 1;
                running()
            }
            _ => None,
        }
    });
    assert!(
        matches!(result, Err(Error::BackoffExhausted { .. })),
        "{result:?}"
    );
    assert!(polls > 2, "{polls}");

    let op = core.handle_command(
        Time::ZERO,
        Command::Region(RegionCommand::CheckRegionInScattering { region_id: 7 }),
    );
    let result = drive_until_done(&mut core, op, &mut responder, |transmit| {
        match &transmit.request {
            Request::Pd(pd) if matches!(**pd, PdRequest::GetOperator(_)) => running(),
            _ => None,
        }
    });
    assert_eq!(result, Ok(Output::Scattering(true)));
}

/// The cluster id comes from PD: discovered first on a fresh client, then answered without
/// another call.
#[test]
fn cluster_id_discovers_pd_once() {
    let mut core = core();
    let mut responder = Responder::default();
    let op = core.handle_command(Time::ZERO, Command::Pd(PdCommand::ClusterId));
    let mut calls = 0;
    let result = drive_until_done(&mut core, op, &mut responder, |_| {
        calls += 1;
        None
    });
    assert_eq!(result, Ok(Output::ClusterId(responder.cluster_id)));
    assert!(calls >= 1);
    let op = core.handle_command(Time::ZERO, Command::Pd(PdCommand::ClusterId));
    assert!(core.poll_transmit().is_none());
    assert!(matches!(
        core.poll_event(),
        Some(Event::Done(done, Ok(Output::ClusterId(id)))) if done == op && id == responder.cluster_id
    ));
}

/// Locating keys answers from PD and the cache without contacting a store, and fails with
/// PD's error once PD cannot answer within its budget.
#[test]
fn locate_uses_pd_only_and_reports_pd_failures() {
    let mut machine = core();
    let mut responder = Responder::default();
    let op = machine.handle_command(
        Time::ZERO,
        Command::Region(RegionCommand::LocateRange {
            mode: KeyMode::Raw,
            start: Bytes::from_static(b"a"),
            end: Bytes::new(),
            limit: 0,
        }),
    );
    let mut store_requests = 0;
    let result = drive_until_done(&mut machine, op, &mut responder, |transmit| {
        if matches!(transmit.request, Request::Store(_)) {
            store_requests += 1;
        }
        None
    });
    let Ok(Output::Locations(found)) = result else {
        panic!("{result:?}");
    };
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].region_id, 2);
    assert_eq!(
        (found[0].start_key.as_ref(), found[0].end_key.as_ref()),
        (&b""[..], &b""[..])
    );
    assert_eq!(store_requests, 0);

    let mut fresh = core();
    let op = fresh.handle_command(
        Time::ZERO,
        Command::Region(RegionCommand::LocateKey {
            mode: KeyMode::Txn,
            key: Bytes::from_static(b"k"),
        }),
    );
    let result = drive_until_done(&mut fresh, op, &mut responder, |transmit| {
        match &transmit.request {
            Request::Pd(pd) if matches!(**pd, PdRequest::GetRegion(_)) => {
                Some(Err(RpcError::ConnectionLost("pd down".into())))
            }
            _ => None,
        }
    });
    assert!(result.is_err(), "{result:?}");
}

/// Unsafe destroy range asks every store PD lists at once and names each store that failed.
#[test]
fn unsafe_destroy_range_reports_every_failed_store() {
    let mut responder = Responder::default();
    let run_with = |responder: &mut Responder, error: Option<&str>| {
        let mut core = core();
        let op = core.handle_command(
            Time::ZERO,
            Command::Maintenance(MaintenanceCommand::UnsafeDestroyRange {
                start: Bytes::from_static(b"a"),
                end: Bytes::from_static(b"z"),
            }),
        );
        let mut sent = Vec::new();
        let result = drive_until_done(&mut core, op, responder, |transmit| {
            let Request::Store(store) = &transmit.request else {
                return None;
            };
            let crate::rpc::StoreRequest::UnsafeDestroyRange(request) = &**store else {
                return None;
            };
            sent.push((transmit.address.to_string(), request.start_key.clone()));
            Some(match error {
                None => Ok(Response::Store(Box::new(
                    crate::rpc::StoreResponse::UnsafeDestroyRange(Default::default()),
                ))),
                Some("transport") => Err(RpcError::ConnectionLost("gone".into())),
                Some(message) => Ok(Response::Store(Box::new(
                    crate::rpc::StoreResponse::UnsafeDestroyRange(
                        tikv_proto::kvrpcpb::UnsafeDestroyRangeResponse {
                            error: message.to_owned(),
                            ..Default::default()
                        },
                    ),
                ))),
            })
        });
        (result, sent)
    };
    let (result, sent) = run_with(&mut responder, None);
    assert_eq!(result, Ok(Output::Unit));
    assert_eq!(
        sent,
        [("store-1:20160".to_owned(), Bytes::from_static(b"a"))]
    );
    let (result, _) = run_with(&mut responder, Some("disk full"));
    assert!(
        matches!(&result, Err(Error::Server(message)) if message.contains("store 1: disk full")),
        "{result:?}"
    );
    let (result, _) = run_with(&mut responder, Some("transport"));
    assert!(
        matches!(&result, Err(Error::Server(message)) if message.contains("store 1")),
        "{result:?}"
    );
}

/// A stale timestamp on a client without any timestamp yet asks TSO once, then derives
/// from it; a span before the epoch is refused.
#[test]
fn stale_timestamp_asks_tso_when_it_has_none() {
    let mut core = core();
    let mut responder = Responder::default();
    let op = core.handle_command(
        Time::ZERO,
        Command::Pd(PdCommand::StaleTimestamp { prev_secs: 0 }),
    );
    let mut tso = 0;
    let result = drive_until_done(&mut core, op, &mut responder, |transmit| {
        if describe(&transmit.request).starts_with("pd.Tso") {
            tso += 1;
        }
        None
    });
    assert_eq!(tso, 1);
    let Ok(Output::Timestamp(ts)) = result else {
        panic!("{result:?}");
    };
    assert_eq!(ts.logical(), 0);
    // Now answered from the cached timestamp, with no request.
    let op = core.handle_command(
        Time::ZERO,
        Command::Pd(PdCommand::StaleTimestamp { prev_secs: 1_000 }),
    );
    assert!(core.poll_transmit().is_none());
    assert!(matches!(
        core.poll_event(),
        Some(Event::Done(done, Err(Error::InvalidArgument(_)))) if done == op
    ));
}
