//! Places transactional data and locks in a simulated cluster directly, for tests of the read
//! path that cannot wait for the client's own committer.
//!
//! A [`Writer`] borrows a [`Sim`] and sends it the same `kvrpcpb` requests client-go's
//! committer sends (Prewrite, Commit, PessimisticLock, BatchRollback), one per region, to
//! each region's leader through [`Sim::execute`]: they pass the same request checks as
//! requests from the network, so a lock left behind is exactly the lock a crashed client
//! would leave. Timestamps come from the cluster's own TSO.
//!
//! Keys are user keys; the writer adds the keyspace prefix of its [`Space`] (API V2) and
//! routes by the memcomparable form, as TiKV clients do. Every method panics with a message
//! when the cluster refuses what the test meant to set up: that is a broken test, not a
//! finding.

use std::collections::BTreeMap;

use bytes::Bytes;
use tikv_proto::codec::{self, KeyMode, Keyspace};
use tikv_proto::kvrpcpb::{self, ApiVersion};
use tikv_proto::tikvpb::batch_commands_request::request::Cmd as Req;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as Resp;
use tikv_sim::Sim;
use tikv_sim::tikv::{Execution, TikvRequest, TikvResponse};

/// Where a test's transactional keys live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// API V1: keys travel as written.
    V1,
    /// API V2: keys carry the transactional prefix of keyspace `id`.
    Keyspace(u32),
}

impl Space {
    /// The key TiKV stores for user key `key`.
    pub fn request_key(self, key: &[u8]) -> Bytes {
        match self {
            Self::V1 => Bytes::copy_from_slice(key),
            Self::Keyspace(id) => match Keyspace::new(KeyMode::Txn, id) {
                Ok(keyspace) => Bytes::from(keyspace.encode_key(key)),
                Err(err) => panic!("keyspace {id}: {err}"),
            },
        }
    }

    /// The region boundary form of user key `key` (memcomparable).
    pub fn boundary(self, key: &[u8]) -> Vec<u8> {
        codec::encode_bytes(&self.request_key(key))
    }

    /// The user key of stored key `key`.
    pub fn user_key(self, key: &[u8]) -> Bytes {
        match self {
            Self::V1 => Bytes::copy_from_slice(key),
            Self::Keyspace(_) => Bytes::copy_from_slice(key.get(4..).unwrap_or_default()),
        }
    }

    /// The request context fields this space needs.
    fn fill(self, context: &mut kvrpcpb::Context) {
        if let Self::Keyspace(id) = self {
            context.api_version = ApiVersion::V2 as i32;
            context.keyspace = Some(kvrpcpb::context::Keyspace::KeyspaceId(id));
        }
    }
}

/// One mutation of a prewrite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Write `value`.
    Put(Bytes),
    /// Delete the key.
    Delete,
    /// Lock the key without writing it.
    Lock,
}

/// A prewrite to send: one transaction's locks, written the way client-go's committer
/// writes them.
#[derive(Clone, Debug)]
pub struct Prewrite {
    /// The transaction's start timestamp.
    pub start_ts: u64,
    /// Its primary key (a user key).
    pub primary: Bytes,
    /// Its mutations, by user key.
    pub mutations: Vec<(Bytes, Mutation)>,
    /// The locks' TTL in milliseconds.
    pub ttl_ms: u64,
    /// The size each lock records (client-go: the keys the transaction writes in that
    /// region); `None`: the number of mutations.
    pub txn_size: Option<u64>,
    /// Async commit: every lock knows the transaction's status, the primary lists the
    /// secondaries.
    pub async_commit: bool,
    /// The largest commit timestamp async commit may take (0: no limit).
    pub max_commit_ts: u64,
    /// The locks' `min_commit_ts`; `None`: `start_ts + 1`, as client-go sends.
    pub min_commit_ts: Option<u64>,
    /// The pessimistic transaction's `for_update_ts` (0: optimistic). Keys locked
    /// pessimistically before are checked for their lock.
    pub for_update_ts: u64,
    /// The pessimistically locked keys among the mutations.
    pub pessimistic_keys: Vec<Bytes>,
    /// The async-commit secondaries the primary lists (user keys); `None`: every mutation
    /// but the primary. Set it to prewrite a transaction's keys in several steps.
    pub secondaries: Option<Vec<Bytes>>,
}

impl Prewrite {
    /// A prewrite of transaction `start_ts` with primary `primary` and a 3 s TTL (client-go's
    /// default lock TTL), nothing else yet.
    pub fn new(start_ts: u64, primary: impl AsRef<[u8]>) -> Self {
        Self {
            start_ts,
            primary: Bytes::copy_from_slice(primary.as_ref()),
            mutations: Vec::new(),
            ttl_ms: 3_000,
            txn_size: None,
            async_commit: false,
            max_commit_ts: 0,
            min_commit_ts: None,
            for_update_ts: 0,
            pessimistic_keys: Vec::new(),
            secondaries: None,
        }
    }

    /// Sets the async-commit secondaries the primary lists.
    #[must_use]
    pub fn secondaries<K: AsRef<[u8]>>(mut self, keys: &[K]) -> Self {
        self.secondaries = Some(
            keys.iter()
                .map(|key| Bytes::copy_from_slice(key.as_ref()))
                .collect(),
        );
        self
    }

    /// Adds a put of `key` = `value`.
    #[must_use]
    pub fn put(mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        self.mutations.push((
            Bytes::copy_from_slice(key.as_ref()),
            Mutation::Put(Bytes::copy_from_slice(value.as_ref())),
        ));
        self
    }

    /// Adds a delete of `key`.
    #[must_use]
    pub fn delete(mut self, key: impl AsRef<[u8]>) -> Self {
        self.mutations
            .push((Bytes::copy_from_slice(key.as_ref()), Mutation::Delete));
        self
    }

    /// Sets the TTL.
    #[must_use]
    pub fn ttl(mut self, ttl_ms: u64) -> Self {
        self.ttl_ms = ttl_ms;
        self
    }

    /// Sets the size every lock records.
    #[must_use]
    pub fn txn_size(mut self, size: u64) -> Self {
        self.txn_size = Some(size);
        self
    }

    /// Makes it an async-commit prewrite.
    #[must_use]
    pub fn async_commit(mut self) -> Self {
        self.async_commit = true;
        self
    }

    /// Sets the largest commit timestamp async commit may take.
    #[must_use]
    pub fn max_commit_ts(mut self, ts: u64) -> Self {
        self.max_commit_ts = ts;
        self
    }

    /// Sets the locks' `min_commit_ts` (0: a lock TiKV never pushes).
    #[must_use]
    pub fn min_commit_ts(mut self, ts: u64) -> Self {
        self.min_commit_ts = Some(ts);
        self
    }

    /// Makes it the prewrite of a pessimistic transaction at `for_update_ts`, whose keys in
    /// `locked` hold its pessimistic locks.
    #[must_use]
    pub fn pessimistic<K: AsRef<[u8]>>(mut self, for_update_ts: u64, locked: &[K]) -> Self {
        self.for_update_ts = for_update_ts;
        self.pessimistic_keys = locked
            .iter()
            .map(|key| Bytes::copy_from_slice(key.as_ref()))
            .collect();
        self
    }

    /// The mutation keys.
    pub fn keys(&self) -> Vec<Bytes> {
        self.mutations.iter().map(|(key, _)| key.clone()).collect()
    }
}

/// What a prewrite answered: the async-commit `min_commit_ts` of each region's locks (0
/// for 2PC locks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prewritten {
    /// The largest `min_commit_ts` any region answered.
    pub min_commit_ts: u64,
}

/// Sends transactional requests straight to a simulated cluster's region leaders.
#[derive(Debug)]
pub struct Writer<'a> {
    sim: &'a mut Sim,
    now_ms: u64,
    space: Space,
}

impl<'a> Writer<'a> {
    /// A writer for keys of `space`, at wall-clock `now_ms` (the time the cluster judges
    /// lock TTLs and draws timestamps by).
    pub fn new(sim: &'a mut Sim, now_ms: u64, space: Space) -> Self {
        Self { sim, now_ms, space }
    }

    /// A fresh timestamp from the cluster's TSO.
    pub fn ts(&mut self) -> u64 {
        match self.sim.cluster.allocate_ts(1, self.now_ms) {
            Ok(ts) => ts.to_u64(),
            Err(err) => panic!("TSO: {err}"),
        }
    }

    /// The store and context that reach the leader of the region holding user key `key`.
    fn route(&self, key: &[u8]) -> (u64, kvrpcpb::Context) {
        let boundary = self.space.boundary(key);
        let Some((store, mut context)) = self.sim.leader_context(&boundary) else {
            panic!("no leader holds {:?}", String::from_utf8_lossy(key));
        };
        self.space.fill(&mut context);
        (store, context)
    }

    /// The region holding user key `key`.
    pub fn region_of(&self, key: &[u8]) -> u64 {
        self.sim
            .cluster
            .region_by_key(&self.space.boundary(key))
            .map(|region| region.id)
            .unwrap_or_else(|| panic!("no region holds {:?}", String::from_utf8_lossy(key)))
    }

    /// `keys` grouped by the region holding them, in key order within each group.
    fn by_region(&self, keys: &[Bytes]) -> BTreeMap<u64, Vec<Bytes>> {
        let mut groups: BTreeMap<u64, Vec<Bytes>> = BTreeMap::new();
        for key in keys {
            groups
                .entry(self.region_of(key))
                .or_default()
                .push(key.clone());
        }
        groups
    }

    /// Runs `cmd` (built with the context of the leader of `key`'s region) and returns the
    /// answer; panics on anything but an answer without region error.
    fn run(&mut self, key: &[u8], build: impl FnOnce(kvrpcpb::Context) -> Req) -> Resp {
        let (store, context) = self.route(key);
        let request = TikvRequest::Batch(build(context));
        let name = request.name();
        match self.sim.execute(store, request, self.now_ms) {
            Execution::Done(TikvResponse::Batch(response)) => {
                if let Some(err) = region_error(&response) {
                    panic!("{name} on store {store}: region error {err:?}");
                }
                response
            }
            other => panic!("{name} on store {store}: {other:?}"),
        }
    }

    /// Prewrites `prewrite`, one request per region; panics on any key error.
    pub fn prewrite(&mut self, prewrite: &Prewrite) -> Prewritten {
        match self.try_prewrite(prewrite) {
            Ok(done) => done,
            Err(errors) => panic!("prewrite of {}: {errors:?}", prewrite.start_ts),
        }
    }

    /// Prewrites `prewrite`, one request per region; returns the key errors instead of
    /// panicking on them.
    ///
    /// Errors with every key error the regions answered.
    pub fn try_prewrite(
        &mut self,
        prewrite: &Prewrite,
    ) -> Result<Prewritten, Vec<kvrpcpb::KeyError>> {
        let space = self.space;
        let keys = prewrite.keys();
        let size = prewrite.txn_size.unwrap_or(keys.len() as u64);
        let secondaries: Vec<Bytes> = match &prewrite.secondaries {
            Some(listed) => listed.iter().map(|key| space.request_key(key)).collect(),
            None => keys
                .iter()
                .filter(|key| **key != prewrite.primary)
                .map(|key| space.request_key(key))
                .collect(),
        };
        let mut errors = Vec::new();
        let mut done = Prewritten::default();
        for group in self.by_region(&keys).into_values() {
            let mutations: Vec<kvrpcpb::Mutation> = group
                .iter()
                .filter_map(|key| prewrite.mutations.iter().find(|(k, _)| k == key))
                .map(|(key, mutation)| {
                    let (op, value) = match mutation {
                        Mutation::Put(value) => (kvrpcpb::Op::Put, value.clone()),
                        Mutation::Delete => (kvrpcpb::Op::Del, Bytes::new()),
                        Mutation::Lock => (kvrpcpb::Op::Lock, Bytes::new()),
                    };
                    kvrpcpb::Mutation {
                        op: op as i32,
                        key: space.request_key(key),
                        value,
                        ..Default::default()
                    }
                })
                .collect();
            let actions = if prewrite.for_update_ts == 0 {
                Vec::new()
            } else {
                group
                    .iter()
                    .map(|key| {
                        let action = if prewrite.pessimistic_keys.contains(key) {
                            kvrpcpb::prewrite_request::PessimisticAction::DoPessimisticCheck
                        } else {
                            kvrpcpb::prewrite_request::PessimisticAction::DoConstraintCheck
                        };
                        action as i32
                    })
                    .collect()
            };
            let request = |context| kvrpcpb::PrewriteRequest {
                context: Some(context),
                mutations,
                primary_lock: space.request_key(&prewrite.primary),
                start_version: prewrite.start_ts,
                lock_ttl: prewrite.ttl_ms,
                pessimistic_actions: actions,
                txn_size: size,
                for_update_ts: prewrite.for_update_ts,
                min_commit_ts: prewrite.min_commit_ts.unwrap_or(prewrite.start_ts + 1),
                use_async_commit: prewrite.async_commit,
                secondaries: if prewrite.async_commit {
                    secondaries.clone()
                } else {
                    Vec::new()
                },
                max_commit_ts: prewrite.max_commit_ts,
                ..Default::default()
            };
            let first = group.first().cloned().unwrap_or_default();
            let Resp::Prewrite(response) =
                self.run(&first, |context| Req::Prewrite(request(context)))
            else {
                panic!("prewrite answered with another command");
            };
            errors.extend(response.errors);
            done.min_commit_ts = done.min_commit_ts.max(response.min_commit_ts);
        }
        if errors.is_empty() {
            Ok(done)
        } else {
            Err(errors)
        }
    }

    /// Commits `keys` of transaction `start_ts` at `commit_ts`, one request per region.
    ///
    /// Errors with the first key error a region answered (e.g. `CommitTsExpired` below the
    /// locks' `min_commit_ts`).
    pub fn try_commit<K: AsRef<[u8]>>(
        &mut self,
        start_ts: u64,
        keys: &[K],
        commit_ts: u64,
    ) -> Result<(), Box<kvrpcpb::KeyError>> {
        let space = self.space;
        let keys: Vec<Bytes> = keys
            .iter()
            .map(|key| Bytes::copy_from_slice(key.as_ref()))
            .collect();
        for group in self.by_region(&keys).into_values() {
            let request_keys = group.iter().map(|key| space.request_key(key)).collect();
            let first = group.first().cloned().unwrap_or_default();
            let Resp::Commit(response) = self.run(&first, |context| {
                Req::Commit(kvrpcpb::CommitRequest {
                    context: Some(context),
                    start_version: start_ts,
                    keys: request_keys,
                    commit_version: commit_ts,
                    ..Default::default()
                })
            }) else {
                panic!("commit answered with another command");
            };
            if let Some(err) = response.error {
                return Err(err);
            }
        }
        Ok(())
    }

    /// Commits `keys` of transaction `start_ts` at `commit_ts`; panics on a key error.
    pub fn commit<K: AsRef<[u8]>>(&mut self, start_ts: u64, keys: &[K], commit_ts: u64) {
        if let Err(err) = self.try_commit(start_ts, keys, commit_ts) {
            panic!("commit of {start_ts} at {commit_ts}: {err:?}");
        }
    }

    /// Rolls back `keys` of transaction `start_ts` (client-go's cleanup), one request per
    /// region.
    pub fn rollback<K: AsRef<[u8]>>(&mut self, start_ts: u64, keys: &[K]) {
        let space = self.space;
        let keys: Vec<Bytes> = keys
            .iter()
            .map(|key| Bytes::copy_from_slice(key.as_ref()))
            .collect();
        for group in self.by_region(&keys).into_values() {
            let request_keys = group.iter().map(|key| space.request_key(key)).collect();
            let first = group.first().cloned().unwrap_or_default();
            let Resp::BatchRollback(response) = self.run(&first, |context| {
                Req::BatchRollback(kvrpcpb::BatchRollbackRequest {
                    context: Some(context),
                    start_version: start_ts,
                    keys: request_keys,
                    ..Default::default()
                })
            }) else {
                panic!("rollback answered with another command");
            };
            if let Some(err) = response.error {
                panic!("rollback of {start_ts}: {err:?}");
            }
        }
    }

    /// A whole transaction that writes `pairs` (an empty value deletes the key), committed:
    /// client-go's `putKV`. Returns its start and commit timestamps.
    pub fn put<K: AsRef<[u8]>, V: AsRef<[u8]>>(&mut self, pairs: &[(K, V)]) -> (u64, u64) {
        let Some((primary, _)) = pairs.first() else {
            panic!("a transaction without keys");
        };
        let start_ts = self.ts();
        let mut prewrite = Prewrite::new(start_ts, primary);
        for (key, value) in pairs {
            prewrite = if value.as_ref().is_empty() {
                prewrite.delete(key)
            } else {
                prewrite.put(key, value)
            };
        }
        self.prewrite(&prewrite);
        let commit_ts = self.ts();
        // Primary first, as a committer does, then the rest.
        self.commit(start_ts, &[primary.as_ref()], commit_ts);
        let rest: Vec<&[u8]> = pairs
            .iter()
            .map(|(key, _)| key.as_ref())
            .filter(|key| key != &primary.as_ref())
            .collect();
        if !rest.is_empty() {
            self.commit(start_ts, &rest, commit_ts);
        }
        (start_ts, commit_ts)
    }

    /// client-go's `lockKey`: a transaction that writes `key` = `value` and `primary` =
    /// `primary_value` (empty values delete), prewritten with `ttl_ms`, and with its primary
    /// committed when `commit_primary` (its secondary lock stays behind). Returns the start
    /// timestamp and the commit timestamp (0 when not committed).
    #[expect(
        clippy::too_many_arguments,
        reason = "client-go's lockKey, argument for argument, so ports read like the Go tests"
    )]
    pub fn lock_key(
        &mut self,
        key: &[u8],
        value: &[u8],
        primary: &[u8],
        primary_value: &[u8],
        ttl_ms: u64,
        commit_primary: bool,
        async_commit: bool,
    ) -> (u64, u64) {
        let start_ts = self.ts();
        let mut prewrite = Prewrite::new(start_ts, primary).ttl(ttl_ms);
        for (k, v) in [(key, value), (primary, primary_value)] {
            prewrite = if v.is_empty() {
                prewrite.delete(k)
            } else {
                prewrite.put(k, v)
            };
        }
        if async_commit {
            prewrite = prewrite.async_commit();
        }
        let done = self.prewrite(&prewrite);
        if !commit_primary {
            return (start_ts, 0);
        }
        let commit_ts = self.ts().max(done.min_commit_ts);
        self.commit(start_ts, &[primary], commit_ts);
        (start_ts, commit_ts)
    }

    /// Takes pessimistic locks on `keys` for transaction `start_ts` at `for_update_ts`,
    /// primary `primary`; panics unless every key is locked at once.
    pub fn pessimistic_lock<K: AsRef<[u8]>>(
        &mut self,
        start_ts: u64,
        for_update_ts: u64,
        primary: &[u8],
        keys: &[K],
        ttl_ms: u64,
    ) {
        let space = self.space;
        let keys: Vec<Bytes> = keys
            .iter()
            .map(|key| Bytes::copy_from_slice(key.as_ref()))
            .collect();
        for group in self.by_region(&keys).into_values() {
            let mutations = group
                .iter()
                .map(|key| kvrpcpb::Mutation {
                    op: kvrpcpb::Op::PessimisticLock as i32,
                    key: space.request_key(key),
                    ..Default::default()
                })
                .collect();
            let first = group.first().cloned().unwrap_or_default();
            let Resp::PessimisticLock(response) = self.run(&first, |context| {
                Req::PessimisticLock(kvrpcpb::PessimisticLockRequest {
                    context: Some(context),
                    mutations,
                    primary_lock: space.request_key(primary),
                    start_version: start_ts,
                    lock_ttl: ttl_ms,
                    for_update_ts,
                    is_first_lock: false,
                    // No wait: a test that locks an already locked key is broken.
                    wait_timeout: -1,
                    min_commit_ts: for_update_ts + 1,
                    ..Default::default()
                })
            }) else {
                panic!("pessimistic lock answered with another command");
            };
            if !response.errors.is_empty() {
                panic!("pessimistic lock of {start_ts}: {:?}", response.errors);
            }
        }
    }

    /// The lock on user key `key` as a read at `ts` meets it (client-go's `mustGetLock`),
    /// or `None` when the read is not blocked.
    pub fn lock_at(&mut self, key: &[u8], ts: u64) -> Option<kvrpcpb::LockInfo> {
        let request_key = self.space.request_key(key);
        let Resp::Get(response) = self.run(key, |context| {
            Req::Get(kvrpcpb::GetRequest {
                context: Some(context),
                key: request_key,
                version: ts,
                ..Default::default()
            })
        }) else {
            panic!("get answered with another command");
        };
        response.error.and_then(|err| err.locked).map(|lock| *lock)
    }

    /// Whether a read of user key `key` at a fresh timestamp is blocked by a lock.
    pub fn is_locked(&mut self, key: &[u8]) -> bool {
        let ts = self.ts();
        self.lock_at(key, ts).is_some()
    }

    /// The lock on user key `key` as a read at a fresh timestamp meets it; panics when
    /// there is none.
    pub fn must_get_lock(&mut self, key: &[u8]) -> kvrpcpb::LockInfo {
        let ts = self.ts();
        self.lock_at(key, ts)
            .unwrap_or_else(|| panic!("{:?} is not locked", String::from_utf8_lossy(key)))
    }

    /// Every lock with a start timestamp at or below `max_ts` on user keys in
    /// `[start, end)` (empty `end`: the end of the space), across regions (client-go's
    /// `ScanLocks`).
    pub fn scan_locks(&mut self, start: &[u8], end: &[u8], max_ts: u64) -> Vec<kvrpcpb::LockInfo> {
        let space = self.space;
        let start_key = space.request_key(start);
        let end_key = match (space, end.is_empty()) {
            (Space::V1, true) => Bytes::new(),
            (Space::Keyspace(id), true) => Bytes::copy_from_slice(
                &codec::prefix(KeyMode::Txn, id + 1).unwrap_or_else(|err| panic!("{err}")),
            ),
            _ => space.request_key(end),
        };
        let regions: Vec<(Bytes, Bytes)> = self
            .sim
            .cluster
            .regions()
            .map(|region| {
                let meta = region.to_proto();
                (meta.start_key, meta.end_key)
            })
            .collect();
        let mut locks = Vec::new();
        for (region_start, region_end) in regions {
            let from = decode_boundary(&region_start).max(start_key.clone());
            let to = match (decode_boundary(&region_end), end_key.is_empty()) {
                (to, true) => to,
                (to, false) if to.is_empty() => end_key.clone(),
                (to, false) => to.min(end_key.clone()),
            };
            if !to.is_empty() && from >= to {
                continue;
            }
            let Some((store, mut context)) = self.sim.leader_context(&region_start) else {
                continue;
            };
            space.fill(&mut context);
            let request = TikvRequest::Batch(Req::ScanLock(kvrpcpb::ScanLockRequest {
                context: Some(context),
                max_version: max_ts,
                start_key: from,
                limit: 0,
                end_key: to,
            }));
            match self.sim.execute(store, request, self.now_ms) {
                Execution::Done(TikvResponse::Batch(Resp::ScanLock(response))) => {
                    if let Some(err) = response.region_error {
                        panic!("scan lock: region error {err:?}");
                    }
                    locks.extend(response.locks);
                }
                other => panic!("scan lock: {other:?}"),
            }
        }
        locks
    }

    /// CheckTxnStatus of transaction `lock_ts` on user key `primary`, as client-go's
    /// `getTxnStatus` sends it (the lock resolver's view of a transaction).
    pub fn check_txn_status(
        &mut self,
        primary: &[u8],
        lock_ts: u64,
        caller_start_ts: u64,
        rollback_if_not_exist: bool,
    ) -> kvrpcpb::CheckTxnStatusResponse {
        let current_ts = self.ts();
        let primary_key = self.space.request_key(primary);
        let Resp::CheckTxnStatus(response) = self.run(primary, |context| {
            Req::CheckTxnStatus(kvrpcpb::CheckTxnStatusRequest {
                context: Some(context),
                primary_key,
                lock_ts,
                caller_start_ts,
                current_ts,
                rollback_if_not_exist,
                verify_is_primary: true,
                ..Default::default()
            })
        }) else {
            panic!("check txn status answered with another command");
        };
        response
    }
}

impl Writer<'_> {
    /// TxnHeartBeat of transaction `start_ts` on its primary, user key `primary`, asking
    /// for a TTL of `advise_ttl_ms` (client-go's `SendTxnHeartbeat`, a test probe there
    /// too): the lock's TTL after it, or TiKV's key error (the lock is gone).
    pub fn txn_heartbeat(
        &mut self,
        primary: &[u8],
        start_ts: u64,
        advise_ttl_ms: u64,
    ) -> Result<u64, kvrpcpb::KeyError> {
        let primary_lock = self.space.request_key(primary);
        let Resp::TxnHeartBeat(response) = self.run(primary, |context| {
            Req::TxnHeartBeat(kvrpcpb::TxnHeartBeatRequest {
                context: Some(context),
                primary_lock,
                start_version: start_ts,
                advise_lock_ttl: advise_ttl_ms,
                ..Default::default()
            })
        }) else {
            panic!("txn heartbeat answered with another command");
        };
        match response.error {
            Some(err) => Err(*err),
            None => Ok(response.lock_ttl),
        }
    }
}

/// The key a region boundary stands for (empty for the unbounded ends).
fn decode_boundary(boundary: &[u8]) -> Bytes {
    if boundary.is_empty() {
        return Bytes::new();
    }
    Bytes::from(
        codec::decode_bytes(boundary)
            .map(|(key, _)| key)
            .unwrap_or_else(|_| boundary.to_vec()),
    )
}

fn region_error(response: &Resp) -> Option<&tikv_proto::errorpb::Error> {
    match response {
        Resp::Prewrite(r) => r.region_error.as_deref(),
        Resp::Commit(r) => r.region_error.as_deref(),
        Resp::BatchRollback(r) => r.region_error.as_deref(),
        Resp::PessimisticLock(r) => r.region_error.as_deref(),
        Resp::Get(r) => r.region_error.as_deref(),
        Resp::CheckTxnStatus(r) => r.region_error.as_deref(),
        Resp::TxnHeartBeat(r) => r.region_error.as_deref(),
        _ => None,
    }
}

/// Milliseconds since the Unix epoch now: the clock a served cluster ([`tikv_sim::SimServer`])
/// judges TTLs and draws timestamps by.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
