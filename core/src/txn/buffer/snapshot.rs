//! Checked reads of the buffer's snapshot (the state before the outer staging level opened)
//! that may be interleaved with writes.

use std::collections::VecDeque;
use std::ops::{Bound, RangeBounds};

use bytes::Bytes;

use super::{BufferError, BufferValue, MemDb};

/// The first batch a [`SnapshotCursor`] reads, and the largest it grows to (doubling), as
/// client-go's batched snapshot iterator.
const FIRST_BATCH: usize = 32;
const MAX_BATCH: usize = 4096;

/// A view of a [`MemDb`] as it was before its outer staging level opened (client-go's
/// `MemBufferSnapshot`), from [`MemDb::snapshot`].
///
/// Writes inside staging levels do not change what it shows, so a statement can read the
/// transaction's state from before the statement while it writes. It holds no borrow: each
/// read takes the buffer again and first checks that the view is still the one the snapshot
/// was taken on. It stops being valid when the outer level is released or cleaned up, when
/// the buffer is written outside any level (the snapshot of a buffer with no level open is
/// its current state, valid until the next write) or reset. Use it with the buffer it came
/// from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferSnapshot {
    seq: u64,
}

impl BufferSnapshot {
    pub(super) fn new(seq: u64) -> Self {
        Self { seq }
    }

    /// Whether the snapshot still shows what it showed when it was taken.
    pub fn is_valid(self, db: &MemDb) -> bool {
        db.snapshot_seq() == self.seq
    }

    fn check(self, db: &MemDb) -> Result<(), BufferError> {
        if self.is_valid(db) {
            Ok(())
        } else {
            Err(BufferError::SnapshotChanged)
        }
    }

    /// The value of `key` in the snapshot: as [`MemDb::snapshot_get`].
    ///
    /// Errors: [`BufferError::SnapshotChanged`] when the snapshot is no longer valid.
    pub fn get(self, db: &MemDb, key: &[u8]) -> Result<Option<BufferValue>, BufferError> {
        self.check(db)?;
        Ok(db.snapshot_get(key).cloned())
    }

    /// A cursor over the snapshot's keys with values in `range`, in key order or (with
    /// `reverse`) backwards, which reads the buffer in batches and tolerates writes in
    /// staging levels between its steps (client-go's `BatchedSnapshotIter`).
    pub fn cursor<R: RangeBounds<[u8]>>(self, range: R, reverse: bool) -> SnapshotCursor {
        let owned = |bound: Bound<&[u8]>| bound.map(Bytes::copy_from_slice);
        SnapshotCursor {
            snapshot: self,
            start: owned(range.start_bound()),
            end: owned(range.end_bound()),
            reverse,
            batch: VecDeque::new(),
            batch_size: FIRST_BATCH,
            finished: false,
        }
    }
}

/// A resumable walk over a [`BufferSnapshot`], from [`BufferSnapshot::cursor`].
///
/// Each step takes the buffer: `while let Some((key, value)) = cursor.next(&db)? { .. }`,
/// with writes to `db` allowed between steps as long as they do not invalidate the snapshot.
#[derive(Clone, Debug)]
pub struct SnapshotCursor {
    snapshot: BufferSnapshot,
    /// What is left to read: the bounds shrink as batches are read.
    start: Bound<Bytes>,
    end: Bound<Bytes>,
    reverse: bool,
    batch: VecDeque<(Bytes, BufferValue)>,
    batch_size: usize,
    finished: bool,
}

impl SnapshotCursor {
    /// The next pair of the snapshot (a delete comes as [`BufferValue::Delete`]), or `None`
    /// at the end of the range.
    ///
    /// Errors: [`BufferError::SnapshotChanged`] when the snapshot is no longer valid; the
    /// cursor then stays failed.
    pub fn next(&mut self, db: &MemDb) -> Result<Option<(Bytes, BufferValue)>, BufferError> {
        self.snapshot.check(db)?;
        if self.batch.is_empty() && !self.finished {
            self.fill(db);
        }
        Ok(self.batch.pop_front())
    }

    fn fill(&mut self, db: &MemDb) {
        let range = (
            self.start.as_ref().map(|key| &key[..]),
            self.end.as_ref().map(|key| &key[..]),
        );
        let iter = db.snapshot_iter(range);
        let pairs = |(key, value): (&Bytes, &BufferValue)| (key.clone(), value.clone());
        if self.reverse {
            self.batch
                .extend(iter.rev().take(self.batch_size).map(pairs));
        } else {
            self.batch.extend(iter.take(self.batch_size).map(pairs));
        }
        self.finished = self.batch.len() < self.batch_size;
        if let Some(last) = self.batch.back().map(|(key, _)| key.clone()) {
            if self.reverse {
                self.end = Bound::Excluded(last);
            } else {
                self.start = Bound::Excluded(last);
            }
        }
        self.batch_size = (self.batch_size * 2).min(MAX_BATCH);
    }
}
