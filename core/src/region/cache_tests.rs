//! Tests of the region cache, most ported from client-go's `internal/locate/region_cache_test.go`
//! (named after the Go test in snake case), against a small in-test PD.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tikv_proto::metapb;

use super::*;
use crate::rand::Rng;
use crate::time::Time;

fn peer(id: u64, store_id: u64) -> metapb::Peer {
    metapb::Peer {
        id,
        store_id,
        ..Default::default()
    }
}

fn bytes(key: &str) -> Bytes {
    Bytes::copy_from_slice(key.as_bytes())
}

fn meta(id: u64, start: &str, end: &str, conf_ver: u64, version: u64) -> metapb::Region {
    metapb::Region {
        id,
        start_key: bytes(start),
        end_key: bytes(end),
        region_epoch: Some(metapb::RegionEpoch { conf_ver, version }),
        peers: vec![peer(id * 100 + 1, 1), peer(id * 100 + 2, 2)],
        ..Default::default()
    }
}

fn sample(start: &[u8], end: &[u8]) -> RegionRef {
    let mut region = meta(1, "", "", 1, 1);
    region.start_key = Bytes::copy_from_slice(start);
    region.end_key = Bytes::copy_from_slice(end);
    RegionRef::new(Arc::new(region), 0, false)
}

/// A minimal PD: regions with leaders and ids, split and merged the way TiKV does it (the
/// new region takes the right half of a split; both halves get `version + 1`; a merge gives
/// the survivor `max(version) + 1`; membership changes bump `conf_ver`).
struct MockPd {
    regions: Vec<(metapb::Region, u64)>,
    next_id: u64,
    loads: usize,
}

impl MockPd {
    fn find(&self, id: u64) -> usize {
        self.regions.iter().position(|(r, _)| r.id == id).unwrap()
    }

    fn alloc_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn answer(&mut self, index: usize) -> (metapb::Region, Option<metapb::Peer>) {
        self.loads += 1;
        let (region, leader_id) = &self.regions[index];
        let leader = region.peers.iter().find(|p| p.id == *leader_id).cloned();
        (region.clone(), leader)
    }

    fn get_region(&mut self, key: &[u8]) -> (metapb::Region, Option<metapb::Peer>) {
        let index = self
            .regions
            .iter()
            .position(|(r, _)| contains(&r.start_key, &r.end_key, key))
            .unwrap();
        self.answer(index)
    }

    fn get_prev_region(&mut self, key: &[u8]) -> (metapb::Region, Option<metapb::Peer>) {
        let index = self
            .regions
            .iter()
            .position(|(r, _)| contains_by_end(&r.start_key, &r.end_key, key))
            .unwrap();
        self.answer(index)
    }

    fn bump_version(&mut self, index: usize) {
        if let Some(epoch) = self.regions[index].0.region_epoch.as_mut() {
            epoch.version += 1;
        }
    }

    fn bump_conf_ver(&mut self, index: usize) {
        if let Some(epoch) = self.regions[index].0.region_epoch.as_mut() {
            epoch.conf_ver += 1;
        }
    }

    /// Splits region `id` at `key`; the new region `new_id` takes `[key, end)`.
    fn split(&mut self, id: u64, new_id: u64, key: &str, peer_ids: &[u64]) {
        let index = self.find(id);
        self.bump_version(index);
        let (left, leader) = &mut self.regions[index];
        let mut right = left.clone();
        right.id = new_id;
        right.start_key = bytes(key);
        left.end_key = bytes(key);
        for (p, id) in right.peers.iter_mut().zip(peer_ids) {
            p.id = *id;
        }
        let leader_store = left
            .peers
            .iter()
            .find(|p| p.id == *leader)
            .map(|p| p.store_id);
        let right_leader = right
            .peers
            .iter()
            .find(|p| Some(p.store_id) == leader_store)
            .map_or(0, |p| p.id);
        self.regions.insert(index + 1, (right, right_leader));
    }

    /// Merges region `source` into its neighbour `target`.
    fn merge(&mut self, target: u64, source: u64) {
        let t = self.find(target);
        let s = self.find(source);
        let source_meta = self.regions[s].0.clone();
        let version = |r: &metapb::Region| r.region_epoch.as_ref().map_or(0, |e| e.version);
        let new_version = version(&self.regions[t].0).max(version(&source_meta)) + 1;
        let target_meta = &mut self.regions[t].0;
        if source_meta.start_key == target_meta.end_key {
            target_meta.end_key = source_meta.end_key.clone();
        } else {
            target_meta.start_key = source_meta.start_key.clone();
        }
        if let Some(epoch) = target_meta.region_epoch.as_mut() {
            epoch.version = new_version;
        }
        self.regions.remove(s);
    }

    fn add_peer(&mut self, id: u64, store_id: u64, peer_id: u64) {
        let index = self.find(id);
        self.regions[index].0.peers.push(peer(peer_id, store_id));
        self.bump_conf_ver(index);
    }

    fn remove_store(&mut self, store_id: u64) {
        for index in 0..self.regions.len() {
            let before = self.regions[index].0.peers.len();
            self.regions[index]
                .0
                .peers
                .retain(|p| p.store_id != store_id);
            if self.regions[index].0.peers.len() != before {
                self.bump_conf_ver(index);
            }
        }
    }

    fn change_leader(&mut self, id: u64, peer_id: u64) {
        let index = self.find(id);
        self.regions[index].1 = peer_id;
    }
}

/// client-go's `testRegionCacheSuite`: one region on two stores, store 1 leading.
struct Suite {
    pd: MockPd,
    cache: RegionCache,
    rng: Rng,
    now: Time,
    region1: u64,
    store1: u64,
    store2: u64,
    peer1: u64,
    peer2: u64,
}

impl Suite {
    fn new() -> Self {
        Self::with_config(RegionCacheConfig::default())
    }

    fn with_config(config: RegionCacheConfig) -> Self {
        let region = metapb::Region {
            id: 3,
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: vec![peer(4, 1), peer(5, 2)],
            ..Default::default()
        };
        Self {
            pd: MockPd {
                regions: vec![(region, 4)],
                next_id: 5,
                loads: 0,
            },
            cache: RegionCache::new(config),
            rng: Rng::new(7),
            now: Time::from_millis(1_000),
            region1: 3,
            store1: 1,
            store2: 2,
            peer1: 4,
            peer2: 5,
        }
    }

    /// client-go's `LocateKey`: the cache, else PD (inserting what PD says, and using it even
    /// when the cache refuses it as stale).
    fn locate(&mut self, key: &str) -> RegionRef {
        if let Some(region) = self.cache.locate_key(key.as_bytes(), self.now) {
            return region;
        }
        let (region, leader) = self.pd.get_region(key.as_bytes());
        self.insert_loaded(region, leader)
    }

    /// client-go's `LocateEndKey`.
    fn locate_end(&mut self, key: &str) -> RegionRef {
        if let Some(region) = self.cache.locate_end_key(key.as_bytes(), self.now) {
            return region;
        }
        let (region, leader) = self.pd.get_prev_region(key.as_bytes());
        self.insert_loaded(region, leader)
    }

    fn insert_loaded(&mut self, region: metapb::Region, leader: Option<metapb::Peer>) -> RegionRef {
        let fallback = RegionRef::new(Arc::new(region.clone()), 0, false);
        self.cache
            .insert(region, leader.as_ref(), self.now, &mut self.rng)
            .unwrap_or(fallback)
    }

    fn insert(&mut self, region: metapb::Region) -> Result<RegionRef, InsertError> {
        self.cache.insert(region, None, self.now, &mut self.rng)
    }

    fn leader_store(&mut self, key: &str) -> u64 {
        self.locate(key).work_peer().map_or(0, |p| p.store_id)
    }

    fn usable(&self) -> usize {
        self.cache.iter().filter(|e| e.is_usable(self.now)).count()
    }
}

#[test]
fn test_simple() {
    let mut s = Suite::new();
    let r = s.locate("a");
    assert_eq!(r.id(), s.region1);
    assert_eq!(r.leader().map(|p| p.store_id), Some(s.store1));
    assert_eq!(r.work_peer().map(|p| p.id), Some(s.peer1));
    assert_eq!(s.usable(), 1);
    // Once the TTL has passed the region is still cached but no longer returned.
    let deadline = s.cache.cached(r.ver_id()).unwrap().ttl_deadline();
    assert!(s.cache.locate_end_key(b"a", deadline).is_some());
    let later = deadline + Duration::from_secs(660);
    assert_eq!(s.cache.locate_key(b"a", later), None);
    assert_eq!(s.cache.locate_end_key(b"a", later), None);
    assert_eq!(s.cache.len(), 1);
}

#[test]
fn ttl_is_base_plus_jitter_and_slides_with_use() {
    let mut s = Suite::new();
    let r = s.locate("a");
    let entry = s.cache.cached(r.ver_id()).unwrap();
    let lifetime = entry.ttl_deadline() - entry.cached_at();
    assert!(lifetime >= Duration::from_secs(600) && lifetime < Duration::from_secs(660));
    assert_eq!(entry.cached_at(), s.now);
    // Used just before the deadline, the region lives on for another TTL.
    s.now = entry.ttl_deadline();
    assert!(s.cache.locate_key(b"a", s.now).is_some());
    s.now += Duration::from_secs(599);
    assert!(s.cache.locate_key(b"a", s.now).is_some());
    assert!(s.cache.get_by_id(s.region1, s.now).is_some());
    assert_eq!(s.pd.loads, 1);
}

#[test]
fn test_need_expire_region_after_ttl() {
    let config = RegionCacheConfig {
        ttl: Duration::from_secs(2),
        ttl_jitter: Duration::ZERO,
    };
    // WithDownPeers: the region is reloaded every TTL although it is used all the time.
    let mut s = Suite::with_config(config);
    s.now = Time::ZERO;
    for _ in 0..40 {
        s.now += Duration::from_millis(100);
        if s.cache.locate_key(b"a", s.now).is_none() {
            let (region, leader) = s.pd.get_region(b"a");
            let r = s
                .cache
                .insert(region, leader.as_ref(), s.now, &mut s.rng)
                .unwrap();
            assert!(s.cache.expire_after_ttl(r.ver_id()));
        }
    }
    assert_eq!(s.pd.loads, 2);

    // Without down peers, continuous use keeps the region cached.
    let mut s = Suite::with_config(config);
    s.now = Time::ZERO;
    for _ in 0..40 {
        s.now += Duration::from_millis(100);
        s.locate("a");
    }
    assert_eq!(s.pd.loads, 1);
}

#[test]
fn test_update_leader() {
    let mut s = Suite::new();
    let loc = s.locate("a");
    // TiKV reports NotLeader, naming peer 2.
    assert!(
        s.cache
            .update_leader(loc.ver_id(), &peer(s.peer2, s.store2))
    );
    let r = s.locate("a");
    assert_eq!(r.id(), s.region1);
    assert_eq!(r.leader().map(|p| p.store_id), Some(s.store2));
    let r = s.locate_end("z");
    assert_eq!(r.id(), s.region1);
    assert_eq!(r.leader().map(|p| p.store_id), Some(s.store2));
    assert_eq!(s.pd.loads, 1);
}

#[test]
fn test_update_leader2() {
    let mut s = Suite::new();
    let loc = s.locate("a");
    // A new store 3 gets a peer, and TiKV says that peer is the leader.
    let store3 = s.pd.alloc_id();
    let peer3 = s.pd.alloc_id();
    s.pd.add_peer(s.region1, store3, peer3);
    assert!(!s.cache.update_leader(loc.ver_id(), &peer(peer3, store3)));
    assert_eq!(
        s.cache.cached(loc.ver_id()).unwrap().invalid_reason(),
        InvalidReason::StoreNotFound
    );
    // The unknown peer forces a reload; PD still names peer 1.
    let r = s.locate("a");
    assert_eq!(s.pd.loads, 2);
    assert_eq!(r.id(), s.region1);
    assert_eq!(r.peers().len(), 3);
    assert_eq!(s.leader_store("a"), s.store1);
    assert!(s.cache.stores().get(store3).is_some());

    // PD learns the new leader and TiKV reports NotLeader again.
    s.pd.change_leader(s.region1, peer3);
    assert!(s.cache.update_leader(r.ver_id(), &peer(peer3, store3)));
    assert_eq!(s.leader_store("a"), store3);
    assert_eq!(s.pd.loads, 2);
}

#[test]
fn test_update_leader3() {
    let mut s = Suite::new();
    let loc = s.locate("a");
    // Store 2 takes the lead, then goes away, and a new peer on store 3 leads.
    s.pd.change_leader(s.region1, s.peer2);
    s.pd.remove_store(s.store2);
    let store3 = s.pd.alloc_id();
    let peer3 = s.pd.alloc_id();
    s.pd.add_peer(s.region1, store3, peer3);
    s.pd.change_leader(s.region1, peer3);
    // TiKV reports NotLeader naming store 2's peer, which the cached region still has.
    assert!(
        s.cache
            .update_leader(loc.ver_id(), &peer(s.peer2, s.store2))
    );
    assert_eq!(s.leader_store("a"), s.store2);

    // Sending to store 2 fails; PD says the store is gone.
    let r = s.locate("a");
    let epoch = s.cache.stores().get(s.store2).unwrap().epoch();
    assert!(s.cache.stores_mut().mark_needs_refresh(s.store2, epoch));
    assert!(s.cache.switch_to_next_peer(r.ver_id(), r.work_index()));
    s.cache.stores_mut().on_store_not_found(s.store2);
    assert_eq!(s.cache.stores().address(s.store2), None);
    // A leader on a tombstone cannot be used: the caller invalidates and reloads.
    assert!(s.cache.update_leader(r.ver_id(), &peer(s.peer2, s.store2)));
    assert!(s.cache.invalidate(r.ver_id(), InvalidReason::StoreNotFound));
    assert_eq!(s.leader_store("a"), store3);
    let r = s.locate("a");
    assert!(r.peers().iter().all(|p| p.store_id != s.store2));
}

#[test]
fn update_leader_ignores_other_versions() {
    let mut s = Suite::new();
    let r = s.locate("a");
    let mut old = r.ver_id();
    old.version -= 1;
    assert!(!s.cache.update_leader(old, &peer(s.peer2, s.store2)));
    assert!(!s.cache.invalidate(old, InvalidReason::Other));
    assert!(!s.cache.switch_to_next_peer(old, 0));
    assert!(!s.cache.expire_after_ttl(old));
    assert_eq!(s.leader_store("a"), s.store1);
    // A peer id of zero matches by store.
    assert!(s.cache.update_leader(r.ver_id(), &peer(0, s.store2)));
    assert_eq!(s.leader_store("a"), s.store2);
}

#[test]
fn switch_to_next_peer_moves_once_and_skips_witnesses() {
    let mut s = Suite::new();
    let mut region = meta(9, "", "", 1, 1);
    region.peers = vec![peer(1, 1), peer(2, 2), peer(3, 3)];
    region.peers[1].is_witness = true;
    let r = s
        .cache
        .insert(region, Some(&peer(1, 1)), s.now, &mut s.rng)
        .unwrap();
    assert!(s.cache.switch_to_next_peer(r.ver_id(), 0));
    // A second failure report about peer 0 does not move the cursor again.
    assert!(!s.cache.switch_to_next_peer(r.ver_id(), 0));
    let now = s.cache.locate_key(b"k", s.now).unwrap();
    assert_eq!(now.work_index(), 2);
    assert_eq!(now.leader(), None);
    assert!(s.cache.switch_to_next_peer(r.ver_id(), 2));
    assert_eq!(s.cache.locate_key(b"k", s.now).unwrap().work_index(), 0);
}

#[test]
fn test_split() {
    let mut s = Suite::new();
    let r = s.locate("x");
    assert_eq!(r.id(), s.region1);
    assert_eq!(s.leader_store("x"), s.store1);
    // Split into ["", m) and [m, "").
    let region2 = s.pd.alloc_id();
    let (pa, pb) = (s.pd.alloc_id(), s.pd.alloc_id());
    s.pd.split(s.region1, region2, "m", &[pa, pb]);
    // TiKV reports the key is not in the region.
    assert!(s.cache.invalidate(r.ver_id(), InvalidReason::Other));
    assert_eq!(s.usable(), 0);

    let r = s.locate("x");
    assert_eq!(r.id(), region2);
    assert_eq!(s.leader_store("x"), s.store1);
    assert_eq!(s.usable(), 1);

    let r = s.locate_end("m");
    assert_eq!(r.id(), s.region1);
    assert_eq!(s.usable(), 2);
}

#[test]
fn test_merge() {
    let mut s = Suite::new();
    let region2 = s.pd.alloc_id();
    let (pa, pb) = (s.pd.alloc_id(), s.pd.alloc_id());
    s.pd.split(s.region1, region2, "m", &[pa, pb]);
    let loc = s.locate("x");
    assert_eq!(loc.id(), region2);
    s.pd.merge(s.region1, region2);
    assert!(s.cache.invalidate(loc.ver_id(), InvalidReason::Other));
    assert_eq!(s.usable(), 0);
    let loc = s.locate("x");
    assert_eq!(loc.id(), s.region1);
    assert_eq!(s.usable(), 1);
    assert_eq!(s.cache.len(), 1);
}

#[test]
fn test_reconnect() {
    let mut s = Suite::new();
    let loc = s.locate("a");
    // A connection failure drops the region.
    assert!(s.cache.invalidate(loc.ver_id(), InvalidReason::Other));
    let r = s.locate("a");
    assert_eq!(r.id(), s.region1);
    assert_eq!(s.leader_store("a"), s.store1);
    assert_eq!(s.usable(), 1);
}

#[test]
fn test_region_epoch_ahead_of_tikv() {
    let mut s = Suite::new();
    let region = meta(1, "k1", "k2", 10, 10);
    let cached = s.insert(region).unwrap();
    let behind_version = meta(1, "k1", "k2", 10, 9);
    let behind_conf = meta(1, "k1", "k2", 9, 10);
    for current in [behind_version, behind_conf] {
        let outcome = s
            .cache
            .on_epoch_not_match(cached.ver_id(), &[current], 1, s.now, &mut s.rng);
        assert_eq!(outcome, EpochNotMatchOutcome::EpochAhead);
    }
    assert_eq!(s.cache.locate_key(b"k1", s.now), Some(cached));
}

#[test]
fn on_epoch_not_match_caches_the_split_regions() {
    let mut s = Suite::new();
    let old = s.locate("a");
    let left = meta(s.region1, "", "m", 1, 2);
    let right = meta(20, "m", "", 1, 2);
    let outcome =
        s.cache
            .on_epoch_not_match(old.ver_id(), &[left, right], s.store2, s.now, &mut s.rng);
    let EpochNotMatchOutcome::Updated(inserted) = outcome else {
        panic!("expected an update, got {outcome:?}");
    };
    assert_eq!(inserted.len(), 2);
    // The store that answered is taken as leader of the new regions.
    assert!(
        inserted
            .iter()
            .all(|r| r.leader().map(|p| p.store_id) == Some(s.store2))
    );
    assert_eq!(s.cache.cached(old.ver_id()), None);
    assert_eq!(s.cache.locate_key(b"x", s.now).map(|r| r.id()), Some(20));
    assert_eq!(
        s.cache.locate_key(b"a", s.now).map(|r| r.id()),
        Some(s.region1)
    );
    assert_eq!(s.pd.loads, 1);
}

#[test]
fn on_epoch_not_match_without_regions_invalidates() {
    let mut s = Suite::new();
    let old = s.locate("a");
    let outcome = s
        .cache
        .on_epoch_not_match(old.ver_id(), &[], s.store1, s.now, &mut s.rng);
    assert_eq!(outcome, EpochNotMatchOutcome::Invalidated);
    assert_eq!(
        s.cache.cached(old.ver_id()).unwrap().invalid_reason(),
        InvalidReason::EpochNotMatch
    );
    assert_eq!(s.cache.locate_key(b"a", s.now), None);
}

#[test]
fn test_list_region_ids_in_cache() {
    let mut s = Suite::new();
    let region2 = s.pd.alloc_id();
    let (pa, pb) = (s.pd.alloc_id(), s.pd.alloc_id());
    s.pd.split(s.region1, region2, "m", &[pa, pb]);
    let ids = |s: &mut Suite, start: &str, end: &str| -> Vec<u64> {
        loop {
            let now = s.now;
            match cover(&mut s.cache, start.as_bytes(), end.as_bytes(), now) {
                Err(key) => {
                    let (region, leader) = s.pd.get_region(&key);
                    s.insert_loaded(region, leader);
                }
                Ok(regions) => return regions.iter().map(RegionRef::id).collect(),
            }
        }
    };
    assert_eq!(ids(&mut s, "a", "z"), [s.region1, region2]);
    assert_eq!(ids(&mut s, "m", "z"), [region2]);
    // The end is exclusive: [a, m) lies entirely in region 1.
    assert_eq!(ids(&mut s, "a", "m"), [s.region1]);
}

#[test]
fn test_contains() {
    assert!(sample(b"", b"").contains(b""));
    assert!(sample(b"", b"").contains(&[10]));
    assert!(!sample(&[10], b"").contains(b""));
    assert!(!sample(&[10], b"").contains(&[9]));
    assert!(sample(&[10], b"").contains(&[10]));
    assert!(sample(b"", &[10]).contains(b""));
    assert!(sample(b"", &[10]).contains(&[9]));
    assert!(!sample(b"", &[10]).contains(&[10]));
    assert!(!sample(&[10], &[20]).contains(b""));
    assert!(sample(&[10], &[20]).contains(&[15]));
    assert!(!sample(&[10], &[20]).contains(&[30]));
}

#[test]
fn test_contains_by_end() {
    assert!(sample(b"", b"").contains_by_end(b""));
    assert!(sample(b"", b"").contains_by_end(&[10]));
    assert!(sample(&[10], b"").contains_by_end(b""));
    assert!(!sample(&[10], b"").contains_by_end(&[10]));
    assert!(sample(&[10], b"").contains_by_end(&[11]));
    assert!(!sample(b"", &[10]).contains_by_end(b""));
    assert!(sample(b"", &[10]).contains_by_end(&[10]));
    assert!(!sample(b"", &[10]).contains_by_end(&[11]));
    assert!(!sample(&[10], &[20]).contains_by_end(b""));
    assert!(sample(&[10], &[20]).contains_by_end(&[15]));
    assert!(!sample(&[10], &[20]).contains_by_end(&[30]));
}

#[test]
fn test_switch_peer_when_no_leader() {
    let mut s = Suite::new();
    let mut previous: Option<RegionRef> = None;
    for i in 0..=2 {
        let loc = s.locate("a");
        if let Some(prev) = &previous {
            assert_ne!(loc.work_index(), prev.work_index());
            assert_ne!(loc.work_peer(), prev.work_peer());
        } else {
            assert_eq!(i, 0);
        }
        assert!(s.cache.invalidate(loc.ver_id(), InvalidReason::NoLeader));
        assert_eq!(
            s.cache.cached(loc.ver_id()).unwrap().invalid_reason(),
            InvalidReason::NoLeader
        );
        previous = Some(loc);
    }
}

#[test]
fn test_remove_intersecting_regions() {
    let mut s = Suite::new();
    // Split at b, c, d, e.
    let mut regions = vec![s.region1];
    for split_key in ["b", "c", "d", "e"] {
        let id = s.pd.alloc_id();
        let (pa, pb) = (s.pd.alloc_id(), s.pd.alloc_id());
        let last = regions[regions.len() - 1];
        s.pd.split(last, id, split_key, &[pa, pb]);
        regions.push(id);
    }
    for (i, key) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        assert_eq!(s.locate(key).id(), regions[i]);
    }
    // Merge all but the last region into the first.
    for source in &regions[1..4] {
        s.pd.merge(regions[0], *source);
    }
    // The cache is stale, as expected.
    assert_ne!(s.locate("c").id(), regions[0]);
    assert_eq!(s.locate("e").id(), regions[4]);
    // Inserting the merged region removes every intersecting entry.
    let (region, leader) = s.pd.get_region(b"c");
    assert_eq!(region.id, regions[0]);
    s.cache
        .insert(region, leader.as_ref(), s.now, &mut s.rng)
        .unwrap();
    assert_eq!(s.locate("c").id(), regions[0]);
    assert_eq!(s.usable(), 2);
    // Merging the last region tests the empty end key.
    s.pd.merge(regions[0], regions[4]);
    let (region, leader) = s.pd.get_region(b"e");
    s.cache
        .insert(region, leader.as_ref(), s.now, &mut s.rng)
        .unwrap();
    assert_eq!(s.locate("e").id(), regions[0]);
    assert_eq!(s.usable(), 1);
    assert_eq!(s.cache.len(), 1);
}

#[test]
fn insert_removes_the_region_covering_its_start() {
    // client-go only scans from the new start key and so misses an entry starting before it
    // (its `TestRefreshCache` documents that); every overlap must go.
    let mut s = Suite::new();
    s.insert(meta(1, "", "", 1, 1)).unwrap();
    s.insert(meta(1, "b", "", 2, 1)).unwrap();
    assert_eq!(s.cache.len(), 1);
    assert_eq!(s.cache.locate_key(b"a", s.now), None);
    assert_eq!(s.cache.locate_key(b"c", s.now).map(|r| r.id()), Some(1));
}

#[test]
fn test_background_cache_gc() {
    let config = RegionCacheConfig {
        ttl: Duration::from_secs(600),
        ttl_jitter: Duration::ZERO,
    };
    let mut s = Suite::with_config(config);
    let count = 100u64;
    for i in 0..count {
        let start = if i == 0 {
            String::new()
        } else {
            format!("k{i:03}")
        };
        let end = if i + 1 == count {
            String::new()
        } else {
            format!("k{:03}", i + 1)
        };
        s.insert(meta(i + 1, &start, &end, 1, 1)).unwrap();
    }
    assert_eq!(s.usable(), 100);
    // Regions whose id is a multiple of 3 go unused; the others are used near the deadline.
    s.now += Duration::from_secs(590);
    for i in 0..count {
        if (i + 1) % 3 != 0 {
            let key = format!("k{i:03}");
            assert!(s.cache.locate_key(key.as_bytes(), s.now).is_some());
        }
    }
    s.now += Duration::from_secs(20);
    assert_eq!(s.cache.remove_expired(s.now), 33);
    assert_eq!(s.cache.len(), 67);
    assert_eq!(s.usable(), 67);
    // Invalidated regions are dropped too.
    let victim = s.cache.locate_key(b"k051", s.now).unwrap();
    s.cache.invalidate(victim.ver_id(), InvalidReason::Other);
    assert_eq!(s.cache.remove_expired(s.now), 1);
    assert_eq!(s.cache.get_by_id(victim.id(), s.now), None);
}

#[test]
fn test_split_then_locate_invalid_region() {
    let mut s = Suite::new();
    let r1 = s.locate("a");
    let ids = (s.pd.alloc_id(), s.pd.alloc_id(), s.pd.alloc_id());
    s.pd.split(s.region1, ids.0, "k", &[ids.1, ids.2]);
    s.cache.invalidate(r1.ver_id(), InvalidReason::Other);
    assert_eq!(s.cache.locate_key(r1.start_key(), s.now), None);
    assert_eq!(s.cache.locate_key(b"k", s.now), None);
    let now = s.now;
    assert!(cover(&mut s.cache, r1.start_key(), b"", now).is_err());
    let loc1 = s.locate("");
    assert!(!loc1.contains(b"k"));
    let loc2 = s.locate("k");
    assert!(loc2.contains(b"k"));
}

#[test]
fn test_region_cache_valid_after_loading() {
    let mut s = Suite::new();
    let mut last = s.region1;
    for c in b'a'..=b'j' {
        let id = s.pd.alloc_id();
        let (pa, pb) = (s.pd.alloc_id(), s.pd.alloc_id());
        s.pd.split(last, id, &(c as char).to_string(), &[pa, pb]);
        last = id;
    }
    // Loading the same region again (a PD scan, a lookup by id) keeps it usable.
    let loc = s.locate("b");
    let (region, leader) = s.pd.get_region(b"b");
    s.cache
        .insert(region, leader.as_ref(), s.now, &mut s.rng)
        .unwrap();
    assert!(s.cache.cached(loc.ver_id()).unwrap().is_usable(s.now));
    // An invalidated region is replaced by the reloaded one, which is usable.
    assert!(s.cache.invalidate(loc.ver_id(), InvalidReason::Other));
    let (region, leader) = s.pd.get_region(b"b");
    s.cache
        .insert(region, leader.as_ref(), s.now, &mut s.rng)
        .unwrap();
    assert!(s.cache.cached(loc.ver_id()).unwrap().is_usable(s.now));
    assert_eq!(
        s.cache.locate_key(b"b", s.now).map(|r| r.id()),
        Some(loc.id())
    );
}

#[test]
fn test_insert_stale_region() {
    let mut s = Suite::new();
    let r = s.locate("a");
    let stale = r.meta().clone();
    let id_b = s.pd.alloc_id();
    let p = s.pd.alloc_id();
    s.pd.split(r.id(), id_b, "b", &[p, p + 100]);
    let id_c = s.pd.alloc_id();
    let p = s.pd.alloc_id();
    s.pd.split(id_b, id_c, "c", &[p, p + 100]);
    s.cache.invalidate(r.ver_id(), InvalidReason::Other);
    assert_eq!(s.locate("c").start_key().as_ref(), b"c");
    assert_eq!(s.locate("b").start_key().as_ref(), b"b");
    let (fresh, leader) = s.pd.get_region(b"a");
    assert!(
        s.cache
            .insert(fresh, leader.as_ref(), s.now, &mut s.rng)
            .is_ok()
    );
    // The pre-split region is older than everything it overlaps.
    assert!(matches!(s.insert(stale), Err(InsertError::Stale { .. })));
    let now = s.now;
    assert!(matches!(cover(&mut s.cache, b"", b"", now), Ok(regions) if regions.len() == 3));
    assert_eq!(s.locate("a").end_key().as_ref(), b"b");
}

#[test]
fn test_stale_get_region() {
    // A PD answer delayed past a split must not overwrite the split regions.
    let mut s = Suite::new();
    let before_split = s.pd.get_region(b"a");
    let id = s.pd.alloc_id();
    let p = s.pd.alloc_id();
    s.pd.split(s.region1, id, "b", &[p, p + 100]);
    assert_eq!(s.locate("b").start_key().as_ref(), b"b");
    assert_eq!(s.locate("c").start_key().as_ref(), b"b");
    let (delayed, leader) = before_split;
    assert!(matches!(
        s.cache.insert(delayed, leader.as_ref(), s.now, &mut s.rng),
        Err(InsertError::Stale { .. })
    ));
    assert_eq!(s.locate("b").start_key().as_ref(), b"b");
    assert_eq!(s.locate("a").end_key().as_ref(), b"b");
}

#[test]
fn test_follower_get_stale_region() {
    // A lagging PD follower answers with the unsplit region first; the fresh answer that
    // arrives later still wins over it.
    let mut s = Suite::new();
    let (lagging, leader) = s.pd.get_region(b"z");
    let id = s.pd.alloc_id();
    let p = s.pd.alloc_id();
    s.pd.split(s.region1, id, "z", &[p, p + 100]);
    s.cache
        .insert(lagging, leader.as_ref(), s.now, &mut s.rng)
        .unwrap();
    let (fresh, leader) = s.pd.get_region(b"z");
    s.cache
        .insert(fresh, leader.as_ref(), s.now, &mut s.rng)
        .unwrap();
    assert_eq!(s.locate("z").start_key().as_ref(), b"z");
    assert_eq!(s.locate("y").end_key().as_ref(), b"z");
}

#[test]
fn same_region_with_older_epoch_is_stale() {
    let mut s = Suite::new();
    s.insert(meta(1, "a", "c", 5, 5)).unwrap();
    for (conf_ver, version) in [(4, 5), (5, 4), (9, 4)] {
        let offered = meta(1, "a", "c", conf_ver, version);
        assert_eq!(
            s.insert(offered),
            Err(InsertError::Stale {
                offered: RegionVerId {
                    id: 1,
                    conf_ver,
                    version
                },
                cached: RegionVerId {
                    id: 1,
                    conf_ver: 5,
                    version: 5
                },
            })
        );
    }
    // Equal or newer epochs replace it.
    assert!(s.insert(meta(1, "a", "c", 5, 5)).is_ok());
    assert!(s.insert(meta(1, "a", "b", 6, 6)).is_ok());
    assert_eq!(s.cache.len(), 1);
}

#[test]
fn malformed_regions_are_refused() {
    let mut s = Suite::new();
    let mut no_peers = meta(1, "a", "b", 1, 1);
    no_peers.peers.clear();
    assert_eq!(s.insert(no_peers), Err(InsertError::NoPeers(1)));
    assert_eq!(
        s.insert(meta(2, "b", "a", 1, 1)),
        Err(InsertError::InvalidRange(2))
    );
    assert_eq!(
        s.insert(meta(3, "b", "b", 1, 1)),
        Err(InsertError::InvalidRange(3))
    );
    assert!(s.cache.is_empty());
}

#[test]
fn insert_registers_stores_and_leader() {
    let mut s = Suite::new();
    let r = s
        .cache
        .insert(
            meta(1, "", "", 1, 1),
            Some(&peer(102, 2)),
            s.now,
            &mut s.rng,
        )
        .unwrap();
    assert_eq!(r.leader().map(|p| p.id), Some(102));
    assert_eq!(r.work_index(), 1);
    assert_eq!(r.epoch().version, 1);
    assert_eq!(s.cache.stores().needs_refresh().collect::<Vec<_>>(), [1, 2]);
    // A leader that is not a peer leaves the leader unknown.
    let r = s
        .cache
        .insert(
            meta(1, "", "", 1, 2),
            Some(&peer(999, 9)),
            s.now,
            &mut s.rng,
        )
        .unwrap();
    assert_eq!(r.leader(), None);
    assert_eq!(r.work_peer().map(|p| p.id), Some(101));
    s.cache.clear();
    assert!(s.cache.is_empty());
    assert_eq!(s.cache.stores().iter().count(), 2);
}

#[test]
fn locate_end_key_at_the_end_of_the_key_space() {
    let mut s = Suite::new();
    s.insert(meta(1, "", "m", 1, 1)).unwrap();
    // No region reaching +infinity is cached yet.
    assert_eq!(s.cache.locate_end_key(b"", s.now), None);
    s.insert(meta(2, "m", "", 1, 1)).unwrap();
    assert_eq!(s.cache.locate_end_key(b"", s.now).map(|r| r.id()), Some(2));
    assert_eq!(s.cache.locate_end_key(b"m", s.now).map(|r| r.id()), Some(1));
    assert_eq!(
        s.cache.locate_end_key(b"m\0", s.now).map(|r| r.id()),
        Some(2)
    );
    // Nothing lies before the very first key.
    assert_eq!(
        s.cache.locate_end_key(b"\0", s.now).map(|r| r.id()),
        Some(1)
    );
}

/// The cached regions covering `[start, end)` (an empty end: to the end of the key space), in
/// key order, or the first key no usable cached region holds (what the client would then ask
/// PD for, as the locate operation does).
fn cover(
    cache: &mut RegionCache,
    start: &[u8],
    end: &[u8],
    now: Time,
) -> Result<Vec<RegionRef>, Bytes> {
    let mut regions = Vec::new();
    let mut cursor = Bytes::copy_from_slice(start);
    // Bounded: each pass moves past one region.
    loop {
        let Some(region) = cache.locate_key(&cursor, now) else {
            return Err(cursor);
        };
        let next = region.end_key().clone();
        regions.push(region);
        if next.is_empty() || (!end.is_empty() && next.as_ref() >= end) {
            return Ok(regions);
        }
        cursor = next;
    }
}
