//! Sending items (keys, or one range cursor) to the regions that hold them, with retry.
//!
//! This is client-go's region request sender plus its `sendBatchReq` pattern, as a machine an
//! operation embeds: items are grouped by region through the cache (parking on PD when the
//! cache cannot say), each group becomes one or more requests built by the operation's
//! [`Plan`], and each request is retried on its own: a region error either retries the same
//! items at once (new leader), after a backoff, or hands them back for regrouping. One
//! [`Backoffer`] bounds the whole operation, as client-go's forked backoffers do.

use std::time::Duration;

use bytes::Bytes;
use smallvec::SmallVec;
use tikv_proto::rpc::RpcError;

use super::retry::{RegionRetry, classify};
use super::shared::{Route, Routing, Shared, Wake};
use super::{OpId, RequestId};
use crate::backoff::{BackoffKind, Backoffer};
use crate::error::Error;
use crate::rpc::{Response, StoreRequest, StoreResponse};
use crate::time::Time;

/// Indices of a dispatch's items. Inline for the common case of a point operation, so a
/// one-key request allocates nothing for its bookkeeping.
pub(crate) type Items = SmallVec<[usize; 2]>;

/// How an operation turns routed items into requests and takes their answers.
pub(crate) trait Plan {
    /// Requests for `items` (indices into the dispatch's items), all in `route`'s region,
    /// each handed to `send` with the items it carries; may split them into several requests
    /// (batch size limits).
    fn build(&mut self, items: &[usize], route: &Route, send: &mut dyn FnMut(Items, StoreRequest));

    /// Takes a response without region error for `items`.
    ///
    /// Errors end the whole operation (a key error, a server error string).
    fn absorb(
        &mut self,
        items: &[usize],
        route: &Route,
        response: Box<StoreResponse>,
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
    id: RequestId,
    items: Items,
    route: Route,
}

/// Items in flight towards their regions.
///
/// Sized for point operations: one key, one request in flight, no backoff yet all live
/// inline; batches spill to the heap.
#[derive(Debug)]
pub(crate) struct Dispatch {
    keys: SmallVec<[Bytes; 1]>,
    reverse: bool,
    /// Items waiting to be routed; sorted by key before routing (so one PD lookup serves the
    /// next keys).
    pending: Items,
    /// Requests out, searched linearly: an operation has few at a time.
    inflight: SmallVec<[Sent; 1]>,
    sleep_until: Option<Time>,
    budget_ms: u64,
    /// Created on the first backoff: most operations never sleep.
    backoff: Option<Box<Backoffer>>,
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
        keys: SmallVec<[Bytes; 1]>,
        reverse: bool,
        budget: Duration,
        timeout: Duration,
    ) -> Self {
        let pending = (0..keys.len()).collect();
        let budget_ms = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX);
        Self {
            keys,
            reverse,
            pending,
            inflight: SmallVec::new(),
            sleep_until: None,
            budget_ms,
            backoff: None,
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
            if let Some(index) = self.inflight.iter().position(|sent| sent.id == id) {
                let sent = self.inflight.swap_remove(index);
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
        // Routing may have decided to back off (no usable peer): wake up for it.
        if let Some(until) = self.sleep_until {
            if until > shared.now {
                shared.wake_at(op, until);
            }
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
        self.pending
            .extend(items.iter().copied().filter(|&item| item < self.keys.len()));
        self.retried = true;
    }

    fn sleep(
        &mut self,
        shared: &mut Shared,
        kind: BackoffKind,
        cause: &dyn std::fmt::Display,
    ) -> Result<(), Error> {
        let budget_ms = self.budget_ms;
        let sleep = self
            .backoff
            .get_or_insert_with(|| Box::new(Backoffer::new(budget_ms)))
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
            if !sent.route.leader_known {
                // A peer tried while the leader was unknown served a leader request: it is
                // the leader (client-go's replica selector records it the same way).
                shared
                    .regions
                    .update_leader(sent.route.ver_id, &sent.route.peer);
            }
            return plan.absorb(&sent.items, &sent.route, response);
        };
        let mut retry = classify(&region_error);
        shared.apply_region_retry(&sent.route, &mut retry);
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
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut pending = std::mem::take(&mut self.pending);
        let keys = &self.keys;
        if pending.len() > 1 {
            pending.sort_unstable_by(|a, b| keys[*a].cmp(&keys[*b]).then(a.cmp(b)));
            pending.dedup();
        }
        // With more keys to route, one PD call can bring every region up to the last one.
        let last_key = (pending.len() > 1)
            .then(|| pending.last().map(|&item| keys[item].clone()))
            .flatten();
        // Keys are sorted and regions are contiguous, so a region's keys are adjacent: a new
        // group starts whenever the region changes.
        let mut groups: SmallVec<[(Route, Items); 1]> = SmallVec::new();
        for (position, &item) in pending.iter().enumerate() {
            match shared.route(op, &keys[item], self.reverse, last_key.as_deref()) {
                Routing::Ready(route) => match groups.last_mut() {
                    Some((last, items)) if last.region.id == route.region.id => items.push(item),
                    _ => groups.push((route, smallvec::smallvec![item])),
                },
                Routing::Parked => {
                    // Later keys most likely fall in the region this lookup returns: wait for it
                    // instead of asking PD once per key.
                    self.pending.extend(pending[position..].iter().copied());
                    break;
                }
                Routing::Unavailable(err) => {
                    // Nothing to send to now; the region reloads after the backoff.
                    self.pending.extend(pending[position..].iter().copied());
                    self.sleep(shared, BackoffKind::RegionMiss, &err)?;
                    break;
                }
                Routing::Failed(err) => return Err(err),
            }
        }
        let timeout = self.timeout;
        let retried = self.retried;
        for (route, items) in groups {
            let inflight = &mut self.inflight;
            plan.build(&items, &route, &mut |items, request| {
                let id = shared.send_store(op, &route, request, timeout, retried);
                inflight.push(Sent {
                    id,
                    items,
                    route: route.clone(),
                });
            });
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
