//! User operations: the commands handles send, what they finish with, and the machine that
//! runs each one.

use bytes::Bytes;

use super::OpId;
use super::pd::Readiness;
use super::raw::RawOp;
use super::shared::{Shared, Wake};
use crate::error::Error;

/// Backoff budget of a scatter check (client-go's locate-region backoffer).
const CHECK_SCATTER_BUDGET: std::time::Duration =
    std::time::Duration::from_millis(crate::backoff::LOCATE_REGION_MAX_BACKOFF_MS);

/// Largest `limit` a raw scan accepts (client-go `MaxRawKVScanLimit`).
pub const MAX_RAW_SCAN_LIMIT: u32 = 10_240;

/// An operation a user handle asks the machine to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// A raw KV operation.
    Raw(RawCommand),
    /// Allocate one timestamp from PD's TSO.
    Timestamp,
    /// A recent timestamp: the newest one the client has seen if it is younger than the
    /// configured staleness (client-go's low-resolution timestamp), else a fresh one.
    LowResolutionTimestamp,
    /// Wait until PD no longer runs a scatter operator on the region, backing off between
    /// polls within `budget`.
    WaitScatterRegionFinish {
        /// The region.
        region_id: u64,
        /// Total backoff allowed.
        budget: std::time::Duration,
    },
    /// Whether PD is scattering the region right now.
    CheckRegionInScattering {
        /// The region.
        region_id: u64,
    },
    /// The cluster id, from PD (discovering PD first if needed).
    ClusterId,
    /// Set PD's external timestamp (it only moves forward, and never past the TSO).
    SetExternalTimestamp(u64),
    /// PD's external timestamp (0 when never set).
    GetExternalTimestamp,
    /// The cluster's (or, with API V2, the keyspace's) transaction safe point, from PD.
    TxnSafePoint,
    /// Whether a read at `start_ts` is still safe from GC (client-go's `CheckVisibility`):
    /// answers with the safe point, or fails with [`Error::TxnAbortedByGc`].
    CheckVisibility {
        /// The read's start timestamp.
        start_ts: u64,
    },
    /// A timestamp `prev_secs` seconds older than the current time as the client knows it
    /// (client-go's `GetStaleTimestamp`), from the newest TSO answer and the time since.
    StaleTimestamp {
        /// How far back, in seconds.
        prev_secs: u64,
    },
}

/// Which key space region commands work in: raw keys, or transactional keys (which TiKV
/// stores memcomparable-encoded, so region boundaries differ).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyMode {
    /// The raw key space (`RawClient`).
    #[default]
    Raw,
    /// The transactional key space (client-go's `KVStore`).
    Txn,
}

/// A raw KV operation. Keys are the user's (the machine adds keyspace prefixes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawCommand {
    /// Read one key.
    Get {
        /// The key.
        key: Bytes,
        /// Column family ("" = default).
        cf: String,
    },
    /// Read several keys.
    BatchGet {
        /// The keys.
        keys: Vec<Bytes>,
        /// Column family.
        cf: String,
    },
    /// Write one key.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// Time to live in seconds; 0 = forever.
        ttl_secs: u64,
        /// Column family.
        cf: String,
        /// Serialize with compare-and-swap (the client's atomic mode).
        atomic: bool,
    },
    /// Write several keys.
    BatchPut {
        /// Key-value pairs.
        pairs: Vec<(Bytes, Bytes)>,
        /// TTLs in seconds: empty, or one per pair.
        ttls_secs: Vec<u64>,
        /// Column family.
        cf: String,
        /// Atomic mode.
        atomic: bool,
    },
    /// Delete one key.
    Delete {
        /// The key.
        key: Bytes,
        /// Column family.
        cf: String,
        /// Atomic mode.
        atomic: bool,
    },
    /// Delete several keys.
    BatchDelete {
        /// The keys.
        keys: Vec<Bytes>,
        /// Column family.
        cf: String,
        /// Atomic mode.
        atomic: bool,
    },
    /// Delete every key in `[start, end)` (`end` empty = no upper bound).
    DeleteRange {
        /// First key deleted.
        start: Bytes,
        /// First key kept.
        end: Bytes,
        /// Column family.
        cf: String,
    },
    /// Read up to `limit` pairs in a range: forward over `[start, end)`, or with `reverse`
    /// downward from `start` (exclusive, non-empty outside a keyspace) to `end` (inclusive),
    /// as client-go's ReverseScan.
    Scan {
        /// Where the scan starts.
        start: Bytes,
        /// Where it stops (empty = no bound).
        end: Bytes,
        /// Most pairs returned (at most [`MAX_RAW_SCAN_LIMIT`]).
        limit: u32,
        /// Return keys with empty values.
        key_only: bool,
        /// Scan downward.
        reverse: bool,
        /// Column family.
        cf: String,
    },
    /// A key's remaining time to live.
    GetKeyTtl {
        /// The key.
        key: Bytes,
        /// Column family.
        cf: String,
    },
    /// Atomically replace a key's value if it currently equals `previous` (`None`: if absent).
    CompareAndSwap {
        /// The key.
        key: Bytes,
        /// The expected current value.
        previous: Option<Bytes>,
        /// The new value.
        value: Bytes,
        /// Column family.
        cf: String,
        /// Atomic mode (required).
        atomic: bool,
    },
    /// CRC-64 XOR checksum, count and size of the pairs in `[start, end)`.
    Checksum {
        /// First key.
        start: Bytes,
        /// End (empty = no bound).
        end: Bytes,
    },
    /// Delete every version of every transactional key in `[start, end)`, region by region
    /// (client-go's `KVStore.DeleteRange`); with `notify_only`, only tell TiKV (for TiFlash)
    /// without deleting.
    TxnDeleteRange {
        /// First key (transactional key space).
        start: Bytes,
        /// End (empty = no bound).
        end: Bytes,
        /// Notify only.
        notify_only: bool,
    },
    /// Drop the transactional keys of `[start, end)` directly from every store's storage,
    /// bypassing Raft (client-go's `KVStore.UnsafeDestroyRange`).
    UnsafeDestroyRange {
        /// First key (transactional key space).
        start: Bytes,
        /// End (empty = no bound).
        end: Bytes,
    },
    /// The region holding `key` (empty: the first region).
    LocateKey {
        /// The key.
        key: Bytes,
        /// Which key space `key` is in.
        mode: KeyMode,
    },
    /// Region `region_id`, from the cache or PD.
    LocateRegionById {
        /// The region.
        region_id: u64,
        /// Which key space to report its boundaries in.
        mode: KeyMode,
    },
    /// Every region overlapping `[start, end)` (`end` empty: to the end), in key order.
    LocateRange {
        /// First key.
        start: Bytes,
        /// End (empty = no bound).
        end: Bytes,
        /// Which key space the range is in.
        mode: KeyMode,
        /// Most regions returned (0 = no limit).
        limit: u32,
    },
    /// Split the regions holding `keys` so that each key starts a region, and optionally
    /// have PD scatter the new regions.
    SplitRegions {
        /// Which key space the keys are in.
        mode: KeyMode,
        /// Where to split (keys that already start a region are skipped).
        keys: Vec<Bytes>,
        /// Ask PD to scatter the new regions afterwards.
        scatter: bool,
        /// Scatter group: regions of one group are spread as a unit ("" = none).
        scatter_group: String,
    },
}

/// Checksum of a raw key range, as TiKV computes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawChecksum {
    /// XOR of the CRC-64 of every key and value.
    pub crc64_xor: u64,
    /// Number of pairs.
    pub total_kvs: u64,
    /// Total size of keys and values.
    pub total_bytes: u64,
}

/// What a finished operation produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Done, nothing to return.
    Unit,
    /// One value, `None` when the key does not exist.
    Value(Option<Bytes>),
    /// Values in the order of the requested keys.
    Values(Vec<Option<Bytes>>),
    /// Key-value pairs in scan order.
    Pairs(Vec<(Bytes, Bytes)>),
    /// Remaining TTL in seconds (`Some(0)` = no TTL); `None` when the key does not exist.
    Ttl(Option<u64>),
    /// Compare-and-swap outcome: the value before, and whether the swap happened.
    Swapped {
        /// The value before the operation (`None` = absent).
        previous: Option<Bytes>,
        /// Whether the new value was written.
        succeeded: bool,
    },
    /// A checksum.
    Checksum(RawChecksum),
    /// A timestamp from TSO.
    Timestamp(u64),
    /// What a region split produced.
    Split(super::split::SplitOutcome),
    /// Whether a region is being scattered.
    Scattering(bool),
    /// The cluster id.
    ClusterId(u64),
    /// Regions holding keys, in key order.
    Locations(Vec<super::locate::KeyLocation>),
    /// How many items (regions) an operation went through.
    Count(u64),
}

impl Output {
    /// The error for a handle that received this output where it expected another kind.
    pub(crate) fn unexpected(self) -> Error {
        Error::UnexpectedResponse(format!("operation produced {self:?}"))
    }
}

/// A running operation.
#[derive(Debug)]
pub(crate) enum Op {
    /// Waiting for the keyspace before the command can be validated. Every variant is small
    /// (boxed payloads): the operation table moves them around as it rebalances.
    Waiting(Box<RawCommand>),
    Raw(Box<RawOp>),
    Timestamp,
    Operator(Box<super::split::OperatorWait>),
    /// Waiting for PD to tell the cluster id (`true` once asked).
    ClusterId(bool),
    /// One PD call whose answer is the result (`None` once sent).
    PdCall(Option<Box<crate::rpc::PdRequest>>),
    /// A stale timestamp: `prev_ms` back; `true` once a fresh timestamp was asked for.
    Stale(u64, bool),
    /// The txn safe point, checked against a start timestamp when one is given; `true` once
    /// PD was asked.
    SafePoint(Option<u64>, bool),
    /// Finished at creation (a cached timestamp).
    Ready(u64),
}

impl Op {
    /// Validates `command` and creates its machine.
    ///
    /// Errors with [`Error::InvalidArgument`] for input the operation cannot accept.
    pub(crate) fn start(command: Command, shared: &Shared) -> Result<Self, Error> {
        Ok(match command {
            Command::Timestamp => Self::Timestamp,
            Command::LowResolutionTimestamp => {
                let staleness = shared.config.low_resolution_ts_staleness;
                let oldest = crate::time::Time::from_micros(
                    shared
                        .now
                        .as_micros()
                        .saturating_sub(u64::try_from(staleness.as_micros()).unwrap_or(u64::MAX)),
                );
                match shared.pd.recent_timestamp(oldest) {
                    Some(ts) => Self::Ready(ts),
                    None => Self::Timestamp,
                }
            }
            Command::Raw(raw) => Self::Waiting(Box::new(raw)),
            Command::WaitScatterRegionFinish { region_id, budget } => Self::Operator(Box::new(
                super::split::OperatorWait::new(region_id, true, budget),
            )),
            Command::CheckRegionInScattering { region_id } => Self::Operator(Box::new(
                super::split::OperatorWait::new(region_id, false, CHECK_SCATTER_BUDGET),
            )),
            Command::ClusterId => Self::ClusterId(false),
            Command::SetExternalTimestamp(timestamp) => {
                Self::PdCall(Some(Box::new(crate::rpc::PdRequest::SetExternalTimestamp(
                    tikv_proto::pdpb::SetExternalTimestampRequest {
                        timestamp,
                        ..Default::default()
                    },
                ))))
            }
            Command::GetExternalTimestamp => Self::PdCall(Some(Box::new(
                crate::rpc::PdRequest::GetExternalTimestamp(Default::default()),
            ))),
            Command::TxnSafePoint => Self::SafePoint(None, false),
            Command::CheckVisibility { start_ts } => Self::SafePoint(Some(start_ts), false),
            Command::StaleTimestamp { prev_secs } => {
                Self::Stale(prev_secs.saturating_mul(1_000), false)
            }
        })
    }

    /// Advances the operation; `Some` when it finished.
    pub(crate) fn drive(
        &mut self,
        shared: &mut Shared,
        id: OpId,
        wake: Wake,
    ) -> Option<Result<Output, Error>> {
        if let Self::Waiting(_) = self {
            match shared.ensure_keyspace(id) {
                Readiness::Parked => return None,
                Readiness::Failed(err) => return Some(Err(err)),
                Readiness::Ready => {}
            }
            let Self::Waiting(raw) = std::mem::replace(self, Self::Timestamp) else {
                return Some(Err(Error::UnexpectedResponse("bad waiting command".into())));
            };
            match RawOp::new(*raw, shared) {
                Ok(op) => *self = Self::Raw(Box::new(op)),
                Err(err) => return Some(Err(err)),
            }
            return self.drive(shared, id, Wake::Start);
        }
        match self {
            Self::Ready(ts) => Some(Ok(Output::Timestamp(*ts))),
            Self::Waiting(_) => None,
            Self::Raw(raw) => raw.drive(shared, id, wake),
            Self::Operator(wait) => wait.drive(shared, id, wake),
            Self::PdCall(request) => {
                if let Some(request) = request.take() {
                    shared.pd_call(id, *request);
                    return None;
                }
                Some(pd_call_output(shared.pd.take_op_result(id)?))
            }
            Self::SafePoint(start_ts, asked) => {
                let safe_point = if *asked {
                    match safe_point(shared.pd.take_op_result(id)?) {
                        Ok(safe_point) => safe_point,
                        Err(err) => return Some(Err(err)),
                    }
                } else {
                    *asked = true;
                    let keyspace = shared.pd.keyspace_id().unwrap_or(NULL_KEYSPACE_ID);
                    shared.pd_call(
                        id,
                        crate::rpc::PdRequest::GetGcState(tikv_proto::pdpb::GetGcStateRequest {
                            keyspace_scope: Some(tikv_proto::pdpb::KeyspaceScope {
                                keyspace: Some(
                                    tikv_proto::pdpb::keyspace_scope::Keyspace::KeyspaceId(
                                        keyspace,
                                    ),
                                ),
                            }),
                            exclude_gc_barriers: true,
                            ..Default::default()
                        }),
                    );
                    return None;
                };
                Some(match *start_ts {
                    Some(start_ts) if start_ts < safe_point => Err(Error::TxnAbortedByGc {
                        start_ts,
                        safe_point,
                    }),
                    _ => Ok(Output::Timestamp(safe_point)),
                })
            }
            Self::Stale(prev_ms, asked) => {
                if *asked {
                    if let Err(err) = shared.pd.take_timestamp(id)? {
                        return Some(Err(err));
                    }
                }
                match shared.pd.last_timestamp() {
                    Some((ts, arrived)) => Some(stale_timestamp(ts, arrived, shared.now, *prev_ms)),
                    None if !*asked => {
                        *asked = true;
                        shared.request_timestamp(id);
                        None
                    }
                    None => Some(Err(Error::UnexpectedResponse("no timestamp".into()))),
                }
            }
            Self::ClusterId(asked) => {
                if *asked {
                    if let Some(Err(err)) = shared.pd.take_op_result(id) {
                        return Some(Err(err));
                    }
                }
                let cluster_id = shared.pd.cluster_id();
                if cluster_id != 0 {
                    return Some(Ok(Output::ClusterId(cluster_id)));
                }
                if *asked {
                    return None;
                }
                // Any PD call discovers PD first, which learns the cluster id.
                *asked = true;
                shared.pd_call(
                    id,
                    crate::rpc::PdRequest::GetMembers(
                        tikv_proto::pdpb::GetMembersRequest::default(),
                    ),
                );
                None
            }
            Self::Timestamp => {
                if let Some(result) = shared.pd.take_timestamp(id) {
                    return Some(result.map(Output::Timestamp));
                }
                if matches!(wake, Wake::Start) {
                    shared.request_timestamp(id);
                }
                None
            }
        }
    }
}

/// The keyspace id PD's GC API uses for the cluster-wide (no keyspace) scope.
const NULL_KEYSPACE_ID: u32 = 0xFFFF_FFFF;

/// The txn safe point in a `GetGCState` answer.
fn safe_point(result: Result<crate::rpc::PdResponse, Error>) -> Result<u64, Error> {
    match result? {
        crate::rpc::PdResponse::GetGcState(response) => {
            if let Some(err) = super::pd::pd_error(response.header.as_ref()) {
                return Err(err);
            }
            Ok(response.gc_state.map_or(0, |state| state.txn_safe_point))
        }
        other => Err(Error::UnexpectedResponse(format!("{other:?}"))),
    }
}

/// The result of an operation's single PD call.
fn pd_call_output(result: Result<crate::rpc::PdResponse, Error>) -> Result<Output, Error> {
    use crate::rpc::PdResponse;
    let response = result?;
    if let Some(err) = super::pd::header_error(&response) {
        return Err(err);
    }
    match response {
        PdResponse::SetExternalTimestamp(_) => Ok(Output::Unit),
        PdResponse::GetExternalTimestamp(r) => Ok(Output::Timestamp(r.timestamp)),
        other => Err(Error::UnexpectedResponse(format!("{other:?}"))),
    }
}

/// client-go's stale timestamp: the physical time of the newest timestamp `ts`, moved on by
/// the time since it arrived, minus `prev_ms`; its logical part is zero.
fn stale_timestamp(
    ts: u64,
    arrived: crate::time::Time,
    now: crate::time::Time,
    prev_ms: u64,
) -> Result<Output, Error> {
    let physical = crate::oracle::extract_physical(ts);
    if physical <= prev_ms {
        return Err(Error::InvalidArgument(format!(
            "{} s back is before the Unix epoch",
            prev_ms / 1_000
        )));
    }
    let elapsed_ms = now.as_micros().saturating_sub(arrived.as_micros()) / 1_000;
    Ok(Output::Timestamp(crate::oracle::compose_ts(
        physical + elapsed_ms - prev_ms,
        0,
    )))
}
