//! Region cache and routing: which region, and which peer of it, serves a key.
//!
//! [`RegionCache`] keeps the regions the client has learned from PD (and from TiKV's
//! `EpochNotMatch` errors) in a map sorted by start key, together with the table of
//! [`Stores`]. It never talks to anyone: when a lookup misses, the caller asks PD
//! (`GetRegion`, `GetPrevRegion`, `BatchScanRegions`) and feeds the answer to
//! [`RegionCache::insert`]. Time and randomness are inputs, as everywhere in the core.
//!
//! # Key space
//!
//! Every key given to the cache must be in the same key space as the region boundaries PD
//! reports: the caller applies the API codec first (memcomparable encoding for transactional
//! keys in API v1, keyspace prefix plus memcomparable encoding in API v2; see
//! [`tikv_proto::codec`]). The cache compares bytes and nothing else. An empty end key means
//! "up to the end of the key space", as on the wire.
//!
//! # Freshness
//!
//! A cached region is usable while it is *valid* (not invalidated by a region error) and its
//! TTL deadline has not passed. The deadline starts at `cached_at + ttl + jitter` and slides
//! forward on every successful lookup, so regions in use stay cached while idle ones age out
//! (client-go: 600 s plus up to 60 s of jitter). Region epochs order competing answers: an
//! insert never replaces a region with a staler one (see [`RegionCache::insert`]).

mod cache;
mod store;

#[cfg(test)]
mod cache_tests;
#[cfg(test)]
mod model_tests;

use std::sync::Arc;

use bytes::Bytes;
use tikv_proto::metapb;

pub use cache::{EpochNotMatchOutcome, RegionCache, RegionCacheConfig};
pub use store::{Liveness, ResolveState, Store, StoreError, StoreUpdate, Stores};

/// A region's id together with its epoch: the identity of one version of a region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionVerId {
    /// The region id.
    pub id: u64,
    /// The epoch's configuration version (bumped on membership changes).
    pub conf_ver: u64,
    /// The epoch's version (bumped on splits and merges).
    pub version: u64,
}

impl RegionVerId {
    /// The version id of `region` (a missing epoch counts as zero).
    pub fn of(region: &metapb::Region) -> Self {
        let (conf_ver, version) = region
            .region_epoch
            .as_ref()
            .map_or((0, 0), |epoch| (epoch.conf_ver, epoch.version));
        Self {
            id: region.id,
            conf_ver,
            version,
        }
    }

    /// The epoch as sent in a request context.
    pub fn epoch(self) -> metapb::RegionEpoch {
        metapb::RegionEpoch {
            conf_ver: self.conf_ver,
            version: self.version,
        }
    }
}

/// Why a cached region stopped being valid (client-go's `InvalidReason`).
///
/// The reason changes what happens next: a region invalidated for [`InvalidReason::NoLeader`]
/// is re-cached with the next peer as the one to try, since the reported leader just failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InvalidReason {
    /// The region is valid.
    #[default]
    Ok,
    /// The peer tried has no leader to point at.
    NoLeader,
    /// The store no longer has the region.
    RegionNotFound,
    /// The region's epoch changed (split, merge, conf change).
    EpochNotMatch,
    /// A store the region lives on is unknown or gone.
    StoreNotFound,
    /// Any other reason: a send failure, a key outside the region, ...
    Other,
}

/// Why [`RegionCache::insert`] refused a region.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InsertError {
    /// The cache already holds a newer version of this region or of one overlapping it, so
    /// the region (typically from a lagging PD follower or a delayed reply) is stale.
    #[error("stale region {offered:?}: cache holds {cached:?}")]
    Stale {
        /// The region offered.
        offered: RegionVerId,
        /// The newer cached region that rejects it.
        cached: RegionVerId,
    },
    /// The region has no peers to send requests to.
    #[error("region {0} has no peers")]
    NoPeers(u64),
    /// The region's start key is not below its end key.
    #[error("region {0} has an empty or inverted key range")]
    InvalidRange(u64),
}

/// A snapshot of one cached region: its metadata and the peer requests should go to.
///
/// Cheap to clone (the metadata is shared). A `RegionRef` does not change when the cache
/// does; callers keep its [`RegionVerId`] and report errors against it.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionRef {
    meta: Arc<metapb::Region>,
    ver_id: RegionVerId,
    work_index: usize,
    leader_known: bool,
    /// Each peer's store failure epoch when the region was cached (client-go's
    /// `storeEpochs`): a store whose epoch moved on since (a send to it failed, or it was
    /// removed) makes the region stale for requests to that peer. Empty: not tracked.
    store_epochs: smallvec::SmallVec<[u32; 4]>,
}

impl RegionRef {
    fn new(meta: Arc<metapb::Region>, work_index: usize, leader_known: bool) -> Self {
        let ver_id = RegionVerId::of(&meta);
        Self {
            meta,
            ver_id,
            work_index,
            leader_known,
            store_epochs: smallvec::SmallVec::new(),
        }
    }

    /// The failure epoch peer `index`'s store had when the region was cached (or its leader
    /// last confirmed); `None` when not tracked.
    pub fn store_epoch(&self, index: usize) -> Option<u32> {
        self.store_epochs.get(index).copied()
    }

    /// The region id.
    pub fn id(&self) -> u64 {
        self.ver_id.id
    }

    /// The region id with its epoch.
    pub fn ver_id(&self) -> RegionVerId {
        self.ver_id
    }

    /// The region epoch to put in a request context.
    pub fn epoch(&self) -> metapb::RegionEpoch {
        self.ver_id.epoch()
    }

    /// The first key of the region (empty: the start of the key space).
    pub fn start_key(&self) -> &Bytes {
        &self.meta.start_key
    }

    /// The key after the region (empty: the end of the key space).
    pub fn end_key(&self) -> &Bytes {
        &self.meta.end_key
    }

    /// The region metadata as PD or TiKV reported it.
    pub fn meta(&self) -> &metapb::Region {
        &self.meta
    }

    /// The region metadata, shared (cloning it copies a pointer, not the peers).
    pub fn shared_meta(&self) -> Arc<metapb::Region> {
        Arc::clone(&self.meta)
    }

    /// The region's peers.
    pub fn peers(&self) -> &[metapb::Peer] {
        &self.meta.peers
    }

    /// The peer leader requests should go to: the known leader, or the peer the cache is
    /// trying while the leader is unknown. `None` only for a region without peers.
    pub fn work_peer(&self) -> Option<&metapb::Peer> {
        self.meta.peers.get(self.work_index)
    }

    /// The index of [`Self::work_peer`] in [`Self::peers`].
    pub fn work_index(&self) -> usize {
        self.work_index
    }

    /// The leader, when PD or TiKV named it; `None` while the cache is guessing.
    pub fn leader(&self) -> Option<&metapb::Peer> {
        if self.leader_known {
            self.work_peer()
        } else {
            None
        }
    }

    /// Whether `start_key <= key < end_key` (an empty end is unbounded).
    pub fn contains(&self, key: &[u8]) -> bool {
        contains(&self.meta.start_key, &self.meta.end_key, key)
    }

    /// Whether the region holds the position just before `key`: `start_key < key <= end_key`,
    /// where an empty `key` is the end of the key space and is held only by the last region.
    pub fn contains_by_end(&self, key: &[u8]) -> bool {
        contains_by_end(&self.meta.start_key, &self.meta.end_key, key)
    }
}

/// Whether a region spanning `start..end` holds `key`: as [`Region::contains`], or as
/// [`Region::contains_by_end`] when `by_end` (a reverse lookup).
pub(crate) fn range_holds(start: &[u8], end: &[u8], key: &[u8], by_end: bool) -> bool {
    if by_end {
        contains_by_end(start, end, key)
    } else {
        contains(start, end, key)
    }
}

/// Whether `start <= key < end`, with an empty `end` unbounded.
fn contains(start: &[u8], end: &[u8], key: &[u8]) -> bool {
    start <= key && (end.is_empty() || key < end)
}

/// Whether `start < key <= end`, with empty `end` and empty `key` meaning +infinity.
fn contains_by_end(start: &[u8], end: &[u8], key: &[u8]) -> bool {
    if key.is_empty() {
        return end.is_empty();
    }
    start < key && (end.is_empty() || key <= end)
}

/// Whether two peers are the same peer (same peer id on the same store).
fn same_peer(a: &metapb::Peer, b: &metapb::Peer) -> bool {
    a.id == b.id && a.store_id == b.store_id
}
