//! The client machine: all shared client state and every in-flight operation, sans IO.
//!
//! ```text
//!  handle_command ─┐                      ┌─► poll_transmit  (requests to PD and stores)
//!  handle_reply  ──┼─► Core (ops, cache, ─┼─► poll_timeout   (the next deadline)
//!  handle_timeout ─┘      PD, TSO)        └─► poll_event     (finished operations)
//! ```
//!
//! Every input takes `now`; after each input the caller drains `poll_transmit`,
//! `poll_event` and finally `poll_timeout`. Each user operation is a child machine addressed by
//! an [`OpId`]; every request it sends carries a [`RequestId`], and a reply is routed back to
//! the operation that sent it. Operations that need a region PD has not told us about yet, or a
//! timestamp, are parked: concurrent misses for the same key share one PD lookup, and every
//! operation waiting for a timestamp when the TSO request goes out is served by that one
//! request (`count = n`).

#[cfg(test)]
mod cache_port_tests;
mod destroy;
mod dispatch;
mod keys;
mod locate;
mod ops;
mod pd;
mod raw;
mod retry;
mod shared;
mod split;
pub mod testing;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use crate::config::Config;
use crate::error::Error;
use crate::rpc::Response;
use crate::time::Time;
use tikv_proto::rpc::RpcError;

pub use locate::KeyLocation;
pub use ops::{Command, KeyMode, MAX_RAW_SCAN_LIMIT, Output, RawChecksum, RawCommand};
pub use raw::{RAW_BATCH_PAIR_COUNT, RAW_BATCH_PUT_SIZE};
pub use shared::Transmit;
pub use split::{SPLIT_BATCH_KEY_LIMIT, SplitOutcome};

use ops::Op;
use shared::{Shared, Wake};

/// Identifies one user operation in the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// Identifies one request the machine sent; replies carry it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// A fact the machine reports.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// An operation finished with this result.
    Done(OpId, Result<Output, Error>),
}

/// The sans-IO client machine.
#[derive(Debug)]
pub struct Core {
    shared: Shared,
    ops: BTreeMap<OpId, Op>,
    next_op: u64,
}

impl Core {
    /// A machine for the cluster whose PD answers at `pd_endpoints` (`host:port`).
    ///
    /// Errors with [`Error::InvalidArgument`] when no endpoint is given.
    pub fn new(config: Config, pd_endpoints: Vec<String>, now: Time) -> Result<Self, Error> {
        if pd_endpoints.is_empty() {
            return Err(Error::InvalidArgument(
                "at least one PD endpoint is required".to_owned(),
            ));
        }
        Ok(Self {
            shared: Shared::new(config, pd_endpoints, now),
            ops: BTreeMap::new(),
            next_op: 1,
        })
    }

    /// Starts an operation; its result arrives later as [`Event::Done`].
    pub fn handle_command(&mut self, now: Time, command: Command) -> OpId {
        self.shared.advance(now);
        let id = OpId(self.next_op);
        self.next_op += 1;
        match Op::start(command, &self.shared) {
            // Driven before it enters the table: an operation finished at once (a cached
            // timestamp, bad input) never touches it.
            Ok(mut op) => match op.drive(&mut self.shared, id, Wake::Start) {
                Some(result) => {
                    self.shared.forget_op(id);
                    self.shared.finish(id, result);
                }
                None => {
                    self.ops.insert(id, op);
                }
            },
            Err(err) => self.shared.finish(id, Err(err)),
        }
        self.run_wakeups();
        id
    }

    /// Feeds the reply (or transport failure) of request `id`. Replies nobody waits for any
    /// more (the request timed out, or its operation was cancelled) are dropped.
    pub fn handle_reply(&mut self, now: Time, id: RequestId, reply: Result<Response, RpcError>) {
        self.shared.advance(now);
        if let Some((op, reply)) = self.shared.on_reply(id, reply) {
            self.drive(op, Wake::Reply(id, reply));
        }
        self.run_wakeups();
    }

    /// Processes every timer due at or before `now` (early calls are harmless).
    pub fn handle_timeout(&mut self, now: Time) {
        self.shared.advance(now);
        for expired in self.shared.take_due_timers() {
            match expired {
                shared::Expired::Op(op) => self.drive(op, Wake::Timer),
                shared::Expired::Request(op, id, timeout) => self.drive(
                    op,
                    Wake::Reply(id, Err(RpcError::DeadlineExceeded(timeout))),
                ),
            }
        }
        self.run_wakeups();
    }

    /// Abandons an operation (its caller went away); it finishes with no event.
    pub fn cancel(&mut self, now: Time, op: OpId) {
        self.shared.advance(now);
        if self.ops.remove(&op).is_some() {
            self.shared.forget_op(op);
        }
    }

    /// The next request to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.shared.poll_transmit()
    }

    /// The next finished operation, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.shared.poll_event()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.shared.poll_timeout()
    }

    /// Number of operations still in flight.
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
        self.shared.leftovers(&mut left);
        left
    }

    /// The cluster id learned from PD (0 until discovery finished).
    pub fn cluster_id(&self) -> u64 {
        self.shared.pd.cluster_id()
    }

    fn drive(&mut self, id: OpId, wake: Wake) {
        let Some(op) = self.ops.get_mut(&id) else {
            return;
        };
        if let Some(result) = op.drive(&mut self.shared, id, wake) {
            self.ops.remove(&id);
            self.shared.forget_op(id);
            self.shared.finish(id, result);
        }
    }

    /// Resumes operations parked on PD lookups or timestamps that have completed. Bounded:
    /// each pass drains what the previous inputs produced.
    fn run_wakeups(&mut self) {
        for _round in 0..1_000 {
            let woken = self.shared.take_wakeups();
            if woken.is_empty() {
                return;
            }
            for op in woken {
                self.drive(op, Wake::Resume);
            }
        }
    }
}
