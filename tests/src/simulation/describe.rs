//! Stable one-line descriptions of commands, results, replies and faults for traces.

use bytes::Bytes;
use tikv_core::Error;
use tikv_core::machine::{Command, Output, PdCommand, RawCommand, RequestId};
use tikv_core::rpc::Response;
use tikv_proto::errorpb;
use tikv_proto::rpc::RpcError;
use tikv_sim::faults::FaultAction;

use super::ClusterFault;

pub(super) fn describe_ids(ids: &[RequestId]) -> String {
    let ids: Vec<String> = ids.iter().map(|id| format!("#{}", id.get())).collect();
    ids.join(",")
}

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
            };
            let region = rule
                .region_id
                .map_or(String::new(), |id| format!(" on region {id}"));
            format!("inject {action} x{}{region}", rule.remaining)
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

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn keys_text(keys: &[Bytes]) -> String {
    let keys: Vec<String> = keys.iter().map(|key| text(key)).collect();
    format!("[{}]", keys.join(","))
}

/// A short, stable description of a command for traces.
pub fn describe_command(command: &Command) -> String {
    let raw = match command {
        Command::Raw(raw) => raw,
        Command::Pd(PdCommand::Timestamp) => return "timestamp".to_owned(),
        // Commands added later (transactions...) still get a description.
        #[allow(unreachable_patterns)]
        other => return format!("{other:?}"),
    };
    match raw {
        RawCommand::Get { key, .. } => format!("get {}", text(key)),
        RawCommand::BatchGet { keys, .. } => format!("batch_get {}", keys_text(keys)),
        RawCommand::Put { key, value, .. } => format!("put {}={}", text(key), text(value)),
        RawCommand::BatchPut { pairs, .. } => {
            let pairs: Vec<String> = pairs
                .iter()
                .map(|(key, value)| format!("{}={}", text(key), text(value)))
                .collect();
            format!("batch_put [{}]", pairs.join(","))
        }
        RawCommand::Delete { key, .. } => format!("delete {}", text(key)),
        RawCommand::BatchDelete { keys, .. } => format!("batch_delete {}", keys_text(keys)),
        RawCommand::DeleteRange { start, end, .. } => {
            format!("delete_range [{}, {})", text(start), text(end))
        }
        RawCommand::Scan {
            start,
            end,
            limit,
            reverse,
            ..
        } => format!(
            "{} [{}, {}) limit {limit}",
            if *reverse { "reverse_scan" } else { "scan" },
            text(start),
            text(end)
        ),
        other => format!("{other:?}"),
    }
}

/// A short, stable description of an operation's result for traces.
pub fn describe_result(result: &Result<Output, Error>) -> String {
    let value = |value: &Option<Bytes>| value.as_ref().map_or("-".to_owned(), |v| text(v));
    match result {
        Ok(Output::Unit) => "ok".to_owned(),
        Ok(Output::Value(v)) => format!("ok {}", value(v)),
        Ok(Output::Values(values)) => {
            let values: Vec<String> = values.iter().map(value).collect();
            format!("ok [{}]", values.join(","))
        }
        Ok(Output::Pairs(pairs)) => {
            let pairs: Vec<String> = pairs
                .iter()
                .map(|(key, v)| format!("{}={}", text(key), text(v)))
                .collect();
            format!("ok [{}]", pairs.join(","))
        }
        Ok(Output::Timestamp(ts)) => format!("ok ts {ts}"),
        Ok(other) => format!("ok {other:?}"),
        Err(err) => format!("error: {err}"),
    }
}
