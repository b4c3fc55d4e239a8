//! The TiKV side of the simulated cluster: what every store does with a request.
//!
//! Injected faults get the first chance at a request. Then it is checked in TiKV's order:
//! store up and cluster id; for transactional commands TiKV's storage checks (API version,
//! key mode, key size: [`crate::admission`]) and, for reads, the `max_ts` update before the
//! snapshot; then store, region, peer, leader, term, epoch and keys in range (see
//! [`crate::cluster::Cluster::check_context`]; writes only on the leader); a read on a
//! follower or learner then passes the safe-ts check of a stale read or waits for the read
//! index of a replica read (see [`crate::replica`]); then the command's own refusals (a
//! `max_ts` update past its limit, an async-commit prewrite to a leader that has not
//! synced). The command runs against the one shared storage, the MVCC store (with the
//! serving store's `max_ts` and transaction status cache installed, see
//! [`crate::concurrency`]) for transactional commands and the raw store for raw ones; a
//! write appends an entry to its region's log. Range commands (and ResolveLock /
//! PessimisticRollback without keys)
//! are clamped to the region they were sent to, as TiKV's region snapshots clamp them, so a
//! scan returns only what that region holds. Region errors go into the response's
//! `region_error`, as TiKV sends them.

use bytes::Bytes;
use prost::Message;
use tikv_proto::codec;
use tikv_proto::frame::Framed;
use tikv_proto::kvrpcpb::{self, ApiVersion};
use tikv_proto::status::{Code, Status};
use tikv_proto::tikvpb;
use tikv_proto::tikvpb::batch_commands_request::request::Cmd as Req;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as Resp;
use tikv_proto::{errorpb, metapb};

mod classify;

use classify::{
    access, is_raw, is_write, key_error_response, proposes, read_ts, touched, written_size,
};

use crate::admission::refuse_txn_request;
use crate::cluster::{Access, ContextError, KeyMode, Touched};
use crate::faults::FaultAction;
use crate::replica::ReadGate;
use crate::sim::Sim;

/// A request to a store: a BatchCommands arm, or a command only the unary API carries.
#[derive(Clone, Debug, PartialEq)]
pub enum TikvRequest {
    /// Any command BatchCommands can carry.
    Batch(Req),
    /// RawGetKeyTTL.
    RawGetKeyTtl(kvrpcpb::RawGetKeyTtlRequest),
    /// RawCompareAndSwap.
    RawCas(kvrpcpb::RawCasRequest),
    /// RawChecksum.
    RawChecksum(kvrpcpb::RawChecksumRequest),
    /// SplitRegion.
    SplitRegion(kvrpcpb::SplitRegionRequest),
    /// UnsafeDestroyRange (store-wide, no region).
    UnsafeDestroyRange(kvrpcpb::UnsafeDestroyRangeRequest),
    /// GetStoreSafeTS (store-wide, no region).
    StoreSafeTs(kvrpcpb::StoreSafeTsRequest),
}

/// A store's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum TikvResponse {
    /// Any command BatchCommands can carry.
    Batch(Resp),
    /// RawGetKeyTTL.
    RawGetKeyTtl(kvrpcpb::RawGetKeyTtlResponse),
    /// RawCompareAndSwap.
    RawCas(kvrpcpb::RawCasResponse),
    /// RawChecksum.
    RawChecksum(kvrpcpb::RawChecksumResponse),
    /// SplitRegion.
    SplitRegion(kvrpcpb::SplitRegionResponse),
    /// UnsafeDestroyRange.
    UnsafeDestroyRange(kvrpcpb::UnsafeDestroyRangeResponse),
    /// GetStoreSafeTS.
    StoreSafeTs(kvrpcpb::StoreSafeTsResponse),
}

/// What running a request produced.
#[derive(Clone, Debug, PartialEq)]
pub enum Execution {
    /// The answer.
    Done(TikvResponse),
    /// A pessimistic lock request is waiting for another transaction's lock; its answer comes
    /// later from [`Sim::poll_ready`] under this id.
    Parked(u64),
    /// The request fails at the gRPC level (store down, cluster id mismatch, injected).
    Failed(Status),
    /// An injected fault: the request (or its reply) is lost; the caller never answers.
    Dropped,
    /// An injected delay (or a slow store): hold the request `delay_ms`, then run it with
    /// [`Sim::execute_after_delay`].
    Delayed {
        /// How long to hold it.
        delay_ms: u64,
        /// The request to run then.
        request: TikvRequest,
    },
}

/// Maps unary paths to BatchCommands arms and back, in one table.
macro_rules! batch_table {
    ($( $arm:ident, $method:ident, $req:ident, $resp:ident; )*) => {
        /// Decodes a unary request whose method BatchCommands also carries.
        fn decode_batchable(path: &str, payload: Bytes) -> Option<Result<Req, prost::DecodeError>> {
            $(
                if path == tikvpb::tikv::$method.path() {
                    return Some(kvrpcpb::$req::decode(payload).map(Req::$arm));
                }
            )*
            None
        }

        /// Encodes a batchable response for a unary call.
        fn encode_batchable(response: &Resp) -> Option<Vec<u8>> {
            match response {
                $( Resp::$arm(r) => Some(r.encode_to_vec()), )*
                _ => None,
            }
        }

        /// An empty response of `request`'s type carrying `err` as its region error.
        fn region_error_response(request: &Req, err: errorpb::Error) -> Option<Resp> {
            match request {
                $( Req::$arm(_) => Some(Resp::$arm(kvrpcpb::$resp {
                    region_error: Some(Box::new(err)),
                    ..Default::default()
                })), )*
                _ => None,
            }
        }

        /// The command's method name, for fault matching.
        fn batch_name(request: &Req) -> &'static str {
            match request {
                $( Req::$arm(_) => tikvpb::tikv::$method.desc.name, )*
                _ => "Other",
            }
        }

        /// The request's context.
        fn batch_context(request: &Req) -> Option<&kvrpcpb::Context> {
            match request {
                $( Req::$arm(r) => r.context.as_ref(), )*
                _ => None,
            }
        }
    };
}

batch_table! {
    Get, KV_GET, GetRequest, GetResponse;
    Scan, KV_SCAN, ScanRequest, ScanResponse;
    Prewrite, KV_PREWRITE, PrewriteRequest, PrewriteResponse;
    Commit, KV_COMMIT, CommitRequest, CommitResponse;
    Cleanup, KV_CLEANUP, CleanupRequest, CleanupResponse;
    BatchGet, KV_BATCH_GET, BatchGetRequest, BatchGetResponse;
    BatchRollback, KV_BATCH_ROLLBACK, BatchRollbackRequest, BatchRollbackResponse;
    ScanLock, KV_SCAN_LOCK, ScanLockRequest, ScanLockResponse;
    ResolveLock, KV_RESOLVE_LOCK, ResolveLockRequest, ResolveLockResponse;
    DeleteRange, KV_DELETE_RANGE, DeleteRangeRequest, DeleteRangeResponse;
    RawGet, RAW_GET, RawGetRequest, RawGetResponse;
    RawBatchGet, RAW_BATCH_GET, RawBatchGetRequest, RawBatchGetResponse;
    RawPut, RAW_PUT, RawPutRequest, RawPutResponse;
    RawBatchPut, RAW_BATCH_PUT, RawBatchPutRequest, RawBatchPutResponse;
    RawDelete, RAW_DELETE, RawDeleteRequest, RawDeleteResponse;
    RawBatchDelete, RAW_BATCH_DELETE, RawBatchDeleteRequest, RawBatchDeleteResponse;
    RawScan, RAW_SCAN, RawScanRequest, RawScanResponse;
    RawDeleteRange, RAW_DELETE_RANGE, RawDeleteRangeRequest, RawDeleteRangeResponse;
    RawBatchScan, RAW_BATCH_SCAN, RawBatchScanRequest, RawBatchScanResponse;
    PessimisticLock, KV_PESSIMISTIC_LOCK, PessimisticLockRequest, PessimisticLockResponse;
    PessimisticRollback, KV_PESSIMISTIC_ROLLBACK, PessimisticRollbackRequest, PessimisticRollbackResponse;
    CheckTxnStatus, KV_CHECK_TXN_STATUS, CheckTxnStatusRequest, CheckTxnStatusResponse;
    TxnHeartBeat, KV_TXN_HEART_BEAT, TxnHeartBeatRequest, TxnHeartBeatResponse;
    CheckSecondaryLocks, KV_CHECK_SECONDARY_LOCKS, CheckSecondaryLocksRequest, CheckSecondaryLocksResponse;
    Flush, KV_FLUSH, FlushRequest, FlushResponse;
    BufferBatchGet, KV_BUFFER_BATCH_GET, BufferBatchGetRequest, BufferBatchGetResponse;
}

fn internal(err: impl std::fmt::Display) -> Status {
    Status::new(Code::Internal, err.to_string())
}

impl TikvRequest {
    /// Decodes the unary request at `path`.
    ///
    /// Errors with `UNIMPLEMENTED` for a method the simulator does not serve and `INTERNAL`
    /// for a payload that is not valid protobuf, as a gRPC server answers them.
    pub fn decode(path: &str, payload: Bytes) -> Result<Self, Status> {
        if let Some(decoded) = decode_batchable(path, payload.clone()) {
            return decoded.map(Self::Batch).map_err(internal);
        }
        let t = &tikvpb::tikv::RAW_GET_KEY_TTL;
        if path == t.path() {
            return kvrpcpb::RawGetKeyTtlRequest::decode(payload)
                .map(Self::RawGetKeyTtl)
                .map_err(internal);
        }
        if path == tikvpb::tikv::RAW_COMPARE_AND_SWAP.path() {
            return kvrpcpb::RawCasRequest::decode(payload)
                .map(Self::RawCas)
                .map_err(internal);
        }
        if path == tikvpb::tikv::RAW_CHECKSUM.path() {
            return kvrpcpb::RawChecksumRequest::decode(payload)
                .map(Self::RawChecksum)
                .map_err(internal);
        }
        if path == tikvpb::tikv::SPLIT_REGION.path() {
            return kvrpcpb::SplitRegionRequest::decode(payload)
                .map(Self::SplitRegion)
                .map_err(internal);
        }
        if path == tikvpb::tikv::BROADCAST_TXN_STATUS.path() {
            return kvrpcpb::BroadcastTxnStatusRequest::decode(payload)
                .map(|req| Self::Batch(Req::BroadcastTxnStatus(req)))
                .map_err(internal);
        }
        if path == tikvpb::tikv::UNSAFE_DESTROY_RANGE.path() {
            return kvrpcpb::UnsafeDestroyRangeRequest::decode(payload)
                .map(Self::UnsafeDestroyRange)
                .map_err(internal);
        }
        if path == tikvpb::tikv::GET_STORE_SAFE_TS.path() {
            return kvrpcpb::StoreSafeTsRequest::decode(payload)
                .map(Self::StoreSafeTs)
                .map_err(internal);
        }
        Err(Status::new(
            Code::Unimplemented,
            format!("unknown method {path}"),
        ))
    }

    /// The command's method name (`RawGet`, `KvPrewrite`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Batch(Req::BroadcastTxnStatus(_)) => tikvpb::tikv::BROADCAST_TXN_STATUS.desc.name,
            Self::Batch(cmd) => batch_name(cmd),
            Self::RawGetKeyTtl(_) => tikvpb::tikv::RAW_GET_KEY_TTL.desc.name,
            Self::RawCas(_) => tikvpb::tikv::RAW_COMPARE_AND_SWAP.desc.name,
            Self::RawChecksum(_) => tikvpb::tikv::RAW_CHECKSUM.desc.name,
            Self::SplitRegion(_) => tikvpb::tikv::SPLIT_REGION.desc.name,
            Self::UnsafeDestroyRange(_) => tikvpb::tikv::UNSAFE_DESTROY_RANGE.desc.name,
            Self::StoreSafeTs(_) => tikvpb::tikv::GET_STORE_SAFE_TS.desc.name,
        }
    }

    /// The request's context (region, epoch, peer), if it carries one.
    pub fn context(&self) -> Option<&kvrpcpb::Context> {
        match self {
            Self::Batch(Req::BroadcastTxnStatus(r)) => r.context.as_ref(),
            Self::Batch(cmd) => batch_context(cmd),
            Self::RawGetKeyTtl(r) => r.context.as_ref(),
            Self::RawCas(r) => r.context.as_ref(),
            Self::RawChecksum(r) => r.context.as_ref(),
            Self::SplitRegion(r) => r.context.as_ref(),
            Self::UnsafeDestroyRange(r) => r.context.as_ref(),
            Self::StoreSafeTs(_) => None,
        }
    }

    fn region_error_response(&self, err: errorpb::Error) -> Option<TikvResponse> {
        Some(match self {
            Self::Batch(cmd) => TikvResponse::Batch(region_error_response(cmd, err)?),
            Self::RawGetKeyTtl(_) => TikvResponse::RawGetKeyTtl(kvrpcpb::RawGetKeyTtlResponse {
                region_error: Some(Box::new(err)),
                ..Default::default()
            }),
            Self::RawCas(_) => TikvResponse::RawCas(kvrpcpb::RawCasResponse {
                region_error: Some(Box::new(err)),
                ..Default::default()
            }),
            Self::RawChecksum(_) => TikvResponse::RawChecksum(kvrpcpb::RawChecksumResponse {
                region_error: Some(Box::new(err)),
                ..Default::default()
            }),
            Self::SplitRegion(_) => TikvResponse::SplitRegion(kvrpcpb::SplitRegionResponse {
                region_error: Some(Box::new(err)),
                ..Default::default()
            }),
            Self::UnsafeDestroyRange(_) => {
                TikvResponse::UnsafeDestroyRange(kvrpcpb::UnsafeDestroyRangeResponse {
                    region_error: Some(Box::new(err)),
                    ..Default::default()
                })
            }
            // GetStoreSafeTS has no region error field.
            Self::StoreSafeTs(_) => return None,
        })
    }
}

impl TikvResponse {
    /// Encodes the response for a unary call.
    ///
    /// Errors with `INTERNAL` for a response arm with no unary form (never produced).
    pub fn encode(&self) -> Result<Framed, Status> {
        let payload = match self {
            Self::Batch(Resp::BroadcastTxnStatus(r)) => r.encode_to_vec(),
            Self::Batch(resp) => {
                encode_batchable(resp).ok_or_else(|| internal("response has no unary form"))?
            }
            Self::RawGetKeyTtl(r) => r.encode_to_vec(),
            Self::RawCas(r) => r.encode_to_vec(),
            Self::RawChecksum(r) => r.encode_to_vec(),
            Self::SplitRegion(r) => r.encode_to_vec(),
            Self::UnsafeDestroyRange(r) => r.encode_to_vec(),
            Self::StoreSafeTs(r) => r.encode_to_vec(),
        };
        Framed::from_payload(&payload, usize::MAX).map_err(internal)
    }
}

/// A region's range in the key space requests use (decoded from PD's space when needed).
pub(crate) fn request_space_range(region: &metapb::Region, mode: KeyMode) -> (Bytes, Bytes) {
    let decode = |boundary: &Bytes| -> Bytes {
        match mode {
            KeyMode::Plain => boundary.clone(),
            KeyMode::Encoded => codec::decode_region_key(boundary)
                .map(Bytes::from)
                .unwrap_or_else(|_| boundary.clone()),
        }
    };
    (decode(&region.start_key), decode(&region.end_key))
}

/// `max(a, b)` of two lower bounds.
fn max_start(a: &Bytes, b: &Bytes) -> Bytes {
    if a >= b { a.clone() } else { b.clone() }
}

/// `min(a, b)` of two upper bounds where empty means unbounded.
fn min_end(a: &Bytes, b: &Bytes) -> Bytes {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.clone(),
        (_, true) => a.clone(),
        _ => {
            if a <= b {
                a.clone()
            } else {
                b.clone()
            }
        }
    }
}

impl Sim {
    /// Runs one request on store `store_id` at wall-clock `now_ms`.
    pub fn execute(&mut self, store_id: u64, request: TikvRequest, now_ms: u64) -> Execution {
        let context = request.context().cloned().unwrap_or_default();
        match self
            .faults
            .take(store_id, request.name(), context.region_id)
        {
            Some(FaultAction::RegionError(err)) => {
                return match request.region_error_response(*err) {
                    Some(response) => Execution::Done(response),
                    None => Execution::Failed(internal("no region error form")),
                };
            }
            Some(FaultAction::KeyError(err)) => {
                return match key_error_response(&request, *err) {
                    Some(response) => Execution::Done(response),
                    None => Execution::Failed(internal("command has no key error field")),
                };
            }
            Some(FaultAction::Status(status)) => return Execution::Failed(status),
            Some(FaultAction::Drop) => return Execution::Dropped,
            Some(FaultAction::Delay(delay_ms)) => {
                return Execution::Delayed { delay_ms, request };
            }
            Some(FaultAction::DropReply) => {
                // The command takes effect; only its answer is lost.
                let _ = self.execute_after_delay(store_id, request, now_ms);
                return Execution::Dropped;
            }
            Some(FaultAction::UndeterminedAfterApply) => {
                // The command takes effect; the reply only says its outcome is unknown.
                let execution = self.execute_after_delay(store_id, request.clone(), now_ms);
                return match execution {
                    Execution::Done(_) => match request.region_error_response(undetermined()) {
                        Some(response) => Execution::Done(response),
                        None => Execution::Failed(internal("no region error form")),
                    },
                    other => other,
                };
            }
            Some(FaultAction::AckWithoutApply) => {
                // Run it for its answer, then forget what it wrote (raw data and the
                // transactional store alike; timestamps the store saw stay seen).
                let raw = self.raw.clone();
                let mvcc = self.mvcc.clone();
                let execution = self.execute_after_delay(store_id, request, now_ms);
                let max_ts = self.mvcc.max_ts();
                self.raw = raw;
                self.mvcc = mvcc;
                self.mvcc.update_max_ts(max_ts);
                return execution;
            }
            None => {}
        }
        let latency_ms = self.store_latency_ms(store_id);
        if latency_ms > 0 {
            return Execution::Delayed {
                delay_ms: latency_ms,
                request,
            };
        }
        self.execute_after_delay(store_id, request, now_ms)
    }

    /// Runs a request without consulting faults or store latency (the second half of
    /// [`Execution::Delayed`]).
    pub fn execute_after_delay(
        &mut self,
        store_id: u64,
        request: TikvRequest,
        now_ms: u64,
    ) -> Execution {
        self.advance_clock(now_ms);
        if let TikvRequest::UnsafeDestroyRange(req) = &request {
            return Execution::Done(TikvResponse::UnsafeDestroyRange(
                self.unsafe_destroy_range(store_id, req),
            ));
        }
        if let TikvRequest::Batch(Req::BroadcastTxnStatus(req)) = &request {
            return self.broadcast_txn_status(store_id, req);
        }
        if let TikvRequest::StoreSafeTs(req) = &request {
            return self.store_safe_ts(store_id, req, now_ms);
        }
        // New leaders, splits and merges first change what the stores keep in memory.
        self.observe_cluster(now_ms);
        let execution = self.execute_checked(store_id, request, now_ms, false);
        // A split the command caused goes into the region's log now, before any follower
        // looks at its regions again.
        self.take_cluster_changes();
        // A write may have brought a waiting replica read's replica far enough.
        self.poll_read_waits(now_ms);
        execution
    }

    /// Checks a request in TiKV's order and runs it. `read_index_granted` is set for a
    /// replica read that already waited for its read index: it is not sent through read
    /// index again (and has moved `max_ts` already).
    pub(crate) fn execute_checked(
        &mut self,
        store_id: u64,
        request: TikvRequest,
        now_ms: u64,
        read_index_granted: bool,
    ) -> Execution {
        let context = request.context().cloned().unwrap_or_default();
        let txn_cmd = match &request {
            TikvRequest::Batch(cmd) if !is_raw(cmd) => Some(cmd),
            _ => None,
        };
        let txn =
            txn_cmd.is_some() || matches!(&request, TikvRequest::SplitRegion(r) if !r.is_raw_kv);
        let mode = KeyMode::for_request(context.api_version, txn);
        if let Err(err) = self.cluster.check_store(store_id, &context) {
            return context_failure(&request, err);
        }
        if let Some(cmd) = txn_cmd {
            // TiKV's storage layer checks keys and moves max_ts before raftstore looks at the
            // region.
            if let Some(refused) =
                refuse_txn_request(self.api_version(), self.raw.max_key_size(), cmd)
            {
                return Execution::Done(TikvResponse::Batch(refused));
            }
            if !read_index_granted {
                if let Err(err) = self.before_snapshot(store_id, cmd, now_ms) {
                    return context_failure(&request, ContextError::Region(Box::new(err)));
                }
            }
        }
        let touched_keys = touched(&request);
        let touched: Vec<Touched<'_>> = touched_keys
            .iter()
            .map(|key| Touched::Key(key.as_ref()))
            .collect();
        let access = access(&request);
        if let Err(mut err) =
            self.check_held_context(store_id, &context, &touched, mode, access, now_ms)
        {
            if read_index_granted {
                only_own_region_on_epoch_not_match(&mut err);
            }
            return context_failure(&request, err);
        }
        if access != Access::Write && !read_index_granted {
            match self.gate_read(store_id, &request, &context, read_ts(&request), now_ms) {
                ReadGate::Serve => {}
                ReadGate::Refuse(err) => {
                    return context_failure(&request, ContextError::Region(Box::new(err)));
                }
                ReadGate::Wait(id) => return Execution::Parked(id),
            }
        }
        if let TikvRequest::Batch(cmd) = &request {
            if let Err(err) = self.before_command(context.region_id, cmd, now_ms) {
                return context_failure(&request, ContextError::Region(Box::new(err)));
            }
        }
        if let Some(err) = self.refuse_on_full_disk(store_id, &request, &context) {
            return context_failure(&request, ContextError::Region(Box::new(err)));
        }
        // The region as this store holds it: a follower that has not applied a split yet
        // answers for the range it had before.
        let region = self
            .store_region(store_id, context.region_id)
            .map(|r| r.to_proto())
            .unwrap_or_default();
        let (region_start, region_end) = request_space_range(&region, mode);
        let written = is_write(&request).then(|| written_size(&request, &touched_keys));
        let proposes = access == Access::Write && self.proposes_entry(&request);
        self.enter_store(store_id);
        let execution = self.run_command(request, &region_start, &region_end, now_ms);
        self.leave_store(store_id);
        if proposes {
            let peer_stores: Vec<u64> = region.peers.iter().map(|peer| peer.store_id).collect();
            // The clock, not the request's time, so that the log's times never go back.
            let clock_ms = self.clock_ms();
            self.replicas
                .append(region.id, store_id, &peer_stores, clock_ms);
        }
        if let Some((keys, bytes)) = written {
            // TiKV's split checker runs on a tick once enough was written; here the write
            // itself counts towards the next check.
            self.note_write(region.id, keys, bytes, now_ms);
        }
        execution
    }

    /// The region checks of a request on `store_id` against the regions as that store holds
    /// them at `now_ms`: after its peers applied what their lag allows, a follower that
    /// has not applied a split or merge yet checks the epoch and range it had before, and
    /// has no peer of a region a split it has not applied created (raftstore's
    /// `check_region_epoch` runs against the peer's own applied region).
    fn check_held_context(
        &mut self,
        store_id: u64,
        context: &kvrpcpb::Context,
        touched: &[Touched<'_>],
        mode: KeyMode,
        access: Access,
        now_ms: u64,
    ) -> Result<(), ContextError> {
        self.replicas.catch_up_store(store_id, now_ms);
        if self.replicas.store_is_current(store_id) {
            return self
                .cluster
                .check_context(store_id, context, touched, mode, access);
        }
        self.cluster.check_store(store_id, context)?;
        let local = self.store_region(store_id, context.region_id);
        let held = self.store_regions(store_id);
        let held = crate::cluster::HeldRegions {
            local: local.as_ref(),
            all: &held,
        };
        self.cluster
            .check_region_held(store_id, context, touched, mode, access, &held)
    }

    /// TiKV's `check_normal_proposal_with_disk_full_opt` for the leader's own disk: a write
    /// is refused with `DiskFull` when the leader's disk is full, or almost full and the
    /// request does not allow that. (The followers' disks, which TiKV also weighs, are not
    /// modelled.)
    fn refuse_on_full_disk(
        &self,
        store_id: u64,
        request: &TikvRequest,
        context: &kvrpcpb::Context,
    ) -> Option<errorpb::Error> {
        use crate::sim::DiskUsage;
        if !proposes(request) {
            return None;
        }
        let usage = self.disk_usage(store_id);
        let opt = kvrpcpb::DiskFullOpt::try_from(context.disk_full_opt)
            .unwrap_or(kvrpcpb::DiskFullOpt::NotAllowedOnFull);
        let allowed = match usage {
            DiskUsage::Normal => true,
            DiskUsage::AlmostFull => opt != kvrpcpb::DiskFullOpt::NotAllowedOnFull,
            DiskUsage::AlreadyFull => false,
        };
        if allowed {
            return None;
        }
        let reason = format!(
            "propose failed: tikv disk full, cmd diskFullOpt={opt:?}, leader diskUsage={usage:?}"
        );
        Some(errorpb::Error {
            message: reason.clone(),
            disk_full: Some(errorpb::DiskFull {
                store_id: vec![store_id],
                reason,
            }),
            ..Default::default()
        })
    }

    /// Whether a write that passed the region checks goes through the region's raft log:
    /// every write does, except pessimistic locks kept in the leader's memory.
    fn proposes_entry(&self, request: &TikvRequest) -> bool {
        !matches!(request, TikvRequest::Batch(Req::PessimisticLock(_)))
            || !self.concurrency.in_memory_pessimistic_locks()
    }

    fn unsafe_destroy_range(
        &mut self,
        store_id: u64,
        req: &kvrpcpb::UnsafeDestroyRangeRequest,
    ) -> kvrpcpb::UnsafeDestroyRangeResponse {
        if self.cluster.store(store_id).is_none() {
            return kvrpcpb::UnsafeDestroyRangeResponse {
                error: format!("store {store_id} not found"),
                ..Default::default()
            };
        }
        let delete = kvrpcpb::DeleteRangeRequest {
            start_key: req.start_key.clone(),
            end_key: req.end_key.clone(),
            ..Default::default()
        };
        let response = self.mvcc.delete_range(&delete);
        kvrpcpb::UnsafeDestroyRangeResponse {
            error: response.error,
            ..Default::default()
        }
    }

    fn run_command(
        &mut self,
        request: TikvRequest,
        region_start: &Bytes,
        region_end: &Bytes,
        now_ms: u64,
    ) -> Execution {
        let batch = |resp: Resp| Execution::Done(TikvResponse::Batch(resp));
        let cmd = match request {
            TikvRequest::Batch(cmd) => cmd,
            TikvRequest::RawGetKeyTtl(req) => {
                return Execution::Done(TikvResponse::RawGetKeyTtl(
                    self.raw.raw_get_key_ttl(&req, now_ms),
                ));
            }
            TikvRequest::RawCas(req) => {
                return Execution::Done(TikvResponse::RawCas(
                    self.raw.raw_compare_and_swap(&req, now_ms),
                ));
            }
            TikvRequest::RawChecksum(mut req) => {
                for range in &mut req.ranges {
                    range.start_key = max_start(&range.start_key, region_start);
                    range.end_key = min_end(&range.end_key, region_end);
                }
                req.ranges
                    .retain(|r| r.end_key.is_empty() || r.start_key < r.end_key);
                return Execution::Done(TikvResponse::RawChecksum(
                    self.raw.raw_checksum(&req, now_ms),
                ));
            }
            TikvRequest::SplitRegion(req) => {
                return Execution::Done(TikvResponse::SplitRegion(self.split_region(&req)));
            }
            TikvRequest::UnsafeDestroyRange(req) => {
                return Execution::Done(TikvResponse::UnsafeDestroyRange(
                    kvrpcpb::UnsafeDestroyRangeResponse {
                        error: format!("unexpected {req:?}"),
                        ..Default::default()
                    },
                ));
            }
            // Answered before any region check (see `execute_after_delay`).
            TikvRequest::StoreSafeTs(req) => {
                return Execution::Failed(internal(format!("unexpected {req:?}")));
            }
        };
        match cmd {
            Req::RawGet(req) => batch(Resp::RawGet(self.raw.raw_get(&req, now_ms))),
            Req::RawBatchGet(req) => batch(Resp::RawBatchGet(self.raw.raw_batch_get(&req, now_ms))),
            Req::RawPut(req) => batch(Resp::RawPut(self.raw.raw_put(&req, now_ms))),
            Req::RawBatchPut(req) => batch(Resp::RawBatchPut(self.raw.raw_batch_put(&req, now_ms))),
            Req::RawDelete(req) => batch(Resp::RawDelete(self.raw.raw_delete(&req, now_ms))),
            Req::RawBatchDelete(req) => batch(Resp::RawBatchDelete(
                self.raw.raw_batch_delete(&req, now_ms),
            )),
            Req::RawScan(mut req) => {
                if req.reverse {
                    // start_key is the exclusive upper bound, end_key the inclusive lower one.
                    req.start_key = if req.start_key.is_empty() {
                        region_end.clone()
                    } else {
                        min_end(&req.start_key, region_end)
                    };
                    req.end_key = max_start(&req.end_key, region_start);
                } else {
                    req.start_key = max_start(&req.start_key, region_start);
                    req.end_key = min_end(&req.end_key, region_end);
                }
                batch(Resp::RawScan(self.raw.raw_scan(&req, now_ms)))
            }
            Req::RawDeleteRange(mut req) => {
                req.start_key = max_start(&req.start_key, region_start);
                req.end_key = min_end(&req.end_key, region_end);
                batch(Resp::RawDeleteRange(
                    self.raw.raw_delete_range(&req, now_ms),
                ))
            }
            Req::RawBatchScan(req) => {
                batch(Resp::RawBatchScan(self.raw.raw_batch_scan(&req, now_ms)))
            }
            Req::Get(req) => batch(Resp::Get(self.mvcc.get(&req))),
            Req::BatchGet(req) => batch(Resp::BatchGet(self.mvcc.batch_get(&req))),
            Req::Scan(mut req) => {
                if req.reverse {
                    req.start_key = if req.start_key.is_empty() {
                        region_end.clone()
                    } else {
                        min_end(&req.start_key, region_end)
                    };
                    req.end_key = max_start(&req.end_key, region_start);
                } else {
                    req.start_key = max_start(&req.start_key, region_start);
                    req.end_key = min_end(&req.end_key, region_end);
                }
                batch(Resp::Scan(self.mvcc.scan(&req)))
            }
            Req::Prewrite(req) => {
                let response = self.mvcc.prewrite(&req);
                self.after_write();
                batch(Resp::Prewrite(response))
            }
            Req::Commit(req) => {
                let response = self.mvcc.commit(&req);
                self.after_write();
                batch(Resp::Commit(response))
            }
            Req::Cleanup(req) => {
                let response = self.mvcc.cleanup(&req);
                self.after_write();
                batch(Resp::Cleanup(response))
            }
            Req::BatchRollback(req) => {
                let response = self.mvcc.batch_rollback(&req);
                self.after_write();
                batch(Resp::BatchRollback(response))
            }
            Req::ScanLock(mut req) => {
                req.start_key = max_start(&req.start_key, region_start);
                req.end_key = min_end(&req.end_key, region_end);
                batch(Resp::ScanLock(self.mvcc.scan_lock(&req)))
            }
            Req::ResolveLock(req) => {
                // Without keys TiKV scans the region's snapshot for the transactions' locks.
                let response = self
                    .mvcc
                    .resolve_lock_in_range(&req, region_start, region_end);
                self.after_write();
                batch(Resp::ResolveLock(response))
            }
            Req::DeleteRange(mut req) => {
                req.start_key = max_start(&req.start_key, region_start);
                req.end_key = min_end(&req.end_key, region_end);
                let response = self.mvcc.delete_range(&req);
                self.after_write();
                batch(Resp::DeleteRange(response))
            }
            Req::PessimisticLock(req) => {
                let execution = self.pessimistic_lock(req.clone(), now_ms);
                self.note_pessimistic_locks(&req);
                execution
            }
            Req::PessimisticRollback(req) => {
                let response =
                    self.mvcc
                        .pessimistic_rollback_in_range(&req, region_start, region_end);
                self.after_write();
                batch(Resp::PessimisticRollback(response))
            }
            Req::CheckTxnStatus(req) => {
                let response = self.mvcc.check_txn_status(&req);
                self.after_write();
                batch(Resp::CheckTxnStatus(response))
            }
            Req::TxnHeartBeat(req) => batch(Resp::TxnHeartBeat(self.mvcc.txn_heart_beat(&req))),
            Req::CheckSecondaryLocks(req) => {
                let response = self.mvcc.check_secondary_locks(&req);
                self.after_write();
                batch(Resp::CheckSecondaryLocks(response))
            }
            Req::Flush(req) => {
                let response = self.mvcc.flush(&req);
                self.after_write();
                batch(Resp::Flush(response))
            }
            Req::BufferBatchGet(req) => {
                batch(Resp::BufferBatchGet(self.mvcc.buffer_batch_get(&req)))
            }
            Req::Empty(req) => batch(Resp::Empty(tikvpb::BatchCommandsEmptyResponse {
                test_id: req.test_id,
            })),
            other => Execution::Failed(Status::new(
                Code::Unimplemented,
                format!("command {} is not simulated", batch_name(&other)),
            )),
        }
    }

    fn split_region(&mut self, req: &kvrpcpb::SplitRegionRequest) -> kvrpcpb::SplitRegionResponse {
        let mode = if req.is_raw_kv
            && req
                .context
                .as_ref()
                .is_none_or(|c| c.api_version != ApiVersion::V2 as i32)
        {
            KeyMode::Plain
        } else {
            KeyMode::Encoded
        };
        let keys: Vec<Bytes> = req
            .split_keys
            .iter()
            .map(|key| mode.to_boundary(key))
            .collect();
        match self.cluster.split_keys(&keys) {
            Ok(created) => {
                // As TiKV: every region the split produced, left to right; the original
                // region (right-derived, so it keeps the right-most range) comes last.
                let original = req.context.as_ref().map_or(0, |c| c.region_id);
                let regions = created
                    .iter()
                    .chain(std::iter::once(&original))
                    .filter_map(|id| self.cluster.region(*id))
                    .map(|region| region.to_proto())
                    .collect();
                kvrpcpb::SplitRegionResponse {
                    regions,
                    ..Default::default()
                }
            }
            Err(err) => kvrpcpb::SplitRegionResponse {
                region_error: Some(Box::new(errorpb::Error {
                    message: err.to_string(),
                    ..Default::default()
                })),
                ..Default::default()
            },
        }
    }
}

/// The region error of a write whose outcome is unknown: kvproto's `UndeterminedResult`,
/// with the text TiKV gives an apply callback that was dropped.
fn undetermined() -> errorpb::Error {
    const MESSAGE: &str = "async write on_applied callback is dropped";
    errorpb::Error {
        message: MESSAGE.to_owned(),
        undetermined_result: Some(errorpb::UndeterminedResult {
            message: MESSAGE.to_owned(),
        }),
        ..Default::default()
    }
}

/// How a request refused before it runs is answered: a region error in the response, or a
/// failed call (store down, another cluster).
/// A replica read answered once its read index was applied is checked by raftstore's
/// `Peer::response_read` through `handle_read`, which calls `check_region_epoch` with
/// `include_region` and nothing more: its EpochNotMatch carries the peer's own region only,
/// without the neighbours `collect_sibling_region` adds when a request is first proposed.
fn only_own_region_on_epoch_not_match(err: &mut ContextError) {
    if let ContextError::Region(err) = err {
        if let Some(epoch_not_match) = err.epoch_not_match.as_mut() {
            epoch_not_match.current_regions.truncate(1);
        }
    }
}

fn context_failure(request: &TikvRequest, err: ContextError) -> Execution {
    match err {
        ContextError::Region(err) => match request.region_error_response(*err) {
            Some(response) => Execution::Done(response),
            None => Execution::Failed(internal("no region error form")),
        },
        ContextError::ClusterIdMismatch { expected, got } => Execution::Failed(Status::new(
            Code::InvalidArgument,
            format!("cluster id mismatch: request {got}, store {expected}"),
        )),
        other => Execution::Failed(Status::new(Code::Unavailable, other.to_string())),
    }
}
