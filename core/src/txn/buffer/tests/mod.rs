//! Tests of the write buffer: ports of client-go's `internal/unionstore` tests (named after
//! the Go tests, snake case), and quickcheck properties against a `BTreeMap` model.
//!
//! - `memdb_port.rs`: `memdb_test.go`;
//! - `art_port.rs`: the behavioural cases of `art/art_test.go`, `art/art_iterator_test.go`
//!   and `rbt/rbt_test.go` (prefixed `art_` and `rbt_`);
//! - `norace_port.rs`: `memdb_norace_test.go`'s randomized tests, on a seeded generator;
//! - `union_port.rs`: `union_store_test.go`, and the resumable merge;
//! - `model.rs`: quickcheck histories of writes, flags and staging against a model.

mod art_port;
mod memdb_port;
mod model;
mod norace_port;
mod union_port;

use std::ops::Bound;

use bytes::Bytes;

use super::{BufferValue, MemDb, StagingHandle};

/// A 4-byte big-endian key or value, as client-go's tests build them.
fn be(i: u32) -> Bytes {
    Bytes::copy_from_slice(&i.to_be_bytes())
}

/// Client-go's `deriveAndFill`: opens a level and writes `i -> i + value_base` for every `i`
/// in `start..end`.
fn derive_and_fill(db: &mut MemDb, start: u32, end: u32, value_base: u32) -> StagingHandle {
    let handle = db.staging();
    for i in start..end {
        db.set(be(i), be(i + value_base))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    handle
}

/// Client-go's `fillDB`: `i -> i` for `i` in `0..count`, written in a released level.
fn fill_db(db: &mut MemDb, count: u32) {
    let handle = derive_and_fill(db, 0, count, 0);
    db.release(handle).unwrap_or_else(|e| panic!("{e}"));
}

/// A range as client-go's iterators take it: inclusive lower, exclusive upper, `None` for
/// no bound.
fn go_range<'a>(
    lower: Option<&'a [u8]>,
    upper: Option<&'a [u8]>,
) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    (
        lower.map_or(Bound::Unbounded, Bound::Included),
        upper.map_or(Bound::Unbounded, Bound::Excluded),
    )
}

/// The value put under `key`, `None` when the key has no put (absent, deleted, flags only).
fn put_value(db: &MemDb, key: &[u8]) -> Option<Bytes> {
    db.get(key).and_then(BufferValue::as_put).cloned()
}

/// The pairs of an iterator over the buffer, owned, with deletes as `None`.
fn collect<'a>(
    iter: impl Iterator<Item = (&'a Bytes, &'a BufferValue)>,
) -> Vec<(Bytes, Option<Bytes>)> {
    iter.map(|(key, value)| (key.clone(), value.as_put().cloned()))
        .collect()
}

/// Unwraps a buffer result in a test, with the error in the message.
#[track_caller]
fn ok<T>(result: Result<T, super::BufferError>) -> T {
    result.unwrap_or_else(|e| panic!("unexpected buffer error: {e}"))
}
