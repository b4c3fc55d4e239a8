//! Snapshot reads: point and batch gets, and scans, with lock resolution as client-go's
//! `KVSnapshot` does it.
//!
//! ```text
//!  Reading ── every key answered ──────────────────────────────► Done(entries)
//!     │  some keys locked
//!     ▼
//!  Resolving (a ResolveLocks child, for read, lite)
//!     │  all resolved ──► Reading (the locked keys again, with the learned lock sets)
//!     │  some alive   ──► Sleeping (txnLockFast backoff, at most until expiry) ──► Reading
//! ```
//!
//! A scan walks the range region by region in batches; a batch that meets locks is
//! resolved and read again from the same place.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use super::plan::KeyedPlan;
use super::resolve::{ResolveLocks, ResolveParams};
use super::{ReadOptions, SnapshotRead, TxnEntry};
use crate::backoff::{BackoffKind, Backoffer};
use crate::command::Output;
use crate::error::{Error, KeyError, LockInfo};
use crate::op::{Cx, Next, Operation};
use crate::ops::keys::KeySpace;
use crate::oracle::Timestamp;
use crate::outbox::{OpId, Reply, RequestId};
use crate::resolver::ReadLockSets;
use crate::rpc::{StoreRequest, StoreResponse};
use crate::sender::Route;
use crate::sender::dispatch::{Dispatch, DispatchInput, Items, Plan, Progress};

/// Total backoff of a snapshot read (client-go `getMaxBackoff` / `batchGetMaxBackoff`).
const READ_BUDGET: Duration = Duration::from_secs(20);
/// Most keys in one batch-get request (client-go `batchGetSize`).
pub(crate) const BATCH_GET_SIZE: usize = 5_120;

/// Where a read stands.
#[derive(Debug)]
enum Stage {
    /// Requests out.
    Reading,
    /// A lock-resolution child is running.
    Resolving(OpId),
    /// Backing off before reading the locked keys again.
    Sleeping,
}

/// A point or batch get (client-go `KVSnapshot.Get` / `BatchGet`); finishes with
/// [`Output::Read`].
#[derive(Debug)]
pub(crate) struct ReadKeys {
    space: KeySpace,
    options: ReadOptions,
    /// Request keys, indexed by item.
    keys: Vec<Bytes>,
    dispatch: Dispatch,
    plan: ReadPlan,
    learned: ReadLockSets,
    /// Backs off live locks (the dispatch backs off region errors on its own budget).
    backoff: Backoffer,
    stage: Stage,
    /// The first lock a read at the latest timestamp met (client-go's autocommit point get
    /// waits only for it).
    first_lock: Option<Timestamp>,
}

#[derive(Debug)]
struct ReadPlan {
    point: bool,
    ts: Timestamp,
    need_commit_ts: bool,
    context: kvrpcpb::Context,
    keys: Vec<Bytes>,
    found: BTreeMap<usize, TxnEntry>,
    locked: Vec<(usize, LockInfo)>,
    /// Items to read again with the locked ones, without a lock of their own (the other
    /// keys of a request that failed as a whole on a lock).
    retry: Vec<usize>,
    /// Request keys answered, mapped back to items.
    index: BTreeMap<Bytes, usize>,
    space: KeySpace,
}

impl Plan for ReadPlan {
    fn build(
        &mut self,
        items: &[usize],
        _route: &Route,
        send: &mut dyn FnMut(Items, Box<StoreRequest>),
    ) {
        if self.point {
            for &item in items {
                let request = kvrpcpb::GetRequest {
                    context: Some(self.context.clone()),
                    key: self.keys.get(item).cloned().unwrap_or_default(),
                    version: self.ts.version(),
                    need_commit_ts: self.need_commit_ts,
                };
                send(
                    Items::from_slice(&[item]),
                    Box::new(StoreRequest::Get(request)),
                );
            }
            return;
        }
        for chunk in items.chunks(BATCH_GET_SIZE) {
            let request = kvrpcpb::BatchGetRequest {
                context: Some(self.context.clone()),
                keys: chunk
                    .iter()
                    .filter_map(|&i| self.keys.get(i).cloned())
                    .collect(),
                version: self.ts.version(),
                need_commit_ts: self.need_commit_ts,
            };
            send(
                Items::from_slice(chunk),
                Box::new(StoreRequest::BatchGet(request)),
            );
        }
    }

    fn absorb(
        &mut self,
        items: &[usize],
        _route: &Route,
        response: Box<StoreResponse>,
    ) -> Result<(), Error> {
        match *response {
            StoreResponse::Get(r) => {
                let Some(&item) = items.first() else {
                    return Ok(());
                };
                if let Some(err) = &r.error {
                    return match KeyError::from_proto(err) {
                        KeyError::Locked(lock) => {
                            self.locked.push((item, lock));
                            Ok(())
                        }
                        other => Err(other.into()),
                    };
                }
                if !r.not_found {
                    let key = self
                        .space
                        .user_key(self.keys.get(item).cloned().unwrap_or_default())?;
                    self.found.insert(
                        item,
                        TxnEntry {
                            key,
                            value: r.value,
                            commit_ts: commit_ts(self.need_commit_ts, r.commit_ts),
                        },
                    );
                }
                Ok(())
            }
            StoreResponse::BatchGet(r) => {
                if let Some(err) = &r.error {
                    // A whole-request error (the pairs are incomplete). A lock (TiKV's check
                    // of in-memory locks fails a whole read) is resolved and every key of
                    // the request read again, as client-go does; anything else ends the read.
                    return match KeyError::from_proto(err) {
                        KeyError::Locked(lock) => {
                            let (first, rest) = items.split_first().unwrap_or((&0, &[]));
                            self.locked.push((*first, lock));
                            self.retry.extend_from_slice(rest);
                            Ok(())
                        }
                        other => Err(other.into()),
                    };
                }
                for pair in r.pairs {
                    if let Some(err) = &pair.error {
                        // TiKV leaves the key of a failed pair empty: a lock names its key.
                        match KeyError::from_proto(err) {
                            KeyError::Locked(lock) => {
                                let Some(&item) = self.index.get(&lock.key) else {
                                    // Read as "not found", the key would silently vanish.
                                    return Err(Error::UnexpectedResponse(format!(
                                        "a lock on {:?}, which the batch get did not ask for",
                                        lock.key
                                    )));
                                };
                                self.locked.push((item, lock));
                            }
                            other => return Err(other.into()),
                        }
                        continue;
                    }
                    let Some(&item) = self.index.get(&pair.key) else {
                        continue;
                    };
                    let key = self.space.user_key(pair.key)?;
                    self.found.insert(
                        item,
                        TxnEntry {
                            key,
                            value: pair.value,
                            commit_ts: commit_ts(self.need_commit_ts, pair.commit_ts),
                        },
                    );
                }
                Ok(())
            }
            other => Err(Error::UnexpectedResponse(format!(
                "mismatched response {other:?}"
            ))),
        }
    }
}

fn commit_ts(asked: bool, ts: u64) -> Option<Timestamp> {
    (asked && ts != 0).then(|| Timestamp::from_version(ts))
}

impl ReadKeys {
    /// A read of user keys `keys` (a point get when `point`).
    ///
    /// Errors with [`Error::InvalidArgument`] on an empty key.
    pub(crate) fn new(
        space: KeySpace,
        options: ReadOptions,
        keys: &[Bytes],
        point: bool,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let mut request_keys = Vec::with_capacity(keys.len());
        for key in keys {
            if key.is_empty() {
                return Err(Error::InvalidArgument("empty key".to_owned()));
            }
            request_keys.push(space.request_key(key));
        }
        let index: BTreeMap<Bytes, usize> = request_keys
            .iter()
            .enumerate()
            .map(|(item, key)| (key.clone(), item))
            .collect();
        let routing = space.routing_keys(&request_keys);
        let dispatch = Dispatch::new(routing, false, READ_BUDGET, timeout);
        let learned = ReadLockSets::default();
        let plan = ReadPlan {
            point,
            ts: options.ts,
            need_commit_ts: options.need_commit_ts,
            context: options.context(&learned),
            keys: request_keys.clone(),
            found: BTreeMap::new(),
            locked: Vec::new(),
            retry: Vec::new(),
            index: index.clone(),
            space: space.clone(),
        };
        Ok(Self {
            space,
            options,
            keys: request_keys,
            dispatch,
            plan,
            learned,
            backoff: Backoffer::new(millis(READ_BUDGET)),
            stage: Stage::Reading,
            first_lock: None,
        })
    }

    fn read(mut self: Box<Self>, cx: &mut Cx<'_>, input: DispatchInput) -> Next {
        match self.dispatch.handle(cx, input, &mut self.plan) {
            Progress::Pending => Next::Pending(self),
            Progress::Failed(err) => Next::Done(Err(err)),
            Progress::Done => self.all_answered(cx),
        }
    }

    /// Every key was answered: finish, or resolve what was locked.
    fn all_answered(mut self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        let mut locked = std::mem::take(&mut self.plan.locked);
        if locked.is_empty() {
            let entries = std::mem::take(&mut self.plan.found).into_values().collect();
            return Next::Done(Ok(Output::Read(Box::new(SnapshotRead {
                entries,
                learned: std::mem::take(&mut self.learned),
            }))));
        }
        if self.plan.point && self.options.ts.version() == u64::MAX {
            // A read at the latest timestamp waits only for the first lock it met; other
            // transactions' locks met on retries are skipped.
            let first = *self.first_lock.get_or_insert(locked[0].1.lock_ts);
            let (skip, keep): (Vec<_>, Vec<_>) = locked
                .into_iter()
                .partition(|(_, lock)| lock.lock_ts != first);
            for (item, lock) in skip {
                if !self.learned.resolved.contains(&lock.lock_ts) {
                    self.learned.resolved.push(lock.lock_ts);
                }
                self.dispatch.retry(&[item]);
            }
            if keep.is_empty() {
                self.plan.context = self.options.context(&self.learned);
                self.stage = Stage::Reading;
                return self.read(cx, DispatchInput::Start);
            }
            locked = keep;
        }
        let mut items: Vec<usize> = locked.iter().map(|(item, _)| *item).collect();
        items.append(&mut self.plan.retry);
        let locks: Vec<LockInfo> = locked.into_iter().map(|(_, lock)| lock).collect();
        let config = cx.config();
        let params = ResolveParams {
            caller_start_ts: self.options.ts,
            for_read: true,
            // As client-go: a point get resolves only the keys it met; a batch get resolves
            // a big transaction's locks region by region, since it likely meets more.
            lite: self.plan.point,
            pessimistic_region_resolve: false,
            space: self.space.clone(),
            timeout: config.read_timeout_short,
            budget: READ_BUDGET,
            max_execution_ms: millis(config.max_write_execution),
        };
        let child = cx.spawn_child(Box::new(ResolveLocks::new(params, locks)));
        self.dispatch.retry(&items);
        self.stage = Stage::Resolving(child);
        Next::Pending(self)
    }
}

impl Operation for ReadKeys {
    fn on_start(self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        self.read(cx, DispatchInput::Start)
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }

    fn on_reply(self: Box<Self>, cx: &mut Cx<'_>, id: RequestId, reply: Reply) -> Next {
        self.read(cx, DispatchInput::Reply(id, reply))
    }

    fn on_timer(mut self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        if matches!(self.stage, Stage::Sleeping) {
            self.stage = Stage::Reading;
            return self.read(cx, DispatchInput::Start);
        }
        self.read(cx, DispatchInput::Timer)
    }

    fn on_child_done(
        mut self: Box<Self>,
        cx: &mut Cx<'_>,
        child: OpId,
        result: Result<Output, Error>,
    ) -> Next {
        if !matches!(self.stage, Stage::Resolving(id) if id == child) {
            return Next::Pending(self);
        }
        let outcome = match resolution(result) {
            Ok(outcome) => outcome,
            Err(err) => return Next::Done(Err(err)),
        };
        self.learned.merge(&outcome.sets);
        self.plan.context = self.options.context(&self.learned);
        after_resolve(
            cx,
            &mut self.backoff,
            outcome.ms_before_expiry,
            self.keys.len(),
        )
        .map_or_else(
            |err| Next::Done(Err(err)),
            |sleep| match sleep {
                Some(until) => {
                    cx.wake_at(until);
                    self.stage = Stage::Sleeping;
                    Next::Pending(self)
                }
                None => {
                    self.stage = Stage::Reading;
                    self.read(cx, DispatchInput::Start)
                }
            },
        )
    }
}

/// What a lock-resolution child finished with.
pub(crate) fn resolution(
    result: Result<Output, Error>,
) -> Result<crate::resolver::ResolveOutcome, Error> {
    match result {
        Ok(Output::Resolved(outcome)) => Ok(*outcome),
        Ok(other) => Err(Error::UnexpectedResponse(format!(
            "lock resolution produced {other:?}"
        ))),
        Err(err) => Err(err),
    }
}

/// After a resolution: when a lock is still alive, back off `txnLockFast` (at most until
/// it expires); `None` means read again now.
fn after_resolve(
    cx: &mut Cx<'_>,
    backoff: &mut Backoffer,
    ms_before_expiry: u64,
    keys: usize,
) -> Result<Option<crate::time::Time>, Error> {
    if ms_before_expiry == 0 {
        return Ok(None);
    }
    let sleep = backoff
        .next_sleep_at_most(
            BackoffKind::TxnLockFast,
            ms_before_expiry,
            cx.rng(),
            format_args!("{keys} keys locked by a live transaction"),
        )
        .map_err(Error::from)?;
    Ok(Some(cx.now() + sleep))
}

/// A scan of a snapshot (client-go's `Scanner`), walking regions in batches; finishes
/// with [`Output::Read`].
#[derive(Debug)]
pub(crate) struct ScanKeys {
    space: KeySpace,
    options: ReadOptions,
    /// Where the next batch starts: the first key (forward) or the exclusive upper bound
    /// (reverse; empty = the end of the key space).
    cursor: Bytes,
    /// Where the range ends: exclusive upper bound (forward) or inclusive lower bound
    /// (reverse).
    end: Bytes,
    limit: u32,
    batch_size: u32,
    key_only: bool,
    reverse: bool,
    entries: Vec<TxnEntry>,
    learned: ReadLockSets,
    backoff: Backoffer,
    step: Option<(Dispatch, KeyedPlan)>,
    stage: Stage,
    finished: bool,
    timeout: Duration,
}

/// What a scan is asked for.
#[derive(Clone, Debug)]
pub(crate) struct ScanSpec {
    pub(crate) start: Bytes,
    pub(crate) end: Bytes,
    pub(crate) limit: u32,
    pub(crate) batch_size: u32,
    pub(crate) key_only: bool,
    pub(crate) reverse: bool,
}

impl ScanKeys {
    /// A scan of the user range in `spec`.
    ///
    /// Errors with [`Error::InvalidArgument`] for a reverse scan without an upper bound
    /// outside a keyspace (TiKV would read it as "before the first key").
    pub(crate) fn new(
        space: KeySpace,
        options: ReadOptions,
        spec: ScanSpec,
        timeout: Duration,
    ) -> Result<Self, Error> {
        if spec.reverse && spec.start.is_empty() && !matches!(space, KeySpace::Keyspace { .. }) {
            return Err(Error::InvalidArgument(
                "a reverse scan needs a non-empty upper bound".to_owned(),
            ));
        }
        let (cursor, end) = if spec.reverse {
            (space.request_end(&spec.start), space.request_key(&spec.end))
        } else {
            (space.request_key(&spec.start), space.request_end(&spec.end))
        };
        Ok(Self {
            space,
            options,
            cursor,
            end,
            limit: spec.limit,
            batch_size: spec.batch_size.max(1),
            key_only: spec.key_only,
            reverse: spec.reverse,
            entries: Vec::new(),
            learned: ReadLockSets::default(),
            backoff: Backoffer::new(millis(READ_BUDGET)),
            step: None,
            stage: Stage::Reading,
            finished: false,
            timeout,
        })
    }

    fn more(&self) -> bool {
        if self.finished || self.entries.len() >= self.limit as usize {
            return false;
        }
        if self.reverse {
            self.cursor > self.end && !self.space.is_start(&self.cursor)
        } else {
            self.end.is_empty() || self.cursor < self.end
        }
    }

    fn start_step(&mut self) {
        let remaining = self
            .limit
            .saturating_sub(u32::try_from(self.entries.len()).unwrap_or(u32::MAX));
        // Reversed, TiKV reads `start_key` as the exclusive upper bound and `end_key` as the
        // inclusive lower one, which is how the cursor and end are kept.
        let request = kvrpcpb::ScanRequest {
            context: Some(self.options.context(&self.learned)),
            start_key: self.cursor.clone(),
            end_key: self.end.clone(),
            limit: remaining.min(self.batch_size),
            version: self.options.ts.version(),
            key_only: self.key_only,
            reverse: self.reverse,
            ..Default::default()
        };
        let routing = self.space.routing_key(&self.cursor);
        let dispatch = Dispatch::new(
            smallvec::smallvec![routing],
            self.reverse,
            READ_BUDGET,
            self.timeout,
        );
        let plan = KeyedPlan::per_region(vec![self.cursor.clone()], StoreRequest::Scan(request));
        self.step = Some((dispatch, plan));
    }

    fn drive(mut self: Box<Self>, cx: &mut Cx<'_>, input: DispatchInput) -> Next {
        let mut input = Some(input);
        // Each pass finishes one batch; bounded by the rows and regions in the range.
        loop {
            if self.step.is_none() {
                if !self.more() {
                    let entries = std::mem::take(&mut self.entries);
                    return Next::Done(Ok(Output::Read(Box::new(SnapshotRead {
                        entries,
                        learned: std::mem::take(&mut self.learned),
                    }))));
                }
                self.start_step();
                input = Some(DispatchInput::Start);
            }
            let Some((dispatch, plan)) = self.step.as_mut() else {
                return Next::Pending(self);
            };
            let progress = dispatch.handle(cx, input.take().unwrap_or(DispatchInput::Timer), plan);
            match progress {
                Progress::Pending => return Next::Pending(self),
                Progress::Failed(err) => return Next::Done(Err(err)),
                Progress::Done => {
                    let answer = plan.take_answers().pop();
                    self.step = None;
                    let Some(answer) = answer else {
                        return Next::Done(Err(Error::UnexpectedResponse("no scan answer".into())));
                    };
                    match self.absorb(&answer.route, answer.response) {
                        Ok(locks) if locks.is_empty() => {}
                        Ok(locks) => return self.resolve(cx, locks),
                        Err(err) => return Next::Done(Err(err)),
                    }
                }
            }
        }
    }

    /// Takes one batch; returns the locks it met (the batch is then read again).
    fn absorb(
        &mut self,
        route: &Route,
        response: Box<StoreResponse>,
    ) -> Result<Vec<LockInfo>, Error> {
        let StoreResponse::Scan(r) = *response else {
            return Err(Error::UnexpectedResponse("not a scan answer".into()));
        };
        if let Some(err) = &r.error {
            // A whole-request error (the pairs are incomplete): a lock is resolved and the
            // batch read again, as client-go's scanner does.
            return match KeyError::from_proto(err) {
                KeyError::Locked(lock) => Ok(vec![lock]),
                other => Err(other.into()),
            };
        }
        let mut locks = Vec::new();
        for pair in &r.pairs {
            if let Some(err) = &pair.error {
                match KeyError::from_proto(err) {
                    KeyError::Locked(lock) => locks.push(lock),
                    other => return Err(other.into()),
                }
            }
        }
        if !locks.is_empty() {
            return Ok(locks);
        }
        let asked = self
            .limit
            .saturating_sub(u32::try_from(self.entries.len()).unwrap_or(u32::MAX))
            .min(self.batch_size) as usize;
        let full = r.pairs.len() >= asked;
        let last_key = r.pairs.last().map(|pair| pair.key.clone());
        for pair in r.pairs {
            let key = self.space.user_key(pair.key)?;
            let value = if self.key_only {
                Bytes::new()
            } else {
                pair.value
            };
            self.entries.push(TxnEntry {
                key,
                value,
                commit_ts: None,
            });
        }
        match (full, last_key) {
            (true, Some(last)) => {
                // The region may hold more: go on right after (or, reversed, before) the
                // last key.
                self.cursor = if self.reverse {
                    last
                } else {
                    let mut next = Vec::with_capacity(last.len() + 1);
                    next.extend_from_slice(&last);
                    next.push(0);
                    Bytes::from(next)
                };
            }
            _ => {
                // The region is exhausted: its boundary is where the next one starts.
                let boundary = if self.reverse {
                    &route.region.start_key
                } else {
                    &route.region.end_key
                };
                match self.space.boundary_to_request(boundary) {
                    Some(next) => self.cursor = next,
                    None => self.finished = true,
                }
            }
        }
        Ok(Vec::new())
    }

    fn resolve(mut self: Box<Self>, cx: &mut Cx<'_>, locks: Vec<LockInfo>) -> Next {
        let config = cx.config();
        let params = ResolveParams {
            caller_start_ts: self.options.ts,
            for_read: true,
            // As client-go's scanner: big transactions region by region.
            lite: false,
            pessimistic_region_resolve: false,
            space: self.space.clone(),
            timeout: config.read_timeout_short,
            budget: READ_BUDGET,
            max_execution_ms: millis(config.max_write_execution),
        };
        let child = cx.spawn_child(Box::new(ResolveLocks::new(params, locks)));
        self.stage = Stage::Resolving(child);
        Next::Pending(self)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Operation for ScanKeys {
    fn on_start(self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        self.drive(cx, DispatchInput::Start)
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }

    fn on_reply(self: Box<Self>, cx: &mut Cx<'_>, id: RequestId, reply: Reply) -> Next {
        self.drive(cx, DispatchInput::Reply(id, reply))
    }

    fn on_timer(mut self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        if matches!(self.stage, Stage::Sleeping) {
            // The batch that met a live lock is read again from the same cursor.
            self.stage = Stage::Reading;
            self.step = None;
            return self.drive(cx, DispatchInput::Start);
        }
        self.drive(cx, DispatchInput::Timer)
    }

    fn on_child_done(
        mut self: Box<Self>,
        cx: &mut Cx<'_>,
        child: OpId,
        result: Result<Output, Error>,
    ) -> Next {
        if !matches!(self.stage, Stage::Resolving(id) if id == child) {
            return Next::Pending(self);
        }
        let outcome = match resolution(result) {
            Ok(outcome) => outcome,
            Err(err) => return Next::Done(Err(err)),
        };
        self.learned.merge(&outcome.sets);
        match after_resolve(cx, &mut self.backoff, outcome.ms_before_expiry, 1) {
            Err(err) => Next::Done(Err(err)),
            Ok(Some(until)) => {
                cx.wake_at(until);
                self.stage = Stage::Sleeping;
                Next::Pending(self)
            }
            Ok(None) => {
                self.stage = Stage::Reading;
                self.step = None;
                self.drive(cx, DispatchInput::Start)
            }
        }
    }
}
