use bytes::Bytes;
use prost::Message;
use tikv_proto::pdpb;
use tikv_proto::status::{Code, Status};

use super::*;
use crate::cluster::ClusterConfig;
use crate::sim::{Sim, SimConfig};

const URLS: [&str; 3] = [
    "http://127.0.0.1:2379",
    "http://127.0.0.1:2382",
    "http://127.0.0.1:2384",
];

/// A three-member group with URLs; member 1 leads.
fn sim() -> Sim {
    let mut sim = Sim::new(SimConfig {
        cluster: ClusterConfig {
            pd_members: 3,
            ..ClusterConfig::default()
        },
        ..SimConfig::default()
    })
    .unwrap();
    for (member, url) in (1..).zip(URLS) {
        sim.cluster.set_pd_member_url(member, url).unwrap();
    }
    sim
}

fn header(sim: &Sim) -> Option<pdpb::RequestHeader> {
    Some(pdpb::RequestHeader {
        cluster_id: sim.cluster.cluster_id(),
        ..Default::default()
    })
}

fn encode(message: &impl Message) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

fn unary<M: Message + Default>(
    sim: &mut Sim,
    context: &PdCallContext<'_>,
    path: &str,
    request: &impl Message,
) -> Result<M, Status> {
    sim.handle_pd_unary_at(context, path, encode(request), 1_000)
        .map(|framed| M::decode(framed.payload()).unwrap())
}

fn members(sim: &mut Sim, member: u64) -> pdpb::GetMembersResponse {
    unary(
        sim,
        &PdCallContext::at(member),
        pdpb::pd::GET_MEMBERS.path(),
        &pdpb::GetMembersRequest::default(),
    )
    .unwrap()
}

fn get_store(sim: &mut Sim, context: &PdCallContext<'_>) -> Result<pdpb::GetStoreResponse, Status> {
    let request = pdpb::GetStoreRequest {
        header: header(sim),
        store_id: 1,
    };
    unary(sim, context, pdpb::pd::GET_STORE.path(), &request)
}

fn get_region(
    sim: &mut Sim,
    context: &PdCallContext<'_>,
) -> Result<pdpb::GetRegionResponse, Status> {
    let request = pdpb::GetRegionRequest {
        header: header(sim),
        region_key: Bytes::from_static(b"k"),
        ..Default::default()
    };
    unary(sim, context, pdpb::pd::GET_REGION.path(), &request)
}

fn tso(sim: &mut Sim, context: &PdCallContext<'_>) -> Result<u64, Status> {
    let request = pdpb::TsoRequest {
        header: header(sim),
        count: 1,
        dc_location: String::new(),
    };
    sim.handle_tso_at(context, encode(&request), 1_000)
        .map(|framed| {
            let ts = pdpb::TsoResponse::decode(framed.payload())
                .unwrap()
                .timestamp
                .unwrap();
            ((ts.physical as u64) << 18) | ts.logical as u64
        })
}

fn leader_id(response: &pdpb::GetMembersResponse) -> Option<u64> {
    response.leader.as_ref().map(|leader| leader.member_id)
}

/// Follows PD's `GrpcServer::GetMembers`: every member answers, listing all members and the
/// leader, so a client may ask any of them.
#[test]
fn every_member_answers_get_members_with_the_leader() {
    let mut sim = sim();
    for member in 1..=3 {
        let response = members(&mut sim, member);
        assert_eq!(response.members.len(), 3);
        let urls: Vec<&str> = response
            .members
            .iter()
            .map(|m| m.client_urls[0].as_str())
            .collect();
        assert_eq!(urls, URLS);
        assert_eq!(leader_id(&response), Some(1));
        assert_eq!(response.leader.unwrap().client_urls, vec![URLS[0]]);
        assert_eq!(response.etcd_leader.unwrap().member_id, 1);
        assert!(response.header.unwrap().error.is_none());
    }
    let names: Vec<&str> = sim
        .cluster
        .pd_members()
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["pd-sim-1", "pd-sim-2", "pd-sim-3"]);
}

/// Follows PD's `validateRoleInRequest` (`errs.ErrNotLeader`): a follower refuses calls only
/// the leader serves with `UNAVAILABLE "not leader"`, before it looks at the cluster id.
#[test]
fn follower_refuses_leader_only_calls_with_not_leader() {
    let mut sim = sim();
    assert!(get_store(&mut sim, &PdCallContext::at(1)).is_ok());
    let status = get_store(&mut sim, &PdCallContext::at(2)).unwrap_err();
    assert_eq!(status.code, Code::Unavailable);
    assert_eq!(status.message, "not leader");
    // The role check comes first: a wrong cluster id at a follower still says not leader.
    let bad = pdpb::AllocIdRequest {
        header: Some(pdpb::RequestHeader {
            cluster_id: 42,
            ..Default::default()
        }),
        ..Default::default()
    };
    let status = unary::<pdpb::AllocIdResponse>(
        &mut sim,
        &PdCallContext::at(3),
        pdpb::pd::ALLOC_ID.path(),
        &bad,
    )
    .unwrap_err();
    assert_eq!(status.message, "not leader");
    // Keyspaces, GC and the resource manager are leader-only too.
    let load = tikv_proto::keyspacepb::LoadKeyspaceRequest {
        header: header(&sim),
        name: "DEFAULT".to_owned(),
        ..Default::default()
    };
    let status = unary::<tikv_proto::keyspacepb::LoadKeyspaceResponse>(
        &mut sim,
        &PdCallContext::at(2),
        tikv_proto::keyspacepb::keyspace::LOAD_KEYSPACE.path(),
        &load,
    )
    .unwrap_err();
    assert_eq!(status.code, Code::Unavailable);
    let status = sim
        .handle_token_buckets_at(&PdCallContext::at(2), Bytes::new())
        .unwrap_err();
    assert_eq!(status.message, "not leader");
}

/// Follows PD's `unaryFollowerMiddleware`: a follower serves region lookups from its synced
/// region tree only when the call carries `pd-allow-follower-handle`.
#[test]
fn follower_serves_region_lookups_only_when_allowed() {
    let mut sim = sim();
    let status = get_region(&mut sim, &PdCallContext::at(2)).unwrap_err();
    assert_eq!(status.code, Code::Unavailable);
    assert_eq!(
        status.message,
        "not leader and follower handling not allowed"
    );
    let allowed = PdCallContext::with_metadata(2, [(FOLLOWER_HANDLE_METADATA, "")]);
    assert!(allowed.allow_follower);
    let region = get_region(&mut sim, &allowed).unwrap();
    assert!(region.region.is_some());
    // GetStore is not a region lookup: the header does not help.
    let status = get_store(&mut sim, &allowed).unwrap_err();
    assert_eq!(status.message, "not leader");
}

/// Follows PD's `Allocator::GenerateTSO`: a follower accepts a Tso stream but its allocator
/// does not hold the lease, so the stream ends with `UNKNOWN` "... not leader ...", which
/// PD clients take as a leader change.
#[test]
fn follower_tso_fails_with_generate_timestamp_not_leader() {
    let mut sim = sim();
    assert!(tso(&mut sim, &PdCallContext::at(1)).is_ok());
    let status = tso(&mut sim, &PdCallContext::at(2)).unwrap_err();
    assert_eq!(status.code, Code::Unknown);
    assert!(status.message.contains("ErrGenerateTimestamp"));
    assert!(status.message.contains("is not leader"));
    // The cluster id is checked before the allocator is asked.
    let request = pdpb::TsoRequest {
        header: None,
        count: 1,
        dc_location: String::new(),
    };
    let status = sim
        .handle_tso_at(&PdCallContext::at(2), encode(&request), 1_000)
        .unwrap_err();
    assert_eq!(status.code, Code::FailedPrecondition);
}

/// Follows PD's `validatePDForwardedHost` and `isLocalRequest`: a follower forwards a call
/// carrying the leader's URL in `pd-forwarded-host`; a host that is not the leader is
/// refused; the leader serves a call naming itself.
#[test]
fn follower_forwards_calls_for_the_leader() {
    let mut sim = sim();
    let forwarded = PdCallContext::with_metadata(3, [(FORWARDED_HOST_METADATA, URLS[0])]);
    assert!(get_store(&mut sim, &forwarded).is_ok());
    assert!(tso(&mut sim, &forwarded).is_ok());
    // The scheme does not matter.
    let https = "https://127.0.0.1:2379";
    let forwarded = PdCallContext::with_metadata(3, [(FORWARDED_HOST_METADATA, https)]);
    assert!(get_store(&mut sim, &forwarded).is_ok());
    let wrong = PdCallContext::with_metadata(3, [(FORWARDED_HOST_METADATA, URLS[1])]);
    let status = get_store(&mut sim, &wrong).unwrap_err();
    assert_eq!(status.code, Code::InvalidArgument);
    assert!(status.message.contains("not leader"));
    let local = PdCallContext::with_metadata(1, [(FORWARDED_HOST_METADATA, URLS[0])]);
    assert!(get_store(&mut sim, &local).is_ok());
}

/// Follows PD's leader election (`member.CampaignLeader` over etcd's lease): when the leader
/// stops, the next running member takes over while a majority runs; without a quorum nobody
/// leads, and GetMembers reports no leader.
#[test]
fn stopping_the_leader_elects_the_next_member() {
    let mut sim = sim();
    sim.cluster.stop_pd_member(1).unwrap();
    assert_eq!(sim.cluster.pd_leader().map(|m| m.id), Some(2));
    let response = members(&mut sim, 3);
    assert_eq!(leader_id(&response), Some(2));
    assert_eq!(response.members.len(), 3, "a stopped member stays listed");
    let status = get_store(&mut sim, &PdCallContext::at(1)).unwrap_err();
    assert_eq!(status.message, "server not started");
    assert!(get_store(&mut sim, &PdCallContext::at(2)).is_ok());
    // Two of three stopped: no quorum, no leader.
    sim.cluster.stop_pd_member(2).unwrap();
    assert!(sim.cluster.pd_leader().is_none());
    let response = members(&mut sim, 3);
    assert_eq!(leader_id(&response), None);
    assert!(response.etcd_leader.is_none());
    assert_eq!(
        sim.cluster.transfer_pd_leader(3),
        Err(ClusterError::PdNoQuorum)
    );
    let status = get_store(&mut sim, &PdCallContext::at(3)).unwrap_err();
    assert_eq!(status.message, "not leader");
    // A member coming back restores the quorum and the election ends.
    sim.cluster.restart_pd_member(1).unwrap();
    assert_eq!(sim.cluster.pd_leader().map(|m| m.id), Some(3));
}

/// Follows PD's `ResignLeader` and leader transfer: the lease moves to another member, and
/// with automatic elections off the group stays leaderless until an election ends.
#[test]
fn leadership_moves_by_resignation_and_transfer() {
    let mut sim = sim();
    assert_eq!(sim.cluster.resign_pd_leader(), Ok(1));
    assert_eq!(sim.cluster.pd_leader().map(|m| m.id), Some(2));
    sim.cluster.transfer_pd_leader(1).unwrap();
    assert_eq!(leader_id(&members(&mut sim, 2)), Some(1));
    sim.cluster.stop_pd_member(3).unwrap();
    assert_eq!(
        sim.cluster.transfer_pd_leader(3),
        Err(ClusterError::PdMemberStopped { member_id: 3 })
    );
    assert_eq!(
        sim.cluster.transfer_pd_leader(9),
        Err(ClusterError::PdMemberNotFound { member_id: 9 })
    );
    sim.cluster.set_pd_auto_elect(false);
    assert_eq!(sim.cluster.resign_pd_leader(), Ok(1));
    assert!(sim.cluster.pd_leader().is_none());
    assert_eq!(
        sim.cluster.resign_pd_leader(),
        Err(ClusterError::PdNoLeader)
    );
    let status = tso(&mut sim, &PdCallContext::at(1)).unwrap_err();
    assert_eq!(status.code, Code::Unknown);
    // The election skips the stopped member and starts after the last leader.
    assert_eq!(sim.cluster.elect_pd_leader(), Ok(2));
    assert_eq!(sim.cluster.elect_pd_leader(), Ok(2));
}

/// Follows PD's `timestampOracle.syncTimestamp`: a new leader hands out timestamps above
/// every one its predecessor gave.
#[test]
fn tso_stays_monotonic_across_leaders() {
    let mut sim = sim();
    let before = tso(&mut sim, &PdCallContext::at(1)).unwrap();
    sim.cluster.stop_pd_member(1).unwrap();
    let after = tso(&mut sim, &PdCallContext::at(2)).unwrap();
    assert!(after > before);
}

/// A joining member (PD's `join`) is listed and can lead.
#[test]
fn added_member_is_listed_and_can_lead() {
    let mut sim = sim();
    let id = sim.cluster.add_pd_member();
    assert_eq!(id, 4);
    sim.cluster
        .set_pd_member_url(id, "http://127.0.0.1:2390")
        .unwrap();
    assert_eq!(members(&mut sim, 2).members.len(), 4);
    sim.cluster.transfer_pd_leader(id).unwrap();
    assert!(tso(&mut sim, &PdCallContext::at(id)).is_ok());
}

/// Follows PD's member deletion (etcd's member remove): removed members are no longer
/// listed or counted for the quorum, so stopping half of a grown group and removing those
/// members leaves a group that elects.
#[test]
fn removed_members_leave_the_quorum() {
    let mut sim = sim();
    for _ in 0..3 {
        sim.cluster.add_pd_member();
    }
    for member in 1..=3 {
        sim.cluster.stop_pd_member(member).unwrap();
    }
    assert!(sim.cluster.pd_leader().is_none(), "3 of 6 is no quorum");
    for member in 1..=3 {
        sim.cluster.remove_pd_member(member).unwrap();
    }
    assert_eq!(sim.cluster.pd_leader().map(|m| m.id), Some(4));
    assert_eq!(members(&mut sim, 5).members.len(), 3);
    assert_eq!(
        sim.cluster.remove_pd_member(1),
        Err(ClusterError::PdMemberNotFound { member_id: 1 })
    );
}

/// Broken Tso streams end with the status given; streams opened later work.
#[test]
fn broken_tso_streams_end_with_their_status() {
    let mut sim = sim();
    let opened = sim.cluster.tso_stream_generation();
    assert_eq!(sim.cluster.tso_stream_break(opened), None);
    let status = Status::new(Code::Unavailable, "stream reset");
    sim.cluster.break_tso_streams(status.clone());
    assert_eq!(sim.cluster.tso_stream_break(opened), Some(status));
    let reopened = sim.cluster.tso_stream_generation();
    assert_eq!(sim.cluster.tso_stream_break(reopened), None);
}

/// The one-member cluster callers that name no member reach keeps answering as before.
#[test]
fn single_member_answers_through_the_default_member() {
    let mut sim = Sim::new(SimConfig::default()).unwrap();
    let payload = encode(&pdpb::GetMembersRequest::default());
    let framed = sim
        .handle_pd_unary(
            pdpb::pd::GET_MEMBERS.path(),
            payload,
            "http://127.0.0.1:1",
            0,
        )
        .unwrap();
    let response = pdpb::GetMembersResponse::decode(framed.payload()).unwrap();
    assert_eq!(response.members.len(), 1);
    assert_eq!(response.members[0].name, "pd-sim");
    assert_eq!(
        response.leader.unwrap().client_urls,
        vec!["http://127.0.0.1:1"]
    );
    assert_eq!(
        Cluster::new(ClusterConfig {
            pd_members: 0,
            ..ClusterConfig::default()
        }),
        Err(ClusterError::InvalidConfig("pd_members must be at least 1"))
    );
}
