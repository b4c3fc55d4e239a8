//! Key encodings on the wire: memcomparable bytes and API v2 keyspace prefixes.
//!
//! Two encodings decide which bytes TiKV and PD see for a user key:
//!
//! - **Memcomparable bytes** ([`encode_bytes`], [`decode_bytes`]): the key is cut into groups of
//!   [`ENC_GROUP_SIZE`] bytes, the last group padded with zeros, and every group is followed by a
//!   marker byte `0xFF - number of padding bytes`. Byte-wise order of encoded keys equals
//!   byte-wise order of the originals, and an encoded key can be followed by more data (a
//!   timestamp) without ambiguity. PD stores transactional region boundaries in this form (API v1
//!   TxnKV), and in API v2 every region boundary is the memcomparable form of a prefixed key.
//!   The descending variant ([`encode_bytes_desc`]) is the bitwise complement, so it sorts in
//!   reverse.
//! - **Keyspace prefixes** ([`Keyspace`]): in API v2 every key starts with a mode byte (`r` for
//!   raw, `x` for transactional) and a 3-byte big-endian keyspace id, so keyspaces own disjoint,
//!   contiguous slices of the key space.

use std::fmt;

/// Bytes in one memcomparable group.
pub const ENC_GROUP_SIZE: usize = 8;
/// The marker byte of a full (unpadded) group; a group with `n` padding bytes has `0xFF - n`.
pub const ENC_MARKER: u8 = 0xFF;
/// The largest keyspace id: ids are 24 bits on the wire.
pub const MAX_KEYSPACE_ID: u32 = 0x00FF_FFFF;
/// Length of the API v2 key prefix (mode byte plus 3-byte keyspace id).
pub const KEYSPACE_PREFIX_LEN: usize = 4;

/// Why a key could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The input ended inside a memcomparable group.
    #[error("memcomparable bytes truncated: group at offset {offset} needs 9 bytes")]
    Truncated {
        /// Offset of the incomplete group in the input.
        offset: usize,
    },
    /// A group's marker byte claims more padding than a group holds.
    #[error("invalid memcomparable marker {marker:#04x} at offset {offset}")]
    InvalidMarker {
        /// Offset of the group in the input.
        offset: usize,
        /// The marker byte found.
        marker: u8,
    },
    /// A padding byte of the last group is not the padding value.
    #[error("invalid memcomparable padding in group at offset {offset}")]
    InvalidPadding {
        /// Offset of the group in the input.
        offset: usize,
    },
    /// A keyspace id does not fit in 24 bits.
    #[error("keyspace id {0} exceeds the maximum {MAX_KEYSPACE_ID}")]
    KeyspaceIdOutOfRange(u32),
    /// A key is too short for an API v2 prefix or starts with an unknown mode byte.
    #[error("not an API v2 key: {0:02x?}")]
    InvalidV2Key(Vec<u8>),
    /// A key or range lies outside the keyspace it was decoded against.
    #[error("key {key:02x?} is outside keyspace {keyspace}")]
    OutsideKeyspace {
        /// The keyspace the key was expected in.
        keyspace: Keyspace,
        /// The offending key.
        key: Vec<u8>,
    },
}

/// Memcomparable-encodes `key` in ascending order; returns the encoding.
pub fn encode_bytes(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(key.len()));
    encode_bytes_into(&mut out, key);
    out
}

/// Appends the ascending memcomparable encoding of `key` to `out`.
pub fn encode_bytes_into(out: &mut Vec<u8>, key: &[u8]) {
    out.reserve(encoded_len(key.len()));
    // Even an exact multiple of the group size gets a trailing all-padding group, which is what
    // makes a key sort before its own extensions.
    let mut chunks = key.chunks_exact(ENC_GROUP_SIZE);
    for chunk in &mut chunks {
        out.extend_from_slice(chunk);
        out.push(ENC_MARKER);
    }
    let tail = chunks.remainder();
    let pad = ENC_GROUP_SIZE - tail.len();
    out.extend_from_slice(tail);
    out.extend(std::iter::repeat_n(0u8, pad));
    out.push(ENC_MARKER - pad as u8);
}

/// Memcomparable-encodes `key` in descending order (the complement of [`encode_bytes`]).
pub fn encode_bytes_desc(key: &[u8]) -> Vec<u8> {
    let mut out = encode_bytes(key);
    for byte in &mut out {
        *byte = !*byte;
    }
    out
}

/// The length of the memcomparable encoding of a key of `key_len` bytes.
pub const fn encoded_len(key_len: usize) -> usize {
    (key_len / ENC_GROUP_SIZE + 1) * (ENC_GROUP_SIZE + 1)
}

/// Decodes one ascending memcomparable key from the front of `encoded`; returns the key and the
/// bytes after it.
///
/// Errors with [`CodecError::Truncated`], [`CodecError::InvalidMarker`] or
/// [`CodecError::InvalidPadding`] on malformed input.
pub fn decode_bytes(encoded: &[u8]) -> Result<(Vec<u8>, &[u8]), CodecError> {
    decode(encoded, Order::Ascending)
}

/// Decodes one descending memcomparable key (see [`encode_bytes_desc`]) from the front of
/// `encoded`; returns the key and the bytes after it.
///
/// Errors like [`decode_bytes`].
pub fn decode_bytes_desc(encoded: &[u8]) -> Result<(Vec<u8>, &[u8]), CodecError> {
    decode(encoded, Order::Descending)
}

/// Decodes a region boundary as PD reports it in memcomparable form; returns the raw key.
///
/// The empty boundary (the start or end of the whole key space) stays empty, and bytes after
/// the encoded key are ignored, as client-go does: a boundary may carry a suffix (a timestamp)
/// that does not change which user keys the region holds. Errors like [`decode_bytes`].
pub fn decode_region_key(encoded: &[u8]) -> Result<Vec<u8>, CodecError> {
    if encoded.is_empty() {
        return Ok(Vec::new());
    }
    decode_bytes(encoded).map(|(key, _rest)| key)
}

/// The API v2 key mode: which half of TiKV's key space a keyspace's keys live in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum KeyMode {
    /// Raw KV keys, prefixed with `r`.
    Raw = b'r',
    /// Transactional keys, prefixed with `x`.
    Txn = b'x',
}

impl KeyMode {
    /// The mode whose prefix byte is `byte`, or `None` for any other byte.
    pub const fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            b'r' => Some(Self::Raw),
            b'x' => Some(Self::Txn),
            _ => None,
        }
    }

    /// The prefix byte of this mode.
    pub const fn as_byte(self) -> u8 {
        self as u8
    }
}

/// One API v2 keyspace in one key mode: the 4-byte prefix every key in it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Keyspace {
    mode: KeyMode,
    id: u32,
}

impl Keyspace {
    /// The keyspace `id` in `mode`; errors with [`CodecError::KeyspaceIdOutOfRange`] when `id`
    /// needs more than 24 bits.
    pub const fn new(mode: KeyMode, id: u32) -> Result<Self, CodecError> {
        if id > MAX_KEYSPACE_ID {
            return Err(CodecError::KeyspaceIdOutOfRange(id));
        }
        Ok(Self { mode, id })
    }

    /// The keyspace a prefixed key belongs to; errors with [`CodecError::InvalidV2Key`] when
    /// the key is shorter than a prefix or has an unknown mode byte.
    pub fn of_key(key: &[u8]) -> Result<Self, CodecError> {
        match key {
            [mode, a, b, c, ..] => match KeyMode::from_byte(*mode) {
                Some(mode) => Ok(Self {
                    mode,
                    id: u32::from_be_bytes([0, *a, *b, *c]),
                }),
                None => Err(CodecError::InvalidV2Key(key.to_vec())),
            },
            _ => Err(CodecError::InvalidV2Key(key.to_vec())),
        }
    }

    /// The key mode.
    pub const fn mode(self) -> KeyMode {
        self.mode
    }

    /// The keyspace id.
    pub const fn id(self) -> u32 {
        self.id
    }

    /// The 4-byte prefix of every key in this keyspace.
    pub const fn prefix(self) -> [u8; KEYSPACE_PREFIX_LEN] {
        let [_, a, b, c] = self.id.to_be_bytes();
        [self.mode.as_byte(), a, b, c]
    }

    /// The keyspace's whole key range `[prefix, end)`, where `end` is the prefix read as a
    /// big-endian integer plus one (the first key of the next keyspace).
    pub const fn range(self) -> ([u8; KEYSPACE_PREFIX_LEN], [u8; KEYSPACE_PREFIX_LEN]) {
        let prefix = self.prefix();
        // The mode byte is below 0xFF, so the increment never wraps: at the largest id the
        // carry moves into the mode byte (`r\xff\xff\xff` ends at `s\0\0\0`).
        let end = (u32::from_be_bytes(prefix) + 1).to_be_bytes();
        (prefix, end)
    }

    /// Prefixes a user key; returns the key as TiKV stores it.
    pub fn encode_key(self, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(KEYSPACE_PREFIX_LEN + key.len());
        out.extend_from_slice(&self.prefix());
        out.extend_from_slice(key);
        out
    }

    /// Prefixes a user range `[start, end)`; an empty `end` (unbounded) becomes the keyspace's
    /// end, so the range never leaves the keyspace. Returns the encoded `(start, end)`.
    ///
    /// For a reverse scan, where TiKV takes the upper bound as `start_key`, encode the bounds
    /// in forward order and swap the results.
    pub fn encode_range(self, start: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let encoded_end = if end.is_empty() {
            self.range().1.to_vec()
        } else {
            self.encode_key(end)
        };
        (self.encode_key(start), encoded_end)
    }

    /// Removes the prefix from a key TiKV returned; returns the user key.
    ///
    /// Errors with [`CodecError::OutsideKeyspace`] when the key does not carry this keyspace's
    /// prefix.
    pub fn strip_prefix(self, key: &[u8]) -> Result<&[u8], CodecError> {
        key.strip_prefix(&self.prefix()[..])
            .ok_or_else(|| self.outside(key))
    }

    /// Maps an encoded range (a region's boundaries, say) back to user keys, clipped to the
    /// keyspace: a start before the keyspace becomes empty (unbounded), and so does an end
    /// past it. Returns the user `(start, end)`.
    ///
    /// Errors with [`CodecError::OutsideKeyspace`] when the range does not overlap the
    /// keyspace at all. An empty `end` means unbounded.
    pub fn decode_range<'a>(
        self,
        start: &'a [u8],
        end: &'a [u8],
    ) -> Result<(&'a [u8], &'a [u8]), CodecError> {
        let (prefix, keyspace_end) = self.range();
        if start >= &keyspace_end[..] {
            return Err(self.outside(start));
        }
        if !end.is_empty() && end <= &prefix[..] {
            return Err(self.outside(end));
        }
        let user_start = start.strip_prefix(&prefix[..]).unwrap_or_default();
        let user_end = end.strip_prefix(&prefix[..]).unwrap_or_default();
        Ok((user_start, user_end))
    }

    fn outside(self, key: &[u8]) -> CodecError {
        CodecError::OutsideKeyspace {
            keyspace: self,
            key: key.to_vec(),
        }
    }
}

impl fmt::Display for Keyspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            KeyMode::Raw => "raw",
            KeyMode::Txn => "txn",
        };
        write!(f, "{mode}:{}", self.id)
    }
}

/// The 4-byte API v2 prefix of keyspace `id` in `mode`; errors with
/// [`CodecError::KeyspaceIdOutOfRange`] when `id` exceeds [`MAX_KEYSPACE_ID`].
pub fn prefix(mode: KeyMode, id: u32) -> Result<[u8; KEYSPACE_PREFIX_LEN], CodecError> {
    Keyspace::new(mode, id).map(Keyspace::prefix)
}

/// The key range `[prefix, end)` of keyspace `id` in `mode` (see [`Keyspace::range`]); errors
/// with [`CodecError::KeyspaceIdOutOfRange`] when `id` exceeds [`MAX_KEYSPACE_ID`].
pub fn range(
    mode: KeyMode,
    id: u32,
) -> Result<([u8; KEYSPACE_PREFIX_LEN], [u8; KEYSPACE_PREFIX_LEN]), CodecError> {
    Keyspace::new(mode, id).map(Keyspace::range)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    Ascending,
    Descending,
}

fn decode(encoded: &[u8], order: Order) -> Result<(Vec<u8>, &[u8]), CodecError> {
    // Descending bytes are the complement of ascending ones; undo that per byte while reading so
    // one loop validates both.
    let flip = match order {
        Order::Ascending => 0x00,
        Order::Descending => 0xFF,
    };
    let mut key = Vec::with_capacity(encoded.len() / (ENC_GROUP_SIZE + 1) * ENC_GROUP_SIZE);
    let mut offset = 0;
    loop {
        let Some(group) = encoded.get(offset..offset + ENC_GROUP_SIZE + 1) else {
            return Err(CodecError::Truncated { offset });
        };
        let marker = group[ENC_GROUP_SIZE] ^ flip;
        let pad = usize::from(ENC_MARKER - marker);
        if pad > ENC_GROUP_SIZE {
            return Err(CodecError::InvalidMarker {
                offset,
                marker: group[ENC_GROUP_SIZE],
            });
        }
        let (data, padding) = group[..ENC_GROUP_SIZE].split_at(ENC_GROUP_SIZE - pad);
        // Strict padding keeps the encoding a bijection: two different byte strings never
        // decode to the same key, so comparing encoded keys stays meaningful.
        if padding.iter().any(|byte| *byte != flip) {
            return Err(CodecError::InvalidPadding { offset });
        }
        key.extend(data.iter().map(|byte| byte ^ flip));
        offset += ENC_GROUP_SIZE + 1;
        if pad != 0 {
            return Ok((key, &encoded[offset..]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::QuickCheck;

    #[test]
    fn encode_bytes_matches_known_vectors() {
        assert_eq!(encode_bytes(b""), [0, 0, 0, 0, 0, 0, 0, 0, 0xF7]);
        assert_eq!(encode_bytes(&[1, 2, 3]), [1, 2, 3, 0, 0, 0, 0, 0, 0xFA]);
        assert_eq!(encode_bytes(&[1, 2, 3, 0]), [1, 2, 3, 0, 0, 0, 0, 0, 0xFB]);
        assert_eq!(
            encode_bytes(&[1, 2, 3, 4, 5, 6, 7, 8]),
            [1, 2, 3, 4, 5, 6, 7, 8, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0xF7]
        );
        assert_eq!(
            encode_bytes(&[1, 2, 3, 4, 5, 6, 7, 8, 9]),
            [1, 2, 3, 4, 5, 6, 7, 8, 0xFF, 9, 0, 0, 0, 0, 0, 0, 0, 0xF8]
        );
        assert_eq!(encoded_len(0), 9);
        assert_eq!(encoded_len(8), 18);
        assert_eq!(encoded_len(9), 18);
    }

    #[test]
    fn encode_bytes_desc_is_the_complement() {
        assert_eq!(
            encode_bytes_desc(&[1, 2, 3]),
            [0xFE, 0xFD, 0xFC, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x05]
        );
        assert_eq!(
            decode_bytes_desc(&encode_bytes_desc(b"abcdefghij")).unwrap(),
            (b"abcdefghij".to_vec(), &[][..])
        );
    }

    #[test]
    fn encode_into_appends() {
        let mut out = vec![0xAA];
        encode_bytes_into(&mut out, b"k");
        assert_eq!(out, [0xAA, b'k', 0, 0, 0, 0, 0, 0, 0, 0xF8]);
    }

    #[test]
    fn decode_returns_the_rest() {
        let mut buf = encode_bytes(b"key");
        buf.extend_from_slice(&[9, 9]);
        let (key, rest) = decode_bytes(&buf).unwrap();
        assert_eq!(key, b"key");
        assert_eq!(rest, [9, 9]);
    }

    #[test]
    fn decode_rejects_truncated_input() {
        assert_eq!(decode_bytes(&[]), Err(CodecError::Truncated { offset: 0 }));
        assert_eq!(
            decode_bytes(&[1, 2, 3, 0, 0, 0, 0, 0]),
            Err(CodecError::Truncated { offset: 0 })
        );
        // A full group promises a next one.
        assert_eq!(
            decode_bytes(&[1, 2, 3, 4, 5, 6, 7, 8, 0xFF]),
            Err(CodecError::Truncated { offset: 9 })
        );
        assert_eq!(
            decode_bytes_desc(&[0; 8]),
            Err(CodecError::Truncated { offset: 0 })
        );
    }

    #[test]
    fn decode_rejects_bad_markers() {
        // 0xF6 claims nine padding bytes.
        assert_eq!(
            decode_bytes(&[0, 0, 0, 0, 0, 0, 0, 0, 0xF6]),
            Err(CodecError::InvalidMarker {
                offset: 0,
                marker: 0xF6
            })
        );
        let mut two_groups = encode_bytes(b"12345678x");
        two_groups[17] = 0x00;
        assert_eq!(
            decode_bytes(&two_groups),
            Err(CodecError::InvalidMarker {
                offset: 9,
                marker: 0x00
            })
        );
        // In descending order the marker is the padding count itself.
        assert_eq!(
            decode_bytes_desc(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x09]),
            Err(CodecError::InvalidMarker {
                offset: 0,
                marker: 0x09
            })
        );
    }

    #[test]
    fn decode_rejects_non_zero_padding() {
        assert_eq!(
            decode_bytes(&[1, 2, 3, 0, 0, 0, 0, 1, 0xFA]),
            Err(CodecError::InvalidPadding { offset: 0 })
        );
        let mut desc = encode_bytes_desc(b"ab");
        desc[5] = 0x00;
        assert_eq!(
            decode_bytes_desc(&desc),
            Err(CodecError::InvalidPadding { offset: 0 })
        );
        // Ascending bytes do not decode as descending ones.
        assert!(decode_bytes_desc(&encode_bytes(b"ab")).is_err());
    }

    #[test]
    fn region_key_keeps_empty_boundaries() {
        assert_eq!(decode_region_key(b""), Ok(Vec::new()));
        let mut with_ts = encode_bytes(b"t_1");
        with_ts.extend_from_slice(&42u64.to_be_bytes());
        assert_eq!(decode_region_key(&with_ts), Ok(b"t_1".to_vec()));
        assert!(decode_region_key(b"short").is_err());
    }

    #[test]
    fn quickcheck_round_trip() {
        fn prop(key: Vec<u8>, tail: Vec<u8>) -> bool {
            let mut asc = encode_bytes(&key);
            assert_eq!(asc.len(), encoded_len(key.len()));
            asc.extend_from_slice(&tail);
            let mut desc = encode_bytes_desc(&key);
            desc.extend_from_slice(&tail);
            decode_bytes(&asc) == Ok((key.clone(), &tail[..]))
                && decode_bytes_desc(&desc) == Ok((key, &tail[..]))
        }
        QuickCheck::new()
            .tests(2_000)
            .quickcheck(prop as fn(Vec<u8>, Vec<u8>) -> bool);
    }

    #[test]
    fn quickcheck_order_preserved() {
        fn prop(a: Vec<u8>, b: Vec<u8>) -> bool {
            let asc = encode_bytes(&a).cmp(&encode_bytes(&b));
            let desc = encode_bytes_desc(&a).cmp(&encode_bytes_desc(&b));
            asc == a.cmp(&b) && desc == b.cmp(&a)
        }
        QuickCheck::new()
            .tests(2_000)
            .quickcheck(prop as fn(Vec<u8>, Vec<u8>) -> bool);
    }

    #[test]
    fn quickcheck_order_preserved_for_shared_prefixes() {
        // Random pairs rarely share long prefixes; build them so group boundaries are hit.
        fn prop(common: Vec<u8>, a: Vec<u8>, b: Vec<u8>) -> bool {
            let a = [&common[..], &a[..]].concat();
            let b = [&common[..], &b[..]].concat();
            encode_bytes(&a).cmp(&encode_bytes(&b)) == a.cmp(&b)
        }
        QuickCheck::new()
            .tests(2_000)
            .quickcheck(prop as fn(Vec<u8>, Vec<u8>, Vec<u8>) -> bool);
    }

    #[test]
    fn quickcheck_decode_never_accepts_non_canonical_input() {
        // Corrupt one byte of a valid encoding: whatever still decodes must re-encode to exactly
        // the bytes consumed, so no two inputs decode to the same key.
        fn prop(key: Vec<u8>, at: usize, byte: u8) -> bool {
            let mut input = encode_bytes(&key);
            let at = at % input.len();
            input[at] = byte;
            match decode_bytes(&input) {
                Ok((decoded, rest)) => {
                    let consumed = &input[..input.len() - rest.len()];
                    encode_bytes(&decoded) == consumed
                }
                Err(_) => true,
            }
        }
        QuickCheck::new()
            .tests(5_000)
            .quickcheck(prop as fn(Vec<u8>, usize, u8) -> bool);
    }

    #[test]
    fn keyspace_prefix_and_range() {
        let ks = Keyspace::new(KeyMode::Txn, 0x0A0B0C).unwrap();
        assert_eq!(ks.prefix(), [b'x', 0x0A, 0x0B, 0x0C]);
        assert_eq!(ks.range(), (*b"x\x0a\x0b\x0c", *b"x\x0a\x0b\x0d"));
        assert_eq!(prefix(KeyMode::Raw, 0), Ok(*b"r\0\0\0"));
        assert_eq!(range(KeyMode::Raw, 0), Ok((*b"r\0\0\0", *b"r\0\0\x01")));
        // Carries ripple through the id bytes.
        assert_eq!(
            range(KeyMode::Raw, 0x00FF),
            Ok((*b"r\0\0\xff", *b"r\0\x01\0"))
        );
        assert_eq!(ks.to_string(), "txn:658188");
    }

    #[test]
    fn keyspace_range_at_max_id_moves_to_next_mode_byte() {
        assert_eq!(
            range(KeyMode::Raw, MAX_KEYSPACE_ID),
            Ok((*b"r\xff\xff\xff", *b"s\0\0\0"))
        );
        assert_eq!(
            range(KeyMode::Txn, MAX_KEYSPACE_ID),
            Ok((*b"x\xff\xff\xff", *b"y\0\0\0"))
        );
    }

    #[test]
    fn keyspace_id_over_24_bits_is_rejected() {
        assert_eq!(
            Keyspace::new(KeyMode::Txn, MAX_KEYSPACE_ID + 1),
            Err(CodecError::KeyspaceIdOutOfRange(0x0100_0000))
        );
        assert_eq!(
            prefix(KeyMode::Raw, u32::MAX),
            Err(CodecError::KeyspaceIdOutOfRange(u32::MAX))
        );
        assert!(range(KeyMode::Raw, u32::MAX).is_err());
    }

    #[test]
    fn keyspace_encode_key_and_range() {
        let ks = Keyspace::new(KeyMode::Raw, 1).unwrap();
        assert_eq!(ks.encode_key(b"a"), b"r\0\0\x01a");
        assert_eq!(ks.encode_key(b""), b"r\0\0\x01");
        assert_eq!(
            ks.encode_range(b"a", b"b"),
            (b"r\0\0\x01a".to_vec(), b"r\0\0\x01b".to_vec())
        );
        assert_eq!(
            ks.encode_range(b"", b""),
            (b"r\0\0\x01".to_vec(), b"r\0\0\x02".to_vec())
        );
    }

    #[test]
    fn keyspace_strip_prefix() {
        let ks = Keyspace::new(KeyMode::Txn, 7).unwrap();
        assert_eq!(ks.strip_prefix(b"x\0\0\x07key"), Ok(&b"key"[..]));
        assert_eq!(ks.strip_prefix(b"x\0\0\x07"), Ok(&b""[..]));
        for wrong in [&b"x\0\0\x08key"[..], b"r\0\0\x07key", b"x\0\0", b""] {
            assert_eq!(
                ks.strip_prefix(wrong),
                Err(CodecError::OutsideKeyspace {
                    keyspace: ks,
                    key: wrong.to_vec()
                })
            );
        }
    }

    #[test]
    fn keyspace_of_key() {
        assert_eq!(
            Keyspace::of_key(b"r\x01\x02\x03rest"),
            Keyspace::new(KeyMode::Raw, 0x010203)
        );
        assert_eq!(
            Keyspace::of_key(b"x\xff\xff\xff"),
            Keyspace::new(KeyMode::Txn, MAX_KEYSPACE_ID)
        );
        assert_eq!(
            Keyspace::of_key(b"t\0\0\x01"),
            Err(CodecError::InvalidV2Key(b"t\0\0\x01".to_vec()))
        );
        assert_eq!(
            Keyspace::of_key(b"x\0"),
            Err(CodecError::InvalidV2Key(b"x\0".to_vec()))
        );
        assert_eq!(KeyMode::from_byte(b'q'), None);
        assert_eq!(KeyMode::Raw.as_byte(), b'r');
    }

    #[test]
    fn keyspace_decode_range_clips_to_keyspace() {
        let ks = Keyspace::new(KeyMode::Txn, 2).unwrap();
        // Entirely inside.
        assert_eq!(
            ks.decode_range(b"x\0\0\x02a", b"x\0\0\x02b"),
            Ok((&b"a"[..], &b"b"[..]))
        );
        // A region spanning the whole keyspace and beyond.
        assert_eq!(ks.decode_range(b"", b""), Ok((&b""[..], &b""[..])));
        assert_eq!(
            ks.decode_range(b"x\0\0\x01zz", b"x\0\0\x03"),
            Ok((&b""[..], &b""[..]))
        );
        // Entirely before or after the keyspace.
        assert!(ks.decode_range(b"", b"x\0\0\x02").is_err());
        assert!(ks.decode_range(b"x\0\0\x03", b"").is_err());
    }

    #[test]
    fn quickcheck_keyspace_round_trip_and_containment() {
        fn prop(raw: bool, id: u32, key: Vec<u8>) -> bool {
            let mode = if raw { KeyMode::Raw } else { KeyMode::Txn };
            let ks = match Keyspace::new(mode, id & MAX_KEYSPACE_ID) {
                Ok(ks) => ks,
                Err(_) => return false,
            };
            let encoded = ks.encode_key(&key);
            let (start, end) = ks.range();
            ks.strip_prefix(&encoded) == Ok(&key[..])
                && Keyspace::of_key(&encoded) == Ok(ks)
                && start[..] <= encoded[..]
                && encoded[..] < end[..]
        }
        QuickCheck::new()
            .tests(2_000)
            .quickcheck(prop as fn(bool, u32, Vec<u8>) -> bool);
    }
}
