//! A commit's life: abandonment, the TTL heartbeat, the stop-after-prewrite knob, bad requests, existence checks, the backoff budget.

use super::*;

#[test]
fn a_commit_abandoned_during_prewrite_rolls_back_and_reports_nothing() {
    let mut core = core_with(Config::default());
    let op = core.handle_command(
        Time::ZERO,
        Command::Txn(TxnCommand::Commit(Box::new(request(
            &["a"],
            CommitOptions::default(),
        )))),
    );
    // The prewrite is out; the caller goes away before it is answered.
    let mut pending = Vec::new();
    while let Some(transmit) = core.poll_transmit() {
        pending.push(transmit);
    }
    core.cancel(Time::ZERO, op);
    let mut responder = Responder::default();
    for transmit in pending {
        let reply = responder.answer(&transmit);
        core.handle_reply(Time::ZERO, transmit.id, reply);
    }
    let (seen, events) = drive(&mut core, &mut |_| None);
    assert!(
        events.is_empty(),
        "nobody hears an abandoned commit: {events:?}"
    );
    assert_eq!(
        seen,
        vec![
            "prewrite [a] async=false 1pc=false secondaries=[]",
            "rollback [a]"
        ],
        "prewritten, then rolled back instead of committed"
    );
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

#[test]
fn a_large_transaction_keeps_its_primary_alive_while_it_commits() {
    // Everything counts as large; heartbeats every 50 ms.
    let config = Config::default()
        .with_txn_commit_batch_size(1)
        .with_ttl_refreshed_txn_size(0)
        .with_managed_lock_ttl(Duration::from_millis(100));
    let mut core = core_with(config);
    commit(&mut core, request(&["a", "b"], CommitOptions::default()));
    // The secondary's prewrite answers late: the commit stays in prewrite long enough for
    // heartbeats to go out.
    let mut held = 0;
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(r) if r.mutations.len() == 1 && r.mutations[0].key == key("b") => {
            held += 1;
            if held < 4 {
                Some(Ok({
                    let mut response = StoreResponse::Prewrite(Default::default());
                    response.set_region_error(tikv_proto::errorpb::Error {
                        server_is_busy: Some(Default::default()),
                        ..Default::default()
                    });
                    response
                }))
            } else {
                None
            }
        }
        _ => None,
    });
    let _ = committed(&events);
    let beats = seen.iter().filter(|l| l.starts_with("heartbeat")).count();
    assert!(beats >= 2, "{seen:#?}");
    // The heartbeats stop with the commit: none after the primary's commit.
    let primary_commit = seen
        .iter()
        .position(|l| l.starts_with("commit [a"))
        .unwrap_or_else(|| panic!("{seen:#?}"));
    assert!(
        !seen[primary_commit..]
            .iter()
            .any(|l| l.starts_with("heartbeat")),
        "{seen:#?}"
    );
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

#[test]
fn a_stop_after_prewrite_knob_leaves_the_locks() {
    let mut core = core_with(Config::default());
    let options = CommitOptions {
        knobs: CommitKnobs {
            stop_after_prewrite: true,
            ..CommitKnobs::default()
        },
        ..CommitOptions::default()
    };
    commit(&mut core, request(&["a", "b"], options));
    let (seen, events) = drive(&mut core, &mut |_| None);
    assert_eq!(committed(&events).commit_ts.version(), 0);
    assert_eq!(
        seen,
        vec!["prewrite [a,b] async=false 1pc=false secondaries=[]"]
    );
}

#[test]
fn commits_refuse_bad_requests() {
    let mut core = core_with(Config::default());
    let mut unsorted = request(&["b", "a"], CommitOptions::default());
    unsorted.primary = key("b");
    let mut foreign_primary = request(&["a"], CommitOptions::default());
    foreign_primary.primary = key("z");
    let mut max_ts = request(&["a"], CommitOptions::default());
    max_ts.start_ts = Timestamp::from_version(u64::MAX);
    let mut empty = request(&["a"], CommitOptions::default());
    empty.mutations.clear();
    for bad in [unsorted, foreign_primary, max_ts, empty] {
        commit(&mut core, bad);
        let (seen, events) = drive(&mut core, &mut |_| None);
        assert!(seen.is_empty());
        assert!(matches!(failed(&events), Error::InvalidArgument(_)));
    }
}

/// A commit of existence checks alone (keys inserted, then deleted) is prewritten with
/// its first key as the primary, in two phases whatever was asked, and commits nothing;
/// a key that exists fails it (client-go's `TestDeleteAllYourWrites`).
#[test]
fn a_commit_of_existence_checks_alone_is_prewritten_and_commits_nothing() {
    let checks = |options: CommitOptions| {
        let mutations: Vec<Mutation> = ["a", "b"]
            .iter()
            .map(|k| {
                Mutation::new(
                    crate::ops::txn::commit::MutationOp::CheckNotExists,
                    key(k),
                    Bytes::new(),
                )
            })
            .collect();
        CommitRequest {
            start_ts: Timestamp::from_version(START),
            begun_at: Time::ZERO,
            size: 2,
            primary: key("a"),
            mutations,
            options,
        }
    };
    let mut core = core_with(Config::default());
    commit(&mut core, checks(one_pc_options()));
    let (seen, events) = drive(&mut core, &mut |_| None);
    assert_eq!(committed(&events).commit_ts.version(), 0);
    assert_eq!(
        seen,
        vec!["prewrite [a,b] async=false 1pc=false secondaries=[]"]
    );

    commit(&mut core, checks(async_options()));
    let (seen, events) = drive(&mut core, &mut |request| match request {
        StoreRequest::Prewrite(_) => Some(Ok(StoreResponse::Prewrite(kvrpcpb::PrewriteResponse {
            errors: vec![kvrpcpb::KeyError {
                already_exist: Some(kvrpcpb::AlreadyExist { key: key("b") }),
                ..Default::default()
            }],
            ..Default::default()
        }))),
        _ => None,
    });
    assert!(
        matches!(
            failed(&events).key_error(),
            Some(KeyError::AlreadyExists { .. })
        ),
        "{events:?}"
    );
    assert_eq!(
        seen[0],
        "prewrite [a,b] async=false 1pc=false secondaries=[]"
    );
}

/// The `max_backoff_ms` knob bounds the primary's commit: a commit failing in transport
/// for ever gives up after that much backoff, not after 40 s.
#[test]
fn a_lowered_budget_ends_a_failing_commit_sooner() {
    let failing = |options: CommitOptions| {
        let mut core = core_with(Config::default());
        commit(&mut core, request(&["a"], options));
        let (seen, events) = drive(&mut core, &mut |request| match request {
            StoreRequest::Commit(_) => Some(Err(RpcError::ConnectionLost("injected".into()))),
            _ => None,
        });
        assert!(failed(&events).is_undetermined());
        seen.iter()
            .filter(|line| line.starts_with("commit"))
            .count()
    };
    let lowered = failing(CommitOptions {
        knobs: CommitKnobs {
            max_backoff_ms: Some(500),
            ..CommitKnobs::default()
        },
        ..CommitOptions::default()
    });
    let default = failing(CommitOptions::default());
    assert!(lowered < default, "{lowered} attempts vs {default}");
}
