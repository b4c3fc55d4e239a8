//! The commit timestamp's upper bound check (client-go `SetCommitTSUpperBoundCheck`) and
//! the prewrite lock policy (`SetPrewriteEncounterLockPolicy`). client-go has no tests of
//! either; these are this client's own, named `test_policy_`.
//!
//! The cluster is split at `b`, so that a commit of `a` and `b` prewrites two regions and
//! what one of them prewrote must be rolled back when the commit fails.

use std::sync::{Arc, Mutex, PoisonError};

use tikv_core::error::{KeyError, WriteConflictReason};
use tikv_core::rpc::StoreRequest;
use tikv_core::transaction::TransactionOptions;
use tikv_core::{CommitKnobs, CommitMode, Error, PrewriteLockPolicy, Timestamp};

use super::{Env, TxnCluster, b, err, ok, start};

async fn start_split<E: Env>(env: &E) -> TxnCluster<'_, E> {
    let tc = start(env).await;
    tc.split(&[b"b"]);
    tc
}

/// Options asking for async commit and 1PC, with a check that records the timestamps it
/// is asked about and answers `verdict`.
fn checked(verdict: bool) -> (TransactionOptions, Arc<Mutex<Vec<Timestamp>>>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&asked);
    let options = TransactionOptions::new()
        .with_async_commit(true)
        .with_try_one_pc(true)
        .with_commit_ts_upper_bound_check(move |ts| {
            log.lock().unwrap_or_else(PoisonError::into_inner).push(ts);
            verdict
        });
    (options, asked)
}

fn asked(log: &Mutex<Vec<Timestamp>>) -> Vec<Timestamp> {
    log.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// A commit timestamp the check accepts is the one committed at; async commit and 1PC,
/// though asked for, are not used (nor counted as fallbacks).
pub async fn test_policy_commit_ts_upper_bound_check_passes<E: Env>(env: &E) {
    let tc = start_split(env).await;
    let (options, log) = checked(true);
    let mut txn = tc.begin_with(options).await;
    ok("put", txn.put(b("a"), b("a1")));
    ok("put", txn.put(b("b"), b("b1")));
    tc.requests.clear();
    let commit_ts = ok("commit", txn.commit().await).unwrap_or_else(|| panic!("committed"));
    assert_eq!(asked(&log), vec![commit_ts]);
    let outcome = txn.commit_outcome().unwrap_or_else(|| panic!("an outcome"));
    assert_eq!(outcome.mode, CommitMode::TwoPhase);
    assert!(!outcome.async_commit_fallback && !outcome.one_pc_fallback);
    let prewrites = tc.requests.prewrites();
    assert_eq!(prewrites.len(), 2, "{prewrites:?}");
    assert!(
        prewrites
            .iter()
            .all(|p| !p.use_async_commit && !p.try_one_pc),
        "{prewrites:?}"
    );
    // No min_commit_ts floor for async commit: one timestamp, the commit's.
    assert_eq!(tc.requests.tso_requests(), 1);
    tc.check_values(&[("a", "a1"), ("b", "b1")]).await;
}

/// A commit timestamp the check refuses fails the commit with `CommitTsUpperBound`: no
/// key is committed and the prewritten locks are rolled back.
pub async fn test_policy_commit_ts_upper_bound_check_fails<E: Env>(env: &E) {
    let tc = start_split(env).await;
    tc.must_commit(&[("a", "a0"), ("b", "b0")]).await;
    let (options, log) = checked(false);
    let mut txn = tc.begin_with(options).await;
    ok("put", txn.put(b("a"), b("a1")));
    ok("put", txn.put(b("b"), b("b1")));
    tc.requests.clear();
    let error = err("commit", txn.commit().await);
    let asked = asked(&log);
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(
        error,
        Error::CommitTsUpperBound {
            start_ts: txn.start_ts(),
            commit_ts: asked[0],
        }
    );
    assert!(txn.commit_outcome().is_none());
    let prewrites = tc.requests.prewrites();
    assert_eq!(prewrites.len(), 2, "{prewrites:?}");
    assert!(
        prewrites
            .iter()
            .all(|p| !p.use_async_commit && !p.try_one_pc),
        "{prewrites:?}"
    );
    tc.wait_unlocked(b"a").await;
    tc.wait_unlocked(b"b").await;
    assert_eq!(
        tc.requests
            .count(|request| matches!(request, StoreRequest::Commit(_))),
        0
    );
    assert!(
        tc.requests
            .count(|request| matches!(request, StoreRequest::BatchRollback(_)))
            >= 2
    );
    tc.check_values(&[("a", "a0"), ("b", "b0")]).await;
    // The rollback stands: the transaction cannot be prewritten again.
    let mut again = tc
        .begin_with(TransactionOptions::new().with_start_ts(txn.start_ts()))
        .await;
    ok("put", again.put(b("a"), b("a1")));
    assert!(again.commit().await.is_err());
}

/// One case of [`test_policy_prewrite_no_resolve`].
struct Case {
    name: &'static str,
    options: TransactionOptions,
    /// The committed keys besides the locked one.
    others: &'static [&'static str],
    locked: &'static str,
}

/// Under the no-resolve policy a prewrite meeting another transaction's lock (an older
/// one, which the default policy would resolve) fails the commit with a write conflict
/// naming that transaction and key, without asking about its status or resolving it:
/// the lock stays, and what the commit prewrote elsewhere is rolled back. In two phases,
/// with async commit, and with 1PC.
pub async fn test_policy_prewrite_no_resolve<E: Env>(env: &E) {
    let tc = start_split(env).await;
    let no_resolve =
        || TransactionOptions::new().with_prewrite_lock_policy(PrewriteLockPolicy::NoResolve);
    let cases = [
        Case {
            name: "two phases",
            options: no_resolve(),
            others: &["a1"],
            locked: "b1",
        },
        Case {
            name: "async commit",
            options: no_resolve().with_async_commit(true),
            others: &["a2"],
            locked: "b2",
        },
        Case {
            name: "1pc",
            options: no_resolve().with_try_one_pc(true),
            others: &[],
            locked: "b3",
        },
    ];
    for case in cases {
        let name = case.name;
        // An older transaction, stopped after its prewrite, holds a lock on `locked`.
        let mut holder = tc
            .begin_with(TransactionOptions::new().with_testing_knobs(CommitKnobs {
                stop_after_prewrite: true,
                ..CommitKnobs::default()
            }))
            .await;
        ok("put", holder.put(b(case.locked), b("holder")));
        ok("holder prewrite", holder.commit().await);

        let mut txn = tc.begin_with(case.options).await;
        for key in case.others {
            ok("put", txn.put(b(key), b("v")));
        }
        ok("put", txn.put(b(case.locked), b("v")));
        tc.requests.clear();
        let error = err(name, txn.commit().await);
        match error.key_error() {
            Some(KeyError::WriteConflict {
                start_ts,
                conflict_start_ts,
                conflict_commit_ts,
                key,
                reason,
                ..
            }) => {
                assert_eq!(*start_ts, txn.start_ts(), "{name}");
                assert_eq!(*conflict_start_ts, holder.start_ts(), "{name}");
                assert_eq!(conflict_commit_ts.version(), 0, "{name}");
                assert_eq!(*key, b(case.locked), "{name}");
                assert_eq!(*reason, WriteConflictReason::Optimistic, "{name}");
            }
            _ => panic!("{name}: a write conflict expected, got {error:?}"),
        }
        let resolving = tc.requests.count(|request| {
            matches!(
                request,
                StoreRequest::CheckTxnStatus(_)
                    | StoreRequest::ResolveLock(_)
                    | StoreRequest::CheckSecondaryLocks(_)
            )
        });
        assert_eq!(resolving, 0, "{name}: {:#?}", tc.requests.all());
        let lock = tc
            .lock(case.locked.as_bytes())
            .unwrap_or_else(|| panic!("{name}: the holder's lock stays"));
        assert_eq!(lock.lock_version, holder.start_ts().version(), "{name}");
        for key in case.others {
            tc.wait_unlocked(key.as_bytes()).await;
            assert_eq!(tc.get(key).await, None, "{name}");
        }
    }
}
