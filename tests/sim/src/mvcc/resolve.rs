//! ResolveLock (batch, single transaction, "lite" with keys), GC, DeleteRange and
//! BroadcastTxnStatus.

use std::collections::BTreeMap;

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use super::error::TxnError;
use super::store::{MvccStore, WriteType};
use super::txn_status::TxnState;

impl MvccStore {
    /// KvResolveLock: commits or rolls back the locks of finished transactions.
    ///
    /// `txn_infos` maps start ts to commit ts (0 = roll back) and is used when
    /// `start_version` is 0; otherwise the single pair (`start_version`, `commit_version`)
    /// applies. With `keys` only those keys are resolved ("lite"); without, every lock of
    /// those transactions in the store (sub-locks of shared locks included). A commit ts not
    /// above its start ts is an `abort`. A "lite" commit feeds the transaction status cache.
    pub fn resolve_lock(
        &mut self,
        req: &kvrpcpb::ResolveLockRequest,
    ) -> kvrpcpb::ResolveLockResponse {
        self.resolve_lock_in_range(req, &[], &[])
    }

    /// KvResolveLock as a region serves it: like [`MvccStore::resolve_lock`], but without
    /// `keys` only the locks in `[start, end)` (empty end = unbounded) are resolved, as
    /// TiKV's `ResolveLockReadPhase` scans only the region's snapshot.
    pub fn resolve_lock_in_range(
        &mut self,
        req: &kvrpcpb::ResolveLockRequest,
        start: &[u8],
        end: &[u8],
    ) -> kvrpcpb::ResolveLockResponse {
        let result = self.atomically(|store| {
            if !req.keys.is_empty() {
                return store.resolve_lock_lite(req);
            }
            let txn_status: BTreeMap<u64, u64> = if req.start_version > 0 {
                BTreeMap::from([(req.start_version, req.commit_version)])
            } else {
                req.txn_infos
                    .iter()
                    .map(|info| (info.txn, info.status))
                    .collect()
            };
            let mut locks: Vec<(Bytes, u64, bool)> = store
                .locks_in_range(start, end)
                .filter(|(_, lock)| txn_status.contains_key(&lock.start_ts))
                .map(|(key, lock)| (key.clone(), lock.start_ts, lock.is_pessimistic()))
                .collect();
            // Shared locks count once per matching holder, as TiKV's read phase flattens them.
            for (key, shared) in &store.shared_locks {
                if !super::store::key_in_range(key, start, end) {
                    continue;
                }
                for (start_ts, lock) in &shared.locks {
                    if txn_status.contains_key(start_ts) {
                        locks.push((key.clone(), *start_ts, lock.is_pessimistic()));
                    }
                }
            }
            locks.sort();
            for (key, start_ts, pessimistic) in locks {
                let commit_ts = txn_status.get(&start_ts).copied().unwrap_or_default();
                if commit_ts == 0 {
                    store.cleanup_key(&key, start_ts, 0, false)?;
                } else if commit_ts > start_ts {
                    match store.commit_key(&key, start_ts, commit_ts) {
                        Err(TxnError::TxnLockNotFound { .. }) if pessimistic => {}
                        other => other?,
                    }
                } else {
                    return Err(TxnError::InvalidTxnTso {
                        start_ts,
                        commit_ts,
                    });
                }
            }
            Ok(())
        });
        if result.is_ok() && !req.keys.is_empty() && req.commit_version != 0 {
            // TiKV's ResolveLockLite reports a commit as a known transaction status.
            self.txn_status
                .insert_committed(req.start_version, req.commit_version);
        }
        kvrpcpb::ResolveLockResponse {
            error: result.err().map(|e| Box::new(e.to_key_error())),
            ..Default::default()
        }
    }

    /// Destroys every version and lock of keys in `[start_key, end_key)` (empty end =
    /// unbounded); `notify_only` does nothing. Returns an empty `error` string.
    pub fn delete_range(
        &mut self,
        req: &kvrpcpb::DeleteRangeRequest,
    ) -> kvrpcpb::DeleteRangeResponse {
        if !req.notify_only {
            let end = (!req.end_key.is_empty()).then_some(&req.end_key[..]);
            for key in self.keys_in_range(Some(&req.start_key[..]), end, false) {
                self.locks.remove(&key);
                self.writes.remove(&key);
            }
            self.shared_locks
                .retain(|key, _| key < &req.start_key || end.is_some_and(|end| &key[..] >= end));
        }
        kvrpcpb::DeleteRangeResponse::default()
    }

    /// Drops versions no snapshot at or above `safe_point` can see.
    ///
    /// Per key, the newest Put at or below the safe point survives; everything older goes,
    /// as do Lock/Rollback records at or below it and a Delete that is the newest data
    /// version there. Locks and versions above the safe point are untouched.
    pub fn gc(&mut self, safe_point: u64) {
        let keys: Vec<Bytes> = self.writes.keys().cloned().collect();
        for key in keys {
            let Some(versions) = self.writes.get_mut(&key) else {
                continue;
            };
            let mut doomed = Vec::new();
            let mut remove_all = false;
            for (commit_ts, write) in versions.range(..=safe_point).rev() {
                if remove_all {
                    doomed.push(*commit_ts);
                    continue;
                }
                match write.write_type {
                    WriteType::Put => remove_all = true,
                    WriteType::Delete => {
                        doomed.push(*commit_ts);
                        remove_all = true;
                    }
                    WriteType::Lock | WriteType::Rollback => doomed.push(*commit_ts),
                }
            }
            for commit_ts in doomed {
                versions.remove(&commit_ts);
            }
            if versions.is_empty() {
                self.writes.remove(&key);
            }
        }
    }

    /// KvBroadcastTxnStatus: records each transaction's status in the transaction status
    /// cache (TiKV's `update_txn_status_cache`). Always answers an empty response.
    pub fn broadcast_txn_status(
        &mut self,
        req: &kvrpcpb::BroadcastTxnStatusRequest,
    ) -> kvrpcpb::BroadcastTxnStatusResponse {
        self.txn_status.apply_broadcast(req);
        kvrpcpb::BroadcastTxnStatusResponse {}
    }

    /// What the transaction status cache knows about the transaction `start_ts`.
    pub fn cached_txn_status(&self, start_ts: u64) -> Option<TxnState> {
        self.txn_status.get(start_ts)
    }

    fn resolve_lock_lite(&mut self, req: &kvrpcpb::ResolveLockRequest) -> Result<(), TxnError> {
        let (start_ts, commit_ts) = (req.start_version, req.commit_version);
        if start_ts == 0 {
            return Err(TxnError::BadRequest(
                "resolving keys needs start_version".to_owned(),
            ));
        }
        if commit_ts != 0 && commit_ts <= start_ts {
            return Err(TxnError::InvalidTxnTso {
                start_ts,
                commit_ts,
            });
        }
        for key in &req.keys {
            if commit_ts == 0 {
                self.cleanup_key(key, start_ts, 0, false)?;
            } else {
                self.commit_key(key, start_ts, commit_ts)?;
            }
        }
        Ok(())
    }
}
