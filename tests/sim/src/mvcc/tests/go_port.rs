//! Ports of client-go's mocktikv store tests (`mock_tikv_test.go`), adapted to TiKV's
//! semantics where mocktikv differs (noted per test).

use tikv_proto::kvrpcpb::{self, Action, IsolationLevel, Op};

use super::{b, mutation, prewrite_req, puts};
use crate::mvcc::MvccStore;

#[test]
fn get() {
    let mut store = MvccStore::new();
    store.must_get_none("x", 10);
    store.must_put_ok("x", "x", 5, 10);
    store.must_get_none("x", 9);
    store.must_get_ok("x", 10, "x");
    store.must_get_ok("x", 11, "x");
}

#[test]
fn get_with_lock() {
    let mut store = MvccStore::new();
    store.must_put_ok("key", "value", 5, 10);
    // A Lock-type lock does not block readers.
    store.must_prewrite_ok(vec![mutation(Op::Lock, "key", "")], "key", 20);
    store.must_get_ok("key", 25, "value");
    store.must_commit_ok(&["key"], 20, 30);

    store.must_prewrite_ok(puts(&[("key", "value2"), ("key2", "v5")]), "key", 40);
    let err = store.must_get_err("key", 41);
    assert_eq!(err.locked.map(|l| l.lock_version), Some(40));
    // At u64::MAX only a 2PC primary lock is skipped.
    assert!(store.must_get_err("key2", u64::MAX).locked.is_some());
    store.must_get_ok("key", u64::MAX, "value");
}

#[test]
fn delete() {
    let mut store = MvccStore::new();
    store.must_put_ok("x", "x5-10", 5, 10);
    store.must_delete_ok("x", 15, 20);
    store.must_get_none("x", 5);
    store.must_get_none("x", 9);
    store.must_get_ok("x", 10, "x5-10");
    store.must_get_ok("x", 19, "x5-10");
    store.must_get_none("x", 20);
    store.must_get_none("x", 21);
}

#[test]
fn cleanup_rollback() {
    let mut store = MvccStore::new();
    store.must_put_ok("secondary", "s-0", 1, 2);
    store.must_prewrite_ok(
        puts(&[("primary", "p-5"), ("secondary", "s-5")]),
        "primary",
        5,
    );
    store.must_get_err("secondary", 8);
    store.must_get_err("secondary", 12);
    store.must_commit_ok(&["primary"], 5, 10);
    let err = store
        .rollback_keys(&["primary"], 5)
        .expect("rollback of a committed key");
    assert!(!err.abort.is_empty());
}

fn check_scan_v10(store: &mut MvccStore, reverse: bool) {
    if reverse {
        store.must_scan_pairs("", "Z", 0, 10, true, &[]);
        store.must_scan_pairs("", "Z", 1, 10, true, &["E", "E10"]);
        store.must_scan_pairs("", "Z", 2, 10, true, &["E", "E10", "C", "C10"]);
        store.must_scan_pairs("", "Z", 3, 10, true, &["E", "E10", "C", "C10", "A", "A10"]);
        store.must_scan_pairs("", "Z", 4, 10, true, &["E", "E10", "C", "C10", "A", "A10"]);
        store.must_scan_pairs(
            "",
            "E\0",
            3,
            10,
            true,
            &["E", "E10", "C", "C10", "A", "A10"],
        );
        store.must_scan_pairs("", "C\0", 3, 10, true, &["C", "C10", "A", "A10"]);
        store.must_scan_pairs("", "C\0", 4, 10, true, &["C", "C10", "A", "A10"]);
        store.must_scan_pairs("", "B", 1, 10, true, &["A", "A10"]);
        store.must_scan_pairs("", "E", 5, 10, true, &["C", "C10", "A", "A10"]);
        store.must_scan_pairs("", "C\0", 5, 10, true, &["C", "C10", "A", "A10"]);
        store.must_scan_pairs("A\0", "C", 5, 10, true, &[]);
    } else {
        store.must_scan_pairs("", "", 0, 10, false, &[]);
        store.must_scan_pairs("", "", 1, 10, false, &["A", "A10"]);
        store.must_scan_pairs("", "", 2, 10, false, &["A", "A10", "C", "C10"]);
        store.must_scan_pairs("", "", 3, 10, false, &["A", "A10", "C", "C10", "E", "E10"]);
        store.must_scan_pairs("", "", 4, 10, false, &["A", "A10", "C", "C10", "E", "E10"]);
        store.must_scan_pairs("A", "", 3, 10, false, &["A", "A10", "C", "C10", "E", "E10"]);
        store.must_scan_pairs("A\0", "", 3, 10, false, &["C", "C10", "E", "E10"]);
        store.must_scan_pairs("C", "", 4, 10, false, &["C", "C10", "E", "E10"]);
        store.must_scan_pairs("F", "", 1, 10, false, &[]);
        store.must_scan_pairs("", "E", 5, 10, false, &["A", "A10", "C", "C10"]);
        store.must_scan_pairs("", "C\0", 5, 10, false, &["A", "A10", "C", "C10"]);
        store.must_scan_pairs("A\0", "C", 5, 10, false, &[]);
    }
}

fn check_scan_v20(store: &mut MvccStore, reverse: bool) {
    if reverse {
        let all = ["E", "E10", "D", "D20", "C", "C10", "B", "B20", "A", "A10"];
        store.must_scan_pairs("", "Z", 5, 20, true, &all);
        store.must_scan_pairs(
            "",
            "C\0",
            5,
            20,
            true,
            &["C", "C10", "B", "B20", "A", "A10"],
        );
        store.must_scan_pairs("", "A\0", 1, 20, true, &["A", "A10"]);
        store.must_scan_pairs("B", "D", 5, 20, true, &["C", "C10", "B", "B20"]);
        store.must_scan_pairs(
            "B",
            "D\0",
            5,
            20,
            true,
            &["D", "D20", "C", "C10", "B", "B20"],
        );
        store.must_scan_pairs("B\0", "D\0", 5, 20, true, &["D", "D20", "C", "C10"]);
    } else {
        let all = ["A", "A10", "B", "B20", "C", "C10", "D", "D20", "E", "E10"];
        store.must_scan_pairs("", "", 5, 20, false, &all);
        store.must_scan_pairs("C", "", 5, 20, false, &["C", "C10", "D", "D20", "E", "E10"]);
        store.must_scan_pairs("D\0", "", 1, 20, false, &["E", "E10"]);
        store.must_scan_pairs("B", "D", 5, 20, false, &["B", "B20", "C", "C10"]);
        store.must_scan_pairs(
            "B",
            "D\0",
            5,
            20,
            false,
            &["B", "B20", "C", "C10", "D", "D20"],
        );
        store.must_scan_pairs("B\0", "D\0", 5, 20, false, &["C", "C10", "D", "D20"]);
    }
}

fn check_scan_v30(store: &mut MvccStore, reverse: bool) {
    if reverse {
        store.must_scan_pairs("", "Z", 5, 30, true, &["E", "E10", "C", "C10", "B", "B20"]);
        store.must_scan_pairs("", "C", 1, 30, true, &["B", "B20"]);
        store.must_scan_pairs("", "C\0", 5, 30, true, &["C", "C10", "B", "B20"]);
    } else {
        store.must_scan_pairs("", "", 5, 30, false, &["B", "B20", "C", "C10", "E", "E10"]);
        store.must_scan_pairs("A", "", 1, 30, false, &["B", "B20"]);
        store.must_scan_pairs("C\0", "", 5, 30, false, &["E", "E10"]);
    }
}

fn check_scan_v40(store: &mut MvccStore, reverse: bool) {
    if reverse {
        store.must_scan_pairs("", "Z", 5, 40, true, &["E", "E10", "D", "D40", "C", "C40"]);
        store.must_scan_pairs("", "Z", 5, 100, true, &["E", "E10", "D", "D40", "C", "C40"]);
    } else {
        store.must_scan_pairs("", "", 5, 40, false, &["C", "C40", "D", "D40", "E", "E10"]);
        store.must_scan_pairs("", "", 5, 100, false, &["C", "C40", "D", "D40", "E", "E10"]);
    }
}

fn scan_scenario(reverse: bool) {
    let mut store = MvccStore::new();
    // ver10: A(10) - B(_) - C(10) - D(_) - E(10)
    store.must_put_ok("A", "A10", 5, 10);
    store.must_put_ok("C", "C10", 5, 10);
    store.must_put_ok("E", "E10", 5, 10);
    check_scan_v10(&mut store, reverse);
    // ver20: A(10) - B(20) - C(10) - D(20) - E(10)
    store.must_put_ok("B", "B20", 15, 20);
    store.must_put_ok("D", "D20", 15, 20);
    check_scan_v10(&mut store, reverse);
    check_scan_v20(&mut store, reverse);
    // ver30: A(_) - B(20) - C(10) - D(_) - E(10)
    store.must_delete_ok("A", 25, 30);
    store.must_delete_ok("D", 25, 30);
    check_scan_v10(&mut store, reverse);
    check_scan_v20(&mut store, reverse);
    check_scan_v30(&mut store, reverse);
    // ver40: A(_) - B(_) - C(40) - D(40) - E(10)
    store.must_delete_ok("B", 35, 40);
    store.must_put_ok("C", "C40", 35, 40);
    store.must_put_ok("D", "D40", 35, 40);
    check_scan_v10(&mut store, reverse);
    check_scan_v20(&mut store, reverse);
    check_scan_v30(&mut store, reverse);
    check_scan_v40(&mut store, reverse);
}

#[test]
fn reverse_scan() {
    scan_scenario(true);
}

#[test]
fn scan() {
    scan_scenario(false);
}

#[test]
fn batch_get() {
    let mut store = MvccStore::new();
    store.must_put_ok("k1", "v1", 1, 2);
    store.must_put_ok("k2", "v2", 1, 2);
    store.must_put_ok("k2", "v2", 3, 4);
    store.must_put_ok("k3", "v3", 1, 2);
    let resp = store.batch_get(&kvrpcpb::BatchGetRequest {
        keys: vec![b("k1"), b("k2"), b("k3")],
        version: 5,
        ..Default::default()
    });
    let got: Vec<_> = resp
        .pairs
        .iter()
        .map(|p| (p.error.clone(), p.value.clone()))
        .collect();
    assert_eq!(got, vec![(None, b("v1")), (None, b("v2")), (None, b("v3"))]);
}

#[test]
fn scan_lock() {
    let mut store = MvccStore::new();
    store.must_put_ok("k1", "v1", 1, 2);
    store.must_prewrite_ok(puts(&[("p1", "v5"), ("s1", "v5")]), "p1", 5);
    store.must_prewrite_ok(puts(&[("p2", "v10"), ("s2", "v10")]), "p2", 10);
    store.must_prewrite_ok(puts(&[("p3", "v20"), ("s3", "v20")]), "p3", 20);
    let locks = store.scan_lock(&kvrpcpb::ScanLockRequest {
        max_version: 12,
        start_key: b("a"),
        end_key: b("r"),
        limit: 0,
        ..Default::default()
    });
    let got: Vec<_> = locks
        .locks
        .iter()
        .map(|l| (l.key.clone(), l.lock_version))
        .collect();
    assert_eq!(got, vec![(b("p1"), 5), (b("p2"), 10)]);
    let all = store.locks_up_to(10);
    let expect = [
        ("p1", "p1", 5),
        ("p2", "p2", 10),
        ("s1", "p1", 5),
        ("s2", "p2", 10),
    ];
    let expect: Vec<_> = expect
        .iter()
        .map(|(k, p, ts)| (k.to_string(), p.to_string(), *ts))
        .collect();
    assert_eq!(all, expect);
    assert_eq!(store.max_ts(), 12, "scan_lock raises max_ts");
}

#[test]
fn scan_with_resolved_lock() {
    let mut store = MvccStore::new();
    store.must_prewrite_ok(puts(&[("p1", "v5"), ("s1", "v5")]), "p1", 5);
    store.must_prewrite_ok(puts(&[("p2", "v10"), ("s2", "v10")]), "p1", 5);
    let resp = store.scan_range("p1", "", 3, 10, false);
    assert_eq!(resp.pairs.len(), 3);
    let lock = resp.pairs[0]
        .error
        .as_ref()
        .and_then(|e| e.locked.clone())
        .expect("locked");
    assert!(
        resp.pairs[1]
            .error
            .as_ref()
            .is_some_and(|e| e.locked.is_some())
    );
    let resp = store.scan(&kvrpcpb::ScanRequest {
        context: Some(kvrpcpb::Context {
            resolved_locks: vec![lock.lock_version],
            ..Default::default()
        }),
        start_key: b("p1"),
        limit: 3,
        version: 10,
        ..Default::default()
    });
    assert!(resp.pairs.iter().all(|p| p.error.is_none()));
    // Resolved (rolled back or pushed) locks hide nothing committed: the keys are empty.
    assert!(resp.pairs.is_empty());
}

#[test]
fn commit_conflict() {
    let mut store = MvccStore::new();
    store.must_prewrite_ok(puts(&[("x", "A")]), "x", 5);
    let resp = store.prewrite(&prewrite_req(puts(&[("x", "B")]), "x", 10, 0));
    assert!(resp.errors[0].locked.is_some());
    assert_eq!(store.rollback_keys(&["x"], 5), None);
    let err = store.must_commit_err(&["x"], 5, 10);
    assert!(err.txn_lock_not_found.is_some() && !err.retryable.is_empty());
    store.must_prewrite_ok(puts(&[("x", "B")]), "x", 10);
    let err = store.must_commit_err(&["x"], 5, 20);
    assert!(err.txn_lock_not_found.is_some());
    store.must_commit_ok(&["x"], 10, 20);
    store.must_commit_ok(&["x"], 10, 20);
}

#[test]
fn resolve_lock() {
    let mut store = MvccStore::new();
    store.must_prewrite_ok(puts(&[("p1", "v5"), ("s1", "v5")]), "p1", 5);
    store.must_prewrite_ok(puts(&[("p2", "v10"), ("s2", "v10")]), "p2", 10);
    for (start, commit) in [(5, 0), (10, 20)] {
        let resp = store.resolve_lock(&kvrpcpb::ResolveLockRequest {
            start_version: start,
            commit_version: commit,
            ..Default::default()
        });
        assert_eq!(resp.error, None);
    }
    store.must_get_none("p1", 20);
    store.must_get_none("s1", 30);
    store.must_get_ok("p2", 20, "v10");
    store.must_get_ok("s2", 30, "v10");
    assert!(store.locks_up_to(30).is_empty());
}

#[test]
fn batch_resolve_lock() {
    let mut store = MvccStore::new();
    store.must_prewrite_ok(puts(&[("p1", "v11"), ("s1", "v11")]), "p1", 11);
    store.must_prewrite_ok(puts(&[("p2", "v12"), ("s2", "v12")]), "p2", 12);
    store.must_prewrite_ok(puts(&[("p3", "v13")]), "p3", 13);
    store.must_prewrite_ok(
        puts(&[("p4", "v14"), ("s3", "v14"), ("s4", "v14")]),
        "p4",
        14,
    );
    store.must_prewrite_ok(puts(&[("p5", "v15"), ("s5", "v15")]), "p5", 15);
    let infos = |pairs: &[(u64, u64)]| {
        pairs
            .iter()
            .map(|(txn, status)| kvrpcpb::TxnInfo {
                txn: *txn,
                status: *status,
                is_txn_file: false,
            })
            .collect()
    };
    let resp = store.resolve_lock(&kvrpcpb::ResolveLockRequest {
        txn_infos: infos(&[(11, 0), (12, 22), (13, 0), (14, 24)]),
        ..Default::default()
    });
    assert_eq!(resp.error, None);
    store.must_get_none("p1", 20);
    store.must_get_none("p3", 30);
    store.must_get_ok("p2", 30, "v12");
    store.must_get_ok("s4", 30, "v14");
    let expect = vec![
        ("p5".to_owned(), "p5".to_owned(), 15),
        ("s5".to_owned(), "p5".to_owned(), 15),
    ];
    assert_eq!(store.locks_up_to(30), expect);
    let resp = store.resolve_lock(&kvrpcpb::ResolveLockRequest {
        txn_infos: infos(&[(15, 0)]),
        ..Default::default()
    });
    assert_eq!(resp.error, None);
    assert!(store.locks_up_to(30).is_empty());
}

#[test]
fn gc() {
    let mut store = MvccStore::new();
    store.must_put_ok("k1", "v1", 1, 2);
    store.must_put_ok("k1", "v2", 11, 12);
    store.must_put_ok("k2", "v1", 1, 2);
    store.must_put_ok("k2", "v2", 11, 12);
    store.must_put_ok("k2", "v3", 101, 102);
    store.must_put_ok("k3", "v1", 1, 2);
    store.must_put_ok("k3", "v2", 11, 12);
    store.must_delete_ok("k3", 101, 102);
    store.must_put_ok("k4", "v1", 1, 2);
    store.must_delete_ok("k4", 11, 12);

    store.must_get_ok("k1", 5, "v1");
    store.must_get_ok("k1", 15, "v2");
    store.must_get_ok("k2", 5, "v1");
    store.must_get_ok("k2", 15, "v2");
    store.must_get_ok("k2", 105, "v3");
    store.must_get_ok("k3", 5, "v1");
    store.must_get_ok("k3", 15, "v2");
    store.must_get_none("k3", 105);
    store.must_get_ok("k4", 5, "v1");
    store.must_get_none("k4", 105);

    store.gc(100);

    store.must_get_none("k1", 5);
    store.must_get_ok("k1", 15, "v2");
    store.must_get_none("k2", 5);
    store.must_get_ok("k2", 15, "v2");
    store.must_get_ok("k2", 105, "v3");
    store.must_get_none("k3", 5);
    store.must_get_ok("k3", 15, "v2");
    store.must_get_none("k3", 105);
    store.must_get_none("k4", 5);
    store.must_get_none("k4", 105);
    assert!(
        !store.writes.contains_key(&b("k4")[..]),
        "a deleted key leaves nothing behind"
    );
}

#[test]
fn rollback_and_write_conflict() {
    let mut store = MvccStore::new();
    store.must_put_ok("test", "test", 1, 3);
    let resp = store.prewrite(&prewrite_req(
        puts(&[("lock", "lock"), ("test", "test1")]),
        "test",
        2,
        2,
    ));
    assert_eq!(resp.errors.len(), 1);
    let conflict = resp.errors[0].conflict.clone().expect("write conflict");
    assert_eq!((conflict.conflict_ts, conflict.conflict_commit_ts), (1, 3));
    assert!(
        store.locks_up_to(u64::MAX).is_empty(),
        "nothing written on conflict"
    );

    store.must_put_ok("test", "test2", 5, 8);
    // Simulates the status check of txn 2 that finds nothing and leaves a rollback.
    let resp = store.cleanup(&kvrpcpb::CleanupRequest {
        key: b("test"),
        start_version: 2,
        current_ts: u64::MAX,
        ..Default::default()
    });
    assert_eq!(resp.error, None);
    let resp = store.prewrite(&prewrite_req(puts(&[("test", "test3")]), "test", 6, 1));
    assert!(resp.errors[0].conflict.is_some());
}

#[test]
fn delete_range() {
    let mut store = MvccStore::new();
    for i in 1..=5u64 {
        let key = i.to_string();
        store.must_put_ok(&key, &format!("v{key}"), 1 + 2 * i, 2 + 2 * i);
    }
    let all = ["1", "v1", "2", "v2", "3", "v3", "4", "v4", "5", "v5"];
    store.must_scan_pairs("0", "", 10, 20, false, &all);
    let delete = |store: &mut MvccStore, start: &str, end: &str| {
        store.delete_range(&kvrpcpb::DeleteRangeRequest {
            start_key: b(start),
            end_key: b(end),
            ..Default::default()
        });
    };
    delete(&mut store, "2", "4");
    store.must_scan_pairs("0", "", 10, 30, false, &["1", "v1", "4", "v4", "5", "v5"]);
    delete(&mut store, "5", "5");
    store.must_scan_pairs("0", "", 10, 40, false, &["1", "v1", "4", "v4", "5", "v5"]);
    delete(&mut store, "41", "42");
    store.must_scan_pairs("0", "", 10, 50, false, &["1", "v1", "4", "v4", "5", "v5"]);
    delete(&mut store, "4\0", "5\0");
    store.must_scan_pairs("0", "", 10, 60, false, &["1", "v1", "4", "v4"]);
    delete(&mut store, "0", "9");
    store.must_scan_pairs("0", "", 10, 70, false, &[]);
}

#[test]
fn rc() {
    let mut store = MvccStore::new();
    store.must_put_ok("key", "v1", 5, 10);
    store.must_prewrite_ok(puts(&[("key", "v2")]), "key", 15);
    store.must_get_err("key", 20);
    for ts in [12, 20] {
        let resp = store.get_at("key", ts, IsolationLevel::Rc);
        assert_eq!((resp.error, resp.value), (None, b("v1")));
    }
}

#[test]
fn check_txn_status() {
    let mut store = MvccStore::new();
    let start_ts = 5 << 18;
    store.must_prewrite_ttl_ok(puts(&[("pk", "val")]), "pk", start_ts, 666);

    let resp = store.check_status("pk", start_ts, start_ts + 100, 666, false);
    assert_eq!((resp.lock_ttl, resp.commit_version), (666, 0));
    assert_eq!(resp.action, Action::MinCommitTsPushed as i32);
    assert_eq!(
        resp.lock_info.map(|l| l.min_commit_ts),
        Some(start_ts + 101)
    );

    // u64::MAX as caller start ts pushes nothing but still reports the push.
    let resp = store.check_status("pk", start_ts, u64::MAX, 666, false);
    assert_eq!((resp.lock_ttl, resp.commit_version), (666, 0));
    assert_eq!(resp.action, Action::MinCommitTsPushed as i32);
    store.must_commit_ok(&["pk"], start_ts, start_ts + 101);

    let resp = store.check_status("pk", start_ts, 0, 666, false);
    assert_eq!((resp.lock_ttl, resp.commit_version), (0, start_ts + 101));

    store.must_prewrite_ttl_ok(puts(&[("pk1", "val")]), "pk1", start_ts, 666);
    assert_eq!(store.rollback_keys(&["pk1"], start_ts), None);
    let resp = store.check_status("pk1", start_ts, 0, 666, false);
    assert_eq!((resp.lock_ttl, resp.commit_version), (0, 0));
    assert_eq!(resp.action, Action::NoAction as i32);

    store.must_prewrite_ttl_ok(puts(&[("pk2", "val")]), "pk2", start_ts, 666);
    let resp = store.check_status("pk2", start_ts, 0, 777 << 18, false);
    assert_eq!((resp.lock_ttl, resp.commit_version), (0, 0));
    assert_eq!(resp.action, Action::TtlExpireRollback as i32);

    let resp = store.check_status("txnNotFound", 5, 0, 666, false);
    let not_found = resp
        .error
        .and_then(|e| e.txn_not_found)
        .expect("txn not found");
    assert_eq!(
        (not_found.start_ts, not_found.primary_key),
        (5, b("txnNotFound"))
    );

    let resp = store.check_status("txnNotFound", 5, 0, 666, true);
    assert_eq!((resp.lock_ttl, resp.commit_version), (0, 0));
    assert_eq!(resp.action, Action::LockNotExistRollback as i32);

    // The rollback record blocks a prewrite with a smaller start ts.
    let resp = store.prewrite(&kvrpcpb::PrewriteRequest {
        min_commit_ts: 6,
        ..prewrite_req(puts(&[("txnNotFound", "val")]), "txnNotFound", 4, 0)
    });
    assert!(resp.errors[0].conflict.is_some());
}

#[test]
fn reject_commit_ts() {
    let mut store = MvccStore::new();
    store.must_prewrite_ok(puts(&[("x", "A")]), "x", 5);
    let resp = store.check_status("x", 5, 100, 100, false);
    assert_eq!(resp.error, None);
    let err = store.must_commit_err(&["x"], 5, 10);
    let expired = err.commit_ts_expired.expect("commit ts expired");
    assert_eq!(
        (expired.min_commit_ts, expired.attempted_commit_ts),
        (101, 10)
    );
}

#[test]
fn mvcc_get_by_key() {
    let mut store = MvccStore::new();
    store.must_prewrite_ok(puts(&[("q1", "v5")]), "p1", 5);
    let resp = store.mvcc_get_by_key(&kvrpcpb::MvccGetByKeyRequest {
        key: b("q1"),
        ..Default::default()
    });
    let lock = resp.info.and_then(|i| i.lock).expect("lock");
    assert_eq!(lock.r#type, Op::Put as i32);
    assert_eq!(
        (lock.start_ts, lock.primary, lock.short_value),
        (5, b("p1"), b("v5"))
    );
}

#[test]
fn txn_heart_beat() {
    let mut store = MvccStore::new();
    store.must_prewrite_ttl_ok(puts(&[("pk", "val")]), "pk", 5, 666);
    let beat = |store: &mut MvccStore, ttl| {
        store.txn_heart_beat(&kvrpcpb::TxnHeartBeatRequest {
            primary_lock: b("pk"),
            start_version: 5,
            advise_lock_ttl: ttl,
            ..Default::default()
        })
    };
    assert_eq!(beat(&mut store, 888).lock_ttl, 888);
    assert_eq!(beat(&mut store, 300).lock_ttl, 888);
    let resp = store.cleanup(&kvrpcpb::CleanupRequest {
        key: b("pk"),
        start_version: 5,
        current_ts: 0,
        ..Default::default()
    });
    assert_eq!(resp.error, None);
    assert!(
        beat(&mut store, 1000)
            .error
            .and_then(|e| e.txn_not_found)
            .is_some()
    );
}
