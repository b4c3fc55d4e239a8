//! Snapshot reads and lock resolution against scripted store answers.

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use crate::command::{Command, Output, TxnCommand};
use crate::config::Config;
use crate::machine::testing::{Responder, drive_store_script};
use crate::machine::{Core, Event};
use crate::ops::txn::ReadOptions;
use crate::oracle::Timestamp;
use crate::rpc::{Request, Response, StoreRequest, StoreResponse};
use crate::time::Time;

fn core() -> Core {
    let config = Config {
        store_refresh_interval: std::time::Duration::ZERO,
        pd_member_refresh_interval: std::time::Duration::ZERO,
        ..Config::default()
    };
    Core::new(config, vec!["pd:2379".into()], Time::ZERO).unwrap_or_else(|err| panic!("{err}"))
}

fn lock(key: &[u8], primary: &[u8], ts: u64) -> kvrpcpb::KeyError {
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

/// A store that holds `k` locked by transaction 50 (primary `p`), committed at 60: a read
/// at 100 meets the lock, the status check finds the commit, the lock is resolved with the
/// key alone, and the read is sent again reading through the committed transaction.
/// Returns the store requests it saw, described.
fn run_committed_lock(core: &mut Core) -> (Vec<String>, Vec<Event>) {
    let mut seen = Vec::new();
    let mut gets = 0;
    let (_, events) = run_with(core, |request| {
        let response = match request {
            StoreRequest::Get(r) => {
                gets += 1;
                let context = r.context.clone().unwrap_or_default();
                seen.push(format!("get committed_locks={:?}", context.committed_locks));
                if context.committed_locks.contains(&50) {
                    StoreResponse::Get(kvrpcpb::GetResponse {
                        value: Bytes::from_static(b"v"),
                        ..Default::default()
                    })
                } else {
                    StoreResponse::Get(kvrpcpb::GetResponse {
                        error: Some(Box::new(lock(b"k", b"p", 50))),
                        ..Default::default()
                    })
                }
            }
            StoreRequest::BatchGet(r) => {
                gets += 1;
                let context = r.context.clone().unwrap_or_default();
                seen.push(format!(
                    "batch get committed_locks={:?}",
                    context.committed_locks
                ));
                let pair = if context.committed_locks.contains(&50) {
                    kvrpcpb::KvPair {
                        key: Bytes::from_static(b"k"),
                        value: Bytes::from_static(b"v"),
                        ..Default::default()
                    }
                } else {
                    // TiKV's error pairs carry no key: only the lock names it.
                    kvrpcpb::KvPair {
                        error: Some(Box::new(lock(b"k", b"p", 50))),
                        ..Default::default()
                    }
                };
                StoreResponse::BatchGet(kvrpcpb::BatchGetResponse {
                    pairs: vec![pair],
                    ..Default::default()
                })
            }
            StoreRequest::CheckTxnStatus(r) => {
                seen.push(format!(
                    "check lock_ts={} caller={} primary={:?}",
                    r.lock_ts, r.caller_start_ts, r.primary_key
                ));
                StoreResponse::CheckTxnStatus(kvrpcpb::CheckTxnStatusResponse {
                    commit_version: 60,
                    ..Default::default()
                })
            }
            StoreRequest::ResolveLock(r) => {
                seen.push(format!(
                    "resolve start={} commit={} keys={:?}",
                    r.start_version, r.commit_version, r.keys
                ));
                StoreResponse::ResolveLock(Default::default())
            }
            other => panic!("unexpected request {other:?}"),
        };
        assert!(gets < 10, "the read keeps retrying: {seen:#?}");
        response
    });
    (seen, events)
}

#[test]
fn a_read_resolves_a_committed_lock_and_reads_through_it() {
    let mut core = core();
    core.handle_wall_clock(1_700_000_000_000);
    let op = core.handle_command(
        Time::ZERO,
        Command::Txn(TxnCommand::Get {
            key: Bytes::from_static(b"k"),
            options: ReadOptions::at(Timestamp::from_version(100)),
        }),
    );
    let (seen, events) = run_committed_lock(&mut core);
    assert_eq!(
        seen,
        vec![
            "get committed_locks=[]".to_owned(),
            "check lock_ts=50 caller=100 primary=b\"p\"".to_owned(),
            // The lock's key is not its primary: resolved alone (a small transaction).
            "resolve start=50 commit=60 keys=[b\"k\"]".to_owned(),
            "get committed_locks=[50]".to_owned(),
        ]
    );
    let [Event::Done(done, Ok(Output::Read(read)))] = events.as_slice() else {
        panic!("one successful read, got {events:?}");
    };
    assert_eq!(*done, op);
    assert_eq!(read.entries.len(), 1);
    assert_eq!(read.entries[0].value.as_ref(), b"v");
    assert_eq!(read.learned.committed, vec![Timestamp::from_version(50)]);
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());

    // The settled status is remembered: a second read meeting the same lock asks no status.
    core.handle_command(
        Time::ZERO,
        Command::Txn(TxnCommand::Get {
            key: Bytes::from_static(b"k"),
            options: ReadOptions::at(Timestamp::from_version(100)),
        }),
    );
    let (seen, _) = run_committed_lock(&mut core);
    assert!(
        !seen.iter().any(|line| line.starts_with("check")),
        "{seen:#?}"
    );
}

#[test]
fn concurrent_reads_meeting_one_transaction_share_its_status_check() {
    let mut core = core();
    core.handle_wall_clock(1_700_000_000_000);
    for _ in 0..3 {
        core.handle_command(
            Time::ZERO,
            Command::Txn(TxnCommand::Get {
                key: Bytes::from_static(b"k"),
                options: ReadOptions::at(Timestamp::from_version(100)),
            }),
        );
    }
    let (seen, events) = run_committed_lock(&mut core);
    let checks = seen.iter().filter(|line| line.starts_with("check")).count();
    assert_eq!(checks, 1, "{seen:#?}");
    assert_eq!(events.len(), 3);
    for event in &events {
        assert!(
            matches!(event, Event::Done(_, Ok(Output::Read(read))) if read.entries.len() == 1),
            "{event:?}"
        );
    }
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

/// A batch get whose answer reports a lock as TiKV does, in a pair without a key (the
/// locked key is only in the lock), resolves the lock and reads again instead of taking
/// the key for absent. Found by the bank simulation: the read returned no balance for an
/// account another transaction had prewritten.
#[test]
fn a_batch_get_finds_the_locked_key_through_its_lock() {
    let mut core = core();
    core.handle_wall_clock(1_700_000_000_000);
    core.handle_command(
        Time::ZERO,
        Command::Txn(TxnCommand::BatchGet {
            keys: vec![Bytes::from_static(b"k")],
            options: ReadOptions::at(Timestamp::from_version(100)),
        }),
    );
    let (seen, events) = run_committed_lock(&mut core);
    assert_eq!(
        seen,
        vec![
            "batch get committed_locks=[]".to_owned(),
            "check lock_ts=50 caller=100 primary=b\"p\"".to_owned(),
            "resolve start=50 commit=60 keys=[b\"k\"]".to_owned(),
            "batch get committed_locks=[50]".to_owned(),
        ]
    );
    let [Event::Done(_, Ok(Output::Read(read)))] = events.as_slice() else {
        panic!("one successful read, got {events:?}");
    };
    assert_eq!(read.entries.len(), 1);
    assert_eq!(read.entries[0].value.as_ref(), b"v");
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

/// A read meeting the lock of a live async-commit transaction (TiKV never pushes such a
/// lock's `min_commit_ts`) backs off until the transaction is decided, and never skips the
/// lock as if it were rolled back. Found by the bank simulation: the first status a
/// resolution heard was merged into a default entry, which reads as "rolled back", so a
/// live transaction's lock was skipped and the read returned the value before a commit
/// that was already decided.
#[test]
fn a_read_waits_for_a_live_async_commit_lock() {
    let mut core = core();
    core.handle_wall_clock(1_700_000_000_000);
    // The lock's transaction started at the wall clock's physical time, so it is alive.
    let lock_ts = Timestamp::compose(1_700_000_000_000, 0).version();
    let op = core.handle_command(
        Time::ZERO,
        Command::Txn(TxnCommand::Get {
            key: Bytes::from_static(b"k"),
            options: ReadOptions::at(Timestamp::from_version(lock_ts + 1_000)),
        }),
    );
    let mut responder = Responder::default();
    let mut seen = Vec::new();
    let mut events = Vec::new();
    let mut checks = 0;
    let mut now = Time::ZERO;
    for _ in 0..200 {
        let mut replies = Vec::new();
        while let Some(transmit) = core.poll_transmit() {
            let reply = match &transmit.request {
                Request::Store(request) => {
                    let response = match request.as_ref() {
                        StoreRequest::Get(r) => {
                            let context = r.context.clone().unwrap_or_default();
                            seen.push(format!(
                                "get skip={:?} read_through={:?}",
                                context.resolved_locks, context.committed_locks
                            ));
                            let value = if context.resolved_locks.contains(&lock_ts) {
                                Some("before")
                            } else if context.committed_locks.contains(&lock_ts) {
                                Some("after")
                            } else {
                                None
                            };
                            match value {
                                Some(value) => StoreResponse::Get(kvrpcpb::GetResponse {
                                    value: Bytes::from(value),
                                    ..Default::default()
                                }),
                                None => {
                                    let mut err = lock(b"k", b"k", lock_ts);
                                    if let Some(info) = err.locked.as_mut() {
                                        info.use_async_commit = true;
                                    }
                                    StoreResponse::Get(kvrpcpb::GetResponse {
                                        error: Some(Box::new(err)),
                                        ..Default::default()
                                    })
                                }
                            }
                        }
                        StoreRequest::CheckTxnStatus(_) => {
                            checks += 1;
                            seen.push(format!("check {checks}"));
                            // Alive at first (an async-commit lock is never pushed), then
                            // committed.
                            if checks == 1 {
                                StoreResponse::CheckTxnStatus(kvrpcpb::CheckTxnStatusResponse {
                                    lock_ttl: 3_000,
                                    lock_info: lock(b"k", b"k", lock_ts).locked.map(|mut l| {
                                        l.use_async_commit = true;
                                        l
                                    }),
                                    ..Default::default()
                                })
                            } else {
                                StoreResponse::CheckTxnStatus(kvrpcpb::CheckTxnStatusResponse {
                                    commit_version: lock_ts + 10,
                                    ..Default::default()
                                })
                            }
                        }
                        StoreRequest::ResolveLock(_) => {
                            seen.push("resolve".to_owned());
                            StoreResponse::ResolveLock(Default::default())
                        }
                        other => panic!("unexpected request {other:?}"),
                    };
                    Ok(Response::Store(Box::new(response)))
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
                break;
            }
            match core.poll_timeout() {
                Some(at) => {
                    now = at;
                    core.handle_timeout(at);
                }
                None => panic!("stuck: {:?}", core.leftovers()),
            }
        }
        for (id, reply) in replies {
            core.handle_reply(now, id, reply);
        }
    }
    assert!(
        !seen
            .iter()
            .any(|line| line.contains(&format!("skip=[{lock_ts}]"))),
        "a live async-commit lock was skipped: {seen:#?}"
    );
    let [Event::Done(done, Ok(Output::Read(read)))] = events.as_slice() else {
        panic!("one successful read, got {events:?}\n{seen:#?}");
    };
    assert_eq!(*done, op);
    assert_eq!(read.entries.len(), 1);
    assert_eq!(read.entries[0].value.as_ref(), b"after", "{seen:#?}");
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

/// Runs `core` until its operations finish (or 200 rounds), answering every store request
/// with `answer` and everything else (PD, TSO) with the scripted responder. Returns the
/// store requests and the events.
fn run_with(
    core: &mut Core,
    mut answer: impl FnMut(&StoreRequest) -> StoreResponse,
) -> (Vec<StoreRequest>, Vec<Event>) {
    let run = drive_store_script(core, &mut |request| Some(Ok(answer(request))), 200);
    (run.requests, run.events)
}

fn get_txn_status(core: &mut Core, txn: u64) {
    core.handle_command(
        Time::ZERO,
        Command::Txn(TxnCommand::GetTxnStatus {
            txn: Timestamp::from_version(txn),
            caller_start_ts: Timestamp::from_version(100),
            primary: Bytes::from_static(b"p"),
        }),
    );
}

/// A status query sends one CheckTxnStatus that may write a rollback record, resolves
/// nothing, and answers with the status; a settled status is then answered from the cache.
#[test]
fn a_status_query_checks_once_then_answers_from_the_cache() {
    let mut core = core();
    core.handle_wall_clock(1_700_000_000_000);
    get_txn_status(&mut core, 50);
    let (seen, events) = run_with(&mut core, |request| match request {
        StoreRequest::CheckTxnStatus(_) => {
            StoreResponse::CheckTxnStatus(kvrpcpb::CheckTxnStatusResponse {
                commit_version: 60,
                ..Default::default()
            })
        }
        other => panic!("unexpected request {other:?}"),
    });
    let [StoreRequest::CheckTxnStatus(check)] = seen.as_slice() else {
        panic!("one status check, got {seen:?}");
    };
    assert_eq!(check.lock_ts, 50);
    assert_eq!(check.caller_start_ts, 100);
    assert_eq!(check.primary_key.as_ref(), b"p");
    assert!(check.rollback_if_not_exist);
    assert!(!check.force_sync_commit);
    assert!(!check.resolving_pessimistic_lock);
    assert!(check.verify_is_primary);
    assert_ne!(check.current_ts, u64::MAX, "a low-resolution timestamp");
    let [Event::Done(_, Ok(Output::TxnStatus { status, .. }))] = events.as_slice() else {
        panic!("one status, got {events:?}");
    };
    assert_eq!(status.commit_ts, Some(Timestamp::from_version(60)));
    assert!(status.is_committed() && !status.is_alive());

    get_txn_status(&mut core, 50);
    let (seen, events) = run_with(&mut core, |request| panic!("asked {request:?}"));
    assert!(seen.is_empty());
    assert!(matches!(
        events.as_slice(),
        [Event::Done(_, Ok(Output::TxnStatus { status, .. }))] if status.is_committed()
    ));
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

/// A live transaction's status is not remembered, and a TxnNotFound answer (which TiKV
/// should not give once asked to write a rollback record) fails the query instead of
/// waiting for a primary that is not coming.
#[test]
fn a_status_query_reports_a_live_lock_and_fails_on_txn_not_found() {
    let mut core = core();
    core.handle_wall_clock(1_700_000_000_000);
    let alive = || {
        StoreResponse::CheckTxnStatus(kvrpcpb::CheckTxnStatusResponse {
            lock_ttl: 3_000,
            action: kvrpcpb::Action::MinCommitTsPushed as i32,
            ..Default::default()
        })
    };
    // Started at the wall clock's time: alive by this client's clock too, so the check
    // at the cached timestamp is not repeated at a fresh one.
    let live = Timestamp::compose(1_700_000_000_000, 0).version();
    for _ in 0..2 {
        get_txn_status(&mut core, live);
        let (seen, events) = run_with(&mut core, |_| alive());
        assert_eq!(seen.len(), 1, "asked TiKV each time: {seen:?}");
        let [Event::Done(_, Ok(Output::TxnStatus { status, .. }))] = events.as_slice() else {
            panic!("one status, got {events:?}");
        };
        assert!(status.is_alive());
        assert_eq!(status.ttl_ms, 3_000);
        assert_eq!(status.action, crate::resolver::TxnAction::MinCommitTsPushed);
    }

    get_txn_status(&mut core, 70);
    let (seen, events) = run_with(&mut core, |_| {
        StoreResponse::CheckTxnStatus(kvrpcpb::CheckTxnStatusResponse {
            error: Some(Box::new(kvrpcpb::KeyError {
                txn_not_found: Some(kvrpcpb::TxnNotFound {
                    start_ts: 70,
                    primary_key: Bytes::from_static(b"p"),
                }),
                ..Default::default()
            })),
            ..Default::default()
        })
    });
    assert_eq!(seen.len(), 1, "no retry: {seen:?}");
    assert!(
        matches!(
            events.as_slice(),
            [Event::Done(_, Err(crate::error::Error::Key(err)))]
                if matches!(**err, crate::error::KeyError::TxnNotFound { .. })
        ),
        "{events:?}"
    );
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

/// A batch get meets a lock of a big transaction (over the lite threshold) whose primary
/// is committed: the read finishes by the status alone while the region-wide ResolveLock
/// is still unanswered (client-go's async resolve for reads), and the cleanup ends on its
/// own once answered, leaving nothing behind.
#[test]
fn a_read_leaves_a_big_transactions_cleanup_running_in_the_background() {
    let mut core = core();
    core.handle_wall_clock(1_700_000_000_000);
    let op = core.handle_command(
        Time::ZERO,
        Command::Txn(TxnCommand::BatchGet {
            keys: vec![Bytes::from_static(b"k")],
            options: ReadOptions::at(Timestamp::from_version(100)),
        }),
    );
    let mut big_lock = lock(b"k", b"p", 50);
    if let Some(info) = big_lock.locked.as_mut() {
        info.txn_size = 10_000;
    }
    let mut responder = Responder::default();
    let mut held = Vec::new();
    let mut read_done = None;
    for _ in 0..200 {
        let mut replies = Vec::new();
        while let Some(transmit) = core.poll_transmit() {
            let reply = match &transmit.request {
                Request::Store(request) => match request.as_ref() {
                    StoreRequest::BatchGet(r) => {
                        let context = r.context.clone().unwrap_or_default();
                        let pair = if context.committed_locks.contains(&50) {
                            kvrpcpb::KvPair {
                                key: Bytes::from_static(b"k"),
                                value: Bytes::from_static(b"v"),
                                ..Default::default()
                            }
                        } else {
                            kvrpcpb::KvPair {
                                error: Some(Box::new(big_lock.clone())),
                                ..Default::default()
                            }
                        };
                        Ok(Response::Store(Box::new(StoreResponse::BatchGet(
                            kvrpcpb::BatchGetResponse {
                                pairs: vec![pair],
                                ..Default::default()
                            },
                        ))))
                    }
                    StoreRequest::CheckTxnStatus(_) => Ok(Response::Store(Box::new(
                        StoreResponse::CheckTxnStatus(kvrpcpb::CheckTxnStatusResponse {
                            commit_version: 60,
                            ..Default::default()
                        }),
                    ))),
                    StoreRequest::ResolveLock(r) => {
                        // Region-wide (no keys): a big transaction's cleanup. Held back.
                        assert!(r.keys.is_empty(), "{r:?}");
                        assert_eq!((r.start_version, r.commit_version), (50, 60));
                        held.push(transmit.id);
                        continue;
                    }
                    other => panic!("unexpected request {other:?}"),
                },
                _ => responder.answer(&transmit),
            };
            replies.push((transmit.id, reply));
        }
        while let Some(Event::Done(id, result)) = core.poll_event() {
            if id == op {
                read_done = Some(result);
            }
        }
        if replies.is_empty() {
            break;
        }
        for (id, reply) in replies {
            core.handle_reply(Time::ZERO, id, reply);
        }
    }
    let Some(Ok(Output::Read(read))) = read_done else {
        panic!("the read did not finish: {read_done:?}");
    };
    assert_eq!(read.entries.len(), 1);
    assert_eq!(read.entries[0].value.as_ref(), b"v");
    assert_eq!(held.len(), 1, "one region-wide cleanup, still out");
    assert_eq!(core.ops_in_flight(), 1, "the cleanup runs on");

    for id in held {
        core.handle_reply(
            Time::ZERO,
            id,
            Ok(Response::Store(Box::new(StoreResponse::ResolveLock(
                Default::default(),
            )))),
        );
    }
    assert_eq!(core.ops_in_flight(), 0);
    assert!(core.poll_transmit().is_none());
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}
