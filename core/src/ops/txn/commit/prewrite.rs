//! Building prewrite requests per region and batch, and reading their answers (client-go's
//! `buildPrewriteRequest` and `prewrite1BatchReqHandler`).

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use super::batch;
use crate::error::{Error, KeyError, LockInfo, WriteConflictReason};
use crate::oracle::Timestamp;
use crate::rpc::{StoreRequest, StoreResponse};
use crate::sender::Route;
use crate::sender::dispatch::{Items, Plan};

/// The fixed parts of every prewrite request of one commit.
#[derive(Debug)]
pub(crate) struct PrewriteShape {
    pub(crate) start_ts: Timestamp,
    /// The primary key, in the request key space.
    pub(crate) primary: Bytes,
    pub(crate) lock_ttl: u64,
    pub(crate) max_commit_ts: u64,
    pub(crate) assertion_level: i32,
    pub(crate) context: kvrpcpb::Context,
    pub(crate) batch_limit: usize,
    /// The transaction holds pessimistic locks (a lock met is then resolved, not a
    /// conflict).
    pub(crate) pessimistic: bool,
    /// The pessimistic transaction's `for_update_ts` (0 for an optimistic one).
    pub(crate) for_update_ts: u64,
    /// Any lock met fails the commit as a write conflict instead of being resolved
    /// ([`PrewriteLockPolicy::NoResolve`](crate::txn::commit::PrewriteLockPolicy::NoResolve)).
    pub(crate) no_resolve: bool,
}

/// The prewrites of one commit, as a dispatch plan.
#[derive(Debug)]
pub(crate) struct PrewritePlan {
    shape: PrewriteShape,
    /// Wire mutations (request keys), indexed by item, sorted by key.
    mutations: Vec<kvrpcpb::Mutation>,
    actions: Vec<i32>,
    primary_item: Option<usize>,
    /// The async-commit secondaries, recorded in the primary's lock.
    secondaries: Vec<Bytes>,
    /// Whether each item was already sent once (a regrouped retry reports an unknown
    /// transaction size, so that nobody resolves its locks the cheap way).
    built: Vec<bool>,
    /// Async commit is still on (TiKV may decline it in any answer).
    pub(crate) async_commit: bool,
    /// 1PC is still on (it ends when the mutations need more than one request).
    pub(crate) one_pc: bool,
    /// The `min_commit_ts` sent: a floor the answers only raise.
    pub(crate) min_commit_ts: u64,
    /// The largest `min_commit_ts` answered (async commit).
    pub(crate) max_answered_min_commit_ts: u64,
    /// The commit timestamp of a 1PC answer.
    pub(crate) one_pc_commit_ts: u64,
    /// The primary's prewrite succeeded.
    pub(crate) primary_done: bool,
    /// Locks of other transactions met, to resolve before trying `blocked` again.
    pub(crate) locks: Vec<LockInfo>,
    /// Items to prewrite again once `locks` are resolved.
    pub(crate) blocked: Vec<usize>,
}

impl PrewritePlan {
    /// Prewrites of `mutations` (wire form, request keys, sorted) with `actions`.
    pub(crate) fn new(
        shape: PrewriteShape,
        mutations: Vec<kvrpcpb::Mutation>,
        actions: Vec<i32>,
        async_commit: bool,
        one_pc: bool,
        min_commit_ts: u64,
    ) -> Self {
        let primary_item = mutations.iter().position(|m| m.key == shape.primary);
        let secondaries = if async_commit {
            mutations
                .iter()
                .filter(|m| m.key != shape.primary && m.op != kvrpcpb::Op::CheckNotExists as i32)
                .map(|m| m.key.clone())
                .collect()
        } else {
            Vec::new()
        };
        let built = vec![false; mutations.len()];
        Self {
            shape,
            mutations,
            actions,
            primary_item,
            secondaries,
            built,
            async_commit,
            one_pc,
            min_commit_ts,
            max_answered_min_commit_ts: 0,
            one_pc_commit_ts: 0,
            primary_done: false,
            locks: Vec::new(),
            blocked: Vec::new(),
        }
    }

    /// Turns async commit off (TiKV declined it, or the commit falls back).
    pub(crate) fn fall_back(&mut self) {
        self.async_commit = false;
        self.one_pc = false;
    }

    fn request(&self, items: &[usize], txn_size: u64) -> kvrpcpb::PrewriteRequest {
        let is_primary_batch = self.primary_item.is_some_and(|p| items.contains(&p));
        let start_ts = self.shape.start_ts.version();
        // The commit must land after the start (and, for async commit, after every reader
        // that could have seen a timestamp before now: the floor set by the committer).
        let min_commit_ts = self
            .min_commit_ts
            .max(start_ts.saturating_add(1))
            .max(self.shape.for_update_ts.saturating_add(1));
        // Sized up front: a filtered iterator would grow the vectors step by step.
        let mut mutations = Vec::with_capacity(items.len());
        mutations.extend(items.iter().filter_map(|&i| self.mutations.get(i).cloned()));
        let mut pessimistic_actions = Vec::with_capacity(items.len());
        pessimistic_actions.extend(items.iter().filter_map(|&i| self.actions.get(i).copied()));
        kvrpcpb::PrewriteRequest {
            context: Some(self.shape.context.clone()),
            mutations,
            primary_lock: self.shape.primary.clone(),
            start_version: start_ts,
            lock_ttl: self.shape.lock_ttl,
            pessimistic_actions,
            txn_size,
            min_commit_ts,
            max_commit_ts: if self.async_commit || self.one_pc {
                self.shape.max_commit_ts
            } else {
                0
            },
            use_async_commit: self.async_commit,
            secondaries: if self.async_commit && is_primary_batch {
                self.secondaries.clone()
            } else {
                Vec::new()
            },
            try_one_pc: self.one_pc,
            for_update_ts: self.shape.for_update_ts,
            assertion_level: self.shape.assertion_level,
            ..Default::default()
        }
    }

    fn on_success(
        &mut self,
        items: &[usize],
        response: &kvrpcpb::PrewriteResponse,
    ) -> Result<(), Error> {
        if self.primary_item.is_some_and(|p| items.contains(&p)) {
            self.primary_done = true;
        }
        if self.one_pc {
            if response.one_pc_commit_ts == 0 {
                if response.min_commit_ts != 0 {
                    return Err(Error::UnexpectedResponse(
                        "a declined 1PC prewrite answered a min_commit_ts".to_owned(),
                    ));
                }
                // TiKV declined 1PC: the locks are written, commit them in two phases.
                self.fall_back();
            } else {
                self.one_pc_commit_ts = response.one_pc_commit_ts;
            }
            return Ok(());
        }
        if self.async_commit {
            if response.min_commit_ts == 0 {
                // TiKV cannot compute a safe commit timestamp: fall back to two phases.
                self.async_commit = false;
            } else {
                self.max_answered_min_commit_ts =
                    self.max_answered_min_commit_ts.max(response.min_commit_ts);
            }
        }
        Ok(())
    }

    fn on_key_errors(
        &mut self,
        items: &[usize],
        errors: &[kvrpcpb::KeyError],
    ) -> Result<(), Error> {
        let start_ts = self.shape.start_ts;
        for err in errors {
            let mut met: Vec<LockInfo> = Vec::new();
            if let Some(lock) = &err.locked {
                if lock.shared_lock_infos.is_empty() {
                    met.push(LockInfo::from_proto(lock));
                } else {
                    // A shared lock is a wrapper: its holders are what to resolve.
                    met.extend(lock.shared_lock_infos.iter().map(LockInfo::from_proto));
                }
            } else {
                return Err(KeyError::from_proto(err).into());
            }
            for lock in met {
                // An optimistic transaction meeting a younger transaction's lock fails
                // anyway (a write conflict at commit); say so now. Under the no-resolve
                // policy every lock is such a conflict (client-go `extractKeyErrs`).
                if (lock.lock_ts > start_ts && !self.shape.pessimistic) || self.shape.no_resolve {
                    return Err(KeyError::WriteConflict {
                        start_ts,
                        conflict_start_ts: lock.lock_ts,
                        conflict_commit_ts: Timestamp::from_version(0),
                        key: lock.key.clone(),
                        primary: self.shape.primary.clone(),
                        reason: WriteConflictReason::Optimistic,
                    }
                    .into());
                }
                self.locks.push(lock);
            }
        }
        // The whole request goes again after the locks are resolved.
        self.blocked.extend_from_slice(items);
        Ok(())
    }
}

impl Plan for PrewritePlan {
    fn build(
        &mut self,
        items: &[usize],
        _route: &Route,
        send: &mut dyn FnMut(Items, Box<StoreRequest>),
    ) {
        if items.len() != self.mutations.len() {
            // More than one region: one request cannot carry the transaction.
            self.one_pc = false;
        }
        let runs = batch::by_size(items.len(), self.shape.batch_limit, |i| {
            items
                .get(i)
                .and_then(|&item| self.mutations.get(item))
                .map_or(0, |m| m.key.len() + m.value.len())
        });
        if runs.len() > 1 {
            self.one_pc = false;
        }
        let regrouped = items
            .iter()
            .any(|&i| self.built.get(i).copied().unwrap_or(false));
        let txn_size = if regrouped {
            u64::MAX
        } else {
            u64::try_from(items.len()).unwrap_or(u64::MAX)
        };
        for &item in items {
            if let Some(built) = self.built.get_mut(item) {
                *built = true;
            }
        }
        for run in runs {
            let chunk = &items[run];
            let request = self.request(chunk, txn_size);
            send(
                Items::from_slice(chunk),
                Box::new(StoreRequest::Prewrite(request)),
            );
        }
    }

    fn absorb(
        &mut self,
        items: &[usize],
        _route: &Route,
        response: Box<StoreResponse>,
    ) -> Result<(), Error> {
        let StoreResponse::Prewrite(response) = *response else {
            return Err(Error::UnexpectedResponse(format!(
                "mismatched response {response:?}"
            )));
        };
        if response.errors.is_empty() {
            self.on_success(items, &response)
        } else {
            self.on_key_errors(items, &response.errors)
        }
    }
}
