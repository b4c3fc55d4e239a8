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

/// Settings of a client. Build with [`Config::default`] and the `with_*` methods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Seed of the core's PRNG (backoff jitter, replica choice); the same seed replays the
    /// same decisions.
    pub rng_seed: u64,
    /// The cluster's API version.
    pub api_version: ApiVersion,
    /// The keyspace to use with API V2 (`None` = the default keyspace, id 0).
    pub keyspace: Option<String>,
    /// TLS for every connection; `None` for plaintext.
    pub tls: Option<TlsConfig>,
    /// Timeout of each PD call (client-go: 3 s).
    pub pd_timeout: Duration,
    /// Timeout of short TiKV calls: point reads and writes (client-go `ReadTimeoutShort`, 30 s).
    pub read_timeout_short: Duration,
    /// Timeout of medium TiKV calls: scans and batch reads (client-go `ReadTimeoutMedium`, 60 s).
    pub read_timeout_medium: Duration,
    /// How long TiKV may work on a write before dropping it (client-go: 20 s).
    pub max_write_execution: Duration,
    /// Total backoff budget of one raw KV operation (client-go `rawkvMaxBackoff`, 20 s).
    pub raw_max_backoff: Duration,
    /// How long a cached region stays valid (client-go: 600 s).
    pub region_cache_ttl: Duration,
    /// Random extra validity added per region so entries do not expire together (60 s).
    pub region_cache_ttl_jitter: Duration,
    /// Most requests in one BatchCommands message (client-go `max-batch-size`, 128).
    pub max_batch_size: usize,
    /// BatchCommands connections per store (client-go `grpc-connection-count`, 4).
    pub connections_per_store: usize,
    /// How long a connection task may go without a request (and with none unanswered) before
    /// it closes its connection (client-go recycles idle connections after 3 minutes); the
    /// next request to the address dials again.
    pub connection_idle_timeout: Duration,
    /// How long a connection may hold back a small batch for more requests while the store
    /// reports itself overloaded (client-go `max-batch-wait-time`; zero, the default, never
    /// waits).
    pub max_batch_wait: Duration,
    /// How many requests a held-back batch waits for (client-go `batch-wait-size`, 8).
    pub batch_wait_size: usize,
    /// The transport-layer load a store must report before batches are held back (client-go
    /// `overload-threshold`, 200).
    pub overload_threshold: u64,
    /// How often the whole store list is fetched from PD, so changed addresses and labels,
    /// new stores and removed ones are seen without a failed request (client-go re-resolves
    /// stores every 15 s); zero turns it off.
    pub store_refresh_interval: Duration,
    /// Timeout of the store liveness probe (client-go: 1 s).
    pub store_liveness_timeout: Duration,
    /// Most timestamps requested in one TSO request.
    pub tso_max_batch: u32,
    /// Largest message sent or received.
    pub max_message_size: usize,
    /// How old a cached timestamp may be for a low-resolution read (client-go refreshes its
    /// low-resolution timestamp every 2 s).
    pub low_resolution_ts_staleness: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            rng_seed: 0x7469_6b76,
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
            store_liveness_timeout: Duration::from_secs(1),
            tso_max_batch: 10_000,
            max_message_size: 1 << 30,
            low_resolution_ts_staleness: Duration::from_secs(2),
        }
    }
}

impl Config {
    /// Sets the PRNG seed.
    #[must_use]
    pub fn with_rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = seed;
        self
    }

    /// Sets the API version.
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

    /// Uses TLS with `tls`.
    #[must_use]
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }
}
