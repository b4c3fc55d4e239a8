//! Deterministic simulations of transactions: the real client against the simulated
//! cluster on the simulated runtime, with virtual time. Replay a seed with
//! `TIKV_SIM_SEED=<seed>`; run more seeds with `TIKV_SIM_TXN_SEEDS=<count>`.

use std::time::Instant;

use tikv_tests::simulation::bank::{BankWorkload, run_bank_workload};
use tikv_tests::simulation::seeds;
use tikv_tests::simulation::txn_checker::Outcome;

/// The seeds of the bank run: `TIKV_SIM_SEED` alone when set, else `1..=count` with the
/// count from `TIKV_SIM_TXN_SEEDS` (default `default_count`).
fn bank_seeds(default_count: u64) -> Vec<u64> {
    let count = std::env::var("TIKV_SIM_TXN_SEEDS")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(default_count);
    let defaults: Vec<u64> = (1..=count).collect();
    seeds(&defaults).unwrap_or_else(|err| panic!("{err}"))
}

/// Runs the bank with every seed of `seeds`; fails listing every seed that broke (with the
/// trace's tail of the first), after running them all.
fn check_bank(seeds: &[u64], workload: &BankWorkload, verbose: bool) {
    let started = Instant::now();
    let mut totals = [0usize; 4];
    let mut failures: Vec<String> = Vec::new();
    let mut first_trace: Option<String> = None;
    for &seed in seeds {
        let run_started = Instant::now();
        if verbose {
            println!("simulation seed {seed} (replay: TIKV_SIM_SEED={seed})");
        }
        let report = match run_bank_workload(seed, workload) {
            Ok(report) => report,
            Err(err) => {
                failures.push(format!("seed {seed} (TIKV_SIM_SEED={seed}): {err}"));
                continue;
            }
        };
        for (total, count) in totals.iter_mut().zip(report.outcomes) {
            *total += count;
        }
        if verbose {
            println!(
                "seed {seed}: committed/aborted/unknown/read-only {:?}, {} steps, virtual {}, \
                 real {:?}, {:?}",
                report.outcomes,
                report.steps,
                report.end,
                run_started.elapsed(),
                report.trouble
            );
        }
        if let Ok(path) = std::env::var("TIKV_SIM_TRACE") {
            std::fs::write(format!("{path}.{seed}"), report.trace.join("\n"))
                .unwrap_or_else(|err| panic!("{err}"));
        }
        if !report.violations.is_empty() {
            let all: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
            failures.push(format!(
                "seed {seed} (TIKV_SIM_SEED={seed}): {} violations:\n  {}",
                report.violations.len(),
                all.join("\n  ")
            ));
            if first_trace.is_none() {
                let tail = report.trace.len().saturating_sub(300);
                first_trace = Some(report.trace[tail..].join("\n"));
            }
        }
    }
    println!(
        "{} seeds: {} failed; committed/aborted/unknown/read-only {totals:?}; real {:?}",
        seeds.len(),
        failures.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed:\n{}\n\nthe first one's trace ends:\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n"),
        first_trace.unwrap_or_default()
    );
}

/// The bank under chaos, a few hundred seeds (CI's share; `TIKV_SIM_TXN_SEEDS` for more).
#[test]
fn bank_under_chaos_keeps_snapshot_isolation() {
    let seeds = bank_seeds(300);
    check_bank(&seeds, &BankWorkload::default(), seeds.len() <= 20);
}

/// The recorded long run: 10,000 seeds (docs/performance.md has the command and result).
/// Run it with `cargo test --release -p tikv-tests --test txn_simulation -- --ignored`.
#[test]
#[ignore = "10,000 seeds: about 90 s in a release build"]
fn bank_ten_thousand_seeds() {
    let seeds = bank_seeds(10_000);
    check_bank(&seeds, &BankWorkload::default(), false);
}

#[test]
fn bank_same_seed_gives_the_same_trace() {
    let workload = BankWorkload {
        txns: 20,
        ..BankWorkload::default()
    };
    let seed = seeds(&[7]).unwrap_or_else(|err| panic!("{err}"))[0];
    println!("simulation seed {seed} (replay: TIKV_SIM_SEED={seed})");
    let first = run_bank_workload(seed, &workload).unwrap_or_else(|err| panic!("{err}"));
    let second = run_bank_workload(seed, &workload).unwrap_or_else(|err| panic!("{err}"));
    assert!(first.trace.len() > 100, "{}", first.trace.len());
    assert_eq!(first.trace, second.trace);
    assert_eq!(first.history, second.history);
    let other = run_bank_workload(seed + 1, &workload).unwrap_or_else(|err| panic!("{err}"));
    assert_ne!(first.trace, other.trace);
}

/// A planted bug: a store acknowledges one transaction's commit without applying it
/// (tikv-sim's `AckWithoutApply` on `KvCommit`). The transaction's locks stay, resolvers
/// roll them back once they expire, and the acknowledged transfer is gone: the checker
/// reports the lost commit (and the reads that no longer see it), though the bank still
/// balances.
#[test]
fn checker_catches_an_acknowledged_commit_that_was_never_applied() {
    use tikv_sim::faults::{FaultAction, FaultRule};
    let workload = BankWorkload {
        chaos: false,
        reply_loss_per_mille: 0,
        stop_percent: 0,
        two_phase_only: true,
        ..BankWorkload::default()
    };
    let clean = run_bank_workload(1, &workload).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(clean.violations, Vec::new(), "the same run without the bug");
    let planted = BankWorkload {
        planted: vec![FaultRule::command(
            "KvCommit",
            FaultAction::AckWithoutApply,
            1,
        )],
        ..workload
    };
    let report = run_bank_workload(1, &planted).unwrap_or_else(|err| panic!("{err}"));
    let kinds: Vec<&str> = report.violations.iter().map(|v| v.kind).collect();
    assert!(kinds.contains(&"lost commit"), "{:#?}", report.violations);
    assert!(!kinds.contains(&"bank total"), "{:#?}", report.violations);
    // The lost transfer is one the client was told had committed.
    let lost = report
        .violations
        .iter()
        .find(|v| v.kind == "lost commit")
        .map(|v| v.txn);
    let record = report.history.iter().find(|r| Some(r.id) == lost);
    assert!(
        record.is_some_and(|r| matches!(r.outcome, Outcome::Committed(_))),
        "{record:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Scenarios with snapshotted traces.
// ---------------------------------------------------------------------------------------------

use std::time::Duration;

use bytes::Bytes;
use tikv_core::{CommitKnobs, CommitMode, Transaction, TransactionOptions};
use tikv_tests::simulation::{ClusterFault, Network, Setup, Simulation};

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// The region boundary TiKV splits the transactional key `key` at (memcomparable-encoded).
fn region_key(key: &str) -> Bytes {
    Bytes::from(tikv_proto::codec::encode_bytes(key.as_bytes()))
}

/// A simulation for trace snapshots: every message takes exactly 1 ms, nothing is lost; the
/// regions are split at `splits`, and every key the scenario uses has been read once, so
/// the trace starts with the region cache warm.
fn scenario(splits: &[&str], keys: &[&str]) -> Simulation {
    let setup = Setup {
        network: Network {
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(1),
            reply_loss_per_mille: 0,
        },
        ..Setup::default()
    };
    let mut sim = Simulation::new(1, setup).unwrap_or_else(|err| panic!("{err}"));
    for split in splits {
        sim.apply(ClusterFault::Split(region_key(split)));
    }
    let client = sim.client().clone();
    let keys: Vec<Bytes> = keys.iter().map(|k| bytes(k)).collect();
    sim.block_on(async move {
        let txn = client.begin().await.unwrap_or_else(|err| panic!("{err}"));
        txn.batch_get(keys)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
    })
    .unwrap_or_else(|err| panic!("{err}"));
    sim.take_trace();
    sim
}

/// Begins a transaction with `options` and buffers `writes`.
fn begin(
    sim: &mut Simulation,
    options: TransactionOptions,
    writes: &[(&str, &str)],
) -> Transaction {
    let client = sim.client().clone();
    let mut txn = sim
        .block_on(async move { client.begin_with(options).await })
        .unwrap_or_else(|err| panic!("{err}"))
        .unwrap_or_else(|err| panic!("{err}"));
    for (key, value) in writes {
        txn.put(bytes(key), bytes(value))
            .unwrap_or_else(|err| panic!("{err}"));
    }
    sim.note(format_args!("begin at {}", txn.start_ts()));
    txn
}

/// Commits `txn`, lets the background work (secondaries) finish, and returns the commit
/// timestamp.
fn commit(sim: &mut Simulation, txn: &mut Transaction) -> tikv_core::Timestamp {
    sim.note("commit");
    let result = sim
        .block_on(txn.commit())
        .unwrap_or_else(|err| panic!("{err}"));
    let commit_ts = match result {
        Ok(Some(ts)) => ts,
        other => panic!("{other:?}\n{}", sim.trace().join("\n")),
    };
    sim.note(format_args!("committed at {commit_ts}"));
    sim.sleep(Duration::from_millis(50))
        .unwrap_or_else(|err| panic!("{err}"));
    commit_ts
}

/// Reads `keys` in a fresh transaction.
fn read(sim: &mut Simulation, keys: &[&str]) -> Vec<(String, String)> {
    let client = sim.client().clone();
    let keys: Vec<Bytes> = keys.iter().map(|k| bytes(k)).collect();
    let pairs = sim
        .block_on(async move {
            let txn = client.begin().await?;
            txn.batch_get(keys).await
        })
        .unwrap_or_else(|err| panic!("{err}"))
        .unwrap_or_else(|err| panic!("{err}"));
    pairs
        .into_iter()
        .map(|p| {
            (
                String::from_utf8_lossy(&p.key).into_owned(),
                String::from_utf8_lossy(&p.value).into_owned(),
            )
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A read at a later timestamp meets an async-commit transaction's primary lock whose
/// keys were never committed (the committer skipped them): it waits for the lock to
/// expire, checks every secondary (TiKV's `CheckSecondaryLocks`), finds them all locked,
/// commits the transaction and reads its write (client-go `resolveAsyncCommitLock`).
#[test]
fn read_meets_a_live_async_commit_lock_and_waits_for_it() {
    let mut sim = scenario(&["b"], &["a", "c"]);
    let knobs = CommitKnobs {
        skip_secondaries: true,
        lock_ttl_ms: Some(100),
        ..CommitKnobs::default()
    };
    let mut txn = begin(
        &mut sim,
        TransactionOptions::new()
            .with_async_commit(true)
            .with_testing_knobs(knobs),
        &[("a", "1"), ("c", "1")],
    );
    let commit_ts = commit(&mut sim, &mut txn);
    assert_eq!(
        txn.commit_outcome().map(|o| o.mode),
        Some(CommitMode::AsyncCommit)
    );
    let got = read(&mut sim, &["a", "c"]);
    let trace = sim.trace().join("\n");
    assert_eq!(got, pairs(&[("a", "1"), ("c", "1")]), "{trace}");
    assert!(trace.contains("KvCheckSecondaryLocks"), "{trace}");
    assert!(
        trace.contains(&format!("commit={}", commit_ts.version())),
        "{trace}"
    );
    insta::assert_snapshot!(trace);
}

/// A 1PC prewrite that commits but whose reply is lost, retried after the region split
/// (so as a two-phase prewrite), reports the outcome undetermined: TiKV takes the two-phase
/// prewrite and commit of an already committed transaction as repeats and answers success,
/// so the client cannot know the commit timestamp the data carries. Found by the bank
/// simulation, where such a commit was acknowledged at a timestamp the store never used.
#[test]
fn lost_one_pc_reply_then_split_is_undetermined() {
    use tikv_sim::faults::{FaultAction, FaultRule};
    let mut sim = scenario(&[], &["a", "c"]);
    let mut txn = begin(
        &mut sim,
        TransactionOptions::new().with_try_one_pc(true),
        &[("a", "1"), ("c", "1")],
    );
    sim.with(|cluster| {
        cluster
            .faults
            .inject(FaultRule::command("KvPrewrite", FaultAction::DropReply, 1))
    });
    let split_at = sim.now() + Duration::from_millis(10);
    sim.schedule(split_at, ClusterFault::Split(region_key("b")));
    let result = sim
        .block_on(txn.commit())
        .unwrap_or_else(|err| panic!("{err}"));
    let trace = sim.trace().join("\n");
    assert!(
        matches!(&result, Err(err) if err.is_undetermined()),
        "{result:?}\n{trace}"
    );
    // The lost attempt did commit.
    assert_eq!(
        read(&mut sim, &["a", "c"]),
        pairs(&[("a", "1"), ("c", "1")])
    );
}

/// A two-phase commit over three regions: prewrites to every region at once, a commit
/// timestamp, the primary's commit, then the secondaries in the background (client-go's
/// `twoPhaseCommitter.execute`).
#[test]
fn two_phase_commit_over_three_regions() {
    let mut sim = scenario(&["b", "d"], &["a", "c", "e"]);
    let mut txn = begin(
        &mut sim,
        TransactionOptions::new(),
        &[("a", "1"), ("c", "1"), ("e", "1")],
    );
    commit(&mut sim, &mut txn);
    let outcome = txn.commit_outcome();
    assert_eq!(outcome.map(|o| o.mode), Some(CommitMode::TwoPhase));
    let trace = sim.trace().join("\n");
    assert_eq!(trace.matches("KvPrewrite").count(), 3, "{trace}");
    // The primary's commit is answered before any secondary's is sent.
    let lines = sim.trace();
    let commits: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains("KvCommit"))
        .collect();
    assert_eq!(commits.len(), 3, "{trace}");
    assert!(lines[commits[0]].contains("[a]"), "{trace}");
    let id = lines[commits[0]]
        .split_whitespace()
        .find(|word| word.starts_with('#'))
        .unwrap_or_default()
        .to_owned();
    let answered = lines
        .iter()
        .position(|line| line.contains(&format!("<- {id} ")))
        .unwrap_or(usize::MAX);
    assert!(commits[1] > answered && commits[2] > answered, "{trace}");
    insta::assert_snapshot!(trace);
    assert_eq!(
        read(&mut sim, &["a", "c", "e"]),
        pairs(&[("a", "1"), ("c", "1"), ("e", "1")])
    );
}

/// An async commit over two regions: the commit floor from TSO, prewrites carrying the
/// secondaries on the primary, the commit timestamp the largest `min_commit_ts` answered,
/// the user answered at once, every key committed in the background.
#[test]
fn async_commit_over_two_regions() {
    let mut sim = scenario(&["b"], &["a", "c"]);
    let mut txn = begin(
        &mut sim,
        TransactionOptions::new().with_async_commit(true),
        &[("a", "1"), ("c", "1")],
    );
    let commit_ts = commit(&mut sim, &mut txn);
    assert_eq!(
        txn.commit_outcome().map(|o| o.mode),
        Some(CommitMode::AsyncCommit)
    );
    let trace = sim.trace().join("\n");
    assert!(trace.contains(" async"), "{trace}");
    assert!(
        trace.contains(&format!("min_commit={}", commit_ts.version())),
        "{trace}"
    );
    insta::assert_snapshot!(trace);
    assert_eq!(
        read(&mut sim, &["a", "c"]),
        pairs(&[("a", "1"), ("c", "1")])
    );
}

/// 1PC asked for keys in two regions: one request cannot carry them, so the commit falls
/// back to two phases (client-go's `checkOnePC` / the prewrite's fallback), and says so.
#[test]
fn one_pc_over_two_regions_falls_back_to_two_phases() {
    let mut sim = scenario(&["b"], &["a", "c"]);
    let mut txn = begin(
        &mut sim,
        TransactionOptions::new().with_try_one_pc(true),
        &[("a", "1"), ("c", "1")],
    );
    commit(&mut sim, &mut txn);
    let outcome = txn.commit_outcome().unwrap_or_else(|| panic!("no outcome"));
    assert_eq!(outcome.mode, CommitMode::TwoPhase);
    assert!(outcome.one_pc_fallback);
    let trace = sim.trace().join("\n");
    assert!(!trace.contains(" 1pc"), "{trace}");
    assert!(trace.contains("KvCommit"), "{trace}");
    insta::assert_snapshot!(trace);
    assert_eq!(
        read(&mut sim, &["a", "c"]),
        pairs(&[("a", "1"), ("c", "1")])
    );
}

/// A writer stops after prewriting (its locks live 100 ms); a reader after that meets the
/// secondary's lock, checks the primary (TiKV's `CheckTxnStatus` rolls the expired
/// transaction back), resolves the secondary's lock alone (lite), and reads what was there
/// before (client-go `LockResolver.ResolveLocks` for a read).
#[test]
fn read_meets_an_expired_lock_and_resolves_it() {
    let mut sim = scenario(&["b"], &["a", "c"]);
    let mut before = begin(&mut sim, TransactionOptions::new(), &[("c", "0")]);
    commit(&mut sim, &mut before);
    let knobs = CommitKnobs {
        stop_after_prewrite: true,
        lock_ttl_ms: Some(100),
        ..CommitKnobs::default()
    };
    let mut writer = begin(
        &mut sim,
        TransactionOptions::new().with_testing_knobs(knobs),
        &[("a", "1"), ("c", "1")],
    );
    sim.note("commit, stopping after the prewrite");
    let stopped = sim
        .block_on(writer.commit())
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(stopped, Ok(Some(tikv_core::Timestamp::from_version(0))));
    sim.sleep(Duration::from_millis(200))
        .unwrap_or_else(|err| panic!("{err}"));
    sim.note("read c");
    let client = sim.client().clone();
    let value = sim
        .block_on(async move {
            let txn = client.begin().await?;
            txn.get("c").await
        })
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(value, Ok(Some(bytes("0"))));
    let trace = sim.trace().join("\n");
    assert!(trace.contains("Locked(c by"), "{trace}");
    assert!(trace.contains("action=TtlExpireRollback"), "{trace}");
    assert!(trace.contains("KvResolveLock region="), "{trace}");
    insta::assert_snapshot!(trace);
}
