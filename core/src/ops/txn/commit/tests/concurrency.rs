//! The committer's in-flight cap (client-go's committer concurrency).

use super::*;

#[test]
fn the_committer_keeps_at_most_its_concurrency_in_flight() {
    // 300 keys, one per request (client-go's batchExecutor with CommitterConcurrency 4).
    let config = Config::default()
        .with_txn_commit_batch_size(1)
        .with_committer_concurrency(4);
    let mut core = core_with(config);
    let keys = many_keys(300);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    commit(&mut core, request(&keys, CommitOptions::default()));
    let paced = drive_one_at_a_time(&mut core, &mut |_| None, &mut |_, _| {});
    let outcome = committed(&paced.events);
    assert_eq!(outcome.mode, CommitMode::TwoPhase);
    assert_eq!(
        paced.peak, 4,
        "never more than the cap, and the cap is used"
    );
    assert_eq!(count(&paced.seen, "prewrite"), 300);
    assert_eq!(count(&paced.seen, "commit"), 300);
    // Each request carries one key, and every key is prewritten and committed once.
    for key in &keys {
        assert_eq!(count(&paced.seen, &format!("prewrite [{key}]")), 1, "{key}");
        assert_eq!(count(&paced.seen, &format!("commit [{key}] ")), 1, "{key}");
    }
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

#[test]
fn the_default_concurrency_is_client_gos() {
    assert_eq!(Config::default().committer_concurrency(), 128);
    assert_eq!(
        Config::default()
            .with_committer_concurrency(0)
            .committer_concurrency(),
        1
    );
    // 300 batches with the default cap: 128 out at once.
    let mut core = core_with(Config::default().with_txn_commit_batch_size(1));
    let keys = many_keys(300);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    commit(&mut core, request(&keys, CommitOptions::default()));
    let paced = drive_one_at_a_time(&mut core, &mut |_| None, &mut |_, _| {});
    let _ = committed(&paced.events);
    assert_eq!(paced.peak, 128);
}

#[test]
fn a_capped_prewrite_that_fails_sends_no_more_and_rolls_back_within_the_cap() {
    let config = Config::default()
        .with_txn_commit_batch_size(1)
        .with_committer_concurrency(4);
    let mut core = core_with(config);
    let keys = many_keys(300);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    commit(&mut core, request(&keys, CommitOptions::default()));
    let paced = drive_one_at_a_time(
        &mut core,
        &mut |request| match request {
            StoreRequest::Prewrite(r) if r.mutations[0].key == key("k010") => {
                Some(Ok(StoreResponse::Prewrite(kvrpcpb::PrewriteResponse {
                    errors: vec![kvrpcpb::KeyError {
                        conflict: Some(kvrpcpb::WriteConflict {
                            start_ts: START,
                            conflict_ts: 150,
                            conflict_commit_ts: 160,
                            key: key("k010"),
                            primary: key("k000"),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                })))
            }
            _ => None,
        },
        &mut |_, _| {},
    );
    let err = failed(&paced.events);
    assert!(
        matches!(err.key_error(), Some(KeyError::WriteConflict { .. })),
        "{err}"
    );
    // The prewrites queued behind the cap were never sent.
    let prewrites = count(&paced.seen, "prewrite");
    assert!(prewrites < 20, "{prewrites} prewrites sent");
    // The rollback covers every key, primary first, also within the cap.
    assert_eq!(count(&paced.seen, "rollback"), 300);
    let first_rollback = paced
        .seen
        .iter()
        .position(|line| line.starts_with("rollback"))
        .unwrap_or_else(|| panic!("{:#?}", paced.seen));
    assert_eq!(paced.seen[first_rollback], "rollback [k000]");
    assert!(paced.peak <= 4, "peak {}", paced.peak);
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

#[test]
fn a_capped_commit_abandoned_during_prewrite_still_rolls_back() {
    let config = Config::default()
        .with_txn_commit_batch_size(1)
        .with_committer_concurrency(4);
    let mut core = core_with(config);
    let keys = many_keys(300);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let op = core.handle_command(
        Time::ZERO,
        Command::Txn(TxnCommand::Commit(Box::new(request(
            &keys,
            CommitOptions::default(),
        )))),
    );
    // The caller goes away after 50 prewrites were answered.
    let paced = drive_one_at_a_time(&mut core, &mut |_| None, &mut |core, answered| {
        if answered == 50 {
            core.cancel(Time::ZERO, op);
        }
    });
    assert!(
        paced.events.is_empty(),
        "nobody hears an abandoned commit: {:?}",
        paced.events
    );
    // Every key was prewritten (the commit stays to clean up) and then rolled back; none
    // committed.
    assert_eq!(count(&paced.seen, "prewrite"), 300);
    assert_eq!(count(&paced.seen, "rollback"), 300);
    assert_eq!(count(&paced.seen, "commit"), 0);
    assert!(paced.peak <= 4, "peak {}", paced.peak);
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

#[test]
fn a_capped_batch_backing_off_does_not_hold_up_the_others() {
    let config = Config::default()
        .with_txn_commit_batch_size(1)
        .with_committer_concurrency(4);
    let mut core = core_with(config);
    let keys = many_keys(300);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    commit(&mut core, request(&keys, CommitOptions::default()));
    let mut busy_once = true;
    let paced = drive_one_at_a_time(
        &mut core,
        &mut |request| match request {
            StoreRequest::Prewrite(r) if r.mutations[0].key == key("k005") && busy_once => {
                busy_once = false;
                let mut response = prewrite_ok();
                response.set_region_error(tikv_proto::errorpb::Error {
                    server_is_busy: Some(Default::default()),
                    ..Default::default()
                });
                Some(Ok(response))
            }
            _ => None,
        },
        &mut |_, _| {},
    );
    let _ = committed(&paced.events);
    // The other 299 prewrites went out while k005 slept; it went again last.
    let attempts: Vec<usize> = paced
        .seen
        .iter()
        .enumerate()
        .filter(|(_, line)| line.starts_with("prewrite [k005]"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[1], 300, "{attempts:?}");
    assert!(paced.peak <= 4, "peak {}", paced.peak);
}
