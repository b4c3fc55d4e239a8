//! Smoke test: optimistic transactions against the simulated cluster over loopback.

use bytes::Bytes;
use tikv_core::error::KeyError;
use tikv_core::{CommitMode, Config, Error, TransactionOptions};
use tikv_sim::{SimConfig, SimServer};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_read_conflict_async_and_one_pc() {
    let server = SimServer::start(SimConfig::default())
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    server.with(|sim| {
        for key in ["b", "d"] {
            sim.cluster
                .split_at(key.as_bytes())
                .unwrap_or_else(|err| panic!("{err}"));
        }
    });
    let client = tikv_tokio::connect([server.pd_address()], Config::default())
        .unwrap_or_else(|err| panic!("{err}"));

    // Two-phase commit across three regions.
    let mut txn = client.begin().await.unwrap_or_else(|err| panic!("{err}"));
    for key in ["a", "c", "e"] {
        txn.put(key, format!("v-{key}"))
            .unwrap_or_else(|err| panic!("{err}"));
    }
    assert_eq!(
        txn.get("c").await.unwrap_or_else(|err| panic!("{err}")),
        Some(b("v-c"))
    );
    let commit_ts = txn
        .commit()
        .await
        .unwrap_or_else(|err| panic!("commit: {err}"))
        .unwrap_or_else(|| panic!("a write commits"));
    assert!(commit_ts > txn.start_ts());
    assert_eq!(
        txn.commit_outcome().map(|o| o.mode),
        Some(CommitMode::TwoPhase)
    );

    let reader = client.begin().await.unwrap_or_else(|err| panic!("{err}"));
    let pairs = reader
        .scan("a"..="z", 10)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let keys: Vec<Bytes> = pairs.iter().map(|p| p.key.clone()).collect();
    assert_eq!(keys, vec![b("a"), b("c"), b("e")]);

    // Write conflict: two transactions write "a"; the later commit fails.
    let mut first = client.begin().await.unwrap_or_else(|err| panic!("{err}"));
    let mut second = client.begin().await.unwrap_or_else(|err| panic!("{err}"));
    first.put("a", "1").unwrap_or_else(|err| panic!("{err}"));
    second.put("a", "2").unwrap_or_else(|err| panic!("{err}"));
    first.commit().await.unwrap_or_else(|err| panic!("{err}"));
    let err = second
        .commit()
        .await
        .err()
        .unwrap_or_else(|| panic!("conflict expected"));
    assert!(
        matches!(err.key_error(), Some(KeyError::WriteConflict { .. })),
        "{err}"
    );
    assert!(matches!(
        second.get("a").await,
        Err(Error::TxnFinished { .. })
    ));

    // Async commit and 1PC.
    let mut txn = client
        .begin_with(TransactionOptions::new().with_async_commit(true))
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    txn.put("a", "async").unwrap_or_else(|err| panic!("{err}"));
    txn.put("e", "async").unwrap_or_else(|err| panic!("{err}"));
    txn.commit()
        .await
        .unwrap_or_else(|err| panic!("async: {err}"));
    assert_eq!(
        txn.commit_outcome().map(|o| o.mode),
        Some(CommitMode::AsyncCommit)
    );

    let mut txn = client
        .begin_with(TransactionOptions::new().with_try_one_pc(true))
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    txn.put("a", "1pc").unwrap_or_else(|err| panic!("{err}"));
    txn.commit()
        .await
        .unwrap_or_else(|err| panic!("1pc: {err}"));
    assert_eq!(
        txn.commit_outcome().map(|o| o.mode),
        Some(CommitMode::OnePc)
    );

    let reader = client.begin().await.unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        reader.get("a").await.unwrap_or_else(|err| panic!("{err}")),
        Some(b("1pc"))
    );
    assert_eq!(
        reader.get("e").await.unwrap_or_else(|err| panic!("{err}")),
        Some(b("async"))
    );

    // Insert of an existing key fails at prewrite.
    let mut txn = client.begin().await.unwrap_or_else(|err| panic!("{err}"));
    txn.insert("a", "dup").unwrap_or_else(|err| panic!("{err}"));
    let err = txn
        .commit()
        .await
        .err()
        .unwrap_or_else(|| panic!("exists expected"));
    assert!(
        matches!(err.key_error(), Some(KeyError::AlreadyExists { .. })),
        "{err}"
    );
}
