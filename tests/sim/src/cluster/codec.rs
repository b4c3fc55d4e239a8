//! Key encodings the region model needs: memcomparable bytes and API v2 keyspace bounds.
//!
//! A private stand-in until `tikv_proto::codec` lands; the lead can switch the two call
//! sites (`encode_bytes`, `keyspace_bounds`) over to it.

use bytes::Bytes;

/// Bytes per memcomparable group; each group is followed by one marker byte.
const GROUP_SIZE: usize = 8;
/// Marker of a full group (no padding).
const MARKER: u8 = 0xFF;
/// Padding byte inside the last group.
const PAD: u8 = 0;

/// Encodes `key` in TiKV's memcomparable format: 8-byte groups, each followed by a marker
/// `0xFF - padding`, so that the byte order of encoded keys equals the order of the originals
/// and no encoded key is a prefix of another.
pub(crate) fn encode_bytes(key: &[u8]) -> Vec<u8> {
    let groups = key.len() / GROUP_SIZE + 1;
    let mut out = Vec::with_capacity(groups * (GROUP_SIZE + 1));
    for chunk_start in (0..groups).map(|g| g * GROUP_SIZE) {
        let chunk_end = (chunk_start + GROUP_SIZE).min(key.len());
        let chunk = &key[chunk_start..chunk_end];
        out.extend_from_slice(chunk);
        let pad = GROUP_SIZE - chunk.len();
        out.extend(std::iter::repeat_n(PAD, pad));
        // `pad` is at most 8, so the cast cannot truncate.
        out.push(MARKER - pad as u8);
    }
    out
}

/// The API v2 mode byte of RawKV keys.
pub(crate) const RAW_MODE: u8 = b'r';
/// The API v2 mode byte of TxnKV keys.
pub(crate) const TXN_MODE: u8 = b'x';
/// Largest keyspace id (24 bits).
pub(crate) const MAX_KEYSPACE_ID: u32 = 0x00FF_FFFF;

/// The 4-byte API v2 prefix `mode + id (3 bytes big-endian)`; an id past 24 bits
/// rolls over into the next mode byte, which is the exclusive end of that mode's keyspaces.
fn keyspace_prefix(mode: u8, id: u32) -> [u8; 4] {
    if id > MAX_KEYSPACE_ID {
        return [mode.wrapping_add(1), 0, 0, 0];
    }
    let [_, a, b, c] = id.to_be_bytes();
    [mode, a, b, c]
}

/// The four encoded region boundaries of keyspace `id`: raw start, raw end, txn start,
/// txn end (each prefix and prefix + 1, memcomparable-encoded as PD splits them).
pub(crate) fn keyspace_bounds(id: u32) -> [Bytes; 4] {
    let next = id.saturating_add(1);
    [
        keyspace_prefix(RAW_MODE, id),
        keyspace_prefix(RAW_MODE, next),
        keyspace_prefix(TXN_MODE, id),
        keyspace_prefix(TXN_MODE, next),
    ]
    .map(|prefix| Bytes::from(encode_bytes(&prefix)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    #[test]
    fn encodes_known_vectors() {
        assert_eq!(encode_bytes(b""), vec![0, 0, 0, 0, 0, 0, 0, 0, 0xF7]);
        assert_eq!(
            encode_bytes(b"abc"),
            vec![b'a', b'b', b'c', 0, 0, 0, 0, 0, 0xFA]
        );
        let eight = encode_bytes(b"12345678");
        assert_eq!(eight.len(), 18);
        assert_eq!(eight[8], 0xFF);
        assert_eq!(&eight[9..], &[0, 0, 0, 0, 0, 0, 0, 0, 0xF7]);
    }

    #[test]
    fn keyspace_bounds_match_pd() {
        let [raw_start, raw_end, txn_start, txn_end] = keyspace_bounds(1);
        assert_eq!(&raw_start[..], &[b'r', 0, 0, 1, 0, 0, 0, 0, 0xFB]);
        assert_eq!(&raw_end[..], &[b'r', 0, 0, 2, 0, 0, 0, 0, 0xFB]);
        assert_eq!(&txn_start[..], &[b'x', 0, 0, 1, 0, 0, 0, 0, 0xFB]);
        assert_eq!(&txn_end[..], &[b'x', 0, 0, 2, 0, 0, 0, 0, 0xFB]);
        let [_, last_raw_end, _, _] = keyspace_bounds(MAX_KEYSPACE_ID);
        assert_eq!(&last_raw_end[..], &[b's', 0, 0, 0, 0, 0, 0, 0, 0xFB]);
    }

    quickcheck! {
        fn encoding_preserves_order(a: Vec<u8>, b: Vec<u8>) -> bool {
            a.cmp(&b) == encode_bytes(&a).cmp(&encode_bytes(&b))
        }
    }
}
