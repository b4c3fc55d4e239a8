//! Model-based property test: random sequences of raw commands, with TTLs and a moving
//! clock, run against the store and against a plain `BTreeMap`; every answer must agree.

use std::collections::BTreeMap;

use bytes::Bytes;
use quickcheck::{Arbitrary, Gen, QuickCheck};
use tikv_proto::kvrpcpb::{
    ApiVersion, Context, KeyRange, KvPair, RawBatchDeleteRequest, RawBatchGetRequest,
    RawBatchPutRequest, RawCasRequest, RawChecksumRequest, RawDeleteRangeRequest, RawDeleteRequest,
    RawGetKeyTtlRequest, RawGetRequest, RawPutRequest, RawScanRequest,
};

use crate::raw::{RawStore, pair_checksum};

type Key = Vec<u8>;
type Value = Vec<u8>;

/// One client command, over a tiny key alphabet so that commands collide often.
#[derive(Clone, Debug)]
enum Op {
    Put {
        key: Key,
        value: Value,
        ttl: u64,
    },
    BatchPut {
        pairs: Vec<(Key, Value)>,
        ttl: u64,
    },
    Delete(Key),
    BatchDelete(Vec<Key>),
    DeleteRange {
        start: Key,
        end: Key,
    },
    Cas {
        key: Key,
        previous: Option<Value>,
        value: Value,
        delete: bool,
    },
    Get(Key),
    BatchGet(Vec<Key>),
    Scan {
        start: Key,
        end: Key,
        limit: u32,
        reverse: bool,
        key_only: bool,
    },
    GetKeyTtl(Key),
    Checksum {
        start: Key,
        end: Key,
    },
    AdvanceMs(u64),
}

fn small_key(g: &mut Gen) -> Key {
    let len = usize::from(u8::arbitrary(g) % 3);
    (0..len)
        .map(|_| *g.choose(b"abc").unwrap_or(&b'a'))
        .collect()
}

fn small_value(g: &mut Gen) -> Value {
    let len = usize::from(u8::arbitrary(g) % 3);
    (0..len)
        .map(|_| *g.choose(b"xy").unwrap_or(&b'x'))
        .collect()
}

fn small_ttl(g: &mut Gen) -> u64 {
    // Mostly no TTL, sometimes one to three seconds.
    u64::from(u8::arbitrary(g) % 6).saturating_sub(2)
}

fn keys(g: &mut Gen) -> Vec<Key> {
    (0..u8::arbitrary(g) % 4).map(|_| small_key(g)).collect()
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        match u8::arbitrary(g) % 12 {
            0 => Self::Put {
                key: small_key(g),
                value: small_value(g),
                ttl: small_ttl(g),
            },
            1 => Self::BatchPut {
                pairs: (0..u8::arbitrary(g) % 4)
                    .map(|_| (small_key(g), small_value(g)))
                    .collect(),
                ttl: small_ttl(g),
            },
            2 => Self::Delete(small_key(g)),
            3 => Self::BatchDelete(keys(g)),
            4 => Self::DeleteRange {
                start: small_key(g),
                end: small_key(g),
            },
            5 => Self::Cas {
                key: small_key(g),
                previous: bool::arbitrary(g).then(|| small_value(g)),
                value: small_value(g),
                delete: bool::arbitrary(g),
            },
            6 => Self::Get(small_key(g)),
            7 => Self::BatchGet(keys(g)),
            8 => Self::Scan {
                start: small_key(g),
                end: small_key(g),
                limit: u32::from(u8::arbitrary(g) % 6),
                reverse: bool::arbitrary(g),
                key_only: bool::arbitrary(g),
            },
            9 => Self::GetKeyTtl(small_key(g)),
            10 => Self::Checksum {
                start: small_key(g),
                end: small_key(g),
            },
            // Half-second steps land exactly on expiry instants now and then.
            _ => Self::AdvanceMs(u64::from(u8::arbitrary(g) % 6) * 500),
        }
    }
}

/// The model: key → (value, expiry ms), plus the clock.
#[derive(Default)]
struct Model {
    data: BTreeMap<Key, (Value, Option<u64>)>,
    now_ms: u64,
}

impl Model {
    fn live(&self) -> impl DoubleEndedIterator<Item = (&Key, &Value)> {
        self.data
            .iter()
            .filter(|(_, (_, expiry))| expiry.is_none_or(|at| self.now_ms < at))
            .map(|(k, (v, _))| (k, v))
    }

    fn get(&self, key: &[u8]) -> Option<Value> {
        self.live()
            .find(|(k, _)| k.as_slice() == key)
            .map(|(_, v)| v.clone())
    }

    fn put(&mut self, key: &[u8], value: &[u8], ttl: u64) {
        let expiry = (ttl > 0).then_some(self.now_ms + ttl * 1000);
        self.data.insert(key.to_vec(), (value.to_vec(), expiry));
    }

    /// Live pairs in `[start, end)` (empty end: unbounded), in key order.
    fn range(&self, start: &[u8], end: &[u8]) -> Vec<(Key, Value)> {
        self.live()
            .filter(|(k, _)| k.as_slice() >= start && (end.is_empty() || k.as_slice() < end))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

fn ctx() -> Option<Context> {
    Some(Context {
        api_version: ApiVersion::V1 as i32,
        ..Context::default()
    })
}

fn bytes(b: &[u8]) -> Bytes {
    Bytes::copy_from_slice(b)
}

fn unpack(pairs: Vec<KvPair>) -> Option<Vec<(Key, Value)>> {
    pairs
        .into_iter()
        .map(|p| {
            p.error
                .is_none()
                .then(|| (p.key.to_vec(), p.value.to_vec()))
        })
        .collect()
}

/// Runs one op on both sides; returns whether they agree.
fn step(store: &mut RawStore, model: &mut Model, op: &Op) -> bool {
    let now = model.now_ms;
    match op {
        Op::Put { key, value, ttl } => {
            let req = RawPutRequest {
                context: ctx(),
                key: bytes(key),
                value: bytes(value),
                ttl: *ttl,
                ..RawPutRequest::default()
            };
            model.put(key, value, *ttl);
            store.raw_put(&req, now).error.is_empty()
        }
        Op::BatchPut { pairs, ttl } => {
            let req = RawBatchPutRequest {
                context: ctx(),
                pairs: pairs
                    .iter()
                    .map(|(k, v)| KvPair {
                        key: bytes(k),
                        value: bytes(v),
                        ..KvPair::default()
                    })
                    .collect(),
                ttls: vec![*ttl],
                ..RawBatchPutRequest::default()
            };
            for (k, v) in pairs {
                model.put(k, v, *ttl);
            }
            store.raw_batch_put(&req, now).error.is_empty()
        }
        Op::Delete(key) => {
            model.data.remove(key);
            let req = RawDeleteRequest {
                context: ctx(),
                key: bytes(key),
                ..Default::default()
            };
            store.raw_delete(&req, now).error.is_empty()
        }
        Op::BatchDelete(keys) => {
            for key in keys {
                model.data.remove(key);
            }
            let req = RawBatchDeleteRequest {
                context: ctx(),
                keys: keys.iter().map(|k| bytes(k)).collect(),
                ..Default::default()
            };
            store.raw_batch_delete(&req, now).error.is_empty()
        }
        Op::DeleteRange { start, end } => {
            let req = RawDeleteRangeRequest {
                context: ctx(),
                start_key: bytes(start),
                end_key: bytes(end),
                cf: String::new(),
            };
            let refused = !end.is_empty() && start >= end;
            if !refused {
                model
                    .data
                    .retain(|k, _| k < start || (!end.is_empty() && k >= end));
            }
            store.raw_delete_range(&req, now).error.is_empty() != refused
        }
        Op::Cas {
            key,
            previous,
            value,
            delete,
        } => {
            let current = model.get(key);
            let succeed = current == *previous;
            if succeed {
                if *delete {
                    model.data.remove(key);
                } else {
                    model.put(key, value, 0);
                }
            }
            let req = RawCasRequest {
                context: ctx(),
                key: bytes(key),
                value: bytes(value),
                previous_not_exist: previous.is_none(),
                previous_value: bytes(previous.as_deref().unwrap_or_default()),
                delete: *delete,
                ..RawCasRequest::default()
            };
            let resp = store.raw_compare_and_swap(&req, now);
            resp.error.is_empty()
                && resp.succeed == succeed
                && resp.previous_not_exist == current.is_none()
                && resp.previous_value.to_vec() == current.unwrap_or_default()
        }
        Op::Get(key) => {
            let req = RawGetRequest {
                context: ctx(),
                key: bytes(key),
                cf: String::new(),
            };
            let resp = store.raw_get(&req, now);
            let got = (!resp.not_found).then(|| resp.value.to_vec());
            resp.error.is_empty() && got == model.get(key)
        }
        Op::BatchGet(keys) => {
            let req = RawBatchGetRequest {
                context: ctx(),
                keys: keys.iter().map(|k| bytes(k)).collect(),
                cf: String::new(),
            };
            let expected: Vec<(Key, Value)> = keys
                .iter()
                .filter_map(|k| Some((k.clone(), model.get(k)?)))
                .collect();
            unpack(store.raw_batch_get(&req, now).pairs) == Some(expected)
        }
        Op::Scan {
            start,
            end,
            limit,
            reverse,
            key_only,
        } => {
            let req = RawScanRequest {
                context: ctx(),
                start_key: bytes(start),
                end_key: bytes(end),
                limit: *limit,
                key_only: *key_only,
                reverse: *reverse,
                cf: String::new(),
            };
            let mut expected = if *reverse {
                // Reverse: [end, start) downward; an empty start bounds nothing from above
                // but excludes everything, as no key sorts below the empty key.
                let mut below: Vec<(Key, Value)> = model
                    .live()
                    .filter(|(k, _)| {
                        k.as_slice() < start.as_slice() && k.as_slice() >= end.as_slice()
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                below.reverse();
                below
            } else {
                model.range(start, end)
            };
            expected.truncate(*limit as usize);
            if *key_only {
                expected.iter_mut().for_each(|(_, v)| v.clear());
            }
            unpack(store.raw_scan(&req, now).kvs) == Some(expected)
        }
        Op::GetKeyTtl(key) => {
            let req = RawGetKeyTtlRequest {
                context: ctx(),
                key: bytes(key),
                cf: String::new(),
            };
            let resp = store.raw_get_key_ttl(&req, now);
            let expected = model.get(key).map(|_| match model.data.get(key) {
                Some((_, Some(at))) => (at - now).div_ceil(1000),
                _ => 0,
            });
            resp.error.is_empty() && (!resp.not_found).then_some(resp.ttl) == expected
        }
        Op::Checksum { start, end } => {
            let req = RawChecksumRequest {
                context: ctx(),
                algorithm: 0,
                ranges: vec![KeyRange {
                    start_key: bytes(start),
                    end_key: bytes(end),
                }],
            };
            let resp = store.raw_checksum(&req, now);
            let pairs = model.range(start, end);
            let crc = pairs
                .iter()
                .fold(0, |acc, (k, v)| acc ^ pair_checksum(k, v));
            let total_bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
            resp.error.is_empty()
                && resp.checksum == crc
                && resp.total_kvs == pairs.len() as u64
                && resp.total_bytes == total_bytes as u64
        }
        Op::AdvanceMs(ms) => {
            model.now_ms += ms;
            true
        }
    }
}

fn store_agrees_with_model(ops: Vec<Op>) -> bool {
    let mut store = RawStore::new(ApiVersion::V1ttl);
    let mut model = Model::default();
    ops.iter().all(|op| step(&mut store, &mut model, op))
}

#[test]
fn store_agrees_with_a_btreemap_model() {
    QuickCheck::new()
        .tests(500)
        .quickcheck(store_agrees_with_model as fn(Vec<Op>) -> bool);
}
