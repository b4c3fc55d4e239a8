//! CheckTxnStatus flags, ResolveLock lite, Flush / BufferBatchGet, isolation levels, bad
//! input and determinism.

use quickcheck::{Arbitrary, QuickCheck, TestResult};
use tikv_proto::kvrpcpb::{
    self, Action, IsolationLevel, Op, write_conflict::Reason as ConflictReason,
};

use super::{b, keys, lock_req, mutation, prewrite_req, puts};
use crate::mvcc::MvccStore;

const MS: u64 = 1 << 18;

fn status_req(primary: &str, lock_ts: u64) -> kvrpcpb::CheckTxnStatusRequest {
    kvrpcpb::CheckTxnStatusRequest {
        primary_key: b(primary),
        lock_ts,
        ..Default::default()
    }
}

#[test]
fn check_txn_status_raises_max_ts_but_not_to_max() {
    let mut store = MvccStore::new();
    store.check_txn_status(&kvrpcpb::CheckTxnStatusRequest {
        caller_start_ts: u64::MAX,
        current_ts: 70,
        rollback_if_not_exist: true,
        ..status_req("k", 40)
    });
    assert_eq!(store.max_ts(), 70);
    store.check_txn_status(&kvrpcpb::CheckTxnStatusRequest {
        caller_start_ts: 90,
        current_ts: u64::MAX,
        rollback_if_not_exist: true,
        ..status_req("k", 40)
    });
    assert_eq!(store.max_ts(), 90);
}

#[test]
fn check_txn_status_pushes_min_commit_ts_to_current_ts() {
    let mut store = MvccStore::new();
    store.must_prewrite_ttl_ok(puts(&[("p", "v")]), "p", 10 * MS, 100);
    let resp = store.check_txn_status(&kvrpcpb::CheckTxnStatusRequest {
        caller_start_ts: 10 * MS + 5,
        current_ts: 10 * MS + 50,
        ..status_req("p", 10 * MS)
    });
    assert_eq!(resp.action, Action::MinCommitTsPushed as i32);
    assert_eq!(resp.lock_info.map(|l| l.min_commit_ts), Some(10 * MS + 50));
    // A caller below min_commit_ts pushes nothing; the lock is reported as pushed.
    let resp = store.check_txn_status(&kvrpcpb::CheckTxnStatusRequest {
        caller_start_ts: 10 * MS + 1,
        current_ts: 10 * MS + 60,
        ..status_req("p", 10 * MS)
    });
    assert_eq!(resp.action, Action::MinCommitTsPushed as i32);
    assert_eq!(resp.lock_info.map(|l| l.min_commit_ts), Some(10 * MS + 50));
    // caller_start_ts 0: no push, no report.
    let resp = store.check_txn_status(&status_req("p", 10 * MS));
    assert_eq!(resp.action, Action::NoAction as i32);
    assert_eq!(resp.lock_ttl, 100);
}

#[test]
fn check_txn_status_ttl_uses_physical_time() {
    let mut store = MvccStore::new();
    store.must_prewrite_ttl_ok(puts(&[("p", "v")]), "p", 10 * MS, 100);
    // 10 ms + 100 ms TTL: alive at 110 ms, expired at 111 ms.
    let alive = store.check_txn_status(&kvrpcpb::CheckTxnStatusRequest {
        current_ts: 110 * MS + (MS - 1),
        ..status_req("p", 10 * MS)
    });
    assert_eq!(
        (alive.lock_ttl, alive.action),
        (100, Action::NoAction as i32)
    );
    let expired = store.check_txn_status(&kvrpcpb::CheckTxnStatusRequest {
        current_ts: 111 * MS,
        ..status_req("p", 10 * MS)
    });
    assert_eq!(expired.action, Action::TtlExpireRollback as i32);
    assert!(store.locks.is_empty());
    let (_, rollback) = store.seek_write(b"p", 10 * MS).expect("rollback");
    assert!(rollback.protected, "a primary's rollback is protected");
}

#[test]
fn check_txn_status_pessimistic_primary_flags() {
    for resolving in [false, true] {
        let mut store = MvccStore::new();
        let mut req = lock_req(&["p"], "p", 10 * MS, 10 * MS);
        req.lock_ttl = 100;
        store.lock_done(&req);
        let resp = store.check_txn_status(&kvrpcpb::CheckTxnStatusRequest {
            current_ts: 500 * MS,
            resolving_pessimistic_lock: resolving,
            ..status_req("p", 10 * MS)
        });
        let (action, has_rollback) = if resolving {
            (Action::TtlExpirePessimisticRollback, false)
        } else {
            (Action::TtlExpireRollback, true)
        };
        assert_eq!(resp.action, action as i32);
        assert!(store.locks.is_empty());
        assert_eq!(store.seek_write(b"p", u64::MAX).is_some(), has_rollback);
    }
}

#[test]
fn check_txn_status_missing_lock_flags() {
    let mut store = MvccStore::new();
    let resp = store.check_txn_status(&kvrpcpb::CheckTxnStatusRequest {
        rollback_if_not_exist: true,
        resolving_pessimistic_lock: true,
        ..status_req("k", 10)
    });
    assert_eq!(resp.action, Action::LockNotExistDoNothing as i32);
    assert!(store.writes.is_empty());
    let resp = store.check_txn_status(&kvrpcpb::CheckTxnStatusRequest {
        rollback_if_not_exist: true,
        ..status_req("k", 10)
    });
    assert_eq!(resp.action, Action::LockNotExistRollback as i32);
    // A lock of another txn counts as no lock.
    store.must_prewrite_ok(puts(&[("k", "v")]), "k", 20);
    let resp = store.check_txn_status(&status_req("k", 15));
    assert!(resp.error.and_then(|e| e.txn_not_found).is_some());
}

#[test]
fn check_txn_status_verify_is_primary() {
    let mut store = MvccStore::new();
    store.must_prewrite_ok(puts(&[("p", "1"), ("s", "2")]), "p", 10);
    let resp = store.check_txn_status(&kvrpcpb::CheckTxnStatusRequest {
        verify_is_primary: true,
        ..status_req("s", 10)
    });
    let mismatch = resp
        .error
        .and_then(|e| e.primary_mismatch)
        .expect("primary mismatch");
    assert_eq!(mismatch.lock_info.map(|l| l.primary_lock), Some(b("p")));

    // A pessimistic secondary lock is dropped and the txn judged as if it were missing.
    store.lock_done(&lock_req(&["q"], "p2", 30, 30));
    let resp = store.check_txn_status(&kvrpcpb::CheckTxnStatusRequest {
        verify_is_primary: true,
        rollback_if_not_exist: true,
        ..status_req("q", 30)
    });
    assert_eq!(resp.action, Action::LockNotExistRollback as i32);
    assert!(store.load_lock(b"q").is_none());
}

#[test]
fn cleanup_refuses_live_lock_and_reports_commit() {
    let mut store = MvccStore::new();
    store.must_prewrite_ttl_ok(puts(&[("k", "v")]), "k", 10 * MS, 100);
    let resp = store.cleanup(&kvrpcpb::CleanupRequest {
        key: b("k"),
        start_version: 10 * MS,
        current_ts: 20 * MS,
        ..Default::default()
    });
    assert!(resp.error.and_then(|e| e.locked).is_some());
    store.must_commit_ok(&["k"], 10 * MS, 12 * MS);
    let resp = store.cleanup(&kvrpcpb::CleanupRequest {
        key: b("k"),
        start_version: 10 * MS,
        current_ts: 0,
        ..Default::default()
    });
    assert_eq!((resp.error, resp.commit_version), (None, 12 * MS));
}

#[test]
fn resolve_lock_lite_commits_and_rolls_back_given_keys() {
    let mut store = MvccStore::new();
    store.must_prewrite_ok(puts(&[("a", "1"), ("b", "2"), ("c", "3")]), "a", 10);
    let resp = store.resolve_lock(&kvrpcpb::ResolveLockRequest {
        start_version: 10,
        commit_version: 20,
        keys: keys(&["a", "b"]),
        ..Default::default()
    });
    assert_eq!(resp.error, None);
    store.must_get_ok("b", 20, "2");
    assert!(
        store.load_lock(b"c").is_some(),
        "lite resolves only the keys given"
    );
    let resp = store.resolve_lock(&kvrpcpb::ResolveLockRequest {
        start_version: 10,
        commit_version: 0,
        keys: keys(&["c"]),
        ..Default::default()
    });
    assert_eq!(resp.error, None);
    store.must_get_none("c", 30);
}

#[test]
fn resolve_lock_rejects_commit_ts_not_above_start_ts() {
    let mut store = MvccStore::new();
    store.must_prewrite_ok(puts(&[("a", "1")]), "a", 10);
    for keys in [Vec::new(), keys(&["a"])] {
        let resp = store.resolve_lock(&kvrpcpb::ResolveLockRequest {
            start_version: 10,
            commit_version: 10,
            keys,
            ..Default::default()
        });
        assert!(resp.error.is_some_and(|e| !e.abort.is_empty()));
    }
    assert!(store.load_lock(b"a").is_some());
}

/// Follows TiKV's `Flush::flush` (`txn/commands/flush.rs`): a mutation that meets its own
/// lock at the same or a newer generation (`GenerationOutOfOrder`) is ignored, the other
/// mutations of the request are written and the command succeeds.
#[test]
fn flush_of_a_stale_generation_is_skipped() {
    let mut store = MvccStore::new();
    let flush = |store: &mut MvccStore, generation, mutations| {
        store.flush(&kvrpcpb::FlushRequest {
            mutations,
            primary_key: b("a"),
            start_ts: 10,
            generation,
            lock_ttl: 3000,
            ..Default::default()
        })
    };
    assert!(flush(&mut store, 3, puts(&[("a", "3")])).errors.is_empty());
    for generation in [3, 2, 1] {
        let late = flush(&mut store, generation, puts(&[("a", "late"), ("b", "new")]));
        assert!(late.errors.is_empty(), "late flush: {:?}", late.errors);
        let lock = store.load_lock(b"a").expect("lock on a");
        assert_eq!(
            (lock.generation, lock.value.clone()),
            (3, Some(b("3"))),
            "generation {generation} must not overwrite generation 3"
        );
    }
    // The key without a newer lock was written by the first late flush and then skipped by
    // the older ones.
    let lock = store.load_lock(b"b").expect("lock on b");
    assert_eq!((lock.generation, lock.value.clone()), (3, Some(b("new"))));
}

#[test]
fn flush_generations_and_buffer_batch_get() {
    let mut store = MvccStore::new();
    let flush = |store: &mut MvccStore, generation, mutations| {
        store.flush(&kvrpcpb::FlushRequest {
            mutations,
            primary_key: b("a"),
            start_ts: 10,
            generation,
            lock_ttl: 3000,
            ..Default::default()
        })
    };
    assert!(
        flush(&mut store, 1, puts(&[("a", "1"), ("b", "2")]))
            .errors
            .is_empty()
    );
    assert!(
        flush(&mut store, 2, vec![mutation(Op::Del, "b", "")])
            .errors
            .is_empty()
    );
    // A repeated generation is skipped (see `flush_of_a_stale_generation_is_skipped`).
    assert!(flush(&mut store, 2, puts(&[("b", "x")])).errors.is_empty());
    assert!(
        !flush(&mut store, 0, puts(&[("a", "x")])).errors[0]
            .abort
            .is_empty()
    );
    let lock = store.load_lock(b"a").expect("lock");
    assert_eq!(
        (lock.generation, lock.min_commit_ts, lock.txn_size),
        (1, 11, u64::MAX)
    );

    let resp = store.buffer_batch_get(&kvrpcpb::BufferBatchGetRequest {
        keys: keys(&["a", "b", "c"]),
        version: 10,
        ..Default::default()
    });
    let got: Vec<_> = resp
        .pairs
        .iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect();
    assert_eq!(got, vec![(b("a"), b("1")), (b("b"), b(""))]);
    let other = store.buffer_batch_get(&kvrpcpb::BufferBatchGetRequest {
        keys: keys(&["a"]),
        version: 11,
        ..Default::default()
    });
    assert!(other.pairs.is_empty());

    // Keys locked by others are reported while the rest is still written.
    store.must_prewrite_ok(puts(&[("z", "other")]), "z", 5);
    let resp = flush(&mut store, 3, puts(&[("y", "1"), ("z", "2")]));
    assert_eq!(resp.errors.len(), 1);
    assert!(resp.errors[0].locked.is_some());
    assert!(store.load_lock(b"y").is_some_and(|l| l.generation == 3));

    // A pipelined primary's heartbeat may raise min_commit_ts.
    let beat = store.txn_heart_beat(&kvrpcpb::TxnHeartBeatRequest {
        primary_lock: b("a"),
        start_version: 10,
        advise_lock_ttl: 5000,
        min_commit_ts: 40,
        ..Default::default()
    });
    assert_eq!(beat.lock_ttl, 5000);
    assert_eq!(store.load_lock(b"a").map(|l| l.min_commit_ts), Some(40));
}

#[test]
fn rc_check_ts_reports_newer_writes_and_locks() {
    let mut store = MvccStore::new();
    store.must_put_ok("k", "v", 5, 20);
    let resp = store.get_at("k", 10, IsolationLevel::RcCheckTs);
    let conflict = resp.error.and_then(|e| e.conflict).expect("conflict");
    assert_eq!(
        (conflict.reason, conflict.conflict_commit_ts),
        (ConflictReason::RcCheckTs as i32, 20)
    );
    let resp = store.get_at("k", 25, IsolationLevel::RcCheckTs);
    assert_eq!(resp.value, b("v"));
    store.must_prewrite_ok(puts(&[("k", "w")]), "k", 30);
    // Even a lock from the future is a conflict for RCCheckTS.
    let resp = store.get_at("k", 25, IsolationLevel::RcCheckTs);
    assert!(
        resp.error
            .and_then(|e| e.conflict)
            .is_some_and(|c| c.conflict_ts == 30)
    );
}

#[test]
fn committed_locks_are_read_through() {
    let mut store = MvccStore::new();
    store.must_put_ok("k", "old", 1, 2);
    store.must_prewrite_ok(puts(&[("k", "new")]), "k", 10);
    let read = |store: &mut MvccStore, committed_locks: Vec<u64>, need_commit_ts| {
        store.get(&kvrpcpb::GetRequest {
            context: Some(kvrpcpb::Context {
                committed_locks,
                ..Default::default()
            }),
            key: b("k"),
            version: 20,
            need_commit_ts,
        })
    };
    assert!(read(&mut store, Vec::new(), false).error.is_some());
    assert_eq!(read(&mut store, vec![10], false).value, b("new"));
    assert!(
        read(&mut store, vec![10], true).error.is_some(),
        "commit ts unknown"
    );
    let resp = store.batch_get(&kvrpcpb::BatchGetRequest {
        keys: keys(&["k"]),
        version: 20,
        need_commit_ts: true,
        ..Default::default()
    });
    assert!(
        resp.pairs[0]
            .error
            .as_ref()
            .is_some_and(|e| e.locked.is_some())
    );
    assert!(
        resp.pairs[0].key.is_empty(),
        "TiKV leaves the key of an error pair empty"
    );
}

#[test]
fn read_min_commit_ts_above_read_ts_does_not_block() {
    let mut store = MvccStore::new();
    let req = kvrpcpb::PrewriteRequest {
        min_commit_ts: 50,
        ..prewrite_req(puts(&[("k", "v")]), "k", 10, 0)
    };
    store.must_prewrite(&req);
    store.must_get_none("k", 40);
    store.must_get_err("k", 50);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let mut store = MvccStore::new();
    let empty_key = store.prewrite(&prewrite_req(puts(&[("", "v")]), "", 10, 0));
    assert!(!empty_key.errors[0].abort.is_empty());
    let mut bad_op = prewrite_req(puts(&[("k", "v")]), "k", 10, 0);
    bad_op.mutations[0].op = 99;
    assert!(!store.prewrite(&bad_op).errors[0].abort.is_empty());
    let mut bad_assertion_level = prewrite_req(puts(&[("k", "v")]), "k", 10, 0);
    bad_assertion_level.assertion_level = 7;
    assert!(
        !store.prewrite(&bad_assertion_level).errors[0]
            .abort
            .is_empty()
    );
    // TiKV pairs mutations with pessimistic actions by position: a mutation without an
    // action is dropped, not an error.
    let mut missing_actions = prewrite_req(puts(&[("k", "v")]), "k", 10, 0);
    missing_actions.for_update_ts = 10;
    assert!(store.prewrite(&missing_actions).errors.is_empty());
    assert!(store.locks.is_empty());
    let bad_isolation = store.get(&kvrpcpb::GetRequest {
        context: Some(kvrpcpb::Context {
            isolation_level: 42,
            ..Default::default()
        }),
        key: b("k"),
        version: 10,
        need_commit_ts: false,
    });
    assert!(bad_isolation.error.is_some_and(|e| !e.abort.is_empty()));
    let mut bad_lock = lock_req(&["k"], "k", 10, 10);
    bad_lock.mutations[0].op = Op::Put as i32;
    assert!(!store.lock_done(&bad_lock).errors[0].abort.is_empty());
    bad_lock.mutations[0].op = Op::PessimisticLock as i32;
    bad_lock.wake_up_mode = 9;
    assert!(!store.lock_done(&bad_lock).errors[0].abort.is_empty());
    let resp = store.commit_keys(&["k"], 10, 10);
    assert!(resp.error.is_some_and(|e| !e.abort.is_empty()));
}

#[test]
fn insert_and_assertions() {
    let mut store = MvccStore::new();
    store.must_put_ok("k", "v", 1, 2);
    let insert = prewrite_req(vec![mutation(Op::Insert, "k", "x")], "k", 10, 0);
    let resp = store.prewrite(&insert);
    assert_eq!(
        resp.errors[0].already_exist.as_ref().map(|e| e.key.clone()),
        Some(b("k"))
    );
    let check = prewrite_req(vec![mutation(Op::CheckNotExists, "n", "")], "n", 10, 0);
    store.must_prewrite(&check);
    assert!(store.locks.is_empty(), "CheckNotExists writes nothing");

    let mut assert_missing = prewrite_req(puts(&[("k", "x"), ("m", "y")]), "k", 10, 0);
    assert_missing.assertion_level = kvrpcpb::AssertionLevel::Strict as i32;
    assert_missing.mutations[0].assertion = kvrpcpb::Assertion::NotExist as i32;
    assert_missing.mutations[1].assertion = kvrpcpb::Assertion::Exist as i32;
    let resp = store.prewrite(&assert_missing);
    assert_eq!(resp.errors.len(), 1);
    let failed = resp.errors[0]
        .assertion_failed
        .clone()
        .expect("assertion failed");
    assert_eq!(
        (
            failed.key,
            failed.existing_start_ts,
            failed.existing_commit_ts
        ),
        (b("k"), 1, 2)
    );
    assert!(store.locks.is_empty());
}

/// A small random workload over three keys and small timestamps.
#[derive(Clone, Debug)]
struct Workload(Vec<(u8, u8, u8)>);

impl Arbitrary for Workload {
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        let len = usize::arbitrary(g) % 40;
        Self(
            (0..len)
                .map(|_| (u8::arbitrary(g), u8::arbitrary(g), u8::arbitrary(g)))
                .collect(),
        )
    }
}

/// Runs a workload and returns a trace of every response.
fn run_workload(workload: &Workload) -> Vec<String> {
    let mut store = MvccStore::new();
    let key_names = ["a", "b", "c"];
    let mut trace = Vec::new();
    for (op, key, ts) in &workload.0 {
        let key = key_names[(*key % 3) as usize];
        let ts = u64::from(*ts % 50) + 1;
        let line = match op % 7 {
            0 => format!(
                "{:?}",
                store.prewrite(&prewrite_req(puts(&[(key, "v")]), key, ts, 10))
            ),
            1 => format!("{:?}", store.commit_keys(&[key], ts, ts + 3)),
            2 => format!("{:?}", store.rollback_keys(&[key], ts)),
            3 => format!("{:?}", store.get_at(key, ts + 5, IsolationLevel::Si)),
            4 => format!("{:?}", store.check_status(key, ts, ts + 1, ts + 2, true)),
            5 => format!(
                "{:?}",
                store.pessimistic_lock(&lock_req(&[key], key, ts, ts + 1))
            ),
            _ => format!("{:?}", store.scan_range("", "", 10, ts + 7, false)),
        };
        trace.push(line);
    }
    trace.push(format!(
        "{:?} {:?} {}",
        store.locks,
        store.writes,
        store.max_ts()
    ));
    trace
}

#[test]
fn determinism_same_workload_same_trace() {
    fn prop(workload: Workload) -> TestResult {
        TestResult::from_bool(run_workload(&workload) == run_workload(&workload))
    }
    QuickCheck::new()
        .tests(100)
        .quickcheck(prop as fn(Workload) -> TestResult);
}

/// Failed commands leave the store exactly as they found it.
#[test]
fn failed_commands_change_nothing() {
    fn prop(workload: Workload) -> TestResult {
        let mut store = MvccStore::new();
        for (op, key, ts) in &workload.0 {
            let key = ["a", "b", "c"][(*key % 3) as usize];
            let ts = u64::from(*ts % 50) + 1;
            let before = (store.locks.clone(), store.writes.clone());
            let failed = match op % 3 {
                0 => !store
                    .prewrite(&prewrite_req(puts(&[(key, "v"), ("b", "w")]), key, ts, 10))
                    .errors
                    .is_empty(),
                1 => store.commit_keys(&[key, "c"], ts, ts + 2).error.is_some(),
                _ => store.rollback_keys(&[key], ts).is_some(),
            };
            if failed && before != (store.locks.clone(), store.writes.clone()) {
                return TestResult::failed();
            }
        }
        TestResult::passed()
    }
    QuickCheck::new()
        .tests(200)
        .quickcheck(prop as fn(Workload) -> TestResult);
}
