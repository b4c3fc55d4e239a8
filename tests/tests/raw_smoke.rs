//! Smoke test: the raw client against the simulated cluster over loopback.

use bytes::Bytes;
use tikv_core::Config;
use tikv_sim::{SimConfig, SimServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_put_get_scan_across_regions() {
    let server = SimServer::start(SimConfig::default())
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    server.with(|sim| {
        for key in ["b", "d", "f"] {
            sim.cluster
                .split_at(key.as_bytes())
                .unwrap_or_else(|err| panic!("{err}"));
        }
    });
    let client = tikv_tokio::connect([server.pd_address()], Config::default())
        .unwrap_or_else(|err| panic!("{err}"));
    let raw = client.raw();
    for key in ["a", "b", "c", "d", "e", "f", "g"] {
        raw.put(key, format!("v-{key}"))
            .await
            .unwrap_or_else(|err| panic!("put {key}: {err}"));
    }
    assert_eq!(
        raw.get("c").await.ok().flatten(),
        Some(Bytes::from_static(b"v-c"))
    );
    assert_eq!(raw.get("zz").await.ok(), Some(None));
    let pairs = raw
        .scan("a".., 100)
        .await
        .unwrap_or_else(|err| panic!("scan: {err}"));
    let keys: Vec<_> = pairs.iter().map(|p| p.key.clone()).collect();
    assert_eq!(
        keys,
        ["a", "b", "c", "d", "e", "f", "g"].map(|k| Bytes::from_static(k.as_bytes()))
    );
    assert!(matches!(
        raw.reverse_scan::<[u8]>(.., 3).await,
        Err(tikv_core::Error::InvalidArgument(_))
    ));
    let reversed = raw
        .reverse_scan(.."zz", 3)
        .await
        .unwrap_or_else(|err| panic!("rscan: {err}"));
    let keys: Vec<_> = reversed.iter().map(|p| p.key.clone()).collect();
    assert_eq!(
        keys,
        ["g", "f", "e"].map(|k| Bytes::from_static(k.as_bytes()))
    );
    let values = raw
        .batch_get(["a", "e", "nope"])
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        values,
        vec![
            Some(Bytes::from_static(b"v-a")),
            Some(Bytes::from_static(b"v-e")),
            None
        ]
    );
    raw.delete_range("b".."f")
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let keys = raw
        .scan_keys::<[u8]>(.., 100)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        keys,
        ["a", "f", "g"].map(|k| Bytes::from_static(k.as_bytes()))
    );
    let ts1 = client
        .current_timestamp()
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let ts2 = client
        .current_timestamp()
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(ts2 > ts1);
}

/// The simulated store reports the transport load it is given and counts the BatchCommands
/// traffic it receives; with the load over the threshold, concurrent requests from one
/// connection arrive together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_reports_transport_load_and_counts_batches() {
    let server = SimServer::start(SimConfig {
        cluster: tikv_sim::cluster::ClusterConfig {
            store_count: 1,
            replica_count: 1,
            ..Default::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap_or_else(|err| panic!("{err}"));
    server.with(|sim| sim.set_transport_load(1, 5_000));
    assert_eq!(server.with(|sim| sim.transport_load(1)), 5_000);
    let config = Config::default()
        .with_connections_per_store(1)
        .with_max_batch_wait(std::time::Duration::from_secs(2))
        .with_batch_wait_size(3);
    let client =
        tikv_tokio::connect([server.pd_address()], config).unwrap_or_else(|err| panic!("{err}"));
    let raw = client.raw();
    raw.put("warm", "up")
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let before = server.with(|sim| sim.batch_traffic(1));
    assert_eq!((before.messages, before.entries), (1, 1));
    let puts = (0..3u64).map(|i| {
        let raw = raw.clone();
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(20 * i)).await;
            raw.put(format!("k{i}"), "v").await
        }
    });
    for result in futures_util::future::join_all(puts).await {
        result.unwrap_or_else(|err| panic!("{err}"));
    }
    let after = server.with(|sim| sim.batch_traffic(1));
    assert_eq!((after.messages, after.entries), (2, 4));
    server.with(|sim| sim.set_transport_load(1, 0));
    assert_eq!(server.with(|sim| sim.transport_load(1)), 0);
}
