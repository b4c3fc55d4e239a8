//! A bank of transactions under chaos: concurrent clients move money between accounts in
//! optimistic transactions (two-phase, async commit, 1PC), audit the whole bank from one
//! snapshot, and some stop mid-commit, leaving locks for the others to resolve; the history
//! goes to [`super::txn_checker`].
//!
//! A transfer reads two balances and writes both. Its commit is picked per transaction:
//! two-phase, async commit, 1PC, or async commit with 1PC. Some transfers stop part-way,
//! as crashed or impatient clients do: stopped after prewrite with a short lock TTL (the
//! transaction must end rolled back), with the secondaries (or every async-commit key) left
//! locked (it must end committed), or with the commit future dropped at a random moment
//! (either outcome). An audit reads every account from one snapshot, through a batch get,
//! a scan, a reverse scan, point gets or a bare snapshot.
//!
//! After the clients finish and chaos stops, one more audit reads the end state (resolving
//! whatever locks remain), and the store's record of every account (TiKV's
//! `MvccGetByKey`) settles the commits whose outcome the client could not know.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{Either, select};
use tikv_core::rand::Rng;
use tikv_core::{Client, CommitKnobs, CommitMode, Error, Runtime as _, Time, TransactionOptions};
use tikv_proto::kvrpcpb;
use tikv_sim::faults::FaultRule;

use super::txn_checker::{self, Outcome, TxnRecord, TxnViolation, Version, bank_value};
use super::workload::chaos_client_config;
use super::{Chaos, Network, Setup, SimError, SimRuntime, Simulation, Tracer};

/// The shape of a bank run.
#[derive(Clone, Debug, PartialEq)]
pub struct BankWorkload {
    /// Clients running transactions one after another, concurrently with each other.
    pub clients: usize,
    /// Transactions in total (transfers and audits), besides the first and last.
    pub txns: usize,
    /// Accounts (`acct00`, `acct01`, ...).
    pub accounts: usize,
    /// Every account's balance at the start.
    pub initial_balance: u64,
    /// Chance, in per cent, that a transaction is an audit.
    pub audit_percent: u64,
    /// Chance, in per cent, that a transfer stops part-way.
    pub stop_percent: u64,
    /// Chance, in thousandths, that the network loses a reply.
    pub reply_loss_per_mille: u64,
    /// Longest pause of a client between two transactions.
    pub max_think: Duration,
    /// Whether the chaos schedule runs at all.
    pub chaos: bool,
    /// Whether the chaos schedule stops and restarts stores.
    pub stop_stores: bool,
    /// Transfers commit in two phases only (no async commit, no 1PC).
    pub two_phase_only: bool,
    /// Fault rules armed once the deposit committed (a planted bug, for showing that the
    /// checker catches it).
    pub planted: Vec<FaultRule>,
}

impl Default for BankWorkload {
    fn default() -> Self {
        Self {
            clients: 5,
            txns: 40,
            accounts: 6,
            initial_balance: 100,
            audit_percent: 25,
            stop_percent: 15,
            reply_loss_per_mille: 10,
            max_think: Duration::from_millis(5),
            chaos: true,
            stop_stores: true,
            two_phase_only: false,
            planted: Vec::new(),
        }
    }
}

/// What a bank run produced.
#[derive(Debug)]
pub struct BankReport {
    /// The seed.
    pub seed: u64,
    /// Every transaction: the initial deposit, the workload's, the final audit.
    pub history: Vec<TxnRecord>,
    /// The store's record of every account after the run.
    pub versions: BTreeMap<Bytes, Vec<Version>>,
    /// What the checker found (empty when the client behaved).
    pub violations: Vec<TxnViolation>,
    /// The full trace.
    pub trace: Vec<String>,
    /// Transactions per outcome: committed, aborted, unknown, read-only.
    pub outcomes: [usize; 4],
    /// Steps the run took.
    pub steps: usize,
    /// Virtual time at the end.
    pub end: Time,
    /// How often the run met each kind of trouble, from the trace: `(what, count)`.
    pub trouble: Vec<(&'static str, usize)>,
}

/// The accounts of a bank with `count` accounts: `acct00`, `acct01`, ...
pub fn accounts(count: usize) -> Vec<Bytes> {
    (0..count)
        .map(|i| Bytes::from(format!("acct{i:02}")))
        .collect()
}

/// How a transfer commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    TwoPhase,
    Async,
    OnePc,
    AsyncOnePc,
}

/// How a transfer stops part-way, if it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    None,
    /// Prewrite, then stop (locks with a short TTL left behind).
    AfterPrewrite {
        ttl_ms: u64,
    },
    /// Commit, but leave the keys committed after the decision locked.
    SkipSecondaries {
        ttl_ms: u64,
    },
    /// Drop the commit future after this long.
    Drop(Duration),
}

/// How an audit reads every account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Audit {
    BatchGet,
    Scan,
    ScanReverse,
    Gets,
    Snapshot,
}

/// Runs `workload` with `seed`: deposits the initial balances, runs the clients under
/// chaos, audits the end state and checks the whole history.
///
/// Errors when the run livelocks or gets stuck, when the deposit fails, or when the final
/// audit fails 10 times.
pub fn run_bank_workload(seed: u64, workload: &BankWorkload) -> Result<BankReport, SimError> {
    let setup = Setup {
        client: chaos_client_config(),
        network: Network {
            reply_loss_per_mille: workload.reply_loss_per_mille,
            ..Network::default()
        },
        ..Setup::default()
    };
    let mut sim = Simulation::new(seed, setup)?;
    let report = run_on(&mut sim, workload);
    if let (Err(_), Ok(path)) = (&report, std::env::var("TIKV_SIM_TRACE")) {
        // A failed run's trace, to read what went wrong.
        let _ = std::fs::write(format!("{path}.{seed}"), sim.trace().join("\n"));
    }
    report
}

/// The body of [`run_bank_workload`] on a fresh simulation.
fn run_on(sim: &mut Simulation, workload: &BankWorkload) -> Result<BankReport, SimError> {
    let seed = sim.seed();
    let accounts = accounts(workload.accounts);
    let state = Arc::new(Mutex::new(State {
        rng: Rng::new(seed ^ 0x6261_6e6b_2074_786e),
        history: Vec::new(),
        clock: 1,
        next_txn: 1,
    }));
    let bank = Bank {
        client: sim.client().clone(),
        runtime: sim.runtime().clone(),
        tracer: sim.tracer(),
        state: Arc::clone(&state),
        accounts: accounts.clone(),
        workload: workload.clone(),
    };

    // The deposit, before any chaos.
    let deposit = {
        let bank = bank.clone();
        sim.block_on(async move { bank.deposit().await })?
    };
    if !matches!(deposit.outcome, Outcome::Committed(_)) {
        return Err(SimError::Client(Error::InvalidArgument(format!(
            "the deposit did not commit: {:?}",
            deposit.outcome
        ))));
    }
    lock(&state).history.push(deposit);
    for rule in &workload.planted {
        let rule = rule.clone();
        sim.with(|cluster| cluster.faults.inject(rule));
    }

    if workload.chaos {
        sim.start_chaos(Chaos {
            // Transactional keys' region boundaries are memcomparable-encoded, as TiKV
            // splits them; on accounts and between them.
            split_keys: accounts
                .iter()
                .flat_map(|key| [key.clone(), Bytes::from(format!("{}5", text(key)))])
                .map(|key| Bytes::from(tikv_proto::codec::encode_bytes(&key)))
                .collect(),
            stop_stores: workload.stop_stores,
            ..Chaos::default()
        });
    }
    let clients = (0..workload.clients).map(|_| bank.clone().client_loop());
    sim.block_on(futures_util::future::join_all(clients))?;
    sim.stop_chaos();
    // Stopped stores come back and background commits and rollbacks finish; locks left
    // by stopped transfers expire.
    sim.sleep(Duration::from_secs(5))?;

    let final_audit = {
        let bank = bank.clone();
        sim.block_on(async move { bank.final_audit(10).await })?
    };
    let final_audit = final_audit.map_err(SimError::Client)?;
    lock(&state).history.push(final_audit);

    let history = std::mem::take(&mut lock(&state).history);
    let versions = sim.with(|cluster| {
        accounts
            .iter()
            .map(|key| (key.clone(), recorded_versions(&cluster.mvcc, key)))
            .collect::<BTreeMap<_, _>>()
    });
    let total = workload.initial_balance * workload.accounts as u64;
    let violations = txn_checker::check(&history, &versions, &accounts, total);
    let mut outcomes = [0; 4];
    for record in &history {
        let slot = match record.outcome {
            Outcome::Committed(_) => 0,
            Outcome::Aborted(_) => 1,
            Outcome::Unknown(_) => 2,
            Outcome::ReadOnly => 3,
        };
        outcomes[slot] += 1;
    }
    let trace = sim.take_trace();
    let trouble = [
        ("faults", " fault "),
        ("region errors", "region error"),
        ("unreachable", "unreachable"),
        ("lost replies", "reply lost"),
        ("locks met", "Locked"),
        ("status checks", "KvCheckTxnStatus"),
        ("secondary checks", "KvCheckSecondaryLocks"),
        ("lock resolutions", "KvResolveLock"),
    ]
    .into_iter()
    .map(|(what, needle)| (what, trace.iter().filter(|l| l.contains(needle)).count()))
    .collect();
    Ok(BankReport {
        seed,
        history,
        versions,
        violations,
        outcomes,
        steps: sim.steps(),
        end: sim.now(),
        trace,
        trouble,
    })
}

/// The committed versions (puts and deletes) the store records for `key`, from TiKV's
/// `MvccGetByKey` debug call.
pub fn recorded_versions(mvcc: &tikv_sim::mvcc::MvccStore, key: &Bytes) -> Vec<Version> {
    let request = kvrpcpb::MvccGetByKeyRequest {
        key: key.clone(),
        ..Default::default()
    };
    let Some(info) = mvcc.mvcc_get_by_key(&request).info else {
        return Vec::new();
    };
    info.writes
        .into_iter()
        .filter_map(|write| {
            let value = match kvrpcpb::Op::try_from(write.r#type) {
                Ok(kvrpcpb::Op::Put) => Some(write.short_value),
                Ok(kvrpcpb::Op::Del) => None,
                _ => return None,
            };
            Some(Version {
                start_ts: write.start_ts,
                commit_ts: write.commit_ts,
                value,
            })
        })
        .collect()
}

/// The workload's shared state: its PRNG, the history, the logical clock, the next
/// transaction id.
struct State {
    rng: Rng,
    history: Vec<TxnRecord>,
    clock: u64,
    next_txn: u64,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn show(value: Option<&Bytes>) -> String {
    value.map_or("-".to_owned(), |v| text(v))
}

/// One client's view of the bank.
#[derive(Clone)]
struct Bank {
    client: Client,
    runtime: SimRuntime,
    tracer: Tracer,
    state: Arc<Mutex<State>>,
    accounts: Vec<Bytes>,
    workload: BankWorkload,
}

/// A transaction's record as it is being written.
struct Draft {
    record: TxnRecord,
}

impl Draft {
    fn new(bank: &Bank, label: String) -> Self {
        let (id, began) = {
            let mut state = lock(&bank.state);
            let id = state.next_txn;
            state.next_txn += 1;
            state.clock += 1;
            (id, state.clock)
        };
        bank.tracer.note(format_args!("t{id} {label}"));
        Self {
            record: TxnRecord {
                id,
                label,
                start_ts: None,
                began,
                ended: began,
                reads: Vec::new(),
                read_all: false,
                writes: Vec::new(),
                outcome: Outcome::ReadOnly,
                causal: false,
            },
        }
    }

    fn finish(mut self, bank: &Bank, outcome: Outcome) -> TxnRecord {
        let mut state = lock(&bank.state);
        state.clock += 1;
        self.record.ended = state.clock;
        self.record.outcome = outcome;
        drop(state);
        let outcome = match &self.record.outcome {
            Outcome::Committed(ts) => format!("committed at {ts}"),
            Outcome::Aborted(why) => format!("aborted: {why}"),
            Outcome::Unknown(why) => format!("unknown: {why}"),
            Outcome::ReadOnly => "read only".to_owned(),
        };
        bank.tracer
            .note(format_args!("t{} {outcome}", self.record.id));
        self.record
    }
}

impl Bank {
    fn draw<T>(&self, f: impl FnOnce(&mut Rng) -> T) -> T {
        f(&mut lock(&self.state).rng)
    }

    /// Writes every account's initial balance in one transaction (id 0).
    async fn deposit(&self) -> TxnRecord {
        let mut draft = Draft::new(self, "deposit".to_owned());
        draft.record.id = 0;
        lock(&self.state).next_txn = 1;
        let outcome = async {
            let mut txn = self.client.begin().await.map_err(aborted)?;
            draft.record.start_ts = Some(txn.start_ts());
            for account in &self.accounts {
                let value = bank_value(self.workload.initial_balance, 0);
                draft.record.writes.push((account.clone(), value.clone()));
                txn.put(account.clone(), value).map_err(aborted)?;
            }
            Ok::<_, Outcome>(commit_outcome(txn.commit().await))
        }
        .await
        .unwrap_or_else(|outcome| outcome);
        draft.finish(self, outcome)
    }

    /// Transactions one after another, with a random pause between them, until the
    /// workload's transactions are all issued.
    async fn client_loop(self) {
        loop {
            let audit = {
                let mut state = lock(&self.state);
                // The deposit was transaction 0.
                if state.next_txn > self.workload.txns as u64 {
                    return;
                }
                state.rng.below(100) < self.workload.audit_percent
            };
            let record = if audit {
                self.audit().await
            } else {
                self.transfer().await
            };
            let think = {
                let mut state = lock(&self.state);
                state.history.push(record);
                state
                    .rng
                    .below(self.workload.max_think.as_micros() as u64 + 1)
            };
            let wake = self.runtime.now() + Duration::from_micros(think);
            self.runtime.sleep_until(wake).await;
        }
    }

    /// Moves a random amount between two random accounts.
    async fn transfer(&self) -> TxnRecord {
        let count = self.accounts.len() as u64;
        let (from, to, mode, stop, batch) = self.draw(|rng| {
            let from = rng.below(count) as usize;
            let to = (from + 1 + rng.below(count - 1) as usize) % count as usize;
            let mode = match rng.below(4) {
                _ if self.workload.two_phase_only => Mode::TwoPhase,
                0 => Mode::TwoPhase,
                1 => Mode::Async,
                2 => Mode::OnePc,
                _ => Mode::AsyncOnePc,
            };
            let stop = if rng.below(100) < self.workload.stop_percent {
                match rng.below(3) {
                    0 => Stop::AfterPrewrite {
                        ttl_ms: rng.between(20, 300),
                    },
                    1 => Stop::SkipSecondaries {
                        ttl_ms: rng.between(20, 300),
                    },
                    _ => Stop::Drop(Duration::from_micros(rng.between(0, 6_000))),
                }
            } else {
                Stop::None
            };
            (from, to, mode, stop, rng.below(2) == 0)
        });
        let (from, to) = (&self.accounts[from], &self.accounts[to]);
        let label = format!(
            "transfer {}->{} {mode:?}{}",
            text(from),
            text(to),
            match stop {
                Stop::None => String::new(),
                other => format!(" stop {other:?}"),
            }
        );
        let mut draft = Draft::new(self, label);
        let mut knobs = CommitKnobs::default();
        match stop {
            Stop::AfterPrewrite { ttl_ms } => {
                knobs.stop_after_prewrite = true;
                knobs.lock_ttl_ms = Some(ttl_ms);
            }
            Stop::SkipSecondaries { ttl_ms } => {
                knobs.skip_secondaries = true;
                knobs.lock_ttl_ms = Some(ttl_ms);
            }
            Stop::None | Stop::Drop(_) => {}
        }
        let options = TransactionOptions::new()
            .with_async_commit(matches!(mode, Mode::Async | Mode::AsyncOnePc))
            .with_try_one_pc(matches!(mode, Mode::OnePc | Mode::AsyncOnePc))
            .with_testing_knobs(knobs);
        let id = draft.record.id;
        let outcome = async {
            let mut txn = self.client.begin_with(options).await.map_err(aborted)?;
            draft.record.start_ts = Some(txn.start_ts());
            let keys = [from.clone(), to.clone()];
            let mut values: Vec<Option<Bytes>> = Vec::new();
            if batch {
                let pairs = txn.batch_get(keys.clone()).await.map_err(aborted)?;
                for key in &keys {
                    let value = pairs
                        .iter()
                        .find(|p| p.key == *key)
                        .map(|p| p.value.clone());
                    draft.record.reads.push((key.clone(), value.clone()));
                    values.push(value);
                }
            } else {
                for key in &keys {
                    let value = txn.get(key.clone()).await.map_err(aborted)?;
                    draft.record.reads.push((key.clone(), value.clone()));
                    values.push(value);
                }
            }
            self.tracer.note(format_args!(
                "t{id} read {}={} {}={}",
                text(from),
                show(values[0].as_ref()),
                text(to),
                show(values[1].as_ref())
            ));
            let balance = |value: &Option<Bytes>| {
                value
                    .as_ref()
                    .and_then(|v| txn_checker::parse_bank_value(v))
                    .map_or(0, |(balance, _)| balance)
            };
            let (have, other) = (balance(&values[0]), balance(&values[1]));
            let amount = self.draw(|rng| rng.below(have + 1));
            for (key, balance) in [(from, have - amount), (to, other + amount)] {
                let value = bank_value(balance, id);
                draft.record.writes.push((key.clone(), value.clone()));
                txn.put(key.clone(), value).map_err(aborted)?;
            }
            let outcome = match stop {
                Stop::Drop(after) => {
                    let commit = Box::pin(txn.commit());
                    let timer = self.runtime.sleep_until(self.runtime.now() + after);
                    match select(commit, timer).await {
                        Either::Left((result, _)) => commit_outcome(result),
                        Either::Right(((), commit)) => {
                            drop(commit);
                            Outcome::Unknown(format!("commit dropped after {after:?}"))
                        }
                    }
                }
                _ => commit_outcome(txn.commit().await),
            };
            if let (Outcome::Committed(_), Some(outcome)) = (&outcome, txn.commit_outcome()) {
                let mode = match outcome.mode {
                    CommitMode::TwoPhase => "2pc",
                    CommitMode::AsyncCommit => "async commit",
                    CommitMode::OnePc => "1pc",
                    _ => "other",
                };
                self.tracer.note(format_args!("t{id} committed by {mode}"));
            }
            Ok(outcome)
        }
        .await
        .unwrap_or_else(|outcome| outcome);
        draft.finish(self, outcome)
    }

    /// Reads every account from one snapshot.
    async fn audit(&self) -> TxnRecord {
        let how = self.draw(|rng| match rng.below(5) {
            0 => Audit::BatchGet,
            1 => Audit::Scan,
            2 => Audit::ScanReverse,
            3 => Audit::Gets,
            _ => Audit::Snapshot,
        });
        let draft = Draft::new(self, format!("audit {how:?}"));
        self.audit_with(draft, how).await
    }

    async fn audit_with(&self, mut draft: Draft, how: Audit) -> TxnRecord {
        let result = self.read_all(&mut draft, how).await;
        let outcome = match result {
            Ok(()) => {
                draft.record.read_all = true;
                Outcome::ReadOnly
            }
            Err(err) => Outcome::Aborted(format!("read: {err}")),
        };
        let reads: Vec<String> = draft
            .record
            .reads
            .iter()
            .map(|(key, value)| format!("{}={}", text(key), show(value.as_ref())))
            .collect();
        self.tracer.note(format_args!(
            "t{} read [{}]",
            draft.record.id,
            reads.join(",")
        ));
        draft.finish(self, outcome)
    }

    async fn read_all(&self, draft: &mut Draft, how: Audit) -> Result<(), Error> {
        let first = self.accounts.first().cloned().unwrap_or_default();
        let last = self.accounts.last().cloned().unwrap_or_default();
        let limit = self.accounts.len() as u32 + 1;
        let pairs = if how == Audit::Snapshot {
            let ts = self.client.current_timestamp().await?;
            draft.record.start_ts = Some(ts);
            self.client
                .snapshot(ts)
                .batch_get(self.accounts.clone())
                .await?
        } else {
            let txn = self.client.begin().await?;
            draft.record.start_ts = Some(txn.start_ts());
            match how {
                Audit::BatchGet => txn.batch_get(self.accounts.clone()).await?,
                Audit::Scan => txn.scan(first..=last, limit).await?,
                Audit::ScanReverse => txn.scan_reverse(first..=last, limit).await?,
                _ => {
                    for account in &self.accounts {
                        let value = txn.get(account.clone()).await?;
                        draft.record.reads.push((account.clone(), value));
                    }
                    return Ok(());
                }
            }
        };
        for account in &self.accounts {
            let value = pairs
                .iter()
                .find(|p| p.key == *account)
                .map(|p| p.value.clone());
            draft.record.reads.push((account.clone(), value));
        }
        // A scan must return nothing but accounts.
        for pair in pairs {
            if !self.accounts.contains(&pair.key) {
                draft.record.reads.push((pair.key, Some(pair.value)));
            }
        }
        Ok(())
    }

    /// Reads every account once the workload is over, trying up to `attempts` times.
    async fn final_audit(&self, attempts: usize) -> Result<TxnRecord, Error> {
        let mut last = Error::Closed;
        for _ in 0..attempts.max(1) {
            let draft = Draft::new(self, "final audit".to_owned());
            let record = self.audit_with(draft, Audit::BatchGet).await;
            match &record.outcome {
                Outcome::Aborted(why) => last = Error::InvalidArgument(why.clone()),
                _ => return Ok(record),
            }
        }
        Err(last)
    }
}

fn aborted(err: Error) -> Outcome {
    Outcome::Aborted(err.to_string())
}

/// What a commit's result says about the transaction.
fn commit_outcome(result: Result<Option<tikv_core::Timestamp>, Error>) -> Outcome {
    match result {
        // The stop-after-prewrite lever answers a zero timestamp: nothing was committed,
        // and nothing may be.
        Ok(Some(ts)) if ts.version() == 0 => Outcome::Aborted("stopped after prewrite".into()),
        Ok(Some(ts)) => Outcome::Committed(ts),
        Ok(None) => Outcome::Aborted("nothing to commit".into()),
        Err(err) if err.is_undetermined() => Outcome::Unknown(err.to_string()),
        Err(err) => Outcome::Aborted(err.to_string()),
    }
}
