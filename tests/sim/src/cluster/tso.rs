//! The timestamp oracle: hybrid timestamps `physical_ms << 18 | logical`, strictly increasing.
//!
//! A batch of `count` timestamps takes the next `count` logical values under one physical
//! part and is answered with the **last** one (clients derive the rest). The physical part
//! follows the injected wall clock but never moves backwards; when the clock stalls or goes
//! back, logical values keep counting, and when they would overflow 18 bits the physical part
//! advances by one millisecond (PD waits for its next physical tick instead; the visible
//! result is the same: later timestamps, never repeated ones).

use tikv_proto::pdpb;

/// Number of bits of the logical part.
pub const LOGICAL_BITS: u32 = 18;
/// Logical values must stay below this.
pub const MAX_LOGICAL: i64 = 1 << LOGICAL_BITS;

/// Why the TSO could not answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TsoError {
    /// PD answers a zero count with an error.
    #[error("tso count should be positive")]
    CountZero,
    /// A batch must fit in one physical millisecond.
    #[error("tso count {count} does not fit in {LOGICAL_BITS} logical bits")]
    CountTooLarge {
        /// The requested count.
        count: u32,
    },
    /// The fault API paused the TSO.
    #[error("tso service is paused")]
    Paused,
}

/// A hybrid timestamp as PD returns it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    /// Milliseconds since the Unix epoch.
    pub physical_ms: i64,
    /// The logical counter within that millisecond.
    pub logical: i64,
}

impl Timestamp {
    /// The 64-bit TSO, `physical_ms << 18 | logical`.
    pub fn to_u64(self) -> u64 {
        ((self.physical_ms as u64) << LOGICAL_BITS) | self.logical as u64
    }

    /// Splits a 64-bit TSO into its parts.
    pub fn from_u64(ts: u64) -> Self {
        Self {
            physical_ms: (ts >> LOGICAL_BITS) as i64,
            logical: (ts & (MAX_LOGICAL as u64 - 1)) as i64,
        }
    }

    /// The wire form (`suffix_bits` 0, as plain PD sends).
    pub fn to_proto(self) -> pdpb::Timestamp {
        pdpb::Timestamp {
            physical: self.physical_ms,
            logical: self.logical,
            suffix_bits: 0,
        }
    }
}

/// The allocator state: the last timestamp handed out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TsoAllocator {
    last: Timestamp,
    paused: bool,
    /// Allocations left that keep the last physical part instead of following the clock
    /// (PD's `updateTimestamp` stalled); `u32::MAX` stalls until restarted.
    stalled: u32,
}

impl TsoAllocator {
    /// Allocates `count` consecutive timestamps and returns the last one.
    pub(crate) fn allocate(&mut self, count: u32, now_ms: u64) -> Result<Timestamp, TsoError> {
        if self.paused {
            return Err(TsoError::Paused);
        }
        if count == 0 {
            return Err(TsoError::CountZero);
        }
        let count_logical = i64::from(count);
        if count_logical >= MAX_LOGICAL {
            return Err(TsoError::CountTooLarge { count });
        }
        // Physical parts beyond 46 bits would not fit the 64-bit TSO; clamp the clock there.
        let max_physical = (u64::MAX >> LOGICAL_BITS) as i64;
        let now = i64::try_from(now_ms)
            .unwrap_or(max_physical)
            .min(max_physical);
        let mut next = self.last;
        // A stalled clock leaves the physical part where it is; only the logical part
        // counts on (PD's `generateTSO` while `updateTimestamp` does not run). The very
        // first timestamp still takes the clock: PD syncs it at startup.
        let stalled = self.stalled > 0 && next.physical_ms != 0;
        if stalled && self.stalled != u32::MAX {
            self.stalled -= 1;
        }
        if now > next.physical_ms && !stalled {
            next = Timestamp {
                physical_ms: now,
                logical: 0,
            };
        }
        if next.logical + count_logical >= MAX_LOGICAL {
            next = Timestamp {
                physical_ms: next.physical_ms + 1,
                logical: 0,
            };
        }
        next.logical += count_logical;
        self.last = next;
        Ok(next)
    }

    /// The last timestamp handed out (zero before the first).
    pub(crate) fn last(&self) -> Timestamp {
        self.last
    }

    /// Makes every later timestamp larger than `ts`, as if `ts` had been handed out.
    pub(crate) fn raise_floor(&mut self, ts: Timestamp) {
        self.last = self.last.max(ts);
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused
    }

    pub(crate) fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    pub(crate) fn stall(&mut self, allocations: u32) {
        self.stalled = allocations;
    }
}

impl super::Cluster {
    /// Allocates `count` timestamps at wall-clock `now_ms` and returns the last of the batch.
    pub fn allocate_ts(&mut self, count: u32, now_ms: u64) -> Result<Timestamp, TsoError> {
        self.tso.allocate(count, now_ms)
    }

    /// The last timestamp the TSO handed out, without allocating.
    pub fn last_ts(&self) -> Timestamp {
        self.tso.last()
    }

    /// Pauses (or resumes) the TSO: while paused every Tso request fails with
    /// [`TsoError::Paused`].
    pub fn set_tso_paused(&mut self, paused: bool) {
        self.tso.set_paused(paused);
    }

    /// Stalls the TSO's clock for the next `requests` Tso requests (`u32::MAX`: until
    /// called again; 0 restarts it): they keep the physical part of the last timestamp and
    /// only count up the logical part, as PD's timestamps do while its physical-time update
    /// loop does not run (a slow etcd). Tests use it to hand out timestamps in a known
    /// order: each stalled request of `count` moves the logical part by exactly `count`.
    pub fn stall_tso(&mut self, requests: u32) {
        self.tso.stall(requests);
    }

    /// Whether the TSO is paused.
    pub fn is_tso_paused(&self) -> bool {
        self.tso.is_paused()
    }

    /// A timestamp for a store at `now_ms` that takes nothing from the TSO's sequence: the
    /// larger of the last one handed out and `now_ms` with logical 0 (a value the TSO never
    /// hands out), which every later timestamp is made to exceed. What TiKV's resolved-ts
    /// worker fetches from PD each round; taking it this way leaves the timestamps clients
    /// get unchanged.
    pub(crate) fn ts_floor(&mut self, now_ms: u64) -> Timestamp {
        let max_physical = (u64::MAX >> LOGICAL_BITS) as i64;
        let at = Timestamp {
            physical_ms: i64::try_from(now_ms)
                .unwrap_or(max_physical)
                .min(max_physical),
            logical: 0,
        };
        let ts = self.tso.last().max(at);
        self.tso.raise_floor(ts);
        ts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    #[test]
    fn batches_return_their_last_timestamp() {
        let mut tso = TsoAllocator::default();
        let ts = tso.allocate(10, 1_000).unwrap();
        assert_eq!(
            ts,
            Timestamp {
                physical_ms: 1_000,
                logical: 10
            }
        );
        let ts = tso.allocate(1, 1_000).unwrap();
        assert_eq!(
            ts,
            Timestamp {
                physical_ms: 1_000,
                logical: 11
            }
        );
        let ts = tso.allocate(3, 1_005).unwrap();
        assert_eq!(
            ts,
            Timestamp {
                physical_ms: 1_005,
                logical: 3
            }
        );
        assert_eq!(ts.to_u64(), (1_005 << 18) | 3);
        assert_eq!(Timestamp::from_u64(ts.to_u64()), ts);
    }

    #[test]
    fn clock_going_back_keeps_counting() {
        let mut tso = TsoAllocator::default();
        let first = tso.allocate(1, 5_000).unwrap();
        let second = tso.allocate(1, 4_000).unwrap();
        assert_eq!(
            second,
            Timestamp {
                physical_ms: 5_000,
                logical: 2
            }
        );
        assert!(second > first);
    }

    /// Follows PD's `timestampOracle::generateTSO` while `updateTimestamp` does not run: the
    /// physical part stays, the logical part counts by the batch size.
    #[test]
    fn a_stalled_clock_only_counts_logical() {
        let mut tso = TsoAllocator::default();
        let first = tso.allocate(1, 5_000).unwrap();
        tso.stall(2);
        let second = tso.allocate(1, 6_000).unwrap();
        let third = tso.allocate(3, 7_000).unwrap();
        assert_eq!(second.physical_ms, first.physical_ms);
        assert_eq!(second.logical, first.logical + 1);
        assert_eq!(third.physical_ms, first.physical_ms);
        assert_eq!(third.logical, second.logical + 3);
        // Two requests stalled; the third follows the clock again.
        let fourth = tso.allocate(1, 8_000).unwrap();
        assert_eq!(
            fourth,
            Timestamp {
                physical_ms: 8_000,
                logical: 1
            }
        );
        tso.stall(u32::MAX);
        for _ in 0..5 {
            assert_eq!(tso.allocate(1, 9_000).unwrap().physical_ms, 8_000);
        }
        tso.stall(0);
        assert_eq!(tso.allocate(1, 9_000).unwrap().physical_ms, 9_000);
    }

    #[test]
    fn logical_overflow_advances_physical() {
        let mut tso = TsoAllocator::default();
        tso.allocate((MAX_LOGICAL - 2) as u32, 7).unwrap();
        let ts = tso.allocate(5, 7).unwrap();
        assert_eq!(
            ts,
            Timestamp {
                physical_ms: 8,
                logical: 5
            }
        );
    }

    #[test]
    fn errors() {
        let mut tso = TsoAllocator::default();
        assert_eq!(tso.allocate(0, 1), Err(TsoError::CountZero));
        assert_eq!(
            tso.allocate(MAX_LOGICAL as u32, 1),
            Err(TsoError::CountTooLarge {
                count: MAX_LOGICAL as u32
            })
        );
        tso.set_paused(true);
        assert_eq!(tso.allocate(1, 1), Err(TsoError::Paused));
        tso.set_paused(false);
        assert!(tso.allocate(1, 1).is_ok());
    }

    quickcheck! {
        /// Any sequence of (count, clock) yields contiguous batches under one physical part,
        /// each starting after the previous one ended.
        fn batches_are_strictly_increasing_and_contiguous(steps: Vec<(u32, u64)>) -> bool {
            let mut tso = TsoAllocator::default();
            let mut previous_last: Option<u64> = None;
            for (count, clock) in steps {
                // Mix small and huge counts so that overflow happens often.
                let count = if count % 7 == 0 { count % (MAX_LOGICAL as u32) } else { count % 5000 };
                let clock = clock % 10_000;
                let Ok(last) = tso.allocate(count, clock) else {
                    if count != 0 {
                        return false;
                    }
                    continue;
                };
                let first_logical = last.logical - i64::from(count) + 1;
                if first_logical < 1 || last.logical >= MAX_LOGICAL {
                    return false;
                }
                let first = Timestamp { logical: first_logical, ..last }.to_u64();
                if previous_last.is_some_and(|prev| first <= prev) {
                    return false;
                }
                previous_last = Some(last.to_u64());
            }
            true
        }
    }
}
