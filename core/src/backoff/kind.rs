//! The named backoff kinds, their exponential-with-jitter schedules and the error each one
//! surfaces as when a budget runs out.

use std::fmt;

use crate::rand::Rng;

/// How randomness is mixed into the exponential schedule (the four strategies of the AWS
/// "exponential backoff and jitter" article, as client-go implements them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Jitter {
    /// Strict exponential: `min(cap, base * 2^attempt)`.
    None,
    /// Uniform in `[0, expo)`.
    Full,
    /// Half the exponential value plus a uniform draw below the other half: `[expo/2, expo)`,
    /// so a retry never comes back almost immediately.
    Equal,
    /// `min(cap, base + uniform[0, 3 * previous - base))`: the spread grows with the previous
    /// sleep instead of the attempt number.
    Decorrelated,
}

/// One backoff kind's schedule: its name (as client-go reports it), base, cap and jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackoffConfig {
    /// client-go's name for the kind, used in logs and error messages.
    pub name: &'static str,
    /// The first sleep before jitter, in milliseconds. Values below 2 are raised to 2.
    pub base_ms: u64,
    /// The largest sleep before jitter, in milliseconds.
    pub cap_ms: u64,
    /// How the sleep is randomised.
    pub jitter: Jitter,
}

/// The smallest base a schedule runs with; client-go raises smaller ones so that the jitter
/// ranges below are never empty.
pub const MIN_BASE_MS: u64 = 2;

impl BackoffConfig {
    /// The sleep in milliseconds for the zero-based `attempt` of this kind, given the previous
    /// unclipped sleep (`last_sleep_ms`, which starts at the base) for decorrelated jitter.
    pub fn sleep_ms(&self, attempt: u32, last_sleep_ms: u64, rng: &mut Rng) -> u64 {
        let base_ms = self.base_ms.max(MIN_BASE_MS);
        match self.jitter {
            Jitter::None => expo_ms(base_ms, self.cap_ms, attempt),
            Jitter::Full => rng.below(expo_ms(base_ms, self.cap_ms, attempt)),
            Jitter::Equal => {
                let half = expo_ms(base_ms, self.cap_ms, attempt) / 2;
                half + rng.below(half)
            }
            Jitter::Decorrelated => {
                let spread = last_sleep_ms.saturating_mul(3).saturating_sub(base_ms);
                self.cap_ms.min(base_ms.saturating_add(rng.below(spread)))
            }
        }
    }
}

/// `min(cap, base * 2^attempt)` without overflow.
fn expo_ms(base_ms: u64, cap_ms: u64, attempt: u32) -> u64 {
    let grown = 1u64
        .checked_shl(attempt)
        .and_then(|factor| base_ms.checked_mul(factor))
        .unwrap_or(u64::MAX);
    grown.min(cap_ms)
}

/// Every reason client-go waits before retrying, one variant per named config in its
/// `config/retry` package.
///
/// Variants are in client-go's declaration order; [`BackoffKind::ALL`] lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BackoffKind {
    /// A TiKV RPC failed at the transport level (`tikvRPC`).
    TiKvRpc,
    /// A TiFlash RPC failed at the transport level (`tiflashRPC`).
    TiFlashRpc,
    /// A key is locked by another transaction that is still alive (`txnLock`).
    TxnLock,
    /// A PD RPC failed (`pdRPC`).
    PdRpc,
    /// The region is unknown, has no leader we can reach, or another region error needs a short
    /// wait (`regionMiss`).
    RegionMiss,
    /// The region is being scheduled: no leader, read index not ready, merging
    /// (`regionScheduling`).
    RegionScheduling,
    /// TiKV answered ServerIsBusy (`tikvServerBusy`). Its sleep does not count against the
    /// budget, up to [`EXCLUDED_SLEEP_LIMIT_MS`].
    TiKvServerBusy,
    /// TiKV's disk is full (`tikvDiskFull`).
    TiKvDiskFull,
    /// The region is recovering (online unsafe recovery) (`regionRecoveryInProgress`).
    RegionRecoveryInProgress,
    /// TiFlash answered ServerIsBusy (`tiflashServerBusy`). Unlike TiKV's, it counts against
    /// the budget.
    TiFlashServerBusy,
    /// A transaction's status was not found yet (`txnNotFound`).
    TxnNotFound,
    /// TiKV answered StaleCommand (`staleCommand`).
    StaleCmd,
    /// TiKV's max timestamp is not synced yet after a leader change (`maxTsNotSynced`).
    MaxTsNotSynced,
    /// The commit timestamp lags behind what TiKV requires (`commitTSLag`).
    CommitTsLag,
    /// The region's peer is not initialized yet (`regionNotInitialized`; client-go calls the
    /// config `BoMaxRegionNotInitialized`).
    RegionNotInitialized,
    /// The chosen peer is a witness and holds no data (`isWitness`).
    IsWitness,
    /// A read met a lock and waits briefly for it to go away (`txnLockFast`). Its base comes
    /// from [`BackoffVars::lock_fast_base_ms`](super::BackoffVars::lock_fast_base_ms).
    TxnLockFast,
}

/// How long, in milliseconds, sleep of an excluded kind ([`BackoffKind::TiKvServerBusy`]) may
/// add up to before it counts as exhausting the budget after all (client-go: 10 minutes).
pub const EXCLUDED_SLEEP_LIMIT_MS: u64 = 600_000;

impl BackoffKind {
    /// Every kind, in declaration order.
    pub const ALL: [Self; 17] = [
        Self::TiKvRpc,
        Self::TiFlashRpc,
        Self::TxnLock,
        Self::PdRpc,
        Self::RegionMiss,
        Self::RegionScheduling,
        Self::TiKvServerBusy,
        Self::TiKvDiskFull,
        Self::RegionRecoveryInProgress,
        Self::TiFlashServerBusy,
        Self::TxnNotFound,
        Self::StaleCmd,
        Self::MaxTsNotSynced,
        Self::CommitTsLag,
        Self::RegionNotInitialized,
        Self::IsWitness,
        Self::TxnLockFast,
    ];

    /// The kind's schedule, with client-go's values.
    ///
    /// [`BackoffKind::TxnLockFast`] declares base 2, but a [`Backoffer`](super::Backoffer)
    /// runs it with the base from its [`BackoffVars`](super::BackoffVars) (10 by default).
    pub const fn config(self) -> BackoffConfig {
        use Jitter::{Equal, None};
        let (name, base_ms, cap_ms, jitter) = match self {
            Self::TiKvRpc => ("tikvRPC", 100, 2_000, Equal),
            Self::TiFlashRpc => ("tiflashRPC", 100, 2_000, Equal),
            Self::TxnLock => ("txnLock", 100, 3_000, Equal),
            Self::PdRpc => ("pdRPC", 500, 3_000, Equal),
            // A 2 ms base: a missing region usually shows up again almost at once.
            Self::RegionMiss => ("regionMiss", 2, 500, None),
            Self::RegionScheduling => ("regionScheduling", 2, 500, None),
            Self::TiKvServerBusy => ("tikvServerBusy", 2_000, 10_000, Equal),
            Self::TiKvDiskFull => ("tikvDiskFull", 500, 5_000, None),
            Self::RegionRecoveryInProgress => ("regionRecoveryInProgress", 100, 10_000, Equal),
            Self::TiFlashServerBusy => ("tiflashServerBusy", 2_000, 10_000, Equal),
            Self::TxnNotFound => ("txnNotFound", 2, 500, None),
            Self::StaleCmd => ("staleCommand", 2, 1_000, None),
            Self::MaxTsNotSynced => ("maxTsNotSynced", 2, 500, None),
            Self::CommitTsLag => ("commitTSLag", 2, 500, None),
            Self::RegionNotInitialized => ("regionNotInitialized", 2, 1_000, None),
            Self::IsWitness => ("isWitness", 1_000, 10_000, Equal),
            Self::TxnLockFast => ("txnLockFast", 2, 3_000, Equal),
        };
        BackoffConfig {
            name,
            base_ms,
            cap_ms,
            jitter,
        }
    }

    /// client-go's name for the kind (`"regionMiss"`, `"tikvRPC"`, ...).
    pub const fn name(self) -> &'static str {
        self.config().name
    }

    /// The limit on this kind's excluded sleep, for kinds whose sleep does not count against
    /// the budget; `None` for ordinary kinds.
    pub const fn excluded_sleep_limit_ms(self) -> Option<u64> {
        match self {
            Self::TiKvServerBusy => Some(EXCLUDED_SLEEP_LIMIT_MS),
            _ => None,
        }
    }

    /// The error a caller reports when a budget runs out with this kind as the main cause.
    pub const fn error_class(self) -> ErrorClass {
        match self {
            Self::TiKvRpc => ErrorClass::TiKvServerTimeout,
            Self::TiFlashRpc => ErrorClass::TiFlashServerTimeout,
            Self::TxnLock | Self::TxnNotFound | Self::TxnLockFast => ErrorClass::ResolveLockTimeout,
            Self::PdRpc => ErrorClass::PdServerTimeout,
            Self::RegionMiss | Self::RegionScheduling => ErrorClass::RegionUnavailable,
            Self::TiKvServerBusy => ErrorClass::TiKvServerBusy,
            Self::TiKvDiskFull => ErrorClass::TiKvDiskFull,
            Self::RegionRecoveryInProgress => ErrorClass::RegionRecoveryInProgress,
            Self::TiFlashServerBusy => ErrorClass::TiFlashServerBusy,
            Self::StaleCmd => ErrorClass::TiKvStaleCommand,
            Self::MaxTsNotSynced => ErrorClass::MaxTimestampNotSynced,
            Self::CommitTsLag => ErrorClass::CommitTsLag,
            Self::RegionNotInitialized => ErrorClass::RegionNotInitialized,
            Self::IsWitness => ErrorClass::IsWitness,
        }
    }

    /// Position in [`BackoffKind::ALL`], for per-kind arrays.
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for BackoffKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The user-facing error a backoff kind stands for once retrying has given up (client-go's
/// per-config error values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// A commit timestamp kept lagging.
    CommitTsLag,
    /// The region kept being a witness.
    IsWitness,
    /// TiKV's max timestamp stayed unsynced.
    MaxTimestampNotSynced,
    /// PD kept failing.
    PdServerTimeout,
    /// The region stayed uninitialized.
    RegionNotInitialized,
    /// The region stayed in recovery.
    RegionRecoveryInProgress,
    /// The region stayed unreachable or unknown.
    RegionUnavailable,
    /// A lock could not be resolved in time.
    ResolveLockTimeout,
    /// TiFlash stayed busy.
    TiFlashServerBusy,
    /// TiFlash kept failing.
    TiFlashServerTimeout,
    /// TiKV's disk stayed full.
    TiKvDiskFull,
    /// TiKV stayed busy.
    TiKvServerBusy,
    /// TiKV kept failing.
    TiKvServerTimeout,
    /// TiKV kept answering StaleCommand.
    TiKvStaleCommand,
}

#[cfg(test)]
mod tests {
    use quickcheck::quickcheck;

    use super::*;

    fn expo_model(base_ms: u64, cap_ms: u64, attempt: u32) -> u64 {
        let grown = u128::from(base_ms.max(MIN_BASE_MS)) << attempt.min(100);
        u64::try_from(grown.min(u128::from(cap_ms))).unwrap_or(cap_ms)
    }

    fn config(base_ms: u16, cap_ms: u16, jitter: Jitter) -> BackoffConfig {
        BackoffConfig {
            name: "test",
            base_ms: u64::from(base_ms),
            cap_ms: u64::from(cap_ms),
            jitter,
        }
    }

    quickcheck! {
        fn no_jitter_is_strict_exponential(base_ms: u16, cap_ms: u16, attempt: u8, seed: u64) -> bool {
            let attempt = u32::from(attempt);
            let sleep = config(base_ms, cap_ms, Jitter::None).sleep_ms(attempt, 0, &mut Rng::new(seed));
            sleep == expo_model(u64::from(base_ms), u64::from(cap_ms), attempt)
        }

        fn full_jitter_stays_below_the_exponential(base_ms: u16, cap_ms: u16, attempt: u8, seed: u64) -> bool {
            let attempt = u32::from(attempt);
            let expo = expo_model(u64::from(base_ms), u64::from(cap_ms), attempt);
            let sleep = config(base_ms, cap_ms, Jitter::Full).sleep_ms(attempt, 0, &mut Rng::new(seed));
            if expo == 0 { sleep == 0 } else { sleep < expo }
        }

        fn equal_jitter_keeps_at_least_half(base_ms: u16, cap_ms: u16, attempt: u8, seed: u64) -> bool {
            let attempt = u32::from(attempt);
            let half = expo_model(u64::from(base_ms), u64::from(cap_ms), attempt) / 2;
            let sleep = config(base_ms, cap_ms, Jitter::Equal).sleep_ms(attempt, 0, &mut Rng::new(seed));
            sleep >= half && sleep <= (2 * half).saturating_sub(1).max(half)
        }

        fn decorrelated_jitter_stays_within_its_spread(base_ms: u16, cap_ms: u16, last_sleep_ms: u16, seed: u64) -> bool {
            let base = u64::from(base_ms).max(MIN_BASE_MS);
            let cap = u64::from(cap_ms);
            let spread = (3 * u64::from(last_sleep_ms)).saturating_sub(base);
            let sleep = config(base_ms, cap_ms, Jitter::Decorrelated)
                .sleep_ms(0, u64::from(last_sleep_ms), &mut Rng::new(seed));
            let upper = if spread == 0 { base } else { base + spread - 1 };
            sleep <= cap && sleep >= base.min(cap) && sleep <= upper.min(cap)
        }

        fn every_kind_stays_within_its_cap(index: u8, attempt: u8, seed: u64) -> bool {
            let kind = BackoffKind::ALL[usize::from(index) % BackoffKind::ALL.len()];
            let config = kind.config();
            let sleep = config.sleep_ms(u32::from(attempt), config.base_ms, &mut Rng::new(seed));
            sleep <= config.cap_ms
        }
    }

    #[test]
    fn jitter_bounds_hold_for_every_kind_over_many_seeds() {
        for kind in BackoffKind::ALL {
            let config = kind.config();
            for seed in 0..200 {
                let mut rng = Rng::new(seed);
                let mut last = config.base_ms.max(MIN_BASE_MS);
                for attempt in 0..20 {
                    let sleep = config.sleep_ms(attempt, last, &mut rng);
                    let expo = expo_model(config.base_ms, config.cap_ms, attempt);
                    match config.jitter {
                        Jitter::None => assert_eq!(sleep, expo, "{kind}"),
                        Jitter::Full => assert!(sleep < expo, "{kind}"),
                        Jitter::Equal => assert!(expo / 2 <= sleep && sleep < expo, "{kind}"),
                        Jitter::Decorrelated => assert!(sleep <= config.cap_ms, "{kind}"),
                    }
                    last = sleep;
                }
            }
        }
    }

    #[test]
    fn no_jitter_grows_by_doubling_up_to_the_cap() {
        let config = BackoffKind::RegionMiss.config();
        let mut rng = Rng::new(0);
        let sleeps: Vec<u64> = (0..11).map(|n| config.sleep_ms(n, 0, &mut rng)).collect();
        assert_eq!(sleeps, [2, 4, 8, 16, 32, 64, 128, 256, 500, 500, 500]);
        assert_eq!(config.sleep_ms(u32::MAX, 0, &mut rng), 500);
    }

    #[test]
    fn equal_jitter_reaches_its_cap_range() {
        let config = BackoffKind::TiKvRpc.config();
        let mut rng = Rng::new(3);
        for attempt in 5..40 {
            let sleep = config.sleep_ms(attempt, 0, &mut rng);
            assert!(
                (1_000..2_000).contains(&sleep),
                "attempt {attempt}: {sleep}"
            );
        }
    }

    #[test]
    fn full_and_decorrelated_jitter_spread_their_draws() {
        let full = config(100, 1_000, Jitter::Full);
        let decorrelated = config(100, 1_000, Jitter::Decorrelated);
        let mut rng = Rng::new(11);
        let full_draws: std::collections::BTreeSet<u64> =
            (0..100).map(|_| full.sleep_ms(3, 0, &mut rng)).collect();
        let decorrelated_draws: std::collections::BTreeSet<u64> = (0..100)
            .map(|_| decorrelated.sleep_ms(0, 300, &mut rng))
            .collect();
        assert!(full_draws.len() > 50);
        assert!(decorrelated_draws.iter().all(|s| (100..900).contains(s)));
        assert!(decorrelated_draws.len() > 50);
    }

    #[test]
    fn configs_match_client_go() {
        let table: Vec<(&str, u64, u64, Jitter)> = BackoffKind::ALL
            .iter()
            .map(|kind| {
                let c = kind.config();
                (c.name, c.base_ms, c.cap_ms, c.jitter)
            })
            .collect();
        assert_eq!(
            table,
            [
                ("tikvRPC", 100, 2_000, Jitter::Equal),
                ("tiflashRPC", 100, 2_000, Jitter::Equal),
                ("txnLock", 100, 3_000, Jitter::Equal),
                ("pdRPC", 500, 3_000, Jitter::Equal),
                ("regionMiss", 2, 500, Jitter::None),
                ("regionScheduling", 2, 500, Jitter::None),
                ("tikvServerBusy", 2_000, 10_000, Jitter::Equal),
                ("tikvDiskFull", 500, 5_000, Jitter::None),
                ("regionRecoveryInProgress", 100, 10_000, Jitter::Equal),
                ("tiflashServerBusy", 2_000, 10_000, Jitter::Equal),
                ("txnNotFound", 2, 500, Jitter::None),
                ("staleCommand", 2, 1_000, Jitter::None),
                ("maxTsNotSynced", 2, 500, Jitter::None),
                ("commitTSLag", 2, 500, Jitter::None),
                ("regionNotInitialized", 2, 1_000, Jitter::None),
                ("isWitness", 1_000, 10_000, Jitter::Equal),
                ("txnLockFast", 2, 3_000, Jitter::Equal),
            ]
        );
        for (index, kind) in BackoffKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), index);
            assert_eq!(kind.to_string(), kind.name());
        }
    }

    #[test]
    fn only_tikv_server_busy_is_excluded() {
        let excluded: Vec<BackoffKind> = BackoffKind::ALL
            .into_iter()
            .filter(|kind| kind.excluded_sleep_limit_ms().is_some())
            .collect();
        assert_eq!(excluded, [BackoffKind::TiKvServerBusy]);
        assert_eq!(
            BackoffKind::TiKvServerBusy.excluded_sleep_limit_ms(),
            Some(600_000)
        );
    }

    #[test]
    fn error_classes_follow_client_go() {
        assert_eq!(
            BackoffKind::RegionMiss.error_class(),
            ErrorClass::RegionUnavailable
        );
        assert_eq!(
            BackoffKind::RegionScheduling.error_class(),
            ErrorClass::RegionUnavailable
        );
        assert_eq!(
            BackoffKind::TxnNotFound.error_class(),
            ErrorClass::ResolveLockTimeout
        );
        assert_eq!(
            BackoffKind::TxnLockFast.error_class(),
            ErrorClass::ResolveLockTimeout
        );
        assert_eq!(
            BackoffKind::TiKvRpc.error_class(),
            ErrorClass::TiKvServerTimeout
        );
        assert_eq!(
            BackoffKind::PdRpc.error_class(),
            ErrorClass::PdServerTimeout
        );
    }
}
