//! The committer against scripted store answers.

use std::time::Duration;

use super::lock_ttl_ms;
use crate::config::Config;

#[test]
fn lock_ttl_grows_with_size_and_age() {
    let config = Config::default();
    // Small transactions get the default TTL plus their age.
    assert_eq!(lock_ttl_ms(&config, 100, 0), 3_000);
    assert_eq!(lock_ttl_ms(&config, 100, 250), 3_250);
    // 1 MiB: 6 s (client-go's ttlFactor times the square root of the size in MiB).
    assert_eq!(lock_ttl_ms(&config, 1024 * 1024, 0), 6_000);
    // 4 MiB: 12 s; 100 MiB is capped at the managed TTL.
    assert_eq!(lock_ttl_ms(&config, 4 * 1024 * 1024, 0), 12_000);
    assert_eq!(lock_ttl_ms(&config, 100 * 1024 * 1024, 0), 20_000);
    // Just at the batch size the square-root rule starts but stays at the floor.
    assert_eq!(lock_ttl_ms(&config, 16 * 1024, 0), 3_000);
    let short = Config::default().with_default_lock_ttl(Duration::from_millis(100));
    assert_eq!(lock_ttl_ms(&short, 10, 5), 105);
}

use bytes::Bytes;
use tikv_proto::kvrpcpb;
use tikv_proto::rpc::RpcError;

use super::{CommitKnobs, CommitMode, CommitOptions, CommitOutcome, CommitRequest, Mutation};
use crate::command::{Command, Output, TxnCommand};
use crate::error::{Error, KeyError};
use crate::machine::testing::Responder;
use crate::machine::{Core, Event};
use crate::oracle::Timestamp;
use crate::rpc::{Request, Response, StoreRequest, StoreResponse};
use crate::time::Time;

const START: u64 = 100;

fn core_with(config: Config) -> Core {
    let config = Config {
        store_refresh_interval: Duration::ZERO,
        pd_member_refresh_interval: Duration::ZERO,
        ..config
    };
    let mut core =
        Core::new(config, vec!["pd:2379".into()], Time::ZERO).unwrap_or_else(|err| panic!("{err}"));
    core.handle_wall_clock(1_700_000_000_000);
    core
}

fn key(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn request(keys: &[&str], options: CommitOptions) -> CommitRequest {
    let mutations: Vec<Mutation> = keys
        .iter()
        .map(|k| Mutation::put(key(k), key("v")))
        .collect();
    CommitRequest {
        start_ts: Timestamp::from_version(START),
        begun_at: Time::ZERO,
        size: mutations
            .iter()
            .map(|m| (m.key.len() + m.value.len()) as u64)
            .sum(),
        primary: key(keys[0]),
        mutations,
        options,
    }
}

fn keys_text(keys: &[Bytes]) -> String {
    keys.iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect::<Vec<_>>()
        .join(",")
}

/// One line per store request: what the committer asked for.
fn describe(request: &StoreRequest) -> String {
    match request {
        StoreRequest::Prewrite(r) => {
            let keys: Vec<Bytes> = r.mutations.iter().map(|m| m.key.clone()).collect();
            format!(
                "prewrite [{}] async={} 1pc={} secondaries=[{}]",
                keys_text(&keys),
                r.use_async_commit,
                r.try_one_pc,
                keys_text(&r.secondaries)
            )
        }
        StoreRequest::Commit(r) => format!(
            "commit [{}] ts={} async={}",
            keys_text(&r.keys),
            r.commit_version,
            r.use_async_commit
        ),
        StoreRequest::BatchRollback(r) => format!("rollback [{}]", keys_text(&r.keys)),
        StoreRequest::SplitRegion(r) => format!("split [{}]", keys_text(&r.split_keys)),
        StoreRequest::TxnHeartBeat(r) => format!("heartbeat ttl={}", r.advise_lock_ttl),
        StoreRequest::CheckTxnStatus(r) => format!("check lock_ts={}", r.lock_ts),
        StoreRequest::ResolveLock(r) => format!(
            "resolve start={} commit={}",
            r.start_version, r.commit_version
        ),
        other => format!("{other:?}"),
    }
}

/// A store's answer to one request: `None` answers normally (an empty success).
type Store<'a> = dyn FnMut(&StoreRequest) -> Option<Result<StoreResponse, RpcError>> + 'a;

/// Drives `core` until nothing is in flight: PD and TSO answered by a [`Responder`], store
/// requests by `store`, timers fired in virtual time. Returns the store requests seen, in
/// order, and the user events.
fn drive(core: &mut Core, store: &mut Store<'_>) -> (Vec<String>, Vec<Event>) {
    let mut responder = Responder::default();
    let mut seen = Vec::new();
    let mut events = Vec::new();
    let mut now = Time::ZERO;
    for _ in 0..2_000 {
        let mut replies = Vec::new();
        while let Some(transmit) = core.poll_transmit() {
            let reply = match &transmit.request {
                Request::Store(request) => {
                    seen.push(describe(request));
                    match store(request) {
                        Some(reply) => reply.map(|r| Response::Store(Box::new(r))),
                        None => responder.answer(&transmit),
                    }
                }
                _ => responder.answer(&transmit),
            };
            replies.push((transmit.id, reply));
        }
        while let Some(event) = core.poll_event() {
            events.push(event);
        }
        if replies.is_empty() {
            if core.ops_in_flight() == 0 {
                return (seen, events);
            }
            match core.poll_timeout() {
                Some(at) => {
                    now = now.max(at);
                    core.handle_timeout(now);
                }
                None => panic!("stuck: {:?}", core.leftovers()),
            }
        }
        for (id, reply) in replies {
            core.handle_reply(now, id, reply);
        }
    }
    panic!("not finished: {seen:#?}");
}

fn commit(core: &mut Core, request: CommitRequest) {
    core.handle_command(
        Time::ZERO,
        Command::Txn(TxnCommand::Commit(Box::new(request))),
    );
}

fn committed(events: &[Event]) -> CommitOutcome {
    match events {
        [Event::Done(_, Ok(Output::Committed(outcome)))] => *outcome,
        other => panic!("one successful commit expected, got {other:?}"),
    }
}

fn failed(events: &[Event]) -> Error {
    match events {
        [Event::Done(_, Err(err))] => err.clone(),
        other => panic!("one failed commit expected, got {other:?}"),
    }
}

fn prewrite_ok() -> StoreResponse {
    StoreResponse::Prewrite(kvrpcpb::PrewriteResponse::default())
}

#[test]
fn two_phase_commit_prewrites_all_then_commits_the_primary_first() {
    // A tiny batch limit cuts the three keys into three requests.
    let mut core = core_with(Config::default().with_txn_commit_batch_size(1));
    commit(
        &mut core,
        request(&["a", "b", "c"], CommitOptions::default()),
    );
    let (seen, events) = drive(&mut core, &mut |_| None);
    let outcome = committed(&events);
    assert_eq!(outcome.mode, CommitMode::TwoPhase);
    let ts = outcome.commit_ts.version();
    assert_eq!(
        seen,
        vec![
            "prewrite [a] async=false 1pc=false secondaries=[]".to_owned(),
            "prewrite [b] async=false 1pc=false secondaries=[]".to_owned(),
            "prewrite [c] async=false 1pc=false secondaries=[]".to_owned(),
            format!("commit [a] ts={ts} async=false"),
            format!("commit [b] ts={ts} async=false"),
            format!("commit [c] ts={ts} async=false"),
        ]
    );
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

#[test]
fn the_primary_batch_carries_its_region_neighbours() {
    let mut core = core_with(Config::default());
    commit(
        &mut core,
        request(&["a", "b", "c"], CommitOptions::default()),
    );
    let (seen, events) = drive(&mut core, &mut |_| None);
    let ts = committed(&events).commit_ts.version();
    // One region, one batch: one prewrite and one commit carry everything.
    assert_eq!(
        seen,
        vec![
            "prewrite [a,b,c] async=false 1pc=false secondaries=[]".to_owned(),
            format!("commit [a,b,c] ts={ts} async=false"),
        ]
    );
}

#[test]
fn a_write_conflict_rolls_back_what_was_prewritten_primary_first() {
    let mut core = core_with(Config::default().with_txn_commit_batch_size(1));
    commit(&mut core, request(&["a", "b"], CommitOptions::default()));
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(r) if r.mutations[0].key == key("b") => {
            Some(Ok(StoreResponse::Prewrite(kvrpcpb::PrewriteResponse {
                errors: vec![kvrpcpb::KeyError {
                    conflict: Some(kvrpcpb::WriteConflict {
                        start_ts: START,
                        conflict_ts: 150,
                        conflict_commit_ts: 160,
                        key: key("b"),
                        primary: key("a"),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            })))
        }
        _ => None,
    });
    let err = failed(&events);
    assert!(
        matches!(err.key_error(), Some(KeyError::WriteConflict { conflict_commit_ts, .. })
            if conflict_commit_ts.version() == 160),
        "{err}"
    );
    assert_eq!(
        seen,
        vec![
            "prewrite [a] async=false 1pc=false secondaries=[]",
            "prewrite [b] async=false 1pc=false secondaries=[]",
            "rollback [a]",
            "rollback [b]",
        ]
    );
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

#[test]
fn an_optimistic_prewrite_meeting_a_newer_lock_fails_as_a_conflict() {
    let mut core = core_with(Config::default());
    commit(&mut core, request(&["a"], CommitOptions::default()));
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(_) => Some(Ok(StoreResponse::Prewrite(kvrpcpb::PrewriteResponse {
            errors: vec![lock_error(b"a", b"z", START + 50)],
            ..Default::default()
        }))),
        _ => None,
    });
    let err = failed(&events);
    assert!(
        matches!(err.key_error(), Some(KeyError::WriteConflict { conflict_start_ts, .. })
            if conflict_start_ts.version() == START + 50),
        "{err}"
    );
    // No status check: the conflict is certain.
    assert!(
        !seen.iter().any(|line| line.starts_with("check")),
        "{seen:#?}"
    );
}

fn lock_error(key: &[u8], primary: &[u8], ts: u64) -> kvrpcpb::KeyError {
    kvrpcpb::KeyError {
        locked: Some(Box::new(kvrpcpb::LockInfo {
            primary_lock: Bytes::copy_from_slice(primary),
            lock_version: ts,
            key: Bytes::copy_from_slice(key),
            lock_ttl: 3_000,
            txn_size: 1,
            lock_type: kvrpcpb::Op::Put as i32,
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[test]
fn a_prewrite_meeting_an_older_committed_lock_resolves_it_and_goes_again() {
    let mut core = core_with(Config::default());
    commit(&mut core, request(&["a"], CommitOptions::default()));
    let mut prewrites = 0;
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(_) => {
            prewrites += 1;
            if prewrites == 1 {
                Some(Ok(StoreResponse::Prewrite(kvrpcpb::PrewriteResponse {
                    errors: vec![lock_error(b"a", b"p", 50)],
                    ..Default::default()
                })))
            } else {
                Some(Ok(prewrite_ok()))
            }
        }
        StoreRequest::CheckTxnStatus(_) => Some(Ok(StoreResponse::CheckTxnStatus(
            kvrpcpb::CheckTxnStatusResponse {
                commit_version: 60,
                ..Default::default()
            },
        ))),
        _ => None,
    });
    let ts = committed(&events).commit_ts.version();
    assert_eq!(
        seen,
        vec![
            "prewrite [a] async=false 1pc=false secondaries=[]".to_owned(),
            "check lock_ts=50".to_owned(),
            "resolve start=50 commit=60".to_owned(),
            "prewrite [a] async=false 1pc=false secondaries=[]".to_owned(),
            format!("commit [a] ts={ts} async=false"),
        ]
    );
}

#[test]
fn an_expired_commit_ts_is_renewed_and_the_primary_committed_again() {
    let mut core = core_with(Config::default());
    commit(&mut core, request(&["a"], CommitOptions::default()));
    let mut commits = Vec::new();
    let (_, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Commit(r) => {
            commits.push(r.commit_version);
            if commits.len() == 1 {
                Some(Ok(StoreResponse::Commit(kvrpcpb::CommitResponse {
                    error: Some(Box::new(kvrpcpb::KeyError {
                        commit_ts_expired: Some(kvrpcpb::CommitTsExpired {
                            start_ts: START,
                            attempted_commit_ts: r.commit_version,
                            key: key("a"),
                            min_commit_ts: r.commit_version + 5,
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                })))
            } else {
                None
            }
        }
        _ => None,
    });
    let outcome = committed(&events);
    assert_eq!(commits.len(), 2, "{commits:?}");
    assert!(commits[1] > commits[0]);
    assert_eq!(outcome.commit_ts.version(), commits[1]);
}

#[test]
fn a_lost_primary_commit_reply_is_undetermined_and_nothing_is_rolled_back() {
    // A short budget: the commit keeps failing in transport until it runs out.
    let mut core = core_with(Config::default());
    commit(&mut core, request(&["a"], CommitOptions::default()));
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Commit(_) => Some(Err(RpcError::ConnectionLost("injected".into()))),
        _ => None,
    });
    let err = failed(&events);
    assert!(err.is_undetermined(), "{err}");
    assert!(
        !seen.iter().any(|line| line.starts_with("rollback")),
        "{seen:#?}"
    );
}

#[test]
fn an_undetermined_region_error_on_the_primary_commit_is_undetermined() {
    let mut core = core_with(Config::default());
    commit(&mut core, request(&["a"], CommitOptions::default()));
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Commit(_) => {
            let mut response = StoreResponse::Commit(Default::default());
            response.set_region_error(tikv_proto::errorpb::Error {
                message: "undetermined".into(),
                undetermined_result: Some(Default::default()),
                ..Default::default()
            });
            Some(Ok(response))
        }
        _ => None,
    });
    assert!(failed(&events).is_undetermined());
    assert!(
        !seen.iter().any(|line| line.starts_with("rollback")),
        "{seen:#?}"
    );
}

#[test]
fn a_two_phase_prewrite_retries_an_undetermined_region_error() {
    let mut core = core_with(Config::default());
    commit(&mut core, request(&["a"], CommitOptions::default()));
    let mut prewrites = 0;
    let (_, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(_) => {
            prewrites += 1;
            if prewrites > 1 {
                return None;
            }
            let mut response = StoreResponse::Prewrite(Default::default());
            response.set_region_error(tikv_proto::errorpb::Error {
                undetermined_result: Some(Default::default()),
                ..Default::default()
            });
            Some(Ok(response))
        }
        _ => None,
    });
    assert_eq!(committed(&events).mode, CommitMode::TwoPhase);
    assert_eq!(prewrites, 2);
}

fn async_options() -> CommitOptions {
    CommitOptions {
        async_commit: true,
        ..CommitOptions::default()
    }
}

#[test]
fn async_commit_commits_at_the_largest_min_commit_ts_answered() {
    let mut core = core_with(Config::default().with_txn_commit_batch_size(1));
    commit(&mut core, request(&["a", "b", "c"], async_options()));
    let mut answered = 1_000_000u64;
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(r) => {
            assert!(r.use_async_commit);
            assert!(r.max_commit_ts > r.min_commit_ts, "{r:?}");
            // Each store answers a different min_commit_ts; "b" the largest.
            answered += 10;
            let min = if r.mutations[0].key == key("b") {
                5_000_000
            } else {
                answered
            };
            Some(Ok(StoreResponse::Prewrite(kvrpcpb::PrewriteResponse {
                min_commit_ts: min,
                ..Default::default()
            })))
        }
        _ => None,
    });
    let outcome = committed(&events);
    assert_eq!(outcome.mode, CommitMode::AsyncCommit);
    assert_eq!(outcome.commit_ts.version(), 5_000_000);
    assert_eq!(
        seen[0], "prewrite [a] async=true 1pc=false secondaries=[b,c]",
        "the primary's lock names the secondaries"
    );
    assert_eq!(seen[1], "prewrite [b] async=true 1pc=false secondaries=[]");
    // Every key is committed afterwards, in the background, at that timestamp.
    let commits: Vec<&String> = seen.iter().filter(|l| l.starts_with("commit")).collect();
    assert_eq!(commits.len(), 3, "{seen:#?}");
    assert!(
        commits.iter().all(|l| l.contains("ts=5000000 async=true")),
        "{seen:#?}"
    );
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

#[test]
fn async_commit_falls_back_to_two_phases_when_a_store_declines() {
    let mut core = core_with(Config::default().with_txn_commit_batch_size(1));
    commit(&mut core, request(&["a", "b"], async_options()));
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(r) if r.mutations[0].key == key("a") => {
            Some(Ok(StoreResponse::Prewrite(kvrpcpb::PrewriteResponse {
                min_commit_ts: 900_000,
                ..Default::default()
            })))
        }
        // "b"'s store cannot compute a safe commit timestamp: min_commit_ts 0.
        _ => None,
    });
    let outcome = committed(&events);
    assert_eq!(outcome.mode, CommitMode::TwoPhase);
    assert!(outcome.async_commit_fallback);
    let ts = outcome.commit_ts.version();
    assert_eq!(seen[2], format!("commit [a] ts={ts} async=false"));
}

#[test]
fn async_commit_is_not_tried_past_the_key_limit() {
    let mut core = core_with(Config::default().with_async_commit_keys_limit(1));
    commit(&mut core, request(&["a", "b"], async_options()));
    let (seen, events) = drive(&mut core, &mut |_| None);
    let outcome = committed(&events);
    assert_eq!(outcome.mode, CommitMode::TwoPhase);
    assert!(
        !outcome.async_commit_fallback,
        "never tried, so no fallback"
    );
    assert_eq!(
        seen[0],
        "prewrite [a,b] async=false 1pc=false secondaries=[]"
    );
}

#[test]
fn a_lost_async_commit_prewrite_reply_is_undetermined() {
    let mut core = core_with(Config::default());
    commit(&mut core, request(&["a"], async_options()));
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(_) => Some(Err(RpcError::ConnectionLost("injected".into()))),
        _ => None,
    });
    assert!(failed(&events).is_undetermined());
    assert!(
        !seen.iter().any(|line| line.starts_with("rollback")),
        "{seen:#?}"
    );
}

fn one_pc_options() -> CommitOptions {
    CommitOptions {
        try_one_pc: true,
        ..CommitOptions::default()
    }
}

#[test]
fn one_pc_commits_in_one_request() {
    let mut core = core_with(Config::default());
    commit(&mut core, request(&["a", "b"], one_pc_options()));
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(r) => {
            assert!(r.try_one_pc);
            Some(Ok(StoreResponse::Prewrite(kvrpcpb::PrewriteResponse {
                one_pc_commit_ts: 777_777,
                ..Default::default()
            })))
        }
        _ => None,
    });
    let outcome = committed(&events);
    assert_eq!(outcome.mode, CommitMode::OnePc);
    assert_eq!(outcome.commit_ts.version(), 777_777);
    assert_eq!(
        seen,
        vec!["prewrite [a,b] async=false 1pc=true secondaries=[]"]
    );
}

#[test]
fn one_pc_is_off_when_the_writes_need_two_requests() {
    let mut core = core_with(Config::default().with_txn_commit_batch_size(1));
    commit(&mut core, request(&["a", "b"], one_pc_options()));
    let (seen, events) = drive(&mut core, &mut |_| None);
    let outcome = committed(&events);
    assert_eq!(outcome.mode, CommitMode::TwoPhase);
    assert!(outcome.one_pc_fallback);
    assert!(
        seen.iter()
            .filter(|l| l.starts_with("prewrite"))
            .all(|l| l.contains("1pc=false"))
    );
}

#[test]
fn one_pc_declined_by_the_store_falls_back_to_two_phases() {
    let mut core = core_with(Config::default());
    commit(&mut core, request(&["a"], one_pc_options()));
    // An empty answer: prewritten, but no 1PC commit timestamp.
    let (seen, events) = drive(&mut core, &mut |_| None);
    let outcome = committed(&events);
    assert_eq!(outcome.mode, CommitMode::TwoPhase);
    assert!(outcome.one_pc_fallback);
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert!(seen[1].starts_with("commit [a]"));
}

#[test]
fn a_failed_one_pc_leaves_nothing_to_roll_back() {
    let mut core = core_with(Config::default());
    commit(&mut core, request(&["a"], one_pc_options()));
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(_) => Some(Ok(StoreResponse::Prewrite(kvrpcpb::PrewriteResponse {
            errors: vec![kvrpcpb::KeyError {
                already_exist: Some(kvrpcpb::AlreadyExist { key: key("a") }),
                ..Default::default()
            }],
            ..Default::default()
        }))),
        _ => None,
    });
    assert!(matches!(
        failed(&events).key_error(),
        Some(KeyError::AlreadyExists { .. })
    ));
    assert_eq!(seen.len(), 1, "{seen:#?}");
}

#[test]
fn a_commit_abandoned_during_prewrite_rolls_back_and_reports_nothing() {
    let mut core = core_with(Config::default());
    let op = core.handle_command(
        Time::ZERO,
        Command::Txn(TxnCommand::Commit(Box::new(request(
            &["a"],
            CommitOptions::default(),
        )))),
    );
    // The prewrite is out; the caller goes away before it is answered.
    let mut pending = Vec::new();
    while let Some(transmit) = core.poll_transmit() {
        pending.push(transmit);
    }
    core.cancel(Time::ZERO, op);
    let mut responder = Responder::default();
    for transmit in pending {
        let reply = responder.answer(&transmit);
        core.handle_reply(Time::ZERO, transmit.id, reply);
    }
    let (seen, events) = drive(&mut core, &mut |_| None);
    assert!(
        events.is_empty(),
        "nobody hears an abandoned commit: {events:?}"
    );
    assert_eq!(
        seen,
        vec![
            "prewrite [a] async=false 1pc=false secondaries=[]",
            "rollback [a]"
        ],
        "prewritten, then rolled back instead of committed"
    );
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

#[test]
fn a_large_transaction_keeps_its_primary_alive_while_it_commits() {
    // Everything counts as large; heartbeats every 50 ms.
    let config = Config::default()
        .with_txn_commit_batch_size(1)
        .with_ttl_refreshed_txn_size(0)
        .with_managed_lock_ttl(Duration::from_millis(100));
    let mut core = core_with(config);
    commit(&mut core, request(&["a", "b"], CommitOptions::default()));
    // The secondary's prewrite answers late: the commit stays in prewrite long enough for
    // heartbeats to go out.
    let mut held = 0;
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(r) if r.mutations.len() == 1 && r.mutations[0].key == key("b") => {
            held += 1;
            if held < 4 {
                Some(Ok({
                    let mut response = StoreResponse::Prewrite(Default::default());
                    response.set_region_error(tikv_proto::errorpb::Error {
                        server_is_busy: Some(Default::default()),
                        ..Default::default()
                    });
                    response
                }))
            } else {
                None
            }
        }
        _ => None,
    });
    let _ = committed(&events);
    let beats = seen.iter().filter(|l| l.starts_with("heartbeat")).count();
    assert!(beats >= 2, "{seen:#?}");
    // The heartbeats stop with the commit: none after the primary's commit.
    let primary_commit = seen
        .iter()
        .position(|l| l.starts_with("commit [a"))
        .unwrap_or_else(|| panic!("{seen:#?}"));
    assert!(
        !seen[primary_commit..]
            .iter()
            .any(|l| l.starts_with("heartbeat")),
        "{seen:#?}"
    );
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

#[test]
fn a_stop_after_prewrite_knob_leaves_the_locks() {
    let mut core = core_with(Config::default());
    let options = CommitOptions {
        knobs: CommitKnobs {
            stop_after_prewrite: true,
            ..CommitKnobs::default()
        },
        ..CommitOptions::default()
    };
    commit(&mut core, request(&["a", "b"], options));
    let (seen, events) = drive(&mut core, &mut |_| None);
    assert_eq!(committed(&events).commit_ts.version(), 0);
    assert_eq!(
        seen,
        vec!["prewrite [a,b] async=false 1pc=false secondaries=[]"]
    );
}

#[test]
fn commits_refuse_bad_requests() {
    let mut core = core_with(Config::default());
    let mut unsorted = request(&["b", "a"], CommitOptions::default());
    unsorted.primary = key("b");
    let mut foreign_primary = request(&["a"], CommitOptions::default());
    foreign_primary.primary = key("z");
    let mut max_ts = request(&["a"], CommitOptions::default());
    max_ts.start_ts = Timestamp::from_version(u64::MAX);
    let mut empty = request(&["a"], CommitOptions::default());
    empty.mutations.clear();
    for bad in [unsorted, foreign_primary, max_ts, empty] {
        commit(&mut core, bad);
        let (seen, events) = drive(&mut core, &mut |_| None);
        assert!(seen.is_empty());
        assert!(matches!(failed(&events), Error::InvalidArgument(_)));
    }
}

/// A commit of existence checks alone (keys inserted, then deleted) is prewritten with
/// its first key as the primary, in two phases whatever was asked, and commits nothing;
/// a key that exists fails it (client-go's `TestDeleteAllYourWrites`).
#[test]
fn a_commit_of_existence_checks_alone_is_prewritten_and_commits_nothing() {
    let checks = |options: CommitOptions| {
        let mutations: Vec<Mutation> = ["a", "b"]
            .iter()
            .map(|k| Mutation::new(super::MutationOp::CheckNotExists, key(k), Bytes::new()))
            .collect();
        CommitRequest {
            start_ts: Timestamp::from_version(START),
            begun_at: Time::ZERO,
            size: 2,
            primary: key("a"),
            mutations,
            options,
        }
    };
    let mut core = core_with(Config::default());
    commit(&mut core, checks(one_pc_options()));
    let (seen, events) = drive(&mut core, &mut |_| None);
    assert_eq!(committed(&events).commit_ts.version(), 0);
    assert_eq!(
        seen,
        vec!["prewrite [a,b] async=false 1pc=false secondaries=[]"]
    );

    commit(&mut core, checks(async_options()));
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(_) => Some(Ok(StoreResponse::Prewrite(kvrpcpb::PrewriteResponse {
            errors: vec![kvrpcpb::KeyError {
                already_exist: Some(kvrpcpb::AlreadyExist { key: key("b") }),
                ..Default::default()
            }],
            ..Default::default()
        }))),
        _ => None,
    });
    assert!(
        matches!(
            failed(&events).key_error(),
            Some(KeyError::AlreadyExists { .. })
        ),
        "{events:?}"
    );
    assert_eq!(
        seen[0],
        "prewrite [a,b] async=false 1pc=false secondaries=[]"
    );
}

/// The `max_backoff_ms` knob bounds the primary's commit: a commit failing in transport
/// for ever gives up after that much backoff, not after 40 s.
#[test]
fn a_lowered_budget_ends_a_failing_commit_sooner() {
    let failing = |options: CommitOptions| {
        let mut core = core_with(Config::default());
        commit(&mut core, request(&["a"], options));
        let (seen, events) = drive(&mut core, &mut |request| match request {
            StoreRequest::Commit(_) => Some(Err(RpcError::ConnectionLost("injected".into()))),
            _ => None,
        });
        assert!(failed(&events).is_undetermined());
        seen.iter()
            .filter(|line| line.starts_with("commit"))
            .count()
    };
    let lowered = failing(CommitOptions {
        knobs: CommitKnobs {
            max_backoff_ms: Some(500),
            ..CommitKnobs::default()
        },
        ..CommitOptions::default()
    });
    let default = failing(CommitOptions::default());
    assert!(lowered < default, "{lowered} attempts vs {default}");
}

/// What [`drive_one_at_a_time`] saw.
struct Paced {
    seen: Vec<String>,
    events: Vec<Event>,
    /// Most store requests out at once.
    peak: usize,
    /// The PD requests, described.
    pd: Vec<String>,
}

/// Drives `core` answering store requests one at a time, oldest first (PD and TSO at once),
/// and records how many store requests were out at once. `store` answers as in [`drive`];
/// `after` runs after each store answer with the number answered so far.
fn drive_one_at_a_time(
    core: &mut Core,
    store: &mut Store<'_>,
    after: &mut dyn FnMut(&mut Core, usize),
) -> Paced {
    let mut responder = Responder::default();
    let mut paced = Paced {
        seen: Vec::new(),
        events: Vec::new(),
        peak: 0,
        pd: Vec::new(),
    };
    let mut outstanding = std::collections::VecDeque::new();
    let mut answered = 0;
    let mut now = Time::ZERO;
    for _ in 0..20_000 {
        while let Some(transmit) = core.poll_transmit() {
            match &transmit.request {
                Request::Store(_) => outstanding.push_back(transmit),
                _ => {
                    paced
                        .pd
                        .push(crate::machine::testing::describe(&transmit.request));
                    let reply = responder.answer(&transmit);
                    core.handle_reply(now, transmit.id, reply);
                }
            }
        }
        paced.peak = paced.peak.max(outstanding.len());
        while let Some(event) = core.poll_event() {
            paced.events.push(event);
        }
        if let Some(transmit) = outstanding.pop_front() {
            let Request::Store(request) = &transmit.request else {
                continue;
            };
            paced.seen.push(describe(request));
            let reply = match store(request) {
                Some(reply) => reply.map(|r| Response::Store(Box::new(r))),
                None => responder.answer(&transmit),
            };
            core.handle_reply(now, transmit.id, reply);
            answered += 1;
            after(core, answered);
            continue;
        }
        if core.ops_in_flight() == 0 {
            return paced;
        }
        match core.poll_timeout() {
            Some(at) => {
                now = now.max(at);
                core.handle_timeout(now);
            }
            None => panic!("stuck: {:?}", core.leftovers()),
        }
    }
    panic!("not finished after {} requests", paced.seen.len());
}

fn many_keys(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("k{i:03}")).collect()
}

fn count(seen: &[String], prefix: &str) -> usize {
    seen.iter().filter(|line| line.starts_with(prefix)).count()
}

#[test]
fn the_committer_keeps_at_most_its_concurrency_in_flight() {
    // 300 keys, one per request (client-go's batchExecutor with CommitterConcurrency 4).
    let config = Config::default()
        .with_txn_commit_batch_size(1)
        .with_committer_concurrency(4);
    let mut core = core_with(config);
    let keys = many_keys(300);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    commit(&mut core, request(&keys, CommitOptions::default()));
    let paced = drive_one_at_a_time(&mut core, &mut |_| None, &mut |_, _| {});
    let outcome = committed(&paced.events);
    assert_eq!(outcome.mode, CommitMode::TwoPhase);
    assert_eq!(
        paced.peak, 4,
        "never more than the cap, and the cap is used"
    );
    assert_eq!(count(&paced.seen, "prewrite"), 300);
    assert_eq!(count(&paced.seen, "commit"), 300);
    // Each request carries one key, and every key is prewritten and committed once.
    for key in &keys {
        assert_eq!(count(&paced.seen, &format!("prewrite [{key}]")), 1, "{key}");
        assert_eq!(count(&paced.seen, &format!("commit [{key}] ")), 1, "{key}");
    }
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

#[test]
fn the_default_concurrency_is_client_gos() {
    assert_eq!(Config::default().committer_concurrency(), 128);
    assert_eq!(
        Config::default()
            .with_committer_concurrency(0)
            .committer_concurrency(),
        1
    );
    // 300 batches with the default cap: 128 out at once.
    let mut core = core_with(Config::default().with_txn_commit_batch_size(1));
    let keys = many_keys(300);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    commit(&mut core, request(&keys, CommitOptions::default()));
    let paced = drive_one_at_a_time(&mut core, &mut |_| None, &mut |_, _| {});
    let _ = committed(&paced.events);
    assert_eq!(paced.peak, 128);
}

#[test]
fn a_capped_prewrite_that_fails_sends_no_more_and_rolls_back_within_the_cap() {
    let config = Config::default()
        .with_txn_commit_batch_size(1)
        .with_committer_concurrency(4);
    let mut core = core_with(config);
    let keys = many_keys(300);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    commit(&mut core, request(&keys, CommitOptions::default()));
    let paced = drive_one_at_a_time(
        &mut core,
        &mut |request| match request {
            StoreRequest::Prewrite(r) if r.mutations[0].key == key("k010") => {
                Some(Ok(StoreResponse::Prewrite(kvrpcpb::PrewriteResponse {
                    errors: vec![kvrpcpb::KeyError {
                        conflict: Some(kvrpcpb::WriteConflict {
                            start_ts: START,
                            conflict_ts: 150,
                            conflict_commit_ts: 160,
                            key: key("k010"),
                            primary: key("k000"),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                })))
            }
            _ => None,
        },
        &mut |_, _| {},
    );
    let err = failed(&paced.events);
    assert!(
        matches!(err.key_error(), Some(KeyError::WriteConflict { .. })),
        "{err}"
    );
    // The prewrites queued behind the cap were never sent.
    let prewrites = count(&paced.seen, "prewrite");
    assert!(prewrites < 20, "{prewrites} prewrites sent");
    // The rollback covers every key, primary first, also within the cap.
    assert_eq!(count(&paced.seen, "rollback"), 300);
    let first_rollback = paced
        .seen
        .iter()
        .position(|line| line.starts_with("rollback"))
        .unwrap_or_else(|| panic!("{:#?}", paced.seen));
    assert_eq!(paced.seen[first_rollback], "rollback [k000]");
    assert!(paced.peak <= 4, "peak {}", paced.peak);
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

#[test]
fn a_capped_commit_abandoned_during_prewrite_still_rolls_back() {
    let config = Config::default()
        .with_txn_commit_batch_size(1)
        .with_committer_concurrency(4);
    let mut core = core_with(config);
    let keys = many_keys(300);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let op = core.handle_command(
        Time::ZERO,
        Command::Txn(TxnCommand::Commit(Box::new(request(
            &keys,
            CommitOptions::default(),
        )))),
    );
    // The caller goes away after 50 prewrites were answered.
    let paced = drive_one_at_a_time(&mut core, &mut |_| None, &mut |core, answered| {
        if answered == 50 {
            core.cancel(Time::ZERO, op);
        }
    });
    assert!(
        paced.events.is_empty(),
        "nobody hears an abandoned commit: {:?}",
        paced.events
    );
    // Every key was prewritten (the commit stays to clean up) and then rolled back; none
    // committed.
    assert_eq!(count(&paced.seen, "prewrite"), 300);
    assert_eq!(count(&paced.seen, "rollback"), 300);
    assert_eq!(count(&paced.seen, "commit"), 0);
    assert!(paced.peak <= 4, "peak {}", paced.peak);
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

#[test]
fn a_capped_batch_backing_off_does_not_hold_up_the_others() {
    let config = Config::default()
        .with_txn_commit_batch_size(1)
        .with_committer_concurrency(4);
    let mut core = core_with(config);
    let keys = many_keys(300);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    commit(&mut core, request(&keys, CommitOptions::default()));
    let mut busy_once = true;
    let paced = drive_one_at_a_time(
        &mut core,
        &mut |request| match request {
            StoreRequest::Prewrite(r) if r.mutations[0].key == key("k005") && busy_once => {
                busy_once = false;
                let mut response = prewrite_ok();
                response.set_region_error(tikv_proto::errorpb::Error {
                    server_is_busy: Some(Default::default()),
                    ..Default::default()
                });
                Some(Ok(response))
            }
            _ => None,
        },
        &mut |_, _| {},
    );
    let _ = committed(&paced.events);
    // The other 299 prewrites went out while k005 slept; it went again last.
    let attempts: Vec<usize> = paced
        .seen
        .iter()
        .enumerate()
        .filter(|(_, line)| line.starts_with("prewrite [k005]"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[1], 300, "{attempts:?}");
    assert!(paced.peak <= 4, "peak {}", paced.peak);
}

fn pre_split_options(keys: usize, size: u64) -> CommitOptions {
    CommitOptions {
        knobs: CommitKnobs {
            pre_split_detect_threshold: Some(keys),
            pre_split_size_threshold: Some(size),
            ..CommitKnobs::default()
        },
        ..CommitOptions::default()
    }
}

/// TiKV's answer to a split at `count` keys of region 2: the new regions 100, 101, ... to
/// the left, the original last.
fn split_answer(count: usize) -> StoreResponse {
    let mut regions: Vec<tikv_proto::metapb::Region> = (0..count)
        .map(|i| tikv_proto::metapb::Region {
            id: 100 + i as u64,
            ..Default::default()
        })
        .collect();
    regions.push(tikv_proto::metapb::Region {
        id: 2,
        ..Default::default()
    });
    StoreResponse::SplitRegion(kvrpcpb::SplitRegionResponse {
        regions,
        ..Default::default()
    })
}

#[test]
fn a_region_over_the_key_threshold_is_split_and_scattered_before_the_prewrite() {
    // client-go `preSplitRegion` with lowered thresholds: 4 keys, 10 bytes per region.
    let mut core = core_with(Config::default());
    let keys = many_keys(10);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    commit(&mut core, request(&keys, pre_split_options(4, 10)));
    let paced = drive_one_at_a_time(
        &mut core,
        &mut |request| match request {
            StoreRequest::SplitRegion(r) => Some(Ok(split_answer(r.split_keys.len()))),
            _ => None,
        },
        &mut |_, _| {},
    );
    let outcome = committed(&paced.events);
    assert_eq!(outcome.mode, CommitMode::TwoPhase);
    // Each key and value is 5 bytes: a split key every second key.
    assert_eq!(paced.seen[0], "split [k001,k003,k005,k007,k009]");
    assert!(paced.seen[1].starts_with("prewrite"), "{:#?}", paced.seen);
    assert_eq!(count(&paced.seen, "split"), 1);
    // The five new regions are scattered, and each scatter waited for.
    assert!(
        paced
            .pd
            .contains(&"pd.ScatterRegion regions=[100, 101, 102, 103, 104]".to_owned()),
        "{:#?}",
        paced.pd
    );
    for region in 100..105 {
        assert!(
            paced
                .pd
                .contains(&format!("pd.GetOperator region={region}")),
            "{:#?}",
            paced.pd
        );
    }
    // The split region left the cache: the prewrite located it again.
    let scatter = paced
        .pd
        .iter()
        .position(|line| line.starts_with("pd.ScatterRegion"))
        .unwrap_or(0);
    assert!(
        paced.pd[scatter..]
            .iter()
            .any(|line| line.starts_with("pd.GetRegion") || line.starts_with("pd.BatchScan")),
        "{:#?}",
        paced.pd
    );
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

#[test]
fn regions_under_the_key_threshold_are_not_split() {
    let mut core = core_with(Config::default());
    let keys = many_keys(3);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    commit(&mut core, request(&keys, pre_split_options(4, 1)));
    let (seen, events) = drive(&mut core, &mut |_| None);
    let _ = committed(&events);
    assert_eq!(count(&seen, "split"), 0, "{seen:#?}");
    // Over the key threshold but under the size threshold: nothing to split at either.
    let mut core = core_with(Config::default());
    let keys = many_keys(6);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    commit(&mut core, request(&keys, pre_split_options(4, 1_000)));
    let (seen, events) = drive(&mut core, &mut |_| None);
    let _ = committed(&events);
    assert_eq!(count(&seen, "split"), 0, "{seen:#?}");
}

#[test]
fn a_failed_pre_split_leaves_the_regions_and_the_commit_goes_on() {
    let mut core = core_with(Config::default());
    let keys = many_keys(10);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    commit(&mut core, request(&keys, pre_split_options(4, 10)));
    let paced = drive_one_at_a_time(
        &mut core,
        &mut |request| match request {
            StoreRequest::SplitRegion(_) => Some(Ok(StoreResponse::SplitRegion(
                kvrpcpb::SplitRegionResponse {
                    errors: vec![kvrpcpb::KeyError {
                        abort: "split refused".to_owned(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ))),
            _ => None,
        },
        &mut |_, _| {},
    );
    let _ = committed(&paced.events);
    assert_eq!(count(&paced.seen, "split"), 1);
    assert_eq!(count(&paced.seen, "prewrite"), 1, "{:#?}", paced.seen);
    // No scatter, no wait.
    assert!(
        !paced
            .pd
            .iter()
            .any(|line| line.starts_with("pd.ScatterRegion") || line.starts_with("pd.GetOperator")),
        "{:#?}",
        paced.pd
    );
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

#[test]
fn a_commit_abandoned_during_its_pre_split_writes_nothing() {
    let mut core = core_with(Config::default());
    let keys = many_keys(10);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let op = core.handle_command(
        Time::ZERO,
        Command::Txn(TxnCommand::Commit(Box::new(request(
            &keys,
            pre_split_options(4, 10),
        )))),
    );
    // The caller goes away once the split is answered, while the scatter runs.
    let paced = drive_one_at_a_time(
        &mut core,
        &mut |request| match request {
            StoreRequest::SplitRegion(r) => Some(Ok(split_answer(r.split_keys.len()))),
            _ => None,
        },
        &mut |core, answered| {
            if answered == 1 {
                core.cancel(Time::ZERO, op);
            }
        },
    );
    assert!(paced.events.is_empty(), "{:?}", paced.events);
    assert_eq!(paced.seen, ["split [k001,k003,k005,k007,k009]"]);
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}
