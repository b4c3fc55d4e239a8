//! The lock resolver's shared state: what the client learned about other transactions.
//!
//! A transaction whose status is settled (committed at some timestamp, or rolled back)
//! stays so forever, so the resolver remembers the last [`RESOLVED_CACHE_SIZE`] of them
//! (first in, first out, as client-go's `LockResolver`) and answers later locks of the same
//! transaction without asking TiKV. It also knows which transactions some operation is
//! checking right now: a second operation that meets a lock of one of them waits for that
//! check instead of sending its own (the wait list's `TxnStatus` key), then reads the
//! answer from the cache, or checks for itself when the transaction is still alive (its
//! own caller timestamp may need a push the first check did not make).
//!
//! The operations that do the work are in `ops::txn::resolve`.

use std::collections::{BTreeMap, VecDeque};

use tikv_proto::kvrpcpb;

use crate::error::LockInfo;
use crate::oracle::Timestamp;
use crate::outbox::{OpId, Outbox, Reply};
use crate::wait::{WaitKey, Waits};

/// How many settled transactions the resolver remembers (client-go `ResolvedCacheSize`).
pub(crate) const RESOLVED_CACHE_SIZE: usize = 2048;

/// Locks of transactions writing fewer keys than this in a region are resolved key by key
/// (client-go's `ResolveLockLiteThreshold` default); bigger ones region by region.
pub(crate) const RESOLVE_LOCK_LITE_THRESHOLD: u64 = 512;

/// What a status check did to the transaction (TiKV's `Action`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TxnAction {
    /// Nothing: the status was already settled, or the lock is alive.
    #[default]
    NoAction,
    /// The primary lock had expired and was rolled back.
    TtlExpireRollback,
    /// No lock and no record: a rollback record was written.
    LockNotExistRollback,
    /// The lock's `min_commit_ts` was pushed past the caller's timestamp.
    MinCommitTsPushed,
    /// An expired pessimistic primary lock was rolled back.
    TtlExpirePessimisticRollback,
    /// No lock, nothing written.
    LockNotExistDoNothing,
    /// An action this client does not know (its wire number).
    Other(i32),
}

impl TxnAction {
    /// The action TiKV's wire value `action` names.
    pub fn from_proto(action: i32) -> Self {
        use kvrpcpb::Action;
        match Action::try_from(action) {
            Ok(Action::NoAction) => Self::NoAction,
            Ok(Action::TtlExpireRollback) => Self::TtlExpireRollback,
            Ok(Action::LockNotExistRollback) => Self::LockNotExistRollback,
            Ok(Action::MinCommitTsPushed) => Self::MinCommitTsPushed,
            Ok(Action::TtlExpirePessimisticRollback) => Self::TtlExpirePessimisticRollback,
            Ok(Action::LockNotExistDoNothing) => Self::LockNotExistDoNothing,
            Err(_) => Self::Other(action),
        }
    }
}

/// A transaction's status as its primary key tells it (client-go's `TxnStatus`), as
/// [`Client::get_txn_status`](crate::Client::get_txn_status) answers it: committed
/// ([`commit_ts`](Self::commit_ts)), rolled back, or alive ([`ttl_ms`](Self::ttl_ms) over
/// 0).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnStatus {
    /// The primary lock's TTL in milliseconds while the transaction is alive; 0 once it is
    /// settled.
    pub ttl_ms: u64,
    /// When it committed (`None`: not committed).
    pub commit_ts: Option<Timestamp>,
    /// What the check did.
    pub action: TxnAction,
    /// The primary lock, while there is one.
    pub primary_lock: Option<LockInfo>,
}

impl TxnStatus {
    /// The status a `CheckTxnStatus` answer describes.
    pub(crate) fn from_check(response: &kvrpcpb::CheckTxnStatusResponse) -> Self {
        let commit_ts = (response.lock_ttl == 0 && response.commit_version != 0)
            .then(|| Timestamp::from_version(response.commit_version));
        Self {
            ttl_ms: response.lock_ttl,
            commit_ts,
            action: TxnAction::from_proto(response.action),
            primary_lock: response.lock_info.as_deref().map(LockInfo::from_proto),
        }
    }

    /// Whether it committed.
    pub fn is_committed(&self) -> bool {
        self.commit_ts.is_some()
    }

    /// Whether its primary lock is still alive: neither committed nor rolled back, with
    /// [`ttl_ms`](Self::ttl_ms) left to live.
    pub fn is_alive(&self) -> bool {
        self.ttl_ms != 0 && !self.is_committed()
    }

    /// Whether it is rolled back for good (TiKV answered without a lock, without a commit,
    /// and with an action that means a rollback record exists).
    pub fn is_rolled_back(&self) -> bool {
        self.ttl_ms == 0
            && self.commit_ts.is_none()
            && matches!(
                self.action,
                TxnAction::NoAction
                    | TxnAction::LockNotExistRollback
                    | TxnAction::TtlExpireRollback
            )
    }

    /// Whether the outcome is final (committed or rolled back); only such statuses are
    /// remembered.
    pub fn is_settled(&self) -> bool {
        self.is_committed() || self.is_rolled_back()
    }
}

/// The resolver's state, shared by every operation.
#[derive(Debug, Default)]
pub(crate) struct Resolver {
    settled: BTreeMap<u64, TxnStatus>,
    order: VecDeque<u64>,
    /// Transactions being checked, and by which operation.
    checking: BTreeMap<u64, OpId>,
    /// Cleanups running in the background for readers.
    background: usize,
}

impl Resolver {
    /// Takes a slot for a cleanup in the background; `false` when `limit` are running
    /// ([`Config::async_resolve_limit`](crate::Config::async_resolve_limit)).
    pub(crate) fn start_background(&mut self, limit: usize) -> bool {
        if self.background >= limit {
            return false;
        }
        self.background += 1;
        true
    }

    /// Gives back the slot of a background cleanup that ended.
    pub(crate) fn end_background(&mut self) {
        self.background = self.background.saturating_sub(1);
    }

    /// The settled status of transaction `start_ts`, if known.
    pub(crate) fn settled(&self, start_ts: Timestamp) -> Option<&TxnStatus> {
        self.settled.get(&start_ts.version())
    }

    /// Remembers `status` of transaction `start_ts` when it is settled; the oldest entry
    /// goes once the cache is full.
    pub(crate) fn remember(&mut self, start_ts: Timestamp, status: &TxnStatus) {
        if !status.is_settled() {
            return;
        }
        let key = start_ts.version();
        if self.settled.contains_key(&key) {
            // A settled status never changes; the first answer stands.
            return;
        }
        self.settled.insert(key, status.clone());
        self.order.push_back(key);
        while self.order.len() > RESOLVED_CACHE_SIZE {
            if let Some(oldest) = self.order.pop_front() {
                self.settled.remove(&oldest);
            }
        }
    }

    /// Claims the status check of transaction `start_ts` for operation `op`. Returns
    /// `false` when another operation is checking it (the caller waits on
    /// `WaitKey::TxnStatus`).
    pub(crate) fn claim_check(&mut self, start_ts: Timestamp, op: OpId) -> bool {
        match self.checking.get(&start_ts.version()) {
            Some(owner) => *owner == op,
            None => {
                self.checking.insert(start_ts.version(), op);
                true
            }
        }
    }

    /// The check of `start_ts` ended (answered, failed, or its operation went away): every
    /// operation waiting for it is woken to look again.
    pub(crate) fn end_check(&mut self, start_ts: Timestamp, waits: &mut Waits, out: &mut Outbox) {
        self.checking.remove(&start_ts.version());
        for waiter in waits.take(&WaitKey::TxnStatus(start_ts.version())) {
            out.deliver(waiter.op, waiter.call, Reply::Ready(Ok(())));
        }
    }

    /// Operation `op` is gone: checks it claimed end, so their waiters do not wait forever.
    pub(crate) fn forget(&mut self, op: OpId, waits: &mut Waits, out: &mut Outbox) {
        if self.checking.is_empty() {
            return;
        }
        let claimed: Vec<u64> = self
            .checking
            .iter()
            .filter(|(_, owner)| **owner == op)
            .map(|(txn, _)| *txn)
            .collect();
        for txn in claimed {
            self.end_check(Timestamp::from_version(txn), waits, out);
        }
    }

    /// Appends checks in flight (see `Core::leftovers`).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn leftovers(&self, left: &mut Vec<String>) {
        for (txn, op) in &self.checking {
            left.push(format!("status check of transaction {txn} by {op:?}"));
        }
    }
}

/// Which locks a reader may skip and which it may read through, learned while resolving
/// (client-go's snapshot `resolvedLocks` / `committedLocks`); sent with each later read in
/// the request context.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadLockSets {
    /// Transactions whose locks do not affect the read (rolled back, committed after it,
    /// or pushed past it).
    pub resolved: Vec<Timestamp>,
    /// Transactions committed at or before the read timestamp: read through their locks.
    pub committed: Vec<Timestamp>,
}

impl ReadLockSets {
    /// Adds what `other` learned, keeping each transaction once.
    pub fn merge(&mut self, other: &Self) {
        for ts in &other.resolved {
            if !self.resolved.contains(ts) {
                self.resolved.push(*ts);
            }
        }
        for ts in &other.committed {
            if !self.committed.contains(ts) {
                self.committed.push(*ts);
            }
        }
    }

    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        self.resolved.is_empty() && self.committed.is_empty()
    }

    /// Writes the sets into a request context.
    pub(crate) fn fill(&self, context: &mut kvrpcpb::Context) {
        context.resolved_locks = self.resolved.iter().map(|ts| ts.version()).collect();
        context.committed_locks = self.committed.iter().map(|ts| ts.version()).collect();
    }
}

/// What resolving a set of locks found (client-go's `ResolveLockResult`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolveOutcome {
    /// Milliseconds until the soonest still-alive lock expires; 0 when every lock was
    /// resolved (or may be ignored).
    pub ms_before_expiry: u64,
    /// Transactions a reader may now skip or read through.
    pub sets: ReadLockSets,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Time;

    fn committed(ts: u64) -> TxnStatus {
        TxnStatus {
            commit_ts: Some(Timestamp::from_version(ts)),
            ..TxnStatus::default()
        }
    }

    #[test]
    fn only_settled_statuses_are_remembered_first_in_first_out() {
        let mut resolver = Resolver::default();
        let alive = TxnStatus {
            ttl_ms: 3_000,
            ..TxnStatus::default()
        };
        resolver.remember(Timestamp::from_version(1), &alive);
        assert!(resolver.settled(Timestamp::from_version(1)).is_none());
        let pushed = TxnStatus {
            action: TxnAction::MinCommitTsPushed,
            ..TxnStatus::default()
        };
        assert!(!pushed.is_settled(), "a pushed lock is not a rollback");
        for ts in 0..=RESOLVED_CACHE_SIZE as u64 {
            resolver.remember(Timestamp::from_version(ts + 10), &committed(ts + 20));
        }
        assert!(
            resolver.settled(Timestamp::from_version(10)).is_none(),
            "the oldest went"
        );
        assert_eq!(
            resolver.settled(Timestamp::from_version(11)),
            Some(&committed(21))
        );
        // A settled status does not change.
        resolver.remember(Timestamp::from_version(11), &TxnStatus::default());
        assert_eq!(
            resolver.settled(Timestamp::from_version(11)),
            Some(&committed(21))
        );
    }

    #[test]
    fn a_check_is_claimed_once_and_its_waiters_wake_when_it_ends() {
        let mut resolver = Resolver::default();
        let mut waits = Waits::default();
        let mut out = Outbox::new(Time::ZERO);
        let txn = Timestamp::from_version(5);
        assert!(resolver.claim_check(txn, OpId(1)));
        assert!(
            resolver.claim_check(txn, OpId(1)),
            "the owner may ask again"
        );
        assert!(!resolver.claim_check(txn, OpId(2)));
        let call = out.next_id();
        waits.park(
            WaitKey::TxnStatus(5),
            crate::wait::Waiter { op: OpId(2), call },
        );
        resolver.forget(OpId(2), &mut waits, &mut out);
        assert!(out.next_ready().is_none(), "only the owner's end wakes");
        resolver.forget(OpId(1), &mut waits, &mut out);
        assert!(matches!(
            out.next_ready(),
            Some((OpId(2), id, Reply::Ready(Ok(())))) if id == call
        ));
        assert!(
            resolver.claim_check(txn, OpId(2)),
            "the check is free again"
        );
    }

    #[test]
    fn read_lock_sets_merge_without_duplicates() {
        let ts = Timestamp::from_version;
        let mut sets = ReadLockSets {
            resolved: vec![ts(1)],
            committed: vec![],
        };
        sets.merge(&ReadLockSets {
            resolved: vec![ts(1), ts(2)],
            committed: vec![ts(3)],
        });
        assert_eq!(sets.resolved, vec![ts(1), ts(2)]);
        assert_eq!(sets.committed, vec![ts(3)]);
        let mut context = kvrpcpb::Context::default();
        sets.fill(&mut context);
        assert_eq!(context.resolved_locks, vec![1, 2]);
        assert_eq!(context.committed_locks, vec![3]);
    }

    #[test]
    fn background_cleanups_stop_at_the_limit_and_free_their_slots() {
        let limit = crate::Config::default().async_resolve_limit();
        assert_eq!(limit, 10_000, "client-go's AsyncResolveLockSemaphoreLimit");
        let mut resolver = Resolver::default();
        for _ in 0..limit {
            assert!(resolver.start_background(limit));
        }
        assert!(!resolver.start_background(limit), "past the limit");
        resolver.end_background();
        assert!(
            resolver.start_background(limit),
            "a freed slot is taken again"
        );
        assert!(
            !Resolver::default().start_background(0),
            "a limit of 0: never"
        );
    }
}
