//! Bad input never panics the simulated cluster and gets the answer a real TiKV or PD gives:
//! a gRPC status for what never reaches the command (undecodable bytes, unknown methods,
//! another cluster's id), a region error or key error inside the response otherwise.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::{grpc_channel, pd_header};
use tikv_proto::frame::Framed;
use tikv_proto::kvrpcpb::{self, ApiVersion};
use tikv_proto::rpc::{CallOptions, Channel, call};
use tikv_proto::status::Code;
use tikv_proto::{keyspacepb, pdpb, tikvpb};
use tikv_sim::tikv::{Execution, TikvRequest};
use tikv_sim::{Sim, SimConfig, SimServer};

const TIMEOUT: Duration = Duration::from_secs(5);

/// SplitMix64, for reproducible junk.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, max_len: u64) -> Vec<u8> {
        let len = self.next() % (max_len + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// Junk that is mostly well-formed protobuf: random fields with random numbers, varint
    /// or length-delimited, so that many requests decode and reach the command code.
    fn proto_junk(&mut self) -> Vec<u8> {
        if self.next() % 4 == 0 {
            return self.bytes(48);
        }
        let mut out = Vec::new();
        for _ in 0..self.next() % 6 {
            let field = 1 + (self.next() % 12) as u32;
            if self.next() % 2 == 0 {
                prost::encoding::uint64::encode(field, &(self.next() % 300), &mut out);
            } else {
                let value = self.bytes(12);
                prost::encoding::bytes::encode(field, &value, &mut out);
            }
        }
        out
    }
}

/// A context for the leader of the region holding `boundary` (a key in PD's key space).
fn leader_context(sim: &Sim, boundary: &[u8]) -> (u64, kvrpcpb::Context) {
    let region = sim.cluster.region_by_key(boundary).unwrap();
    let leader = region.leader().unwrap();
    let context = kvrpcpb::Context {
        region_id: region.id,
        region_epoch: Some(region.epoch.to_proto()),
        peer: Some(leader.to_proto()),
        api_version: sim.api_version() as i32,
        ..Default::default()
    };
    (leader.store_id, context)
}

async fn unary_status(channel: &impl Channel, path: &'static str, payload: &[u8]) -> Code {
    let framed = Framed::from_payload(payload, usize::MAX).unwrap();
    match channel
        .unary(path, framed, CallOptions::with_timeout(TIMEOUT))
        .await
    {
        Ok(_) => Code::Ok,
        Err(err) => err.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_requests_and_unknown_methods_get_grpc_statuses() {
    let server = SimServer::start(SimConfig::default()).await.unwrap();
    let (_, store) = server.store_addresses()[0].clone();
    let tikv = grpc_channel(&store).await;
    let pd = grpc_channel(server.pd_address()).await;
    // A field tag with wire type 7 does not exist: not protobuf.
    let garbage = [0x0F, 0xFF, 0xFF];
    assert_eq!(
        unary_status(&tikv, tikvpb::tikv::RAW_GET.path(), &garbage).await,
        Code::Internal
    );
    assert_eq!(
        unary_status(&tikv, tikvpb::tikv::KV_PREWRITE.path(), &garbage).await,
        Code::Internal
    );
    assert_eq!(
        unary_status(&pd, pdpb::pd::GET_REGION.path(), &garbage).await,
        Code::Internal
    );
    assert_eq!(
        unary_status(&tikv, "/tikvpb.Tikv/NoSuchMethod", b"").await,
        Code::Unimplemented
    );
    assert_eq!(
        unary_status(&pd, "/pdpb.PD/NoSuchMethod", b"").await,
        Code::Unimplemented
    );
    // A store is not PD, and PD is not a store.
    assert_eq!(
        unary_status(&tikv, pdpb::pd::GET_MEMBERS.path(), b"").await,
        Code::Unimplemented
    );
    assert_eq!(
        unary_status(&pd, tikvpb::tikv::RAW_GET.path(), b"").await,
        Code::Unimplemented
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_context_and_wrong_cluster_are_refused() {
    let server = SimServer::start(SimConfig::default()).await.unwrap();
    let (_, store) = server.store_addresses()[0].clone();
    let tikv = grpc_channel(&store).await;

    // No context: the store check comes first (TiKV's local reader order), and a missing
    // peer names store 0.
    let response = call(
        &tikv,
        tikvpb::tikv::RAW_GET,
        &kvrpcpb::RawGetRequest {
            key: Bytes::from_static(b"k"),
            ..Default::default()
        },
        CallOptions::with_timeout(TIMEOUT),
        usize::MAX,
    )
    .await
    .unwrap();
    let region_error = response.region_error.expect("a region error");
    let mismatch = region_error.store_not_match.expect("StoreNotMatch");
    assert_eq!(mismatch.request_store_id, 0);

    // A context without an epoch.
    let (_, mut context) = server.with(|sim| leader_context(sim, b""));
    context.region_epoch = None;
    let response = call(
        &tikv,
        tikvpb::tikv::KV_GET,
        &kvrpcpb::GetRequest {
            context: Some(context.clone()),
            key: Bytes::from_static(b"k"),
            version: 10,
            ..Default::default()
        },
        CallOptions::with_timeout(TIMEOUT),
        usize::MAX,
    )
    .await
    .unwrap();
    assert!(response.region_error.is_some(), "{response:?}");

    // Another cluster's id fails the call.
    let (_, mut context) = server.with(|sim| leader_context(sim, b""));
    context.cluster_id = 12345;
    let err = call(
        &tikv,
        tikvpb::tikv::RAW_GET,
        &kvrpcpb::RawGetRequest {
            context: Some(context),
            key: Bytes::from_static(b"k"),
            ..Default::default()
        },
        CallOptions::with_timeout(TIMEOUT),
        usize::MAX,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");

    let pd = grpc_channel(server.pd_address()).await;
    let err = call(
        &pd,
        pdpb::pd::GET_REGION,
        &pdpb::GetRegionRequest {
            header: Some(pdpb::RequestHeader {
                cluster_id: 12345,
                ..Default::default()
            }),
            ..Default::default()
        },
        CallOptions::with_timeout(TIMEOUT),
        usize::MAX,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    // The right id works on the same channel.
    let region = call(
        &pd,
        pdpb::pd::GET_REGION,
        &pdpb::GetRegionRequest {
            header: pd_header(&server),
            ..Default::default()
        },
        CallOptions::with_timeout(TIMEOUT),
        usize::MAX,
    )
    .await
    .unwrap();
    assert!(region.region.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_v2_keys_outside_the_keyspace_prefix_are_key_errors() {
    let server = SimServer::start(SimConfig {
        api_version: ApiVersion::V2,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let encoded = tikv_proto::codec::encode_bytes(b"abc");
    let (store_id, _) = server.with(|sim| leader_context(sim, &encoded));
    let address = server
        .store_addresses()
        .into_iter()
        .find(|(id, _)| *id == store_id)
        .unwrap()
        .1;
    let tikv = grpc_channel(&address).await;
    let raw_get = |key: &'static [u8], context: kvrpcpb::Context| kvrpcpb::RawGetRequest {
        context: Some(context),
        key: Bytes::from_static(key),
        ..Default::default()
    };
    for key in [&b"abc"[..], b"x\0\0\0abc"] {
        // Each key goes to the region that holds it: in API V2 the keyspace bounds are region
        // boundaries, so the two keys live in different regions (led by the same store).
        let encoded = tikv_proto::codec::encode_bytes(key);
        let (key_store, key_context) = server.with(|sim| leader_context(sim, &encoded));
        assert_eq!(key_store, store_id);
        let response = call(
            &tikv,
            tikvpb::tikv::RAW_GET,
            &raw_get(key, key_context),
            CallOptions::with_timeout(TIMEOUT),
            usize::MAX,
        )
        .await
        .unwrap();
        assert!(
            response
                .error
                .starts_with("Key mode mismatched with the request mode"),
            "{response:?}"
        );
    }
    // The rest goes to the DEFAULT keyspace's raw region.
    let encoded = tikv_proto::codec::encode_bytes(b"r\0\0\0abc");
    let (_, context) = server.with(|sim| leader_context(sim, &encoded));
    // An API V1 request to an API V2 store.
    let mut v1 = context.clone();
    v1.api_version = ApiVersion::V1 as i32;
    let response = call(
        &tikv,
        tikvpb::tikv::RAW_GET,
        &raw_get(b"r\0\0\0abc", v1),
        CallOptions::with_timeout(TIMEOUT),
        usize::MAX,
    )
    .await
    .unwrap();
    assert!(
        response
            .error
            .starts_with("Api version in request does not match with TiKV storage"),
        "{response:?}"
    );
    // A well-formed key works.
    let response = call(
        &tikv,
        tikvpb::tikv::RAW_GET,
        &raw_get(b"r\0\0\0abc", context),
        CallOptions::with_timeout(TIMEOUT),
        usize::MAX,
    )
    .await
    .unwrap();
    assert_eq!(response.error, "");
    assert!(response.not_found);
}

/// Every TiKV and PD method, fed junk bytes (with and without a valid context appended, so
/// some of it reaches the storage code), directly on the machine: nothing panics.
#[test]
fn junk_payloads_never_panic_the_machine() {
    for api_version in [ApiVersion::V1, ApiVersion::V1ttl, ApiVersion::V2] {
        let mut sim = Sim::new(SimConfig {
            api_version,
            ..SimConfig::default()
        })
        .unwrap();
        let mut rng = Rng(api_version as u64 + 1);
        let mut now_ms = 1_700_000_000_000;
        let mut executed = 0;
        for round in 0..20 {
            for method in tikvpb::tikv::METHODS {
                let mut payload = rng.proto_junk();
                let (store_id, context) = leader_context(&sim, b"");
                let store_id = if round % 2 == 0 {
                    // A repeated message field merges, so the appended context wins.
                    prost::encoding::message::encode(1, &context, &mut payload);
                    store_id
                } else {
                    1 + rng.next() % 4
                };
                if let Ok(request) = TikvRequest::decode(method.path, Bytes::from(payload)) {
                    executed += 1;
                    if let Execution::Done(response) = sim.execute(store_id, request, now_ms) {
                        let _ = response.encode();
                    }
                }
                now_ms += rng.next() % 100;
                sim.handle_timeout(now_ms);
                while sim.poll_ready().is_some() {}
            }
            let pd_methods = pdpb::pd::METHODS
                .iter()
                .chain(keyspacepb::keyspace::METHODS);
            for method in pd_methods {
                let mut payload = rng.proto_junk();
                if round % 2 == 0 {
                    let header = pdpb::RequestHeader {
                        cluster_id: sim.cluster.cluster_id(),
                        ..Default::default()
                    };
                    prost::encoding::message::encode(1, &header, &mut payload);
                }
                let payload = Bytes::from(payload);
                let _ = if method.path == pdpb::pd::TSO.path() {
                    sim.handle_tso(payload, now_ms)
                } else if method.path == pdpb::pd::QUERY_REGION.path() {
                    sim.handle_query_region(payload)
                } else {
                    sim.handle_pd_unary(method.path, payload, "http://pd", now_ms)
                };
            }
        }
        assert!(
            executed > 100,
            "{api_version:?}: only {executed} requests decoded"
        );
    }
}

/// Junk over the real server: every unary TiKV method gets junk, and the store still
/// answers afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_over_grpc_leaves_the_server_serving() {
    let server = SimServer::start(SimConfig::default()).await.unwrap();
    let (_, store) = server.store_addresses()[0].clone();
    let tikv = grpc_channel(&store).await;
    let mut rng = Rng(99);
    for method in tikvpb::tikv::METHODS {
        if method.kind != tikv_proto::method::MethodKind::Unary {
            continue;
        }
        let payload = rng.bytes(32);
        let code = unary_status(&tikv, method.path, &payload).await;
        assert_ne!(code, Code::DeadlineExceeded, "{}", method.path);
    }
    let health = call(
        &tikv,
        tikv_proto::grpc::health::v1::health::CHECK,
        &Default::default(),
        CallOptions::with_timeout(TIMEOUT),
        usize::MAX,
    )
    .await
    .unwrap();
    assert_eq!(health.status, 1);
}
