//! `integration_tests/safepoint_test.go` (`testSafePointSuite`): reads of a transaction
//! whose start timestamp the GC safe point passed fail with `TxnAbortedByGc`.
//!
//! Go sets the deprecated etcd safe point and refreshes the store's cache; here PD's
//! GC-states API moves the txn safe point, and the client trusts a fetched safe point for
//! no time (`Config::with_txn_safe_point_refresh(0)`), which stands in for the refresh.

use tikv_core::Error;
use tikv_proto::pdpb;

use super::{Env, TxnCluster, b, ok};

fn key(i: usize) -> String {
    format!("key{i:08}")
}

/// Moves the cluster's txn safe point to `target` (as GC does through PD's GC-states API).
fn advance_txn_safe_point<E: Env>(tc: &TxnCluster<'_, E>, target: u64) {
    tc.server.with(|sim| {
        let header = Some(pdpb::RequestHeader {
            cluster_id: sim.cluster.cluster_id(),
            ..Default::default()
        });
        let request = pdpb::AdvanceTxnSafePointRequest {
            header,
            keyspace_scope: Some(pdpb::KeyspaceScope {
                keyspace: Some(pdpb::keyspace_scope::Keyspace::KeyspaceId(0xFFFF_FFFF)),
            }),
            target,
        };
        let advanced = sim
            .cluster
            .handle_advance_txn_safe_point(&request, super::now_ms())
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(advanced.new_txn_safe_point, target);
    });
}

fn aborted_by_gc<T: std::fmt::Debug>(what: &str, result: Result<T, Error>) {
    match result {
        Err(Error::TxnAbortedByGc { .. }) => {}
        other => panic!("{what}: expected TxnAbortedByGc, got {other:?}"),
    }
}

/// `TestSafePoint`: once the safe point passes a transaction's start, its point get, scan
/// and batch get fail as aborted by GC.
pub async fn test_safepoint<E: Env>(env: &E) {
    let config =
        tikv_core::Config::default().with_txn_safe_point_refresh(std::time::Duration::ZERO);
    let tc = super::start_with(env, tikv_sim::cluster::ClusterConfig::default(), config).await;
    let mut txn = tc.begin().await;
    for i in 0..10 {
        ok("put", txn.put(b(key(i)), b(format!("value{i}"))));
    }
    ok("commit", txn.commit().await);

    let txn2 = tc.begin().await;
    ok("get", txn2.get(b(key(0))).await);
    advance_txn_safe_point(&tc, txn2.start_ts().version() + 10);
    // The first get cached the value: clean it so the read goes to the store (as Go does).
    txn2.snapshot().clean_cache([key(0)]);
    aborted_by_gc("get", txn2.get(b(key(0))).await);

    let txn3 = tc.begin().await;
    advance_txn_safe_point(&tc, txn3.start_ts().version() + 10);
    aborted_by_gc("scan", txn3.scan(b("key")..b("kez"), 100).await);

    let txn4 = tc.begin().await;
    advance_txn_safe_point(&tc, txn4.start_ts().version() + 10);
    let keys: Vec<_> = (0..10).map(|i| b(key(i))).collect();
    aborted_by_gc("batch get", txn4.batch_get(keys).await);
}
