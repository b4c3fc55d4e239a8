use super::*;
use crate::cluster::{ClusterConfig, KeyspaceOptions};

fn cluster() -> Cluster {
    Cluster::new(ClusterConfig::default()).unwrap()
}

fn header(cluster: &Cluster) -> Option<pdpb::RequestHeader> {
    Some(pdpb::RequestHeader {
        cluster_id: cluster.cluster_id(),
        ..Default::default()
    })
}

fn scope(id: u32) -> Option<pdpb::KeyspaceScope> {
    Some(pdpb::KeyspaceScope {
        keyspace: Some(pdpb::keyspace_scope::Keyspace::KeyspaceId(id)),
    })
}

fn advance_txn(cluster: &mut Cluster, id: u32, target: u64) -> pdpb::AdvanceTxnSafePointResponse {
    let req = pdpb::AdvanceTxnSafePointRequest {
        header: header(cluster),
        keyspace_scope: scope(id),
        target,
    };
    cluster.handle_advance_txn_safe_point(&req, 0).unwrap()
}

fn advance_gc(cluster: &mut Cluster, id: u32, target: u64) -> pdpb::AdvanceGcSafePointResponse {
    let req = pdpb::AdvanceGcSafePointRequest {
        header: header(cluster),
        keyspace_scope: scope(id),
        target,
    };
    cluster.handle_advance_gc_safe_point(&req).unwrap()
}

fn gc_state(cluster: &mut Cluster, id: u32) -> pdpb::GcState {
    let req = pdpb::GetGcStateRequest {
        header: header(cluster),
        keyspace_scope: scope(id),
        exclude_gc_barriers: false,
        include_global_gc_barriers: false,
    };
    cluster
        .handle_get_gc_state(&req, 0)
        .unwrap()
        .gc_state
        .unwrap()
}

fn has_error(header: Option<&pdpb::ResponseHeader>) -> bool {
    header.is_some_and(|h| h.error.is_some())
}

#[test]
fn gc_safe_point_may_not_pass_txn_safe_point() {
    let mut cluster = cluster();
    let resp = advance_gc(&mut cluster, NULL_KEYSPACE_ID, 10);
    assert!(has_error(resp.header.as_ref()));
    let resp = advance_txn(&mut cluster, NULL_KEYSPACE_ID, 100);
    assert_eq!((resp.old_txn_safe_point, resp.new_txn_safe_point), (0, 100));
    let resp = advance_gc(&mut cluster, NULL_KEYSPACE_ID, 60);
    assert_eq!((resp.old_gc_safe_point, resp.new_gc_safe_point), (0, 60));
    // Going back is an error for the new API.
    let resp = advance_gc(&mut cluster, NULL_KEYSPACE_ID, 50);
    assert!(has_error(resp.header.as_ref()));
    let resp = advance_txn(&mut cluster, NULL_KEYSPACE_ID, 99);
    assert!(has_error(resp.header.as_ref()));
    let state = gc_state(&mut cluster, NULL_KEYSPACE_ID);
    assert_eq!((state.txn_safe_point, state.gc_safe_point), (100, 60));
    assert!(!state.is_keyspace_level_gc);
}

#[test]
fn legacy_update_ignores_decreases() {
    let mut cluster = cluster();
    advance_txn(&mut cluster, NULL_KEYSPACE_ID, 1_000);
    let update = |cluster: &mut Cluster, safe_point| {
        let req = pdpb::UpdateGcSafePointRequest {
            header: header(cluster),
            safe_point,
        };
        cluster.handle_update_gc_safe_point(&req)
    };
    assert_eq!(update(&mut cluster, 500).unwrap().new_safe_point, 500);
    assert_eq!(update(&mut cluster, 100).unwrap().new_safe_point, 500);
    assert!(matches!(
        update(&mut cluster, 2_000),
        Err(PdError::Gc(GcError::GcSafePointExceedsTxnSafePoint { .. }))
    ));
    let get = cluster
        .handle_get_gc_safe_point(&pdpb::GetGcSafePointRequest {
            header: header(&cluster),
        })
        .unwrap();
    assert_eq!(get.safe_point, 500);

    // Without the cap (older PD behaviour) any increase is accepted.
    let mut lenient = Cluster::new(ClusterConfig {
        cap_gc_safe_point_by_txn_safe_point: false,
        ..ClusterConfig::default()
    })
    .unwrap();
    assert_eq!(update(&mut lenient, 2_000).unwrap().new_safe_point, 2_000);
}

#[test]
fn barriers_hold_back_the_txn_safe_point_until_they_expire() {
    let mut cluster = cluster();
    let set = pdpb::SetGcBarrierRequest {
        header: header(&cluster),
        keyspace_scope: None,
        barrier_id: "br".to_owned(),
        barrier_ts: 50,
        ttl_seconds: 10,
    };
    let resp = cluster.handle_set_gc_barrier(&set, 1_000).unwrap();
    assert_eq!(resp.new_barrier_info.unwrap().ttl_seconds, 10);
    let req = pdpb::AdvanceTxnSafePointRequest {
        header: header(&cluster),
        keyspace_scope: None,
        target: 80,
    };
    let resp = cluster.handle_advance_txn_safe_point(&req, 5_000).unwrap();
    assert_eq!(resp.new_txn_safe_point, 50);
    assert!(resp.blocker_description.contains("br"));
    let state = gc_state(&mut cluster, NULL_KEYSPACE_ID);
    assert_eq!(state.gc_barriers.len(), 1);
    // A barrier below the txn safe point is refused.
    let low = pdpb::SetGcBarrierRequest {
        barrier_ts: 10,
        ..set.clone()
    };
    assert!(has_error(
        cluster
            .handle_set_gc_barrier(&low, 5_000)
            .unwrap()
            .header
            .as_ref()
    ));
    // After the TTL the barrier is dropped and the advance goes through.
    let resp = cluster.handle_advance_txn_safe_point(&req, 12_000).unwrap();
    assert_eq!(resp.new_txn_safe_point, 80);
    assert!(resp.blocker_description.is_empty());
    assert!(
        gc_state(&mut cluster, NULL_KEYSPACE_ID)
            .gc_barriers
            .is_empty()
    );
}

#[test]
fn service_safe_points_are_barriers() {
    let mut cluster = cluster();
    let update = |cluster: &mut Cluster, service: &str, safe_point, ttl| {
        let req = pdpb::UpdateServiceGcSafePointRequest {
            header: header(cluster),
            service_id: service.to_owned().into(),
            ttl,
            safe_point,
        };
        cluster.handle_update_service_gc_safe_point(&req, 3_000)
    };
    let resp = update(&mut cluster, "cdc", 40, 60).unwrap();
    assert_eq!(resp.min_safe_point, 0);
    assert_eq!(&resp.service_id[..], b"gc_worker");
    // gc_worker advances the txn safe point, held back by cdc's barrier.
    let resp = update(&mut cluster, "gc_worker", 100, i64::MAX).unwrap();
    assert_eq!(resp.min_safe_point, 40);
    assert!(matches!(
        update(&mut cluster, "gc_worker", 100, 10),
        Err(PdError::Gc(GcError::GcWorkerTtlNotInfinite))
    ));
    // Deleting the service's safe point unblocks the next advance.
    update(&mut cluster, "cdc", 0, 0).unwrap();
    let resp = update(&mut cluster, "gc_worker", 100, i64::MAX).unwrap();
    assert_eq!(resp.min_safe_point, 100);
    // A service safe point behind the txn safe point is accepted but has no effect.
    let resp = update(&mut cluster, "br", 10, 60).unwrap();
    assert_eq!(resp.min_safe_point, 100);
}

#[test]
fn keyspace_scopes() {
    let mut cluster = cluster();
    let own = KeyspaceOptions {
        keyspace_level_gc: true,
    };
    cluster.create_keyspace("own", &own, 0).unwrap();
    cluster
        .create_keyspace("shared", &KeyspaceOptions::default(), 0)
        .unwrap();
    // Keyspace-level GC keeps its own state.
    let resp = advance_txn(&mut cluster, 1, 70);
    assert_eq!(resp.new_txn_safe_point, 70);
    let state = gc_state(&mut cluster, 1);
    assert!(state.is_keyspace_level_gc);
    assert_eq!(state.txn_safe_point, 70);
    assert_eq!(gc_state(&mut cluster, NULL_KEYSPACE_ID).txn_safe_point, 0);
    // A keyspace following unified GC reads the null keyspace's state, and cannot drive GC.
    let state = gc_state(&mut cluster, 2);
    assert_eq!(
        state.keyspace_scope.unwrap().keyspace,
        Some(pdpb::keyspace_scope::Keyspace::KeyspaceId(NULL_KEYSPACE_ID))
    );
    assert!(has_error(advance_txn(&mut cluster, 2, 5).header.as_ref()));
    assert!(has_error(advance_txn(&mut cluster, 9, 5).header.as_ref()));

    let req = pdpb::UpdateGcSafePointV2Request {
        header: header(&cluster),
        keyspace: Some(pdpb::update_gc_safe_point_v2_request::Keyspace::KeyspaceId(
            1,
        )),
        safe_point: 30,
    };
    assert_eq!(
        cluster
            .handle_update_gc_safe_point_v2(&req)
            .unwrap()
            .new_safe_point,
        30
    );
    let req = pdpb::GetGcSafePointV2Request {
        header: header(&cluster),
        keyspace: Some(pdpb::get_gc_safe_point_v2_request::Keyspace::KeyspaceId(1)),
    };
    assert_eq!(
        cluster
            .handle_get_gc_safe_point_v2(&req)
            .unwrap()
            .safe_point,
        30
    );
    let req = pdpb::UpdateServiceSafePointV2Request {
        header: header(&cluster),
        keyspace: Some(pdpb::update_service_safe_point_v2_request::Keyspace::KeyspaceId(1)),
        service_id: "svc".into(),
        safe_point: 80,
        ttl: 100,
    };
    let resp = cluster
        .handle_update_service_safe_point_v2(&req, 0)
        .unwrap();
    assert_eq!(resp.min_safe_point, 70);
}

#[test]
fn barrier_ids_are_validated() {
    let mut cluster = cluster();
    for (id, ttl) in [("", 10), ("gc_worker", 10), ("ok", 0)] {
        let req = pdpb::SetGcBarrierRequest {
            header: header(&cluster),
            keyspace_scope: None,
            barrier_id: id.to_owned(),
            barrier_ts: 5,
            ttl_seconds: ttl,
        };
        assert!(has_error(
            cluster
                .handle_set_gc_barrier(&req, 0)
                .unwrap()
                .header
                .as_ref()
        ));
    }
    let forever = pdpb::SetGcBarrierRequest {
        header: header(&cluster),
        keyspace_scope: None,
        barrier_id: "keep".to_owned(),
        barrier_ts: 5,
        ttl_seconds: i64::MAX,
    };
    let info = cluster
        .handle_set_gc_barrier(&forever, 0)
        .unwrap()
        .new_barrier_info
        .unwrap();
    assert_eq!(info.ttl_seconds, i64::MAX);
    let delete = pdpb::DeleteGcBarrierRequest {
        header: header(&cluster),
        keyspace_scope: None,
        barrier_id: "keep".to_owned(),
    };
    let deleted = cluster.handle_delete_gc_barrier(&delete, 0).unwrap();
    assert_eq!(deleted.deleted_barrier_info.unwrap().barrier_ts, 5);
    let again = cluster.handle_delete_gc_barrier(&delete, 0).unwrap();
    assert!(again.deleted_barrier_info.is_none());
}
