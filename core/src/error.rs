//! The one error type users see.

use tikv_proto::rpc::RpcError;

/// Everything a client operation can fail with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller passed something the operation cannot accept (an empty key where one is
    /// required, a limit over the maximum, mismatched lengths, CAS without atomic mode...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// TiKV refused the operation with a message (the `error` field of raw responses, e.g.
    /// TTL on a cluster without TTL support).
    #[error("tikv error: {0}")]
    Server(String),
    /// PD answered with an error.
    #[error("pd error ({kind}): {message}")]
    Pd {
        /// PD's error type.
        kind: String,
        /// PD's message.
        message: String,
    },
    /// The operation kept meeting retryable errors until its backoff budget ran out.
    #[error("gave up after backing off {slept_ms} ms ({kind}); last error: {last_error}")]
    BackoffExhausted {
        /// The backoff kind that ran out.
        kind: String,
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
        start_ts: u64,
        /// The cluster's transaction safe point.
        safe_point: u64,
    },
    /// The client has been shut down.
    #[error("client closed")]
    Closed,
    /// A server answer that breaks the protocol (missing fields, wrong response type).
    #[error("unexpected response: {0}")]
    UnexpectedResponse(String),
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
                kind: exhausted.main_kind().to_string(),
                slept_ms: exhausted.total_sleep_ms,
                last_error: exhausted.cause.clone(),
            },
            other => Self::BackoffExhausted {
                kind: "disabled".to_owned(),
                slept_ms: 0,
                last_error: other.to_string(),
            },
        }
    }
}
