//! Region and store lookups shared by every operation that needs them, and the periodic
//! store list refresh.

use bytes::Bytes;
use tikv_proto::pdpb;

use super::{PdCx, PdService, Pending, Purpose};
use crate::error::Error;
use crate::outbox::{Reply, TimerKey};
use crate::rand::Rng;
use crate::region::{InsertError, RegionCache, RegionRef};
use crate::rpc::PdRequest;
use crate::time::Time;
use crate::wait::{WaitKey, Waiter};

/// Most regions one batch lookup loads.
const SCAN_REGIONS_LIMIT: i32 = 128;

/// Whether `region` holds `key`.
fn contains(region: &tikv_proto::metapb::Region, key: &[u8]) -> bool {
    region.start_key.as_ref() <= key && (region.end_key.is_empty() || key < region.end_key.as_ref())
}

/// Caches the region of a PD answer without the peers PD reports down, as client-go's
/// `newRegion` does: requests never go to them, and a region with down peers expires at
/// its TTL even while in use, so it is seen again once they recover.
///
/// Errors when the answer has no region, no peer is left, or the region is stale.
pub(crate) fn cache_region(
    cache: &mut RegionCache,
    rng: &mut Rng,
    response: pdpb::GetRegionResponse,
    now: Time,
) -> Result<RegionRef, InsertError> {
    let Some(mut region) = response.region else {
        return Err(InsertError::NoPeers(0));
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
    let cached = cache.insert(region, leader.as_ref(), now, rng)?;
    if !down.is_empty() {
        cache.expire_after_ttl(cached.ver_id());
    }
    Ok(cached)
}

impl PdService {
    /// Parks `waiter` until the region holding routing key `key` (with `reverse`, the
    /// region just before it) is cached, sharing one PD lookup among waiters. When the
    /// operation also needs keys up to `last_key`, a miss loads the regions of
    /// `[key, last_key]` in one `BatchScanRegions` call (up to 128), as client-go's batch
    /// locate does, instead of one lookup per region.
    pub(crate) fn lookup_region(
        &mut self,
        cx: &mut PdCx<'_>,
        waiter: Waiter,
        key: &[u8],
        reverse: bool,
        last_key: Option<&[u8]>,
    ) {
        let key = Bytes::copy_from_slice(key);
        let slot = WaitKey::Region {
            key: key.clone(),
            reverse,
        };
        if !cx.waits.park(slot, waiter) {
            return;
        }
        let purpose = Purpose::Region {
            key: key.clone(),
            reverse,
        };
        if let (false, Some(last_key)) = (reverse, last_key) {
            // The end is exclusive: extend the last key by a zero byte to include it.
            let mut end_key = last_key.to_vec();
            end_key.push(0);
            let request = PdRequest::BatchScanRegions(pdpb::BatchScanRegionsRequest {
                ranges: vec![pdpb::KeyRange {
                    start_key: key,
                    end_key: Bytes::from(end_key),
                }],
                limit: SCAN_REGIONS_LIMIT,
                ..Default::default()
            });
            self.send(cx, purpose, request);
            return;
        }
        // A reverse lookup asks for the region holding the key first, and for the one
        // before it only when that region starts at the key, as client-go's `loadRegion`
        // does: PD's GetPrevRegion answers the region before the one *holding* the key,
        // which is not the one ending at the key when the key is inside a region. An empty
        // key (the end of the key space) has no region holding it.
        let request = pdpb::GetRegionRequest {
            region_key: key.clone(),
            ..Default::default()
        };
        let request = if reverse && key.is_empty() {
            PdRequest::GetPrevRegion(request)
        } else {
            PdRequest::GetRegion(request)
        };
        self.send(cx, purpose, request);
    }

    /// Parks `waiter` until the address of store `store_id` is known.
    pub(crate) fn lookup_store(&mut self, cx: &mut PdCx<'_>, waiter: Waiter, store_id: u64) {
        cx.waits.park(WaitKey::Store(store_id), waiter);
        self.refresh_store(cx, store_id);
    }

    /// Asks PD about store `store_id` unless a lookup is already out; nobody need wait for
    /// the answer (used to re-check stores marked for it while their old address stays in
    /// use).
    pub(crate) fn refresh_store(&mut self, cx: &mut PdCx<'_>, store_id: u64) {
        if self.store_lookups.insert(store_id) {
            self.send(
                cx,
                Purpose::Store(store_id),
                PdRequest::GetStore(pdpb::GetStoreRequest {
                    store_id,
                    ..Default::default()
                }),
            );
        }
    }

    /// Takes a batch of regions from BatchScanRegions: caches them all and answers the
    /// waiters of the first key. An answer whose first region does not hold that key (empty,
    /// or a hole while a split is reported) is retried like a missing region.
    pub(super) fn on_regions(
        &mut self,
        cx: &mut PdCx<'_>,
        pending: Pending,
        key: Bytes,
        reverse: bool,
        response: pdpb::BatchScanRegionsResponse,
    ) {
        let mut responses = response
            .regions
            .into_iter()
            .map(|region| pdpb::GetRegionResponse {
                region: region.region,
                leader: region.leader,
                down_peers: region.down_peers,
                ..Default::default()
            });
        let Some(first) = responses
            .next()
            .filter(|first| first.region.as_ref().is_some_and(|r| contains(r, &key)))
        else {
            self.on_region(
                cx,
                pending,
                key,
                reverse,
                pdpb::GetRegionResponse::default(),
            );
            return;
        };
        let now = cx.out.now();
        for response in responses {
            // A stale or empty extra region is just not cached; the first decides.
            let _ = cache_region(cx.cache, cx.rng, response, now);
        }
        self.on_region(cx, pending, key, reverse, first);
    }

    pub(super) fn on_region(
        &mut self,
        cx: &mut PdCx<'_>,
        pending: Pending,
        key: Bytes,
        reverse: bool,
        response: pdpb::GetRegionResponse,
    ) {
        if response.region.is_none() {
            // PD knows no region here yet (e.g. during a split); try again after a backoff.
            let err = Error::RegionUnavailable(format!(
                "PD has no region for key {:?}",
                String::from_utf8_lossy(&key)
            ));
            self.retry(cx, pending, err);
            return;
        }
        let starts_at_key = response
            .region
            .as_ref()
            .is_some_and(|region| region.start_key == key);
        let asked_prev = matches!(pending.request, PdRequest::GetPrevRegion(_));
        let now = cx.out.now();
        let cached = match cache_region(cx.cache, cx.rng, response, now) {
            Ok(cached) => cached,
            Err(err) => {
                // A stale answer (a lagging PD) or a region without peers: ask again later.
                self.retry(cx, pending, Error::RegionUnavailable(err.to_string()));
                return;
            }
        };
        if reverse && !asked_prev && starts_at_key && !key.is_empty() {
            // The region holding the key starts there: the one wanted ends there.
            let mut pending = pending;
            pending.request = PdRequest::GetPrevRegion(pdpb::GetRegionRequest {
                region_key: key,
                ..Default::default()
            });
            self.dispatch(cx, pending);
            return;
        }
        let fits = if reverse {
            cached.contains_by_end(&key)
        } else {
            cached.contains(&key)
        };
        if !fits {
            // An answer that does not cover the key (the regions changed between two
            // lookups): ask again after a backoff rather than waking waiters that would
            // only ask again at once.
            let err = Error::RegionUnavailable(format!(
                "PD's region does not cover key {:?}",
                String::from_utf8_lossy(&key)
            ));
            self.retry(cx, pending, err);
            return;
        }
        for waiter in cx.waits.take(&WaitKey::Region { key, reverse }) {
            cx.out.deliver(waiter.op, waiter.call, Reply::Ready(Ok(())));
        }
    }

    pub(super) fn on_store(
        &mut self,
        cx: &mut PdCx<'_>,
        pending: Pending,
        store_id: u64,
        response: pdpb::GetStoreResponse,
    ) {
        match &response.store {
            Some(store) => {
                if let Err(err) = cx.cache.stores_mut().on_store_meta(store) {
                    // A live store without an address: PD is inconsistent; ask again later.
                    self.retry(cx, pending, Error::RegionUnavailable(err.to_string()));
                    return;
                }
            }
            None => cx.cache.stores_mut().on_store_not_found(store_id),
        }
        // The waiters route again: to this store now that its address is known, or, when it
        // is gone (a tombstone in the table now), to another peer of their region.
        self.store_lookups.remove(&store_id);
        for waiter in cx.waits.take(&WaitKey::Store(store_id)) {
            cx.out.deliver(waiter.op, waiter.call, Reply::Ready(Ok(())));
        }
    }

    /// Arms the next store list refresh, unless one is armed or refreshing is off.
    pub(super) fn schedule_store_refresh(&mut self, cx: &mut PdCx<'_>) {
        let interval = self.settings.store_refresh_interval;
        if interval.is_zero() || self.next_store_refresh.is_some() {
            return;
        }
        let at = cx.out.now() + interval;
        self.next_store_refresh = Some(at);
        cx.out.set_timer(TimerKey::Pd, at);
    }

    /// Applies PD's full store list (client-go's periodic store refresh): new addresses and
    /// labels take effect, stores PD no longer lists or lists as tombstones are dropped, and
    /// stores marked for a re-check are resolved again.
    pub(super) fn on_store_list(
        &mut self,
        cx: &mut PdCx<'_>,
        response: pdpb::GetAllStoresResponse,
    ) {
        self.store_refresh_inflight = false;
        let listed: std::collections::BTreeSet<u64> =
            response.stores.iter().map(|store| store.id).collect();
        let stores = cx.cache.stores_mut();
        for store in &response.stores {
            // A live store without an address is a PD inconsistency; keep what we had.
            let _ = stores.on_store_meta(store);
        }
        for id in stores.ids() {
            if !listed.contains(&id) {
                stores.on_store_not_found(id);
            }
        }
        self.schedule_store_refresh(cx);
    }
}
