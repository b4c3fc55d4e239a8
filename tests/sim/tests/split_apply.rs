//! Splits and merges reach followers through the region's log: a follower or learner that
//! lags behind still holds the region as it was (old range, old epoch) until it applies the
//! split or merge, and has no peer of the regions a split created until then. Each test
//! names the TiKV function whose behaviour it follows. Time is virtual.

use bytes::Bytes;
use tikv_proto::kvrpcpb::{self, Op};
use tikv_proto::tikvpb::batch_commands_request::request::Cmd as Req;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as Resp;
use tikv_proto::{errorpb, metapb, pdpb};
use tikv_sim::cluster::{ClusterConfig, KeyMode, Region};
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
        Self::with(SimConfig {
            replicas: ReplicaConfig {
                apply_lag: ApplyLag {
                    delay_ms,
                    entries: 0,
                },
                ..ReplicaConfig::default()
            },
            ..SimConfig::default()
        })
    }

    fn with(config: SimConfig) -> Self {
        let mut sim = Sim::new(config).unwrap_or_else(|err| panic!("{err}"));
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

    /// Splits the region holding `key` at `key` (right-derived); returns the new left
    /// region's id.
    fn split(&mut self, key: &str) -> u64 {
        self.sim
            .cluster
            .split_at(&boundary(key))
            .unwrap_or_else(|err| panic!("{err}"))
            .unwrap_or_else(|| panic!("no split at {key}"))
    }

    /// A replica read (read index) of `key` at a fresh timestamp on `store_id`, addressed
    /// with `region`'s id and epoch.
    fn replica_get(&mut self, store_id: u64, region: &Region, key: &str) -> Execution {
        let read_ts = self.ts();
        self.get(store_id, region, key, read_ts, |c| c.replica_read = true)
    }

    /// The answers of waiting reads, in the order they came out.
    fn ready(&mut self) -> Vec<(u64, kvrpcpb::GetResponse)> {
        let mut out = Vec::new();
        while let Some((id, response)) = self.sim.poll_ready() {
            out.push((id, get_response(Execution::Done(response))));
        }
        out
    }

    /// GetStoreSafeTS on `store_id` for the user keys `[start, end)` (empty end: unbounded).
    fn store_safe_ts(&mut self, store_id: u64, start: &str, end: &str) -> u64 {
        let key_range = kvrpcpb::KeyRange {
            start_key: boundary(start),
            end_key: if end.is_empty() {
                Bytes::new()
            } else {
                boundary(end)
            },
        };
        let request = TikvRequest::StoreSafeTs(kvrpcpb::StoreSafeTsRequest {
            key_range: Some(key_range),
        });
        match self.sim.execute(store_id, request, self.now_ms) {
            Execution::Done(TikvResponse::StoreSafeTs(resp)) => resp.safe_ts,
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

/// The regions an EpochNotMatch answer carries (panics on any other answer).
fn epoch_not_match(resp: &kvrpcpb::GetResponse) -> Vec<metapb::Region> {
    region_error(resp)
        .epoch_not_match
        .as_ref()
        .unwrap_or_else(|| panic!("expected EpochNotMatch, got {resp:?}"))
        .current_regions
        .clone()
}

/// The value of a Get answered without error (panics otherwise).
fn value(execution: Execution) -> Bytes {
    let resp = get_response(execution);
    assert!(
        resp.region_error.is_none() && resp.error.is_none(),
        "{resp:?}"
    );
    resp.value
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

/// A cluster of three voters and one learner (store 4), every non-leader `LAG_MS` behind.
fn with_learner(delay_ms: u64) -> Harness {
    Harness::with(SimConfig {
        cluster: ClusterConfig {
            store_count: 4,
            replica_count: 3,
            learner_count: 1,
            ..ClusterConfig::default()
        },
        replicas: ReplicaConfig {
            apply_lag: ApplyLag {
                delay_ms,
                entries: 0,
            },
            ..ReplicaConfig::default()
        },
        ..SimConfig::default()
    })
}

/// Follows raftstore's `check_region_epoch` (util.rs, `compare_region_epoch`: versions
/// compared strictly, `include_region` set) as a follower's and a learner's reads run it:
/// a stale read goes through `LocalReader`, whose own epoch check fails and redirects it
/// to the peer's `PeerFsmDelegate::pre_propose_raft_command`; a replica read is proposed
/// there for read index. Both check the request against the region the peer has applied,
/// and `collect_sibling_region` adds nothing when the request's version is not older than
/// the peer's ("our information is stale"). So a client that learned the split from the
/// leader (or PD) and sends the new epoch to a follower or learner that has not applied it
/// gets `EpochNotMatch` whose `current_regions` is exactly the peer's old region (old id,
/// old range, old epoch), and no read index is asked for. The leader, asked with the old
/// epoch, answers with its new region and the new sibling on its left.
#[test]
fn check_region_epoch_on_lagging_follower_and_learner_answers_the_new_epoch_with_the_old_region() {
    let mut h = with_learner(LAG_MS);
    h.put("a", "1");
    h.put("z", "2");
    let safe_ts = h.resolve();
    let old = h.region("a");
    let left_id = h.split("m");
    h.advance(1);
    let (left, right) = (h.region("a"), h.region("z"));
    assert_eq!(right.id, old.id);
    assert!(right.epoch.version > old.epoch.version);

    for store_id in [2, 4] {
        assert_eq!(
            h.sim.store_region(store_id, old.id),
            Some(old.clone()),
            "store {store_id} has not applied the split"
        );
        let resp = h.stale_get(store_id, &right, "z", safe_ts);
        assert_eq!(epoch_not_match(&resp), [old.to_proto()], "store {store_id}");
        let max_ts_before = h.sim.concurrency.max_ts(1);
        let resp = get_response(h.replica_get(store_id, &right, "z"));
        assert_eq!(epoch_not_match(&resp), [old.to_proto()], "store {store_id}");
        assert_eq!(
            h.sim.concurrency.max_ts(1),
            max_ts_before,
            "refused before the leader was asked for a read index"
        );
        // The old epoch still passes there.
        assert_eq!(h.stale_get(store_id, &old, "a", safe_ts).value, b("1"));
    }
    let resp = h.stale_get(1, &old, "z", safe_ts);
    assert_eq!(epoch_not_match(&resp), [right.to_proto(), left.to_proto()]);

    h.advance(LAG_MS);
    for store_id in [2, 4] {
        assert_eq!(h.sim.store_region(store_id, old.id), Some(right.clone()));
        assert_eq!(h.stale_get(store_id, &right, "z", safe_ts).value, b("2"));
        let resp = h.stale_get(store_id, &old, "z", safe_ts);
        assert_eq!(epoch_not_match(&resp), [right.to_proto(), left.to_proto()]);
        assert_eq!(value(h.replica_get(store_id, &left, "a")), b("1"));
    }
    assert_eq!(left.id, left_id);
}

/// Follows raftstore's `check_region_epoch` after `ApplyDelegate::exec_commit_merge`: the
/// merged region's epoch (version above both) is newer than what a follower that has not
/// applied `CommitMerge` holds for the target, so a read sent with it there gets
/// `EpochNotMatch` carrying only the target as the follower holds it (its range before the
/// merge, its old epoch); the follower's source peer still serves the source's old epoch.
/// Once the follower applied the merge the source is gone there (`RegionNotFound`).
#[test]
fn check_region_epoch_on_lagging_follower_answers_the_merged_epoch_with_the_old_target() {
    let mut h = with_learner(0);
    let left_id = h.split("m");
    h.put("a", "1");
    h.put("z", "2");
    let safe_ts = h.resolve();
    let (left, right) = (h.region("a"), h.region("z"));
    let lag = ApplyLag {
        delay_ms: LAG_MS,
        entries: 0,
    };
    h.sim.set_apply_lag(Some(2), lag);
    h.sim.set_apply_lag(Some(4), lag);
    h.sim
        .cluster
        .merge(left_id, right.id)
        .unwrap_or_else(|err| panic!("{err}"));
    h.advance(1);
    let merged = h.region("a");
    assert_eq!(merged.id, right.id);

    for store_id in [2, 4] {
        let resp = h.stale_get(store_id, &merged, "z", safe_ts);
        assert_eq!(
            epoch_not_match(&resp),
            [right.to_proto()],
            "store {store_id}"
        );
        let resp = get_response(h.replica_get(store_id, &merged, "a"));
        assert_eq!(
            epoch_not_match(&resp),
            [right.to_proto()],
            "store {store_id}"
        );
        assert_eq!(h.stale_get(store_id, &left, "a", safe_ts).value, b("1"));
    }
    // Store 3 has no lag: it applied the merge with the leader.
    assert_eq!(h.stale_get(3, &merged, "a", safe_ts).value, b("1"));
    let resp = h.stale_get(3, &left, "a", safe_ts);
    assert!(region_error(&resp).region_not_found.is_some(), "{resp:?}");

    h.advance(LAG_MS);
    for store_id in [2, 4] {
        let resp = h.stale_get(store_id, &left, "a", safe_ts);
        assert!(region_error(&resp).region_not_found.is_some(), "{resp:?}");
        assert_eq!(h.stale_get(store_id, &merged, "a", safe_ts).value, b("1"));
        assert_eq!(value(h.replica_get(store_id, &merged, "z")), b("2"));
    }
}

/// Follows raftstore's `Peer::read_index` on a follower and `Peer::response_read`, which
/// answers a read once the peer has applied its read index through `handle_read`, and
/// that runs `check_region_epoch(req, region, true)` against the region the peer holds
/// then (no `collect_sibling_region` on this path). A replica read sent with the old
/// epoch to a follower behind the split passes the first check (the follower still holds
/// the old region) and waits for the leader's commit index, which includes the split; once
/// the follower has applied that far it holds the new layout, and the waiting read gets
/// `EpochNotMatch` carrying only the follower's new region (even for a key the region no
/// longer covers: the epoch is checked before the key). Sent again with the new epochs,
/// replica reads there are served, the left region's from the new peer the split created.
#[test]
fn peer_response_read_on_lagging_follower_sees_the_split_once_it_applied_the_read_index() {
    let mut h = Harness::new(LAG_MS);
    h.put("a", "1");
    h.put("z", "2");
    let old = h.region("a");
    let left_id = h.split("m");
    h.advance(1);
    let (left, right) = (h.region("a"), h.region("z"));
    assert_eq!(left.id, left_id);
    h.put("b", "3");

    let Execution::Parked(first) = h.replica_get(2, &old, "a") else {
        panic!("the old epoch passes on the follower and waits for its read index");
    };
    let Execution::Parked(second) = h.replica_get(2, &old, "z") else {
        panic!("the old epoch passes on the follower and waits for its read index");
    };
    let wake_ms = h.sim.next_timeout_ms().expect("a wake-up for the reads");
    h.advance(wake_ms - 1 - h.now_ms);
    assert!(h.ready().is_empty(), "not before the split is applied");
    assert_eq!(h.sim.store_region(2, old.id), Some(old.clone()));

    h.advance(1);
    assert_eq!(h.sim.store_region(2, old.id), Some(right.clone()));
    let answers = h.ready();
    assert_eq!(
        answers.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [first, second]
    );
    for (_, resp) in &answers {
        assert_eq!(epoch_not_match(resp), [right.to_proto()]);
    }

    // The client's retry with the new layout: the right region at once, the left one
    // from the peer the split created (it waits for the write the new leader took).
    assert_eq!(value(h.replica_get(2, &right, "z")), b("2"));
    let waited = match h.replica_get(2, &left, "b") {
        Execution::Parked(_) => {
            let wake_ms = h.sim.next_timeout_ms().expect("a wake-up");
            h.advance(wake_ms - h.now_ms);
            let answers = h.ready();
            assert_eq!(answers.len(), 1);
            answers[0].1.value.clone()
        }
        served => value(served),
    };
    assert_eq!(waited, b("3"));
    assert_eq!(value(h.replica_get(2, &left, "a")), b("1"));
}

/// Follows TiKV's `RegionReadProgress` on a follower (`update_safe_ts` keeps a leader's
/// `(apply index, safe ts)` until the peer has applied that index) and
/// `ApplyDelegate::exec_batch_split` (a split region's peer, and its read progress, come
/// into being on a follower only when it applies the split, with safe ts 0): while a
/// follower has not applied the split, the resolved-ts rounds give the new region's peer
/// there nothing, and the parent keeps the safe ts it had for its old range (the rounds'
/// items wait for an index past the split). `GetStoreSafeTS` on that store answers from the
/// old region. After the split is applied the parent takes the round's safe ts, and the
/// new region's peer gets one at the next round.
#[test]
fn region_read_progress_on_lagging_follower_has_no_safe_ts_for_a_split_region_before_the_split() {
    const SLOW_MS: u64 = DEFAULT_ADVANCE_TS_INTERVAL_MS + DEFAULT_ADVANCE_TS_INTERVAL_MS / 2;
    let mut h = Harness::new(0);
    h.put("a", "1");
    h.put("z", "2");
    let before = h.resolve();
    h.sim.set_apply_lag(
        Some(2),
        ApplyLag {
            delay_ms: SLOW_MS,
            entries: 0,
        },
    );
    // The round that gave `before` ran now; the next ones run an interval apart.
    let rounds_ms = h.now_ms;
    let old = h.region("a");
    let left_id = h.split("m");
    h.advance(1);
    let split_ms = h.now_ms;
    h.advance(rounds_ms + DEFAULT_ADVANCE_TS_INTERVAL_MS - h.now_ms);
    let (left, right) = (h.region("a"), h.region("z"));

    // Store 3 (no lag) has both regions, each with the round's safe ts.
    let round = h.sim.replicas().peer(left_id, 3).safe_ts;
    assert!(round > before);
    assert_eq!(h.sim.replicas().peer(right.id, 3).safe_ts, round);
    // Store 2 has not applied the split: nothing for the new region, the old safe ts for
    // the parent's old range.
    assert_eq!(h.sim.store_region(2, left_id), None);
    assert_eq!(h.sim.replicas().peer(left_id, 2).safe_ts, 0);
    assert_eq!(h.sim.replicas().peer(old.id, 2).safe_ts, before);
    assert_eq!(h.store_safe_ts(2, "a", "b"), before);
    assert_eq!(h.store_safe_ts(3, "a", "b"), round);
    // (Just above the safe ts, so that the refusal asks for no early round.)
    let resp = h.stale_get(2, &old, "a", before + 1);
    assert_eq!(
        region_error(&resp).data_is_not_ready.map(|e| e.safe_ts),
        Some(before)
    );
    assert_eq!(h.stale_get(2, &old, "a", before).value, b("1"));
    let resp = h.stale_get(2, &left, "a", before);
    assert_eq!(
        region_error(&resp).region_not_found,
        Some(errorpb::RegionNotFound { region_id: left_id })
    );

    // The split applied: the parent takes the round's safe ts, the new peer starts at 0.
    h.advance(split_ms + SLOW_MS - h.now_ms);
    assert_eq!(h.sim.store_region(2, left_id), Some(left.clone()));
    assert_eq!(h.sim.replicas().peer(old.id, 2).safe_ts, round);
    assert_eq!(h.sim.replicas().peer(left_id, 2).safe_ts, 0);
    assert_eq!(
        h.store_safe_ts(2, "a", "b"),
        0,
        "no peer with a safe ts there"
    );
    // Refused, and far enough above the safe ts to ask for an early round...
    let resp = h.stale_get(2, &left, "a", before);
    assert_eq!(
        region_error(&resp).data_is_not_ready.map(|e| e.safe_ts),
        Some(0)
    );
    // ...which reaches the new peer, now that it exists there.
    h.advance(1);
    let next = h.sim.replicas().peer(left_id, 2).safe_ts;
    assert!(next > round);
    assert_eq!(h.stale_get(2, &left, "a", next).value, b("1"));
}

/// Follows raftstore's `Peer::heartbeat_pd`: only a region's leader reports it to PD, after
/// it applied the split or merge, so PD's view is the leader's whatever its followers have
/// applied. While a follower still holds the old region, PD answers the new layout.
#[test]
fn heartbeat_pd_reports_the_leaders_regions_while_a_follower_lags() {
    let mut h = Harness::new(LAG_MS);
    let old = h.region("a");
    let left_id = h.split("m");
    h.advance(1);
    assert_eq!(h.sim.store_region(2, old.id), Some(old.clone()));
    let header = Some(pdpb::RequestHeader {
        cluster_id: h.sim.cluster.cluster_id(),
        ..Default::default()
    });
    let pd_region = |h: &Harness, key: &str| {
        h.sim
            .cluster
            .handle_get_region(&pdpb::GetRegionRequest {
                header: header.clone(),
                region_key: boundary(key),
                ..Default::default()
            })
            .unwrap_or_else(|err| panic!("{err:?}"))
            .region
            .unwrap_or_else(|| panic!("PD knows no region for {key}"))
    };
    assert_eq!(pd_region(&h, "a"), h.region("a").to_proto());
    assert_eq!(pd_region(&h, "a").id, left_id);
    assert_eq!(pd_region(&h, "z"), h.region("z").to_proto());
    assert_ne!(pd_region(&h, "z").region_epoch, Some(old.epoch.to_proto()));

    h.advance(LAG_MS);
    h.sim
        .cluster
        .merge(left_id, old.id)
        .unwrap_or_else(|err| panic!("{err}"));
    h.advance(1);
    assert!(
        h.sim.store_region(2, left_id).is_some(),
        "not merged there yet"
    );
    assert_eq!(pd_region(&h, "a"), h.region("z").to_proto());
    assert_eq!(pd_region(&h, "a").id, old.id);
}

/// Follows raftstore's `check_region_epoch` with no apply lag: every peer applies the split
/// and the merge when the leader does, so followers and learners answer as the leader
/// (the new epoch is served, the old one gets `EpochNotMatch` with the region and its new
/// sibling, the merged-away source `RegionNotFound`), as before splits and merges went
/// through the log.
#[test]
fn check_region_epoch_with_zero_lag_every_peer_takes_splits_and_merges_at_once() {
    let mut h = with_learner(0);
    h.put("a", "1");
    h.put("z", "2");
    let safe_ts = h.resolve();
    let old = h.region("a");
    let left_id = h.split("m");
    h.advance(1);
    let (left, right) = (h.region("a"), h.region("z"));
    for store_id in 1..=4 {
        assert_eq!(h.sim.store_region(store_id, left_id), Some(left.clone()));
        assert_eq!(h.sim.store_region(store_id, old.id), Some(right.clone()));
        let resp = h.stale_get(store_id, &old, "z", safe_ts);
        assert_eq!(epoch_not_match(&resp), [right.to_proto(), left.to_proto()]);
        assert_eq!(h.stale_get(store_id, &right, "z", safe_ts).value, b("2"));
        assert_eq!(value(h.replica_get(store_id, &left, "a")), b("1"));
    }
    assert_eq!(h.sim.replicas().peer(left_id, 2).safe_ts, 0, "new region");
    assert_eq!(h.sim.replicas().peer(old.id, 2).safe_ts, safe_ts);

    h.sim
        .cluster
        .merge(left_id, old.id)
        .unwrap_or_else(|err| panic!("{err}"));
    h.advance(1);
    let merged = h.region("a");
    for store_id in 1..=4 {
        assert_eq!(h.sim.store_region(store_id, left_id), None);
        assert_eq!(h.sim.store_region(store_id, old.id), Some(merged.clone()));
        let resp = h.stale_get(store_id, &left, "a", safe_ts);
        assert!(region_error(&resp).region_not_found.is_some(), "{resp:?}");
        assert_eq!(value(h.replica_get(store_id, &merged, "a")), b("1"));
    }
}

/// Follows `ApplyDelegate::exec_batch_split` with a follower that stays entries behind
/// (`apply-lag-entries`): the split is one entry of the parent's log like a write, so the
/// follower applies it only once the parent's log has moved that many entries past it.
#[test]
fn exec_batch_split_on_a_follower_entries_behind_waits_for_later_entries() {
    let mut h = Harness::with(SimConfig {
        replicas: ReplicaConfig {
            apply_lag: ApplyLag {
                delay_ms: 0,
                entries: 2,
            },
            ..ReplicaConfig::default()
        },
        ..SimConfig::default()
    });
    let old = h.region("a");
    let left_id = h.split("m");
    h.advance(1);
    assert_eq!(h.sim.store_region(2, old.id), Some(old.clone()));
    assert_eq!(h.sim.store_region(2, left_id), None);
    // A write to the new left region moves another log, not the parent's.
    h.put("a", "1");
    h.advance(1);
    assert_eq!(h.sim.store_region(2, left_id), None);
    // A transaction on the parent's range appends two entries (prewrite, commit).
    h.put("z", "2");
    h.advance(1);
    assert_eq!(h.sim.store_region(2, old.id), Some(h.region("z")));
    assert_eq!(h.sim.store_region(2, left_id), Some(h.region("a")));
}
