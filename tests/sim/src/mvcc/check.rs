//! CheckTxnStatus, CheckSecondaryLocks and TxnHeartBeat.

use bytes::Bytes;
use tikv_proto::kvrpcpb::{self, Action};

use super::actions::{MissingLockAction, TxnStatus, make_rollback};
use super::error::TxnError;
use super::store::{CommitRecord, Lock, MvccStore, Write, WriteType};

impl MvccStore {
    /// KvCheckTxnStatus: decides the fate of the transaction `lock_ts` from its primary.
    ///
    /// An expired lock (physical ms of `lock_ts` + TTL < physical ms of `current_ts`) is
    /// rolled back; a live one may get its `min_commit_ts` pushed past `caller_start_ts`.
    /// Returns `commit_version`, or `lock_ttl` + `lock_info`, and the `action` taken;
    /// `error` holds TxnNotFound (no `rollback_if_not_exist`) or PrimaryMismatch (also for a
    /// shared-locked key, which is never a primary). Raises `max_ts` to the largest of
    /// `lock_ts`, `caller_start_ts` and `current_ts`; a committed answer feeds the
    /// transaction status cache.
    pub fn check_txn_status(
        &mut self,
        req: &kvrpcpb::CheckTxnStatusRequest,
    ) -> kvrpcpb::CheckTxnStatusResponse {
        self.update_max_ts(req.lock_ts);
        self.update_max_ts(req.current_ts);
        self.update_max_ts(req.caller_start_ts);
        let result = self.atomically(|store| {
            let key = &req.primary_key;
            if let Some(shared) = store.load_shared_locks(key) {
                // A shared-locked key is never a transaction's primary.
                return Err(TxnError::PrimaryMismatch(Box::new(shared.lock_info(key))));
            }
            match store.load_lock(key).cloned() {
                Some(lock) if lock.start_ts == req.lock_ts => store.check_lock_exists(req, lock),
                other => store.check_txn_status_missing_lock(
                    key,
                    req.lock_ts,
                    other,
                    MissingLockAction::rollback(req.rollback_if_not_exist),
                    req.resolving_pessimistic_lock,
                ),
            }
        });
        let mut resp = kvrpcpb::CheckTxnStatusResponse::default();
        match result {
            Ok(TxnStatus::RolledBack) => resp.action = Action::NoAction as i32,
            Ok(TxnStatus::TtlExpire) => resp.action = Action::TtlExpireRollback as i32,
            Ok(TxnStatus::LockNotExist) => resp.action = Action::LockNotExistRollback as i32,
            Ok(TxnStatus::Committed(commit_ts)) => {
                self.txn_status.insert_committed(req.lock_ts, commit_ts);
                resp.commit_version = commit_ts;
            }
            Ok(TxnStatus::Uncommitted {
                lock,
                min_commit_ts_pushed,
            }) => {
                if min_commit_ts_pushed {
                    resp.action = Action::MinCommitTsPushed as i32;
                }
                resp.lock_ttl = lock.ttl;
                resp.lock_info = Some(Box::new(lock.lock_info(&lock.primary)));
            }
            Ok(TxnStatus::PessimisticRollBack) => {
                resp.action = Action::TtlExpirePessimisticRollback as i32;
            }
            Ok(TxnStatus::LockNotExistDoNothing) => {
                resp.action = Action::LockNotExistDoNothing as i32;
            }
            Err(e) => resp.error = Some(Box::new(e.to_key_error())),
        }
        resp
    }

    /// KvCheckSecondaryLocks: checks the keys of an async-commit transaction.
    ///
    /// Returns the prewrite locks when all keys are locked; `commit_ts` when one key is
    /// committed; nothing when one is rolled back. A key without the transaction's lock or
    /// record gets a protected rollback; an own pessimistic lock is rolled back. A shared
    /// lock is judged by the write records alone (async-commit transactions take none).
    /// Raises `max_ts` to `start_version`; a committed answer feeds the transaction status
    /// cache.
    pub fn check_secondary_locks(
        &mut self,
        req: &kvrpcpb::CheckSecondaryLocksRequest,
    ) -> kvrpcpb::CheckSecondaryLocksResponse {
        self.update_max_ts(req.start_version);
        let start_ts = req.start_version;
        let result = self.atomically(|store| {
            let mut locks = Vec::new();
            for key in &req.keys {
                let mut mismatch = None;
                let (status, need_rollback, overlapped) = match store.load_lock(key).cloned() {
                    Some(lock) if lock.start_ts == start_ts => {
                        store.secondary_status_from_lock(key, lock)
                    }
                    other => {
                        mismatch = other;
                        store.determined_secondary_status(key, start_ts)
                    }
                };
                if need_rollback {
                    if let Some(lock) = mismatch {
                        store.mark_rollback_on_mismatching_lock(key, start_ts, lock, true);
                    }
                    if let Some(write) = make_rollback(start_ts, true, overlapped) {
                        store.collapse_prev_rollback(key, start_ts);
                        store.put_write(key, start_ts, write);
                    }
                }
                match status {
                    SecondaryStatus::Locked(lock) => locks.push(lock.lock_info(key)),
                    SecondaryStatus::Committed(commit_ts) => {
                        return Ok::<_, TxnError>(SecondaryOutcome::Committed(commit_ts));
                    }
                    SecondaryStatus::RolledBack => return Ok(SecondaryOutcome::RolledBack),
                }
            }
            Ok(SecondaryOutcome::Locked(locks))
        });
        let mut resp = kvrpcpb::CheckSecondaryLocksResponse::default();
        match result {
            Ok(SecondaryOutcome::Locked(locks)) => resp.locks = locks,
            Ok(SecondaryOutcome::Committed(commit_ts)) => {
                self.txn_status.insert_committed(start_ts, commit_ts);
                resp.commit_ts = commit_ts;
            }
            Ok(SecondaryOutcome::RolledBack) => {}
            Err(e) => resp.error = Some(Box::new(e.to_key_error())),
        }
        resp
    }

    /// KvTxnHeartBeat: extends the TTL of the primary lock to at least `advise_lock_ttl`.
    ///
    /// Pipelined transactions (generation > 0, not async commit) may also raise the lock's
    /// `min_commit_ts`. Returns the lock's TTL; TxnNotFound if the lock is gone,
    /// PrimaryMismatch if the transaction only holds a shared lock on the key.
    pub fn txn_heart_beat(
        &mut self,
        req: &kvrpcpb::TxnHeartBeatRequest,
    ) -> kvrpcpb::TxnHeartBeatResponse {
        let result = self.atomically(|store| {
            let key = &req.primary_lock;
            if let Some(shared) = store
                .load_shared_locks(key)
                .filter(|shared| shared.locks.contains_key(&req.start_version))
            {
                // Heartbeats go to primaries, and a shared-locked key is never one.
                return Err(TxnError::PrimaryMismatch(Box::new(shared.lock_info(key))));
            }
            let Some(mut lock) = store
                .load_lock(key)
                .filter(|lock| lock.start_ts == req.start_version)
                .cloned()
            else {
                return Err(TxnError::TxnNotFound {
                    start_ts: req.start_version,
                    key: key.clone(),
                });
            };
            let mut updated = false;
            if lock.ttl < req.advise_lock_ttl {
                lock.ttl = req.advise_lock_ttl;
                updated = true;
            }
            if !lock.use_async_commit
                && lock.generation > 0
                && req.min_commit_ts > 0
                && lock.min_commit_ts < req.min_commit_ts
            {
                lock.min_commit_ts = req.min_commit_ts;
                updated = true;
            }
            let ttl = lock.ttl;
            if updated {
                store.put_lock(key, lock);
            }
            Ok(ttl)
        });
        match result {
            Ok(lock_ttl) => kvrpcpb::TxnHeartBeatResponse {
                lock_ttl,
                ..Default::default()
            },
            Err(e) => kvrpcpb::TxnHeartBeatResponse {
                error: Some(Box::new(e.to_key_error())),
                ..Default::default()
            },
        }
    }

    fn check_lock_exists(
        &mut self,
        req: &kvrpcpb::CheckTxnStatusRequest,
        mut lock: Lock,
    ) -> Result<TxnStatus, TxnError> {
        let key = &req.primary_key;
        if req.verify_is_primary && key != &lock.primary {
            if !req.resolving_pessimistic_lock && lock.is_pessimistic() {
                // A stale pessimistic lock that only looks like a primary: drop it and judge
                // the transaction as if the lock were missing.
                let status = self.check_txn_status_missing_lock(
                    key,
                    req.lock_ts,
                    None,
                    MissingLockAction::rollback(req.rollback_if_not_exist),
                    req.resolving_pessimistic_lock,
                )?;
                self.unlock_key(key, 0);
                return Ok(status);
            }
            return Err(TxnError::PrimaryMismatch(Box::new(lock.lock_info(key))));
        }
        if lock.use_async_commit && !req.force_sync_commit {
            return Ok(TxnStatus::Uncommitted {
                lock,
                min_commit_ts_pushed: false,
            });
        }
        if lock.is_pessimistic() {
            if lock.is_locked_with_conflict {
                if let Some(status) = self.determined_status(key, req.lock_ts) {
                    self.unlock_key(key, 0);
                    return Ok(status);
                }
            }
            if lock.is_expired(req.current_ts) {
                if req.resolving_pessimistic_lock {
                    self.unlock_key(key, 0);
                    return Ok(TxnStatus::PessimisticRollBack);
                }
                self.rollback_lock(key, &lock, true)?;
                return Ok(TxnStatus::TtlExpire);
            }
        } else if lock.is_expired(req.current_ts) {
            self.rollback_lock(key, &lock, true)?;
            return Ok(TxnStatus::TtlExpire);
        }
        let caller_start_ts = req.caller_start_ts;
        if lock.min_commit_ts != 0
            && caller_start_ts != u64::MAX
            && caller_start_ts >= lock.min_commit_ts
        {
            lock.min_commit_ts = (caller_start_ts + 1).max(req.current_ts);
            self.put_lock(key, lock.clone());
        }
        let min_commit_ts_pushed = (caller_start_ts != 0 && lock.min_commit_ts > caller_start_ts)
            || caller_start_ts == u64::MAX;
        Ok(TxnStatus::Uncommitted {
            lock,
            min_commit_ts_pushed,
        })
    }

    /// The final status recorded for `start_ts` on `key`, if any.
    fn determined_status(&self, key: &Bytes, start_ts: u64) -> Option<TxnStatus> {
        match self.txn_commit_record(key, start_ts) {
            CommitRecord::Single { commit_ts, write } => {
                Some(if write.write_type == WriteType::Rollback {
                    TxnStatus::RolledBack
                } else {
                    TxnStatus::Committed(commit_ts)
                })
            }
            CommitRecord::OverlappedRollback => Some(TxnStatus::RolledBack),
            CommitRecord::None { .. } => None,
        }
    }

    /// Status of a secondary from the record alone; `true` = a rollback must be written.
    fn determined_secondary_status(
        &self,
        key: &Bytes,
        start_ts: u64,
    ) -> (SecondaryStatus, bool, Option<Write>) {
        match self.txn_commit_record(key, start_ts) {
            CommitRecord::Single { commit_ts, write } => {
                if write.write_type == WriteType::Rollback {
                    (SecondaryStatus::RolledBack, false, None)
                } else {
                    (SecondaryStatus::Committed(commit_ts), false, None)
                }
            }
            CommitRecord::OverlappedRollback => (SecondaryStatus::RolledBack, false, None),
            CommitRecord::None { overlapped } => (SecondaryStatus::RolledBack, true, overlapped),
        }
    }

    fn secondary_status_from_lock(
        &mut self,
        key: &Bytes,
        lock: Lock,
    ) -> (SecondaryStatus, bool, Option<Write>) {
        if !lock.is_pessimistic() {
            return (SecondaryStatus::Locked(lock), false, None);
        }
        let determined = self.determined_secondary_status(key, lock.start_ts);
        self.unlock_key(key, 0);
        if lock.is_locked_with_conflict && !determined.1 {
            return determined;
        }
        (SecondaryStatus::RolledBack, true, determined.2)
    }
}

enum SecondaryStatus {
    Locked(Lock),
    Committed(u64),
    RolledBack,
}

enum SecondaryOutcome {
    Locked(Vec<kvrpcpb::LockInfo>),
    Committed(u64),
    RolledBack,
}
