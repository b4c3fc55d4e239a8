//! Operations that ask PD or TSO rather than stores: timestamps, the cluster id, PD's
//! external timestamp, GC state, and scatter progress.
//!
//! Each is a small state machine of its own: a state struct per step, consumed when the
//! answer comes.

use std::time::Duration;

use tikv_proto::pdpb;

use crate::backoff::{BackoffKind, Backoffer};
use crate::command::{Output, PdCommand};
use crate::error::Error;
use crate::op::{Cx, Next, Operation};
use crate::oracle::Timestamp;
use crate::outbox::{Reply, RequestId};
use crate::rpc::{PdRequest, PdResponse};
use crate::time::Time;

/// Backoff budget of a scatter check (client-go's locate-region backoffer).
const CHECK_SCATTER_BUDGET: Duration =
    Duration::from_millis(crate::backoff::LOCATE_REGION_MAX_BACKOFF_MS);

/// The operator description PD gives a scatter.
const SCATTER_OPERATOR: &[u8] = b"scatter-region";

/// The keyspace id PD's GC API uses for the cluster-wide (no keyspace) scope.
const NULL_KEYSPACE_ID: u32 = 0xFFFF_FFFF;

/// The operation of a PD or TSO query.
pub(super) fn build(command: PdCommand, cx: &Cx<'_>) -> Box<dyn Operation> {
    match command {
        PdCommand::Timestamp => Box::new(AskTso {
            then: AfterTso::Return,
        }),
        PdCommand::LowResolutionTimestamp => {
            let staleness = cx.config().low_resolution_ts_staleness;
            let oldest = Time::from_micros(
                cx.now()
                    .as_micros()
                    .saturating_sub(u64::try_from(staleness.as_micros()).unwrap_or(u64::MAX)),
            );
            match cx.recent_timestamp(oldest) {
                Some(ts) => Box::new(Answer(Output::Timestamp(ts))),
                None => Box::new(AskTso {
                    then: AfterTso::Return,
                }),
            }
        }
        PdCommand::StaleTimestamp { prev_secs } => Box::new(AskTso {
            then: AfterTso::Stale {
                prev_ms: prev_secs.saturating_mul(1_000),
            },
        }),
        PdCommand::ClusterId => Box::new(AskPd::new(
            // Any PD call discovers PD first, which learns the cluster id.
            PdRequest::GetMembers(pdpb::GetMembersRequest::default()),
            PdAnswer::ClusterId,
        )),
        PdCommand::SetExternalTimestamp(timestamp) => Box::new(AskPd::new(
            PdRequest::SetExternalTimestamp(pdpb::SetExternalTimestampRequest {
                timestamp: timestamp.version(),
                ..Default::default()
            }),
            PdAnswer::Unit,
        )),
        PdCommand::GetExternalTimestamp => Box::new(AskPd::new(
            PdRequest::GetExternalTimestamp(Default::default()),
            PdAnswer::ExternalTimestamp,
        )),
        PdCommand::TxnSafePoint | PdCommand::CheckVisibility { .. } => {
            let start_ts = match command {
                PdCommand::CheckVisibility { start_ts } => Some(start_ts),
                _ => None,
            };
            let keyspace = cx.keyspace_id().unwrap_or(NULL_KEYSPACE_ID);
            Box::new(AskPd::new(
                PdRequest::GetGcState(pdpb::GetGcStateRequest {
                    keyspace_scope: Some(pdpb::KeyspaceScope {
                        keyspace: Some(pdpb::keyspace_scope::Keyspace::KeyspaceId(keyspace)),
                    }),
                    exclude_gc_barriers: true,
                    ..Default::default()
                }),
                PdAnswer::SafePoint { start_ts },
            ))
        }
    }
}

/// Waiting until PD has finished scattering `region_id`, backing off within `budget`.
pub(crate) fn scatter_wait(region_id: u64, budget: Duration) -> Box<dyn Operation> {
    Box::new(OperatorWait::new(region_id, true, budget))
}

/// Asking PD once whether it is scattering `region_id`.
pub(super) fn scatter_check(region_id: u64) -> Box<dyn Operation> {
    Box::new(OperatorWait::new(region_id, false, CHECK_SCATTER_BUDGET))
}

/// An operation that has its answer when it starts (a cached timestamp).
#[derive(Debug)]
struct Answer(Output);

impl Operation for Answer {
    fn on_start(self: Box<Self>, _cx: &mut Cx<'_>) -> Next {
        Next::Done(Ok(self.0))
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }
}

/// What to do with a timestamp once TSO gives it.
#[derive(Clone, Copy, Debug)]
enum AfterTso {
    /// Return it.
    Return,
    /// Return client-go's stale timestamp `prev_ms` back from it.
    Stale { prev_ms: u64 },
}

/// Asking TSO (or, for a stale timestamp, using the newest one seen when there is one).
#[derive(Debug)]
struct AskTso {
    then: AfterTso,
}

/// Waiting for TSO's answer to `call`.
#[derive(Debug)]
struct AwaitTso {
    then: AfterTso,
    call: RequestId,
}

impl AskTso {
    fn finish(then: AfterTso, cx: &Cx<'_>) -> Option<Next> {
        match then {
            AfterTso::Return => None,
            AfterTso::Stale { prev_ms } => cx
                .last_timestamp()
                .map(|(ts, arrived)| Next::Done(stale_timestamp(ts, arrived, cx.now(), prev_ms))),
        }
    }
}

impl Operation for AskTso {
    fn on_start(self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        if let Some(done) = Self::finish(self.then, cx) {
            return done;
        }
        let call = cx.timestamp();
        Next::Pending(Box::new(AwaitTso {
            then: self.then,
            call,
        }))
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }
}

impl Operation for AwaitTso {
    fn on_start(self: Box<Self>, _cx: &mut Cx<'_>) -> Next {
        // Made mid-transition by an earlier state: never started.
        self.waiting()
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }

    fn on_reply(self: Box<Self>, cx: &mut Cx<'_>, id: RequestId, reply: Reply) -> Next {
        let Reply::Timestamp(result) = reply else {
            return Next::Pending(self);
        };
        if id != self.call {
            return Next::Pending(self);
        }
        match (result, self.then) {
            (Err(err), _) => Next::Done(Err(err)),
            (Ok(ts), AfterTso::Return) => Next::Done(Ok(Output::Timestamp(ts))),
            (Ok(ts), AfterTso::Stale { prev_ms }) => {
                Next::Done(stale_timestamp(ts, cx.now(), cx.now(), prev_ms))
            }
        }
    }
}

/// client-go's stale timestamp: the physical time of the newest timestamp `ts`, moved on by
/// the time since it arrived, minus `prev_ms`; its logical part is zero.
fn stale_timestamp(ts: Timestamp, arrived: Time, now: Time, prev_ms: u64) -> Result<Output, Error> {
    let physical = ts.physical_ms();
    if physical <= prev_ms {
        return Err(Error::InvalidArgument(format!(
            "{} s back is before the Unix epoch",
            prev_ms / 1_000
        )));
    }
    let elapsed_ms = now.as_micros().saturating_sub(arrived.as_micros()) / 1_000;
    Ok(Output::Timestamp(Timestamp::compose(
        physical + elapsed_ms - prev_ms,
        0,
    )))
}

/// How a PD answer becomes the result.
#[derive(Clone, Copy, Debug)]
enum PdAnswer {
    /// Nothing to return.
    Unit,
    /// The cluster id learned on the way.
    ClusterId,
    /// PD's external timestamp.
    ExternalTimestamp,
    /// The txn safe point, checked against a start timestamp when one is given.
    SafePoint { start_ts: Option<Timestamp> },
}

/// One PD call whose answer is the result: not sent yet.
#[derive(Debug)]
struct AskPd {
    request: PdRequest,
    answer: PdAnswer,
}

/// One PD call whose answer is the result: sent as `call`.
#[derive(Debug)]
struct AwaitPd {
    call: RequestId,
    answer: PdAnswer,
}

impl AskPd {
    fn new(request: PdRequest, answer: PdAnswer) -> Self {
        Self { request, answer }
    }
}

impl Operation for AskPd {
    fn on_start(self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        let cluster_id = cx.services().pd.cluster_id();
        if matches!(self.answer, PdAnswer::ClusterId) && cluster_id != 0 {
            return Next::Done(Ok(Output::ClusterId(cluster_id)));
        }
        let call = cx.pd_call(self.request);
        Next::Pending(Box::new(AwaitPd {
            call,
            answer: self.answer,
        }))
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }
}

impl Operation for AwaitPd {
    fn on_start(self: Box<Self>, _cx: &mut Cx<'_>) -> Next {
        // Made mid-transition by an earlier state: never started.
        self.waiting()
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }

    fn on_reply(self: Box<Self>, cx: &mut Cx<'_>, id: RequestId, reply: Reply) -> Next {
        match reply {
            Reply::Pd(result) if id == self.call => Next::Done(pd_output(
                self.answer,
                result.map(|response| *response),
                cx.services().pd.cluster_id(),
            )),
            _ => Next::Pending(self),
        }
    }
}

/// The result of a PD call's answer.
fn pd_output(
    answer: PdAnswer,
    result: Result<PdResponse, Error>,
    cluster_id: u64,
) -> Result<Output, Error> {
    let response = result?;
    if let Some(err) = crate::pd::header_error(&response) {
        return Err(err);
    }
    match (answer, response) {
        (PdAnswer::Unit, PdResponse::SetExternalTimestamp(_)) => Ok(Output::Unit),
        (PdAnswer::ExternalTimestamp, PdResponse::GetExternalTimestamp(r)) => {
            Ok(Output::Timestamp(Timestamp::from_version(r.timestamp)))
        }
        (PdAnswer::ClusterId, PdResponse::GetMembers(_)) if cluster_id != 0 => {
            Ok(Output::ClusterId(cluster_id))
        }
        (PdAnswer::SafePoint { start_ts }, PdResponse::GetGcState(r)) => {
            let safe_point =
                Timestamp::from_version(r.gc_state.map_or(0, |state| state.txn_safe_point));
            match start_ts {
                Some(start_ts) if start_ts < safe_point => Err(Error::TxnAbortedByGc {
                    start_ts,
                    safe_point,
                }),
                _ => Ok(Output::Timestamp(safe_point)),
            }
        }
        (_, other) => Err(Error::UnexpectedResponse(format!("PD answered {other:?}"))),
    }
}

/// Waiting for a region's scatter to finish, or asking once whether it is scattering.
///
/// Polls PD's `GetOperator`: the region is done scattering when its latest operator is not
/// a running `scatter-region` one (a region without an operator counts as done, as client-go
/// reads it). Between polls it backs off (`regionMiss`) within the budget.
#[derive(Debug)]
struct OperatorWait {
    region_id: u64,
    /// `true`: wait until finished; `false`: answer whether it is scattering now.
    wait: bool,
    backoff: Backoffer,
    /// The poll out, or the time the next one is due.
    state: Poll,
}

#[derive(Clone, Copy, Debug)]
enum Poll {
    Asking(RequestId),
    Sleeping(Time),
}

impl OperatorWait {
    fn new(region_id: u64, wait: bool, budget: Duration) -> Self {
        let budget_ms = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX);
        Self {
            region_id,
            wait,
            backoff: Backoffer::new(budget_ms),
            state: Poll::Sleeping(Time::ZERO),
        }
    }

    fn ask(mut self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        let call = cx.pd_call(PdRequest::GetOperator(pdpb::GetOperatorRequest {
            region_id: self.region_id,
            ..Default::default()
        }));
        self.state = Poll::Asking(call);
        Next::Pending(self)
    }

    fn on_answer(mut self: Box<Self>, cx: &mut Cx<'_>, result: Result<PdResponse, Error>) -> Next {
        let cause = match result {
            Ok(PdResponse::GetOperator(response)) => {
                let running = response.desc.as_ref() == SCATTER_OPERATOR
                    && response.status == pdpb::OperatorStatus::Running as i32;
                if !running {
                    return Next::Done(Ok(if self.wait {
                        Output::Unit
                    } else {
                        Output::Scattering(false)
                    }));
                }
                if !self.wait {
                    return Next::Done(Ok(Output::Scattering(true)));
                }
                if let Some(err) = crate::pd::pd_error(response.header.as_ref()) {
                    return Next::Done(Err(err));
                }
                "scatter still running".to_owned()
            }
            Ok(other) => {
                return Next::Done(Err(Error::UnexpectedResponse(format!("{other:?}"))));
            }
            Err(err) => err.to_string(),
        };
        match self
            .backoff
            .next_sleep(BackoffKind::RegionMiss, cx.rng(), &cause)
        {
            Ok(sleep) => {
                let until = cx.now() + sleep;
                self.state = Poll::Sleeping(until);
                cx.wake_at(until);
                Next::Pending(self)
            }
            Err(err) => Next::Done(Err(Error::from(err))),
        }
    }
}

impl Operation for OperatorWait {
    fn on_start(self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        self.ask(cx)
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }

    fn on_reply(self: Box<Self>, cx: &mut Cx<'_>, id: RequestId, reply: Reply) -> Next {
        match (self.state, reply) {
            (Poll::Asking(call), Reply::Pd(result)) if call == id => {
                self.on_answer(cx, result.map(|response| *response))
            }
            _ => Next::Pending(self),
        }
    }

    fn on_timer(self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        match self.state {
            Poll::Sleeping(until) if until <= cx.now() => self.ask(cx),
            _ => Next::Pending(self),
        }
    }
}
