//! Where keys live: client-go's `RegionCache.LocateKey`, `LocateKeyRange` and
//! `ListRegionIDsInKeyRange`, answered from the region cache and PD (no store is contacted).

use bytes::Bytes;

use super::OpId;
use super::keys::KeySpace;
use super::ops::Output;
use super::shared::Shared;
use crate::error::Error;
use crate::rpc::{PdRequest, PdResponse};
use tikv_proto::pdpb;

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

/// Walks the regions of a range in key order, or finds one region by id.
#[derive(Debug)]
pub(crate) struct LocateOp {
    space: KeySpace,
    /// Routing key of the next region to find.
    cursor: Bytes,
    /// Routing key the walk stops at; `None`: one region only (a single key).
    end: Option<Bytes>,
    found: Vec<KeyLocation>,
    /// Looking a region up by id instead: the id, and whether PD was asked.
    by_id: Option<(u64, bool)>,
    /// Most regions to report (0 = no limit).
    limit: u32,
}

impl LocateOp {
    /// The region holding the user key whose routing key is `key`.
    pub(crate) fn key(space: KeySpace, key: Bytes) -> Self {
        Self {
            space,
            cursor: key,
            end: None,
            found: Vec::new(),
            by_id: None,
            limit: 0,
        }
    }

    /// Region `region_id`, from the cache or PD (client-go's `LocateRegionByID`).
    pub(crate) fn by_id(space: KeySpace, region_id: u64) -> Self {
        Self {
            space,
            cursor: Bytes::new(),
            end: None,
            found: Vec::new(),
            by_id: Some((region_id, false)),
            limit: 0,
        }
    }

    fn location(&self, region: &crate::region::RegionRef) -> KeyLocation {
        let epoch = region.epoch();
        KeyLocation {
            region_id: region.id(),
            conf_ver: epoch.conf_ver,
            version: epoch.version,
            start_key: self.space.user_boundary(region.start_key()),
            end_key: self.space.user_boundary(region.end_key()),
        }
    }

    fn drive_by_id(
        &mut self,
        shared: &mut Shared,
        op: OpId,
        region_id: u64,
        asked: bool,
    ) -> Option<Result<Output, Error>> {
        if !asked {
            let now = shared.now;
            if let Some(region) = shared.regions.get_by_id(region_id, now) {
                return Some(Ok(Output::Locations(vec![self.location(&region)])));
            }
            self.by_id = Some((region_id, true));
            shared.pd_call(
                op,
                PdRequest::GetRegionById(pdpb::GetRegionByIdRequest {
                    region_id,
                    ..Default::default()
                }),
            );
            return None;
        }
        let response = match shared.pd.take_op_result(op)? {
            Ok(PdResponse::GetRegionById(response)) => response,
            Ok(other) => return Some(Err(Error::UnexpectedResponse(format!("{other:?}")))),
            Err(err) => return Some(Err(err)),
        };
        if let Some(err) = super::pd::pd_error(response.header.as_ref()) {
            return Some(Err(err));
        }
        if response.region.is_none() {
            return Some(Err(Error::RegionUnavailable(format!(
                "PD knows no region {region_id}"
            ))));
        }
        let now = shared.now;
        match shared.cache_region(response, now) {
            Ok(region) => Some(Ok(Output::Locations(vec![self.location(&region)]))),
            Err(err) => Some(Err(Error::RegionUnavailable(err.to_string()))),
        }
    }

    /// Every region overlapping routing range `[start, end)` (an empty `end`: to the end),
    /// at most `limit` of them (0: no limit).
    pub(crate) fn range(space: KeySpace, start: Bytes, end: Bytes, limit: u32) -> Self {
        Self {
            space,
            cursor: start,
            end: Some(end),
            found: Vec::new(),
            by_id: None,
            limit,
        }
    }

    /// Advances the walk; `Some` when it finished.
    pub(crate) fn drive(&mut self, shared: &mut Shared, op: OpId) -> Option<Result<Output, Error>> {
        if let Some((region_id, asked)) = self.by_id {
            return self.drive_by_id(shared, op, region_id, asked);
        }
        // Bounded: each pass records one region and moves past it, or parks.
        loop {
            let last_key = self.end.as_deref().filter(|end| !end.is_empty());
            let region = match shared.locate(op, &self.cursor, last_key) {
                Ok(Some(region)) => region,
                Ok(None) => return None,
                Err(err) => return Some(Err(err)),
            };
            let location = self.location(&region);
            self.found.push(location);
            let next = region.end_key();
            let full = self.limit > 0 && self.found.len() >= self.limit as usize;
            let done = full
                || match &self.end {
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
