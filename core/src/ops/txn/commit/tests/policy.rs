//! The commit timestamp's upper bound check and the prewrite lock policy (client-go's
//! `SetCommitTSUpperBoundCheck` and `SetPrewriteEncounterLockPolicy`).

use std::sync::{Arc, Mutex, PoisonError};

use super::*;
use crate::error::WriteConflictReason;
use crate::txn::commit::{CommitTsUpperBoundCheck, PrewriteLockPolicy};

/// A check that answers `verdict(n)` for its `n`th call (from 0) and records the
/// timestamps it was asked about.
fn recording_check(
    verdict: impl Fn(usize) -> bool + Send + Sync + 'static,
) -> (CommitTsUpperBoundCheck, Arc<Mutex<Vec<Timestamp>>>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&asked);
    let check = CommitTsUpperBoundCheck::new(move |ts| {
        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
        log.push(ts);
        verdict(log.len() - 1)
    });
    (check, asked)
}

fn asked(log: &Mutex<Vec<Timestamp>>) -> Vec<Timestamp> {
    log.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Async commit and 1PC asked for, and an upper bound check.
fn bounded_options(check: CommitTsUpperBoundCheck) -> CommitOptions {
    CommitOptions {
        async_commit: true,
        try_one_pc: true,
        commit_ts_upper_bound_check: Some(check),
        ..CommitOptions::default()
    }
}

fn no_resolve(options: CommitOptions) -> CommitOptions {
    CommitOptions {
        prewrite_lock_policy: PrewriteLockPolicy::NoResolve,
        ..options
    }
}

#[test]
fn an_upper_bound_check_rules_out_async_commit_and_one_pc_and_sees_the_commit_ts() {
    let mut core = core_with(Config::default().with_txn_commit_batch_size(1));
    let (check, log) = recording_check(|_| true);
    commit(&mut core, request(&["a", "b"], bounded_options(check)));
    let paced = drive_one_at_a_time(&mut core, &mut |_| None, &mut |_, _| {});
    let outcome = committed(&paced.events);
    assert_eq!(outcome.mode, CommitMode::TwoPhase);
    // Never tried, so neither fell back.
    assert!(!outcome.async_commit_fallback && !outcome.one_pc_fallback);
    assert_eq!(asked(&log), vec![outcome.commit_ts]);
    let ts = outcome.commit_ts.version();
    assert_eq!(
        paced.seen,
        vec![
            "prewrite [a] async=false 1pc=false secondaries=[]".to_owned(),
            "prewrite [b] async=false 1pc=false secondaries=[]".to_owned(),
            format!("commit [a] ts={ts} async=false"),
            format!("commit [b] ts={ts} async=false"),
        ]
    );
    // One timestamp, the commit's: no min_commit_ts floor is fetched for async commit.
    assert_eq!(count(&paced.pd, "pd.Tso"), 1, "{:#?}", paced.pd);
}

#[test]
fn a_failed_upper_bound_check_rolls_back_and_commits_nothing() {
    let mut core = core_with(Config::default().with_txn_commit_batch_size(1));
    let (check, log) = recording_check(|_| false);
    commit(&mut core, request(&["a", "b"], bounded_options(check)));
    let (seen, events) = drive(&mut core, &mut |_| None);
    let asked = asked(&log);
    assert_eq!(asked.len(), 1);
    assert_eq!(
        failed(&events),
        Error::CommitTsUpperBound {
            start_ts: Timestamp::from_version(START),
            commit_ts: asked[0],
        }
    );
    assert_eq!(
        seen,
        vec![
            "prewrite [a] async=false 1pc=false secondaries=[]",
            "prewrite [b] async=false 1pc=false secondaries=[]",
            "rollback [a]",
            "rollback [b]",
        ]
    );
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

#[test]
fn the_upper_bound_check_sees_the_commit_ts_after_the_commit_wait() {
    // The check refuses: the commit's error names the timestamp past the wait target.
    let mut core = core_with(Config::default());
    let (check, log) = recording_check(|_| false);
    let wait_until = Timestamp::from_version(START + 1);
    let options = CommitOptions {
        commit_wait_until_tso: Some(wait_until),
        ..bounded_options(check)
    };
    commit(&mut core, request(&["a"], options));
    let (_, events) = drive(&mut core, &mut |_| None);
    let asked = asked(&log);
    assert_eq!(asked.len(), 1);
    assert!(asked[0] > wait_until);
    assert!(matches!(
        failed(&events),
        Error::CommitTsUpperBound { commit_ts, .. } if commit_ts == asked[0]
    ));
}

#[test]
fn a_renewed_commit_ts_is_not_checked_again() {
    let mut core = core_with(Config::default());
    // Only the first timestamp passes: a second check would fail the commit.
    let (check, log) = recording_check(|n| n == 0);
    commit(&mut core, request(&["a"], bounded_options(check)));
    let mut commits = Vec::new();
    let (_, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Commit(r) => {
            commits.push(r.commit_version);
            (commits.len() == 1).then(|| {
                Ok(StoreResponse::Commit(kvrpcpb::CommitResponse {
                    error: Some(Box::new(kvrpcpb::KeyError {
                        commit_ts_expired: Some(kvrpcpb::CommitTsExpired {
                            start_ts: START,
                            attempted_commit_ts: r.commit_version,
                            key: key("a"),
                            min_commit_ts: r.commit_version + 5,
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                }))
            })
        }
        _ => None,
    });
    let outcome = committed(&events);
    assert_eq!(commits.len(), 2, "{commits:?}");
    assert_eq!(outcome.commit_ts.version(), commits[1]);
    assert_eq!(
        asked(&log),
        vec![Timestamp::from_version(commits[0])],
        "only the first commit ts is checked"
    );
}

fn locked_reply(errors: Vec<kvrpcpb::KeyError>) -> Option<Result<StoreResponse, RpcError>> {
    Some(Ok(StoreResponse::Prewrite(kvrpcpb::PrewriteResponse {
        errors,
        ..Default::default()
    })))
}

fn older_lock(key_: &[u8], ts: u64) -> kvrpcpb::KeyError {
    kvrpcpb::KeyError {
        locked: Some(Box::new(kvrpcpb::LockInfo {
            primary_lock: key("p"),
            lock_version: ts,
            key: Bytes::copy_from_slice(key_),
            lock_ttl: 3_000,
            txn_size: 1,
            lock_type: kvrpcpb::Op::Put as i32,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn assert_conflict_with(err: &Error, lock_ts: u64, lock_key: &str) {
    match err.key_error() {
        Some(KeyError::WriteConflict {
            start_ts,
            conflict_start_ts,
            conflict_commit_ts,
            key: conflict_key,
            reason,
            ..
        }) => {
            assert_eq!(start_ts.version(), START);
            assert_eq!(conflict_start_ts.version(), lock_ts);
            assert_eq!(conflict_commit_ts.version(), 0);
            assert_eq!(*conflict_key, key(lock_key));
            assert_eq!(*reason, WriteConflictReason::Optimistic);
        }
        _ => panic!("a write conflict expected, got {err:?}"),
    }
}

#[test]
fn no_resolve_turns_an_older_lock_into_a_write_conflict_and_rolls_back() {
    let mut core = core_with(Config::default().with_txn_commit_batch_size(1));
    commit(
        &mut core,
        request(&["a", "b"], no_resolve(CommitOptions::default())),
    );
    let (seen, events) = drive(&mut core, &mut |request| match request {
        // An older transaction's live lock: the default policy would check its status.
        StoreRequest::Prewrite(r) if r.mutations[0].key == key("b") => {
            locked_reply(vec![older_lock(b"b", 50)])
        }
        _ => None,
    });
    assert_conflict_with(&failed(&events), 50, "b");
    assert_eq!(
        seen,
        vec![
            "prewrite [a] async=false 1pc=false secondaries=[]",
            "prewrite [b] async=false 1pc=false secondaries=[]",
            "rollback [a]",
            "rollback [b]",
        ],
        "no status check, no resolution"
    );
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

#[test]
fn no_resolve_applies_to_the_holders_of_a_shared_lock() {
    let mut core = core_with(Config::default());
    commit(
        &mut core,
        request(&["a"], no_resolve(CommitOptions::default())),
    );
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(_) => {
            let holder = older_lock(b"a", 40).locked;
            locked_reply(vec![kvrpcpb::KeyError {
                locked: Some(Box::new(kvrpcpb::LockInfo {
                    key: key("a"),
                    shared_lock_infos: holder.into_iter().map(|lock| *lock).collect(),
                    ..Default::default()
                })),
                ..Default::default()
            }])
        }
        _ => None,
    });
    assert_conflict_with(&failed(&events), 40, "a");
    assert_eq!(count(&seen, "check"), 0, "{seen:#?}");
    assert_eq!(count(&seen, "resolve"), 0, "{seen:#?}");
}

#[test]
fn no_resolve_under_async_commit_fails_and_rolls_back() {
    let mut core = core_with(Config::default().with_txn_commit_batch_size(1));
    commit(&mut core, request(&["a", "b"], no_resolve(async_options())));
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(r) if r.mutations[0].key == key("b") => {
            locked_reply(vec![older_lock(b"b", 50)])
        }
        StoreRequest::Prewrite(_) => Some(Ok(StoreResponse::Prewrite(kvrpcpb::PrewriteResponse {
            min_commit_ts: 1_000_000,
            ..Default::default()
        }))),
        _ => None,
    });
    let err = failed(&events);
    assert!(!err.is_undetermined(), "{err}");
    assert_conflict_with(&err, 50, "b");
    assert_eq!(
        seen,
        vec![
            "prewrite [a] async=true 1pc=false secondaries=[b]",
            "prewrite [b] async=true 1pc=false secondaries=[]",
            "rollback [a]",
            "rollback [b]",
        ]
    );
}

#[test]
fn no_resolve_under_one_pc_fails_without_resolving() {
    let mut core = core_with(Config::default());
    commit(&mut core, request(&["a"], no_resolve(one_pc_options())));
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(_) => locked_reply(vec![older_lock(b"a", 50)]),
        _ => None,
    });
    assert_conflict_with(&failed(&events), 50, "a");
    // A refused 1PC prewrite wrote nothing: nothing to roll back.
    assert_eq!(
        seen,
        vec!["prewrite [a] async=false 1pc=true secondaries=[]"]
    );
}

#[test]
fn the_default_policy_still_resolves_an_older_lock() {
    let mut core = core_with(Config::default());
    let options = CommitOptions {
        prewrite_lock_policy: PrewriteLockPolicy::TryResolve,
        ..CommitOptions::default()
    };
    commit(&mut core, request(&["a"], options));
    let mut prewrites = 0;
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(_) => {
            prewrites += 1;
            if prewrites == 1 {
                locked_reply(vec![older_lock(b"a", 50)])
            } else {
                None
            }
        }
        StoreRequest::CheckTxnStatus(_) => Some(Ok(StoreResponse::CheckTxnStatus(
            kvrpcpb::CheckTxnStatusResponse {
                commit_version: 60,
                ..Default::default()
            },
        ))),
        _ => None,
    });
    assert_eq!(committed(&events).mode, CommitMode::TwoPhase);
    assert_eq!(count(&seen, "check lock_ts=50"), 1, "{seen:#?}");
}
