//! The region cache proper: regions by start key, with epochs, leaders and TTLs.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Included, Unbounded};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tikv_proto::metapb;

use super::store::{Store, Stores};
use super::{InsertError, InvalidReason, RegionRef, RegionVerId, same_peer};
use crate::rand::Rng;
use crate::time::Time;

/// Region cache settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionCacheConfig {
    /// How long an unused region stays cached (client-go: 600 s).
    pub ttl: Duration,
    /// Upper bound (exclusive) of the random extra TTL per region, so that regions cached
    /// together do not all expire together (client-go: 60 s).
    pub ttl_jitter: Duration,
}

impl Default for RegionCacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(600),
            ttl_jitter: Duration::from_secs(60),
        }
    }
}

/// What [`RegionCache::on_epoch_not_match`] did with TiKV's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum EpochNotMatchOutcome {
    /// TiKV sent no current regions: the region is invalidated; reload it from PD.
    Invalidated,
    /// The cached epoch is newer than TiKV's (the store has not applied the split or merge
    /// yet): nothing changed; back off and retry with the same region.
    EpochAhead,
    /// The current regions TiKV sent were cached (those not refused as stale).
    Updated(Vec<RegionRef>),
}

/// One cached region with its bookkeeping.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedRegion {
    region: RegionRef,
    cached_at: Time,
    ttl_jitter: Duration,
    ttl_deadline: Time,
    expire_after_ttl: bool,
    invalid_reason: InvalidReason,
}

impl CachedRegion {
    /// The region snapshot handed to callers.
    pub fn region(&self) -> &RegionRef {
        &self.region
    }

    /// When the region was inserted.
    pub fn cached_at(&self) -> Time {
        self.cached_at
    }

    /// The instant after which the region is expired unless used before it.
    pub fn ttl_deadline(&self) -> Time {
        self.ttl_deadline
    }

    /// Why the region was invalidated ([`InvalidReason::Ok`] while valid).
    pub fn invalid_reason(&self) -> InvalidReason {
        self.invalid_reason
    }

    /// Whether lookups at `now` may return the region: valid and not past its deadline.
    pub fn is_usable(&self, now: Time) -> bool {
        self.invalid_reason == InvalidReason::Ok && now <= self.ttl_deadline
    }

    /// Slides the deadline forward after a use, unless the region must expire on schedule.
    fn touch(&mut self, now: Time, ttl: Duration) {
        if !self.expire_after_ttl {
            self.ttl_deadline = self.ttl_deadline.max(now + ttl + self.ttl_jitter);
        }
    }

    /// Invalidates with `reason` unless already invalid (the first reason is the one that
    /// explains what went wrong); returns whether this call invalidated it.
    fn invalidate(&mut self, reason: InvalidReason) -> bool {
        if self.invalid_reason != InvalidReason::Ok || reason == InvalidReason::Ok {
            return false;
        }
        self.invalid_reason = reason;
        true
    }
}

/// The region cache: a sorted map of non-overlapping regions plus the store table.
///
/// Keys are in the region-boundary key space (see the [module docs](super)).
#[derive(Clone, Debug, Default)]
pub struct RegionCache {
    config: RegionCacheConfig,
    by_start: BTreeMap<Bytes, CachedRegion>,
    by_id: BTreeMap<u64, Bytes>,
    stores: Stores,
}

impl RegionCache {
    /// An empty cache with `config`.
    pub fn new(config: RegionCacheConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// The settings in use.
    pub fn config(&self) -> RegionCacheConfig {
        self.config
    }

    /// Caches `region` with `leader` (as PD or TiKV named it; `None` when unknown) at `now`;
    /// returns the cached snapshot.
    ///
    /// Every cached region overlapping the new one is removed, so entries never overlap.
    /// Epochs guard against going backwards (client-go's rules): the insert is refused with
    /// [`InsertError::Stale`] when the cached version of the same region has a higher
    /// `version` or `conf_ver`, or when any overlapping region has a higher `version`.
    /// Regions without peers ([`InsertError::NoPeers`]) or with `start >= end`
    /// ([`InsertError::InvalidRange`]) are refused too. Every peer's store is added to the
    /// store table if missing. The TTL jitter is drawn from `rng`.
    pub fn insert(
        &mut self,
        region: metapb::Region,
        leader: Option<&metapb::Peer>,
        now: Time,
        rng: &mut Rng,
    ) -> Result<RegionRef, InsertError> {
        let ver_id = RegionVerId::of(&region);
        if region.peers.is_empty() {
            return Err(InsertError::NoPeers(ver_id.id));
        }
        if !region.end_key.is_empty() && region.start_key >= region.end_key {
            return Err(InsertError::InvalidRange(ver_id.id));
        }
        let previous = self.entry_by_id(ver_id.id);
        if let Some(previous) = previous {
            let cached = previous.region.ver_id;
            if cached.version > ver_id.version || cached.conf_ver > ver_id.conf_ver {
                return Err(InsertError::Stale {
                    offered: ver_id,
                    cached,
                });
            }
        }
        let overlapping = self.overlapping(&region.start_key, &region.end_key);
        for start in &overlapping {
            if let Some(entry) = self.by_start.get(start) {
                let cached = entry.region.ver_id;
                if cached.version > ver_id.version {
                    return Err(InsertError::Stale {
                        offered: ver_id,
                        cached,
                    });
                }
            }
        }

        let peer_count = region.peers.len();
        let named_leader = leader.and_then(|leader| peer_index(&region.peers, leader));
        let (mut work_index, mut leader_known) = match named_leader {
            Some(index) => (index, true),
            None => (0, false),
        };
        // A peer just reported that it has no leader; PD's view is likely as stale, so try
        // the next peer instead of going straight back to the one that failed.
        if previous.is_some_and(|entry| entry.invalid_reason == InvalidReason::NoLeader) {
            let previous_index = previous.map_or(0, |entry| entry.region.work_index);
            work_index = (previous_index + 1) % peer_count;
            leader_known = false;
        }

        let previous_start = previous.map(|entry| entry.region.meta.start_key.clone());
        for start in overlapping.iter().chain(previous_start.as_ref()) {
            self.remove_at(start);
        }
        for peer in &region.peers {
            self.stores.ensure(peer.store_id);
        }
        let ttl_jitter = self.draw_jitter(rng);
        let start = region.start_key.clone();
        let mut snapshot = RegionRef::new(Arc::new(region), work_index, leader_known);
        snapshot.store_epochs = snapshot
            .meta
            .peers
            .iter()
            .map(|peer| self.stores.get(peer.store_id).map_or(0, Store::epoch))
            .collect();
        let entry = CachedRegion {
            region: snapshot.clone(),
            cached_at: now,
            ttl_jitter,
            ttl_deadline: now + self.config.ttl + ttl_jitter,
            expire_after_ttl: false,
            invalid_reason: InvalidReason::Ok,
        };
        self.by_id.insert(ver_id.id, start.clone());
        self.by_start.insert(start, entry);
        Ok(snapshot)
    }

    /// The usable region containing `key` (`start <= key < end`), refreshing its TTL;
    /// `None` on a miss, or when the region is invalidated or expired (ask PD).
    pub fn locate_key(&mut self, key: &[u8], now: Time) -> Option<RegionRef> {
        let ttl = self.config.ttl;
        let (_, entry) = self
            .by_start
            .range_mut::<[u8], _>((Unbounded, Included(key)))
            .next_back()?;
        use_entry(entry, now, ttl, |region| region.contains(key))
    }

    /// The usable region holding the position just before `key` (`start < key <= end`), for
    /// reverse scans whose exclusive upper bound is `key`; an empty `key` means the end of the
    /// key space. Refreshes the TTL; `None` on a miss (ask PD's `GetPrevRegion`).
    pub fn locate_end_key(&mut self, key: &[u8], now: Time) -> Option<RegionRef> {
        let ttl = self.config.ttl;
        let (_, entry) = if key.is_empty() {
            self.by_start.iter_mut().next_back()?
        } else {
            self.by_start
                .range_mut::<[u8], _>((Unbounded, Excluded(key)))
                .next_back()?
        };
        use_entry(entry, now, ttl, |region| region.contains_by_end(key))
    }

    /// The usable cached version of region `id`, refreshing its TTL; `None` when missing,
    /// invalidated or expired.
    pub fn get_by_id(&mut self, id: u64, now: Time) -> Option<RegionRef> {
        let ttl = self.config.ttl;
        let start = self.by_id.get(&id)?;
        let entry = self.by_start.get_mut(start)?;
        use_entry(entry, now, ttl, |_| true)
    }

    /// The cache entry for exactly `ver_id`, usable or not (for inspection and error
    /// handling); `None` when that version is not cached.
    pub fn cached(&self, ver_id: RegionVerId) -> Option<&CachedRegion> {
        self.entry_by_id(ver_id.id)
            .filter(|entry| entry.region.ver_id == ver_id)
    }

    /// Invalidates the cached region `ver_id` for `reason`; returns whether it was valid and
    /// cached at exactly that version (an error about an older version leaves a newer entry
    /// alone).
    pub fn invalidate(&mut self, ver_id: RegionVerId, reason: InvalidReason) -> bool {
        self.entry_by_ver_mut(ver_id)
            .is_some_and(|entry| entry.invalidate(reason))
    }

    /// Records that `leader` leads region `ver_id` (from a `NotLeader` error); returns whether
    /// the leader is now known.
    ///
    /// When the leader is not among the cached peers (a peer added since), the region is
    /// invalidated with [`InvalidReason::StoreNotFound`] so the next lookup reloads it, and
    /// false is returned; false too when `ver_id` is not cached. A peer id of 0 matches any
    /// peer on the leader's store.
    pub fn update_leader(&mut self, ver_id: RegionVerId, leader: &metapb::Peer) -> bool {
        let epoch = self.stores.get(leader.store_id).map_or(0, Store::epoch);
        let Some(entry) = self.entry_by_ver_mut(ver_id) else {
            return false;
        };
        match peer_index(&entry.region.meta.peers, leader) {
            Some(index) => {
                entry.region.work_index = index;
                entry.region.leader_known = true;
                // A peer named the leader just now: its store is worth trying whatever
                // failed there before (client-go refreshes the leader's store epoch too).
                if let Some(slot) = entry.region.store_epochs.get_mut(index) {
                    *slot = epoch;
                }
                true
            }
            None => {
                entry.invalidate(InvalidReason::StoreNotFound);
                false
            }
        }
    }

    /// Moves region `ver_id` on to the next peer after `tried_index` (a `NotLeader` without a
    /// leader, or a send failure); returns whether the work peer changed.
    ///
    /// Only the first report about a given peer moves the cursor, so several in-flight
    /// requests failing on the same peer advance it once. Witness peers are skipped: they
    /// hold no data and serve no requests unless they are the leader.
    pub fn switch_to_next_peer(&mut self, ver_id: RegionVerId, tried_index: usize) -> bool {
        let Some(entry) = self.entry_by_ver_mut(ver_id) else {
            return false;
        };
        if entry.region.work_index != tried_index {
            return false;
        }
        let peers = &entry.region.meta.peers;
        let count = peers.len();
        let next = (1..=count)
            .map(|step| (tried_index + step) % count)
            .find(|index| !peers[*index].is_witness)
            .unwrap_or(tried_index);
        entry.region.work_index = next;
        entry.region.leader_known = false;
        next != tried_index
    }

    /// Pins region `ver_id`'s deadline so use no longer extends it (client-go does this for
    /// regions with down peers, so they are reloaded every TTL); returns whether it is cached.
    pub fn expire_after_ttl(&mut self, ver_id: RegionVerId) -> bool {
        self.entry_by_ver_mut(ver_id)
            .map(|entry| entry.expire_after_ttl = true)
            .is_some()
    }

    /// Handles `EpochNotMatch` for a request sent to region `ver_id` on store
    /// `answered_store_id`, with the `current_regions` TiKV reported; returns what to do next.
    ///
    /// The new regions are inserted with the peer on `answered_store_id` as leader (that
    /// store's peer answered as leader), and the old region is invalidated unless it is among
    /// them. Regions the cache refuses as stale are skipped.
    pub fn on_epoch_not_match(
        &mut self,
        ver_id: RegionVerId,
        current_regions: &[metapb::Region],
        answered_store_id: u64,
        now: Time,
        rng: &mut Rng,
    ) -> EpochNotMatchOutcome {
        if current_regions.is_empty() {
            self.invalidate(ver_id, InvalidReason::EpochNotMatch);
            return EpochNotMatchOutcome::Invalidated;
        }
        let current: Vec<RegionVerId> = current_regions.iter().map(RegionVerId::of).collect();
        let ahead = current.iter().any(|theirs| {
            theirs.id == ver_id.id
                && (theirs.conf_ver < ver_id.conf_ver || theirs.version < ver_id.version)
        });
        if ahead {
            return EpochNotMatchOutcome::EpochAhead;
        }
        if !current.contains(&ver_id) {
            self.invalidate(ver_id, InvalidReason::EpochNotMatch);
        }
        let inserted = current_regions
            .iter()
            .filter_map(|meta| {
                let leader = meta
                    .peers
                    .iter()
                    .find(|peer| peer.store_id == answered_store_id)
                    .cloned();
                self.insert(meta.clone(), leader.as_ref(), now, rng).ok()
            })
            .collect();
        EpochNotMatchOutcome::Updated(inserted)
    }

    /// Drops every invalidated or expired region; returns how many were dropped.
    pub fn remove_expired(&mut self, now: Time) -> usize {
        let dead: Vec<Bytes> = self
            .by_start
            .iter()
            .filter(|(_, entry)| !entry.is_usable(now))
            .map(|(start, _)| start.clone())
            .collect();
        for start in &dead {
            self.remove_at(start);
        }
        dead.len()
    }

    /// Every cached region in key order, usable or not.
    pub fn iter(&self) -> impl Iterator<Item = &CachedRegion> + '_ {
        self.by_start.values()
    }

    /// The number of cached regions, usable or not.
    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    /// Forgets every region (the store table stays).
    pub fn clear(&mut self) {
        self.by_start.clear();
        self.by_id.clear();
    }

    /// The store table.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// The store table, for PD answers and health reports.
    pub fn stores_mut(&mut self) -> &mut Stores {
        &mut self.stores
    }

    fn entry_by_id(&self, id: u64) -> Option<&CachedRegion> {
        self.by_id
            .get(&id)
            .and_then(|start| self.by_start.get(start))
    }

    fn entry_by_ver_mut(&mut self, ver_id: RegionVerId) -> Option<&mut CachedRegion> {
        let start = self.by_id.get(&ver_id.id)?;
        self.by_start
            .get_mut(start)
            .filter(|entry| entry.region.ver_id == ver_id)
    }

    /// Start keys of the cached regions overlapping `[start, end)`.
    fn overlapping(&self, start: &[u8], end: &[u8]) -> Vec<Bytes> {
        let mut found = Vec::new();
        // The region starting before `start` overlaps when it reaches past it.
        if let Some((key, entry)) = self
            .by_start
            .range::<[u8], _>((Unbounded, Excluded(start)))
            .next_back()
        {
            let its_end = &entry.region.meta.end_key;
            if its_end.is_empty() || its_end.as_ref() > start {
                found.push(key.clone());
            }
        }
        let upper = if end.is_empty() {
            Unbounded
        } else {
            Excluded(end)
        };
        found.extend(
            self.by_start
                .range::<[u8], _>((Included(start), upper))
                .map(|(key, _)| key.clone()),
        );
        found
    }

    fn remove_at(&mut self, start: &[u8]) {
        if let Some(entry) = self.by_start.remove(start) {
            let id = entry.region.ver_id.id;
            if self.by_id.get(&id).is_some_and(|at| at.as_ref() == start) {
                self.by_id.remove(&id);
            }
        }
    }

    fn draw_jitter(&self, rng: &mut Rng) -> Duration {
        let bound = u64::try_from(self.config.ttl_jitter.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rng.below(bound))
    }
}

/// Returns the entry's snapshot if it is usable at `now` and passes `fits`, refreshing its TTL.
fn use_entry(
    entry: &mut CachedRegion,
    now: Time,
    ttl: Duration,
    fits: impl FnOnce(&RegionRef) -> bool,
) -> Option<RegionRef> {
    if !entry.is_usable(now) || !fits(&entry.region) {
        return None;
    }
    entry.touch(now, ttl);
    Some(entry.region.clone())
}

/// The index of `wanted` among `peers`; a zero peer id matches by store alone.
fn peer_index(peers: &[metapb::Peer], wanted: &metapb::Peer) -> Option<usize> {
    peers.iter().position(|peer| {
        if wanted.id == 0 {
            peer.store_id == wanted.store_id
        } else {
            same_peer(peer, wanted)
        }
    })
}
