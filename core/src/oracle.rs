//! TiKV timestamps (client-go's `oracle` helpers): a timestamp is a physical time in
//! milliseconds since the Unix epoch shifted left by 18 bits, plus an 18-bit logical counter.

use std::time::Duration;

/// Bits of the logical part of a timestamp.
pub const LOGICAL_BITS: u32 = 18;

/// The timestamp of physical time `physical_ms` (milliseconds since the Unix epoch) and
/// logical counter `logical` (only its low 18 bits are kept).
pub fn compose_ts(physical_ms: u64, logical: u64) -> u64 {
    (physical_ms << LOGICAL_BITS) | (logical & ((1 << LOGICAL_BITS) - 1))
}

/// The physical part of `ts`: milliseconds since the Unix epoch.
pub fn extract_physical(ts: u64) -> u64 {
    ts >> LOGICAL_BITS
}

/// The logical part of `ts`.
pub fn extract_logical(ts: u64) -> u64 {
    ts & ((1 << LOGICAL_BITS) - 1)
}

/// The first timestamp of wall-clock time `unix_ms` (client-go's `GoTimeToTS`).
pub fn ts_from_unix_millis(unix_ms: u64) -> u64 {
    compose_ts(unix_ms, 0)
}

/// The smallest start timestamp a transaction still running at `unix_ms` can have, given
/// that no transaction lives longer than `max_txn_time` (client-go's
/// `GoTimeToLowerLimitStartTS`).
pub fn lower_limit_start_ts(unix_ms: u64, max_txn_time: Duration) -> u64 {
    let max_ms = u64::try_from(max_txn_time.as_millis()).unwrap_or(u64::MAX);
    ts_from_unix_millis(unix_ms.saturating_sub(max_ms))
}

/// Whether a lock of the transaction that started at `lock_ts`, with a TTL of `ttl_ms`, has
/// expired at wall-clock time `now_ms` (client-go's `IsExpired`).
pub fn is_expired(lock_ts: u64, ttl_ms: u64, now_ms: u64) -> bool {
    until_expired(lock_ts, ttl_ms, now_ms) <= 0
}

/// Milliseconds until that lock expires (negative once it has; client-go's
/// `UntilExpired`).
pub fn until_expired(lock_ts: u64, ttl_ms: u64, now_ms: u64) -> i64 {
    let expires = i128::from(extract_physical(lock_ts)) + i128::from(ttl_ms);
    let left = expires - i128::from(now_ms);
    i64::try_from(left).unwrap_or(if left > 0 { i64::MAX } else { i64::MIN })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_and_extract_round_trip() {
        let ts = compose_ts(1_700_000_000_123, 42);
        assert_eq!(extract_physical(ts), 1_700_000_000_123);
        assert_eq!(extract_logical(ts), 42);
        // The logical part is 18 bits: larger counters are cut, not carried.
        assert_eq!(extract_logical(compose_ts(1, (1 << 18) + 5)), 5);
        assert_eq!(ts_from_unix_millis(7), 7 << 18);
    }

    #[test]
    fn lower_limit_goes_back_by_the_longest_transaction() {
        let ts = lower_limit_start_ts(10_000, Duration::from_secs(3));
        assert_eq!(extract_physical(ts), 7_000);
        assert_eq!(lower_limit_start_ts(1_000, Duration::from_secs(3)), 0);
    }

    #[test]
    fn expiry_counts_from_the_start_physical_time() {
        let lock_ts = compose_ts(1_000, 3);
        assert_eq!(until_expired(lock_ts, 500, 1_200), 300);
        assert!(!is_expired(lock_ts, 500, 1_499));
        assert!(is_expired(lock_ts, 500, 1_500));
        assert_eq!(until_expired(lock_ts, 500, 2_000), -500);
        assert_eq!(until_expired(u64::MAX, u64::MAX, 0), i64::MAX);
    }
}
