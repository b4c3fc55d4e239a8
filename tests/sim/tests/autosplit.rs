//! Automatic region splits by key count and size, on demand and after writes, as TiKV's
//! split checker makes them.

use bytes::Bytes;
use tikv_proto::codec::encode_bytes;
use tikv_proto::kvrpcpb;
use tikv_proto::pdpb;
use tikv_proto::tikvpb::batch_commands_request::request::Cmd as Req;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as Resp;
use tikv_sim::cluster::{SplitPolicy, SplitSettings};
use tikv_sim::tikv::{Execution, TikvRequest, TikvResponse};
use tikv_sim::{Sim, SimConfig};

const NOW_MS: u64 = 1_700_000_000_000;

fn sim_with(policy: SplitPolicy, auto_split: bool) -> Sim {
    let mut sim = Sim::new(SimConfig::default()).unwrap_or_else(|err| panic!("{err}"));
    sim.cluster.set_split_policy(policy);
    sim.set_auto_split(auto_split);
    sim
}

/// A fresh timestamp from the cluster's TSO.
fn ts(sim: &mut Sim) -> u64 {
    let request = pdpb::TsoRequest {
        header: Some(pdpb::RequestHeader {
            cluster_id: sim.cluster.cluster_id(),
            ..Default::default()
        }),
        count: 1,
        dc_location: String::new(),
    };
    let response = sim
        .cluster
        .handle_tso(&request, NOW_MS)
        .unwrap_or_else(|err| panic!("{err}"));
    let stamp = response.timestamp.unwrap_or_default();
    ((stamp.physical as u64) << 18) + stamp.logical as u64
}

fn run(sim: &mut Sim, boundary_key: &[u8], request: impl FnOnce(kvrpcpb::Context) -> Req) -> Resp {
    let (store, context) = sim
        .leader_context(boundary_key)
        .unwrap_or_else(|| panic!("no leader for {boundary_key:?}"));
    match sim.execute(store, TikvRequest::Batch(request(context)), NOW_MS) {
        Execution::Done(TikvResponse::Batch(response)) => response,
        other => panic!("unexpected execution {other:?}"),
    }
}

/// Commits `keys` (all in one region) in one transaction: prewrite, then commit.
fn commit(sim: &mut Sim, keys: &[Bytes]) {
    let start_ts = ts(sim);
    let boundary = encode_bytes(&keys[0]);
    let primary = keys[0].clone();
    let mutations: Vec<kvrpcpb::Mutation> = keys
        .iter()
        .map(|key| kvrpcpb::Mutation {
            op: kvrpcpb::Op::Put as i32,
            key: key.clone(),
            value: Bytes::from_static(b"value"),
            ..Default::default()
        })
        .collect();
    let prewrite = run(sim, &boundary, |context| {
        Req::Prewrite(kvrpcpb::PrewriteRequest {
            context: Some(context),
            mutations,
            primary_lock: primary,
            start_version: start_ts,
            lock_ttl: 3000,
            ..Default::default()
        })
    });
    let Resp::Prewrite(prewrite) = prewrite else {
        panic!("prewrite answered {prewrite:?}");
    };
    assert!(
        prewrite.region_error.is_none() && prewrite.errors.is_empty(),
        "{prewrite:?}"
    );
    let commit_ts = ts(sim);
    let commit = run(sim, &boundary, |context| {
        Req::Commit(kvrpcpb::CommitRequest {
            context: Some(context),
            keys: keys.to_vec(),
            start_version: start_ts,
            commit_version: commit_ts,
            ..Default::default()
        })
    });
    let Resp::Commit(commit) = commit else {
        panic!("commit answered {commit:?}");
    };
    assert!(
        commit.region_error.is_none() && commit.error.is_none(),
        "{commit:?}"
    );
}

fn read(sim: &mut Sim, key: &Bytes) -> Option<Bytes> {
    let version = ts(sim);
    let response = run(sim, &encode_bytes(key), |context| {
        Req::Get(kvrpcpb::GetRequest {
            context: Some(context),
            key: key.clone(),
            version,
            ..Default::default()
        })
    });
    let Resp::Get(get) = response else {
        panic!("get answered {response:?}");
    };
    assert!(get.region_error.is_none() && get.error.is_none(), "{get:?}");
    (!get.not_found).then_some(get.value)
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("k{i:03}"))
}

/// Region start keys after the first, in boundary space.
fn boundaries(sim: &Sim) -> Vec<Bytes> {
    sim.cluster
        .regions()
        .skip(1)
        .map(|region| region.start_key.clone())
        .collect()
}

/// Follows TiKV's `split_check::keys::Checker` driven by the split-check tick: a region is
/// cut once it holds `region-max-keys` committed versions, into pieces of
/// `region-split-keys`, so keys written in order leave pieces of exactly 10.
#[test]
fn txn_writes_split_into_pieces_of_split_keys_as_tikv_keys_checker() {
    let mut sim = sim_with(
        SplitPolicy::by_keys(10).unwrap_or_else(|e| panic!("{e}")),
        true,
    );
    for i in 0..100 {
        commit(&mut sim, &[key(i)]);
    }
    let expected: Vec<Bytes> = (1..10)
        .map(|piece| Bytes::from(encode_bytes(&key(piece * 10))))
        .collect();
    assert_eq!(boundaries(&sim), expected);
    // Every key is still readable through the region that now holds it.
    for i in 0..100 {
        assert_eq!(
            read(&mut sim, &key(i)),
            Some(Bytes::from_static(b"value")),
            "{i}"
        );
    }
}

/// Follows TiKV's `split_check::keys::Checker`: nothing happens below `region-max-keys`
/// committed versions; at the max the region is cut after `region-split-keys`.
#[test]
fn split_by_size_cuts_only_from_max_keys_on_as_tikv_keys_checker() {
    let mut sim = sim_with(
        SplitPolicy::by_keys(10).unwrap_or_else(|e| panic!("{e}")),
        false,
    );
    commit(&mut sim, &(0..14).map(key).collect::<Vec<_>>());
    let region = sim.cluster.regions().next().map_or(0, |r| r.id);
    assert_eq!(sim.split_by_size(region, NOW_MS), Ok(Vec::new()));
    assert_eq!(sim.cluster.region_count(), 1);
    commit(&mut sim, &[key(14)]);
    let created = sim
        .split_by_size(region, NOW_MS)
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(created.len(), 1);
    assert_eq!(boundaries(&sim), vec![Bytes::from(encode_bytes(&key(10)))]);
    // Several versions of one key count as several: 20 versions of a single key cut the
    // region once, at that key (the left part is empty); after that the cut would be the
    // region's own start, so no further split follows.
    let mut single = sim_with(
        SplitPolicy::by_keys(10).unwrap_or_else(|e| panic!("{e}")),
        false,
    );
    for _ in 0..20 {
        commit(&mut single, &[key(7)]);
    }
    let region = single.cluster.regions().next().map_or(0, |r| r.id);
    let created = single
        .split_by_size(region, NOW_MS)
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(created.len(), 1);
    assert_eq!(
        boundaries(&single),
        vec![Bytes::from(encode_bytes(&key(7)))]
    );
    assert_eq!(
        single.split_by_size(region, NOW_MS),
        Ok(Vec::new()),
        "a region holding versions of one key cannot be cut further"
    );
}

/// Follows TiKV's keys checker, which counts write-CF entries only: raw data never splits a
/// region by keys, only by size (`split_check::size::Checker`).
#[test]
fn raw_writes_split_by_size_only_as_tikv_split_checkers() {
    let put = |sim: &mut Sim, i: usize| {
        let raw_key = Bytes::from(format!("raw{i:04}"));
        let response = run(sim, &raw_key.clone(), |context| {
            Req::RawPut(kvrpcpb::RawPutRequest {
                context: Some(context),
                key: raw_key,
                value: Bytes::from(vec![b'v'; 93]),
                ..Default::default()
            })
        });
        assert!(
            matches!(&response, Resp::RawPut(r) if r.error.is_empty()),
            "{response:?}"
        );
    };
    let mut by_keys = sim_with(
        SplitPolicy::by_keys(2).unwrap_or_else(|e| panic!("{e}")),
        true,
    );
    for i in 0..50 {
        put(&mut by_keys, i);
    }
    assert_eq!(by_keys.cluster.region_count(), 1);

    // 100-byte entries (7-byte key + 93-byte value), pieces of 1,000 bytes once 1,500 are
    // stored: the size checker cuts at the 11th entry of each piece.
    let policy = SplitPolicy::from_settings(&SplitSettings {
        region_split_size: Some(1000),
        region_split_check_diff: Some(1),
        ..SplitSettings::default()
    })
    .unwrap_or_else(|err| panic!("{err}"));
    let mut by_size = sim_with(policy, true);
    for i in 0..50 {
        put(&mut by_size, i);
    }
    let expected: Vec<Bytes> = [10, 20, 30, 40]
        .iter()
        .map(|i| Bytes::from(format!("raw{i:04}")))
        .collect();
    assert_eq!(boundaries(&by_size), expected);
}

/// Follows TiKV's `SplitCheckTrigger::should_skip`: a region is checked again only once
/// enough was written to it since its last check (here a sixteenth of `region-split-keys`
/// keys, 100), so a region can sit above the max until then.
#[test]
fn split_check_waits_for_enough_writes_as_tikv_split_check_trigger() {
    let policy = SplitPolicy::by_keys(1600).unwrap_or_else(|e| panic!("{e}")); // max 2,400
    assert_eq!(policy.check_diff_keys(), 100);
    let mut sim = sim_with(policy, true);
    commit(&mut sim, &(0..2399).map(key_wide).collect::<Vec<_>>());
    assert_eq!(
        sim.cluster.region_count(),
        1,
        "2,399 versions are below the max"
    );
    // One more version reaches the max, but the check waits: this transaction wrote two
    // keys' worth (prewrite and commit) since the last check.
    commit(&mut sim, &[key_wide(2399)]);
    assert_eq!(sim.cluster.region_count(), 1);
    // 49 more transactions make 100 written keys: the next check runs and cuts.
    for i in 0..48 {
        commit(&mut sim, &[key_wide(2400 + i)]);
        assert_eq!(sim.cluster.region_count(), 1, "after {} more", i + 1);
    }
    commit(&mut sim, &[key_wide(2448)]);
    assert_eq!(sim.cluster.region_count(), 2);
    assert_eq!(
        boundaries(&sim),
        vec![Bytes::from(encode_bytes(&key_wide(1600)))]
    );
}

fn key_wide(i: usize) -> Bytes {
    Bytes::from(format!("w{i:05}"))
}

/// Follows TiKV's `KeysCheckObserver::add_checker` (and `SizeCheckObserver::add_checker`):
/// a due check scans the region only when its approximate key count (or size) has reached
/// the max; below it, the check ends without reading the region. The first check of a
/// region scans (its size is not known yet), later ones trust the size measured then plus
/// what was written since, until that estimate reaches the max; a split makes the pieces
/// unknown again.
#[test]
fn split_check_scans_only_near_the_max_as_tikv_split_check_observers() {
    let policy = SplitPolicy::by_keys(1600).unwrap_or_else(|e| panic!("{e}")); // max 2,400
    let mut sim = sim_with(policy, true);
    // Each transaction writes 100 keys: its prewrite and its commit each make a check due.
    commit(&mut sim, &(0..100).map(key_wide).collect::<Vec<_>>());
    assert_eq!(sim.split_scans(), 1, "the first check measures the region");
    for batch in 1..6 {
        let keys: Vec<Bytes> = (batch * 100..(batch + 1) * 100).map(key_wide).collect();
        commit(&mut sim, &keys);
    }
    // 12 checks were due; the estimate (about 1,100 keys) stayed below the max.
    assert_eq!(sim.split_scans(), 1);
    // The estimate counts a prewrite and its commit, so it reaches 2,400 before the region
    // holds 2,400 versions: a scan measures the truth (no split yet) and the estimate
    // restarts from it.
    for batch in 6..13 {
        let keys: Vec<Bytes> = (batch * 100..(batch + 1) * 100).map(key_wide).collect();
        commit(&mut sim, &keys);
    }
    assert_eq!(sim.split_scans(), 2);
    assert_eq!(sim.cluster.region_count(), 1);
    // Closer to the max the estimate reaches it sooner after each scan; past the max for
    // real, a scan cuts, and each piece is scanned once as the split checker re-checks what
    // it split.
    for batch in 13..25 {
        let keys: Vec<Bytes> = (batch * 100..(batch + 1) * 100).map(key_wide).collect();
        commit(&mut sim, &keys);
    }
    assert_eq!(sim.cluster.region_count(), 2);
    assert_eq!(
        boundaries(&sim),
        vec![Bytes::from(encode_bytes(&key_wide(1600)))]
    );
    let after_split = sim.split_scans();
    // Every key has its committed version: nothing was lost by skipping scans.
    for i in (0..2500).step_by(97) {
        assert_eq!(
            read(&mut sim, &key_wide(i)),
            Some(Bytes::from_static(b"value"))
        );
    }
    // The split measured both pieces: writes to the right one do not scan it again.
    for batch in 25..28 {
        let keys: Vec<Bytes> = (batch * 100..(batch + 1) * 100).map(key_wide).collect();
        commit(&mut sim, &keys);
    }
    assert_eq!(sim.split_scans(), after_split);
}
