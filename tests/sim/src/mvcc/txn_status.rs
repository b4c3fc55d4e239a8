//! The transaction status cache (TiKV's `TxnStatusCache`): what a store has learnt about
//! finished transactions, from its own commands and from `BroadcastTxnStatus`.
//!
//! TiKV reads it in one place: a pessimistic prewrite of a transaction the cache knows is
//! committed is handled as a retried request, so that a late duplicate of a prewrite (of a
//! key the client did not lock, whose constraint check is normally skipped) finds the commit
//! record and succeeds without writing a stale lock.

use std::collections::BTreeMap;

use tikv_proto::kvrpcpb;

/// How many transactions the cache remembers; beyond it the oldest start ts is forgotten.
///
/// TiKV bounds its cache by `storage.txn-status-cache-capacity` and evicts the least recently
/// used entries older than 30 s; the model has no wall clock for that, so it drops the
/// smallest start ts instead.
pub const TXN_STATUS_CACHE_CAPACITY: usize = 1 << 20;

/// A transaction's state as the cache records it (TiKV's `TxnState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnState {
    /// Still running; `min_commit_ts` is the smallest ts it may commit at.
    Ongoing {
        /// At least the start ts.
        min_commit_ts: u64,
    },
    /// Committed at `commit_ts`.
    Committed {
        /// The commit ts.
        commit_ts: u64,
    },
    /// Rolled back.
    RolledBack,
}

impl TxnState {
    /// The state a `BroadcastTxnStatus` entry describes, read as TiKV's `TxnState::from_ts`
    /// reads it: rolled back wins, then a non-zero commit ts, else ongoing.
    pub fn from_status(status: &kvrpcpb::TxnStatus) -> Self {
        if status.rolled_back {
            Self::RolledBack
        } else if status.commit_ts == 0 {
            Self::Ongoing {
                min_commit_ts: status.min_commit_ts.max(status.start_ts),
            }
        } else {
            Self::Committed {
                commit_ts: status.commit_ts,
            }
        }
    }
}

/// The cache of one store. Only the "normal" half of TiKV's dual cache is kept: the half for
/// ongoing large transactions (`min_commit_ts` above the start ts) feeds TiKV's resolved-ts
/// tracking, which the model does not have.
#[derive(Clone, Debug, Default)]
pub(crate) struct TxnStatusCache {
    entries: BTreeMap<u64, TxnState>,
}

impl TxnStatusCache {
    /// Records `state` for `start_ts`. A final state (committed, rolled back) is never
    /// replaced; an ongoing transaction whose `min_commit_ts` is above its start ts belongs to
    /// the large-transaction half and is not recorded.
    pub(crate) fn upsert(&mut self, start_ts: u64, state: TxnState) {
        if let TxnState::Ongoing { min_commit_ts } = state {
            if min_commit_ts > start_ts {
                return;
            }
        }
        match self.entries.get_mut(&start_ts) {
            Some(existing @ TxnState::Ongoing { .. }) => *existing = state,
            Some(_) => {}
            None => {
                self.entries.insert(start_ts, state);
                if self.entries.len() > TXN_STATUS_CACHE_CAPACITY {
                    self.entries.pop_first();
                }
            }
        }
    }

    /// Records that `start_ts` committed at `commit_ts`.
    pub(crate) fn insert_committed(&mut self, start_ts: u64, commit_ts: u64) {
        self.upsert(start_ts, TxnState::Committed { commit_ts });
    }

    /// The commit ts of `start_ts` if the cache knows it committed.
    pub(crate) fn committed(&self, start_ts: u64) -> Option<u64> {
        match self.entries.get(&start_ts) {
            Some(TxnState::Committed { commit_ts }) => Some(*commit_ts),
            _ => None,
        }
    }

    /// What the cache knows about `start_ts`.
    pub(crate) fn get(&self, start_ts: u64) -> Option<TxnState> {
        self.entries.get(&start_ts).copied()
    }
}
