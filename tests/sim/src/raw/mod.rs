//! Raw KV storage of one simulated TiKV store: a pure, deterministic model of TiKV's raw API.
//!
//! [`RawStore`] answers every raw command (`RawGet` ... `RawChecksum`) the way TiKV's storage
//! layer does, from the kvrpcpb request to the kvrpcpb response, with no networking and no
//! regions: the cluster layer checks region, epoch and leader first and fills `region_error`
//! itself. Wall-clock time comes in as `now_ms` on every call, so TTL expiry replays exactly.
//!
//! What is modelled, after TiKV (`src/storage/mod.rs`, `src/storage/raw/store.rs`,
//! `components/api_version`):
//!
//! - **Key spaces.** Three column families (`default`, `lock`, `write`; an empty name is
//!   `default`), each a separate map ordered by raw key bytes. In API V2 raw requests may not
//!   name a column family at all.
//! - **API versions.** A V1 store serves V1 requests; a V1TTL store serves V1 requests (the
//!   client does not stamp V1TTL); a V2 store serves V2 requests whose keys start with `'r'`
//!   and whose ranges stay inside the raw space. Everything else is refused with TiKV's text.
//! - **TTL.** Only V1TTL and V2 keep TTLs; a non-zero TTL on V1 is an error. A key put at
//!   `now_ms` with `ttl` seconds expires once `now_ms' >= now_ms + ttl * 1000` and is then
//!   invisible to every read, scan, CAS and checksum. (TiKV counts whole seconds; milliseconds
//!   keep the simulation exact.)
//! - **Errors** go in the response's `error` string; scans and batch gets, which have no such
//!   field, carry them as one pair whose `KeyError.abort` holds the text, as TiKV does.
//!
//! Deliberate differences: `RawGetKeyTTL` on a V1 store answers an error (TiKV panics), and
//! a key deleted in V2 is plain not-found for `RawGetKeyTTL` (TiKV's tombstone reports TTL 0).

mod check;
mod crc64;
mod error;

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use tikv_proto::kvrpcpb::{
    ApiVersion, ChecksumAlgorithm, KvPair, RawBatchDeleteRequest, RawBatchDeleteResponse,
    RawBatchGetRequest, RawBatchGetResponse, RawBatchPutRequest, RawBatchPutResponse,
    RawBatchScanRequest, RawBatchScanResponse, RawCasRequest, RawCasResponse, RawChecksumRequest,
    RawChecksumResponse, RawDeleteRangeRequest, RawDeleteRangeResponse, RawDeleteRequest,
    RawDeleteResponse, RawGetKeyTtlRequest, RawGetKeyTtlResponse, RawGetRequest, RawGetResponse,
    RawPutRequest, RawPutResponse, RawScanRequest, RawScanResponse,
};

pub use check::ColumnFamily;
pub use crc64::{Crc64, checksum as crc64_checksum, pair_checksum};
pub use error::{RawCommand, RawError};

use crate::admission::{check_api_version, check_api_version_ranges, check_key_size};
use check::{resolve_cf, ttl_enabled};

/// TiKV's default `storage.max-key-size`: 8 KiB.
pub const DEFAULT_MAX_KEY_SIZE: usize = 8 * 1024;

/// The raw key-value data of one store and the rules for reading and writing it.
#[derive(Clone, Debug)]
pub struct RawStore {
    /// The store's `storage.api-version`.
    api_version: ApiVersion,
    /// Longest key a write may carry.
    max_key_size: usize,
    /// One ordered map per column family, indexed by [`ColumnFamily::index`].
    cfs: [BTreeMap<Bytes, Cell>; 3],
}

/// One stored value and when it stops being visible.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cell {
    /// The user's value.
    value: Bytes,
    /// Wall-clock ms from which the key reads as absent; `None` for no TTL.
    expire_at_ms: Option<u64>,
}

/// How much data a key range holds (raw or MVCC), for size-based splits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeStats {
    /// Keys in the range.
    pub keys: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
    /// The middle key of the range, where a split would go.
    pub middle_key: Option<Bytes>,
}

impl Cell {
    /// Whether the value is still visible at `now_ms`.
    fn is_live(&self, now_ms: u64) -> bool {
        self.expire_at_ms
            .is_none_or(|expire_at_ms| now_ms < expire_at_ms)
    }
}

impl RawStore {
    /// Creates an empty store serving raw requests under `api_version`.
    pub fn new(api_version: ApiVersion) -> Self {
        Self {
            api_version,
            max_key_size: DEFAULT_MAX_KEY_SIZE,
            cfs: Default::default(),
        }
    }

    /// Returns the store with a different maximum key size (TiKV's `storage.max-key-size`).
    pub fn with_max_key_size(mut self, max_key_size: usize) -> Self {
        self.max_key_size = max_key_size;
        self
    }

    /// Reads one key; `not_found` when it is absent or expired.
    pub fn raw_get(&self, req: &RawGetRequest, now_ms: u64) -> RawGetResponse {
        let read = || -> Result<_, RawError> {
            check_api_version(
                self.api_version,
                req.context.as_ref(),
                RawCommand::Get,
                [&req.key[..]],
            )?;
            let cf = resolve_cf(&req.cf, self.api_version)?;
            Ok(self
                .live(cf, &req.key, now_ms)
                .map(|cell| cell.value.clone()))
        };
        match read() {
            Ok(Some(value)) => RawGetResponse {
                value,
                ..RawGetResponse::default()
            },
            Ok(None) => RawGetResponse {
                not_found: true,
                ..RawGetResponse::default()
            },
            Err(err) => RawGetResponse {
                error: err.to_string(),
                ..RawGetResponse::default()
            },
        }
    }

    /// Reads several keys, returning the pairs of present keys in request order
    ///
    /// Absent and expired keys are left out.
    pub fn raw_batch_get(&self, req: &RawBatchGetRequest, now_ms: u64) -> RawBatchGetResponse {
        let read = || -> Result<_, RawError> {
            let keys = req.keys.iter().map(|key| &key[..]);
            check_api_version(
                self.api_version,
                req.context.as_ref(),
                RawCommand::BatchGet,
                keys,
            )?;
            let cf = resolve_cf(&req.cf, self.api_version)?;
            let pairs = req
                .keys
                .iter()
                .filter_map(|key| {
                    let cell = self.live(cf, key, now_ms)?;
                    Some(pair(key.clone(), cell.value.clone()))
                })
                .collect();
            Ok(pairs)
        };
        RawBatchGetResponse {
            pairs: pairs_or_error(read()),
            ..RawBatchGetResponse::default()
        }
    }

    /// Writes one key, with an optional TTL in seconds (V1TTL and V2 only).
    ///
    /// With `for_cas` the put runs as TiKV's atomic store (serialised with CAS), which
    /// checks the same things except the key size.
    pub fn raw_put(&mut self, req: &RawPutRequest, now_ms: u64) -> RawPutResponse {
        let ctx = req.context.as_ref();
        let admit = || -> Result<_, RawError> {
            let cf = if req.for_cas {
                check_api_version(
                    self.api_version,
                    ctx,
                    RawCommand::AtomicStore,
                    [&req.key[..]],
                )?;
                let cf = resolve_cf(&req.cf, self.api_version)?;
                self.check_ttls(1, &[req.ttl])?;
                cf
            } else {
                check_api_version(self.api_version, ctx, RawCommand::Put, [&req.key[..]])?;
                check_key_size([&req.key[..]], self.max_key_size)?;
                self.check_ttls(1, &[req.ttl])?;
                resolve_cf(&req.cf, self.api_version)?
            };
            Ok(cf)
        };
        match admit() {
            Ok(cf) => {
                self.put(cf, req.key.clone(), req.value.clone(), req.ttl, now_ms);
                RawPutResponse::default()
            }
            Err(err) => RawPutResponse {
                error: err.to_string(),
                ..RawPutResponse::default()
            },
        }
    }

    /// Writes several keys at once, each with its own or a shared TTL
    ///
    /// `ttls` may be empty (no TTL), hold one TTL for every pair, or one per pair; the legacy
    /// single `ttl` field is ignored, as TiKV ignores it.
    pub fn raw_batch_put(&mut self, req: &RawBatchPutRequest, now_ms: u64) -> RawBatchPutResponse {
        let ttls = match req.ttls.as_slice() {
            [] => vec![0; req.pairs.len()],
            [ttl] => vec![*ttl; req.pairs.len()],
            ttls => ttls.to_vec(),
        };
        let ctx = req.context.as_ref();
        let keys = || req.pairs.iter().map(|pair| &pair.key[..]);
        let admit = || -> Result<_, RawError> {
            let cf = if req.for_cas {
                check_api_version(self.api_version, ctx, RawCommand::AtomicStore, keys())?;
                resolve_cf(&req.cf, self.api_version)?
            } else {
                check_api_version(self.api_version, ctx, RawCommand::BatchPut, keys())?;
                let cf = resolve_cf(&req.cf, self.api_version)?;
                check_key_size(keys(), self.max_key_size)?;
                cf
            };
            self.check_ttls(req.pairs.len(), &ttls)?;
            Ok(cf)
        };
        match admit() {
            Ok(cf) => {
                // TiKV zips pairs with TTLs; on a store without TTL a shorter all-zero list
                // therefore drops the trailing pairs, and so does this model.
                for (pair, ttl) in req.pairs.iter().zip(ttls) {
                    self.put(cf, pair.key.clone(), pair.value.clone(), ttl, now_ms);
                }
                RawBatchPutResponse::default()
            }
            Err(err) => RawBatchPutResponse {
                error: err.to_string(),
                ..RawBatchPutResponse::default()
            },
        }
    }

    /// Deletes one key (absent keys are fine).
    pub fn raw_delete(&mut self, req: &RawDeleteRequest, _now_ms: u64) -> RawDeleteResponse {
        let ctx = req.context.as_ref();
        let admit = || -> Result<_, RawError> {
            if req.for_cas {
                check_api_version(
                    self.api_version,
                    ctx,
                    RawCommand::AtomicStore,
                    [&req.key[..]],
                )?;
            } else {
                check_api_version(self.api_version, ctx, RawCommand::Delete, [&req.key[..]])?;
                check_key_size([&req.key[..]], self.max_key_size)?;
            }
            resolve_cf(&req.cf, self.api_version)
        };
        match admit() {
            Ok(cf) => {
                self.cfs[cf.index()].remove(&req.key[..]);
                RawDeleteResponse::default()
            }
            Err(err) => RawDeleteResponse {
                error: err.to_string(),
                ..RawDeleteResponse::default()
            },
        }
    }

    /// Deletes several keys at once.
    pub fn raw_batch_delete(
        &mut self,
        req: &RawBatchDeleteRequest,
        _now_ms: u64,
    ) -> RawBatchDeleteResponse {
        let ctx = req.context.as_ref();
        let keys = || req.keys.iter().map(|key| &key[..]);
        let admit = || -> Result<_, RawError> {
            let cmd = if req.for_cas {
                RawCommand::AtomicStore
            } else {
                RawCommand::BatchDelete
            };
            check_api_version(self.api_version, ctx, cmd, keys())?;
            let cf = resolve_cf(&req.cf, self.api_version)?;
            if !req.for_cas {
                check_key_size(keys(), self.max_key_size)?;
            }
            Ok(cf)
        };
        match admit() {
            Ok(cf) => {
                for key in &req.keys {
                    self.cfs[cf.index()].remove(&key[..]);
                }
                RawBatchDeleteResponse::default()
            }
            Err(err) => RawBatchDeleteResponse {
                error: err.to_string(),
                ..RawBatchDeleteResponse::default()
            },
        }
    }

    /// Scans one range in either direction, returning at most `limit` pairs
    ///
    /// Forward scans `[start_key, end_key)` upward; reverse scans `[end_key, start_key)`
    /// downward. An empty `end_key` is unbounded. With `key_only` values come back empty.
    /// TiKV has no upper bound on `limit` (client-go caps it at 10240 on its side).
    pub fn raw_scan(&self, req: &RawScanRequest, now_ms: u64) -> RawScanResponse {
        let end_key = (!req.end_key.is_empty()).then_some(&req.end_key[..]);
        let read = || -> Result<_, RawError> {
            check_api_version_ranges(
                self.api_version,
                req.context.as_ref(),
                RawCommand::Scan,
                [(&req.start_key[..], end_key)],
            )?;
            let cf = resolve_cf(&req.cf, self.api_version)?;
            let scan = Scan {
                cf,
                start_key: &req.start_key,
                end_key,
                limit: req.limit as usize,
                key_only: req.key_only,
                reverse: req.reverse,
            };
            Ok(self.scan(&scan, now_ms))
        };
        RawScanResponse {
            kvs: pairs_or_error(read()),
            ..RawScanResponse::default()
        }
    }

    /// Scans several ranges, returning at most `each_limit` pairs from each, concatenated
    ///
    /// An empty end key means "up to the next range's start" (unbounded for the last range).
    /// Ranges that are empty or point against the scan direction are refused.
    pub fn raw_batch_scan(&self, req: &RawBatchScanRequest, now_ms: u64) -> RawBatchScanResponse {
        let read = || -> Result<_, RawError> {
            // TiKV passes the end keys as given, so an empty end is unbounded to this check.
            let ranges = req
                .ranges
                .iter()
                .map(|r| (&r.start_key[..], Some(&r.end_key[..])));
            let ctx = req.context.as_ref();
            check_api_version_ranges(self.api_version, ctx, RawCommand::BatchScan, ranges)?;
            let cf = resolve_cf(&req.cf, self.api_version)?;
            let mut kvs = Vec::new();
            for (i, range) in req.ranges.iter().enumerate() {
                let end_key = match (&range.end_key[..], req.ranges.get(i + 1)) {
                    ([], Some(next)) => Some(&next.start_key[..]),
                    ([], None) => None,
                    (end, _) => Some(end),
                };
                let pointing_wrong_way = end_key.is_some_and(|end| {
                    if req.reverse {
                        range.start_key[..] <= *end
                    } else {
                        range.start_key[..] >= *end
                    }
                });
                if pointing_wrong_way {
                    return Err(RawError::InvalidKeyRanges);
                }
                let scan = Scan {
                    cf,
                    start_key: &range.start_key,
                    end_key,
                    limit: req.each_limit as usize,
                    key_only: req.key_only,
                    reverse: req.reverse,
                };
                kvs.extend(self.scan(&scan, now_ms));
            }
            Ok(kvs)
        };
        RawBatchScanResponse {
            kvs: pairs_or_error(read()),
            ..RawBatchScanResponse::default()
        }
    }

    /// Deletes every key in `[start_key, end_key)`; an empty end key runs to the end.
    pub fn raw_delete_range(
        &mut self,
        req: &RawDeleteRangeRequest,
        _now_ms: u64,
    ) -> RawDeleteRangeResponse {
        let admit = || -> Result<_, RawError> {
            check_key_size([&req.start_key[..], &req.end_key[..]], self.max_key_size)?;
            check_api_version_ranges(
                self.api_version,
                req.context.as_ref(),
                RawCommand::DeleteRange,
                [(&req.start_key[..], Some(&req.end_key[..]))],
            )?;
            let cf = resolve_cf(&req.cf, self.api_version)?;
            // Raft apply refuses an inverted or empty range.
            if !req.end_key.is_empty() && req.start_key >= req.end_key {
                return Err(RawError::InvalidDeleteRange {
                    start_key: req.start_key.to_vec(),
                    end_key: req.end_key.to_vec(),
                });
            }
            Ok(cf)
        };
        match admit() {
            Ok(cf) => {
                let end_key = (!req.end_key.is_empty()).then_some(&req.end_key[..]);
                let map = &mut self.cfs[cf.index()];
                let doomed: Vec<Bytes> = key_range(map, &req.start_key, end_key)
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in doomed {
                    map.remove(&key);
                }
                RawDeleteRangeResponse::default()
            }
            Err(err) => RawDeleteRangeResponse {
                error: err.to_string(),
                ..RawDeleteRangeResponse::default()
            },
        }
    }

    /// Reports a key's remaining TTL in whole seconds, rounded up
    ///
    /// `ttl = 0` means the key has no TTL; `not_found` means absent or expired. Only V1TTL and
    /// V2 stores keep TTLs.
    pub fn raw_get_key_ttl(&self, req: &RawGetKeyTtlRequest, now_ms: u64) -> RawGetKeyTtlResponse {
        let read = || -> Result<_, RawError> {
            let ctx = req.context.as_ref();
            check_api_version(self.api_version, ctx, RawCommand::GetKeyTtl, [&req.key[..]])?;
            let cf = resolve_cf(&req.cf, self.api_version)?;
            if !ttl_enabled(self.api_version) {
                return Err(RawError::TtlNotSupported);
            }
            let remaining = self
                .live(cf, &req.key, now_ms)
                .map(|cell| match cell.expire_at_ms {
                    // A live key has at least one millisecond left, so this is never 0.
                    Some(expire_at_ms) => (expire_at_ms - now_ms).div_ceil(1000),
                    None => 0,
                });
            Ok(remaining)
        };
        match read() {
            Ok(Some(ttl)) => RawGetKeyTtlResponse {
                ttl,
                ..RawGetKeyTtlResponse::default()
            },
            Ok(None) => RawGetKeyTtlResponse {
                not_found: true,
                ..RawGetKeyTtlResponse::default()
            },
            Err(err) => RawGetKeyTtlResponse {
                error: err.to_string(),
                ..RawGetKeyTtlResponse::default()
            },
        }
    }

    /// Writes or deletes a key if its current value is the expected one (compare-and-swap)
    ///
    /// The expectation is "absent" when `previous_not_exist` is set, else `previous_value`.
    /// The answer always carries what was there before (`previous_not_exist` or
    /// `previous_value`) and `succeed`; `delete` removes the key instead of writing `value`.
    /// Atomic: nothing runs between the read and the write.
    pub fn raw_compare_and_swap(&mut self, req: &RawCasRequest, now_ms: u64) -> RawCasResponse {
        let admit = || -> Result<_, RawError> {
            let ctx = req.context.as_ref();
            check_api_version(
                self.api_version,
                ctx,
                RawCommand::CompareAndSwap,
                [&req.key[..]],
            )?;
            let cf = resolve_cf(&req.cf, self.api_version)?;
            self.check_ttls(1, &[req.ttl])?;
            Ok(cf)
        };
        let cf = match admit() {
            Ok(cf) => cf,
            Err(err) => {
                return RawCasResponse {
                    error: err.to_string(),
                    ..RawCasResponse::default()
                };
            }
        };
        let previous = self
            .live(cf, &req.key, now_ms)
            .map(|cell| cell.value.clone());
        let expected = (!req.previous_not_exist).then_some(&req.previous_value);
        let succeed = previous.as_ref() == expected;
        if succeed {
            if !req.delete {
                self.put(cf, req.key.clone(), req.value.clone(), req.ttl, now_ms);
            } else if previous.is_some() {
                self.cfs[cf.index()].remove(&req.key[..]);
            }
        }
        RawCasResponse {
            succeed,
            previous_not_exist: previous.is_none(),
            previous_value: previous.unwrap_or_default(),
            ..RawCasResponse::default()
        }
    }

    /// Returns the checksum, pair count and byte count of the `default` family over the ranges
    ///
    /// The checksum XORs the CRC-64/ECMA of key‖value of every live pair; bytes count keys
    /// plus values. An empty end key is unbounded. Only `Crc64Xor` is known; other column
    /// families are never summed, as in TiKV.
    pub fn raw_checksum(&self, req: &RawChecksumRequest, now_ms: u64) -> RawChecksumResponse {
        let sum = || -> Result<_, RawError> {
            if ChecksumAlgorithm::try_from(req.algorithm) != Ok(ChecksumAlgorithm::Crc64Xor) {
                return Err(RawError::UnknownChecksumAlgorithm(req.algorithm));
            }
            let ranges = req
                .ranges
                .iter()
                .map(|r| (&r.start_key[..], Some(&r.end_key[..])));
            let ctx = req.context.as_ref();
            check_api_version_ranges(self.api_version, ctx, RawCommand::Checksum, ranges)?;
            let map = &self.cfs[ColumnFamily::Default.index()];
            let mut total = RawChecksumResponse::default();
            for range in &req.ranges {
                let end_key = (!range.end_key.is_empty()).then_some(&range.end_key[..]);
                for (key, cell) in key_range(map, &range.start_key, end_key) {
                    if cell.is_live(now_ms) {
                        total.checksum ^= pair_checksum(key, &cell.value);
                        total.total_kvs += 1;
                        total.total_bytes += (key.len() + cell.value.len()) as u64;
                    }
                }
            }
            Ok(total)
        };
        sum().unwrap_or_else(|err| RawChecksumResponse {
            error: err.to_string(),
            ..RawChecksumResponse::default()
        })
    }

    /// Returns the API version the store serves.
    pub fn api_version(&self) -> ApiVersion {
        self.api_version
    }

    /// Returns the maximum key size writes are held to.
    pub fn max_key_size(&self) -> usize {
        self.max_key_size
    }

    /// Live keys, their bytes and the middle key in `[start, end)` (empty end = unbounded)
    /// over every column family at `now_ms`.
    pub fn range_stats(&self, start: &[u8], end: &[u8], now_ms: u64) -> RangeStats {
        let mut stats = RangeStats::default();
        let mut keys = Vec::new();
        for cf in &self.cfs {
            let upper = if end.is_empty() {
                Bound::Unbounded
            } else {
                Bound::Excluded(end)
            };
            for (key, cell) in cf.range::<[u8], _>((Bound::Included(start), upper)) {
                if cell.is_live(now_ms) {
                    stats.keys += 1;
                    stats.bytes += (key.len() + cell.value.len()) as u64;
                    keys.push(key.clone());
                }
            }
        }
        keys.sort();
        stats.middle_key = keys.get(keys.len() / 2).cloned();
        stats
    }

    /// Every live entry in `[start, end)` (empty end = unbounded) over all column families
    /// at `now_ms`, in key order with keys as stored, as TiKV's split checker scans them:
    /// key and value bytes, never a committed version (raw data lives outside the write CF,
    /// so it splits regions by size only).
    pub fn split_check_entries(
        &self,
        start: &[u8],
        end: &[u8],
        now_ms: u64,
    ) -> Vec<crate::cluster::SplitEntry> {
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        let mut entries: Vec<crate::cluster::SplitEntry> = self
            .cfs
            .iter()
            .flat_map(|cf| cf.range::<[u8], _>((Bound::Included(start), upper)))
            .filter(|(_, cell)| cell.is_live(now_ms))
            .map(|(key, cell)| crate::cluster::SplitEntry {
                key: key.clone(),
                size: (key.len() + cell.value.len()) as u64,
                commit_version: false,
            })
            .collect();
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        entries
    }

    /// Counts the keys of a column family visible at `now_ms`.
    pub fn live_key_count(&self, cf: ColumnFamily, now_ms: u64) -> usize {
        self.cfs[cf.index()]
            .values()
            .filter(|cell| cell.is_live(now_ms))
            .count()
    }

    /// Returns the cell of a key if it is visible at `now_ms`.
    fn live(&self, cf: ColumnFamily, key: &[u8], now_ms: u64) -> Option<&Cell> {
        self.cfs[cf.index()]
            .get(key)
            .filter(|cell| cell.is_live(now_ms))
    }

    /// Stores a value, turning a TTL in seconds into an expiry instant.
    fn put(&mut self, cf: ColumnFamily, key: Bytes, value: Bytes, ttl: u64, now_ms: u64) {
        let expire_at_ms = (ttl != 0).then(|| now_ms.saturating_add(ttl.saturating_mul(1000)));
        self.cfs[cf.index()].insert(
            key,
            Cell {
                value,
                expire_at_ms,
            },
        );
    }

    /// Applies TiKV's TTL admission for writes
    ///
    /// TTLs need a TTL store, and a TTL store needs one per key (after a single TTL has been
    /// spread over the batch).
    fn check_ttls(&self, key_count: usize, ttls: &[u64]) -> Result<(), RawError> {
        if !ttl_enabled(self.api_version) {
            if ttls.iter().any(|&ttl| ttl != 0) {
                return Err(RawError::TtlNotEnabled);
            }
        } else if ttls.len() != key_count {
            return Err(RawError::TtlLenNotEqualsToPairs);
        }
        Ok(())
    }

    /// Runs one bounded scan in either direction, skipping expired keys.
    fn scan(&self, scan: &Scan<'_>, now_ms: u64) -> Vec<KvPair> {
        let map = &self.cfs[scan.cf.index()];
        let live = |(_, cell): &(&Bytes, &Cell)| cell.is_live(now_ms);
        let to_pair = |(key, cell): (&Bytes, &Cell)| {
            let value = if scan.key_only {
                Bytes::new()
            } else {
                cell.value.clone()
            };
            pair(key.clone(), value)
        };
        if scan.reverse {
            // Reverse: start_key is the exclusive upper bound, end_key the inclusive lower one.
            let lower = scan.end_key.map_or(Bound::Unbounded, Bound::Included);
            bounded(map, lower, Bound::Excluded(scan.start_key))
                .rev()
                .filter(live)
                .take(scan.limit)
                .map(to_pair)
                .collect()
        } else {
            key_range(map, scan.start_key, scan.end_key)
                .filter(live)
                .take(scan.limit)
                .map(to_pair)
                .collect()
        }
    }
}

/// The parameters of one scan, after admission.
struct Scan<'a> {
    /// Column family scanned.
    cf: ColumnFamily,
    /// Where the scan begins (inclusive forward, exclusive reverse).
    start_key: &'a [u8],
    /// Where it stops (exclusive forward, inclusive reverse); `None` is unbounded.
    end_key: Option<&'a [u8]>,
    /// Most pairs returned.
    limit: usize,
    /// Whether to leave values out.
    key_only: bool,
    /// Whether to go downward.
    reverse: bool,
}

/// The entries of `[start, end)` in key order (`end = None`: to the last key).
fn key_range<'m>(
    map: &'m BTreeMap<Bytes, Cell>,
    start: &[u8],
    end: Option<&[u8]>,
) -> std::collections::btree_map::Range<'m, Bytes, Cell> {
    bounded(
        map,
        Bound::Included(start),
        end.map_or(Bound::Unbounded, Bound::Excluded),
    )
}

/// The entries between two bounds, or none when the bounds cross
///
/// `BTreeMap::range` would panic on crossed bounds; a scan just finds nothing there.
fn bounded<'m>(
    map: &'m BTreeMap<Bytes, Cell>,
    lower: Bound<&[u8]>,
    upper: Bound<&[u8]>,
) -> std::collections::btree_map::Range<'m, Bytes, Cell> {
    let crossed = match (lower, upper) {
        (Bound::Included(lo), Bound::Excluded(hi) | Bound::Included(hi)) => lo > hi,
        (Bound::Excluded(lo), Bound::Excluded(hi) | Bound::Included(hi)) => lo >= hi,
        _ => false,
    };
    if crossed {
        return map.range::<[u8], _>((Bound::Included(&[][..]), Bound::Excluded(&[][..])));
    }
    map.range::<[u8], _>((lower, upper))
}

/// A result pair with no error.
fn pair(key: Bytes, value: Bytes) -> KvPair {
    KvPair {
        key,
        value,
        ..KvPair::default()
    }
}

/// The pairs of a read, or TiKV's one-pair answer carrying the error.
fn pairs_or_error(result: Result<Vec<KvPair>, RawError>) -> Vec<KvPair> {
    result.unwrap_or_else(|err| {
        vec![KvPair {
            error: Some(Box::new(err.key_error())),
            ..KvPair::default()
        }]
    })
}

#[cfg(test)]
mod tests;
