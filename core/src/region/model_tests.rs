//! Property tests: the region cache against a naive model (a `Vec` of regions scanned
//! linearly), over random histories of splits, merges, inserts (current and stale),
//! invalidations, lookups and clock advances; and range splitting against the definition.

use std::time::Duration;

use bytes::Bytes;
use quickcheck::{Arbitrary, Gen, QuickCheck};
use tikv_proto::metapb;

use super::*;
use crate::rand::Rng;
use crate::time::Time;

const TTL: Duration = Duration::from_secs(10);

/// One step of a random history.
#[derive(Clone, Debug)]
enum Op {
    Split { region: u8, key: u8 },
    Merge { region: u8 },
    InsertCurrent { region: u8 },
    InsertHistoric { version: u8 },
    Invalidate { region: u8 },
    Locate { key: u8 },
    LocateEnd { key: u8 },
    GetById { region: u8 },
    Advance { secs: u8 },
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        let n = u8::arbitrary(g);
        match u8::arbitrary(g) % 16 {
            0 | 1 => Self::Split {
                region: n,
                key: u8::arbitrary(g),
            },
            2 => Self::Merge { region: n },
            3..=5 => Self::InsertCurrent { region: n },
            6 => Self::InsertHistoric { version: n },
            7 => Self::Invalidate { region: n },
            8..=11 => Self::Locate { key: n },
            12 | 13 => Self::LocateEnd { key: n },
            14 => Self::GetById { region: n },
            _ => Self::Advance { secs: n % 8 },
        }
    }
}

/// Keys are short: one byte from a small alphabet (plus the empty key), so that lookups
/// land on boundaries often.
fn key_of(n: u8) -> Vec<u8> {
    match n % 18 {
        0 => Vec::new(),
        k => vec![k * 8],
    }
}

fn epoch(region: &metapb::Region) -> RegionVerId {
    RegionVerId::of(region)
}

fn overlaps(a: &metapb::Region, b: &metapb::Region) -> bool {
    let a_before_b_end = b.end_key.is_empty() || a.start_key < b.end_key;
    let b_before_a_end = a.end_key.is_empty() || b.start_key < a.end_key;
    a_before_b_end && b_before_a_end
}

/// The cluster as TiKV would evolve it: regions covering the whole key space, split and
/// merged with TiKV's epoch rules, plus every version that ever existed.
struct Cluster {
    regions: Vec<metapb::Region>,
    history: Vec<metapb::Region>,
    next_id: u64,
}

impl Cluster {
    fn new() -> Self {
        let first = metapb::Region {
            id: 1,
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: vec![metapb::Peer {
                id: 1,
                store_id: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        Self {
            regions: vec![first.clone()],
            history: vec![first],
            next_id: 2,
        }
    }

    fn bump(region: &mut metapb::Region, version: u64) {
        region.region_epoch = Some(metapb::RegionEpoch {
            conf_ver: 1,
            version,
        });
    }

    fn split(&mut self, pick: u8, key: u8) {
        let index = usize::from(pick) % self.regions.len();
        let key = Bytes::from(key_of(key));
        let region = &self.regions[index];
        if !region.contains_strictly(&key) {
            return;
        }
        let version = epoch(region).version + 1;
        let mut left = region.clone();
        let mut right = region.clone();
        left.end_key = key.clone();
        right.start_key = key;
        right.id = self.next_id;
        self.next_id += 1;
        Self::bump(&mut left, version);
        Self::bump(&mut right, version);
        self.history.push(left.clone());
        self.history.push(right.clone());
        self.regions[index] = left;
        self.regions.insert(index + 1, right);
    }

    fn merge(&mut self, pick: u8) {
        if self.regions.len() < 2 {
            return;
        }
        let index = usize::from(pick) % (self.regions.len() - 1);
        let right = self.regions.remove(index + 1);
        let left = &mut self.regions[index];
        let version = epoch(left).version.max(epoch(&right).version) + 1;
        left.end_key = right.end_key;
        Self::bump(left, version);
        self.history.push(left.clone());
    }
}

trait StrictlyInside {
    fn contains_strictly(&self, key: &[u8]) -> bool;
}

impl StrictlyInside for metapb::Region {
    fn contains_strictly(&self, key: &[u8]) -> bool {
        self.start_key.as_ref() < key && (self.end_key.is_empty() || key < self.end_key.as_ref())
    }
}

/// The model: what the cache should hold, as a plain list.
#[derive(Default)]
struct Model {
    entries: Vec<(metapb::Region, bool, Time)>,
}

impl Model {
    fn insert(&mut self, region: &metapb::Region, now: Time) -> bool {
        let new = epoch(region);
        for (cached, _, _) in &self.entries {
            let old = epoch(cached);
            let same_stale =
                old.id == new.id && (old.version > new.version || old.conf_ver > new.conf_ver);
            let overlap_stale = overlaps(cached, region) && old.version > new.version;
            if same_stale || overlap_stale {
                return false;
            }
        }
        self.entries
            .retain(|(cached, _, _)| cached.id != region.id && !overlaps(cached, region));
        self.entries.push((region.clone(), true, now + TTL));
        true
    }

    fn invalidate(&mut self, ver_id: RegionVerId) -> bool {
        for (cached, valid, _) in &mut self.entries {
            if epoch(cached) == ver_id && *valid {
                *valid = false;
                return true;
            }
        }
        false
    }

    fn find(&mut self, now: Time, fits: impl Fn(&metapb::Region) -> bool) -> Option<RegionVerId> {
        // The cache answers from the one entry whose range fits, usable or not.
        let (region, valid, deadline) = self.entries.iter_mut().find(|(r, _, _)| fits(r))?;
        if !*valid || now > *deadline {
            return None;
        }
        *deadline = (*deadline).max(now + TTL);
        Some(epoch(region))
    }
}

fn run_history(ops: Vec<Op>) -> bool {
    let config = RegionCacheConfig {
        ttl: TTL,
        ttl_jitter: Duration::ZERO,
    };
    let mut cache = RegionCache::new(config);
    let mut model = Model::default();
    let mut cluster = Cluster::new();
    let mut rng = Rng::new(3);
    let mut now = Time::ZERO;
    for op in ops {
        match op {
            Op::Split { region, key } => cluster.split(region, key),
            Op::Merge { region } => cluster.merge(region),
            Op::InsertCurrent { region } | Op::InsertHistoric { version: region } => {
                let source = if matches!(op, Op::InsertCurrent { .. }) {
                    &cluster.regions
                } else {
                    &cluster.history
                };
                let meta = source[usize::from(region) % source.len()].clone();
                let accepted = cache.insert(meta.clone(), None, now, &mut rng).is_ok();
                if accepted != model.insert(&meta, now) {
                    return false;
                }
            }
            Op::Invalidate { region } => {
                let source = &cluster.history;
                let ver_id = epoch(&source[usize::from(region) % source.len()]);
                if cache.invalidate(ver_id, InvalidReason::Other) != model.invalidate(ver_id) {
                    return false;
                }
            }
            Op::Locate { key } => {
                let key = key_of(key);
                let got = cache.locate_key(&key, now);
                if got.as_ref().is_some_and(|region| !region.contains(&key)) {
                    return false;
                }
                let want = model.find(now, |r| {
                    r.start_key.as_ref() <= key.as_slice()
                        && (r.end_key.is_empty() || key.as_slice() < r.end_key.as_ref())
                });
                if got.map(|r| r.ver_id()) != want {
                    return false;
                }
            }
            Op::LocateEnd { key } => {
                let key = key_of(key);
                let got = cache.locate_end_key(&key, now);
                if got
                    .as_ref()
                    .is_some_and(|region| !region.contains_by_end(&key))
                {
                    return false;
                }
                let want = model.find(now, |r| {
                    if key.is_empty() {
                        r.end_key.is_empty()
                    } else {
                        r.start_key.as_ref() < key.as_slice()
                            && (r.end_key.is_empty() || key.as_slice() <= r.end_key.as_ref())
                    }
                });
                if got.map(|r| r.ver_id()) != want {
                    return false;
                }
            }
            Op::GetById { region } => {
                let id = u64::from(region) % cluster.next_id;
                let got = cache.get_by_id(id, now).map(|r| r.ver_id());
                if got != model.find(now, |r| r.id == id) {
                    return false;
                }
            }
            Op::Advance { secs } => now += Duration::from_secs(u64::from(secs)),
        }
        if !cache_matches_model(&cache, &model) {
            return false;
        }
    }
    true
}

/// The cache holds exactly the model's regions, without overlaps, in key order.
fn cache_matches_model(cache: &RegionCache, model: &Model) -> bool {
    let mut want: Vec<(Bytes, RegionVerId, bool)> = model
        .entries
        .iter()
        .map(|(r, valid, _)| (r.start_key.clone(), epoch(r), *valid))
        .collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    let got: Vec<(Bytes, RegionVerId, bool)> = cache
        .iter()
        .map(|e| {
            let r = e.region();
            let valid = e.invalid_reason() == InvalidReason::Ok;
            (r.start_key().clone(), r.ver_id(), valid)
        })
        .collect();
    let disjoint = cache.iter().zip(cache.iter().skip(1)).all(|(a, b)| {
        let end = a.region().end_key();
        !end.is_empty() && end <= b.region().start_key()
    });
    got == want && disjoint
}

#[test]
fn quickcheck_cache_against_model() {
    QuickCheck::new()
        .tests(500)
        .rng(Gen::new(200))
        .quickcheck(run_history as fn(Vec<Op>) -> bool);
}
