//! Our transactions, client-rust's (`tikv-client` 0.4) and client-go's side by side on one
//! simulated cluster: optimistic commits of 1 and 10 keys with 1, 64 and 512 callers
//! (two-phase, async commit, 1PC), and snapshot get, batch get and scan.
//!
//! ```text
//! cargo build --release -p tikv-sim
//! cargo bench -p tikv-benches --bench compare_txn
//! ```
//!
//! Each case runs on a fresh cluster of its own (see `start_cluster`), in its own process,
//! and so does every round of every client: ours and client-rust's in a child of this
//! binary, client-go's in the Go harness of `benches/client-go` (`bench --case
//! txn_commit|txn_get|txn_batch_get|txn_scan`), built first with the `go` on the PATH;
//! without Go the bench says so and compares the two Rust clients only. A round's client CPU is its process's, read once the client and the
//! cluster have gone quiet, so background commits count for the client that left them. Each case
//! runs a fixed number of transactions per client (best of `COMPARE_CPU_ROUNDS` rounds,
//! default 3, the clients interleaved) and prints markdown tables: throughput, latency
//! (p50/p99) and client CPU per transaction from `/proc`. Run without `--bench` (as
//! `cargo test -p tikv-benches --bench compare_txn` does) it does one short round of each
//! case (2 transactions per caller), which checks the wiring, not the speed.
//!
//! To look at one case or one client: `COMPARE_TXN_CASES` keeps the cases whose label
//! contains it (`"OnePc, 512"`), and `COMPARE_TXN_CLIENTS` lists the clients to run
//! (`ours,rust,go`, the default).

#![allow(missing_docs)]

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tikv_benches::process::{
    Measured, SimProcess, best, client_go_round, clock_ticks_per_second, measure,
};

/// Keys `key-0000` ..= `key-0999` are pre-loaded; these split them into four regions.
const SPLIT_KEYS: &str = "key-0250,key-0500,key-0750";
const KEY_COUNT: usize = 1000;
const VALUE_LEN: usize = 64;
const BATCH_KEYS: usize = 100;
const SCAN_LIMIT: u32 = 1000;
const CALLERS: [usize; 3] = [1, 64, 512];

fn key(index: usize) -> String {
    format!("key-{:04}", index % KEY_COUNT)
}

/// How a transaction commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    TwoPhase,
    AsyncCommit,
    OnePc,
}

/// The keys transaction `op` of `caller` writes: fresh ones (no conflicts, no leftover
/// locks of earlier transactions), in four regions for two-phase and async commit, in one
/// region for 1PC. Each is `key-NNNN-caller-op-i`, built with one allocation and no
/// `format!`: the harness's own work is billed to the client it drives, and `format!` for
/// ten keys cost as much as a fifth of our client's instructions per 10-key transaction.
fn txn_keys(caller: usize, op: usize, keys: usize, protocol: Protocol) -> Vec<String> {
    let base = caller * 131 + op * 7;
    (0..keys)
        .map(|i| {
            let spread = if protocol == Protocol::OnePc {
                0
            } else {
                i * 250
            };
            let mut key = String::with_capacity(40);
            key.push_str("key-");
            push_decimal(&mut key, (base + spread) % KEY_COUNT, 4);
            for part in [caller, op, i] {
                key.push('-');
                push_decimal(&mut key, part, 1);
            }
            key
        })
        .collect()
}

/// The hand-built keys are the ones `format!` would build (checked at every start, as the
/// bench has no test harness of its own).
fn check_txn_keys() {
    for (caller, op, protocol) in [
        (0, 0, Protocol::OnePc),
        (511, 31, Protocol::TwoPhase),
        (7, 300_005, Protocol::AsyncCommit),
    ] {
        let expected: Vec<String> = (0..10)
            .map(|i| {
                let spread = if protocol == Protocol::OnePc {
                    0
                } else {
                    i * 250
                };
                format!("{}-{caller}-{op}-{i}", key(caller * 131 + op * 7 + spread))
            })
            .collect();
        assert_eq!(txn_keys(caller, op, 10, protocol), expected);
    }
}

/// Appends `value` in decimal, zero-padded to at least `width` digits.
fn push_decimal(out: &mut String, mut value: usize, width: usize) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    while value > 0 || len < width.max(1) {
        digits[len] = b'0' + (value % 10) as u8;
        value /= 10;
        len += 1;
    }
    out.extend(digits[..len].iter().rev().map(|&digit| char::from(digit)));
}

trait TxnClient: Clone + Send + Sync + 'static {
    fn commit(&self, keys: Vec<String>, protocol: Protocol) -> impl Future<Output = ()> + Send;
    fn get(&self, key: String) -> impl Future<Output = ()> + Send;
    fn batch_get(&self, keys: Vec<String>) -> impl Future<Output = ()> + Send;
    fn scan(&self) -> impl Future<Output = ()> + Send;
}

#[derive(Clone)]
struct Ours(tikv_core::Client);

impl TxnClient for Ours {
    async fn commit(&self, keys: Vec<String>, protocol: Protocol) {
        let options = tikv_core::TransactionOptions::new()
            .with_async_commit(protocol == Protocol::AsyncCommit)
            .with_try_one_pc(protocol == Protocol::OnePc);
        let mut txn = self
            .0
            .begin_with(options)
            .await
            .unwrap_or_else(|err| panic!("begin: {err}"));
        let value = Bytes::from(vec![b'w'; VALUE_LEN]);
        for key in keys {
            txn.put(key, value.clone())
                .unwrap_or_else(|err| panic!("put: {err}"));
        }
        txn.commit()
            .await
            .unwrap_or_else(|err| panic!("commit: {err}"));
    }

    async fn get(&self, key: String) {
        let ts = self
            .0
            .current_timestamp()
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let value = self.0.snapshot(ts).get(key).await;
        assert!(matches!(value, Ok(Some(_))), "{value:?}");
    }

    async fn batch_get(&self, keys: Vec<String>) {
        let ts = self
            .0
            .current_timestamp()
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let pairs = self
            .0
            .snapshot(ts)
            .batch_get(keys)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(!pairs.is_empty());
    }

    async fn scan(&self) {
        let ts = self
            .0
            .current_timestamp()
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let pairs = self
            .0
            .snapshot(ts)
            .scan("key-0000".."key-1000", SCAN_LIMIT)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(pairs.len(), KEY_COUNT);
    }
}

#[derive(Clone)]
struct Theirs(std::sync::Arc<tikv_client::TransactionClient>);

impl Theirs {
    async fn commit_inner(&self, keys: Vec<String>, protocol: Protocol) {
        let mut options = tikv_client::TransactionOptions::new_optimistic();
        match protocol {
            Protocol::TwoPhase => {}
            Protocol::AsyncCommit => options = options.use_async_commit(),
            Protocol::OnePc => options = options.try_one_pc(),
        }
        let mut txn = self
            .0
            .begin_with_options(options)
            .await
            .unwrap_or_else(|err| panic!("begin: {err}"));
        let value = vec![b'w'; VALUE_LEN];
        for key in keys {
            txn.put(key, value.clone())
                .await
                .unwrap_or_else(|err| panic!("put: {err}"));
        }
        txn.commit()
            .await
            .unwrap_or_else(|err| panic!("commit: {err}"));
    }
}

/// Set when a client-rust commit panicked (its async commit unwraps a `min_commit_ts` it
/// may not have: a `FIXME` in its `Committer::commit`); the case is then reported as such
/// instead of aborting the whole comparison.
static THEIRS_PANICKED: AtomicBool = AtomicBool::new(false);

impl TxnClient for Theirs {
    async fn commit(&self, keys: Vec<String>, protocol: Protocol) {
        let client = self.clone();
        let outcome = tokio::spawn(async move { client.commit_inner(keys, protocol).await }).await;
        if outcome.is_err() {
            THEIRS_PANICKED.store(true, Ordering::Relaxed);
        }
    }

    async fn get(&self, key: String) {
        let ts = self
            .0
            .current_timestamp()
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let mut snapshot = self
            .0
            .snapshot(ts, tikv_client::TransactionOptions::new_optimistic());
        let value = snapshot.get(key).await;
        assert!(matches!(value, Ok(Some(_))), "{value:?}");
    }

    async fn batch_get(&self, keys: Vec<String>) {
        let ts = self
            .0
            .current_timestamp()
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let mut snapshot = self
            .0
            .snapshot(ts, tikv_client::TransactionOptions::new_optimistic());
        let pairs: Vec<_> = snapshot
            .batch_get(keys)
            .await
            .unwrap_or_else(|err| panic!("{err}"))
            .collect();
        assert!(!pairs.is_empty());
    }

    async fn scan(&self) {
        let ts = self
            .0
            .current_timestamp()
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let mut snapshot = self
            .0
            .snapshot(ts, tikv_client::TransactionOptions::new_optimistic());
        let pairs: Vec<_> = snapshot
            .scan("key-0000".to_owned().."key-1000".to_owned(), SCAN_LIMIT)
            .await
            .unwrap_or_else(|err| panic!("{err}"))
            .collect();
        assert_eq!(pairs.len(), KEY_COUNT);
    }
}

#[derive(Clone, Copy, Debug)]
enum Case {
    Commit {
        keys: usize,
        protocol: Protocol,
        callers: usize,
    },
    Get,
    BatchGet,
    Scan,
}

impl Case {
    fn all() -> Vec<Self> {
        let mut cases = Vec::new();
        for keys in [1, 10] {
            for protocol in [Protocol::TwoPhase, Protocol::AsyncCommit, Protocol::OnePc] {
                for callers in CALLERS {
                    cases.push(Self::Commit {
                        keys,
                        protocol,
                        callers,
                    });
                }
            }
        }
        cases.extend([Self::Get, Self::BatchGet, Self::Scan]);
        cases
    }

    fn callers(self) -> usize {
        match self {
            Self::Commit { callers, .. } => callers,
            Self::Get | Self::BatchGet | Self::Scan => 1,
        }
    }

    fn label(self) -> String {
        match self {
            Self::Commit {
                keys,
                protocol,
                callers,
            } => format!("commit {keys} key(s), {protocol:?}, {callers} callers"),
            Self::Get => "snapshot get".to_owned(),
            Self::BatchGet => format!("snapshot batch_get {BATCH_KEYS} keys"),
            Self::Scan => format!("snapshot scan {SCAN_LIMIT} keys"),
        }
    }

    /// Transactions per caller: about half a second or more per client on 2 cores.
    fn ops_per_caller(self, full: bool) -> u64 {
        if !full {
            return 2;
        }
        match self {
            Self::Commit { callers: 1, .. } => 2_000,
            Self::Commit { callers, .. } => (16_384 / callers as u64).max(4),
            Self::Get => 5_000,
            Self::BatchGet => 1_000,
            Self::Scan => 500,
        }
    }
}

impl Case {
    /// The case as the Go harness's `bench` takes it.
    fn go_args(self) -> Vec<String> {
        let mut args = vec!["--case".to_owned()];
        match self {
            Self::Commit {
                keys,
                protocol,
                callers,
            } => {
                let protocol = match protocol {
                    Protocol::TwoPhase => "2pc",
                    Protocol::AsyncCommit => "async_commit",
                    Protocol::OnePc => "1pc",
                };
                args.extend(
                    [
                        "txn_commit",
                        "--keys",
                        &keys.to_string(),
                        "--protocol",
                        protocol,
                        "--callers",
                        &callers.to_string(),
                    ]
                    .map(str::to_owned),
                );
            }
            Self::Get => args.push("txn_get".to_owned()),
            Self::BatchGet => args.push("txn_batch_get".to_owned()),
            Self::Scan => args.push("txn_scan".to_owned()),
        }
        args
    }
}

/// One round of `case` by client-go, in the harness's own process. Its transactions write
/// under round numbers `2_000 + 2 * round` (warm-up) and one more (measured), apart from
/// ours and client-rust's.
fn measure_go(
    binary: &Path,
    sim: &SimProcess,
    case: Case,
    per_caller: u64,
    round: usize,
    ticks: u64,
) -> Measured {
    let mut args = vec![
        "bench".to_owned(),
        "--pd".to_owned(),
        sim.pd.clone(),
        "--ops-per-caller".to_owned(),
        per_caller.to_string(),
        "--rounds".to_owned(),
        "1".to_owned(),
        "--sim-pid".to_owned(),
        sim.pid().to_string(),
        "--txn-round".to_owned(),
        (2_000 + 2 * round).to_string(),
    ];
    args.extend(case.go_args());
    client_go_round(binary, &args, ticks)
}

/// Runs `case` with `ops_per_caller` transactions (or reads) on each of its callers (one
/// tokio task each); returns the wall time and every operation's latency.
async fn run<C: TxnClient>(
    client: &C,
    case: Case,
    ops_per_caller: u64,
    round: usize,
) -> (Duration, Vec<Duration>) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..case.callers())
        .map(|caller| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(ops_per_caller as usize);
                for op in 0..ops_per_caller as usize {
                    let index = caller * 131 + op * 7;
                    let op_started = Instant::now();
                    match case {
                        Case::Commit { keys, protocol, .. } => {
                            // Each round writes its own keys: no transaction meets another's
                            // leftovers.
                            let keys = txn_keys(caller, op + round * 100_000, keys, protocol);
                            client.commit(keys, protocol).await;
                        }
                        Case::Get => client.get(key(index)).await,
                        Case::BatchGet => {
                            let keys = (0..BATCH_KEYS).map(|i| key(index + i * 9)).collect();
                            client.batch_get(keys).await;
                        }
                        Case::Scan => client.scan().await,
                    }
                    latencies.push(op_started.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(
            task.await
                .unwrap_or_else(|err| panic!("caller failed: {err}")),
        );
    }
    (started.elapsed(), latencies)
}

/// The best round of each client for one case (leanest round, fastest throughput).
struct Row {
    case: Case,
    /// Transactions (or reads) in each client's round.
    ops: u64,
    /// `None`: left out by `COMPARE_TXN_CLIENTS`.
    ours: Option<(Measured, f64)>,
    /// `Err` holds what the cell shows instead: `panicked` (a client-rust commit panicked)
    /// or `-` (left out).
    rust: Result<(Measured, f64), &'static str>,
    /// `None`: no Go, or left out.
    go: Option<(Measured, f64)>,
}

/// The text of one table cell: `show` of a client's best round, or what stands in for it.
fn cell(best: Result<&(Measured, f64), &str>, show: impl Fn(&(Measured, f64)) -> String) -> String {
    best.map_or_else(str::to_owned, show)
}

/// A ratio cell: `ratio(ours, theirs)` when both clients ran, else what stands in for the
/// missing one.
fn ratio_cell(
    ours: Result<&(Measured, f64), &str>,
    theirs: Result<&(Measured, f64), &str>,
    ratio: impl Fn(&(Measured, f64), &(Measured, f64)) -> f64,
) -> String {
    match (ours, theirs) {
        (Ok(ours), Ok(theirs)) => format!("{:.2}x", ratio(ours, theirs)),
        (Err(missing), _) | (_, Err(missing)) => missing.to_owned(),
    }
}

/// Prints the throughput, latency and client CPU tables (markdown, for
/// docs/performance.md).
fn print_tables(rows: &[Row], rounds: usize) {
    fn ours(row: &Row) -> Result<&(Measured, f64), &'static str> {
        row.ours.as_ref().ok_or("-")
    }
    fn rust(row: &Row) -> Result<&(Measured, f64), &'static str> {
        row.rust.as_ref().map_err(|missing| *missing)
    }
    fn go(row: &Row) -> Result<&(Measured, f64), &'static str> {
        row.go.as_ref().ok_or("-")
    }
    let throughput = |m: &(Measured, f64)| format!("{:.0}", m.1);
    let faster = |ours: &(Measured, f64), theirs: &(Measured, f64)| ours.1 / theirs.1;
    println!("\ntransactions, best of {rounds} rounds (a fresh cluster for each case):\n");
    println!(
        "| case | txns | ours txn/s | client-rust txn/s | client-go txn/s | ours / client-rust | \
         ours / client-go |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.case.label(),
            row.ops,
            cell(ours(row), throughput),
            cell(rust(row), throughput),
            cell(go(row), throughput),
            ratio_cell(ours(row), rust(row), faster),
            ratio_cell(ours(row), go(row), faster),
        );
    }
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let latency = |m: &(Measured, f64)| format!("{:.0} / {:.0}", micros(m.0.p50), micros(m.0.p99));
    println!("\nlatency of the leanest round, p50 / p99 in µs:\n");
    println!("| case | ours | client-rust | client-go |");
    println!("|---|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} |",
            row.case.label(),
            cell(ours(row), latency),
            cell(rust(row), latency),
            cell(go(row), latency),
        );
    }
    println!("\nclient CPU per transaction (leanest round; client-go in its own process):\n");
    println!(
        "| case | ours µs/txn | client-rust | client-go | client-rust / ours | client-go / ours \
         | sim µs/txn ours / client-rust / client-go |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let client_cpu = |m: &(Measured, f64)| format!("{:.1}", m.0.client_us_per_op());
    let sim_cpu = |m: &(Measured, f64)| format!("{:.1}", m.0.sim_us_per_op());
    let leaner = |ours: &(Measured, f64), theirs: &(Measured, f64)| {
        theirs.0.client_us_per_op() / ours.0.client_us_per_op()
    };
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} / {} / {} |",
            row.case.label(),
            cell(ours(row), client_cpu),
            cell(rust(row), client_cpu),
            cell(go(row), client_cpu),
            ratio_cell(ours(row), rust(row), leaner),
            ratio_cell(ours(row), go(row), leaner),
            cell(ours(row), sim_cpu),
            cell(rust(row), sim_cpu),
            cell(go(row), sim_cpu),
        );
    }
    println!();
}

/// Set in a child process: the client it runs (`ours` or `rust`). The other variables
/// below carry the cluster and the round.
const CHILD_ENV: &str = "COMPARE_TXN_CHILD";
const CHILD_PD: &str = "COMPARE_TXN_PD";
const CHILD_SIM_PID: &str = "COMPARE_TXN_SIM_PID";
const CHILD_CASE: &str = "COMPARE_TXN_CASE";
const CHILD_OPS: &str = "COMPARE_TXN_OPS_PER_CALLER";
const CHILD_ROUND: &str = "COMPARE_TXN_ROUND";
/// What a child prints instead of its round when a client-rust commit panicked.
const PANICKED_LINE: &str = "PANICKED";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|err| panic!("{err}"))
}

/// One round of one Rust client in a process of its own (this binary again, with
/// [`CHILD_ENV`] set), as client-go's rounds run in its harness's process. Sharing one
/// process let one client's leftovers land on the other's bill: its background work, and
/// the allocator's free lists fragmented by its allocations (after client-rust's 10-key
/// two-phase rounds, malloc took a third of our 1PC round's CPU and our CPU per transaction
/// doubled). `Err("panicked")` when a client-rust commit panicked.
fn child_round(
    client: &str,
    sim: &SimProcess,
    case_index: usize,
    per_caller: u64,
    round: usize,
) -> Result<Measured, &'static str> {
    let program = std::env::current_exe().unwrap_or_else(|err| panic!("current_exe: {err}"));
    let output = std::process::Command::new(program)
        .env(CHILD_ENV, client)
        .env(CHILD_PD, &sim.pd)
        .env(CHILD_SIM_PID, sim.pid().to_string())
        .env(CHILD_CASE, case_index.to_string())
        .env(CHILD_OPS, per_caller.to_string())
        .env(CHILD_ROUND, round.to_string())
        .output()
        .unwrap_or_else(|err| panic!("cannot start the {client} child: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    if stdout.lines().any(|line| line == PANICKED_LINE) {
        return Err("panicked");
    }
    match stdout.lines().find_map(Measured::from_round_line) {
        Some(measured) if output.status.success() => Ok(measured),
        _ => panic!(
            "the {client} child failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// A child process: connects its client, warms it up, and prints one measured round of its
/// case (see [`child_round`]).
fn child_main(client: &str) {
    fn var<T: std::str::FromStr>(name: &str) -> T {
        std::env::var(name)
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing or malformed"))
    }
    let pd: String = var(CHILD_PD);
    let sim_pid: u32 = var(CHILD_SIM_PID);
    let case_index: usize = var(CHILD_CASE);
    let case = *Case::all()
        .get(case_index)
        .unwrap_or_else(|| panic!("no case {case_index}"));
    let per_caller: u64 = var(CHILD_OPS);
    let round: usize = var(CHILD_ROUND);
    let ops = per_caller * case.callers() as u64;
    let ticks = clock_ticks_per_second();
    let runtime = runtime();
    // Each client writes under its own round numbers: nobody meets another's leftovers.
    let measured = if client == "ours" {
        let ours = Ours(runtime.block_on(async {
            tikv_tokio::connect([pd], tikv_core::Config::default())
                .unwrap_or_else(|err| panic!("{err}"))
        }));
        runtime.block_on(run(&ours, case, 1, 2 * round + 1_000));
        measure(sim_pid, ops, ticks, || {
            runtime.block_on(run(&ours, case, per_caller, 2 * round))
        })
    } else {
        let config = tikv_client::Config::default().with_timeout(Duration::from_secs(10));
        let theirs = Theirs(std::sync::Arc::new(runtime.block_on(async {
            tikv_client::TransactionClient::new_with_config(vec![pd], config)
                .await
                .unwrap_or_else(|err| panic!("{err}"))
        })));
        runtime.block_on(run(&theirs, case, 1, 2 * round + 1_001));
        measure(sim_pid, ops, ticks, || {
            runtime.block_on(run(&theirs, case, per_caller, 2 * round + 1))
        })
    };
    if THEIRS_PANICKED.load(Ordering::Relaxed) {
        println!("{PANICKED_LINE}");
    } else {
        println!("{}", measured.round_line());
    }
}

/// A fresh simulated cluster of three stores for one case: split into four regions and
/// loaded with the keys the reads look for. Each case gets its own, so that no case runs on
/// the versions every earlier case left behind (the simulator keeps its data in memory, and
/// a store grown by millions of versions costs more per request than a new one): a case's
/// figures no longer depend on where it comes in the run. Every client of a case still
/// shares the one cluster, rounds interleaved.
fn start_cluster() -> SimProcess {
    // Split through the transactional API below, so that every region boundary is an
    // encoded key as TiKV's are (client-rust decodes them; a raw boundary fails it).
    let sim = SimProcess::start(&["--stores", "3"]);
    runtime().block_on(async {
        let client = tikv_tokio::connect([sim.pd.clone()], tikv_core::Config::default())
            .unwrap_or_else(|err| panic!("{err}"));
        client
            .regions()
            .split_regions(SPLIT_KEYS.split(',').map(str::to_owned), false)
            .await
            .unwrap_or_else(|err| panic!("split: {err}"));
        let pairs: Vec<(Bytes, Bytes)> = (0..KEY_COUNT)
            .map(|i| (Bytes::from(key(i)), Bytes::from(vec![b'v'; VALUE_LEN])))
            .collect();
        let mut txn = client.begin().await.unwrap_or_else(|err| panic!("{err}"));
        for (key, value) in pairs {
            txn.put(key, value).unwrap_or_else(|err| panic!("{err}"));
        }
        txn.commit().await.unwrap_or_else(|err| panic!("{err}"));
        client.close().await;
    });
    sim
}

fn main() {
    if let Ok(client) = std::env::var(CHILD_ENV) {
        child_main(&client);
        return;
    }
    let full = std::env::args().any(|arg| arg == "--bench");
    check_txn_keys();
    let rounds: usize = if full {
        std::env::var("COMPARE_CPU_ROUNDS")
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(3)
    } else {
        1
    };
    let case_filter = std::env::var("COMPARE_TXN_CASES").unwrap_or_default();
    let clients = std::env::var("COMPARE_TXN_CLIENTS").unwrap_or_else(|_| "ours,rust,go".into());
    let wants = |client: &str| clients.split(',').any(|listed| listed.trim() == client);
    let (run_ours, run_rust) = (wants("ours"), wants("rust"));
    let go = match wants("go").then(tikv_tests::client_go::harness) {
        None => None,
        Some(Ok(binary)) => Some(binary),
        Some(Err(err)) => {
            println!("client-go left out: {err}");
            None
        }
    };
    let ticks = clock_ticks_per_second();
    let mut rows = Vec::new();
    for (case_index, case) in Case::all().into_iter().enumerate() {
        if !case.label().contains(&case_filter) {
            continue;
        }
        let sim = start_cluster();
        let per_caller = case.ops_per_caller(full);
        let ops = per_caller * case.callers() as u64;
        let mut ours_rounds = Vec::with_capacity(rounds);
        let mut theirs_rounds = Vec::with_capacity(rounds);
        let mut go_rounds = Vec::with_capacity(rounds);
        let mut theirs_panicked = false;
        for round in 0..rounds {
            if run_ours {
                let measured = child_round("ours", &sim, case_index, per_caller, round);
                ours_rounds.push(measured.unwrap_or_else(|err| panic!("ours {err}")));
            }
            if run_rust {
                match child_round("rust", &sim, case_index, per_caller, round) {
                    Ok(measured) => theirs_rounds.push(measured),
                    Err(_) => theirs_panicked = true,
                }
            }
            if let Some(binary) = &go {
                go_rounds.push(measure_go(binary, &sim, case, per_caller, round, ticks));
            }
        }
        rows.push(Row {
            case,
            ops,
            ours: (!ours_rounds.is_empty()).then(|| best(&ours_rounds)),
            rust: if theirs_panicked {
                Err("panicked")
            } else if theirs_rounds.is_empty() {
                Err("-")
            } else {
                Ok(best(&theirs_rounds))
            },
            go: (!go_rounds.is_empty()).then(|| best(&go_rounds)),
        });
    }
    print_tables(&rows, rounds);
}
