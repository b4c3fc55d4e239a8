//! Pessimistic locking, lock waits, deadlock detection and pessimistic prewrite.

use tikv_proto::kvrpcpb::{
    self, PessimisticLockKeyResultType as ResultType, PessimisticLockWakeUpMode,
    prewrite_request::PessimisticAction, write_conflict::Reason as ConflictReason,
};

use super::{b, keys, lock_req, pessimistic_prewrite_req};
use crate::mvcc::{LockAcquire, LockWait, MvccStore, key_hash};

fn waiting(req: kvrpcpb::PessimisticLockRequest) -> kvrpcpb::PessimisticLockRequest {
    kvrpcpb::PessimisticLockRequest {
        wait_timeout: 0,
        ..req
    }
}

fn expect_wait(store: &mut MvccStore, req: &kvrpcpb::PessimisticLockRequest) -> LockWait {
    match store.pessimistic_lock(req) {
        LockAcquire::Wait(wait) => wait,
        LockAcquire::Done(resp) => panic!("expected a lock wait, got {resp:?}"),
    }
}

#[test]
fn pessimistic_lock_then_commit() {
    let mut store = MvccStore::new();
    store.must_put_ok("k", "v0", 1, 2);
    let resp = store.lock_done(&lock_req(&["k"], "k", 10, 10));
    assert!(resp.errors.is_empty() && resp.values.is_empty() && resp.not_founds.is_empty());
    let lock = store.load_lock(b"k").expect("pessimistic lock").clone();
    assert!(lock.is_pessimistic() && lock.for_update_ts == 10);
    // Pessimistic locks do not block readers.
    store.must_get_ok("k", 20, "v0");
    store.must_prewrite(&pessimistic_prewrite_req(&[("k", "v1")], "k", 10, 10));
    store.must_commit_ok(&["k"], 10, 15);
    store.must_get_ok("k", 15, "v1");
}

#[test]
fn pessimistic_lock_write_conflict_in_normal_mode() {
    let mut store = MvccStore::new();
    store.must_put_ok("k", "v", 5, 20);
    let resp = store.lock_done(&lock_req(&["k"], "k", 10, 10));
    let conflict = resp.errors[0].conflict.clone().expect("write conflict");
    assert_eq!(conflict.reason, ConflictReason::PessimisticRetry as i32);
    assert_eq!(
        (
            conflict.start_ts,
            conflict.conflict_ts,
            conflict.conflict_commit_ts
        ),
        (10, 5, 20)
    );
    assert!(!resp.errors[0].retryable.is_empty());
    assert!(store.locks.is_empty());
    // Retrying with a newer for_update_ts succeeds.
    assert!(
        store
            .lock_done(&lock_req(&["k"], "k", 10, 25))
            .errors
            .is_empty()
    );
}

#[test]
fn pessimistic_lock_return_values_and_existence() {
    let mut store = MvccStore::new();
    store.must_put_ok("a", "va", 1, 2);
    let req = kvrpcpb::PessimisticLockRequest {
        return_values: true,
        ..lock_req(&["a", "b"], "a", 10, 10)
    };
    let resp = store.lock_done(&req);
    assert_eq!(resp.values, vec![b("va"), b("")]);
    assert_eq!(resp.not_founds, vec![false, true]);
    assert_eq!(store.max_ts(), 10, "value reads raise max_ts");

    let req = kvrpcpb::PessimisticLockRequest {
        check_existence: true,
        ..lock_req(&["a", "b"], "a", 11, 11)
    };
    // Keys are held by txn 10: the request is rejected without waiting.
    assert!(store.lock_done(&req).errors[0].locked.is_some());
    store.pessimistic_rollback(&kvrpcpb::PessimisticRollbackRequest {
        start_version: 10,
        for_update_ts: 10,
        keys: Vec::new(),
        ..Default::default()
    });
    assert!(store.locks.is_empty());
    let resp = store.lock_done(&req);
    assert!(resp.values.is_empty());
    assert_eq!(resp.not_founds, vec![false, true]);
}

#[test]
fn lock_only_if_exists_needs_return_values() {
    let mut store = MvccStore::new();
    store.must_put_ok("a", "va", 1, 2);
    let req = kvrpcpb::PessimisticLockRequest {
        lock_only_if_exists: true,
        ..lock_req(&["a"], "a", 10, 10)
    };
    assert!(!store.lock_done(&req).errors[0].abort.is_empty());
    let req = kvrpcpb::PessimisticLockRequest {
        return_values: true,
        ..req
    };
    let req = kvrpcpb::PessimisticLockRequest {
        mutations: lock_req(&["a", "missing"], "a", 10, 10).mutations,
        ..req
    };
    let resp = store.lock_done(&req);
    assert_eq!(resp.not_founds, vec![false, true]);
    assert!(store.load_lock(b"a").is_some());
    assert!(
        store.load_lock(b"missing").is_none(),
        "missing keys stay unlocked"
    );
}

#[test]
fn insert_assertion_in_pessimistic_lock_reports_already_exist() {
    let mut store = MvccStore::new();
    store.must_put_ok("a", "va", 1, 2);
    let mut req = lock_req(&["a"], "a", 10, 10);
    req.mutations[0].assertion = kvrpcpb::Assertion::NotExist as i32;
    let resp = store.lock_done(&req);
    assert_eq!(
        resp.errors[0].already_exist.as_ref().map(|e| e.key.clone()),
        Some(b("a"))
    );
}

#[test]
fn force_lock_mode_locks_with_conflict() {
    let mut store = MvccStore::new();
    store.must_put_ok("k", "v20", 15, 20);
    let req = kvrpcpb::PessimisticLockRequest {
        wake_up_mode: PessimisticLockWakeUpMode::WakeUpModeForceLock as i32,
        return_values: true,
        ..lock_req(&["k"], "k", 10, 10)
    };
    let resp = store.lock_done(&req);
    assert!(resp.errors.is_empty());
    let result = &resp.results[0];
    assert_eq!(
        result.r#type,
        ResultType::LockResultLockedWithConflict as i32
    );
    assert_eq!(
        (result.locked_with_conflict_ts, result.value.clone()),
        (20, b("v20"))
    );
    assert!(result.existence);
    let lock = store.load_lock(b"k").expect("lock").clone();
    assert_eq!(lock.for_update_ts, 20);
    assert!(lock.is_locked_with_conflict);
    // Locking again at the old for_update_ts reports the lock's newer ts.
    let resp = store.lock_done(&req);
    assert_eq!(
        resp.results[0].r#type,
        ResultType::LockResultLockedWithConflict as i32
    );
    assert_eq!(resp.results[0].locked_with_conflict_ts, 20);
    // Several keys in one ForceLock request are refused.
    let many = kvrpcpb::PessimisticLockRequest {
        mutations: lock_req(&["x", "y"], "x", 10, 10).mutations,
        ..req
    };
    assert!(!store.lock_done(&many).errors[0].abort.is_empty());
}

/// Follows TiKV's scheduler (`process_write_impl`), which replaces the key-wise result of a
/// ForceLock request that may not wait by a whole-request KeyIsLocked: `errors` only.
#[test]
fn force_lock_no_wait_answers_errors_without_results() {
    let mut store = MvccStore::new();
    store.lock_done(&lock_req(&["k"], "k", 5, 5));
    let req = kvrpcpb::PessimisticLockRequest {
        wake_up_mode: PessimisticLockWakeUpMode::WakeUpModeForceLock as i32,
        ..lock_req(&["k"], "k", 10, 10)
    };
    let resp = store.lock_done(&req);
    assert!(resp.results.is_empty(), "{:?}", resp.results);
    assert_eq!(
        resp.errors
            .iter()
            .map(|e| e.locked.as_ref().map(|l| l.lock_version))
            .collect::<Vec<_>>(),
        vec![Some(5)]
    );
}

#[test]
fn lock_wait_wake_up_normal_mode_returns_write_conflict() {
    let mut store = MvccStore::new();
    store.lock_done(&lock_req(&["k"], "k", 5, 5));
    let wait = expect_wait(&mut store, &waiting(lock_req(&["k"], "k", 10, 10)));
    assert_eq!(
        wait.requested_timeout_ms(),
        None,
        "0 asks for the default wait"
    );
    assert_eq!(
        (wait.key.clone(), wait.lock_info.lock_version, wait.start_ts),
        (b("k"), 5, 10)
    );
    assert!(
        store
            .locks
            .get(&b("k")[..])
            .is_some_and(|l| l.start_ts == 5)
    );

    store.must_prewrite(&pessimistic_prewrite_req(&[("k", "v")], "k", 5, 5));
    store.must_commit_ok(&["k"], 5, 8);
    let released = store.take_released_locks();
    assert_eq!(released.len(), 1);
    assert_eq!(
        (released[0].key.clone(), released[0].commit_ts),
        (b("k"), 8)
    );
    let resp = store.lock_wait_woken(&wait, released[0].start_ts, released[0].commit_ts);
    let conflict = resp.errors[0].conflict.clone().expect("conflict");
    assert_eq!((conflict.conflict_ts, conflict.conflict_commit_ts), (5, 8));
    assert_eq!(conflict.reason, ConflictReason::PessimisticRetry as i32);
    assert!(!store.deadlock_detector().is_waiting(10));
}

#[test]
fn lock_wait_wake_up_force_lock_mode_retries() {
    let mut store = MvccStore::new();
    store.lock_done(&lock_req(&["k"], "k", 5, 5));
    let req = kvrpcpb::PessimisticLockRequest {
        wake_up_mode: PessimisticLockWakeUpMode::WakeUpModeForceLock as i32,
        wait_timeout: 300,
        ..lock_req(&["k"], "k", 10, 10)
    };
    let wait = expect_wait(&mut store, &req);
    assert_eq!(wait.requested_timeout_ms(), Some(300));
    store.must_prewrite(&pessimistic_prewrite_req(&[("k", "v")], "k", 5, 5));
    store.must_commit_ok(&["k"], 5, 12);
    assert_eq!(store.take_released_locks().len(), 1);
    let LockAcquire::Done(resp) = store.resume_lock_wait(wait) else {
        panic!("the lock is free now");
    };
    assert_eq!(
        resp.results[0].r#type,
        ResultType::LockResultLockedWithConflict as i32
    );
    assert_eq!(resp.results[0].locked_with_conflict_ts, 12);
    assert_eq!(
        store.load_lock(b"k").map(|l| (l.start_ts, l.for_update_ts)),
        Some((10, 12))
    );
}

#[test]
fn lock_wait_timeout_reports_key_is_locked() {
    let mut store = MvccStore::new();
    store.lock_done(&lock_req(&["k"], "k", 5, 5));
    let mut req = waiting(lock_req(&["k"], "k", 10, 10));
    req.is_first_lock = false;
    let wait = expect_wait(&mut store, &req);
    assert!(store.deadlock_detector().is_waiting(10));
    let resp = store.lock_wait_timed_out(&wait, 0);
    assert_eq!(
        resp.errors[0].locked.as_ref().map(|l| l.lock_version),
        Some(5)
    );
    assert!(!store.deadlock_detector().is_waiting(10));
}

#[test]
fn lock_wait_leaves_no_partial_locks() {
    let mut store = MvccStore::new();
    store.lock_done(&lock_req(&["b"], "b", 5, 5));
    let wait = expect_wait(
        &mut store,
        &waiting(lock_req(&["a", "b", "c"], "a", 10, 10)),
    );
    assert_eq!(wait.key, b("b"));
    assert!(store.load_lock(b"a").is_none() && store.load_lock(b"c").is_none());
}

#[test]
fn deadlock_between_two_txns() {
    let mut store = MvccStore::new();
    store.lock_done(&lock_req(&["a"], "a", 10, 10));
    store.lock_done(&lock_req(&["b"], "b", 20, 20));
    // 10 waits for 20 on "b".
    expect_wait(&mut store, &waiting(lock_req(&["b"], "a", 10, 10)));
    // 20 waiting for 10 on "a" closes the cycle.
    let resp = store.lock_done(&waiting(lock_req(&["a"], "b", 20, 20)));
    let deadlock = resp.errors[0].deadlock.clone().expect("deadlock");
    assert_eq!((deadlock.lock_ts, deadlock.lock_key.clone()), (10, b("a")));
    assert_eq!(deadlock.deadlock_key_hash, key_hash(b"b"));
    let chain: Vec<_> = deadlock
        .wait_chain
        .iter()
        .map(|e| (e.txn, e.wait_for_txn, e.key.clone()))
        .collect();
    assert_eq!(chain, vec![(10, 20, b("b")), (20, 10, b("a"))]);
    // Txn 20 rolls back: txn 10's wait for it ends, nobody waits any more.
    store.batch_rollback(&kvrpcpb::BatchRollbackRequest {
        start_version: 20,
        keys: keys(&["b"]),
        ..Default::default()
    });
    assert_eq!(store.take_released_keys(), vec![b("b")]);
}

#[test]
fn deadlock_among_three_txns() {
    let mut store = MvccStore::new();
    for (key, ts) in [("a", 10), ("b", 20), ("c", 30)] {
        store.lock_done(&lock_req(&[key], key, ts, ts));
    }
    expect_wait(&mut store, &waiting(lock_req(&["b"], "a", 10, 10)));
    expect_wait(&mut store, &waiting(lock_req(&["c"], "b", 20, 20)));
    let resp = store.lock_done(&waiting(lock_req(&["a"], "c", 30, 30)));
    let deadlock = resp.errors[0].deadlock.clone().expect("deadlock");
    let chain: Vec<_> = deadlock
        .wait_chain
        .iter()
        .map(|e| (e.txn, e.wait_for_txn))
        .collect();
    assert_eq!(chain, vec![(10, 20), (20, 30), (30, 10)]);
    assert_eq!(deadlock.deadlock_key_hash, key_hash(b"c"));
    // The first lock of a transaction skips detection: it cannot be waited for yet.
    let mut first = waiting(lock_req(&["a"], "c", 30, 30));
    first.is_first_lock = true;
    expect_wait(&mut store, &first);
}

#[test]
fn no_wait_returns_key_is_locked_immediately() {
    let mut store = MvccStore::new();
    store.must_prewrite_ok(super::puts(&[("k", "v")]), "k", 5);
    let resp = store.lock_done(&lock_req(&["k"], "k", 10, 10));
    assert_eq!(
        resp.errors[0].locked.as_ref().map(|l| l.lock_version),
        Some(5)
    );
}

#[test]
fn pessimistic_prewrite_amends_missing_lock_only_without_newer_write() {
    let mut store = MvccStore::new();
    // No pessimistic lock and nothing newer: the lock is amended.
    store.must_prewrite(&pessimistic_prewrite_req(&[("a", "1")], "a", 10, 12));
    // A write newer than the start ts: the lock is considered lost.
    store.must_put_ok("b", "x", 11, 13);
    let resp = store.prewrite(&pessimistic_prewrite_req(&[("b", "1")], "b", 10, 12));
    assert!(!resp.errors[0].abort.is_empty());
    // Another txn's lock where ours should be is also "lock not found".
    store.lock_done(&lock_req(&["c"], "c", 20, 20));
    let resp = store.prewrite(&pessimistic_prewrite_req(&[("c", "1")], "c", 10, 12));
    assert!(!resp.errors[0].abort.is_empty());
}

#[test]
fn pessimistic_prewrite_for_update_ts_constraint() {
    let mut store = MvccStore::new();
    store.lock_done(&lock_req(&["k"], "k", 10, 15));
    let mut req = pessimistic_prewrite_req(&[("k", "v")], "k", 10, 15);
    req.for_update_ts_constraints = vec![kvrpcpb::prewrite_request::ForUpdateTsConstraint {
        index: 0,
        expected_for_update_ts: 14,
    }];
    assert!(!store.prewrite(&req).errors[0].abort.is_empty());
    req.for_update_ts_constraints[0].expected_for_update_ts = 15;
    store.must_prewrite(&req);
    let lock = store.load_lock(b"k").expect("lock");
    assert_eq!((lock.for_update_ts, lock.ttl), (15, 3000));
}

#[test]
fn pessimistic_prewrite_skip_check_keys_and_lazy_uniqueness() {
    let mut store = MvccStore::new();
    store.must_put_ok("u", "taken", 11, 12);
    let mut req = pessimistic_prewrite_req(&[("u", "v")], "u", 10, 15);
    req.mutations[0].op = kvrpcpb::Op::Insert as i32;
    req.pessimistic_actions = vec![PessimisticAction::DoConstraintCheck as i32];
    let resp = store.prewrite(&req);
    let conflict = resp.errors[0]
        .conflict
        .clone()
        .expect("lazy uniqueness conflict");
    assert_eq!(conflict.reason, ConflictReason::LazyUniquenessCheck as i32);
}

#[test]
fn pessimistic_rollback_respects_for_update_ts() {
    let mut store = MvccStore::new();
    store.lock_done(&lock_req(&["a", "b"], "a", 10, 20));
    let rollback = |store: &mut MvccStore, for_update_ts| {
        store.pessimistic_rollback(&kvrpcpb::PessimisticRollbackRequest {
            start_version: 10,
            for_update_ts,
            keys: keys(&["a"]),
            ..Default::default()
        })
    };
    rollback(&mut store, 15);
    assert!(store.load_lock(b"a").is_some(), "newer lock survives");
    rollback(&mut store, 20);
    assert!(store.load_lock(b"a").is_none());
    assert!(
        store.seek_write(b"a", u64::MAX).is_none(),
        "no rollback record"
    );
    assert!(store.load_lock(b"b").is_some());
}
