use super::*;
use crate::cluster::ClusterConfig;

/// The bootstrap region of the default cluster: id 4, peers 5/6/7 on stores 1/2/3, leader 5.
const REGION: u64 = 4;

fn cluster() -> Cluster {
    let cluster = Cluster::new(ClusterConfig::default()).unwrap();
    let region = cluster.region(REGION).unwrap();
    assert_eq!(
        region
            .peers
            .iter()
            .map(|p| (p.id, p.store_id))
            .collect::<Vec<_>>(),
        vec![(5, 1), (6, 2), (7, 3)]
    );
    cluster
}

fn ctx(cluster: &Cluster, region_id: u64, peer_id: u64, store_id: u64) -> kvrpcpb::Context {
    let epoch = cluster
        .region(region_id)
        .map(|r| r.epoch.to_proto())
        .unwrap_or_default();
    kvrpcpb::Context {
        region_id,
        region_epoch: Some(epoch),
        peer: Some(metapb::Peer {
            id: peer_id,
            store_id,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn check(
    cluster: &Cluster,
    store_id: u64,
    ctx: &kvrpcpb::Context,
    touched: &[Touched<'_>],
) -> Result<(), ContextError> {
    cluster.check_context(store_id, ctx, touched, KeyMode::Plain, Access::Read)
}

fn region_err(result: Result<(), ContextError>) -> errorpb::Error {
    match result {
        Err(ContextError::Region(err)) => *err,
        other => panic!("expected a region error, got {other:?}"),
    }
}

#[test]
fn a_good_request_passes() {
    let cluster = cluster();
    let ctx = ctx(&cluster, REGION, 5, 1);
    let touched = [
        Touched::Key(b"k"),
        Touched::Range {
            start: b"",
            end: b"",
        },
    ];
    assert_eq!(check(&cluster, 1, &ctx, &touched), Ok(()));
}

#[test]
fn stopped_or_unknown_store_is_unavailable_first() {
    let mut cluster = cluster();
    cluster.stop_store(1).unwrap();
    // Everything else in the context is wrong too: the store check comes first.
    let mut bad = ctx(&cluster, 999, 77, 2);
    bad.cluster_id = 1;
    assert_eq!(
        check(&cluster, 1, &bad, &[]),
        Err(ContextError::StoreUnavailable { store_id: 1 })
    );
    assert_eq!(
        check(&cluster, 99, &bad, &[]),
        Err(ContextError::StoreUnavailable { store_id: 99 })
    );
}

#[test]
fn cluster_id_mismatch_comes_before_region_errors() {
    let cluster = cluster();
    let mut bad = ctx(&cluster, 999, 5, 2);
    bad.cluster_id = 1;
    assert_eq!(
        check(&cluster, 1, &bad, &[]),
        Err(ContextError::ClusterIdMismatch {
            expected: cluster.cluster_id(),
            got: 1
        })
    );
    let mut good = ctx(&cluster, REGION, 5, 1);
    good.cluster_id = cluster.cluster_id();
    assert_eq!(check(&cluster, 1, &good, &[]), Ok(()));
}

#[test]
fn store_not_match_before_region_not_found() {
    let cluster = cluster();
    let err = region_err(check(&cluster, 1, &ctx(&cluster, 999, 6, 2), &[]));
    let snm = err.store_not_match.unwrap();
    assert_eq!((snm.request_store_id, snm.actual_store_id), (2, 1));
    // A context without a peer names store 0.
    let mut no_peer = ctx(&cluster, REGION, 5, 1);
    no_peer.peer = None;
    let err = region_err(check(&cluster, 1, &no_peer, &[]));
    assert_eq!(err.store_not_match.unwrap().request_store_id, 0);
}

#[test]
fn region_not_found_for_unknown_region_or_no_local_peer() {
    let mut cluster = cluster();
    let err = region_err(check(&cluster, 1, &ctx(&cluster, 999, 5, 1), &[]));
    assert_eq!(err.region_not_found.unwrap().region_id, 999);
    cluster.remove_peer(REGION, 3).unwrap();
    let err = region_err(check(&cluster, 3, &ctx(&cluster, REGION, 7, 3), &[]));
    assert_eq!(err.region_not_found.unwrap().region_id, REGION);
}

#[test]
fn mismatch_peer_id_before_not_leader() {
    let cluster = cluster();
    let err = region_err(check(&cluster, 2, &ctx(&cluster, REGION, 77, 2), &[]));
    let mismatch = err.mismatch_peer_id.unwrap();
    assert_eq!((mismatch.request_peer_id, mismatch.store_peer_id), (77, 6));
    assert!(err.not_leader.is_none());
}

/// Follows raftstore's `Peer::propose` (a follower answers NotLeader with its leader as the
/// hint) and `RequestInspector::inspect` (reads marked stale or replica reads may stay).
#[test]
fn not_leader_with_hint_unless_replica_or_stale_read() {
    let mut cluster = cluster();
    let mut follower = ctx(&cluster, REGION, 6, 2);
    // A stale epoch too: NotLeader wins.
    follower.region_epoch = Some(metapb::RegionEpoch {
        conf_ver: 1,
        version: 0,
    });
    let err = region_err(check(&cluster, 2, &follower, &[]));
    let not_leader = err.not_leader.unwrap();
    assert_eq!(not_leader.region_id, REGION);
    assert_eq!(not_leader.leader.unwrap().id, 5);
    assert!(err.epoch_not_match.is_none());

    let mut replica = ctx(&cluster, REGION, 6, 2);
    replica.replica_read = true;
    assert_eq!(check(&cluster, 2, &replica, &[]), Ok(()));
    let mut stale = ctx(&cluster, REGION, 6, 2);
    stale.stale_read = true;
    assert_eq!(check(&cluster, 2, &stale, &[]), Ok(()));

    // Follows raftstore's `RequestInspector::inspect`: a write is proposed, and only a
    // leader proposes, whatever flags the context carries; ScanLock loses `replica_read`.
    for flagged in [&replica, &stale] {
        let write = cluster.check_context(2, flagged, &[], KeyMode::Plain, Access::Write);
        assert_eq!(region_err(write).not_leader.unwrap().leader.unwrap().id, 5);
    }
    let scan_lock = cluster.check_context(2, &replica, &[], KeyMode::Plain, Access::LeaderRead);
    assert!(region_err(scan_lock).not_leader.is_some());
    assert_eq!(
        cluster.check_context(2, &stale, &[], KeyMode::Plain, Access::LeaderRead),
        Ok(())
    );

    cluster.transfer_leader(REGION, 2).unwrap();
    assert_eq!(
        check(&cluster, 2, &ctx(&cluster, REGION, 6, 2), &[]),
        Ok(())
    );
    let err = region_err(check(&cluster, 1, &ctx(&cluster, REGION, 5, 1), &[]));
    assert_eq!(err.not_leader.unwrap().leader.unwrap().store_id, 2);
}

#[test]
fn missing_epoch_is_a_plain_error() {
    let cluster = cluster();
    let mut no_epoch = ctx(&cluster, REGION, 5, 1);
    no_epoch.region_epoch = None;
    let err = region_err(check(&cluster, 1, &no_epoch, &[]));
    assert_eq!(err.message, "missing epoch!");
    assert!(err.epoch_not_match.is_none());
}

#[test]
fn epoch_not_match_checks_version_only_and_carries_neighbours() {
    let mut cluster = cluster();
    let stale = ctx(&cluster, REGION, 5, 1);
    // A conf change alone does not fail KV requests.
    cluster.remove_peer(REGION, 3).unwrap();
    cluster
        .add_peer(REGION, 3, metapb::PeerRole::Voter)
        .unwrap();
    assert_eq!(check(&cluster, 1, &stale, &[]), Ok(()));

    let new = cluster
        .split_region(
            REGION,
            &[Bytes::from_static(b"b"), Bytes::from_static(b"d")],
        )
        .unwrap();
    // Keys "k" would now be fine; the epoch check comes before the key check anyway.
    let err = region_err(check(&cluster, 1, &stale, &[Touched::Key(b"a")]));
    let current: Vec<u64> = err
        .epoch_not_match
        .unwrap()
        .current_regions
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(current, vec![REGION, new[1], new[0]]);
    assert!(err.key_not_in_region.is_none());

    // The middle region splits again: its newer version makes TiKV look one further.
    cluster
        .split_region(new[1], &[Bytes::from_static(b"c")])
        .unwrap();
    let mut one_behind = ctx(&cluster, REGION, 5, 1);
    one_behind.region_epoch = Some(metapb::RegionEpoch {
        conf_ver: 3,
        version: 2,
    });
    let err = region_err(check(&cluster, 1, &one_behind, &[]));
    let regions = err.epoch_not_match.unwrap().current_regions;
    assert_eq!(regions.len(), 3);
    assert_eq!(regions[0].id, REGION);
    assert_eq!(regions[1].id, new[1]);
    assert_eq!(regions[2].end_key.as_ref(), b"c");

    // A client ahead of the store gets only this region.
    let mut ahead = ctx(&cluster, REGION, 5, 1);
    ahead.region_epoch = Some(metapb::RegionEpoch {
        conf_ver: 3,
        version: 99,
    });
    let err = region_err(check(&cluster, 1, &ahead, &[]));
    assert_eq!(err.epoch_not_match.unwrap().current_regions.len(), 1);
}

#[test]
fn key_not_in_region_for_keys_and_ranges() {
    let mut cluster = cluster();
    let left = cluster.split_at(b"m").unwrap().unwrap();
    let ctx = ctx(&cluster, left, cluster.region(left).unwrap().peers[0].id, 1);
    assert_eq!(check(&cluster, 1, &ctx, &[Touched::Key(b"a")]), Ok(()));
    let err = region_err(check(
        &cluster,
        1,
        &ctx,
        &[Touched::Key(b"a"), Touched::Key(b"m")],
    ));
    let knr = err.key_not_in_region.unwrap();
    assert_eq!(knr.key.as_ref(), b"m");
    assert_eq!(knr.region_id, left);
    assert_eq!(
        (knr.start_key.as_ref(), knr.end_key.as_ref()),
        (&b""[..], &b"m"[..])
    );

    let range = |start: &'static [u8], end: &'static [u8]| Touched::Range { start, end };
    assert_eq!(check(&cluster, 1, &ctx, &[range(b"a", b"m")]), Ok(()));
    assert!(check(&cluster, 1, &ctx, &[range(b"a", b"n")]).is_err());
    assert!(check(&cluster, 1, &ctx, &[range(b"a", b"")]).is_err());
    assert!(check(&cluster, 1, &ctx, &[range(b"m", b"n")]).is_err());
}

#[test]
fn encoded_mode_compares_memcomparable_keys() {
    let mut cluster = cluster();
    let boundary = KeyMode::Encoded.to_boundary(b"m");
    let left = cluster.split_at(&boundary).unwrap().unwrap();
    let ctx = ctx(&cluster, left, cluster.region(left).unwrap().peers[0].id, 1);
    let encoded = |key| {
        cluster.check_context(
            1,
            &ctx,
            &[Touched::Key(key)],
            KeyMode::Encoded,
            Access::Read,
        )
    };
    assert_eq!(encoded(b"l"), Ok(()));
    // "m\0" sorts after "m" in both spaces; the raw bytes of "m" alone sort before the
    // encoded boundary, so plain mode would accept it.
    assert!(encoded(b"m").is_err());
    assert_eq!(check(&cluster, 1, &ctx, &[Touched::Key(b"m")]), Ok(()));
    let err = region_err(encoded(b"z"));
    assert_eq!(
        err.key_not_in_region.unwrap().key,
        KeyMode::Encoded.to_boundary(b"z")
    );

    assert_eq!(
        KeyMode::for_request(ApiVersion::V1 as i32, true),
        KeyMode::Encoded
    );
    assert_eq!(
        KeyMode::for_request(ApiVersion::V1 as i32, false),
        KeyMode::Plain
    );
    assert_eq!(
        KeyMode::for_request(ApiVersion::V1ttl as i32, false),
        KeyMode::Plain
    );
    assert_eq!(
        KeyMode::for_request(ApiVersion::V2 as i32, false),
        KeyMode::Encoded
    );
}
