use super::*;
use crate::cluster::{ClusterConfig, Timestamp};
use tikv_proto::metapb::NodeState;

fn cluster() -> Cluster {
    Cluster::new(ClusterConfig::default()).unwrap()
}

fn header(cluster: &Cluster) -> Option<pdpb::RequestHeader> {
    Some(pdpb::RequestHeader {
        cluster_id: cluster.cluster_id(),
        ..Default::default()
    })
}

fn b(key: &str) -> Bytes {
    Bytes::copy_from_slice(key.as_bytes())
}

/// A cluster with regions ["", b) [b, d) [d, f) [f, ""); returns their ids in key order.
fn four_regions() -> (Cluster, Vec<u64>) {
    let mut cluster = cluster();
    cluster.split_keys(&[b("b"), b("d"), b("f")]).unwrap();
    let ids = cluster.regions().map(|r| r.id).collect();
    (cluster, ids)
}

fn region_ids(regions: &[pdpb::Region]) -> Vec<u64> {
    regions
        .iter()
        .map(|r| r.region.as_ref().unwrap().id)
        .collect()
}

fn error_type(header: Option<&pdpb::ResponseHeader>) -> Option<i32> {
    header.and_then(|h| h.error.as_ref()).map(|e| e.r#type)
}

#[test]
fn cluster_id_is_checked() {
    let mut cluster = cluster();
    let bad = Some(pdpb::RequestHeader {
        cluster_id: 42,
        ..Default::default()
    });
    let err = cluster
        .handle_tso(
            &pdpb::TsoRequest {
                header: bad,
                count: 1,
                dc_location: String::new(),
            },
            1,
        )
        .unwrap_err();
    assert_eq!(
        err,
        PdError::ClusterIdMismatch {
            expected: cluster.cluster_id(),
            got: 42
        }
    );
    let status = err.to_status();
    assert_eq!(status.code, Code::FailedPrecondition);
    assert!(status.message.contains("mismatch cluster id"));
    // A missing header counts as cluster id 0.
    let err = cluster
        .handle_get_store(&pdpb::GetStoreRequest {
            header: None,
            store_id: 1,
        })
        .unwrap_err();
    assert!(matches!(err, PdError::ClusterIdMismatch { got: 0, .. }));
}

#[test]
fn members_and_cluster_info() {
    let cluster = cluster();
    let members = cluster.handle_get_members(&Default::default(), "http://127.0.0.1:2379");
    assert_eq!(members.header.unwrap().cluster_id, cluster.cluster_id());
    assert_eq!(members.members.len(), 1);
    let leader = members.leader.unwrap();
    assert_eq!(leader.client_urls, vec!["http://127.0.0.1:2379".to_owned()]);
    assert_eq!(leader.member_id, 1);
    let info = cluster.handle_get_cluster_info(&Default::default());
    assert_eq!(info.service_modes, vec![ServiceMode::PdSvcMode as i32]);
}

#[test]
fn tso_echoes_count_and_returns_last() {
    let mut cluster = cluster();
    let resp = cluster
        .handle_tso(
            &pdpb::TsoRequest {
                header: header(&cluster),
                count: 5,
                dc_location: String::new(),
            },
            1_000,
        )
        .unwrap();
    assert_eq!(resp.count, 5);
    let ts = resp.timestamp.unwrap();
    assert_eq!((ts.physical, ts.logical, ts.suffix_bits), (1_000, 5, 0));
    cluster.set_tso_paused(true);
    let err = cluster
        .handle_tso(
            &pdpb::TsoRequest {
                header: header(&cluster),
                count: 1,
                dc_location: String::new(),
            },
            1_000,
        )
        .unwrap_err();
    assert_eq!(err, PdError::Tso(TsoError::Paused));
    assert_eq!(err.to_status().code, Code::Unknown);
    cluster.set_tso_paused(false);
    let min = cluster
        .handle_get_min_ts(
            &pdpb::GetMinTsRequest {
                header: header(&cluster),
            },
            900,
        )
        .unwrap();
    assert_eq!(min.timestamp.unwrap().logical, 6);
}

#[test]
fn external_timestamp_rules() {
    let mut cluster = cluster();
    let set = |cluster: &mut Cluster, ts: u64| {
        let req = pdpb::SetExternalTimestampRequest {
            header: header(cluster),
            timestamp: ts,
        };
        error_type(
            cluster
                .handle_set_external_timestamp(&req, 1_000)
                .unwrap()
                .header
                .as_ref(),
        )
    };
    let now = Timestamp {
        physical_ms: 1_000,
        logical: 0,
    }
    .to_u64();
    assert_eq!(
        set(&mut cluster, now + (10 << 18)),
        Some(ErrorType::InvalidValue as i32)
    );
    assert_eq!(set(&mut cluster, now), None);
    assert_eq!(set(&mut cluster, now), Some(ErrorType::InvalidValue as i32));
    let got = cluster
        .handle_get_external_timestamp(&pdpb::GetExternalTimestampRequest {
            header: header(&cluster),
        })
        .unwrap();
    assert_eq!(got.timestamp, now);
}

#[test]
fn alloc_id_returns_last_of_block() {
    let mut cluster = cluster();
    let next = cluster.alloc_id() + 1;
    let one = cluster
        .handle_alloc_id(&pdpb::AllocIdRequest {
            header: header(&cluster),
            count: 0,
        })
        .unwrap();
    assert_eq!((one.id, one.count), (next, 0));
    let many = cluster
        .handle_alloc_id(&pdpb::AllocIdRequest {
            header: header(&cluster),
            count: 3,
        })
        .unwrap();
    assert_eq!((many.id, many.count), (next + 3, 3));
}

#[test]
fn stores_and_tombstones() {
    let mut cluster = cluster();
    let extra = cluster.add_store("a:1", "a:2");
    cluster.remove_store(extra).unwrap();
    let get = |cluster: &Cluster, store_id| {
        cluster
            .handle_get_store(&pdpb::GetStoreRequest {
                header: header(cluster),
                store_id,
            })
            .unwrap()
    };
    let removed = get(&cluster, extra).store.unwrap();
    assert_eq!(removed.node_state, NodeState::Removed as i32);
    let missing = get(&cluster, 404);
    assert!(missing.store.is_none());
    assert_eq!(
        error_type(missing.header.as_ref()),
        Some(ErrorType::Unknown as i32)
    );

    let all = |exclude| {
        cluster
            .handle_get_all_stores(&pdpb::GetAllStoresRequest {
                header: header(&cluster),
                exclude_tombstone_stores: exclude,
            })
            .unwrap()
            .stores
            .len()
    };
    assert_eq!(all(false), 4);
    assert_eq!(all(true), 3);
}

#[test]
fn get_region_prev_and_by_id() {
    let (mut cluster, ids) = four_regions();
    let get = |cluster: &Cluster, key: &str| {
        cluster
            .handle_get_region(&pdpb::GetRegionRequest {
                header: header(cluster),
                region_key: b(key),
                need_buckets: false,
            })
            .unwrap()
    };
    let prev = |cluster: &Cluster, key: &str| {
        cluster
            .handle_get_prev_region(&pdpb::GetRegionRequest {
                header: header(cluster),
                region_key: b(key),
                need_buckets: false,
            })
            .unwrap()
            .region
            .map(|r| r.id)
    };
    let resp = get(&cluster, "c");
    assert_eq!(resp.region.as_ref().unwrap().id, ids[1]);
    assert_eq!(resp.leader.unwrap().store_id, 1);
    assert!(resp.down_peers.is_empty() && resp.pending_peers.is_empty());
    assert!(resp.buckets.is_none());
    // The previous region of a key is the one before the region containing it.
    assert_eq!(prev(&cluster, "d"), Some(ids[1]));
    assert_eq!(prev(&cluster, "e"), Some(ids[1]));
    assert_eq!(prev(&cluster, "a"), None);

    cluster.hide_region_from_pd(ids[1]).unwrap();
    let hidden = get(&cluster, "c");
    assert!(hidden.region.is_none());
    assert!(hidden.header.unwrap().error.is_none());
    assert_eq!(prev(&cluster, "e"), None);
    let by_id = cluster
        .handle_get_region_by_id(&pdpb::GetRegionByIdRequest {
            header: header(&cluster),
            region_id: ids[1],
            need_buckets: false,
        })
        .unwrap();
    assert!(by_id.region.is_none());
    cluster.reveal_region_to_pd(ids[1]);
    assert_eq!(prev(&cluster, "e"), Some(ids[1]));
}

#[test]
fn query_region_batches_keys_prev_keys_and_ids() {
    let (mut cluster, ids) = four_regions();
    cluster.hide_region_from_pd(ids[3]).unwrap();
    let resp = cluster
        .handle_query_region(&pdpb::QueryRegionRequest {
            header: header(&cluster),
            need_buckets: false,
            ids: vec![ids[2], 0, 777, ids[0]],
            keys: vec![b("e"), b("a"), b("z"), b("e")],
            prev_keys: vec![b("b"), b(""), b("g")],
        })
        .unwrap();
    assert_eq!(resp.key_id_map, vec![ids[2], ids[0], 0, ids[2]]);
    // "g" lies in the hidden region, so PD has no region to go back from.
    assert_eq!(resp.prev_key_id_map, vec![ids[0], 0, 0]);
    let keys: Vec<u64> = resp.regions_by_id.keys().copied().collect();
    let mut expected = vec![ids[0], ids[2], 777];
    expected.sort_unstable();
    assert_eq!(keys, expected);
    assert!(resp.regions_by_id[&777].region.is_none());
    let found = &resp.regions_by_id[&ids[2]];
    assert_eq!(found.region.as_ref().unwrap().start_key, b("d"));
    assert_eq!(found.leader.unwrap().store_id, 1);
}

#[test]
fn scan_regions_with_limit_and_holes() {
    let (mut cluster, ids) = four_regions();
    let scan = |cluster: &Cluster, start: &str, end: &str, limit| {
        let resp = cluster
            .handle_scan_regions(&pdpb::ScanRegionsRequest {
                header: header(cluster),
                start_key: b(start),
                limit,
                end_key: b(end),
            })
            .unwrap();
        assert_eq!(resp.region_metas.len(), resp.regions.len());
        assert_eq!(resp.leaders.len(), resp.regions.len());
        region_ids(&resp.regions)
    };
    assert_eq!(scan(&cluster, "", "", 0), ids);
    assert_eq!(scan(&cluster, "c", "e", 0), ids[1..3].to_vec());
    assert_eq!(scan(&cluster, "c", "", 2), ids[1..3].to_vec());
    assert_eq!(scan(&cluster, "c", "d", -1), vec![ids[1]]);
    cluster.hide_region_from_pd(ids[1]).unwrap();
    assert_eq!(cluster.pd_regions().count(), 3);
    assert_eq!(scan(&cluster, "c", "", 0), vec![ids[2], ids[3]]);
    assert_eq!(scan(&cluster, "", "", 0), vec![ids[0], ids[2], ids[3]]);
}

#[test]
fn batch_scan_regions_merges_ranges_and_reports_holes() {
    let (mut cluster, ids) = four_regions();
    let range = |start: &str, end: &str| pdpb::KeyRange {
        start_key: b(start),
        end_key: b(end),
    };
    let scan = |cluster: &Cluster, ranges: Vec<pdpb::KeyRange>, limit, all| {
        cluster
            .handle_batch_scan_regions(&pdpb::BatchScanRegionsRequest {
                header: header(cluster),
                need_buckets: false,
                ranges,
                limit,
                contain_all_key_range: all,
            })
            .unwrap()
    };
    // Two ranges inside one region yield it once.
    let resp = scan(&cluster, vec![range("a", "a1"), range("a2", "c")], 0, true);
    assert_eq!(region_ids(&resp.regions), vec![ids[0], ids[1]]);
    let resp = scan(&cluster, vec![range("", "")], 3, true);
    assert_eq!(region_ids(&resp.regions), ids[..3].to_vec());
    let resp = scan(&cluster, vec![range("c", "b")], 0, false);
    assert_eq!(
        error_type(resp.header.as_ref()),
        Some(ErrorType::Unknown as i32)
    );
    let resp = scan(&cluster, vec![range("c", "e"), range("d", "g")], 0, false);
    assert_eq!(
        error_type(resp.header.as_ref()),
        Some(ErrorType::Unknown as i32)
    );

    cluster.hide_region_from_pd(ids[2]).unwrap();
    let resp = scan(&cluster, vec![range("c", "g")], 0, true);
    assert_eq!(
        error_type(resp.header.as_ref()),
        Some(ErrorType::RegionsNotContainAllKeyRange as i32)
    );
    assert!(resp.regions.is_empty());
    let resp = scan(&cluster, vec![range("c", "g")], 0, false);
    assert!(resp.header.unwrap().error.is_none());
    assert_eq!(region_ids(&resp.regions), vec![ids[1], ids[3]]);
    // A hole at the end of a range is a hole too; the range before it is fine.
    let resp = scan(&cluster, vec![range("c", "e")], 0, true);
    assert_eq!(
        error_type(resp.header.as_ref()),
        Some(ErrorType::RegionsNotContainAllKeyRange as i32)
    );
    let resp = scan(&cluster, vec![range("a", "d")], 0, true);
    assert_eq!(region_ids(&resp.regions), vec![ids[0], ids[1]]);
    // The limit stops the scan before the hole is reached.
    let resp = scan(&cluster, vec![range("c", "g")], 1, true);
    assert_eq!(region_ids(&resp.regions), vec![ids[1]]);
}

#[test]
fn scatter_then_operator_is_finished() {
    let (mut cluster, ids) = four_regions();
    let op = |cluster: &mut Cluster, region_id| {
        let header = header(cluster);
        cluster
            .handle_get_operator(&pdpb::GetOperatorRequest { header, region_id })
            .unwrap()
    };
    assert_eq!(
        error_type(op(&mut cluster, ids[0]).header.as_ref()),
        Some(ErrorType::RegionNotFound as i32)
    );
    let resp = cluster
        .handle_scatter_region(&pdpb::ScatterRegionRequest {
            header: header(&cluster),
            regions_id: vec![ids[0], 999],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(resp.finished_percentage, 50);
    assert_eq!(resp.failed_regions_id, vec![999]);
    let resp = op(&mut cluster, ids[0]);
    assert_eq!(resp.status, OperatorStatus::Success as i32);
    assert_eq!(&resp.desc[..], SCATTER_DESC);
}

#[test]
fn scatter_runs_for_the_configured_polls() {
    let (mut cluster, ids) = four_regions();
    cluster.set_scatter_running_polls(2);
    let header = header(&cluster);
    cluster
        .handle_scatter_region(&pdpb::ScatterRegionRequest {
            header: header.clone(),
            regions_id: vec![ids[1]],
            ..Default::default()
        })
        .unwrap();
    let statuses: Vec<i32> = (0..3)
        .map(|_| {
            cluster
                .handle_get_operator(&pdpb::GetOperatorRequest {
                    header: header.clone(),
                    region_id: ids[1],
                })
                .unwrap()
                .status
        })
        .collect();
    assert_eq!(
        statuses,
        [
            OperatorStatus::Running as i32,
            OperatorStatus::Running as i32,
            OperatorStatus::Success as i32
        ]
    );
}
