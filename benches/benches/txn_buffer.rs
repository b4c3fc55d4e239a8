//! The transaction write buffer (`tikv_core::txn::buffer`): set, get, iterate, staging and
//! the union merge, at 100,000 keys, and set/get/iterate at 1,000,000 keys.
//!
//! Shapes follow client-go's `internal/unionstore/memdb_bench_test.go`: 16-byte keys with
//! 128-byte values (`BenchmarkPut`, `BenchmarkGet` and their random twins), 10-digit
//! decimal keys for walks (`BenchmarkMemDbIter`, `BenchmarkSnapshotIter`). A plain
//! `BTreeMap<Bytes, Bytes>` runs beside the buffer to show what the buffer adds. Every
//! routine builds its input outside the timed part and drops the buffer outside it too
//! (one buffer per iteration, so the allocator starts from the same state each time).

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tikv_core::rand::Rng;
use tikv_core::txn::buffer::{BufferValue, MemDb, SizeLimits, UnionIter, UnionScan, UnionStep};

const KEY_SIZE: usize = 16;
const VALUE_SIZE: usize = 128;

/// Client-go's benchmark pairs: a 128-byte buffer starting with a 4-byte number, the first
/// 16 bytes of it as the key.
fn pair(n: u32) -> (Bytes, Bytes) {
    let mut value = vec![0u8; VALUE_SIZE];
    value[..4].copy_from_slice(&n.to_be_bytes());
    (
        Bytes::copy_from_slice(&value[..KEY_SIZE]),
        Bytes::from(value),
    )
}

fn sequential_pairs(count: u32) -> Vec<(Bytes, Bytes)> {
    (0..count).map(pair).collect()
}

fn random_pairs(count: u32, seed: u64) -> Vec<(Bytes, Bytes)> {
    let mut rng = Rng::new(seed);
    (0..count).map(|_| pair(rng.next_u64() as u32)).collect()
}

fn shuffled(mut pairs: Vec<(Bytes, Bytes)>, seed: u64) -> Vec<(Bytes, Bytes)> {
    let mut rng = Rng::new(seed);
    for i in (1..pairs.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        pairs.swap(i, j);
    }
    pairs
}

/// Client-go's `encodeInt`: ten decimal digits.
fn decimal(n: u32) -> Bytes {
    Bytes::from(format!("{n:010}"))
}

fn unlimited() -> MemDb {
    MemDb::with_limits(SizeLimits::unlimited())
}

fn filled(pairs: &[(Bytes, Bytes)]) -> MemDb {
    let mut db = unlimited();
    for (key, value) in pairs {
        db.set(key.clone(), value.clone())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    db
}

fn decimal_db(count: u32) -> MemDb {
    let mut db = unlimited();
    for n in 0..count {
        db.set(decimal(n), decimal(n))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    db
}

const N: u32 = 100_000;

fn set(c: &mut Criterion) {
    let mut group = c.benchmark_group("buffer_set");
    group.throughput(Throughput::Elements(u64::from(N)));
    let sequential = sequential_pairs(N);
    let random = random_pairs(N, 1);
    for (name, pairs) in [("sequential", &sequential), ("random", &random)] {
        group.bench_function(format!("{name}/100k"), |b| {
            b.iter_batched(
                || pairs.clone(),
                |pairs| {
                    let mut db = unlimited();
                    for (key, value) in pairs {
                        let _ = db.set(key, value);
                    }
                    db
                },
                BatchSize::PerIteration,
            );
        });
        group.bench_function(format!("{name}_btreemap_baseline/100k"), |b| {
            b.iter_batched(
                || pairs.clone(),
                |pairs| {
                    // One insert at a time, as the buffer does (`collect` would bulk-load
                    // sorted input).
                    let mut map = BTreeMap::new();
                    for (key, value) in pairs {
                        map.insert(key, value);
                    }
                    map
                },
                BatchSize::PerIteration,
            );
        });
    }
    // Writes inside a staging level pay for an undo record each.
    group.bench_function("sequential_in_level/100k", |b| {
        b.iter_batched(
            || sequential.clone(),
            |pairs| {
                let mut db = unlimited();
                let _level = db.staging();
                for (key, value) in pairs {
                    let _ = db.set(key, value);
                }
                db
            },
            BatchSize::PerIteration,
        );
    });
    // A statement that overwrites every key and is rolled back.
    group.bench_function("overwrite_then_cleanup/100k", |b| {
        b.iter_batched(
            || (filled(&sequential), random.clone()),
            |(mut db, pairs)| {
                let level = db.staging();
                for ((key, _), (_, value)) in sequential.iter().zip(pairs) {
                    let _ = db.set(key.clone(), value);
                }
                let _ = db.cleanup(level);
                db
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

fn get(c: &mut Criterion) {
    let mut group = c.benchmark_group("buffer_get");
    group.throughput(Throughput::Elements(u64::from(N)));
    let sequential = sequential_pairs(N);
    let db = filled(&sequential);
    let map: BTreeMap<Bytes, Bytes> = sequential.iter().cloned().collect();
    let in_order: Vec<Bytes> = sequential.iter().map(|(k, _)| k.clone()).collect();
    let random_order: Vec<Bytes> = shuffled(sequential.clone(), 2)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let misses: Vec<Bytes> = random_pairs(N, 3)
        .into_iter()
        .map(|(k, _)| {
            let mut key = k.to_vec();
            key.push(1);
            Bytes::from(key)
        })
        .collect();
    for (name, keys) in [
        ("sequential", &in_order),
        ("random", &random_order),
        ("miss", &misses),
    ] {
        group.bench_function(format!("{name}/100k"), |b| {
            b.iter(|| keys.iter().filter(|key| db.get(key).is_some()).count());
        });
    }
    group.bench_function("random_btreemap_baseline/100k", |b| {
        b.iter(|| {
            random_order
                .iter()
                .filter(|key| map.contains_key(&key[..]))
                .count()
        });
    });
    group.finish();
}

fn iterate(c: &mut Criterion) {
    let mut group = c.benchmark_group("buffer_iterate");
    group.throughput(Throughput::Elements(u64::from(N)));
    let mut db = decimal_db(N);
    group.bench_function("forward/100k", |b| {
        b.iter(|| db.iter(..).map(|(k, v)| k.len() + v.len()).sum::<usize>());
    });
    group.bench_function("reverse/100k", |b| {
        b.iter(|| {
            db.iter_reverse(..)
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
        });
    });
    group.bench_function("with_flags/100k", |b| {
        b.iter(|| db.iter_with_flags(..).filter(|e| e.value.is_some()).count());
    });
    // Snapshot walks read the state before the level: each key follows its undo chain.
    let _level = db.staging();
    for n in (0..N).step_by(2) {
        db.set(decimal(n), "new").unwrap_or_else(|e| panic!("{e}"));
    }
    group.bench_function("snapshot_half_overwritten/100k", |b| {
        b.iter(|| db.snapshot_iter(..).count());
    });
    let snapshot = db.snapshot();
    group.bench_function("snapshot_cursor_half_overwritten/100k", |b| {
        b.iter(|| {
            let mut cursor = snapshot.cursor(.., false);
            let mut count = 0;
            while let Ok(Some(_)) = cursor.next(&db) {
                count += 1;
            }
            count
        });
    });
    group.finish();
}

fn union(c: &mut Criterion) {
    let mut group = c.benchmark_group("buffer_union");
    // 100,000 store pairs (even numbers) under 100,000 buffered writes (every number below
    // 100,000, a tenth of them deletes): 140,000 pairs out.
    let store: Vec<(Bytes, Bytes)> = (0..N).map(|n| (decimal(2 * n), decimal(n))).collect();
    let mut db = unlimited();
    for n in 0..N {
        let result = if n % 10 == 0 {
            db.delete(decimal(n))
        } else {
            db.set(decimal(n), "buffered")
        };
        result.unwrap_or_else(|e| panic!("{e}"));
    }
    let expected = {
        let mut merged: BTreeMap<Bytes, Bytes> = store.iter().cloned().collect();
        for (key, value) in db.iter(..) {
            match value {
                BufferValue::Put(value) => merged.insert(key.clone(), value.clone()),
                BufferValue::Delete => merged.remove(key),
            };
        }
        merged.len()
    };
    group.throughput(Throughput::Elements(expected as u64));
    group.bench_function("iter_adapter/200k_in", |b| {
        b.iter(|| {
            let count = UnionIter::new(db.iter(..), store.iter().cloned(), false).count();
            assert_eq!(count, expected);
        });
    });
    group.bench_function("scan_batches_of_256/200k_in", |b| {
        b.iter(|| {
            let mut scan = UnionScan::new("", "", false);
            let mut fed = 0;
            let mut count = 0;
            loop {
                match scan.next(&db) {
                    UnionStep::Pair(..) => count += 1,
                    UnionStep::NeedStore(_) => {
                        let end = (fed + 256).min(store.len());
                        let batch = store[fed..end].to_vec();
                        fed = end;
                        let _ = scan.feed(batch, end == store.len());
                    }
                    UnionStep::Done => break,
                }
            }
            assert_eq!(count, expected);
        });
    });
    group.finish();
}

fn million(c: &mut Criterion) {
    const M: u32 = 1_000_000;
    let mut group = c.benchmark_group("buffer_1m");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(u64::from(M)));
    let pairs = sequential_pairs(M);
    group.bench_function("set", |b| {
        b.iter_batched(
            || pairs.clone(),
            |pairs| {
                let mut db = unlimited();
                for (key, value) in pairs {
                    let _ = db.set(key, value);
                }
                db
            },
            BatchSize::PerIteration,
        );
    });
    let db = filled(&pairs);
    let random_order: Vec<Bytes> = shuffled(pairs.clone(), 4)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    group.bench_function("get_random", |b| {
        b.iter(|| {
            random_order
                .iter()
                .filter(|key| db.get(key).is_some())
                .count()
        });
    });
    group.bench_function("iterate", |b| {
        b.iter(|| db.iter(..).count());
    });
    group.finish();
    println!(
        "buffer_1m: {} keys, size {} bytes, mem_footprint {} bytes",
        db.len(),
        db.size(),
        db.mem_footprint()
    );
}

criterion_group!(benches, set, get, iterate, union, million);
criterion_main!(benches);
