//! Ports of client-go's `config/retry/backoff_test.go` (named after the Go tests) and the
//! Backoffer's own properties.

use quickcheck::quickcheck;

use super::*;
use crate::proto::{errorpb, metapb};

fn unwrap_exhausted(result: Result<Duration, BackoffError>) -> BackoffExhausted {
    match result {
        Err(BackoffError::Exhausted(exhausted)) => *exhausted,
        other => panic!("expected an exhausted budget, got {other:?}"),
    }
}

fn assert_clone_or_fork_equal(a: &Backoffer, b: &Backoffer) {
    assert_eq!(a.latest_errors(), b.latest_errors());
    assert_eq!(a.errors_seen(), b.errors_seen());
    for kind in BackoffKind::ALL {
        assert_eq!(a.slept_ms(kind), b.slept_ms(kind), "{kind}");
        assert_eq!(a.attempts(kind), b.attempts(kind), "{kind}");
    }
    assert_eq!(a.excluded_sleep_ms(), b.excluded_sleep_ms());
    assert_eq!(a.total_sleep_ms(), b.total_sleep_ms());
}

#[test]
fn test_backoff_with_max() {
    let mut rng = Rng::new(1);
    let mut bo = Backoffer::with_vars(2_000, BackoffVars::default());
    // txnLockFast runs with base 10, so its first wait is at least 5ms and is capped to 5.
    let sleep = bo.next_sleep_at_most(BackoffKind::TxnLockFast, 5, &mut rng, "test");
    assert_eq!(sleep, Ok(Duration::from_millis(5)));
    assert_eq!(bo.total_sleep_ms(), 5);
}

#[test]
fn test_backoff_error_type() {
    for seed in 0..50 {
        let mut rng = Rng::new(seed);
        // The budget is weighted: 800ms becomes 1600ms.
        let mut bo = Backoffer::with_vars(800, BackoffVars::default());
        assert_eq!(bo.budget_ms(), 1_600);
        assert!(
            bo.next_sleep(BackoffKind::RegionMiss, &mut rng, "region miss")
                .is_ok()
        );
        for _ in 0..2 {
            let sleep = bo.next_sleep(
                BackoffKind::RegionNotInitialized,
                &mut rng,
                "region not initialized",
            );
            assert!(sleep.is_ok());
        }
        let sleep = bo.next_sleep(
            BackoffKind::RegionRecoveryInProgress,
            &mut rng,
            "recovery in progress",
        );
        assert!(sleep.is_ok());
        // Server-busy sleep is not counted against the budget.
        assert!(
            bo.next_sleep(BackoffKind::TiKvServerBusy, &mut rng, "server is busy")
                .is_ok()
        );
        assert!(
            bo.next_sleep(BackoffKind::IsWitness, &mut rng, "peer is witness")
                .is_ok()
        );

        let mut failed = None;
        for _ in 0..15 {
            if let Err(error) = bo.next_sleep(BackoffKind::TxnNotFound, &mut rng, "txn not found") {
                failed = Some(error);
                break;
            }
        }
        let Some(BackoffError::Exhausted(exhausted)) = failed else {
            panic!("seed {seed}: the budget never ran out");
        };
        // The error blames the kind that slept longest, not the one that asked last.
        let longest = bo.longest_sleep();
        assert!(longest.is_some());
        assert_eq!(exhausted.longest, longest);
        assert_eq!(
            exhausted.error_class(),
            longest.map_or(ErrorClass::ResolveLockTimeout, |(kind, _)| kind
                .error_class())
        );
        assert_ne!(exhausted.main_kind(), BackoffKind::TiKvServerBusy);
        assert!(exhausted.budget_spent);
    }
}

#[test]
fn test_backoff_deep_copy() {
    let mut rng = Rng::new(2);
    let mut bo = Backoffer::with_vars(4, BackoffVars::default());
    // 2 + 4 + 8 = 14ms passes the weighted 8ms budget, so the next request fails.
    for _ in 0..3 {
        assert!(
            bo.next_sleep(
                BackoffKind::RegionNotInitialized,
                &mut rng,
                "region not initialized"
            )
            .is_ok()
        );
    }
    let forked = bo.fork();
    assert_clone_or_fork_equal(&bo, &forked);
    let cloned = bo.clone();
    assert_clone_or_fork_equal(&bo, &cloned);
    for mut child in [forked, cloned] {
        let exhausted =
            unwrap_exhausted(child.next_sleep(BackoffKind::TiKvRpc, &mut rng, "tikv rpc"));
        assert_eq!(exhausted.main_kind(), BackoffKind::RegionNotInitialized);
        assert_eq!(exhausted.error_class(), ErrorClass::RegionNotInitialized);
    }
}

#[test]
fn test_backoff_update_using_fork() {
    let mut rng = Rng::new(3);
    let mut bo = Backoffer::with_vars(4, BackoffVars::default());
    for _ in 0..3 {
        assert!(
            bo.next_sleep(
                BackoffKind::RegionNotInitialized,
                &mut rng,
                "region not initialized"
            )
            .is_ok()
        );
    }
    let mut forked = bo.fork();
    assert!(
        forked
            .next_sleep(BackoffKind::TiKvRpc, &mut rng, "tikv rpc")
            .is_err()
    );
    let forked_copy = forked.fork();
    bo.update_using_forked(forked);
    assert_clone_or_fork_equal(&bo, &forked_copy);
}

#[test]
fn test_backoff_with_max_excluded_exceed() {
    let mut rng = Rng::new(4);
    let mut bo = Backoffer::with_vars(1, BackoffVars::default());
    bo.set_excluded_limit_ms(1);
    assert!(
        bo.next_sleep(BackoffKind::TiKvServerBusy, &mut rng, "server is busy")
            .is_ok()
    );
    // The excluded sleep now passes both its limit and the budget.
    let exhausted =
        unwrap_exhausted(bo.next_sleep(BackoffKind::TiKvServerBusy, &mut rng, "server is busy"));
    assert!(bo.excluded_sleep_ms() > bo.budget_ms());
    assert!(exhausted.excluded_limit_spent);
    assert!(!exhausted.budget_spent);
    // Nothing counted slept, so the refused kind itself is to blame.
    assert_eq!(exhausted.longest, None);
    assert_eq!(exhausted.error_class(), ErrorClass::TiKvServerBusy);
}

/// client-go's `MayBackoffForRegionError`: waits with the kind the region error calls for,
/// if it calls for one; errors when the backoffer refuses that wait.
fn may_backoff_for_region_error(
    region_error: &errorpb::Error,
    bo: &mut Backoffer,
    rng: &mut Rng,
) -> Result<(), BackoffError> {
    match backoff_for_region_error(region_error) {
        Some(kind) => bo
            .next_sleep(kind, rng, format!("{region_error:?}"))
            .map(|_| ()),
        None => Ok(()),
    }
}

#[test]
fn test_may_backoff_for_region_error() {
    let mut rng = Rng::new(5);
    // A real EpochNotMatch (it names the current regions) is retried at once: no wait.
    let real_epoch_not_match = errorpb::Error {
        epoch_not_match: Some(errorpb::EpochNotMatch {
            current_regions: vec![metapb::Region {
                id: 1,
                ..Default::default()
            }],
        }),
        ..Default::default()
    };
    let mut bo = Backoffer::with_vars(1, BackoffVars::default());
    assert_eq!(
        may_backoff_for_region_error(&real_epoch_not_match, &mut bo, &mut rng),
        Ok(())
    );
    assert_eq!(bo.total_sleep_ms(), 0);
    assert_eq!(bo.total_attempts(), 0);

    let needs_backoff = [
        errorpb::Error {
            epoch_not_match: Some(errorpb::EpochNotMatch::default()),
            ..Default::default()
        },
        errorpb::Error {
            not_leader: Some(errorpb::NotLeader::default()),
            ..Default::default()
        },
        errorpb::Error {
            server_is_busy: Some(errorpb::ServerIsBusy::default()),
            ..Default::default()
        },
        errorpb::Error {
            max_timestamp_not_synced: Some(errorpb::MaxTimestampNotSynced::default()),
            ..Default::default()
        },
    ];
    for region_error in &needs_backoff {
        // The backoff succeeds: one regionMiss wait (2 ms, no jitter) of the weighted 2 ms.
        let mut bo = Backoffer::with_vars(1, BackoffVars::default());
        assert_eq!(
            may_backoff_for_region_error(region_error, &mut bo, &mut rng),
            Ok(()),
            "{region_error:?}"
        );
        assert_eq!(bo.total_attempts(), 1, "{region_error:?}");
        assert_eq!(bo.attempts(BackoffKind::RegionMiss), 1, "{region_error:?}");
        assert_eq!(bo.total_sleep_ms(), 2, "{region_error:?}");
        // The backoff fails and the error carries the region error. client-go refuses by
        // cancelling the context; a sans-IO backoffer has no context, so the spent budget
        // refuses instead.
        match may_backoff_for_region_error(region_error, &mut bo, &mut rng) {
            Err(BackoffError::Exhausted(exhausted)) => {
                assert_eq!(exhausted.kind, BackoffKind::RegionMiss);
                assert_eq!(exhausted.cause, format!("{region_error:?}"));
            }
            other => panic!("{region_error:?}: expected a refused wait, got {other:?}"),
        }
    }
}

#[test]
fn test_backoff_errors_keep() {
    let mut rng = Rng::new(6);
    let mut bo = Backoffer::with_vars(1_000_000, BackoffVars::default());
    assert_eq!(bo.errors_seen(), 0);
    assert!(bo.latest_errors().is_empty());
    let reasons: Vec<String> = (0..32).map(|i| format!("mockErr-{i}")).collect();
    for (i, reason) in reasons.iter().enumerate() {
        let count = i + 1;
        let now = Time::from_millis(count as u64 * 10);
        assert!(
            bo.next_deadline(now, BackoffKind::RegionMiss, &mut rng, reason)
                .is_ok(),
            "error count {count}"
        );
        assert_eq!(bo.errors_seen(), count);
        let latest = bo.latest_errors();
        assert_eq!(latest.len(), count.min(MAX_RECORDED_ERRORS));
        let expected: Vec<&str> = reasons[count.saturating_sub(MAX_RECORDED_ERRORS)..count]
            .iter()
            .map(String::as_str)
            .collect();
        let kept: Vec<&str> = latest.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(kept, expected);
        assert!(latest.windows(2).all(|w| w[0].at < w[1].at));
        assert_eq!(latest.last().and_then(|e| e.at), Some(now));
    }
}

#[test]
fn test_backoff_error() {
    let error = RecordedError {
        reason: "mockErr".to_owned(),
        at: Some(Time::from_micros(3_600 * 4_000_000 + 1_234)),
    };
    assert_eq!(error.to_string(), "mockErr at 14400.001234s");
    let untimed = RecordedError {
        reason: "mockErr".to_owned(),
        at: None,
    };
    assert_eq!(untimed.to_string(), "mockErr");
}

#[test]
fn budget_runs_out_on_the_request_after_it_is_crossed() {
    let mut rng = Rng::new(7);
    let mut bo = Backoffer::new(10);
    let sleeps: Vec<u64> = (0..3)
        .map(|_| {
            bo.next_sleep(BackoffKind::RegionMiss, &mut rng, "miss")
                .map(|d| d.as_millis() as u64)
        })
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    // The third wait (8ms) crosses the 10ms budget and is still granted in full.
    assert_eq!(sleeps, [2, 4, 8]);
    assert_eq!(bo.total_sleep_ms(), 14);
    let exhausted = unwrap_exhausted(bo.next_sleep(BackoffKind::TiKvRpc, &mut rng, "rpc down"));
    assert_eq!(exhausted.kind, BackoffKind::TiKvRpc);
    assert_eq!(exhausted.cause, "rpc down");
    assert_eq!(exhausted.longest, Some((BackoffKind::RegionMiss, 14)));
    assert_eq!(exhausted.error_class(), ErrorClass::RegionUnavailable);
    assert_eq!(exhausted.total_attempts, 3);
    assert_eq!(exhausted.attempts, [(BackoffKind::RegionMiss, 3)]);
    assert_eq!(exhausted.errors.len(), 3);
    // A refused request records nothing.
    assert_eq!(bo.attempts(BackoffKind::TiKvRpc), 0);
    assert_eq!(bo.errors_seen(), 3);
    let message = BackoffError::Exhausted(Box::new(exhausted)).to_string();
    assert!(
        message.starts_with("tikvRPC backoff exceeded its budget of 10ms"),
        "{message}"
    );
    assert!(message.contains("regionMiss:3"), "{message}");
    assert!(
        message.contains("longest sleep: regionMiss 14ms"),
        "{message}"
    );
    assert!(
        message.contains("last errors: [miss; miss; miss]"),
        "{message}"
    );
}

#[test]
fn zero_budget_never_runs_out() {
    let mut rng = Rng::new(8);
    let mut bo = Backoffer::new(0);
    for _ in 0..1_000 {
        assert!(
            bo.next_sleep(BackoffKind::PdRpc, &mut rng, "pd down")
                .is_ok()
        );
    }
    assert_eq!(bo.attempts(BackoffKind::PdRpc), 1_000);
    assert!(bo.total_sleep_ms() >= 1_500 * 990);
    assert_eq!(
        Backoffer::with_vars(0, BackoffVars::default()).budget_ms(),
        0
    );
}

#[test]
fn server_busy_sleep_is_not_counted_against_the_budget() {
    let mut rng = Rng::new(9);
    let mut bo = Backoffer::new(100);
    for _ in 0..20 {
        assert!(
            bo.next_sleep(BackoffKind::TiKvServerBusy, &mut rng, "busy")
                .is_ok()
        );
    }
    assert!(bo.total_sleep_ms() >= 20 * 1_000);
    assert_eq!(bo.excluded_sleep_ms(), bo.total_sleep_ms());
    assert_eq!(bo.longest_sleep(), None);
    // Counted sleep is still zero, so other kinds may wait too.
    assert!(
        bo.next_sleep(BackoffKind::RegionMiss, &mut rng, "miss")
            .is_ok()
    );
    // TiFlash's busy kind is an ordinary one.
    let mut tiflash = Backoffer::new(100);
    assert!(
        tiflash
            .next_sleep(BackoffKind::TiFlashServerBusy, &mut rng, "busy")
            .is_ok()
    );
    assert!(
        tiflash
            .next_sleep(BackoffKind::TiFlashServerBusy, &mut rng, "busy")
            .is_err()
    );
}

#[test]
fn server_busy_gives_up_after_the_excluded_limit() {
    let mut rng = Rng::new(10);
    let mut bo = Backoffer::new(100);
    let mut granted = 0;
    let exhausted = loop {
        match bo.next_sleep(BackoffKind::TiKvServerBusy, &mut rng, "busy") {
            Ok(_) => granted += 1,
            Err(BackoffError::Exhausted(exhausted)) => break exhausted,
            Err(other) => panic!("unexpected {other}"),
        }
        assert!(granted < 1_000, "never gave up");
    };
    assert!(exhausted.excluded_sleep_ms >= EXCLUDED_SLEEP_LIMIT_MS);
    // Every wait but the one that crossed the limit left the total below it.
    assert!(exhausted.excluded_sleep_ms < EXCLUDED_SLEEP_LIMIT_MS + 10_000);
    assert!(exhausted.excluded_limit_spent);
}

#[test]
fn fork_keeps_totals_but_restarts_exponents() {
    let mut rng = Rng::new(11);
    let mut parent = Backoffer::new(10_000);
    for _ in 0..3 {
        assert!(
            parent
                .next_sleep(BackoffKind::RegionMiss, &mut rng, "miss")
                .is_ok()
        );
    }
    let mut child = parent.fork();
    assert_eq!(child.total_sleep_ms(), 14);
    assert_eq!(child.budget_ms(), 10_000);
    assert_eq!(
        child.next_sleep(BackoffKind::RegionMiss, &mut rng, "miss"),
        Ok(Duration::from_millis(2))
    );
    assert_eq!(
        parent.next_sleep(BackoffKind::RegionMiss, &mut rng, "miss"),
        Ok(Duration::from_millis(16))
    );
    // An exact clone keeps the exponent.
    let mut copy = parent.clone();
    assert_eq!(
        copy.next_sleep(BackoffKind::RegionMiss, &mut rng, "miss"),
        Ok(Duration::from_millis(32))
    );

    parent.update_using_forked(child);
    assert_eq!(parent.total_sleep_ms(), 16);
    assert_eq!(parent.attempts(BackoffKind::RegionMiss), 4);
    // The parent keeps its own schedule.
    assert_eq!(
        parent.next_sleep(BackoffKind::RegionMiss, &mut rng, "miss"),
        Ok(Duration::from_millis(32))
    );
}

#[test]
fn reset_restarts_sleep_but_keeps_counts() {
    let mut rng = Rng::new(12);
    let mut bo = Backoffer::new(10);
    for _ in 0..3 {
        assert!(
            bo.next_sleep(BackoffKind::StaleCmd, &mut rng, "stale")
                .is_ok()
        );
    }
    assert!(
        bo.next_sleep(BackoffKind::StaleCmd, &mut rng, "stale")
            .is_err()
    );
    bo.reset();
    assert_eq!(bo.total_sleep_ms(), 0);
    assert_eq!(bo.attempts(BackoffKind::StaleCmd), 3);
    assert_eq!(bo.errors_seen(), 3);
    assert_eq!(
        bo.next_sleep(BackoffKind::StaleCmd, &mut rng, "stale"),
        Ok(Duration::from_millis(2))
    );

    bo.reset_budget(500);
    assert_eq!(bo.budget_ms(), 1_000, "reset_budget weights the new budget");
    assert_eq!(bo.total_sleep_ms(), 0);
}

#[test]
fn budgets_are_weighted_unless_too_large() {
    let vars = BackoffVars::default();
    assert_eq!(
        Backoffer::with_vars(TSO_MAX_BACKOFF_MS, vars).budget_ms(),
        30_000
    );
    assert_eq!(
        Backoffer::new(GET_TXN_STATUS_MAX_BACKOFF_MS).budget_ms(),
        20_000
    );
    let limit = i32::MAX as u64 / 2;
    assert_eq!(vars.weighted_budget_ms(limit), limit * 2);
    assert_eq!(vars.weighted_budget_ms(limit + 1), limit + 1);
    let unweighted = BackoffVars {
        budget_weight: 0,
        ..vars
    };
    assert_eq!(unweighted.weighted_budget_ms(700), 700);
}

#[test]
fn lock_fast_base_comes_from_vars() {
    let mut rng = Rng::new(13);
    let vars = BackoffVars {
        lock_fast_base_ms: 1_000,
        ..BackoffVars::default()
    };
    let mut bo = Backoffer::with_vars(0, vars);
    let sleep = bo.next_sleep(BackoffKind::TxnLockFast, &mut rng, "locked");
    assert!(sleep.is_ok_and(|s| (500..1_000).contains(&s.as_millis())));
}

#[test]
fn capped_sleep_still_advances_the_schedule() {
    let mut rng = Rng::new(14);
    let mut bo = Backoffer::new(0);
    for _ in 0..4 {
        assert_eq!(
            bo.next_sleep_at_most(BackoffKind::RegionMiss, 1, &mut rng, "miss"),
            Ok(Duration::from_millis(1))
        );
    }
    assert_eq!(bo.total_sleep_ms(), 4);
    assert_eq!(
        bo.next_sleep(BackoffKind::RegionMiss, &mut rng, "miss"),
        Ok(Duration::from_millis(32))
    );
}

#[test]
fn deadlines_are_now_plus_the_sleep() {
    let mut rng = Rng::new(15);
    let mut bo = Backoffer::new(0);
    let now = Time::from_millis(1_000);
    assert_eq!(
        bo.next_deadline(now, BackoffKind::RegionScheduling, &mut rng, "no leader"),
        Ok(Time::from_millis(1_002))
    );
    assert_eq!(
        bo.next_deadline_at_most(now, BackoffKind::RegionScheduling, 3, &mut rng, "no leader"),
        Ok(Time::from_millis(1_003))
    );
    assert_eq!(bo.latest_errors()[0].at, Some(now));
}

#[test]
fn noop_grants_nothing() {
    let mut rng = Rng::new(16);
    let mut bo = Backoffer::noop();
    let error = bo.next_sleep(BackoffKind::TiKvRpc, &mut rng, "down");
    assert_eq!(
        error,
        Err(BackoffError::Disabled {
            kind: BackoffKind::TiKvRpc,
            cause: "down".to_owned(),
        })
    );
    assert_eq!(
        error.map_err(|e| e.error_class()),
        Err(ErrorClass::TiKvServerTimeout)
    );
    assert_eq!(bo.total_attempts(), 0);
}

#[test]
fn display_lists_attempts_per_kind() {
    let mut rng = Rng::new(17);
    let mut bo = Backoffer::new(0);
    assert_eq!(bo.to_string(), "");
    assert!(
        bo.next_sleep(BackoffKind::RegionMiss, &mut rng, "a")
            .is_ok()
    );
    assert!(
        bo.next_sleep(BackoffKind::RegionMiss, &mut rng, "b")
            .is_ok()
    );
    assert!(bo.next_sleep(BackoffKind::StaleCmd, &mut rng, "c").is_ok());
    assert_eq!(bo.to_string(), "backoff(8ms regionMiss:2, staleCommand:1)");
}

#[test]
fn longest_sleep_ignores_excluded_kinds_and_breaks_ties_by_kind_order() {
    let mut rng = Rng::new(18);
    let mut bo = Backoffer::new(0);
    assert!(
        bo.next_sleep(BackoffKind::TxnNotFound, &mut rng, "a")
            .is_ok()
    );
    assert!(
        bo.next_sleep(BackoffKind::RegionMiss, &mut rng, "b")
            .is_ok()
    );
    assert!(
        bo.next_sleep(BackoffKind::TiKvServerBusy, &mut rng, "c")
            .is_ok()
    );
    assert_eq!(bo.longest_sleep(), Some((BackoffKind::RegionMiss, 2)));
    assert!(
        bo.next_sleep(BackoffKind::TxnNotFound, &mut rng, "d")
            .is_ok()
    );
    assert_eq!(bo.longest_sleep(), Some((BackoffKind::TxnNotFound, 6)));
}

fn run(seed: u64, kinds: &[u8]) -> Vec<Result<Duration, BackoffError>> {
    let mut rng = Rng::new(seed);
    let mut bo = Backoffer::with_vars(2_000, BackoffVars::default());
    kinds
        .iter()
        .map(|k| {
            let kind = BackoffKind::ALL[usize::from(*k) % BackoffKind::ALL.len()];
            bo.next_sleep(kind, &mut rng, kind)
        })
        .collect()
}

quickcheck! {
    fn same_seed_same_sleeps(seed: u64, kinds: Vec<u8>) -> bool {
        run(seed, &kinds) == run(seed, &kinds)
    }

    fn granted_sleep_never_starts_past_the_budget(seed: u64, kinds: Vec<u8>) -> bool {
        let mut rng = Rng::new(seed);
        let mut bo = Backoffer::new(3_000);
        kinds.iter().all(|k| {
            let kind = BackoffKind::ALL[usize::from(*k) % BackoffKind::ALL.len()];
            let counted_before = bo.total_sleep_ms() - bo.excluded_sleep_ms();
            match bo.next_sleep(kind, &mut rng, "x") {
                Ok(_) => counted_before < 3_000,
                Err(BackoffError::Exhausted(e)) => e.budget_spent || e.excluded_limit_spent,
                Err(_) => false,
            }
        })
    }

    fn totals_are_the_sum_of_per_kind_sleep(seed: u64, kinds: Vec<u8>) -> bool {
        let mut rng = Rng::new(seed);
        let mut bo = Backoffer::new(0);
        for k in &kinds {
            let kind = BackoffKind::ALL[usize::from(*k) % BackoffKind::ALL.len()];
            if bo.next_sleep(kind, &mut rng, "x").is_err() {
                return false;
            }
        }
        let sum: u64 = BackoffKind::ALL.iter().map(|k| bo.slept_ms(*k)).sum();
        sum == bo.total_sleep_ms()
            && bo.total_attempts() as usize == kinds.len()
            && bo.excluded_sleep_ms() == bo.slept_ms(BackoffKind::TiKvServerBusy)
    }
}
