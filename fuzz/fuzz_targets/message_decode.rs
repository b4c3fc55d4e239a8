//! Decodes arbitrary bytes as the messages a client receives: decoding must never panic, and
//! whatever decodes must re-encode to bytes that decode and re-encode to the same bytes
//! (compared as bytes, so NaN doubles do not count as a difference).

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tikv_proto::{errorpb, kvrpcpb, pdpb, tikvpb};

fn round_trip<M: Message + Default>(data: &[u8]) {
    if let Ok(message) = M::decode(data) {
        let encoded = message.encode_to_vec();
        let again = M::decode(encoded.as_slice()).map(|m| m.encode_to_vec());
        assert_eq!(again.ok(), Some(encoded));
    }
}

fuzz_target!(|input: (u8, &[u8])| {
    let (which, data) = input;
    match which % 8 {
        0 => round_trip::<tikvpb::BatchCommandsResponse>(data),
        1 => round_trip::<tikvpb::BatchCommandsRequest>(data),
        2 => round_trip::<kvrpcpb::PrewriteResponse>(data),
        3 => round_trip::<kvrpcpb::ScanResponse>(data),
        4 => round_trip::<errorpb::Error>(data),
        5 => round_trip::<pdpb::TsoResponse>(data),
        6 => round_trip::<pdpb::QueryRegionResponse>(data),
        _ => round_trip::<pdpb::GetMembersResponse>(data),
    }
});
