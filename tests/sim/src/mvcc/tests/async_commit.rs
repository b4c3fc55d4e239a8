//! Async commit, 1PC and CheckSecondaryLocks.

use tikv_proto::kvrpcpb;

use super::{b, keys, prewrite_req, puts};
use crate::mvcc::MvccStore;

fn async_req(
    pairs: &[(&str, &str)],
    primary: &str,
    start_ts: u64,
    max_commit_ts: u64,
) -> kvrpcpb::PrewriteRequest {
    let secondaries = pairs
        .iter()
        .filter(|(k, _)| *k != primary)
        .map(|(k, _)| b(k))
        .collect();
    kvrpcpb::PrewriteRequest {
        use_async_commit: true,
        secondaries,
        max_commit_ts,
        ..prewrite_req(puts(pairs), primary, start_ts, 3000)
    }
}

#[test]
fn async_commit_min_commit_ts_follows_max_ts() {
    let mut store = MvccStore::new();
    // A read at 50 must not miss a commit: the commit ts lands above it.
    store.must_get_none("a", 50);
    assert_eq!(store.max_ts(), 50);
    let resp = store.must_prewrite(&async_req(&[("a", "1"), ("b", "2")], "a", 10, 100));
    assert_eq!(resp.min_commit_ts, 51);
    assert_eq!(resp.one_pc_commit_ts, 0);
    let lock = store.load_lock(b"a").expect("primary lock").clone();
    assert!(lock.use_async_commit);
    assert_eq!(lock.secondaries, vec![b("b")]);
    assert_eq!(lock.min_commit_ts, 51);
    let secondary = store.load_lock(b"b").expect("secondary lock");
    assert!(secondary.use_async_commit && secondary.secondaries.is_empty());
    // Committing below min_commit_ts is refused.
    let err = store.must_commit_err(&["a"], 10, 40);
    assert_eq!(err.commit_ts_expired.map(|e| e.min_commit_ts), Some(51));
    store.must_commit_ok(&["a", "b"], 10, 51);
    store.must_get_ok("b", 51, "2");
}

#[test]
fn async_commit_uses_request_min_commit_ts_when_larger() {
    let mut store = MvccStore::new();
    let req = kvrpcpb::PrewriteRequest {
        min_commit_ts: 70,
        ..async_req(&[("a", "1")], "a", 10, 0)
    };
    assert_eq!(store.must_prewrite(&req).min_commit_ts, 70);
}

#[test]
fn async_commit_falls_back_when_max_commit_ts_exceeded() {
    let mut store = MvccStore::new();
    store.update_max_ts(200);
    let resp = store.must_prewrite(&async_req(&[("a", "1"), ("b", "2")], "a", 10, 100));
    assert_eq!(resp.min_commit_ts, 0, "fell back to 2PC");
    let lock = store.load_lock(b"a").expect("lock");
    assert!(!lock.use_async_commit && lock.secondaries.is_empty());
    // Readers treat it as an ordinary lock: check_txn_status may push it.
    let status = store.check_status("a", 10, 300, 0, false);
    assert_eq!(status.action, kvrpcpb::Action::MinCommitTsPushed as i32);
}

#[test]
fn async_commit_lock_is_not_rolled_back_by_check_txn_status() {
    let mut store = MvccStore::new();
    store.must_prewrite(&async_req(&[("a", "1"), ("b", "2")], "a", 10, 0));
    let resp = store.check_status("a", 10, 20, 5000 << 18, false);
    let info = resp.lock_info.expect("lock stays");
    assert!(info.use_async_commit);
    assert_eq!(resp.action, kvrpcpb::Action::NoAction as i32);
    // force_sync_commit judges it like a 2PC lock: expired, rolled back.
    let resp = store.check_txn_status(&kvrpcpb::CheckTxnStatusRequest {
        primary_key: b("a"),
        lock_ts: 10,
        current_ts: 5000 << 18,
        force_sync_commit: true,
        ..Default::default()
    });
    assert_eq!(resp.action, kvrpcpb::Action::TtlExpireRollback as i32);
}

#[test]
fn one_pc_commits_directly() {
    let mut store = MvccStore::new();
    store.must_get_none("x", 30);
    let req = kvrpcpb::PrewriteRequest {
        try_one_pc: true,
        ..prewrite_req(puts(&[("x", "1"), ("y", "2")]), "x", 10, 3000)
    };
    let resp = store.must_prewrite(&req);
    assert_eq!((resp.one_pc_commit_ts, resp.min_commit_ts), (31, 0));
    assert!(store.locks_up_to(u64::MAX).is_empty());
    store.must_get_none("y", 30);
    store.must_get_ok("y", 31, "2");
    // A retry of the same 1PC request sees the commit and reports the same ts.
    let resp = store.must_prewrite(&req);
    assert_eq!(resp.one_pc_commit_ts, 31);
}

#[test]
fn one_pc_falls_back_to_locks() {
    let mut store = MvccStore::new();
    store.update_max_ts(500);
    let req = kvrpcpb::PrewriteRequest {
        try_one_pc: true,
        max_commit_ts: 100,
        ..prewrite_req(puts(&[("x", "1"), ("y", "2")]), "x", 10, 3000)
    };
    let resp = store.must_prewrite(&req);
    assert_eq!((resp.one_pc_commit_ts, resp.min_commit_ts), (0, 0));
    let locks = store.locks_up_to(u64::MAX);
    assert_eq!(locks.len(), 2);
    assert!(store.locks.values().all(|l| !l.use_one_pc));
}

#[test]
fn one_pc_over_pessimistic_locks_releases_them() {
    let mut store = MvccStore::new();
    store.lock_done(&super::lock_req(&["x"], "x", 10, 10));
    let req = kvrpcpb::PrewriteRequest {
        try_one_pc: true,
        ..super::pessimistic_prewrite_req(&[("x", "v")], "x", 10, 10)
    };
    let resp = store.must_prewrite(&req);
    assert_eq!(resp.one_pc_commit_ts, 11);
    assert!(store.locks.is_empty());
    let released = store.take_released_locks();
    assert_eq!(released.len(), 1);
    assert_eq!((released[0].start_ts, released[0].commit_ts), (10, 11));
    store.must_get_ok("x", 11, "v");
}

fn check_secondaries(
    store: &mut MvccStore,
    list: &[&str],
    start_ts: u64,
) -> kvrpcpb::CheckSecondaryLocksResponse {
    store.check_secondary_locks(&kvrpcpb::CheckSecondaryLocksRequest {
        keys: keys(list),
        start_version: start_ts,
        ..Default::default()
    })
}

#[test]
fn check_secondary_locks_reports_locks_commit_and_rollback() {
    let mut store = MvccStore::new();
    store.must_prewrite(&async_req(
        &[("p", "1"), ("s1", "2"), ("s2", "3")],
        "p",
        10,
        0,
    ));
    let resp = check_secondaries(&mut store, &["s1", "s2"], 10);
    assert_eq!(resp.locks.len(), 2);
    assert_eq!(resp.commit_ts, 0);
    assert_eq!(store.max_ts(), 10);

    store.must_commit_ok(&["s1"], 10, 20);
    let resp = check_secondaries(&mut store, &["s1", "s2"], 10);
    assert_eq!((resp.locks.len(), resp.commit_ts), (0, 20));

    // A key never prewritten gets a protected rollback, so the txn can never commit it.
    let resp = check_secondaries(&mut store, &["s3"], 30);
    assert_eq!((resp.locks.len(), resp.commit_ts), (0, 0));
    let (_, rollback) = store.seek_write(b"s3", 30).expect("rollback record");
    assert!(rollback.protected);
    let resp = store.prewrite(&prewrite_req(puts(&[("s3", "x")]), "s3", 30, 0));
    let conflict = resp.errors[0].conflict.clone().expect("self rolled back");
    assert_eq!(
        conflict.reason,
        kvrpcpb::write_conflict::Reason::SelfRolledBack as i32
    );
}

#[test]
fn check_secondary_locks_rolls_back_pessimistic_lock() {
    let mut store = MvccStore::new();
    store.lock_done(&super::lock_req(&["s"], "p", 10, 10));
    let resp = check_secondaries(&mut store, &["s"], 10);
    assert_eq!((resp.locks.len(), resp.commit_ts, resp.error), (0, 0, None));
    assert!(store.load_lock(b"s").is_none());
    let (_, rollback) = store.seek_write(b"s", 10).expect("rollback record");
    assert!(rollback.protected);
}

#[test]
fn rollback_over_async_lock_survives_its_commit() {
    let mut store = MvccStore::new();
    // Txn 10 holds an async-commit lock on "k"; txn 15 is rolled back on "k".
    store.must_prewrite(&async_req(&[("k", "v")], "k", 10, 0));
    let resp = check_secondaries(&mut store, &["k"], 15);
    assert_eq!((resp.locks.len(), resp.commit_ts), (0, 0));
    assert_eq!(
        store.load_lock(b"k").map(|l| l.rollback_ts.clone()),
        Some(vec![15])
    );
    // Txn 10 commits exactly at 15: the record carries txn 15's rollback.
    store.must_commit_ok(&["k"], 10, 15);
    let (_, write) = store.seek_write(b"k", 15).expect("commit record");
    assert!(write.has_overlapped_rollback);
    let resp = store.prewrite(&prewrite_req(puts(&[("k", "x")]), "k", 15, 0));
    assert!(resp.errors[0].conflict.is_some());
}
