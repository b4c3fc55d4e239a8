//! Region tools: where keys live, and splitting and scattering regions (client-go's
//! `RegionCache` lookups and `KVStore.SplitRegions`), in the raw or the transactional key
//! space.
//!
//! ```no_run
//! # async fn demo(client: tikv_core::Client) -> Result<(), tikv_core::Error> {
//! // Transactional key space, as client-go's KVStore.
//! let regions = client.regions();
//! let outcome = regions.split_regions(["t_100", "t_200"], true).await?;
//! for id in &outcome.region_ids {
//!     client.wait_scatter_region_finish(*id, None).await?;
//! }
//! for location in regions.locate_range("t_".."t_~").await? {
//!     println!("{} holds {:?}..{:?}", location.region_id, location.start_key, location.end_key);
//! }
//! # Ok(()) }
//! ```

use std::ops::RangeBounds;

use bytes::Bytes;

use super::KeyRange;
use crate::command::{KeyLocation, KeyMode, RegionCommand, SplitOutcome};
use crate::driver::Handle;
use crate::error::Error;

/// Region tools in one key space. Cheap to clone.
///
/// Get one from [`Client::regions`](crate::Client::regions) (transactional keys) or
/// [`RawClient::regions`](crate::RawClient::regions) (raw keys). The two spaces differ
/// because TiKV stores transactional keys memcomparable-encoded (and, with API V2, under the
/// keyspace's `'x'` prefix rather than `'r'`), so the same user key lies at different places.
#[derive(Clone, Debug)]
pub struct Regions {
    handle: Handle,
    mode: KeyMode,
}

impl Regions {
    /// Region tools over `handle` in key space `mode`.
    pub fn new(handle: Handle, mode: KeyMode) -> Self {
        Self { handle, mode }
    }

    /// The key space these tools work in.
    pub fn mode(&self) -> KeyMode {
        self.mode
    }

    /// The region holding `key` (client-go's `RegionCache.LocateKey`), from the region
    /// cache or PD; no store is contacted. Boundaries are user keys of this key space.
    ///
    /// Errors when PD cannot say within its backoff budget.
    pub async fn locate_key(&self, key: impl Into<Bytes>) -> Result<KeyLocation, Error> {
        let command = RegionCommand::LocateKey {
            key: key.into(),
            mode: self.mode,
        };
        one_location(self.handle.call(command.locations_call()).await?)
    }

    /// Region `region_id` (client-go's `LocateRegionByID`), from the region cache or PD.
    ///
    /// Errors with [`Error::RegionUnavailable`] when PD knows no such region, or when PD
    /// cannot be reached within its backoff budget.
    pub async fn locate_region_by_id(&self, region_id: u64) -> Result<KeyLocation, Error> {
        let command = RegionCommand::LocateRegionById {
            region_id,
            mode: self.mode,
        };
        one_location(self.handle.call(command.locations_call()).await?)
    }

    /// Every region overlapping `range` (any Rust range of keys: `"a".."z"`, `"a"..`,
    /// `..=key`; for the whole key space, `locate_range::<[u8]>(..)`), in key order
    /// (client-go's `LocateKeyRange`; the ids are its `ListRegionIDsInKeyRange`). Useful to
    /// split work by region. An empty range locates nothing.
    ///
    /// Errors when PD cannot say within its backoff budget.
    pub async fn locate_range<K: AsRef<[u8]> + ?Sized>(
        &self,
        range: impl RangeBounds<K>,
    ) -> Result<Vec<KeyLocation>, Error> {
        self.locate_range_limited(range, 0).await
    }

    /// [`locate_range`](Self::locate_range), stopping after `limit` regions (0: no limit;
    /// client-go's `BatchLoadRegionsFromKey`).
    ///
    /// Errors as [`locate_range`](Self::locate_range).
    pub async fn locate_range_limited<K: AsRef<[u8]> + ?Sized>(
        &self,
        range: impl RangeBounds<K>,
        limit: u32,
    ) -> Result<Vec<KeyLocation>, Error> {
        let Some(KeyRange { start_key, end_key }) = KeyRange::from_bounds(&range) else {
            return Ok(Vec::new());
        };
        let command = RegionCommand::LocateRange {
            start: start_key,
            end: end_key,
            mode: self.mode,
            limit,
        };
        self.handle.call(command.locations_call()).await
    }

    /// Splits the regions holding `keys` so that every key starts a region (client-go's
    /// `KVStore.SplitRegions`); keys that already start a region are skipped. With
    /// `scatter`, PD is then asked to spread the new regions over the stores (see
    /// [`Client::wait_scatter_region_finish`](crate::Client::wait_scatter_region_finish)).
    ///
    /// Returns the ids of the new regions, and the scatter's error if it failed (the split
    /// stands either way). Errors with [`Error::InvalidArgument`] for an empty key, or when
    /// the regions cannot be split within the backoff budget (20 s per key, at most 120 s).
    pub async fn split_regions(
        &self,
        keys: impl IntoIterator<Item = impl Into<Bytes>>,
        scatter: bool,
    ) -> Result<SplitOutcome, Error> {
        self.split_regions_in_group(keys, scatter, String::new())
            .await
    }

    /// [`split_regions`](Self::split_regions) with a scatter group: PD spreads the regions of
    /// one group as a unit (client-go passes the table id).
    ///
    /// Errors as [`split_regions`](Self::split_regions).
    pub async fn split_regions_in_group(
        &self,
        keys: impl IntoIterator<Item = impl Into<Bytes>>,
        scatter: bool,
        group: impl Into<String>,
    ) -> Result<SplitOutcome, Error> {
        let command = RegionCommand::SplitRegions {
            mode: self.mode,
            keys: keys.into_iter().map(Into::into).collect(),
            scatter,
            scatter_group: group.into(),
        };
        self.handle.call(command.split_call()).await
    }
}

/// The one region a single-region lookup found.
fn one_location(mut found: Vec<KeyLocation>) -> Result<KeyLocation, Error> {
    match (found.pop(), found.is_empty()) {
        (Some(location), true) => Ok(location),
        _ => Err(Error::UnexpectedResponse(
            "a single-region lookup found no region or several".into(),
        )),
    }
}
