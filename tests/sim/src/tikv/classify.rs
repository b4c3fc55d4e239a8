//! What kind of request a store is looking at: its keys, whether it writes, whether a
//! follower may serve it, the timestamp it reads at, and its key-error form.

use bytes::Bytes;
use tikv_proto::kvrpcpb;
use tikv_proto::tikvpb::batch_commands_request::request::Cmd as Req;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as Resp;

use super::{TikvRequest, TikvResponse};
use crate::cluster::Access;

/// A response of `request`'s type carrying `err` as its key error, for the commands that
/// report key errors.
/// A pair carrying only `error`, as TiKV answers a failed key.
fn error_pair(error: &Option<Box<kvrpcpb::KeyError>>) -> kvrpcpb::KvPair {
    kvrpcpb::KvPair {
        error: error.clone(),
        ..Default::default()
    }
}

pub(super) fn key_error_response(
    request: &TikvRequest,
    err: kvrpcpb::KeyError,
) -> Option<TikvResponse> {
    let TikvRequest::Batch(cmd) = request else {
        return None;
    };
    let one = Some(Box::new(err.clone()));
    let many = vec![err];
    let response = match cmd {
        Req::Get(_) => Resp::Get(kvrpcpb::GetResponse {
            error: one,
            ..Default::default()
        }),
        // TiKV repeats a whole-request error in the first pair of a scan or batch get, for
        // older clients (`future_scan`, `future_batch_get` in `server/service/kv.rs`).
        Req::Scan(_) => Resp::Scan(kvrpcpb::ScanResponse {
            pairs: vec![error_pair(&one)],
            error: one,
            ..Default::default()
        }),
        Req::BatchGet(_) => Resp::BatchGet(kvrpcpb::BatchGetResponse {
            pairs: vec![error_pair(&one)],
            error: one,
            ..Default::default()
        }),
        Req::Prewrite(_) => Resp::Prewrite(kvrpcpb::PrewriteResponse {
            errors: many,
            ..Default::default()
        }),
        Req::Commit(_) => Resp::Commit(kvrpcpb::CommitResponse {
            error: one,
            ..Default::default()
        }),
        Req::Cleanup(_) => Resp::Cleanup(kvrpcpb::CleanupResponse {
            error: one,
            ..Default::default()
        }),
        Req::BatchRollback(_) => Resp::BatchRollback(kvrpcpb::BatchRollbackResponse {
            error: one,
            ..Default::default()
        }),
        Req::ScanLock(_) => Resp::ScanLock(kvrpcpb::ScanLockResponse {
            error: one,
            ..Default::default()
        }),
        Req::ResolveLock(_) => Resp::ResolveLock(kvrpcpb::ResolveLockResponse {
            error: one,
            ..Default::default()
        }),
        Req::PessimisticLock(_) => Resp::PessimisticLock(kvrpcpb::PessimisticLockResponse {
            errors: many,
            ..Default::default()
        }),
        Req::PessimisticRollback(_) => {
            Resp::PessimisticRollback(kvrpcpb::PessimisticRollbackResponse {
                errors: many,
                ..Default::default()
            })
        }
        Req::CheckTxnStatus(_) => Resp::CheckTxnStatus(kvrpcpb::CheckTxnStatusResponse {
            error: one,
            ..Default::default()
        }),
        Req::TxnHeartBeat(_) => Resp::TxnHeartBeat(kvrpcpb::TxnHeartBeatResponse {
            error: one,
            ..Default::default()
        }),
        Req::CheckSecondaryLocks(_) => {
            Resp::CheckSecondaryLocks(kvrpcpb::CheckSecondaryLocksResponse {
                error: one,
                ..Default::default()
            })
        }
        Req::Flush(_) => Resp::Flush(kvrpcpb::FlushResponse {
            errors: many,
            ..Default::default()
        }),
        _ => return None,
    };
    Some(TikvResponse::Batch(response))
}

/// Whether a request writes data (what can make a region grow).
/// Whether TiKV proposes `request` through raft (it writes), so that a leader on a full
/// disk checks its `disk_full_opt` first. Status checks, which write only sometimes, are
/// left out.
pub(super) fn proposes(request: &TikvRequest) -> bool {
    match request {
        TikvRequest::Batch(cmd) => matches!(
            cmd,
            Req::RawPut(_)
                | Req::RawBatchPut(_)
                | Req::RawDelete(_)
                | Req::RawBatchDelete(_)
                | Req::RawDeleteRange(_)
                | Req::Prewrite(_)
                | Req::Commit(_)
                | Req::Cleanup(_)
                | Req::BatchRollback(_)
                | Req::ResolveLock(_)
                | Req::TxnHeartBeat(_)
                | Req::PessimisticLock(_)
                | Req::PessimisticRollback(_)
                | Req::Flush(_)
                | Req::DeleteRange(_)
        ),
        TikvRequest::RawCas(_) => true,
        _ => false,
    }
}

pub(super) fn is_write(request: &TikvRequest) -> bool {
    match request {
        TikvRequest::Batch(cmd) => matches!(
            cmd,
            Req::RawPut(_)
                | Req::RawBatchPut(_)
                | Req::Prewrite(_)
                | Req::Commit(_)
                | Req::Flush(_)
        ),
        TikvRequest::RawCas(_) => true,
        _ => false,
    }
}

/// How many keys and bytes a write request puts into its region (keys plus values), what
/// TiKV's apply path adds to the region's split-check size diff.
pub(super) fn written_size(request: &TikvRequest, keys: &[Bytes]) -> (u64, u64) {
    let key_bytes: u64 = keys.iter().map(|key| key.len() as u64).sum();
    let value_bytes: u64 = match request {
        TikvRequest::Batch(Req::RawPut(r)) => r.value.len() as u64,
        TikvRequest::Batch(Req::RawBatchPut(r)) => {
            r.pairs.iter().map(|pair| pair.value.len() as u64).sum()
        }
        TikvRequest::Batch(Req::Prewrite(r)) => {
            r.mutations.iter().map(|m| m.value.len() as u64).sum()
        }
        TikvRequest::Batch(Req::Flush(r)) => r.mutations.iter().map(|m| m.value.len() as u64).sum(),
        TikvRequest::RawCas(r) => r.value.len() as u64,
        _ => 0,
    };
    (keys.len() as u64, key_bytes + value_bytes)
}

pub(super) fn is_raw(cmd: &Req) -> bool {
    matches!(
        cmd,
        Req::RawGet(_)
            | Req::RawBatchGet(_)
            | Req::RawPut(_)
            | Req::RawBatchPut(_)
            | Req::RawDelete(_)
            | Req::RawBatchDelete(_)
            | Req::RawScan(_)
            | Req::RawDeleteRange(_)
            | Req::RawBatchScan(_)
            | Req::RawCoprocessor(_)
    )
}

/// The keys whose region membership TiKV checks before executing (range commands check their
/// start; the range itself is clamped to the region).
pub(super) fn touched(request: &TikvRequest) -> Vec<Bytes> {
    let single = |key: &Bytes| vec![key.clone()];
    match request {
        TikvRequest::Batch(cmd) => match cmd {
            Req::Get(r) => single(&r.key),
            Req::BatchGet(r) => r.keys.clone(),
            Req::Scan(r) if !r.reverse => single(&r.start_key),
            Req::Prewrite(r) => r.mutations.iter().map(|m| m.key.clone()).collect(),
            Req::Commit(r) => r.keys.clone(),
            Req::Cleanup(r) => single(&r.key),
            Req::BatchRollback(r) => r.keys.clone(),
            Req::ResolveLock(r) => r.keys.clone(),
            Req::RawGet(r) => single(&r.key),
            Req::RawBatchGet(r) => r.keys.clone(),
            Req::RawPut(r) => single(&r.key),
            Req::RawBatchPut(r) => r.pairs.iter().map(|p| p.key.clone()).collect(),
            Req::RawDelete(r) => single(&r.key),
            Req::RawBatchDelete(r) => r.keys.clone(),
            Req::RawScan(r) if !r.reverse => single(&r.start_key),
            Req::RawDeleteRange(r) => single(&r.start_key),
            Req::PessimisticLock(r) => r.mutations.iter().map(|m| m.key.clone()).collect(),
            Req::PessimisticRollback(r) => r.keys.clone(),
            Req::CheckTxnStatus(r) => single(&r.primary_key),
            Req::TxnHeartBeat(r) => single(&r.primary_lock),
            Req::CheckSecondaryLocks(r) => r.keys.clone(),
            Req::Flush(r) => r.mutations.iter().map(|m| m.key.clone()).collect(),
            Req::BufferBatchGet(r) => r.keys.clone(),
            _ => Vec::new(),
        },
        TikvRequest::RawGetKeyTtl(r) => single(&r.key),
        TikvRequest::RawCas(r) => single(&r.key),
        TikvRequest::RawChecksum(_)
        | TikvRequest::SplitRegion(_)
        | TikvRequest::UnsafeDestroyRange(_)
        | TikvRequest::StoreSafeTs(_) => Vec::new(),
    }
}

/// Whether a peer that is not the leader may take `request` (see [`Access`]).
pub(super) fn access(request: &TikvRequest) -> Access {
    match request {
        TikvRequest::Batch(cmd) => match cmd {
            Req::Get(_)
            | Req::BatchGet(_)
            | Req::Scan(_)
            | Req::BufferBatchGet(_)
            | Req::RawGet(_)
            | Req::RawBatchGet(_)
            | Req::RawScan(_)
            | Req::RawBatchScan(_)
            | Req::Empty(_) => Access::Read,
            // TiKV's `Storage::scan_lock` clears `replica_read` before taking its snapshot.
            Req::ScanLock(_) => Access::LeaderRead,
            _ => Access::Write,
        },
        TikvRequest::RawGetKeyTtl(_) | TikvRequest::RawChecksum(_) => Access::Read,
        TikvRequest::RawCas(_)
        | TikvRequest::SplitRegion(_)
        | TikvRequest::UnsafeDestroyRange(_)
        | TikvRequest::StoreSafeTs(_) => Access::Write,
    }
}

/// The timestamp a read reads at, what a stale read's safe ts is compared with and a
/// replica read's read index carries (TiKV's `SnapContext::start_ts`; 0 for raw reads,
/// which have none).
pub(super) fn read_ts(request: &TikvRequest) -> u64 {
    match request {
        TikvRequest::Batch(Req::Get(r)) => r.version,
        TikvRequest::Batch(Req::BatchGet(r)) => r.version,
        TikvRequest::Batch(Req::Scan(r)) => r.version,
        TikvRequest::Batch(Req::BufferBatchGet(r)) => r.version,
        TikvRequest::Batch(Req::ScanLock(r)) => r.max_version,
        _ => 0,
    }
}
