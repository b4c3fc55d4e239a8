//! Ports of client-go's `internal/unionstore/memdb_test.go` (each Go test runs on both of
//! client-go's memdb implementations; ours run once).

use bytes::Bytes;

use super::*;
use crate::txn::buffer::{BufferError, FlagsOp, KeyFlags, MAX_KEY_LEN, SizeLimits};

/// `TestGetSet`: 10,000 keys written in a released level read back.
#[test]
fn test_get_set() {
    let mut db = MemDb::new();
    fill_db(&mut db, 10_000);
    for i in 0..10_000 {
        assert_eq!(put_value(&db, &be(i)), Some(be(i)));
    }
}

/// `TestIterator`: full forward and reverse walks, then walks bounded above and below.
#[test]
fn test_iterator() {
    let mut db = MemDb::new();
    let count = 10_000;
    fill_db(&mut db, count);

    let mut i = 0;
    for (key, value) in db.iter(..) {
        assert_eq!(key, &be(i));
        assert_eq!(value.as_put(), Some(&be(i)));
        i += 1;
    }
    assert_eq!(i, count);

    for (key, value) in db.iter_reverse(..) {
        assert_eq!(key, &be(i - 1));
        assert_eq!(value.as_put(), Some(&be(i - 1)));
        i -= 1;
    }
    assert_eq!(i, 0);

    let bound = 400;
    let bound_key = be(bound);
    for (key, value) in db.iter(go_range(None, Some(&bound_key))) {
        assert_eq!(key, &be(i));
        assert_eq!(value.as_put(), Some(&be(i)));
        i += 1;
    }
    assert_eq!(i, bound);

    i = count;
    for (key, value) in db.iter_reverse(go_range(Some(&bound_key), None)) {
        assert_eq!(key, &be(i - 1));
        assert_eq!(value.as_put(), Some(&be(i - 1)));
        i -= 1;
    }
    assert_eq!(i, bound);
}

/// Checks that `db` holds `i -> value(i)` for every `i` in `0..count`, by get and by both
/// walks.
fn check_values(db: &MemDb, count: u32, value: impl Fn(u32) -> u32) {
    for i in 0..count {
        assert_eq!(put_value(db, &be(i)), Some(be(value(i))), "key {i}");
    }
    let forward = collect(db.iter(..));
    let expected: Vec<_> = (0..count).map(|i| (be(i), Some(be(value(i))))).collect();
    assert_eq!(forward, expected);
    let mut backward = collect(db.iter_reverse(..));
    backward.reverse();
    assert_eq!(backward, expected);
}

/// `TestDiscard`: cleaning up a level that overwrote everything restores values, length and
/// size; cleaning up the level that wrote them empties the buffer.
#[test]
fn test_discard() {
    let mut db = MemDb::new();
    let count = 10_000;
    let base = derive_and_fill(&mut db, 0, count, 0);
    let size = db.size();

    let overwrite = derive_and_fill(&mut db, 0, count, 1);
    ok(db.cleanup(overwrite));
    assert_eq!(db.len(), count as usize);
    assert_eq!(db.size(), size);
    check_values(&db, count, |i| i);

    ok(db.cleanup(base));
    for i in 0..count {
        assert_eq!(db.get(&be(i)), None);
    }
    assert_eq!(db.iter(..).next(), None);
    assert_eq!(db.iter_reverse(..).next(), None);
}

/// `TestFlushOverwrite`: a released level overwriting a released level keeps length and
/// size and shows the new values.
#[test]
fn test_flush_overwrite() {
    let mut db = MemDb::new();
    let count = 10_000;
    let first = derive_and_fill(&mut db, 0, count, 0);
    ok(db.release(first));
    let size = db.size();
    let second = derive_and_fill(&mut db, 0, count, 1);
    ok(db.release(second));
    assert_eq!(db.len(), count as usize);
    assert_eq!(db.size(), size);
    check_values(&db, count, |i| i + 1);
}

/// `TestComplexUpdate`: a second level overwrites part of the first and adds keys.
#[test]
fn test_complex_update() {
    let (keep, overwrite, insert) = (3000, 6000, 9000);
    let mut db = MemDb::new();
    let first = derive_and_fill(&mut db, 0, overwrite, 0);
    ok(db.release(first));
    assert_eq!(db.len(), overwrite as usize);
    let second = derive_and_fill(&mut db, keep, insert, 1);
    ok(db.release(second));
    assert_eq!(db.len(), insert as usize);
    for i in 0..insert {
        let expected = if i >= keep { i + 1 } else { i };
        assert_eq!(put_value(&db, &be(i)), Some(be(expected)), "key {i}");
    }
}

/// `TestNestedSandbox`: five nested levels closed by alternating cleanups and releases.
#[test]
fn test_nested_sandbox() {
    let mut db = MemDb::new();
    let h0 = derive_and_fill(&mut db, 0, 200, 0);
    let h1 = derive_and_fill(&mut db, 0, 100, 1);
    let h2 = derive_and_fill(&mut db, 50, 150, 2);
    let h3 = derive_and_fill(&mut db, 100, 120, 3);
    let h4 = derive_and_fill(&mut db, 0, 150, 4);
    ok(db.cleanup(h4)); // drops 0..150 -> 4
    ok(db.release(h3)); // keeps 100..120 -> 3 inside h2
    ok(db.cleanup(h2)); // drops it with 50..150 -> 2
    ok(db.release(h1)); // keeps 0..100 -> 1
    ok(db.release(h0)); // keeps everything left
    check_values(&db, 200, |i| if i < 100 { i + 1 } else { i });
}

/// `TestOverwrite`: overwriting a third of the keys at the top level keeps length and size.
#[test]
fn test_overwrite() {
    let mut db = MemDb::new();
    let count = 10_000;
    fill_db(&mut db, count);
    let size = db.size();
    for i in (0..count).step_by(3) {
        ok(db.set(be(i), be(i * 10)));
    }
    assert_eq!(db.len(), count as usize);
    assert_eq!(db.size(), size);
    check_values(&db, count, |i| if i % 3 == 0 { i * 10 } else { i });
}

/// `TestReset`: a reset buffer has no values, no flags and nothing to walk.
#[test]
fn test_reset() {
    let mut db = MemDb::new();
    fill_db(&mut db, 1000);
    db.reset();
    assert_eq!(db.get(&[0, 0, 0, 0]), None);
    assert_eq!(db.get_flags(&[0, 0, 0, 0]), None);
    assert_eq!(db.iter(..).next(), None);
    assert_eq!((db.len(), db.size(), db.dirty()), (0, 0, false));
}

/// `TestInspectStage`: a level's entries are the keys written in it or in levels inside
/// it, with their current values; after a cleanup and a release the outer level shows what
/// is left.
#[test]
fn test_inspect_stage() {
    let mut db = MemDb::new();
    let h1 = derive_and_fill(&mut db, 0, 1000, 0);
    let h2 = derive_and_fill(&mut db, 500, 1000, 1);
    for i in 500..1500u32 {
        // A 5-byte value, so the write cannot be an in-place update in client-go.
        let mut value = (i + 2).to_be_bytes().to_vec();
        value.push(0);
        ok(db.set(be(i), value));
    }
    let h3 = derive_and_fill(&mut db, 1000, 2000, 3);

    let decode = |bytes: &[u8]| u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let inspect = |db: &MemDb, handle| -> Vec<(u32, u32)> {
        ok(db.stage_entries(handle))
            .map(|entry| {
                let value = entry.value.and_then(BufferValue::as_put).map(|v| decode(v));
                (
                    decode(entry.key),
                    value.unwrap_or_else(|| panic!("no value")),
                )
            })
            .collect()
    };

    let in_h3 = inspect(&db, h3);
    assert_eq!(in_h3.len(), 1000);
    for (k, v) in in_h3 {
        assert!((1000..2000).contains(&k));
        assert_eq!(v - k, 3);
    }
    let in_h2 = inspect(&db, h2);
    assert_eq!(in_h2.len(), 1500);
    for (k, v) in in_h2 {
        assert!((500..2000).contains(&k));
        assert_eq!(v - k, if k < 1000 { 2 } else { 3 });
    }

    ok(db.cleanup(h3));
    ok(db.release(h2));
    let in_h1 = inspect(&db, h1);
    assert_eq!(in_h1.len(), 1500);
    for (k, v) in in_h1 {
        assert!(k < 1500);
        assert_eq!(v - k, if k < 500 { 0 } else { 2 });
    }
    ok(db.release(h1));
    assert!(matches!(
        db.stage_entries(h1).map(|entries| entries.count()),
        Err(BufferError::StagingClosed { level: 1 })
    ));
}

/// `TestDirty`: writes at the top level and released levels make the buffer dirty, a
/// cleaned-up level does not, unless it set a persistent flag.
#[test]
fn test_dirty() {
    let mut db = MemDb::new();
    ok(db.set(vec![1], vec![1]));
    assert!(db.dirty());

    let mut db = MemDb::new();
    let h = db.staging();
    ok(db.set(vec![1], vec![1]));
    ok(db.cleanup(h));
    assert!(!db.dirty());

    let h = db.staging();
    ok(db.set(vec![1], vec![1]));
    ok(db.release(h));
    assert!(db.dirty());

    // Persistent flags make the buffer dirty.
    let mut db = MemDb::new();
    let h = db.staging();
    ok(db.set_with_flags(vec![1], vec![1], &[FlagsOp::SetKeyLocked]));
    ok(db.cleanup(h));
    assert!(db.dirty());

    // Other flags do not.
    let mut db = MemDb::new();
    let h = db.staging();
    ok(db.set_with_flags(vec![1], vec![1], &[FlagsOp::SetPresumeKeyNotExists]));
    ok(db.cleanup(h));
    assert!(!db.dirty());
}

/// `TestFlags`: a cleanup keeps persistent flags on keys left without a value, drops the
/// others' keys, and flag updates create flags-only keys; checked with a forward and a
/// reverse walk over keys with flags.
#[test]
fn test_flags() {
    for reverse in [false, true] {
        let mut db = MemDb::new();
        let count = 10_000u32;
        let h = db.staging();
        for i in 0..count {
            let ops: &[FlagsOp] = if i % 2 == 0 {
                &[FlagsOp::SetPresumeKeyNotExists, FlagsOp::SetKeyLocked]
            } else {
                &[FlagsOp::SetPresumeKeyNotExists]
            };
            ok(db.set_with_flags(be(i), be(i), ops));
        }
        ok(db.cleanup(h));

        for i in 0..count {
            assert_eq!(db.get(&be(i)), None);
            let flags = db.get_flags(&be(i));
            if i % 2 == 0 {
                let flags = flags.unwrap_or_else(|| panic!("key {i} lost its flags"));
                assert!(flags.has_locked());
                assert!(!flags.has_presume_key_not_exists());
            } else {
                assert_eq!(flags, None);
            }
        }
        assert_eq!(db.len(), 5000);
        assert_eq!(db.size(), 20_000);
        assert_eq!(db.iter(..).next(), None);

        let entries: Vec<_> = if reverse {
            db.iter_with_flags(..).rev().collect()
        } else {
            db.iter_with_flags(..).collect()
        };
        assert_eq!(entries.len(), 5000);
        for entry in entries {
            let k = u32::from_be_bytes([entry.key[0], entry.key[1], entry.key[2], entry.key[3]]);
            assert_eq!(k % 2, 0);
            assert_eq!(entry.value, None);
        }

        for i in 0..count {
            ok(db.update_flags(be(i), &[FlagsOp::DelKeyLocked]));
        }
        for i in 0..count {
            assert_eq!(db.get(&be(i)), None);
            // Updating flags creates the missing keys.
            let flags = db.get_flags(&be(i));
            assert_eq!(flags.map(KeyFlags::has_locked), Some(false));
        }
    }
}

const START_INDEX: u32 = 0;
const TEST_COUNT: u32 = 2;
const INDEX_STEP: u32 = 2;

/// Client-go's `encodeInt`: ten decimal digits, zero-padded.
pub(super) fn encode_int(n: u32) -> Bytes {
    Bytes::from(format!("{n:010}"))
}

/// Client-go's `insertData`.
fn insert_data(db: &mut MemDb) {
    for i in START_INDEX..TEST_COUNT {
        let value = encode_int(i * INDEX_STEP);
        ok(db.set(value.clone(), value));
    }
}

/// `TestKVGetSet`.
#[test]
fn test_kv_get_set() {
    let mut db = MemDb::new();
    insert_data(&mut db);
    for i in START_INDEX..TEST_COUNT {
        let key = encode_int(i * INDEX_STEP);
        assert_eq!(put_value(&db, &key), Some(key));
    }
}

/// `TestNewIterator`: an empty buffer walks nothing; seeks land on the key or the next one.
#[test]
fn test_new_iterator() {
    let mut db = MemDb::new();
    assert_eq!(db.iter(..).next(), None);
    insert_data(&mut db);

    for i in START_INDEX..TEST_COUNT {
        let key = encode_int(i * INDEX_STEP);
        let first = db.iter(go_range(Some(&key), None)).next();
        assert_eq!(
            first.map(|(k, v)| (k.clone(), v.clone())),
            Some((key.clone(), BufferValue::Put(key)))
        );
    }
    for i in START_INDEX..TEST_COUNT - 1 {
        let key = encode_int(i * INDEX_STEP);
        let mut iter = db.iter(go_range(Some(&key), None));
        assert_eq!(iter.next().map(|(k, _)| k), Some(&key));
        let next = encode_int((i + 1) * INDEX_STEP);
        let second = iter.next();
        assert_eq!(
            second.map(|(k, v)| (k.clone(), v.clone())),
            Some((next.clone(), BufferValue::Put(next)))
        );
    }
    // Beyond the last key.
    let beyond = encode_int(TEST_COUNT * INDEX_STEP);
    assert_eq!(db.iter(go_range(Some(&beyond), None)).next(), None);
    // Between two keys: the next one.
    let between = encode_int((TEST_COUNT - 1) * INDEX_STEP - 1);
    let last = encode_int((TEST_COUNT - 1) * INDEX_STEP);
    assert_eq!(
        db.iter(go_range(Some(&between), None))
            .next()
            .map(|(k, _)| k),
        Some(&last)
    );
}

/// `TestIterNextUntil`: walking with a condition that never holds runs to the end.
#[test]
fn test_iter_next_until() {
    let mut db = MemDb::new();
    insert_data(&mut db);
    let mut iter = db.iter(..);
    assert!(iter.by_ref().all(|_| true));
    assert_eq!(iter.next(), None);
}

/// `TestBasicNewIterator`: a seek into an empty buffer finds nothing.
#[test]
fn test_basic_new_iterator() {
    let db = MemDb::new();
    assert_eq!(db.iter(go_range(Some(b"2"), None)).next(), None);
}

/// `TestNewIteratorMin`: keys sharing long prefixes walk in order and seek correctly.
#[test]
fn test_new_iterator_min() {
    let pairs = [
        (
            "DATA_test_main_db_tbl_tbl_test_record__00000000000000000001",
            "lock-version",
        ),
        (
            "DATA_test_main_db_tbl_tbl_test_record__00000000000000000001_0002",
            "1",
        ),
        (
            "DATA_test_main_db_tbl_tbl_test_record__00000000000000000001_0003",
            "hello",
        ),
        (
            "DATA_test_main_db_tbl_tbl_test_record__00000000000000000002",
            "lock-version",
        ),
        (
            "DATA_test_main_db_tbl_tbl_test_record__00000000000000000002_0002",
            "2",
        ),
        (
            "DATA_test_main_db_tbl_tbl_test_record__00000000000000000002_0003",
            "hello",
        ),
    ];
    let mut db = MemDb::new();
    for (key, value) in pairs {
        ok(db.set(key, value));
    }
    assert_eq!(db.iter(..).count(), 6);
    let seek = b"DATA_test_main_db_tbl_tbl_test_record__00000000000000000000";
    let first = db
        .iter(go_range(Some(seek), None))
        .next()
        .map(|(k, _)| k.clone());
    assert_eq!(first, Some(Bytes::from(pairs[0].0)));
}

/// `TestMemDBStaging`: a released inner level stays until the outer one is cleaned up.
#[test]
fn test_mem_db_staging() {
    let mut db = MemDb::new();
    ok(db.set("x", vec![0; 2]));
    let h1 = db.staging();
    ok(db.set("x", vec![0; 3]));
    let h2 = db.staging();
    ok(db.set("yz", vec![0; 1]));
    assert_eq!(db.get(b"x").map(BufferValue::len), Some(3));
    ok(db.release(h2));
    assert_eq!(db.get(b"yz").map(BufferValue::len), Some(1));
    ok(db.cleanup(h1));
    assert_eq!(db.get(b"x").map(BufferValue::len), Some(2));
    assert_eq!(db.get(b"yz"), None);
}

/// `TestMemDBMultiLevelStaging`: a hundred levels each overwrite one key, then close in
/// turn, odd ones cleaned up and even ones released.
#[test]
fn test_mem_db_multi_level_staging() {
    let mut db = MemDb::new();
    let key = [0u8];
    let mut handles = Vec::new();
    for i in 0..100u8 {
        let handle = db.staging();
        assert_eq!(handle.level(), usize::from(i) + 1);
        handles.push(handle);
        ok(db.set(key.to_vec(), vec![i]));
        assert_eq!(put_value(&db, &key), Some(Bytes::from(vec![i])));
    }
    for i in (0..100u8).rev() {
        let handle = handles.pop().unwrap_or_else(|| panic!("no handle"));
        let expected = if i % 2 == 1 {
            ok(db.cleanup(handle));
            i - 1
        } else {
            ok(db.release(handle));
            i
        };
        assert_eq!(put_value(&db, &key), Some(Bytes::from(vec![expected])));
    }
}

/// `TestInvalidStagingHandle`: levels close innermost first. Where client-go panics (a
/// release or cleanup of an outer level), ours returns a typed error and changes nothing;
/// a cleanup of a closed level is accepted and does nothing, as in client-go. (Client-go's
/// handle 0, a no-op, has no counterpart: a `StagingHandle` always names a level.)
#[test]
fn test_invalid_staging_handle() {
    let mut db = MemDb::new();
    let h1 = db.staging();
    let h2 = db.staging();
    assert!(h1.level() > 0 && h2.level() > h1.level());
    assert_eq!(
        db.release(h1),
        Err(BufferError::StagingNotInnermost {
            level: 1,
            innermost: 2
        })
    );
    assert_eq!(db.staging_depth(), 2);
    ok(db.release(h2));
    assert_eq!(db.release(h2), Err(BufferError::StagingClosed { level: 2 }));
    ok(db.release(h1));
    assert_eq!(db.release(h1), Err(BufferError::StagingClosed { level: 1 }));
    assert_eq!(db.staging_depth(), 0);

    let h1 = db.staging();
    let h2 = db.staging();
    ok(db.set("k", "v"));
    assert_eq!(
        db.cleanup(h1),
        Err(BufferError::StagingNotInnermost {
            level: 1,
            innermost: 2
        })
    );
    assert_eq!(put_value(&db, b"k"), Some(Bytes::from("v")));
    ok(db.cleanup(h2));
    ok(db.cleanup(h2));
    ok(db.cleanup(h1));
    ok(db.cleanup(h1));
    assert_eq!((db.staging_depth(), db.len()), (0, 0));

    // A handle whose level number was reused by a newer level no longer names it.
    let stale = db.staging();
    ok(db.cleanup(stale));
    let fresh = db.staging();
    assert_eq!(stale.level(), fresh.level());
    assert_eq!(
        db.release(stale),
        Err(BufferError::StagingClosed { level: 1 })
    );
    ok(db.cleanup(stale));
    assert_eq!(db.staging_depth(), 1);
    ok(db.release(fresh));
}

/// `TestBufferLimit`: the entry limit counts key and value, the total limit the whole
/// buffer; a delete counts its key.
#[test]
fn test_buffer_limit() {
    let mut db = MemDb::with_limits(SizeLimits {
        entry: 500,
        total: 1000,
    });
    assert_eq!(
        db.set("x", vec![0; 500]),
        Err(BufferError::EntryTooLarge {
            size: 501,
            limit: 500
        })
    );
    ok(db.set("x", vec![0; 499]));
    assert!(matches!(
        db.set("yz", vec![0; 499]),
        Err(BufferError::EntryTooLarge { .. })
    ));
    ok(db.delete(vec![0; 499]));
    assert_eq!(
        db.delete(vec![0; 500]),
        Err(BufferError::TxnTooLarge {
            size: 1499,
            limit: 1000
        })
    );
    // A refused write leaves nothing behind.
    assert_eq!((db.len(), db.size()), (2, 999));
    assert_eq!(db.get(&[0; 500]), None);
}

/// `TestUnsetTemporaryFlag`: a later write of a value ends a postponed constraint check.
#[test]
fn test_unset_temporary_flag() {
    let mut db = MemDb::new();
    ok(db.set_with_flags(
        vec![1],
        vec![2],
        &[FlagsOp::SetNeedConstraintCheckInPrewrite],
    ));
    ok(db.set(vec![1], vec![2]));
    let flags = db.get_flags(&[1]);
    assert_eq!(
        flags.map(KeyFlags::has_need_constraint_check_in_prewrite),
        Some(false)
    );
    // A flags update keeps it.
    ok(db.update_flags(vec![1], &[FlagsOp::SetNeedConstraintCheckInPrewrite]));
    ok(db.update_flags(vec![1], &[FlagsOp::SetReadable]));
    let flags = db.get_flags(&[1]);
    assert_eq!(
        flags.map(KeyFlags::has_need_constraint_check_in_prewrite),
        Some(true)
    );
}

/// `TestSnapshotGetIter`: snapshot reads see the state before the outer level opened.
///
/// Client-go's unchecked getters and iterators, kept across later writes, become stateless
/// reads here (`snapshot_get`, `snapshot_iter`: a borrow cannot outlive a write); the
/// checked cursors stand in for the kept iterators: those taken after the level opened
/// still read the snapshot at the end, those taken before top-level writes followed them
/// report that the snapshot changed.
#[test]
fn test_snapshot_get_iter() {
    let mut db = MemDb::new();
    let mut cursors = Vec::new();
    for i in 0..100u8 {
        ok(db.set(vec![0], vec![i]));
        ok(db.set(vec![1], vec![i]));
        let expected = BufferValue::Put(Bytes::from(vec![i.min(50)]));
        assert_eq!(db.snapshot_get(&[0]), Some(&expected));
        let first = db.snapshot_iter(..).next();
        assert_eq!(first, Some((&Bytes::from(vec![0]), &expected)));
        let last = db.snapshot_iter(..).next_back();
        assert_eq!(last, Some((&Bytes::from(vec![1]), &expected)));
        cursors.push((
            i,
            db.snapshot().cursor(.., false),
            db.snapshot().cursor(.., true),
        ));
        // Writes after the level opens are not part of the snapshot.
        if i == 50 {
            db.staging();
        }
    }
    let fifty = BufferValue::Put(Bytes::from(vec![50]));
    assert_eq!(db.snapshot_get(&[0]), Some(&fifty));
    assert_eq!(db.snapshot_iter(..).next().map(|(_, v)| v), Some(&fifty));
    assert_eq!(
        db.snapshot_iter(..).next_back().map(|(_, v)| v),
        Some(&fifty)
    );
    for (i, mut forward, mut reverse) in cursors {
        if i >= 50 {
            assert_eq!(
                ok(forward.next(&db)),
                Some((Bytes::from(vec![0]), fifty.clone()))
            );
            assert_eq!(
                ok(reverse.next(&db)),
                Some((Bytes::from(vec![1]), fifty.clone()))
            );
        } else {
            assert_eq!(forward.next(&db), Err(BufferError::SnapshotChanged));
            assert_eq!(reverse.next(&db), Err(BufferError::SnapshotChanged));
        }
    }

    db.reset();
    ok(db.update_flags(vec![255], &[FlagsOp::SetPresumeKeyNotExists]));
    // (2, 2) ... (98, 98) before the level.
    for i in 1..50u8 {
        ok(db.set(vec![2 * i], vec![2 * i]));
    }
    let h = db.staging();
    // (0, 0), (1, 2), (2, 4) ... (99, 198) in the level.
    for i in 0..100u8 {
        ok(db.set(vec![i], vec![2 * i]));
    }
    assert_eq!(
        db.snapshot_get(&[2]),
        Some(&BufferValue::Put(Bytes::from(vec![2])))
    );
    assert_eq!(db.snapshot_get(&[1]), None);
    assert_eq!(db.snapshot_get(&[254]), None);
    assert_eq!(db.snapshot_get(&[255]), None);

    let expected: Vec<_> = (1..50u8)
        .map(|i| (Bytes::from(vec![2 * i]), Some(Bytes::from(vec![2 * i]))))
        .collect();
    assert_eq!(collect(db.snapshot_iter(..)), expected);
    let mut backward = collect(db.snapshot_iter(..).rev());
    backward.reverse();
    assert_eq!(backward, expected);
    ok(db.release(h));
}

/// `TestCleanupKeepPersistentFlag`: a cleanup drops the values it added, keeps persistent
/// flags (on keys left without a value) and drops the other flags.
#[test]
fn test_cleanup_keep_persistent_flag() {
    let mut db = MemDb::new();
    let persistent = FlagsOp::SetKeyLocked;
    let other = FlagsOp::SetPresumeKeyNotExists;
    let h = db.staging();
    ok(db.set_with_flags(vec![1], vec![1], &[persistent]));
    ok(db.set_with_flags(vec![2], vec![2], &[other]));
    ok(db.set_with_flags(vec![3], vec![3], &[persistent, other]));
    ok(db.cleanup(h));

    for key in [[1], [2], [3]] {
        assert_eq!(db.get(&key), None);
    }
    assert_eq!(db.get_flags(&[1]).map(KeyFlags::has_locked), Some(true));
    assert_eq!(db.get_flags(&[2]), None);
    let flags = db
        .get_flags(&[3])
        .unwrap_or_else(|| panic!("key 3 lost its flags"));
    assert!(flags.has_locked());
    assert!(!flags.has_presume_key_not_exists());
}

/// `TestIterNoResult`: empty and inverted ranges walk nothing, both ways.
#[test]
fn test_iter_no_result() {
    let mut db = MemDb::new();
    ok(db.set(vec![1, 1], vec![1, 1]));
    let check = |lower: &[u8], upper: &[u8]| {
        assert_eq!(db.iter(go_range(Some(lower), Some(upper))).next(), None);
        assert_eq!(
            db.iter_reverse(go_range(Some(lower), Some(upper))).next(),
            None
        );
        assert_eq!(
            db.iter_with_flags(go_range(Some(lower), Some(upper)))
                .next(),
            None
        );
        assert_eq!(
            db.snapshot_iter(go_range(Some(lower), Some(upper))).next(),
            None
        );
    };
    // Both bounds seek to the same place.
    check(&[1, 1], &[1, 1]);
    check(&[1, 0, 0], &[1, 0, 1]);
    // Lower bound above the upper one.
    check(&[1, 0, 1], &[1, 0, 0]);
}

/// `TestMemDBLeafFragmentation`: filling and cleaning up the same level over and over does
/// not grow the memory held.
#[test]
fn test_mem_db_leaf_fragmentation() {
    let mut db = MemDb::new();
    let mut h = db.staging();
    let mut mem = db.mem_footprint();
    for _ in 0..10 {
        for k in 0..100 {
            ok(db.set(k.to_string().repeat(256), "value"));
        }
        let current = db.mem_footprint();
        if mem == 0 {
            mem = current;
        } else {
            assert!(current <= mem, "{current} > {mem}");
        }
        ok(db.cleanup(h));
        h = db.staging();
    }
}

/// `TestReadOnlyZeroMem`: a buffer never written holds no memory.
#[test]
fn test_read_only_zero_mem() {
    assert_eq!(MemDb::new().mem_footprint(), 0);
}

/// `TestKeyValueOversize`: keys up to 65,535 bytes are accepted, longer ones refused.
#[test]
fn test_key_value_oversize() {
    let mut db = MemDb::new();
    let key = vec![0u8; MAX_KEY_LEN];
    let oversize = vec![0u8; MAX_KEY_LEN + 1];
    ok(db.set(key.clone(), oversize.clone()));
    assert_eq!(
        db.set(oversize, key),
        Err(BufferError::KeyTooLarge {
            size: MAX_KEY_LEN + 1,
            limit: MAX_KEY_LEN
        })
    );
    assert_eq!(db.len(), 1);
}

/// `TestSetMemoryFootprintChangeHook`, in part: the footprint the hook reports in client-go
/// is zero before the first write and not after. There is no hook here: the handle owning
/// the buffer reads `mem_footprint` when it wants to.
#[test]
fn test_set_memory_footprint_change_hook() {
    let mut db = MemDb::new();
    assert_eq!(db.mem_footprint(), 0);
    ok(db.set(vec![1], vec![1]));
    assert!(db.mem_footprint() > 0);
}

/// `TestSelectValueHistory`: the history holds the current value and the one before the
/// open level; a cleanup forgets the level's value.
#[test]
fn test_select_value_history() {
    let mut db = MemDb::new();
    let select = |db: &MemDb, key: &[u8], wanted: &[u8]| {
        db.value_history(key)
            .find(|value| value.as_put().is_some_and(|v| &v[..] == wanted))
            .cloned()
    };
    ok(db.set(vec![1], vec![1]));
    let h = db.staging();
    ok(db.set(vec![1], vec![1, 1]));
    assert_eq!(
        select(&db, &[1], &[1]),
        Some(BufferValue::Put(Bytes::from(vec![1])))
    );
    assert_eq!(
        select(&db, &[1], &[1, 1]),
        Some(BufferValue::Put(Bytes::from(vec![1, 1])))
    );
    assert_eq!(select(&db, &[1], &[1, 1, 1]), None);
    assert_eq!(db.value_history(&[2]).count(), 0);
    ok(db.cleanup(h));
    assert_eq!(
        select(&db, &[1], &[1]),
        Some(BufferValue::Put(Bytes::from(vec![1])))
    );
    assert_eq!(select(&db, &[1], &[1, 1]), None);
}

/// `TestSnapshotReaderWithWrite`: a snapshot walk started before writes in a level sees only
/// the keys from before the level. Client-go keeps an unchecked iterator across the writes;
/// here the resumable cursor does (a borrowing iterator cannot outlive a write).
#[test]
fn test_snapshot_reader_with_write() {
    for num in [4u8, 16, 48] {
        let mut db = MemDb::new();
        for i in 0..num {
            ok(db.set(vec![0, i], vec![0, i]));
        }
        let h = db.staging();
        let mut cursor = db
            .snapshot()
            .cursor(go_range(Some(&[0, 0]), Some(&[0, 255])), false);
        let first = ok(cursor.next(&db));
        assert_eq!(first.as_ref().map(|(k, _)| &k[..]), Some(&[0, 0][..]));
        ok(db.set(vec![0, num], vec![0, num]));
        for i in 0..num {
            ok(db.set(vec![1, i], vec![1, i]));
        }
        for i in 1..num {
            let (key, _) = ok(cursor.next(&db)).unwrap_or_else(|| panic!("ended before {i}"));
            assert_eq!(&key[..], &[0, i]);
        }
        assert_eq!(ok(cursor.next(&db)), None);
        ok(db.release(h));
    }
}

/// `TestBatchedSnapshotIter`: the batched walk, both ways, across batch boundaries, with
/// writes in the level between its steps.
#[test]
fn test_batched_snapshot_iter() {
    for reverse in [false, true] {
        for num in [3u8, 17, 64] {
            let mut db = MemDb::new();
            for i in 0..num {
                ok(db.set(vec![0, i], vec![0, i]));
            }
            let h = db.staging();
            let snapshot = db.snapshot();
            let mut cursor = snapshot.cursor(go_range(Some(&[0, 0]), Some(&[0, 255])), reverse);
            let mut expected: Vec<u8> = (0..num).collect();
            if reverse {
                expected.reverse();
            }
            let mut seen = Vec::new();
            // The first key is there at once.
            if let Some((key, value)) = ok(cursor.next(&db)) {
                assert_eq!(value, BufferValue::Put(key.clone()));
                seen.push(key[1]);
            }
            ok(db.set(vec![0, num], vec![0, num]));
            for i in 0..num {
                ok(db.set(vec![1, i], vec![1, i]));
            }
            while let Some((key, value)) = ok(cursor.next(&db)) {
                assert_eq!(value, BufferValue::Put(key.clone()));
                seen.push(key[1]);
            }
            assert_eq!(seen, expected, "reverse {reverse}, num {num}");
            ok(db.release(h));
        }
    }
}

/// Walks a snapshot cursor to its end, keeping the keys.
fn walk(db: &MemDb, mut cursor: crate::txn::buffer::SnapshotCursor) -> Vec<Bytes> {
    let mut keys = Vec::new();
    while let Some((key, _)) = ok(cursor.next(db)) {
        keys.push(key);
    }
    keys
}

fn keys(keys: &[&[u8]]) -> Vec<Bytes> {
    keys.iter().map(|key| Bytes::copy_from_slice(key)).collect()
}

/// `TestBatchedSnapshotIterEdgeCase`: its five subtests (edge cases, boundaries, key
/// order, batch growth, a snapshot that changes).
#[test]
fn test_batched_snapshot_iter_edge_case() {
    // EdgeCases.
    let mut db = MemDb::new();
    let h = db.staging();
    let snapshot = db.snapshot();
    assert_eq!(
        walk(
            &db,
            snapshot.cursor(go_range(Some(&[1]), Some(&[1])), false)
        ),
        keys(&[])
    );
    assert_eq!(
        walk(
            &db,
            snapshot.cursor(go_range(Some(&[0]), Some(&[1])), false)
        ),
        keys(&[])
    );
    ok(db.set(vec![1], vec![1]));
    ok(db.release(h));
    let h = db.staging();
    let snapshot = db.snapshot();
    assert_eq!(
        walk(
            &db,
            snapshot.cursor(go_range(Some(&[1]), Some(&[2])), false)
        ),
        keys(&[&[1]])
    );
    for k in 2..=4u8 {
        ok(db.set(vec![k], vec![k]));
    }
    ok(db.release(h));
    db.staging();
    let snapshot = db.snapshot();
    let range = go_range(Some(&[2]), Some(&[4]));
    assert_eq!(
        walk(&db, snapshot.cursor(range, false)),
        keys(&[&[2], &[3]])
    );
    assert_eq!(walk(&db, snapshot.cursor(range, true)), keys(&[&[3], &[2]]));

    // BoundaryTests.
    let mut db = MemDb::new();
    for k in [[1u8, 0], [1, 2], [1, 4], [1, 6], [1, 8]] {
        ok(db.set(k.to_vec(), k.to_vec()));
    }
    let h = db.staging();
    let snapshot = db.snapshot();
    let lower_included = walk(
        &db,
        snapshot.cursor(go_range(Some(&[1, 2]), Some(&[1, 9])), false),
    );
    assert_eq!(lower_included, keys(&[&[1, 2], &[1, 4], &[1, 6], &[1, 8]]));
    let upper_excluded = walk(
        &db,
        snapshot.cursor(go_range(Some(&[1, 0]), Some(&[1, 6])), false),
    );
    assert_eq!(upper_excluded, keys(&[&[1, 0], &[1, 2], &[1, 4]]));
    let reverse = walk(
        &db,
        snapshot.cursor(go_range(Some(&[1, 0]), Some(&[1, 6])), true),
    );
    assert_eq!(reverse, keys(&[&[1, 4], &[1, 2], &[1, 0]]));
    ok(db.release(h));

    // AlphabeticalOrder.
    let mut db = MemDb::new();
    let ordered = keys(&[&[2], &[2, 1], &[2, 1, 1], &[2, 1, 1, 1]]);
    for key in &ordered {
        ok(db.set(key.clone(), key.clone()));
    }
    let h = db.staging();
    let snapshot = db.snapshot();
    assert_eq!(
        walk(
            &db,
            snapshot.cursor(go_range(Some(&[2]), Some(&[3])), false)
        ),
        ordered
    );
    let mut backward = walk(&db, snapshot.cursor(go_range(Some(&[2]), Some(&[3])), true));
    backward.reverse();
    assert_eq!(backward, ordered);
    ok(db.release(h));

    // BatchSizeGrowth.
    let mut db = MemDb::new();
    for i in 0..100u8 {
        ok(db.set(vec![3, i], vec![3, i]));
    }
    let h = db.staging();
    let snapshot = db.snapshot();
    let all: Vec<Bytes> = (0..100u8).map(|i| Bytes::from(vec![3, i])).collect();
    assert_eq!(
        walk(
            &db,
            snapshot.cursor(go_range(Some(&[3, 0]), Some(&[3, 255])), false)
        ),
        all
    );
    let mut backward = walk(
        &db,
        snapshot.cursor(go_range(Some(&[3, 0]), Some(&[3, 255])), true),
    );
    backward.reverse();
    assert_eq!(backward, all);
    ok(db.release(h));

    // SnapshotChange.
    let mut db = MemDb::new();
    ok(db.set(vec![0], vec![0]));
    let h = db.staging();
    let snapshot = db.snapshot();
    ok(db.set(vec![1], vec![1]));
    let mut cursor = snapshot.cursor(go_range(Some(&[0]), Some(&[255])), false);
    assert!(ok(cursor.next(&db)).is_some());
    ok(db.release(h));
    db.staging();
    assert!(!snapshot.is_valid(&db));
    assert_eq!(cursor.next(&db), Err(BufferError::SnapshotChanged));
    assert_eq!(snapshot.get(&db, &[0]), Err(BufferError::SnapshotChanged));
}
