//! Where keys live: client-go's `RegionCache.LocateKey`, `LocateKeyRange` and
//! `ListRegionIDsInKeyRange`, answered from the region cache and PD (no store is contacted).

use bytes::Bytes;

use super::keys::KeySpace;
use crate::command::{KeyLocation, Output};
use crate::error::Error;
use crate::op::Cx;
use crate::outbox::{Reply, RequestId};
use crate::rpc::{PdRequest, PdResponse};
use crate::sender::dispatch::DispatchInput;
use tikv_proto::pdpb;

/// Walks the regions of a range in key order, or finds one region by id.
#[derive(Debug)]
pub(crate) struct LocateOp {
    space: KeySpace,
    /// Routing key of the next region to find.
    cursor: Bytes,
    /// Routing key the walk stops at; `None`: one region only (a single key).
    end: Option<Bytes>,
    found: Vec<KeyLocation>,
    /// Looking a region up by id instead: the id, and the PD call once made.
    by_id: Option<(u64, Option<RequestId>)>,
    /// The PD lookup the walk waits on.
    parked: Option<RequestId>,
    /// Most regions to report (0 = no limit).
    limit: u32,
}

impl LocateOp {
    /// The region holding user key `key` (empty: the first region).
    pub(crate) fn key(space: KeySpace, key: &Bytes) -> Self {
        let cursor = space.routing_key(&space.request_key(key));
        Self {
            space,
            cursor,
            end: None,
            found: Vec::new(),
            by_id: None,
            parked: None,
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
            by_id: Some((region_id, None)),
            parked: None,
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
        cx: &mut Cx<'_>,
        region_id: u64,
        input: DispatchInput,
    ) -> Option<Result<Output, Error>> {
        let call = match (self.by_id.and_then(|(_, call)| call), input) {
            (None, _) => {
                let now = cx.now();
                if let Some(region) = cx.cache().get_by_id(region_id, now) {
                    return Some(Ok(Output::Locations(vec![self.location(&region)])));
                }
                let call = cx.pd_call(PdRequest::GetRegionById(pdpb::GetRegionByIdRequest {
                    region_id,
                    ..Default::default()
                }));
                self.by_id = Some((region_id, Some(call)));
                return None;
            }
            (Some(call), DispatchInput::Reply(id, Reply::Pd(result))) if id == call => {
                result.map(|response| *response)
            }
            (Some(_), _) => return None,
        };
        let response = match call {
            Ok(PdResponse::GetRegionById(response)) => response,
            Ok(other) => return Some(Err(Error::UnexpectedResponse(format!("{other:?}")))),
            Err(err) => return Some(Err(err)),
        };
        if let Some(err) = crate::pd::pd_error(response.header.as_ref()) {
            return Some(Err(err));
        }
        if response.region.is_none() {
            return Some(Err(Error::RegionUnavailable(format!(
                "PD knows no region {region_id}"
            ))));
        }
        match cx.cache_region(response) {
            Ok(region) => Some(Ok(Output::Locations(vec![self.location(&region)]))),
            Err(err) => Some(Err(Error::RegionUnavailable(err.to_string()))),
        }
    }

    /// Every region overlapping user range `[start, end)` (an empty `end`: to the end),
    /// at most `limit` of them (0: no limit).
    pub(crate) fn range(space: KeySpace, start: &Bytes, end: &Bytes, limit: u32) -> Self {
        let cursor = space.routing_key(&space.request_key(start));
        let end = space.request_end(end);
        let end = if end.is_empty() {
            end
        } else {
            space.routing_key(&end)
        };
        Self {
            space,
            cursor,
            end: Some(end),
            found: Vec::new(),
            by_id: None,
            parked: None,
            limit,
        }
    }

    /// Advances the walk; `Some` when it finished.
    pub(crate) fn drive(
        &mut self,
        cx: &mut Cx<'_>,
        input: DispatchInput,
    ) -> Option<Result<Output, Error>> {
        if let Some((region_id, _)) = self.by_id {
            return self.drive_by_id(cx, region_id, input);
        }
        if let Some(call) = self.parked {
            match input {
                DispatchInput::Reply(id, Reply::Ready(result)) if id == call => {
                    self.parked = None;
                    if let Err(err) = result {
                        return Some(Err(err));
                    }
                }
                _ => return None,
            }
        }
        // Bounded: each pass records one region and moves past it, or parks.
        loop {
            let last_key = self.end.as_deref().filter(|end| !end.is_empty());
            let op = cx.op();
            let region = match crate::sender::locate(cx.services(), op, &self.cursor, last_key) {
                Ok(region) => region,
                Err(call) => {
                    self.parked = Some(call);
                    return None;
                }
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

super::driven_operation!(LocateOp);
