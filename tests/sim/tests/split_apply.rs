//! Splits and merges reach followers through the region's log: a follower or learner that
//! lags behind still holds the region as it was (old range, old epoch) until it applies the
//! split or merge, and has no peer of the regions a split created until then. Each test
//! names the TiKV function whose behaviour it follows. Time is virtual.

use bytes::Bytes;
use tikv_proto::errorpb;
use tikv_proto::kvrpcpb::{self, Op};
use tikv_proto::tikvpb::batch_commands_request::request::Cmd as Req;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as Resp;
use tikv_sim::cluster::{KeyMode, Region};
use tikv_sim::replica::{ApplyLag, DEFAULT_ADVANCE_TS_INTERVAL_MS, ReplicaConfig};
use tikv_sim::tikv::{Execution, TikvRequest, TikvResponse};
use tikv_sim::{Sim, SimConfig};

const NOW_MS: u64 = 1_700_000_000_000;
const LAG_MS: u64 = 100;

fn b(key: &str) -> Bytes {
    Bytes::copy_from_slice(key.as_bytes())
}

fn boundary(key: &str) -> Bytes {
    KeyMode::Encoded.to_boundary(key.as_bytes())
}

/// One simulated cluster on a virtual clock, its followers and learners `LAG_MS` behind.
struct Harness {
    sim: Sim,
    now_ms: u64,
}

impl Harness {
    fn new(delay_ms: u64) -> Self {
        let mut sim = Sim::new(SimConfig {
            replicas: ReplicaConfig {
                apply_lag: ApplyLag {
                    delay_ms,
                    entries: 0,
                },
                ..ReplicaConfig::default()
            },
            ..SimConfig::default()
        })
        .unwrap_or_else(|err| panic!("{err}"));
        sim.handle_timeout(NOW_MS);
        Self {
            sim,
            now_ms: NOW_MS,
        }
    }

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

    /// The current region holding `key` (as its leader and PD have it).
    fn region(&self, key: &str) -> Region {
        self.sim
            .cluster
            .region_by_key(&boundary(key))
            .cloned()
            .unwrap_or_else(|| panic!("no region for {key}"))
    }

    fn leader_store(&self, key: &str) -> u64 {
        self.region(key)
            .leader()
            .map(|peer| peer.store_id)
            .unwrap_or_else(|| panic!("no leader for {key}"))
    }

    fn execute(&mut self, store_id: u64, cmd: Req) -> Execution {
        self.sim
            .execute(store_id, TikvRequest::Batch(cmd), self.now_ms)
    }

    /// Writes `key = value` in one transaction through the leader; returns its commit ts.
    fn put(&mut self, key: &str, value: &str) -> u64 {
        let region = self.region(key);
        let leader = self.leader_store(key);
        let start_ts = self.ts();
        let prewrite = kvrpcpb::PrewriteRequest {
            context: Some(ctx(&region, leader)),
            mutations: vec![kvrpcpb::Mutation {
                op: Op::Put as i32,
                key: b(key),
                value: b(value),
                ..Default::default()
            }],
            primary_lock: b(key),
            start_version: start_ts,
            lock_ttl: 3_000,
            ..Default::default()
        };
        match self.execute(leader, Req::Prewrite(prewrite)) {
            Execution::Done(TikvResponse::Batch(Resp::Prewrite(resp))) => {
                assert!(
                    resp.errors.is_empty() && resp.region_error.is_none(),
                    "{resp:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        let commit_ts = self.ts();
        let commit = kvrpcpb::CommitRequest {
            context: Some(ctx(&region, leader)),
            keys: vec![b(key)],
            start_version: start_ts,
            commit_version: commit_ts,
            ..Default::default()
        };
        match self.execute(leader, Req::Commit(commit)) {
            Execution::Done(TikvResponse::Batch(Resp::Commit(resp))) => {
                assert!(
                    resp.error.is_none() && resp.region_error.is_none(),
                    "{resp:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        commit_ts
    }

    /// A Get of `key` at `version` on `store_id`, addressed with `region`'s id and epoch.
    fn get(
        &mut self,
        store_id: u64,
        region: &Region,
        key: &str,
        version: u64,
        edit: impl FnOnce(&mut kvrpcpb::Context),
    ) -> Execution {
        let mut context = ctx(region, store_id);
        edit(&mut context);
        self.execute(
            store_id,
            Req::Get(kvrpcpb::GetRequest {
                context: Some(context),
                key: b(key),
                version,
                ..Default::default()
            }),
        )
    }

    fn stale_get(
        &mut self,
        store_id: u64,
        region: &Region,
        key: &str,
        version: u64,
    ) -> kvrpcpb::GetResponse {
        get_response(self.get(store_id, region, key, version, |c| c.stale_read = true))
    }

    /// A stale-read Scan of everything `region` covers, on `store_id`; returns the keys.
    fn stale_scan(&mut self, store_id: u64, region: &Region, version: u64) -> Vec<Bytes> {
        let mut context = ctx(region, store_id);
        context.stale_read = true;
        let scan = kvrpcpb::ScanRequest {
            context: Some(context),
            start_key: Bytes::new(),
            limit: 100,
            version,
            ..Default::default()
        };
        match self.execute(store_id, Req::Scan(scan)) {
            Execution::Done(TikvResponse::Batch(Resp::Scan(resp))) => {
                assert!(resp.region_error.is_none(), "{resp:?}");
                resp.pairs.into_iter().map(|pair| pair.key).collect()
            }
            other => panic!("{other:?}"),
        }
    }

    /// The replica peers' safe ts after a resolved-ts round.
    fn resolve(&mut self) -> u64 {
        self.advance(DEFAULT_ADVANCE_TS_INTERVAL_MS);
        let region = self.region("a").id;
        let safe_ts = self.sim.replicas().peer(region, 2).safe_ts;
        assert!(safe_ts > 0, "the follower has a safe ts");
        safe_ts
    }
}

/// A context for `region` (its id and epoch) addressed to its peer on `store_id`.
fn ctx(region: &Region, store_id: u64) -> kvrpcpb::Context {
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

fn get_response(execution: Execution) -> kvrpcpb::GetResponse {
    match execution {
        Execution::Done(TikvResponse::Batch(Resp::Get(resp))) => resp,
        other => panic!("expected a Get answer, got {other:?}"),
    }
}

fn region_error(resp: &kvrpcpb::GetResponse) -> &errorpb::Error {
    resp.region_error
        .as_deref()
        .unwrap_or_else(|| panic!("expected a region error, got {resp:?}"))
}

/// Follows TiKV's `ApplyDelegate::exec_batch_split` (each peer changes its region when it
/// applies the split entry) and raftstore's `check_region_epoch` (a request is checked
/// against the peer's own region, strictly): a follower behind the split still serves the
/// old region. A request with the old epoch passes there and reads the whole old range; one
/// with the new epoch gets EpochNotMatch carrying the follower's old region; the region the
/// split created is not on that store yet (RegionNotFound, as TiKV's store drops the new
/// region's messages while they overlap the unsplit one). Once the follower applies the
/// split it answers as the leader does.
#[test]
fn follows_exec_batch_split_a_follower_behind_the_split_still_serves_the_old_region() {
    let mut h = Harness::new(LAG_MS);
    h.put("a", "1");
    h.put("z", "2");
    let safe_ts = h.resolve();
    let old = h.region("a");
    let left_id = h
        .sim
        .cluster
        .split_at(&boundary("m"))
        .unwrap_or_else(|err| panic!("{err}"))
        .unwrap_or_else(|| panic!("no split"));
    h.advance(1);
    let (left, right) = (h.region("a"), h.region("z"));
    assert_eq!((left.id, right.id), (left_id, old.id), "right-derived");

    // The follower still holds the old region; the leader the new one.
    let held = h.sim.store_region(2, old.id).expect("the follower's peer");
    assert_eq!(
        (held.start_key.clone(), held.end_key.clone(), held.epoch),
        (old.start_key.clone(), old.end_key.clone(), old.epoch)
    );
    assert_eq!(h.sim.store_region(2, left_id), None);
    assert_eq!(h.sim.store_region(1, old.id), Some(right.clone()));

    // The old epoch passes on the follower, which answers for its whole old range...
    assert_eq!(h.stale_get(2, &old, "a", safe_ts).value, b("1"));
    assert_eq!(h.stale_scan(2, &old, safe_ts), [b("a"), b("z")]);
    // ...and is refused by the leader, which applied the split.
    let resp = h.stale_get(1, &old, "a", safe_ts);
    let current = &region_error(&resp)
        .epoch_not_match
        .as_ref()
        .expect("EpochNotMatch")
        .current_regions;
    assert_eq!(
        current.iter().map(|r| r.id).collect::<Vec<_>>(),
        [old.id, left_id]
    );

    // The new epoch is ahead of the follower: EpochNotMatch with the region it holds.
    let resp = h.stale_get(2, &right, "z", safe_ts);
    let current = &region_error(&resp)
        .epoch_not_match
        .as_ref()
        .expect("EpochNotMatch")
        .current_regions;
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].region_epoch, Some(old.epoch.to_proto()));
    assert!(current[0].start_key.is_empty() && current[0].end_key.is_empty());
    // A replica read with the new epoch is refused the same way, before any read index.
    let read_ts = h.ts();
    let resp = get_response(h.get(2, &right, "z", read_ts, |c| c.replica_read = true));
    assert!(region_error(&resp).epoch_not_match.is_some());
    // The new region has no peer there yet.
    let resp = get_response(h.get(2, &left, "a", read_ts, |c| c.replica_read = true));
    assert_eq!(
        region_error(&resp).region_not_found,
        Some(errorpb::RegionNotFound { region_id: left_id })
    );

    // Once it applied the split the follower holds what the leader holds.
    h.advance(LAG_MS);
    assert_eq!(
        h.sim.store_region(2, old.id).map(|r| r.epoch),
        Some(right.epoch)
    );
    assert!(h.sim.store_region(2, left_id).is_some());
    let resp = h.stale_get(2, &old, "a", safe_ts);
    assert!(region_error(&resp).epoch_not_match.is_some());
    assert_eq!(h.stale_get(2, &right, "z", safe_ts).value, b("2"));
    // The new region's peer starts with no safe ts, and serves replica reads.
    let resp = h.stale_get(2, &left, "a", safe_ts);
    assert_eq!(
        region_error(&resp).data_is_not_ready.map(|e| e.safe_ts),
        Some(0)
    );
    let read_ts = h.ts();
    let resp = get_response(h.get(2, &left, "a", read_ts, |c| c.replica_read = true));
    assert_eq!(resp.value, b("1"));
}

/// Follows TiKV's `ApplyDelegate::exec_batch_split` on a follower (the new region's peer
/// comes into being there with the region's initial log, when the follower applies the
/// split) and `Peer::read_index` (a replica read waits until the peer has applied the
/// leader's commit index): writes the new region's leader took after the split reach the
/// follower's new peer only after the split itself, each with the follower's lag.
#[test]
fn follows_exec_batch_split_a_new_regions_peer_applies_its_own_log_after_the_split() {
    let mut h = Harness::new(LAG_MS);
    h.put("a", "1");
    h.sim
        .cluster
        .split_at(&boundary("m"))
        .unwrap_or_else(|err| panic!("{err}"));
    h.advance(1);
    let split_at = h.now_ms;
    let left = h.region("a");
    h.advance(10);
    h.put("b", "2");
    let read_ts = h.ts();
    let resp = get_response(h.get(2, &left, "b", read_ts, |c| c.replica_read = true));
    assert!(region_error(&resp).region_not_found.is_some());

    h.advance(split_at + LAG_MS - h.now_ms);
    assert!(h.sim.store_region(2, left.id).is_some(), "split applied");
    let read_ts = h.ts();
    let waiting = h.get(2, &left, "b", read_ts, |c| c.replica_read = true);
    let Execution::Parked(id) = waiting else {
        panic!("expected the read to wait for the new region's log, got {waiting:?}");
    };
    assert_eq!(h.sim.next_timeout_ms(), Some(split_at + 10 + LAG_MS));
    h.advance(10);
    let (answered, response) = h.sim.poll_ready().expect("the read is answered");
    assert_eq!(answered, id);
    let TikvResponse::Batch(Resp::Get(resp)) = response else {
        panic!("{response:?}");
    };
    assert_eq!(resp.value, b("2"));
}

/// Follows TiKV's `ApplyDelegate::exec_commit_merge` (the target's peer takes the merged
/// range when it applies CommitMerge, and its store's source peer goes then) and
/// `RegionReadProgress::merge_safe_ts`: a follower behind the merge still holds the source
/// (serving it with the old epoch) and the target's old range (refusing the merged epoch);
/// after applying the merge the source is gone there too and the target serves the merged
/// range at the smaller safe ts of the two.
#[test]
fn follows_exec_commit_merge_a_follower_behind_the_merge_holds_both_regions() {
    let mut h = Harness::new(0);
    let left_id = h
        .sim
        .cluster
        .split_at(&boundary("m"))
        .unwrap_or_else(|err| panic!("{err}"))
        .unwrap_or_else(|| panic!("no split"));
    h.put("a", "1");
    h.put("z", "2");
    let safe_ts = h.resolve();
    let (left, right) = (h.region("a"), h.region("z"));
    h.sim.set_apply_lag(
        Some(2),
        ApplyLag {
            delay_ms: LAG_MS,
            entries: 0,
        },
    );
    h.sim
        .cluster
        .merge(left_id, right.id)
        .unwrap_or_else(|err| panic!("{err}"));
    h.advance(1);
    let merged = h.region("a");
    assert_eq!(merged.id, right.id);

    // Store 3 has no lag and applied the merge; store 2 has not.
    assert_eq!(h.sim.store_region(3, left_id), None);
    assert_eq!(h.sim.store_region(2, left_id), Some(left.clone()));
    assert_eq!(
        h.sim.store_region(2, right.id).map(|r| r.epoch),
        Some(right.epoch)
    );
    assert_eq!(h.stale_get(2, &left, "a", safe_ts).value, b("1"));
    let resp = h.stale_get(2, &merged, "z", safe_ts);
    let current = &region_error(&resp)
        .epoch_not_match
        .as_ref()
        .expect("EpochNotMatch")
        .current_regions;
    assert_eq!(current[0].start_key, right.start_key);
    let resp = h.stale_get(1, &left, "a", safe_ts);
    assert!(region_error(&resp).region_not_found.is_some());

    h.advance(LAG_MS);
    assert_eq!(h.sim.store_region(2, left_id), None);
    let resp = h.stale_get(2, &left, "a", safe_ts);
    assert!(region_error(&resp).region_not_found.is_some());
    assert_eq!(h.stale_get(2, &merged, "a", safe_ts).value, b("1"));
    assert_eq!(h.sim.replicas().peer(merged.id, 2).safe_ts, safe_ts);
}

/// Follows TiKV's `ApplyDelegate::exec_batch_split` with raft's rule that only an existing
/// peer is elected: when a new region's leadership moves to a store that had not applied
/// the split yet, that store applies the split first, and then leads the new region with
/// the new layout (the parent's new range included).
#[test]
fn follows_exec_batch_split_a_store_that_takes_the_new_regions_lead_applies_the_split_first() {
    let mut h = Harness::new(LAG_MS);
    h.put("a", "1");
    let parent = h.region("a").id;
    let left_id = h
        .sim
        .cluster
        .split_at(&boundary("m"))
        .unwrap_or_else(|err| panic!("{err}"))
        .unwrap_or_else(|| panic!("no split"));
    h.advance(1);
    assert_eq!(h.sim.store_region(2, left_id), None);
    h.sim
        .cluster
        .transfer_leader(left_id, 2)
        .unwrap_or_else(|err| panic!("{err}"));
    h.advance(1);
    assert_eq!(h.sim.store_region(2, left_id), Some(h.region("a")));
    assert_eq!(
        h.sim.store_region(2, parent).map(|r| r.epoch),
        Some(h.region("z").epoch)
    );
    h.put("b", "2");
    let read_ts = h.ts();
    let left = h.region("a");
    let resp = get_response(h.get(2, &left, "b", read_ts, |_| {}));
    assert_eq!(resp.value, b("2"));
}
