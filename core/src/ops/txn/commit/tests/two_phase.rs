//! Two-phase commit: prewrite and commit order, conflicts, locks met, expired commit ts, undetermined outcomes.

use super::*;

#[test]
fn two_phase_commit_prewrites_all_then_commits_the_primary_first() {
    // A tiny batch limit cuts the three keys into three requests.
    let mut core = core_with(Config::default().with_txn_commit_batch_size(1));
    commit(
        &mut core,
        request(&["a", "b", "c"], CommitOptions::default()),
    );
    let (seen, events) = drive(&mut core, &mut |_| None);
    let outcome = committed(&events);
    assert_eq!(outcome.mode, CommitMode::TwoPhase);
    let ts = outcome.commit_ts.version();
    assert_eq!(
        seen,
        vec![
            "prewrite [a] async=false 1pc=false secondaries=[]".to_owned(),
            "prewrite [b] async=false 1pc=false secondaries=[]".to_owned(),
            "prewrite [c] async=false 1pc=false secondaries=[]".to_owned(),
            format!("commit [a] ts={ts} async=false"),
            format!("commit [b] ts={ts} async=false"),
            format!("commit [c] ts={ts} async=false"),
        ]
    );
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

#[test]
fn the_primary_batch_carries_its_region_neighbours() {
    let mut core = core_with(Config::default());
    commit(
        &mut core,
        request(&["a", "b", "c"], CommitOptions::default()),
    );
    let (seen, events) = drive(&mut core, &mut |_| None);
    let ts = committed(&events).commit_ts.version();
    // One region, one batch: one prewrite and one commit carry everything.
    assert_eq!(
        seen,
        vec![
            "prewrite [a,b,c] async=false 1pc=false secondaries=[]".to_owned(),
            format!("commit [a,b,c] ts={ts} async=false"),
        ]
    );
}

#[test]
fn a_write_conflict_rolls_back_what_was_prewritten_primary_first() {
    let mut core = core_with(Config::default().with_txn_commit_batch_size(1));
    commit(&mut core, request(&["a", "b"], CommitOptions::default()));
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(r) if r.mutations[0].key == key("b") => {
            Some(Ok(StoreResponse::Prewrite(kvrpcpb::PrewriteResponse {
                errors: vec![kvrpcpb::KeyError {
                    conflict: Some(kvrpcpb::WriteConflict {
                        start_ts: START,
                        conflict_ts: 150,
                        conflict_commit_ts: 160,
                        key: key("b"),
                        primary: key("a"),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            })))
        }
        _ => None,
    });
    let err = failed(&events);
    assert!(
        matches!(err.key_error(), Some(KeyError::WriteConflict { conflict_commit_ts, .. })
            if conflict_commit_ts.version() == 160),
        "{err}"
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
fn an_optimistic_prewrite_meeting_a_newer_lock_fails_as_a_conflict() {
    let mut core = core_with(Config::default());
    commit(&mut core, request(&["a"], CommitOptions::default()));
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(_) => Some(Ok(StoreResponse::Prewrite(kvrpcpb::PrewriteResponse {
            errors: vec![lock_error(b"a", b"z", START + 50)],
            ..Default::default()
        }))),
        _ => None,
    });
    let err = failed(&events);
    assert!(
        matches!(err.key_error(), Some(KeyError::WriteConflict { conflict_start_ts, .. })
            if conflict_start_ts.version() == START + 50),
        "{err}"
    );
    // No status check: the conflict is certain.
    assert!(
        !seen.iter().any(|line| line.starts_with("check")),
        "{seen:#?}"
    );
}

fn lock_error(key: &[u8], primary: &[u8], ts: u64) -> kvrpcpb::KeyError {
    kvrpcpb::KeyError {
        locked: Some(Box::new(kvrpcpb::LockInfo {
            primary_lock: Bytes::copy_from_slice(primary),
            lock_version: ts,
            key: Bytes::copy_from_slice(key),
            lock_ttl: 3_000,
            txn_size: 1,
            lock_type: kvrpcpb::Op::Put as i32,
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[test]
fn a_prewrite_meeting_an_older_committed_lock_resolves_it_and_goes_again() {
    let mut core = core_with(Config::default());
    commit(&mut core, request(&["a"], CommitOptions::default()));
    let mut prewrites = 0;
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(_) => {
            prewrites += 1;
            if prewrites == 1 {
                Some(Ok(StoreResponse::Prewrite(kvrpcpb::PrewriteResponse {
                    errors: vec![lock_error(b"a", b"p", 50)],
                    ..Default::default()
                })))
            } else {
                Some(Ok(prewrite_ok()))
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
    let ts = committed(&events).commit_ts.version();
    assert_eq!(
        seen,
        vec![
            "prewrite [a] async=false 1pc=false secondaries=[]".to_owned(),
            "check lock_ts=50".to_owned(),
            "resolve start=50 commit=60".to_owned(),
            "prewrite [a] async=false 1pc=false secondaries=[]".to_owned(),
            format!("commit [a] ts={ts} async=false"),
        ]
    );
}

#[test]
fn an_expired_commit_ts_is_renewed_and_the_primary_committed_again() {
    let mut core = core_with(Config::default());
    commit(&mut core, request(&["a"], CommitOptions::default()));
    let mut commits = Vec::new();
    let (_, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Commit(r) => {
            commits.push(r.commit_version);
            if commits.len() == 1 {
                Some(Ok(StoreResponse::Commit(kvrpcpb::CommitResponse {
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
                })))
            } else {
                None
            }
        }
        _ => None,
    });
    let outcome = committed(&events);
    assert_eq!(commits.len(), 2, "{commits:?}");
    assert!(commits[1] > commits[0]);
    assert_eq!(outcome.commit_ts.version(), commits[1]);
}

#[test]
fn a_lost_primary_commit_reply_is_undetermined_and_nothing_is_rolled_back() {
    // A short budget: the commit keeps failing in transport until it runs out.
    let mut core = core_with(Config::default());
    commit(&mut core, request(&["a"], CommitOptions::default()));
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Commit(_) => Some(Err(RpcError::ConnectionLost("injected".into()))),
        _ => None,
    });
    let err = failed(&events);
    assert!(err.is_undetermined(), "{err}");
    assert!(
        !seen.iter().any(|line| line.starts_with("rollback")),
        "{seen:#?}"
    );
}

#[test]
fn an_undetermined_region_error_on_the_primary_commit_is_undetermined() {
    let mut core = core_with(Config::default());
    commit(&mut core, request(&["a"], CommitOptions::default()));
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Commit(_) => {
            let mut response = StoreResponse::Commit(Default::default());
            response.set_region_error(tikv_proto::errorpb::Error {
                message: "undetermined".into(),
                undetermined_result: Some(Default::default()),
                ..Default::default()
            });
            Some(Ok(response))
        }
        _ => None,
    });
    assert!(failed(&events).is_undetermined());
    assert!(
        !seen.iter().any(|line| line.starts_with("rollback")),
        "{seen:#?}"
    );
}

#[test]
fn a_two_phase_prewrite_retries_an_undetermined_region_error() {
    let mut core = core_with(Config::default());
    commit(&mut core, request(&["a"], CommitOptions::default()));
    let mut prewrites = 0;
    let (_, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(_) => {
            prewrites += 1;
            if prewrites > 1 {
                return None;
            }
            let mut response = StoreResponse::Prewrite(Default::default());
            response.set_region_error(tikv_proto::errorpb::Error {
                undetermined_result: Some(Default::default()),
                ..Default::default()
            });
            Some(Ok(response))
        }
        _ => None,
    });
    assert_eq!(committed(&events).mode, CommitMode::TwoPhase);
    assert_eq!(prewrites, 2);
}
