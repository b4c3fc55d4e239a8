//! The store itself: locks (exclusive and shared) and write records per key, max_ts, the
//! transaction status cache, and per-command atomicity.

use std::collections::BTreeMap;

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use super::deadlock::DeadlockDetector;
use super::error::TxnError;
use super::txn_status::TxnStatusCache;

/// The in-memory Percolator store of the whole simulated cluster.
///
/// Every method runs one TiKV command to completion: it takes the request by reference and
/// returns the response with `region_error` unset. A command either applies all its changes
/// or none (like a TiKV write batch). Reads at a timestamp and some status checks raise the
/// store's `max_ts`, which async commit and 1PC use to pick commit timestamps.
#[derive(Clone, Debug, Default)]
pub struct MvccStore {
    pub(super) locks: BTreeMap<Bytes, Lock>,
    /// Keys held by shared locks. A key is in at most one of `locks` and `shared_locks`, as
    /// TiKV's lock column holds either one lock or one `SharedLocks` value per key.
    pub(super) shared_locks: BTreeMap<Bytes, SharedLocks>,
    /// Write records per key, keyed by commit ts (the start ts for rollbacks).
    pub(super) writes: BTreeMap<Bytes, BTreeMap<u64, Write>>,
    pub(super) max_ts: u64,
    pub(super) detector: DeadlockDetector,
    pub(super) txn_status: TxnStatusCache,
    undo: Vec<Undo>,
    pending_released: Vec<ReleasedLock>,
    released: Vec<ReleasedLock>,
    pending_new_locks: Vec<kvrpcpb::LockInfo>,
    new_locks: Vec<kvrpcpb::LockInfo>,
}

/// The locks of a range that keep its resolved ts back (see
/// [`MvccStore::resolver_locks`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolverLocks {
    /// The smallest start ts of an ordinary Put or Delete lock.
    pub oldest: Option<u64>,
    /// Start ts of pipelined transactions holding Put or Delete locks.
    pub large_txns: std::collections::BTreeSet<u64>,
}

/// A lock that a command removed, so that requests waiting on the key can be woken up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleasedLock {
    /// The key that is now unlocked.
    pub key: Bytes,
    /// The start ts of the transaction that held the lock.
    pub start_ts: u64,
    /// The commit ts if the lock was committed, 0 if it was rolled back or just released.
    pub commit_ts: u64,
    /// Whether the lock's transaction was pessimistic.
    pub pessimistic: bool,
}

impl MvccStore {
    /// Creates an empty store with `max_ts` 0
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys with any version or lock in `[start, end)` (empty end = unbounded), their bytes
    /// (keys and stored values of every version) and the middle key.
    pub fn range_stats(&self, start: &[u8], end: &[u8]) -> crate::raw::RangeStats {
        let upper = if end.is_empty() {
            std::ops::Bound::Unbounded
        } else {
            std::ops::Bound::Excluded(end)
        };
        let mut stats = crate::raw::RangeStats::default();
        let mut keys = Vec::new();
        for (key, versions) in self
            .writes
            .range::<[u8], _>((std::ops::Bound::Included(start), upper))
        {
            stats.keys += 1;
            stats.bytes += key.len() as u64 * versions.len().max(1) as u64;
            keys.push(key.clone());
        }
        stats.middle_key = keys.get(keys.len() / 2).cloned();
        stats
    }

    /// Every entry in `[start, end)` (empty end = unbounded) as TiKV's split checker scans
    /// them, in key order with keys as stored (request space): one committed version per
    /// write record (key, 8-byte timestamp and value bytes) and one lock entry per lock
    /// (key and value bytes, not a committed version).
    pub fn split_check_entries(&self, start: &[u8], end: &[u8]) -> Vec<crate::cluster::SplitEntry> {
        use std::ops::Bound;
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        let range = (Bound::Included(start), upper);
        let mut entries = Vec::new();
        let mut locks = self.locks.range::<[u8], _>(range).peekable();
        for (key, versions) in self.writes.range::<[u8], _>(range) {
            // Locks on keys before this one (keys without versions yet) come first.
            while let Some((lock_key, lock)) = locks.next_if(|(lock_key, _)| *lock_key <= key) {
                entries.push(lock_entry(lock_key, lock));
            }
            for write in versions.values() {
                entries.push(crate::cluster::SplitEntry {
                    key: key.clone(),
                    size: key.len() as u64 + 8 + write.value.as_ref().map_or(0, |v| v.len() as u64),
                    commit_version: true,
                });
            }
        }
        entries.extend(locks.map(|(lock_key, lock)| lock_entry(lock_key, lock)));
        entries
    }

    /// Returns the largest timestamp any read or status check has announced so far
    pub fn max_ts(&self) -> u64 {
        self.max_ts
    }

    /// Raises `max_ts` to `ts` (ignored for `u64::MAX`), as a TSO-synced leader would
    pub fn update_max_ts(&mut self, ts: u64) {
        if ts != u64::MAX && ts > self.max_ts {
            self.max_ts = ts;
        }
    }

    /// Replaces `max_ts`: the cluster layer keeps one `max_ts` per store (TiKV's
    /// `ConcurrencyManager` is per store) and installs the serving store's before each
    /// command.
    pub fn set_max_ts(&mut self, ts: u64) {
        self.max_ts = ts;
    }

    /// Swaps the store's transaction status cache with `other`: the cluster layer keeps one
    /// cache per TiKV store and installs the serving store's around each command.
    pub(crate) fn swap_txn_status_cache(&mut self, other: &mut TxnStatusCache) {
        std::mem::swap(&mut self.txn_status, other);
    }

    /// The locks of `[start, end)` (empty end = unbounded) that keep a resolved ts back, as
    /// TiKV's resolver tracks them: Put and Delete locks only (pessimistic, `Lock`-type and
    /// shared locks never commit data), pipelined ones (generation above 0) by transaction.
    pub fn resolver_locks(&self, start: &[u8], end: &[u8]) -> ResolverLocks {
        let mut locks = ResolverLocks::default();
        for (_, lock) in self.locks_in_range(start, end) {
            if !matches!(lock.lock_type, LockType::Put | LockType::Delete) {
                continue;
            }
            if lock.generation > 0 {
                locks.large_txns.insert(lock.start_ts);
            } else {
                locks.oldest = Some(
                    locks
                        .oldest
                        .map_or(lock.start_ts, |ts| ts.min(lock.start_ts)),
                );
            }
        }
        locks
    }

    /// The pessimistic locks (not yet prewritten) on keys in `[start, end)` (empty end =
    /// unbounded): `(key, start_ts, for_update_ts)` in key order.
    pub fn pessimistic_locks_in(&self, start: &[u8], end: &[u8]) -> Vec<(Bytes, u64, u64)> {
        self.locks_in_range(start, end)
            .filter(|(_, lock)| lock.is_pessimistic())
            .map(|(key, lock)| (key.clone(), lock.start_ts, lock.for_update_ts))
            .collect()
    }

    /// Removes the pessimistic lock of `start_ts` on `key` without a trace (no rollback
    /// record, no waiter woken), as a TiKV leader's in-memory lock table is lost; returns
    /// whether there was one.
    pub fn lose_pessimistic_lock(&mut self, key: &[u8], start_ts: u64) -> bool {
        let lost = self
            .locks
            .get(key)
            .is_some_and(|lock| lock.is_pessimistic() && lock.start_ts == start_ts);
        if lost {
            self.locks.remove(key);
        }
        lost
    }

    /// Returns and forgets the locks released by commands since the last call
    pub fn take_released_locks(&mut self) -> Vec<ReleasedLock> {
        std::mem::take(&mut self.released)
    }

    /// Returns and forgets the locks that commands placed on unlocked keys since the last call
    /// (TiKV's `new_acquired_locks`, which refresh the lock-wait information of waiters).
    pub fn take_new_locks(&mut self) -> Vec<kvrpcpb::LockInfo> {
        std::mem::take(&mut self.new_locks)
    }

    /// Returns and forgets the keys whose locks were released since the last call
    pub fn take_released_keys(&mut self) -> Vec<Bytes> {
        self.take_released_locks()
            .into_iter()
            .map(|released| released.key)
            .collect()
    }

    /// Returns the deadlock detector (the wait-for graph of pessimistic lock waits)
    pub fn deadlock_detector(&self) -> &DeadlockDetector {
        &self.detector
    }

    /// Runs one command: keeps its changes if it returns `Ok`, undoes all of them otherwise.
    pub(super) fn atomically<T, E>(
        &mut self,
        command: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<T, E> {
        self.undo.clear();
        self.pending_released.clear();
        self.pending_new_locks.clear();
        let result = command(self);
        match &result {
            Ok(_) => {
                self.undo.clear();
                self.new_locks.append(&mut self.pending_new_locks);
                for released in std::mem::take(&mut self.pending_released) {
                    if released.pessimistic {
                        // A finished pessimistic transaction waits for nobody any more.
                        self.detector.clean_up(released.start_ts);
                    }
                    self.released.push(released);
                }
            }
            Err(_) => self.discard_changes(),
        }
        result
    }

    /// Undoes every change of the running command so far.
    pub(super) fn discard_changes(&mut self) {
        while let Some(undo) = self.undo.pop() {
            match undo {
                Undo::Lock { key, previous } => match previous {
                    Some(lock) => {
                        self.locks.insert(key, lock);
                    }
                    None => {
                        self.locks.remove(&key);
                    }
                },
                Undo::Write {
                    key,
                    commit_ts,
                    previous,
                } => self.set_write(key, commit_ts, previous),
                Undo::Shared { key, previous } => match previous {
                    Some(shared) => {
                        self.shared_locks.insert(key, shared);
                    }
                    None => {
                        self.shared_locks.remove(&key);
                    }
                },
            }
        }
        self.pending_released.clear();
        self.pending_new_locks.clear();
    }

    /// The locks on keys in `[start, end)` (empty end = unbounded), in key order.
    pub(super) fn locks_in_range<'a>(
        &'a self,
        start: &'a [u8],
        end: &'a [u8],
    ) -> impl Iterator<Item = (&'a Bytes, &'a Lock)> + 'a {
        use std::ops::Bound;
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        // An inverted range is empty (BTreeMap::range would panic on it).
        let valid = end.is_empty() || start < end;
        valid
            .then(|| self.locks.range::<[u8], _>((Bound::Included(start), upper)))
            .into_iter()
            .flatten()
    }

    pub(super) fn load_lock(&self, key: &[u8]) -> Option<&Lock> {
        self.locks.get(key)
    }

    pub(super) fn put_lock(&mut self, key: &Bytes, lock: Lock) {
        if !self.locks.contains_key(key) {
            self.pending_new_locks.push(lock.lock_info(key));
        }
        let previous = self.locks.insert(key.clone(), lock);
        self.undo.push(Undo::Lock {
            key: key.clone(),
            previous,
        });
    }

    /// Removes the key's lock and remembers it as released.
    pub(super) fn unlock_key(&mut self, key: &Bytes, commit_ts: u64) {
        if let Some(previous) = self.locks.remove(key) {
            self.pending_released.push(ReleasedLock {
                key: key.clone(),
                start_ts: previous.start_ts,
                commit_ts,
                pessimistic: previous.is_pessimistic_txn(),
            });
            self.undo.push(Undo::Lock {
                key: key.clone(),
                previous: Some(previous),
            });
        }
    }

    pub(super) fn load_shared_locks(&self, key: &[u8]) -> Option<&SharedLocks> {
        self.shared_locks.get(key)
    }

    /// Writes the key's shared locks; a new set counts as a newly acquired lock.
    pub(super) fn put_shared_locks(&mut self, key: &Bytes, shared: SharedLocks) {
        if !self.shared_locks.contains_key(key) {
            self.pending_new_locks.push(shared.lock_info(key));
        }
        let previous = self.shared_locks.insert(key.clone(), shared);
        self.undo.push(Undo::Shared {
            key: key.clone(),
            previous,
        });
    }

    /// Writes back what is left of a key's shared locks after the transaction `start_ts` left
    /// them; when none is left the key is unlocked and waiters may be woken, as TiKV only
    /// reports a released lock when the whole set is gone.
    pub(super) fn write_back_shared_locks(
        &mut self,
        key: &Bytes,
        shared: SharedLocks,
        start_ts: u64,
        commit_ts: u64,
    ) {
        if !shared.locks.is_empty() {
            self.put_shared_locks(key, shared);
            return;
        }
        if let Some(previous) = self.shared_locks.remove(key) {
            self.pending_released.push(ReleasedLock {
                key: key.clone(),
                start_ts,
                commit_ts,
                pessimistic: true,
            });
            self.undo.push(Undo::Shared {
                key: key.clone(),
                previous: Some(previous),
            });
        }
    }

    pub(super) fn put_write(&mut self, key: &Bytes, commit_ts: u64, write: Write) {
        // One search of the key map: this runs for every key of every commit.
        let previous = self
            .writes
            .entry(key.clone())
            .or_default()
            .insert(commit_ts, write);
        self.undo.push(Undo::Write {
            key: key.clone(),
            commit_ts,
            previous,
        });
    }

    pub(super) fn delete_write(&mut self, key: &Bytes, commit_ts: u64) {
        let previous = self
            .writes
            .get(key)
            .and_then(|w| w.get(&commit_ts))
            .cloned();
        if previous.is_some() {
            self.set_write(key.clone(), commit_ts, None);
            self.undo.push(Undo::Write {
                key: key.clone(),
                commit_ts,
                previous,
            });
        }
    }

    fn set_write(&mut self, key: Bytes, commit_ts: u64, write: Option<Write>) {
        match write {
            Some(write) => {
                self.writes.entry(key).or_default().insert(commit_ts, write);
            }
            None => {
                if let Some(versions) = self.writes.get_mut(&key) {
                    versions.remove(&commit_ts);
                    if versions.is_empty() {
                        self.writes.remove(&key);
                    }
                }
            }
        }
    }

    /// Returns the newest write record of `key` with commit ts ≤ `ts`.
    pub(super) fn seek_write(&self, key: &[u8], ts: u64) -> Option<(u64, &Write)> {
        self.writes
            .get(key)?
            .range(..=ts)
            .next_back()
            .map(|(commit_ts, write)| (*commit_ts, write))
    }

    /// Returns the newest `Put` at or below `ts`, skipping Lock/Rollback; `None` at a Delete.
    pub(super) fn get_write(&self, key: &[u8], ts: u64) -> Option<(u64, &Write)> {
        let versions = self.writes.get(key)?;
        for (commit_ts, write) in versions.range(..=ts).rev() {
            match write.write_type {
                WriteType::Put => return Some((*commit_ts, write)),
                WriteType::Delete => return None,
                WriteType::Lock | WriteType::Rollback => {}
            }
        }
        None
    }

    /// Finds what the transaction `start_ts` left on `key` in the write column.
    pub(super) fn txn_commit_record(&self, key: &[u8], start_ts: u64) -> CommitRecord {
        let Some(versions) = self.writes.get(key) else {
            return CommitRecord::None { overlapped: None };
        };
        for (commit_ts, write) in versions.range(start_ts..).rev() {
            if write.start_ts == start_ts {
                return CommitRecord::Single {
                    commit_ts: *commit_ts,
                    write: write.clone(),
                };
            }
            if *commit_ts == start_ts {
                if write.has_overlapped_rollback {
                    return CommitRecord::OverlappedRollback;
                }
                return CommitRecord::None {
                    overlapped: Some(write.clone()),
                };
            }
        }
        CommitRecord::None { overlapped: None }
    }

    /// Keys that hold a lock or a write in `[lower, upper)` (`None` = unbounded), in order.
    pub(super) fn keys_in_range(
        &self,
        lower: Option<&[u8]>,
        upper: Option<&[u8]>,
        reverse: bool,
    ) -> Vec<Bytes> {
        self.iter_keys_in_range(lower, upper, reverse).collect()
    }

    /// [`keys_in_range`](Self::keys_in_range) as a lazy merge of the lock and write
    /// tables, so a scan with a limit touches only the keys it returns (as TiKV's scanner
    /// does), however many keys the range holds.
    pub(super) fn iter_keys_in_range<'a>(
        &'a self,
        lower: Option<&[u8]>,
        upper: Option<&[u8]>,
        reverse: bool,
    ) -> Box<dyn Iterator<Item = Bytes> + 'a> {
        use std::ops::Bound;
        if let (Some(lower), Some(upper)) = (lower, upper) {
            if lower >= upper {
                return Box::new(std::iter::empty());
            }
        }
        let range = (
            lower.map_or(Bound::Unbounded, |k| {
                Bound::Included(Bytes::copy_from_slice(k))
            }),
            upper.map_or(Bound::Unbounded, |k| {
                Bound::Excluded(Bytes::copy_from_slice(k))
            }),
        );
        let locks = self.locks.range(range.clone()).map(|(k, _)| k);
        let writes = self.writes.range(range).map(|(k, _)| k);
        if reverse {
            Box::new(MergedKeys::new(locks.rev(), writes.rev(), true))
        } else {
            Box::new(MergedKeys::new(locks, writes, false))
        }
    }
}

/// Two sorted key iterators merged into one, each key once.
struct MergedKeys<'a, A: Iterator<Item = &'a Bytes>, B: Iterator<Item = &'a Bytes>> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
    /// Both iterators run downward.
    reverse: bool,
}

impl<'a, A: Iterator<Item = &'a Bytes>, B: Iterator<Item = &'a Bytes>> MergedKeys<'a, A, B> {
    fn new(a: A, b: B, reverse: bool) -> Self {
        Self {
            a: a.peekable(),
            b: b.peekable(),
            reverse,
        }
    }
}

impl<'a, A: Iterator<Item = &'a Bytes>, B: Iterator<Item = &'a Bytes>> Iterator
    for MergedKeys<'a, A, B>
{
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        let take_a = match (self.a.peek(), self.b.peek()) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(a), Some(b)) => {
                if a == b {
                    self.b.next();
                    true
                } else {
                    (a < b) != self.reverse
                }
            }
        };
        let next = if take_a { self.a.next() } else { self.b.next() };
        next.cloned()
    }
}

/// What [`MvccStore::txn_commit_record`] found.
#[derive(Clone, Debug)]
pub(super) enum CommitRecord {
    /// The transaction's own record (commit or rollback).
    Single { commit_ts: u64, write: Write },
    /// Another transaction committed at our start ts and carries our rollback mark.
    OverlappedRollback,
    /// Nothing; `overlapped` is another transaction's commit sitting at our start ts.
    None { overlapped: Option<Write> },
}

/// The shared locks on one key (TiKV's `SharedLocks`): one sub-lock per holding transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct SharedLocks {
    /// No new holder may join any more: set when an exclusive lock request met the set, so
    /// that the exclusive request is not starved.
    pub(super) shrink_only: bool,
    /// Sub-locks by start ts: pessimistic locks, or Lock locks once prewritten.
    pub(super) locks: BTreeMap<u64, Lock>,
}

impl SharedLocks {
    /// The wire form TiKV gives a shared lock: type `SharedLock` and the key on the outside,
    /// every holder in `shared_lock_infos` (here in start ts order).
    pub(super) fn lock_info(&self, key: &Bytes) -> kvrpcpb::LockInfo {
        kvrpcpb::LockInfo {
            key: key.clone(),
            lock_type: kvrpcpb::Op::SharedLock as i32,
            shared_lock_infos: self.locks.values().map(|l| l.lock_info(key)).collect(),
            ..Default::default()
        }
    }
}

/// The kind of a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LockType {
    Put,
    Delete,
    Lock,
    Pessimistic,
}

/// The kind of a write record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WriteType {
    Put,
    Delete,
    Lock,
    Rollback,
}

/// A Percolator lock (one per key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Lock {
    pub(super) lock_type: LockType,
    pub(super) primary: Bytes,
    pub(super) start_ts: u64,
    pub(super) ttl: u64,
    /// The value of a Put lock (TiKV splits short and long values; the model keeps it here).
    pub(super) value: Option<Bytes>,
    pub(super) for_update_ts: u64,
    pub(super) txn_size: u64,
    pub(super) min_commit_ts: u64,
    pub(super) use_async_commit: bool,
    pub(super) use_one_pc: bool,
    pub(super) secondaries: Vec<Bytes>,
    /// Start ts of rolled-back transactions whose rollback must survive this lock's commit.
    pub(super) rollback_ts: Vec<u64>,
    pub(super) generation: u64,
    pub(super) is_locked_with_conflict: bool,
}

impl Lock {
    /// A lock of `lock_type` with every optional field empty.
    pub(super) fn new(lock_type: LockType, primary: Bytes, start_ts: u64, ttl: u64) -> Self {
        Self {
            lock_type,
            primary,
            start_ts,
            ttl,
            value: None,
            for_update_ts: 0,
            txn_size: 0,
            min_commit_ts: 0,
            use_async_commit: false,
            use_one_pc: false,
            secondaries: Vec::new(),
            rollback_ts: Vec::new(),
            generation: 0,
            is_locked_with_conflict: false,
        }
    }

    pub(super) fn is_pessimistic(&self) -> bool {
        self.lock_type == LockType::Pessimistic
    }

    /// Whether the lock belongs to a pessimistic transaction.
    pub(super) fn is_pessimistic_txn(&self) -> bool {
        self.for_update_ts != 0
    }

    /// Whether the lock's TTL has run out at `current_ts` (physical parts in ms).
    pub(super) fn is_expired(&self, current_ts: u64) -> bool {
        physical(self.start_ts).saturating_add(self.ttl) < physical(current_ts)
    }

    /// The wire form of the lock on `key`.
    pub(super) fn lock_info(&self, key: &Bytes) -> kvrpcpb::LockInfo {
        let lock_type = match self.lock_type {
            LockType::Put => kvrpcpb::Op::Put,
            LockType::Delete => kvrpcpb::Op::Del,
            LockType::Lock => kvrpcpb::Op::Lock,
            LockType::Pessimistic => kvrpcpb::Op::PessimisticLock,
        };
        kvrpcpb::LockInfo {
            primary_lock: self.primary.clone(),
            lock_version: self.start_ts,
            key: key.clone(),
            lock_ttl: self.ttl,
            txn_size: self.txn_size,
            lock_type: lock_type as i32,
            lock_for_update_ts: self.for_update_ts,
            use_async_commit: self.use_async_commit,
            min_commit_ts: self.min_commit_ts,
            secondaries: self.secondaries.clone(),
            ..Default::default()
        }
    }
}

/// A write record (commit or rollback).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Write {
    pub(super) write_type: WriteType,
    pub(super) start_ts: u64,
    /// The value of a Put.
    pub(super) value: Option<Bytes>,
    /// A rollback of the transaction whose start ts equals this record's commit ts.
    pub(super) has_overlapped_rollback: bool,
    /// For rollbacks: must not be collapsed away (primary keys, async commit checks).
    pub(super) protected: bool,
}

impl Write {
    /// A commit record of `write_type` for the transaction `start_ts`.
    pub(super) fn new(write_type: WriteType, start_ts: u64, value: Option<Bytes>) -> Self {
        Self {
            write_type,
            start_ts,
            value,
            has_overlapped_rollback: false,
            protected: false,
        }
    }

    /// A rollback record for the transaction `start_ts`.
    pub(super) fn rollback(start_ts: u64, protected: bool) -> Self {
        Self {
            protected,
            ..Self::new(WriteType::Rollback, start_ts, None)
        }
    }
}

/// A lock as the split checker sees it: key and value bytes in the lock CF.
fn lock_entry(key: &Bytes, lock: &Lock) -> crate::cluster::SplitEntry {
    crate::cluster::SplitEntry {
        key: key.clone(),
        size: key.len() as u64 + lock.value.as_ref().map_or(0, |v| v.len() as u64),
        commit_version: false,
    }
}

/// The physical (millisecond) part of a TSO timestamp.
pub(super) fn physical(ts: u64) -> u64 {
    ts >> 18
}

#[derive(Clone, Debug)]
enum Undo {
    Lock {
        key: Bytes,
        previous: Option<Lock>,
    },
    Write {
        key: Bytes,
        commit_ts: u64,
        previous: Option<Write>,
    },
    Shared {
        key: Bytes,
        previous: Option<SharedLocks>,
    },
}

/// Rejects an empty key, which no TiKV command accepts.
pub(super) fn check_key(key: &Bytes) -> Result<(), TxnError> {
    if key.is_empty() {
        Err(TxnError::BadRequest("empty key".to_owned()))
    } else {
        Ok(())
    }
}

/// Whether `key` lies in `[start, end)` (empty end = unbounded).
pub(super) fn key_in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    key >= start && (end.is_empty() || key < end)
}

#[cfg(test)]
mod merged_keys_tests {
    use std::collections::BTreeSet;

    use bytes::Bytes;
    use quickcheck::QuickCheck;

    use super::{Lock, LockType, MvccStore, Write, WriteType};

    /// The lazy merge yields what collecting both tables into one ordered set gives, in
    /// either direction and for any bounds.
    #[test]
    fn lazy_key_merge_equals_an_ordered_set() {
        fn property(locks: Vec<u8>, writes: Vec<u8>, lower: Option<u8>, upper: Option<u8>) -> bool {
            let mut store = MvccStore::new();
            let key = |k: u8| Bytes::from(vec![k]);
            for k in &locks {
                store
                    .locks
                    .insert(key(*k), Lock::new(LockType::Put, key(0), 1, 10));
            }
            for k in &writes {
                store
                    .writes
                    .entry(key(*k))
                    .or_default()
                    .insert(2, Write::new(WriteType::Put, 1, None));
            }
            let lower_key = lower.map(|k| vec![k]);
            let upper_key = upper.map(|k| vec![k]);
            let expected: BTreeSet<Bytes> = locks
                .iter()
                .chain(&writes)
                .filter(|k| lower.is_none_or(|l| **k >= l) && upper.is_none_or(|u| **k < u))
                .map(|k| key(*k))
                .collect();
            let forward = store.keys_in_range(lower_key.as_deref(), upper_key.as_deref(), false);
            let backward = store.keys_in_range(lower_key.as_deref(), upper_key.as_deref(), true);
            forward == expected.iter().cloned().collect::<Vec<_>>()
                && backward == expected.iter().rev().cloned().collect::<Vec<_>>()
        }
        QuickCheck::new()
            .tests(300)
            .quickcheck(property as fn(Vec<u8>, Vec<u8>, Option<u8>, Option<u8>) -> bool);
    }
}
