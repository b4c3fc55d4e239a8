//! `integration_tests/prewrite_test.go`: what the client puts in its prewrite requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tikv_core::rpc::StoreRequest;
use tikv_core::transaction::TransactionOptions;
use tikv_core::{CommitKnobs, Config};
use tikv_sim::cluster::ClusterConfig;
use tikv_sim::faults::FaultAction;

use super::{Env, b, boundary, ok, start, start_with};

/// `TestSetMinCommitTSInAsyncCommit`: an async-commit prewrite's `min_commit_ts` is the
/// start timestamp plus one when nothing pushes it (causal consistency), and past a fresh
/// TSO timestamp when the commit is linearizable (the Go test sets it by hand through the
/// probe for this case). The Go test's `for_update_ts` case needs a pessimistic
/// transaction and is not ported. Go builds the requests with the probe; here the client's
/// requests are recorded.
pub async fn test_prewrite_set_min_commit_ts_in_async_commit<E: Env>(env: &E) {
    let tc = start(env).await;
    let causal = TransactionOptions::new()
        .with_async_commit(true)
        .with_causal_consistency(true);
    let linearizable = TransactionOptions::new().with_async_commit(true);
    // A key per case: an async commit answers at its commit point and commits its keys in
    // the background, so a second transaction on the same key could meet the first one's
    // lock (and prewrite again after checking it) when that background step is slow.
    for (options, linearizable, key) in [(causal, false, "k1"), (linearizable, true, "k2")] {
        let mut txn = tc.begin_with(options).await;
        ok("put", txn.put(b(key), b("v")));
        tc.requests.clear();
        let commit_ts = ok("commit", txn.commit().await).unwrap_or_else(|| panic!("committed"));
        let prewrites = tc.requests.prewrites();
        assert_eq!(prewrites.len(), 1);
        let min_commit_ts = prewrites[0].min_commit_ts;
        let start_ts = txn.start_ts().version();
        if linearizable {
            assert!(min_commit_ts > start_ts + 1, "{min_commit_ts} {start_ts}");
            assert!(min_commit_ts <= commit_ts.version());
        } else {
            assert_eq!(min_commit_ts, start_ts + 1);
        }
    }
}

/// `TestIsRetryRequestFlagWithRegionError`: every prewrite sent again is marked
/// `is_retry_request`. As in Go: the first prewrite applies but its answer is lost; the
/// region splits before the retry, which meets the region error and is sent again as one
/// request per new region. Go pauses the sender to split in between; here the split
/// happens in the request hook, as the first retry leaves the client, and the first
/// answer is lost by a tikv-sim fault (the client times out after 500 ms). The retry goes
/// to a follower first (after a transport failure the client tries the next peer), so the
/// history is longer than Go's; every entry after the first is a retry.
pub async fn test_prewrite_is_retry_request_flag_with_region_error<E: Env>(env: &E) {
    let config = Config::default().with_read_timeout_short(Duration::from_millis(500));
    let tc = start_with(env, ClusterConfig::default(), config).await;
    assert_eq!(tc.get("a").await, None, "the region is cached");
    tc.inject("KvPrewrite", FaultAction::DropReply, 1);
    let server = Arc::clone(&tc.server);
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    tc.requests.set_hook(Some(Box::new(move |request| {
        if matches!(request, StoreRequest::Prewrite(_))
            && counter.fetch_add(1, Ordering::SeqCst) == 1
        {
            server.with(|sim| {
                sim.cluster
                    .split_at(&boundary(b"h"))
                    .unwrap_or_else(|err| panic!("split: {err}"));
            });
        }
    })));
    let mut txn = tc
        .begin_with(TransactionOptions::new().with_testing_knobs(CommitKnobs {
            stop_after_prewrite: true,
            ..CommitKnobs::default()
        }))
        .await;
    ok("put", txn.put(b("a"), b("v")));
    ok("put", txn.put(b("z"), b("v")));
    tc.requests.clear();
    ok("prewrite", txn.commit().await);
    tc.requests.set_hook(None);
    let flags: Vec<bool> = tc
        .requests
        .prewrites()
        .iter()
        .map(|r| r.context.as_ref().is_some_and(|c| c.is_retry_request))
        .collect();
    assert!(flags.len() >= 4, "{flags:?}");
    assert!(!flags[0], "{flags:?}");
    assert!(flags[1..].iter().all(|&retry| retry), "{flags:?}");
    assert_ne!(tc.region_of(b"a"), tc.region_of(b"z"));
    assert!(tc.lock(b"a").is_some() && tc.lock(b"z").is_some());
}
