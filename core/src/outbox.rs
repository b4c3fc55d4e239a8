//! The machine's outbox: request ids, the requests waiting to be sent, who waits for each
//! answer, every timer, and the answers ready to be handed to operations.
//!
//! Every service that talks to the outside (PD, the region request sender, operations
//! sending their own requests) goes through here, so one table knows every request in
//! flight and one ordered set holds every deadline: the machine's next wake-up is its first
//! element.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tikv_proto::rpc::RpcError;

use crate::error::Error;
use crate::oracle::Timestamp;
use crate::rpc::{PdResponse, Request, Response};
use crate::time::Time;

/// Identifies one operation in the machine (a user's command, or a child an operation
/// started).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub(crate) u64);

impl OpId {
    /// The id's number, for traces and logs.
    #[cfg(feature = "testing")]
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Identifies one call the machine made (a request sent, or a wait registered with a
/// service); its answer comes back under the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub(crate) u64);

impl RequestId {
    /// The id's number, as transports carry it (BatchCommands request ids) and traces
    /// print it.
    #[cfg(feature = "testing")]
    pub fn get(self) -> u64 {
        self.0
    }

    /// The id whose number a transport carried back (see [`get`](Self::get)).
    #[cfg(feature = "testing")]
    pub fn from_wire(id: u64) -> Self {
        Self(id)
    }
}

/// One request for the driver to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Transmit {
    /// Echo this in [`Core::handle_reply`](crate::machine::Core::handle_reply).
    pub id: RequestId,
    /// Where to send it: `host:port` of a store or of the PD leader (shared: many requests go
    /// to the same few addresses).
    pub address: Arc<str>,
    /// What to send.
    pub request: Request,
    /// How long the call may take; the machine also enforces this itself.
    pub timeout: Duration,
}

/// An answer handed to an operation, addressed by the id of the call it answers.
#[derive(Debug)]
pub(crate) enum Reply {
    /// A store's answer to a request the operation sent (or why the call failed).
    Rpc(Result<Response, RpcError>),
    /// PD's answer to a call the operation made through the PD service, after its
    /// discovery, failover and retry (header errors are left for the operation to read).
    /// Boxed: PD answers are several hundred bytes and rare, while every store reply
    /// moves through the same queue.
    Pd(Result<Box<PdResponse>, Error>),
    /// A timestamp the operation asked TSO for.
    Timestamp(Result<Timestamp, Error>),
    /// What the operation waited for (a region or store lookup, the keyspace) is ready, or
    /// failed for good.
    Ready(Result<(), Error>),
}

/// Who waits for a request's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// An operation.
    Op(OpId),
    /// The PD service (lookups, TSO, discovery, calls it makes for operations).
    Pd,
    /// The region request sender's liveness probe of this store.
    Probe(u64),
}

/// What a timer wakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKey {
    /// An operation.
    Op(OpId),
    /// A request's deadline.
    Request(RequestId),
    /// The PD service (retries, the store list refresh).
    Pd,
    /// A long-lived entity (its timers die with it).
    Entity(u64),
}

/// A timer that fired, for the machine to dispatch.
#[derive(Debug)]
pub(crate) enum Expired {
    /// An operation's timer.
    Op(OpId),
    /// A request's deadline passed: its owner gets a deadline error for it.
    Request(Owner, RequestId, Duration),
    /// The PD service's timer.
    Pd,
    /// An entity's timer.
    Entity(u64),
}

#[derive(Debug)]
struct InFlight {
    owner: Owner,
    deadline: Time,
    timeout: Duration,
}

/// Requests, timers and ready answers.
#[derive(Debug)]
pub(crate) struct Outbox {
    now: Time,
    next_id: u64,
    inflight: BTreeMap<RequestId, InFlight>,
    timers: BTreeSet<(Time, TimerKey)>,
    transmits: VecDeque<Transmit>,
    /// Answers ready for operations, in the order they became ready.
    ready: VecDeque<(OpId, RequestId, Reply)>,
}

impl Outbox {
    /// An empty outbox at `now`.
    pub(crate) fn new(now: Time) -> Self {
        Self {
            now,
            next_id: 1,
            inflight: BTreeMap::new(),
            timers: BTreeSet::new(),
            transmits: VecDeque::new(),
            ready: VecDeque::new(),
        }
    }

    /// The machine's current time.
    pub(crate) fn now(&self) -> Time {
        self.now
    }

    /// Moves the clock forward; an earlier `now` is ignored (time never runs backwards
    /// inside the machine).
    pub(crate) fn advance(&mut self, now: Time) {
        if now > self.now {
            self.now = now;
        }
    }

    /// A fresh id for a call that is not a request (a wait registered with a service).
    pub(crate) fn next_id(&mut self) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        id
    }

    /// Queues a request for `owner` and arms its deadline.
    pub(crate) fn transmit(
        &mut self,
        owner: Owner,
        address: Arc<str>,
        request: Request,
        timeout: Duration,
    ) -> RequestId {
        let id = self.next_id();
        let deadline = self.now + timeout;
        self.inflight.insert(
            id,
            InFlight {
                owner,
                deadline,
                timeout,
            },
        );
        self.timers.insert((deadline, TimerKey::Request(id)));
        self.transmits.push_back(Transmit {
            id,
            address,
            request,
            timeout,
        });
        id
    }

    /// Who waits for the answer to `id`, removing the request from the table. A reply that
    /// arrives after its deadline counts as the deadline passing: the timer may simply not
    /// have fired yet. Unknown ids (timed out, or their owner is gone) give `None`.
    pub(crate) fn take_reply(
        &mut self,
        id: RequestId,
        reply: Result<Response, RpcError>,
    ) -> Option<(Owner, Result<Response, RpcError>)> {
        let inflight = self.inflight.remove(&id)?;
        self.timers
            .remove(&(inflight.deadline, TimerKey::Request(id)));
        let reply = if self.now > inflight.deadline {
            Err(RpcError::DeadlineExceeded(inflight.timeout))
        } else {
            reply
        };
        Some((inflight.owner, reply))
    }

    /// Hands `reply` to operation `op` as the answer to call `id`.
    pub(crate) fn deliver(&mut self, op: OpId, id: RequestId, reply: Reply) {
        self.ready.push_back((op, id, reply));
    }

    /// The next answer ready for an operation.
    pub(crate) fn next_ready(&mut self) -> Option<(OpId, RequestId, Reply)> {
        self.ready.pop_front()
    }

    /// Wakes `key` at `at` (at once if that has passed).
    pub(crate) fn set_timer(&mut self, key: TimerKey, at: Time) {
        self.timers.insert((at, key));
    }

    /// Drops the timer of `key` set for `at`.
    pub(crate) fn cancel_timer(&mut self, key: TimerKey, at: Time) {
        self.timers.remove(&(at, key));
    }

    /// Removes and returns the timers due now.
    pub(crate) fn take_due(&mut self) -> Vec<Expired> {
        let mut expired = Vec::new();
        while let Some(&(at, key)) = self.timers.first() {
            if at > self.now {
                break;
            }
            self.timers.pop_first();
            match key {
                TimerKey::Op(op) => expired.push(Expired::Op(op)),
                TimerKey::Pd => {
                    // Several PD timers due at once need one wake-up.
                    if !expired.iter().any(|e| matches!(e, Expired::Pd)) {
                        expired.push(Expired::Pd);
                    }
                }
                TimerKey::Entity(entity) => expired.push(Expired::Entity(entity)),
                TimerKey::Request(id) => {
                    if let Some(inflight) = self.inflight.remove(&id) {
                        expired.push(Expired::Request(inflight.owner, id, inflight.timeout));
                    }
                }
            }
        }
        expired
    }

    /// The next request to send.
    pub(crate) fn pop_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Whether no request waits to be sent.
    pub(crate) fn transmits_empty(&self) -> bool {
        self.transmits.is_empty()
    }

    /// The earliest timer.
    pub(crate) fn next_timeout(&self) -> Option<Time> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Appends requests awaiting answers, armed timers, requests not yet polled and answers
    /// not yet handed over (see `Core::leftovers`).
    #[cfg(any(test, feature = "testing"))]
    ///
    /// A timer of an operation that no longer runs (`op_lives` says which do) is not work:
    /// it fires into nothing. Operations removed while sleeping leave such timers, which
    /// are not searched for at removal because that would cost every finish a scan.
    pub(crate) fn leftovers(&self, left: &mut Vec<String>, op_lives: &dyn Fn(OpId) -> bool) {
        for (id, inflight) in &self.inflight {
            left.push(format!("request #{} for {:?}", id.0, inflight.owner));
        }
        for (at, key) in &self.timers {
            if matches!(key, TimerKey::Op(op) if !op_lives(*op)) {
                continue;
            }
            left.push(format!("timer at {at} for {key:?}"));
        }
        for transmit in &self.transmits {
            left.push(format!("request #{} not yet polled", transmit.id.0));
        }
        for (op, id, _) in &self.ready {
            left.push(format!(
                "answer #{} for operation {} not yet handed over",
                id.0, op.0
            ));
        }
    }
}

impl OpId {
    /// The id after this one.
    pub(crate) fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// The first id the machine hands out.
    pub(crate) const FIRST: Self = Self(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::PdRequest;

    fn request() -> Request {
        Request::Pd(Box::new(PdRequest::GetMembers(Default::default())))
    }

    #[test]
    fn late_reply_counts_as_deadline() {
        let mut out = Outbox::new(Time::ZERO);
        let id = out.transmit(
            Owner::Pd,
            Arc::from("pd:1"),
            request(),
            Duration::from_secs(1),
        );
        assert_eq!(out.next_timeout(), Some(Time::from_millis(1_000)));
        out.advance(Time::from_millis(1_001));
        let Some((owner, reply)) = out.take_reply(id, Err(RpcError::Cancelled)) else {
            panic!("the request is in flight");
        };
        assert_eq!(owner, Owner::Pd);
        assert_eq!(
            reply,
            Err(RpcError::DeadlineExceeded(Duration::from_secs(1)))
        );
        assert_eq!(out.next_timeout(), None, "its deadline timer is gone");
        assert!(out.take_reply(id, Err(RpcError::Cancelled)).is_none());
    }

    #[test]
    fn due_timers_come_in_time_order_and_pd_once() {
        let mut out = Outbox::new(Time::ZERO);
        out.set_timer(TimerKey::Pd, Time::from_millis(5));
        out.set_timer(TimerKey::Op(OpId(7)), Time::from_millis(3));
        out.set_timer(TimerKey::Pd, Time::from_millis(4));
        out.set_timer(TimerKey::Entity(2), Time::from_millis(9));
        out.advance(Time::from_millis(6));
        let due = out.take_due();
        assert!(matches!(
            due.as_slice(),
            [Expired::Op(OpId(7)), Expired::Pd]
        ));
        assert_eq!(out.next_timeout(), Some(Time::from_millis(9)));
        out.cancel_timer(TimerKey::Entity(2), Time::from_millis(9));
        assert_eq!(out.next_timeout(), None);
    }

    #[test]
    fn clock_never_runs_backwards() {
        let mut out = Outbox::new(Time::from_millis(10));
        out.advance(Time::from_millis(5));
        assert_eq!(out.now(), Time::from_millis(10));
    }
}
