//! API v2 keyspace region bounds, in the key space PD stores region boundaries in.
//!
//! The encodings themselves (memcomparable bytes, keyspace prefixes) live in
//! [`tikv_proto::codec`]; this only combines them the way PD's keyspace manager splits.

use bytes::Bytes;
use tikv_proto::codec::{self, KeyMode, Keyspace};

/// The four encoded region boundaries of keyspace `id`: raw start, raw end, txn start,
/// txn end (each mode's prefix and the next prefix, memcomparable-encoded as PD splits them).
///
/// Errors when `id` needs more than 24 bits.
pub(crate) fn keyspace_bounds(id: u32) -> Result<[Bytes; 4], codec::CodecError> {
    let (raw_start, raw_end) = Keyspace::new(KeyMode::Raw, id)?.range();
    let (txn_start, txn_end) = Keyspace::new(KeyMode::Txn, id)?.range();
    Ok([raw_start, raw_end, txn_start, txn_end].map(|key| Bytes::from(codec::encode_bytes(&key))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_bounds_match_pd() {
        let [raw_start, raw_end, txn_start, txn_end] = keyspace_bounds(1).unwrap();
        assert_eq!(&raw_start[..], &[b'r', 0, 0, 1, 0, 0, 0, 0, 0xFB]);
        assert_eq!(&raw_end[..], &[b'r', 0, 0, 2, 0, 0, 0, 0, 0xFB]);
        assert_eq!(&txn_start[..], &[b'x', 0, 0, 1, 0, 0, 0, 0, 0xFB]);
        assert_eq!(&txn_end[..], &[b'x', 0, 0, 2, 0, 0, 0, 0, 0xFB]);
        let [_, last_raw_end, _, _] = keyspace_bounds(codec::MAX_KEYSPACE_ID).unwrap();
        assert_eq!(&last_raw_end[..], &[b's', 0, 0, 0, 0, 0, 0, 0, 0xFB]);
        assert!(keyspace_bounds(codec::MAX_KEYSPACE_ID + 1).is_err());
    }
}
