//! Feeds the simulated cluster arbitrary requests: a gRPC method picked by index with
//! arbitrary payload bytes, sent to a store (`Sim::execute`) or to PD (`handle_pd_unary`,
//! the Tso and QueryRegion stream handlers), plus arbitrary HTTP request heads to PD's and
//! the stores' HTTP APIs. Nothing may panic, whatever the bytes.
//!
//! Input layout: one config byte (API version, replica count), then operations of three
//! header bytes `[selector, flags, length]` followed by `length` payload bytes. Flag bits:
//! 0-1 pick the target (store, PD, HTTP), 2 appends a valid context (or PD header) so the
//! payload gets past request validation into the storage code, 3 advances the clock, 4-7
//! pick the region whose leader serves the request.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tikv_proto::kvrpcpb::{self, ApiVersion};
use tikv_proto::{keyspacepb, pdpb, tikvpb};
use tikv_sim::cluster::ClusterConfig;
use tikv_sim::http::parse_head;
use tikv_sim::tikv::{Execution, TikvRequest};
use tikv_sim::{Sim, SimConfig};

/// Bounds the work one input can ask for.
const MAX_OPERATIONS: usize = 64;

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let Some((&config, mut rest)) = data.split_first() else {
        return;
    };
    let api_version = [ApiVersion::V1, ApiVersion::V1ttl, ApiVersion::V2][usize::from(config % 3)];
    let Ok(mut sim) = Sim::new(SimConfig {
        cluster: ClusterConfig {
            store_count: 3,
            replica_count: 1 + u32::from(config / 3 % 3),
            ..ClusterConfig::default()
        },
        api_version,
        ..SimConfig::default()
    }) else {
        return;
    };
    let pd_methods: Vec<&str> = pdpb::pd::METHODS
        .iter()
        .chain(keyspacepb::keyspace::METHODS)
        .map(|m| m.path)
        .collect();
    let mut now_ms: u64 = 1_700_000_000_000;
    for _ in 0..MAX_OPERATIONS {
        let [selector, flags, length, tail @ ..] = rest else {
            return;
        };
        let length = usize::from(*length).min(tail.len());
        let (payload, next) = tail.split_at(length);
        rest = next;
        if flags & 0b1000 != 0 {
            now_ms += u64::from(*selector) * 100;
            sim.handle_timeout(now_ms);
        }
        let region_index = usize::from(flags >> 4);
        match flags & 0b11 {
            0 | 1 => {
                let methods = tikvpb::tikv::METHODS;
                let path = methods[usize::from(*selector) % methods.len()].path;
                let (store_id, bytes) = match leader_context(&sim, region_index) {
                    Some((store_id, context)) if flags & 0b100 != 0 => {
                        // Protobuf merges a repeated message field, so appending a valid
                        // `context` (field 1 of every kvrpcpb request) overrides the fuzzed one.
                        let mut bytes = payload.to_vec();
                        prost::encoding::message::encode(1, &context, &mut bytes);
                        (store_id, bytes)
                    }
                    _ => (1 + u64::from(*selector % 4), payload.to_vec()),
                };
                if let Ok(request) = TikvRequest::decode(path, Bytes::from(bytes)) {
                    if let Execution::Done(response) = sim.execute(store_id, request, now_ms) {
                        let _ = response.encode();
                    }
                }
                while let Some((_, response)) = sim.poll_ready() {
                    let _ = response.encode();
                }
            }
            2 => {
                let path = pd_methods[usize::from(*selector) % pd_methods.len()];
                let mut bytes = payload.to_vec();
                if flags & 0b100 != 0 {
                    let header = pdpb::RequestHeader {
                        cluster_id: sim.cluster.cluster_id(),
                        ..Default::default()
                    };
                    prost::encoding::message::encode(1, &header, &mut bytes);
                }
                let bytes = Bytes::from(bytes);
                let _ = if path == pdpb::pd::TSO.path() {
                    sim.handle_tso(bytes, now_ms)
                } else if path == pdpb::pd::QUERY_REGION.path() {
                    sim.handle_query_region(bytes)
                } else {
                    sim.handle_pd_unary(path, bytes, "http://127.0.0.1:2379", now_ms)
                };
            }
            _ => {
                if let Ok(Some((head, _))) = parse_head(payload) {
                    let _ = match selector % 5 {
                        0 => sim.handle_pd_http(&head.request, "http://127.0.0.1:2379"),
                        store_id => sim.handle_status_http(u64::from(store_id), &head.request),
                    };
                }
            }
        }
    }
}

/// A valid context for the leader of the `index`-th region (modulo the count): its store id
/// and the context naming region, epoch, leader peer and the cluster's API version.
fn leader_context(sim: &Sim, index: usize) -> Option<(u64, kvrpcpb::Context)> {
    let count = sim.cluster.region_count();
    let region = sim.cluster.regions().nth(index % count.max(1))?;
    let leader = region.leader()?;
    let context = kvrpcpb::Context {
        region_id: region.id,
        region_epoch: Some(region.epoch.to_proto()),
        peer: Some(leader.to_proto()),
        api_version: sim.api_version() as i32,
        ..Default::default()
    };
    Some((leader.store_id, context))
}
