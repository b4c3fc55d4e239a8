//! Splitting the regions a large commit would write too many keys to, before it
//! prewrites (client-go's `twoPhaseCommitter.groupMutations` and `preSplitRegion`).
//!
//! ```text
//!  Grouping (route every key, send nothing) ──no group over the key threshold──► Done
//!     │ split keys: every `size_threshold` bytes of a large group
//!     ▼
//!  Splitting (a SplitOp child, scattering the new regions) ──failed────────────► Done
//!     │ split and scattered
//!     ▼
//!  Waiting (one scatter wait per new region, 120 s each) ──all ended───────────► Done
//! ```
//!
//! Nothing here fails the commit: a split or scatter that fails is given up and the commit
//! prewrites into the regions as they are, as client-go only logs it. The split drops the
//! old regions from the cache, so the prewrite routes over the new ones.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use smallvec::SmallVec;

use crate::backoff::WAIT_SCATTER_REGION_FINISH_BACKOFF_MS;
use crate::command::Output;
use crate::error::Error;
use crate::op::{Cx, Next, Operation};
use crate::ops::keys::KeySpace;
use crate::ops::split::SplitOp;
use crate::outbox::{OpId, Reply, RequestId};
use crate::rpc::{StoreRequest, StoreResponse};
use crate::sender::Route;
use crate::sender::dispatch::{Dispatch, DispatchInput, Items, Plan, Progress};

/// Keys of one region from which a commit splits it first (client-go
/// `preSplitDetectThreshold`).
pub(crate) const PRE_SPLIT_DETECT_THRESHOLD: usize = 100_000;
/// Bytes (keys and values) of a large region group per new region (client-go
/// `preSplitSizeThreshold`, 32 MiB).
pub(crate) const PRE_SPLIT_SIZE_THRESHOLD: u64 = 32 << 20;

/// When a commit pre-splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Thresholds {
    /// A region with at least this many of the commit's keys is split.
    pub(crate) keys: usize,
    /// It is split every this many bytes of keys and values.
    pub(crate) size: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            keys: PRE_SPLIT_DETECT_THRESHOLD,
            size: PRE_SPLIT_SIZE_THRESHOLD,
        }
    }
}

/// The keys at which to split one region group (client-go `preSplitRegion`): walking the
/// group in key order, a key at which the bytes since the last split key (or the start)
/// reach `size_threshold` is a split key.
pub(crate) fn split_keys(
    items: &[usize],
    size_of: impl Fn(usize) -> u64,
    size_threshold: u64,
) -> Vec<usize> {
    let mut at = Vec::new();
    let mut size = 0u64;
    for &item in items {
        size = size.saturating_add(size_of(item));
        if size >= size_threshold {
            size = 0;
            at.push(item);
        }
    }
    at
}

/// The pre-split of a commit's regions; finishes with [`Output::Unit`] whatever happens.
#[derive(Debug)]
pub(crate) struct PreSplit {
    space: KeySpace,
    thresholds: Thresholds,
    /// The commit's request keys, sorted.
    keys: Vec<Bytes>,
    /// Each key's size with its value.
    sizes: Vec<u64>,
    timeout: Duration,
    stage: Stage,
}

#[derive(Debug)]
enum Stage {
    /// Routing every key to its region.
    Grouping(Dispatch, GroupPlan),
    /// The split child.
    Splitting(OpId),
    /// Scatter waits still running.
    Waiting(Vec<OpId>),
}

impl PreSplit {
    /// The pre-split of the mutations with request keys `keys` (sorted), routing keys
    /// `routing` and sizes `sizes` (key plus value), all in the same order.
    pub(crate) fn new(
        space: KeySpace,
        thresholds: Thresholds,
        keys: Vec<Bytes>,
        routing: SmallVec<[Bytes; 1]>,
        sizes: Vec<u64>,
        budget: Duration,
        timeout: Duration,
    ) -> Self {
        let dispatch = Dispatch::new(routing, false, budget, timeout);
        Self {
            space,
            thresholds,
            keys,
            sizes,
            timeout,
            stage: Stage::Grouping(dispatch, GroupPlan::default()),
        }
    }

    fn group(mut self: Box<Self>, cx: &mut Cx<'_>, input: DispatchInput) -> Next {
        let Stage::Grouping(dispatch, plan) = &mut self.stage else {
            return Next::Pending(self);
        };
        match dispatch.handle(cx, input, plan) {
            Progress::Pending => Next::Pending(self),
            // The prewrite routes the same keys and fails the commit if they cannot be.
            Progress::Failed(_) => Next::Done(Ok(Output::Unit)),
            Progress::Done => {
                let groups = std::mem::take(&mut plan.groups);
                self.split(cx, groups)
            }
        }
    }

    /// Every key is routed: split the groups over the threshold.
    fn split(mut self: Box<Self>, cx: &mut Cx<'_>, groups: BTreeMap<u64, Vec<usize>>) -> Next {
        let mut at = Vec::new();
        for (_, mut items) in groups {
            if items.len() < self.thresholds.keys {
                continue;
            }
            items.sort_unstable();
            let sizes = &self.sizes;
            at.extend(split_keys(
                &items,
                |item| sizes.get(item).copied().unwrap_or(0),
                self.thresholds.size,
            ));
        }
        if at.is_empty() {
            return Next::Done(Ok(Output::Unit));
        }
        let split_keys: Vec<Bytes> = at
            .iter()
            .filter_map(|&item| self.keys.get(item).cloned())
            .collect();
        // Scattered one by one in client-go (no group); one ungrouped call here.
        let split =
            SplitOp::at_request_keys(&self.space, split_keys, Some(String::new()), self.timeout);
        let child = cx.spawn_child(Box::new(split));
        self.stage = Stage::Splitting(child);
        Next::Pending(self)
    }

    fn split_done(mut self: Box<Self>, cx: &mut Cx<'_>, result: Result<Output, Error>) -> Next {
        let region_ids = match result {
            // client-go waits only after a split and scatter that both succeeded.
            Ok(Output::Split(outcome)) if outcome.scatter_error.is_none() => outcome.region_ids,
            _ => return Next::Done(Ok(Output::Unit)),
        };
        let budget = Duration::from_millis(WAIT_SCATTER_REGION_FINISH_BACKOFF_MS);
        let waits: Vec<OpId> = region_ids
            .into_iter()
            .map(|region_id| cx.spawn_child(crate::ops::admin::scatter_wait(region_id, budget)))
            .collect();
        if waits.is_empty() {
            return Next::Done(Ok(Output::Unit));
        }
        self.stage = Stage::Waiting(waits);
        Next::Pending(self)
    }
}

impl Operation for PreSplit {
    fn on_start(self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        self.group(cx, DispatchInput::Start)
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }

    fn on_reply(self: Box<Self>, cx: &mut Cx<'_>, id: RequestId, reply: Reply) -> Next {
        self.group(cx, DispatchInput::Reply(id, reply))
    }

    fn on_timer(self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        self.group(cx, DispatchInput::Timer)
    }

    fn on_child_done(
        mut self: Box<Self>,
        cx: &mut Cx<'_>,
        child: OpId,
        result: Result<Output, Error>,
    ) -> Next {
        match &mut self.stage {
            Stage::Splitting(split) if *split == child => self.split_done(cx, result),
            Stage::Waiting(waits) => {
                // A wait that gave up is as good as one that saw the scatter end.
                waits.retain(|wait| *wait != child);
                if waits.is_empty() {
                    Next::Done(Ok(Output::Unit))
                } else {
                    Next::Pending(self)
                }
            }
            _ => Next::Pending(self),
        }
    }
}

/// Routes keys and sends nothing: records which region each key is in.
#[derive(Debug, Default)]
struct GroupPlan {
    /// The items routed to each region, by region id.
    groups: BTreeMap<u64, Vec<usize>>,
}

impl Plan for GroupPlan {
    fn build(
        &mut self,
        items: &[usize],
        route: &Route,
        _send: &mut dyn FnMut(Items, Box<StoreRequest>),
    ) {
        self.groups
            .entry(route.region.id)
            .or_default()
            .extend_from_slice(items);
    }

    fn absorb(
        &mut self,
        _items: &[usize],
        _route: &Route,
        response: Box<StoreResponse>,
    ) -> Result<(), Error> {
        // Nothing is ever sent.
        Err(Error::UnexpectedResponse(format!(
            "a response to a pre-split that sent nothing: {response:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_key_closes_every_size_threshold_of_bytes() {
        let sizes = [5u64, 5, 5, 5, 5, 5, 5];
        let items: Vec<usize> = (0..sizes.len()).collect();
        assert_eq!(split_keys(&items, |i| sizes[i], 10), vec![1, 3, 5]);
        // A large key alone reaches the threshold.
        let sizes = [1u64, 50, 1];
        assert_eq!(split_keys(&[0, 1, 2], |i| sizes[i], 10), vec![1]);
        assert!(split_keys(&[0, 1], |_| 1, 10).is_empty());
    }
}
