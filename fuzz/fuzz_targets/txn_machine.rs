//! Feeds the commit machinery arbitrary transactions and arbitrary store answers: prewrites
//! and commits that succeed, meet locks, conflicts, expired commit timestamps, region
//! errors, transport failures or silence, with arbitrary async-commit and 1PC answers.
//!
//! It must never panic, every commit must finish within a bounded number of steps, and a
//! commit reported successful must really be decided: for two-phase, a commit of the
//! primary at that timestamp was acknowledged; for async commit, every key was prewritten
//! and the timestamp is the largest `min_commit_ts` answered; for 1PC, a prewrite answered
//! that commit timestamp. A commit with an upper bound check on its timestamp is two-phase,
//! and a refused timestamp was never committed at.

#![no_main]

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tikv_core::machine::testing::Responder;
use tikv_core::machine::{Command, Core, Event, Output, TxnCommand};
use tikv_core::proto::{errorpb, kvrpcpb};
use tikv_core::proto::rpc::RpcError;
use tikv_core::rpc::{Request, Response, StoreRequest, StoreResponse};
use tikv_core::{
    CommitMode, CommitOptions, CommitRequest, CommitTsUpperBoundCheck, Config, Error, Mutation,
    PrewriteLockPolicy, Time, Timestamp,
};

const START_TS: u64 = 1_000;

/// What the fuzzed store did, for the end checks.
#[derive(Default)]
struct Facts {
    /// (primary key, commit ts) pairs whose commit was acknowledged.
    primary_commits: BTreeSet<(Bytes, u64)>,
    /// Keys whose async-commit prewrite succeeded, and the largest min_commit_ts answered.
    async_prewritten: BTreeSet<Bytes>,
    max_min_commit_ts: u64,
    /// 1PC commit timestamps answered.
    one_pc: BTreeSet<u64>,
}

struct Answers<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Answers<'_> {
    fn next(&mut self) -> u8 {
        let byte = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        byte
    }
}

fn region_error(kind: u8) -> errorpb::Error {
    let mut err = errorpb::Error {
        message: "fuzzed".into(),
        ..Default::default()
    };
    match kind % 5 {
        0 => err.server_is_busy = Some(Default::default()),
        1 => err.epoch_not_match = Some(Default::default()),
        2 => err.region_not_found = Some(Default::default()),
        3 => err.undetermined_result = Some(Default::default()),
        _ => err.stale_command = Some(Default::default()),
    }
    err
}

fn lock(key: &Bytes, primary: &Bytes, ts: u64, ttl: u64) -> kvrpcpb::KeyError {
    kvrpcpb::KeyError {
        locked: Some(Box::new(kvrpcpb::LockInfo {
            primary_lock: primary.clone(),
            lock_version: ts,
            key: key.clone(),
            lock_ttl: ttl,
            txn_size: 1,
            lock_type: kvrpcpb::Op::Put as i32,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The fuzzed answer to `request`; `None` is silence (the machine's deadline fires).
fn answer(
    request: &StoreRequest,
    answers: &mut Answers<'_>,
    facts: &mut Facts,
    primary: &Bytes,
) -> Option<Result<StoreResponse, RpcError>> {
    let choice = answers.next();
    match choice % 16 {
        0 => return None,
        1 => return Some(Err(RpcError::ConnectionLost("fuzzed".into()))),
        2 => {
            let mut response = StoreResponse::empty_for(request);
            response.set_region_error(region_error(answers.next()));
            return Some(Ok(response));
        }
        _ => {}
    }
    let detail = answers.next();
    let response = match request {
        StoreRequest::Prewrite(r) => {
            let mut response = kvrpcpb::PrewriteResponse::default();
            let first = r.mutations.first().map(|m| m.key.clone()).unwrap_or_default();
            match choice % 16 {
                3 => {
                    // An older transaction's lock (resolvable), expired or alive.
                    let ttl = if detail % 2 == 0 { 0 } else { 3_000 };
                    response.errors.push(lock(&first, &Bytes::from_static(b"other"), 10, ttl));
                }
                4 => response.errors.push(lock(&first, &first, START_TS + 5, 3_000)),
                5 => response.errors.push(kvrpcpb::KeyError {
                    conflict: Some(kvrpcpb::WriteConflict {
                        start_ts: START_TS,
                        conflict_ts: START_TS + 1,
                        conflict_commit_ts: START_TS + 2,
                        key: first.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                6 => response.errors.push(kvrpcpb::KeyError {
                    already_exist: Some(kvrpcpb::AlreadyExist { key: first.clone() }),
                    ..Default::default()
                }),
                _ => {
                    if r.try_one_pc && detail % 3 != 0 {
                        let ts = (1 << 20) + u64::from(detail);
                        response.one_pc_commit_ts = ts;
                        facts.one_pc.insert(ts);
                    } else if r.use_async_commit && detail % 4 != 0 {
                        let min = (1 << 21) + u64::from(detail);
                        response.min_commit_ts = min;
                        facts.max_min_commit_ts = facts.max_min_commit_ts.max(min);
                        for m in &r.mutations {
                            facts.async_prewritten.insert(m.key.clone());
                        }
                    }
                }
            }
            StoreResponse::Prewrite(response)
        }
        StoreRequest::Commit(r) => {
            let mut response = kvrpcpb::CommitResponse::default();
            match choice % 16 {
                3 | 4 => {
                    response.error = Some(Box::new(kvrpcpb::KeyError {
                        commit_ts_expired: Some(kvrpcpb::CommitTsExpired {
                            start_ts: START_TS,
                            attempted_commit_ts: r.commit_version,
                            key: r.keys.first().cloned().unwrap_or_default(),
                            min_commit_ts: r.commit_version + u64::from(detail),
                        }),
                        ..Default::default()
                    }));
                }
                5 => {
                    response.error = Some(Box::new(kvrpcpb::KeyError {
                        txn_lock_not_found: Some(kvrpcpb::TxnLockNotFound {
                            key: r.keys.first().cloned().unwrap_or_default(),
                        }),
                        ..Default::default()
                    }));
                }
                _ => {
                    if r.keys.contains(primary) {
                        facts
                            .primary_commits
                            .insert((primary.clone(), r.commit_version));
                    }
                }
            }
            StoreResponse::Commit(response)
        }
        StoreRequest::CheckTxnStatus(_) => {
            StoreResponse::CheckTxnStatus(kvrpcpb::CheckTxnStatusResponse {
                commit_version: if detail % 2 == 0 { 20 } else { 0 },
                lock_ttl: 0,
                ..Default::default()
            })
        }
        other => StoreResponse::empty_for(other),
    };
    Some(Ok(response))
}

fuzz_target!(|input: (u8, u8, Vec<u8>)| {
    let (shape, key_count, replies) = input;
    let config = Config::default()
        .with_rng_seed(u64::from(shape))
        .with_txn_commit_batch_size(usize::from(shape % 4) * 8 + 1)
        .with_ttl_refreshed_txn_size(if shape & 0x40 == 0 { u64::MAX } else { 0 })
        .with_managed_lock_ttl(Duration::from_millis(200));
    let Ok(mut core) = Core::new(config, vec!["pd:2379".to_owned()], Time::ZERO) else {
        return;
    };
    core.handle_wall_clock(1_700_000_000_000);
    let count = usize::from(key_count % 8) + 1;
    let mutations: Vec<Mutation> = (0..count)
        .map(|i| Mutation::put(Bytes::from(format!("k{i:02}")), Bytes::from_static(b"v")))
        .collect();
    let primary = mutations[0].key.clone();
    let options = CommitOptions {
        async_commit: shape & 0x10 != 0,
        try_one_pc: shape & 0x20 != 0,
        causal_consistency: shape & 0x80 != 0,
        prewrite_lock_policy: if shape & 0x04 == 0 {
            PrewriteLockPolicy::TryResolve
        } else {
            PrewriteLockPolicy::NoResolve
        },
        // Refuses odd commit timestamps.
        commit_ts_upper_bound_check: (shape & 0x08 != 0)
            .then(|| CommitTsUpperBoundCheck::new(|ts| ts.version() % 2 == 0)),
        ..CommitOptions::default()
    };
    let bounded = options.commit_ts_upper_bound_check.is_some();
    let request = CommitRequest {
        start_ts: Timestamp::from_version(START_TS),
        begun_at: Time::ZERO,
        size: (count * 4) as u64,
        primary: primary.clone(),
        mutations,
        options,
    };
    let op = core.handle_command(Time::ZERO, Command::Txn(TxnCommand::Commit(Box::new(request))));
    let mut responder = Responder::default();
    let mut answers = Answers { bytes: &replies, at: 0 };
    let mut facts = Facts::default();
    let mut result = None;
    let mut now = Time::ZERO;
    for _ in 0..200_000 {
        let mut queue = Vec::new();
        while let Some(transmit) = core.poll_transmit() {
            match &transmit.request {
                Request::Store(request) => {
                    if let Some(reply) = answer(request, &mut answers, &mut facts, &primary) {
                        queue.push((transmit.id, reply.map(|r| Response::Store(Box::new(r)))));
                    }
                }
                _ => queue.push((transmit.id, responder.answer(&transmit))),
            }
        }
        while let Some(Event::Done(id, outcome)) = core.poll_event() {
            assert_eq!(id, op, "only the commit reports");
            assert!(result.is_none(), "reported twice");
            result = Some(outcome);
        }
        if queue.is_empty() {
            if core.ops_in_flight() == 0 {
                break;
            }
            match core.poll_timeout() {
                Some(at) => {
                    now = now.max(at);
                    core.handle_timeout(now);
                }
                None => panic!("stuck: {:?}", core.leftovers()),
            }
        }
        for (id, reply) in queue {
            core.handle_reply(now, id, reply);
        }
    }
    assert_eq!(core.ops_in_flight(), 0, "the machine did not settle");
    let Some(result) = result else {
        panic!("the commit never finished");
    };
    if let Err(Error::CommitTsUpperBound { commit_ts, .. }) = &result {
        assert!(bounded && commit_ts.version() % 2 == 1, "refused {commit_ts} unasked");
        assert!(
            !facts.primary_commits.contains(&(primary.clone(), commit_ts.version())),
            "the primary was committed at the refused {commit_ts}"
        );
    }
    if let Ok(Output::Committed(outcome)) = result {
        let ts = outcome.commit_ts.version();
        // A checked commit timestamp is chosen by the client: never async commit or 1PC.
        assert!(!bounded || outcome.mode == CommitMode::TwoPhase, "{outcome:?} with a check");
        match outcome.mode {
            CommitMode::TwoPhase => assert!(
                facts.primary_commits.contains(&(primary.clone(), ts)),
                "reported committed at {ts} without the primary's commit acknowledged"
            ),
            CommitMode::AsyncCommit => {
                assert_eq!(facts.async_prewritten.len(), count, "not every key prewritten");
                assert!(ts >= facts.max_min_commit_ts, "below an answered min_commit_ts");
            }
            CommitMode::OnePc => assert!(facts.one_pc.contains(&ts), "1PC ts never answered"),
            _ => panic!("unknown commit mode"),
        }
    }
});
