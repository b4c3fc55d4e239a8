//! [`Snapshot`]: consistent reads of the transactional key space at one timestamp
//! (client-go's `KVSnapshot`).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::KeyRange;
pub use super::snapshot_cache::SnapshotCacheStats;
use super::snapshot_cache::{CachedValue, SnapshotCache};
use crate::command::TxnCommand;
use crate::driver::Handle;
use crate::error::Error;
use crate::ops::txn::{IsolationLevel, Priority, ReadOptions, SnapshotRead, TxnEntry};
use crate::oracle::Timestamp;
use crate::raw_client::KvPair;
use crate::resolver::ReadLockSets;

/// Rows a scanner fetches per call by default (client-go's scan batch size).
pub const DEFAULT_SCAN_BATCH_SIZE: u32 = 256;

/// A read-only view of the transactional key space as of one timestamp.
///
/// Reads see every transaction committed before the timestamp and nothing after it. A read
/// that meets another transaction's lock resolves it (or waits for it, within the read's
/// backoff budget); what it learns is kept by the snapshot (and its clones), so later reads
/// skip or read through the same locks without asking again.
///
/// Point reads ([`get`](Self::get), [`batch_get`](Self::batch_get) and their commit
/// timestamp forms) are cached, as client-go's `KVSnapshot` caches them: what a key held at
/// the timestamp never changes, so a key read once, found or not, is answered from the
/// cache afterwards. A read asking for commit timestamps uses a cached value only if its
/// timestamp is known. Scans neither use nor fill the cache; a snapshot at
/// [`Timestamp::MAX`] (always the latest data) caches nothing. The cache belongs to the
/// handle and its clones; see [`cache_stats`](Self::cache_stats),
/// [`update_cache`](Self::update_cache) and [`clean_cache`](Self::clean_cache).
///
/// Cheap to clone. Made by [`Client::snapshot`](crate::Client::snapshot).
#[derive(Clone, Debug)]
pub struct Snapshot {
    handle: Handle,
    options: ReadOptions,
    learned: Arc<Mutex<ReadLockSets>>,
    cache: Arc<Mutex<SnapshotCache>>,
}

impl Snapshot {
    pub(crate) fn new(handle: Handle, ts: Timestamp) -> Self {
        Self {
            handle,
            options: ReadOptions::at(ts),
            learned: Arc::default(),
            cache: Arc::default(),
        }
    }

    /// The read timestamp.
    pub fn timestamp(&self) -> Timestamp {
        self.options.ts
    }

    /// This snapshot reading under `level` (snapshot isolation by default). A changed level
    /// starts an empty cache: values read under one level are not answers for another.
    #[must_use]
    pub fn with_isolation(mut self, level: IsolationLevel) -> Self {
        if self.options.isolation != level {
            self.cache = Arc::default();
        }
        self.options.isolation = level;
        self
    }

    /// This snapshot's requests scheduled at `priority`.
    #[must_use]
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.options.priority = priority;
        self
    }

    /// This snapshot asking TiKV not to fill its block cache with what it reads (for large
    /// one-off reads).
    #[must_use]
    pub fn with_not_fill_cache(mut self, not_fill_cache: bool) -> Self {
        self.options.not_fill_cache = not_fill_cache;
        self
    }

    /// This snapshot's requests labelled with `source` (TiKV accounts work per source).
    #[must_use]
    pub fn with_request_source(mut self, source: impl Into<String>) -> Self {
        self.options.request_source = source.into();
        self
    }

    /// This snapshot's requests charged to resource group `group`.
    #[must_use]
    pub fn with_resource_group(mut self, group: impl Into<String>) -> Self {
        self.options.resource_group = group.into();
        self
    }

    /// The value of `key`, or `None` when it does not exist at the read timestamp.
    ///
    /// Errors with [`Error::InvalidArgument`] for an empty key; with
    /// [`Error::BackoffExhausted`] when a lock stays alive (or the region unreachable) past
    /// the read's backoff budget; with [`Error::Key`] for a key error other than a lock.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>, Error> {
        Ok(self.get_entry(key.into(), false).await?.value)
    }

    /// The value of `key` and when it was committed, or `None` when it does not exist.
    ///
    /// Errors like [`get`](Self::get), and with [`Error::UnexpectedResponse`] when TiKV
    /// answers a value without its commit timestamp.
    pub async fn get_with_commit_ts(
        &self,
        key: impl Into<Bytes>,
    ) -> Result<Option<(Bytes, Timestamp)>, Error> {
        let entry = self.get_entry(key.into(), true).await?;
        entry
            .value
            .map(|value| Ok((value, required_commit_ts(entry.commit_ts)?)))
            .transpose()
    }

    /// The pairs of those of `keys` that exist, in key order; keys that do not exist are
    /// left out. Keys in several regions are read from each region in parallel.
    ///
    /// Errors like [`get`](Self::get).
    pub async fn batch_get<K: Into<Bytes>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<KvPair>, Error> {
        let found = self.batch_entries(keys, false).await?;
        Ok(found
            .into_iter()
            .map(|(key, value)| KvPair {
                key,
                value: value.0,
            })
            .collect())
    }

    /// Like [`batch_get`](Self::batch_get), each pair with the timestamp its value was
    /// committed at (client-go's `BatchGet` with `WithReturnCommitTS`).
    ///
    /// Errors like [`get_with_commit_ts`](Self::get_with_commit_ts).
    pub async fn batch_get_with_commit_ts<K: Into<Bytes>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<(KvPair, Timestamp)>, Error> {
        let found = self.batch_entries(keys, true).await?;
        found
            .into_iter()
            .map(|(key, (value, commit_ts))| {
                Ok((KvPair { key, value }, required_commit_ts(commit_ts)?))
            })
            .collect()
    }

    /// What this snapshot's cache holds and how often it answered.
    pub fn cache_stats(&self) -> SnapshotCacheStats {
        self.cache().stats()
    }

    /// Records values of keys at this snapshot's timestamp, for later reads to find in the
    /// cache (client-go's `UpdateSnapshotCache`): `Some(value)` for a key that exists,
    /// `None` for one that does not. The caller vouches for them: reads answer with them as
    /// they are. Nothing is recorded at [`Timestamp::MAX`].
    pub fn update_cache<K: Into<Bytes>, V: Into<Bytes>>(
        &self,
        entries: impl IntoIterator<Item = (K, Option<V>)>,
    ) {
        if !self.caches() {
            return;
        }
        let mut cache = self.cache();
        for (key, value) in entries {
            let key: Bytes = key.into();
            if key.is_empty() {
                // No read of an empty key reaches the cache: it is refused.
                continue;
            }
            let value = value.map_or_else(CachedValue::missing, |value| {
                CachedValue::found(value.into(), None)
            });
            cache.insert(key, value);
        }
    }

    /// Forgets the cached values of `keys`, so that the next read of each goes to the store
    /// (client-go's `CleanCache`).
    pub fn clean_cache<K: AsRef<[u8]>>(&self, keys: impl IntoIterator<Item = K>) {
        let mut cache = self.cache();
        for key in keys {
            cache.remove(key.as_ref());
        }
    }

    /// Whether reads fill the cache: not for a snapshot of the latest data, whose answers
    /// change.
    fn caches(&self) -> bool {
        self.options.ts != Timestamp::MAX
    }

    fn cache(&self) -> MutexGuard<'_, SnapshotCache> {
        match self.cache.lock() {
            Ok(cache) => cache,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// One key's value, from the cache or the store (which then fills the cache).
    async fn get_entry(&self, key: Bytes, need_commit_ts: bool) -> Result<CachedValue, Error> {
        if let Some(hit) = self.cache().lookup(&key, need_commit_ts) {
            return Ok(hit);
        }
        let mut options = self.options();
        options.need_commit_ts = need_commit_ts;
        let entries = self
            .read(TxnCommand::Get {
                key: key.clone(),
                options,
            })
            .await?;
        let entry = entries
            .into_iter()
            .next()
            .map_or_else(CachedValue::missing, |entry| {
                CachedValue::found(entry.value, entry.commit_ts)
            });
        if self.caches() {
            self.cache().insert(key, entry.clone());
        }
        Ok(entry)
    }

    /// The existing ones of `keys` with their values and commit timestamps (when known),
    /// from the cache where it can answer and from the store for the rest.
    async fn batch_entries<K: Into<Bytes>>(
        &self,
        keys: impl IntoIterator<Item = K>,
        need_commit_ts: bool,
    ) -> Result<BTreeMap<Bytes, (Bytes, Option<Timestamp>)>, Error> {
        let keys: BTreeSet<Bytes> = keys.into_iter().map(Into::into).collect();
        let mut found = BTreeMap::new();
        let mut misses = Vec::new();
        {
            let mut cache = self.cache();
            for key in keys {
                match cache.lookup(&key, need_commit_ts) {
                    Some(CachedValue {
                        value: Some(value),
                        commit_ts,
                    }) => {
                        found.insert(key, (value, commit_ts));
                    }
                    Some(CachedValue { value: None, .. }) => {}
                    None => misses.push(key),
                }
            }
        }
        if misses.is_empty() {
            return Ok(found);
        }
        let mut options = self.options();
        options.need_commit_ts = need_commit_ts;
        let entries = self
            .read(TxnCommand::BatchGet {
                keys: misses.clone(),
                options,
            })
            .await?;
        let fetched: BTreeMap<Bytes, CachedValue> = entries
            .into_iter()
            .map(|entry| (entry.key, CachedValue::found(entry.value, entry.commit_ts)))
            .collect();
        if self.caches() {
            self.cache().fill(&misses, &fetched);
        }
        for (key, entry) in fetched {
            if let Some(value) = entry.value {
                found.insert(key, (value, entry.commit_ts));
            }
        }
        Ok(found)
    }

    /// Up to `limit` pairs of `range`, in key order.
    ///
    /// Errors like [`get`](Self::get).
    pub async fn scan<K: AsRef<[u8]> + ?Sized>(
        &self,
        range: impl RangeBounds<K>,
        limit: u32,
    ) -> Result<Vec<KvPair>, Error> {
        self.scan_inner(&range, limit, false, false).await
    }

    /// Like [`scan`](Self::scan), keys only.
    ///
    /// Errors like [`get`](Self::get).
    pub async fn scan_keys<K: AsRef<[u8]> + ?Sized>(
        &self,
        range: impl RangeBounds<K>,
        limit: u32,
    ) -> Result<Vec<Bytes>, Error> {
        let pairs = self.scan_inner(&range, limit, true, false).await?;
        Ok(pairs.into_iter().map(|pair| pair.key).collect())
    }

    /// Up to `limit` pairs of `range` in descending key order (the range is written low
    /// to high and read from its upper end down).
    ///
    /// Errors with [`Error::InvalidArgument`] for a range without an upper bound outside a
    /// keyspace, or like [`get`](Self::get).
    pub async fn scan_reverse<K: AsRef<[u8]> + ?Sized>(
        &self,
        range: impl RangeBounds<K>,
        limit: u32,
    ) -> Result<Vec<KvPair>, Error> {
        self.scan_inner(&range, limit, false, true).await
    }

    /// A scanner over `range` that fetches `batch_size` pairs per call of
    /// [`Scanner::next_batch`] (client-go's `Iter` with its scan batch size), so a large
    /// range is read a piece at a time.
    pub fn scanner<K: AsRef<[u8]> + ?Sized>(
        &self,
        range: impl RangeBounds<K>,
        batch_size: u32,
    ) -> Scanner {
        let range = KeyRange::from_bounds(&range);
        Scanner {
            snapshot: self.clone(),
            range,
            batch_size: batch_size.max(1),
            key_only: false,
            reverse: false,
        }
    }

    async fn scan_inner<K: AsRef<[u8]> + ?Sized>(
        &self,
        range: &impl RangeBounds<K>,
        limit: u32,
        key_only: bool,
        reverse: bool,
    ) -> Result<Vec<KvPair>, Error> {
        let Some(range) = KeyRange::from_bounds(range) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (start, end) = if reverse {
            (range.end_key, range.start_key)
        } else {
            (range.start_key, range.end_key)
        };
        let entries = self
            .read(TxnCommand::Scan {
                start,
                end,
                limit,
                // One request per region for the whole limit: fewer round trips than batches.
                batch_size: limit,
                key_only,
                reverse,
                options: self.options(),
            })
            .await?;
        Ok(entries.into_iter().map(pair).collect())
    }

    pub(crate) fn options(&self) -> ReadOptions {
        let mut options = self.options.clone();
        options.locks = self.learned_now();
        options
    }

    fn learned_now(&self) -> ReadLockSets {
        match self.learned.lock() {
            Ok(learned) => learned.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) async fn read(&self, command: TxnCommand) -> Result<Vec<TxnEntry>, Error> {
        let SnapshotRead { entries, learned } = self.handle.call(command.read_call()).await?;
        if !learned.is_empty() {
            let mut sets = match self.learned.lock() {
                Ok(sets) => sets,
                Err(poisoned) => poisoned.into_inner(),
            };
            sets.merge(&learned);
        }
        Ok(entries)
    }
}

/// The commit timestamp a read asked for; TiKV always sends one (client-go's
/// `checkCommitTSRequired` fails the read the same way when it does not).
fn required_commit_ts(commit_ts: Option<Timestamp>) -> Result<Timestamp, Error> {
    commit_ts.ok_or_else(|| {
        Error::UnexpectedResponse("commit timestamp is required but not returned".to_owned())
    })
}

fn pair(entry: TxnEntry) -> KvPair {
    KvPair {
        key: entry.key,
        value: entry.value,
    }
}

/// Reads a range of a [`Snapshot`] a batch at a time.
#[derive(Debug)]
pub struct Scanner {
    snapshot: Snapshot,
    /// What is left to read (`None`: nothing).
    range: Option<KeyRange>,
    batch_size: u32,
    key_only: bool,
    reverse: bool,
}

impl Scanner {
    /// This scanner returning keys only.
    #[must_use]
    pub fn keys_only(mut self) -> Self {
        self.key_only = true;
        self
    }

    /// This scanner reading from the range's upper end down.
    #[must_use]
    pub fn reversed(mut self) -> Self {
        self.reverse = true;
        self
    }

    /// The next batch of up to the batch size pairs, or `None` once the range is read.
    ///
    /// Errors like [`Snapshot::get`]; the scanner can be called again after an error and
    /// resumes where it stood.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<KvPair>>, Error> {
        let Some(range) = self.range.clone() else {
            return Ok(None);
        };
        let pairs = self
            .snapshot
            .scan_inner(&range, self.batch_size, self.key_only, self.reverse)
            .await?;
        let full = pairs.len() >= self.batch_size as usize;
        self.range = match (full, pairs.last()) {
            (true, Some(last)) if self.reverse => Some(KeyRange {
                start_key: range.start_key,
                end_key: last.key.clone(),
            })
            .filter(|rest| !rest.end_key.is_empty() && rest.start_key < rest.end_key),
            (true, Some(last)) => {
                let mut next = Vec::with_capacity(last.key.len() + 1);
                next.extend_from_slice(&last.key);
                next.push(0);
                let start_key = Bytes::from(next);
                Some(KeyRange {
                    start_key,
                    end_key: range.end_key,
                })
                .filter(|rest| rest.end_key.is_empty() || rest.start_key < rest.end_key)
            }
            _ => None,
        };
        if pairs.is_empty() {
            return Ok(None);
        }
        Ok(Some(pairs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_timestamp_asked_for_must_come_back() {
        let ts = Timestamp::from_version(42);
        assert_eq!(required_commit_ts(Some(ts)).ok(), Some(ts));
        assert!(matches!(
            required_commit_ts(None),
            Err(Error::UnexpectedResponse(message)) if message.contains("required")
        ));
    }
}
