//! Replicas with state: how far each follower and learner has applied its leader's log,
//! and each peer's safe ts (TiKV's `RegionReadProgress`), fed by the leaders' resolved ts.
//!
//! The data itself stays in the one shared store (see [`crate::sim`]); what a replica has
//! applied decides *when* it may serve a read, not what the read sees:
//!
//! - **The log.** Every write command a region's leader runs appends one entry to the
//!   region's log (its commit index moves by one). A follower or learner applies an entry
//!   `delay_ms` after it was committed and stays `entries` entries behind the commit index
//!   ([`ApplyLag`], per store, changeable at run time). The leader has always applied
//!   everything, and so has a peer the moment it becomes leader.
//! - **Splits and merges** (`admin.rs`) are log entries too: a follower or learner holds the
//!   region as it was (old range, old epoch) until it applies the entry, and has no peer of
//!   the regions a split created until then ([`crate::Sim::store_region`] shows what a
//!   store holds); requests to it are checked against that.
//! - **Replica reads** (`replica_read`, sent to a follower or learner) go through read
//!   index (`replica_read.rs`): the leader's commit index at arrival is the read index, the
//!   leader's `max_ts` is raised to the read's timestamp, and the read waits until the replica
//!   has applied that far. A read that was served at once also advances the replica's
//!   `read_index_safe_ts` (TiKV's follower read cache). Once served, the read sees the shared
//!   store, which holds everything up to the read index (and maybe more, as if the read
//!   had come later): what a replica that applied at least that far would answer.
//! - **Resolved ts and safe ts** (`resolved.rs`): every `resolved-ts.advance-ts-interval`
//!   (20 s, TiKV's default), each running store raises its `max_ts` to a timestamp from the
//!   TSO, and each region whose leader runs with a quorum of voters resolves: its resolved
//!   ts moves to the smaller of that timestamp and the oldest lock of the region that
//!   commits data (a Put or Delete lock; a pipelined transaction's locks count from the
//!   `min_commit_ts` the leader's transaction status cache knows). The leader's safe ts is
//!   the resolved ts; each other peer on a running store receives `(commit index, resolved
//!   ts)` and takes it as its safe ts once it has applied that index.
//! - **Stale reads** (`stale_read`) on a follower or learner are served when the read ts is
//!   at most the peer's safe ts (or `read_index_safe_ts`) and refused with `DataIsNotReady`
//!   otherwise; a read far above the safe ts asks for an early round. On the leader a stale
//!   read is always served (TiKV falls back to a leader read). Stale reads never raise
//!   `max_ts`.
//! - **Min resolved ts.** Every second each running store reports the smallest non-zero
//!   safe ts of its peers to PD, which keeps the cluster's minimum over stores leading at
//!   least one region (PD's `/pd/api/v1/min-resolved-ts`); `GetStoreSafeTS` answers a store's
//!   own minimum.
//!
//! Periodic work runs lazily: a call that brings a later `now_ms` first runs the rounds and
//! reports due by then, oldest first, so a run replays exactly and an idle cluster has no
//! timers ([`crate::Sim::next_timeout_ms`] only names the wake-ups of waiting reads).

mod admin;
mod replica_read;
mod resolved;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use admin::AdminEntry;

pub(crate) use replica_read::ReadGate;
pub use replica_read::{READ_WAIT_ID_BASE, data_is_not_ready};

/// The index a region's log starts at, for a region from bootstrap or a split (TiKV's
/// `RAFT_INIT_LOG_INDEX`); index 0 means "nothing" to a read progress.
pub const RAFT_INIT_LOG_INDEX: u64 = 5;

/// TiKV's default `resolved-ts.advance-ts-interval`.
pub const DEFAULT_ADVANCE_TS_INTERVAL_MS: u64 = 20_000;

/// The least time between the starts of two resolved-ts rounds, however soon a refused
/// stale read asks for one (TiKV's `DEFAULT_CHECK_LEADER_TIMEOUT_DURATION`, or the interval
/// when that is shorter).
pub const MIN_ADVANCE_GAP_MS: u64 = 5_000;

/// How often stores report their min resolved ts to PD and PD updates the cluster's
/// (TiKV's `raftstore.pd-report-min-resolved-ts-interval` and PD's
/// `pd-server.min-resolved-ts-persistence-interval`, both 1 s by default).
pub const REPORT_INTERVAL_MS: u64 = 1_000;

/// How far (in physical ms) a refused stale read must be above the safe ts before it asks
/// for an early resolved-ts round (TiKV's `check_stale_read_safe`).
pub const STALE_READ_NOTIFY_GAP_MS: u64 = 200;

/// How many `(apply index, safe ts)` items a peer keeps while it has not applied that far
/// (TiKV's `raftstore.region-read-progress-cap`).
pub const READ_PROGRESS_CAP: usize = 128;

/// How far a follower or learner trails its leader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyLag {
    /// An entry committed at `t` is applied at `t + delay_ms`.
    pub delay_ms: u64,
    /// The peer stays this many entries behind its leader's commit index (0 = none); with a
    /// positive value a read-index read waits until the lag is lowered.
    pub entries: u64,
}

/// How the cluster's replicas behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// The apply lag of every follower and learner (stores can be given their own with
    /// [`crate::Sim::set_apply_lag`]).
    pub apply_lag: ApplyLag,
    /// TiKV's `resolved-ts.advance-ts-interval` in ms (positive).
    pub advance_ts_interval_ms: u64,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            apply_lag: ApplyLag::default(),
            advance_ts_interval_ms: DEFAULT_ADVANCE_TS_INTERVAL_MS,
        }
    }
}

impl ReplicaConfig {
    /// Checks the settings as TiKV checks `resolved-ts.advance-ts-interval`.
    ///
    /// Errors with a message when the interval is zero.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.advance_ts_interval_ms == 0 {
            return Err("resolved-ts.advance-ts-interval can't be zero");
        }
        Ok(())
    }
}

/// What one peer has applied and may serve, as a test can observe it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerReadState {
    /// The last log index the peer applied.
    pub applied_index: u64,
    /// The largest ts a stale read may have on this peer (0 = none yet).
    pub safe_ts: u64,
    /// The largest read ts a read index found no conflicting in-flight lock for, usable by
    /// later stale reads on this peer (TiKV's follower read cache).
    pub read_index_safe_ts: u64,
}

/// One region's log as its leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RegionLog {
    /// The index of the last committed (and, on the leader, applied) entry.
    commit_index: u64,
    /// `(index, commit time)` of entries some peer may not have applied yet, oldest first.
    entries: VecDeque<(u64, u64)>,
    /// The leader's resolved ts (it never decreases while the region lives).
    resolved_ts: u64,
}

impl Default for RegionLog {
    fn default() -> Self {
        Self {
            commit_index: RAFT_INIT_LOG_INDEX,
            entries: VecDeque::new(),
            resolved_ts: 0,
        }
    }
}

/// One peer's apply and read progress (TiKV's `RegionReadProgressCore`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ReadProgress {
    applied_index: u64,
    safe_ts: u64,
    /// `(apply index, safe ts)` items not applicable yet, both increasing.
    pending: VecDeque<(u64, u64)>,
    read_index_safe_ts: u64,
    /// Items for indexes below this one are stale (they came before a merge).
    last_merge_index: u64,
}

impl ReadProgress {
    /// The peer applied up to `applied`: items it now covers become its safe ts.
    fn update_applied(&mut self, applied: u64) {
        self.applied_index = self.applied_index.max(applied);
        while let Some(&(index, ts)) = self.pending.front() {
            if index > self.applied_index {
                break;
            }
            self.pending.pop_front();
            self.safe_ts = self.safe_ts.max(ts);
        }
    }

    /// An `(apply index, safe ts)` item from the leader (TiKV's `update_safe_ts`).
    fn update_safe_ts(&mut self, index: u64, ts: u64) {
        if index == 0 || ts == 0 || index < self.last_merge_index {
            return;
        }
        if self.applied_index >= index {
            self.safe_ts = self.safe_ts.max(ts);
            return;
        }
        if let Some(last) = self.pending.back_mut() {
            if last.1 >= ts {
                return;
            }
            // A larger ts that needs no more data than the last item replaces its ts.
            if last.0 >= index {
                last.1 = ts;
                return;
            }
        }
        if self.pending.len() >= READ_PROGRESS_CAP {
            // Keep every other item, so old ones still help a peer that lags far behind.
            let mut keep = false;
            self.pending.retain(|_| {
                keep = !keep;
                keep
            });
        }
        self.pending.push_back((index, ts));
    }

    fn state(&self) -> PeerReadState {
        PeerReadState {
            applied_index: self.applied_index,
            safe_ts: self.safe_ts,
            read_index_safe_ts: self.read_index_safe_ts,
        }
    }
}

/// A replica read waiting for its replica to apply the read index.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ReadWait {
    pub(crate) store_id: u64,
    pub(crate) region_id: u64,
    pub(crate) request: crate::tikv::TikvRequest,
    /// The leader's commit index when the read got its read index (`None` while the
    /// leader's store is down).
    pub(crate) read_index: Option<u64>,
    /// The read's timestamp, which the leader's `max_ts` is raised to.
    pub(crate) read_ts: u64,
}

/// The replica state of the whole cluster (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct Replicas {
    config: ReplicaConfig,
    /// Apply lags of stores that have their own.
    store_lag: BTreeMap<u64, ApplyLag>,
    logs: BTreeMap<u64, RegionLog>,
    /// Progress by `(region id, store id)`.
    peers: BTreeMap<(u64, u64), ReadProgress>,
    /// When the next resolved-ts round is due (`None` before the clock is known).
    next_round_ms: Option<u64>,
    /// When the last round ran.
    last_round_ms: Option<u64>,
    /// When the next min-resolved-ts report is due.
    next_report_ms: Option<u64>,
    /// The min resolved ts each store last reported to PD.
    reported: BTreeMap<u64, u64>,
    /// PD's cluster-wide min resolved ts (it never decreases).
    pd_min_resolved_ts: u64,
    /// Replica reads waiting for their replica, by the id they are parked under.
    pub(crate) waits: BTreeMap<u64, ReadWait>,
    next_wait: u64,
    /// Splits and merges each `(region, store)` peer has not applied yet, oldest first.
    admin: BTreeMap<(u64, u64), VecDeque<AdminEntry>>,
    /// `(region, store)` pairs whose peer a split the store has not applied yet creates.
    not_created: BTreeSet<(u64, u64)>,
}

impl Replicas {
    /// Replica state for a fresh cluster.
    pub fn new(config: ReplicaConfig) -> Self {
        Self {
            config,
            store_lag: BTreeMap::new(),
            logs: BTreeMap::new(),
            peers: BTreeMap::new(),
            next_round_ms: None,
            last_round_ms: None,
            next_report_ms: None,
            reported: BTreeMap::new(),
            pd_min_resolved_ts: 0,
            waits: BTreeMap::new(),
            next_wait: 0,
            admin: BTreeMap::new(),
            not_created: BTreeSet::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> ReplicaConfig {
        self.config
    }

    /// The apply lag of peers on `store_id`.
    pub fn apply_lag(&self, store_id: u64) -> ApplyLag {
        self.store_lag
            .get(&store_id)
            .copied()
            .unwrap_or(self.config.apply_lag)
    }

    /// The commit index of `region_id` ([`RAFT_INIT_LOG_INDEX`] before its first write).
    pub fn commit_index(&self, region_id: u64) -> u64 {
        self.logs
            .get(&region_id)
            .map_or(RAFT_INIT_LOG_INDEX, |log| log.commit_index)
    }

    /// The resolved ts of `region_id`'s leader (0 before its first round).
    pub fn resolved_ts(&self, region_id: u64) -> u64 {
        self.logs.get(&region_id).map_or(0, |log| log.resolved_ts)
    }

    /// What the peer of `region_id` on `store_id` has applied and may serve, as of the last
    /// call that moved the clock (a peer the model has not met yet reads as all zero).
    pub fn peer(&self, region_id: u64, store_id: u64) -> PeerReadState {
        self.peers
            .get(&(region_id, store_id))
            .map(ReadProgress::state)
            .unwrap_or_default()
    }

    /// The min resolved ts `store_id` last reported to PD (0 before its first report).
    pub fn reported_min_resolved_ts(&self, store_id: u64) -> u64 {
        self.reported.get(&store_id).copied().unwrap_or(0)
    }

    /// PD's cluster-wide min resolved ts.
    pub fn pd_min_resolved_ts(&self) -> u64 {
        self.pd_min_resolved_ts
    }

    /// How many replica reads are waiting for their replica.
    pub fn waiting_reads(&self) -> usize {
        self.waits.len()
    }

    fn log_mut(&mut self, region_id: u64) -> &mut RegionLog {
        self.logs.entry(region_id).or_default()
    }

    /// The progress of a peer, created (as a peer that caught up with a snapshot) when the
    /// model meets it for the first time.
    fn progress_mut(&mut self, region_id: u64, store_id: u64) -> &mut ReadProgress {
        let commit_index = self.commit_index(region_id);
        self.peers
            .entry((region_id, store_id))
            .or_insert_with(|| ReadProgress {
                applied_index: commit_index,
                ..ReadProgress::default()
            })
    }

    /// The leader of `region_id` (on `leader_store`) committed and applied one entry at
    /// `now_ms`; `peer_stores` are the stores of all the region's peers, which start
    /// following the log here if the model had not met them yet.
    pub(crate) fn append(
        &mut self,
        region_id: u64,
        leader_store: u64,
        peer_stores: &[u64],
        now_ms: u64,
    ) {
        for store_id in peer_stores {
            self.progress_mut(region_id, *store_id);
        }
        let log = self.log_mut(region_id);
        log.commit_index += 1;
        let index = log.commit_index;
        log.entries.push_back((index, now_ms));
        self.advance_applied(region_id, leader_store, index);
    }

    /// `store_id`'s peer of `region_id` became leader: it has applied everything (and, if
    /// a split its store had not applied created it, that split first: only an existing
    /// peer can be elected).
    pub(crate) fn became_leader(&mut self, region_id: u64, store_id: u64) {
        self.create_by_split(region_id, store_id);
        let commit_index = self.commit_index(region_id);
        self.advance_applied(region_id, store_id, commit_index);
    }

    /// Moves a non-leader peer's applied index as far as its lag allows at `now_ms` (a
    /// peer a split has not created yet applies nothing).
    fn catch_up(&mut self, region_id: u64, store_id: u64, now_ms: u64) {
        if self.not_created.contains(&(region_id, store_id)) {
            return;
        }
        let lag = self.apply_lag(store_id);
        let Some(log) = self.logs.get(&region_id) else {
            return;
        };
        let cap = log.commit_index.saturating_sub(lag.entries);
        let applied = self
            .peers
            .get(&(region_id, store_id))
            .map_or(log.commit_index, |p| p.applied_index);
        if applied >= cap {
            return;
        }
        // Entries are consecutive and committed in time order: the ones old enough by now
        // are a prefix.
        let old_enough = log.entries.partition_point(|(_, committed_ms)| {
            committed_ms.saturating_add(lag.delay_ms) <= now_ms
        });
        let reached = match old_enough.checked_sub(1).and_then(|i| log.entries.get(i)) {
            Some((index, _)) => (*index).min(cap),
            // Nothing in the log is old enough, or everything the log still holds is.
            None => applied,
        };
        if reached > applied {
            self.advance_applied(region_id, store_id, reached);
        }
    }

    /// When a non-leader peer with this lag will have applied `index`, if time alone gets it
    /// there (`None` when the entry lag holds it back, or the entry is unknown).
    fn applied_at(&self, region_id: u64, store_id: u64, index: u64) -> Option<u64> {
        let lag = self.apply_lag(store_id);
        let log = self.logs.get(&region_id)?;
        if index > log.commit_index.saturating_sub(lag.entries) {
            return None;
        }
        let first = log.entries.front()?.0;
        let position = usize::try_from(index.checked_sub(first)?).ok()?;
        let (_, committed_ms) = log.entries.get(position)?;
        Some(committed_ms.saturating_add(lag.delay_ms))
    }

    /// Forgets log entries every known peer of the region has applied.
    fn prune(&mut self, region_id: u64) {
        let slowest = self
            .peers
            .range((region_id, 0)..=(region_id, u64::MAX))
            .map(|(_, p)| p.applied_index)
            .min();
        let Some(log) = self.logs.get_mut(&region_id) else {
            return;
        };
        let slowest = slowest.unwrap_or(log.commit_index);
        while log.entries.front().is_some_and(|(i, _)| *i <= slowest) {
            log.entries.pop_front();
        }
    }

    /// Forgets the peers of `region_id` on stores not in `stores` (removed peers).
    fn retain_peers(&mut self, region_id: u64, stores: &[u64]) {
        self.peers
            .retain(|(region, store), _| *region != region_id || stores.contains(store));
        self.retain_admin(region_id, stores);
    }

    /// `store_id` restarted: its peers start over with no safe ts (their read progress is
    /// rebuilt), keeping what they applied.
    pub(crate) fn store_restarted(&mut self, store_id: u64) {
        for ((_, store), progress) in self.peers.iter_mut() {
            if *store == store_id {
                progress.safe_ts = 0;
                progress.read_index_safe_ts = 0;
                progress.pending.clear();
            }
        }
    }

    /// Sets the apply lag of `store_id`'s peers (`None`: the default of every store without
    /// its own).
    pub(crate) fn set_apply_lag(&mut self, store_id: Option<u64>, lag: ApplyLag) {
        match store_id {
            Some(store_id) => {
                self.store_lag.insert(store_id, lag);
            }
            None => self.config.apply_lag = lag,
        }
    }

    /// Allocates the id of a new read wait.
    fn next_wait_id(&mut self) -> u64 {
        self.next_wait += 1;
        READ_WAIT_ID_BASE + self.next_wait
    }
}

#[cfg(test)]
mod tests;
