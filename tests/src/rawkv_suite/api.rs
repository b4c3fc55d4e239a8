//! Ports of `integration_tests/raw/api_test.go` (names prefixed `api_`).
//!
//! The Go suite runs against a real cluster configured with API V1TTL or V2; each Go test
//! becomes two tests, `api_<name>` under V2 and `api_<name>_v1ttl` under V1TTL, each on a
//! fresh cluster (so Go's `cleanKeyPrefix` has nothing to clean). Go's `SplitRegions`
//! through PD becomes a split of the simulated cluster.

use std::time::Duration;

use bytes::Bytes;
use tikv_core::{CasOutcome, KeyTtl, RawClient};

use super::{Api, Env, TestCluster, b, crc64_ecma, ok, start};

/// The byte Go's helpers append to turn a prefix into an exclusive upper bound.
const PAST: u8 = 0x7f;

fn key(prefix: &str, key: &str) -> Bytes {
    b(format!("{prefix}{key}"))
}

/// `prefix + end + 0x7f`, the end bound of Go's `mustScan`/`mustChecksum`.
fn end_past(prefix: &str, end: &str) -> Bytes {
    let mut bound = format!("{prefix}{end}").into_bytes();
    bound.push(PAST);
    Bytes::from(bound)
}

/// Scans `[prefix+start, prefix+end+0x7f)` and strips the prefix from the keys.
async fn must_scan(
    raw: &RawClient,
    prefix: &str,
    start: &str,
    end: &str,
    limit: u32,
) -> Vec<(Bytes, Bytes)> {
    let found = ok(
        "scan",
        raw.scan(key(prefix, start)..end_past(prefix, end), limit)
            .await,
    );
    strip(prefix, found)
}

/// Reverse-scans from `prefix+start` (exclusive) down to `prefix+end` (Go's `ReverseScan`
/// arguments: the range `[prefix+end, prefix+start)`) and strips the prefix.
async fn must_reverse_scan(
    raw: &RawClient,
    prefix: &str,
    start: &str,
    end: &str,
    limit: u32,
) -> Vec<(Bytes, Bytes)> {
    let found = ok(
        "reverse scan",
        raw.reverse_scan(key(prefix, end)..key(prefix, start), limit)
            .await,
    );
    strip(prefix, found)
}

/// A compare-and-swap outcome, for comparisons.
fn cas_outcome(previous: Option<Bytes>, swapped: bool) -> CasOutcome {
    CasOutcome { previous, swapped }
}

fn strip(prefix: &str, pairs: Vec<tikv_core::KvPair>) -> Vec<(Bytes, Bytes)> {
    pairs
        .into_iter()
        .map(|pair| {
            let key = pair
                .key
                .strip_prefix(prefix.as_bytes())
                .map_or_else(|| pair.key.clone(), Bytes::copy_from_slice);
            (key, pair.value)
        })
        .collect()
}

/// Go's `mustBatchPut` of `key@i` → `value@i` for `i < n`.
async fn put_numbered(raw: &RawClient, prefix: &str, n: usize) {
    let pairs: Vec<(Bytes, Bytes)> = (0..n)
        .map(|i| (key(prefix, &format!("key@{i}")), b(format!("value@{i}"))))
        .collect();
    ok("batch put", raw.batch_put(pairs).await);
}

/// Defines the two tests of one Go test: `$name` under V2 and `$v1ttl` under V1TTL, each on
/// a fresh cluster, both running `$body`.
macro_rules! api_test {
    ($(#[$doc:meta])* $name:ident, $v1ttl:ident, $body:ident) => {
        $(#[$doc])*
        ///
        /// Under API V2 (the `DEFAULT` keyspace).
        pub async fn $name<E: Env>(env: &E) {
            $body(&start(env, Api::V2).await).await;
        }

        $(#[$doc])*
        ///
        /// Under API V1TTL.
        pub async fn $v1ttl<E: Env>(env: &E) {
            $body(&start(env, Api::V1Ttl).await).await;
        }
    };
}

api_test! {
    /// `TestSimple`.
    api_simple, api_simple_v1ttl, simple_body
}

async fn simple_body(tc: &TestCluster) {
    let raw = tc.raw();
    let k = key("test_simple", "key");
    assert_eq!(ok("get", raw.get(k.clone()).await), None);
    ok("put", raw.put(k.clone(), "value").await);
    assert_eq!(ok("get", raw.get(k.clone()).await), Some(b("value")));
    ok("delete", raw.delete(k.clone()).await);
    assert_eq!(ok("get", raw.get(k).await), None, "{:?}", tc.api);
}

api_test! {
    /// `TestScan`: 20,480 keys over 20 regions; a scan at the 10,240 limit returns exactly that
    /// many.
    api_scan, api_scan_v1ttl, scan_body
}

async fn scan_body(tc: &TestCluster) {
    let prefix = "test_scan";
    let raw = tc.raw();
    put_numbered(&raw, prefix, 20_480).await;
    let splits: Vec<Bytes> = (0..20_480)
        .step_by(1024)
        .map(|i| key(prefix, &format!("key@{i}")))
        .collect();
    let splits: Vec<&[u8]> = splits.iter().map(|k| &k[..]).collect();
    tc.split(&splits);

    let found = must_scan(&raw, prefix, "key@0", "", 10_240).await;
    assert_eq!(found.len(), 10_240, "{:?}", tc.api);
    for (k, v) in &found {
        assert!(k.starts_with(b"key@"), "{k:?}");
        assert!(v.starts_with(b"value@"), "{v:?}");
    }
}

api_test! {
    /// `TestReverseScan`. Go's reverse scan starts at `key:`, below every key written, so it
    /// returns nothing and its loop asserts nothing; the port checks that, then scans from just
    /// above the keys.
    api_reverse_scan, api_reverse_scan_v1ttl, reverse_scan_body
}

async fn reverse_scan_body(tc: &TestCluster) {
    let prefix = "test_reverse_scan";
    let raw = tc.raw();
    for i in 0..10 {
        let k = key(prefix, &format!("key:{i}"));
        ok("put", raw.put(k, format!("value:{i}")).await);
    }
    assert!(
        must_reverse_scan(&raw, prefix, "key:", "", 5)
            .await
            .is_empty()
    );

    let found = must_reverse_scan(&raw, prefix, "key;", "", 5).await;
    let expected: Vec<(Bytes, Bytes)> = (5..10)
        .rev()
        .map(|i| (b(format!("key:{i}")), b(format!("value:{i}"))))
        .collect();
    assert_eq!(found, expected, "{:?}", tc.api);
}

api_test! {
    /// `TestBatchOp`.
    api_batch_op, api_batch_op_v1ttl, batch_op_body
}

async fn batch_op_body(tc: &TestCluster) {
    let prefix = "test_batch_op";
    let raw = tc.raw();
    let keys = [key(prefix, "k1"), key(prefix, "k2")];
    ok(
        "batch put",
        raw.batch_put([(keys[0].clone(), "v1"), (keys[1].clone(), "v2")])
            .await,
    );
    let values = ok("batch get", raw.batch_get(keys.clone()).await);
    assert_eq!(values, [Some(b("v1")), Some(b("v2"))]);
    ok("batch delete", raw.batch_delete(keys.clone()).await);
    assert_eq!(ok("get", raw.get(keys[0].clone()).await), None);
    assert_eq!(
        ok("get", raw.get(keys[1].clone()).await),
        None,
        "{:?}",
        tc.api
    );
}

api_test! {
    /// `TestCAS`.
    api_cas, api_cas_v1ttl, cas_body
}

async fn cas_body(tc: &TestCluster) {
    let raw = tc.raw();
    let cas = raw.with_atomic_for_cas(true);
    let k = key("test_cas", "key");

    let swap = cas.compare_and_swap(k.clone(), None, "hello world").await;
    assert_eq!(ok("cas", swap), cas_outcome(None, true));
    assert_eq!(ok("get", raw.get(k.clone()).await), Some(b("hello world")));

    let swap = cas
        .compare_and_swap(k.clone(), Some(b("hello")), "world")
        .await;
    assert_eq!(ok("cas", swap), cas_outcome(Some(b("hello world")), false));
    assert_eq!(ok("get", raw.get(k.clone()).await), Some(b("hello world")));

    let swap = cas
        .compare_and_swap(k.clone(), Some(b("hello world")), "world")
        .await;
    assert_eq!(ok("cas", swap), cas_outcome(Some(b("hello world")), true));
    assert_eq!(
        ok("get", raw.get(k).await),
        Some(b("world")),
        "{:?}",
        tc.api
    );
}

/// `TestTTL`: halfway through a 2 s TTL at most 1 s remains; after it the key is gone and
/// has no TTL.
///
/// Under API V2 (the `DEFAULT` keyspace).
pub async fn api_ttl<E: Env>(env: &E) {
    ttl_body(env, &start(env, Api::V2).await).await;
}

/// `TestTTL` under API V1TTL.
pub async fn api_ttl_v1ttl<E: Env>(env: &E) {
    ttl_body(env, &start(env, Api::V1Ttl).await).await;
}

async fn ttl_body<E: Env>(env: &E, tc: &TestCluster) {
    let ttl = Duration::from_secs(2);
    let raw = tc.raw();
    let k = key("test_ttl", "key");
    ok(
        "put with ttl",
        raw.put_with_ttl(k.clone(), "value", ttl).await,
    );
    env.sleep(ttl / 2).await;
    let rest = ok("get key ttl", raw.get_key_ttl(k.clone()).await);
    match rest {
        Some(KeyTtl::Remaining(left)) => assert!(left <= ttl / 2, "{:?}: {left:?} left", tc.api),
        other => panic!("{:?}: the key should expire, found {other:?}", tc.api),
    }
    // Go sleeps exactly the other half; a little slack keeps the wall-clock check certain.
    env.sleep(ttl / 2 + Duration::from_millis(100)).await;
    assert_eq!(ok("get", raw.get(k.clone()).await), None, "{:?}", tc.api);
    let rest = ok("get key ttl", raw.get_key_ttl(k).await);
    assert_eq!(rest, None, "{:?}", tc.api);
}

api_test! {
    /// `TestDeleteRange`: 20,480 keys over two regions, all deleted by one range.
    api_delete_range, api_delete_range_v1ttl, delete_range_body
}

async fn delete_range_body(tc: &TestCluster) {
    let prefix = "test_delete_range";
    let raw = tc.raw();
    put_numbered(&raw, prefix, 20_480).await;
    tc.split(&[&key(prefix, "key@4096")]);

    // Go's mustDeleteRange(prefix, "", ""): [prefix, prefix+prefix+0x7f).
    let end = end_past(prefix, prefix);
    ok("delete range", raw.delete_range(key(prefix, "")..end).await);
    for i in 0..3 {
        let k = key(prefix, &format!("key@{i}"));
        assert_eq!(ok("get", raw.get(k).await), None, "{:?}", tc.api);
    }
    // Every key sorts below the end bound, so nothing is left at all.
    assert!(must_scan(&raw, prefix, "", "", 10).await.is_empty());
}

api_test! {
    /// `TestRawChecksum`: 20,480 pairs against a checksum computed here. Go's expectation hashes
    /// the keys without the test prefix while counting the prefix's bytes, which cannot match
    /// any server; the port hashes the keys as stored (with the test prefix, and under V2 the
    /// keyspace prefix, whose 4 bytes Go also counts).
    api_raw_checksum, api_raw_checksum_v1ttl, raw_checksum_body
}

async fn raw_checksum_body(tc: &TestCluster) {
    let prefix = "test_checksum";
    let raw = tc.raw();
    let mut crc64_xor = 0;
    let mut total_bytes = 0;
    for i in 0..20_480 {
        let stored = tc.stored_key(&key(prefix, &format!("key@{i}")));
        let value = format!("value@{i}");
        crc64_xor ^= crc64_ecma(&[&stored, value.as_bytes()]);
        total_bytes += (stored.len() + value.len()) as u64;
    }
    put_numbered(&raw, prefix, 20_480).await;
    let sum = ok(
        "checksum",
        raw.checksum(key(prefix, "")..end_past(prefix, "")).await,
    );
    assert_eq!(sum.total_kvs, 20_480, "{:?}", tc.api);
    assert_eq!(sum.total_bytes, total_bytes, "{:?}", tc.api);
    assert_eq!(sum.crc64_xor, crc64_xor, "{:?}", tc.api);
}

api_test! {
    /// `TestEmptyValue`: an empty value is a value (distinct from a missing key) through put,
    /// batch put and CAS, for get, batch get, scan and reverse scan.
    api_empty_value, api_empty_value_v1ttl, empty_value_body
}

async fn empty_value_body(tc: &TestCluster) {
    let prefix = "test_empty_value";
    let raw = tc.raw();
    let cas = raw.with_atomic_for_cas(true);
    let k = key(prefix, "key");
    let batch = [k.clone(), key(prefix, "key1")];

    let verify_empty_value = || async {
        assert_eq!(ok("get", raw.get(k.clone()).await), Some(Bytes::new()));
        let values = ok("batch get", raw.batch_get(batch.clone()).await);
        assert_eq!(values, [Some(Bytes::new()), None], "{:?}", tc.api);
        let found = must_scan(&raw, prefix, "key", "keyz", 10).await;
        assert_eq!(found, [(b("key"), Bytes::new())]);
        let found = must_reverse_scan(&raw, prefix, "keyz", "key", 10).await;
        assert_eq!(found, [(b("key"), Bytes::new())]);
    };
    let verify_not_exist = || async {
        assert_eq!(ok("get", raw.get(k.clone()).await), None);
        let values = ok("batch get", raw.batch_get(batch.clone()).await);
        assert_eq!(values, [None, None]);
        assert!(must_scan(&raw, prefix, "key", "keyz", 10).await.is_empty());
        assert!(
            must_reverse_scan(&raw, prefix, "keyz", "key", 10)
                .await
                .is_empty()
        );
    };

    assert_eq!(ok("get", raw.get(k.clone()).await), None);
    ok("put", raw.put(k.clone(), "").await);
    verify_empty_value().await;

    ok("delete", raw.delete(k.clone()).await);
    verify_not_exist().await;

    ok("batch put", raw.batch_put([(k.clone(), "")]).await);
    verify_empty_value().await;

    ok("delete", raw.delete(k.clone()).await);
    let swap = cas.compare_and_swap(k.clone(), None, "").await;
    assert_eq!(ok("cas", swap), cas_outcome(None, true));
    verify_empty_value().await;

    let swap = cas
        .compare_and_swap(k.clone(), Some(Bytes::new()), "val")
        .await;
    assert_eq!(ok("cas", swap), cas_outcome(Some(Bytes::new()), true));
}
