//! [`Sim`]: the whole simulated cluster as one deterministic value.
//!
//! PD and region metadata ([`Cluster`]), the storage every store shares (one MVCC store and
//! one raw store: replication is not modelled, every peer sees the same data), what each
//! store keeps in memory for transactions ([`Concurrency`]: its `max_ts`, the max-ts sync of
//! new leaders, in-memory pessimistic locks), injected faults, and the queue of pessimistic
//! lock requests waiting for other transactions' locks.
//! Wall-clock time comes in as `now_ms`; nothing reads the environment.

use std::collections::{BTreeMap, VecDeque};

use tikv_proto::kvrpcpb::{self, ApiVersion};
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as Resp;

use crate::cluster::{Cluster, ClusterConfig, ClusterError};
use crate::concurrency::Concurrency;
use crate::faults::Faults;
use crate::mvcc::{DEFAULT_LOCK_WAIT_TIMEOUT_MS, LockAcquire, LockWait, MvccStore};
use crate::raw::RawStore;
use crate::tikv::{Execution, TikvResponse};

/// How to build a [`Sim`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// PD, stores and regions.
    pub cluster: ClusterConfig,
    /// The stores' `storage.api-version`.
    pub api_version: ApiVersion,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            cluster: ClusterConfig::default(),
            api_version: ApiVersion::V1,
        }
    }
}

#[derive(Debug)]
struct Waiter {
    wait: LockWait,
    deadline_ms: u64,
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
    /// Each store's concurrency manager, max-ts sync status and in-memory pessimistic locks.
    pub concurrency: Concurrency,
    api_version: ApiVersion,
    waiters: BTreeMap<u64, Waiter>,
    next_wait: u64,
    /// Extra time every request to a store takes (a slow store).
    store_latency_ms: BTreeMap<u64, u64>,
    /// Split regions by size after writes.
    auto_split: bool,
    ready: VecDeque<(u64, TikvResponse)>,
    /// The transport-layer load each store reports in BatchCommands responses.
    transport_load: BTreeMap<u64, u64>,
    /// BatchCommands messages and entries each store received.
    batch_traffic: BTreeMap<u64, BatchTraffic>,
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
    /// A fresh cluster.
    ///
    /// Errors when the cluster configuration is impossible (no stores, zero cluster id...).
    pub fn new(config: SimConfig) -> Result<Self, ClusterError> {
        Ok(Self {
            cluster: Cluster::new(config.cluster)?,
            mvcc: MvccStore::new(),
            raw: RawStore::new(config.api_version),
            faults: Faults::default(),
            concurrency: Concurrency::default(),
            api_version: config.api_version,
            waiters: BTreeMap::new(),
            next_wait: 1,
            store_latency_ms: BTreeMap::new(),
            auto_split: false,
            ready: VecDeque::new(),
            transport_load: BTreeMap::new(),
            batch_traffic: BTreeMap::new(),
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

    /// Splits `region_id` at its middle key if its data (raw and transactional) is over the
    /// cluster's [`crate::cluster::SplitPolicy`], as TiKV's split checker does; returns the
    /// new region's id.
    ///
    /// Errors when the region does not exist.
    pub fn split_by_size(
        &mut self,
        region_id: u64,
        now_ms: u64,
    ) -> Result<Option<u64>, ClusterError> {
        use crate::cluster::KeyMode;
        let region = self
            .cluster
            .region(region_id)
            .map(|r| r.to_proto())
            .ok_or(ClusterError::RegionNotFound { region_id })?;
        let raw_mode = KeyMode::for_request(self.api_version as i32, false);
        let (raw_start, raw_end) = crate::tikv::request_space_range(&region, raw_mode);
        let (txn_start, txn_end) = crate::tikv::request_space_range(&region, KeyMode::Encoded);
        let raw = self.raw.range_stats(&raw_start, &raw_end, now_ms);
        let txn = self.mvcc.range_stats(&txn_start, &txn_end);
        // Split where most of the data is.
        let split_key = if raw.keys >= txn.keys {
            raw.middle_key.map(|key| raw_mode.to_boundary(&key))
        } else {
            txn.middle_key.map(|key| KeyMode::Encoded.to_boundary(&key))
        };
        let Some(split_key) = split_key else {
            return Ok(None);
        };
        self.cluster.maybe_split_by_size(
            region_id,
            raw.bytes + txn.bytes,
            raw.keys + txn.keys,
            &split_key,
        )
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

    pub(crate) fn auto_split(&self) -> bool {
        self.auto_split
    }

    /// The stores' API version.
    pub fn api_version(&self) -> ApiVersion {
        self.api_version
    }

    pub(crate) fn pessimistic_lock(
        &mut self,
        request: kvrpcpb::PessimisticLockRequest,
        now_ms: u64,
    ) -> Execution {
        match self.mvcc.pessimistic_lock(&request) {
            LockAcquire::Done(response) => {
                self.after_write();
                Execution::Done(TikvResponse::Batch(Resp::PessimisticLock(response)))
            }
            LockAcquire::Wait(wait) => {
                let timeout_ms = if wait.wait_timeout_ms == 0 {
                    DEFAULT_LOCK_WAIT_TIMEOUT_MS
                } else {
                    wait.wait_timeout_ms
                };
                let id = self.next_wait;
                self.next_wait += 1;
                self.waiters.insert(
                    id,
                    Waiter {
                        wait,
                        deadline_ms: now_ms.saturating_add(timeout_ms),
                    },
                );
                Execution::Parked(id)
            }
        }
    }

    /// After a command that may release locks: wake the waiters queued on those keys, oldest
    /// first, as TiKV's lock manager does.
    pub(crate) fn after_write(&mut self) {
        // Bounded: each pass either finishes waiters or leaves them parked.
        for _ in 0..64 {
            let released = self.mvcc.take_released_locks();
            if released.is_empty() {
                return;
            }
            for lock in released {
                let Some(id) = self
                    .waiters
                    .iter()
                    .find(|(_, waiter)| waiter.wait.key == lock.key)
                    .map(|(id, _)| *id)
                else {
                    continue;
                };
                let Some(waiter) = self.waiters.remove(&id) else {
                    continue;
                };
                match self.mvcc.wake_up_lock_wait(waiter.wait, &lock) {
                    LockAcquire::Done(response) => self
                        .ready
                        .push_back((id, TikvResponse::Batch(Resp::PessimisticLock(response)))),
                    LockAcquire::Wait(wait) => {
                        self.waiters.insert(
                            id,
                            Waiter {
                                wait,
                                deadline_ms: waiter.deadline_ms,
                            },
                        );
                    }
                }
            }
        }
    }

    /// Times out lock waits whose deadline passed.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let expired: Vec<u64> = self
            .waiters
            .iter()
            .filter(|(_, waiter)| waiter.deadline_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(waiter) = self.waiters.remove(&id) {
                let response = self.mvcc.lock_wait_timed_out(&waiter.wait);
                self.ready
                    .push_back((id, TikvResponse::Batch(Resp::PessimisticLock(response))));
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run next (wall-clock ms).
    pub fn next_timeout_ms(&self) -> Option<u64> {
        self.waiters.values().map(|w| w.deadline_ms).min()
    }

    /// The next answer to a parked request, if one is ready.
    pub fn poll_ready(&mut self) -> Option<(u64, TikvResponse)> {
        self.ready.pop_front()
    }
}
