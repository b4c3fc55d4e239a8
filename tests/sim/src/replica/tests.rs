use quickcheck::{QuickCheck, TestResult};

use super::*;

/// Follows TiKV's `RegionReadProgressCore::update_safe_ts` and `update_applied`: an item
/// the peer has applied becomes its safe ts at once, a later one waits until the peer
/// applies its index, a pending item with a larger ts and no larger index replaces the
/// last one's ts, and a smaller ts is dropped.
#[test]
fn read_progress_takes_safe_ts_once_applied_as_tikv_region_read_progress() {
    let mut progress = ReadProgress {
        applied_index: 5,
        ..ReadProgress::default()
    };
    progress.update_safe_ts(4, 100);
    assert_eq!(progress.safe_ts, 100);
    progress.update_safe_ts(8, 200);
    assert_eq!((progress.safe_ts, progress.pending.len()), (100, 1));
    // No more data needed, a larger ts: the pending item's ts moves up.
    progress.update_safe_ts(7, 250);
    assert_eq!(progress.pending.back(), Some(&(8, 250)));
    // A smaller ts than the last pending one is dropped.
    progress.update_safe_ts(9, 240);
    assert_eq!(progress.pending.len(), 1);
    progress.update_safe_ts(10, 300);
    progress.update_applied(8);
    assert_eq!(progress.safe_ts, 250);
    progress.update_applied(12);
    assert_eq!(progress.safe_ts, 300);
    assert!(progress.pending.is_empty());
    // Index or ts 0 carries nothing.
    progress.update_safe_ts(0, 400);
    progress.update_safe_ts(13, 0);
    assert_eq!((progress.safe_ts, progress.pending.len()), (300, 0));
}

/// Follows TiKV's `RegionReadProgressCore::push_back`: past the capacity every other pending
/// item is dropped, keeping old ones that a far-behind peer can still use.
#[test]
fn pending_items_are_thinned_past_the_capacity() {
    let mut progress = ReadProgress::default();
    for i in 1..=READ_PROGRESS_CAP as u64 + 1 {
        progress.update_safe_ts(i * 10, i * 100);
    }
    assert!(progress.pending.len() <= READ_PROGRESS_CAP / 2 + 1);
    assert_eq!(progress.pending.front(), Some(&(10, 100)));
    progress.update_applied(10);
    assert_eq!(progress.safe_ts, 100);
}

/// The safe ts of a peer never moves back and never passes a ts whose index the peer has not
/// applied: what TiKV's `RegionReadProgress` guarantees stale reads.
#[test]
fn safe_ts_never_runs_ahead_of_what_was_applied() {
    fn property(items: Vec<(u8, u16)>, applies: Vec<u8>) -> TestResult {
        let mut progress = ReadProgress::default();
        let mut sent: Vec<(u64, u64)> = Vec::new();
        let mut last_safe = 0;
        let mut applies = applies.into_iter();
        for (index, ts) in items {
            let (index, ts) = (u64::from(index), u64::from(ts));
            progress.update_safe_ts(index, ts);
            sent.push((index, ts));
            if let Some(applied) = applies.next() {
                progress.update_applied(u64::from(applied));
            }
            if progress.safe_ts < last_safe {
                return TestResult::failed();
            }
            last_safe = progress.safe_ts;
            // Some item applied so far carries exactly the safe ts.
            let backed = progress.safe_ts == 0
                || sent.iter().any(|(i, t)| {
                    *i != 0 && *i <= progress.applied_index && *t == progress.safe_ts
                });
            if !backed {
                return TestResult::failed();
            }
        }
        TestResult::passed()
    }
    QuickCheck::new()
        .tests(500)
        .quickcheck(property as fn(Vec<(u8, u16)>, Vec<u8>) -> TestResult);
}

/// A follower with a time lag applies an entry `delay_ms` after its commit; one with an
/// entry lag stays that many entries behind; the leader applies at once.
#[test]
fn followers_apply_with_their_lag() {
    let mut replicas = Replicas::new(ReplicaConfig {
        apply_lag: ApplyLag {
            delay_ms: 100,
            entries: 0,
        },
        ..ReplicaConfig::default()
    });
    replicas.set_apply_lag(
        Some(3),
        ApplyLag {
            delay_ms: 0,
            entries: 2,
        },
    );
    const INIT: u64 = RAFT_INIT_LOG_INDEX;
    for (i, at) in [1_000, 1_010, 1_020, 1_030].into_iter().enumerate() {
        replicas.append(9, 1, &[1, 2, 3], at);
        assert_eq!(replicas.peer(9, 1).applied_index, INIT + i as u64 + 1);
    }
    replicas.catch_up(9, 2, 1_105);
    assert_eq!(replicas.peer(9, 2).applied_index, INIT + 1);
    assert_eq!(replicas.applied_at(9, 2, INIT + 3), Some(1_120));
    replicas.catch_up(9, 2, 1_130);
    assert_eq!(replicas.peer(9, 2).applied_index, INIT + 4);
    replicas.catch_up(9, 3, 5_000);
    assert_eq!(replicas.peer(9, 3).applied_index, INIT + 2);
    assert_eq!(
        replicas.applied_at(9, 3, INIT + 3),
        None,
        "held back by entries"
    );
    // Applied entries are forgotten once every peer has them.
    replicas.prune(9);
    assert_eq!(replicas.logs[&9].entries.front(), Some(&(INIT + 3, 1_020)));
}

/// Follows TiKV's `RegionReadProgress::merge_safe_ts`: after a merge the target's peers
/// hold the smaller safe ts of the two regions and forget their follower read cache.
#[test]
fn merge_takes_the_smaller_safe_ts() {
    let mut replicas = Replicas::new(ReplicaConfig::default());
    replicas.append(1, 1, &[1, 2], 10);
    replicas.append(2, 1, &[1, 2], 10);
    replicas.catch_up(1, 2, 10);
    replicas.catch_up(2, 2, 10);
    let index = RAFT_INIT_LOG_INDEX + 1;
    replicas.progress_mut(1, 2).update_safe_ts(index, 500);
    replicas.progress_mut(2, 2).update_safe_ts(index, 300);
    replicas.progress_mut(2, 2).read_index_safe_ts = 700;
    let region = |id: u64, start: &'static [u8], end: &'static [u8]| crate::cluster::Region {
        id,
        start_key: bytes::Bytes::from_static(start),
        end_key: bytes::Bytes::from_static(end),
        epoch: crate::cluster::RegionEpoch {
            conf_ver: 1,
            version: 2,
        },
        peers: vec![
            crate::cluster::Peer::voter(10 + id, 1),
            crate::cluster::Peer::voter(20 + id, 2),
        ],
        leader_peer_id: 10 + id,
        term: crate::cluster::FIRST_ELECTED_TERM,
    };
    replicas.merge(&region(1, b"", b"m"), &region(2, b"m", b""), 10);
    assert_eq!(replicas.peer(2, 2).safe_ts, 300);
    assert_eq!(replicas.peer(2, 2).read_index_safe_ts, 0);
    assert_eq!(
        replicas.peer(1, 2),
        PeerReadState::default(),
        "the source is gone"
    );
}
