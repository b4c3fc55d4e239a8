//! Ports of `integration_tests/raw/api_mock_test.go` (names prefixed `mock_`): one store,
//! API V1, regions split between operations so the client meets stale region caches.

use std::collections::BTreeMap;

use bytes::Bytes;
use tikv_core::RAW_BATCH_PUT_SIZE;
use tikv_core::{Error, RawClient};
use tikv_sim::cluster::ClusterConfig;

use super::{Api, Env, TestCluster, b, go_range, ok, start_with};

/// Go's `SetupTest`: a single store holding one region.
async fn setup<E: Env>(env: &E) -> TestCluster {
    let layout = ClusterConfig {
        store_count: 1,
        replica_count: 1,
        ..ClusterConfig::default()
    };
    start_with(env, Api::V1, layout).await
}

/// Asserts that a forward scan from `start` to `end` with `limit` returns `expect`, given as
/// alternating keys and values.
async fn must_scan(raw: &RawClient, start: &str, end: &[u8], limit: u32, expect: &[&str]) {
    let found = ok("scan", raw.scan(go_range(start, end), limit).await);
    assert_pairs(
        &found,
        expect,
        &format!("scan({start:?}, {end:?}, {limit})"),
    );
}

/// Asserts that a reverse scan below `start` down to `end` (Go's `ReverseScan` arguments:
/// the range `[end, start)`) returns `expect`.
async fn must_reverse_scan(raw: &RawClient, start: &[u8], end: &[u8], limit: u32, expect: &[&str]) {
    let found = ok(
        "reverse scan",
        raw.reverse_scan(go_range(end, start), limit).await,
    );
    assert_pairs(
        &found,
        expect,
        &format!("reverse_scan({start:?}, {end:?}, {limit})"),
    );
}

fn assert_pairs(found: &[tikv_core::KvPair], expect: &[&str], what: &str) {
    let found: Vec<Bytes> = found
        .iter()
        .flat_map(|p| [p.key.clone(), p.value.clone()])
        .collect();
    let expect: Vec<Bytes> = expect.iter().map(b).collect();
    assert_eq!(found, expect, "{what}");
}

/// Go's `checkData`: a full scan returns exactly `expected`.
async fn check_data(raw: &RawClient, expected: &BTreeMap<Bytes, Bytes>) {
    let limit = u32::try_from(expected.len() + 1).unwrap_or(u32::MAX);
    let found = ok("scan", raw.scan::<[u8]>(.., limit).await);
    let found: BTreeMap<Bytes, Bytes> = found.into_iter().map(|p| (p.key, p.value)).collect();
    assert_eq!(&found, expected);
}

/// `TestSimple`: put, get, delete, and an empty value is legal.
pub async fn mock_simple<E: Env>(env: &E) {
    let tc = setup(env).await;
    let raw = tc.raw();
    assert_eq!(ok("get", raw.get("key").await), None);
    ok("put", raw.put("key", "value").await);
    assert_eq!(ok("get", raw.get("key").await), Some(b("value")));
    ok("delete", raw.delete("key").await);
    assert_eq!(ok("get", raw.get("key").await), None);
    ok("put empty value", raw.put("key", "").await);
}

/// `TestRawBatch`: a batch four times the put-size limit, over two regions.
pub async fn mock_raw_batch<E: Env>(env: &E) {
    let tc = setup(env).await;
    let raw = tc.raw();
    let mut keys = Vec::new();
    let mut values = Vec::new();
    let mut size = 0;
    while size / RAW_BATCH_PUT_SIZE < 4 {
        let i = keys.len();
        let key = format!("key{i}");
        let value = format!("value{i}");
        size += key.len() + value.len();
        keys.push(b(key));
        values.push(b(value));
    }
    let missing = ok("batch get", raw.batch_get(keys.clone()).await);
    assert!(missing.iter().all(Option::is_none));
    let middle = format!("key{}", (keys.len() - 1) / 2);
    tc.split(&[middle.as_bytes()]);

    let pairs: Vec<(Bytes, Bytes)> = keys.iter().cloned().zip(values.clone()).collect();
    ok("batch put", raw.batch_put(pairs).await);
    let found = ok("batch get", raw.batch_get(keys.clone()).await);
    let expected: Vec<Option<Bytes>> = values.into_iter().map(Some).collect();
    assert_eq!(found, expected);
    ok("batch delete", raw.batch_delete(keys.clone()).await);
    let found = ok("batch get", raw.batch_get(keys.clone()).await);
    assert_eq!(found.len(), keys.len());
    assert!(found.iter().all(Option::is_none));
}

/// `TestSplit`: values written before a split are read after it.
pub async fn mock_split<E: Env>(env: &E) {
    let tc = setup(env).await;
    let raw = tc.raw();
    ok("put", raw.put("k1", "v1").await);
    ok("put", raw.put("k3", "v3").await);
    tc.split(&[b"k2"]);
    assert_eq!(ok("get", raw.get("k1").await), Some(b("v1")));
    assert_eq!(ok("get", raw.get("k3").await), Some(b("v3")));
}

/// `TestScan`: limits and bounds, before and after two splits.
pub async fn mock_scan<E: Env>(env: &E) {
    let tc = setup(env).await;
    let raw = tc.raw();
    for (k, v) in [("k1", "v1"), ("k3", "v3"), ("k5", "v5"), ("k7", "v7")] {
        ok("put", raw.put(k, v).await);
    }
    let check = || async {
        must_scan(&raw, "", b"", 1, &["k1", "v1"]).await;
        must_scan(&raw, "k1", b"", 2, &["k1", "v1", "k3", "v3"]).await;
        let all = ["k1", "v1", "k3", "v3", "k5", "v5", "k7", "v7"];
        must_scan(&raw, "", b"", 10, &all).await;
        must_scan(&raw, "k2", b"", 2, &["k3", "v3", "k5", "v5"]).await;
        must_scan(&raw, "k2", b"", 3, &["k3", "v3", "k5", "v5", "k7", "v7"]).await;
        must_scan(&raw, "", b"k1", 1, &[]).await;
        must_scan(&raw, "k1", b"k3", 2, &["k1", "v1"]).await;
        must_scan(&raw, "k1", b"k5", 10, &["k1", "v1", "k3", "v3"]).await;
        let through_k5 = ["k1", "v1", "k3", "v3", "k5", "v5"];
        must_scan(&raw, "k1", b"k5\x00", 10, &through_k5).await;
        must_scan(&raw, "k5\x00", b"k5\x00\x00", 10, &[]).await;
    };
    check().await;
    tc.split(&[b"k2"]);
    check().await;
    tc.split(&[b"k5"]);
    check().await;
}

/// `TestReverseScan`: limits and bounds of reverse scans, before and after two splits.
///
/// Deviation: Go's first check, a reverse scan from an empty start key (no upper bound),
/// returns nothing there; this client refuses a reverse scan without an upper bound with
/// `InvalidArgument` (see `RawClient::reverse_scan`).
pub async fn mock_reverse_scan<E: Env>(env: &E) {
    let tc = setup(env).await;
    let raw = tc.raw();
    for (k, v) in [("k1", "v1"), ("k3", "v3"), ("k5", "v5"), ("k7", "v7")] {
        ok("put", raw.put(k, v).await);
    }
    let check = || async {
        let refused = raw.reverse_scan::<[u8]>(.., 10).await;
        assert!(
            matches!(refused, Err(Error::InvalidArgument(_))),
            "{refused:?}"
        );
        must_reverse_scan(&raw, b"z", b"", 1, &["k7", "v7"]).await;
        must_reverse_scan(&raw, b"z", b"", 2, &["k7", "v7", "k5", "v5"]).await;
        let all = ["k7", "v7", "k5", "v5", "k3", "v3", "k1", "v1"];
        must_reverse_scan(&raw, b"z", b"", 10, &all).await;
        must_reverse_scan(&raw, b"k2", b"", 10, &["k1", "v1"]).await;
        must_reverse_scan(&raw, b"k6", b"", 2, &["k5", "v5", "k3", "v3"]).await;
        must_reverse_scan(&raw, b"k5", b"", 1, &["k3", "v3"]).await;
        must_reverse_scan(&raw, b"k5\x00", b"", 1, &["k5", "v5"]).await;
        let three = ["k5", "v5", "k3", "v3", "k1", "v1"];
        must_reverse_scan(&raw, b"k6", b"", 3, &three).await;
        let down_to_k3 = ["k7", "v7", "k5", "v5", "k3", "v3"];
        must_reverse_scan(&raw, b"z", b"k3", 10, &down_to_k3).await;
        must_reverse_scan(&raw, b"k7", b"k3\x00", 10, &["k5", "v5"]).await;
    };
    check().await;
    tc.split(&[b"k2"]);
    check().await;
    tc.split(&[b"k5"]);
    check().await;
}

/// `TestDeleteRange`: ranges inside one region, across regions, empty, and everything.
pub async fn mock_delete_range<E: Env>(env: &E) {
    let tc = setup(env).await;
    let raw = tc.raw();
    let mut expected = BTreeMap::new();
    for i in *b"abcd" {
        for j in b'0'..=b'9' {
            let key = Bytes::from(vec![i, j]);
            let value = Bytes::from(vec![b'v', i, j]);
            ok("put", raw.put(key.clone(), value.clone()).await);
            expected.insert(key, value);
        }
    }
    tc.split(&[b"b", b"c", b"d"]);
    check_data(&raw, &expected).await;

    for (start, end) in [
        (&b"b"[..], &b"c0"[..]),
        (b"c11", b"c12"),
        (b"d0", b"d0"),
        (b"c5", b"d5"),
        (b"a", b"z"),
    ] {
        ok("delete range", raw.delete_range(go_range(start, end)).await);
        expected.retain(|key, _| !(start <= &key[..] && &key[..] < end));
        check_data(&raw, &expected).await;
    }
    assert!(expected.is_empty());
}
