//! `integration_tests/isolation_test.go` (`testIsolationSuite`): snapshot isolation under
//! concurrent writers and readers. Go runs goroutines; here the "threads" are futures
//! driven together on the test's task, interleaving at every request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use tikv_core::Timestamp;

use super::{Env, TxnCluster, b, ok, start};

/// A committed write: when it began and when it committed.
#[derive(Clone, Copy, Debug)]
struct WriteRecord {
    start_ts: Timestamp,
    commit_ts: Timestamp,
}

/// Writes `key` = `value`, beginning again after every failed commit (client-go's
/// `SetWithRetry`).
async fn set_with_retry<E: Env>(tc: &TxnCluster<'_, E>, key: &str, value: &str) -> WriteRecord {
    loop {
        let mut txn = tc.begin().await;
        ok("put", txn.put(b(key), b(value)));
        if let Ok(Some(commit_ts)) = txn.commit().await {
            return WriteRecord {
                start_ts: txn.start_ts(),
                commit_ts,
            };
        }
    }
}

/// `TestWriteWriteConflict`: ten writers commit fifty times each to one key; no two
/// committed transactions overlap (each began after the one before it committed).
pub async fn test_isolation_write_write_conflict<E: Env>(env: &E) {
    let tc = start(env).await;
    let writers = (0..10).map(|_| async {
        let mut writes = Vec::with_capacity(50);
        for _ in 0..50 {
            writes.push(set_with_retry(&tc, "k", "v").await);
        }
        writes
    });
    let mut writes: Vec<WriteRecord> = join_all(writers).await.into_iter().flatten().collect();
    writes.sort_by_key(|w| w.start_ts);
    for pair in writes.windows(2) {
        assert!(pair[0].commit_ts < pair[1].start_ts, "{pair:?}");
    }
}

/// `TestReadWriteConflict`: while one writer commits ten values in turn, ten readers read
/// the key; every read sees the value of the last write committed before it began.
pub async fn test_isolation_read_write_conflict<E: Env>(env: &E) {
    let tc = start(env).await;
    set_with_retry(&tc, "k", "0").await;
    let done = AtomicBool::new(false);
    let writer = async {
        let mut writes = Vec::with_capacity(10);
        for i in 1..=10 {
            writes.push(set_with_retry(&tc, "k", &i.to_string()).await);
            tc.env.sleep(Duration::from_micros(10)).await;
        }
        done.store(true, Ordering::SeqCst);
        writes
    };
    let readers = (0..10).map(|_| async {
        let mut reads: Vec<(Timestamp, Option<Bytes>)> = Vec::new();
        while !done.load(Ordering::SeqCst) {
            let txn = tc.begin().await;
            let value = ok("get", txn.get(b("k")).await);
            reads.push((txn.start_ts(), value));
        }
        reads
    });
    let (writes, reads) = futures_util::future::join(writer, join_all(readers)).await;
    let mut reads: Vec<(Timestamp, Option<Bytes>)> = reads.into_iter().flatten().collect();
    reads.sort_by_key(|(start_ts, _)| *start_ts);
    let mut j = 0;
    for (i, write) in writes.iter().enumerate() {
        while j < reads.len() && reads[j].0 < write.commit_ts {
            assert_eq!(reads[j].1, Some(b(i.to_string())), "read at {}", reads[j].0);
            j += 1;
        }
    }
    for (start_ts, value) in &reads[j..] {
        assert_eq!(
            *value,
            Some(b(writes.len().to_string())),
            "read at {start_ts}"
        );
    }
}
