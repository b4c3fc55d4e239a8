//! What the examples share: the cluster to talk to.

/// The PD endpoints to connect to: `PD_ENDPOINTS` (comma-separated `host:port`) when set,
/// else those of an embedded simulated cluster (PD and three stores on loopback ports,
/// split at `splits`), which is returned too and must be kept alive while it is used.
pub(crate) async fn cluster(
    splits: &[&str],
) -> Result<(Vec<String>, Option<tikv_sim::SimServer>), Box<dyn std::error::Error>> {
    if let Ok(endpoints) = std::env::var("PD_ENDPOINTS") {
        let endpoints = endpoints.split(',').map(|e| e.trim().to_owned()).collect();
        return Ok((endpoints, None));
    }
    let server = tikv_sim::SimServer::start(tikv_sim::SimConfig::default()).await?;
    server.with(|sim| {
        for key in splits {
            let _ = sim.cluster.split_at(key.as_bytes());
        }
    });
    println!(
        "started an embedded simulated cluster: PD at {}, {} stores",
        server.pd_address(),
        server.store_addresses().len()
    );
    let pd = server.pd_address().to_owned();
    Ok((vec![pd], Some(server)))
}
