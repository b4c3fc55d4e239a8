//! Behaviour tests of the MVCC store, with small request builders.

mod async_commit;
mod go_port;
mod pessimistic;
mod shared;
mod status;

use bytes::Bytes;
use tikv_proto::kvrpcpb::{self, IsolationLevel, Op};

use super::{LockAcquire, MvccStore};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn keys(list: &[&str]) -> Vec<Bytes> {
    list.iter().map(|k| b(k)).collect()
}

fn mutation(op: Op, key: &str, value: &str) -> kvrpcpb::Mutation {
    kvrpcpb::Mutation {
        op: op as i32,
        key: b(key),
        value: b(value),
        assertion: 0,
    }
}

/// Put mutations from (key, value) pairs.
fn puts(pairs: &[(&str, &str)]) -> Vec<kvrpcpb::Mutation> {
    pairs.iter().map(|(k, v)| mutation(Op::Put, k, v)).collect()
}

/// An optimistic 2PC prewrite; `min_commit_ts` = start + 1 as client-go sends it.
fn prewrite_req(
    mutations: Vec<kvrpcpb::Mutation>,
    primary: &str,
    start_ts: u64,
    ttl: u64,
) -> kvrpcpb::PrewriteRequest {
    kvrpcpb::PrewriteRequest {
        mutations,
        primary_lock: b(primary),
        start_version: start_ts,
        lock_ttl: ttl,
        min_commit_ts: start_ts + 1,
        ..Default::default()
    }
}

fn ctx(isolation: IsolationLevel) -> Option<kvrpcpb::Context> {
    Some(kvrpcpb::Context {
        isolation_level: isolation as i32,
        ..Default::default()
    })
}

impl MvccStore {
    fn must_prewrite(&mut self, req: &kvrpcpb::PrewriteRequest) -> kvrpcpb::PrewriteResponse {
        let resp = self.prewrite(req);
        assert!(resp.errors.is_empty(), "prewrite failed: {:?}", resp.errors);
        resp
    }

    fn must_prewrite_ok(
        &mut self,
        mutations: Vec<kvrpcpb::Mutation>,
        primary: &str,
        start_ts: u64,
    ) {
        self.must_prewrite(&prewrite_req(mutations, primary, start_ts, 0));
    }

    fn must_prewrite_ttl_ok(
        &mut self,
        mutations: Vec<kvrpcpb::Mutation>,
        primary: &str,
        start_ts: u64,
        ttl: u64,
    ) {
        self.must_prewrite(&prewrite_req(mutations, primary, start_ts, ttl));
    }

    fn commit_keys(
        &mut self,
        keys: &[&str],
        start_ts: u64,
        commit_ts: u64,
    ) -> kvrpcpb::CommitResponse {
        self.commit(&kvrpcpb::CommitRequest {
            start_version: start_ts,
            keys: self::keys(keys),
            commit_version: commit_ts,
            ..Default::default()
        })
    }

    fn must_commit_ok(&mut self, keys: &[&str], start_ts: u64, commit_ts: u64) {
        let resp = self.commit_keys(keys, start_ts, commit_ts);
        assert_eq!(resp.error, None);
        assert_eq!(resp.commit_version, commit_ts);
    }

    fn must_commit_err(
        &mut self,
        keys: &[&str],
        start_ts: u64,
        commit_ts: u64,
    ) -> kvrpcpb::KeyError {
        let resp = self.commit_keys(keys, start_ts, commit_ts);
        *resp.error.expect("commit should fail")
    }

    fn rollback_keys(&mut self, keys: &[&str], start_ts: u64) -> Option<kvrpcpb::KeyError> {
        self.batch_rollback(&kvrpcpb::BatchRollbackRequest {
            start_version: start_ts,
            keys: self::keys(keys),
            ..Default::default()
        })
        .error
        .map(|error| *error)
    }

    fn must_put_ok(&mut self, key: &str, value: &str, start_ts: u64, commit_ts: u64) {
        self.must_prewrite_ok(puts(&[(key, value)]), key, start_ts);
        self.must_commit_ok(&[key], start_ts, commit_ts);
    }

    fn must_delete_ok(&mut self, key: &str, start_ts: u64, commit_ts: u64) {
        self.must_prewrite_ok(vec![mutation(Op::Del, key, "")], key, start_ts);
        self.must_commit_ok(&[key], start_ts, commit_ts);
    }

    fn get_at(&mut self, key: &str, ts: u64, isolation: IsolationLevel) -> kvrpcpb::GetResponse {
        self.get(&kvrpcpb::GetRequest {
            context: ctx(isolation),
            key: b(key),
            version: ts,
            need_commit_ts: false,
        })
    }

    fn must_get_ok(&mut self, key: &str, ts: u64, expect: &str) {
        let resp = self.get_at(key, ts, IsolationLevel::Si);
        assert_eq!(resp.error, None, "get {key}@{ts}");
        assert!(!resp.not_found, "get {key}@{ts} not found");
        assert_eq!(resp.value, b(expect), "get {key}@{ts}");
    }

    fn must_get_none(&mut self, key: &str, ts: u64) {
        let resp = self.get_at(key, ts, IsolationLevel::Si);
        assert_eq!(resp.error, None, "get {key}@{ts}");
        assert!(resp.not_found, "get {key}@{ts} found {:?}", resp.value);
    }

    fn must_get_err(&mut self, key: &str, ts: u64) -> kvrpcpb::KeyError {
        let resp = self.get_at(key, ts, IsolationLevel::Si);
        *resp.error.expect("get should fail")
    }

    fn scan_range(
        &mut self,
        start: &str,
        end: &str,
        limit: u32,
        ts: u64,
        reverse: bool,
    ) -> kvrpcpb::ScanResponse {
        self.scan(&kvrpcpb::ScanRequest {
            start_key: b(start),
            end_key: b(end),
            limit,
            version: ts,
            reverse,
            ..Default::default()
        })
    }

    /// Scans `[start, end)` forward, or `[start, end)` from the top when `reverse`
    /// (mocktikv's argument order), and compares with key/value pairs.
    fn must_scan_pairs(
        &mut self,
        start: &str,
        end: &str,
        limit: u32,
        ts: u64,
        reverse: bool,
        expect: &[&str],
    ) {
        let resp = if reverse {
            self.scan_range(end, start, limit, ts, true)
        } else {
            self.scan_range(start, end, limit, ts, false)
        };
        assert_eq!(resp.error, None);
        let got: Vec<String> = resp
            .pairs
            .iter()
            .flat_map(|p| {
                assert_eq!(p.error, None);
                [
                    String::from_utf8_lossy(&p.key).into_owned(),
                    String::from_utf8_lossy(&p.value).into_owned(),
                ]
            })
            .collect();
        assert_eq!(
            got, expect,
            "scan [{start:?}, {end:?}) limit {limit} @{ts} reverse {reverse}"
        );
    }

    fn locks_up_to(&mut self, max_ts: u64) -> Vec<(String, String, u64)> {
        self.scan_lock(&kvrpcpb::ScanLockRequest {
            max_version: max_ts,
            ..Default::default()
        })
        .locks
        .into_iter()
        .map(|l| {
            (
                String::from_utf8_lossy(&l.key).into_owned(),
                String::from_utf8_lossy(&l.primary_lock).into_owned(),
                l.lock_version,
            )
        })
        .collect()
    }

    fn check_status(
        &mut self,
        primary: &str,
        lock_ts: u64,
        caller_start_ts: u64,
        current_ts: u64,
        rollback_if_not_exist: bool,
    ) -> kvrpcpb::CheckTxnStatusResponse {
        self.check_txn_status(&kvrpcpb::CheckTxnStatusRequest {
            primary_key: b(primary),
            lock_ts,
            caller_start_ts,
            current_ts,
            rollback_if_not_exist,
            ..Default::default()
        })
    }

    fn lock_done(
        &mut self,
        req: &kvrpcpb::PessimisticLockRequest,
    ) -> kvrpcpb::PessimisticLockResponse {
        match self.pessimistic_lock(req) {
            LockAcquire::Done(resp) => resp,
            LockAcquire::Wait(wait) => panic!("unexpected lock wait: {wait:?}"),
        }
    }
}

/// A pessimistic lock request in Normal mode that does not wait.
fn lock_req(
    keys: &[&str],
    primary: &str,
    start_ts: u64,
    for_update_ts: u64,
) -> kvrpcpb::PessimisticLockRequest {
    kvrpcpb::PessimisticLockRequest {
        mutations: keys
            .iter()
            .map(|k| mutation(Op::PessimisticLock, k, ""))
            .collect(),
        primary_lock: b(primary),
        start_version: start_ts,
        lock_ttl: 3000,
        for_update_ts,
        wait_timeout: -1,
        ..Default::default()
    }
}

/// A pessimistic prewrite of puts, each key with DO_PESSIMISTIC_CHECK.
fn pessimistic_prewrite_req(
    pairs: &[(&str, &str)],
    primary: &str,
    start_ts: u64,
    for_update_ts: u64,
) -> kvrpcpb::PrewriteRequest {
    kvrpcpb::PrewriteRequest {
        pessimistic_actions: vec![
            kvrpcpb::prewrite_request::PessimisticAction::DoPessimisticCheck
                as i32;
            pairs.len()
        ],
        for_update_ts,
        ..prewrite_req(puts(pairs), primary, start_ts, 3000)
    }
}
