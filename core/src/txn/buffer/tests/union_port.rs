//! Ports of client-go's `internal/unionstore/union_store_test.go`, and tests of the
//! resumable merge ([`UnionScan`]) against the definition of the union.
//!
//! Client-go's union store reads through a snapshot interface; here the "store" is a
//! `BTreeMap` standing in for the snapshot (client-go's `mockSnapshot` over a second memdb),
//! and each port runs the merge both ways: [`UnionIter`] over the map's iterator, and
//! [`UnionScan`] fed in batches of one and of many pairs.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use quickcheck::{Arbitrary, Gen, QuickCheck};

use super::*;
use crate::txn::buffer::{BufferError, FlagsOp, StoreRange, UnionIter, UnionScan, UnionStep};

type Store = BTreeMap<Bytes, Bytes>;

/// Client-go's `mockSnapshot.Get` with `WithReturnCommitTS`: the store answers every key
/// with commit ts 1000 plus its first byte.
fn store_commit_ts(key: &[u8]) -> u64 {
    key.first().map_or(1, |first| 1000 + u64::from(*first))
}

/// A union read (client-go's `KVUnionStore.Get`): the buffer first, the store on a miss; a
/// buffered delete reads as absent. Returns the value and its commit ts (0 when the value
/// comes from the buffer, as client-go's).
fn union_get(buffer: &MemDb, store: &Store, key: &[u8]) -> Option<(Bytes, u64)> {
    match buffer.get(key) {
        Some(BufferValue::Put(value)) => Some((value.clone(), 0)),
        Some(BufferValue::Delete) => None,
        None => store
            .get(key)
            .map(|value| (value.clone(), store_commit_ts(key))),
    }
}

/// Client-go's `KVUnionStore.Iter(lower, upper)` / `IterReverse(upper, lower)` through
/// [`UnionIter`].
fn union_iter(
    buffer: &MemDb,
    store: &Store,
    lower: Option<&[u8]>,
    upper: Option<&[u8]>,
    reverse: bool,
) -> Vec<(Bytes, Bytes)> {
    let range = go_range(lower, upper);
    let store_pairs = store
        .range::<[u8], _>(range)
        .map(|(k, v)| (k.clone(), v.clone()));
    if reverse {
        UnionIter::new(buffer.iter(range).rev(), store_pairs.rev(), true).collect()
    } else {
        UnionIter::new(buffer.iter(range), store_pairs, false).collect()
    }
}

/// What a store scan of `range` returns, `limit` pairs at most, in walk order, and whether
/// it returned everything in the range.
fn scan_store(
    store: &Store,
    range: &StoreRange,
    limit: usize,
    reverse: bool,
) -> (Vec<(Bytes, Bytes)>, bool) {
    let upper = if range.upper.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(&range.upper[..])
    };
    let bounds = (Bound::Included(&range.lower[..]), upper);
    let pairs = store
        .range::<[u8], _>(bounds)
        .map(|(k, v)| (k.clone(), v.clone()));
    let batch: Vec<_> = if reverse {
        pairs.rev().take(limit + 1).collect()
    } else {
        pairs.take(limit + 1).collect()
    };
    let exhausted = batch.len() <= limit;
    (batch.into_iter().take(limit).collect(), exhausted)
}

/// Runs a [`UnionScan`] to its end against `store`, answering each request with at most
/// `limit` pairs.
fn union_scan(
    buffer: &MemDb,
    store: &Store,
    lower: &[u8],
    upper: &[u8],
    reverse: bool,
    limit: usize,
) -> Vec<(Bytes, Bytes)> {
    let mut scan = UnionScan::new(
        Bytes::copy_from_slice(lower),
        Bytes::copy_from_slice(upper),
        reverse,
    );
    let mut out = Vec::new();
    // Every request returns at least one pair or ends the store, so this bounds the loop.
    for _ in 0..(store.len() + buffer.len() + 2) * 2 {
        match scan.next(buffer) {
            UnionStep::Pair(key, value) => out.push((key, value)),
            UnionStep::NeedStore(range) => {
                let (batch, exhausted) = scan_store(store, &range, limit, reverse);
                ok(scan.feed(batch, exhausted));
            }
            UnionStep::Done => return out,
        }
    }
    panic!("the scan did not end");
}

/// Checks a union walk three ways: the iterator adapter, and the resumable scan with one
/// pair per store request and with many.
#[track_caller]
fn check_union(
    buffer: &MemDb,
    store: &Store,
    lower: Option<&[u8]>,
    upper: Option<&[u8]>,
    reverse: bool,
    expected: &[&str],
) {
    let expected: Vec<(Bytes, Bytes)> = expected
        .iter()
        .map(|k| {
            (
                Bytes::copy_from_slice(k.as_bytes()),
                Bytes::copy_from_slice(k.as_bytes()),
            )
        })
        .collect();
    assert_eq!(union_iter(buffer, store, lower, upper, reverse), expected);
    for limit in [1, 64] {
        let scanned = union_scan(
            buffer,
            store,
            lower.unwrap_or(b""),
            upper.unwrap_or(b""),
            reverse,
            limit,
        );
        assert_eq!(scanned, expected, "limit {limit}");
    }
}

fn store_of(keys: &[&str]) -> Store {
    keys.iter()
        .map(|k| {
            (
                Bytes::copy_from_slice(k.as_bytes()),
                Bytes::copy_from_slice(k.as_bytes()),
            )
        })
        .collect()
}

/// `TestUnionStoreGetSet`: a miss reads the store (with its commit ts), a buffered write
/// wins (commit ts 0); the buffer's size and length count only its own write.
#[test]
fn test_union_store_get_set() {
    let store = store_of(&["1"]);
    let mut buffer = MemDb::new();
    assert_eq!(
        union_get(&buffer, &store, b"1"),
        Some((Bytes::from("1"), 1000 + u64::from(b'1')))
    );
    ok(buffer.set("1", "2"));
    assert_eq!(
        union_get(&buffer, &store, b"1"),
        Some((Bytes::from("2"), 0))
    );
    assert_eq!(buffer.size(), 2);
    assert_eq!(buffer.len(), 1);
}

/// `TestUnionStoreDelete`: a buffered delete hides the store's value; a later put shows.
#[test]
fn test_union_store_delete() {
    let store = store_of(&["1"]);
    let mut buffer = MemDb::new();
    ok(buffer.delete("1"));
    assert_eq!(union_get(&buffer, &store, b"1"), None);
    ok(buffer.set("1", "2"));
    assert_eq!(
        union_get(&buffer, &store, b"1").map(|(v, _)| v),
        Some(Bytes::from("2"))
    );
}

/// `TestUnionStoreSeek`: forward walks from a key, with a buffered key added after the
/// store's and a buffered delete in the middle.
#[test]
fn test_union_store_seek() {
    let store = store_of(&["1", "2", "3"]);
    let mut buffer = MemDb::new();
    check_union(&buffer, &store, None, None, false, &["1", "2", "3"]);
    check_union(&buffer, &store, Some(b"2"), None, false, &["2", "3"]);
    ok(buffer.set("4", "4"));
    check_union(&buffer, &store, Some(b"2"), None, false, &["2", "3", "4"]);
    ok(buffer.delete("3"));
    check_union(&buffer, &store, Some(b"2"), None, false, &["2", "4"]);
}

/// `TestUnionStoreIterReverse`: reverse walks below a key, with bounds, a buffered key
/// below the store's, and a buffered delete.
#[test]
fn test_union_store_iter_reverse() {
    let store = store_of(&["1", "2", "3"]);
    let mut buffer = MemDb::new();
    check_union(&buffer, &store, None, None, true, &["3", "2", "1"]);
    check_union(&buffer, &store, Some(b"1"), Some(b"3"), true, &["2", "1"]);
    check_union(&buffer, &store, None, Some(b"3"), true, &["2", "1"]);
    ok(buffer.set("0", "0"));
    check_union(&buffer, &store, None, Some(b"3"), true, &["2", "1", "0"]);
    ok(buffer.delete("1"));
    check_union(&buffer, &store, None, Some(b"3"), true, &["2", "0"]);
    check_union(&buffer, &store, Some(b"1"), Some(b"3"), true, &["2"]);
}

/// The scan asks the store for what it has not delivered: from the range's start, then
/// from just after (forward) or below (reverse) the last key it was given.
#[test]
fn union_scan_asks_for_the_rest_of_the_range() {
    let buffer = MemDb::new();
    let mut scan = UnionScan::new("a", "z", false);
    let range = |lower: &str, upper: &str| {
        UnionStep::NeedStore(StoreRange {
            lower: Bytes::copy_from_slice(lower.as_bytes()),
            upper: Bytes::copy_from_slice(upper.as_bytes()),
        })
    };
    assert_eq!(scan.next(&buffer), range("a", "z"));
    ok(scan.feed(vec![("b".into(), "1".into())], false));
    assert_eq!(scan.next(&buffer), UnionStep::Pair("b".into(), "1".into()));
    assert_eq!(scan.next(&buffer), range("b\0", "z"));
    ok(scan.feed(Vec::new(), false));
    assert_eq!(scan.next(&buffer), UnionStep::Done);

    let mut scan = UnionScan::new("a", "", true);
    assert_eq!(scan.next(&buffer), range("a", ""));
    ok(scan.feed(vec![("x".into(), "1".into())], false));
    assert_eq!(scan.next(&buffer), UnionStep::Pair("x".into(), "1".into()));
    assert_eq!(scan.next(&buffer), range("a", "x"));
}

/// Buffered keys the store has already been read past go out without a new request; one
/// beyond waits for the store.
#[test]
fn union_scan_uses_buffered_keys_within_what_was_read() {
    let mut buffer = MemDb::new();
    ok(buffer.set("c", "buffered"));
    ok(buffer.set("m", "buffered"));
    let mut scan = UnionScan::new("", "", false);
    assert!(matches!(scan.next(&buffer), UnionStep::NeedStore(_)));
    ok(scan.feed(
        vec![("b".into(), "1".into()), ("d".into(), "2".into())],
        false,
    ));
    assert_eq!(scan.next(&buffer), UnionStep::Pair("b".into(), "1".into()));
    assert_eq!(
        scan.next(&buffer),
        UnionStep::Pair("c".into(), "buffered".into())
    );
    assert_eq!(scan.next(&buffer), UnionStep::Pair("d".into(), "2".into()));
    // "m" lies beyond "d": the store may hold something before it.
    assert!(matches!(scan.next(&buffer), UnionStep::NeedStore(_)));
    ok(scan.feed(vec![("e".into(), "3".into())], true));
    assert_eq!(scan.next(&buffer), UnionStep::Pair("e".into(), "3".into()));
    assert_eq!(
        scan.next(&buffer),
        UnionStep::Pair("m".into(), "buffered".into())
    );
    assert_eq!(scan.next(&buffer), UnionStep::Done);
}

/// Flags-only keys are not part of the walk; a write made between steps is seen when the
/// walk reaches it.
#[test]
fn union_scan_skips_flags_only_keys_and_reads_the_buffer_live() {
    let mut buffer = MemDb::new();
    ok(buffer.update_flags("a", &[FlagsOp::SetKeyLocked]));
    let mut scan = UnionScan::new("", "", false);
    assert!(matches!(scan.next(&buffer), UnionStep::NeedStore(_)));
    ok(scan.feed(vec![("b".into(), "1".into())], true));
    assert_eq!(scan.next(&buffer), UnionStep::Pair("b".into(), "1".into()));
    ok(buffer.set("c", "late"));
    assert_eq!(
        scan.next(&buffer),
        UnionStep::Pair("c".into(), "late".into())
    );
    assert_eq!(scan.next(&buffer), UnionStep::Done);
}

/// Store pairs out of order, repeated, outside the range or after the end are refused and
/// leave the scan as it was.
#[test]
fn union_scan_refuses_bad_store_batches() {
    let buffer = MemDb::new();
    let bad = |key: &str| {
        Err(BufferError::StoreOutOfOrder {
            key: Bytes::copy_from_slice(key.as_bytes()),
        })
    };
    let mut scan = UnionScan::new("b", "y", false);
    assert_eq!(
        scan.feed(
            vec![("c".into(), "".into()), ("c".into(), "".into())],
            false
        ),
        bad("c")
    );
    assert_eq!(
        scan.feed(
            vec![("d".into(), "".into()), ("c".into(), "".into())],
            false
        ),
        bad("c")
    );
    assert_eq!(scan.feed(vec![("a".into(), "".into())], false), bad("a"));
    assert_eq!(scan.feed(vec![("y".into(), "".into())], false), bad("y"));
    ok(scan.feed(vec![("c".into(), "".into())], false));
    assert_eq!(scan.feed(vec![("c".into(), "".into())], false), bad("c"));
    ok(scan.feed(vec![("d".into(), "".into())], true));
    assert_eq!(scan.feed(vec![("e".into(), "".into())], true), bad("e"));
    assert_eq!(scan.next(&buffer), UnionStep::Pair("c".into(), "".into()));
    assert_eq!(scan.next(&buffer), UnionStep::Pair("d".into(), "".into()));
    assert_eq!(scan.next(&buffer), UnionStep::Done);

    let mut reverse = UnionScan::new("", "", true);
    assert_eq!(
        reverse.feed(
            vec![("a".into(), "".into()), ("b".into(), "".into())],
            false
        ),
        bad("b")
    );
}

/// A reverse walk that reached the empty key has nothing left below it.
#[test]
fn union_scan_reverse_ends_at_the_empty_key() {
    let buffer = MemDb::new();
    let mut scan = UnionScan::new("", "", true);
    assert!(matches!(scan.next(&buffer), UnionStep::NeedStore(_)));
    ok(scan.feed(vec![("".into(), "v".into())], false));
    assert_eq!(scan.next(&buffer), UnionStep::Pair("".into(), "v".into()));
    assert_eq!(scan.next(&buffer), UnionStep::Done);
}

/// A random store and buffer for the union properties: keys from a small alphabet so the
/// two overlap.
#[derive(Clone, Debug)]
struct UnionCase {
    store: Vec<(u8, u8)>,
    buffer: Vec<(u8, Option<u8>, bool)>,
    lower: u8,
    upper: u8,
    reverse: bool,
    limit: u8,
}

impl Arbitrary for UnionCase {
    fn arbitrary(g: &mut Gen) -> Self {
        let small = |g: &mut Gen| u8::arbitrary(g) % 24;
        let store_len = usize::arbitrary(g) % 16;
        let buffer_len = usize::arbitrary(g) % 16;
        Self {
            store: (0..store_len)
                .map(|_| (small(g), u8::arbitrary(g)))
                .collect(),
            buffer: (0..buffer_len)
                .map(|_| (small(g), Option::<u8>::arbitrary(g), bool::arbitrary(g)))
                .collect(),
            lower: small(g),
            upper: small(g),
            reverse: bool::arbitrary(g),
            limit: u8::arbitrary(g) % 4 + 1,
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let base = self.clone();
        let fewer_store = self.store.clone().shrink().map({
            let base = base.clone();
            move |store| Self {
                store,
                ..base.clone()
            }
        });
        let fewer_buffer = self.buffer.clone().shrink().map(move |buffer| Self {
            buffer,
            ..base.clone()
        });
        Box::new(fewer_store.chain(fewer_buffer))
    }
}

/// Keys are one letter, or a letter and a zero byte (the successor the scan asks from),
/// so seeks land between keys too.
fn union_key(n: u8) -> Bytes {
    let letter = b'a' + n / 2;
    if n % 2 == 0 {
        Bytes::from(vec![letter])
    } else {
        Bytes::from(vec![letter, 0])
    }
}

/// The union by definition: the store overlaid with the buffer's puts, minus its deletes,
/// restricted to the range, in walk order.
fn union_model(
    case: &UnionCase,
    buffer: &MemDb,
    store: &Store,
    lower: &[u8],
    upper: &[u8],
) -> Vec<(Bytes, Bytes)> {
    let mut merged = store.clone();
    for (key, value) in buffer.iter(..) {
        match value {
            BufferValue::Put(value) => merged.insert(key.clone(), value.clone()),
            BufferValue::Delete => merged.remove(key),
        };
    }
    let in_range = |key: &Bytes| &key[..] >= lower && (upper.is_empty() || &key[..] < upper);
    let mut pairs: Vec<_> = merged.into_iter().filter(|(k, _)| in_range(k)).collect();
    if case.reverse {
        pairs.reverse();
    }
    pairs
}

/// Both merges equal the union by definition, for every range, direction and batch size.
#[test]
fn union_merges_match_the_definition() {
    fn property(case: UnionCase) -> bool {
        let store: Store = case
            .store
            .iter()
            .map(|(k, v)| (union_key(*k), Bytes::from(vec![*v])))
            .collect();
        let mut buffer = MemDb::new();
        for (key, value, flags_only) in &case.buffer {
            let key = union_key(*key);
            let result = match (value, flags_only) {
                (_, true) => buffer.update_flags(key, &[FlagsOp::SetKeyLocked]),
                (Some(value), false) => buffer.set(key, vec![*value]),
                (None, false) => buffer.delete(key),
            };
            ok(result);
        }
        let lower = union_key(case.lower);
        let upper = if case.upper == 0 {
            Bytes::new()
        } else {
            union_key(case.upper)
        };
        let expected = if upper.is_empty() || lower < upper {
            union_model(&case, &buffer, &store, &lower, &upper)
        } else {
            Vec::new()
        };
        let scanned = union_scan(
            &buffer,
            &store,
            &lower,
            &upper,
            case.reverse,
            case.limit.into(),
        );
        // The map's own range refuses inverted bounds, so the adapter gets valid ones only.
        let iterated = if upper.is_empty() || lower < upper {
            let upper_bound = (!upper.is_empty()).then_some(&upper[..]);
            union_iter(&buffer, &store, Some(&lower), upper_bound, case.reverse)
        } else {
            Vec::new()
        };
        scanned == expected && iterated == expected
    }
    QuickCheck::new()
        .tests(2000)
        .quickcheck(property as fn(UnionCase) -> bool);
}
