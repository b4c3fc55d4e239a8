//! A raw KV workload under chaos: concurrent clients issue random raw operations over a small
//! key space while the cluster splits, merges, moves leaders, restarts stores and answers with
//! injected region errors; the history goes to [`super::checker`].

use std::time::Duration;

use bytes::Bytes;
use tikv_core::machine::{Command, OpId, RawCommand};
use tikv_core::rand::Rng;
use tikv_core::{Config, Time};

use super::checker::{self, Record, Violation};
use super::{Chaos, Network, Setup, SimError, Simulation, Step};

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
        }
    }
}

/// What a workload run produced.
#[derive(Debug)]
pub struct RawReport {
    /// The seed.
    pub seed: u64,
    /// Every operation, in start order.
    pub history: Vec<Record>,
    /// Reads no write explains (empty when the client behaved).
    pub violations: Vec<Violation>,
    /// The full trace.
    pub trace: Vec<String>,
    /// Operations that succeeded.
    pub succeeded: usize,
    /// Operations that failed (their writes count as uncertain).
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

/// Runs `workload` with `seed`; returns the history, the checker's verdict and the trace.
///
/// Errors when the run livelocks or gets stuck.
pub fn run_raw_workload(seed: u64, workload: &RawWorkload) -> Result<RawReport, SimError> {
    let keys = key_space(workload.keys);
    let setup = Setup {
        client: chaos_client_config(),
        network: Network {
            reply_loss_per_mille: workload.reply_loss_per_mille,
            ..Network::default()
        },
        ..Setup::default()
    };
    let mut sim = Simulation::new(seed, setup)?;
    let mut rng = Rng::new(seed ^ 0x776f_726b_6c6f_6164);
    sim.start_chaos(Chaos {
        // Split keys sit between workload keys and on them, so both kinds of boundary occur.
        split_keys: keys
            .iter()
            .flat_map(|key| [key.clone(), Bytes::from(format!("{}5", text(key)))])
            .collect(),
        stop_stores: workload.stop_stores,
        ..Chaos::default()
    });

    let mut history: Vec<Record> = Vec::new();
    let mut running: Vec<(OpId, usize)> = Vec::new();
    let mut clock = 1u64;
    let mut issued = 0usize;
    // When each client starts its next operation; `None` while one is running.
    let mut wake: Vec<Option<Time>> = vec![Some(Time::ZERO); workload.clients];
    loop {
        for slot in &mut wake {
            if issued >= workload.ops || slot.is_none_or(|at| at > sim.now()) {
                continue;
            }
            *slot = None;
            let command = random_command(&mut rng, &keys, issued);
            clock += 1;
            let op = sim.submit(Command::Raw(command.clone()));
            running.push((op, history.len()));
            history.push(Record {
                op: op.get(),
                command,
                started: clock,
                finished: None,
            });
            issued += 1;
        }
        let done = issued >= workload.ops && running.is_empty();
        if done {
            sim.stop_chaos();
        }
        match sim.step()? {
            Step::Idle if done => break,
            Step::Idle => {
                return Err(SimError::Stuck {
                    now: sim.now(),
                    ops_in_flight: running.len(),
                });
            }
            Step::Finished(finished) => {
                for (op, result) in finished {
                    let Some(position) = running.iter().position(|(id, _)| *id == op) else {
                        continue;
                    };
                    let (_, index) = running.swap_remove(position);
                    clock += 1;
                    if let Some(record) = history.get_mut(index) {
                        record.finished = Some((clock, result));
                    }
                    let think = rng.below(workload.max_think.as_micros() as u64 + 1);
                    let at = sim.now() + Duration::from_micros(think);
                    if let Some(slot) = wake.iter_mut().find(|slot| slot.is_none()) {
                        *slot = Some(at);
                    }
                    sim.set_alarm(at);
                }
            }
            Step::Advanced => {}
        }
    }
    let violations = checker::check(&keys, &history);
    let succeeded = history
        .iter()
        .filter(|r| matches!(r.finished, Some((_, Ok(_)))))
        .count();
    let trace = sim.take_trace();
    let trouble = [
        ("faults", " fault "),
        ("region errors", "region error"),
        ("unreachable", "unreachable"),
        ("lost replies", "reply lost"),
        ("deadline errors", "deadline"),
    ]
    .into_iter()
    .map(|(what, needle)| (what, trace.iter().filter(|l| l.contains(needle)).count()))
    .collect();
    Ok(RawReport {
        seed,
        failed: history.len() - succeeded,
        succeeded,
        history,
        violations,
        steps: sim.steps(),
        end: sim.now(),
        trace,
        trouble,
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn random_command(rng: &mut Rng, keys: &[Bytes], index: usize) -> RawCommand {
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
    let cf = String::new();
    match rng.below(100) {
        0..=27 => {
            let key = key_at(rng);
            RawCommand::Put {
                value: value(&key),
                key,
                ttl_secs: 0,
                cf,
                atomic: false,
            }
        }
        28..=39 => {
            let count = rng.between(2, 4) as usize;
            let pairs = distinct(rng, count)
                .into_iter()
                .map(|key| (key.clone(), value(&key)))
                .collect();
            RawCommand::BatchPut {
                pairs,
                ttls_secs: Vec::new(),
                cf,
                atomic: false,
            }
        }
        40..=59 => RawCommand::Get {
            key: key_at(rng),
            cf,
        },
        60..=69 => {
            let count = rng.between(2, 5) as usize;
            RawCommand::BatchGet {
                keys: distinct(rng, count),
                cf,
            }
        }
        70..=79 => RawCommand::Delete {
            key: key_at(rng),
            cf,
            atomic: false,
        },
        80..=92 => {
            let start = rng.below(keys.len() as u64) as usize;
            let end = start + rng.between(1, keys.len() as u64) as usize;
            RawCommand::Scan {
                start: keys[start].clone(),
                end: keys.get(end).cloned().unwrap_or_default(),
                limit: rng.between(2, keys.len() as u64) as u32,
                key_only: false,
                reverse: false,
                cf,
            }
        }
        _ => {
            let start = rng.below(keys.len() as u64) as usize;
            let end = start + rng.between(1, 3) as usize;
            RawCommand::DeleteRange {
                start: keys[start].clone(),
                end: keys.get(end).cloned().unwrap_or_default(),
                cf,
            }
        }
    }
}
