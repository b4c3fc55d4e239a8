//! A PD front that answers discovery and health: the first calls every client makes.
//!
//! It reports one PD member (itself) and a fixed non-zero cluster id in every response
//! header, checks the cluster id of requests that carry one (as PD does, answering
//! `FAILED_PRECONDITION` on a mismatch), answers `grpc.health.v1.Health/Check` with SERVING,
//! and answers every other method with `UNIMPLEMENTED`.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use prost::Message;
use tikv_proto::frame::Framed;
use tikv_proto::grpc::health::v1 as health;
use tikv_proto::pdpb;
use tikv_proto::rpc::BoxFuture;
use tikv_proto::status::{Code, Status};
use tikv_proto::transport::server::{Handler, ServerCall};

/// The stub PD.
#[derive(Clone, Debug)]
pub struct StubPd {
    cluster_id: u64,
    /// This PD's own client URL, set once the port is known.
    client_url: Arc<OnceLock<String>>,
}

impl StubPd {
    /// A stub PD for the cluster `cluster_id` (must be non-zero).
    pub fn new(cluster_id: u64) -> Arc<Self> {
        Arc::new(Self {
            cluster_id,
            client_url: Arc::new(OnceLock::new()),
        })
    }

    /// Records the address the stub is served on, which it reports as its client URL.
    pub fn set_address(&self, address: &str) {
        let _ = self.client_url.set(format!("http://{address}"));
    }

    fn header(&self) -> pdpb::ResponseHeader {
        pdpb::ResponseHeader {
            cluster_id: self.cluster_id,
            ..Default::default()
        }
    }

    fn check_header(&self, header: Option<&pdpb::RequestHeader>) -> Result<(), Status> {
        match header {
            Some(header) if header.cluster_id != 0 && header.cluster_id != self.cluster_id => {
                Err(Status::new(
                    Code::FailedPrecondition,
                    format!(
                        "mismatch cluster id, need {} but got {}",
                        self.cluster_id, header.cluster_id
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    fn answer(&self, path: &str, request: Bytes) -> Result<Framed, Status> {
        let limit = usize::MAX;
        let decode_error = |err: prost::DecodeError| Status::new(Code::Internal, err.to_string());
        let frame = |framed: Result<Framed, _>| {
            framed.map_err(|err: tikv_proto::frame::FrameError| {
                Status::new(Code::ResourceExhausted, err.to_string())
            })
        };
        match path {
            p if p == pdpb::pd::GET_MEMBERS.path() => {
                let request = pdpb::GetMembersRequest::decode(request).map_err(decode_error)?;
                self.check_header(request.header.as_ref())?;
                let me = pdpb::Member {
                    name: "pd-stub".to_owned(),
                    member_id: 1,
                    client_urls: self.client_url.get().cloned().into_iter().collect(),
                    peer_urls: self.client_url.get().cloned().into_iter().collect(),
                    ..Default::default()
                };
                frame(Framed::encode(
                    &pdpb::GetMembersResponse {
                        header: Some(self.header()),
                        members: vec![me.clone()],
                        leader: Some(me.clone()),
                        etcd_leader: Some(me),
                        ..Default::default()
                    },
                    limit,
                ))
            }
            p if p == health::health::CHECK.path() => {
                health::HealthCheckRequest::decode(request).map_err(decode_error)?;
                frame(Framed::encode(
                    &health::HealthCheckResponse {
                        status: health::health_check_response::ServingStatus::Serving as i32,
                    },
                    limit,
                ))
            }
            other => Err(Status::new(
                Code::Unimplemented,
                format!("unknown method {other}"),
            )),
        }
    }
}

impl Handler for StubPd {
    fn call(&self, call: ServerCall) -> BoxFuture<'static, ()> {
        let ServerCall {
            path,
            requests,
            responder,
            ..
        } = call;
        let stub = self.clone();
        Box::pin(async move {
            let answer = match requests.single().await {
                Ok(request) => stub.answer(&path, request),
                Err(status) => Err(status),
            };
            responder.reply(answer).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_and_cluster_id_check() {
        let stub = StubPd::new(7);
        stub.set_address("127.0.0.1:1");
        let request = pdpb::GetMembersRequest::default().encode_to_vec();
        let answer = stub.answer(pdpb::pd::GET_MEMBERS.path(), Bytes::from(request));
        let members = answer
            .ok()
            .and_then(|framed| pdpb::GetMembersResponse::decode(framed.payload()).ok());
        let members = members.unwrap_or_default();
        assert_eq!(members.header.map(|h| h.cluster_id), Some(7));
        assert_eq!(
            members.leader.map(|l| l.client_urls),
            Some(vec!["http://127.0.0.1:1".to_owned()])
        );

        let wrong = pdpb::GetMembersRequest {
            header: Some(pdpb::RequestHeader {
                cluster_id: 8,
                ..Default::default()
            }),
        }
        .encode_to_vec();
        let answer = stub.answer(pdpb::pd::GET_MEMBERS.path(), Bytes::from(wrong));
        assert_eq!(answer.err().map(|s| s.code), Some(Code::FailedPrecondition));
        let unknown = stub.answer("/pdpb.PD/Nope", Bytes::new());
        assert_eq!(unknown.err().map(|s| s.code), Some(Code::Unimplemented));
    }
}
