//! Transactional operations: snapshot reads, lock resolution, and (in `commit`) the
//! two-phase commit.
//!
//! Reads and writes carry the caller's options as plain values ([`ReadOptions`]); what a
//! read learns about other transactions' locks comes back with its result, and the handle
//! that issued it (a snapshot or transaction) keeps that knowledge for its next reads.

pub(crate) mod commit;
pub(crate) mod plan;
pub(crate) mod resolve;
pub(crate) mod snapshot;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use crate::oracle::Timestamp;
use crate::resolver::ReadLockSets;

/// Which writes a read sees (TiKV's isolation levels).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IsolationLevel {
    /// Snapshot isolation: the versions committed before the read timestamp; locks of
    /// transactions that may commit before it block the read until resolved.
    #[default]
    Si,
    /// Read committed: the newest committed versions; locks are ignored.
    Rc,
    /// Read committed, but a newer version than the read timestamp is an error (TiKV's
    /// `RcCheckTs`), so the caller can retry with a fresh timestamp.
    RcCheckTs,
}

impl IsolationLevel {
    pub(crate) fn to_proto(self) -> i32 {
        match self {
            Self::Si => kvrpcpb::IsolationLevel::Si as i32,
            Self::Rc => kvrpcpb::IsolationLevel::Rc as i32,
            Self::RcCheckTs => kvrpcpb::IsolationLevel::RcCheckTs as i32,
        }
    }
}

/// How TiKV schedules a request against others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Priority {
    /// The default.
    #[default]
    Normal,
    /// Background work.
    Low,
    /// Latency-critical work.
    High,
}

impl Priority {
    pub(crate) fn to_proto(self) -> i32 {
        match self {
            Self::Normal => kvrpcpb::CommandPri::Normal as i32,
            Self::Low => kvrpcpb::CommandPri::Low as i32,
            Self::High => kvrpcpb::CommandPri::High as i32,
        }
    }
}

/// How a snapshot read is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadOptions {
    /// The read timestamp.
    pub ts: Timestamp,
    /// Which writes the read sees.
    pub isolation: IsolationLevel,
    /// Scheduling priority.
    pub priority: Priority,
    /// Ask TiKV not to fill its block cache with what the read touches.
    pub not_fill_cache: bool,
    /// Return each value's commit timestamp.
    pub need_commit_ts: bool,
    /// Locks already known to be skippable or readable through.
    pub locks: ReadLockSets,
    /// The request source label TiKV accounts the read under.
    pub request_source: String,
    /// The resource group the read is charged to ("" = default).
    pub resource_group: String,
}

impl ReadOptions {
    /// Snapshot-isolation reads at `ts` with every other option at its default.
    pub fn at(ts: Timestamp) -> Self {
        Self {
            ts,
            isolation: IsolationLevel::default(),
            priority: Priority::default(),
            not_fill_cache: false,
            need_commit_ts: false,
            locks: ReadLockSets::default(),
            request_source: String::new(),
            resource_group: String::new(),
        }
    }

    /// The request context these options ask for, with what has been learned about locks.
    pub(crate) fn context(&self, learned: &ReadLockSets) -> kvrpcpb::Context {
        let mut context = kvrpcpb::Context {
            isolation_level: self.isolation.to_proto(),
            priority: self.priority.to_proto(),
            not_fill_cache: self.not_fill_cache,
            request_source: self.request_source.clone(),
            ..Default::default()
        };
        if !self.resource_group.is_empty() {
            context.resource_control_context = Some(kvrpcpb::ResourceControlContext {
                resource_group_name: self.resource_group.clone(),
                ..Default::default()
            });
        }
        let mut locks = self.locks.clone();
        locks.merge(learned);
        locks.fill(&mut context);
        context
    }
}

/// One key read from a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnEntry {
    /// The key (the user's, without any keyspace prefix).
    pub key: Bytes,
    /// Its value (empty for key-only scans).
    pub value: Bytes,
    /// When the value was committed, if asked for.
    pub commit_ts: Option<Timestamp>,
}

/// What a snapshot read found, and what it learned about other transactions' locks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotRead {
    /// The entries found, in key order (scan order for scans); absent keys are left out.
    pub entries: Vec<TxnEntry>,
    /// Locks the read resolved: later reads of the same snapshot skip or read through them.
    pub learned: ReadLockSets,
}
