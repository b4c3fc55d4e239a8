//! `integration_tests/option_test.go` (`testOptionSuite`): committing only past a given
//! TSO timestamp (`SetCommitWaitUntilTSO`) and how long to wait for it.
//!
//! The Go suite wraps the oracle to script the commit timestamps (`startTS + offset`);
//! here tikv-sim's TSO clock is stalled for a number of requests, so that those commit
//! timestamps only count up the logical part of the start timestamp and lag the wait
//! target, and then moves with the wall clock again and passes it. Go counts the lag
//! waits in its metrics and commit details; this client reports neither, so the tests
//! count the client's TSO requests instead.

use std::time::Duration;

use tikv_core::transaction::TransactionOptions;
use tikv_core::{Error, Timestamp};

use super::{Env, TxnCluster, b, ok, start};

/// One case of `TestSetCommitWaitUntilTSO`.
struct Case {
    name: &'static str,
    /// Wait for TSO to pass `start_ts + wait_offset`.
    wait_offset: u64,
    /// TSO requests whose clock is stalled (`u32::MAX`: all of them).
    stalled: u32,
    /// The wait's timeout (the default is 1 s).
    timeout: Option<Duration>,
    async_commit: bool,
    one_pc: bool,
    causal_consistency: bool,
    fails: bool,
}

const CASE: Case = Case {
    name: "",
    wait_offset: 0,
    stalled: 0,
    timeout: None,
    async_commit: false,
    one_pc: false,
    causal_consistency: false,
    fails: false,
};

/// Ten seconds, as a timestamp offset (`oracle.ComposeTS(10000, 0)`).
const TEN_SECONDS: u64 = 10_000 << 18;

async fn run_case<E: Env>(tc: &TxnCluster<'_, E>, case: &Case) {
    let start_ts = tc.ts().await;
    let wait_until = Timestamp::from_version(start_ts.version() + case.wait_offset);
    let timeout = case.timeout.unwrap_or(Duration::from_secs(1));
    let options = TransactionOptions::new()
        .with_start_ts(start_ts)
        .with_async_commit(case.async_commit)
        .with_try_one_pc(case.one_pc)
        .with_causal_consistency(case.causal_consistency)
        .with_commit_wait_until_tso(wait_until, timeout);
    let mut txn = tc.begin_with(options).await;
    ok(
        "put",
        txn.put(b(format!("somekey:{}", case.name)), b("somevalue")),
    );
    tc.server.with(|sim| sim.cluster.stall_tso(case.stalled));
    tc.requests.clear();
    let result = txn.commit().await;
    tc.server.with(|sim| sim.cluster.stall_tso(0));
    let asked = tc.requests.tso_requests();
    if case.fails {
        match result {
            Err(Error::CommitTsLag { wait_until: w, tso }) => {
                assert_eq!(w, wait_until, "{}", case.name);
                assert!(tso <= wait_until, "{}", case.name);
            }
            other => panic!("{}: expected a commit ts lag, got {other:?}", case.name),
        }
        return;
    }
    let commit_ts = ok(case.name, result).unwrap_or_else(|| panic!("{} committed", case.name));
    assert!(
        commit_ts > wait_until,
        "{}: {commit_ts} {wait_until}",
        case.name
    );
    if case.stalled > 0 {
        // Each stalled answer lagged and was asked again.
        assert!(
            asked > case.stalled as usize,
            "{}: {asked} TSO requests",
            case.name
        );
    }
}

/// `TestSetCommitWaitUntilTSO`: a commit takes a timestamp past the wait target, asking
/// TSO again (after a backoff) while it lags; it fails at once when told not to wait or
/// when the lag exceeds the timeout, and when the wait runs out; async commit, 1PC and
/// causal consistency are held to the target too.
pub async fn test_option_set_commit_wait_until_tso<E: Env>(env: &E) {
    let tc = start(env).await;
    let cases = [
        Case {
            name: "no lag commit ts",
            wait_offset: 1,
            ..CASE
        },
        Case {
            name: "lag, retry once and success",
            wait_offset: 200,
            stalled: 1,
            ..CASE
        },
        Case {
            name: "no wait",
            wait_offset: 200,
            stalled: 1,
            timeout: Some(Duration::ZERO),
            fails: true,
            ..CASE
        },
        Case {
            name: "lag, retry twice and success",
            wait_offset: 300,
            stalled: 2,
            ..CASE
        },
        Case {
            name: "lag too much, fail directly",
            wait_offset: TEN_SECONDS,
            fails: true,
            ..CASE
        },
        Case {
            name: "lag, retry but timeout",
            wait_offset: 100,
            stalled: u32::MAX,
            timeout: Some(Duration::from_millis(1)),
            fails: true,
            ..CASE
        },
        Case {
            name: "should also check for 1pc",
            wait_offset: TEN_SECONDS,
            async_commit: true,
            one_pc: true,
            fails: true,
            ..CASE
        },
        Case {
            name: "should also check for causal consistency",
            wait_offset: TEN_SECONDS,
            async_commit: true,
            one_pc: true,
            causal_consistency: true,
            fails: true,
            ..CASE
        },
    ];
    for case in &cases {
        run_case(&tc, case).await;
    }
}

/// `TestSetCommitWaitUntilTSOTimeout`: the wait's timeout is 1 s unless set. Go reads the
/// setting back; here the default is read from `CommitOptions`, and a set timeout is shown
/// at work (the transaction options have no getters): a target 1.5 s ahead fails at once
/// under a 1 s timeout and is waited for under a 2 s one.
pub async fn test_option_set_commit_wait_until_tso_timeout<E: Env>(env: &E) {
    assert_eq!(
        tikv_core::CommitOptions::default().commit_wait_until_tso_timeout,
        Duration::from_secs(1)
    );
    let tc = start(env).await;
    let ahead = |ts: Timestamp| Timestamp::compose(ts.physical_ms() + 1_500, 0);
    for (timeout, waits) in [
        (Duration::from_secs(1), false),
        (Duration::from_secs(2), true),
    ] {
        let target = ahead(tc.ts().await);
        let mut txn = tc
            .begin_with(TransactionOptions::new().with_commit_wait_until_tso(target, timeout))
            .await;
        ok("put", txn.put(b("k"), b("v")));
        let result = txn.commit().await;
        if waits {
            let commit_ts = ok("commit", result).unwrap_or_else(|| panic!("committed"));
            assert!(commit_ts > target);
        } else {
            assert!(
                matches!(result, Err(Error::CommitTsLag { .. })),
                "{result:?}"
            );
        }
    }
}
