//! The cluster side of the loop: serving the client's requests with the simulated cluster.

use prost::Message;
use tikv_core::machine::RequestId;
use tikv_core::rpc::PdRequest;
use tikv_proto::frame::Framed;
use tikv_proto::rpc::RpcError;
use tikv_proto::tikvpb::{self, batch_commands_response};
use tikv_sim::tikv::{Execution, TikvRequest, TikvResponse};

use super::*;

impl Simulation {
    pub(super) fn serve_pd(&mut self, id: RequestId, request: PdRequest, frame: Framed) {
        let now_ms = self.wall_ms();
        let result = match &request {
            PdRequest::Tso(_) => self.sim.handle_tso(frame.payload(), now_ms),
            other => self
                .sim
                .handle_pd_unary(other.path(), frame.payload(), PD_URL, now_ms),
        };
        if let Err(status) = &result {
            self.trace
                .push(format!("{} pd #{} failed: {status}", self.now, id.get()));
        }
        let result = result.map(|framed| framed.payload());
        self.send_back(
            &[id],
            Reply::Pd {
                id,
                request,
                result,
            },
        );
    }

    /// The id of the running store at `address`, or the transport error a client dialling
    /// it meets.
    pub(super) fn reach(&mut self, address: &str, ids: &[RequestId]) -> Option<u64> {
        let store = self
            .sim
            .cluster
            .stores()
            .find(|store| store.address == address)
            .map(|store| (store.id, store.running));
        match store {
            Some((store_id, true)) => Some(store_id),
            found => {
                let reason = if found.is_some() {
                    "connection refused (store stopped)"
                } else {
                    "no such host"
                };
                self.trace.push(format!(
                    "{} {address} unreachable {}",
                    self.now,
                    describe_ids(ids)
                ));
                let error = RpcError::Connect {
                    address: address.to_owned(),
                    reason: reason.to_owned(),
                };
                let ids = ids.to_vec();
                let at = self.after_latency();
                self.push(at, Pending::Reply(Reply::Failed { ids, error }));
                None
            }
        }
    }

    /// A store's health service: a running store says it is serving.
    pub(super) fn serve_health(&mut self, id: RequestId, address: &str, frame: Framed) {
        use tikv_proto::grpc::health::v1 as health;
        if self.reach(address, &[id]).is_none() {
            return;
        }
        let result = match health::HealthCheckRequest::decode(frame.payload()) {
            Ok(_) => {
                let status = health::health_check_response::ServingStatus::Serving as i32;
                Framed::encode(&health::HealthCheckResponse { status }, usize::MAX)
                    .map(|framed| framed.payload())
                    .map_err(|err| Status::new(Code::Internal, err.to_string()))
            }
            Err(err) => Err(Status::new(Code::Internal, err.to_string())),
        };
        self.send_back(&[id], Reply::Health { id, result });
    }

    pub(super) fn serve_unary(
        &mut self,
        id: RequestId,
        address: String,
        request: StoreRequest,
        frame: Framed,
    ) {
        let Some(store_id) = self.reach(&address, &[id]) else {
            return;
        };
        let decoded = match TikvRequest::decode(request.path(), frame.payload()) {
            Ok(decoded) => decoded,
            Err(status) => {
                let result = Err(status);
                self.send_back(
                    &[id],
                    Reply::Unary {
                        id,
                        request,
                        result,
                    },
                );
                return;
            }
        };
        match self.execute(store_id, decoded) {
            Execution::Done(response) => {
                let result = response.encode().map(|framed| framed.payload());
                self.send_back(
                    &[id],
                    Reply::Unary {
                        id,
                        request,
                        result,
                    },
                );
            }
            Execution::Parked(wait) => {
                self.parked.insert(
                    wait,
                    ParkedRequest {
                        id,
                        address,
                        unary: Some(request),
                    },
                );
            }
            Execution::Failed(status) => {
                self.trace.push(format!(
                    "{} {address} #{} failed: {status}",
                    self.now,
                    id.get()
                ));
                self.send_back(
                    &[id],
                    Reply::Unary {
                        id,
                        request,
                        result: Err(status),
                    },
                );
            }
            // `execute` resolves delays itself, so a delay here is never seen twice.
            Execution::Dropped | Execution::Delayed { .. } => {
                self.trace
                    .push(format!("{} {address} #{} dropped", self.now, id.get()));
            }
        }
        self.answer_lock_waits();
    }

    /// Runs one request on the cluster. Injected delays and slow stores are applied to the
    /// reply's latency rather than by holding the request: the loop is single-threaded.
    pub(super) fn execute(&mut self, store_id: u64, request: TikvRequest) -> Execution {
        match self.sim.execute(store_id, request, self.wall_ms()) {
            Execution::Delayed { delay_ms, request } => {
                self.trace.push(format!(
                    "{} store-{store_id} delayed {delay_ms} ms",
                    self.now
                ));
                self.extra_latency = Duration::from_millis(delay_ms);
                self.sim
                    .execute_after_delay(store_id, request, self.wall_ms())
            }
            other => other,
        }
    }

    pub(super) fn serve_batch(&mut self, address: String, ids: Vec<RequestId>, frame: Framed) {
        let Some(store_id) = self.reach(&address, &ids) else {
            return;
        };
        let batch = match tikvpb::BatchCommandsRequest::decode(frame.payload()) {
            Ok(batch) => batch,
            Err(err) => {
                let error = RpcError::Protocol(format!("bad BatchCommandsRequest: {err}"));
                self.send_back(
                    &ids,
                    Reply::Failed {
                        ids: ids.clone(),
                        error,
                    },
                );
                return;
            }
        };
        let mut response = tikvpb::BatchCommandsResponse::default();
        for (entry, request_id) in batch.requests.into_iter().zip(batch.request_ids) {
            let Some(cmd) = entry.cmd else {
                continue;
            };
            match self.execute(store_id, TikvRequest::Batch(cmd)) {
                Execution::Done(TikvResponse::Batch(cmd)) => {
                    response.request_ids.push(request_id);
                    response
                        .responses
                        .push(batch_commands_response::Response { cmd: Some(cmd) });
                }
                Execution::Done(_) => {}
                Execution::Parked(wait) => {
                    self.parked.insert(
                        wait,
                        ParkedRequest {
                            id: RequestId::from_wire(request_id),
                            address: address.clone(),
                            unary: None,
                        },
                    );
                }
                Execution::Failed(status) => {
                    // A gRPC failure inside the stream ends the stream, answers and all.
                    self.trace
                        .push(format!("{} {address} stream failed: {status}", self.now));
                    let error = RpcError::Status(status);
                    self.send_back(
                        &ids,
                        Reply::Failed {
                            ids: ids.clone(),
                            error,
                        },
                    );
                    return;
                }
                Execution::Dropped | Execution::Delayed { .. } => {
                    self.trace
                        .push(format!("{} {address} #{request_id} dropped", self.now));
                }
            }
        }
        self.answer_lock_waits();
        self.send_batch_response(address, response);
    }

    pub(super) fn send_batch_response(
        &mut self,
        address: String,
        response: tikvpb::BatchCommandsResponse,
    ) {
        if response.request_ids.is_empty() {
            return;
        }
        let ids: Vec<RequestId> = response
            .request_ids
            .iter()
            .map(|id| RequestId::from_wire(*id))
            .collect();
        match Framed::encode(&response, usize::MAX) {
            Ok(frame) => self.send_back(&ids, Reply::Batch { address, frame }),
            Err(err) => {
                let error = RpcError::Frame(err);
                self.send_back(
                    &ids,
                    Reply::Failed {
                        ids: ids.clone(),
                        error,
                    },
                );
            }
        }
    }

    /// Sends the answers of lock waits the cluster finished (woken or timed out).
    pub(super) fn answer_lock_waits(&mut self) {
        while let Some((wait, response)) = self.sim.poll_ready() {
            let Some(parked) = self.parked.remove(&wait) else {
                continue;
            };
            let id = parked.id;
            match (parked.unary, response) {
                (Some(request), response) => {
                    let result = response.encode().map(|framed| framed.payload());
                    self.send_back(
                        &[id],
                        Reply::Unary {
                            id,
                            request,
                            result,
                        },
                    );
                }
                (None, TikvResponse::Batch(cmd)) => {
                    let response = tikvpb::BatchCommandsResponse {
                        request_ids: vec![id.get()],
                        responses: vec![batch_commands_response::Response { cmd: Some(cmd) }],
                        ..Default::default()
                    };
                    self.send_batch_response(parked.address, response);
                }
                (None, _) => {}
            }
        }
    }
}
