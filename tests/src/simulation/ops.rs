//! Operations the simulation runs through the client's user API, and their answers.
//!
//! The simulation (and its history checker) speaks in these rather than in the machine's
//! commands, so that it exercises exactly what users call.

use bytes::Bytes;
use tikv_core::{Client, Error};

/// One operation, as a user would call it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `RawClient::get`.
    Get {
        /// The key.
        key: Bytes,
    },
    /// `RawClient::batch_get`.
    BatchGet {
        /// The keys.
        keys: Vec<Bytes>,
    },
    /// `RawClient::put`.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// `RawClient::batch_put`.
    BatchPut {
        /// The pairs.
        pairs: Vec<(Bytes, Bytes)>,
    },
    /// `RawClient::delete`.
    Delete {
        /// The key.
        key: Bytes,
    },
    /// `RawClient::batch_delete`.
    BatchDelete {
        /// The keys.
        keys: Vec<Bytes>,
    },
    /// `RawClient::delete_range` over `[start, end)` (empty `end`: unbounded).
    DeleteRange {
        /// The first key.
        start: Bytes,
        /// The end (exclusive).
        end: Bytes,
    },
    /// `RawClient::scan` over `[start, end)` (empty `end`: unbounded).
    Scan {
        /// The first key.
        start: Bytes,
        /// The end (exclusive).
        end: Bytes,
        /// At most this many pairs.
        limit: u32,
    },
    /// `Client::current_timestamp`.
    Timestamp,
}

/// What an operation returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A write's success.
    Unit,
    /// A get's value.
    Value(Option<Bytes>),
    /// A batch get's values, one per key.
    Values(Vec<Option<Bytes>>),
    /// A scan's pairs.
    Pairs(Vec<(Bytes, Bytes)>),
    /// A timestamp.
    Timestamp(tikv_core::Timestamp),
}

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

impl Op {
    /// A get of `key`.
    pub fn get(key: &str) -> Self {
        Self::Get { key: bytes(key) }
    }

    /// A put of `key` = `value`.
    pub fn put(key: &str, value: &str) -> Self {
        Self::Put {
            key: bytes(key),
            value: bytes(value),
        }
    }

    /// A batch put of `pairs`.
    pub fn batch_put(pairs: &[(&str, &str)]) -> Self {
        Self::BatchPut {
            pairs: pairs.iter().map(|(k, v)| (bytes(k), bytes(v))).collect(),
        }
    }

    /// A scan of `[start, end)`.
    pub fn scan(start: &str, end: &str, limit: u32) -> Self {
        Self::Scan {
            start: bytes(start),
            end: bytes(end),
            limit,
        }
    }

    /// Runs the operation through `client`'s user API.
    ///
    /// Errors with whatever the API returns.
    pub async fn run(&self, client: &Client) -> Result<Answer, Error> {
        let raw = client.raw();
        match self {
            Self::Get { key } => raw.get(key.clone()).await.map(Answer::Value),
            Self::BatchGet { keys } => raw.batch_get(keys.clone()).await.map(Answer::Values),
            Self::Put { key, value } => raw
                .put(key.clone(), value.clone())
                .await
                .map(|()| Answer::Unit),
            Self::BatchPut { pairs } => raw.batch_put(pairs.clone()).await.map(|()| Answer::Unit),
            Self::Delete { key } => raw.delete(key.clone()).await.map(|()| Answer::Unit),
            Self::BatchDelete { keys } => {
                raw.batch_delete(keys.clone()).await.map(|()| Answer::Unit)
            }
            Self::DeleteRange { start, end } => raw
                .delete_range(key_range(start, end))
                .await
                .map(|()| Answer::Unit),
            Self::Scan { start, end, limit } => raw
                .scan(key_range(start, end), *limit)
                .await
                .map(|pairs| Answer::Pairs(pairs.into_iter().map(|p| (p.key, p.value)).collect())),
            Self::Timestamp => client.current_timestamp().await.map(Answer::Timestamp),
        }
    }
}

/// `[start, end)` with an empty `end` for no bound, as the raw API takes it.
fn key_range(start: &Bytes, end: &Bytes) -> tikv_core::range_task::KeyRange {
    tikv_core::range_task::KeyRange {
        start_key: start.clone(),
        end_key: end.clone(),
    }
}
