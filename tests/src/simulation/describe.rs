//! Stable one-line descriptions of operations, results, wire messages and faults for traces.

use bytes::Bytes;
use prost::Message;
use tikv_core::Error;
use tikv_core::rpc::{Request, Response};
use tikv_proto::rpc::RpcError;
use tikv_proto::{errorpb, pdpb};
use tikv_sim::faults::FaultAction;

use super::ClusterFault;
use super::ops::{Answer, Op};

/// A short, stable description of a cluster fault for traces.
pub fn describe_fault(fault: &ClusterFault) -> String {
    match fault {
        ClusterFault::Split(key) => format!("split at {}", text(key)),
        ClusterFault::MergeRight(key) => format!("merge right of {:?}", text(key)),
        ClusterFault::TransferLeader { key, store_id } => {
            format!("leader of {:?} to store {store_id}", text(key))
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
            format!("{} region={region}", store.name())
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
            None => "ok".to_owned(),
        },
        Ok(Response::Pd(_) | Response::Health(_)) => "ok".to_owned(),
        Err(err) => format!("error: {err}"),
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
            .map(|r| format!(" key={:?}", text(&r.region_key)))
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
