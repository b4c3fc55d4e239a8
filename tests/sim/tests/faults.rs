//! Fault injection beyond region errors: delays, slow stores, lost replies, key errors, and
//! the permissive resource manager.

use bytes::Bytes;
use prost::Message;
use tikv_proto::kvrpcpb;
use tikv_proto::resource_manager as rm;
use tikv_proto::tikvpb::batch_commands_request::request::Cmd as Req;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as Resp;
use tikv_sim::faults::{FaultAction, FaultRule};
use tikv_sim::tikv::{Execution, TikvRequest, TikvResponse};
use tikv_sim::{Sim, SimConfig};

const NOW_MS: u64 = 1_700_000_000_000;

fn sim() -> Sim {
    Sim::new(SimConfig::default()).unwrap_or_else(|err| panic!("{err}"))
}

/// A context addressed to the leader of the region holding `key` (API V1 raw keys).
fn context(sim: &Sim, key: &[u8]) -> (u64, kvrpcpb::Context) {
    sim.leader_context(key)
        .unwrap_or_else(|| panic!("no leader"))
}

fn put(sim: &Sim, key: &str, value: &str) -> (u64, TikvRequest) {
    let (store, ctx) = context(sim, key.as_bytes());
    let request = TikvRequest::Batch(Req::RawPut(kvrpcpb::RawPutRequest {
        context: Some(ctx),
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ..Default::default()
    }));
    (store, request)
}

fn get(sim: &mut Sim, key: &str) -> Option<Bytes> {
    let (store, ctx) = context(sim, key.as_bytes());
    let request = TikvRequest::Batch(Req::RawGet(kvrpcpb::RawGetRequest {
        context: Some(ctx),
        key: Bytes::copy_from_slice(key.as_bytes()),
        ..Default::default()
    }));
    match sim.execute(store, request, NOW_MS) {
        Execution::Done(TikvResponse::Batch(Resp::RawGet(r))) => (!r.not_found).then_some(r.value),
        other => panic!("{other:?}"),
    }
}

#[test]
fn injected_delay_holds_the_request_then_runs_it() {
    let mut sim = sim();
    sim.faults
        .inject(FaultRule::command("RawPut", FaultAction::Delay(250), 1));
    let (store, request) = put(&sim, "k", "v");
    let Execution::Delayed { delay_ms, request } = sim.execute(store, request, NOW_MS) else {
        panic!("expected a delay");
    };
    assert_eq!(delay_ms, 250);
    assert_eq!(
        get(&mut sim, "k"),
        None,
        "nothing happens before the delay ends"
    );
    assert!(matches!(
        sim.execute_after_delay(store, request, NOW_MS + 250),
        Execution::Done(_)
    ));
    assert_eq!(get(&mut sim, "k"), Some(Bytes::from_static(b"v")));
}

#[test]
fn a_slow_store_delays_every_request() {
    let mut sim = sim();
    let (store, request) = put(&sim, "k", "v");
    sim.set_store_latency(store, 40);
    assert_eq!(sim.store_latency_ms(store), 40);
    assert!(matches!(
        sim.execute(store, request.clone(), NOW_MS),
        Execution::Delayed { delay_ms: 40, .. }
    ));
    sim.set_store_latency(store, 0);
    assert!(matches!(
        sim.execute(store, request, NOW_MS),
        Execution::Done(_)
    ));
}

#[test]
fn a_lost_reply_still_applies_the_write() {
    let mut sim = sim();
    sim.faults
        .inject(FaultRule::command("RawPut", FaultAction::DropReply, 1));
    let (store, request) = put(&sim, "k", "v");
    assert_eq!(sim.execute(store, request, NOW_MS), Execution::Dropped);
    assert_eq!(get(&mut sim, "k"), Some(Bytes::from_static(b"v")));
}

#[test]
fn injected_key_error_is_answered_in_the_response() {
    let mut sim = sim();
    let key_error = kvrpcpb::KeyError {
        abort: "injected".to_owned(),
        ..Default::default()
    };
    sim.faults.inject(FaultRule::command(
        "KvGet",
        FaultAction::KeyError(Box::new(key_error.clone())),
        1,
    ));
    let (store, ctx) = context(&sim, b"k");
    let request = TikvRequest::Batch(Req::Get(kvrpcpb::GetRequest {
        context: Some(ctx),
        key: Bytes::from_static(b"k"),
        version: 10,
        ..Default::default()
    }));
    match sim.execute(store, request, NOW_MS) {
        Execution::Done(TikvResponse::Batch(Resp::Get(r))) => {
            assert_eq!(r.error, Some(Box::new(key_error)))
        }
        other => panic!("{other:?}"),
    }
    // Commands without a key error field cannot carry one: the call fails instead.
    sim.faults.inject(FaultRule::command(
        "RawPut",
        FaultAction::KeyError(Box::default()),
        1,
    ));
    let (store, request) = put(&sim, "k", "v");
    assert!(matches!(
        sim.execute(store, request, NOW_MS),
        Execution::Failed(_)
    ));
}

#[test]
fn resource_manager_grants_what_is_asked() {
    let sim = sim();
    let request = rm::TokenBucketsRequest {
        requests: vec![rm::TokenBucketRequest {
            resource_group_name: "default".to_owned(),
            request: Some(rm::token_bucket_request::Request::RuItems(
                rm::token_bucket_request::RequestRu {
                    request_r_u: vec![rm::RequestUnitItem {
                        r#type: rm::RequestUnitType::Ru as i32,
                        value: 5_000.0,
                    }],
                },
            )),
            ..Default::default()
        }],
        ..Default::default()
    };
    let framed = sim
        .handle_token_buckets(Bytes::from(request.encode_to_vec()))
        .unwrap_or_else(|status| panic!("{status}"));
    let response =
        rm::TokenBucketsResponse::decode(framed.payload()).unwrap_or_else(|err| panic!("{err}"));
    let granted = response.responses[0].granted_r_u_tokens[0]
        .granted_tokens
        .as_ref()
        .map_or(0.0, |bucket| bucket.tokens);
    assert!((granted - 5_000.0).abs() < f64::EPSILON);

    let path = rm::resource_manager::GET_RESOURCE_GROUP.path();
    let lookup = |name: &str| {
        let request = rm::GetResourceGroupRequest {
            resource_group_name: name.to_owned(),
            ..Default::default()
        };
        let framed = sim
            .handle_resource_manager(path, Bytes::from(request.encode_to_vec()))
            .unwrap_or_else(|status| panic!("{status}"));
        rm::GetResourceGroupResponse::decode(framed.payload()).unwrap_or_else(|err| panic!("{err}"))
    };
    assert_eq!(
        lookup("default").group.map(|g| g.name),
        Some("default".to_owned())
    );
    assert!(lookup("nope").error.is_some());
}

/// Follows TiKV's `Peer::check_normal_proposal_with_disk_full_opt` (the leader's own disk):
/// an almost full disk refuses writes unless they allow it, a full disk refuses every write,
/// and reads go on.
#[test]
fn a_full_disk_refuses_writes_its_usage_does_not_allow() {
    use tikv_sim::sim::DiskUsage;
    let mut sim = sim();
    let (store, request) = put(&sim, "k", "v");
    sim.set_disk_usage(store, DiskUsage::AlmostFull);
    assert_eq!(sim.disk_usage(store), DiskUsage::AlmostFull);
    let refused = |execution: Execution| match execution {
        Execution::Done(TikvResponse::Batch(Resp::RawPut(r))) => r
            .region_error
            .and_then(|e| e.disk_full)
            .map(|full| full.store_id),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        refused(sim.execute(store, request.clone(), NOW_MS)),
        Some(vec![store])
    );
    assert_eq!(
        get(&mut sim, "k"),
        None,
        "reads go on, the write did not apply"
    );

    let mut allowed = request.clone();
    if let TikvRequest::Batch(Req::RawPut(r)) = &mut allowed {
        if let Some(ctx) = r.context.as_mut() {
            ctx.disk_full_opt = kvrpcpb::DiskFullOpt::AllowedOnAlmostFull as i32;
        }
    }
    assert_eq!(refused(sim.execute(store, allowed.clone(), NOW_MS)), None);
    assert_eq!(get(&mut sim, "k"), Some(Bytes::from_static(b"v")));

    sim.set_disk_usage(store, DiskUsage::AlreadyFull);
    assert_eq!(
        refused(sim.execute(store, allowed.clone(), NOW_MS)),
        Some(vec![store])
    );
    sim.set_disk_usage(store, DiskUsage::Normal);
    assert_eq!(refused(sim.execute(store, request, NOW_MS)), None);
}
