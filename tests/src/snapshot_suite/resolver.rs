//! Every path of the lock resolver as a read takes it, over the network, with no Go
//! counterpart: a committed primary (its secondaries resolved), an expired transaction
//! rolled back, async commit recovered through CheckSecondaryLocks (committed, or rolled
//! back when a secondary is missing), a primary that never arrived (TiKV's TxnNotFound rule),
//! pessimistic locks (which never block a read), the latest-timestamp rule for primary
//! locks, batch gets and scans (forward, reverse, key-only, with limits) across regions with
//! locks in several, commit timestamps read through locks, and reads in an API V2 keyspace.
//!
//! Each test checks the values read and what the client sent (status checks, resolutions),
//! and that no lock is left where the resolver should have cleaned up.

use bytes::Bytes;
use tikv_core::rpc::StoreRequest;
use tikv_core::{KvPair, Timestamp};
use tikv_proto::kvrpcpb;

use super::{Env, Layout, TestCluster, b, drain, ok, start, start_with, texts};
use crate::txn_fixture::{Prewrite, Space, Writer};

/// The CheckTxnStatus requests `requests` holds.
fn status_checks(requests: &[StoreRequest]) -> Vec<kvrpcpb::CheckTxnStatusRequest> {
    requests
        .iter()
        .filter_map(|r| match r {
            StoreRequest::CheckTxnStatus(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

/// The ResolveLock requests `requests` holds.
fn resolutions(requests: &[StoreRequest]) -> Vec<kvrpcpb::ResolveLockRequest> {
    requests
        .iter()
        .filter_map(|r| match r {
            StoreRequest::ResolveLock(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

/// No lock is left anywhere in the client's key space.
fn assert_no_locks(cluster: &TestCluster) {
    let locks = cluster.write(|w| w.scan_locks(b"", b"", u64::MAX));
    assert!(locks.is_empty(), "locks left: {locks:?}");
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A read meeting the secondaries of a transaction whose primary committed (in three
/// regions) checks the primary once, resolves the secondaries with the commit timestamp
/// (one ResolveLock per region, carrying its keys), and reads the new values; a second read
/// needs no resolution.
pub async fn read_resolves_the_secondaries_of_a_committed_primary(env: &dyn Env) {
    let cluster = start_with(
        env,
        Layout {
            splits: vec![b"s2".to_vec(), b"s3".to_vec()],
            ..Layout::default()
        },
    )
    .await;
    let (start_ts, commit_ts) = cluster.write(|w| {
        w.put(&[("p", "old"), ("s1", "old"), ("s2", "old"), ("s3", "old")]);
        let start_ts = w.ts();
        w.prewrite(
            &Prewrite::new(start_ts, "p")
                .put("p", "new")
                .put("s1", "new")
                .put("s2", "new")
                .put("s3", "new"),
        );
        let commit_ts = w.ts();
        w.commit(start_ts, &["p"], commit_ts);
        (start_ts, commit_ts)
    });
    cluster.log.take();
    let snapshot = cluster.snapshot().await;
    let found = ok("batch get", snapshot.batch_get(["s1", "s2", "s3"]).await);
    assert_eq!(
        texts(&found),
        pairs(&[("s1", "new"), ("s2", "new"), ("s3", "new")])
    );
    let log = cluster.log.take();
    let checks = status_checks(&log);
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].lock_ts, start_ts);
    assert_eq!(checks[0].primary_key, b("p"));
    let resolved = resolutions(&log);
    assert_eq!(resolved.len(), 3, "one per region: {resolved:?}");
    for request in &resolved {
        assert_eq!(request.start_version, start_ts);
        assert_eq!(request.commit_version, commit_ts);
        assert_eq!(request.keys.len(), 1);
    }
    assert_no_locks(&cluster);

    // Read again: from the snapshot's cache, then (the cache cleaned) from the stores,
    // which hold no locks any more.
    let again = ok("batch get", snapshot.batch_get(["s1", "s2", "s3"]).await);
    assert_eq!(texts(&again), texts(&found));
    assert!(cluster.log.names().is_empty(), "{:?}", cluster.log.names());
    snapshot.clean_cache(["s1", "s2", "s3"]);
    let again = ok("batch get", snapshot.batch_get(["s1", "s2", "s3"]).await);
    assert_eq!(texts(&again), texts(&found));
    assert_eq!(cluster.log.names(), ["KvBatchGet"; 3]);
}

/// A read meeting the locks of a transaction whose TTL ran out rolls it back (CheckTxnStatus
/// answers TtlExpireRollback) and its secondary with commit version 0, then reads the old
/// values; the primary's own lock went with the status check.
pub async fn read_rolls_back_an_expired_transaction(env: &dyn Env) {
    let cluster = start(env).await;
    let start_ts = cluster.write(|w| {
        w.put(&[("p", "old"), ("s", "old")]);
        let start_ts = w.ts();
        w.prewrite(
            &Prewrite::new(start_ts, "p")
                .put("p", "new")
                .put("s", "new")
                .ttl(1),
        );
        start_ts
    });
    cluster.wait_past(env, start_ts, 1).await;
    cluster.log.take();
    let snapshot = cluster.snapshot().await;
    assert_eq!(ok("get", snapshot.get("s").await), Some(b("old")));
    let log = cluster.log.take();
    let checks = status_checks(&log);
    assert_eq!(checks.len(), 1);
    let resolved = resolutions(&log);
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].commit_version, 0);
    assert_eq!(resolved[0].keys, [b("s")]);
    assert_no_locks(&cluster);
    assert_eq!(ok("get", snapshot.get("p").await), Some(b("old")));
    assert_eq!(cluster.log.names(), ["KvGet"]);
    let status = cluster.write(|w| w.check_txn_status(b"p", start_ts, 0, false));
    assert_eq!(
        status.action,
        kvrpcpb::Action::NoAction as i32,
        "rolled back for good"
    );
}

/// A read meeting the locks of an expired async-commit transaction (primary and two
/// secondaries in three regions, all prewritten) asks each secondary's region with
/// CheckSecondaryLocks, finds every lock there and commits the transaction at its largest
/// `min_commit_ts`, then reads the new values with that commit timestamp.
pub async fn read_recovers_an_expired_async_commit_transaction(env: &dyn Env) {
    let cluster = start_with(
        env,
        Layout {
            splits: vec![b"s1".to_vec(), b"s2".to_vec()],
            ..Layout::default()
        },
    )
    .await;
    let (start_ts, min_commit_ts) = cluster.write(|w| {
        w.put(&[("p", "old"), ("s1", "old"), ("s2", "old")]);
        let start_ts = w.ts();
        let done = w.prewrite(
            &Prewrite::new(start_ts, "p")
                .put("p", "new")
                .put("s1", "new")
                .put("s2", "new")
                .ttl(1)
                .async_commit(),
        );
        (start_ts, done.min_commit_ts)
    });
    assert!(min_commit_ts > start_ts);
    cluster.wait_past(env, start_ts, 1).await;
    cluster.log.take();
    let snapshot = cluster.snapshot().await;
    let found = ok(
        "batch get",
        snapshot.batch_get_with_commit_ts(["p", "s1", "s2"]).await,
    );
    let commit_ts = Timestamp::from_version(min_commit_ts);
    let read: Vec<(Bytes, Bytes, Timestamp)> = found
        .into_iter()
        .map(|(pair, ts)| (pair.key, pair.value, ts))
        .collect();
    assert_eq!(
        read,
        [
            (b("p"), b("new"), commit_ts),
            (b("s1"), b("new"), commit_ts),
            (b("s2"), b("new"), commit_ts),
        ]
    );
    let log = cluster.log.take();
    let secondary_checks = log
        .iter()
        .filter(|r| matches!(r, StoreRequest::CheckSecondaryLocks(_)))
        .count();
    assert_eq!(secondary_checks, 2, "one per secondary region");
    for request in resolutions(&log) {
        assert_eq!(request.commit_version, min_commit_ts);
    }
    assert_no_locks(&cluster);
}

/// An expired async-commit transaction one of whose secondaries was never prewritten is
/// rolled back: CheckSecondaryLocks finds no lock there (and TiKV protects the key with a
/// rollback), so the read resolves the other locks with commit version 0 and reads the old
/// values.
pub async fn read_rolls_back_an_async_commit_transaction_missing_a_secondary(env: &dyn Env) {
    let cluster = start_with(
        env,
        Layout {
            splits: vec![b"s2".to_vec()],
            ..Layout::default()
        },
    )
    .await;
    let start_ts = cluster.write(|w| {
        w.put(&[("p", "old"), ("s1", "old"), ("s2", "old")]);
        let start_ts = w.ts();
        // s2 is listed but never prewritten.
        w.prewrite(
            &Prewrite::new(start_ts, "p")
                .put("p", "new")
                .put("s1", "new")
                .ttl(1)
                .async_commit()
                .secondaries(&["s1", "s2"]),
        );
        start_ts
    });
    cluster.wait_past(env, start_ts, 1).await;
    cluster.log.take();
    let snapshot = cluster.snapshot().await;
    let found = ok("batch get", snapshot.batch_get(["p", "s1", "s2"]).await);
    assert_eq!(
        texts(&found),
        pairs(&[("p", "old"), ("s1", "old"), ("s2", "old")])
    );
    let log = cluster.log.take();
    assert!(
        log.iter()
            .any(|r| matches!(r, StoreRequest::CheckSecondaryLocks(_))),
        "{:?}",
        log.iter().map(StoreRequest::name).collect::<Vec<_>>()
    );
    for request in resolutions(&log) {
        assert_eq!(request.commit_version, 0);
    }
    assert_no_locks(&cluster);
    // The transaction can no longer commit: s2 holds a rollback.
    let late = cluster.write(|w| w.try_prewrite(&Prewrite::new(start_ts, "p").put("s2", "new")));
    assert!(late.is_err(), "a late prewrite of s2 was accepted");
}

/// A lock whose primary has neither a lock nor a record (the primary's prewrite never
/// arrived): once the lock expired, the read checks again with `rollback_if_not_exist`
/// (TiKV writes a rollback on the primary, LockNotExistRollback), rolls the secondary back
/// and reads the old value.
pub async fn read_rolls_back_a_transaction_whose_primary_never_arrived(env: &dyn Env) {
    let cluster = start(env).await;
    let start_ts = cluster.write(|w| {
        w.put(&[("s", "old")]);
        let start_ts = w.ts();
        w.prewrite(&Prewrite::new(start_ts, "p").put("s", "new").ttl(1));
        start_ts
    });
    cluster.wait_past(env, start_ts, 1).await;
    cluster.log.take();
    let snapshot = cluster.snapshot().await;
    assert_eq!(ok("get", snapshot.get("s").await), Some(b("old")));
    let log = cluster.log.take();
    let checks: Vec<bool> = status_checks(&log)
        .iter()
        .map(|c| c.rollback_if_not_exist)
        .collect();
    assert_eq!(checks, [false, true]);
    let resolved = resolutions(&log);
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].commit_version, 0);
    assert_no_locks(&cluster);
    // The primary now holds a rollback record: the transaction is rolled back for good.
    let status = cluster.write(|w| w.check_txn_status(b"p", start_ts, 0, false));
    assert!(status.error.is_none(), "{status:?}");
    assert_eq!(status.action, kvrpcpb::Action::NoAction as i32);
}

/// Pessimistic locks never block a read: gets, batch gets and scans of pessimistically
/// locked keys read the committed values without a status check.
pub async fn read_does_not_block_on_pessimistic_locks(env: &dyn Env) {
    let cluster = start(env).await;
    cluster.write(|w| {
        w.put(&[("k1", "v1"), ("k2", "v2")]);
        let start_ts = w.ts();
        w.pessimistic_lock(start_ts, start_ts, b"k1", &["k1", "k2", "k3"], 60_000);
    });
    assert_eq!(cluster.write(|w| w.scan_locks(b"", b"", u64::MAX)).len(), 3);
    cluster.log.take();
    let snapshot = cluster.snapshot().await;
    assert_eq!(ok("get", snapshot.get("k1").await), Some(b("v1")));
    let found = ok("batch get", snapshot.batch_get(["k1", "k2", "k3"]).await);
    assert_eq!(texts(&found), pairs(&[("k1", "v1"), ("k2", "v2")]));
    let scanned = ok("scan", snapshot.scan(.."k9", 10).await);
    assert_eq!(texts(&scanned), pairs(&[("k1", "v1"), ("k2", "v2")]));
    assert_eq!(cluster.log.names(), ["KvGet", "KvBatchGet", "KvScan"]);
}

/// A point get at the latest timestamp is not blocked by the primary lock of a 2PC
/// transaction (TiKV skips it: the transaction cannot have committed before "now" while its
/// primary is locked), so it reads the committed value in one request.
pub async fn max_ts_point_get_skips_a_primary_lock(env: &dyn Env) {
    let cluster = start(env).await;
    cluster.write(|w| {
        w.put(&[("p", "old")]);
        w.lock_key(b"s", b"new", b"p", b"new", 60_000, false, false);
    });
    cluster.log.take();
    let snapshot = cluster.client.snapshot(Timestamp::MAX);
    assert_eq!(ok("get", snapshot.get("p").await), Some(b("old")));
    assert_eq!(cluster.log.names(), ["KvGet"]);
}

/// Three regions (`[.., h)`, `[h, q)`, `[q, ..)`) over `a`..`z`, with locks of three
/// transactions in different regions: `b` and `x` of a transaction whose primary `x` committed
/// (`b` locked), `j` of a live one that the reader pushes, `s` of an expired one.
async fn three_regions_with_locks(env: &dyn Env) -> TestCluster {
    let cluster = start_with(
        env,
        Layout {
            splits: vec![b"h".to_vec(), b"q".to_vec()],
            ..Layout::default()
        },
    )
    .await;
    let expired = cluster.write(|w| {
        let all: Vec<(String, String)> = (b'a'..=b'z')
            .map(|ch| ((ch as char).to_string(), format!("{}0", ch as char)))
            .collect();
        w.put(&all);
        w.lock_key(b"b", b"b1", b"x", b"x1", 3_000, true, false);
        w.lock_key(b"j", b"j1", b"k", b"k1", 60_000, false, false);
        let (expired, _) = w.lock_key(b"s", b"s1", b"t", b"t1", 1, false, false);
        expired
    });
    cluster.wait_past(env, expired, 1).await;
    cluster.log.take();
    cluster
}

/// What `a`..`z` read as after [`three_regions_with_locks`].
fn expected_after_locks() -> Vec<(String, String)> {
    (b'a'..=b'z')
        .map(|ch| {
            let value = match ch {
                b'b' | b'x' => format!("{}1", ch as char),
                _ => format!("{}0", ch as char),
            };
            ((ch as char).to_string(), value)
        })
        .collect()
}

/// A batch get over three regions with locks in each: one BatchGet per region, the locks
/// of all three transactions resolved (committed, pushed, rolled back), then only the
/// locked keys read again.
pub async fn batch_get_over_regions_with_locks_in_each(env: &dyn Env) {
    let cluster = three_regions_with_locks(env).await;
    let snapshot = cluster.snapshot().await;
    let keys: Vec<String> = (b'a'..=b'z').map(|ch| (ch as char).to_string()).collect();
    let found = ok("batch get", snapshot.batch_get(keys).await);
    assert_eq!(texts(&found), expected_after_locks());
    let log = cluster.log.take();
    let batch_gets: Vec<usize> = log
        .iter()
        .filter_map(|r| match r {
            StoreRequest::BatchGet(g) => Some(g.keys.len()),
            _ => None,
        })
        .collect();
    assert_eq!(&batch_gets[..3], [7, 9, 10], "one request per region first");
    // b; j and k (the pushed transaction's primary); s and t (the expired one's).
    assert_eq!(
        batch_gets[3..].iter().sum::<usize>(),
        5,
        "then the locked keys only"
    );
    assert_eq!(
        status_checks(&log).len(),
        3,
        "one status check per transaction"
    );
}

/// A scan of `a`..`z` across three regions with locks in each, in one go and in batches
/// of 4 (batches end inside regions and at their boundaries).
pub async fn scan_across_regions_with_locks(env: &dyn Env) {
    let cluster = three_regions_with_locks(env).await;
    let snapshot = cluster.snapshot().await;
    let all = ok("scan", snapshot.scan("a"..="z", 100).await);
    assert_eq!(texts(&all), expected_after_locks());
    let batched = drain(snapshot.scanner("a"..="z", 4)).await;
    assert_eq!(texts(&batched), expected_after_locks());
    let log = cluster.log.take();
    assert_eq!(
        status_checks(&log).len(),
        3,
        "the snapshot remembers what it learned"
    );
}

/// The same, scanned from the top down.
pub async fn reverse_scan_across_regions_with_locks(env: &dyn Env) {
    let cluster = three_regions_with_locks(env).await;
    let snapshot = cluster.snapshot().await;
    let mut expected = expected_after_locks();
    expected.reverse();
    let all = ok("reverse scan", snapshot.scan_reverse("a"..="z", 100).await);
    assert_eq!(texts(&all), expected);
    let batched = drain(snapshot.scanner("a"..="z", 4).reversed()).await;
    assert_eq!(texts(&batched), expected);
    let keys = drain(snapshot.scanner("a"..="z", 5).reversed().keys_only()).await;
    let expected_keys: Vec<Bytes> = (b'a'..=b'z').rev().map(|ch| b([ch])).collect();
    assert_eq!(
        keys.iter().map(|p| p.key.clone()).collect::<Vec<_>>(),
        expected_keys
    );
    assert!(keys.iter().all(|p| p.value.is_empty()));
}

/// Limits stop a scan in the middle of a region or across a boundary, in both directions,
/// and key-only scans return empty values, through the same locks.
pub async fn scan_limits_and_key_only(env: &dyn Env) {
    let cluster = three_regions_with_locks(env).await;
    let snapshot = cluster.snapshot().await;
    let expected = expected_after_locks();
    let first: Vec<KvPair> = ok("scan", snapshot.scan("a".., 3).await);
    assert_eq!(texts(&first), expected[..3]);
    let across = ok("scan", snapshot.scan("f".., 5).await);
    assert_eq!(texts(&across), expected[5..10]);
    let keys = ok("scan keys", snapshot.scan_keys("a".., 12).await);
    let expected_keys: Vec<Bytes> = (b'a'..b'a' + 12).map(|ch| b([ch])).collect();
    assert_eq!(keys, expected_keys);
    let top = ok("reverse scan", snapshot.scan_reverse("a".."t", 4).await);
    let mut expected_top: Vec<(String, String)> = expected[15..19].to_vec();
    expected_top.reverse();
    assert_eq!(texts(&top), expected_top);
    assert!(ok("scan", snapshot.scan("a".., 0).await).is_empty());
    assert!(ok("scan", snapshot.scan("m".."m", 10).await).is_empty());
}

/// Commit timestamps of values read through a lock of a committed transaction are that
/// transaction's (the read resolves the lock: TiKV does not read through locks when asked
/// for commit timestamps); an older snapshot sees the older value with its own timestamp.
pub async fn commit_timestamps_through_locks(env: &dyn Env) {
    let cluster = start(env).await;
    let (old_commit, between, new_commit) = cluster.write(|w: &mut Writer<'_>| {
        let (_, old_commit) = w.put(&[("k", "v1"), ("q", "q1")]);
        let between = w.ts();
        let (_, new_commit) = w.lock_key(b"k", b"v2", b"p", b"p2", 3_000, true, false);
        (old_commit, between, new_commit)
    });
    let ts = Timestamp::from_version;
    let old = cluster.client.snapshot(ts(between));
    assert_eq!(
        ok("get", old.get_with_commit_ts("k").await),
        Some((b("v1"), ts(old_commit)))
    );
    let snapshot = cluster.snapshot().await;
    assert_eq!(
        ok("get", snapshot.get_with_commit_ts("k").await),
        Some((b("v2"), ts(new_commit)))
    );
    let found = ok(
        "batch get",
        snapshot
            .batch_get_with_commit_ts(["k", "p", "q", "none"])
            .await,
    );
    let read: Vec<(Bytes, Bytes, Timestamp)> = found
        .into_iter()
        .map(|(pair, commit)| (pair.key, pair.value, commit))
        .collect();
    assert_eq!(
        read,
        [
            (b("k"), b("v2"), ts(new_commit)),
            (b("p"), b("p2"), ts(new_commit)),
            (b("q"), b("q1"), ts(old_commit)),
        ]
    );
    assert_no_locks(&cluster);
}

/// Reads in an API V2 keyspace see only that keyspace: data placed under the same user keys
/// in another keyspace is invisible, unbounded scans stop at the keyspace's end (reversed,
/// they start there), and locks (whose keys carry the keyspace prefix) are resolved.
pub async fn reads_in_an_api_v2_keyspace(env: &dyn Env) {
    let cluster = start_with(
        env,
        Layout {
            keyspace: Some("tenant1"),
            other_keyspaces: vec!["tenant0"],
            splits: vec![b"m".to_vec()],
            async_resolve_limit: None,
        },
    )
    .await;
    let other = cluster.other_spaces[0];
    assert_ne!(other, cluster.space);
    assert!(matches!(cluster.space, Space::Keyspace(_)));
    cluster.write_in(other, |w| {
        w.put(&[("a", "other"), ("k", "other"), ("z", "other")]);
    });
    cluster.write(|w| {
        w.put(&[("a", "a0"), ("k", "k0"), ("n", "n0"), ("z", "z0")]);
        // Committed primary in one region, its lock on `a` in the other.
        w.lock_key(b"a", b"a1", b"n", b"n1", 3_000, true, false);
        // A live transaction the reader pushes.
        w.lock_key(b"k", b"k1", b"z", b"z1", 60_000, false, false);
    });
    cluster.write_in(other, |w| {
        w.lock_key(b"b", b"b1", b"y", b"y1", 60_000, false, false);
    });
    let snapshot = cluster.snapshot().await;
    assert_eq!(ok("get", snapshot.get("a").await), Some(b("a1")));
    let found = ok(
        "batch get",
        snapshot.batch_get(["a", "b", "k", "n", "z"]).await,
    );
    let expected = pairs(&[("a", "a1"), ("k", "k0"), ("n", "n1"), ("z", "z0")]);
    assert_eq!(texts(&found), expected);
    let scanned = ok("scan", snapshot.scan::<[u8]>(.., 100).await);
    assert_eq!(texts(&scanned), expected);
    let mut reversed = expected.clone();
    reversed.reverse();
    let scanned = ok("reverse scan", snapshot.scan_reverse::<[u8]>(.., 100).await);
    assert_eq!(texts(&scanned), reversed);
    let batched = drain(snapshot.scanner::<[u8]>(.., 1)).await;
    assert_eq!(texts(&batched), expected);
    // The other keyspace's lock was never met; this keyspace's committed one is resolved.
    let left = cluster.write(|w| w.scan_locks(b"", b"", u64::MAX));
    assert_eq!(
        left.len(),
        2,
        "only the pushed transaction's locks are left: {left:?}"
    );
    let other_locks = cluster.write_in(other, |w| w.scan_locks(b"", b"", u64::MAX));
    assert_eq!(other_locks.len(), 2);
}
