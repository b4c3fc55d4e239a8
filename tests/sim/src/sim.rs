//! [`Sim`]: the whole simulated cluster as one deterministic value.
//!
//! PD and region metadata ([`Cluster`]), the storage every store shares (one MVCC store and
//! one raw store: every peer reads the same data), what each store keeps in memory for
//! transactions ([`Concurrency`]: its `max_ts`, the max-ts sync of new leaders, in-memory
//! pessimistic locks, its transaction status cache), the replicas' apply and read progress
//! ([`Replicas`]: apply lag, read index, resolved and safe ts), injected faults, and TiKV's
//! lock manager ([`LockManager`]) with the pessimistic lock requests waiting for other
//! transactions' locks. Wall-clock time comes in as `now_ms`; nothing reads the
//! environment.

use std::collections::{BTreeMap, VecDeque};

use tikv_proto::kvrpcpb::{self, ApiVersion};
use tikv_proto::status::{Code, Status};
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as Resp;

use crate::cluster::{Cluster, ClusterConfig, ClusterError, KeyMode, SplitEntry};
use crate::concurrency::Concurrency;
use crate::faults::Faults;
use crate::lock_manager::{LockManager, LockManagerEvent, PessimisticTxnConfig, Waiter};
use crate::mvcc::TxnState;
use crate::mvcc::{LockAcquire, LockWaitUpdate, MvccStore, ReleasedLock};
use crate::raw::RawStore;
use crate::replica::{ApplyLag, ReplicaConfig, Replicas};
use crate::tikv::{Execution, TikvResponse};

/// How to build a [`Sim`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// PD, stores and regions.
    pub cluster: ClusterConfig,
    /// The stores' `storage.api-version`. In API V2 the `DEFAULT` keyspace's bounds are
    /// region boundaries from the start, as PD's keyspace manager splits them at bootstrap.
    pub api_version: ApiVersion,
    /// The stores' `[pessimistic-txn]` lock-waiting settings.
    pub pessimistic_txn: PessimisticTxnConfig,
    /// Followers' and learners' apply lag and the resolved-ts interval.
    pub replicas: ReplicaConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            cluster: ClusterConfig::default(),
            api_version: ApiVersion::V1,
            pessimistic_txn: PessimisticTxnConfig::default(),
            replicas: ReplicaConfig::default(),
        }
    }
}

/// The simulated cluster.
#[derive(Debug)]
pub struct Sim {
    /// PD's view and the region/store model; tests split, merge and move leaders through it.
    pub cluster: Cluster,
    /// Transactional storage.
    pub mvcc: MvccStore,
    /// Raw storage.
    pub raw: RawStore,
    /// Injected faults.
    pub faults: Faults,
    /// Each store's concurrency manager, max-ts sync status, in-memory pessimistic locks and
    /// transaction status cache.
    pub concurrency: Concurrency,
    /// What followers and learners applied, resolved and safe ts, waiting replica reads.
    pub(crate) replicas: Replicas,
    api_version: ApiVersion,
    lock_manager: LockManager,
    /// The latest `now_ms` seen: lock-manager timers armed by a command start from it.
    clock_ms: u64,
    /// Extra time every request to a store takes (a slow store).
    store_latency_ms: BTreeMap<u64, u64>,
    /// Split regions by size after writes.
    auto_split: bool,
    /// Bytes and keys written to each region since its last split check.
    split_check_diff: BTreeMap<u64, (u64, u64)>,
    /// Each region's approximate size, as its last split check measured it plus what was
    /// written since: a check skips the scan while it stays below the max.
    approximate: BTreeMap<u64, ApproximateSize>,
    /// Split-check scans run (each reads every entry of a region).
    split_scans: u64,
    /// Answers of parked requests (lock waits, replica reads) not yet polled.
    ready: VecDeque<(u64, TikvResponse)>,
    /// The transport-layer load each store reports in BatchCommands responses.
    transport_load: BTreeMap<u64, u64>,
    /// BatchCommands messages and entries each store received.
    batch_traffic: BTreeMap<u64, BatchTraffic>,
    /// Stores whose disk is (almost) full.
    disk_usage: BTreeMap<u64, DiskUsage>,
}

/// A region's size as TiKV keeps it between split checks (its approximate size and keys,
/// which TiKV reads from SST properties): measured by the last scan of the region, plus every
/// write since. Writes count keys and bytes as the split-check trigger counts them (a
/// prewrite and its commit both count), so the estimate only errs high, by at most about
/// twice what was written since the scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ApproximateSize {
    /// The region's epoch version when measured: a split or merge since makes it unknown.
    epoch_version: u64,
    bytes: u64,
    keys: u64,
}

/// How full a store's disk is (TiKV's `DiskUsage`): a leader on a full disk refuses the
/// writes whose `disk_full_opt` does not allow that much.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiskUsage {
    /// Room enough: every write proceeds.
    #[default]
    Normal,
    /// Past the almost-full threshold: only writes allowed on an almost full disk proceed.
    AlmostFull,
    /// Full: no write proceeds.
    AlreadyFull,
}

/// What one store received over BatchCommands streams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchTraffic {
    /// Messages received.
    pub messages: u64,
    /// Request entries in those messages.
    pub entries: u64,
}

impl Sim {
    /// A fresh cluster. In API V2 (and V3) the `DEFAULT` keyspace's raw and transactional
    /// bounds are split at bootstrap, as PD's keyspace manager does.
    ///
    /// Errors when the cluster configuration is impossible (no stores, zero cluster id, no
    /// PD member...) or the lock-waiting or resolved-ts settings are refused as TiKV refuses
    /// them.
    pub fn new(config: SimConfig) -> Result<Self, ClusterError> {
        config
            .pessimistic_txn
            .validate()
            .map_err(ClusterError::InvalidConfig)?;
        config
            .replicas
            .validate()
            .map_err(ClusterError::InvalidConfig)?;
        let mut cluster = config.cluster;
        if matches!(config.api_version, ApiVersion::V2 | ApiVersion::V3) {
            cluster.presplit_default_keyspace = true;
        }
        Ok(Self {
            cluster: Cluster::new(cluster)?,
            mvcc: MvccStore::new(),
            raw: RawStore::new(config.api_version),
            faults: Faults::default(),
            concurrency: Concurrency::default(),
            replicas: Replicas::new(config.replicas),
            api_version: config.api_version,
            lock_manager: LockManager::new(config.pessimistic_txn),
            clock_ms: 0,
            store_latency_ms: BTreeMap::new(),
            auto_split: false,
            split_check_diff: BTreeMap::new(),
            approximate: BTreeMap::new(),
            split_scans: 0,
            ready: VecDeque::new(),
            transport_load: BTreeMap::new(),
            batch_traffic: BTreeMap::new(),
            disk_usage: BTreeMap::new(),
        })
    }

    /// Makes `store_id` report `load` as its transport-layer load (TiKV's measure of how busy
    /// its gRPC threads are; clients hold batches back above their overload threshold).
    pub fn set_transport_load(&mut self, store_id: u64, load: u64) {
        if load == 0 {
            self.transport_load.remove(&store_id);
        } else {
            self.transport_load.insert(store_id, load);
        }
    }

    /// The transport-layer load `store_id` reports.
    pub fn transport_load(&self, store_id: u64) -> u64 {
        self.transport_load.get(&store_id).copied().unwrap_or(0)
    }

    /// Records one BatchCommands message of `entries` requests received by `store_id`.
    pub fn note_batch_message(&mut self, store_id: u64, entries: usize) {
        let traffic = self.batch_traffic.entry(store_id).or_default();
        traffic.messages += 1;
        traffic.entries += u64::try_from(entries).unwrap_or(u64::MAX);
    }

    /// What `store_id` received over BatchCommands so far.
    pub fn batch_traffic(&self, store_id: u64) -> BatchTraffic {
        self.batch_traffic
            .get(&store_id)
            .copied()
            .unwrap_or_default()
    }

    /// Sets how full `store_id`'s disk is: a leader there refuses the writes its usage does
    /// not allow with a `DiskFull` region error.
    pub fn set_disk_usage(&mut self, store_id: u64, usage: DiskUsage) {
        if usage == DiskUsage::Normal {
            self.disk_usage.remove(&store_id);
        } else {
            self.disk_usage.insert(store_id, usage);
        }
    }

    /// How full `store_id`'s disk is.
    pub fn disk_usage(&self, store_id: u64) -> DiskUsage {
        self.disk_usage.get(&store_id).copied().unwrap_or_default()
    }

    /// Makes every request to `store_id` take `latency_ms` longer (0 = normal speed).
    pub fn set_store_latency(&mut self, store_id: u64, latency_ms: u64) {
        if latency_ms == 0 {
            self.store_latency_ms.remove(&store_id);
        } else {
            self.store_latency_ms.insert(store_id, latency_ms);
        }
    }

    /// The extra latency of `store_id`.
    pub fn store_latency_ms(&self, store_id: u64) -> u64 {
        self.store_latency_ms.get(&store_id).copied().unwrap_or(0)
    }

    /// Runs TiKV's split check on `region_id` and splits it where the cluster's
    /// [`SplitPolicy`](crate::cluster::SplitPolicy) says (pieces of `region-split-keys`
    /// committed versions or `region-split-size` bytes once the region reaches the max),
    /// then checks the pieces again until none is due, as TiKV re-checks split regions;
    /// returns the ids of the regions created.
    ///
    /// Errors when the region does not exist.
    pub fn split_by_size(&mut self, region_id: u64, now_ms: u64) -> Result<Vec<u64>, ClusterError> {
        if self.cluster.region(region_id).is_none() {
            return Err(ClusterError::RegionNotFound { region_id });
        }
        let mut created = Vec::new();
        let mut pending = vec![region_id];
        // Bounded: each round either cuts a region or retires it.
        let mut rounds = 0;
        while let Some(id) = pending.pop() {
            rounds += 1;
            if rounds > 1024 {
                break;
            }
            let Some((cuts, measured)) = self.split_check(id, now_ms) else {
                continue;
            };
            self.split_scans += 1;
            if cuts.is_empty() {
                self.approximate.insert(id, measured);
                continue;
            }
            let new_ids = self.cluster.split_region(id, &cuts)?;
            pending.push(id);
            pending.extend(new_ids.iter().copied());
            created.extend(new_ids);
        }
        Ok(created)
    }

    /// Where TiKV's split checker would cut `region_id` now: its raw and transactional
    /// entries, in region-boundary space and key order, through the split policy; only cuts
    /// strictly inside the region, each once; with the region's size as the scan measured
    /// it. `None` when the region does not exist.
    fn split_check(
        &self,
        region_id: u64,
        now_ms: u64,
    ) -> Option<(Vec<bytes::Bytes>, ApproximateSize)> {
        let region = self.cluster.region(region_id)?.to_proto();
        let raw_mode = KeyMode::for_request(self.api_version as i32, false);
        let (raw_start, raw_end) = crate::tikv::request_space_range(&region, raw_mode);
        let (txn_start, txn_end) = crate::tikv::request_space_range(&region, KeyMode::Encoded);
        let to_boundary = |mode: KeyMode| {
            move |entry: SplitEntry| SplitEntry {
                key: mode.to_boundary(&entry.key),
                ..entry
            }
        };
        let inside = |key: &[u8]| {
            key >= &region.start_key[..] && (region.end_key.is_empty() || key < &region.end_key[..])
        };
        let mut entries: Vec<SplitEntry> = self
            .raw
            .split_check_entries(&raw_start, &raw_end, now_ms)
            .into_iter()
            .map(to_boundary(raw_mode))
            .chain(
                self.mvcc
                    .split_check_entries(&txn_start, &txn_end)
                    .into_iter()
                    .map(to_boundary(KeyMode::Encoded)),
            )
            .filter(|entry| inside(&entry.key))
            .collect();
        // Both parts are sorted already; a stable sort merges them.
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        let measured = ApproximateSize {
            epoch_version: region.region_epoch.map_or(0, |epoch| epoch.version),
            bytes: entries.iter().map(|entry| entry.size).sum(),
            keys: entries.iter().filter(|entry| entry.commit_version).count() as u64,
        };
        let mut cuts = self.cluster.config().split_policy.split_keys(&entries);
        cuts.retain(|key| key[..] > region.start_key[..] && inside(key));
        cuts.dedup();
        Some((cuts, measured))
    }

    /// Records a write of `keys` keys and `bytes` bytes to `region_id` and, with automatic
    /// splits on, runs the split check once the region has taken
    /// `raftstore.region-split-check-diff` bytes (or a sixteenth of `region-split-keys` keys)
    /// since its last check, as TiKV's split-check tick does. As TiKV's size and keys
    /// observers (`SizeCheckObserver::add_checker`, `KeysCheckObserver::add_checker`), the
    /// check scans the region only when its approximate size or key count has reached the
    /// max (or is unknown: a region split, merged or never measured): a scan reads every
    /// entry, and scanning a big region on every check stalled the whole cluster.
    pub(crate) fn note_write(&mut self, region_id: u64, keys: u64, bytes: u64, now_ms: u64) {
        if !self.auto_split {
            return;
        }
        let policy = self.cluster.config().split_policy;
        let diff = self.split_check_diff.entry(region_id).or_default();
        diff.0 = diff.0.saturating_add(bytes);
        diff.1 = diff.1.saturating_add(keys);
        if diff.0 < policy.region_split_check_diff && diff.1 < policy.check_diff_keys() {
            return;
        }
        let (bytes, keys) = self.split_check_diff.remove(&region_id).unwrap_or_default();
        let epoch_version = self
            .cluster
            .region(region_id)
            .map_or(0, |region| region.epoch.version);
        if let Some(approximate) = self
            .approximate
            .get_mut(&region_id)
            .filter(|approximate| approximate.epoch_version == epoch_version)
        {
            approximate.bytes = approximate.bytes.saturating_add(bytes);
            approximate.keys = approximate.keys.saturating_add(keys);
            if approximate.bytes < policy.region_max_size
                && approximate.keys < policy.region_max_keys
            {
                return;
            }
        }
        // A failed check only means no split this time.
        let _ = self.split_by_size(region_id, now_ms);
    }

    /// How many split-check scans ran (each reads every entry of one region): a test can
    /// tell a check that scanned from one that trusted the approximate size.
    pub fn split_scans(&self) -> u64 {
        self.split_scans
    }

    /// The store and request context that reach the leader of the region holding `key`
    /// (a key in region-boundary space, e.g. an API V1 raw key); `None` when no region or
    /// leader holds it. Handy for driving the cluster directly in tests.
    pub fn leader_context(&self, key: &[u8]) -> Option<(u64, kvrpcpb::Context)> {
        let region = self.cluster.region_by_key(key)?;
        let leader = region.leader()?.to_proto();
        let meta = region.to_proto();
        Some((
            leader.store_id,
            kvrpcpb::Context {
                region_id: meta.id,
                region_epoch: meta.region_epoch,
                peer: Some(leader),
                ..Default::default()
            },
        ))
    }

    /// Whether writes trigger size-based splits of the region they wrote to.
    pub fn set_auto_split(&mut self, on: bool) {
        self.auto_split = on;
    }

    /// Whether writes trigger automatic splits (off unless [`Sim::set_auto_split`] turned
    /// them on).
    pub fn auto_split(&self) -> bool {
        self.auto_split
    }

    /// The stores' API version.
    pub fn api_version(&self) -> ApiVersion {
        self.api_version
    }

    /// The lock manager: parked lock requests and their queues.
    pub fn lock_manager(&self) -> &LockManager {
        &self.lock_manager
    }

    /// Moves the simulated clock to `now_ms` (never backwards), takes the cluster's region
    /// changes, lets followers apply the splits and merges their lag allows, and runs the
    /// replica work (resolved-ts rounds, min-resolved-ts reports) due
    /// by then.
    pub(crate) fn advance_clock(&mut self, now_ms: u64) {
        self.clock_ms = self.clock_ms.max(now_ms);
        self.take_cluster_changes();
        // Followers behind a split or merge apply it once their lag lets them.
        self.replicas.catch_up_all(self.clock_ms);
        self.run_replica_work(self.clock_ms);
    }

    /// The latest `now_ms` the cluster has seen.
    pub(crate) fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// The replicas' state: what each peer applied, resolved and safe ts, PD's min resolved
    /// ts.
    pub fn replicas(&self) -> &Replicas {
        &self.replicas
    }

    /// Sets the apply lag of the followers and learners on `store_id` (`None`: of every
    /// store without a lag of its own), at run time; waiting replica reads that the new lag
    /// lets through are answered (see [`Sim::poll_ready`]).
    pub fn set_apply_lag(&mut self, store_id: Option<u64>, lag: ApplyLag) {
        self.replicas.set_apply_lag(store_id, lag);
        self.poll_read_waits(self.clock_ms);
    }

    /// What `store_id`'s transaction status cache knows about the transaction `start_ts`.
    pub fn txn_status(&self, store_id: u64, start_ts: u64) -> Option<TxnState> {
        self.concurrency.txn_status(store_id, start_ts)
    }

    pub(crate) fn pessimistic_lock(
        &mut self,
        request: kvrpcpb::PessimisticLockRequest,
        now_ms: u64,
    ) -> Execution {
        self.advance_clock(now_ms);
        match self.mvcc.pessimistic_lock(&request) {
            LockAcquire::Done(response) => {
                self.after_write();
                Execution::Done(TikvResponse::Batch(Resp::PessimisticLock(response)))
            }
            LockAcquire::Wait(wait) => {
                Execution::Parked(self.lock_manager.push(wait, self.clock_ms))
            }
        }
    }

    /// After a command: wakes the waiters of the keys whose locks it released and points the
    /// waiters of keys it newly locked at the new lock, as TiKV's scheduler does with the
    /// command's released and newly acquired locks.
    pub(crate) fn after_write(&mut self) {
        // Bounded: each pass answers, resumes or refreshes parked requests; resumed requests
        // may lock keys and so need one more pass.
        for _ in 0..64 {
            let released = self.mvcc.take_released_locks();
            let new_locks = self.mvcc.take_new_locks();
            if released.is_empty() && new_locks.is_empty() {
                return;
            }
            for lock in released {
                self.wake_up(&lock);
            }
            for lock_info in new_locks {
                self.refresh_waiters(&lock_info);
            }
        }
    }

    /// TiKV's `on_release_locks` for one released lock.
    fn wake_up(&mut self, released: &ReleasedLock) {
        let woken = self.lock_manager.pop_for_waking_up(
            &released.key,
            released.start_ts,
            released.commit_ts,
            self.clock_ms,
        );
        for waiter in woken {
            if waiter.wait.is_force_lock() {
                self.resume(waiter);
            } else {
                let response =
                    self.mvcc
                        .lock_wait_woken(&waiter.wait, released.start_ts, released.commit_ts);
                self.answer(waiter.id, response);
            }
        }
    }

    /// Runs a woken ForceLock request again; it answers, or waits again with its old deadline.
    fn resume(&mut self, mut waiter: Waiter) {
        match self.mvcc.resume_lock_wait(waiter.wait) {
            LockAcquire::Done(response) => self.answer(waiter.id, response),
            LockAcquire::Wait(wait) => {
                waiter.wait = wait;
                self.lock_manager.push_back(waiter);
            }
        }
    }

    /// TiKV's `update_lock_wait` for one newly acquired lock.
    fn refresh_waiters(&mut self, lock_info: &kvrpcpb::LockInfo) {
        for id in self.lock_manager.queued_on(&lock_info.key) {
            let Some(waiter) = self.lock_manager.waiter_mut(id) else {
                continue;
            };
            match self.mvcc.refresh_lock_wait(&mut waiter.wait, lock_info) {
                LockWaitUpdate::Unchanged => {}
                LockWaitUpdate::Updated => waiter.last_updated_ms = Some(self.clock_ms),
                LockWaitUpdate::Deadlock(response) => {
                    self.lock_manager.remove(id);
                    self.answer(id, response);
                }
            }
        }
    }

    fn answer(&mut self, id: u64, response: kvrpcpb::PessimisticLockResponse) {
        self.ready
            .push_back((id, TikvResponse::Batch(Resp::PessimisticLock(response))));
    }

    /// Runs the timers due at `now_ms`: the lock manager's (lock waits that time out,
    /// answered KeyIsLocked, and delayed wake-ups, answered WriteConflict or resumed in
    /// ForceLock mode), the replica work due by then, and replica reads whose replica has
    /// caught up.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.advance_clock(now_ms);
        self.poll_read_waits(self.clock_ms);
        while let Some(event) = self.lock_manager.pop_due(self.clock_ms) {
            match event {
                LockManagerEvent::TimedOut(waiter) => {
                    let duration = waiter.duration_to_last_update_ms(self.clock_ms);
                    let response = self.mvcc.lock_wait_timed_out(&waiter.wait, duration);
                    self.answer(waiter.id, response);
                }
                LockManagerEvent::DelayedWakeUp {
                    legacy,
                    resumable,
                    conflict_start_ts,
                    conflict_commit_ts,
                } => {
                    for waiter in legacy {
                        let response = self.mvcc.lock_wait_woken(
                            &waiter.wait,
                            conflict_start_ts,
                            conflict_commit_ts,
                        );
                        self.answer(waiter.id, response);
                    }
                    if let Some(waiter) = resumable {
                        self.resume(waiter);
                    }
                    self.after_write();
                }
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run next (wall-clock ms): the
    /// lock manager's next deadline or the time a waiting replica read's replica catches up.
    /// The periodic replica work needs no timer (it runs when the clock next moves).
    pub fn next_timeout_ms(&self) -> Option<u64> {
        let locks = self.lock_manager.next_deadline_ms();
        let reads = self.next_read_wake_ms();
        match (locks, reads) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Queues the answer of parked request `id`.
    pub(crate) fn push_ready(&mut self, id: u64, response: TikvResponse) {
        self.ready.push_back((id, response));
    }

    /// KvBroadcastTxnStatus on `store_id`: the statuses go into that store's transaction
    /// status cache only. TiKV updates the cache without taking a snapshot, so no region,
    /// epoch or leader is checked; a stopped store fails it as UNAVAILABLE.
    pub(crate) fn broadcast_txn_status(
        &mut self,
        store_id: u64,
        request: &kvrpcpb::BroadcastTxnStatusRequest,
    ) -> Execution {
        if !self
            .cluster
            .store(store_id)
            .is_some_and(|store| store.running)
        {
            return Execution::Failed(Status::new(
                Code::Unavailable,
                format!("store {store_id} is not running"),
            ));
        }
        self.concurrency
            .txn_status_cache_mut(store_id)
            .apply_broadcast(request);
        Execution::Done(TikvResponse::Batch(Resp::BroadcastTxnStatus(
            kvrpcpb::BroadcastTxnStatusResponse {},
        )))
    }

    /// The next answer to a parked request, if one is ready.
    pub fn poll_ready(&mut self) -> Option<(u64, TikvResponse)> {
        self.ready.pop_front()
    }
}
