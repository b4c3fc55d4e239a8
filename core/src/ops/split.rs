//! Splitting regions at given keys and scattering the new regions, as client-go's
//! `KVStore.SplitRegions`, `WaitScatterRegionFinish` and `CheckRegionInScattering` do.
//!
//! ```text
//!  Splitting ──every key's region split (SplitRegion per region, retried per region)──►
//!     │                                          Scattering? ──ScatterRegion──► Done
//!     └── no scatter asked, or no new region ──────────────────────────────────► Done
//! ```
//!
//! Keys are grouped by region; keys that already start a region are dropped (the split is
//! done); each region gets one `SplitRegion` request per 2,048 keys. TiKV answers with every
//! region the split produced, left to right, the original (which keeps the right-most range)
//! last; all but that last one are new. A scatter failure does not undo the split: the new
//! region ids come back with the scatter error beside them.

use bytes::Bytes;
use tikv_proto::{kvrpcpb, pdpb};

use super::keys::KeySpace;
use crate::backoff as budget;
use crate::command::{Output, SplitOutcome};
use crate::error::{Error, KeyError, PdErrorKind};
use crate::op::Cx;
use crate::outbox::{Reply, RequestId};
use crate::region::{InvalidReason, RegionVerId};
use crate::rpc::{PdRequest, PdResponse, StoreRequest, StoreResponse};
use crate::sender::Route;
use crate::sender::dispatch::{Dispatch, DispatchInput, Items, Plan, Progress};

/// Most split keys in one `SplitRegion` request (client-go `splitBatchRegionLimit`).
pub const SPLIT_BATCH_KEY_LIMIT: usize = 2048;

/// The split operation's backoff budget for `key_count` keys.
pub(crate) fn split_budget(key_count: usize) -> std::time::Duration {
    let keys = u64::try_from(key_count).unwrap_or(u64::MAX);
    std::time::Duration::from_millis(
        keys.saturating_mul(budget::SPLIT_REGION_BACKOFF_MS)
            .min(budget::MAX_SPLIT_REGIONS_BACKOFF_MS),
    )
}

/// A running split (and scatter).
#[derive(Debug)]
pub(crate) struct SplitOp {
    dispatch: Dispatch,
    plan: SplitPlan,
    /// Group name for the scatter (regions of one group are spread as a unit); `None`: no
    /// scatter.
    scatter: Option<String>,
    /// The scatter call, once made.
    scattering: Option<RequestId>,
}

impl SplitOp {
    /// A split of the regions holding user keys `keys` of key space `space` at those keys,
    /// then (with a group) a scatter of the new regions.
    ///
    /// Errors with [`Error::InvalidArgument`] for an empty key.
    pub(crate) fn new(
        space: &KeySpace,
        keys: &[Bytes],
        scatter: Option<String>,
        timeout: std::time::Duration,
    ) -> Result<Self, Error> {
        let request_keys = keys
            .iter()
            .map(|key| {
                if key.is_empty() {
                    Err(Error::InvalidArgument("empty key".to_owned()))
                } else {
                    Ok(space.request_key(key))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::at_request_keys(space, request_keys, scatter, timeout))
    }

    /// Like [`new`](Self::new), at keys already in `space`'s request form (a commit's
    /// keys, which it holds that way).
    pub(crate) fn at_request_keys(
        space: &KeySpace,
        request_keys: Vec<Bytes>,
        scatter: Option<String>,
        timeout: std::time::Duration,
    ) -> Self {
        let routing_keys: Vec<Bytes> = request_keys
            .iter()
            .map(|key| space.routing_key(key))
            .collect();
        let raw_keys = space.is_plain();
        let budget = split_budget(request_keys.len());
        Self {
            dispatch: Dispatch::new(
                routing_keys.iter().cloned().collect(),
                false,
                budget,
                timeout,
            ),
            plan: SplitPlan {
                request_keys,
                routing_keys,
                raw_keys,
                new_regions: Vec::new(),
                split_regions: Vec::new(),
            },
            scatter,
            scattering: None,
        }
    }

    /// Advances the split; `Some` when it finished.
    pub(crate) fn drive(
        &mut self,
        cx: &mut Cx<'_>,
        input: DispatchInput,
    ) -> Option<Result<Output, Error>> {
        if let Some(call) = self.scattering {
            return match input {
                DispatchInput::Reply(id, Reply::Pd(result)) if id == call => {
                    Some(Ok(Output::Split(Box::new(
                        self.outcome(scatter_error(result.map(|response| *response))),
                    ))))
                }
                _ => None,
            };
        }
        let progress = self.dispatch.handle(cx, input, &mut self.plan);
        // The split regions changed their epochs: drop them from the cache now rather than
        // learn it from an EpochNotMatch later.
        for ver_id in self.plan.split_regions.drain(..) {
            cx.cache().invalidate(ver_id, InvalidReason::EpochNotMatch);
        }
        match progress {
            Progress::Pending => None,
            Progress::Failed(err) => Some(Err(err)),
            Progress::Done => match &self.scatter {
                Some(group) if !self.plan.new_regions.is_empty() => {
                    let call = cx.pd_call(PdRequest::ScatterRegion(pdpb::ScatterRegionRequest {
                        regions_id: self.plan.new_regions.clone(),
                        group: group.clone(),
                        ..Default::default()
                    }));
                    self.scattering = Some(call);
                    None
                }
                _ => Some(Ok(Output::Split(Box::new(self.outcome(None))))),
            },
        }
    }

    fn outcome(&self, scatter_error: Option<Error>) -> SplitOutcome {
        SplitOutcome {
            region_ids: self.plan.new_regions.clone(),
            scatter_error,
        }
    }
}

super::driven_operation!(SplitOp);

/// What went wrong with a scatter, if anything: a failed call, a PD error, or regions PD
/// could not scatter.
fn scatter_error(result: Result<PdResponse, Error>) -> Option<Error> {
    let response = match result {
        Ok(PdResponse::ScatterRegion(response)) => response,
        Ok(other) => return Some(Error::UnexpectedResponse(format!("{other:?}"))),
        Err(err) => return Some(err),
    };
    if let Some(err) = crate::pd::pd_error(response.header.as_ref()) {
        return Some(err);
    }
    if response.failed_regions_id.is_empty() {
        None
    } else {
        Some(Error::Pd {
            kind: PdErrorKind::ScatterFailed,
            message: format!(
                "PD could not scatter regions {:?}",
                response.failed_regions_id
            ),
        })
    }
}

/// Builds the split requests and collects what they created.
#[derive(Debug)]
struct SplitPlan {
    request_keys: Vec<Bytes>,
    routing_keys: Vec<Bytes>,
    /// API V1 raw keys, which TiKV must not encode.
    raw_keys: bool,
    new_regions: Vec<u64>,
    /// Regions split since the operation last looked.
    split_regions: Vec<RegionVerId>,
}

impl Plan for SplitPlan {
    fn build(
        &mut self,
        items: &[usize],
        route: &Route,
        send: &mut dyn FnMut(Items, Box<StoreRequest>),
    ) {
        // A key that already starts its region needs no split (client-go filters them the
        // same way); TiKV would refuse it.
        let wanted: Items = items
            .iter()
            .copied()
            .filter(|&item| {
                self.routing_keys
                    .get(item)
                    .is_some_and(|key| *key != route.region.start_key)
            })
            .collect();
        for chunk in wanted.chunks(SPLIT_BATCH_KEY_LIMIT) {
            let request = kvrpcpb::SplitRegionRequest {
                split_keys: chunk
                    .iter()
                    .filter_map(|&item| self.request_keys.get(item).cloned())
                    .collect(),
                is_raw_kv: self.raw_keys,
                ..Default::default()
            };
            send(
                Items::from_slice(chunk),
                Box::new(StoreRequest::SplitRegion(request)),
            );
        }
    }

    fn absorb(
        &mut self,
        _items: &[usize],
        route: &Route,
        response: Box<StoreResponse>,
    ) -> Result<(), Error> {
        let StoreResponse::SplitRegion(response) = *response else {
            return Err(Error::UnexpectedResponse(format!(
                "mismatched response {response:?}"
            )));
        };
        if let Some(error) = response.errors.first() {
            return Err(KeyError::from_proto(error).into());
        }
        // Every region but the last (the original, which keeps the right-most range) is new.
        let produced = response.regions.len().saturating_sub(1);
        self.new_regions.extend(
            response
                .regions
                .iter()
                .take(produced)
                .map(|region| region.id),
        );
        self.split_regions.push(route.ver_id);
        Ok(())
    }
}
