//! Walks over a [`MemDb`]: its keys with values, with flags, and its snapshot.

use std::collections::btree_map;
use std::ops::RangeBounds;

use bytes::Bytes;

use super::memdb::{Entry, entry_ref};
use super::{BufferValue, EntryRef, MemDb};

// The walks of a buffer: constructors here, on top of the buffer's range lookup, so the
// buffer itself does not depend on its iterators.
impl MemDb {
    /// The keys with values (puts and deletes) in `range`, in key order; `.rev()` walks
    /// them backwards. Keys that only carry flags are skipped. A range whose start lies
    /// after its end is empty.
    pub fn iter<R: RangeBounds<[u8]>>(&self, range: R) -> Iter<'_> {
        Iter::new(self.range(range))
    }

    /// The keys with values in `range`, last first: `iter(range).rev()`.
    pub fn iter_reverse<R: RangeBounds<[u8]>>(&self, range: R) -> std::iter::Rev<Iter<'_>> {
        self.iter(range).rev()
    }

    /// Every buffered key in `range` with its value (if any) and flags, in key order; this
    /// is what commit turns into mutations.
    pub fn iter_with_flags<R: RangeBounds<[u8]>>(&self, range: R) -> IterWithFlags<'_> {
        IterWithFlags::new(self.range(range))
    }

    /// The keys with values in `range` as they were before the outer staging level opened
    /// (client-go's snapshot iterator), in key order; `.rev()` walks them backwards.
    pub fn snapshot_iter<R: RangeBounds<[u8]>>(&self, range: R) -> SnapshotIter<'_> {
        SnapshotIter::new(self, self.range(range))
    }
}

/// Keys with values in a range of a [`MemDb`]: `(key, value)`, from [`MemDb::iter`].
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    inner: Option<btree_map::Range<'a, Bytes, Entry>>,
}

impl<'a> Iter<'a> {
    pub(super) fn new(inner: Option<btree_map::Range<'a, Bytes, Entry>>) -> Self {
        Self { inner }
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a Bytes, &'a BufferValue);

    fn next(&mut self) -> Option<Self::Item> {
        let inner = self.inner.as_mut()?;
        inner.find_map(|(key, entry)| entry.value.as_ref().map(|value| (key, value)))
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let inner = self.inner.as_mut()?;
        while let Some((key, entry)) = inner.next_back() {
            if let Some(value) = entry.value.as_ref() {
                return Some((key, value));
            }
        }
        None
    }
}

/// Every buffered key in a range of a [`MemDb`], with flags, from [`MemDb::iter_with_flags`].
#[derive(Clone, Debug)]
pub struct IterWithFlags<'a> {
    inner: Option<btree_map::Range<'a, Bytes, Entry>>,
}

impl<'a> IterWithFlags<'a> {
    pub(super) fn new(inner: Option<btree_map::Range<'a, Bytes, Entry>>) -> Self {
        Self { inner }
    }
}

impl<'a> Iterator for IterWithFlags<'a> {
    type Item = EntryRef<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let (key, entry) = self.inner.as_mut()?.next()?;
        Some(entry_ref(key, entry))
    }
}

impl DoubleEndedIterator for IterWithFlags<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let (key, entry) = self.inner.as_mut()?.next_back()?;
        Some(entry_ref(key, entry))
    }
}

/// Keys with values as they were before the outer staging level opened, from
/// [`MemDb::snapshot_iter`].
#[derive(Clone, Debug)]
pub struct SnapshotIter<'a> {
    db: &'a MemDb,
    inner: Option<btree_map::Range<'a, Bytes, Entry>>,
}

impl<'a> SnapshotIter<'a> {
    pub(super) fn new(db: &'a MemDb, inner: Option<btree_map::Range<'a, Bytes, Entry>>) -> Self {
        Self { db, inner }
    }
}

impl<'a> Iterator for SnapshotIter<'a> {
    type Item = (&'a Bytes, &'a BufferValue);

    fn next(&mut self) -> Option<Self::Item> {
        let db = self.db;
        self.inner
            .as_mut()?
            .find_map(|(key, entry)| db.snapshot_value(entry).map(|value| (key, value)))
    }
}

impl DoubleEndedIterator for SnapshotIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let db = self.db;
        let inner = self.inner.as_mut()?;
        while let Some((key, entry)) = inner.next_back() {
            if let Some(value) = db.snapshot_value(entry) {
                return Some((key, value));
            }
        }
        None
    }
}
