//! Tests of the operation framework itself: children, cancellation, waits, entities, the
//! wall clock, and the keyspace wait every keyspace-scoped command goes through.

use std::time::Duration;

use super::testing::{Responder, describe};
use super::*;
use crate::config::{ApiVersion, Config};
use crate::entity::{Entity, EntityStep};
use crate::oracle::Timestamp;
use crate::outbox::RequestId;
use crate::rpc::{PdRequest, Request};

fn core_with(config: Config) -> Core {
    let config = Config {
        store_refresh_interval: Duration::ZERO,
        pd_member_refresh_interval: Duration::ZERO,
        ..config
    };
    match Core::new(config, vec!["pd:2379".into()], Time::ZERO) {
        Ok(core) => core,
        Err(err) => panic!("{err}"),
    }
}

/// Answers every request the machine sends (at `now`) until it sends nothing more;
/// returns the requests' descriptions.
fn answer_all(core: &mut Core, responder: &mut Responder, now: Time) -> Vec<String> {
    let mut seen = Vec::new();
    // Bounded: each round answers what the previous one sent.
    for _ in 0..100 {
        let mut sent = Vec::new();
        while let Some(transmit) = core.poll_transmit() {
            seen.push(describe(&transmit.request));
            sent.push(transmit);
        }
        if sent.is_empty() {
            return seen;
        }
        for transmit in sent {
            let reply = responder.answer(&transmit);
            core.handle_reply(now, transmit.id, reply);
        }
    }
    panic!("the machine kept sending: {seen:?}");
}

fn events(core: &mut Core) -> Vec<(OpId, Result<Output, Error>)> {
    std::iter::from_fn(|| core.poll_event())
        .map(|Event::Done(op, result)| (op, result))
        .collect()
}

/// Asks TSO for one timestamp and returns it.
#[derive(Debug)]
struct OneTimestamp {
    call: Option<RequestId>,
}

impl Operation for OneTimestamp {
    fn on_start(mut self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        self.call = Some(cx.timestamp());
        Next::Pending(self)
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }

    fn on_reply(self: Box<Self>, _cx: &mut Cx<'_>, id: RequestId, reply: Reply) -> Next {
        match reply {
            Reply::Timestamp(result) if Some(id) == self.call => {
                Next::Done(result.map(Output::Timestamp))
            }
            _ => Next::Pending(self),
        }
    }
}

/// Starts `children` timestamp children and finishes with the largest of their answers
/// (or the first error), recording the wall clock it saw at the start.
#[derive(Debug)]
struct FanOut {
    children: usize,
    waiting: Vec<OpId>,
    best: Timestamp,
}

impl Operation for FanOut {
    fn on_start(mut self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        for _ in 0..self.children {
            let child = cx.spawn_child(Box::new(OneTimestamp { call: None }));
            self.waiting.push(child);
        }
        Next::Pending(self)
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }

    fn on_child_done(
        mut self: Box<Self>,
        _cx: &mut Cx<'_>,
        child: OpId,
        result: Result<Output, Error>,
    ) -> Next {
        self.waiting.retain(|c| *c != child);
        match result {
            Ok(Output::Timestamp(ts)) => self.best = self.best.max(ts),
            Ok(other) => {
                return Next::Done(Err(Error::UnexpectedResponse(format!("{other:?}"))));
            }
            Err(err) => return Next::Done(Err(err)),
        }
        if self.waiting.is_empty() {
            Next::Done(Ok(Output::Timestamp(self.best)))
        } else {
            Next::Pending(self)
        }
    }
}

#[test]
fn children_report_to_their_parent_and_only_roots_make_events() {
    let mut core = core_with(Config::default());
    let mut responder = Responder::default();
    let parent = core.start_root(
        Time::ZERO,
        Box::new(FanOut {
            children: 3,
            waiting: Vec::new(),
            best: Timestamp::ZERO,
        }),
    );
    assert_eq!(core.ops_in_flight(), 4, "the parent and its three children");
    let sent = answer_all(&mut core, &mut responder, Time::ZERO);
    // The three children's timestamps came from one TSO request.
    assert_eq!(
        sent.iter().filter(|s| s.starts_with("pd.Tso")).count(),
        1,
        "{sent:?}"
    );
    let done = events(&mut core);
    assert_eq!(done.len(), 1, "children produce no user event: {done:?}");
    assert_eq!(done[0].0, parent);
    // The largest of three consecutive timestamps starting at 1 << 18.
    assert_eq!(
        done[0].1,
        Ok(Output::Timestamp(Timestamp::from_version((1 << 18) + 2)))
    );
    assert_eq!(core.leftovers(), Vec::<String>::new());
}

#[test]
fn cancelling_a_parent_cancels_its_children() {
    let mut core = core_with(Config::default());
    let mut responder = Responder::default();
    let parent = core.start_root(
        Time::ZERO,
        Box::new(FanOut {
            children: 2,
            waiting: Vec::new(),
            best: Timestamp::ZERO,
        }),
    );
    core.cancel(Time::ZERO, parent);
    assert_eq!(core.ops_in_flight(), 0);
    assert!(
        core.services.waits.is_empty(),
        "the children left the TSO wait list: {:?}",
        core.leftovers()
    );
    // Nothing is asked for the cancelled operations, and nothing is reported.
    let sent = answer_all(&mut core, &mut responder, Time::ZERO);
    assert!(sent.iter().all(|s| !s.starts_with("pd.Tso")), "{sent:?}");
    assert!(events(&mut core).is_empty());
    assert_eq!(core.leftovers(), Vec::<String>::new());
}

#[test]
fn a_cancelled_get_leaves_nothing_and_its_late_reply_is_dropped() {
    let mut core = core_with(Config::default());
    let mut responder = Responder::default();
    let get = core.handle_command(
        Time::ZERO,
        Command::Raw(RawCommand::Get {
            key: bytes::Bytes::from_static(b"k"),
            cf: String::new(),
        }),
    );
    // Let discovery and the lookups finish, keeping the store request unanswered.
    let mut store_request = None;
    for _ in 0..10 {
        let Some(transmit) = core.poll_transmit() else {
            break;
        };
        if matches!(transmit.request, Request::Store(_)) {
            store_request = Some(transmit);
            continue;
        }
        let reply = responder.answer(&transmit);
        core.handle_reply(Time::ZERO, transmit.id, reply);
    }
    let Some(store_request) = store_request else {
        panic!("the get reached the store");
    };
    assert_eq!(core.ops_in_flight(), 1);
    core.cancel(Time::ZERO, get);
    assert_eq!(core.ops_in_flight(), 0);
    let reply = responder.answer(&store_request);
    core.handle_reply(Time::ZERO, store_request.id, reply);
    assert!(
        events(&mut core).is_empty(),
        "a cancelled operation reports nothing"
    );
    assert!(core.poll_transmit().is_none(), "and nothing is retried");
    assert_eq!(core.leftovers(), Vec::<String>::new());
}

/// Heartbeats: every second its timer starts a background timestamp request; after
/// `beats` of them it is finished.
#[derive(Debug)]
struct Heartbeat {
    beats: u32,
}

impl Entity for Heartbeat {
    fn on_timer(&mut self, now: Time, _wall_ms: u64) -> EntityStep {
        self.beats -= 1;
        EntityStep {
            next_timer: (self.beats > 0).then(|| now + Duration::from_secs(1)),
            spawn: vec![Box::new(OneTimestamp { call: None })],
            finished: self.beats == 0,
        }
    }
}

#[test]
fn entity_timers_start_background_work_and_die_with_the_entity() {
    let mut core = core_with(Config::default());
    let mut responder = Responder::default();
    core.insert_entity(
        Box::new(Heartbeat { beats: 2 }),
        Some(Time::from_millis(1_000)),
    );
    assert_eq!(core.poll_timeout(), Some(Time::from_millis(1_000)));
    let mut tso = 0;
    for at in [1_000, 2_000] {
        let now = Time::from_millis(at);
        core.handle_timeout(now);
        tso += answer_all(&mut core, &mut responder, now)
            .iter()
            .filter(|s| s.starts_with("pd.Tso"))
            .count();
        assert!(
            events(&mut core).is_empty(),
            "background work reports to nobody"
        );
    }
    assert_eq!(tso, 2, "one background request per beat");
    assert_eq!(core.entities.len(), 0, "finished after its last beat");
    assert_eq!(core.leftovers(), Vec::<String>::new());
    assert_eq!(core.poll_timeout(), None, "its timer died with it");
}

/// Reads the wall clock the machine was given.
#[derive(Debug)]
struct ReadWallClock;

impl Operation for ReadWallClock {
    fn on_start(self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        Next::Done(Ok(Output::Count(cx.wall_ms())))
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }
}

#[test]
fn wall_clock_is_an_input_and_may_step_back() {
    let mut core = core_with(Config::default());
    core.start_root(Time::ZERO, Box::new(ReadWallClock));
    assert_eq!(events(&mut core)[0].1, Ok(Output::Count(0)), "0 until fed");
    core.handle_wall_clock(1_700_000_000_000);
    core.start_root(Time::ZERO, Box::new(ReadWallClock));
    assert_eq!(events(&mut core)[0].1, Ok(Output::Count(1_700_000_000_000)));
    // A clock step backwards is taken as given; monotonic time is not affected.
    core.handle_wall_clock(1_699_999_999_000);
    core.start_root(Time::from_millis(5), Box::new(ReadWallClock));
    assert_eq!(events(&mut core)[0].1, Ok(Output::Count(1_699_999_999_000)));
}

/// With API V2 and a named keyspace, the GC queries wait for the keyspace and then ask
/// about that keyspace, even when they are the client's first commands.
#[test]
fn gc_queries_wait_for_the_keyspace_and_use_its_scope() {
    for command in [
        Command::Pd(PdCommand::TxnSafePoint),
        Command::Pd(PdCommand::CheckVisibility {
            start_ts: Timestamp::from_version(u64::MAX),
        }),
    ] {
        let mut core = core_with(
            Config::default()
                .with_api_version(ApiVersion::V2)
                .with_keyspace("named"),
        );
        let mut responder = Responder::default();
        let op = core.handle_command(Time::ZERO, command.clone());
        let mut scopes = Vec::new();
        let mut order = Vec::new();
        for _ in 0..10 {
            let Some(transmit) = core.poll_transmit() else {
                break;
            };
            if let Request::Pd(pd) = &transmit.request {
                order.push(describe(&transmit.request));
                if let PdRequest::GetGcState(request) = pd.as_ref() {
                    scopes.push(request.keyspace_scope);
                }
            }
            let reply = responder.answer(&transmit);
            core.handle_reply(Time::ZERO, transmit.id, reply);
        }
        let load = order.iter().position(|s| s.starts_with("pd.LoadKeyspace"));
        let gc = order.iter().position(|s| s == "pd.GetGcState");
        assert!(load < gc && load.is_some(), "{command:?}: {order:?}");
        // The responder gives every keyspace but DEFAULT id 1.
        assert_eq!(
            scopes,
            [Some(tikv_proto::pdpb::KeyspaceScope {
                keyspace: Some(tikv_proto::pdpb::keyspace_scope::Keyspace::KeyspaceId(1)),
            })],
            "{command:?}"
        );
        let done = events(&mut core);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].0, op);
        assert!(done[0].1.is_ok(), "{:?}", done[0].1);
    }
}
