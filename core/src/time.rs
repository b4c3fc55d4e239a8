//! The core's own clock type.
//!
//! [`Time`] is a monotonic instant in microseconds since the client started. The core never
//! reads a clock: every input carries `now`, the runtime converts its own instants at the
//! boundary, and tests build exact times so traces print the same on every run.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};
use std::time::Duration;

/// A monotonic instant, in microseconds since the client's epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    /// The client's epoch.
    pub const ZERO: Self = Self(0);
    /// The farthest representable instant; used as "never".
    pub const MAX: Self = Self(u64::MAX);

    /// The instant `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros)
    }

    /// The instant `millis` milliseconds after the epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis.saturating_mul(1_000))
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Time elapsed since the epoch.
    pub const fn since_epoch(self) -> Duration {
        Duration::from_micros(self.0)
    }

    /// The time from `earlier` to `self`, or zero when `earlier` is later.
    pub const fn saturating_since(self, earlier: Self) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// `self + duration`, saturating at [`Time::MAX`] (sub-microsecond parts are dropped).
    pub fn saturating_add(self, duration: Duration) -> Self {
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(micros))
    }
}

impl Add<Duration> for Time {
    type Output = Self;

    fn add(self, duration: Duration) -> Self {
        self.saturating_add(duration)
    }
}

impl AddAssign<Duration> for Time {
    fn add_assign(&mut self, duration: Duration) {
        *self = self.saturating_add(duration);
    }
}

impl Sub for Time {
    type Output = Duration;

    fn sub(self, earlier: Self) -> Duration {
        self.saturating_since(earlier)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Time::from_millis(1_500);
        assert_eq!(t.as_micros(), 1_500_000);
        assert_eq!(t + Duration::from_micros(7), Time::from_micros(1_500_007));
        assert_eq!(Time::MAX + Duration::from_secs(1), Time::MAX);
        assert_eq!(Time::ZERO - t, Duration::ZERO);
        assert_eq!(t - Time::ZERO, Duration::from_millis(1_500));
        assert_eq!(
            Time::from_micros(3) + Duration::from_nanos(999),
            Time::from_micros(3)
        );
        let mut u = Time::ZERO;
        u += Duration::from_secs(2);
        assert_eq!(u.since_epoch(), Duration::from_secs(2));
    }

    #[test]
    fn display_is_fixed_width_seconds() {
        assert_eq!(Time::from_micros(12_000_345).to_string(), "12.000345s");
        assert_eq!(Time::ZERO.to_string(), "0.000000s");
    }
}
