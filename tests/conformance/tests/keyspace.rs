//! client-rust on an API V2 cluster started as `tikv-sim --api-version 2` starts it, with no
//! split of its own: the DEFAULT keyspace's regions end at the keyspace's bounds because PD's
//! keyspace manager splits there at bootstrap (`splitKeyspaceRegion`), and client-rust's
//! scans rely on it. Before the sim split there, `scan("k2"..="k3", 5)` went on past the
//! keyspace from an empty start key, got per-pair errors and aborted on stripping the prefix.

use std::time::Duration;

use tikv_client::{Config, Key, KvPair, RawClient, TransactionClient};
use tikv_sim::SimServer;
use tikv_sim::config::{Parsed, parse_args};

/// A served cluster configured exactly as `tikv-sim --api-version 2` configures it.
async fn api_v2_cluster() -> SimServer {
    let Ok(Parsed::Run(settings)) = parse_args(["--api-version".to_owned(), "2".to_owned()]) else {
        panic!("--api-version 2 must parse");
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let sim = settings.build(now_ms).expect("build the cluster");
    SimServer::serve(sim).await.expect("serve the cluster")
}

fn config() -> Config {
    Config::default()
        .with_timeout(Duration::from_secs(5))
        .with_default_keyspace()
}

fn keys(found: Vec<Key>) -> Vec<String> {
    found
        .into_iter()
        .map(|key| String::from_utf8_lossy(&Vec::from(key)).into_owned())
        .collect()
}

fn pair_keys(found: Vec<KvPair>) -> Vec<String> {
    keys(found.into_iter().map(KvPair::into_key).collect())
}

fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

const K: [&str; 5] = ["k1", "k2", "k3", "k4", "k5"];

fn k(name: &str) -> String {
    name.to_owned()
}

/// The repro and the other shapes client-rust's raw scans take: inclusive and
/// exclusive ends, open ends, limits above and below the result size, reverse, key-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_scans_stay_inside_the_default_keyspace() {
    let server = api_v2_cluster().await;
    let client = RawClient::new_with_config(vec![server.pd_address().to_owned()], config())
        .await
        .expect("raw client");
    client
        .batch_put(K.iter().map(|key| (k(key), format!("v-{key}"))))
        .await
        .expect("batch_put");

    // The case: an inclusive end and a limit above the result size.
    let found = client.scan(k("k2")..=k("k3"), 5).await.expect("scan");
    assert_eq!(
        found
            .iter()
            .map(|pair| (
                String::from_utf8_lossy(&Vec::from(pair.key().clone())).into_owned(),
                String::from_utf8_lossy(pair.value()).into_owned()
            ))
            .collect::<Vec<_>>(),
        vec![
            ("k2".to_owned(), "v-k2".to_owned()),
            ("k3".to_owned(), "v-k3".to_owned())
        ]
    );
    let exclusive = client.scan(k("k2")..k("k4"), 10).await.expect("scan");
    assert_eq!(pair_keys(exclusive), owned(&["k2", "k3"]));
    let open_end = client.scan(k("k3").., 10).await.expect("scan");
    assert_eq!(pair_keys(open_end), owned(&["k3", "k4", "k5"]));
    let open_start = client.scan(..=k("k2"), 10).await.expect("scan");
    assert_eq!(pair_keys(open_start), owned(&["k1", "k2"]));
    let everything = client.scan(.., 100).await.expect("scan");
    assert_eq!(pair_keys(everything), owned(&K));
    let limited = client.scan(.., 2).await.expect("scan");
    assert_eq!(pair_keys(limited), owned(&["k1", "k2"]));
    let key_only = client
        .scan_keys(k("k2")..=k("k3"), 5)
        .await
        .expect("scan_keys");
    assert_eq!(keys(key_only), owned(&["k2", "k3"]));
    let key_only_open = client.scan_keys(k("k4").., 5).await.expect("scan_keys");
    assert_eq!(keys(key_only_open), owned(&["k4", "k5"]));
    let reverse = client
        .scan_reverse(k("k2")..k("k5"), 10)
        .await
        .expect("scan_reverse");
    assert_eq!(pair_keys(reverse), owned(&["k4", "k3", "k2"]));
    let reverse_inclusive = client
        .scan_reverse(k("k2")..=k("k4"), 10)
        .await
        .expect("scan_reverse");
    assert_eq!(pair_keys(reverse_inclusive), owned(&["k4", "k3", "k2"]));
    let reverse_limited = client
        .scan_keys_reverse(k("k1")..=k("k5"), 2)
        .await
        .expect("scan_keys_reverse");
    assert_eq!(keys(reverse_limited), owned(&["k5", "k4"]));
    // Nothing in range: an empty answer, not an error.
    let none = client.scan(k("x")..=k("z"), 5).await.expect("scan");
    assert!(none.is_empty());
}

/// The same shapes through a transactional snapshot (TxnKV in the DEFAULT keyspace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_scans_stay_inside_the_default_keyspace() {
    let server = api_v2_cluster().await;
    let client = TransactionClient::new_with_config(vec![server.pd_address().to_owned()], config())
        .await
        .expect("txn client");
    let mut txn = client.begin_optimistic().await.expect("begin");
    for key in K {
        txn.put(k(key), format!("v-{key}")).await.expect("put");
    }
    txn.commit().await.expect("commit");

    let mut snapshot = client.snapshot(
        client.current_timestamp().await.expect("timestamp"),
        tikv_client::TransactionOptions::new_optimistic(),
    );
    let found: Vec<KvPair> = snapshot
        .scan(k("k2")..=k("k3"), 5)
        .await
        .expect("scan")
        .collect();
    assert_eq!(pair_keys(found), owned(&["k2", "k3"]));
    let open_end: Vec<KvPair> = snapshot.scan(k("k3").., 10).await.expect("scan").collect();
    assert_eq!(pair_keys(open_end), owned(&["k3", "k4", "k5"]));
    let open_start: Vec<KvPair> = snapshot.scan(..k("k3"), 10).await.expect("scan").collect();
    assert_eq!(pair_keys(open_start), owned(&["k1", "k2"]));
    let everything: Vec<KvPair> = snapshot.scan(.., 100).await.expect("scan").collect();
    assert_eq!(pair_keys(everything), owned(&K));
    let key_only: Vec<Key> = snapshot
        .scan_keys(k("k2")..=k("k4"), 2)
        .await
        .expect("scan_keys")
        .collect();
    assert_eq!(keys(key_only), owned(&["k2", "k3"]));
    let reverse: Vec<KvPair> = snapshot
        .scan_reverse(k("k2")..=k("k4"), 10)
        .await
        .expect("scan_reverse")
        .collect();
    assert_eq!(pair_keys(reverse), owned(&["k4", "k3", "k2"]));
    let reverse_keys: Vec<Key> = snapshot
        .scan_keys_reverse(.., 2)
        .await
        .expect("scan_keys_reverse")
        .collect();
    assert_eq!(keys(reverse_keys), owned(&["k5", "k4"]));
}
