//! What the cluster configuration changes: keyspace-aligned regions in API V2, learners,
//! store labels, the lock-wait ceiling, PD members.

mod support;

use bytes::Bytes;
use support::{grpc_channel, pd_header};
use tikv_proto::codec::encode_bytes;
use tikv_proto::kvrpcpb::{self, ApiVersion};
use tikv_proto::metapb::PeerRole;
use tikv_proto::pdpb;
use tikv_proto::rpc::{CallOptions, call};
use tikv_proto::tikvpb::batch_commands_request::request::Cmd as Req;
use tikv_sim::cluster::{ClusterConfig, ClusterError};
use tikv_sim::tikv::{Execution, TikvRequest};
use tikv_sim::{Sim, SimConfig, SimServer};

const NOW_MS: u64 = 1_700_000_000_000;

fn sim(config: SimConfig) -> Sim {
    Sim::new(config).unwrap_or_else(|err| panic!("{err}"))
}

fn starts(sim: &Sim) -> Vec<Bytes> {
    sim.cluster
        .regions()
        .map(|region| region.start_key.clone())
        .collect()
}

/// `mode` + 3-byte keyspace id + `key`, memcomparable-encoded: an API V2 key as region
/// boundaries hold it.
fn v2_boundary(mode: u8, keyspace: u32, key: &[u8]) -> Bytes {
    let id = keyspace.to_be_bytes();
    let mut prefixed = vec![mode, id[1], id[2], id[3]];
    prefixed.extend_from_slice(key);
    Bytes::from(encode_bytes(&prefixed))
}

/// Follows PD's keyspace manager `Bootstrap`, which runs `splitKeyspaceRegion` for the
/// DEFAULT keyspace: in API V2 its raw range `[r000, r001)` and txn range `[x000, x001)` are
/// regions of their own from the start. An API V1 cluster keeps one region.
#[test]
fn api_v2_splits_the_default_keyspace_at_bootstrap_as_pd_keyspace_manager() {
    let v2 = sim(SimConfig {
        api_version: ApiVersion::V2,
        ..SimConfig::default()
    });
    assert_eq!(
        starts(&v2),
        vec![
            Bytes::new(),
            v2_boundary(b'r', 0, b""),
            v2_boundary(b'r', 1, b""),
            v2_boundary(b'x', 0, b""),
            v2_boundary(b'x', 1, b""),
        ]
    );
    // The DEFAULT keyspace's raw keys all live in one region that ends at the keyspace's end.
    let region = v2
        .cluster
        .region_by_key(&v2_boundary(b'r', 0, b"k2"))
        .unwrap_or_else(|| panic!("no region"));
    assert_eq!(region.start_key, v2_boundary(b'r', 0, b""));
    assert_eq!(region.end_key, v2_boundary(b'r', 1, b""));
    assert_eq!(sim(SimConfig::default()).cluster.region_count(), 1);
}

/// Follows PD's `splitKeyspaceRegion` through the served PD: `GetRegion` for a DEFAULT
/// keyspace key answers the region that ends at the keyspace's end, so a client scanning
/// the keyspace stops there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_api_v2_cluster_reports_keyspace_aligned_regions_to_clients() {
    let server = SimServer::start(SimConfig {
        api_version: ApiVersion::V2,
        ..SimConfig::default()
    })
    .await
    .unwrap_or_else(|err| panic!("{err}"));
    let pd = grpc_channel(server.pd_address()).await;
    for mode in [b'r', b'x'] {
        let response = call(
            &pd,
            pdpb::pd::GET_REGION,
            &pdpb::GetRegionRequest {
                header: pd_header(&server),
                region_key: v2_boundary(mode, 0, b"k3"),
                ..Default::default()
            },
            CallOptions::with_timeout(std::time::Duration::from_secs(5)),
            usize::MAX,
        )
        .await
        .unwrap_or_else(|err| panic!("{err}"));
        let region = response.region.unwrap_or_default();
        assert_eq!(region.start_key, v2_boundary(mode, 0, b""));
        assert_eq!(region.end_key, v2_boundary(mode, 1, b""));
    }
}

/// Follows PD's bootstrap with a placement rule of learner peers: voters on the first
/// stores, learners on the next ones; splits copy the roles (TiKV's batch split keeps each
/// peer's role).
#[test]
fn learners_follow_the_voters_and_survive_splits() {
    let mut sim = sim(SimConfig {
        cluster: ClusterConfig {
            store_count: 5,
            replica_count: 3,
            learner_count: 2,
            ..ClusterConfig::default()
        },
        ..SimConfig::default()
    });
    let roles = |sim: &Sim| -> Vec<Vec<(u64, PeerRole)>> {
        sim.cluster
            .regions()
            .map(|region| {
                region
                    .peers
                    .iter()
                    .map(|peer| (peer.store_id, peer.role))
                    .collect()
            })
            .collect()
    };
    let expected = vec![
        (1, PeerRole::Voter),
        (2, PeerRole::Voter),
        (3, PeerRole::Voter),
        (4, PeerRole::Learner),
        (5, PeerRole::Learner),
    ];
    assert_eq!(roles(&sim), vec![expected.clone()]);
    sim.cluster
        .split_at(b"m")
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(roles(&sim), vec![expected.clone(), expected]);
    let too_many = Sim::new(SimConfig {
        cluster: ClusterConfig {
            store_count: 3,
            replica_count: 3,
            learner_count: 1,
            ..ClusterConfig::default()
        },
        ..SimConfig::default()
    });
    assert!(matches!(too_many, Err(ClusterError::InvalidConfig(_))));
}

/// Follows TiKV's `server.labels`, sent to PD in the store's `metapb::Store.labels` and
/// answered by PD's `GetStore` / `GetAllStores`; labels TiKV's `validate_label_key` refuses
/// are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_labels_reach_pd_store_metadata_as_tikv_server_labels() {
    let labels = |zone: &str, host: &str| {
        vec![
            ("host".to_owned(), host.to_owned()),
            ("zone".to_owned(), zone.to_owned()),
        ]
    };
    let server = SimServer::start(SimConfig {
        cluster: ClusterConfig {
            store_labels: vec![labels("z1", "h1"), labels("z2", "h2")],
            ..ClusterConfig::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap_or_else(|err| panic!("{err}"));
    let pd = grpc_channel(server.pd_address()).await;
    let response = call(
        &pd,
        pdpb::pd::GET_ALL_STORES,
        &pdpb::GetAllStoresRequest {
            header: pd_header(&server),
            ..Default::default()
        },
        CallOptions::with_timeout(std::time::Duration::from_secs(5)),
        usize::MAX,
    )
    .await
    .unwrap_or_else(|err| panic!("{err}"));
    let reported: Vec<Vec<(String, String)>> = response
        .stores
        .iter()
        .map(|store| {
            store
                .labels
                .iter()
                .map(|label| (label.key.clone(), label.value.clone()))
                .collect()
        })
        .collect();
    assert_eq!(
        reported,
        vec![labels("z1", "h1"), labels("z2", "h2"), Vec::new()]
    );

    let bad = Sim::new(SimConfig {
        cluster: ClusterConfig {
            store_labels: vec![vec![("-zone".to_owned(), "z1".to_owned())]],
            ..ClusterConfig::default()
        },
        ..SimConfig::default()
    });
    assert!(matches!(bad, Err(ClusterError::InvalidLabel { .. })));
}

/// Follows TiKV's `WaitTimeout::into_duration_with_ceiling`: a lock request waits at most
/// `pessimistic-txn.wait-for-lock-timeout`, and one without its own timeout (0) waits
/// exactly that long.
#[test]
fn lock_waits_are_capped_at_wait_for_lock_timeout_as_tikv_lock_manager() {
    for (requested, expected) in [(5_000, 300), (0, 300), (100, 100)] {
        let mut sim = sim(SimConfig {
            pessimistic_txn: tikv_sim::lock_manager::PessimisticTxnConfig {
                wait_for_lock_timeout_ms: 300,
                ..Default::default()
            },
            ..SimConfig::default()
        });
        let key = Bytes::from_static(b"k");
        let lock = |start_ts: u64, wait_timeout: i64| kvrpcpb::PessimisticLockRequest {
            mutations: vec![kvrpcpb::Mutation {
                op: kvrpcpb::Op::PessimisticLock as i32,
                key: key.clone(),
                ..Default::default()
            }],
            primary_lock: key.clone(),
            start_version: start_ts,
            for_update_ts: start_ts,
            lock_ttl: 20_000,
            wait_timeout,
            ..Default::default()
        };
        let (store, context) = sim
            .leader_context(&encode_bytes(b"k"))
            .unwrap_or_else(|| panic!("no leader"));
        let holder = Req::PessimisticLock(kvrpcpb::PessimisticLockRequest {
            context: Some(context.clone()),
            ..lock(10, 0)
        });
        assert!(matches!(
            sim.execute(store, TikvRequest::Batch(holder), NOW_MS),
            Execution::Done(_)
        ));
        let waiter = Req::PessimisticLock(kvrpcpb::PessimisticLockRequest {
            context: Some(context),
            ..lock(20, requested)
        });
        assert!(matches!(
            sim.execute(store, TikvRequest::Batch(waiter), NOW_MS),
            Execution::Parked(_)
        ));
        assert_eq!(
            sim.next_timeout_ms(),
            Some(NOW_MS + expected),
            "wait_timeout {requested}"
        );
    }
    // TiKV's lock manager config refuses a zero ceiling.
    let zero = Sim::new(SimConfig {
        pessimistic_txn: tikv_sim::lock_manager::PessimisticTxnConfig {
            wait_for_lock_timeout_ms: 0,
            ..Default::default()
        },
        ..SimConfig::default()
    });
    assert!(matches!(zero, Err(ClusterError::InvalidConfig(_))));
}

/// PD refuses to start without a member; any positive count is served as a group.
#[test]
fn pd_members_must_be_at_least_one() {
    let config = |members| SimConfig {
        cluster: ClusterConfig {
            pd_members: members,
            ..ClusterConfig::default()
        },
        ..SimConfig::default()
    };
    assert!(matches!(
        Sim::new(config(0)),
        Err(ClusterError::InvalidConfig(_))
    ));
    assert_eq!(
        Sim::new(config(3))
            .map(|sim| sim.cluster.pd_members().len())
            .ok(),
        Some(3)
    );
}
