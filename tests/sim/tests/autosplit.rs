//! Size-based splits: on demand and automatically after writes.

use bytes::Bytes;
use tikv_proto::kvrpcpb;
use tikv_proto::tikvpb::batch_commands_request::request::Cmd as Req;
use tikv_sim::cluster::SplitPolicy;
use tikv_sim::tikv::{Execution, TikvRequest};
use tikv_sim::{Sim, SimConfig};

const NOW_MS: u64 = 1_700_000_000_000;

fn put(sim: &mut Sim, key: &str) {
    let (store, context) = sim
        .leader_context(key.as_bytes())
        .unwrap_or_else(|| panic!("no leader for {key}"));
    let request = TikvRequest::Batch(Req::RawPut(kvrpcpb::RawPutRequest {
        context: Some(context),
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from_static(b"value"),
        ..Default::default()
    }));
    assert!(matches!(
        sim.execute(store, request, NOW_MS),
        Execution::Done(_)
    ));
}

#[test]
fn split_by_size_splits_at_the_middle_key_only_past_the_threshold() {
    let mut sim = Sim::new(SimConfig::default()).unwrap_or_else(|err| panic!("{err}"));
    sim.cluster.set_split_policy(SplitPolicy::by_keys(10));
    for i in 0..10 {
        put(&mut sim, &format!("k{i:02}"));
    }
    let region = sim.cluster.region_by_key(b"k00").map_or(0, |r| r.id);
    assert_eq!(
        sim.split_by_size(region, NOW_MS),
        Ok(None),
        "10 keys is not over 10"
    );
    put(&mut sim, "k10");
    let split = sim
        .split_by_size(region, NOW_MS)
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(split.is_some());
    assert_eq!(sim.cluster.region_count(), 2);
    // The boundary is the middle key (API V1 raw keys are boundaries as they are).
    let right = sim
        .cluster
        .region_by_key(b"k10")
        .map(|r| r.to_proto())
        .unwrap_or_default();
    assert_eq!(right.start_key, Bytes::from_static(b"k05"));
}

#[test]
fn auto_split_keeps_regions_small_under_a_write_load() {
    let mut sim = Sim::new(SimConfig::default()).unwrap_or_else(|err| panic!("{err}"));
    sim.cluster.set_split_policy(SplitPolicy::by_keys(20));
    sim.set_auto_split(true);
    for i in 0..400 {
        put(&mut sim, &format!("key{i:04}"));
    }
    // Every region holds at most the threshold plus the write that tipped it over.
    assert!(
        sim.cluster.region_count() >= 20,
        "{}",
        sim.cluster.region_count()
    );
    for region in sim.cluster.regions() {
        let proto = region.to_proto();
        let stats = sim
            .raw
            .range_stats(&proto.start_key, &proto.end_key, NOW_MS);
        assert!(
            stats.keys <= 21,
            "region {} holds {} keys",
            proto.id,
            stats.keys
        );
    }
}
