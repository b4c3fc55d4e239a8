//! Committing or rolling back a transaction's keys, batch by batch (client-go's
//! `actionCommit` and `actionCleanup`), and the background operation that finishes them
//! after the user has the answer.
//!
//! ```text
//!  (rollback) PrimaryBatch ── primary's batch done ──► Rest ── every batch done ──► Done
//!  (commit of secondaries)                             Rest ── every batch done ──► Done
//! ```

use std::time::Duration;

use bytes::Bytes;
use smallvec::SmallVec;
use tikv_proto::kvrpcpb;

use super::batch;
use crate::command::Output;
use crate::error::{Error, KeyError};
use crate::op::{Cx, Next, Operation};
use crate::oracle::Timestamp;
use crate::outbox::{Reply, RequestId};
use crate::rpc::{StoreRequest, StoreResponse};
use crate::sender::Route;
use crate::sender::dispatch::{Dispatch, DispatchInput, Items, Plan, Progress};

/// The largest gap between a rejected commit timestamp and the lock's `min_commit_ts`
/// that is still retried (an hour of physical time, client-go's check in `actionCommit`).
const MAX_COMMIT_TS_GAP: u64 = 3_600_000 << 18;

/// What is done to the keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeysAction {
    /// Commit them at `commit_ts`.
    Commit {
        commit_ts: Timestamp,
        async_commit: bool,
    },
    /// Roll them back.
    Rollback,
}

/// One commit's (or rollback's) requests, as a dispatch plan. With `primary_only`, only the
/// batch that holds the primary is sent; the other items are set aside in `deferred`.
#[derive(Debug)]
pub(crate) struct KeysPlan {
    pub(crate) action: KeysAction,
    start_ts: Timestamp,
    primary: Bytes,
    /// Request keys, indexed by item, sorted.
    keys: Vec<Bytes>,
    context: kvrpcpb::Context,
    batch_limit: usize,
    pub(crate) primary_only: bool,
    /// Items held back while only the primary's batch goes.
    pub(crate) deferred: Vec<usize>,
    /// The primary's commit was rejected as below its lock's `min_commit_ts`: these items
    /// go again with a fresh timestamp.
    pub(crate) expired: Vec<usize>,
    /// The primary's batch succeeded.
    pub(crate) primary_done: bool,
}

impl KeysPlan {
    /// Requests doing `action` to `keys` (request keys, sorted) of the transaction that
    /// started at `start_ts` with primary `primary`.
    pub(crate) fn new(
        action: KeysAction,
        start_ts: Timestamp,
        primary: Bytes,
        keys: Vec<Bytes>,
        context: kvrpcpb::Context,
        batch_limit: usize,
    ) -> Self {
        Self {
            action,
            start_ts,
            primary,
            keys,
            context,
            batch_limit,
            primary_only: false,
            deferred: Vec::new(),
            expired: Vec::new(),
            primary_done: false,
        }
    }

    /// The request keys of `items`.
    pub(crate) fn keys_of(&self, items: &[usize]) -> Vec<Bytes> {
        items
            .iter()
            .filter_map(|&item| self.keys.get(item).cloned())
            .collect()
    }

    /// Sets a new commit timestamp (after the old one was rejected).
    pub(crate) fn set_commit_ts(&mut self, ts: Timestamp) {
        if let KeysAction::Commit { commit_ts, .. } = &mut self.action {
            *commit_ts = ts;
        }
    }

    fn holds_primary(&self, items: &[usize]) -> bool {
        items
            .iter()
            .any(|&item| self.keys.get(item).is_some_and(|key| *key == self.primary))
    }

    fn request(&self, items: &[usize], is_primary: bool) -> StoreRequest {
        let keys = self.keys_of(items);
        match self.action {
            KeysAction::Commit {
                commit_ts,
                async_commit,
            } => StoreRequest::Commit(kvrpcpb::CommitRequest {
                context: Some(self.context.clone()),
                start_version: self.start_ts.version(),
                keys,
                commit_version: commit_ts.version(),
                commit_role: if is_primary {
                    kvrpcpb::CommitRole::Primary as i32
                } else {
                    kvrpcpb::CommitRole::Secondary as i32
                },
                primary_key: self.primary.clone(),
                use_async_commit: async_commit,
                ..Default::default()
            }),
            KeysAction::Rollback => StoreRequest::BatchRollback(kvrpcpb::BatchRollbackRequest {
                context: Some(self.context.clone()),
                start_version: self.start_ts.version(),
                keys,
                ..Default::default()
            }),
        }
    }
}

impl Plan for KeysPlan {
    fn build(
        &mut self,
        items: &[usize],
        _route: &Route,
        send: &mut dyn FnMut(Items, Box<StoreRequest>),
    ) {
        let runs = batch::by_size(items.len(), self.batch_limit, |i| {
            items
                .get(i)
                .and_then(|&item| self.keys.get(item))
                .map_or(0, Bytes::len)
        });
        for run in runs {
            let chunk = &items[run];
            let is_primary = self.holds_primary(chunk);
            if self.primary_only && !is_primary {
                self.deferred.extend_from_slice(chunk);
                continue;
            }
            let request = self.request(chunk, is_primary);
            send(Items::from_slice(chunk), Box::new(request));
        }
    }

    fn absorb(
        &mut self,
        items: &[usize],
        _route: &Route,
        response: Box<StoreResponse>,
    ) -> Result<(), Error> {
        let is_primary = self.holds_primary(items);
        let error = match *response {
            StoreResponse::Commit(r) => r.error,
            StoreResponse::BatchRollback(r) => r.error,
            other => {
                return Err(Error::UnexpectedResponse(format!(
                    "mismatched response {other:?}"
                )));
            }
        };
        let Some(error) = error else {
            if is_primary {
                self.primary_done = true;
            }
            return Ok(());
        };
        match KeyError::from_proto(&error) {
            KeyError::CommitTsExpired {
                key,
                attempted_commit_ts,
                min_commit_ts,
                ..
            } if matches!(self.action, KeysAction::Commit { .. }) => {
                if !is_primary || key != self.primary {
                    return Err(Error::UnexpectedResponse(
                        "commit ts rejected on a key that is not the primary".to_owned(),
                    ));
                }
                if min_commit_ts
                    .version()
                    .saturating_sub(attempted_commit_ts.version())
                    > MAX_COMMIT_TS_GAP
                {
                    return Err(KeyError::CommitTsExpired {
                        start_ts: self.start_ts,
                        attempted_commit_ts,
                        key,
                        min_commit_ts,
                    }
                    .into());
                }
                self.expired.extend_from_slice(items);
                Ok(())
            }
            other => Err(other.into()),
        }
    }
}

/// Commits or rolls back keys in the background, after the user has the transaction's
/// answer: a two-phase commit's secondaries, an async commit's keys, the rollback of a
/// failed commit. Nobody hears its end; locks it fails to clear are resolved by whoever
/// meets them.
#[derive(Debug)]
pub(crate) struct FinishKeys {
    dispatch: Dispatch,
    plan: KeysPlan,
    timeout: Duration,
    budget: Duration,
    /// Most requests out at once (the committer's concurrency).
    concurrency: usize,
}

impl FinishKeys {
    /// Does `plan` to its keys (routing keys `routing`, indexed like the plan's keys);
    /// with `primary_first`, the primary's batch goes before the rest (a rollback, so
    /// that a reader resolving a secondary finds the primary rolled back). At most
    /// `concurrency` requests are out at once.
    pub(crate) fn new(
        mut plan: KeysPlan,
        routing: SmallVec<[Bytes; 1]>,
        primary_first: bool,
        budget: Duration,
        timeout: Duration,
        concurrency: usize,
    ) -> Self {
        plan.primary_only = primary_first;
        Self {
            dispatch: Dispatch::new(routing, false, budget, timeout).with_max_inflight(concurrency),
            plan,
            timeout,
            budget,
            concurrency,
        }
    }

    fn drive(mut self: Box<Self>, cx: &mut Cx<'_>, input: DispatchInput) -> Next {
        match self.dispatch.handle(cx, input, &mut self.plan) {
            Progress::Pending => Next::Pending(self),
            Progress::Failed(err) => Next::Done(Err(err)),
            Progress::Done => {
                if self.plan.primary_only {
                    // The primary's batch is done; now everything else, in parallel.
                    self.plan.primary_only = false;
                    let rest = std::mem::take(&mut self.plan.deferred);
                    if rest.is_empty() {
                        return Next::Done(Ok(Output::Unit));
                    }
                    let routing = self.dispatch.keys_of(&rest);
                    let keys = self.plan.keys_of(&rest);
                    self.plan.keys = keys;
                    self.dispatch = Dispatch::new(routing, false, self.budget, self.timeout)
                        .with_max_inflight(self.concurrency);
                    return self.drive(cx, DispatchInput::Start);
                }
                Next::Done(Ok(Output::Unit))
            }
        }
    }
}

impl Operation for FinishKeys {
    fn on_start(self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        self.drive(cx, DispatchInput::Start)
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }

    fn on_reply(self: Box<Self>, cx: &mut Cx<'_>, id: RequestId, reply: Reply) -> Next {
        self.drive(cx, DispatchInput::Reply(id, reply))
    }

    fn on_timer(self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        self.drive(cx, DispatchInput::Timer)
    }
}
