//! The operation framework: what every operation implements, and the services it reaches
//! through its context.
//!
//! An operation is a value that the machine owns and moves through its transitions: each
//! `on_*` method consumes it and returns what it became ([`Next::Pending`], possibly a
//! different state struct) or how it ended ([`Next::Done`]). It hears four things:
//!
//! ```text
//!               ┌──────────── on_reply(id, Reply) ◄── a store/PD/TSO answer, or a wait
//!               │                                     that became ready, under its call id
//!  on_start ──► Pending ◄──── on_timer ◄──────────── a timer it armed
//!               │    ▲
//!               │    └─────── on_child_done(child, result) ◄── a child it spawned ended
//!               ▼
//!             Done(result) ──► parent's on_child_done, or (a root) the user's event
//! ```
//!
//! Every call an operation makes returns an id, and the answer comes back under that id, so
//! an operation may have any number of calls in flight. Waiting for shared things (the
//! keyspace, a region, a store address, a timestamp) goes through the one wait list, which
//! coalesces concurrent waits for the same thing. A child operation has its own id and a
//! parent link; only root operations produce user events. Cancelling an operation cancels
//! its children.

use std::time::Duration;

use crate::command::Output;
use crate::config::Config;
use crate::error::Error;
use crate::oracle::Timestamp;
use crate::outbox::{OpId, Outbox, Owner, Reply, RequestId, TimerKey};
use crate::pd::{PdCx, PdService, Readiness};
use crate::rand::Rng;
use crate::region::{RegionCache, RegionCacheConfig};
use crate::rpc::{PdRequest, Request};
use crate::time::Time;
use crate::wait::{Waiter, Waits};

/// What an operation became after a transition.
#[derive(Debug)]
pub(crate) enum Next {
    /// Still running, in this state.
    Pending(Box<dyn Operation>),
    /// Finished with this result.
    Done(Result<Output, Error>),
}

/// A running operation. See the module docs for the protocol.
///
/// Only `on_start` and `waiting` must be written; an operation that does not expect replies,
/// timers or children leaves those transitions to their defaults, which keep it as it is.
pub(crate) trait Operation: std::fmt::Debug + Send {
    /// The operation was just created: make its first calls.
    fn on_start(self: Box<Self>, cx: &mut Cx<'_>) -> Next;

    /// The operation unchanged, still pending (`Next::Pending(self)`: the one line each
    /// operation writes so that the defaults below can keep it).
    fn waiting(self: Box<Self>) -> Next;

    /// The answer to call `id` arrived (a late answer to a call it no longer cares about
    /// must be ignored).
    fn on_reply(self: Box<Self>, cx: &mut Cx<'_>, id: RequestId, reply: Reply) -> Next {
        let _ = (cx, id, reply);
        self.waiting()
    }

    /// A timer it armed fired (timers are not named: check what is due).
    fn on_timer(self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        let _ = cx;
        self.waiting()
    }

    /// Child `child` finished with `result`.
    fn on_child_done(
        self: Box<Self>,
        cx: &mut Cx<'_>,
        child: OpId,
        result: Result<Output, Error>,
    ) -> Next {
        let _ = (cx, child, result);
        self.waiting()
    }

    /// The user stopped waiting for this root operation. `None` (the default) drops it and
    /// its children; `Some(next)` keeps it running detached (its end is heard by nobody),
    /// for work that must not stop half-way, such as a commit.
    fn on_cancel(self: Box<Self>, cx: &mut Cx<'_>) -> Option<Next> {
        let _ = cx;
        None
    }
}

/// Who an operation reports to when it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Parent {
    /// A user waits for it: its end is a user event.
    User,
    /// It is a child of this operation.
    Op(OpId),
    /// Nobody waits (background work such as a heartbeat); its end is dropped.
    Detached,
}

/// The machine's shared services. Each owns its state; operations reach them through
/// [`Cx`].
#[derive(Debug)]
pub(crate) struct Services {
    /// The client's settings.
    pub(crate) config: Config,
    /// The one PRNG (backoff jitter, replica choice).
    pub(crate) rng: Rng,
    /// Wall-clock milliseconds since the Unix epoch, as of the last input.
    pub(crate) wall_ms: u64,
    /// Requests, timers and ready answers.
    pub(crate) out: Outbox,
    /// Operations parked on shared things.
    pub(crate) waits: Waits,
    /// PD, TSO and the keyspace.
    pub(crate) pd: PdService,
    /// Regions and stores.
    pub(crate) cache: RegionCache,
    /// What the lock resolver learned about other transactions.
    pub(crate) resolver: crate::resolver::Resolver,
    /// The cached transaction safe point reads are checked against.
    pub(crate) safe_point: crate::safe_point::SafePointCache,
    /// Stores with a liveness probe out (the region request sender's own state).
    pub(crate) probing: std::collections::BTreeSet<u64>,
    /// Operations started during the current input, for the machine to run.
    pub(crate) spawned: Vec<(OpId, Parent, Box<dyn Operation>)>,
    next_op: OpId,
    next_cache_sweep: Time,
}

/// How often the region cache drops expired entries.
const CACHE_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

impl Services {
    /// The services of a machine for the PD cluster at `pd_endpoints`, seeded with `seed`.
    pub(crate) fn new(
        config: Config,
        seed: u64,
        pd_endpoints: Vec<String>,
        now: Time,
        wall_ms: u64,
    ) -> Self {
        Self {
            pd: PdService::new(pd_endpoints, &config),
            cache: RegionCache::new(RegionCacheConfig {
                ttl: config.region_cache_ttl,
                ttl_jitter: config.region_cache_ttl_jitter,
            }),
            probing: std::collections::BTreeSet::new(),
            safe_point: crate::safe_point::SafePointCache::default(),
            resolver: crate::resolver::Resolver::default(),
            rng: Rng::new(seed),
            config,
            wall_ms,
            out: Outbox::new(now),
            waits: Waits::default(),
            spawned: Vec::new(),
            next_op: OpId::FIRST,
            next_cache_sweep: now + CACHE_SWEEP_INTERVAL,
        }
    }

    /// The machine's current time.
    pub(crate) fn now(&self) -> Time {
        self.out.now()
    }

    /// Takes the inputs' clocks: monotonic time never moves back; wall-clock time follows
    /// the source, backwards included (see the crate docs on time).
    pub(crate) fn advance(&mut self, now: Time, wall_ms: u64) {
        self.out.advance(now);
        self.wall_ms = wall_ms;
        // Drop expired and invalidated regions now and then, so the cache holds what is in
        // use rather than everything ever seen.
        if self.out.now() >= self.next_cache_sweep {
            let now = self.out.now();
            self.cache.remove_expired(now);
            self.next_cache_sweep = now + CACHE_SWEEP_INTERVAL;
        }
    }

    /// A fresh operation id.
    pub(crate) fn next_op_id(&mut self) -> OpId {
        let id = self.next_op;
        self.next_op = id.next();
        id
    }

    /// The PD service with what it needs for one call.
    pub(crate) fn pd(&mut self) -> (&mut PdService, PdCx<'_>) {
        (
            &mut self.pd,
            PdCx {
                out: &mut self.out,
                waits: &mut self.waits,
                rng: &mut self.rng,
                cache: &mut self.cache,
            },
        )
    }

    /// Sends every timestamp request waiting (batching falls out of draining: whoever asked
    /// since the last TSO request is served by this one).
    pub(crate) fn flush_tso(&mut self) {
        let (pd, mut cx) = self.pd();
        pd.flush_tso(&mut cx);
    }
}

/// An operation's view of the machine during one transition.
pub(crate) struct Cx<'a> {
    op: OpId,
    services: &'a mut Services,
}

impl<'a> Cx<'a> {
    /// The context of operation `op`.
    pub(crate) fn new(op: OpId, services: &'a mut Services) -> Self {
        Self { op, services }
    }

    /// The running operation's id.
    pub(crate) fn op(&self) -> OpId {
        self.op
    }

    /// The services.
    pub(crate) fn services(&mut self) -> &mut Services {
        self.services
    }

    /// The client's settings.
    pub(crate) fn config(&self) -> &Config {
        &self.services.config
    }

    /// The current time.
    pub(crate) fn now(&self) -> Time {
        self.services.out.now()
    }

    /// Wall-clock milliseconds since the Unix epoch.
    pub(crate) fn wall_ms(&self) -> u64 {
        self.services.wall_ms
    }

    /// A new waiter for this operation, with a fresh call id.
    pub(crate) fn waiter(&mut self) -> Waiter {
        Waiter {
            op: self.op,
            call: self.services.out.next_id(),
        }
    }

    /// Wakes this operation at `at` through [`Operation::on_timer`].
    pub(crate) fn wake_at(&mut self, at: Time) {
        self.services.out.set_timer(TimerKey::Op(self.op), at);
    }

    /// Sends `request` to `address` for this operation; the answer comes as
    /// [`Reply::Rpc`] under the returned id.
    pub(crate) fn send(
        &mut self,
        address: std::sync::Arc<str>,
        request: Request,
        timeout: Duration,
    ) -> RequestId {
        self.services
            .out
            .transmit(Owner::Op(self.op), address, request, timeout)
    }

    /// Calls PD; the answer comes as [`Reply::Pd`] under the returned id.
    pub(crate) fn pd_call(&mut self, request: PdRequest) -> RequestId {
        let waiter = self.waiter();
        let (pd, mut pd_cx) = self.services.pd();
        pd.call(&mut pd_cx, waiter, request);
        waiter.call
    }

    /// Asks TSO for a timestamp; it comes as [`Reply::Timestamp`] under the returned id.
    pub(crate) fn timestamp(&mut self) -> RequestId {
        let waiter = self.waiter();
        let (pd, mut pd_cx) = self.services.pd();
        pd.request_timestamp(&mut pd_cx, waiter);
        waiter.call
    }

    /// Whether the keyspace is ready; when it is loading, the answer comes as
    /// [`Reply::Ready`] under the id inside [`KeyspaceWait::Parked`].
    pub(crate) fn ensure_keyspace(&mut self) -> KeyspaceWait {
        let waiter = self.waiter();
        let (pd, mut pd_cx) = self.services.pd();
        match pd.ensure_keyspace(&mut pd_cx, waiter) {
            Readiness::Ready => KeyspaceWait::Ready,
            Readiness::Parked => KeyspaceWait::Parked(waiter.call),
            Readiness::Failed(err) => KeyspaceWait::Failed(err),
        }
    }

    /// The transaction safe point, if fetched recently enough to trust.
    pub(crate) fn safe_point(&self, now: Time) -> Option<Timestamp> {
        self.services
            .safe_point
            .fresh(now, self.services.config.txn_safe_point_refresh)
    }

    /// The keyspace id in use (API V2), once loaded.
    pub(crate) fn keyspace_id(&self) -> Option<u32> {
        self.services.pd.keyspace_id()
    }

    /// The newest timestamp seen and when it arrived.
    pub(crate) fn last_timestamp(&self) -> Option<(Timestamp, Time)> {
        self.services.pd.last_timestamp()
    }

    /// The newest timestamp seen, if it arrived no earlier than `oldest`.
    pub(crate) fn recent_timestamp(&self, oldest: Time) -> Option<Timestamp> {
        self.services.pd.recent_timestamp(oldest)
    }

    /// Starts `child`, reporting to this operation through
    /// [`Operation::on_child_done`]; returns its id.
    pub(crate) fn spawn_child(&mut self, child: Box<dyn Operation>) -> OpId {
        let id = self.services.next_op_id();
        self.services.spawned.push((id, Parent::Op(self.op), child));
        id
    }

    /// Starts `op` in the background: it reports to nobody and outlives this operation
    /// (the rest of a commit after the user has the answer).
    pub(crate) fn spawn_detached(&mut self, op: Box<dyn Operation>) -> OpId {
        let id = self.services.next_op_id();
        self.services.spawned.push((id, Parent::Detached, op));
        id
    }

    /// The backoff budget and PRNG for a backoff decision.
    pub(crate) fn rng(&mut self) -> &mut Rng {
        &mut self.services.rng
    }

    /// Routing key helpers need the raw region cache at times (locate).
    pub(crate) fn cache(&mut self) -> &mut RegionCache {
        &mut self.services.cache
    }

    /// Caches a region PD reported (see [`crate::pd::cache_region`]).
    pub(crate) fn cache_region(
        &mut self,
        response: tikv_proto::pdpb::GetRegionResponse,
    ) -> Result<crate::region::RegionRef, crate::region::InsertError> {
        let now = self.now();
        let services = &mut *self.services;
        crate::pd::cache_region(&mut services.cache, &mut services.rng, response, now)
    }
}

/// Whether an operation may go on with the keyspace.
#[derive(Debug)]
pub(crate) enum KeyspaceWait {
    /// Loaded (or not needed).
    Ready,
    /// Loading: the answer comes under this id.
    Parked(RequestId),
    /// It cannot be used.
    Failed(Error),
}
