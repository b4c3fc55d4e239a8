//! Reads served by a peer that is not the leader: stale reads checked against the peer's
//! safe ts, replica reads through read index (raftstore's `LocalReader::propose_raft_command`
//! with its `StaleRead` and `ReadIndexReplicaRead` policies, `Peer::read_index` on the
//! follower, and the leader's `ReplicaReadLockChecker`).

use tikv_proto::errorpb;
use tikv_proto::kvrpcpb;

use super::{MIN_ADVANCE_GAP_MS, ReadWait, STALE_READ_NOTIFY_GAP_MS};
use crate::cluster::{LOGICAL_BITS, not_leader};
use crate::sim::Sim;
use crate::tikv::{Execution, TikvRequest};

/// Replica reads that wait for their replica are parked under ids from here up, apart from
/// the lock manager's.
pub const READ_WAIT_ID_BASE: u64 = 1 << 62;

/// What happens to a read that passed the region checks.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ReadGate {
    /// Serve it now.
    Serve,
    /// Refuse it with this region error.
    Refuse(errorpb::Error),
    /// It waits for its replica to apply the read index, parked under this id.
    Wait(u64),
}

/// The region error of a stale read above a peer's safe ts, with the fields TiKV fills
/// (raftstore's `Error::DataIsNotReady` and its message).
pub fn data_is_not_ready(region_id: u64, peer_id: u64, safe_ts: u64) -> errorpb::Error {
    errorpb::Error {
        message: format!("peer {peer_id} is not ready, safe_ts {safe_ts}, region {region_id}"),
        data_is_not_ready: Some(errorpb::DataIsNotReady {
            region_id,
            peer_id,
            safe_ts,
        }),
        ..Default::default()
    }
}

impl Sim {
    /// Decides how `store_id` serves a read of `ctx`'s region at `read_ts` (see the module
    /// docs): the leader serves every read, stale reads included; a follower or learner
    /// serves a stale read at or below its safe ts and refuses it above with
    /// `DataIsNotReady`; a replica read asks the leader for its commit index and waits until
    /// the replica has applied that far.
    pub(crate) fn gate_read(
        &mut self,
        store_id: u64,
        request: &TikvRequest,
        ctx: &kvrpcpb::Context,
        read_ts: u64,
        now_ms: u64,
    ) -> ReadGate {
        // The region as this store holds it (the checks before passed against it).
        let Some(region) = self.store_region(store_id, ctx.region_id) else {
            return ReadGate::Serve;
        };
        let region_id = region.id;
        let is_leader = region
            .leader()
            .is_some_and(|peer| peer.store_id == store_id);
        let peer_id = region.peer_on(store_id).map_or(0, |peer| peer.id);
        if is_leader {
            return ReadGate::Serve;
        }
        self.replicas.catch_up(region_id, store_id, now_ms);
        if ctx.stale_read {
            return self.gate_stale_read(region_id, store_id, peer_id, read_ts, now_ms);
        }
        // A replica read: the leader hands out its commit index as the read index.
        let Some(read_index) = self.read_index(region_id, read_ts) else {
            if let Some(region) = self.cluster.region(region_id) {
                if region.leader().is_none() {
                    return ReadGate::Refuse(not_leader(region));
                }
            }
            // The leader's store is down, or the region was merged away and its leader is
            // gone: the read waits for an answer (or for its peer to go).
            return self.park_read(store_id, region_id, request, None, read_ts);
        };
        let progress = self.replicas.peer(region_id, store_id);
        if progress.applied_index >= read_index {
            self.note_read_index_safe_ts(region_id, store_id, read_ts);
            return ReadGate::Serve;
        }
        self.park_read(store_id, region_id, request, Some(read_index), read_ts)
    }

    /// TiKV's `check_stale_read_safe` on a follower or learner.
    fn gate_stale_read(
        &mut self,
        region_id: u64,
        store_id: u64,
        peer_id: u64,
        read_ts: u64,
        now_ms: u64,
    ) -> ReadGate {
        let progress = self.replicas.peer(region_id, store_id);
        if progress.safe_ts >= read_ts || progress.read_index_safe_ts >= read_ts {
            return ReadGate::Serve;
        }
        let physical = |ts: u64| ts >> LOGICAL_BITS;
        if physical(read_ts) > physical(progress.safe_ts) + STALE_READ_NOTIFY_GAP_MS {
            self.replicas.request_early_round(now_ms);
        }
        ReadGate::Refuse(data_is_not_ready(region_id, peer_id, progress.safe_ts))
    }

    /// The read index of a replica read at `read_ts`, from the region's leader if its store
    /// runs (`None` otherwise). On the way the leader raises its `max_ts` to the read ts, as
    /// TiKV's `ReplicaReadLockChecker` does; the locks it would check are those only in the
    /// leader's memory while an async-commit or 1PC prewrite is being applied, which the
    /// model (applying every write at once) never has.
    fn read_index(&mut self, region_id: u64, read_ts: u64) -> Option<u64> {
        let leader_store = self
            .cluster
            .region(region_id)?
            .leader()
            .map(|peer| peer.store_id)?;
        if !self
            .cluster
            .store(leader_store)
            .is_some_and(|store| store.running)
        {
            return None;
        }
        self.concurrency.raise(leader_store, read_ts);
        Some(self.replicas.commit_index(region_id))
    }

    /// A read index answered while the replica has already applied it also moves the
    /// replica's follower read cache to the read ts (TiKV's `update_read_index_safe_ts`,
    /// when the leader found no in-memory lock in the region).
    fn note_read_index_safe_ts(&mut self, region_id: u64, store_id: u64, read_ts: u64) {
        if read_ts == 0 || read_ts == u64::MAX {
            return;
        }
        let progress = self.replicas.progress_mut(region_id, store_id);
        progress.read_index_safe_ts = progress.read_index_safe_ts.max(read_ts);
    }

    fn park_read(
        &mut self,
        store_id: u64,
        region_id: u64,
        request: &TikvRequest,
        read_index: Option<u64>,
        read_ts: u64,
    ) -> ReadGate {
        let id = self.replicas.next_wait_id();
        self.replicas.waits.insert(
            id,
            ReadWait {
                store_id,
                region_id,
                request: request.clone(),
                read_index,
                read_ts,
            },
        );
        ReadGate::Wait(id)
    }

    /// Serves the replica reads whose replica has caught up by `now_ms` (their answers come
    /// out of [`Sim::poll_ready`]); asks again for the read index of those whose leader was
    /// unreachable. A read whose request no longer passes the region checks (a split, a
    /// removed peer) is answered with that error at once; one whose store stopped is lost
    /// with it.
    pub(crate) fn poll_read_waits(&mut self, now_ms: u64) {
        let ids: Vec<u64> = self.replicas.waits.keys().copied().collect();
        for id in ids {
            let Some(wait) = self.replicas.waits.get(&id).cloned() else {
                continue;
            };
            // The read is checked again against the region as its store now holds it.
            self.replicas.catch_up_store(wait.store_id, now_ms);
            if self.read_wait_still_valid(&wait) && !self.read_wait_caught_up(id, &wait, now_ms) {
                continue;
            }
            self.replicas.waits.remove(&id);
            // A read whose store went down is lost with it: nobody answers it.
            if let Execution::Done(response) =
                self.execute_checked(wait.store_id, wait.request, now_ms, true)
            {
                self.push_ready(id, response);
            }
        }
    }

    /// Whether a waiting read's replica has applied its read index (asking the leader for
    /// the read index first if it had none), or has become the leader.
    fn read_wait_caught_up(&mut self, id: u64, wait: &ReadWait, now_ms: u64) -> bool {
        let read_index = match wait.read_index {
            Some(index) => index,
            None => match self.read_index(wait.region_id, wait.read_ts) {
                Some(index) => {
                    if let Some(stored) = self.replicas.waits.get_mut(&id) {
                        stored.read_index = Some(index);
                    }
                    index
                }
                None => return false,
            },
        };
        let is_leader = self
            .cluster
            .region(wait.region_id)
            .and_then(|region| region.leader())
            .is_some_and(|peer| peer.store_id == wait.store_id);
        self.replicas
            .catch_up(wait.region_id, wait.store_id, now_ms);
        is_leader
            || self
                .replicas
                .peer(wait.region_id, wait.store_id)
                .applied_index
                >= read_index
    }

    /// Whether the waiting read's replica still holds the region with the epoch the read
    /// was sent for (a follower that applies a split after the read's index still serves
    /// it as the old region, as TiKV's does).
    fn read_wait_still_valid(&self, wait: &ReadWait) -> bool {
        let Some(ctx) = wait.request.context() else {
            return false;
        };
        self.store_region(wait.store_id, wait.region_id)
            .is_some_and(|region| {
                ctx.region_epoch
                    .is_some_and(|epoch| epoch.version == region.epoch.version)
            })
            && self
                .cluster
                .store(wait.store_id)
                .is_some_and(|store| store.running)
    }

    /// When the next waiting replica read can be served by time alone (the earliest time a
    /// replica applies a waited-for index).
    pub(crate) fn next_read_wake_ms(&self) -> Option<u64> {
        self.replicas
            .waits
            .values()
            .filter_map(|wait| {
                let index = wait.read_index?;
                self.replicas
                    .applied_at(wait.region_id, wait.store_id, index)
            })
            .min()
    }
}

impl super::Replicas {
    /// A refused stale read far above the safe ts asks for a resolved-ts round now, but no
    /// sooner than [`MIN_ADVANCE_GAP_MS`] (or the interval) after the last one started.
    pub(crate) fn request_early_round(&mut self, now_ms: u64) {
        let gap = MIN_ADVANCE_GAP_MS.min(self.config.advance_ts_interval_ms);
        let earliest = self
            .last_round_ms
            .map_or(now_ms, |last| now_ms.max(last.saturating_add(gap)));
        self.next_round_ms = Some(
            self.next_round_ms
                .map_or(earliest, |next| next.min(earliest)),
        );
    }
}
