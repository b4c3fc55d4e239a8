//! The generic driver: one task that owns the machine (`Core`) by value and connects it to the world
//! through a [`Runtime`].
//!
//! User handles send commands over an in-memory channel; connection tasks (one or more per
//! store address, one per PD address) turn transmits into gRPC calls and send replies back.
//! Encoding and decoding happen in the connection tasks, never in the driver, so the one task
//! that runs the machine does nothing but state transitions. The loop, after quinn's
//! connection driver: take inputs (commands, replies, the timer), then drain transmits to
//! connections and finished operations to their callers, then re-arm the timer.

mod connection;

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use futures_channel::{mpsc, oneshot};
use futures_core::Stream;
use tikv_proto::rpc::{BoxFuture, RpcError};

use crate::config::Config;
use crate::error::Error;
use crate::machine::{Command, Core, Event, OpId, Output, RequestId};
use crate::oracle::Timestamp;
use crate::rpc::Response;
use crate::runtime::Runtime;
use crate::time::Time;

use connection::{Connections, Replies};

/// A reply from a connection task to the driver.
pub(crate) type Reply = (RequestId, Result<Response, RpcError>);

/// What handles send to the driver.
pub(crate) enum Message {
    /// Run a command and send its result back.
    Command(Command, oneshot::Sender<Result<Output, Error>>),
}

/// A cheap, cloneable handle to a running client driver.
#[derive(Clone, Debug)]
pub struct Handle {
    commands: mpsc::UnboundedSender<Message>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Command(command, _) => f.debug_tuple("Command").field(command).finish(),
        }
    }
}

impl Handle {
    /// Runs `command` and waits for its result.
    ///
    /// Errors with the operation's error, or [`Error::Closed`] when the driver is gone.
    pub(crate) async fn run(&self, command: Command) -> Result<Output, Error> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .unbounded_send(Message::Command(command, tx))
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }
}

/// Starts a client for the cluster behind `pd_endpoints` on `runtime`: spawns the driver task
/// and returns a handle to it.
///
/// Errors with [`Error::InvalidArgument`] when no endpoint is given. Connecting happens lazily:
/// the first operation discovers PD.
pub fn start<R: Runtime>(
    runtime: R,
    pd_endpoints: Vec<String>,
    config: Config,
) -> Result<Handle, Error> {
    // An unfixed seed is drawn from the runtime here: the core never reads entropy itself,
    // so that a fixed seed replays.
    let config = config.with_seed_from_runtime(&runtime);
    let core = Core::new(config.clone(), pd_endpoints, runtime.now())?;
    let (commands_tx, commands_rx) = mpsc::unbounded();
    let task = drive(runtime.clone(), core, commands_rx, config);
    runtime.spawn(Box::pin(task));
    Ok(Handle {
        commands: commands_tx,
    })
}

enum Input {
    Command(Message),
    CommandsClosed,
    Replies(Replies),
    Timeout,
}

async fn drive<R: Runtime>(
    runtime: R,
    mut core: Core,
    mut commands: mpsc::UnboundedReceiver<Message>,
    config: Config,
) {
    let (replies_tx, mut replies) = mpsc::unbounded::<Replies>();
    let mut connections = Connections::new(runtime.clone(), replies_tx, config);
    let mut waiters: BTreeMap<OpId, oneshot::Sender<Result<Output, Error>>> = BTreeMap::new();
    let mut timer: Option<(Time, BoxFuture<'static, ()>)> = None;
    let mut commands_open = true;

    loop {
        // Drain everything the last input produced.
        let mut sent = false;
        while let Some(transmit) = core.poll_transmit() {
            connections.send(transmit);
            sent = true;
        }
        if sent {
            connections.end_drain();
        }
        while let Some(Event::Done(op, result)) = core.poll_event() {
            if let Some(waiter) = waiters.remove(&op) {
                // The caller may have stopped waiting; its result is simply dropped.
                let _ = waiter.send(result);
            }
        }
        if !commands_open && core.ops_in_flight() == 0 {
            return;
        }
        // Re-arm only when the machine needs waking earlier than the armed timer: a timer that
        // fires early is harmless (the machine ignores early calls), and keeping it avoids a
        // new timer every time the oldest request completes.
        if let Some(deadline) = core.poll_timeout() {
            if timer.as_ref().is_none_or(|(at, _)| deadline < *at) {
                timer = Some((deadline, runtime.sleep_until(deadline)));
            }
        }

        let input = poll_fn(|cx| {
            if commands_open {
                match Pin::new(&mut commands).poll_next(cx) {
                    Poll::Ready(Some(message)) => return Poll::Ready(Input::Command(message)),
                    Poll::Ready(None) => return Poll::Ready(Input::CommandsClosed),
                    Poll::Pending => {}
                }
            }
            if let Poll::Ready(Some(batch)) = Pin::new(&mut replies).poll_next(cx) {
                return Poll::Ready(Input::Replies(batch));
            }
            if let Some((_, sleep)) = &mut timer {
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Input::Timeout);
                }
            }
            Poll::Pending
        })
        .await;

        let now = runtime.now();
        core.handle_wall_clock(runtime.wall_clock_ms());
        match input {
            Input::Command(Message::Command(command, waiter)) => {
                let op = core.handle_command(now, command);
                waiters.insert(op, waiter);
            }
            Input::CommandsClosed => commands_open = false,
            Input::Replies(batch) => {
                for (id, reply) in batch {
                    core.handle_reply(now, id, reply);
                }
                // Take every reply already queued before draining: one drain, one batch.
                while let Ok(batch) = replies.try_recv() {
                    for (id, reply) in batch {
                        core.handle_reply(now, id, reply);
                    }
                }
                // A StoreNotMatch among them closes that address's connections before any
                // retry is sent there.
                connections.close_reported();
            }
            Input::Timeout => {
                timer = None;
                core.handle_timeout(now);
            }
        }
        // Commands already queued join this drain too, so their requests batch together.
        if commands_open {
            loop {
                match commands.try_recv() {
                    Ok(Message::Command(command, waiter)) => {
                        let op = core.handle_command(now, command);
                        waiters.insert(op, waiter);
                    }
                    Err(mpsc::TryRecvError::Closed) => {
                        commands_open = false;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
    }
}

/// A connected client: the entry point to every API (raw KV today; transactions next).
///
/// Cheap to clone. Created by the runtime crates' `connect` functions (or [`start`] with any
/// [`Runtime`]); the driver task stops once every clone and every API handle is dropped and
/// the last operation finished.
#[derive(Clone, Debug)]
pub struct Client {
    handle: Handle,
}

impl Client {
    /// Starts a client on `runtime` for the cluster behind `pd_endpoints`.
    ///
    /// Errors with [`Error::InvalidArgument`] when no endpoint is given.
    pub fn start<R: Runtime>(
        runtime: R,
        pd_endpoints: Vec<String>,
        config: Config,
    ) -> Result<Self, Error> {
        start(runtime, pd_endpoints, config).map(|handle| Self { handle })
    }

    /// The raw KV API.
    pub fn raw(&self) -> crate::raw_client::RawClient {
        crate::raw_client::RawClient::new(self.handle.clone())
    }

    /// Region tools (locate, split, scatter) in the transactional key space, as client-go's
    /// `KVStore.SplitRegions` and region cache lookups see keys. For raw keys use
    /// [`RawClient::regions`](crate::RawClient::regions).
    pub fn regions(&self) -> crate::regions::Regions {
        crate::regions::Regions::new(self.handle.clone(), crate::machine::KeyMode::Txn)
    }

    /// A timestamp from PD's TSO (requests from concurrent callers share one TSO call).
    ///
    /// Errors when PD cannot be reached within its backoff budget.
    pub async fn current_timestamp(&self) -> Result<Timestamp, Error> {
        self.timestamp(Command::Timestamp).await
    }

    /// A recent timestamp without a PD round trip when the client saw one within
    /// [`Config::low_resolution_ts_staleness`] (client-go's low-resolution timestamp); may be
    /// older than the current time by that much.
    ///
    /// Errors when a fresh timestamp is needed and PD cannot be reached.
    pub async fn low_resolution_timestamp(&self) -> Result<Timestamp, Error> {
        self.timestamp(Command::LowResolutionTimestamp).await
    }

    /// Deletes every version of every transactional key in `[start, end)` (`end` empty: to
    /// the end of the key space), one region at a time (client-go's `KVStore.DeleteRange`).
    /// Returns how many regions the range covered. Unlike a transaction, this is not
    /// atomic: a failure midway leaves the regions before it deleted.
    ///
    /// Errors with [`Error::Server`] when a store refuses, or when a region cannot be reached
    /// within its backoff budget (100 s per region).
    pub async fn delete_range(
        &self,
        start: impl Into<bytes::Bytes>,
        end: impl Into<bytes::Bytes>,
    ) -> Result<u64, Error> {
        self.txn_delete_range(start.into(), end.into(), false).await
    }

    /// [`delete_range`](Self::delete_range) with up to `concurrency` parts of the range in
    /// flight at once (client-go's `DeleteRange` with its concurrency; the range is cut into
    /// tasks of 128 regions by a [`RangeTaskRunner`](crate::range_task::RangeTaskRunner)).
    /// Returns how many regions the range covered.
    ///
    /// Errors as [`delete_range`](Self::delete_range); parts already deleted stay deleted.
    pub async fn delete_range_concurrently(
        &self,
        start: impl Into<bytes::Bytes>,
        end: impl Into<bytes::Bytes>,
        concurrency: usize,
    ) -> Result<u64, Error> {
        let runner = crate::range_task::RangeTaskRunner::new(self.regions(), concurrency);
        // A `KeyRange` keeps this method's "empty end: no bound" reading.
        let range = crate::range_task::KeyRange {
            start_key: start.into(),
            end_key: end.into(),
        };
        let stat = runner
            .run_on_range(range, |range| async move {
                let completed_regions = self
                    .txn_delete_range(range.start_key, range.end_key, false)
                    .await?;
                Ok(crate::range_task::TaskStat {
                    completed_regions,
                    failed_regions: 0,
                })
            })
            .await
            .map_err(|failure| failure.error)?;
        Ok(stat.completed_regions)
    }

    /// Tells the stores holding `[start, end)` that the range is being deleted, without
    /// deleting anything (client-go's notify-only delete range task, which TiFlash
    /// replicas follow). Returns how many regions the range covered.
    ///
    /// Errors as [`delete_range`](Self::delete_range).
    pub async fn notify_delete_range(
        &self,
        start: impl Into<bytes::Bytes>,
        end: impl Into<bytes::Bytes>,
    ) -> Result<u64, Error> {
        self.txn_delete_range(start.into(), end.into(), true).await
    }

    async fn txn_delete_range(
        &self,
        start: bytes::Bytes,
        end: bytes::Bytes,
        notify_only: bool,
    ) -> Result<u64, Error> {
        let command = Command::Raw(crate::machine::RawCommand::TxnDeleteRange {
            start,
            end,
            notify_only,
        });
        match self.handle.run(command).await? {
            Output::Count(regions) => Ok(regions),
            other => Err(other.unexpected()),
        }
    }

    /// Drops the transactional keys of `[start, end)` straight from every store's storage,
    /// bypassing Raft, to free disk space fast (client-go's `KVStore.UnsafeDestroyRange`,
    /// used after GC). The range must never be read or written again; calling this twice
    /// on the same range is fine.
    ///
    /// Errors when PD's store list cannot be had, or with [`Error::Server`] naming every
    /// store that failed (each gets 5 minutes).
    pub async fn unsafe_destroy_range(
        &self,
        start: impl Into<bytes::Bytes>,
        end: impl Into<bytes::Bytes>,
    ) -> Result<(), Error> {
        let command = Command::Raw(crate::machine::RawCommand::UnsafeDestroyRange {
            start: start.into(),
            end: end.into(),
        });
        match self.handle.run(command).await? {
            Output::Unit => Ok(()),
            other => Err(other.unexpected()),
        }
    }

    /// The id of the cluster (client-go's `ClusterID`), asking PD first when the client has
    /// not talked to it yet.
    ///
    /// Errors when PD cannot be reached within its backoff budget.
    pub async fn cluster_id(&self) -> Result<u64, Error> {
        match self.handle.run(Command::ClusterId).await? {
            Output::ClusterId(id) => Ok(id),
            other => Err(other.unexpected()),
        }
    }

    /// Waits until PD has finished scattering region `region_id` (client-go's
    /// `WaitScatterRegionFinish`): polls the region's operator, backing off between polls,
    /// for at most `budget` of backoff (`None`: client-go's 120 s). A region with no
    /// operator counts as finished.
    ///
    /// Errors when the budget runs out while the scatter still runs, or with PD's error.
    pub async fn wait_scatter_region_finish(
        &self,
        region_id: u64,
        budget: Option<std::time::Duration>,
    ) -> Result<(), Error> {
        let command = Command::WaitScatterRegionFinish {
            region_id,
            budget: budget.unwrap_or(std::time::Duration::from_millis(
                crate::backoff::WAIT_SCATTER_REGION_FINISH_BACKOFF_MS,
            )),
        };
        match self.handle.run(command).await? {
            Output::Unit => Ok(()),
            other => Err(other.unexpected()),
        }
    }

    /// Whether PD is scattering region `region_id` right now (client-go's
    /// `CheckRegionInScattering`).
    ///
    /// Errors when PD cannot be asked within 20 s of backoff.
    pub async fn check_region_in_scattering(&self, region_id: u64) -> Result<bool, Error> {
        let command = Command::CheckRegionInScattering { region_id };
        match self.handle.run(command).await? {
            Output::Scattering(scattering) => Ok(scattering),
            other => Err(other.unexpected()),
        }
    }

    /// The transaction safe point (of the keyspace with API V2, else of the cluster): reads
    /// below it are no longer guaranteed, as GC may have removed what they need.
    ///
    /// Errors when PD cannot be reached within its backoff budget, or with PD's error.
    pub async fn txn_safe_point(&self) -> Result<Timestamp, Error> {
        self.timestamp(Command::TxnSafePoint).await
    }

    /// Checks that a read at `start_ts` is above the transaction safe point (client-go's
    /// `CheckVisibility`, asking PD each time rather than trusting a cache); returns the
    /// safe point.
    ///
    /// Errors with [`Error::TxnAbortedByGc`] when `start_ts` is below it, or as
    /// [`txn_safe_point`](Self::txn_safe_point).
    pub async fn check_visibility(&self, start_ts: Timestamp) -> Result<Timestamp, Error> {
        self.timestamp(Command::CheckVisibility { start_ts }).await
    }

    /// A timestamp `prev_secs` seconds older than now (client-go's `GetStaleTimestamp`, for
    /// stale reads): the newest TSO answer's physical time, moved on by the time since it
    /// arrived, minus `prev_secs`, with a zero logical part. Asks PD only when the client
    /// has no timestamp yet.
    ///
    /// Errors with [`Error::InvalidArgument`] when that is before the Unix epoch, or when a
    /// first timestamp cannot be had from PD.
    pub async fn stale_timestamp(&self, prev_secs: u64) -> Result<Timestamp, Error> {
        self.timestamp(Command::StaleTimestamp { prev_secs }).await
    }

    /// The cluster's external timestamp (client-go's `GetExternalTimestamp`);
    /// [`Timestamp::ZERO`] when it was never set.
    ///
    /// Errors when PD cannot be reached within its backoff budget.
    pub async fn external_timestamp(&self) -> Result<Timestamp, Error> {
        self.timestamp(Command::GetExternalTimestamp).await
    }

    /// Sets the cluster's external timestamp (client-go's `SetExternalTimestamp`).
    ///
    /// Errors with [`Error::Pd`] when PD refuses it: it may not move backwards or pass the
    /// current TSO.
    pub async fn set_external_timestamp(&self, timestamp: Timestamp) -> Result<(), Error> {
        match self
            .handle
            .run(Command::SetExternalTimestamp(timestamp))
            .await?
        {
            Output::Unit => Ok(()),
            other => Err(other.unexpected()),
        }
    }

    async fn timestamp(&self, command: Command) -> Result<Timestamp, Error> {
        match self.handle.run(command).await? {
            Output::Timestamp(ts) => Ok(ts),
            other => Err(other.unexpected()),
        }
    }
}
