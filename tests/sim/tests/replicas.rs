//! Replicas with state: followers and learners that apply their leader's log with a lag,
//! replica reads through read index, resolved ts and safe ts, stale reads and
//! `DataIsNotReady`, `GetStoreSafeTS`, PD's min resolved ts, writes refused off the leader,
//! and store labels for choosing the closest replica. Each test names the TiKV or PD
//! function whose behaviour it follows. Time is virtual: every call carries `now_ms`.

use bytes::Bytes;
use tikv_proto::errorpb;
use tikv_proto::kvrpcpb::{self, Op};
use tikv_proto::tikvpb::batch_commands_request::request::Cmd as Req;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as Resp;
use tikv_sim::cluster::{ClusterConfig, KeyMode, LOGICAL_BITS};
use tikv_sim::http::HttpRequest;
use tikv_sim::replica::{
    ApplyLag, DEFAULT_ADVANCE_TS_INTERVAL_MS, RAFT_INIT_LOG_INDEX, ReplicaConfig,
};
use tikv_sim::tikv::{Execution, TikvRequest, TikvResponse};
use tikv_sim::{Sim, SimConfig};

const NOW_MS: u64 = 1_700_000_000_000;
const INTERVAL_MS: u64 = DEFAULT_ADVANCE_TS_INTERVAL_MS;

fn b(key: &str) -> Bytes {
    Bytes::copy_from_slice(key.as_bytes())
}

/// One simulated cluster on a virtual clock.
struct Harness {
    sim: Sim,
    now_ms: u64,
}

impl Harness {
    fn new(replicas: ReplicaConfig) -> Self {
        Self::with(SimConfig {
            replicas,
            ..SimConfig::default()
        })
    }

    fn with(config: SimConfig) -> Self {
        let mut sim = Sim::new(config).unwrap_or_else(|err| panic!("{err}"));
        // The stores' workers start with the clock.
        sim.handle_timeout(NOW_MS);
        Self {
            sim,
            now_ms: NOW_MS,
        }
    }

    fn lagging(delay_ms: u64, entries: u64) -> Self {
        Self::new(ReplicaConfig {
            apply_lag: ApplyLag { delay_ms, entries },
            ..ReplicaConfig::default()
        })
    }

    /// Moves the clock and runs what is due.
    fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
        self.sim.handle_timeout(self.now_ms);
    }

    fn ts(&mut self) -> u64 {
        self.sim
            .cluster
            .allocate_ts(1, self.now_ms)
            .unwrap_or_else(|err| panic!("{err}"))
            .to_u64()
    }

    fn region_id(&self, key: &str) -> u64 {
        self.sim
            .cluster
            .region_by_key(&KeyMode::Encoded.to_boundary(key.as_bytes()))
            .map(|region| region.id)
            .unwrap_or_else(|| panic!("no region for {key}"))
    }

    /// A context for `key`'s region addressed to its peer on `store_id`.
    fn ctx(&self, key: &str, store_id: u64) -> kvrpcpb::Context {
        let region = self
            .sim
            .cluster
            .region(self.region_id(key))
            .unwrap_or_else(|| panic!("no region for {key}"));
        let peer = region
            .peer_on(store_id)
            .unwrap_or_else(|| panic!("no peer on store {store_id}"))
            .to_proto();
        let meta = region.to_proto();
        kvrpcpb::Context {
            region_id: meta.id,
            region_epoch: meta.region_epoch,
            peer: Some(peer),
            ..Default::default()
        }
    }

    fn leader_store(&self, key: &str) -> u64 {
        self.sim
            .cluster
            .region(self.region_id(key))
            .and_then(|region| region.leader())
            .map(|peer| peer.store_id)
            .unwrap_or_else(|| panic!("no leader for {key}"))
    }

    fn execute(&mut self, store_id: u64, request: TikvRequest) -> Execution {
        self.sim.execute(store_id, request, self.now_ms)
    }

    fn run(&mut self, store_id: u64, cmd: Req) -> Resp {
        match self.execute(store_id, TikvRequest::Batch(cmd)) {
            Execution::Done(TikvResponse::Batch(resp)) => resp,
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    /// Prewrites `mutations` as `start_ts` on the leader (all in one region).
    fn prewrite(
        &mut self,
        mutations: Vec<kvrpcpb::Mutation>,
        primary: &str,
        start_ts: u64,
        edit: impl FnOnce(&mut kvrpcpb::PrewriteRequest),
    ) {
        let key = String::from_utf8_lossy(&mutations[0].key).into_owned();
        let leader = self.leader_store(&key);
        let mut req = kvrpcpb::PrewriteRequest {
            context: Some(self.ctx(&key, leader)),
            mutations,
            primary_lock: b(primary),
            start_version: start_ts,
            lock_ttl: 3_000,
            min_commit_ts: start_ts + 1,
            ..Default::default()
        };
        edit(&mut req);
        match self.run(leader, Req::Prewrite(req)) {
            Resp::Prewrite(resp) => {
                assert!(
                    resp.errors.is_empty() && resp.region_error.is_none(),
                    "{resp:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    fn commit(&mut self, keys: &[&str], start_ts: u64, commit_ts: u64) {
        let leader = self.leader_store(keys[0]);
        let req = kvrpcpb::CommitRequest {
            context: Some(self.ctx(keys[0], leader)),
            keys: keys.iter().map(|key| b(key)).collect(),
            start_version: start_ts,
            commit_version: commit_ts,
            ..Default::default()
        };
        match self.run(leader, Req::Commit(req)) {
            Resp::Commit(resp) => {
                assert!(
                    resp.error.is_none() && resp.region_error.is_none(),
                    "{resp:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// Writes `key = value` in one transaction; returns its commit ts.
    fn put(&mut self, key: &str, value: &str) -> u64 {
        let start_ts = self.ts();
        self.prewrite(vec![put(key, value)], key, start_ts, |_| {});
        let commit_ts = self.ts();
        self.commit(&[key], start_ts, commit_ts);
        commit_ts
    }

    /// A Get of `key` at `version` sent to `store_id`, with the context edited.
    fn get(
        &mut self,
        store_id: u64,
        key: &str,
        version: u64,
        edit: impl FnOnce(&mut kvrpcpb::Context),
    ) -> Execution {
        let mut ctx = self.ctx(key, store_id);
        edit(&mut ctx);
        let req = kvrpcpb::GetRequest {
            context: Some(ctx),
            key: b(key),
            version,
            ..Default::default()
        };
        self.execute(store_id, TikvRequest::Batch(Req::Get(req)))
    }

    /// A Get that must be answered at once.
    fn get_now(
        &mut self,
        store_id: u64,
        key: &str,
        version: u64,
        edit: impl FnOnce(&mut kvrpcpb::Context),
    ) -> kvrpcpb::GetResponse {
        get_response(self.get(store_id, key, version, edit))
    }

    fn stale_get(&mut self, store_id: u64, key: &str, version: u64) -> kvrpcpb::GetResponse {
        self.get_now(store_id, key, version, |ctx| ctx.stale_read = true)
    }

    /// Answers of parked requests, in order.
    fn ready(&mut self) -> Vec<(u64, TikvResponse)> {
        std::iter::from_fn(|| self.sim.poll_ready()).collect()
    }

    fn safe_ts(&self, key: &str, store_id: u64) -> u64 {
        self.sim
            .replicas()
            .peer(self.region_id(key), store_id)
            .safe_ts
    }

    fn store_safe_ts(&mut self, store_id: u64) -> u64 {
        let request = TikvRequest::StoreSafeTs(kvrpcpb::StoreSafeTsRequest::default());
        match self.execute(store_id, request) {
            Execution::Done(TikvResponse::StoreSafeTs(resp)) => resp.safe_ts,
            other => panic!("{other:?}"),
        }
    }
}

fn put(key: &str, value: &str) -> kvrpcpb::Mutation {
    kvrpcpb::Mutation {
        op: Op::Put as i32,
        key: b(key),
        value: b(value),
        ..Default::default()
    }
}

fn get_response(execution: Execution) -> kvrpcpb::GetResponse {
    match execution {
        Execution::Done(TikvResponse::Batch(Resp::Get(resp))) => resp,
        other => panic!("expected a Get answer, got {other:?}"),
    }
}

fn parked(execution: Execution) -> u64 {
    match execution {
        Execution::Parked(id) => id,
        other => panic!("expected the read to wait, got {other:?}"),
    }
}

fn data_is_not_ready(resp: &kvrpcpb::GetResponse) -> errorpb::DataIsNotReady {
    resp.region_error
        .as_ref()
        .and_then(|err| err.data_is_not_ready)
        .unwrap_or_else(|| panic!("expected DataIsNotReady, got {resp:?}"))
}

/// A `BroadcastTxnStatus` of one status to `store_id`, which must be served.
fn broadcast(h: &mut Harness, store_id: u64, status: kvrpcpb::TxnStatus) {
    let request = TikvRequest::Batch(Req::BroadcastTxnStatus(
        kvrpcpb::BroadcastTxnStatusRequest {
            txn_status: vec![status],
            ..Default::default()
        },
    ));
    assert!(matches!(
        h.execute(store_id, request),
        Execution::Done(TikvResponse::Batch(Resp::BroadcastTxnStatus(_)))
    ));
}

// ---- Replica reads through read index ----

/// Follows raftstore's `Peer::read_index` on a follower and `ready_to_handle_unsafe_replica_read`
/// (the read waits until the follower has applied the leader's commit index), and
/// `ReplicaReadLockChecker::on_step` (the leader raises its own `max_ts` to the read ts): a
/// replica read on a follower that applies 100 ms late waits for the write it must see.
#[test]
fn replica_read_waits_until_the_follower_applied_the_read_index() {
    let mut h = Harness::lagging(100, 0);
    let committed_at = h.now_ms;
    h.put("k", "v1");
    let region = h.region_id("k");
    let two_entries = RAFT_INIT_LOG_INDEX + 2;
    assert_eq!(
        h.sim.replicas().commit_index(region),
        two_entries,
        "prewrite and commit"
    );
    assert_eq!(h.sim.replicas().peer(region, 1).applied_index, two_entries);

    h.advance(10);
    let read_ts = h.ts();
    let id = parked(h.get(2, "k", read_ts, |ctx| ctx.replica_read = true));
    assert_eq!(h.sim.replicas().waiting_reads(), 1);
    assert_eq!(
        h.sim.concurrency.max_ts(1),
        read_ts,
        "the leader saw the read"
    );
    assert_eq!(
        h.sim.concurrency.max_ts(2),
        read_ts,
        "and so did the follower"
    );
    assert_eq!(h.sim.next_timeout_ms(), Some(committed_at + 100));

    h.advance(89);
    assert!(h.ready().is_empty(), "not applied yet");
    h.advance(1);
    let answers = h.ready();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, id);
    let Some((_, TikvResponse::Batch(Resp::Get(resp)))) = answers.into_iter().next() else {
        panic!("expected a Get answer");
    };
    assert_eq!(resp.value, b("v1"));
    assert_eq!(h.sim.next_timeout_ms(), None);
}

/// Follows the same read-index path with a follower kept entries behind: the read waits
/// while the follower has not applied the read index, is served once later writes let it
/// apply that far, and a run-time change of the lag (the fault a test flips) serves the
/// waiting reads at once.
#[test]
fn replica_read_on_a_follower_entries_behind_waits_for_its_lag() {
    let mut h = Harness::new(ReplicaConfig::default());
    h.sim.set_apply_lag(
        Some(3),
        ApplyLag {
            delay_ms: 0,
            entries: 2,
        },
    );
    h.put("a", "1");
    let read_ts = h.ts();
    let first = parked(h.get(3, "a", read_ts, |ctx| ctx.replica_read = true));
    assert_eq!(h.sim.next_timeout_ms(), None, "time alone does not help");
    // Two more entries let the follower apply the read index.
    h.put("b", "2");
    let answers = h.ready();
    assert_eq!(
        answers.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [first]
    );

    let read_ts = h.ts();
    let second = parked(h.get(3, "b", read_ts, |ctx| ctx.replica_read = true));
    h.sim.set_apply_lag(Some(3), ApplyLag::default());
    let answers = h.ready();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, second);
    let TikvResponse::Batch(Resp::Get(resp)) = &answers[0].1 else {
        panic!("{answers:?}");
    };
    assert_eq!(resp.value, b("2"));
}

/// Follows `Peer::read_index` (a learner serves replica reads too) and
/// `RegionReadProgress::update_read_index_safe_ts`: a read index answered while the replica
/// has already applied it moves the replica's follower read cache to the read ts, and a
/// later stale read at or below it is served before any resolved-ts round.
#[test]
fn a_served_replica_read_lets_stale_reads_below_it_through() {
    let mut h = Harness::with(SimConfig {
        cluster: ClusterConfig {
            store_count: 4,
            replica_count: 3,
            learner_count: 1,
            ..ClusterConfig::default()
        },
        ..SimConfig::default()
    });
    h.put("k", "v");
    let read_ts = h.ts();
    let resp = h.get_now(4, "k", read_ts, |ctx| ctx.replica_read = true);
    assert_eq!(resp.value, b("v"), "the learner serves it");
    let region = h.region_id("k");
    assert_eq!(h.sim.replicas().peer(region, 4).read_index_safe_ts, read_ts);
    assert_eq!(h.safe_ts("k", 4), 0, "no round yet");
    assert_eq!(h.stale_get(4, "k", read_ts).value, b("v"));
    let later = h.ts();
    assert!(h.stale_get(4, "k", later).region_error.is_some());
}

/// Follows `check_ts_conflict_si` as the follower's snapshot read applies it after read
/// index, with `ReplicaReadLockChecker` finding no in-memory lock on the leader (the model
/// applies prewrites at once, so a lock is always in the lock column by the time a read
/// comes): a replica read at the maximum timestamp reads past the primary lock of a plain
/// 2PC transaction, and is blocked by a secondary lock and by an async-commit primary.
#[test]
fn replica_read_at_max_ts_meets_locks_as_a_follower_snapshot_does() {
    let mut h = Harness::new(ReplicaConfig::default());
    let old_commit = h.put("p", "old");
    assert!(old_commit > 0);
    let start_ts = h.ts();
    h.prewrite(
        vec![put("p", "new"), put("s", "new")],
        "p",
        start_ts,
        |_| {},
    );
    let replica = |ctx: &mut kvrpcpb::Context| ctx.replica_read = true;
    let resp = h.get_now(2, "p", u64::MAX, replica);
    assert!(resp.error.is_none(), "{resp:?}");
    assert_eq!(resp.value, b("old"));
    let resp = h.get_now(2, "s", u64::MAX, replica);
    let locked = resp.error.and_then(|e| e.locked).expect("KeyIsLocked");
    assert_eq!(locked.lock_version, start_ts);

    let async_ts = h.ts();
    h.prewrite(vec![put("q", "v")], "q", async_ts, |req| {
        req.use_async_commit = true;
    });
    let resp = h.get_now(2, "q", u64::MAX, replica);
    assert!(resp.error.and_then(|e| e.locked).is_some());
    assert_ne!(
        h.sim.concurrency.max_ts(1),
        u64::MAX,
        "max ts never moves max_ts"
    );
}

/// Follows `Peer::read_index` on a follower whose leader does not answer: the read index
/// request gets no reply while the leader's store is down, so the read waits; once the
/// leader runs again it gets its read index and is served.
#[test]
fn replica_read_waits_while_the_leader_is_down() {
    let mut h = Harness::new(ReplicaConfig::default());
    h.put("k", "v");
    h.sim.cluster.stop_store(1).unwrap();
    let read_ts = h.ts();
    let id = parked(h.get(2, "k", read_ts, |ctx| ctx.replica_read = true));
    h.advance(1_000);
    assert!(h.ready().is_empty());
    h.sim.cluster.restart_store(1).unwrap();
    h.advance(1);
    let answers = h.ready();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, id);
}

/// Follows `Peer::read_index`, `ApplyDelegate::exec_batch_split` and the epoch check a
/// read runs when it is finally served (against the follower's own region): a replica read
/// whose follower reaches the read index before it applies a later split is served as the
/// old region; one sent after the split waits for an index past it, and once its follower
/// has applied the split the old epoch gets EpochNotMatch.
#[test]
fn a_waiting_replica_read_meets_a_split() {
    let mut h = Harness::lagging(500, 0);
    let committed_at = h.now_ms;
    h.put("k", "v");
    let old = h.ctx("k", 2);
    let read_ts = h.ts();
    let first = parked(h.get(2, "k", read_ts, |ctx| ctx.replica_read = true));
    h.advance(10);
    h.sim
        .cluster
        .split_at(&KeyMode::Encoded.to_boundary(b"m"))
        .unwrap();
    h.advance(1);
    let split_at = h.now_ms;
    // Sent with the epoch the client still has, after the split: it waits for the split's
    // index.
    let mut req = kvrpcpb::GetRequest {
        context: Some(old),
        key: b("k"),
        version: read_ts,
        ..Default::default()
    };
    if let Some(ctx) = req.context.as_mut() {
        ctx.replica_read = true;
    }
    let second = parked(h.execute(2, TikvRequest::Batch(Req::Get(req))));
    assert_eq!(h.sim.next_timeout_ms(), Some(committed_at + 500));

    h.advance(committed_at + 500 - h.now_ms);
    let answers = h.ready();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, first);
    let TikvResponse::Batch(Resp::Get(resp)) = &answers[0].1 else {
        panic!("{answers:?}");
    };
    assert_eq!(
        resp.value,
        b("v"),
        "served before the follower applied the split"
    );

    h.advance(split_at + 500 - h.now_ms);
    let answers = h.ready();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, second);
    let TikvResponse::Batch(Resp::Get(resp)) = &answers[0].1 else {
        panic!("{answers:?}");
    };
    assert!(
        resp.region_error
            .as_ref()
            .is_some_and(|e| e.epoch_not_match.is_some()),
        "{resp:?}"
    );
}

// ---- Writes off the leader ----

/// Follows raftstore's `Peer::propose` and `RequestInspector::inspect`: only the leader
/// proposes a write, so a write sent to a follower or a learner gets NotLeader with the
/// leader as the hint even when the context asks for a replica or stale read, and nothing is
/// written; ScanLock, whose `replica_read` TiKV's storage clears, gets NotLeader too.
#[test]
fn a_write_sent_to_a_follower_or_learner_gets_not_leader() {
    let mut h = Harness::with(SimConfig {
        cluster: ClusterConfig {
            store_count: 4,
            replica_count: 3,
            learner_count: 1,
            ..ClusterConfig::default()
        },
        ..SimConfig::default()
    });
    let start_ts = h.ts();
    for store in [2, 4] {
        for flag in [0, 1, 2] {
            let mut ctx = h.ctx("k", store);
            ctx.replica_read = flag == 1;
            ctx.stale_read = flag == 2;
            let req = kvrpcpb::PrewriteRequest {
                context: Some(ctx),
                mutations: vec![put("k", "v")],
                primary_lock: b("k"),
                start_version: start_ts,
                lock_ttl: 3_000,
                ..Default::default()
            };
            let Resp::Prewrite(resp) = h.run(store, Req::Prewrite(req)) else {
                panic!("expected a prewrite answer");
            };
            let not_leader = resp
                .region_error
                .and_then(|e| e.not_leader)
                .unwrap_or_else(|| panic!("store {store} flag {flag}: no NotLeader"));
            assert_eq!(not_leader.leader.map(|l| l.store_id), Some(1));
        }
    }
    let mut ctx = h.ctx("k", 2);
    ctx.replica_read = true;
    let Resp::ScanLock(resp) = h.run(
        2,
        Req::ScanLock(kvrpcpb::ScanLockRequest {
            context: Some(ctx),
            max_version: u64::MAX,
            ..Default::default()
        }),
    ) else {
        panic!("expected a ScanLock answer");
    };
    assert!(resp.region_error.and_then(|e| e.not_leader).is_some());
    let region = h.region_id("k");
    assert_eq!(
        h.sim.replicas().commit_index(region),
        RAFT_INIT_LOG_INDEX,
        "nothing was proposed"
    );
}

// ---- Resolved ts, safe ts and stale reads ----

/// Follows raftstore's `ReadDelegate::check_stale_read_safe` and `Error::DataIsNotReady`:
/// a stale read on a follower above its safe ts is refused with the region, the peer and
/// the safe ts; on the leader the same read falls back to a leader read and is served. A
/// stale read moves no store's `max_ts` (`prepare_snap_ctx` skips it).
#[test]
fn stale_read_above_the_safe_ts_is_data_is_not_ready() {
    let mut h = Harness::new(ReplicaConfig::default());
    h.put("k", "v");
    let read_ts = h.ts();
    assert_eq!(
        h.stale_get(1, "k", read_ts).value,
        b("v"),
        "the leader serves it"
    );
    assert!(h.sim.concurrency.max_ts(1) < read_ts);
    let resp = h.stale_get(2, "k", read_ts);
    assert_eq!(h.sim.concurrency.max_ts(2), 0);
    let err = data_is_not_ready(&resp);
    let region = h.region_id("k");
    let peer = h.ctx("k", 2).peer.map(|p| p.id).unwrap_or_default();
    assert_eq!((err.region_id, err.peer_id, err.safe_ts), (region, peer, 0));
    assert_eq!(
        resp.region_error.map(|e| e.message),
        Some(format!(
            "peer {peer} is not ready, safe_ts 0, region {region}"
        ))
    );
}

/// Follows `AdvanceTsWorker::advance_ts_for_regions` and `Resolver::resolve`: every
/// `advance-ts-interval` the leader takes a timestamp from the TSO, raises its store's
/// `max_ts` to it, and resolves to the smaller of it and the oldest Put/Delete lock; the
/// followers take the result as their safe ts (`consume_leader_info`). A lock holds the
/// safe ts below its start ts until it is committed; a pessimistic lock holds nothing back
/// (the resolver tracks only locks that commit data).
#[test]
fn resolved_ts_follows_the_tso_and_stops_at_the_oldest_lock() {
    let mut h = Harness::new(ReplicaConfig::default());
    let written = h.put("k", "v");
    h.advance(INTERVAL_MS);
    let round_ts = h.now_ms << LOGICAL_BITS;
    let region = h.region_id("k");
    assert_eq!(h.sim.replicas().resolved_ts(region), round_ts);
    for store in [1, 2, 3] {
        assert_eq!(h.safe_ts("k", store), round_ts, "store {store}");
        assert!(h.sim.concurrency.max_ts(store) >= round_ts);
    }
    assert_eq!(h.stale_get(2, "k", written).value, b("v"));

    // A pessimistic lock does not hold the resolved ts; a prewrite lock does.
    let pessimistic_ts = h.ts();
    let leader = h.leader_store("k");
    let lock = kvrpcpb::PessimisticLockRequest {
        context: Some(h.ctx("p", leader)),
        mutations: vec![kvrpcpb::Mutation {
            op: Op::PessimisticLock as i32,
            key: b("p"),
            ..Default::default()
        }],
        primary_lock: b("p"),
        start_version: pessimistic_ts,
        for_update_ts: pessimistic_ts,
        lock_ttl: 3_000,
        ..Default::default()
    };
    h.run(leader, Req::PessimisticLock(lock));
    let start_ts = h.ts();
    h.prewrite(vec![put("k", "v2")], "k", start_ts, |_| {});
    h.advance(INTERVAL_MS);
    assert_eq!(h.sim.replicas().resolved_ts(region), start_ts);
    assert_eq!(h.safe_ts("k", 3), start_ts);
    let after = h.ts();
    assert!(h.stale_get(3, "k", after).region_error.is_some());

    let commit_ts = h.ts();
    h.commit(&["k"], start_ts, commit_ts);
    h.advance(INTERVAL_MS);
    // The refused read asked for an early round, 5 s after the last one.
    assert!(h.safe_ts("k", 3) > commit_ts);
    assert_eq!(h.stale_get(3, "k", after).value, b("v"));
    assert_eq!(h.stale_get(3, "k", commit_ts).value, b("v2"));
}

/// Follows `RegionReadProgressCore::update_applied`: a follower that has not applied the
/// index a safe ts was published with keeps its old safe ts until it does.
#[test]
fn a_lagging_follower_takes_the_safe_ts_only_once_it_applied_that_far() {
    let mut h = Harness::new(ReplicaConfig::default());
    h.sim.set_apply_lag(
        Some(3),
        ApplyLag {
            delay_ms: INTERVAL_MS + 5_000,
            entries: 0,
        },
    );
    h.put("k", "v");
    h.advance(INTERVAL_MS);
    let round_ts = h.now_ms << LOGICAL_BITS;
    assert_eq!(h.safe_ts("k", 2), round_ts);
    assert_eq!(h.safe_ts("k", 3), 0, "store 3 has not applied the writes");
    h.advance(4_000);
    // Refused again; store 3 catches up 5 s after the round.
    let read_ts = round_ts;
    assert!(h.stale_get(3, "k", read_ts).region_error.is_some());
    h.advance(1_000);
    assert_eq!(h.stale_get(3, "k", read_ts).value, b("v"));
    assert!(h.safe_ts("k", 3) >= round_ts);
}

/// Follows `check_stale_read_safe`'s `notify_advance_resolved_ts` and the worker's minimum
/// gap between rounds (`DEFAULT_CHECK_LEADER_TIMEOUT_DURATION`): a stale read refused more
/// than 200 ms above the safe ts asks for an early round, which runs 5 s after the last one
/// instead of a whole interval later.
#[test]
fn a_refused_stale_read_asks_for_an_early_round() {
    let mut h = Harness::new(ReplicaConfig::default());
    h.put("k", "v");
    h.advance(INTERVAL_MS);
    let first_round = h.now_ms;
    h.advance(1_000);
    let read_ts = h.ts();
    assert!(h.stale_get(2, "k", read_ts).region_error.is_some());
    h.advance(3_999);
    assert_eq!(h.safe_ts("k", 2), first_round << LOGICAL_BITS);
    h.advance(1);
    assert_eq!(h.safe_ts("k", 2), (first_round + 5_000) << LOGICAL_BITS);
    assert_eq!(h.stale_get(2, "k", read_ts).value, b("v"));
}

/// Follows `Resolver::lookup_min_commit_ts` with the store's `TxnStatusCache`: a pipelined
/// transaction's lock holds the resolved ts one below its start ts until the leader's store
/// learns a larger `min_commit_ts` from `BroadcastTxnStatus`; a broadcast to another store
/// does not help, and once the store knows the transaction committed it holds nothing back.
#[test]
fn pipelined_locks_hold_resolved_ts_at_the_min_commit_ts_the_leader_knows() {
    let mut h = Harness::new(ReplicaConfig::default());
    let start_ts = h.ts();
    let leader = h.leader_store("f");
    let flush = kvrpcpb::FlushRequest {
        context: Some(h.ctx("f", leader)),
        mutations: vec![put("f", "v")],
        primary_key: b("f"),
        start_ts,
        generation: 1,
        lock_ttl: 3_000,
        ..Default::default()
    };
    h.run(leader, Req::Flush(flush));
    let region = h.region_id("f");
    h.advance(INTERVAL_MS);
    assert_eq!(h.sim.replicas().resolved_ts(region), start_ts - 1);

    let min_commit_ts = h.ts();
    let ongoing = kvrpcpb::TxnStatus {
        start_ts,
        min_commit_ts,
        ..Default::default()
    };
    broadcast(&mut h, 2, ongoing);
    h.advance(INTERVAL_MS);
    assert_eq!(
        h.sim.replicas().resolved_ts(region),
        start_ts - 1,
        "store 2 told"
    );
    broadcast(&mut h, leader, ongoing);
    h.advance(INTERVAL_MS);
    assert_eq!(h.sim.replicas().resolved_ts(region), min_commit_ts - 1);
    let commit_ts = h.ts();
    broadcast(
        &mut h,
        leader,
        kvrpcpb::TxnStatus {
            start_ts,
            commit_ts,
            ..Default::default()
        },
    );
    h.advance(INTERVAL_MS);
    assert_eq!(
        h.sim.replicas().resolved_ts(region),
        h.now_ms << LOGICAL_BITS
    );
}

/// Follows TiKV's split (a new region's peers start with a fresh `RegionReadProgress`, safe
/// ts 0), `merge_safe_ts` (the target takes the smaller safe ts) and a restarted store
/// (its read progress is rebuilt from 0).
#[test]
fn splits_merges_and_restarts_reset_safe_ts_as_tikv_does() {
    let mut h = Harness::new(ReplicaConfig::default());
    h.put("a", "1");
    h.put("z", "2");
    h.advance(INTERVAL_MS);
    let round_ts = h.now_ms << LOGICAL_BITS;
    let right = h.region_id("z");
    let left = h
        .sim
        .cluster
        .split_at(&KeyMode::Encoded.to_boundary(b"m"))
        .unwrap()
        .unwrap();
    h.advance(1);
    assert_eq!(h.sim.replicas().peer(left, 2).safe_ts, 0, "new region");
    assert_eq!(h.sim.replicas().peer(right, 2).safe_ts, round_ts);
    let resp = h.stale_get(2, "a", round_ts);
    assert_eq!(data_is_not_ready(&resp).safe_ts, 0);
    assert_eq!(h.stale_get(2, "z", round_ts).value, b("2"));

    h.sim.cluster.merge(left, right).unwrap();
    h.advance(1);
    assert_eq!(h.sim.replicas().peer(right, 2).safe_ts, 0, "min of both");

    h.advance(INTERVAL_MS);
    assert!(h.safe_ts("z", 3) > 0);
    h.sim.cluster.stop_store(3).unwrap();
    h.sim.cluster.restart_store(3).unwrap();
    h.advance(1);
    assert_eq!(h.safe_ts("z", 3), 0, "restarted");
}

/// Follows the resolved-ts worker's failure paths: no timestamp from PD (a paused TSO) means
/// no advance, and a leader that cannot reach a quorum of voters (`LeadershipResolver`)
/// resolves nothing.
#[test]
fn resolved_ts_stands_still_without_tso_or_quorum() {
    let mut h = Harness::new(ReplicaConfig::default());
    h.put("k", "v");
    let region = h.region_id("k");
    h.sim.cluster.set_tso_paused(true);
    h.advance(INTERVAL_MS);
    assert_eq!(h.sim.replicas().resolved_ts(region), 0);
    h.sim.cluster.set_tso_paused(false);
    h.sim.cluster.stop_store(2).unwrap();
    h.sim.cluster.stop_store(3).unwrap();
    h.advance(INTERVAL_MS);
    assert_eq!(h.sim.replicas().resolved_ts(region), 0);
    h.sim.cluster.restart_store(3).unwrap();
    h.advance(INTERVAL_MS);
    assert_eq!(
        h.sim.replicas().resolved_ts(region),
        h.now_ms << LOGICAL_BITS
    );
}

// ---- Store safe ts and PD's min resolved ts ----

/// Follows TiKV's `get_store_safe_ts` (the check-leader worker's `get_range_safe_ts`): the
/// smallest non-zero safe ts among the store's peers in the key range, all regions for an
/// empty range, 0 when none has one; a stopped store fails the call.
#[test]
fn get_store_safe_ts_is_the_smallest_safe_ts_of_the_store() {
    let mut h = Harness::new(ReplicaConfig::default());
    assert_eq!(h.store_safe_ts(2), 0);
    h.put("a", "1");
    h.advance(INTERVAL_MS);
    let first = h.now_ms << LOGICAL_BITS;
    let left = h
        .sim
        .cluster
        .split_at(&KeyMode::Encoded.to_boundary(b"m"))
        .unwrap()
        .unwrap();
    h.advance(1_000);
    // The new left region has no safe ts yet and does not count.
    assert_eq!(h.store_safe_ts(2), first);
    let start_ts = h.ts();
    h.prewrite(vec![put("z", "v")], "z", start_ts, |_| {});
    h.advance(INTERVAL_MS);
    assert_eq!(h.store_safe_ts(2), start_ts, "the right region's lock");
    let range = |start: &str, end: &str| kvrpcpb::StoreSafeTsRequest {
        key_range: Some(kvrpcpb::KeyRange {
            start_key: KeyMode::Encoded.to_boundary(start.as_bytes()),
            end_key: KeyMode::Encoded.to_boundary(end.as_bytes()),
        }),
    };
    let request = TikvRequest::StoreSafeTs(range("a", "b"));
    let Execution::Done(TikvResponse::StoreSafeTs(resp)) = h.execute(2, request) else {
        panic!("expected an answer");
    };
    let left_safe_ts = h.sim.replicas().peer(left, 2).safe_ts;
    assert!(left_safe_ts > start_ts);
    assert_eq!(resp.safe_ts, left_safe_ts, "only the left region");
    h.sim.cluster.stop_store(2).unwrap();
    let request = TikvRequest::StoreSafeTs(kvrpcpb::StoreSafeTsRequest::default());
    assert!(matches!(h.execute(2, request), Execution::Failed(_)));
}

fn pd_get(sim: &Sim, target: &str) -> (u16, String) {
    let request = HttpRequest {
        method: "GET".to_owned(),
        target: target.to_owned(),
        minor_version: 1,
        headers: Vec::new(),
        body: Vec::new(),
    };
    let response = sim.handle_pd_http(&request, "http://pd");
    (
        response.status,
        String::from_utf8_lossy(&response.body).into_owned(),
    )
}

/// Follows raftstore's `report_min_resolved_ts` (each store reports the smallest non-zero
/// safe ts of its peers every second) and PD's `CheckAndUpdateMinResolvedTS` and
/// `GetMinResolvedTS` / `GetStoreMinResolvedTS` handlers: the cluster's value is the
/// smallest report of the stores leading a region and never goes down; a store leading
/// nothing reads as `u64::MAX`; `scope` picks stores.
#[test]
fn pd_min_resolved_ts_comes_from_the_stores_reports() {
    let mut h = Harness::new(ReplicaConfig::default());
    let region = h.region_id("k");
    h.put("k", "v");
    let (status, body) = pd_get(&h.sim, "/pd/api/v1/min-resolved-ts");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"{"is_real_time":true,"min_resolved_ts":0,"persist_interval":"1s","stores_min_resolved_ts":null}"#
    );
    h.advance(INTERVAL_MS);
    let round_ts = h.now_ms << LOGICAL_BITS;
    assert_eq!(h.sim.replicas().pd_min_resolved_ts(), round_ts);
    let (_, body) = pd_get(&h.sim, "/pd/api/v1/min-resolved-ts?scope=cluster");
    let max = u64::MAX;
    assert_eq!(
        body,
        format!(
            r#"{{"is_real_time":true,"min_resolved_ts":{round_ts},"persist_interval":"1s","stores_min_resolved_ts":{{"1":{round_ts},"2":{max},"3":{max}}}}}"#
        )
    );
    let (_, body) = pd_get(&h.sim, "/pd/api/v1/min-resolved-ts?scope=2%2C1");
    assert!(
        body.contains(&format!(r#""min_resolved_ts":{round_ts},"#)),
        "{body}"
    );
    let (_, body) = pd_get(&h.sim, "/pd/api/v1/min-resolved-ts/3");
    assert!(
        body.contains(&format!(r#""min_resolved_ts":{max},"#)),
        "{body}"
    );
    let (status, _) = pd_get(&h.sim, "/pd/api/v1/min-resolved-ts?scope=x");
    assert_eq!(status, 400);

    // Store 2 takes the lead; PD's value does not go down while store 2 reports less.
    h.sim.cluster.transfer_leader(region, 2).unwrap();
    h.sim.set_apply_lag(
        Some(1),
        ApplyLag {
            delay_ms: 0,
            entries: 5,
        },
    );
    h.advance(1_000);
    assert_eq!(h.sim.replicas().pd_min_resolved_ts(), round_ts);
    assert_eq!(h.sim.pd_store_min_resolved_ts(2), round_ts);
    assert_eq!(h.sim.pd_store_min_resolved_ts(1), u64::MAX);
    h.advance(INTERVAL_MS);
    assert!(h.sim.replicas().pd_min_resolved_ts() > round_ts);
}

// ---- Closest replica by store labels ----

/// Follows TiKV's `server.labels` reported in `metapb::Store.labels` (PD's `GetAllStores`)
/// and the follower read a client sends to the replica in its own zone: with labels set at
/// run time, the store labelled `zone=z3` is found from PD's answer and serves a replica
/// read of the region.
#[test]
fn store_labels_pick_the_replica_in_the_clients_zone() {
    let mut h = Harness::new(ReplicaConfig::default());
    for (store, zone) in [(1, "z1"), (2, "z2"), (3, "z3")] {
        h.sim
            .cluster
            .set_store_labels(
                store,
                vec![
                    ("zone".to_owned(), zone.to_owned()),
                    ("host".to_owned(), format!("h{store}")),
                ],
            )
            .unwrap();
    }
    h.put("k", "v");
    let stores = h
        .sim
        .cluster
        .handle_get_all_stores(&tikv_proto::pdpb::GetAllStoresRequest {
            header: Some(tikv_proto::pdpb::RequestHeader {
                cluster_id: h.sim.cluster.cluster_id(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap_or_else(|err| panic!("{err}"))
        .stores;
    let local = stores
        .iter()
        .find(|store| {
            store
                .labels
                .iter()
                .any(|label| label.key == "zone" && label.value == "z3")
        })
        .map(|store| store.id)
        .unwrap_or_else(|| panic!("no store in z3: {stores:?}"));
    assert_eq!(local, 3);
    let read_ts = h.ts();
    let resp = h.get_now(local, "k", read_ts, |ctx| ctx.replica_read = true);
    assert_eq!(resp.value, b("v"));
}
