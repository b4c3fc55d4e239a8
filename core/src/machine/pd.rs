//! PD from the client's side: member discovery with failover, cluster id, region and store
//! lookups shared by every operation that needs them, and TSO batching.
//!
//! ```text
//!  Discovering ──GetMembers ok──► Ready{leader, cluster_id} ──transport error──► Discovering
//!       │  ▲                                                     (rotate endpoints, back off)
//!       └──┘ failure: next endpoint after a backoff
//! ```
//!
//! Requests made while no leader is known are queued and sent once discovery succeeds. Each
//! PD request is retried with client-go's `pdRPC` backoff up to a budget; when it runs out,
//! every operation waiting on it fails with the last error.

use std::collections::BTreeMap;

use tikv_proto::pdpb;
use tikv_proto::rpc::RpcError;

use super::shared::{Owner, Shared};
use super::{OpId, RequestId};
use crate::backoff::{BackoffKind, Backoffer};
use crate::error::Error;
use crate::rpc::{PdRequest, PdResponse, Request, Response};
use crate::time::Time;

/// Total backoff one PD request may spend before its waiters fail (client-go's TSO and
/// region-lookup budgets are of this order).
const PD_MAX_BACKOFF_MS: u64 = 20_000;

/// Most regions one batch lookup loads.
const SCAN_REGIONS_LIMIT: i32 = 128;

/// The keyspace API V2 clients use when none is named.
const DEFAULT_KEYSPACE: &str = "DEFAULT";

/// Whether `region` holds `key`.
fn contains(region: &tikv_proto::metapb::Region, key: &[u8]) -> bool {
    region.start_key.as_ref() <= key && (region.end_key.is_empty() || key < region.end_key.as_ref())
}

/// What a PD request is for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Purpose {
    Region {
        key: Vec<u8>,
        reverse: bool,
    },
    Store(u64),
    Tso,
    Keyspace,
    /// The periodic store list refresh (nobody waits on it).
    StoreList,
    /// A call an operation makes itself (scatter, operator status); the answer, header
    /// errors included, goes back to it.
    OpCall(OpId),
}

/// Where loading the configured keyspace stands (API V2 only).
#[derive(Debug)]
pub(crate) enum KeyspaceState {
    /// No keyspace is needed (API V1/V1TTL).
    NotNeeded,
    /// Not asked for yet.
    Unloaded,
    /// Asked for; these operations wait.
    Loading(Vec<OpId>),
    /// Loaded with this id.
    Loaded(u32),
    /// PD said no (or could not be reached within the budget).
    Failed(Error),
}

#[derive(Debug)]
struct Pending {
    purpose: Purpose,
    request: PdRequest,
    backoff: Backoffer,
}

/// PD-side state of the client.
#[derive(Debug)]
pub(crate) struct PdState {
    endpoints: Vec<String>,
    next_endpoint: usize,
    leader: Option<String>,
    cluster_id: u64,
    keyspace: KeyspaceState,
    discovery: Option<RequestId>,
    discovery_backoff: Option<Backoffer>,
    retry_at: Option<Time>,
    /// Requests waiting for a leader or for their backoff to pass.
    queued: Vec<(Time, Pending)>,
    inflight: BTreeMap<RequestId, Pending>,
    region_waiters: BTreeMap<(Vec<u8>, bool), Vec<OpId>>,
    store_waiters: BTreeMap<u64, Vec<OpId>>,
    /// Stores with a PD lookup out.
    store_lookups: std::collections::BTreeSet<u64>,
    tso_waiters: Vec<OpId>,
    /// The TSO request in flight: its id, the count asked for, and who waits (cancelled
    /// operations leave the list; their timestamps go unused).
    tso_inflight: Option<(RequestId, u32, Vec<OpId>)>,
    /// The newest timestamp seen and when it arrived, for low-resolution reads.
    last_ts: Option<(u64, Time)>,
    timestamps: BTreeMap<OpId, Result<u64, Error>>,
    lookup_errors: BTreeMap<OpId, Error>,
    /// When the store list is next refreshed; `None` until PD is first reached (or when
    /// refreshing is off).
    next_store_refresh: Option<Time>,
    /// A store list refresh is out.
    store_refresh_inflight: bool,
    /// Answers to operations' own PD calls, until they take them.
    op_results: BTreeMap<OpId, Result<PdResponse, Error>>,
}

impl PdState {
    pub(crate) fn new(endpoints: Vec<String>, needs_keyspace: bool) -> Self {
        Self {
            endpoints,
            next_endpoint: 0,
            leader: None,
            cluster_id: 0,
            keyspace: if needs_keyspace {
                KeyspaceState::Unloaded
            } else {
                KeyspaceState::NotNeeded
            },
            discovery: None,
            discovery_backoff: None,
            retry_at: None,
            queued: Vec::new(),
            inflight: BTreeMap::new(),
            region_waiters: BTreeMap::new(),
            store_waiters: BTreeMap::new(),
            store_lookups: std::collections::BTreeSet::new(),
            tso_waiters: Vec::new(),
            tso_inflight: None,
            last_ts: None,
            timestamps: BTreeMap::new(),
            lookup_errors: BTreeMap::new(),
            next_store_refresh: None,
            store_refresh_inflight: false,
            op_results: BTreeMap::new(),
        }
    }

    /// The cluster id PD reported (0 before discovery).
    pub(crate) fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The keyspace id in use (API V2), once loaded.
    pub(crate) fn keyspace_id(&self) -> Option<u32> {
        match self.keyspace {
            KeyspaceState::Loaded(id) => Some(id),
            _ => None,
        }
    }

    /// The newest timestamp seen and when it arrived.
    pub(crate) fn last_timestamp(&self) -> Option<(u64, Time)> {
        self.last_ts
    }

    /// The newest timestamp seen, if it arrived no earlier than `oldest` (client-go's
    /// low-resolution timestamp).
    pub(crate) fn recent_timestamp(&self, oldest: Time) -> Option<u64> {
        self.last_ts
            .filter(|(_, seen_at)| *seen_at >= oldest)
            .map(|(ts, _)| ts)
    }

    /// The timestamp allocated to `op`, if it arrived.
    pub(crate) fn take_timestamp(&mut self, op: OpId) -> Option<Result<u64, Error>> {
        self.timestamps.remove(&op)
    }

    pub(crate) fn take_lookup_error(&mut self, op: OpId) -> Option<Error> {
        self.lookup_errors.remove(&op)
    }

    /// The answer to `op`'s own PD call, once it has come (see `Shared::pd_call`).
    pub(crate) fn take_op_result(&mut self, op: OpId) -> Option<Result<PdResponse, Error>> {
        self.op_results.remove(&op)
    }

    /// Appends PD work still pending: discovery, requests in flight or queued, operations
    /// parked on lookups, timestamps or the keyspace, and answers not yet taken.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn leftovers(&self, left: &mut Vec<String>) {
        if let Some(id) = self.discovery {
            left.push(format!("PD discovery #{}", id.0));
        }
        if let Some(at) = self.retry_at {
            left.push(format!("PD discovery retry at {at}"));
        }
        for (due, pending) in &self.queued {
            left.push(format!(
                "PD request for {:?} queued until {due}",
                pending.purpose
            ));
        }
        for (id, pending) in &self.inflight {
            left.push(format!("PD request #{} for {:?}", id.0, pending.purpose));
        }
        for ((key, reverse), ops) in &self.region_waiters {
            left.push(format!(
                "region lookup of {key:?} (reverse: {reverse}) awaited by {ops:?}"
            ));
        }
        for (store_id, ops) in &self.store_waiters {
            left.push(format!("store {store_id} lookup awaited by {ops:?}"));
        }
        for store_id in &self.store_lookups {
            left.push(format!("store {store_id} lookup"));
        }
        if !self.tso_waiters.is_empty() {
            left.push(format!("timestamps awaited by {:?}", self.tso_waiters));
        }
        if let Some((id, count, ops)) = &self.tso_inflight {
            left.push(format!("TSO #{} for {count} awaited by {ops:?}", id.0));
        }
        for op in self.timestamps.keys() {
            left.push(format!("timestamp of operation {} not taken", op.0));
        }
        for op in self.lookup_errors.keys() {
            left.push(format!("lookup error of operation {} not taken", op.0));
        }
        for op in self.op_results.keys() {
            left.push(format!("PD answer of operation {} not taken", op.0));
        }
        if let KeyspaceState::Loading(ops) = &self.keyspace {
            left.push(format!("keyspace load awaited by {ops:?}"));
        }
        if self.store_refresh_inflight {
            left.push("store list refresh".to_owned());
        }
    }

    pub(crate) fn forget_waiter(&mut self, op: OpId) {
        for waiters in self.region_waiters.values_mut() {
            waiters.retain(|w| *w != op);
        }
        for waiters in self.store_waiters.values_mut() {
            waiters.retain(|w| *w != op);
        }
        self.tso_waiters.retain(|w| *w != op);
        if let Some((_, _, waiters)) = &mut self.tso_inflight {
            waiters.retain(|w| *w != op);
        }
        self.timestamps.remove(&op);
        self.lookup_errors.remove(&op);
        self.op_results.remove(&op);
        if let KeyspaceState::Loading(waiters) = &mut self.keyspace {
            waiters.retain(|w| *w != op);
        }
    }
}

/// `http://host:port` → `host:port`.
fn address_of(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned()
}

pub(crate) fn header_error(response: &PdResponse) -> Option<Error> {
    pd_error(response.header())
}

/// The error a PD response header carries, if any.
pub(crate) fn pd_error(header: Option<&pdpb::ResponseHeader>) -> Option<Error> {
    let error = header?.error.as_ref()?;
    if error.r#type == pdpb::ErrorType::Ok as i32 {
        return None;
    }
    let kind = pdpb::ErrorType::try_from(error.r#type)
        .map(|t| t.as_str_name().to_owned())
        .unwrap_or_else(|_| format!("type {}", error.r#type));
    Some(Error::Pd {
        kind,
        message: error.message.clone(),
    })
}

/// Whether an operation may start.
#[derive(Debug)]
pub(crate) enum Readiness {
    /// Go ahead.
    Ready,
    /// Parked until the keyspace is loaded.
    Parked,
    /// The keyspace cannot be used.
    Failed(Error),
}

impl Shared {
    /// Checks that the configured keyspace is loaded (API V2), parking `op` while it loads.
    pub(crate) fn ensure_keyspace(&mut self, op: OpId) -> Readiness {
        match &mut self.pd.keyspace {
            KeyspaceState::NotNeeded | KeyspaceState::Loaded(_) => Readiness::Ready,
            KeyspaceState::Failed(err) => Readiness::Failed(err.clone()),
            KeyspaceState::Loading(waiters) => {
                if !waiters.contains(&op) {
                    waiters.push(op);
                }
                Readiness::Parked
            }
            KeyspaceState::Unloaded => {
                self.pd.keyspace = KeyspaceState::Loading(vec![op]);
                let name = self
                    .config
                    .keyspace
                    .clone()
                    .unwrap_or_else(|| DEFAULT_KEYSPACE.to_owned());
                self.pd_send(
                    Purpose::Keyspace,
                    PdRequest::LoadKeyspace(tikv_proto::keyspacepb::LoadKeyspaceRequest {
                        name,
                        ..Default::default()
                    }),
                );
                Readiness::Parked
            }
        }
    }

    fn on_keyspace(&mut self, response: tikv_proto::keyspacepb::LoadKeyspaceResponse) {
        use tikv_proto::keyspacepb::{KeyspaceState as State, keyspace_meta::Keyspace};
        let name = self
            .config
            .keyspace
            .clone()
            .unwrap_or_else(|| DEFAULT_KEYSPACE.to_owned());
        let state = match response.keyspace {
            Some(meta) if meta.state == State::Enabled as i32 => match meta.keyspace {
                Some(Keyspace::Id(id)) => KeyspaceState::Loaded(id),
                // API V3 identities are not supported by this client (nor by client-go).
                _ => KeyspaceState::Failed(Error::KeyspaceNotFound(name)),
            },
            _ => KeyspaceState::Failed(Error::KeyspaceNotFound(name)),
        };
        self.finish_keyspace(state);
    }

    fn finish_keyspace(&mut self, state: KeyspaceState) {
        let previous = std::mem::replace(&mut self.pd.keyspace, state);
        if let KeyspaceState::Loading(waiters) = previous {
            for op in waiters {
                self.wake(op);
            }
        }
    }

    /// Parks `op` until the region for `key` is known, sharing one PD lookup among waiters.
    pub(crate) fn lookup_region(&mut self, op: OpId, key: &[u8], reverse: bool) {
        self.lookup_regions(op, key, reverse, None);
    }

    /// Like [`lookup_region`](Self::lookup_region), but when the operation also needs keys up
    /// to `last_key`, loads the regions of `[key, last_key]` in one `BatchScanRegions` call (up to
    /// [`SCAN_REGIONS_LIMIT`]), as client-go's batch locate does, instead of one lookup per
    /// region.
    pub(crate) fn lookup_regions(
        &mut self,
        op: OpId,
        key: &[u8],
        reverse: bool,
        last_key: Option<&[u8]>,
    ) {
        let slot = (key.to_vec(), reverse);
        let waiters = self.pd.region_waiters.entry(slot).or_default();
        let first = waiters.is_empty();
        if !waiters.contains(&op) {
            waiters.push(op);
        }
        if !first {
            return;
        }
        if let (false, Some(last_key)) = (reverse, last_key) {
            // The end is exclusive: extend the last key by a zero byte to include it.
            let mut end_key = last_key.to_vec();
            end_key.push(0);
            self.pd_send(
                Purpose::Region {
                    key: key.to_vec(),
                    reverse,
                },
                PdRequest::BatchScanRegions(pdpb::BatchScanRegionsRequest {
                    ranges: vec![pdpb::KeyRange {
                        start_key: bytes::Bytes::copy_from_slice(key),
                        end_key: bytes::Bytes::from(end_key),
                    }],
                    limit: SCAN_REGIONS_LIMIT,
                    ..Default::default()
                }),
            );
            return;
        }
        {
            let region_key = bytes::Bytes::copy_from_slice(key);
            let request = pdpb::GetRegionRequest {
                region_key,
                ..Default::default()
            };
            let request = if reverse {
                PdRequest::GetPrevRegion(request)
            } else {
                PdRequest::GetRegion(request)
            };
            self.pd_send(
                Purpose::Region {
                    key: key.to_vec(),
                    reverse,
                },
                request,
            );
        }
    }

    /// Parks `op` until the address of store `store_id` is known.
    pub(crate) fn lookup_store(&mut self, op: OpId, store_id: u64) {
        let waiters = self.pd.store_waiters.entry(store_id).or_default();
        if !waiters.contains(&op) {
            waiters.push(op);
        }
        self.refresh_store(store_id);
    }

    /// Asks PD about store `store_id` unless a lookup is already out; nobody waits for the
    /// answer (used to re-check stores marked for it while their old address stays in use).
    pub(crate) fn refresh_store(&mut self, store_id: u64) {
        if self.pd.store_lookups.insert(store_id) {
            self.pd_send(
                Purpose::Store(store_id),
                PdRequest::GetStore(pdpb::GetStoreRequest {
                    store_id,
                    ..Default::default()
                }),
            );
        }
    }

    /// Sends `request` to PD for `op` (with discovery, failover and PD's retry budget for
    /// transport failures); `op` is woken when [`PdState::take_op_result`] has the answer.
    pub(crate) fn pd_call(&mut self, op: OpId, request: PdRequest) {
        self.pd_send(Purpose::OpCall(op), request);
    }

    /// Parks `op` until it has a timestamp (see [`PdState::take_timestamp`]).
    pub(crate) fn request_timestamp(&mut self, op: OpId) {
        if !self.pd.tso_waiters.contains(&op) {
            self.pd.tso_waiters.push(op);
        }
    }

    /// Sends one TSO request for every operation waiting, unless one is already in flight
    /// (waiters arriving meanwhile go with the next one).
    pub(crate) fn flush_tso(&mut self) {
        if self.pd.tso_waiters.is_empty() || self.pd.tso_inflight.is_some() {
            return;
        }
        let max = self.config.tso_max_batch.max(1) as usize;
        let take = self.pd.tso_waiters.len().min(max);
        let waiters: Vec<OpId> = self.pd.tso_waiters.drain(..take).collect();
        let count = u32::try_from(waiters.len()).unwrap_or(u32::MAX);
        let request = PdRequest::Tso(pdpb::TsoRequest {
            count,
            ..Default::default()
        });
        // The in-flight marker is set before sending so that re-entrant flushes do nothing.
        self.pd.tso_inflight = Some((RequestId(0), count, waiters));
        self.pd_send(Purpose::Tso, request);
    }

    fn pd_send(&mut self, purpose: Purpose, request: PdRequest) {
        let backoff = Backoffer::new(PD_MAX_BACKOFF_MS);
        let pending = Pending {
            purpose,
            request,
            backoff,
        };
        self.pd_dispatch(pending);
    }

    fn pd_dispatch(&mut self, mut pending: Pending) {
        let Some(leader) = self.pd.leader.clone() else {
            let now = self.now;
            self.pd.queued.push((now, pending));
            self.discover();
            return;
        };
        pending.request.set_cluster_id(self.pd.cluster_id);
        let timeout = self.config.pd_timeout;
        let id = self.transmit(
            Owner::Pd,
            std::sync::Arc::from(leader),
            Request::Pd(Box::new(pending.request.clone())),
            timeout,
        );
        if pending.purpose == Purpose::Tso
            && let Some((slot, _, _)) = &mut self.pd.tso_inflight
        {
            *slot = id;
        }
        self.pd.inflight.insert(id, pending);
    }

    /// Starts member discovery if it is not running: GetMembers to the next endpoint.
    fn discover(&mut self) {
        if self.pd.discovery.is_some() || self.pd.retry_at.is_some_and(|at| at > self.now) {
            return;
        }
        self.pd.retry_at = None;
        let index = self.pd.next_endpoint % self.pd.endpoints.len().max(1);
        let Some(endpoint) = self.pd.endpoints.get(index).cloned() else {
            return;
        };
        let timeout = self.config.pd_timeout;
        let id = self.transmit(
            Owner::Pd,
            std::sync::Arc::from(endpoint),
            Request::Pd(Box::new(PdRequest::GetMembers(
                pdpb::GetMembersRequest::default(),
            ))),
            timeout,
        );
        self.pd.discovery = Some(id);
    }

    pub(crate) fn on_pd_reply(&mut self, id: RequestId, reply: Result<Response, RpcError>) {
        if self.pd.discovery == Some(id) {
            self.pd.discovery = None;
            self.on_members(reply);
            return;
        }
        let Some(pending) = self.pd.inflight.remove(&id) else {
            return;
        };
        let response = match reply {
            Ok(Response::Pd(response)) => *response,
            Ok(Response::Store(_) | Response::Health(_)) => {
                let err = Error::UnexpectedResponse("non-PD response to a PD request".into());
                self.pd_give_up(pending, err);
                return;
            }
            Err(err) => {
                // The leader may have moved or died: rediscover, then retry after a backoff.
                self.pd.leader = None;
                self.pd_retry(pending, Error::Rpc(err));
                return;
            }
        };
        if let Purpose::OpCall(op) = pending.purpose {
            // The operation reads the header itself (a region without an operator is an
            // answer, not a failure).
            self.pd.op_results.insert(op, Ok(response));
            self.wake(op);
            return;
        }
        if let Some(err) = header_error(&response) {
            self.pd_retry(pending, err);
            return;
        }
        match (pending.purpose.clone(), response) {
            (Purpose::Tso, PdResponse::Tso(tso)) => self.on_tso(tso),
            (Purpose::Region { key, reverse }, PdResponse::GetRegion(r))
            | (Purpose::Region { key, reverse }, PdResponse::GetPrevRegion(r)) => {
                self.on_region(pending, key, reverse, r);
            }
            (Purpose::Region { key, reverse }, PdResponse::BatchScanRegions(r)) => {
                let regions = r
                    .regions
                    .into_iter()
                    .map(|region| pdpb::GetRegionResponse {
                        region: region.region,
                        leader: region.leader,
                        down_peers: region.down_peers,
                        ..Default::default()
                    })
                    .collect();
                self.on_regions(pending, key, reverse, regions);
            }
            (Purpose::Store(store_id), PdResponse::GetStore(r)) => {
                self.on_store(pending, store_id, r);
            }
            (Purpose::Keyspace, PdResponse::LoadKeyspace(r)) => self.on_keyspace(r),
            (Purpose::StoreList, PdResponse::GetAllStores(r)) => self.on_store_list(r),
            (_, other) => {
                let err = Error::UnexpectedResponse(format!("PD answered {other:?}"));
                self.pd_give_up(pending, err);
            }
        }
    }

    fn on_members(&mut self, reply: Result<Response, RpcError>) {
        let outcome = match reply {
            Ok(Response::Pd(response)) if matches!(*response, PdResponse::GetMembers(_)) => {
                let PdResponse::GetMembers(members) = *response else {
                    return;
                };
                let cluster_id = members.header.as_ref().map_or(0, |h| h.cluster_id);
                let leader = members
                    .leader
                    .as_ref()
                    .and_then(|leader| leader.client_urls.first())
                    .map(|url| address_of(url));
                match leader {
                    Some(leader) if cluster_id != 0 => Ok((cluster_id, leader)),
                    _ => Err(Error::Pd {
                        kind: "NO_LEADER".to_owned(),
                        message: "PD reported no leader or no cluster id".to_owned(),
                    }),
                }
            }
            Ok(other) => Err(Error::UnexpectedResponse(format!("{other:?}"))),
            Err(err) => Err(Error::Rpc(err)),
        };
        match outcome {
            Ok((cluster_id, leader)) => {
                self.pd.cluster_id = cluster_id;
                self.pd.leader = Some(leader);
                self.schedule_store_refresh();
                self.pd.discovery_backoff = None;
                let queued = std::mem::take(&mut self.pd.queued);
                let now = self.now;
                for (due, pending) in queued {
                    if due <= now {
                        self.pd_dispatch(pending);
                    } else {
                        self.pd.queued.push((due, pending));
                    }
                }
            }
            Err(err) => {
                self.pd.next_endpoint = self.pd.next_endpoint.wrapping_add(1);
                let backoff = self
                    .pd
                    .discovery_backoff
                    .get_or_insert_with(|| Backoffer::new(PD_MAX_BACKOFF_MS));
                match backoff.next_sleep(BackoffKind::PdRpc, &mut self.rng, &err) {
                    Ok(sleep) => {
                        let at = self.now + sleep;
                        self.pd.retry_at = Some(at);
                        self.schedule_pd_timer(at);
                    }
                    Err(_) => {
                        // Discovery keeps failing: everything waiting on PD fails, and the
                        // next request starts discovery afresh.
                        self.pd.discovery_backoff = None;
                        let queued = std::mem::take(&mut self.pd.queued);
                        for (_, pending) in queued {
                            self.pd_give_up(pending, err.clone());
                        }
                    }
                }
            }
        }
    }

    fn pd_retry(&mut self, mut pending: Pending, err: Error) {
        match pending
            .backoff
            .next_sleep(BackoffKind::PdRpc, &mut self.rng, &err)
        {
            Ok(sleep) => {
                let at = self.now + sleep;
                self.pd.queued.push((at, pending));
                self.schedule_pd_timer(at);
            }
            Err(_) => self.pd_give_up(pending, err),
        }
    }

    pub(crate) fn on_pd_timer(&mut self) {
        if self.pd.retry_at.is_some_and(|at| at <= self.now) {
            self.pd.retry_at = None;
        }
        if self.pd.next_store_refresh.is_some_and(|at| at <= self.now)
            && !self.pd.store_refresh_inflight
            && self.pd.leader.is_some()
        {
            self.pd.next_store_refresh = None;
            self.pd.store_refresh_inflight = true;
            self.pd_send(
                Purpose::StoreList,
                PdRequest::GetAllStores(pdpb::GetAllStoresRequest::default()),
            );
        }
        if self.pd.leader.is_none() {
            if !self.pd.queued.is_empty() {
                self.discover();
            }
            return;
        }
        let queued = std::mem::take(&mut self.pd.queued);
        let now = self.now;
        for (due, pending) in queued {
            if due <= now {
                self.pd_dispatch(pending);
            } else {
                self.pd.queued.push((due, pending));
            }
        }
    }

    /// Fails every operation waiting on `pending` with `err`.
    fn pd_give_up(&mut self, pending: Pending, err: Error) {
        let waiters = match pending.purpose {
            Purpose::Region { key, reverse } => self
                .pd
                .region_waiters
                .remove(&(key, reverse))
                .unwrap_or_default(),
            Purpose::Store(store_id) => {
                self.pd.store_lookups.remove(&store_id);
                self.pd.store_waiters.remove(&store_id).unwrap_or_default()
            }
            Purpose::Keyspace => {
                self.finish_keyspace(KeyspaceState::Failed(err));
                return;
            }
            Purpose::OpCall(op) => {
                self.pd.op_results.insert(op, Err(err));
                self.wake(op);
                return;
            }
            Purpose::StoreList => {
                // Nobody waits: the next refresh tries again.
                self.pd.store_refresh_inflight = false;
                self.schedule_store_refresh();
                return;
            }
            Purpose::Tso => {
                let waiters = self
                    .pd
                    .tso_inflight
                    .take()
                    .map(|(_, _, w)| w)
                    .unwrap_or_default();
                for op in &waiters {
                    self.pd.timestamps.insert(*op, Err(err.clone()));
                    self.wake(*op);
                }
                return;
            }
        };
        for op in waiters {
            self.pd.lookup_errors.insert(op, err.clone());
            self.wake(op);
        }
    }

    fn on_tso(&mut self, tso: pdpb::TsoResponse) {
        let (asked, waiters) = self
            .pd
            .tso_inflight
            .take()
            .map(|(_, count, w)| (count, w))
            .unwrap_or_default();
        let count = u64::from(asked);
        let result = match tso.timestamp {
            Some(ts) if tso.count == asked && ts.physical >= 0 && ts.logical >= 0 => {
                // PD returns the last timestamp of the batch; hand them out in order.
                let last = ((ts.physical as u64) << 18) | (ts.logical as u64);
                last.checked_sub(count.saturating_sub(1))
                    .ok_or_else(|| Error::UnexpectedResponse("TSO underflow".into()))
                    .map(|first| (first, last))
            }
            _ => Err(Error::UnexpectedResponse(format!(
                "TSO answered count {} for {count} waiters",
                tso.count
            ))),
        };
        if let Ok((_, last)) = &result {
            let now = self.now;
            if self.pd.last_ts.is_none_or(|(seen, _)| seen < *last) {
                self.pd.last_ts = Some((*last, now));
            }
        }
        for (i, op) in waiters.into_iter().enumerate() {
            let value = result
                .clone()
                .map(|(first, _)| first + u64::try_from(i).unwrap_or(0));
            self.pd.timestamps.insert(op, value);
            self.wake(op);
        }
        // Anyone who asked while this request was in flight goes now.
        self.flush_tso();
    }

    /// Takes a batch of regions from BatchScanRegions: inserts them all and wakes the waiters
    /// of the first key. An answer whose first region does not hold that key (empty, or a
    /// hole while a split is reported) is retried like a missing region, after a backoff.
    fn on_regions(
        &mut self,
        pending: Pending,
        key: Vec<u8>,
        reverse: bool,
        responses: Vec<pdpb::GetRegionResponse>,
    ) {
        let mut responses = responses.into_iter();
        let Some(first) = responses
            .next()
            .filter(|first| first.region.as_ref().is_some_and(|r| contains(r, &key)))
        else {
            self.on_region(pending, key, reverse, pdpb::GetRegionResponse::default());
            return;
        };
        let now = self.now;
        for response in responses {
            // A stale or empty extra region is just not cached; the first decides.
            let _ = self.cache_region(response, now);
        }
        self.on_region(pending, key, reverse, first);
    }

    fn on_region(
        &mut self,
        pending: Pending,
        key: Vec<u8>,
        reverse: bool,
        response: pdpb::GetRegionResponse,
    ) {
        if response.region.is_none() {
            // PD knows no region here yet (e.g. during a split); try again after a backoff.
            let err = Error::RegionUnavailable(format!(
                "PD has no region for key {:?}",
                String::from_utf8_lossy(&key)
            ));
            self.pd_retry(pending, err);
            return;
        }
        let now = self.now;
        if let Err(err) = self.cache_region(response, now) {
            // A stale answer (a lagging PD) or a region without peers: ask again later.
            self.pd_retry(pending, Error::RegionUnavailable(err.to_string()));
            return;
        }
        for op in self
            .pd
            .region_waiters
            .remove(&(key, reverse))
            .unwrap_or_default()
        {
            self.wake(op);
        }
    }

    /// Caches the region of a PD answer without the peers PD reports down, as client-go's
    /// `newRegion` does: requests never go to them, and a region with down peers expires at
    /// its TTL even while in use, so it is seen again once they recover.
    ///
    /// Errors when the answer has no region, no peer is left, or the region is stale.
    pub(crate) fn cache_region(
        &mut self,
        response: pdpb::GetRegionResponse,
        now: Time,
    ) -> Result<crate::region::RegionRef, crate::region::InsertError> {
        let Some(mut region) = response.region else {
            return Err(crate::region::InsertError::NoPeers(0));
        };
        let down: Vec<u64> = response
            .down_peers
            .iter()
            .filter_map(|stats| stats.peer.as_ref().map(|peer| peer.id))
            .collect();
        let mut leader = response.leader;
        if !down.is_empty() {
            region.peers.retain(|peer| !down.contains(&peer.id));
            if leader.is_some_and(|leader| down.contains(&leader.id)) {
                leader = None;
            }
        }
        let cached = self
            .regions
            .insert(region, leader.as_ref(), now, &mut self.rng)?;
        if !down.is_empty() {
            self.regions.expire_after_ttl(cached.ver_id());
        }
        Ok(cached)
    }

    fn on_store(&mut self, pending: Pending, store_id: u64, response: pdpb::GetStoreResponse) {
        match &response.store {
            Some(store) => {
                if let Err(err) = self.regions.stores_mut().on_store_meta(store) {
                    // A live store without an address: PD is inconsistent; ask again later.
                    self.pd_retry(pending, Error::RegionUnavailable(err.to_string()));
                    return;
                }
            }
            None => self.regions.stores_mut().on_store_not_found(store_id),
        }
        // The waiters route again: to this store now that its address is known, or, when it
        // is gone (a tombstone in the table now), to another peer of their region.
        self.pd.store_lookups.remove(&store_id);
        for op in self.pd.store_waiters.remove(&store_id).unwrap_or_default() {
            self.wake(op);
        }
    }

    /// Arms the next store list refresh, unless one is armed or refreshing is off.
    fn schedule_store_refresh(&mut self) {
        let interval = self.config.store_refresh_interval;
        if interval.is_zero() || self.pd.next_store_refresh.is_some() {
            return;
        }
        let at = self.now + interval;
        self.pd.next_store_refresh = Some(at);
        self.schedule_pd_timer(at);
    }

    /// Applies PD's full store list (client-go's periodic store refresh): new addresses and
    /// labels take effect, stores PD no longer lists or lists as tombstones are dropped, and
    /// stores marked for a re-check are resolved again.
    fn on_store_list(&mut self, response: pdpb::GetAllStoresResponse) {
        self.pd.store_refresh_inflight = false;
        let listed: std::collections::BTreeSet<u64> =
            response.stores.iter().map(|store| store.id).collect();
        let stores = self.regions.stores_mut();
        for store in &response.stores {
            // A live store without an address is a PD inconsistency; keep what we had.
            let _ = stores.on_store_meta(store);
        }
        for id in stores.ids() {
            if !listed.contains(&id) {
                stores.on_store_not_found(id);
            }
        }
        self.schedule_store_refresh();
    }
}
