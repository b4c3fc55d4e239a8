//! What each TiKV store keeps in memory for transactions beside its data: the concurrency
//! manager's `max_ts` and its limit, the max-ts sync status of the regions it leads, the
//! leaders' in-memory pessimistic lock tables, and the store's transaction status cache.
//!
//! - **`max_ts` per store** (TiKV's `ConcurrencyManager`, one per store): every non-stale
//!   read the store serves raises it, and async-commit / 1PC prewrites take their
//!   `min_commit_ts` above it (`async_commit_timestamps`), so two regions on different stores
//!   answer different `min_commit_ts`. The shared MVCC store runs each command with the
//!   serving store's `max_ts` installed.
//! - **Sync after a leadership change** (raftstore's `require_updating_max_ts`): a region
//!   whose leader is new (leader transfer, split, merge target, restarted store) fetches a
//!   timestamp from PD and raises its store's `max_ts` to it; until then async-commit and 1PC
//!   prewrites get the `MaxTimestampNotSynced` region error (`Prewrite::check_max_ts_synced`).
//!   Here the sync happens as the next request arrives, unless the TSO is paused or
//!   [`Concurrency::hold_max_ts_sync`] holds it.
//! - **The `max_ts` limit** (`ConcurrencyManager::update_max_ts` with TiKV's
//!   `storage.max-ts.action-on-invalid-update = "error"`): a timestamp more than
//!   `storage.max-ts.max-drift` (60 s) ahead of PD's TSO is refused, and for the commands
//!   whose update checks the request origin (ScanLock, CheckTxnStatus, CheckSecondaryLocks,
//!   Cleanup), any timestamp ahead of the TSO is refused unless the request comes from TiDB.
//!   The refusal is a region error carrying TiKV's `invalid max_ts update` text. (TiKV's
//!   default action is to panic; a simulator answers instead.)
//! - **In-memory pessimistic locks** (TiKV's `PeerPessimisticLocks`, on by default): locks
//!   taken by PessimisticLock live only in the leader's memory. A graceful leader transfer
//!   or merge proposes them first (they become durable), a split hands them to the new
//!   regions' leaders; they are lost when the leader's store stops, or when proposing them
//!   fails ([`Concurrency::lose_locks_on_next_change`], TiKV's
//!   `invalidate_locks_before_transfer_leader` and `on_split_invalidate_locks` cases). With
//!   [`Concurrency::set_in_memory_pessimistic_locks`] off, locks are written through raft
//!   (TiKV's pipelined mode, answered once proposed) and survive a leader's crash, except
//!   those taken while a loss is armed for their region: their proposal has not committed
//!   when the region next changes hands (or its leader stops), and they are lost.
//! - **Transaction status cache per store** (TiKV's `TxnStatusCache`, part of each store's
//!   storage): a store learns a transaction's outcome from the commands it runs (commits,
//!   1PC, status checks, `ResolveLock` with keys) and from a `BroadcastTxnStatus` sent to
//!   it, and only that store knows it: a pessimistic prewrite of a transaction the serving
//!   store knows committed is treated as a retry, and a leader's resolved ts counts a
//!   pipelined transaction's locks from the `min_commit_ts` its own cache holds. The shared
//!   MVCC store runs each command with the serving store's cache installed.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use tikv_proto::codec;
use tikv_proto::errorpb;
use tikv_proto::kvrpcpb::{self, RequestOrigin};
use tikv_proto::tikvpb::batch_commands_request::request::Cmd as Req;

use crate::cluster::{LOGICAL_BITS, RegionChange};
use crate::mvcc::{TxnState, TxnStatusCache};
use crate::sim::Sim;

/// TiKV's default `storage.max-ts.max-drift`: how far (ms) a timestamp may run ahead of PD's
/// TSO before `max_ts` refuses it.
pub const DEFAULT_MAX_TS_DRIFT_MS: u64 = 60_000;

/// Per-store transaction state (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Concurrency {
    /// `max_ts` of each store that has served something.
    max_ts: BTreeMap<u64, u64>,
    /// Regions whose leader has not synced `max_ts` from the TSO yet.
    unsynced: BTreeSet<u64>,
    /// While set, no leader completes its sync.
    sync_held: bool,
    /// `storage.max-ts.max-drift` in ms.
    max_drift_ms: u64,
    /// Whether pessimistic locks are kept in the leader's memory.
    in_memory_locks: bool,
    /// Pessimistic locks that reached raft (`key -> (start_ts, for_update_ts)`): they survive
    /// what in-memory ones do not.
    durable_locks: BTreeMap<Bytes, (u64, u64)>,
    /// Size of `durable_locks` after its last pruning.
    durable_pruned_len: usize,
    /// Pending failures to carry in-memory locks over a leader change, split or merge.
    lock_loss: Vec<LockLoss>,
    /// Each store's transaction status cache (TiKV keeps one in each store's storage).
    txn_status: BTreeMap<u64, TxnStatusCache>,
}

/// A pending failure to carry in-memory pessimistic locks over a region change.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LockLoss {
    /// Only this region (`None`: any).
    region_id: Option<u64>,
    /// How many more changes it fires for.
    remaining: u32,
}

impl Default for Concurrency {
    fn default() -> Self {
        Self {
            max_ts: BTreeMap::new(),
            unsynced: BTreeSet::new(),
            sync_held: false,
            max_drift_ms: DEFAULT_MAX_TS_DRIFT_MS,
            in_memory_locks: true,
            durable_locks: BTreeMap::new(),
            durable_pruned_len: 0,
            lock_loss: Vec::new(),
            txn_status: BTreeMap::new(),
        }
    }
}

impl Concurrency {
    /// The `max_ts` of `store_id` (0 before it served anything that raises it).
    pub fn max_ts(&self, store_id: u64) -> u64 {
        self.max_ts.get(&store_id).copied().unwrap_or(0)
    }

    /// Whether the leader of `region_id` has synced `max_ts` since it became leader.
    pub fn is_max_ts_synced(&self, region_id: u64) -> bool {
        !self.unsynced.contains(&region_id)
    }

    /// Holds (or releases) every pending max-ts sync: while held, new leaders answer
    /// async-commit and 1PC prewrites with `MaxTimestampNotSynced`, as a TiKV leader does
    /// until its TSO request returns.
    pub fn hold_max_ts_sync(&mut self, held: bool) {
        self.sync_held = held;
    }

    /// Sets `storage.max-ts.max-drift` (ms).
    pub fn set_max_ts_drift_ms(&mut self, drift_ms: u64) {
        self.max_drift_ms = drift_ms;
    }

    /// Keeps pessimistic locks in the leaders' memory (`true`, TiKV's default) or writes
    /// them through raft (`false`, pipelined only). Applies to locks taken from now on.
    pub fn set_in_memory_pessimistic_locks(&mut self, on: bool) {
        self.in_memory_locks = on;
    }

    /// Makes the next `times` leader transfers, splits or merges of `region_id` (`None`: of
    /// any region) lose the in-memory pessimistic locks of the region instead of carrying
    /// them over, as when TiKV fails to propose them (the locks' owners then find them
    /// missing at prewrite). With in-memory locking off, pipelined locks the region takes
    /// while the loss is armed are acknowledged but not committed, and the change loses
    /// them too (the term moved on before their proposal committed).
    pub fn lose_locks_on_next_change(&mut self, region_id: Option<u64>, times: u32) {
        if times > 0 {
            self.lock_loss.push(LockLoss {
                region_id,
                remaining: times,
            });
        }
    }

    /// Whether a loss is pending for the next change of `region_id`.
    fn lock_loss_armed(&self, region_id: u64) -> bool {
        self.lock_loss
            .iter()
            .any(|rule| rule.remaining > 0 && rule.region_id.is_none_or(|id| id == region_id))
    }

    /// Consumes one pending loss for a change of any of `regions`.
    fn take_lock_loss(&mut self, regions: &[u64]) -> bool {
        let Some(rule) = self.lock_loss.iter_mut().find(|rule| {
            rule.remaining > 0 && rule.region_id.is_none_or(|id| regions.contains(&id))
        }) else {
            return false;
        };
        rule.remaining -= 1;
        self.lock_loss.retain(|rule| rule.remaining > 0);
        true
    }

    /// What `store_id`'s transaction status cache knows about the transaction `start_ts`
    /// (TiKV's `TxnStatusCache::get`: the large-transaction half first).
    pub fn txn_status(&self, store_id: u64, start_ts: u64) -> Option<TxnState> {
        self.txn_status
            .get(&store_id)
            .and_then(|cache| cache.get(start_ts))
    }

    /// `store_id`'s transaction status cache, if it has learnt anything yet.
    pub(crate) fn txn_status_cache(&self, store_id: u64) -> Option<&TxnStatusCache> {
        self.txn_status.get(&store_id)
    }

    /// `store_id`'s transaction status cache, created empty on first use.
    pub(crate) fn txn_status_cache_mut(&mut self, store_id: u64) -> &mut TxnStatusCache {
        self.txn_status.entry(store_id).or_default()
    }

    /// Whether pessimistic locks are kept in the leaders' memory (then they are not written
    /// through raft).
    pub(crate) fn in_memory_pessimistic_locks(&self) -> bool {
        self.in_memory_locks
    }

    /// Raises `store_id`'s `max_ts` to `ts` (`u64::MAX` is ignored, as TiKV ignores it).
    pub(crate) fn raise(&mut self, store_id: u64, ts: u64) {
        if ts == u64::MAX {
            return;
        }
        let max_ts = self.max_ts.entry(store_id).or_insert(0);
        *max_ts = (*max_ts).max(ts);
    }
}

/// Which `max_ts` limit an update is held to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Limit {
    /// PD's TSO plus the max drift.
    Drifted,
    /// PD's TSO itself (updates whose request origin is checked and is not TiDB).
    Exact,
}

/// The `max_ts` update a request makes: `(ts, limit)`.
type MaxTsUpdate = Option<(u64, Limit)>;

/// The limit an origin-checked update is held to.
fn origin_limit(ctx: Option<&kvrpcpb::Context>) -> Limit {
    let origin = ctx.map_or(0, |ctx| ctx.request_origin);
    if origin == RequestOrigin::TiDb as i32 {
        Limit::Drifted
    } else {
        Limit::Exact
    }
}

/// The update of a read, made before TiKV takes its snapshot (so before the region checks);
/// stale reads make none.
fn read_update(cmd: &Req) -> MaxTsUpdate {
    let (ctx, ts) = match cmd {
        Req::Get(r) => (r.context.as_ref(), r.version),
        Req::BatchGet(r) => (r.context.as_ref(), r.version),
        Req::Scan(r) => (r.context.as_ref(), r.version),
        Req::BufferBatchGet(r) => (r.context.as_ref(), r.version),
        Req::ScanLock(r) => return Some((r.max_version, origin_limit(r.context.as_ref()))),
        _ => return None,
    };
    if ctx.is_some_and(|ctx| ctx.stale_read) {
        return None;
    }
    Some((ts, Limit::Drifted))
}

/// The update of a write command, made while it runs (after the region checks).
fn write_update(cmd: &Req) -> MaxTsUpdate {
    let below_max = |ts: u64| if ts == u64::MAX { 0 } else { ts };
    match cmd {
        Req::CheckTxnStatus(r) => Some((
            r.lock_ts
                .max(below_max(r.current_ts))
                .max(below_max(r.caller_start_ts)),
            origin_limit(r.context.as_ref()),
        )),
        Req::CheckSecondaryLocks(r) => Some((r.start_version, origin_limit(r.context.as_ref()))),
        Req::Cleanup(r) => Some((r.start_version, origin_limit(r.context.as_ref()))),
        // Insert and CheckNotExists read the key.
        Req::Prewrite(r) => r
            .mutations
            .iter()
            .any(|m| {
                m.op == kvrpcpb::Op::Insert as i32 || m.op == kvrpcpb::Op::CheckNotExists as i32
            })
            .then_some((r.start_version, Limit::Drifted)),
        // Locks that read the value or check existence.
        Req::PessimisticLock(r) => (r.return_values
            || r.check_existence
            || r.mutations
                .iter()
                .any(|m| m.assertion == kvrpcpb::Assertion::NotExist as i32))
        .then_some((r.for_update_ts, Limit::Drifted)),
        _ => None,
    }
}

/// The region error TiKV answers a refused `max_ts` update with.
fn invalid_max_ts_update(ts: u64, limit: u64) -> errorpb::Error {
    errorpb::Error {
        message: format!("invalid max_ts update: {ts} exceeds the limit {limit}"),
        ..Default::default()
    }
}

/// A region's range (boundary space) in the key space of transactional keys.
pub(crate) fn txn_range(start: &Bytes, end: &Bytes) -> (Bytes, Bytes) {
    let decode = |boundary: &Bytes| {
        codec::decode_region_key(boundary)
            .map(Bytes::from)
            .unwrap_or_else(|_| boundary.clone())
    };
    (decode(start), decode(end))
}

impl Sim {
    /// Takes the cluster's leadership and shape changes, then lets new leaders sync their
    /// `max_ts` (see the [`crate::concurrency`] module docs).
    pub(crate) fn observe_cluster(&mut self, now_ms: u64) {
        self.take_cluster_changes();
        self.sync_max_ts(now_ms);
    }

    /// Takes the cluster's leadership and shape changes into what the stores keep in memory
    /// (without the max-ts sync, which needs the TSO).
    pub(crate) fn take_cluster_changes(&mut self) {
        for change in self.cluster.take_changes() {
            self.apply_change(change);
        }
    }

    fn apply_change(&mut self, change: RegionChange) {
        match change {
            RegionChange::LeaderTransferred {
                region_id,
                start_key,
                end_key,
                to_store,
                ..
            } => {
                self.concurrency.unsynced.insert(region_id);
                // A peer that becomes leader first applies everything committed.
                self.replicas.became_leader(region_id, to_store);
                // The old leader proposes its in-memory locks before it hands over.
                self.carry_locks(&[region_id], &start_key, &end_key, true);
            }
            RegionChange::Split {
                region_id,
                start_key,
                end_key,
                new_region_ids,
                before,
            } => {
                // The split is an entry of the region's log: each peer takes the new
                // layout when it applies it.
                self.replicas
                    .split(&before, &new_region_ids, self.clock_ms());
                // The new regions' peers on the leader's store campaign at once; the locks
                // move into their in-memory tables.
                self.concurrency
                    .unsynced
                    .extend(new_region_ids.iter().copied());
                let mut regions = new_region_ids;
                regions.push(region_id);
                self.carry_locks(&regions, &start_key, &end_key, false);
            }
            RegionChange::Merged {
                source_id,
                target_id,
                source_start,
                source_end,
                source,
                target_before,
            } => {
                // The target syncs after CommitMerge; the source proposed its locks before
                // PrepareMerge.
                self.concurrency.unsynced.remove(&source_id);
                self.concurrency.unsynced.insert(target_id);
                self.replicas
                    .merge(&source, &target_before, self.clock_ms());
                self.carry_locks(&[source_id, target_id], &source_start, &source_end, true);
            }
            RegionChange::StoreStopped { led, .. } => {
                for (_, start, end) in led {
                    self.lose_in_memory_locks(&start, &end);
                }
            }
            RegionChange::StoreRestarted { store_id, led } => {
                self.concurrency.unsynced.extend(led);
                self.replicas.store_restarted(store_id);
            }
        }
    }

    /// Carries the in-memory locks of `[start, end)` over a change of `regions`: lost when a
    /// loss is pending, made durable when `proposed`, left in memory otherwise.
    fn carry_locks(&mut self, regions: &[u64], start: &Bytes, end: &Bytes, proposed: bool) {
        if self.concurrency.take_lock_loss(regions) {
            self.lose_in_memory_locks(start, end);
        } else if proposed {
            let (start, end) = txn_range(start, end);
            for (key, start_ts, for_update_ts) in self.mvcc.pessimistic_locks_in(&start, &end) {
                self.concurrency
                    .durable_locks
                    .insert(key, (start_ts, for_update_ts));
            }
            self.prune_durable_locks();
        }
    }

    /// Drops the pessimistic locks of `[start, end)` (boundary space) that only a leader's
    /// memory held; returns how many.
    fn lose_in_memory_locks(&mut self, start: &Bytes, end: &Bytes) -> usize {
        let (start, end) = txn_range(start, end);
        let mut lost = 0;
        for (key, start_ts, for_update_ts) in self.mvcc.pessimistic_locks_in(&start, &end) {
            if self.concurrency.durable_locks.get(&key) == Some(&(start_ts, for_update_ts)) {
                continue;
            }
            if self.mvcc.lose_pessimistic_lock(&key, start_ts) {
                lost += 1;
            }
        }
        lost
    }

    /// Loses the in-memory pessimistic locks of region `region_id` now, as when its leader
    /// crashes; returns how many locks were lost (0 for an unknown region).
    pub fn lose_in_memory_pessimistic_locks(&mut self, region_id: u64) -> usize {
        let Some(region) = self.cluster.region(region_id) else {
            return 0;
        };
        let (start, end) = (region.start_key.clone(), region.end_key.clone());
        self.lose_in_memory_locks(&start, &end)
    }

    /// Lets every new leader fetch a timestamp from the TSO and raise its store's `max_ts`
    /// to it, unless the sync is held or the TSO is paused.
    fn sync_max_ts(&mut self, now_ms: u64) {
        if self.concurrency.unsynced.is_empty() || self.concurrency.sync_held {
            return;
        }
        let Ok(ts) = self.cluster.allocate_ts(1, now_ms) else {
            return;
        };
        let ts = ts.to_u64();
        for region_id in std::mem::take(&mut self.concurrency.unsynced) {
            let leader = self
                .cluster
                .region(region_id)
                .and_then(|region| region.leader())
                .map(|peer| peer.store_id);
            if let Some(store_id) = leader {
                self.concurrency.raise(store_id, ts);
            }
        }
    }

    /// The `max_ts` limit at `now_ms`: what PD's TSO would hand out now, plus the drift for
    /// [`Limit::Drifted`].
    fn max_ts_limit(&self, limit: Limit, now_ms: u64) -> u64 {
        let tso = self.cluster.last_ts().to_u64().max(now_ms << LOGICAL_BITS);
        match limit {
            Limit::Exact => tso,
            Limit::Drifted => tso.saturating_add(self.concurrency.max_drift_ms << LOGICAL_BITS),
        }
    }

    /// Checks an update against the limit; `Err` carries the refusal.
    fn check_max_ts_update(&self, update: MaxTsUpdate, now_ms: u64) -> Result<(), errorpb::Error> {
        let Some((ts, limit)) = update else {
            return Ok(());
        };
        if ts == u64::MAX {
            return Ok(());
        }
        let limit = self.max_ts_limit(limit, now_ms);
        if ts > limit {
            Err(invalid_max_ts_update(ts, limit))
        } else {
            Ok(())
        }
    }

    /// What a read does to `store_id`'s `max_ts` before the region checks: raises it, or
    /// refuses a timestamp past the limit.
    pub(crate) fn before_snapshot(
        &mut self,
        store_id: u64,
        cmd: &Req,
        now_ms: u64,
    ) -> Result<(), errorpb::Error> {
        let update = read_update(cmd);
        self.check_max_ts_update(update, now_ms)?;
        if let Some((ts, _)) = update {
            self.concurrency.raise(store_id, ts);
        }
        Ok(())
    }

    /// What a command's own checks refuse after the region checks passed: a `max_ts` update
    /// past the limit, or an async-commit / 1PC prewrite to a leader that has not synced.
    pub(crate) fn before_command(
        &self,
        region_id: u64,
        cmd: &Req,
        now_ms: u64,
    ) -> Result<(), errorpb::Error> {
        if let Req::Prewrite(r) = cmd {
            if (r.use_async_commit || r.try_one_pc) && !self.concurrency.is_max_ts_synced(region_id)
            {
                return Err(errorpb::Error {
                    max_timestamp_not_synced: Some(errorpb::MaxTimestampNotSynced {}),
                    ..Default::default()
                });
            }
        }
        self.check_max_ts_update(write_update(cmd), now_ms)
    }

    /// Installs `store_id`'s `max_ts` and transaction status cache in the shared MVCC store
    /// for one command.
    pub(crate) fn enter_store(&mut self, store_id: u64) {
        self.mvcc.set_max_ts(self.concurrency.max_ts(store_id));
        self.mvcc
            .swap_txn_status_cache(self.concurrency.txn_status_cache_mut(store_id));
    }

    /// Keeps what the command did to `max_ts` and to the cache as `store_id`'s.
    pub(crate) fn leave_store(&mut self, store_id: u64) {
        let max_ts = self.mvcc.max_ts();
        self.concurrency.max_ts.insert(store_id, max_ts);
        self.mvcc
            .swap_txn_status_cache(self.concurrency.txn_status_cache_mut(store_id));
    }

    /// After a PessimisticLock: with in-memory locking off, the locks it took went through
    /// raft and are durable, unless a lock loss is armed for the region: then the lock was
    /// acknowledged on proposal (TiKV's pipelined `ResponsePolicy::OnProposed`) and the
    /// proposal is still in flight when the region next changes hands, which drops it.
    pub(crate) fn note_pessimistic_locks(&mut self, req: &kvrpcpb::PessimisticLockRequest) {
        if self.concurrency.in_memory_locks {
            return;
        }
        let region_id = req.context.as_ref().map_or(0, |ctx| ctx.region_id);
        if self.concurrency.lock_loss_armed(region_id) {
            return;
        }
        for m in &req.mutations {
            let key = &m.key;
            let locks = self.mvcc.pessimistic_locks_in(key, &next_key(key));
            for (locked, start_ts, for_update_ts) in locks {
                if start_ts == req.start_version {
                    self.concurrency
                        .durable_locks
                        .insert(locked, (start_ts, for_update_ts));
                }
            }
        }
        self.prune_durable_locks();
    }

    /// Forgets durable-lock entries whose lock is gone, once the table has doubled.
    fn prune_durable_locks(&mut self) {
        let len = self.concurrency.durable_locks.len();
        if len < 1024 || len < 2 * self.concurrency.durable_pruned_len {
            return;
        }
        let mvcc = &self.mvcc;
        self.concurrency
            .durable_locks
            .retain(|key, (start_ts, for_update_ts)| {
                mvcc.pessimistic_locks_in(key, &next_key(key))
                    .first()
                    .is_some_and(|(_, s, f)| s == start_ts && f == for_update_ts)
            });
        self.concurrency.durable_pruned_len = self.concurrency.durable_locks.len();
    }
}

/// The smallest key after `key`.
fn next_key(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}
