//! The record of leadership and shape changes the stores react to.
//!
//! A TiKV store learns about these from raftstore (a peer becoming leader, a split or merge
//! being applied) and updates what it keeps in memory: the max-ts sync status of the region
//! and its in-memory pessimistic locks. The cluster model records each change here; the
//! simulated stores take them before serving the next request.

use bytes::Bytes;

use super::{Cluster, Region};

/// One leadership or shape change. Ranges are in region-boundary key space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionChange {
    /// A voter of `region_id` on `to_store` became leader (a leader transfer).
    LeaderTransferred {
        /// The region.
        region_id: u64,
        /// Its range when the leader moved.
        start_key: Bytes,
        /// Its range end (empty = unbounded).
        end_key: Bytes,
        /// The previous leader's store, if the region had a leader.
        from_store: Option<u64>,
        /// The new leader's store.
        to_store: u64,
    },
    /// `region_id` split; `new_region_ids` took the left parts of its old range.
    Split {
        /// The original region (it keeps the right-most part).
        region_id: u64,
        /// The original range start.
        start_key: Bytes,
        /// The original range end (empty = unbounded).
        end_key: Bytes,
        /// The regions created.
        new_region_ids: Vec<u64>,
        /// The region as it was before the split (range, epoch, peers and leader): what a
        /// follower that has not applied the split still holds.
        before: Region,
    },
    /// `source_id` merged into `target_id`.
    Merged {
        /// The region that disappeared.
        source_id: u64,
        /// The region that took its range.
        target_id: u64,
        /// The source's range start.
        source_start: Bytes,
        /// The source's range end (empty = unbounded).
        source_end: Bytes,
        /// The source as it was before the merge.
        source: Region,
        /// The target as it was before the merge: what a follower that has not applied
        /// the merge still holds.
        target_before: Region,
    },
    /// A store's process stopped: what it kept only in memory is gone.
    StoreStopped {
        /// The store.
        store_id: u64,
        /// The regions it led then, with their ranges.
        led: Vec<(u64, Bytes, Bytes)>,
    },
    /// A stopped store came back; its regions elected their leaders again (their terms
    /// moved on by one).
    StoreRestarted {
        /// The store.
        store_id: u64,
        /// The regions it leads.
        led: Vec<u64>,
    },
}

impl Cluster {
    /// Takes the changes recorded since the last call, oldest first.
    pub fn take_changes(&mut self) -> Vec<RegionChange> {
        std::mem::take(&mut self.changes)
    }

    pub(crate) fn record_change(&mut self, change: RegionChange) {
        self.changes.push(change);
    }

    /// The regions whose leader is on `store_id`, with their ranges.
    pub(crate) fn led_by(&self, store_id: u64) -> Vec<(u64, Bytes, Bytes)> {
        self.regions
            .values()
            .filter(|region| {
                region
                    .leader()
                    .is_some_and(|peer| peer.store_id == store_id)
            })
            .map(|region| (region.id, region.start_key.clone(), region.end_key.clone()))
            .collect()
    }
}
