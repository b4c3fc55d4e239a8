//! Backoff: client-go's retry kinds as pure values that yield sleeps and deadlines.
//!
//! A [`Backoffer`] belongs to one operation (a get, a prewrite, a TSO request) and carries
//! its total budget. Each time the operation meets a retryable failure it asks the backoffer
//! for the next wait of some [`BackoffKind`]; the answer is a [`Duration`] (or a deadline
//! [`Time`]) that the caller turns into a timer, or a [`BackoffError`] once the budget is
//! spent. Nothing here sleeps or reads a clock, and jitter comes from the caller's seeded
//! [`Rng`], so a run replays exactly.
//!
//! The rules follow client-go's `config/retry` package:
//!
//! - Each kind grows exponentially from its base to its cap, with the kind's [`Jitter`];
//!   the exponent is per kind and per backoffer, and restarts after [`Backoffer::reset`] and
//!   in a [`Backoffer::fork`].
//! - The budget is checked *before* a wait: the wait that crosses it is still granted, and the
//!   next request fails. A budget of 0 never runs out.
//! - Sleep of [`BackoffKind::TiKvServerBusy`] does not count against the budget, until that
//!   excluded sleep passes both [`EXCLUDED_SLEEP_LIMIT_MS`] and the budget itself.
//! - On exhaustion the error names the kind that slept longest (ignoring excluded kinds),
//!   since that kind, not the last one, is why the operation gave up.

mod budget;
mod kind;

use std::fmt;
use std::time::Duration;

pub use budget::*;
pub use kind::{
    BackoffConfig, BackoffKind, EXCLUDED_SLEEP_LIMIT_MS, ErrorClass, Jitter, MIN_BASE_MS,
};

use crate::rand::Rng;
use crate::time::Time;

/// The default base of [`BackoffKind::TxnLockFast`], in milliseconds.
pub const DEFAULT_LOCK_FAST_BASE_MS: u64 = 10;
/// The default factor applied to budgets given to [`Backoffer::with_vars`].
pub const DEFAULT_BUDGET_WEIGHT: u64 = 2;
/// How many of the most recent causes a backoffer keeps for its exhaustion error.
pub const MAX_RECORDED_ERRORS: usize = 3;

/// Session-level tuning of backoff (client-go's `kv.Variables`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackoffVars {
    /// The base of [`BackoffKind::TxnLockFast`], in milliseconds.
    pub lock_fast_base_ms: u64,
    /// The factor by which [`Backoffer::with_vars`] multiplies a budget; 0 behaves as 1.
    pub budget_weight: u64,
}

impl Default for BackoffVars {
    fn default() -> Self {
        Self {
            lock_fast_base_ms: DEFAULT_LOCK_FAST_BASE_MS,
            budget_weight: DEFAULT_BUDGET_WEIGHT,
        }
    }
}

impl BackoffVars {
    /// `budget_ms` scaled by the weight, unless it is 0 (unlimited) or the product would pass
    /// `i32::MAX` (client-go keeps the budget unweighted then).
    pub fn weighted_budget_ms(&self, budget_ms: u64) -> u64 {
        let weight = self.budget_weight.max(1);
        if budget_ms > 0 && i32::MAX as u64 / weight >= budget_ms {
            budget_ms * weight
        } else {
            budget_ms
        }
    }
}

/// One cause of a backoff, kept for the exhaustion error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedError {
    /// The cause, rendered with `Display`.
    pub reason: String,
    /// When it happened, if the caller said (the `next_deadline*` methods do).
    pub at: Option<Time>,
}

impl fmt::Display for RecordedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some(at) => write!(f, "{} at {at}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// Why a backoffer refused to grant another wait.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackoffError {
    /// The budget is spent; the operation should fail with
    /// [`BackoffExhausted::error_class`].
    #[error(transparent)]
    Exhausted(Box<BackoffExhausted>),
    /// The backoffer was built with [`Backoffer::noop`]: every failure is final.
    #[error("{kind} backoff is disabled: {cause}")]
    Disabled {
        /// The kind that was asked for.
        kind: BackoffKind,
        /// The failure that asked for it.
        cause: String,
    },
}

impl BackoffError {
    /// The user-facing error the operation should surface.
    pub fn error_class(&self) -> ErrorClass {
        match self {
            Self::Exhausted(exhausted) => exhausted.error_class(),
            Self::Disabled { kind, .. } => kind.error_class(),
        }
    }
}

/// The details of a spent budget: what was asked for, what was slept, and the last causes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{kind} backoff exceeded its budget of {budget_ms}ms: slept {total_sleep_ms}ms \
     ({excluded_sleep_ms}ms excluded) over {total_attempts} attempts [{}]{}; \
     budget spent: {budget_spent}, excluded limit spent: {excluded_limit_spent}; \
     cause: {cause}; last errors: [{}]",
    detail_list(attempts), longest_text(*longest), error_list(errors)
)]
pub struct BackoffExhausted {
    /// The kind whose wait was refused.
    pub kind: BackoffKind,
    /// The failure that asked for that wait.
    pub cause: String,
    /// The kind with the most non-excluded sleep and that sleep in milliseconds: the real
    /// reason the operation gave up.
    pub longest: Option<(BackoffKind, u64)>,
    /// The (weighted) budget, in milliseconds.
    pub budget_ms: u64,
    /// All sleep granted so far, in milliseconds, excluded kinds included.
    pub total_sleep_ms: u64,
    /// The part of `total_sleep_ms` that did not count against the budget.
    pub excluded_sleep_ms: u64,
    /// Waits granted so far, all kinds together.
    pub total_attempts: u32,
    /// Waits granted per kind, for the kinds that had any, in kind order.
    pub attempts: Vec<(BackoffKind, u32)>,
    /// Whether the counted sleep reached the budget.
    pub budget_spent: bool,
    /// Whether the excluded sleep passed its own limit.
    pub excluded_limit_spent: bool,
    /// The last causes recorded, oldest first (at most [`MAX_RECORDED_ERRORS`]).
    pub errors: Vec<RecordedError>,
}

impl BackoffExhausted {
    /// The kind to blame: the longest sleeper, or the refused kind when nothing counted slept.
    pub fn main_kind(&self) -> BackoffKind {
        self.longest.map_or(self.kind, |(kind, _)| kind)
    }

    /// The user-facing error of [`BackoffExhausted::main_kind`].
    pub fn error_class(&self) -> ErrorClass {
        self.main_kind().error_class()
    }
}

/// One operation's backoff state: budget, sleep so far, per-kind schedules and counts, and
/// the last few causes.
///
/// `Clone` copies everything, schedules included; [`Backoffer::fork`] is client-go's
/// `Clone`/`Fork`, which keeps the totals but restarts every kind's exponent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoffer {
    budget_ms: u64,
    total_sleep_ms: u64,
    excluded_sleep_ms: u64,
    excluded_limit_ms: u64,
    vars: BackoffVars,
    disabled: bool,
    schedules: [Option<Schedule>; KINDS],
    attempts: [u32; KINDS],
    slept_ms: [u64; KINDS],
    errors: Vec<RecordedError>,
    errors_seen: usize,
}

const KINDS: usize = BackoffKind::ALL.len();

/// Where one kind's exponential schedule stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Schedule {
    attempt: u32,
    last_sleep_ms: u64,
}

impl Backoffer {
    /// A backoffer with exactly `budget_ms` of total sleep (0: unlimited) and default vars
    /// (client-go's `NewBackoffer`).
    pub fn new(budget_ms: u64) -> Self {
        Self {
            budget_ms,
            total_sleep_ms: 0,
            excluded_sleep_ms: 0,
            excluded_limit_ms: EXCLUDED_SLEEP_LIMIT_MS,
            vars: BackoffVars::default(),
            disabled: false,
            schedules: [None; KINDS],
            attempts: [0; KINDS],
            slept_ms: [0; KINDS],
            errors: Vec::with_capacity(MAX_RECORDED_ERRORS),
            errors_seen: 0,
        }
    }

    /// A backoffer whose budget is `max_backoff_ms` weighted by `vars`
    /// (client-go's `NewBackofferWithVars`; the constants in this module are meant for it).
    pub fn with_vars(max_backoff_ms: u64, vars: BackoffVars) -> Self {
        Self {
            budget_ms: vars.weighted_budget_ms(max_backoff_ms),
            vars,
            ..Self::new(0)
        }
    }

    /// A backoffer that grants no wait: every request returns [`BackoffError::Disabled`].
    pub fn noop() -> Self {
        Self {
            disabled: true,
            ..Self::new(0)
        }
    }

    /// Records a failure of `kind` and returns how long to wait before retrying.
    ///
    /// Errors with [`BackoffError::Exhausted`] when the budget was already spent (the failure
    /// is then not recorded), or [`BackoffError::Disabled`] for a no-op backoffer.
    pub fn next_sleep(
        &mut self,
        kind: BackoffKind,
        rng: &mut Rng,
        cause: impl fmt::Display,
    ) -> Result<Duration, BackoffError> {
        self.backoff(kind, None, rng, &cause, None)
            .map(Duration::from_millis)
    }

    /// Like [`Backoffer::next_sleep`], but never waits longer than `max_sleep_ms`; the
    /// schedule still advances as if the full wait had been taken (client-go's
    /// `BackoffWithCfgAndMaxSleep`, used to wait no longer than a lock's remaining TTL).
    pub fn next_sleep_at_most(
        &mut self,
        kind: BackoffKind,
        max_sleep_ms: u64,
        rng: &mut Rng,
        cause: impl fmt::Display,
    ) -> Result<Duration, BackoffError> {
        self.backoff(kind, Some(max_sleep_ms), rng, &cause, None)
            .map(Duration::from_millis)
    }

    /// Records a failure of `kind` seen at `now` and returns when to retry.
    ///
    /// Errors as [`Backoffer::next_sleep`].
    pub fn next_deadline(
        &mut self,
        now: Time,
        kind: BackoffKind,
        rng: &mut Rng,
        cause: impl fmt::Display,
    ) -> Result<Time, BackoffError> {
        let sleep_ms = self.backoff(kind, None, rng, &cause, Some(now))?;
        Ok(now + Duration::from_millis(sleep_ms))
    }

    /// [`Backoffer::next_deadline`] with the cap of [`Backoffer::next_sleep_at_most`].
    pub fn next_deadline_at_most(
        &mut self,
        now: Time,
        kind: BackoffKind,
        max_sleep_ms: u64,
        rng: &mut Rng,
        cause: impl fmt::Display,
    ) -> Result<Time, BackoffError> {
        let sleep_ms = self.backoff(kind, Some(max_sleep_ms), rng, &cause, Some(now))?;
        Ok(now + Duration::from_millis(sleep_ms))
    }

    /// A child for a sub-task (one batch, one region): it starts from this backoffer's
    /// totals, counts and causes, and shares its budget, but every kind's exponent restarts.
    /// Fold it back with [`Backoffer::update_using_forked`].
    pub fn fork(&self) -> Self {
        Self {
            schedules: [None; KINDS],
            ..self.clone()
        }
    }

    /// Takes over a forked child's totals, counts and causes (the child that finished last or
    /// failed), keeping this backoffer's budget and schedules.
    pub fn update_using_forked(&mut self, forked: Self) {
        self.total_sleep_ms = forked.total_sleep_ms;
        self.excluded_sleep_ms = forked.excluded_sleep_ms;
        self.attempts = forked.attempts;
        self.slept_ms = forked.slept_ms;
        self.errors = forked.errors;
        self.errors_seen = forked.errors_seen;
    }

    /// Forgets the sleep so far and restarts every kind's exponent, keeping the counts and
    /// causes (for the next stage of a multi-stage operation).
    pub fn reset(&mut self) {
        self.schedules = [None; KINDS];
        self.total_sleep_ms = 0;
        self.excluded_sleep_ms = 0;
    }

    /// [`Backoffer::reset`] with a new budget, weighted by this backoffer's vars.
    pub fn reset_budget(&mut self, max_backoff_ms: u64) {
        self.reset();
        self.budget_ms = self.vars.weighted_budget_ms(max_backoff_ms);
    }

    /// The total budget in milliseconds (0: unlimited).
    pub fn budget_ms(&self) -> u64 {
        self.budget_ms
    }

    /// All sleep granted so far, in milliseconds.
    pub fn total_sleep_ms(&self) -> u64 {
        self.total_sleep_ms
    }

    /// All sleep granted so far.
    pub fn total_sleep(&self) -> Duration {
        Duration::from_millis(self.total_sleep_ms)
    }

    /// The part of the sleep that does not count against the budget, in milliseconds.
    pub fn excluded_sleep_ms(&self) -> u64 {
        self.excluded_sleep_ms
    }

    /// How many waits of `kind` were granted.
    pub fn attempts(&self, kind: BackoffKind) -> u32 {
        self.attempts[kind.index()]
    }

    /// How many waits were granted, all kinds together.
    pub fn total_attempts(&self) -> u32 {
        self.attempts
            .iter()
            .fold(0, |sum, n| sum.saturating_add(*n))
    }

    /// How long `kind` has slept in total, in milliseconds.
    pub fn slept_ms(&self, kind: BackoffKind) -> u64 {
        self.slept_ms[kind.index()]
    }

    /// The kind with the most sleep that counts against the budget, and that sleep in
    /// milliseconds; the first such kind in [`BackoffKind::ALL`] order on a tie.
    pub fn longest_sleep(&self) -> Option<(BackoffKind, u64)> {
        BackoffKind::ALL
            .iter()
            .filter(|kind| kind.excluded_sleep_limit_ms().is_none())
            .map(|kind| (*kind, self.slept_ms[kind.index()]))
            .filter(|(_, slept_ms)| *slept_ms > 0)
            .fold(None, |best, candidate| match best {
                Some((_, best_ms)) if best_ms >= candidate.1 => best,
                _ => Some(candidate),
            })
    }

    /// How many causes were recorded, including those no longer kept.
    pub fn errors_seen(&self) -> usize {
        self.errors_seen
    }

    /// The last causes recorded, oldest first (at most [`MAX_RECORDED_ERRORS`]).
    pub fn latest_errors(&self) -> &[RecordedError] {
        &self.errors
    }

    /// The vars this backoffer runs with.
    pub fn vars(&self) -> BackoffVars {
        self.vars
    }

    fn backoff(
        &mut self,
        kind: BackoffKind,
        max_sleep_ms: Option<u64>,
        rng: &mut Rng,
        cause: &dyn fmt::Display,
        at: Option<Time>,
    ) -> Result<u64, BackoffError> {
        if self.disabled {
            return Err(BackoffError::Disabled {
                kind,
                cause: cause.to_string(),
            });
        }
        let budget_spent =
            self.total_sleep_ms.saturating_sub(self.excluded_sleep_ms) >= self.budget_ms;
        let excluded_limit_spent = kind.excluded_sleep_limit_ms().is_some()
            && self.excluded_sleep_ms >= self.excluded_limit_ms
            && self.excluded_sleep_ms >= self.budget_ms;
        if self.budget_ms > 0 && (budget_spent || excluded_limit_spent) {
            return Err(BackoffError::Exhausted(Box::new(self.exhausted(
                kind,
                cause.to_string(),
                budget_spent,
                excluded_limit_spent,
            ))));
        }
        self.record_error(RecordedError {
            reason: cause.to_string(),
            at,
        });

        let config = self.effective_config(kind);
        let schedule = self.schedules[kind.index()].get_or_insert(Schedule {
            attempt: 0,
            last_sleep_ms: config.base_ms.max(MIN_BASE_MS),
        });
        let sleep_ms = config.sleep_ms(schedule.attempt, schedule.last_sleep_ms, rng);
        schedule.attempt = schedule.attempt.saturating_add(1);
        schedule.last_sleep_ms = sleep_ms;
        let granted_ms = max_sleep_ms.map_or(sleep_ms, |max| sleep_ms.min(max));

        self.total_sleep_ms = self.total_sleep_ms.saturating_add(granted_ms);
        if kind.excluded_sleep_limit_ms().is_some() {
            self.excluded_sleep_ms = self.excluded_sleep_ms.saturating_add(granted_ms);
        }
        let slot = kind.index();
        self.slept_ms[slot] = self.slept_ms[slot].saturating_add(granted_ms);
        self.attempts[slot] = self.attempts[slot].saturating_add(1);
        Ok(granted_ms)
    }

    fn effective_config(&self, kind: BackoffKind) -> BackoffConfig {
        let mut config = kind.config();
        if kind == BackoffKind::TxnLockFast {
            config.base_ms = self.vars.lock_fast_base_ms;
        }
        config
    }

    fn record_error(&mut self, error: RecordedError) {
        if self.errors.len() == MAX_RECORDED_ERRORS {
            self.errors.remove(0);
        }
        self.errors.push(error);
        self.errors_seen = self.errors_seen.saturating_add(1);
    }

    fn exhausted(
        &self,
        kind: BackoffKind,
        cause: String,
        budget_spent: bool,
        excluded_limit_spent: bool,
    ) -> BackoffExhausted {
        BackoffExhausted {
            kind,
            cause,
            longest: self.longest_sleep(),
            budget_ms: self.budget_ms,
            total_sleep_ms: self.total_sleep_ms,
            excluded_sleep_ms: self.excluded_sleep_ms,
            total_attempts: self.total_attempts(),
            attempts: BackoffKind::ALL
                .iter()
                .map(|kind| (*kind, self.attempts[kind.index()]))
                .filter(|(_, n)| *n > 0)
                .collect(),
            budget_spent,
            excluded_limit_spent,
            errors: self.errors.clone(),
        }
    }

    #[cfg(test)]
    fn set_excluded_limit_ms(&mut self, limit_ms: u64) {
        self.excluded_limit_ms = limit_ms;
    }
}

/// Empty before the first wait; otherwise `backoff(<total>ms <kind>:<attempts>, ...)`.
impl fmt::Display for Backoffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.total_sleep_ms == 0 {
            return Ok(());
        }
        write!(f, "backoff({}ms", self.total_sleep_ms)?;
        let mut separator = " ";
        for kind in BackoffKind::ALL {
            let attempts = self.attempts[kind.index()];
            if attempts > 0 {
                write!(f, "{separator}{kind}:{attempts}")?;
                separator = ", ";
            }
        }
        f.write_str(")")
    }
}

fn detail_list(attempts: &[(BackoffKind, u32)]) -> String {
    attempts
        .iter()
        .map(|(kind, n)| format!("{kind}:{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn longest_text(longest: Option<(BackoffKind, u64)>) -> String {
    longest.map_or_else(String::new, |(kind, ms)| {
        format!("; longest sleep: {kind} {ms}ms")
    })
}

fn error_list(errors: &[RecordedError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests;
