//! The TTL manager: heartbeats that keep a large committing transaction's primary lock
//! alive (client-go's `ttlManager` / `keepAlive`).
//!
//! It runs as a child of the commit, so it ends with it: nothing keeps beating for a
//! transaction that finished.
//!
//! ```text
//!  Sleeping ── half the managed TTL ──► Timestamp ── uptime over the max TTL ──► Done
//!     ▲                                    │
//!     │                                    ▼
//!     └─────── answered (10 failures in a row, or a key error: Done) ── Beating
//! ```

use std::time::Duration;

use bytes::Bytes;
use smallvec::smallvec;
use tikv_proto::kvrpcpb;

use crate::command::Output;
use crate::error::{Error, KeyError};
use crate::op::{Cx, Next, Operation};
use crate::oracle::Timestamp;
use crate::outbox::{Reply, RequestId};
use crate::rpc::{StoreRequest, StoreResponse};
use crate::sender::Route;
use crate::sender::dispatch::{Dispatch, DispatchInput, Items, Plan, Progress};

/// Total backoff of one heartbeat (client-go `keepAliveMaxBackoff`).
const HEARTBEAT_BUDGET: Duration = Duration::from_secs(20);
/// Failed heartbeats in a row before the manager gives up (client-go
/// `maxConsecutiveFailure`).
const MAX_CONSECUTIVE_FAILURES: u32 = 10;

/// What the heartbeats keep alive, and how.
#[derive(Debug)]
pub(crate) struct Heartbeats {
    /// The primary key, in the request key space.
    pub(crate) primary: Bytes,
    /// Its routing key.
    pub(crate) routing: Bytes,
    pub(crate) start_ts: Timestamp,
    pub(crate) context: kvrpcpb::Context,
    /// TTL granted beyond the transaction's age, in milliseconds.
    pub(crate) managed_ttl_ms: u64,
    /// Age past which heartbeats stop, in milliseconds.
    pub(crate) max_ttl_ms: u64,
    pub(crate) timeout: Duration,
}

#[derive(Debug)]
enum Stage {
    Sleeping,
    Timestamp(RequestId),
    Beating(Dispatch, HeartbeatPlan),
}

/// The TTL manager of one transaction.
#[derive(Debug)]
pub(crate) struct KeepAlive {
    beats: Heartbeats,
    stage: Stage,
    failures: u32,
}

impl KeepAlive {
    /// A TTL manager for `beats`; its first heartbeat goes after half the managed TTL.
    pub(crate) fn new(beats: Heartbeats) -> Self {
        Self {
            beats,
            stage: Stage::Sleeping,
            failures: 0,
        }
    }

    fn sleep(mut self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        let interval = Duration::from_millis((self.beats.managed_ttl_ms / 2).max(1));
        cx.wake_at(cx.now() + interval);
        self.stage = Stage::Sleeping;
        Next::Pending(self)
    }

    fn beat(mut self: Box<Self>, cx: &mut Cx<'_>, now: Timestamp) -> Next {
        let uptime = now
            .physical_ms()
            .saturating_sub(self.beats.start_ts.physical_ms());
        if uptime > self.beats.max_ttl_ms {
            // Past the longest a transaction may live: let its locks expire.
            return Next::Done(Ok(Output::Unit));
        }
        let request = kvrpcpb::TxnHeartBeatRequest {
            context: Some(self.beats.context.clone()),
            primary_lock: self.beats.primary.clone(),
            start_version: self.beats.start_ts.version(),
            advise_lock_ttl: uptime.saturating_add(self.beats.managed_ttl_ms),
            ..Default::default()
        };
        let dispatch = Dispatch::new(
            smallvec![self.beats.routing.clone()],
            false,
            HEARTBEAT_BUDGET,
            self.beats.timeout,
        );
        let plan = HeartbeatPlan {
            request,
            refused: None,
        };
        self.stage = Stage::Beating(dispatch, plan);
        self.drive(cx, DispatchInput::Start)
    }

    fn drive(mut self: Box<Self>, cx: &mut Cx<'_>, input: DispatchInput) -> Next {
        let Stage::Beating(dispatch, plan) = &mut self.stage else {
            return Next::Pending(self);
        };
        match dispatch.handle(cx, input, plan) {
            Progress::Pending => Next::Pending(self),
            Progress::Done => {
                if let Some(err) = plan.refused.take() {
                    // The transaction is gone (committed, rolled back, or its lock lost):
                    // nothing left to keep alive.
                    return Next::Done(Err(err.into()));
                }
                self.failures = 0;
                self.sleep(cx)
            }
            Progress::Failed(err) => {
                self.failures += 1;
                if self.failures > MAX_CONSECUTIVE_FAILURES {
                    return Next::Done(Err(err));
                }
                self.sleep(cx)
            }
        }
    }
}

impl Operation for KeepAlive {
    fn on_start(self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        self.sleep(cx)
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }

    fn on_reply(self: Box<Self>, cx: &mut Cx<'_>, id: RequestId, reply: Reply) -> Next {
        let awaited = matches!(self.stage, Stage::Timestamp(call) if call == id);
        let beating = matches!(self.stage, Stage::Beating(..));
        match reply {
            Reply::Timestamp(result) if awaited => match result {
                Ok(now) => self.beat(cx, now),
                Err(err) => Next::Done(Err(err)),
            },
            reply if beating => self.drive(cx, DispatchInput::Reply(id, reply)),
            _ => Next::Pending(self),
        }
    }

    fn on_timer(mut self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        match self.stage {
            Stage::Sleeping => {
                let call = cx.timestamp();
                self.stage = Stage::Timestamp(call);
                Next::Pending(self)
            }
            Stage::Timestamp(_) => Next::Pending(self),
            Stage::Beating(..) => self.drive(cx, DispatchInput::Timer),
        }
    }
}

#[derive(Debug)]
struct HeartbeatPlan {
    request: kvrpcpb::TxnHeartBeatRequest,
    refused: Option<KeyError>,
}

impl Plan for HeartbeatPlan {
    fn build(
        &mut self,
        items: &[usize],
        _route: &Route,
        send: &mut dyn FnMut(Items, Box<StoreRequest>),
    ) {
        send(
            Items::from_slice(items),
            Box::new(StoreRequest::TxnHeartBeat(self.request.clone())),
        );
    }

    fn absorb(
        &mut self,
        _items: &[usize],
        _route: &Route,
        response: Box<StoreResponse>,
    ) -> Result<(), Error> {
        match *response {
            StoreResponse::TxnHeartBeat(r) => {
                self.refused = r.error.as_deref().map(KeyError::from_proto);
                Ok(())
            }
            other => Err(Error::UnexpectedResponse(format!(
                "mismatched response {other:?}"
            ))),
        }
    }
}
