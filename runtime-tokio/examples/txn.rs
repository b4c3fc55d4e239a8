//! Transactions: buffered writes committed atomically, reads from a consistent snapshot, and
//! what a write conflict looks like (the twin of client-go's `examples/txnkv`).
//!
//! Uses `PD_ENDPOINTS` when set, else an embedded simulated cluster.
//! Run with `cargo run -p tikv-tokio --example txn`.

mod common;

use tikv_core::error::KeyError;
use tikv_core::{Config, Error};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (endpoints, _embedded) = common::cluster(&["k3"]).await?;
    let client = tikv_tokio::connect(endpoints, Config::default())?;

    // Writes stay in the transaction until commit; its own reads see them.
    let mut txn = client.begin().await?;
    for i in 1..=5 {
        txn.put(format!("k{i}"), format!("v{i}"))?;
    }
    println!("inside the transaction, k2 = {:?}", txn.get("k2").await?);
    let commit_ts = txn.commit().await?;
    println!("committed at {commit_ts:?} (keys in two regions: two-phase commit)");

    // A snapshot at a timestamp sees exactly what committed before it.
    let ts = client.current_timestamp().await?;
    let snapshot = client.snapshot(ts);
    for pair in snapshot.scan("k1"..="k5", 10).await? {
        println!(
            "snapshot: {} = {}",
            String::from_utf8_lossy(&pair.key),
            String::from_utf8_lossy(&pair.value)
        );
    }

    // Two transactions write one key: the second to commit fails with a write conflict
    // and can be retried from the start.
    let mut first = client.begin().await?;
    let mut second = client.begin().await?;
    first.put("k1", "first")?;
    second.put("k1", "second")?;
    first.commit().await?;
    match second.commit().await {
        Err(Error::Key(err)) if matches!(*err, KeyError::WriteConflict { .. }) => {
            println!("second commit: {err}");
            let mut retry = client.begin().await?;
            retry.put("k1", "second, retried")?;
            retry.commit().await?;
        }
        other => println!("second commit: unexpected {other:?}"),
    }
    let reader = client.begin().await?;
    println!("k1 = {:?}", reader.get("k1").await?);

    // `insert` requires the key not to exist.
    let mut txn = client.begin().await?;
    txn.insert("k1", "again")?;
    match txn.commit().await {
        Err(err) => println!("insert of an existing key: {err}"),
        Ok(ts) => println!("insert committed at {ts:?}?"),
    }
    Ok(())
}
