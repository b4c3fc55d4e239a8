//! TxnKV through client-rust against the simulated cluster: optimistic and pessimistic 2PC,
//! conflicts, lock waits, async commit and 1PC, on API v1 and on API v2 (`DEFAULT`
//! keyspace), always with several regions.

mod common;

use std::time::{Duration, Instant};

use common::{Api, Fixture, Space};
use tikv_client::transaction::HeartbeatOption;
use tikv_client::{
    Backoff, CheckLevel, Error, KvPair, ProtoKeyError, RetryOptions, TimestampExt,
    TransactionClient, TransactionOptions,
};

/// Region boundaries every txn test starts with: five regions around keys `a`..`h`.
const SPLITS: &[&[u8]] = &[b"b", b"d", b"f", b"h"];

async fn fixture(api: Api) -> Fixture {
    let fixture = Fixture::start(api, Space::Txn, SPLITS).await;
    assert!(fixture.region_count() >= 5);
    fixture
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

/// Finds a key error anywhere inside client-rust's nested error values.
fn key_error(err: &Error) -> Option<&ProtoKeyError> {
    match err {
        Error::KeyError(key_error) => Some(key_error),
        Error::MultipleKeyErrors(errors) | Error::ExtractedErrors(errors) => {
            errors.iter().find_map(key_error)
        }
        Error::PessimisticLockError { inner, .. } => key_error(inner),
        Error::UndeterminedError(inner) => key_error(inner),
        _ => None,
    }
}

/// Reads `keys` in a fresh optimistic transaction (rolled back afterwards).
async fn read_all(client: &TransactionClient, keys: &[&str]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut txn = client.begin_optimistic().await.unwrap();
    let got = txn
        .batch_get(keys.iter().map(|k| (*k).to_owned()))
        .await
        .unwrap();
    let got = pairs(got);
    txn.rollback().await.unwrap();
    got
}

async fn optimistic_commit(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.txn().await;
    let before = client.current_timestamp().await.unwrap();

    // One key in every region.
    let mut txn = client.begin_optimistic().await.unwrap();
    for key in ["a", "c", "e", "g", "i"] {
        txn.put(key.to_owned(), format!("v-{key}")).await.unwrap();
    }
    // Reads see the transaction's own writes before commit.
    assert_eq!(
        txn.get("c".to_owned()).await.unwrap(),
        Some(b"v-c".to_vec())
    );
    let commit_ts = txn.commit().await.unwrap().expect("commit ts");
    assert!(commit_ts.version() > txn.start_timestamp().version());

    let expected: Vec<_> = ["a", "c", "e", "g", "i"]
        .iter()
        .map(|k| kv(k, &format!("v-{k}")))
        .collect();
    assert_eq!(
        read_all(&client, &["a", "c", "e", "g", "i", "x"]).await,
        expected
    );

    // A scan over every region, bounded inside the last one, and a limited scan.
    let mut reader = client.begin_optimistic().await.unwrap();
    let scanned = pairs(
        reader
            .scan("a".to_owned().."z".to_owned(), 100)
            .await
            .unwrap(),
    );
    assert_eq!(scanned, expected);
    let limited: Vec<Vec<u8>> = reader
        .scan_keys("b".to_owned().., 2)
        .await
        .unwrap()
        .map(Vec::from)
        .collect();
    assert_eq!(limited, vec![b"c".to_vec(), b"e".to_vec()]);
    assert!(reader.key_exists("g".to_owned()).await.unwrap());
    assert!(!reader.key_exists("h".to_owned()).await.unwrap());
    reader.rollback().await.unwrap();

    // A snapshot from before the commit sees nothing.
    let mut old = client.snapshot(before, TransactionOptions::new_optimistic());
    assert_eq!(old.get("a".to_owned()).await.unwrap(), None);

    // Delete, then check both the new state and a snapshot at the first commit.
    let mut deleter = client.begin_optimistic().await.unwrap();
    deleter.delete("c".to_owned()).await.unwrap();
    deleter
        .put("e".to_owned(), "v-e2".to_owned())
        .await
        .unwrap();
    deleter.commit().await.unwrap();
    assert_eq!(
        read_all(&client, &["a", "c", "e"]).await,
        vec![kv("a", "v-a"), kv("e", "v-e2")]
    );
    let mut at_first = client.snapshot(commit_ts, TransactionOptions::new_optimistic());
    assert_eq!(
        at_first.get("c".to_owned()).await.unwrap(),
        Some(b"v-c".to_vec())
    );
    assert_eq!(
        at_first.get("e".to_owned()).await.unwrap(),
        Some(b"v-e".to_vec())
    );
}

async fn optimistic_write_conflict(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.txn().await;
    let mut first = client.begin_optimistic().await.unwrap();
    let mut second = client.begin_optimistic().await.unwrap();
    first.put("c".to_owned(), "first".to_owned()).await.unwrap();
    first.put("g".to_owned(), "first".to_owned()).await.unwrap();
    second
        .put("g".to_owned(), "second".to_owned())
        .await
        .unwrap();
    second
        .put("a".to_owned(), "second".to_owned())
        .await
        .unwrap();
    first.commit().await.unwrap();

    let err = second.commit().await.unwrap_err();
    let conflict = key_error(&err)
        .and_then(|key_error| key_error.conflict.as_ref())
        .unwrap_or_else(|| panic!("expected a write conflict, got {err:?}"));
    assert_eq!(conflict.start_ts, second.start_timestamp().version());
    assert_eq!(conflict.conflict_ts, first.start_timestamp().version());
    assert!(conflict.conflict_commit_ts > conflict.conflict_ts);
    second.rollback().await.unwrap();

    // Nothing of the loser is visible, and its other key is unlocked.
    assert_eq!(
        read_all(&client, &["a", "c", "g"]).await,
        vec![kv("c", "first"), kv("g", "first")]
    );
    let safe_point = client.current_timestamp().await.unwrap();
    let locks = client.scan_locks(&safe_point, .., 100).await.unwrap();
    assert!(locks.is_empty(), "{locks:?}");
}

async fn insert_existing_key(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.txn().await;
    let mut txn = client.begin_optimistic().await.unwrap();
    txn.put("e".to_owned(), "v".to_owned()).await.unwrap();
    txn.commit().await.unwrap();

    // Pessimistic insert asserts NotExist at lock time.
    let mut txn = client.begin_pessimistic().await.unwrap();
    let err = txn
        .insert("e".to_owned(), "w".to_owned())
        .await
        .unwrap_err();
    let exists = key_error(&err).and_then(|key_error| key_error.already_exist.as_ref());
    assert!(exists.is_some(), "expected AlreadyExist, got {err:?}");
    txn.rollback().await.unwrap();

    // Optimistic insert is checked at prewrite.
    let mut txn = client.begin_optimistic().await.unwrap();
    txn.insert("e".to_owned(), "w".to_owned()).await.unwrap();
    let err = txn.commit().await.unwrap_err();
    let exists = key_error(&err).and_then(|key_error| key_error.already_exist.as_ref());
    assert!(exists.is_some(), "expected AlreadyExist, got {err:?}");
    txn.rollback().await.unwrap();
    assert_eq!(read_all(&client, &["e"]).await, vec![kv("e", "v")]);
}

async fn pessimistic_commit(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.txn().await;
    let mut seed = client.begin_optimistic().await.unwrap();
    seed.put("c".to_owned(), "old".to_owned()).await.unwrap();
    seed.commit().await.unwrap();

    let mut txn = client.begin_pessimistic().await.unwrap();
    assert_eq!(
        txn.get_for_update("c".to_owned()).await.unwrap(),
        Some(b"old".to_vec())
    );
    txn.put("c".to_owned(), "new".to_owned()).await.unwrap();
    txn.put("g".to_owned(), "new".to_owned()).await.unwrap();
    txn.lock_keys(vec!["a".to_owned()]).await.unwrap();
    txn.delete("e".to_owned()).await.unwrap();
    let ttl = txn.send_heart_beat().await.unwrap();
    assert!(ttl > 0);

    // The locks are held: a second pessimistic transaction with no lock retries gives up.
    let mut other = client
        .begin_with_options(
            TransactionOptions::new_pessimistic().retry_options(RetryOptions {
                region_backoff: tikv_client::backoff::DEFAULT_REGION_BACKOFF,
                lock_backoff: Backoff::no_backoff(),
            }),
        )
        .await
        .unwrap();
    assert!(other.lock_keys(vec!["a".to_owned()]).await.is_err());
    other.rollback().await.unwrap();

    txn.commit().await.unwrap().expect("commit ts");
    assert_eq!(
        read_all(&client, &["a", "c", "e", "g"]).await,
        vec![kv("c", "new"), kv("g", "new")]
    );
    let safe_point = client.current_timestamp().await.unwrap();
    let locks = client.scan_locks(&safe_point, .., 100).await.unwrap();
    assert!(locks.is_empty(), "{locks:?}");
}

/// Pessimistic 2PC with every key in one region ([d, f)), so one prewrite request.
async fn pessimistic_commit_one_region(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.txn().await;
    let mut seed = client.begin_optimistic().await.unwrap();
    seed.put("d1".to_owned(), "old".to_owned()).await.unwrap();
    seed.commit().await.unwrap();

    let mut txn = client.begin_pessimistic().await.unwrap();
    assert_eq!(
        txn.get_for_update("d1".to_owned()).await.unwrap(),
        Some(b"old".to_vec())
    );
    txn.put("d1".to_owned(), "new".to_owned()).await.unwrap();
    txn.put("d2".to_owned(), "new".to_owned()).await.unwrap();
    txn.delete("d3".to_owned()).await.unwrap();
    txn.lock_keys(vec!["e".to_owned()]).await.unwrap();
    // TxnHeartBeat on the primary answers the lock's TTL.
    let ttl = txn.send_heart_beat().await.unwrap();
    assert!(ttl > 0);
    let commit_ts = txn.commit().await.unwrap().expect("commit ts");
    assert!(commit_ts.version() > txn.start_timestamp().version());
    assert_eq!(
        read_all(&client, &["d1", "d2", "d3", "e"]).await,
        vec![kv("d1", "new"), kv("d2", "new")]
    );
    let safe_point = client.current_timestamp().await.unwrap();
    let locks = client.scan_locks(&safe_point, .., 100).await.unwrap();
    assert!(locks.is_empty(), "{locks:?}");
}

async fn pessimistic_rollback(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.txn().await;
    let mut txn = client.begin_pessimistic().await.unwrap();
    txn.put("c".to_owned(), "x".to_owned()).await.unwrap();
    txn.put("g".to_owned(), "x".to_owned()).await.unwrap();
    txn.rollback().await.unwrap();
    let safe_point = client.current_timestamp().await.unwrap();
    let locks = client.scan_locks(&safe_point, .., 100).await.unwrap();
    assert!(locks.is_empty(), "{locks:?}");

    // The keys are free again.
    let mut next = client.begin_pessimistic().await.unwrap();
    next.put("c".to_owned(), "y".to_owned()).await.unwrap();
    next.commit().await.unwrap();
    assert_eq!(read_all(&client, &["c", "g"]).await, vec![kv("c", "y")]);
}

/// Options for a pessimistic transaction that gives up at the first lock it cannot resolve.
fn impatient_pessimistic() -> TransactionOptions {
    TransactionOptions::new_pessimistic().retry_options(RetryOptions {
        region_backoff: tikv_client::backoff::DEFAULT_REGION_BACKOFF,
        lock_backoff: Backoff::no_backoff(),
    })
}

async fn pessimistic_lock_wait_timeout(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.txn().await;
    let mut holder = client.begin_pessimistic().await.unwrap();
    holder
        .put("e".to_owned(), "holder".to_owned())
        .await
        .unwrap();

    // client-rust sends wait_timeout = 0, so TiKV waits its default 1 s, then answers
    // KeyIsLocked; the lock is alive, so with no lock backoff the call fails.
    let mut waiter = client
        .begin_with_options(impatient_pessimistic())
        .await
        .unwrap();
    let started = Instant::now();
    let err = waiter.lock_keys(vec!["e".to_owned()]).await.unwrap_err();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "no lock wait: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(4),
        "waited too long: {waited:?}"
    );
    let locked = match &err {
        Error::PessimisticLockError { inner, .. } => match inner.as_ref() {
            Error::ResolveLockError(locks) => locks.first().cloned(),
            other => key_error(other).and_then(|e| e.locked.clone()),
        },
        other => panic!("expected a pessimistic lock error, got {other:?}"),
    };
    let locked = locked.unwrap_or_else(|| panic!("expected the blocking lock, got {err:?}"));
    // TiKV reports the key as stored (with the API v2 prefix); client-rust does not strip
    // the prefix from the locks inside this error.
    let expected_key = match api {
        Api::V2 => b"x\0\0\0e".to_vec(),
        Api::V1 | Api::V1Ttl => b"e".to_vec(),
    };
    assert_eq!(locked.key, expected_key);
    assert_eq!(locked.lock_version, holder.start_timestamp().version());
    waiter.rollback().await.unwrap();

    holder.commit().await.unwrap();
    assert_eq!(read_all(&client, &["e"]).await, vec![kv("e", "holder")]);
}

async fn pessimistic_lock_wait_wakes_up(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.txn().await;
    let mut holder = client.begin_pessimistic().await.unwrap();
    holder
        .put("e".to_owned(), "holder".to_owned())
        .await
        .unwrap();

    let waiter_client = fixture.txn().await;
    let waiter = tokio::spawn(async move {
        let mut waiter = waiter_client
            .begin_with_options(impatient_pessimistic())
            .await
            .unwrap();
        let started = Instant::now();
        let result = waiter.lock_keys(vec!["e".to_owned()]).await;
        let waited = started.elapsed();
        waiter.rollback().await.unwrap();
        (result, waited, waiter.start_timestamp().version())
    });
    // Let the waiter park, then release the lock by committing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let commit_ts = holder.commit().await.unwrap().expect("commit ts");
    let (result, waited, waiter_start_ts) = waiter.await.unwrap();

    // Legacy wake-up: the waiter is answered at once (well before the 1 s wait timeout) with
    // WriteConflict (reason PessimisticRetry), since the key changed after its for_update_ts.
    assert!(waited < Duration::from_millis(900), "not woken: {waited:?}");
    let err = result.unwrap_err();
    let conflict = key_error(&err)
        .and_then(|key_error| key_error.conflict.as_ref())
        .unwrap_or_else(|| panic!("expected a write conflict, got {err:?}"));
    assert_eq!(conflict.start_ts, waiter_start_ts);
    assert_eq!(conflict.conflict_ts, holder.start_timestamp().version());
    assert_eq!(conflict.conflict_commit_ts, commit_ts.version());

    // A new pessimistic transaction locks the key and reads the committed value.
    let mut next = client.begin_pessimistic().await.unwrap();
    assert_eq!(
        next.get_for_update("e".to_owned()).await.unwrap(),
        Some(b"holder".to_vec())
    );
    next.put("e".to_owned(), "next".to_owned()).await.unwrap();
    next.commit().await.unwrap();
    assert_eq!(read_all(&client, &["e"]).await, vec![kv("e", "next")]);
}

async fn async_commit(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.txn().await;
    let mut writer = client
        .begin_with_options(TransactionOptions::new_optimistic().use_async_commit())
        .await
        .unwrap();
    // A reader that starts after the writer and reads the keys first: the store's max_ts
    // moves to its start ts, so the writer's commit ts must land above it.
    let mut reader = client.begin_optimistic().await.unwrap();
    assert_eq!(reader.get("c".to_owned()).await.unwrap(), None);
    assert_eq!(reader.get("g".to_owned()).await.unwrap(), None);

    for key in ["a", "c", "g"] {
        writer
            .put(key.to_owned(), format!("async-{key}"))
            .await
            .unwrap();
    }
    let commit_ts = writer.commit().await.unwrap().expect("commit ts");
    assert!(
        commit_ts.version() > reader.start_timestamp().version(),
        "async commit ts {} not above an earlier read at {}",
        commit_ts.version(),
        reader.start_timestamp().version()
    );
    // The reader's snapshot stays as it was.
    assert_eq!(reader.get("g".to_owned()).await.unwrap(), None);
    reader.rollback().await.unwrap();

    assert_eq!(
        read_all(&client, &["a", "c", "g"]).await,
        vec![kv("a", "async-a"), kv("c", "async-c"), kv("g", "async-g")]
    );
    let mut at_commit = client.snapshot(commit_ts.clone(), TransactionOptions::new_optimistic());
    assert_eq!(
        at_commit.get("a".to_owned()).await.unwrap(),
        Some(b"async-a".to_vec())
    );
    let before = tikv_client::Timestamp::from_version(commit_ts.version() - 1);
    let mut before_commit = client.snapshot(before, TransactionOptions::new_optimistic());
    assert_eq!(before_commit.get("a".to_owned()).await.unwrap(), None);
}

async fn pessimistic_async_commit(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.txn().await;
    let mut writer = client
        .begin_with_options(TransactionOptions::new_pessimistic().use_async_commit())
        .await
        .unwrap();
    writer.put("c".to_owned(), "p".to_owned()).await.unwrap();
    writer.put("i".to_owned(), "p".to_owned()).await.unwrap();
    let commit_ts = writer.commit().await.unwrap().expect("commit ts");
    assert!(commit_ts.version() > writer.start_timestamp().version());
    assert_eq!(
        read_all(&client, &["c", "i"]).await,
        vec![kv("c", "p"), kv("i", "p")]
    );
}

async fn one_pc(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.txn().await;
    let mut writer = client
        .begin_with_options(TransactionOptions::new_optimistic().try_one_pc())
        .await
        .unwrap();
    let mut reader = client.begin_optimistic().await.unwrap();
    assert_eq!(reader.get("d1".to_owned()).await.unwrap(), None);

    // Both keys in region [d, f): one prewrite request, committed in place.
    writer.put("d1".to_owned(), "one".to_owned()).await.unwrap();
    writer.put("d2".to_owned(), "pc".to_owned()).await.unwrap();
    let commit_ts = writer.commit().await.unwrap().expect("1PC commit ts");
    assert!(
        commit_ts.version() > reader.start_timestamp().version(),
        "1PC commit ts {} not above an earlier read at {}",
        commit_ts.version(),
        reader.start_timestamp().version()
    );
    assert_eq!(reader.get("d1".to_owned()).await.unwrap(), None);
    reader.rollback().await.unwrap();

    // No lock was ever left behind, and the data is there at once.
    let safe_point = client.current_timestamp().await.unwrap();
    let locks = client.scan_locks(&safe_point, .., 100).await.unwrap();
    assert!(locks.is_empty(), "{locks:?}");
    assert_eq!(
        read_all(&client, &["d1", "d2"]).await,
        vec![kv("d1", "one"), kv("d2", "pc")]
    );
    let before = tikv_client::Timestamp::from_version(commit_ts.version() - 1);
    let mut before_commit = client.snapshot(before, TransactionOptions::new_optimistic());
    assert_eq!(before_commit.get("d2".to_owned()).await.unwrap(), None);
    let mut at_commit = client.snapshot(commit_ts, TransactionOptions::new_optimistic());
    assert_eq!(
        at_commit.get("d2".to_owned()).await.unwrap(),
        Some(b"pc".to_vec())
    );
}

async fn one_pc_across_regions_falls_back(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.txn().await;
    // Keys in two regions: client-rust drops try_one_pc per shard and commits with 2PC.
    let mut writer = client
        .begin_with_options(
            TransactionOptions::new_optimistic()
                .try_one_pc()
                .drop_check(CheckLevel::Warn),
        )
        .await
        .unwrap();
    writer.put("a".to_owned(), "x".to_owned()).await.unwrap();
    writer.put("g".to_owned(), "y".to_owned()).await.unwrap();
    let result = writer.commit().await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(
        read_all(&client, &["a", "g"]).await,
        vec![kv("a", "x"), kv("g", "y")]
    );
}

async fn pessimistic_one_pc(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.txn().await;
    let mut writer = client
        .begin_with_options(
            TransactionOptions::new_pessimistic()
                .try_one_pc()
                .heartbeat_option(HeartbeatOption::NoHeartbeat),
        )
        .await
        .unwrap();
    writer
        .put("g1".to_owned(), "p1pc".to_owned())
        .await
        .unwrap();
    let commit_ts = writer.commit().await.unwrap().expect("1PC commit ts");
    assert!(commit_ts.version() > writer.start_timestamp().version());
    assert_eq!(read_all(&client, &["g1"]).await, vec![kv("g1", "p1pc")]);
    let safe_point = client.current_timestamp().await.unwrap();
    let locks = client.scan_locks(&safe_point, .., 100).await.unwrap();
    assert!(locks.is_empty(), "{locks:?}");
}

/// Region changes between a transaction's reads, writes and commit: client-rust re-routes
/// on EpochNotMatch / NotLeader for gets, prewrite, commit and scans.
async fn region_changes(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.txn().await;
    let mut seed = client.begin_optimistic().await.unwrap();
    for key in ["a", "c", "e", "g", "i"] {
        seed.put(key.to_owned(), "seed".to_owned()).await.unwrap();
    }
    seed.commit().await.unwrap();

    let mut txn = client.begin_optimistic().await.unwrap();
    assert_eq!(
        txn.get("c".to_owned()).await.unwrap(),
        Some(b"seed".to_vec())
    );
    fixture.split(Space::Txn, b"c5");
    fixture.move_leader(Space::Txn, b"c");
    assert_eq!(
        txn.get("c".to_owned()).await.unwrap(),
        Some(b"seed".to_vec())
    );
    for key in ["a", "c", "c6", "e", "g"] {
        txn.put(key.to_owned(), "txn".to_owned()).await.unwrap();
    }
    fixture.split(Space::Txn, b"e5");
    fixture.move_leader(Space::Txn, b"a");
    fixture.merge_left(Space::Txn, b"h");
    txn.commit().await.unwrap();

    let mut reader = client.begin_optimistic().await.unwrap();
    let got = pairs(
        reader
            .scan("a".to_owned().."h".to_owned(), 100)
            .await
            .unwrap(),
    );
    assert_eq!(
        got,
        vec![
            kv("a", "txn"),
            kv("c", "txn"),
            kv("c6", "txn"),
            kv("e", "txn"),
            kv("g", "txn")
        ]
    );
    // Reverse scan inside one region: highest keys first.
    let got: Vec<Vec<u8>> = reader
        .scan_keys_reverse("c".to_owned().."c9".to_owned(), 10)
        .await
        .unwrap()
        .map(Vec::from)
        .collect();
    assert_eq!(got, vec![b"c6".to_vec(), b"c".to_vec()]);
    reader.rollback().await.unwrap();
}

/// Two pessimistic transactions lock in opposite orders: the second wait would close a cycle,
/// so TiKV answers Deadlock at once instead of parking it. (Both keys sit in region [d, f):
/// the final commit must be one prewrite request, see the pessimistic_actions sim bug.)
async fn deadlock(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.txn().await;
    let mut first = client
        .begin_with_options(impatient_pessimistic())
        .await
        .unwrap();
    let mut second = client
        .begin_with_options(impatient_pessimistic())
        .await
        .unwrap();
    first.lock_keys(vec!["d1".to_owned()]).await.unwrap();
    second.lock_keys(vec!["d2".to_owned()]).await.unwrap();

    let first_start_ts = first.start_timestamp().version();
    let waiting = tokio::spawn(async move {
        let result = first.lock_keys(vec!["d2".to_owned()]).await;
        (first, result)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let err = second.lock_keys(vec!["d1".to_owned()]).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "deadlock not detected at once"
    );
    let deadlock = key_error(&err)
        .and_then(|key_error| key_error.deadlock.as_ref())
        .unwrap_or_else(|| panic!("expected Deadlock, got {err:?}"));
    assert_eq!(deadlock.lock_ts, first_start_ts);
    // The victim gives up; the other transaction wakes (with a retry conflict in the legacy
    // wake-up mode, since the lock it waited for went away).
    second.rollback().await.unwrap();
    let (mut first, result) = waiting.await.unwrap();
    let err = result.unwrap_err();
    let conflict = key_error(&err).and_then(|key_error| key_error.conflict.as_ref());
    assert!(conflict.is_some(), "expected a retry conflict, got {err:?}");
    first.lock_keys(vec!["d2".to_owned()]).await.unwrap();
    first
        .put("d2".to_owned(), "first".to_owned())
        .await
        .unwrap();
    first.commit().await.unwrap();
    assert_eq!(
        read_all(&client, &["d1", "d2"]).await,
        vec![kv("d2", "first")]
    );
}

/// `gc` moves PD's GC safe point (UpdateGCSafePoint); `unsafe_destroy_range` wipes a range on
/// every store.
async fn gc_and_destroy_range(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.txn().await;
    let mut txn = client.begin_optimistic().await.unwrap();
    for key in ["a", "c", "e", "g"] {
        txn.put(key.to_owned(), "v".to_owned()).await.unwrap();
    }
    txn.commit().await.unwrap();
    let safe_point = client.current_timestamp().await.unwrap();
    assert!(client.gc(safe_point).await.unwrap());
    assert_eq!(
        read_all(&client, &["a", "c", "e", "g"]).await,
        vec![kv("a", "v"), kv("c", "v"), kv("e", "v"), kv("g", "v")]
    );
    client
        .unsafe_destroy_range("b".to_owned().."f".to_owned())
        .await
        .unwrap();
    assert_eq!(
        read_all(&client, &["a", "c", "e", "g"]).await,
        vec![kv("a", "v"), kv("g", "v")]
    );
}

/// A transaction bigger than client-rust's 16 KiB prewrite batch: several prewrite requests
/// per region, each (for async commit) carrying the full secondaries list.
async fn large_transaction(api: Api, options: TransactionOptions) {
    let fixture = fixture(api).await;
    let client = fixture.txn().await;
    let mut txn = client.begin_with_options(options).await.unwrap();
    let value = vec![b'v'; 200];
    let keys: Vec<String> = (0..400)
        .map(|i| format!("{}{i:03}", ["a", "c", "e", "g"][i % 4]))
        .collect();
    for key in &keys {
        txn.put(key.clone(), value.clone()).await.unwrap();
    }
    txn.commit().await.unwrap().expect("commit ts");
    let mut reader = client.begin_optimistic().await.unwrap();
    let got = reader
        .scan("a".to_owned().."h".to_owned(), 1000)
        .await
        .unwrap();
    let got: Vec<KvPair> = got.collect();
    assert_eq!(got.len(), keys.len());
    assert!(got.iter().all(|kv| kv.value() == &value));
    reader.rollback().await.unwrap();
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

per_api!(optimistic_commit: v1_optimistic_commit => Api::V1, v2_optimistic_commit => Api::V2);
per_api!(optimistic_write_conflict:
    v1_optimistic_write_conflict => Api::V1, v2_optimistic_write_conflict => Api::V2);
per_api!(insert_existing_key: v1_insert_existing_key => Api::V1, v2_insert_existing_key => Api::V2);
per_api!(pessimistic_commit_one_region:
    v1_pessimistic_commit_one_region => Api::V1, v2_pessimistic_commit_one_region => Api::V2);

/// client-rust builds `pessimistic_actions` for the whole transaction and does not cut it per
/// region, so a multi-region pessimistic prewrite carries more actions than mutations. TiKV
/// zips the two lists (`src/storage/txn/commands/mod.rs`, `From<PrewriteRequest>`), so the
/// extra actions are ignored; the simulator must do the same. These tests run the
/// multi-region case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_pessimistic_commit() {
    pessimistic_commit(Api::V1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_pessimistic_commit() {
    pessimistic_commit(Api::V2).await;
}

per_api!(pessimistic_rollback:
    v1_pessimistic_rollback => Api::V1, v2_pessimistic_rollback => Api::V2);
per_api!(pessimistic_lock_wait_timeout:
    v1_pessimistic_lock_wait_timeout => Api::V1, v2_pessimistic_lock_wait_timeout => Api::V2);
per_api!(pessimistic_lock_wait_wakes_up:
    v1_pessimistic_lock_wait_wakes_up => Api::V1, v2_pessimistic_lock_wait_wakes_up => Api::V2);
per_api!(async_commit: v1_async_commit => Api::V1, v2_async_commit => Api::V2);
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_pessimistic_async_commit() {
    pessimistic_async_commit(Api::V1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_pessimistic_async_commit() {
    pessimistic_async_commit(Api::V2).await;
}
per_api!(one_pc: v1_one_pc => Api::V1, v2_one_pc => Api::V2);
per_api!(one_pc_across_regions_falls_back:
    v1_one_pc_across_regions => Api::V1, v2_one_pc_across_regions => Api::V2);
per_api!(pessimistic_one_pc: v1_pessimistic_one_pc => Api::V1, v2_pessimistic_one_pc => Api::V2);
per_api!(region_changes: v1_region_changes => Api::V1, v2_region_changes => Api::V2);
per_api!(deadlock: v1_deadlock => Api::V1, v2_deadlock => Api::V2);
per_api!(gc_and_destroy_range:
    v1_gc_and_destroy_range => Api::V1, v2_gc_and_destroy_range => Api::V2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_large_optimistic() {
    large_transaction(Api::V1, TransactionOptions::new_optimistic()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_large_optimistic() {
    large_transaction(Api::V2, TransactionOptions::new_optimistic()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_large_async_commit() {
    large_transaction(
        Api::V1,
        TransactionOptions::new_optimistic().use_async_commit(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_large_async_commit() {
    large_transaction(
        Api::V2,
        TransactionOptions::new_optimistic().use_async_commit(),
    )
    .await;
}
