//! Sending items (keys, or one range cursor) to the regions that hold them, with retry.
//!
//! This is client-go's region request sender plus its `sendBatchReq` pattern, as a machine an
//! operation embeds: items are grouped by region through the cache (parking on PD when the
//! cache cannot say), each group becomes one or more requests built by the operation's
//! [`Plan`], and each request is retried on its own: a region error either retries the same
//! items at once (new leader), after a backoff, or hands them back for regrouping. One
//! [`Backoffer`] bounds the whole operation, as client-go's forked backoffers do.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use tikv_proto::rpc::RpcError;

use super::retry::{RegionRetry, classify};
use super::shared::{Route, Routing, Shared, Wake};
use super::{OpId, RequestId};
use crate::backoff::{BackoffKind, Backoffer};
use crate::error::Error;
use crate::rpc::{Response, StoreRequest, StoreResponse};
use crate::time::Time;

/// How an operation turns routed items into requests and takes their answers.
pub(crate) trait Plan {
    /// Requests for `items` (indices into the dispatch's items), all in `route`'s region; may
    /// split them into several requests (batch size limits).
    fn build(&mut self, items: &[usize], route: &Route) -> Vec<(Vec<usize>, StoreRequest)>;

    /// Takes a response without region error for `items`.
    ///
    /// Errors end the whole operation (a key error, a server error string).
    fn absorb(
        &mut self,
        items: &[usize],
        route: &Route,
        response: StoreResponse,
    ) -> Result<(), Error>;
}

/// Where a dispatch stands after being driven.
#[derive(Debug)]
pub(crate) enum Progress {
    /// Still working; it will be driven again.
    Pending,
    /// Every item got its answer.
    Done,
    /// Gave up.
    Failed(Error),
}

#[derive(Debug)]
struct Sent {
    items: Vec<usize>,
    route: Route,
}

/// Items in flight towards their regions.
#[derive(Debug)]
pub(crate) struct Dispatch {
    keys: Vec<Bytes>,
    reverse: bool,
    /// Items waiting to be routed, in key order (so one PD lookup serves the next keys).
    pending: BTreeSet<(Bytes, usize)>,
    inflight: BTreeMap<RequestId, Sent>,
    sleep_until: Option<Time>,
    backoff: Backoffer,
    timeout: Duration,
    retried: bool,
    /// Leader hints followed without a backoff in between.
    leader_hops: u32,
}

/// Leader hints followed in a row before backing off.
const MAX_LEADER_HOPS: u32 = 8;

impl Dispatch {
    /// Dispatches items whose routing keys (in region-key space) are `keys`. With `reverse`,
    /// each key is an exclusive upper bound and routes to the region just before it.
    pub(crate) fn new(
        keys: Vec<Bytes>,
        reverse: bool,
        budget: Duration,
        timeout: Duration,
    ) -> Self {
        let pending = keys
            .iter()
            .enumerate()
            .map(|(i, key)| (key.clone(), i))
            .collect();
        let budget_ms = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX);
        Self {
            keys,
            reverse,
            pending,
            inflight: BTreeMap::new(),
            sleep_until: None,
            backoff: Backoffer::new(budget_ms),
            timeout,
            retried: false,
            leader_hops: 0,
        }
    }

    /// Advances the dispatch with `wake`.
    pub(crate) fn drive(
        &mut self,
        shared: &mut Shared,
        op: OpId,
        wake: Wake,
        plan: &mut dyn Plan,
    ) -> Progress {
        if let Wake::Reply(id, reply) = wake {
            if let Some(sent) = self.inflight.remove(&id) {
                if let Err(err) = self.on_reply(shared, sent, reply, plan) {
                    return Progress::Failed(err);
                }
            }
        }
        if let Some(until) = self.sleep_until {
            if until > shared.now {
                shared.wake_at(op, until);
                return self.progress();
            }
            self.sleep_until = None;
        }
        if let Err(err) = self.route_pending(shared, op, plan) {
            return Progress::Failed(err);
        }
        self.progress()
    }

    fn progress(&self) -> Progress {
        if self.pending.is_empty() && self.inflight.is_empty() {
            Progress::Done
        } else {
            Progress::Pending
        }
    }

    fn requeue(&mut self, items: &[usize]) {
        for &item in items {
            if let Some(key) = self.keys.get(item) {
                self.pending.insert((key.clone(), item));
            }
        }
        self.retried = true;
    }

    fn sleep(
        &mut self,
        shared: &mut Shared,
        kind: BackoffKind,
        cause: &dyn std::fmt::Display,
    ) -> Result<(), Error> {
        let sleep = self
            .backoff
            .next_sleep(kind, &mut shared.rng, cause)
            .map_err(Error::from)?;
        let until = shared.now + sleep;
        self.sleep_until = Some(self.sleep_until.map_or(until, |t| t.max(until)));
        Ok(())
    }

    fn on_reply(
        &mut self,
        shared: &mut Shared,
        sent: Sent,
        reply: Result<Response, RpcError>,
        plan: &mut dyn Plan,
    ) -> Result<(), Error> {
        let mut response = match reply {
            Ok(Response::Store(response)) => response,
            Ok(Response::Pd(_) | Response::Health(_)) => {
                return Err(Error::UnexpectedResponse(
                    "non-store response to a store request".into(),
                ));
            }
            Err(err) => {
                // client-go's onSendFail: forget what we knew about the route, back off, retry.
                shared.on_send_failure(&sent.route);
                self.requeue(&sent.items);
                return self.sleep(shared, BackoffKind::TiKvRpc, &err);
            }
        };
        let Some(region_error) = response.take_region_error() else {
            return plan.absorb(&sent.items, &sent.route, *response);
        };
        let retry = classify(&region_error);
        shared.apply_region_retry(&sent.route, &retry);
        match retry {
            RegionRetry::UpdateLeader { .. } => {
                self.requeue(&sent.items);
                // A leader hint is retried at once, but not forever: peers that keep pointing
                // at each other (a leader moving, a stale view) get a backoff, which also bounds
                // the operation by its budget.
                self.leader_hops += 1;
                if self.leader_hops > MAX_LEADER_HOPS {
                    self.leader_hops = 0;
                    return self.sleep(
                        shared,
                        BackoffKind::RegionScheduling,
                        &region_error.message,
                    );
                }
                Ok(())
            }
            RegionRetry::Backoff(kind) | RegionRetry::NextPeer(kind) => {
                self.requeue(&sent.items);
                self.sleep(shared, kind, &region_error.message)
            }
            RegionRetry::Relocate { backoff, .. } => {
                self.requeue(&sent.items);
                match backoff {
                    Some(kind) => self.sleep(shared, kind, &describe(&region_error)),
                    None => Ok(()),
                }
            }
            RegionRetry::Fail(message) => Err(Error::RegionUnavailable(message)),
        }
    }

    fn route_pending(
        &mut self,
        shared: &mut Shared,
        op: OpId,
        plan: &mut dyn Plan,
    ) -> Result<(), Error> {
        let mut groups: BTreeMap<u64, (Route, Vec<usize>)> = BTreeMap::new();
        let pending = std::mem::take(&mut self.pending);
        // With more keys to route, one PD call can bring every region up to the last one.
        let last_key = (pending.len() > 1)
            .then(|| pending.last().map(|(key, _)| key.clone()))
            .flatten();
        let mut parked = false;
        for (key, item) in pending {
            if parked {
                self.pending.insert((key, item));
                continue;
            }
            match shared.route(op, &key, self.reverse, last_key.as_deref()) {
                Routing::Ready(route) => groups
                    .entry(route.region.id)
                    .or_insert_with(|| (route, Vec::new()))
                    .1
                    .push(item),
                Routing::Parked => {
                    // Later keys most likely fall in the region this lookup returns: wait for it
                    // instead of asking PD once per key.
                    parked = true;
                    self.pending.insert((key, item));
                }
                Routing::Failed(err) => return Err(err),
            }
        }
        for (_, (route, items)) in groups {
            for (items, request) in plan.build(&items, &route) {
                let id = shared.send_store(op, &route, request, self.timeout, self.retried);
                self.inflight.insert(
                    id,
                    Sent {
                        items,
                        route: route.clone(),
                    },
                );
            }
        }
        Ok(())
    }
}

fn describe(err: &tikv_proto::errorpb::Error) -> String {
    if err.message.is_empty() {
        format!("{err:?}")
    } else {
        err.message.clone()
    }
}
