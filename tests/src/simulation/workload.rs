//! A raw KV workload under chaos: concurrent clients issue random raw operations over a small
//! key space while the cluster splits, merges, moves leaders, restarts stores and answers with
//! injected region errors; the history goes to [`super::checker`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tikv_core::rand::Rng;
use tikv_core::{Config, Time};

use super::checker::{self, Record, Violation};
use super::ops::Op;
use super::{Chaos, Network, Setup, SimError, Simulation, describe_op, describe_result};

/// The shape of a raw workload run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawWorkload {
    /// Clients issuing operations one after another, concurrently with each other.
    pub clients: usize,
    /// Operations in total.
    pub ops: usize,
    /// Size of the key space (`k00`, `k01`, ...).
    pub keys: usize,
    /// Chance, in thousandths, that the network loses a reply.
    pub reply_loss_per_mille: u64,
    /// Longest pause of a client between two operations.
    pub max_think: Duration,
    /// Whether the chaos schedule stops and restarts stores.
    pub stop_stores: bool,
    /// PD members (1: a single PD).
    pub pd_members: u32,
    /// Whether the chaos schedule faults PD (leader stops and resignations with elections
    /// held open, broken Tso streams), and the workload asks for timestamps too.
    pub pd_faults: bool,
}

impl Default for RawWorkload {
    fn default() -> Self {
        Self {
            clients: 8,
            ops: 300,
            keys: 12,
            reply_loss_per_mille: 20,
            max_think: Duration::from_millis(5),
            stop_stores: true,
            pd_members: 1,
            pd_faults: false,
        }
    }
}

/// What a workload run produced.
#[derive(Debug)]
pub struct RawReport {
    /// The seed.
    pub seed: u64,
    /// Every operation, in start order, then the final read of every key.
    pub history: Vec<Record>,
    /// Reads no write explains (empty when the client behaved).
    pub violations: Vec<Violation>,
    /// Timestamps out of order: one handed out after another finished, yet not above it.
    pub timestamp_violations: Vec<String>,
    /// The full trace.
    pub trace: Vec<String>,
    /// Workload operations that succeeded.
    pub succeeded: usize,
    /// Workload operations that failed (their writes count as uncertain).
    pub failed: usize,
    /// Steps the run took.
    pub steps: usize,
    /// Virtual time at the end.
    pub end: Time,
    /// How often the run met each kind of trouble, from the trace: `(what, count)`.
    pub trouble: Vec<(&'static str, usize)>,
}

/// The keys of a workload with `count` keys: `k00`, `k01`, ...
pub fn key_space(count: usize) -> Vec<Bytes> {
    (0..count)
        .map(|i| Bytes::from(format!("k{i:02}")))
        .collect()
}

/// Client settings for chaos runs: short timeouts so that lost replies cost little virtual
/// time, and the default backoff budgets.
pub fn chaos_client_config() -> Config {
    Config::default()
        .with_read_timeout_short(Duration::from_millis(500))
        .with_pd_timeout(Duration::from_millis(500))
}

/// Runs `workload` with `seed`; returns the history (ending with a read of every key once
/// the workload finished and chaos stopped), the checker's verdict and the trace.
///
/// Errors when the run livelocks or gets stuck, or when a final read fails 10 times.
pub fn run_raw_workload(seed: u64, workload: &RawWorkload) -> Result<RawReport, SimError> {
    let keys = key_space(workload.keys);
    let mut setup = Setup {
        client: chaos_client_config(),
        network: Network {
            reply_loss_per_mille: workload.reply_loss_per_mille,
            ..Network::default()
        },
        ..Setup::default()
    };
    setup.cluster.cluster.pd_members = workload.pd_members;
    let mut sim = Simulation::new(seed, setup)?;
    if workload.pd_faults {
        // Elections stay open until the schedule ends them, as PD's take a lease's time.
        sim.with(|cluster| cluster.cluster.set_pd_auto_elect(false));
    }
    sim.start_chaos(Chaos {
        // Split keys sit between workload keys and on them, so both kinds of boundary occur.
        split_keys: keys
            .iter()
            .flat_map(|key| [key.clone(), Bytes::from(format!("{}5", text(key)))])
            .collect(),
        stop_stores: workload.stop_stores,
        pd_faults: workload.pd_faults,
        ..Chaos::default()
    });

    let state = Arc::new(Mutex::new(State {
        rng: Rng::new(seed ^ 0x776f_726b_6c6f_6164),
        history: Vec::new(),
        clock: 1,
    }));
    let clients = (0..workload.clients).map(|_| {
        client_loop(
            sim.client().clone(),
            sim.runtime().clone(),
            sim.tracer(),
            Arc::clone(&state),
            keys.clone(),
            workload.clone(),
        )
    });
    sim.block_on(futures_util::future::join_all(clients))?;
    sim.stop_chaos();
    // Chaos may end in the middle of an election; the final reads need a leader.
    sim.with(|cluster| {
        cluster.cluster.set_pd_auto_elect(true);
        let stopped: Vec<u64> = cluster
            .cluster
            .pd_members()
            .iter()
            .filter(|m| !m.running)
            .map(|m| m.id)
            .collect();
        for member in stopped {
            let _ = cluster.cluster.restart_pd_member(member);
        }
    });
    let history = std::mem::take(&mut lock(&state).history);
    let client = sim.client().clone();
    let reads = {
        let (keys, history) = (&keys, &history);
        sim.block_on(async move { checker::final_reads(&client, keys, history, 10).await })?
    }
    .map_err(SimError::Client)?;
    let mut history = history;
    history.extend(reads);
    let violations = checker::check(&keys, &history);
    let timestamp_violations = checker::check_timestamps(&history);
    let ops = history.len() - keys.len();
    let succeeded = history[..ops]
        .iter()
        .filter(|r| matches!(r.finished, Some((_, Ok(_)))))
        .count();
    let trace = sim.take_trace();
    let trouble = [
        ("faults", " fault "),
        ("region errors", "region error"),
        ("unreachable", "unreachable"),
        ("lost replies", "reply lost"),
        ("stream failures", "stream failed"),
        ("deadline errors", "deadline"),
    ]
    .into_iter()
    .map(|(what, needle)| (what, trace.iter().filter(|l| l.contains(needle)).count()))
    .collect();
    Ok(RawReport {
        seed,
        failed: ops - succeeded,
        succeeded,
        history,
        violations,
        timestamp_violations,
        steps: sim.steps(),
        end: sim.now(),
        trace,
        trouble,
    })
}

/// The workload's shared state: its PRNG, the history and the logical clock.
struct State {
    rng: Rng,
    history: Vec<Record>,
    clock: u64,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One workload client: operations one after another, with a random pause between them,
/// until the workload's operations are all issued.
async fn client_loop(
    client: tikv_core::Client,
    runtime: super::SimRuntime,
    tracer: super::Tracer,
    state: Arc<Mutex<State>>,
    keys: Vec<Bytes>,
    workload: RawWorkload,
) {
    use tikv_core::Runtime as _;
    loop {
        let (index, op) = {
            let mut state = lock(&state);
            if state.history.len() >= workload.ops {
                return;
            }
            let index = state.history.len();
            let op = if workload.pd_faults && state.rng.below(5) == 0 {
                Op::Timestamp
            } else {
                random_op(&mut state.rng, &keys, index)
            };
            state.clock += 1;
            let started = state.clock;
            state.history.push(Record {
                op: index as u64 + 1,
                command: op.clone(),
                started,
                finished: None,
            });
            (index, op)
        };
        tracer.note(format_args!("op{} start {}", index + 1, describe_op(&op)));
        let result = op.run(&client).await;
        tracer.note(format_args!(
            "op{} done {}",
            index + 1,
            describe_result(&result)
        ));
        let think = {
            let mut state = lock(&state);
            state.clock += 1;
            let clock = state.clock;
            if let Some(record) = state.history.get_mut(index) {
                record.finished = Some((clock, result));
            }
            state.rng.below(workload.max_think.as_micros() as u64 + 1)
        };
        let wake = runtime.now() + Duration::from_micros(think);
        runtime.sleep_until(wake).await;
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn random_op(rng: &mut Rng, keys: &[Bytes], index: usize) -> Op {
    let key_at = |rng: &mut Rng| keys[rng.below(keys.len() as u64) as usize].clone();
    let distinct = |rng: &mut Rng, count: usize| {
        let mut chosen: Vec<Bytes> = Vec::new();
        while chosen.len() < count.min(keys.len()) {
            let key = key_at(rng);
            if !chosen.contains(&key) {
                chosen.push(key);
            }
        }
        chosen
    };
    // Values name the operation and key, so a read tells which write it saw.
    let value = |key: &Bytes| Bytes::from(format!("{}@{index}", text(key)));
    match rng.below(100) {
        0..=27 => {
            let key = key_at(rng);
            Op::Put {
                value: value(&key),
                key,
            }
        }
        28..=39 => {
            let count = rng.between(2, 4) as usize;
            let pairs = distinct(rng, count)
                .into_iter()
                .map(|key| (key.clone(), value(&key)))
                .collect();
            Op::BatchPut { pairs }
        }
        40..=59 => Op::Get { key: key_at(rng) },
        60..=69 => {
            let count = rng.between(2, 5) as usize;
            Op::BatchGet {
                keys: distinct(rng, count),
            }
        }
        70..=79 => Op::Delete { key: key_at(rng) },
        80..=92 => {
            let start = rng.below(keys.len() as u64) as usize;
            let end = start + rng.between(1, keys.len() as u64) as usize;
            Op::Scan {
                start: keys[start].clone(),
                end: keys.get(end).cloned().unwrap_or_default(),
                limit: rng.between(2, keys.len() as u64) as u32,
            }
        }
        _ => {
            let start = rng.below(keys.len() as u64) as usize;
            let end = start + rng.between(1, 3) as usize;
            Op::DeleteRange {
                start: keys[start].clone(),
                end: keys.get(end).cloned().unwrap_or_default(),
            }
        }
    }
}
