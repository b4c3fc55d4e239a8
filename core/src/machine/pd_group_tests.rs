//! The machine against a scripted PD group: several members, one leader, followers that
//! answer as PD's do. These follow the PD client's service discovery (`updateMember`,
//! `updateURLs`, `switchLeader`, `updateMemberLoop`) and its TSO retry on a leader change.

use std::collections::VecDeque;
use std::time::Duration;

use tikv_proto::pdpb;
use tikv_proto::rpc::RpcError;
use tikv_proto::status::{Code, Status};

use super::testing::{Responder, describe};
use super::*;
use crate::config::Config;
use crate::rpc::{PdRequest, PdResponse, Request, Response};

/// One millisecond each way.
const LATENCY: Duration = Duration::from_millis(1);

/// A scripted PD group: members by address, which of them run, which one leads.
struct Group {
    members: Vec<(&'static str, bool)>,
    leader: Option<usize>,
    responder: Responder,
    /// `time address method` of every request, in order.
    log: Vec<String>,
}

impl Group {
    fn new(addresses: &[&'static str]) -> Self {
        Self {
            members: addresses.iter().map(|a| (*a, true)).collect(),
            leader: Some(0),
            responder: Responder::default(),
            log: Vec::new(),
        }
    }

    fn member(&self, index: usize) -> pdpb::Member {
        let (address, _) = self.members[index];
        pdpb::Member {
            name: format!("pd-{index}"),
            member_id: index as u64 + 1,
            client_urls: vec![format!("http://{address}")],
            ..Default::default()
        }
    }

    /// What PD answers `transmit` with, at `now`.
    fn answer(&mut self, now: Time, transmit: &Transmit) -> Result<Response, RpcError> {
        self.log.push(format!(
            "{now} {} {}",
            transmit.address,
            describe(&transmit.request)
        ));
        let Some(index) = self
            .members
            .iter()
            .position(|(address, _)| **address == *transmit.address)
        else {
            return Err(RpcError::ConnectionLost(format!(
                "{}: no such host",
                transmit.address
            )));
        };
        if !self.members[index].1 {
            return Err(RpcError::Connect {
                address: transmit.address.to_string(),
                reason: "connection refused".to_owned(),
            });
        }
        let Request::Pd(request) = &transmit.request else {
            return self.responder.answer(transmit);
        };
        match **request {
            PdRequest::GetMembers(_) => {
                let members = (0..self.members.len()).map(|i| self.member(i)).collect();
                Ok(Response::Pd(Box::new(PdResponse::GetMembers(
                    pdpb::GetMembersResponse {
                        header: Some(pdpb::ResponseHeader {
                            cluster_id: self.responder.cluster_id,
                            ..Default::default()
                        }),
                        members,
                        leader: self.leader.map(|i| self.member(i)),
                        ..Default::default()
                    },
                ))))
            }
            _ if self.leader == Some(index) => self.responder.answer(transmit),
            // PD's allocator on a member without the lease.
            PdRequest::Tso(_) => Err(RpcError::Status(Status::new(
                Code::Unknown,
                "generate timestamp failed, requested pd is not leader of cluster",
            ))),
            // PD's `validateRoleInRequest`.
            _ => Err(RpcError::Status(Status::new(
                Code::Unavailable,
                "not leader",
            ))),
        }
    }

    /// The log lines that sent `method` (a `describe` prefix).
    fn sent(&self, method: &str) -> Vec<&str> {
        self.log
            .iter()
            .filter(|line| line.contains(method))
            .map(String::as_str)
            .collect()
    }
}

fn core(endpoints: &[&str], member_refresh: Duration) -> Core {
    let config = Config {
        store_refresh_interval: Duration::ZERO,
        pd_member_refresh_interval: member_refresh,
        ..Config::default()
    };
    let endpoints = endpoints.iter().map(|e| (*e).to_owned()).collect();
    match Core::new(config, endpoints, Time::ZERO) {
        Ok(core) => core,
        Err(err) => panic!("{err}"),
    }
}

/// Drives `core` from `now` until `op` finishes: every request is answered by `group` after
/// [`LATENCY`], `before` runs before each input (to change the group at a time); returns the
/// result and when it came.
fn run_op(
    core: &mut Core,
    group: &mut Group,
    op: OpId,
    mut now: Time,
    mut before: impl FnMut(Time, &mut Group),
) -> (Result<Output, Error>, Time) {
    let mut queue: VecDeque<(Time, RequestId, Result<Response, RpcError>)> = VecDeque::new();
    for _ in 0..100_000 {
        while let Some(transmit) = core.poll_transmit() {
            let reply = group.answer(now, &transmit);
            queue.push_back((now + LATENCY, transmit.id, reply));
        }
        while let Some(Event::Done(done, result)) = core.poll_event() {
            if done == op {
                return (result, now);
            }
        }
        let next_reply = queue.front().map(|(at, _, _)| *at);
        let next_timer = core.poll_timeout();
        let at = match (next_reply, next_timer) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => panic!("op {op:?} stuck at {now}: {:#?}", group.log),
        };
        now = now.max(at);
        before(now, group);
        if next_reply.is_some_and(|r| r <= now) {
            if let Some((_, id, reply)) = queue.pop_front() {
                core.handle_reply(now, id, reply);
                continue;
            }
        }
        core.handle_timeout(now);
    }
    panic!("op {op:?} did not finish: {:#?}", group.log);
}

fn timestamp(core: &mut Core, group: &mut Group, now: Time) -> (Result<Output, Error>, Time) {
    let op = core.handle_command(now, Command::Pd(PdCommand::Timestamp));
    run_op(core, group, op, now, |_, _| {})
}

fn ok(result: &Result<Output, Error>) {
    assert!(matches!(result, Ok(Output::Timestamp(_))), "{result:?}");
}

/// The PD client's `updateURLs`: the member list replaces the URLs it was configured with,
/// sorted, so a client given one address knows every member.
#[test]
fn discovery_learns_every_member_url() {
    let mut group = Group::new(&["pd-b:2379", "pd-a:2379", "pd-c:2379"]);
    let mut core = core(&["pd-b:2379"], Duration::ZERO);
    let (result, _) = timestamp(&mut core, &mut group, Time::ZERO);
    ok(&result);
    let view = core.pd_view();
    assert_eq!(view.leader.as_deref(), Some("pd-b:2379"));
    assert_eq!(view.endpoints, ["pd-a:2379", "pd-b:2379", "pd-c:2379"]);
}

/// The PD client's `updateMember` asks one URL after another: a dead first endpoint costs no
/// backoff when the next one answers.
#[test]
fn discovery_tries_every_url_before_backing_off() {
    let mut group = Group::new(&["pd-a:2379", "pd-b:2379"]);
    group.members[0].1 = false;
    group.leader = Some(1);
    let mut core = core(&["pd-a:2379", "pd-b:2379"], Duration::ZERO);
    let (result, done) = timestamp(&mut core, &mut group, Time::ZERO);
    ok(&result);
    // GetMembers to a (refused), to b, then Tso: three round trips, no sleep.
    assert_eq!(done, Time::ZERO + LATENCY * 3, "{:#?}", group.log);
}

/// PD's followers refuse with "not leader" (`ErrGenerateTimestamp` for TSO) after the lease
/// moved; the client rediscovers and sends the TSO request to the new leader at once,
/// without waiting out a backoff (the PD client retries GetTS on a leader change at once).
#[test]
fn a_moved_leader_is_rediscovered_and_the_request_goes_there_at_once() {
    let mut group = Group::new(&["pd-a:2379", "pd-b:2379", "pd-c:2379"]);
    let mut core = core(&["pd-a:2379"], Duration::ZERO);
    let (result, first) = timestamp(&mut core, &mut group, Time::ZERO);
    ok(&result);
    group.leader = Some(2);
    group.log.clear();
    let (result, done) = timestamp(&mut core, &mut group, first);
    ok(&result);
    // Tso refused by a, GetMembers (a says c leads), Tso at c.
    assert_eq!(done, first + LATENCY * 3, "{:#?}", group.log);
    let tso = group.sent("pd.Tso");
    assert!(tso[1].contains("pd-c:2379"), "{tso:?}");
    assert_eq!(core.pd_view().leader.as_deref(), Some("pd-c:2379"));
}

/// When the leader dies, the next discovery round asks it last, so a dead leader does not
/// cost a round trip (or a timeout) first.
#[test]
fn a_failed_leader_is_asked_last() {
    let mut group = Group::new(&["pd-a:2379", "pd-b:2379", "pd-c:2379"]);
    let mut core = core(&["pd-a:2379"], Duration::ZERO);
    let (_, first) = timestamp(&mut core, &mut group, Time::ZERO);
    group.members[0].1 = false;
    group.leader = Some(1);
    group.log.clear();
    let (result, _) = timestamp(&mut core, &mut group, first);
    ok(&result);
    let members = group.sent("pd.GetMembers");
    assert_eq!(members.len(), 1, "{:#?}", group.log);
    assert!(members[0].contains("pd-b:2379"), "{members:?}");
}

/// During an election every member reports no leader: the client asks again after the PD
/// client's short member-update backoff (20 ms doubling to 100 ms) and is served within
/// about one backoff of the election's end, however long it took.
#[test]
fn service_resumes_right_after_an_election() {
    let mut group = Group::new(&["pd-a:2379", "pd-b:2379", "pd-c:2379"]);
    let mut core = core(&["pd-a:2379", "pd-b:2379", "pd-c:2379"], Duration::ZERO);
    let (_, first) = timestamp(&mut core, &mut group, Time::ZERO);
    let elected = first + Duration::from_secs(3);
    group.members[0].1 = false;
    group.leader = None;
    let op = core.handle_command(first, Command::Pd(PdCommand::Timestamp));
    let (result, done) = run_op(&mut core, &mut group, op, first, |now, group| {
        if now >= elected {
            group.leader = Some(2);
        }
    });
    ok(&result);
    assert!(done >= elected);
    assert!(
        done.saturating_since(elected) <= Duration::from_millis(110),
        "served {:?} after the election\n{:#?}",
        done.saturating_since(elected),
        group.log
    );
}

/// A request that keeps failing at a leader discovery confirms still backs off (`pdRPC`):
/// no tight loop between rediscovery and the same refusal.
#[test]
fn failures_at_the_same_leader_still_back_off() {
    let mut group = Group::new(&["pd-a:2379"]);
    let mut core = core(&["pd-a:2379"], Duration::ZERO);
    let (_, first) = timestamp(&mut core, &mut group, Time::ZERO);
    let op = core.handle_command(first, Command::Pd(PdCommand::ClusterId));
    assert!(matches!(core.poll_event(), Some(Event::Done(done, Ok(_))) if done == op));
    // The leader refuses every TSO request with a transport-level status.
    let mut queue: VecDeque<(Time, RequestId, Result<Response, RpcError>)> = VecDeque::new();
    let op = core.handle_command(first, Command::Pd(PdCommand::Timestamp));
    let mut now = first;
    let mut tso_times = Vec::new();
    let result = loop {
        while let Some(transmit) = core.poll_transmit() {
            let is_tso = matches!(transmit.request.as_pd(), Some(PdRequest::Tso(_)));
            let reply = if is_tso {
                tso_times.push(now);
                Err(RpcError::Status(Status::new(
                    Code::Unavailable,
                    "overloaded",
                )))
            } else {
                group.answer(now, &transmit)
            };
            queue.push_back((now + LATENCY, transmit.id, reply));
        }
        if let Some(Event::Done(done, result)) = core.poll_event() {
            assert_eq!(done, op);
            break result;
        }
        let next = queue
            .front()
            .map(|(at, _, _)| *at)
            .into_iter()
            .chain(core.poll_timeout())
            .min();
        let Some(at) = next else { panic!("stuck") };
        now = now.max(at);
        match queue.front() {
            Some((due, _, _)) if *due <= now => {
                if let Some((_, id, reply)) = queue.pop_front() {
                    core.handle_reply(now, id, reply);
                }
            }
            _ => core.handle_timeout(now),
        }
    };
    assert!(result.is_err(), "{result:?}");
    // pdRPC: 500 ms base, so consecutive attempts are at least 250 ms apart (equal jitter),
    // and the 20 s budget allows only a handful.
    assert!(tso_times.len() > 3 && tso_times.len() < 20, "{tso_times:?}");
    assert!(
        tso_times
            .windows(2)
            .all(|w| w[1].saturating_since(w[0]) >= Duration::from_millis(250)),
        "{tso_times:?}"
    );
}

/// The PD client's `updateMemberLoop`: every interval the leader is asked for the members;
/// a moved leader is followed before any request fails.
#[test]
fn periodic_member_check_follows_a_moved_leader() {
    let interval = Duration::from_secs(60);
    let mut group = Group::new(&["pd-a:2379", "pd-b:2379"]);
    let mut core = core(&["pd-a:2379"], interval);
    ok(&timestamp(&mut core, &mut group, Time::ZERO).0);
    // Only the check's timer is left, armed when discovery succeeded: let it fire, answered
    // by a group whose leader moved (a still answers GetMembers as a follower does).
    group.leader = Some(1);
    let at = core
        .poll_timeout()
        .unwrap_or_else(|| panic!("no member check armed"));
    assert_eq!(at, Time::ZERO + LATENCY + interval);
    core.handle_timeout(at);
    let check = core
        .poll_transmit()
        .unwrap_or_else(|| panic!("no member check sent"));
    assert_eq!(&*check.address, "pd-a:2379");
    assert!(matches!(
        check.request.as_pd(),
        Some(PdRequest::GetMembers(_))
    ));
    let reply = group.answer(at, &check);
    core.handle_reply(at + LATENCY, check.id, reply);
    assert_eq!(core.pd_view().leader.as_deref(), Some("pd-b:2379"));
    group.log.clear();
    let (result, _) = timestamp(&mut core, &mut group, at + LATENCY);
    ok(&result);
    assert_eq!(group.sent("pd.").len(), 1, "{:#?}", group.log);
    assert!(
        group.log[0].contains("pd-b:2379 pd.Tso"),
        "{:#?}",
        group.log
    );
    // The next check is armed again.
    assert_eq!(core.poll_timeout(), Some(at + LATENCY + interval));
}

/// A request out at the old leader when the member check switched to a new one is refused
/// there ("not leader") and goes to the new leader at once.
#[test]
fn a_refusal_from_the_former_leader_goes_to_the_known_new_one_at_once() {
    let interval = Duration::from_secs(60);
    let mut group = Group::new(&["pd-a:2379", "pd-b:2379"]);
    let mut core = core(&["pd-a:2379"], interval);
    ok(&timestamp(&mut core, &mut group, Time::ZERO).0);
    let at = core
        .poll_timeout()
        .unwrap_or_else(|| panic!("no member check armed"));
    core.handle_timeout(at);
    let check = core
        .poll_transmit()
        .unwrap_or_else(|| panic!("no member check"));
    // A timestamp is asked for while the check is out: it goes to a.
    let op = core.handle_command(at, Command::Pd(PdCommand::Timestamp));
    let tso = core
        .poll_transmit()
        .unwrap_or_else(|| panic!("no TSO request"));
    assert_eq!(&*tso.address, "pd-a:2379");
    group.leader = Some(1);
    let reply = group.answer(at, &check);
    core.handle_reply(at + LATENCY, check.id, reply);
    assert_eq!(core.pd_view().leader.as_deref(), Some("pd-b:2379"));
    // a refuses the timestamp: it goes to b in the same input, without a backoff.
    let refused = group.answer(at, &tso);
    assert!(refused.is_err());
    core.handle_reply(at + LATENCY * 2, tso.id, refused);
    let again = core
        .poll_transmit()
        .unwrap_or_else(|| panic!("not retried at once"));
    assert_eq!(&*again.address, "pd-b:2379");
    assert!(matches!(again.request.as_pd(), Some(PdRequest::Tso(_))));
    let reply = group.answer(at, &again);
    core.handle_reply(at + LATENCY * 3, again.id, reply);
    assert!(matches!(
        core.poll_event(),
        Some(Event::Done(done, Ok(Output::Timestamp(_)))) if done == op
    ));
}

/// A member check that fails changes nothing: the next one comes an interval later.
#[test]
fn a_failed_member_check_waits_for_the_next_interval() {
    let interval = Duration::from_secs(60);
    let mut group = Group::new(&["pd-a:2379"]);
    let mut core = core(&["pd-a:2379"], interval);
    ok(&timestamp(&mut core, &mut group, Time::ZERO).0);
    let at = core
        .poll_timeout()
        .unwrap_or_else(|| panic!("no member check armed"));
    core.handle_timeout(at);
    let check = core.poll_transmit().unwrap_or_else(|| panic!("no check"));
    core.handle_reply(
        at,
        check.id,
        Err(RpcError::DeadlineExceeded(Duration::from_secs(3))),
    );
    assert!(core.poll_transmit().is_none());
    assert_eq!(core.poll_timeout(), Some(at + interval));
    assert_eq!(core.pd_view().leader.as_deref(), Some("pd-a:2379"));
}

/// When no member answers for the whole discovery budget, the waiting operation fails.
#[test]
fn discovery_gives_up_after_its_budget() {
    let mut group = Group::new(&["pd-a:2379", "pd-b:2379"]);
    group.members[0].1 = false;
    group.members[1].1 = false;
    let mut core = core(&["pd-a:2379", "pd-b:2379"], Duration::ZERO);
    let (result, done) = timestamp(&mut core, &mut group, Time::ZERO);
    assert!(result.is_err(), "{result:?}");
    // The discovery budget (20 s of sleep), plus the round trips.
    assert!(done >= Time::from_millis(20_000), "{done}");
    assert!(done < Time::from_millis(30_000), "{done}");
    assert_eq!(core.leftovers(), Vec::<String>::new());
}
