//! Round trips of wire messages built from arbitrary field values, and wire-format facts that
//! must never drift (field numbers and oneof arm numbers checked against their bytes).

use bytes::Bytes;
use prost::Message;
use quickcheck::quickcheck;
use tikv_proto::{errorpb, kvrpcpb, pdpb, tikvpb};

fn b(bytes: Vec<u8>) -> Bytes {
    Bytes::from(bytes)
}

quickcheck! {
    fn prewrite_round_trips(keys: Vec<(Vec<u8>, Vec<u8>, u8)>, primary: Vec<u8>, start_ts: u64, ttl: u64, one_pc: bool, secondaries: Vec<Vec<u8>>) -> bool {
        let request = kvrpcpb::PrewriteRequest {
            context: Some(kvrpcpb::Context { region_id: start_ts ^ ttl, ..Default::default() }),
            mutations: keys
                .into_iter()
                .map(|(key, value, op)| kvrpcpb::Mutation {
                    op: i32::from(op % 4),
                    key: b(key),
                    value: b(value),
                    ..Default::default()
                })
                .collect(),
            primary_lock: b(primary),
            start_version: start_ts,
            lock_ttl: ttl,
            try_one_pc: one_pc,
            secondaries: secondaries.into_iter().map(b).collect(),
            use_async_commit: !one_pc,
            ..Default::default()
        };
        kvrpcpb::PrewriteRequest::decode(request.encode_to_vec().as_slice()).as_ref() == Ok(&request)
    }

    fn batch_commands_round_trip(ids: Vec<u64>, keys: Vec<Vec<u8>>) -> bool {
        use tikvpb::batch_commands_request::{Request, request::Cmd};
        let request = tikvpb::BatchCommandsRequest {
            requests: keys
                .iter()
                .map(|key| Request {
                    cmd: Some(Cmd::RawGet(kvrpcpb::RawGetRequest { key: b(key.clone()), ..Default::default() })),
                })
                .collect(),
            request_ids: ids,
            ..Default::default()
        };
        tikvpb::BatchCommandsRequest::decode(request.encode_to_vec().as_slice()).as_ref() == Ok(&request)
    }

    fn region_error_round_trips(region_id: u64, message: String, leader_store: u64) -> bool {
        let error = errorpb::Error {
            message,
            not_leader: Some(errorpb::NotLeader {
                region_id,
                leader: Some(tikv_proto::metapb::Peer { id: 1, store_id: leader_store, ..Default::default() }),
            }),
            ..Default::default()
        };
        errorpb::Error::decode(error.encode_to_vec().as_slice()).as_ref() == Ok(&error)
    }

    fn tso_round_trips(cluster_id: u64, count: u32, physical: i64, logical: i64) -> bool {
        let response = pdpb::TsoResponse {
            header: Some(pdpb::ResponseHeader { cluster_id, ..Default::default() }),
            count,
            timestamp: Some(pdpb::Timestamp { physical, logical, ..Default::default() }),
        };
        pdpb::TsoResponse::decode(response.encode_to_vec().as_slice()).as_ref() == Ok(&response)
    }
}

/// The numbers that make us wire-compatible, checked against encoded bytes: a drift in the
/// schema would change these bytes.
#[test]
fn wire_numbers_are_pinned() {
    use tikvpb::batch_commands_request::{Request, request::Cmd};
    // BatchCommands arms: RawGet is arm 13, Empty is arm 255 (two-byte tag 0xfa 0x0f).
    let raw_get = Request {
        cmd: Some(Cmd::RawGet(kvrpcpb::RawGetRequest::default())),
    };
    assert_eq!(raw_get.encode_to_vec(), vec![0x6a, 0x00]);
    let empty = Request {
        cmd: Some(Cmd::Empty(tikvpb::BatchCommandsEmptyRequest::default())),
    };
    assert_eq!(empty.encode_to_vec(), vec![0xfa, 0x0f, 0x00]);
    // Context.keyspace_id is field 32 inside a oneof, so even 0 is sent.
    let context = kvrpcpb::Context {
        keyspace: Some(kvrpcpb::context::Keyspace::KeyspaceId(0)),
        ..Default::default()
    };
    assert_eq!(context.encode_to_vec(), vec![0x80, 0x02, 0x00]);
    // errorpb.Error.epoch_not_match is field 5.
    let epoch = errorpb::Error {
        epoch_not_match: Some(errorpb::EpochNotMatch::default()),
        ..Default::default()
    };
    assert_eq!(epoch.encode_to_vec(), vec![0x2a, 0x00]);
}
