//! The checks that refuse a raw request before it touches data: API versions, V2 key modes,
//! column family names, TTL support and key size. Texts are TiKV's.

use bytes::Bytes;
use tikv_proto::kvrpcpb::{
    ApiVersion, Context, KeyRange, RawBatchGetRequest, RawBatchPutRequest, RawCasRequest,
    RawChecksumRequest, RawDeleteRangeRequest, RawGetKeyTtlRequest, RawGetRequest, RawPutRequest,
    RawScanRequest,
};

use super::Harness;
use crate::admission::AdmissionError;
use crate::raw::{RawError, RawStore};

fn ctx(version: ApiVersion) -> Option<Context> {
    Some(Context {
        api_version: version as i32,
        ..Context::default()
    })
}

fn get(store: &RawStore, version: ApiVersion, key: &'static [u8]) -> String {
    let req = RawGetRequest {
        context: ctx(version),
        key: Bytes::from_static(key),
        cf: String::new(),
    };
    store.raw_get(&req, 0).error
}

fn put(store: &mut RawStore, req: RawPutRequest) -> String {
    store.raw_put(&req, 0).error
}

fn put_request(version: ApiVersion, key: &'static [u8], cf: &str, ttl: u64) -> RawPutRequest {
    RawPutRequest {
        context: ctx(version),
        key: Bytes::from_static(key),
        value: Bytes::from_static(b"v"),
        cf: cf.to_owned(),
        ttl,
        ..RawPutRequest::default()
    }
}

fn scan_abort(store: &RawStore, req: &RawScanRequest) -> Option<String> {
    let kvs = store.raw_scan(req, 0).kvs;
    assert_eq!(kvs.len(), 1, "an error answers with exactly one pair");
    assert!(kvs[0].key.is_empty() && kvs[0].value.is_empty());
    kvs[0].error.as_ref().map(|e| e.abort.clone())
}

#[test]
fn stores_accept_only_their_own_request_versions() {
    use ApiVersion::{V1, V1ttl, V2, V3};
    let accepted = [(V1, V1), (V1ttl, V1), (V2, V2)];
    for storage in [V1, V1ttl, V2, V3] {
        let store = RawStore::new(storage);
        for request in [V1, V1ttl, V2, V3] {
            let err = get(&store, request, b"r\0\0\0k");
            if accepted.contains(&(storage, request)) {
                assert_eq!(err, "", "{storage:?} store, {request:?} request");
            } else {
                let expected = format!(
                    "Api version in request does not match with TiKV storage, cmd: raw_get, \
                     storage: {storage:?}, request: {request:?}"
                );
                assert_eq!(err, expected);
            }
        }
    }
}

#[test]
fn a_request_without_context_is_v1() {
    let store = RawStore::new(ApiVersion::V1);
    let req = RawGetRequest {
        context: None,
        key: Bytes::from_static(b"k"),
        cf: String::new(),
    };
    assert!(store.raw_get(&req, 0).not_found);
    let store = RawStore::new(ApiVersion::V2);
    let err = store.raw_get(&req, 0).error;
    assert!(
        err.ends_with("cmd: raw_get, storage: V2, request: V1"),
        "{err}"
    );
}

#[test]
fn unknown_request_versions_are_refused_by_number() {
    let store = RawStore::new(ApiVersion::V1);
    let req = RawGetRequest {
        context: Some(Context {
            api_version: 42,
            ..Context::default()
        }),
        key: Bytes::from_static(b"k"),
        cf: String::new(),
    };
    assert!(
        store
            .raw_get(&req, 0)
            .error
            .ends_with("storage: V1, request: 42")
    );
}

#[test]
fn version_errors_name_the_command() {
    let mut store = RawStore::new(ApiVersion::V1);
    let err = put(&mut store, put_request(ApiVersion::V2, b"k", "", 0));
    assert!(err.contains("cmd: raw_put,"), "{err}");
    let mut req = put_request(ApiVersion::V2, b"k", "", 0);
    req.for_cas = true;
    assert!(put(&mut store, req).contains("cmd: raw_atomic_store,"));
    let req = RawCasRequest {
        context: ctx(ApiVersion::V2),
        ..RawCasRequest::default()
    };
    let err = store.raw_compare_and_swap(&req, 0).error;
    assert!(err.contains("cmd: raw_compare_and_swap,"), "{err}");
    let req = RawChecksumRequest {
        context: ctx(ApiVersion::V2),
        ..RawChecksumRequest::default()
    };
    assert!(
        store
            .raw_checksum(&req, 0)
            .error
            .contains("cmd: raw_checksum,")
    );
}

#[test]
fn scans_and_batch_gets_carry_errors_in_one_pair() {
    let store = RawStore::new(ApiVersion::V1);
    let req = RawScanRequest {
        context: ctx(ApiVersion::V2),
        limit: 10,
        ..RawScanRequest::default()
    };
    let abort = scan_abort(&store, &req);
    let expected = "Error(ApiVersionNotMatched { cmd: raw_scan, storage_api_version: V1, req_api_version: V2 })";
    assert_eq!(abort.as_deref(), Some(expected));

    let req = RawBatchGetRequest {
        context: ctx(ApiVersion::V1),
        keys: vec![Bytes::from_static(b"k")],
        cf: "nope".to_owned(),
    };
    let pairs = store.raw_batch_get(&req, 0).pairs;
    assert_eq!(pairs.len(), 1);
    let abort = pairs[0].error.as_ref().map(|e| e.abort.as_str());
    assert_eq!(abort, Some(r#"Error(InvalidCf("nope"))"#));
}

#[test]
fn v2_raw_commands_only_touch_raw_keys() {
    let mut store = RawStore::new(ApiVersion::V2);
    assert_eq!(get(&store, ApiVersion::V2, b"r\0\0\x07k"), "");
    // TiKV judges by the first byte only.
    assert_eq!(get(&store, ApiVersion::V2, b"r"), "");
    let err = get(&store, ApiVersion::V2, b"x\0\0\0k");
    let expected = "Key mode mismatched with the request mode, cmd: raw_get, storage: V2, \
                    key: 780000006B";
    assert_eq!(err, expected);
    assert!(get(&store, ApiVersion::V2, b"").ends_with("key: "));
    assert!(get(&store, ApiVersion::V2, b"t_a").ends_with("key: 745F61"));

    // One bad key spoils the batch, and nothing is written.
    let req = RawBatchPutRequest {
        context: ctx(ApiVersion::V2),
        pairs: [&b"r\0\0\0a"[..], &b"m\0"[..]]
            .iter()
            .map(|k| tikv_proto::kvrpcpb::KvPair {
                key: Bytes::copy_from_slice(k),
                ..Default::default()
            })
            .collect(),
        ..RawBatchPutRequest::default()
    };
    let err = store.raw_batch_put(&req, 0).error;
    assert!(
        err.contains("cmd: raw_batch_put, storage: V2, key: 6D00"),
        "{err}"
    );
    assert!(
        store
            .raw_get(
                &RawGetRequest {
                    context: ctx(ApiVersion::V2),
                    key: Bytes::from_static(b"r\0\0\0a"),
                    cf: String::new(),
                },
                0
            )
            .not_found
    );
}

fn v2_scan(start: &'static [u8], end: &'static [u8]) -> RawScanRequest {
    RawScanRequest {
        context: ctx(ApiVersion::V2),
        start_key: Bytes::from_static(start),
        end_key: Bytes::from_static(end),
        limit: 10,
        ..RawScanRequest::default()
    }
}

#[test]
fn v2_ranges_must_stay_in_the_raw_space() {
    let store = RawStore::new(ApiVersion::V2);
    let ok = |req: &RawScanRequest| store.raw_scan(req, 0).kvs.is_empty();
    assert!(ok(&v2_scan(b"r\0\0\0", b"r\0\0\x01")));
    // "s" is the end of the whole raw space.
    assert!(ok(&v2_scan(b"r\0\0\0", b"s")));
    let cases: [(&[u8], &[u8], &str); 4] = [
        (b"r\0\0\0", b"", r#"(Some("72000000"), None)"#),
        (b"r\0\0\0", b"x", r#"(Some("72000000"), Some("78"))"#),
        (b"", b"r", r#"(Some(""), Some("72"))"#),
        (
            b"x\0\0\0",
            b"x\0\0\x01",
            r#"(Some("78000000"), Some("78000001"))"#,
        ),
    ];
    for (start, end, range) in cases {
        let req = v2_scan(start, end);
        let expected = format!(
            "Error(InvalidKeyRangeMode {{ cmd: raw_scan, storage_api_version: V2, range: {range} }})"
        );
        assert_eq!(scan_abort(&store, &req).as_deref(), Some(expected.as_str()));
    }

    let mut store = RawStore::new(ApiVersion::V2);
    let req = RawDeleteRangeRequest {
        context: ctx(ApiVersion::V2),
        start_key: Bytes::from_static(b"r\0\0\0"),
        end_key: Bytes::new(),
        cf: String::new(),
    };
    let err = store.raw_delete_range(&req, 0).error;
    assert_eq!(
        err,
        "Key mode mismatched with the request mode, cmd: raw_delete_range, storage: V2, \
         range: (Some(\"72000000\"), Some(\"\"))"
    );
    let req = RawChecksumRequest {
        context: ctx(ApiVersion::V2),
        algorithm: 0,
        ranges: vec![KeyRange {
            start_key: Bytes::from_static(b"x"),
            end_key: Bytes::from_static(b"y"),
        }],
    };
    assert!(
        store
            .raw_checksum(&req, 0)
            .error
            .contains("cmd: raw_checksum, storage: V2")
    );
}

#[test]
fn column_family_names_are_checked() {
    for version in [ApiVersion::V1, ApiVersion::V1ttl] {
        let mut store = RawStore::new(version);
        for cf in ["", "default", "lock", "write"] {
            assert_eq!(
                put(&mut store, put_request(ApiVersion::V1, b"k", cf, 0)),
                ""
            );
        }
        let err = put(
            &mut store,
            put_request(ApiVersion::V1, b"k", "CF_DEFAULT", 0),
        );
        assert_eq!(err, "invalid cf name: CF_DEFAULT");
        let req = RawScanRequest {
            context: ctx(ApiVersion::V1),
            cf: "raft".to_owned(),
            limit: 1,
            ..RawScanRequest::default()
        };
        assert_eq!(
            scan_abort(&store, &req).as_deref(),
            Some(r#"Error(InvalidCf("raft"))"#)
        );
    }
    let mut store = RawStore::new(ApiVersion::V2);
    assert_eq!(
        put(&mut store, put_request(ApiVersion::V2, b"rk", "", 0)),
        ""
    );
    let err = put(&mut store, put_request(ApiVersion::V2, b"rk", "default", 0));
    assert_eq!(err, "cf is deprecated in API V2, cf name: default");
}

#[test]
fn ttl_needs_a_ttl_store() {
    let mut store = RawStore::new(ApiVersion::V1);
    let err = put(&mut store, put_request(ApiVersion::V1, b"k", "", 1));
    assert_eq!(err, "ttl is not enabled, but get put request with ttl");
    let mut req = put_request(ApiVersion::V1, b"k", "", 1);
    req.for_cas = true;
    assert_eq!(
        put(&mut store, req),
        "ttl is not enabled, but get put request with ttl"
    );
    let req = RawCasRequest {
        context: ctx(ApiVersion::V1),
        key: Bytes::from_static(b"k"),
        previous_not_exist: true,
        ttl: 1,
        ..RawCasRequest::default()
    };
    let resp = store.raw_compare_and_swap(&req, 0);
    assert_eq!(
        resp.error,
        "ttl is not enabled, but get put request with ttl"
    );
    assert!(!resp.succeed);
    let req = RawBatchPutRequest {
        context: ctx(ApiVersion::V1),
        pairs: vec![Default::default(), Default::default()],
        ttls: vec![0, 3],
        ..RawBatchPutRequest::default()
    };
    assert_eq!(
        store.raw_batch_put(&req, 0).error,
        "ttl is not enabled, but get put request with ttl"
    );
    let req = RawGetKeyTtlRequest {
        context: ctx(ApiVersion::V1),
        key: Bytes::from_static(b"k"),
        cf: String::new(),
    };
    assert_eq!(
        store.raw_get_key_ttl(&req, 0).error,
        "get ttl on non-ttl store"
    );
    // Nothing was written by any of the refused requests.
    assert!(get(&store, ApiVersion::V1, b"k").is_empty());
    let got = store.raw_get(
        &RawGetRequest {
            context: ctx(ApiVersion::V1),
            key: Bytes::from_static(b"k"),
            cf: String::new(),
        },
        0,
    );
    assert!(got.not_found);
}

#[test]
fn v1_store_zips_short_all_zero_ttls_like_tikv() {
    let mut h = Harness::new(ApiVersion::V1);
    let req = RawBatchPutRequest {
        context: h.ctx(),
        pairs: vec![h.pair("a", "1"), h.pair("b", "2"), h.pair("c", "3")],
        ttls: vec![0, 0],
        ..RawBatchPutRequest::default()
    };
    assert_eq!(h.store.raw_batch_put(&req, h.now_ms).error, "");
    assert_eq!(h.scan_keys("", "", 10), ["a", "b"]);
}

#[test]
fn writes_refuse_keys_over_the_size_limit() {
    let mut h = Harness::new(ApiVersion::V1);
    h.store = RawStore::new(ApiVersion::V1).with_max_key_size(4);
    assert_eq!(h.store.max_key_size(), 4);
    assert_eq!(h.try_put_ttl("abcd", "v", 0), "");
    assert_eq!(
        h.try_put_ttl("abcde", "v", 0),
        "max key size exceeded, size: 5, limit: 4"
    );
    assert_eq!(
        h.try_delete_range("a", "abcdef"),
        "max key size exceeded, size: 6, limit: 4"
    );
    let del = super::delete_request(&h, "abcde", false);
    assert_eq!(
        h.store.raw_delete(&del, 0).error,
        "max key size exceeded, size: 5, limit: 4"
    );
    // The atomic (for_cas) path does not check key size, as in TiKV.
    let mut req = put_request(ApiVersion::V1, b"abcdefgh", "", 0);
    req.for_cas = true;
    assert_eq!(put(&mut h.store, req), "");
    assert_eq!(h.get("abcdefgh").as_deref(), Some("v"));
    assert_eq!(
        RawStore::new(ApiVersion::V1).max_key_size(),
        crate::raw::DEFAULT_MAX_KEY_SIZE
    );
}

#[test]
fn errors_display_tikv_texts() {
    let err = RawError::Admission(AdmissionError::KeyTooLarge {
        size: 9000,
        limit: 8192,
    });
    assert_eq!(
        err.to_string(),
        "max key size exceeded, size: 9000, limit: 8192"
    );
    assert_eq!(
        err.key_error().abort,
        "Error(KeyTooLarge { size: 9000, limit: 8192 })"
    );
    assert_eq!(RawError::InvalidKeyRanges.to_string(), "Invalid KeyRanges");
    let err = RawError::Admission(AdmissionError::InvalidKeyMode {
        cmd: crate::raw::RawCommand::Get.into(),
        storage_api_version: ApiVersion::V2,
        key: "78".to_owned(),
    });
    assert_eq!(
        err.key_error().abort,
        r#"Error(InvalidKeyMode { cmd: raw_get, storage_api_version: V2, key: "78" })"#
    );
}
