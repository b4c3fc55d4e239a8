//! Commit, BatchRollback and Cleanup.

use tikv_proto::kvrpcpb;

use super::error::TxnError;
use super::store::MvccStore;

impl MvccStore {
    /// KvCommit: commits `keys` of `start_version` at `commit_version`.
    ///
    /// Returns `commit_version` on success; `error` holds CommitTsExpired, TxnLockNotFound
    /// (with `retryable`), or an `abort` text for `commit_version <= start_version`. Keys
    /// already committed by the transaction succeed again. A success feeds the transaction
    /// status cache.
    pub fn commit(&mut self, req: &kvrpcpb::CommitRequest) -> kvrpcpb::CommitResponse {
        let (start_ts, commit_ts) = (req.start_version, req.commit_version);
        let result = self.atomically(|store| {
            if commit_ts <= start_ts {
                return Err(TxnError::InvalidTxnTso {
                    start_ts,
                    commit_ts,
                });
            }
            for key in &req.keys {
                store.commit_key(key, start_ts, commit_ts)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                // As TiKV's scheduler: a successful commit is a known transaction status.
                self.txn_status.insert_committed(start_ts, commit_ts);
                kvrpcpb::CommitResponse {
                    commit_version: commit_ts,
                    ..Default::default()
                }
            }
            Err(e) => kvrpcpb::CommitResponse {
                error: Some(Box::new(e.to_key_error())),
                ..Default::default()
            },
        }
    }

    /// KvBatchRollback: rolls back `keys` of `start_version`.
    ///
    /// Writes rollback records (protected on the primary); a key already committed by the
    /// transaction fails the whole request with an `abort` error.
    pub fn batch_rollback(
        &mut self,
        req: &kvrpcpb::BatchRollbackRequest,
    ) -> kvrpcpb::BatchRollbackResponse {
        let start_ts = req.start_version;
        let result = self.atomically(|store| {
            for key in &req.keys {
                store.cleanup_key(key, start_ts, 0, false)?;
            }
            Ok::<_, TxnError>(())
        });
        kvrpcpb::BatchRollbackResponse {
            error: result.err().map(|e| Box::new(e.to_key_error())),
            ..Default::default()
        }
    }

    /// KvCleanup: rolls back the transaction `start_version` on `key` (protected rollback).
    ///
    /// With `current_ts` ≠ 0 a lock whose TTL has not expired yields KeyIsLocked. If the
    /// transaction is committed, returns its `commit_version` instead of an error.
    pub fn cleanup(&mut self, req: &kvrpcpb::CleanupRequest) -> kvrpcpb::CleanupResponse {
        self.update_max_ts(req.start_version);
        let result = self.atomically(|store| {
            store.cleanup_key(&req.key, req.start_version, req.current_ts, true)
        });
        match result {
            Ok(()) => kvrpcpb::CleanupResponse::default(),
            Err(TxnError::Committed { commit_ts, .. }) => kvrpcpb::CleanupResponse {
                commit_version: commit_ts,
                ..Default::default()
            },
            Err(e) => kvrpcpb::CleanupResponse {
                error: Some(Box::new(e.to_key_error())),
                ..Default::default()
            },
        }
    }
}
