//! The typed requests the core sends and the replies it gets back.
//!
//! Store requests and responses are one enum each, generated from one table so that every
//! command's unary path, BatchCommands arm, context and region error are handled in one place.
//! The driver turns them into bytes (a BatchCommands entry, or a unary call for commands the
//! stream does not carry); the core never sees bytes.

use tikv_proto::frame::{FrameError, Framed};
use tikv_proto::rpc::RpcError;
use tikv_proto::tikvpb::batch_commands_request::request::Cmd as BatchRequestCmd;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as BatchResponseCmd;
use tikv_proto::{errorpb, kvrpcpb, pdpb, tikvpb};

/// Generates [`StoreRequest`] / [`StoreResponse`] and their plumbing from the command table.
macro_rules! store_rpcs {
    (
        batched { $( $b_variant:ident($b_req:ident, $b_resp:ident, $b_method:ident) ),* $(,)? }
        unary { $( $u_variant:ident($u_req:ident, $u_resp:ident, $u_method:ident) ),* $(,)? }
    ) => {
        /// A request to a TiKV store.
        #[derive(Clone, Debug, PartialEq)]
        pub enum StoreRequest {
            $(
                #[doc = concat!("`", stringify!($b_req), "`.")]
                $b_variant(kvrpcpb::$b_req),
            )*
            $(
                #[doc = concat!("`", stringify!($u_req), "`.")]
                $u_variant(kvrpcpb::$u_req),
            )*
        }

        /// A store's answer to a [`StoreRequest`], of the same variant.
        #[derive(Clone, Debug, PartialEq)]
        pub enum StoreResponse {
            $(
                #[doc = concat!("`", stringify!($b_resp), "`.")]
                $b_variant(kvrpcpb::$b_resp),
            )*
            $(
                #[doc = concat!("`", stringify!($u_resp), "`.")]
                $u_variant(kvrpcpb::$u_resp),
            )*
        }

        impl StoreRequest {
            /// The request's context, created empty if missing.
            pub fn context_mut(&mut self) -> &mut kvrpcpb::Context {
                match self {
                    $( Self::$b_variant(r) => r.context.get_or_insert_with(Default::default), )*
                    $( Self::$u_variant(r) => r.context.get_or_insert_with(Default::default), )*
                }
            }

            /// The request's context, if set.
            pub fn context(&self) -> Option<&kvrpcpb::Context> {
                match self {
                    $( Self::$b_variant(r) => r.context.as_ref(), )*
                    $( Self::$u_variant(r) => r.context.as_ref(), )*
                }
            }

            /// The command's name, as TiKV's method table spells it.
            pub fn name(&self) -> &'static str {
                match self {
                    $( Self::$b_variant(_) => tikvpb::tikv::$b_method.desc.name, )*
                    $( Self::$u_variant(_) => tikvpb::tikv::$u_method.desc.name, )*
                }
            }

            /// The unary gRPC path of the command.
            pub fn path(&self) -> &'static str {
                match self {
                    $( Self::$b_variant(_) => tikvpb::tikv::$b_method.path(), )*
                    $( Self::$u_variant(_) => tikvpb::tikv::$u_method.path(), )*
                }
            }

            /// The BatchCommands entry for this request, or the request back when the stream
            /// has no arm for it (it then goes as a unary call).
            pub fn into_batch(self) -> Result<BatchRequestCmd, Self> {
                match self {
                    $( Self::$b_variant(r) => Ok(BatchRequestCmd::$b_variant(r)), )*
                    other => Err(other),
                }
            }

            /// Encodes the request for a unary call.
            ///
            /// Errors when the encoded request exceeds `limit`.
            pub fn encode(&self, limit: usize) -> Result<Framed, FrameError> {
                match self {
                    $( Self::$b_variant(r) => Framed::encode(r, limit), )*
                    $( Self::$u_variant(r) => Framed::encode(r, limit), )*
                }
            }

            /// Decodes a unary response payload as the response type of this request.
            ///
            /// Errors with [`RpcError::Decode`] when the payload is malformed.
            pub fn decode_response(&self, payload: bytes::Bytes) -> Result<StoreResponse, RpcError> {
                match self {
                    $( Self::$b_variant(_) => tikv_proto::rpc::decode(payload).map(StoreResponse::$b_variant), )*
                    $( Self::$u_variant(_) => tikv_proto::rpc::decode(payload).map(StoreResponse::$u_variant), )*
                }
            }
        }

        impl StoreResponse {
            /// The region error the store answered with, if any.
            pub fn region_error(&self) -> Option<&errorpb::Error> {
                match self {
                    $( Self::$b_variant(r) => r.region_error.as_deref(), )*
                    $( Self::$u_variant(r) => r.region_error.as_deref(), )*
                }
            }

            /// Sets the response's region error.
            pub fn set_region_error(&mut self, err: errorpb::Error) {
                match self {
                    $( Self::$b_variant(r) => r.region_error = Some(Box::new(err)), )*
                    $( Self::$u_variant(r) => r.region_error = Some(Box::new(err)), )*
                }
            }

            /// Takes the region error out of the response.
            pub fn take_region_error(&mut self) -> Option<errorpb::Error> {
                match self {
                    $( Self::$b_variant(r) => r.region_error.take().map(|err| *err), )*
                    $( Self::$u_variant(r) => r.region_error.take().map(|err| *err), )*
                }
            }

            /// Converts a BatchCommands response entry; `None` for an arm the core does not
            /// send (or an empty entry).
            pub fn from_batch(cmd: BatchResponseCmd) -> Option<Self> {
                match cmd {
                    $( BatchResponseCmd::$b_variant(r) => Some(Self::$b_variant(r)), )*
                    _ => None,
                }
            }

            /// An empty response of the command's type: what a store with nothing to report
            /// answers. Test responders and fuzzers start from it.
            pub fn empty_for(request: &StoreRequest) -> Self {
                match request {
                    $( StoreRequest::$b_variant(_) => Self::$b_variant(Default::default()), )*
                    $( StoreRequest::$u_variant(_) => Self::$u_variant(Default::default()), )*
                }
            }

            /// Whether this response answers `request` (same command).
            pub fn matches(&self, request: &StoreRequest) -> bool {
                match (self, request) {
                    $( (Self::$b_variant(_), StoreRequest::$b_variant(_)) => true, )*
                    $( (Self::$u_variant(_), StoreRequest::$u_variant(_)) => true, )*
                    _ => false,
                }
            }
        }
    };
}

store_rpcs! {
    batched {
        Get(GetRequest, GetResponse, KV_GET),
        Scan(ScanRequest, ScanResponse, KV_SCAN),
        Prewrite(PrewriteRequest, PrewriteResponse, KV_PREWRITE),
        Commit(CommitRequest, CommitResponse, KV_COMMIT),
        Cleanup(CleanupRequest, CleanupResponse, KV_CLEANUP),
        BatchGet(BatchGetRequest, BatchGetResponse, KV_BATCH_GET),
        BatchRollback(BatchRollbackRequest, BatchRollbackResponse, KV_BATCH_ROLLBACK),
        ScanLock(ScanLockRequest, ScanLockResponse, KV_SCAN_LOCK),
        ResolveLock(ResolveLockRequest, ResolveLockResponse, KV_RESOLVE_LOCK),
        DeleteRange(DeleteRangeRequest, DeleteRangeResponse, KV_DELETE_RANGE),
        RawGet(RawGetRequest, RawGetResponse, RAW_GET),
        RawBatchGet(RawBatchGetRequest, RawBatchGetResponse, RAW_BATCH_GET),
        RawPut(RawPutRequest, RawPutResponse, RAW_PUT),
        RawBatchPut(RawBatchPutRequest, RawBatchPutResponse, RAW_BATCH_PUT),
        RawDelete(RawDeleteRequest, RawDeleteResponse, RAW_DELETE),
        RawBatchDelete(RawBatchDeleteRequest, RawBatchDeleteResponse, RAW_BATCH_DELETE),
        RawScan(RawScanRequest, RawScanResponse, RAW_SCAN),
        RawDeleteRange(RawDeleteRangeRequest, RawDeleteRangeResponse, RAW_DELETE_RANGE),
        RawBatchScan(RawBatchScanRequest, RawBatchScanResponse, RAW_BATCH_SCAN),
        PessimisticLock(PessimisticLockRequest, PessimisticLockResponse, KV_PESSIMISTIC_LOCK),
        PessimisticRollback(PessimisticRollbackRequest, PessimisticRollbackResponse, KV_PESSIMISTIC_ROLLBACK),
        CheckTxnStatus(CheckTxnStatusRequest, CheckTxnStatusResponse, KV_CHECK_TXN_STATUS),
        TxnHeartBeat(TxnHeartBeatRequest, TxnHeartBeatResponse, KV_TXN_HEART_BEAT),
        CheckSecondaryLocks(CheckSecondaryLocksRequest, CheckSecondaryLocksResponse, KV_CHECK_SECONDARY_LOCKS),
        Flush(FlushRequest, FlushResponse, KV_FLUSH),
        BufferBatchGet(BufferBatchGetRequest, BufferBatchGetResponse, KV_BUFFER_BATCH_GET),
    }
    unary {
        RawGetKeyTtl(RawGetKeyTtlRequest, RawGetKeyTtlResponse, RAW_GET_KEY_TTL),
        RawCompareAndSwap(RawCasRequest, RawCasResponse, RAW_COMPARE_AND_SWAP),
        RawChecksum(RawChecksumRequest, RawChecksumResponse, RAW_CHECKSUM),
        SplitRegion(SplitRegionRequest, SplitRegionResponse, SPLIT_REGION),
        UnsafeDestroyRange(UnsafeDestroyRangeRequest, UnsafeDestroyRangeResponse, UNSAFE_DESTROY_RANGE),
    }
}

/// A request to PD.
#[derive(Clone, Debug, PartialEq)]
pub enum PdRequest {
    /// Discover members, the leader and the cluster id.
    GetMembers(pdpb::GetMembersRequest),
    /// Allocate `count` timestamps (sent on the Tso stream).
    Tso(pdpb::TsoRequest),
    /// The region containing a key.
    GetRegion(pdpb::GetRegionRequest),
    /// The region just before a key.
    GetPrevRegion(pdpb::GetRegionRequest),
    /// A region by id.
    GetRegionById(pdpb::GetRegionByIdRequest),
    /// Regions covering key ranges (PD's current range scan; the older `ScanRegions` is
    /// deprecated there and not used).
    BatchScanRegions(pdpb::BatchScanRegionsRequest),
    /// One store's address, state and labels.
    GetStore(pdpb::GetStoreRequest),
    /// Every store.
    GetAllStores(pdpb::GetAllStoresRequest),
    /// A keyspace's metadata by name (API V2).
    LoadKeyspace(tikv_proto::keyspacepb::LoadKeyspaceRequest),
    /// Spread regions over the stores (after a split).
    ScatterRegion(pdpb::ScatterRegionRequest),
    /// The latest scheduling operator of a region.
    GetOperator(pdpb::GetOperatorRequest),
    /// Set the cluster's external timestamp.
    SetExternalTimestamp(pdpb::SetExternalTimestampRequest),
    /// The cluster's external timestamp.
    GetExternalTimestamp(pdpb::GetExternalTimestampRequest),
    /// A keyspace's (or the cluster's) GC state: safe points and barriers.
    GetGcState(pdpb::GetGcStateRequest),
}

/// PD's answer to a [`PdRequest`], of the same variant.
#[derive(Clone, Debug, PartialEq)]
pub enum PdResponse {
    /// Members, leader, cluster id.
    GetMembers(pdpb::GetMembersResponse),
    /// The last timestamp of the allocated batch.
    Tso(pdpb::TsoResponse),
    /// The region containing the key, if any.
    GetRegion(pdpb::GetRegionResponse),
    /// The region before the key, if any.
    GetPrevRegion(pdpb::GetRegionResponse),
    /// The region with the id, if any.
    GetRegionById(pdpb::GetRegionResponse),
    /// Regions covering the ranges, in key order.
    BatchScanRegions(pdpb::BatchScanRegionsResponse),
    /// The store.
    GetStore(pdpb::GetStoreResponse),
    /// Every store.
    GetAllStores(pdpb::GetAllStoresResponse),
    /// The keyspace, if it exists.
    LoadKeyspace(tikv_proto::keyspacepb::LoadKeyspaceResponse),
    /// How much of the scatter is done, and which regions failed.
    ScatterRegion(pdpb::ScatterRegionResponse),
    /// The operator, or a header error when the region has none.
    GetOperator(pdpb::GetOperatorResponse),
    /// Done, or a header error (a timestamp below the current one, or above the TSO).
    SetExternalTimestamp(pdpb::SetExternalTimestampResponse),
    /// The external timestamp (0 when never set).
    GetExternalTimestamp(pdpb::GetExternalTimestampResponse),
    /// The GC state.
    GetGcState(pdpb::GetGcStateResponse),
}

impl PdRequest {
    /// The gRPC path of the request.
    pub fn path(&self) -> &'static str {
        match self {
            Self::GetMembers(_) => pdpb::pd::GET_MEMBERS.path(),
            Self::Tso(_) => pdpb::pd::TSO.path(),
            Self::GetRegion(_) => pdpb::pd::GET_REGION.path(),
            Self::GetPrevRegion(_) => pdpb::pd::GET_PREV_REGION.path(),
            Self::GetRegionById(_) => pdpb::pd::GET_REGION_BY_ID.path(),
            Self::BatchScanRegions(_) => pdpb::pd::BATCH_SCAN_REGIONS.path(),
            Self::GetStore(_) => pdpb::pd::GET_STORE.path(),
            Self::GetAllStores(_) => pdpb::pd::GET_ALL_STORES.path(),
            Self::LoadKeyspace(_) => tikv_proto::keyspacepb::keyspace::LOAD_KEYSPACE.path(),
            Self::ScatterRegion(_) => pdpb::pd::SCATTER_REGION.path(),
            Self::GetOperator(_) => pdpb::pd::GET_OPERATOR.path(),
            Self::SetExternalTimestamp(_) => pdpb::pd::SET_EXTERNAL_TIMESTAMP.path(),
            Self::GetExternalTimestamp(_) => pdpb::pd::GET_EXTERNAL_TIMESTAMP.path(),
            Self::GetGcState(_) => pdpb::pd::GET_GC_STATE.path(),
        }
    }

    /// Sets the cluster id in the request header (every PD request carries it).
    pub fn set_cluster_id(&mut self, cluster_id: u64) {
        let header = match self {
            Self::GetMembers(r) => &mut r.header,
            Self::Tso(r) => &mut r.header,
            Self::GetRegion(r) | Self::GetPrevRegion(r) => &mut r.header,
            Self::GetRegionById(r) => &mut r.header,
            Self::BatchScanRegions(r) => &mut r.header,
            Self::GetStore(r) => &mut r.header,
            Self::GetAllStores(r) => &mut r.header,
            Self::LoadKeyspace(r) => &mut r.header,
            Self::ScatterRegion(r) => &mut r.header,
            Self::GetOperator(r) => &mut r.header,
            Self::SetExternalTimestamp(r) => &mut r.header,
            Self::GetExternalTimestamp(r) => &mut r.header,
            Self::GetGcState(r) => &mut r.header,
        };
        header.get_or_insert_with(Default::default).cluster_id = cluster_id;
    }

    /// Encodes the request.
    ///
    /// Errors when the encoded request exceeds `limit`.
    pub fn encode(&self, limit: usize) -> Result<Framed, FrameError> {
        match self {
            Self::GetMembers(r) => Framed::encode(r, limit),
            Self::Tso(r) => Framed::encode(r, limit),
            Self::GetRegion(r) | Self::GetPrevRegion(r) => Framed::encode(r, limit),
            Self::GetRegionById(r) => Framed::encode(r, limit),
            Self::BatchScanRegions(r) => Framed::encode(r, limit),
            Self::GetStore(r) => Framed::encode(r, limit),
            Self::GetAllStores(r) => Framed::encode(r, limit),
            Self::LoadKeyspace(r) => Framed::encode(r, limit),
            Self::ScatterRegion(r) => Framed::encode(r, limit),
            Self::GetOperator(r) => Framed::encode(r, limit),
            Self::SetExternalTimestamp(r) => Framed::encode(r, limit),
            Self::GetExternalTimestamp(r) => Framed::encode(r, limit),
            Self::GetGcState(r) => Framed::encode(r, limit),
        }
    }

    /// Decodes a response payload as the response type of this request.
    ///
    /// Errors with [`RpcError::Decode`] when the payload is malformed.
    pub fn decode_response(&self, payload: bytes::Bytes) -> Result<PdResponse, RpcError> {
        use tikv_proto::rpc::decode;
        Ok(match self {
            Self::GetMembers(_) => PdResponse::GetMembers(decode(payload)?),
            Self::Tso(_) => PdResponse::Tso(decode(payload)?),
            Self::GetRegion(_) => PdResponse::GetRegion(decode(payload)?),
            Self::GetPrevRegion(_) => PdResponse::GetPrevRegion(decode(payload)?),
            Self::GetRegionById(_) => PdResponse::GetRegionById(decode(payload)?),
            Self::BatchScanRegions(_) => PdResponse::BatchScanRegions(decode(payload)?),
            Self::GetStore(_) => PdResponse::GetStore(decode(payload)?),
            Self::GetAllStores(_) => PdResponse::GetAllStores(decode(payload)?),
            Self::LoadKeyspace(_) => PdResponse::LoadKeyspace(decode(payload)?),
            Self::ScatterRegion(_) => PdResponse::ScatterRegion(decode(payload)?),
            Self::GetOperator(_) => PdResponse::GetOperator(decode(payload)?),
            Self::SetExternalTimestamp(_) => PdResponse::SetExternalTimestamp(decode(payload)?),
            Self::GetExternalTimestamp(_) => PdResponse::GetExternalTimestamp(decode(payload)?),
            Self::GetGcState(_) => PdResponse::GetGcState(decode(payload)?),
        })
    }
}

impl PdResponse {
    /// The response header.
    pub fn header(&self) -> Option<&pdpb::ResponseHeader> {
        match self {
            Self::GetMembers(r) => r.header.as_ref(),
            Self::Tso(r) => r.header.as_ref(),
            Self::GetRegion(r) | Self::GetPrevRegion(r) | Self::GetRegionById(r) => {
                r.header.as_ref()
            }
            Self::BatchScanRegions(r) => r.header.as_ref(),
            Self::GetStore(r) => r.header.as_ref(),
            Self::GetAllStores(r) => r.header.as_ref(),
            Self::LoadKeyspace(r) => r.header.as_ref(),
            Self::ScatterRegion(r) => r.header.as_ref(),
            Self::GetOperator(r) => r.header.as_ref(),
            Self::SetExternalTimestamp(r) => r.header.as_ref(),
            Self::GetExternalTimestamp(r) => r.header.as_ref(),
            Self::GetGcState(r) => r.header.as_ref(),
        }
    }
}

/// Any request the core sends.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// To a TiKV store. Boxed: requests travel through channels and queues, and moving the
    /// big protobuf structs by value showed up as memcpy in profiles.
    Store(Box<StoreRequest>),
    /// To PD.
    Pd(Box<PdRequest>),
    /// A liveness probe (`grpc.health.v1.Health/Check`) to a store.
    Health(tikv_proto::grpc::health::v1::HealthCheckRequest),
}

impl Request {
    /// The PD request, if this is one.
    pub fn as_pd(&self) -> Option<&PdRequest> {
        match self {
            Self::Pd(request) => Some(request),
            _ => None,
        }
    }

    /// The store request, if this is one.
    pub fn as_store(&self) -> Option<&StoreRequest> {
        match self {
            Self::Store(request) => Some(request),
            _ => None,
        }
    }
}

/// Any response the core receives.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    /// From a TiKV store (boxed, like [`Request::Store`]).
    Store(Box<StoreResponse>),
    /// From PD.
    Pd(Box<PdResponse>),
    /// A liveness probe's answer.
    Health(tikv_proto::grpc::health::v1::HealthCheckResponse),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_conversion_and_unary_fallback() {
        let get = StoreRequest::RawGet(kvrpcpb::RawGetRequest::default());
        assert_eq!(get.path(), "/tikvpb.Tikv/RawGet");
        assert_eq!(get.name(), "RawGet");
        assert!(matches!(get.into_batch(), Ok(BatchRequestCmd::RawGet(_))));
        let ttl = StoreRequest::RawGetKeyTtl(kvrpcpb::RawGetKeyTtlRequest::default());
        assert!(ttl.clone().into_batch().is_err());
        assert_eq!(ttl.path(), "/tikvpb.Tikv/RawGetKeyTTL");
    }

    #[test]
    fn responses_match_requests_and_expose_region_errors() {
        let mut response = StoreResponse::RawPut(kvrpcpb::RawPutResponse {
            region_error: Some(Box::new(errorpb::Error {
                message: "stale".into(),
                ..Default::default()
            })),
            ..Default::default()
        });
        assert!(response.matches(&StoreRequest::RawPut(Default::default())));
        assert!(!response.matches(&StoreRequest::RawGet(Default::default())));
        assert_eq!(
            response.region_error().map(|e| e.message.as_str()),
            Some("stale")
        );
        assert!(response.take_region_error().is_some());
        assert!(response.region_error().is_none());
        assert!(StoreResponse::from_batch(BatchResponseCmd::Empty(Default::default())).is_none());
    }

    #[test]
    fn context_is_created_on_demand() {
        let mut request = StoreRequest::RawScan(Default::default());
        assert!(request.context().is_none());
        request.context_mut().region_id = 9;
        assert_eq!(request.context().map(|c| c.region_id), Some(9));
        let mut pd = PdRequest::GetStore(Default::default());
        pd.set_cluster_id(5);
        assert!(
            matches!(&pd, PdRequest::GetStore(r) if r.header.as_ref().map(|h| h.cluster_id) == Some(5))
        );
    }
}
