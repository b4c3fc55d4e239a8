//! TiKV's raw semantics, case by case: TTL, scans, batch forms, delete range, CAS, checksum
//! and column families.

use bytes::Bytes;
use tikv_proto::kvrpcpb::{
    ApiVersion, KeyRange, RawBatchPutRequest, RawBatchScanRequest, RawChecksumRequest,
    RawPutRequest,
};

use super::{Harness, MODES, ScanArgs, kvs};
use crate::raw::{ColumnFamily, crc64_checksum, pair_checksum};

/// The modes in which raw requests may name a column family.
pub(super) const CF_MODES: [ApiVersion; 2] = [ApiVersion::V1, ApiVersion::V1ttl];
/// The modes that keep TTLs.
const TTL_MODES: [ApiVersion; 2] = [ApiVersion::V1ttl, ApiVersion::V2];

#[test]
fn ttl_expires_exactly_at_put_time_plus_ttl() {
    for mode in TTL_MODES {
        let mut h = Harness::new(mode);
        h.put_ttl("k", "v", 3);
        h.advance_ms(2_999);
        assert_eq!(h.get("k").as_deref(), Some("v"));
        h.advance_ms(1);
        assert_eq!(h.get("k"), None);
        // Time going on does not bring it back, and a fresh put does.
        h.advance_ms(10_000);
        assert_eq!(h.get("k"), None);
        h.put("k", "again");
        assert_eq!(h.get("k").as_deref(), Some("again"));
    }
}

#[test]
fn expired_keys_are_invisible_to_every_read() {
    for mode in TTL_MODES {
        let mut h = Harness::new(mode);
        h.put("a", "1");
        h.put_ttl("b", "2", 1);
        h.put("c", "3");
        let all = kvs(&[("a", "1"), ("b", "2"), ("c", "3")]);
        assert_eq!(h.scan("", "", 10), all);
        h.advance_ms(1_000);
        let live = kvs(&[("a", "1"), ("c", "3")]);
        assert_eq!(h.scan("", "", 10), live);
        assert_eq!(h.reverse_scan("z", "", 10), kvs(&[("c", "3"), ("a", "1")]));
        assert_eq!(h.batch_get(&["a", "b", "c"]), live);
        assert_eq!(h.batch_scan(&[("", "")], 10, false), live);
        // Limits count only live keys.
        assert_eq!(h.scan("", "", 2), live);
        let sum = pair_checksum(&h.key("a"), b"1") ^ pair_checksum(&h.key("c"), b"3");
        assert_eq!(h.checksum(&[("", "")]).0, sum);
        assert_eq!(h.checksum(&[("", "")]).1, 2);
        // CAS sees an expired key as absent.
        assert_eq!(h.cas("b", Some("2"), "x"), (false, None));
        assert_eq!(h.cas("b", None, "x"), (true, None));
        assert_eq!(h.get("b").as_deref(), Some("x"));
        assert_eq!(h.store.live_key_count(ColumnFamily::Default, h.now_ms), 3);
    }
}

#[test]
fn overwriting_without_ttl_clears_the_ttl() {
    for mode in TTL_MODES {
        let mut h = Harness::new(mode);
        h.put_ttl("k", "v", 1);
        h.put("k", "w");
        h.advance_ms(5_000);
        assert_eq!(h.get("k").as_deref(), Some("w"));
        assert_eq!(h.ttl("k"), Some(0));
    }
}

#[test]
fn get_key_ttl_reports_remaining_seconds_rounded_up() {
    for mode in TTL_MODES {
        let mut h = Harness::new(mode);
        assert_eq!(h.ttl("missing"), None);
        h.put("forever", "v");
        assert_eq!(h.ttl("forever"), Some(0));
        h.put_ttl("k", "v", 10);
        assert_eq!(h.ttl("k"), Some(10));
        h.advance_ms(1);
        assert_eq!(h.ttl("k"), Some(10));
        h.advance_ms(999);
        assert_eq!(h.ttl("k"), Some(9));
        h.advance_ms(8_999);
        // One millisecond left still reads as one second, never as "no TTL".
        assert_eq!(h.ttl("k"), Some(1));
        h.advance_ms(1);
        assert_eq!(h.ttl("k"), None);
        h.delete("forever");
        assert_eq!(h.ttl("forever"), None);
    }
}

#[test]
fn huge_ttl_saturates_instead_of_overflowing() {
    let mut h = Harness::new(ApiVersion::V1ttl);
    h.put_ttl("k", "v", u64::MAX);
    h.advance_ms(1_000_000_000);
    assert_eq!(h.get("k").as_deref(), Some("v"));
    assert!(h.ttl("k").is_some_and(|ttl| ttl > 1_000_000));
}

fn batch_put_request(h: &Harness, pairs: &[(&str, &str)], ttls: Vec<u64>) -> RawBatchPutRequest {
    RawBatchPutRequest {
        context: h.ctx(),
        pairs: pairs.iter().map(|(k, v)| h.pair(k, v)).collect(),
        ttls,
        ..RawBatchPutRequest::default()
    }
}

#[test]
fn batch_put_ttls_one_for_all_or_one_per_key() {
    for mode in TTL_MODES {
        let mut h = Harness::new(mode);
        let pairs = [("a", "1"), ("b", "2"), ("c", "3")];
        let req = batch_put_request(&h, &pairs, vec![5]);
        assert_eq!(h.store.raw_batch_put(&req, h.now_ms).error, "");
        assert_eq!([h.ttl("a"), h.ttl("b"), h.ttl("c")], [Some(5); 3]);

        let req = batch_put_request(&h, &pairs, vec![1, 0, 3]);
        assert_eq!(h.store.raw_batch_put(&req, h.now_ms).error, "");
        assert_eq!(
            [h.ttl("a"), h.ttl("b"), h.ttl("c")],
            [Some(1), Some(0), Some(3)]
        );
        h.advance_ms(1_000);
        assert_eq!(h.scan_keys("", "", 10), ["b", "c"]);

        let req = batch_put_request(&h, &pairs, vec![1, 2]);
        let err = h.store.raw_batch_put(&req, h.now_ms).error;
        assert_eq!(
            err,
            "The length of ttls does not equal to the length of pairs"
        );
        assert_eq!(h.get("a"), None, "a refused batch writes nothing");
    }
}

#[test]
#[allow(deprecated)] // The point is to set the deprecated field.
fn batch_put_ignores_the_legacy_ttl_field() {
    let mut h = Harness::new(ApiVersion::V1ttl);
    let mut req = batch_put_request(&h, &[("a", "1")], Vec::new());
    req.ttl = 1;
    assert_eq!(h.store.raw_batch_put(&req, h.now_ms).error, "");
    assert_eq!(h.ttl("a"), Some(0));
}

#[test]
fn for_cas_writes_behave_like_plain_writes() {
    for mode in MODES {
        let mut h = Harness::new(mode);
        let req = RawPutRequest {
            context: h.ctx(),
            key: h.key("a"),
            value: Bytes::from_static(b"1"),
            for_cas: true,
            ..RawPutRequest::default()
        };
        assert_eq!(h.store.raw_put(&req, h.now_ms).error, "");
        let mut req = batch_put_request(&h, &[("b", "2"), ("c", "3")], Vec::new());
        req.for_cas = true;
        assert_eq!(h.store.raw_batch_put(&req, h.now_ms).error, "");
        assert_eq!(
            h.scan("", "", 10),
            kvs(&[("a", "1"), ("b", "2"), ("c", "3")])
        );
        let req = super::delete_request(&h, "a", true);
        assert_eq!(h.store.raw_delete(&req, h.now_ms).error, "");
        let req = tikv_proto::kvrpcpb::RawBatchDeleteRequest {
            context: h.ctx(),
            keys: vec![h.key("b")],
            for_cas: true,
            ..Default::default()
        };
        assert_eq!(h.store.raw_batch_delete(&req, h.now_ms).error, "");
        assert_eq!(h.scan_keys("", "", 10), ["c"]);
    }
}

#[test]
fn batch_get_keeps_request_order_and_skips_missing_keys() {
    for mode in MODES {
        let mut h = Harness::new(mode);
        h.batch_put(&[("a", "1"), ("c", "3"), ("b", "2")]);
        let got = h.batch_get(&["c", "x", "a", "c"]);
        assert_eq!(got, kvs(&[("c", "3"), ("a", "1"), ("c", "3")]));
        assert!(h.batch_get(&[]).is_empty());
    }
}

fn fill_abcde(h: &mut Harness) {
    for key in ["a", "b", "c", "d", "e"] {
        h.put(key, &key.to_uppercase());
    }
}

#[test]
fn reverse_scan_bounds_are_exclusive_above_and_inclusive_below() {
    for mode in MODES {
        let mut h = Harness::new(mode);
        fill_abcde(&mut h);
        assert_eq!(h.reverse_scan("d", "b", 10), kvs(&[("c", "C"), ("b", "B")]));
        assert_eq!(h.reverse_scan("d", "b", 1), kvs(&[("c", "C")]));
        assert_eq!(h.reverse_scan("e\0", "e", 10), kvs(&[("e", "E")]));
        assert_eq!(h.reverse_scan("a", "", 10), kvs(&[]));
        // Empty or inverted ranges yield nothing rather than failing.
        assert_eq!(h.reverse_scan("c", "c", 10), kvs(&[]));
        assert_eq!(h.reverse_scan("b", "d", 10), kvs(&[]));
        assert_eq!(h.reverse_scan("z", "", 0), kvs(&[]));
    }
}

#[test]
fn forward_scan_bounds_are_inclusive_below_and_exclusive_above() {
    for mode in MODES {
        let mut h = Harness::new(mode);
        fill_abcde(&mut h);
        assert_eq!(h.scan("b", "d", 10), kvs(&[("b", "B"), ("c", "C")]));
        assert_eq!(h.scan("b\0", "", 2), kvs(&[("c", "C"), ("d", "D")]));
        assert_eq!(h.scan("c", "c", 10), kvs(&[]));
        assert_eq!(h.scan("d", "b", 10), kvs(&[]));
        assert_eq!(h.scan("", "", 0), kvs(&[]));
    }
}

#[test]
fn key_only_scans_drop_values_in_both_directions() {
    for mode in MODES {
        let mut h = Harness::new(mode);
        fill_abcde(&mut h);
        let got = h.scan_with(ScanArgs::forward("b", "", 2).key_only());
        assert_eq!(got, kvs(&[("b", ""), ("c", "")]));
        let got = h.scan_with(ScanArgs::reverse("z", "d", 10).key_only());
        assert_eq!(got, kvs(&[("e", ""), ("d", "")]));
    }
}

#[test]
fn batch_scan_concatenates_ranges_with_each_limit() {
    for mode in MODES {
        let mut h = Harness::new(mode);
        fill_abcde(&mut h);
        let got = h.batch_scan(&[("a", "c"), ("c", "e"), ("e", "")], 1, false);
        assert_eq!(got, kvs(&[("a", "A"), ("c", "C"), ("e", "E")]));
        let got = h.batch_scan(&[("e", "d"), ("c", "a")], 10, true);
        assert_eq!(got, kvs(&[("d", "D"), ("b", "B"), ("a", "A")]));
        let got = h.batch_scan(&[("a", "e")], 0, false);
        assert!(got.is_empty());
    }
}

#[test]
fn batch_scan_empty_end_runs_to_the_next_start() {
    // V2 refuses empty ends outright, so only the modes without key prefixes get here.
    for mode in CF_MODES {
        let mut h = Harness::new(mode);
        fill_abcde(&mut h);
        let range = |start: &'static [u8]| KeyRange {
            start_key: Bytes::from_static(start),
            end_key: Bytes::new(),
        };
        let req = RawBatchScanRequest {
            context: h.ctx(),
            ranges: vec![range(b"a"), range(b"c"), range(b"d")],
            each_limit: 10,
            ..RawBatchScanRequest::default()
        };
        let got = h.pairs(h.store.raw_batch_scan(&req, h.now_ms).kvs);
        // Unbounded ends would repeat c, d and e; stopping at the next start does not.
        let expected = [("a", "A"), ("b", "B"), ("c", "C"), ("d", "D"), ("e", "E")];
        assert_eq!(got, kvs(&expected));
    }
}

#[test]
fn batch_scan_refuses_ranges_pointing_the_wrong_way() {
    for (mode, reverse, start, end) in [
        (ApiVersion::V1, false, "c", "a"),
        (ApiVersion::V1, false, "c", "c"),
        (ApiVersion::V1, true, "a", "c"),
        (ApiVersion::V2, true, "a", "c"),
    ] {
        let h = Harness::new(mode);
        let req = RawBatchScanRequest {
            context: h.ctx(),
            ranges: vec![KeyRange {
                start_key: h.key(start),
                end_key: h.key(end),
            }],
            each_limit: 10,
            reverse,
            ..RawBatchScanRequest::default()
        };
        let kvs = h.store.raw_batch_scan(&req, h.now_ms).kvs;
        assert_eq!(kvs.len(), 1);
        let abort = kvs[0].error.as_ref().map(|e| e.abort.as_str());
        assert_eq!(abort, Some(r#"Error(Other("Invalid KeyRanges"))"#));
    }
}

#[test]
fn delete_range_removes_exactly_the_half_open_range() {
    for mode in MODES {
        let mut h = Harness::new(mode);
        fill_abcde(&mut h);
        h.delete_range("b", "d");
        assert_eq!(h.scan_keys("", "", 10), ["a", "d", "e"]);
        h.delete_range("d\0", "");
        assert_eq!(h.scan_keys("", "", 10), ["a", "d"]);
        // Deleting where nothing lives is fine.
        h.delete_range("x", "y");
        assert_eq!(h.scan_keys("", "", 10), ["a", "d"]);
    }
}

#[test]
fn delete_range_refuses_empty_and_inverted_ranges() {
    let mut h = Harness::new(ApiVersion::V1);
    fill_abcde(&mut h);
    let err = h.try_delete_range("c", "c");
    assert_eq!(
        err,
        "invalid delete range command, start_key: [99], end_key: [99]"
    );
    let err = h.try_delete_range("d", "b");
    assert_eq!(
        err,
        "invalid delete range command, start_key: [100], end_key: [98]"
    );
    assert_eq!(h.scan_keys("", "", 10).len(), 5);
}

#[test]
fn cas_covers_every_branch() {
    for mode in MODES {
        let mut h = Harness::new(mode);
        // Absent, expected absent: written.
        assert_eq!(h.cas("k", None, "v1"), (true, None));
        assert_eq!(h.get("k").as_deref(), Some("v1"));
        // Present, expected absent: refused, current value returned.
        assert_eq!(h.cas("k", None, "v2"), (false, Some("v1".to_owned())));
        // Present, expected another value: refused.
        assert_eq!(h.cas("k", Some("v0"), "v2"), (false, Some("v1".to_owned())));
        assert_eq!(h.get("k").as_deref(), Some("v1"));
        // Present, expected this value: written.
        assert_eq!(h.cas("k", Some("v1"), "v2"), (true, Some("v1".to_owned())));
        assert_eq!(h.get("k").as_deref(), Some("v2"));
        // Absent, expected a value: refused, absence reported.
        assert_eq!(h.cas("other", Some("v1"), "x"), (false, None));
        assert_eq!(h.get("other"), None);
        // An empty expected value is not absence.
        assert_eq!(h.cas("other", Some(""), "x"), (false, None));

        // Delete, matching: the key goes away.
        let mut req = h.cas_request("k", Some("v2"), "ignored");
        req.delete = true;
        assert_eq!(h.run_cas(&req), (true, Some("v2".to_owned())));
        assert_eq!(h.get("k"), None);
        // Delete, expected absent and absent: succeeds, nothing to remove.
        let mut req = h.cas_request("k", None, "ignored");
        req.delete = true;
        assert_eq!(h.run_cas(&req), (true, None));
        assert_eq!(h.get("k"), None);
        // Delete, not matching: the key stays.
        h.put("k", "v3");
        let mut req = h.cas_request("k", Some("v2"), "ignored");
        req.delete = true;
        assert_eq!(h.run_cas(&req), (false, Some("v3".to_owned())));
        assert_eq!(h.get("k").as_deref(), Some("v3"));
    }
}

#[test]
fn cas_writes_the_ttl_it_carries() {
    for mode in TTL_MODES {
        let mut h = Harness::new(mode);
        let mut req = h.cas_request("k", None, "v");
        req.ttl = 2;
        assert_eq!(h.run_cas(&req), (true, None));
        assert_eq!(h.ttl("k"), Some(2));
        h.advance_ms(2_000);
        assert_eq!(h.get("k"), None);
    }
}

#[test]
fn checksum_of_one_pair_is_the_crc_of_key_then_value() {
    let mut h = Harness::new(ApiVersion::V1);
    h.put("1234", "56789");
    assert_eq!(h.checksum(&[("", "")]), (0x995D_C9BB_DF19_39FA, 1, 9));
    assert_eq!(crc64_checksum(b"123456789"), 0x995D_C9BB_DF19_39FA);
}

#[test]
fn checksum_is_the_xor_of_pair_crcs_over_the_ranges() {
    for mode in MODES {
        let mut h = Harness::new(mode);
        fill_abcde(&mut h);
        let crc = |k: &str| pair_checksum(&h.key(k), k.to_uppercase().as_bytes());
        let width = h.key("a").len() as u64 + 1;
        assert_eq!(h.checksum(&[]), (0, 0, 0));
        assert_eq!(h.checksum(&[("b", "c")]), (crc("b"), 1, width));
        let expected = (crc("a") ^ crc("b") ^ crc("d"), 3, 3 * width);
        assert_eq!(h.checksum(&[("a", "c"), ("d", "e")]), expected);
        // XOR cancels a pair counted twice, while the counts still add up.
        let expected = (crc("a"), 3, 3 * width);
        assert_eq!(h.checksum(&[("a", "b"), ("b", "c"), ("b", "c")]), expected);
    }
}

#[test]
fn checksum_reads_only_the_default_column_family() {
    for mode in CF_MODES {
        let mut h = Harness::new(mode);
        h.put("a", "1");
        h.cf = "write".to_owned();
        h.put("b", "2");
        assert_eq!(h.checksum(&[("", "")]), (pair_checksum(b"a", b"1"), 1, 2));
    }
}

#[test]
fn checksum_refuses_unknown_algorithms() {
    let h = Harness::new(ApiVersion::V1);
    let req = RawChecksumRequest {
        context: h.ctx(),
        algorithm: 7,
        ranges: Vec::new(),
    };
    let resp = h.store.raw_checksum(&req, h.now_ms);
    assert_eq!(resp.error, "unknown checksum algorithm 7");
    assert_eq!((resp.checksum, resp.total_kvs, resp.total_bytes), (0, 0, 0));
}

#[test]
fn column_families_are_separate_key_spaces() {
    for mode in CF_MODES {
        let mut h = Harness::new(mode);
        for cf in ["", "lock", "write"] {
            h.cf = cf.to_owned();
            h.put("k", &format!("in {cf:?}"));
        }
        h.cf = "default".to_owned();
        assert_eq!(
            h.get("k").as_deref(),
            Some(r#"in """#),
            "default is the empty name"
        );
        h.delete_range("", "");
        assert_eq!(h.get("k"), None);
        h.cf = "lock".to_owned();
        assert_eq!(h.get("k").as_deref(), Some(r#"in "lock""#));
        assert_eq!(h.scan_keys("", "", 10), ["k"]);
        h.cf = "write".to_owned();
        assert_eq!(
            h.cas("k", Some(r#"in "write""#), "w"),
            (true, Some(r#"in "write""#.into()))
        );
        h.cf = "lock".to_owned();
        assert_eq!(h.get("k").as_deref(), Some(r#"in "lock""#));
        let counts = [
            ColumnFamily::Default,
            ColumnFamily::Lock,
            ColumnFamily::Write,
        ]
        .map(|cf| h.store.live_key_count(cf, h.now_ms));
        assert_eq!(counts, [0, 1, 1]);
    }
}
