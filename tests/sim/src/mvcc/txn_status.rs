//! The transaction status cache (TiKV's `TxnStatusCache`): what a store has learnt about
//! finished transactions, from its own commands and from `BroadcastTxnStatus`.
//!
//! TiKV reads it in two places: a pessimistic prewrite of a transaction the cache knows is
//! committed is handled as a retried request, so that a late duplicate of a prewrite (of a
//! key the client did not lock, whose constraint check is normally skipped) finds the commit
//! record and succeeds without writing a stale lock; and the resolved-ts resolver reads the
//! `min_commit_ts` of ongoing large (pipelined) transactions from it.
//!
//! Every store has its own cache (see [`crate::concurrency`]).

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

/// The cache of one store, with TiKV's two halves: ongoing large transactions
/// (`min_commit_ts` above the start ts, looked up first) and everything else.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TxnStatusCache {
    entries: BTreeMap<u64, TxnState>,
    large: BTreeMap<u64, TxnState>,
}

impl TxnStatusCache {
    /// Records `state` for `start_ts` (TiKV's `TxnStatusCache::upsert`). An ongoing
    /// transaction whose `min_commit_ts` is above its start ts goes to the large half, where
    /// only a larger `min_commit_ts` replaces it; anything else goes to the normal half and
    /// also finishes a large-half entry. A final state (committed, rolled back) is never
    /// replaced.
    pub(crate) fn upsert(&mut self, start_ts: u64, state: TxnState) {
        if let TxnState::Ongoing { min_commit_ts } = state {
            if min_commit_ts > start_ts {
                match self.large.get_mut(&start_ts) {
                    Some(TxnState::Ongoing {
                        min_commit_ts: existing,
                    }) => *existing = (*existing).max(min_commit_ts),
                    Some(_) => {}
                    None => insert_capped(&mut self.large, start_ts, state),
                }
                return;
            }
        }
        match self.entries.get_mut(&start_ts) {
            Some(existing @ TxnState::Ongoing { .. }) => *existing = state,
            Some(_) => {}
            None => insert_capped(&mut self.entries, start_ts, state),
        }
        if let Some(existing @ TxnState::Ongoing { .. }) = self.large.get_mut(&start_ts) {
            *existing = state;
        }
    }

    /// Records every status of a `BroadcastTxnStatus` request (TiKV's
    /// `update_txn_status_cache`).
    pub(crate) fn apply_broadcast(&mut self, req: &kvrpcpb::BroadcastTxnStatusRequest) {
        for status in &req.txn_status {
            self.upsert(status.start_ts, TxnState::from_status(status));
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

    /// What the cache knows about `start_ts`: the large half first, as it is the newer
    /// word on a large transaction.
    pub(crate) fn get(&self, start_ts: u64) -> Option<TxnState> {
        self.large
            .get(&start_ts)
            .or_else(|| self.entries.get(&start_ts))
            .copied()
    }
}

/// Inserts into one half, dropping the smallest start ts beyond the capacity.
fn insert_capped(half: &mut BTreeMap<u64, TxnState>, start_ts: u64, state: TxnState) {
    half.insert(start_ts, state);
    if half.len() > TXN_STATUS_CACHE_CAPACITY {
        half.pop_first();
    }
}
