//! The periodic side of replica state: TiKV's resolved-ts worker (`AdvanceTsWorker` and
//! `Resolver::resolve`), the stores' min-resolved-ts reports to PD
//! (`report_min_resolved_ts` in raftstore, `CheckAndUpdateMinResolvedTS` in PD), and
//! `GetStoreSafeTS` (the check-leader worker's `get_range_safe_ts`).

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use super::REPORT_INTERVAL_MS;
use crate::concurrency::txn_range;
use crate::mvcc::TxnState;
use crate::sim::Sim;
use crate::tikv::{Execution, TikvResponse};

/// What a region's leader needs to resolve: where it is and who holds it.
struct RegionView {
    id: u64,
    start_key: Bytes,
    end_key: Bytes,
    leader_store: Option<u64>,
    voter_stores: Vec<u64>,
    peer_stores: Vec<u64>,
}

impl Sim {
    /// Runs the resolved-ts rounds and min-resolved-ts reports due by `now_ms`, oldest
    /// first. After a long quiet spell only the last two intervals' worth run: with nothing
    /// changed in between, the later rounds and reports supersede the earlier ones.
    pub(crate) fn run_replica_work(&mut self, now_ms: u64) {
        let interval = self.replicas.config.advance_ts_interval_ms;
        if self.replicas.next_round_ms.is_none() {
            // The first time the clock is known: the workers start now.
            self.replicas.next_round_ms = Some(now_ms.saturating_add(interval));
            self.replicas.next_report_ms = Some(now_ms.saturating_add(REPORT_INTERVAL_MS));
            return;
        }
        let floor = now_ms.saturating_sub(interval.max(REPORT_INTERVAL_MS).saturating_mul(2));
        skip_to(&mut self.replicas.next_round_ms, floor, interval);
        skip_to(&mut self.replicas.next_report_ms, floor, REPORT_INTERVAL_MS);
        // Bounded: each pass moves one of the two schedules forward by at least 1 ms.
        for _ in 0..10_000 {
            let round = self.replicas.next_round_ms.unwrap_or(u64::MAX);
            let report = self.replicas.next_report_ms.unwrap_or(u64::MAX);
            if round.min(report) > now_ms {
                return;
            }
            if round <= report {
                self.resolved_ts_round(round);
                self.replicas.last_round_ms = Some(round);
                self.replicas.next_round_ms = Some(round.saturating_add(interval));
            } else {
                self.report_min_resolved_ts(report);
                self.replicas.next_report_ms = Some(report.saturating_add(REPORT_INTERVAL_MS));
            }
        }
    }

    /// One round of every store's resolved-ts worker at `at_ms`: take a timestamp from the
    /// TSO (none while it is paused or PD has no leader: the round resolves nothing), raise every running
    /// store's `max_ts` to it, then resolve each region whose leader runs and still has a
    /// quorum of running voters, and send `(commit index, resolved ts)` to its other peers
    /// on running stores.
    fn resolved_ts_round(&mut self, at_ms: u64) {
        if self.cluster.is_tso_paused() || self.cluster.pd_leader().is_none() {
            return;
        }
        // Below every timestamp the TSO hands out later.
        let min_ts = self.cluster.ts_floor(at_ms).to_u64();
        let running: Vec<u64> = self
            .cluster
            .stores()
            .filter(|store| store.running)
            .map(|store| store.id)
            .collect();
        for store_id in &running {
            self.concurrency.raise(*store_id, min_ts);
        }
        for view in self.region_views() {
            let Some(leader_store) = view.leader_store.filter(|id| running.contains(id)) else {
                continue;
            };
            let up = view
                .voter_stores
                .iter()
                .filter(|id| running.contains(id))
                .count();
            if up * 2 <= view.voter_stores.len() {
                continue;
            }
            let oldest = self.oldest_lock_ts(&view.start_key, &view.end_key, leader_store);
            let candidate = oldest.map_or(min_ts, |ts| ts.min(min_ts));
            let replicas = &mut self.replicas;
            let log = replicas.log_mut(view.id);
            log.resolved_ts = log.resolved_ts.max(candidate);
            let (index, resolved) = (log.commit_index, log.resolved_ts);
            replicas.became_leader(view.id, leader_store);
            replicas
                .progress_mut(view.id, leader_store)
                .update_safe_ts(index, resolved);
            for store_id in &view.peer_stores {
                if *store_id == leader_store {
                    continue;
                }
                replicas.catch_up(view.id, *store_id, at_ms);
                // A stopped store gets no word from the leader, nor does one that has not
                // created its peer yet (it drops the leader's messages).
                if running.contains(store_id)
                    && !replicas.not_created.contains(&(view.id, *store_id))
                {
                    replicas
                        .progress_mut(view.id, *store_id)
                        .update_safe_ts(index, resolved);
                }
            }
            replicas.retain_peers(view.id, &view.peer_stores);
            replicas.prune(view.id);
        }
    }

    /// The oldest lock that keeps the region's resolved ts back (TiKV's
    /// `Resolver::oldest_transaction`): the smallest start ts of a Put or Delete lock, and
    /// for a pipelined transaction's locks one below the `min_commit_ts` the leader's
    /// transaction status cache knows (one below the start ts when it knows nothing; a
    /// transaction it knows finished holds nothing back).
    fn oldest_lock_ts(&self, start: &Bytes, end: &Bytes, leader_store: u64) -> Option<u64> {
        let (start, end) = txn_range(start, end);
        let locks = self.mvcc.resolver_locks(&start, &end);
        let cache = self.concurrency.txn_status_cache(leader_store);
        let large = locks.large_txns.iter().filter_map(|start_ts| {
            match cache.and_then(|cache| cache.get(*start_ts)) {
                None => Some(start_ts.saturating_sub(1)),
                Some(TxnState::Ongoing { min_commit_ts }) => Some(min_commit_ts.saturating_sub(1)),
                Some(TxnState::Committed { .. } | TxnState::RolledBack) => None,
            }
        });
        locks.oldest.into_iter().chain(large).min()
    }

    fn region_views(&self) -> Vec<RegionView> {
        self.cluster
            .regions()
            .map(|region| RegionView {
                id: region.id,
                start_key: region.start_key.clone(),
                end_key: region.end_key.clone(),
                leader_store: region.leader().map(|peer| peer.store_id),
                voter_stores: region
                    .peers
                    .iter()
                    .filter(|peer| peer.role != tikv_proto::metapb::PeerRole::Learner)
                    .map(|peer| peer.store_id)
                    .collect(),
                peer_stores: region.peers.iter().map(|peer| peer.store_id).collect(),
            })
            .collect()
    }

    /// The smallest non-zero safe ts among `store_id`'s peers of regions overlapping
    /// `[start, end)` (region-boundary space, empty = unbounded), after they applied what
    /// they could by `now_ms`; 0 when none has one (TiKV's `get_range_safe_ts` and
    /// `get_min_resolved_ts`).
    fn store_min_safe_ts(&mut self, store_id: u64, start: &[u8], end: &[u8], now_ms: u64) -> u64 {
        self.replicas.catch_up_store(store_id, now_ms);
        // The regions as the store holds them (a follower behind a split has the old one).
        let regions: Vec<u64> = self
            .store_regions(store_id)
            .iter()
            .filter(|region| overlaps(&region.start_key, &region.end_key, start, end))
            .map(|region| region.id)
            .collect();
        let mut min = None;
        for region_id in regions {
            self.replicas.catch_up(region_id, store_id, now_ms);
            let safe_ts = self.replicas.peer(region_id, store_id).safe_ts;
            if safe_ts != 0 {
                min = Some(min.map_or(safe_ts, |m: u64| m.min(safe_ts)));
            }
        }
        min.unwrap_or(0)
    }

    /// Every running store reports its min resolved ts to PD at `at_ms`; PD then moves the
    /// cluster's min resolved ts up to the smallest report of the stores that lead at least
    /// one region (never down, and not at all while no such store has reported a value).
    fn report_min_resolved_ts(&mut self, at_ms: u64) {
        let stores: Vec<(u64, bool)> = self
            .cluster
            .stores()
            .filter(|store| !store.is_tombstone())
            .map(|store| (store.id, store.running))
            .collect();
        for (store_id, running) in &stores {
            if *running {
                let value = self.store_min_safe_ts(*store_id, &[], &[], at_ms);
                self.replicas.reported.insert(*store_id, value);
            }
        }
        let leaders: Vec<u64> = stores
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !self.cluster.led_by(*id).is_empty())
            .collect();
        let candidate = leaders
            .iter()
            .map(|id| self.replicas.reported_min_resolved_ts(*id))
            .min();
        if let Some(candidate) = candidate {
            let pd = &mut self.replicas.pd_min_resolved_ts;
            *pd = (*pd).max(candidate);
        }
    }

    /// GetStoreSafeTS on `store_id`: the smallest non-zero safe ts of its peers in the key
    /// range (region-boundary space; empty = every region), 0 when none has one. Fails as
    /// UNAVAILABLE while the store is stopped.
    pub(crate) fn store_safe_ts(
        &mut self,
        store_id: u64,
        req: &kvrpcpb::StoreSafeTsRequest,
        now_ms: u64,
    ) -> Execution {
        if !self
            .cluster
            .store(store_id)
            .is_some_and(|store| store.running)
        {
            return Execution::Failed(tikv_proto::status::Status::new(
                tikv_proto::status::Code::Unavailable,
                format!("store {store_id} is not running"),
            ));
        }
        self.observe_cluster(now_ms);
        let range = req.key_range.clone().unwrap_or_default();
        let safe_ts = self.store_min_safe_ts(store_id, &range.start_key, &range.end_key, now_ms);
        Execution::Done(TikvResponse::StoreSafeTs(kvrpcpb::StoreSafeTsResponse {
            safe_ts,
        }))
    }
}

/// Moves a schedule at or before `floor` to its last tick before `floor` (keeping its
/// phase), so that long quiet spells cost nothing.
fn skip_to(next: &mut Option<u64>, floor: u64, period: u64) {
    if let Some(at) = next {
        if period > 0 && at.saturating_add(period) <= floor {
            let ticks = (floor - *at) / period;
            *at += ticks * period;
        }
    }
}

/// Whether the region `[region_start, region_end)` overlaps `[start, end)` (empty ends are
/// unbounded).
fn overlaps(region_start: &[u8], region_end: &[u8], start: &[u8], end: &[u8]) -> bool {
    let before_end = end.is_empty() || region_start < end;
    let after_start = region_end.is_empty() || region_end > start;
    before_end && after_start
}
