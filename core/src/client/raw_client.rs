//! The raw KV client: client-go's `rawkv.Client`, the Rust way.
//!
//! Ranges are Rust ranges (`"a".."z"`, `"a"..`, `..="k"`, `(Bound, Bound)`), TTLs are
//! [`Duration`]s, and results are named types ([`KeyTtl`], [`CasOutcome`]).
//!
//! ```no_run
//! # async fn demo(client: tikv_core::RawClient) -> Result<(), tikv_core::Error> {
//! use std::time::Duration;
//! use tikv_core::{ColumnFamily, KeyTtl};
//!
//! client.put("k1", "v1").await?;
//! assert_eq!(client.get("k1").await?.as_deref(), Some(&b"v1"[..]));
//! let pairs = client.scan("a".."z", 10).await?;
//! client.put_with_ttl("session", "token", Duration::from_secs(60)).await?;
//! if let Some(KeyTtl::Remaining(left)) = client.get_key_ttl("session").await? {
//!     println!("expires in {left:?}");
//! }
//! client.with_cf(ColumnFamily::Write).delete("k1").await?;
//! # let _ = pairs;
//! # Ok(()) }
//! ```

use std::ops::RangeBounds;
use std::time::Duration;

use bytes::Bytes;

use super::KeyRange;
use super::regions::Regions;
use crate::command::{KeyLocation, KeyMode, PdCommand, RawChecksum, RawCommand, SplitOutcome};
use crate::driver::Handle;
use crate::error::Error;

/// A key-value pair returned by scans.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KvPair {
    /// The key.
    pub key: Bytes,
    /// The value (empty for key-only scans).
    pub value: Bytes,
}

/// One of TiKV's column families, which raw KV can address separately (client-go's
/// `rawkv.SetColumnFamily`): the same key holds independent values in each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ColumnFamily {
    /// `default`, where raw KV keeps values unless told otherwise.
    #[default]
    Default,
    /// `lock`, where transactions keep their locks.
    Lock,
    /// `write`, where transactions keep their commit records.
    Write,
}

impl ColumnFamily {
    /// The column family's name in TiKV (`"default"`, `"lock"`, `"write"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Lock => "lock",
            Self::Write => "write",
        }
    }

    /// The name a request carries: TiKV reads an empty name as `default`, which keeps the
    /// common case's requests as small as client-go's.
    fn wire_name(self) -> String {
        match self {
            Self::Default => String::new(),
            other => other.name().to_owned(),
        }
    }
}

impl std::fmt::Display for ColumnFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How long a key has left to live, as [`RawClient::get_key_ttl`] reports it for a key that
/// exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyTtl {
    /// The key was written without a TTL and never expires.
    Forever,
    /// The key expires after this long (whole seconds, as TiKV counts; at least one second,
    /// since TiKV reports a key whose time is up as absent).
    Remaining(Duration),
}

impl KeyTtl {
    /// The time left, or `None` for a key that never expires.
    pub fn remaining(self) -> Option<Duration> {
        match self {
            Self::Forever => None,
            Self::Remaining(left) => Some(left),
        }
    }
}

/// What [`RawClient::compare_and_swap`] found and did.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CasOutcome {
    /// The key's value before the operation (`None`: the key was absent). When the swap did
    /// not happen, this is the value that made it fail.
    pub previous: Option<Bytes>,
    /// Whether the new value was written.
    pub swapped: bool,
}

/// A raw KV client. Cheap to clone; clones share one connection pool and driver.
///
/// Column family and atomic mode are per handle: [`with_cf`](Self::with_cf) and
/// [`with_atomic_for_cas`](Self::with_atomic_for_cas) return adjusted copies.
///
/// Methods that take a range accept any Rust range of keys (`"a".."z"`, `"a"..`, `..="k"`,
/// `(Bound<K>, Bound<K>)`, or a [`KeyRange`]), where a key is anything that is
/// `AsRef<[u8]>` (`&str`, `String`, `&[u8]`, `Vec<u8>`, `Bytes`). A range that holds no key
/// (`"b".."a"`, `"a".."a"`) reads and changes nothing. Where the range alone does not say
/// the key type, name it: `raw.scan::<[u8]>(.., 10)` for the whole key space, and
/// `raw.scan::<str>((Bound::Excluded("a"), Bound::Unbounded), 10)` for a pair of bounds. A
/// range of references to owned keys (`&a..&b`) fits two key types at once; write
/// `a.clone()..b.clone()` or `&a[..]..&b[..]` instead.
#[derive(Clone, Debug)]
pub struct RawClient {
    handle: Handle,
    cf: ColumnFamily,
    atomic: bool,
}

impl RawClient {
    /// A raw client driving requests through `handle`. The usual way to get one is
    /// [`Client::raw`](crate::Client::raw) on a client from `tikv_tokio::connect` or
    /// `tikv_async_std::connect`.
    pub fn new(handle: Handle) -> Self {
        Self {
            handle,
            cf: ColumnFamily::Default,
            atomic: false,
        }
    }

    /// A copy of this client reading and writing column family `cf`.
    #[must_use]
    pub fn with_cf(&self, cf: ColumnFamily) -> Self {
        Self { cf, ..self.clone() }
    }

    /// The column family this client uses.
    pub fn cf(&self) -> ColumnFamily {
        self.cf
    }

    /// A copy of this client with atomic mode on or off. Atomic mode makes puts and deletes
    /// serialize with compare-and-swap, and is required by [`compare_and_swap`](Self::compare_and_swap).
    #[must_use]
    pub fn with_atomic_for_cas(&self, atomic: bool) -> Self {
        Self {
            atomic,
            ..self.clone()
        }
    }

    /// The driver handle behind this client.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Reads `key`; `None` when it does not exist (an existing empty value is `Some("")`).
    ///
    /// Errors with [`Error::InvalidArgument`] for an empty key, or when the cluster cannot
    /// answer within the backoff budget.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>, Error> {
        let command = RawCommand::Get {
            key: key.into(),
            cf: self.cf.wire_name(),
        };
        self.handle.call(command.value_call()).await
    }

    /// Reads several keys; the result holds one entry per key, in order.
    ///
    /// Errors like [`get`](Self::get).
    pub async fn batch_get(
        &self,
        keys: impl IntoIterator<Item = impl Into<Bytes>>,
    ) -> Result<Vec<Option<Bytes>>, Error> {
        let command = RawCommand::BatchGet {
            keys: keys.into_iter().map(Into::into).collect(),
            cf: self.cf.wire_name(),
        };
        self.handle.call(command.values_call()).await
    }

    /// Writes `key`, to live until deleted.
    ///
    /// Errors like [`get`](Self::get).
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<(), Error> {
        self.put_secs(key.into(), value.into(), 0).await
    }

    /// Writes `key` to expire after `ttl`. TiKV counts TTLs in whole seconds, so `ttl` is
    /// rounded up to the next second.
    ///
    /// Errors with [`Error::InvalidArgument`] for a zero `ttl` (use [`put`](Self::put) for a
    /// key that never expires), on a cluster without TTL support (API V1; see
    /// [`ApiVersion`](crate::ApiVersion)), or like [`get`](Self::get).
    pub async fn put_with_ttl(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        ttl: Duration,
    ) -> Result<(), Error> {
        self.put_secs(key.into(), value.into(), ttl_secs(ttl)?)
            .await
    }

    async fn put_secs(&self, key: Bytes, value: Bytes, ttl_secs: u64) -> Result<(), Error> {
        let command = RawCommand::Put {
            key,
            value,
            ttl_secs,
            cf: self.cf.wire_name(),
            atomic: self.atomic,
        };
        self.handle.call(command.unit_call()).await
    }

    /// Writes several pairs, to live until deleted.
    ///
    /// Errors like [`put`](Self::put).
    pub async fn batch_put(
        &self,
        pairs: impl IntoIterator<Item = (impl Into<Bytes>, impl Into<Bytes>)>,
    ) -> Result<(), Error> {
        let pairs = pairs
            .into_iter()
            .map(|(key, value)| (key.into(), value.into()))
            .collect();
        self.batch_put_secs(pairs, Vec::new()).await
    }

    /// Writes several `(key, value, ttl)` triples, each to expire after its own TTL (rounded
    /// up to whole seconds, as in [`put_with_ttl`](Self::put_with_ttl)).
    ///
    /// Errors like [`put_with_ttl`](Self::put_with_ttl), for any triple.
    pub async fn batch_put_with_ttl(
        &self,
        entries: impl IntoIterator<Item = (impl Into<Bytes>, impl Into<Bytes>, Duration)>,
    ) -> Result<(), Error> {
        let entries = entries.into_iter();
        let mut pairs = Vec::with_capacity(entries.size_hint().0);
        let mut ttls_secs = Vec::with_capacity(entries.size_hint().0);
        for (key, value, ttl) in entries {
            pairs.push((key.into(), value.into()));
            ttls_secs.push(ttl_secs(ttl)?);
        }
        self.batch_put_secs(pairs, ttls_secs).await
    }

    async fn batch_put_secs(
        &self,
        pairs: Vec<(Bytes, Bytes)>,
        ttls_secs: Vec<u64>,
    ) -> Result<(), Error> {
        let command = RawCommand::BatchPut {
            pairs,
            ttls_secs,
            cf: self.cf.wire_name(),
            atomic: self.atomic,
        };
        self.handle.call(command.unit_call()).await
    }

    /// How long `key` has left to live: `None` when the key does not exist (or has expired),
    /// [`KeyTtl::Forever`] when it was written without a TTL, else
    /// [`KeyTtl::Remaining`].
    ///
    /// Errors like [`get`](Self::get).
    pub async fn get_key_ttl(&self, key: impl Into<Bytes>) -> Result<Option<KeyTtl>, Error> {
        let command = RawCommand::GetKeyTtl {
            key: key.into(),
            cf: self.cf.wire_name(),
        };
        let ttl = self.handle.call(command.ttl_call()).await?;
        // TiKV answers 0 for a key without TTL: a key with one has at least a second left,
        // or it would read as absent.
        Ok(ttl.map(|secs| match secs {
            0 => KeyTtl::Forever,
            secs => KeyTtl::Remaining(Duration::from_secs(secs)),
        }))
    }

    /// Deletes `key` (deleting a missing key succeeds).
    ///
    /// Errors like [`get`](Self::get).
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<(), Error> {
        let command = RawCommand::Delete {
            key: key.into(),
            cf: self.cf.wire_name(),
            atomic: self.atomic,
        };
        self.handle.call(command.unit_call()).await
    }

    /// Deletes several keys.
    ///
    /// Errors like [`get`](Self::get).
    pub async fn batch_delete(
        &self,
        keys: impl IntoIterator<Item = impl Into<Bytes>>,
    ) -> Result<(), Error> {
        let command = RawCommand::BatchDelete {
            keys: keys.into_iter().map(Into::into).collect(),
            cf: self.cf.wire_name(),
            atomic: self.atomic,
        };
        self.handle.call(command.unit_call()).await
    }

    /// Deletes every key in `range` (see [`RawClient`] for the forms a range takes), region
    /// by region; not atomic across regions.
    ///
    /// Errors when a region cannot be reached within the backoff budget; regions already
    /// done stay deleted.
    pub async fn delete_range<K: AsRef<[u8]> + ?Sized>(
        &self,
        range: impl RangeBounds<K>,
    ) -> Result<(), Error> {
        let Some(KeyRange { start_key, end_key }) = KeyRange::from_bounds(&range) else {
            return Ok(());
        };
        let command = RawCommand::DeleteRange {
            start: start_key,
            end: end_key,
            cf: self.cf.wire_name(),
        };
        self.handle.call(command.unit_call()).await
    }

    /// Up to `limit` pairs of `range` in ascending key order.
    ///
    /// Errors with [`Error::InvalidArgument`] when `limit` exceeds
    /// [`MAX_RAW_SCAN_LIMIT`](crate::MAX_RAW_SCAN_LIMIT), or when a region cannot be read
    /// within the backoff budget.
    pub async fn scan<K: AsRef<[u8]> + ?Sized>(
        &self,
        range: impl RangeBounds<K>,
        limit: u32,
    ) -> Result<Vec<KvPair>, Error> {
        self.scan_inner(&range, limit, false, false).await
    }

    /// Like [`scan`](Self::scan), returning keys only.
    ///
    /// Errors like [`scan`](Self::scan).
    pub async fn scan_keys<K: AsRef<[u8]> + ?Sized>(
        &self,
        range: impl RangeBounds<K>,
        limit: u32,
    ) -> Result<Vec<Bytes>, Error> {
        let pairs = self.scan_inner(&range, limit, true, false).await?;
        Ok(pairs.into_iter().map(|pair| pair.key).collect())
    }

    /// Up to `limit` pairs of `range` in descending key order: the range is written low to
    /// high, as for [`scan`](Self::scan), and read from its upper end down. `"a".."k"`
    /// returns the keys below `"k"` first, down to `"a"` included (client-go's
    /// `ReverseScan("k", "a", limit)`).
    ///
    /// Errors with [`Error::InvalidArgument`] for a range without an upper bound outside a
    /// keyspace (API V1: TiKV would read it as "below every key" and return nothing; with
    /// API V2 it means the end of the keyspace), or like [`scan`](Self::scan).
    pub async fn reverse_scan<K: AsRef<[u8]> + ?Sized>(
        &self,
        range: impl RangeBounds<K>,
        limit: u32,
    ) -> Result<Vec<KvPair>, Error> {
        self.scan_inner(&range, limit, false, true).await
    }

    /// Like [`reverse_scan`](Self::reverse_scan), returning keys only.
    ///
    /// Errors like [`reverse_scan`](Self::reverse_scan).
    pub async fn reverse_scan_keys<K: AsRef<[u8]> + ?Sized>(
        &self,
        range: impl RangeBounds<K>,
        limit: u32,
    ) -> Result<Vec<Bytes>, Error> {
        let pairs = self.scan_inner(&range, limit, true, true).await?;
        Ok(pairs.into_iter().map(|pair| pair.key).collect())
    }

    async fn scan_inner<K: AsRef<[u8]> + ?Sized>(
        &self,
        range: &impl RangeBounds<K>,
        limit: u32,
        key_only: bool,
        reverse: bool,
    ) -> Result<Vec<KvPair>, Error> {
        let Some(KeyRange { start_key, end_key }) = KeyRange::from_bounds(range) else {
            return Ok(Vec::new());
        };
        // The machine takes client-go's reverse form: from `start` (exclusive) down to
        // `end` (inclusive).
        let (start, end) = if reverse {
            (end_key, start_key)
        } else {
            (start_key, end_key)
        };
        let command = RawCommand::Scan {
            start,
            end,
            limit,
            key_only,
            reverse,
            cf: self.cf.wire_name(),
        };
        let pairs = self.handle.call(command.pairs_call()).await?;
        Ok(pairs
            .into_iter()
            .map(|(key, value)| KvPair { key, value })
            .collect())
    }

    /// Atomically sets `key` to `value` if its current value is `previous` (`None`: if the
    /// key is absent). Returns the value before and whether the swap happened.
    ///
    /// Errors with [`Error::InvalidArgument`] unless the client is in atomic mode
    /// ([`with_atomic_for_cas`](Self::with_atomic_for_cas)), or like [`get`](Self::get).
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Bytes>,
        previous: Option<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<CasOutcome, Error> {
        let command = RawCommand::CompareAndSwap {
            key: key.into(),
            previous,
            value: value.into(),
            cf: self.cf.wire_name(),
            atomic: self.atomic,
        };
        let (previous, swapped) = self.handle.call(command.swap_call()).await?;
        Ok(CasOutcome { previous, swapped })
    }

    /// CRC-64 XOR checksum, pair count and byte count of `range` (the default column family;
    /// an empty range sums to zero).
    ///
    /// Errors when a region cannot be reached within the backoff budget.
    pub async fn checksum<K: AsRef<[u8]> + ?Sized>(
        &self,
        range: impl RangeBounds<K>,
    ) -> Result<RawChecksum, Error> {
        let Some(KeyRange { start_key, end_key }) = KeyRange::from_bounds(&range) else {
            return Ok(RawChecksum::default());
        };
        let command = RawCommand::Checksum {
            start: start_key,
            end: end_key,
        };
        self.handle.call(command.checksum_call()).await
    }
}

/// Rounds `ttl` up to TiKV's whole seconds.
///
/// Errors with [`Error::InvalidArgument`] for zero, which TiKV would read as "no TTL".
fn ttl_secs(ttl: Duration) -> Result<u64, Error> {
    if ttl.is_zero() {
        return Err(Error::InvalidArgument(
            "a TTL must be positive: write without one to keep the key until deleted".to_owned(),
        ));
    }
    Ok(ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0)))
}

impl RawClient {
    /// The id of the cluster (client-go's `rawkv.Client.ClusterID`).
    ///
    /// Errors when PD cannot be reached within its backoff budget.
    pub async fn cluster_id(&self) -> Result<u64, Error> {
        self.handle.call(PdCommand::cluster_id()).await
    }

    /// Region tools (locate, split, scatter) in the raw key space.
    pub fn regions(&self) -> Regions {
        Regions::new(self.handle.clone(), KeyMode::Raw)
    }

    /// The region holding `key`, in the raw key space; see [`Regions::locate_key`].
    ///
    /// Errors as [`Regions::locate_key`].
    pub async fn locate_key(&self, key: impl Into<Bytes>) -> Result<KeyLocation, Error> {
        self.regions().locate_key(key).await
    }

    /// Region `region_id` with raw-key boundaries; see [`Regions::locate_region_by_id`].
    ///
    /// Errors as [`Regions::locate_region_by_id`].
    pub async fn locate_region_by_id(&self, region_id: u64) -> Result<KeyLocation, Error> {
        self.regions().locate_region_by_id(region_id).await
    }

    /// Every region overlapping a raw key range; see [`Regions::locate_range`].
    ///
    /// Errors as [`Regions::locate_range`].
    pub async fn locate_range<K: AsRef<[u8]> + ?Sized>(
        &self,
        range: impl RangeBounds<K>,
    ) -> Result<Vec<KeyLocation>, Error> {
        self.regions().locate_range(range).await
    }

    /// Splits the regions holding raw `keys`; see [`Regions::split_regions`].
    ///
    /// Errors as [`Regions::split_regions`].
    pub async fn split_regions(
        &self,
        keys: impl IntoIterator<Item = impl Into<Bytes>>,
        scatter: bool,
    ) -> Result<SplitOutcome, Error> {
        self.regions().split_regions(keys, scatter).await
    }

    /// [`split_regions`](Self::split_regions) with a scatter group; see
    /// [`Regions::split_regions_in_group`].
    ///
    /// Errors as [`Regions::split_regions`].
    pub async fn split_regions_in_group(
        &self,
        keys: impl IntoIterator<Item = impl Into<Bytes>>,
        scatter: bool,
        group: impl Into<String>,
    ) -> Result<SplitOutcome, Error> {
        self.regions()
            .split_regions_in_group(keys, scatter, group)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_seconds_and_zero_is_refused() {
        assert_eq!(ttl_secs(Duration::from_secs(5)).ok(), Some(5));
        assert_eq!(ttl_secs(Duration::from_millis(5_001)).ok(), Some(6));
        assert_eq!(ttl_secs(Duration::from_nanos(1)).ok(), Some(1));
        assert_eq!(ttl_secs(Duration::MAX).ok(), Some(u64::MAX));
        assert!(matches!(
            ttl_secs(Duration::ZERO),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn column_families_carry_tikv_names_and_default_goes_out_empty() {
        assert_eq!(ColumnFamily::default(), ColumnFamily::Default);
        let names: Vec<_> = [
            ColumnFamily::Default,
            ColumnFamily::Lock,
            ColumnFamily::Write,
        ]
        .into_iter()
        .map(|cf| (cf.to_string(), cf.wire_name()))
        .collect();
        assert_eq!(
            names,
            [
                ("default".to_owned(), String::new()),
                ("lock".to_owned(), "lock".to_owned()),
                ("write".to_owned(), "write".to_owned()),
            ]
        );
    }

    #[test]
    fn a_key_ttl_tells_forever_from_remaining() {
        assert_eq!(KeyTtl::Forever.remaining(), None);
        let left = Duration::from_secs(3);
        assert_eq!(KeyTtl::Remaining(left).remaining(), Some(left));
    }
}
