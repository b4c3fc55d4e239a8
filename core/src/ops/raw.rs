//! Raw KV operations, as client-go's `rawkv.Client` runs them.
//!
//! - Point operations (get, put, delete, TTL, CAS) are one request to the key's region.
//! - Batch operations group keys by region and split each group by client-go's limits
//!   (512 keys per get/delete request, 16 KiB of pairs per put request); each request retries
//!   on its own, and keys whose region moved are regrouped.
//! - Range operations (scan, reverse scan, delete range, checksum) walk the regions one at a
//!   time from the start of the range, continuing from each region's boundary.

use std::collections::BTreeMap;

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use super::keys::KeySpace;
use crate::command::{MAX_RAW_SCAN_LIMIT, Output, RawChecksum, RawCommand};
use crate::config::ApiVersion;
use crate::error::{Error, KeyError};
use crate::op::Cx;
use crate::rpc::{StoreRequest, StoreResponse};
use crate::sender::Route;
use crate::sender::dispatch::{Dispatch, DispatchInput, Items, Plan, Progress};

/// Most keys in one raw batch get or delete request (client-go `rawBatchPairCount`).
pub const RAW_BATCH_PAIR_COUNT: usize = 512;
/// Most bytes of keys and values in one raw batch put request (client-go `rawBatchPutSize`).
pub const RAW_BATCH_PUT_SIZE: usize = 16 * 1024;

/// A running raw operation.
#[derive(Debug)]
pub(crate) struct RawOp {
    space: KeySpace,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Single {
        dispatch: Dispatch,
        plan: SinglePlan,
    },
    Batch {
        dispatch: Dispatch,
        plan: BatchPlan,
    },
    /// Boxed: a range walk carries a request template of several hundred bytes, and the
    /// point operations sharing this enum are moved into the operation table.
    Range(Box<RangeOp>),
}

impl RawOp {
    /// Validates `command` and prepares its machine.
    ///
    /// Errors with [`Error::InvalidArgument`] for empty keys, mismatched TTLs, a scan limit
    /// over [`MAX_RAW_SCAN_LIMIT`], TTLs on API V1, or compare-and-swap outside atomic mode.
    pub(crate) fn new(command: RawCommand, cx: &Cx<'_>) -> Result<Self, Error> {
        let config = cx.config();
        let space = KeySpace::raw(config.api_version, cx.keyspace_id())?;
        let budget = config.raw_max_backoff;
        let timeout = config.read_timeout_short;
        let no_ttl_support = config.api_version == ApiVersion::V1;
        let single = |space: &KeySpace, key: &Bytes, request: StoreRequest| Kind::Single {
            dispatch: Dispatch::new(
                smallvec::smallvec![space.routing_key(key)],
                false,
                budget,
                timeout,
            ),
            plan: SinglePlan {
                request: Box::new(request),
                response: None,
            },
        };
        let kind = match command {
            RawCommand::Get { key, cf } => {
                let key = space.request_key(non_empty(&key)?);
                let request = StoreRequest::RawGet(kvrpcpb::RawGetRequest {
                    key: key.clone(),
                    cf,
                    ..Default::default()
                });
                single(&space, &key, request)
            }
            RawCommand::GetKeyTtl { key, cf } => {
                let key = space.request_key(non_empty(&key)?);
                let request = StoreRequest::RawGetKeyTtl(kvrpcpb::RawGetKeyTtlRequest {
                    key: key.clone(),
                    cf,
                    ..Default::default()
                });
                single(&space, &key, request)
            }
            RawCommand::Put {
                key,
                value,
                ttl_secs,
                cf,
                atomic,
            } => {
                if ttl_secs != 0 && no_ttl_support {
                    return Err(ttl_unsupported());
                }
                let key = space.request_key(non_empty(&key)?);
                let request = StoreRequest::RawPut(kvrpcpb::RawPutRequest {
                    key: key.clone(),
                    value,
                    cf,
                    ttl: ttl_secs,
                    for_cas: atomic,
                    ..Default::default()
                });
                single(&space, &key, request)
            }
            RawCommand::Delete { key, cf, atomic } => {
                let key = space.request_key(non_empty(&key)?);
                let mut request = kvrpcpb::RawDeleteRequest {
                    key: key.clone(),
                    cf,
                    for_cas: atomic,
                    ..Default::default()
                };
                request
                    .context
                    .get_or_insert_with(Default::default)
                    .max_execution_duration_ms = millis(config.max_write_execution);
                single(&space, &key, StoreRequest::RawDelete(request))
            }
            RawCommand::CompareAndSwap {
                key,
                previous,
                value,
                cf,
                atomic,
            } => {
                if !atomic {
                    return Err(Error::InvalidArgument(
                        "compare-and-swap needs the client's atomic mode".to_owned(),
                    ));
                }
                let key = space.request_key(non_empty(&key)?);
                let mut request = kvrpcpb::RawCasRequest {
                    key: key.clone(),
                    value,
                    cf,
                    ..Default::default()
                };
                match previous {
                    None => request.previous_not_exist = true,
                    Some(previous) => request.previous_value = previous,
                }
                request
                    .context
                    .get_or_insert_with(Default::default)
                    .max_execution_duration_ms = millis(config.max_write_execution);
                single(&space, &key, StoreRequest::RawCompareAndSwap(request))
            }
            RawCommand::BatchGet { keys, cf } => {
                let keys = request_keys(&space, &keys)?;
                Kind::Batch {
                    dispatch: batch_dispatch(&space, &keys, budget, timeout),
                    plan: BatchPlan::Get {
                        cf,
                        keys,
                        found: BTreeMap::new(),
                    },
                }
            }
            RawCommand::BatchDelete { keys, cf, atomic } => {
                let keys = request_keys(&space, &keys)?;
                Kind::Batch {
                    dispatch: batch_dispatch(&space, &keys, budget, timeout),
                    plan: BatchPlan::Delete { cf, keys, atomic },
                }
            }
            RawCommand::BatchPut {
                pairs,
                ttls_secs,
                cf,
                atomic,
            } => {
                if !ttls_secs.is_empty() && ttls_secs.len() != pairs.len() {
                    return Err(Error::InvalidArgument(format!(
                        "{} TTLs for {} pairs: give none or one per pair",
                        ttls_secs.len(),
                        pairs.len()
                    )));
                }
                if no_ttl_support && ttls_secs.iter().any(|ttl| *ttl != 0) {
                    return Err(ttl_unsupported());
                }
                let mut keys = Vec::with_capacity(pairs.len());
                let mut values = Vec::with_capacity(pairs.len());
                for (key, value) in pairs {
                    keys.push(space.request_key(non_empty(&key)?));
                    values.push(value);
                }
                Kind::Batch {
                    dispatch: batch_dispatch(&space, &keys, budget, timeout),
                    plan: BatchPlan::Put {
                        cf,
                        keys,
                        values,
                        ttls: ttls_secs,
                        atomic,
                    },
                }
            }
            RawCommand::Scan {
                start,
                end,
                limit,
                key_only,
                reverse,
                cf,
            } => {
                if limit > MAX_RAW_SCAN_LIMIT {
                    return Err(Error::InvalidArgument(format!(
                        "scan limit {limit} exceeds the maximum {MAX_RAW_SCAN_LIMIT}"
                    )));
                }
                if reverse && start.is_empty() && space == KeySpace::Plain {
                    // TiKV reads an empty upper bound of a reverse scan as "before the first
                    // key", so the scan would silently return nothing (client-go's
                    // ReverseScan does exactly that). Say so instead.
                    return Err(Error::InvalidArgument(
                        "a reverse scan needs a non-empty upper bound (start key)".to_owned(),
                    ));
                }
                let (cursor, end) = if reverse {
                    (space.request_end(&start), space.request_key(&end))
                } else {
                    (space.request_key(&start), space.request_end(&end))
                };
                Kind::Range(Box::new(RangeOp::new(
                    RangeKind::Scan {
                        limit,
                        key_only,
                        reverse,
                        cf,
                        pairs: Vec::new(),
                    },
                    cursor,
                    end,
                )))
            }
            RawCommand::DeleteRange { start, end, cf } => Kind::Range(Box::new(RangeOp::new(
                RangeKind::DeleteRange { cf },
                space.request_key(&start),
                space.request_end(&end),
            ))),
            RawCommand::Checksum { start, end } => Kind::Range(Box::new(RangeOp::new(
                RangeKind::Checksum {
                    sum: RawChecksum::default(),
                },
                space.request_key(&start),
                space.request_end(&end),
            ))),
        };
        Ok(Self { space, kind })
    }

    /// client-go's `KVStore.DeleteRange` (or, with `notify_only`, its notify-only form)
    /// over transactional user keys `[start, end)`: a walk over the regions, one
    /// `DeleteRange` request each.
    ///
    /// Errors when the key space cannot be built (API V2 without a keyspace).
    pub(crate) fn txn_delete_range(
        start: &Bytes,
        end: &Bytes,
        notify_only: bool,
        cx: &Cx<'_>,
    ) -> Result<Self, Error> {
        let space = KeySpace::txn(cx.config().api_version, cx.keyspace_id())?;
        let kind = Kind::Range(Box::new(RangeOp::new(
            RangeKind::TxnDeleteRange {
                notify_only,
                regions: 0,
            },
            space.request_key(start),
            space.request_end(end),
        )));
        Ok(Self { space, kind })
    }

    /// Advances the operation; `Some` when it finished.
    pub(crate) fn drive(
        &mut self,
        cx: &mut Cx<'_>,
        input: DispatchInput,
    ) -> Option<Result<Output, Error>> {
        match &mut self.kind {
            Kind::Single { dispatch, plan } => match dispatch.handle(cx, input, plan) {
                Progress::Pending => None,
                Progress::Failed(err) => Some(Err(err)),
                Progress::Done => Some(plan.output()),
            },
            Kind::Batch { dispatch, plan } => match dispatch.handle(cx, input, plan) {
                Progress::Pending => None,
                Progress::Failed(err) => Some(Err(err)),
                Progress::Done => Some(plan.output()),
            },
            Kind::Range(range) => range.drive(cx, input, &self.space),
        }
    }
}

super::driven_operation!(RawOp);

fn non_empty(key: &Bytes) -> Result<&Bytes, Error> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("empty key".to_owned()));
    }
    Ok(key)
}

fn ttl_unsupported() -> Error {
    Error::InvalidArgument("TTL needs API version V1TTL or V2".to_owned())
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn request_keys(space: &KeySpace, keys: &[Bytes]) -> Result<Vec<Bytes>, Error> {
    keys.iter()
        .map(|key| non_empty(key).map(|key| space.request_key(key)))
        .collect()
}

fn batch_dispatch(
    space: &KeySpace,
    keys: &[Bytes],
    budget: std::time::Duration,
    timeout: std::time::Duration,
) -> Dispatch {
    let routing = space.routing_keys(keys);
    Dispatch::new(routing, false, budget, timeout)
}

fn server_error(error: String) -> Result<(), Error> {
    if error.is_empty() {
        Ok(())
    } else {
        Err(Error::Server(error))
    }
}

fn unexpected(response: &StoreResponse) -> Error {
    Error::UnexpectedResponse(format!("mismatched response {response:?}"))
}

/// One request to one key's region.
#[derive(Debug)]
struct SinglePlan {
    /// Boxed: a request is several hundred bytes, and the operation holding it is moved
    /// into the table (each send clones the box straight into a new allocation).
    request: Box<StoreRequest>,
    response: Option<Box<StoreResponse>>,
}

impl Plan for SinglePlan {
    fn build(
        &mut self,
        items: &[usize],
        _route: &Route,
        send: &mut dyn FnMut(Items, Box<StoreRequest>),
    ) {
        send(Items::from_slice(items), self.request.clone());
    }

    fn absorb(
        &mut self,
        _items: &[usize],
        _route: &Route,
        response: Box<StoreResponse>,
    ) -> Result<(), Error> {
        if !response.matches(&self.request) {
            return Err(unexpected(&response));
        }
        self.response = Some(response);
        Ok(())
    }
}

impl SinglePlan {
    fn output(&mut self) -> Result<Output, Error> {
        let Some(response) = self.response.take() else {
            return Err(Error::UnexpectedResponse("no response".to_owned()));
        };
        match *response {
            StoreResponse::RawGet(r) => {
                server_error(r.error)?;
                Ok(Output::Value((!r.not_found).then_some(r.value)))
            }
            StoreResponse::RawPut(r) => server_error(r.error).map(|()| Output::Unit),
            StoreResponse::RawDelete(r) => server_error(r.error).map(|()| Output::Unit),
            StoreResponse::RawGetKeyTtl(r) => {
                server_error(r.error)?;
                Ok(Output::Ttl((!r.not_found).then_some(r.ttl)))
            }
            StoreResponse::RawCompareAndSwap(r) => {
                server_error(r.error)?;
                Ok(Output::Swapped {
                    previous: (!r.previous_not_exist).then_some(r.previous_value),
                    succeeded: r.succeed,
                })
            }
            other => Err(unexpected(&other)),
        }
    }
}

/// Many keys, grouped by region.
#[derive(Debug)]
enum BatchPlan {
    Get {
        cf: String,
        keys: Vec<Bytes>,
        found: BTreeMap<Bytes, Bytes>,
    },
    Put {
        cf: String,
        keys: Vec<Bytes>,
        values: Vec<Bytes>,
        ttls: Vec<u64>,
        atomic: bool,
    },
    Delete {
        cf: String,
        keys: Vec<Bytes>,
        atomic: bool,
    },
}

impl Plan for BatchPlan {
    fn build(
        &mut self,
        items: &[usize],
        _route: &Route,
        send: &mut dyn FnMut(Items, Box<StoreRequest>),
    ) {
        match self {
            Self::Get { cf, keys, .. } => {
                for chunk in items.chunks(RAW_BATCH_PAIR_COUNT) {
                    let request = kvrpcpb::RawBatchGetRequest {
                        keys: chunk.iter().filter_map(|&i| keys.get(i).cloned()).collect(),
                        cf: cf.clone(),
                        ..Default::default()
                    };
                    send(
                        Items::from_slice(chunk),
                        Box::new(StoreRequest::RawBatchGet(request)),
                    );
                }
            }
            Self::Delete { cf, keys, atomic } => {
                for chunk in items.chunks(RAW_BATCH_PAIR_COUNT) {
                    let request = kvrpcpb::RawBatchDeleteRequest {
                        keys: chunk.iter().filter_map(|&i| keys.get(i).cloned()).collect(),
                        cf: cf.clone(),
                        for_cas: *atomic,
                        ..Default::default()
                    };
                    send(
                        Items::from_slice(chunk),
                        Box::new(StoreRequest::RawBatchDelete(request)),
                    );
                }
            }
            Self::Put {
                cf,
                keys,
                values,
                ttls,
                atomic,
            } => {
                // Split by size as client-go's AppendBatches does: a batch closes once it
                // reaches the limit, so a single large pair still goes alone.
                let mut send_batch = |batch: Items| {
                    let request = kvrpcpb::RawBatchPutRequest {
                        pairs: batch
                            .iter()
                            .map(|&i| kvrpcpb::KvPair {
                                key: keys.get(i).cloned().unwrap_or_default(),
                                value: values.get(i).cloned().unwrap_or_default(),
                                ..Default::default()
                            })
                            .collect(),
                        cf: cf.clone(),
                        for_cas: *atomic,
                        ttls: if ttls.is_empty() {
                            Vec::new()
                        } else {
                            batch
                                .iter()
                                .map(|&i| ttls.get(i).copied().unwrap_or(0))
                                .collect()
                        },
                        ..Default::default()
                    };
                    send(batch, Box::new(StoreRequest::RawBatchPut(request)));
                };
                let mut current = Items::new();
                let mut size = 0usize;
                for &item in items {
                    let pair_size = keys.get(item).map_or(0, Bytes::len)
                        + values.get(item).map_or(0, Bytes::len);
                    current.push(item);
                    size += pair_size;
                    if size >= RAW_BATCH_PUT_SIZE {
                        send_batch(std::mem::take(&mut current));
                        size = 0;
                    }
                }
                if !current.is_empty() {
                    send_batch(current);
                }
            }
        }
    }

    fn absorb(
        &mut self,
        _items: &[usize],
        _route: &Route,
        response: Box<StoreResponse>,
    ) -> Result<(), Error> {
        match (self, *response) {
            (Self::Get { found, .. }, StoreResponse::RawBatchGet(r)) => {
                for pair in r.pairs {
                    if let Some(error) = pair.error {
                        return Err(KeyError::from_proto(&error).into());
                    }
                    found.insert(pair.key, pair.value);
                }
                Ok(())
            }
            (Self::Put { .. }, StoreResponse::RawBatchPut(r)) => server_error(r.error),
            (Self::Delete { .. }, StoreResponse::RawBatchDelete(r)) => server_error(r.error),
            (_, other) => Err(unexpected(&other)),
        }
    }
}

impl BatchPlan {
    fn output(&mut self) -> Result<Output, Error> {
        match self {
            Self::Get { keys, found, .. } => Ok(Output::Values(
                keys.iter().map(|key| found.get(key).cloned()).collect(),
            )),
            Self::Put { .. } | Self::Delete { .. } => Ok(Output::Unit),
        }
    }
}

/// A range operation walking regions one at a time.
#[derive(Debug)]
struct RangeOp {
    kind: RangeKind,
    /// Request key where the next step starts (for reverse scans: the exclusive upper bound;
    /// empty = from the very end).
    cursor: Bytes,
    /// Request key where the range ends (for reverse scans: the inclusive lower bound).
    end: Bytes,
    step: Option<(Dispatch, RangeStep)>,
    /// The walk reached the edge of the key space.
    finished: bool,
}

#[derive(Debug)]
enum RangeKind {
    Scan {
        limit: u32,
        key_only: bool,
        reverse: bool,
        cf: String,
        pairs: Vec<(Bytes, Bytes)>,
    },
    DeleteRange {
        cf: String,
    },
    /// client-go's `KVStore.DeleteRange` (transactional keys, every version).
    TxnDeleteRange {
        notify_only: bool,
        regions: u64,
    },
    Checksum {
        sum: RawChecksum,
    },
}

/// One region's worth of a range operation.
#[derive(Debug)]
struct RangeStep {
    template: StepTemplate,
    space: KeySpace,
    outcome: Option<(Route, Box<StoreResponse>)>,
}

#[derive(Debug, Clone)]
enum StepTemplate {
    Scan(kvrpcpb::RawScanRequest),
    DeleteRange(kvrpcpb::RawDeleteRangeRequest),
    TxnDeleteRange(kvrpcpb::DeleteRangeRequest),
    Checksum(kvrpcpb::RawChecksumRequest),
}

impl RangeStep {
    /// Cuts a delete's `end` at the region's end, as client-go does, so each request stays
    /// inside the region it is sent to.
    fn clamp_to_region(&self, end: &mut Bytes, route: &Route) {
        if let Some(region_end) = self.space.boundary_to_request(&route.region.end_key) {
            if end.is_empty() || region_end < *end {
                *end = region_end;
            }
        }
    }
}

impl Plan for RangeStep {
    fn build(
        &mut self,
        items: &[usize],
        route: &Route,
        send: &mut dyn FnMut(Items, Box<StoreRequest>),
    ) {
        let request = match &self.template {
            StepTemplate::Scan(r) => StoreRequest::RawScan(r.clone()),
            StepTemplate::Checksum(r) => StoreRequest::RawChecksum(r.clone()),
            StepTemplate::DeleteRange(r) => {
                let mut r = r.clone();
                self.clamp_to_region(&mut r.end_key, route);
                StoreRequest::RawDeleteRange(r)
            }
            StepTemplate::TxnDeleteRange(r) => {
                let mut r = r.clone();
                self.clamp_to_region(&mut r.end_key, route);
                StoreRequest::DeleteRange(r)
            }
        };
        send(Items::from_slice(items), Box::new(request));
    }

    fn absorb(
        &mut self,
        _items: &[usize],
        route: &Route,
        response: Box<StoreResponse>,
    ) -> Result<(), Error> {
        self.outcome = Some((route.clone(), response));
        Ok(())
    }
}

impl RangeOp {
    fn new(kind: RangeKind, cursor: Bytes, end: Bytes) -> Self {
        Self {
            kind,
            cursor,
            end,
            step: None,
            finished: false,
        }
    }

    /// Whether another region must be visited.
    fn more(&self, space: &KeySpace) -> bool {
        if self.finished {
            return false;
        }
        match &self.kind {
            RangeKind::Scan {
                limit,
                reverse,
                pairs,
                ..
            } => {
                if pairs.len() >= *limit as usize {
                    return false;
                }
                if *reverse {
                    self.cursor > self.end && !space.is_start(&self.cursor)
                } else {
                    self.end.is_empty() || self.cursor < self.end
                }
            }
            RangeKind::DeleteRange { .. }
            | RangeKind::TxnDeleteRange { .. }
            | RangeKind::Checksum { .. } => self.end.is_empty() || self.cursor < self.end,
        }
    }

    fn start_step(&mut self, cx: &Cx<'_>, space: &KeySpace) {
        let config = cx.config();
        let (template, reverse) = match &self.kind {
            RangeKind::Scan {
                limit,
                key_only,
                reverse,
                cf,
                pairs,
            } => (
                StepTemplate::Scan(kvrpcpb::RawScanRequest {
                    start_key: self.cursor.clone(),
                    end_key: self.end.clone(),
                    limit: limit.saturating_sub(u32::try_from(pairs.len()).unwrap_or(u32::MAX)),
                    key_only: *key_only,
                    cf: cf.clone(),
                    reverse: *reverse,
                    ..Default::default()
                }),
                *reverse,
            ),
            RangeKind::DeleteRange { cf } => (
                StepTemplate::DeleteRange(kvrpcpb::RawDeleteRangeRequest {
                    start_key: self.cursor.clone(),
                    end_key: self.end.clone(),
                    cf: cf.clone(),
                    ..Default::default()
                }),
                false,
            ),
            RangeKind::TxnDeleteRange { notify_only, .. } => (
                StepTemplate::TxnDeleteRange(kvrpcpb::DeleteRangeRequest {
                    start_key: self.cursor.clone(),
                    end_key: self.end.clone(),
                    notify_only: *notify_only,
                    ..Default::default()
                }),
                false,
            ),
            RangeKind::Checksum { .. } => (
                StepTemplate::Checksum(kvrpcpb::RawChecksumRequest {
                    algorithm: kvrpcpb::ChecksumAlgorithm::Crc64Xor as i32,
                    ranges: vec![kvrpcpb::KeyRange {
                        start_key: self.cursor.clone(),
                        end_key: self.end.clone(),
                    }],
                    ..Default::default()
                }),
                false,
            ),
        };
        let routing = space.routing_key(&self.cursor);
        // client-go gives each region of a transactional delete range 100 s of backoff and
        // the medium timeout; raw range operations use the raw budget.
        let (budget, timeout) = match self.kind {
            RangeKind::TxnDeleteRange { .. } => (
                std::time::Duration::from_millis(
                    crate::backoff::DELETE_RANGE_ONE_REGION_MAX_BACKOFF_MS,
                ),
                config.read_timeout_medium,
            ),
            _ => (config.raw_max_backoff, config.read_timeout_short),
        };
        let dispatch = Dispatch::new(smallvec::smallvec![routing], reverse, budget, timeout);
        self.step = Some((
            dispatch,
            RangeStep {
                template,
                space: space.clone(),
                outcome: None,
            },
        ));
    }

    fn drive(
        &mut self,
        cx: &mut Cx<'_>,
        input: DispatchInput,
        space: &KeySpace,
    ) -> Option<Result<Output, Error>> {
        let mut input = Some(input);
        // Each pass finishes at most one region; bounded by the number of regions walked.
        loop {
            if self.step.is_none() {
                if !self.more(space) {
                    return Some(self.output());
                }
                self.start_step(cx, space);
                // A new region's step starts afresh; the input that finished the last one
                // is spent.
                input = Some(DispatchInput::Start);
            }
            let (dispatch, step) = self.step.as_mut()?;
            let progress = dispatch.handle(cx, input.take().unwrap_or(DispatchInput::Timer), step);
            match progress {
                Progress::Pending => return None,
                Progress::Failed(err) => return Some(Err(err)),
                Progress::Done => {
                    let outcome = step.outcome.take();
                    self.step = None;
                    let Some((route, response)) = outcome else {
                        return Some(Err(Error::UnexpectedResponse("no response".into())));
                    };
                    if let Err(err) = self.absorb_step(space, &route, response) {
                        return Some(Err(err));
                    }
                }
            }
        }
    }

    fn absorb_step(
        &mut self,
        space: &KeySpace,
        route: &Route,
        response: Box<StoreResponse>,
    ) -> Result<(), Error> {
        match (&mut self.kind, *response) {
            (
                RangeKind::Scan {
                    reverse,
                    key_only,
                    pairs,
                    ..
                },
                StoreResponse::RawScan(r),
            ) => {
                let reverse = *reverse;
                for pair in r.kvs {
                    if let Some(error) = pair.error {
                        return Err(KeyError::from_proto(&error).into());
                    }
                    let key = space.user_key(pair.key)?;
                    let value = if *key_only { Bytes::new() } else { pair.value };
                    pairs.push((key, value));
                }
                let next = if reverse {
                    space.boundary_to_request(&route.region.start_key)
                } else {
                    space.boundary_to_request(&route.region.end_key)
                };
                self.advance(next);
                Ok(())
            }
            (RangeKind::DeleteRange { .. }, StoreResponse::RawDeleteRange(r)) => {
                server_error(r.error)?;
                self.advance(space.boundary_to_request(&route.region.end_key));
                Ok(())
            }
            (RangeKind::TxnDeleteRange { regions, .. }, StoreResponse::DeleteRange(r)) => {
                server_error(r.error)?;
                *regions += 1;
                self.advance(space.boundary_to_request(&route.region.end_key));
                Ok(())
            }
            (RangeKind::Checksum { sum }, StoreResponse::RawChecksum(r)) => {
                server_error(r.error)?;
                sum.crc64_xor ^= r.checksum;
                sum.total_kvs += r.total_kvs;
                sum.total_bytes += r.total_bytes;
                self.advance(space.boundary_to_request(&route.region.end_key));
                Ok(())
            }
            (_, other) => Err(unexpected(&other)),
        }
    }

    /// Moves the cursor to the region boundary `next`; `None` (the key space's edge) ends the
    /// walk.
    fn advance(&mut self, next: Option<Bytes>) {
        match next {
            Some(next) => self.cursor = next,
            None => self.finished = true,
        }
    }

    fn output(&mut self) -> Result<Output, Error> {
        match &mut self.kind {
            RangeKind::Scan { pairs, .. } => Ok(Output::Pairs(std::mem::take(pairs))),
            RangeKind::DeleteRange { .. } => Ok(Output::Unit),
            RangeKind::TxnDeleteRange { regions, .. } => Ok(Output::Count(*regions)),
            RangeKind::Checksum { sum } => Ok(Output::Checksum(*sum)),
        }
    }
}
