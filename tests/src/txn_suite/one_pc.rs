//! `integration_tests/1pc_test.go` (`testOnePCSuite`): one-phase commit, when it is used
//! and what it commits. The Go suite runs unistore with one store and one region; so does
//! this one until a test splits it. `Test1PCWithMultiDC` is not ported (transaction
//! scopes do not exist here).

use tikv_core::rpc::StoreRequest;
use tikv_core::{CommitMode, Timestamp};

use super::{Env, TxnCluster, b, err, ok, start, undetermined};

async fn must_get_from_snapshot<E: Env>(
    tc: &TxnCluster<'_, E>,
    version: Timestamp,
    key: &str,
    value: &str,
) {
    assert_eq!(
        tc.get_at(version, key).await,
        Some(b(value)),
        "{key} at {version}"
    );
}

async fn must_get_none_from_snapshot<E: Env>(
    tc: &TxnCluster<'_, E>,
    version: Timestamp,
    key: &str,
) {
    assert_eq!(tc.get_at(version, key).await, None, "{key} at {version}");
}

fn before(ts: Timestamp) -> Timestamp {
    Timestamp::from_version(ts.version() - 1)
}

/// `Test1PC`: a 1PC transaction commits in one request, with a commit timestamp after its
/// start and no TTL manager; without the option the commit takes two phases; several keys
/// commit at one version; an overwrite keeps the older version readable below it.
pub async fn test_1pc<E: Env>(env: &E) {
    let tc = start(env).await;
    let mut txn = tc.begin_1pc().await;
    ok("put", txn.put(b("k1"), b("v1")));
    tc.requests.clear();
    let commit_ts = ok("commit", txn.commit().await).unwrap_or_else(|| panic!("committed"));
    let outcome = txn.commit_outcome().unwrap_or_else(|| panic!("an outcome"));
    assert_eq!(outcome.mode, CommitMode::OnePc);
    assert_eq!(outcome.commit_ts, commit_ts);
    assert!(commit_ts > txn.start_ts());
    assert_eq!(
        tc.requests
            .count(|r| matches!(r, StoreRequest::TxnHeartBeat(_))),
        0,
        "no TTL manager"
    );

    // Not asked for: two phases.
    let mut txn = tc.begin().await;
    ok("put", txn.put(b("k2"), b("v2")));
    let commit_ts = ok("commit", txn.commit().await).unwrap_or_else(|| panic!("committed"));
    assert_eq!(
        txn.commit_outcome().map(|o| o.mode),
        Some(CommitMode::TwoPhase)
    );
    assert!(commit_ts > txn.start_ts());

    // Several keys.
    let mut txn = tc.begin_1pc().await;
    for (key, value) in [("k3", "v3"), ("k4", "v4"), ("k5", "v5")] {
        ok("put", txn.put(b(key), b(value)));
    }
    let commit_ts = ok("commit", txn.commit().await).unwrap_or_else(|| panic!("committed"));
    assert_eq!(
        txn.commit_outcome().map(|o| o.mode),
        Some(CommitMode::OnePc)
    );
    assert!(commit_ts > txn.start_ts());
    for (key, value) in [("k3", "v3"), ("k4", "v4"), ("k5", "v5")] {
        must_get_from_snapshot(&tc, commit_ts, key, value).await;
        must_get_none_from_snapshot(&tc, before(commit_ts), key).await;
    }

    // Overwriting.
    let mut txn = tc.begin_1pc().await;
    ok("put", txn.put(b("k5"), b("v5new")));
    let commit_ts = ok("commit", txn.commit().await).unwrap_or_else(|| panic!("committed"));
    assert_eq!(
        txn.commit_outcome().map(|o| o.mode),
        Some(CommitMode::OnePc)
    );
    assert!(commit_ts > txn.start_ts());
    must_get_from_snapshot(&tc, commit_ts, "k5", "v5new").await;
    must_get_from_snapshot(&tc, before(commit_ts), "k5", "v5").await;

    let now = tc.ts().await;
    for (key, value) in [
        ("k1", "v1"),
        ("k2", "v2"),
        ("k3", "v3"),
        ("k4", "v4"),
        ("k5", "v5new"),
    ] {
        must_get_from_snapshot(&tc, now, key, value).await;
    }
}

/// `Test1PCIsolation`: a 1PC commit after many TSO calls still lands after a reader that
/// began before it: the reader keeps seeing the old value.
pub async fn test_1pc_isolation<E: Env>(env: &E) {
    let tc = start(env).await;
    let key = "isolation_k";
    let mut txn = tc.begin_1pc().await;
    ok("put", txn.put(b(key), b("v1")));
    ok("commit", txn.commit().await);

    let mut txn = tc.begin_1pc().await;
    ok("put", txn.put(b(key), b("v2")));
    // If the commit timestamp were computed wrongly, it would likely fall below txn2's start.
    for _ in 0..10 {
        tc.ts().await;
    }
    let txn2 = tc.begin_1pc().await;
    assert_eq!(ok("get", txn2.get(b(key)).await), Some(b("v1")));
    let commit_ts = ok("commit", txn.commit().await).unwrap_or_else(|| panic!("committed"));
    assert_eq!(
        txn.commit_outcome().map(|o| o.mode),
        Some(CommitMode::OnePc)
    );
    assert_eq!(ok("get", txn2.get(b(key)).await), Some(b("v1")));
    must_get_from_snapshot(&tc, commit_ts, key, "v2").await;
    must_get_from_snapshot(&tc, before(commit_ts), key, "v1").await;
}

/// `Test1PCDisallowMultiRegion`: 1PC is not used for writes to more than one region; the
/// commit falls back to two phases.
pub async fn test_1pc_disallow_multi_region<E: Env>(env: &E) {
    let tc = start(env).await;
    let pairs = [("k0", "v0"), ("k1", "v1"), ("k2", "v2"), ("k3", "v3")];
    let mut txn = tc.begin_1pc().await;
    ok("put", txn.put(b("k0"), b("v0")));
    ok("put", txn.put(b("k3"), b("v3")));
    ok("commit", txn.commit().await);

    tc.split(&[b"k2"]);
    let mut txn = tc.begin_1pc().await;
    ok("put", txn.put(b("k1"), b("v1")));
    ok("put", txn.put(b("k2"), b("v2")));
    let commit_ts = ok("commit", txn.commit().await).unwrap_or_else(|| panic!("committed"));
    let outcome = txn.commit_outcome().unwrap_or_else(|| panic!("an outcome"));
    assert_eq!(outcome.mode, CommitMode::TwoPhase);
    assert!(outcome.one_pc_fallback);
    assert!(commit_ts > txn.start_ts());
    let now = tc.ts().await;
    for (key, value) in pairs {
        must_get_from_snapshot(&tc, now, key, value).await;
    }
}

/// `Test1PCLinearizability`: of two transactions, the one that commits later gets the
/// larger commit timestamp, whichever began first. (The Go test begins them without 1PC;
/// so does this one.)
pub async fn test_1pc_linearizability<E: Env>(env: &E) {
    let tc = start(env).await;
    let mut t1 = tc.begin().await;
    let mut t2 = tc.begin().await;
    ok("put", t1.put(b("linear_a"), b("a1")));
    ok("put", t2.put(b("linear_b"), b("b1")));
    let commit2 = ok("commit", t2.commit().await);
    let commit1 = ok("commit", t1.commit().await);
    assert!(commit2 < commit1, "{commit2:?} {commit1:?}");
}

/// `TestTxnCommitCounter`: one commit each with two phases, async commit and 1PC. Go
/// counts them in its metrics; this client has none, so each commit's reported mode is
/// checked instead.
pub async fn test_1pc_txn_commit_counter<E: Env>(env: &E) {
    let tc = start(env).await;
    let mut txn = tc.begin().await;
    ok("put", txn.put(b("counter_k"), b("v")));
    ok("commit", txn.commit().await);
    assert_eq!(
        txn.commit_outcome().map(|o| o.mode),
        Some(CommitMode::TwoPhase)
    );

    let mut txn = tc.begin_async_commit().await;
    ok("put", txn.put(b("counter_k1"), b("v1")));
    ok("commit", txn.commit().await);
    assert_eq!(
        txn.commit_outcome().map(|o| o.mode),
        Some(CommitMode::AsyncCommit)
    );

    let mut txn = tc.begin_1pc().await;
    ok("put", txn.put(b("counter_k2"), b("v2")));
    ok("commit", txn.commit().await);
    assert_eq!(
        txn.commit_outcome().map(|o| o.mode),
        Some(CommitMode::OnePc)
    );
}

/// `TestFailWithUndeterminedResult` (1PC): an undetermined answer to a 1PC prewrite fails
/// the commit as undetermined (it may have committed).
pub async fn test_1pc_fail_with_undetermined_result<E: Env>(env: &E) {
    let tc = start(env).await;
    let mut txn = tc.begin_1pc().await;
    ok("put", txn.put(b("undetermined_key"), b("value")));
    tc.inject("KvPrewrite", undetermined(), 1);
    let e = err("commit", txn.commit().await);
    assert!(e.is_undetermined(), "{e}");
}
