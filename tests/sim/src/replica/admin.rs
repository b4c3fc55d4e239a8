//! Splits and merges as raft admin entries. TiKV replicates a split (`BatchSplit`) and a
//! merge (`CommitMerge`) through the region's log like any write, and each peer changes its
//! region only when it applies that entry (raftstore's `ApplyDelegate::exec_batch_split`
//! and `exec_commit_merge`). Until then a lagging follower or learner still holds the old
//! region (old range, old epoch) and answers as that region, and it has no peer of the
//! regions a split created: TiKV's store drops the new regions' raft messages while they
//! overlap the unsplit region (`maybe_create_peer_internal`), so a request for one of them
//! gets `RegionNotFound` there.
//!
//! The model keeps, per `(region, store)`, the admin entries that peer has not applied yet
//! (each with the region as it was before the entry), and the `(region, store)` pairs whose
//! peer a split has not created yet. What a store holds is the region before the oldest
//! entry it has not applied, or the current region when it has applied them all.

use std::collections::VecDeque;

use super::{RAFT_INIT_LOG_INDEX, ReadProgress, Replicas};
use crate::cluster::Region;
use crate::sim::Sim;

/// What applying an admin entry does on one store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum AdminKind {
    /// `BatchSplit`: the store's peers of these regions come into being.
    Split {
        /// The regions the split created.
        created: Vec<u64>,
    },
    /// `CommitMerge` into this region: the store's peer of the source goes away, and the
    /// target's safe ts drops to the smaller of the two (`merge_safe_ts`).
    CommitMerge {
        /// The region merged in.
        source_id: u64,
    },
    /// A merged-away source waits here for the target's `CommitMerge` on the same store
    /// (TiKV's source peer lives until the target has caught its log up and applied the
    /// merge); its index is never reached.
    AwaitMerge,
}

/// One admin entry a peer has not applied yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct AdminEntry {
    /// Its index in the region's log (`u64::MAX` for [`AdminKind::AwaitMerge`]).
    index: u64,
    /// The region as the peer holds it until it applies the entry.
    before: Region,
    kind: AdminKind,
}

/// How a store holds a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeerView<'a> {
    /// As the cluster has it now (the peer has applied every split and merge, or has no
    /// peer at all).
    Current,
    /// As it was before an admin entry the peer has not applied.
    Stale(&'a Region),
    /// A split the store has not applied yet created this region: no peer of it there.
    NotCreated,
}

impl Replicas {
    /// `before` split into `created` (new ids, key order) and itself: the split is entry
    /// of `before`'s log, committed at `now_ms`. The leader applies it at once; each other
    /// peer when its lag lets it reach the entry, holding `before` until then and having
    /// no peer of the new regions. The new regions' peers start at the initial log index.
    pub(crate) fn split(&mut self, before: &Region, created: &[u64], now_ms: u64) {
        let region_id = before.id;
        let stores: Vec<u64> = before.peers.iter().map(|peer| peer.store_id).collect();
        let leader = before.leader().map(|peer| peer.store_id);
        let index = self.append_entry(region_id, &stores, now_ms);
        for new_id in created {
            for store_id in &stores {
                self.peers
                    .entry((*new_id, *store_id))
                    .or_insert_with(|| ReadProgress {
                        applied_index: RAFT_INIT_LOG_INDEX,
                        ..ReadProgress::default()
                    });
            }
        }
        for store_id in &stores {
            if Some(*store_id) == leader {
                continue;
            }
            self.admin
                .entry((region_id, *store_id))
                .or_default()
                .push_back(AdminEntry {
                    index,
                    before: before.clone(),
                    kind: AdminKind::Split {
                        created: created.to_vec(),
                    },
                });
            for new_id in created {
                self.not_created.insert((*new_id, *store_id));
            }
        }
        self.settle(region_id, &stores, leader, index, now_ms);
    }

    /// `source` merged into the region `target_before` was: the merge is an entry of the
    /// target's log, committed at `now_ms`. Each peer of the target holds `target_before`,
    /// and its store the source, until it applies the entry; then the store's source peer
    /// goes and the target peer's safe ts drops to the smaller of the two (TiKV's
    /// `merge_safe_ts`), its follower read cache is reset, and items from before the merge
    /// are ignored. The target leader's resolved ts takes the smaller of the two at once.
    pub(crate) fn merge(&mut self, source: &Region, target_before: &Region, now_ms: u64) {
        let (source_id, target_id) = (source.id, target_before.id);
        let stores: Vec<u64> = target_before
            .peers
            .iter()
            .map(|peer| peer.store_id)
            .collect();
        let leader = target_before.leader().map(|peer| peer.store_id);
        let source_resolved = self.resolved_ts(source_id);
        let index = self.append_entry(target_id, &stores, now_ms);
        let target = self.log_mut(target_id);
        target.resolved_ts = target.resolved_ts.min(source_resolved);
        // The source's log ends with the merge; its peers stay until their store applies it.
        self.logs.remove(&source_id);
        for store_id in &stores {
            self.admin
                .entry((target_id, *store_id))
                .or_default()
                .push_back(AdminEntry {
                    index,
                    before: target_before.clone(),
                    kind: AdminKind::CommitMerge { source_id },
                });
            self.admin
                .entry((source_id, *store_id))
                .or_default()
                .push_back(AdminEntry {
                    index: u64::MAX,
                    before: source.clone(),
                    kind: AdminKind::AwaitMerge,
                });
        }
        self.settle(target_id, &stores, leader, index, now_ms);
    }

    /// Appends one entry (committed at `now_ms`) to `region_id`'s log, meeting its peers on
    /// `stores` first; returns the entry's index.
    fn append_entry(&mut self, region_id: u64, stores: &[u64], now_ms: u64) -> u64 {
        for store_id in stores {
            self.progress_mut(region_id, *store_id);
        }
        let log = self.log_mut(region_id);
        log.commit_index += 1;
        let index = log.commit_index;
        log.entries.push_back((index, now_ms));
        index
    }

    /// After an admin entry at `index`: the leader applies it now, the others as far as
    /// their lag lets them by `now_ms`.
    fn settle(
        &mut self,
        region_id: u64,
        stores: &[u64],
        leader: Option<u64>,
        index: u64,
        now_ms: u64,
    ) {
        if let Some(leader) = leader {
            self.advance_applied(region_id, leader, index);
        }
        for store_id in stores {
            if Some(*store_id) != leader {
                self.catch_up(region_id, *store_id, now_ms);
            }
        }
    }

    /// Makes `store_id` apply the splits that create its peer of `region_id`, if it has not
    /// yet (the peer is about to act, which only a created peer can).
    pub(super) fn create_by_split(&mut self, region_id: u64, store_id: u64) {
        // Bounded: each pass applies one parent's split, and splits nest finitely.
        for _ in 0..64 {
            if !self.not_created.contains(&(region_id, store_id)) {
                return;
            }
            // The innermost split still missing: the parent of the region, or of its parent...
            let mut wanted = region_id;
            let mut creator = None;
            for _ in 0..64 {
                let Some((parent, index)) = self.creator_of(wanted, store_id) else {
                    break;
                };
                creator = Some((parent, index));
                if !self.not_created.contains(&(parent, store_id)) {
                    break;
                }
                wanted = parent;
            }
            let Some((parent, index)) = creator else {
                // No split creates it: nothing holds it back.
                self.not_created.remove(&(region_id, store_id));
                return;
            };
            self.advance_applied(parent, store_id, index);
        }
    }

    /// The region whose pending split on `store_id` creates `region_id`, with the split's
    /// index.
    fn creator_of(&self, region_id: u64, store_id: u64) -> Option<(u64, u64)> {
        self.admin
            .iter()
            .filter(|((_, store), _)| *store == store_id)
            .find_map(|((parent, _), queue)| {
                queue.iter().find_map(|entry| match &entry.kind {
                    AdminKind::Split { created } if created.contains(&region_id) => {
                        Some((*parent, entry.index))
                    }
                    _ => None,
                })
            })
    }

    /// Moves a peer's applied index to `index` (never back) and applies the admin entries
    /// it now covers.
    pub(super) fn advance_applied(&mut self, region_id: u64, store_id: u64, index: u64) {
        self.progress_mut(region_id, store_id).update_applied(index);
        self.apply_admin(region_id, store_id);
    }

    /// Applies the admin entries of `region_id`'s peer on `store_id` up to its applied
    /// index.
    fn apply_admin(&mut self, region_id: u64, store_id: u64) {
        let applied = self.peer(region_id, store_id).applied_index;
        let key = (region_id, store_id);
        // Bounded by the entries queued.
        while let Some(entry) = self
            .admin
            .get_mut(&key)
            .and_then(|queue| pop_applied(queue, applied))
        {
            match entry.kind {
                AdminKind::Split { created } => {
                    for new_id in created {
                        self.not_created.remove(&(new_id, store_id));
                    }
                }
                AdminKind::CommitMerge { source_id } => {
                    self.destroy_source(source_id, region_id, store_id);
                    let target = self.progress_mut(region_id, store_id);
                    target.last_merge_index = entry.index;
                }
                AdminKind::AwaitMerge => {}
            }
        }
        if self.admin.get(&key).is_some_and(VecDeque::is_empty) {
            self.admin.remove(&key);
        }
    }

    /// `target_id` on `store_id` applied the merge of `source_id`: the
    /// store's source peer first catches up with its own admin entries (TiKV hands the
    /// source's missing log over in `CatchUpLogs`), then goes, and the target's safe ts
    /// drops to the smaller of the two.
    fn destroy_source(&mut self, source_id: u64, target_id: u64, store_id: u64) {
        let key = (source_id, store_id);
        let pending = self.admin.remove(&key).unwrap_or_default();
        for entry in pending {
            if let AdminKind::Split { created } = entry.kind {
                for new_id in created {
                    self.not_created.remove(&(new_id, store_id));
                }
            }
        }
        self.not_created.remove(&key);
        let source_safe_ts = self.peers.remove(&key).map_or(0, |p| p.safe_ts);
        let progress = self.progress_mut(target_id, store_id);
        progress.safe_ts = progress.safe_ts.min(source_safe_ts);
        progress.read_index_safe_ts = 0;
    }

    /// How `store_id` holds `region_id` as of the last catch-up.
    pub(crate) fn view(&self, region_id: u64, store_id: u64) -> PeerView<'_> {
        if self.not_created.contains(&(region_id, store_id)) {
            return PeerView::NotCreated;
        }
        match self
            .admin
            .get(&(region_id, store_id))
            .and_then(VecDeque::front)
        {
            Some(entry) => PeerView::Stale(&entry.before),
            None => PeerView::Current,
        }
    }

    /// Whether `store_id` holds every region as the cluster has it now.
    pub(crate) fn store_is_current(&self, store_id: u64) -> bool {
        !self.admin.keys().any(|(_, store)| *store == store_id)
            && !self.not_created.iter().any(|(_, store)| *store == store_id)
    }

    /// The regions `store_id` holds a stale copy of.
    fn stale_regions(&self, store_id: u64) -> Vec<u64> {
        self.admin
            .keys()
            .filter(|(_, store)| *store == store_id)
            .map(|(region, _)| *region)
            .collect()
    }

    /// Lets every peer on `store_id` that has admin entries to apply catch up as far as
    /// its lag allows at `now_ms` (a split applied there can create peers that have
    /// entries of their own, so this repeats until nothing changes).
    pub(crate) fn catch_up_store(&mut self, store_id: u64, now_ms: u64) {
        let mut last = Vec::new();
        // Bounded: each pass either applies an entry or stops.
        for _ in 0..64 {
            let regions = self.stale_regions(store_id);
            if regions == last {
                return;
            }
            for region_id in &regions {
                self.catch_up(*region_id, store_id, now_ms);
            }
            last = regions;
        }
    }

    /// [`Replicas::catch_up_store`] for every store that holds a stale region.
    pub(crate) fn catch_up_all(&mut self, now_ms: u64) {
        let mut stores: Vec<u64> = self.admin.keys().map(|(_, store)| *store).collect();
        stores.sort_unstable();
        stores.dedup();
        for store_id in stores {
            self.catch_up_store(store_id, now_ms);
        }
    }

    /// Forgets the admin state of peers of `region_id` on stores not in `stores`.
    pub(super) fn retain_admin(&mut self, region_id: u64, stores: &[u64]) {
        self.admin
            .retain(|(region, store), _| *region != region_id || stores.contains(store));
        self.not_created
            .retain(|(region, store)| *region != region_id || stores.contains(store));
    }
}

/// Pops the front entry of `queue` when its index is at most `applied`.
fn pop_applied(queue: &mut VecDeque<AdminEntry>, applied: u64) -> Option<AdminEntry> {
    if queue.front().is_some_and(|entry| entry.index <= applied) {
        queue.pop_front()
    } else {
        None
    }
}

impl Sim {
    /// The region `region_id` as `store_id`'s peer holds it: the current region once the
    /// peer has applied every split and merge of it, the region before the first one it has
    /// not applied otherwise (with the current leader, term and peers, which are not
    /// replicated with a lag here). `None` when the store has no peer of it, or has not
    /// yet applied the split that creates it. As of the last call that moved the clock.
    pub fn store_region(&self, store_id: u64, region_id: u64) -> Option<Region> {
        let live = self.cluster.region(region_id);
        let held = match self.replicas.view(region_id, store_id) {
            PeerView::NotCreated => return None,
            PeerView::Current => live?.clone(),
            PeerView::Stale(before) => {
                let mut held = before.clone();
                if let Some(live) = live {
                    held.peers.clone_from(&live.peers);
                    held.leader_peer_id = live.leader_peer_id;
                    held.term = live.term;
                }
                held
            }
        };
        held.peer_on(store_id).is_some().then_some(held)
    }

    /// Every region `store_id` holds a peer of, as it holds them (see
    /// [`Sim::store_region`]), in key order.
    pub fn store_regions(&self, store_id: u64) -> Vec<Region> {
        let mut ids: Vec<u64> = self
            .cluster
            .regions()
            .filter(|region| region.peer_on(store_id).is_some())
            .map(|region| region.id)
            .collect();
        // Merged-away sources the store has not let go of yet.
        ids.extend(self.replicas.stale_regions(store_id));
        ids.sort_unstable();
        ids.dedup();
        let mut held: Vec<Region> = ids
            .into_iter()
            .filter_map(|id| self.store_region(store_id, id))
            .collect();
        held.sort_by(|a, b| a.start_key.cmp(&b.start_key));
        held
    }
}
