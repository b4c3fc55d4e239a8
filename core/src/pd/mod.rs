//! PD from the client's side: member discovery with failover, the cluster id, region and
//! store lookups, the store list refresh, the keyspace, TSO batching, and the PD calls
//! operations make themselves.
//!
//! ```text
//!  Discovering ──GetMembers names a leader──► Ready{leader, cluster_id, member URLs}
//!    │  ▲   (asks each known URL in turn,          │  ▲        │
//!    └──┘    backs off after a whole round)        │  └────────┘ periodic GetMembers:
//!       ▲                                          │             the leader may move
//!       └── a request to the leader fails ─────────┘
//!           (transport error, or PD's "not leader" status from a follower)
//! ```
//!
//! Discovery and the member list follow the PD client's service discovery (`members.rs`).
//! Requests made while no leader is known are queued and sent once discovery succeeds. Each
//! PD request is retried with client-go's `pdRPC` backoff up to a budget; when it runs out,
//! every call waiting on it fails with the last error. A request that failed at one leader
//! is sent again as soon as another leader is known, without waiting out its backoff, so
//! service resumes as soon as an election ends (the PD client retries its TSO requests on a
//! leader change at once, too). Operations wait on PD through the
//! [`Waits`] list (keyed by region, store, keyspace or timestamp, so concurrent waits for
//! the same thing share one PD call) or, for calls of their own, by the call's id; either way
//! the answer reaches them through the outbox, addressed by that id.

mod keyspace;
mod lookup;
mod members;
mod tso;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tikv_proto::pdpb;
use tikv_proto::rpc::RpcError;

use crate::backoff::{BackoffKind, Backoffer};
use crate::config::Config;
use crate::error::{Error, PdErrorKind};
use crate::oracle::Timestamp;
use crate::outbox::{Outbox, Owner, Reply, RequestId, TimerKey};
use crate::rand::Rng;
use crate::region::RegionCache;
use crate::rpc::{PdRequest, PdResponse, Request, Response};
use crate::time::Time;
use crate::wait::{Waiter, Waits};

use keyspace::KeyspaceState;
pub(crate) use keyspace::Readiness;
pub(crate) use lookup::cache_region;
use members::{MemberBackoff, MemberCheck};

/// Total backoff one PD request may spend before its waiters fail (client-go's TSO and
/// region-lookup budgets are of this order).
const PD_MAX_BACKOFF_MS: u64 = 20_000;

/// What the PD service needs from the rest of the machine for one input.
pub(crate) struct PdCx<'a> {
    /// Requests, timers and answers.
    pub(crate) out: &'a mut Outbox,
    /// Parked operations.
    pub(crate) waits: &'a mut Waits,
    /// Backoff jitter.
    pub(crate) rng: &'a mut Rng,
    /// Where looked-up regions and stores go.
    pub(crate) cache: &'a mut RegionCache,
}

/// What a PD request is for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Purpose {
    Region {
        key: bytes::Bytes,
        reverse: bool,
    },
    Store(u64),
    Tso,
    Keyspace,
    /// The periodic store list refresh (nobody waits on it).
    StoreList,
    /// A call an operation makes itself; the answer, header errors included, goes back to
    /// it under the call's id.
    Call(Waiter),
}

#[derive(Debug)]
struct Pending {
    purpose: Purpose,
    request: PdRequest,
    backoff: Backoffer,
    /// The leader it was last sent to.
    sent_to: Option<Arc<str>>,
    /// The leader it last failed at (transport error or a refusal): it goes again as soon as
    /// another leader is known.
    failed_at: Option<Arc<str>>,
}

/// The PD service's settings, from [`Config`].
#[derive(Debug, Clone)]
struct Settings {
    timeout: Duration,
    tso_max_batch: u32,
    store_refresh_interval: Duration,
    member_refresh_interval: Duration,
    keyspace_name: String,
}

/// PD-side state of the client.
#[derive(Debug)]
pub(crate) struct PdService {
    settings: Settings,
    /// The URLs (`host:port`) discovery asks: the configured endpoints until PD first
    /// answers, then the members' client URLs.
    endpoints: Vec<String>,
    next_endpoint: usize,
    /// URLs that failed in the current discovery round.
    round_tried: usize,
    leader: Option<Arc<str>>,
    cluster_id: u64,
    keyspace: KeyspaceState,
    /// The GetMembers call in flight, and whether it is discovery or the periodic check.
    member_check: Option<(RequestId, MemberCheck)>,
    discovery_backoff: Option<MemberBackoff>,
    retry_at: Option<Time>,
    /// When the member list is next asked for.
    next_member_refresh: Option<Time>,
    /// Requests waiting for a leader or for their backoff to pass.
    queued: Vec<(Time, Pending)>,
    inflight: BTreeMap<RequestId, Pending>,
    /// Stores with a PD lookup out.
    store_lookups: BTreeSet<u64>,
    /// The TSO request in flight: the count asked for and who waits (cancelled operations
    /// are skipped when the answer comes; their timestamps go unused).
    tso_inflight: Option<(u32, smallvec::SmallVec<[Waiter; 2]>)>,
    /// The newest timestamp seen and when it arrived, for low-resolution reads.
    last_ts: Option<(Timestamp, Time)>,
    /// When the store list is next refreshed; `None` until PD is first reached (or when
    /// refreshing is off).
    next_store_refresh: Option<Time>,
    /// A store list refresh is out.
    store_refresh_inflight: bool,
}

/// `http://host:port` → `host:port`.
fn address_of(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned()
}

/// The error a PD response carries in its header, if any.
pub(crate) fn header_error(response: &PdResponse) -> Option<Error> {
    pd_error(response.header())
}

/// The error a PD response header carries, if any.
pub(crate) fn pd_error(header: Option<&pdpb::ResponseHeader>) -> Option<Error> {
    let error = header?.error.as_ref()?;
    let kind = PdErrorKind::from_proto(error.r#type)?;
    Some(Error::Pd {
        kind,
        message: error.message.clone(),
    })
}

impl PdService {
    /// A service for the PD cluster at `endpoints` (`host:port`), configured by `config`.
    pub(crate) fn new(endpoints: Vec<String>, config: &Config) -> Self {
        let needs_keyspace = config.api_version == crate::config::ApiVersion::V2;
        Self {
            settings: Settings {
                timeout: config.pd_timeout,
                tso_max_batch: config.tso_max_batch.max(1),
                store_refresh_interval: config.store_refresh_interval,
                member_refresh_interval: config.pd_member_refresh_interval,
                keyspace_name: config
                    .keyspace
                    .clone()
                    .unwrap_or_else(|| keyspace::DEFAULT_KEYSPACE.to_owned()),
            },
            endpoints,
            next_endpoint: 0,
            round_tried: 0,
            leader: None,
            cluster_id: 0,
            keyspace: if needs_keyspace {
                KeyspaceState::Unloaded
            } else {
                KeyspaceState::NotNeeded
            },
            member_check: None,
            discovery_backoff: None,
            retry_at: None,
            next_member_refresh: None,
            queued: Vec::new(),
            inflight: BTreeMap::new(),
            store_lookups: BTreeSet::new(),
            tso_inflight: None,
            last_ts: None,
            next_store_refresh: None,
            store_refresh_inflight: false,
        }
    }

    /// The cluster id PD reported (0 before discovery).
    pub(crate) fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The leader's address (if known) and the URLs discovery asks (tests).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn view(&self) -> (Option<String>, Vec<String>) {
        (
            self.leader.as_ref().map(|leader| leader.to_string()),
            self.endpoints.clone(),
        )
    }

    /// Sends `request` to PD for `waiter` (with discovery, failover and PD's retry budget
    /// for transport failures); the answer comes back as [`Reply::Pd`] under the waiter's
    /// call id, header errors left for the operation to read.
    pub(crate) fn call(&mut self, cx: &mut PdCx<'_>, waiter: Waiter, request: PdRequest) {
        self.send(cx, Purpose::Call(waiter), request);
    }

    /// Takes the answer (or transport failure) to PD request `id`.
    pub(crate) fn on_reply(
        &mut self,
        cx: &mut PdCx<'_>,
        id: RequestId,
        reply: Result<Response, RpcError>,
    ) {
        if let Some((check_id, check)) = self.member_check {
            if check_id == id {
                self.member_check = None;
                self.on_members(cx, check, reply);
                return;
            }
        }
        let Some(mut pending) = self.inflight.remove(&id) else {
            return;
        };
        let response = match reply {
            Ok(Response::Pd(response)) => *response,
            Ok(Response::Store(_) | Response::Health(_)) => {
                let err = Error::UnexpectedResponse("non-PD response to a PD request".into());
                self.give_up(cx, pending, err);
                return;
            }
            Err(err) => {
                // The leader may have moved (a follower refuses with "not leader") or died:
                // rediscover, then retry after a backoff, or at once at a new leader.
                if let Some(sent_to) = pending.sent_to.take() {
                    self.lose_leader(&sent_to);
                    pending.failed_at = Some(sent_to);
                }
                self.retry(cx, pending, Error::Rpc(err));
                return;
            }
        };
        if let Purpose::Call(waiter) = pending.purpose {
            // The operation reads the header itself (a region without an operator is an
            // answer, not a failure).
            cx.out
                .deliver(waiter.op, waiter.call, Reply::Pd(Ok(Box::new(response))));
            return;
        }
        if let Some(err) = header_error(&response) {
            self.retry(cx, pending, err);
            return;
        }
        match (pending.purpose.clone(), response) {
            (Purpose::Tso, PdResponse::Tso(tso)) => self.on_tso(cx, tso),
            (Purpose::Region { key, reverse }, PdResponse::GetRegion(r))
            | (Purpose::Region { key, reverse }, PdResponse::GetPrevRegion(r)) => {
                self.on_region(cx, pending, key, reverse, r);
            }
            (Purpose::Region { key, reverse }, PdResponse::BatchScanRegions(r)) => {
                self.on_regions(cx, pending, key, reverse, r);
            }
            (Purpose::Store(store_id), PdResponse::GetStore(r)) => {
                self.on_store(cx, pending, store_id, r);
            }
            (Purpose::Keyspace, PdResponse::LoadKeyspace(r)) => self.on_keyspace(cx, r),
            (Purpose::StoreList, PdResponse::GetAllStores(r)) => self.on_store_list(cx, r),
            (_, other) => {
                let err = Error::UnexpectedResponse(format!("PD answered {other:?}"));
                self.give_up(cx, pending, err);
            }
        }
    }

    /// Runs what the PD timer was armed for: retries whose backoff passed, rediscovery, the
    /// member check, the store list refresh.
    pub(crate) fn on_timer(&mut self, cx: &mut PdCx<'_>) {
        let now = cx.out.now();
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
        }
        self.maybe_refresh_members(cx);
        if self.next_store_refresh.is_some_and(|at| at <= now)
            && !self.store_refresh_inflight
            && self.leader.is_some()
        {
            self.next_store_refresh = None;
            self.store_refresh_inflight = true;
            self.send(
                cx,
                Purpose::StoreList,
                PdRequest::GetAllStores(pdpb::GetAllStoresRequest::default()),
            );
        }
        if self.leader.is_none() {
            if !self.queued.is_empty() {
                self.discover(cx);
            }
            return;
        }
        self.dispatch_due(cx);
    }

    fn send(&mut self, cx: &mut PdCx<'_>, purpose: Purpose, request: PdRequest) {
        let pending = Pending {
            purpose,
            request,
            backoff: Backoffer::new(PD_MAX_BACKOFF_MS),
            sent_to: None,
            failed_at: None,
        };
        self.dispatch(cx, pending);
    }

    fn dispatch(&mut self, cx: &mut PdCx<'_>, mut pending: Pending) {
        let Some(leader) = self.leader.clone() else {
            let now = cx.out.now();
            self.queued.push((now, pending));
            self.discover(cx);
            return;
        };
        pending.request.set_cluster_id(self.cluster_id);
        let id = cx.out.transmit(
            Owner::Pd,
            Arc::clone(&leader),
            Request::Pd(Box::new(pending.request.clone())),
            self.settings.timeout,
        );
        pending.sent_to = Some(leader);
        self.inflight.insert(id, pending);
    }

    /// Sends every queued request whose backoff has passed, and those that failed at another
    /// leader than the one known now.
    fn dispatch_due(&mut self, cx: &mut PdCx<'_>) {
        let queued = std::mem::take(&mut self.queued);
        let now = cx.out.now();
        for (due, pending) in queued {
            if due <= now || self.leads_elsewhere(&pending) {
                self.dispatch(cx, pending);
            } else {
                self.queued.push((due, pending));
            }
        }
    }

    /// Whether a leader is known and it is not the one `pending` last failed at.
    fn leads_elsewhere(&self, pending: &Pending) -> bool {
        match (&self.leader, &pending.failed_at) {
            (Some(leader), Some(failed_at)) => leader != failed_at,
            _ => false,
        }
    }

    /// Queues `pending` again after its `pdRPC` backoff; without a known leader, discovery
    /// starts now (the PD client checks the members as soon as a call fails), so the
    /// request can go to a new leader before its backoff is over.
    fn retry(&mut self, cx: &mut PdCx<'_>, mut pending: Pending, err: Error) {
        match pending.backoff.next_sleep(BackoffKind::PdRpc, cx.rng, &err) {
            Ok(_) if self.leads_elsewhere(&pending) => {
                // Another leader is known already (the member check found it while this
                // request was out): go there now; the sleep still counts against the budget.
                self.dispatch(cx, pending);
            }
            Ok(sleep) => {
                let at = cx.out.now() + sleep;
                self.queued.push((at, pending));
                cx.out.set_timer(TimerKey::Pd, at);
                if self.leader.is_none() {
                    self.discover(cx);
                }
            }
            Err(_) => self.give_up(cx, pending, err),
        }
    }

    /// Fails every call waiting on `pending` with `err`.
    fn give_up(&mut self, cx: &mut PdCx<'_>, pending: Pending, err: Error) {
        use crate::wait::WaitKey;
        let key = match pending.purpose {
            Purpose::Region { key, reverse } => WaitKey::Region { key, reverse },
            Purpose::Store(store_id) => {
                self.store_lookups.remove(&store_id);
                WaitKey::Store(store_id)
            }
            Purpose::Keyspace => {
                self.finish_keyspace(cx, KeyspaceState::Failed(err));
                return;
            }
            Purpose::Call(waiter) => {
                cx.out.deliver(waiter.op, waiter.call, Reply::Pd(Err(err)));
                return;
            }
            Purpose::StoreList => {
                // Nobody waits: the next refresh tries again.
                self.store_refresh_inflight = false;
                self.schedule_store_refresh(cx);
                return;
            }
            Purpose::Tso => {
                let waiters = self.tso_inflight.take().map(|(_, w)| w).unwrap_or_default();
                for waiter in waiters {
                    cx.out
                        .deliver(waiter.op, waiter.call, Reply::Timestamp(Err(err.clone())));
                }
                return;
            }
        };
        for waiter in cx.waits.take(&key) {
            cx.out
                .deliver(waiter.op, waiter.call, Reply::Ready(Err(err.clone())));
        }
    }

    /// Appends PD work still pending: discovery, requests in flight or queued, store
    /// lookups, the TSO request, the store list refresh (see `Core::leftovers`).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn leftovers(&self, left: &mut Vec<String>) {
        if let Some((id, check)) = self.member_check {
            left.push(format!("PD member check #{} ({check:?})", id.0));
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
        for store_id in &self.store_lookups {
            left.push(format!("store {store_id} lookup"));
        }
        if let Some((count, waiters)) = &self.tso_inflight {
            left.push(format!("TSO for {count} awaited by {waiters:?}"));
        }
        if self.store_refresh_inflight {
            left.push("store list refresh".to_owned());
        }
    }
}
