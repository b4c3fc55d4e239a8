//! PD as a group: several members, at most one leader, elections, and how each member answers
//! a call depending on its role.
//!
//! PD runs as a small cluster (embedded etcd). One member holds the leader lease and serves
//! everything; the others are followers. What a follower does with a call follows PD's
//! `GrpcServer` (server/grpc_service.go):
//!
//! - `GetMembers` and `GetClusterInfo` are answered by every member (no role or cluster id
//!   check): clients learn the leader from any of them. The answer lists every member, running
//!   or not (etcd keeps them until removed), and the leader, or none during an election.
//! - Region lookups (`GetRegion`, `GetPrevRegion`, `GetRegionByID`, `ScanRegions`,
//!   `BatchScanRegions`) go through `unaryFollowerMiddleware`: a follower serves them from its
//!   synced region tree only when the call carries `pd-allow-follower-handle`, else it fails
//!   with `UNAVAILABLE "not leader and follower handling not allowed"`
//!   (`validateRoleInRequest`).
//! - Every other unary call (stores, ids, GC, keyspaces, the resource manager, ...) fails on a
//!   follower with `UNAVAILABLE "not leader"` (`errs.ErrNotLeader`).
//! - The `Tso` stream is accepted by any member, but a follower's allocator refuses to
//!   generate (`Allocator.GenerateTSO`): the stream ends with `UNKNOWN` carrying PD's
//!   `ErrGenerateTimestamp` "requested pd is not leader of cluster".
//! - `QueryRegion` is served by followers too (from the region syncer).
//! - A call carrying `pd-forwarded-host` is forwarded by a follower to that host
//!   (`unaryFollowerMiddleware`, `Tso`), after `validatePDForwardedHost` checks that it is
//!   the leader's client URL; a host that is this member's own URL is served locally.
//!
//! The leader role checks come before the cluster id check, as in `validateRoleInRequest`.
//!
//! Elections: when the leader stops or resigns, the next running member (in member id order,
//! after the old leader) takes over at once while a majority of members runs (etcd needs a
//! quorum); [`Cluster::set_pd_auto_elect`] turns that off, so tests can hold the group
//! leaderless and end the election with [`Cluster::elect_pd_leader`]. TSO stays monotonic
//! across leaders (PD's new leader resumes above the window its predecessor saved; the
//! simulator keeps one allocator).

use tikv_proto::pdpb;
use tikv_proto::status::{Code, Status};

use super::pd::{PdError, header_check};
use super::{Cluster, ClusterError};

/// The metadata key that lets a PD follower serve region lookups itself.
pub const FOLLOWER_HANDLE_METADATA: &str = "pd-allow-follower-handle";
/// The metadata key that asks a PD follower to forward the call to this host (the leader).
pub const FORWARDED_HOST_METADATA: &str = "pd-forwarded-host";

/// One PD member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PdMember {
    /// The member id (etcd's member id).
    pub id: u64,
    /// The member's name.
    pub name: String,
    /// The URL clients reach it at, `http://host:port` (empty until a server binds it).
    pub client_url: String,
    /// False while the member's process is stopped.
    pub running: bool,
}

impl PdMember {
    /// The wire form GetMembers lists.
    pub fn to_proto(&self) -> pdpb::Member {
        let urls = if self.client_url.is_empty() {
            Vec::new()
        } else {
            vec![self.client_url.clone()]
        };
        pdpb::Member {
            name: self.name.clone(),
            member_id: self.id,
            peer_urls: urls.clone(),
            client_urls: urls,
            ..Default::default()
        }
    }
}

/// Which role check a PD call goes through (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PdCallKind {
    /// Answered by any running member (`GetMembers`, `GetClusterInfo`, health).
    AnyMember,
    /// A region lookup a follower may serve when the caller allows it.
    FollowerAllowed,
    /// Served by the leader only.
    LeaderOnly,
}

impl PdCallKind {
    /// The kind of the unary call at gRPC `path`.
    pub fn of_path(path: &str) -> Self {
        use pdpb::pd;
        let any = [pd::GET_MEMBERS.path(), pd::GET_CLUSTER_INFO.path()];
        let follower = [
            pd::GET_REGION.path(),
            pd::GET_PREV_REGION.path(),
            pd::GET_REGION_BY_ID.path(),
            pd::SCAN_REGIONS.path(),
            pd::BATCH_SCAN_REGIONS.path(),
        ];
        // Every etcd member serves the KV API (reads and writes reach etcd's raft leader
        // inside etcd, whichever member PD elected).
        if any.contains(&path)
            || path.starts_with("/grpc.health.v1.")
            || path.starts_with("/etcdserverpb.")
        {
            Self::AnyMember
        } else if follower.contains(&path) {
            Self::FollowerAllowed
        } else {
            Self::LeaderOnly
        }
    }
}

/// What a PD call carries besides its message: the member it reached and the metadata PD's
/// role checks read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PdCallContext<'a> {
    /// The member whose port the call arrived at.
    pub member_id: u64,
    /// The call carries `pd-allow-follower-handle`.
    pub allow_follower: bool,
    /// The call's `pd-forwarded-host`, if any.
    pub forwarded_host: Option<&'a str>,
}

impl<'a> PdCallContext<'a> {
    /// A call to `member_id` without metadata.
    pub fn at(member_id: u64) -> Self {
        Self {
            member_id,
            ..Self::default()
        }
    }

    /// Reads PD's metadata keys from `(key, value)` pairs.
    pub fn with_metadata(
        member_id: u64,
        metadata: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let mut context = Self::at(member_id);
        for (key, value) in metadata {
            if key.eq_ignore_ascii_case(FOLLOWER_HANDLE_METADATA) {
                context.allow_follower = true;
            } else if key.eq_ignore_ascii_case(FORWARDED_HOST_METADATA) && !value.is_empty() {
                context.forwarded_host = Some(value);
            }
        }
        context
    }
}

/// The PD group's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PdGroup {
    /// Members in id order.
    pub(crate) members: Vec<PdMember>,
    /// The member holding the leader lease.
    pub(crate) leader: Option<u64>,
    /// The last member that led, where the next election starts looking.
    pub(crate) last_leader: Option<u64>,
    /// Elect a new leader as soon as the group has none.
    pub(crate) auto_elect: bool,
    /// How many times every Tso stream was broken; a stream opened at an older generation
    /// ends with `tso_break_status`.
    pub(crate) tso_generation: u64,
    pub(crate) tso_break_status: Option<Status>,
}

impl PdGroup {
    /// `count` members (at least one) named after `name`, ids from `first_id`, the first one
    /// leading.
    pub(crate) fn new(name: &str, first_id: u64, count: u32) -> Self {
        let count = count.max(1);
        let members = (0..u64::from(count))
            .map(|i| PdMember {
                id: first_id + i,
                name: if count == 1 {
                    name.to_owned()
                } else {
                    format!("{name}-{}", i + 1)
                },
                client_url: String::new(),
                running: true,
            })
            .collect();
        Self {
            members,
            leader: Some(first_id),
            last_leader: Some(first_id),
            auto_elect: true,
            tso_generation: 0,
            tso_break_status: None,
        }
    }
}

/// The message PD's TSO allocator fails with on a member that does not hold the lease.
const TSO_NOT_LEADER: &str =
    "[PD:tso:ErrGenerateTimestamp]generate timestamp failed, requested pd is not leader of cluster";

impl PdError {
    /// The status for a role failure (the variants below are all role failures).
    pub(crate) fn role_status(&self) -> Option<Status> {
        let status = match self {
            Self::NotLeader => Status::new(Code::Unavailable, "not leader"),
            Self::FollowerHandlingNotAllowed => Status::new(
                Code::Unavailable,
                "not leader and follower handling not allowed",
            ),
            Self::NotStarted => Status::new(Code::Unavailable, "server not started"),
            Self::TsoNotLeader => Status::new(Code::Unknown, TSO_NOT_LEADER),
            Self::ForwardedHostNotLeader { host } => Status::new(
                Code::InvalidArgument,
                format!(
                    "forwarded host {host:?} is not a client URL of the PD leader: pd is not leader of cluster"
                ),
            ),
            Self::ForwardFailed { host } => Status::new(
                Code::Unavailable,
                format!("forwarding to {host} failed: connection refused"),
            ),
            _ => return None,
        };
        Some(status)
    }
}

/// `http://host:port` and `https://host:port` name the same member (PD's
/// `isSamePDClientURL`: clients may change the scheme to match their TLS settings).
fn same_client_url(a: &str, b: &str) -> bool {
    fn base(url: &str) -> Option<&str> {
        url.strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .map(|rest| rest.trim_end_matches('/'))
    }
    matches!((base(a), base(b)), (Some(a), Some(b)) if a == b)
}

impl Cluster {
    /// Every PD member, in id order.
    pub fn pd_members(&self) -> &[PdMember] {
        &self.pd.members
    }

    /// The PD member with this id.
    pub fn pd_member(&self, member_id: u64) -> Option<&PdMember> {
        self.pd.members.iter().find(|m| m.id == member_id)
    }

    /// The PD leader, or `None` during an election.
    pub fn pd_leader(&self) -> Option<&PdMember> {
        self.pd.leader.and_then(|id| self.pd_member(id))
    }

    /// The member a caller that names no member reaches: the leader, else the first running
    /// member, else the first member.
    pub fn pd_default_member(&self) -> u64 {
        self.pd
            .leader
            .or_else(|| self.pd.members.iter().find(|m| m.running).map(|m| m.id))
            .or_else(|| self.pd.members.first().map(|m| m.id))
            .unwrap_or(self.config.pd_member_id)
    }

    /// The member whose client URL is `url` (scheme ignored).
    pub fn pd_member_by_url(&self, url: &str) -> Option<u64> {
        self.pd
            .members
            .iter()
            .find(|m| same_client_url(&m.client_url, url))
            .map(|m| m.id)
    }

    /// Records the URL a member serves at (`http://host:port`), as GetMembers reports it.
    ///
    /// Errors when no member has this id.
    pub fn set_pd_member_url(&mut self, member_id: u64, url: &str) -> Result<(), ClusterError> {
        self.pd_member_mut(member_id)?.client_url = url.to_owned();
        Ok(())
    }

    /// Adds a member (PD's `join`), running, as a follower; returns its id.
    pub fn add_pd_member(&mut self) -> u64 {
        let id = self
            .pd
            .members
            .iter()
            .map(|m| m.id)
            .max()
            .map_or(self.config.pd_member_id, |max| max + 1);
        let index = self.pd.members.len() + 1;
        self.pd.members.push(PdMember {
            id,
            name: format!("{}-{index}", self.config.pd_name),
            client_url: String::new(),
            running: true,
        });
        self.maybe_elect();
        id
    }

    /// Removes a member from the group (PD's member deletion: etcd forgets it), stopping it
    /// first; the quorum is counted over the members left.
    ///
    /// Errors when no member has this id, or when it is the last one.
    pub fn remove_pd_member(&mut self, member_id: u64) -> Result<(), ClusterError> {
        self.pd_member_mut(member_id)?;
        if self.pd.members.len() == 1 {
            return Err(ClusterError::InvalidConfig(
                "cannot remove the last PD member",
            ));
        }
        self.pd.members.retain(|m| m.id != member_id);
        if self.pd.leader == Some(member_id) {
            self.pd.leader = None;
        }
        self.maybe_elect();
        Ok(())
    }

    /// Whether an election ends at once when the group has no leader (the default). Turned
    /// off, the group stays leaderless until [`Cluster::elect_pd_leader`].
    pub fn set_pd_auto_elect(&mut self, on: bool) {
        self.pd.auto_elect = on;
        self.maybe_elect();
    }

    /// Stops a member's process; a stopped leader loses the lease (then the election runs as
    /// configured). Clients can no longer reach it.
    ///
    /// Errors when no member has this id.
    pub fn stop_pd_member(&mut self, member_id: u64) -> Result<(), ClusterError> {
        self.pd_member_mut(member_id)?.running = false;
        if self.pd.leader == Some(member_id) {
            self.pd.leader = None;
        }
        self.maybe_elect();
        Ok(())
    }

    /// Restarts a stopped member, as a follower.
    ///
    /// Errors when no member has this id.
    pub fn restart_pd_member(&mut self, member_id: u64) -> Result<(), ClusterError> {
        self.pd_member_mut(member_id)?.running = true;
        self.maybe_elect();
        Ok(())
    }

    /// The leader gives up its lease (PD's `ResignLeader`); returns the member that led. With
    /// automatic elections another running member takes over at once.
    ///
    /// Errors with [`ClusterError::PdNoLeader`] when there is no leader.
    pub fn resign_pd_leader(&mut self) -> Result<u64, ClusterError> {
        let old = self.pd.leader.take().ok_or(ClusterError::PdNoLeader)?;
        self.pd.last_leader = Some(old);
        self.maybe_elect();
        Ok(old)
    }

    /// Moves the lease to `member_id` (PD's leader transfer: the leader resigns naming its
    /// successor), or ends an election with that member as leader.
    ///
    /// Errors when the member does not exist or is stopped, or when a majority of the members
    /// is stopped (etcd elects nobody without a quorum).
    pub fn transfer_pd_leader(&mut self, member_id: u64) -> Result<(), ClusterError> {
        let member = self.pd_member_mut(member_id)?;
        if !member.running {
            return Err(ClusterError::PdMemberStopped { member_id });
        }
        if !self.pd_has_quorum() {
            return Err(ClusterError::PdNoQuorum);
        }
        self.pd.leader = Some(member_id);
        self.pd.last_leader = Some(member_id);
        Ok(())
    }

    /// Ends an election: the next running member after the last leader (in id order) leads;
    /// returns it. A group that has a leader keeps it.
    ///
    /// Errors with [`ClusterError::PdNoQuorum`] when a majority of the members is stopped.
    pub fn elect_pd_leader(&mut self) -> Result<u64, ClusterError> {
        if let Some(leader) = self.pd.leader {
            return Ok(leader);
        }
        if !self.pd_has_quorum() {
            return Err(ClusterError::PdNoQuorum);
        }
        let after = self.pd.last_leader.unwrap_or(0);
        let running: Vec<u64> = self
            .pd
            .members
            .iter()
            .filter(|m| m.running)
            .map(|m| m.id)
            .collect();
        let next = running
            .iter()
            .copied()
            .find(|id| *id > after)
            .or_else(|| running.first().copied())
            .ok_or(ClusterError::PdNoQuorum)?;
        self.pd.leader = Some(next);
        self.pd.last_leader = Some(next);
        Ok(next)
    }

    /// Breaks every open Tso stream: each ends with `status` (the server ends the stream with
    /// an error, as PD does when its allocator fails or the stream's context is cancelled).
    /// Streams opened afterwards work.
    pub fn break_tso_streams(&mut self, status: Status) {
        self.pd.tso_generation += 1;
        self.pd.tso_break_status = Some(status);
    }

    /// The generation a Tso stream opened now belongs to.
    pub fn tso_stream_generation(&self) -> u64 {
        self.pd.tso_generation
    }

    /// How a Tso stream opened at `generation` must end now, if it was broken since.
    pub fn tso_stream_break(&self, generation: u64) -> Option<Status> {
        if generation < self.pd.tso_generation {
            self.pd.tso_break_status.clone()
        } else {
            None
        }
    }

    /// Whether a majority of the members runs.
    pub fn pd_has_quorum(&self) -> bool {
        let running = self.pd.members.iter().filter(|m| m.running).count();
        running * 2 > self.pd.members.len()
    }

    /// PD's role check for a call reaching `context.member_id` (see the module docs); returns
    /// the member that answers it (another one when a follower forwards it).
    ///
    /// Errors with the role failure PD answers as a gRPC status.
    pub fn pd_role_check(
        &self,
        kind: PdCallKind,
        context: &PdCallContext<'_>,
    ) -> Result<u64, PdError> {
        let member = self
            .pd_member(context.member_id)
            .filter(|m| m.running)
            .ok_or(PdError::NotStarted)?;
        if kind == PdCallKind::AnyMember {
            return Ok(member.id);
        }
        if let Some(host) = context.forwarded_host {
            let leader = self.pd_leader().ok_or(PdError::NotLeader)?;
            if !same_client_url(&leader.client_url, host) {
                return Err(PdError::ForwardedHostNotLeader {
                    host: host.to_owned(),
                });
            }
            if !same_client_url(&member.client_url, host) {
                // The follower proxies the call to the leader.
                if !leader.running {
                    return Err(PdError::ForwardFailed {
                        host: host.to_owned(),
                    });
                }
                return Ok(leader.id);
            }
        }
        if self.pd.leader == Some(member.id) {
            return Ok(member.id);
        }
        match kind {
            PdCallKind::FollowerAllowed if context.allow_follower => Ok(member.id),
            PdCallKind::FollowerAllowed => Err(PdError::FollowerHandlingNotAllowed),
            _ => Err(PdError::NotLeader),
        }
    }

    /// The checks of one Tso message at `context.member_id`, in PD's `Tso` order (member
    /// started, forwarding, cluster id, then the allocator's lease); returns the member that
    /// generates the timestamp (the leader, reached directly or through a forwarding
    /// follower).
    ///
    /// Errors with [`PdError::TsoNotLeader`] on a follower, as PD's allocator does, with
    /// [`PdError::ClusterIdMismatch`], and with the failures of [`Cluster::pd_role_check`].
    pub fn pd_tso_check(
        &self,
        context: &PdCallContext<'_>,
        header: Option<&pdpb::RequestHeader>,
    ) -> Result<u64, PdError> {
        let serving = match self.pd_role_check(PdCallKind::LeaderOnly, context) {
            Err(PdError::NotLeader) if context.forwarded_host.is_none() => None,
            Err(err) => return Err(err),
            Ok(member) => Some(member),
        };
        header_check(self, header)?;
        serving.ok_or(PdError::TsoNotLeader)
    }

    /// `GetMembers` as member `member_id` answers it: every member, the leader (none during
    /// an election) and etcd's leader (the PD leader; while PD has none, the first running
    /// member when etcd has a quorum). `fallback_url` stands in for members whose URL was
    /// never set. Not cluster-id checked (clients learn the id here).
    pub fn handle_get_members(
        &self,
        _req: &pdpb::GetMembersRequest,
        fallback_url: &str,
    ) -> pdpb::GetMembersResponse {
        let proto = |member: &PdMember| {
            let mut proto = member.to_proto();
            if proto.client_urls.is_empty() && !fallback_url.is_empty() {
                proto.client_urls = vec![fallback_url.to_owned()];
                proto.peer_urls = vec![fallback_url.to_owned()];
            }
            proto
        };
        let leader = self.pd_leader().map(proto);
        let etcd_leader = leader.clone().or_else(|| {
            self.pd_has_quorum()
                .then(|| self.pd.members.iter().find(|m| m.running).map(proto))
                .flatten()
        });
        pdpb::GetMembersResponse {
            header: Some(self.header()),
            members: self.pd.members.iter().map(proto).collect(),
            leader,
            etcd_leader,
            tso_allocator_leaders: Default::default(),
        }
    }

    /// Elects a leader if the group has none, elections are automatic and a quorum runs.
    fn maybe_elect(&mut self) {
        if self.pd.auto_elect && self.pd.leader.is_none() && self.pd_has_quorum() {
            let _ = self.elect_pd_leader();
        }
    }

    fn pd_member_mut(&mut self, member_id: u64) -> Result<&mut PdMember, ClusterError> {
        self.pd
            .members
            .iter_mut()
            .find(|m| m.id == member_id)
            .ok_or(ClusterError::PdMemberNotFound { member_id })
    }
}

#[cfg(test)]
#[path = "members_tests.rs"]
mod tests;
