//! Snapshot reads: Get, BatchGet, Scan, ScanLock, BufferBatchGet, MvccGetByKey.

use bytes::Bytes;
use tikv_proto::kvrpcpb::{self, IsolationLevel, write_conflict::Reason as ConflictReason};

use super::error::TxnError;
use super::store::{LockType, MvccStore, WriteType};

impl MvccStore {
    /// KvGet: reads `key` at `version` under the context's isolation level.
    ///
    /// A blocking lock comes back as `error.locked`; RCCheckTS conflicts as `error.conflict`;
    /// a missing key sets `not_found`. Every read but a stale one raises `max_ts` to
    /// `version`.
    pub fn get(&mut self, req: &kvrpcpb::GetRequest) -> kvrpcpb::GetResponse {
        let result = ReadOptions::new(req.context.as_ref(), req.version).and_then(|opts| {
            self.note_read(&opts);
            self.point_get(&req.key, &opts, req.need_commit_ts)
        });
        match result {
            Ok(Some((value, commit_ts))) => kvrpcpb::GetResponse {
                value,
                commit_ts,
                ..Default::default()
            },
            Ok(None) => kvrpcpb::GetResponse {
                not_found: true,
                ..Default::default()
            },
            Err(e) => kvrpcpb::GetResponse {
                error: Some(Box::new(e.to_key_error())),
                ..Default::default()
            },
        }
    }

    /// KvBatchGet: reads `keys` at `version`; missing keys are left out of `pairs`.
    ///
    /// A per-key failure becomes a pair with only `error` set (TiKV leaves its key empty);
    /// a whole-request failure sets `error` and also the first pair's error.
    pub fn batch_get(&mut self, req: &kvrpcpb::BatchGetRequest) -> kvrpcpb::BatchGetResponse {
        let opts = match ReadOptions::new(req.context.as_ref(), req.version) {
            Ok(opts) => opts,
            Err(e) => {
                let error = e.to_key_error();
                return kvrpcpb::BatchGetResponse {
                    pairs: vec![error_pair(error.clone())],
                    error: Some(Box::new(error)),
                    ..Default::default()
                };
            }
        };
        self.note_read(&opts);
        let mut pairs = Vec::new();
        for key in &req.keys {
            match self.point_get(key, &opts, req.need_commit_ts) {
                Ok(Some((value, commit_ts))) => pairs.push(kvrpcpb::KvPair {
                    key: key.clone(),
                    value,
                    commit_ts,
                    ..Default::default()
                }),
                Ok(None) => {}
                Err(e) => pairs.push(error_pair(e.to_key_error())),
            }
        }
        kvrpcpb::BatchGetResponse {
            pairs,
            ..Default::default()
        }
    }

    /// KvScan: reads a key range at `version`, forward or reverse.
    ///
    /// Forward covers `[start_key, end_key)`; reverse covers `[end_key, start_key)` from the
    /// top (an empty `end_key` is unbounded, an empty `start_key` in reverse is an empty
    /// range, as in TiKV). Locked keys become error pairs and count toward `limit`;
    /// `sample_step` n keeps every n-th found pair.
    pub fn scan(&mut self, req: &kvrpcpb::ScanRequest) -> kvrpcpb::ScanResponse {
        let result = ReadOptions::new(req.context.as_ref(), req.version).and_then(|opts| {
            self.note_read(&opts);
            self.scan_pairs(req, &opts)
        });
        match result {
            Ok(pairs) => kvrpcpb::ScanResponse {
                pairs,
                ..Default::default()
            },
            Err(e) => {
                let error = e.to_key_error();
                kvrpcpb::ScanResponse {
                    pairs: vec![error_pair(error.clone())],
                    error: Some(Box::new(error)),
                    ..Default::default()
                }
            }
        }
    }

    /// KvScanLock: lists locks with start ts ≤ `max_version` in `[start_key, end_key)`.
    ///
    /// A key's shared locks come as one `SharedLock` entry listing the holders that pass the
    /// filter; `limit` (0 = no limit) counts holders, and a shared lock that would pass it
    /// keeps its smallest start ts only, as TiKV's `scan_locks_from_storage` does. Raises
    /// `max_ts` to `max_version`.
    pub fn scan_lock(&mut self, req: &kvrpcpb::ScanLockRequest) -> kvrpcpb::ScanLockResponse {
        self.update_max_ts(req.max_version);
        let upper = (!req.end_key.is_empty()).then_some(&req.end_key);
        let limit = if req.limit == 0 {
            usize::MAX
        } else {
            req.limit as usize
        };
        let in_range = |key: &Bytes| key >= &req.start_key && upper.is_none_or(|u| key < u);
        let mut keys: Vec<&Bytes> = self
            .locks
            .range(req.start_key.clone()..)
            .map(|(key, _)| key)
            .chain(
                self.shared_locks
                    .range(req.start_key.clone()..)
                    .map(|(k, _)| k),
            )
            .filter(|key| in_range(key))
            .collect();
        keys.sort();
        let mut locks = Vec::new();
        let mut count = 0;
        for key in keys {
            if count >= limit {
                break;
            }
            if let Some(lock) = self.locks.get(key) {
                if lock.start_ts <= req.max_version {
                    locks.push(lock.lock_info(key));
                    count += 1;
                }
            } else if let Some(shared) = self.shared_locks.get(key) {
                let mut holders = shared.clone();
                holders
                    .locks
                    .retain(|start_ts, _| *start_ts <= req.max_version);
                let room = limit - count;
                while holders.locks.len() > room {
                    holders.locks.pop_last();
                }
                if !holders.locks.is_empty() {
                    count += holders.locks.len();
                    locks.push(holders.lock_info(key));
                }
            }
        }
        kvrpcpb::ScanLockResponse {
            locks,
            ..Default::default()
        }
    }

    /// KvBufferBatchGet: reads the pipelined transaction `version`'s own flushed locks.
    ///
    /// A Put lock gives its value, a Delete lock an empty value; keys without an own Put or
    /// Delete lock are left out. Raises `max_ts` to `version` like any other read.
    pub fn buffer_batch_get(
        &mut self,
        req: &kvrpcpb::BufferBatchGetRequest,
    ) -> kvrpcpb::BufferBatchGetResponse {
        if !req.context.as_ref().is_some_and(|ctx| ctx.stale_read) {
            self.update_max_ts(req.version);
        }
        let mut pairs = Vec::new();
        for key in &req.keys {
            let Some(lock) = self.load_lock(key) else {
                continue;
            };
            if lock.start_ts != req.version {
                continue;
            }
            let value = match lock.lock_type {
                LockType::Put => lock.value.clone().unwrap_or_default(),
                LockType::Delete => Bytes::new(),
                LockType::Lock | LockType::Pessimistic => continue,
            };
            pairs.push(kvrpcpb::KvPair {
                key: key.clone(),
                value,
                ..Default::default()
            });
        }
        kvrpcpb::BufferBatchGetResponse {
            pairs,
            ..Default::default()
        }
    }

    /// MvccGetByKey: dumps the lock, write records and values of one key (newest first).
    pub fn mvcc_get_by_key(
        &self,
        req: &kvrpcpb::MvccGetByKeyRequest,
    ) -> kvrpcpb::MvccGetByKeyResponse {
        let lock = self.load_lock(&req.key).map(|lock| {
            let info = lock.lock_info(&req.key);
            kvrpcpb::MvccLock {
                r#type: info.lock_type,
                start_ts: lock.start_ts,
                primary: lock.primary.clone(),
                short_value: lock.value.clone().unwrap_or_default(),
                ttl: lock.ttl,
                for_update_ts: lock.for_update_ts,
                txn_size: lock.txn_size,
                use_async_commit: lock.use_async_commit,
                secondaries: lock.secondaries.clone(),
                rollback_ts: lock.rollback_ts.clone(),
                ..Default::default()
            }
        });
        let mut writes = Vec::new();
        let mut values = Vec::new();
        if let Some(versions) = self.writes.get(&req.key) {
            for (commit_ts, write) in versions.iter().rev() {
                let op = match write.write_type {
                    WriteType::Put => kvrpcpb::Op::Put,
                    WriteType::Delete => kvrpcpb::Op::Del,
                    WriteType::Lock => kvrpcpb::Op::Lock,
                    WriteType::Rollback => kvrpcpb::Op::Rollback,
                };
                writes.push(kvrpcpb::MvccWrite {
                    r#type: op as i32,
                    start_ts: write.start_ts,
                    commit_ts: *commit_ts,
                    short_value: write.value.clone().unwrap_or_default(),
                    has_overlapped_rollback: write.has_overlapped_rollback,
                    ..Default::default()
                });
                if let Some(value) = &write.value {
                    values.push(kvrpcpb::MvccValue {
                        start_ts: write.start_ts,
                        value: value.clone(),
                    });
                }
            }
        }
        let info = (lock.is_some() || !writes.is_empty()).then_some(kvrpcpb::MvccInfo {
            lock,
            writes,
            values,
        });
        kvrpcpb::MvccGetByKeyResponse {
            info,
            ..Default::default()
        }
    }

    /// Raises `max_ts` to the read's timestamp, for every isolation level, as TiKV's
    /// `prepare_snap_ctx` does before it takes a snapshot. Stale reads leave it alone: they
    /// read below the resolved ts and cannot be overtaken by a commit.
    fn note_read(&mut self, opts: &ReadOptions) {
        if !opts.stale_read {
            self.update_max_ts(opts.ts);
        }
    }

    /// Reads one key: `Some((value, commit_ts))`, commit ts only with `need_commit_ts`.
    fn point_get(
        &self,
        key: &Bytes,
        opts: &ReadOptions,
        need_commit_ts: bool,
    ) -> Result<Option<(Bytes, u64)>, TxnError> {
        if let Some(value) = self.check_read_lock(key, opts, !need_commit_ts)? {
            return Ok(value.map(|v| (v, 0)));
        }
        self.check_newer_write(key, opts)?;
        Ok(self
            .visible_value(key, opts.ts)
            .map(|(commit_ts, value)| (value, if need_commit_ts { commit_ts } else { 0 })))
    }

    /// Checks the key's lock against the read; `Some(value)` means "read through the lock"
    /// (a lock of a transaction the reader knows is committed).
    fn check_read_lock(
        &self,
        key: &Bytes,
        opts: &ReadOptions,
        allow_committed_lock: bool,
    ) -> Result<Option<Option<Bytes>>, TxnError> {
        if opts.isolation == IsolationLevel::Rc {
            return Ok(None);
        }
        let Some(lock) = self.load_lock(key) else {
            return Ok(None);
        };
        if matches!(lock.lock_type, LockType::Lock | LockType::Pessimistic)
            || opts.resolved_locks.contains(&lock.start_ts)
        {
            return Ok(None);
        }
        let error = if opts.isolation == IsolationLevel::RcCheckTs {
            TxnError::WriteConflict {
                start_ts: opts.ts,
                conflict_start_ts: lock.start_ts,
                conflict_commit_ts: 0,
                key: key.clone(),
                primary: lock.primary.clone(),
                reason: ConflictReason::RcCheckTs,
            }
        } else {
            if lock.start_ts > opts.ts || lock.min_commit_ts > opts.ts {
                return Ok(None);
            }
            // Reading the latest version may skip a primary lock of a plain 2PC txn.
            if opts.ts == u64::MAX
                && key == &lock.primary
                && !lock.use_async_commit
                && !lock.use_one_pc
            {
                return Ok(None);
            }
            TxnError::KeyIsLocked(Box::new(lock.lock_info(key)))
        };
        if allow_committed_lock && opts.committed_locks.contains(&lock.start_ts) {
            return Ok(Some(match lock.lock_type {
                LockType::Put => Some(lock.value.clone().unwrap_or_default()),
                _ => None,
            }));
        }
        Err(error)
    }

    /// RCCheckTS: any record newer than the read ts is a conflict.
    fn check_newer_write(&self, key: &Bytes, opts: &ReadOptions) -> Result<(), TxnError> {
        if opts.isolation != IsolationLevel::RcCheckTs {
            return Ok(());
        }
        if let Some((commit_ts, _)) = self.seek_write(key, u64::MAX) {
            if commit_ts > opts.ts {
                return Err(TxnError::WriteConflict {
                    start_ts: opts.ts,
                    conflict_start_ts: 0,
                    conflict_commit_ts: commit_ts,
                    key: key.clone(),
                    primary: Bytes::new(),
                    reason: ConflictReason::RcCheckTs,
                });
            }
        }
        Ok(())
    }

    /// The newest committed value at or below `ts`, with its commit ts.
    pub(super) fn visible_value(&self, key: &[u8], ts: u64) -> Option<(u64, Bytes)> {
        self.get_write(key, ts)
            .map(|(commit_ts, write)| (commit_ts, write.value.clone().unwrap_or_default()))
    }

    fn scan_pairs(
        &self,
        req: &kvrpcpb::ScanRequest,
        opts: &ReadOptions,
    ) -> Result<Vec<kvrpcpb::KvPair>, TxnError> {
        let end = (!req.end_key.is_empty()).then_some(&req.end_key[..]);
        let keys = if req.reverse {
            self.iter_keys_in_range(end, Some(&req.start_key[..]), true)
        } else {
            self.iter_keys_in_range(Some(&req.start_key[..]), end, false)
        };
        let limit = req.limit as usize;
        let mut pairs = Vec::new();
        let mut found = 0usize;
        for key in keys {
            if pairs.len() >= limit {
                break;
            }
            let value = match self.check_read_lock(&key, opts, true) {
                Ok(Some(from_lock)) => from_lock,
                Ok(None) => {
                    self.check_newer_write(&key, opts)?;
                    self.visible_value(&key, opts.ts).map(|(_, v)| v)
                }
                Err(e @ TxnError::KeyIsLocked(_)) => {
                    pairs.push(error_pair(e.to_key_error()));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(value) = value else {
                continue;
            };
            if req.sample_step > 0 {
                found += 1;
                if (found - 1) % req.sample_step as usize != 0 {
                    continue;
                }
            }
            pairs.push(kvrpcpb::KvPair {
                key,
                value: if req.key_only { Bytes::new() } else { value },
                ..Default::default()
            });
        }
        Ok(pairs)
    }
}

/// How a read treats locks, from the request context.
struct ReadOptions {
    ts: u64,
    isolation: IsolationLevel,
    stale_read: bool,
    resolved_locks: Vec<u64>,
    committed_locks: Vec<u64>,
}

impl ReadOptions {
    fn new(ctx: Option<&kvrpcpb::Context>, ts: u64) -> Result<Self, TxnError> {
        let Some(ctx) = ctx else {
            return Ok(Self {
                ts,
                isolation: IsolationLevel::Si,
                stale_read: false,
                resolved_locks: Vec::new(),
                committed_locks: Vec::new(),
            });
        };
        let isolation = IsolationLevel::try_from(ctx.isolation_level).map_err(|_| {
            TxnError::BadRequest(format!("unknown isolation level {}", ctx.isolation_level))
        })?;
        Ok(Self {
            ts,
            isolation,
            stale_read: ctx.stale_read,
            resolved_locks: ctx.resolved_locks.clone(),
            committed_locks: ctx.committed_locks.clone(),
        })
    }
}

fn error_pair(error: kvrpcpb::KeyError) -> kvrpcpb::KvPair {
    kvrpcpb::KvPair {
        error: Some(Box::new(error)),
        ..Default::default()
    }
}
