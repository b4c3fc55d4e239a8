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

    /// Port of client-go's `TestParsePath`.
    #[test]
    fn test_parse_path() {
        let parsed = parse_path("tikv://node1:2379,node2:2379").unwrap_or_default();
        assert_eq!(parsed.pd_endpoints, ["node1:2379", "node2:2379"]);
        assert!(!parsed.disable_gc);
        assert_eq!(parsed.keyspace, None);
        assert!(parse_path("tikv://node1:2379").is_ok());
        let parsed =
            parse_path("tikv://node1:2379?disableGC=true&keyspaceName=DEFAULT").unwrap_or_default();
        assert!(parsed.disable_gc);
        assert_eq!(parsed.keyspace.as_deref(), Some("DEFAULT"));
    }

    #[test]
    fn parses_endpoints_and_flags() {
        let parsed = parse_path("tikv://pd1:2379,pd2:2379?disableGC=true&keyspaceName=ks%201")
            .unwrap_or_default();
        assert_eq!(parsed.pd_endpoints, ["pd1:2379", "pd2:2379"]);
        assert!(parsed.disable_gc);
        assert_eq!(parsed.keyspace.as_deref(), Some("ks 1"));

        let plain = parse_path("TiKV://127.0.0.1:2379/some/path").unwrap_or_default();
        assert_eq!(plain.pd_endpoints, ["127.0.0.1:2379"]);
        assert!(!plain.disable_gc);
        assert_eq!(plain.keyspace, None);

        let flags = parse_path("tikv://pd:2379?disableGC=FALSE&disableGC=true").unwrap_or_default();
        assert!(!flags.disable_gc, "the first value counts");
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
