//! What a TiKV store checks before it executes a request: the region errors a client's
//! routing reacts to.
//!
//! Order (TiKV's, spread over its service, storage and raftstore layers): the store must be
//! running (else the connection fails), the context's cluster id must match when set, then
//! StoreNotMatch → RegionNotFound → MismatchPeerId → NotLeader (followers and learners
//! serve reads marked `replica_read` or `stale_read`; a write, or a ScanLock marked only
//! `replica_read`, gets NotLeader there: raftstore proposes writes on the leader alone) →
//! StaleCommand (a context `term` two or more elections behind the region's) → missing
//! epoch → EpochNotMatch (only `version` is compared; `conf_ver` is not checked for KV
//! commands) → KeyNotInRegion.

use bytes::Bytes;
use tikv_proto::codec::{encode_bytes, encode_bytes_into};
use tikv_proto::errorpb;
use tikv_proto::kvrpcpb::{self, ApiVersion};
use tikv_proto::metapb;

use super::{Cluster, Region, key_range};

/// How request keys map onto region boundaries (see the `cluster` module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyMode {
    /// Keys are compared as they are: RawKV in API v1 / v1ttl.
    Plain,
    /// Keys are memcomparable-encoded before comparing: TxnKV in every API version and RawKV
    /// in API v2.
    Encoded,
}

impl KeyMode {
    /// The mode of a request: `txn` for transactional commands, with the context's
    /// `api_version` (the raw `i32` field).
    pub fn for_request(api_version: i32, txn: bool) -> Self {
        if txn || api_version == ApiVersion::V2 as i32 {
            Self::Encoded
        } else {
            Self::Plain
        }
    }

    /// Whether `region` holds `key` (as the request carries it): the question every
    /// request asks for every key, answered without allocating (an encoded key is built in
    /// a buffer the thread keeps).
    fn holds(self, region: &Region, key: &[u8]) -> bool {
        thread_local! {
            static ENCODED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        match self {
            Self::Plain => region.contains(key),
            Self::Encoded => ENCODED.with_borrow_mut(|buffer| {
                buffer.clear();
                encode_bytes_into(buffer, key);
                region.contains(buffer)
            }),
        }
    }

    /// `key` in the key space of region boundaries.
    pub fn to_boundary(self, key: &[u8]) -> Bytes {
        match self {
            Self::Plain => Bytes::copy_from_slice(key),
            Self::Encoded => Bytes::from(encode_bytes(key)),
        }
    }
}

/// Keys a request touches, as the request carries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touched<'a> {
    /// One key; it must lie in `[start, end)` of the region.
    Key(&'a [u8]),
    /// A range `[start, end)` (lower bound first, also for reverse scans); `start` must lie in
    /// the region and `end` (empty = unbounded) must not pass the region's end.
    Range {
        /// Inclusive lower bound.
        start: &'a [u8],
        /// Exclusive upper bound; empty means unbounded.
        end: &'a [u8],
    },
}

/// What a request does with its region, which decides whether a peer that is not the
/// leader may take it (raftstore's `RequestInspector::inspect`: writes are proposed, reads
/// with the stale-read flag are stale reads, reads marked `replica_read` go through read
/// index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A read a follower or learner serves when it is marked `replica_read` or `stale_read`.
    Read,
    /// A read TiKV takes `replica_read` away from (ScanLock): off the leader only a stale
    /// read passes.
    LeaderRead,
    /// A write or admin command: only the leader proposes it, whatever the flags say.
    Write,
}

/// Why a store refuses a request before executing it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// The store is stopped, removed or unknown: the server layer turns this into a
    /// connection failure, not a response.
    #[error("store {store_id} is unavailable")]
    StoreUnavailable {
        /// The store addressed.
        store_id: u64,
    },
    /// The context names another cluster (TiKV answers gRPC `INVALID_ARGUMENT`).
    #[error("cluster id mismatch, request {got}, store {expected}")]
    ClusterIdMismatch {
        /// This cluster's id.
        expected: u64,
        /// The id in the request context.
        got: u64,
    },
    /// A region error, returned in the response's `region_error` field.
    #[error("region error: {}", .0.message)]
    Region(Box<errorpb::Error>),
}

/// The regions one store holds, when that differs from the current layout (a follower
/// that has not applied a split or merge yet).
pub(crate) struct HeldRegions<'a> {
    /// The store's own copy of the context's region (`None` when the store has no peer of
    /// it yet).
    pub(crate) local: Option<&'a Region>,
    /// Every region the store holds, in key order (for the neighbours an EpochNotMatch
    /// carries).
    pub(crate) all: &'a [Region],
}

/// A store's copy of the context's region, and how to find the store's regions left of it.
struct Held<'a> {
    local: Option<&'a Region>,
    left_of: &'a dyn Fn(&Region) -> Vec<Region>,
}

/// How many regions an EpochNotMatch may carry (TiKV's cap).
const MAX_REGIONS_IN_ERROR: usize = 10;

fn region_error(message: String) -> errorpb::Error {
    errorpb::Error {
        message,
        ..Default::default()
    }
}

impl Cluster {
    /// Validates a request's context on store `store_id` as TiKV does (see the module docs
    /// for the order). `touched` lists the request's keys and ranges, compared after mapping
    /// them with `mode`; `access` says whether a follower may take the request.
    ///
    /// Errors with the region error TiKV answers, or with [`ContextError::StoreUnavailable`]
    /// / [`ContextError::ClusterIdMismatch`] for a call that fails as a whole.
    pub fn check_context(
        &self,
        store_id: u64,
        ctx: &kvrpcpb::Context,
        touched: &[Touched<'_>],
        mode: KeyMode,
        access: Access,
    ) -> Result<(), ContextError> {
        self.check_store(store_id, ctx)?;
        let left_of = |region: &Region| self.held_left_of(region, store_id);
        let held = Held {
            local: self.regions.get(&ctx.region_id),
            left_of: &left_of,
        };
        self.check_region(store_id, ctx, touched, mode, access, held)
            .map_err(ContextError::Region)
    }

    /// The region checks of [`Cluster::check_context`] against what one store holds, when
    /// that differs from the current layout (see [`HeldRegions`]). The store must have
    /// passed [`Cluster::check_store`].
    ///
    /// Errors with the region error the store answers.
    pub(crate) fn check_region_held(
        &self,
        store_id: u64,
        ctx: &kvrpcpb::Context,
        touched: &[Touched<'_>],
        mode: KeyMode,
        access: Access,
        held: &HeldRegions<'_>,
    ) -> Result<(), ContextError> {
        let left_of = |region: &Region| {
            held.all
                .iter()
                .rev()
                .filter(|r| r.start_key < region.start_key && r.peer_on(store_id).is_some())
                .take(MAX_REGIONS_IN_ERROR)
                .cloned()
                .collect()
        };
        let held = Held {
            local: held.local,
            left_of: &left_of,
        };
        self.check_region(store_id, ctx, touched, mode, access, held)
            .map_err(ContextError::Region)
    }

    /// The regions left of `region` (nearest first) with a peer on `store_id`, as many as
    /// an EpochNotMatch may carry.
    fn held_left_of(&self, region: &Region, store_id: u64) -> Vec<Region> {
        self.by_start
            .range::<[u8], _>(key_range::below(&region.start_key))
            .rev()
            .filter_map(|(_, id)| self.regions.get(id))
            .filter(|r| r.peer_on(store_id).is_some())
            .take(MAX_REGIONS_IN_ERROR)
            .cloned()
            .collect()
    }

    /// The first part of [`Cluster::check_context`]: the store must be running and the
    /// context's cluster id (when set) must match. What TiKV checks before its storage layer
    /// sees the request.
    pub fn check_store(&self, store_id: u64, ctx: &kvrpcpb::Context) -> Result<(), ContextError> {
        if !self
            .stores
            .get(&store_id)
            .is_some_and(|store| store.running)
        {
            return Err(ContextError::StoreUnavailable { store_id });
        }
        if ctx.cluster_id != 0 && ctx.cluster_id != self.cluster_id() {
            return Err(ContextError::ClusterIdMismatch {
                expected: self.cluster_id(),
                got: ctx.cluster_id,
            });
        }
        Ok(())
    }

    fn check_region(
        &self,
        store_id: u64,
        ctx: &kvrpcpb::Context,
        touched: &[Touched<'_>],
        mode: KeyMode,
        access: Access,
        held: Held<'_>,
    ) -> Result<(), Box<errorpb::Error>> {
        let Held { local, left_of } = held;
        let requested = ctx.peer.unwrap_or_default();
        if requested.store_id != store_id {
            return Err(Box::new(errorpb::Error {
                store_not_match: Some(errorpb::StoreNotMatch {
                    request_store_id: requested.store_id,
                    actual_store_id: store_id,
                }),
                ..region_error(format!(
                    "to store id {}, mine {store_id}",
                    requested.store_id
                ))
            }));
        }
        let found = local.and_then(|region| region.peer_on(store_id).map(|peer| (region, *peer)));
        let Some((region, local)) = found else {
            return Err(Box::new(errorpb::Error {
                region_not_found: Some(errorpb::RegionNotFound {
                    region_id: ctx.region_id,
                }),
                ..region_error(format!("region {} not found", ctx.region_id))
            }));
        };
        if local.id != requested.id {
            return Err(Box::new(errorpb::Error {
                mismatch_peer_id: Some(errorpb::MismatchPeerId {
                    request_peer_id: requested.id,
                    store_peer_id: local.id,
                }),
                ..region_error(format!("mismatch peer id {} != {}", requested.id, local.id))
            }));
        }
        let off_leader_ok = match access {
            Access::Read => ctx.replica_read || ctx.stale_read,
            Access::LeaderRead => ctx.stale_read,
            Access::Write => false,
        };
        if local.id != region.leader_peer_id && !off_leader_ok {
            return Err(Box::new(not_leader(region)));
        }
        // raftstore's `check_term`: a request stamped with a term two or more elections old
        // was meant for a leadership that may be gone.
        if ctx.term != 0 && region.term > ctx.term.saturating_add(1) {
            return Err(Box::new(errorpb::Error {
                stale_command: Some(errorpb::StaleCommand {}),
                ..region_error("stale command".to_owned())
            }));
        }
        let Some(epoch) = ctx.region_epoch else {
            return Err(Box::new(region_error("missing epoch!".to_owned())));
        };
        if epoch.version != region.epoch.version {
            return Err(Box::new(errorpb::Error {
                epoch_not_match: Some(errorpb::EpochNotMatch {
                    current_regions: epoch_not_match_regions(region, epoch, left_of),
                }),
                ..region_error(format!(
                    "EpochNotMatch current epoch of region {} is {:?}, but you sent {epoch:?}",
                    region.id, region.epoch
                ))
            }));
        }
        for touch in touched {
            check_touched(region, *touch, mode)?;
        }
        Ok(())
    }
}

/// The regions an EpochNotMatch carries (raftstore's `collect_sibling_region`): this region,
/// then (when the client's version is older) the store's regions to its left, nearest
/// first, as many as the version gap suggests were split off (right-derive puts new regions
/// on the left), up to 10.
fn epoch_not_match_regions(
    region: &Region,
    requested: metapb::RegionEpoch,
    left_of: &dyn Fn(&Region) -> Vec<Region>,
) -> Vec<metapb::Region> {
    let mut out = vec![region.to_proto()];
    let mut max_version = region.epoch.version;
    if requested.version >= max_version {
        return out;
    }
    let mut wanted = max_version - requested.version;
    for neighbour in left_of(region) {
        wanted -= 1;
        // A neighbour with a newer version has split again; look that much further.
        if neighbour.epoch.version >= max_version {
            wanted += neighbour.epoch.version - max_version;
            max_version = neighbour.epoch.version;
        }
        out.push(neighbour.to_proto());
        if wanted == 0 {
            break;
        }
    }
    out
}

/// The NotLeader error of `region`, with its leader as the hint (none while it has none).
pub(crate) fn not_leader(region: &Region) -> errorpb::Error {
    let leader = region.leader().map(|peer| peer.to_proto());
    errorpb::Error {
        not_leader: Some(errorpb::NotLeader {
            region_id: region.id,
            leader,
        }),
        ..region_error(format!(
            "peer is not leader for region {}, leader may {leader:?}",
            region.id
        ))
    }
}

fn key_not_in_region(region: &Region, key: Bytes) -> errorpb::Error {
    errorpb::Error {
        message: format!(
            "key {key:?} is not in region key range [{:?}, {:?}) for region {}",
            region.start_key, region.end_key, region.id
        ),
        key_not_in_region: Some(errorpb::KeyNotInRegion {
            key,
            region_id: region.id,
            start_key: region.start_key.clone(),
            end_key: region.end_key.clone(),
        }),
        ..Default::default()
    }
}

fn check_touched(
    region: &Region,
    touched: Touched<'_>,
    mode: KeyMode,
) -> Result<(), Box<errorpb::Error>> {
    match touched {
        Touched::Key(key) => {
            if mode.holds(region, key) {
                Ok(())
            } else {
                Err(Box::new(key_not_in_region(region, mode.to_boundary(key))))
            }
        }
        Touched::Range { start, end } => {
            let start = mode.to_boundary(start);
            if !region.contains(&start) {
                return Err(Box::new(key_not_in_region(region, start)));
            }
            if end.is_empty() {
                return if region.end_key.is_empty() {
                    Ok(())
                } else {
                    Err(Box::new(key_not_in_region(region, Bytes::new())))
                };
            }
            let end = mode.to_boundary(end);
            let within =
                end >= region.start_key && (region.end_key.is_empty() || end <= region.end_key);
            if within {
                Ok(())
            } else {
                Err(Box::new(key_not_in_region(region, end)))
            }
        }
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
