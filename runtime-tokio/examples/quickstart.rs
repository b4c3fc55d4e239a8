//! Quickstart: raw key-value operations against a TiKV cluster.
//!
//! With `PD_ENDPOINTS` set (`127.0.0.1:2379`, comma-separated) this talks to that cluster;
//! without it, it first starts an embedded simulated cluster (PD and three stores on loopback
//! ports, split into a few regions), so it runs anywhere with nothing else installed.
//!
//! Run with `cargo run -p tikv-tokio --example quickstart`.

mod common;

use std::time::Duration;

use tikv_core::{Config, KeyTtl};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The embedded cluster (when PD_ENDPOINTS is unset) lives until the end of main.
    let (endpoints, _embedded) = common::cluster(&["b", "m", "t"]).await?;

    let client = tikv_tokio::connect(endpoints, Config::default())?;
    let raw = client.raw();

    raw.put("apple", "red").await?;
    raw.batch_put([("banana", "yellow"), ("kiwi", "green"), ("plum", "purple")])
        .await?;
    println!("get apple -> {:?}", raw.get("apple").await?);
    println!(
        "batch_get [apple, kiwi, mango] -> {:?}",
        raw.batch_get(["apple", "kiwi", "mango"]).await?
    );
    for pair in raw.scan("a".."z", 10).await? {
        println!(
            "scan: {} = {}",
            String::from_utf8_lossy(&pair.key),
            String::from_utf8_lossy(&pair.value)
        );
    }
    let atomic = raw.with_atomic_for_cas(true);
    let outcome = atomic
        .compare_and_swap("apple", Some("red".into()), "green")
        .await?;
    println!(
        "compare_and_swap apple red->green: previous {:?}, swapped {}",
        outcome.previous, outcome.swapped
    );
    raw.delete("banana").await?;
    println!("after delete, get banana -> {:?}", raw.get("banana").await?);
    // A TTL needs a cluster with TTL support (API V1TTL or V2); the default V1 refuses it.
    match raw
        .put_with_ttl("session", "token", Duration::from_secs(60))
        .await
    {
        Ok(()) => {
            if let Some(KeyTtl::Remaining(left)) = raw.get_key_ttl("session").await? {
                println!("session expires in {left:?}");
            }
        }
        Err(err) => println!("put_with_ttl refused: {err}"),
    }
    let checksum = raw.checksum::<[u8]>(..).await?;
    println!(
        "checksum: crc64_xor={:#x} kvs={} bytes={}",
        checksum.crc64_xor, checksum.total_kvs, checksum.total_bytes
    );
    println!("timestamp from TSO: {}", client.current_timestamp().await?);
    Ok(())
}
