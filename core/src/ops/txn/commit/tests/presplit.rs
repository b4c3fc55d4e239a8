//! Pre-splitting regions a large transaction would overload, before its prewrite.

use super::*;

fn pre_split_options(keys: usize, size: u64) -> CommitOptions {
    CommitOptions {
        knobs: CommitKnobs {
            pre_split_detect_threshold: Some(keys),
            pre_split_size_threshold: Some(size),
            ..CommitKnobs::default()
        },
        ..CommitOptions::default()
    }
}

/// TiKV's answer to a split at `count` keys of region 2: the new regions 100, 101, ... to
/// the left, the original last.
fn split_answer(count: usize) -> StoreResponse {
    let mut regions: Vec<tikv_proto::metapb::Region> = (0..count)
        .map(|i| tikv_proto::metapb::Region {
            id: 100 + i as u64,
            ..Default::default()
        })
        .collect();
    regions.push(tikv_proto::metapb::Region {
        id: 2,
        ..Default::default()
    });
    StoreResponse::SplitRegion(kvrpcpb::SplitRegionResponse {
        regions,
        ..Default::default()
    })
}

#[test]
fn a_region_over_the_key_threshold_is_split_and_scattered_before_the_prewrite() {
    // client-go `preSplitRegion` with lowered thresholds: 4 keys, 10 bytes per region.
    let mut core = core_with(Config::default());
    let keys = many_keys(10);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    commit(&mut core, request(&keys, pre_split_options(4, 10)));
    let paced = drive_one_at_a_time(
        &mut core,
        &mut |request| match request {
            StoreRequest::SplitRegion(r) => Some(Ok(split_answer(r.split_keys.len()))),
            _ => None,
        },
        &mut |_, _| {},
    );
    let outcome = committed(&paced.events);
    assert_eq!(outcome.mode, CommitMode::TwoPhase);
    // Each key and value is 5 bytes: a split key every second key.
    assert_eq!(paced.seen[0], "split [k001,k003,k005,k007,k009]");
    assert!(paced.seen[1].starts_with("prewrite"), "{:#?}", paced.seen);
    assert_eq!(count(&paced.seen, "split"), 1);
    // The five new regions are scattered, and each scatter waited for.
    assert!(
        paced
            .pd
            .contains(&"pd.ScatterRegion regions=[100, 101, 102, 103, 104]".to_owned()),
        "{:#?}",
        paced.pd
    );
    for region in 100..105 {
        assert!(
            paced
                .pd
                .contains(&format!("pd.GetOperator region={region}")),
            "{:#?}",
            paced.pd
        );
    }
    // The split region left the cache: the prewrite located it again.
    let scatter = paced
        .pd
        .iter()
        .position(|line| line.starts_with("pd.ScatterRegion"))
        .unwrap_or(0);
    assert!(
        paced.pd[scatter..]
            .iter()
            .any(|line| line.starts_with("pd.GetRegion") || line.starts_with("pd.BatchScan")),
        "{:#?}",
        paced.pd
    );
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

#[test]
fn regions_under_the_key_threshold_are_not_split() {
    let mut core = core_with(Config::default());
    let keys = many_keys(3);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    commit(&mut core, request(&keys, pre_split_options(4, 1)));
    let (seen, events) = drive(&mut core, &mut |_| None);
    let _ = committed(&events);
    assert_eq!(count(&seen, "split"), 0, "{seen:#?}");
    // Over the key threshold but under the size threshold: nothing to split at either.
    let mut core = core_with(Config::default());
    let keys = many_keys(6);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    commit(&mut core, request(&keys, pre_split_options(4, 1_000)));
    let (seen, events) = drive(&mut core, &mut |_| None);
    let _ = committed(&events);
    assert_eq!(count(&seen, "split"), 0, "{seen:#?}");
}

#[test]
fn a_failed_pre_split_leaves_the_regions_and_the_commit_goes_on() {
    let mut core = core_with(Config::default());
    let keys = many_keys(10);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    commit(&mut core, request(&keys, pre_split_options(4, 10)));
    let paced = drive_one_at_a_time(
        &mut core,
        &mut |request| match request {
            StoreRequest::SplitRegion(_) => Some(Ok(StoreResponse::SplitRegion(
                kvrpcpb::SplitRegionResponse {
                    errors: vec![kvrpcpb::KeyError {
                        abort: "split refused".to_owned(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ))),
            _ => None,
        },
        &mut |_, _| {},
    );
    let _ = committed(&paced.events);
    assert_eq!(count(&paced.seen, "split"), 1);
    assert_eq!(count(&paced.seen, "prewrite"), 1, "{:#?}", paced.seen);
    // No scatter, no wait.
    assert!(
        !paced
            .pd
            .iter()
            .any(|line| line.starts_with("pd.ScatterRegion") || line.starts_with("pd.GetOperator")),
        "{:#?}",
        paced.pd
    );
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}

#[test]
fn a_commit_abandoned_during_its_pre_split_writes_nothing() {
    let mut core = core_with(Config::default());
    let keys = many_keys(10);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let op = core.handle_command(
        Time::ZERO,
        Command::Txn(TxnCommand::Commit(Box::new(request(
            &keys,
            pre_split_options(4, 10),
        )))),
    );
    // The caller goes away once the split is answered, while the scatter runs.
    let paced = drive_one_at_a_time(
        &mut core,
        &mut |request| match request {
            StoreRequest::SplitRegion(r) => Some(Ok(split_answer(r.split_keys.len()))),
            _ => None,
        },
        &mut |core, answered| {
            if answered == 1 {
                core.cancel(Time::ZERO, op);
            }
        },
    );
    assert!(paced.events.is_empty(), "{:?}", paced.events);
    assert_eq!(paced.seen, ["split [k001,k003,k005,k007,k009]"]);
    assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());
}
