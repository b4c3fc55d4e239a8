//! Raw KV checks with no client-go test counterpart (the split tests port `tikv/split_region.go`'s
//! behaviour, which client-go tests only against a real cluster).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use tikv_core::{CasOutcome, ColumnFamily, Error, KeyTtl, RawClient};
use tikv_core::{MAX_RAW_SCAN_LIMIT, RAW_BATCH_PAIR_COUNT, RAW_BATCH_PUT_SIZE};
use tikv_proto::errorpb;
use tikv_proto::status::{Code, Status};
use tikv_sim::faults::{FaultAction, FaultRule};

use super::{Api, Env, TestCluster, b, crc64_ecma, go_range, ok, start};

/// Asserts that the cluster holds exactly `model` (through get, batch get and scan).
async fn assert_matches_model(raw: &RawClient, model: &BTreeMap<Bytes, Bytes>, round: usize) {
    let scanned = ok("scan", raw.scan::<[u8]>(.., MAX_RAW_SCAN_LIMIT).await);
    let scanned: BTreeMap<Bytes, Bytes> = scanned.into_iter().map(|p| (p.key, p.value)).collect();
    assert_eq!(&scanned, model, "round {round}: scan");
    let reversed = ok(
        "reverse scan",
        raw.reverse_scan(.."z", MAX_RAW_SCAN_LIMIT).await,
    );
    let reversed: Vec<(Bytes, Bytes)> = reversed.into_iter().map(|p| (p.key, p.value)).collect();
    let expected: Vec<(Bytes, Bytes)> = model
        .iter()
        .rev()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(reversed, expected, "round {round}: reverse scan");
    // Small limits stop inside a region and resume at the next one.
    for limit in [1, 9, 33] {
        let page = ok("scan", raw.scan("k010".."k090", limit).await);
        let expected: Vec<&Bytes> = model
            .range(b("k010")..b("k090"))
            .map(|(k, _)| k)
            .take(limit as usize)
            .collect();
        let keys: Vec<&Bytes> = page.iter().map(|p| &p.key).collect();
        assert_eq!(keys, expected, "round {round}: scan limit {limit}");
    }
    let keys: Vec<Bytes> = model.keys().cloned().collect();
    let values = ok("batch get", raw.batch_get(keys).await);
    let expected: Vec<Option<Bytes>> = model.values().cloned().map(Some).collect();
    assert_eq!(values, expected, "round {round}: batch get");
    for (key, value) in model.iter().step_by(7) {
        let got = ok("get", raw.get(key.clone()).await);
        assert_eq!(got.as_ref(), Some(value), "round {round}: get {key:?}");
    }
}

/// A compare-and-swap outcome, for comparisons.
fn cas_outcome(previous: Option<Bytes>, swapped: bool) -> CasOutcome {
    CasOutcome { previous, swapped }
}

/// Every acknowledged write (put, batch put, delete, batch delete, delete range) stays
/// readable (get, batch get, scan, reverse scan, limited scans) while regions split and
/// merge and leaders move between operations, under V1 and V2.
pub async fn acknowledged_writes_survive_splits_and_leader_moves<E: Env>(env: &E) {
    for api in [Api::V1, Api::V2] {
        let tc = start(env, api).await;
        let raw = tc.raw();
        let mut model = BTreeMap::new();
        for round in 0..8usize {
            // Writes of every kind, overlapping earlier rounds' keys.
            let single = b(format!("k{:03}", round * 13 % 100));
            let value = b(format!("single-{round}"));
            ok("put", raw.put(single.clone(), value.clone()).await);
            model.insert(single, value);
            let batch: Vec<(Bytes, Bytes)> = (0..40)
                .map(|i| {
                    let key = b(format!("k{:03}", (round * 11 + i * 3) % 100));
                    (key, b(format!("batch-{round}-{i}")))
                })
                .collect();
            ok("batch put", raw.batch_put(batch.clone()).await);
            model.extend(batch);
            let gone = b(format!("k{:03}", (round * 29 + 5) % 100));
            ok("delete", raw.delete(gone.clone()).await);
            model.remove(&gone);
            let gone: Vec<Bytes> = (0..5)
                .map(|i| b(format!("k{:03}", (round * 17 + i * 19) % 100)))
                .collect();
            ok("batch delete", raw.batch_delete(gone.clone()).await);
            for key in &gone {
                model.remove(key);
            }
            if round % 3 == 2 {
                let (start, end) = (
                    b(format!("k{:03}", round * 9)),
                    b(format!("k{:03}", round * 9 + 4)),
                );
                ok(
                    "delete range",
                    raw.delete_range(start.clone()..end.clone()).await,
                );
                model.retain(|key, _| !(start <= *key && *key < end));
            }

            // Then the cluster changes under the client's cached view.
            let split = format!("k{:03}", (round * 37 + 7) % 100);
            tc.split(&[split.as_bytes()]);
            if round % 4 == 3 {
                tc.merge_first_two();
            }
            tc.rotate_leaders();
            assert_matches_model(&raw, &model, round).await;
        }
        assert!(
            tc.region_count() >= 6,
            "{api:?}: {} regions",
            tc.region_count()
        );
    }
}

/// Compare-and-swap is refused outside atomic mode (nothing written); in atomic mode it
/// swaps only on a matching expectation, and atomic puts and deletes interleave with it.
pub async fn compare_and_swap_needs_atomic_mode<E: Env>(env: &E) {
    for api in [Api::V1, Api::V2] {
        let tc = start(env, api).await;
        let raw = tc.raw();
        let refused = raw.compare_and_swap("cas", None, "v1").await;
        assert!(
            matches!(refused, Err(Error::InvalidArgument(_))),
            "{refused:?}"
        );
        assert_eq!(ok("get", raw.get("cas").await), None);

        let atomic = raw.with_atomic_for_cas(true);
        let swap = ok("cas", atomic.compare_and_swap("cas", None, "v1").await);
        assert_eq!(swap, cas_outcome(None, true));
        let swap = ok("cas", atomic.compare_and_swap("cas", None, "v2").await);
        assert_eq!(swap, cas_outcome(Some(b("v1")), false));
        let swap = ok(
            "cas",
            atomic.compare_and_swap("cas", Some(b("v0")), "v2").await,
        );
        assert_eq!(swap, cas_outcome(Some(b("v1")), false));
        assert_eq!(ok("get", raw.get("cas").await), Some(b("v1")));

        ok("atomic put", atomic.put("cas", "v3").await);
        let swap = ok(
            "cas",
            atomic.compare_and_swap("cas", Some(b("v3")), "v4").await,
        );
        assert_eq!(swap, cas_outcome(Some(b("v3")), true));
        ok("atomic delete", atomic.delete("cas").await);
        let swap = ok("cas", atomic.compare_and_swap("cas", None, "v5").await);
        assert_eq!(swap, cas_outcome(None, true), "{api:?}");
        ok(
            "atomic batch put",
            atomic.batch_put([("c1", "x"), ("c2", "y")]).await,
        );
        ok("atomic batch delete", atomic.batch_delete(["c1"]).await);
        let values = ok("batch get", raw.batch_get(["c1", "c2", "cas"]).await);
        assert_eq!(values, [None, Some(b("y")), Some(b("v5"))]);
    }
}

/// TTLs under V1TTL: `get_key_ttl` tells a key without TTL ([`KeyTtl::Forever`]) from one
/// with time left and from a missing key (`None`); batch puts carry one TTL per pair; a TTL
/// under a second lasts a whole second; a zero TTL is refused; an expired key disappears.
/// V1 refuses TTLs.
pub async fn ttl_and_get_key_ttl<E: Env>(env: &E) {
    let secs = Duration::from_secs;
    let v1 = start(env, Api::V1).await;
    let refused = v1.raw().put_with_ttl("k", "v", secs(10)).await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "{refused:?}"
    );
    let refused = v1.raw().batch_put_with_ttl([("k", "v", secs(10))]).await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "{refused:?}"
    );
    assert!(v1.raw().get_key_ttl("k").await.is_err());

    let tc = start(env, Api::V1Ttl).await;
    let raw = tc.raw();
    ok("put", raw.put("forever", "v").await);
    ok(
        "put with ttl",
        raw.put_with_ttl("long", "v", secs(100)).await,
    );
    ok(
        "put with ttl",
        raw.put_with_ttl("short", "v", secs(1)).await,
    );
    let tiny = Duration::from_millis(300);
    ok("put with ttl", raw.put_with_ttl("tiny", "v", tiny).await);
    ok("batch put", raw.batch_put([("b1", "v")]).await);
    ok(
        "batch put with ttl",
        raw.batch_put_with_ttl([("b2", "v", secs(1)), ("b3", "v", secs(50))])
            .await,
    );
    for zero in [
        raw.put_with_ttl("z", "v", Duration::ZERO).await,
        raw.batch_put_with_ttl([("z", "v", secs(1)), ("z2", "v", Duration::ZERO)])
            .await,
    ] {
        assert!(matches!(zero, Err(Error::InvalidArgument(_))), "{zero:?}");
    }
    assert_eq!(
        ok("get", raw.get("z").await),
        None,
        "a refused batch writes nothing"
    );

    let raw = &raw;
    let ttl = |key: &'static str| async move { ok("ttl", raw.get_key_ttl(key).await) };
    let remaining = |key: &'static str| async move {
        match ttl(key).await {
            Some(KeyTtl::Remaining(left)) => left,
            other => panic!("{key}: {other:?}"),
        }
    };
    assert_eq!(ttl("forever").await, Some(KeyTtl::Forever));
    let long = remaining("long").await;
    assert!((secs(99)..=secs(100)).contains(&long), "{long:?}");
    assert_eq!(remaining("short").await, secs(1));
    assert_eq!(remaining("tiny").await, secs(1), "rounded up to a second");
    assert_eq!(ttl("b1").await, Some(KeyTtl::Forever));
    let b3 = remaining("b3").await;
    assert!((secs(49)..=secs(50)).contains(&b3), "{b3:?}");
    assert_eq!(ttl("missing").await, None);

    env.sleep(Duration::from_millis(1_100)).await;
    for gone in ["short", "tiny", "b2"] {
        assert_eq!(ok("get", raw.get(gone).await), None, "{gone}");
        assert_eq!(ttl(gone).await, None, "{gone}");
    }
    let left = ok("scan keys", raw.scan_keys::<[u8]>(.., 10).await);
    assert_eq!(left, [b("b1"), b("b3"), b("forever"), b("long")]);
}

/// The server's checksum over several regions equals one computed here from the client's own
/// scan, for the whole key space and for a sub-range, under V1 and V2.
pub async fn checksum_matches_local_scan<E: Env>(env: &E) {
    for api in [Api::V1, Api::V2] {
        let tc = start(env, api).await;
        let raw = tc.raw();
        let pairs: Vec<(Bytes, Bytes)> = (0..1500u32)
            .map(|i| {
                (
                    b(format!("c{i:05}")),
                    b(format!("value-{}", i * 7919 % 1000)),
                )
            })
            .collect();
        ok("batch put", raw.batch_put(pairs).await);
        tc.split(&[b"c00300", b"c00750", b"c01200"]);

        for (start, end) in [("", ""), ("c00100", "c01000")] {
            let range = go_range(start, end);
            let scanned = ok("scan", raw.scan(range.clone(), MAX_RAW_SCAN_LIMIT).await);
            let mut crc64_xor = 0;
            let mut total_bytes = 0;
            for pair in &scanned {
                let stored = tc.stored_key(&pair.key);
                crc64_xor ^= crc64_ecma(&[&stored, &pair.value]);
                total_bytes += (stored.len() + pair.value.len()) as u64;
            }
            let sum = ok("checksum", raw.checksum(range).await);
            assert_eq!(
                sum.total_kvs,
                scanned.len() as u64,
                "{api:?} {start}..{end}"
            );
            assert_eq!(sum.total_bytes, total_bytes, "{api:?} {start}..{end}");
            assert_eq!(sum.crc64_xor, crc64_xor, "{api:?} {start}..{end}");
        }
    }
}

/// Batches larger than one request may carry (512 keys per get/delete, 16 KiB per put) over
/// several regions: every pair lands, reads back in order, and is deleted.
pub async fn batches_over_limits_across_regions<E: Env>(env: &E) {
    for api in [Api::V1, Api::V2] {
        let tc = start(env, api).await;
        let raw = tc.raw();
        let count = 4 * RAW_BATCH_PAIR_COUNT + 100;
        let value = Bytes::from(vec![b'x'; 40]);
        // Keys in reverse order, so grouping by region must reorder them.
        let keys: Vec<Bytes> = (0..count).rev().map(|i| b(format!("b{i:05}"))).collect();
        assert!(count * (6 + value.len()) > 4 * RAW_BATCH_PUT_SIZE);
        tc.split(&[b"b00500", b"b01100", b"b01500"]);

        let pairs: Vec<(Bytes, Bytes)> = keys.iter().map(|k| (k.clone(), value.clone())).collect();
        ok("batch put", raw.batch_put(pairs).await);
        let values = ok("batch get", raw.batch_get(keys.clone()).await);
        assert_eq!(values.len(), count);
        assert!(values.iter().all(|v| v.as_ref() == Some(&value)), "{api:?}");
        let stored = ok(
            "scan keys",
            raw.scan_keys::<[u8]>(.., MAX_RAW_SCAN_LIMIT).await,
        );
        assert_eq!(stored.len(), count, "{api:?}");

        // Delete every other key, then the rest.
        let odd: Vec<Bytes> = keys.iter().skip(1).step_by(2).cloned().collect();
        ok("batch delete", raw.batch_delete(odd.clone()).await);
        let values = ok("batch get", raw.batch_get(odd).await);
        assert!(values.iter().all(Option::is_none));
        let stored = ok(
            "scan keys",
            raw.scan_keys::<[u8]>(.., MAX_RAW_SCAN_LIMIT).await,
        );
        assert_eq!(stored.len(), count - count / 2, "{api:?}");
        ok("batch delete", raw.batch_delete(keys).await);
        assert!(
            ok("scan", raw.scan::<[u8]>(.., 10).await).is_empty(),
            "{api:?}"
        );
    }
}

/// A scan limit above 10,240 is refused before anything is sent; 10,240 itself is fine.
pub async fn scan_limit_over_max_is_refused<E: Env>(env: &E) {
    let tc = start(env, Api::V1).await;
    let raw = tc.raw();
    ok("put", raw.put("k", "v").await);
    let over = MAX_RAW_SCAN_LIMIT + 1;
    let refused = raw.scan::<[u8]>(.., over).await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "{refused:?}"
    );
    let refused = raw.scan_keys::<[u8]>(.., over).await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "{refused:?}"
    );
    let refused = raw.reverse_scan(.."z", over).await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "{refused:?}"
    );
    assert_eq!(
        ok("scan", raw.scan::<[u8]>(.., MAX_RAW_SCAN_LIMIT).await).len(),
        1
    );
}

/// The same key holds a separate value in each column family, through every operation;
/// under V2 (where TiKV has no column families for raw keys) naming one is an error.
pub async fn column_families<E: Env>(env: &E) {
    let tc = start(env, Api::V1).await;
    tc.split(&[b"m"]);
    let cfs = [
        ColumnFamily::Default,
        ColumnFamily::Lock,
        ColumnFamily::Write,
    ];
    for cf in cfs {
        let raw = tc.raw().with_cf(cf);
        ok("put", raw.put("a", format!("a-{cf}")).await);
        ok(
            "batch put",
            raw.batch_put([("n", format!("n-{cf}")), ("z", format!("z-{cf}"))])
                .await,
        );
    }
    // A client that names no family uses the default one.
    assert_eq!(ok("get", tc.raw().get("a").await), Some(b("a-default")));
    for cf in cfs {
        let raw = tc.raw().with_cf(cf);
        assert_eq!(ok("get", raw.get("a").await), Some(b(format!("a-{cf}"))));
        let values = ok("batch get", raw.batch_get(["n", "z"]).await);
        assert_eq!(
            values,
            [Some(b(format!("n-{cf}"))), Some(b(format!("z-{cf}")))]
        );
        let found = ok("scan", raw.scan::<[u8]>(.., 10).await);
        let values: Vec<Bytes> = found.into_iter().map(|p| p.value).collect();
        assert_eq!(
            values,
            ["a", "n", "z"].map(|k| b(format!("{k}-{cf}"))),
            "{cf}"
        );
    }
    // Deletes in one family leave the others alone.
    let lock = tc.raw().with_cf(ColumnFamily::Lock);
    ok("delete", lock.delete("a").await);
    ok("batch delete", lock.batch_delete(["n"]).await);
    ok(
        "delete range",
        tc.raw()
            .with_cf(ColumnFamily::Write)
            .delete_range::<[u8]>(..)
            .await,
    );
    assert_eq!(ok("scan", lock.scan::<[u8]>(.., 10).await).len(), 1);
    let write = tc.raw().with_cf(ColumnFamily::Write);
    assert!(ok("scan", write.scan::<[u8]>(.., 10).await).is_empty());
    assert_eq!(ok("scan", tc.raw().scan::<[u8]>(.., 10).await).len(), 3);

    let v2 = start(env, Api::V2).await;
    let refused = v2.raw().with_cf(ColumnFamily::Write).put("a", "v").await;
    assert!(refused.is_err(), "{refused:?}");
}

fn region_error(build: impl FnOnce(&mut errorpb::Error)) -> FaultAction {
    let mut error = errorpb::Error {
        message: "injected".to_owned(),
        ..Default::default()
    };
    build(&mut error);
    FaultAction::RegionError(Box::new(error))
}

fn inject(tc: &TestCluster, command: &str, action: FaultAction, times: u32) {
    tc.server.with(|sim| {
        sim.faults
            .inject(FaultRule::command(command, action, times))
    });
}

/// Retryable region errors (EpochNotMatch, NotLeader without a hint, StaleCommand,
/// RegionNotFound, and once ServerIsBusy) injected into every kind of raw request are
/// retried until the operation succeeds.
pub async fn injected_region_errors_are_retried<E: Env>(env: &E) {
    let tc = start(env, Api::V1).await;
    tc.split(&[b"m"]);
    let raw = tc.raw();
    ok("put", raw.put("a", "1").await);
    ok("put", raw.put("x", "2").await);

    let errors = [
        region_error(|e| e.epoch_not_match = Some(Default::default())),
        region_error(|e| {
            e.not_leader = Some(errorpb::NotLeader {
                region_id: 0,
                leader: None,
            })
        }),
        region_error(|e| e.stale_command = Some(Default::default())),
        region_error(|e| e.region_not_found = Some(Default::default())),
    ];
    for (round, error) in errors.into_iter().enumerate() {
        for command in [
            "RawGet",
            "RawPut",
            "RawBatchGet",
            "RawBatchPut",
            "RawScan",
            "RawDeleteRange",
            "RawCompareAndSwap",
            "RawChecksum",
            "RawGetKeyTTL",
        ] {
            inject(&tc, command, error.clone(), 2);
        }
        let value = b(format!("v{round}"));
        ok("put", raw.put("a", value.clone()).await);
        assert_eq!(ok("get", raw.get("a").await), Some(value.clone()));
        ok("batch put", raw.batch_put([("b", "3"), ("y", "4")]).await);
        let values = ok("batch get", raw.batch_get(["a", "x", "y"]).await);
        assert_eq!(values, [Some(value), Some(b("2")), Some(b("4"))]);
        assert_eq!(ok("scan", raw.scan::<[u8]>(.., 10).await).len(), 4);
        ok("delete range", raw.delete_range("b".."c").await);
        let atomic = raw.with_atomic_for_cas(true);
        let swap = ok("cas", atomic.compare_and_swap("c", None, "5").await);
        assert_eq!(swap, cas_outcome(None, true));
        ok("delete", atomic.delete("c").await);
        assert_eq!(ok("checksum", raw.checksum::<[u8]>(..).await).total_kvs, 3);
        let ttl = raw.get_key_ttl("a").await;
        // V1 has no TTLs: the point is that the region error was retried, not the answer.
        assert!(
            !matches!(ttl, Err(Error::BackoffExhausted { .. })),
            "{ttl:?}"
        );
        ok("put", raw.put("y", "4").await);
        // Every rule fired: each operation really met the error.
        assert_eq!(
            tc.server.with(|sim| sim.faults.active()),
            0,
            "round {round}"
        );
    }

    // ServerIsBusy backs off for seconds (client-go's 2 s base), so it fires once only.
    let busy = region_error(|e| {
        e.server_is_busy = Some(errorpb::ServerIsBusy {
            reason: "injected".to_owned(),
            ..Default::default()
        })
    });
    inject(&tc, "RawGet", busy, 1);
    assert_eq!(ok("get", raw.get("x").await), Some(b("2")));
    assert_eq!(tc.server.with(|sim| sim.faults.active()), 0);
}

/// A leader store that stops answering (gRPC UNAVAILABLE) makes the client try the other
/// peers and learn the new leader, which the cluster moved there meanwhile.
pub async fn unreachable_leader_store_is_routed_around<E: Env>(env: &E) {
    let tc = start(env, Api::V1).await;
    let raw = tc.raw();
    ok("put", raw.put("k", "v1").await);
    let leader = tc.server.with(|sim| {
        let region = sim.cluster.region_by_key(b"k").cloned();
        region
            .and_then(|r| r.leader().map(|l| (r.id, l.store_id)))
            .unwrap_or_else(|| panic!("no leader"))
    });
    let (region_id, store_id) = leader;
    tc.server.with(|sim| {
        let other = if store_id == 1 { 2 } else { 1 };
        sim.cluster
            .transfer_leader(region_id, other)
            .unwrap_or_else(|err| panic!("{err}"));
        sim.cluster
            .stop_store(store_id)
            .unwrap_or_else(|err| panic!("{err}"));
    });
    ok("put", raw.put("k", "v2").await);
    assert_eq!(ok("get", raw.get("k").await), Some(b("v2")));

    // A store that keeps answering UNAVAILABLE for a while: the client retries through it.
    tc.server.with(|sim| {
        sim.cluster
            .restart_store(store_id)
            .unwrap_or_else(|err| panic!("{err}"));
        sim.faults.inject(FaultRule::command(
            "RawGet",
            FaultAction::Status(Status::new(Code::Unavailable, "injected")),
            2,
        ));
    });
    assert_eq!(ok("get", raw.get("k").await), Some(b("v2")));
}

/// `RawClient::split_regions` (client-go's `KVStore.SplitRegions` in raw key space): every
/// key ends up starting a region, the new regions' ids come back (the original region keeps
/// the right-most part), keys that already start a region are skipped, data stays readable,
/// and an empty key is refused.
pub async fn split_regions_at_keys<E: Env>(env: &E) {
    for api in [Api::V1, Api::V2] {
        let tc = start(env, api).await;
        let raw = tc.raw();
        for key in ["a", "k05", "k15", "k25", "k35", "z"] {
            ok("put", raw.put(key, format!("v-{key}")).await);
        }
        let before = tc.region_count();
        let original = tc.region_of(b"k35");
        assert_eq!(tc.region_of(b"k05"), original, "{api:?}");

        let outcome = ok(
            "split",
            raw.split_regions(["k10", "k20", "k30"], false).await,
        );
        assert_eq!(outcome.scatter_error, None);
        assert_eq!(tc.region_count(), before + 3, "{api:?}");
        // Each key starts its region now.
        for key in [b"k10".as_slice(), b"k20", b"k30"] {
            let start = tc.server.with(|sim| {
                sim.cluster
                    .region_by_key(&tc.boundary(key))
                    .map(|region| region.start_key.clone())
            });
            assert_eq!(
                start.as_deref(),
                Some(tc.boundary(key).as_slice()),
                "{api:?}"
            );
        }
        // The new regions are the left parts; the original keeps the right-most range.
        assert_eq!(
            outcome.region_ids,
            [
                tc.region_of(b"k05"),
                tc.region_of(b"k15"),
                tc.region_of(b"k25")
            ],
            "{api:?}"
        );
        assert_eq!(tc.region_of(b"k35"), original, "{api:?}");
        for key in ["a", "k05", "k15", "k25", "k35", "z"] {
            assert_eq!(
                ok("get", raw.get(key).await),
                Some(b(format!("v-{key}"))),
                "{api:?}"
            );
        }

        // Keys that already start a region: nothing to do.
        let again = ok(
            "split again",
            raw.split_regions(["k10", "k30"], false).await,
        );
        assert!(again.region_ids.is_empty(), "{again:?}");
        assert_eq!(tc.region_count(), before + 3, "{api:?}");

        // Keys in several regions: one split per region, every new region reported.
        let more = ok(
            "split more",
            raw.split_regions(["k12", "k22", "k23"], false).await,
        );
        assert_eq!(more.region_ids.len(), 3, "{more:?}");
        assert_eq!(tc.region_count(), before + 6, "{api:?}");

        assert!(matches!(
            raw.split_regions(["k40", ""], false).await,
            Err(Error::InvalidArgument(_))
        ));
    }
}

/// Splitting with scatter asks PD to spread the new regions; `check_region_in_scattering`
/// and `wait_scatter_region_finish` follow PD's operator until it finishes (client-go's
/// `CheckRegionInScattering` and `WaitScatterRegionFinish`). A region PD has no operator for
/// counts as not scattering.
pub async fn split_regions_then_scatter<E: Env>(env: &E) {
    let tc = start(env, Api::V1).await;
    let raw = tc.raw();
    // Each scatter looks running to the next two operator polls.
    tc.server
        .with(|sim| sim.cluster.set_scatter_running_polls(2));
    let outcome = ok("split", raw.split_regions(["s1", "s2"], true).await);
    assert_eq!(outcome.scatter_error, None);
    assert_eq!(outcome.region_ids.len(), 2);
    let first = outcome.region_ids[0];
    assert!(ok(
        "check",
        tc.client.check_region_in_scattering(first).await
    ));
    ok(
        "wait",
        tc.client
            .wait_scatter_region_finish(first, Some(Duration::from_secs(5)))
            .await,
    );
    assert!(!ok(
        "check",
        tc.client.check_region_in_scattering(first).await
    ));
    // A region nobody scattered.
    let untouched = tc.region_of(b"s3");
    assert!(!ok(
        "check",
        tc.client.check_region_in_scattering(untouched).await
    ));
    ok(
        "wait",
        tc.client.wait_scatter_region_finish(untouched, None).await,
    );
}

/// `cluster_id` (client-go's `rawkv.Client.ClusterID`) is PD's, on a fresh client too.
pub async fn cluster_id_comes_from_pd<E: Env>(env: &E) {
    let tc = start(env, Api::V1).await;
    let expected = tc.server.with(|sim| sim.cluster.cluster_id());
    assert_eq!(ok("cluster id", tc.raw().cluster_id().await), expected);
    assert_eq!(ok("cluster id", tc.client.cluster_id().await), expected);
}

/// `locate_key` and `locate_range` (client-go's `LocateKey`, `LocateKeyRange`,
/// `ListRegionIDsInKeyRange`) name the regions holding keys, with boundaries as user keys
/// (the key space's edges as the empty key), under V1 and in a V2 keyspace.
pub async fn locate_keys_and_ranges<E: Env>(env: &E) {
    for api in [Api::V1, Api::V2] {
        let tc = start(env, api).await;
        let raw = tc.raw();
        tc.split(&[b"g", b"p"]);
        let ids = [tc.region_of(b"a"), tc.region_of(b"h"), tc.region_of(b"z")];
        let bounds = |location: &tikv_core::KeyLocation| {
            (
                location.region_id,
                location.start_key.clone(),
                location.end_key.clone(),
            )
        };
        let expected = [
            (ids[0], Bytes::new(), b("g")),
            (ids[1], b("g"), b("p")),
            (ids[2], b("p"), Bytes::new()),
        ];
        // A region the client has never seen: PD answers by id.
        let cold = ok("locate by id", raw.locate_region_by_id(ids[2]).await);
        assert_eq!(&bounds(&cold), &expected[2], "{api:?}");
        for (key, want) in [
            ("a", &expected[0]),
            ("h", &expected[1]),
            ("z", &expected[2]),
        ] {
            let location = ok("locate key", raw.locate_key(key).await);
            assert_eq!(&bounds(&location), want, "{api:?} {key}");
        }
        let everything: Vec<_> = ok("locate all", raw.locate_range::<[u8]>(..).await)
            .iter()
            .map(bounds)
            .collect();
        assert_eq!(everything, expected, "{api:?}");
        let middle: Vec<_> = ok("locate h..q", raw.locate_range("h".."q").await)
            .iter()
            .map(|l| l.region_id)
            .collect();
        assert_eq!(middle, [ids[1], ids[2]], "{api:?}");
        // The end is exclusive: a range ending at a boundary stops before that region.
        let one: Vec<_> = ok("locate h..p", raw.locate_range("h".."p").await)
            .iter()
            .map(|l| l.region_id)
            .collect();
        assert_eq!(one, [ids[1]], "{api:?}");
        // By id, now from the cache (the first lookup, before anything was cached, went to PD).
        let by_id = ok("locate by id", raw.locate_region_by_id(ids[1]).await);
        assert_eq!(&bounds(&by_id), &expected[1], "{api:?}");
        assert!(
            matches!(
                raw.locate_region_by_id(999_999).await,
                Err(Error::RegionUnavailable(_))
            ),
            "{api:?}"
        );
        // Epochs as PD has them.
        let location = ok("locate key", raw.locate_key("h").await);
        let epoch = tc.server.with(|sim| {
            sim.cluster
                .region(ids[1])
                .map(|region| (region.epoch.conf_ver, region.epoch.version))
        });
        assert_eq!(
            Some((location.conf_ver, location.version)),
            epoch,
            "{api:?}"
        );
    }
}

/// `Client::regions` works in the transactional key space, as client-go's
/// `KVStore.SplitRegions` does: the split lands at the keys' memcomparable encoding (under
/// the keyspace's `'x'` prefix with API V2), and lookups report user keys.
pub async fn regions_in_the_transactional_key_space<E: Env>(env: &E) {
    for api in [Api::V1, Api::V2] {
        let tc = start(env, api).await;
        let regions = tc.client.regions();
        assert_eq!(regions.mode(), tikv_core::KeyMode::Txn);
        let outcome = ok("split", regions.split_regions(["t1", "t2"], false).await);
        assert_eq!(outcome.region_ids.len(), 2, "{api:?}");
        let boundary = |key: &[u8]| match api {
            Api::V1 | Api::V1Ttl => tikv_proto::codec::encode_bytes(key),
            Api::V2 => tikv_proto::codec::encode_bytes(&[b"x\0\0\0".as_slice(), key].concat()),
        };
        for key in [b"t1".as_slice(), b"t2"] {
            let start = tc.server.with(|sim| {
                sim.cluster
                    .region_by_key(&boundary(key))
                    .map(|region| region.start_key.clone())
            });
            assert_eq!(start.as_deref(), Some(boundary(key).as_slice()), "{api:?}");
        }
        let location = ok("locate", regions.locate_key("t15").await);
        assert_eq!(
            (location.start_key.clone(), location.end_key.clone()),
            (b("t1"), b("t2")),
            "{api:?}"
        );
        let walked: Vec<_> = ok("locate range", regions.locate_range("t0".."t3").await)
            .iter()
            .map(|location| location.region_id)
            .collect();
        assert_eq!(walked.len(), 3, "{api:?}");
        assert_eq!(walked[1], location.region_id, "{api:?}");
        // Keys already at a boundary: nothing to do.
        let again = ok("split again", regions.split_regions(["t1"], false).await);
        assert!(again.region_ids.is_empty(), "{api:?}");
    }
}

/// The request key of transactional user key `key` under `api`.
fn txn_request_key(api: Api, key: &str) -> Vec<u8> {
    match api {
        Api::V1 | Api::V1Ttl => key.as_bytes().to_vec(),
        Api::V2 => [b"x\0\0\0".as_slice(), key.as_bytes()].concat(),
    }
}

/// Commits `keys` (value = key) straight into the simulated cluster's MVCC store, one
/// transaction each, as a transactional client would.
fn txn_put_committed(tc: &TestCluster, keys: &[&str]) {
    use tikv_proto::kvrpcpb;
    use tikv_proto::tikvpb::batch_commands_request::request::Cmd as Req;
    use tikv_sim::tikv::{Execution, TikvRequest};
    let api = tc.api;
    tc.server.with(|sim| {
        for (i, key) in keys.iter().enumerate() {
            let request_key = Bytes::from(txn_request_key(api, key));
            let (store, mut context) = sim
                .leader_context(&tikv_proto::codec::encode_bytes(&request_key))
                .unwrap_or_else(|| panic!("no leader for {key}"));
            context.api_version = api.proto() as i32;
            let start_version = 100 + 10 * i as u64;
            let now_ms = 1_700_000_000_000;
            let prewrite = TikvRequest::Batch(Req::Prewrite(kvrpcpb::PrewriteRequest {
                context: Some(context.clone()),
                mutations: vec![kvrpcpb::Mutation {
                    op: kvrpcpb::Op::Put as i32,
                    key: request_key.clone(),
                    value: Bytes::copy_from_slice(key.as_bytes()),
                    ..Default::default()
                }],
                primary_lock: request_key.clone(),
                start_version,
                lock_ttl: 3_000,
                ..Default::default()
            }));
            assert!(matches!(
                sim.execute(store, prewrite, now_ms),
                Execution::Done(_)
            ));
            let commit = TikvRequest::Batch(Req::Commit(kvrpcpb::CommitRequest {
                context: Some(context),
                start_version,
                keys: vec![request_key],
                commit_version: start_version + 1,
                ..Default::default()
            }));
            assert!(matches!(
                sim.execute(store, commit, now_ms),
                Execution::Done(_)
            ));
        }
    });
}

/// Transactional keys left in `[start, end)` (user keys), as the cluster's storage has them.
fn txn_keys_left(tc: &TestCluster, start: &str, end: &str) -> u64 {
    let (start, end) = (txn_request_key(tc.api, start), txn_request_key(tc.api, end));
    tc.server
        .with(|sim| sim.mvcc.range_stats(&start, &end).keys)
}

/// `Client::delete_range` (client-go's `KVStore.DeleteRange`) removes every version of the
/// transactional keys in a range, region by region, and reports the regions it covered;
/// `notify_delete_range` deletes nothing; `Client::unsafe_destroy_range` drops a range on
/// every store at once.
pub async fn delete_range_and_unsafe_destroy_range_of_transactional_keys<E: Env>(env: &E) {
    for api in [Api::V1, Api::V2] {
        let tc = start(env, api).await;
        txn_put_committed(&tc, &["a1", "a2", "b1", "b2", "c1", "d1"]);
        ok(
            "split",
            tc.client.regions().split_regions(["b"], false).await,
        );
        assert_eq!(txn_keys_left(&tc, "a", "z"), 6, "{api:?}");

        let notified = ok("notify", tc.client.notify_delete_range("a", "c").await);
        assert_eq!(notified, 2, "{api:?}");
        assert_eq!(txn_keys_left(&tc, "a", "z"), 6, "{api:?}");

        let regions = ok("delete range", tc.client.delete_range("a", "c").await);
        assert_eq!(regions, 2, "{api:?}");
        assert_eq!(txn_keys_left(&tc, "a", "c"), 0, "{api:?}");
        assert_eq!(txn_keys_left(&tc, "c", "z"), 2, "{api:?}");

        ok(
            "unsafe destroy",
            tc.client.unsafe_destroy_range("c", "d").await,
        );
        assert_eq!(txn_keys_left(&tc, "a", "z"), 1, "{api:?}");
        // Twice is fine.
        ok(
            "unsafe destroy again",
            tc.client.unsafe_destroy_range("c", "d").await,
        );
        // Raw data is another key space: untouched.
        ok("raw put", tc.raw().put("c5", "raw").await);
        ok(
            "unsafe destroy",
            tc.client.unsafe_destroy_range("", "").await,
        );
        assert_eq!(
            ok("raw get", tc.raw().get("c5").await),
            Some(b("raw")),
            "{api:?}"
        );
    }
}

/// client-go's oracle extras: PD's external timestamp (only moves forward, never past the
/// TSO) and stale timestamps derived from the newest TSO answer.
pub async fn external_and_stale_timestamps<E: Env>(env: &E) {
    use tikv_core::Timestamp;
    let ts = Timestamp::from_version;
    let tc = start(env, Api::V1).await;
    let client = &tc.client;
    assert_eq!(
        ok("external", client.external_timestamp().await),
        Timestamp::ZERO
    );
    let now = ok("tso", client.current_timestamp().await).version();
    ok(
        "set external",
        client.set_external_timestamp(ts(now - 10)).await,
    );
    assert_eq!(
        ok("external", client.external_timestamp().await),
        ts(now - 10)
    );
    // Backwards, or past the TSO: PD refuses.
    assert!(matches!(
        client.set_external_timestamp(ts(now - 20)).await,
        Err(Error::Pd { .. })
    ));
    assert!(matches!(
        client.set_external_timestamp(ts(u64::MAX >> 1)).await,
        Err(Error::Pd { .. })
    ));
    assert_eq!(
        ok("external", client.external_timestamp().await),
        ts(now - 10)
    );

    let stale = ok("stale", client.stale_timestamp(10).await);
    assert_eq!(stale.logical(), 0);
    let back = ts(now).physical_ms() as i64 - stale.physical_ms() as i64;
    assert!((9_000..=10_000).contains(&back), "{back} ms back");
    assert!(matches!(
        client.stale_timestamp(u64::MAX / 1_000).await,
        Err(Error::InvalidArgument(_))
    ));
}

/// The transactional keys in `[start, end)` (user keys), read from the cluster's storage at
/// the latest version.
fn txn_keys(tc: &TestCluster, start: &str, end: &str) -> Vec<Bytes> {
    let (start, end) = (txn_request_key(tc.api, start), txn_request_key(tc.api, end));
    let prefix = txn_request_key(tc.api, "").len();
    tc.server.with(|sim| {
        sim.mvcc
            .scan(&tikv_proto::kvrpcpb::ScanRequest {
                start_key: Bytes::from(start),
                end_key: Bytes::from(end),
                limit: 10_000,
                version: u64::MAX >> 2,
                ..Default::default()
            })
            .pairs
            .into_iter()
            .map(|pair| pair.key.slice(prefix..))
            .collect()
    })
}

/// Port of client-go's `TestDeleteRange` (integration_tests/delete_range_test.go): 40 keys
/// over four regions split at `b`, `c` and `d`; each delete removes exactly its range and
/// reports the regions it covered (an empty range covers none).
pub async fn txn_delete_range<E: Env>(env: &E) {
    let tc = start(env, Api::V1).await;
    let mut keys: Vec<String> = Vec::new();
    for first in ['a', 'b', 'c', 'd'] {
        for second in '0'..='9' {
            keys.push(format!("{first}{second}"));
        }
    }
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    txn_put_committed(&tc, &refs);
    ok(
        "split",
        tc.client
            .regions()
            .split_regions(["b", "c", "d"], false)
            .await,
    );
    let mut expected: std::collections::BTreeSet<String> = keys.iter().cloned().collect();
    let check = |expected: &std::collections::BTreeSet<String>| {
        let left: Vec<String> = txn_keys(&tc, "", "~")
            .iter()
            .map(|key| String::from_utf8_lossy(key).into_owned())
            .collect();
        assert_eq!(left, expected.iter().cloned().collect::<Vec<_>>());
    };
    check(&expected);
    for (start, end, regions) in [
        ("b", "c0", 2),
        ("d0", "d0", 0),
        ("d0\0", "d1\0", 1),
        ("c5", "d5", 2),
        ("a", "z", 4),
        ("", "", 4),
    ] {
        // Whole-cluster ranges also go through the concurrent runner.
        let covered = if start == "a" {
            ok(
                "delete range concurrently",
                tc.client.delete_range_concurrently(start, end, 3).await,
            )
        } else {
            ok("delete range", tc.client.delete_range(start, end).await)
        };
        expected.retain(|key| !(key.as_str() >= start && (end.is_empty() || key.as_str() < end)));
        check(&expected);
        assert_eq!(covered, regions, "delete [{start:?}, {end:?})");
    }
}

/// The range task suite's cluster: the transactional key space split at `a`..=`z` (27
/// regions); returns it with every region's range.
async fn range_task_cluster<E: Env>(
    env: &E,
) -> (TestCluster, Vec<tikv_core::range_task::KeyRange>) {
    use tikv_core::range_task::KeyRange;
    let tc = start(env, Api::V1).await;
    let splits: Vec<Bytes> = (b'a'..=b'z').map(|k| Bytes::from(vec![k])).collect();
    ok(
        "split",
        tc.client
            .regions()
            .split_regions(splits.clone(), false)
            .await,
    );
    let mut all = vec![KeyRange {
        start_key: Bytes::new(),
        end_key: splits[0].clone(),
    }];
    for pair in splits.windows(2) {
        all.push(KeyRange {
            start_key: pair[0].clone(),
            end_key: pair[1].clone(),
        });
    }
    all.push(KeyRange {
        start_key: splits[25].clone(),
        end_key: Bytes::new(),
    });
    (tc, all)
}

/// The ranges client-go's range task tests run, with the region pieces each covers.
fn range_task_cases(
    all: &[tikv_core::range_task::KeyRange],
) -> Vec<((Bytes, Bytes), Vec<tikv_core::range_task::KeyRange>)> {
    use tikv_core::range_task::KeyRange;
    let r = |start: &[u8], end: &[u8]| KeyRange {
        start_key: Bytes::copy_from_slice(start),
        end_key: Bytes::copy_from_slice(end),
    };
    let k = |start: &[u8], end: &[u8]| (Bytes::copy_from_slice(start), Bytes::copy_from_slice(end));
    vec![
        (k(b"", b""), all.to_vec()),
        (k(b"", b"b"), all[..2].to_vec()),
        (k(b"b", b""), all[2..].to_vec()),
        (k(b"b", b"x"), all[2..24].to_vec()),
        (
            k(b"a", b"d"),
            vec![r(b"a", b"b"), r(b"b", b"c"), r(b"c", b"d")],
        ),
        (
            k(b"a\0", b"d\0"),
            vec![
                r(b"a\0", b"b"),
                r(b"b", b"c"),
                r(b"c", b"d"),
                r(b"d", b"d\0"),
            ],
        ),
        (
            k(b"a\xff\xff\xff", b"c\xff\xff\xff"),
            vec![
                r(b"a\xff\xff\xff", b"b"),
                r(b"b", b"c"),
                r(b"c", b"c\xff\xff\xff"),
            ],
        ),
        (k(b"a1", b"a2"), vec![r(b"a1", b"a2")]),
        (k(b"a", b"a"), vec![]),
        (k(b"a3", b"a3"), vec![]),
    ]
}

/// Port of client-go's `TestRangeTask`: for 1-4 workers and 1-5 regions per task, every
/// range is cut at region boundaries into tasks of that many regions, each run once.
pub async fn range_task<E: Env>(env: &E) {
    use tikv_core::range_task::{KeyRange, RangeTaskRunner, TaskStat};
    let (tc, all) = range_task_cluster(env).await;
    for concurrency in 1..5 {
        for per_task in 1..=5u32 {
            let runner = ok(
                "runner",
                RangeTaskRunner::new(tc.client.regions(), concurrency)
                    .with_regions_per_task(per_task),
            );
            for ((start, end), pieces) in range_task_cases(&all) {
                let seen = std::sync::Mutex::new(Vec::new());
                let stat = runner
                    .run_on_range(go_range(&start, &end), |range| {
                        seen.lock().unwrap_or_else(|e| e.into_inner()).push(range);
                        async {
                            Ok(TaskStat {
                                completed_regions: 1,
                                failed_regions: 0,
                            })
                        }
                    })
                    .await
                    .unwrap_or_else(|failure| panic!("{failure}"));
                let mut seen = seen.into_inner().unwrap_or_else(|e| e.into_inner());
                seen.sort();
                let expected: Vec<KeyRange> = pieces
                    .chunks(per_task as usize)
                    .map(|chunk| KeyRange {
                        start_key: chunk[0].start_key.clone(),
                        end_key: chunk[chunk.len() - 1].end_key.clone(),
                    })
                    .collect();
                assert_eq!(
                    seen, expected,
                    "[{start:?}, {end:?}) x{per_task} by {concurrency}"
                );
                assert_eq!(stat.completed_regions, expected.len() as u64);
                assert_eq!(stat.failed_regions, 0);
            }
        }
    }
}

/// Port of client-go's `TestRangeTaskError`: a failing task fails the run, which reports
/// the failure and fewer completed regions than the range has.
pub async fn range_task_error<E: Env>(env: &E) {
    use tikv_core::range_task::{RangeTaskRunner, TaskFailure, TaskStat};
    let (tc, all) = range_task_cluster(env).await;
    for concurrency in 1..5 {
        let runner = ok(
            "runner",
            RangeTaskRunner::new(tc.client.regions(), concurrency).with_regions_per_task(1),
        );
        for ((start, end), pieces) in range_task_cases(&all) {
            for piece in &pieces {
                let failing = piece.start_key.clone();
                let result = runner
                    .run_on_range(go_range(&start, &end), |range| {
                        let fails = range.start_key == failing;
                        async move {
                            if fails {
                                Err(TaskFailure {
                                    stat: TaskStat {
                                        completed_regions: 0,
                                        failed_regions: 1,
                                    },
                                    error: Error::Server("test error".into()),
                                })
                            } else {
                                Ok(TaskStat {
                                    completed_regions: 1,
                                    failed_regions: 0,
                                })
                            }
                        }
                    })
                    .await;
                let Err(failure) = result else {
                    panic!("[{start:?}, {end:?}) failing at {failing:?} succeeded");
                };
                assert_eq!(failure.error, Error::Server("test error".into()));
                assert!(failure.stat.completed_regions < pieces.len() as u64);
                assert_eq!(failure.stat.failed_regions, 1);
            }
        }
    }
}

/// `txn_safe_point` and `check_visibility` (client-go's `CheckVisibility`) follow PD's GC
/// state: a read below the transaction safe point is refused with `TxnAbortedByGc`.
pub async fn txn_safe_point_and_visibility<E: Env>(env: &E) {
    use tikv_core::Timestamp;
    use tikv_proto::pdpb;
    let ts = Timestamp::from_version;
    for api in [Api::V1, Api::V2] {
        let tc = start(env, api).await;
        let client = &tc.client;
        assert_eq!(
            ok("safe point", client.txn_safe_point().await),
            Timestamp::ZERO,
            "{api:?}"
        );
        let now = ok("tso", client.current_timestamp().await).version();
        assert_eq!(
            ok("visible", client.check_visibility(ts(now)).await),
            Timestamp::ZERO
        );
        // GC moves the cluster-wide safe point, which also governs the DEFAULT keyspace
        // (it does not run keyspace-level GC).
        let keyspace = 0xFFFF_FFFF;
        tc.server.with(|sim| {
            let header = Some(pdpb::RequestHeader {
                cluster_id: sim.cluster.cluster_id(),
                ..Default::default()
            });
            let advanced = sim
                .cluster
                .handle_advance_txn_safe_point(
                    &pdpb::AdvanceTxnSafePointRequest {
                        header,
                        keyspace_scope: Some(pdpb::KeyspaceScope {
                            keyspace: Some(pdpb::keyspace_scope::Keyspace::KeyspaceId(keyspace)),
                        }),
                        target: now - 100,
                    },
                    1_700_000_000_000,
                )
                .unwrap_or_else(|err| panic!("{err}"));
            assert_eq!(advanced.new_txn_safe_point, now - 100, "{api:?}");
        });
        assert_eq!(
            ok("safe point", client.txn_safe_point().await),
            ts(now - 100)
        );
        assert_eq!(
            ok("visible", client.check_visibility(ts(now)).await),
            ts(now - 100)
        );
        assert_eq!(
            client.check_visibility(ts(now - 200)).await,
            Err(Error::TxnAbortedByGc {
                start_ts: ts(now - 200),
                safe_point: ts(now - 100),
            }),
            "{api:?}"
        );
    }
}
