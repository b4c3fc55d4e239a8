//! `integration_tests/2pc_test.go`, the tests of failures around the primary's commit:
//! which failures leave the outcome unknown (`Error::Undetermined`) and which do not.
//!
//! Go's failpoints `rpcCommitResult` ("timeout", "notLeader", "keyError",
//! "undeterminedResult"), `rpcCommitTimeout`, `rpcPrewriteResult` and
//! `rpcContextCancelErr` become tikv-sim faults on `KvCommit` / `KvPrewrite`: a gRPC
//! status (the call fails in transport), a `NotLeader` region error, a key error, or an
//! `UndeterminedResult` after the command applied. The Go suite lowers `CommitMaxBackoff`
//! to 1 s; the commits here lower their budget the same way (`CommitKnobs`).

use tikv_core::CommitKnobs;
use tikv_core::Error;
use tikv_core::transaction::TransactionOptions;
use tikv_proto::kvrpcpb;
use tikv_proto::status::{Code, Status};
use tikv_sim::faults::FaultAction;

use super::two_pc::start_2pc;
use super::{Env, TxnCluster, b, budget_knobs, err, not_leader, ok, undetermined};

/// A failure of the call itself (client-go's mock "timeout").
fn rpc_error() -> FaultAction {
    FaultAction::Status(Status::new(Code::DeadlineExceeded, "timeout"))
}

/// A key error on the commit (client-go's mock "keyError").
fn key_error() -> FaultAction {
    FaultAction::KeyError(Box::new(kvrpcpb::KeyError {
        abort: "keyError".to_owned(),
        ..Default::default()
    }))
}

/// Commits `key` = `value` in a transaction whose backoff budget is 1 s.
async fn commit_one<E: Env>(tc: &TxnCluster<'_, E>, key: &str) -> Result<(), Error> {
    let mut txn = tc
        .begin_with(TransactionOptions::new().with_testing_knobs(budget_knobs(1_000)))
        .await;
    ok("put", txn.put(b(key), b("v1")));
    let result = txn.commit().await.map(|_| ());
    if result.is_err() {
        // client-go: no Rollback is needed (or allowed) after a failed Commit.
        assert!(matches!(txn.rollback(), Err(Error::TxnFinished { .. })));
    }
    result
}

/// `TestContextCancelCausingUndetermined`: when the primary's commit fails in transport
/// (Go: the RPC returns `context.Canceled`), the outcome is unknown. The Go test prewrites
/// through a probe first; here the whole commit runs and every `KvCommit` call is
/// cancelled.
pub async fn test_2pc_context_cancel_causing_undetermined<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    tc.inject(
        "KvCommit",
        FaultAction::Status(Status::new(Code::Cancelled, "context canceled")),
        u32::MAX,
    );
    let e = err("commit", commit_one(&tc, "a").await);
    assert!(e.is_undetermined(), "{e}");
    tc.clear_faults();
}

/// `TestFailCommitPrimaryRpcErrors`: transport failures of the primary's commit until the
/// budget runs out: undetermined.
pub async fn test_2pc_fail_commit_primary_rpc_errors<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    tc.inject("KvCommit", rpc_error(), u32::MAX);
    let e = err("commit", commit_one(&tc, "a").await);
    assert!(e.is_undetermined(), "{e}");
    tc.clear_faults();
}

/// `TestFailCommitPrimaryRegionError`: region errors until the budget runs out are not
/// undetermined (the store never took the commit).
pub async fn test_2pc_fail_commit_primary_region_error<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    let region = tc.region_of(b"b");
    tc.inject("KvCommit", not_leader(region), u32::MAX);
    let e = err("commit", commit_one(&tc, "b").await);
    assert!(!e.is_undetermined(), "{e}");
    tc.clear_faults();
}

/// `TestFailCommitPrimaryRPCErrorThenRegionError`: one transport failure, then region
/// errors: undetermined (the first attempt may have applied).
pub async fn test_2pc_fail_commit_primary_rpc_error_then_region_error<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    let region = tc.region_of(b"a");
    tc.inject("KvCommit", rpc_error(), 1);
    tc.inject("KvCommit", not_leader(region), u32::MAX);
    let e = err("commit", commit_one(&tc, "a").await);
    assert!(e.is_undetermined(), "{e}");
    tc.clear_faults();
}

/// `TestFailCommitPrimaryKeyError`: a key error on the primary's commit is not
/// undetermined.
pub async fn test_2pc_fail_commit_primary_key_error<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    tc.inject("KvCommit", key_error(), u32::MAX);
    let e = err("commit", commit_one(&tc, "c").await);
    assert!(!e.is_undetermined(), "{e}");
    tc.clear_faults();
}

/// `TestFailCommitPrimaryRPCErrorThenKeyError`: a transport failure then a key error: the
/// store answered, so the key error is what counts, not undetermined.
pub async fn test_2pc_fail_commit_primary_rpc_error_then_key_error<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    tc.inject("KvCommit", rpc_error(), 1);
    tc.inject("KvCommit", key_error(), u32::MAX);
    let e = err("commit", commit_one(&tc, "c").await);
    assert!(!e.is_undetermined(), "{e}");
    tc.clear_faults();
}

/// `TestFailCommitTimeout`: the primary's commit applies but its answer says the result
/// is unknown (`rpcCommitTimeout`); the commit fails, yet the writes are committed:
/// readers resolve the secondaries from the committed primary.
pub async fn test_2pc_fail_commit_timeout<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    tc.inject("KvCommit", undetermined(), 1);
    let mut txn = tc.begin().await;
    for key in ["a", "b", "c"] {
        ok("put", txn.put(b(key), b(format!("{key}1"))));
    }
    let e = err("commit", txn.commit().await);
    assert!(e.is_undetermined(), "{e}");
    let txn2 = tc.begin().await;
    for key in ["a", "b"] {
        let value = ok("get", txn2.get(b(key)).await);
        assert!(value.is_some_and(|v| !v.is_empty()), "{key}");
    }
}

/// `TestFailWithUndeterminedResult`: an undetermined answer to a two-phase prewrite is
/// retried (prewriting is repeatable and decides nothing) and the commit succeeds; an
/// undetermined answer to the primary's commit fails the commit as undetermined.
pub async fn test_2pc_fail_with_undetermined_result<E: Env>(env: &E) {
    let tc = start_2pc(env).await;
    tc.inject("KvPrewrite", undetermined(), 1);
    let mut txn = tc.begin().await;
    ok("put", txn.put(b("key"), b("value")));
    ok("commit", txn.commit().await);

    tc.inject("KvCommit", undetermined(), 1);
    let mut txn = tc
        .begin_with(TransactionOptions::new().with_testing_knobs(CommitKnobs::default()))
        .await;
    ok("put", txn.put(b("key"), b("value")));
    let e = err("commit", txn.commit().await);
    assert!(e.is_undetermined(), "{e}");
}
