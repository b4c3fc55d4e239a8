//! The read tests of `integration_tests/snapshot_fail_test.go` that need neither our
//! committer nor a snapshot cache, ported. (`TestRetryMaxTsPointGetSkipLock` and
//! `TestRetryPointGetResolveTS`'s rule run in `tests/snapshot_simulation.rs` and in
//! `test_point_get_skip_txn_lock`; the rest are listed in docs/porting.md.)
//!
//! Go's `rpcBatchGetResult` / `rpcScanResult` failpoints answer a request with a
//! whole-request `Locked` key error (a lock one version below the read, on the first key);
//! here the cluster injects the same error once.

use tikv_core::Timestamp;
use tikv_proto::kvrpcpb;
use tikv_sim::faults::{FaultAction, FaultRule};

use super::{Env, TestCluster, b, ok, start, texts};

/// Makes the next request named `command` fail as a whole with a lock of version
/// `read_ts - 1` on `key` (its own primary), TTL 50 ms: a transaction that never existed.
fn inject_lock(cluster: &TestCluster, command: &str, key: &[u8], read_ts: Timestamp) {
    let key = cluster.space.request_key(key);
    let error = kvrpcpb::KeyError {
        locked: Some(Box::new(kvrpcpb::LockInfo {
            primary_lock: key.clone(),
            lock_version: read_ts.version() - 1,
            key,
            lock_ttl: 50,
            txn_size: 1,
            lock_type: kvrpcpb::Op::Put as i32,
            ..Default::default()
        })),
        ..Default::default()
    };
    cluster.server.with(|sim| {
        sim.faults.inject(FaultRule::command(
            command,
            FaultAction::KeyError(Box::new(error)),
            1,
        ));
    });
}

/// `TestBatchGetResponseKeyError`: a batch get answered with a whole-request lock error
/// resolves the lock (its transaction is rolled back once the lock expired) and reads every
/// key of the request again.
pub async fn test_batch_get_response_key_error(env: &dyn Env) {
    let cluster = start(env).await;
    let (k1, k2) = (b("~snapshot_fail_k1"), b("~snapshot_fail_k2"));
    cluster.write(|w| w.put(&[(&k1, "v1"), (&k2, "v2")]));
    let ts = cluster.ts().await;
    inject_lock(&cluster, "KvBatchGet", &k1, ts);
    let snapshot = cluster.client.snapshot(ts);
    let found = ok(
        "batch get",
        snapshot.batch_get([k1.clone(), k2.clone()]).await,
    );
    assert_eq!(
        texts(&found),
        [
            ("~snapshot_fail_k1".to_owned(), "v1".to_owned()),
            ("~snapshot_fail_k2".to_owned(), "v2".to_owned())
        ]
    );
    assert!(cluster.log.count("KvCheckTxnStatus") >= 1);
    assert_eq!(cluster.server.with(|sim| sim.faults.active()), 0);
}

/// `TestScanResponseKeyError`: a scan batch answered with a whole-request lock error
/// resolves the lock and reads the batch again; twice, from two start keys.
pub async fn test_scan_response_key_error(env: &dyn Env) {
    let cluster = start(env).await;
    let key = |name: &str| b(format!("test_snapshot_fail_{name}"));
    cluster.write(|w| w.put(&[(key("k1"), "v1"), (key("k2"), "v2"), (key("k3"), "v3")]));
    let expected = |names: &[&str]| -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| (format!("test_snapshot_fail_k{n}"), format!("v{n}")))
            .collect()
    };

    let ts = cluster.ts().await;
    inject_lock(&cluster, "KvScan", &key("a"), ts);
    let snapshot = cluster.client.snapshot(ts);
    let pairs = ok("scan", snapshot.scan(key("a")..key("z"), 10).await);
    assert_eq!(texts(&pairs), expected(&["1", "2", "3"]));

    let ts = cluster.ts().await;
    inject_lock(&cluster, "KvScan", &key("k2"), ts);
    let snapshot = cluster.client.snapshot(ts);
    let pairs = ok("scan", snapshot.scan(key("k2")..key("k4"), 10).await);
    assert_eq!(texts(&pairs), expected(&["2", "3"]));
}
