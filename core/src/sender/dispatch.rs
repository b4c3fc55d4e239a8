//! Sending items (keys, or one range cursor) to the regions that hold them, with retry.
//!
//! This is client-go's region request sender plus its `sendBatchReq` pattern, as a machine an
//! operation embeds: items are grouped by region through the cache (parking on PD when the
//! cache cannot say), each group becomes one or more requests built by the operation's
//! [`Plan`], and each request is retried on its own: a region error either retries the same
//! items at once (new leader), after a backoff, or hands them back for regrouping. One
//! [`Backoffer`] bounds the whole operation, as client-go's forked backoffers do.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use smallvec::SmallVec;
use tikv_proto::rpc::RpcError;

use super::retry::{RegionRetry, classify};
use super::{Route, Routing};
use crate::backoff::{BackoffKind, Backoffer};
use crate::error::Error;
use crate::op::Cx;
use crate::outbox::{Reply, RequestId};
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
    fn build(
        &mut self,
        items: &[usize],
        route: &Route,
        send: &mut dyn FnMut(Items, Box<StoreRequest>),
    );

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

/// What a dispatch is driven with.
#[derive(Debug)]
pub(crate) enum DispatchInput {
    /// Route and send (the operation started, or a new step began).
    Start,
    /// The answer to one of the operation's calls.
    Reply(RequestId, Reply),
    /// A timer fired.
    Timer,
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

/// A request built but held back by the in-flight cap.
#[derive(Debug)]
struct Queued {
    items: Items,
    route: Route,
    request: Box<StoreRequest>,
    retried: bool,
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
    /// Requests out, searched linearly: an operation has few at a time (at most
    /// `max_inflight`).
    inflight: SmallVec<[Sent; 1]>,
    /// Requests built but not sent yet, oldest first: the cap was reached.
    queued: VecDeque<Queued>,
    /// Most requests out at once (client-go's committer concurrency for commit actions;
    /// unbounded otherwise).
    max_inflight: usize,
    /// PD lookups the dispatch waits on (their call ids).
    parked: SmallVec<[RequestId; 1]>,
    sleep_until: Option<Time>,
    budget_ms: u64,
    /// Created on the first backoff: most operations never sleep.
    backoff: Option<Box<Backoffer>>,
    timeout: Duration,
    retried: bool,
    /// Leader hints followed without a backoff in between.
    leader_hops: u32,
    /// Writes whose outcome matters when a call fails in transport (see
    /// [`Dispatch::tracking_undetermined`]); `None` for everything else.
    undetermined: Option<Box<Undetermined>>,
}

/// Which items' last attempt failed in transport, so that their write may have applied
/// without the dispatch hearing of it (client-go's sender `rpcError`).
#[derive(Debug, Default)]
struct Undetermined {
    items: Items,
    last_error: Option<RpcError>,
    /// TiKV's undetermined-result region error is retried instead of failing (the write is
    /// idempotent and nothing is decided by it).
    retry_region_error: bool,
}

/// Most items a new region group reserves room for up front.
const GROUP_RESERVE: usize = 64;

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
            queued: VecDeque::new(),
            max_inflight: usize::MAX,
            parked: SmallVec::new(),
            sleep_until: None,
            budget_ms,
            backoff: None,
            timeout,
            retried: false,
            leader_hops: 0,
            undetermined: None,
        }
    }

    /// This dispatch keeps at most `max` requests out at once (at least one): further
    /// requests wait in build order and go out one by one as answers come back, as
    /// client-go's committer `batchExecutor` hands out its tokens.
    pub(crate) fn with_max_inflight(mut self, max: usize) -> Self {
        self.max_inflight = max.max(1);
        self
    }

    /// This dispatch remembers which items' last attempt failed in transport, for
    /// [`undetermined_error`](Self::undetermined_error). With `retry_region_error`, TiKV's
    /// undetermined-result region error is backed off and retried like a region miss
    /// (writes whose repetition is harmless and which decide nothing, such as a two-phase
    /// prewrite); without it, the dispatch fails with [`Error::Undetermined`].
    pub(crate) fn tracking_undetermined(mut self, retry_region_error: bool) -> Self {
        self.undetermined = Some(Box::new(Undetermined {
            retry_region_error,
            ..Undetermined::default()
        }));
        self
    }

    /// The transport error of an item whose last attempt failed in transport and got no
    /// answer since: its write may have applied. `None` when every item was answered (or
    /// tracking is off).
    pub(crate) fn undetermined_error(&self) -> Option<&RpcError> {
        let tracked = self.undetermined.as_deref()?;
        if tracked.items.is_empty() {
            return None;
        }
        tracked.last_error.as_ref()
    }

    /// Advances the dispatch with `input`.
    pub(crate) fn handle(
        &mut self,
        cx: &mut Cx<'_>,
        input: DispatchInput,
        plan: &mut dyn Plan,
    ) -> Progress {
        match input {
            DispatchInput::Start => self.start(cx, plan),
            DispatchInput::Reply(id, reply) => self.on_reply(cx, id, reply, plan),
            DispatchInput::Timer => self.on_timer(cx, plan),
        }
    }

    /// Routes and sends every item (the operation just started).
    pub(crate) fn start(&mut self, cx: &mut Cx<'_>, plan: &mut dyn Plan) -> Progress {
        self.resume(cx, plan)
    }

    /// Takes the answer to call `id`: a request's reply, or a PD lookup the dispatch
    /// waited on. Answers to calls it does not know (an earlier attempt) are ignored.
    pub(crate) fn on_reply(
        &mut self,
        cx: &mut Cx<'_>,
        id: RequestId,
        reply: Reply,
        plan: &mut dyn Plan,
    ) -> Progress {
        match reply {
            Reply::Rpc(reply) => {
                let Some(index) = self.inflight.iter().position(|sent| sent.id == id) else {
                    return self.progress();
                };
                let sent = self.inflight.swap_remove(index);
                if let Err(err) = self.on_response(cx, sent, reply, plan) {
                    return Progress::Failed(err);
                }
            }
            Reply::Ready(result) => {
                let Some(index) = self.parked.iter().position(|call| *call == id) else {
                    return self.progress();
                };
                self.parked.swap_remove(index);
                if let Err(err) = result {
                    return Progress::Failed(err);
                }
            }
            Reply::Pd(_) | Reply::Timestamp(_) => return self.progress(),
        }
        self.resume(cx, plan)
    }

    /// The routing keys of `items`.
    pub(crate) fn keys_of(&self, items: &[usize]) -> SmallVec<[Bytes; 1]> {
        items
            .iter()
            .filter_map(|&item| self.keys.get(item).cloned())
            .collect()
    }

    /// Sends `items` again on the next drive (their answers asked for it: a lock that was
    /// resolved since).
    pub(crate) fn retry(&mut self, items: &[usize]) {
        self.requeue(items);
    }

    /// A timer fired: routes what waited for a backoff to pass.
    pub(crate) fn on_timer(&mut self, cx: &mut Cx<'_>, plan: &mut dyn Plan) -> Progress {
        self.resume(cx, plan)
    }

    /// Whether the dispatch waits on nothing it sent or parked on (a backoff at most).
    fn resume(&mut self, cx: &mut Cx<'_>, plan: &mut dyn Plan) -> Progress {
        // Requests already built wait for a free slot, not for another item's backoff.
        if !self.queued.is_empty() {
            self.send_queued(cx);
        }
        if let Some(until) = self.sleep_until {
            if until > cx.now() {
                cx.wake_at(until);
                return self.progress();
            }
            self.sleep_until = None;
        }
        if !self.parked.is_empty() {
            // Still waiting for PD: routing again now would only park again.
            return self.progress();
        }
        if let Err(err) = self.route_pending(cx, plan) {
            return Progress::Failed(err);
        }
        // Routing may have decided to back off (no usable peer): wake up for it.
        if let Some(until) = self.sleep_until {
            if until > cx.now() {
                cx.wake_at(until);
            }
        }
        self.progress()
    }

    fn progress(&self) -> Progress {
        if self.pending.is_empty() && self.inflight.is_empty() && self.queued.is_empty() {
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
        cx: &mut Cx<'_>,
        kind: BackoffKind,
        cause: &dyn std::fmt::Display,
    ) -> Result<(), Error> {
        let budget_ms = self.budget_ms;
        let sleep = self
            .backoff
            .get_or_insert_with(|| Box::new(Backoffer::new(budget_ms)))
            .next_sleep(kind, cx.rng(), cause)
            .map_err(Error::from)?;
        let until = cx.now() + sleep;
        self.sleep_until = Some(self.sleep_until.map_or(until, |t| t.max(until)));
        Ok(())
    }

    fn on_response(
        &mut self,
        cx: &mut Cx<'_>,
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
                if let Some(tracked) = self.undetermined.as_deref_mut() {
                    for &item in &sent.items {
                        if !tracked.items.contains(&item) {
                            tracked.items.push(item);
                        }
                    }
                    tracked.last_error = Some(err.clone());
                }
                // client-go's onSendFail: forget what we knew about the route, back off, retry.
                super::on_send_failure(cx.services(), &sent.route);
                self.requeue(&sent.items);
                return self.sleep(cx, BackoffKind::TiKvRpc, &err);
            }
        };
        let Some(region_error) = response.take_region_error() else {
            if !sent.route.leader_known {
                // A peer tried while the leader was unknown served a leader request: it is
                // the leader (client-go's replica selector records it the same way).
                cx.cache()
                    .update_leader(sent.route.ver_id, &sent.route.peer);
            }
            if let Some(tracked) = self.undetermined.as_deref_mut() {
                // The store processed the items: a later answer settles an earlier lost one.
                tracked.items.retain(|item| !sent.items.contains(item));
            }
            return plan.absorb(&sent.items, &sent.route, response);
        };
        let mut retry = classify(sent.route.region.id, &region_error);
        if self
            .undetermined
            .as_deref()
            .is_some_and(|tracked| tracked.retry_region_error)
            && matches!(retry, RegionRetry::Fail(Error::Undetermined(_)))
        {
            retry = RegionRetry::Backoff(BackoffKind::RegionMiss);
        }
        super::apply_region_retry(cx.services(), &sent.route, &mut retry);
        match retry {
            RegionRetry::UpdateLeader { .. } => {
                self.requeue(&sent.items);
                // A leader hint is retried at once, but not forever: peers that keep pointing
                // at each other (a leader moving, a stale view) get a backoff, which also bounds
                // the operation by its budget.
                self.leader_hops += 1;
                if self.leader_hops > MAX_LEADER_HOPS {
                    self.leader_hops = 0;
                    return self.sleep(cx, BackoffKind::RegionScheduling, &region_error.message);
                }
                Ok(())
            }
            RegionRetry::Backoff(kind) | RegionRetry::NextPeer(kind) => {
                self.requeue(&sent.items);
                self.sleep(cx, kind, &region_error.message)
            }
            RegionRetry::Relocate { backoff, .. } => {
                self.requeue(&sent.items);
                match backoff {
                    Some(kind) => self.sleep(cx, kind, &describe(&region_error)),
                    None => Ok(()),
                }
            }
            RegionRetry::Fail(err) => Err(err),
        }
    }

    fn route_pending(&mut self, cx: &mut Cx<'_>, plan: &mut dyn Plan) -> Result<(), Error> {
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
            // A key inside the region just routed goes with it: the cache would answer the
            // same region and peer, so one look-up serves the whole run of keys.
            if let Some((last, items)) = groups.last_mut() {
                let region = &last.region;
                if crate::region::range_holds(
                    &region.start_key,
                    &region.end_key,
                    &keys[item],
                    self.reverse,
                ) {
                    items.push(item);
                    continue;
                }
            }
            let op = cx.op();
            match super::route(
                cx.services(),
                op,
                &keys[item],
                self.reverse,
                last_key.as_deref(),
            ) {
                Routing::Ready(route) => match groups.last_mut() {
                    Some((last, items)) if last.region.id == route.region.id => items.push(item),
                    _ => {
                        // Room for the keys left (most often they land here), capped so
                        // that a batch over many regions does not reserve its whole length
                        // once per region.
                        let mut items =
                            Items::with_capacity((pending.len() - position).min(GROUP_RESERVE));
                        items.push(item);
                        groups.push((route, items));
                    }
                },
                Routing::Parked(call) => {
                    // Later keys most likely fall in the region this lookup returns: wait for it
                    // instead of asking PD once per key.
                    self.parked.push(call);
                    self.pending.extend(pending[position..].iter().copied());
                    break;
                }
                Routing::Unavailable(err) => {
                    // Nothing to send to now; the region reloads after the backoff.
                    self.pending.extend(pending[position..].iter().copied());
                    self.sleep(cx, BackoffKind::RegionMiss, &err)?;
                    break;
                }
            }
        }
        let (timeout, retried, max_inflight) = (self.timeout, self.retried, self.max_inflight);
        let op = cx.op();
        let services = cx.services();
        for (route, items) in groups {
            let (inflight, queued) = (&mut self.inflight, &mut self.queued);
            plan.build(&items, &route, &mut |items, request| {
                // Straight out while under the cap (always, for point operations): the
                // queue is only for what the cap holds back, in build order.
                if queued.is_empty() && inflight.len() < max_inflight {
                    let id = super::send_store(services, op, &route, request, timeout, retried);
                    inflight.push(Sent {
                        id,
                        items,
                        route: route.clone(),
                    });
                } else {
                    queued.push_back(Queued {
                        items,
                        route: route.clone(),
                        request,
                        retried,
                    });
                }
            });
        }
        Ok(())
    }

    /// Sends queued requests while the in-flight cap allows.
    fn send_queued(&mut self, cx: &mut Cx<'_>) {
        while self.inflight.len() < self.max_inflight {
            let Some(Queued {
                items,
                route,
                request,
                retried,
            }) = self.queued.pop_front()
            else {
                return;
            };
            let op = cx.op();
            let id = super::send_store(cx.services(), op, &route, request, self.timeout, retried);
            self.inflight.push(Sent { id, items, route });
        }
    }
}

fn describe(err: &tikv_proto::errorpb::Error) -> String {
    if err.message.is_empty() {
        format!("{err:?}")
    } else {
        err.message.clone()
    }
}
