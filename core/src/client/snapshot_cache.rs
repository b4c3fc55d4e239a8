//! The values a [`Snapshot`](super::snapshot::Snapshot) has read (client-go's `KVSnapshot`
//! cache): a read at one timestamp always gives the same answer, so a key read once (found
//! or not) need not be read from the store again.
//!
//! Plain data held by the handle; it never crosses to the machine.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::oracle::Timestamp;

/// Total size at which the cache starts dropping entries (client-go's 10 GiB
/// `cachedSizeLimit`).
pub(crate) const CACHE_SIZE_LIMIT: u64 = 10 << 30;

/// What a snapshot's cache holds and how often it answered, as
/// [`Snapshot::cache_stats`](super::snapshot::Snapshot::cache_stats) reports it (client-go's
/// `SnapCacheHitCount` and `SnapCacheSize`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotCacheStats {
    /// Keys answered from the cache instead of the store.
    pub hits: u64,
    /// Keys cached (found or known not to exist).
    pub entries: usize,
    /// Bytes accounted for them: keys, values and a fixed overhead per entry.
    pub size_bytes: u64,
}

/// One key's value at the snapshot's timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CachedValue {
    /// `None`: the key does not exist.
    pub(crate) value: Option<Bytes>,
    /// When the value was committed, if the read that brought it asked.
    pub(crate) commit_ts: Option<Timestamp>,
}

impl CachedValue {
    /// An existing key's value.
    pub(crate) fn found(value: Bytes, commit_ts: Option<Timestamp>) -> Self {
        Self {
            value: Some(value),
            commit_ts,
        }
    }

    /// A key that does not exist.
    pub(crate) fn missing() -> Self {
        Self {
            value: None,
            commit_ts: None,
        }
    }

    fn size(&self) -> u64 {
        // A fixed part per entry, as client-go counts its value struct, plus the bytes.
        let overhead = size_of::<Self>() as u64;
        overhead + self.value.as_ref().map_or(0, |v| v.len() as u64)
    }
}

/// The cache: key to value, with its accounted size and hit count.
#[derive(Debug)]
pub(crate) struct SnapshotCache {
    /// A B-tree, not a hash map: eviction order is the same on every run.
    entries: BTreeMap<Bytes, CachedValue>,
    size: u64,
    hits: u64,
    limit: u64,
}

impl Default for SnapshotCache {
    fn default() -> Self {
        Self::with_limit(CACHE_SIZE_LIMIT)
    }
}

impl SnapshotCache {
    /// An empty cache that starts evicting at `limit` bytes.
    pub(crate) fn with_limit(limit: u64) -> Self {
        Self {
            entries: BTreeMap::new(),
            size: 0,
            hits: 0,
            limit,
        }
    }

    /// The cached value of `key`, if the cache can answer: with `need_commit_ts`, only a
    /// value whose commit timestamp is known (or a key known not to exist) can. A value
    /// read without `need_commit_ts` comes back without its commit timestamp, as a store
    /// read would. Counts a hit when it answers.
    pub(crate) fn lookup(&mut self, key: &[u8], need_commit_ts: bool) -> Option<CachedValue> {
        let cached = self.entries.get(key)?;
        let answer = match (&cached.value, need_commit_ts) {
            (None, _) => CachedValue::missing(),
            (Some(value), false) => CachedValue::found(value.clone(), None),
            (Some(value), true) => {
                let commit_ts = cached.commit_ts?;
                CachedValue::found(value.clone(), Some(commit_ts))
            }
        };
        self.hits += 1;
        Some(answer)
    }

    /// Records what a read of `keys` found: `found` holds the keys that exist; every other
    /// key of `keys` is recorded as not existing (client-go's `UpdateSnapshotCache`). Past
    /// the size limit, other entries are dropped (in key order) until it is under again;
    /// the keys just recorded stay.
    pub(crate) fn fill(&mut self, keys: &[Bytes], found: &BTreeMap<Bytes, CachedValue>) {
        for key in keys {
            let value = found.get(key).cloned().unwrap_or_else(CachedValue::missing);
            self.insert(key.clone(), value);
        }
        if self.size < self.limit {
            return;
        }
        let keep: std::collections::BTreeSet<&Bytes> = keys.iter().collect();
        let victims: Vec<Bytes> = self
            .entries
            .keys()
            .filter(|key| !keep.contains(key))
            .cloned()
            .collect();
        for key in victims {
            if self.size < self.limit {
                break;
            }
            self.remove(&key);
        }
    }

    /// Records one key's value.
    pub(crate) fn insert(&mut self, key: Bytes, mut value: CachedValue) {
        let added = key.len() as u64 + value.size();
        if let Some(old) = self.entries.get(&key) {
            // The same value, read once with its commit timestamp: keep the timestamp.
            if value.commit_ts.is_none() && old.value == value.value {
                value.commit_ts = old.commit_ts;
            }
        }
        if let Some(old) = self.entries.insert(key.clone(), value) {
            self.size = self.size.saturating_sub(key.len() as u64 + old.size());
        }
        self.size = self.size.saturating_add(added);
    }

    /// Forgets `key` (client-go's `CleanCache`).
    pub(crate) fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.entries.remove(key) {
            self.size = self.size.saturating_sub(key.len() as u64 + old.size());
        }
    }

    /// Its counters.
    pub(crate) fn stats(&self) -> SnapshotCacheStats {
        SnapshotCacheStats {
            hits: self.hits,
            entries: self.entries.len(),
            size_bytes: self.size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    fn b(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    fn ts(version: u64) -> Timestamp {
        Timestamp::from_version(version)
    }

    #[test]
    fn a_read_fills_found_and_missing_keys() {
        let mut cache = SnapshotCache::default();
        let found = BTreeMap::from([(b("x"), CachedValue::found(b("1"), None))]);
        cache.fill(&[b("x"), b("y")], &found);
        assert_eq!(
            cache.lookup(b"x", false),
            Some(CachedValue::found(b("1"), None))
        );
        assert_eq!(cache.lookup(b"y", false), Some(CachedValue::missing()));
        assert_eq!(cache.lookup(b"z", false), None);
        assert_eq!(cache.stats().hits, 2);
        assert_eq!(cache.stats().entries, 2);
    }

    #[test]
    fn a_commit_ts_read_is_answered_only_with_a_known_commit_ts() {
        let mut cache = SnapshotCache::default();
        cache.insert(b("a"), CachedValue::found(b("1"), None));
        cache.insert(b("gone"), CachedValue::missing());
        // The value without its commit timestamp cannot answer; a missing key can.
        assert_eq!(cache.lookup(b"a", true), None);
        assert_eq!(cache.lookup(b"gone", true), Some(CachedValue::missing()));
        cache.insert(b("a"), CachedValue::found(b("1"), Some(ts(7))));
        assert_eq!(
            cache.lookup(b"a", true),
            Some(CachedValue::found(b("1"), Some(ts(7))))
        );
        // A plain read gets the value without the timestamp, as from the store.
        assert_eq!(
            cache.lookup(b"a", false),
            Some(CachedValue::found(b("1"), None))
        );
        // A later plain read of the same value keeps the known timestamp.
        cache.insert(b("a"), CachedValue::found(b("1"), None));
        assert_eq!(
            cache.lookup(b"a", true),
            Some(CachedValue::found(b("1"), Some(ts(7))))
        );
    }

    #[test]
    fn sizes_count_keys_values_and_overhead_and_come_back_to_zero() {
        let overhead = size_of::<CachedValue>() as u64;
        let mut cache = SnapshotCache::default();
        cache.insert(b("key"), CachedValue::found(b("value"), None));
        assert_eq!(cache.stats().size_bytes, 3 + 5 + overhead);
        // Replacing counts the key once.
        cache.insert(b("key"), CachedValue::found(b("v"), None));
        assert_eq!(cache.stats().size_bytes, 3 + 1 + overhead);
        cache.insert(b("k2"), CachedValue::missing());
        assert_eq!(cache.stats().size_bytes, 3 + 1 + 2 + 2 * overhead);
        cache.remove(b"key");
        cache.remove(b"absent");
        cache.remove(b"k2");
        assert_eq!(cache.stats().size_bytes, 0);
        assert_eq!(cache.stats().entries, 0);
    }

    #[test]
    fn past_the_limit_older_entries_go_and_the_new_ones_stay() {
        let overhead = size_of::<CachedValue>() as u64;
        // Room for about three one-byte entries.
        let mut cache = SnapshotCache::with_limit(3 * (2 + overhead) + 1);
        for key in ["a", "b", "c"] {
            cache.fill(
                &[b(key)],
                &BTreeMap::from([(b(key), CachedValue::found(b("1"), None))]),
            );
        }
        assert_eq!(cache.stats().entries, 3);
        let fresh = [b("d"), b("e")];
        cache.fill(&fresh, &BTreeMap::new());
        assert!(cache.stats().size_bytes < 3 * (2 + overhead) + 1);
        assert_eq!(cache.lookup(b"d", false), Some(CachedValue::missing()));
        assert_eq!(cache.lookup(b"e", false), Some(CachedValue::missing()));
        // The first keys in order went first.
        assert_eq!(cache.lookup(b"a", false), None);
        assert_eq!(cache.lookup(b"b", false), None);
        assert!(cache.lookup(b"c", false).is_some());
    }

    quickcheck! {
        fn the_size_is_the_sum_of_what_is_cached(ops: Vec<(u8, u8, bool)>) -> bool {
            let mut cache = SnapshotCache::default();
            let mut model: BTreeMap<Bytes, CachedValue> = BTreeMap::new();
            for (key, value_len, remove) in ops {
                let key = Bytes::from(vec![key % 8]);
                if remove {
                    cache.remove(&key);
                    model.remove(&key);
                } else {
                    let value = (value_len % 4 != 0)
                        .then(|| Bytes::from(vec![0; usize::from(value_len)]));
                    let value = CachedValue { value, commit_ts: None };
                    cache.insert(key.clone(), value.clone());
                    model.insert(key, value);
                }
            }
            let expected: u64 = model.iter().map(|(k, v)| k.len() as u64 + v.size()).sum();
            cache.stats().size_bytes == expected && cache.stats().entries == model.len()
        }
    }
}
