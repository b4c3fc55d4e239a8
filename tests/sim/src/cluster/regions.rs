//! Regions and the operations that reshape them: split, merge, leader transfer, peer changes.
//!
//! Epoch rules follow TiKV's apply path:
//! - **Batch split** of a region into `n + 1` parts bumps `version` by `n` on every part. With
//!   right-derive (TiKV's default) the original region id keeps the right-most range and the
//!   new ids take the left parts, in key order. New regions copy the peers' stores with fresh
//!   peer ids, and their leader sits on the same store as the original leader.
//! - **Merge**: PrepareMerge bumps the source's `version` and `conf_ver` by one; CommitMerge
//!   sets the target's `version` to `max(source, target) + 1` (using the source's bumped
//!   version) and the source disappears. `conf_ver` of the target does not change.
//! - **Peer changes** bump `conf_ver` by one and leave `version` alone.
//! - **Leader transfer** changes no epoch and raises the region's raft term by one.
//!
//! Every leader transfer, split and merge is also recorded as a [`RegionChange`], which the
//! stores react to (max-ts sync, in-memory pessimistic locks).

use bytes::Bytes;
use tikv_proto::metapb::{self, PeerRole};

use super::{Cluster, ClusterError, RegionChange, key_range};

/// The version pair TiKV uses to detect stale routing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct RegionEpoch {
    /// Bumped on every membership change.
    pub conf_ver: u64,
    /// Bumped on every split and merge.
    pub version: u64,
}

impl RegionEpoch {
    /// The wire form.
    pub fn to_proto(self) -> metapb::RegionEpoch {
        metapb::RegionEpoch {
            conf_ver: self.conf_ver,
            version: self.version,
        }
    }
}

/// One replica of a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The peer id (unique across the cluster).
    pub id: u64,
    /// The store holding this replica.
    pub store_id: u64,
    /// Voter or learner.
    pub role: PeerRole,
}

impl Peer {
    /// A voter peer.
    pub fn voter(id: u64, store_id: u64) -> Self {
        Self {
            id,
            store_id,
            role: PeerRole::Voter,
        }
    }

    /// The wire form.
    pub fn to_proto(self) -> metapb::Peer {
        metapb::Peer {
            id: self.id,
            store_id: self.store_id,
            role: self.role as i32,
            is_witness: false,
        }
    }
}

/// A key range `[start_key, end_key)` (empty end = unbounded) replicated by a raft group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// The region id.
    pub id: u64,
    /// Inclusive start, in TiKV's key space (see the module docs of `cluster`).
    pub start_key: Bytes,
    /// Exclusive end; empty means the end of the key space.
    pub end_key: Bytes,
    /// The current epoch.
    pub epoch: RegionEpoch,
    /// Replicas, in the order they were added.
    pub peers: Vec<Peer>,
    /// The id of the leader peer (0 if none).
    pub leader_peer_id: u64,
    /// The raft term of the current leader: every election (leader transfer, re-election
    /// after the leader's store restarts) raises it by one.
    pub term: u64,
}

/// The term of a region whose raft group just elected its first leader: TiKV's initial log
/// term (5) plus that election.
pub const FIRST_ELECTED_TERM: u64 = 6;

impl Region {
    /// Whether `key` lies in `[start_key, end_key)`.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= &self.start_key[..] && (self.end_key.is_empty() || key < &self.end_key[..])
    }

    /// The peer on `store_id`, if any.
    pub fn peer_on(&self, store_id: u64) -> Option<&Peer> {
        self.peers.iter().find(|peer| peer.store_id == store_id)
    }

    /// The leader peer, if the region has one.
    pub fn leader(&self) -> Option<&Peer> {
        self.peers
            .iter()
            .find(|peer| peer.id == self.leader_peer_id)
    }

    /// The wire form (`metapb::Region`).
    pub fn to_proto(&self) -> metapb::Region {
        metapb::Region {
            id: self.id,
            start_key: self.start_key.clone(),
            end_key: self.end_key.clone(),
            region_epoch: Some(self.epoch.to_proto()),
            peers: self.peers.iter().map(|peer| peer.to_proto()).collect(),
            is_in_flashback: false,
            flashback_start_ts: 0,
        }
    }
}

impl Cluster {
    /// The region with this id, if it exists.
    pub fn region(&self, region_id: u64) -> Option<&Region> {
        self.regions.get(&region_id)
    }

    /// All regions in key order.
    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.by_start.values().filter_map(|id| self.regions.get(id))
    }

    /// The number of regions.
    pub fn region_count(&self) -> usize {
        self.regions.len()
    }

    /// The region containing `key` (in TiKV's key space). Regions cover everything, so this
    /// only returns `None` if the tree is broken.
    pub fn region_by_key(&self, key: &[u8]) -> Option<&Region> {
        let (_, id) = self
            .by_start
            .range::<[u8], _>(key_range::up_to(key))
            .next_back()?;
        self.regions.get(id).filter(|region| region.contains(key))
    }

    /// Splits the region containing `key` at `key`, returning the new (left) region's id, or
    /// `None` when `key` is already a region boundary (or empty).
    pub fn split_at(&mut self, key: &[u8]) -> Result<Option<u64>, ClusterError> {
        let Some(region) = self.region_by_key(key) else {
            return Ok(None);
        };
        if key.is_empty() || region.start_key == key {
            return Ok(None);
        }
        let region_id = region.id;
        let ids = self.split_region(region_id, &[Bytes::copy_from_slice(key)])?;
        Ok(ids.first().copied())
    }

    /// Splits wherever `keys` are not yet boundaries, region by region; returns the ids of
    /// the regions created, in key order of their ranges.
    pub fn split_keys(&mut self, keys: &[Bytes]) -> Result<Vec<u64>, ClusterError> {
        let mut sorted: Vec<Bytes> = keys.iter().filter(|k| !k.is_empty()).cloned().collect();
        sorted.sort();
        sorted.dedup();
        // Group by the region each key falls in, so each region splits once (one batch).
        let mut batches: Vec<(u64, Vec<Bytes>)> = Vec::new();
        for key in sorted {
            let Some(region) = self.region_by_key(&key) else {
                continue;
            };
            if region.start_key == key {
                continue;
            }
            match batches.last_mut() {
                Some((id, batch)) if *id == region.id => batch.push(key),
                _ => batches.push((region.id, vec![key])),
            }
        }
        let mut created = Vec::new();
        for (region_id, batch) in batches {
            created.extend(self.split_region(region_id, &batch)?);
        }
        Ok(created)
    }

    /// Batch-splits region `region_id` at `split_keys` (strictly increasing, strictly inside the
    /// region) with TiKV's right-derive rule; returns the new region ids in key order. The
    /// original id keeps the right-most range.
    pub fn split_region(
        &mut self,
        region_id: u64,
        split_keys: &[Bytes],
    ) -> Result<Vec<u64>, ClusterError> {
        let region = self
            .regions
            .get(&region_id)
            .ok_or(ClusterError::RegionNotFound { region_id })?;
        let mut last = region.start_key.clone();
        for key in split_keys {
            let inside = !key.is_empty()
                && *key > last
                && (region.end_key.is_empty() || *key < region.end_key);
            if !inside {
                return Err(ClusterError::InvalidSplitKey {
                    region_id,
                    key: key.clone(),
                });
            }
            last = key.clone();
        }
        let Some(last_key) = split_keys.last().cloned() else {
            return Ok(Vec::new());
        };
        let region = region.clone();
        let mut derived = region.clone();
        derived.epoch.version += split_keys.len() as u64;
        let leader_store = derived.leader().map(|peer| peer.store_id);
        // The left-most new region takes over the original start key.
        self.by_start.remove(&derived.start_key);

        let mut new_ids = Vec::with_capacity(split_keys.len());
        let mut start = derived.start_key.clone();
        for key in split_keys {
            let id = self.alloc_id();
            let peers: Vec<Peer> = derived
                .peers
                .iter()
                .map(|peer| Peer {
                    id: self.alloc_id(),
                    ..*peer
                })
                .collect();
            let leader_peer_id = peers
                .iter()
                .find(|peer| Some(peer.store_id) == leader_store)
                .map_or(0, |peer| peer.id);
            // The new region's peer on the old leader's store campaigns at once.
            let new_region = Region {
                id,
                start_key: start,
                end_key: key.clone(),
                epoch: derived.epoch,
                peers,
                leader_peer_id,
                term: FIRST_ELECTED_TERM,
            };
            start = key.clone();
            new_ids.push(id);
            self.insert_region(new_region);
        }
        let (range_start, range_end) = (region.start_key.clone(), region.end_key.clone());
        derived.start_key = last_key;
        self.insert_region(derived);
        self.record_change(RegionChange::Split {
            region_id,
            start_key: range_start,
            end_key: range_end,
            new_region_ids: new_ids.clone(),
            before: region,
        });
        Ok(new_ids)
    }

    /// Merges region `source_id` into the adjacent region `target_id` (the target grows, the
    /// source disappears); errors when they are not adjacent or their peers are not on the
    /// same stores.
    pub fn merge(&mut self, source_id: u64, target_id: u64) -> Result<(), ClusterError> {
        if source_id == target_id {
            return Err(ClusterError::SelfMerge {
                region_id: source_id,
            });
        }
        let source = self
            .regions
            .get(&source_id)
            .ok_or(ClusterError::RegionNotFound {
                region_id: source_id,
            })?;
        let target = self
            .regions
            .get(&target_id)
            .ok_or(ClusterError::RegionNotFound {
                region_id: target_id,
            })?;
        let source_is_right = !target.end_key.is_empty() && target.end_key == source.start_key;
        let source_is_left = !source.end_key.is_empty() && source.end_key == target.start_key;
        if !source_is_right && !source_is_left {
            return Err(ClusterError::NotAdjacent {
                source_id,
                target_id,
            });
        }
        let stores_of = |region: &Region| {
            let mut stores: Vec<u64> = region.peers.iter().map(|peer| peer.store_id).collect();
            stores.sort_unstable();
            stores
        };
        if stores_of(source) != stores_of(target) {
            return Err(ClusterError::PeersNotAligned {
                source_id,
                target_id,
            });
        }
        // PrepareMerge bumps the source's version before CommitMerge reads it.
        let source_version = source.epoch.version + 1;
        let (source_start, source_end) = (source.start_key.clone(), source.end_key.clone());
        let source_before = source.clone();
        let target_before = target.clone();
        let mut target = target.clone();
        target.epoch.version = source_version.max(target.epoch.version) + 1;
        self.remove_region(source_id);
        self.by_start.remove(&target.start_key);
        if source_is_right {
            target.end_key = source_end.clone();
        } else {
            target.start_key = source_start.clone();
        }
        self.insert_region(target);
        self.record_change(RegionChange::Merged {
            source_id,
            target_id,
            source_start,
            source_end,
            source: source_before,
            target_before,
        });
        Ok(())
    }

    /// Makes the peer on `store_id` the leader of `region_id`; errors if there is none or it
    /// is not a voter.
    pub fn transfer_leader(&mut self, region_id: u64, store_id: u64) -> Result<(), ClusterError> {
        let region = self.region_mut(region_id)?;
        let peer = *region.peer_on(store_id).ok_or(ClusterError::PeerNotFound {
            region_id,
            store_id,
        })?;
        if peer.role != PeerRole::Voter {
            return Err(ClusterError::NotVoter {
                region_id,
                store_id,
            });
        }
        if region.leader_peer_id == peer.id {
            return Ok(());
        }
        let from_store = region.leader().map(|leader| leader.store_id);
        region.leader_peer_id = peer.id;
        region.term += 1;
        let (start_key, end_key) = (region.start_key.clone(), region.end_key.clone());
        self.record_change(RegionChange::LeaderTransferred {
            region_id,
            start_key,
            end_key,
            from_store,
            to_store: store_id,
        });
        Ok(())
    }

    /// Adds a peer with `role` on `store_id` to `region_id` (conf_ver + 1); returns the new
    /// peer id.
    pub fn add_peer(
        &mut self,
        region_id: u64,
        store_id: u64,
        role: PeerRole,
    ) -> Result<u64, ClusterError> {
        let store = self
            .stores
            .get(&store_id)
            .ok_or(ClusterError::StoreNotFound { store_id })?;
        if store.is_tombstone() {
            return Err(ClusterError::StoreTombstone { store_id });
        }
        if self.region_mut(region_id)?.peer_on(store_id).is_some() {
            return Err(ClusterError::PeerExists {
                region_id,
                store_id,
            });
        }
        let peer_id = self.alloc_id();
        let region = self.region_mut(region_id)?;
        region.peers.push(Peer {
            id: peer_id,
            store_id,
            role,
        });
        region.epoch.conf_ver += 1;
        Ok(peer_id)
    }

    /// Removes the peer on `store_id` from `region_id` (conf_ver + 1); the leader cannot be
    /// removed.
    pub fn remove_peer(&mut self, region_id: u64, store_id: u64) -> Result<(), ClusterError> {
        let region = self.region_mut(region_id)?;
        let peer = *region.peer_on(store_id).ok_or(ClusterError::PeerNotFound {
            region_id,
            store_id,
        })?;
        if peer.id == region.leader_peer_id {
            return Err(ClusterError::RemoveLeader { region_id });
        }
        region.peers.retain(|p| p.id != peer.id);
        region.epoch.conf_ver += 1;
        Ok(())
    }

    /// Makes `region_id` invisible to PD (a hole in PD's region tree), as a freshly split
    /// region is until it heartbeats; TiKV still serves it.
    pub fn hide_region_from_pd(&mut self, region_id: u64) -> Result<(), ClusterError> {
        self.region_mut(region_id)?;
        self.pd_hidden.insert(region_id);
        Ok(())
    }

    /// Makes a hidden region visible to PD again.
    pub fn reveal_region_to_pd(&mut self, region_id: u64) {
        self.pd_hidden.remove(&region_id);
    }

    /// Splits at the four API v2 bounds of keyspace `keyspace_id` (where not yet split).
    pub(crate) fn split_keyspace_bounds(&mut self, keyspace_id: u32) -> Result<(), ClusterError> {
        // Ids past 24 bits have no prefix: the id space is used up.
        let bounds = super::codec::keyspace_bounds(keyspace_id)
            .map_err(|_| super::KeyspaceError::IdsExhausted)?;
        self.split_keys(&bounds)?;
        Ok(())
    }

    pub(crate) fn region_mut(&mut self, region_id: u64) -> Result<&mut Region, ClusterError> {
        self.regions
            .get_mut(&region_id)
            .ok_or(ClusterError::RegionNotFound { region_id })
    }

    pub(crate) fn insert_region(&mut self, region: Region) {
        self.by_start.insert(region.start_key.clone(), region.id);
        self.regions.insert(region.id, region);
    }

    fn remove_region(&mut self, region_id: u64) {
        if let Some(region) = self.regions.remove(&region_id) {
            self.by_start.remove(&region.start_key);
        }
        self.pd_hidden.remove(&region_id);
        self.scattered.remove(&region_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterConfig;

    fn cluster() -> Cluster {
        Cluster::new(ClusterConfig::default()).unwrap()
    }

    fn b(key: &str) -> Bytes {
        Bytes::copy_from_slice(key.as_bytes())
    }

    /// Regions cover ["", "") without gaps or overlaps, in key order.
    fn assert_covering(cluster: &Cluster) {
        let regions: Vec<&Region> = cluster.regions().collect();
        assert_eq!(regions.len(), cluster.region_count());
        assert!(regions[0].start_key.is_empty());
        assert!(regions.last().unwrap().end_key.is_empty());
        for pair in regions.windows(2) {
            assert_eq!(pair[0].end_key, pair[1].start_key);
        }
    }

    #[test]
    fn bootstrap_has_one_region_with_a_peer_per_store() {
        let cluster = cluster();
        assert_eq!(cluster.stores().count(), 3);
        let region = cluster.regions().next().unwrap();
        assert_eq!(region.id, 4);
        assert_eq!(region.peers.len(), 3);
        assert_eq!(region.leader().unwrap().store_id, 1);
        assert_eq!(
            region.epoch,
            RegionEpoch {
                conf_ver: 1,
                version: 1
            }
        );
        assert_covering(&cluster);
    }

    #[test]
    fn split_keeps_id_on_the_right_and_bumps_versions() {
        let mut cluster = cluster();
        let original = cluster.regions().next().unwrap().id;
        let new_ids = cluster
            .split_region(original, &[b("b"), b("d"), b("f")])
            .unwrap();
        assert_eq!(new_ids.len(), 3);
        let regions: Vec<&Region> = cluster.regions().collect();
        assert_eq!(regions.len(), 4);
        assert_eq!(regions[3].id, original);
        assert_eq!(regions[3].start_key, b("f"));
        assert_eq!(
            regions[..3].iter().map(|r| r.id).collect::<Vec<_>>(),
            new_ids
        );
        assert!(
            regions
                .iter()
                .all(|r| r.epoch.version == 4 && r.epoch.conf_ver == 1)
        );
        // New regions get fresh peer ids on the same stores, leader on the old leader's store.
        for region in &regions[..3] {
            assert_eq!(region.leader().unwrap().store_id, 1);
            let stores: Vec<u64> = region.peers.iter().map(|p| p.store_id).collect();
            assert_eq!(stores, vec![1, 2, 3]);
            assert!(region.peers.iter().all(|p| p.id > original));
        }
        assert_covering(&cluster);
    }

    #[test]
    fn split_rejects_bad_keys() {
        let mut cluster = cluster();
        let id = cluster.regions().next().unwrap().id;
        cluster.split_region(id, &[b("m")]).unwrap();
        let err = cluster.split_region(id, &[b("a")]).unwrap_err();
        assert!(matches!(err, ClusterError::InvalidSplitKey { .. }));
        let err = cluster.split_region(id, &[b("x"), b("p")]).unwrap_err();
        assert!(matches!(err, ClusterError::InvalidSplitKey { .. }));
        let err = cluster.split_region(id, &[b("m")]).unwrap_err();
        assert!(matches!(err, ClusterError::InvalidSplitKey { .. }));
        assert_eq!(
            cluster.split_region(999, &[b("q")]),
            Err(ClusterError::RegionNotFound { region_id: 999 })
        );
        assert_eq!(cluster.split_at(b"m").unwrap(), None);
        assert_eq!(cluster.split_at(b"").unwrap(), None);
    }

    #[test]
    fn split_keys_groups_by_region() {
        let mut cluster = cluster();
        cluster.split_at(b"m").unwrap();
        let created = cluster
            .split_keys(&[b("z"), b("c"), b("m"), b("c"), b("q")])
            .unwrap();
        assert_eq!(created.len(), 3);
        let starts: Vec<Bytes> = cluster.regions().map(|r| r.start_key.clone()).collect();
        assert_eq!(starts, vec![b(""), b("c"), b("m"), b("q"), b("z")]);
        assert_covering(&cluster);
    }

    #[test]
    fn merge_sets_target_version_past_both() {
        let mut cluster = cluster();
        let right = cluster.regions().next().unwrap().id;
        let left = cluster.split_at(b"m").unwrap().unwrap();
        // Bump the right region's version further with another split.
        let mid = cluster.split_at(b"t").unwrap().unwrap();
        let right_version = cluster.region(right).unwrap().epoch.version;
        let mid_version = cluster.region(mid).unwrap().epoch.version;
        assert_eq!((right_version, mid_version), (3, 3));
        let left_version = cluster.region(left).unwrap().epoch.version;
        assert_eq!(left_version, 2);

        // Source left (version 2, bumped to 3 by PrepareMerge) into target mid (3).
        cluster.merge(left, mid).unwrap();
        assert!(cluster.region(left).is_none());
        let merged = cluster.region(mid).unwrap();
        assert_eq!(merged.start_key, b(""));
        assert_eq!(merged.end_key, b("t"));
        assert_eq!(merged.epoch.version, 4);
        assert_eq!(merged.epoch.conf_ver, 1);

        // Source right (3 → 4) into target mid (4) from the left side.
        cluster.merge(right, mid).unwrap();
        let merged = cluster.region(mid).unwrap();
        assert!(merged.end_key.is_empty());
        assert_eq!(merged.epoch.version, 5);
        assert_eq!(cluster.region_count(), 1);
        assert_covering(&cluster);
    }

    #[test]
    fn merge_errors() {
        let mut cluster = cluster();
        let c = cluster.regions().next().unwrap().id;
        let a = cluster.split_at(b"g").unwrap().unwrap();
        let b_id = cluster.split_at(b"p").unwrap().unwrap();
        assert_eq!(
            cluster.merge(a, c),
            Err(ClusterError::NotAdjacent {
                source_id: a,
                target_id: c
            })
        );
        assert_eq!(
            cluster.merge(a, a),
            Err(ClusterError::SelfMerge { region_id: a })
        );
        assert_eq!(
            cluster.merge(77, a),
            Err(ClusterError::RegionNotFound { region_id: 77 })
        );
        cluster.remove_peer(b_id, 3).unwrap();
        assert_eq!(
            cluster.merge(a, b_id),
            Err(ClusterError::PeersNotAligned {
                source_id: a,
                target_id: b_id
            })
        );
    }

    #[test]
    fn peer_changes_bump_conf_ver_only() {
        let mut cluster = cluster();
        let id = cluster.regions().next().unwrap().id;
        assert_eq!(
            cluster.remove_peer(id, 1),
            Err(ClusterError::RemoveLeader { region_id: id })
        );
        cluster.remove_peer(id, 3).unwrap();
        let region = cluster.region(id).unwrap();
        assert_eq!(
            region.epoch,
            RegionEpoch {
                conf_ver: 2,
                version: 1
            }
        );
        assert!(region.peer_on(3).is_none());
        let peer_id = cluster.add_peer(id, 3, PeerRole::Learner).unwrap();
        let region = cluster.region(id).unwrap();
        assert_eq!(region.epoch.conf_ver, 3);
        assert_eq!(region.peer_on(3).unwrap().id, peer_id);
        assert_eq!(
            cluster.add_peer(id, 3, PeerRole::Voter),
            Err(ClusterError::PeerExists {
                region_id: id,
                store_id: 3
            })
        );
        assert_eq!(
            cluster.add_peer(id, 42, PeerRole::Voter),
            Err(ClusterError::StoreNotFound { store_id: 42 })
        );
        assert_eq!(
            cluster.transfer_leader(id, 3),
            Err(ClusterError::NotVoter {
                region_id: id,
                store_id: 3
            })
        );
        cluster.transfer_leader(id, 2).unwrap();
        let region = cluster.region(id).unwrap();
        assert_eq!(region.leader().unwrap().store_id, 2);
        assert_eq!(region.epoch.conf_ver, 3);
        assert_eq!(
            cluster.remove_peer(id, 9),
            Err(ClusterError::PeerNotFound {
                region_id: id,
                store_id: 9
            })
        );
    }

    #[test]
    fn ids_come_from_one_allocator() {
        let mut cluster = cluster();
        let before = cluster.alloc_id();
        let id = cluster.regions().next().unwrap().id;
        let new = cluster.split_region(id, &[b("k")]).unwrap();
        // One region id plus three peer ids.
        assert_eq!(new, vec![before + 1]);
        assert_eq!(cluster.alloc_id(), before + 5);
    }
}
