//! Ports of client-go's `internal/unionstore/memdb_norace_test.go`: randomized histories
//! checked against a reference map. Client-go compares with goleveldb's memdb (and one of
//! its memdb implementations with the other); ours compare with a `BTreeMap`. The inputs
//! come from the core's seeded generator, so every run is the same run.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::*;
use crate::rand::Rng;

/// Random bytes, `1..=max_len` of them, as client-go's tests draw keys and values.
fn random_bytes(rng: &mut Rng, max_len: u64) -> Bytes {
    let len = rng.between(1, max_len) as usize;
    (0..len)
        .map(|_| rng.next_u64() as u8)
        .collect::<Vec<_>>()
        .into()
}

/// Client-go's `checkConsist`: same length and size; every reference pair found by get, by
/// a full walk, by a seek to its key, and by a reverse seek from it to the key before; the
/// reverse walk matches too.
fn check_consist(db: &MemDb, golden: &BTreeMap<Bytes, Bytes>) {
    assert_eq!(db.len(), golden.len());
    let golden_size: usize = golden.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert_eq!(db.size(), golden_size as u64);

    let mut walk = db.iter(..);
    let mut previous: Option<(&Bytes, &Bytes)> = None;
    for (key, value) in golden {
        assert_eq!(put_value(db, key).as_ref(), Some(value));
        let (walked_key, walked_value) = walk.next().unwrap_or_else(|| panic!("walk ended early"));
        assert_eq!((walked_key, walked_value.as_put()), (key, Some(value)));

        let seek = db.iter(go_range(Some(key), None)).next();
        assert_eq!(seek.map(|(k, v)| (k, v.as_put())), Some((key, Some(value))));
        if let Some((previous_key, previous_value)) = previous {
            let back = db.iter_reverse(go_range(None, Some(key))).next();
            assert_eq!(
                back.map(|(k, v)| (k, v.as_put())),
                Some((previous_key, Some(previous_value)))
            );
        }
        previous = Some((key, value));
    }
    assert_eq!(walk.next(), None);

    let backward: Vec<_> = db
        .iter_reverse(..)
        .map(|(k, v)| (k.clone(), v.as_put().cloned()))
        .collect();
    let expected: Vec<_> = golden
        .iter()
        .rev()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    assert_eq!(backward, expected);
}

/// `TestRandom`: 50,000 random keys written, then a third removed and the rest overwritten
/// in random order.
#[test]
fn test_random() {
    let mut rng = Rng::new(0x5eed_0001);
    let count = 50_000;
    let mut keys: Vec<Bytes> = (0..count).map(|_| random_bytes(&mut rng, 19)).collect();

    let mut db = MemDb::new();
    let mut golden = BTreeMap::new();
    for key in &keys {
        ok(db.set(key.clone(), key.clone()));
        golden.insert(key.clone(), key.clone());
    }
    assert_eq!(db.len(), golden.len());
    let size: usize = golden.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert_eq!(db.size(), size as u64);

    // Fisher-Yates with the seeded generator.
    for i in (1..keys.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        keys.swap(i, j);
    }
    for key in &keys {
        if rng.unit_f64() < 0.35 {
            db.remove_from_buffer(key);
            golden.remove(key);
        } else {
            let value = random_bytes(&mut rng, 19);
            ok(db.set(key.clone(), value.clone()));
            golden.insert(key.clone(), value);
        }
    }
    check_consist(&db, &golden);
}

/// `TestRandomDerive`: up to a hundred nested levels, each writing a batch of sequential,
/// random or fixed keys, closed by a cleanup (30% of the time, below the top) or a release,
/// with the reference map rolled back by replaying the writes' old values backwards.
#[test]
fn test_random_derive() {
    let mut rng = Rng::new(0x5eed_0002);
    let mut db = MemDb::new();
    let mut golden = BTreeMap::new();
    random_derive(&mut rng, &mut db, &mut golden, 0);
    assert_eq!(db.staging_depth(), 0);
    check_consist(&db, &golden);
}

/// One level of `TestRandomDerive`; returns the writes (key, old value) that stay.
fn random_derive(
    rng: &mut Rng,
    db: &mut MemDb,
    golden: &mut BTreeMap<Bytes, Bytes>,
    depth: usize,
) -> Vec<(Bytes, Option<Bytes>)> {
    let choice = rng.unit_f64();
    let keys: Vec<Bytes> = if choice < 0.33 {
        let start = rng.below(512);
        let end = rng.below(512) + 512;
        (start..end)
            .map(|i| Bytes::copy_from_slice(&i.to_be_bytes()))
            .collect()
    } else if choice < 0.66 {
        let count = rng.below(512) + 512;
        (0..count).map(|_| random_bytes(rng, 19)).collect()
    } else {
        (0..512u64)
            .map(|i| Bytes::copy_from_slice(&i.to_be_bytes()))
            .collect()
    };
    let values: Vec<Bytes> = keys.iter().map(|_| random_bytes(rng, 255)).collect();

    let handle = db.staging();
    let mut op_log = Vec::with_capacity(keys.len());
    for (key, value) in keys.into_iter().zip(values) {
        ok(db.set(key.clone(), value.clone()));
        let old = golden.insert(key.clone(), value);
        op_log.push((key, old));
    }
    if depth < 100 {
        op_log.extend(random_derive(rng, db, golden, depth + 1));
    }
    if rng.unit_f64() < 0.3 && depth > 0 {
        ok(db.cleanup(handle));
        for (key, old) in op_log.drain(..).rev() {
            match old {
                Some(old) => golden.insert(key, old),
                None => golden.remove(&key),
            };
        }
    } else {
        ok(db.release(handle));
    }
    if depth % 10 == 0 {
        check_consist(db, golden);
    }
    op_log
}

/// `TestRandomAB`: 50,000 levels, each writing one random key, alternately cleaned up and
/// released. Client-go runs its two memdb implementations side by side; ours runs against a
/// reference map, checking the same things every 5,000 steps (dirty flag, length, size, a
/// random get, and walks from and to a random key).
#[test]
fn test_random_ab() {
    let mut rng = Rng::new(0x5eed_0003);
    let mut db = MemDb::new();
    let mut golden: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    let mut dirty = false;
    for i in 0..50_000 {
        let handle = db.staging();
        assert_eq!(handle.level(), 1);
        let key = random_bytes(&mut rng, 19);
        ok(db.set(key.clone(), key.clone()));
        if i % 2 == 0 {
            ok(db.cleanup(handle));
        } else {
            ok(db.release(handle));
            golden.insert(key.clone(), key);
            dirty = true;
        }

        if i % 5000 == 0 {
            let probe = random_bytes(&mut rng, 19);
            assert_eq!(db.dirty(), dirty);
            assert_eq!(db.len(), golden.len());
            let size: usize = golden.iter().map(|(k, v)| k.len() + v.len()).sum();
            assert_eq!(db.size(), size as u64, "step {i}");
            assert_eq!(put_value(&db, &probe).as_ref(), golden.get(&probe));

            let from: Vec<_> = db
                .iter(go_range(Some(&probe), None))
                .map(|(k, v)| (k.clone(), v.as_put().cloned()))
                .collect();
            let expected: Vec<_> = golden
                .range(probe.clone()..)
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect();
            assert_eq!(from, expected);

            let to: Vec<_> = db
                .iter_reverse(go_range(None, Some(&probe)))
                .map(|(k, v)| (k.clone(), v.as_put().cloned()))
                .collect();
            let expected: Vec<_> = golden
                .range(..probe.clone())
                .rev()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect();
            assert_eq!(to, expected);
        }
    }
}
