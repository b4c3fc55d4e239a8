//! Kinds of PD and region errors, as enums rather than strings.

use tikv_proto::{errorpb, pdpb};

/// The type of an error PD reported in a response header, or a PD failure the client
/// itself detected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum PdErrorKind {
    /// PD's `UNKNOWN`.
    #[error("unknown")]
    Unknown,
    /// The cluster is not bootstrapped.
    #[error("not bootstrapped")]
    NotBootstrapped,
    /// The store is a tombstone.
    #[error("store tombstone")]
    StoreTombstone,
    /// The cluster is already bootstrapped.
    #[error("already bootstrapped")]
    AlreadyBootstrapped,
    /// The client's version is not compatible.
    #[error("incompatible version")]
    IncompatibleVersion,
    /// PD knows no such region.
    #[error("region not found")]
    RegionNotFound,
    /// A global config item is missing.
    #[error("global config not found")]
    GlobalConfigNotFound,
    /// An entry already exists.
    #[error("duplicated entry")]
    DuplicatedEntry,
    /// An entry does not exist.
    #[error("entry not found")]
    EntryNotFound,
    /// A value PD refused (an external timestamp moving backwards, ...).
    #[error("invalid value")]
    InvalidValue,
    /// A watch asked for a compacted revision.
    #[error("data compacted")]
    DataCompacted,
    /// Scanned regions leave a gap in a requested range.
    #[error("regions do not cover the key range")]
    RegionsNotContainAllKeyRange,
    /// PD's members reported no leader or no cluster id.
    #[error("no leader")]
    NoLeader,
    /// PD could not scatter some regions.
    #[error("scatter failed")]
    ScatterFailed,
    /// An error type this client does not know (its wire number).
    #[error("type {0}")]
    Other(i32),
}

impl PdErrorKind {
    /// The kind of wire error type `ty`; `None` for `OK`.
    pub fn from_proto(ty: i32) -> Option<Self> {
        use pdpb::ErrorType as T;
        Some(match T::try_from(ty) {
            Ok(T::Ok) => return None,
            Ok(T::Unknown) => Self::Unknown,
            Ok(T::NotBootstrapped) => Self::NotBootstrapped,
            Ok(T::StoreTombstone) => Self::StoreTombstone,
            Ok(T::AlreadyBootstrapped) => Self::AlreadyBootstrapped,
            Ok(T::IncompatibleVersion) => Self::IncompatibleVersion,
            Ok(T::RegionNotFound) => Self::RegionNotFound,
            Ok(T::GlobalConfigNotFound) => Self::GlobalConfigNotFound,
            Ok(T::DuplicatedEntry) => Self::DuplicatedEntry,
            Ok(T::EntryNotFound) => Self::EntryNotFound,
            Ok(T::InvalidValue) => Self::InvalidValue,
            Ok(T::DataCompacted) => Self::DataCompacted,
            Ok(T::RegionsNotContainAllKeyRange) => Self::RegionsNotContainAllKeyRange,
            Err(_) => Self::Other(ty),
        })
    }
}

/// Which region error a store answered (one per field of TiKV's region error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum RegionErrorKind {
    /// The peer is not the leader.
    #[error("not leader")]
    NotLeader,
    /// The store has no such region.
    #[error("region not found")]
    RegionNotFound,
    /// The key is outside the region.
    #[error("key not in region")]
    KeyNotInRegion,
    /// The request's region epoch is stale (or ahead).
    #[error("epoch not match")]
    EpochNotMatch,
    /// The store is busy.
    #[error("server is busy")]
    ServerIsBusy,
    /// The command was proposed in an older term.
    #[error("stale command")]
    StaleCommand,
    /// The request reached a store other than the peer's.
    #[error("store not match")]
    StoreNotMatch,
    /// The write is larger than a Raft entry may be.
    #[error("raft entry too large")]
    RaftEntryTooLarge,
    /// The leader has not synced its max timestamp yet.
    #[error("max timestamp not synced")]
    MaxTimestampNotSynced,
    /// A read index is not ready.
    #[error("read index not ready")]
    ReadIndexNotReady,
    /// The region is merging.
    #[error("proposal in merging mode")]
    ProposalInMergingMode,
    /// A stale read's data is not ready on this replica.
    #[error("data is not ready")]
    DataIsNotReady,
    /// The region is not initialized on this store.
    #[error("region not initialized")]
    RegionNotInitialized,
    /// The store's disk is full.
    #[error("disk full")]
    DiskFull,
    /// The region is being recovered.
    #[error("recovery in progress")]
    RecoveryInProgress,
    /// The region is being flashed back.
    #[error("flashback in progress")]
    FlashbackInProgress,
    /// The region is not prepared for a flashback.
    #[error("flashback not prepared")]
    FlashbackNotPrepared,
    /// The peer is a witness.
    #[error("is witness")]
    IsWitness,
    /// The peer id does not match.
    #[error("mismatch peer id")]
    MismatchPeerId,
    /// The bucket version does not match.
    #[error("bucket version not match")]
    BucketVersionNotMatch,
    /// The outcome of the write is unknown.
    #[error("undetermined result")]
    UndeterminedResult,
    /// Only a message was given.
    #[error("other")]
    Other,
}

impl RegionErrorKind {
    /// The kind of `err` (its first field set, in wire order).
    pub fn of(err: &errorpb::Error) -> Self {
        let checks: [(bool, Self); 21] = [
            (err.not_leader.is_some(), Self::NotLeader),
            (err.region_not_found.is_some(), Self::RegionNotFound),
            (err.key_not_in_region.is_some(), Self::KeyNotInRegion),
            (err.epoch_not_match.is_some(), Self::EpochNotMatch),
            (err.server_is_busy.is_some(), Self::ServerIsBusy),
            (err.stale_command.is_some(), Self::StaleCommand),
            (err.store_not_match.is_some(), Self::StoreNotMatch),
            (err.raft_entry_too_large.is_some(), Self::RaftEntryTooLarge),
            (
                err.max_timestamp_not_synced.is_some(),
                Self::MaxTimestampNotSynced,
            ),
            (err.read_index_not_ready.is_some(), Self::ReadIndexNotReady),
            (
                err.proposal_in_merging_mode.is_some(),
                Self::ProposalInMergingMode,
            ),
            (err.data_is_not_ready.is_some(), Self::DataIsNotReady),
            (
                err.region_not_initialized.is_some(),
                Self::RegionNotInitialized,
            ),
            (err.disk_full.is_some(), Self::DiskFull),
            (err.recovery_in_progress.is_some(), Self::RecoveryInProgress),
            (
                err.flashback_in_progress.is_some(),
                Self::FlashbackInProgress,
            ),
            (
                err.flashback_not_prepared.is_some(),
                Self::FlashbackNotPrepared,
            ),
            (err.is_witness.is_some(), Self::IsWitness),
            (err.mismatch_peer_id.is_some(), Self::MismatchPeerId),
            (
                err.bucket_version_not_match.is_some(),
                Self::BucketVersionNotMatch,
            ),
            (err.undetermined_result.is_some(), Self::UndeterminedResult),
        ];
        checks
            .into_iter()
            .find_map(|(set, kind)| set.then_some(kind))
            .unwrap_or(Self::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pd_kinds_map_every_wire_type() {
        assert_eq!(PdErrorKind::from_proto(0), None);
        assert_eq!(
            PdErrorKind::from_proto(6),
            Some(PdErrorKind::RegionNotFound)
        );
        assert_eq!(
            PdErrorKind::from_proto(12),
            Some(PdErrorKind::RegionsNotContainAllKeyRange)
        );
        assert_eq!(PdErrorKind::from_proto(99), Some(PdErrorKind::Other(99)));
    }

    #[test]
    fn region_kinds_follow_the_field_set() {
        let err = errorpb::Error {
            undetermined_result: Some(Default::default()),
            ..Default::default()
        };
        assert_eq!(
            RegionErrorKind::of(&err),
            RegionErrorKind::UndeterminedResult
        );
        let only_message = errorpb::Error {
            message: "x".into(),
            ..Default::default()
        };
        assert_eq!(RegionErrorKind::of(&only_message), RegionErrorKind::Other);
    }
}
