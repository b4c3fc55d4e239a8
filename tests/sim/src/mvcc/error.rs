//! Failures of MVCC actions and their translation into `kvrpcpb::KeyError`.

use std::fmt;

use bytes::Bytes;
use tikv_proto::kvrpcpb::{self, write_conflict::Reason as ConflictReason};

/// Why a pessimistic lock that a prewrite expected was not there (only shown in `abort` text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockNotFoundReason {
    /// Another transaction holds the key.
    LockTsMismatch,
    /// The lock is there but with a different `for_update_ts` than the constraint says.
    LockForUpdateTsMismatch,
    /// No lock and a write newer than the transaction exists, so it cannot be amended.
    LockMissingAmendFail,
    /// A commit newer than `for_update_ts` exists on a key that should have been locked.
    NonLockKeyConflict,
}

/// One failed MVCC action; converted to a `KeyError` at the edge, as TiKV's storage does.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TxnError {
    /// The key holds a lock that blocks the action.
    KeyIsLocked(Box<kvrpcpb::LockInfo>),
    /// A conflicting write (or lock, for RC-check-ts reads) exists.
    WriteConflict {
        start_ts: u64,
        conflict_start_ts: u64,
        conflict_commit_ts: u64,
        key: Bytes,
        primary: Bytes,
        reason: ConflictReason,
    },
    /// Insert / CheckNotExists / existence-checked lock on a key that has a value.
    AlreadyExist { key: Bytes, existing_start_ts: u64 },
    /// Commit found neither the lock nor a commit record.
    TxnLockNotFound {
        start_ts: u64,
        commit_ts: u64,
        key: Bytes,
    },
    /// Neither lock nor record of the transaction on its primary.
    TxnNotFound { start_ts: u64, key: Bytes },
    /// The commit ts is below the lock's `min_commit_ts`.
    CommitTsExpired {
        start_ts: u64,
        commit_ts: u64,
        key: Bytes,
        min_commit_ts: u64,
    },
    /// Async commit / 1PC: the computed `min_commit_ts` exceeds `max_commit_ts`.
    CommitTsTooLarge {
        start_ts: u64,
        min_commit_ts: u64,
        max_commit_ts: u64,
    },
    /// A mutation's existence assertion does not hold.
    AssertionFailed {
        start_ts: u64,
        key: Bytes,
        assertion: i32,
        existing_start_ts: u64,
        existing_commit_ts: u64,
    },
    /// CheckTxnStatus with `verify_is_primary` met a lock whose primary is another key.
    PrimaryMismatch(Box<kvrpcpb::LockInfo>),
    /// A rollback was asked for a transaction that is already committed.
    Committed {
        start_ts: u64,
        commit_ts: u64,
        key: Bytes,
    },
    /// A pessimistic prewrite did not find the pessimistic lock it needs.
    PessimisticLockNotFound {
        start_ts: u64,
        key: Bytes,
        reason: LockNotFoundReason,
    },
    /// The transaction was already rolled back on this key.
    PessimisticLockRolledBack { start_ts: u64, key: Bytes },
    /// The transaction's own lock on the key has the wrong kind.
    LockTypeNotMatch {
        start_ts: u64,
        key: Bytes,
        pessimistic: bool,
    },
    /// A flush carried a generation not newer than the lock's.
    GenerationOutOfOrder {
        generation: u64,
        key: Bytes,
        lock_generation: u64,
    },
    /// `lock_only_if_exists` without `return_values`.
    LockIfExistsFailed { start_ts: u64, key: Bytes },
    /// A commit ts that is not greater than the start ts.
    InvalidTxnTso { start_ts: u64, commit_ts: u64 },
    /// Malformed request (empty key, unknown enum value, ...).
    BadRequest(String),
}

impl TxnError {
    /// Builds the `KeyError` TiKV would send for this failure.
    pub(crate) fn to_key_error(&self) -> kvrpcpb::KeyError {
        let mut err = kvrpcpb::KeyError::default();
        match self {
            Self::KeyIsLocked(info) => err.locked = Some(info.clone()),
            Self::WriteConflict {
                start_ts,
                conflict_start_ts,
                conflict_commit_ts,
                key,
                primary,
                reason,
            } => {
                err.conflict = Some(kvrpcpb::WriteConflict {
                    start_ts: *start_ts,
                    conflict_ts: *conflict_start_ts,
                    key: key.clone(),
                    primary: primary.clone(),
                    conflict_commit_ts: *conflict_commit_ts,
                    reason: *reason as i32,
                });
                // Old clients only look at `retryable`.
                err.retryable = self.to_string();
            }
            Self::AlreadyExist { key, .. } => {
                err.already_exist = Some(kvrpcpb::AlreadyExist { key: key.clone() });
            }
            Self::TxnLockNotFound { key, .. } => {
                err.retryable = self.to_string();
                err.txn_lock_not_found = Some(kvrpcpb::TxnLockNotFound { key: key.clone() });
            }
            Self::TxnNotFound { start_ts, key } => {
                err.txn_not_found = Some(kvrpcpb::TxnNotFound {
                    start_ts: *start_ts,
                    primary_key: key.clone(),
                });
            }
            Self::CommitTsExpired {
                start_ts,
                commit_ts,
                key,
                min_commit_ts,
            } => {
                err.commit_ts_expired = Some(kvrpcpb::CommitTsExpired {
                    start_ts: *start_ts,
                    attempted_commit_ts: *commit_ts,
                    key: key.clone(),
                    min_commit_ts: *min_commit_ts,
                });
            }
            Self::CommitTsTooLarge { min_commit_ts, .. } => {
                err.commit_ts_too_large = Some(kvrpcpb::CommitTsTooLarge {
                    commit_ts: *min_commit_ts,
                });
            }
            Self::AssertionFailed {
                start_ts,
                key,
                assertion,
                existing_start_ts,
                existing_commit_ts,
            } => {
                err.assertion_failed = Some(kvrpcpb::AssertionFailed {
                    start_ts: *start_ts,
                    key: key.clone(),
                    assertion: *assertion,
                    existing_start_ts: *existing_start_ts,
                    existing_commit_ts: *existing_commit_ts,
                });
            }
            Self::PrimaryMismatch(info) => {
                err.primary_mismatch = Some(kvrpcpb::PrimaryMismatch {
                    lock_info: Some(info.clone()),
                });
            }
            _ => err.abort = self.to_string(),
        }
        err
    }
}

impl fmt::Display for TxnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KeyIsLocked(info) => write!(
                f,
                "key {:?} is locked by txn {} (primary {:?})",
                info.key, info.lock_version, info.primary_lock
            ),
            Self::WriteConflict {
                start_ts,
                conflict_start_ts,
                conflict_commit_ts,
                key,
                primary,
                reason,
            } => write!(
                f,
                "write conflict ({}): txn {start_ts} on key {key:?} (primary {primary:?}) \
                 meets txn {conflict_start_ts} committed at {conflict_commit_ts}",
                reason.as_str_name()
            ),
            Self::AlreadyExist {
                key,
                existing_start_ts,
            } => write!(
                f,
                "key {key:?} already exists (written by txn {existing_start_ts})"
            ),
            Self::TxnLockNotFound {
                start_ts,
                commit_ts,
                key,
            } => write!(
                f,
                "txn {start_ts} has no lock on key {key:?} to commit at {commit_ts}"
            ),
            Self::TxnNotFound { start_ts, key } => {
                write!(f, "txn {start_ts} not found on primary {key:?}")
            }
            Self::CommitTsExpired {
                start_ts,
                commit_ts,
                key,
                min_commit_ts,
            } => write!(
                f,
                "txn {start_ts} tried commit ts {commit_ts} on key {key:?} below \
                 min_commit_ts {min_commit_ts}"
            ),
            Self::CommitTsTooLarge {
                start_ts,
                min_commit_ts,
                max_commit_ts,
            } => write!(
                f,
                "txn {start_ts}: min_commit_ts {min_commit_ts} exceeds max_commit_ts {max_commit_ts}"
            ),
            Self::AssertionFailed {
                start_ts,
                key,
                assertion,
                existing_start_ts,
                existing_commit_ts,
            } => write!(
                f,
                "txn {start_ts}: assertion {assertion} on key {key:?} failed (existing version \
                 {existing_start_ts} committed at {existing_commit_ts})"
            ),
            Self::PrimaryMismatch(info) => write!(
                f,
                "lock of txn {} on {:?} names primary {:?}",
                info.lock_version, info.key, info.primary_lock
            ),
            Self::Committed {
                start_ts,
                commit_ts,
                key,
            } => write!(
                f,
                "txn {start_ts} is already committed at {commit_ts} on key {key:?}"
            ),
            Self::PessimisticLockNotFound {
                start_ts,
                key,
                reason,
            } => write!(
                f,
                "pessimistic lock not found: txn {start_ts}, key {key:?}, reason {reason:?}"
            ),
            Self::PessimisticLockRolledBack { start_ts, key } => write!(
                f,
                "txn {start_ts} was rolled back on key {key:?}, cannot lock it"
            ),
            Self::LockTypeNotMatch {
                start_ts,
                key,
                pessimistic,
            } => write!(
                f,
                "lock type mismatch: txn {start_ts}, key {key:?}, found pessimistic lock: \
                 {pessimistic}"
            ),
            Self::GenerationOutOfOrder {
                generation,
                key,
                lock_generation,
            } => write!(
                f,
                "generation out of order: flush generation {generation} on key {key:?}, \
                 lock generation {lock_generation}"
            ),
            Self::LockIfExistsFailed { start_ts, key } => write!(
                f,
                "txn {start_ts}: lock_only_if_exists on key {key:?} requires return_values"
            ),
            Self::InvalidTxnTso {
                start_ts,
                commit_ts,
            } => write!(
                f,
                "invalid transaction tso: start_ts {start_ts}, commit_ts {commit_ts}"
            ),
            Self::BadRequest(msg) => write!(f, "bad request: {msg}"),
        }
    }
}
