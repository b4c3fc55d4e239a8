//! A transactional client of one simulated cluster, driven request by request on virtual
//! time: requests go to the leader of their key's region, lock waits are parked and come
//! back through [`TxnHarness::answers`] as the clock moves.

use bytes::Bytes;
use tikv_proto::kvrpcpb::{self, Op, PessimisticLockWakeUpMode};
use tikv_proto::tikvpb::batch_commands_request::request::Cmd as Req;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as Resp;
use tikv_sim::cluster::KeyMode;
use tikv_sim::tikv::{Execution, TikvRequest, TikvResponse};
use tikv_sim::{Sim, SimConfig};

/// Bytes of a string.
pub(crate) fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A pessimistic lock request in normal mode that waits the default time (`wait_timeout`
/// 0) and is not the transaction's first lock (so deadlocks are detected).
pub(crate) fn lock_req(
    keys: &[&str],
    primary: &str,
    start_ts: u64,
    for_update_ts: u64,
) -> kvrpcpb::PessimisticLockRequest {
    kvrpcpb::PessimisticLockRequest {
        mutations: keys
            .iter()
            .map(|key| kvrpcpb::Mutation {
                op: Op::PessimisticLock as i32,
                key: b(key),
                ..Default::default()
            })
            .collect(),
        primary_lock: b(primary),
        start_version: start_ts,
        for_update_ts,
        lock_ttl: 3000,
        wait_timeout: 0,
        ..Default::default()
    }
}

/// The same request asking for shared locks.
pub(crate) fn shared(mut req: kvrpcpb::PessimisticLockRequest) -> kvrpcpb::PessimisticLockRequest {
    for m in &mut req.mutations {
        m.op = Op::SharedPessimisticLock as i32;
    }
    req
}

/// The same request in ForceLock wake-up mode.
pub(crate) fn force(mut req: kvrpcpb::PessimisticLockRequest) -> kvrpcpb::PessimisticLockRequest {
    req.wake_up_mode = PessimisticLockWakeUpMode::WakeUpModeForceLock as i32;
    req
}

/// The same request with `wait_timeout` set (negative: do not wait).
pub(crate) fn timeout(
    mut req: kvrpcpb::PessimisticLockRequest,
    wait_timeout: i64,
) -> kvrpcpb::PessimisticLockRequest {
    req.wait_timeout = wait_timeout;
    req
}

/// A pessimistic 2PC prewrite of `(op, key, value)` mutations, each with its action.
pub(crate) fn pessimistic_prewrite(
    mutations: &[(Op, &str, &str, kvrpcpb::prewrite_request::PessimisticAction)],
    primary: &str,
    start_ts: u64,
    for_update_ts: u64,
) -> kvrpcpb::PrewriteRequest {
    kvrpcpb::PrewriteRequest {
        mutations: mutations
            .iter()
            .map(|(op, key, value, _)| kvrpcpb::Mutation {
                op: *op as i32,
                key: b(key),
                value: b(value),
                ..Default::default()
            })
            .collect(),
        pessimistic_actions: mutations
            .iter()
            .map(|(_, _, _, action)| *action as i32)
            .collect(),
        primary_lock: b(primary),
        start_version: start_ts,
        for_update_ts,
        lock_ttl: 3000,
        min_commit_ts: start_ts + 1,
        ..Default::default()
    }
}

/// One simulated cluster and its virtual clock.
pub(crate) struct TxnHarness {
    pub(crate) sim: Sim,
    pub(crate) now_ms: u64,
}

impl TxnHarness {
    /// A default cluster.
    pub(crate) fn new() -> Self {
        Self::with(SimConfig::default())
    }

    /// A cluster built from `config`.
    pub(crate) fn with(config: SimConfig) -> Self {
        Self {
            sim: Sim::new(config).expect("valid config"),
            now_ms: 1_700_000_000_000,
        }
    }

    /// Runs `cmd` on the leader of `key`'s region, with that region's context filled in.
    pub(crate) fn execute(&mut self, key: &[u8], cmd: Req) -> Execution {
        let (store_id, context) = self
            .sim
            .leader_context(&KeyMode::Encoded.to_boundary(key))
            .expect("a leader for the key");
        let context = Some(context);
        let cmd = match cmd {
            Req::PessimisticLock(r) => {
                Req::PessimisticLock(kvrpcpb::PessimisticLockRequest { context, ..r })
            }
            Req::Prewrite(r) => Req::Prewrite(kvrpcpb::PrewriteRequest { context, ..r }),
            Req::Commit(r) => Req::Commit(kvrpcpb::CommitRequest { context, ..r }),
            Req::BatchRollback(r) => {
                Req::BatchRollback(kvrpcpb::BatchRollbackRequest { context, ..r })
            }
            Req::PessimisticRollback(r) => {
                Req::PessimisticRollback(kvrpcpb::PessimisticRollbackRequest { context, ..r })
            }
            Req::BroadcastTxnStatus(r) => {
                Req::BroadcastTxnStatus(kvrpcpb::BroadcastTxnStatusRequest { context, ..r })
            }
            Req::Get(r) => Req::Get(kvrpcpb::GetRequest { context, ..r }),
            Req::ScanLock(r) => Req::ScanLock(kvrpcpb::ScanLockRequest { context, ..r }),
            other => other,
        };
        self.sim
            .execute(store_id, TikvRequest::Batch(cmd), self.now_ms)
    }

    fn done(&mut self, key: &[u8], cmd: Req) -> Resp {
        match self.execute(key, cmd) {
            Execution::Done(TikvResponse::Batch(resp)) => resp,
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    /// Sends a pessimistic lock request; the answer or the id it is parked under.
    pub(crate) fn lock(&mut self, req: kvrpcpb::PessimisticLockRequest) -> LockOutcome {
        let key = req.mutations[0].key.clone();
        match self.execute(&key, Req::PessimisticLock(req)) {
            Execution::Done(TikvResponse::Batch(Resp::PessimisticLock(resp))) => {
                LockOutcome::Done(resp)
            }
            Execution::Parked(id) => LockOutcome::Parked(id),
            other => panic!("unexpected lock outcome {other:?}"),
        }
    }

    /// A lock request that must be answered at once.
    pub(crate) fn lock_done(
        &mut self,
        req: kvrpcpb::PessimisticLockRequest,
    ) -> kvrpcpb::PessimisticLockResponse {
        match self.lock(req) {
            LockOutcome::Done(resp) => resp,
            LockOutcome::Parked(id) => panic!("request parked as {id}"),
        }
    }

    /// A lock request that must succeed at once.
    pub(crate) fn must_lock(&mut self, req: kvrpcpb::PessimisticLockRequest) {
        let resp = self.lock_done(req);
        assert!(resp.errors.is_empty(), "lock failed: {:?}", resp.errors);
    }

    /// A lock request that must wait; returns its id.
    pub(crate) fn must_park(&mut self, req: kvrpcpb::PessimisticLockRequest) -> u64 {
        match self.lock(req) {
            LockOutcome::Parked(id) => id,
            LockOutcome::Done(resp) => panic!("expected a wait, got {resp:?}"),
        }
    }

    /// Prewrite.
    pub(crate) fn prewrite(&mut self, req: kvrpcpb::PrewriteRequest) -> kvrpcpb::PrewriteResponse {
        let key = req.mutations[0].key.clone();
        match self.done(&key, Req::Prewrite(req)) {
            Resp::Prewrite(resp) => resp,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A prewrite that must succeed.
    pub(crate) fn must_prewrite(&mut self, req: kvrpcpb::PrewriteRequest) {
        let resp = self.prewrite(req);
        assert!(resp.errors.is_empty(), "prewrite failed: {:?}", resp.errors);
    }

    /// Commit of `keys`.
    pub(crate) fn commit(
        &mut self,
        keys: &[&str],
        start_ts: u64,
        commit_ts: u64,
    ) -> kvrpcpb::CommitResponse {
        let req = kvrpcpb::CommitRequest {
            keys: keys.iter().map(|k| b(k)).collect(),
            start_version: start_ts,
            commit_version: commit_ts,
            ..Default::default()
        };
        match self.done(keys[0].as_bytes(), Req::Commit(req)) {
            Resp::Commit(resp) => resp,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A commit that must succeed.
    pub(crate) fn must_commit(&mut self, keys: &[&str], start_ts: u64, commit_ts: u64) {
        let resp = self.commit(keys, start_ts, commit_ts);
        assert!(resp.error.is_none(), "commit failed: {:?}", resp.error);
    }

    /// BatchRollback of `keys`, which must succeed.
    pub(crate) fn must_rollback(&mut self, keys: &[&str], start_ts: u64) {
        let req = kvrpcpb::BatchRollbackRequest {
            keys: keys.iter().map(|k| b(k)).collect(),
            start_version: start_ts,
            ..Default::default()
        };
        match self.done(keys[0].as_bytes(), Req::BatchRollback(req)) {
            Resp::BatchRollback(resp) => assert!(resp.error.is_none(), "{:?}", resp.error),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// BroadcastTxnStatus of `statuses` to the leader of `key`.
    pub(crate) fn broadcast(&mut self, key: &str, statuses: Vec<kvrpcpb::TxnStatus>) {
        let req = kvrpcpb::BroadcastTxnStatusRequest {
            txn_status: statuses,
            ..Default::default()
        };
        match self.done(key.as_bytes(), Req::BroadcastTxnStatus(req)) {
            Resp::BroadcastTxnStatus(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    /// ScanLock over everything at `max_version`, `limit` 0 = all.
    pub(crate) fn scan_lock(&mut self, max_version: u64, limit: u32) -> Vec<kvrpcpb::LockInfo> {
        let req = kvrpcpb::ScanLockRequest {
            max_version,
            limit,
            ..Default::default()
        };
        match self.done(b"", Req::ScanLock(req)) {
            Resp::ScanLock(resp) => {
                assert!(resp.error.is_none(), "{:?}", resp.error);
                resp.locks
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Get of `key` at `version`.
    pub(crate) fn get(&mut self, key: &str, version: u64) -> kvrpcpb::GetResponse {
        let req = kvrpcpb::GetRequest {
            key: b(key),
            version,
            ..Default::default()
        };
        match self.done(key.as_bytes(), Req::Get(req)) {
            Resp::Get(resp) => resp,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Moves the clock `ms` forward and runs the lock manager's due timers.
    pub(crate) fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
        self.sim.handle_timeout(self.now_ms);
    }

    /// Answers to parked lock requests so far, in the order they were given.
    pub(crate) fn answers(&mut self) -> Vec<(u64, kvrpcpb::PessimisticLockResponse)> {
        let mut answers = Vec::new();
        while let Some((id, response)) = self.sim.poll_ready() {
            match response {
                TikvResponse::Batch(Resp::PessimisticLock(resp)) => answers.push((id, resp)),
                other => panic!("unexpected parked answer {other:?}"),
            }
        }
        answers
    }

    /// The ids answered so far, in order (dropping the answers).
    pub(crate) fn answered_ids(&mut self) -> Vec<u64> {
        self.answers().into_iter().map(|(id, _)| id).collect()
    }
}

/// What a lock request did.
#[derive(Debug)]
pub(crate) enum LockOutcome {
    /// Answered.
    Done(kvrpcpb::PessimisticLockResponse),
    /// Waiting under this id.
    Parked(u64),
}

/// The (conflict start ts, conflict commit ts) of a WriteConflict answer.
pub(crate) fn write_conflict(resp: &kvrpcpb::PessimisticLockResponse) -> (u64, u64) {
    let conflict = resp
        .errors
        .first()
        .and_then(|e| e.conflict.clone())
        .unwrap_or_else(|| panic!("expected a write conflict, got {resp:?}"));
    assert_eq!(
        conflict.reason,
        kvrpcpb::write_conflict::Reason::PessimisticRetry as i32
    );
    (conflict.conflict_ts, conflict.conflict_commit_ts)
}

/// The lock of a KeyIsLocked answer.
pub(crate) fn locked(resp: &kvrpcpb::PessimisticLockResponse) -> kvrpcpb::LockInfo {
    resp.errors
        .first()
        .and_then(|e| e.locked.as_deref().cloned())
        .unwrap_or_else(|| panic!("expected KeyIsLocked, got {resp:?}"))
}
