//! The PD and region model of the simulated cluster: stores, regions, TSO, GC and keyspaces.
//!
//! [`Cluster`] is one pure, deterministic value. Wall-clock time comes in as `now_ms`
//! parameters (milliseconds since the Unix epoch) and nothing here reads the environment, so
//! the same sequence of calls always yields the same state and the same answers.
//!
//! What it models:
//! - **Stores** ([`Store`]): id, addresses, labels, lifecycle (Up / Offline / Tombstone with the
//!   matching `node_state`) and a running flag the fault API flips.
//! - **Regions** ([`Region`]): ordered, non-overlapping, covering `["", "")`, each with an id,
//!   an epoch, peers and a leader. Splits follow TiKV's right-derive rule, merges and peer
//!   changes move the epoch as raftstore does (see `regions.rs`).
//! - **PD** (`pd.rs`, `gc.rs`, `keyspace.rs`, `etcd.rs`): `pdpb`/`keyspacepb` and etcd KV
//!   requests in, responses out.
//!   PD is a group of members with at most one leader (`members.rs`): elections, leader
//!   moves, stopped members, and the role check that makes followers answer as PD's do.
//!   PD's view can lag behind the stores: [`Cluster::hide_region_from_pd`] leaves a hole in
//!   PD's region tree, as a region that has not heartbeated yet does.
//! - **TiKV request validation** (`validate.rs`): [`Cluster::check_context`] answers the region
//!   errors TiKV gives before it executes a command.
//!
//! # Which key space region boundaries live in
//!
//! Region boundaries are stored exactly as PD and TiKV store them: TiKV's key space, where
//! TxnKV keys (API v1 and v2) and RawKV keys of API v2 appear **memcomparable-encoded**,
//! and API v1 RawKV keys appear as they are. Every PD query takes keys in that space (clients
//! encode before asking PD). Request validation takes the keys a TiKV request carries and a
//! [`KeyMode`] that says whether to encode them before comparing.
//!
//! IDs (stores, regions, peers, `AllocID`) all come from one counter, as in PD.

mod autosplit;
mod changes;
mod codec;
mod etcd;
mod gc;
mod keyspace;
mod members;
mod pd;
mod regions;
mod stores;
mod tso;
mod validate;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use tikv_proto::metapb::PeerRole;

pub use autosplit::{
    DEFAULT_BATCH_SPLIT_LIMIT, DEFAULT_REGION_SPLIT_SIZE, SplitEntry, SplitPolicy,
    SplitPolicyError, SplitSettings,
};
pub use changes::RegionChange;
pub use etcd::EtcdError;
pub use gc::{GcError, NULL_KEYSPACE_ID};
pub use keyspace::{
    DEFAULT_KEYSPACE_ID, DEFAULT_KEYSPACE_NAME, KeyspaceError, KeyspaceOptions,
    is_valid_keyspace_name,
};
pub use members::{
    FOLLOWER_HANDLE_METADATA, FORWARDED_HOST_METADATA, PdCallContext, PdCallKind, PdMember,
};
pub use pd::PdError;
pub use regions::{FIRST_ELECTED_TERM, Peer, Region, RegionEpoch};
pub use stores::{Store, StoreState, is_valid_label_key, is_valid_label_value};
pub use tso::{LOGICAL_BITS, MAX_LOGICAL, Timestamp, TsoError};
pub(crate) use validate::HeldRegions;
pub(crate) use validate::not_leader;
pub use validate::{Access, ContextError, KeyMode, Touched};

use gc::GcStates;
use keyspace::Keyspaces;
use members::PdGroup;
use tso::TsoAllocator;

/// How to build a [`Cluster`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The cluster id reported in every PD header and checked in every request (non-zero).
    pub cluster_id: u64,
    /// Number of TiKV stores created at bootstrap (at least 1).
    pub store_count: u32,
    /// Voters per region at bootstrap, placed on the first stores (1..=store_count); PD's
    /// `replication.max-replicas`.
    pub replica_count: u32,
    /// Learners per region at bootstrap, placed on the stores after the voters
    /// (`replica_count + learner_count <= store_count`). PD places learners by placement
    /// rules; this count is the simple form of such a rule.
    pub learner_count: u32,
    /// Placement labels per store, in store id order (`store_labels[0]` for the first store);
    /// stores past the end get none. TiKV's `server.labels`, reported to PD in
    /// `metapb::Store.labels`. Keys and values must pass TiKV's label patterns.
    pub store_labels: Vec<Vec<(String, String)>>,
    /// PD's `replication.location-labels`: the label keys that tell replicas' failure domains
    /// apart, outermost first. Reported by PD's HTTP API; placement does not use them yet.
    pub location_labels: Vec<String>,
    /// Pre-split the `DEFAULT` keyspace's API v2 bounds at bootstrap, as PD's keyspace
    /// manager does. [`crate::Sim::new`] turns this on for API V2 clusters; off by default
    /// here so that a fresh API V1 cluster has exactly one region.
    pub presplit_default_keyspace: bool,
    /// Reject `UpdateGCSafePoint` above the txn safe point, as PD does since GC barriers
    /// replaced service safe points. Clients that never advance the txn safe point (such as
    /// client-rust's `gc`) need this off to see the older "accept any increase" behaviour.
    pub cap_gc_safe_point_by_txn_safe_point: bool,
    /// When and where regions split automatically (TiKV's coprocessor split settings).
    pub split_policy: SplitPolicy,
    /// The PD member's name in `GetMembers` (with several members, `<name>-1`, `<name>-2`...).
    pub pd_name: String,
    /// The first PD member's id in `GetMembers` (the others follow it).
    pub pd_member_id: u64,
    /// How many PD members the group has (at least 1); the first one leads at bootstrap.
    pub pd_members: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            cluster_id: 7_000_000_000_000_000_001,
            store_count: 3,
            replica_count: 3,
            learner_count: 0,
            store_labels: Vec::new(),
            location_labels: Vec::new(),
            presplit_default_keyspace: false,
            cap_gc_safe_point_by_txn_safe_point: true,
            split_policy: SplitPolicy::default(),
            pd_name: "pd-sim".to_owned(),
            pd_member_id: 1,
            pd_members: 1,
        }
    }
}

/// Why a cluster operation (split, merge, peer change, store change) is impossible.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The configuration cannot describe a cluster.
    #[error("invalid cluster config: {0}")]
    InvalidConfig(&'static str),
    /// No region has this id.
    #[error("region {region_id} not found")]
    RegionNotFound {
        /// The id asked for.
        region_id: u64,
    },
    /// No store has this id.
    #[error("store {store_id} not found")]
    StoreNotFound {
        /// The id asked for.
        store_id: u64,
    },
    /// The store is a tombstone and takes no new peers.
    #[error("store {store_id} is a tombstone")]
    StoreTombstone {
        /// The removed store.
        store_id: u64,
    },
    /// A store still holding peers cannot become a tombstone.
    #[error("store {store_id} still holds {peer_count} peers")]
    StoreHasPeers {
        /// The store asked for.
        store_id: u64,
        /// How many region peers remain on it.
        peer_count: usize,
    },
    /// Split keys must be non-empty, strictly increasing and strictly inside the region.
    #[error("invalid split key {key:?} for region {region_id}")]
    InvalidSplitKey {
        /// The region being split.
        region_id: u64,
        /// The offending key.
        key: Bytes,
    },
    /// Merge needs the source to touch the target.
    #[error("region {source_id} is not adjacent to region {target_id}")]
    NotAdjacent {
        /// The region that would disappear.
        source_id: u64,
        /// The region that would absorb it.
        target_id: u64,
    },
    /// Merge needs both regions to have peers on the same stores, as TiKV's PrepareMerge does.
    #[error("peers of region {source_id} and region {target_id} are not on the same stores")]
    PeersNotAligned {
        /// The region that would disappear.
        source_id: u64,
        /// The region that would absorb it.
        target_id: u64,
    },
    /// A region cannot be merged into itself.
    #[error("cannot merge region {region_id} into itself")]
    SelfMerge {
        /// The region named twice.
        region_id: u64,
    },
    /// The region has no peer on this store.
    #[error("region {region_id} has no peer on store {store_id}")]
    PeerNotFound {
        /// The region asked for.
        region_id: u64,
        /// The store asked for.
        store_id: u64,
    },
    /// The region already has a peer on this store.
    #[error("region {region_id} already has a peer on store {store_id}")]
    PeerExists {
        /// The region asked for.
        region_id: u64,
        /// The store asked for.
        store_id: u64,
    },
    /// TiKV refuses to remove (or demote) the leader; transfer leadership first.
    #[error("cannot remove the leader of region {region_id}")]
    RemoveLeader {
        /// The region asked for.
        region_id: u64,
    },
    /// Only voters can lead.
    #[error("the peer of region {region_id} on store {store_id} is not a voter")]
    NotVoter {
        /// The region asked for.
        region_id: u64,
        /// The store asked for.
        store_id: u64,
    },
    /// A store label or location label does not match TiKV's and PD's label patterns.
    #[error("invalid label {key:?}={value:?}")]
    InvalidLabel {
        /// The label key.
        key: String,
        /// The label value (empty for a location label).
        value: String,
    },
    /// The split settings break TiKV's rules.
    #[error(transparent)]
    SplitPolicy(#[from] SplitPolicyError),
    /// A keyspace operation failed.
    #[error(transparent)]
    Keyspace(#[from] KeyspaceError),
    /// No PD member has this id.
    #[error("PD member {member_id} not found")]
    PdMemberNotFound {
        /// The id asked for.
        member_id: u64,
    },
    /// The PD member is stopped and cannot lead.
    #[error("PD member {member_id} is stopped")]
    PdMemberStopped {
        /// The member asked for.
        member_id: u64,
    },
    /// The PD group has no leader (an election is in progress).
    #[error("the PD group has no leader")]
    PdNoLeader,
    /// Fewer than a majority of the PD members run: etcd elects nobody.
    #[error("a majority of the PD members is stopped")]
    PdNoQuorum,
}

/// The simulated PD and the region/store layout of the TiKV stores.
#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    pub(crate) config: ClusterConfig,
    /// The last id handed out (stores, regions, peers and AllocID share it).
    pub(crate) last_id: u64,
    pub(crate) stores: BTreeMap<u64, Store>,
    pub(crate) regions: BTreeMap<u64, Region>,
    /// Region ids by start key: the key order of the region tree.
    pub(crate) by_start: BTreeMap<Bytes, u64>,
    /// Regions PD has not heard about (holes in PD's tree).
    pub(crate) pd_hidden: BTreeSet<u64>,
    /// Regions a ScatterRegion call has touched, with how many more GetOperator polls see
    /// their scatter still running (then it reports them finished).
    pub(crate) scattered: BTreeMap<u64, u32>,
    /// How many GetOperator polls a new scatter reports as running.
    pub(crate) scatter_running_polls: u32,
    pub(crate) tso: TsoAllocator,
    pub(crate) external_ts: u64,
    pub(crate) gc: GcStates,
    pub(crate) keyspaces: Keyspaces,
    /// Leader transfers, splits, merges and store stops/restarts not yet taken by
    /// [`Cluster::take_changes`].
    pub(crate) changes: Vec<RegionChange>,
    /// The PD members and their leader.
    pub(crate) pd: PdGroup,
    /// PD's embedded etcd key-value store.
    pub(crate) etcd: etcd::EtcdKv,
}

impl Cluster {
    /// Bootstraps a cluster: `store_count` stores (labelled from `store_labels`), one region
    /// covering everything with a voter on each of the first `replica_count` stores, a learner
    /// on each of the next `learner_count`, and the leader on the first.
    ///
    /// Errors with [`ClusterError::InvalidConfig`] on a zero cluster id, no stores, a bad
    /// replica or learner count or labels for more stores than there are,
    /// [`ClusterError::InvalidLabel`] on a label TiKV would refuse, and
    /// [`ClusterError::SplitPolicy`] on split settings TiKV would refuse.
    pub fn new(config: ClusterConfig) -> Result<Self, ClusterError> {
        if config.cluster_id == 0 {
            return Err(ClusterError::InvalidConfig("cluster_id must be non-zero"));
        }
        if config.store_count == 0 {
            return Err(ClusterError::InvalidConfig(
                "store_count must be at least 1",
            ));
        }
        if config.replica_count == 0 || config.replica_count > config.store_count {
            return Err(ClusterError::InvalidConfig(
                "replica_count must be between 1 and store_count",
            ));
        }
        if u64::from(config.replica_count) + u64::from(config.learner_count)
            > u64::from(config.store_count)
        {
            return Err(ClusterError::InvalidConfig(
                "replica_count + learner_count must not exceed store_count",
            ));
        }
        if config.store_labels.len() > config.store_count as usize {
            return Err(ClusterError::InvalidConfig(
                "store_labels names more stores than store_count",
            ));
        }
        for (key, value) in config.store_labels.iter().flatten() {
            if !is_valid_label_key(key) || !is_valid_label_value(value) {
                return Err(ClusterError::InvalidLabel {
                    key: key.clone(),
                    value: value.clone(),
                });
            }
        }
        if let Some(key) = config
            .location_labels
            .iter()
            .find(|key| !is_valid_label_key(key))
        {
            return Err(ClusterError::InvalidLabel {
                key: key.clone(),
                value: String::new(),
            });
        }
        config.split_policy.validate()?;
        if config.pd_members == 0 {
            return Err(ClusterError::InvalidConfig("pd_members must be at least 1"));
        }
        let mut cluster = Self {
            last_id: 0,
            stores: BTreeMap::new(),
            regions: BTreeMap::new(),
            by_start: BTreeMap::new(),
            pd_hidden: BTreeSet::new(),
            scattered: BTreeMap::new(),
            scatter_running_polls: 0,
            tso: TsoAllocator::default(),
            external_ts: 0,
            gc: GcStates::default(),
            keyspaces: Keyspaces::default(),
            changes: Vec::new(),
            pd: PdGroup::new(&config.pd_name, config.pd_member_id, config.pd_members),
            etcd: etcd::EtcdKv::default(),
            config,
        };
        for index in 0..cluster.config.store_count as usize {
            let id = cluster.alloc_id();
            let mut store = Store::placeholder(id);
            if let Some(labels) = cluster.config.store_labels.get(index) {
                store.labels.clone_from(labels);
            }
            cluster.stores.insert(id, store);
        }
        let region_id = cluster.alloc_id();
        let voters = cluster.config.replica_count as usize;
        let learners = cluster.config.learner_count as usize;
        let store_ids: Vec<u64> = cluster
            .stores
            .keys()
            .copied()
            .take(voters + learners)
            .collect();
        let peers: Vec<Peer> = store_ids
            .into_iter()
            .enumerate()
            .map(|(index, store_id)| {
                let id = cluster.alloc_id();
                if index < voters {
                    Peer::voter(id, store_id)
                } else {
                    Peer {
                        id,
                        store_id,
                        role: PeerRole::Learner,
                    }
                }
            })
            .collect();
        let leader_peer_id = peers.first().map_or(0, |peer| peer.id);
        cluster.insert_region(Region {
            id: region_id,
            start_key: Bytes::new(),
            end_key: Bytes::new(),
            epoch: RegionEpoch {
                conf_ver: 1,
                version: 1,
            },
            peers,
            leader_peer_id,
            term: FIRST_ELECTED_TERM,
        });
        if cluster.config.presplit_default_keyspace {
            cluster.split_keyspace_bounds(DEFAULT_KEYSPACE_ID)?;
        }
        Ok(cluster)
    }

    /// The configuration this cluster was built from.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> u64 {
        self.config.cluster_id
    }

    /// Hands out the next id from the cluster-wide allocator (PD's AllocID).
    pub fn alloc_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    /// Sets the split policy automatic splits follow (see [`crate::Sim::split_by_size`]).
    pub fn set_split_policy(&mut self, policy: SplitPolicy) {
        self.config.split_policy = policy;
    }
}

/// Bounds for `BTreeMap<Bytes, _>::range` over borrowed `[u8]` keys (unsized, so the
/// `..=key` sugar does not apply).
mod key_range {
    use std::ops::Bound;

    pub(super) type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

    /// Keys `<= key`.
    pub(super) fn up_to(key: &[u8]) -> KeyBounds<'_> {
        (Bound::Unbounded, Bound::Included(key))
    }

    /// Keys `< key`.
    pub(super) fn below(key: &[u8]) -> KeyBounds<'_> {
        (Bound::Unbounded, Bound::Excluded(key))
    }

    /// Keys `>= key`.
    pub(super) fn from(key: &[u8]) -> KeyBounds<'_> {
        (Bound::Included(key), Bound::Unbounded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tikv_proto::metapb::PeerRole;
    use tikv_proto::pdpb;

    /// A tiny seeded generator for operation sequences.
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    /// Applies `steps` random operations drawn from `seed`; returns a trace of outcomes.
    fn run(seed: u64, steps: usize) -> (Cluster, Vec<String>) {
        let mut rng = SplitMix64(seed);
        let mut cluster = Cluster::new(ClusterConfig::default()).unwrap();
        let mut trace = Vec::new();
        for step in 0..steps {
            let ids: Vec<u64> = cluster.regions().map(|r| r.id).collect();
            let region_id = ids[rng.below(ids.len() as u64) as usize];
            let store_id = 1 + rng.below(3);
            let outcome = match rng.below(7) {
                0 => {
                    let key =
                        Bytes::from(vec![b'a' + rng.below(26) as u8; 1 + rng.below(3) as usize]);
                    format!("{:?}", cluster.split_at(&key))
                }
                1 => {
                    let other = ids[rng.below(ids.len() as u64) as usize];
                    format!("{:?}", cluster.merge(region_id, other))
                }
                2 => format!("{:?}", cluster.transfer_leader(region_id, store_id)),
                3 => format!("{:?}", cluster.remove_peer(region_id, store_id)),
                4 => format!(
                    "{:?}",
                    cluster.add_peer(region_id, store_id, PeerRole::Voter)
                ),
                5 => {
                    let req = pdpb::TsoRequest {
                        header: Some(pdpb::RequestHeader {
                            cluster_id: cluster.cluster_id(),
                            ..Default::default()
                        }),
                        count: 1 + rng.below(100) as u32,
                        dc_location: String::new(),
                    };
                    let now_ms = 1_000 + rng.below(50);
                    format!(
                        "{:?}",
                        cluster.handle_tso(&req, now_ms).map(|r| r.timestamp)
                    )
                }
                _ => format!("{:?}", cluster.hide_region_from_pd(region_id)),
            };
            trace.push(format!("{step}: {outcome}"));
        }
        (cluster, trace)
    }

    #[test]
    fn same_operations_give_the_same_state() {
        for seed in [1, 7, 42, 0xDEAD_BEEF] {
            let (first, first_trace) = run(seed, 300);
            let (second, second_trace) = run(seed, 300);
            assert_eq!(first_trace, second_trace);
            assert_eq!(first, second);
            // The random walk must have kept the tree covering the key space.
            let regions: Vec<&Region> = first.regions().collect();
            assert!(regions[0].start_key.is_empty());
            assert!(regions.last().unwrap().end_key.is_empty());
            assert!(regions.windows(2).all(|w| w[0].end_key == w[1].start_key));
        }
        assert_ne!(run(1, 300).1, run(2, 300).1);
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let bad = |config: ClusterConfig| Cluster::new(config).unwrap_err();
        let base = ClusterConfig::default();
        assert!(matches!(
            bad(ClusterConfig {
                cluster_id: 0,
                ..base.clone()
            }),
            ClusterError::InvalidConfig(_)
        ));
        assert!(matches!(
            bad(ClusterConfig {
                store_count: 0,
                ..base.clone()
            }),
            ClusterError::InvalidConfig(_)
        ));
        assert!(matches!(
            bad(ClusterConfig {
                replica_count: 4,
                ..base.clone()
            }),
            ClusterError::InvalidConfig(_)
        ));
        let single = Cluster::new(ClusterConfig {
            store_count: 5,
            replica_count: 1,
            ..base
        })
        .unwrap();
        assert_eq!(single.stores().count(), 5);
        assert_eq!(single.regions().next().unwrap().peers.len(), 1);
    }
}
