//! TiKV timestamps (client-go's `oracle`): a [`Timestamp`] is a physical time in milliseconds
//! since the Unix epoch shifted left by 18 bits, plus an 18-bit logical counter. TSO hands
//! them out; transactions order themselves by them.
//!
//! A `Timestamp` is not a [`Time`](crate::time::Time): that one is the machine's monotonic
//! clock, which orders inputs and arms timers; a timestamp's physical part is wall-clock time
//! as PD saw it, compared only with other timestamps and with wall-clock readings (lock TTLs).

use std::time::Duration;

/// Bits of the logical part of a timestamp.
pub const LOGICAL_BITS: u32 = 18;

const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// A TiKV timestamp from PD's TSO (or composed from a wall-clock time).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The zero timestamp (before every transaction).
    pub const ZERO: Self = Self(0);
    /// The largest timestamp (TiKV reads at it see the newest committed data).
    pub const MAX: Self = Self(u64::MAX);

    /// The timestamp whose wire form is `version` (the `u64` TiKV's protocol carries).
    pub const fn from_version(version: u64) -> Self {
        Self(version)
    }

    /// The wire form: what requests carry as `start_version`, `commit_version`, ...
    pub const fn version(self) -> u64 {
        self.0
    }

    /// The timestamp of physical time `physical_ms` (milliseconds since the Unix epoch) and
    /// logical counter `logical` (only its low 18 bits are kept).
    pub const fn compose(physical_ms: u64, logical: u64) -> Self {
        Self((physical_ms << LOGICAL_BITS) | (logical & LOGICAL_MASK))
    }

    /// The first timestamp of wall-clock time `unix_ms` (client-go's `GoTimeToTS`).
    pub const fn from_unix_millis(unix_ms: u64) -> Self {
        Self::compose(unix_ms, 0)
    }

    /// The physical part: milliseconds since the Unix epoch.
    pub const fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The logical part.
    pub const fn logical(self) -> u64 {
        self.0 & LOGICAL_MASK
    }

    /// The smallest start timestamp a transaction still running at `unix_ms` can have,
    /// given that no transaction lives longer than `max_txn_time` (client-go's
    /// `GoTimeToLowerLimitStartTS`).
    pub fn lower_limit_at(unix_ms: u64, max_txn_time: Duration) -> Self {
        let max_ms = u64::try_from(max_txn_time.as_millis()).unwrap_or(u64::MAX);
        Self::from_unix_millis(unix_ms.saturating_sub(max_ms))
    }

    /// Milliseconds until a lock of the transaction that started at this timestamp, with a
    /// TTL of `ttl_ms`, expires at wall-clock time `now_ms` (negative once it has;
    /// client-go's `UntilExpired`).
    pub fn until_expired(self, ttl_ms: u64, now_ms: u64) -> i64 {
        let expires = i128::from(self.physical_ms()) + i128::from(ttl_ms);
        let left = expires - i128::from(now_ms);
        i64::try_from(left).unwrap_or(if left > 0 { i64::MAX } else { i64::MIN })
    }

    /// Whether such a lock has expired at `now_ms` (client-go's `IsExpired`).
    pub fn is_expired(self, ttl_ms: u64, now_ms: u64) -> bool {
        self.until_expired(ttl_ms, now_ms) <= 0
    }

    /// The timestamp `n` logical steps later (saturating).
    pub const fn saturating_add(self, n: u64) -> Self {
        Self(self.0.saturating_add(n))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<Timestamp> for u64 {
    fn from(ts: Timestamp) -> Self {
        ts.0
    }
}

/// The wire form of the timestamp of `physical_ms` and `logical` (see
/// [`Timestamp::compose`]).
pub fn compose_ts(physical_ms: u64, logical: u64) -> u64 {
    Timestamp::compose(physical_ms, logical).version()
}

/// The physical part of wire timestamp `ts`: milliseconds since the Unix epoch.
pub fn extract_physical(ts: u64) -> u64 {
    Timestamp::from_version(ts).physical_ms()
}

/// The logical part of wire timestamp `ts`.
pub fn extract_logical(ts: u64) -> u64 {
    Timestamp::from_version(ts).logical()
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
        assert_eq!(Timestamp::from_unix_millis(7).version(), 7 << 18);
    }

    #[test]
    fn lower_limit_goes_back_by_the_longest_transaction() {
        let ts = Timestamp::lower_limit_at(10_000, Duration::from_secs(3));
        assert_eq!(ts.physical_ms(), 7_000);
        assert_eq!(
            Timestamp::lower_limit_at(1_000, Duration::from_secs(3)),
            Timestamp::ZERO
        );
    }

    #[test]
    fn expiry_counts_from_the_start_physical_time() {
        let lock_ts = Timestamp::compose(1_000, 3);
        assert_eq!(lock_ts.until_expired(500, 1_200), 300);
        assert!(!lock_ts.is_expired(500, 1_499));
        assert!(lock_ts.is_expired(500, 1_500));
        assert_eq!(lock_ts.until_expired(500, 2_000), -500);
        assert_eq!(Timestamp::MAX.until_expired(u64::MAX, 0), i64::MAX);
    }

    #[test]
    fn timestamps_order_by_physical_then_logical() {
        let a = Timestamp::compose(5, 9);
        let b = Timestamp::compose(6, 0);
        assert!(a < b);
        assert_eq!(Timestamp::from_version(a.version()), a);
        assert_eq!(a.saturating_add(1), Timestamp::compose(5, 10));
        assert_eq!(u64::from(b), 6 << LOGICAL_BITS);
        assert_eq!(b.to_string(), (6u64 << LOGICAL_BITS).to_string());
    }
}
