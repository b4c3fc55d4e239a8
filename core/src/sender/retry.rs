//! What to do about a region error: client-go's `onRegionError`, as a pure decision.
//!
//! The decision names the cache update already applied and how to continue: send again to
//! the (possibly new) leader at once, send again after a backoff, or give the keys back to the
//! caller to locate (and, for batches, regroup) again after a backoff.

use tikv_proto::errorpb;

use crate::backoff::BackoffKind;
use crate::error::{Error, RegionErrorKind};

/// How a request continues after a region error.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RegionRetry {
    /// The cache now names a new leader: send again at once.
    UpdateLeader {
        /// The store of the new leader.
        leader_store_id: u64,
        /// The new leader's peer id.
        leader_peer_id: u64,
    },
    /// Same region, same target, after a backoff of this kind.
    Backoff(BackoffKind),
    /// The peer knows no leader: try the region's next peer after a backoff of this kind
    /// (client-go's replica selector does the same rather than asking PD, whose view is as
    /// stale as the peer's).
    NextPeer(BackoffKind),
    /// The cached region is stale: invalidate it, back off (if a kind is given), then locate
    /// the keys again.
    Relocate {
        /// Backoff before locating again; `None` retries at once (e.g. EpochNotMatch with
        /// fresher regions in hand).
        backoff: Option<BackoffKind>,
        /// Regions the server reported as current (EpochNotMatch), to insert into the cache.
        current_regions: Vec<tikv_proto::metapb::Region>,
        /// Whether the store's address should be looked up again (StoreNotMatch).
        refresh_store: bool,
    },
    /// Not retryable: fail the operation with this error.
    Fail(Error),
}

/// The error that ends an operation over region error `err` of region `region_id`: an
/// undetermined result stays undetermined (the write may have applied), the rest name
/// their kind.
fn fatal(region_id: u64, err: &errorpb::Error) -> RegionRetry {
    let kind = RegionErrorKind::of(err);
    RegionRetry::Fail(if kind == RegionErrorKind::UndeterminedResult {
        Error::Undetermined(format!("region {region_id}: {}", err.message))
    } else {
        Error::Region {
            region_id,
            kind,
            message: err.message.clone(),
        }
    })
}

/// Classifies region error `err` from region `region_id` the way client-go's region
/// request sender does for a leader request without a replica selector.
pub(crate) fn classify(region_id: u64, err: &errorpb::Error) -> RegionRetry {
    use RegionRetry::{Backoff, Relocate};
    let relocate = |backoff: Option<BackoffKind>| Relocate {
        backoff,
        current_regions: Vec::new(),
        refresh_store: false,
    };
    if err.undetermined_result.is_some() {
        return fatal(region_id, err);
    }
    if let Some(not_leader) = &err.not_leader {
        return match &not_leader.leader {
            Some(leader) if leader.store_id != 0 => RegionRetry::UpdateLeader {
                leader_store_id: leader.store_id,
                leader_peer_id: leader.id,
            },
            _ => RegionRetry::NextPeer(BackoffKind::RegionScheduling),
        };
    }
    if err.disk_full.is_some() {
        return Backoff(BackoffKind::TiKvDiskFull);
    }
    if err.recovery_in_progress.is_some() {
        return relocate(Some(BackoffKind::RegionRecoveryInProgress));
    }
    if err.is_witness.is_some() {
        return relocate(Some(BackoffKind::IsWitness));
    }
    if err.flashback_in_progress.is_some() || err.flashback_not_prepared.is_some() {
        return fatal(region_id, err);
    }
    if err.region_not_found.is_some() || err.key_not_in_region.is_some() {
        return relocate(Some(BackoffKind::RegionMiss));
    }
    if let Some(epoch) = &err.epoch_not_match {
        return Relocate {
            // Fresh regions in hand: regroup at once. Without them, back off like client-go's
            // raw client does for every returned region error.
            backoff: if epoch.current_regions.is_empty() {
                Some(BackoffKind::RegionMiss)
            } else {
                None
            },
            current_regions: epoch.current_regions.clone(),
            refresh_store: false,
        };
    }
    if err.bucket_version_not_match.is_some() || err.mismatch_peer_id.is_some() {
        return relocate(Some(BackoffKind::RegionMiss));
    }
    if err.server_is_busy.is_some() {
        return Backoff(BackoffKind::TiKvServerBusy);
    }
    if err.stale_command.is_some() {
        return Backoff(BackoffKind::StaleCmd);
    }
    if err.store_not_match.is_some() {
        return Relocate {
            backoff: Some(BackoffKind::RegionMiss),
            current_regions: Vec::new(),
            refresh_store: true,
        };
    }
    if err.raft_entry_too_large.is_some() {
        return fatal(region_id, err);
    }
    if err.max_timestamp_not_synced.is_some() {
        return Backoff(BackoffKind::MaxTsNotSynced);
    }
    if err.region_not_initialized.is_some() {
        return Backoff(BackoffKind::RegionNotInitialized);
    }
    if err.read_index_not_ready.is_some() || err.proposal_in_merging_mode.is_some() {
        return Backoff(BackoffKind::RegionScheduling);
    }
    if err.data_is_not_ready.is_some() {
        return relocate(None);
    }
    // Anything else: drop the cached region and look again, as client-go does.
    relocate(Some(BackoffKind::RegionMiss))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tikv_proto::metapb;

    fn with(f: impl FnOnce(&mut errorpb::Error)) -> errorpb::Error {
        let mut err = errorpb::Error::default();
        f(&mut err);
        err
    }

    #[test]
    fn not_leader_with_and_without_hint() {
        let hinted = with(|e| {
            e.not_leader = Some(errorpb::NotLeader {
                region_id: 1,
                leader: Some(metapb::Peer {
                    id: 7,
                    store_id: 3,
                    ..Default::default()
                }),
            })
        });
        assert_eq!(
            classify(1, &hinted),
            RegionRetry::UpdateLeader {
                leader_store_id: 3,
                leader_peer_id: 7
            }
        );
        let blind = with(|e| e.not_leader = Some(errorpb::NotLeader::default()));
        assert_eq!(
            classify(1, &blind),
            RegionRetry::NextPeer(BackoffKind::RegionScheduling)
        );
    }

    #[test]
    fn epoch_not_match_carries_current_regions() {
        let err = with(|e| {
            e.epoch_not_match = Some(errorpb::EpochNotMatch {
                current_regions: vec![metapb::Region {
                    id: 4,
                    ..Default::default()
                }],
            })
        });
        match classify(1, &err) {
            RegionRetry::Relocate {
                backoff: None,
                current_regions,
                ..
            } => assert_eq!(current_regions.len(), 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn backoff_kinds_follow_client_go() {
        let cases: Vec<(errorpb::Error, RegionRetry)> = vec![
            (
                with(|e| e.server_is_busy = Some(Default::default())),
                RegionRetry::Backoff(BackoffKind::TiKvServerBusy),
            ),
            (
                with(|e| e.stale_command = Some(Default::default())),
                RegionRetry::Backoff(BackoffKind::StaleCmd),
            ),
            (
                with(|e| e.max_timestamp_not_synced = Some(Default::default())),
                RegionRetry::Backoff(BackoffKind::MaxTsNotSynced),
            ),
            (
                with(|e| e.read_index_not_ready = Some(Default::default())),
                RegionRetry::Backoff(BackoffKind::RegionScheduling),
            ),
            (
                with(|e| e.proposal_in_merging_mode = Some(Default::default())),
                RegionRetry::Backoff(BackoffKind::RegionScheduling),
            ),
            (
                with(|e| e.disk_full = Some(Default::default())),
                RegionRetry::Backoff(BackoffKind::TiKvDiskFull),
            ),
            (
                with(|e| e.region_not_initialized = Some(Default::default())),
                RegionRetry::Backoff(BackoffKind::RegionNotInitialized),
            ),
        ];
        for (err, expected) in cases {
            assert_eq!(classify(1, &err), expected, "{err:?}");
        }
    }

    #[test]
    fn fatal_errors_fail() {
        for (err, kind) in [
            (
                with(|e| e.raft_entry_too_large = Some(Default::default())),
                RegionErrorKind::RaftEntryTooLarge,
            ),
            (
                with(|e| e.flashback_in_progress = Some(Default::default())),
                RegionErrorKind::FlashbackInProgress,
            ),
            (
                with(|e| e.flashback_not_prepared = Some(Default::default())),
                RegionErrorKind::FlashbackNotPrepared,
            ),
        ] {
            assert!(
                matches!(
                    classify(1, &err),
                    RegionRetry::Fail(Error::Region { region_id: 1, kind: k, .. }) if k == kind
                ),
                "{err:?}"
            );
        }
        let undetermined = with(|e| e.undetermined_result = Some(Default::default()));
        assert!(matches!(
            classify(1, &undetermined),
            RegionRetry::Fail(Error::Undetermined(_))
        ));
    }

    #[test]
    fn stale_routing_relocates() {
        for err in [
            with(|e| e.region_not_found = Some(Default::default())),
            with(|e| e.key_not_in_region = Some(Default::default())),
            with(|e| e.recovery_in_progress = Some(Default::default())),
            with(|e| e.is_witness = Some(Default::default())),
            with(|e| e.mismatch_peer_id = Some(Default::default())),
            with(|e| e.bucket_version_not_match = Some(Default::default())),
            with(|e| e.data_is_not_ready = Some(Default::default())),
            with(|e| e.message = "something new".into()),
        ] {
            assert!(
                matches!(classify(1, &err), RegionRetry::Relocate { .. }),
                "{err:?}"
            );
        }
        let store = with(|e| e.store_not_match = Some(Default::default()));
        assert!(matches!(
            classify(1, &store),
            RegionRetry::Relocate {
                refresh_store: true,
                ..
            }
        ));
    }

    /// Port of client-go's `TestMayBackoffForRegionError`: an EpochNotMatch that names the
    /// current regions is retried at once (the cache is updated from it); a fake one and the
    /// other retryable region errors wait first, with the kind the classifier names, and
    /// once the budget is spent the refused wait carries the region error. (client-go
    /// refuses through a cancelled context; a sans-IO backoffer has none, so the spent budget
    /// refuses; cancellation is the machine's `cancel`, tested there.)
    #[test]
    fn test_may_backoff_for_region_error() {
        use crate::backoff::{BackoffError, Backoffer};
        use crate::rand::Rng;

        let real = with(|e| {
            e.epoch_not_match = Some(errorpb::EpochNotMatch {
                current_regions: vec![metapb::Region {
                    id: 1,
                    ..Default::default()
                }],
            })
        });
        assert!(matches!(
            classify(1, &real),
            RegionRetry::Relocate { backoff: None, .. }
        ));
        let mut rng = Rng::new(5);
        for err in [
            with(|e| e.epoch_not_match = Some(errorpb::EpochNotMatch::default())),
            with(|e| e.not_leader = Some(errorpb::NotLeader::default())),
            with(|e| e.server_is_busy = Some(Default::default())),
            with(|e| e.max_timestamp_not_synced = Some(Default::default())),
        ] {
            let kind = match classify(1, &err) {
                RegionRetry::Relocate { backoff, .. } => backoff,
                RegionRetry::Backoff(kind) | RegionRetry::NextPeer(kind) => Some(kind),
                RegionRetry::UpdateLeader { .. } | RegionRetry::Fail(_) => None,
            };
            let Some(kind) = kind else {
                panic!("{err:?} must wait before its retry");
            };
            // A budget of one millisecond: the first wait is granted; later ones are refused
            // once the budget (or, for kinds kept out of it such as ServerIsBusy, their own
            // limit) is spent.
            let mut bo = Backoffer::new(1);
            let cause = format!("{err:?}");
            assert!(bo.next_sleep(kind, &mut rng, &cause).is_ok(), "{err:?}");
            assert_eq!(bo.total_attempts(), 1);
            let refused = (0..1_000).find_map(|_| bo.next_sleep(kind, &mut rng, &cause).err());
            match refused {
                Some(BackoffError::Exhausted(exhausted)) => {
                    assert_eq!(exhausted.cause, cause, "the refusal names the region error");
                }
                other => panic!("{err:?}: {other:?}"),
            }
        }
    }
}
