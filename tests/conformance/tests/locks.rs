//! Lock resolution: transactions that leave locks behind (through client-rust's own
//! failpoints, as its failpoint tests do) and other transactions that must resolve them.
//!
//! Failpoints are process-wide, so every test here takes [`SERIAL`] first and turns its
//! failpoints off on the way out, even when it fails.

mod common;

use std::time::Duration;

use common::{Api, Fixture, Space};
use tikv_client::transaction::{HeartbeatOption, ResolveLocksOptions};
use tikv_client::{
    CheckLevel, KvPair, Timestamp, TimestampExt, TransactionClient, TransactionOptions,
};
use tokio::sync::Mutex;

/// Serializes the tests of this binary (failpoints are global).
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Region boundaries: five regions around keys `a`..`h`.
const SPLITS: &[&[u8]] = &[b"b", b"d", b"f", b"h"];

/// Turns a failpoint on and back off when dropped.
struct Failpoint(&'static str);

impl Failpoint {
    fn set(name: &'static str, action: &str) -> Self {
        fail::cfg(name, action).unwrap();
        Self(name)
    }
}

impl Drop for Failpoint {
    fn drop(&mut self) {
        fail::remove(self.0);
    }
}

fn pairs(kvs: impl IntoIterator<Item = KvPair>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<_> = kvs
        .into_iter()
        .map(|kv| (Vec::from(kv.key().clone()), kv.value().clone()))
        .collect();
    out.sort();
    out
}

fn kv(key: &str, value: &str) -> (Vec<u8>, Vec<u8>) {
    (key.as_bytes().to_vec(), value.as_bytes().to_vec())
}

/// Options for a transaction that is abandoned on purpose: no heartbeat, no drop panic.
fn abandoned(options: TransactionOptions) -> TransactionOptions {
    options
        .heartbeat_option(HeartbeatOption::NoHeartbeat)
        .drop_check(CheckLevel::Warn)
}

async fn lock_keys(client: &TransactionClient) -> Vec<Vec<u8>> {
    let safe_point = client.current_timestamp().await.unwrap();
    let mut keys: Vec<Vec<u8>> = client
        .scan_locks(&safe_point, .., 100)
        .await
        .unwrap()
        .into_iter()
        .map(|lock| lock.key)
        .collect();
    keys.sort();
    keys
}

async fn read_all(client: &TransactionClient, keys: &[&str]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut txn = client.begin_optimistic().await.unwrap();
    let got = txn
        .batch_get(keys.iter().map(|k| (*k).to_owned()))
        .await
        .unwrap();
    txn.rollback().await.unwrap();
    pairs(got)
}

/// Prewritten, never committed: once the primary's TTL (3 s) runs out, a reader rolls the
/// transaction back through CheckTxnStatus + ResolveLock, and a writer can take the keys.
async fn abandoned_prewrite_is_rolled_back(api: Api) {
    let _serial = SERIAL.lock().await;
    let fixture = Fixture::start(api, Space::Txn, SPLITS).await;
    let client = fixture.txn().await;
    let mut seed = client.begin_optimistic().await.unwrap();
    seed.put("c".to_owned(), "old".to_owned()).await.unwrap();
    seed.commit().await.unwrap();

    {
        let _prewrite_only = Failpoint::set("after-prewrite", "return");
        let mut txn = client
            .begin_with_options(abandoned(TransactionOptions::new_optimistic()))
            .await
            .unwrap();
        for key in ["a", "c", "g"] {
            txn.put(key.to_owned(), "abandoned".to_owned())
                .await
                .unwrap();
        }
        assert!(txn.commit().await.is_err());
    }
    assert_eq!(
        lock_keys(&client).await,
        vec![b"a".to_vec(), b"c".to_vec(), b"g".to_vec()]
    );

    // Past the lock TTL (3 s from the prewrite).
    tokio::time::sleep(Duration::from_millis(3300)).await;
    // A secondary first: the reader checks the primary, rolls it back, cleans the secondary.
    assert_eq!(read_all(&client, &["g"]).await, vec![]);
    assert_eq!(
        read_all(&client, &["a", "c", "g"]).await,
        vec![kv("c", "old")]
    );
    assert_eq!(lock_keys(&client).await, Vec::<Vec<u8>>::new());

    let mut writer = client.begin_optimistic().await.unwrap();
    writer.put("a".to_owned(), "new".to_owned()).await.unwrap();
    writer.commit().await.unwrap();
    assert_eq!(
        read_all(&client, &["a", "c"]).await,
        vec![kv("a", "new"), kv("c", "old")]
    );
}

/// An expired lock met by a writer: its prewrite resolves the lock and goes through.
async fn writer_resolves_expired_lock(api: Api) {
    let _serial = SERIAL.lock().await;
    let fixture = Fixture::start(api, Space::Txn, SPLITS).await;
    let client = fixture.txn().await;
    {
        let _prewrite_only = Failpoint::set("after-prewrite", "return");
        let mut txn = client
            .begin_with_options(abandoned(TransactionOptions::new_optimistic()))
            .await
            .unwrap();
        txn.put("e".to_owned(), "abandoned".to_owned())
            .await
            .unwrap();
        txn.put("i".to_owned(), "abandoned".to_owned())
            .await
            .unwrap();
        assert!(txn.commit().await.is_err());
    }
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let mut writer = client.begin_optimistic().await.unwrap();
    writer
        .put("i".to_owned(), "writer".to_owned())
        .await
        .unwrap();
    writer.commit().await.unwrap();
    assert_eq!(
        read_all(&client, &["e", "i"]).await,
        vec![kv("i", "writer")]
    );
    assert_eq!(lock_keys(&client).await, Vec::<Vec<u8>>::new());
}

/// Primary committed, secondaries left locked: a reader finds the primary's commit record
/// through CheckTxnStatus and commits the secondaries with ResolveLock; no TTL wait needed.
async fn committed_primary_resolves_secondaries(api: Api) {
    let _serial = SERIAL.lock().await;
    let fixture = Fixture::start(api, Space::Txn, SPLITS).await;
    let client = fixture.txn().await;
    let commit_ts = {
        let _no_secondaries = Failpoint::set("before-commit-secondary", "return(0)");
        let mut txn = client
            .begin_with_options(abandoned(TransactionOptions::new_optimistic()))
            .await
            .unwrap();
        for key in ["a", "c", "e", "g"] {
            txn.put(key.to_owned(), format!("v-{key}")).await.unwrap();
        }
        let commit_ts = txn.commit().await.unwrap().expect("commit ts");
        // The secondary commit runs in a spawned task that fails at once; let it finish.
        tokio::time::sleep(Duration::from_millis(100)).await;
        commit_ts
    };
    let locked = lock_keys(&client).await;
    assert_eq!(
        locked.len(),
        3,
        "secondaries should stay locked: {locked:?}"
    );

    assert_eq!(
        read_all(&client, &["a", "c", "e", "g"]).await,
        vec![
            kv("a", "v-a"),
            kv("c", "v-c"),
            kv("e", "v-e"),
            kv("g", "v-g")
        ]
    );
    assert_eq!(lock_keys(&client).await, Vec::<Vec<u8>>::new());
    // Resolved at the primary's commit ts, not later.
    let before = Timestamp::from_version(commit_ts.version() - 1);
    let mut before_commit = client.snapshot(before, TransactionOptions::new_optimistic());
    let got = before_commit
        .batch_get(["a", "c", "e", "g"].map(str::to_owned))
        .await
        .unwrap();
    assert_eq!(pairs(got), vec![]);
}

/// Async commit with every commit lost: all locks stay, the transaction counts as committed
/// (all keys prewritten). client-rust's GC lock cleanup resolves it with CheckTxnStatus +
/// CheckSecondaryLocks and commits at the max min_commit_ts.
async fn async_commit_locks_cleaned_up(api: Api) {
    let _serial = SERIAL.lock().await;
    let fixture = Fixture::start(api, Space::Txn, SPLITS).await;
    let client = fixture.txn().await;
    let commit_ts = {
        let _no_commit = Failpoint::set("before-commit-secondary", "return(0)");
        let mut txn = client
            .begin_with_options(abandoned(
                TransactionOptions::new_optimistic().use_async_commit(),
            ))
            .await
            .unwrap();
        for key in ["a", "c", "e", "g"] {
            txn.put(key.to_owned(), format!("v-{key}")).await.unwrap();
        }
        let commit_ts = txn.commit().await.unwrap().expect("commit ts");
        tokio::time::sleep(Duration::from_millis(100)).await;
        commit_ts
    };
    assert_eq!(lock_keys(&client).await.len(), 4);

    let safe_point = client.current_timestamp().await.unwrap();
    let options = ResolveLocksOptions {
        async_commit_only: true,
        ..ResolveLocksOptions::default()
    };
    client
        .cleanup_locks(.., &safe_point, options)
        .await
        .unwrap();
    assert_eq!(lock_keys(&client).await, Vec::<Vec<u8>>::new());
    let mut at_commit = client.snapshot(commit_ts, TransactionOptions::new_optimistic());
    let got = at_commit
        .batch_get(["a", "c", "e", "g"].map(str::to_owned))
        .await
        .unwrap();
    assert_eq!(
        pairs(got),
        vec![
            kv("a", "v-a"),
            kv("c", "v-c"),
            kv("e", "v-e"),
            kv("g", "v-g")
        ]
    );
}

/// Prewritten only (2PC), TTL not yet expired: GC lock cleanup rolls the transaction back.
async fn two_pc_locks_cleaned_up(api: Api) {
    let _serial = SERIAL.lock().await;
    let fixture = Fixture::start(api, Space::Txn, SPLITS).await;
    let client = fixture.txn().await;
    {
        let _prewrite_only = Failpoint::set("after-prewrite", "return");
        let mut txn = client
            .begin_with_options(abandoned(TransactionOptions::new_optimistic()))
            .await
            .unwrap();
        for key in ["a", "e", "i"] {
            txn.put(key.to_owned(), "abandoned".to_owned())
                .await
                .unwrap();
        }
        assert!(txn.commit().await.is_err());
    }
    let safe_point = client.current_timestamp().await.unwrap();
    // Async-commit-only cleanup leaves 2PC locks alone.
    let options = ResolveLocksOptions {
        async_commit_only: true,
        ..ResolveLocksOptions::default()
    };
    client
        .cleanup_locks(.., &safe_point, options)
        .await
        .unwrap();
    assert_eq!(lock_keys(&client).await.len(), 3);
    // A full cleanup rolls them back at once: GC checks the primary with current_ts = MAX,
    // so the lock counts as expired whatever its TTL.
    client
        .cleanup_locks(.., &safe_point, ResolveLocksOptions::default())
        .await
        .unwrap();
    assert_eq!(lock_keys(&client).await, Vec::<Vec<u8>>::new());
    assert_eq!(read_all(&client, &["a", "e", "i"]).await, vec![]);
}

macro_rules! per_api {
    ($body:ident: $($name:ident => $api:expr),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $body($api).await;
            }
        )+
    };
}

per_api!(abandoned_prewrite_is_rolled_back:
    v1_abandoned_prewrite_is_rolled_back => Api::V1,
    v2_abandoned_prewrite_is_rolled_back => Api::V2);
per_api!(writer_resolves_expired_lock:
    v1_writer_resolves_expired_lock => Api::V1,
    v2_writer_resolves_expired_lock => Api::V2);
per_api!(committed_primary_resolves_secondaries:
    v1_committed_primary_resolves_secondaries => Api::V1,
    v2_committed_primary_resolves_secondaries => Api::V2);
per_api!(async_commit_locks_cleaned_up:
    v1_async_commit_locks_cleaned_up => Api::V1,
    v2_async_commit_locks_cleaned_up => Api::V2);
per_api!(two_pc_locks_cleaned_up:
    v1_two_pc_locks_cleaned_up => Api::V1,
    v2_two_pc_locks_cleaned_up => Api::V2);
