//! Property tests: the buffer against a model built on `BTreeMap`s, over random histories
//! of writes, deletes, flag updates, staging levels opened and closed in any order (wrong
//! ones included), snapshots and resets, with and without size limits.
//!
//! The model states the semantics directly: each open level keeps a copy of every value as
//! it was when the level opened and the set of keys written in it; a cleanup puts those
//! keys' values back (a key that had none keeps only its persistent flags, and goes when it
//! has none); a release merges the written set into the parent.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use quickcheck::{Arbitrary, Gen, QuickCheck};

use super::*;
use crate::txn::buffer::{BufferError, BufferSnapshot, FlagsOp, KeyFlags, SizeLimits};

/// One step of a random history.
#[derive(Clone, Debug)]
enum Op {
    Set {
        key: u8,
        value: u8,
        len: u8,
        ops: Vec<FlagsOp>,
    },
    Delete {
        key: u8,
        ops: Vec<FlagsOp>,
    },
    UpdateFlags {
        key: u8,
        ops: Vec<FlagsOp>,
    },
    Staging,
    /// Closes the handle picked among every handle issued so far (open or not).
    Release {
        pick: u8,
    },
    Cleanup {
        pick: u8,
    },
    Snapshot,
    Reset,
}

fn flag_ops(g: &mut Gen) -> Vec<FlagsOp> {
    let count = usize::arbitrary(g) % 3;
    (0..count)
        .map(|_| *g.choose(&FlagsOp::ALL).unwrap_or(&FlagsOp::SetKeyLocked))
        .collect()
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        let key = u8::arbitrary(g);
        match u8::arbitrary(g) % 32 {
            0..=8 => Self::Set {
                key,
                value: u8::arbitrary(g),
                len: u8::arbitrary(g) % 8,
                ops: if bool::arbitrary(g) {
                    Vec::new()
                } else {
                    flag_ops(g)
                },
            },
            9..=11 => Self::Delete {
                key,
                ops: if bool::arbitrary(g) {
                    Vec::new()
                } else {
                    flag_ops(g)
                },
            },
            12..=15 => Self::UpdateFlags {
                key,
                ops: flag_ops(g),
            },
            16..=21 => Self::Staging,
            22..=25 => Self::Release { pick: key },
            26..=29 => Self::Cleanup { pick: key },
            30 => Self::Snapshot,
            _ => {
                if u8::arbitrary(g) % 4 == 0 {
                    Self::Reset
                } else {
                    Self::Staging
                }
            }
        }
    }
}

/// Eight keys, two of them sharing a prefix and one empty, so histories collide often.
fn key_of(n: u8) -> Bytes {
    match n % 8 {
        6 => Bytes::from_static(&[1, 1]),
        7 => Bytes::new(),
        k => Bytes::from(vec![k]),
    }
}

fn all_keys() -> Vec<Bytes> {
    (0..8).map(key_of).collect()
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelEntry {
    value: Option<BufferValue>,
    flags: KeyFlags,
}

#[derive(Clone, Debug)]
struct Level {
    /// Which handle (index into the history's handles) opened it.
    handle: usize,
    /// Every key's value when the level opened (`None`: flags only).
    at_open: BTreeMap<Bytes, Option<BufferValue>>,
    /// Keys whose value was written in the level (or in released levels inside it).
    written: BTreeSet<Bytes>,
}

#[derive(Clone, Debug)]
struct Model {
    entries: BTreeMap<Bytes, ModelEntry>,
    levels: Vec<Level>,
    dirty: bool,
    limits: SizeLimits,
    /// Moves when the snapshot view may change, as the buffer's does.
    seq: u64,
}

impl Model {
    fn new(limits: SizeLimits) -> Self {
        Self {
            entries: BTreeMap::new(),
            levels: Vec::new(),
            dirty: false,
            limits,
            seq: 0,
        }
    }

    fn size(&self) -> u64 {
        self.entries
            .iter()
            .map(|(k, e)| (k.len() + e.value.as_ref().map_or(0, BufferValue::len)) as u64)
            .sum()
    }

    fn write(
        &mut self,
        key: Bytes,
        value: BufferValue,
        ops: &[FlagsOp],
    ) -> Result<(), BufferError> {
        let entry_size = (key.len() + value.len()) as u64;
        if entry_size > self.limits.entry {
            return Err(BufferError::EntryTooLarge {
                size: entry_size,
                limit: self.limits.entry,
            });
        }
        let old = self.entries.get(&key);
        let old_size = old.map_or(0, |e| {
            (key.len() + e.value.as_ref().map_or(0, BufferValue::len)) as u64
        });
        let size = self.size() - old_size + entry_size;
        if size > self.limits.total {
            return Err(BufferError::TxnTooLarge {
                size,
                limit: self.limits.total,
            });
        }
        let flags = old
            .map_or(KeyFlags::empty(), |e| e.flags)
            .apply_one(FlagsOp::DelNeedConstraintCheckInPrewrite)
            .apply(ops);
        self.entries.insert(
            key.clone(),
            ModelEntry {
                value: Some(value),
                flags,
            },
        );
        match self.levels.last_mut() {
            Some(level) => {
                level.written.insert(key);
            }
            None => {
                self.dirty = true;
                self.seq += 1;
            }
        }
        if !flags.persistent().is_empty() {
            self.dirty = true;
        }
        Ok(())
    }

    fn update_flags(&mut self, key: Bytes, ops: &[FlagsOp]) {
        if self.levels.is_empty() {
            self.dirty = true;
            self.seq += 1;
        }
        let entry = self.entries.entry(key).or_insert(ModelEntry {
            value: None,
            flags: KeyFlags::empty(),
        });
        entry.flags = entry.flags.apply(ops);
        if !entry.flags.persistent().is_empty() {
            self.dirty = true;
        }
    }

    fn staging(&mut self, handle: usize) {
        let at_open = self
            .entries
            .iter()
            .map(|(k, e)| (k.clone(), e.value.clone()))
            .collect();
        self.levels.push(Level {
            handle,
            at_open,
            written: BTreeSet::new(),
        });
    }

    /// Where the level opened by `handle` stands: `Ok(())` for the innermost, the error a
    /// release gets otherwise.
    fn check_handle(&self, handle: usize, level: usize) -> Result<(), BufferError> {
        match self.levels.iter().position(|l| l.handle == handle) {
            Some(i) if i + 1 == self.levels.len() => Ok(()),
            Some(i) => Err(BufferError::StagingNotInnermost {
                level: i + 1,
                innermost: self.levels.len(),
            }),
            None => Err(BufferError::StagingClosed { level }),
        }
    }

    fn release(&mut self, handle: usize, level: usize) -> Result<(), BufferError> {
        self.check_handle(handle, level)?;
        let Some(closed) = self.levels.pop() else {
            return Ok(());
        };
        match self.levels.last_mut() {
            Some(parent) => parent.written.extend(closed.written),
            None => {
                self.dirty |= !closed.written.is_empty();
                self.seq += 1;
            }
        }
        Ok(())
    }

    fn cleanup(&mut self, handle: usize, level: usize) -> Result<(), BufferError> {
        match self.check_handle(handle, level) {
            Ok(()) => {}
            Err(BufferError::StagingClosed { .. }) => return Ok(()),
            Err(other) => return Err(other),
        }
        let Some(closed) = self.levels.pop() else {
            return Ok(());
        };
        for key in closed.written {
            match closed.at_open.get(&key) {
                Some(Some(value)) => {
                    if let Some(entry) = self.entries.get_mut(&key) {
                        entry.value = Some(value.clone());
                    }
                }
                _ => {
                    let Some(entry) = self.entries.get_mut(&key) else {
                        continue;
                    };
                    entry.value = None;
                    entry.flags = entry.flags.persistent();
                    if entry.flags.is_empty() {
                        self.entries.remove(&key);
                    }
                }
            }
        }
        if self.levels.is_empty() {
            self.seq += 1;
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.entries.clear();
        self.levels.clear();
        self.dirty = false;
        self.seq += 1;
    }

    /// The values the snapshot shows: as the outer level found them, or current.
    fn snapshot_view(&self) -> BTreeMap<Bytes, BufferValue> {
        match self.levels.first() {
            Some(outer) => outer
                .at_open
                .iter()
                .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
                .collect(),
            None => self
                .entries
                .iter()
                .filter_map(|(k, e)| e.value.clone().map(|v| (k.clone(), v)))
                .collect(),
        }
    }
}

/// Compares everything the buffer can tell with the model.
fn check(
    db: &MemDb,
    model: &Model,
    snapshots: &[(BufferSnapshot, u64, BTreeMap<Bytes, BufferValue>)],
    handles: &[StagingHandle],
) -> Result<(), String> {
    let fail = |what: &str| Err(format!("{what} differs; buffer {db:?}, model {model:?}"));
    if db.len() != model.entries.len() || db.size() != model.size() {
        return fail("len or size");
    }
    if db.dirty() != model.dirty || db.staging_depth() != model.levels.len() {
        return fail("dirty or depth");
    }
    for key in all_keys() {
        let expected = model.entries.get(&key);
        if db.get(&key) != expected.and_then(|e| e.value.as_ref()) {
            return fail("get");
        }
        if db.get_flags(&key) != expected.map(|e| e.flags) {
            return fail("flags");
        }
        if db.value_history(&key).next() != expected.and_then(|e| e.value.as_ref()) {
            return fail("history head");
        }
    }
    let walked: Vec<_> = db
        .iter_with_flags(..)
        .map(|e| (e.key.clone(), e.value.cloned(), e.flags))
        .collect();
    let expected: Vec<_> = model
        .entries
        .iter()
        .map(|(k, e)| (k.clone(), e.value.clone(), e.flags))
        .collect();
    if walked != expected {
        return fail("walk with flags");
    }
    let values: Vec<_> = db.iter(..).map(|(k, v)| (k.clone(), v.clone())).collect();
    let expected: Vec<_> = model
        .entries
        .iter()
        .filter_map(|(k, e)| e.value.clone().map(|v| (k.clone(), v)))
        .collect();
    if values != expected {
        return fail("walk");
    }
    let mut backward: Vec<_> = db
        .iter_reverse(..)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    backward.reverse();
    if backward != expected {
        return fail("reverse walk");
    }

    let view = model.snapshot_view();
    let snapshot_walk: BTreeMap<_, _> = db
        .snapshot_iter(..)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if snapshot_walk != view {
        return fail("snapshot walk");
    }
    let mut backward: Vec<_> = db
        .snapshot_iter(..)
        .rev()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    backward.reverse();
    if backward != view.clone().into_iter().collect::<Vec<_>>() {
        return fail("reverse snapshot walk");
    }
    for key in all_keys() {
        if db.snapshot_get(&key) != view.get(&key) {
            return fail("snapshot get");
        }
    }
    for (snapshot, seq, taken_view) in snapshots {
        let valid = *seq == model.seq;
        if snapshot.is_valid(db) != valid {
            return fail("snapshot validity");
        }
        if valid {
            let mut cursor = snapshot.cursor(.., false);
            let mut seen = BTreeMap::new();
            while let Some((key, value)) = cursor.next(db).map_err(|e| e.to_string())? {
                seen.insert(key, value);
            }
            if &seen != taken_view || &view != taken_view {
                return fail("valid snapshot's content");
            }
        }
    }

    // Each open level shows the keys written in it and in the levels inside it.
    for (i, level) in model.levels.iter().enumerate() {
        let handle = handles[level.handle];
        let shown: BTreeSet<Bytes> = db
            .stage_entries(handle)
            .map_err(|e| e.to_string())?
            .map(|entry| entry.key.clone())
            .collect();
        let expected: BTreeSet<Bytes> = model.levels[i..]
            .iter()
            .flat_map(|l| l.written.iter().cloned())
            .collect();
        if shown != expected {
            return fail("stage entries");
        }
    }
    Ok(())
}

fn run(history: &[Op], limits: SizeLimits) -> Result<(), String> {
    let mut db = MemDb::with_limits(limits);
    let mut model = Model::new(limits);
    let mut handles = Vec::new();
    let mut snapshots = Vec::new();
    for (step, op) in history.iter().enumerate() {
        let (got, expected) = match op {
            Op::Set {
                key,
                value,
                len,
                ops,
            } => {
                let value = BufferValue::Put(Bytes::from(vec![*value; usize::from(*len)]));
                let got = match &value {
                    BufferValue::Put(v) if ops.is_empty() => db.set(key_of(*key), v.clone()),
                    BufferValue::Put(v) => db.set_with_flags(key_of(*key), v.clone(), ops),
                    BufferValue::Delete => db.delete(key_of(*key)),
                };
                (got, model.write(key_of(*key), value, ops))
            }
            Op::Delete { key, ops } => {
                let got = if ops.is_empty() {
                    db.delete(key_of(*key))
                } else {
                    db.delete_with_flags(key_of(*key), ops)
                };
                (got, model.write(key_of(*key), BufferValue::Delete, ops))
            }
            Op::UpdateFlags { key, ops } => {
                model.update_flags(key_of(*key), ops);
                (db.update_flags(key_of(*key), ops), Ok(()))
            }
            Op::Staging => {
                handles.push(db.staging());
                model.staging(handles.len() - 1);
                (Ok(()), Ok(()))
            }
            Op::Release { pick } | Op::Cleanup { pick } => {
                if handles.is_empty() {
                    continue;
                }
                let index = usize::from(*pick) % handles.len();
                let handle = handles[index];
                if matches!(op, Op::Release { .. }) {
                    (db.release(handle), model.release(index, handle.level()))
                } else {
                    (db.cleanup(handle), model.cleanup(index, handle.level()))
                }
            }
            Op::Snapshot => {
                snapshots.push((db.snapshot(), model.seq, model.snapshot_view()));
                (Ok(()), Ok(()))
            }
            Op::Reset => {
                db.reset();
                model.reset();
                (Ok(()), Ok(()))
            }
        };
        if got != expected {
            return Err(format!(
                "step {step} {op:?}: buffer {got:?}, model {expected:?}"
            ));
        }
        check(&db, &model, &snapshots, &handles)
            .map_err(|e| format!("after step {step} {op:?}: {e}"))?;
    }
    // Closing every level, innermost first, always succeeds.
    while db.staging_depth() > 0 {
        let Some(level) = model.levels.last() else {
            return Err("depth without levels".into());
        };
        let handle = handles[level.handle];
        let index = level.handle;
        db.release(handle).map_err(|e| e.to_string())?;
        model
            .release(index, handle.level())
            .map_err(|e| e.to_string())?;
    }
    check(&db, &model, &snapshots, &handles)
}

/// Random histories without limits: the buffer behaves as the model.
#[test]
fn buffer_matches_model() {
    fn property(history: Vec<Op>) -> Result<(), String> {
        run(&history, SizeLimits::unlimited())
    }
    QuickCheck::new()
        .tests(300)
        .quickcheck(property as fn(Vec<Op>) -> Result<(), String>);
}

/// Random histories under small limits, so writes are refused often: a refused write
/// changes nothing, and the errors are the model's.
#[test]
fn buffer_matches_model_under_limits() {
    fn property(history: Vec<Op>) -> Result<(), String> {
        run(
            &history,
            SizeLimits {
                entry: 6,
                total: 24,
            },
        )
    }
    QuickCheck::new()
        .tests(300)
        .quickcheck(property as fn(Vec<Op>) -> Result<(), String>);
}
