//! PD as a group over real gRPC: one loopback port per member, followers answering as PD's
//! followers do, a stopped member's port closed, Tso streams broken by the server.

mod support;

use std::time::Duration;

use support::{grpc_channel, pd_header};
use tikv_proto::frame::Framed;
use tikv_proto::pdpb;
use tikv_proto::rpc::{self, CallOptions, Channel, RpcError, call};
use tikv_proto::status::{Code, Status};
use tikv_sim::cluster::{ClusterConfig, FOLLOWER_HANDLE_METADATA};
use tikv_sim::{SimConfig, SimServer};

const TIMEOUT: Duration = Duration::from_secs(5);

async fn three_members() -> SimServer {
    SimServer::start(SimConfig {
        cluster: ClusterConfig {
            pd_members: 3,
            ..ClusterConfig::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

async fn members(address: &str) -> pdpb::GetMembersResponse {
    let channel = grpc_channel(address).await;
    call(
        &channel,
        pdpb::pd::GET_MEMBERS,
        &pdpb::GetMembersRequest::default(),
        CallOptions::with_timeout(TIMEOUT),
        usize::MAX,
    )
    .await
    .unwrap()
}

fn tso_request(server: &SimServer) -> Framed {
    Framed::encode(
        &pdpb::TsoRequest {
            header: pd_header(server),
            count: 1,
            dc_location: String::new(),
        },
        usize::MAX,
    )
    .unwrap()
}

fn status_of(err: RpcError) -> Status {
    match err {
        RpcError::Status(status) => status,
        other => panic!("expected a status, got {other:?}"),
    }
}

/// Follows PD's `GrpcServer::GetMembers` and `validateRoleInRequest` over the wire: every
/// member's port reports the same leader, a follower refuses GetStore with `UNAVAILABLE "not
/// leader"`, serves GetRegion with `pd-allow-follower-handle`, and ends a Tso stream with
/// `UNKNOWN` (`Allocator::GenerateTSO` on a member without the lease).
#[tokio::test]
async fn each_member_port_answers_as_that_member() {
    let server = three_members().await;
    let addresses = server.pd_addresses();
    assert_eq!(addresses.len(), 3);
    assert_eq!(server.pd_address(), addresses[0]);
    for address in &addresses {
        let response = members(address).await;
        let urls: Vec<String> = response
            .members
            .iter()
            .map(|m| m.client_urls[0].clone())
            .collect();
        let expected: Vec<String> = addresses.iter().map(|a| format!("http://{a}")).collect();
        assert_eq!(urls, expected);
        assert_eq!(
            response.leader.unwrap().client_urls,
            vec![format!("http://{}", addresses[0])]
        );
    }
    let follower = grpc_channel(&addresses[1]).await;
    let get_store = pdpb::GetStoreRequest {
        header: pd_header(&server),
        store_id: 1,
    };
    let err = call(
        &follower,
        pdpb::pd::GET_STORE,
        &get_store,
        CallOptions::with_timeout(TIMEOUT),
        usize::MAX,
    )
    .await
    .unwrap_err();
    let status = status_of(err);
    assert_eq!(
        (status.code, status.message.as_str()),
        (Code::Unavailable, "not leader")
    );
    let get_region = pdpb::GetRegionRequest {
        header: pd_header(&server),
        region_key: bytes::Bytes::from_static(b"k"),
        ..Default::default()
    };
    let region = call(
        &follower,
        pdpb::pd::GET_REGION,
        &get_region,
        CallOptions::with_timeout(TIMEOUT).metadata(FOLLOWER_HANDLE_METADATA, ""),
        usize::MAX,
    )
    .await
    .unwrap();
    assert!(region.region.is_some());

    let (mut sender, mut receiver) = follower
        .open_stream(pdpb::pd::TSO.path(), CallOptions::default())
        .await
        .unwrap();
    rpc::send(&mut sender, tso_request(&server)).await.unwrap();
    let status = match rpc::recv(&mut receiver).await {
        Some(Err(err)) => status_of(err),
        other => panic!("a follower answered a Tso request: {other:?}"),
    };
    assert_eq!(status.code, Code::Unknown);
    assert!(status.message.contains("not leader"), "{status:?}");
}

/// Follows PD's leader election after the leader's process stops: its port refuses
/// connections, another member leads and says so, and the stopped member comes back on its
/// old port as a follower.
#[tokio::test]
async fn stopped_leader_closes_its_port_and_another_member_leads() {
    let server = three_members().await;
    let addresses = server.pd_addresses();
    let before = members(&addresses[0]).await;
    let old_leader = before.leader.unwrap().member_id;
    assert_eq!(server.pd_leader(), Some(old_leader));
    server
        .with(|sim| sim.cluster.stop_pd_member(old_leader))
        .unwrap();
    assert!(tokio::net::TcpStream::connect(&addresses[0]).await.is_err());
    let after = members(&addresses[1]).await;
    let new_leader = after.leader.unwrap();
    assert_ne!(new_leader.member_id, old_leader);
    assert_eq!(server.pd_leader(), Some(new_leader.member_id));
    assert_eq!(after.members.len(), 3);

    server
        .with(|sim| sim.cluster.restart_pd_member(old_leader))
        .unwrap();
    let again = members(&addresses[0]).await;
    assert_eq!(again.leader.unwrap().member_id, new_leader.member_id);
    assert_eq!(
        server.pd_member_address(old_leader).as_deref(),
        Some(addresses[0].as_str())
    );
}

/// A Tso stream the model breaks ends at once with the status given, without waiting for
/// the next request; a new stream works.
#[tokio::test]
async fn broken_tso_stream_ends_with_its_status() {
    let server = three_members().await;
    let leader = grpc_channel(server.pd_address()).await;
    let (mut sender, mut receiver) = leader
        .open_stream(pdpb::pd::TSO.path(), CallOptions::default())
        .await
        .unwrap();
    rpc::send(&mut sender, tso_request(&server)).await.unwrap();
    let first = rpc::recv(&mut receiver).await.unwrap().unwrap();
    let first = rpc::decode::<pdpb::TsoResponse>(first).unwrap();
    assert_eq!(first.count, 1);

    let injected = Status::new(Code::Unavailable, "injected: tso stream broken");
    server.with(|sim| sim.cluster.break_tso_streams(injected.clone()));
    let ended = tokio::time::timeout(TIMEOUT, rpc::recv(&mut receiver))
        .await
        .unwrap();
    match ended {
        Some(Err(err)) => assert_eq!(status_of(err), injected),
        other => panic!("the stream did not end with the injected status: {other:?}"),
    }

    let (mut sender, mut receiver) = leader
        .open_stream(pdpb::pd::TSO.path(), CallOptions::default())
        .await
        .unwrap();
    rpc::send(&mut sender, tso_request(&server)).await.unwrap();
    let second =
        rpc::decode::<pdpb::TsoResponse>(rpc::recv(&mut receiver).await.unwrap().unwrap()).unwrap();
    let ts = |r: &pdpb::TsoResponse| {
        let t = r.timestamp.unwrap();
        (t.physical, t.logical)
    };
    assert!(ts(&second) > ts(&first));
}

/// Each member's port counts the gRPC connections it accepted and holds open, across a stop
/// and restart.
#[tokio::test]
async fn member_ports_count_their_connections() {
    let server = three_members().await;
    assert_eq!(server.pd_connections(2), (0, 0));
    let address = server.pd_member_address(2).unwrap();
    let channel = grpc_channel(&address).await;
    let _ = members(&address).await;
    // Two connections were accepted (the channel above and the one inside `members`), and
    // the second closes once its channel is gone.
    let accepted = server.pd_connections(2).0;
    assert_eq!(accepted, 2);
    let settled = async {
        while server.pd_connections(2).1 != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, settled).await.unwrap();
    server.with(|sim| sim.cluster.stop_pd_member(2)).unwrap();
    assert_eq!(server.pd_connections(2), (2, 0));
    assert!(channel.is_closed() || members_fail(&channel).await);
    server.with(|sim| sim.cluster.restart_pd_member(2)).unwrap();
    let _ = members(&address).await;
    assert_eq!(server.pd_connections(2).0, 3);
}

async fn members_fail(channel: &impl Channel) -> bool {
    call(
        channel,
        pdpb::pd::GET_MEMBERS,
        &pdpb::GetMembersRequest::default(),
        CallOptions::with_timeout(TIMEOUT),
        usize::MAX,
    )
    .await
    .is_err()
}
