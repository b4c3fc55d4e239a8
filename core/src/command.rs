//! What user handles ask the machine for, and what each operation finishes with.

use bytes::Bytes;

use crate::error::Error;
use crate::ops::txn::{ReadOptions, SnapshotRead};
use crate::oracle::Timestamp;
use crate::resolver::{ResolveOutcome, TxnStatus};
use crate::txn::commit::{CommitOutcome, CommitRequest};

/// Largest `limit` a raw scan accepts (client-go `MaxRawKVScanLimit`).
pub const MAX_RAW_SCAN_LIMIT: u32 = 10_240;

/// An operation a user handle asks the machine to run, by area. A `Call` pairs a command
/// with the type its caller gets, so each answer is read in one place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// A raw KV operation.
    Raw(RawCommand),
    /// Region tools: locate, split, scatter.
    Region(RegionCommand),
    /// Maintenance of the transactional key space (client-go's `KVStore` range calls).
    Maintenance(MaintenanceCommand),
    /// PD and TSO queries.
    Pd(PdCommand),
    /// Transactional reads and writes.
    Txn(TxnCommand),
}

/// Transactional operations. Keys are the user's (the machine adds keyspace prefixes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnCommand {
    /// Read one key from the snapshot at `options.ts`.
    Get {
        /// The key.
        key: Bytes,
        /// How to read.
        options: ReadOptions,
    },
    /// Read several keys from the snapshot at `options.ts`.
    BatchGet {
        /// The keys.
        keys: Vec<Bytes>,
        /// How to read.
        options: ReadOptions,
    },
    /// Read up to `limit` entries of a range from the snapshot at `options.ts`: forward over
    /// `[start, end)`, or with `reverse` downward from `start` (exclusive) to `end`
    /// (inclusive).
    Scan {
        /// Where the scan starts.
        start: Bytes,
        /// Where it stops (empty = no bound).
        end: Bytes,
        /// Most entries returned.
        limit: u32,
        /// Rows asked of a region at a time.
        batch_size: u32,
        /// Return keys with empty values.
        key_only: bool,
        /// Scan downward.
        reverse: bool,
        /// How to read.
        options: ReadOptions,
    },
    /// Resolve other transactions' locks met by a transaction that started at
    /// `caller_start_ts` (client-go's `LockResolver.ResolveLocks`): answers how long until
    /// the soonest live one expires.
    ResolveLocks {
        /// The caller's start timestamp.
        caller_start_ts: Timestamp,
        /// The locks (keys in the request key space, as TiKV reported them).
        locks: Vec<crate::error::LockInfo>,
    },
    /// Begin a transaction at `start_ts`, or at a fresh TSO timestamp: answers the start
    /// timestamp and the machine time it began at.
    Begin {
        /// The start timestamp, when the caller fixes it.
        start_ts: Option<Timestamp>,
    },
    /// Commit a transaction's writes.
    Commit(Box<CommitRequest>),
    /// Resolve other transactions' locks met by a read at `caller_start_ts` (client-go's
    /// `LockResolver.ResolveLocksForRead`): answers how long until the soonest lock that
    /// still blocks the read expires, and which transactions the read may skip or read
    /// through.
    ResolveLocksForRead {
        /// The read timestamp.
        caller_start_ts: Timestamp,
        /// The locks (keys in the request key space, as TiKV reported them).
        locks: Vec<crate::error::LockInfo>,
    },
    /// Find the status of transaction `txn` on its primary key (client-go's
    /// `LockResolver.GetTxnStatus`): answers it from the resolver's cache or a
    /// CheckTxnStatus that rolls back an expired or missing primary lock.
    GetTxnStatus {
        /// The transaction's start timestamp.
        txn: Timestamp,
        /// The start timestamp of whoever asks (a live lock's `min_commit_ts` is pushed
        /// past it).
        caller_start_ts: Timestamp,
        /// The transaction's primary key (a user key).
        primary: Bytes,
    },
}

/// PD and TSO queries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PdCommand {
    /// Allocate one timestamp from PD's TSO.
    Timestamp,
    /// A recent timestamp: the newest one the client has seen if it is younger than the
    /// configured staleness (client-go's low-resolution timestamp), else a fresh one.
    LowResolutionTimestamp,
    /// A timestamp `prev_secs` seconds older than the current time as the client knows it
    /// (client-go's `GetStaleTimestamp`), from the newest TSO answer and the time since.
    StaleTimestamp {
        /// How far back, in seconds.
        prev_secs: u64,
    },
    /// The cluster id, from PD (discovering PD first if needed).
    ClusterId,
    /// Set PD's external timestamp (it only moves forward, and never past the TSO).
    SetExternalTimestamp(Timestamp),
    /// PD's external timestamp (zero when never set).
    GetExternalTimestamp,
    /// The cluster's (or, with API V2, the keyspace's) transaction safe point, from PD.
    TxnSafePoint,
    /// Whether a read at `start_ts` is still safe from GC (client-go's `CheckVisibility`):
    /// answers with the safe point, or fails with [`Error::TxnAbortedByGc`].
    CheckVisibility {
        /// The read's start timestamp.
        start_ts: Timestamp,
    },
}

/// Region tools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionCommand {
    /// The region holding `key` (empty: the first region).
    LocateKey {
        /// The key.
        key: Bytes,
        /// Which key space `key` is in.
        mode: KeyMode,
    },
    /// Region `region_id`, from the cache or PD.
    LocateRegionById {
        /// The region.
        region_id: u64,
        /// Which key space to report its boundaries in.
        mode: KeyMode,
    },
    /// Every region overlapping `[start, end)` (`end` empty: to the end), in key order.
    LocateRange {
        /// First key.
        start: Bytes,
        /// End (empty = no bound).
        end: Bytes,
        /// Which key space the range is in.
        mode: KeyMode,
        /// Most regions returned (0 = no limit).
        limit: u32,
    },
    /// Split the regions holding `keys` so that each key starts a region, and optionally
    /// have PD scatter the new regions.
    SplitRegions {
        /// Which key space the keys are in.
        mode: KeyMode,
        /// Where to split (keys that already start a region are skipped).
        keys: Vec<Bytes>,
        /// Ask PD to scatter the new regions afterwards.
        scatter: bool,
        /// Scatter group: regions of one group are spread as a unit ("" = none).
        scatter_group: String,
    },
    /// Wait until PD no longer runs a scatter operator on the region, backing off between
    /// polls within `budget`.
    WaitScatterRegionFinish {
        /// The region.
        region_id: u64,
        /// Total backoff allowed.
        budget: std::time::Duration,
    },
    /// Whether PD is scattering the region right now.
    CheckRegionInScattering {
        /// The region.
        region_id: u64,
    },
}

/// Maintenance of the transactional key space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MaintenanceCommand {
    /// Delete every version of every transactional key in `[start, end)`, region by region
    /// (client-go's `KVStore.DeleteRange`); with `notify_only`, only tell TiKV (for TiFlash)
    /// without deleting. Answers with the number of regions.
    DeleteRange {
        /// First key (transactional key space).
        start: Bytes,
        /// End (empty = no bound).
        end: Bytes,
        /// Notify only.
        notify_only: bool,
    },
    /// Drop the transactional keys of `[start, end)` directly from every store's storage,
    /// bypassing Raft (client-go's `KVStore.UnsafeDestroyRange`).
    UnsafeDestroyRange {
        /// First key (transactional key space).
        start: Bytes,
        /// End (empty = no bound).
        end: Bytes,
    },
}

/// A command together with how its answer is read: `T` is what its caller gets.
pub(crate) struct Call<T> {
    /// The command.
    pub(crate) command: Command,
    read: fn(Output) -> Option<T>,
}

impl<T> Call<T> {
    fn new(command: Command, read: fn(Output) -> Option<T>) -> Self {
        Self { command, read }
    }

    /// The caller's result from the operation's `output`.
    ///
    /// Errors with [`Error::UnexpectedResponse`] when the operation produced another kind
    /// of output (a bug in the machine, never the server's doing).
    pub(crate) fn read(read: fn(Output) -> Option<T>, output: Output) -> Result<T, Error> {
        // Only the variant's name is kept for the error: formatting the whole output (a
        // scan's pairs) on every call would cost more than the call.
        let kind = output.kind();
        read(output)
            .ok_or_else(|| Error::UnexpectedResponse(format!("operation produced {kind} output")))
    }

    /// The command and its reader, to run the one and apply the other.
    pub(crate) fn into_parts(self) -> (Command, fn(Output) -> Option<T>) {
        (self.command, self.read)
    }
}

fn unit(output: Output) -> Option<()> {
    matches!(output, Output::Unit).then_some(())
}

fn timestamp(output: Output) -> Option<Timestamp> {
    match output {
        Output::Timestamp(ts) => Some(ts),
        _ => None,
    }
}

impl PdCommand {
    /// A call of this command answered with a timestamp.
    pub(crate) fn timestamp_call(self) -> Call<Timestamp> {
        Call::new(Command::Pd(self), timestamp)
    }

    /// A call of [`PdCommand::SetExternalTimestamp`].
    pub(crate) fn set_external_timestamp(ts: Timestamp) -> Call<()> {
        Call::new(Command::Pd(Self::SetExternalTimestamp(ts)), unit)
    }

    /// A call of [`PdCommand::ClusterId`].
    pub(crate) fn cluster_id() -> Call<u64> {
        Call::new(Command::Pd(Self::ClusterId), |output| match output {
            Output::ClusterId(id) => Some(id),
            _ => None,
        })
    }
}

impl RegionCommand {
    /// A call answered with region locations.
    pub(crate) fn locations_call(self) -> Call<Vec<KeyLocation>> {
        Call::new(Command::Region(self), |output| match output {
            Output::Locations(found) => Some(found),
            _ => None,
        })
    }

    /// A call of [`RegionCommand::SplitRegions`].
    pub(crate) fn split_call(self) -> Call<SplitOutcome> {
        Call::new(Command::Region(self), |output| match output {
            Output::Split(outcome) => Some(*outcome),
            _ => None,
        })
    }

    /// A call of [`RegionCommand::WaitScatterRegionFinish`].
    pub(crate) fn wait_scatter_call(self) -> Call<()> {
        Call::new(Command::Region(self), unit)
    }

    /// A call of [`RegionCommand::CheckRegionInScattering`].
    pub(crate) fn scattering_call(self) -> Call<bool> {
        Call::new(Command::Region(self), |output| match output {
            Output::Scattering(scattering) => Some(scattering),
            _ => None,
        })
    }
}

impl MaintenanceCommand {
    /// A call of [`MaintenanceCommand::DeleteRange`], answered with the number of regions.
    pub(crate) fn delete_range_call(self) -> Call<u64> {
        Call::new(Command::Maintenance(self), |output| match output {
            Output::Count(regions) => Some(regions),
            _ => None,
        })
    }

    /// A call of [`MaintenanceCommand::UnsafeDestroyRange`].
    pub(crate) fn destroy_call(self) -> Call<()> {
        Call::new(Command::Maintenance(self), unit)
    }
}

impl TxnCommand {
    /// A call of a read ([`TxnCommand::Get`], [`TxnCommand::BatchGet`] or
    /// [`TxnCommand::Scan`]).
    pub(crate) fn read_call(self) -> Call<SnapshotRead> {
        Call::new(Command::Txn(self), |output| match output {
            Output::Read(read) => Some(*read),
            _ => None,
        })
    }

    /// A call of [`TxnCommand::Begin`].
    pub(crate) fn begin_call(self) -> Call<(Timestamp, crate::time::Time)> {
        Call::new(Command::Txn(self), |output| match output {
            Output::Begun { start_ts, at } => Some((start_ts, at)),
            _ => None,
        })
    }

    /// A call of [`TxnCommand::Commit`].
    pub(crate) fn commit_call(self) -> Call<CommitOutcome> {
        Call::new(Command::Txn(self), |output| match output {
            Output::Committed(outcome) => Some(outcome),
            _ => None,
        })
    }

    /// A call of [`TxnCommand::ResolveLocks`] or [`TxnCommand::ResolveLocksForRead`].
    pub(crate) fn resolve_call(self) -> Call<ResolveOutcome> {
        Call::new(Command::Txn(self), |output| match output {
            Output::Resolved(outcome) => Some(*outcome),
            _ => None,
        })
    }

    /// A call of [`TxnCommand::GetTxnStatus`].
    pub(crate) fn status_call(self) -> Call<TxnStatus> {
        Call::new(Command::Txn(self), |output| match output {
            Output::TxnStatus { status, .. } => Some(*status),
            _ => None,
        })
    }
}

impl RawCommand {
    /// A call answered with nothing (writes and deletes).
    pub(crate) fn unit_call(self) -> Call<()> {
        Call::new(Command::Raw(self), unit)
    }

    /// A call of [`RawCommand::Get`].
    pub(crate) fn value_call(self) -> Call<Option<Bytes>> {
        Call::new(Command::Raw(self), |output| match output {
            Output::Value(value) => Some(value),
            _ => None,
        })
    }

    /// A call of [`RawCommand::BatchGet`].
    pub(crate) fn values_call(self) -> Call<Vec<Option<Bytes>>> {
        Call::new(Command::Raw(self), |output| match output {
            Output::Values(values) => Some(values),
            _ => None,
        })
    }

    /// A call of [`RawCommand::Scan`].
    pub(crate) fn pairs_call(self) -> Call<Vec<(Bytes, Bytes)>> {
        Call::new(Command::Raw(self), |output| match output {
            Output::Pairs(pairs) => Some(pairs),
            _ => None,
        })
    }

    /// A call of [`RawCommand::GetKeyTtl`]: the remaining TTL in seconds (`Some(0)`: none),
    /// `None` for an absent key.
    pub(crate) fn ttl_call(self) -> Call<Option<u64>> {
        Call::new(Command::Raw(self), |output| match output {
            Output::Ttl(ttl) => Some(ttl),
            _ => None,
        })
    }

    /// A call of [`RawCommand::CompareAndSwap`]: the previous value and whether it swapped.
    pub(crate) fn swap_call(self) -> Call<(Option<Bytes>, bool)> {
        Call::new(Command::Raw(self), |output| match output {
            Output::Swapped {
                previous,
                succeeded,
            } => Some((previous, succeeded)),
            _ => None,
        })
    }

    /// A call of [`RawCommand::Checksum`].
    pub(crate) fn checksum_call(self) -> Call<RawChecksum> {
        Call::new(Command::Raw(self), |output| match output {
            Output::Checksum(sum) => Some(sum),
            _ => None,
        })
    }
}

/// Which key space region commands work in: raw keys, or transactional keys (which TiKV
/// stores memcomparable-encoded, so region boundaries differ).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyMode {
    /// The raw key space (`RawClient`).
    #[default]
    Raw,
    /// The transactional key space (client-go's `KVStore`).
    Txn,
}

/// A raw KV operation. Keys are the user's (the machine adds keyspace prefixes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawCommand {
    /// Read one key.
    Get {
        /// The key.
        key: Bytes,
        /// Column family ("" = default).
        cf: String,
    },
    /// Read several keys.
    BatchGet {
        /// The keys.
        keys: Vec<Bytes>,
        /// Column family.
        cf: String,
    },
    /// Write one key.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// Time to live in seconds; 0 = forever.
        ttl_secs: u64,
        /// Column family.
        cf: String,
        /// Serialize with compare-and-swap (the client's atomic mode).
        atomic: bool,
    },
    /// Write several keys.
    BatchPut {
        /// Key-value pairs.
        pairs: Vec<(Bytes, Bytes)>,
        /// TTLs in seconds: empty, or one per pair.
        ttls_secs: Vec<u64>,
        /// Column family.
        cf: String,
        /// Atomic mode.
        atomic: bool,
    },
    /// Delete one key.
    Delete {
        /// The key.
        key: Bytes,
        /// Column family.
        cf: String,
        /// Atomic mode.
        atomic: bool,
    },
    /// Delete several keys.
    BatchDelete {
        /// The keys.
        keys: Vec<Bytes>,
        /// Column family.
        cf: String,
        /// Atomic mode.
        atomic: bool,
    },
    /// Delete every key in `[start, end)` (`end` empty = no upper bound).
    DeleteRange {
        /// First key deleted.
        start: Bytes,
        /// First key kept.
        end: Bytes,
        /// Column family.
        cf: String,
    },
    /// Read up to `limit` pairs in a range: forward over `[start, end)`, or with `reverse`
    /// downward from `start` (exclusive, non-empty outside a keyspace) to `end` (inclusive),
    /// as client-go's ReverseScan.
    Scan {
        /// Where the scan starts.
        start: Bytes,
        /// Where it stops (empty = no bound).
        end: Bytes,
        /// Most pairs returned (at most [`MAX_RAW_SCAN_LIMIT`]).
        limit: u32,
        /// Return keys with empty values.
        key_only: bool,
        /// Scan downward.
        reverse: bool,
        /// Column family.
        cf: String,
    },
    /// A key's remaining time to live.
    GetKeyTtl {
        /// The key.
        key: Bytes,
        /// Column family.
        cf: String,
    },
    /// Atomically replace a key's value if it currently equals `previous` (`None`: if absent).
    CompareAndSwap {
        /// The key.
        key: Bytes,
        /// The expected current value.
        previous: Option<Bytes>,
        /// The new value.
        value: Bytes,
        /// Column family.
        cf: String,
        /// Atomic mode (required).
        atomic: bool,
    },
    /// CRC-64 XOR checksum, count and size of the pairs in `[start, end)`.
    Checksum {
        /// First key.
        start: Bytes,
        /// End (empty = no bound).
        end: Bytes,
    },
}

/// Checksum of a raw key range, as TiKV computes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawChecksum {
    /// XOR of the CRC-64 of every key and value.
    pub crc64_xor: u64,
    /// Number of pairs.
    pub total_kvs: u64,
    /// Total size of keys and values.
    pub total_bytes: u64,
}

/// What a finished operation produced. Variants over a few words are boxed: every point
/// operation moves its output through the machine, the driver and a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Done, nothing to return.
    Unit,
    /// One value, `None` when the key does not exist.
    Value(Option<Bytes>),
    /// Values in the order of the requested keys.
    Values(Vec<Option<Bytes>>),
    /// Key-value pairs in scan order.
    Pairs(Vec<(Bytes, Bytes)>),
    /// Remaining TTL in seconds (`Some(0)` = no TTL); `None` when the key does not exist.
    Ttl(Option<u64>),
    /// Compare-and-swap outcome: the value before, and whether the swap happened.
    Swapped {
        /// The value before the operation (`None` = absent).
        previous: Option<Bytes>,
        /// Whether the new value was written.
        succeeded: bool,
    },
    /// A checksum.
    Checksum(RawChecksum),
    /// A timestamp from TSO.
    Timestamp(Timestamp),
    /// What a region split produced.
    Split(Box<SplitOutcome>),
    /// Whether a region is being scattered.
    Scattering(bool),
    /// The cluster id.
    ClusterId(u64),
    /// Regions holding keys, in key order.
    Locations(Vec<KeyLocation>),
    /// How many items (regions) an operation went through.
    Count(u64),
    /// What a snapshot read found.
    Read(Box<SnapshotRead>),
    /// A transaction's status as a lock resolution found it.
    TxnStatus {
        /// The status.
        status: Box<TxnStatus>,
        /// Milliseconds until its locks expire (0 once they have, or once it is settled).
        ms_left: u64,
    },
    /// What resolving locks found.
    Resolved(Box<ResolveOutcome>),
    /// A transaction began.
    Begun {
        /// Its start timestamp.
        start_ts: Timestamp,
        /// The machine time it began at.
        at: crate::time::Time,
    },
    /// A transaction committed.
    Committed(CommitOutcome),
}

/// One region as a user sees it: its identity and the range of user keys it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLocation {
    /// The region id.
    pub region_id: u64,
    /// The region's configuration version (bumped by peer changes).
    pub conf_ver: u64,
    /// The region's version (bumped by splits and merges).
    pub version: u64,
    /// First user key of the region (empty: the start of the key space).
    pub start_key: Bytes,
    /// First user key after the region (empty: the end of the key space).
    pub end_key: Bytes,
}

/// What a split produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitOutcome {
    /// Ids of the regions the split created, in key order.
    pub region_ids: Vec<u64>,
    /// Why scattering them failed, if it was asked for and failed (the split itself stands).
    pub scatter_error: Option<Error>,
}

impl Output {
    /// The variant's name, for error messages.
    fn kind(&self) -> &'static str {
        match self {
            Self::Unit => "Unit",
            Self::Value(_) => "Value",
            Self::Values(_) => "Values",
            Self::Pairs(_) => "Pairs",
            Self::Ttl(_) => "Ttl",
            Self::Swapped { .. } => "Swapped",
            Self::Checksum(_) => "Checksum",
            Self::Timestamp(_) => "Timestamp",
            Self::Split(_) => "Split",
            Self::Scattering(_) => "Scattering",
            Self::ClusterId(_) => "ClusterId",
            Self::Locations(_) => "Locations",
            Self::Count(_) => "Count",
            Self::Read(_) => "Read",
            Self::TxnStatus { .. } => "TxnStatus",
            Self::Resolved(_) => "Resolved",
            Self::Begun { .. } => "Begun",
            Self::Committed(_) => "Committed",
        }
    }
}
