//! PessimisticLock (exclusive and shared, with lock waits handed to the caller) and
//! PessimisticRollback.

use bytes::Bytes;
use tikv_proto::kvrpcpb::{
    self, PessimisticLockKeyResultType as ResultType, PessimisticLockWakeUpMode,
    write_conflict::Reason as ConflictReason,
};

use super::deadlock::key_hash;
use super::error::TxnError;
use super::store::{Lock, LockType, MvccStore, SharedLocks, WriteType, check_key};

/// The outcome of a pessimistic lock request.
#[expect(
    clippy::large_enum_variant,
    reason = "both variants are big protobuf messages; each is moved once per request"
)]
#[derive(Clone, Debug, PartialEq)]
pub enum LockAcquire {
    /// The request finished (locked, or failed with the errors in the response).
    Done(kvrpcpb::PessimisticLockResponse),
    /// Another transaction's lock blocks the request: the caller queues it and later calls
    /// [`MvccStore::lock_wait_woken`], [`MvccStore::resume_lock_wait`] or
    /// [`MvccStore::lock_wait_timed_out`].
    Wait(LockWait),
}

/// A pessimistic lock request parked behind another transaction's lock.
#[derive(Clone, Debug, PartialEq)]
pub struct LockWait {
    /// The key the request waits for.
    pub key: Bytes,
    /// The blocking lock as a timeout reports it (a shared lock lists its holders).
    pub lock_info: kvrpcpb::LockInfo,
    /// The waiting transaction.
    pub start_ts: u64,
    /// Whether the request asks for a shared lock on `key` (waiters for shared locks are
    /// woken together).
    pub shared: bool,
    /// The holders this wait is registered for in the deadlock detector (none for a
    /// transaction's first lock, which cannot be part of a cycle).
    pub wait_for: Vec<u64>,
    /// The request, to run again when the lock goes away.
    pub request: kvrpcpb::PessimisticLockRequest,
}

impl LockWait {
    /// Whether the request uses the ForceLock wake-up mode (resumed instead of failed).
    pub fn is_force_lock(&self) -> bool {
        self.request.wake_up_mode == PessimisticLockWakeUpMode::WakeUpModeForceLock as i32
    }

    /// The wait the request asked for: `None` for TiKV's default (`wait_timeout` 0), else the
    /// milliseconds it named. The lock manager caps both at its wait-for-lock timeout.
    pub fn requested_timeout_ms(&self) -> Option<u64> {
        (self.request.wait_timeout > 0).then(|| self.request.wait_timeout.unsigned_abs())
    }
}

/// What refreshing a parked request with a key's new lock did
/// ([`MvccStore::refresh_lock_wait`]).
#[derive(Clone, Debug, PartialEq)]
pub enum LockWaitUpdate {
    /// The request already waited for that lock.
    Unchanged,
    /// The request now waits for the new lock.
    Updated,
    /// Waiting for the new lock closes a cycle: the request ends with this Deadlock answer.
    Deadlock(kvrpcpb::PessimisticLockResponse),
}

/// The transactions a lock belongs to: every holder of a shared lock, else the one owner.
pub(crate) fn lock_holders(info: &kvrpcpb::LockInfo) -> Vec<u64> {
    if info.lock_type == kvrpcpb::Op::SharedLock as i32 {
        info.shared_lock_infos
            .iter()
            .map(|holder| holder.lock_version)
            .collect()
    } else {
        vec![info.lock_version]
    }
}

fn is_shared_lock_info(info: &kvrpcpb::LockInfo) -> bool {
    info.lock_type == kvrpcpb::Op::SharedLock as i32
}

impl MvccStore {
    /// KvPessimisticLock: takes pessimistic locks on the request's keys at `for_update_ts`;
    /// `Op::SharedPessimisticLock` keys get a sub-lock in the key's shared locks.
    ///
    /// Returns [`LockAcquire::Wait`] when a key is locked by another transaction and the
    /// request may wait (`wait_timeout` ≥ 0); nothing is written then. With
    /// `wait_timeout` < 0 the lock comes back at once as KeyIsLocked, in `errors` only (also
    /// in ForceLock mode); a wait that would close a cycle comes back as Deadlock (unless
    /// `is_first_lock`). An exclusive request meeting shared locks that still take new holders
    /// makes them shrink-only and answers KeyIsLocked without waiting, as TiKV does so that the
    /// retry can wait for the set to drain. Normal mode reports a newer commit as
    /// WriteConflict and fills `values` / `not_founds`; ForceLock mode (one key only) locks
    /// anyway and reports `locked_with_conflict_ts` in `results`.
    pub fn pessimistic_lock(&mut self, req: &kvrpcpb::PessimisticLockRequest) -> LockAcquire {
        let force_lock = req.wake_up_mode == PessimisticLockWakeUpMode::WakeUpModeForceLock as i32;
        let result = self.atomically(|store| store.run_pessimistic_lock(req, force_lock));
        match result {
            Ok(Acquired::All(results)) => LockAcquire::Done(success_response(results, force_lock)),
            Ok(Acquired::Blocked {
                key,
                lock_info,
                shared,
            }) => self.park(req, key, lock_info, shared, force_lock),
            Ok(Acquired::MadeShrinkOnly(lock_info)) => {
                LockAcquire::Done(errors_response(TxnError::KeyIsLocked(lock_info)))
            }
            Err(e) => LockAcquire::Done(errors_response(e)),
        }
    }

    /// Ends a lock wait whose timeout passed: the response carries KeyIsLocked with the lock
    /// waited for and `duration_to_last_update_ms` (how long ago that information last
    /// changed, 0 if never), as TiKV's waiter manager reports it.
    pub fn lock_wait_timed_out(
        &mut self,
        wait: &LockWait,
        duration_to_last_update_ms: u64,
    ) -> kvrpcpb::PessimisticLockResponse {
        self.end_lock_wait(wait);
        let mut info = wait.lock_info.clone();
        info.duration_to_last_update_ms = duration_to_last_update_ms;
        locked_response(info, wait.is_force_lock())
    }

    /// Answers a legacy (normal-mode) waiter that was woken: WriteConflict (reason
    /// PessimisticRetry) naming the released lock's transaction and commit ts, so that the
    /// client retries with a newer `for_update_ts`.
    pub fn lock_wait_woken(
        &mut self,
        wait: &LockWait,
        conflict_start_ts: u64,
        conflict_commit_ts: u64,
    ) -> kvrpcpb::PessimisticLockResponse {
        self.end_lock_wait(wait);
        errors_response(TxnError::WriteConflict {
            start_ts: wait.start_ts,
            conflict_start_ts,
            conflict_commit_ts,
            key: wait.key.clone(),
            primary: wait.request.primary_lock.clone(),
            reason: ConflictReason::PessimisticRetry,
        })
    }

    /// Resumes a woken ForceLock request as TiKV's `AcquirePessimisticLockResumed` does: the
    /// waited-for key is locked (with conflict if a newer version exists) as an exclusive
    /// lock. [`LockAcquire::Wait`] hands the same wait back when another exclusive lock
    /// holds the key again; a shared lock or any other failure ends the request with a
    /// `LockResultFailed` result and the error.
    pub fn resume_lock_wait(&mut self, wait: LockWait) -> LockAcquire {
        let req = &wait.request;
        let should_not_exist = req
            .mutations
            .iter()
            .any(|m| m.key == wait.key && m.assertion == kvrpcpb::Assertion::NotExist as i32);
        let params = LockParams::new(req, true);
        let key = wait.key.clone();
        let result = self.atomically(|store| {
            store
                .acquire_key(&params, &key, should_not_exist, false)
                .map_err(|failure| match failure {
                    KeyFailure::Txn(e) => e,
                    KeyFailure::NotInShrinkMode(shared) => {
                        TxnError::KeyIsLocked(Box::new(shared.lock_info(&key)))
                    }
                })
        });
        match result {
            Ok(result) => {
                self.end_lock_wait(&wait);
                LockAcquire::Done(success_response(vec![result], true))
            }
            Err(TxnError::KeyIsLocked(info)) if !is_shared_lock_info(&info) => {
                LockAcquire::Wait(wait)
            }
            Err(e) => {
                self.end_lock_wait(&wait);
                LockAcquire::Done(failed_response(e.to_key_error(), true))
            }
        }
    }

    /// Points a parked request at `lock_info`, a lock another transaction just placed on the
    /// key it waits for (TiKV's `update_wait_for`). A ForceLock request that is not the
    /// transaction's first lock is checked for deadlocks again.
    pub fn refresh_lock_wait(
        &mut self,
        wait: &mut LockWait,
        lock_info: &kvrpcpb::LockInfo,
    ) -> LockWaitUpdate {
        let both_shared = is_shared_lock_info(&wait.lock_info) && is_shared_lock_info(lock_info);
        if !both_shared && wait.lock_info.lock_version == lock_info.lock_version {
            return LockWaitUpdate::Unchanged;
        }
        wait.lock_info = lock_info.clone();
        if wait.request.is_first_lock || !wait.is_force_lock() {
            return LockWaitUpdate::Updated;
        }
        self.end_lock_wait(wait);
        wait.wait_for = Vec::new();
        match self.detect_deadlock(wait.start_ts, &wait.key, lock_info) {
            Ok(holders) => {
                wait.wait_for = holders;
                LockWaitUpdate::Updated
            }
            Err(error) => LockWaitUpdate::Deadlock(failed_response(error, true)),
        }
    }

    /// KvPessimisticRollback: removes the transaction's pessimistic locks, exclusive ones and
    /// sub-locks of shared ones.
    ///
    /// Only locks of `start_version` with `for_update_ts` ≤ the request's are removed, and
    /// no rollback record is written. Empty `keys` means every such lock in the store.
    pub fn pessimistic_rollback(
        &mut self,
        req: &kvrpcpb::PessimisticRollbackRequest,
    ) -> kvrpcpb::PessimisticRollbackResponse {
        self.pessimistic_rollback_in_range(req, &[], &[])
    }

    /// KvPessimisticRollback as a region serves it: like
    /// [`MvccStore::pessimistic_rollback`], but empty `keys` only reach the locks in
    /// `[start, end)` (empty end = unbounded), as TiKV's `PessimisticRollbackReadPhase` scans
    /// only the region's snapshot.
    pub fn pessimistic_rollback_in_range(
        &mut self,
        req: &kvrpcpb::PessimisticRollbackRequest,
        start: &[u8],
        end: &[u8],
    ) -> kvrpcpb::PessimisticRollbackResponse {
        let removable = |lock: &Lock| {
            lock.is_pessimistic()
                && lock.start_ts == req.start_version
                && lock.for_update_ts <= req.for_update_ts
        };
        let keys: Vec<Bytes> = if req.keys.is_empty() {
            let exclusive = self
                .locks_in_range(start, end)
                .filter(|(_, lock)| lock.start_ts == req.start_version && lock.is_pessimistic())
                .map(|(key, _)| key.clone());
            let shared = self
                .shared_locks
                .iter()
                .filter(|(key, _)| super::store::key_in_range(key, start, end))
                .filter(|(_, shared)| {
                    shared
                        .locks
                        .get(&req.start_version)
                        .is_some_and(Lock::is_pessimistic)
                })
                .map(|(key, _)| key.clone());
            let mut keys: Vec<Bytes> = exclusive.chain(shared).collect();
            keys.sort();
            keys
        } else {
            req.keys.clone()
        };
        let _ = self.atomically(|store| {
            for key in &keys {
                if store.load_lock(key).is_some_and(removable) {
                    store.unlock_key(key, 0);
                } else if let Some(mut shared) = store.load_shared_locks(key).cloned() {
                    if shared.locks.get(&req.start_version).is_some_and(removable) {
                        shared.locks.remove(&req.start_version);
                        store.write_back_shared_locks(key, shared, req.start_version, 0);
                    }
                }
            }
            Ok::<_, TxnError>(())
        });
        kvrpcpb::PessimisticRollbackResponse::default()
    }

    fn park(
        &mut self,
        req: &kvrpcpb::PessimisticLockRequest,
        key: Bytes,
        lock_info: kvrpcpb::LockInfo,
        shared: bool,
        force_lock: bool,
    ) -> LockAcquire {
        if req.wait_timeout < 0 {
            // No wait: TiKV answers the whole request with the error, with no per-key results
            // even in ForceLock mode.
            return LockAcquire::Done(errors_response(TxnError::KeyIsLocked(Box::new(lock_info))));
        }
        let mut wait_for = Vec::new();
        if !req.is_first_lock {
            match self.detect_deadlock(req.start_version, &key, &lock_info) {
                Ok(holders) => wait_for = holders,
                Err(error) => return LockAcquire::Done(failed_response(error, force_lock)),
            }
        }
        LockAcquire::Wait(LockWait {
            key,
            lock_info,
            start_ts: req.start_version,
            shared,
            wait_for,
            request: req.clone(),
        })
    }

    /// Registers `start_ts` as waiting for every holder of `lock_info` on `key`; returns the
    /// holders registered, or the Deadlock error of the first holder that closes a cycle
    /// (after forgetting the holders registered before it), as TiKV's detector does.
    fn detect_deadlock(
        &mut self,
        start_ts: u64,
        key: &Bytes,
        lock_info: &kvrpcpb::LockInfo,
    ) -> Result<Vec<u64>, kvrpcpb::KeyError> {
        let hash = key_hash(key);
        let mut registered = Vec::new();
        for holder in lock_holders(lock_info) {
            if let Some((deadlock_key_hash, wait_chain)) =
                self.detector.detect(start_ts, holder, hash, key)
            {
                for earlier in registered {
                    self.detector.clean_up_wait_for(start_ts, earlier, hash);
                }
                return Err(kvrpcpb::KeyError {
                    deadlock: Some(kvrpcpb::Deadlock {
                        lock_ts: holder,
                        lock_key: key.clone(),
                        deadlock_key_hash,
                        wait_chain,
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
            registered.push(holder);
        }
        Ok(registered)
    }

    /// Forgets the wait in the deadlock detector.
    fn end_lock_wait(&mut self, wait: &LockWait) {
        let hash = key_hash(&wait.key);
        for holder in &wait.wait_for {
            self.detector
                .clean_up_wait_for(wait.start_ts, *holder, hash);
        }
    }

    fn run_pessimistic_lock(
        &mut self,
        req: &kvrpcpb::PessimisticLockRequest,
        force_lock: bool,
    ) -> Result<Acquired, TxnError> {
        PessimisticLockWakeUpMode::try_from(req.wake_up_mode).map_err(|_| {
            TxnError::BadRequest(format!("unknown wake-up mode {}", req.wake_up_mode))
        })?;
        if force_lock && req.mutations.len() > 1 {
            return Err(TxnError::BadRequest(
                "ForceLock mode takes one key per request".to_owned(),
            ));
        }
        let mut keys = Vec::with_capacity(req.mutations.len());
        for m in &req.mutations {
            check_key(&m.key)?;
            let shared = match kvrpcpb::Op::try_from(m.op) {
                Ok(kvrpcpb::Op::PessimisticLock) => false,
                Ok(kvrpcpb::Op::SharedPessimisticLock) => true,
                _ => {
                    return Err(TxnError::BadRequest(format!(
                        "op {} is not allowed in a pessimistic lock request",
                        m.op
                    )));
                }
            };
            keys.push((
                m.key.clone(),
                m.assertion == kvrpcpb::Assertion::NotExist as i32,
                shared,
            ));
        }
        let params = LockParams::new(req, force_lock);
        let mut results = Vec::with_capacity(keys.len());
        for (key, should_not_exist, shared) in keys {
            match self.acquire_key(&params, &key, should_not_exist, shared) {
                Ok(result) => results.push(result),
                Err(KeyFailure::Txn(TxnError::KeyIsLocked(lock_info))) => {
                    // Keys locked before this one are not kept.
                    self.discard_changes();
                    return Ok(Acquired::Blocked {
                        key,
                        lock_info: *lock_info,
                        shared,
                    });
                }
                Err(KeyFailure::NotInShrinkMode(mut shared_locks)) => {
                    // Only the shrink-only mark is written; earlier keys are not kept.
                    self.discard_changes();
                    shared_locks.shrink_only = true;
                    let info = shared_locks.lock_info(&key);
                    self.put_shared_locks(&key, shared_locks);
                    return Ok(Acquired::MadeShrinkOnly(Box::new(info)));
                }
                Err(KeyFailure::Txn(e)) => return Err(e),
            }
        }
        Ok(Acquired::All(results))
    }

    /// Locks one key (TiKV's `acquire_pessimistic_lock` action); `shared` asks for a sub-lock
    /// in the key's shared locks.
    fn acquire_key(
        &mut self,
        p: &LockParams,
        key: &Bytes,
        should_not_exist: bool,
        shared: bool,
    ) -> Result<KeyResult, KeyFailure> {
        if p.lock_only_if_exists && !p.need_value {
            return Err(TxnError::LockIfExistsFailed {
                start_ts: p.start_ts,
                key: key.clone(),
            }
            .into());
        }
        if should_not_exist || p.need_value || p.need_check_existence {
            self.update_max_ts(p.for_update_ts);
        }
        if let Some(lock) = self.load_lock(key).cloned() {
            if shared {
                // A shared request waits for any exclusive lock, even its own transaction's.
                return Err(TxnError::KeyIsLocked(Box::new(lock.lock_info(key))).into());
            }
            return Ok(self.relock_own_key(p, key, should_not_exist, lock)?);
        }
        let mut joined_shared = None;
        if let Some(shared_locks) = self.load_shared_locks(key).cloned() {
            if !shared {
                if !shared_locks.shrink_only {
                    return Err(KeyFailure::NotInShrinkMode(shared_locks));
                }
                return Err(TxnError::KeyIsLocked(Box::new(shared_locks.lock_info(key))).into());
            }
            if shared_locks.locks.contains_key(&p.start_ts) {
                return Ok(self.relock_own_shared(p, key, shared_locks));
            }
            if shared_locks.shrink_only {
                return Err(TxnError::KeyIsLocked(Box::new(shared_locks.lock_info(key))).into());
            }
            joined_shared = Some(shared_locks);
        }
        let mut for_update_ts = p.for_update_ts;
        let mut need_load_value = p.need_value;
        let mut conflict: Option<(u64, u64)> = None;
        let mut value = None;
        if let Some((commit_ts, write)) = self.seek_write(key, u64::MAX) {
            let write = write.clone();
            let conflict_error = |conflict_start_ts, conflict_commit_ts| TxnError::WriteConflict {
                start_ts: p.start_ts,
                conflict_start_ts,
                conflict_commit_ts,
                key: key.clone(),
                primary: p.primary.clone(),
                reason: ConflictReason::PessimisticRetry,
            };
            if commit_ts > for_update_ts {
                if !p.allow_lock_with_conflict {
                    return Err(conflict_error(write.start_ts, commit_ts).into());
                }
                conflict = Some((write.start_ts, commit_ts));
                for_update_ts = commit_ts;
                need_load_value = true;
            }
            let rolled_back = |ts: u64, w: &super::store::Write| {
                ts == p.start_ts
                    && (w.write_type == WriteType::Rollback || w.has_overlapped_rollback)
            };
            let older_rolled_back = commit_ts > p.start_ts
                && self
                    .seek_write(key, p.start_ts)
                    .is_some_and(|(ts, w)| rolled_back(ts, w));
            if rolled_back(commit_ts, &write) || older_rolled_back {
                return Err(TxnError::PessimisticLockRolledBack {
                    start_ts: p.start_ts,
                    key: key.clone(),
                }
                .into());
            }
            if let Err(e) = self.check_data_constraint(should_not_exist, &write, commit_ts, key) {
                return Err(match conflict {
                    Some((start_ts, commit_ts)) => conflict_error(start_ts, commit_ts),
                    None => e,
                }
                .into());
            }
            if p.need_value || p.need_check_existence || conflict.is_some() {
                let below = commit_ts.saturating_sub(1);
                value = match write.write_type {
                    WriteType::Put if need_load_value => Some(write.value.unwrap_or_default()),
                    WriteType::Put => Some(Bytes::new()),
                    WriteType::Delete => None,
                    WriteType::Lock | WriteType::Rollback if need_load_value => {
                        self.visible_value(key, below).map(|(_, v)| v)
                    }
                    WriteType::Lock | WriteType::Rollback => {
                        self.get_write(key, below).map(|_| Bytes::new())
                    }
                };
            }
        }
        let mut lock = Lock::new(
            LockType::Pessimistic,
            p.primary.clone(),
            p.start_ts,
            p.lock_ttl,
        );
        lock.for_update_ts = for_update_ts;
        lock.min_commit_ts = p.min_commit_ts;
        lock.is_locked_with_conflict = conflict.is_some();
        if shared {
            // A shared sub-lock is taken whether or not the key exists.
            let mut shared_locks = joined_shared.unwrap_or_default();
            shared_locks.locks.insert(p.start_ts, lock);
            self.put_shared_locks(key, shared_locks);
        } else if !p.lock_only_if_exists || value.is_some() {
            self.put_lock(key, lock);
        } else if let Some((conflict_start_ts, conflict_commit_ts)) = conflict {
            return Err(TxnError::WriteConflict {
                start_ts: p.start_ts,
                conflict_start_ts,
                conflict_commit_ts,
                key: key.clone(),
                primary: p.primary.clone(),
                reason: ConflictReason::PessimisticRetry,
            }
            .into());
        }
        Ok(KeyResult::new(
            p,
            conflict.map(|(_, commit_ts)| commit_ts),
            value,
        ))
    }

    /// The key is already locked: by another transaction (wait), or by us (refresh).
    fn relock_own_key(
        &mut self,
        p: &LockParams,
        key: &Bytes,
        should_not_exist: bool,
        lock: Lock,
    ) -> Result<KeyResult, TxnError> {
        if lock.start_ts != p.start_ts {
            return Err(TxnError::KeyIsLocked(Box::new(lock.lock_info(key))));
        }
        if !lock.is_pessimistic() {
            return Err(TxnError::LockTypeNotMatch {
                start_ts: p.start_ts,
                key: key.clone(),
                pessimistic: false,
            });
        }
        let mut for_update_ts = p.for_update_ts;
        let mut need_load_value = p.need_value;
        let locked_with_conflict_ts =
            if p.allow_lock_with_conflict && for_update_ts < lock.for_update_ts {
                need_load_value = true;
                for_update_ts = lock.for_update_ts;
                Some(lock.for_update_ts)
            } else {
                None
            };
        let mut value = None;
        if need_load_value || p.need_check_existence || should_not_exist {
            if let Some((commit_ts, write)) = self.get_write(key, for_update_ts) {
                let write = write.clone();
                if let Err(e) = self.check_data_constraint(should_not_exist, &write, commit_ts, key)
                {
                    return Err(if commit_ts > p.for_update_ts {
                        TxnError::WriteConflict {
                            start_ts: p.start_ts,
                            conflict_start_ts: write.start_ts,
                            conflict_commit_ts: commit_ts,
                            key: key.clone(),
                            primary: p.primary.clone(),
                            reason: ConflictReason::PessimisticRetry,
                        }
                    } else {
                        e
                    });
                }
                if need_load_value {
                    value = Some(write.value.unwrap_or_default());
                } else if p.need_check_existence {
                    value = Some(Bytes::new());
                }
            }
        }
        if for_update_ts > lock.for_update_ts {
            let mut refreshed = Lock::new(
                LockType::Pessimistic,
                p.primary.clone(),
                p.start_ts,
                p.lock_ttl,
            );
            refreshed.for_update_ts = for_update_ts;
            refreshed.min_commit_ts = p.min_commit_ts;
            refreshed.is_locked_with_conflict = lock.is_locked_with_conflict;
            self.put_lock(key, refreshed);
        }
        Ok(KeyResult::new(p, locked_with_conflict_ts, value))
    }
}

impl MvccStore {
    /// The transaction already holds a sub-lock of the key's shared locks: refresh it to a
    /// newer `for_update_ts` (TiKV's `handle_existing_shared_lock`). No value is read for a
    /// shared lock.
    fn relock_own_shared(
        &mut self,
        p: &LockParams,
        key: &Bytes,
        mut shared_locks: SharedLocks,
    ) -> KeyResult {
        let existing = shared_locks
            .locks
            .get(&p.start_ts)
            .map(|lock| (lock.for_update_ts, lock.is_locked_with_conflict));
        if let Some((existing_for_update_ts, locked_with_conflict)) = existing {
            if p.for_update_ts > existing_for_update_ts {
                let mut lock = Lock::new(
                    LockType::Pessimistic,
                    p.primary.clone(),
                    p.start_ts,
                    p.lock_ttl,
                );
                lock.for_update_ts = p.for_update_ts;
                lock.min_commit_ts = p.min_commit_ts;
                lock.is_locked_with_conflict = locked_with_conflict;
                shared_locks.locks.insert(p.start_ts, lock);
                self.put_shared_locks(key, shared_locks);
            }
        }
        KeyResult::new(p, None, None)
    }
}

/// Why one key could not be locked.
enum KeyFailure {
    /// The error the request ends with (KeyIsLocked: it may wait).
    Txn(TxnError),
    /// An exclusive request met shared locks that still take new holders: they are to be
    /// made shrink-only.
    NotInShrinkMode(SharedLocks),
}

impl From<TxnError> for KeyFailure {
    fn from(e: TxnError) -> Self {
        Self::Txn(e)
    }
}

struct LockParams {
    primary: Bytes,
    start_ts: u64,
    lock_ttl: u64,
    for_update_ts: u64,
    need_value: bool,
    need_check_existence: bool,
    min_commit_ts: u64,
    lock_only_if_exists: bool,
    allow_lock_with_conflict: bool,
}

impl LockParams {
    fn new(req: &kvrpcpb::PessimisticLockRequest, allow_lock_with_conflict: bool) -> Self {
        Self {
            primary: req.primary_lock.clone(),
            start_ts: req.start_version,
            lock_ttl: req.lock_ttl,
            for_update_ts: req.for_update_ts,
            need_value: req.return_values,
            need_check_existence: req.check_existence,
            min_commit_ts: req.min_commit_ts,
            lock_only_if_exists: req.lock_only_if_exists,
            allow_lock_with_conflict,
        }
    }
}

enum Acquired {
    All(Vec<KeyResult>),
    Blocked {
        key: Bytes,
        lock_info: kvrpcpb::LockInfo,
        shared: bool,
    },
    /// Shared locks were made shrink-only; the request fails with KeyIsLocked on them.
    MadeShrinkOnly(Box<kvrpcpb::LockInfo>),
}

/// What one key of a successful request reports.
#[derive(Clone, Debug, PartialEq)]
enum KeyResult {
    Empty,
    Value(Option<Bytes>),
    Existence(bool),
    LockedWithConflict {
        value: Option<Bytes>,
        conflict_ts: u64,
    },
}

impl KeyResult {
    fn new(p: &LockParams, locked_with_conflict_ts: Option<u64>, value: Option<Bytes>) -> Self {
        if let Some(conflict_ts) = locked_with_conflict_ts {
            Self::LockedWithConflict { value, conflict_ts }
        } else if p.need_value {
            Self::Value(value)
        } else if p.need_check_existence {
            Self::Existence(value.is_some())
        } else {
            Self::Empty
        }
    }
}

fn success_response(results: Vec<KeyResult>, force_lock: bool) -> kvrpcpb::PessimisticLockResponse {
    let mut resp = kvrpcpb::PessimisticLockResponse::default();
    if force_lock {
        resp.results = results
            .into_iter()
            .map(|result| {
                let mut pb = kvrpcpb::PessimisticLockKeyResult::default();
                match result {
                    KeyResult::Empty => {}
                    KeyResult::Value(value) => {
                        pb.existence = value.is_some();
                        pb.value = value.unwrap_or_default();
                    }
                    KeyResult::Existence(existence) => pb.existence = existence,
                    KeyResult::LockedWithConflict { value, conflict_ts } => {
                        pb.r#type = ResultType::LockResultLockedWithConflict as i32;
                        pb.existence = value.is_some();
                        pb.value = value.unwrap_or_default();
                        pb.locked_with_conflict_ts = conflict_ts;
                    }
                }
                pb
            })
            .collect();
        return resp;
    }
    // Legacy layout: the first result decides whether values or existence are reported.
    match results.first() {
        Some(KeyResult::Existence(_)) => {
            resp.not_founds = results
                .iter()
                .map(|r| !matches!(r, KeyResult::Existence(true)))
                .collect();
        }
        Some(KeyResult::Value(_)) => {
            for result in results {
                let value = match result {
                    KeyResult::Value(value) => value,
                    _ => None,
                };
                resp.not_founds.push(value.is_none());
                resp.values.push(value.unwrap_or_default());
            }
        }
        _ => {}
    }
    resp
}

/// A response failed as a whole: the error and nothing else.
fn errors_response(error: TxnError) -> kvrpcpb::PessimisticLockResponse {
    kvrpcpb::PessimisticLockResponse {
        errors: vec![error.to_key_error()],
        ..Default::default()
    }
}

fn locked_response(
    lock_info: kvrpcpb::LockInfo,
    force_lock: bool,
) -> kvrpcpb::PessimisticLockResponse {
    failed_response(
        TxnError::KeyIsLocked(Box::new(lock_info)).to_key_error(),
        force_lock,
    )
}

/// A waited-for request that ended in `error`: ForceLock mode reports it key-wise too (a
/// `LockResultFailed` result), as TiKV's lock-wait context does.
fn failed_response(error: kvrpcpb::KeyError, force_lock: bool) -> kvrpcpb::PessimisticLockResponse {
    kvrpcpb::PessimisticLockResponse {
        errors: vec![error],
        results: if force_lock {
            vec![kvrpcpb::PessimisticLockKeyResult {
                r#type: ResultType::LockResultFailed as i32,
                ..Default::default()
            }]
        } else {
            Vec::new()
        },
        ..Default::default()
    }
}
