//! Lock waiting as TiKV's lock manager does it: capped wait timeouts, wake-up in start ts
//! order, delayed WriteConflict for the other legacy waiters, ForceLock resumption, and the
//! deadlock detector alongside. Everything runs on virtual time.

mod support;

use tikv_proto::kvrpcpb::{
    Op, PessimisticLockKeyResultType as ResultType, prewrite_request::PessimisticAction,
};
use tikv_sim::SimConfig;
use tikv_sim::cluster::ClusterError;
use tikv_sim::lock_manager::{
    DEFAULT_WAIT_FOR_LOCK_TIMEOUT_MS, DEFAULT_WAKE_UP_DELAY_DURATION_MS, PessimisticTxnConfig,
};
use tikv_sim::{Sim, mvcc::key_hash};

use support::txn::{
    TxnHarness, force, lock_req, locked, pessimistic_prewrite, timeout, write_conflict,
};

fn config(wait_for_lock_timeout_ms: u64, wake_up_delay_duration_ms: u64) -> SimConfig {
    SimConfig {
        pessimistic_txn: PessimisticTxnConfig {
            wait_for_lock_timeout_ms,
            wake_up_delay_duration_ms,
        },
        ..SimConfig::default()
    }
}

/// Txn `holder` takes a pessimistic lock on `key` and prewrites a Put there.
fn hold(h: &mut TxnHarness, key: &str, holder: u64) {
    h.must_lock(lock_req(&[key], key, holder, holder));
    h.must_prewrite(pessimistic_prewrite(
        &[(Op::Put, key, "v", PessimisticAction::DoPessimisticCheck)],
        key,
        holder,
        holder,
    ));
}

#[test]
fn defaults_are_tikvs() {
    let config = PessimisticTxnConfig::default();
    assert_eq!(
        (
            config.wait_for_lock_timeout_ms,
            config.wake_up_delay_duration_ms
        ),
        (1000, 20)
    );
    assert_eq!(DEFAULT_WAIT_FOR_LOCK_TIMEOUT_MS, 1000);
    assert_eq!(DEFAULT_WAKE_UP_DELAY_DURATION_MS, 20);
}

/// Follows TiKV's `lock_manager::Config::validate`: a zero wait-for-lock timeout is refused.
#[test]
fn zero_wait_for_lock_timeout_is_refused() {
    let err = Sim::new(config(0, 20)).unwrap_err();
    assert!(matches!(err, ClusterError::InvalidConfig(_)), "{err:?}");
}

/// Follows TiKV's `WaiterManager::normalize_deadline` (`WaitTimeout::into_duration_with_ceiling`):
/// `wait_timeout` 0 waits the configured timeout, a longer one is capped at it, a shorter one
/// is kept; the timed-out request gets KeyIsLocked naming the lock it waited for.
#[test]
fn wait_timeout_is_capped_at_wait_for_lock_timeout() {
    let mut h = TxnHarness::with(config(300, 20));
    hold(&mut h, "k", 5);
    let long = h.must_park(timeout(lock_req(&["k"], "k", 10, 10), 5_000));
    let default = h.must_park(timeout(lock_req(&["k"], "k", 11, 11), 0));
    let short = h.must_park(timeout(lock_req(&["k"], "k", 12, 12), 100));

    h.advance(99);
    assert!(h.answers().is_empty());
    h.advance(1);
    assert_eq!(h.answered_ids(), vec![short]);
    h.advance(199);
    assert!(h.answers().is_empty(), "nobody waits past 300 ms, nor less");
    h.advance(1);
    let answers = h.answers();
    assert_eq!(
        answers.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![long, default]
    );
    for (_, resp) in &answers {
        let lock = locked(resp);
        assert_eq!((lock.lock_version, lock.key.as_ref()), (5, &b"k"[..]));
        assert_eq!(lock.duration_to_last_update_ms, 0, "the lock never changed");
        assert!(resp.results.is_empty());
    }
    assert!(h.sim.lock_manager().is_empty());
    assert_eq!(h.sim.next_timeout_ms(), None);
}

/// Follows TiKV's default wait-for-lock timeout of 1 s, for `wait_timeout` 0 and above it.
#[test]
fn default_wait_for_lock_timeout_is_one_second() {
    let mut h = TxnHarness::new();
    hold(&mut h, "k", 5);
    let parked_at = h.now_ms;
    h.must_park(timeout(lock_req(&["k"], "k", 10, 10), 0));
    h.must_park(timeout(lock_req(&["k"], "k", 11, 11), 60_000));
    assert_eq!(h.sim.next_timeout_ms(), Some(parked_at + 1000));
    h.advance(999);
    assert!(h.answers().is_empty());
    h.advance(1);
    assert_eq!(h.answers().len(), 2);
}

/// Follows TiKV's `LockWaitQueues::pop_for_waking_up`: the queue is a priority queue on
/// start ts, so a release wakes the waiter with the smallest start ts, whatever the arrival
/// order, and a legacy waiter is answered WriteConflict at once with the releasing
/// transaction's start and commit ts.
#[test]
fn release_wakes_smallest_start_ts_first() {
    let mut h = TxnHarness::new();
    hold(&mut h, "k", 5);
    let t30 = h.must_park(lock_req(&["k"], "k", 30, 30));
    let t10 = h.must_park(lock_req(&["k"], "k", 10, 10));
    let t20 = h.must_park(lock_req(&["k"], "k", 20, 20));
    assert_eq!(h.sim.lock_manager().queued_on(b"k"), vec![t10, t20, t30]);

    h.must_commit(&["k"], 5, 7);
    let answers = h.answers();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, t10);
    assert_eq!(write_conflict(&answers[0].1), (5, 7));
    assert_eq!(h.sim.lock_manager().queued_on(b"k"), vec![t20, t30]);
}

/// Follows TiKV's `LockWaitQueues::delayed_notify_all`: after one legacy waiter was woken,
/// the others that were already queued get WriteConflict (naming the same release) once the
/// wake-up delay has passed, not before.
#[test]
fn other_legacy_waiters_get_write_conflict_after_wake_up_delay() {
    let mut h = TxnHarness::with(config(1000, 50));
    hold(&mut h, "k", 5);
    let t10 = h.must_park(lock_req(&["k"], "k", 10, 10));
    let t20 = h.must_park(lock_req(&["k"], "k", 20, 20));
    let t30 = h.must_park(lock_req(&["k"], "k", 30, 30));
    let released_at = h.now_ms;
    h.must_commit(&["k"], 5, 7);
    assert_eq!(h.answered_ids(), vec![t10]);
    assert_eq!(h.sim.next_timeout_ms(), Some(released_at + 50));
    assert_eq!(
        h.sim.lock_manager().delayed_wake_up_at_ms(b"k"),
        Some(released_at + 50)
    );

    h.advance(49);
    assert!(h.answers().is_empty());
    h.advance(1);
    let answers = h.answers();
    assert_eq!(
        answers.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![t20, t30]
    );
    for (_, resp) in &answers {
        assert_eq!(write_conflict(resp), (5, 7));
    }
    assert!(h.sim.lock_manager().is_empty());
}

/// Follows the `legacy_wake_up_index` of TiKV's `KeyLockWaitState`: a delayed wake-up only
/// answers the waiters queued before the wake-up that armed it; later arrivals keep waiting.
#[test]
fn delayed_wake_up_spares_waiters_queued_after_it() {
    let mut h = TxnHarness::new();
    hold(&mut h, "k", 5);
    let t10 = h.must_park(lock_req(&["k"], "k", 10, 10));
    let t20 = h.must_park(lock_req(&["k"], "k", 20, 20));
    h.must_commit(&["k"], 5, 7);
    assert_eq!(h.answered_ids(), vec![t10]);

    // T10 retries and gets the lock; T25 arrives after the wake-up and waits for T10.
    h.advance(5);
    h.must_lock(lock_req(&["k"], "k", 10, 8));
    let t25 = h.must_park(lock_req(&["k"], "k", 25, 25));
    assert_eq!(h.sim.lock_manager().queued_on(b"k"), vec![t20, t25]);

    h.advance(15);
    let answers = h.answers();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, t20);
    assert_eq!(write_conflict(&answers[0].1), (5, 7));
    assert_eq!(h.sim.lock_manager().queued_on(b"k"), vec![t25]);
}

/// Follows TiKV's `delayed_notify_all`, which walks the queue in start ts order and stops at
/// the first waiter queued after the wake-up: a later arrival with a smaller start ts shields
/// the older waiters behind it, which then wait for the next release or their timeout.
#[test]
fn delayed_wake_up_stops_at_a_later_arrival_with_smaller_start_ts() {
    let mut h = TxnHarness::new();
    hold(&mut h, "k", 5);
    let t10 = h.must_park(lock_req(&["k"], "k", 10, 10));
    let t20 = h.must_park(lock_req(&["k"], "k", 20, 20));
    h.must_commit(&["k"], 5, 7);
    assert_eq!(h.answered_ids(), vec![t10]);
    h.advance(5);
    h.must_lock(lock_req(&["k"], "k", 10, 8));
    let t15 = h.must_park(lock_req(&["k"], "k", 15, 15));

    h.advance(15);
    assert!(h.answers().is_empty());
    assert_eq!(h.sim.lock_manager().queued_on(b"k"), vec![t15, t20]);
    assert_eq!(h.sim.lock_manager().delayed_wake_up_at_ms(b"k"), None);
    // The next release wakes the head as usual.
    h.must_rollback(&["k"], 10);
    assert_eq!(h.answered_ids(), vec![t15]);
}

/// Follows TiKV's `handle_delayed_wake_up`: another legacy wake-up on the key before the
/// delayed one fires pushes it back to a full delay after the latest wake-up.
#[test]
fn later_wake_up_pushes_delayed_wake_up_back() {
    let mut h = TxnHarness::new();
    hold(&mut h, "k", 5);
    let t10 = h.must_park(lock_req(&["k"], "k", 10, 10));
    let t20 = h.must_park(lock_req(&["k"], "k", 20, 20));
    let t30 = h.must_park(lock_req(&["k"], "k", 30, 30));
    h.must_commit(&["k"], 5, 7);
    assert_eq!(h.answered_ids(), vec![t10]);

    // 10 ms later T10 locks and rolls back: the release wakes the next head, T20.
    h.advance(5);
    h.must_lock(lock_req(&["k"], "k", 10, 8));
    h.advance(5);
    let second_release_at = h.now_ms;
    h.must_rollback(&["k"], 10);
    let answers = h.answers();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, t20);
    assert_eq!(write_conflict(&answers[0].1), (10, 0));
    assert_eq!(
        h.sim.lock_manager().delayed_wake_up_at_ms(b"k"),
        Some(second_release_at + 20)
    );

    h.advance(10);
    assert!(h.answers().is_empty(), "the first delay is no longer due");
    h.advance(10);
    let answers = h.answers();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, t30);
    assert_eq!(write_conflict(&answers[0].1), (10, 0));
}

/// Follows TiKV's `AcquirePessimisticLockResumed`: a woken ForceLock waiter is not failed
/// but run again, and locks the key with conflict at the releasing commit's ts.
#[test]
fn woken_force_lock_waiter_locks_with_conflict() {
    let mut h = TxnHarness::new();
    hold(&mut h, "k", 5);
    let t10 = h.must_park(force(lock_req(&["k"], "k", 10, 6)));
    h.must_commit(&["k"], 5, 7);
    let answers = h.answers();
    assert_eq!(answers.len(), 1);
    let (id, resp) = &answers[0];
    assert_eq!(*id, t10);
    assert!(resp.errors.is_empty(), "{resp:?}");
    assert_eq!(
        resp.results[0].r#type,
        ResultType::LockResultLockedWithConflict as i32
    );
    assert_eq!(resp.results[0].locked_with_conflict_ts, 7);
    assert!(h.sim.lock_manager().is_empty());
}

/// Follows TiKV's `delayed_notify_all` stopping at the first resumable (ForceLock) entry and
/// `update_lock_wait`: the delayed wake-up resumes the ForceLock waiter, which takes the
/// lock; the legacy waiter behind it keeps waiting, now for that lock, and its timeout says
/// how long ago the lock it waits for changed.
#[test]
fn delayed_wake_up_stops_at_force_lock_waiter() {
    let mut h = TxnHarness::new();
    hold(&mut h, "k", 5);
    let t10 = h.must_park(lock_req(&["k"], "k", 10, 10));
    let t20 = h.must_park(force(lock_req(&["k"], "k", 20, 20)));
    let t30 = h.must_park(lock_req(&["k"], "k", 30, 30));
    let parked_at = h.now_ms;
    h.must_commit(&["k"], 5, 7);
    assert_eq!(h.answered_ids(), vec![t10]);

    h.advance(20);
    let answers = h.answers();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, t20);
    assert!(answers[0].1.errors.is_empty(), "{:?}", answers[0].1);
    assert_eq!(h.sim.lock_manager().queued_on(b"k"), vec![t30]);
    let waiter = h.sim.lock_manager().waiter(t30).expect("T30 waits");
    assert_eq!(waiter.wait.lock_info.lock_version, 20);

    let now = h.now_ms;
    h.advance(parked_at + 1000 - now);
    let answers = h.answers();
    assert_eq!(answers.len(), 1);
    let lock = locked(&answers[0].1);
    assert_eq!(lock.lock_version, 20);
    assert_eq!(lock.duration_to_last_update_ms, 1000 - 20);
}

/// Follows TiKV's scheduler (`process_write_impl`): a ForceLock request that may not wait is
/// answered KeyIsLocked for the whole request, with errors and no per-key results.
#[test]
fn force_lock_without_waiting_answers_errors_and_no_results() {
    let mut h = TxnHarness::new();
    hold(&mut h, "k", 5);
    let resp = h.lock_done(timeout(force(lock_req(&["k"], "k", 10, 10)), -1));
    assert!(resp.results.is_empty(), "{resp:?}");
    assert_eq!(resp.errors.len(), 1);
    assert_eq!(locked(&resp).lock_version, 5);
}

/// Follows TiKV's `LockWaitContext::finish_request`: a ForceLock request that waited and
/// timed out reports the error key-wise too (a `LockResultFailed` result).
#[test]
fn force_lock_wait_timeout_reports_failed_result() {
    let mut h = TxnHarness::with(config(100, 20));
    hold(&mut h, "k", 5);
    h.must_park(force(lock_req(&["k"], "k", 10, 10)));
    h.advance(100);
    let answers = h.answers();
    let resp = &answers[0].1;
    assert_eq!(resp.results.len(), 1);
    assert_eq!(resp.results[0].r#type, ResultType::LockResultFailed as i32);
    assert_eq!(locked(resp).lock_version, 5);
}

/// Follows TiKV's `DetectTable::detect` beside the queues: a wait that closes a cycle is
/// answered Deadlock and never queued; the other waiter keeps its place, and the graph
/// forgets waits that ended.
#[test]
fn deadlock_detection_beside_the_queues() {
    let mut h = TxnHarness::new();
    h.must_lock(lock_req(&["a"], "a", 10, 10));
    h.must_lock(lock_req(&["b"], "b", 20, 20));
    let t10 = h.must_park(lock_req(&["b"], "a", 10, 10));
    let resp = h.lock_done(lock_req(&["a"], "b", 20, 20));
    let deadlock = resp.errors[0].deadlock.clone().expect("deadlock");
    assert_eq!(deadlock.lock_ts, 10);
    assert_eq!(deadlock.deadlock_key_hash, key_hash(b"b"));
    assert!(h.sim.lock_manager().queued_on(b"a").is_empty());
    assert_eq!(h.sim.lock_manager().queued_on(b"b"), vec![t10]);
    assert!(h.sim.mvcc.deadlock_detector().is_waiting(10));

    // T20 gives up: T10 is woken and no longer waits for anybody.
    h.must_rollback(&["b"], 20);
    assert_eq!(h.answered_ids(), vec![t10]);
    assert!(!h.sim.mvcc.deadlock_detector().is_waiting(10));
}

/// Follows TiKV's `WaiterManager::handle_update_wait_for`: when another transaction takes
/// the lock a queued ForceLock request waits for, the wait is checked for deadlocks again
/// against the new holder, and a cycle ends it with Deadlock (key-wise too).
#[test]
fn force_lock_waiter_is_checked_again_when_its_lock_changes_hands() {
    let mut h = TxnHarness::new();
    hold(&mut h, "k", 5);
    h.must_lock(lock_req(&["b"], "b", 20, 20));
    let t1 = h.must_park(lock_req(&["k"], "k", 1, 1));
    let t20 = h.must_park(force(lock_req(&["k"], "b", 20, 20)));
    // T10 waits for T20 on "b".
    let t10 = h.must_park(lock_req(&["b"], "k", 10, 10));
    assert_eq!(
        h.sim
            .lock_manager()
            .waiter(t20)
            .map(|w| w.wait.wait_for.clone()),
        Some(vec![5])
    );

    // T5 commits: T1 is woken; T20 stays queued until the delayed wake-up.
    h.must_commit(&["k"], 5, 7);
    assert_eq!(h.answered_ids(), vec![t1]);
    // T10 takes "k" meanwhile: T20 now waits for T10, which waits for T20.
    h.must_lock(lock_req(&["k"], "k", 10, 8));
    let answers = h.answers();
    assert_eq!(answers.len(), 1);
    let (id, resp) = &answers[0];
    assert_eq!(*id, t20);
    let deadlock = resp.errors[0].deadlock.clone().expect("deadlock");
    assert_eq!(
        (deadlock.lock_ts, deadlock.lock_key.as_ref()),
        (10, &b"k"[..])
    );
    assert_eq!(resp.results[0].r#type, ResultType::LockResultFailed as i32);
    assert!(h.sim.lock_manager().queued_on(b"k").is_empty());
    assert_eq!(h.sim.lock_manager().queued_on(b"b"), vec![t10]);
}

/// Follows TiKV's `WaitTable::update_waiter` for legacy waiters: when another transaction
/// takes the lock a queued request waits for, the request's timeout names the new lock and
/// how long ago it changed (`duration_to_last_update_ms`); only ForceLock waiters are checked
/// for deadlocks again.
#[test]
fn legacy_waiter_times_out_naming_the_latest_lock() {
    // A wake-up delay longer than the wait, so the waiter times out first.
    let mut h = TxnHarness::with(config(500, 1000));
    hold(&mut h, "k", 5);
    let t1 = h.must_park(lock_req(&["k"], "k", 1, 1));
    let t30 = h.must_park(lock_req(&["k"], "k", 30, 30));
    h.must_commit(&["k"], 5, 7);
    assert_eq!(h.answered_ids(), vec![t1]);
    h.advance(10);
    h.must_lock(lock_req(&["k"], "k", 1, 8));
    assert_eq!(
        h.sim
            .lock_manager()
            .waiter(t30)
            .map(|w| w.wait.wait_for.clone()),
        Some(vec![5]),
        "a legacy waiter keeps its deadlock-detector entry"
    );
    h.advance(490);
    let answers = h.answers();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, t30);
    let lock = locked(&answers[0].1);
    assert_eq!(lock.lock_version, 1);
    assert_eq!(lock.duration_to_last_update_ms, 490);
}
