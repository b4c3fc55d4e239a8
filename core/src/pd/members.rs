//! Finding PD's leader and following the group: member discovery over every known URL, the
//! member list as the URL list, and the periodic member check (the PD client's service
//! discovery: `updateMember`, `updateURLs`, `switchLeader`, `updateMemberLoop`).
//!
//! - Discovery asks `GetMembers` of one URL after another; an answer naming a leader (and a
//!   cluster id) ends it. Only after every URL failed once does it back off, with the PD
//!   client's short member-update schedule (20 ms doubling to 100 ms), until its budget runs
//!   out. A round that follows a failed leader starts after that leader's URL, so a dead
//!   leader is asked last.
//! - Every answer replaces the URL list with the members' client URLs (sorted, as
//!   `updateURLs` keeps them), so a client given one address follows members that join and
//!   reaches the others when that one stops.
//! - While PD is reachable, `GetMembers` is asked of the leader every
//!   `pd_member_refresh_interval`; a different leader in the answer takes over at once.
//!   A failed check is simply repeated at the next interval: requests that fail rediscover.

use std::sync::Arc;
use std::time::Duration;

use tikv_proto::pdpb;
use tikv_proto::rpc::RpcError;

use super::{PD_MAX_BACKOFF_MS, PdCx, PdService, address_of};
use crate::error::{Error, PdErrorKind};
use crate::outbox::{Owner, RequestId, TimerKey};
use crate::rpc::{PdRequest, PdResponse, Request, Response};

/// The first sleep of a discovery round that found nobody (the PD client's
/// `UpdateMemberBackOffBaseTime`).
const MEMBER_BACKOFF_BASE_MS: u64 = 20;
/// The longest sleep between discovery rounds (the PD client's `UpdateMemberMaxBackoffTime`).
const MEMBER_BACKOFF_CAP_MS: u64 = 100;

/// The backoff between discovery rounds: doubling from the base to the cap, within
/// [`PD_MAX_BACKOFF_MS`] in total.
#[derive(Debug, Default)]
pub(super) struct MemberBackoff {
    attempt: u32,
    spent_ms: u64,
}

impl MemberBackoff {
    /// The next sleep, or `None` once the budget is spent.
    fn next_sleep(&mut self) -> Option<Duration> {
        if self.spent_ms >= PD_MAX_BACKOFF_MS {
            return None;
        }
        let grown = 1u64
            .checked_shl(self.attempt)
            .and_then(|factor| MEMBER_BACKOFF_BASE_MS.checked_mul(factor))
            .unwrap_or(MEMBER_BACKOFF_CAP_MS);
        let sleep = grown.min(MEMBER_BACKOFF_CAP_MS);
        self.attempt = self.attempt.saturating_add(1);
        self.spent_ms += sleep;
        Some(Duration::from_millis(sleep))
    }
}

/// Which member check a `GetMembers` in flight is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MemberCheck {
    /// Discovery: requests wait for it.
    Discovery,
    /// The periodic check of a known leader: nobody waits.
    Refresh,
}

/// What a `GetMembers` answer says.
struct Members {
    cluster_id: u64,
    leader: Arc<str>,
    urls: Vec<String>,
}

/// Reads a `GetMembers` answer.
///
/// Errors when the call failed, PD answered something else or an error header, or it names
/// no leader (an election is running) or no cluster id.
fn read_members(reply: Result<Response, RpcError>) -> Result<Members, Error> {
    let response = match reply {
        Ok(Response::Pd(response)) => *response,
        Ok(other) => return Err(Error::UnexpectedResponse(format!("{other:?}"))),
        Err(err) => return Err(Error::Rpc(err)),
    };
    let members = match response {
        PdResponse::GetMembers(members) => members,
        other => return Err(Error::UnexpectedResponse(format!("{other:?}"))),
    };
    if let Some(err) = super::pd_error(members.header.as_ref()) {
        return Err(err);
    }
    let cluster_id = members.header.as_ref().map_or(0, |h| h.cluster_id);
    let leader = members
        .leader
        .as_ref()
        .and_then(|leader| leader.client_urls.first())
        .map(|url| Arc::from(address_of(url)));
    let (Some(leader), true) = (leader, cluster_id != 0) else {
        return Err(Error::Pd {
            kind: PdErrorKind::NoLeader,
            message: "PD reported no leader or no cluster id".to_owned(),
        });
    };
    let mut urls: Vec<String> = members
        .members
        .iter()
        .flat_map(|member: &pdpb::Member| member.client_urls.iter())
        .map(|url| address_of(url))
        .filter(|url| !url.is_empty())
        .collect();
    urls.sort();
    urls.dedup();
    Ok(Members {
        cluster_id,
        leader,
        urls,
    })
}

impl PdService {
    /// Starts member discovery if it is not running and its backoff has passed: GetMembers
    /// to the next URL of the round.
    pub(super) fn discover(&mut self, cx: &mut PdCx<'_>) {
        if self
            .member_check
            .is_some_and(|(_, check)| check == MemberCheck::Discovery)
            || self.retry_at.is_some_and(|at| at > cx.out.now())
        {
            return;
        }
        self.retry_at = None;
        let index = self.next_endpoint % self.endpoints.len().max(1);
        let Some(endpoint) = self.endpoints.get(index) else {
            return;
        };
        let id = self.ask_members(cx, Arc::from(endpoint.as_str()));
        // A periodic check still out is superseded: its answer is ignored.
        self.member_check = Some((id, MemberCheck::Discovery));
    }

    /// Forgets the leader after a request to it failed (`failed_at`): the next discovery
    /// round starts after its URL, so it is asked last.
    pub(super) fn lose_leader(&mut self, failed_at: &Arc<str>) {
        if self.leader.as_ref() != Some(failed_at) {
            return;
        }
        self.leader = None;
        if let Some(index) = self.endpoints.iter().position(|e| **e == **failed_at) {
            self.next_endpoint = index + 1;
            self.round_tried = 0;
        }
    }

    /// Sends the periodic member check to the leader when it is due.
    pub(super) fn maybe_refresh_members(&mut self, cx: &mut PdCx<'_>) {
        let due = self
            .next_member_refresh
            .is_some_and(|at| at <= cx.out.now());
        if !due || self.member_check.is_some() {
            return;
        }
        let Some(leader) = self.leader.clone() else {
            return;
        };
        self.next_member_refresh = None;
        let id = self.ask_members(cx, leader);
        self.member_check = Some((id, MemberCheck::Refresh));
    }

    fn ask_members(&mut self, cx: &mut PdCx<'_>, to: Arc<str>) -> RequestId {
        cx.out.transmit(
            Owner::Pd,
            to,
            Request::Pd(Box::new(PdRequest::GetMembers(
                pdpb::GetMembersRequest::default(),
            ))),
            self.settings.timeout,
        )
    }

    /// Takes the answer to a member check.
    pub(super) fn on_members(
        &mut self,
        cx: &mut PdCx<'_>,
        check: MemberCheck,
        reply: Result<Response, RpcError>,
    ) {
        match (read_members(reply), check) {
            (Ok(members), _) => {
                self.cluster_id = members.cluster_id;
                if !members.urls.is_empty() && members.urls != self.endpoints {
                    self.endpoints = members.urls;
                }
                self.switch_leader(members.leader);
                self.discovery_backoff = None;
                self.round_tried = 0;
                self.schedule_member_refresh(cx);
                self.schedule_store_refresh(cx);
                self.dispatch_due(cx);
            }
            (Err(_), MemberCheck::Refresh) => self.schedule_member_refresh(cx),
            (Err(err), MemberCheck::Discovery) => self.on_discovery_failed(cx, err),
        }
    }

    /// Makes `leader` the leader (the caller then sends what waited, and requests that
    /// failed at another leader go at once).
    fn switch_leader(&mut self, leader: Arc<str>) {
        if let Some(index) = self.endpoints.iter().position(|e| **e == *leader) {
            // The next round starts at the leader.
            self.next_endpoint = index;
        }
        self.leader = Some(leader);
    }

    /// One URL did not answer with a leader: try the next one at once, or back off once the
    /// whole round failed; when the budget is spent, every request waiting for a leader fails
    /// with `err` and the next request starts afresh.
    fn on_discovery_failed(&mut self, cx: &mut PdCx<'_>, err: Error) {
        self.next_endpoint = self.next_endpoint.wrapping_add(1);
        self.round_tried += 1;
        if self.round_tried < self.endpoints.len() {
            self.discover(cx);
            return;
        }
        self.round_tried = 0;
        let backoff = self
            .discovery_backoff
            .get_or_insert_with(MemberBackoff::default);
        match backoff.next_sleep() {
            Some(sleep) => {
                let at = cx.out.now() + sleep;
                self.retry_at = Some(at);
                cx.out.set_timer(TimerKey::Pd, at);
            }
            None => {
                self.discovery_backoff = None;
                let queued = std::mem::take(&mut self.queued);
                for (_, pending) in queued {
                    self.give_up(cx, pending, err.clone());
                }
            }
        }
    }

    /// Arms the periodic member check, unless it is off or armed for later (a check that
    /// came due while discovery ran is replaced: discovery just read the members).
    fn schedule_member_refresh(&mut self, cx: &mut PdCx<'_>) {
        let interval = self.settings.member_refresh_interval;
        let now = cx.out.now();
        if interval.is_zero() || self.next_member_refresh.is_some_and(|at| at > now) {
            return;
        }
        let at = now + interval;
        self.next_member_refresh = Some(at);
        cx.out.set_timer(TimerKey::Pd, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_backoff_doubles_to_its_cap_within_the_budget() {
        let mut backoff = MemberBackoff::default();
        let sleeps: Vec<u64> = std::iter::from_fn(|| backoff.next_sleep())
            .map(|sleep| u64::try_from(sleep.as_millis()).unwrap_or(u64::MAX))
            .collect();
        assert_eq!(sleeps[..4], [20, 40, 80, 100]);
        assert!(sleeps[4..].iter().all(|ms| *ms == 100));
        let total: u64 = sleeps.iter().sum();
        assert!((PD_MAX_BACKOFF_MS..PD_MAX_BACKOFF_MS + 100).contains(&total));
    }
}
