//! The store table: what the client knows about each TiKV (or TiFlash) store.
//!
//! A store enters the table as soon as a cached region names it ([`ResolveState::Unresolved`]);
//! the caller then asks PD (`GetStore`) for every id in [`Stores::needs_refresh`] and feeds
//! the answers to [`Stores::on_store_meta`] or [`Stores::on_store_not_found`]. A send failure
//! marks the store for another look ([`Stores::mark_needs_refresh`]), and health checks report
//! through [`Stores::set_liveness`].
//!
//! Resolve states follow client-go's `resolveState`:
//!
//! ```text
//!  Unresolved --PD meta--> Resolved --send failure--> NeedCheck --PD meta--> Resolved
//!       |                                                 |
//!       +--PD: tombstone / not found--> Tombstone <-------+
//! ```

use std::collections::BTreeMap;

use tikv_proto::metapb;

use crate::time::Time;

/// How far the client has resolved a store's address (client-go's `resolveState`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResolveState {
    /// Known only by id (a region names it); PD has not described it yet.
    #[default]
    Unresolved,
    /// PD described it and its address is usable.
    Resolved,
    /// A request to it failed; its address is still used but PD should be asked again.
    NeedCheck,
    /// PD reports it removed; regions with peers on it need reloading.
    Tombstone,
}

/// Whether the store answers health checks (client-go's `livenessState`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Liveness {
    /// It answered its last health check (the default until a check says otherwise).
    #[default]
    Reachable,
    /// It failed its last health check; requests may be forwarded through another store.
    Unreachable,
    /// The last health check was inconclusive.
    Unknown,
}

/// What [`Stores::on_store_meta`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreUpdate {
    /// The store was described for the first time (or came back from a tombstone).
    Resolved,
    /// Its address or labels changed.
    Changed,
    /// Nothing changed; a pending check is cleared.
    Unchanged,
    /// PD reports the store as a tombstone.
    Tombstone,
}

/// Why store metadata from PD was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A live store without an address cannot be reached.
    #[error("store {0} has an empty address")]
    EmptyAddress(u64),
}

/// One store as the client knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Store {
    id: u64,
    /// Shared with every route and transmit towards the store, so routing a request does not
    /// copy the string.
    address: std::sync::Arc<str>,
    peer_address: String,
    status_address: String,
    labels: Vec<metapb::StoreLabel>,
    state: ResolveState,
    liveness: Liveness,
    unreachable_since: Option<Time>,
    epoch: u32,
}

impl Store {
    fn unresolved(id: u64) -> Self {
        Self {
            id,
            address: std::sync::Arc::from(""),
            peer_address: String::new(),
            status_address: String::new(),
            labels: Vec::new(),
            state: ResolveState::Unresolved,
            liveness: Liveness::Reachable,
            unreachable_since: None,
            epoch: 0,
        }
    }

    /// The store id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The address clients send to; empty until resolved.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The address to send to, shared; `None` while unresolved or once a tombstone.
    pub fn usable_address(&self) -> Option<std::sync::Arc<str>> {
        self.is_usable()
            .then(|| std::sync::Arc::clone(&self.address))
    }

    fn is_usable(&self) -> bool {
        matches!(self.state, ResolveState::Resolved | ResolveState::NeedCheck)
    }

    /// The address other stores use (TiFlash proxies reach it here).
    pub fn peer_address(&self) -> &str {
        &self.peer_address
    }

    /// The HTTP status address (health and metrics).
    pub fn status_address(&self) -> &str {
        &self.status_address
    }

    /// The store's labels (zone, host, engine, ...).
    pub fn labels(&self) -> &[metapb::StoreLabel] {
        &self.labels
    }

    /// The value of label `key`, if the store has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|label| label.key == key)
            .map(|label| label.value.as_str())
    }

    /// Whether the store carries every label in `wanted` (an empty list always matches).
    pub fn labels_match(&self, wanted: &[metapb::StoreLabel]) -> bool {
        wanted
            .iter()
            .all(|want| self.label(&want.key) == Some(want.value.as_str()))
    }

    /// Whether this is a TiFlash store (label `engine=tiflash`, as PD marks them).
    pub fn is_tiflash(&self) -> bool {
        self.label("engine") == Some("tiflash")
    }

    /// Whether labels mark a TiFlash or TiFlash compute store (client-go's
    /// `IsTiFlashRelatedType`): such stores hold no TiKV data.
    pub fn tiflash_related(labels: &[metapb::StoreLabel]) -> bool {
        labels.iter().any(|label| {
            label.key == "engine" && (label.value == "tiflash" || label.value == "tiflash_compute")
        })
    }

    /// How far the address is resolved.
    pub fn state(&self) -> ResolveState {
        self.state
    }

    /// The result of the last health check.
    pub fn liveness(&self) -> Liveness {
        self.liveness
    }

    /// When the store was first seen unreachable, while it still is.
    pub fn unreachable_since(&self) -> Option<Time> {
        self.unreachable_since
    }

    /// The store's failure epoch: bumped on every send failure reported against the current
    /// epoch and when it becomes a tombstone, so holders of an older epoch know to refresh.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Whether PD should be asked about this store.
    pub fn needs_refresh(&self) -> bool {
        matches!(
            self.state,
            ResolveState::Unresolved | ResolveState::NeedCheck
        )
    }
}

/// The table of stores, keyed by store id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stores {
    stores: BTreeMap<u64, Store>,
}

impl Stores {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops store `id` from the table: the next use resolves it through PD again.
    pub fn forget(&mut self, id: u64) {
        self.stores.remove(&id);
    }

    /// The ids of every store in the table, ascending.
    pub fn ids(&self) -> Vec<u64> {
        self.stores.keys().copied().collect()
    }

    /// The store `id`, if known.
    pub fn get(&self, id: u64) -> Option<&Store> {
        self.stores.get(&id)
    }

    /// The address to send to for store `id`; `None` while unresolved or once a tombstone.
    pub fn address(&self, id: u64) -> Option<&str> {
        self.usable(id).map(Store::address)
    }

    /// [`address`](Self::address) as a shared string, cheap to hand to every request.
    pub fn shared_address(&self, id: u64) -> Option<std::sync::Arc<str>> {
        self.usable(id)
            .map(|store| std::sync::Arc::clone(&store.address))
    }

    fn usable(&self, id: u64) -> Option<&Store> {
        self.stores.get(&id).filter(|store| {
            matches!(
                store.state,
                ResolveState::Resolved | ResolveState::NeedCheck
            )
        })
    }

    /// Adds store `id` as unresolved unless it is already known; returns it.
    pub fn ensure(&mut self, id: u64) -> &Store {
        self.stores
            .entry(id)
            .or_insert_with(|| Store::unresolved(id))
    }

    /// Applies PD's description of a store; returns what changed.
    ///
    /// A tombstone is recorded as such (bumping the epoch). Errors with
    /// [`StoreError::EmptyAddress`] for a live store without an address, leaving the table
    /// unchanged.
    pub fn on_store_meta(&mut self, meta: &metapb::Store) -> Result<StoreUpdate, StoreError> {
        if meta.state == metapb::StoreState::Tombstone as i32 {
            self.on_store_not_found(meta.id);
            return Ok(StoreUpdate::Tombstone);
        }
        if meta.address.is_empty() {
            return Err(StoreError::EmptyAddress(meta.id));
        }
        let store = self
            .stores
            .entry(meta.id)
            .or_insert_with(|| Store::unresolved(meta.id));
        let update = match store.state {
            ResolveState::Unresolved | ResolveState::Tombstone => StoreUpdate::Resolved,
            ResolveState::Resolved | ResolveState::NeedCheck => {
                if *store.address != *meta.address || store.labels != meta.labels {
                    StoreUpdate::Changed
                } else {
                    StoreUpdate::Unchanged
                }
            }
        };
        if *store.address != *meta.address {
            store.address = std::sync::Arc::from(meta.address.as_str());
        }
        store.peer_address.clone_from(&meta.peer_address);
        store.status_address.clone_from(&meta.status_address);
        store.labels.clone_from(&meta.labels);
        store.state = ResolveState::Resolved;
        Ok(update)
    }

    /// Records that PD no longer knows store `id` (removed or tombstone).
    pub fn on_store_not_found(&mut self, id: u64) {
        let store = self
            .stores
            .entry(id)
            .or_insert_with(|| Store::unresolved(id));
        if store.state != ResolveState::Tombstone {
            store.epoch = store.epoch.wrapping_add(1);
        }
        store.state = ResolveState::Tombstone;
    }

    /// Reports a failed send to store `id` by a request that saw failure epoch `seen_epoch`;
    /// returns whether this report bumped the epoch.
    ///
    /// Several in-flight requests fail together when a store goes down; only the first report
    /// against an epoch counts, so the epoch moves once per incident. The store is also marked
    /// for a PD check.
    pub fn mark_needs_refresh(&mut self, id: u64, seen_epoch: u32) -> bool {
        let Some(store) = self.stores.get_mut(&id) else {
            return false;
        };
        if store.state == ResolveState::Resolved {
            store.state = ResolveState::NeedCheck;
        }
        if store.epoch == seen_epoch {
            store.epoch = seen_epoch.wrapping_add(1);
            true
        } else {
            false
        }
    }

    /// Records a health check result for store `id` at `now`; returns false for unknown ids.
    pub fn set_liveness(&mut self, id: u64, liveness: Liveness, now: Time) -> bool {
        let Some(store) = self.stores.get_mut(&id) else {
            return false;
        };
        match liveness {
            Liveness::Reachable => store.unreachable_since = None,
            Liveness::Unreachable | Liveness::Unknown => {
                store.unreachable_since.get_or_insert(now);
            }
        }
        store.liveness = liveness;
        true
    }

    /// Ids of the stores PD should be asked about, in ascending order.
    pub fn needs_refresh(&self) -> impl Iterator<Item = u64> + '_ {
        self.stores
            .values()
            .filter(|store| store.needs_refresh())
            .map(Store::id)
    }

    /// Every known store, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Store> + '_ {
        self.stores.values()
    }

    /// Stores that are resolved (or pending a check) and carry every label in `labels`.
    pub fn matching_labels<'a>(
        &'a self,
        labels: &'a [metapb::StoreLabel],
    ) -> impl Iterator<Item = &'a Store> + 'a {
        self.stores.values().filter(move |store| {
            matches!(
                store.state,
                ResolveState::Resolved | ResolveState::NeedCheck
            ) && store.labels_match(labels)
        })
    }

    /// Forgets every store.
    pub fn clear(&mut self) {
        self.stores.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(key: &str, value: &str) -> metapb::StoreLabel {
        metapb::StoreLabel {
            key: key.to_owned(),
            value: value.to_owned(),
        }
    }

    fn meta(id: u64, address: &str, labels: Vec<metapb::StoreLabel>) -> metapb::Store {
        metapb::Store {
            id,
            address: address.to_owned(),
            labels,
            ..Default::default()
        }
    }

    fn tombstone(id: u64) -> metapb::Store {
        metapb::Store {
            id,
            state: metapb::StoreState::Tombstone as i32,
            ..Default::default()
        }
    }

    #[test]
    fn test_store_labels() {
        let mut stores = Stores::new();
        for id in [1, 2] {
            let labels = vec![label("id", &id.to_string())];
            stores
                .on_store_meta(&meta(id, &format!("store{id}"), labels))
                .unwrap();
        }
        for id in [1u64, 2] {
            let wanted = [label("id", &id.to_string())];
            let found: Vec<u64> = stores.matching_labels(&wanted).map(Store::id).collect();
            assert_eq!(found, [id]);
            assert_eq!(stores.get(id).unwrap().labels(), wanted);
        }
        assert_eq!(stores.matching_labels(&[]).count(), 2);
    }

    #[test]
    fn test_resolve_state_transition() {
        let mut stores = Stores::new();
        // A store named by a region starts unresolved and has no address to use.
        assert_eq!(stores.ensure(1).state(), ResolveState::Unresolved);
        assert_eq!(stores.address(1), None);
        assert_eq!(stores.needs_refresh().collect::<Vec<_>>(), [1]);
        assert_eq!(
            stores.on_store_meta(&meta(1, "store1", vec![])),
            Ok(StoreUpdate::Resolved)
        );
        assert_eq!(stores.address(1), Some("store1"));
        assert_eq!(stores.needs_refresh().count(), 0);

        // needCheck, then PD confirms: resolved again, nothing changed.
        assert!(stores.mark_needs_refresh(1, 0));
        assert_eq!(stores.get(1).unwrap().state(), ResolveState::NeedCheck);
        assert_eq!(stores.address(1), Some("store1"));
        assert_eq!(
            stores.on_store_meta(&meta(1, "store1", vec![])),
            Ok(StoreUpdate::Unchanged)
        );
        assert_eq!(stores.get(1).unwrap().state(), ResolveState::Resolved);

        // needCheck, then PD says tombstone.
        stores.mark_needs_refresh(1, 1);
        assert_eq!(
            stores.on_store_meta(&tombstone(1)),
            Ok(StoreUpdate::Tombstone)
        );
        assert_eq!(stores.get(1).unwrap().state(), ResolveState::Tombstone);
        assert_eq!(stores.address(1), None);

        // The store comes back with a new address and labels.
        assert_eq!(
            stores.on_store_meta(&meta(1, "store10", vec![label("k", "v")])),
            Ok(StoreUpdate::Resolved)
        );
        stores.mark_needs_refresh(1, stores.get(1).unwrap().epoch());
        assert_eq!(
            stores.on_store_meta(&meta(1, "store100", vec![label("k", "v")])),
            Ok(StoreUpdate::Changed)
        );
        assert_eq!(stores.address(1), Some("store100"));

        // A store PD has dropped entirely.
        stores.ensure(2);
        stores.on_store_not_found(2);
        assert_eq!(stores.get(2).unwrap().state(), ResolveState::Tombstone);
        assert_eq!(stores.address(2), None);
    }

    #[test]
    fn empty_address_is_refused() {
        let mut stores = Stores::new();
        stores.ensure(3);
        assert_eq!(
            stores.on_store_meta(&meta(3, "", vec![])),
            Err(StoreError::EmptyAddress(3))
        );
        assert_eq!(stores.get(3).unwrap().state(), ResolveState::Unresolved);
    }

    #[test]
    fn send_failures_bump_the_epoch_once_per_incident() {
        let mut stores = Stores::new();
        stores.on_store_meta(&meta(1, "store1", vec![])).unwrap();
        assert!(stores.mark_needs_refresh(1, 0));
        // A second request that also saw epoch 0 does not bump it again.
        assert!(!stores.mark_needs_refresh(1, 0));
        assert_eq!(stores.get(1).unwrap().epoch(), 1);
        assert!(!stores.mark_needs_refresh(9, 0));
        // Becoming a tombstone also moves the epoch.
        stores.on_store_not_found(1);
        assert_eq!(stores.get(1).unwrap().epoch(), 2);
        stores.on_store_not_found(1);
        assert_eq!(stores.get(1).unwrap().epoch(), 2);
    }

    #[test]
    fn test_issue1401_labels_refresh_after_need_check() {
        let mut stores = Stores::new();
        stores.on_store_meta(&meta(1, "store1", vec![])).unwrap();
        stores.set_liveness(1, Liveness::Unreachable, Time::from_millis(5));
        stores.mark_needs_refresh(1, 0);
        let labels = vec![label("host", "0.0.0.0:20161")];
        assert_eq!(
            stores.on_store_meta(&meta(1, "store1", labels)),
            Ok(StoreUpdate::Changed)
        );
        stores.set_liveness(1, Liveness::Reachable, Time::from_millis(9));
        let store = stores.get(1).unwrap();
        assert_eq!(store.state(), ResolveState::Resolved);
        assert_eq!(store.liveness(), Liveness::Reachable);
        assert_eq!(store.label("host"), Some("0.0.0.0:20161"));
    }

    #[test]
    fn liveness_tracks_when_unreachable_began() {
        let mut stores = Stores::new();
        stores.ensure(1);
        assert_eq!(stores.get(1).unwrap().liveness(), Liveness::Reachable);
        assert!(stores.set_liveness(1, Liveness::Unreachable, Time::from_millis(10)));
        assert!(stores.set_liveness(1, Liveness::Unknown, Time::from_millis(20)));
        let store = stores.get(1).unwrap();
        assert_eq!(store.liveness(), Liveness::Unknown);
        assert_eq!(store.unreachable_since(), Some(Time::from_millis(10)));
        stores.set_liveness(1, Liveness::Reachable, Time::from_millis(30));
        assert_eq!(stores.get(1).unwrap().unreachable_since(), None);
        assert!(!stores.set_liveness(7, Liveness::Reachable, Time::ZERO));
    }

    #[test]
    fn tiflash_is_recognised_by_engine_label() {
        let mut stores = Stores::new();
        stores
            .on_store_meta(&meta(4, "tiflash4", vec![label("engine", "tiflash")]))
            .unwrap();
        stores.on_store_meta(&meta(5, "tikv5", vec![])).unwrap();
        assert!(stores.get(4).unwrap().is_tiflash());
        assert!(!stores.get(5).unwrap().is_tiflash());
        assert_eq!(stores.iter().count(), 2);
        stores.clear();
        assert!(stores.get(4).is_none());
    }
}
