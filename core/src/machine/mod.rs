//! The client machine: all shared client state and every in-flight operation, sans IO.
//!
//! ```text
//!  handle_command ─┐                         ┌─► poll_transmit  (requests to PD and stores)
//!  handle_reply  ──┼─► Core (operations,  ───┼─► poll_event     (finished user operations)
//!  handle_timeout ─┤    services, entities)  └─► poll_timeout   (the next deadline)
//!  cancel ─────────┤
//!  handle_wall_clock
//! ```
//!
//! The crate docs state the contract (drain order, time rules, the canonical loop). Inside,
//! each user command becomes an operation (`op::Operation`) in the operation table;
//! the services (outbox, wait list, PD, region cache, sender) are shared by all of them; and
//! long-lived entities (`entity::Entities`) hold state that outlives one operation.

#[cfg(test)]
mod cache_port_tests;
#[cfg(test)]
mod framework_tests;
#[cfg(test)]
mod pd_group_tests;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use smallvec::SmallVec;
use tikv_proto::rpc::RpcError;

use crate::config::Config;
use crate::entity::Entities;
use crate::error::Error;
use crate::op::{Cx, Next, Operation, Parent, Services};
use crate::outbox::{Expired, IdMap, Owner, Reply};
use crate::rpc::Response;
use crate::time::Time;

pub use crate::command::{Command, Output};
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(
    test,
    allow(unused_imports, reason = "for fuzz targets and the tests crate")
)]
pub use crate::command::{
    KeyMode, MaintenanceCommand, PdCommand, RawCommand, RegionCommand, TxnCommand,
};
pub use crate::outbox::{OpId, RequestId, Transmit};

/// A fact the machine reports.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A user's operation finished with this result.
    Done(OpId, Result<Output, Error>),
}

/// One operation in the table.
#[derive(Debug)]
struct Slot {
    /// `None` only while the operation is in a transition.
    op: Option<Box<dyn Operation>>,
    parent: Parent,
    children: SmallVec<[OpId; 2]>,
}

/// What a machine knows of PD's group (tests).
#[cfg(any(test, feature = "testing"))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PdView {
    /// The leader's `host:port`, when known.
    pub leader: Option<String>,
    /// The `host:port` of every member discovery asks (PD's member list once PD answered,
    /// the configured endpoints before).
    pub endpoints: Vec<String>,
}

/// The sans-IO client machine.
#[derive(Debug)]
pub struct Core {
    services: Services,
    ops: IdMap<OpId, Slot>,
    entities: Entities,
    /// Children that finished, for their parents to hear.
    child_results: VecDeque<(OpId, OpId, Result<Output, Error>)>,
    events: VecDeque<Event>,
}

impl Core {
    /// A machine for the cluster whose PD answers at `pd_endpoints` (`host:port`), starting
    /// at monotonic time `now`.
    ///
    /// Errors with [`Error::InvalidArgument`] when no endpoint is given.
    pub fn new(config: Config, pd_endpoints: Vec<String>, now: Time) -> Result<Self, Error> {
        if pd_endpoints.is_empty() {
            return Err(Error::InvalidArgument(
                "at least one PD endpoint is required".to_owned(),
            ));
        }
        let seed = config.effective_rng_seed();
        Ok(Self {
            services: Services::new(config, seed, pd_endpoints, now, 0),
            ops: IdMap::default(),
            entities: Entities::default(),
            child_results: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// Takes the wall clock: milliseconds since the Unix epoch. Feed it with every batch of
    /// inputs (the driver does, before each one); it is read only where TiKV's protocol
    /// speaks wall-clock time (lock TTLs). Until first fed it reads 0, at which no lock
    /// looks expired, so a machine that was never told the time never resolves a lock
    /// early. It may move backwards (a clock step); nothing orders by it.
    pub fn handle_wall_clock(&mut self, unix_ms: u64) {
        let now = self.services.now();
        self.services.advance(now, unix_ms);
    }

    /// Starts an operation; its result arrives later as [`Event::Done`] under the returned
    /// id (possibly already queued when this returns).
    pub fn handle_command(&mut self, now: Time, command: Command) -> OpId {
        self.advance(now);
        let id = self.services.next_op_id();
        let mut cx = Cx::new(id, &mut self.services);
        let op = crate::ops::start(command, &cx);
        // Driven before it enters the table: an operation finished at once (a cached
        // timestamp, bad input) never touches it.
        match op.on_start(&mut cx) {
            Next::Done(result) => {
                self.services.waits.forget(id);
                self.events.push_back(Event::Done(id, result));
            }
            Next::Pending(op) => {
                self.ops.insert(
                    id,
                    Slot {
                        op: Some(op),
                        parent: Parent::User,
                        children: SmallVec::new(),
                    },
                );
            }
        }
        self.run();
        id
    }

    /// Feeds the reply (or transport failure) of request `id`. Replies nobody waits for any
    /// more (the request timed out, or its operation was cancelled) are dropped.
    pub fn handle_reply(&mut self, now: Time, id: RequestId, reply: Result<Response, RpcError>) {
        self.advance(now);
        self.on_reply(id, reply);
        self.run();
    }

    /// Processes every timer due at or before `now` (early calls are harmless).
    pub fn handle_timeout(&mut self, now: Time) {
        self.advance(now);
        for expired in self.services.out.take_due() {
            match expired {
                Expired::Op(op) => self.transition(op, |op, cx| op.on_timer(cx)),
                Expired::Request(owner, id, timeout) => {
                    self.on_owned_reply(owner, id, Err(RpcError::DeadlineExceeded(timeout)));
                }
                Expired::Pd => {
                    let (pd, mut cx) = self.services.pd();
                    pd.on_timer(&mut cx);
                }
                Expired::Entity(entity) => {
                    let wall_ms = self.services.wall_ms;
                    for op in self
                        .entities
                        .on_timer(&mut self.services.out, entity, wall_ms)
                    {
                        let id = self.services.next_op_id();
                        self.services.spawned.push((id, Parent::Detached, op));
                    }
                }
            }
            // Each expiry's consequences settle before the next one is looked at.
            self.run();
        }
        self.run();
    }

    #[cfg_attr(
        not(any(test, feature = "testing")),
        allow(
            dead_code,
            reason = "the driver's cancellation of dropped calls lands next"
        )
    )]
    /// Abandons operation `op` (its caller went away) and every child it started; it
    /// finishes with no event, and answers still coming for it are dropped.
    pub fn cancel(&mut self, now: Time, op: OpId) {
        self.advance(now);
        let Some(slot) = self.ops.get_mut(&op) else {
            return;
        };
        let Some(running) = slot.op.take() else {
            return;
        };
        match running.on_cancel(&mut Cx::new(op, &mut self.services)) {
            None => self.remove_tree(op),
            Some(next) => {
                // It keeps running, reporting to nobody.
                if let Some(slot) = self.ops.get_mut(&op) {
                    slot.parent = Parent::Detached;
                }
                match next {
                    Next::Pending(running) => {
                        if let Some(slot) = self.ops.get_mut(&op) {
                            slot.op = Some(running);
                        }
                    }
                    Next::Done(result) => self.finish(op, result),
                }
                self.run();
            }
        }
    }

    /// The next request to send, if any.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if self.services.out.transmits_empty() {
            // Every operation that asked for a timestamp since the last TSO request is
            // served by this one: batching falls out of draining.
            self.services.flush_tso();
        }
        self.services.out.pop_transmit()
    }

    /// The next finished user operation, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next, if ever. Read it
    /// after draining [`poll_transmit`](Self::poll_transmit): sending arms deadlines.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        self.services.out.next_timeout()
    }

    /// Number of operations in the table (user operations and their children).
    pub fn ops_in_flight(&self) -> usize {
        self.ops.len()
    }

    /// What the machine still holds for unfinished work, one line each: operations, requests
    /// awaiting a reply, armed timers (the periodic store refresh included), operations parked
    /// on PD, timestamps or the keyspace, probes, and outputs not yet drained. Caches (regions,
    /// stores, the last timestamp) are not work and are left out.
    ///
    /// Returns an empty list once the machine is idle: tests assert that a machine ends empty
    /// with it.
    #[cfg(any(test, feature = "testing"))]
    pub fn leftovers(&self) -> Vec<String> {
        let mut left: Vec<String> = self
            .ops
            .keys()
            .map(|op| format!("operation {}", op.0))
            .collect();
        for Event::Done(op, _) in &self.events {
            left.push(format!("result of operation {} not yet polled", op.0));
        }
        for (parent, child, _) in &self.child_results {
            left.push(format!(
                "result of child {} not yet heard by {}",
                child.0, parent.0
            ));
        }
        for (op, _, _) in &self.services.spawned {
            left.push(format!("operation {} not yet started", op.0));
        }
        if self.entities.len() > 0 {
            left.push(format!("{} entities", self.entities.len()));
        }
        self.services
            .out
            .leftovers(&mut left, &|op| self.ops.contains_key(&op));
        self.services.waits.leftovers(&mut left);
        self.services.pd.leftovers(&mut left);
        self.services.resolver.leftovers(&mut left);
        for store_id in &self.services.probing {
            left.push(format!("liveness probe of store {store_id}"));
        }
        left
    }

    /// The cluster id learned from PD (0 until discovery finished).
    #[cfg(any(test, feature = "testing"))]
    pub fn cluster_id(&self) -> u64 {
        self.services.pd.cluster_id()
    }

    /// What the machine knows of PD's group: the leader and the URLs it discovers from.
    #[cfg(any(test, feature = "testing"))]
    pub fn pd_view(&self) -> PdView {
        let (leader, endpoints) = self.services.pd.view();
        PdView { leader, endpoints }
    }

    /// Starts `op` as a user operation (tests of the framework, with operations of their
    /// own).
    #[cfg(test)]
    fn start_root(&mut self, now: Time, op: Box<dyn Operation>) -> OpId {
        self.advance(now);
        let id = self.services.next_op_id();
        self.services.spawned.push((id, Parent::User, op));
        self.run();
        id
    }

    /// Adds a long-lived entity (tests of the framework).
    #[cfg(test)]
    fn insert_entity(
        &mut self,
        entity: Box<dyn crate::entity::Entity>,
        timer: Option<Time>,
    ) -> crate::entity::EntityId {
        self.entities.insert(&mut self.services.out, entity, timer)
    }

    fn advance(&mut self, now: Time) {
        let wall_ms = self.services.wall_ms;
        self.services.advance(now, wall_ms);
    }

    fn on_reply(&mut self, id: RequestId, reply: Result<Response, RpcError>) {
        if let Some((owner, reply)) = self.services.out.take_reply(id, reply) {
            self.on_owned_reply(owner, id, reply);
        }
    }

    fn on_owned_reply(&mut self, owner: Owner, id: RequestId, reply: Result<Response, RpcError>) {
        match owner {
            Owner::Op(op) => self.services.out.deliver(op, id, Reply::Rpc(reply)),
            Owner::Pd => {
                let (pd, mut cx) = self.services.pd();
                pd.on_reply(&mut cx, id, reply);
            }
            Owner::Probe(store_id) => crate::sender::on_probe(&mut self.services, store_id, reply),
        }
    }

    /// Runs one transition of operation `id`, then settles its end.
    fn transition(&mut self, id: OpId, step: impl FnOnce(Box<dyn Operation>, &mut Cx<'_>) -> Next) {
        let Some(op) = self.ops.get_mut(&id).and_then(|slot| slot.op.take()) else {
            // Gone (finished or cancelled): answers and timers for it are dropped.
            return;
        };
        let next = step(op, &mut Cx::new(id, &mut self.services));
        match next {
            Next::Pending(op) => {
                if let Some(slot) = self.ops.get_mut(&id) {
                    slot.op = Some(op);
                }
            }
            Next::Done(result) => self.finish(id, result),
        }
    }

    /// Operation `id` ended: its children are cancelled, and its parent (or its user)
    /// hears the result.
    fn finish(&mut self, id: OpId, result: Result<Output, Error>) {
        let parent = self.ops.get(&id).map_or(Parent::User, |slot| slot.parent);
        self.remove_tree(id);
        match parent {
            Parent::User => self.events.push_back(Event::Done(id, result)),
            Parent::Op(parent) => self.child_results.push_back((parent, id, result)),
            Parent::Detached => {}
        }
    }

    /// Removes `id` and its descendants from the table and every wait list.
    fn remove_tree(&mut self, id: OpId) {
        // The common case, an operation without children, allocates nothing.
        let Some(children) = self.remove_one(id) else {
            return;
        };
        let mut doomed: Vec<OpId> = children.into_vec();
        // Bounded by the table's size: each id is removed once.
        while let Some(child) = doomed.pop() {
            if let Some(grandchildren) = self.remove_one(child) {
                doomed.extend(grandchildren);
            }
        }
    }

    /// Removes one operation; returns its children when it had any.
    fn remove_one(&mut self, id: OpId) -> Option<SmallVec<[OpId; 2]>> {
        self.services.waits.forget(id);
        let services = &mut self.services;
        services
            .resolver
            .forget(id, &mut services.waits, &mut services.out);
        let slot = self.ops.remove(&id)?;
        if let Parent::Op(parent) = slot.parent {
            if let Some(parent) = self.ops.get_mut(&parent) {
                parent.children.retain(|child| *child != id);
            }
        }
        (!slot.children.is_empty()).then_some(slot.children)
    }

    /// Settles everything the last input set in motion: new operations start, ready answers
    /// reach their operations, finished children reach their parents. Each step consumes
    /// one queued item, and items are only produced by operations acting on earlier ones.
    fn run(&mut self) {
        loop {
            if let Some((id, parent, op)) = self.services.spawned.pop() {
                self.start(id, parent, op);
            } else if let Some((op, id, reply)) = self.services.out.next_ready() {
                self.transition(op, |op, cx| op.on_reply(cx, id, reply));
            } else if let Some((parent, child, result)) = self.child_results.pop_front() {
                self.transition(parent, |op, cx| op.on_child_done(cx, child, result));
            } else {
                return;
            }
        }
    }

    fn start(&mut self, id: OpId, parent: Parent, op: Box<dyn Operation>) {
        if let Parent::Op(parent_id) = parent {
            match self.ops.get_mut(&parent_id) {
                Some(slot) => slot.children.push(id),
                // The parent ended before its child started: the child is not needed.
                None => return,
            }
        }
        self.ops.insert(
            id,
            Slot {
                op: Some(op),
                parent,
                children: SmallVec::new(),
            },
        );
        self.transition(id, |op, cx| op.on_start(cx));
    }
}
#[cfg(test)]
mod size_tests {
    /// Every point operation moves its reply, output and event by value through the
    /// machine, the driver and a channel; a large variant (a PD answer, a lock's status)
    /// made each of those moves a several-hundred-byte copy. Large variants are boxed.
    #[test]
    fn values_moved_per_operation_stay_small() {
        use std::mem::size_of;
        assert!(size_of::<crate::outbox::Reply>() <= 64);
        assert!(size_of::<crate::command::Output>() <= 48);
        assert!(size_of::<Result<crate::command::Output, crate::Error>>() <= 56);
        assert!(size_of::<super::Event>() <= 64);
        // A raw operation is built on the stack and moved into its box and the table: its
        // request (several hundred bytes) and a range walk's template are boxed.
        assert!(size_of::<crate::ops::raw::RawOp>() <= 512);
    }
}
