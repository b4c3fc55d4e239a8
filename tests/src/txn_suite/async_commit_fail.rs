//! `integration_tests/async_commit_fail_test.go` (`testAsyncCommitFailSuite`): async
//! commit under failures. The Go suite runs unistore with one store and one region, with
//! failpoints that `fpClient` turns into fake replies; here they are tikv-sim faults, and
//! `asyncCommitDoNothing` is the commit knob that skips the secondaries.

use std::time::Duration;

use tikv_core::error::KeyError;
use tikv_core::transaction::TransactionOptions;
use tikv_core::{CommitKnobs, CommitMode, Config, Error, Timestamp};
use tikv_proto::kvrpcpb;
use tikv_proto::status::{Code, Status};
use tikv_proto::tikvpb::batch_commands_request::request::Cmd as Req;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as Resp;
use tikv_sim::cluster::ClusterConfig;
use tikv_sim::faults::FaultAction;

use super::async_commit::put_alphabets;
use super::{Env, b, err, ok, start, start_with, undetermined};

/// Async commit with `knobs`.
fn async_commit(knobs: CommitKnobs) -> TransactionOptions {
    TransactionOptions::new()
        .with_async_commit(true)
        .with_testing_knobs(knobs)
}

/// Async commit whose locks live 100 ms and whose keys are left locked after the commit
/// is decided (`asyncCommitDoNothing`).
fn async_commit_do_nothing() -> TransactionOptions {
    async_commit(CommitKnobs {
        skip_secondaries: true,
        lock_ttl_ms: Some(100),
        ..CommitKnobs::default()
    })
}

/// `TestFailAsyncCommitPrewriteRpcErrors`: an async-commit prewrite that applied but whose
/// answer never came (`rpcPrewriteTimeout`, without retries on RPC errors) leaves the
/// outcome unknown; the transaction is in fact committed, as a reader finds. Here every
/// prewrite's reply is lost (the store applies it) and the prewrite's backoff budget is
/// 1 s, which ends the retries as `noRetryOnRpcError` does.
pub async fn test_async_commit_fail_prewrite_rpc_errors<E: Env>(env: &E) {
    let config = Config::default().with_read_timeout_short(Duration::from_millis(200));
    let tc = start_with(env, ClusterConfig::default(), config).await;
    tc.inject("KvPrewrite", FaultAction::DropReply, u32::MAX);
    let mut t1 = tc
        .begin_with(async_commit(CommitKnobs {
            max_backoff_ms: Some(1_000),
            lock_ttl_ms: Some(100),
            ..CommitKnobs::default()
        }))
        .await;
    ok("put", t1.put(b("a"), b("a1")));
    let e = err("commit", t1.commit().await);
    assert!(e.is_undetermined(), "{e}");
    assert!(matches!(t1.rollback(), Err(Error::TxnFinished { .. })));
    tc.clear_faults();

    let t2 = tc.begin_async_commit().await;
    assert_eq!(ok("get", t2.get(b("a")).await), Some(b("a1")));
}

/// `TestAsyncCommitPrewriteCancelled`: when one region's prewrite fails with a write
/// conflict while the other's is slow, the commit fails with the write conflict.
pub async fn test_async_commit_fail_prewrite_cancelled<E: Env>(env: &E) {
    let tc = start(env).await;
    tc.split(&[b"s"]);
    let mut t1 = tc.begin_async_commit().await;
    let conflict = kvrpcpb::KeyError {
        conflict: Some(kvrpcpb::WriteConflict {
            start_ts: t1.start_ts().version(),
            conflict_ts: t1.start_ts().version() + 1,
            key: b("a"),
            primary: b("a"),
            ..Default::default()
        }),
        ..Default::default()
    };
    tc.inject("KvPrewrite", FaultAction::KeyError(Box::new(conflict)), 1);
    tc.inject("KvPrewrite", FaultAction::Delay(50), u32::MAX);
    ok("put", t1.put(b("a"), b("a")));
    ok("put", t1.put(b("z"), b("z")));
    let e = err("commit", t1.commit().await);
    assert!(
        matches!(e.key_error(), Some(KeyError::WriteConflict { .. })),
        "{e}"
    );
    tc.clear_faults();
}

/// `TestPointGetWithAsyncCommit`: a point read at the largest timestamp does not skip an
/// async-commit transaction's locks: once the commit is decided (its keys left locked),
/// it reads the new values; and it does not push `max_ts` so far that later transactions
/// cannot commit or read.
pub async fn test_async_commit_fail_point_get_with_async_commit<E: Env>(env: &E) {
    let tc = start(env).await;
    put_alphabets(&tc).await;
    let mut txn = tc.begin_with(async_commit_do_nothing()).await;
    ok("put", txn.put(b("a"), b("v1")));
    ok("put", txn.put(b("b"), b("v2")));
    assert_eq!(tc.get_at(Timestamp::MAX, "a").await, Some(b("a")));
    assert_eq!(tc.get_at(Timestamp::MAX, "b").await, Some(b("b")));
    ok("commit", txn.commit().await);
    assert_eq!(
        txn.commit_outcome().map(|o| o.mode),
        Some(CommitMode::AsyncCommit)
    );
    assert!(tc.lock(b"a").is_some(), "the keys are left locked");
    assert_eq!(tc.get_at(Timestamp::MAX, "a").await, Some(b("v1")));
    assert_eq!(tc.get_at(Timestamp::MAX, "b").await, Some(b("v2")));

    let mut txn2 = tc.begin_async_commit().await;
    assert_eq!(ok("get", txn2.get(b("a")).await), Some(b("v1")));
    assert_eq!(ok("get", txn2.get(b("b")).await), Some(b("v2")));
    ok("rollback", txn2.rollback());
}

/// `TestSecondaryListInPrimaryLock`: an async-commit primary lock lists every other key
/// of its transaction as a secondary, across regions. Go reads the list through the lock
/// resolver's `GetTxnStatus`; this client has no such call, so the same `CheckTxnStatus`
/// (no rollback, no push) is sent to the store. Go then cleans the transaction up with
/// the probe; each case here uses keys of its own instead.
pub async fn test_async_commit_fail_secondary_list_in_primary_lock<E: Env>(env: &E) {
    let tc = start(env).await;
    put_alphabets(&tc).await;
    tc.split(&[b"h", b"o", b"u"]);
    let cases: [&[(&str, &str)]; 5] = [
        &[("a", "a1")],
        &[("a", "a2"), ("b", "b2")],
        &[("a", "a3"), ("b", "b3"), ("d", "d3")],
        &[
            ("a", "a4"),
            ("b", "b4"),
            ("h", "h4"),
            ("i", "i4"),
            ("u", "u4"),
        ],
        &[
            ("i", "i5"),
            ("a", "a5"),
            ("z", "z5"),
            ("u", "u5"),
            ("b", "b5"),
        ],
    ];
    for (case, pairs) in cases.iter().enumerate() {
        let keys: Vec<String> = pairs
            .iter()
            .map(|(key, _)| format!("{key}_{}", case + 1))
            .collect();
        let mut txn = tc.begin_with(async_commit_do_nothing()).await;
        for (key, (_, value)) in keys.iter().zip(pairs.iter()) {
            ok("put", txn.put(b(key), b(value)));
        }
        ok("commit", txn.commit().await);
        let primary = tc
            .lock(keys[0].as_bytes())
            .unwrap_or_else(|| panic!("{} is locked", keys[0]))
            .primary_lock;
        let response = tc.store_call(&primary, |context| {
            Req::CheckTxnStatus(kvrpcpb::CheckTxnStatusRequest {
                context: Some(context),
                primary_key: primary.clone(),
                lock_ts: txn.start_ts().version(),
                ..Default::default()
            })
        });
        let Resp::CheckTxnStatus(status) = response else {
            panic!("CheckTxnStatus answered {response:?}");
        };
        assert!(
            status.error.is_none() && status.region_error.is_none(),
            "{status:?}"
        );
        assert_eq!(status.commit_version, 0, "not committed");
        assert_eq!(status.action, kvrpcpb::Action::NoAction as i32);
        let mut got = status
            .lock_info
            .map(|lock| lock.secondaries)
            .unwrap_or_default();
        got.sort();
        let mut expected: Vec<_> = keys.iter().map(b).filter(|key| *key != primary).collect();
        expected.sort();
        assert_eq!(got, expected, "case {}", case + 1);
    }
}

/// `TestAsyncCommitContextCancelCausingUndetermined`: an async-commit prewrite that fails
/// in transport (Go: the RPC returns `context.Canceled`) leaves the outcome unknown: every
/// prewrite call is cancelled until the 1 s budget runs out.
pub async fn test_async_commit_fail_context_cancel_causing_undetermined<E: Env>(env: &E) {
    let tc = start(env).await;
    tc.inject(
        "KvPrewrite",
        FaultAction::Status(Status::new(Code::Cancelled, "context canceled")),
        u32::MAX,
    );
    let mut txn = tc
        .begin_with(async_commit(super::budget_knobs(1_000)))
        .await;
    ok("put", txn.put(b("a"), b("va")));
    let e = err("commit", txn.commit().await);
    assert!(e.is_undetermined(), "{e}");
    tc.clear_faults();
}

/// `TestPrewriteFailWithUndeterminedResult`: an undetermined answer to an async-commit
/// prewrite fails the commit as undetermined (the prewrite decides the transaction).
pub async fn test_async_commit_fail_prewrite_fail_with_undetermined_result<E: Env>(env: &E) {
    let tc = start(env).await;
    let mut txn = tc.begin_async_commit().await;
    ok("put", txn.put(b("key"), b("value")));
    tc.inject("KvPrewrite", undetermined(), 1);
    let e = err("commit", txn.commit().await);
    assert!(e.is_undetermined(), "{e}");
}
