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

use super::OpId;
use super::dispatch::{Dispatch, Items, Plan, Progress};
use super::ops::Output;
use super::shared::{Route, Shared, Wake};
use crate::backoff::{self as budget, BackoffKind, Backoffer};
use crate::error::Error;
use crate::region::{InvalidReason, RegionVerId};
use crate::rpc::{PdRequest, PdResponse, StoreRequest, StoreResponse};
use crate::time::Time;

/// Most split keys in one `SplitRegion` request (client-go `splitBatchRegionLimit`).
pub const SPLIT_BATCH_KEY_LIMIT: usize = 2048;

/// The operator description PD gives a scatter.
const SCATTER_OPERATOR: &[u8] = b"scatter-region";

/// What a split produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitOutcome {
    /// Ids of the regions the split created, in key order.
    pub region_ids: Vec<u64>,
    /// Why scattering them failed, if it was asked for and failed (the split itself stands).
    pub scatter_error: Option<Error>,
}

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
    /// The scatter call is out.
    scattering: bool,
}

impl SplitOp {
    /// A split of the regions holding `routing_keys` (region-cache keys) at `request_keys`
    /// (the same keys as requests carry them).
    pub(crate) fn new(
        request_keys: Vec<Bytes>,
        routing_keys: Vec<Bytes>,
        raw_keys: bool,
        scatter: Option<String>,
        timeout: std::time::Duration,
    ) -> Self {
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
            scattering: false,
        }
    }

    /// Advances the split; `Some` when it finished.
    pub(crate) fn drive(
        &mut self,
        shared: &mut Shared,
        op: OpId,
        wake: Wake,
    ) -> Option<Result<Output, Error>> {
        if self.scattering {
            let result = shared.pd.take_op_result(op)?;
            return Some(Ok(Output::Split(self.outcome(scatter_error(result)))));
        }
        let progress = self.dispatch.drive(shared, op, wake, &mut self.plan);
        // The split regions changed their epochs: drop them from the cache now rather than
        // learn it from an EpochNotMatch later.
        for ver_id in self.plan.split_regions.drain(..) {
            shared
                .regions
                .invalidate(ver_id, InvalidReason::EpochNotMatch);
        }
        match progress {
            Progress::Pending => None,
            Progress::Failed(err) => Some(Err(err)),
            Progress::Done => match &self.scatter {
                Some(group) if !self.plan.new_regions.is_empty() => {
                    self.scattering = true;
                    shared.pd_call(
                        op,
                        PdRequest::ScatterRegion(pdpb::ScatterRegionRequest {
                            regions_id: self.plan.new_regions.clone(),
                            group: group.clone(),
                            ..Default::default()
                        }),
                    );
                    None
                }
                _ => Some(Ok(Output::Split(self.outcome(None)))),
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

/// What went wrong with a scatter, if anything: a failed call, a PD error, or regions PD
/// could not scatter.
fn scatter_error(result: Result<PdResponse, Error>) -> Option<Error> {
    let response = match result {
        Ok(PdResponse::ScatterRegion(response)) => response,
        Ok(other) => return Some(Error::UnexpectedResponse(format!("{other:?}"))),
        Err(err) => return Some(err),
    };
    if let Some(err) = super::pd::pd_error(response.header.as_ref()) {
        return Some(err);
    }
    if response.failed_regions_id.is_empty() {
        None
    } else {
        Some(Error::Pd {
            kind: "SCATTER_FAILED".to_owned(),
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
    fn build(&mut self, items: &[usize], route: &Route, send: &mut dyn FnMut(Items, StoreRequest)) {
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
            send(Items::from_slice(chunk), StoreRequest::SplitRegion(request));
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
            return Err(Error::Server(format!("{error:?}")));
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

/// Waiting for a region's scatter to finish, or asking once whether it is scattering.
///
/// Polls PD's `GetOperator`: the region is done scattering when its latest operator is not
/// a running `scatter-region` one (a region without an operator counts as done, as client-go
/// reads it). Between polls it backs off (`regionMiss`) within the budget.
#[derive(Debug)]
pub(crate) struct OperatorWait {
    region_id: u64,
    /// `true`: wait until finished; `false`: answer whether it is scattering now.
    wait: bool,
    backoff: Backoffer,
    sleep_until: Option<Time>,
    asked: bool,
}

impl OperatorWait {
    /// A wait (or, without `wait`, a one-off check) for `region_id` with a backoff budget.
    pub(crate) fn new(region_id: u64, wait: bool, budget: std::time::Duration) -> Self {
        let budget_ms = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX);
        Self {
            region_id,
            wait,
            backoff: Backoffer::new(budget_ms),
            sleep_until: None,
            asked: false,
        }
    }

    /// Advances the wait; `Some` when it finished.
    pub(crate) fn drive(
        &mut self,
        shared: &mut Shared,
        op: OpId,
        _wake: Wake,
    ) -> Option<Result<Output, Error>> {
        if let Some(until) = self.sleep_until {
            if until > shared.now {
                shared.wake_at(op, until);
                return None;
            }
            self.sleep_until = None;
        }
        if self.asked {
            let result = shared.pd.take_op_result(op)?;
            self.asked = false;
            let cause = match result {
                Ok(PdResponse::GetOperator(response)) => {
                    let running = response.desc.as_ref() == SCATTER_OPERATOR
                        && response.status == pdpb::OperatorStatus::Running as i32;
                    if !running {
                        return Some(Ok(if self.wait {
                            Output::Unit
                        } else {
                            Output::Scattering(false)
                        }));
                    }
                    if !self.wait {
                        return Some(Ok(Output::Scattering(true)));
                    }
                    if let Some(err) = super::pd::pd_error(response.header.as_ref()) {
                        return Some(Err(err));
                    }
                    "scatter still running".to_owned()
                }
                Ok(other) => {
                    return Some(Err(Error::UnexpectedResponse(format!("{other:?}"))));
                }
                Err(err) => err.to_string(),
            };
            match self
                .backoff
                .next_sleep(BackoffKind::RegionMiss, &mut shared.rng, &cause)
            {
                Ok(sleep) => {
                    let until = shared.now + sleep;
                    self.sleep_until = Some(until);
                    shared.wake_at(op, until);
                    return None;
                }
                Err(err) => return Some(Err(Error::from(err))),
            }
        }
        self.asked = true;
        shared.pd_call(
            op,
            PdRequest::GetOperator(pdpb::GetOperatorRequest {
                region_id: self.region_id,
                ..Default::default()
            }),
        );
        None
    }
}
