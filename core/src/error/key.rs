//! Transactional key errors as matchable values.
//!
//! TiKV reports a failed key as a `KeyError` message with one field set; [`KeyError::from_proto`]
//! turns it into a variant carrying the fields callers act on (the lock to resolve, the
//! conflicting timestamps, the key), so the transaction layer and users match on them.

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use crate::oracle::Timestamp;

/// What kind of lock a transaction holds on a key (TiKV's lock types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LockKind {
    /// A prewritten put.
    Put,
    /// A prewritten delete.
    Delete,
    /// A lock-only mutation (read lock for a write set).
    Lock,
    /// A pessimistic lock, taken before prewrite.
    Pessimistic,
    /// A shared lock.
    Shared,
    /// A shared pessimistic lock.
    SharedPessimistic,
    /// A lock type this client does not know (its wire number).
    Other(i32),
}

impl LockKind {
    /// The kind of wire lock type `op`.
    pub fn from_proto(op: i32) -> Self {
        use kvrpcpb::Op;
        match Op::try_from(op) {
            Ok(Op::Put | Op::Insert) => Self::Put,
            Ok(Op::Del) => Self::Delete,
            Ok(Op::Lock | Op::CheckNotExists) => Self::Lock,
            Ok(Op::PessimisticLock) => Self::Pessimistic,
            Ok(Op::SharedLock) => Self::Shared,
            Ok(Op::SharedPessimisticLock) => Self::SharedPessimistic,
            Ok(Op::Rollback) | Err(_) => Self::Other(op),
        }
    }
}

/// A lock another transaction holds on a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    /// The locked key.
    pub key: Bytes,
    /// The primary key of the lock's transaction (where its status lives).
    pub primary: Bytes,
    /// The lock's transaction start timestamp.
    pub lock_ts: Timestamp,
    /// How long the lock lives after its transaction started, in milliseconds.
    pub ttl_ms: u64,
    /// How many keys the transaction writes in this region (small ones resolve cheaper).
    pub txn_size: u64,
    /// The lock's kind.
    pub kind: LockKind,
    /// The `for_update_ts` of a pessimistic lock.
    pub for_update_ts: Timestamp,
    /// Whether the transaction commits asynchronously (its status is in every lock).
    pub use_async_commit: bool,
    /// The smallest commit timestamp the transaction may still get.
    pub min_commit_ts: Timestamp,
    /// The async-commit secondaries (on the primary lock only).
    pub secondaries: Vec<Bytes>,
    /// For lock waits: milliseconds since the wait information last changed (0: unknown).
    pub duration_to_last_update_ms: u64,
}

impl LockInfo {
    /// The lock `info` describes.
    pub fn from_proto(info: &kvrpcpb::LockInfo) -> Self {
        Self {
            key: info.key.clone(),
            primary: info.primary_lock.clone(),
            lock_ts: Timestamp::from_version(info.lock_version),
            ttl_ms: info.lock_ttl,
            txn_size: info.txn_size,
            kind: LockKind::from_proto(info.lock_type),
            for_update_ts: Timestamp::from_version(info.lock_for_update_ts),
            use_async_commit: info.use_async_commit,
            min_commit_ts: Timestamp::from_version(info.min_commit_ts),
            secondaries: info.secondaries.clone(),
            duration_to_last_update_ms: info.duration_to_last_update_ms,
        }
    }
}

/// Why TiKV reported a write conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WriteConflictReason {
    /// Not said.
    Unknown,
    /// An optimistic transaction met a newer write.
    Optimistic,
    /// A pessimistic lock request should be retried.
    PessimisticRetry,
    /// The transaction was already rolled back.
    SelfRolledBack,
    /// A read-committed check found a newer version.
    RcCheckTs,
    /// A deferred uniqueness check failed.
    LazyUniquenessCheck,
    /// A conflict on a key that skipped pessimistic locking.
    NotLockedKeyConflict,
}

impl WriteConflictReason {
    fn from_proto(reason: i32) -> Self {
        use kvrpcpb::write_conflict::Reason;
        match Reason::try_from(reason) {
            Ok(Reason::Optimistic) => Self::Optimistic,
            Ok(Reason::PessimisticRetry) => Self::PessimisticRetry,
            Ok(Reason::SelfRolledBack) => Self::SelfRolledBack,
            Ok(Reason::RcCheckTs) => Self::RcCheckTs,
            Ok(Reason::LazyUniquenessCheck) => Self::LazyUniquenessCheck,
            Ok(Reason::NotLockedKeyConflict) => Self::NotLockedKeyConflict,
            Ok(Reason::Unknown) | Err(_) => Self::Unknown,
        }
    }
}

/// A transactional error on one key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is locked by another transaction: resolve the lock or wait, then retry.
    #[error("key {:?} is locked by transaction {}", String::from_utf8_lossy(&.0.key), .0.lock_ts)]
    Locked(LockInfo),
    /// Another transaction wrote the key after this one started.
    #[error(
        "write conflict on {:?}: transaction {start_ts} met transaction {conflict_start_ts} \
         committed at {conflict_commit_ts} ({reason:?})",
        String::from_utf8_lossy(key)
    )]
    WriteConflict {
        /// This transaction's start timestamp.
        start_ts: Timestamp,
        /// The conflicting transaction's start timestamp.
        conflict_start_ts: Timestamp,
        /// When the conflicting write committed.
        conflict_commit_ts: Timestamp,
        /// The key.
        key: Bytes,
        /// This transaction's primary key.
        primary: Bytes,
        /// Why TiKV reported it.
        reason: WriteConflictReason,
    },
    /// Waiting for the lock would close a cycle of waiters.
    #[error(
        "deadlock: waiting for the lock of transaction {lock_ts} on {:?}",
        String::from_utf8_lossy(lock_key)
    )]
    Deadlock {
        /// The start timestamp of the lock waited for.
        lock_ts: Timestamp,
        /// The key of that lock.
        lock_key: Bytes,
        /// The hash of the key that closes the cycle.
        deadlock_key_hash: u64,
        /// The key held by this transaction that closes the cycle.
        deadlock_key: Bytes,
    },
    /// The key exists where the mutation required it not to.
    #[error("key {:?} already exists", String::from_utf8_lossy(key))]
    AlreadyExists {
        /// The key.
        key: Bytes,
    },
    /// The commit timestamp is below the lock's `min_commit_ts`.
    #[error(
        "commit ts {attempted_commit_ts} of transaction {start_ts} is below the lock's min commit ts {min_commit_ts}"
    )]
    CommitTsExpired {
        /// The transaction's start timestamp.
        start_ts: Timestamp,
        /// The commit timestamp tried.
        attempted_commit_ts: Timestamp,
        /// The key.
        key: Bytes,
        /// What the commit timestamp must reach.
        min_commit_ts: Timestamp,
    },
    /// The transaction has neither a lock nor a record on its primary.
    #[error(
        "transaction {start_ts} not found (primary {:?})",
        String::from_utf8_lossy(primary)
    )]
    TxnNotFound {
        /// The transaction's start timestamp.
        start_ts: Timestamp,
        /// Its primary key.
        primary: Bytes,
    },
    /// The commit timestamp the server computed exceeds the caller's `max_commit_ts`.
    #[error("computed commit ts {commit_ts} is too large")]
    CommitTsTooLarge {
        /// The commit timestamp computed.
        commit_ts: Timestamp,
    },
    /// A mutation's assertion on the key's existence did not hold.
    #[error(
        "assertion failed on {:?} for transaction {start_ts}",
        String::from_utf8_lossy(key)
    )]
    AssertionFailed {
        /// The transaction's start timestamp.
        start_ts: Timestamp,
        /// The key.
        key: Bytes,
        /// What was asserted (TiKV's wire value: 1 exists, 2 does not exist).
        assertion: i32,
        /// The existing version's start timestamp.
        existing_start_ts: Timestamp,
        /// The existing version's commit timestamp.
        existing_commit_ts: Timestamp,
    },
    /// A status check met a lock that is not its transaction's primary.
    #[error("primary mismatch: the lock on {:?} is not a primary", String::from_utf8_lossy(&.0.key))]
    PrimaryMismatch(LockInfo),
    /// A commit found no lock of the transaction on the key.
    #[error("no lock of the transaction on {:?}", String::from_utf8_lossy(key))]
    TxnLockNotFound {
        /// The key.
        key: Bytes,
    },
    /// A retryable failure: restarting the transaction may succeed.
    #[error("retryable: {0}")]
    Retryable(String),
    /// The transaction must abort.
    #[error("abort: {0}")]
    Abort(String),
    /// A key error this client does not know.
    #[error("key error: {0}")]
    Other(String),
}

impl KeyError {
    /// The error `err` describes (the first field set, in TiKV's order of precedence).
    pub fn from_proto(err: &kvrpcpb::KeyError) -> Self {
        let ts = Timestamp::from_version;
        if let Some(lock) = &err.locked {
            return Self::Locked(LockInfo::from_proto(lock));
        }
        if let Some(c) = &err.conflict {
            return Self::WriteConflict {
                start_ts: ts(c.start_ts),
                conflict_start_ts: ts(c.conflict_ts),
                conflict_commit_ts: ts(c.conflict_commit_ts),
                key: c.key.clone(),
                primary: c.primary.clone(),
                reason: WriteConflictReason::from_proto(c.reason),
            };
        }
        if let Some(d) = &err.deadlock {
            return Self::Deadlock {
                lock_ts: ts(d.lock_ts),
                lock_key: d.lock_key.clone(),
                deadlock_key_hash: d.deadlock_key_hash,
                deadlock_key: d.deadlock_key.clone(),
            };
        }
        if let Some(e) = &err.already_exist {
            return Self::AlreadyExists { key: e.key.clone() };
        }
        if let Some(e) = &err.commit_ts_expired {
            return Self::CommitTsExpired {
                start_ts: ts(e.start_ts),
                attempted_commit_ts: ts(e.attempted_commit_ts),
                key: e.key.clone(),
                min_commit_ts: ts(e.min_commit_ts),
            };
        }
        if let Some(e) = &err.txn_not_found {
            return Self::TxnNotFound {
                start_ts: ts(e.start_ts),
                primary: e.primary_key.clone(),
            };
        }
        if let Some(e) = &err.commit_ts_too_large {
            return Self::CommitTsTooLarge {
                commit_ts: ts(e.commit_ts),
            };
        }
        if let Some(e) = &err.assertion_failed {
            return Self::AssertionFailed {
                start_ts: ts(e.start_ts),
                key: e.key.clone(),
                assertion: e.assertion,
                existing_start_ts: ts(e.existing_start_ts),
                existing_commit_ts: ts(e.existing_commit_ts),
            };
        }
        if let Some(e) = &err.primary_mismatch {
            let lock = e.lock_info.as_deref().map(LockInfo::from_proto);
            if let Some(lock) = lock {
                return Self::PrimaryMismatch(lock);
            }
        }
        if let Some(e) = &err.txn_lock_not_found {
            return Self::TxnLockNotFound { key: e.key.clone() };
        }
        if !err.retryable.is_empty() {
            return Self::Retryable(err.retryable.clone());
        }
        if !err.abort.is_empty() {
            return Self::Abort(err.abort.clone());
        }
        Self::Other(format!("{err:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports client-go's `TestNewLockZeroTTL` (lock_test.go): a lock TiKV reports without a
    /// TTL has TTL 0 (which the resolver reads as "resolve unconditionally").
    #[test]
    fn test_new_lock_zero_ttl() {
        let lock = LockInfo::from_proto(&kvrpcpb::LockInfo::default());
        assert_eq!(lock.ttl_ms, 0);
    }

    #[test]
    fn lock_errors_carry_the_lock() {
        let err = kvrpcpb::KeyError {
            locked: Some(Box::new(kvrpcpb::LockInfo {
                primary_lock: Bytes::from_static(b"p"),
                lock_version: 7,
                key: Bytes::from_static(b"k"),
                lock_ttl: 3_000,
                lock_type: kvrpcpb::Op::PessimisticLock as i32,
                use_async_commit: true,
                min_commit_ts: 9,
                ..Default::default()
            })),
            ..Default::default()
        };
        let KeyError::Locked(lock) = KeyError::from_proto(&err) else {
            panic!("a lock error");
        };
        assert_eq!(lock.lock_ts, Timestamp::from_version(7));
        assert_eq!(lock.kind, LockKind::Pessimistic);
        assert_eq!(lock.primary.as_ref(), b"p");
        assert!(lock.use_async_commit);
        assert_eq!(lock.min_commit_ts.version(), 9);
    }

    #[test]
    fn conflicts_and_strings_map_to_their_variants() {
        let conflict = kvrpcpb::KeyError {
            conflict: Some(kvrpcpb::WriteConflict {
                start_ts: 1,
                conflict_ts: 2,
                conflict_commit_ts: 3,
                key: Bytes::from_static(b"k"),
                reason: kvrpcpb::write_conflict::Reason::Optimistic as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(
            KeyError::from_proto(&conflict),
            KeyError::WriteConflict { reason: WriteConflictReason::Optimistic, conflict_commit_ts, .. }
                if conflict_commit_ts.version() == 3
        ));
        let retryable = kvrpcpb::KeyError {
            retryable: "try again".into(),
            ..Default::default()
        };
        assert_eq!(
            KeyError::from_proto(&retryable),
            KeyError::Retryable("try again".into())
        );
        assert!(matches!(
            KeyError::from_proto(&kvrpcpb::KeyError::default()),
            KeyError::Other(_)
        ));
        let exists = kvrpcpb::KeyError {
            already_exist: Some(kvrpcpb::AlreadyExist {
                key: Bytes::from_static(b"x"),
            }),
            ..Default::default()
        };
        let err = crate::Error::from(KeyError::from_proto(&exists));
        assert!(matches!(
            err.key_error(),
            Some(KeyError::AlreadyExists { key }) if key.as_ref() == b"x"
        ));
    }
}
