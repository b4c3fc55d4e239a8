//! Snapshot reads that wait for locks, on the simulated runtime with virtual time: the
//! cluster and the client share one clock, so a lock's TTL runs out exactly when the test
//! says and a read's waiting can be measured without wall-clock luck.
//!
//! Tests named `test_*` port client-go tests (`integration_tests/lock_test.go`,
//! `snapshot_fail_test.go`); the others name the TiKV rule they rely on. Data and locks are
//! placed with the test-side [`Writer`] (our committer does not exist yet). Replay a seed
//! with `TIKV_SIM_SEED=<seed>`.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tikv_core::error::LockInfo;
use tikv_core::{Error, Timestamp};
use tikv_proto::kvrpcpb;
use tikv_tests::simulation::{Network, Setup, Simulation, seeds};
use tikv_tests::txn_fixture::{Prewrite, Space, Writer};

/// A cluster of three stores and one region, a network with 1 ms latency each way.
fn cluster(seed: u64) -> Simulation {
    let setup = Setup {
        network: Network {
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(1),
            reply_loss_per_mille: 0,
        },
        ..Setup::default()
    };
    Simulation::new(seed, setup).unwrap_or_else(|err| panic!("{err}"))
}

/// Runs `f` with a [`Writer`] on the cluster at the simulation's clock.
fn write<R>(sim: &Simulation, f: impl FnOnce(&mut Writer<'_>) -> R) -> R {
    let now = sim.wall_ms();
    sim.with(|cluster| f(&mut Writer::new(cluster, now, Space::V1)))
}

/// How many requests named `name` the client sent so far.
fn sent(sim: &Simulation, name: &str) -> usize {
    let needle = format!(" {name} region=");
    sim.trace()
        .iter()
        .filter(|line| line.contains("-> #") && line.contains(&needle))
        .count()
}

/// Runs `future` to its end; panics with the trace when the simulation stops first.
fn run<F: Future>(sim: &mut Simulation, future: F) -> F::Output {
    match sim.block_on(future) {
        Ok(output) => output,
        Err(err) => panic!("{err}\n{}", sim.trace().join("\n")),
    }
}

fn ok<T>(sim: &Simulation, what: &str, result: Result<T, Error>) -> T {
    result.unwrap_or_else(|err| panic!("{what}: {err}\n{}", sim.trace().join("\n")))
}

fn timestamp(sim: &mut Simulation) -> Timestamp {
    let client = sim.client().clone();
    let result = run(sim, async move { client.current_timestamp().await });
    ok(sim, "timestamp", result)
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The wall-clock millisecond at which a lock of transaction `start_ts` with `ttl_ms`
/// expires (TiKV judges by the physical part of the timestamps).
fn expiry_ms(start_ts: u64, ttl_ms: u64) -> u64 {
    (start_ts >> 18) + ttl_ms
}

/// A read blocked by a live lock TiKV will not push (`min_commit_ts` 0, an old client's)
/// waits with `txnLockFast` backoff, bounded by the time the lock has left, and reads the old
/// value once the lock expired and its status check rolled the transaction back: it ends
/// after the expiry, soon after it, and without hammering the store while it waits.
///
/// The read starts 1.5 s into the lock's 2 s, so the timestamp its status checks reuse
/// (client-go's low-resolution timestamp, renewed every 2 s) is still young when the lock
/// expires: TiKV, judging by it, calls the lock alive while this client's clock calls it
/// expired. This found the client re-reading without pause for the rest of those 2 s
/// (hundreds of status checks); it now checks again at a fresh timestamp.
#[test]
fn read_waits_for_a_live_lock_then_reads_once_it_expires() {
    for seed in seeds(&[1, 2, 3]).unwrap_or_else(|err| panic!("{err}")) {
        let mut sim = cluster(seed);
        let ttl_ms = 2_000;
        let start_ts = write(&sim, |w| {
            w.put(&[("k", "old")]);
            let start_ts = w.ts();
            w.prewrite(
                &Prewrite::new(start_ts, "k")
                    .put("k", "new")
                    .ttl(ttl_ms)
                    .min_commit_ts(0),
            );
            start_ts
        });
        if let Err(err) = sim.sleep(Duration::from_millis(1_500)) {
            panic!("{err}");
        }
        let ts = timestamp(&mut sim);
        let snapshot = sim.client().snapshot(ts);
        let checks_before = sent(&sim, "KvCheckTxnStatus");
        let value = run(&mut sim, snapshot.get("k"));
        assert_eq!(ok(&sim, "get", value), Some(b("old")), "seed {seed}");
        let ended = sim.wall_ms();
        let expiry = expiry_ms(start_ts, ttl_ms);
        assert!(
            ended >= expiry,
            "seed {seed}: read ended at {ended}, before {expiry}"
        );
        assert!(
            ended < expiry + 100,
            "seed {seed}: read ended {} ms after the expiry\n{}",
            ended - expiry,
            sim.trace().join("\n")
        );
        let checks = sent(&sim, "KvCheckTxnStatus") - checks_before;
        assert!(
            (2..=20).contains(&checks),
            "seed {seed}: {checks} status checks\n{}",
            sim.trace().join("\n")
        );
        let status = write(&sim, |w| w.check_txn_status(b"k", start_ts, 0, false));
        assert_eq!(
            status.action,
            kvrpcpb::Action::NoAction as i32,
            "rolled back"
        );
    }
}

/// Runs the simulation until `future` completes or virtual time reaches `at`; returns its
/// output if it completed. The future is kept (pinned by the caller) to be driven further.
fn run_until<F: Future + Unpin>(
    sim: &mut Simulation,
    future: &mut F,
    at: tikv_core::Time,
) -> Option<F::Output> {
    let deadline = sim.runtime().executor().sleep_until(at);
    let raced = futures_util::future::select(future, deadline);
    match run(sim, raced) {
        futures_util::future::Either::Left((output, _)) => Some(output),
        futures_util::future::Either::Right(_) => None,
    }
}

/// A read blocked by a live async-commit lock (which TiKV never pushes: its commit
/// timestamp is decided by its locks) waits until the lock expired by this client's clock,
/// then recovers the transaction through CheckSecondaryLocks: every lock is there, so it
/// commits at the largest `min_commit_ts`, below the read's timestamp, and the read sees
/// the new values.
#[test]
fn read_waits_for_a_live_async_commit_lock_then_reads_the_recovered_commit() {
    for seed in seeds(&[1, 2]).unwrap_or_else(|err| panic!("{err}")) {
        let mut sim = cluster(seed);
        sim.with(|cluster| {
            let boundary = tikv_proto::codec::encode_bytes(b"s");
            if let Err(err) = cluster.cluster.split_at(&boundary) {
                panic!("{err}");
            }
        });
        let ttl_ms = 1_000;
        let (start_ts, commit_ts) = write(&sim, |w| {
            w.put(&[("p", "old"), ("s", "old")]);
            let start_ts = w.ts();
            let done = w.prewrite(
                &Prewrite::new(start_ts, "p")
                    .put("p", "new")
                    .put("s", "new")
                    .ttl(ttl_ms)
                    .async_commit(),
            );
            (start_ts, done.min_commit_ts)
        });
        let ts = timestamp(&mut sim);
        assert!(commit_ts < ts.version());
        let snapshot = sim.client().snapshot(ts);
        let value = run(&mut sim, snapshot.get_with_commit_ts("s"));
        assert_eq!(
            ok(&sim, "get", value),
            Some((b("new"), Timestamp::from_version(commit_ts))),
            "seed {seed}"
        );
        let ended = sim.wall_ms();
        let expiry = expiry_ms(start_ts, ttl_ms);
        assert!(
            (expiry..expiry + 100).contains(&ended),
            "seed {seed}: ended at {ended}, expiry {expiry}"
        );
        assert!(sent(&sim, "KvCheckSecondaryLocks") >= 1);
        let value = run(&mut sim, snapshot.get("p"));
        assert_eq!(ok(&sim, "get", value), Some(b("new")));
    }
}

/// A read waiting for a live lock ends as soon as the lock's owner commits (at a timestamp
/// after the read's, as any commit after the read began must be): the read finds the
/// transaction committed after it and reads the old value, long before the TTL runs out.
#[test]
fn read_of_a_live_lock_ends_when_its_owner_commits() {
    let mut sim = cluster(1);
    let start_ts = write(&sim, |w| {
        w.put(&[("k", "old")]);
        let start_ts = w.ts();
        w.prewrite(
            &Prewrite::new(start_ts, "k")
                .put("k", "new")
                .ttl(60_000)
                .min_commit_ts(0),
        );
        start_ts
    });
    let ts = timestamp(&mut sim);
    let snapshot = sim.client().snapshot(ts);
    let mut read = Box::pin(snapshot.get("k"));
    let commit_at = sim.now() + Duration::from_millis(300);
    assert!(
        run_until(&mut sim, &mut read, commit_at).is_none(),
        "the read did not wait"
    );
    let commit_ts = write(&sim, |w| {
        let commit_ts = w.ts();
        w.commit(start_ts, &["k"], commit_ts);
        commit_ts
    });
    assert!(commit_ts > ts.version());
    let value = run(&mut sim, read);
    assert_eq!(ok(&sim, "get", value), Some(b("old")));
    let waited = sim.wall_ms() - (start_ts >> 18);
    assert!(waited < 1_000, "the read waited {waited} ms");
    let later = timestamp(&mut sim);
    let latest = sim.client().snapshot(later);
    let value = run(&mut sim, latest.get("k"));
    assert_eq!(ok(&sim, "get", value), Some(b("new")));
}

/// Ports `TestRetryMaxTsPointGetSkipLock` (snapshot_fail_test.go): a point get at the
/// latest timestamp waits only for the first lock it meets. It meets an expired
/// async-commit transaction's lock and resolves it (the transaction commits); before it
/// reads again another async-commit transaction locks the key; the read skips that lock
/// and returns the first transaction's value.
///
/// Go pauses the read before its second request with a failpoint; here the cluster holds
/// the second Get for 100 ms (an injected delay) while the second transaction prewrites.
#[test]
fn test_retry_max_ts_point_get_skip_lock() {
    let mut sim = cluster(1);
    let first = write(&sim, |w| {
        let start_ts = w.ts();
        w.prewrite(
            &Prewrite::new(start_ts, "k1")
                .put("k1", "v1")
                .put("k2", "v2")
                .ttl(1)
                .async_commit(),
        );
        start_ts
    });
    if let Err(err) = sim.sleep(Duration::from_millis(200)) {
        panic!("{err}");
    }
    let snapshot = sim.client().snapshot(Timestamp::MAX);
    let mut read = Box::pin(snapshot.get("k2"));
    // Step until the resolution's ResolveLock is out, then hold the next Get.
    let mut steps = 0;
    while sent(&sim, "KvResolveLock") == 0 {
        steps += 1;
        assert!(steps < 1_000, "no ResolveLock\n{}", sim.trace().join("\n"));
        let at = sim.now() + Duration::from_millis(1);
        assert!(
            run_until(&mut sim, &mut read, at).is_none(),
            "the read ended early"
        );
    }
    sim.with(|cluster| {
        cluster.faults.inject(tikv_sim::faults::FaultRule::command(
            "KvGet",
            tikv_sim::faults::FaultAction::Delay(100),
            1,
        ));
    });
    while sent(&sim, "KvGet") < 2 {
        let at = sim.now() + Duration::from_millis(1);
        assert!(
            run_until(&mut sim, &mut read, at).is_none(),
            "the read ended early"
        );
    }
    let at = sim.now() + Duration::from_millis(10);
    assert!(
        run_until(&mut sim, &mut read, at).is_none(),
        "the Get was not held"
    );
    let second = write(&sim, |w| {
        let start_ts = w.ts();
        w.prewrite(
            &Prewrite::new(start_ts, "k1")
                .put("k1", "v3")
                .put("k2", "v4")
                .ttl(60_000)
                .async_commit(),
        );
        start_ts
    });
    let value = run(&mut sim, read);
    assert_eq!(ok(&sim, "get", value), Some(b("v2")));
    // The second transaction was skipped, not resolved.
    assert!(write(&sim, |w| w.is_locked(b"k2")));
    let status = write(&sim, |w| w.check_txn_status(b"k1", first, 0, false));
    assert!(status.commit_version > 0, "the first transaction committed");
    let checks = sent(&sim, "KvCheckTxnStatus");
    assert_eq!(checks, 1, "the second transaction's lock was never checked");
    assert!(second > first);
}

/// Ports `TestCheckTxnStatusNoWait` (lock_test.go), the resolver part: a lock whose primary
/// has not been prewritten yet (TxnNotFound) is checked again after a `txnNotFound` backoff,
/// and once the primary's prewrite arrived the transaction is alive; a lock whose primary
/// never arrives is checked until the lock expired, then rolled back on the primary
/// (LockNotExistRollback), and the primary holds a rollback record afterwards.
///
/// Go's concurrent prewrite of the primary becomes a prewrite 50 ms into the resolution.
#[test]
fn test_check_txn_status_no_wait() {
    let mut sim = cluster(1);
    let (primary, second) = (b"key".as_slice(), b"second".as_slice());
    let start_ts = write(&sim, |w| {
        let start_ts = w.ts();
        w.prewrite(
            &Prewrite::new(start_ts, primary)
                .put(second, "xxx")
                .ttl(20_000),
        );
        start_ts
    });
    let current_ts = timestamp(&mut sim);
    // The resolver's status check of a transaction without its primary lock.
    let status = write(&sim, |w| {
        w.check_txn_status(primary, start_ts, current_ts.version(), false)
    });
    assert!(
        status
            .error
            .as_ref()
            .is_some_and(|e| e.txn_not_found.is_some()),
        "{status:?}"
    );

    let lock = LockInfo {
        key: b(std::str::from_utf8(second).unwrap_or_default()),
        primary: Bytes::copy_from_slice(primary),
        lock_ts: Timestamp::from_version(start_ts),
        ttl_ms: 100_000,
        ..LockInfo::from_proto(&kvrpcpb::LockInfo::default())
    };
    let client = sim.client().clone();
    let mut resolve = Box::pin(async move { client.resolve_locks(current_ts, vec![lock]).await });
    let at = sim.now() + Duration::from_millis(50);
    assert!(
        run_until(&mut sim, &mut resolve, at).is_none(),
        "the resolver did not wait"
    );
    write(&sim, |w| {
        w.prewrite(
            &Prewrite::new(start_ts, primary)
                .put(primary, "value")
                .ttl(20_000),
        );
    });
    let outcome = run(&mut sim, resolve);
    let outcome = ok(&sim, "resolve", outcome);
    assert!(outcome.ms_before_expiry > 0, "the transaction is alive");
    assert!(sent(&sim, "KvCheckTxnStatus") >= 2);
    write(&sim, |w| w.rollback(start_ts, &[primary, second]));

    // A primary that never arrives: checked until the lock expires, then rolled back.
    let start_ts = write(&sim, |w| w.ts());
    let began = sim.wall_ms();
    let lock = LockInfo {
        key: Bytes::copy_from_slice(second),
        primary: b("key_not_exist"),
        lock_ts: Timestamp::from_version(start_ts),
        ttl_ms: 1_000,
        ..LockInfo::from_proto(&kvrpcpb::LockInfo::default())
    };
    let checks_before = sent(&sim, "KvCheckTxnStatus");
    let client = sim.client().clone();
    let outcome = run(&mut sim, async move {
        client.resolve_locks(current_ts, vec![lock]).await
    });
    let outcome = ok(&sim, "resolve", outcome);
    assert_eq!(outcome.ms_before_expiry, 0);
    assert!(
        sim.wall_ms() >= expiry_ms(start_ts, 1_000),
        "rolled back {} ms after it began, before the lock expired",
        sim.wall_ms() - began
    );
    assert!(sent(&sim, "KvCheckTxnStatus") - checks_before >= 2);
    let status = write(&sim, |w| {
        w.check_txn_status(b"key_not_exist", start_ts, 0, false)
    });
    assert!(status.error.is_none(), "{status:?}");
    assert_eq!(
        status.action,
        kvrpcpb::Action::NoAction as i32,
        "a rollback record"
    );
}

/// The trace of a read that meets the secondary lock of a transaction whose primary
/// committed: the Get, one status check, a ResolveLock of the key with the commit
/// timestamp, and the Get again.
#[test]
fn trace_of_a_read_resolving_a_committed_lock() {
    let mut sim = cluster(1);
    write(&sim, |w| {
        w.lock_key(b"s", b"new", b"p", b"new", 3_000, true, false);
    });
    let ts = timestamp(&mut sim);
    sim.take_trace();
    let snapshot = sim.client().snapshot(ts);
    let value = run(&mut sim, snapshot.get("s"));
    assert_eq!(ok(&sim, "get", value), Some(b("new")));
    insta::assert_snapshot!(sim.trace().join("\n"));
}

/// A scan over two regions meets a live lock TiKV will not push in the second: the first
/// region's rows are kept, the scan waits until the lock expired, and reads on from the
/// same place (in batches of 2, so the lock sits in the middle of a batch).
#[test]
fn scan_waits_for_a_live_lock_in_its_second_region() {
    let mut sim = cluster(1);
    sim.with(|cluster| {
        let boundary = tikv_proto::codec::encode_bytes(b"m");
        if let Err(err) = cluster.cluster.split_at(&boundary) {
            panic!("{err}");
        }
    });
    let ttl_ms = 800;
    let start_ts = write(&sim, |w| {
        w.put(&[
            ("a", "a0"),
            ("b", "b0"),
            ("n", "n0"),
            ("o", "o0"),
            ("p", "p0"),
        ]);
        let start_ts = w.ts();
        w.prewrite(
            &Prewrite::new(start_ts, "o")
                .put("o", "o1")
                .ttl(ttl_ms)
                .min_commit_ts(0),
        );
        start_ts
    });
    let ts = timestamp(&mut sim);
    let snapshot = sim.client().snapshot(ts);
    let scanned = run(&mut sim, async {
        let mut scanner = snapshot.scanner("a"..="z", 2);
        let mut all = Vec::new();
        while let Some(batch) = scanner.next_batch().await? {
            all.extend(batch);
        }
        Ok::<_, Error>(all)
    });
    let pairs: Vec<(Bytes, Bytes)> = ok(&sim, "scan", scanned)
        .into_iter()
        .map(|pair| (pair.key, pair.value))
        .collect();
    let expected: Vec<(Bytes, Bytes)> = [
        ("a", "a0"),
        ("b", "b0"),
        ("n", "n0"),
        ("o", "o0"),
        ("p", "p0"),
    ]
    .iter()
    .map(|(k, v)| (b(k), b(v)))
    .collect();
    assert_eq!(pairs, expected);
    let ended = sim.wall_ms();
    let expiry = expiry_ms(start_ts, ttl_ms);
    assert!(
        (expiry..expiry + 100).contains(&ended),
        "ended at {ended}, expiry {expiry}"
    );
}

/// The region of a locked key splits while the read is resolving the lock (the status check
/// is held 50 ms): the read's second Get meets EpochNotMatch, routes again and reads the
/// committed value.
#[test]
fn read_routes_again_when_the_region_splits_during_resolution() {
    let mut sim = cluster(1);
    write(&sim, |w| {
        w.put(&[("k", "old")]);
        w.lock_key(b"k", b"new", b"p", b"new", 3_000, true, false);
    });
    let ts = timestamp(&mut sim);
    sim.with(|cluster| {
        cluster.faults.inject(tikv_sim::faults::FaultRule::command(
            "KvCheckTxnStatus",
            tikv_sim::faults::FaultAction::Delay(50),
            1,
        ));
    });
    let snapshot = sim.client().snapshot(ts);
    let mut read = Box::pin(snapshot.get("k"));
    let at = sim.now() + Duration::from_millis(20);
    assert!(run_until(&mut sim, &mut read, at).is_none());
    assert_eq!(sent(&sim, "KvCheckTxnStatus"), 1);
    sim.with(|cluster| {
        let boundary = tikv_proto::codec::encode_bytes(b"j");
        if let Err(err) = cluster.cluster.split_at(&boundary) {
            panic!("{err}");
        }
    });
    let value = run(&mut sim, read);
    assert_eq!(ok(&sim, "get", value), Some(b("new")));
    let trace = sim.trace().join("\n");
    assert!(trace.contains("EpochNotMatch"), "{trace}");
}

/// What happens to one transaction of [`random_reads_match_a_model_of_the_history`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Every key committed.
    Committed,
    /// The primary committed, the secondaries left locked.
    PrimaryCommitted,
    /// Rolled back.
    RolledBack,
    /// Left locked with TTL 1 ms: rolled back by whoever meets it.
    Expired,
    /// Left locked with async commit and TTL 1 ms, every lock there: committed at its
    /// `min_commit_ts` by whoever meets it.
    AsyncExpired,
    /// Left locked for a minute: pushed past readers, invisible to them.
    Alive,
}

/// Random transactions over 20 keys in three regions, each with a random fate (committed,
/// primary only committed, rolled back, expired, expired async commit, alive), then rounds
/// of concurrent random reads (gets, batch gets, scans forward and reverse, batched
/// scanners) at timestamps taken between the transactions and at the end. Every read must
/// see exactly the versions a model of the history says were committed at or before its
/// timestamp, however the locks it meets are resolved and in whatever order.
#[test]
fn random_reads_match_a_model_of_the_history() {
    for seed in seeds(&[1, 2, 3, 4, 5]).unwrap_or_else(|err| panic!("{err}")) {
        random_history_then_reads(seed, false);
    }
}

/// The same, while the chaos schedule splits and merges regions, moves leaders, stops and
/// restarts stores and injects region errors under the reads.
#[test]
fn random_reads_match_a_model_of_the_history_under_chaos() {
    for seed in seeds(&[1, 2, 3]).unwrap_or_else(|err| panic!("{err}")) {
        random_history_then_reads(seed, true);
    }
}

fn random_history_then_reads(seed: u64, chaos: bool) {
    use std::collections::{BTreeMap, BTreeSet};
    use tikv_core::rand::Rng;
    {
        let mut sim = cluster(seed);
        sim.with(|cluster| {
            for split in [b"k07".as_slice(), b"k14".as_slice()] {
                if let Err(err) = cluster
                    .cluster
                    .split_at(&tikv_proto::codec::encode_bytes(split))
                {
                    panic!("{err}");
                }
            }
        });
        let mut rng = Rng::new(seed);
        let keys: Vec<String> = (0..20).map(|i| format!("k{i:02}")).collect();
        // Committed versions per key: (commit_ts, value).
        let mut versions: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
        let mut locked: BTreeSet<String> = BTreeSet::new();
        let mut read_points: Vec<u64> = Vec::new();
        let fates = [
            Fate::Committed,
            Fate::Committed,
            Fate::PrimaryCommitted,
            Fate::RolledBack,
            Fate::Expired,
            Fate::AsyncExpired,
            Fate::Alive,
        ];
        for txn in 0..30 {
            let free: Vec<&String> = keys.iter().filter(|k| !locked.contains(*k)).collect();
            if free.is_empty() {
                break;
            }
            let count = usize::try_from(rng.between(1, 4))
                .unwrap_or(1)
                .min(free.len());
            let mut chosen: Vec<String> = Vec::new();
            while chosen.len() < count {
                let key = free[usize::try_from(rng.below(free.len() as u64)).unwrap_or(0)];
                if !chosen.contains(key) {
                    chosen.push(key.clone());
                }
            }
            let fate = fates[usize::try_from(rng.below(fates.len() as u64)).unwrap_or(0)];
            let value = format!("t{txn}");
            let primary = chosen[0].clone();
            write(&sim, |w| {
                let start_ts = w.ts();
                let mut prewrite = Prewrite::new(start_ts, &primary).ttl(match fate {
                    Fate::Expired | Fate::AsyncExpired => 1,
                    _ => 60_000,
                });
                for key in &chosen {
                    prewrite = prewrite.put(key, &value);
                }
                if fate == Fate::AsyncExpired {
                    prewrite = prewrite.async_commit();
                }
                let done = w.prewrite(&prewrite);
                match fate {
                    Fate::Committed | Fate::PrimaryCommitted => {
                        let commit_ts = w.ts();
                        let committed: Vec<&String> = if fate == Fate::Committed {
                            chosen.iter().collect()
                        } else {
                            vec![&primary]
                        };
                        w.commit(start_ts, &committed, commit_ts);
                        for key in &chosen {
                            versions
                                .entry(key.clone())
                                .or_default()
                                .push((commit_ts, value.clone()));
                        }
                        if fate == Fate::PrimaryCommitted {
                            locked.extend(chosen.iter().skip(1).cloned());
                        }
                    }
                    Fate::RolledBack => w.rollback(start_ts, &chosen),
                    Fate::AsyncExpired => {
                        for key in &chosen {
                            versions
                                .entry(key.clone())
                                .or_default()
                                .push((done.min_commit_ts, value.clone()));
                        }
                        locked.extend(chosen.iter().cloned());
                    }
                    Fate::Expired | Fate::Alive => locked.extend(chosen.iter().cloned()),
                }
                read_points.push(w.ts());
            });
        }
        // Every short TTL runs out.
        if let Err(err) = sim.sleep(Duration::from_millis(10)) {
            panic!("{err}");
        }
        read_points.push(timestamp(&mut sim).version());
        if chaos {
            sim.start_chaos(tikv_tests::simulation::Chaos {
                split_keys: ["k03", "k05", "k10", "k12", "k17"]
                    .iter()
                    .map(|k| Bytes::from(tikv_proto::codec::encode_bytes(k.as_bytes())))
                    .collect(),
                ..tikv_tests::simulation::Chaos::default()
            });
        }

        let model = |ts: u64, key: &str| -> Option<Bytes> {
            versions.get(key).and_then(|list| {
                list.iter()
                    .filter(|(commit_ts, _)| *commit_ts <= ts)
                    .max_by_key(|(commit_ts, _)| *commit_ts)
                    .map(|(_, value)| b(value))
            })
        };
        for round in 0..8 {
            let mut reads = Vec::new();
            for _ in 0..6 {
                let ts =
                    read_points[usize::try_from(rng.below(read_points.len() as u64)).unwrap_or(0)];
                let lo = usize::try_from(rng.below(20)).unwrap_or(0);
                let hi = usize::try_from(rng.between(lo as u64 + 1, 20)).unwrap_or(20);
                let kind = rng.below(5);
                reads.push((ts, lo, hi, kind));
            }
            let client = sim.client().clone();
            let keys_ref = &keys;
            let results = run(
                &mut sim,
                futures_util::future::join_all(reads.iter().map(|&(ts, lo, hi, kind)| {
                    let snapshot = client.snapshot(Timestamp::from_version(ts));
                    async move {
                        let range: Vec<Bytes> = keys_ref[lo..hi].iter().map(|k| b(k)).collect();
                        let start = range[0].clone();
                        let end = keys_ref.get(hi).map_or_else(|| b("l"), |k| b(k));
                        let pairs: Result<Vec<(Bytes, Bytes)>, Error> = match kind {
                            0 => snapshot
                                .get(start.clone())
                                .await
                                .map(|v| v.map(|v| (start.clone(), v)).into_iter().collect()),
                            1 => snapshot
                                .batch_get(range.clone())
                                .await
                                .map(|p| p.into_iter().map(|p| (p.key, p.value)).collect()),
                            2 => snapshot
                                .scan(start.clone()..end.clone(), 100)
                                .await
                                .map(|p| p.into_iter().map(|p| (p.key, p.value)).collect()),
                            3 => snapshot
                                .scan_reverse(start.clone()..end.clone(), 100)
                                .await
                                .map(|p| p.into_iter().map(|p| (p.key, p.value)).collect()),
                            _ => {
                                let mut scanner = snapshot.scanner(start.clone()..end.clone(), 3);
                                let mut all = Vec::new();
                                loop {
                                    match scanner.next_batch().await {
                                        Ok(Some(batch)) => {
                                            all.extend(batch.into_iter().map(|p| (p.key, p.value)));
                                        }
                                        Ok(None) => break Ok(all),
                                        Err(err) => break Err(err),
                                    }
                                }
                            }
                        };
                        pairs
                    }
                })),
            );
            for ((ts, lo, hi, kind), result) in reads.iter().zip(results) {
                let got = ok(&sim, "read", result);
                let span: &[String] = if *kind == 0 {
                    &keys[*lo..=*lo]
                } else {
                    &keys[*lo..*hi]
                };
                let mut expected: Vec<(Bytes, Bytes)> = span
                    .iter()
                    .filter_map(|k| model(*ts, k).map(|v| (b(k), v)))
                    .collect();
                if *kind == 3 {
                    expected.reverse();
                }
                assert_eq!(
                    got, expected,
                    "seed {seed} round {round}: read kind {kind} of [{lo}, {hi}) at {ts}"
                );
            }
        }
    }
}
