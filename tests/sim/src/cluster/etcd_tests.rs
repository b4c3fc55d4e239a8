use super::*;
use crate::cluster::ClusterConfig;

fn cluster() -> Cluster {
    Cluster::new(ClusterConfig::default()).unwrap()
}

fn put(cluster: &mut Cluster, key: &str, value: &str) -> PutResponse {
    cluster
        .handle_etcd_put(&PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            prev_kv: true,
            ..Default::default()
        })
        .unwrap()
}

fn range(cluster: &Cluster, key: &[u8], end: &[u8]) -> RangeRequest {
    let _ = cluster;
    RangeRequest {
        key: Bytes::copy_from_slice(key),
        range_end: Bytes::copy_from_slice(end),
        ..Default::default()
    }
}

fn keys(response: &RangeResponse) -> Vec<&[u8]> {
    response.kvs.iter().map(|kv| &kv.key[..]).collect()
}

/// Follows etcd's `mvcc.store`: a fresh store is at revision 1, every put moves it by one,
/// and the key's create revision, mod revision and version are kept as
/// `applierV3backend.Put` writes them.
#[test]
fn puts_move_the_revision_and_the_key_version() {
    let mut cluster = cluster();
    let first = put(&mut cluster, "/tidb/store/gcworker/saved_safe_point", "100");
    assert_eq!(first.header.as_ref().unwrap().revision, 2);
    assert_eq!(
        first.header.as_ref().unwrap().cluster_id,
        cluster.cluster_id()
    );
    assert_eq!(first.prev_kv, None);
    let second = put(&mut cluster, "/tidb/store/gcworker/saved_safe_point", "200");
    let previous = second.prev_kv.unwrap();
    assert_eq!(&previous.value[..], b"100");
    assert_eq!(
        (
            previous.create_revision,
            previous.mod_revision,
            previous.version
        ),
        (2, 2, 1)
    );
    let got = cluster
        .handle_etcd_range(&range(
            &cluster,
            b"/tidb/store/gcworker/saved_safe_point",
            b"",
        ))
        .unwrap();
    assert_eq!(got.count, 1);
    let kv = &got.kvs[0];
    assert_eq!(&kv.value[..], b"200");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    assert_eq!(got.header.unwrap().revision, 3);
}

/// Follows etcd's `applierV3backend.Range`: an empty end names one key, an end of "\0"
/// every key from the start on, "\0".."\0" everything; `count` counts matches before the
/// limit, `more` says the limit cut some.
#[test]
fn range_bounds_limit_and_count() {
    let mut cluster = cluster();
    for key in ["a", "b", "c", "d"] {
        put(&mut cluster, key, key);
    }
    let one = cluster
        .handle_etcd_range(&range(&cluster, b"b", b""))
        .unwrap();
    assert_eq!(keys(&one), [b"b"]);
    let missing = cluster
        .handle_etcd_range(&range(&cluster, b"bb", b""))
        .unwrap();
    assert_eq!((missing.kvs.len(), missing.count), (0, 0));
    let span = cluster
        .handle_etcd_range(&range(&cluster, b"b", b"d"))
        .unwrap();
    assert_eq!(keys(&span), [b"b", b"c"]);
    let from = cluster
        .handle_etcd_range(&range(&cluster, b"c", b"\0"))
        .unwrap();
    assert_eq!(keys(&from), [b"c", b"d"]);
    let all = cluster
        .handle_etcd_range(&range(&cluster, b"\0", b"\0"))
        .unwrap();
    assert_eq!(all.count, 4);
    let backwards = cluster
        .handle_etcd_range(&range(&cluster, b"d", b"a"))
        .unwrap();
    assert!(backwards.kvs.is_empty());
    let mut limited = range(&cluster, b"a", b"z");
    limited.limit = 3;
    let limited = cluster.handle_etcd_range(&limited).unwrap();
    assert_eq!(
        (limited.kvs.len(), limited.count, limited.more),
        (3, 4, true)
    );
    let mut descending = range(&cluster, b"a", b"z");
    descending.sort_order = range_request::SortOrder::Descend as i32;
    descending.keys_only = true;
    let descending = cluster.handle_etcd_range(&descending).unwrap();
    assert_eq!(keys(&descending), [b"d", b"c", b"b", b"a"]);
    assert!(descending.kvs.iter().all(|kv| kv.value.is_empty()));
    let mut count_only = range(&cluster, b"a", b"z");
    count_only.count_only = true;
    let count_only = cluster.handle_etcd_range(&count_only).unwrap();
    assert_eq!((count_only.kvs.len(), count_only.count), (0, 4));
    let mut recent = range(&cluster, b"a", b"z");
    recent.min_mod_revision = 4;
    assert_eq!(
        keys(&cluster.handle_etcd_range(&recent).unwrap()),
        [b"c", b"d"]
    );
}

/// Follows etcd's `mvcc.store` reads at a past revision (`kvstore_txn.rangeKeys`): what a
/// key held then, deleted keys included; a revision not reached yet is `ErrFutureRev`.
#[test]
fn reads_at_past_revisions_and_deletes() {
    let mut cluster = cluster();
    put(&mut cluster, "k", "one"); // revision 2
    put(&mut cluster, "k", "two"); // revision 3
    let deleted = cluster.handle_etcd_delete_range(&DeleteRangeRequest {
        key: Bytes::from_static(b"k"),
        prev_kv: true,
        ..Default::default()
    }); // revision 4
    assert_eq!(deleted.deleted, 1);
    assert_eq!(&deleted.prev_kvs[0].value[..], b"two");
    assert_eq!(deleted.header.unwrap().revision, 4);
    let nothing = cluster.handle_etcd_delete_range(&DeleteRangeRequest {
        key: Bytes::from_static(b"k"),
        ..Default::default()
    });
    assert_eq!((nothing.deleted, nothing.header.unwrap().revision), (0, 4));
    let mut at = range(&cluster, b"k", b"");
    assert!(cluster.handle_etcd_range(&at).unwrap().kvs.is_empty());
    at.revision = 2;
    assert_eq!(
        &cluster.handle_etcd_range(&at).unwrap().kvs[0].value[..],
        b"one"
    );
    at.revision = 3;
    assert_eq!(
        &cluster.handle_etcd_range(&at).unwrap().kvs[0].value[..],
        b"two"
    );
    at.revision = 5;
    let err = cluster.handle_etcd_range(&at).unwrap_err();
    assert_eq!(err, EtcdError::FutureRevision);
    assert_eq!(err.to_status().code, Code::OutOfRange);
    // Recreated, the key starts a new life: version 1, a new create revision.
    put(&mut cluster, "k", "three");
    let kv = cluster
        .handle_etcd_range(&range(&cluster, b"k", b""))
        .unwrap()
        .kvs[0]
        .clone();
    assert_eq!((kv.create_revision, kv.version), (5, 1));
}

/// Follows etcd's `applierV3backend.Put` checks (`ErrGRPCEmptyKey`, `ErrGRPCKeyNotFound`,
/// `ErrGRPCValueProvided`, `ErrGRPCLeaseNotFound`): refused puts leave the revision alone.
#[test]
fn put_refusals() {
    let mut cluster = cluster();
    let refuse =
        |cluster: &mut Cluster, req: PutRequest| cluster.handle_etcd_put(&req).unwrap_err();
    assert_eq!(
        refuse(&mut cluster, PutRequest::default()),
        EtcdError::EmptyKey
    );
    let ignore_value = PutRequest {
        key: Bytes::from_static(b"k"),
        ignore_value: true,
        ..Default::default()
    };
    assert_eq!(
        refuse(&mut cluster, ignore_value.clone()),
        EtcdError::KeyNotFound
    );
    let leased = PutRequest {
        key: Bytes::from_static(b"k"),
        lease: 7,
        ..Default::default()
    };
    let err = refuse(&mut cluster, leased);
    assert_eq!(err.to_status().code, Code::NotFound);
    put(&mut cluster, "k", "v");
    let with_value = PutRequest {
        value: Bytes::from_static(b"x"),
        ..ignore_value.clone()
    };
    assert_eq!(refuse(&mut cluster, with_value), EtcdError::ValueProvided);
    // ignore_value on an existing key keeps its value and still counts as a write.
    let kept = cluster.handle_etcd_put(&ignore_value).unwrap();
    assert_eq!(kept.header.unwrap().revision, 3);
    let kv = cluster
        .handle_etcd_range(&range(&cluster, b"k", b""))
        .unwrap()
        .kvs[0]
        .clone();
    assert_eq!((&kv.value[..], kv.version), (&b"v"[..], 2));
}
