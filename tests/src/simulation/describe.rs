//! Stable one-line descriptions of operations, results, wire messages and faults for traces.

use bytes::Bytes;
use prost::Message;
use tikv_core::Error;
use tikv_core::rpc::{Request, Response, StoreRequest, StoreResponse};
use tikv_proto::rpc::RpcError;
use tikv_proto::{errorpb, kvrpcpb, pdpb};
use tikv_sim::faults::FaultAction;

use super::ClusterFault;
use super::ops::{Answer, Op};

/// A short, stable description of a cluster fault for traces.
pub fn describe_fault(fault: &ClusterFault) -> String {
    match fault {
        ClusterFault::Split(key) => format!("split at {}", region_key_text(key)),
        ClusterFault::MergeRight(key) => format!("merge right of {:?}", region_key_text(key)),
        ClusterFault::TransferLeader { key, store_id } => {
            format!("leader of {:?} to store {store_id}", region_key_text(key))
        }
        ClusterFault::StopStore(id) => format!("stop store {id}"),
        ClusterFault::RestartStore(id) => format!("restart store {id}"),
        ClusterFault::ElectAway(id) => format!("elect away from store {id}"),
        ClusterFault::Inject(rule) => {
            let action = match &rule.action {
                FaultAction::RegionError(err) => describe_region_error(err),
                FaultAction::Status(status) => format!("status {status}"),
                FaultAction::Drop => "drop".to_owned(),
                FaultAction::DropReply => "drop reply".to_owned(),
                FaultAction::Delay(ms) => format!("delay {ms} ms"),
                FaultAction::KeyError(err) => format!("key error {err:?}"),
                FaultAction::AckWithoutApply => "ack without applying".to_owned(),
                FaultAction::UndeterminedAfterApply => "undetermined after applying".to_owned(),
            };
            let region = rule
                .region_id
                .map_or(String::new(), |id| format!(" on region {id}"));
            format!("inject {action} x{}{region}", rule.remaining)
        }
        ClusterFault::StopPdMember(id) => format!("stop PD member {id}"),
        ClusterFault::StopPdLeader => "stop the PD leader".to_owned(),
        ClusterFault::RestartPdMember(id) => format!("restart PD member {id}"),
        ClusterFault::MovePdLeader(Some(id)) => format!("move PD leader to {id}"),
        ClusterFault::MovePdLeader(None) => "PD leader resigns".to_owned(),
        ClusterFault::ElectPdLeader => "elect a PD leader".to_owned(),
        ClusterFault::BreakTsoStreams => "break Tso streams".to_owned(),
        ClusterFault::ApplyLag { store_id, lag } => {
            let store = store_id.map_or("every store".to_owned(), |id| format!("store {id}"));
            format!(
                "apply lag of {store} to {} ms, {} entries",
                lag.delay_ms, lag.entries
            )
        }
        ClusterFault::Chaos => "chaos".to_owned(),
    }
}

/// A short, stable description of a region error: its kind (and the leader hint, if any).
pub fn describe_region_error(err: &errorpb::Error) -> String {
    if let Some(not_leader) = &err.not_leader {
        return match &not_leader.leader {
            Some(leader) => format!("NotLeader(leader on store {})", leader.store_id),
            None => "NotLeader(no leader)".to_owned(),
        };
    }
    if let Some(epoch) = &err.epoch_not_match {
        return format!(
            "EpochNotMatch({} current regions)",
            epoch.current_regions.len()
        );
    }
    let kinds = [
        (err.server_is_busy.is_some(), "ServerIsBusy"),
        (err.region_not_found.is_some(), "RegionNotFound"),
        (err.key_not_in_region.is_some(), "KeyNotInRegion"),
        (err.stale_command.is_some(), "StaleCommand"),
        (err.data_is_not_ready.is_some(), "DataIsNotReady"),
        (err.store_not_match.is_some(), "StoreNotMatch"),
        (
            err.max_timestamp_not_synced.is_some(),
            "MaxTimestampNotSynced",
        ),
    ];
    kinds.iter().find(|(set, _)| *set).map_or_else(
        || format!("other({})", err.message),
        |(_, kind)| (*kind).to_owned(),
    )
}

/// A short, stable description of a request the machine sent: `Name region=N` for a
/// store, `pd.Method` with the argument that matters for PD, `health.Check`.
pub(super) fn describe_request(request: &Request) -> String {
    match request {
        Request::Store(store) => {
            let region = store.context().map_or(0, |context| context.region_id);
            format!(
                "{} region={region}{}",
                store.name(),
                describe_txn_request(store)
            )
        }
        Request::Health(_) => "health.Check".to_owned(),
        Request::Pd(pd) => match pd.encode(usize::MAX) {
            Ok(framed) => describe_pd_request(pd.path(), &framed.payload()),
            Err(_) => format!("pd {}", pd.path()),
        },
    }
}

/// `ok`, the region error a store answered with, or the transport error.
pub(super) fn describe_reply(reply: &Result<Response, RpcError>) -> String {
    match reply {
        Ok(Response::Store(response)) => match response.region_error() {
            Some(err) => format!("region error {}", describe_region_error(err)),
            None => format!("ok{}", describe_txn_response(response)),
        },
        Ok(Response::Pd(_) | Response::Health(_)) => "ok".to_owned(),
        Err(err) => format!("error: {err}"),
    }
}

/// The arguments that matter of a transactional store request (keys, timestamps, commit
/// flavour); empty for raw and other commands, whose traces stay short.
fn describe_txn_request(request: &StoreRequest) -> String {
    match request {
        StoreRequest::Prewrite(r) => {
            let keys: Vec<Bytes> = r.mutations.iter().map(|m| m.key.clone()).collect();
            let mut flags = String::new();
            if r.use_async_commit {
                flags.push_str(" async");
            }
            if r.try_one_pc {
                flags.push_str(" 1pc");
            }
            format!(
                " {} primary={} start={}{flags}",
                keys_text(&keys),
                text(&r.primary_lock),
                r.start_version
            )
        }
        StoreRequest::Commit(r) => format!(
            " {} start={} commit={}",
            keys_text(&r.keys),
            r.start_version,
            r.commit_version
        ),
        StoreRequest::BatchRollback(r) => {
            format!(" {} start={}", keys_text(&r.keys), r.start_version)
        }
        StoreRequest::Cleanup(r) => format!(" {} start={}", text(&r.key), r.start_version),
        StoreRequest::Get(r) => format!(
            " {} at={}{}",
            text(&r.key),
            r.version,
            lock_sets(r.context.as_ref())
        ),
        StoreRequest::BatchGet(r) => format!(
            " {} at={}{}",
            keys_text(&r.keys),
            r.version,
            lock_sets(r.context.as_ref())
        ),
        StoreRequest::Scan(r) => format!(
            " [{}, {}){} at={}{}",
            text(&r.start_key),
            text(&r.end_key),
            if r.reverse { " reverse" } else { "" },
            r.version,
            lock_sets(r.context.as_ref())
        ),
        StoreRequest::CheckTxnStatus(r) => format!(
            " primary={} lock={} caller={}",
            text(&r.primary_key),
            r.lock_ts,
            r.caller_start_ts
        ),
        StoreRequest::CheckSecondaryLocks(r) => {
            format!(" {} start={}", keys_text(&r.keys), r.start_version)
        }
        StoreRequest::ResolveLock(r) => format!(
            " {} start={} commit={}",
            keys_text(&r.keys),
            r.start_version,
            r.commit_version
        ),
        StoreRequest::TxnHeartBeat(r) => format!(
            " primary={} start={} ttl={}",
            text(&r.primary_lock),
            r.start_version,
            r.advise_lock_ttl
        ),
        _ => String::new(),
    }
}

/// The lock sets a read carries (transactions it may skip or read through), when any.
fn lock_sets(context: Option<&kvrpcpb::Context>) -> String {
    let Some(context) = context else {
        return String::new();
    };
    let mut out = String::new();
    if !context.resolved_locks.is_empty() {
        out.push_str(&format!(" skip={:?}", context.resolved_locks));
    }
    if !context.committed_locks.is_empty() {
        out.push_str(&format!(" read_through={:?}", context.committed_locks));
    }
    out
}

/// A key error, briefly: the lock met (key, holder) or the error's kind.
fn describe_key_error(err: &kvrpcpb::KeyError) -> String {
    if let Some(lock) = &err.locked {
        return format!(
            "Locked({} by {}{})",
            text(&lock.key),
            lock.lock_version,
            if lock.use_async_commit { " async" } else { "" }
        );
    }
    if let Some(conflict) = &err.conflict {
        return format!(
            "WriteConflict({} with {} committed at {})",
            text(&conflict.key),
            conflict.conflict_ts,
            conflict.conflict_commit_ts
        );
    }
    if err.already_exist.is_some() {
        return "AlreadyExists".to_owned();
    }
    if err.commit_ts_expired.is_some() {
        return "CommitTsExpired".to_owned();
    }
    if err.txn_not_found.is_some() {
        return "TxnNotFound".to_owned();
    }
    if !err.abort.is_empty() {
        return format!("Abort({})", err.abort);
    }
    if !err.retryable.is_empty() {
        return format!("Retryable({})", err.retryable);
    }
    "KeyError".to_owned()
}

/// What a transactional store answer says beyond `ok`: key errors, the status found, the
/// timestamps a prewrite chose; empty for raw and other commands.
fn describe_txn_response(response: &StoreResponse) -> String {
    let errors = |errors: &mut dyn Iterator<Item = &kvrpcpb::KeyError>| {
        let errors: Vec<String> = errors.map(describe_key_error).collect();
        if errors.is_empty() {
            String::new()
        } else {
            format!(" {}", errors.join(","))
        }
    };
    match response {
        StoreResponse::Prewrite(r) => {
            let mut out = errors(&mut r.errors.iter());
            if r.one_pc_commit_ts != 0 {
                out.push_str(&format!(" 1pc commit={}", r.one_pc_commit_ts));
            } else if r.min_commit_ts != 0 {
                out.push_str(&format!(" min_commit={}", r.min_commit_ts));
            }
            out
        }
        StoreResponse::Commit(r) => errors(&mut r.error.as_deref().into_iter()),
        StoreResponse::BatchRollback(r) => errors(&mut r.error.as_deref().into_iter()),
        StoreResponse::ResolveLock(r) => errors(&mut r.error.as_deref().into_iter()),
        StoreResponse::Get(r) => {
            let out = errors(&mut r.error.as_deref().into_iter());
            if out.is_empty() && r.not_found {
                " not found".to_owned()
            } else {
                out
            }
        }
        StoreResponse::BatchGet(r) => {
            errors(&mut r.pairs.iter().filter_map(|p| p.error.as_deref()))
        }
        StoreResponse::Scan(r) => errors(&mut r.pairs.iter().filter_map(|p| p.error.as_deref())),
        StoreResponse::CheckTxnStatus(r) => {
            let out = errors(&mut r.error.as_deref().into_iter());
            let action = kvrpcpb::Action::try_from(r.action)
                .map_or_else(|_| format!("{}", r.action), |a| format!("{a:?}"));
            format!(
                "{out} action={action} ttl={} commit={}",
                r.lock_ttl, r.commit_version
            )
        }
        StoreResponse::CheckSecondaryLocks(r) => {
            let out = errors(&mut r.error.as_deref().into_iter());
            format!("{out} locks={} commit={}", r.locks.len(), r.commit_ts)
        }
        _ => String::new(),
    }
}

/// `pd.Method` with the argument that matters (the key, the id, the count).
fn describe_pd_request(path: &str, payload: &Bytes) -> String {
    let name = tikv_proto::method::find(path).map_or(path, |method| method.name);
    let detail = match name {
        "Tso" => pdpb::TsoRequest::decode(payload.clone())
            .map(|r| format!(" count={}", r.count))
            .ok(),
        "GetRegion" | "GetPrevRegion" => pdpb::GetRegionRequest::decode(payload.clone())
            .map(|r| format!(" key={:?}", region_key_text(&r.region_key)))
            .ok(),
        "GetRegionByID" => pdpb::GetRegionByIdRequest::decode(payload.clone())
            .map(|r| format!(" id={}", r.region_id))
            .ok(),
        "GetStore" => pdpb::GetStoreRequest::decode(payload.clone())
            .map(|r| format!(" id={}", r.store_id))
            .ok(),
        _ => None,
    };
    format!("pd.{name}{}", detail.unwrap_or_default())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A region key as text: a memcomparable-encoded key (the transactional key space's
/// boundaries) as the key it encodes, anything else as it is.
fn region_key_text(key: &[u8]) -> String {
    match tikv_proto::codec::decode_bytes(key) {
        Ok((decoded, rest)) if rest.is_empty() && !key.is_empty() => text(&decoded),
        _ => text(key),
    }
}

fn keys_text(keys: &[Bytes]) -> String {
    let keys: Vec<String> = keys.iter().map(|key| text(key)).collect();
    format!("[{}]", keys.join(","))
}

/// A short, stable description of a raw operation for traces.
pub fn describe_op(op: &Op) -> String {
    match op {
        Op::Get { key } => format!("get {}", text(key)),
        Op::BatchGet { keys } => format!("batch_get {}", keys_text(keys)),
        Op::Put { key, value } => format!("put {}={}", text(key), text(value)),
        Op::BatchPut { pairs } => {
            let pairs: Vec<String> = pairs
                .iter()
                .map(|(key, value)| format!("{}={}", text(key), text(value)))
                .collect();
            format!("batch_put [{}]", pairs.join(","))
        }
        Op::Delete { key } => format!("delete {}", text(key)),
        Op::BatchDelete { keys } => format!("batch_delete {}", keys_text(keys)),
        Op::DeleteRange { start, end } => {
            format!("delete_range [{}, {})", text(start), text(end))
        }
        Op::Scan { start, end, limit } => {
            format!("scan [{}, {}) limit {limit}", text(start), text(end))
        }
        Op::Timestamp => "timestamp".to_owned(),
    }
}

/// A short, stable description of an operation's result for traces.
pub fn describe_result(result: &Result<Answer, Error>) -> String {
    let value = |value: &Option<Bytes>| value.as_ref().map_or("-".to_owned(), |v| text(v));
    match result {
        Ok(Answer::Unit) => "ok".to_owned(),
        Ok(Answer::Value(v)) => format!("ok {}", value(v)),
        Ok(Answer::Values(values)) => {
            let values: Vec<String> = values.iter().map(value).collect();
            format!("ok [{}]", values.join(","))
        }
        Ok(Answer::Pairs(pairs)) => {
            let pairs: Vec<String> = pairs
                .iter()
                .map(|(key, v)| format!("{}={}", text(key), text(v)))
                .collect();
            format!("ok [{}]", pairs.join(","))
        }
        Ok(Answer::Timestamp(ts)) => format!("ok ts {ts}"),
        Err(err) => format!("error: {err}"),
    }
}
