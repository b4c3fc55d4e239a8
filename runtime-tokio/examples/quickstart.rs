//! Quickstart: talk gRPC to PD through the client's transport.
//!
//! With `PD_ENDPOINTS` set (`127.0.0.1:2379`, comma-separated), this asks that PD for its
//! members; without it, it first starts an embedded simulated PD on a loopback port. Either
//! way it shows a full gRPC round trip: HTTP/2 connection, framing, status and decoding.
//!
//! Run with `cargo run -p tikv-tokio --example quickstart`.

use std::time::Duration;

use tikv_core::Runtime;
use tikv_proto::grpc::health::v1 as health;
use tikv_proto::pdpb;
use tikv_proto::rpc::{self, CallOptions};
use tikv_tokio::{ConnectOptions, TokioRuntime};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let configured = std::env::var("PD_ENDPOINTS").ok();
    // Keep the embedded PD alive until the end of main.
    let mut _embedded = None;
    let endpoint = match configured.as_deref() {
        Some(endpoints) => endpoints
            .split(',')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned(),
        None => {
            let pd = tikv_sim::stub::StubPd::new(6_982_178_453_187_395_173);
            let server = tikv_sim::serve::serve_loopback(pd.clone(), Default::default()).await?;
            pd.set_address(server.address());
            println!("started an embedded simulated PD at {}", server.address());
            let address = server.address().to_owned();
            _embedded = Some(server);
            address
        }
    };

    let runtime = TokioRuntime::current(ConnectOptions::default())?;
    let channel = runtime.connect(&endpoint).await?;
    let options = CallOptions::with_timeout(Duration::from_secs(3));

    let health = rpc::call(
        &channel,
        health::health::CHECK,
        &health::HealthCheckRequest::default(),
        options.clone(),
        4 << 20,
    )
    .await?;
    println!(
        "health of {endpoint}: {:?}",
        health::health_check_response::ServingStatus::try_from(health.status)
    );

    let members = rpc::call(
        &channel,
        pdpb::pd::GET_MEMBERS,
        &pdpb::GetMembersRequest::default(),
        options,
        4 << 20,
    )
    .await?;
    let cluster_id = members.header.map(|header| header.cluster_id).unwrap_or(0);
    println!("cluster id: {cluster_id}");
    for member in &members.members {
        println!("PD member {} at {:?}", member.name, member.client_urls);
    }
    if let Some(leader) = &members.leader {
        println!("PD leader: {}", leader.name);
    }
    Ok(())
}
