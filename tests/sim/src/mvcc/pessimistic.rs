//! PessimisticLock (with lock waits handed to the caller) and PessimisticRollback.

use bytes::Bytes;
use tikv_proto::kvrpcpb::{
    self, PessimisticLockKeyResultType as ResultType, PessimisticLockWakeUpMode,
    write_conflict::Reason as ConflictReason,
};

use super::deadlock::key_hash;
use super::error::TxnError;
use super::store::{Lock, LockType, MvccStore, ReleasedLock, WriteType, check_key};

/// The wait TiKV applies when a request says `wait_timeout = 0`.
pub const DEFAULT_LOCK_WAIT_TIMEOUT_MS: u64 = 1000;

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
    /// [`MvccStore::wake_up_lock_wait`] or [`MvccStore::lock_wait_timed_out`].
    Wait(LockWait),
}

/// A pessimistic lock request parked behind another transaction's lock.
#[derive(Clone, Debug, PartialEq)]
pub struct LockWait {
    /// The key the request waits for.
    pub key: Bytes,
    /// The blocking lock.
    pub lock_info: kvrpcpb::LockInfo,
    /// The waiting transaction.
    pub start_ts: u64,
    /// How long to wait before [`MvccStore::lock_wait_timed_out`] (0 on the wire = 1 s).
    pub wait_timeout_ms: u64,
    /// The request, to run again when the lock goes away.
    pub request: kvrpcpb::PessimisticLockRequest,
}

impl LockWait {
    /// Whether the request uses the ForceLock wake-up mode (resumed instead of failed).
    pub fn is_force_lock(&self) -> bool {
        self.request.wake_up_mode == PessimisticLockWakeUpMode::WakeUpModeForceLock as i32
    }
}

impl MvccStore {
    /// KvPessimisticLock: takes pessimistic locks on the request's keys at `for_update_ts`.
    ///
    /// Returns [`LockAcquire::Wait`] when a key is locked by another transaction and the
    /// request may wait (`wait_timeout` ≥ 0); nothing is written then. With
    /// `wait_timeout` < 0 the lock comes back at once as KeyIsLocked; a wait that would
    /// close a cycle comes back as Deadlock (unless `is_first_lock`). Normal mode reports a
    /// newer commit as WriteConflict and fills `values` / `not_founds`; ForceLock mode
    /// (one key only) locks anyway and reports `locked_with_conflict_ts` in `results`.
    pub fn pessimistic_lock(&mut self, req: &kvrpcpb::PessimisticLockRequest) -> LockAcquire {
        let force_lock = req.wake_up_mode == PessimisticLockWakeUpMode::WakeUpModeForceLock as i32;
        let result = self.atomically(|store| store.run_pessimistic_lock(req, force_lock));
        match result {
            Ok(Acquired::All(results)) => LockAcquire::Done(success_response(results, force_lock)),
            Ok(Acquired::Blocked { key, lock_info }) => self.park(req, key, lock_info, force_lock),
            Err(e) => LockAcquire::Done(kvrpcpb::PessimisticLockResponse {
                errors: vec![e.to_key_error()],
                ..Default::default()
            }),
        }
    }

    /// Ends a lock wait whose timeout passed: the response carries KeyIsLocked.
    pub fn lock_wait_timed_out(&mut self, wait: &LockWait) -> kvrpcpb::PessimisticLockResponse {
        self.detector.clean_up_wait_for(
            wait.start_ts,
            wait.lock_info.lock_version,
            key_hash(&wait.key),
        );
        locked_response(wait.lock_info.clone(), wait.is_force_lock())
    }

    /// Wakes a waiting request after `released` (the lock it waited for) went away.
    ///
    /// Normal mode answers WriteConflict (reason PessimisticRetry) so that the client
    /// retries; ForceLock mode runs the request again, which may wait again.
    pub fn wake_up_lock_wait(&mut self, wait: LockWait, released: &ReleasedLock) -> LockAcquire {
        self.detector.clean_up_wait_for(
            wait.start_ts,
            wait.lock_info.lock_version,
            key_hash(&wait.key),
        );
        if wait.is_force_lock() {
            return self.pessimistic_lock(&wait.request);
        }
        let conflict = TxnError::WriteConflict {
            start_ts: wait.start_ts,
            conflict_start_ts: released.start_ts,
            conflict_commit_ts: released.commit_ts,
            key: wait.key.clone(),
            primary: wait.request.primary_lock.clone(),
            reason: ConflictReason::PessimisticRetry,
        };
        LockAcquire::Done(kvrpcpb::PessimisticLockResponse {
            errors: vec![conflict.to_key_error()],
            ..Default::default()
        })
    }

    /// KvPessimisticRollback: removes the transaction's pessimistic locks.
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
        let keys: Vec<Bytes> = if req.keys.is_empty() {
            self.locks_in_range(start, end)
                .filter(|(_, lock)| lock.start_ts == req.start_version && lock.is_pessimistic())
                .map(|(key, _)| key.clone())
                .collect()
        } else {
            req.keys.clone()
        };
        let _ = self.atomically(|store| {
            for key in &keys {
                let remove = store.load_lock(key).is_some_and(|lock| {
                    lock.is_pessimistic()
                        && lock.start_ts == req.start_version
                        && lock.for_update_ts <= req.for_update_ts
                });
                if remove {
                    store.unlock_key(key, 0);
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
        force_lock: bool,
    ) -> LockAcquire {
        if req.wait_timeout < 0 {
            return LockAcquire::Done(locked_response(lock_info, force_lock));
        }
        if !req.is_first_lock {
            let deadlock = self.detector.detect(
                req.start_version,
                lock_info.lock_version,
                key_hash(&key),
                &key,
            );
            if let Some((deadlock_key_hash, wait_chain)) = deadlock {
                let error = kvrpcpb::KeyError {
                    deadlock: Some(kvrpcpb::Deadlock {
                        lock_ts: lock_info.lock_version,
                        lock_key: key,
                        deadlock_key_hash,
                        wait_chain,
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                return LockAcquire::Done(failed_response(error, force_lock));
            }
        }
        LockAcquire::Wait(LockWait {
            key,
            lock_info,
            start_ts: req.start_version,
            wait_timeout_ms: if req.wait_timeout == 0 {
                DEFAULT_LOCK_WAIT_TIMEOUT_MS
            } else {
                req.wait_timeout.unsigned_abs()
            },
            request: req.clone(),
        })
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
            if m.op != kvrpcpb::Op::PessimisticLock as i32 {
                return Err(TxnError::BadRequest(format!(
                    "op {} is not allowed in a pessimistic lock request",
                    m.op
                )));
            }
            keys.push((
                m.key.clone(),
                m.assertion == kvrpcpb::Assertion::NotExist as i32,
            ));
        }
        let params = LockParams {
            primary: req.primary_lock.clone(),
            start_ts: req.start_version,
            lock_ttl: req.lock_ttl,
            for_update_ts: req.for_update_ts,
            need_value: req.return_values,
            need_check_existence: req.check_existence,
            min_commit_ts: req.min_commit_ts,
            lock_only_if_exists: req.lock_only_if_exists,
            allow_lock_with_conflict: force_lock,
        };
        let mut results = Vec::with_capacity(keys.len());
        for (key, should_not_exist) in keys {
            match self.acquire_key(&params, &key, should_not_exist) {
                Ok(result) => results.push(result),
                Err(TxnError::KeyIsLocked(lock_info)) => {
                    self.discard_changes();
                    return Ok(Acquired::Blocked {
                        key,
                        lock_info: *lock_info,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Acquired::All(results))
    }

    fn acquire_key(
        &mut self,
        p: &LockParams,
        key: &Bytes,
        should_not_exist: bool,
    ) -> Result<KeyResult, TxnError> {
        if p.lock_only_if_exists && !p.need_value {
            return Err(TxnError::LockIfExistsFailed {
                start_ts: p.start_ts,
                key: key.clone(),
            });
        }
        if should_not_exist || p.need_value || p.need_check_existence {
            self.update_max_ts(p.for_update_ts);
        }
        if let Some(lock) = self.load_lock(key).cloned() {
            return self.relock_own_key(p, key, should_not_exist, lock);
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
                    return Err(conflict_error(write.start_ts, commit_ts));
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
                });
            }
            if let Err(e) = self.check_data_constraint(should_not_exist, &write, commit_ts, key) {
                return Err(match conflict {
                    Some((start_ts, commit_ts)) => conflict_error(start_ts, commit_ts),
                    None => e,
                });
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
        if !p.lock_only_if_exists || value.is_some() {
            self.put_lock(key, lock);
        } else if let Some((conflict_start_ts, conflict_commit_ts)) = conflict {
            return Err(TxnError::WriteConflict {
                start_ts: p.start_ts,
                conflict_start_ts,
                conflict_commit_ts,
                key: key.clone(),
                primary: p.primary.clone(),
                reason: ConflictReason::PessimisticRetry,
            });
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

enum Acquired {
    All(Vec<KeyResult>),
    Blocked {
        key: Bytes,
        lock_info: kvrpcpb::LockInfo,
    },
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

fn locked_response(
    lock_info: kvrpcpb::LockInfo,
    force_lock: bool,
) -> kvrpcpb::PessimisticLockResponse {
    failed_response(
        TxnError::KeyIsLocked(Box::new(lock_info)).to_key_error(),
        force_lock,
    )
}

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
