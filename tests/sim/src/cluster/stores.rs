//! TiKV stores as PD registers them, plus the running flag the fault API flips.

use tikv_proto::metapb::{self, NodeState};

use super::{Cluster, ClusterError, RegionChange};

/// A store's lifecycle as PD reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StoreState {
    /// Serving.
    Up,
    /// Being drained (PD's `Offline` / node state `Removing`).
    Offline,
    /// Removed for good (`Tombstone` / node state `Removed`).
    Tombstone,
}

/// One TiKV store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Store {
    /// The store id.
    pub id: u64,
    /// The gRPC address clients dial.
    pub address: String,
    /// The HTTP status address (`/config`, metrics).
    pub status_address: String,
    /// Placement labels, `(key, value)`.
    pub labels: Vec<(String, String)>,
    /// Lifecycle.
    pub state: StoreState,
    /// False while the store process is stopped (requests to it fail to connect).
    pub running: bool,
}

/// The version string stores report (a recent TiKV release line).
const STORE_VERSION: &str = "8.5.0";

impl Store {
    /// A running, Up store with placeholder addresses (`store-<id>`), replaced once the
    /// server knows its ports.
    pub(crate) fn placeholder(id: u64) -> Self {
        Self {
            id,
            address: format!("store-{id}:20160"),
            status_address: format!("store-{id}:20180"),
            labels: Vec::new(),
            state: StoreState::Up,
            running: true,
        }
    }

    /// Whether the store has been removed.
    pub fn is_tombstone(&self) -> bool {
        self.state == StoreState::Tombstone
    }

    /// The wire form (`metapb::Store`), with the legacy state and the node state in step.
    pub fn to_proto(&self) -> metapb::Store {
        let (state, node_state) = match self.state {
            StoreState::Up => (metapb::StoreState::Up, NodeState::Serving),
            StoreState::Offline => (metapb::StoreState::Offline, NodeState::Removing),
            StoreState::Tombstone => (metapb::StoreState::Tombstone, NodeState::Removed),
        };
        metapb::Store {
            id: self.id,
            address: self.address.clone(),
            state: state as i32,
            labels: self
                .labels
                .iter()
                .map(|(key, value)| metapb::StoreLabel {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            version: STORE_VERSION.to_owned(),
            peer_address: self.address.clone(),
            status_address: self.status_address.clone(),
            node_state: node_state as i32,
            ..Default::default()
        }
    }
}

/// Whether `key` is a valid store label key, by the pattern TiKV's server config and PD
/// check (`validate_label_key`): an optional `$`, then letters and digits with `-`, `_`, `.`
/// and `/` allowed inside.
pub fn is_valid_label_key(key: &str) -> bool {
    let name = key.strip_prefix('$').unwrap_or(key);
    let bytes = name.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes.iter().all(|&b| is_label_byte(b))
}

/// Whether `value` is a valid store label value (TiKV's `validate_label_value`): letters,
/// digits, `-`, `_`, `.` and `/`, possibly empty.
pub fn is_valid_label_value(value: &str) -> bool {
    value.bytes().all(is_label_byte)
}

fn is_label_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/')
}

impl Cluster {
    /// The store with this id, if any.
    pub fn store(&self, store_id: u64) -> Option<&Store> {
        self.stores.get(&store_id)
    }

    /// All stores by id (tombstones included).
    pub fn stores(&self) -> impl Iterator<Item = &Store> {
        self.stores.values()
    }

    /// Adds a new Up, running store with the given addresses; returns its id.
    pub fn add_store(&mut self, address: &str, status_address: &str) -> u64 {
        let id = self.alloc_id();
        let mut store = Store::placeholder(id);
        store.address = address.to_owned();
        store.status_address = status_address.to_owned();
        self.stores.insert(id, store);
        id
    }

    /// Sets the addresses a store advertises (once the server has bound its ports).
    pub fn set_store_address(
        &mut self,
        store_id: u64,
        address: &str,
        status_address: &str,
    ) -> Result<(), ClusterError> {
        let store = self.store_mut(store_id)?;
        store.address = address.to_owned();
        store.status_address = status_address.to_owned();
        Ok(())
    }

    /// Replaces a store's placement labels.
    pub fn set_store_labels(
        &mut self,
        store_id: u64,
        labels: Vec<(String, String)>,
    ) -> Result<(), ClusterError> {
        self.store_mut(store_id)?.labels = labels;
        Ok(())
    }

    /// Stops a store's process: its requests fail as unreachable until
    /// [`Cluster::restart_store`]. PD's metadata does not change (as until PD notices).
    pub fn stop_store(&mut self, store_id: u64) -> Result<(), ClusterError> {
        let store = self.store_mut(store_id)?;
        if store.running {
            store.running = false;
            let led = self.led_by(store_id);
            self.record_change(RegionChange::StoreStopped { store_id, led });
        }
        Ok(())
    }

    /// Restarts a stopped store. The regions it leads elect their leader again (on this
    /// store: the model does not move leaders by itself), so their terms move on by one.
    pub fn restart_store(&mut self, store_id: u64) -> Result<(), ClusterError> {
        let store = self.store_mut(store_id)?;
        if store.is_tombstone() {
            return Err(ClusterError::StoreTombstone { store_id });
        }
        if !store.running {
            store.running = true;
            let led: Vec<u64> = self
                .led_by(store_id)
                .into_iter()
                .map(|(id, ..)| id)
                .collect();
            for region_id in &led {
                if let Ok(region) = self.region_mut(*region_id) {
                    region.term += 1;
                }
            }
            self.record_change(RegionChange::StoreRestarted { store_id, led });
        }
        Ok(())
    }

    /// Marks a store Offline (being drained); it keeps serving.
    pub fn set_store_offline(&mut self, store_id: u64) -> Result<(), ClusterError> {
        let store = self.store_mut(store_id)?;
        if store.is_tombstone() {
            return Err(ClusterError::StoreTombstone { store_id });
        }
        store.state = StoreState::Offline;
        Ok(())
    }

    /// Removes a store for good (Tombstone, node state Removed, stopped). As in PD, only a
    /// store without region peers can be removed; move or remove its peers first.
    pub fn remove_store(&mut self, store_id: u64) -> Result<(), ClusterError> {
        self.store_mut(store_id)?;
        let peer_count = self
            .regions
            .values()
            .filter(|region| region.peer_on(store_id).is_some())
            .count();
        if peer_count > 0 {
            return Err(ClusterError::StoreHasPeers {
                store_id,
                peer_count,
            });
        }
        let store = self.store_mut(store_id)?;
        store.state = StoreState::Tombstone;
        store.running = false;
        Ok(())
    }

    fn store_mut(&mut self, store_id: u64) -> Result<&mut Store, ClusterError> {
        self.stores
            .get_mut(&store_id)
            .ok_or(ClusterError::StoreNotFound { store_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterConfig;

    #[test]
    fn store_lifecycle() {
        let mut cluster = Cluster::new(ClusterConfig::default()).unwrap();
        let id = cluster.add_store("127.0.0.1:1", "127.0.0.1:2");
        let proto = cluster.store(id).unwrap().to_proto();
        assert_eq!(proto.address, "127.0.0.1:1");
        assert_eq!(proto.node_state, NodeState::Serving as i32);

        cluster.stop_store(id).unwrap();
        assert!(!cluster.store(id).unwrap().running);
        cluster.restart_store(id).unwrap();
        assert!(cluster.store(id).unwrap().running);

        cluster.set_store_offline(id).unwrap();
        assert_eq!(
            cluster.store(id).unwrap().to_proto().state,
            metapb::StoreState::Offline as i32
        );
        cluster.remove_store(id).unwrap();
        let proto = cluster.store(id).unwrap().to_proto();
        assert_eq!(proto.state, metapb::StoreState::Tombstone as i32);
        assert_eq!(proto.node_state, NodeState::Removed as i32);
        assert_eq!(
            cluster.restart_store(id),
            Err(ClusterError::StoreTombstone { store_id: id })
        );
    }

    /// Follows TiKV's `validate_label_key` / `validate_label_value` patterns.
    #[test]
    fn label_patterns_follow_tikv_validate_label() {
        for key in ["zone", "host", "$mode", "a", "rack-1", "k8s.io/zone", "A_b"] {
            assert!(is_valid_label_key(key), "{key}");
        }
        for key in ["", "$", "-zone", "zone-", "zo ne", "zone=", "$$a", "_a"] {
            assert!(!is_valid_label_key(key), "{key}");
        }
        for value in ["", "z1", "us-west-1a", "h.1/2_3"] {
            assert!(is_valid_label_value(value), "{value}");
        }
        for value in ["a b", "a,b", "a=b", "é"] {
            assert!(!is_valid_label_value(value), "{value}");
        }
    }

    #[test]
    fn store_with_peers_cannot_be_removed() {
        let mut cluster = Cluster::new(ClusterConfig::default()).unwrap();
        assert_eq!(
            cluster.remove_store(2),
            Err(ClusterError::StoreHasPeers {
                store_id: 2,
                peer_count: 1
            })
        );
        assert_eq!(
            cluster.stop_store(99),
            Err(ClusterError::StoreNotFound { store_id: 99 })
        );
    }
}
