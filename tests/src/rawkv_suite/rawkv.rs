//! Ports of `rawkv/rawkv_test.go`.
//!
//! The Go suite bootstraps two stores with one region led from store 1, writes, then "moves"
//! store 2 onto store 1's address, removes store 1, makes store 2's peer the leader and
//! injects liveness answers, before reading back. What these ports keep is the effect the
//! client must cope with: the cached leader's store is gone, the region is led from the other
//! store, and every read must still find the data. `TestUpdateStoreAddr` swaps two stores'
//! addresses in PD; the served simulator's ports follow PD's addresses, so each port then
//! answers as the other store. Column families are
//! the ones TiKV accepts (`lock`, `write`) instead of mocktikv's free-form names.

use bytes::Bytes;
use tikv_core::{CasOutcome, ColumnFamily, Error};
use tikv_proto::metapb::PeerRole;
use tikv_sim::cluster::ClusterConfig;

use super::{Api, Env, TestCluster, b, crc64_ecma, ok, start_with};

/// Store ids of the bootstrap layout: ids come from one counter, stores first.
const STORE1: u64 = 1;
const STORE2: u64 = 2;
const STORE3: u64 = 3;

/// Go's `SetupTest`: a region with peers on store 1 (leader) and store 2; a spare store 3.
async fn setup<E: Env>(env: &E) -> TestCluster {
    let layout = ClusterConfig {
        store_count: 3,
        replica_count: 2,
        ..ClusterConfig::default()
    };
    start_with(env, Api::V1, layout).await
}

/// The pairs most Go tests in this file write.
fn pairs() -> Vec<(&'static str, &'static str)> {
    vec![
        ("db", "TiDB"),
        ("key2", "value2"),
        ("key1", "value1"),
        ("key4", "value4"),
        ("key3", "value3"),
        ("kv", "TiKV"),
    ]
}

/// `TestUpdateStoreAddr`: stores 1 and 2 swap addresses. The client's cached address for
/// the leader's store now reaches the other store, which answers StoreNotMatch; the client
/// asks PD for the store again and reads the value at its new address.
pub async fn update_store_addr<E: Env>(env: &E) {
    let tc = setup(env).await;
    let raw = tc.raw();
    ok("put", raw.put("test_key", "test_value").await);
    tc.server.with(|sim| {
        let address = |id| {
            sim.cluster
                .store(id)
                .map(|store| store.address.clone())
                .unwrap_or_else(|| panic!("no store {id}"))
        };
        let (first, second) = (address(STORE1), address(STORE2));
        sim.cluster
            .set_store_address(STORE1, &second, &second)
            .unwrap_or_else(|err| panic!("{err}"));
        sim.cluster
            .set_store_address(STORE2, &first, &first)
            .unwrap_or_else(|err| panic!("{err}"));
    });
    assert_eq!(ok("get", raw.get("test_key").await), Some(b("test_value")));
    ok("put again", raw.put("test_key", "value2").await);
    assert_eq!(ok("get", raw.get("test_key").await), Some(b("value2")));
}

/// `TestReplaceAddrWithNewStore`: after the leader's store is removed and store 2 leads, a
/// read finds the value written before.
pub async fn replace_addr_with_new_store<E: Env>(env: &E) {
    let tc = setup(env).await;
    let raw = tc.raw();
    ok("put", raw.put("test_key", "test_value").await);
    tc.retire_store(STORE1, STORE2);
    let value = ok("get", raw.get("test_key").await);
    assert_eq!(value, Some(b("test_value")));
}

/// `TestReplaceNewAddrAndOldOfflineImmediately`: as above, with the region (and so the
/// follower's store) already cached by an earlier read when store 1 goes away.
pub async fn replace_new_addr_and_old_offline_immediately<E: Env>(env: &E) {
    let tc = setup(env).await;
    let raw = tc.raw();
    ok("put", raw.put("test_key", "test_value").await);
    // Warms the region cache, as the Go test's follower-read lookup does.
    assert_eq!(ok("get", raw.get("test_key").await), Some(b("test_value")));
    tc.retire_store(STORE1, STORE2);
    assert_eq!(ok("get", raw.get("test_key").await), Some(b("test_value")));
}

/// `TestReplaceStore`: store 1 becomes a tombstone and a new store takes over its peer and
/// the leadership; a write still lands.
pub async fn replace_store<E: Env>(env: &E) {
    let tc = setup(env).await;
    let raw = tc.raw();
    ok("put", raw.put("test_key", "test_value").await);
    tc.server.with(|sim| {
        let region = sim
            .cluster
            .region_by_key(b"test_key")
            .map(|r| r.id)
            .unwrap_or_else(|| panic!("no region"));
        sim.cluster
            .add_peer(region, STORE3, PeerRole::Voter)
            .unwrap_or_else(|err| panic!("{err}"));
        sim.cluster
            .transfer_leader(region, STORE3)
            .unwrap_or_else(|err| panic!("{err}"));
        sim.cluster
            .remove_peer(region, STORE1)
            .unwrap_or_else(|err| panic!("{err}"));
        sim.cluster
            .remove_store(STORE1)
            .unwrap_or_else(|err| panic!("{err}"));
    });
    ok("put after replace", raw.put("test_key", "test_value").await);
    assert_eq!(ok("get", raw.get("test_key").await), Some(b("test_value")));
}

/// `TestColumnFamilyForClient`: a client handle bound to a column family sees only that
/// family's keys.
pub async fn column_family_for_client<E: Env>(env: &E) {
    let tc = setup(env).await;
    let (cf1, cf2) = (ColumnFamily::Lock, ColumnFamily::Write);
    let raw1 = tc.raw().with_cf(cf1);
    let raw2 = tc.raw().with_cf(cf2);
    ok("put cf1", raw1.put("test_key_cf1", "test_value_cf1").await);
    ok("put cf2", raw2.put("test_key_cf2", "test_value_cf2").await);
    tc.retire_store(STORE1, STORE2);

    assert_eq!(
        ok("get", raw1.get("test_key_cf1").await),
        Some(b("test_value_cf1"))
    );
    assert_eq!(ok("get", raw1.get("test_key_cf2").await), None);
    assert_eq!(
        ok("get", raw2.get("test_key_cf2").await),
        Some(b("test_value_cf2"))
    );
    assert_eq!(ok("get", raw2.get("test_key_cf1").await), None);
    let default = tc.raw().with_cf(ColumnFamily::Default);
    assert_eq!(ok("get", default.get("test_key_cf1").await), None);
    assert_eq!(ok("get", default.get("test_key_cf2").await), None);

    ok("delete cf1", raw1.delete("test_key_cf1").await);
    assert_eq!(ok("get", raw1.get("test_key_cf1").await), None);
    ok("delete cf2", raw2.delete("test_key_cf2").await);
    assert_eq!(ok("get", raw2.get("test_key_cf2").await), None);
}

/// `TestColumnFamilyForOptions`: the column family chosen per call (`with_cf` inline).
pub async fn column_family_for_options<E: Env>(env: &E) {
    let tc = setup(env).await;
    let raw = tc.raw();
    let (cf1, cf2) = (ColumnFamily::Lock, ColumnFamily::Write);
    ok("put", raw.with_cf(cf1).put("db", "TiDB").await);
    ok("put", raw.with_cf(cf2).put("kv", "TiKV").await);
    tc.retire_store(STORE1, STORE2);

    assert_eq!(ok("get", raw.with_cf(cf1).get("db").await), Some(b("TiDB")));
    assert_eq!(ok("get", raw.with_cf(cf1).get("kv").await), None);
    assert_eq!(ok("get", raw.with_cf(cf2).get("kv").await), Some(b("TiKV")));
    assert_eq!(ok("get", raw.with_cf(cf2).get("db").await), None);

    ok("delete", raw.with_cf(cf1).delete("db").await);
    assert_eq!(ok("get", raw.with_cf(cf1).get("db").await), None);
    ok("delete", raw.with_cf(cf2).delete("kv").await);
    assert_eq!(ok("get", raw.with_cf(cf2).get("kv").await), None);
}

/// `TestBatch`: batch put, get and delete in a column family across the store change.
pub async fn batch<E: Env>(env: &E) {
    let tc = setup(env).await;
    let raw = tc.raw().with_cf(ColumnFamily::Write);
    let pairs: Vec<_> = pairs().into_iter().filter(|(k, _)| *k != "key4").collect();
    ok("batch put", raw.batch_put(pairs.clone()).await);
    tc.retire_store(STORE1, STORE2);

    let keys: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
    let values = ok("batch get", raw.batch_get(keys.clone()).await);
    let expected: Vec<Option<Bytes>> = pairs.iter().map(|(_, v)| Some(b(v))).collect();
    assert_eq!(values, expected);

    ok("batch delete", raw.batch_delete(keys.clone()).await);
    assert_eq!(ok("get", raw.get(keys[0]).await), None);
    let values = ok("batch get", raw.batch_get(keys).await);
    assert!(values.iter().all(Option::is_none), "{values:?}");
}

/// `TestScan`: a bounded scan with a limit, and a key-only reverse scan, in a column family.
pub async fn scan<E: Env>(env: &E) {
    let tc = setup(env).await;
    let raw = tc.raw().with_cf(ColumnFamily::Write);
    let pairs = pairs();
    ok("batch put", raw.batch_put(pairs.clone()).await);
    tc.retire_store(STORE1, STORE2);

    let found = ok("scan", raw.scan("key1".."keyz", 3).await);
    let keys: Vec<Bytes> = found.iter().map(|p| p.key.clone()).collect();
    assert_eq!(keys, [b("key1"), b("key2"), b("key3")]);
    for pair in &found {
        let expected = pairs.iter().find(|(k, _)| k.as_bytes() == pair.key);
        assert_eq!(Some(pair.value.clone()), expected.map(|(_, v)| b(v)));
    }

    // Keys only, as the Go test asks: everything below "key3", from the top down.
    let keys = ok("reverse scan", raw.reverse_scan_keys(.."key3", 10).await);
    assert_eq!(keys, [b("key2"), b("key1"), b("db")]);
}

/// `TestDeleteRange`: a range with an open end, then everything.
pub async fn delete_range<E: Env>(env: &E) {
    let tc = setup(env).await;
    let raw = tc.raw().with_cf(ColumnFamily::Write);
    ok("batch put", raw.batch_put(pairs()).await);
    tc.retire_store(STORE1, STORE2);

    ok("delete range", raw.delete_range("key3"..).await);
    assert!(ok("scan", raw.scan("key3".., 10).await).is_empty());
    let left = ok("scan", raw.scan::<[u8]>(.., 10).await);
    assert_eq!(left.len(), 3, "{left:?}");

    ok("delete everything", raw.delete_range::<[u8]>(..).await);
    assert!(ok("scan", raw.scan::<[u8]>(.., 10).await).is_empty());
}

/// `TestDeleteRangeEmptyKeysMultiRegion`: an unbounded delete range walks every region.
pub async fn delete_range_empty_keys_multi_region<E: Env>(env: &E) {
    let tc = setup(env).await;
    tc.split(&[b"key3"]);
    let raw = tc.raw().with_cf(ColumnFamily::Write);
    ok("batch put", raw.batch_put(pairs()).await);
    assert_ne!(tc.region_of(b"key1"), tc.region_of(b"key4"));

    assert_eq!(
        ok("scan", raw.scan::<[u8]>(.., 10).await).len(),
        pairs().len()
    );
    ok("delete range", raw.delete_range::<[u8]>(..).await);
    assert!(ok("scan", raw.scan::<[u8]>(.., 10).await).is_empty());
}

/// `TestCompareAndSwap`: refused outside atomic mode; a wrong expectation reports the
/// current value without writing; a right one swaps.
pub async fn compare_and_swap<E: Env>(env: &E) {
    let tc = setup(env).await;
    let raw = tc.raw().with_cf(ColumnFamily::Write);
    let (key, value, new_value) = ("kv", b("TiDB"), b("TiKV"));
    ok("put", raw.put(key, value.clone()).await);
    tc.retire_store(STORE1, STORE2);

    let refused = raw
        .compare_and_swap(key, Some(value.clone()), new_value.clone())
        .await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "{refused:?}"
    );

    let atomic = raw.with_atomic_for_cas(true);
    let outcome = ok(
        "cas",
        atomic
            .compare_and_swap(key, Some(new_value.clone()), new_value.clone())
            .await,
    );
    assert_eq!(
        outcome,
        CasOutcome {
            previous: Some(value.clone()),
            swapped: false
        }
    );

    let outcome = ok(
        "cas",
        atomic
            .compare_and_swap(key, Some(value.clone()), new_value.clone())
            .await,
    );
    assert_eq!(
        outcome,
        CasOutcome {
            previous: Some(value),
            swapped: true
        }
    );
    assert_eq!(ok("get", raw.get(key).await), Some(new_value));
}

/// `TestRawChecksum`: the checksum of `["db", ∞)` against one computed here.
pub async fn raw_checksum<E: Env>(env: &E) {
    let tc = setup(env).await;
    let raw = tc.raw();
    let pairs = pairs();
    let mut crc64_xor = 0;
    let mut total_bytes = 0;
    for (key, value) in &pairs {
        crc64_xor ^= crc64_ecma(&[key.as_bytes(), value.as_bytes()]);
        total_bytes += (key.len() + value.len()) as u64;
    }
    ok("batch put", raw.batch_put(pairs.clone()).await);
    let sum = ok("checksum", raw.checksum("db"..).await);
    assert_eq!(sum.crc64_xor, crc64_xor);
    assert_eq!(sum.total_kvs, pairs.len() as u64);
    assert_eq!(sum.total_bytes, total_bytes);
}
