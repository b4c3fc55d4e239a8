//! Reading the buffer over the store: client-go's `UnionIter`, as an iterator adapter and as
//! a resumable merge for an asynchronous store.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::iter::Peekable;
use std::ops::Bound;

use bytes::Bytes;

use super::{BufferError, BufferValue, MemDb};

/// How a buffer key and a store key order in the walk's direction: `Less` when the
/// buffer's key comes first. This is the whole merge decision; the two merges below share it.
fn walk_order(buffer_key: &[u8], store_key: &[u8], reverse: bool) -> Ordering {
    let order = buffer_key.cmp(store_key);
    if reverse { order.reverse() } else { order }
}

/// Merges buffered entries over the store's pairs, both sorted in the walk's direction
/// (client-go's `UnionIter`): a key in both yields the buffer's value, a buffered delete
/// hides the store's pair (and a delete of a key the store lacks yields nothing).
///
/// `buffer` is a [`MemDb::iter`] (reversed for a reverse walk), `store` any iterator of
/// `(key, value)` pairs from the snapshot. For a store that answers asynchronously, in
/// batches, see [`UnionScan`].
#[derive(Debug)]
pub struct UnionIter<'a, B, S>
where
    B: Iterator<Item = (&'a Bytes, &'a BufferValue)>,
    S: Iterator<Item = (Bytes, Bytes)>,
{
    buffer: Peekable<B>,
    store: Peekable<S>,
    reverse: bool,
}

impl<'a, B, S> UnionIter<'a, B, S>
where
    B: Iterator<Item = (&'a Bytes, &'a BufferValue)>,
    S: Iterator<Item = (Bytes, Bytes)>,
{
    /// A merge of `buffer` over `store`; `reverse` says both walk from the last key down.
    pub fn new(buffer: B, store: S, reverse: bool) -> Self {
        Self {
            buffer: buffer.peekable(),
            store: store.peekable(),
            reverse,
        }
    }
}

impl<'a, B, S> Iterator for UnionIter<'a, B, S>
where
    B: Iterator<Item = (&'a Bytes, &'a BufferValue)>,
    S: Iterator<Item = (Bytes, Bytes)>,
{
    type Item = (Bytes, Bytes);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let order = match (self.buffer.peek(), self.store.peek()) {
                (None, None) => return None,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((buffer_key, _)), Some((store_key, _))) => {
                    walk_order(buffer_key, store_key, self.reverse)
                }
            };
            match order {
                Ordering::Greater => return self.store.next(),
                // The buffer's write replaces the store's pair.
                Ordering::Equal => {
                    self.store.next();
                }
                Ordering::Less => {}
            }
            if let Some((key, BufferValue::Put(value))) = self.buffer.next() {
                return Some((key.clone(), value.clone()));
            }
        }
    }
}

/// A key range for the store to scan next, from [`UnionStep::NeedStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreRange {
    /// The first key of the range (inclusive).
    pub lower: Bytes,
    /// The end of the range (exclusive); empty means no end.
    pub upper: Bytes,
}

/// What [`UnionScan::next`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnionStep {
    /// The next pair of the merged walk.
    Pair(Bytes, Bytes),
    /// The merge cannot go on without more of the store: scan this range (in the walk's
    /// direction, from its start for a forward walk, from its end for a reverse one) and
    /// pass what came back to [`UnionScan::feed`].
    NeedStore(StoreRange),
    /// The walk is over.
    Done,
}

/// The merge of the buffer over the store as a resumable state, for a store read in
/// batches that arrive asynchronously (client-go's `UnionIter` over a snapshot iterator).
///
/// The scan owns its position, the store pairs fetched but not yet merged and how far the
/// store has been read; it borrows the buffer only for the length of one
/// [`UnionScan::next`]. The transaction handle therefore runs the loop below and may await
/// the store between steps (and even write to its buffer: a step reads the buffer as it is
/// then). A buffered key is only yielded once the store is known to hold no key before it,
/// so the output is the same whatever the batch sizes.
///
/// ```
/// use bytes::Bytes;
/// use tikv_core::txn::buffer::{MemDb, UnionScan, UnionStep};
///
/// # fn main() -> Result<(), tikv_core::txn::buffer::BufferError> {
/// let store: Vec<(Bytes, Bytes)> = vec![
///     ("a".into(), "1".into()),
///     ("b".into(), "2".into()),
///     ("c".into(), "3".into()),
/// ];
/// let mut buffer = MemDb::new();
/// buffer.delete("b")?;
/// buffer.set("bb", "new")?;
///
/// let mut scan = UnionScan::new("a", "", false);
/// let mut seen = Vec::new();
/// loop {
///     match scan.next(&buffer) {
///         UnionStep::Pair(key, value) => seen.push((key, value)),
///         UnionStep::NeedStore(range) => {
///             // The real handle sends a scan request here and awaits it; this store
///             // answers two pairs at a time.
///             let batch: Vec<_> = store
///                 .iter()
///                 .filter(|(key, _)| *key >= range.lower)
///                 .take(2)
///                 .cloned()
///                 .collect();
///             let exhausted = batch.len() < 2;
///             scan.feed(batch, exhausted)?;
///         }
///         UnionStep::Done => break,
///     }
/// }
/// let keys: Vec<_> = seen.iter().map(|(key, _)| &key[..]).collect();
/// assert_eq!(keys, [&b"a"[..], b"bb", b"c"]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct UnionScan {
    lower: Bytes,
    upper: Bytes,
    reverse: bool,
    /// The last key consumed from either side (yielded or hidden): what is left lies beyond
    /// it in the walk's direction.
    cursor: Option<Bytes>,
    /// Store pairs fed and not yet merged, in walk order.
    store: VecDeque<(Bytes, Bytes)>,
    /// The last key the store delivered: every store key up to it has been fed.
    frontier: Option<Bytes>,
    /// The store has nothing beyond what was fed.
    exhausted: bool,
}

impl UnionScan {
    /// A walk over `[lower, upper)` (an empty `upper` means no end), from `lower` up, or
    /// from the last key before `upper` down when `reverse`.
    /// An empty range (`lower` at or after a non-empty `upper`) is done at once, without
    /// asking the store.
    pub fn new(lower: impl Into<Bytes>, upper: impl Into<Bytes>, reverse: bool) -> Self {
        let (lower, upper) = (lower.into(), upper.into());
        let empty = !upper.is_empty() && lower >= upper;
        Self {
            lower,
            upper,
            reverse,
            cursor: None,
            store: VecDeque::new(),
            frontier: None,
            exhausted: empty,
        }
    }

    /// Whether `a` lies beyond `b` in the walk's direction.
    fn beyond(&self, a: &[u8], b: &[u8]) -> bool {
        walk_order(a, b, self.reverse) == Ordering::Greater
    }

    fn in_range(&self, key: &[u8]) -> bool {
        key >= &self.lower[..] && (self.upper.is_empty() || key < &self.upper[..])
    }

    /// The next buffered key with a value that lies beyond the cursor, in range.
    fn buffer_head<'b>(&self, buffer: &'b MemDb) -> Option<(&'b Bytes, &'b BufferValue)> {
        let upper = if self.upper.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(&self.upper[..])
        };
        let cursor = self.cursor.as_ref().map(|key| &key[..]);
        if self.reverse {
            let end = cursor.map_or(upper, Bound::Excluded);
            buffer
                .iter((Bound::Included(&self.lower[..]), end))
                .next_back()
        } else {
            let start = cursor.map_or(Bound::Included(&self.lower[..]), Bound::Excluded);
            buffer.iter((start, upper)).next()
        }
    }

    /// The part of the range the store has not delivered yet.
    fn store_range(&self) -> StoreRange {
        match (&self.frontier, self.reverse) {
            (None, _) => StoreRange {
                lower: self.lower.clone(),
                upper: self.upper.clone(),
            },
            (Some(frontier), false) => {
                // The smallest key after the frontier is the frontier with a zero byte.
                let mut lower = Vec::with_capacity(frontier.len() + 1);
                lower.extend_from_slice(frontier);
                lower.push(0);
                StoreRange {
                    lower: lower.into(),
                    upper: self.upper.clone(),
                }
            }
            (Some(frontier), true) => StoreRange {
                lower: self.lower.clone(),
                upper: frontier.clone(),
            },
        }
    }

    /// The next step of the merge, reading `buffer` as it is now.
    pub fn next(&mut self, buffer: &MemDb) -> UnionStep {
        loop {
            let head = self.buffer_head(buffer);
            if self.store.is_empty() && !self.exhausted {
                // Without pending store pairs, a buffered key can only go first if the store
                // has already delivered everything up to it.
                let covered = match (&head, &self.frontier) {
                    (Some((key, _)), Some(frontier)) => !self.beyond(key, frontier),
                    _ => false,
                };
                if !covered {
                    return UnionStep::NeedStore(self.store_range());
                }
            }
            let order = match (&head, self.store.front()) {
                (None, None) => return UnionStep::Done,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((buffer_key, _)), Some((store_key, _))) => {
                    walk_order(buffer_key, store_key, self.reverse)
                }
            };
            if order == Ordering::Greater {
                if let Some((key, value)) = self.store.pop_front() {
                    self.cursor = Some(key.clone());
                    return UnionStep::Pair(key, value);
                }
            }
            if order == Ordering::Equal {
                self.store.pop_front();
            }
            if let Some((key, value)) = head {
                self.cursor = Some(key.clone());
                if let BufferValue::Put(value) = value {
                    return UnionStep::Pair(key.clone(), value.clone());
                }
            }
        }
    }

    /// Hands the scan what the store returned for the last [`UnionStep::NeedStore`]:
    /// pairs in walk order, all in the range asked for, and whether the store has nothing
    /// more in that range (`exhausted`; a scan that returned fewer pairs than its limit).
    /// An empty batch means the store is exhausted.
    ///
    /// Errors: [`BufferError::StoreOutOfOrder`] when a key is out of walk order, not beyond
    /// what was fed before, outside the scan's range, or fed after the store was exhausted;
    /// nothing is taken from such a batch.
    pub fn feed(&mut self, pairs: Vec<(Bytes, Bytes)>, exhausted: bool) -> Result<(), BufferError> {
        let mut last = self.frontier.as_ref();
        for (key, _) in &pairs {
            let ordered = last.is_none_or(|last| self.beyond(key, last));
            if self.exhausted || !ordered || !self.in_range(key) {
                return Err(BufferError::StoreOutOfOrder { key: key.clone() });
            }
            last = Some(key);
        }
        let last = last.cloned();
        // Nothing lies below the empty key, so a reverse walk that reached it is over.
        let at_bottom = self.reverse && last.as_ref().is_some_and(|key| key.is_empty());
        self.exhausted |= exhausted || pairs.is_empty() || at_bottom;
        self.frontier = last;
        self.store.extend(pairs);
        Ok(())
    }
}
