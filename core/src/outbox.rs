//! The machine's outbox: request ids, the requests waiting to be sent, who waits for each
//! answer, every timer, and the answers ready to be handed to operations.
//!
//! Every service that talks to the outside (PD, the region request sender, operations
//! sending their own requests) goes through here, so one table knows every request in
//! flight and every deadline is here: the machine's next wake-up is the earliest of the
//! request deadline queues' heads and the other timers' ordered set.

use std::collections::{BTreeSet, VecDeque};
#[allow(
    clippy::disallowed_types,
    reason = "IdMap's hasher has no seed, so its iteration order is the same in every run"
)]
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
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

/// A hash map keyed by machine ids (operation and request ids).
///
/// The id tables are touched several times per point operation, and an ordered map paid a
/// tree descent and node shifts for an order nothing reads. Ids are counters, so one
/// multiply spreads them over the buckets. The hasher has no per-process seed: the same
/// inputs build the same table in every run, and what iterates one (test reports) sorts.
#[allow(
    clippy::disallowed_types,
    reason = "a seedless hasher: iteration order is the same in every run"
)]
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// A set of machine ids (see [`IdMap`]).
#[allow(
    clippy::disallowed_types,
    reason = "a seedless hasher: iteration order is the same in every run"
)]
pub(crate) type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

/// The hasher of [`IdMap`]: a Fibonacci multiply of the id (good high bits for the table's
/// control bytes, a permutation of counters in the low bits for the bucket index).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached by keys that are not bare ids; fold them in eight bytes at a time.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = (self.0.rotate_left(5) ^ id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
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
    inflight: IdMap<RequestId, InFlight>,
    /// Request deadlines, one queue per distinct timeout (see [`Deadlines`]).
    deadlines: Deadlines,
    /// Every other timer (operations, PD, entities).
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
            inflight: IdMap::default(),
            deadlines: Deadlines::default(),
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
        self.deadlines.push(timeout, deadline, id);
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
        self.deadlines.answered(inflight.timeout, &self.inflight);
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

    /// Removes and returns the timers due now, in (time, key) order across request
    /// deadlines and other timers alike.
    pub(crate) fn take_due(&mut self) -> Vec<Expired> {
        let mut expired = Vec::new();
        loop {
            let timer = self
                .timers
                .first()
                .copied()
                .filter(|(at, _)| *at <= self.now);
            let deadline = self.deadlines.first_due(self.now);
            let key = match (timer, deadline) {
                (None, None) => break,
                (Some((at, key)), Some((deadline, id)))
                    if (deadline, TimerKey::Request(id)) < (at, key) =>
                {
                    self.deadlines.pop_due(id, &self.inflight);
                    TimerKey::Request(id)
                }
                (Some(_), _) => {
                    let Some((_, key)) = self.timers.pop_first() else {
                        break;
                    };
                    key
                }
                (None, Some((_, id))) => {
                    self.deadlines.pop_due(id, &self.inflight);
                    TimerKey::Request(id)
                }
            };
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
                        self.deadlines.answered(inflight.timeout, &self.inflight);
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
        let timer = self.timers.first().map(|(at, _)| *at);
        let deadline = self.deadlines.first().map(|(at, _)| at);
        timer.into_iter().chain(deadline).min()
    }

    /// Appends requests awaiting answers, armed timers, requests not yet polled and answers
    /// not yet handed over (see `Core::leftovers`).
    #[cfg(any(test, feature = "testing"))]
    ///
    /// A timer of an operation that no longer runs (`op_lives` says which do) is not work:
    /// it fires into nothing. Operations removed while sleeping leave such timers, which
    /// are not searched for at removal because that would cost every finish a scan.
    pub(crate) fn leftovers(&self, left: &mut Vec<String>, op_lives: &dyn Fn(OpId) -> bool) {
        let mut inflight: Vec<_> = self.inflight.iter().collect();
        inflight.sort_unstable_by_key(|(id, _)| **id);
        for (id, inflight) in inflight {
            left.push(format!("request #{} for {:?}", id.0, inflight.owner));
        }
        let mut timers: Vec<(Time, TimerKey)> = self.timers.iter().copied().collect();
        timers.extend(
            self.deadlines
                .armed(&self.inflight)
                .map(|(at, id)| (at, TimerKey::Request(id))),
        );
        timers.sort_unstable();
        for (at, key) in timers {
            if matches!(key, TimerKey::Op(op) if !op_lives(op)) {
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

/// Request deadlines, kept cheaply: one FIFO queue per distinct timeout.
///
/// Every request arms a deadline and nearly every one is answered before it, so an
/// ordered set paid an insert and a removal (a tree descent each) per request. Here a
/// deadline is a push to the back of its timeout's queue, which stays sorted because the
/// machine's clock never runs backwards, and an answered request is dropped lazily: it
/// leaves the table of requests in flight, and entries no longer in that table are popped
/// once they reach the front. The front of every queue is always a request still in
/// flight, so the first deadline is the smallest front. A request stuck in front would let
/// answered entries pile up behind it; a queue is compacted when it holds more than twice
/// the requests in flight, which keeps memory proportional to them at amortized O(1) cost.
#[derive(Debug, Default)]
struct Deadlines {
    /// A handful of entries: requests use one of a few configured timeouts.
    queues: Vec<(Duration, VecDeque<(Time, RequestId)>)>,
}

impl Deadlines {
    fn push(&mut self, timeout: Duration, deadline: Time, id: RequestId) {
        let queue = match self.queues.iter().position(|(t, _)| *t == timeout) {
            Some(index) => &mut self.queues[index].1,
            None => {
                self.queues.push((timeout, VecDeque::new()));
                let last = self.queues.len() - 1;
                &mut self.queues[last].1
            }
        };
        queue.push_back((deadline, id));
    }

    /// A request of `timeout` left `inflight` (answered or expired): restores the
    /// invariant that the queue's front is in flight, and compacts a queue grown stale.
    fn answered(&mut self, timeout: Duration, inflight: &IdMap<RequestId, InFlight>) {
        let Some((_, queue)) = self.queues.iter_mut().find(|(t, _)| *t == timeout) else {
            return;
        };
        drop_answered_front(queue, inflight);
        if queue.len() > 2 * inflight.len() + 64 {
            queue.retain(|(_, id)| inflight.contains_key(id));
        }
    }

    /// The earliest deadline and its request.
    fn first(&self) -> Option<(Time, RequestId)> {
        self.queues
            .iter()
            .filter_map(|(_, queue)| queue.front().copied())
            .min()
    }

    /// The earliest deadline if it is due at `now`.
    fn first_due(&self, now: Time) -> Option<(Time, RequestId)> {
        self.first().filter(|(at, _)| *at <= now)
    }

    /// Pops the front entry of request `id` (returned by [`first_due`](Self::first_due)).
    fn pop_due(&mut self, id: RequestId, inflight: &IdMap<RequestId, InFlight>) {
        for (_, queue) in &mut self.queues {
            if queue.front().is_some_and(|(_, front)| *front == id) {
                queue.pop_front();
                drop_answered_front(queue, inflight);
                return;
            }
        }
    }

    /// Every deadline still armed, for test reports.
    #[cfg(any(test, feature = "testing"))]
    fn armed<'a>(
        &'a self,
        inflight: &'a IdMap<RequestId, InFlight>,
    ) -> impl Iterator<Item = (Time, RequestId)> + 'a {
        self.queues
            .iter()
            .flat_map(|(_, queue)| queue.iter().copied())
            .filter(|(_, id)| inflight.contains_key(id))
    }
}

/// Pops the entries at the front of a deadline queue whose requests are no longer in
/// flight, restoring the invariant that a queue's front is a live request.
fn drop_answered_front(
    queue: &mut VecDeque<(Time, RequestId)>,
    inflight: &IdMap<RequestId, InFlight>,
) {
    while queue
        .front()
        .is_some_and(|(_, id)| !inflight.contains_key(id))
    {
        queue.pop_front();
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
    fn request_deadlines_expire_in_order_with_other_timers() {
        let mut out = Outbox::new(Time::ZERO);
        let slow = out.transmit(
            Owner::Pd,
            Arc::from("pd:1"),
            request(),
            Duration::from_secs(5),
        );
        let fast = out.transmit(
            Owner::Pd,
            Arc::from("pd:1"),
            request(),
            Duration::from_secs(1),
        );
        out.set_timer(TimerKey::Op(OpId(3)), Time::from_millis(1_000));
        out.set_timer(TimerKey::Pd, Time::from_millis(1_000));
        assert_eq!(out.next_timeout(), Some(Time::from_millis(1_000)));
        out.advance(Time::from_millis(6_000));
        let due = out.take_due();
        // At 1 s: the operation's timer, then the request (key order), then PD; at 5 s the
        // slow request.
        assert!(
            matches!(
                due.as_slice(),
                [
                    Expired::Op(OpId(3)),
                    Expired::Request(Owner::Pd, a, _),
                    Expired::Pd,
                    Expired::Request(Owner::Pd, b, _),
                ] if *a == fast && *b == slow
            ),
            "{due:?}"
        );
        assert_eq!(out.next_timeout(), None);
    }

    #[test]
    fn answered_requests_leave_no_deadline_behind() {
        let mut out = Outbox::new(Time::ZERO);
        let ids: Vec<RequestId> = (0..3)
            .map(|_| {
                out.transmit(
                    Owner::Pd,
                    Arc::from("pd:1"),
                    request(),
                    Duration::from_secs(1),
                )
            })
            .collect();
        out.advance(Time::from_millis(10));
        let late = out.transmit(
            Owner::Pd,
            Arc::from("pd:1"),
            request(),
            Duration::from_secs(1),
        );
        for id in &ids {
            assert!(out.take_reply(*id, Err(RpcError::Cancelled)).is_some());
        }
        assert_eq!(out.next_timeout(), Some(Time::from_millis(1_010)));
        out.advance(Time::from_millis(1_005));
        assert!(out.take_due().is_empty(), "answered deadlines never fire");
        assert!(out.take_reply(late, Err(RpcError::Cancelled)).is_some());
        assert_eq!(out.next_timeout(), None);
    }

    #[test]
    fn a_stuck_request_does_not_let_answered_deadlines_pile_up() {
        let mut out = Outbox::new(Time::ZERO);
        let timeout = Duration::from_secs(30);
        let stuck = out.transmit(Owner::Pd, Arc::from("pd:1"), request(), timeout);
        for step in 1..=10_000u64 {
            out.advance(Time::from_millis(step));
            let id = out.transmit(Owner::Pd, Arc::from("pd:1"), request(), timeout);
            assert!(out.take_reply(id, Err(RpcError::Cancelled)).is_some());
        }
        let queued: usize = out.deadlines.queues.iter().map(|(_, q)| q.len()).sum();
        assert!(
            queued <= 2 * out.inflight.len() + 65,
            "{queued} entries kept"
        );
        assert_eq!(out.next_timeout(), Some(Time::from_millis(30_000)));
        out.advance(Time::from_millis(30_000));
        assert!(matches!(
            out.take_due().as_slice(),
            [Expired::Request(Owner::Pd, id, _)] if *id == stuck
        ));
    }

    /// A step of [`deadlines_behave_as_an_ordered_set`].
    #[derive(Clone, Debug)]
    enum Step {
        Send(u8),
        Answer(u8),
        Timer(u8, u8),
        Advance(u8),
    }

    impl quickcheck::Arbitrary for Step {
        fn arbitrary(g: &mut quickcheck::Gen) -> Self {
            match u8::arbitrary(g) % 4 {
                0 => Self::Send(u8::arbitrary(g)),
                1 => Self::Answer(u8::arbitrary(g)),
                2 => Self::Timer(u8::arbitrary(g), u8::arbitrary(g)),
                _ => Self::Advance(u8::arbitrary(g)),
            }
        }
    }

    /// The outbox's expiries and next wake-up equal those of one ordered set holding every
    /// timer, whatever mix of timeouts, answers, timers and clock steps comes.
    #[test]
    fn deadlines_behave_as_an_ordered_set() {
        fn property(steps: Vec<Step>) -> bool {
            let mut out = Outbox::new(Time::ZERO);
            let mut model: BTreeSet<(Time, TimerKey)> = BTreeSet::new();
            let mut live: Vec<(RequestId, Time)> = Vec::new();
            let mut now = Time::ZERO;
            for step in steps {
                match step {
                    Step::Send(t) => {
                        let timeout = Duration::from_millis(100 * u64::from(1 + t % 3));
                        let id = out.transmit(Owner::Pd, Arc::from("pd:1"), request(), timeout);
                        model.insert((now + timeout, TimerKey::Request(id)));
                        live.push((id, now + timeout));
                    }
                    Step::Answer(i) if !live.is_empty() => {
                        let (id, deadline) = live.remove(usize::from(i) % live.len());
                        model.remove(&(deadline, TimerKey::Request(id)));
                        if out.take_reply(id, Err(RpcError::Cancelled)).is_none() {
                            return false;
                        }
                    }
                    Step::Answer(_) => {}
                    Step::Timer(op, at) => {
                        let at = now + Duration::from_millis(u64::from(at));
                        let key = TimerKey::Op(OpId(u64::from(op % 4)));
                        out.set_timer(key, at);
                        model.insert((at, key));
                    }
                    Step::Advance(ms) => {
                        now += Duration::from_millis(u64::from(ms));
                        out.advance(now);
                        let mut expected = Vec::new();
                        while let Some(&(at, key)) = model.first() {
                            if at > now {
                                break;
                            }
                            model.pop_first();
                            expected.push(key);
                        }
                        live.retain(|(_, deadline)| *deadline > now);
                        let got: Vec<TimerKey> = out
                            .take_due()
                            .into_iter()
                            .map(|e| match e {
                                Expired::Op(op) => TimerKey::Op(op),
                                Expired::Request(_, id, _) => TimerKey::Request(id),
                                Expired::Pd => TimerKey::Pd,
                                Expired::Entity(e) => TimerKey::Entity(e),
                            })
                            .collect();
                        if got != expected {
                            return false;
                        }
                    }
                }
                if out.next_timeout() != model.first().map(|(at, _)| *at) {
                    return false;
                }
            }
            true
        }
        quickcheck::QuickCheck::new()
            .tests(300)
            .quickcheck(property as fn(Vec<Step>) -> bool);
    }

    #[test]
    fn clock_never_runs_backwards() {
        let mut out = Outbox::new(Time::from_millis(10));
        out.advance(Time::from_millis(5));
        assert_eq!(out.now(), Time::from_millis(10));
    }
}
