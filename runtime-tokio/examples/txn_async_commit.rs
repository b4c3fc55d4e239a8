//! Async commit: the commit is decided once every prewrite succeeded, so it answers after
//! one round trip of prewrites; the keys are committed in the background (the twin of
//! client-go's `examples/txnkv/async_commit`).
//!
//! Uses `PD_ENDPOINTS` when set, else an embedded simulated cluster.
//! Run with `cargo run -p tikv-tokio --example txn_async_commit`.

mod common;

use tikv_core::{Config, TransactionOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (endpoints, _embedded) = common::cluster(&["m"]).await?;
    let client = tikv_tokio::connect(endpoints, Config::default())?;

    let mut txn = client
        .begin_with(TransactionOptions::new().with_async_commit(true))
        .await?;
    txn.put("apple", "1")?;
    txn.put("zebra", "2")?;
    let commit_ts = txn.commit().await?;
    println!("committed at {commit_ts:?}: {:?}", txn.commit_outcome());

    // A reader right after sees both keys: a lock still waiting for its background commit
    // is resolved through the primary's record.
    let reader = client.begin().await?;
    println!(
        "apple = {:?}, zebra = {:?}",
        reader.get("apple").await?,
        reader.get("zebra").await?
    );
    Ok(())
}
