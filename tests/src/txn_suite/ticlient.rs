//! `integration_tests/ticlient_test.go` (`testTiclientSuite`): basic transactional reads
//! and writes. `TestSplitRegionIn2PC` is not ported: this client's committer does not
//! pre-split regions that a large commit would write many keys to (client-go's
//! `preSplitDetectThreshold`), and its pessimistic half needs pessimistic transactions.

use tikv_core::Error;
use tikv_core::txn::buffer::{BufferError, SizeLimits};

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
