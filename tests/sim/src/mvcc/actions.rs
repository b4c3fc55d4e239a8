//! Per-key actions shared by several commands: commit, rollback, cleanup, missing-lock checks.

use bytes::Bytes;

use super::error::TxnError;
use super::store::{CommitRecord, Lock, MvccStore, SharedLocks, Write, WriteType};

/// The outcome of a status check on a transaction's primary key.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum TxnStatus {
    /// A rollback record exists.
    RolledBack,
    /// The lock's TTL ran out and it was rolled back now.
    TtlExpire,
    /// No lock and no record: a rollback record was written now.
    LockNotExist,
    /// Committed at the given ts.
    Committed(u64),
    /// Still locked; `min_commit_ts_pushed` says the reader may ignore it.
    Uncommitted {
        lock: Lock,
        min_commit_ts_pushed: bool,
    },
    /// An expired pessimistic primary lock was removed without a rollback record.
    PessimisticRollBack,
    /// Nothing found and nothing done (resolving a pessimistic lock).
    LockNotExistDoNothing,
}

/// What to do when the transaction's lock is not on the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MissingLockAction {
    /// Write an unprotected rollback (and collapse the previous one).
    Rollback,
    /// Write a protected rollback.
    ProtectedRollback,
    /// Report TxnNotFound.
    ReturnError,
}

impl MissingLockAction {
    pub(super) fn rollback_protect(protect: bool) -> Self {
        if protect {
            Self::ProtectedRollback
        } else {
            Self::Rollback
        }
    }

    pub(super) fn rollback(rollback_if_not_exist: bool) -> Self {
        if rollback_if_not_exist {
            Self::ProtectedRollback
        } else {
            Self::ReturnError
        }
    }
}

impl MvccStore {
    /// Commits the transaction `start_ts` on `key` at `commit_ts`.
    pub(super) fn commit_key(
        &mut self,
        key: &Bytes,
        start_ts: u64,
        commit_ts: u64,
    ) -> Result<(), TxnError> {
        let lock = match self.load_lock(key) {
            Some(lock) if lock.start_ts == start_ts => lock.clone(),
            Some(_) => return self.commit_lock_not_found(key, start_ts, commit_ts),
            None => match self.load_shared_locks(key).cloned() {
                Some(shared) if shared.locks.contains_key(&start_ts) => {
                    return self.commit_shared_key(key, shared, start_ts, commit_ts);
                }
                _ => return self.commit_lock_not_found(key, start_ts, commit_ts),
            },
        };
        if commit_ts < lock.min_commit_ts {
            return Err(TxnError::CommitTsExpired {
                start_ts,
                commit_ts,
                key: key.clone(),
                min_commit_ts: lock.min_commit_ts,
            });
        }
        if lock.is_pessimistic() {
            // A stale pessimistic lock of a key the transaction did not write: just drop it.
            self.unlock_key(key, 0);
            return Ok(());
        }
        let write_type = match lock.lock_type {
            super::store::LockType::Put => WriteType::Put,
            super::store::LockType::Delete => WriteType::Delete,
            _ => WriteType::Lock,
        };
        let mut write = Write::new(write_type, start_ts, lock.value.clone());
        write.has_overlapped_rollback = lock.rollback_ts.contains(&commit_ts);
        self.put_write(key, commit_ts, write);
        self.unlock_key(key, commit_ts);
        Ok(())
    }

    /// Commits the transaction's sub-lock of the key's shared locks (TiKV's `commit` on a
    /// `SharedLocks` value): a prewritten sub-lock leaves a Lock record, a stale pessimistic
    /// one is just dropped; the other holders keep theirs.
    fn commit_shared_key(
        &mut self,
        key: &Bytes,
        mut shared: SharedLocks,
        start_ts: u64,
        commit_ts: u64,
    ) -> Result<(), TxnError> {
        let Some(lock) = shared.locks.remove(&start_ts) else {
            return self.commit_lock_not_found(key, start_ts, commit_ts);
        };
        if commit_ts < lock.min_commit_ts {
            return Err(TxnError::CommitTsExpired {
                start_ts,
                commit_ts,
                key: key.clone(),
                min_commit_ts: lock.min_commit_ts,
            });
        }
        if lock.is_pessimistic() {
            self.write_back_shared_locks(key, shared, start_ts, 0);
            return Ok(());
        }
        let mut write = Write::new(WriteType::Lock, start_ts, None);
        write.has_overlapped_rollback = lock.rollback_ts.contains(&commit_ts);
        self.put_write(key, commit_ts, write);
        self.write_back_shared_locks(key, shared, start_ts, commit_ts);
        Ok(())
    }

    fn commit_lock_not_found(
        &self,
        key: &Bytes,
        start_ts: u64,
        commit_ts: u64,
    ) -> Result<(), TxnError> {
        match self.txn_commit_record(key, start_ts) {
            CommitRecord::Single { write, .. } if write.write_type != WriteType::Rollback => Ok(()),
            _ => Err(TxnError::TxnLockNotFound {
                start_ts,
                commit_ts,
                key: key.clone(),
            }),
        }
    }

    /// Rolls back the transaction `start_ts` on `key`; `current_ts` ≠ 0 refuses live locks.
    pub(super) fn cleanup_key(
        &mut self,
        key: &Bytes,
        start_ts: u64,
        current_ts: u64,
        protect_rollback: bool,
    ) -> Result<(), TxnError> {
        let shared = self
            .load_shared_locks(key)
            .filter(|shared| shared.locks.contains_key(&start_ts))
            .cloned();
        if let Some(shared) = shared {
            let expired = shared
                .locks
                .get(&start_ts)
                .is_some_and(|lock| lock.is_expired(current_ts));
            if current_ts != 0 && !expired {
                return Err(TxnError::KeyIsLocked(Box::new(shared.lock_info(key))));
            }
            return self.rollback_shared_lock(key, shared, start_ts, !protect_rollback);
        }
        match self.load_lock(key).cloned() {
            Some(lock) if lock.start_ts == start_ts => {
                if current_ts != 0 && !lock.is_expired(current_ts) {
                    return Err(TxnError::KeyIsLocked(Box::new(lock.lock_info(key))));
                }
                self.rollback_lock(key, &lock, !protect_rollback)
            }
            other => {
                let action = MissingLockAction::rollback_protect(protect_rollback);
                match self.check_txn_status_missing_lock(key, start_ts, other, action, false)? {
                    TxnStatus::Committed(commit_ts) => Err(TxnError::Committed {
                        start_ts,
                        commit_ts,
                        key: key.clone(),
                    }),
                    _ => Ok(()),
                }
            }
        }
    }

    /// Removes `lock` from `key` and leaves a rollback record.
    pub(super) fn rollback_lock(
        &mut self,
        key: &Bytes,
        lock: &Lock,
        collapse_rollback: bool,
    ) -> Result<(), TxnError> {
        let overlapped = match self.txn_commit_record(key, lock.start_ts) {
            CommitRecord::None { overlapped } => overlapped,
            CommitRecord::Single { write, commit_ts }
                if write.write_type != WriteType::Rollback =>
            {
                // TiKV treats this as a corrupted store; report it instead of crashing.
                return Err(TxnError::BadRequest(format!(
                    "txn {} holds a lock on {key:?} but is committed at {commit_ts}",
                    lock.start_ts
                )));
            }
            _ => {
                self.unlock_key(key, 0);
                return Ok(());
            }
        };
        let protected = key == &lock.primary || lock.generation > 0;
        let rollback = make_rollback(lock.start_ts, protected, overlapped);
        if collapse_rollback {
            self.collapse_prev_rollback(key, lock.start_ts);
        }
        if let Some(write) = rollback {
            self.put_write(key, lock.start_ts, write);
        }
        self.unlock_key(key, 0);
        Ok(())
    }

    /// Removes the transaction's sub-lock from the key's shared locks and leaves a rollback
    /// record (TiKV's `rollback_shared_lock`). The record is never protected: a shared lock
    /// is never a transaction's primary.
    pub(super) fn rollback_shared_lock(
        &mut self,
        key: &Bytes,
        mut shared: SharedLocks,
        start_ts: u64,
        collapse_rollback: bool,
    ) -> Result<(), TxnError> {
        if shared.locks.remove(&start_ts).is_none() {
            return Ok(());
        }
        let overlapped = match self.txn_commit_record(key, start_ts) {
            CommitRecord::None { overlapped } => overlapped,
            CommitRecord::Single { write, commit_ts }
                if write.write_type != WriteType::Rollback =>
            {
                return Err(TxnError::BadRequest(format!(
                    "txn {start_ts} holds a shared lock on {key:?} but is committed at \
                     {commit_ts}"
                )));
            }
            _ => {
                self.write_back_shared_locks(key, shared, start_ts, 0);
                return Ok(());
            }
        };
        if collapse_rollback {
            self.collapse_prev_rollback(key, start_ts);
        }
        if let Some(write) = make_rollback(start_ts, false, overlapped) {
            self.put_write(key, start_ts, write);
        }
        self.write_back_shared_locks(key, shared, start_ts, 0);
        Ok(())
    }

    /// Decides the status of a transaction whose lock is not on `key`, rolling back if asked.
    pub(super) fn check_txn_status_missing_lock(
        &mut self,
        key: &Bytes,
        start_ts: u64,
        mismatch_lock: Option<Lock>,
        action: MissingLockAction,
        resolving_pessimistic_lock: bool,
    ) -> Result<TxnStatus, TxnError> {
        match self.txn_commit_record(key, start_ts) {
            CommitRecord::Single { commit_ts, write } => {
                if write.write_type == WriteType::Rollback {
                    Ok(TxnStatus::RolledBack)
                } else {
                    Ok(TxnStatus::Committed(commit_ts))
                }
            }
            CommitRecord::OverlappedRollback => Ok(TxnStatus::RolledBack),
            CommitRecord::None { overlapped } => {
                if action == MissingLockAction::ReturnError {
                    return Err(TxnError::TxnNotFound {
                        start_ts,
                        key: key.clone(),
                    });
                }
                if resolving_pessimistic_lock {
                    return Ok(TxnStatus::LockNotExistDoNothing);
                }
                let protected = action == MissingLockAction::ProtectedRollback;
                if !protected {
                    self.collapse_prev_rollback(key, start_ts);
                }
                if let (Some(lock), None) = (mismatch_lock, overlapped.as_ref()) {
                    self.mark_rollback_on_mismatching_lock(key, start_ts, lock, protected);
                }
                if let Some(write) = make_rollback(start_ts, protected, overlapped) {
                    self.put_write(key, start_ts, write);
                }
                Ok(TxnStatus::LockNotExist)
            }
        }
    }

    /// Deletes the newest record at or below `ts` if it is an unprotected rollback.
    pub(super) fn collapse_prev_rollback(&mut self, key: &Bytes, ts: u64) {
        let collapsible = match self.seek_write(key, ts) {
            Some((commit_ts, write))
                if write.write_type == WriteType::Rollback && !write.protected =>
            {
                Some(commit_ts)
            }
            _ => None,
        };
        if let Some(commit_ts) = collapsible {
            self.delete_write(key, commit_ts);
        }
    }

    /// Records on another transaction's async-commit lock that `start_ts` was rolled back,
    /// so that committing that lock at `start_ts` keeps the rollback visible.
    pub(super) fn mark_rollback_on_mismatching_lock(
        &mut self,
        key: &Bytes,
        start_ts: u64,
        mut lock: Lock,
        protected: bool,
    ) {
        if !protected || start_ts < lock.min_commit_ts || !lock.use_async_commit {
            return;
        }
        lock.rollback_ts.push(start_ts);
        self.put_lock(key, lock);
    }
}

/// The rollback record to write for `start_ts`, or the overlapped commit carrying the mark.
pub(super) fn make_rollback(
    start_ts: u64,
    protected: bool,
    overlapped: Option<Write>,
) -> Option<Write> {
    match overlapped {
        Some(mut write) => {
            if protected {
                write.has_overlapped_rollback = true;
                Some(write)
            } else {
                None
            }
        }
        None => Some(Write::rollback(start_ts, protected)),
    }
}
