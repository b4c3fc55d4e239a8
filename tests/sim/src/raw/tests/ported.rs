//! Ports of client-go's raw KV tests that run against its mock store, plus the store-side
//! halves of its real-TiKV raw suite. Region splits in the Go tests are the cluster's
//! business; here every case runs on one store, once per API mode (V1, V1TTL, V2 with the
//! keyspace prefix a client adds).

use super::{Harness, MODES, ScanArgs, kvs};

/// `integration_tests/raw/api_mock_test.go`.
mod api_mock_test {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn test_simple() {
        for mode in MODES {
            let mut h = Harness::new(mode);
            assert_eq!(h.get("key"), None);
            h.put("key", "value");
            assert_eq!(h.get("key").as_deref(), Some("value"));
            h.delete("key");
            assert_eq!(h.get("key"), None);
            // An empty value is legal.
            h.put("key", "");
            assert_eq!(h.get("key").as_deref(), Some(""));
        }
    }

    #[test]
    fn test_raw_batch() {
        for mode in MODES {
            let mut h = Harness::new(mode);
            let owned: Vec<(String, String)> = (0..2000)
                .map(|i| (format!("key{i}"), format!("value{i}")))
                .collect();
            let pairs: Vec<(&str, &str)> = owned
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let keys: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
            assert!(h.batch_get(&keys).is_empty());
            h.batch_put(&pairs);
            assert_eq!(h.batch_get(&keys), owned);
            h.batch_delete(&keys);
            assert!(h.batch_get(&keys).is_empty());
        }
    }

    fn put_odd_keys(h: &mut Harness) {
        for i in [1, 3, 5, 7] {
            h.put(&format!("k{i}"), &format!("v{i}"));
        }
    }

    #[test]
    fn test_scan() {
        for mode in MODES {
            let mut h = Harness::new(mode);
            put_odd_keys(&mut h);
            assert_eq!(h.scan("", "", 1), kvs(&[("k1", "v1")]));
            assert_eq!(h.scan("k1", "", 2), kvs(&[("k1", "v1"), ("k3", "v3")]));
            assert_eq!(
                h.scan("", "", 10),
                kvs(&[("k1", "v1"), ("k3", "v3"), ("k5", "v5"), ("k7", "v7")])
            );
            assert_eq!(h.scan("k2", "", 2), kvs(&[("k3", "v3"), ("k5", "v5")]));
            assert_eq!(
                h.scan("k2", "", 3),
                kvs(&[("k3", "v3"), ("k5", "v5"), ("k7", "v7")])
            );
            assert_eq!(h.scan("", "k1", 1), kvs(&[]));
            assert_eq!(h.scan("k1", "k3", 2), kvs(&[("k1", "v1")]));
            assert_eq!(h.scan("k1", "k5", 10), kvs(&[("k1", "v1"), ("k3", "v3")]));
            assert_eq!(
                h.scan("k1", "k5\0", 10),
                kvs(&[("k1", "v1"), ("k3", "v3"), ("k5", "v5")])
            );
            assert_eq!(h.scan("k5\0", "k5\0\0", 10), kvs(&[]));
        }
    }

    #[test]
    fn test_reverse_scan() {
        for mode in MODES {
            let mut h = Harness::new(mode);
            put_odd_keys(&mut h);
            assert_eq!(h.reverse_scan("", "", 10), kvs(&[]));
            assert_eq!(h.reverse_scan("z", "", 1), kvs(&[("k7", "v7")]));
            assert_eq!(
                h.reverse_scan("z", "", 2),
                kvs(&[("k7", "v7"), ("k5", "v5")])
            );
            assert_eq!(
                h.reverse_scan("z", "", 10),
                kvs(&[("k7", "v7"), ("k5", "v5"), ("k3", "v3"), ("k1", "v1")])
            );
            assert_eq!(h.reverse_scan("k2", "", 10), kvs(&[("k1", "v1")]));
            assert_eq!(
                h.reverse_scan("k6", "", 2),
                kvs(&[("k5", "v5"), ("k3", "v3")])
            );
            assert_eq!(h.reverse_scan("k5", "", 1), kvs(&[("k3", "v3")]));
            assert_eq!(h.reverse_scan("k5\0", "", 1), kvs(&[("k5", "v5")]));
            assert_eq!(
                h.reverse_scan("k6", "", 3),
                kvs(&[("k5", "v5"), ("k3", "v3"), ("k1", "v1")])
            );
            assert_eq!(
                h.reverse_scan("z", "k3", 10),
                kvs(&[("k7", "v7"), ("k5", "v5"), ("k3", "v3")])
            );
            assert_eq!(h.reverse_scan("k7", "k3\0", 10), kvs(&[("k5", "v5")]));
        }
    }

    /// Deletes `[start, end)` and drops the same keys from `expected`, then compares.
    fn must_delete_range(
        h: &mut Harness,
        start: &str,
        end: &str,
        expected: &mut BTreeMap<String, String>,
    ) {
        // client-go sends nothing for an empty range (the store would refuse it).
        if start != end {
            h.delete_range(start, end);
        }
        expected.retain(|key, _| !(start <= key.as_str() && key.as_str() < end));
        check_data(h, expected);
    }

    fn check_data(h: &Harness, expected: &BTreeMap<String, String>) {
        let limit = u32::try_from(expected.len() + 1).unwrap_or(u32::MAX);
        let got: BTreeMap<String, String> = h.scan("", "", limit).into_iter().collect();
        assert_eq!(&got, expected);
    }

    #[test]
    fn test_delete_range() {
        for mode in MODES {
            let mut h = Harness::new(mode);
            let mut expected = BTreeMap::new();
            for i in "abcd".chars() {
                for j in '0'..='9' {
                    let (key, value) = (format!("{i}{j}"), format!("v{i}{j}"));
                    h.put(&key, &value);
                    expected.insert(key, value);
                }
            }
            check_data(&h, &expected);
            must_delete_range(&mut h, "b", "c0", &mut expected);
            must_delete_range(&mut h, "c11", "c12", &mut expected);
            must_delete_range(&mut h, "d0", "d0", &mut expected);
            must_delete_range(&mut h, "c5", "d5", &mut expected);
            must_delete_range(&mut h, "a", "z", &mut expected);
            assert!(expected.is_empty());
        }
    }
}

/// `rawkv/rawkv_test.go`. Its column families are arbitrary names that the mock store
/// accepts; TiKV only has `default`, `lock` and `write`, so those stand in for them (API V1
/// and V1TTL only: V2 forbids naming a column family).
mod rawkv_test {
    use super::*;
    use crate::raw::tests::semantics::CF_MODES;

    const PAIRS: [(&str, &str); 6] = [
        ("db", "TiDB"),
        ("key2", "value2"),
        ("key1", "value1"),
        ("key4", "value4"),
        ("key3", "value3"),
        ("kv", "TiKV"),
    ];

    #[test]
    fn test_column_family_for_options() {
        for mode in CF_MODES {
            let mut h = Harness::new(mode);
            h.cf = "lock".to_owned();
            h.put("db", "TiDB");
            h.cf = "write".to_owned();
            h.put("kv", "TiKV");

            h.cf = "lock".to_owned();
            assert_eq!(h.get("db").as_deref(), Some("TiDB"));
            assert_eq!(h.get("kv"), None);
            h.cf = "write".to_owned();
            assert_eq!(h.get("kv").as_deref(), Some("TiKV"));
            assert_eq!(h.get("db"), None);
            h.cf = String::new();
            assert_eq!(h.get("db"), None);
            assert_eq!(h.get("kv"), None);

            h.cf = "lock".to_owned();
            h.delete("db");
            assert_eq!(h.get("db"), None);
            h.cf = "write".to_owned();
            h.delete("kv");
            assert_eq!(h.get("kv"), None);
        }
    }

    #[test]
    fn test_batch() {
        for mode in CF_MODES {
            let mut h = Harness::new(mode).with_cf("write");
            let pairs = &PAIRS[..5];
            let keys: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
            h.batch_put(pairs);
            assert_eq!(h.batch_get(&keys), kvs(pairs));
            h.batch_delete(&keys);
            assert_eq!(h.get(keys[0]), None);
            assert!(h.batch_get(&keys).is_empty());
        }
    }

    #[test]
    fn test_scan() {
        for mode in CF_MODES {
            let mut h = Harness::new(mode).with_cf("write");
            h.batch_put(&PAIRS);
            let got = h.scan("key1", "keyz", 3);
            assert_eq!(
                got,
                kvs(&[("key1", "value1"), ("key2", "value2"), ("key3", "value3")])
            );

            let got = h.scan_with(ScanArgs::reverse("key3", "", 10).key_only());
            assert_eq!(got, kvs(&[("key2", ""), ("key1", ""), ("db", "")]));
        }
    }

    #[test]
    fn test_delete_range() {
        for mode in CF_MODES {
            let mut h = Harness::new(mode).with_cf("write");
            h.batch_put(&PAIRS);
            h.delete_range("key3", "");
            assert!(h.scan("key3", "", 10).is_empty());
            assert_eq!(h.scan("", "", 10).len(), 3);
            h.delete_range("", "");
            assert!(h.scan("", "", 10).is_empty());
        }
    }

    #[test]
    fn test_delete_range_empty_keys_multi_region() {
        for mode in CF_MODES {
            let mut h = Harness::new(mode).with_cf("write");
            h.batch_put(&PAIRS);
            assert_eq!(h.scan("", "", 10).len(), PAIRS.len());
            // The client splits the unbounded range at the region boundary "key3".
            h.delete_range("", "key3");
            h.delete_range("key3", "");
            assert!(h.scan("", "", 10).is_empty());
        }
    }

    #[test]
    fn test_compare_and_swap() {
        for mode in CF_MODES {
            let mut h = Harness::new(mode).with_cf("write");
            h.put("kv", "TiDB");
            // (The Go test first checks that the client refuses CAS outside atomic mode.)
            assert_eq!(
                h.cas("kv", Some("TiKV"), "TiKV"),
                (false, Some("TiDB".to_owned()))
            );
            assert_eq!(
                h.cas("kv", Some("TiDB"), "TiKV"),
                (true, Some("TiDB".to_owned()))
            );
            assert_eq!(h.get("kv").as_deref(), Some("TiKV"));
        }
    }

    #[test]
    fn test_raw_checksum() {
        for mode in MODES {
            let mut h = Harness::new(mode);
            h.batch_put(&PAIRS);
            let expected = PAIRS.iter().fold((0, 0, 0), |(crc, kvs, bytes), (k, v)| {
                let key = h.key(k);
                (
                    crc ^ crate::raw::pair_checksum(&key, v.as_bytes()),
                    kvs + 1,
                    bytes + (key.len() + v.len()) as u64,
                )
            });
            assert_eq!(h.checksum(&[("db", "")]), expected);
        }
    }
}

/// `integration_tests/raw/api_test.go`, which the Go suite runs against a real TiKV.
mod api_test {
    use super::*;

    #[test]
    fn test_reverse_scan() {
        for mode in MODES {
            let mut h = Harness::new(mode);
            for i in 0..10 {
                h.put(&format!("key:{i}"), &format!("value:{i}"));
            }
            // Keys below "key:" come first in reverse: nothing is there.
            assert!(h.reverse_scan("key:", "", 5).is_empty());
            let got = h.reverse_scan("key;", "", 5);
            let expected: Vec<(String, String)> = (5..10)
                .rev()
                .map(|i| (format!("key:{i}"), format!("value:{i}")))
                .collect();
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn test_batch_op() {
        for mode in MODES {
            let mut h = Harness::new(mode);
            h.batch_put(&[("k1", "v1"), ("k2", "v2")]);
            assert_eq!(
                h.batch_get(&["k1", "k2"]),
                kvs(&[("k1", "v1"), ("k2", "v2")])
            );
            h.batch_delete(&["k1", "k2"]);
            assert_eq!(h.get("k1"), None);
            assert_eq!(h.get("k2"), None);
        }
    }

    #[test]
    fn test_cas() {
        for mode in MODES {
            let mut h = Harness::new(mode);
            assert_eq!(h.cas("key", None, "hello world"), (true, None));
            assert_eq!(h.get("key").as_deref(), Some("hello world"));
            let old = Some("hello world".to_owned());
            assert_eq!(h.cas("key", Some("hello"), "world"), (false, old.clone()));
            assert_eq!(h.get("key").as_deref(), Some("hello world"));
            assert_eq!(h.cas("key", Some("hello world"), "world"), (true, old));
            assert_eq!(h.get("key").as_deref(), Some("world"));
        }
    }

    #[test]
    fn test_ttl() {
        for mode in [
            tikv_proto::kvrpcpb::ApiVersion::V1ttl,
            tikv_proto::kvrpcpb::ApiVersion::V2,
        ] {
            let mut h = Harness::new(mode);
            let ttl = 2;
            h.put_ttl("key", "value", ttl);
            h.advance_ms(ttl * 1000 / 2);
            let rest = h.ttl("key");
            assert!(rest.is_some_and(|rest| rest <= ttl / 2), "{rest:?}");
            h.advance_ms(ttl * 1000 / 2);
            assert_eq!(h.get("key"), None);
            assert_eq!(h.ttl("key"), None);
        }
    }

    #[test]
    fn test_delete_range() {
        for mode in MODES {
            let mut h = Harness::new(mode);
            let owned: Vec<(String, String)> = (0..2048)
                .map(|i| (format!("key@{i}"), format!("value@{i}")))
                .collect();
            let pairs: Vec<(&str, &str)> = owned
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            h.batch_put(&pairs);
            h.delete_range("", "");
            for key in ["key@0", "key@1", "key@2"] {
                assert_eq!(h.get(key), None);
            }
        }
    }

    #[test]
    fn test_raw_checksum() {
        for mode in MODES {
            let mut h = Harness::new(mode);
            let prefix = "test_checksum";
            let mut expected = (0, 0, 0);
            let mut owned = Vec::new();
            for i in 0..2048 {
                let (key, value) = (format!("{prefix}key@{i}"), format!("value@{i}"));
                // Go sums the user key; in V2 TiKV sums the stored key, prefix included.
                expected.0 ^= crate::raw::pair_checksum(&h.key(&key), value.as_bytes());
                expected.1 += 1;
                expected.2 += (key.len() + value.len()) as u64;
                if h.v2() {
                    expected.2 += 4;
                }
                owned.push((key, value));
            }
            let pairs: Vec<(&str, &str)> = owned
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            h.batch_put(&pairs);
            assert_eq!(h.checksum(&[("", "")]), expected);
        }
    }

    #[test]
    fn test_empty_value() {
        for mode in MODES {
            let mut h = Harness::new(mode);
            assert_eq!(h.get("key"), None);
            let verify_empty_value = |h: &Harness| {
                assert_eq!(h.get("key").as_deref(), Some(""));
                assert_eq!(h.batch_get(&["key", "key1"]), kvs(&[("key", "")]));
                assert_eq!(h.scan("key", "keyz", 10), kvs(&[("key", "")]));
                assert_eq!(h.reverse_scan("keyz", "key", 10), kvs(&[("key", "")]));
            };
            let verify_not_exist = |h: &Harness| {
                assert_eq!(h.get("key"), None);
                assert!(h.batch_get(&["key", "key1"]).is_empty());
                assert!(h.scan("key", "keyz", 10).is_empty());
                assert!(h.reverse_scan("keyz", "key", 10).is_empty());
            };
            h.put("key", "");
            verify_empty_value(&h);
            h.delete("key");
            verify_not_exist(&h);
            h.batch_put(&[("key", "")]);
            verify_empty_value(&h);
            h.delete("key");
            assert_eq!(h.cas("key", None, ""), (true, None));
            verify_empty_value(&h);
            assert_eq!(h.cas("key", Some(""), "val"), (true, Some(String::new())));
        }
    }
}
