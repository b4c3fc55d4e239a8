//! RawKV through client-rust against the simulated cluster, on API v1 (no keyspace), v1 with
//! TTL, and v2 (the `DEFAULT` keyspace), always with several regions.

mod common;

use std::time::Duration;

use common::{Api, Fixture, Space};
use tikv_client::{ColumnFamily, Key, KvPair, Value};

/// Region boundaries every raw test starts with: five regions around keys `a`..`h`.
const SPLITS: &[&[u8]] = &[b"b", b"d", b"f", b"h"];

async fn fixture(api: Api) -> Fixture {
    let fixture = Fixture::start(api, Space::Raw, SPLITS).await;
    assert!(fixture.region_count() >= 5);
    fixture
}

fn pairs(kvs: Vec<KvPair>) -> Vec<(Vec<u8>, Vec<u8>)> {
    kvs.into_iter()
        .map(|kv| (Vec::from(kv.key().clone()), kv.value().clone()))
        .collect()
}

fn kv(key: &str, value: &str) -> (Vec<u8>, Vec<u8>) {
    (key.as_bytes().to_vec(), value.as_bytes().to_vec())
}

async fn put_get_delete(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.raw().await;
    assert_eq!(client.get("c".to_owned()).await.unwrap(), None);
    client.put("c".to_owned(), "v1".to_owned()).await.unwrap();
    assert_eq!(
        client.get("c".to_owned()).await.unwrap(),
        Some(b"v1".to_vec())
    );
    client.put("c".to_owned(), "v2".to_owned()).await.unwrap();
    assert_eq!(
        client.get("c".to_owned()).await.unwrap(),
        Some(b"v2".to_vec())
    );
    client.delete("c".to_owned()).await.unwrap();
    assert_eq!(client.get("c".to_owned()).await.unwrap(), None);
    // Deleting a missing key is not an error.
    client.delete("zz".to_owned()).await.unwrap();
}

async fn batch_ops(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.raw().await;
    // One key in every region.
    let written: Vec<(String, String)> = ["a", "c", "e", "g", "i"]
        .iter()
        .map(|k| ((*k).to_owned(), format!("value-{k}")))
        .collect();
    client.batch_put(written.clone()).await.unwrap();
    let mut got = pairs(
        client
            .batch_get(
                vec!["a", "c", "e", "g", "i", "missing"]
                    .into_iter()
                    .map(String::from),
            )
            .await
            .unwrap(),
    );
    got.sort();
    let expected: Vec<(Vec<u8>, Vec<u8>)> = written
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    assert_eq!(got, expected);

    client
        .batch_delete(vec!["a".to_owned(), "e".to_owned(), "i".to_owned()])
        .await
        .unwrap();
    let mut got = pairs(
        client
            .batch_get(vec!["a", "c", "e", "g", "i"].into_iter().map(String::from))
            .await
            .unwrap(),
    );
    got.sort();
    assert_eq!(got, vec![kv("c", "value-c"), kv("g", "value-g")]);
}

async fn scan(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.raw().await;
    let keys = ["a", "a1", "b", "c", "d", "d5", "e", "f", "g", "h", "i"];
    client
        .batch_put(keys.iter().map(|k| ((*k).to_owned(), format!("v{k}"))))
        .await
        .unwrap();

    // A bounded range over three regions ([b, d), [d, f), [f, h)), end inside a middle region.
    let got = pairs(
        client
            .scan("a1".to_owned().."g".to_owned(), 100)
            .await
            .unwrap(),
    );
    let expected: Vec<_> = ["a1", "b", "c", "d", "d5", "e", "f"]
        .iter()
        .map(|k| kv(k, &format!("v{k}")))
        .collect();
    assert_eq!(got, expected);

    // The limit stops the scan part-way through a region.
    let got = pairs(
        client
            .scan("a".to_owned().."h".to_owned(), 4)
            .await
            .unwrap(),
    );
    assert_eq!(
        got.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        vec![b"a".to_vec(), b"a1".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );

    // Keys only, inclusive end.
    let got = client
        .scan_keys("d".to_owned()..="f".to_owned(), 10)
        .await
        .unwrap();
    let got: Vec<Vec<u8>> = got.into_iter().map(Vec::from).collect();
    assert_eq!(
        got,
        vec![b"d".to_vec(), b"d5".to_vec(), b"e".to_vec(), b"f".to_vec()]
    );

    // Reverse scan inside one region: highest keys first.
    let got = pairs(
        client
            .scan_reverse("d".to_owned().."f".to_owned(), 10)
            .await
            .unwrap(),
    );
    assert_eq!(got, vec![kv("e", "ve"), kv("d5", "vd5"), kv("d", "vd")]);
}

async fn scan_open_end(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.raw().await;
    let keys = ["a", "c", "e", "g", "i"];
    client
        .batch_put(keys.iter().map(|k| ((*k).to_owned(), format!("v{k}"))))
        .await
        .unwrap();
    let got = pairs(client.scan("b".to_owned().., 100).await.unwrap());
    let expected: Vec<_> = ["c", "e", "g", "i"]
        .iter()
        .map(|k| kv(k, &format!("v{k}")))
        .collect();
    assert_eq!(got, expected);
}

async fn delete_range(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.raw().await;
    let keys = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    client
        .batch_put(keys.iter().map(|k| ((*k).to_owned(), "v".to_owned())))
        .await
        .unwrap();
    // Crosses three region boundaries.
    client
        .delete_range("b".to_owned().."g".to_owned())
        .await
        .unwrap();
    let mut got: Vec<Vec<u8>> = client
        .batch_get(keys.iter().map(|k| (*k).to_owned()))
        .await
        .unwrap()
        .into_iter()
        .map(|kv| Vec::from(kv.key().clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![b"a".to_vec(), b"g".to_vec(), b"h".to_vec(), b"i".to_vec()]
    );
}

async fn compare_and_swap(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.raw().await.with_atomic_for_cas();
    let key = "cas".to_owned();
    // Expect absent: succeeds, previous is None.
    let (prev, swapped) = client
        .compare_and_swap(key.clone(), None, b"one".to_vec())
        .await
        .unwrap();
    assert_eq!((prev, swapped), (None, true));
    // Expect absent again: fails and reports the current value.
    let (prev, swapped) = client
        .compare_and_swap(key.clone(), None, b"two".to_vec())
        .await
        .unwrap();
    assert_eq!((prev, swapped), (Some(b"one".to_vec()), false));
    // Wrong expected value: fails.
    let (prev, swapped) = client
        .compare_and_swap(key.clone(), Some(b"nope".to_vec()), b"two".to_vec())
        .await
        .unwrap();
    assert_eq!((prev, swapped), (Some(b"one".to_vec()), false));
    // Right expected value: succeeds.
    let (prev, swapped) = client
        .compare_and_swap(key.clone(), Some(b"one".to_vec()), b"two".to_vec())
        .await
        .unwrap();
    assert_eq!((prev, swapped), (Some(b"one".to_vec()), true));
    assert_eq!(
        client.get(key.clone()).await.unwrap(),
        Some(b"two".to_vec())
    );
    // Atomic-mode puts and deletes still work.
    client.put(key.clone(), b"three".to_vec()).await.unwrap();
    assert_eq!(
        client.get(key.clone()).await.unwrap(),
        Some(b"three".to_vec())
    );
    client.delete(key.clone()).await.unwrap();
    assert_eq!(client.get(key).await.unwrap(), None);
    // client-rust refuses delete_range in atomic mode before sending anything.
    assert!(
        client
            .delete_range("a".to_owned().."b".to_owned())
            .await
            .is_err()
    );
}

async fn ttl(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.raw().await;
    client
        .put_with_ttl("c-short".to_owned(), "v".to_owned(), 1)
        .await
        .unwrap();
    client
        .put_with_ttl("c-long".to_owned(), "v".to_owned(), 1000)
        .await
        .unwrap();
    client
        .put("c-forever".to_owned(), "v".to_owned())
        .await
        .unwrap();
    client
        .batch_put_with_ttl(
            vec![
                KvPair::new("ba".to_owned(), "v".to_owned()),
                KvPair::new("ga".to_owned(), "v".to_owned()),
            ],
            vec![1000, 1],
        )
        .await
        .unwrap();

    let long = client.get_key_ttl_secs("c-long".to_owned()).await.unwrap();
    assert!(matches!(long, Some(t) if t > 990 && t <= 1000), "{long:?}");
    // No TTL reads as 0; a missing key as None.
    assert_eq!(
        client
            .get_key_ttl_secs("c-forever".to_owned())
            .await
            .unwrap(),
        Some(0)
    );
    assert_eq!(
        client.get_key_ttl_secs("missing".to_owned()).await.unwrap(),
        None
    );
    assert_eq!(
        client.get("c-short".to_owned()).await.unwrap(),
        Some(b"v".to_vec())
    );

    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(client.get("c-short".to_owned()).await.unwrap(), None);
    assert_eq!(
        client.get_key_ttl_secs("c-short".to_owned()).await.unwrap(),
        None
    );
    assert_eq!(client.get("ga".to_owned()).await.unwrap(), None);
    assert_eq!(
        client.get("ba".to_owned()).await.unwrap(),
        Some(b"v".to_vec())
    );
    assert_eq!(
        client.get("c-long".to_owned()).await.unwrap(),
        Some(b"v".to_vec())
    );
    // Expired keys are invisible to scans too. (The range ends at a region boundary: with
    // API v1, client-rust 0.4.0 wraps round to the first region when the end lies in the last
    // region, and returns duplicates.)
    let keys: Vec<Key> = client
        .scan_keys("a".to_owned().."h".to_owned(), 100)
        .await
        .unwrap();
    let keys: Vec<Vec<u8>> = keys.into_iter().map(Vec::from).collect();
    assert_eq!(
        keys,
        vec![b"ba".to_vec(), b"c-forever".to_vec(), b"c-long".to_vec()]
    );
}

/// Splits, a leader move and a merge after the client cached the regions: the stores answer
/// EpochNotMatch / NotLeader and client-rust re-routes.
async fn region_changes(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.raw().await;
    let keys = ["a", "c", "c5", "e", "e5", "g", "i"];
    client
        .batch_put(keys.iter().map(|k| ((*k).to_owned(), format!("v{k}"))))
        .await
        .unwrap();
    let all: Vec<_> = keys.iter().map(|k| kv(k, &format!("v{k}"))).collect();
    let mut got = pairs(
        client
            .batch_get(keys.iter().map(|k| (*k).to_owned()))
            .await
            .unwrap(),
    );
    got.sort();
    assert_eq!(got, all);

    fixture.split(Space::Raw, b"c5");
    fixture.split(Space::Raw, b"e5");
    fixture.move_leader(Space::Raw, b"a");
    fixture.move_leader(Space::Raw, b"g");
    fixture.merge_left(Space::Raw, b"h");

    let mut got = pairs(
        client
            .batch_get(keys.iter().map(|k| (*k).to_owned()))
            .await
            .unwrap(),
    );
    got.sort();
    assert_eq!(got, all);
    assert_eq!(
        client.get("c5".to_owned()).await.unwrap(),
        Some(b"vc5".to_vec())
    );
    client.put("e6".to_owned(), "ve6".to_owned()).await.unwrap();
    let got = pairs(
        client
            .scan("b".to_owned().."f".to_owned(), 100)
            .await
            .unwrap(),
    );
    assert_eq!(
        got,
        vec![
            kv("c", "vc"),
            kv("c5", "vc5"),
            kv("e", "ve"),
            kv("e5", "ve5"),
            kv("e6", "ve6")
        ]
    );
    client
        .batch_delete(vec!["a".to_owned(), "g".to_owned(), "i".to_owned()])
        .await
        .unwrap();
    assert_eq!(client.get("i".to_owned()).await.unwrap(), None);
}

/// Column families: API v1 accepts `default`, `lock` and `write`, each its own key space;
/// API v2 refuses any explicit cf (TiKV `Storage::rawkv_cf`: CfDeprecated).
async fn column_families(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.raw().await;
    let write_cf = client.with_cf(ColumnFamily::Write);
    let result = write_cf.put("k".to_owned(), "in-write".to_owned()).await;
    match api {
        Api::V1 | Api::V1Ttl => {
            result.unwrap();
            assert_eq!(
                write_cf.get("k".to_owned()).await.unwrap(),
                Some(b"in-write".to_vec())
            );
            assert_eq!(client.get("k".to_owned()).await.unwrap(), None);
            let lock_cf = client.with_cf(ColumnFamily::Lock);
            assert_eq!(lock_cf.get("k".to_owned()).await.unwrap(), None);
        }
        Api::V2 => {
            let err = result.unwrap_err();
            assert!(format!("{err:?}").contains("cf is deprecated"), "{err:?}");
            let named_default = client.with_cf(ColumnFamily::Default);
            let err = named_default.get("k".to_owned()).await.unwrap_err();
            assert!(format!("{err:?}").contains("cf is deprecated"), "{err:?}");
            // Without a cf the default one is used.
            client
                .put("k".to_owned(), "plain".to_owned())
                .await
                .unwrap();
            assert_eq!(
                client.get("k".to_owned()).await.unwrap(),
                Some(b"plain".to_vec())
            );
        }
    }
}

/// RawBatchScan: several ranges, a limit per range (client-rust sends one request per region).
async fn batch_scan(api: Api) {
    let fixture = fixture(api).await;
    let client = fixture.raw().await;
    let keys = ["a", "a1", "a2", "c", "c1", "c2", "e"];
    client
        .batch_put(keys.iter().map(|k| ((*k).to_owned(), format!("v{k}"))))
        .await
        .unwrap();
    let got = client
        .batch_scan(
            vec![
                "a".to_owned().."b".to_owned(),
                "c".to_owned().."d".to_owned(),
            ],
            2,
        )
        .await
        .unwrap();
    let mut got = pairs(got);
    got.sort();
    assert_eq!(
        got,
        vec![
            kv("a", "va"),
            kv("a1", "va1"),
            kv("c", "vc"),
            kv("c1", "vc1")
        ]
    );
}

/// TTL needs `enable-ttl` on v1: a plain v1 store rejects TTL puts.
async fn ttl_refused_without_ttl_support() {
    let fixture = fixture(Api::V1).await;
    let client = fixture.raw().await;
    let result = client
        .put_with_ttl("k".to_owned(), "v".to_owned(), 10)
        .await;
    let err = result.unwrap_err();
    assert!(format!("{err:?}").contains("ttl is not enabled"), "{err:?}");
    let value: Option<Value> = client.get("k".to_owned()).await.unwrap();
    assert_eq!(value, None);
}

macro_rules! per_api {
    ($name:ident, $body:ident, $api:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            $body($api).await;
        }
    };
}

per_api!(v1_put_get_delete, put_get_delete, Api::V1);
per_api!(v2_put_get_delete, put_get_delete, Api::V2);
per_api!(v1_batch_ops, batch_ops, Api::V1);
per_api!(v2_batch_ops, batch_ops, Api::V2);
per_api!(v1_scan, scan, Api::V1);
per_api!(v2_scan, scan, Api::V2);

/// client-rust 0.4.0 bug, not a simulator bug: with API v1 an open end becomes an empty end
/// key, and `scan_inner` stops after the first region (`end_key <= next_key` holds for an
/// empty end key). With API v2 the keyspace gives the range a real end, so it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "client-rust 0.4.0 bug (not the sim): API v1 raw scan with an open end stops after one region"]
async fn v1_scan_open_end() {
    scan_open_end(Api::V1).await;
}
per_api!(v2_scan_open_end, scan_open_end, Api::V2);
per_api!(v1_delete_range, delete_range, Api::V1);
per_api!(v2_delete_range, delete_range, Api::V2);
per_api!(v1_compare_and_swap, compare_and_swap, Api::V1);
per_api!(v2_compare_and_swap, compare_and_swap, Api::V2);
per_api!(v1_region_changes, region_changes, Api::V1);
per_api!(v2_region_changes, region_changes, Api::V2);
per_api!(v1_column_families, column_families, Api::V1);
per_api!(v2_column_families, column_families, Api::V2);
per_api!(v1_batch_scan, batch_scan, Api::V1);
per_api!(v2_batch_scan, batch_scan, Api::V2);
per_api!(v1ttl_ttl, ttl, Api::V1Ttl);
per_api!(v2_ttl, ttl, Api::V2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_ttl_refused() {
    ttl_refused_without_ttl_support().await;
}
