//! PD's `pdpb.PD` service over the cluster model: discovery, TSO, ids, stores, regions.
//!
//! Each `handle_*` takes the request message and returns the response message, or a
//! [`PdError`] for the failures PD reports as a gRPC status rather than in the response
//! header. Application-level failures (region not found, holes in a scan, ...) travel in the
//! response header as PD puts them there. Every request except `GetMembers` and
//! `GetClusterInfo` must carry this cluster's id in its header, as PD requires.
//!
//! PD's view of regions skips regions hidden with [`Cluster::hide_region_from_pd`], which is
//! how scans meet holes.

use bytes::Bytes;
use tikv_proto::pdpb::{self, ErrorType, OperatorStatus, ServiceMode};
use tikv_proto::status::{Code, Status};

use super::gc::GcError;
use super::tso::TsoError;
use super::{Cluster, Region, key_range};

/// A PD failure answered as a gRPC status instead of a response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PdError {
    /// The request header names another cluster (gRPC `FAILED_PRECONDITION`).
    #[error("mismatch cluster id, need {expected} but got {got}")]
    ClusterIdMismatch {
        /// This cluster's id.
        expected: u64,
        /// The id in the request header.
        got: u64,
    },
    /// The TSO could not allocate (gRPC `UNKNOWN`).
    #[error(transparent)]
    Tso(#[from] TsoError),
    /// A legacy GC call was rejected (gRPC `UNKNOWN`, as PD returns these as errors).
    #[error(transparent)]
    Gc(#[from] GcError),
    /// The call reached a follower and must be served by the leader (gRPC `UNAVAILABLE`,
    /// PD's `ErrNotLeader`).
    #[error("not leader")]
    NotLeader,
    /// A region lookup reached a follower without `pd-allow-follower-handle` (gRPC
    /// `UNAVAILABLE`, PD's `ErrFollowerHandlingNotAllowed`).
    #[error("not leader and follower handling not allowed")]
    FollowerHandlingNotAllowed,
    /// The member is stopped (gRPC `UNAVAILABLE`, PD's `ErrNotStarted`).
    #[error("server not started")]
    NotStarted,
    /// A Tso message reached a follower, whose allocator refuses to generate (gRPC
    /// `UNKNOWN`, PD's `ErrGenerateTimestamp`).
    #[error("generate timestamp failed, requested pd is not leader of cluster")]
    TsoNotLeader,
    /// `pd-forwarded-host` names a host that is not the leader (gRPC `INVALID_ARGUMENT`).
    #[error("forwarded host {host:?} is not a client URL of the PD leader")]
    ForwardedHostNotLeader {
        /// The host the call asked to be forwarded to.
        host: String,
    },
    /// A follower could not reach the leader it was to forward to (gRPC `UNAVAILABLE`).
    #[error("forwarding to {host} failed")]
    ForwardFailed {
        /// The leader's URL.
        host: String,
    },
}

impl PdError {
    /// The gRPC status a server sends for this failure.
    pub fn to_status(&self) -> Status {
        if let Some(status) = self.role_status() {
            return status;
        }
        let code = match self {
            Self::ClusterIdMismatch { .. } => Code::FailedPrecondition,
            _ => Code::Unknown,
        };
        Status::new(code, self.to_string())
    }
}

/// Checks the cluster id of a request header (a missing header counts as id 0, as in PD).
pub(crate) fn header_check(
    cluster: &Cluster,
    header: Option<&pdpb::RequestHeader>,
) -> Result<(), PdError> {
    let got = header.map_or(0, |header| header.cluster_id);
    if got == cluster.cluster_id() {
        Ok(())
    } else {
        Err(PdError::ClusterIdMismatch {
            expected: cluster.cluster_id(),
            got,
        })
    }
}

/// A response header carrying an application-level error.
pub(crate) fn error_header(
    cluster_id: u64,
    error_type: ErrorType,
    message: &str,
) -> pdpb::ResponseHeader {
    pdpb::ResponseHeader {
        cluster_id,
        error: Some(pdpb::Error {
            r#type: error_type as i32,
            message: message.to_owned(),
        }),
    }
}

/// The `scatter-region` operator description clients poll for.
const SCATTER_DESC: &[u8] = b"scatter-region";

impl Cluster {
    /// An OK response header.
    pub fn header(&self) -> pdpb::ResponseHeader {
        pdpb::ResponseHeader {
            cluster_id: self.cluster_id(),
            error: None,
        }
    }

    /// `GetClusterInfo`: plain PD mode (TSO served by PD itself). Not cluster-id checked.
    pub fn handle_get_cluster_info(
        &self,
        _req: &pdpb::GetClusterInfoRequest,
    ) -> pdpb::GetClusterInfoResponse {
        pdpb::GetClusterInfoResponse {
            header: Some(self.header()),
            service_modes: vec![ServiceMode::PdSvcMode as i32],
            tso_urls: Vec::new(),
        }
    }

    /// One `Tso` stream message: allocates `count` timestamps at `now_ms` and answers the
    /// last one with `count` echoed.
    pub fn handle_tso(
        &mut self,
        req: &pdpb::TsoRequest,
        now_ms: u64,
    ) -> Result<pdpb::TsoResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        let ts = self.tso.allocate(req.count, now_ms)?;
        Ok(pdpb::TsoResponse {
            header: Some(self.header()),
            count: req.count,
            timestamp: Some(ts.to_proto()),
        })
    }

    /// `GetMinTS`: in plain PD mode, simply a fresh timestamp.
    pub fn handle_get_min_ts(
        &mut self,
        req: &pdpb::GetMinTsRequest,
        now_ms: u64,
    ) -> Result<pdpb::GetMinTsResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        let ts = self.tso.allocate(1, now_ms)?;
        Ok(pdpb::GetMinTsResponse {
            header: Some(self.header()),
            timestamp: Some(ts.to_proto()),
        })
    }

    /// `SetExternalTimestamp`: accepted only if not above a fresh TSO and above the current
    /// external timestamp (INVALID_VALUE otherwise).
    pub fn handle_set_external_timestamp(
        &mut self,
        req: &pdpb::SetExternalTimestampRequest,
        now_ms: u64,
    ) -> Result<pdpb::SetExternalTimestampResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        let global = self.tso.allocate(1, now_ms)?.to_u64();
        let header = if req.timestamp > global {
            error_header(
                self.cluster_id(),
                ErrorType::InvalidValue,
                "the external timestamp should not be larger than global ts",
            )
        } else if req.timestamp <= self.external_ts {
            error_header(
                self.cluster_id(),
                ErrorType::InvalidValue,
                "the external timestamp should be larger than current external timestamp",
            )
        } else {
            self.external_ts = req.timestamp;
            self.header()
        };
        Ok(pdpb::SetExternalTimestampResponse {
            header: Some(header),
        })
    }

    /// `GetExternalTimestamp`: the last accepted external timestamp (0 if none).
    pub fn handle_get_external_timestamp(
        &self,
        req: &pdpb::GetExternalTimestampRequest,
    ) -> Result<pdpb::GetExternalTimestampResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        Ok(pdpb::GetExternalTimestampResponse {
            header: Some(self.header()),
            timestamp: self.external_ts,
        })
    }

    /// `AllocID`: reserves `count` ids (at least one) and answers the last; `count` is echoed
    /// only when more than one was reserved, as PD does.
    pub fn handle_alloc_id(
        &mut self,
        req: &pdpb::AllocIdRequest,
    ) -> Result<pdpb::AllocIdResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        let count = req.count.max(1);
        let mut id = 0;
        for _ in 0..count {
            id = self.alloc_id();
        }
        Ok(pdpb::AllocIdResponse {
            header: Some(self.header()),
            id,
            count: if count > 1 { count } else { 0 },
        })
    }

    /// `GetStore`: the store (tombstones included, with node state Removed), or UNKNOWN
    /// "not found" in the header.
    pub fn handle_get_store(
        &self,
        req: &pdpb::GetStoreRequest,
    ) -> Result<pdpb::GetStoreResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        Ok(match self.stores.get(&req.store_id) {
            Some(store) => pdpb::GetStoreResponse {
                header: Some(self.header()),
                store: Some(store.to_proto()),
                stats: None,
            },
            None => pdpb::GetStoreResponse {
                header: Some(error_header(
                    self.cluster_id(),
                    ErrorType::Unknown,
                    &format!("invalid store ID {}, not found", req.store_id),
                )),
                store: None,
                stats: None,
            },
        })
    }

    /// `GetAllStores`: every store by id, without removed ones if asked.
    pub fn handle_get_all_stores(
        &self,
        req: &pdpb::GetAllStoresRequest,
    ) -> Result<pdpb::GetAllStoresResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        Ok(pdpb::GetAllStoresResponse {
            header: Some(self.header()),
            stores: self
                .stores
                .values()
                .filter(|store| !(req.exclude_tombstone_stores && store.is_tombstone()))
                .map(|store| store.to_proto())
                .collect(),
        })
    }

    /// `GetRegion`: the region containing `region_key`; an OK header without a region when PD
    /// knows none.
    pub fn handle_get_region(
        &self,
        req: &pdpb::GetRegionRequest,
    ) -> Result<pdpb::GetRegionResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        Ok(self.region_response(self.pd_search(&req.region_key)))
    }

    /// `GetPrevRegion`: the region right before the one containing `region_key` (it must end
    /// exactly where that one starts).
    pub fn handle_get_prev_region(
        &self,
        req: &pdpb::GetRegionRequest,
    ) -> Result<pdpb::GetRegionResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        Ok(self.region_response(self.pd_search_prev(&req.region_key)))
    }

    /// `GetRegionByID`: the region with this id, if PD knows it.
    pub fn handle_get_region_by_id(
        &self,
        req: &pdpb::GetRegionByIdRequest,
    ) -> Result<pdpb::GetRegionResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        Ok(self.region_response(self.pd_region(req.region_id)))
    }

    /// One `QueryRegion` stream message: `key_id_map` and `prev_key_id_map` follow the request
    /// order (0 = not found), and `regions_by_id` holds every region found plus every id asked
    /// for (an empty entry when PD does not know it).
    pub fn handle_query_region(
        &self,
        req: &pdpb::QueryRegionRequest,
    ) -> Result<pdpb::QueryRegionResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        let mut regions_by_id = std::collections::BTreeMap::new();
        let mut record = |region: Option<&Region>| -> u64 {
            let Some(region) = region else { return 0 };
            regions_by_id
                .entry(region.id)
                .or_insert_with(|| region_details(region));
            region.id
        };
        let key_id_map: Vec<u64> = req
            .keys
            .iter()
            .map(|key| record(self.pd_search(key)))
            .collect();
        let prev_key_id_map: Vec<u64> = req
            .prev_keys
            .iter()
            .map(|key| record(self.pd_search_prev(key)))
            .collect();
        for &id in &req.ids {
            if id == 0 {
                continue;
            }
            let details = self.pd_region(id).map(region_details).unwrap_or_default();
            regions_by_id.entry(id).or_insert(details);
        }
        Ok(pdpb::QueryRegionResponse {
            header: Some(self.header()),
            key_id_map,
            prev_key_id_map,
            regions_by_id,
        })
    }

    /// `ScanRegions`: regions PD knows that intersect `[start_key, end_key)`, from the one
    /// containing `start_key`, at most `limit` (≤ 0 = unbounded). Holes are skipped silently.
    pub fn handle_scan_regions(
        &self,
        req: &pdpb::ScanRegionsRequest,
    ) -> Result<pdpb::ScanRegionsResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        let limit = usize::try_from(req.limit).ok().filter(|&l| l > 0);
        let mut resp = pdpb::ScanRegionsResponse {
            header: Some(self.header()),
            ..Default::default()
        };
        for region in self.pd_scan_from(&req.start_key) {
            if !req.end_key.is_empty() && region.start_key >= req.end_key {
                break;
            }
            if limit.is_some_and(|limit| resp.regions.len() >= limit) {
                break;
            }
            let leader = region.leader().map(|p| p.to_proto()).unwrap_or_default();
            resp.region_metas.push(region.to_proto());
            resp.leaders.push(leader);
            resp.regions.push(scan_entry(region));
        }
        Ok(resp)
    }

    /// `BatchScanRegions`: regions covering each range (sorted, non-overlapping; adjacent ones
    /// are joined), without duplicates, at most `limit` in total. With
    /// `contain_all_key_range`, a hole answers REGIONS_NOT_CONTAIN_ALL_KEY_RANGE.
    pub fn handle_batch_scan_regions(
        &self,
        req: &pdpb::BatchScanRegionsRequest,
    ) -> Result<pdpb::BatchScanRegionsResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        let fail = |error_type, message: &str| pdpb::BatchScanRegionsResponse {
            header: Some(error_header(self.cluster_id(), error_type, message)),
            regions: Vec::new(),
        };
        let mut ranges: Vec<(Bytes, Bytes)> = Vec::with_capacity(req.ranges.len());
        for (i, range) in req.ranges.iter().enumerate() {
            if i > 0 && range.start_key < req.ranges[i - 1].end_key {
                return Ok(fail(
                    ErrorType::Unknown,
                    "invalid key range, ranges overlapped",
                ));
            }
            if !range.end_key.is_empty() && range.start_key > range.end_key {
                return Ok(fail(
                    ErrorType::Unknown,
                    "invalid key range, start key > end key",
                ));
            }
            match ranges.last_mut() {
                Some((_, end)) if *end == range.start_key => *end = range.end_key.clone(),
                _ => ranges.push((range.start_key.clone(), range.end_key.clone())),
            }
        }
        let limit = usize::try_from(req.limit).ok().filter(|&l| l > 0);
        let mut found: Vec<&Region> = Vec::new();
        for (start, end) in &ranges {
            let regions = match self.scan_range_checked(start, end, limit) {
                Ok(regions) => regions,
                Err(message) if req.contain_all_key_range => {
                    return Ok(fail(ErrorType::RegionsNotContainAllKeyRange, &message));
                }
                Err(_) => self.scan_range_lenient(start, end, limit),
            };
            let skip = usize::from(
                matches!((found.last(), regions.first()), (Some(a), Some(b)) if a.id == b.id),
            );
            found.extend(regions.into_iter().skip(skip));
            if let Some(limit) = limit.filter(|&limit| found.len() >= limit) {
                found.truncate(limit);
                break;
            }
        }
        Ok(pdpb::BatchScanRegionsResponse {
            header: Some(self.header()),
            regions: found.into_iter().map(scan_entry).collect(),
        })
    }

    /// `ScatterRegion`: a no-op that reports every known region scattered (100 %) and lists
    /// unknown ids as failed. Uses `regions_id` when set, else the legacy `region_id`.
    pub fn handle_scatter_region(
        &mut self,
        req: &pdpb::ScatterRegionRequest,
    ) -> Result<pdpb::ScatterRegionResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        let ids = if req.regions_id.is_empty() {
            vec![req.region_id]
        } else {
            req.regions_id.clone()
        };
        let mut failed = Vec::new();
        for &id in &ids {
            if self.regions.contains_key(&id) {
                self.scattered.insert(id, self.scatter_running_polls);
            } else {
                failed.push(id);
            }
        }
        let done = (ids.len() - failed.len()) as u64;
        Ok(pdpb::ScatterRegionResponse {
            header: Some(self.header()),
            finished_percentage: done * 100 / ids.len().max(1) as u64,
            failed_regions_id: failed,
        })
    }

    /// Makes every scatter from now on look running to the next `polls` GetOperator calls
    /// for its region (0, the default: finished at once).
    pub fn set_scatter_running_polls(&mut self, polls: u32) {
        self.scatter_running_polls = polls;
    }

    /// `GetOperator`: a `scatter-region` operator for scattered regions, RUNNING for as many
    /// polls as [`Cluster::set_scatter_running_polls`] said and SUCCESS after that;
    /// REGION_NOT_FOUND for regions with no operator history.
    pub fn handle_get_operator(
        &mut self,
        req: &pdpb::GetOperatorRequest,
    ) -> Result<pdpb::GetOperatorResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        let status = match self.scattered.get_mut(&req.region_id) {
            None => {
                return Ok(pdpb::GetOperatorResponse {
                    header: Some(error_header(
                        self.cluster_id(),
                        ErrorType::RegionNotFound,
                        "Not Found",
                    )),
                    ..Default::default()
                });
            }
            Some(running) if *running > 0 => {
                *running -= 1;
                OperatorStatus::Running
            }
            Some(_) => OperatorStatus::Success,
        };
        Ok(pdpb::GetOperatorResponse {
            header: Some(self.header()),
            region_id: req.region_id,
            desc: Bytes::from_static(SCATTER_DESC),
            status: status as i32,
            kind: Bytes::from_static(b"region"),
        })
    }

    /// The regions PD knows (all but hidden ones), in key order: what PD's HTTP
    /// `/pd/api/v1/regions` lists.
    pub fn pd_regions(&self) -> impl Iterator<Item = &Region> {
        self.pd_after(b"")
    }

    fn region_response(&self, region: Option<&Region>) -> pdpb::GetRegionResponse {
        pdpb::GetRegionResponse {
            header: Some(self.header()),
            region: region.map(Region::to_proto),
            leader: region.and_then(|r| r.leader()).map(|p| p.to_proto()),
            ..Default::default()
        }
    }

    /// The region PD knows by id.
    fn pd_region(&self, id: u64) -> Option<&Region> {
        self.regions
            .get(&id)
            .filter(|region| !self.pd_hidden.contains(&region.id))
    }

    /// Regions PD knows, in key order, from those starting at or after `start`.
    fn pd_after(&self, start: &[u8]) -> impl Iterator<Item = &Region> {
        self.by_start
            .range::<[u8], _>(key_range::from(start))
            .filter_map(|(_, id)| self.pd_region(*id))
    }

    /// The region PD knows that contains `key`.
    fn pd_search(&self, key: &[u8]) -> Option<&Region> {
        self.by_start
            .range::<[u8], _>(key_range::up_to(key))
            .rev()
            .find_map(|(_, id)| self.pd_region(*id))
            .filter(|region| region.contains(key))
    }

    /// The region PD knows right before the one containing `key`, if they touch.
    fn pd_search_prev(&self, key: &[u8]) -> Option<&Region> {
        let current = self.pd_search(key)?;
        self.by_start
            .range::<[u8], _>(key_range::below(&current.start_key))
            .rev()
            .find_map(|(_, id)| self.pd_region(*id))
            .filter(|prev| prev.end_key == current.start_key)
    }

    /// Regions PD knows from the one containing `start` (or the first after it) onwards.
    fn pd_scan_from(&self, start: &[u8]) -> impl Iterator<Item = &Region> {
        let from = self
            .pd_search(start)
            .map_or_else(|| Bytes::copy_from_slice(start), |r| r.start_key.clone());
        self.pd_after(&from).collect::<Vec<_>>().into_iter()
    }

    /// Scans one range like PD's `scanRegion`, failing with a message at the first hole.
    fn scan_range_checked(
        &self,
        start: &Bytes,
        end: &Bytes,
        limit: Option<usize>,
    ) -> Result<Vec<&Region>, String> {
        let mut out: Vec<&Region> = Vec::new();
        // The end of the previous region; the range start at first. An empty key here means
        // "unbounded" and cannot reveal a hole, as in PD.
        let mut last_end = start.clone();
        for region in self.pd_scan_from(start) {
            if !end.is_empty() && !region.start_key.is_empty() && region.start_key >= *end {
                break;
            }
            if limit.is_some_and(|limit| out.len() >= limit) {
                break;
            }
            if !last_end.is_empty() && !region.start_key.is_empty() && region.start_key > last_end {
                return Err(format!(
                    "key range [{start:?}, {end:?}) has a hole before region {}",
                    region.id
                ));
            }
            last_end = region.end_key.clone();
            out.push(region);
        }
        let exhausted = limit.is_some_and(|limit| out.len() >= limit);
        if !exhausted && !end.is_empty() && !last_end.is_empty() && last_end < *end {
            return Err(format!(
                "key range [{start:?}, {end:?}) has a hole at its end, after {last_end:?}"
            ));
        }
        Ok(out)
    }

    /// Scans one range, skipping holes.
    fn scan_range_lenient(&self, start: &Bytes, end: &Bytes, limit: Option<usize>) -> Vec<&Region> {
        self.pd_scan_from(start)
            .take_while(|r| end.is_empty() || r.start_key.is_empty() || r.start_key < *end)
            .take(limit.unwrap_or(usize::MAX))
            .collect()
    }
}

/// A region as a `QueryRegion` entry.
fn region_details(region: &Region) -> pdpb::RegionResponse {
    pdpb::RegionResponse {
        region: Some(region.to_proto()),
        leader: region.leader().map(|p| p.to_proto()),
        ..Default::default()
    }
}

/// A region as a scan entry (the leader is an empty peer when unknown, as PD sends).
fn scan_entry(region: &Region) -> pdpb::Region {
    pdpb::Region {
        region: Some(region.to_proto()),
        leader: Some(region.leader().map(|p| p.to_proto()).unwrap_or_default()),
        ..Default::default()
    }
}

#[cfg(test)]
#[path = "pd_tests.rs"]
mod tests;
