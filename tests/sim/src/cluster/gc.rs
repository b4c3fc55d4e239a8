//! GC state as PD keeps it: per keyspace scope a txn safe point, a GC safe point and GC
//! barriers (which is what service safe points became).
//!
//! Rules (PD's GC state manager):
//! - Both safe points only move forward; the GC safe point may not pass the txn safe point.
//! - AdvanceTxnSafePoint moves the txn safe point to the target unless an unexpired barrier
//!   below the target holds it back (it then stops at the lowest barrier, never going back).
//! - The legacy `UpdateGCSafePoint` ignores decreases and answers the value in effect.
//! - `UpdateServiceGCSafePoint` sets (TTL > 0) or deletes a barrier named after the service
//!   and answers the txn safe point as the minimum safe point under the name `gc_worker`;
//!   for the service `gc_worker` itself (TTL must be infinite) it advances the txn safe point.
//! - Scope: the null keyspace `0xFFFFFFFF` is the cluster-wide state. A keyspace that does not
//!   run keyspace-level GC follows the null keyspace for reads and barriers, and is rejected by
//!   the calls that drive GC (advancing safe points).

use std::collections::BTreeMap;

use tikv_proto::pdpb::{self, ErrorType};

use super::pd::{error_header, header_check};
use super::{Cluster, PdError};

/// The keyspace id of the cluster-wide ("null keyspace") GC state.
pub const NULL_KEYSPACE_ID: u32 = 0xFFFF_FFFF;
/// The service id of the GC leader's legacy service safe point.
const GC_WORKER_SERVICE_ID: &str = "gc_worker";
/// Keyspace ids use 24 bits; anything else names the null keyspace.
const VALID_KEYSPACE_ID_MASK: u32 = 0x00FF_FFFF;

/// Why a GC state change was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GcError {
    /// No keyspace has this id.
    #[error("keyspace {0} does not exist")]
    KeyspaceNotFound(u32),
    /// Driving GC of a keyspace that follows the cluster-wide GC.
    #[error("trying to manage GC in keyspace {0} where keyspace level GC is not enabled")]
    NotKeyspaceLevel(u32),
    /// Safe points never go back.
    #[error("trying to update GC safe point to a smaller value, current {current}, given {given}")]
    DecreasingGcSafePoint {
        /// The GC safe point in effect.
        current: u64,
        /// The proposed value.
        given: u64,
    },
    /// The GC safe point may not pass the txn safe point.
    #[error(
        "GC safe point {given} would exceed the txn safe point {txn_safe_point} (current {current})"
    )]
    GcSafePointExceedsTxnSafePoint {
        /// The GC safe point in effect.
        current: u64,
        /// The proposed value.
        given: u64,
        /// The txn safe point in effect.
        txn_safe_point: u64,
    },
    /// Safe points never go back.
    #[error("trying to update txn safe point to a smaller value, current {current}, given {given}")]
    DecreasingTxnSafePoint {
        /// The txn safe point in effect.
        current: u64,
        /// The proposed value.
        given: u64,
    },
    /// A barrier below the txn safe point protects nothing.
    #[error("GC barrier ts {barrier_ts} is behind the txn safe point {txn_safe_point}")]
    BarrierBehindTxnSafePoint {
        /// The proposed barrier.
        barrier_ts: u64,
        /// The txn safe point in effect.
        txn_safe_point: u64,
    },
    /// `gc_worker` is reserved; barrier ids must be non-empty.
    #[error("invalid GC barrier id {0:?}")]
    InvalidBarrierId(String),
    /// The `gc_worker` service safe point must never expire.
    #[error("TTL of gc_worker's service safe point must be infinity")]
    GcWorkerTtlNotInfinite,
    /// Barriers need a positive TTL.
    #[error("invalid ttl {0}")]
    InvalidTtl(i64),
}

/// One GC barrier.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Barrier {
    barrier_ts: u64,
    /// Wall-clock expiry; `None` never expires.
    expires_at_ms: Option<u64>,
}

impl Barrier {
    fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| now_ms > at)
    }

    fn to_proto(&self, id: &str, now_ms: u64) -> pdpb::GcBarrierInfo {
        pdpb::GcBarrierInfo {
            barrier_id: id.to_owned(),
            barrier_ts: self.barrier_ts,
            ttl_seconds: self.expires_at_ms.map_or(i64::MAX, |at| {
                i64::try_from(at.saturating_sub(now_ms) / 1000).unwrap_or(i64::MAX)
            }),
        }
    }
}

/// The GC state of one keyspace scope.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct GcState {
    txn_safe_point: u64,
    gc_safe_point: u64,
    barriers: BTreeMap<String, Barrier>,
}

/// GC states by keyspace scope.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct GcStates {
    states: BTreeMap<u32, GcState>,
}

/// The outcome of advancing a txn safe point.
struct TxnAdvance {
    old: u64,
    new: u64,
    blocker: String,
}

impl GcStates {
    fn state(&mut self, scope: u32) -> &mut GcState {
        self.states.entry(scope).or_default()
    }

    fn advance_gc_safe_point(
        &mut self,
        scope: u32,
        target: u64,
        compatible: bool,
        cap_by_txn: bool,
    ) -> Result<(u64, u64), GcError> {
        let state = self.state(scope);
        let old = state.gc_safe_point;
        if target < old {
            if compatible {
                return Ok((old, old));
            }
            return Err(GcError::DecreasingGcSafePoint {
                current: old,
                given: target,
            });
        }
        if cap_by_txn && target > state.txn_safe_point {
            return Err(GcError::GcSafePointExceedsTxnSafePoint {
                current: old,
                given: target,
                txn_safe_point: state.txn_safe_point,
            });
        }
        state.gc_safe_point = target;
        Ok((old, target))
    }

    fn advance_txn_safe_point(
        &mut self,
        scope: u32,
        target: u64,
        now_ms: u64,
    ) -> Result<TxnAdvance, GcError> {
        let state = self.state(scope);
        let old = state.txn_safe_point;
        if target < old {
            return Err(GcError::DecreasingTxnSafePoint {
                current: old,
                given: target,
            });
        }
        state
            .barriers
            .retain(|_, barrier| !barrier.is_expired(now_ms));
        let blocking = state
            .barriers
            .iter()
            .filter(|(_, barrier)| barrier.barrier_ts < target)
            .min_by_key(|(_, barrier)| barrier.barrier_ts);
        let (min_blocker, blocker) = match blocking {
            Some((id, barrier)) => (
                barrier.barrier_ts,
                format!(
                    "GCBarrier {{ BarrierID: {id:?}, BarrierTS: {} }}",
                    barrier.barrier_ts
                ),
            ),
            None => (target, String::new()),
        };
        let new = old.max(min_blocker);
        state.txn_safe_point = new;
        Ok(TxnAdvance { old, new, blocker })
    }

    fn set_barrier(
        &mut self,
        scope: u32,
        id: &str,
        barrier_ts: u64,
        ttl_s: i64,
        now_ms: u64,
    ) -> Result<Barrier, GcError> {
        if id.is_empty() || id == GC_WORKER_SERVICE_ID {
            return Err(GcError::InvalidBarrierId(id.to_owned()));
        }
        if ttl_s <= 0 {
            return Err(GcError::InvalidTtl(ttl_s));
        }
        let state = self.state(scope);
        if barrier_ts < state.txn_safe_point {
            return Err(GcError::BarrierBehindTxnSafePoint {
                barrier_ts,
                txn_safe_point: state.txn_safe_point,
            });
        }
        let expires_at_ms = if ttl_s == i64::MAX {
            None
        } else {
            Some(now_ms.saturating_add((ttl_s as u64).saturating_mul(1000)))
        };
        let barrier = Barrier {
            barrier_ts,
            expires_at_ms,
        };
        state.barriers.insert(id.to_owned(), barrier.clone());
        Ok(barrier)
    }

    fn delete_barrier(&mut self, scope: u32, id: &str) -> Result<Option<Barrier>, GcError> {
        if id.is_empty() || id == GC_WORKER_SERVICE_ID {
            return Err(GcError::InvalidBarrierId(id.to_owned()));
        }
        Ok(self.state(scope).barriers.remove(id))
    }
}

/// The keyspace id inside a `KeyspaceScope` (none = the null keyspace).
fn scope_id(scope: Option<&pdpb::KeyspaceScope>) -> u32 {
    match scope.and_then(|scope| scope.keyspace.as_ref()) {
        Some(pdpb::keyspace_scope::Keyspace::KeyspaceId(id)) => *id,
        _ => NULL_KEYSPACE_ID,
    }
}

impl Cluster {
    /// Maps a requested keyspace to the GC scope that governs it. `user_api` calls (reads,
    /// barriers) on a keyspace without keyspace-level GC go to the null keyspace; GC-driving
    /// calls on one are rejected.
    fn gc_scope(&self, keyspace_id: u32, user_api: bool) -> Result<u32, GcError> {
        if keyspace_id & !VALID_KEYSPACE_ID_MASK != 0 {
            return Ok(NULL_KEYSPACE_ID);
        }
        match self.keyspaces.has_keyspace_level_gc(keyspace_id) {
            None => Err(GcError::KeyspaceNotFound(keyspace_id)),
            Some(true) => Ok(keyspace_id),
            Some(false) if user_api => Ok(NULL_KEYSPACE_ID),
            Some(false) => Err(GcError::NotKeyspaceLevel(keyspace_id)),
        }
    }

    fn gc_error_header(&self, err: &GcError) -> Option<pdpb::ResponseHeader> {
        Some(error_header(
            self.cluster_id(),
            ErrorType::Unknown,
            &err.to_string(),
        ))
    }

    /// `GetGCSafePoint` (legacy): the cluster-wide GC safe point.
    pub fn handle_get_gc_safe_point(
        &mut self,
        req: &pdpb::GetGcSafePointRequest,
    ) -> Result<pdpb::GetGcSafePointResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        Ok(pdpb::GetGcSafePointResponse {
            header: Some(self.header()),
            safe_point: self.gc.state(NULL_KEYSPACE_ID).gc_safe_point,
        })
    }

    /// `UpdateGCSafePoint` (legacy): raises the cluster-wide GC safe point, ignoring
    /// decreases; answers the value in effect. Above the txn safe point it fails (gRPC
    /// error) unless `cap_gc_safe_point_by_txn_safe_point` is off.
    pub fn handle_update_gc_safe_point(
        &mut self,
        req: &pdpb::UpdateGcSafePointRequest,
    ) -> Result<pdpb::UpdateGcSafePointResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        let cap = self.config.cap_gc_safe_point_by_txn_safe_point;
        let (_, new) =
            self.gc
                .advance_gc_safe_point(NULL_KEYSPACE_ID, req.safe_point, true, cap)?;
        Ok(pdpb::UpdateGcSafePointResponse {
            header: Some(self.header()),
            new_safe_point: new,
        })
    }

    /// `UpdateServiceGCSafePoint` (legacy): sets or deletes the service's barrier in the
    /// cluster-wide scope, using the TSO's physical time at `now_ms` as PD does.
    pub fn handle_update_service_gc_safe_point(
        &mut self,
        req: &pdpb::UpdateServiceGcSafePointRequest,
        now_ms: u64,
    ) -> Result<pdpb::UpdateServiceGcSafePointResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        let service_id = String::from_utf8_lossy(&req.service_id).into_owned();
        let (id, ttl, min) = self.update_service_safe_point(
            NULL_KEYSPACE_ID,
            &service_id,
            req.safe_point,
            req.ttl,
            now_ms,
        )?;
        Ok(pdpb::UpdateServiceGcSafePointResponse {
            header: Some(self.header()),
            service_id: id.into(),
            ttl,
            min_safe_point: min,
        })
    }

    /// `GetGCSafePointV2`: the GC safe point governing a keyspace.
    pub fn handle_get_gc_safe_point_v2(
        &mut self,
        req: &pdpb::GetGcSafePointV2Request,
    ) -> Result<pdpb::GetGcSafePointV2Response, PdError> {
        header_check(self, req.header.as_ref())?;
        let keyspace_id = match req.keyspace {
            Some(pdpb::get_gc_safe_point_v2_request::Keyspace::KeyspaceId(id)) => id,
            _ => NULL_KEYSPACE_ID,
        };
        let scope = self.gc_scope(keyspace_id, false)?;
        Ok(pdpb::GetGcSafePointV2Response {
            header: Some(self.header()),
            safe_point: self.gc.state(scope).gc_safe_point,
        })
    }

    /// `UpdateGCSafePointV2`: the keyspace-scoped form of `UpdateGCSafePoint`.
    pub fn handle_update_gc_safe_point_v2(
        &mut self,
        req: &pdpb::UpdateGcSafePointV2Request,
    ) -> Result<pdpb::UpdateGcSafePointV2Response, PdError> {
        header_check(self, req.header.as_ref())?;
        let keyspace_id = match req.keyspace {
            Some(pdpb::update_gc_safe_point_v2_request::Keyspace::KeyspaceId(id)) => id,
            _ => NULL_KEYSPACE_ID,
        };
        let scope = self.gc_scope(keyspace_id, false)?;
        let cap = self.config.cap_gc_safe_point_by_txn_safe_point;
        let (_, new) = self
            .gc
            .advance_gc_safe_point(scope, req.safe_point, true, cap)?;
        Ok(pdpb::UpdateGcSafePointV2Response {
            header: Some(self.header()),
            new_safe_point: new,
        })
    }

    /// `UpdateServiceSafePointV2`: the keyspace-scoped form of `UpdateServiceGCSafePoint`.
    pub fn handle_update_service_safe_point_v2(
        &mut self,
        req: &pdpb::UpdateServiceSafePointV2Request,
        now_ms: u64,
    ) -> Result<pdpb::UpdateServiceSafePointV2Response, PdError> {
        header_check(self, req.header.as_ref())?;
        let keyspace_id = match req.keyspace {
            Some(pdpb::update_service_safe_point_v2_request::Keyspace::KeyspaceId(id)) => id,
            _ => NULL_KEYSPACE_ID,
        };
        let service_id = String::from_utf8_lossy(&req.service_id).into_owned();
        let (id, ttl, min) = self.update_service_safe_point(
            keyspace_id,
            &service_id,
            req.safe_point,
            req.ttl,
            now_ms,
        )?;
        Ok(pdpb::UpdateServiceSafePointV2Response {
            header: Some(self.header()),
            service_id: id.into(),
            ttl,
            min_safe_point: min,
        })
    }

    /// `GetGCState`: txn safe point, GC safe point and (unless excluded) barriers of the scope
    /// governing the keyspace; global barriers, when asked for, are always an empty list.
    pub fn handle_get_gc_state(
        &mut self,
        req: &pdpb::GetGcStateRequest,
        now_ms: u64,
    ) -> Result<pdpb::GetGcStateResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        let scope = match self.gc_scope(scope_id(req.keyspace_scope.as_ref()), true) {
            Ok(scope) => scope,
            Err(err) => {
                return Ok(pdpb::GetGcStateResponse {
                    header: self.gc_error_header(&err),
                    ..Default::default()
                });
            }
        };
        let state = self.gc.state(scope);
        let gc_barriers = if req.exclude_gc_barriers {
            Vec::new()
        } else {
            state
                .barriers
                .iter()
                .map(|(id, barrier)| barrier.to_proto(id, now_ms))
                .collect()
        };
        let gc_state = pdpb::GcState {
            keyspace_scope: Some(pdpb::KeyspaceScope {
                keyspace: Some(pdpb::keyspace_scope::Keyspace::KeyspaceId(scope)),
            }),
            is_keyspace_level_gc: scope != NULL_KEYSPACE_ID,
            txn_safe_point: state.txn_safe_point,
            gc_safe_point: state.gc_safe_point,
            gc_barriers,
        };
        Ok(pdpb::GetGcStateResponse {
            header: Some(self.header()),
            gc_state: Some(gc_state),
            global_gc_barriers: req
                .include_global_gc_barriers
                .then(pdpb::GlobalGcBarriersInfo::default),
        })
    }

    /// `AdvanceTxnSafePoint`: moves the txn safe point toward the target (barriers may hold
    /// it back; the blocker is described); errors go in the header.
    pub fn handle_advance_txn_safe_point(
        &mut self,
        req: &pdpb::AdvanceTxnSafePointRequest,
        now_ms: u64,
    ) -> Result<pdpb::AdvanceTxnSafePointResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        let result = self
            .gc_scope(scope_id(req.keyspace_scope.as_ref()), false)
            .and_then(|scope| self.gc.advance_txn_safe_point(scope, req.target, now_ms));
        Ok(match result {
            Ok(advance) => pdpb::AdvanceTxnSafePointResponse {
                header: Some(self.header()),
                old_txn_safe_point: advance.old,
                new_txn_safe_point: advance.new,
                blocker_description: advance.blocker,
            },
            Err(err) => pdpb::AdvanceTxnSafePointResponse {
                header: self.gc_error_header(&err),
                ..Default::default()
            },
        })
    }

    /// `AdvanceGCSafePoint`: moves the GC safe point to the target; going back or passing the
    /// txn safe point is an error in the header.
    pub fn handle_advance_gc_safe_point(
        &mut self,
        req: &pdpb::AdvanceGcSafePointRequest,
    ) -> Result<pdpb::AdvanceGcSafePointResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        let result = self
            .gc_scope(scope_id(req.keyspace_scope.as_ref()), false)
            .and_then(|scope| {
                self.gc
                    .advance_gc_safe_point(scope, req.target, false, true)
            });
        Ok(match result {
            Ok((old, new)) => pdpb::AdvanceGcSafePointResponse {
                header: Some(self.header()),
                old_gc_safe_point: old,
                new_gc_safe_point: new,
            },
            Err(err) => pdpb::AdvanceGcSafePointResponse {
                header: self.gc_error_header(&err),
                ..Default::default()
            },
        })
    }

    /// `SetGCBarrier`: sets a barrier (TTL in seconds, `i64::MAX` = forever) at or above the
    /// txn safe point.
    pub fn handle_set_gc_barrier(
        &mut self,
        req: &pdpb::SetGcBarrierRequest,
        now_ms: u64,
    ) -> Result<pdpb::SetGcBarrierResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        let result = self
            .gc_scope(scope_id(req.keyspace_scope.as_ref()), true)
            .and_then(|scope| {
                self.gc.set_barrier(
                    scope,
                    &req.barrier_id,
                    req.barrier_ts,
                    req.ttl_seconds,
                    now_ms,
                )
            });
        Ok(match result {
            Ok(barrier) => pdpb::SetGcBarrierResponse {
                header: Some(self.header()),
                new_barrier_info: Some(barrier.to_proto(&req.barrier_id, now_ms)),
            },
            Err(err) => pdpb::SetGcBarrierResponse {
                header: self.gc_error_header(&err),
                new_barrier_info: None,
            },
        })
    }

    /// `DeleteGCBarrier`: removes a barrier and answers it (none if it did not exist).
    pub fn handle_delete_gc_barrier(
        &mut self,
        req: &pdpb::DeleteGcBarrierRequest,
        now_ms: u64,
    ) -> Result<pdpb::DeleteGcBarrierResponse, PdError> {
        header_check(self, req.header.as_ref())?;
        let result = self
            .gc_scope(scope_id(req.keyspace_scope.as_ref()), true)
            .and_then(|scope| self.gc.delete_barrier(scope, &req.barrier_id));
        Ok(match result {
            Ok(deleted) => pdpb::DeleteGcBarrierResponse {
                header: Some(self.header()),
                deleted_barrier_info: deleted.map(|b| b.to_proto(&req.barrier_id, now_ms)),
            },
            Err(err) => pdpb::DeleteGcBarrierResponse {
                header: self.gc_error_header(&err),
                deleted_barrier_info: None,
            },
        })
    }

    /// The shared body of the two service-safe-point calls: returns the service id, TTL and
    /// minimum safe point to answer.
    fn update_service_safe_point(
        &mut self,
        keyspace_id: u32,
        service_id: &str,
        safe_point: u64,
        ttl_s: i64,
        now_ms: u64,
    ) -> Result<(String, i64, u64), PdError> {
        let scope = self.gc_scope(keyspace_id, true)?;
        // PD measures service TTLs on the TSO's physical clock.
        let now_ms = u64::try_from(self.tso.allocate(1, now_ms)?.physical_ms).unwrap_or(0);
        let now_s = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        let forever_ttl = i64::MAX - now_s;
        if service_id == GC_WORKER_SERVICE_ID {
            if ttl_s != i64::MAX {
                return Err(GcError::GcWorkerTtlNotInfinite.into());
            }
            let advance = self.gc.advance_txn_safe_point(scope, safe_point, now_ms)?;
            return Ok((GC_WORKER_SERVICE_ID.to_owned(), forever_ttl, advance.new));
        }
        let result = if ttl_s > 0 {
            self.gc
                .set_barrier(scope, service_id, safe_point, ttl_s, now_ms)
                .map(|_| ())
        } else {
            self.gc.delete_barrier(scope, service_id).map(|_| ())
        };
        match result {
            // A service safe point behind the txn safe point is silently ineffective.
            Ok(()) | Err(GcError::BarrierBehindTxnSafePoint { .. }) => {}
            Err(err) => return Err(err.into()),
        }
        let txn_safe_point = self.gc.state(scope).txn_safe_point;
        Ok((GC_WORKER_SERVICE_ID.to_owned(), forever_ttl, txn_safe_point))
    }
}

#[cfg(test)]
#[path = "gc_tests.rs"]
mod tests;
