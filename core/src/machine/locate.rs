//! Where keys live: client-go's `RegionCache.LocateKey`, `LocateKeyRange` and
//! `ListRegionIDsInKeyRange`, answered from the region cache and PD (no store is contacted).

use bytes::Bytes;

use super::OpId;
use super::keys::KeySpace;
use super::ops::Output;
use super::shared::Shared;
use crate::error::Error;

/// One region as a user sees it: its identity and the range of user keys it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLocation {
    /// The region id.
    pub region_id: u64,
    /// The region's configuration version (bumped by peer changes).
    pub conf_ver: u64,
    /// The region's version (bumped by splits and merges).
    pub version: u64,
    /// First user key of the region (empty: the start of the key space).
    pub start_key: Bytes,
    /// First user key after the region (empty: the end of the key space).
    pub end_key: Bytes,
}

/// Walks the regions of a range in key order.
#[derive(Debug)]
pub(crate) struct LocateOp {
    space: KeySpace,
    /// Routing key of the next region to find.
    cursor: Bytes,
    /// Routing key the walk stops at; `None`: one region only (a single key).
    end: Option<Bytes>,
    found: Vec<KeyLocation>,
}

impl LocateOp {
    /// The region holding the user key whose routing key is `key`.
    pub(crate) fn key(space: KeySpace, key: Bytes) -> Self {
        Self {
            space,
            cursor: key,
            end: None,
            found: Vec::new(),
        }
    }

    /// Every region overlapping routing range `[start, end)` (an empty `end`: to the end).
    pub(crate) fn range(space: KeySpace, start: Bytes, end: Bytes) -> Self {
        Self {
            space,
            cursor: start,
            end: Some(end),
            found: Vec::new(),
        }
    }

    /// Advances the walk; `Some` when it finished.
    pub(crate) fn drive(&mut self, shared: &mut Shared, op: OpId) -> Option<Result<Output, Error>> {
        // Bounded: each pass records one region and moves past it, or parks.
        loop {
            let last_key = self.end.as_deref().filter(|end| !end.is_empty());
            let region = match shared.locate(op, &self.cursor, last_key) {
                Ok(Some(region)) => region,
                Ok(None) => return None,
                Err(err) => return Some(Err(err)),
            };
            let epoch = region.epoch();
            self.found.push(KeyLocation {
                region_id: region.id(),
                conf_ver: epoch.conf_ver,
                version: epoch.version,
                start_key: self.space.user_boundary(region.start_key()),
                end_key: self.space.user_boundary(region.end_key()),
            });
            let next = region.end_key();
            let done = match &self.end {
                None => true,
                Some(end) => next.is_empty() || (!end.is_empty() && next >= end),
            };
            // A region ending where the key space ends for the user ends the walk too.
            if done || self.space.user_boundary(next).is_empty() {
                return Some(Ok(Output::Locations(std::mem::take(&mut self.found))));
            }
            self.cursor = next.clone();
        }
    }
}
