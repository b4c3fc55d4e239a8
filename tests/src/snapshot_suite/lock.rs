//! The read and lock-resolution tests of `integration_tests/lock_test.go`, ported.
//!
//! client-go's `lockKey`, `putKV` and `mustGetLock` are the [`Writer`]'s `lock_key`, `put`
//! and `must_get_lock` (or, where the test is about our committer or the key is its own
//! primary, `lock_own_key` and `put_kv` through the client); its
//! `LockResolver.ResolveLocks`, `ResolveLocksForRead`, `GetTxnStatus` and
//! `ForceResolveLock` are [`Client::resolve_locks`](tikv_core::Client::resolve_locks),
//! [`resolve_locks_for_read`](tikv_core::Client::resolve_locks_for_read),
//! [`get_txn_status`](tikv_core::Client::get_txn_status) and
//! [`force_resolve_lock`](tikv_core::Client::force_resolve_lock); the probe's
//! `SendTxnHeartbeat` is the writer's `txn_heartbeat`. Tests that need pessimistic lock
//! waits and the GC-side `BatchResolveLocks` are listed in docs/porting.md.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tikv_core::error::{KeyError, LockInfo};
use tikv_core::rpc::StoreRequest;
use tikv_core::transaction::TransactionOptions;
use tikv_core::{CommitKnobs, Error, Timestamp, TxnAction};
use tikv_proto::kvrpcpb;
use tikv_sim::faults::{FaultAction, FaultRule};

use super::{Env, Layout, PATIENCE, TestCluster, b, ok, start, start_with, texts};
use crate::txn_fixture::{Prewrite, Writer};

fn key(name: &str) -> Bytes {
    b(format!("~lock_{name}"))
}

fn alphabet_key(ch: u8) -> Bytes {
    key(&(ch as char).to_string())
}

fn lock_info(info: &kvrpcpb::LockInfo) -> LockInfo {
    LockInfo::from_proto(info)
}

/// client-go's `putAlphabets` and `prepareAlphabetLocks`: `a`..`z` committed, then
/// - `c` overwritten by a transaction whose primary `z1` committed (its lock on `c` stays),
/// - `d` and `foo` locked by transactions that never commit (primaries `z2`, `z3`),
/// - `bar` written, then deleted by a transaction whose primary `z4` committed.
fn prepare_alphabet_locks(w: &mut Writer<'_>) {
    for ch in b'a'..=b'z' {
        w.put(&[(alphabet_key(ch), [ch])]);
    }
    w.put(&[(key("c"), "cc")]);
    w.lock_key(&key("c"), b"c", &key("z1"), b"z1", 3_000, true, false);
    w.lock_key(&key("d"), b"dd", &key("z2"), b"z2", 3_000, false, false);
    w.lock_key(&key("foo"), b"foo", &key("z3"), b"z3", 3_000, false, false);
    w.put(&[(key("bar"), "bar")]);
    w.lock_key(&key("bar"), b"", &key("z4"), b"z4", 3_000, true, false);
}

/// `TestScanLockResolveWithGet`: point gets of `a`..`z` through the locks read the
/// committed values.
pub async fn test_scan_lock_resolve_with_get(env: &dyn Env) {
    let cluster = start(env).await;
    cluster.write(prepare_alphabet_locks);
    let snapshot = cluster.snapshot().await;
    for ch in b'a'..=b'z' {
        let value = ok("get", snapshot.get(alphabet_key(ch)).await);
        assert_eq!(value, Some(b([ch])), "key {}", ch as char);
    }
}

/// `TestScanLockResolveWithSeek`: a scan from `a` through the locks finds `a`..`z` with
/// their committed values (and nothing of the uncommitted or deleted keys in between).
pub async fn test_scan_lock_resolve_with_seek(env: &dyn Env) {
    let cluster = start(env).await;
    cluster.write(prepare_alphabet_locks);
    let snapshot = cluster.snapshot().await;
    let pairs = ok("scan", snapshot.scan(key("a").., 26).await);
    let expected: Vec<(String, String)> = (b'a'..=b'z')
        .map(|ch| (format!("~lock_{}", ch as char), (ch as char).to_string()))
        .collect();
    assert_eq!(texts(&pairs), expected);
}

/// `TestScanLockResolveWithSeekKeyOnly`: the same scan, key-only.
pub async fn test_scan_lock_resolve_with_seek_key_only(env: &dyn Env) {
    let cluster = start(env).await;
    cluster.write(prepare_alphabet_locks);
    let snapshot = cluster.snapshot().await;
    let keys = ok("scan keys", snapshot.scan_keys(key("a").., 26).await);
    let expected: Vec<Bytes> = (b'a'..=b'z').map(alphabet_key).collect();
    assert_eq!(keys, expected);
}

/// `TestScanLockResolveWithBatchGet`: one batch get of `a`..`z` through the locks.
pub async fn test_scan_lock_resolve_with_batch_get(env: &dyn Env) {
    let cluster = start(env).await;
    cluster.write(prepare_alphabet_locks);
    let snapshot = cluster.snapshot().await;
    let pairs = ok(
        "batch get",
        snapshot.batch_get((b'a'..=b'z').map(alphabet_key)).await,
    );
    assert_eq!(pairs.len(), 26);
    for (pair, ch) in pairs.iter().zip(b'a'..=b'z') {
        assert_eq!(pair.key, alphabet_key(ch));
        assert_eq!(pair.value, b([ch]));
    }
}

/// `TestCheckTxnStatus` (the resolver part; the status checks go straight to the cluster):
/// a live lock is reported with time left; the same lock with TTL 0 is rolled back; the
/// transaction then reads as rolled back, and a committed one as committed.
///
/// The lock lives 60 s instead of Go's 1 s, so a slow machine cannot expire it early.
pub async fn test_check_txn_status(env: &dyn Env) {
    let cluster = start(env).await;
    let (primary, second) = (key("key"), key("second"));
    let start_ts = cluster.write(|w| {
        let start_ts = w.ts();
        w.prewrite(
            &Prewrite::new(start_ts, &primary)
                .put(&primary, "value")
                .put(&second, "xxx")
                .ttl(60_000),
        );
        start_ts
    });
    let current_ts = cluster.ts().await;
    assert!(current_ts.version() > start_ts);

    // The resolver's status check of a live transaction pushes it.
    let status =
        cluster.write(|w| w.check_txn_status(&primary, start_ts, current_ts.version(), true));
    assert_eq!(status.commit_version, 0);
    assert!(status.lock_ttl > 0);
    assert_eq!(status.action, kvrpcpb::Action::MinCommitTsPushed as i32);

    let mut lock = lock_info(&cluster.write(|w| w.must_get_lock(&second)));
    let outcome = ok(
        "resolve locks",
        cluster
            .client
            .resolve_locks(current_ts, vec![lock.clone()])
            .await,
    );
    assert!(outcome.ms_before_expiry > 0);

    // TTL 0 rolls the transaction back whatever its lock says.
    lock.ttl_ms = 0;
    let outcome = ok(
        "resolve locks",
        cluster.client.resolve_locks(current_ts, vec![lock]).await,
    );
    assert_eq!(outcome.ms_before_expiry, 0);

    let status = cluster.write(|w| w.check_txn_status(&primary, start_ts, 0, true));
    assert_eq!(status.lock_ttl, 0);
    assert_eq!(status.commit_version, 0);
    assert_eq!(status.action, kvrpcpb::Action::NoAction as i32);
    // The secondary went with it.
    assert!(
        cluster
            .write(|w| w.scan_locks(&key(""), b"", u64::MAX))
            .is_empty()
    );

    let (start_ts, commit_ts) = cluster.write(|w| w.put(&[(key("a"), "a")]));
    let status =
        cluster.write(|w| w.check_txn_status(&key("a"), start_ts, current_ts.version(), true));
    assert_eq!(status.lock_ttl, 0);
    assert_eq!(status.commit_version, commit_ts);
}

/// `TestZeroMinCommitTS`: a lock with `min_commit_ts` 0 (an old client's, which must not be
/// pushed) blocks a read at timestamp 0 with time left, is skipped by a read at the latest
/// timestamp, and goes with TTL 0.
pub async fn test_zero_min_commit_ts(env: &dyn Env) {
    let cluster = start(env).await;
    let primary = key("key");
    let start_ts = cluster.write(|w| {
        let start_ts = w.ts();
        w.prewrite(
            &Prewrite::new(start_ts, &primary)
                .put(&primary, "value")
                .ttl(60_000)
                .min_commit_ts(0),
        );
        start_ts
    });
    let mut lock = lock_info(&cluster.write(|w| w.must_get_lock(&primary)));

    let outcome = ok(
        "resolve for read",
        cluster
            .client
            .resolve_locks_for_read(Timestamp::ZERO, vec![lock.clone()])
            .await,
    );
    assert!(outcome.sets.resolved.is_empty());
    assert!(outcome.ms_before_expiry > 0);

    let outcome = ok(
        "resolve for read",
        cluster
            .client
            .resolve_locks_for_read(Timestamp::MAX, vec![lock.clone()])
            .await,
    );
    assert_eq!(
        outcome.sets.resolved,
        vec![Timestamp::from_version(start_ts)]
    );
    assert_eq!(outcome.ms_before_expiry, 0);

    lock.ttl_ms = 0;
    let outcome = ok(
        "resolve locks",
        cluster
            .client
            .resolve_locks(Timestamp::ZERO, vec![lock])
            .await,
    );
    assert_eq!(outcome.ms_before_expiry, 0);
    assert!(!cluster.write(|w| w.is_locked(&primary)));
}

/// client-go's `prepareTxnFallenBackFromAsyncCommit`: `fb1`, the primary, prewritten with
/// async commit listing `fb2`; `fb2` prewritten with a `max_commit_ts` below the start, so
/// TiKV falls back to 2PC for it (a lock without async commit). TTL 1 ms.
fn prepare_txn_fallen_back_from_async_commit(w: &mut Writer<'_>) -> u64 {
    let (fb1, fb2) = (key("fb1"), key("fb2"));
    let start_ts = w.ts();
    let first = w.prewrite(
        &Prewrite::new(start_ts, &fb1)
            .put(&fb1, "1")
            .ttl(1)
            .async_commit()
            .secondaries(&[&fb2]),
    );
    assert!(
        first.min_commit_ts > 0,
        "fb1 was not prewritten with async commit"
    );
    let second = w.prewrite(
        &Prewrite::new(start_ts, &fb1)
            .put(&fb2, "2")
            .ttl(1)
            .async_commit()
            .secondaries(&[&fb2])
            .max_commit_ts(start_ts - 1),
    );
    assert_eq!(
        second.min_commit_ts, 0,
        "fb2 did not fall back from async commit"
    );
    start_ts
}

/// `TestResolveTxnFallenBackFromAsyncCommit`: resolving the async-commit primary lock finds
/// a secondary that fell back to 2PC, checks the transaction again as 2PC and rolls it back.
pub async fn test_resolve_txn_fallen_back_from_async_commit(env: &dyn Env) {
    let cluster = start(env).await;
    let start_ts = cluster.write(prepare_txn_fallen_back_from_async_commit);
    cluster.wait_past(env, start_ts, 1).await;
    let lock = lock_info(&cluster.write(|w| w.must_get_lock(&key("fb1"))));
    assert!(lock.use_async_commit);
    cluster.log.take();

    // Go loops until the answer is 0; the lock expired before the first call.
    let outcome = ok(
        "resolve locks",
        cluster
            .client
            .resolve_locks(Timestamp::ZERO, vec![lock])
            .await,
    );
    assert_eq!(outcome.ms_before_expiry, 0);
    let names = cluster.log.names();
    assert!(names.contains(&"KvCheckSecondaryLocks"), "{names:?}");
    let checks: Vec<bool> = cluster
        .log
        .all()
        .iter()
        .filter_map(|r| match r {
            StoreRequest::CheckTxnStatus(c) => Some(c.force_sync_commit),
            _ => None,
        })
        .collect();
    assert_eq!(
        checks,
        [false, true],
        "the second check forces the 2PC path"
    );

    let snapshot = cluster.snapshot().await;
    assert_eq!(ok("get", snapshot.get(key("fb1")).await), None);
    assert_eq!(ok("get", snapshot.get(key("fb2")).await), None);
}

/// `TestResolveLocksForRead`: resolving locks for a read sorts the transactions into those
/// the read may skip (rolled back, pushed, committed after the read) and those it may read
/// through (committed before it, also after recovering an expired async commit), and
/// reports time left for the one it must wait for (live async commit, which cannot be
/// pushed).
///
/// The live async-commit lock lives 60 s instead of Go's 3 s; the expired one has TTL 1 ms
/// and the test waits until the cluster's clock passed it (Go sleeps 500 ms). The
/// transaction committed after the read has its primary (`k66`) committed and its secondary
/// `k6` still locked, which is what the Go test's comment describes.
pub async fn test_resolve_locks_for_read(env: &dyn Env) {
    let cluster = start(env).await;
    let mut resolved = Vec::new();
    let mut committed = Vec::new();
    let mut locks = Vec::new();
    let ts = Timestamp::from_version;

    // Committed before the read.
    let (start1, _) =
        cluster.write(|w| w.lock_key(&key("k1"), b"v1", &key("k11"), b"v11", 3_000, true, false));
    committed.push(ts(start1));
    locks.push(lock_info(&cluster.write(|w| w.must_get_lock(&key("k1")))));

    // Rolled back (by resolving its primary's lock with TTL 0).
    let (start2, _) =
        cluster.write(|w| w.lock_key(&key("k2"), b"v2", &key("k22"), b"v22", 3_000, false, false));
    let mut primary_lock = lock_info(&cluster.write(|w| w.must_get_lock(&key("k22"))));
    primary_lock.ttl_ms = 0;
    ok(
        "force resolve",
        cluster
            .client
            .resolve_locks(Timestamp::ZERO, vec![primary_lock])
            .await,
    );
    resolved.push(ts(start2));
    locks.push(lock_info(&cluster.write(|w| w.must_get_lock(&key("k2")))));

    // Pushed.
    let (start3, _) =
        cluster.write(|w| w.lock_key(&key("k3"), b"v3", &key("k33"), b"v33", 3_000, false, false));
    resolved.push(ts(start3));
    locks.push(lock_info(&cluster.write(|w| w.must_get_lock(&key("k3")))));

    // Cannot be pushed (async commit) and alive.
    cluster.write(|w| w.lock_key(&key("k4"), b"v4", &key("k44"), b"v44", 60_000, false, true));
    locks.push(lock_info(&cluster.write(|w| w.must_get_lock(&key("k4")))));

    // Cannot be pushed but expired: recovered as committed.
    let (start5, _) =
        cluster.write(|w| w.lock_key(&key("k5"), b"v5", &key("k55"), b"v55", 1, false, true));
    committed.push(ts(start5));
    locks.push(lock_info(&cluster.write(|w| w.must_get_lock(&key("k5")))));

    // Committed after the read.
    let (start6, read_ts) = cluster.write(|w| {
        let start6 = w.ts();
        let (k6, k66) = (key("k6"), key("k66"));
        w.prewrite(&Prewrite::new(start6, &k66).put(&k6, "v6").put(&k66, "v66"));
        let read_ts = w.ts();
        let commit_ts = w.ts();
        assert!(commit_ts > read_ts);
        w.commit(start6, &[&k66], commit_ts);
        (start6, read_ts)
    });
    resolved.push(ts(start6));
    locks.push(lock_info(&cluster.write(|w| w.must_get_lock(&key("k6")))));

    cluster.wait_past(env, start5, 1).await;
    let outcome = ok(
        "resolve for read",
        cluster
            .client
            .resolve_locks_for_read(ts(read_ts), locks)
            .await,
    );
    assert!(outcome.ms_before_expiry > 0);
    assert_eq!(outcome.sets.resolved, resolved);
    assert_eq!(outcome.sets.committed, committed);
}

/// One transaction of `TestBatchLiteResolveLocksByRegion`: `primary` and `secondaries`
/// prewritten with `txn_size`, the primary committed; returns the start and commit
/// timestamps and the secondaries' locks.
fn prepare_lite_txn(
    w: &mut Writer<'_>,
    primary: &Bytes,
    secondaries: &[Bytes],
    txn_size: u64,
) -> (u64, u64, Vec<LockInfo>) {
    let start_ts = w.ts();
    let mut prewrite = Prewrite::new(start_ts, primary)
        .put(primary, "primary_value")
        .txn_size(txn_size);
    for (i, key) in secondaries.iter().enumerate() {
        prewrite = prewrite.put(key, format!("secondary_value_{i}"));
    }
    w.prewrite(&prewrite);
    let commit_ts = w.ts();
    w.commit(start_ts, &[primary], commit_ts);
    let locks = secondaries
        .iter()
        .map(|key| lock_info(&w.must_get_lock(key)))
        .collect();
    (start_ts, commit_ts, locks)
}

/// The ResolveLock requests in `requests`, by transaction: (commit version, keys, region).
fn resolve_requests(requests: &[StoreRequest]) -> BTreeMap<u64, Vec<(u64, Vec<Bytes>, u64)>> {
    let mut by_txn: BTreeMap<u64, Vec<(u64, Vec<Bytes>, u64)>> = BTreeMap::new();
    for request in requests {
        if let StoreRequest::ResolveLock(r) = request {
            let region = r.context.as_ref().map_or(0, |c| c.region_id);
            by_txn.entry(r.start_version).or_default().push((
                r.commit_version,
                r.keys.clone(),
                region,
            ));
        }
    }
    by_txn
}

/// Waits until the client has no operation running: a reader's cleanups run on in the
/// background after its resolution answered.
async fn wait_for_background_cleanups(env: &dyn Env, cluster: &TestCluster) {
    let started = Instant::now();
    while ok("ops in flight", cluster.client.ops_in_flight().await) > 0 {
        assert!(started.elapsed() < PATIENCE, "cleanups still running");
        env.sleep(Duration::from_millis(2)).await;
    }
}

/// `TestBatchLiteResolveLocksByRegion`, for a writer and for a reader: the locks of a small
/// transaction spanning two regions are resolved with one ResolveLock per region carrying
/// its keys, a small one-key transaction with one carrying its key, and a big transaction
/// (size over the lite threshold, 512) with one region-wide ResolveLock without keys; every
/// lock is gone afterwards. A reader's cleanups run in the background, as in Go: the test
/// waits until the client is idle before it looks.
pub async fn test_batch_lite_resolve_locks_by_region(env: &dyn Env) {
    let cluster = start(env).await;
    for (name, for_read) in [("write", false), ("for_read", true)] {
        let k = |suffix: &str| b(format!("batch_lite_{name}_{suffix}"));
        ok(
            "split",
            cluster
                .client
                .regions()
                .split_regions(vec![k("multi_m")], false)
                .await,
        );
        let multi_keys = vec![k("multi_a1"), k("multi_a2"), k("multi_z1")];
        let single_keys = vec![k("single_secondary")];
        let region_keys = vec![k("region_secondary")];
        let (multi_txn, multi_commit, mut multi_locks) =
            cluster.write(|w| prepare_lite_txn(w, &k("multi_primary"), &multi_keys, 4));
        let (single_txn, single_commit, mut single_locks) =
            cluster.write(|w| prepare_lite_txn(w, &k("single_primary"), &single_keys, 2));
        let (region_txn, region_commit, mut region_locks) =
            cluster.write(|w| prepare_lite_txn(w, &k("region_primary"), &region_keys, 513));
        // Pin the sizes the resolver branches on, as the Go test does.
        for lock in multi_locks.iter_mut().chain(single_locks.iter_mut()) {
            lock.txn_size = 511;
        }
        for lock in &mut region_locks {
            lock.txn_size = 513;
        }
        let region1 = cluster.region_of(&multi_keys[0]);
        let region2 = cluster.region_of(&multi_keys[2]);
        assert_ne!(region1, region2);

        let mut locks = multi_locks;
        locks.extend(single_locks);
        locks.extend(region_locks);
        cluster.log.take();
        let outcome = if for_read {
            let caller = cluster.ts().await;
            ok(
                "resolve for read",
                cluster.client.resolve_locks_for_read(caller, locks).await,
            )
        } else {
            ok(
                "resolve",
                cluster.client.resolve_locks(Timestamp::ZERO, locks).await,
            )
        };
        assert_eq!(outcome.ms_before_expiry, 0);
        wait_for_background_cleanups(env, &cluster).await;

        let by_txn = resolve_requests(&cluster.log.take());
        assert_eq!(by_txn.len(), 3, "{by_txn:?}");
        let multi = &by_txn[&multi_txn];
        assert_eq!(multi.len(), 2, "one request per region: {multi:?}");
        let mut multi_resolved = BTreeSet::new();
        let mut multi_regions = BTreeSet::new();
        for (commit, keys, region) in multi {
            assert_eq!(*commit, multi_commit);
            assert!(!keys.is_empty());
            multi_resolved.extend(keys.iter().cloned());
            multi_regions.insert(*region);
        }
        assert_eq!(multi_resolved, multi_keys.iter().cloned().collect());
        assert_eq!(multi_regions, BTreeSet::from([region1, region2]));

        let single = &by_txn[&single_txn];
        assert_eq!(single.len(), 1);
        assert_eq!(single[0].0, single_commit);
        assert_eq!(single[0].1, single_keys);

        let region = &by_txn[&region_txn];
        assert_eq!(region.len(), 1);
        assert_eq!(region[0].0, region_commit);
        assert!(
            region[0].1.is_empty(),
            "a big transaction resolves region-wide"
        );

        let remaining = cluster.write(|w| w.scan_locks(&k(""), &k("\u{7f}"), u64::MAX));
        assert!(remaining.is_empty(), "{remaining:?}");
    }
}

/// `TestBatchLiteResolveLocksForReadIgnoresInlineCleanupError`: with no room for cleanups
/// in the background (Go's `SetAsyncResolvePoolSize(0)`, here an async resolve limit of 0)
/// the reader's cleanup runs inline; once the status check found the transaction
/// committed, the reader may read through its lock even when that cleanup (ResolveLock)
/// fails; the lock stays for later. Go injects a timeout into the cleanup RPC; here the
/// cluster answers it once with a key error (a transport error would be retried and
/// succeed).
pub async fn test_batch_lite_resolve_locks_for_read_ignores_inline_cleanup_error(env: &dyn Env) {
    let cluster = start_with(
        env,
        Layout {
            async_resolve_limit: Some(0),
            ..Layout::default()
        },
    )
    .await;
    let (k, primary) = (
        key("batch_lite_for_read_fallback_key"),
        key("batch_lite_for_read_fallback_primary"),
    );
    let (start_ts, _) =
        cluster.write(|w| w.lock_key(&k, b"value", &primary, b"primary_value", 3_000, true, false));
    let mut lock = lock_info(&cluster.write(|w| w.must_get_lock(&k)));
    lock.txn_size = 1;
    let caller = cluster.ts().await;
    cluster.server.with(|sim| {
        sim.faults.inject(FaultRule::command(
            "KvResolveLock",
            FaultAction::KeyError(Box::new(kvrpcpb::KeyError {
                abort: "injected cleanup failure".to_owned(),
                ..Default::default()
            })),
            1,
        ));
    });
    cluster.log.take();
    let outcome = ok(
        "resolve for read",
        cluster
            .client
            .resolve_locks_for_read(caller, vec![lock.clone()])
            .await,
    );
    assert_eq!(outcome.ms_before_expiry, 0);
    assert!(outcome.sets.resolved.is_empty());
    assert_eq!(
        outcome.sets.committed,
        vec![Timestamp::from_version(start_ts)]
    );
    // Inline: the cleanup was sent (and failed) before the resolution answered.
    assert_eq!(
        cluster.server.with(|sim| sim.faults.active()),
        0,
        "the fault fired"
    );
    assert_eq!(cluster.log.count("KvResolveLock"), 1);

    // The lock is still there; a writer's resolution cleans it up.
    let remaining = lock_info(&cluster.write(|w| w.must_get_lock(&k)));
    let now = cluster.ts().await;
    ok(
        "resolve",
        cluster.client.resolve_locks(now, vec![remaining]).await,
    );
    let snapshot = cluster.snapshot().await;
    assert_eq!(ok("get", snapshot.get(k.clone()).await), Some(b("value")));
    assert!(!cluster.write(|w| w.is_locked(&k)));
}

/// `TestCheckTxnStatusSentToSecondary` (testLockWithTiKVSuite): a stale pessimistic lock
/// whose primary is now a secondary of the committed transaction (TiKV answers its status
/// check with PrimaryMismatch) is rolled back, and reads see the transaction's values.
///
/// The state the Go test builds with a pessimistic transaction whose first LockKeys failed
/// is placed directly: `k2` pessimistically locked with primary `k1`; `k1` and `k3`
/// pessimistically locked with primary `k3`, prewritten, and only `k3` committed. Go
/// triggers the resolution with another transaction's lock request on `k2`; here the lock
/// is resolved directly (a read would not meet it: pessimistic locks do not block reads).
pub async fn test_check_txn_status_sent_to_secondary(env: &dyn Env) {
    let cluster = start(env).await;
    let (k1, k2, k3) = (
        key("rollback_read_k1"),
        key("rollback_read_k2"),
        key("rollback_read_k3"),
    );
    cluster.write(|w| {
        w.put(&[(&k3, "v3")]);
        let start_ts = w.ts();
        w.pessimistic_lock(start_ts, start_ts, &k1, &[&k2], 3_000);
        let for_update_ts = w.ts();
        w.pessimistic_lock(start_ts, for_update_ts, &k3, &[&k3, &k1], 3_000);
        w.prewrite(
            &Prewrite::new(start_ts, &k3)
                .put(&k1, "v1-1")
                .put(&k3, "v3-1")
                .pessimistic(for_update_ts, &[&k1, &k3]),
        );
        let commit_ts = w.ts();
        w.commit(start_ts, &[&k3], commit_ts);
    });
    let stale = cluster
        .write(|w| w.scan_locks(&k2, &key("rollback_read_k3"), u64::MAX))
        .into_iter()
        .find(|lock| lock.key == k2)
        .unwrap_or_else(|| panic!("k2 is not locked"));
    assert_eq!(stale.lock_type, kvrpcpb::Op::PessimisticLock as i32);
    cluster.log.take();

    let now = cluster.ts().await;
    ok(
        "resolve",
        cluster
            .client
            .resolve_locks(now, vec![lock_info(&stale)])
            .await,
    );
    assert_eq!(
        cluster.log.names(),
        ["KvCheckTxnStatus", "KVPessimisticRollback"]
    );
    let k2_locks: Vec<_> = cluster
        .write(|w| w.scan_locks(&k2, &k3, u64::MAX))
        .into_iter()
        .filter(|lock| lock.key == k2)
        .collect();
    assert!(k2_locks.is_empty(), "the stale lock is still there");

    let snapshot = cluster.snapshot().await;
    assert_eq!(ok("get", snapshot.get(k3).await), Some(b("v3-1")));
    assert_eq!(ok("get", snapshot.get(k2).await), None);
    assert_eq!(ok("get", snapshot.get(k1).await), Some(b("v1-1")));
}

/// `TestResolveLockWithTiKVSideAsync` (a real-cluster test in Go): a batch get meeting the
/// secondaries of a big transaction whose primary committed (or expired and was rolled
/// back) resolves them with region-wide ResolveLock requests (no keys, the transaction's
/// commit timestamp or 0), and every key then reads as the transaction left it.
///
/// The transaction's locks record a size over the lite threshold (513; Go lowers the
/// threshold to 16 instead). Ours resolves before the read returns, so no waiting for the
/// locks to go is needed.
pub async fn test_resolve_lock_with_tikv_side_async(env: &dyn Env) {
    for commit_primary in [true, false] {
        let cluster = start(env).await;
        let name = if commit_primary {
            "primary_commit"
        } else {
            "primary_rollback"
        };
        let keys: Vec<Bytes> = (0..20)
            .map(|i| key(&format!("resolve_lock_{name}_{i:03}")))
            .collect();
        let values: Vec<Bytes> = (0..20).map(|i| b(format!("value_{name}_{i:03}"))).collect();
        let ttl = if commit_primary { 3_000 } else { 1 };
        let (start_ts, commit_ts) = cluster.write(|w| {
            let start_ts = w.ts();
            let mut prewrite = Prewrite::new(start_ts, &keys[0]).ttl(ttl).txn_size(513);
            for (key, value) in keys.iter().zip(&values) {
                prewrite = prewrite.put(key, value);
            }
            w.prewrite(&prewrite);
            if !commit_primary {
                return (start_ts, 0);
            }
            let commit_ts = w.ts();
            w.commit(start_ts, &[&keys[0]], commit_ts);
            (start_ts, commit_ts)
        });
        if !commit_primary {
            cluster.wait_past(env, start_ts, ttl).await;
            let status = cluster.write(|w| {
                let now = w.ts();
                w.check_txn_status(&keys[0], start_ts, now, true)
            });
            assert_eq!(status.action, kvrpcpb::Action::TtlExpireRollback as i32);
        }
        let end = key(&format!("resolve_lock_{name}_\u{7f}"));
        let locks = cluster.write(|w| w.scan_locks(&keys[0], &end, u64::MAX));
        assert_eq!(
            locks.len(),
            keys.len() - 1,
            "only the primary lock is resolved"
        );

        cluster.log.take();
        let snapshot = cluster.snapshot().await;
        let found = ok("batch get", snapshot.batch_get(keys.clone()).await);
        if commit_primary {
            assert_eq!(found.len(), keys.len());
        } else {
            assert!(found.is_empty());
        }
        assert!(
            cluster
                .write(|w| w.scan_locks(&keys[0], &end, u64::MAX))
                .is_empty()
        );

        let log = cluster.log.take();
        let checks = log
            .iter()
            .filter(|r| matches!(r, StoreRequest::CheckTxnStatus(_)))
            .count();
        assert_eq!(checks, 1, "one status check for the whole transaction");
        let requests = resolve_requests(&log);
        let sent = requests.get(&start_ts).cloned().unwrap_or_default();
        assert!(!sent.is_empty(), "no ResolveLock was sent");
        for (commit, request_keys, _) in &sent {
            assert!(request_keys.is_empty(), "not region-wide: {request_keys:?}");
            assert_eq!(*commit, commit_ts);
        }

        let snapshot = cluster.snapshot().await;
        for (key, value) in keys.iter().zip(&values) {
            let read = ok("get", snapshot.get(key.clone()).await);
            if commit_primary {
                assert_eq!(read.as_ref(), Some(value));
            } else {
                assert_eq!(read, None);
            }
        }
    }
}

/// A transaction whose commit stops once every key is prewritten, leaving its locks with
/// TTL `ttl_ms` (`None`: the TTL our committer computes), as client-go's tests do with a
/// committer probe's `PrewriteAllMutations`.
fn prewrite_only(ttl_ms: Option<u64>) -> TransactionOptions {
    TransactionOptions::new().with_testing_knobs(CommitKnobs {
        stop_after_prewrite: true,
        lock_ttl_ms: ttl_ms,
        ..CommitKnobs::default()
    })
}

/// client-go's `lockKey` for a key that is its own primary, through our committer: `key`
/// written with locks of TTL `ttl_ms`, then committed or left locked. Returns the start
/// timestamp and, when committed, the commit timestamp.
async fn lock_own_key(
    cluster: &TestCluster,
    key: &Bytes,
    value: impl Into<Bytes>,
    ttl_ms: u64,
    commit: bool,
) -> (Timestamp, Option<Timestamp>) {
    let options = if commit {
        TransactionOptions::new().with_testing_knobs(CommitKnobs {
            lock_ttl_ms: Some(ttl_ms),
            ..CommitKnobs::default()
        })
    } else {
        prewrite_only(Some(ttl_ms))
    };
    let mut txn = ok("begin", cluster.client.begin_with(options).await);
    ok("put", txn.put(key.clone(), value));
    let commit_ts = ok("commit", txn.commit().await);
    let start_ts = txn.start_ts();
    if commit {
        let commit_ts = commit_ts.unwrap_or_else(|| panic!("nothing committed"));
        assert!(commit_ts > start_ts);
        (start_ts, Some(commit_ts))
    } else {
        (start_ts, None)
    }
}

/// client-go's `putKV` through the client: returns the start and commit timestamps.
async fn put_kv(
    cluster: &TestCluster,
    key: &Bytes,
    value: impl Into<Bytes>,
) -> (Timestamp, Timestamp) {
    let mut txn = ok("begin", cluster.client.begin().await);
    ok("put", txn.put(key.clone(), value));
    let commit_ts = ok("commit", txn.commit().await);
    let commit_ts = commit_ts.unwrap_or_else(|| panic!("nothing committed"));
    (txn.start_ts(), commit_ts)
}

/// `TestCleanLock`: a transaction writing 26 keys, each locked by a transaction that never
/// commits (TTL 3 s, as in Go: the commit must wait for the locks to expire, however long
/// that takes), commits once it has rolled them back. Go stops at the commit; this also
/// reads the values back and finds no lock left.
pub async fn test_clean_lock(env: &dyn Env) {
    let cluster = start(env).await;
    for ch in b'a'..=b'z' {
        let k = alphabet_key(ch);
        lock_own_key(&cluster, &k, k.clone(), 3_000, false).await;
    }
    let mut txn = ok("begin", cluster.client.begin().await);
    for ch in b'a'..=b'z' {
        ok("put", txn.put(alphabet_key(ch), vec![ch + 1]));
    }
    ok("commit", txn.commit().await);

    let snapshot = cluster.snapshot().await;
    for ch in b'a'..=b'z' {
        let value = ok("get", snapshot.get(alphabet_key(ch)).await);
        assert_eq!(value, Some(b([ch + 1])), "key {}", ch as char);
    }
    let locks = cluster.write(|w| w.scan_locks(&key(""), b"", u64::MAX));
    assert!(locks.is_empty(), "{locks:?}");
}

/// `TestGetTxnStatus`: the status of a committed transaction (written plainly, and with
/// the TTL set) is its commit timestamp; a transaction left prewritten is alive, with TTL
/// left. Its lock lives 60 s instead of Go's 3 s, so a slow machine cannot expire it.
pub async fn test_get_txn_status(env: &dyn Env) {
    let cluster = start(env).await;
    let a = key("a");
    let (start_ts, commit_ts) = put_kv(&cluster, &a, "a").await;
    let status = ok(
        "status",
        cluster
            .client
            .get_txn_status(start_ts, start_ts, a.clone())
            .await,
    );
    assert!(status.is_committed());
    assert_eq!(status.commit_ts, Some(commit_ts));

    let (start_ts, commit_ts) = lock_own_key(&cluster, &a, "a", 3_000, true).await;
    let status = ok(
        "status",
        cluster
            .client
            .get_txn_status(start_ts, start_ts, a.clone())
            .await,
    );
    assert!(status.is_committed());
    assert_eq!(status.commit_ts, commit_ts);

    let (start_ts, _) = lock_own_key(&cluster, &a, "a", 60_000, false).await;
    let status = ok(
        "status",
        cluster
            .client
            .get_txn_status(start_ts, start_ts, a.clone())
            .await,
    );
    assert!(!status.is_committed());
    assert!(status.ttl_ms > 0, "action {:?}", status.action);
    assert!(status.is_alive());
}

/// `TestCheckTxnStatusTTL`: a prewritten transaction is alive with TTL left and no commit
/// timestamp; forcing its lock rolls it back, after which its status is rolled back (TTL
/// 0, no commit timestamp, TiKV's `NoAction`); a committed transaction has its commit
/// timestamp.
///
/// The lock lives 60 s instead of Go's 1 s past the transaction's age. Go checks the
/// rolled-back status with another `LockResolver` than the one that forced the lock; here
/// another client does (this client's resolver answers from its cache, which keeps the
/// action its own check caused, `TtlExpireRollback`).
pub async fn test_check_txn_status_ttl(env: &dyn Env) {
    let cluster = start(env).await;
    let k = key("key");
    let (start_ts, _) = lock_own_key(&cluster, &k, "value", 60_000, false).await;
    let caller = cluster.ts().await;

    let status = ok(
        "status",
        cluster
            .client
            .get_txn_status(start_ts, caller, k.clone())
            .await,
    );
    assert!(!status.is_committed());
    assert!(status.ttl_ms > 0);
    assert_eq!(status.commit_ts, None);

    let lock = lock_info(&cluster.write(|w| w.must_get_lock(&k)));
    let outcome = ok(
        "force resolve",
        cluster.client.force_resolve_lock(lock).await,
    );
    assert_eq!(outcome.ms_before_expiry, 0);
    assert!(!cluster.write(|w| w.is_locked(&k)));

    let other = cluster.another_client(env);
    let status = ok(
        "status",
        other.get_txn_status(start_ts, caller, k.clone()).await,
    );
    assert_eq!(status.ttl_ms, 0);
    assert_eq!(status.commit_ts, None);
    assert_eq!(status.action, TxnAction::NoAction);
    assert!(status.is_rolled_back());
    let cached = ok(
        "status",
        cluster.client.get_txn_status(start_ts, caller, k).await,
    );
    assert!(cached.is_rolled_back(), "{cached:?}");
    assert_eq!(cached.action, TxnAction::TtlExpireRollback);

    let a = key("a");
    let (start_ts, commit_ts) = put_kv(&cluster, &a, "a").await;
    let status = ok("status", other.get_txn_status(start_ts, caller, a).await);
    assert_eq!(status.ttl_ms, 0);
    assert_eq!(status.commit_ts, Some(commit_ts));
    other.close().await;
}

/// `TestTxnHeartBeat`: a heartbeat raises the primary lock's TTL and never lowers it;
/// once the lock is forced away, a heartbeat fails. client-go sends the heartbeat through
/// a test probe (it has no public heartbeat call, nor do we: the committer's TTL manager
/// sends them); here the test's writer sends it. Go's failed heartbeat also answers TTL 0;
/// ours answers TiKV's error alone.
pub async fn test_txn_heart_beat(env: &dyn Env) {
    let cluster = start(env).await;
    let k = key("key");
    let mut txn = ok(
        "begin",
        cluster.client.begin_with(prewrite_only(None)).await,
    );
    ok("put", txn.put(k.clone(), "value"));
    ok("prewrite", txn.commit().await);
    let start_ts = txn.start_ts().version();

    let ttl = cluster.write(|w| w.txn_heartbeat(&k, start_ts, 6_666));
    assert_eq!(ttl, Ok(6_666));
    let ttl = cluster.write(|w| w.txn_heartbeat(&k, start_ts, 5_555));
    assert_eq!(ttl, Ok(6_666));

    let lock = lock_info(&cluster.write(|w| w.must_get_lock(&k)));
    assert_eq!(lock.ttl_ms, 6_666);
    ok(
        "force resolve",
        cluster.client.force_resolve_lock(lock).await,
    );

    let refused = cluster.write(|w| w.txn_heartbeat(&k, start_ts, 6_666));
    assert!(
        refused
            .as_ref()
            .is_err_and(|err| err.txn_not_found.is_some()),
        "{refused:?}"
    );
}

/// Milliseconds in `duration`, rounded up.
fn ceil_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros().div_ceil(1_000)).unwrap_or(u64::MAX)
}

/// Commits `pairs` with a commit that stops after the prewrite, `pause` after its begin,
/// and returns the TTL of the lock on `probe` with the bounds of the transaction's age
/// when the committer took it: at least `pause`, at most the time from before the begin
/// to after the commit (in milliseconds, with one of rounding either way).
async fn lock_ttl_of(
    cluster: &TestCluster,
    env: &dyn Env,
    pairs: Vec<(Bytes, Bytes)>,
    probe: &Bytes,
    pause: Duration,
) -> (u64, u64, u64) {
    let before = Instant::now();
    let mut txn = ok(
        "begin",
        cluster.client.begin_with(prewrite_only(None)).await,
    );
    if !pause.is_zero() {
        env.sleep(pause).await;
    }
    for (key, value) in pairs {
        ok("put", txn.put(key, value));
    }
    ok("prewrite", txn.commit().await);
    let max_age = ceil_ms(before.elapsed());
    let lock = lock_info(&cluster.write(|w| w.must_get_lock(probe)));
    // The machine's clock counts whole microseconds: allow one millisecond of rounding.
    let min_age = u64::try_from(pause.as_millis())
        .unwrap_or(u64::MAX)
        .saturating_sub(1);
    (lock.ttl_ms, min_age, max_age + 1)
}

/// `TestLockTTL`: our committer's lock TTL is client-go's `txnLockTTL`: 3 s for a small
/// transaction, 6 s per square root of MiB written for a huge one (4 MiB here: 12 s), plus
/// the time the transaction has run, here 50 ms of it spent between begin and commit.
///
/// Go checks the TTL of its probe's commit within 500 ms of the expected value, and the
/// first case with the TTL it set itself; this checks the computed TTL of a real commit
/// stopped after its prewrite (`stop_after_prewrite`) against the formula exactly, with
/// the age bounded by the test's own clock. The huge transaction's 2,048 keys are
/// 1,024-byte keys of one letter and a number instead of random letters.
pub async fn test_lock_ttl(env: &dyn Env) {
    let cluster = start(env).await;
    const DEFAULT_TTL_MS: u64 = 3_000;

    let small = key("ttl_key_1");
    let (ttl, _, max_age) = lock_ttl_of(
        &cluster,
        env,
        vec![(small.clone(), b("value"))],
        &small,
        Duration::ZERO,
    )
    .await;
    assert!(
        (DEFAULT_TTL_MS..=DEFAULT_TTL_MS + max_age).contains(&ttl),
        "small transaction: TTL {ttl}, age at most {max_age}"
    );

    let huge = key("ttl_key_2");
    let mut pairs = vec![(huge.clone(), b("value"))];
    for i in 0..2_048 {
        let mut k = format!("a{i:04}");
        k.extend(std::iter::repeat_n('a', 1_024 - k.len()));
        pairs.push((key(&k), b(vec![b'c'; 1_024])));
    }
    let size: u64 = pairs.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
    // 6,000 ms times the square root of the size in MiB, rounded down (client-go's
    // float arithmetic may land one below an exact integer).
    let base = (36_000_000 * size).isqrt() / 1_024;
    assert!((12_000..20_000).contains(&base), "{base}");
    let (ttl, _, max_age) = lock_ttl_of(&cluster, env, pairs, &huge, Duration::ZERO).await;
    assert!(
        (base - 1..=base + max_age).contains(&ttl),
        "huge transaction of {size} bytes: TTL {ttl}, expected {base} plus at most {max_age}"
    );

    let slow = key("ttl_key_3");
    let (ttl, min_age, max_age) = lock_ttl_of(
        &cluster,
        env,
        vec![(slow.clone(), b("value"))],
        &slow,
        Duration::from_millis(50),
    )
    .await;
    assert!(
        (DEFAULT_TTL_MS + min_age..=DEFAULT_TTL_MS + max_age).contains(&ttl),
        "slow transaction: TTL {ttl}, age between {min_age} and {max_age}"
    );
}

/// How long the stores hold the later transaction's primary prewrite in
/// [`test_prewrite_encounters_larger_ts_lock`].
const PRIMARY_HOLD_MS: u64 = 3_000;

/// `TestPrewriteEncountersLargerTsLock`: an optimistic transaction whose prewrite meets
/// the lock of a younger transaction (larger start timestamp, TTL 20 s, its primary not
/// yet prewritten) fails at once with a write conflict instead of waiting for the lock.
///
/// Go pauses the younger transaction's primary prewrite with a failpoint; here the stores
/// hold it for 3 s (a `Delay` fault on the primary's region, split from the secondary's,
/// which also stands for Go's one-key batches), and the younger transaction commits from
/// another client. Go bounds the older commit by a 1 s context; here its client must have
/// sent no status check and no lock resolution, and the conflict must name the younger
/// transaction (and its secondary, when the older commit ended while the primary was still
/// held, which is the case unless the machine stalled for seconds).
pub async fn test_prewrite_encounters_larger_ts_lock(env: &dyn Env) {
    let cluster = start_with(
        env,
        Layout {
            splits: vec![b"~lock_k2".to_vec()],
            ..Layout::default()
        },
    )
    .await;
    let (k1, k2) = (key("k1"), key("k2"));
    let primary_region = cluster.region_of(&k1);
    assert_ne!(primary_region, cluster.region_of(&k2));

    let mut t1 = ok("begin", cluster.client.begin().await);
    ok("put", t1.put(k1.clone(), "v1"));
    ok("put", t1.put(k2.clone(), "v2"));

    let other = cluster.another_client(env);
    let mut t2 = ok(
        "begin",
        other
            .begin_with(TransactionOptions::new().with_testing_knobs(CommitKnobs {
                lock_ttl_ms: Some(20_000),
                ..CommitKnobs::default()
            }))
            .await,
    );
    assert!(t2.start_ts() > t1.start_ts());
    ok("put", t2.put(k1.clone(), "v1"));
    ok("put", t2.put(k2.clone(), "v2"));
    let t2_start = t2.start_ts();

    cluster.server.with(|sim| {
        sim.faults.inject(FaultRule {
            region_id: Some(primary_region),
            ..FaultRule::command("KvPrewrite", FaultAction::Delay(PRIMARY_HOLD_MS), 1)
        });
    });
    let held_at = Instant::now();
    cluster.log.take();

    let younger = async { t2.commit().await };
    let older = async {
        // Wait until the younger transaction's secondary is prewritten.
        let waited = Instant::now();
        loop {
            let lock = cluster.write(|w| {
                let ts = w.ts();
                w.lock_at(&k2, ts)
            });
            if lock.is_some_and(|lock| lock.lock_version == t2_start.version()) {
                break;
            }
            assert!(
                waited.elapsed() < PATIENCE,
                "the secondary was never prewritten"
            );
            env.sleep(Duration::from_millis(2)).await;
        }
        let result = t1.commit().await;
        (result, held_at.elapsed())
    };
    let (younger, (older, older_done)) = futures_util::future::join(younger, older).await;

    let Err(Error::Key(err)) = &older else {
        panic!("the older commit did not fail with a key error: {older:?}");
    };
    let KeyError::WriteConflict {
        conflict_start_ts,
        key: conflict_key,
        ..
    } = err.as_ref()
    else {
        panic!("not a write conflict: {err:?}");
    };
    assert_eq!(*conflict_start_ts, t2_start);
    if older_done < Duration::from_millis(PRIMARY_HOLD_MS) {
        assert_eq!(
            *conflict_key, k2,
            "the conflict is on the younger secondary"
        );
    }
    let names = cluster.log.names();
    assert!(
        !names.contains(&"KvCheckTxnStatus") && !names.contains(&"KvResolveLock"),
        "the older commit tried to resolve the younger lock: {names:?}"
    );

    // The younger transaction goes on once its primary is let through.
    assert!(ok("younger commit", younger).is_some());
    let snapshot = cluster.snapshot().await;
    assert_eq!(ok("get", snapshot.get(k1).await), Some(b("v1")));
    assert_eq!(ok("get", snapshot.get(k2).await), Some(b("v2")));
    other.close().await;
}
