//! Shared fixture: a fresh simulated cluster with several regions, and client-rust clients
//! configured for it.
//!
//! Region boundaries live in TiKV's key space, so split keys are translated the way TiKV
//! stores them: API v1 raw keys as they are; API v1 txn keys memcomparable-encoded; API v2
//! keys (raw and txn) behind the `DEFAULT` keyspace's 4-byte prefix, memcomparable-encoded.

#![allow(dead_code)]

use std::time::Duration;

use tikv_client::{Config, RawClient, TransactionClient};
use tikv_proto::kvrpcpb::ApiVersion;
use tikv_sim::cluster::ClusterConfig;
use tikv_sim::{SimConfig, SimServer};

/// Which API the stores run and the clients speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    /// `storage.api-version = 1`; clients without a keyspace.
    V1,
    /// `storage.api-version = 1` with `enable-ttl`; raw only (TiKV refuses TxnKV there).
    V1Ttl,
    /// `storage.api-version = 2`; clients on the `DEFAULT` keyspace.
    V2,
}

/// Which key space a split key is meant for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Space {
    /// RawKV keys.
    Raw,
    /// TxnKV keys.
    Txn,
}

/// A served cluster plus what clients need to reach it.
pub(crate) struct Fixture {
    pub(crate) server: SimServer,
    pub(crate) api: Api,
}

/// Memcomparable encoding of `key` (8-byte groups, each followed by `0xFF - padding`).
pub(crate) fn encode_bytes(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk_start in (0..=key.len() / 8).map(|group| group * 8) {
        let chunk = &key[chunk_start..(chunk_start + 8).min(key.len())];
        out.extend_from_slice(chunk);
        let pad = 8 - chunk.len();
        out.extend(std::iter::repeat_n(0u8, pad));
        out.push(0xFF - pad as u8);
    }
    out
}

impl Fixture {
    /// Starts a cluster for `api` (three stores) and splits it at `splits` of `space`.
    pub(crate) async fn start(api: Api, space: Space, splits: &[&[u8]]) -> Self {
        let api_version = match api {
            Api::V1 => ApiVersion::V1,
            Api::V1Ttl => ApiVersion::V1ttl,
            Api::V2 => ApiVersion::V2,
        };
        let config = SimConfig {
            cluster: ClusterConfig {
                presplit_default_keyspace: api == Api::V2,
                // client-rust's `gc` only calls UpdateGCSafePoint.
                cap_gc_safe_point_by_txn_safe_point: false,
                ..ClusterConfig::default()
            },
            api_version,
            ..SimConfig::default()
        };
        let server = SimServer::start(config).await.expect("start sim");
        let fixture = Self { server, api };
        for key in splits {
            fixture.split(space, key);
        }
        fixture
    }

    /// Splits the region holding user key `key` of `space` at that key.
    pub(crate) fn split(&self, space: Space, key: &[u8]) {
        let tikv_key = self.tikv_key(space, key);
        self.server
            .with(|sim| sim.cluster.split_at(&tikv_key))
            .expect("split");
    }

    /// `key` as TiKV stores it (and as region boundaries are expressed).
    pub(crate) fn tikv_key(&self, space: Space, key: &[u8]) -> Vec<u8> {
        match (self.api, space) {
            (Api::V1 | Api::V1Ttl, Space::Raw) => key.to_vec(),
            (Api::V1 | Api::V1Ttl, Space::Txn) => encode_bytes(key),
            (Api::V2, _) => {
                let mode = if space == Space::Raw { b'r' } else { b'x' };
                let mut prefixed = vec![mode, 0, 0, 0];
                prefixed.extend_from_slice(key);
                encode_bytes(&prefixed)
            }
        }
    }

    /// Moves the leader of the region holding `key` to the next store that has a peer.
    pub(crate) fn move_leader(&self, space: Space, key: &[u8]) {
        let tikv_key = self.tikv_key(space, key);
        self.server.with(|sim| {
            let region = sim
                .cluster
                .region_by_key(&tikv_key)
                .expect("region")
                .clone();
            let leader_store = region.leader().expect("leader").store_id;
            let next = region
                .peers
                .iter()
                .map(|peer| peer.store_id)
                .find(|store| *store != leader_store)
                .expect("another peer");
            sim.cluster
                .transfer_leader(region.id, next)
                .expect("transfer leader");
        });
    }

    /// Merges the region that starts at user key `key` into its left neighbour.
    pub(crate) fn merge_left(&self, space: Space, key: &[u8]) {
        let tikv_key = self.tikv_key(space, key);
        self.server.with(|sim| {
            let source = sim
                .cluster
                .region_by_key(&tikv_key)
                .expect("region")
                .clone();
            assert_eq!(&source.start_key[..], &tikv_key[..], "not a region start");
            let left = sim
                .cluster
                .regions()
                .find(|region| region.end_key == source.start_key)
                .expect("left neighbour")
                .id;
            sim.cluster.merge(source.id, left).expect("merge");
        });
    }

    /// How many regions the cluster has.
    pub(crate) fn region_count(&self) -> usize {
        self.server.with(|sim| sim.cluster.region_count())
    }

    /// The client configuration for this API.
    pub(crate) fn config(&self) -> Config {
        let config = Config::default().with_timeout(Duration::from_secs(5));
        match self.api {
            Api::V1 | Api::V1Ttl => config,
            Api::V2 => config.with_default_keyspace(),
        }
    }

    /// PD endpoints to hand to client-rust.
    pub(crate) fn pd(&self) -> Vec<String> {
        vec![self.server.pd_address().to_owned()]
    }

    /// A raw client for this cluster.
    pub(crate) async fn raw(&self) -> RawClient {
        RawClient::new_with_config(self.pd(), self.config())
            .await
            .expect("raw client")
    }

    /// A transactional client for this cluster.
    pub(crate) async fn txn(&self) -> TransactionClient {
        TransactionClient::new_with_config(self.pd(), self.config())
            .await
            .expect("txn client")
    }
}

#[test]
fn encode_bytes_pads_groups() {
    assert_eq!(encode_bytes(b""), vec![0, 0, 0, 0, 0, 0, 0, 0, 0xF7]);
    assert_eq!(
        encode_bytes(b"abcdefgh"),
        b"abcdefgh\xFF\0\0\0\0\0\0\0\0\xF7".to_vec()
    );
}
