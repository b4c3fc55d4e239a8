//! The buffer itself: entries, staging levels and the undo log.

use std::collections::BTreeMap;
use std::collections::btree_map;
use std::mem::size_of;
use std::ops::RangeBounds;

use bytes::Bytes;

use super::{BufferError, BufferSnapshot, BufferValue, FlagsOp, KeyFlags, MAX_KEY_LEN, SizeLimits};

/// A transaction's write buffer (client-go's memdb): an ordered map from key to value and
/// flags, with nested staging levels. See the [module documentation](super) for the model.
///
/// Sizes follow client-go: [`MemDb::size`] counts every key once and every value's bytes
/// (a delete counts its key only), [`MemDb::len`] counts keys (puts, deletes and keys that
/// only carry flags).
pub struct MemDb {
    entries: BTreeMap<Bytes, Entry>,
    /// Undo records, oldest first, written while any staging level is open.
    log: Vec<UndoRecord>,
    /// The position of `log[0]`. Positions are never reused, so an entry's position below
    /// this names a record that was dropped (its level was released into the buffer).
    log_base: u64,
    /// Bytes of the old values the log keeps alive.
    log_value_bytes: u64,
    stages: Vec<Stage>,
    next_stage_id: u64,
    limits: SizeLimits,
    size: u64,
    dirty: bool,
    /// Moves whenever the snapshot view (state before the outer level) may change.
    snapshot_seq: u64,
}

/// One key's state.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    /// `None`: the key carries flags only.
    pub(super) value: Option<BufferValue>,
    pub(super) flags: KeyFlags,
    /// The position of the undo record holding the value before the current one, if the
    /// current value was written while a level was open; [`NO_RECORD`] otherwise.
    pos: u64,
}

/// What a level's first write of a key replaced.
#[derive(Clone, Debug)]
struct UndoRecord {
    key: Bytes,
    old_value: Option<BufferValue>,
    old_pos: u64,
}

/// An open staging level.
#[derive(Clone, Copy, Debug)]
struct Stage {
    id: u64,
    /// Position of the level's first undo record.
    start: u64,
}

/// Positions start at 1, so 0 is below every live record.
const NO_RECORD: u64 = 0;

/// Memory a map entry costs besides its key and value bytes: the key and entry structs,
/// scaled by 1.5 because B-tree nodes run between half full and full.
const ENTRY_OVERHEAD: u64 = ((size_of::<Bytes>() + size_of::<Entry>()) * 3 / 2) as u64;

/// Names an open staging level: returned by [`MemDb::staging`], consumed by
/// [`MemDb::release`] or [`MemDb::cleanup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StagingHandle {
    level: usize,
    id: u64,
}

impl StagingHandle {
    /// The level's depth: 1 for the outermost level, 2 for one opened inside it, ...
    pub fn level(self) -> usize {
        self.level
    }
}

/// Where a staging handle stands.
enum HandleState {
    Innermost,
    Outer { innermost: usize },
    Closed,
}

/// One key as the buffer holds it, with its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// The key.
    pub key: &'a Bytes,
    /// Its value, or `None` for a key that only carries flags.
    pub value: Option<&'a BufferValue>,
    /// Its flags.
    pub flags: KeyFlags,
}

impl Default for MemDb {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemDb")
            .field("len", &self.len())
            .field("size", &self.size)
            .field("levels", &self.stages.len())
            .field("dirty", &self.dirty)
            .finish_non_exhaustive()
    }
}

impl MemDb {
    /// An empty buffer with the default limits ([`SizeLimits::default`]). It allocates
    /// nothing until the first write.
    pub fn new() -> Self {
        Self::with_limits(SizeLimits::default())
    }

    /// An empty buffer with the given limits.
    pub fn with_limits(limits: SizeLimits) -> Self {
        Self {
            entries: BTreeMap::new(),
            log: Vec::new(),
            log_base: NO_RECORD + 1,
            log_value_bytes: 0,
            stages: Vec::new(),
            next_stage_id: 0,
            limits,
            size: 0,
            dirty: false,
            snapshot_seq: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> SizeLimits {
        self.limits
    }

    /// Changes the limits. Entries already stored stay; later writes are checked against
    /// the new limits.
    pub fn set_limits(&mut self, limits: SizeLimits) {
        self.limits = limits;
    }

    /// Writes `value` under `key`.
    ///
    /// Errors: [`BufferError::KeyTooLarge`], [`BufferError::EntryTooLarge`],
    /// [`BufferError::TxnTooLarge`]; the buffer is unchanged after any of them.
    pub fn set(
        &mut self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<(), BufferError> {
        self.write(key.into(), BufferValue::Put(value.into()), &[])
    }

    /// Writes `value` under `key` and applies `ops` to its flags. Like every write of a
    /// value, it first ends a postponed constraint check
    /// ([`FlagsOp::DelNeedConstraintCheckInPrewrite`]) unless `ops` sets it again.
    ///
    /// Errors: as [`MemDb::set`].
    pub fn set_with_flags(
        &mut self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        ops: &[FlagsOp],
    ) -> Result<(), BufferError> {
        self.write(key.into(), BufferValue::Put(value.into()), ops)
    }

    /// Deletes `key`: stores a tombstone, which hides the store's value from this
    /// transaction and becomes a delete at commit.
    ///
    /// Errors: as [`MemDb::set`] (a tombstone counts its key's bytes).
    pub fn delete(&mut self, key: impl Into<Bytes>) -> Result<(), BufferError> {
        self.write(key.into(), BufferValue::Delete, &[])
    }

    /// Deletes `key` and applies `ops` to its flags.
    ///
    /// Errors: as [`MemDb::set`].
    pub fn delete_with_flags(
        &mut self,
        key: impl Into<Bytes>,
        ops: &[FlagsOp],
    ) -> Result<(), BufferError> {
        self.write(key.into(), BufferValue::Delete, ops)
    }

    /// Applies `ops` to the flags of `key`, adding a flags-only entry when the key is not
    /// buffered. Flag changes are not undone by [`MemDb::cleanup`], and they are not held to
    /// the size limits (as in client-go).
    ///
    /// Errors: [`BufferError::KeyTooLarge`].
    pub fn update_flags(
        &mut self,
        key: impl Into<Bytes>,
        ops: &[FlagsOp],
    ) -> Result<(), BufferError> {
        let key = key.into();
        check_key(&key)?;
        self.note_write_outside_levels();
        let flags = match self.entries.entry(key) {
            btree_map::Entry::Occupied(mut occupied) => {
                let entry = occupied.get_mut();
                entry.flags = entry.flags.apply(ops);
                entry.flags
            }
            btree_map::Entry::Vacant(vacant) => {
                self.size += vacant.key().len() as u64;
                let flags = KeyFlags::empty().apply(ops);
                vacant.insert(Entry {
                    value: None,
                    flags,
                    pos: NO_RECORD,
                });
                flags
            }
        };
        if !flags.persistent().is_empty() {
            self.dirty = true;
        }
        Ok(())
    }

    fn write(
        &mut self,
        key: Bytes,
        value: BufferValue,
        ops: &[FlagsOp],
    ) -> Result<(), BufferError> {
        check_key(&key)?;
        let entry_size = key.len() as u64 + value.len() as u64;
        if entry_size > self.limits.entry {
            return Err(BufferError::EntryTooLarge {
                size: entry_size,
                limit: self.limits.entry,
            });
        }
        // Where the innermost open level's records begin: a key whose newest record is at
        // or after it was already recorded by this level.
        let level_start = self.stages.last().map(|stage| stage.start);
        let next_pos = self.log_base + self.log.len() as u64;
        let new_len = value.len() as u64;
        let flags = match self.entries.entry(key) {
            btree_map::Entry::Occupied(mut occupied) => {
                let old_len = occupied.get().value.as_ref().map_or(0, |v| v.len() as u64);
                let size = self.size.saturating_sub(old_len) + new_len;
                if size > self.limits.total {
                    return Err(BufferError::TxnTooLarge {
                        size,
                        limit: self.limits.total,
                    });
                }
                self.size = size;
                let record_key = level_start
                    .filter(|start| occupied.get().pos < *start)
                    .map(|_| occupied.key().clone());
                let entry = occupied.get_mut();
                if let Some(record_key) = record_key {
                    let old_value = entry.value.take();
                    self.log_value_bytes += old_value.as_ref().map_or(0, |v| v.len() as u64);
                    self.log.push(UndoRecord {
                        key: record_key,
                        old_value,
                        old_pos: entry.pos,
                    });
                    entry.pos = next_pos;
                }
                entry.value = Some(value);
                entry.flags = entry
                    .flags
                    .apply_one(FlagsOp::DelNeedConstraintCheckInPrewrite)
                    .apply(ops);
                entry.flags
            }
            btree_map::Entry::Vacant(vacant) => {
                let size = self.size + vacant.key().len() as u64 + new_len;
                if size > self.limits.total {
                    return Err(BufferError::TxnTooLarge {
                        size,
                        limit: self.limits.total,
                    });
                }
                self.size = size;
                let pos = match level_start {
                    Some(_) => {
                        self.log.push(UndoRecord {
                            key: vacant.key().clone(),
                            old_value: None,
                            old_pos: NO_RECORD,
                        });
                        next_pos
                    }
                    None => NO_RECORD,
                };
                let flags = KeyFlags::empty().apply(ops);
                vacant.insert(Entry {
                    value: Some(value),
                    flags,
                    pos,
                });
                flags
            }
        };
        self.note_write_outside_levels();
        if !flags.persistent().is_empty() {
            self.dirty = true;
        }
        Ok(())
    }

    /// A write with no level open goes straight into the buffer proper, which is also what
    /// the snapshot shows.
    fn note_write_outside_levels(&mut self) {
        if self.stages.is_empty() {
            self.dirty = true;
            self.snapshot_seq += 1;
        }
    }

    /// The value buffered for `key`: `Some(Put)` or `Some(Delete)` when the transaction
    /// wrote it, `None` when it did not (or only set flags), in which case a read goes to
    /// the store.
    pub fn get(&self, key: &[u8]) -> Option<&BufferValue> {
        self.entries.get(key).and_then(|entry| entry.value.as_ref())
    }

    /// The flags of `key`, or `None` when the key is not buffered at all.
    pub fn get_flags(&self, key: &[u8]) -> Option<KeyFlags> {
        self.entries.get(key).map(|entry| entry.flags)
    }

    /// Everything buffered for `key` (value and flags), or `None` when it is not buffered.
    pub fn entry(&self, key: &[u8]) -> Option<EntryRef<'_>> {
        self.entries
            .get_key_value(key)
            .map(|(key, entry)| entry_ref(key, entry))
    }

    /// The number of buffered keys: puts, deletes and flags-only keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The buffer's size as the limits count it: every key's length plus every value's.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// An estimate of the memory the buffer holds, in bytes: keys and values, the map's
    /// per-entry overhead, and the undo log with the old values it keeps alive. It is 0 for
    /// a buffer never written (a read-only transaction allocates nothing). Keys and values
    /// sliced from a larger buffer are counted at their own length.
    pub fn mem_footprint(&self) -> u64 {
        self.size
            + self.entries.len() as u64 * ENTRY_OVERHEAD
            + (self.log.capacity() * size_of::<UndoRecord>()) as u64
            + self.log_value_bytes
    }

    /// Whether the transaction has something to commit: a write that reached the buffer
    /// proper (outside any level, or in a level since released), or a persistent flag.
    /// Writes in a level that was cleaned up leave it unset.
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// Opens a staging level inside the innermost one (or the first).
    pub fn staging(&mut self) -> StagingHandle {
        let id = self.next_stage_id;
        self.next_stage_id += 1;
        self.stages.push(Stage {
            id,
            start: self.log_base + self.log.len() as u64,
        });
        StagingHandle {
            level: self.stages.len(),
            id,
        }
    }

    /// The number of open staging levels.
    pub fn staging_depth(&self) -> usize {
        self.stages.len()
    }

    /// The level `handle` names, if it is still open.
    fn open_stage(&self, handle: StagingHandle) -> Option<Stage> {
        let stage = self.stages.get(handle.level.checked_sub(1)?)?;
        (stage.id == handle.id).then_some(*stage)
    }

    fn handle_state(&self, handle: StagingHandle) -> HandleState {
        match self.open_stage(handle) {
            Some(_) if handle.level == self.stages.len() => HandleState::Innermost,
            Some(_) => HandleState::Outer {
                innermost: self.stages.len(),
            },
            None => HandleState::Closed,
        }
    }

    /// Merges the innermost level into its parent: its writes stay, and a later cleanup of
    /// the parent undoes them too. Releasing the outer level makes its writes part of the
    /// buffer proper (and marks the buffer dirty when it wrote anything).
    ///
    /// Errors: [`BufferError::StagingNotInnermost`] when a level opened after this one is
    /// still open, [`BufferError::StagingClosed`] when this level is already closed. The
    /// buffer is unchanged after either.
    pub fn release(&mut self, handle: StagingHandle) -> Result<(), BufferError> {
        match self.handle_state(handle) {
            HandleState::Innermost => {}
            HandleState::Outer { innermost } => {
                return Err(BufferError::StagingNotInnermost {
                    level: handle.level,
                    innermost,
                });
            }
            HandleState::Closed => {
                return Err(BufferError::StagingClosed {
                    level: handle.level,
                });
            }
        }
        let Some(stage) = self.stages.pop() else {
            return Ok(());
        };
        if self.stages.is_empty() {
            let next_pos = self.log_base + self.log.len() as u64;
            if next_pos > stage.start {
                self.dirty = true;
            }
            // Nothing can be undone any more: drop the log. Positions keep counting, so
            // the entries' old positions now read as "no record".
            self.log_base = next_pos;
            self.log.clear();
            self.log_value_bytes = 0;
            self.snapshot_seq += 1;
        }
        Ok(())
    }

    /// Discards the innermost level: every value it wrote goes back to what it was when the
    /// level opened. Flag changes stay, except that a key whose value the level added keeps
    /// only its persistent flags (and disappears when it has none).
    ///
    /// Cleaning up a level that is already closed does nothing and succeeds, as in
    /// client-go, so a cleanup on every exit path is safe after a release.
    ///
    /// Errors: [`BufferError::StagingNotInnermost`] when a level opened after this one is
    /// still open; the buffer is unchanged.
    pub fn cleanup(&mut self, handle: StagingHandle) -> Result<(), BufferError> {
        match self.handle_state(handle) {
            HandleState::Innermost => {}
            HandleState::Outer { innermost } => {
                return Err(BufferError::StagingNotInnermost {
                    level: handle.level,
                    innermost,
                });
            }
            HandleState::Closed => return Ok(()),
        }
        let Some(stage) = self.stages.pop() else {
            return Ok(());
        };
        let keep = stage.start.saturating_sub(self.log_base) as usize;
        while self.log.len() > keep {
            if let Some(record) = self.log.pop() {
                self.undo(record);
            }
        }
        if self.stages.is_empty() {
            self.snapshot_seq += 1;
        }
        Ok(())
    }

    fn undo(&mut self, record: UndoRecord) {
        let old_len = record.old_value.as_ref().map_or(0, |v| v.len() as u64);
        self.log_value_bytes = self.log_value_bytes.saturating_sub(old_len);
        let Some(entry) = self.entries.get_mut(&record.key) else {
            // Entries leave the map only through undo, newest record first, so the key is
            // always there; restore the old state anyway if it is not.
            if let Some(value) = record.old_value {
                self.size += record.key.len() as u64 + old_len;
                self.entries.insert(
                    record.key,
                    Entry {
                        value: Some(value),
                        flags: KeyFlags::empty(),
                        pos: record.old_pos,
                    },
                );
            }
            return;
        };
        self.size = self
            .size
            .saturating_sub(entry.value.as_ref().map_or(0, |v| v.len() as u64));
        self.size += old_len;
        entry.pos = record.old_pos;
        if record.old_value.is_some() {
            entry.value = record.old_value;
            return;
        }
        // The level added the value: drop it and the flags that only meant something with it.
        entry.value = None;
        entry.flags = entry.flags.persistent();
        if entry.flags.is_empty() {
            self.entries.remove(&record.key);
            self.size = self.size.saturating_sub(record.key.len() as u64);
        } else {
            self.dirty = true;
        }
    }

    /// Empties the buffer and closes every level; the limits stay. Handles of closed levels
    /// and snapshots taken before stop being valid.
    pub fn reset(&mut self) {
        self.entries.clear();
        self.log_base += self.log.len() as u64;
        self.log.clear();
        self.log_value_bytes = 0;
        self.stages.clear();
        self.size = 0;
        self.dirty = false;
        self.snapshot_seq += 1;
    }

    /// The entries in `range` (`None` for a range `BTreeMap::range` would refuse).
    pub(super) fn range<R: RangeBounds<[u8]>>(
        &self,
        range: R,
    ) -> Option<btree_map::Range<'_, Bytes, Entry>> {
        let bounds = (range.start_bound(), range.end_bound());
        is_nonempty(bounds).then(|| self.entries.range::<[u8], _>(bounds))
    }

    /// The keys whose current value was written in `handle`'s level or a level inside it
    /// (client-go's `InspectStage`), each once, with its current value and flags, in the
    /// order they were first written.
    ///
    /// Errors: [`BufferError::StagingClosed`] when the level is not open.
    pub fn stage_entries(
        &self,
        handle: StagingHandle,
    ) -> Result<impl Iterator<Item = EntryRef<'_>> + '_, BufferError> {
        let Some(stage) = self.open_stage(handle) else {
            return Err(BufferError::StagingClosed {
                level: handle.level,
            });
        };
        let skip = stage.start.saturating_sub(self.log_base) as usize;
        let log_base = self.log_base;
        Ok(self
            .log
            .get(skip..)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(move |(i, record)| {
                let pos = log_base + (skip + i) as u64;
                let (key, entry) = self.entries.get_key_value(&record.key)?;
                // The key's newest record stands for it; older ones are skipped.
                (entry.pos == pos && entry.value.is_some()).then(|| entry_ref(key, entry))
            }))
    }

    /// The values `key` has had that the buffer still knows, newest first: the current
    /// value, then the value before each open level that changed it (client-go's
    /// `SelectValueHistory` searches the same history with a predicate). Empty when the
    /// key has no value.
    pub fn value_history(&self, key: &[u8]) -> impl Iterator<Item = &BufferValue> + '_ {
        let entry = self.entries.get(key);
        let mut next = entry.and_then(|e| e.value.as_ref().map(|v| (v, e.pos)));
        std::iter::from_fn(move || {
            let (value, pos) = next.take()?;
            next = self
                .record(pos)
                .and_then(|r| r.old_value.as_ref().map(|v| (v, r.old_pos)));
            Some(value)
        })
    }

    fn record(&self, pos: u64) -> Option<&UndoRecord> {
        let index = pos.checked_sub(self.log_base)?;
        self.log.get(usize::try_from(index).ok()?)
    }

    /// The value `entry` had before the outer level opened: its current value when no
    /// level is open or the current value is older, else found by walking its records.
    pub(super) fn snapshot_value<'a>(&'a self, entry: &'a Entry) -> Option<&'a BufferValue> {
        let Some(outer) = self.stages.first() else {
            return entry.value.as_ref();
        };
        let (mut value, mut pos) = (entry.value.as_ref(), entry.pos);
        while pos >= outer.start {
            let Some(record) = self.record(pos) else {
                break;
            };
            value = record.old_value.as_ref();
            pos = record.old_pos;
        }
        value
    }

    /// The value of `key` as it was before the outer staging level opened (client-go's
    /// snapshot getter): what the transaction had written before the current statement.
    /// With no level open it is [`MemDb::get`].
    pub fn snapshot_get(&self, key: &[u8]) -> Option<&BufferValue> {
        self.entries
            .get(key)
            .and_then(|entry| self.snapshot_value(entry))
    }

    /// A checked view of the buffer as it was before the outer staging level opened
    /// (client-go's `GetSnapshot`): reads through it fail once that view may have changed,
    /// so they can be interleaved with writes in a level. See [`BufferSnapshot`].
    pub fn snapshot(&self) -> BufferSnapshot {
        BufferSnapshot::new(self.snapshot_seq)
    }

    /// The sequence number a [`BufferSnapshot`] checks.
    pub(super) fn snapshot_seq(&self) -> u64 {
        self.snapshot_seq
    }

    /// Removes `key` outright, bypassing staging. Only for client-go's randomized test,
    /// which removes keys from its reference map the same way; valid with no level open.
    #[cfg(test)]
    pub(super) fn remove_from_buffer(&mut self, key: &[u8]) {
        if let Some((key, entry)) = self.entries.remove_entry(key) {
            self.size -= key.len() as u64 + entry.value.map_or(0, |v| v.len() as u64);
        }
    }
}

fn check_key(key: &[u8]) -> Result<(), BufferError> {
    if key.len() > MAX_KEY_LEN {
        return Err(BufferError::KeyTooLarge {
            size: key.len(),
            limit: MAX_KEY_LEN,
        });
    }
    Ok(())
}

pub(super) fn entry_ref<'a>(key: &'a Bytes, entry: &'a Entry) -> EntryRef<'a> {
    EntryRef {
        key,
        value: entry.value.as_ref(),
        flags: entry.flags,
    }
}

/// Whether `BTreeMap::range` accepts the bounds (it panics on an inverted range) and they
/// can hold a key.
fn is_nonempty((start, end): (std::ops::Bound<&[u8]>, std::ops::Bound<&[u8]>)) -> bool {
    use std::ops::Bound;
    match (start, end) {
        (Bound::Included(a), Bound::Included(b)) => a <= b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b)) => a < b,
        _ => true,
    }
}
