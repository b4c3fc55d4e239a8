//! [`Transaction`]: an optimistic transaction (client-go's `KVTxn`): reads from a snapshot
//! at its start timestamp through its own write buffer, writes buffered in the handle until
//! commit.
//!
//! The buffer lives in the handle and never crosses to the machine; only reads that miss it
//! and the commit do. A transaction ends with [`Transaction::commit`] or
//! [`Transaction::rollback`]; after that every call fails with [`Error::TxnFinished`].
//! Dropping an unfinished optimistic transaction leaves nothing behind (nothing was
//! written before commit).

use std::ops::RangeBounds;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::KeyRange;
use super::snapshot::Snapshot;
use crate::command::{MAX_RAW_SCAN_LIMIT, TxnCommand};
use crate::driver::Handle;
use crate::error::Error;
use crate::ops::txn::commit::{
    Assertion, AssertionLevel, CommitMode, CommitOptions, CommitOutcome, CommitRequest,
    CommitTsUpperBoundCheck, DiskFullOpt, Mutation, MutationOp, PrewriteLockPolicy,
};
use crate::ops::txn::{IsolationLevel, Priority};
use crate::oracle::Timestamp;
use crate::raw_client::KvPair;
use crate::time::Time;
use crate::txn::buffer::{BufferValue, FlagsOp, KeyFlags, MemDb, UnionScan, UnionStep};

/// Decides which buffered writes are not worth committing (client-go's `KVFilter`): given
/// a key, its value and its flags, `true` drops the write (a key that was locked still
/// gets its lock).
pub type KvFilter = Arc<dyn Fn(&[u8], &[u8], KeyFlags) -> bool + Send + Sync>;

/// Hears how each commit ended (client-go's commit callback): what was committed, or the
/// error.
pub type CommitCallback = Arc<dyn Fn(&CommitInfo, Option<&Error>) + Send + Sync>;

/// What a commit callback is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// The transaction's start timestamp.
    pub start_ts: Timestamp,
    /// Its commit timestamp (`None`: nothing was committed).
    pub commit_ts: Option<Timestamp>,
    /// The protocol used, when it committed.
    pub mode: Option<CommitMode>,
    /// Async commit was asked for but the commit fell back to two phases.
    pub async_commit_fallback: bool,
    /// 1PC was asked for but did not happen.
    pub one_pc_fallback: bool,
}

/// How a transaction begins, reads and commits (client-go's `TxnOptions` and `KVTxn`
/// setters). Built with `with_*` methods from [`TransactionOptions::new`].
#[derive(Clone, Default)]
pub struct TransactionOptions {
    start_ts: Option<Timestamp>,
    isolation: IsolationLevel,
    not_fill_cache: bool,
    commit: CommitOptions,
    kv_filter: Option<KvFilter>,
    commit_callback: Option<CommitCallback>,
}

impl std::fmt::Debug for TransactionOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionOptions")
            .field("start_ts", &self.start_ts)
            .field("isolation", &self.isolation)
            .field("not_fill_cache", &self.not_fill_cache)
            .field("commit", &self.commit)
            .field("kv_filter", &self.kv_filter.is_some())
            .field("commit_callback", &self.commit_callback.is_some())
            .finish()
    }
}

impl TransactionOptions {
    /// Defaults: a fresh TSO start timestamp, snapshot isolation, two-phase commit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts at `ts` instead of a fresh TSO timestamp.
    #[must_use]
    pub fn with_start_ts(mut self, ts: Timestamp) -> Self {
        self.start_ts = Some(ts);
        self
    }

    /// Reads under `level` (snapshot isolation by default).
    #[must_use]
    pub fn with_isolation(mut self, level: IsolationLevel) -> Self {
        self.isolation = level;
        self
    }

    /// Uses async commit when the transaction is small enough (see
    /// [`Config::with_async_commit_keys_limit`](crate::Config::with_async_commit_keys_limit)).
    #[must_use]
    pub fn with_async_commit(mut self, enabled: bool) -> Self {
        self.commit.async_commit = enabled;
        self
    }

    /// Tries 1PC when the writes fit one request to one region.
    #[must_use]
    pub fn with_try_one_pc(mut self, enabled: bool) -> Self {
        self.commit.try_one_pc = enabled;
        self
    }

    /// Gives up linearizability for async commit and 1PC (saves a TSO round trip): the
    /// commit timestamp only orders after what this client saw.
    #[must_use]
    pub fn with_causal_consistency(mut self, enabled: bool) -> Self {
        self.commit.causal_consistency = enabled;
        self
    }

    /// Commits only with a timestamp above `ts`, waiting at most `timeout` for TSO to pass
    /// it (client-go `SetCommitWaitUntilTSO`); a zero timeout fails at once when TSO is
    /// behind.
    #[must_use]
    pub fn with_commit_wait_until_tso(mut self, ts: Timestamp, timeout: Duration) -> Self {
        self.commit.commit_wait_until_tso = Some(ts);
        self.commit.commit_wait_until_tso_timeout = timeout;
        self
    }

    /// Schedules the transaction's requests at `priority`.
    #[must_use]
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.commit.priority = priority;
        self
    }

    /// Asks TiKV not to fill its block cache with what the transaction reads.
    #[must_use]
    pub fn with_not_fill_cache(mut self, not_fill_cache: bool) -> Self {
        self.not_fill_cache = not_fill_cache;
        self
    }

    /// Asks TiKV to sync its log on the commit's writes.
    #[must_use]
    pub fn with_sync_log(mut self, sync_log: bool) -> Self {
        self.commit.sync_log = sync_log;
        self
    }

    /// Labels the transaction's requests with `source`.
    #[must_use]
    pub fn with_request_source(mut self, source: impl Into<String>) -> Self {
        self.commit.request_source = source.into();
        self
    }

    /// Charges the transaction's requests to resource group `group`.
    #[must_use]
    pub fn with_resource_group(mut self, group: impl Into<String>) -> Self {
        self.commit.resource_group = group.into();
        self
    }

    /// Tags the commit's writes with `tag` in TiKV's resource accounting.
    #[must_use]
    pub fn with_resource_group_tag(mut self, tag: impl Into<Bytes>) -> Self {
        self.commit.resource_group_tag = tag.into();
        self
    }

    /// Lets the commit's writes proceed on an (almost) full disk.
    #[must_use]
    pub fn with_disk_full_opt(mut self, opt: DiskFullOpt) -> Self {
        self.commit.disk_full_opt = opt;
        self
    }

    /// Marks the transaction's writes with `source` (CDC tells replicated writes apart).
    #[must_use]
    pub fn with_txn_source(mut self, source: u64) -> Self {
        self.commit.txn_source = source;
        self
    }

    /// Has TiKV check the mutations' assertions at `level`.
    #[must_use]
    pub fn with_assertion_level(mut self, level: AssertionLevel) -> Self {
        self.commit.assertion_level = level;
        self
    }

    /// Commits only at a timestamp `check` accepts (client-go
    /// `SetCommitTSUpperBoundCheck`; TiDB bounds cached tables' writes by their lease).
    ///
    /// The check is asked once, about the two-phase commit timestamp, after TSO gave it
    /// (and after any [`with_commit_wait_until_tso`](Self::with_commit_wait_until_tso)
    /// wait) and before the primary is committed. When it returns `false` the commit
    /// fails with [`Error::CommitTsUpperBound`] and the prewritten locks are rolled back.
    /// A commit timestamp renewed because the primary's lock asked for a later one is not
    /// checked again, as in client-go. Setting a check turns async commit and 1PC off:
    /// their commit timestamps are chosen by the stores, past any check. It runs on the
    /// client's driver task, so it must be quick and must not block.
    ///
    /// ```
    /// # use tikv_core::transaction::TransactionOptions;
    /// # use tikv_core::Timestamp;
    /// let lease = Timestamp::compose(1_700_000_060_000, 0);
    /// let options = TransactionOptions::new()
    ///     .with_commit_ts_upper_bound_check(move |commit_ts| commit_ts < lease);
    /// ```
    #[must_use]
    pub fn with_commit_ts_upper_bound_check(
        mut self,
        check: impl Fn(Timestamp) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.commit.commit_ts_upper_bound_check = Some(CommitTsUpperBoundCheck::new(check));
        self
    }

    /// What the commit's prewrites do with other transactions' locks (client-go
    /// `SetPrewriteEncounterLockPolicy`): resolve them (the default), or, with
    /// [`PrewriteLockPolicy::NoResolve`], fail at the first lock met with a write conflict
    /// ([`KeyError::WriteConflict`](crate::error::KeyError::WriteConflict) naming the
    /// lock's start timestamp and key) without checking the lock's transaction, and roll
    /// back what was prewritten.
    #[must_use]
    pub fn with_prewrite_lock_policy(mut self, policy: PrewriteLockPolicy) -> Self {
        self.commit.prewrite_lock_policy = policy;
        self
    }

    /// Drops buffered writes `filter` says are not worth committing.
    #[must_use]
    pub fn with_kv_filter(mut self, filter: KvFilter) -> Self {
        self.kv_filter = Some(filter);
        self
    }

    /// Sets the commit's test levers (client-go's commit failpoints); only with the
    /// `testing` feature.
    #[cfg(any(test, feature = "testing"))]
    #[must_use]
    pub fn with_testing_knobs(mut self, knobs: crate::ops::txn::commit::CommitKnobs) -> Self {
        self.commit.knobs = knobs;
        self
    }

    /// Calls `callback` when a commit ends.
    #[must_use]
    pub fn with_commit_callback(mut self, callback: CommitCallback) -> Self {
        self.commit_callback = Some(callback);
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Active,
    /// A commit was tried (whatever its result).
    Committed,
    RolledBack,
}

/// An optimistic transaction. Made by [`Client::begin`](crate::Client::begin).
///
/// Reads see the snapshot at the start timestamp with this transaction's own writes over
/// it. Writes stay in the handle until [`commit`](Self::commit), which prewrites them and,
/// when no other transaction wrote the same keys since the start, commits them.
pub struct Transaction {
    handle: Handle,
    snapshot: Snapshot,
    begun_at: Time,
    buffer: MemDb,
    options: TransactionOptions,
    state: State,
    outcome: Option<CommitOutcome>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("start_ts", &self.start_ts())
            .field("buffer", &self.buffer)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Transaction {
    /// Begins a transaction with `options` through `handle`.
    pub(crate) async fn begin(handle: Handle, options: TransactionOptions) -> Result<Self, Error> {
        let (start_ts, begun_at) = handle
            .call(
                TxnCommand::Begin {
                    start_ts: options.start_ts,
                }
                .begin_call(),
            )
            .await?;
        let snapshot = Snapshot::new(handle.clone(), start_ts)
            .with_isolation(options.isolation)
            .with_priority(options.commit.priority)
            .with_not_fill_cache(options.not_fill_cache)
            .with_request_source(options.commit.request_source.clone())
            .with_resource_group(options.commit.resource_group.clone());
        Ok(Self {
            handle,
            snapshot,
            begun_at,
            buffer: MemDb::new(),
            options,
            state: State::Active,
            outcome: None,
        })
    }

    /// The start timestamp: reads see what committed before it.
    pub fn start_ts(&self) -> Timestamp {
        self.snapshot.timestamp()
    }

    /// The snapshot this transaction reads through (client-go's `GetSnapshot`): reads
    /// made on it see the start timestamp without this transaction's own writes, and share
    /// the transaction's read cache.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// How the transaction committed, once it has.
    pub fn commit_outcome(&self) -> Option<CommitOutcome> {
        self.outcome
    }

    /// The write buffer (client-go's `GetMemBuffer`): staging, flags, size.
    pub fn buffer(&self) -> &MemDb {
        &self.buffer
    }

    /// The write buffer, to stage writes or set key flags.
    ///
    /// Errors with [`Error::TxnFinished`] once the transaction ended.
    pub fn buffer_mut(&mut self) -> Result<&mut MemDb, Error> {
        self.check_active()?;
        Ok(&mut self.buffer)
    }

    fn check_active(&self) -> Result<(), Error> {
        match self.state {
            State::Active => Ok(()),
            State::Committed | State::RolledBack => Err(Error::TxnFinished {
                start_ts: self.start_ts(),
            }),
        }
    }

    /// The value of `key` as this transaction sees it: its own write, or the snapshot's.
    ///
    /// Errors with [`Error::TxnFinished`] once the transaction ended, or as
    /// [`Snapshot::get`] does.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>, Error> {
        self.check_active()?;
        let key = key.into();
        match self.buffer.get(&key) {
            Some(BufferValue::Put(value)) => Ok(Some(value.clone())),
            Some(BufferValue::Delete) => Ok(None),
            None => self.snapshot.get(key).await,
        }
    }

    /// Whether `key` exists as this transaction sees it.
    ///
    /// Errors like [`get`](Self::get).
    pub async fn key_exists(&self, key: impl Into<Bytes>) -> Result<bool, Error> {
        Ok(self.get(key).await?.is_some())
    }

    /// The pairs of those of `keys` that exist as this transaction sees them, in key
    /// order. Keys not in the buffer are read from the snapshot in one batch.
    ///
    /// Errors like [`get`](Self::get).
    pub async fn batch_get<K: Into<Bytes>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<KvPair>, Error> {
        self.check_active()?;
        let mut found = std::collections::BTreeMap::new();
        let mut missing = Vec::new();
        for key in keys {
            let key = key.into();
            match self.buffer.get(&key) {
                Some(BufferValue::Put(value)) => {
                    found.insert(key, value.clone());
                }
                Some(BufferValue::Delete) => {}
                None => missing.push(key),
            }
        }
        if !missing.is_empty() {
            for pair in self.snapshot.batch_get(missing).await? {
                found.insert(pair.key, pair.value);
            }
        }
        Ok(found
            .into_iter()
            .map(|(key, value)| KvPair { key, value })
            .collect())
    }

    /// Up to `limit` pairs of `range` in key order, this transaction's writes merged over
    /// the snapshot.
    ///
    /// Errors like [`get`](Self::get).
    pub async fn scan<K: AsRef<[u8]> + ?Sized>(
        &self,
        range: impl RangeBounds<K>,
        limit: u32,
    ) -> Result<Vec<KvPair>, Error> {
        self.scan_inner(KeyRange::from_bounds(&range), limit, false, false)
            .await
    }

    /// Like [`scan`](Self::scan), keys only.
    ///
    /// Errors like [`get`](Self::get).
    pub async fn scan_keys<K: AsRef<[u8]> + ?Sized>(
        &self,
        range: impl RangeBounds<K>,
        limit: u32,
    ) -> Result<Vec<Bytes>, Error> {
        let pairs = self
            .scan_inner(KeyRange::from_bounds(&range), limit, true, false)
            .await?;
        Ok(pairs.into_iter().map(|pair| pair.key).collect())
    }

    /// Up to `limit` pairs of `range` in descending key order, this transaction's writes
    /// merged over the snapshot.
    ///
    /// Errors like [`get`](Self::get).
    pub async fn scan_reverse<K: AsRef<[u8]> + ?Sized>(
        &self,
        range: impl RangeBounds<K>,
        limit: u32,
    ) -> Result<Vec<KvPair>, Error> {
        self.scan_inner(KeyRange::from_bounds(&range), limit, false, true)
            .await
    }

    async fn scan_inner(
        &self,
        range: Option<KeyRange>,
        limit: u32,
        key_only: bool,
        reverse: bool,
    ) -> Result<Vec<KvPair>, Error> {
        self.check_active()?;
        let Some(range) = range else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        // Each store batch asks for what is still wanted: buffered deletes may hide some.
        let mut scan = UnionScan::new(range.start_key, range.end_key, reverse);
        loop {
            match scan.next(&self.buffer) {
                UnionStep::Pair(key, value) => {
                    let value = if key_only { Bytes::new() } else { value };
                    out.push(KvPair { key, value });
                    if out.len() >= limit as usize {
                        return Ok(out);
                    }
                }
                UnionStep::Done => return Ok(out),
                UnionStep::NeedStore(store_range) => {
                    let wanted = (limit as usize - out.len()).clamp(1, MAX_RAW_SCAN_LIMIT as usize);
                    let wanted = u32::try_from(wanted).unwrap_or(MAX_RAW_SCAN_LIMIT);
                    let (start, end) = if reverse {
                        (store_range.upper, store_range.lower)
                    } else {
                        (store_range.lower, store_range.upper)
                    };
                    let entries = self
                        .snapshot
                        .read(TxnCommand::Scan {
                            start,
                            end,
                            limit: wanted,
                            batch_size: wanted,
                            key_only,
                            reverse,
                            options: self.snapshot.options(),
                        })
                        .await?;
                    let exhausted = entries.len() < wanted as usize;
                    let pairs = entries.into_iter().map(|e| (e.key, e.value)).collect();
                    scan.feed(pairs, exhausted)?;
                }
            }
        }
    }

    /// Writes `value` at `key` (buffered until commit).
    ///
    /// Errors with [`Error::Buffer`] for an empty or oversized key, an entry over the size
    /// limit, or a transaction over its total limit; with [`Error::TxnFinished`] once the
    /// transaction ended.
    pub fn put(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<(), Error> {
        self.check_active()?;
        let key = non_empty(key.into())?;
        self.buffer.set(key, value)?;
        Ok(())
    }

    /// Writes `value` at `key`, which must not exist: the commit fails with
    /// [`KeyError::AlreadyExists`](crate::error::KeyError::AlreadyExists) otherwise.
    ///
    /// Errors like [`put`](Self::put).
    pub fn insert(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<(), Error> {
        self.check_active()?;
        let key = non_empty(key.into())?;
        self.buffer
            .set_with_flags(key, value, &[FlagsOp::SetPresumeKeyNotExists])?;
        Ok(())
    }

    /// Deletes `key` (buffered until commit).
    ///
    /// Errors like [`put`](Self::put).
    pub fn delete(&mut self, key: impl Into<Bytes>) -> Result<(), Error> {
        self.check_active()?;
        let key = non_empty(key.into())?;
        self.buffer.delete(key)?;
        Ok(())
    }

    /// Locks `keys` at commit without writing them, so that the commit fails if another
    /// transaction wrote any of them since this one started (optimistic `LockKeys`).
    ///
    /// Errors like [`put`](Self::put).
    pub fn lock_keys<K: Into<Bytes>>(
        &mut self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<(), Error> {
        self.check_active()?;
        for key in keys {
            let key = non_empty(key.into())?;
            self.buffer.update_flags(key, &[FlagsOp::SetKeyLocked])?;
        }
        Ok(())
    }

    /// The mutations the buffer commits, in key order, with the primary and the size
    /// (client-go `initKeysAndMutations`).
    fn mutations(&mut self) -> Result<(Vec<Mutation>, Option<Bytes>, u64), Error> {
        let mut mutations = Vec::with_capacity(self.buffer.len());
        let mut primary: Option<Bytes> = None;
        let mut size = 0u64;
        let mut prewrite_only = Vec::new();
        let filter = self.options.kv_filter.clone();
        let assertions = self.options.commit.assertion_level != AssertionLevel::Off;
        for entry in self.buffer.iter_with_flags::<std::ops::RangeFull>(..) {
            let flags = entry.flags;
            let (op, value) = match entry.value {
                None => {
                    if !flags.has_locked() {
                        continue;
                    }
                    (MutationOp::Lock, Bytes::new())
                }
                Some(BufferValue::Put(value)) => {
                    let unneeded = filter
                        .as_ref()
                        .is_some_and(|filter| filter(entry.key, value, flags));
                    if unneeded {
                        if !flags.has_locked() {
                            continue;
                        }
                        (MutationOp::Lock, Bytes::new())
                    } else if flags.has_presume_key_not_exists() {
                        (MutationOp::Insert, value.clone())
                    } else {
                        (MutationOp::Put, value.clone())
                    }
                }
                Some(BufferValue::Delete) => {
                    let unneeded = filter
                        .as_ref()
                        .is_some_and(|filter| filter(entry.key, &[], flags));
                    if unneeded {
                        continue;
                    }
                    if flags.has_presume_key_not_exists() {
                        // A delete of a key this transaction inserted: check at prewrite
                        // that it still does not exist, commit nothing for it.
                        prewrite_only.push(entry.key.clone());
                        (MutationOp::CheckNotExists, Bytes::new())
                    } else if flags.has_newly_inserted() {
                        if !flags.has_locked() {
                            continue;
                        }
                        (MutationOp::Lock, Bytes::new())
                    } else {
                        (MutationOp::Delete, Bytes::new())
                    }
                }
            };
            let assertion = if !assertions {
                Assertion::None
            } else if flags.has_assert_exist() {
                Assertion::Exist
            } else if flags.has_assert_not_exist() {
                Assertion::NotExist
            } else {
                Assertion::None
            };
            if primary.is_none() && op != MutationOp::CheckNotExists {
                primary = Some(entry.key.clone());
            }
            size += (entry.key.len() + value.len()) as u64;
            mutations.push(Mutation {
                op,
                key: entry.key.clone(),
                value,
                assertion,
                pessimistic: false,
                constraint_check: flags.has_need_constraint_check_in_prewrite(),
            });
        }
        for key in prewrite_only {
            self.buffer.update_flags(key, &[FlagsOp::SetPrewriteOnly])?;
        }
        Ok((mutations, primary, size))
    }

    /// Commits the transaction: its writes become visible at the returned commit
    /// timestamp, or none do. `None` when there was nothing to write. The transaction is
    /// finished either way.
    ///
    /// Errors with [`Error::Key`] for a write conflict
    /// ([`KeyError::WriteConflict`](crate::error::KeyError::WriteConflict)), a key that
    /// exists where [`insert`](Self::insert) required it not to, or another refused key;
    /// with [`Error::CommitTsUpperBound`] when the commit timestamp fails
    /// [the upper bound check](TransactionOptions::with_commit_ts_upper_bound_check);
    /// with [`Error::Undetermined`] when the commit's outcome is unknown (a lost reply to
    /// the deciding request): read back before acting on either outcome; with
    /// [`Error::TxnFinished`] when called again.
    pub async fn commit(&mut self) -> Result<Option<Timestamp>, Error> {
        self.check_active()?;
        self.state = State::Committed;
        let start_ts = self.start_ts();
        let (mutations, primary, size) = self.mutations()?;
        // Only existence checks (keys inserted, then deleted again): they are still
        // prewritten, so that a key that exists fails the commit as in client-go, with the
        // first key as the primary; nothing is committed after them.
        let checks_only = primary.is_none();
        let primary = match (primary, mutations.first()) {
            (Some(primary), _) => primary,
            (None, Some(first)) => first.key.clone(),
            (None, None) => {
                self.notify(&Ok(None));
                return Ok(None);
            }
        };
        let request = CommitRequest {
            start_ts,
            begun_at: self.begun_at,
            mutations,
            primary,
            size,
            options: self.options.commit.clone(),
        };
        let result = self
            .handle
            .call(TxnCommand::Commit(Box::new(request)).commit_call())
            .await;
        let result = result.map(|outcome| {
            if checks_only {
                return None;
            }
            self.outcome = Some(outcome);
            Some(outcome)
        });
        self.notify(&result);
        result.map(|outcome| outcome.map(|o| o.commit_ts))
    }

    fn notify(&self, result: &Result<Option<CommitOutcome>, Error>) {
        let Some(callback) = &self.options.commit_callback else {
            return;
        };
        let outcome = result.as_ref().ok().copied().flatten();
        let info = CommitInfo {
            start_ts: self.start_ts(),
            commit_ts: outcome.map(|o| o.commit_ts),
            mode: outcome.map(|o| o.mode),
            async_commit_fallback: outcome.is_some_and(|o| o.async_commit_fallback),
            one_pc_fallback: outcome.is_some_and(|o| o.one_pc_fallback),
        };
        callback(&info, result.as_ref().err());
    }

    /// Abandons the transaction: its buffered writes are dropped. Rolling back again is
    /// harmless.
    ///
    /// Errors with [`Error::TxnFinished`] once a commit was tried.
    pub fn rollback(&mut self) -> Result<(), Error> {
        if self.state == State::Committed {
            return Err(Error::TxnFinished {
                start_ts: self.start_ts(),
            });
        }
        self.state = State::RolledBack;
        self.buffer.reset();
        Ok(())
    }
}

fn non_empty(key: Bytes) -> Result<Bytes, Error> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("empty key".to_owned()));
    }
    Ok(key)
}
