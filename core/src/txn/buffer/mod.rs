//! The transaction write buffer: client-go's memdb and union store, as a pure data structure.
//!
//! A transaction's writes stay in its handle until commit. [`MemDb`] holds them: an ordered
//! map from key to a [`BufferValue`] (a put or a delete tombstone) and [`KeyFlags`], with
//! client-go's nested staging, size limits and memory accounting. Nothing here does IO, reads
//! a clock or allocates a thread; the transaction handle owns a `MemDb` and drives it.
//!
//! # Staging
//!
//! [`MemDb::staging`] opens a level and returns a [`StagingHandle`]; writes then go to that
//! level. [`MemDb::release`] merges the innermost level into its parent (or, for the outer
//! one, into the buffer proper); [`MemDb::cleanup`] discards it, restoring every value the
//! level overwrote. Levels close innermost first; a handle used out of order gets a
//! [`BufferError`], never a panic. TiDB uses a level per statement so that a failed statement
//! leaves the transaction as it was.
//!
//! Values roll back; flags do not (as in client-go): a cleanup keeps every flag change, except
//! that when it removes a value the level added, only the key's persistent flags
//! ([`KeyFlags::persistent`], the facts about locks already taken) stay, on a key left with
//! no value. A key with neither a value nor flags left disappears.
//!
//! # How it is built
//!
//! A `BTreeMap<Bytes, _>` holds the current state. While any level is open, the first write
//! of a key in a level appends an undo record (the key's previous value and the position of
//! the record before it) to one log; the entry points at its newest record. So:
//! - cleanup pops the level's records in reverse order, restoring each previous value;
//! - release is O(1): the level's records simply become its parent's (the parent's own older
//!   record of the same key still comes first when that level is cleaned up in turn), and
//!   releasing the outer level drops the log;
//! - the *snapshot* (the state before the outer level opened, client-go's stage 0) is one
//!   chain walk per key: follow records while they were written after the outer level opened;
//! - a write outside any level records nothing, so a buffer used without staging costs a map
//!   entry per key and nothing more.
//!
//! # Reading the buffer together with the store
//!
//! A transaction reads through its buffer: [`MemDb::get`] answers `Some(Put)` (the
//! transaction's own value), `Some(Delete)` (deleted here: the key does not exist for this
//! transaction) or `None` (not written: read the snapshot from the store). Scans merge the
//! buffer over the store's pairs and drop tombstones: [`UnionIter`] does that over any
//! iterator of store pairs, and [`UnionScan`] is the same merge as a resumable state for the
//! real, asynchronous store (see its documentation for the loop the handle runs).
//!
//! The port of client-go's tests is in `tests/` (named after the Go tests); docs/porting.md
//! lists them, and what was left out and why.

mod flags;
mod iter;
mod memdb;
mod snapshot;
mod union;

#[cfg(test)]
mod tests;

use bytes::Bytes;

pub use flags::{FlagsOp, KeyFlags};
pub use iter::{Iter, IterWithFlags, SnapshotIter};
pub use memdb::{EntryRef, MemDb, StagingHandle};
pub use snapshot::{BufferSnapshot, SnapshotCursor};
pub use union::{StoreRange, UnionIter, UnionScan, UnionStep};

/// The default limit on one entry (key plus value bytes): 6 MiB.
///
/// client-go's memdb itself is unlimited until its user sets limits; TiDB sets this value
/// (`txn-entry-size-limit`), so it is what client-go applications see. TiKV's own limit on a
/// raft entry is 8 MiB.
pub const TXN_ENTRY_SIZE_LIMIT: u64 = 6 * 1024 * 1024;

/// The default limit on a whole buffer (the sum of key and value bytes): 100 MiB, TiDB's
/// `txn-total-size-limit` default, for the same reason as [`TXN_ENTRY_SIZE_LIMIT`].
pub const TXN_TOTAL_SIZE_LIMIT: u64 = 100 * 1024 * 1024;

/// The longest key the buffer accepts: 65,535 bytes, client-go's memdb limit (its nodes
/// store key lengths in 16 bits). Keys that long fail earlier here than at TiKV.
pub const MAX_KEY_LEN: usize = u16::MAX as usize;

/// Size limits of a [`MemDb`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeLimits {
    /// The largest entry (key length plus value length) a write may store.
    pub entry: u64,
    /// The largest total size (sum of key and value lengths of every entry).
    pub total: u64,
}

impl SizeLimits {
    /// No limit on either (client-go's memdb before its user sets limits).
    pub const fn unlimited() -> Self {
        Self {
            entry: u64::MAX,
            total: u64::MAX,
        }
    }
}

impl Default for SizeLimits {
    /// [`TXN_ENTRY_SIZE_LIMIT`] and [`TXN_TOTAL_SIZE_LIMIT`].
    fn default() -> Self {
        Self {
            entry: TXN_ENTRY_SIZE_LIMIT,
            total: TXN_TOTAL_SIZE_LIMIT,
        }
    }
}

/// What the buffer holds for a key that has a value: a put or a delete tombstone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BufferValue {
    /// The transaction wrote this value (it may be empty: unlike client-go, where an empty
    /// value means a tombstone, a delete is its own variant here).
    Put(Bytes),
    /// The transaction deleted the key.
    Delete,
}

impl BufferValue {
    /// The value written, or `None` for a delete.
    pub fn as_put(&self) -> Option<&Bytes> {
        match self {
            Self::Put(value) => Some(value),
            Self::Delete => None,
        }
    }

    /// Whether this is a delete tombstone.
    pub fn is_delete(&self) -> bool {
        matches!(self, Self::Delete)
    }

    /// The bytes this value counts for in the buffer's size: the value's length, 0 for a
    /// delete.
    pub fn len(&self) -> usize {
        match self {
            Self::Put(value) => value.len(),
            Self::Delete => 0,
        }
    }

    /// Whether the value counts for no bytes (an empty put or a delete).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything the write buffer can refuse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BufferError {
    /// A key is longer than [`MAX_KEY_LEN`]. Nothing was written.
    #[error("key too large: {size} bytes, limit {limit}")]
    KeyTooLarge {
        /// The key's length.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// An entry (key plus value) is over the entry limit. Nothing was written.
    #[error("entry too large: {size} bytes, limit {limit}")]
    EntryTooLarge {
        /// The entry's size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The write would take the buffer over its total limit. Nothing was written (client-go
    /// keeps the write and then fails; refusing it keeps the buffer usable and consistent).
    #[error("transaction too large: {size} bytes, limit {limit}")]
    TxnTooLarge {
        /// The buffer's size had the write been applied.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A staging handle was released or cleaned up while a level opened after it is still
    /// open: levels close innermost first.
    #[error("staging level {level} is not the innermost (level {innermost} is open)")]
    StagingNotInnermost {
        /// The handle's level (1 is the outermost).
        level: usize,
        /// The innermost open level.
        innermost: usize,
    },
    /// A staging handle was released after its level closed (released, cleaned up or reset),
    /// or it belongs to another buffer.
    #[error("staging level {level} is not open")]
    StagingClosed {
        /// The handle's level.
        level: usize,
    },
    /// A [`BufferSnapshot`] was read after what it shows changed: the outer staging level
    /// closed, or the buffer was written outside any level, or reset.
    #[error("the buffer snapshot is no longer valid")]
    SnapshotChanged,
    /// Pairs fed to a [`UnionScan`] were not in scan order, repeated a key, or lay outside
    /// the range the scan asked for.
    #[error("store pairs out of scan order or range at key {key:?}")]
    StoreOutOfOrder {
        /// The first offending key.
        key: Bytes,
    },
}
