//! The user handles: [`Client`] (the entry point), the raw KV API, region tools and range
//! tasks. They talk to the driver through a [`Handle`]; nothing here touches the machine's
//! state.

mod key_range;
pub mod range_task;
pub mod raw_client;
pub mod regions;
pub mod snapshot;
mod snapshot_cache;
pub mod transaction;

pub use key_range::KeyRange;

use crate::command::{MaintenanceCommand, PdCommand, RegionCommand};
use crate::config::Config;
use crate::driver::{self, Handle};
use crate::error::Error;
use crate::oracle::Timestamp;
use crate::runtime::Runtime;

/// A connected client: the entry point to every API (raw KV today; transactions next).
///
/// Cheap to clone. Created by the runtime crates' `connect` functions (or
/// [`Client::start`] with any [`Runtime`]). The driver task stops after
/// [`close`](Self::close), or once every clone and every API handle is dropped and the last
/// operation finished.
#[derive(Clone, Debug)]
pub struct Client {
    handle: Handle,
}

impl Client {
    /// Starts a client on `runtime` for the cluster behind `pd_endpoints`. The runtime is set
    /// up for `config` first ([`Runtime::configure`]): connections use `config.tls`, whatever
    /// TLS the runtime was built with.
    ///
    /// Errors with [`Error::InvalidArgument`] when no endpoint is given or the TLS material
    /// does not parse.
    pub fn start<R: Runtime>(
        runtime: R,
        pd_endpoints: Vec<String>,
        config: Config,
    ) -> Result<Self, Error> {
        driver::start(runtime, pd_endpoints, config).map(|handle| Self { handle })
    }

    /// [`start`](Self::start) with driver options: the command queue's capacity, an
    /// observer of every request and reply (tests).
    ///
    /// Errors as [`start`](Self::start).
    #[cfg(feature = "testing")]
    pub fn start_with<R: Runtime>(
        runtime: R,
        pd_endpoints: Vec<String>,
        config: Config,
        options: driver::Options,
    ) -> Result<Self, Error> {
        driver::start_with(runtime, pd_endpoints, config, options.into())
            .map(|handle| Self { handle })
    }

    /// Closes the client: new operations (from this handle, its clones and every API handle
    /// made from them) fail with [`Error::Closed`] from now on; operations already running
    /// finish as they would have (each is bounded by its timeouts and backoff budget); then
    /// every connection to PD and the stores is closed. Resolves once all of that is done,
    /// and at once on a client already closed.
    pub async fn close(&self) {
        self.handle.close().await;
    }

    /// How many operations the client's machine holds, counted after every message sent
    /// before this call was handled (so a cancel sent by a dropped future counts).
    ///
    /// Errors with [`Error::Closed`] when the driver is gone.
    #[cfg(feature = "testing")]
    pub async fn ops_in_flight(&self) -> Result<usize, Error> {
        self.handle.ops_in_flight().await
    }

    /// What the client knows of PD's group: the leader and the member URLs it discovers
    /// from.
    ///
    /// Errors with [`Error::Closed`] when the driver is gone.
    #[cfg(feature = "testing")]
    pub async fn pd_view(&self) -> Result<crate::machine::PdView, Error> {
        self.handle.pd_view().await
    }

    /// The most commands that ever waited in the driver's queue at once.
    #[cfg(feature = "testing")]
    pub fn command_queue_peak(&self) -> usize {
        self.handle.command_queue_peak()
    }

    /// The raw KV API.
    pub fn raw(&self) -> raw_client::RawClient {
        raw_client::RawClient::new(self.handle.clone())
    }

    /// Region tools (locate, split, scatter) in the transactional key space, as client-go's
    /// `KVStore.SplitRegions` and region cache lookups see keys. For raw keys use
    /// [`RawClient::regions`](crate::RawClient::regions).
    pub fn regions(&self) -> regions::Regions {
        regions::Regions::new(self.handle.clone(), crate::command::KeyMode::Txn)
    }

    /// Begins an optimistic transaction at a fresh TSO timestamp (client-go's
    /// `KVStore.Begin`).
    ///
    /// Errors when PD cannot give a timestamp within its backoff budget.
    pub async fn begin(&self) -> Result<transaction::Transaction, Error> {
        self.begin_with(transaction::TransactionOptions::new())
            .await
    }

    /// Begins an optimistic transaction with `options` (start timestamp, isolation, async
    /// commit, 1PC, ...).
    ///
    /// Errors when PD cannot give a timestamp within its backoff budget.
    pub async fn begin_with(
        &self,
        options: transaction::TransactionOptions,
    ) -> Result<transaction::Transaction, Error> {
        transaction::Transaction::begin(self.handle.clone(), options).await
    }

    /// A read-only view of the transactional key space as of `ts` (client-go's
    /// `KVStore.GetSnapshot`). Nothing is sent until it reads.
    pub fn snapshot(&self, ts: Timestamp) -> snapshot::Snapshot {
        snapshot::Snapshot::new(self.handle.clone(), ts)
    }

    /// Resolves other transactions' `locks` met by a transaction that started at
    /// `caller_start_ts` (client-go's `LockResolver.ResolveLocks`): settled transactions'
    /// locks are committed or rolled back, expired ones rolled back, and the answer says how
    /// long until the soonest lock still alive expires (0: none is).
    ///
    /// Errors when a status check or resolution fails within its backoff budget, or with
    /// [`Error::InvalidArgument`] for a shared-lock wrapper (resolve its holders' locks).
    pub async fn resolve_locks(
        &self,
        caller_start_ts: Timestamp,
        locks: Vec<crate::error::LockInfo>,
    ) -> Result<crate::resolver::ResolveOutcome, Error> {
        let command = crate::command::TxnCommand::ResolveLocks {
            caller_start_ts,
            locks,
        };
        self.handle.call(command.resolve_call()).await
    }

    /// Resolves other transactions' `locks` met by a read at `caller_start_ts` (client-go's
    /// `LockResolver.ResolveLocksForRead`): like [`resolve_locks`](Self::resolve_locks),
    /// and the answer also says which transactions the read may now skip (rolled back,
    /// pushed past the read, or committed after it: `sets.resolved`) or read through
    /// (committed at or before it: `sets.committed`); `ms_before_expiry` counts only locks
    /// that still block the read.
    ///
    /// Errors like [`resolve_locks`](Self::resolve_locks).
    pub async fn resolve_locks_for_read(
        &self,
        caller_start_ts: Timestamp,
        locks: Vec<crate::error::LockInfo>,
    ) -> Result<crate::resolver::ResolveOutcome, Error> {
        let command = crate::command::TxnCommand::ResolveLocksForRead {
            caller_start_ts,
            locks,
        };
        self.handle.call(command.resolve_call()).await
    }

    /// The status of the transaction that started at `txn` and whose primary key is
    /// `primary` (client-go's `LockResolver.GetTxnStatus`), for a caller that started at
    /// `caller_start_ts`: committed (with its commit timestamp), rolled back, or alive (the
    /// primary lock's TTL, its `min_commit_ts` pushed past `caller_start_ts`). A transaction
    /// the client already saw settled is answered from the resolver's cache without asking
    /// TiKV.
    ///
    /// Not read-only: the check rolls back a primary lock whose TTL ran out, and writes a
    /// rollback record when the primary holds neither a lock nor a record of the
    /// transaction (so a late prewrite of it fails). Wait a few seconds after a
    /// transaction's prewrite before asking, or it may be aborted.
    ///
    /// Errors when the primary's region or the timestamp cannot be had within 20 s of
    /// backoff, or with [`Error::Key`] carrying TiKV's answer when it refuses the check.
    pub async fn get_txn_status(
        &self,
        txn: Timestamp,
        caller_start_ts: Timestamp,
        primary: impl Into<bytes::Bytes>,
    ) -> Result<crate::resolver::TxnStatus, Error> {
        let command = crate::command::TxnCommand::GetTxnStatus {
            txn,
            caller_start_ts,
            primary: primary.into(),
        };
        self.handle.call(command.status_call()).await
    }

    /// Resolves `lock` whatever its TTL says (client-go's `ForceResolveLock`): the lock is
    /// treated as expired (TTL 0, TiKV's "resolve unconditionally"), so a live 2PC
    /// transaction is rolled back from its primary, and the lock is then committed or
    /// rolled back as its transaction's fate says. The answer is
    /// [`resolve_locks`](Self::resolve_locks)' for this one lock: an async-commit
    /// transaction cannot be forced (its outcome is decided by its secondaries), so while
    /// its primary lock lives by this client's clock `ms_before_expiry` says how long it
    /// has left and nothing was resolved.
    ///
    /// Errors like [`resolve_locks`](Self::resolve_locks).
    pub async fn force_resolve_lock(
        &self,
        mut lock: crate::error::LockInfo,
    ) -> Result<crate::resolver::ResolveOutcome, Error> {
        lock.ttl_ms = 0;
        self.resolve_locks(Timestamp::ZERO, vec![lock]).await
    }

    /// A timestamp from PD's TSO (requests from concurrent callers share one TSO call).
    ///
    /// Errors when PD cannot be reached within its backoff budget.
    pub async fn current_timestamp(&self) -> Result<Timestamp, Error> {
        self.timestamp(PdCommand::Timestamp).await
    }

    /// A recent timestamp without a PD round trip when the client saw one within
    /// [`Config::low_resolution_ts_staleness`] (client-go's low-resolution timestamp); may be
    /// older than the current time by that much.
    ///
    /// Errors when a fresh timestamp is needed and PD cannot be reached.
    pub async fn low_resolution_timestamp(&self) -> Result<Timestamp, Error> {
        self.timestamp(PdCommand::LowResolutionTimestamp).await
    }

    /// Deletes every version of every transactional key in `[start, end)` (`end` empty: to
    /// the end of the key space), one region at a time (client-go's `KVStore.DeleteRange`).
    /// Returns how many regions the range covered. Unlike a transaction, this is not
    /// atomic: a failure midway leaves the regions before it deleted.
    ///
    /// Errors with [`Error::Server`] when a store refuses, or when a region cannot be reached
    /// within its backoff budget (100 s per region).
    pub async fn delete_range(
        &self,
        start: impl Into<bytes::Bytes>,
        end: impl Into<bytes::Bytes>,
    ) -> Result<u64, Error> {
        self.txn_delete_range(start.into(), end.into(), false).await
    }

    /// [`delete_range`](Self::delete_range) with up to `concurrency` parts of the range in
    /// flight at once (client-go's `DeleteRange` with its concurrency; the range is cut into
    /// tasks of 128 regions by a [`RangeTaskRunner`](crate::range_task::RangeTaskRunner)).
    /// Returns how many regions the range covered.
    ///
    /// Errors as [`delete_range`](Self::delete_range); parts already deleted stay deleted.
    pub async fn delete_range_concurrently(
        &self,
        start: impl Into<bytes::Bytes>,
        end: impl Into<bytes::Bytes>,
        concurrency: usize,
    ) -> Result<u64, Error> {
        // A `KeyRange` keeps this method's "empty end: no bound" reading.
        let range = KeyRange {
            start_key: start.into(),
            end_key: end.into(),
        };
        let runner = range_task::RangeTaskRunner::new(self.regions(), concurrency);
        let stat = runner
            .run_on_range(range, |range| async move {
                let completed_regions = self
                    .txn_delete_range(range.start_key, range.end_key, false)
                    .await?;
                Ok(range_task::TaskStat {
                    completed_regions,
                    failed_regions: 0,
                })
            })
            .await
            .map_err(|failure| failure.error)?;
        Ok(stat.completed_regions)
    }

    /// Tells the stores holding `[start, end)` that the range is being deleted, without
    /// deleting anything (client-go's notify-only delete range task, which TiFlash
    /// replicas follow). Returns how many regions the range covered.
    ///
    /// Errors as [`delete_range`](Self::delete_range).
    pub async fn notify_delete_range(
        &self,
        start: impl Into<bytes::Bytes>,
        end: impl Into<bytes::Bytes>,
    ) -> Result<u64, Error> {
        self.txn_delete_range(start.into(), end.into(), true).await
    }

    async fn txn_delete_range(
        &self,
        start: bytes::Bytes,
        end: bytes::Bytes,
        notify_only: bool,
    ) -> Result<u64, Error> {
        let command = MaintenanceCommand::DeleteRange {
            start,
            end,
            notify_only,
        };
        self.handle.call(command.delete_range_call()).await
    }

    /// Drops the transactional keys of `[start, end)` straight from every store's storage,
    /// bypassing Raft, to free disk space fast (client-go's `KVStore.UnsafeDestroyRange`,
    /// used after GC). The range must never be read or written again; calling this twice
    /// on the same range is fine.
    ///
    /// Errors when PD's store list cannot be had, or with [`Error::Server`] naming every
    /// store that failed (each gets 5 minutes).
    pub async fn unsafe_destroy_range(
        &self,
        start: impl Into<bytes::Bytes>,
        end: impl Into<bytes::Bytes>,
    ) -> Result<(), Error> {
        let command = MaintenanceCommand::UnsafeDestroyRange {
            start: start.into(),
            end: end.into(),
        };
        self.handle.call(command.destroy_call()).await
    }

    /// The id of the cluster (client-go's `ClusterID`), asking PD first when the client has
    /// not talked to it yet.
    ///
    /// Errors when PD cannot be reached within its backoff budget.
    pub async fn cluster_id(&self) -> Result<u64, Error> {
        self.handle.call(PdCommand::cluster_id()).await
    }

    /// Waits until PD has finished scattering region `region_id` (client-go's
    /// `WaitScatterRegionFinish`): polls the region's operator, backing off between polls,
    /// for at most `budget` of backoff (`None`: client-go's 120 s). A region with no
    /// operator counts as finished.
    ///
    /// Errors when the budget runs out while the scatter still runs, or with PD's error.
    pub async fn wait_scatter_region_finish(
        &self,
        region_id: u64,
        budget: Option<std::time::Duration>,
    ) -> Result<(), Error> {
        let command = RegionCommand::WaitScatterRegionFinish {
            region_id,
            budget: budget.unwrap_or(std::time::Duration::from_millis(
                crate::backoff::WAIT_SCATTER_REGION_FINISH_BACKOFF_MS,
            )),
        };
        self.handle.call(command.wait_scatter_call()).await
    }

    /// Whether PD is scattering region `region_id` right now (client-go's
    /// `CheckRegionInScattering`).
    ///
    /// Errors when PD cannot be asked within 20 s of backoff.
    pub async fn check_region_in_scattering(&self, region_id: u64) -> Result<bool, Error> {
        let command = RegionCommand::CheckRegionInScattering { region_id };
        self.handle.call(command.scattering_call()).await
    }

    /// The transaction safe point (of the keyspace with API V2, else of the cluster): reads
    /// below it are no longer guaranteed, as GC may have removed what they need.
    ///
    /// Errors when PD cannot be reached within its backoff budget, or with PD's error.
    pub async fn txn_safe_point(&self) -> Result<Timestamp, Error> {
        self.timestamp(PdCommand::TxnSafePoint).await
    }

    /// Checks that a read at `start_ts` is above the transaction safe point (client-go's
    /// `CheckVisibility`, asking PD each time rather than trusting a cache); returns the
    /// safe point.
    ///
    /// Errors with [`Error::TxnAbortedByGc`] when `start_ts` is below it, or as
    /// [`txn_safe_point`](Self::txn_safe_point).
    pub async fn check_visibility(&self, start_ts: Timestamp) -> Result<Timestamp, Error> {
        self.timestamp(PdCommand::CheckVisibility { start_ts })
            .await
    }

    /// A timestamp `prev_secs` seconds older than now (client-go's `GetStaleTimestamp`, for
    /// stale reads): the newest TSO answer's physical time, moved on by the time since it
    /// arrived, minus `prev_secs`, with a zero logical part. Asks PD only when the client
    /// has no timestamp yet.
    ///
    /// Errors with [`Error::InvalidArgument`] when that is before the Unix epoch, or when a
    /// first timestamp cannot be had from PD.
    pub async fn stale_timestamp(&self, prev_secs: u64) -> Result<Timestamp, Error> {
        self.timestamp(PdCommand::StaleTimestamp { prev_secs })
            .await
    }

    /// The cluster's external timestamp (client-go's `GetExternalTimestamp`);
    /// [`Timestamp::ZERO`] when it was never set.
    ///
    /// Errors when PD cannot be reached within its backoff budget.
    pub async fn external_timestamp(&self) -> Result<Timestamp, Error> {
        self.timestamp(PdCommand::GetExternalTimestamp).await
    }

    /// Sets the cluster's external timestamp (client-go's `SetExternalTimestamp`).
    ///
    /// Errors with [`Error::Pd`] when PD refuses it: it may not move backwards or pass the
    /// current TSO.
    pub async fn set_external_timestamp(&self, timestamp: Timestamp) -> Result<(), Error> {
        self.handle
            .call(PdCommand::set_external_timestamp(timestamp))
            .await
    }

    async fn timestamp(&self, command: PdCommand) -> Result<Timestamp, Error> {
        self.handle.call(command.timestamp_call()).await
    }
}
