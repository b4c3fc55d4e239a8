//! PD's embedded etcd, as far as clients use it: the KV service (`Range`, `Put`,
//! `DeleteRange`) on PD's client port.
//!
//! TiDB keeps metadata in PD's etcd, and client-go's `KVStore` reads TiDB's saved GC safe
//! point (`/tidb/store/gcworker/saved_safe_point`) from it every 10 s; without an answer it
//! fails every snapshot read after about 100 s ("start timestamp may fall behind safe
//! point"). The store follows etcd's MVCC store (`mvcc.store`, served through
//! `applierV3backend.Range` / `Put` / `DeleteRange`): one revision counter for the whole key
//! space that every write moves by one, a create revision, mod revision and version per
//! key, and reads at any past revision (nothing is compacted here). Leases, transactions,
//! watches and compaction are not modelled.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use tikv_proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    ResponseHeader, range_request,
};
use tikv_proto::mvccpb::KeyValue;
use tikv_proto::status::{Code, Status};

use super::Cluster;

/// An etcd request refused, with etcd's gRPC status and message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// A put without a key (`ErrGRPCEmptyKey`).
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value` or `ignore_lease` on a key that does not exist (`ErrGRPCKeyNotFound`).
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `ignore_value` with a value (`ErrGRPCValueProvided`).
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` with a lease (`ErrGRPCLeaseProvided`).
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A lease id: no lease exists here (`ErrGRPCLeaseNotFound`).
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A read at a revision the store has not reached (`ErrGRPCFutureRev`).
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
}

impl EtcdError {
    /// The gRPC status etcd answers with.
    pub fn to_status(&self) -> Status {
        let code = match self {
            Self::LeaseNotFound => Code::NotFound,
            Self::FutureRevision => Code::OutOfRange,
            _ => Code::InvalidArgument,
        };
        Status::new(code, self.to_string())
    }
}

/// One change of a key: its state from `revision` on (`None`: deleted).
#[derive(Clone, Debug, PartialEq)]
struct Change {
    revision: i64,
    kv: Option<KeyValue>,
}

/// The key space with its whole history.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct EtcdKv {
    /// The store revision: 1 for an empty store, as etcd starts.
    revision: i64,
    /// Every key's changes, oldest first.
    keys: BTreeMap<Bytes, Vec<Change>>,
}

impl Default for EtcdKv {
    fn default() -> Self {
        Self {
            revision: 1,
            keys: BTreeMap::new(),
        }
    }
}

/// The keys a request's `key` and `range_end` name, as etcd reads them: an empty end names
/// the key alone, an end of "\0" every key from `key` on (from the first key when `key` is
/// "\0" too).
fn bounds(key: &Bytes, range_end: &Bytes) -> (Bound<Bytes>, Bound<Bytes>) {
    if range_end.is_empty() {
        return (Bound::Included(key.clone()), Bound::Included(key.clone()));
    }
    let start = if key[..] == [0] && range_end[..] == [0] {
        Bound::Unbounded
    } else {
        Bound::Included(key.clone())
    };
    let end = if range_end[..] == [0] {
        Bound::Unbounded
    } else {
        Bound::Excluded(range_end.clone())
    };
    (start, end)
}

/// Whether `start..end` is a range a BTreeMap accepts (start not past end).
fn is_ordered(start: &Bound<Bytes>, end: &Bound<Bytes>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s <= e,
        (Bound::Included(s), Bound::Excluded(e)) => s < e,
        _ => true,
    }
}

impl EtcdKv {
    /// The live pairs of the range as of `revision`.
    fn pairs_at(&self, key: &Bytes, range_end: &Bytes, revision: i64) -> Vec<KeyValue> {
        let (start, end) = bounds(key, range_end);
        if !is_ordered(&start, &end) {
            return Vec::new();
        }
        self.keys
            .range((start, end))
            .filter_map(|(_, changes)| {
                changes
                    .iter()
                    .rev()
                    .find(|change| change.revision <= revision)
                    .and_then(|change| change.kv.clone())
            })
            .collect()
    }

    fn latest(&self, key: &Bytes) -> Option<&KeyValue> {
        self.keys
            .get(key)
            .and_then(|changes| changes.last())
            .and_then(|change| change.kv.as_ref())
    }
}

impl Cluster {
    fn etcd_header(&self) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id(),
            member_id: self.pd.leader.unwrap_or_default(),
            revision: self.etcd.revision,
            raft_term: 1,
        }
    }

    /// etcd's `Range`: the pairs of a key range at a revision, filtered, sorted and limited
    /// as `applierV3backend.Range` does (`count` counts every match before the limit).
    ///
    /// Errors with [`EtcdError::FutureRevision`] for a revision past the store's.
    pub fn handle_etcd_range(&self, req: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        let revision = if req.revision <= 0 {
            self.etcd.revision
        } else if req.revision > self.etcd.revision {
            return Err(EtcdError::FutureRevision);
        } else {
            req.revision
        };
        let mut pairs: Vec<KeyValue> = self
            .etcd
            .pairs_at(&req.key, &req.range_end, revision)
            .into_iter()
            .filter(|kv| {
                (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                    && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                    && (req.min_create_revision == 0
                        || kv.create_revision >= req.min_create_revision)
                    && (req.max_create_revision == 0
                        || kv.create_revision <= req.max_create_revision)
            })
            .collect();
        let count = pairs.len() as i64;
        let order = range_request::SortOrder::try_from(req.sort_order)
            .unwrap_or(range_request::SortOrder::None);
        let target = range_request::SortTarget::try_from(req.sort_target)
            .unwrap_or(range_request::SortTarget::Key);
        // etcd reads in key order; NONE with a non-key target still sorts ascending.
        let order = match (order, target) {
            (range_request::SortOrder::None, range_request::SortTarget::Key) => order,
            (range_request::SortOrder::None, _) => range_request::SortOrder::Ascend,
            _ => order,
        };
        if order != range_request::SortOrder::None {
            // Stable sorts: pairs equal on the target stay in key order.
            match target {
                range_request::SortTarget::Key => {}
                range_request::SortTarget::Version => pairs.sort_by_key(|kv| kv.version),
                range_request::SortTarget::Create => pairs.sort_by_key(|kv| kv.create_revision),
                range_request::SortTarget::Mod => pairs.sort_by_key(|kv| kv.mod_revision),
                range_request::SortTarget::Value => {
                    pairs.sort_by(|a, b| a.value.cmp(&b.value));
                }
            }
            if order == range_request::SortOrder::Descend {
                pairs.reverse();
            }
        }
        let mut more = false;
        if req.limit > 0 && pairs.len() as i64 > req.limit {
            pairs.truncate(req.limit as usize);
            more = true;
        }
        if req.count_only {
            pairs.clear();
        } else if req.keys_only {
            for kv in &mut pairs {
                kv.value = Bytes::new();
            }
        }
        Ok(RangeResponse {
            header: Some(self.etcd_header()),
            kvs: pairs,
            more,
            count,
        })
    }

    /// etcd's `Put`: writes one key at the next revision (the version grows by one; a new
    /// key gets the revision as its create revision), as `applierV3backend.Put` does.
    ///
    /// Errors with [`EtcdError::EmptyKey`], [`EtcdError::LeaseNotFound`] for any lease (no
    /// lease exists), and for `ignore_value` / `ignore_lease` misuse as etcd does.
    pub fn handle_etcd_put(&mut self, req: &PutRequest) -> Result<PutResponse, EtcdError> {
        if req.key.is_empty() {
            return Err(EtcdError::EmptyKey);
        }
        if req.ignore_value && !req.value.is_empty() {
            return Err(EtcdError::ValueProvided);
        }
        if req.ignore_lease && req.lease != 0 {
            return Err(EtcdError::LeaseProvided);
        }
        let previous = self.etcd.latest(&req.key).cloned();
        if (req.ignore_value || req.ignore_lease) && previous.is_none() {
            return Err(EtcdError::KeyNotFound);
        }
        if req.lease != 0 {
            return Err(EtcdError::LeaseNotFound);
        }
        self.etcd.revision += 1;
        let revision = self.etcd.revision;
        let value = match (&previous, req.ignore_value) {
            (Some(previous), true) => previous.value.clone(),
            _ => req.value.clone(),
        };
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: previous.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: previous.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease: 0,
        };
        self.etcd
            .keys
            .entry(req.key.clone())
            .or_default()
            .push(Change {
                revision,
                kv: Some(kv),
            });
        Ok(PutResponse {
            header: Some(self.etcd_header()),
            prev_kv: previous.filter(|_| req.prev_kv),
        })
    }

    /// etcd's `DeleteRange`: deletes the live keys of the range at one new revision (none
    /// deleted: the revision stays), as `applierV3backend.DeleteRange` does.
    pub fn handle_etcd_delete_range(&mut self, req: &DeleteRangeRequest) -> DeleteRangeResponse {
        let deleted = self
            .etcd
            .pairs_at(&req.key, &req.range_end, self.etcd.revision);
        if !deleted.is_empty() {
            self.etcd.revision += 1;
            let revision = self.etcd.revision;
            for kv in &deleted {
                self.etcd
                    .keys
                    .entry(kv.key.clone())
                    .or_default()
                    .push(Change { revision, kv: None });
            }
        }
        DeleteRangeResponse {
            header: Some(self.etcd_header()),
            deleted: deleted.len() as i64,
            prev_kvs: if req.prev_kv { deleted } else { Vec::new() },
        }
    }
}

#[cfg(test)]
#[path = "etcd_tests.rs"]
mod tests;
