//! Client configuration: every client-go knob that applies to this client, with client-go's
//! defaults.

use std::time::Duration;

/// Which key encoding and server features the cluster uses (`storage.api-version` in TiKV).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ApiVersion {
    /// Raw and transactional keys unprefixed; raw KV without TTL.
    #[default]
    V1,
    /// Like V1, but raw KV supports TTL (TiKV `enable-ttl`).
    V1Ttl,
    /// Keyspaces: every key carries a 4-byte keyspace prefix; raw KV supports TTL.
    V2,
}

impl ApiVersion {
    /// The version requests carry in their context. A V1TTL cluster takes requests marked
    /// V1 (TiKV refuses V1TTL in a request: TTL is a property of the storage, not of the
    /// request encoding).
    pub fn to_proto(self) -> tikv_proto::kvrpcpb::ApiVersion {
        match self {
            Self::V1 | Self::V1Ttl => tikv_proto::kvrpcpb::ApiVersion::V1,
            Self::V2 => tikv_proto::kvrpcpb::ApiVersion::V2,
        }
    }
}

/// TLS material, PEM-encoded, for connections to PD and TiKV.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The CA that signs the cluster's certificates.
    pub ca_pem: Vec<u8>,
    /// The client certificate chain and key, for clusters that require mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsConfig {
    /// The CA and the optional client identity, as PEM slices (what transports consume).
    pub fn as_pem(&self) -> (&[u8], Option<tikv_proto::PemIdentity<'_>>) {
        let identity = self
            .identity
            .as_ref()
            .map(|(cert, key)| (cert.as_slice(), key.as_slice()));
        (self.ca_pem.as_slice(), identity)
    }
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("TlsConfig")
            .field("ca_pem_len", &self.ca_pem.len())
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

/// Settings of a client: every client-go knob that applies here, with client-go's defaults.
///
/// Build one with [`Config::default`] and the `with_*` methods; read it back with the
/// getters of the same names. The struct is `#[non_exhaustive]` with private fields so that
/// new knobs can be added without breaking callers.
///
/// ```
/// use std::time::Duration;
/// use tikv_core::Config;
///
/// let config = Config::default()
///     .with_keyspace("app")
///     .with_pd_timeout(Duration::from_secs(5))
///     .with_raw_max_backoff(Duration::from_secs(10));
/// assert_eq!(config.keyspace(), Some("app"));
/// assert_eq!(config.rng_seed(), None); // drawn from the runtime's entropy on connect
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Seed of the core's PRNG; `None` until fixed or drawn from a runtime's entropy.
    pub(crate) rng_seed: Option<u64>,
    /// The cluster's API version.
    pub(crate) api_version: ApiVersion,
    /// The keyspace to use with API V2 (`None` = the default keyspace).
    pub(crate) keyspace: Option<String>,
    /// TLS for every connection; `None` for plaintext.
    pub(crate) tls: Option<TlsConfig>,
    /// Timeout of each PD call.
    pub(crate) pd_timeout: Duration,
    /// Timeout of short TiKV calls (point reads and writes).
    pub(crate) read_timeout_short: Duration,
    /// Timeout of medium TiKV calls (scans and batch reads).
    pub(crate) read_timeout_medium: Duration,
    /// How long TiKV may work on a write before dropping it.
    pub(crate) max_write_execution: Duration,
    /// Total backoff budget of one raw KV operation.
    pub(crate) raw_max_backoff: Duration,
    /// How long a cached region stays valid.
    pub(crate) region_cache_ttl: Duration,
    /// Random extra validity added per cached region.
    pub(crate) region_cache_ttl_jitter: Duration,
    /// Most requests in one BatchCommands message.
    pub(crate) max_batch_size: usize,
    /// BatchCommands connections per store.
    pub(crate) connections_per_store: usize,
    /// How long an idle connection lives.
    pub(crate) connection_idle_timeout: Duration,
    /// How long a small batch may be held back while a store is overloaded.
    pub(crate) max_batch_wait: Duration,
    /// How many requests a held-back batch waits for.
    pub(crate) batch_wait_size: usize,
    /// The store load above which batches are held back.
    pub(crate) overload_threshold: u64,
    /// How often the store list is refreshed from PD (zero: never).
    pub(crate) store_refresh_interval: Duration,
    /// How often PD's member list is asked for (zero: never).
    pub(crate) pd_member_refresh_interval: Duration,
    /// Timeout of the store liveness probe.
    pub(crate) store_liveness_timeout: Duration,
    /// Most timestamps in one TSO request.
    pub(crate) tso_max_batch: u32,
    /// Largest message sent or received.
    pub(crate) max_message_size: usize,
    /// How old a cached timestamp may be for a low-resolution read.
    pub(crate) low_resolution_ts_staleness: Duration,
    /// Largest size of one prewrite or commit request's keys (and values).
    pub(crate) txn_commit_batch_size: usize,
    /// Most requests one commit action (prewrite, commit, rollback) has in flight.
    pub(crate) committer_concurrency: usize,
    /// Most lock cleanups readers leave running in the background at once.
    pub(crate) async_resolve_limit: usize,
    /// Most keys a transaction may have and still use async commit.
    pub(crate) async_commit_keys_limit: usize,
    /// Largest total key size a transaction may have and still use async commit.
    pub(crate) async_commit_total_key_size_limit: u64,
    /// How far past the transaction's age its async-commit `max_commit_ts` lies.
    pub(crate) async_commit_safe_window: Duration,
    /// Transactions larger than this keep their primary lock alive with heartbeats.
    pub(crate) ttl_refreshed_txn_size: u64,
    /// The longest a transaction keeps its locks alive by heartbeats.
    pub(crate) max_txn_ttl: Duration,
    /// The lock TTL of a small transaction.
    pub(crate) default_lock_ttl: Duration,
    /// The TTL a heartbeat extends a live transaction's lock by (heartbeats every half).
    pub(crate) managed_lock_ttl: Duration,
    /// How long snapshot reads trust a fetched transaction safe point.
    pub(crate) txn_safe_point_refresh: Duration,
}

/// The seed of a core built straight from a config whose seed was neither fixed nor drawn
/// from a runtime (sans-IO use without a driver): a constant, so such a core replays.
const UNDRAWN_RNG_SEED: u64 = 0x7469_6b76;

impl Default for Config {
    fn default() -> Self {
        Self {
            rng_seed: None,
            api_version: ApiVersion::V1,
            keyspace: None,
            tls: None,
            pd_timeout: Duration::from_secs(3),
            read_timeout_short: Duration::from_secs(30),
            read_timeout_medium: Duration::from_secs(60),
            max_write_execution: Duration::from_secs(20),
            raw_max_backoff: Duration::from_secs(20),
            region_cache_ttl: Duration::from_secs(600),
            region_cache_ttl_jitter: Duration::from_secs(60),
            max_batch_size: 128,
            connections_per_store: 4,
            connection_idle_timeout: Duration::from_secs(180),
            max_batch_wait: Duration::ZERO,
            batch_wait_size: 8,
            overload_threshold: 200,
            store_refresh_interval: Duration::from_secs(15),
            pd_member_refresh_interval: Duration::from_secs(60),
            store_liveness_timeout: Duration::from_secs(1),
            tso_max_batch: 10_000,
            max_message_size: 1 << 30,
            low_resolution_ts_staleness: Duration::from_secs(2),
            txn_commit_batch_size: 16 * 1024,
            committer_concurrency: 128,
            async_resolve_limit: 10_000,
            async_commit_keys_limit: 256,
            async_commit_total_key_size_limit: 4 * 1024,
            async_commit_safe_window: Duration::from_secs(2),
            ttl_refreshed_txn_size: 32 * 1024 * 1024,
            max_txn_ttl: Duration::from_secs(60 * 60),
            default_lock_ttl: Duration::from_secs(3),
            managed_lock_ttl: Duration::from_secs(20),
            txn_safe_point_refresh: Duration::from_secs(10),
        }
    }
}

/// Builders: each sets one knob and returns the config.
impl Config {
    /// Fixes the seed of the core's PRNG (backoff jitter, replica choice, region cache TTL
    /// jitter): the same seed replays the same decisions. Without it, the client draws a seed
    /// from its runtime's entropy when it starts (see
    /// [`Runtime::seed_config`](crate::Runtime::seed_config)), so that processes sharing a
    /// cluster do not back off in lockstep. Fix it in tests and simulations.
    #[must_use]
    pub fn with_rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }

    /// Sets the cluster's API version (default V1).
    #[must_use]
    pub fn with_api_version(mut self, api_version: ApiVersion) -> Self {
        self.api_version = api_version;
        self
    }

    /// Uses API V2 with the named keyspace.
    #[must_use]
    pub fn with_keyspace(mut self, keyspace: impl Into<String>) -> Self {
        self.api_version = ApiVersion::V2;
        self.keyspace = Some(keyspace.into());
        self
    }

    /// Uses TLS with `tls` for every connection to PD and TiKV (default: plaintext).
    #[must_use]
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the timeout of each PD call (client-go: 3 s).
    #[must_use]
    pub fn with_pd_timeout(mut self, timeout: Duration) -> Self {
        self.pd_timeout = timeout;
        self
    }

    /// Sets the timeout of short TiKV calls: point reads and writes (client-go
    /// `ReadTimeoutShort`, 30 s).
    #[must_use]
    pub fn with_read_timeout_short(mut self, timeout: Duration) -> Self {
        self.read_timeout_short = timeout;
        self
    }

    /// Sets the timeout of medium TiKV calls: scans and batch reads (client-go
    /// `ReadTimeoutMedium`, 60 s).
    #[must_use]
    pub fn with_read_timeout_medium(mut self, timeout: Duration) -> Self {
        self.read_timeout_medium = timeout;
        self
    }

    /// Sets how long TiKV may work on a write before dropping it (client-go: 20 s).
    #[must_use]
    pub fn with_max_write_execution(mut self, limit: Duration) -> Self {
        self.max_write_execution = limit;
        self
    }

    /// Sets the total backoff budget of one raw KV operation (client-go `rawkvMaxBackoff`,
    /// 20 s): once retries have slept this long, the operation fails.
    #[must_use]
    pub fn with_raw_max_backoff(mut self, budget: Duration) -> Self {
        self.raw_max_backoff = budget;
        self
    }

    /// Sets how long an unused cached region stays valid (client-go: 600 s).
    #[must_use]
    pub fn with_region_cache_ttl(mut self, ttl: Duration) -> Self {
        self.region_cache_ttl = ttl;
        self
    }

    /// Sets the most random extra validity added per cached region, so that entries do not
    /// expire together (60 s).
    #[must_use]
    pub fn with_region_cache_ttl_jitter(mut self, jitter: Duration) -> Self {
        self.region_cache_ttl_jitter = jitter;
        self
    }

    /// Sets the most requests in one BatchCommands message (client-go `max-batch-size`, 128;
    /// zero counts as one).
    #[must_use]
    pub fn with_max_batch_size(mut self, size: usize) -> Self {
        self.max_batch_size = size;
        self
    }

    /// Sets the BatchCommands connections per store (client-go `grpc-connection-count`, 4;
    /// zero counts as one).
    #[must_use]
    pub fn with_connections_per_store(mut self, count: usize) -> Self {
        self.connections_per_store = count;
        self
    }

    /// Sets how long a connection may go without a request (and with none unanswered)
    /// before it closes (client-go recycles idle connections after 3 minutes); the next
    /// request to the address dials again.
    #[must_use]
    pub fn with_connection_idle_timeout(mut self, timeout: Duration) -> Self {
        self.connection_idle_timeout = timeout;
        self
    }

    /// Sets how long a connection may hold back a small batch for more requests while the
    /// store reports itself overloaded (client-go `max-batch-wait-time`; zero, the default,
    /// never waits).
    #[must_use]
    pub fn with_max_batch_wait(mut self, wait: Duration) -> Self {
        self.max_batch_wait = wait;
        self
    }

    /// Sets how many requests a held-back batch waits for (client-go `batch-wait-size`, 8).
    #[must_use]
    pub fn with_batch_wait_size(mut self, size: usize) -> Self {
        self.batch_wait_size = size;
        self
    }

    /// Sets the transport-layer load a store must report before batches are held back
    /// (client-go `overload-threshold`, 200).
    #[must_use]
    pub fn with_overload_threshold(mut self, threshold: u64) -> Self {
        self.overload_threshold = threshold;
        self
    }

    /// Sets how often the whole store list is fetched from PD, so that changed addresses and
    /// labels, new stores and removed ones are seen without a failed request (client-go
    /// re-resolves stores every 15 s); zero turns it off.
    #[must_use]
    pub fn with_store_refresh_interval(mut self, interval: Duration) -> Self {
        self.store_refresh_interval = interval;
        self
    }

    /// Sets how often PD's member list is asked for (the PD client's member update loop,
    /// every minute), so that a moved leader, members that joined and members that left are
    /// known before a request fails; zero turns it off (failures still rediscover the
    /// leader).
    #[must_use]
    pub fn with_pd_member_refresh_interval(mut self, interval: Duration) -> Self {
        self.pd_member_refresh_interval = interval;
        self
    }

    /// Sets the timeout of the store liveness probe that follows a failed send (client-go:
    /// 1 s).
    #[must_use]
    pub fn with_store_liveness_timeout(mut self, timeout: Duration) -> Self {
        self.store_liveness_timeout = timeout;
        self
    }

    /// Sets the most timestamps requested in one TSO request (10,000; zero counts as one).
    #[must_use]
    pub fn with_tso_max_batch(mut self, count: u32) -> Self {
        self.tso_max_batch = count;
        self
    }

    /// Sets the largest message sent or received, in bytes (1 GiB).
    #[must_use]
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets how old a cached timestamp may be for a low-resolution read (client-go
    /// refreshes its low-resolution timestamp every 2 s).
    #[must_use]
    pub fn with_low_resolution_ts_staleness(mut self, staleness: Duration) -> Self {
        self.low_resolution_ts_staleness = staleness;
        self
    }

    /// Sets the largest size (keys plus values for prewrite, keys for commit) of one
    /// transactional write request (client-go `TxnCommitBatchSize`, 16 KiB): a region's
    /// mutations are cut into requests of about this size.
    #[must_use]
    pub fn with_txn_commit_batch_size(mut self, bytes: usize) -> Self {
        self.txn_commit_batch_size = bytes.max(1);
        self
    }

    /// Sets how many requests one step of a commit (its prewrites, its commits, its
    /// rollbacks) may have in flight at once (client-go `TiKVClient.CommitterConcurrency`,
    /// 128). A large transaction's further requests go out one by one as earlier ones are
    /// answered, so a commit of thousands of batches does not flood the stores. At least 1.
    #[must_use]
    pub fn with_committer_concurrency(mut self, requests: usize) -> Self {
        self.committer_concurrency = requests.max(1);
        self
    }

    /// Sets how many lock cleanups readers may leave running in the background at once
    /// (client-go's async resolve pool: `AsyncResolveLockSemaphoreLimit`, 10,000, and
    /// `LockResolver.SetAsyncResolvePoolSize`). Once the status of a lock's transaction is
    /// known a reader goes on and its ResolveLock runs on; with this many running (0: always)
    /// the reader waits for its own cleanup instead.
    #[must_use]
    pub fn with_async_resolve_limit(mut self, cleanups: usize) -> Self {
        self.async_resolve_limit = cleanups;
        self
    }

    /// Sets the most keys a transaction may write and still use async commit (client-go
    /// `AsyncCommit.KeysLimit`, 256).
    #[must_use]
    pub fn with_async_commit_keys_limit(mut self, keys: usize) -> Self {
        self.async_commit_keys_limit = keys;
        self
    }

    /// Sets the largest total key size a transaction may write and still use async commit
    /// (client-go `AsyncCommit.TotalKeySizeLimit`, 4 KiB).
    #[must_use]
    pub fn with_async_commit_total_key_size_limit(mut self, bytes: u64) -> Self {
        self.async_commit_total_key_size_limit = bytes;
        self
    }

    /// Sets how far beyond the transaction's age an async-commit or 1PC commit timestamp
    /// may lie (client-go `AsyncCommit.SafeWindow`, 2 s): `max_commit_ts` is the start
    /// timestamp plus the age plus this window.
    #[must_use]
    pub fn with_async_commit_safe_window(mut self, window: Duration) -> Self {
        self.async_commit_safe_window = window;
        self
    }

    /// Sets the size above which a committing transaction keeps its primary lock alive
    /// with heartbeats (client-go `TTLRefreshedTxnSize`, 32 MiB).
    #[must_use]
    pub fn with_ttl_refreshed_txn_size(mut self, bytes: u64) -> Self {
        self.ttl_refreshed_txn_size = bytes;
        self
    }

    /// Sets the longest a transaction keeps its locks alive by heartbeats (client-go
    /// `MaxTxnTTL`, 1 hour).
    #[must_use]
    pub fn with_max_txn_ttl(mut self, ttl: Duration) -> Self {
        self.max_txn_ttl = ttl;
        self
    }

    /// Sets the lock TTL of a small transaction (client-go `defaultLockTTL`, 3 s); larger
    /// ones get more, growing with the square root of their size.
    #[must_use]
    pub fn with_default_lock_ttl(mut self, ttl: Duration) -> Self {
        self.default_lock_ttl = ttl;
        self
    }

    /// Sets the TTL a heartbeat gives a live transaction's primary lock beyond its age
    /// (client-go `ManagedLockTTL`, 20 s); heartbeats go out every half of it.
    #[must_use]
    pub fn with_managed_lock_ttl(mut self, ttl: Duration) -> Self {
        self.managed_lock_ttl = ttl.max(Duration::from_millis(2));
        self
    }

    /// Sets how long snapshot reads trust a fetched transaction safe point before asking
    /// PD again (client-go `gcSafePointUpdateInterval`, 10 s); zero asks on every read.
    #[must_use]
    pub fn with_txn_safe_point_refresh(mut self, interval: Duration) -> Self {
        self.txn_safe_point_refresh = interval;
        self
    }
}

/// Getters: each returns the knob its `with_*` method sets.
impl Config {
    /// The fixed PRNG seed, or `None` when it is still to be drawn from the runtime's
    /// entropy (see [`with_rng_seed`](Self::with_rng_seed)).
    pub fn rng_seed(&self) -> Option<u64> {
        self.rng_seed
    }

    /// The seed the core's PRNG starts from: the fixed or drawn one, else a constant.
    pub(crate) fn effective_rng_seed(&self) -> u64 {
        self.rng_seed.unwrap_or(UNDRAWN_RNG_SEED)
    }

    /// The cluster's API version.
    pub fn api_version(&self) -> ApiVersion {
        self.api_version
    }

    /// The keyspace name used with API V2 (`None`: the default keyspace).
    pub fn keyspace(&self) -> Option<&str> {
        self.keyspace.as_deref()
    }

    /// The TLS material, or `None` for plaintext.
    pub fn tls(&self) -> Option<&TlsConfig> {
        self.tls.as_ref()
    }

    /// The timeout of each PD call.
    pub fn pd_timeout(&self) -> Duration {
        self.pd_timeout
    }

    /// The timeout of point reads and writes.
    pub fn read_timeout_short(&self) -> Duration {
        self.read_timeout_short
    }

    /// The timeout of scans and batch reads.
    pub fn read_timeout_medium(&self) -> Duration {
        self.read_timeout_medium
    }

    /// How long TiKV may work on a write.
    pub fn max_write_execution(&self) -> Duration {
        self.max_write_execution
    }

    /// The total backoff budget of one raw KV operation.
    pub fn raw_max_backoff(&self) -> Duration {
        self.raw_max_backoff
    }

    /// How long an unused cached region stays valid.
    pub fn region_cache_ttl(&self) -> Duration {
        self.region_cache_ttl
    }

    /// The most random extra validity added per cached region.
    pub fn region_cache_ttl_jitter(&self) -> Duration {
        self.region_cache_ttl_jitter
    }

    /// The most requests in one BatchCommands message.
    pub fn max_batch_size(&self) -> usize {
        self.max_batch_size
    }

    /// The BatchCommands connections per store.
    pub fn connections_per_store(&self) -> usize {
        self.connections_per_store
    }

    /// How long an idle connection lives before it closes.
    pub fn connection_idle_timeout(&self) -> Duration {
        self.connection_idle_timeout
    }

    /// How long a small batch may be held back while a store is overloaded.
    pub fn max_batch_wait(&self) -> Duration {
        self.max_batch_wait
    }

    /// How many requests a held-back batch waits for.
    pub fn batch_wait_size(&self) -> usize {
        self.batch_wait_size
    }

    /// The store load above which small batches are held back.
    pub fn overload_threshold(&self) -> u64 {
        self.overload_threshold
    }

    /// How often the store list is refreshed from PD (zero: never).
    pub fn store_refresh_interval(&self) -> Duration {
        self.store_refresh_interval
    }

    /// How often PD's member list is asked for (zero: never).
    pub fn pd_member_refresh_interval(&self) -> Duration {
        self.pd_member_refresh_interval
    }

    /// The timeout of the store liveness probe.
    pub fn store_liveness_timeout(&self) -> Duration {
        self.store_liveness_timeout
    }

    /// The most timestamps in one TSO request.
    pub fn tso_max_batch(&self) -> u32 {
        self.tso_max_batch
    }

    /// The largest message sent or received, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// How old a cached timestamp may be for a low-resolution read.
    pub fn low_resolution_ts_staleness(&self) -> Duration {
        self.low_resolution_ts_staleness
    }

    /// The largest size of one transactional write request.
    pub fn txn_commit_batch_size(&self) -> usize {
        self.txn_commit_batch_size
    }

    /// The most requests one step of a commit has in flight.
    pub fn committer_concurrency(&self) -> usize {
        self.committer_concurrency
    }

    /// The most lock cleanups readers leave running in the background at once.
    pub fn async_resolve_limit(&self) -> usize {
        self.async_resolve_limit
    }

    /// The most keys an async-commit transaction may write.
    pub fn async_commit_keys_limit(&self) -> usize {
        self.async_commit_keys_limit
    }

    /// The largest total key size an async-commit transaction may write.
    pub fn async_commit_total_key_size_limit(&self) -> u64 {
        self.async_commit_total_key_size_limit
    }

    /// How far beyond the transaction's age an async-commit timestamp may lie.
    pub fn async_commit_safe_window(&self) -> Duration {
        self.async_commit_safe_window
    }

    /// The size above which a committing transaction heartbeats its primary lock.
    pub fn ttl_refreshed_txn_size(&self) -> u64 {
        self.ttl_refreshed_txn_size
    }

    /// The longest a transaction keeps its locks alive by heartbeats.
    pub fn max_txn_ttl(&self) -> Duration {
        self.max_txn_ttl
    }

    /// The lock TTL of a small transaction.
    pub fn default_lock_ttl(&self) -> Duration {
        self.default_lock_ttl
    }

    /// The TTL a heartbeat gives a live transaction's primary lock beyond its age.
    pub fn managed_lock_ttl(&self) -> Duration {
        self.managed_lock_ttl
    }

    /// How long snapshot reads trust a fetched transaction safe point.
    pub fn txn_safe_point_refresh(&self) -> Duration {
        self.txn_safe_point_refresh
    }
}

/// What a `tikv://` path names (client-go's `config.ParsePath`, the form TiDB's `--path`
/// takes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedPath {
    /// PD endpoints (`host:port`).
    pub pd_endpoints: Vec<String>,
    /// The `disableGC` flag.
    pub disable_gc: bool,
    /// The `keyspaceName` parameter, if given.
    pub keyspace: Option<String>,
}

/// Parses `tikv://pd1:2379,pd2:2379[/...][?disableGC=true&keyspaceName=name]`; the scheme
/// is case-insensitive and query values are percent-decoded.
///
/// Errors with [`Error::InvalidArgument`](crate::Error::InvalidArgument) for another scheme, no PD endpoint, a `disableGC`
/// that is neither `true` nor `false`, or a malformed percent escape.
pub fn parse_path(path: &str) -> Result<ParsedPath, crate::error::Error> {
    use crate::error::Error;
    let (scheme, rest) = path
        .split_once("://")
        .ok_or_else(|| Error::InvalidArgument(format!("{path:?} is not a tikv:// path")))?;
    if !scheme.eq_ignore_ascii_case("tikv") {
        return Err(Error::InvalidArgument(format!(
            "URI scheme expected [tikv] but found [{scheme}]"
        )));
    }
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let host = before_query.split('/').next().unwrap_or_default();
    let pd_endpoints: Vec<String> = host
        .split(',')
        .filter(|endpoint| !endpoint.is_empty())
        .map(str::to_owned)
        .collect();
    if pd_endpoints.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{path:?} names no PD endpoint"
        )));
    }
    let mut parsed = ParsedPath {
        pd_endpoints,
        ..ParsedPath::default()
    };
    let (mut disable_gc, mut keyspace) = (None, None);
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (percent_decode(key)?, percent_decode(value)?);
        // The first value of a key counts, as Go's `Values.Get`.
        match key.as_str() {
            "disableGC" if disable_gc.is_none() => disable_gc = Some(value),
            "keyspaceName" if keyspace.is_none() => keyspace = Some(value),
            _ => {}
        }
    }
    parsed.disable_gc = match disable_gc
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("true") => true,
        Some("false" | "") | None => false,
        Some(_) => {
            return Err(Error::InvalidArgument(
                "disableGC flag should be true/false".to_owned(),
            ));
        }
    };
    parsed.keyspace = keyspace.filter(|name| !name.is_empty());
    Ok(parsed)
}

/// Decodes `%XX` escapes and `+` (a space), as a URL query does.
fn percent_decode(text: &str) -> Result<String, crate::error::Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or_else(|| {
                        crate::error::Error::InvalidArgument(format!(
                            "bad percent escape in {text:?}"
                        ))
                    })?;
                out.push(hex);
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| crate::error::Error::InvalidArgument(format!("{text:?} is not UTF-8")))
}

#[cfg(test)]
mod path_tests {
    use super::*;
    use crate::error::Error;

    /// Parses `path`, failing the test with the parse error (a test that fell back to a
    /// default on error would pass on any input that does not parse).
    fn must_parse(path: &str) -> ParsedPath {
        parse_path(path).unwrap_or_else(|err| panic!("{path}: {err}"))
    }

    /// Port of client-go's `TestParsePath`.
    #[test]
    fn test_parse_path() {
        let parsed = must_parse("tikv://node1:2379,node2:2379");
        assert_eq!(parsed.pd_endpoints, ["node1:2379", "node2:2379"]);
        assert!(!parsed.disable_gc);
        assert_eq!(parsed.keyspace, None);
        assert!(parse_path("tikv://node1:2379").is_ok());
        let parsed = must_parse("tikv://node1:2379?disableGC=true&keyspaceName=DEFAULT");
        assert!(parsed.disable_gc);
        assert_eq!(parsed.keyspace.as_deref(), Some("DEFAULT"));
    }

    #[test]
    fn parses_endpoints_and_flags() {
        let parsed = must_parse("tikv://pd1:2379,pd2:2379?disableGC=true&keyspaceName=ks%201");
        assert_eq!(parsed.pd_endpoints, ["pd1:2379", "pd2:2379"]);
        assert!(parsed.disable_gc);
        assert_eq!(parsed.keyspace.as_deref(), Some("ks 1"));

        let plain = must_parse("TiKV://127.0.0.1:2379/some/path");
        assert_eq!(plain.pd_endpoints, ["127.0.0.1:2379"]);
        assert!(!plain.disable_gc);
        assert_eq!(plain.keyspace, None);

        let flags = must_parse("tikv://pd:2379?disableGC=FALSE&disableGC=true");
        assert!(!flags.disable_gc, "the first value counts");
    }

    /// `must_parse` itself fails on a parse error, so the tests above cannot pass on one.
    #[test]
    #[should_panic(expected = "is not a tikv:// path")]
    fn a_parse_error_fails_the_test() {
        let _ = must_parse("pd:2379");
    }

    #[test]
    fn refuses_what_client_go_refuses() {
        for bad in [
            "http://pd:2379",
            "pd:2379",
            "tikv://?disableGC=true",
            "tikv://pd:2379?disableGC=yes",
            "tikv://pd:2379?keyspaceName=%zz",
        ] {
            assert!(
                matches!(parse_path(bad), Err(Error::InvalidArgument(_))),
                "{bad}"
            );
        }
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;

    #[test]
    fn every_builder_sets_its_knob() {
        let tls = TlsConfig {
            ca_pem: b"ca".to_vec(),
            identity: None,
        };
        let secs = Duration::from_secs;
        let config = Config::default()
            .with_rng_seed(9)
            .with_api_version(ApiVersion::V1Ttl)
            .with_tls(tls.clone())
            .with_pd_timeout(secs(1))
            .with_read_timeout_short(secs(2))
            .with_read_timeout_medium(secs(3))
            .with_max_write_execution(secs(4))
            .with_raw_max_backoff(secs(5))
            .with_region_cache_ttl(secs(6))
            .with_region_cache_ttl_jitter(secs(7))
            .with_max_batch_size(8)
            .with_connections_per_store(9)
            .with_connection_idle_timeout(secs(10))
            .with_max_batch_wait(secs(11))
            .with_batch_wait_size(12)
            .with_overload_threshold(13)
            .with_store_refresh_interval(secs(14))
            .with_store_liveness_timeout(secs(15))
            .with_tso_max_batch(16)
            .with_max_message_size(17)
            .with_low_resolution_ts_staleness(secs(18))
            .with_pd_member_refresh_interval(secs(19))
            .with_async_resolve_limit(20);
        assert_eq!(config.async_resolve_limit(), 20);
        assert_eq!(config.rng_seed(), Some(9));
        assert_eq!(config.effective_rng_seed(), 9);
        assert_eq!(config.api_version(), ApiVersion::V1Ttl);
        assert_eq!(config.keyspace(), None);
        assert_eq!(config.tls(), Some(&tls));
        assert_eq!(config.pd_timeout(), secs(1));
        assert_eq!(config.read_timeout_short(), secs(2));
        assert_eq!(config.read_timeout_medium(), secs(3));
        assert_eq!(config.max_write_execution(), secs(4));
        assert_eq!(config.raw_max_backoff(), secs(5));
        assert_eq!(config.region_cache_ttl(), secs(6));
        assert_eq!(config.region_cache_ttl_jitter(), secs(7));
        assert_eq!(config.max_batch_size(), 8);
        assert_eq!(config.connections_per_store(), 9);
        assert_eq!(config.connection_idle_timeout(), secs(10));
        assert_eq!(config.max_batch_wait(), secs(11));
        assert_eq!(config.batch_wait_size(), 12);
        assert_eq!(config.overload_threshold(), 13);
        assert_eq!(config.store_refresh_interval(), secs(14));
        assert_eq!(config.store_liveness_timeout(), secs(15));
        assert_eq!(config.tso_max_batch(), 16);
        assert_eq!(config.max_message_size(), 17);
        assert_eq!(config.low_resolution_ts_staleness(), secs(18));
        assert_eq!(config.pd_member_refresh_interval(), secs(19));

        let keyspace = Config::default().with_keyspace("ks");
        assert_eq!(keyspace.api_version(), ApiVersion::V2);
        assert_eq!(keyspace.keyspace(), Some("ks"));
    }

    #[test]
    fn the_default_seed_is_unset_and_a_core_without_one_uses_a_constant() {
        let config = Config::default();
        assert_eq!(config.rng_seed(), None);
        assert_eq!(config.effective_rng_seed(), UNDRAWN_RNG_SEED);
    }
}
