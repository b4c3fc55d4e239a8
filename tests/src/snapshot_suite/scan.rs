//! `integration_tests/scan_test.go` and `integration_tests/scan_mock_test.go`, ported.
//!
//! client-go's transaction iterator (`txn.Iter`, `txn.NewScanner`) is a snapshot
//! [`Scanner`](tikv_core::Scanner) here: it fetches a batch per call, and the checks walk
//! every batch in order.

use bytes::Bytes;
use tikv_core::IsolationLevel;
use tikv_core::snapshot::DEFAULT_SCAN_BATCH_SIZE;

use super::{Env, Layout, b, drain, ok, start, start_with};
use crate::txn_fixture::Prewrite;

const SCAN_PREFIX: &str = "~scan_";

fn scan_key(i: usize) -> Bytes {
    b(format!("{SCAN_PREFIX}prefix{i:10}"))
}

fn scan_value(i: usize) -> Bytes {
    b(format!("{i}"))
}

/// client-go's `check` of `TestScan`: the pairs are exactly rows `0..rows` in order (values
/// only when not key-only).
fn check_rows(pairs: &[tikv_core::KvPair], rows: usize, key_only: bool) {
    assert_eq!(pairs.len(), rows, "rows={rows} key_only={key_only}");
    for (i, pair) in pairs.iter().enumerate() {
        assert_eq!(
            pair.key,
            scan_key(i),
            "i={i} rows={rows} key_only={key_only}"
        );
        if key_only {
            assert!(pair.value.is_empty(), "a key-only scan returned a value");
        } else {
            assert_eq!(pair.value, scan_value(i), "i={i} rows={rows}");
        }
    }
}

/// `TestScan`: scanners over 1, one batch, one batch plus one and three batches of rows,
/// after splits at rows 123 and 456, with and without an upper bound, key-only, and under
/// read-committed isolation past another transaction's lock.
pub async fn test_scan(env: &dyn Env) {
    let cluster = start(env).await;
    let batch = DEFAULT_SCAN_BATCH_SIZE as usize;
    for rows in [1, batch, batch + 1, batch * 3] {
        let pairs: Vec<(Bytes, Bytes)> = (0..rows).map(|i| (scan_key(i), scan_value(i))).collect();
        cluster.write(|w| w.put(&pairs));
        if rows > 123 {
            ok(
                "split",
                cluster
                    .client
                    .regions()
                    .split_regions(vec![scan_key(123)], false)
                    .await,
            );
        }
        if rows > 456 {
            ok(
                "split",
                cluster
                    .client
                    .regions()
                    .split_regions(vec![scan_key(456)], false)
                    .await,
            );
        }

        let snapshot = cluster.snapshot().await;
        assert_eq!(
            ok("get", snapshot.get(scan_key(0)).await),
            Some(scan_value(0))
        );
        let prefix = b(SCAN_PREFIX);
        let upper = rows / 2;
        // Without, then with an upper bound.
        let all = drain(snapshot.scanner(prefix.clone().., DEFAULT_SCAN_BATCH_SIZE)).await;
        check_rows(&all, rows, false);
        let half =
            drain(snapshot.scanner(prefix.clone()..scan_key(upper), DEFAULT_SCAN_BATCH_SIZE)).await;
        check_rows(&half, upper, false);

        // Key only.
        let keys_snapshot = cluster.snapshot().await;
        let all = drain(
            keys_snapshot
                .scanner(prefix.clone().., DEFAULT_SCAN_BATCH_SIZE)
                .keys_only(),
        )
        .await;
        check_rows(&all, rows, true);
        let half = drain(
            keys_snapshot
                .scanner(prefix.clone()..scan_key(upper), DEFAULT_SCAN_BATCH_SIZE)
                .keys_only(),
        )
        .await;
        check_rows(&half, upper, true);

        // Read committed: another transaction's lock on row 0 does not stop the scan, and no
        // lock is met.
        let locked_ts = cluster.write(|w| {
            let start_ts = w.ts();
            let key0 = scan_key(0);
            w.prewrite(&Prewrite::new(start_ts, &key0).put(&key0, scan_value(1)));
            start_ts
        });
        cluster.log.take();
        let rc = cluster.snapshot().await.with_isolation(IsolationLevel::Rc);
        let all = drain(rc.scanner(prefix.clone().., DEFAULT_SCAN_BATCH_SIZE)).await;
        check_rows(&all, rows, false);
        assert_eq!(
            cluster.log.count("KvCheckTxnStatus"),
            0,
            "an RC scan met a lock"
        );
        cluster.write(|w| w.rollback(locked_ts, &[scan_key(0)]));
    }
}

fn alphabet() -> impl DoubleEndedIterator<Item = u8> {
    b'a'..=b'z'
}

fn mock_key(ch: u8) -> Bytes {
    b(format!("~scan_mock{}", ch as char))
}

/// `TestScanMultipleRegions` (scan_mock_test.go): a scanner of batches of 10 walks `a`..`z`,
/// and `[a, i)` stops before `i`. The cluster is split at `h` and `q` (the Go test runs on
/// one region despite its name).
pub async fn test_scan_multiple_regions(env: &dyn Env) {
    let cluster = start_with(
        env,
        Layout {
            splits: vec![mock_key(b'h').to_vec(), mock_key(b'q').to_vec()],
            ..Layout::default()
        },
    )
    .await;
    let pairs: Vec<(Bytes, Bytes)> = alphabet().map(|ch| (mock_key(ch), b([ch]))).collect();
    cluster.write(|w| w.put(&pairs));

    let snapshot = cluster.snapshot().await;
    let keys: Vec<Bytes> = drain(snapshot.scanner(mock_key(b'a').., 10))
        .await
        .into_iter()
        .map(|pair| pair.key)
        .collect();
    assert_eq!(keys, alphabet().map(mock_key).collect::<Vec<_>>());

    let keys: Vec<Bytes> = drain(snapshot.scanner(mock_key(b'a')..mock_key(b'i'), 10))
        .await
        .into_iter()
        .map(|pair| pair.key)
        .collect();
    assert_eq!(keys, (b'a'..=b'h').map(mock_key).collect::<Vec<_>>());
}

/// `TestReverseScan` (scan_mock_test.go): reversed scanners of batches of 10 walk `y` down
/// to `a` below `z`, and `h` down to `a` in `[a, i)`. Split at `h` and `q` as above.
pub async fn test_reverse_scan(env: &dyn Env) {
    let cluster = start_with(
        env,
        Layout {
            splits: vec![mock_key(b'h').to_vec(), mock_key(b'q').to_vec()],
            ..Layout::default()
        },
    )
    .await;
    let pairs: Vec<(Bytes, Bytes)> = alphabet().map(|ch| (mock_key(ch), b([ch]))).collect();
    cluster.write(|w| w.put(&pairs));

    let snapshot = cluster.snapshot().await;
    let keys: Vec<Bytes> = drain(snapshot.scanner(..mock_key(b'z'), 10).reversed())
        .await
        .into_iter()
        .map(|pair| pair.key)
        .collect();
    assert_eq!(keys, (b'a'..=b'y').rev().map(mock_key).collect::<Vec<_>>());

    let keys: Vec<Bytes> = drain(
        snapshot
            .scanner(mock_key(b'a')..mock_key(b'i'), 10)
            .reversed(),
    )
    .await
    .into_iter()
    .map(|pair| pair.key)
    .collect();
    assert_eq!(keys, (b'a'..=b'h').rev().map(mock_key).collect::<Vec<_>>());
}
