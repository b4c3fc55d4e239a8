//! Routing many keys or a key range: grouping keys by region and cutting ranges at region
//! boundaries.
//!
//! Both work from the cache alone and report what they could not route: the caller loads the
//! missing regions from PD, inserts them, and asks again for the remainder.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::RegionRef;
use super::cache::RegionCache;
use crate::time::Time;

/// Keys grouped by the region that holds them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyGroups {
    /// Each region with the indices (into the caller's key slice) of its keys, in input
    /// order; regions appear in the order of their first key, so the first group holds the
    /// first routable key (the primary, for a commit).
    pub groups: Vec<(RegionRef, Vec<usize>)>,
    /// Indices of the keys no usable cached region holds, in input order.
    pub missing: Vec<usize>,
}

/// One piece of a range that lies within a single region.
#[derive(Clone, Debug, PartialEq)]
pub struct RangePiece {
    /// The region holding the piece.
    pub region: RegionRef,
    /// Inclusive start of the piece.
    pub start: Bytes,
    /// Exclusive end of the piece (empty: the end of the key space).
    pub end: Bytes,
}

/// A range cut at region boundaries, as far as the cache could route it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RangeSplit {
    /// Contiguous pieces in scan order: ascending for a forward split, descending for a
    /// reverse one.
    pub pieces: Vec<RangePiece>,
    /// Where routing stopped for lack of a usable cached region: for a forward split, the
    /// key to locate next (PD `GetRegion`); for a reverse split, the exclusive upper bound to
    /// locate next (PD `GetPrevRegion`, empty meaning the end of the key space). `None` when
    /// the whole range is routed.
    pub missing: Option<Bytes>,
}

impl RangeSplit {
    /// Whether every key of the range was routed.
    pub fn is_complete(&self) -> bool {
        self.missing.is_none()
    }
}

impl RegionCache {
    /// Groups `keys` (sorted or not, duplicates allowed) by their usable cached region at
    /// `now`; returns the groups and the keys that missed.
    pub fn group_keys_by_region<K: AsRef<[u8]>>(&mut self, keys: &[K], now: Time) -> KeyGroups {
        let mut result = KeyGroups::default();
        let mut group_of_region: BTreeMap<u64, usize> = BTreeMap::new();
        // Sorted input mostly stays in the region of the previous key: check it first.
        let mut last: Option<usize> = None;
        for (index, key) in keys.iter().enumerate() {
            let key = key.as_ref();
            let cached_group = last.filter(|group| result.groups[*group].0.contains(key));
            let group = match cached_group {
                Some(group) => group,
                None => match self.locate_key(key, now) {
                    Some(region) => *group_of_region.entry(region.id()).or_insert_with(|| {
                        result.groups.push((region, Vec::new()));
                        result.groups.len() - 1
                    }),
                    None => {
                        result.missing.push(index);
                        continue;
                    }
                },
            };
            result.groups[group].1.push(index);
            last = Some(group);
        }
        result
    }

    /// Cuts `[start, end)` (empty `end`: unbounded) at the boundaries of usable cached regions
    /// at `now`, walking forward from `start`; returns the pieces and where routing stopped.
    pub fn split_range(&mut self, start: &[u8], end: &[u8], now: Time) -> RangeSplit {
        let mut split = RangeSplit::default();
        if !end.is_empty() && start >= end {
            return split;
        }
        let end = Bytes::copy_from_slice(end);
        let mut cursor = Bytes::copy_from_slice(start);
        loop {
            let Some(region) = self.locate_key(&cursor, now) else {
                split.missing = Some(cursor);
                return split;
            };
            let region_end = region.end_key().clone();
            let reaches_end = region_end.is_empty() || (!end.is_empty() && region_end >= end);
            let piece_end = if reaches_end {
                end.clone()
            } else {
                region_end.clone()
            };
            split.pieces.push(RangePiece {
                region,
                start: cursor,
                end: piece_end,
            });
            if reaches_end {
                return split;
            }
            cursor = region_end;
        }
    }

    /// Cuts `[start, end)` (empty `end`: unbounded) at the boundaries of usable cached regions
    /// at `now`, walking backward from `end` as a reverse scan does; returns the pieces in
    /// descending order and where routing stopped.
    pub fn split_range_reverse(&mut self, start: &[u8], end: &[u8], now: Time) -> RangeSplit {
        let mut split = RangeSplit::default();
        if !end.is_empty() && start >= end {
            return split;
        }
        let mut cursor = Bytes::copy_from_slice(end);
        loop {
            let Some(region) = self.locate_end_key(&cursor, now) else {
                split.missing = Some(cursor);
                return split;
            };
            let region_start = region.start_key().clone();
            let reaches_start = region_start.as_ref() <= start;
            let piece_start = if reaches_start {
                Bytes::copy_from_slice(start)
            } else {
                region_start.clone()
            };
            split.pieces.push(RangePiece {
                region,
                start: piece_start,
                end: cursor,
            });
            if reaches_start {
                return split;
            }
            cursor = region_start;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rand::Rng;
    use crate::region::cache::RegionCacheConfig;
    use tikv_proto::metapb;

    fn region(id: u64, start: &str, end: &str) -> metapb::Region {
        metapb::Region {
            id,
            start_key: Bytes::copy_from_slice(start.as_bytes()),
            end_key: Bytes::copy_from_slice(end.as_bytes()),
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: vec![metapb::Peer {
                id: id * 10,
                store_id: 1,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// Regions ["", b), [b, d), [f, "") — a hole at [d, f).
    fn cache_with_hole() -> RegionCache {
        let mut cache = RegionCache::new(RegionCacheConfig::default());
        let mut rng = Rng::new(1);
        for meta in [region(1, "", "b"), region(2, "b", "d"), region(3, "f", "")] {
            cache.insert(meta, None, Time::ZERO, &mut rng).unwrap();
        }
        cache
    }

    fn pieces(split: &RangeSplit) -> Vec<(u64, &[u8], &[u8])> {
        split
            .pieces
            .iter()
            .map(|p| (p.region.id(), p.start.as_ref(), p.end.as_ref()))
            .collect()
    }

    #[test]
    fn group_keys_keeps_first_key_region_first() {
        let mut cache = cache_with_hole();
        let keys = ["c", "a", "e", "g", "b", "a", "z"];
        let groups = cache.group_keys_by_region(&keys, Time::ZERO);
        let ids: Vec<(u64, Vec<usize>)> = groups
            .groups
            .iter()
            .map(|(r, idx)| (r.id(), idx.clone()))
            .collect();
        assert_eq!(ids, [(2, vec![0, 4]), (1, vec![1, 5]), (3, vec![3, 6])]);
        assert_eq!(groups.missing, [2]);
    }

    #[test]
    fn group_keys_of_nothing_is_empty() {
        let mut cache = cache_with_hole();
        let keys: [&[u8]; 0] = [];
        assert_eq!(
            cache.group_keys_by_region(&keys, Time::ZERO),
            KeyGroups::default()
        );
    }

    #[test]
    fn split_range_stops_at_the_hole() {
        let mut cache = cache_with_hole();
        let split = cache.split_range(b"a", b"z", Time::ZERO);
        assert_eq!(pieces(&split), [(1, &b"a"[..], &b"b"[..]), (2, b"b", b"d")]);
        assert_eq!(split.missing.as_deref(), Some(&b"d"[..]));
        assert!(!split.is_complete());

        let split = cache.split_range(b"f", b"", Time::ZERO);
        assert_eq!(pieces(&split), [(3, &b"f"[..], &b""[..])]);
        assert!(split.is_complete());

        let split = cache.split_range(b"", b"c", Time::ZERO);
        assert_eq!(pieces(&split), [(1, &b""[..], &b"b"[..]), (2, b"b", b"c")]);
        // Empty or inverted ranges have nothing to route.
        assert_eq!(
            cache.split_range(b"c", b"c", Time::ZERO),
            RangeSplit::default()
        );
        assert_eq!(
            cache.split_range(b"c", b"a", Time::ZERO),
            RangeSplit::default()
        );
    }

    #[test]
    fn split_range_reverse_walks_down() {
        let mut cache = cache_with_hole();
        let split = cache.split_range_reverse(b"a", b"c", Time::ZERO);
        assert_eq!(pieces(&split), [(2, &b"b"[..], &b"c"[..]), (1, b"a", b"b")]);
        assert!(split.is_complete());

        // Unbounded end starts from the last region, then meets the hole below "f".
        let split = cache.split_range_reverse(b"", b"", Time::ZERO);
        assert_eq!(pieces(&split), [(3, &b"f"[..], &b""[..])]);
        assert_eq!(split.missing.as_deref(), Some(&b"f"[..]));

        // An end exactly on a boundary belongs to the region below it.
        let split = cache.split_range_reverse(b"", b"b", Time::ZERO);
        assert_eq!(pieces(&split), [(1, &b""[..], &b"b"[..])]);
        assert_eq!(
            cache.split_range_reverse(b"b", b"b", Time::ZERO),
            RangeSplit::default()
        );
    }
}
