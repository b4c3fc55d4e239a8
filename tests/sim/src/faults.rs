//! Fault injection: rules that replace a store's normal answer for the next N matching
//! requests.
//!
//! A rule matches by store, command name (`RawGet`, `KvPrewrite`, ...) and region, each
//! optional, and fires `remaining` times. Rules are checked in the order they were added, so
//! runs replay exactly.

use tikv_proto::errorpb;
use tikv_proto::status::Status;

/// What a firing rule does to the request.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultAction {
    /// Answer with this region error instead of executing.
    RegionError(Box<errorpb::Error>),
    /// Fail the call with this gRPC status.
    Status(Status),
    /// Lose the request: never execute it, never answer.
    Drop,
    /// Execute the request but lose the answer (the client cannot tell whether it happened).
    DropReply,
    /// Hold the request this long before executing it.
    Delay(u64),
    /// Answer with this key error instead of executing (commands with a key error field).
    KeyError(Box<tikv_proto::kvrpcpb::KeyError>),
    /// A write applied whose reply says its outcome is undetermined: the command runs, and
    /// the answer carries only the `undetermined_result` region error (kvproto's
    /// `UndeterminedResult`, which client-go handles and its mock stores send after applying
    /// a commit). TiKV itself aborts the process on such a write, which [`Self::DropReply`]
    /// models; both leave the client unable to tell whether the write happened. Region errors
    /// found before the command runs are answered as usual, and so is a pessimistic lock
    /// request that waits for another lock (its answer comes later, unchanged).
    UndeterminedAfterApply,
    /// A lost write: answer a command as if it ran (with the answer it would have given),
    /// but leave the raw data and the transactional store as they were, as a store that
    /// acknowledges a write it never persists would (a transaction's commit acknowledged
    /// this way leaves its locks, which resolvers later roll back). Checkers of
    /// acknowledged writes must catch it.
    AckWithoutApply,
}

/// One injection rule.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRule {
    /// Only requests to this store (`None`: any).
    pub store_id: Option<u64>,
    /// Only this command (`None`: any).
    pub command: Option<String>,
    /// Only requests for this region (`None`: any).
    pub region_id: Option<u64>,
    /// What happens.
    pub action: FaultAction,
    /// How many more requests it fires for.
    pub remaining: u32,
}

impl FaultRule {
    /// A rule firing `action` for the next `times` requests of `command` anywhere.
    pub fn command(command: &str, action: FaultAction, times: u32) -> Self {
        Self {
            store_id: None,
            command: Some(command.to_owned()),
            region_id: None,
            action,
            remaining: times,
        }
    }

    fn matches(&self, store_id: u64, command: &str, region_id: u64) -> bool {
        self.remaining > 0
            && self.store_id.is_none_or(|s| s == store_id)
            && self.command.as_deref().is_none_or(|c| c == command)
            && self.region_id.is_none_or(|r| r == region_id)
    }
}

/// The active rules.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    rules: Vec<FaultRule>,
}

impl Faults {
    /// Adds a rule after the existing ones.
    pub fn inject(&mut self, rule: FaultRule) {
        self.rules.push(rule);
    }

    /// Removes every rule.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// Number of rules with firings left.
    pub fn active(&self) -> usize {
        self.rules.iter().filter(|r| r.remaining > 0).count()
    }

    /// The action of the first rule matching this request, consuming one firing.
    pub fn take(&mut self, store_id: u64, command: &str, region_id: u64) -> Option<FaultAction> {
        let rule = self
            .rules
            .iter_mut()
            .find(|rule| rule.matches(store_id, command, region_id))?;
        rule.remaining -= 1;
        let action = rule.action.clone();
        self.rules.retain(|rule| rule.remaining > 0);
        Some(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tikv_proto::status::Code;

    #[test]
    fn rules_fire_in_order_and_run_out() {
        let mut faults = Faults::default();
        faults.inject(FaultRule::command("RawGet", FaultAction::Drop, 2));
        faults.inject(FaultRule {
            store_id: Some(2),
            command: None,
            region_id: None,
            action: FaultAction::Status(Status::new(Code::Unavailable, "down")),
            remaining: 1,
        });
        assert_eq!(faults.take(1, "RawPut", 9), None);
        assert_eq!(faults.take(1, "RawGet", 9), Some(FaultAction::Drop));
        assert!(matches!(
            faults.take(2, "RawPut", 9),
            Some(FaultAction::Status(_))
        ));
        assert_eq!(faults.take(2, "RawGet", 9), Some(FaultAction::Drop));
        assert_eq!(faults.take(2, "RawGet", 9), None);
        assert_eq!(faults.active(), 0);
    }
}
