//! The operations behind user commands: raw KV, region tools, maintenance and PD/TSO
//! queries.
//!
//! [`start`] turns a [`Command`] into its operation. Commands that need the keyspace (every
//! command that touches keys, and GC state queries, whose scope is the keyspace) first wait
//! for it through [`AwaitKeyspace`], so a named keyspace under API V2 is never queried under
//! the wrong scope, whichever command comes first.

pub(crate) mod admin;
mod destroy;
pub(crate) mod keys;
mod locate;
pub(crate) mod raw;
pub(crate) mod split;
pub(crate) mod txn;
pub(crate) mod visibility;

use crate::command::{Command, KeyMode, MaintenanceCommand, PdCommand, RegionCommand, TxnCommand};
use crate::error::Error;
use crate::op::{Cx, KeyspaceWait, Next, Operation};
use crate::outbox::{Reply, RequestId};

pub use raw::{RAW_BATCH_PAIR_COUNT, RAW_BATCH_PUT_SIZE};
pub use split::SPLIT_BATCH_KEY_LIMIT;

use keys::KeySpace;

/// Implements [`Operation`] for a type with
/// `fn drive(&mut self, cx, DispatchInput) -> Option<Result<Output, Error>>` (operations
/// whose work is a region dispatch: they have no children).
macro_rules! driven_operation {
    ($ty:ty) => {
        impl crate::op::Operation for $ty {
            fn on_start(mut self: Box<Self>, cx: &mut crate::op::Cx<'_>) -> crate::op::Next {
                match self.drive(cx, crate::sender::dispatch::DispatchInput::Start) {
                    Some(result) => crate::op::Next::Done(result),
                    None => crate::op::Next::Pending(self),
                }
            }

            fn on_reply(
                mut self: Box<Self>,
                cx: &mut crate::op::Cx<'_>,
                id: crate::outbox::RequestId,
                reply: crate::outbox::Reply,
            ) -> crate::op::Next {
                match self.drive(cx, crate::sender::dispatch::DispatchInput::Reply(id, reply)) {
                    Some(result) => crate::op::Next::Done(result),
                    None => crate::op::Next::Pending(self),
                }
            }

            fn on_timer(mut self: Box<Self>, cx: &mut crate::op::Cx<'_>) -> crate::op::Next {
                match self.drive(cx, crate::sender::dispatch::DispatchInput::Timer) {
                    Some(result) => crate::op::Next::Done(result),
                    None => crate::op::Next::Pending(self),
                }
            }

            fn waiting(self: Box<Self>) -> crate::op::Next {
                crate::op::Next::Pending(self)
            }
        }
    };
}
pub(crate) use driven_operation;

/// The operation that runs `command`. Bad input becomes an operation that fails at once, so
/// every command is answered through the same path.
pub(crate) fn start(command: Command, cx: &Cx<'_>) -> Box<dyn Operation> {
    let keyspace_ready =
        cx.keyspace_id().is_some() || cx.config().api_version != crate::config::ApiVersion::V2;
    if command_needs_keyspace(&command) && !keyspace_ready {
        return Box::new(AwaitKeyspace { command });
    }
    build(command, cx)
}

/// Whether `command` depends on the keyspace (its keys, or the scope of what it asks).
fn command_needs_keyspace(command: &Command) -> bool {
    match command {
        Command::Raw(_)
        | Command::Txn(_)
        | Command::Maintenance(_)
        | Command::Pd(PdCommand::TxnSafePoint | PdCommand::CheckVisibility { .. })
        | Command::Region(
            RegionCommand::LocateKey { .. }
            | RegionCommand::LocateRegionById { .. }
            | RegionCommand::LocateRange { .. }
            | RegionCommand::SplitRegions { .. },
        ) => true,
        Command::Region(
            RegionCommand::WaitScatterRegionFinish { .. }
            | RegionCommand::CheckRegionInScattering { .. },
        )
        | Command::Pd(
            PdCommand::Timestamp
            | PdCommand::LowResolutionTimestamp
            | PdCommand::StaleTimestamp { .. }
            | PdCommand::ClusterId
            | PdCommand::SetExternalTimestamp(_)
            | PdCommand::GetExternalTimestamp,
        ) => false,
    }
}

fn build(command: Command, cx: &Cx<'_>) -> Box<dyn Operation> {
    // Snapshot reads first check the GC safe point (client-go's `CheckVisibility`).
    let read_ts = match &command {
        Command::Txn(
            TxnCommand::Get { options, .. }
            | TxnCommand::BatchGet { options, .. }
            | TxnCommand::Scan { options, .. },
        ) => Some(options.ts),
        _ => None,
    };
    if let Some(start_ts) = read_ts {
        match cx.safe_point(cx.now()) {
            Some(safe_point) => {
                if let Err(err) = crate::safe_point::check(start_ts, safe_point) {
                    return Box::new(Failed(err));
                }
            }
            None => return Box::new(visibility::CheckSafePoint::new(command, start_ts)),
        }
    }
    build_checked(command, cx)
}

/// The operation of `command`, its safe point (if any) already checked.
pub(crate) fn build_checked(command: Command, cx: &Cx<'_>) -> Box<dyn Operation> {
    match try_build(command, cx) {
        Ok(op) => op,
        Err(err) => Box::new(Failed(err)),
    }
}

fn try_build(command: Command, cx: &Cx<'_>) -> Result<Box<dyn Operation>, Error> {
    let config = cx.config();
    let keyspace = cx.keyspace_id();
    let space = |mode: KeyMode| match mode {
        KeyMode::Raw => KeySpace::raw(config.api_version, keyspace),
        KeyMode::Txn => KeySpace::txn(config.api_version, keyspace),
    };
    Ok(match command {
        Command::Raw(raw) => Box::new(raw::RawOp::new(raw, cx)?),
        Command::Region(RegionCommand::SplitRegions {
            mode,
            keys,
            scatter,
            scatter_group,
        }) => Box::new(split::SplitOp::new(
            &space(mode)?,
            &keys,
            scatter.then_some(scatter_group),
            config.read_timeout_short,
        )?),
        Command::Region(RegionCommand::LocateKey { key, mode }) => {
            Box::new(locate::LocateOp::key(space(mode)?, &key))
        }
        Command::Region(RegionCommand::LocateRegionById { region_id, mode }) => {
            Box::new(locate::LocateOp::by_id(space(mode)?, region_id))
        }
        Command::Region(RegionCommand::LocateRange {
            start,
            end,
            mode,
            limit,
        }) => Box::new(locate::LocateOp::range(space(mode)?, &start, &end, limit)),
        Command::Region(RegionCommand::WaitScatterRegionFinish { region_id, budget }) => {
            admin::scatter_wait(region_id, budget)
        }
        Command::Region(RegionCommand::CheckRegionInScattering { region_id }) => {
            admin::scatter_check(region_id)
        }
        Command::Maintenance(MaintenanceCommand::DeleteRange {
            start,
            end,
            notify_only,
        }) => Box::new(raw::RawOp::txn_delete_range(&start, &end, notify_only, cx)?),
        Command::Maintenance(MaintenanceCommand::UnsafeDestroyRange { start, end }) => {
            let txn = space(KeyMode::Txn)?;
            Box::new(destroy::DestroyRangeOp::new(
                txn.request_key(&start),
                txn.request_end(&end),
            ))
        }
        Command::Pd(pd) => admin::build(pd, cx),
        Command::Txn(txn) => build_txn(txn, &space(KeyMode::Txn)?, cx)?,
    })
}

fn build_txn(
    command: TxnCommand,
    space: &KeySpace,
    cx: &Cx<'_>,
) -> Result<Box<dyn Operation>, Error> {
    let config = cx.config();
    let timeout = config.read_timeout_short;
    Ok(match command {
        TxnCommand::Get { key, options } => Box::new(txn::snapshot::ReadKeys::new(
            space.clone(),
            options,
            std::slice::from_ref(&key),
            true,
            timeout,
        )?),
        TxnCommand::BatchGet { keys, options } => Box::new(txn::snapshot::ReadKeys::new(
            space.clone(),
            options,
            &keys,
            false,
            timeout,
        )?),
        TxnCommand::Scan {
            start,
            end,
            limit,
            batch_size,
            key_only,
            reverse,
            options,
        } => Box::new(txn::snapshot::ScanKeys::new(
            space.clone(),
            options,
            txn::snapshot::ScanSpec {
                start,
                end,
                limit,
                batch_size,
                key_only,
                reverse,
            },
            timeout,
        )?),
        TxnCommand::ResolveLocks {
            caller_start_ts,
            locks,
        } => resolve_op(caller_start_ts, locks, false, space, cx),
        TxnCommand::ResolveLocksForRead {
            caller_start_ts,
            locks,
        } => resolve_op(caller_start_ts, locks, true, space, cx),
        TxnCommand::GetTxnStatus {
            txn,
            caller_start_ts,
            primary,
        } => txn::resolve::txn_status(
            resolve_params(caller_start_ts, false, space, cx, STATUS_QUERY_BUDGET),
            txn,
            space.request_key(&primary),
        ),
        TxnCommand::Begin { start_ts } => Box::new(txn::commit::Begin::new(start_ts)),
        TxnCommand::Commit(request) => Box::new(txn::commit::Committer::new(
            *request,
            space,
            config,
            cx.now(),
        )?),
    })
}

/// The lock resolution behind [`TxnCommand::ResolveLocks`] (for a writer) and
/// [`TxnCommand::ResolveLocksForRead`]: never lite, as client-go's `ResolveLocks` and
/// `ResolveLocksForRead(.., lite = false)` are, so big transactions resolve region by region.
fn resolve_op(
    caller_start_ts: crate::oracle::Timestamp,
    locks: Vec<crate::error::LockInfo>,
    for_read: bool,
    space: &KeySpace,
    cx: &Cx<'_>,
) -> Box<dyn Operation> {
    Box::new(txn::resolve::ResolveLocks::new(
        resolve_params(
            caller_start_ts,
            for_read,
            space,
            cx,
            std::time::Duration::from_secs(40),
        ),
        locks,
    ))
}

/// The backoff budget of a [`TxnCommand::GetTxnStatus`] (client-go's
/// `getTxnStatusMaxBackoff`, which `GetTxnStatus` gives its whole call).
const STATUS_QUERY_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);

/// How the lock resolver's requests go out for a caller at `caller_start_ts`, each with
/// `budget` of backoff.
fn resolve_params(
    caller_start_ts: crate::oracle::Timestamp,
    for_read: bool,
    space: &KeySpace,
    cx: &Cx<'_>,
    budget: std::time::Duration,
) -> txn::resolve::ResolveParams {
    let config = cx.config();
    txn::resolve::ResolveParams {
        caller_start_ts,
        for_read,
        lite: false,
        pessimistic_region_resolve: false,
        space: space.clone(),
        timeout: config.read_timeout_short,
        budget,
        max_execution_ms: u64::try_from(config.max_write_execution.as_millis()).unwrap_or(u64::MAX),
    }
}

/// A command waiting for the keyspace (API V2) before it can be built: its keys carry the
/// keyspace prefix, and GC queries are scoped by it.
#[derive(Debug)]
struct AwaitKeyspace {
    command: Command,
}

/// [`AwaitKeyspace`] once it has asked.
#[derive(Debug)]
struct AwaitingKeyspace {
    command: Command,
    call: RequestId,
}

impl AwaitKeyspace {
    fn proceed(command: Command, cx: &mut Cx<'_>) -> Next {
        match cx.ensure_keyspace() {
            KeyspaceWait::Ready => build(command, cx).on_start(cx),
            KeyspaceWait::Parked(call) => {
                Next::Pending(Box::new(AwaitingKeyspace { command, call }))
            }
            KeyspaceWait::Failed(err) => Next::Done(Err(err)),
        }
    }
}

impl Operation for AwaitKeyspace {
    fn on_start(self: Box<Self>, cx: &mut Cx<'_>) -> Next {
        Self::proceed(self.command, cx)
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }
}

impl Operation for AwaitingKeyspace {
    fn on_start(self: Box<Self>, _cx: &mut Cx<'_>) -> Next {
        // Made mid-transition by an earlier state: never started.
        self.waiting()
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }

    fn on_reply(self: Box<Self>, cx: &mut Cx<'_>, id: RequestId, reply: Reply) -> Next {
        match reply {
            Reply::Ready(Ok(())) if id == self.call => AwaitKeyspace::proceed(self.command, cx),
            Reply::Ready(Err(err)) if id == self.call => Next::Done(Err(err)),
            _ => Next::Pending(self),
        }
    }
}

/// A command refused before it ran (bad input): fails when started.
#[derive(Debug)]
struct Failed(Error);

impl Operation for Failed {
    fn on_start(self: Box<Self>, _cx: &mut Cx<'_>) -> Next {
        Next::Done(Err(self.0))
    }

    fn waiting(self: Box<Self>) -> Next {
        Next::Pending(self)
    }
}
