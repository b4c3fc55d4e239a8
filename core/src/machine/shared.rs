//! State every operation shares: configuration, PRNG, PD and TSO state, the region cache and
//! store table, in-flight requests, timers, and the output queues.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use tikv_proto::metapb;
use tikv_proto::rpc::RpcError;

use super::pd::PdState;
use super::{Event, OpId, RequestId};
use crate::config::Config;
use crate::error::Error;
use crate::rand::Rng;
use crate::region::{InvalidReason, RegionCache, RegionCacheConfig, RegionVerId};
use crate::rpc::{Request, Response, StoreRequest};
use crate::time::Time;

/// One request for the driver to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Transmit {
    /// Echo this in [`super::Core::handle_reply`].
    pub id: RequestId,
    /// Where to send it: `host:port` of a store or of the PD leader (shared: many requests go
    /// to the same few addresses).
    pub address: std::sync::Arc<str>,
    /// What to send.
    pub request: Request,
    /// How long the call may take; the machine also enforces this itself.
    pub timeout: Duration,
}

/// Why an operation is being driven.
#[derive(Debug)]
pub(crate) enum Wake {
    /// It was just created.
    Start,
    /// A reply to one of its requests arrived (or the request timed out).
    Reply(RequestId, Result<Response, RpcError>),
    /// One of its timers fired.
    Timer,
    /// Something it was parked on (a region lookup, a store lookup, a timestamp) completed.
    Resume,
}

/// A timer that fired, for the machine to dispatch.
#[derive(Debug)]
pub(crate) enum Expired {
    /// An operation's wake-up timer.
    Op(OpId),
    /// A request's deadline (its timeout given): the operation gets a deadline error for it.
    Request(OpId, RequestId, Duration),
}

/// Who waits for a request's reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// A user operation.
    Op(OpId),
    /// The PD machinery (lookups, TSO, discovery).
    Pd,
    /// A liveness probe of this store.
    Probe(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Op(OpId),
    Request(RequestId),
    Pd,
}

/// Where a request for a region goes, as the cache knows it now.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Route {
    /// The region (id, epoch, range, peers), shared with the cache.
    pub region: std::sync::Arc<metapb::Region>,
    /// The region's id and epoch, for reporting errors against this version.
    pub ver_id: RegionVerId,
    /// The peer the request goes to (the leader, as far as the cache knows).
    pub peer: metapb::Peer,
    /// The index of that peer among the region's peers.
    pub peer_index: usize,
    /// That peer's store address.
    pub address: std::sync::Arc<str>,
    /// Whether the cache knows that peer leads (else it is trying peers in turn).
    pub leader_known: bool,
    /// The store's failure epoch when routed; a send failure reports against it, so that
    /// many requests failing together move the epoch once.
    pub store_epoch: u32,
}

/// Result of asking for a route.
#[derive(Debug)]
pub(crate) enum Routing {
    /// Route known.
    Ready(Route),
    /// The operation was parked on a PD lookup and will be resumed.
    Parked,
    /// No usable peer now (every peer sits on a removed store); the region was dropped from
    /// the cache, so retry after a backoff, which reloads it.
    Unavailable(Error),
    /// The lookup failed for good.
    Failed(Error),
}

#[derive(Debug)]
struct InFlight {
    owner: Owner,
    deadline: Time,
    timeout: Duration,
}

/// The shared state.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) rng: Rng,
    pub(crate) now: Time,
    pub(crate) pd: PdState,
    pub(crate) regions: RegionCache,
    next_request: u64,
    inflight: BTreeMap<RequestId, InFlight>,
    timers: BTreeSet<(Time, TimerKey)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    wakeups: BTreeSet<OpId>,
    /// Stores with a liveness probe out.
    probing: BTreeSet<u64>,
    /// When the region cache is next swept of expired entries.
    next_cache_sweep: Time,
}

/// How often the region cache drops expired entries.
const CACHE_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

impl Shared {
    pub(crate) fn new(config: Config, pd_endpoints: Vec<String>, now: Time) -> Self {
        let rng = Rng::new(config.effective_rng_seed());
        let needs_keyspace = config.api_version == crate::config::ApiVersion::V2;
        Self {
            pd: PdState::new(pd_endpoints, needs_keyspace),
            regions: RegionCache::new(RegionCacheConfig {
                ttl: config.region_cache_ttl,
                ttl_jitter: config.region_cache_ttl_jitter,
            }),
            config,
            rng,
            now,
            next_request: 1,
            inflight: BTreeMap::new(),
            timers: BTreeSet::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            wakeups: BTreeSet::new(),
            probing: BTreeSet::new(),
            next_cache_sweep: now + CACHE_SWEEP_INTERVAL,
        }
    }

    /// Moves the clock forward (never backward: inputs must arrive in time order).
    pub(crate) fn advance(&mut self, now: Time) {
        if now > self.now {
            self.now = now;
        }
        // Drop expired and invalidated regions now and then, so the cache holds what is in
        // use rather than everything ever seen.
        if self.now >= self.next_cache_sweep {
            self.regions.remove_expired(self.now);
            self.next_cache_sweep = self.now + CACHE_SWEEP_INTERVAL;
        }
    }

    pub(crate) fn next_request_id(&mut self) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        id
    }

    /// Queues a request and remembers who waits for it.
    pub(crate) fn transmit(
        &mut self,
        owner: Owner,
        address: std::sync::Arc<str>,
        request: Request,
        timeout: Duration,
    ) -> RequestId {
        let id = self.next_request_id();
        let deadline = self.now + timeout;
        self.inflight.insert(
            id,
            InFlight {
                owner,
                deadline,
                timeout,
            },
        );
        self.timers.insert((deadline, TimerKey::Request(id)));
        self.transmits.push_back(Transmit {
            id,
            address,
            request,
            timeout,
        });
        id
    }

    /// Sends a store request for operation `op` along `route`, filling the context.
    pub(crate) fn send_store(
        &mut self,
        op: OpId,
        route: &Route,
        mut request: StoreRequest,
        timeout: Duration,
        is_retry: bool,
    ) -> RequestId {
        let api_version = self.config.api_version.to_proto();
        let cluster_id = self.pd.cluster_id();
        let keyspace_id = self.pd.keyspace_id();
        let context = request.context_mut();
        context.region_id = route.region.id;
        context.region_epoch = route.region.region_epoch;
        context.peer = Some(route.peer);
        context.api_version = api_version as i32;
        context.cluster_id = cluster_id;
        context.is_retry_request = is_retry;
        if let Some(keyspace_id) = keyspace_id {
            context.keyspace = Some(tikv_proto::kvrpcpb::context::Keyspace::KeyspaceId(
                keyspace_id,
            ));
        }
        self.transmit(
            Owner::Op(op),
            std::sync::Arc::clone(&route.address),
            Request::Store(Box::new(request)),
            timeout,
        )
    }

    /// Routes a reply to its owner; PD replies are handled here, operation replies are
    /// returned for the machine to deliver. Unknown ids (timed out, cancelled) are dropped.
    pub(crate) fn on_reply(
        &mut self,
        id: RequestId,
        reply: Result<Response, RpcError>,
    ) -> Option<(OpId, Result<Response, RpcError>)> {
        let inflight = self.inflight.remove(&id)?;
        self.timers
            .remove(&(inflight.deadline, TimerKey::Request(id)));
        // A reply that arrives after its deadline counts as the deadline passing: the timer
        // may simply not have fired yet. (Client-go's contexts behave the same way.)
        let reply = if self.now > inflight.deadline {
            Err(RpcError::DeadlineExceeded(inflight.timeout))
        } else {
            reply
        };
        match inflight.owner {
            Owner::Op(op) => Some((op, reply)),
            Owner::Pd => {
                self.on_pd_reply(id, reply);
                None
            }
            Owner::Probe(store_id) => {
                self.on_probe(store_id, reply);
                None
            }
        }
    }

    /// Asks store `store_id` whether it is alive (client-go's liveness check after a send
    /// failure), unless a probe is already out.
    fn probe_store(&mut self, store_id: u64) {
        if self.probing.contains(&store_id) {
            return;
        }
        let Some(address) = self.regions.stores().shared_address(store_id) else {
            return;
        };
        self.probing.insert(store_id);
        let timeout = self.config.store_liveness_timeout;
        self.transmit(
            Owner::Probe(store_id),
            address,
            Request::Health(Default::default()),
            timeout,
        );
    }

    fn on_probe(&mut self, store_id: u64, reply: Result<Response, RpcError>) {
        use tikv_proto::grpc::health::v1::health_check_response::ServingStatus;
        self.probing.remove(&store_id);
        let liveness = match reply {
            Ok(Response::Health(health)) if health.status == ServingStatus::Serving as i32 => {
                crate::region::Liveness::Reachable
            }
            // UNKNOWN / SERVICE_UNKNOWN: the store does not say; anything else: unreachable.
            Ok(Response::Health(health))
                if health.status == ServingStatus::Unknown as i32
                    || health.status == ServingStatus::ServiceUnknown as i32 =>
            {
                crate::region::Liveness::Unknown
            }
            _ => crate::region::Liveness::Unreachable,
        };
        let now = self.now;
        self.regions
            .stores_mut()
            .set_liveness(store_id, liveness, now);
    }

    /// Wakes operation `op` at `at` (or at once if that has passed).
    pub(crate) fn wake_at(&mut self, op: OpId, at: Time) {
        self.timers.insert((at, TimerKey::Op(op)));
    }

    pub(crate) fn schedule_pd_timer(&mut self, at: Time) {
        self.timers.insert((at, TimerKey::Pd));
    }

    /// Marks a parked operation ready to resume.
    pub(crate) fn wake(&mut self, op: OpId) {
        self.wakeups.insert(op);
    }

    pub(crate) fn take_wakeups(&mut self) -> Vec<OpId> {
        std::mem::take(&mut self.wakeups).into_iter().collect()
    }

    /// Removes and returns the timers due now; PD timers are handled here.
    pub(crate) fn take_due_timers(&mut self) -> Vec<Expired> {
        let mut expired = Vec::new();
        let mut pd_due = false;
        while let Some(&(at, key)) = self.timers.first() {
            if at > self.now {
                break;
            }
            self.timers.pop_first();
            match key {
                TimerKey::Op(op) => expired.push(Expired::Op(op)),
                TimerKey::Pd => pd_due = true,
                TimerKey::Request(id) => {
                    let Some(inflight) = self.inflight.remove(&id) else {
                        continue;
                    };
                    match inflight.owner {
                        Owner::Op(op) => expired.push(Expired::Request(op, id, inflight.timeout)),
                        Owner::Pd => {
                            self.on_pd_reply(id, Err(RpcError::DeadlineExceeded(inflight.timeout)))
                        }
                        Owner::Probe(store_id) => self
                            .on_probe(store_id, Err(RpcError::DeadlineExceeded(inflight.timeout))),
                    }
                }
            }
        }
        if pd_due {
            self.on_pd_timer();
        }
        expired
    }

    /// Drops what the machine keeps for a finished or cancelled operation.
    ///
    /// Cheap on purpose (it runs once per operation): requests the operation still had out
    /// and its timers are left to expire or be answered, and are then dropped because no
    /// operation claims them. Both are bounded by the request deadline.
    pub(crate) fn forget_op(&mut self, op: OpId) {
        self.wakeups.remove(&op);
        self.pd.forget_waiter(op);
    }

    pub(crate) fn finish(&mut self, op: OpId, result: Result<super::Output, Error>) {
        self.events.push_back(Event::Done(op, result));
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        if self.transmits.is_empty() {
            // Every operation that asked for a timestamp since the last TSO request is served
            // by this one: batching falls out of draining.
            self.flush_tso();
        }
        self.transmits.pop_front()
    }

    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub(crate) fn poll_timeout(&self) -> Option<Time> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// The region holding routing key `key`, from the cache or (parking `op`) from PD; with
    /// `last_key`, a miss loads the regions up to it in the same PD call.
    pub(crate) fn locate(
        &mut self,
        op: OpId,
        key: &[u8],
        last_key: Option<&[u8]>,
    ) -> Result<Option<crate::region::RegionRef>, Error> {
        if let Some(error) = self.pd.take_lookup_error(op) {
            return Err(error);
        }
        let now = self.now;
        match self.regions.locate_key(key, now) {
            Some(region) => Ok(Some(region)),
            None => {
                self.lookup_regions(op, key, false, last_key);
                Ok(None)
            }
        }
    }

    /// Where a request for the region containing `key` (or, with `reverse`, the region just
    /// before `key`) goes; parks `op` on a PD lookup when the cache cannot say.
    /// With `last_key` (the last key the operation still has to route), a miss loads the
    /// regions up to it in the same PD call.
    pub(crate) fn route(
        &mut self,
        op: OpId,
        key: &[u8],
        reverse: bool,
        last_key: Option<&[u8]>,
    ) -> Routing {
        if let Some(error) = self.pd.take_lookup_error(op) {
            return Routing::Failed(error);
        }
        let now = self.now;
        let located = if reverse {
            self.regions.locate_end_key(key, now)
        } else {
            self.regions.locate_key(key, now)
        };
        let Some(region) = located else {
            self.lookup_regions(op, key, reverse, last_key);
            return Routing::Parked;
        };
        let Some(region) = self.avoid_unreachable(region) else {
            self.lookup_region(op, key, reverse);
            return Routing::Parked;
        };
        let region = match self.avoid_removed_stores(region) {
            Ok(region) => region,
            Err(err) => return Routing::Unavailable(err),
        };
        let Some(peer) = region.work_peer().copied() else {
            // A region without peers cannot be served; ask PD again.
            self.regions
                .invalidate(region.ver_id(), InvalidReason::NoLeader);
            self.lookup_region(op, key, reverse);
            return Routing::Parked;
        };
        // One look at the store answers the epoch, the re-check mark and the address.
        let store = self.regions.stores().get(peer.store_id);
        let store_epoch = store.map_or(0, crate::region::Store::epoch);
        let needs_refresh = store.is_some_and(crate::region::Store::needs_refresh);
        let address = store.and_then(crate::region::Store::usable_address);
        if region
            .store_epoch(region.work_index())
            .is_some_and(|cached| cached != store_epoch)
        {
            // A request to this store failed since the region was cached (client-go's
            // "others failed on same store"): what the cache says about it is suspect.
            self.regions
                .invalidate(region.ver_id(), InvalidReason::Other);
            self.lookup_region(op, key, reverse);
            return Routing::Parked;
        }
        // A store marked for a re-check keeps its address in use while PD is asked again.
        if needs_refresh {
            self.refresh_store(peer.store_id);
        }
        match address {
            Some(address) => Routing::Ready(Route {
                region: region.shared_meta(),
                ver_id: region.ver_id(),
                peer,
                peer_index: region.work_index(),
                address,
                leader_known: region.leader().is_some(),
                store_epoch,
            }),
            None => {
                self.lookup_store(op, peer.store_id);
                Routing::Parked
            }
        }
    }

    /// Moves past peers on stores PD reports removed (tombstone, or unknown to PD), as
    /// client-go leaves such peers out of the regions it caches. Errors, dropping the region
    /// from the cache, when no peer is left.
    fn avoid_removed_stores(
        &mut self,
        mut region: crate::region::RegionRef,
    ) -> Result<crate::region::RegionRef, Error> {
        let removed = |shared: &Self, region: &crate::region::RegionRef| {
            region.work_peer().is_some_and(|peer| {
                shared
                    .regions
                    .stores()
                    .get(peer.store_id)
                    .is_some_and(|store| store.state() == crate::region::ResolveState::Tombstone)
            })
        };
        // Bounded: each pass moves to another peer or stops.
        for _ in 0..region.peers().len() {
            if !removed(self, &region) {
                return Ok(region);
            }
            let ver_id = region.ver_id();
            if !self
                .regions
                .switch_to_next_peer(ver_id, region.work_index())
            {
                break;
            }
            let now = self.now;
            match self.regions.get_by_id(ver_id.id, now) {
                Some(next) => region = next,
                None => break,
            }
        }
        if !removed(self, &region) {
            return Ok(region);
        }
        let ver_id = region.ver_id();
        self.regions
            .invalidate(ver_id, InvalidReason::StoreNotFound);
        // Ask PD about those stores again when the region comes back with them: a verdict of
        // "removed" is not kept against a region PD still places there.
        let stores: Vec<u64> = region.peers().iter().map(|peer| peer.store_id).collect();
        for store_id in stores {
            self.regions.stores_mut().forget(store_id);
        }
        Err(Error::RegionUnavailable(format!(
            "region {} has no available peers: its stores are removed",
            ver_id.id
        )))
    }

    /// When the peer the cache would use sits on a store that failed its liveness probe,
    /// moves on to the next peer (it answers NotLeader with the leader if it is not one).
    /// Returns the region to use; `None` when the region vanished from the cache meanwhile.
    fn avoid_unreachable(
        &mut self,
        region: crate::region::RegionRef,
    ) -> Option<crate::region::RegionRef> {
        let unreachable = |shared: &Self, region: &crate::region::RegionRef| {
            region.work_peer().is_some_and(|peer| {
                shared
                    .regions
                    .stores()
                    .get(peer.store_id)
                    .is_some_and(|store| store.liveness() == crate::region::Liveness::Unreachable)
            })
        };
        if !unreachable(self, &region) || region.peers().len() < 2 {
            return Some(region);
        }
        // Keep asking the skipped store, so a store that comes back is used again.
        if let Some(peer) = region.work_peer() {
            self.probe_store(peer.store_id);
        }
        let ver_id = region.ver_id();
        self.regions
            .switch_to_next_peer(ver_id, region.work_index());
        let now = self.now;
        self.regions.get_by_id(ver_id.id, now)
    }

    /// Applies what a region error taught about the cache (see `retry::RegionRetry`).
    pub(crate) fn apply_region_retry(&mut self, route: &Route, retry: &super::retry::RegionRetry) {
        use super::retry::RegionRetry;
        match retry {
            RegionRetry::UpdateLeader {
                leader_store_id,
                leader_peer_id,
            } => {
                let leader = metapb::Peer {
                    id: *leader_peer_id,
                    store_id: *leader_store_id,
                    ..Default::default()
                };
                // A leader outside the cached peers invalidates the region inside the cache.
                self.regions.update_leader(route.ver_id, &leader);
                // A peer names this store as the leader: it is up, whatever an older probe
                // said. Forget that verdict (a send failure will mark it again) and check.
                let now = self.now;
                let stores = self.regions.stores_mut();
                if stores
                    .get(*leader_store_id)
                    .is_some_and(|store| store.liveness() == crate::region::Liveness::Unreachable)
                {
                    stores.set_liveness(*leader_store_id, crate::region::Liveness::Unknown, now);
                    self.probe_store(*leader_store_id);
                }
            }
            RegionRetry::Relocate {
                current_regions,
                refresh_store,
                ..
            } => {
                if current_regions.is_empty() {
                    self.regions.invalidate(route.ver_id, InvalidReason::Other);
                } else {
                    let now = self.now;
                    self.regions.on_epoch_not_match(
                        route.ver_id,
                        current_regions,
                        route.peer.store_id,
                        now,
                        &mut self.rng,
                    );
                }
                if *refresh_store {
                    let epoch = self
                        .regions
                        .stores()
                        .get(route.peer.store_id)
                        .map_or(0, crate::region::Store::epoch);
                    self.regions
                        .stores_mut()
                        .mark_needs_refresh(route.peer.store_id, epoch);
                }
            }
            RegionRetry::NextPeer(_) => {
                // Keep the region; move on to the next peer. A region with one peer has
                // nowhere to go: reload it.
                // Only a region with a single peer is reloaded; otherwise the cursor stays
                // where another request already moved it.
                if !self
                    .regions
                    .switch_to_next_peer(route.ver_id, route.peer_index)
                    && route.region.peers.len() < 2
                {
                    self.regions
                        .invalidate(route.ver_id, InvalidReason::NoLeader);
                }
            }
            RegionRetry::Backoff(_) | RegionRetry::Fail(_) => {}
        }
    }

    /// After a transport failure towards `route`: move on to the next peer and have PD
    /// re-check the store.
    pub(crate) fn on_send_failure(&mut self, route: &Route) {
        // client-go's onSendFail for leader requests: try the next peer (it answers with the
        // leader if it is not one), and have PD re-check the store's address.
        let store_id = route.peer.store_id;
        self.regions
            .stores_mut()
            .mark_needs_refresh(store_id, route.store_epoch);
        self.probe_store(store_id);
        // A late report (another request already moved on, or the region was reloaded)
        // leaves the region alone; a single-peer region has nowhere else to go: reload it.
        if !self
            .regions
            .switch_to_next_peer(route.ver_id, route.peer_index)
            && route.region.peers.len() < 2
        {
            self.regions.invalidate(route.ver_id, InvalidReason::Other);
        }
    }
}
