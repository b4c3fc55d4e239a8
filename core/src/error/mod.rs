//! The one error type users see, with matchable kinds.
//!
//! Servers' errors arrive as protobuf messages; they are turned into the types here once,
//! where they are received, so that callers match on variants and fields rather than on
//! message text. Retryable region errors never reach users unless the backoff budget runs
//! out ([`Error::BackoffExhausted`] names the kind that ran out).

mod key;
mod kinds;

use tikv_proto::rpc::RpcError;

pub use key::{KeyError, LockInfo, LockKind, WriteConflictReason};
pub use kinds::{PdErrorKind, RegionErrorKind};

use crate::backoff::BackoffKind;
use crate::oracle::Timestamp;

/// Everything a client operation can fail with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller passed something the operation cannot accept (an empty key where one is
    /// required, a limit over the maximum, mismatched lengths, CAS without atomic mode...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// TiKV refused the operation with a message and nothing more (the `error` string of
    /// raw and maintenance responses, e.g. TTL on a cluster without TTL support).
    #[error("tikv error: {0}")]
    Server(String),
    /// TiKV refused a key with a transactional key error.
    #[error(transparent)]
    Key(Box<KeyError>),
    /// A region error that retrying cannot fix (a flashback in progress, a key outside
    /// the region...).
    #[error("region {region_id}: {kind}: {message}")]
    Region {
        /// The region that answered.
        region_id: u64,
        /// What kind of region error it was.
        kind: RegionErrorKind,
        /// The server's message.
        message: String,
    },
    /// A write whose outcome is unknown: the store may or may not have applied it (TiKV's
    /// undetermined result, client-go's `ErrResultUndetermined`). It is never retried as if
    /// refused; the caller must find out (read back) before acting on either outcome.
    #[error("result undetermined: {0}")]
    Undetermined(String),
    /// PD answered with an error.
    #[error("pd error ({kind}): {message}")]
    Pd {
        /// PD's error type.
        kind: PdErrorKind,
        /// PD's message.
        message: String,
    },
    /// The operation kept meeting retryable errors until its backoff budget ran out.
    #[error("gave up after backing off {slept_ms} ms ({kind}); last error: {last_error}")]
    BackoffExhausted {
        /// The backoff kind that slept the most.
        kind: BackoffKind,
        /// Total time slept.
        slept_ms: u64,
        /// The last error that caused a retry.
        last_error: String,
    },
    /// A call failed in the transport and was not retried (or could not be).
    #[error("rpc failed: {0}")]
    Rpc(RpcError),
    /// The operation's deadline passed.
    #[error("operation timed out")]
    Timeout,
    /// A region could not be found or reached.
    #[error("region unavailable: {0}")]
    RegionUnavailable(String),
    /// The keyspace does not exist or is not enabled.
    #[error("keyspace {0:?} not found or not enabled")]
    KeyspaceNotFound(String),
    /// A read at `start_ts` is below the transaction safe point: GC may have removed the
    /// versions it needs (client-go's `ErrTxnAbortedByGC`).
    #[error("start timestamp {start_ts} is below the txn safe point {safe_point}")]
    TxnAbortedByGc {
        /// The read or transaction's start timestamp.
        start_ts: Timestamp,
        /// The cluster's transaction safe point.
        safe_point: Timestamp,
    },
    /// TSO did not pass the timestamp a commit must wait for (client-go's
    /// `ErrCommitTSLag`) within the wait allowed.
    #[error("TSO timestamp {tso} does not pass the commit wait {wait_until}")]
    CommitTsLag {
        /// The timestamp the commit had to pass.
        wait_until: Timestamp,
        /// The last timestamp TSO gave.
        tso: Timestamp,
    },
    /// The transaction ran longer than a transaction may (24 hours) and was rolled back.
    #[error("transaction {start_ts} is too old to commit at {commit_ts}")]
    TxnTooOld {
        /// Its start timestamp.
        start_ts: Timestamp,
        /// The commit timestamp it would have had.
        commit_ts: Timestamp,
    },
    /// The commit timestamp failed the transaction's upper bound check
    /// ([`TransactionOptions::with_commit_ts_upper_bound_check`](crate::transaction::TransactionOptions::with_commit_ts_upper_bound_check)):
    /// nothing was committed and the prewritten locks are rolled back.
    #[error("commit timestamp {commit_ts} of transaction {start_ts} fails its upper bound check")]
    CommitTsUpperBound {
        /// The transaction's start timestamp.
        start_ts: Timestamp,
        /// The commit timestamp the check refused.
        commit_ts: Timestamp,
    },
    /// The transaction already committed or rolled back: it takes no more reads, writes
    /// or commits (client-go's `ErrInvalidTxn`).
    #[error("transaction {start_ts} is finished")]
    TxnFinished {
        /// Its start timestamp.
        start_ts: Timestamp,
    },
    /// The write buffer refused a write (key or entry too large, transaction too large,
    /// staging misuse).
    #[error(transparent)]
    Buffer(#[from] crate::txn::buffer::BufferError),
    /// The client has been shut down.
    #[error("client closed")]
    Closed,
    /// A server answer that breaks the protocol (missing fields, wrong response type).
    #[error("unexpected response: {0}")]
    UnexpectedResponse(String),
}

impl Error {
    /// The key error, if this is one.
    pub fn key_error(&self) -> Option<&KeyError> {
        match self {
            Self::Key(err) => Some(err),
            _ => None,
        }
    }

    /// Whether the outcome of the failed write is unknown ([`Error::Undetermined`]).
    pub fn is_undetermined(&self) -> bool {
        matches!(self, Self::Undetermined(_))
    }
}

impl From<KeyError> for Error {
    fn from(err: KeyError) -> Self {
        Self::Key(Box::new(err))
    }
}

impl From<RpcError> for Error {
    fn from(err: RpcError) -> Self {
        Self::Rpc(err)
    }
}

impl From<crate::backoff::BackoffError> for Error {
    fn from(err: crate::backoff::BackoffError) -> Self {
        match err {
            crate::backoff::BackoffError::Exhausted(exhausted) => Self::BackoffExhausted {
                kind: exhausted.main_kind(),
                slept_ms: exhausted.total_sleep_ms,
                last_error: exhausted.cause.clone(),
            },
            crate::backoff::BackoffError::Disabled { kind, cause } => Self::BackoffExhausted {
                kind,
                slept_ms: 0,
                last_error: cause,
            },
        }
    }
}
