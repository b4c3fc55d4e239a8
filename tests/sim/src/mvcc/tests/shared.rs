//! Shared locks (TiKV's `SharedLocks`) in every command that meets them, and the
//! transaction status cache.

use tikv_proto::kvrpcpb::{self, Op, prewrite_request::PessimisticAction};

use super::{b, keys, lock_req, mutation, pessimistic_prewrite_req};
use crate::mvcc::store::{LockType, WriteType};
use crate::mvcc::{LockAcquire, MvccStore, TxnState};

fn shared_req(
    keys: &[&str],
    primary: &str,
    start_ts: u64,
    for_update_ts: u64,
) -> kvrpcpb::PessimisticLockRequest {
    let mut req = lock_req(keys, primary, start_ts, for_update_ts);
    for m in &mut req.mutations {
        m.op = Op::SharedPessimisticLock as i32;
    }
    req
}

/// A pessimistic prewrite of `(op, key, action)` mutations.
fn prewrite_ops(
    ops: &[(Op, &str, PessimisticAction)],
    primary: &str,
    start_ts: u64,
    for_update_ts: u64,
) -> kvrpcpb::PrewriteRequest {
    kvrpcpb::PrewriteRequest {
        mutations: ops
            .iter()
            .map(|(op, key, _)| mutation(*op, key, if *op == Op::Put { "v" } else { "" }))
            .collect(),
        pessimistic_actions: ops.iter().map(|(_, _, action)| *action as i32).collect(),
        primary_lock: b(primary),
        start_version: start_ts,
        for_update_ts,
        lock_ttl: 3000,
        min_commit_ts: start_ts + 1,
        ..Default::default()
    }
}

fn shared_prewrite(
    key: &str,
    primary: &str,
    start_ts: u64,
    for_update_ts: u64,
) -> kvrpcpb::PrewriteRequest {
    prewrite_ops(
        &[(Op::SharedLock, key, PessimisticAction::DoPessimisticCheck)],
        primary,
        start_ts,
        for_update_ts,
    )
}

impl MvccStore {
    /// The holders of `key`'s shared locks: (start ts, lock type, for_update_ts).
    fn shared_holders(&self, key: &str) -> Vec<(u64, LockType, u64)> {
        self.shared_locks
            .get(key.as_bytes())
            .map(|shared| {
                shared
                    .locks
                    .values()
                    .map(|l| (l.start_ts, l.lock_type, l.for_update_ts))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn shrink_only(&self, key: &str) -> bool {
        self.shared_locks
            .get(key.as_bytes())
            .is_some_and(|shared| shared.shrink_only)
    }

    fn must_share(&mut self, key: &str, primary: &str, start_ts: u64) {
        let resp = self.lock_done(&shared_req(&[key], primary, start_ts, start_ts));
        assert!(resp.errors.is_empty(), "{:?}", resp.errors);
    }
}

/// Follows TiKV's `acquire_pessimistic_lock` with `is_shared_lock_req`: several transactions
/// hold sub-locks of one key; relocking refreshes the own sub-lock to a newer
/// `for_update_ts` (`handle_existing_shared_lock`) and reads no value.
#[test]
fn shared_pessimistic_lock_admits_several_holders() {
    let mut store = MvccStore::new();
    store.must_put_ok("k", "v", 1, 2);
    store.take_new_locks();
    store.must_share("k", "p1", 10);
    store.must_share("k", "p2", 20);
    assert_eq!(
        store.shared_holders("k"),
        vec![
            (10, LockType::Pessimistic, 10),
            (20, LockType::Pessimistic, 20)
        ]
    );
    assert!(store.load_lock(b"k").is_none(), "no exclusive lock");
    let req = kvrpcpb::PessimisticLockRequest {
        return_values: true,
        ..shared_req(&["k"], "p1", 10, 15)
    };
    let resp = store.lock_done(&req);
    assert!(resp.errors.is_empty());
    assert_eq!(resp.values, vec![b("")], "shared locks load no value");
    assert_eq!(resp.not_founds, vec![true]);
    assert_eq!(
        store.shared_holders("k")[0],
        (10, LockType::Pessimistic, 15)
    );
    // The new set was reported as a newly acquired lock once.
    let new_locks = store.take_new_locks();
    assert_eq!(new_locks.len(), 1);
    assert_eq!(new_locks[0].lock_type, Op::SharedLock as i32);
}

/// Follows TiKV's `check_ts_conflict_si` / `check_ts_conflict_rc_check_ts`, which ignore
/// shared locks: reads see through them.
#[test]
fn reads_ignore_shared_locks() {
    let mut store = MvccStore::new();
    store.must_put_ok("k", "v", 1, 2);
    store.must_share("k", "p", 10);
    store.must_prewrite(&shared_prewrite("k", "p", 10, 10));
    store.must_get_ok("k", 100, "v");
    store.must_get_ok("k", u64::MAX, "v");
    store.must_scan_pairs("a", "z", 10, 100, false, &["k", "v"]);
    let resp = store.get_at("k", 100, kvrpcpb::IsolationLevel::RcCheckTs);
    assert_eq!(resp.error, None);
}

/// Follows TiKV's `acquire_pessimistic_lock`: a shared request waits for an exclusive lock,
/// even one of its own transaction.
#[test]
fn shared_request_is_blocked_by_exclusive_lock() {
    let mut store = MvccStore::new();
    store.lock_done(&lock_req(&["k"], "k", 10, 10));
    for start_ts in [10, 20] {
        let resp = store.lock_done(&shared_req(&["k"], "k", start_ts, start_ts));
        let locked = resp.errors[0].locked.clone().expect("locked");
        assert_eq!(locked.lock_version, 10);
    }
    let mut waiting = shared_req(&["k"], "x", 20, 20);
    waiting.wait_timeout = 0;
    let LockAcquire::Wait(wait) = store.pessimistic_lock(&waiting) else {
        panic!("a shared request may wait");
    };
    assert!(wait.shared);
    assert_eq!(wait.wait_for, vec![10]);
}

/// Follows TiKV's `NotInShrinkMode` handling in `AcquirePessimisticLock::process_write`: an
/// exclusive request meeting shared locks that still take holders marks them shrink-only
/// and fails with KeyIsLocked at once (without waiting, keeping nothing else); afterwards new
/// holders are refused, the own holders may still refresh, and the exclusive retry waits for
/// every holder.
#[test]
fn exclusive_request_makes_shared_locks_shrink_only() {
    let mut store = MvccStore::new();
    store.must_share("k", "p1", 10);
    store.must_share("k", "p2", 20);
    let mut exclusive = lock_req(&["a", "k"], "a", 30, 30);
    exclusive.wait_timeout = 0;
    let LockAcquire::Done(resp) = store.pessimistic_lock(&exclusive) else {
        panic!("the first exclusive request does not wait");
    };
    let locked = resp.errors[0].locked.clone().expect("locked");
    assert_eq!(locked.lock_type, Op::SharedLock as i32);
    assert_eq!(
        locked
            .shared_lock_infos
            .iter()
            .map(|l| (l.lock_version, l.lock_type))
            .collect::<Vec<_>>(),
        vec![
            (10, Op::PessimisticLock as i32),
            (20, Op::PessimisticLock as i32)
        ]
    );
    assert!(store.shrink_only("k"));
    assert!(store.load_lock(b"a").is_none(), "earlier keys are not kept");

    // New holders are refused, an existing one may refresh.
    let resp = store.lock_done(&shared_req(&["k"], "p3", 40, 40));
    assert!(resp.errors[0].locked.is_some());
    let resp = store.lock_done(&shared_req(&["k"], "p1", 10, 12));
    assert!(resp.errors.is_empty());

    let LockAcquire::Wait(wait) = store.pessimistic_lock(&exclusive) else {
        panic!("the retry waits");
    };
    assert_eq!(wait.wait_for, vec![10, 20]);
    assert!(!wait.shared);
}

/// Follows TiKV's deadlock detector for shared locks (`Detector::handle_detect` iterating
/// `LockInfoExt::iter_locks`): a wait for a shared lock waits for every holder, and the
/// holder that closes a cycle is the one the Deadlock error names.
#[test]
fn deadlock_detection_waits_for_every_shared_holder() {
    let mut store = MvccStore::new();
    store.must_share("k", "p1", 10);
    store.must_share("k", "p2", 20);
    store.lock_done(&lock_req(&["a"], "a", 30, 30));
    // T20 waits for T30 on "a".
    let mut t20 = lock_req(&["a"], "p2", 20, 20);
    t20.wait_timeout = 0;
    assert!(matches!(store.pessimistic_lock(&t20), LockAcquire::Wait(_)));
    // T30 wants "k" exclusively: shrink-only first, then the wait closes 30 -> 20 -> 30.
    let mut t30 = lock_req(&["k"], "a", 30, 30);
    t30.wait_timeout = 0;
    assert!(matches!(store.pessimistic_lock(&t30), LockAcquire::Done(_)));
    let LockAcquire::Done(resp) = store.pessimistic_lock(&t30) else {
        panic!("deadlock expected");
    };
    let deadlock = resp.errors[0].deadlock.clone().expect("deadlock");
    assert_eq!(deadlock.lock_ts, 20);
    assert!(
        !store.deadlock_detector().is_waiting(30),
        "the wait registered for T10 is forgotten too"
    );
}

/// Follows TiKV's `prewrite` on a `SharedLocks` value and `commit` of a sub-lock: the
/// transaction's pessimistic sub-lock becomes a Lock sub-lock; committing it leaves a Lock
/// record and the other holders; the last holder leaving releases the key.
#[test]
fn shared_lock_prewrite_and_commit() {
    let mut store = MvccStore::new();
    store.must_share("k", "p1", 10);
    store.must_share("k", "p2", 20);
    store.take_released_locks();
    store.must_prewrite(&prewrite_ops(
        &[
            (Op::Put, "p1", PessimisticAction::DoPessimisticCheck),
            (Op::SharedLock, "k", PessimisticAction::DoPessimisticCheck),
        ],
        "p1",
        10,
        10,
    ));
    assert_eq!(
        store.shared_holders("k"),
        vec![(10, LockType::Lock, 10), (20, LockType::Pessimistic, 20)]
    );
    // A retried shared prewrite is a no-op.
    store.must_prewrite(&shared_prewrite("k", "p1", 10, 10));
    store.must_commit_ok(&["p1", "k"], 10, 15);
    assert_eq!(
        store
            .seek_write(b"k", u64::MAX)
            .map(|(ts, w)| (ts, w.write_type, w.start_ts)),
        Some((15, WriteType::Lock, 10))
    );
    assert_eq!(
        store.shared_holders("k"),
        vec![(20, LockType::Pessimistic, 20)]
    );
    assert!(
        store.take_released_locks().iter().all(|r| r.key != b("k")),
        "the key stays locked by T20"
    );
    // Committing a stale pessimistic sub-lock just drops it: the key is free now.
    store.must_commit_ok(&["k"], 20, 25);
    assert!(store.shared_locks.is_empty());
    let released = store.take_released_locks();
    assert_eq!(
        released
            .iter()
            .map(|r| (r.key.clone(), r.start_ts, r.pessimistic))
            .collect::<Vec<_>>(),
        vec![(b("k"), 20, true)]
    );
    assert_eq!(store.seek_write(b"k", u64::MAX).map(|(ts, _)| ts), Some(15));
}

/// Follows TiKV's `prewrite` checks on shared locks: a shared prewrite needs the own shared
/// pessimistic sub-lock (no amending), a normal mutation on an own sub-lock is refused, any
/// other transaction's mutation sees the shared lock as KeyIsLocked, a shared prewrite on an
/// exclusive lock is KeyIsLocked, and a shared sub-lock takes no async commit or 1PC.
#[test]
fn shared_lock_prewrite_checks() {
    let mut store = MvccStore::new();
    let resp = store.prewrite(&shared_prewrite("k", "p", 10, 10));
    assert!(
        resp.errors[0].abort.contains("pessimistic lock not found"),
        "{resp:?}"
    );

    store.must_share("k", "p", 10);
    let resp = store.prewrite(&prewrite_ops(
        &[(Op::Put, "k", PessimisticAction::DoPessimisticCheck)],
        "p",
        10,
        10,
    ));
    assert!(resp.errors[0].abort.contains("Op::SharedLock"), "{resp:?}");

    let resp = store.prewrite(&super::prewrite_req(super::puts(&[("k", "v")]), "k", 30, 0));
    let locked = resp.errors[0].locked.clone().expect("locked");
    assert_eq!(locked.lock_type, Op::SharedLock as i32);

    let resp = store.prewrite(&shared_prewrite("k", "p", 20, 20));
    assert!(!resp.errors[0].abort.is_empty(), "T20 holds no sub-lock");

    for async_commit in [true, false] {
        let mut req = shared_prewrite("k", "p", 10, 10);
        if async_commit {
            req.use_async_commit = true;
            req.secondaries = vec![b("k")];
        } else {
            req.try_one_pc = true;
        }
        let resp = store.prewrite(&req);
        assert!(!resp.errors[0].abort.is_empty(), "{resp:?}");
        assert_eq!(
            store.shared_holders("k"),
            vec![(10, LockType::Pessimistic, 10)]
        );
    }

    store.lock_done(&lock_req(&["x"], "x", 40, 40));
    store.must_share("y", "p", 10);
    let resp = store.prewrite(&prewrite_ops(
        &[
            (Op::SharedLock, "y", PessimisticAction::DoPessimisticCheck),
            (Op::SharedLock, "x", PessimisticAction::DoPessimisticCheck),
        ],
        "p",
        10,
        10,
    ));
    assert_eq!(
        resp.errors[0].locked.as_ref().map(|l| l.lock_version),
        Some(40)
    );
    assert_eq!(
        store.shared_holders("y"),
        vec![(10, LockType::Pessimistic, 10)],
        "a failed prewrite changes no shared lock"
    );
}

/// Follows TiKV's `rollback_shared_lock` (TiKV test `rollback_shared_lock`): rolling back one
/// holder leaves an unprotected rollback record and the other holders.
#[test]
fn shared_lock_rollback_is_unprotected() {
    let mut store = MvccStore::new();
    store.must_share("k", "p1", 10);
    store.must_share("k", "p2", 20);
    assert_eq!(store.rollback_keys(&["k"], 10), None);
    let (ts, rollback) = store.seek_write(b"k", 10).expect("rollback record");
    assert_eq!(
        (ts, rollback.write_type, rollback.protected),
        (10, WriteType::Rollback, false)
    );
    assert_eq!(
        store.shared_holders("k"),
        vec![(20, LockType::Pessimistic, 20)]
    );
    assert_eq!(store.rollback_keys(&["k"], 20), None);
    assert!(store.shared_locks.is_empty());
}

/// Follows TiKV's `cleanup` on shared locks: with `current_ts` a live sub-lock is reported
/// as the key's shared lock; an expired one is rolled back.
#[test]
fn cleanup_of_shared_holder_checks_its_ttl() {
    let mut store = MvccStore::new();
    let start_ts = 100 << 18;
    store.must_share("k", "p", start_ts);
    let cleanup = |store: &mut MvccStore, current_ms: u64| {
        store.cleanup(&kvrpcpb::CleanupRequest {
            key: b("k"),
            start_version: start_ts,
            current_ts: current_ms << 18,
            ..Default::default()
        })
    };
    let resp = cleanup(&mut store, 200);
    let locked = resp.error.and_then(|e| e.locked).expect("live");
    assert_eq!(locked.lock_type, Op::SharedLock as i32);
    let resp = cleanup(&mut store, 100 + 3000 + 1);
    assert_eq!(resp.error, None);
    assert!(store.shared_locks.is_empty());
}

/// Follows TiKV's `PessimisticRollback` on shared locks (TiKV test
/// `test_rollback_shared_pessimistic_lock`): one holder's sub-lock goes, without a record.
#[test]
fn pessimistic_rollback_removes_one_shared_holder() {
    let mut store = MvccStore::new();
    store.lock_done(&shared_req(&["k"], "p1", 10, 30));
    store.must_share("k", "p2", 20);
    let rollback = |store: &mut MvccStore, start_ts, for_update_ts, keys: Vec<bytes::Bytes>| {
        store.pessimistic_rollback(&kvrpcpb::PessimisticRollbackRequest {
            start_version: start_ts,
            for_update_ts,
            keys,
            ..Default::default()
        })
    };
    rollback(&mut store, 10, 20, keys(&["k"]));
    assert_eq!(
        store.shared_holders("k").len(),
        2,
        "newer sub-lock survives"
    );
    rollback(&mut store, 10, 30, keys(&["k"]));
    assert_eq!(
        store.shared_holders("k"),
        vec![(20, LockType::Pessimistic, 20)]
    );
    rollback(&mut store, 20, 20, Vec::new());
    assert!(store.shared_locks.is_empty());
    assert!(store.seek_write(b"k", u64::MAX).is_none());
}

/// Follows TiKV's `ResolveLockReadPhase` flattening shared locks (TiKV test
/// `test_resolve_multiple_shared_locks_same_key`): every matching holder is resolved.
#[test]
fn resolve_lock_resolves_every_shared_holder() {
    let mut store = MvccStore::new();
    for (start_ts, primary) in [(10, "p1"), (20, "p2"), (30, "p3")] {
        store.must_share("k", primary, start_ts);
        store.must_prewrite(&shared_prewrite("k", primary, start_ts, start_ts));
    }
    let resp = store.resolve_lock(&kvrpcpb::ResolveLockRequest {
        txn_infos: vec![
            kvrpcpb::TxnInfo {
                txn: 10,
                status: 0,
                ..Default::default()
            },
            kvrpcpb::TxnInfo {
                txn: 20,
                status: 25,
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    assert_eq!(resp.error, None);
    assert_eq!(store.shared_holders("k"), vec![(30, LockType::Lock, 30)]);
    assert_eq!(
        store.seek_write(b"k", 25).map(|(ts, w)| (ts, w.write_type)),
        Some((25, WriteType::Lock))
    );
    assert_eq!(
        store.seek_write(b"k", 10).map(|(ts, w)| (ts, w.write_type)),
        Some((10, WriteType::Rollback))
    );
}

/// Follows TiKV's `CheckTxnStatus` and `TxnHeartBeat` on shared locks: a shared-locked key is
/// never a primary, so both answer PrimaryMismatch and change nothing.
#[test]
fn status_checks_on_shared_lock_are_primary_mismatch() {
    let mut store = MvccStore::new();
    store.must_share("k", "p", 10);
    let resp = store.check_status("k", 10, 11, 11, true);
    let mismatch = resp
        .error
        .and_then(|e| e.primary_mismatch)
        .expect("mismatch");
    assert_eq!(
        mismatch.lock_info.map(|l| l.lock_type),
        Some(Op::SharedLock as i32)
    );
    let resp = store.txn_heart_beat(&kvrpcpb::TxnHeartBeatRequest {
        primary_lock: b("k"),
        start_version: 10,
        advise_lock_ttl: 9000,
        ..Default::default()
    });
    assert!(resp.error.and_then(|e| e.primary_mismatch).is_some());
    let resp = store.txn_heart_beat(&kvrpcpb::TxnHeartBeatRequest {
        primary_lock: b("k"),
        start_version: 20,
        advise_lock_ttl: 9000,
        ..Default::default()
    });
    assert!(resp.error.and_then(|e| e.txn_not_found).is_some());
    assert_eq!(
        store.shared_holders("k"),
        vec![(10, LockType::Pessimistic, 10)]
    );
}

/// Follows TiKV's `CheckSecondaryLocks` on shared locks: judged by the write records alone,
/// a key without a record gets a protected rollback.
#[test]
fn check_secondary_locks_judges_shared_lock_by_records() {
    let mut store = MvccStore::new();
    store.must_share("k", "p", 10);
    let resp = store.check_secondary_locks(&kvrpcpb::CheckSecondaryLocksRequest {
        keys: keys(&["k"]),
        start_version: 10,
        ..Default::default()
    });
    assert_eq!((resp.error, resp.locks.len(), resp.commit_ts), (None, 0, 0));
    let (_, rollback) = store.seek_write(b"k", 10).expect("rollback");
    assert!(rollback.protected);
}

/// Follows TiKV's `scan_locks_from_storage` on shared locks (TiKV test
/// `test_scan_locks_shared_limit_across_keys_keeps_smallest_ts`): a shared lock is one entry
/// listing its holders below `max_version`; the limit counts holders and a truncated shared
/// lock keeps its smallest start ts.
#[test]
fn scan_lock_counts_shared_holders() {
    let mut store = MvccStore::new();
    store.lock_done(&lock_req(&["a"], "a", 5, 5));
    for start_ts in [30, 10, 20, 40] {
        store.must_share("s", "p", start_ts);
    }
    store.lock_done(&lock_req(&["z"], "z", 6, 6));
    let scan = |store: &mut MvccStore, max_version, limit| {
        store
            .scan_lock(&kvrpcpb::ScanLockRequest {
                max_version,
                limit,
                ..Default::default()
            })
            .locks
    };
    let locks = scan(&mut store, 100, 3);
    assert_eq!(locks.len(), 2);
    assert_eq!(locks[0].lock_version, 5);
    assert_eq!((locks[1].key.clone(), locks[1].lock_version), (b("s"), 0));
    assert_eq!(
        locks[1]
            .shared_lock_infos
            .iter()
            .map(|l| l.lock_version)
            .collect::<Vec<_>>(),
        vec![10, 20]
    );
    let locks = scan(&mut store, 25, 0);
    assert_eq!(
        locks
            .iter()
            .map(|l| (l.key.clone(), l.shared_lock_infos.len()))
            .collect::<Vec<_>>(),
        vec![(b("a"), 0), (b("s"), 2), (b("z"), 0)]
    );
}

/// Follows TiKV's `DeleteRange`, which clears the lock column whatever it holds.
#[test]
fn delete_range_removes_shared_locks() {
    let mut store = MvccStore::new();
    store.must_share("k", "p", 10);
    store.must_share("m", "p", 10);
    store.delete_range(&kvrpcpb::DeleteRangeRequest {
        start_key: b("a"),
        end_key: b("l"),
        ..Default::default()
    });
    assert!(store.shared_holders("k").is_empty());
    assert_eq!(store.shared_holders("m").len(), 1);
}

/// A pessimistic transaction whose secondary `k2` was prewritten without a pessimistic lock
/// (SkipPessimisticCheck, as TiDB does for non-unique index keys) and committed.
fn committed_with_unlocked_secondary(store: &mut MvccStore, via_resolve_lock: bool) {
    store.lock_done(&lock_req(&["k1"], "k1", 10, 10));
    store.must_prewrite(&late_prewrite_of_both());
    if via_resolve_lock {
        let resp = store.resolve_lock(&kvrpcpb::ResolveLockRequest {
            start_version: 10,
            commit_version: 20,
            ..Default::default()
        });
        assert_eq!(resp.error, None);
    } else {
        store.must_commit_ok(&["k1", "k2"], 10, 20);
    }
    assert!(store.locks.is_empty());
}

fn late_prewrite_of_both() -> kvrpcpb::PrewriteRequest {
    prewrite_ops(
        &[
            (Op::Put, "k1", PessimisticAction::DoPessimisticCheck),
            (Op::Put, "k2", PessimisticAction::SkipPessimisticCheck),
        ],
        "k1",
        10,
        10,
    )
}

fn late_prewrite_of_secondary() -> kvrpcpb::PrewriteRequest {
    prewrite_ops(
        &[(Op::Put, "k2", PessimisticAction::SkipPessimisticCheck)],
        "k1",
        10,
        10,
    )
}

/// Follows TiKV's `Prewriter::process_write` with the `TxnStatusCache`: a pessimistic
/// prewrite of a transaction the cache knows is committed is handled as a retry, so its
/// constraint check finds the commit record and it succeeds without writing a lock.
#[test]
fn pessimistic_prewrite_of_committed_txn_is_a_retry() {
    let mut store = MvccStore::new();
    committed_with_unlocked_secondary(&mut store, false);
    assert_eq!(
        store.cached_txn_status(10),
        Some(TxnState::Committed { commit_ts: 20 })
    );
    let resp = store.prewrite(&late_prewrite_of_secondary());
    assert!(resp.errors.is_empty(), "{resp:?}");
    assert!(store.locks.is_empty(), "no stale lock");
    // The same holds for a late prewrite of both keys.
    let resp = store.prewrite(&late_prewrite_of_both());
    assert!(resp.errors.is_empty(), "{resp:?}");
    assert!(store.locks.is_empty());
}

/// Follows TiKV's documented limit of the `TxnStatusCache`: a store that never learnt of the
/// commit (here a ResolveLock, which does not report a known status) handles a late
/// prewrite of an unlocked key normally, leaving a stale lock; a `BroadcastTxnStatus`
/// (`Storage::update_txn_status_cache`) teaches it the status.
#[test]
fn broadcast_txn_status_teaches_the_cache() {
    let mut store = MvccStore::new();
    committed_with_unlocked_secondary(&mut store, true);
    assert_eq!(store.cached_txn_status(10), None);
    assert!(
        store
            .prewrite(&late_prewrite_of_secondary())
            .errors
            .is_empty()
    );
    assert!(
        store.load_lock(b"k2").is_some(),
        "the stale lock TiKV would write"
    );
    // A resolver clears it (its transaction is committed); that tells the cache nothing.
    store.resolve_lock(&kvrpcpb::ResolveLockRequest {
        start_version: 10,
        commit_version: 20,
        ..Default::default()
    });
    assert!(store.locks.is_empty());
    assert_eq!(store.cached_txn_status(10), None);

    store.broadcast_txn_status(&kvrpcpb::BroadcastTxnStatusRequest {
        txn_status: vec![kvrpcpb::TxnStatus {
            start_ts: 10,
            commit_ts: 20,
            is_completed: true,
            ..Default::default()
        }],
        ..Default::default()
    });
    assert_eq!(
        store.cached_txn_status(10),
        Some(TxnState::Committed { commit_ts: 20 })
    );
    assert!(
        store
            .prewrite(&late_prewrite_of_secondary())
            .errors
            .is_empty()
    );
    assert!(store.locks.is_empty());
}

/// Follows TiKV's `TxnStatusCache::upsert` and `TxnState::from_ts`: rolled back wins over a
/// commit ts, final states are never replaced, and an ongoing transaction with a
/// `min_commit_ts` above its start ts goes to the large-transaction half, where only a
/// larger `min_commit_ts` replaces it and a final state finishes it.
#[test]
fn txn_status_cache_keeps_final_states() {
    let mut store = MvccStore::new();
    let status = |start_ts, min_commit_ts, commit_ts, rolled_back| kvrpcpb::TxnStatus {
        start_ts,
        min_commit_ts,
        commit_ts,
        rolled_back,
        ..Default::default()
    };
    store.broadcast_txn_status(&kvrpcpb::BroadcastTxnStatusRequest {
        txn_status: vec![
            status(1, 0, 0, false),
            status(1, 0, 5, false),
            status(2, 0, 7, true),
            status(2, 0, 9, false),
            status(3, 8, 0, false),
            status(3, 6, 0, false),
            status(4, 0, 6, false),
            status(4, 0, 0, true),
            status(5, 9, 0, false),
            status(5, 0, 12, false),
        ],
        ..Default::default()
    });
    assert_eq!(
        store.cached_txn_status(1),
        Some(TxnState::Committed { commit_ts: 5 })
    );
    assert_eq!(store.cached_txn_status(2), Some(TxnState::RolledBack));
    assert_eq!(
        store.cached_txn_status(3),
        Some(TxnState::Ongoing { min_commit_ts: 8 })
    );
    assert_eq!(
        store.cached_txn_status(5),
        Some(TxnState::Committed { commit_ts: 12 })
    );
    assert_eq!(
        store.cached_txn_status(4),
        Some(TxnState::Committed { commit_ts: 6 })
    );
}

/// Follows the `known_txn_status` TiKV's commands report: commits, 1PC, CheckTxnStatus,
/// CheckSecondaryLocks and ResolveLockLite that find a transaction committed feed the
/// cache; a full ResolveLock does not.
#[test]
fn commands_that_report_known_txn_status() {
    let mut store = MvccStore::new();
    let mut one_pc = super::prewrite_req(super::puts(&[("a", "1")]), "a", 10, 3000);
    one_pc.try_one_pc = true;
    let resp = store.prewrite(&one_pc);
    assert!(resp.one_pc_commit_ts > 0);
    assert_eq!(
        store.cached_txn_status(10),
        Some(TxnState::Committed {
            commit_ts: resp.one_pc_commit_ts
        })
    );

    store.must_prewrite_ok(super::puts(&[("b", "1"), ("c", "1")]), "b", 20);
    store.resolve_lock(&kvrpcpb::ResolveLockRequest {
        start_version: 20,
        commit_version: 25,
        keys: keys(&["b"]),
        ..Default::default()
    });
    assert_eq!(
        store.cached_txn_status(20),
        Some(TxnState::Committed { commit_ts: 25 })
    );

    store.must_prewrite_ok(super::puts(&[("d", "1"), ("e", "1")]), "d", 30);
    store.resolve_lock(&kvrpcpb::ResolveLockRequest {
        start_version: 30,
        commit_version: 35,
        ..Default::default()
    });
    assert_eq!(store.cached_txn_status(30), None);
    assert_eq!(
        store.check_status("d", 30, 40, 40, false).commit_version,
        35
    );
    assert_eq!(
        store.cached_txn_status(30),
        Some(TxnState::Committed { commit_ts: 35 })
    );

    store.must_prewrite(&pessimistic_prewrite_req(&[("f", "1")], "f", 50, 50));
    store.resolve_lock(&kvrpcpb::ResolveLockRequest {
        start_version: 50,
        commit_version: 55,
        ..Default::default()
    });
    assert_eq!(store.cached_txn_status(50), None);
    store.check_secondary_locks(&kvrpcpb::CheckSecondaryLocksRequest {
        keys: keys(&["f"]),
        start_version: 50,
        ..Default::default()
    });
    assert_eq!(
        store.cached_txn_status(50),
        Some(TxnState::Committed { commit_ts: 55 })
    );
}
