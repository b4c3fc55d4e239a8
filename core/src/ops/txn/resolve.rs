//! Lock resolution, as client-go's `txnlock.LockResolver` does it.
//!
//! ```text
//!  ResolveLocks ── one child per transaction (and lock flavour) ──► ResolveTxn
//!
//!  ResolveTxn:
//!   Look ── settled in the cache ───────────────────────────────┐
//!    │ ── another operation checks it ──► Waiting ──(woken)──► Look
//!    ▼                                                          │
//!   CurrentTs (low-resolution TSO; MAX for a TTL-0 lock)        │
//!    ▼                                                          │
//!   Check (CheckTxnStatus on the primary) ── TxnNotFound ──► retry with
//!    │      rollback_if_not_exist once the lock expired, else back off
//!    ▼                                                          ▼
//!   alive ──► Done(status)      expired async commit ──► Secondaries
//!   settled, or a pessimistic lock to roll back ──► Resolve ──► Done(status)
//! ```
//!
//! `ResolveLocks` then turns the statuses into client-go's `ResolveLockResult`: how long
//! until the soonest live lock expires, and for readers which transactions to skip
//! (rolled back, pushed, committed after the read) or read through (committed before it).
//!
//! A status query ([`txn_status`], client-go's `LockResolver.GetTxnStatus`) is a
//! `ResolveTxn` without locks: it looks, checks with `rollback_if_not_exist` from the
//! start (a transaction with no trace on its primary is rolled back, not waited for), and
//! finishes with the status instead of resolving anything.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use super::plan::KeyedPlan;
use crate::backoff::{BackoffKind, Backoffer};
use crate::command::Output;
use crate::error::{Error, KeyError, LockInfo, LockKind};
use crate::op::{Cx, Next, Operation};
use crate::ops::keys::KeySpace;
use crate::oracle::Timestamp;
use crate::outbox::{OpId, Reply, RequestId};
use crate::resolver::{
    RESOLVE_LOCK_LITE_THRESHOLD, ReadLockSets, ResolveOutcome, TxnAction, TxnStatus,
};
use crate::rpc::{StoreRequest, StoreResponse};
use crate::sender::dispatch::{Dispatch, DispatchInput, Progress};
use crate::wait::WaitKey;

/// Total backoff of a status check (client-go `getTxnStatusMaxBackoff`).
const STATUS_CHECK_BUDGET: Duration = Duration::from_secs(20);

/// How a set of locks is resolved.
#[derive(Clone, Debug)]
pub(crate) struct ResolveParams {
    /// The start timestamp of whoever met the locks (pushes readers' blockers past it).
    pub(crate) caller_start_ts: Timestamp,
    /// Resolving for a read: statuses are classified into skip / read-through sets.
    pub(crate) for_read: bool,
    /// Resolve only the locks' own keys, never whole regions.
    pub(crate) lite: bool,
    /// Roll back a dead transaction's pessimistic locks region by region.
    pub(crate) pessimistic_region_resolve: bool,
    /// The key space the locks' keys are in.
    pub(crate) space: KeySpace,
    /// Per-request timeout.
    pub(crate) timeout: Duration,
    /// Backoff budget of each request's retries.
    pub(crate) budget: Duration,
    /// TiKV's execution deadline for writes.
    pub(crate) max_execution_ms: u64,
}

/// Resolves `locks` (client-go's `ResolveLocksWithOpts`); finishes with
/// [`Output::Resolved`].
#[derive(Debug)]
pub(crate) struct ResolveLocks {
    params: ResolveParams,
    locks: Vec<LockInfo>,
    /// Children still running, and the transaction each resolves.
    running: BTreeMap<OpId, u64>,
    statuses: BTreeMap<u64, CheckedStatus>,
}

impl ResolveLocks {
    /// Resolution of `locks` under `params`.
    pub(crate) fn new(params: ResolveParams, locks: Vec<LockInfo>) -> Self {
        Self {
            params,
            locks,
            running: BTreeMap::new(),
            statuses: BTreeMap::new(),
        }
    }

    fn outcome(&self) -> ResolveOutcome {
        let caller = self.params.caller_start_ts;
        let mut soonest: Option<u64> = None;
        let mut note = |left: u64| {
            soonest = Some(soonest.map_or(left, |s| s.min(left)));
        };
        let mut sets = ReadLockSets::default();
        for lock in &self.locks {
            let Some(checked) = self.statuses.get(&lock.lock_ts.version()) else {
                continue;
            };
            let status = &checked.status;
            if !self.params.for_read && status.ttl_ms != 0 {
                note(checked.ms_left);
                continue;
            }
            let committed_after = status.commit_ts.is_some_and(|ts| ts > caller);
            if status.action == TxnAction::MinCommitTsPushed
                || status.is_rolled_back()
                || committed_after
            {
                if !sets.resolved.contains(&lock.lock_ts) {
                    sets.resolved.push(lock.lock_ts);
                }
            } else if status.commit_ts.is_some() {
                if !sets.committed.contains(&lock.lock_ts) {
                    sets.committed.push(lock.lock_ts);
                }
            } else {
                note(checked.ms_left);
            }
        }
        ResolveOutcome {
            ms_before_expiry: soonest.unwrap_or(0),
            sets,
        }
    }
}

impl Operation for ResolveLocks {
    fn on_start(mut self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        // One child per transaction and lock flavour: a pessimistic lock's status check
        // carries different flags.
        let mut groups: BTreeMap<(u64, bool), Vec<LockInfo>> = BTreeMap::new();
        for lock in &self.locks {
            if lock.kind == LockKind::Shared {
                // A shared lock is a wrapper: its holders' locks come in the lock info's
                // shared list, and those are what gets resolved.
                return Next::Done(Err(Error::InvalidArgument(
                    "a shared lock wrapper cannot be resolved directly".to_owned(),
                )));
            }
            groups
                .entry((lock.lock_ts.version(), is_pessimistic(lock)))
                .or_default()
                .push(lock.clone());
        }
        if groups.is_empty() {
            return Next::Done(Ok(Output::Resolved(Box::default())));
        }
        for ((txn, _), locks) in groups {
            let child = cx.spawn_child(Box::new(ResolveTxn::new(self.params.clone(), locks)));
            self.running.insert(child, txn);
        }
        Next::Pending(self)
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }

    fn on_child_done(
        mut self: Box<Self>,
        _cx: &mut Cx<'_>,
        child: OpId,
        result: Result<Output, Error>,
    ) -> Next {
        let Some(txn) = self.running.remove(&child) else {
            return Next::Pending(self);
        };
        match result {
            Ok(Output::TxnStatus { status, ms_left }) => {
                let checked = CheckedStatus {
                    status: *status,
                    ms_left,
                };
                // Two children of one transaction (mixed lock flavours): keep the more
                // decided answer. (A default status reads as rolled back: never start
                // from one, or a live transaction would be taken for a rolled-back one.)
                match self.statuses.entry(txn) {
                    Entry::Vacant(slot) => {
                        slot.insert(checked);
                    }
                    Entry::Occupied(mut slot) => {
                        if checked.status.is_settled() || !slot.get().status.is_settled() {
                            slot.insert(checked);
                        }
                    }
                }
            }
            Ok(other) => {
                return Next::Done(Err(Error::UnexpectedResponse(format!(
                    "lock resolution produced {other:?}"
                ))));
            }
            Err(err) => return Next::Done(Err(err)),
        }
        if self.running.is_empty() {
            Next::Done(Ok(Output::Resolved(Box::new(self.outcome()))))
        } else {
            Next::Pending(self)
        }
    }
}

/// A transaction's status as one child found it, with how long its locks have left.
#[derive(Debug)]
struct CheckedStatus {
    status: TxnStatus,
    ms_left: u64,
}

fn is_pessimistic(lock: &LockInfo) -> bool {
    matches!(
        lock.kind,
        LockKind::Pessimistic | LockKind::SharedPessimistic
    )
}

/// The status of transaction `txn` whose primary key is `primary` (in the request key
/// space), as client-go's `LockResolver.GetTxnStatus` finds it: from the resolver's cache
/// of settled transactions, else by a CheckTxnStatus at a low-resolution timestamp that
/// rolls back an expired primary lock and writes a rollback record where there is none.
/// Nothing is resolved; finishes with [`Output::TxnStatus`].
pub(crate) fn txn_status(
    params: ResolveParams,
    txn: Timestamp,
    primary: Bytes,
) -> Box<dyn Operation> {
    let mut op = ResolveTxn::new(params, Vec::new());
    op.txn = txn;
    op.primary = primary;
    op.pessimistic = false;
    op.rollback_if_not_exist = true;
    op.status_only = true;
    Box::new(op)
}

/// Resolves the locks of one transaction; finishes with [`Output::TxnStatus`].
#[derive(Debug)]
struct ResolveTxn {
    params: ResolveParams,
    txn: Timestamp,
    primary: Bytes,
    locks: Vec<LockInfo>,
    pessimistic: bool,
    /// Only find the status (see [`txn_status`]): resolve nothing.
    status_only: bool,
    rollback_if_not_exist: bool,
    force_sync_commit: bool,
    /// Backs off `TxnNotFound` answers.
    backoff: Backoffer,
    /// The `current_ts` of the last status check, and whether it came fresh from TSO (not
    /// from the low-resolution cache): TiKV judged the lock's TTL by it.
    checked_at: Option<(Timestamp, bool)>,
    stage: Stage,
}

#[derive(Debug)]
enum Stage {
    /// Not yet looked at the cache.
    Look,
    /// Another operation is checking this transaction.
    Waiting { call: RequestId },
    /// Waiting for the current timestamp.
    CurrentTs { call: RequestId },
    /// CheckTxnStatus in flight.
    Check {
        current_ts: Timestamp,
        dispatch: Dispatch,
        plan: KeyedPlan,
    },
    /// Backing off a `TxnNotFound` before checking again.
    Sleeping { current_ts: Timestamp },
    /// CheckSecondaryLocks of an expired async-commit transaction in flight.
    Secondaries {
        status: TxnStatus,
        dispatch: Dispatch,
        plan: KeyedPlan,
    },
    /// Rollbacks or commits of the locks in flight, one batch after another.
    Resolve {
        status: TxnStatus,
        current: Box<(Dispatch, KeyedPlan)>,
        queue: VecDeque<(Dispatch, KeyedPlan)>,
    },
    /// Between transitions.
    Moving,
}

impl ResolveTxn {
    fn new(params: ResolveParams, locks: Vec<LockInfo>) -> Self {
        let first = locks.first();
        let txn = first.map_or(Timestamp::from_version(0), |lock| lock.lock_ts);
        let primary = first.map(|lock| lock.primary.clone()).unwrap_or_default();
        let pessimistic = locks.iter().all(is_pessimistic);
        Self {
            params,
            txn,
            primary,
            locks,
            pessimistic,
            status_only: false,
            rollback_if_not_exist: false,
            force_sync_commit: false,
            backoff: Backoffer::new(millis(STATUS_CHECK_BUDGET)),
            checked_at: None,
            stage: Stage::Look,
        }
    }

    fn dispatch(&self, request_keys: &[Bytes]) -> Dispatch {
        let routing = self.params.space.routing_keys(request_keys);
        Dispatch::new(routing, false, self.params.budget, self.params.timeout)
    }

    fn done(self: Box<Self>, cx: &mut Cx<'_>, result: Result<TxnStatus, Error>) -> Next {
        // Whatever happened, a check this operation claimed is over.
        let op = cx.op();
        let wall_ms = cx.wall_ms();
        let services = cx.services();
        services
            .resolver
            .forget(op, &mut services.waits, &mut services.out);
        Next::Done(result.map(|status| {
            let ms_left = self.ms_left(&status, wall_ms);
            Output::TxnStatus {
                status: Box::new(status),
                ms_left,
            }
        }))
    }

    /// How long the transaction's locks have left: by this client's clock, or, when TiKV
    /// found alive a lock this clock calls expired (PD's clock behind ours; the check used
    /// a fresh timestamp, see `checked`), by the timestamp TiKV judged with, so the caller
    /// backs off instead of asking again at once.
    fn ms_left(&self, status: &TxnStatus, wall_ms: u64) -> u64 {
        if status.ttl_ms == 0 || status.is_committed() {
            return 0;
        }
        let by_wall = self.txn.until_expired(status.ttl_ms, wall_ms);
        if by_wall > 0 {
            return u64::try_from(by_wall).unwrap_or(0);
        }
        match self.checked_at {
            Some((ts, _)) if ts != Timestamp::MAX => {
                let by_tikv = self.txn.until_expired(status.ttl_ms, ts.physical_ms());
                u64::try_from(by_tikv).unwrap_or(0).max(1)
            }
            _ => 0,
        }
    }

    /// Looks for a settled status, else checks (or waits for whoever checks).
    fn look(mut self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        if let Some(status) = cx.services().resolver.settled(self.txn).cloned() {
            return self.after_status(cx, status);
        }
        let op = cx.op();
        if !cx.services().resolver.claim_check(self.txn, op) {
            let waiter = cx.waiter();
            cx.services()
                .waits
                .park(WaitKey::TxnStatus(self.txn.version()), waiter);
            self.stage = Stage::Waiting { call: waiter.call };
            return Next::Pending(self);
        }
        if self.locks.iter().any(|lock| lock.ttl_ms == 0) {
            // TTL 0 is TiKV's "resolve unconditionally": check as if at the end of time.
            return self.check(cx, Timestamp::MAX, true);
        }
        let staleness = cx.config().low_resolution_ts_staleness;
        let oldest = crate::time::Time::from_micros(
            cx.now()
                .as_micros()
                .saturating_sub(u64::try_from(staleness.as_micros()).unwrap_or(u64::MAX)),
        );
        match cx.recent_timestamp(oldest) {
            Some(ts) => self.check(cx, ts, false),
            None => {
                let call = cx.timestamp();
                self.stage = Stage::CurrentTs { call };
                Next::Pending(self)
            }
        }
    }

    /// Sends CheckTxnStatus at `current_ts` (`fresh`: just drawn from TSO).
    fn check(mut self: Box<Self>, cx: &mut Cx<'_>, current_ts: Timestamp, fresh: bool) -> Next {
        self.checked_at = Some((current_ts, fresh));
        let mut request = kvrpcpb::CheckTxnStatusRequest {
            primary_key: self.primary.clone(),
            lock_ts: self.txn.version(),
            caller_start_ts: self.params.caller_start_ts.version(),
            current_ts: current_ts.version(),
            rollback_if_not_exist: self.rollback_if_not_exist,
            force_sync_commit: self.force_sync_commit,
            resolving_pessimistic_lock: self.pessimistic,
            verify_is_primary: true,
            ..Default::default()
        };
        request
            .context
            .get_or_insert_with(Default::default)
            .max_execution_duration_ms = self.params.max_execution_ms;
        let keys = vec![self.primary.clone()];
        let mut dispatch = self.dispatch(&keys);
        let mut plan = KeyedPlan::per_region(keys, StoreRequest::CheckTxnStatus(request));
        match dispatch.start(cx, &mut plan) {
            Progress::Failed(err) => self.done(cx, Err(err)),
            Progress::Done => self.checked(cx, current_ts, &mut plan),
            Progress::Pending => {
                self.stage = Stage::Check {
                    current_ts,
                    dispatch,
                    plan,
                };
                Next::Pending(self)
            }
        }
    }

    /// The status check answered.
    fn checked(
        mut self: Box<Self>,
        cx: &mut Cx<'_>,
        current_ts: Timestamp,
        plan: &mut KeyedPlan,
    ) -> Next {
        let answer = plan.take_answers().pop();
        let Some(answer) = answer else {
            return self.done(
                cx,
                Err(Error::UnexpectedResponse("no status answer".into())),
            );
        };
        let StoreResponse::CheckTxnStatus(response) = *answer.response else {
            return self.done(
                cx,
                Err(Error::UnexpectedResponse("not a status answer".into())),
            );
        };
        if let Some(err) = &response.error {
            return match KeyError::from_proto(err) {
                // A status query already asks TiKV to write a rollback record where the
                // primary has no trace, so this answer is unexpected: report it rather
                // than wait for a primary lock.
                KeyError::TxnNotFound { .. } if !self.status_only => self.not_found(cx, current_ts),
                KeyError::PrimaryMismatch(_) if self.pessimistic => {
                    // The lock points at a primary that is not one: roll the stale
                    // pessimistic lock back.
                    self.end_check(cx);
                    self.after_status(cx, TxnStatus::default())
                }
                other => self.done(cx, Err(other.into())),
            };
        }
        let status = TxnStatus::from_check(&response);
        let async_commit = status
            .primary_lock
            .as_ref()
            .is_some_and(|lock| lock.use_async_commit);
        let fresh = self.checked_at.is_some_and(|(_, fresh)| fresh);
        if status.ttl_ms != 0
            && !status.is_committed()
            && !async_commit
            && !fresh
            && self.txn.is_expired(status.ttl_ms, cx.wall_ms())
        {
            // TiKV judged the TTL by a cached timestamp older than the lock's expiry by
            // this client's clock: check again at a fresh one rather than have the caller
            // retry (at once, the lock being expired) until the cache is renewed.
            let call = cx.timestamp();
            self.stage = Stage::CurrentTs { call };
            return Next::Pending(self);
        }
        cx.services().resolver.remember(self.txn, &status);
        self.end_check(cx);
        self.after_status(cx, status)
    }

    fn end_check(&self, cx: &mut Cx<'_>) {
        let services = cx.services();
        services
            .resolver
            .end_check(self.txn, &mut services.waits, &mut services.out);
    }

    /// TiKV has neither a lock nor a record of the transaction on its primary.
    fn not_found(mut self: Box<Self>, cx: &mut Cx<'_>, current_ts: Timestamp) -> Next {
        let wall_ms = cx.wall_ms();
        let lock_ttl = self.locks.iter().map(|lock| lock.ttl_ms).max().unwrap_or(0);
        if self.txn.is_expired(lock_ttl, wall_ms) {
            // The primary's prewrite can no longer arrive in time: write the rollback.
            self.rollback_if_not_exist = true;
            let fresh = self.checked_at.is_some_and(|(_, fresh)| fresh);
            return self.check(cx, current_ts, fresh);
        }
        if self.pessimistic {
            // A rolled-back pessimistic transaction may leave locks that outlive its
            // primary: report it alive so the caller waits and retries.
            self.end_check(cx);
            let status = TxnStatus {
                ttl_ms: lock_ttl,
                ..TxnStatus::default()
            };
            return self.done(cx, Ok(status));
        }
        // The secondaries may have been prewritten before the primary: wait for it.
        match self.backoff.next_sleep(
            BackoffKind::TxnNotFound,
            cx.rng(),
            format_args!("transaction {} not found on its primary", self.txn),
        ) {
            Ok(sleep) => {
                cx.wake_at(cx.now() + sleep);
                self.stage = Stage::Sleeping { current_ts };
                Next::Pending(self)
            }
            Err(err) => self.done(cx, Err(err.into())),
        }
    }

    /// The transaction's status is known: resolve what needs it.
    fn after_status(self: Box<Self>, cx: &mut Cx<'_>, status: TxnStatus) -> Next {
        if self.status_only {
            return self.done(cx, Ok(status));
        }
        let wall_ms = cx.wall_ms();
        let expired_async_commit = status
            .primary_lock
            .as_ref()
            .is_some_and(|lock| lock.use_async_commit)
            && !self.force_sync_commit
            && self.txn.is_expired(status.ttl_ms, wall_ms);
        if status.ttl_ms != 0 && !expired_async_commit {
            return self.done(cx, Ok(status));
        }
        if expired_async_commit {
            return self.check_secondaries(cx, status);
        }
        let mut batches = VecDeque::new();
        let commit_version = status.commit_ts.map_or(0, Timestamp::version);
        let others = |pessimistic: bool| -> Vec<&LockInfo> {
            self.locks
                .iter()
                .filter(|lock| is_pessimistic(lock) == pessimistic && lock.key != self.primary)
                .collect()
        };
        let pessimistic_locks = others(true);
        if !pessimistic_locks.is_empty() {
            // Pessimistic locks do not block reads; a dead transaction's are rolled back.
            let for_update_ts = pessimistic_locks
                .iter()
                .map(|lock| lock.for_update_ts.version())
                .max()
                .filter(|ts| *ts != 0)
                .unwrap_or(u64::MAX);
            let request = kvrpcpb::PessimisticRollbackRequest {
                start_version: self.txn.version(),
                for_update_ts,
                context: Some(self.write_context()),
                ..Default::default()
            };
            let keys: Vec<Bytes> = pessimistic_locks.iter().map(|l| l.key.clone()).collect();
            let prototype = StoreRequest::PessimisticRollback(request);
            let plan = if self.params.pessimistic_region_resolve {
                KeyedPlan::per_region(keys.clone(), prototype)
            } else {
                KeyedPlan::with_keys(keys.clone(), prototype, set_rollback_keys)
            };
            batches.push_back((self.dispatch(&keys), plan));
        }
        let (lite, full): (Vec<&LockInfo>, Vec<&LockInfo>) = others(false)
            .into_iter()
            .partition(|lock| self.params.lite || lock.txn_size < RESOLVE_LOCK_LITE_THRESHOLD);
        for (locks, with_keys) in [(lite, true), (full, false)] {
            if locks.is_empty() {
                continue;
            }
            let keys: Vec<Bytes> = locks.iter().map(|lock| lock.key.clone()).collect();
            let prototype = StoreRequest::ResolveLock(kvrpcpb::ResolveLockRequest {
                start_version: self.txn.version(),
                commit_version,
                context: Some(self.write_context()),
                ..Default::default()
            });
            let plan = if with_keys {
                KeyedPlan::with_keys(keys.clone(), prototype, set_resolve_keys)
            } else {
                // Big transactions: one region-wide resolve per region holding a lock.
                KeyedPlan::per_region(keys.clone(), prototype)
            };
            let dispatch = self.dispatch(&keys);
            self.schedule(cx, dispatch, plan, &mut batches);
        }
        self.resolve_next(cx, status, batches)
    }

    /// Queues a cleanup for this operation to send, or, for a reader, leaves it running in
    /// the background (client-go's async resolve pool): the reader goes on by the status
    /// alone, unless the client's limit of background cleanups is reached.
    fn schedule(
        &self,
        cx: &mut Cx<'_>,
        dispatch: Dispatch,
        plan: KeyedPlan,
        queue: &mut VecDeque<(Dispatch, KeyedPlan)>,
    ) {
        let limit = cx.config().async_resolve_limit;
        if self.params.for_read && cx.services().resolver.start_background(limit) {
            cx.spawn_detached(Box::new(BackgroundResolve { dispatch, plan }));
        } else {
            queue.push_back((dispatch, plan));
        }
    }

    fn write_context(&self) -> kvrpcpb::Context {
        kvrpcpb::Context {
            max_execution_duration_ms: self.params.max_execution_ms,
            ..Default::default()
        }
    }

    fn resolve_next(
        mut self: Box<Self>,
        cx: &mut Cx<'_>,
        status: TxnStatus,
        mut queue: VecDeque<(Dispatch, KeyedPlan)>,
    ) -> Next {
        while let Some((mut dispatch, mut plan)) = queue.pop_front() {
            match dispatch.start(cx, &mut plan) {
                Progress::Failed(err) => return self.cleanup_failed(cx, status, err),
                Progress::Done => {
                    if let Err(err) = resolve_errors(&mut plan) {
                        return self.cleanup_failed(cx, status, err);
                    }
                }
                Progress::Pending => {
                    self.stage = Stage::Resolve {
                        status,
                        current: Box::new((dispatch, plan)),
                        queue,
                    };
                    return Next::Pending(self);
                }
            }
        }
        self.done(cx, Ok(status))
    }

    /// Committing or rolling back the locks failed although the transaction's fate is
    /// known. A writer must fail (the locks are still in its way); a reader need not: it
    /// skips or reads through the locks by the status alone, and the locks are cleaned up
    /// by whoever meets them next (client-go's read-path cleanup ignores its errors too).
    fn cleanup_failed(self: Box<Self>, cx: &mut Cx<'_>, status: TxnStatus, err: Error) -> Next {
        if self.params.for_read {
            self.done(cx, Ok(status))
        } else {
            self.done(cx, Err(err))
        }
    }

    fn check_secondaries(mut self: Box<Self>, cx: &mut Cx<'_>, status: TxnStatus) -> Next {
        let secondaries = status
            .primary_lock
            .as_ref()
            .map(|lock| lock.secondaries.clone())
            .unwrap_or_default();
        let request = kvrpcpb::CheckSecondaryLocksRequest {
            start_version: self.txn.version(),
            context: Some(self.write_context()),
            ..Default::default()
        };
        let mut dispatch = self.dispatch(&secondaries);
        let mut plan = KeyedPlan::with_keys(
            secondaries,
            StoreRequest::CheckSecondaryLocks(request),
            set_secondary_keys,
        );
        match dispatch.start(cx, &mut plan) {
            Progress::Failed(err) => self.done(cx, Err(err)),
            Progress::Done => self.secondaries_checked(cx, status, &mut plan),
            Progress::Pending => {
                self.stage = Stage::Secondaries {
                    status,
                    dispatch,
                    plan,
                };
                Next::Pending(self)
            }
        }
    }

    /// Every secondary's lock was looked at: the transaction committed (at the largest
    /// `min_commit_ts`, or where a missing lock says) or rolled back. Resolve accordingly.
    fn secondaries_checked(
        mut self: Box<Self>,
        cx: &mut Cx<'_>,
        mut status: TxnStatus,
        plan: &mut KeyedPlan,
    ) -> Next {
        let min_commit_ts = status
            .primary_lock
            .as_ref()
            .map_or(0, |lock| lock.min_commit_ts.version());
        let mut recovery = AsyncRecovery {
            commit_ts: min_commit_ts,
            keys: Vec::new(),
            missing_lock: false,
        };
        for answer in plan.take_answers() {
            let items = answer.items;
            let StoreResponse::CheckSecondaryLocks(response) = *answer.response else {
                return self.done(
                    cx,
                    Err(Error::UnexpectedResponse("not a secondary check".into())),
                );
            };
            if let Some(err) = &response.error {
                return self.done(cx, Err(KeyError::from_proto(err).into()));
            }
            match recovery.add(&response, items.len(), self.txn) {
                Ok(()) => {}
                Err(Recovery::NotAsyncCommit) => {
                    // The transaction fell back to 2PC: check again, forcing the sync path.
                    self.force_sync_commit = true;
                    return self.look(cx);
                }
                Err(Recovery::Broken(message)) => {
                    return self.done(cx, Err(Error::UnexpectedResponse(message)));
                }
            }
        }
        status.ttl_ms = 0;
        status.commit_ts =
            (recovery.commit_ts != 0).then(|| Timestamp::from_version(recovery.commit_ts));
        status.action = TxnAction::NoAction;
        cx.services().resolver.remember(self.txn, &status);
        let mut keys = recovery.keys;
        keys.push(self.primary.clone());
        let prototype = StoreRequest::ResolveLock(kvrpcpb::ResolveLockRequest {
            start_version: self.txn.version(),
            commit_version: recovery.commit_ts,
            context: Some(self.write_context()),
            ..Default::default()
        });
        let dispatch = self.dispatch(&keys);
        let plan = KeyedPlan::with_keys(keys, prototype, set_resolve_keys);
        let mut queue = VecDeque::new();
        // A reader does not wait for the recovered transaction's cleanup either
        // (client-go's `resolveAsyncCommitLock` with `asyncResolveAll`).
        self.schedule(cx, dispatch, plan, &mut queue);
        self.resolve_next(cx, status, queue)
    }

    fn drive(mut self: Box<Self>, cx: &mut Cx<'_>, input: DispatchInput) -> Next {
        match std::mem::replace(&mut self.stage, Stage::Moving) {
            Stage::Check {
                current_ts,
                mut dispatch,
                mut plan,
            } => match dispatch.handle(cx, input, &mut plan) {
                Progress::Pending => {
                    self.stage = Stage::Check {
                        current_ts,
                        dispatch,
                        plan,
                    };
                    Next::Pending(self)
                }
                Progress::Done => self.checked(cx, current_ts, &mut plan),
                Progress::Failed(err) => self.done(cx, Err(err)),
            },
            Stage::Secondaries {
                status,
                mut dispatch,
                mut plan,
            } => match dispatch.handle(cx, input, &mut plan) {
                Progress::Pending => {
                    self.stage = Stage::Secondaries {
                        status,
                        dispatch,
                        plan,
                    };
                    Next::Pending(self)
                }
                Progress::Done => self.secondaries_checked(cx, status, &mut plan),
                Progress::Failed(err) => self.done(cx, Err(err)),
            },
            Stage::Resolve {
                status,
                mut current,
                queue,
            } => {
                let (dispatch, plan) = &mut *current;
                match dispatch.handle(cx, input, plan) {
                    Progress::Pending => {
                        self.stage = Stage::Resolve {
                            status,
                            current,
                            queue,
                        };
                        Next::Pending(self)
                    }
                    Progress::Done => match resolve_errors(plan) {
                        Ok(()) => self.resolve_next(cx, status, queue),
                        Err(err) => self.cleanup_failed(cx, status, err),
                    },
                    Progress::Failed(err) => self.cleanup_failed(cx, status, err),
                }
            }
            Stage::Sleeping { current_ts } => match input {
                DispatchInput::Timer => {
                    let fresh = self.checked_at.is_some_and(|(_, fresh)| fresh);
                    self.check(cx, current_ts, fresh)
                }
                _ => {
                    self.stage = Stage::Sleeping { current_ts };
                    Next::Pending(self)
                }
            },
            other => {
                self.stage = other;
                Next::Pending(self)
            }
        }
    }
}

impl Operation for ResolveTxn {
    fn on_start(self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        self.look(cx)
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }

    fn on_reply(mut self: Box<Self>, cx: &mut Cx<'_>, id: RequestId, reply: Reply) -> Next {
        match (&self.stage, reply) {
            (Stage::Waiting { call }, Reply::Ready(_)) if *call == id => {
                self.stage = Stage::Look;
                self.look(cx)
            }
            (Stage::CurrentTs { call }, Reply::Timestamp(result)) if *call == id => match result {
                Ok(ts) => self.check(cx, ts, true),
                Err(err) => self.done(cx, Err(err)),
            },
            (_, reply) => self.drive(cx, DispatchInput::Reply(id, reply)),
        }
    }

    fn on_timer(self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        self.drive(cx, DispatchInput::Timer)
    }
}

/// A ResolveLock cleanup left by a reader to run on its own (client-go's async resolve
/// pool, with the read's 40 s budget). Whatever the outcome it
/// finishes with [`Output::Unit`] and gives its slot back: a failed cleanup is done again
/// by whoever meets the locks next.
#[derive(Debug)]
struct BackgroundResolve {
    dispatch: Dispatch,
    plan: KeyedPlan,
}

impl BackgroundResolve {
    fn step(mut self: Box<Self>, cx: &mut Cx<'_>, input: DispatchInput) -> Next {
        let progress = match input {
            DispatchInput::Start => self.dispatch.start(cx, &mut self.plan),
            input => self.dispatch.handle(cx, input, &mut self.plan),
        };
        match progress {
            Progress::Pending => Next::Pending(self),
            Progress::Done | Progress::Failed(_) => {
                cx.services().resolver.end_background();
                Next::Done(Ok(Output::Unit))
            }
        }
    }
}

impl Operation for BackgroundResolve {
    fn on_start(self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        self.step(cx, DispatchInput::Start)
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }

    fn on_reply(self: Box<Self>, cx: &mut Cx<'_>, id: RequestId, reply: Reply) -> Next {
        self.step(cx, DispatchInput::Reply(id, reply))
    }

    fn on_timer(self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        self.step(cx, DispatchInput::Timer)
    }
}

/// What CheckSecondaryLocks answers add up to (client-go's `asyncResolveData`).
#[derive(Debug)]
struct AsyncRecovery {
    /// The commit timestamp: the largest `min_commit_ts` while every lock is there, or the
    /// one a missing lock's record gives (0: rolled back).
    commit_ts: u64,
    /// Keys whose locks are still there, to resolve.
    keys: Vec<Bytes>,
    missing_lock: bool,
}

enum Recovery {
    /// A lock is not an async-commit lock: the transaction fell back to 2PC.
    NotAsyncCommit,
    /// The answers contradict each other.
    Broken(String),
}

impl AsyncRecovery {
    fn add(
        &mut self,
        response: &kvrpcpb::CheckSecondaryLocksResponse,
        expected: usize,
        txn: Timestamp,
    ) -> Result<(), Recovery> {
        if response.locks.len() < expected {
            // A lock is gone: its key was committed or rolled back, which decides the
            // transaction; TiKV resolves the other keys of that region itself.
            if !self.missing_lock {
                if response.commit_ts != 0 && response.commit_ts < self.commit_ts {
                    return Err(Recovery::Broken(format!(
                        "async commit recovery of {txn}: commit ts {} below min commit ts {}",
                        response.commit_ts, self.commit_ts
                    )));
                }
                self.commit_ts = response.commit_ts;
            }
            self.missing_lock = true;
            if self.commit_ts != response.commit_ts {
                return Err(Recovery::Broken(format!(
                    "async commit recovery of {txn}: commit ts {} and {} disagree",
                    self.commit_ts, response.commit_ts
                )));
            }
            return Ok(());
        }
        for lock in &response.locks {
            if lock.lock_version != txn.version() {
                return Err(Recovery::Broken(format!(
                    "async commit recovery of {txn}: a lock of transaction {}",
                    lock.lock_version
                )));
            }
            if !lock.use_async_commit {
                return Err(Recovery::NotAsyncCommit);
            }
            if !self.missing_lock && lock.min_commit_ts > self.commit_ts {
                self.commit_ts = lock.min_commit_ts;
            }
            self.keys.push(lock.key.clone());
        }
        Ok(())
    }
}

/// Errors in ResolveLock / PessimisticRollback answers.
fn resolve_errors(plan: &mut KeyedPlan) -> Result<(), Error> {
    for answer in plan.take_answers() {
        match *answer.response {
            StoreResponse::ResolveLock(r) => {
                if let Some(err) = r.error {
                    return Err(KeyError::from_proto(&err).into());
                }
            }
            StoreResponse::PessimisticRollback(r) => {
                if let Some(err) = r.errors.first() {
                    return Err(KeyError::from_proto(err).into());
                }
            }
            other => {
                return Err(Error::UnexpectedResponse(format!(
                    "mismatched response {other:?}"
                )));
            }
        }
    }
    Ok(())
}

fn set_resolve_keys(request: &mut StoreRequest, keys: Vec<Bytes>) {
    if let StoreRequest::ResolveLock(r) = request {
        r.keys = keys;
    }
}

fn set_rollback_keys(request: &mut StoreRequest, keys: Vec<Bytes>) {
    if let StoreRequest::PessimisticRollback(r) = request {
        r.keys = keys;
    }
}

fn set_secondary_keys(request: &mut StoreRequest, keys: Vec<Bytes>) {
    if let StoreRequest::CheckSecondaryLocks(r) = request {
        r.keys = keys;
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
