//! Reads below the GC safe point fail (client-go's `KVStore.CheckVisibility`, called by
//! every snapshot read): the versions they need may be gone.
//!
//! The transaction safe point is cached for [`SAFE_POINT_FRESH`], as client-go's safe point
//! checker refreshes it every 10 s; a read finding it stale asks PD once (concurrent reads
//! park on [`WaitKey::SafePoint`] and share the answer), then goes on.
//!
//! ```text
//!  CheckSafePoint ── fresh ──────────────────────────► the read (or TxnAbortedByGc)
//!        │ stale: ask PD (or park behind who asked)
//!        ▼
//!  Awaiting ── answered ─► cache ─► the read (or TxnAbortedByGc)
//! ```

use tikv_proto::pdpb;

use super::build_checked;
use crate::command::Command;
use crate::error::Error;
use crate::op::{Cx, Next, Operation};
use crate::oracle::Timestamp;
use crate::outbox::{Reply, RequestId};
use crate::rpc::{PdRequest, PdResponse};
use crate::safe_point::check;
use crate::wait::WaitKey;

/// The keyspace id PD's GC state takes for "no keyspace" (API V1).
const NULL_KEYSPACE_ID: u32 = 0xFFFF_FFFF;

/// A read waiting for a fresh safe point before it runs.
#[derive(Debug)]
pub(crate) struct CheckSafePoint {
    command: Command,
    start_ts: Timestamp,
    /// The PD call (or parked wait) the answer comes under.
    call: Option<RequestId>,
    /// Whether this operation asked PD itself (it then fills the cache and wakes others).
    asked: bool,
}

impl CheckSafePoint {
    /// `command`, a read at `start_ts`, run once the safe point allows it.
    pub(crate) fn new(command: Command, start_ts: Timestamp) -> Self {
        Self {
            command,
            start_ts,
            call: None,
            asked: false,
        }
    }

    fn proceed(self, cx: &mut Cx<'_>, safe_point: Timestamp) -> Next {
        match check(self.start_ts, safe_point) {
            Ok(()) => build_checked(self.command, cx).on_start(cx),
            Err(err) => Next::Done(Err(err)),
        }
    }

    /// Ends the load: caches `result` and answers every read parked on it.
    fn loaded(cx: &mut Cx<'_>, result: &Result<Timestamp, Error>) {
        let now = cx.now();
        let services = cx.services();
        services.safe_point.loading = false;
        if let Ok(safe_point) = result {
            services.safe_point.value = Some((*safe_point, now));
        }
        let ready = result.as_ref().map(|_| ()).map_err(Clone::clone);
        for waiter in services.waits.take(&WaitKey::SafePoint) {
            services
                .out
                .deliver(waiter.op, waiter.call, Reply::Ready(ready.clone()));
        }
    }
}

impl Operation for CheckSafePoint {
    fn on_start(mut self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        if let Some(safe_point) = cx.safe_point(cx.now()) {
            return self.proceed(cx, safe_point);
        }
        if cx.services().safe_point.loading {
            let waiter = cx.waiter();
            cx.services().waits.park(WaitKey::SafePoint, waiter);
            self.call = Some(waiter.call);
            return Next::Pending(self);
        }
        cx.services().safe_point.loading = true;
        let keyspace = cx.keyspace_id().unwrap_or(NULL_KEYSPACE_ID);
        let call = cx.pd_call(PdRequest::GetGcState(pdpb::GetGcStateRequest {
            keyspace_scope: Some(pdpb::KeyspaceScope {
                keyspace: Some(pdpb::keyspace_scope::Keyspace::KeyspaceId(keyspace)),
            }),
            exclude_gc_barriers: true,
            ..Default::default()
        }));
        self.call = Some(call);
        self.asked = true;
        Next::Pending(self)
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }

    fn on_reply(self: Box<Self>, cx: &mut Cx<'_>, id: RequestId, reply: Reply) -> Next {
        if self.call != Some(id) {
            return Next::Pending(self);
        }
        match reply {
            Reply::Pd(result) if self.asked => {
                let result = result.and_then(|response| match *response {
                    PdResponse::GetGcState(r) => Ok(Timestamp::from_version(
                        r.gc_state.map_or(0, |state| state.txn_safe_point),
                    )),
                    other => Err(Error::UnexpectedResponse(format!("PD answered {other:?}"))),
                });
                Self::loaded(cx, &result);
                match result {
                    Ok(safe_point) => self.proceed(cx, safe_point),
                    Err(err) => Next::Done(Err(err)),
                }
            }
            Reply::Ready(Ok(())) => match cx.safe_point(cx.now()) {
                Some(safe_point) => self.proceed(cx, safe_point),
                // Stale again already (time jumped): ask anew.
                None => Box::new(Self::new(self.command, self.start_ts)).on_start(cx),
            },
            Reply::Ready(Err(err)) => Next::Done(Err(err)),
            _ => Next::Pending(self),
        }
    }

    fn on_cancel(self: Box<Self>, cx: &mut Cx<'_>) -> Option<Next> {
        if self.asked {
            // Reads parked behind this load look again: the first of them asks PD anew.
            cx.services().safe_point.loading = false;
            for waiter in cx.services().waits.take(&WaitKey::SafePoint) {
                cx.services()
                    .out
                    .deliver(waiter.op, waiter.call, Reply::Ready(Ok(())));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use crate::command::{Command, Output, TxnCommand};
    use crate::config::Config;
    use crate::error::Error;
    use crate::machine::Core;
    use crate::machine::testing::{Responder, run};
    use crate::ops::txn::ReadOptions;
    use crate::oracle::Timestamp;
    use crate::time::Time;

    fn core() -> Core {
        let config = Config {
            store_refresh_interval: std::time::Duration::ZERO,
            pd_member_refresh_interval: std::time::Duration::ZERO,
            ..Config::default()
        };
        Core::new(config, vec!["pd:2379".into()], Time::ZERO).unwrap_or_else(|err| panic!("{err}"))
    }

    fn get_at(ts: u64) -> Command {
        Command::Txn(TxnCommand::Get {
            key: Bytes::from_static(b"k"),
            options: ReadOptions::at(Timestamp::from_version(ts)),
        })
    }

    fn gc_state_calls(trace: &[String]) -> usize {
        trace
            .iter()
            .filter(|line| line.contains("GetGcState"))
            .count()
    }

    #[test]
    fn a_read_below_the_safe_point_fails_and_concurrent_reads_share_one_fetch() {
        let mut core = core();
        let mut responder = Responder::default();
        responder.txn_safe_point = 500;
        let below = core.handle_command(Time::ZERO, get_at(400));
        let above = core.handle_command(Time::ZERO, get_at(600));
        let at = core.handle_command(Time::ZERO, get_at(500));
        let outcome = run(&mut core, &mut responder, &[], Time::ZERO, 10_000)
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(matches!(
            outcome.results.get(&below),
            Some(Err(Error::TxnAbortedByGc { start_ts, safe_point }))
                if start_ts.version() == 400 && safe_point.version() == 500
        ));
        assert!(matches!(
            outcome.results.get(&above),
            Some(Ok(Output::Read(_)))
        ));
        assert!(matches!(
            outcome.results.get(&at),
            Some(Ok(Output::Read(_)))
        ));
        assert_eq!(gc_state_calls(&outcome.trace), 1, "{:#?}", outcome.trace);
        assert!(core.leftovers().is_empty(), "{:?}", core.leftovers());

        // Within the freshness window the cached value answers; after it, PD is asked again.
        let cached = core.handle_command(Time::from_millis(5_000), get_at(450));
        let outcome = run(
            &mut core,
            &mut responder,
            &[],
            Time::from_millis(5_000),
            10_000,
        )
        .unwrap_or_else(|err| panic!("{err}"));
        assert!(matches!(
            outcome.results.get(&cached),
            Some(Err(Error::TxnAbortedByGc { .. }))
        ));
        assert_eq!(gc_state_calls(&outcome.trace), 0);
        responder.txn_safe_point = 300;
        let later = core.handle_command(Time::from_millis(20_000), get_at(450));
        let outcome = run(
            &mut core,
            &mut responder,
            &[],
            Time::from_millis(20_000),
            10_000,
        )
        .unwrap_or_else(|err| panic!("{err}"));
        assert!(matches!(
            outcome.results.get(&later),
            Some(Ok(Output::Read(_)))
        ));
        assert_eq!(gc_state_calls(&outcome.trace), 1);
    }
}
