//! Helpers shared by the integration tests: a gRPC channel to a served cluster and a small
//! JSON reader for checking HTTP answers.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub(crate) mod json;
pub(crate) mod txn;

use tikv_proto::pdpb;
use tikv_proto::transport::ChannelConfig;
use tikv_proto::transport::client::{H2Channel, establish};
use tikv_sim::SimServer;
use tikv_sim::serve::ServerExecutor;

/// A plaintext gRPC channel to `address`, on the current tokio runtime.
pub(crate) async fn grpc_channel(address: &str) -> H2Channel<ServerExecutor> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .unwrap_or_else(|err| panic!("connect {address}: {err}"));
    establish(
        stream,
        ServerExecutor::new(tokio::runtime::Handle::current()),
        address,
        None,
        ChannelConfig::default(),
    )
    .await
    .unwrap_or_else(|err| panic!("handshake with {address}: {err}"))
}

/// A PD request header naming the served cluster.
pub(crate) fn pd_header(server: &SimServer) -> Option<pdpb::RequestHeader> {
    Some(pdpb::RequestHeader {
        cluster_id: server.with(|sim| sim.cluster.cluster_id()),
        ..Default::default()
    })
}
