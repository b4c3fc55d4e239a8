//! Snapshot reads and lock resolution against scripted store answers.

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use crate::command::{Command, Output, TxnCommand};
use crate::config::Config;
use crate::machine::testing::Responder;
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
    let mut responder = Responder::default();
    let mut seen = Vec::new();
    let mut events = Vec::new();
    let mut gets = 0;
    for _ in 0..200 {
        let mut replies = Vec::new();
        while let Some(transmit) = core.poll_transmit() {
            let reply = match &transmit.request {
                Request::Store(request) => {
                    let response = match request.as_ref() {
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
                Some(at) => core.handle_timeout(at),
                None => panic!("stuck: {:?}", core.leftovers()),
            }
        }
        for (id, reply) in replies {
            core.handle_reply(Time::ZERO, id, reply);
        }
        assert!(gets < 10, "the read keeps retrying: {seen:#?}");
    }
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

/// Drives `core` until its operations end, answering store requests with `answer` (and
/// everything else with the scripted responder), jumping to each next timer; returns the
/// user events.
fn drive(core: &mut Core, answer: &mut dyn FnMut(&StoreRequest) -> StoreResponse) -> Vec<Event> {
    let mut responder = Responder::default();
    let mut events = Vec::new();
    let mut now = Time::ZERO;
    for _ in 0..200 {
        let mut replies = Vec::new();
        while let Some(transmit) = core.poll_transmit() {
            let reply = match &transmit.request {
                Request::Store(request) => Ok(Response::Store(Box::new(answer(request)))),
                _ => responder.answer(&transmit),
            };
            replies.push((transmit.id, reply));
        }
        while let Some(event) = core.poll_event() {
            events.push(event);
        }
        if replies.is_empty() {
            if core.ops_in_flight() == 0 {
                return events;
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
    panic!("no end: {:?}", core.leftovers());
}

/// A read meeting the lock of a live async-commit transaction (its status check neither
/// pushes it nor finds it settled) waits for the lock and reads again without skipping
/// it: a transaction that is only alive is not one the read may read past. (Found by the
/// port of client-go's `TestPointGetWithAsyncCommit`: the live status was lost to a
/// default one, which reads as rolled back.)
#[test]
fn a_read_waits_for_a_live_async_commit_lock_instead_of_skipping_it() {
    let wall_ms = 1_700_000_000_000;
    let lock_ts = Timestamp::compose(wall_ms, 1).version();
    let mut core = core();
    core.handle_wall_clock(wall_ms);
    core.handle_command(
        Time::ZERO,
        Command::Txn(TxnCommand::Get {
            key: Bytes::from_static(b"k"),
            options: ReadOptions::at(Timestamp::from_version(u64::MAX)),
        }),
    );
    let mut async_lock = lock(b"k", b"k", lock_ts);
    if let Some(info) = async_lock.locked.as_mut() {
        info.use_async_commit = true;
    }
    let mut gets: Vec<Vec<u64>> = Vec::new();
    let events = drive(&mut core, &mut |request| match request {
        StoreRequest::Get(r) => {
            let context = r.context.clone().unwrap_or_default();
            gets.push(context.resolved_locks.clone());
            if gets.len() == 1 {
                StoreResponse::Get(kvrpcpb::GetResponse {
                    error: Some(Box::new(async_lock.clone())),
                    ..Default::default()
                })
            } else {
                // The transaction committed meanwhile.
                StoreResponse::Get(kvrpcpb::GetResponse {
                    value: Bytes::from_static(b"new"),
                    ..Default::default()
                })
            }
        }
        StoreRequest::CheckTxnStatus(_) => {
            StoreResponse::CheckTxnStatus(kvrpcpb::CheckTxnStatusResponse {
                lock_ttl: 3_000,
                action: kvrpcpb::Action::NoAction as i32,
                lock_info: async_lock.locked.clone(),
                ..Default::default()
            })
        }
        other => panic!("unexpected request {other:?}"),
    });
    assert_eq!(
        gets,
        vec![Vec::<u64>::new(), Vec::new()],
        "the lock is never skipped"
    );
    let [Event::Done(_, Ok(Output::Read(read)))] = events.as_slice() else {
        panic!("one successful read, got {events:?}");
    };
    assert_eq!(read.entries[0].value.as_ref(), b"new");
    assert!(read.learned.resolved.is_empty());
}

/// A batch get whose answer reports a locked key in an error pair without a key (TiKV
/// leaves it empty) takes the key from the lock, resolves it and reads it again, instead
/// of dropping it from the result. (Found by the port of client-go's
/// `TestBatchGetUsingAsyncAPI`.)
#[test]
fn a_batch_get_takes_a_locked_pairs_key_from_its_lock() {
    let mut core = core();
    core.handle_wall_clock(1_700_000_000_000);
    core.handle_command(
        Time::ZERO,
        Command::Txn(TxnCommand::BatchGet {
            keys: vec![Bytes::from_static(b"k1"), Bytes::from_static(b"k2")],
            options: ReadOptions::at(Timestamp::from_version(100)),
        }),
    );
    let mut batches: Vec<Vec<Bytes>> = Vec::new();
    let events = drive(&mut core, &mut |request| match request {
        StoreRequest::BatchGet(r) => {
            batches.push(r.keys.clone());
            let committed = r
                .context
                .as_ref()
                .is_some_and(|c| c.committed_locks.contains(&50));
            let pairs = r
                .keys
                .iter()
                .map(|key| {
                    if key.as_ref() == b"k1" && !committed {
                        kvrpcpb::KvPair {
                            error: Some(Box::new(lock(b"k1", b"k1", 50))),
                            ..Default::default()
                        }
                    } else {
                        kvrpcpb::KvPair {
                            key: key.clone(),
                            value: key.clone(),
                            ..Default::default()
                        }
                    }
                })
                .collect();
            StoreResponse::BatchGet(kvrpcpb::BatchGetResponse {
                pairs,
                ..Default::default()
            })
        }
        StoreRequest::CheckTxnStatus(_) => {
            StoreResponse::CheckTxnStatus(kvrpcpb::CheckTxnStatusResponse {
                commit_version: 60,
                ..Default::default()
            })
        }
        StoreRequest::ResolveLock(_) => StoreResponse::ResolveLock(Default::default()),
        other => panic!("unexpected request {other:?}"),
    });
    assert_eq!(
        batches,
        vec![
            vec![Bytes::from_static(b"k1"), Bytes::from_static(b"k2")],
            vec![Bytes::from_static(b"k1")],
        ]
    );
    let [Event::Done(_, Ok(Output::Read(read)))] = events.as_slice() else {
        panic!("one successful read, got {events:?}");
    };
    let keys: Vec<&[u8]> = read.entries.iter().map(|e| e.key.as_ref()).collect();
    assert_eq!(keys, vec![&b"k1"[..], &b"k2"[..]]);
}
