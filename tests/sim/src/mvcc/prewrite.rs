//! Prewrite (optimistic, pessimistic, async commit, 1PC) and pipelined Flush.

use bytes::Bytes;
use tikv_proto::kvrpcpb::{
    self, Assertion, AssertionLevel, prewrite_request::PessimisticAction,
    write_conflict::Reason as ConflictReason,
};

use super::error::{LockNotFoundReason, TxnError};
use super::store::{
    CommitRecord, Lock, LockType, MvccStore, SharedLocks, Write, WriteType, check_key,
};

impl MvccStore {
    /// KvPrewrite: locks the mutations of one transaction.
    ///
    /// Optimistic when `for_update_ts` is 0, pessimistic otherwise (`pessimistic_actions`
    /// per mutation). Locked keys are all reported in `errors` and nothing is written; any
    /// other failure (write conflict, assertion, already-exist, bad input) is the single
    /// entry of `errors`. Async commit returns `min_commit_ts`, 1PC `one_pc_commit_ts`;
    /// both are 0 after falling back to 2PC (`max_commit_ts` exceeded). A pessimistic
    /// prewrite of a transaction the status cache knows is committed is handled as a retried
    /// request (TiKV's `Prewriter::process_write`): its constraint checks are not skipped, so
    /// a late duplicate finds the commit record and succeeds without writing. `Op::SharedLock`
    /// mutations turn the transaction's shared pessimistic sub-lock into a Lock sub-lock.
    pub fn prewrite(&mut self, req: &kvrpcpb::PrewriteRequest) -> kvrpcpb::PrewriteResponse {
        let result = self.atomically(|store| {
            let mutations = parse_prewrite(req).map_err(PrewriteFailure::Error)?;
            let outcome = store.run_prewrite(req, mutations)?;
            if outcome.locks.is_empty() {
                Ok(outcome)
            } else {
                Err(PrewriteFailure::Locked(outcome))
            }
        });
        match result {
            Ok(outcome) => {
                if outcome.one_pc_commit_ts != 0 {
                    // A 1PC commit is a known transaction status, as a commit is.
                    self.txn_status
                        .insert_committed(req.start_version, outcome.one_pc_commit_ts);
                }
                kvrpcpb::PrewriteResponse {
                    min_commit_ts: outcome.min_commit_ts,
                    one_pc_commit_ts: outcome.one_pc_commit_ts,
                    ..Default::default()
                }
            }
            Err(PrewriteFailure::Locked(outcome)) => kvrpcpb::PrewriteResponse {
                errors: outcome.locks.iter().map(TxnError::to_key_error).collect(),
                min_commit_ts: outcome.min_commit_ts,
                ..Default::default()
            },
            Err(PrewriteFailure::Error(e)) => kvrpcpb::PrewriteResponse {
                errors: vec![e.to_key_error()],
                ..Default::default()
            },
        }
    }

    /// KvFlush: writes one generation of a pipelined (optimistic) transaction's locks.
    ///
    /// A newer generation replaces the transaction's own locks; a mutation whose key already
    /// holds this generation or a newer one is skipped (a late or repeated flush succeeds
    /// without changing the lock, as TiKV's `Flush` command does). Keys locked by others are
    /// reported in `errors` while the other keys are still written. `generation` must be
    /// positive.
    pub fn flush(&mut self, req: &kvrpcpb::FlushRequest) -> kvrpcpb::FlushResponse {
        let result = self.atomically(|store| store.run_flush(req));
        kvrpcpb::FlushResponse {
            errors: match result {
                Ok(locks) => locks.iter().map(TxnError::to_key_error).collect(),
                Err(e) => vec![e.to_key_error()],
            },
            ..Default::default()
        }
    }

    fn run_prewrite(
        &mut self,
        req: &kvrpcpb::PrewriteRequest,
        mutations: Vec<PrewriteMutation>,
    ) -> Result<PrewriteOutcome, PrewriteFailure> {
        let start_ts = req.start_version;
        let mut props = TxnProps {
            start_ts,
            kind: if req.for_update_ts == 0 {
                TxnKind::Optimistic {
                    skip_constraint_check: req.skip_constraint_check,
                }
            } else {
                TxnKind::Pessimistic {
                    for_update_ts: req.for_update_ts,
                }
            },
            commit_kind: if req.try_one_pc {
                CommitKind::OnePc(req.max_commit_ts)
            } else if req.use_async_commit {
                CommitKind::Async(req.max_commit_ts)
            } else {
                CommitKind::TwoPc
            },
            primary: req.primary_lock.clone(),
            txn_size: req.txn_size,
            lock_ttl: req.lock_ttl,
            min_commit_ts: req.min_commit_ts,
            is_retry_request: req.context.as_ref().is_some_and(|c| c.is_retry_request)
                || (req.for_update_ts != 0 && self.txn_status.committed(start_ts).is_some()),
            assertion_level: assertion_level(req.assertion_level)?,
        };
        let mut secondary_keys = req.use_async_commit.then(|| req.secondaries.clone());
        let mut async_commit_primary = secondary_keys
            .as_ref()
            .filter(|keys| !keys.is_empty())
            .map(|_| req.primary_lock.clone());
        let mut try_one_pc = req.try_one_pc;
        let mut one_pc_locks = Vec::with_capacity(if try_one_pc { mutations.len() } else { 0 });
        let mut final_min_commit_ts = 0;
        let mut locks = Vec::new();
        let mut assertion_failure = None;

        for mut m in mutations {
            m.secondaries = match &secondary_keys {
                Some(keys) if Some(&m.key) == async_commit_primary.as_ref() => Some(keys.clone()),
                Some(_) => Some(Vec::new()),
                None => None,
            };
            let need_min_commit_ts = m.secondaries.is_some() || try_one_pc;
            let key = m.key.clone();
            let result = self.prewrite_key(&props, m, 0, &mut one_pc_locks);
            let fall_back = match result {
                Ok(ts) if !(need_min_commit_ts && ts == 0) => {
                    if need_min_commit_ts {
                        final_min_commit_ts = final_min_commit_ts.max(ts);
                    }
                    false
                }
                Ok(_) => true,
                Err(
                    e @ (TxnError::WriteConflict { .. } | TxnError::PessimisticLockNotFound { .. }),
                ) => {
                    let real_conflict = match &e {
                        TxnError::WriteConflict {
                            start_ts,
                            conflict_commit_ts,
                            ..
                        } => conflict_commit_ts > start_ts,
                        _ => true,
                    };
                    if !real_conflict {
                        return Err(PrewriteFailure::Error(e));
                    }
                    return self.committed_or(&key, start_ts, e, try_one_pc, &secondary_keys);
                }
                Err(e @ TxnError::CommitTsTooLarge { .. }) => {
                    if let Ok(done) =
                        self.committed_or(&key, start_ts, e, try_one_pc, &secondary_keys)
                    {
                        return Ok(done);
                    }
                    true
                }
                Err(e @ TxnError::KeyIsLocked(_)) => {
                    match self.committed_or(&key, start_ts, e, try_one_pc, &secondary_keys) {
                        Ok(done) => return Ok(done),
                        Err(PrewriteFailure::Error(e)) => locks.push(e),
                        Err(other) => return Err(other),
                    }
                    false
                }
                Err(e @ TxnError::AssertionFailed { .. }) => {
                    assertion_failure.get_or_insert(e);
                    false
                }
                Err(e) => return Err(PrewriteFailure::Error(e)),
            };
            if fall_back {
                props.commit_kind = CommitKind::TwoPc;
                async_commit_primary = None;
                secondary_keys = None;
                try_one_pc = false;
                for (key, mut lock, _) in std::mem::take(&mut one_pc_locks) {
                    lock.use_one_pc = false;
                    self.put_lock(&key, lock);
                }
                final_min_commit_ts = 0;
            }
        }
        if let Some(e) = assertion_failure {
            return Err(PrewriteFailure::Error(e));
        }
        let min_commit_ts = if secondary_keys.is_some() {
            final_min_commit_ts
        } else {
            0
        };
        let mut one_pc_commit_ts = 0;
        if locks.is_empty() && try_one_pc {
            for (key, lock, had_pessimistic_lock) in one_pc_locks {
                let write_type = match lock.lock_type {
                    LockType::Put => WriteType::Put,
                    LockType::Delete => WriteType::Delete,
                    _ => WriteType::Lock,
                };
                self.put_write(
                    &key,
                    final_min_commit_ts,
                    Write::new(write_type, start_ts, lock.value),
                );
                if had_pessimistic_lock {
                    self.unlock_key(&key, final_min_commit_ts);
                }
            }
            one_pc_commit_ts = final_min_commit_ts;
        }
        Ok(PrewriteOutcome {
            locks,
            min_commit_ts,
            one_pc_commit_ts,
        })
    }

    /// When a key fails, a transaction that already committed makes the prewrite succeed
    /// (a retried request); otherwise the failure stands.
    fn committed_or(
        &mut self,
        key: &Bytes,
        start_ts: u64,
        error: TxnError,
        try_one_pc: bool,
        secondary_keys: &Option<Vec<Bytes>>,
    ) -> Result<PrewriteOutcome, PrewriteFailure> {
        match self.txn_commit_record(key, start_ts) {
            CommitRecord::Single { commit_ts, write }
                if write.write_type != WriteType::Rollback =>
            {
                self.discard_changes();
                Ok(PrewriteOutcome {
                    locks: Vec::new(),
                    min_commit_ts: if secondary_keys.is_some() {
                        commit_ts
                    } else {
                        0
                    },
                    one_pc_commit_ts: if try_one_pc { commit_ts } else { 0 },
                })
            }
            _ => Err(PrewriteFailure::Error(error)),
        }
    }

    fn run_flush(&mut self, req: &kvrpcpb::FlushRequest) -> Result<Vec<TxnError>, TxnError> {
        if req.generation == 0 {
            return Err(TxnError::BadRequest(
                "flush needs a generation greater than 0".to_owned(),
            ));
        }
        let props = TxnProps {
            start_ts: req.start_ts,
            kind: TxnKind::Optimistic {
                skip_constraint_check: false,
            },
            commit_kind: CommitKind::TwoPc,
            primary: req.primary_key.clone(),
            txn_size: u64::MAX,
            lock_ttl: req.lock_ttl,
            min_commit_ts: req.start_ts.saturating_add(1),
            is_retry_request: req.context.as_ref().is_some_and(|c| c.is_retry_request),
            assertion_level: assertion_level(req.assertion_level).map_err(|f| match f {
                PrewriteFailure::Error(e) => e,
                PrewriteFailure::Locked(_) => TxnError::BadRequest("assertion level".to_owned()),
            })?,
        };
        let mut mutations = Vec::with_capacity(req.mutations.len());
        for m in &req.mutations {
            mutations.push(PrewriteMutation::from_pb(
                m,
                PessimisticAction::SkipPessimisticCheck,
            )?);
        }
        let mut locks = Vec::new();
        let mut assertion_failure = None;
        let mut unused_one_pc = Vec::new();
        for m in mutations {
            let key = m.key.clone();
            match self.prewrite_key(&props, m, req.generation, &mut unused_one_pc) {
                Ok(_) => {}
                Err(
                    e @ TxnError::WriteConflict {
                        start_ts,
                        conflict_commit_ts,
                        ..
                    },
                ) if conflict_commit_ts > start_ts => {
                    return match self.committed_or(&key, req.start_ts, e, false, &None) {
                        Ok(_) => Ok(Vec::new()),
                        Err(PrewriteFailure::Error(e)) => Err(e),
                        Err(PrewriteFailure::Locked(_)) => Ok(Vec::new()),
                    };
                }
                Err(e @ TxnError::KeyIsLocked(_)) => {
                    match self.committed_or(&key, req.start_ts, e, false, &None) {
                        Ok(_) => return Ok(Vec::new()),
                        Err(PrewriteFailure::Error(e)) => locks.push(e),
                        Err(PrewriteFailure::Locked(_)) => {}
                    }
                }
                Err(e @ TxnError::AssertionFailed { .. }) => {
                    assertion_failure.get_or_insert(e);
                }
                // A late or repeated flush: the lock already holds this generation or a
                // newer one, so the mutation is skipped and the command goes on.
                Err(TxnError::GenerationOutOfOrder { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        match assertion_failure {
            Some(e) => Err(e),
            None => Ok(locks),
        }
    }

    /// Prewrites one key; returns the key's min_commit_ts for async commit / 1PC (else 0).
    fn prewrite_key(
        &mut self,
        props: &TxnProps,
        mut m: PrewriteMutation,
        generation: u64,
        one_pc_locks: &mut Vec<(Bytes, Lock, bool)>,
    ) -> Result<u64, TxnError> {
        if props.is_pessimistic() && m.should_not_write() {
            return Err(TxnError::BadRequest(
                "CheckNotExists is not allowed in a pessimistic prewrite".to_owned(),
            ));
        }
        if m.should_not_exist() {
            self.update_max_ts(props.start_ts);
        }
        m.lock_ttl = props.lock_ttl;
        m.min_commit_ts = props.min_commit_ts;
        let mut lock_amended = false;
        let shared_locks = self.load_shared_locks(&m.key).cloned();
        let lock_status = match self.load_lock(&m.key).cloned() {
            Some(lock) if m.shared => {
                return Err(TxnError::KeyIsLocked(Box::new(lock.lock_info(&m.key))));
            }
            Some(lock) => self.check_own_lock(props, &mut m, lock, generation)?,
            None => match shared_locks {
                Some(shared) => {
                    let Some(own) = shared.locks.get(&props.start_ts).cloned() else {
                        if m.shared {
                            return Err(shared_lock_not_found(props, &m));
                        }
                        return Err(TxnError::KeyIsLocked(Box::new(shared.lock_info(&m.key))));
                    };
                    if !m.shared {
                        return Err(TxnError::BadRequest(
                            "use Op::SharedLock to prewrite on a shared lock".to_owned(),
                        ));
                    }
                    let status = self.check_own_lock(props, &mut m, own, generation)?;
                    m.shared_locks = Some(shared);
                    status
                }
                None if m.pessimistic_action == PessimisticAction::DoPessimisticCheck => {
                    if m.shared {
                        return Err(shared_lock_not_found(props, &m));
                    }
                    self.amend_pessimistic_lock(props, &m)?;
                    lock_amended = true;
                    LockStatus::None
                }
                None => LockStatus::None,
            },
        };
        if generation == 0 {
            if let LockStatus::Locked(ts) = lock_status {
                return Ok(ts);
            }
        }
        let skip_constraint_check = m.skip_constraint_check(props);
        let prev_write = if skip_constraint_check {
            None
        } else {
            Some(self.check_for_newer_version(props, &m)?)
        };
        let is_subsequent_flush = generation > 0 && matches!(lock_status, LockStatus::Locked(_));
        if !lock_amended && !is_subsequent_flush {
            self.check_assertion(props, &m, prev_write)?;
        }
        if m.should_not_write() {
            self.update_max_ts(props.start_ts);
            return Ok(if props.commit_kind == CommitKind::TwoPc {
                0
            } else {
                props.min_commit_ts.max(props.start_ts.saturating_add(1))
            });
        }
        self.write_prewrite_lock(props, m, lock_status, generation, one_pc_locks)
    }

    /// Looks at an existing lock on the key: another transaction's is an error, the own
    /// pessimistic lock is to be replaced, the own prewrite lock makes the request a retry.
    fn check_own_lock(
        &self,
        props: &TxnProps,
        m: &mut PrewriteMutation,
        lock: Lock,
        generation: u64,
    ) -> Result<LockStatus, TxnError> {
        if lock.start_ts != props.start_ts {
            if m.pessimistic_action == PessimisticAction::DoPessimisticCheck {
                return Err(TxnError::PessimisticLockNotFound {
                    start_ts: props.start_ts,
                    key: m.key.clone(),
                    reason: LockNotFoundReason::LockTsMismatch,
                });
            }
            let mut info = lock.lock_info(&m.key);
            if props.is_pessimistic() {
                // A pessimistic txn must not wait for this lock's TTL: resolve it right away.
                info.lock_ttl = 0;
            }
            return Err(TxnError::KeyIsLocked(Box::new(info)));
        }
        if lock.is_pessimistic() {
            if !props.is_pessimistic() {
                return Err(TxnError::LockTypeNotMatch {
                    start_ts: props.start_ts,
                    key: m.key.clone(),
                    pessimistic: true,
                });
            }
            if let Some(expected) = m.expected_for_update_ts {
                if lock.for_update_ts != expected {
                    return Err(TxnError::PessimisticLockNotFound {
                        start_ts: props.start_ts,
                        key: m.key.clone(),
                        reason: LockNotFoundReason::LockForUpdateTsMismatch,
                    });
                }
            }
            m.lock_ttl = m.lock_ttl.max(lock.ttl);
            m.min_commit_ts = m.min_commit_ts.max(lock.min_commit_ts);
            return Ok(LockStatus::Pessimistic(lock.for_update_ts));
        }
        if generation > 0 && lock.generation >= generation {
            return Err(TxnError::GenerationOutOfOrder {
                generation,
                key: m.key.clone(),
                lock_generation: lock.generation,
            });
        }
        if lock.generation > 0 && m.should_not_exist() && lock.lock_type == LockType::Put {
            return Err(TxnError::AlreadyExist {
                key: m.key.clone(),
                existing_start_ts: lock.start_ts,
            });
        }
        Ok(LockStatus::Locked(if lock.use_async_commit {
            lock.min_commit_ts
        } else {
            0
        }))
    }

    /// A pessimistic key lost its lock: it may be re-created only if nothing newer was
    /// written meanwhile.
    fn amend_pessimistic_lock(
        &self,
        props: &TxnProps,
        m: &PrewriteMutation,
    ) -> Result<(), TxnError> {
        let latest = self
            .seek_write(&m.key, u64::MAX)
            .map(|(ts, w)| (ts, w.clone()));
        if let Some((commit_ts, _)) = &latest {
            if *commit_ts >= props.start_ts {
                return Err(TxnError::PessimisticLockNotFound {
                    start_ts: props.start_ts,
                    key: m.key.clone(),
                    reason: LockNotFoundReason::LockMissingAmendFail,
                });
            }
        }
        self.check_assertion(props, m, Some(latest))
    }

    /// Finds the newest record that matters for conflicts; returns it for the assertion.
    fn check_for_newer_version(
        &self,
        props: &TxnProps,
        m: &PrewriteMutation,
    ) -> Result<Option<(u64, Write)>, TxnError> {
        let mut seek_ts = u64::MAX;
        while let Some((commit_ts, write)) = self.seek_write(&m.key, seek_ts) {
            let conflict = |reason| TxnError::WriteConflict {
                start_ts: props.start_ts,
                conflict_start_ts: write.start_ts,
                conflict_commit_ts: commit_ts,
                key: m.key.clone(),
                primary: props.primary.clone(),
                reason,
            };
            if commit_ts == props.start_ts
                && (write.write_type == WriteType::Rollback || write.has_overlapped_rollback)
            {
                return Err(conflict(ConflictReason::SelfRolledBack));
            }
            match props.kind {
                TxnKind::Optimistic { .. } => {
                    if commit_ts > props.start_ts {
                        return Err(conflict(ConflictReason::Optimistic));
                    }
                }
                TxnKind::Pessimistic { for_update_ts } => {
                    if m.pessimistic_action == PessimisticAction::DoConstraintCheck
                        && commit_ts > props.start_ts
                    {
                        return Err(conflict(ConflictReason::LazyUniquenessCheck));
                    }
                    if commit_ts > for_update_ts {
                        if write.write_type == WriteType::Rollback {
                            seek_ts = commit_ts - 1;
                            continue;
                        }
                        return Err(TxnError::PessimisticLockNotFound {
                            start_ts: props.start_ts,
                            key: m.key.clone(),
                            reason: LockNotFoundReason::NonLockKeyConflict,
                        });
                    }
                }
            }
            self.check_data_constraint(m.should_not_exist(), write, commit_ts, &m.key)?;
            return Ok(Some((commit_ts, write.clone())));
        }
        Ok(None)
    }

    /// Insert / CheckNotExists: fails if the key has a value at this record.
    pub(super) fn check_data_constraint(
        &self,
        should_not_exist: bool,
        write: &Write,
        commit_ts: u64,
        key: &Bytes,
    ) -> Result<(), TxnError> {
        if !should_not_exist || write.write_type == WriteType::Delete {
            return Ok(());
        }
        let existing_start_ts = if write.write_type == WriteType::Put {
            Some(write.start_ts)
        } else {
            commit_ts
                .checked_sub(1)
                .and_then(|ts| self.get_write(key, ts))
                .map(|(_, w)| w.start_ts)
        };
        match existing_start_ts {
            Some(existing_start_ts) => Err(TxnError::AlreadyExist {
                key: key.clone(),
                existing_start_ts,
            }),
            None => Ok(()),
        }
    }

    /// Checks the mutation's Exist/NotExist assertion; `prev` is the record already loaded.
    fn check_assertion(
        &self,
        props: &TxnProps,
        m: &PrewriteMutation,
        prev: Option<Option<(u64, Write)>>,
    ) -> Result<(), TxnError> {
        if m.assertion == Assertion::None || props.assertion_level == AssertionLevel::Off {
            return Ok(());
        }
        if props.assertion_level != AssertionLevel::Strict && prev.is_none() {
            return Ok(());
        }
        // Lock and Rollback records say nothing about existence: look further down.
        let write = match prev {
            Some(Some((ts, w))) if matches!(w.write_type, WriteType::Put | WriteType::Delete) => {
                Some((ts, w))
            }
            Some(Some((ts, _))) => self.get_write(&m.key, ts).map(|(ts, w)| (ts, w.clone())),
            Some(None) => None,
            None => self
                .get_write(&m.key, u64::MAX)
                .map(|(ts, w)| (ts, w.clone())),
        };
        let failed = match (m.assertion, &write) {
            (Assertion::Exist, None) => Some((0, 0)),
            (Assertion::Exist, Some((ts, w))) if w.write_type == WriteType::Delete => {
                Some((w.start_ts, *ts))
            }
            (Assertion::NotExist, Some((ts, w))) if w.write_type == WriteType::Put => {
                Some((w.start_ts, *ts))
            }
            _ => None,
        };
        let Some((existing_start_ts, existing_commit_ts)) = failed else {
            return Ok(());
        };
        if m.skip_constraint_check(props) {
            // A write conflict explains a failed assertion better; report it first.
            self.check_for_newer_version(props, m)?;
        }
        Err(TxnError::AssertionFailed {
            start_ts: props.start_ts,
            key: m.key.clone(),
            assertion: m.assertion as i32,
            existing_start_ts,
            existing_commit_ts,
        })
    }

    fn write_prewrite_lock(
        &mut self,
        props: &TxnProps,
        m: PrewriteMutation,
        lock_status: LockStatus,
        generation: u64,
        one_pc_locks: &mut Vec<(Bytes, Lock, bool)>,
    ) -> Result<u64, TxnError> {
        let mut try_one_pc = matches!(props.commit_kind, CommitKind::OnePc(_));
        let for_update_ts = match lock_status {
            LockStatus::Pessimistic(locked) => props.for_update_ts().max(locked),
            _ => props.for_update_ts(),
        };
        let lock_type = match m.op {
            MutationOp::Put | MutationOp::Insert => LockType::Put,
            MutationOp::Delete => LockType::Delete,
            MutationOp::Lock | MutationOp::CheckNotExists => LockType::Lock,
        };
        let mut lock = Lock::new(lock_type, props.primary.clone(), props.start_ts, m.lock_ttl);
        lock.value = m.value;
        lock.for_update_ts = for_update_ts;
        lock.txn_size = props.txn_size;
        lock.min_commit_ts = m.min_commit_ts;
        lock.generation = generation;
        if let Some(secondaries) = m.secondaries {
            lock.use_async_commit = true;
            lock.secondaries = secondaries;
        } else if try_one_pc {
            lock.use_one_pc = true;
        }
        let result = if lock.use_async_commit || try_one_pc {
            let max_commit_ts = match props.commit_kind {
                CommitKind::OnePc(ts) | CommitKind::Async(ts) => ts,
                CommitKind::TwoPc => 0,
            };
            let min_commit_ts = self
                .max_ts
                .max(props.start_ts)
                .max(props.for_update_ts())
                .saturating_add(1)
                .max(lock.min_commit_ts);
            if max_commit_ts != 0 && min_commit_ts > max_commit_ts {
                try_one_pc = false;
                lock.use_one_pc = false;
                lock.use_async_commit = false;
                lock.secondaries = Vec::new();
                Err(TxnError::CommitTsTooLarge {
                    start_ts: props.start_ts,
                    min_commit_ts,
                    max_commit_ts,
                })
            } else {
                lock.min_commit_ts = min_commit_ts;
                Ok(min_commit_ts)
            }
        } else {
            Ok(0)
        };
        if let Some(mut shared) = m.shared_locks {
            // The sub-lock of a shared lock takes no part in pipelined, 1PC or async commit.
            if generation > 0 {
                return Err(TxnError::BadRequest(format!(
                    "shared lock prewrite does not support generation {generation}"
                )));
            }
            if try_one_pc {
                return Err(TxnError::BadRequest(
                    "shared lock prewrite is incompatible with one-phase commit".to_owned(),
                ));
            }
            if lock.use_async_commit {
                return Err(TxnError::BadRequest(
                    "shared lock prewrite cannot use async commit".to_owned(),
                ));
            }
            shared.locks.insert(props.start_ts, lock);
            self.put_shared_locks(&m.key, shared);
        } else if try_one_pc {
            let had_pessimistic_lock = matches!(lock_status, LockStatus::Pessimistic(_));
            one_pc_locks.push((m.key, lock, had_pessimistic_lock));
        } else {
            self.put_lock(&m.key, lock);
        }
        result
    }
}

/// A shared-lock prewrite found no shared pessimistic sub-lock of its own to turn into a
/// prewrite lock.
fn shared_lock_not_found(props: &TxnProps, m: &PrewriteMutation) -> TxnError {
    TxnError::PessimisticLockNotFound {
        start_ts: props.start_ts,
        key: m.key.clone(),
        reason: LockNotFoundReason::LockMissingAmendFail,
    }
}

/// Why a prewrite command wrote nothing.
enum PrewriteFailure {
    /// Keys locked by other transactions (all of them are reported).
    Locked(PrewriteOutcome),
    /// One failure that ends the command.
    Error(TxnError),
}

struct PrewriteOutcome {
    locks: Vec<TxnError>,
    min_commit_ts: u64,
    one_pc_commit_ts: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxnKind {
    Optimistic { skip_constraint_check: bool },
    Pessimistic { for_update_ts: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CommitKind {
    TwoPc,
    OnePc(u64),
    Async(u64),
}

struct TxnProps {
    start_ts: u64,
    kind: TxnKind,
    commit_kind: CommitKind,
    primary: Bytes,
    txn_size: u64,
    lock_ttl: u64,
    min_commit_ts: u64,
    is_retry_request: bool,
    assertion_level: AssertionLevel,
}

impl TxnProps {
    fn is_pessimistic(&self) -> bool {
        matches!(self.kind, TxnKind::Pessimistic { .. })
    }

    fn for_update_ts(&self) -> u64 {
        match self.kind {
            TxnKind::Optimistic { .. } => 0,
            TxnKind::Pessimistic { for_update_ts } => for_update_ts,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum LockStatus {
    /// The transaction's own prewrite lock (a retry); carries its async min_commit_ts.
    Locked(u64),
    /// The transaction's own pessimistic lock, with its for_update_ts.
    Pessimistic(u64),
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MutationOp {
    Put,
    Delete,
    Lock,
    Insert,
    CheckNotExists,
}

struct PrewriteMutation {
    key: Bytes,
    op: MutationOp,
    value: Option<Bytes>,
    assertion: Assertion,
    pessimistic_action: PessimisticAction,
    expected_for_update_ts: Option<u64>,
    /// `Some(list)` on the async-commit primary, `Some(empty)` on its secondaries.
    secondaries: Option<Vec<Bytes>>,
    lock_ttl: u64,
    min_commit_ts: u64,
    /// `Op::SharedLock`: prewrites the transaction's sub-lock of a shared lock.
    shared: bool,
    /// The key's shared locks holding the transaction's sub-lock, to write it back into.
    shared_locks: Option<SharedLocks>,
}

impl PrewriteMutation {
    fn from_pb(m: &kvrpcpb::Mutation, action: PessimisticAction) -> Result<Self, TxnError> {
        check_key(&m.key)?;
        let op = match kvrpcpb::Op::try_from(m.op) {
            Ok(kvrpcpb::Op::Put) => MutationOp::Put,
            Ok(kvrpcpb::Op::Del) => MutationOp::Delete,
            Ok(kvrpcpb::Op::Lock | kvrpcpb::Op::SharedLock) => MutationOp::Lock,
            Ok(kvrpcpb::Op::Insert) => MutationOp::Insert,
            Ok(kvrpcpb::Op::CheckNotExists) => MutationOp::CheckNotExists,
            _ => {
                return Err(TxnError::BadRequest(format!(
                    "op {} is not allowed in a prewrite",
                    m.op
                )));
            }
        };
        let assertion = Assertion::try_from(m.assertion)
            .map_err(|_| TxnError::BadRequest(format!("unknown assertion {}", m.assertion)))?;
        let value = matches!(op, MutationOp::Put | MutationOp::Insert).then(|| m.value.clone());
        Ok(Self {
            key: m.key.clone(),
            op,
            value,
            assertion,
            pessimistic_action: action,
            expected_for_update_ts: None,
            secondaries: None,
            lock_ttl: 0,
            min_commit_ts: 0,
            shared: m.op == kvrpcpb::Op::SharedLock as i32,
            shared_locks: None,
        })
    }

    fn should_not_exist(&self) -> bool {
        matches!(self.op, MutationOp::Insert | MutationOp::CheckNotExists)
    }

    fn should_not_write(&self) -> bool {
        self.op == MutationOp::CheckNotExists
    }

    fn skip_constraint_check(&self, props: &TxnProps) -> bool {
        match props.kind {
            TxnKind::Optimistic {
                skip_constraint_check,
            } => skip_constraint_check,
            TxnKind::Pessimistic { .. } => match self.pessimistic_action {
                PessimisticAction::DoPessimisticCheck => true,
                PessimisticAction::SkipPessimisticCheck => !props.is_retry_request,
                PessimisticAction::DoConstraintCheck => false,
            },
        }
    }
}

fn parse_prewrite(req: &kvrpcpb::PrewriteRequest) -> Result<Vec<PrewriteMutation>, TxnError> {
    let pessimistic = req.for_update_ts != 0;
    // TiKV pairs mutations and actions by position: extra actions are ignored and, with
    // fewer actions than mutations, the unpaired mutations are dropped. Clients rely on the
    // first half (client-rust sends the whole transaction's actions to every region).
    let count = if pessimistic {
        req.mutations.len().min(req.pessimistic_actions.len())
    } else {
        req.mutations.len()
    };
    let mut mutations = Vec::with_capacity(count);
    for (i, m) in req.mutations.iter().take(count).enumerate() {
        let action = if pessimistic {
            PessimisticAction::try_from(req.pessimistic_actions[i]).map_err(|_| {
                TxnError::BadRequest(format!(
                    "unknown pessimistic action {}",
                    req.pessimistic_actions[i]
                ))
            })?
        } else {
            PessimisticAction::SkipPessimisticCheck
        };
        mutations.push(PrewriteMutation::from_pb(m, action)?);
    }
    if pessimistic {
        for constraint in &req.for_update_ts_constraints {
            let m = mutations
                .get_mut(constraint.index as usize)
                .ok_or_else(|| {
                    TxnError::BadRequest(format!(
                        "for_update_ts constraint index {} out of range",
                        constraint.index
                    ))
                })?;
            m.expected_for_update_ts = Some(constraint.expected_for_update_ts);
        }
    }
    Ok(mutations)
}

fn assertion_level(level: i32) -> Result<AssertionLevel, PrewriteFailure> {
    AssertionLevel::try_from(level).map_err(|_| {
        PrewriteFailure::Error(TxnError::BadRequest(format!(
            "unknown assertion level {level}"
        )))
    })
}
