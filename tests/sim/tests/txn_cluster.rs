//! Transactions at the level above one store's MVCC rules: each store's concurrency manager
//! (`max_ts`, its sync after a leadership change and its limit), commands scoped to the
//! region that serves them, in-memory pessimistic locks lost with their leader, region terms,
//! writes whose outcome is undetermined, and the storage checks on transactional keys. Each
//! test names the TiKV function whose behaviour it follows.

use bytes::Bytes;
use tikv_proto::codec::encode_bytes;
use tikv_proto::errorpb;
use tikv_proto::kvrpcpb::{self, ApiVersion, IsolationLevel, Op};
use tikv_proto::tikvpb::batch_commands_request::request::Cmd as Req;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as Resp;
use tikv_sim::faults::{FaultAction, FaultRule};
use tikv_sim::tikv::{Execution, TikvRequest, TikvResponse};
use tikv_sim::{Sim, SimConfig};

const NOW_MS: u64 = 1_700_000_000_000;

fn sim() -> Sim {
    sim_with(ApiVersion::V1)
}

fn sim_with(api_version: ApiVersion) -> Sim {
    Sim::new(SimConfig {
        api_version,
        ..SimConfig::default()
    })
    .unwrap_or_else(|err| panic!("{err}"))
}

fn b(key: &str) -> Bytes {
    Bytes::copy_from_slice(key.as_bytes())
}

/// A fresh timestamp from the simulated PD.
fn ts(sim: &mut Sim) -> u64 {
    sim.cluster
        .allocate_ts(1, NOW_MS)
        .unwrap_or_else(|err| panic!("{err}"))
        .to_u64()
}

/// The leader store and a context for the region holding transactional `key`.
fn context(sim: &Sim, key: &str) -> (u64, kvrpcpb::Context) {
    let (store, mut ctx) = sim
        .leader_context(&encode_bytes(key.as_bytes()))
        .unwrap_or_else(|| panic!("no leader for {key}"));
    // Clients stamp V1TTL stores' requests V1.
    ctx.api_version = match sim.api_version() {
        ApiVersion::V1ttl => ApiVersion::V1,
        other => other,
    } as i32;
    (store, ctx)
}

/// Splits the transactional key space at `key`; returns (left region, right region).
fn split(sim: &mut Sim, key: &str) -> (u64, u64) {
    let right = sim
        .cluster
        .region_by_key(&encode_bytes(key.as_bytes()))
        .map(|region| region.id)
        .unwrap_or_else(|| panic!("no region for {key}"));
    let left = sim
        .cluster
        .split_at(&encode_bytes(key.as_bytes()))
        .unwrap_or_else(|err| panic!("{err}"))
        .unwrap_or_else(|| panic!("{key} is already a boundary"));
    (left, right)
}

fn run(sim: &mut Sim, store: u64, cmd: Req) -> Resp {
    match sim.execute(store, TikvRequest::Batch(cmd), NOW_MS) {
        Execution::Done(TikvResponse::Batch(resp)) => resp,
        other => panic!("unexpected {other:?}"),
    }
}

fn get(
    sim: &mut Sim,
    key: &str,
    version: u64,
    ctx_edit: impl FnOnce(&mut kvrpcpb::Context),
) -> kvrpcpb::GetResponse {
    let (store, mut ctx) = context(sim, key);
    ctx_edit(&mut ctx);
    let cmd = Req::Get(kvrpcpb::GetRequest {
        context: Some(ctx),
        key: b(key),
        version,
        ..Default::default()
    });
    match run(sim, store, cmd) {
        Resp::Get(resp) => resp,
        other => panic!("{other:?}"),
    }
}

fn put(key: &str, value: &str) -> kvrpcpb::Mutation {
    kvrpcpb::Mutation {
        op: Op::Put as i32,
        key: b(key),
        value: b(value),
        ..Default::default()
    }
}

/// A prewrite of `keys` (all in one region) as the given transaction.
fn prewrite(
    sim: &mut Sim,
    keys: &[&str],
    primary: &str,
    start_ts: u64,
    edit: impl FnOnce(&mut kvrpcpb::PrewriteRequest),
) -> kvrpcpb::PrewriteResponse {
    let (store, ctx) = context(sim, keys[0]);
    let mut req = kvrpcpb::PrewriteRequest {
        context: Some(ctx),
        mutations: keys.iter().map(|key| put(key, "v")).collect(),
        primary_lock: b(primary),
        start_version: start_ts,
        lock_ttl: 3_000,
        min_commit_ts: start_ts + 1,
        ..Default::default()
    };
    edit(&mut req);
    match run(sim, store, Req::Prewrite(req)) {
        Resp::Prewrite(resp) => resp,
        other => panic!("{other:?}"),
    }
}

fn commit(sim: &mut Sim, keys: &[&str], start_ts: u64, commit_ts: u64) -> kvrpcpb::CommitResponse {
    let (store, ctx) = context(sim, keys[0]);
    let req = kvrpcpb::CommitRequest {
        context: Some(ctx),
        keys: keys.iter().map(|key| b(key)).collect(),
        start_version: start_ts,
        commit_version: commit_ts,
        ..Default::default()
    };
    match run(sim, store, Req::Commit(req)) {
        Resp::Commit(resp) => resp,
        other => panic!("{other:?}"),
    }
}

fn pessimistic_lock(
    sim: &mut Sim,
    keys: &[&str],
    primary: &str,
    start_ts: u64,
    for_update_ts: u64,
) -> kvrpcpb::PessimisticLockResponse {
    let (store, ctx) = context(sim, keys[0]);
    let req = kvrpcpb::PessimisticLockRequest {
        context: Some(ctx),
        mutations: keys
            .iter()
            .map(|key| kvrpcpb::Mutation {
                op: Op::PessimisticLock as i32,
                key: b(key),
                ..Default::default()
            })
            .collect(),
        primary_lock: b(primary),
        start_version: start_ts,
        for_update_ts,
        lock_ttl: 3_000,
        wait_timeout: -1,
        ..Default::default()
    };
    match run(sim, store, Req::PessimisticLock(req)) {
        Resp::PessimisticLock(resp) => resp,
        other => panic!("{other:?}"),
    }
}

/// The lock on `key` as ScanLock reports it (at the latest version).
fn lock_on(sim: &mut Sim, key: &str) -> Option<kvrpcpb::LockInfo> {
    let (store, ctx) = context(sim, key);
    let req = kvrpcpb::ScanLockRequest {
        context: Some(ctx),
        max_version: u64::MAX,
        start_key: b(key),
        limit: 1,
        ..Default::default()
    };
    match run(sim, store, Req::ScanLock(req)) {
        Resp::ScanLock(resp) => resp
            .locks
            .into_iter()
            .find(|lock| lock.key == key.as_bytes()),
        other => panic!("{other:?}"),
    }
}

fn region_error_of(resp: &Resp) -> Option<&errorpb::Error> {
    match resp {
        Resp::Get(r) => r.region_error.as_deref(),
        Resp::Prewrite(r) => r.region_error.as_deref(),
        Resp::Commit(r) => r.region_error.as_deref(),
        Resp::CheckTxnStatus(r) => r.region_error.as_deref(),
        Resp::PessimisticLock(r) => r.region_error.as_deref(),
        _ => None,
    }
}

// ---- 1. Per-store concurrency manager ----

/// Follows TiKV's `ConcurrencyManager::update_max_ts` (one manager per store) and
/// `async_commit_timestamps` in `txn/actions/prewrite.rs`: a read served by one store raises
/// only that store's `max_ts`, so the two regions of an async-commit transaction answer
/// different `min_commit_ts`, and committing at the smaller one is refused where the read
/// happened. Only the maximum over all responses commits.
#[test]
fn max_ts_is_kept_per_store_by_its_concurrency_manager() {
    let mut sim = sim();
    let (left, right) = split(&mut sim, "m");
    sim.cluster.transfer_leader(right, 2).unwrap();
    assert_eq!(context(&sim, "a").0, 1);
    assert_eq!(context(&sim, "z").0, 2);
    // Let store 2 sync as the new leader before the transaction starts.
    let start_ts = ts(&mut sim);
    get(&mut sim, "z", start_ts, |_| {});
    let start_ts = ts(&mut sim);
    // A later reader reads "z" on store 2 only.
    let read_ts = ts(&mut sim);
    assert!(get(&mut sim, "z", read_ts, |_| {}).not_found);
    assert_eq!(sim.concurrency.max_ts(2), read_ts);
    assert!(
        sim.concurrency.max_ts(1) < start_ts,
        "store 1 never saw the read"
    );

    let async_commit = |secondaries: Vec<Bytes>| {
        move |req: &mut kvrpcpb::PrewriteRequest| {
            req.use_async_commit = true;
            req.secondaries = secondaries;
        }
    };
    let on_left = prewrite(&mut sim, &["a"], "a", start_ts, async_commit(vec![b("z")]));
    let on_right = prewrite(&mut sim, &["z"], "a", start_ts, async_commit(Vec::new()));
    assert!(on_left.errors.is_empty() && on_right.errors.is_empty());
    assert_eq!(
        on_left.min_commit_ts,
        start_ts + 1,
        "region {left} on store 1"
    );
    assert_eq!(
        on_right.min_commit_ts,
        read_ts + 1,
        "region {right} on store 2"
    );

    // A client that commits at one response's value breaks the read on store 2.
    let too_early = commit(&mut sim, &["z"], start_ts, on_left.min_commit_ts);
    let expired = too_early.error.and_then(|e| e.commit_ts_expired);
    assert_eq!(expired.map(|e| e.min_commit_ts), Some(read_ts + 1));
    let commit_ts = on_left.min_commit_ts.max(on_right.min_commit_ts);
    assert!(
        commit(&mut sim, &["a"], start_ts, commit_ts)
            .error
            .is_none()
    );
    assert!(
        commit(&mut sim, &["z"], start_ts, commit_ts)
            .error
            .is_none()
    );
}

/// Follows TiKV's `prepare_snap_ctx` (and the scan path of `Storage::scan`): every read that
/// is not a stale read raises the store's `max_ts`, whatever its isolation level, including
/// BufferBatchGet; stale reads leave it alone.
#[test]
fn every_non_stale_read_raises_max_ts() {
    let mut sim = sim();
    let first = ts(&mut sim);
    get(&mut sim, "k", first, |ctx| {
        ctx.isolation_level = IsolationLevel::Rc as i32;
    });
    assert_eq!(sim.concurrency.max_ts(1), first, "read committed raises it");

    let second = ts(&mut sim);
    let (store, ctx) = context(&sim, "k");
    run(
        &mut sim,
        store,
        Req::BufferBatchGet(kvrpcpb::BufferBatchGetRequest {
            context: Some(ctx),
            keys: vec![b("k")],
            version: second,
        }),
    );
    assert_eq!(
        sim.concurrency.max_ts(1),
        second,
        "buffer batch get raises it"
    );

    let third = ts(&mut sim);
    get(&mut sim, "k", third, |ctx| ctx.stale_read = true);
    assert_eq!(sim.concurrency.max_ts(1), second, "a stale read does not");
    assert_eq!(sim.concurrency.max_ts(2), 0, "other stores are untouched");
}

/// Follows raftstore's `Peer::require_updating_max_ts` and the prewrite command's
/// `check_max_ts_synced`: a new leader refuses async-commit and 1PC prewrites with
/// `MaxTimestampNotSynced` until it has fetched a timestamp from PD; plain 2PC prewrites go
/// through. The window stays open while the sync is held or the TSO is paused.
#[test]
fn new_leader_refuses_async_commit_until_max_ts_is_synced() {
    let mut sim = sim();
    let (_, right) = split(&mut sim, "m");
    let start_ts = ts(&mut sim);
    // The split's new region syncs with this read.
    get(&mut sim, "a", start_ts, |_| {});
    sim.concurrency.hold_max_ts_sync(true);
    sim.cluster.transfer_leader(right, 3).unwrap();
    let not_synced = |resp: &kvrpcpb::PrewriteResponse| {
        resp.region_error
            .as_ref()
            .is_some_and(|e| e.max_timestamp_not_synced.is_some())
    };
    let async_commit = |req: &mut kvrpcpb::PrewriteRequest| req.use_async_commit = true;
    assert!(not_synced(&prewrite(
        &mut sim,
        &["x"],
        "x",
        start_ts,
        async_commit
    )));
    let one_pc = |req: &mut kvrpcpb::PrewriteRequest| req.try_one_pc = true;
    assert!(not_synced(&prewrite(
        &mut sim,
        &["x"],
        "x",
        start_ts,
        one_pc
    )));
    assert!(!sim.concurrency.is_max_ts_synced(right));
    // The old leader's region on store 1 is not affected, nor is plain 2PC.
    assert!(!not_synced(&prewrite(
        &mut sim,
        &["b"],
        "b",
        start_ts,
        async_commit
    )));
    let two_pc = prewrite(&mut sim, &["y"], "y", start_ts, |_| {});
    assert!(two_pc.region_error.is_none() && two_pc.errors.is_empty());

    // Released, but PD's TSO is down: still not synced.
    sim.concurrency.hold_max_ts_sync(false);
    sim.cluster.set_tso_paused(true);
    assert!(not_synced(&prewrite(
        &mut sim,
        &["x"],
        "x",
        start_ts,
        async_commit
    )));
    sim.cluster.set_tso_paused(false);
    let synced = prewrite(&mut sim, &["x"], "x", start_ts, async_commit);
    assert!(synced.region_error.is_none() && synced.errors.is_empty());
    assert!(sim.concurrency.is_max_ts_synced(right));
    // The sync fetched a timestamp newer than anything handed out before.
    assert!(synced.min_commit_ts > start_ts + 1);
    assert!(sim.concurrency.max_ts(3) >= synced.min_commit_ts - 1);
}

/// Follows raftstore: new regions from a split campaign at once and a merge target updates
/// its `max_ts` after CommitMerge (`require_updating_max_ts` in `on_ready_commit_merge`), so
/// both need a sync; so do the regions of a restarted store, whose leaders are re-elected
/// with a higher term.
#[test]
fn split_merge_and_restart_need_a_max_ts_sync() {
    let mut sim = sim();
    sim.concurrency.hold_max_ts_sync(true);
    let (left, right) = split(&mut sim, "m");
    let start_ts = ts(&mut sim);
    let async_commit = |req: &mut kvrpcpb::PrewriteRequest| req.use_async_commit = true;
    let region_error = |resp: kvrpcpb::PrewriteResponse| resp.region_error.map(|e| *e);
    let refused = region_error(prewrite(&mut sim, &["a"], "a", start_ts, async_commit));
    assert!(refused.is_some_and(|e| e.max_timestamp_not_synced.is_some()));
    assert!(
        sim.concurrency.is_max_ts_synced(right),
        "the derived region keeps its leader"
    );
    assert!(!sim.concurrency.is_max_ts_synced(left));
    sim.concurrency.hold_max_ts_sync(false);
    assert!(region_error(prewrite(&mut sim, &["a"], "a", start_ts, async_commit)).is_none());

    sim.concurrency.hold_max_ts_sync(true);
    sim.cluster.merge(left, right).unwrap();
    let start_ts = ts(&mut sim);
    let refused = region_error(prewrite(&mut sim, &["n"], "n", start_ts, async_commit));
    assert!(refused.is_some_and(|e| e.max_timestamp_not_synced.is_some()));
    sim.concurrency.hold_max_ts_sync(false);

    let term = sim.cluster.region(right).unwrap().term;
    sim.cluster.stop_store(1).unwrap();
    sim.cluster.restart_store(1).unwrap();
    assert_eq!(sim.cluster.region(right).unwrap().term, term + 1);
    sim.concurrency.hold_max_ts_sync(true);
    let refused = region_error(prewrite(&mut sim, &["q"], "q", start_ts, async_commit));
    assert!(refused.is_some_and(|e| e.max_timestamp_not_synced.is_some()));
}

/// Follows `ConcurrencyManager::update_max_ts` with its limit (`set_max_ts_limit`,
/// `storage.max-ts.max-drift` = 60 s, `action-on-invalid-update = "error"`): a read timestamp
/// more than the drift ahead of PD's TSO is refused with TiKV's `invalid max_ts update` region
/// error and leaves `max_ts` alone. Updates that check the request origin (CheckTxnStatus here)
/// hold non-TiDB requests to the TSO itself.
#[test]
fn max_ts_updates_past_the_tso_limit_are_refused() {
    let mut sim = sim();
    let now = ts(&mut sim);
    let ahead = |ms: u64| now + (ms << 18);
    assert!(
        get(&mut sim, "k", ahead(59_000), |_| {})
            .region_error
            .is_none()
    );
    assert_eq!(sim.concurrency.max_ts(1), ahead(59_000));
    let refused = get(&mut sim, "k", ahead(61_000), |_| {}).region_error;
    let message = refused.map(|e| e.message).unwrap_or_default();
    assert!(
        message.starts_with(&format!(
            "invalid max_ts update: {} exceeds the limit",
            ahead(61_000)
        )),
        "{message}"
    );
    assert_eq!(sim.concurrency.max_ts(1), ahead(59_000));

    let check = |sim: &mut Sim, origin: kvrpcpb::RequestOrigin| {
        let (store, mut ctx) = context(sim, "k");
        ctx.request_origin = origin as i32;
        let cmd = Req::CheckTxnStatus(kvrpcpb::CheckTxnStatusRequest {
            context: Some(ctx),
            primary_key: b("k"),
            lock_ts: now,
            caller_start_ts: ahead(1_000),
            current_ts: now,
            ..Default::default()
        });
        region_error_of(&run(sim, store, cmd)).cloned()
    };
    let exact = check(&mut sim, kvrpcpb::RequestOrigin::Unknown);
    assert!(exact.is_some_and(|e| e.message.starts_with("invalid max_ts update")));
    assert!(check(&mut sim, kvrpcpb::RequestOrigin::TiDb).is_none());
}

// ---- 2. Region-scoped commands ----

/// Follows TiKV's `ResolveLockReadPhase`, which scans the locks of the region's snapshot: a
/// ResolveLock without keys resolves the transaction's locks in the region it was sent to
/// and leaves the other regions' locks alone.
#[test]
fn resolve_lock_without_keys_resolves_only_the_regions_locks() {
    let mut sim = sim();
    split(&mut sim, "m");
    let start_ts = ts(&mut sim);
    assert!(
        prewrite(&mut sim, &["a"], "a", start_ts, |_| {})
            .errors
            .is_empty()
    );
    assert!(
        prewrite(&mut sim, &["z"], "a", start_ts, |_| {})
            .errors
            .is_empty()
    );
    let commit_ts = ts(&mut sim);
    let (store, ctx) = context(&sim, "a");
    let resp = run(
        &mut sim,
        store,
        Req::ResolveLock(kvrpcpb::ResolveLockRequest {
            context: Some(ctx),
            start_version: start_ts,
            commit_version: commit_ts,
            ..Default::default()
        }),
    );
    assert!(matches!(resp, Resp::ResolveLock(r) if r.error.is_none() && r.region_error.is_none()));
    assert!(lock_on(&mut sim, "a").is_none(), "resolved in its region");
    assert!(
        lock_on(&mut sim, "z").is_some(),
        "the other region keeps its lock"
    );
    let read_ts = ts(&mut sim);
    assert_eq!(get(&mut sim, "a", read_ts, |_| {}).value, b("v"));
}

/// Follows TiKV's `PessimisticRollbackReadPhase`: without keys, PessimisticRollback scans
/// only the region's locks of the transaction.
#[test]
fn pessimistic_rollback_without_keys_stays_in_the_region() {
    let mut sim = sim();
    split(&mut sim, "m");
    let start_ts = ts(&mut sim);
    assert!(
        pessimistic_lock(&mut sim, &["a"], "a", start_ts, start_ts)
            .errors
            .is_empty()
    );
    assert!(
        pessimistic_lock(&mut sim, &["z"], "a", start_ts, start_ts)
            .errors
            .is_empty()
    );
    let (store, ctx) = context(&sim, "z");
    run(
        &mut sim,
        store,
        Req::PessimisticRollback(kvrpcpb::PessimisticRollbackRequest {
            context: Some(ctx),
            start_version: start_ts,
            for_update_ts: start_ts,
            keys: Vec::new(),
        }),
    );
    assert!(lock_on(&mut sim, "z").is_none());
    assert!(
        lock_on(&mut sim, "a").is_some(),
        "region of a was not asked"
    );
}

// ---- 3. Pipelined flush ----

/// Follows TiKV's `Flush::flush`: a flush whose generation is not newer than the lock's is
/// skipped and succeeds, through the whole request path.
#[test]
fn a_repeated_flush_generation_succeeds_without_changing_the_lock() {
    let mut sim = sim();
    let start_ts = ts(&mut sim);
    let flush = |sim: &mut Sim, generation: u64, value: &str| {
        let (store, ctx) = context(sim, "f");
        let cmd = Req::Flush(kvrpcpb::FlushRequest {
            context: Some(ctx),
            mutations: vec![put("f", value)],
            primary_key: b("f"),
            start_ts,
            generation,
            lock_ttl: 3_000,
            ..Default::default()
        });
        match run(sim, store, cmd) {
            Resp::Flush(resp) => resp,
            other => panic!("{other:?}"),
        }
    };
    assert!(flush(&mut sim, 2, "second").errors.is_empty());
    let repeated = flush(&mut sim, 2, "again");
    assert!(repeated.errors.is_empty() && repeated.region_error.is_none());
    assert!(flush(&mut sim, 1, "first").errors.is_empty());
    let (store, ctx) = context(&sim, "f");
    let resp = run(
        &mut sim,
        store,
        Req::BufferBatchGet(kvrpcpb::BufferBatchGetRequest {
            context: Some(ctx),
            keys: vec![b("f")],
            version: start_ts,
        }),
    );
    let Resp::BufferBatchGet(resp) = resp else {
        panic!("{resp:?}")
    };
    assert_eq!(resp.pairs[0].value, b("second"));
}

// ---- 6. Faults TiKV really has ----

/// Follows raftstore's in-memory pessimistic lock table (`PeerPessimisticLocks`): the locks
/// live only in the leader's memory, so a leader whose store stops loses them
/// (`clear_in_memory_pessimistic_locks`). The owner's pessimistic prewrite then amends the
/// missing lock when nothing newer was written (`amend_pessimistic_lock`) and fails with
/// PessimisticLockNotFound when something was.
#[test]
fn in_memory_pessimistic_locks_die_with_their_leader() {
    let mut sim = sim();
    let start_ts = ts(&mut sim);
    assert!(
        pessimistic_lock(&mut sim, &["p", "q"], "p", start_ts, start_ts)
            .errors
            .is_empty()
    );
    sim.cluster.stop_store(1).unwrap();
    sim.cluster.restart_store(1).unwrap();
    assert!(lock_on(&mut sim, "p").is_none() && lock_on(&mut sim, "q").is_none());

    // Someone else writes q meanwhile.
    let other_start = ts(&mut sim);
    assert!(
        prewrite(&mut sim, &["q"], "q", other_start, |_| {})
            .errors
            .is_empty()
    );
    let other_commit = ts(&mut sim);
    assert!(
        commit(&mut sim, &["q"], other_start, other_commit)
            .error
            .is_none()
    );

    let pessimistic = |req: &mut kvrpcpb::PrewriteRequest| {
        req.for_update_ts = start_ts;
        req.pessimistic_actions = vec![
            kvrpcpb::prewrite_request::PessimisticAction::DoPessimisticCheck
                as i32;
            req.mutations.len()
        ];
    };
    let amended = prewrite(&mut sim, &["p"], "p", start_ts, pessimistic);
    assert!(
        amended.errors.is_empty(),
        "p is amended: {:?}",
        amended.errors
    );
    let lost = prewrite(&mut sim, &["q"], "p", start_ts, pessimistic);
    assert!(
        lost.errors
            .first()
            .is_some_and(|e| e.abort.contains("pessimistic lock not found")),
        "{:?}",
        lost.errors
    );
}

/// Follows raftstore's `propose_locks_before_transfer_leader`, `on_ready_split_region`
/// (`group_by_regions`) and `propose_locks_before_prepare_merge`: graceful leader transfers,
/// splits and merges carry the in-memory locks over (proposed ones become durable and
/// survive a later crash); when proposing them fails (TiKV's
/// `invalidate_locks_before_transfer_leader` and `on_split_invalidate_locks` cases) they are
/// lost.
#[test]
fn region_changes_carry_in_memory_locks_unless_proposing_them_fails() {
    let mut sim = sim();
    let (left, right) = split(&mut sim, "m");
    let start_ts = ts(&mut sim);
    for key in ["a", "c", "x", "z"] {
        assert!(
            pessimistic_lock(&mut sim, &[key], "a", start_ts, start_ts)
                .errors
                .is_empty()
        );
    }
    // A graceful transfer proposes the locks: they move with the leader and are durable.
    sim.cluster.transfer_leader(right, 2).unwrap();
    assert!(lock_on(&mut sim, "x").is_some());
    sim.cluster.stop_store(2).unwrap();
    sim.cluster.restart_store(2).unwrap();
    assert!(
        lock_on(&mut sim, "x").is_some(),
        "proposed locks are durable"
    );

    // A split hands the in-memory locks to the new region's leader.
    let (_, right_of_c) = split(&mut sim, "b");
    assert!(lock_on(&mut sim, "a").is_some() && lock_on(&mut sim, "c").is_some());

    // Proposing fails on the next change of the region holding c: its locks are lost.
    sim.concurrency
        .lose_locks_on_next_change(Some(right_of_c), 1);
    sim.cluster.transfer_leader(right_of_c, 3).unwrap();
    assert!(
        lock_on(&mut sim, "c").is_none(),
        "lost with the failed proposal"
    );
    assert!(
        lock_on(&mut sim, "a").is_some(),
        "another region is untouched"
    );

    // A split that fails to move them loses them too; a merge that fails, as well.
    sim.concurrency.lose_locks_on_next_change(None, 1);
    split(&mut sim, "y");
    assert!(lock_on(&mut sim, "x").is_some(), "durable locks survive");
    assert!(lock_on(&mut sim, "z").is_some());
    let z_region = sim.cluster.region_by_key(&encode_bytes(b"z")).unwrap().id;
    let y_left = sim.cluster.region_by_key(&encode_bytes(b"x")).unwrap().id;
    assert!(
        pessimistic_lock(&mut sim, &["z"], "a", start_ts, start_ts + 1)
            .errors
            .is_empty()
    );
    sim.concurrency.lose_locks_on_next_change(Some(z_region), 1);
    sim.cluster.merge(z_region, y_left).unwrap();
    assert!(
        lock_on(&mut sim, "z").is_none(),
        "the refreshed lock was in memory"
    );
    assert!(left != right);
}

/// Follows the scheduler's pessimistic lock modes: with in-memory locking off (pipelined
/// only), locks go through raft and survive the leader's crash.
#[test]
fn pipelined_pessimistic_locks_survive_the_leader() {
    let mut sim = sim();
    sim.concurrency.set_in_memory_pessimistic_locks(false);
    let start_ts = ts(&mut sim);
    assert!(
        pessimistic_lock(&mut sim, &["p"], "p", start_ts, start_ts)
            .errors
            .is_empty()
    );
    sim.cluster.stop_store(1).unwrap();
    sim.cluster.restart_store(1).unwrap();
    assert!(lock_on(&mut sim, "p").is_some());
    let region = sim.cluster.regions().next().unwrap().id;
    assert_eq!(sim.lose_in_memory_pessimistic_locks(region), 0);
}

/// Follows TiKV's scheduler in pipelined pessimistic lock mode (`ResponsePolicy::OnProposed`:
/// the lock is answered once proposed, before it commits): when the region's leader changes
/// before the proposal commits, the acknowledged lock is lost, on a leader transfer as on a
/// split or merge; locks whose proposal committed survive. The owner finds the loss at
/// prewrite (PessimisticLockNotFound when something newer was written).
#[test]
fn pipelined_pessimistic_locks_are_lost_when_the_leader_changes_before_they_commit() {
    let mut sim = sim();
    sim.concurrency.set_in_memory_pessimistic_locks(false);
    let (left, right) = split(&mut sim, "m");
    let start_ts = ts(&mut sim);
    assert!(
        pessimistic_lock(&mut sim, &["a"], "a", start_ts, start_ts)
            .errors
            .is_empty()
    );
    // From here the right region's proposals do not commit before its next change.
    sim.concurrency.lose_locks_on_next_change(Some(right), 1);
    for key in ["x", "z"] {
        assert!(
            pessimistic_lock(&mut sim, &[key], "a", start_ts, start_ts)
                .errors
                .is_empty(),
            "acknowledged on proposal"
        );
    }
    assert!(lock_on(&mut sim, "x").is_some());
    sim.cluster.transfer_leader(right, 2).unwrap();
    assert!(lock_on(&mut sim, "x").is_none() && lock_on(&mut sim, "z").is_none());
    assert!(lock_on(&mut sim, "a").is_some(), "committed before: kept");

    // The same on a split and a merge.
    sim.concurrency.lose_locks_on_next_change(None, 1);
    assert!(
        pessimistic_lock(&mut sim, &["c"], "a", start_ts, start_ts)
            .errors
            .is_empty()
    );
    let (_, right_of_b) = split(&mut sim, "b");
    assert!(lock_on(&mut sim, "c").is_none(), "lost with the split");
    assert!(lock_on(&mut sim, "a").is_some());
    sim.concurrency
        .lose_locks_on_next_change(Some(right_of_b), 1);
    assert!(
        pessimistic_lock(&mut sim, &["d"], "a", start_ts, start_ts)
            .errors
            .is_empty()
    );
    sim.cluster.merge(right_of_b, right).unwrap();
    assert!(lock_on(&mut sim, "d").is_none(), "lost with the merge");

    // Something newer was written to x: the owner's prewrite finds its lock missing.
    let other_start = ts(&mut sim);
    assert!(
        prewrite(&mut sim, &["x"], "x", other_start, |_| {})
            .errors
            .is_empty()
    );
    let other_commit = ts(&mut sim);
    assert!(
        commit(&mut sim, &["x"], other_start, other_commit)
            .error
            .is_none()
    );
    let lost = prewrite(&mut sim, &["x"], "a", start_ts, |req| {
        req.for_update_ts = start_ts;
        req.pessimistic_actions = vec![
            kvrpcpb::prewrite_request::PessimisticAction::DoPessimisticCheck
                as i32;
            req.mutations.len()
        ];
    });
    assert!(
        lost.errors
            .first()
            .is_some_and(|e| e.abort.contains("pessimistic lock not found")),
        "{:?}",
        lost.errors
    );
    assert!(left != right);
}

/// A write applied whose reply is kvproto's `UndeterminedResult` region error (the answer
/// client-go's mock stores give after applying a commit; TiKV's scheduler aborts the process
/// on an undetermined write instead). The commit is there for the next reader.
#[test]
fn undetermined_result_is_answered_after_the_write_applied() {
    let mut sim = sim();
    let start_ts = ts(&mut sim);
    assert!(
        prewrite(&mut sim, &["u"], "u", start_ts, |_| {})
            .errors
            .is_empty()
    );
    sim.faults.inject(FaultRule::command(
        "KvCommit",
        FaultAction::UndeterminedAfterApply,
        1,
    ));
    let commit_ts = ts(&mut sim);
    let reply = commit(&mut sim, &["u"], start_ts, commit_ts);
    let undetermined = reply.region_error.and_then(|e| e.undetermined_result);
    assert!(undetermined.is_some_and(|u| !u.message.is_empty()));
    assert_eq!(reply.commit_version, 0, "the reply carries nothing else");
    let read_ts = ts(&mut sim);
    assert_eq!(get(&mut sim, "u", read_ts, |_| {}).value, b("v"));
}

/// Follows raftstore's `check_term`: a request whose context carries a term two or more
/// elections behind the region's is answered `StaleCommand`; one election behind still runs.
#[test]
fn a_command_from_an_old_term_is_stale() {
    let mut sim = sim();
    let region = sim.cluster.regions().next().unwrap().id;
    let term = sim.cluster.region(region).unwrap().term;
    sim.cluster.transfer_leader(region, 2).unwrap();
    sim.cluster.transfer_leader(region, 1).unwrap();
    assert_eq!(sim.cluster.region(region).unwrap().term, term + 2);
    let start_ts = ts(&mut sim);
    let stale = get(&mut sim, "k", start_ts, |ctx| ctx.term = term).region_error;
    assert!(stale.is_some_and(|e| e.stale_command.is_some()));
    let recent = get(&mut sim, "k", start_ts, |ctx| ctx.term = term + 1);
    assert!(recent.region_error.is_none());
}

// ---- 7. Storage checks on transactional keys ----

fn abort_of(errors: &[kvrpcpb::KeyError]) -> &str {
    errors.first().map_or("", |e| e.abort.as_str())
}

/// Follows TiKV's `Storage::check_api_version`: a V1 store refuses V2 transactional
/// requests, a V1TTL store refuses every transactional request, and the key error names the
/// command as TiKV's `CommandKind` does.
#[test]
fn transactional_commands_check_the_api_version() {
    let mut sim = sim();
    let start_ts = ts(&mut sim);
    let v2 = |req: &mut kvrpcpb::PrewriteRequest| {
        if let Some(ctx) = req.context.as_mut() {
            ctx.api_version = ApiVersion::V2 as i32;
        }
    };
    let resp = prewrite(&mut sim, &["k"], "k", start_ts, v2);
    assert_eq!(
        abort_of(&resp.errors),
        "Error(ApiVersionNotMatched { cmd: prewrite, storage_api_version: V1, \
         req_api_version: V2 })"
    );
    let resp = get(&mut sim, "k", start_ts, |ctx| {
        ctx.api_version = ApiVersion::V2 as i32
    });
    assert!(resp.error.is_some_and(|e| e.abort.contains("cmd: get,")));

    let mut v1ttl = sim_with(ApiVersion::V1ttl);
    let start_ts = ts(&mut v1ttl);
    let resp = prewrite(&mut v1ttl, &["k"], "k", start_ts, |_| {});
    assert!(abort_of(&resp.errors).contains("storage_api_version: V1ttl, req_api_version: V1"));
}

/// Follows TiKV's `Storage::check_api_version` and `check_api_version_ranges` in API V2:
/// transactional keys must start with `x` (the keyspace prefix), TiDB's V1 requests may carry
/// only TiDB keys, and scan ranges must stay in the transactional key space. Keys are judged
/// (and printed) memcomparable-encoded, as TiKV checks `Key::as_encoded()`.
#[test]
fn api_v2_transactional_keys_need_the_txn_key_mode() {
    let mut sim = sim_with(ApiVersion::V2);
    let start_ts = ts(&mut sim);
    let ok = prewrite(&mut sim, &["x\0\0\0k"], "x\0\0\0k", start_ts, |_| {});
    assert!(ok.errors.is_empty(), "{:?}", ok.errors);
    let raw_key = prewrite(&mut sim, &["r\0\0\0k"], "r\0\0\0k", start_ts, |_| {});
    let encoded = tikv_sim::admission::AdmissionError::InvalidKeyMode {
        cmd: tikv_sim::admission::TxnCommand::Prewrite.into(),
        storage_api_version: ApiVersion::V2,
        key: encode_bytes(b"r\0\0\0k")
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect(),
    };
    assert_eq!(abort_of(&raw_key.errors), encoded.key_error().abort);

    let tidb = |req: &mut kvrpcpb::PrewriteRequest| {
        if let Some(ctx) = req.context.as_mut() {
            ctx.api_version = ApiVersion::V1 as i32;
        }
    };
    assert!(
        prewrite(&mut sim, &["t_1"], "t_1", start_ts, tidb)
            .errors
            .is_empty()
    );
    let resp = prewrite(&mut sim, &["x\0\0\0j"], "x\0\0\0j", start_ts, tidb);
    assert!(abort_of(&resp.errors).starts_with("Error(InvalidKeyMode { cmd: prewrite"));

    let scan = |sim: &mut Sim, start: &str, end: &str| {
        let (store, ctx) = context(sim, start);
        let cmd = Req::Scan(kvrpcpb::ScanRequest {
            context: Some(ctx),
            start_key: b(start),
            end_key: b(end),
            limit: 10,
            version: start_ts,
            ..Default::default()
        });
        match run(sim, store, cmd) {
            Resp::Scan(resp) => resp,
            other => panic!("{other:?}"),
        }
    };
    assert!(scan(&mut sim, "x\0\0\0", "x\0\0\x01").error.is_none());
    let unbounded = scan(&mut sim, "x\0\0\0", "");
    let abort = unbounded.error.map(|e| e.abort).unwrap_or_default();
    assert!(
        abort.starts_with("Error(InvalidKeyRangeMode { cmd: scan"),
        "{abort}"
    );
    assert_eq!(
        unbounded.pairs.len(),
        1,
        "the error is repeated in the first pair"
    );
}

/// Follows the `check_key_size!` of `Storage::sched_txn_command`: prewrite, flush and
/// pessimistic lock refuse keys whose encoded form is longer than `storage.max-key-size`.
#[test]
fn transactional_writes_check_the_encoded_key_size() {
    let mut sim = sim();
    let limit = sim.raw.max_key_size();
    // 7000 raw bytes encode to 7,884; 8000 encode to 9,009, past the 8 KiB limit.
    let fits = "f".repeat(7_000);
    let too_long = "t".repeat(8_000);
    let start_ts = ts(&mut sim);
    assert!(
        prewrite(&mut sim, &[fits.as_str()], &fits, start_ts, |_| {})
            .errors
            .is_empty()
    );
    let refused = prewrite(&mut sim, &[too_long.as_str()], &too_long, start_ts, |_| {});
    assert_eq!(
        abort_of(&refused.errors),
        format!("Error(KeyTooLarge {{ size: 9009, limit: {limit} }})")
    );
    let locked = pessimistic_lock(
        &mut sim,
        &[too_long.as_str()],
        &too_long,
        start_ts,
        start_ts,
    );
    assert!(abort_of(&locked.errors).starts_with("Error(KeyTooLarge"));
}
