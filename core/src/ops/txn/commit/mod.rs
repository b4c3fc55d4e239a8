//! Committing a transaction: two-phase commit, async commit and 1PC, as client-go's
//! `twoPhaseCommitter.execute` does them.
//!
//! ```text
//!  (async commit or 1PC, linearizable) MinCommitTs ──┐
//!                                                    ▼
//!  Prewriting ◄──── Resolving (locks met) ◄──── LockBackoff
//!     │  all prewritten
//!     ├─ 1PC answered a commit ts ─────────────────────────────► Done(1PC)
//!     ├─ async commit kept ── commit every key in background ──► Done(async)
//!     ▼
//!  CommitTs (TSO, waiting past commit_wait_until_tso, upper bound check) ──► CommittingPrimary
//!     ▲                                                                          │ commit ts expired
//!     └──────────────────────── RenewCommitTs ◄──────────────────────────────────┘
//!                                                                                │ primary committed
//!                                                        secondaries in background ──► Done(2PC)
//! ```
//!
//! A failure before the primary is committed rolls back what was prewritten (in the
//! background) and reports the error, unless the outcome is unknown: a lost reply to the
//! primary's commit, or to any async-commit or 1PC prewrite, reports
//! [`Error::Undetermined`] and leaves the locks for resolvers to settle.
//!
//! Two options change the path (client-go's `SetCommitTSUpperBoundCheck` and
//! `SetPrewriteEncounterLockPolicy`): an upper bound check on the commit timestamp rules
//! out async commit and 1PC and, when the first two-phase commit timestamp fails it, rolls
//! back instead of committing ([`Error::CommitTsUpperBound`]); the no-resolve lock policy
//! turns every lock a prewrite meets into a write conflict, with no `Resolving` step.
//!
//! Large transactions keep their primary lock alive with a [`heartbeat::KeepAlive`] child,
//! which ends with the commit.

mod batch;
pub(crate) mod heartbeat;
pub(crate) mod keys;
pub(crate) mod presplit;
mod prewrite;
#[cfg(test)]
mod tests;

use std::time::Duration;

use bytes::Bytes;
use smallvec::SmallVec;
use tikv_proto::kvrpcpb;

#[cfg(any(test, feature = "testing"))]
pub use crate::txn::commit::CommitKnobs;
pub use crate::txn::commit::{
    Assertion, AssertionLevel, CommitMode, CommitOptions, CommitOutcome, CommitRequest,
    CommitTsUpperBoundCheck, DiskFullOpt, Mutation, MutationOp, PrewriteLockPolicy,
};

use super::resolve::{ResolveLocks, ResolveParams};
use crate::backoff::{BackoffKind, Backoffer};
use crate::command::Output;
use crate::config::Config;
use crate::error::Error;
use crate::op::{Cx, Next, Operation};
use crate::ops::keys::KeySpace;
use crate::oracle::Timestamp;
use crate::outbox::{OpId, Reply, RequestId};
use crate::sender::dispatch::{Dispatch, DispatchInput, Progress};
use crate::time::Time;
use heartbeat::{Heartbeats, KeepAlive};
use keys::{FinishKeys, KeysAction, KeysPlan};
use presplit::{PreSplit, Thresholds};
use prewrite::{PrewritePlan, PrewriteShape};

/// Total backoff of the prewrites (client-go `PrewriteMaxBackoff`).
const PREWRITE_BUDGET: Duration = Duration::from_secs(40);
/// Total backoff of the primary's commit (client-go `CommitMaxBackoff`).
const COMMIT_BUDGET: Duration = Duration::from_secs(40);
/// Total backoff of committing the secondaries (client-go `CommitSecondaryMaxBackoff`).
const COMMIT_SECONDARY_BUDGET: Duration = Duration::from_secs(41);
/// Total backoff of rolling back a failed commit (client-go `cleanupMaxBackoff`).
const CLEANUP_BUDGET: Duration = Duration::from_secs(20);
/// The oldest a transaction may be when it commits (client-go `MaxTxnTimeUse`, 24 h).
const MAX_TXN_TIME_USE_MS: u64 = 24 * 60 * 60 * 1000;
/// Lock TTL per square root of MiB written (client-go `ttlFactor`).
const TTL_FACTOR_MS: f64 = 6000.0;

/// The lock TTL of a transaction of `size` bytes that has run for `elapsed_ms` (client-go
/// `txnLockTTL`): the default for small ones, growing with the square root of the size for
/// large ones up to the managed TTL, plus the time the transaction already took.
pub(crate) fn lock_ttl_ms(config: &Config, size: u64, elapsed_ms: u64) -> u64 {
    let default = millis(config.default_lock_ttl);
    let mut ttl = default;
    if size >= config.txn_commit_batch_size as u64 {
        #[expect(
            clippy::cast_precision_loss,
            reason = "a transaction's size is far below 2^52 bytes"
        )]
        let mib = size as f64 / (1024.0 * 1024.0);
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a positive value clamped to the managed TTL just below"
        )]
        let grown = (TTL_FACTOR_MS * mib.sqrt()) as u64;
        ttl = grown.clamp(default, millis(config.managed_lock_ttl).max(default));
    }
    ttl.saturating_add(elapsed_ms)
}

/// The lock TTL a test fixed, if any.
fn knob_lock_ttl(options: &CommitOptions) -> Option<u64> {
    #[cfg(any(test, feature = "testing"))]
    {
        options.knobs.lock_ttl_ms
    }
    #[cfg(not(any(test, feature = "testing")))]
    {
        let _ = options;
        None
    }
}

/// The backoff budget of the prewrites or the primary's commit: `default`, unless a test
/// lowered it.
fn knob_budget(options: &CommitOptions, default: Duration) -> Duration {
    #[cfg(any(test, feature = "testing"))]
    {
        options
            .knobs
            .max_backoff_ms
            .map_or(default, Duration::from_millis)
    }
    #[cfg(not(any(test, feature = "testing")))]
    {
        let _ = options;
        default
    }
}

/// When the commit pre-splits its regions: client-go's thresholds, unless a test lowered
/// them.
fn pre_split_thresholds(options: &CommitOptions) -> Thresholds {
    let defaults = Thresholds::default();
    #[cfg(any(test, feature = "testing"))]
    {
        Thresholds {
            keys: options
                .knobs
                .pre_split_detect_threshold
                .unwrap_or(defaults.keys),
            size: options
                .knobs
                .pre_split_size_threshold
                .unwrap_or(defaults.size),
        }
    }
    #[cfg(not(any(test, feature = "testing")))]
    {
        let _ = options;
        defaults
    }
}

/// Whether test lever `$field` of `$options` is set (never, without the `testing`
/// feature).
macro_rules! knob {
    ($options:expr, $field:ident) => {{
        #[cfg(any(test, feature = "testing"))]
        let set = $options.knobs.$field;
        #[cfg(not(any(test, feature = "testing")))]
        let set = {
            let _ = &$options;
            false
        };
        set
    }};
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Where a commit stands.
#[derive(Debug)]
enum Stage {
    /// Splitting regions that would take too many of the keys (a [`PreSplit`] child).
    PreSplitting(OpId),
    /// Waiting for a timestamp.
    Timestamp(RequestId, TsPurpose),
    /// Waiting for TSO to pass `commit_wait_until_tso` before asking again.
    TimestampLag(TsPurpose),
    /// Prewrites out.
    Prewriting,
    /// Resolving locks the prewrites met.
    Resolving(OpId),
    /// Backing off before prewriting the blocked keys again.
    LockBackoff,
    /// Committing the primary's batch.
    CommittingPrimary,
}

/// What a timestamp is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TsPurpose {
    /// The floor of an async-commit or 1PC commit timestamp (linearizability).
    MinCommit,
    /// The two-phase commit timestamp.
    Commit,
    /// A new commit timestamp after the primary's lock rejected the old one.
    Renew,
}

/// The commit of one transaction; finishes with [`Output::Committed`].
#[derive(Debug)]
pub(crate) struct Committer {
    space: KeySpace,
    start_ts: Timestamp,
    options: CommitOptions,
    /// Request keys of the mutations, sorted.
    keys: Vec<Bytes>,
    /// Their routing keys, in the same order.
    routing: Vec<Bytes>,
    primary: Bytes,
    /// Items that are committed (all but prewrite-only checks).
    committed_items: Vec<usize>,
    size: u64,
    tried_async: bool,
    tried_one_pc: bool,
    stage: Stage,
    prewrite: Dispatch,
    plan: PrewritePlan,
    /// The primary's commit, once it started.
    commit: Option<(Dispatch, KeysPlan)>,
    /// The pre-split to run first, for a commit with enough keys to need one.
    pre_split: Option<Box<PreSplit>>,
    /// Backs off live locks met by prewrites.
    lock_backoff: Backoffer,
    /// Backs off waiting for TSO to pass `commit_wait_until_tso`.
    lag_backoff: Option<Backoffer>,
    keep_alive: Option<OpId>,
    context: kvrpcpb::Context,
    batch_limit: usize,
    /// Most requests one step (prewrite, commit, rollback) has out at once.
    concurrency: usize,
    timeout: Duration,
    max_execution_ms: u64,
    /// The caller stopped waiting: a two-phase commit not yet deciding rolls back instead.
    abandoned: bool,
    /// A 1PC prewrite's reply was lost (the transport error): that attempt may have
    /// committed the transaction, at a timestamp only it knew.
    one_pc_reply_lost: Option<String>,
}

impl Committer {
    /// The commit of `request` in `space`, at machine time `now`.
    ///
    /// Errors with [`Error::InvalidArgument`] when the mutations are empty, unsorted or
    /// repeat a key, a key is empty, the primary is not among them, or the start
    /// timestamp is not one TSO could have given.
    pub(crate) fn new(
        request: CommitRequest,
        space: &KeySpace,
        config: &Config,
        now: Time,
    ) -> Result<Self, Error> {
        let CommitRequest {
            start_ts,
            begun_at,
            mutations,
            primary,
            size,
            options,
        } = request;
        validate(start_ts, &mutations, &primary)?;
        let key_total: u64 = mutations.iter().map(|m| m.key.len() as u64).sum();
        // Existence checks alone decide nothing: they are prewritten in two phases and
        // nothing is committed after them.
        let checks_only = mutations.iter().all(|m| m.op == MutationOp::CheckNotExists);
        // A commit timestamp to check must be one the client chooses: async commit and
        // 1PC take theirs from the stores, so they are not tried (client-go
        // `checkAsyncCommit`, `checkOnePC`).
        let bounded = options.commit_ts_upper_bound_check.is_some();
        let tried_async = options.async_commit
            && !checks_only
            && !bounded
            && mutations.len() <= config.async_commit_keys_limit
            && key_total <= config.async_commit_total_key_size_limit;
        let tried_one_pc = options.try_one_pc && !checks_only && !bounded;
        let elapsed_ms = millis(now.saturating_since(begun_at));
        let max_execution_ms = millis(config.max_write_execution);
        let context = options.context(max_execution_ms);
        // The commit may land no later than the transaction's age plus the safe window
        // past its start (client-go `calculateMaxCommitTS`).
        let max_commit_ts = start_ts
            .version()
            .saturating_add(Timestamp::compose(elapsed_ms, 0).version())
            .saturating_add(
                Timestamp::compose(millis(config.async_commit_safe_window), 0).version(),
            );
        let mut keys = Vec::with_capacity(mutations.len());
        let mut wire = Vec::with_capacity(mutations.len());
        let mut actions = Vec::with_capacity(mutations.len());
        for mutation in &mutations {
            let key = space.request_key(&mutation.key);
            wire.push(mutation.to_proto(key.clone()));
            actions.push(mutation.pessimistic_action() as i32);
            keys.push(key);
        }
        let routing: Vec<Bytes> = space.routing_keys(&keys);
        let primary = space.request_key(&primary);
        let mut committed_items = Vec::with_capacity(mutations.len());
        committed_items.extend(
            mutations
                .iter()
                .enumerate()
                .filter(|(_, m)| m.op != MutationOp::CheckNotExists)
                .map(|(i, _)| i),
        );
        let pessimistic = mutations.iter().any(|m| m.pessimistic);
        let shape = PrewriteShape {
            start_ts,
            primary: primary.clone(),
            lock_ttl: knob_lock_ttl(&options)
                .unwrap_or_else(|| lock_ttl_ms(config, size, elapsed_ms)),
            max_commit_ts,
            assertion_level: options.assertion_level_proto(),
            context: context.clone(),
            batch_limit: config.txn_commit_batch_size,
            pessimistic,
            for_update_ts: 0,
            no_resolve: options.prewrite_lock_policy == PrewriteLockPolicy::NoResolve,
        };
        let plan = PrewritePlan::new(shape, wire, actions, tried_async, tried_one_pc, 0);
        let prewrite_budget = knob_budget(&options, PREWRITE_BUDGET);
        let thresholds = pre_split_thresholds(&options);
        // Fewer keys than the threshold cannot put that many in one region.
        let pre_split = (mutations.len() >= thresholds.keys).then(|| {
            Box::new(PreSplit::new(
                space.clone(),
                thresholds,
                keys.clone(),
                routing.iter().cloned().collect(),
                mutations
                    .iter()
                    .map(|m| (m.key.len() + m.value.len()) as u64)
                    .collect(),
                prewrite_budget,
                config.read_timeout_short,
            ))
        });
        let prewrite = Dispatch::new(
            routing.iter().cloned().collect(),
            false,
            prewrite_budget,
            config.read_timeout_short,
        )
        .tracking_undetermined(!tried_async && !tried_one_pc)
        .with_max_inflight(config.committer_concurrency);
        Ok(Self {
            space: space.clone(),
            start_ts,
            options,
            keys,
            routing,
            primary,
            committed_items,
            size,
            tried_async,
            tried_one_pc,
            stage: Stage::Prewriting,
            prewrite,
            plan,
            commit: None,
            pre_split,
            lock_backoff: Backoffer::new(millis(prewrite_budget)),
            lag_backoff: None,
            keep_alive: None,
            context,
            batch_limit: config.txn_commit_batch_size,
            concurrency: config.committer_concurrency,
            timeout: config.read_timeout_short,
            max_execution_ms,
            abandoned: false,
            one_pc_reply_lost: None,
        })
    }

    fn outcome(&self, commit_ts: Timestamp, mode: CommitMode) -> Next {
        Next::Done(Ok(Output::Committed(CommitOutcome {
            commit_ts,
            mode,
            async_commit_fallback: self.tried_async && mode != CommitMode::AsyncCommit,
            one_pc_fallback: self.tried_one_pc && mode != CommitMode::OnePc,
        })))
    }

    /// A timestamp answered for `purpose`: checks it against `commit_wait_until_tso`,
    /// waiting for TSO to pass it when needed (client-go `GetTimestampForCommit`).
    /// `Ok(None)` means a wait was armed.
    fn commit_wait(&mut self, cx: &mut Cx<'_>, ts: Timestamp) -> Result<Option<Timestamp>, Error> {
        let Some(wait_until) = self.options.commit_wait_until_tso else {
            return Ok(Some(ts));
        };
        if ts > wait_until {
            return Ok(Some(ts));
        }
        let timeout = self.options.commit_wait_until_tso_timeout;
        let lag_ms = wait_until.physical_ms().saturating_sub(ts.physical_ms());
        if timeout.is_zero() || Duration::from_millis(lag_ms) > timeout {
            return Err(Error::CommitTsLag {
                wait_until,
                tso: ts,
            });
        }
        let backoff = self
            .lag_backoff
            .get_or_insert_with(|| Backoffer::new(millis(timeout)));
        let sleep = backoff
            .next_sleep(
                BackoffKind::CommitTsLag,
                cx.rng(),
                format_args!("TSO {ts} lags the commit wait {wait_until}"),
            )
            .map_err(|_| Error::CommitTsLag {
                wait_until,
                tso: ts,
            })?;
        cx.wake_at(cx.now() + sleep);
        Ok(None)
    }

    fn start_prewrite(mut self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        self.stage = Stage::Prewriting;
        self.drive_prewrite(cx, DispatchInput::Start)
    }

    fn drive_prewrite(mut self: Box<Self>, cx: &mut Cx<'_>, input: DispatchInput) -> Next {
        let one_pc = self.plan.one_pc;
        let progress = self.prewrite.handle(cx, input, &mut self.plan);
        if one_pc && self.one_pc_reply_lost.is_none() {
            // 1PC sends one request, and a retry is built only after a backoff: a transport
            // failure seen while 1PC is still on is the 1PC request's.
            self.one_pc_reply_lost = self.prewrite.undetermined_error().map(ToString::to_string);
        }
        self.maybe_keep_alive(cx);
        match progress {
            Progress::Pending => Next::Pending(self),
            Progress::Failed(err) => self.prewrite_failed(cx, err),
            Progress::Done => self.all_prewritten(cx),
        }
    }

    /// Starts the TTL manager once the primary is prewritten, for a transaction large
    /// enough to need one (client-go starts it from the primary batch's success).
    fn maybe_keep_alive(&mut self, cx: &mut Cx<'_>) {
        if self.keep_alive.is_some()
            || !self.plan.primary_done
            || self.plan.one_pc_commit_ts != 0
            || self.size <= cx.config().ttl_refreshed_txn_size
        {
            return;
        }
        let config = cx.config();
        let beats = Heartbeats {
            primary: self.primary.clone(),
            routing: self
                .keys
                .iter()
                .position(|key| *key == self.primary)
                .and_then(|i| self.routing.get(i).cloned())
                .unwrap_or_default(),
            start_ts: self.start_ts,
            context: self.context.clone(),
            managed_ttl_ms: millis(config.managed_lock_ttl),
            max_ttl_ms: millis(config.max_txn_ttl),
            timeout: config.read_timeout_short,
        };
        self.keep_alive = Some(cx.spawn_child(Box::new(KeepAlive::new(beats))));
    }

    /// Every prewrite was answered: resolve what blocked some, or go on.
    fn all_prewritten(mut self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        if !self.plan.blocked.is_empty() {
            let blocked = std::mem::take(&mut self.plan.blocked);
            let locks = std::mem::take(&mut self.plan.locks);
            let config = cx.config();
            let params = ResolveParams {
                caller_start_ts: self.start_ts,
                for_read: false,
                lite: false,
                pessimistic_region_resolve: true,
                space: self.space.clone(),
                timeout: config.read_timeout_short,
                budget: PREWRITE_BUDGET,
                max_execution_ms: self.max_execution_ms,
            };
            self.prewrite.retry(&blocked);
            let child = cx.spawn_child(Box::new(ResolveLocks::new(params, locks)));
            self.stage = Stage::Resolving(child);
            return Next::Pending(self);
        }
        if self.plan.one_pc {
            if self.plan.one_pc_commit_ts == 0 {
                return Next::Done(Err(Error::UnexpectedResponse(
                    "1PC prewrite succeeded without a commit timestamp".to_owned(),
                )));
            }
            let commit_ts = Timestamp::from_version(self.plan.one_pc_commit_ts);
            return self.outcome(commit_ts, CommitMode::OnePc);
        }
        if let Some(lost) = self.one_pc_reply_lost.take() {
            // The retry fell back to two phases (the region split meanwhile), but the lost
            // 1PC attempt may have committed: TiKV then takes the two-phase prewrite and
            // commit as repeats and answers success, and the commit timestamp reported would
            // not be the one the data carries. Leave the locks, if any, to resolvers.
            return Next::Done(Err(Error::Undetermined(format!(
                "a 1PC prewrite's reply was lost ({lost}) and the commit fell back to two \
                 phases: the 1PC attempt may have committed"
            ))));
        }
        if self.plan.async_commit {
            // Decided: every key is prewritten, so the transaction is committed at the
            // largest min_commit_ts any store answered. Commit the keys in the background.
            let commit_ts = Timestamp::from_version(
                self.plan
                    .max_answered_min_commit_ts
                    .max(self.plan.min_commit_ts),
            );
            self.finish_keys(
                cx,
                KeysAction::Commit {
                    commit_ts,
                    async_commit: true,
                },
                &self.committed_items,
                false,
            );
            return self.outcome(commit_ts, CommitMode::AsyncCommit);
        }
        if knob!(self.options, stop_after_prewrite) || self.committed_items.is_empty() {
            // Nothing to commit (only existence checks were prewritten), or a test stops
            // here: no commit timestamp.
            return self.outcome(Timestamp::from_version(0), CommitMode::TwoPhase);
        }
        if self.abandoned {
            // Nobody waits for the answer and nothing is decided yet: undo.
            self.roll_back(cx);
            return Next::Done(Ok(Output::Unit));
        }
        self.ask_timestamp(cx, TsPurpose::Commit)
    }

    fn ask_timestamp(mut self: Box<Self>, cx: &mut Cx<'_>, purpose: TsPurpose) -> Next {
        let call = cx.timestamp();
        self.stage = Stage::Timestamp(call, purpose);
        Next::Pending(self)
    }

    fn prewrite_failed(mut self: Box<Self>, cx: &mut Cx<'_>, err: Error) -> Next {
        let decisive = self.plan.async_commit || self.plan.one_pc;
        if decisive {
            if let Some(lost) = self.prewrite.undetermined_error() {
                // An async-commit or 1PC prewrite may have applied unseen: the
                // transaction may be committed.
                return Next::Done(Err(Error::Undetermined(format!(
                    "prewrite reply lost ({lost}); then: {err}"
                ))));
            }
            if err.is_undetermined() {
                return Next::Done(Err(err));
            }
        }
        if !self.plan.one_pc {
            // 1PC writes nothing when it fails; anything else left locks to remove.
            self.roll_back(cx);
        }
        Next::Done(Err(err))
    }

    /// Rolls back every key in the background, primary first.
    fn roll_back(&mut self, cx: &mut Cx<'_>) {
        if knob!(self.options, skip_cleanup) {
            return;
        }
        let all: Vec<usize> = (0..self.keys.len()).collect();
        self.finish_keys(cx, KeysAction::Rollback, &all, true);
    }

    fn finish_keys(
        &self,
        cx: &mut Cx<'_>,
        action: KeysAction,
        items: &[usize],
        primary_first: bool,
    ) {
        if items.is_empty() {
            return;
        }
        if matches!(action, KeysAction::Commit { .. }) && knob!(self.options, skip_secondaries) {
            return;
        }
        let keys: Vec<Bytes> = items
            .iter()
            .filter_map(|&i| self.keys.get(i).cloned())
            .collect();
        let routing: SmallVec<[Bytes; 1]> = items
            .iter()
            .filter_map(|&i| self.routing.get(i).cloned())
            .collect();
        let plan = KeysPlan::new(
            action,
            self.start_ts,
            self.primary.clone(),
            keys,
            self.context.clone(),
            self.batch_limit,
        );
        let budget = match action {
            KeysAction::Commit { .. } => COMMIT_SECONDARY_BUDGET,
            KeysAction::Rollback => CLEANUP_BUDGET,
        };
        cx.spawn_detached(Box::new(FinishKeys::new(
            plan,
            routing,
            primary_first,
            budget,
            self.timeout,
            self.concurrency,
        )));
    }

    /// The commit timestamp arrived: commit the primary's batch.
    fn commit_primary(mut self: Box<Self>, cx: &mut Cx<'_>, commit_ts: Timestamp) -> Next {
        if commit_ts
            .physical_ms()
            .saturating_sub(self.start_ts.physical_ms())
            > MAX_TXN_TIME_USE_MS
        {
            self.roll_back(cx);
            return Next::Done(Err(Error::TxnTooOld {
                start_ts: self.start_ts,
                commit_ts,
            }));
        }
        // Only this first commit timestamp is checked: one renewed after the primary's
        // lock refused it is not (client-go checks in `execute` only).
        let refused = self
            .options
            .commit_ts_upper_bound_check
            .as_ref()
            .is_some_and(|check| !check.allows(commit_ts));
        if refused {
            self.roll_back(cx);
            return Next::Done(Err(Error::CommitTsUpperBound {
                start_ts: self.start_ts,
                commit_ts,
            }));
        }
        let items = &self.committed_items;
        let mut plan = KeysPlan::new(
            KeysAction::Commit {
                commit_ts,
                async_commit: false,
            },
            self.start_ts,
            self.primary.clone(),
            items
                .iter()
                .filter_map(|&i| self.keys.get(i).cloned())
                .collect(),
            self.context.clone(),
            self.batch_limit,
        );
        plan.primary_only = true;
        let dispatch = Dispatch::new(
            items
                .iter()
                .filter_map(|&i| self.routing.get(i).cloned())
                .collect(),
            false,
            knob_budget(&self.options, COMMIT_BUDGET),
            self.timeout,
        )
        .tracking_undetermined(false)
        .with_max_inflight(self.concurrency);
        self.commit = Some((dispatch, plan));
        self.stage = Stage::CommittingPrimary;
        self.drive_commit(cx, DispatchInput::Start)
    }

    fn drive_commit(mut self: Box<Self>, cx: &mut Cx<'_>, input: DispatchInput) -> Next {
        let Some((dispatch, plan)) = self.commit.as_mut() else {
            return Next::Pending(self);
        };
        match dispatch.handle(cx, input, plan) {
            Progress::Pending => Next::Pending(self),
            Progress::Failed(err) => {
                if let Some(lost) = dispatch.undetermined_error() {
                    return Next::Done(Err(Error::Undetermined(format!(
                        "the primary's commit reply was lost ({lost}); then: {err}"
                    ))));
                }
                if err.is_undetermined() || plan.primary_done {
                    return Next::Done(Err(err));
                }
                self.roll_back(cx);
                Next::Done(Err(err))
            }
            Progress::Done => {
                if !plan.expired.is_empty() {
                    // The primary's lock asks for a later commit timestamp: get one.
                    let expired = std::mem::take(&mut plan.expired);
                    dispatch.retry(&expired);
                    return self.ask_timestamp(cx, TsPurpose::Renew);
                }
                let KeysAction::Commit { commit_ts, .. } = plan.action else {
                    return Next::Done(Err(Error::UnexpectedResponse(
                        "a commit plan that does not commit".to_owned(),
                    )));
                };
                // The plan's items index the committed keys.
                let deferred: Vec<usize> = std::mem::take(&mut plan.deferred)
                    .into_iter()
                    .filter_map(|i| self.committed_items.get(i).copied())
                    .collect();
                self.finish_keys(
                    cx,
                    KeysAction::Commit {
                        commit_ts,
                        async_commit: false,
                    },
                    &deferred,
                    false,
                );
                self.outcome(commit_ts, CommitMode::TwoPhase)
            }
        }
    }

    fn on_timestamp(
        mut self: Box<Self>,
        cx: &mut Cx<'_>,
        purpose: TsPurpose,
        result: Result<Timestamp, Error>,
    ) -> Next {
        let ts = match result.and_then(|ts| self.commit_wait(cx, ts)) {
            Ok(Some(ts)) => ts,
            Ok(None) => {
                self.stage = Stage::TimestampLag(purpose);
                return Next::Pending(self);
            }
            Err(err) => {
                if purpose != TsPurpose::MinCommit {
                    // Prewritten but not committed (a renewal follows a refused commit).
                    self.roll_back(cx);
                }
                return Next::Done(Err(err));
            }
        };
        match purpose {
            TsPurpose::MinCommit => self.with_min_commit_ts(cx, ts),
            TsPurpose::Commit => self.commit_primary(cx, ts),
            TsPurpose::Renew => {
                if let Some((_, plan)) = self.commit.as_mut() {
                    plan.set_commit_ts(ts);
                }
                self.stage = Stage::CommittingPrimary;
                self.drive_commit(cx, DispatchInput::Start)
            }
        }
    }

    fn with_min_commit_ts(mut self: Box<Self>, cx: &mut Cx<'_>, ts: Timestamp) -> Next {
        // Later than every timestamp a reader could hold now: plus one.
        self.plan.min_commit_ts = ts.version().saturating_add(1);
        self.start_prewrite(cx)
    }
}

fn validate(start_ts: Timestamp, mutations: &[Mutation], primary: &Bytes) -> Result<(), Error> {
    if start_ts.version() == 0 || start_ts.version() == u64::MAX {
        return Err(Error::InvalidArgument(format!(
            "cannot commit with start timestamp {start_ts}"
        )));
    }
    if mutations.is_empty() {
        return Err(Error::InvalidArgument("nothing to commit".to_owned()));
    }
    for pair in mutations.windows(2) {
        if pair[0].key >= pair[1].key {
            return Err(Error::InvalidArgument(
                "mutations must be sorted by key, one per key".to_owned(),
            ));
        }
    }
    if mutations.iter().any(|m| m.key.is_empty()) {
        return Err(Error::InvalidArgument("empty key".to_owned()));
    }
    // The primary is a written key; only a commit of existence checks alone (client-go
    // prewrites those with the first key as the primary) has none to choose from.
    let checks_only = mutations.iter().all(|m| m.op == MutationOp::CheckNotExists);
    if !mutations
        .iter()
        .any(|m| m.key == *primary && (checks_only || m.op != MutationOp::CheckNotExists))
    {
        return Err(Error::InvalidArgument(
            "the primary must be one of the written keys".to_owned(),
        ));
    }
    Ok(())
}

impl Committer {
    /// Starts the commit proper (after the pre-split, if there was one).
    fn begin(self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        let linearizable =
            !self.options.causal_consistency || self.options.commit_wait_until_tso.is_some();
        if (self.tried_async || self.tried_one_pc) && linearizable {
            return self.ask_timestamp(cx, TsPurpose::MinCommit);
        }
        self.start_prewrite(cx)
    }
}

impl Operation for Committer {
    fn on_start(mut self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        if let Some(pre_split) = self.pre_split.take() {
            let child = cx.spawn_child(pre_split);
            self.stage = Stage::PreSplitting(child);
            return Next::Pending(self);
        }
        self.begin(cx)
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }

    fn on_reply(self: Box<Self>, cx: &mut Cx<'_>, id: RequestId, reply: Reply) -> Next {
        let awaited = match self.stage {
            Stage::Timestamp(call, purpose) if call == id => Some(purpose),
            _ => None,
        };
        let prewriting = matches!(self.stage, Stage::Prewriting);
        let committing = matches!(self.stage, Stage::CommittingPrimary);
        match (reply, awaited) {
            (Reply::Timestamp(result), Some(purpose)) => self.on_timestamp(cx, purpose, result),
            (reply, _) if prewriting => self.drive_prewrite(cx, DispatchInput::Reply(id, reply)),
            (reply, _) if committing => self.drive_commit(cx, DispatchInput::Reply(id, reply)),
            _ => Next::Pending(self),
        }
    }

    fn on_timer(mut self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        match self.stage {
            Stage::Prewriting => self.drive_prewrite(cx, DispatchInput::Timer),
            Stage::LockBackoff => {
                self.stage = Stage::Prewriting;
                self.drive_prewrite(cx, DispatchInput::Start)
            }
            Stage::CommittingPrimary => self.drive_commit(cx, DispatchInput::Timer),
            Stage::TimestampLag(purpose) => self.ask_timestamp(cx, purpose),
            _ => Next::Pending(self),
        }
    }

    fn on_child_done(
        mut self: Box<Self>,
        cx: &mut Cx<'_>,
        child: OpId,
        result: Result<Output, Error>,
    ) -> Next {
        if self.keep_alive == Some(child) {
            // The TTL manager stopped (too old, or the lock is gone); the commit goes on.
            return Next::Pending(self);
        }
        if matches!(self.stage, Stage::PreSplitting(id) if id == child) {
            if self.abandoned {
                // Nobody waits and nothing is written yet.
                return Next::Done(Ok(Output::Unit));
            }
            return self.begin(cx);
        }
        if !matches!(self.stage, Stage::Resolving(id) if id == child) {
            return Next::Pending(self);
        }
        let outcome = match super::snapshot::resolution(result) {
            Ok(outcome) => outcome,
            Err(err) => return self.prewrite_failed(cx, err),
        };
        if outcome.ms_before_expiry == 0 {
            return self.start_prewrite(cx);
        }
        let sleep = self.lock_backoff.next_sleep_at_most(
            BackoffKind::TxnLock,
            outcome.ms_before_expiry,
            cx.rng(),
            format_args!("prewrite met locks of live transactions"),
        );
        match sleep {
            Ok(sleep) => {
                cx.wake_at(cx.now() + sleep);
                self.stage = Stage::LockBackoff;
                Next::Pending(self)
            }
            Err(err) => self.prewrite_failed(cx, err.into()),
        }
    }

    fn on_cancel(mut self: Box<Self>, _cx: &mut Cx<'_>) -> Option<Next> {
        // A commit is never dropped half-way: it either rolls back (not yet deciding) or
        // finishes (deciding, or decided), with nobody to hear the end.
        self.abandoned = true;
        Some(Next::Pending(self))
    }
}

/// Begins a transaction: takes the start timestamp (from TSO unless given) and the
/// machine time it began at; finishes with [`Output::Begun`].
#[derive(Debug)]
pub(crate) struct Begin {
    start_ts: Option<Timestamp>,
    call: Option<RequestId>,
}

impl Begin {
    /// A begin at `start_ts`, or at a fresh TSO timestamp when `None`.
    pub(crate) fn new(start_ts: Option<Timestamp>) -> Self {
        Self {
            start_ts,
            call: None,
        }
    }
}

impl Operation for Begin {
    fn on_start(mut self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        if let Some(start_ts) = self.start_ts {
            return Next::Done(Ok(Output::Begun {
                start_ts,
                at: cx.now(),
            }));
        }
        self.call = Some(cx.timestamp());
        Next::Pending(self)
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }

    fn on_reply(self: Box<Self>, cx: &mut Cx<'_>, id: RequestId, reply: Reply) -> Next {
        match reply {
            Reply::Timestamp(result) if self.call == Some(id) => {
                Next::Done(result.map(|start_ts| Output::Begun {
                    start_ts,
                    at: cx.now(),
                }))
            }
            _ => Next::Pending(self),
        }
    }
}
