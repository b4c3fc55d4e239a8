//! The committer against scripted store answers.

use std::time::Duration;

use super::lock_ttl_ms;
use crate::config::Config;

#[test]
fn lock_ttl_grows_with_size_and_age() {
    let config = Config::default();
    // Small transactions get the default TTL plus their age.
    assert_eq!(lock_ttl_ms(&config, 100, 0), 3_000);
    assert_eq!(lock_ttl_ms(&config, 100, 250), 3_250);
    // 1 MiB: 6 s (client-go's ttlFactor times the square root of the size in MiB).
    assert_eq!(lock_ttl_ms(&config, 1024 * 1024, 0), 6_000);
    // 4 MiB: 12 s; 100 MiB is capped at the managed TTL.
    assert_eq!(lock_ttl_ms(&config, 4 * 1024 * 1024, 0), 12_000);
    assert_eq!(lock_ttl_ms(&config, 100 * 1024 * 1024, 0), 20_000);
    // Just at the batch size the square-root rule starts but stays at the floor.
    assert_eq!(lock_ttl_ms(&config, 16 * 1024, 0), 3_000);
    let short = Config::default().with_default_lock_ttl(Duration::from_millis(100));
    assert_eq!(lock_ttl_ms(&short, 10, 5), 105);
}

use bytes::Bytes;
use tikv_proto::kvrpcpb;
use tikv_proto::rpc::RpcError;

use super::{CommitKnobs, CommitMode, CommitOptions, CommitOutcome, CommitRequest, Mutation};
use crate::command::{Command, Output, TxnCommand};
use crate::error::{Error, KeyError};
use crate::machine::testing::{Responder, StoreScript, drive_store_script};
use crate::machine::{Core, Event};
use crate::oracle::Timestamp;
use crate::rpc::{Request, Response, StoreRequest, StoreResponse};
use crate::time::Time;

const START: u64 = 100;

fn core_with(config: Config) -> Core {
    let config = Config {
        store_refresh_interval: Duration::ZERO,
        pd_member_refresh_interval: Duration::ZERO,
        ..config
    };
    let mut core =
        Core::new(config, vec!["pd:2379".into()], Time::ZERO).unwrap_or_else(|err| panic!("{err}"));
    core.handle_wall_clock(1_700_000_000_000);
    core
}

fn key(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn request(keys: &[&str], options: CommitOptions) -> CommitRequest {
    let mutations: Vec<Mutation> = keys
        .iter()
        .map(|k| Mutation::put(key(k), key("v")))
        .collect();
    CommitRequest {
        start_ts: Timestamp::from_version(START),
        begun_at: Time::ZERO,
        size: mutations
            .iter()
            .map(|m| (m.key.len() + m.value.len()) as u64)
            .sum(),
        primary: key(keys[0]),
        mutations,
        options,
    }
}

fn keys_text(keys: &[Bytes]) -> String {
    keys.iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect::<Vec<_>>()
        .join(",")
}

/// One line per store request: what the committer asked for.
fn describe(request: &StoreRequest) -> String {
    match request {
        StoreRequest::Prewrite(r) => {
            let keys: Vec<Bytes> = r.mutations.iter().map(|m| m.key.clone()).collect();
            format!(
                "prewrite [{}] async={} 1pc={} secondaries=[{}]",
                keys_text(&keys),
                r.use_async_commit,
                r.try_one_pc,
                keys_text(&r.secondaries)
            )
        }
        StoreRequest::Commit(r) => format!(
            "commit [{}] ts={} async={}",
            keys_text(&r.keys),
            r.commit_version,
            r.use_async_commit
        ),
        StoreRequest::BatchRollback(r) => format!("rollback [{}]", keys_text(&r.keys)),
        StoreRequest::SplitRegion(r) => format!("split [{}]", keys_text(&r.split_keys)),
        StoreRequest::TxnHeartBeat(r) => format!("heartbeat ttl={}", r.advise_lock_ttl),
        StoreRequest::CheckTxnStatus(r) => format!("check lock_ts={}", r.lock_ts),
        StoreRequest::ResolveLock(r) => format!(
            "resolve start={} commit={}",
            r.start_version, r.commit_version
        ),
        other => format!("{other:?}"),
    }
}

/// A store's answer to one request: `None` answers normally (an empty success).
type Store<'a> = StoreScript<'a>;

/// Drives `core` until nothing is in flight: PD and TSO answered by a [`Responder`], store
/// requests by `store`, timers fired in virtual time. Returns the store requests seen, in
/// order, and the user events.
fn drive(core: &mut Core, store: &mut Store<'_>) -> (Vec<String>, Vec<Event>) {
    let run = drive_store_script(core, store, 2_000);
    let seen: Vec<String> = run.requests.iter().map(describe).collect();
    assert!(run.finished, "not finished: {seen:#?}");
    (seen, run.events)
}

fn commit(core: &mut Core, request: CommitRequest) {
    core.handle_command(
        Time::ZERO,
        Command::Txn(TxnCommand::Commit(Box::new(request))),
    );
}

fn committed(events: &[Event]) -> CommitOutcome {
    match events {
        [Event::Done(_, Ok(Output::Committed(outcome)))] => *outcome,
        other => panic!("one successful commit expected, got {other:?}"),
    }
}

fn failed(events: &[Event]) -> Error {
    match events {
        [Event::Done(_, Err(err))] => err.clone(),
        other => panic!("one failed commit expected, got {other:?}"),
    }
}

fn prewrite_ok() -> StoreResponse {
    StoreResponse::Prewrite(kvrpcpb::PrewriteResponse::default())
}

fn async_options() -> CommitOptions {
    CommitOptions {
        async_commit: true,
        ..CommitOptions::default()
    }
}

fn one_pc_options() -> CommitOptions {
    CommitOptions {
        try_one_pc: true,
        ..CommitOptions::default()
    }
}

fn many_keys(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("k{i:03}")).collect()
}

/// What [`drive_one_at_a_time`] saw.
struct Paced {
    seen: Vec<String>,
    events: Vec<Event>,
    /// Most store requests out at once.
    peak: usize,
    /// The PD requests, described.
    pd: Vec<String>,
}

/// Drives `core` answering store requests one at a time, oldest first (PD and TSO at once),
/// and records how many store requests were out at once. `store` answers as in [`drive`];
/// `after` runs after each store answer with the number answered so far.
fn drive_one_at_a_time(
    core: &mut Core,
    store: &mut Store<'_>,
    after: &mut dyn FnMut(&mut Core, usize),
) -> Paced {
    let mut responder = Responder::default();
    let mut paced = Paced {
        seen: Vec::new(),
        events: Vec::new(),
        peak: 0,
        pd: Vec::new(),
    };
    let mut outstanding = std::collections::VecDeque::new();
    let mut answered = 0;
    let mut now = Time::ZERO;
    for _ in 0..20_000 {
        while let Some(transmit) = core.poll_transmit() {
            match &transmit.request {
                Request::Store(_) => outstanding.push_back(transmit),
                _ => {
                    paced
                        .pd
                        .push(crate::machine::testing::describe(&transmit.request));
                    let reply = responder.answer(&transmit);
                    core.handle_reply(now, transmit.id, reply);
                }
            }
        }
        paced.peak = paced.peak.max(outstanding.len());
        while let Some(event) = core.poll_event() {
            paced.events.push(event);
        }
        if let Some(transmit) = outstanding.pop_front() {
            let Request::Store(request) = &transmit.request else {
                continue;
            };
            paced.seen.push(describe(request));
            let reply = match store(request) {
                Some(reply) => reply.map(|r| Response::Store(Box::new(r))),
                None => responder.answer(&transmit),
            };
            core.handle_reply(now, transmit.id, reply);
            answered += 1;
            after(core, answered);
            continue;
        }
        if core.ops_in_flight() == 0 {
            return paced;
        }
        match core.poll_timeout() {
            Some(at) => {
                now = now.max(at);
                core.handle_timeout(now);
            }
            None => panic!("stuck: {:?}", core.leftovers()),
        }
    }
    panic!("not finished after {} requests", paced.seen.len());
}

fn count(seen: &[String], prefix: &str) -> usize {
    seen.iter().filter(|line| line.starts_with(prefix)).count()
}

mod async_one_pc;
mod concurrency;
mod lifecycle;
mod policy;
mod presplit;
mod two_phase;
