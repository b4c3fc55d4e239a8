//! client-go, the reference Go client, against tikv-sim, and mixed with ours.
//!
//! - `check_*`: the harness's scenarios (`benches/client-go`, `check`) through client-go's
//!   public API against a simulated cluster: where tikv-sim answers differently from TiKV,
//!   client-go notices. Every scenario must pass (tests/sim/README.md lists what stays
//!   different and why none of it shows here).
//! - `interop_*`: raw pairs written by one client and read by the other (API V1, and V2 in
//!   a keyspace); transactional pairs committed by client-go read through our
//!   `Client::snapshot`; a client-go transaction stopped after prewrite whose locks our
//!   snapshot read (primary committed) and our `Client::resolve_locks` (expired) resolve.
//!   The other way, our transactions (two-phase over several regions, async commit, 1PC)
//!   read back exactly by client-go's snapshot, and ours left part-way (stopped after
//!   prewrite; primary committed and secondaries left locked; async commit with every key
//!   left locked) whose locks client-go's reads resolve.
//!
//! Each test starts its own cluster in-process, built from the `tikv-sim` binary's flags.
//! Without `go` on the PATH every test prints why and passes without running.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tikv_core::error::{LockInfo, LockKind};
use tikv_core::transaction::TransactionOptions;
use tikv_core::{ApiVersion, Client, CommitKnobs, CommitMode, Config, Timestamp};
use tikv_proto::codec::{KeyMode, Keyspace};
use tikv_proto::kvrpcpb;
use tikv_sim::SimServer;
use tikv_sim::config::{Parsed, parse_args};
use tikv_tests::client_go::{self, HarnessError, HarnessRun};

/// The keyspace the API V2 runs use, and a second one for isolation checks. Created in this
/// order, they get ids 1 and 2.
const KEYSPACE: &str = "tenant1";
const KEYSPACE_ID: u32 = 1;
const OTHER_KEYSPACE: &str = "tenant2";

/// The raw scenarios that need their keys across regions (the harness's
/// `rawSplitScenarios`); their raw key space is split at key 010 before `check` runs.
const RAW_SPLIT_SCENARIOS: [&str; 4] = ["batch", "scan", "delete_range", "checksum"];

/// The harness, or `None` (having said why) when Go is missing.
fn harness() -> Option<std::path::PathBuf> {
    match client_go::harness() {
        Ok(path) => Some(path),
        Err(err @ HarnessError::NoGo(_)) => {
            eprintln!("skipping the client-go tests: {err}");
            None
        }
        Err(err) => panic!("{err}"),
    }
}

/// A cluster as `tikv-sim <flags>` would run it, served in-process.
async fn start_sim(flags: &[&str]) -> SimServer {
    let args = flags.iter().map(|flag| (*flag).to_owned());
    let settings = match parse_args(args) {
        Ok(Parsed::Run(settings)) => settings,
        other => panic!("bad flags {flags:?}: {other:?}"),
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let sim = settings.build(now_ms).unwrap_or_else(|err| panic!("{err}"));
    SimServer::serve(sim)
        .await
        .unwrap_or_else(|err| panic!("{err}"))
}

/// The harness flags that name the cluster: PD, API version and keyspace.
fn cluster_args(server: &SimServer, api: ApiVersion, prefix: &str) -> Vec<String> {
    let mut args = vec![
        "--pd".to_owned(),
        server.pd_address().to_owned(),
        "--prefix".to_owned(),
        prefix.to_owned(),
    ];
    if api == ApiVersion::V2 {
        args.extend(["--api-version", "2", "--keyspace", KEYSPACE].map(str::to_owned));
    }
    args
}

/// Runs the harness off the async runtime (it blocks until the Go process ends).
async fn run_harness(binary: &std::path::Path, args: Vec<String>) -> HarnessRun {
    let binary = binary.to_owned();
    let shown = args.join(" ");
    tokio::task::spawn_blocking(move || client_go::run(&binary, &args))
        .await
        .unwrap_or_else(|err| panic!("{err}"))
        .unwrap_or_else(|err| panic!("cannot run the harness with `{shown}`: {err}"))
}

/// Asserts that every scenario of a run passed and that it ran some.
fn assert_all_passed(run: &HarnessRun, what: &str) {
    assert!(
        run.success && run.failed.is_empty() && !run.passed.is_empty(),
        "client-go {what}:\n{}",
        run.describe()
    );
}

fn our_client(server: &SimServer, api: ApiVersion) -> Client {
    // Status checks take their current ts from a fresh TSO call, not one up to 2 s old:
    // the lock client-go leaves behind is younger than that.
    let mut config = Config::default()
        .with_api_version(api)
        .with_low_resolution_ts_staleness(Duration::ZERO);
    if api == ApiVersion::V2 {
        config = config.with_keyspace(KEYSPACE);
    }
    tikv_tokio::connect([server.pd_address()], config).unwrap_or_else(|err| panic!("{err}"))
}

/// Splits the raw key space at `keys` through our client (client-go's raw client cannot).
async fn split_raw(client: &Client, keys: Vec<String>) {
    client
        .raw()
        .split_regions(keys, false)
        .await
        .unwrap_or_else(|err| panic!("raw split: {err}"));
}

async fn check(api: ApiVersion, group: &str, raw_splits: bool) {
    let Some(binary) = harness() else { return };
    let flags: &[&str] = match api {
        ApiVersion::V2 => &[
            "--stores",
            "3",
            "--api-version",
            "2",
            "--keyspaces",
            "tenant1,tenant2",
        ],
        _ => &["--stores", "3"],
    };
    let server = start_sim(flags).await;
    let prefix = "check/";
    if raw_splits {
        let client = our_client(&server, api);
        let keys = RAW_SPLIT_SCENARIOS
            .iter()
            .map(|scenario| format!("{prefix}raw/{scenario}/010"))
            .collect();
        split_raw(&client, keys).await;
        client.close().await;
    }
    let mut args = vec!["check".to_owned()];
    args.extend(cluster_args(&server, api, prefix));
    args.extend(["--group".to_owned(), group.to_owned()]);
    if api == ApiVersion::V2 {
        args.extend(["--other-keyspace".to_owned(), OTHER_KEYSPACE.to_owned()]);
    }
    let run = run_harness(&binary, args).await;
    assert_all_passed(&run, &format!("check ({api:?}, {group})"));
}

/// Under API V1 the raw scenarios run on a cluster of their own: their region boundaries
/// are plain raw keys, which a transactional client's whole-cluster walk (GC's lock scan)
/// cannot decode, on TiKV as here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_raw_api_v1() {
    check(ApiVersion::V1, "raw", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_txn_api_v1() {
    check(ApiVersion::V1, "txn", false).await;
}

/// Raw and transactional scenarios in one keyspace of an API V2 cluster, with a second
/// keyspace for isolation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_all_api_v2_keyspace() {
    check(ApiVersion::V2, "all", true).await;
}

/// A transactional key as TiKV's storage sees it (under API V2, behind the keyspace prefix).
fn storage_txn_key(api: ApiVersion, key: &[u8]) -> Vec<u8> {
    match api {
        ApiVersion::V2 => Keyspace::new(KeyMode::Txn, KEYSPACE_ID)
            .unwrap_or_else(|err| panic!("{err}"))
            .encode_key(key),
        _ => key.to_vec(),
    }
}

/// The locks the cluster holds on `key`, read from the store directly (`max_version` is a
/// current timestamp: a scan raises the store's max ts to it).
fn locks_on(
    server: &SimServer,
    api: ApiVersion,
    key: &[u8],
    max_version: Timestamp,
) -> Vec<kvrpcpb::LockInfo> {
    let start = storage_txn_key(api, key);
    let mut end = start.clone();
    end.push(0);
    let request = kvrpcpb::ScanLockRequest {
        max_version: max_version.version(),
        start_key: start.into(),
        end_key: end.into(),
        limit: 10,
        ..Default::default()
    };
    server.with(|sim| sim.mvcc.scan_lock(&request)).locks
}

async fn now(client: &Client) -> Timestamp {
    client
        .current_timestamp()
        .await
        .unwrap_or_else(|err| panic!("{err}"))
}

fn interop_key(prefix: &str, group: &str, index: usize) -> String {
    format!("{prefix}interop/{group}/{index:03}")
}

/// Raw pairs written by each client and read by the other.
async fn interop_raw(api: ApiVersion) {
    let Some(binary) = harness() else { return };
    let flags: &[&str] = match api {
        ApiVersion::V2 => &[
            "--stores",
            "3",
            "--api-version",
            "2",
            "--keyspaces",
            KEYSPACE,
        ],
        _ => &["--stores", "3"],
    };
    let server = start_sim(flags).await;
    let prefix = "mix/";
    let count = 20;
    let client = our_client(&server, api);
    let raw = client.raw();
    split_raw(
        &client,
        vec![
            interop_key(prefix, "rust", 10),
            interop_key(prefix, "go", 10),
        ],
    )
    .await;
    let step = |name: &str| {
        let mut args = vec!["interop".to_owned(), name.to_owned()];
        args.extend(cluster_args(&server, api, prefix));
        args
    };

    // Our raw writes, read by client-go (get, batch get, scan and reverse scan across a
    // region boundary).
    let pairs: Vec<(Bytes, Bytes)> = (0..count)
        .map(|i| {
            (
                Bytes::from(interop_key(prefix, "rust", i)),
                Bytes::from(format!("rust-{i}")),
            )
        })
        .collect();
    raw.batch_put(pairs)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let run = run_harness(&binary, step("raw-read")).await;
    assert_all_passed(&run, "interop raw-read");

    // client-go's raw writes, read by us.
    let run = run_harness(&binary, step("raw-write")).await;
    assert_all_passed(&run, "interop raw-write");
    let go_keys: Vec<Bytes> = (0..count)
        .map(|i| Bytes::from(interop_key(prefix, "go", i)))
        .collect();
    let go_values: Vec<Option<Bytes>> = (0..count)
        .map(|i| Some(Bytes::from(format!("go-{i}"))))
        .collect();
    assert_eq!(
        raw.get(go_keys[3].clone()).await.ok().flatten(),
        go_values[3]
    );
    let values = raw
        .batch_get(go_keys.clone())
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(values, go_values);
    let scanned = raw
        .scan(
            interop_key(prefix, "go", 0).as_bytes()..interop_key(prefix, "go", 999).as_bytes(),
            100,
        )
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let scanned_keys: Vec<Bytes> = scanned.iter().map(|pair| pair.key.clone()).collect();
    assert_eq!(scanned_keys, go_keys);

    client.close().await;
}

/// client-go's transactions (committed, or stopped after prewrite) read and resolved by
/// ours. A cluster of its own: under API V1 the raw splits above are not valid
/// transactional region boundaries.
async fn interop_txn(api: ApiVersion) {
    let Some(binary) = harness() else { return };
    let flags: &[&str] = match api {
        ApiVersion::V2 => &[
            "--stores",
            "3",
            "--api-version",
            "2",
            "--keyspaces",
            KEYSPACE,
        ],
        _ => &["--stores", "3"],
    };
    let server = start_sim(flags).await;
    let prefix = "mix/";
    let count = 20;
    let client = our_client(&server, api);
    client
        .regions()
        .split_regions(
            [
                interop_key(prefix, "txn", 10),
                interop_key(prefix, "lock-committed", 10),
                interop_key(prefix, "lock-expired", 10),
            ],
            false,
        )
        .await
        .unwrap_or_else(|err| panic!("txn split: {err}"));
    let step = |name: &str, extra: &[&str]| {
        let mut args = vec!["interop".to_owned(), name.to_owned()];
        args.extend(cluster_args(&server, api, prefix));
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        args
    };

    // client-go's transaction, read through our snapshot at and just before its commit ts.
    let run = run_harness(&binary, step("txn-write", &[])).await;
    assert_all_passed(&run, "interop txn-write");
    let commit_ts: u64 = run
        .fact("COMMIT_TS")
        .and_then(|ts| ts.parse().ok())
        .unwrap_or_else(|| panic!("txn-write printed no COMMIT_TS\n{}", run.describe()));
    let txn_range =
        interop_key(prefix, "txn", 0).into_bytes()..interop_key(prefix, "txn", 999).into_bytes();
    let seen = client
        .snapshot(Timestamp::from_version(commit_ts))
        .scan(txn_range.clone(), 100)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let expected: Vec<(Bytes, Bytes)> = (0..count)
        .map(|i| {
            (
                Bytes::from(interop_key(prefix, "txn", i)),
                Bytes::from(format!("go-txn-{i}")),
            )
        })
        .collect();
    let seen_pairs: Vec<(Bytes, Bytes)> = seen
        .into_iter()
        .map(|pair| (pair.key, pair.value))
        .collect();
    assert_eq!(seen_pairs, expected);
    let before = client
        .snapshot(Timestamp::from_version(commit_ts - 1))
        .scan(txn_range, 100)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(before.is_empty(), "read before the commit ts: {before:?}");
    let got = client
        .snapshot(Timestamp::from_version(commit_ts))
        .get(interop_key(prefix, "txn", 7))
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(got, Some(Bytes::from("go-txn-7")));

    // A client-go transaction that committed its primary and stopped: our snapshot read of
    // the secondary meets the lock, finds the primary committed and commits the secondary.
    let run = run_harness(&binary, step("txn-prewrite", &["--commit-primary"])).await;
    assert_all_passed(&run, "interop txn-prewrite --commit-primary");
    let secondary = interop_key(prefix, "lock-committed", 20);
    assert_eq!(
        locks_on(&server, api, secondary.as_bytes(), now(&client).await).len(),
        1,
        "the secondary is locked"
    );
    let read_ts = now(&client).await;
    let got = client
        .snapshot(read_ts)
        .get(secondary.clone())
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(got, Some(Bytes::from("go-secondary")));
    assert!(
        locks_on(&server, api, secondary.as_bytes(), now(&client).await).is_empty(),
        "the read resolved the secondary's lock"
    );

    // A client-go transaction that stopped after prewrite, its lock TTL (1 ms) long past:
    // our resolve_locks rolls it back, and nothing it wrote is visible.
    let run = run_harness(&binary, step("txn-prewrite", &[])).await;
    assert_all_passed(&run, "interop txn-prewrite");
    let start_ts: u64 = run
        .fact("START_TS")
        .and_then(|ts| ts.parse().ok())
        .unwrap_or_else(|| panic!("txn-prewrite printed no START_TS\n{}", run.describe()));
    let primary = run
        .fact("PRIMARY")
        .unwrap_or_else(|| panic!("txn-prewrite printed no PRIMARY"))
        .to_owned();
    let secondary = interop_key(prefix, "lock-expired", 20);
    let locks = locks_on(&server, api, secondary.as_bytes(), now(&client).await);
    assert_eq!(locks.len(), 1, "the secondary is locked");
    assert_eq!(locks[0].lock_version, start_ts);
    // The lock as TiKV reports it (in a key error or a lock scan): keys in the request
    // form, behind the keyspace prefix under API V2.
    let lock = LockInfo::from_proto(&locks[0]);
    assert_eq!(lock.kind, LockKind::Put);
    assert_eq!(
        &lock.primary[..],
        &storage_txn_key(api, primary.as_bytes())[..]
    );
    let read_ts = now(&client).await;
    let outcome = client
        .resolve_locks(read_ts, vec![lock])
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(outcome.ms_before_expiry, 0, "the lock had expired");
    assert!(
        locks_on(&server, api, secondary.as_bytes(), now(&client).await).is_empty(),
        "resolve_locks removed the secondary's lock"
    );
    assert!(
        locks_on(&server, api, primary.as_bytes(), now(&client).await).is_empty(),
        "the status check rolled the primary back"
    );
    let snapshot = client.snapshot(read_ts);
    assert_eq!(snapshot.get(secondary).await.ok(), Some(None));
    assert_eq!(snapshot.get(primary).await.ok(), Some(None));
    client.close().await;
}

/// The locks the cluster holds on the keys of `group` (`interop/GROUP/000` ..= `/999`).
fn group_locks(
    server: &SimServer,
    api: ApiVersion,
    prefix: &str,
    group: &str,
    max_version: Timestamp,
) -> Vec<kvrpcpb::LockInfo> {
    let request = kvrpcpb::ScanLockRequest {
        max_version: max_version.version(),
        start_key: storage_txn_key(api, interop_key(prefix, group, 0).as_bytes()).into(),
        end_key: storage_txn_key(api, interop_key(prefix, group, 999).as_bytes()).into(),
        limit: 1_000,
        ..Default::default()
    };
    server.with(|sim| sim.mvcc.scan_lock(&request)).locks
}

/// Waits until the TSO's clock is past `start_ts` + `ttl_ms`: a lock of that transaction
/// and TTL has then expired for any status check with a timestamp taken from now on (TiKV's
/// `Lock::is_expired` compares physical times).
async fn wait_lock_expiry(client: &Client, start_ts: Timestamp, ttl_ms: u64) {
    while now(client).await.physical_ms() <= start_ts.physical_ms() + ttl_ms {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// How one of our transactions in `interop_ours_read_by_go` commits.
struct OurTxn {
    /// The key group (and value prefix) it writes.
    group: &'static str,
    options: TransactionOptions,
    /// The protocol it must have used (`None`: it stops before deciding).
    mode: Option<CommitMode>,
    /// Whether the group's keys span a region boundary (at key 010).
    split: bool,
}

fn knobs(knobs: CommitKnobs) -> TransactionOptions {
    TransactionOptions::new().with_testing_knobs(knobs)
}

/// Our transactions, read by client-go (its snapshot's get, batch get, scan and reverse
/// scan, in the harness's `interop txn-read`):
/// - committed with two phases across two regions, with async commit across two
///   regions, and in one phase: client-go reads every pair at a fresh ts, and (for the
///   two-phase one) nothing just before the commit ts;
/// - stopped after prewrite with a 1 ms lock TTL, waited past: client-go's reads find the
///   primary's lock expired, roll the transaction back (TiKV's `check_txn_status`) and
///   read nothing; no lock is left;
/// - two-phase with the primary's batch committed (the keys of its region) and the other
///   region's secondaries left locked: client-go's reads find the primary committed and
///   commit the secondaries (TiKV's `resolve_lock`);
/// - async commit with every key left locked (1 ms TTL): client-go checks the secondaries
///   (TiKV's `check_secondary_locks`), finds them all prewritten and commits them.
async fn interop_ours_read_by_go(api: ApiVersion) {
    let Some(binary) = harness() else { return };
    let flags: &[&str] = match api {
        ApiVersion::V2 => &[
            "--stores",
            "3",
            "--api-version",
            "2",
            "--keyspaces",
            KEYSPACE,
        ],
        _ => &["--stores", "3"],
    };
    let server = start_sim(flags).await;
    let prefix = "ours/";
    let count = 20;
    let short_ttl = 1;
    let client = our_client(&server, api);
    let txns = [
        OurTxn {
            group: "rust-2pc",
            options: TransactionOptions::new(),
            mode: Some(CommitMode::TwoPhase),
            split: true,
        },
        OurTxn {
            group: "rust-async",
            options: TransactionOptions::new().with_async_commit(true),
            mode: Some(CommitMode::AsyncCommit),
            split: true,
        },
        OurTxn {
            group: "rust-1pc",
            options: TransactionOptions::new().with_try_one_pc(true),
            mode: Some(CommitMode::OnePc),
            split: false,
        },
        OurTxn {
            group: "rust-lock-expired",
            options: knobs(CommitKnobs {
                stop_after_prewrite: true,
                lock_ttl_ms: Some(short_ttl),
                ..CommitKnobs::default()
            }),
            mode: None,
            split: true,
        },
        OurTxn {
            group: "rust-lock-committed",
            options: knobs(CommitKnobs {
                skip_secondaries: true,
                ..CommitKnobs::default()
            }),
            mode: Some(CommitMode::TwoPhase),
            split: true,
        },
        OurTxn {
            group: "rust-lock-async",
            options: knobs(CommitKnobs {
                skip_secondaries: true,
                lock_ttl_ms: Some(short_ttl),
                ..CommitKnobs::default()
            })
            .with_async_commit(true),
            mode: Some(CommitMode::AsyncCommit),
            split: true,
        },
    ];
    let split_keys: Vec<String> = txns
        .iter()
        .filter(|txn| txn.split)
        .map(|txn| interop_key(prefix, txn.group, 10))
        .collect();
    client
        .regions()
        .split_regions(split_keys, false)
        .await
        .unwrap_or_else(|err| panic!("txn split: {err}"));
    let read = |group: &str, extra: &[String]| {
        let mut args = vec!["interop".to_owned(), "txn-read".to_owned()];
        args.extend(cluster_args(&server, api, prefix));
        args.extend(
            ["--group", group, "--count", &count.to_string()]
                .iter()
                .map(|arg| (*arg).to_owned()),
        );
        args.extend(extra.iter().cloned());
        args
    };
    let values = |group: &str| vec!["--value-prefix".to_owned(), group.to_owned()];
    let absent = || vec!["--absent".to_owned()];

    for txn in txns {
        let group = txn.group;
        let mut ours = client
            .begin_with(txn.options)
            .await
            .unwrap_or_else(|err| panic!("{group}: begin: {err}"));
        for i in 0..count {
            ours.put(interop_key(prefix, group, i), format!("{group}-{i}"))
                .unwrap_or_else(|err| panic!("{group}: put: {err}"));
        }
        let commit_ts = ours
            .commit()
            .await
            .unwrap_or_else(|err| panic!("{group}: commit: {err}"))
            // A commit stopped after prewrite answers a zero commit ts.
            .filter(|ts| ts.version() != 0);
        assert_eq!(commit_ts.is_some(), txn.mode.is_some(), "{group}");
        if let Some(mode) = txn.mode {
            let outcome = ours.commit_outcome();
            assert_eq!(outcome.map(|o| o.mode), Some(mode), "{group}: {outcome:?}");
            assert!(
                outcome.is_some_and(|o| !o.async_commit_fallback && !o.one_pc_fallback),
                "{group}: {outcome:?}"
            );
        }
        // What the knobs leave behind (the other transactions may still be committing
        // their secondaries in the background: client-go's reads resolve what they meet).
        let expected_locks = match group {
            "rust-lock-expired" | "rust-lock-async" => Some(count),
            // The primary is committed, and with it the keys of its region (000 to 009:
            // one commit request, the primary's batch, as in client-go); 010 to 019 are
            // left locked.
            "rust-lock-committed" => Some(count - 10),
            _ => None,
        };
        if let Some(expected) = expected_locks {
            let locked = group_locks(&server, api, prefix, group, now(&client).await).len();
            assert_eq!(locked, expected, "{group}: locks before client-go reads");
        }
        match group {
            "rust-lock-expired" => {
                wait_lock_expiry(&client, ours.start_ts(), short_ttl).await;
                let run = run_harness(&binary, read(group, &absent())).await;
                assert_all_passed(&run, &format!("interop txn-read {group}"));
                // What client-go decided is what we read too.
                let got = client
                    .snapshot(now(&client).await)
                    .get(interop_key(prefix, group, 0))
                    .await
                    .unwrap_or_else(|err| panic!("{err}"));
                assert_eq!(got, None, "{group}: rolled back");
            }
            _ => {
                if group == "rust-lock-async" {
                    wait_lock_expiry(&client, ours.start_ts(), short_ttl).await;
                }
                let run = run_harness(&binary, read(group, &values(group))).await;
                assert_all_passed(&run, &format!("interop txn-read {group}"));
            }
        }
        let left = group_locks(&server, api, prefix, group, now(&client).await);
        assert!(
            left.is_empty(),
            "{group}: client-go's reads resolved every lock, but left {:?}",
            left.iter()
                .map(|lock| String::from_utf8_lossy(&lock.key).into_owned())
                .collect::<Vec<_>>()
        );
        if group == "rust-2pc" {
            let commit_ts = commit_ts.map_or(0, Timestamp::version);
            let at = |ts: u64| vec!["--ts".to_owned(), ts.to_string()];
            let run = run_harness(
                &binary,
                read(group, &[values(group), at(commit_ts)].concat()),
            )
            .await;
            assert_all_passed(&run, "interop txn-read at the commit ts");
            let run = run_harness(
                &binary,
                read(group, &[absent(), at(commit_ts - 1)].concat()),
            )
            .await;
            assert_all_passed(&run, "interop txn-read before the commit ts");
        }
    }
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_ours_read_by_go_api_v1() {
    interop_ours_read_by_go(ApiVersion::V1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_ours_read_by_go_api_v2_keyspace() {
    interop_ours_read_by_go(ApiVersion::V2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_raw_api_v1() {
    interop_raw(ApiVersion::V1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_raw_api_v2_keyspace() {
    interop_raw(ApiVersion::V2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_txn_api_v1() {
    interop_txn(ApiVersion::V1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_txn_api_v2_keyspace() {
    interop_txn(ApiVersion::V2).await;
}
