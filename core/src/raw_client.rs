//! The raw KV client: client-go's `rawkv.Client`, the Rust way.
//!
//! ```no_run
//! # async fn demo(client: tikv_core::RawClient) -> Result<(), tikv_core::Error> {
//! client.put("k1", "v1").await?;
//! assert_eq!(client.get("k1").await?.as_deref(), Some(&b"v1"[..]));
//! let pairs = client.scan("a", "z", 10).await?;
//! client.with_cf("write").delete("k1").await?;
//! # Ok(()) }
//! ```

use bytes::Bytes;

use crate::driver::Handle;
use crate::error::Error;
use crate::machine::{
    Command, KeyLocation, KeyMode, Output, RawChecksum, RawCommand, SplitOutcome,
};
use crate::regions::Regions;

/// A key-value pair returned by scans.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KvPair {
    /// The key.
    pub key: Bytes,
    /// The value (empty for key-only scans).
    pub value: Bytes,
}

/// A raw KV client. Cheap to clone; clones share one connection pool and driver.
///
/// Column family and atomic mode are per handle: [`with_cf`](Self::with_cf) and
/// [`with_atomic_for_cas`](Self::with_atomic_for_cas) return adjusted copies.
#[derive(Clone, Debug)]
pub struct RawClient {
    handle: Handle,
    cf: String,
    atomic: bool,
}

impl RawClient {
    /// A raw client driving requests through `handle`. The usual way to get one is
    /// [`Client::raw`](crate::Client::raw) on a client from `tikv_tokio::connect` or
    /// `tikv_async_std::connect`.
    pub fn new(handle: Handle) -> Self {
        Self {
            handle,
            cf: String::new(),
            atomic: false,
        }
    }

    /// A copy of this client using column family `cf` ("default", "lock", "write").
    #[must_use]
    pub fn with_cf(&self, cf: impl Into<String>) -> Self {
        Self {
            cf: cf.into(),
            ..self.clone()
        }
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

    async fn run(&self, command: RawCommand) -> Result<Output, Error> {
        self.handle.run(Command::Raw(command)).await
    }

    /// Reads `key`; `None` when it does not exist.
    ///
    /// Errors with [`Error::InvalidArgument`] for an empty key, or when the cluster cannot
    /// answer within the backoff budget.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>, Error> {
        let command = RawCommand::Get {
            key: key.into(),
            cf: self.cf.clone(),
        };
        match self.run(command).await? {
            Output::Value(value) => Ok(value),
            other => Err(other.unexpected()),
        }
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
            cf: self.cf.clone(),
        };
        match self.run(command).await? {
            Output::Values(values) => Ok(values),
            other => Err(other.unexpected()),
        }
    }

    /// Writes `key`.
    ///
    /// Errors like [`get`](Self::get).
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<(), Error> {
        self.put_with_ttl(key, value, 0).await
    }

    /// Writes `key` to expire after `ttl_secs` seconds (0 = never).
    ///
    /// Errors with [`Error::InvalidArgument`] for a non-zero TTL on API V1, or like
    /// [`get`](Self::get).
    pub async fn put_with_ttl(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        ttl_secs: u64,
    ) -> Result<(), Error> {
        let command = RawCommand::Put {
            key: key.into(),
            value: value.into(),
            ttl_secs,
            cf: self.cf.clone(),
            atomic: self.atomic,
        };
        self.run(command).await.map(|_| ())
    }

    /// Writes several pairs.
    ///
    /// Errors like [`put`](Self::put).
    pub async fn batch_put(
        &self,
        pairs: impl IntoIterator<Item = (impl Into<Bytes>, impl Into<Bytes>)>,
    ) -> Result<(), Error> {
        self.batch_put_with_ttl(pairs, Vec::new()).await
    }

    /// Writes several pairs with one TTL per pair (or none: an empty `ttls_secs`).
    ///
    /// Errors with [`Error::InvalidArgument`] when `ttls_secs` is neither empty nor one per
    /// pair, or like [`put_with_ttl`](Self::put_with_ttl).
    pub async fn batch_put_with_ttl(
        &self,
        pairs: impl IntoIterator<Item = (impl Into<Bytes>, impl Into<Bytes>)>,
        ttls_secs: Vec<u64>,
    ) -> Result<(), Error> {
        let command = RawCommand::BatchPut {
            pairs: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            ttls_secs,
            cf: self.cf.clone(),
            atomic: self.atomic,
        };
        self.run(command).await.map(|_| ())
    }

    /// The remaining time to live of `key` in seconds (`Some(0)`: no TTL); `None` when the
    /// key does not exist.
    ///
    /// Errors like [`get`](Self::get).
    pub async fn get_key_ttl(&self, key: impl Into<Bytes>) -> Result<Option<u64>, Error> {
        let command = RawCommand::GetKeyTtl {
            key: key.into(),
            cf: self.cf.clone(),
        };
        match self.run(command).await? {
            Output::Ttl(ttl) => Ok(ttl),
            other => Err(other.unexpected()),
        }
    }

    /// Deletes `key` (deleting a missing key succeeds).
    ///
    /// Errors like [`get`](Self::get).
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<(), Error> {
        let command = RawCommand::Delete {
            key: key.into(),
            cf: self.cf.clone(),
            atomic: self.atomic,
        };
        self.run(command).await.map(|_| ())
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
            cf: self.cf.clone(),
            atomic: self.atomic,
        };
        self.run(command).await.map(|_| ())
    }

    /// Deletes every key in `[start, end)`; an empty `end` means no upper bound.
    ///
    /// Errors when a region cannot be reached within the backoff budget.
    pub async fn delete_range(
        &self,
        start: impl Into<Bytes>,
        end: impl Into<Bytes>,
    ) -> Result<(), Error> {
        let command = RawCommand::DeleteRange {
            start: start.into(),
            end: end.into(),
            cf: self.cf.clone(),
        };
        self.run(command).await.map(|_| ())
    }

    /// Up to `limit` pairs of `[start, end)` in key order (`end` empty = no upper bound).
    ///
    /// Errors with [`Error::InvalidArgument`] when `limit` exceeds [`MAX_RAW_SCAN_LIMIT`](crate::MAX_RAW_SCAN_LIMIT).
    pub async fn scan(
        &self,
        start: impl Into<Bytes>,
        end: impl Into<Bytes>,
        limit: u32,
    ) -> Result<Vec<KvPair>, Error> {
        self.scan_inner(start.into(), end.into(), limit, false, false)
            .await
    }

    /// Like [`scan`](Self::scan), returning keys only (values left empty).
    ///
    /// Errors like [`scan`](Self::scan).
    pub async fn scan_keys(
        &self,
        start: impl Into<Bytes>,
        end: impl Into<Bytes>,
        limit: u32,
    ) -> Result<Vec<Bytes>, Error> {
        let pairs = self
            .scan_inner(start.into(), end.into(), limit, true, false)
            .await?;
        Ok(pairs.into_iter().map(|pair| pair.key).collect())
    }

    /// Up to `limit` pairs in descending key order, from just below `start` (exclusive) down
    /// to `end` (inclusive), as client-go's `ReverseScan`. With a keyspace (API V2) an empty
    /// `start` means the end of the keyspace.
    ///
    /// Errors with [`Error::InvalidArgument`] for an empty `start` outside a keyspace (TiKV
    /// would read it as "before every key" and return nothing), or like [`scan`](Self::scan).
    pub async fn reverse_scan(
        &self,
        start: impl Into<Bytes>,
        end: impl Into<Bytes>,
        limit: u32,
    ) -> Result<Vec<KvPair>, Error> {
        self.scan_inner(start.into(), end.into(), limit, false, true)
            .await
    }

    /// Like [`reverse_scan`](Self::reverse_scan), returning keys only.
    ///
    /// Errors like [`reverse_scan`](Self::reverse_scan).
    pub async fn reverse_scan_keys(
        &self,
        start: impl Into<Bytes>,
        end: impl Into<Bytes>,
        limit: u32,
    ) -> Result<Vec<Bytes>, Error> {
        let pairs = self
            .scan_inner(start.into(), end.into(), limit, true, true)
            .await?;
        Ok(pairs.into_iter().map(|pair| pair.key).collect())
    }

    async fn scan_inner(
        &self,
        start: Bytes,
        end: Bytes,
        limit: u32,
        key_only: bool,
        reverse: bool,
    ) -> Result<Vec<KvPair>, Error> {
        // The machine validates the limit (one place for every handle).
        let command = RawCommand::Scan {
            start,
            end,
            limit,
            key_only,
            reverse,
            cf: self.cf.clone(),
        };
        match self.run(command).await? {
            Output::Pairs(pairs) => Ok(pairs
                .into_iter()
                .map(|(key, value)| KvPair { key, value })
                .collect()),
            other => Err(other.unexpected()),
        }
    }

    /// Atomically sets `key` to `value` if its current value is `previous` (`None`: if the
    /// key is absent). Returns the value before and whether the swap happened.
    ///
    /// Errors with [`Error::InvalidArgument`] unless the client is in atomic mode.
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Bytes>,
        previous: Option<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<(Option<Bytes>, bool), Error> {
        let command = RawCommand::CompareAndSwap {
            key: key.into(),
            previous,
            value: value.into(),
            cf: self.cf.clone(),
            atomic: self.atomic,
        };
        match self.run(command).await? {
            Output::Swapped {
                previous,
                succeeded,
            } => Ok((previous, succeeded)),
            other => Err(other.unexpected()),
        }
    }

    /// CRC-64 XOR checksum, pair count and byte count of `[start, end)`.
    ///
    /// Errors when a region cannot be reached within the backoff budget.
    pub async fn checksum(
        &self,
        start: impl Into<Bytes>,
        end: impl Into<Bytes>,
    ) -> Result<RawChecksum, Error> {
        let command = RawCommand::Checksum {
            start: start.into(),
            end: end.into(),
        };
        match self.run(command).await? {
            Output::Checksum(sum) => Ok(sum),
            other => Err(other.unexpected()),
        }
    }
}

impl RawClient {
    /// The id of the cluster (client-go's `rawkv.Client.ClusterID`).
    ///
    /// Errors when PD cannot be reached within its backoff budget.
    pub async fn cluster_id(&self) -> Result<u64, Error> {
        match self.handle.run(Command::ClusterId).await? {
            Output::ClusterId(id) => Ok(id),
            other => Err(other.unexpected()),
        }
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
    pub async fn locate_range(
        &self,
        start: impl Into<Bytes>,
        end: impl Into<Bytes>,
    ) -> Result<Vec<KeyLocation>, Error> {
        self.regions().locate_range(start, end).await
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
