//! Async commit and 1PC: the commit ts, fallbacks to two phases, limits, undetermined outcomes.

use super::*;

#[test]
fn async_commit_commits_at_the_largest_min_commit_ts_answered() {
    let mut core = core_with(Config::default().with_txn_commit_batch_size(1));
    commit(&mut core, request(&["a", "b", "c"], async_options()));
    let mut answered = 1_000_000u64;
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(r) => {
            assert!(r.use_async_commit);
            assert!(r.max_commit_ts > r.min_commit_ts, "{r:?}");
            // Each store answers a different min_commit_ts; "b" the largest.
            answered += 10;
            let min = if r.mutations[0].key == key("b") {
                5_000_000
            } else {
                answered
            };
            Some(Ok(StoreResponse::Prewrite(kvrpcpb::PrewriteResponse {
                min_commit_ts: min,
                ..Default::default()
            })))
        }
        _ => None,
    });
    let outcome = committed(&events);
    assert_eq!(outcome.mode, CommitMode::AsyncCommit);
    assert_eq!(outcome.commit_ts.version(), 5_000_000);
    assert_eq!(
        seen[0], "prewrite [a] async=true 1pc=false secondaries=[b,c]",
        "the primary's lock names the secondaries"
    );
    assert_eq!(seen[1], "prewrite [b] async=true 1pc=false secondaries=[]");
    // Every key is committed afterwards, in the background, at that timestamp.
    let commits: Vec<&String> = seen.iter().filter(|l| l.starts_with("commit")).collect();
    assert_eq!(commits.len(), 3, "{seen:#?}");
    assert!(
        commits.iter().all(|l| l.contains("ts=5000000 async=true")),
        "{seen:#?}"
    );
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

#[test]
fn async_commit_falls_back_to_two_phases_when_a_store_declines() {
    let mut core = core_with(Config::default().with_txn_commit_batch_size(1));
    commit(&mut core, request(&["a", "b"], async_options()));
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(r) if r.mutations[0].key == key("a") => {
            Some(Ok(StoreResponse::Prewrite(kvrpcpb::PrewriteResponse {
                min_commit_ts: 900_000,
                ..Default::default()
            })))
        }
        // "b"'s store cannot compute a safe commit timestamp: min_commit_ts 0.
        _ => None,
    });
    let outcome = committed(&events);
    assert_eq!(outcome.mode, CommitMode::TwoPhase);
    assert!(outcome.async_commit_fallback);
    let ts = outcome.commit_ts.version();
    assert_eq!(seen[2], format!("commit [a] ts={ts} async=false"));
}

#[test]
fn async_commit_is_not_tried_past_the_key_limit() {
    let mut core = core_with(Config::default().with_async_commit_keys_limit(1));
    commit(&mut core, request(&["a", "b"], async_options()));
    let (seen, events) = drive(&mut core, &mut |_| None);
    let outcome = committed(&events);
    assert_eq!(outcome.mode, CommitMode::TwoPhase);
    assert!(
        !outcome.async_commit_fallback,
        "never tried, so no fallback"
    );
    assert_eq!(
        seen[0],
        "prewrite [a,b] async=false 1pc=false secondaries=[]"
    );
}

#[test]
fn a_lost_async_commit_prewrite_reply_is_undetermined() {
    let mut core = core_with(Config::default());
    commit(&mut core, request(&["a"], async_options()));
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(_) => Some(Err(RpcError::ConnectionLost("injected".into()))),
        _ => None,
    });
    assert!(failed(&events).is_undetermined());
    assert!(
        !seen.iter().any(|line| line.starts_with("rollback")),
        "{seen:#?}"
    );
}

#[test]
fn one_pc_commits_in_one_request() {
    let mut core = core_with(Config::default());
    commit(&mut core, request(&["a", "b"], one_pc_options()));
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(r) => {
            assert!(r.try_one_pc);
            Some(Ok(StoreResponse::Prewrite(kvrpcpb::PrewriteResponse {
                one_pc_commit_ts: 777_777,
                ..Default::default()
            })))
        }
        _ => None,
    });
    let outcome = committed(&events);
    assert_eq!(outcome.mode, CommitMode::OnePc);
    assert_eq!(outcome.commit_ts.version(), 777_777);
    assert_eq!(
        seen,
        vec!["prewrite [a,b] async=false 1pc=true secondaries=[]"]
    );
}

#[test]
fn one_pc_is_off_when_the_writes_need_two_requests() {
    let mut core = core_with(Config::default().with_txn_commit_batch_size(1));
    commit(&mut core, request(&["a", "b"], one_pc_options()));
    let (seen, events) = drive(&mut core, &mut |_| None);
    let outcome = committed(&events);
    assert_eq!(outcome.mode, CommitMode::TwoPhase);
    assert!(outcome.one_pc_fallback);
    assert!(
        seen.iter()
            .filter(|l| l.starts_with("prewrite"))
            .all(|l| l.contains("1pc=false"))
    );
}

#[test]
fn one_pc_declined_by_the_store_falls_back_to_two_phases() {
    let mut core = core_with(Config::default());
    commit(&mut core, request(&["a"], one_pc_options()));
    // An empty answer: prewritten, but no 1PC commit timestamp.
    let (seen, events) = drive(&mut core, &mut |_| None);
    let outcome = committed(&events);
    assert_eq!(outcome.mode, CommitMode::TwoPhase);
    assert!(outcome.one_pc_fallback);
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert!(seen[1].starts_with("commit [a]"));
}

#[test]
fn a_failed_one_pc_leaves_nothing_to_roll_back() {
    let mut core = core_with(Config::default());
    commit(&mut core, request(&["a"], one_pc_options()));
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(_) => Some(Ok(StoreResponse::Prewrite(kvrpcpb::PrewriteResponse {
            errors: vec![kvrpcpb::KeyError {
                already_exist: Some(kvrpcpb::AlreadyExist { key: key("a") }),
                ..Default::default()
            }],
            ..Default::default()
        }))),
        _ => None,
    });
    assert!(matches!(
        failed(&events).key_error(),
        Some(KeyError::AlreadyExists { .. })
    ));
    assert_eq!(seen.len(), 1, "{seen:#?}");
}
