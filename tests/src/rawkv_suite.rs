//! client-go's raw KV tests, ported, plus end-to-end checks of the raw client, written once
//! and run under every runtime (see `tests/rawkv_tokio.rs` and `tests/rawkv_async_std.rs`).
//!
//! Every test starts its own simulated cluster ([`SimServer`]) through an [`Env`], which also
//! connects a [`Client`] with the runtime under test. Where the Go tests use mocktikv hooks or
//! failpoints, these tests use the simulated cluster's own levers instead: region splits,
//! leader transfers, peer and store changes, and injected region errors.
//!
//! - [`rawkv`]: `rawkv/rawkv_test.go` (the unit suite against mocktikv).
//! - [`api_mock`]: `integration_tests/raw/api_mock_test.go`, names prefixed `mock_`.
//! - [`api`]: `integration_tests/raw/api_test.go` (real TiKV in V1TTL or V2), names prefixed
//!   `api_`; each runs under V2 and, as `api_<name>_v1ttl`, under V1TTL.
//! - [`extra`]: checks with no Go counterpart (writes across region changes, batch limits,
//!   CAS, TTL, checksum, column families, injected region errors).

pub mod api;
pub mod api_mock;
pub mod extra;
pub mod rawkv;

use std::ops::Bound;
use std::time::Duration;

use bytes::Bytes;
use tikv_core::{ApiVersion, Client, Config, RawClient};
use tikv_proto::codec;
use tikv_proto::kvrpcpb;
use tikv_proto::rpc::BoxFuture;
use tikv_sim::cluster::ClusterConfig;
use tikv_sim::{SimConfig, SimServer};

/// What a runtime provides to the suite.
pub trait Env: Sync {
    /// Serves a fresh simulated cluster built from `sim` and connects a client to it with
    /// `config`, on this runtime.
    fn start(&self, sim: SimConfig, config: Config) -> BoxFuture<'_, (SimServer, Client)>;

    /// Completes after `duration` (for TTL expiry, which the served cluster measures in wall
    /// time).
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// The API version a test runs the cluster and the client with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// Plain raw keys, no TTL.
    V1,
    /// Plain raw keys with TTL.
    V1Ttl,
    /// Keyspaces: the client uses the `DEFAULT` keyspace.
    V2,
}

impl Api {
    fn proto(self) -> kvrpcpb::ApiVersion {
        match self {
            Self::V1 => kvrpcpb::ApiVersion::V1,
            Self::V1Ttl => kvrpcpb::ApiVersion::V1ttl,
            Self::V2 => kvrpcpb::ApiVersion::V2,
        }
    }

    fn client_config(self) -> Config {
        // Go's suites give each operation a 5 s backoffer; a bug then fails in seconds
        // instead of after client-go's 20 s default.
        let config = Config::default().with_raw_max_backoff(Duration::from_secs(5));
        match self {
            Self::V1 => config,
            Self::V1Ttl => config.with_api_version(ApiVersion::V1Ttl),
            Self::V2 => config.with_keyspace("DEFAULT"),
        }
    }
}

/// A running simulated cluster and a client connected to it.
#[derive(Debug)]
pub struct TestCluster {
    /// The served cluster; reach its model with [`SimServer::with`].
    pub server: SimServer,
    /// The client under test.
    pub client: Client,
    /// The API version of both.
    pub api: Api,
}

/// Starts a cluster of three stores with three replicas per region.
pub async fn start<E: Env>(env: &E, api: Api) -> TestCluster {
    start_with(env, api, ClusterConfig::default()).await
}

/// Starts a cluster laid out as `cluster` (the keyspace pre-split is added for V2).
pub async fn start_with<E: Env>(env: &E, api: Api, mut cluster: ClusterConfig) -> TestCluster {
    cluster.presplit_default_keyspace = api == Api::V2;
    let sim = SimConfig {
        cluster,
        api_version: api.proto(),
        ..SimConfig::default()
    };
    let (server, client) = env.start(sim, api.client_config()).await;
    TestCluster {
        server,
        client,
        api,
    }
}

impl TestCluster {
    /// A raw client (default column family, atomic mode off).
    pub fn raw(&self) -> RawClient {
        self.client.raw()
    }

    /// The key TiKV stores for user key `key` (with the keyspace prefix under V2).
    pub fn stored_key(&self, key: &[u8]) -> Vec<u8> {
        match self.api {
            Api::V1 | Api::V1Ttl => key.to_vec(),
            Api::V2 => [b"r\0\0\0".as_slice(), key].concat(),
        }
    }

    /// `key` as region boundaries spell it (memcomparable under V2).
    pub fn boundary(&self, key: &[u8]) -> Vec<u8> {
        match self.api {
            Api::V1 | Api::V1Ttl => key.to_vec(),
            Api::V2 => codec::encode_bytes(&self.stored_key(key)),
        }
    }

    /// Splits the region holding each user key at that key (an existing boundary is kept).
    pub fn split(&self, keys: &[&[u8]]) {
        self.server.with(|sim| {
            for key in keys {
                sim.cluster
                    .split_at(&self.boundary(key))
                    .unwrap_or_else(|err| panic!("split at {key:?}: {err}"));
            }
        });
    }

    /// The id of the region holding user key `key`.
    pub fn region_of(&self, key: &[u8]) -> u64 {
        self.server.with(|sim| {
            sim.cluster
                .region_by_key(&self.boundary(key))
                .map(|region| region.id)
                .unwrap_or_else(|| panic!("no region holds {key:?}"))
        })
    }

    /// Number of regions in the cluster.
    pub fn region_count(&self) -> usize {
        self.server.with(|sim| sim.cluster.region_count())
    }

    /// Merges the second region (in key order) into the first, so cached copies of both go
    /// stale.
    pub fn merge_first_two(&self) {
        self.server.with(|sim| {
            let ids: Vec<u64> = sim.cluster.regions().map(|r| r.id).take(2).collect();
            if let [target, source] = ids[..] {
                sim.cluster
                    .merge(source, target)
                    .unwrap_or_else(|err| panic!("merge {source} into {target}: {err}"));
            }
        });
    }

    /// Moves the leader of every region to its next voter (by store id, wrapping).
    pub fn rotate_leaders(&self) {
        self.server.with(|sim| {
            let moves: Vec<(u64, u64)> = sim
                .cluster
                .regions()
                .filter_map(|region| {
                    let leader = region.leader()?.store_id;
                    let mut stores: Vec<u64> = region.peers.iter().map(|p| p.store_id).collect();
                    stores.sort_unstable();
                    let next = stores
                        .iter()
                        .find(|&&s| s > leader)
                        .or_else(|| stores.first())?;
                    Some((region.id, *next))
                })
                .collect();
            for (region_id, store_id) in moves {
                sim.cluster
                    .transfer_leader(region_id, store_id)
                    .unwrap_or_else(|err| panic!("transfer leader of {region_id}: {err}"));
            }
        });
    }

    /// Takes store `store_id` out of the cluster as client-go's tests do with mocktikv: every
    /// region led there moves its leader to `successor`, its peers there are removed, and the
    /// store becomes a tombstone (its port then refuses every request).
    pub fn retire_store(&self, store_id: u64, successor: u64) {
        self.server.with(|sim| {
            let regions: Vec<(u64, bool)> = sim
                .cluster
                .regions()
                .filter(|region| region.peer_on(store_id).is_some())
                .map(|region| {
                    let led = region.leader().is_some_and(|l| l.store_id == store_id);
                    (region.id, led)
                })
                .collect();
            for (region_id, led) in regions {
                if led {
                    sim.cluster
                        .transfer_leader(region_id, successor)
                        .unwrap_or_else(|err| panic!("transfer leader of {region_id}: {err}"));
                }
                sim.cluster
                    .remove_peer(region_id, store_id)
                    .unwrap_or_else(|err| panic!("remove peer of {region_id}: {err}"));
            }
            sim.cluster
                .remove_store(store_id)
                .unwrap_or_else(|err| panic!("remove store {store_id}: {err}"));
        });
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

/// The range client-go means by `start` and `end` (`[start, end)`, an empty `end` meaning
/// no upper bound), as the Rust range the raw API takes; the ported tests keep Go's
/// arguments through it.
pub(crate) fn go_range(
    start: impl AsRef<[u8]>,
    end: impl AsRef<[u8]>,
) -> (Bound<Bytes>, Bound<Bytes>) {
    let end = end.as_ref();
    let end = if end.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(b(end))
    };
    (Bound::Included(b(start)), end)
}

/// Go's `hash/crc64` with the ECMA table (reflected ECMA-182 polynomial, all-ones initial
/// value and final XOR), over `parts` in order: the digest TiKV's raw checksum XORs together.
pub fn crc64_ecma(parts: &[&[u8]]) -> u64 {
    const POLY: u64 = 0xC96C_5795_D787_0F42;
    let mut crc = !0u64;
    for part in parts {
        for &byte in *part {
            crc ^= u64::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ POLY
                } else {
                    crc >> 1
                };
            }
        }
    }
    !crc
}

/// Calls `$m!(name)` (with `#[ignore = ...]` attributes where a test is known to fail) for
/// every test of the raw KV suite.
#[macro_export]
macro_rules! for_each_rawkv_test {
    ($m:ident) => {
        // rawkv/rawkv_test.go
        $m!(update_store_addr);
        $m!(replace_addr_with_new_store);
        $m!(replace_new_addr_and_old_offline_immediately);
        $m!(replace_store);
        $m!(column_family_for_client);
        $m!(column_family_for_options);
        $m!(batch);
        $m!(scan);
        $m!(delete_range);
        $m!(delete_range_empty_keys_multi_region);
        $m!(compare_and_swap);
        $m!(raw_checksum);
        // integration_tests/raw/api_mock_test.go
        $m!(mock_simple);
        $m!(mock_raw_batch);
        $m!(mock_split);
        $m!(mock_scan);
        $m!(mock_reverse_scan);
        $m!(mock_delete_range);
        // integration_tests/raw/api_test.go
        $m!(api_simple);
        $m!(api_scan);
        $m!(api_reverse_scan);
        $m!(api_batch_op);
        $m!(api_cas);
        $m!(api_ttl);
        $m!(api_delete_range);
        $m!(api_raw_checksum);
        $m!(api_empty_value);
        $m!(api_simple_v1ttl);
        $m!(api_scan_v1ttl);
        $m!(api_reverse_scan_v1ttl);
        $m!(api_batch_op_v1ttl);
        $m!(api_cas_v1ttl);
        $m!(api_ttl_v1ttl);
        $m!(api_delete_range_v1ttl);
        $m!(api_raw_checksum_v1ttl);
        $m!(api_empty_value_v1ttl);
        // no Go counterpart
        $m!(acknowledged_writes_survive_splits_and_leader_moves);
        $m!(compare_and_swap_needs_atomic_mode);
        $m!(ttl_and_get_key_ttl);
        $m!(checksum_matches_local_scan);
        $m!(batches_over_limits_across_regions);
        $m!(scan_limit_over_max_is_refused);
        $m!(column_families);
        $m!(injected_region_errors_are_retried);
        $m!(unreachable_leader_store_is_routed_around);
        // tikv/split_region.go (KVStore.SplitRegions and the scatter waits), in raw key space
        $m!(split_regions_at_keys);
        $m!(split_regions_then_scatter);
        $m!(cluster_id_comes_from_pd);
        $m!(locate_keys_and_ranges);
        $m!(regions_in_the_transactional_key_space);
        $m!(delete_range_and_unsafe_destroy_range_of_transactional_keys);
        $m!(external_and_stale_timestamps);
        $m!(txn_safe_point_and_visibility);
        // integration_tests/delete_range_test.go
        $m!(txn_delete_range);
        // integration_tests/range_task_test.go
        $m!(range_task);
        $m!(range_task_error);
    };
}

#[doc(hidden)]
pub use api::*;
#[doc(hidden)]
pub use api_mock::*;
#[doc(hidden)]
pub use extra::*;
#[doc(hidden)]
pub use rawkv::*;

#[cfg(test)]
mod tests {
    use super::crc64_ecma;

    #[test]
    fn crc64_matches_the_ecma_check_value() {
        // CRC-64/XZ (Go's ECMA table) of "123456789".
        assert_eq!(crc64_ecma(&[b"123456789"]), 0x995D_C9BB_DF19_39FA);
        assert_eq!(
            crc64_ecma(&[b"1234", b"56789"]),
            crc64_ecma(&[b"123456789"])
        );
    }
}
