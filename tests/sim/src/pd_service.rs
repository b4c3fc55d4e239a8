//! The PD side of the simulated cluster: gRPC path and bytes in, bytes out.

use bytes::Bytes;
use prost::Message;
use tikv_proto::frame::Framed;
use tikv_proto::grpc::health::v1 as health;
use tikv_proto::status::{Code, Status};
use tikv_proto::{keyspacepb, pdpb};

use crate::cluster::PdError;
use crate::sim::Sim;

fn decode<M: Message + Default>(payload: Bytes) -> Result<M, Status> {
    M::decode(payload).map_err(|err| Status::new(Code::Internal, format!("decode: {err}")))
}

fn encode<M: Message>(message: &M) -> Result<Framed, Status> {
    Framed::encode(message, usize::MAX).map_err(|err| Status::new(Code::Internal, err.to_string()))
}

fn pd<M: Message>(result: Result<M, PdError>) -> Result<Framed, Status> {
    match result {
        Ok(message) => encode(&message),
        Err(err) => Err(err.to_status()),
    }
}

impl Sim {
    /// Answers one unary call to PD (`pdpb.PD`, `keyspacepb.Keyspace`, health). `pd_url` is
    /// PD's own client URL, reported by GetMembers.
    ///
    /// Errors with the gRPC status PD gives: `UNIMPLEMENTED` for methods it does not serve,
    /// `FAILED_PRECONDITION` for a cluster id mismatch, `INTERNAL` for undecodable requests.
    pub fn handle_pd_unary(
        &mut self,
        path: &str,
        payload: Bytes,
        pd_url: &str,
        now_ms: u64,
    ) -> Result<Framed, Status> {
        use pdpb::pd;
        let c = &mut self.cluster;
        match path {
            p if p == pd::GET_MEMBERS.path() => {
                encode(&c.handle_get_members(&decode(payload)?, pd_url))
            }
            p if p == pd::GET_CLUSTER_INFO.path() => {
                encode(&c.handle_get_cluster_info(&decode(payload)?))
            }
            p if p == pd::GET_REGION.path() => pd(c.handle_get_region(&decode(payload)?)),
            p if p == pd::GET_PREV_REGION.path() => pd(c.handle_get_prev_region(&decode(payload)?)),
            p if p == pd::GET_REGION_BY_ID.path() => {
                pd(c.handle_get_region_by_id(&decode(payload)?))
            }
            p if p == pd::SCAN_REGIONS.path() => pd(c.handle_scan_regions(&decode(payload)?)),
            p if p == pd::BATCH_SCAN_REGIONS.path() => {
                pd(c.handle_batch_scan_regions(&decode(payload)?))
            }
            p if p == pd::GET_STORE.path() => pd(c.handle_get_store(&decode(payload)?)),
            p if p == pd::GET_ALL_STORES.path() => pd(c.handle_get_all_stores(&decode(payload)?)),
            p if p == pd::ALLOC_ID.path() => pd(c.handle_alloc_id(&decode(payload)?)),
            p if p == pd::GET_MIN_TS.path() => pd(c.handle_get_min_ts(&decode(payload)?, now_ms)),
            p if p == pd::SET_EXTERNAL_TIMESTAMP.path() => {
                pd(c.handle_set_external_timestamp(&decode(payload)?, now_ms))
            }
            p if p == pd::GET_EXTERNAL_TIMESTAMP.path() => {
                pd(c.handle_get_external_timestamp(&decode(payload)?))
            }
            p if p == pd::SCATTER_REGION.path() => pd(c.handle_scatter_region(&decode(payload)?)),
            p if p == pd::GET_OPERATOR.path() => pd(c.handle_get_operator(&decode(payload)?)),
            p if p == pd::GET_GC_SAFE_POINT.path() => {
                pd(c.handle_get_gc_safe_point(&decode(payload)?))
            }
            p if p == pd::UPDATE_GC_SAFE_POINT.path() => {
                let result = c.handle_update_gc_safe_point(&decode(payload)?);
                if let Ok(response) = &result {
                    // Storage follows the GC safe point, as TiKV's compaction filter does.
                    self.mvcc.gc(response.new_safe_point);
                }
                pd(result)
            }
            p if p == pd::UPDATE_SERVICE_GC_SAFE_POINT.path() => {
                pd(c.handle_update_service_gc_safe_point(&decode(payload)?, now_ms))
            }
            p if p == pd::GET_GC_SAFE_POINT_V2.path() => {
                pd(c.handle_get_gc_safe_point_v2(&decode(payload)?))
            }
            p if p == pd::UPDATE_GC_SAFE_POINT_V2.path() => {
                pd(c.handle_update_gc_safe_point_v2(&decode(payload)?))
            }
            p if p == pd::UPDATE_SERVICE_SAFE_POINT_V2.path() => {
                pd(c.handle_update_service_safe_point_v2(&decode(payload)?, now_ms))
            }
            p if p == pd::GET_GC_STATE.path() => {
                pd(c.handle_get_gc_state(&decode(payload)?, now_ms))
            }
            p if p == pd::ADVANCE_TXN_SAFE_POINT.path() => {
                pd(c.handle_advance_txn_safe_point(&decode(payload)?, now_ms))
            }
            p if p == pd::ADVANCE_GC_SAFE_POINT.path() => {
                let result = c.handle_advance_gc_safe_point(&decode(payload)?);
                if let Ok(response) = &result {
                    self.mvcc.gc(response.new_gc_safe_point);
                }
                pd(result)
            }
            p if p == pd::SET_GC_BARRIER.path() => {
                pd(c.handle_set_gc_barrier(&decode(payload)?, now_ms))
            }
            p if p == pd::DELETE_GC_BARRIER.path() => {
                pd(c.handle_delete_gc_barrier(&decode(payload)?, now_ms))
            }
            p if p == keyspacepb::keyspace::LOAD_KEYSPACE.path() => {
                pd(c.handle_load_keyspace(&decode(payload)?))
            }
            p if p == keyspacepb::keyspace::LOAD_KEYSPACE_BY_ID.path() => {
                pd(c.handle_load_keyspace_by_id(&decode(payload)?))
            }
            p if p == keyspacepb::keyspace::GET_ALL_KEYSPACES.path() => {
                pd(c.handle_get_all_keyspaces(&decode(payload)?))
            }
            p if p == health::health::CHECK.path() => {
                let _request: health::HealthCheckRequest = decode(payload)?;
                encode(&health::HealthCheckResponse {
                    status: health::health_check_response::ServingStatus::Serving as i32,
                })
            }
            other => Err(Status::new(
                Code::Unimplemented,
                format!("unknown method {other}"),
            )),
        }
    }

    /// Answers one message of PD's Tso stream.
    ///
    /// Errors with PD's status when the header names another cluster or TSO is paused.
    pub fn handle_tso(&mut self, payload: Bytes, now_ms: u64) -> Result<Framed, Status> {
        pd(self.cluster.handle_tso(&decode(payload)?, now_ms))
    }

    /// Answers one message of PD's QueryRegion stream.
    ///
    /// Errors with PD's status when the header names another cluster.
    pub fn handle_query_region(&mut self, payload: Bytes) -> Result<Framed, Status> {
        pd(self.cluster.handle_query_region(&decode(payload)?))
    }
}
