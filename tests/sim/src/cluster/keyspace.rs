//! Keyspaces (API v2): PD's `keyspacepb.Keyspace` service and keyspace creation.
//!
//! `DEFAULT` (id 0) always exists and is ENABLED. Named keyspaces get ids from 1 upwards.
//! Creating one pre-splits regions at its four API v2 bounds (`'r'`/`'x'` + 3-byte id, and
//! the next prefix), memcomparable-encoded, as PD's keyspace manager does.

use std::collections::BTreeMap;

use tikv_proto::codec::MAX_KEYSPACE_ID;
use tikv_proto::keyspacepb::{self, KeyspaceMeta, KeyspaceState};
use tikv_proto::pdpb::{self, ErrorType};

use super::pd::{error_header, header_check};
use super::{Cluster, ClusterError, PdError};

/// Id of the keyspace that always exists.
pub const DEFAULT_KEYSPACE_ID: u32 = 0;
/// Name of the keyspace that always exists.
pub const DEFAULT_KEYSPACE_NAME: &str = "DEFAULT";
/// Keyspace config key that selects who manages a keyspace's GC.
pub(crate) const GC_MANAGEMENT_TYPE: &str = "gc_management_type";
/// Value of [`GC_MANAGEMENT_TYPE`] for keyspaces that run their own GC.
pub(crate) const KEYSPACE_LEVEL_GC: &str = "keyspace_level";
/// Names are 1..=20 characters of `[-A-Za-z0-9_]` (PD's pattern).
const MAX_NAME_LEN: usize = 20;

/// Why a keyspace could not be created or changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyspaceError {
    /// Names are 1–20 characters from `[-A-Za-z0-9_]`, and not `DEFAULT`.
    #[error("illegal keyspace name {0:?}")]
    IllegalName(String),
    /// A keyspace with this name exists.
    #[error("keyspace {0:?} already exists")]
    Exists(String),
    /// No keyspace has this id.
    #[error("keyspace {0} does not exist")]
    NotFound(u32),
    /// All 24-bit ids are used.
    #[error("keyspace ids exhausted")]
    IdsExhausted,
}

/// Options for [`Cluster::create_keyspace`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyspaceOptions {
    /// The keyspace runs its own GC (`gc_management_type = keyspace_level`) instead of
    /// following the cluster-wide (null keyspace) GC state.
    pub keyspace_level_gc: bool,
}

/// The keyspace table.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Keyspaces {
    by_id: BTreeMap<u32, KeyspaceMeta>,
    next_id: u32,
}

impl Default for Keyspaces {
    fn default() -> Self {
        let default = KeyspaceMeta {
            name: DEFAULT_KEYSPACE_NAME.to_owned(),
            state: KeyspaceState::Enabled as i32,
            keyspace: Some(keyspacepb::keyspace_meta::Keyspace::Id(DEFAULT_KEYSPACE_ID)),
            ..Default::default()
        };
        Self {
            by_id: BTreeMap::from([(DEFAULT_KEYSPACE_ID, default)]),
            next_id: 1,
        }
    }
}

impl Keyspaces {
    pub(crate) fn get(&self, id: u32) -> Option<&KeyspaceMeta> {
        self.by_id.get(&id)
    }

    fn by_name(&self, name: &str) -> Option<&KeyspaceMeta> {
        self.by_id.values().find(|meta| meta.name == name)
    }

    /// Whether keyspace `id` exists and manages its own GC.
    pub(crate) fn has_keyspace_level_gc(&self, id: u32) -> Option<bool> {
        self.by_id.get(&id).map(|meta| {
            meta.config.get(GC_MANAGEMENT_TYPE).map(String::as_str) == Some(KEYSPACE_LEVEL_GC)
        })
    }
}

/// Whether `name` is a name PD accepts for a new keyspace: 1 to 20 characters from
/// `[-A-Za-z0-9_]`, and not `DEFAULT`.
pub fn is_valid_keyspace_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && name != DEFAULT_KEYSPACE_NAME
}

fn not_found_header(cluster_id: u64) -> pdpb::ResponseHeader {
    error_header(
        cluster_id,
        ErrorType::EntryNotFound,
        "keyspace does not exist",
    )
}

impl Cluster {
    /// Creates an ENABLED keyspace named `name` with the next free id, created at `now_ms`,
    /// and pre-splits its region bounds; returns its metadata.
    pub fn create_keyspace(
        &mut self,
        name: &str,
        options: &KeyspaceOptions,
        now_ms: u64,
    ) -> Result<KeyspaceMeta, ClusterError> {
        if !is_valid_keyspace_name(name) {
            return Err(KeyspaceError::IllegalName(name.to_owned()).into());
        }
        if self.keyspaces.by_name(name).is_some() {
            return Err(KeyspaceError::Exists(name.to_owned()).into());
        }
        let id = self.keyspaces.next_id;
        if id > MAX_KEYSPACE_ID {
            return Err(KeyspaceError::IdsExhausted.into());
        }
        let now_s = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        let mut config = BTreeMap::new();
        if options.keyspace_level_gc {
            config.insert(GC_MANAGEMENT_TYPE.to_owned(), KEYSPACE_LEVEL_GC.to_owned());
        }
        let meta = KeyspaceMeta {
            name: name.to_owned(),
            state: KeyspaceState::Enabled as i32,
            created_at: now_s,
            state_changed_at: now_s,
            config,
            keyspace: Some(keyspacepb::keyspace_meta::Keyspace::Id(id)),
        };
        self.split_keyspace_bounds(id)?;
        self.keyspaces.next_id = id + 1;
        self.keyspaces.by_id.insert(id, meta.clone());
        Ok(meta)
    }

    /// Moves keyspace `id` to `state` at `now_ms` (to test clients against disabled ones).
    pub fn set_keyspace_state(
        &mut self,
        id: u32,
        state: KeyspaceState,
        now_ms: u64,
    ) -> Result<(), ClusterError> {
        let meta = self
            .keyspaces
            .by_id
            .get_mut(&id)
            .ok_or(KeyspaceError::NotFound(id))?;
        meta.state = state as i32;
        meta.state_changed_at = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        Ok(())
    }

    /// The metadata of keyspace `id`, if it exists.
    pub fn keyspace(&self, id: u32) -> Option<&KeyspaceMeta> {
        self.keyspaces.get(id)
    }

    /// `LoadKeyspace`: the keyspace by name, or ENTRY_NOT_FOUND in the header.
    pub fn handle_load_keyspace(
        &self,
        req: &keyspacepb::LoadKeyspaceRequest,
    ) -> Result<keyspacepb::LoadKeyspaceResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        Ok(match self.keyspaces.by_name(&req.name) {
            Some(meta) => keyspacepb::LoadKeyspaceResponse {
                header: Some(self.header()),
                keyspace: Some(meta.clone()),
            },
            None => keyspacepb::LoadKeyspaceResponse {
                header: Some(not_found_header(self.cluster_id())),
                keyspace: None,
            },
        })
    }

    /// `LoadKeyspaceByID`: the keyspace by id, or ENTRY_NOT_FOUND in the header.
    pub fn handle_load_keyspace_by_id(
        &self,
        req: &keyspacepb::LoadKeyspaceByIdRequest,
    ) -> Result<keyspacepb::LoadKeyspaceResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        let id = match req.keyspace {
            Some(keyspacepb::load_keyspace_by_id_request::Keyspace::Id(id)) => Some(id),
            // API v3 identities are not modelled; treat them as unknown.
            Some(keyspacepb::load_keyspace_by_id_request::Keyspace::KeyspaceIdentity(_)) => None,
            None => Some(0),
        };
        Ok(match id.and_then(|id| self.keyspaces.get(id)) {
            Some(meta) => keyspacepb::LoadKeyspaceResponse {
                header: Some(self.header()),
                keyspace: Some(meta.clone()),
            },
            None => keyspacepb::LoadKeyspaceResponse {
                header: Some(not_found_header(self.cluster_id())),
                keyspace: None,
            },
        })
    }

    /// `GetAllKeyspaces`: keyspaces with id ≥ `start_id`, at most `limit` (0 = all).
    pub fn handle_get_all_keyspaces(
        &self,
        req: &keyspacepb::GetAllKeyspacesRequest,
    ) -> Result<keyspacepb::GetAllKeyspacesResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        let start_id = match req.start_keyspace {
            Some(keyspacepb::get_all_keyspaces_request::StartKeyspace::StartId(id)) => id,
            _ => 0,
        };
        let limit = if req.limit == 0 {
            usize::MAX
        } else {
            req.limit as usize
        };
        Ok(keyspacepb::GetAllKeyspacesResponse {
            header: Some(self.header()),
            keyspaces: self
                .keyspaces
                .by_id
                .range(start_id..)
                .map(|(_, meta)| meta.clone())
                .take(limit)
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterConfig;
    use crate::cluster::codec::keyspace_bounds;
    use bytes::Bytes;

    fn header(cluster: &Cluster) -> Option<pdpb::RequestHeader> {
        Some(pdpb::RequestHeader {
            cluster_id: cluster.cluster_id(),
            ..Default::default()
        })
    }

    fn load(cluster: &Cluster, name: &str) -> keyspacepb::LoadKeyspaceResponse {
        cluster
            .handle_load_keyspace(&keyspacepb::LoadKeyspaceRequest {
                header: header(cluster),
                name: name.to_owned(),
                namespace: None,
            })
            .unwrap()
    }

    #[test]
    fn default_keyspace_always_exists() {
        let cluster = Cluster::new(ClusterConfig::default()).unwrap();
        let resp = load(&cluster, "DEFAULT");
        let meta = resp.keyspace.unwrap();
        assert_eq!(meta.state, KeyspaceState::Enabled as i32);
        assert_eq!(
            meta.keyspace,
            Some(keyspacepb::keyspace_meta::Keyspace::Id(0))
        );
        let resp = load(&cluster, "nope");
        assert!(resp.keyspace.is_none());
        assert_eq!(
            resp.header.unwrap().error.unwrap().r#type,
            ErrorType::EntryNotFound as i32
        );
    }

    #[test]
    fn creating_a_keyspace_presplits_its_bounds() {
        let mut cluster = Cluster::new(ClusterConfig::default()).unwrap();
        let meta = cluster
            .create_keyspace("ks1", &KeyspaceOptions::default(), 5_000)
            .unwrap();
        assert_eq!(
            meta.keyspace,
            Some(keyspacepb::keyspace_meta::Keyspace::Id(1))
        );
        assert_eq!(meta.created_at, 5);
        let starts: Vec<Bytes> = cluster.regions().map(|r| r.start_key.clone()).collect();
        let mut expected = vec![Bytes::new()];
        expected.extend(keyspace_bounds(1).unwrap());
        assert_eq!(starts, expected);

        // A second keyspace shares the first one's upper bounds: only two new splits.
        cluster
            .create_keyspace("ks2", &KeyspaceOptions::default(), 5_000)
            .unwrap();
        assert_eq!(cluster.region_count(), 7);
        assert_eq!(load(&cluster, "ks2").keyspace.unwrap().name, "ks2");

        let by_id = cluster
            .handle_load_keyspace_by_id(&keyspacepb::LoadKeyspaceByIdRequest {
                header: header(&cluster),
                keyspace: Some(keyspacepb::load_keyspace_by_id_request::Keyspace::Id(1)),
            })
            .unwrap();
        assert_eq!(by_id.keyspace.unwrap().name, "ks1");

        let all = cluster
            .handle_get_all_keyspaces(&keyspacepb::GetAllKeyspacesRequest {
                header: header(&cluster),
                start_keyspace: Some(
                    keyspacepb::get_all_keyspaces_request::StartKeyspace::StartId(1),
                ),
                limit: 1,
                namespace: None,
            })
            .unwrap();
        assert_eq!(all.keyspaces.len(), 1);
        assert_eq!(all.keyspaces[0].name, "ks1");
    }

    #[test]
    fn presplit_default_keyspace_at_bootstrap() {
        let cluster = Cluster::new(ClusterConfig {
            presplit_default_keyspace: true,
            ..ClusterConfig::default()
        })
        .unwrap();
        assert_eq!(cluster.region_count(), 5);
        let raw_start = &keyspace_bounds(0).unwrap()[0];
        assert_eq!(&raw_start[..], &[b'r', 0, 0, 0, 0, 0, 0, 0, 0xFB]);
        assert!(cluster.regions().any(|r| r.start_key == *raw_start));
    }

    #[test]
    fn keyspace_errors() {
        let mut cluster = Cluster::new(ClusterConfig::default()).unwrap();
        let options = KeyspaceOptions::default();
        for bad in ["", "DEFAULT", "has space", "abcdefghijklmnopqrstu"] {
            assert_eq!(
                cluster.create_keyspace(bad, &options, 0),
                Err(KeyspaceError::IllegalName(bad.to_owned()).into())
            );
        }
        cluster.create_keyspace("a-b_c", &options, 0).unwrap();
        assert_eq!(
            cluster.create_keyspace("a-b_c", &options, 0),
            Err(KeyspaceError::Exists("a-b_c".to_owned()).into())
        );
        assert_eq!(
            cluster.set_keyspace_state(9, KeyspaceState::Disabled, 0),
            Err(KeyspaceError::NotFound(9).into())
        );
        cluster
            .set_keyspace_state(1, KeyspaceState::Disabled, 0)
            .unwrap();
        assert_eq!(
            cluster.keyspace(1).unwrap().state,
            KeyspaceState::Disabled as i32
        );
    }
}
