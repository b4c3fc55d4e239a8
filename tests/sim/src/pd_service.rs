//! The PD side of the simulated cluster: gRPC path and bytes in, bytes out.

use bytes::Bytes;
use prost::Message;
use tikv_proto::frame::Framed;
use tikv_proto::grpc::health::v1 as health;
use tikv_proto::status::{Code, Status};
use tikv_proto::{etcdserverpb, keyspacepb, pdpb};

use crate::cluster::{EtcdError, PdCallContext, PdCallKind, PdError};
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

fn etcd<M: Message>(result: Result<M, EtcdError>) -> Result<Framed, Status> {
    match result {
        Ok(message) => encode(&message),
        Err(err) => Err(err.to_status()),
    }
}

impl Sim {
    /// Answers one unary call to PD (`pdpb.PD`, `keyspacepb.Keyspace`, health) as the member a
    /// caller naming none reaches ([`Cluster::pd_default_member`]: the leader). `pd_url`
    /// stands in, in `GetMembers`, for members whose URL was never set.
    ///
    /// Errors like [`handle_pd_unary_at`](Self::handle_pd_unary_at).
    ///
    /// [`Cluster::pd_default_member`]: crate::cluster::Cluster::pd_default_member
    pub fn handle_pd_unary(
        &mut self,
        path: &str,
        payload: Bytes,
        pd_url: &str,
        now_ms: u64,
    ) -> Result<Framed, Status> {
        let context = PdCallContext::at(self.cluster.pd_default_member());
        self.serve_pd_unary(&context, path, payload, pd_url, now_ms)
    }

    /// Answers one unary call to PD arriving at `context.member_id`, after PD's role check
    /// (a follower refuses what only the leader serves, or forwards it; see
    /// [`crate::cluster::PdCallKind`]).
    ///
    /// Errors with the gRPC status PD gives: `UNAVAILABLE` from a follower or a stopped
    /// member, `UNIMPLEMENTED` for methods it does not serve, `FAILED_PRECONDITION` for a
    /// cluster id mismatch, `INTERNAL` for undecodable requests.
    pub fn handle_pd_unary_at(
        &mut self,
        context: &PdCallContext<'_>,
        path: &str,
        payload: Bytes,
        now_ms: u64,
    ) -> Result<Framed, Status> {
        self.serve_pd_unary(context, path, payload, "", now_ms)
    }

    fn serve_pd_unary(
        &mut self,
        context: &PdCallContext<'_>,
        path: &str,
        payload: Bytes,
        fallback_url: &str,
        now_ms: u64,
    ) -> Result<Framed, Status> {
        self.cluster
            .pd_role_check(PdCallKind::of_path(path), context)
            .map_err(|err| err.to_status())?;
        use pdpb::pd;
        let c = &mut self.cluster;
        match path {
            p if p == pd::GET_MEMBERS.path() => {
                encode(&c.handle_get_members(&decode(payload)?, fallback_url))
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
            p if p == etcdserverpb::kv::RANGE.path() => {
                etcd(c.handle_etcd_range(&decode(payload)?))
            }
            p if p == etcdserverpb::kv::PUT.path() => etcd(c.handle_etcd_put(&decode(payload)?)),
            p if p == etcdserverpb::kv::DELETE_RANGE.path() => {
                encode(&c.handle_etcd_delete_range(&decode(payload)?))
            }
            other if other.starts_with("/resource_manager.") => {
                self.handle_resource_manager(other, payload)
            }
            other => Err(Status::new(
                Code::Unimplemented,
                format!("unknown method {other}"),
            )),
        }
    }

    /// Answers one message of PD's Tso stream at the member a caller naming none reaches
    /// (the leader).
    ///
    /// Errors like [`handle_tso_at`](Self::handle_tso_at).
    pub fn handle_tso(&mut self, payload: Bytes, now_ms: u64) -> Result<Framed, Status> {
        let context = PdCallContext::at(self.cluster.pd_default_member());
        self.handle_tso_at(&context, payload, now_ms)
    }

    /// Answers one message of a Tso stream opened at `context.member_id` (forwarded to the
    /// leader when the stream carries `pd-forwarded-host`).
    ///
    /// Errors with PD's status, which ends the stream: `UNKNOWN` on a follower (its allocator
    /// does not hold the lease) or when TSO is paused, `FAILED_PRECONDITION` when the header
    /// names another cluster, `UNAVAILABLE` on a stopped member.
    pub fn handle_tso_at(
        &mut self,
        context: &PdCallContext<'_>,
        payload: Bytes,
        now_ms: u64,
    ) -> Result<Framed, Status> {
        let request: pdpb::TsoRequest = decode(payload)?;
        self.cluster
            .pd_tso_check(context, request.header.as_ref())
            .map_err(|err| err.to_status())?;
        pd(self.cluster.handle_tso(&request, now_ms))
    }

    /// Answers one message of PD's QueryRegion stream.
    ///
    /// Errors with PD's status when the header names another cluster.
    pub fn handle_query_region(&mut self, payload: Bytes) -> Result<Framed, Status> {
        pd(self.cluster.handle_query_region(&decode(payload)?))
    }
}

/// The one resource group the simulated cluster has: `default`, with an unlimited RU bucket.
fn default_resource_group() -> tikv_proto::resource_manager::ResourceGroup {
    use tikv_proto::resource_manager as rm;
    rm::ResourceGroup {
        name: "default".to_owned(),
        mode: rm::GroupMode::RuMode as i32,
        r_u_settings: Some(rm::GroupRequestUnitSettings {
            r_u: Some(unlimited_bucket(0.0)),
        }),
        priority: 8,
        ..Default::default()
    }
}

/// A token bucket that never runs dry: a huge fill rate and burst, holding `tokens`.
fn unlimited_bucket(tokens: f64) -> tikv_proto::resource_manager::TokenBucket {
    use tikv_proto::resource_manager as rm;
    rm::TokenBucket {
        settings: Some(rm::TokenLimitSettings {
            fill_rate: u64::from(u32::MAX),
            burst_limit: -1,
            max_tokens: f64::from(u32::MAX),
        }),
        tokens,
    }
}

impl Sim {
    /// Answers the resource manager's unary calls: every group lookup sees the `default`
    /// group with unlimited request units (the simulator does not throttle).
    ///
    /// Errors with `UNIMPLEMENTED` for the group administration calls, `INTERNAL` for
    /// undecodable requests.
    pub fn handle_resource_manager(&self, path: &str, payload: Bytes) -> Result<Framed, Status> {
        use tikv_proto::resource_manager as rm;
        match path {
            p if p == rm::resource_manager::GET_RESOURCE_GROUP.path() => {
                let request: rm::GetResourceGroupRequest = decode(payload)?;
                let response = if request.resource_group_name == "default" {
                    rm::GetResourceGroupResponse {
                        group: Some(default_resource_group()),
                        ..Default::default()
                    }
                } else {
                    rm::GetResourceGroupResponse {
                        error: Some(rm::Error {
                            message: format!(
                                "resource group {} does not exist",
                                request.resource_group_name
                            ),
                        }),
                        ..Default::default()
                    }
                };
                encode(&response)
            }
            p if p == rm::resource_manager::LIST_RESOURCE_GROUPS.path() => {
                let _request: rm::ListResourceGroupsRequest = decode(payload)?;
                encode(&rm::ListResourceGroupsResponse {
                    groups: vec![default_resource_group()],
                    ..Default::default()
                })
            }
            other => Err(Status::new(
                Code::Unimplemented,
                format!("unknown method {other}"),
            )),
        }
    }

    /// Answers one message of an AcquireTokenBuckets stream opened at `context.member_id`:
    /// only the leader serves it (the resource manager's `checkServing`).
    ///
    /// Errors with `UNAVAILABLE` on a follower, else as
    /// [`handle_token_buckets`](Self::handle_token_buckets).
    pub fn handle_token_buckets_at(
        &self,
        context: &PdCallContext<'_>,
        payload: Bytes,
    ) -> Result<Framed, Status> {
        self.cluster
            .pd_role_check(PdCallKind::LeaderOnly, context)
            .map_err(|err| err.to_status())?;
        self.handle_token_buckets(payload)
    }

    /// Answers one message of the AcquireTokenBuckets stream: every group gets the request
    /// units it asked for, at once (permissive, as a cluster without resource control).
    ///
    /// Errors with `INTERNAL` for an undecodable request.
    pub fn handle_token_buckets(&self, payload: Bytes) -> Result<Framed, Status> {
        use tikv_proto::resource_manager as rm;
        use tikv_proto::resource_manager::token_bucket_request::Request as Demand;
        let request: rm::TokenBucketsRequest = decode(payload)?;
        let responses = request
            .requests
            .into_iter()
            .map(|group| {
                let granted = match group.request {
                    Some(Demand::RuItems(items)) => items
                        .request_r_u
                        .iter()
                        .map(|item| rm::GrantedRuTokenBucket {
                            r#type: item.r#type,
                            granted_tokens: Some(unlimited_bucket(item.value)),
                            trickle_time_ms: 0,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                rm::TokenBucketResponse {
                    resource_group_name: group.resource_group_name,
                    granted_r_u_tokens: granted,
                    keyspace_id: group.keyspace_id,
                    ..Default::default()
                }
            })
            .collect();
        encode(&rm::TokenBucketsResponse {
            responses,
            ..Default::default()
        })
    }
}
