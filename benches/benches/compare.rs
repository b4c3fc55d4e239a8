//! Our raw client, client-rust (`tikv-client` 0.4) and client-go side by side on one
//! simulated cluster.
//!
//! ```text
//! cargo build --release -p tikv-sim
//! cargo bench -p tikv-benches --bench compare
//! ```
//!
//! The cluster is the release `tikv-sim` binary in its own process, so this process holds
//! nothing but the two Rust clients and their tokio runtime: the CPU time it burns is client
//! CPU. client-go runs in a third process, the Go harness of `benches/client-go` (its `bench`
//! subcommand), built first with the `go` on the PATH; without Go the bench says so and
//! compares the two Rust clients only. All clients talk to the same cluster, with the same
//! regions and the same 1,000 pre-loaded keys, and run the same workloads through their own
//! natural API.
//!
//! Before criterion's wall-clock groups run, tables of throughput, latency (p50/p99) and
//! client CPU per operation are printed: each case runs a fixed number of operations per
//! client (best of a few rounds, the clients interleaved), reading each client process's and
//! the simulator's CPU time from `/proc/<pid>/stat` around it. `COMPARE_CPU_ROUNDS=0` skips
//! them; `TIKV_SIM_BIN` points at a simulator binary other than `target/release/tikv-sim`.
//! criterion's groups compare the two Rust clients only (client-go is not in this process).
//! See docs/performance.md.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group};
use tikv_benches::process::{self, Measured, SimProcess, best, clock_ticks_per_second};

/// Keys `key-0000` ..= `key-0999` are pre-loaded; these split them into four regions.
const SPLIT_KEYS: &str = "key-0250,key-0500,key-0750";
/// How many keys are pre-loaded.
const KEY_COUNT: usize = 1000;
/// Bytes per value.
const VALUE_LEN: usize = 64;
/// Keys per batch get.
const BATCH_KEYS: usize = 100;
/// Pairs per scan.
const SCAN_LIMIT: u32 = 1000;
/// Concurrent callers for get and put.
const CALLERS: [usize; 3] = [1, 64, 512];

fn key(index: usize) -> String {
    format!("key-{:04}", index % KEY_COUNT)
}

/// The operations both clients run, each through its own API. Results are checked so that
/// neither client can win by doing less.
trait Client: Clone + Send + Sync + 'static {
    fn get(&self, key: String) -> impl Future<Output = ()> + Send;
    fn put(&self, key: String, value: Bytes) -> impl Future<Output = ()> + Send;
    fn batch_get(&self, keys: Vec<String>) -> impl Future<Output = ()> + Send;
    fn scan(&self) -> impl Future<Output = ()> + Send;
}

/// Our client.
#[derive(Clone)]
struct Ours(tikv_core::RawClient);

impl Client for Ours {
    async fn get(&self, key: String) {
        let value = self.0.get(key).await.unwrap_or_else(|err| panic!("{err}"));
        assert!(value.is_some(), "pre-loaded key missing");
    }

    async fn put(&self, key: String, value: Bytes) {
        self.0
            .put(key, value)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
    }

    async fn batch_get(&self, keys: Vec<String>) {
        let values = self
            .0
            .batch_get(keys)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(values.iter().flatten().count(), BATCH_KEYS);
    }

    async fn scan(&self) {
        let pairs = self
            .0
            .scan("key-".."key-~", SCAN_LIMIT)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(pairs.len(), KEY_COUNT);
    }
}

/// client-rust.
#[derive(Clone)]
struct Theirs(tikv_client::RawClient);

impl Client for Theirs {
    async fn get(&self, key: String) {
        let value = self.0.get(key).await.unwrap_or_else(|err| panic!("{err}"));
        assert!(value.is_some(), "pre-loaded key missing");
    }

    async fn put(&self, key: String, value: Bytes) {
        self.0
            .put(key, value.to_vec())
            .await
            .unwrap_or_else(|err| panic!("{err}"));
    }

    async fn batch_get(&self, keys: Vec<String>) {
        let pairs = self
            .0
            .batch_get(keys)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(pairs.len(), BATCH_KEYS);
    }

    async fn scan(&self) {
        let pairs = self
            .0
            .scan("key-".to_owned().."key-~".to_owned(), SCAN_LIMIT)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(pairs.len(), KEY_COUNT);
    }
}

/// One workload.
#[derive(Clone, Copy, Debug)]
enum Case {
    Get { callers: usize },
    Put { callers: usize },
    BatchGet,
    Scan,
}

impl Case {
    fn all() -> Vec<Self> {
        let mut cases: Vec<Self> = CALLERS
            .iter()
            .map(|&callers| Self::Get { callers })
            .collect();
        cases.extend(CALLERS.iter().map(|&callers| Self::Put { callers }));
        cases.extend([Self::BatchGet, Self::Scan]);
        cases
    }

    fn callers(self) -> usize {
        match self {
            Self::Get { callers } | Self::Put { callers } => callers,
            Self::BatchGet | Self::Scan => 1,
        }
    }

    fn label(self) -> String {
        match self {
            Self::Get { callers } => format!("get, {callers} callers"),
            Self::Put { callers } => format!("put, {callers} callers"),
            Self::BatchGet => format!("batch_get {BATCH_KEYS} keys"),
            Self::Scan => format!("scan {SCAN_LIMIT} keys"),
        }
    }

    /// Operations per caller in the CPU table: enough for half a second or more per client
    /// at the rates seen on a 2-core machine, so that 10 ms CPU ticks stay a small error.
    fn cpu_ops_per_caller(self) -> u64 {
        match self {
            Self::Get { callers: 1 } | Self::Put { callers: 1 } => 15_000,
            Self::Get { callers } | Self::Put { callers } => (102_400 / callers as u64).max(1),
            Self::BatchGet => 2_000,
            Self::Scan => 1_000,
        }
    }
}

/// Runs `case` with `ops_per_caller` sequential operations on each of its callers (one tokio
/// task each, so callers spread over the runtime's workers); returns the wall time and, when
/// `timed`, every operation's latency.
async fn run<C: Client>(
    client: &C,
    case: Case,
    ops_per_caller: u64,
    timed: bool,
) -> (Duration, Vec<Duration>) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..case.callers())
        .map(|caller| {
            let client = client.clone();
            tokio::spawn(async move {
                let value = Bytes::from(vec![b'w'; VALUE_LEN]);
                let mut latencies =
                    Vec::with_capacity(if timed { ops_per_caller as usize } else { 0 });
                for op in 0..ops_per_caller as usize {
                    let index = caller * 131 + op * 7;
                    let op_started = timed.then(Instant::now);
                    match case {
                        Case::Get { .. } => client.get(key(index)).await,
                        Case::Put { .. } => client.put(key(index), value.clone()).await,
                        Case::BatchGet => {
                            let keys = (0..BATCH_KEYS).map(|i| key(index + i * 9)).collect();
                            client.batch_get(keys).await;
                        }
                        Case::Scan => client.scan().await,
                    }
                    if let Some(op_started) = op_started {
                        latencies.push(op_started.elapsed());
                    }
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

/// Everything the groups and the CPU table share.
struct Fixture {
    sim: SimProcess,
    runtime: tokio::runtime::Runtime,
    ours: Ours,
    theirs: Theirs,
    /// The client-go harness, when Go is on the PATH.
    go: Option<PathBuf>,
}

fn fixture() -> Fixture {
    let sim = SimProcess::start(&["--stores", "3", "--split-keys", SPLIT_KEYS]);
    // As many workers as cores (2 on the reference machine), the tokio default.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|err| panic!("{err}"));
    let (ours, theirs) = runtime.block_on(async {
        let client = tikv_tokio::connect([sim.pd.clone()], tikv_core::Config::default())
            .unwrap_or_else(|err| panic!("{err}"));
        let ours = client.raw();
        let config = tikv_client::Config::default().with_timeout(Duration::from_secs(10));
        let theirs = tikv_client::RawClient::new_with_config(vec![sim.pd.clone()], config)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let pairs: Vec<(Bytes, Bytes)> = (0..KEY_COUNT)
            .map(|i| (Bytes::from(key(i)), Bytes::from(vec![b'v'; VALUE_LEN])))
            .collect();
        ours.batch_put(pairs)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        (Ours(ours), Theirs(theirs))
    });
    // Both see the same data (and both have warmed their region caches).
    runtime.block_on(async {
        ours.scan().await;
        theirs.scan().await;
    });
    let go = match tikv_tests::client_go::harness() {
        Ok(binary) => Some(binary),
        Err(err) => {
            println!("client-go left out: {err}");
            None
        }
    };
    Fixture {
        sim,
        runtime,
        ours,
        theirs,
        go,
    }
}

fn measure<C: Client>(fixture: &Fixture, client: &C, case: Case, ticks: u64) -> Measured {
    let per_caller = case.cpu_ops_per_caller();
    // A short warm-up so that connections and caches exist for both clients.
    fixture
        .runtime
        .block_on(run(client, case, (per_caller / 20).max(1), false));
    let ops = per_caller * case.callers() as u64;
    process::measure(fixture.sim.pid(), ops, ticks, || {
        fixture
            .runtime
            .block_on(run(client, case, per_caller, true))
    })
}

impl Case {
    /// The case's name and caller count as the Go harness's `bench` takes them.
    fn go_args(self) -> [String; 4] {
        let name = match self {
            Self::Get { .. } => "get",
            Self::Put { .. } => "put",
            Self::BatchGet => "batch_get",
            Self::Scan => "scan",
        };
        [
            "--case".to_owned(),
            name.to_owned(),
            "--callers".to_owned(),
            self.callers().to_string(),
        ]
    }
}

/// One round of `case` by client-go, in the harness's own process (which reads its own CPU
/// time from /proc, as this process does for ours).
fn measure_go(fixture: &Fixture, binary: &std::path::Path, case: Case, ticks: u64) -> Measured {
    let mut args = vec![
        "bench".to_owned(),
        "--pd".to_owned(),
        fixture.sim.pd.clone(),
        "--ops-per-caller".to_owned(),
        case.cpu_ops_per_caller().to_string(),
        "--rounds".to_owned(),
        "1".to_owned(),
        "--sim-pid".to_owned(),
        fixture.sim.pid().to_string(),
    ];
    args.extend(case.go_args());
    process::client_go_round(binary, &args, ticks)
}

/// The best round of each client for one case.
struct Row {
    case: Case,
    /// (leanest round, fastest throughput) of ours, client-rust and client-go.
    ours: (Measured, f64),
    rust: (Measured, f64),
    go: Option<(Measured, f64)>,
}

/// Prints the throughput, latency and CPU-per-operation tables (markdown, for
/// docs/performance.md).
fn cpu_table(fixture: &Fixture) {
    let rounds: usize = std::env::var("COMPARE_CPU_ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(3);
    if rounds == 0 {
        return;
    }
    let ticks = clock_ticks_per_second();
    let mut rows = Vec::new();
    for case in Case::all() {
        let mut ours = Vec::with_capacity(rounds);
        let mut rust = Vec::with_capacity(rounds);
        let mut go = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            ours.push(measure(fixture, &fixture.ours, case, ticks));
            rust.push(measure(fixture, &fixture.theirs, case, ticks));
            if let Some(binary) = &fixture.go {
                go.push(measure_go(fixture, binary, case, ticks));
            }
        }
        rows.push(Row {
            case,
            ours: best(&ours),
            rust: best(&rust),
            go: (!go.is_empty()).then(|| best(&go)),
        });
    }
    let go_cell = |row: &Row, cell: &dyn Fn(&(Measured, f64)) -> String| {
        row.go.as_ref().map_or_else(|| "-".to_owned(), cell)
    };
    println!(
        "\nthroughput (best of {rounds} rounds; tikv-sim pid {}):\n",
        fixture.sim.pid()
    );
    println!(
        "| case | ops | ours ops/s | client-rust ops/s | client-go ops/s | ours / client-rust | \
         ours / client-go |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {} | {:.2}x | {} |",
            row.case.label(),
            row.ours.0.ops,
            row.ours.1,
            row.rust.1,
            go_cell(row, &|go| format!("{:.0}", go.1)),
            row.ours.1 / row.rust.1,
            go_cell(row, &|go| format!("{:.2}x", row.ours.1 / go.1)),
        );
    }
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    println!("\nlatency of the leanest round, p50 / p99 in µs:\n");
    println!("| case | ours | client-rust | client-go |");
    println!("|---|---:|---:|---:|");
    for row in &rows {
        println!(
            "| {} | {:.0} / {:.0} | {:.0} / {:.0} | {} |",
            row.case.label(),
            micros(row.ours.0.p50),
            micros(row.ours.0.p99),
            micros(row.rust.0.p50),
            micros(row.rust.0.p99),
            go_cell(row, &|go| format!(
                "{:.0} / {:.0}",
                micros(go.0.p50),
                micros(go.0.p99)
            )),
        );
    }
    println!(
        "\nclient CPU per operation (leanest round; each client in its own process for client-go):\n"
    );
    println!(
        "| case | ours client CPU µs/op | client-rust | client-go | client-rust / ours | \
         client-go / ours | sim CPU µs/op ours / client-rust / client-go | other load, cores |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let (ours, rust) = (&row.ours.0, &row.rust.0);
        println!(
            "| {} | {:.1} | {:.1} | {} | {:.2}x | {} | {:.1} / {:.1} / {} | {:.2} / {:.2} / {} |",
            row.case.label(),
            ours.client_us_per_op(),
            rust.client_us_per_op(),
            go_cell(row, &|go| format!("{:.1}", go.0.client_us_per_op())),
            rust.client_us_per_op() / ours.client_us_per_op(),
            go_cell(row, &|go| format!(
                "{:.2}x",
                go.0.client_us_per_op() / ours.client_us_per_op()
            )),
            ours.sim_us_per_op(),
            rust.sim_us_per_op(),
            go_cell(row, &|go| format!("{:.1}", go.0.sim_us_per_op())),
            ours.other_cores(),
            rust.other_cores(),
            go_cell(row, &|go| format!("{:.2}", go.0.other_cores())),
        );
    }
    println!();
}

fn bench_case<C: Client>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    fixture: &Fixture,
    name: &str,
    client: &C,
    case: Case,
) {
    let parameter = case.callers();
    group.bench_with_input(BenchmarkId::new(name, parameter), &case, |b, &case| {
        b.iter_custom(|iters| fixture.runtime.block_on(run(client, case, iters, false)).0);
    });
}

fn compare(c: &mut Criterion) {
    let fixture = fixture();
    if std::env::args().any(|arg| arg == "--bench") {
        // Only under `cargo bench`; `cargo test --benches` just checks the groups run.
        cpu_table(&fixture);
    }
    let groups: [(&str, Vec<Case>, u64); 4] = [
        (
            "get",
            CALLERS
                .iter()
                .map(|&callers| Case::Get { callers })
                .collect(),
            1,
        ),
        (
            "put",
            CALLERS
                .iter()
                .map(|&callers| Case::Put { callers })
                .collect(),
            1,
        ),
        ("batch_get_100", vec![Case::BatchGet], BATCH_KEYS as u64),
        ("scan_1000", vec![Case::Scan], u64::from(SCAN_LIMIT)),
    ];
    for (name, cases, keys_per_op) in groups {
        let mut group = c.benchmark_group(name);
        // Iterations are long (a round of every caller), so every sample gets the same count.
        group.sampling_mode(SamplingMode::Flat);
        for case in cases {
            group.throughput(Throughput::Elements(case.callers() as u64 * keys_per_op));
            bench_case(&mut group, &fixture, "ours", &fixture.ours, case);
            bench_case(&mut group, &fixture, "client-rust", &fixture.theirs, case);
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = compare
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
