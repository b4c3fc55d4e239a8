//! CRC-64 with the ECMA-182 polynomial, bit-reflected, as Go's `crc64.MakeTable(crc64.ECMA)`.
//!
//! Raw checksums XOR this CRC over every key‖value pair, so a client can compare the sum a
//! store reports with one it computes itself (client-go does so with Go's `hash/crc64`).
//! The register starts at all ones and is inverted at the end (the CRC-64/XZ variant).

/// The ECMA-182 polynomial in reflected (LSB-first) form, as Go's `crc64.ECMA` holds it.
pub(crate) const ECMA_REFLECTED: u64 = 0xC96C_5795_D787_0F42;

/// One 256-entry lookup table, one entry per byte value, computed at compile time.
const TABLE: [u64; 256] = make_table(ECMA_REFLECTED);

/// A running CRC-64 over bytes written in pieces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Crc64 {
    /// The register between writes, kept un-inverted so that an empty digest sums to 0.
    crc: u64,
}

impl Crc64 {
    /// Starts a digest over no bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds more bytes into the digest.
    pub fn write(&mut self, bytes: &[u8]) {
        let mut crc = !self.crc;
        for &byte in bytes {
            crc = TABLE[usize::from(byte ^ crc as u8)] ^ (crc >> 8);
        }
        self.crc = !crc;
    }

    /// Returns the CRC of everything written so far.
    pub fn sum64(&self) -> u64 {
        self.crc
    }
}

/// Returns the CRC-64/ECMA of `bytes` (Go's `crc64.Checksum(bytes, ecmaTable)`).
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut digest = Crc64::new();
    digest.write(bytes);
    digest.sum64()
}

/// Returns the CRC-64/ECMA of `key` followed by `value`, one pair's share of a raw checksum.
pub fn pair_checksum(key: &[u8], value: &[u8]) -> u64 {
    let mut digest = Crc64::new();
    digest.write(key);
    digest.write(value);
    digest.sum64()
}

/// Builds the byte table: entry `i` is the register after shifting byte `i` through eight rounds.
const fn make_table(poly: u64) -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut round = 0;
        while round < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ poly
            } else {
                crc >> 1
            };
            round += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use quickcheck::quickcheck;

    use super::*;

    /// Bit at a time, straight from the definition: the reference the table must agree with.
    fn bitwise(bytes: &[u8]) -> u64 {
        let mut crc = u64::MAX;
        for &byte in bytes {
            crc ^= u64::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ ECMA_REFLECTED
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn check_value_matches_go() {
        // The catalogued check value of CRC-64/XZ, which is what Go's ECMA table computes.
        assert_eq!(checksum(b"123456789"), 0x995D_C9BB_DF19_39FA);
    }

    #[test]
    fn empty_input_sums_to_zero() {
        assert_eq!(checksum(b""), 0);
        assert_eq!(Crc64::new().sum64(), 0);
    }

    #[test]
    fn table_entries_follow_the_polynomial() {
        assert_eq!(TABLE[0], 0);
        // Byte 0x80 reaches the low bit after seven shifts, so exactly one XOR happens.
        assert_eq!(TABLE[0x80], ECMA_REFLECTED);
        assert_eq!(TABLE[1], bitwise_register_for(1));
    }

    /// The table entry for byte `b`, computed without the table.
    fn bitwise_register_for(b: u8) -> u64 {
        let mut crc = u64::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ ECMA_REFLECTED
            } else {
                crc >> 1
            };
        }
        crc
    }

    #[test]
    fn pair_checksum_is_checksum_of_concatenation() {
        assert_eq!(pair_checksum(b"1234", b"56789"), 0x995D_C9BB_DF19_39FA);
        assert_eq!(pair_checksum(b"", b"123456789"), 0x995D_C9BB_DF19_39FA);
    }

    quickcheck! {
        fn table_agrees_with_bitwise(bytes: Vec<u8>) -> bool {
            checksum(&bytes) == bitwise(&bytes)
        }

        fn split_writes_agree_with_one_write(bytes: Vec<u8>, cut: usize) -> bool {
            let cut = if bytes.is_empty() { 0 } else { cut % (bytes.len() + 1) };
            let mut digest = Crc64::new();
            digest.write(&bytes[..cut]);
            digest.write(&bytes[cut..]);
            digest.sum64() == checksum(&bytes)
        }
    }
}
