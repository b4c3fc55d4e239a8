//! Ports of the behavioural cases of client-go's `internal/unionstore/art/art_test.go`,
//! `art/art_iterator_test.go` and `rbt/rbt_test.go` (prefixed `art_` and `rbt_`): what the
//! tree implementations are tested for that any ordered buffer must do. Tests of node
//! layout, arena blocks and iterator internals have no counterpart here (docs/porting.md).

use bytes::Bytes;

use super::memdb_port::encode_int;
use super::*;
use crate::txn::buffer::{FlagsOp, KeyFlags};

/// `art_test.go` `TestSimple`: every one-byte key, absent before its write, present after.
#[test]
fn test_art_simple() {
    let mut db = MemDb::new();
    for i in 0..=255u8 {
        assert_eq!(db.get(&[i]), None);
        ok(db.set(vec![i], vec![i]));
        assert_eq!(put_value(&db, &[i]), Some(Bytes::from(vec![i])));
    }
}

/// `art_test.go` `TestSubNode`: keys that are prefixes of each other.
#[test]
fn test_art_sub_node() {
    let mut db = MemDb::new();
    for key in ["a", "aa", "aaa"] {
        ok(db.set(key, key));
    }
    for key in ["a", "aa", "aaa"] {
        assert_eq!(put_value(&db, key.as_bytes()), Some(Bytes::from(key)));
    }
}

/// `art_test.go` `TestBenchKey`: 100,000 decimal keys read back.
#[test]
fn test_art_bench_key() {
    let mut db = MemDb::new();
    for k in 0..100_000 {
        ok(db.set(encode_int(k), encode_int(k)));
    }
    for k in 0..100_000 {
        assert_eq!(put_value(&db, &encode_int(k)), Some(encode_int(k)));
    }
}

/// `art_test.go` `TestLeafWithCommonPrefix`, `TestLongPrefix1`, `TestLongPrefix2`,
/// `TestSearchPrefixMisatch`, `TestSearchOptimisticMismatch`: keys with long shared prefixes
/// read back (and overwrite) exactly, and near misses are not found.
#[test]
fn test_art_long_prefixes() {
    let mut db = MemDb::new();
    ok(db.set(vec![1, 1, 1], vec![1, 1, 1]));
    ok(db.set(vec![1, 1, 2], vec![1, 1, 2]));
    assert_eq!(put_value(&db, &[1, 1, 1]), Some(Bytes::from(vec![1, 1, 1])));
    assert_eq!(put_value(&db, &[1, 1, 2]), Some(Bytes::from(vec![1, 1, 2])));

    let key1 = vec![
        109, 68, 66, 115, 0, 0, 0, 0, 0, 250, 0, 0, 0, 0, 0, 0, 0, 104, 68, 66, 58, 49, 0, 0, 0, 0,
        251,
    ];
    let mut key2 = key1.clone();
    key2[17] = 105;
    let mut db = MemDb::new();
    ok(db.set(key1.clone(), vec![1]));
    ok(db.set(key2.clone(), vec![2]));
    assert_eq!(put_value(&db, &key1), Some(Bytes::from(vec![1])));
    assert_eq!(put_value(&db, &key2), Some(Bytes::from(vec![2])));
    ok(db.set(key2.clone(), vec![3]));
    assert_eq!(put_value(&db, &key2), Some(Bytes::from(vec![3])));

    let base = [0u8, 97, 0, 0, 0, 0, 0, 0, 0, 248, 0, 0, 0, 0, 0, 0, 0];
    let long = |last: u8| {
        let mut key = base.to_vec();
        key.extend_from_slice(&[108, 127, 255, 255, 255, 255, 255, 255, last]);
        key
    };
    let mut short = base.to_vec();
    short.push(76);
    let keys = [long(255), long(254), long(253), short.clone(), long(252)];
    let mut db = MemDb::new();
    for key in &keys {
        ok(db.set(key.clone(), key.clone()));
    }
    ok(db.set(short.clone(), short));
    for key in &keys {
        assert_eq!(put_value(&db, key), Some(Bytes::from(key.clone())));
    }

    let mut db = MemDb::new();
    ok(db.set(vec![1, 1, 1, 1, 1, 1], vec![1]));
    ok(db.set(vec![1, 1, 1, 1, 1, 2], vec![2]));
    assert_eq!(db.get(&[1, 1, 1, 3, 1, 1]), None);

    let mut db = MemDb::new();
    let prefix = [0u8; 22];
    for last in [1u8, 2] {
        let mut key = prefix.to_vec();
        key.push(last);
        ok(db.set(key, prefix.to_vec()));
    }
    let mut near = vec![0u8; 21];
    near.extend_from_slice(&[1, 1]);
    assert_eq!(db.get(&near), None);
}

/// `art_test.go` `TestFlag`: flags set with values, and walks that carry them.
#[test]
fn test_art_flag() {
    let mut db = MemDb::new();
    ok(db.set_with_flags(vec![0], vec![0], &[FlagsOp::SetPresumeKeyNotExists]));
    assert_eq!(
        db.get_flags(&[0]).map(KeyFlags::has_presume_key_not_exists),
        Some(true)
    );
    ok(db.set_with_flags(vec![1], vec![1], &[FlagsOp::SetKeyLocked]));
    assert_eq!(db.get_flags(&[1]).map(KeyFlags::has_locked), Some(true));
    let entries: Vec<_> = db.iter_with_flags(..).collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(&entries[0].key[..], &[0]);
    assert_eq!(
        entries[0].value,
        Some(&BufferValue::Put(Bytes::from(vec![0])))
    );
    assert!(entries[0].flags.has_presume_key_not_exists() && !entries[0].flags.has_locked());
    assert_eq!(&entries[1].key[..], &[1]);
    assert!(entries[1].flags.has_locked() && !entries[1].flags.has_presume_key_not_exists());
}

/// `art_test.go` `TestFlagOnlyKey`: a flags update on a new key makes a key with flags and
/// no value.
#[test]
fn test_art_flag_only_key() {
    let mut db = MemDb::new();
    ok(db.update_flags(vec![0], &[FlagsOp::SetAssertNone]));
    assert_eq!(
        db.get_flags(&[0]).map(KeyFlags::has_assertion_flags),
        Some(false)
    );
    assert_eq!(db.get(&[0]), None);
    assert_eq!(db.entry(&[0]).map(|entry| entry.value), Some(None));
}

/// `art_iterator_test.go` `TestIterateNodeCapacity`: walks over 4, 16, 48 and 256 one-byte
/// keys, whole and cut at the middle by either bound, both ways.
#[test]
fn test_art_iterate_node_capacity() {
    let check = |db: &MemDb, lower: Option<&[u8]>, upper: Option<&[u8]>, first: u8, last: u8| {
        let expected: Vec<_> = (first..=last)
            .map(|i| (Bytes::from(vec![i]), Some(Bytes::from(vec![i]))))
            .collect();
        assert_eq!(collect(db.iter(go_range(lower, upper))), expected);
        let mut backward = collect(db.iter_reverse(go_range(lower, upper)));
        backward.reverse();
        assert_eq!(backward, expected);
    };
    for capacity in [4u16, 16, 48, 256] {
        let mut db = MemDb::new();
        for i in 0..capacity {
            let key = vec![i as u8];
            ok(db.set(key.clone(), key));
        }
        let last = (capacity - 1) as u8;
        check(&db, None, None, 0, last);
        let mid = (capacity / 2) as u8;
        check(&db, Some(&[mid]), None, mid, last);
        check(&db, None, Some(&[mid]), 0, mid - 1);
    }
}

/// `art_iterator_test.go` `TestMultiLevelIterate`: twenty keys of zeros, each a prefix of
/// the next, walk in order both ways.
#[test]
fn test_art_multi_level_iterate() {
    let mut db = MemDb::new();
    let keys: Vec<Bytes> = (1..=20).map(|n| Bytes::from(vec![0u8; n])).collect();
    for key in &keys {
        ok(db.set(key.clone(), key.clone()));
    }
    let expected: Vec<_> = keys.iter().map(|k| (k.clone(), Some(k.clone()))).collect();
    assert_eq!(collect(db.iter(..)), expected);
    let mut backward = collect(db.iter_reverse(..));
    backward.reverse();
    assert_eq!(backward, expected);
}

/// `art_iterator_test.go` `TestSeekMeetLeaf`: bounds that fall next to a key.
#[test]
fn test_art_seek_meet_leaf() {
    let mut db = MemDb::new();
    ok(db.set(vec![1], vec![1]));
    let found = collect(db.iter(go_range(Some(&[1]), Some(&[1, 1]))));
    assert_eq!(found, [(Bytes::from(vec![1]), Some(Bytes::from(vec![1])))]);
    ok(db.set(vec![2], vec![2]));
    let found = collect(db.iter_reverse(go_range(Some(&[1, 1]), Some(&[2, 2]))));
    assert_eq!(found, [(Bytes::from(vec![2]), Some(Bytes::from(vec![2])))]);

    let mut db = MemDb::new();
    ok(db.set(vec![1, 1], vec![1, 1]));
    let found = collect(db.iter(go_range(Some(&[1, 0, 0]), Some(&[1, 2, 0]))));
    assert_eq!(
        found,
        [(Bytes::from(vec![1, 1]), Some(Bytes::from(vec![1, 1])))]
    );
}

/// `art_iterator_test.go` `TestSeekPrefixMismatch`: bounds that differ from the keys inside
/// their shared prefixes.
#[test]
fn test_art_seek_prefix_mismatch() {
    let short = [1u8; 10];
    let long = [2u8; 30];
    let with = |prefix: &[u8], last: u8| {
        let mut key = prefix.to_vec();
        key.push(last);
        Bytes::from(key)
    };
    let keys = [
        with(&short, 1),
        with(&short, 2),
        with(&long, 3),
        with(&long, 4),
    ];
    let mut db = MemDb::new();
    for key in &keys {
        ok(db.set(key.clone(), key.clone()));
    }
    let lower = with(&short[..9], 0);
    let upper = with(&long[..29], 3);
    let found = collect(db.iter(go_range(Some(&lower), Some(&upper))));
    let expected: Vec<_> = keys.iter().map(|k| (k.clone(), Some(k.clone()))).collect();
    assert_eq!(found, expected);
}

/// `art_iterator_test.go` `TestIterSeekNoResult`: a range between two keys finds nothing,
/// whatever the number of neighbours.
#[test]
fn test_art_iter_seek_no_result() {
    for children in [0u8, 5, 17, 49] {
        let mut db = MemDb::new();
        for i in 0..children {
            ok(db.set(vec![1, i], vec![1, i]));
        }
        ok(db.set(vec![1, 100], vec![1, 100]));
        ok(db.set(vec![1, 200], vec![1, 200]));
        let range = go_range(Some(&[1, 100, 1]), Some(&[1, 200]));
        assert_eq!(db.iter(range).next(), None);
        assert_eq!(db.iter_reverse(range).next(), None);
    }
}

/// `rbt_test.go` `TestEmptyDB`: an empty buffer finds nothing, by key or by walk.
#[test]
fn test_rbt_empty_db() {
    let db = MemDb::new();
    assert_eq!(db.get(&[0]), None);
    assert_eq!(db.iter(..).next(), None);
    assert_eq!(db.iter_reverse(..).next(), None);
    assert_eq!(db.iter(go_range(Some(&[0xff]), None)).next(), None);
}
