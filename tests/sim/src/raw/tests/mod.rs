//! Tests of the raw store: a harness that talks to it the way a client does, then the ported
//! client-go suites, TiKV's semantics, the admission checks, and a model-based property test.

mod admission;
mod model;
mod ported;
mod semantics;

use bytes::Bytes;
use tikv_proto::kvrpcpb::{
    ApiVersion, Context, KeyRange, KvPair, RawBatchDeleteRequest, RawBatchGetRequest,
    RawBatchPutRequest, RawBatchScanRequest, RawCasRequest, RawChecksumRequest,
    RawDeleteRangeRequest, RawDeleteRequest, RawGetKeyTtlRequest, RawGetRequest, RawPutRequest,
    RawScanRequest,
};

use super::RawStore;

/// The keyspace prefix of keyspace 0 in API V2.
const V2_PREFIX: &[u8] = b"r\0\0\0";
/// The first key after keyspace 0's raw range.
const V2_END: &[u8] = b"r\0\0\x01";

/// The three store flavours, each with the API version its clients stamp on requests.
const MODES: [ApiVersion; 3] = [ApiVersion::V1, ApiVersion::V1ttl, ApiVersion::V2];

/// A store plus a client's view of it: keys are prefixed for V2 the way client-go's codec
/// does, the clock is explicit, and every helper asserts that the store reported no error.
struct Harness {
    store: RawStore,
    now_ms: u64,
    cf: String,
}

/// One scan as the helpers take it; empty keys mean "unbounded" as in client-go.
#[derive(Clone, Copy)]
struct ScanArgs<'a> {
    start: &'a str,
    end: &'a str,
    limit: u32,
    key_only: bool,
    reverse: bool,
}

impl<'a> ScanArgs<'a> {
    fn forward(start: &'a str, end: &'a str, limit: u32) -> Self {
        Self {
            start,
            end,
            limit,
            key_only: false,
            reverse: false,
        }
    }

    fn reverse(start: &'a str, end: &'a str, limit: u32) -> Self {
        Self {
            start,
            end,
            limit,
            key_only: false,
            reverse: true,
        }
    }

    fn key_only(self) -> Self {
        Self {
            key_only: true,
            ..self
        }
    }
}

impl Harness {
    fn new(api_version: ApiVersion) -> Self {
        Self {
            store: RawStore::new(api_version),
            now_ms: 1_000_000,
            cf: String::new(),
        }
    }

    fn with_cf(mut self, cf: &str) -> Self {
        self.cf = cf.to_owned();
        self
    }

    fn v2(&self) -> bool {
        self.store.api_version() == ApiVersion::V2
    }

    /// The context a client of this store sends: V1TTL stores are spoken to as V1.
    fn ctx(&self) -> Option<Context> {
        let stamped = match self.store.api_version() {
            ApiVersion::V2 => ApiVersion::V2,
            _ => ApiVersion::V1,
        };
        Some(Context {
            api_version: stamped as i32,
            ..Context::default()
        })
    }

    fn key(&self, key: &str) -> Bytes {
        let mut out = if self.v2() {
            V2_PREFIX.to_vec()
        } else {
            Vec::new()
        };
        out.extend_from_slice(key.as_bytes());
        out.into()
    }

    /// A range end as client-go's codec sends it: empty is the keyspace end in V2.
    fn end_key(&self, key: &str) -> Bytes {
        match (key.is_empty(), self.v2()) {
            (true, true) => Bytes::from_static(V2_END),
            (true, false) => Bytes::new(),
            (false, _) => self.key(key),
        }
    }

    /// A reverse scan's lower bound: empty is the keyspace start in V2.
    fn lower_key(&self, key: &str) -> Bytes {
        match (key.is_empty(), self.v2()) {
            (true, true) => Bytes::from_static(V2_PREFIX),
            _ => self.end_key(key),
        }
    }

    fn user_key(&self, key: &[u8]) -> String {
        let key = if self.v2() {
            key.strip_prefix(V2_PREFIX).unwrap_or(key)
        } else {
            key
        };
        String::from_utf8_lossy(key).into_owned()
    }

    fn advance_ms(&mut self, ms: u64) {
        self.now_ms += ms;
    }

    fn try_put_ttl(&mut self, key: &str, value: &str, ttl: u64) -> String {
        let req = RawPutRequest {
            context: self.ctx(),
            key: self.key(key),
            value: Bytes::copy_from_slice(value.as_bytes()),
            cf: self.cf.clone(),
            ttl,
            ..RawPutRequest::default()
        };
        self.store.raw_put(&req, self.now_ms).error
    }

    fn put(&mut self, key: &str, value: &str) {
        assert_eq!(self.try_put_ttl(key, value, 0), "");
    }

    fn put_ttl(&mut self, key: &str, value: &str, ttl: u64) {
        assert_eq!(self.try_put_ttl(key, value, ttl), "");
    }

    fn get(&self, key: &str) -> Option<String> {
        let req = RawGetRequest {
            context: self.ctx(),
            key: self.key(key),
            cf: self.cf.clone(),
        };
        let resp = self.store.raw_get(&req, self.now_ms);
        assert_eq!(resp.error, "");
        assert!(resp.region_error.is_none());
        if resp.not_found {
            assert!(resp.value.is_empty());
            None
        } else {
            Some(String::from_utf8_lossy(&resp.value).into_owned())
        }
    }

    fn delete(&mut self, key: &str) {
        let req = RawDeleteRequest {
            context: self.ctx(),
            key: self.key(key),
            cf: self.cf.clone(),
            ..RawDeleteRequest::default()
        };
        assert_eq!(self.store.raw_delete(&req, self.now_ms).error, "");
    }

    fn batch_put(&mut self, pairs: &[(&str, &str)]) {
        let req = RawBatchPutRequest {
            context: self.ctx(),
            pairs: pairs.iter().map(|(k, v)| self.pair(k, v)).collect(),
            cf: self.cf.clone(),
            ..RawBatchPutRequest::default()
        };
        assert_eq!(self.store.raw_batch_put(&req, self.now_ms).error, "");
    }

    fn pair(&self, key: &str, value: &str) -> KvPair {
        KvPair {
            key: self.key(key),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..KvPair::default()
        }
    }

    fn batch_get(&self, keys: &[&str]) -> Vec<(String, String)> {
        let req = RawBatchGetRequest {
            context: self.ctx(),
            keys: keys.iter().map(|k| self.key(k)).collect(),
            cf: self.cf.clone(),
        };
        self.pairs(self.store.raw_batch_get(&req, self.now_ms).pairs)
    }

    fn batch_delete(&mut self, keys: &[&str]) {
        let req = RawBatchDeleteRequest {
            context: self.ctx(),
            keys: keys.iter().map(|k| self.key(k)).collect(),
            cf: self.cf.clone(),
            ..RawBatchDeleteRequest::default()
        };
        assert_eq!(self.store.raw_batch_delete(&req, self.now_ms).error, "");
    }

    fn scan_request(&self, args: ScanArgs<'_>) -> RawScanRequest {
        RawScanRequest {
            context: self.ctx(),
            start_key: self.key(args.start),
            end_key: if args.reverse {
                self.lower_key(args.end)
            } else {
                self.end_key(args.end)
            },
            limit: args.limit,
            key_only: args.key_only,
            cf: self.cf.clone(),
            reverse: args.reverse,
        }
    }

    fn scan_with(&self, args: ScanArgs<'_>) -> Vec<(String, String)> {
        let req = self.scan_request(args);
        self.pairs(self.store.raw_scan(&req, self.now_ms).kvs)
    }

    fn scan(&self, start: &str, end: &str, limit: u32) -> Vec<(String, String)> {
        self.scan_with(ScanArgs::forward(start, end, limit))
    }

    fn reverse_scan(&self, start: &str, end: &str, limit: u32) -> Vec<(String, String)> {
        self.scan_with(ScanArgs::reverse(start, end, limit))
    }

    fn scan_keys(&self, start: &str, end: &str, limit: u32) -> Vec<String> {
        self.scan(start, end, limit)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    fn batch_scan(
        &self,
        ranges: &[(&str, &str)],
        each_limit: u32,
        reverse: bool,
    ) -> Vec<(String, String)> {
        let req = RawBatchScanRequest {
            context: self.ctx(),
            ranges: ranges
                .iter()
                .map(|(s, e)| KeyRange {
                    start_key: self.key(s),
                    end_key: self.end_key(e),
                })
                .collect(),
            each_limit,
            key_only: false,
            cf: self.cf.clone(),
            reverse,
        };
        self.pairs(self.store.raw_batch_scan(&req, self.now_ms).kvs)
    }

    fn try_delete_range(&mut self, start: &str, end: &str) -> String {
        let req = RawDeleteRangeRequest {
            context: self.ctx(),
            start_key: self.key(start),
            end_key: self.end_key(end),
            cf: self.cf.clone(),
        };
        self.store.raw_delete_range(&req, self.now_ms).error
    }

    fn delete_range(&mut self, start: &str, end: &str) {
        assert_eq!(self.try_delete_range(start, end), "");
    }

    /// Compare-and-swap: `previous = None` expects the key to be absent. Returns `succeed`
    /// and the value that was there.
    fn cas(&mut self, key: &str, previous: Option<&str>, value: &str) -> (bool, Option<String>) {
        let req = self.cas_request(key, previous, value);
        self.run_cas(&req)
    }

    fn cas_request(&self, key: &str, previous: Option<&str>, value: &str) -> RawCasRequest {
        RawCasRequest {
            context: self.ctx(),
            key: self.key(key),
            value: Bytes::copy_from_slice(value.as_bytes()),
            previous_not_exist: previous.is_none(),
            previous_value: Bytes::copy_from_slice(previous.unwrap_or("").as_bytes()),
            cf: self.cf.clone(),
            ..RawCasRequest::default()
        }
    }

    fn run_cas(&mut self, req: &RawCasRequest) -> (bool, Option<String>) {
        let resp = self.store.raw_compare_and_swap(req, self.now_ms);
        assert_eq!(resp.error, "");
        if resp.previous_not_exist {
            assert!(resp.previous_value.is_empty());
            (resp.succeed, None)
        } else {
            (
                resp.succeed,
                Some(String::from_utf8_lossy(&resp.previous_value).into_owned()),
            )
        }
    }

    /// Remaining TTL: `None` when not found.
    fn ttl(&self, key: &str) -> Option<u64> {
        let req = RawGetKeyTtlRequest {
            context: self.ctx(),
            key: self.key(key),
            cf: self.cf.clone(),
        };
        let resp = self.store.raw_get_key_ttl(&req, self.now_ms);
        assert_eq!(resp.error, "");
        (!resp.not_found).then_some(resp.ttl)
    }

    /// (checksum, total_kvs, total_bytes) over the ranges.
    fn checksum(&self, ranges: &[(&str, &str)]) -> (u64, u64, u64) {
        let req = RawChecksumRequest {
            context: self.ctx(),
            algorithm: 0,
            ranges: ranges
                .iter()
                .map(|(s, e)| KeyRange {
                    start_key: self.key(s),
                    end_key: self.end_key(e),
                })
                .collect(),
        };
        let resp = self.store.raw_checksum(&req, self.now_ms);
        assert_eq!(resp.error, "");
        (resp.checksum, resp.total_kvs, resp.total_bytes)
    }

    /// Unwraps result pairs, asserting none carries an error.
    fn pairs(&self, pairs: Vec<KvPair>) -> Vec<(String, String)> {
        pairs
            .into_iter()
            .map(|pair| {
                assert_eq!(pair.error, None, "unexpected key error");
                let value = String::from_utf8_lossy(&pair.value).into_owned();
                (self.user_key(&pair.key), value)
            })
            .collect()
    }
}

/// Builds the expected list of pairs from string literals.
fn kvs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A single-key delete request, plain or `for_cas`.
fn delete_request(h: &Harness, key: &str, for_cas: bool) -> RawDeleteRequest {
    RawDeleteRequest {
        context: h.ctx(),
        key: h.key(key),
        cf: h.cf.clone(),
        for_cas,
    }
}
