//! `integration_tests/ticlient_test.go` (`testTiclientSuite`): basic transactional reads
//! and writes, and the committer's pre-split of a region a large commit writes many keys to.
//! The pessimistic half of `TestSplitRegionIn2PC` is not ported: it needs pessimistic
//! transactions.

use tikv_core::txn::buffer::{BufferError, SizeLimits};
use tikv_core::{CommitKnobs, Error, TransactionOptions};

use super::{Env, b, ok, start};

/// `TestSingleKey`: a key written (and locked) in one transaction reads back in the next,
/// and can be deleted.
pub async fn test_ticlient_single_key<E: Env>(env: &E) {
    let tc = start(env).await;
    let mut txn = tc.begin().await;
    ok("put", txn.put(b("key"), b("value")));
    ok("lock", txn.lock_keys([b("key")]));
    ok("commit", txn.commit().await);

    let txn = tc.begin().await;
    assert_eq!(ok("get", txn.get(b("key")).await), Some(b("value")));

    let mut txn = tc.begin().await;
    ok("delete", txn.delete(b("key")));
    ok("commit", txn.commit().await);
    assert_eq!(tc.get("key").await, None);
}

fn key(i: usize) -> String {
    format!("key{i:08}")
}

/// `TestMultiKeys`: a hundred keys written in one transaction read back, and are deleted
/// in one.
pub async fn test_ticlient_multi_keys<E: Env>(env: &E) {
    let tc = start(env).await;
    let mut txn = tc.begin().await;
    for i in 0..100 {
        ok("put", txn.put(b(key(i)), b(format!("value{i}"))));
    }
    ok("commit", txn.commit().await);

    let txn = tc.begin().await;
    for i in 0..100 {
        assert_eq!(
            ok("get", txn.get(b(key(i))).await),
            Some(b(format!("value{i}")))
        );
    }

    let mut txn = tc.begin().await;
    for i in 0..100 {
        ok("delete", txn.delete(b(key(i))));
    }
    ok("commit", txn.commit().await);
    let txn = tc.begin().await;
    for i in 0..100 {
        assert_eq!(ok("get", txn.get(b(key(i))).await), None);
    }
}

/// `TestNotExist`: reading a key that was never written finds nothing (Go's `Get` returns
/// `ErrNotExist`; here the read succeeds with `None`).
pub async fn test_ticlient_not_exist<E: Env>(env: &E) {
    let tc = start(env).await;
    let txn = tc.begin().await;
    assert_eq!(ok("get", txn.get(b("noSuchKey")).await), None);
}

/// `TestLargeRequest`: with a 1 MiB entry limit, writing a 9 MiB value fails in the
/// buffer; the transaction then commits nothing, without error.
pub async fn test_ticlient_large_request<E: Env>(env: &E) {
    let tc = start(env).await;
    let mut txn = tc.begin().await;
    ok(
        "limits",
        txn.buffer_mut().map(|buffer| {
            buffer.set_limits(SizeLimits {
                entry: 1024 * 1024,
                total: 100 * 1024 * 1024,
            });
        }),
    );
    let e = txn
        .put(b("large_request_key"), vec![0u8; 9 * 1024 * 1024])
        .err()
        .unwrap_or_else(|| panic!("a 9 MiB entry is refused"));
    assert!(
        matches!(e, Error::Buffer(BufferError::EntryTooLarge { .. })),
        "{e}"
    );
    assert_eq!(ok("commit", txn.commit().await), None);
}

/// `TestSplitRegionIn2PC` (its optimistic half): with the pre-split thresholds lowered to
/// 500 keys and 5,000 bytes (Go's `StorePreSplitDetectThreshold` and
/// `StorePreSplitSizeThreshold`), a commit of 500 keys to one region splits it before
/// prewriting, so the first key and the 500th end up in different regions.
pub async fn test_ticlient_split_region_in_2pc<E: Env>(env: &E) {
    const PRE_SPLIT_THRESHOLD: usize = 500;
    let tc = start(env).await;
    let first = key(0);
    let last = key(PRE_SPLIT_THRESHOLD);
    assert_eq!(
        tc.region_of(first.as_bytes()),
        tc.region_of(last.as_bytes()),
        "one region before the commit"
    );
    let knobs = CommitKnobs {
        pre_split_detect_threshold: Some(PRE_SPLIT_THRESHOLD),
        pre_split_size_threshold: Some(5_000),
        ..CommitKnobs::default()
    };
    let mut txn = tc
        .begin_with(TransactionOptions::new().with_testing_knobs(knobs))
        .await;
    for i in 0..PRE_SPLIT_THRESHOLD {
        ok("put", txn.put(b(key(i)), b(format!("value{i}"))));
    }
    ok("commit", txn.commit().await);
    assert_ne!(
        tc.region_of(first.as_bytes()),
        tc.region_of(last.as_bytes()),
        "the commit split the region"
    );
    assert_eq!(
        tc.requests.count(|r| r.name() == "SplitRegion"),
        1,
        "one split request"
    );
    // Everything was committed, across the new regions.
    let txn = tc.begin().await;
    let keys: Vec<_> = (0..PRE_SPLIT_THRESHOLD).map(|i| b(key(i))).collect();
    assert_eq!(
        ok("batch get", txn.batch_get(keys).await).len(),
        PRE_SPLIT_THRESHOLD
    );
}
