//! Shared pessimistic locks through the request path, with TiKV's lock-waiting queues, and
//! the transaction status cache fed by BroadcastTxnStatus.

mod support;

use tikv_proto::kvrpcpb::{self, Op, prewrite_request::PessimisticAction};
use tikv_sim::mvcc::TxnState;

use support::txn::{
    TxnHarness, lock_req, locked, pessimistic_prewrite, shared, timeout, write_conflict,
};

/// Follows TiKV's `LockWaitQueues::pop_for_waking_up`: when the head of a key's queue asks
/// for a shared lock, every shared-lock waiter right behind it is woken with it; the
/// exclusive waiter and those behind it wait for the delayed wake-up.
#[test]
fn shared_waiters_are_woken_together() {
    let mut h = TxnHarness::new();
    h.must_lock(lock_req(&["k"], "k", 5, 5));
    let t10 = h.must_park(shared(lock_req(&["k"], "a", 10, 10)));
    let t20 = h.must_park(shared(lock_req(&["k"], "b", 20, 20)));
    let t30 = h.must_park(lock_req(&["k"], "c", 30, 30));
    let t40 = h.must_park(shared(lock_req(&["k"], "d", 40, 40)));
    h.must_rollback(&["k"], 5);
    let answers = h.answers();
    assert_eq!(
        answers.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![t10, t20]
    );
    for (_, resp) in &answers {
        assert_eq!(write_conflict(resp), (5, 0));
    }
    h.advance(20);
    assert_eq!(h.answered_ids(), vec![t30, t40]);
}

/// Follows TiKV's release of shared locks (`commit` / `rollback_shared_lock` report a
/// released lock only when the last holder leaves) and the shrink-only protocol: the
/// exclusive request that made the set shrink-only waits for every holder, and is woken
/// when the last one is gone.
#[test]
fn exclusive_waiter_is_woken_when_the_last_shared_holder_leaves() {
    let mut h = TxnHarness::new();
    h.must_lock(shared(lock_req(&["k"], "p1", 10, 10)));
    h.must_lock(shared(lock_req(&["k"], "p2", 20, 20)));
    // The first exclusive request makes the set shrink-only and is refused at once.
    let resp = h.lock_done(lock_req(&["k"], "x", 30, 30));
    assert_eq!(locked(&resp).lock_type, Op::SharedLock as i32);
    // A newcomer may not join any more: it waits like the exclusive retry.
    let t40 = h.must_park(shared(lock_req(&["k"], "y", 40, 40)));
    let t30 = h.must_park(lock_req(&["k"], "x", 30, 30));

    // T10 prewrites and commits its sub-lock: T20 still holds the key.
    h.must_prewrite(pessimistic_prewrite(
        &[
            (Op::Put, "p1", "v", PessimisticAction::DoPessimisticCheck),
            (
                Op::SharedLock,
                "k",
                "",
                PessimisticAction::DoPessimisticCheck,
            ),
        ],
        "p1",
        10,
        10,
    ));
    h.must_commit(&["p1", "k"], 10, 15);
    assert!(h.answers().is_empty());
    let holders: Vec<u64> = h.scan_lock(100, 0)[0]
        .shared_lock_infos
        .iter()
        .map(|l| l.lock_version)
        .collect();
    assert_eq!(holders, vec![20]);

    // T20 gives up: the key is free, the smallest waiter (T30) is woken first.
    h.must_rollback(&["k"], 20);
    let answers = h.answers();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, t30);
    assert_eq!(write_conflict(&answers[0].1), (20, 0));
    h.advance(20);
    assert_eq!(h.answered_ids(), vec![t40]);
    // The committed sub-lock left a Lock record: reads see the older value (none).
    let get = h.get("k", 100);
    assert!(get.not_found && get.error.is_none());
}

/// Follows TiKV's `check_ts_conflict_si`: a read is not blocked by shared locks, while a
/// prewrite of another transaction is, and a request that may not wait for them is answered
/// KeyIsLocked at once.
#[test]
fn shared_locks_block_writers_not_readers() {
    let mut h = TxnHarness::new();
    h.must_lock(shared(lock_req(&["k"], "p", 10, 10)));
    assert!(h.get("k", u64::MAX).error.is_none());
    let resp = h.lock_done(timeout(shared(lock_req(&["k"], "q", 20, 20)), -1));
    assert!(resp.errors.is_empty(), "shared locks admit other holders");
    let resp = h.prewrite(pessimistic_prewrite(
        &[(Op::Put, "k", "v", PessimisticAction::SkipPessimisticCheck)],
        "k",
        30,
        30,
    ));
    let lock = resp.errors[0].locked.clone().expect("locked");
    assert_eq!(lock.shared_lock_infos.len(), 2);
}

/// Follows TiKV's `future_broadcast_txn_status` (`Storage::update_txn_status_cache`) and the
/// cache read in `Prewriter::process_write`: a store told that a transaction committed
/// handles a late duplicate of its pessimistic prewrite as a retry, which succeeds without
/// writing a lock.
#[test]
fn broadcast_txn_status_makes_late_prewrite_a_retry() {
    let mut h = TxnHarness::new();
    let late = || {
        pessimistic_prewrite(
            &[(Op::Put, "i", "v", PessimisticAction::SkipPessimisticCheck)],
            "r",
            10,
            10,
        )
    };
    // Txn 10 locks its row "r", prewrites it and its index key "i", and is committed by
    // a resolver (so the store learns nothing of its status).
    h.must_lock(lock_req(&["r"], "r", 10, 10));
    h.must_prewrite(pessimistic_prewrite(
        &[
            (Op::Put, "r", "v", PessimisticAction::DoPessimisticCheck),
            (Op::Put, "i", "v", PessimisticAction::SkipPessimisticCheck),
        ],
        "r",
        10,
        10,
    ));
    h.sim.mvcc.resolve_lock(&kvrpcpb::ResolveLockRequest {
        start_version: 10,
        commit_version: 20,
        ..Default::default()
    });
    assert_eq!(h.sim.txn_status(1, 10), None);

    h.broadcast(
        "r",
        vec![kvrpcpb::TxnStatus {
            start_ts: 10,
            commit_ts: 20,
            is_completed: true,
            ..Default::default()
        }],
    );
    assert_eq!(
        h.sim.txn_status(1, 10),
        Some(TxnState::Committed { commit_ts: 20 })
    );
    let resp = h.prewrite(late());
    assert!(resp.errors.is_empty(), "{resp:?}");
    assert!(h.scan_lock(u64::MAX, 0).is_empty(), "no stale lock");
}

/// Follows TiKV's `TxnStatusCache`, one per store's `Storage`: a `BroadcastTxnStatus` teaches
/// the store it was sent to and no other, so after the leader moves the same late
/// duplicate prewrite is handled normally and leaves a stale lock (the gap TiKV's
/// `txn_status_cache` module docs describe, which the client closes by broadcasting to
/// every store).
#[test]
fn txn_status_cache_is_kept_per_store() {
    let mut h = TxnHarness::new();
    h.must_lock(lock_req(&["r"], "r", 10, 10));
    h.must_prewrite(pessimistic_prewrite(
        &[
            (Op::Put, "r", "v", PessimisticAction::DoPessimisticCheck),
            (Op::Put, "i", "v", PessimisticAction::SkipPessimisticCheck),
        ],
        "r",
        10,
        10,
    ));
    h.sim.mvcc.resolve_lock(&kvrpcpb::ResolveLockRequest {
        start_version: 10,
        commit_version: 20,
        ..Default::default()
    });
    h.broadcast(
        "r",
        vec![kvrpcpb::TxnStatus {
            start_ts: 10,
            commit_ts: 20,
            is_completed: true,
            ..Default::default()
        }],
    );
    assert_eq!(
        h.sim.txn_status(1, 10),
        Some(TxnState::Committed { commit_ts: 20 })
    );
    assert_eq!(h.sim.txn_status(2, 10), None, "store 2 was not told");
    let region = h.sim.cluster.regions().next().map(|r| r.id).unwrap();
    h.sim.cluster.transfer_leader(region, 2).unwrap();
    let resp = h.prewrite(pessimistic_prewrite(
        &[(Op::Put, "i", "v", PessimisticAction::SkipPessimisticCheck)],
        "r",
        10,
        10,
    ));
    assert!(resp.errors.is_empty(), "{resp:?}");
    assert_eq!(h.scan_lock(u64::MAX, 0).len(), 1, "a stale lock on store 2");
}

/// Follows TiKV's `future_broadcast_txn_status` over gRPC: the unary KvBroadcastTxnStatus
/// is served by any running store without a region context, and fills its status cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_txn_status_is_served_over_grpc_without_a_region() {
    use std::time::Duration;
    use tikv_proto::rpc::{CallOptions, call};
    use tikv_proto::tikvpb;
    use tikv_sim::{SimConfig, SimServer};

    let server = SimServer::start(SimConfig::default()).await.unwrap();
    for (_, address) in server.store_addresses() {
        let channel = support::grpc_channel(&address).await;
        call(
            &channel,
            tikvpb::tikv::BROADCAST_TXN_STATUS,
            &kvrpcpb::BroadcastTxnStatusRequest {
                txn_status: vec![kvrpcpb::TxnStatus {
                    start_ts: 10,
                    commit_ts: 20,
                    ..Default::default()
                }],
                ..Default::default()
            },
            CallOptions::with_timeout(Duration::from_secs(5)),
            usize::MAX,
        )
        .await
        .expect("served");
    }
    for (store_id, _) in server.store_addresses() {
        assert_eq!(
            server.with(|sim| sim.txn_status(store_id, 10)),
            Some(TxnState::Committed { commit_ts: 20 }),
            "store {store_id}"
        );
    }
}
