//! `integration_tests/async_commit_test.go` (`testAsyncCommitSuite`): async commit and the
//! resolution of what it leaves behind.
//!
//! The Go suite runs unistore with one store and one region. Its committer probe's
//! hand-made prewrites (`lockKeysWithAsyncCommit`, `BuildPrewriteRequest`) are sent to the
//! stores here (`async_prewrite`). Not ported: `TestAsyncCommitWithMultiDC` (transaction
//! scopes do not exist here), `TestPessimisticTxnResolveAsyncCommitLock` and
//! `TestRollbackAsyncCommitEnforcesFallback` (pessimistic transactions),
//! `TestAsyncCommitLifecycleHooks` (there are no background goroutines to hook), and the
//! pessimistic half of `TestRepeatableRead`.

use std::time::Duration;

use bytes::Bytes;
use tikv_core::error::LockInfo;
use tikv_core::rpc::StoreRequest;
use tikv_core::{CommitMode, Timestamp, TransactionOptions};
use tikv_proto::kvrpcpb;
use tikv_proto::tikvpb::batch_commands_request::request::Cmd as Req;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as Resp;

use super::{Env, TxnCluster, b, ok, start};

/// Commits `key` = `value` with async commit (client-go's `putKV`), and waits until the
/// background commit of its key is done (the hand-made prewrites of these tests do not
/// resolve locks).
pub(crate) async fn put_kv<E: Env>(tc: &TxnCluster<'_, E>, key: &str, value: &[u8]) {
    let mut txn = tc.begin_async_commit().await;
    ok("put", txn.put(b(key), value.to_vec()));
    ok("commit", txn.commit().await);
    tc.wait_unlocked(key.as_bytes()).await;
}

/// Commits `a` to `z`, each its own letter, with async commit (client-go's
/// `putAlphabets`).
pub(crate) async fn put_alphabets<E: Env>(tc: &TxnCluster<'_, E>) {
    for ch in b'a'..=b'z' {
        put_kv(tc, &char::from(ch).to_string(), &[ch]).await;
    }
}

/// One hand-made async-commit prewrite of `key` = `value` for the transaction at
/// `start_ts` with `primary` (listing `secondaries` when `key` is the primary), a 1 ms
/// lock TTL, and `max_commit_ts` (1 forces TiKV to fall back to two phases). Returns the
/// `min_commit_ts` the store answered (0 after a fallback).
pub(crate) fn async_prewrite<E: Env>(
    tc: &TxnCluster<'_, E>,
    start_ts: Timestamp,
    (key, value): (&str, &str),
    primary: &str,
    secondaries: &[&str],
    max_commit_ts: u64,
) -> u64 {
    let secondaries = if key == primary {
        secondaries.iter().map(b).collect()
    } else {
        Vec::new()
    };
    let response = tc.store_call(key.as_bytes(), |context| {
        Req::Prewrite(kvrpcpb::PrewriteRequest {
            context: Some(context),
            mutations: vec![kvrpcpb::Mutation {
                op: kvrpcpb::Op::Put as i32,
                key: b(key),
                value: b(value),
                ..Default::default()
            }],
            primary_lock: b(primary),
            start_version: start_ts.version(),
            lock_ttl: 1,
            txn_size: 1,
            min_commit_ts: start_ts.version() + 1,
            use_async_commit: true,
            secondaries,
            max_commit_ts,
            ..Default::default()
        })
    });
    match response {
        Resp::Prewrite(r) if r.errors.is_empty() && r.region_error.is_none() => r.min_commit_ts,
        other => panic!("prewrite of {key}: {other:?}"),
    }
}

/// A `max_commit_ts` a minute past `start_ts`: async commit is kept.
fn far_max_commit_ts(start_ts: Timestamp) -> u64 {
    Timestamp::compose(start_ts.physical_ms() + 60_000, 0).version()
}

/// The lock on `key`, as the client's resolver takes it.
fn lock_info<E: Env>(tc: &TxnCluster<'_, E>, key: &str) -> LockInfo {
    let lock = tc
        .lock(key.as_bytes())
        .unwrap_or_else(|| panic!("{key} is locked"));
    LockInfo::from_proto(&lock)
}

/// The `ResolveLock` requests a client sent: (keys, commit version).
fn resolve_requests(requests: &[StoreRequest]) -> Vec<(Vec<Bytes>, u64)> {
    requests
        .iter()
        .filter_map(|request| match request {
            StoreRequest::ResolveLock(r) => Some((r.keys.clone(), r.commit_version)),
            _ => None,
        })
        .collect()
}

/// `TestCheckSecondaries`: the recovery of an async-commit transaction whose primary lock
/// expired: with no secondaries it commits at the primary's `min_commit_ts`; when a
/// secondary is already committed, every lock is committed at that commit timestamp;
/// when a secondary was never prewritten, every lock is rolled back. Go drives the
/// resolver's `ResolveAsyncCommitLock` with a made-up status and scripts the stores'
/// `CheckSecondaryLocks` and `ResolveLock` answers; here the locks are real (prewritten
/// and partly committed on tikv-sim), the client's `resolve_locks` recovers them from the
/// primary's status, and the requests it sent and the data are checked.
pub async fn test_async_commit_check_secondaries<E: Env>(env: &E) {
    let tc = start(env).await;
    put_alphabets(&tc).await;
    tc.split(&[b"e"]);

    // Only the primary is locked.
    let start_ts = tc.ts().await;
    let min_commit = async_prewrite(
        &tc,
        start_ts,
        ("z", "z1"),
        "z",
        &[],
        far_max_commit_ts(start_ts),
    );
    tc.env.sleep(Duration::from_millis(5)).await;
    let caller = tc.ts().await;
    let outcome = ok(
        "resolve",
        tc.client
            .resolve_locks(caller, vec![lock_info(&tc, "z")])
            .await,
    );
    assert_eq!(outcome.ms_before_expiry, 0);
    assert_eq!(tc.lock(b"z"), None);
    let commit_ts = Timestamp::from_version(min_commit);
    assert_eq!(tc.get_at(commit_ts, "z").await, Some(b("z1")));
    assert_eq!(
        tc.get_at(Timestamp::from_version(min_commit - 1), "z")
            .await,
        Some(b("z"))
    );

    // `i` is committed, `a` and `z` are locked: the transaction is committed.
    let start_ts = tc.ts().await;
    let max = far_max_commit_ts(start_ts);
    let mut min_commit = 0;
    for pair in [("z", "z2"), ("a", "a2"), ("i", "i2")] {
        min_commit = min_commit.max(async_prewrite(&tc, start_ts, pair, "z", &["a", "i"], max));
    }
    let commit_ts = tc.ts().await.version().max(min_commit);
    let response = tc.store_call(b"i", |context| {
        Req::Commit(kvrpcpb::CommitRequest {
            context: Some(context),
            start_version: start_ts.version(),
            keys: vec![b("i")],
            commit_version: commit_ts,
            ..Default::default()
        })
    });
    assert!(
        matches!(&response, Resp::Commit(r) if r.error.is_none() && r.region_error.is_none()),
        "{response:?}"
    );
    tc.env.sleep(Duration::from_millis(5)).await;
    tc.requests.clear();
    let caller = tc.ts().await;
    ok(
        "resolve",
        tc.client
            .resolve_locks(caller, vec![lock_info(&tc, "a")])
            .await,
    );
    let sent = tc.requests.all();
    let checked: Vec<Bytes> = sent
        .iter()
        .filter_map(|request| match request {
            StoreRequest::CheckSecondaryLocks(r) => Some(r.keys.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(
        checked.contains(&b("a")) && checked.contains(&b("i")),
        "{checked:?}"
    );
    let resolved = resolve_requests(&sent);
    assert!(!resolved.is_empty());
    assert!(
        resolved.iter().all(|(_, version)| *version == commit_ts),
        "{resolved:?}"
    );
    for (key, value) in [("z", "z2"), ("a", "a2"), ("i", "i2")] {
        assert_eq!(tc.lock(key.as_bytes()), None, "{key}");
        let at = Timestamp::from_version(commit_ts);
        assert_eq!(tc.get_at(at, key).await, Some(b(value)), "{key}");
    }

    // `i` was never prewritten, `a` and `z` are locked: the transaction is rolled back.
    let start_ts = tc.ts().await;
    let max = far_max_commit_ts(start_ts);
    for pair in [("z", "z3"), ("a", "a3")] {
        async_prewrite(&tc, start_ts, pair, "z", &["a", "i"], max);
    }
    tc.env.sleep(Duration::from_millis(5)).await;
    tc.requests.clear();
    let caller = tc.ts().await;
    ok(
        "resolve",
        tc.client
            .resolve_locks(caller, vec![lock_info(&tc, "a")])
            .await,
    );
    let resolved = resolve_requests(&tc.requests.all());
    assert!(!resolved.is_empty());
    assert!(
        resolved.iter().all(|(_, version)| *version == 0),
        "{resolved:?}"
    );
    for (key, value) in [("z", "z2"), ("a", "a2"), ("i", "i2")] {
        assert_eq!(tc.lock(key.as_bytes()), None, "{key}");
        assert_eq!(tc.get(key).await, Some(b(value)), "{key}");
    }
}

/// `TestRepeatableRead` (its optimistic half): a transaction that began before an
/// async-commit transaction committed keeps reading the old value afterwards, even when
/// the committer's timestamps ran far ahead; a later one reads the new value.
pub async fn test_async_commit_repeatable_read<E: Env>(env: &E) {
    let tc = start(env).await;
    put_kv(&tc, "k1", b"v1").await;
    let mut txn1 = tc.begin_async_commit().await;
    assert_eq!(ok("get", txn1.get(b("k1")).await), Some(b("v1")));
    ok("put", txn1.put(b("k1"), b("v2")));
    for _ in 0..20 {
        tc.ts().await;
    }
    let mut txn2 = tc.begin_async_commit().await;
    assert_eq!(ok("get", txn2.get(b("k1")).await), Some(b("v1")));
    ok("commit", txn1.commit().await);
    assert_eq!(
        txn1.commit_outcome().map(|o| o.mode),
        Some(CommitMode::AsyncCommit)
    );
    assert_eq!(ok("get", txn2.get(b("k1")).await), Some(b("v1")));
    ok("rollback", txn2.rollback());
    let mut txn3 = tc.begin_async_commit().await;
    assert_eq!(ok("get", txn3.get(b("k1")).await), Some(b("v2")));
    ok("rollback", txn3.rollback());
}

/// `TestAsyncCommitLinearizability`: with linearizability (no causal consistency), of two
/// async-commit transactions the one committing later gets the larger commit timestamp.
pub async fn test_async_commit_linearizability<E: Env>(env: &E) {
    let tc = start(env).await;
    let options = TransactionOptions::new()
        .with_async_commit(true)
        .with_causal_consistency(false);
    let mut t1 = tc.begin_with(options.clone()).await;
    let mut t2 = tc.begin_with(options).await;
    ok("put", t1.put(b("a"), b("a1")));
    ok("put", t2.put(b("b"), b("b1")));
    let commit2 = ok("commit", t2.commit().await);
    let commit1 = ok("commit", t1.commit().await);
    assert!(commit2 < commit1, "{commit2:?} {commit1:?}");
    for txn in [&t1, &t2] {
        assert_eq!(
            txn.commit_outcome().map(|o| o.mode),
            Some(CommitMode::AsyncCommit)
        );
    }
}

/// `TestResolveTxnFallbackFromAsyncCommit`: an async-commit transaction whose primary,
/// secondary or both fell back to two phases at prewrite (`max_commit_ts` 1) and whose
/// locks expired is rolled back by readers, whichever key they read first: each of the six
/// cases reads the values committed before it.
pub async fn test_async_commit_resolve_txn_fallback_from_async_commit<E: Env>(env: &E) {
    let tc = start(env).await;
    let cases = [
        // (primary falls back, secondary falls back, read the primary first)
        (true, false, true),
        (true, false, false),
        (false, true, true),
        (false, true, false),
        (true, true, true),
        (true, true, false),
    ];
    for (primary_fallback, secondary_fallback, primary_first) in cases {
        let mut t0 = tc.begin().await;
        ok("put", t0.put(b("k0"), b("v00")));
        ok("put", t0.put(b("k1"), b("v10")));
        ok("commit", t0.commit().await);

        let start_ts = tc.ts().await;
        let max = |fallback: bool| {
            if fallback {
                1
            } else {
                far_max_commit_ts(start_ts)
            }
        };
        let answered = async_prewrite(
            &tc,
            start_ts,
            ("k0", "v01"),
            "k0",
            &["k1"],
            max(primary_fallback),
        );
        assert_eq!(answered == 0, primary_fallback);
        let answered = async_prewrite(
            &tc,
            start_ts,
            ("k1", "v11"),
            "k0",
            &["k1"],
            max(secondary_fallback),
        );
        assert_eq!(answered == 0, secondary_fallback);

        let order = if primary_first {
            [("k0", "v00"), ("k1", "v10")]
        } else {
            [("k1", "v10"), ("k0", "v00")]
        };
        for (key, value) in order {
            let txn = tc.begin().await;
            assert_eq!(
                ok("get", txn.get(b(key)).await),
                Some(b(value)),
                "case {primary_fallback} {secondary_fallback} {primary_first}: {key}"
            );
        }
    }
}
