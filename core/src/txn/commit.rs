//! What a commit is asked to do and what it reports: mutations, commit options, outcome
//! (the data; the committer that acts on it is `ops::txn::commit`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use crate::ops::txn::Priority;
use crate::oracle::Timestamp;
use crate::time::Time;

/// What a mutation does to its key when the transaction commits (TiKV's mutation ops).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MutationOp {
    /// Write the value.
    Put,
    /// Write the value; the key must not exist (TiKV answers `AlreadyExists` otherwise).
    Insert,
    /// Delete the key.
    Delete,
    /// Lock the key without writing it, so that a concurrent write to it conflicts.
    Lock,
    /// Check at prewrite that the key does not exist; nothing is locked or written.
    CheckNotExists,
}

impl MutationOp {
    fn to_proto(self) -> kvrpcpb::Op {
        match self {
            Self::Put => kvrpcpb::Op::Put,
            Self::Insert => kvrpcpb::Op::Insert,
            Self::Delete => kvrpcpb::Op::Del,
            Self::Lock => kvrpcpb::Op::Lock,
            Self::CheckNotExists => kvrpcpb::Op::CheckNotExists,
        }
    }
}

/// What a mutation asserts about its key's existence before the write (checked by TiKV
/// at prewrite under an assertion level other than off).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Assertion {
    /// Nothing.
    #[default]
    None,
    /// The key exists.
    Exist,
    /// The key does not exist.
    NotExist,
}

impl Assertion {
    fn to_proto(self) -> kvrpcpb::Assertion {
        match self {
            Self::None => kvrpcpb::Assertion::None,
            Self::Exist => kvrpcpb::Assertion::Exist,
            Self::NotExist => kvrpcpb::Assertion::NotExist,
        }
    }
}

/// How strictly TiKV checks mutation assertions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AssertionLevel {
    /// Assertions are not checked.
    #[default]
    Off,
    /// Checked where it costs nothing extra.
    Fast,
    /// Always checked.
    Strict,
}

impl AssertionLevel {
    fn to_proto(self) -> kvrpcpb::AssertionLevel {
        match self {
            Self::Off => kvrpcpb::AssertionLevel::Off,
            Self::Fast => kvrpcpb::AssertionLevel::Fast,
            Self::Strict => kvrpcpb::AssertionLevel::Strict,
        }
    }
}

/// Whether a write may proceed on a store whose disk is (almost) full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DiskFullOpt {
    /// Refused once the disk is almost full (the default).
    #[default]
    NotAllowedOnFull,
    /// Allowed while the disk is almost full.
    AllowedOnAlmostFull,
    /// Allowed even when the disk is full.
    AllowedOnAlreadyFull,
}

impl DiskFullOpt {
    fn to_proto(self) -> kvrpcpb::DiskFullOpt {
        match self {
            Self::NotAllowedOnFull => kvrpcpb::DiskFullOpt::NotAllowedOnFull,
            Self::AllowedOnAlmostFull => kvrpcpb::DiskFullOpt::AllowedOnAlmostFull,
            Self::AllowedOnAlreadyFull => kvrpcpb::DiskFullOpt::AllowedOnAlreadyFull,
        }
    }
}

/// What a prewrite does when it meets another transaction's lock (client-go's
/// `PrewriteEncounterLockPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PrewriteLockPolicy {
    /// Resolve locks of older transactions (checking their status, waiting out live
    /// ones) and prewrite again (the default). A lock of a newer transaction fails an
    /// optimistic commit with a write conflict at once.
    #[default]
    TryResolve,
    /// Resolve nothing: any lock met fails the commit with a write conflict naming the
    /// lock's transaction and key, and what was prewritten is rolled back. Lets the
    /// caller retry another way (client-go's users retry in pessimistic mode).
    NoResolve,
}

/// A predicate a commit timestamp must pass (client-go's `SetCommitTSUpperBoundCheck`):
/// `false` aborts the commit. Compared by identity.
#[derive(Clone)]
pub struct CommitTsUpperBoundCheck(Arc<dyn Fn(Timestamp) -> bool + Send + Sync>);

impl CommitTsUpperBoundCheck {
    /// A check that accepts the timestamps `check` returns `true` for.
    pub fn new(check: impl Fn(Timestamp) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(check))
    }

    /// Whether `commit_ts` may be committed at.
    pub fn allows(&self, commit_ts: Timestamp) -> bool {
        (self.0)(commit_ts)
    }
}

impl std::fmt::Debug for CommitTsUpperBoundCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitTsUpperBoundCheck(..)")
    }
}

impl PartialEq for CommitTsUpperBoundCheck {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CommitTsUpperBoundCheck {}

/// One key's mutation, as the write buffer produced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutation {
    /// What to do.
    pub op: MutationOp,
    /// The key (the user's, without keyspace prefix).
    pub key: Bytes,
    /// The value (empty for anything but puts and inserts).
    pub value: Bytes,
    /// What TiKV checks about the key's existence.
    pub assertion: Assertion,
    /// The key is pessimistically locked by this transaction: prewrite checks the lock.
    pub pessimistic: bool,
    /// Check the key's constraints at prewrite (a pessimistic transaction's lazily
    /// checked key).
    pub constraint_check: bool,
}

impl Mutation {
    /// A put of `value` at `key`, with no assertion.
    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self::new(MutationOp::Put, key.into(), value.into())
    }

    /// A delete of `key`.
    pub fn delete(key: impl Into<Bytes>) -> Self {
        Self::new(MutationOp::Delete, key.into(), Bytes::new())
    }

    /// A mutation `op` of `key` with `value`, no assertion, not pessimistic.
    pub fn new(op: MutationOp, key: Bytes, value: Bytes) -> Self {
        Self {
            op,
            key,
            value,
            assertion: Assertion::None,
            pessimistic: false,
            constraint_check: false,
        }
    }

    /// The wire mutation with its key already in the request key space.
    pub(crate) fn to_proto(&self, request_key: Bytes) -> kvrpcpb::Mutation {
        kvrpcpb::Mutation {
            op: self.op.to_proto() as i32,
            key: request_key,
            value: self.value.clone(),
            assertion: self.assertion.to_proto() as i32,
        }
    }

    /// The prewrite check TiKV runs on the key.
    pub(crate) fn pessimistic_action(&self) -> kvrpcpb::prewrite_request::PessimisticAction {
        use kvrpcpb::prewrite_request::PessimisticAction;
        if self.pessimistic {
            PessimisticAction::DoPessimisticCheck
        } else if self.constraint_check {
            PessimisticAction::DoConstraintCheck
        } else {
            PessimisticAction::SkipPessimisticCheck
        }
    }
}

/// How a transaction commits (client-go's per-transaction commit settings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitOptions {
    /// Try async commit: the commit is decided once every prewrite succeeds, and the
    /// secondaries are committed in the background.
    pub async_commit: bool,
    /// Try one-phase commit when every mutation fits one request to one region.
    pub try_one_pc: bool,
    /// Give up linearizability for async commit and 1PC: the commit timestamp is not
    /// pushed past a fresh TSO timestamp (one TSO round trip less).
    pub causal_consistency: bool,
    /// Commit only with a timestamp above this one (client-go's `commitWaitUntilTSO`),
    /// waiting for TSO to pass it for at most `commit_wait_until_tso_timeout`.
    pub commit_wait_until_tso: Option<Timestamp>,
    /// How long to wait for TSO to pass `commit_wait_until_tso` (zero: fail at once).
    pub commit_wait_until_tso_timeout: Duration,
    /// Scheduling priority of the commit's requests.
    pub priority: Priority,
    /// Ask TiKV to sync its log on these writes.
    pub sync_log: bool,
    /// The request source label TiKV accounts the writes under.
    pub request_source: String,
    /// The resource group the writes are charged to ("" = default).
    pub resource_group: String,
    /// An opaque tag TiKV attaches to the writes in its resource accounting.
    pub resource_group_tag: Bytes,
    /// Whether the writes may proceed on an (almost) full disk.
    pub disk_full_opt: DiskFullOpt,
    /// The transaction's source (CDC uses it to tell replicated writes apart).
    pub txn_source: u64,
    /// How strictly TiKV checks the mutations' assertions.
    pub assertion_level: AssertionLevel,
    /// What the prewrites do with other transactions' locks.
    pub prewrite_lock_policy: PrewriteLockPolicy,
    /// A check the two-phase commit timestamp must pass before the primary is committed
    /// (`None`: no check). Setting one turns async commit and 1PC off, since those
    /// decide their commit timestamp in the stores.
    pub commit_ts_upper_bound_check: Option<CommitTsUpperBoundCheck>,
    /// Test levers (client-go's commit failpoints).
    #[cfg(any(test, feature = "testing"))]
    pub knobs: CommitKnobs,
}

/// Levers that stop a commit part-way, for tests that need what a crashed or slow client
/// leaves behind (client-go's commit failpoints). Only with the `testing` feature.
#[cfg(any(test, feature = "testing"))]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitKnobs {
    /// A two-phase commit stops once every key is prewritten, leaving the locks: the
    /// commit answers a zero commit timestamp (client-go `beforeCommit` failing plus
    /// `commitFailedSkipCleanup`).
    pub stop_after_prewrite: bool,
    /// The keys committed after the decision (2PC secondaries, every async-commit key)
    /// are left locked (client-go `asyncCommitDoNothing`, `beforeCommitSecondaries`
    /// "skip").
    pub skip_secondaries: bool,
    /// A failed commit leaves its prewritten locks (client-go `commitFailedSkipCleanup`).
    pub skip_cleanup: bool,
    /// The locks' TTL in milliseconds, instead of the computed one (client-go
    /// `twoPCShortLockTTL`).
    pub lock_ttl_ms: Option<u64>,
    /// The backoff budget of the prewrites and of the primary's commit in milliseconds,
    /// instead of 40 s each (client-go's tests lower `CommitMaxBackoff` so that a commit
    /// failing for good fails fast).
    pub max_backoff_ms: Option<u64>,
    /// Keys of one region from which the commit splits it before prewriting, instead of
    /// 100,000 (client-go's tests lower `preSplitDetectThreshold`).
    pub pre_split_detect_threshold: Option<usize>,
    /// Bytes per new region of such a split, instead of 32 MiB (client-go's tests lower
    /// `preSplitSizeThreshold`).
    pub pre_split_size_threshold: Option<u64>,
}

impl Default for CommitOptions {
    fn default() -> Self {
        Self {
            async_commit: false,
            try_one_pc: false,
            causal_consistency: false,
            commit_wait_until_tso: None,
            commit_wait_until_tso_timeout: Duration::from_secs(1),
            priority: Priority::Normal,
            sync_log: false,
            request_source: String::new(),
            resource_group: String::new(),
            resource_group_tag: Bytes::new(),
            disk_full_opt: DiskFullOpt::NotAllowedOnFull,
            txn_source: 0,
            assertion_level: AssertionLevel::Off,
            prewrite_lock_policy: PrewriteLockPolicy::TryResolve,
            commit_ts_upper_bound_check: None,
            #[cfg(any(test, feature = "testing"))]
            knobs: CommitKnobs::default(),
        }
    }
}

impl CommitOptions {
    /// The request context of the commit's writes.
    pub(crate) fn context(&self, max_execution_ms: u64) -> kvrpcpb::Context {
        let mut context = kvrpcpb::Context {
            priority: self.priority.to_proto(),
            sync_log: self.sync_log,
            resource_group_tag: self.resource_group_tag.clone(),
            disk_full_opt: self.disk_full_opt.to_proto() as i32,
            txn_source: self.txn_source,
            max_execution_duration_ms: max_execution_ms,
            request_source: self.request_source.clone(),
            ..Default::default()
        };
        if !self.resource_group.is_empty() {
            context.resource_control_context = Some(kvrpcpb::ResourceControlContext {
                resource_group_name: self.resource_group.clone(),
                ..Default::default()
            });
        }
        context
    }

    pub(crate) fn assertion_level_proto(&self) -> i32 {
        self.assertion_level.to_proto() as i32
    }
}

/// A transaction's writes, handed to the machine to commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitRequest {
    /// The transaction's start timestamp.
    pub start_ts: Timestamp,
    /// When (machine time) the transaction began: its locks live longer the longer it ran.
    pub begun_at: Time,
    /// The mutations, sorted by key, one per key.
    pub mutations: Vec<Mutation>,
    /// The primary key (one of the mutations' keys; where the transaction's status lives).
    pub primary: Bytes,
    /// Keys plus values of every mutation, in bytes (sizes the lock TTL).
    pub size: u64,
    /// How to commit.
    pub options: CommitOptions,
}

/// Which protocol committed a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CommitMode {
    /// Prewrite, then commit the primary, then the secondaries.
    TwoPhase,
    /// Async commit: decided when every prewrite succeeded.
    AsyncCommit,
    /// One request to one region did it all.
    OnePc,
}

/// How a transaction committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitOutcome {
    /// The commit timestamp.
    pub commit_ts: Timestamp,
    /// The protocol that committed it.
    pub mode: CommitMode,
    /// Async commit was tried but TiKV declined it (the commit fell back to two phases).
    pub async_commit_fallback: bool,
    /// 1PC was tried but did not happen (several regions or batches, or TiKV declined).
    pub one_pc_fallback: bool,
}
