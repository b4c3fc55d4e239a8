//! `integration_tests/2pc_test.go` (`testCommitterSuite`): committing, rolling back and
//! conflicting, the TTL manager, the primary key, key flags, async-commit requests.
//! The commit-primary failure tests are in [`super::two_pc_failures`].
//!
//! The Go suite runs mocktikv split at `a`, `b` and `c` with `ManagedLockTTL` at 3 s;
//! `start_2pc` does the same on tikv-sim. Tests whose Go version needs a committer probe
//! stop the client's commit with its test knobs or send the probe's request to the store.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use tikv_core::error::{KeyError, WriteConflictReason};
use tikv_core::rpc::StoreRequest;
use tikv_core::transaction::TransactionOptions;
use tikv_core::txn::buffer::{FlagsOp, KeyFlags};
use tikv_core::{CommitKnobs, CommitMode, Config, Error, Timestamp};
use tikv_proto::kvrpcpb;
use tikv_proto::tikvpb::batch_commands_request::request::Cmd as Req;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as Resp;
use tikv_sim::cluster::ClusterConfig;
use tikv_sim::faults::FaultAction;

use super::{Env, TxnCluster, b, err, is_write_conflict, ok, start_with};

/// The suite's cluster: split at `a`, `b` and `c`, with the managed lock TTL at 3 s.
pub(crate) async fn start_2pc<E: Env>(env: &E) -> TxnCluster<'_, E> {
    start_2pc_with(env, suite_config()).await
}

/// [`start_2pc`] with the client configured by `config`.
pub(crate) async fn start_2pc_with<E: Env>(env: &E, config: Config) -> TxnCluster<'_, E> {
    let tc = start_with(env, ClusterConfig::default(), config).await;
    tc.split(&[b"a", b"b", b"c"]);
    tc
}

/// The Go suite's settings: `ManagedLockTTL` 3 s.
pub(crate) fn suite_config() -> Config {
    Config::default().with_managed_lock_ttl(Duration::from_secs(3))
}

fn knobs(knobs: CommitKnobs) -> TransactionOptions {
    TransactionOptions::new().with_testing_knobs(knobs)
}

fn stop_after_prewrite() -> TransactionOptions {
    knobs(CommitKnobs {
        stop_after_prewrite: true,
        ..CommitKnobs::default()
    })
}

fn skip_secondaries() -> TransactionOptions {
    knobs(CommitKnobs {
        skip_secondaries: true,
        ..CommitKnobs::default()
    })
}

/// Flags of `key` in `txn`'s buffer.
fn flags(txn: &tikv_core::Transaction, key: &str) -> KeyFlags {
    txn.buffer()
        .get_flags(key.as_bytes())
        .unwrap_or_else(|| panic!("{key} is buffered"))
}

/// `TestDeleteYourWritesTTL`: with `TTLRefreshedTxnSize` 0 every transaction starts the
/// TTL manager once its primary is prewritten, and the primary is the first key that is
/// written, not a presume-not-exists key that was inserted and deleted again (prewritten
/// as a check only). The Go test prewrites through a committer probe and asks whether the
/// TTL manager runs; here the commit of the primary is held back by a store delay while
/// the client's heartbeats (`TxnHeartBeat` on the primary) are watched.
pub async fn test_2pc_delete_your_writes_ttl<E: Env>(env: &E) {
    let config = suite_config()
        .with_ttl_refreshed_txn_size(0)
        .with_managed_lock_ttl(Duration::from_millis(40));
    let tc = start_2pc_with(env, config).await;
    for (inserted, written) in [("bb", "ba"), ("dd", "de")] {
        let mut txn = tc.begin().await;
        ok(
            "insert",
            txn.buffer_mut().and_then(|buffer| {
                buffer
                    .set_with_flags(b(inserted), vec![0u8], &[FlagsOp::SetPresumeKeyNotExists])
                    .map_err(Error::from)
            }),
        );
        ok("put", txn.put(b(written), vec![1u8]));
        ok("delete", txn.delete(b(inserted)));
        tc.requests.clear();
        // Heartbeats go out every 20 ms; the primary's commit waits 600 ms at the store.
        tc.inject("KvCommit", FaultAction::Delay(600), 1);
        ok("commit", txn.commit().await);
        let beats: Vec<Bytes> = tc
            .requests
            .all()
            .into_iter()
            .filter_map(|request| match request {
                StoreRequest::TxnHeartBeat(r) => Some(r.primary_lock),
                _ => None,
            })
            .collect();
        assert!(!beats.is_empty(), "the TTL manager ran");
        assert!(
            beats
                .iter()
                .all(|primary| primary.as_ref() == written.as_bytes()),
            "heartbeats keep {written:?} alive: {beats:?}"
        );
        assert_eq!(tc.lock(inserted.as_bytes()), None, "a check locks nothing");
        assert_eq!(tc.get(inserted).await, None);
        assert_eq!(tc.get(written).await, Some(Bytes::from_static(&[1])));
    }
}

/// `TestCommitRollback`: a transaction whose key another transaction committed since it
/// began fails, and none of its writes land.
pub async fn test_2pc_commit_rollback<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    tc.must_commit(&[("a", "a"), ("b", "b"), ("c", "c")]).await;
    let mut txn = tc.begin().await;
    ok("put", txn.put(b("a"), b("a1")));
    ok("put", txn.put(b("b"), b("b1")));
    ok("put", txn.put(b("c"), b("c1")));
    tc.must_commit(&[("c", "c2")]).await;
    let e = err("commit", txn.commit().await);
    assert!(is_write_conflict(&e), "{e}");
    tc.check_values(&[("a", "a"), ("b", "b"), ("c", "c2")])
        .await;
}

/// `TestCommitOnTiKVDiskFullOpt`: on stores whose disks are almost full, a transaction
/// that allows it commits and one that does not fails. The Go test's mock refuses such
/// requests by failpoint (`rpcAllowedOnAlmostFull`) and bounds the second commit with a 3 s
/// context; here tikv-sim's stores report an almost full disk (TiKV's check of
/// `disk_full_opt`) and the second commit's backoff budget is 1 s.
pub async fn test_2pc_commit_on_tikv_disk_full_opt<E: Env>(env: &E) {
    use tikv_core::DiskFullOpt;
    use tikv_sim::sim::DiskUsage;
    let tc = start_2pc(env).await;
    let stores: Vec<u64> = tc
        .server
        .with(|sim| sim.cluster.stores().map(|store| store.id).collect());
    tc.server.with(|sim| {
        for &store in &stores {
            sim.set_disk_usage(store, DiskUsage::AlmostFull);
        }
    });
    let mut txn = tc
        .begin_with(TransactionOptions::new().with_disk_full_opt(DiskFullOpt::AllowedOnAlmostFull))
        .await;
    ok("put", txn.put(b("a"), b("a1")));
    ok("commit", txn.commit().await);
    tc.check_values(&[("a", "a1")]).await;

    let mut txn = tc.begin_with(knobs(super::budget_knobs(1_000))).await;
    ok("put", txn.put(b("c"), b("c1")));
    let e = err("commit on a full disk", txn.commit().await);
    assert!(
        e.to_string().contains("disk full") || e.to_string().contains("DiskFull"),
        "{e}"
    );
    tc.server.with(|sim| {
        for &store in &stores {
            sim.set_disk_usage(store, DiskUsage::Normal);
        }
    });
}

/// `TestPrewriteRollback`: a reader is not blocked by a prewritten transaction (it reads
/// the old value and pushes the lock's `min_commit_ts`), and the transaction can still
/// prewrite again and commit. The probe's second prewrite and commit are a second commit
/// of the same transaction (the same start timestamp and writes).
pub async fn test_2pc_prewrite_rollback<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    tc.must_commit(&[("a", "a0"), ("b", "b0")]).await;
    let mut txn1 = tc.begin_with(stop_after_prewrite()).await;
    ok("put", txn1.put(b("a"), b("a1")));
    ok("put", txn1.put(b("b"), b("b1")));
    ok("prewrite", txn1.commit().await);
    assert!(tc.lock(b"a").is_some() && tc.lock(b"b").is_some());

    let txn2 = tc.begin().await;
    assert_eq!(ok("get", txn2.get(b("a")).await), Some(b("a0")));

    let mut again = tc
        .begin_with(TransactionOptions::new().with_start_ts(txn1.start_ts()))
        .await;
    ok("put", again.put(b("a"), b("a1")));
    ok("put", again.put(b("b"), b("b1")));
    let commit_ts = ok("prewrite again and commit", again.commit().await);
    assert!(commit_ts.is_some_and(|ts| ts > txn2.start_ts()));
    assert_eq!(tc.get("b").await, Some(b("b1")));
}

/// `TestContextCancel`: a commit cancelled before it finishes fails. Go cancels the
/// context before prewriting and expects `context.Canceled`; in Rust cancelling is
/// dropping the commit's future, so there is no error to look at: the test checks what
/// the abandoned commit leaves, which is nothing (no lock, no value) and no operation still
/// running in the client. The stores hold the prewrites for a second, so the commit is
/// dropped before it can decide anything, however the threads are scheduled.
pub async fn test_2pc_context_cancel<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    let mut txn1 = tc.begin().await;
    ok("put", txn1.put(b("a"), b("a1")));
    ok("put", txn1.put(b("b"), b("b1")));
    tc.inject("KvPrewrite", FaultAction::Delay(1_000), 2);
    // Polled once (the command reaches the driver), then dropped.
    assert!(txn1.commit().now_or_never().is_none());
    assert!(matches!(
        txn1.get(b("a")).await,
        Err(Error::TxnFinished { .. })
    ));
    let client = tc.client.clone();
    let mut idle = false;
    for _ in 0..500 {
        if ok("ops", client.ops_in_flight().await) == 0 {
            idle = true;
            break;
        }
        tc.env.sleep(Duration::from_millis(10)).await;
    }
    assert!(idle, "the abandoned commit finished");
    assert_eq!(tc.lock(b"a"), None);
    assert_eq!(tc.lock(b"b"), None);
    assert_eq!(tc.get("a").await, None);
    assert_eq!(tc.get("b").await, None);
}

/// `TestContextCancel2`: once a commit returned, going away does not stop its secondaries
/// from being committed. Go cancels the context after the commit; here the client is
/// closed right after it, and closing waits for the background commit of `b`.
pub async fn test_2pc_context_cancel2<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    let mut txn = tc.begin().await;
    ok("put", txn.put(b("a"), b("a")));
    ok("put", txn.put(b("b"), b("b")));
    ok("commit", txn.commit().await);
    tc.client.close().await;
    tc.wait_unlocked(b"b").await;
}

/// `TestPrewriteCancel`: when one region's prewrite fails, the others' locks are removed
/// in reasonable time. The Go test means to delay `b`'s and `c`'s regions (its slow client
/// never intercepts: it overrides `SendReq`); here the stores do delay them.
pub async fn test_2pc_prewrite_cancel<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    let mut txn1 = tc.begin().await;
    let mut txn2 = tc.begin().await;
    ok("put", txn2.put(b("b"), b("b2")));
    ok("commit", txn2.commit().await);
    tc.inject_for(b"b", "KvPrewrite", FaultAction::Delay(10), 1);
    tc.inject_for(b"c", "KvPrewrite", FaultAction::Delay(20), 1);
    ok("put", txn1.put(b("a"), b("a1")));
    ok("put", txn1.put(b("b"), b("b1")));
    ok("put", txn1.put(b("c"), b("c1")));
    let e = err("commit", txn1.commit().await);
    assert!(is_write_conflict(&e), "{e}");
    tc.wait_unlocked(b"c").await;
    tc.wait_unlocked(b"a").await;
    assert_eq!(tc.get("c").await, None);
}

/// `TestIllegalTso`: a transaction whose start timestamp is `u64::MAX` cannot commit.
pub async fn test_2pc_illegal_tso<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    let mut txn = tc
        .begin_with(TransactionOptions::new().with_start_ts(Timestamp::MAX))
        .await;
    ok("put", txn.put(b("name"), b("aa")));
    ok("put", txn.put(b("age"), b("12")));
    match txn.commit().await {
        Err(Error::InvalidArgument(message)) => {
            assert!(message.contains("start timestamp"), "{message}");
        }
        other => panic!("expected an invalid start timestamp, got {other:?}"),
    }
}

/// `TestCommitBeforePrewrite`: once a transaction's keys are rolled back (the probe's
/// `Cleanup`, here its `BatchRollback` sent to the store), its prewrite fails: TiKV finds
/// the transaction's own rollback record and answers a write conflict (mocktikv says
/// "already rolled back").
pub async fn test_2pc_commit_before_prewrite<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    let mut txn = tc.begin().await;
    ok("put", txn.put(b("a"), b("a1")));
    let start_ts = txn.start_ts().version();
    let response = tc.store_call(b"a", |context| {
        Req::BatchRollback(kvrpcpb::BatchRollbackRequest {
            context: Some(context),
            start_version: start_ts,
            keys: vec![b("a")],
            ..Default::default()
        })
    });
    assert!(
        matches!(&response, Resp::BatchRollback(r) if r.error.is_none() && r.region_error.is_none()),
        "{response:?}"
    );
    let e = err("prewrite after rollback", txn.commit().await);
    assert!(
        matches!(
            e.key_error(),
            Some(KeyError::WriteConflict {
                reason: WriteConflictReason::SelfRolledBack,
                ..
            })
        ),
        "{e}"
    );
}

/// `TestPrewritePrimaryKeyFailed`: a transaction older than the latest write of its
/// primary fails at prewrite and rolls back every key; rolling it back again does no harm,
/// and a new transaction writes the key.
pub async fn test_2pc_prewrite_primary_key_failed<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    let mut txn1 = tc.begin().await;
    ok("put", txn1.put(b("a"), b("a1")));
    ok("commit", txn1.commit().await);
    assert_eq!(tc.get("a").await, Some(b("a1")));

    let old = Timestamp::from_version(txn1.start_ts().version() - 1);
    let mut txn2 = tc
        .begin_with(TransactionOptions::new().with_start_ts(old))
        .await;
    ok("put", txn2.put(b("a"), b("a2")));
    ok("put", txn2.put(b("b"), b("b2")));
    let e = err("commit", txn2.commit().await);
    assert!(is_write_conflict(&e), "{e}");
    assert_eq!(tc.get("a").await, Some(b("a1")));
    tc.wait_unlocked(b"b").await;
    assert_eq!(tc.get("b").await, None);

    // Clean up again: the same transaction fails and rolls back once more.
    let mut again = tc
        .begin_with(TransactionOptions::new().with_start_ts(old))
        .await;
    ok("put", again.put(b("a"), b("a2")));
    ok("put", again.put(b("b"), b("b2")));
    assert!(again.commit().await.is_err());
    assert_eq!(tc.get("a").await, Some(b("a1")));

    let mut txn = tc.begin().await;
    ok("put", txn.put(b("a"), b("a3")));
    ok("commit", txn.commit().await);
    assert_eq!(tc.get("a").await, Some(b("a3")));
}

/// `TestWrittenKeysOnConflict`: when a commit fails on a conflict, the keys it did
/// prewrite are rolled back, so a reader does not wait for their locks. Go measures ten
/// readers' total time (under 200 ms); here each failed commit's lock on `y1` must be gone
/// (a lock nobody resolves would stay) before `y1` is read.
pub async fn test_2pc_written_keys_on_conflict<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    tc.split(&[b"y"]);
    for _ in 0..10 {
        let mut txn1 = tc.begin().await;
        let mut txn2 = tc.begin().await;
        ok("put", txn2.put(b("x1"), b("1")));
        ok("commit", txn2.commit().await);
        ok("put", txn1.put(b("x1"), b("1")));
        ok("put", txn1.put(b("y1"), b("2")));
        assert!(txn1.commit().await.is_err());
        tc.wait_unlocked(b"y1").await;
        assert_eq!(tc.get("y1").await, None);
    }
}

/// The keys of `TestPrewriteTxnSize` and `TestPrewriteSecondaryKeys`: one byte each, 50 to
/// 119, in two regions split at byte 100.
async fn start_two_regions<E: Env>(env: &E) -> (TxnCluster<'_, E>, Vec<Bytes>) {
    let tc = start_with(env, ClusterConfig::default(), suite_config()).await;
    tc.split(&[&[100u8]]);
    let keys = (50u8..120).map(|i| Bytes::from(vec![i])).collect();
    (tc, keys)
}

/// `TestPrewriteTxnSize`: each lock records the number of keys its transaction writes in
/// the lock's region (50 and 20). The commit stops after prewrite; the locks are read from
/// the stores.
pub async fn test_2pc_prewrite_txn_size<E: Env>(env: &E) {
    let (tc, keys) = start_two_regions(env).await;
    let mut txn = tc.begin_with(stop_after_prewrite()).await;
    for key in &keys {
        ok("put", txn.put(key.clone(), vec![0u8; 1024]));
    }
    ok("prewrite", txn.commit().await);
    for (i, key) in keys.iter().enumerate() {
        let lock = tc
            .lock(key)
            .unwrap_or_else(|| panic!("key {key:?} is locked"));
        let expected = if i < 50 { 50 } else { 20 };
        assert_eq!(lock.txn_size, expected, "txn size of {key:?}");
    }
}

/// `TestRejectCommitTS`: a commit timestamp below the lock's `min_commit_ts` is refused
/// (`CommitTsExpired`) and the client commits again with a new one. The Go test prewrites
/// with `min_commit_ts = start + 100` and sets the commit timestamp to `start + 1`; here
/// the prewrite is sent to the store the same way, and the TSO's clock is stalled so that
/// the client's first two commit timestamps are below `min_commit_ts`.
pub async fn test_2pc_reject_commit_ts<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    let mut txn = tc.begin().await;
    ok("put", txn.put(b("x"), b("v")));
    let start_ts = txn.start_ts().version();
    tc.server.with(|sim| sim.cluster.stall_tso(u32::MAX));
    let min_commit_ts = tc.server.with(|sim| sim.cluster.last_ts().to_u64()) + 3;
    let response = tc.store_call(b"x", |context| {
        Req::Prewrite(kvrpcpb::PrewriteRequest {
            context: Some(context),
            mutations: vec![kvrpcpb::Mutation {
                op: kvrpcpb::Op::Put as i32,
                key: b("x"),
                value: b("v"),
                ..Default::default()
            }],
            primary_lock: b("x"),
            start_version: start_ts,
            lock_ttl: 3_000,
            min_commit_ts,
            txn_size: 1,
            ..Default::default()
        })
    });
    assert!(
        matches!(&response, Resp::Prewrite(r) if r.errors.is_empty() && r.region_error.is_none()),
        "{response:?}"
    );
    tc.requests.clear();
    let commit_ts = ok("commit", txn.commit().await).unwrap_or_else(|| panic!("committed"));
    tc.server.with(|sim| sim.cluster.stall_tso(0));
    assert!(commit_ts.version() >= min_commit_ts, "{commit_ts}");
    let commits = tc
        .requests
        .count(|request| matches!(request, StoreRequest::Commit(_)));
    assert!(
        commits >= 2,
        "the refused commit was sent again ({commits})"
    );
    assert_eq!(
        tc.get_at(Timestamp::from_version(start_ts + 2), "x").await,
        None
    );
    assert_eq!(tc.get_at(Timestamp::MAX, "x").await, Some(b("v")));
}

/// `TestDeleteYourWriteCauseGhostPrimary`: an inserted-then-deleted key (prewritten as a
/// check only) is not the primary; after the primary committed, a reader of a secondary
/// left locked resolves it to the committed value. The Go test pauses the commit after the
/// primary (`SetPrimaryKeyBlocker`); here the commit skips its secondaries.
pub async fn test_2pc_delete_your_write_cause_ghost_primary<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    let mut txn1 = tc.begin_with(skip_secondaries()).await;
    assert_eq!(ok("get", txn1.get(b("a")).await), None);
    ok("insert", txn1.insert(b("a"), vec![0u8]));
    ok("put", txn1.put(b("b"), vec![1u8]));
    ok("put", txn1.put(b("c"), vec![2u8]));
    ok("delete", txn1.delete(b("a")));
    ok("commit", txn1.commit().await);
    let lock = tc.lock(b"c").unwrap_or_else(|| panic!("c is left locked"));
    assert_eq!(lock.primary_lock.as_ref(), b"b");
    assert_eq!(tc.lock(b"a"), None);

    let txn2 = tc.begin().await;
    assert_eq!(
        ok("get", txn2.get(b("c")).await),
        Some(Bytes::from_static(&[2]))
    );
}

/// `TestDeleteAllYourWrites`: a transaction that inserted keys and deleted them all again
/// commits (nothing to write). Its prewrite still checks that the keys do not exist, as
/// client-go's does (every mutation a `CheckNotExists`, the first one the primary).
pub async fn test_2pc_delete_all_your_writes<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    let mut txn1 = tc.begin().await;
    for (key, value) in [("a", 0u8), ("b", 1), ("c", 2)] {
        ok("insert", txn1.insert(b(key), vec![value]));
        ok("delete", txn1.delete(b(key)));
    }
    tc.requests.clear();
    assert_eq!(ok("commit", txn1.commit().await), None);
    let checks: Vec<i32> = tc
        .requests
        .prewrites()
        .into_iter()
        .flat_map(|r| r.mutations.into_iter().map(|m| m.op))
        .collect();
    assert_eq!(checks, vec![kvrpcpb::Op::CheckNotExists as i32; 3]);
    for key in ["a", "b", "c"] {
        assert_eq!(tc.lock(key.as_bytes()), None);
        assert_eq!(tc.get(key).await, None);
    }

    // The check is real: a key that exists fails such a commit.
    tc.must_commit(&[("b", "exists")]).await;
    let mut txn = tc.begin().await;
    for key in ["a", "b"] {
        ok("insert", txn.insert(b(key), b("v")));
        ok("delete", txn.delete(b(key)));
    }
    let e = err("commit", txn.commit().await);
    assert!(
        matches!(e.key_error(), Some(KeyError::AlreadyExists { key }) if key.as_ref() == b"b"),
        "{e}"
    );
}

/// `TestDeleteAllYourWritesWithSFU`: an inserted-then-deleted key is not the primary; the
/// locked keys are, so a second transaction meeting the lock on `c` (left by the paused
/// commit, here a commit that skips its secondaries) checks the status of primary `b`.
/// Go records the locks the resolver meets; here the second client's `CheckTxnStatus`
/// requests show the primary it asked about.
pub async fn test_2pc_delete_all_your_writes_with_sfu<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    let mut txn1 = tc.begin_with(skip_secondaries()).await;
    ok("insert", txn1.insert(b("a"), vec![0u8]));
    ok("delete", txn1.delete(b("a")));
    ok("lock", txn1.lock_keys([b("b"), b("c")]));
    ok("commit", txn1.commit().await);
    assert!(tc.lock(b"c").is_some(), "c is left locked");

    let (client, requests) = tc.connect(suite_config());
    let mut txn2 = ok("begin", client.begin().await);
    ok("put", txn2.put(b("c"), vec![33u8]));
    ok("commit", txn2.commit().await);
    let primaries: Vec<Bytes> = requests
        .all()
        .into_iter()
        .filter_map(|request| match request {
            StoreRequest::CheckTxnStatus(r) => Some(r.primary_key),
            _ => None,
        })
        .collect();
    assert_eq!(primaries.first().map(Bytes::as_ref), Some(&b"b"[..]));
    assert_eq!(tc.get("c").await, Some(Bytes::from_static(&[33])));
}

/// `TestResolvePessimisticLock` (an optimistic transaction despite its name): a written key
/// that the KV filter calls unnecessary and a locked key without a value both become
/// `Lock` mutations. Go reads the committer's mutations; here the prewrite request shows
/// them. Go also keeps the filtered key's value in its `Lock` mutation; this client sends
/// none (TiKV ignores the value of a `Lock`).
pub async fn test_2pc_resolve_pessimistic_lock<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    let untouched = b("t00000001_i000000001");
    let no_value = b("t00000001_i000000002");
    let filtered = untouched.clone();
    let filter: tikv_core::KvFilter =
        Arc::new(move |key: &[u8], _value: &[u8], flags: KeyFlags| {
            let unnecessary = key == filtered.as_ref();
            assert!(
                !(unnecessary && flags.has_presume_key_not_exists()),
                "the filtered key is not presumed absent"
            );
            unnecessary
        });
    let mut txn = tc
        .begin_with(TransactionOptions::new().with_kv_filter(filter))
        .await;
    ok(
        "put",
        txn.put(untouched.clone(), vec![0u8, 0, 0, 0, 0, 0, 0, 1, 49]),
    );
    ok("lock", txn.lock_keys([untouched.clone(), no_value.clone()]));
    tc.requests.clear();
    ok("commit", txn.commit().await);
    let mutations: Vec<(i32, Bytes)> = tc
        .requests
        .prewrites()
        .into_iter()
        .flat_map(|r| r.mutations.into_iter().map(|m| (m.op, m.key)))
        .collect();
    assert_eq!(
        mutations,
        vec![
            (kvrpcpb::Op::Lock as i32, untouched),
            (kvrpcpb::Op::Lock as i32, no_value),
        ]
    );
}

/// `TestCommitDeadLock`: two large transactions writing the same two keys in two regions
/// at once: exactly one of them fails (the older one meets the newer one's lock and gives
/// up at once; the newer one waits for the older one to finish), never both, and neither
/// hangs. The Go test makes each transaction's primary a different key and delays the
/// regions per transaction so that each locks one key first; this client always takes the
/// first key as primary and tikv-sim delays by region only, so the interleaving is left
/// to the run. Both transactions keep their locks alive (`TTLRefreshedTxnSize` 0) as the
/// Go test's 1 GB transaction size does.
pub async fn test_2pc_commit_dead_lock<E: Env>(env: &E) {
    let tc = start_2pc_with(env, suite_config().with_ttl_refreshed_txn_size(0)).await;
    let (k1, k2) = (b("a_deadlock_k1"), b("y_deadlock_k2"));
    assert_ne!(tc.region_of(&k1), tc.region_of(&k2));
    let mut txn1 = tc.begin().await;
    let mut txn2 = tc.begin().await;
    for txn in [&mut txn1, &mut txn2] {
        ok("put", txn.put(k1.clone(), b("t")));
        ok("put", txn.put(k2.clone(), b("t")));
    }
    let (r1, r2) = futures_util::future::join(txn1.commit(), txn2.commit()).await;
    let failed = usize::from(r1.is_err()) + usize::from(r2.is_err());
    assert_eq!(failed, 1, "{r1:?} {r2:?}");
}

/// `TestPrewriteSecondaryKeys`: with async commit, the primary's prewrite lists every
/// other key as a secondary, once each and without the primary, and the other prewrites
/// list none. Go checks the requests in a mock client; here the recorded requests.
pub async fn test_2pc_prewrite_secondary_keys<E: Env>(env: &E) {
    let (tc, keys) = start_two_regions(env).await;
    let mut txn = tc.begin_async_commit().await;
    for key in &keys {
        ok("put", txn.put(key.clone(), vec![0u8; 1024]));
    }
    for key in keys.iter().step_by(10) {
        ok("put again", txn.put(key.clone(), vec![0u8; 188]));
    }
    tc.requests.clear();
    ok("commit", txn.commit().await);
    assert_eq!(
        txn.commit_outcome().map(|o| o.mode),
        Some(CommitMode::AsyncCommit)
    );
    let (mut primary, mut secondary) = (0, 0);
    for request in tc.requests.prewrites() {
        assert!(request.use_async_commit);
        let holds_primary = request
            .mutations
            .iter()
            .any(|m| m.key == request.primary_lock);
        if holds_primary {
            let mut listed = request.secondaries.clone();
            assert!(!listed.contains(&request.primary_lock));
            listed.sort();
            let before = listed.len();
            listed.dedup();
            assert_eq!(listed.len(), before, "no duplicates");
            let expected: Vec<Bytes> = keys
                .iter()
                .filter(|key| **key != request.primary_lock)
                .cloned()
                .collect();
            assert_eq!(listed, expected);
            primary += 1;
        } else {
            assert!(request.secondaries.is_empty());
            secondary += 1;
        }
    }
    assert!(primary > 0 && secondary > 0, "{primary} {secondary}");
}

/// `TestAsyncCommit`: an async-commit transaction's writes read back.
pub async fn test_2pc_async_commit<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    let mut txn1 = tc.begin_async_commit().await;
    ok("put", txn1.put(b("tpk"), b("pkVal")));
    ok("put", txn1.put(b("tk1"), b("k1Val")));
    ok("commit", txn1.commit().await);
    assert_eq!(
        txn1.commit_outcome().map(|o| o.mode),
        Some(CommitMode::AsyncCommit)
    );
    tc.check_values(&[("tpk", "pkVal"), ("tk1", "k1Val")]).await;
}

/// `TestAsyncCommitCheck`: async commit is used only within the key count and total key
/// size limits. Go asks the committer (`CheckAsyncCommit`) under three configurations;
/// here a client per configuration commits the 16 keys and reports how it committed.
pub async fn test_2pc_async_commit_check<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    let keys: Vec<String> = (0..16).map(|i| format!("async_check_{i:02}")).collect();
    let total: u64 = keys.iter().map(|key| key.len() as u64).sum();
    for (keys_limit, size_limit, async_commit) in [
        (16, total, true),
        (15, total, false),
        (20, total - 1, false),
    ] {
        let config = suite_config()
            .with_async_commit_keys_limit(keys_limit)
            .with_async_commit_total_key_size_limit(size_limit);
        let (client, _) = tc.connect(config);
        let mut txn = ok(
            "begin",
            client
                .begin_with(TransactionOptions::new().with_async_commit(true))
                .await,
        );
        for key in &keys {
            ok("put", txn.put(b(key), b("v")));
        }
        ok("commit", txn.commit().await);
        let outcome = txn.commit_outcome().unwrap_or_else(|| panic!("committed"));
        let expected = if async_commit {
            CommitMode::AsyncCommit
        } else {
            CommitMode::TwoPhase
        };
        assert_eq!(outcome.mode, expected, "limits {keys_limit} {size_limit}");
        // Not eligible is not a fallback (TiKV did not decline anything).
        assert!(!outcome.async_commit_fallback);
    }
}

/// `TestCommitMultipleRegions`: 100 random small pairs, then 50 pairs of a seventh of the
/// commit batch size each, committed in one transaction each and read back. Go draws keys
/// from `math/rand`; here a fixed xorshift stream.
pub async fn test_2pc_commit_multiple_regions<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut rand_string = |len: usize| -> String {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b"abc"[(state % 3) as usize])
            })
            .collect()
    };
    let small: Vec<(String, String)> = (0..100)
        .map(|_| (rand_string(10), rand_string(10)))
        .collect();
    let big: Vec<(String, String)> = (0..50)
        .map(|_| (rand_string(11), rand_string(16 * 1024 / 7)))
        .collect();
    for pairs in [small, big] {
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        // Random keys repeat: the last value of a key is the one committed.
        let mut last = std::collections::BTreeMap::new();
        for (key, value) in &pairs {
            last.insert(*key, *value);
        }
        let pairs: Vec<(&str, &str)> = last.into_iter().collect();
        tc.must_commit(&pairs).await;
    }
}

/// `TestNewlyInsertedMemDBFlag`: the newly-inserted flag is kept only on a key written
/// with it; deletes and plain writes do not set it; the transaction commits.
pub async fn test_2pc_newly_inserted_mem_db_flag<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    let mut txn = tc.begin().await;
    ok("delete", txn.delete(b("k0")));
    ok("put", txn.put(b("k0"), b("v0")));
    assert!(!flags(&txn, "k0").has_newly_inserted());

    ok("lock", txn.lock_keys([b("k1")]));
    ok(
        "set",
        txn.buffer_mut().and_then(|buffer| {
            buffer
                .set_with_flags(b("k1"), b("v1"), &[FlagsOp::SetNewlyInserted])
                .map_err(Error::from)
        }),
    );
    assert!(flags(&txn, "k1").has_newly_inserted());

    ok("lock", txn.lock_keys([b("k2")]));
    ok("delete", txn.delete(b("k2")));
    assert!(!flags(&txn, "k2").has_newly_inserted());
    ok("put", txn.put(b("k2"), b("v2")));
    assert!(!flags(&txn, "k2").has_newly_inserted());

    ok("commit", txn.commit().await);
    tc.check_values(&[("k0", "v0"), ("k1", "v1"), ("k2", "v2")])
        .await;
}

/// `TestExtractKeyExistsErr`: inserting a key that exists fails the commit with the
/// key-exists error naming the key. (Go also forces an `Insert` mutation whose flag was
/// removed after the committer was built, which a committer built at commit time cannot
/// see, and checks that its memdb stays unlocked, which has no counterpart.)
pub async fn test_2pc_extract_key_exists_err<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    tc.must_commit(&[("de", "ef")]).await;
    let mut txn = tc.begin().await;
    ok("insert", txn.insert(b("de"), b("fg")));
    let e = err("commit", txn.commit().await);
    assert!(
        matches!(e.key_error(), Some(KeyError::AlreadyExists { key }) if key.as_ref() == b"de"),
        "{e}"
    );
    tc.check_values(&[("de", "ef")]).await;
}
