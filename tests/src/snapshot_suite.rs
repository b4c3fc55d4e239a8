//! Snapshot reads and lock resolution end to end, written once and run under every runtime
//! (see `tests/snapshot_tokio.rs` and `tests/snapshot_async_std.rs`): client-go's snapshot,
//! scan and lock-resolution tests, ported, plus checks of every path of the lock resolver.
//!
//! Every test serves its own simulated cluster ([`SimServer`]) and connects a [`Client`] with
//! the runtime under test (and, where Go uses a second lock resolver, a second client). Most
//! committed data and the locks a read meets are placed directly through a [`Writer`], which
//! sends the cluster the Prewrite / Commit / PessimisticLock requests client-go's committer
//! would send (the suite predates our committer); tests about the committer or whose locks
//! it can place use the client's own commit, stopped after the prewrite where the locks
//! must stay. Where the Go tests use failpoints or the lock resolver's callbacks, these
//! tests use the cluster's fault injection and a log of every request the client sent
//! ([`RequestLog`]).
//!
//! Lock TTLs here are either long (the lock outlives the test) or already over when the
//! read starts: tests that need a read to wait for a lock to expire run in the deterministic
//! simulation (`tests/snapshot_simulation.rs`), where time is virtual. The exception is
//! `test_clean_lock`, whose commit waits for 3 s locks to expire as long as it takes.
//!
//! - [`snapshot`] ports `integration_tests/snapshot_test.go`.
//! - [`snapshot_fail`] ports the read tests of `integration_tests/snapshot_fail_test.go`.
//! - [`scan`] ports `integration_tests/scan_test.go` and `scan_mock_test.go`.
//! - [`lock`] ports the read and lock-resolution tests of `integration_tests/lock_test.go`.
//! - [`resolver`] checks every path of the lock resolver as a read takes it, with no Go
//!   counterpart (committed and rolled-back primaries, async commit, missing primaries,
//!   pessimistic locks, reads across regions, reverse and key-only scans, limits, commit
//!   timestamps, API V2 keyspaces).

pub mod lock;
pub mod resolver;
pub mod scan;
pub mod snapshot;
pub mod snapshot_fail;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tikv_core::driver::Observer;
use tikv_core::rpc::{Request, StoreRequest};
use tikv_core::{Client, Config, Snapshot, Timestamp};
use tikv_proto::kvrpcpb::ApiVersion;
use tikv_proto::rpc::BoxFuture;
use tikv_sim::cluster::{ClusterConfig, KeyspaceOptions};
use tikv_sim::{Sim, SimConfig, SimServer};

use crate::txn_fixture::{Space, Writer, wall_clock_ms};

/// What a runtime provides to the suite.
pub trait Env: Sync {
    /// Serves `sim` on loopback ports and connects a client to it with `config` and the
    /// driver `options` (the request log's observer), on this runtime.
    fn serve(
        &self,
        sim: Sim,
        config: Config,
        options: tikv_core::driver::Options,
    ) -> BoxFuture<'_, (SimServer, Client)>;

    /// Connects another client on this runtime to the cluster whose PD answers at `pd`
    /// (a second client has its own lock-resolver cache, as client-go's
    /// `NewLockResolver` does).
    fn connect(&self, pd: &str, config: Config) -> Client;

    /// Completes after `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// How long any wait for a condition may take before the test fails.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// Every store request the client sent, in order (the driver's observer).
#[derive(Debug, Default)]
pub struct RequestLog {
    requests: Mutex<Vec<StoreRequest>>,
}

impl Observer for RequestLog {
    fn transmit(&self, transmit: &tikv_core::machine::Transmit) {
        if let Request::Store(request) = &transmit.request {
            self.lock().push((**request).clone());
        }
    }

    fn reply(
        &self,
        _id: tikv_core::machine::RequestId,
        _reply: &Result<tikv_core::rpc::Response, tikv_proto::rpc::RpcError>,
    ) {
    }
}

impl RequestLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<StoreRequest>> {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the requests sent so far.
    pub fn take(&self) -> Vec<StoreRequest> {
        std::mem::take(&mut *self.lock())
    }

    /// The requests sent so far.
    pub fn all(&self) -> Vec<StoreRequest> {
        self.lock().clone()
    }

    /// The names of the requests sent so far (`KvGet`, `KvCheckTxnStatus`, ...).
    pub fn names(&self) -> Vec<&'static str> {
        self.lock().iter().map(StoreRequest::name).collect()
    }

    /// How many requests named `name` were sent so far.
    pub fn count(&self, name: &str) -> usize {
        self.lock().iter().filter(|r| r.name() == name).count()
    }
}

/// How a test's cluster is laid out.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    /// Region boundaries at these user keys.
    pub splits: Vec<Vec<u8>>,
    /// API V2, the client in this keyspace (created with the others).
    pub keyspace: Option<&'static str>,
    /// Other keyspaces to create first (API V2).
    pub other_keyspaces: Vec<&'static str>,
    /// The client's [`Config::with_async_resolve_limit`] (`None`: the default).
    pub async_resolve_limit: Option<usize>,
}

/// A running simulated cluster, a client connected to it and the log of what it sent.
#[derive(Debug)]
pub struct TestCluster {
    /// The served cluster.
    pub server: SimServer,
    /// The client under test.
    pub client: Client,
    /// Every store request the client sent.
    pub log: Arc<RequestLog>,
    /// Where the client's keys live.
    pub space: Space,
    /// The other keyspaces of [`Layout::other_keyspaces`], in order.
    pub other_spaces: Vec<Space>,
    /// The client's configuration.
    pub client_config: Config,
}

/// Starts a cluster of three stores in API V1 with one region.
pub async fn start(env: &dyn Env) -> TestCluster {
    start_with(env, Layout::default()).await
}

/// Starts a cluster laid out as `layout`.
pub async fn start_with(env: &dyn Env, layout: Layout) -> TestCluster {
    let api_version = if layout.keyspace.is_some() {
        ApiVersion::V2
    } else {
        ApiVersion::V1
    };
    let mut sim = Sim::new(SimConfig {
        cluster: ClusterConfig::default(),
        api_version,
        ..SimConfig::default()
    })
    .unwrap_or_else(|err| panic!("building the cluster: {err}"));
    let mut space = Space::V1;
    let mut other_spaces = Vec::new();
    let mut config = Config::default();
    if let Some(name) = layout.keyspace {
        for other in &layout.other_keyspaces {
            other_spaces.push(create_keyspace(&mut sim, other));
        }
        space = create_keyspace(&mut sim, name);
        config = config.with_keyspace(name);
    }
    if let Some(limit) = layout.async_resolve_limit {
        config = config.with_async_resolve_limit(limit);
    }
    for key in &layout.splits {
        sim.cluster
            .split_at(&space.boundary(key))
            .unwrap_or_else(|err| panic!("split at {key:?}: {err}"));
    }
    let log = Arc::new(RequestLog::default());
    let options = tikv_core::driver::Options {
        observer: Some(Arc::clone(&log) as Arc<dyn Observer>),
        ..tikv_core::driver::Options::default()
    };
    let (server, client) = env.serve(sim, config.clone(), options).await;
    TestCluster {
        server,
        client,
        log,
        space,
        other_spaces,
        client_config: config,
    }
}

/// Creates keyspace `name` in `sim`; returns where its transactional keys live.
fn create_keyspace(sim: &mut Sim, name: &str) -> Space {
    let meta = sim
        .cluster
        .create_keyspace(name, &KeyspaceOptions::default(), wall_clock_ms())
        .unwrap_or_else(|err| panic!("creating keyspace {name}: {err}"));
    match meta.keyspace {
        Some(tikv_proto::keyspacepb::keyspace_meta::Keyspace::Id(id)) => Space::Keyspace(id),
        _ => panic!("keyspace {name} has no id"),
    }
}

impl TestCluster {
    /// Runs `f` with a [`Writer`] on the cluster, at the wall clock the served cluster uses.
    pub fn write<R>(&self, f: impl FnOnce(&mut Writer<'_>) -> R) -> R {
        self.write_in(self.space, f)
    }

    /// Like [`write`](Self::write), for keys of `space`.
    pub fn write_in<R>(&self, space: Space, f: impl FnOnce(&mut Writer<'_>) -> R) -> R {
        self.server
            .with(|sim| f(&mut Writer::new(sim, wall_clock_ms(), space)))
    }

    /// Another client of the cluster, with its own caches and driver.
    pub fn another_client(&self, env: &dyn Env) -> Client {
        env.connect(self.server.pd_address(), self.client_config.clone())
    }

    /// A fresh timestamp from the client.
    pub async fn ts(&self) -> Timestamp {
        ok("timestamp", self.client.current_timestamp().await)
    }

    /// A snapshot at a fresh timestamp.
    pub async fn snapshot(&self) -> Snapshot {
        let ts = self.ts().await;
        self.client.snapshot(ts)
    }

    /// The id of the region holding user key `key`.
    pub fn region_of(&self, key: &[u8]) -> u64 {
        self.write(|w| w.region_of(key))
    }

    /// Waits (on `env`'s clock) until the cluster's TSO has moved past `ts` plus `ms`
    /// milliseconds of physical time, so that a lock of `ts` with a TTL of `ms` is expired
    /// by the time anyone checks it.
    pub async fn wait_past(&self, env: &dyn Env, ts: u64, ms: u64) {
        let deadline = (ts >> 18) + ms;
        let mut waited = Duration::ZERO;
        while wall_clock_ms() <= deadline {
            assert!(waited < PATIENCE, "the clock never passed {deadline}");
            env.sleep(Duration::from_millis(2)).await;
            waited += Duration::from_millis(2);
        }
    }
}

/// Panics with the operation's name when `result` is an error.
pub(crate) fn ok<T>(what: &str, result: Result<T, tikv_core::Error>) -> T {
    result.unwrap_or_else(|err| panic!("{what}: {err}"))
}

/// `s` as bytes.
pub(crate) fn b(s: impl AsRef<[u8]>) -> Bytes {
    Bytes::copy_from_slice(s.as_ref())
}

/// Pairs as `(key, value)` strings, for readable assertions.
pub(crate) fn texts(pairs: &[tikv_core::KvPair]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|pair| {
            (
                String::from_utf8_lossy(&pair.key).into_owned(),
                String::from_utf8_lossy(&pair.value).into_owned(),
            )
        })
        .collect()
}

/// Reads every batch of `scanner`.
pub(crate) async fn drain(mut scanner: tikv_core::Scanner) -> Vec<tikv_core::KvPair> {
    let mut all = Vec::new();
    while let Some(batch) = ok("scanner", scanner.next_batch().await) {
        all.extend(batch);
    }
    all
}

/// Calls `$m!(name)` for every test of the snapshot suite.
#[macro_export]
macro_rules! for_each_snapshot_test {
    ($m:ident) => {
        // integration_tests/snapshot_test.go
        $m!(test_batch_get);
        $m!(test_get_and_batch_get_with_return_commit_ts);
        $m!(test_batch_get_not_exist);
        $m!(test_skip_large_txn_lock);
        $m!(test_point_get_skip_txn_lock);
        $m!(test_snapshot_thread_safe);
        $m!(test_rc_read);
        $m!(test_snapshot_cache);
        $m!(test_snapshot_cache_bypass_max_uint64);
        // integration_tests/snapshot_fail_test.go
        $m!(test_batch_get_response_key_error);
        $m!(test_scan_response_key_error);
        // integration_tests/scan_test.go, scan_mock_test.go
        $m!(test_scan);
        $m!(test_scan_multiple_regions);
        $m!(test_reverse_scan);
        // integration_tests/lock_test.go
        $m!(test_scan_lock_resolve_with_get);
        $m!(test_scan_lock_resolve_with_seek);
        $m!(test_scan_lock_resolve_with_seek_key_only);
        $m!(test_scan_lock_resolve_with_batch_get);
        $m!(test_check_txn_status);
        $m!(test_zero_min_commit_ts);
        $m!(test_resolve_txn_fallen_back_from_async_commit);
        $m!(test_resolve_locks_for_read);
        $m!(test_batch_lite_resolve_locks_by_region);
        $m!(test_batch_lite_resolve_locks_for_read_ignores_inline_cleanup_error);
        $m!(test_check_txn_status_sent_to_secondary);
        $m!(test_resolve_lock_with_tikv_side_async);
        $m!(test_clean_lock);
        $m!(test_get_txn_status);
        $m!(test_check_txn_status_ttl);
        $m!(test_txn_heart_beat);
        $m!(test_lock_ttl);
        $m!(test_prewrite_encounters_larger_ts_lock);
        // no Go counterpart
        $m!(read_resolves_the_secondaries_of_a_committed_primary);
        $m!(read_rolls_back_an_expired_transaction);
        $m!(read_recovers_an_expired_async_commit_transaction);
        $m!(read_rolls_back_an_async_commit_transaction_missing_a_secondary);
        $m!(read_rolls_back_a_transaction_whose_primary_never_arrived);
        $m!(read_does_not_block_on_pessimistic_locks);
        $m!(max_ts_point_get_skips_a_primary_lock);
        $m!(batch_get_over_regions_with_locks_in_each);
        $m!(scan_across_regions_with_locks);
        $m!(reverse_scan_across_regions_with_locks);
        $m!(scan_limits_and_key_only);
        $m!(commit_timestamps_through_locks);
        $m!(reads_in_an_api_v2_keyspace);
    };
}

#[doc(hidden)]
pub use lock::*;
#[doc(hidden)]
pub use resolver::*;
#[doc(hidden)]
pub use scan::*;
#[doc(hidden)]
pub use snapshot::*;
#[doc(hidden)]
pub use snapshot_fail::*;
