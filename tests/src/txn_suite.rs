//! client-go's transaction tests of the write side, ported, written once and run under every
//! runtime (see `tests/txn_tokio.rs` and `tests/txn_async_std.rs`).
//!
//! Every test starts its own simulated cluster ([`SimServer`]) through an [`Env`], and
//! connects one or more [`Client`]s with the runtime under test. Each client records the
//! store requests it sends ([`Requests`]), which stands in for client-go's request hooks
//! (`beforeSendReqToRegion`) and mock-client wrappers that inspect requests. Where the Go
//! tests drive a `CommitterProbe` by hand (prewrite only, commit at a chosen timestamp,
//! clean up), these tests send the same requests to the simulated stores directly
//! ([`TxnCluster::store_call`], the counterpart of the Go tests' `store.SendReq`), or stop
//! the client's commit part-way with its test knobs (`CommitKnobs`). Failpoints become
//! tikv-sim faults (`tikv_sim::faults`), a stalled TSO clock, or store disk usage.
//!
//! Ported tests are named after the Go test with a prefix for its file: `test_2pc_` for
//! `integration_tests/2pc_test.go`, `test_1pc_`, `test_async_commit_`,
//! `test_async_commit_fail_`, `test_prewrite_`, `test_isolation_`, `test_option_`,
//! `test_ticlient_`, `test_safepoint_` and `test_split_` for the others (a Go name that
//! repeats its file's name keeps it once: `Test1PCIsolation` is `test_1pc_isolation`).
//! Tests of client-go features its suites do not test are this client's own, in
//! [`policy`] (`test_policy_`).
//! docs/porting.md lists what each file leaves out, and why.

pub mod async_commit;
pub mod async_commit_fail;
pub mod isolation;
pub mod one_pc;
pub mod option;
pub mod policy;
pub mod prewrite;
pub mod safepoint;
pub mod split;
pub mod ticlient;
pub mod two_pc;
pub mod two_pc_failures;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tikv_core::driver::{Observer, Options};
use tikv_core::error::KeyError;
use tikv_core::machine::Transmit;
use tikv_core::outbox::RequestId;
use tikv_core::rpc::{PdRequest, Response, StoreRequest};
use tikv_core::transaction::{Transaction, TransactionOptions};
use tikv_core::{Client, CommitKnobs, Config, Error, Timestamp};
use tikv_proto::codec;
use tikv_proto::kvrpcpb;
use tikv_proto::rpc::{BoxFuture, RpcError};
use tikv_proto::tikvpb::batch_commands_request::request::Cmd as Req;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as Resp;
use tikv_sim::cluster::ClusterConfig;
use tikv_sim::faults::{FaultAction, FaultRule};
use tikv_sim::tikv::{Execution, TikvRequest, TikvResponse};
use tikv_sim::{Sim, SimConfig, SimServer};

/// What a runtime provides to the suite.
pub trait Env: Sync {
    /// Serves a fresh simulated cluster built from `sim`.
    fn serve(&self, sim: SimConfig) -> BoxFuture<'_, SimServer>;

    /// Connects a client on this runtime to the cluster whose PD answers at `pd`, with
    /// `config` and driver `options` (the suite's observer).
    fn connect(&self, pd: &str, config: Config, options: Options) -> Client;

    /// Completes after `duration` (for lock TTLs, which the served cluster measures in wall
    /// time).
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// The store requests a client sent, in order (retries and requests to followers
/// included), recorded by its driver's observer.
#[derive(Default)]
pub struct Requests {
    log: Mutex<Vec<StoreRequest>>,
    /// Tso requests sent.
    tso: AtomicUsize,
    /// Called with each store request before it is sent (client-go's
    /// `beforeSendReqToRegion` hook).
    hook: Mutex<Option<Hook>>,
}

/// A function called with each store request before it is sent.
pub type Hook = Box<dyn FnMut(&StoreRequest) + Send>;

impl std::fmt::Debug for Requests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requests")
            .field("log", &self.log)
            .field("tso", &self.tso)
            .finish_non_exhaustive()
    }
}

impl Requests {
    /// Everything recorded so far.
    pub fn all(&self) -> Vec<StoreRequest> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The prewrites recorded so far.
    pub fn prewrites(&self) -> Vec<kvrpcpb::PrewriteRequest> {
        self.all()
            .into_iter()
            .filter_map(|request| match request {
                StoreRequest::Prewrite(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// How many requests `filter` accepts.
    pub fn count(&self, filter: impl Fn(&StoreRequest) -> bool) -> usize {
        self.all().iter().filter(|request| filter(request)).count()
    }

    /// Forgets what was recorded.
    pub fn clear(&self) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.tso.store(0, Ordering::SeqCst);
    }

    /// How many Tso requests were sent since the last [`clear`](Self::clear).
    pub fn tso_requests(&self) -> usize {
        self.tso.load(Ordering::SeqCst)
    }

    /// Calls `hook` with each store request from now on, before it is sent (`None`: stop).
    pub fn set_hook(&self, hook: Option<Hook>) {
        *self.hook.lock().unwrap_or_else(PoisonError::into_inner) = hook;
    }
}

impl Observer for Requests {
    fn transmit(&self, transmit: &Transmit) {
        if let Some(PdRequest::Tso(_)) = transmit.request.as_pd() {
            self.tso.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(request) = transmit.request.as_store() {
            if let Some(hook) = self
                .hook
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_mut()
            {
                hook(request);
            }
            self.log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(request.clone());
        }
    }

    fn reply(&self, _id: RequestId, _reply: &Result<Response, RpcError>) {}
}

/// A running simulated cluster and a client connected to it.
pub struct TxnCluster<'e, E: Env> {
    /// The runtime.
    pub env: &'e E,
    /// The served cluster; reach its model with [`SimServer::with`]. Shared, so that a
    /// request hook can change the cluster as a request leaves.
    pub server: Arc<SimServer>,
    /// The client under test.
    pub client: Client,
    /// The store requests the client sent.
    pub requests: Arc<Requests>,
}

impl<E: Env> std::fmt::Debug for TxnCluster<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnCluster")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Starts a cluster of three stores (three replicas per region) and a client with the
/// default configuration.
pub async fn start<E: Env>(env: &E) -> TxnCluster<'_, E> {
    start_with(env, ClusterConfig::default(), Config::default()).await
}

/// Starts a cluster laid out as `cluster` and a client configured with `config`.
pub async fn start_with<E: Env>(
    env: &E,
    cluster: ClusterConfig,
    config: Config,
) -> TxnCluster<'_, E> {
    let sim = SimConfig {
        cluster,
        ..SimConfig::default()
    };
    let server = Arc::new(env.serve(sim).await);
    let requests = Arc::new(Requests::default());
    let client = connect_observed(env, &server, config, &requests);
    TxnCluster {
        env,
        server,
        client,
        requests,
    }
}

fn connect_observed<E: Env>(
    env: &E,
    server: &SimServer,
    config: Config,
    requests: &Arc<Requests>,
) -> Client {
    let options = Options {
        observer: Some(Arc::clone(requests) as Arc<dyn Observer>),
        ..Options::default()
    };
    env.connect(server.pd_address(), config, options)
}

/// Wall-clock milliseconds, the clock the served cluster runs on.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl<E: Env> TxnCluster<'_, E> {
    /// Another client of the same cluster, configured with `config`, recording its own
    /// requests.
    pub fn connect(&self, config: Config) -> (Client, Arc<Requests>) {
        let requests = Arc::new(Requests::default());
        let client = connect_observed(self.env, &self.server, config, &requests);
        (client, requests)
    }

    /// Begins an optimistic transaction.
    pub async fn begin(&self) -> Transaction {
        ok("begin", self.client.begin().await)
    }

    /// Begins a transaction with `options`.
    pub async fn begin_with(&self, options: TransactionOptions) -> Transaction {
        ok("begin", self.client.begin_with(options).await)
    }

    /// Begins an async-commit transaction (client-go's `beginAsyncCommit`).
    pub async fn begin_async_commit(&self) -> Transaction {
        self.begin_with(TransactionOptions::new().with_async_commit(true))
            .await
    }

    /// Begins a 1PC transaction (client-go's `begin1PC`).
    pub async fn begin_1pc(&self) -> Transaction {
        self.begin_with(TransactionOptions::new().with_try_one_pc(true))
            .await
    }

    /// A fresh timestamp from TSO.
    pub async fn ts(&self) -> Timestamp {
        ok("timestamp", self.client.current_timestamp().await)
    }

    /// Commits `pairs` in one transaction and checks they read back (client-go's
    /// `mustCommit`); returns the commit timestamp.
    pub async fn must_commit(&self, pairs: &[(&str, &str)]) -> Timestamp {
        let mut txn = self.begin().await;
        for (key, value) in pairs {
            ok("put", txn.put(b(key), b(value)));
        }
        let commit_ts = ok("commit", txn.commit().await);
        self.check_values(pairs).await;
        commit_ts.unwrap_or_else(|| panic!("a write commits"))
    }

    /// Checks that a fresh transaction reads each key's value (client-go's `checkValues`).
    pub async fn check_values(&self, pairs: &[(&str, &str)]) {
        let txn = self.begin().await;
        for (key, value) in pairs {
            let got = ok("get", txn.get(b(key)).await);
            assert_eq!(got, Some(b(value)), "value of {key:?}");
        }
    }

    /// The value of `key` as a fresh transaction reads it.
    pub async fn get(&self, key: &str) -> Option<Bytes> {
        let txn = self.begin().await;
        ok("get", txn.get(b(key)).await)
    }

    /// The value of `key` in a snapshot at `ts`.
    pub async fn get_at(&self, ts: Timestamp, key: &str) -> Option<Bytes> {
        ok("snapshot get", self.client.snapshot(ts).get(b(key)).await)
    }

    /// Splits the region holding each user key at that key (an existing boundary is
    /// kept), as client-go's tests split mocktikv.
    pub fn split(&self, keys: &[&[u8]]) {
        self.server.with(|sim| {
            for key in keys {
                sim.cluster
                    .split_at(&boundary(key))
                    .unwrap_or_else(|err| panic!("split at {key:?}: {err}"));
            }
        });
    }

    /// The id of the region holding user key `key`.
    pub fn region_of(&self, key: &[u8]) -> u64 {
        self.server.with(|sim| {
            sim.cluster
                .region_by_key(&boundary(key))
                .map(|region| region.id)
                .unwrap_or_else(|| panic!("no region holds {key:?}"))
        })
    }

    /// Injects `action` for the next `times` requests of `command` (`KvPrewrite`,
    /// `KvCommit`, ...) to any store.
    pub fn inject(&self, command: &str, action: FaultAction, times: u32) {
        self.server.with(|sim| {
            sim.faults
                .inject(FaultRule::command(command, action, times))
        });
    }

    /// Injects `action` for the next `times` requests of `command` for the region holding
    /// user key `key`.
    pub fn inject_for(&self, key: &[u8], command: &str, action: FaultAction, times: u32) {
        let region_id = self.region_of(key);
        self.server.with(|sim| {
            sim.faults.inject(FaultRule {
                region_id: Some(region_id),
                ..FaultRule::command(command, action, times)
            });
        });
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        self.server.with(|sim| sim.faults.clear());
    }

    /// Sends `build(context)` to the leader of the region holding user key `key`, as the
    /// Go tests' `store.SendReq` does (faults and store latency are skipped), and returns
    /// the answer.
    pub fn store_call(&self, key: &[u8], build: impl FnOnce(kvrpcpb::Context) -> Req) -> Resp {
        self.server.with(|sim| store_call(sim, key, build))
    }

    /// The lock on user key `key`, if any, as the store reports it.
    pub fn lock(&self, key: &[u8]) -> Option<kvrpcpb::LockInfo> {
        let end = [key, b"\0"].concat();
        let response = self.store_call(key, |context| {
            Req::ScanLock(kvrpcpb::ScanLockRequest {
                context: Some(context),
                max_version: u64::MAX,
                start_key: Bytes::copy_from_slice(key),
                end_key: end.into(),
                limit: 1,
            })
        });
        match response {
            Resp::ScanLock(r) => {
                assert!(r.error.is_none() && r.region_error.is_none(), "{r:?}");
                r.locks.into_iter().find(|lock| lock.key.as_ref() == key)
            }
            other => panic!("ScanLock answered {other:?}"),
        }
    }

    /// Waits until `condition` holds, checking every 10 ms, at most 500 times (client-go's
    /// `Eventually`); panics with `what` when it never does.
    pub async fn eventually(&self, what: &str, mut condition: impl FnMut() -> bool) {
        for _ in 0..500 {
            if condition() {
                return;
            }
            self.env.sleep(Duration::from_millis(10)).await;
        }
        panic!("never happened: {what}");
    }

    /// Waits until no lock is left on user key `key`.
    pub async fn wait_unlocked(&self, key: &[u8]) {
        let what = format!("the lock on {:?} is gone", String::from_utf8_lossy(key));
        self.eventually(&what, || self.lock(key).is_none()).await;
    }
}

/// Sends `build(context)` to the leader of the region holding user key `key` in `sim`.
pub fn store_call(sim: &mut Sim, key: &[u8], build: impl FnOnce(kvrpcpb::Context) -> Req) -> Resp {
    let (store, context) = sim
        .leader_context(&boundary(key))
        .unwrap_or_else(|| panic!("no leader for {key:?}"));
    match sim.execute_after_delay(store, TikvRequest::Batch(build(context)), now_ms()) {
        Execution::Done(TikvResponse::Batch(response)) => response,
        other => panic!("the store answered {other:?}"),
    }
}

/// Region boundary of transactional user key `key` (memcomparable, API V1).
pub fn boundary(key: &[u8]) -> Vec<u8> {
    codec::encode_bytes(key)
}

/// Test knobs with only the backoff budget of prewrites and the primary's commit lowered
/// to `ms` (client-go's suites lower `CommitMaxBackoff`).
pub fn budget_knobs(ms: u64) -> CommitKnobs {
    CommitKnobs {
        max_backoff_ms: Some(ms),
        ..CommitKnobs::default()
    }
}

/// An `UndeterminedResult` region error answer after the command ran (client-go's mock
/// `undeterminedResult`).
pub fn undetermined() -> FaultAction {
    FaultAction::UndeterminedAfterApply
}

/// A `NotLeader` region error without a leader hint (client-go's mock `notLeader`).
pub fn not_leader(region_id: u64) -> FaultAction {
    FaultAction::RegionError(Box::new(tikv_proto::errorpb::Error {
        message: "not leader".to_owned(),
        not_leader: Some(tikv_proto::errorpb::NotLeader {
            region_id,
            leader: None,
        }),
        ..Default::default()
    }))
}

/// Whether `err` is a write conflict.
pub fn is_write_conflict(err: &Error) -> bool {
    matches!(err.key_error(), Some(KeyError::WriteConflict { .. }))
}

/// Panics with the operation's name when `result` is an error.
pub fn ok<T>(what: &str, result: Result<T, Error>) -> T {
    result.unwrap_or_else(|err| panic!("{what}: {err}"))
}

/// The error of `result`, panicking with `what` when it succeeded.
pub fn err<T: std::fmt::Debug>(what: &str, result: Result<T, Error>) -> Error {
    match result {
        Ok(value) => panic!("{what}: expected an error, got {value:?}"),
        Err(err) => err,
    }
}

/// `s` as bytes.
pub fn b(s: impl AsRef<[u8]>) -> Bytes {
    Bytes::copy_from_slice(s.as_ref())
}

/// Calls `$m!(name)` (with `#[ignore = ...]` attributes where a test is known to fail) for
/// every test of the transaction suite.
#[macro_export]
macro_rules! for_each_txn_test {
    ($m:ident) => {
        // integration_tests/2pc_test.go
        $m!(test_2pc_delete_your_writes_ttl);
        $m!(test_2pc_commit_rollback);
        $m!(test_2pc_commit_on_tikv_disk_full_opt);
        $m!(test_2pc_prewrite_rollback);
        $m!(test_2pc_context_cancel);
        $m!(test_2pc_context_cancel2);
        $m!(test_2pc_context_cancel_causing_undetermined);
        $m!(test_2pc_prewrite_cancel);
        $m!(test_2pc_illegal_tso);
        $m!(test_2pc_commit_before_prewrite);
        $m!(test_2pc_prewrite_primary_key_failed);
        $m!(test_2pc_written_keys_on_conflict);
        $m!(test_2pc_prewrite_txn_size);
        $m!(test_2pc_reject_commit_ts);
        $m!(test_2pc_delete_your_write_cause_ghost_primary);
        $m!(test_2pc_delete_all_your_writes);
        $m!(test_2pc_delete_all_your_writes_with_sfu);
        $m!(test_2pc_resolve_pessimistic_lock);
        $m!(test_2pc_commit_dead_lock);
        $m!(test_2pc_prewrite_secondary_keys);
        $m!(test_2pc_async_commit);
        $m!(test_2pc_async_commit_check);
        $m!(test_2pc_fail_commit_primary_rpc_errors);
        $m!(test_2pc_fail_commit_primary_region_error);
        $m!(test_2pc_fail_commit_primary_rpc_error_then_region_error);
        $m!(test_2pc_fail_commit_primary_key_error);
        $m!(test_2pc_fail_commit_primary_rpc_error_then_key_error);
        $m!(test_2pc_fail_commit_timeout);
        $m!(test_2pc_commit_multiple_regions);
        $m!(test_2pc_newly_inserted_mem_db_flag);
        $m!(test_2pc_extract_key_exists_err);
        $m!(test_2pc_fail_with_undetermined_result);
        // integration_tests/1pc_test.go
        $m!(test_1pc);
        $m!(test_1pc_isolation);
        $m!(test_1pc_disallow_multi_region);
        $m!(test_1pc_linearizability);
        $m!(test_1pc_txn_commit_counter);
        $m!(test_1pc_fail_with_undetermined_result);
        // integration_tests/async_commit_test.go
        $m!(test_async_commit_check_secondaries);
        $m!(test_async_commit_repeatable_read);
        $m!(test_async_commit_linearizability);
        $m!(test_async_commit_resolve_txn_fallback_from_async_commit);
        // integration_tests/async_commit_fail_test.go
        $m!(test_async_commit_fail_prewrite_rpc_errors);
        $m!(test_async_commit_fail_prewrite_cancelled);
        $m!(test_async_commit_fail_point_get_with_async_commit);
        $m!(test_async_commit_fail_secondary_list_in_primary_lock);
        $m!(test_async_commit_fail_context_cancel_causing_undetermined);
        $m!(test_async_commit_fail_prewrite_fail_with_undetermined_result);
        // integration_tests/prewrite_test.go
        $m!(test_prewrite_set_min_commit_ts_in_async_commit);
        $m!(test_prewrite_is_retry_request_flag_with_region_error);
        // integration_tests/isolation_test.go
        $m!(test_isolation_write_write_conflict);
        $m!(test_isolation_read_write_conflict);
        // integration_tests/option_test.go
        $m!(test_option_set_commit_wait_until_tso);
        $m!(test_option_set_commit_wait_until_tso_timeout);
        // policy.rs (no Go counterpart): SetCommitTSUpperBoundCheck,
        // SetPrewriteEncounterLockPolicy
        $m!(test_policy_commit_ts_upper_bound_check_passes);
        $m!(test_policy_commit_ts_upper_bound_check_fails);
        $m!(test_policy_prewrite_no_resolve);
        // integration_tests/ticlient_test.go
        $m!(test_ticlient_single_key);
        $m!(test_ticlient_multi_keys);
        $m!(test_ticlient_not_exist);
        $m!(test_ticlient_large_request);
        $m!(test_ticlient_split_region_in_2pc);
        // integration_tests/safepoint_test.go
        $m!(test_safepoint);
        // integration_tests/split_test.go
        $m!(test_split_batch_get);
        $m!(test_split_batch_get_using_async_api);
        $m!(test_split_stale_epoch);
    };
}

#[doc(hidden)]
pub use async_commit::*;
#[doc(hidden)]
pub use async_commit_fail::*;
#[doc(hidden)]
pub use isolation::*;
#[doc(hidden)]
pub use one_pc::*;
#[doc(hidden)]
pub use option::*;
#[doc(hidden)]
pub use policy::*;
#[doc(hidden)]
pub use prewrite::*;
#[doc(hidden)]
pub use safepoint::*;
#[doc(hidden)]
pub use split::*;
#[doc(hidden)]
pub use ticlient::*;
#[doc(hidden)]
pub use two_pc::*;
#[doc(hidden)]
pub use two_pc_failures::*;
