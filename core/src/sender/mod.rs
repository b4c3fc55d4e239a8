//! The region request sender: where a request for a key goes, what a region error or a
//! failed send teaches the cache, and store liveness probes.
//!
//! [`route`] answers from the region cache, parking the operation on a PD lookup when the
//! cache cannot say; [`Dispatch`](dispatch::Dispatch) groups an operation's keys by region,
//! sends and retries; [`retry::classify`] is client-go's `onRegionError` as a pure decision,
//! and [`apply_region_retry`] applies what it taught.

pub(crate) mod dispatch;
pub(crate) mod retry;

use std::sync::Arc;
use std::time::Duration;

use tikv_proto::metapb;
use tikv_proto::rpc::RpcError;

use crate::error::Error;
use crate::op::Services;
use crate::outbox::{OpId, Owner, RequestId};
use crate::region::{InvalidReason, Liveness, RegionRef, RegionVerId, ResolveState, Store};
use crate::rpc::{Request, Response, StoreRequest};
use crate::wait::Waiter;

pub(crate) use retry::RegionRetry;

/// Where a request for a region goes, as the cache knows it now.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Route {
    /// The region (id, epoch, range, peers), shared with the cache.
    pub(crate) region: Arc<metapb::Region>,
    /// The region's id and epoch, for reporting errors against this version.
    pub(crate) ver_id: RegionVerId,
    /// The peer the request goes to (the leader, as far as the cache knows).
    pub(crate) peer: metapb::Peer,
    /// The index of that peer among the region's peers.
    pub(crate) peer_index: usize,
    /// That peer's store address.
    pub(crate) address: Arc<str>,
    /// Whether the cache knows that peer leads (else it is trying peers in turn).
    pub(crate) leader_known: bool,
    /// The store's failure epoch when routed; a send failure reports against it, so that
    /// many requests failing together move the epoch once.
    pub(crate) store_epoch: u32,
}

/// Result of asking for a route.
#[derive(Debug)]
pub(crate) enum Routing {
    /// Route known.
    Ready(Route),
    /// The operation waits on a PD lookup; the answer comes under this call id.
    Parked(RequestId),
    /// No usable peer now (every peer sits on a removed store); the region was dropped from
    /// the cache, so retry after a backoff, which reloads it.
    Unavailable(Error),
}

fn waiter(s: &mut Services, op: OpId) -> Waiter {
    Waiter {
        op,
        call: s.out.next_id(),
    }
}

fn park_on_region(
    s: &mut Services,
    op: OpId,
    key: &[u8],
    reverse: bool,
    last_key: Option<&[u8]>,
) -> Routing {
    Routing::Parked(lookup_region(s, op, key, reverse, last_key))
}

/// Parks `op` on a PD lookup of the region of `key`; returns the call id.
fn lookup_region(
    s: &mut Services,
    op: OpId,
    key: &[u8],
    reverse: bool,
    last_key: Option<&[u8]>,
) -> RequestId {
    let waiter = waiter(s, op);
    let (pd, mut cx) = s.pd();
    pd.lookup_region(&mut cx, waiter, key, reverse, last_key);
    waiter.call
}

/// The region holding routing key `key`, from the cache, or `Err` with the id of the PD
/// lookup `op` now waits on; with `last_key`, a miss loads the regions up to it in the same
/// PD call.
pub(crate) fn locate(
    s: &mut Services,
    op: OpId,
    key: &[u8],
    last_key: Option<&[u8]>,
) -> Result<RegionRef, RequestId> {
    let now = s.now();
    match s.cache.locate_key(key, now) {
        Some(region) => Ok(region),
        None => Err(lookup_region(s, op, key, false, last_key)),
    }
}

/// Sends a store request for operation `op` along `route`, filling the context.
pub(crate) fn send_store(
    s: &mut Services,
    op: OpId,
    route: &Route,
    mut request: Box<StoreRequest>,
    timeout: Duration,
    is_retry: bool,
) -> RequestId {
    let context = request.context_mut();
    context.region_id = route.region.id;
    context.region_epoch = route.region.region_epoch;
    context.peer = Some(route.peer);
    context.api_version = s.config.api_version.to_proto() as i32;
    context.cluster_id = s.pd.cluster_id();
    context.is_retry_request = is_retry;
    if let Some(keyspace_id) = s.pd.keyspace_id() {
        context.keyspace = Some(tikv_proto::kvrpcpb::context::Keyspace::KeyspaceId(
            keyspace_id,
        ));
    }
    s.out.transmit(
        Owner::Op(op),
        Arc::clone(&route.address),
        Request::Store(request),
        timeout,
    )
}

/// Where a request for the region containing `key` (or, with `reverse`, the region just
/// before `key`) goes; parks `op` on a PD lookup when the cache cannot say. With `last_key`
/// (the last key the operation still has to route), a miss loads the regions up to it in
/// the same PD call.
pub(crate) fn route(
    s: &mut Services,
    op: OpId,
    key: &[u8],
    reverse: bool,
    last_key: Option<&[u8]>,
) -> Routing {
    let now = s.now();
    let located = if reverse {
        s.cache.locate_end_key(key, now)
    } else {
        s.cache.locate_key(key, now)
    };
    let Some(region) = located else {
        return park_on_region(s, op, key, reverse, last_key);
    };
    let Some(region) = avoid_unreachable(s, region) else {
        return park_on_region(s, op, key, reverse, None);
    };
    let region = match avoid_removed_stores(s, region) {
        Ok(region) => region,
        Err(err) => return Routing::Unavailable(err),
    };
    let Some(peer) = region.work_peer().copied() else {
        // A region without peers cannot be served; ask PD again.
        s.cache.invalidate(region.ver_id(), InvalidReason::NoLeader);
        return park_on_region(s, op, key, reverse, None);
    };
    // One look at the store answers the epoch, the re-check mark and the address.
    let store = s.cache.stores().get(peer.store_id);
    let store_epoch = store.map_or(0, Store::epoch);
    let needs_refresh = store.is_some_and(Store::needs_refresh);
    let address = store.and_then(Store::usable_address);
    if region
        .store_epoch(region.work_index())
        .is_some_and(|cached| cached != store_epoch)
    {
        // A request to this store failed since the region was cached (client-go's
        // "others failed on same store"): what the cache says about it is suspect.
        s.cache.invalidate(region.ver_id(), InvalidReason::Other);
        return park_on_region(s, op, key, reverse, None);
    }
    // A store marked for a re-check keeps its address in use while PD is asked again.
    if needs_refresh {
        let (pd, mut cx) = s.pd();
        pd.refresh_store(&mut cx, peer.store_id);
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
            let waiter = waiter(s, op);
            let (pd, mut cx) = s.pd();
            pd.lookup_store(&mut cx, waiter, peer.store_id);
            Routing::Parked(waiter.call)
        }
    }
}

/// Moves past peers on stores PD reports removed (tombstone, or unknown to PD), as
/// client-go leaves such peers out of the regions it caches. Errors, dropping the region
/// from the cache, when no peer is left.
fn avoid_removed_stores(s: &mut Services, mut region: RegionRef) -> Result<RegionRef, Error> {
    let removed = |s: &Services, region: &RegionRef| {
        region.work_peer().is_some_and(|peer| {
            s.cache
                .stores()
                .get(peer.store_id)
                .is_some_and(|store| store.state() == ResolveState::Tombstone)
        })
    };
    // Bounded: each pass moves to another peer or stops.
    for _ in 0..region.peers().len() {
        if !removed(s, &region) {
            return Ok(region);
        }
        let ver_id = region.ver_id();
        if !s.cache.switch_to_next_peer(ver_id, region.work_index()) {
            break;
        }
        let now = s.now();
        match s.cache.get_by_id(ver_id.id, now) {
            Some(next) => region = next,
            None => break,
        }
    }
    if !removed(s, &region) {
        return Ok(region);
    }
    let ver_id = region.ver_id();
    s.cache.invalidate(ver_id, InvalidReason::StoreNotFound);
    // Ask PD about those stores again when the region comes back with them: a verdict of
    // "removed" is not kept against a region PD still places there.
    for peer in region.peers() {
        s.cache.stores_mut().forget(peer.store_id);
    }
    Err(Error::RegionUnavailable(format!(
        "region {} has no available peers: its stores are removed",
        ver_id.id
    )))
}

/// When the peer the cache would use sits on a store that failed its liveness probe,
/// moves on to the next peer (it answers NotLeader with the leader if it is not one).
/// Returns the region to use; `None` when the region vanished from the cache meanwhile.
fn avoid_unreachable(s: &mut Services, region: RegionRef) -> Option<RegionRef> {
    let unreachable = |s: &Services, region: &RegionRef| {
        region.work_peer().is_some_and(|peer| {
            s.cache
                .stores()
                .get(peer.store_id)
                .is_some_and(|store| store.liveness() == Liveness::Unreachable)
        })
    };
    if !unreachable(s, &region) || region.peers().len() < 2 {
        return Some(region);
    }
    // Keep asking the skipped store, so a store that comes back is used again.
    if let Some(peer) = region.work_peer() {
        probe_store(s, peer.store_id);
    }
    let ver_id = region.ver_id();
    s.cache.switch_to_next_peer(ver_id, region.work_index());
    let now = s.now();
    s.cache.get_by_id(ver_id.id, now)
}

/// Asks store `store_id` whether it is alive (client-go's liveness check after a send
/// failure), unless a probe is already out.
fn probe_store(s: &mut Services, store_id: u64) {
    if s.probing.contains(&store_id) {
        return;
    }
    let Some(address) = s.cache.stores().shared_address(store_id) else {
        return;
    };
    s.probing.insert(store_id);
    let timeout = s.config.store_liveness_timeout;
    s.out.transmit(
        Owner::Probe(store_id),
        address,
        Request::Health(Default::default()),
        timeout,
    );
}

/// Takes the answer to the liveness probe of `store_id`.
pub(crate) fn on_probe(s: &mut Services, store_id: u64, reply: Result<Response, RpcError>) {
    use tikv_proto::grpc::health::v1::health_check_response::ServingStatus;
    s.probing.remove(&store_id);
    let liveness = match reply {
        Ok(Response::Health(health)) if health.status == ServingStatus::Serving as i32 => {
            Liveness::Reachable
        }
        // UNKNOWN / SERVICE_UNKNOWN: the store does not say; anything else: unreachable.
        Ok(Response::Health(health))
            if health.status == ServingStatus::Unknown as i32
                || health.status == ServingStatus::ServiceUnknown as i32 =>
        {
            Liveness::Unknown
        }
        _ => Liveness::Unreachable,
    };
    let now = s.now();
    s.cache.stores_mut().set_liveness(store_id, liveness, now);
}

/// Applies what a region error taught about the cache (see [`RegionRetry`]).
///
/// An EpochNotMatch naming the region at an older epoch than the cached one means the store
/// lags behind (client-go's "region epoch is ahead of TiKV"): the cache is kept and `retry`
/// becomes a `regionMiss` backoff, since an immediate retry would meet the same answer.
pub(crate) fn apply_region_retry(s: &mut Services, route: &Route, retry: &mut RegionRetry) {
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
            s.cache.update_leader(route.ver_id, &leader);
            // A peer names this store as the leader: it is up, whatever an older probe
            // said. Forget that verdict (a send failure will mark it again) and check.
            let now = s.now();
            let stores = s.cache.stores_mut();
            if stores
                .get(*leader_store_id)
                .is_some_and(|store| store.liveness() == Liveness::Unreachable)
            {
                stores.set_liveness(*leader_store_id, Liveness::Unknown, now);
                probe_store(s, *leader_store_id);
            }
        }
        RegionRetry::Relocate {
            backoff,
            current_regions,
            refresh_store,
        } => {
            if current_regions.is_empty() {
                s.cache.invalidate(route.ver_id, InvalidReason::Other);
            } else {
                let now = s.now();
                let outcome = s.cache.on_epoch_not_match(
                    route.ver_id,
                    current_regions,
                    route.peer.store_id,
                    now,
                    &mut s.rng,
                );
                if outcome == crate::region::EpochNotMatchOutcome::EpochAhead {
                    *backoff = Some(crate::backoff::BackoffKind::RegionMiss);
                }
            }
            if *refresh_store {
                let epoch = s
                    .cache
                    .stores()
                    .get(route.peer.store_id)
                    .map_or(0, Store::epoch);
                s.cache
                    .stores_mut()
                    .mark_needs_refresh(route.peer.store_id, epoch);
            }
        }
        RegionRetry::NextPeer(_) => {
            // Keep the region and move on to the next peer; only a region with a single
            // peer (nowhere to go) is reloaded. A late report leaves the cursor where
            // another request already moved it.
            if !s.cache.switch_to_next_peer(route.ver_id, route.peer_index)
                && route.region.peers.len() < 2
            {
                s.cache.invalidate(route.ver_id, InvalidReason::NoLeader);
            }
        }
        RegionRetry::Backoff(_) | RegionRetry::Fail(_) => {}
    }
}

/// After a transport failure towards `route`: move on to the next peer and have PD re-check
/// the store (client-go's `onSendFail` for leader requests).
pub(crate) fn on_send_failure(s: &mut Services, route: &Route) {
    let store_id = route.peer.store_id;
    s.cache
        .stores_mut()
        .mark_needs_refresh(store_id, route.store_epoch);
    probe_store(s, store_id);
    // A late report (another request already moved on, or the region was reloaded) leaves
    // the region alone; a single-peer region has nowhere else to go: reload it.
    if !s.cache.switch_to_next_peer(route.ver_id, route.peer_index) && route.region.peers.len() < 2
    {
        s.cache.invalidate(route.ver_id, InvalidReason::Other);
    }
}
