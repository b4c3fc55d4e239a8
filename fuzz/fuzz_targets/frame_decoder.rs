//! Feeds arbitrary bytes, split at arbitrary points, to the gRPC frame decoder: it must never
//! panic, never return more payload bytes than it was given, and agree with a one-shot decode.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tikv_proto::frame::{FrameDecoder, PREFIX_LEN};

fuzz_target!(|input: (u16, u8, &[u8])| {
    let (limit, chunk, data) = input;
    let limit = usize::from(limit);
    let chunk = usize::from(chunk).max(1);

    let mut whole = FrameDecoder::new(limit);
    whole.push(data);
    let mut expected = Vec::new();
    while let Ok(Some(message)) = whole.next_message() {
        expected.push(message);
    }

    let mut pieces = FrameDecoder::new(limit);
    let mut got = Vec::new();
    let mut failed = false;
    for piece in data.chunks(chunk) {
        pieces.push_bytes(Bytes::copy_from_slice(piece));
        loop {
            match pieces.next_message() {
                Ok(Some(message)) => {
                    assert!(message.len() <= limit);
                    got.push(message);
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            break;
        }
    }
    assert_eq!(got, expected);
    let payload: usize = got.iter().map(|m| m.len() + PREFIX_LEN).sum();
    assert!(payload <= data.len());
    let _ = pieces.finish();
});
