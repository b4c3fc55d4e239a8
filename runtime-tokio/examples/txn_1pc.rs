//! One-phase commit: a transaction whose writes fit one request to one region commits in a
//! single round trip (the twin of client-go's `examples/txnkv/1pc_txn`).
//!
//! Uses `PD_ENDPOINTS` when set, else an embedded simulated cluster.
//! Run with `cargo run -p tikv-tokio --example txn_1pc`.

mod common;

use tikv_core::{Config, TransactionOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (endpoints, _embedded) = common::cluster(&["m"]).await?;
    let client = tikv_tokio::connect(endpoints, Config::default())?;

    let one_pc = TransactionOptions::new().with_try_one_pc(true);

    // Both keys are in the first region: one request commits them.
    let mut txn = client.begin_with(one_pc.clone()).await?;
    txn.put("apple", "1")?;
    txn.put("banana", "2")?;
    txn.commit().await?;
    println!("same region: {:?}", txn.commit_outcome());

    // Keys in two regions need two requests: the commit falls back to two phases.
    let mut txn = client.begin_with(one_pc).await?;
    txn.put("apple", "3")?;
    txn.put("zebra", "4")?;
    txn.commit().await?;
    println!("two regions: {:?}", txn.commit_outcome());
    Ok(())
}
