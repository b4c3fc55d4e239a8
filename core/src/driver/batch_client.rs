//! The batch client (client-go's `client-batch`): connection tasks that turn transmits into
//! gRPC calls and replies.
//!
//! - Store addresses get `connections_per_store` tasks, used round-robin. Each keeps one
//!   connection and one BatchCommands stream; every transmit already queued when the task
//!   wakes goes out in one BatchCommands message (up to `max_batch_size`), ids are the core's
//!   request ids, and a receiver task matches answers (in any order) back to them. When the
//!   stream breaks, only its pending requests fail; the next transmit dials and opens a new
//!   stream. Commands the stream has no arm for go as unary calls.
//! - PD addresses get one task: TSO requests go over a Tso stream (answers come back in
//!   order), everything else as unary calls.
//! - A store answer carrying StoreNotMatch closes every connection to its address (client-go's
//!   `CloseAddr`): the address may now belong to another store, or resolve elsewhere. The next
//!   transmit there dials afresh.

use std::collections::{BTreeMap, VecDeque};
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use futures_channel::mpsc;
use futures_core::Stream;
use prost::Message as _;
use tikv_proto::frame::Framed;
use tikv_proto::rpc::{
    self, CallOptions, Channel, RpcError, StreamReceiver as _, StreamSender as _,
};
use tikv_proto::{pdpb, tikvpb};

use super::Reply;
use super::tasks::Tasks;
use crate::machine::{RequestId, Transmit};
use crate::outbox::IdSet;

use crate::config::Config;
use crate::rpc::{PdResponse, Request, Response, StoreResponse};
use crate::runtime::Runtime;
use crate::time::Time;

/// What connection tasks send the driver: every reply they have at hand (one BatchCommands
/// response carries many), so the driver's channel moves once per message, not per reply.
pub(crate) type Replies = Vec<Reply>;

/// Store addresses whose connections are to be closed, reported by the tasks that read the
/// stores' answers and taken by the driver (see [`Connections::close_reported`]).
#[derive(Debug, Default)]
struct CloseRequests {
    /// Set whenever `addresses` is not empty, so the driver's check costs one load.
    any: std::sync::atomic::AtomicBool,
    addresses: Mutex<Vec<Arc<str>>>,
}

/// Reports this task's store address for closing when an answer carries StoreNotMatch.
#[derive(Clone, Debug)]
struct StoreNotMatchWatch {
    address: Arc<str>,
    requests: Arc<CloseRequests>,
}

impl StoreNotMatchWatch {
    /// Looks at one answer; called before the answer goes to the driver, so the driver finds
    /// the address reported when it handles the answer.
    fn check(&self, response: &StoreResponse) {
        let store_not_match = response
            .region_error()
            .is_some_and(|err| err.store_not_match.is_some());
        if store_not_match {
            if let Ok(mut addresses) = self.requests.addresses.lock() {
                addresses.push(Arc::clone(&self.address));
                self.requests.any.store(true, Ordering::Release);
            }
        }
    }
}

/// One store's connection tasks and the transmits the current drain has for it.
struct StoreConnections {
    senders: Vec<mpsc::UnboundedSender<Vec<Transmit>>>,
    /// The connection the next drain goes to.
    next: usize,
    /// This drain's transmits, sent together by [`Connections::end_drain`].
    queued: Vec<Transmit>,
}

/// Routes transmits to connection tasks, spawning them on first use.
pub(crate) struct Connections<R: Runtime> {
    runtime: R,
    replies: mpsc::UnboundedSender<Replies>,
    config: Arc<Config>,
    stores: BTreeMap<Arc<str>, StoreConnections>,
    /// Stores with transmits queued in this drain.
    touched: Vec<Arc<str>>,
    pds: BTreeMap<Arc<str>, mpsc::UnboundedSender<Vec<Transmit>>>,
    close_requests: Arc<CloseRequests>,
    /// Every task spawned for this client.
    tasks: Tasks,
}

impl<R: Runtime> Connections<R> {
    pub(crate) fn new(runtime: R, replies: mpsc::UnboundedSender<Replies>, config: Config) -> Self {
        Self {
            runtime,
            replies,
            config: Arc::new(config),
            stores: BTreeMap::new(),
            touched: Vec::new(),
            pds: BTreeMap::new(),
            close_requests: Arc::default(),
            tasks: Tasks::default(),
        }
    }

    /// Closes every connection to the store addresses reported since the last call (a store
    /// there answered StoreNotMatch). Their tasks' queues close: each task sends what it
    /// already has, half-closes its stream (the store still answers what is outstanding) and
    /// ends, and its connection closes with the last handle. The next transmit to the address
    /// starts fresh tasks, which dial again.
    pub(crate) fn close_reported(&mut self) {
        if !self.close_requests.any.swap(false, Ordering::Acquire) {
            return;
        }
        let addresses = match self.close_requests.addresses.lock() {
            Ok(mut addresses) => std::mem::take(&mut *addresses),
            Err(_) => return,
        };
        for address in addresses {
            // Dropping the senders closes the tasks' queues.
            self.stores.remove(&address);
        }
    }

    /// Shuts every connection down: stops every task (connection tasks, stream receivers,
    /// unary calls) and drops the queues to them; returns the tasks, to wait until each has
    /// ended and dropped its connection.
    pub(crate) fn shut_down(self) -> Tasks {
        self.tasks.stop();
        self.tasks
    }

    /// Queues `transmit` for the task of its address; [`end_drain`](Self::end_drain) sends.
    pub(crate) fn send(&mut self, transmit: Transmit) {
        match &transmit.request {
            Request::Pd(_) => {
                let address = Arc::clone(&transmit.address);
                let message = vec![transmit];
                if let Err(message) = deliver(self.pds.get(&address), message) {
                    // No task yet, or it ended after being idle: start one.
                    let sender = self.spawn_pd(&address);
                    let retried = deliver(Some(&sender), message);
                    self.pds.insert(address, sender);
                    if let Err(message) = retried {
                        fail_all(&self.replies, message, "pd task ended");
                    }
                }
            }
            Request::Store(_) | Request::Health(_) => {
                if !self.stores.contains_key(&transmit.address) {
                    let count = self.config.connections_per_store.max(1);
                    let senders = (0..count)
                        .map(|index| self.spawn_store(&transmit.address, index))
                        .collect();
                    self.stores.insert(
                        Arc::clone(&transmit.address),
                        StoreConnections {
                            senders,
                            next: 0,
                            queued: Vec::new(),
                        },
                    );
                }
                let Some(store) = self.stores.get_mut(&transmit.address) else {
                    return fail(
                        &self.replies,
                        transmit.id,
                        RpcError::ConnectionLost("no connection".into()),
                    );
                };
                if store.queued.is_empty() {
                    self.touched.push(Arc::clone(&transmit.address));
                }
                store.queued.push(transmit);
            }
        }
    }

    /// Ends a drain: each store's queued transmits go to one of its connections as one
    /// message (so they become one BatchCommands message), and the next drain uses the next
    /// connection, spreading load while keeping each drain's batch whole.
    pub(crate) fn end_drain(&mut self) {
        for address in std::mem::take(&mut self.touched) {
            let Some(store) = self.stores.get_mut(&address) else {
                continue;
            };
            let transmits = std::mem::take(&mut store.queued);
            let index = store.next % store.senders.len().max(1);
            store.next = store.next.wrapping_add(1);
            let Err(transmits) = deliver(store.senders.get(index), transmits) else {
                continue;
            };
            // The task ended after being idle: start a new one in its place.
            let sender = self.spawn_store(&address, index);
            let retried = deliver(Some(&sender), transmits);
            if let Some(slot) = self
                .stores
                .get_mut(&address)
                .and_then(|store| store.senders.get_mut(index))
            {
                *slot = sender;
            }
            if let Err(transmits) = retried {
                fail_all(&self.replies, transmits, "store task ended");
            }
        }
    }

    fn spawn_store(
        &self,
        address: &Arc<str>,
        index: usize,
    ) -> mpsc::UnboundedSender<Vec<Transmit>> {
        let (tx, rx) = mpsc::unbounded();
        let watch = StoreNotMatchWatch {
            address: Arc::clone(address),
            requests: Arc::clone(&self.close_requests),
        };
        self.tasks.spawn(
            &self.runtime,
            store_task(
                StoreTask {
                    runtime: self.runtime.clone(),
                    tasks: self.tasks.clone(),
                    address: address.to_string(),
                    index,
                    replies: self.replies.clone(),
                    config: Arc::clone(&self.config),
                    watch,
                },
                rx,
            ),
        );
        tx
    }

    fn spawn_pd(&self, address: &str) -> mpsc::UnboundedSender<Vec<Transmit>> {
        let (tx, rx) = mpsc::unbounded();
        self.tasks.spawn(
            &self.runtime,
            pd_task(
                self.runtime.clone(),
                self.tasks.clone(),
                address.to_owned(),
                rx,
                self.replies.clone(),
                Arc::clone(&self.config),
            ),
        );
        tx
    }
}

/// Hands `transmits` to a task; gives them back when there is no task or it has ended.
fn deliver(
    sender: Option<&mpsc::UnboundedSender<Vec<Transmit>>>,
    transmits: Vec<Transmit>,
) -> Result<(), Vec<Transmit>> {
    match sender {
        Some(sender) => sender
            .unbounded_send(transmits)
            .map_err(mpsc::TrySendError::into_inner),
        None => Err(transmits),
    }
}

fn fail(replies: &mpsc::UnboundedSender<Replies>, id: RequestId, err: RpcError) {
    let _ = replies.unbounded_send(vec![(id, Err(err))]);
}

fn fail_all(replies: &mpsc::UnboundedSender<Replies>, transmits: Vec<Transmit>, why: &str) {
    let err = RpcError::ConnectionLost(why.into());
    let _ = replies.unbounded_send(
        transmits
            .into_iter()
            .map(|transmit| (transmit.id, Err(err.clone())))
            .collect(),
    );
}

/// What a connection task's queue gave.
enum Next {
    /// Transmits to send.
    Batch(Vec<Transmit>),
    /// Nothing for the idle timeout.
    Idle,
    /// The driver is gone and everything queued was taken.
    Closed,
}

/// Waits for the next message of transmits, then takes every one already queued; or reports
/// that the task has been idle long enough, or that the queue is closed and empty.
async fn next_batch<R: Runtime>(
    rx: &mut mpsc::UnboundedReceiver<Vec<Transmit>>,
    idle: &mut IdleTimer<R>,
) -> Next {
    let first = poll_fn(|cx| {
        if let Poll::Ready(next) = Pin::new(&mut *rx).poll_next(cx) {
            return Poll::Ready(Some(next));
        }
        idle.poll_expired(cx).map(|()| None)
    })
    .await;
    let mut batch = match first {
        Some(Some(batch)) => batch,
        Some(None) => return Next::Closed,
        None => return Next::Idle,
    };
    while let Ok(more) = rx.try_recv() {
        batch.extend(more);
    }
    idle.touch();
    Next::Batch(batch)
}

/// Closes an idle task's queue and takes what was already in it; `None` when nothing was, so
/// the task can end. A transmit the driver sends from now on finds the queue closed and goes
/// to a fresh task.
fn close_queue(rx: &mut mpsc::UnboundedReceiver<Vec<Transmit>>) -> Option<Vec<Transmit>> {
    rx.close();
    let mut leftover = Vec::new();
    while let Ok(more) = rx.try_recv() {
        leftover.extend(more);
    }
    (!leftover.is_empty()).then_some(leftover)
}

/// Tells a connection task when it has gone `timeout` without a request. One timer, re-armed
/// only when it fires early, so busy tasks do not create a timer per batch.
struct IdleTimer<R: Runtime> {
    runtime: R,
    timeout: std::time::Duration,
    last_active: Time,
    extensions: u32,
    sleep: Option<rpc::BoxFuture<'static, ()>>,
}

/// Idle periods a connection task waits out for unanswered requests before it closes anyway.
const MAX_IDLE_EXTENSIONS: u32 = 2;

impl<R: Runtime> IdleTimer<R> {
    fn new(runtime: R, timeout: std::time::Duration) -> Self {
        let last_active = runtime.now();
        Self {
            runtime,
            timeout,
            last_active,
            extensions: 0,
            sleep: None,
        }
    }

    fn touch(&mut self) {
        self.last_active = self.runtime.now();
        self.extensions = 0;
    }

    /// Waits one more timeout although the task is idle (requests are still unanswered);
    /// false once that was done [`MAX_IDLE_EXTENSIONS`] times in a row.
    fn extend(&mut self) -> bool {
        if self.extensions >= MAX_IDLE_EXTENSIONS {
            return false;
        }
        self.extensions += 1;
        self.last_active = self.runtime.now();
        true
    }

    /// Ready once the task has been idle for the timeout; never with a zero timeout.
    fn poll_expired(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.timeout.is_zero() {
            return Poll::Pending;
        }
        loop {
            let due = self.last_active + self.timeout;
            let runtime = &self.runtime;
            let sleep = self.sleep.get_or_insert_with(|| runtime.sleep_until(due));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
            if self.runtime.now() >= self.last_active + self.timeout {
                return Poll::Ready(());
            }
            // Requests came since the timer was armed: wait for the rest of the timeout.
        }
    }
}

/// client-go's overload wait: while the store reports a transport load above the threshold,
/// a batch smaller than `batch_wait_size` waits up to `max_batch_wait` for more requests, so
/// an overloaded store gets fewer, larger messages.
async fn wait_for_more<R: Runtime>(
    runtime: &R,
    rx: &mut mpsc::UnboundedReceiver<Vec<Transmit>>,
    batch: &mut Vec<Transmit>,
    config: &Config,
) {
    let deadline = runtime.now() + config.max_batch_wait;
    let mut sleep = runtime.sleep_until(deadline);
    while batch.len() < config.batch_wait_size {
        let more = poll_fn(|cx| {
            if let Poll::Ready(more) = Pin::new(&mut *rx).poll_next(cx) {
                return Poll::Ready(more);
            }
            sleep.as_mut().poll(cx).map(|()| None)
        })
        .await;
        match more {
            Some(more) => batch.extend(more),
            None => return,
        }
    }
}

/// Most requests one BatchCommands stream may have unanswered before it is replaced.
const MAX_PENDING_PER_STREAM: usize = 65_536;

/// The sending half of a Tso stream and the ids of its requests, in order.
type TsoStream<C> = (<C as Channel>::Sender, TsoOrder);

/// Request ids waiting on one Tso stream, in the order PD answers them, with the time each
/// one's deadline passes, shared with its receiver task; `None` once the receiver has ended
/// (PD ended the stream, possibly with an error and before any request was waiting) or the
/// stream was given up: the stream is dead and the next TSO request opens a new one, as the
/// PD client's dispatcher does after a stream error.
type TsoOrder = Arc<Mutex<Option<VecDeque<(u64, Time)>>>>;

/// Request ids waiting on one BatchCommands stream, shared with its receiver task; `None` once
/// the receiver has ended (the stream is dead and must be replaced).
type PendingIds = Arc<Mutex<Option<IdSet<u64>>>>;

struct BatchStream<C: Channel> {
    sender: C::Sender,
    pending: PendingIds,
    /// Dropped with the stream: tells the receiver task that nothing more will be sent, so
    /// it ends once every pending request is answered (rather than waiting for the store to
    /// end the stream, which keeps the connection open).
    _closing: futures_channel::oneshot::Sender<()>,
}

/// What one store connection task works with.
struct StoreTask<R: Runtime> {
    runtime: R,
    tasks: Tasks,
    address: String,
    /// Which of the address's connections this is (sent as `tikv-batch-conn-index`).
    index: usize,
    replies: mpsc::UnboundedSender<Replies>,
    config: Arc<Config>,
    watch: StoreNotMatchWatch,
}

async fn store_task<R: Runtime>(
    task: StoreTask<R>,
    mut rx: mpsc::UnboundedReceiver<Vec<Transmit>>,
) {
    let StoreTask {
        runtime,
        tasks,
        address,
        index,
        replies,
        config,
        watch,
    } = task;
    let mut channel: Option<R::Channel> = None;
    let mut stream: Option<BatchStream<R::Channel>> = None;
    // The transport load the store last reported (client-go's overload signal).
    let load = Arc::new(AtomicU64::new(0));
    let max_batch = config.max_batch_size.max(1);
    let mut idle = IdleTimer::new(runtime.clone(), config.connection_idle_timeout);
    loop {
        let mut batch = match next_batch(&mut rx, &mut idle).await {
            Next::Batch(batch) => batch,
            Next::Closed => break,
            Next::Idle => {
                let unanswered = stream.as_ref().is_some_and(|open| {
                    open.pending
                        .lock()
                        .is_ok_and(|pending| pending.as_ref().is_some_and(|p| !p.is_empty()))
                });
                if unanswered && idle.extend() {
                    // Requests are still out (a long lock wait): not idle yet. Half-closing
                    // would not lose them (the store still answers), so this is bounded.
                    continue;
                }
                // Idle: send what is already queued, then half-close.
                match close_queue(&mut rx) {
                    Some(leftover) => leftover,
                    None => break,
                }
            }
        };
        if !config.max_batch_wait.is_zero()
            && batch.len() < config.batch_wait_size
            && load.load(Ordering::Relaxed) > config.overload_threshold
        {
            wait_for_more(&runtime, &mut rx, &mut batch, &config).await;
        }
        // The BatchCommands messages this batch becomes, built in place (the commands are
        // large; every extra move of them showed in profiles).
        let mut messages: Vec<tikvpb::BatchCommandsRequest> = Vec::new();
        let mut unary = Vec::new();
        let mut health = Vec::new();
        let batch_len = batch.len();
        for transmit in batch {
            let id = transmit.id;
            let request = match transmit.request {
                Request::Store(request) => request,
                Request::Health(probe) => {
                    health.push((id, probe, transmit.timeout));
                    continue;
                }
                Request::Pd(_) => {
                    fail(
                        &replies,
                        id,
                        RpcError::Protocol("PD request sent to a store".into()),
                    );
                    continue;
                }
            };
            match request.into_batch() {
                Ok(cmd) => {
                    let message = match messages.last_mut() {
                        Some(last) if last.requests.len() < max_batch => last,
                        _ => {
                            messages.push(tikvpb::BatchCommandsRequest {
                                requests: Vec::with_capacity(max_batch.min(batch_len)),
                                request_ids: Vec::with_capacity(max_batch.min(batch_len)),
                                ..Default::default()
                            });
                            let Some(last) = messages.last_mut() else {
                                continue;
                            };
                            last
                        }
                    };
                    message.request_ids.push(id.0);
                    message
                        .requests
                        .push(tikvpb::batch_commands_request::Request { cmd: Some(cmd) });
                }
                Err(request) => unary.push((id, request, transmit.timeout)),
            }
        }

        // (Re)connect when needed.
        if channel.as_ref().is_none_or(Channel::is_closed) {
            stream = None;
            match runtime.connect(&address).await {
                Ok(connected) => channel = Some(connected),
                Err(err) => {
                    channel = None;
                    let failed = messages
                        .iter()
                        .flat_map(|message| message.request_ids.iter().map(|&id| RequestId(id)))
                        .chain(unary.into_iter().map(|(id, _, _)| id))
                        .chain(health.into_iter().map(|(id, _, _)| id))
                        .map(|id| (id, Err(err.clone())))
                        .collect();
                    let _ = replies.unbounded_send(failed);
                    continue;
                }
            }
        }
        let Some(connected) = channel.clone() else {
            continue;
        };

        for (id, request, timeout) in unary {
            let channel = connected.clone();
            let replies = replies.clone();
            let limit = config.max_message_size;
            let watch = watch.clone();
            tasks.spawn(&runtime, async move {
                let result = match request.encode(limit) {
                    Ok(framed) => {
                        let path = request.path();
                        match channel
                            .unary(path, framed, CallOptions::with_timeout(timeout))
                            .await
                        {
                            Ok(payload) => request.decode_response(payload).map(|r| {
                                watch.check(&r);
                                Response::Store(Box::new(r))
                            }),
                            Err(err) => Err(err),
                        }
                    }
                    Err(err) => Err(RpcError::Frame(err)),
                };
                let _ = replies.unbounded_send(vec![(id, result)]);
            });
        }
        for (id, probe, timeout) in health {
            let channel = connected.clone();
            let replies = replies.clone();
            tasks.spawn(&runtime, async move {
                use tikv_proto::grpc::health::v1 as health;
                let result = rpc::call(
                    &channel,
                    health::health::CHECK,
                    &probe,
                    CallOptions::with_timeout(timeout),
                    1 << 20,
                )
                .await
                .map(Response::Health);
                let _ = replies.unbounded_send(vec![(id, result)]);
            });
        }
        for message in messages {
            send_batch(
                &runtime,
                &tasks,
                &connected,
                index,
                &mut stream,
                &load,
                &watch,
                &replies,
                &config,
                message,
            )
            .await;
        }
    }
    // Half-close the stream: the store ends it, its receiver task ends, and with the last
    // handle gone the connection closes.
    if let Some(mut open) = stream {
        let _ = open.sender.finish();
    }
}

/// Sends one BatchCommands message on the connection's stream, opening the stream first when
/// there is none (or it died); failures answer the message's requests.
#[allow(clippy::too_many_arguments)]
async fn send_batch<R: Runtime>(
    runtime: &R,
    tasks: &Tasks,
    connected: &R::Channel,
    index: usize,
    stream: &mut Option<BatchStream<R::Channel>>,
    load: &Arc<AtomicU64>,
    watch: &StoreNotMatchWatch,
    replies: &mpsc::UnboundedSender<Replies>,
    config: &Config,
    message: tikvpb::BatchCommandsRequest,
) {
    let register = |open: &BatchStream<R::Channel>| {
        open.pending
            .lock()
            .is_ok_and(|mut pending| match pending.as_mut() {
                // Ids of requests the machine gave up on stay until answered; a stream
                // collecting too many unanswered ones is replaced (the old one fails its
                // leftovers when its receiver ends).
                Some(pending) if pending.len() < MAX_PENDING_PER_STREAM => {
                    pending.extend(message.request_ids.iter().copied());
                    true
                }
                _ => false,
            })
    };
    if !stream.as_ref().is_some_and(register) {
        // No stream yet, or it died since the last batch: open one for this batch.
        *stream = None;
        match open_batch_stream(runtime, tasks, connected, index, load, watch, replies).await {
            Ok(opened) if register(&opened) => *stream = Some(opened),
            Ok(_) => {
                let _ = replies.unbounded_send(
                    message
                        .request_ids
                        .iter()
                        .map(|&id| {
                            (
                                RequestId(id),
                                Err(RpcError::ConnectionLost("batch stream ended".into())),
                            )
                        })
                        .collect(),
                );
                return;
            }
            Err(err) => {
                let _ = replies.unbounded_send(
                    message
                        .request_ids
                        .iter()
                        .map(|&id| (RequestId(id), Err(err.clone())))
                        .collect(),
                );
                return;
            }
        }
    }
    let Some(open) = stream.as_mut() else {
        return;
    };
    let sent = match Framed::encode(&message, config.max_message_size) {
        Ok(framed) => rpc::send(&mut open.sender, framed).await,
        Err(err) => Err(RpcError::Frame(err)),
    };
    if let Err(err) = sent {
        // This stream is broken: fail what it carried; the next batch opens a new one.
        if let Ok(mut pending) = open.pending.lock() {
            if let Some(pending) = pending.as_mut() {
                for id in &message.request_ids {
                    pending.remove(id);
                }
            }
        }
        let _ = replies.unbounded_send(
            message
                .request_ids
                .iter()
                .map(|&id| (RequestId(id), Err(err.clone())))
                .collect(),
        );
        *stream = None;
    }
}

async fn open_batch_stream<R: Runtime>(
    runtime: &R,
    tasks: &Tasks,
    channel: &R::Channel,
    index: usize,
    load: &Arc<AtomicU64>,
    watch: &StoreNotMatchWatch,
    replies: &mpsc::UnboundedSender<Replies>,
) -> Result<BatchStream<R::Channel>, RpcError> {
    let options = CallOptions::default().metadata("tikv-batch-conn-index", index.to_string());
    let (sender, receiver) = channel
        .open_stream(tikvpb::tikv::BATCH_COMMANDS.path(), options)
        .await?;
    let pending: PendingIds = Arc::new(Mutex::new(Some(IdSet::default())));
    let (closing, closed) = futures_channel::oneshot::channel();
    tasks.spawn(
        runtime,
        batch_receiver::<R::Channel>(
            receiver,
            Arc::clone(&pending),
            Arc::clone(load),
            watch.clone(),
            replies.clone(),
            closed,
        ),
    );
    Ok(BatchStream {
        sender,
        pending,
        _closing: closing,
    })
}

/// Reads BatchCommands responses and routes each entry to its request id; when the stream
/// ends, fails every request still pending on it.
async fn batch_receiver<C: Channel>(
    mut receiver: C::Receiver,
    pending: PendingIds,
    load: Arc<AtomicU64>,
    watch: StoreNotMatchWatch,
    replies: mpsc::UnboundedSender<Replies>,
    mut closed: futures_channel::oneshot::Receiver<()>,
) {
    let mut closing = false;
    let nothing_pending = || {
        pending
            .lock()
            .map(|p| p.as_ref().is_none_or(IdSet::is_empty))
            .unwrap_or(true)
    };
    let failure = loop {
        if closing && nothing_pending() {
            // The sending side is gone and every request was answered: drop the stream.
            return;
        }
        let next = poll_fn(|cx| {
            if !closing && Pin::new(&mut closed).poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            receiver.poll_recv(cx).map(Some)
        })
        .await;
        let payload = match next {
            None => {
                closing = true;
                continue;
            }
            Some(Some(Ok(payload))) => payload,
            Some(Some(Err(err))) => break err,
            Some(None) => break RpcError::ConnectionLost("batch stream ended".into()),
        };
        let response = match tikvpb::BatchCommandsResponse::decode(payload) {
            Ok(response) => response,
            Err(err) => {
                break RpcError::Decode {
                    message_type: "tikvpb.BatchCommandsResponse",
                    reason: err.to_string(),
                };
            }
        };
        load.store(response.transport_layer_load, Ordering::Relaxed);
        let mut answered = Vec::with_capacity(response.responses.len());
        {
            let Ok(mut guard) = pending.lock() else {
                break RpcError::Protocol("pending request table poisoned".into());
            };
            let Some(waiting) = guard.as_mut() else {
                break RpcError::ConnectionLost("batch stream ended".into());
            };
            for (entry, id) in response.responses.into_iter().zip(response.request_ids) {
                if !waiting.remove(&id) {
                    // Already failed or never ours: drop it, as client-go does.
                    continue;
                }
                let result = match entry.cmd.and_then(StoreResponse::from_batch) {
                    Some(response) => {
                        watch.check(&response);
                        Ok(Response::Store(Box::new(response)))
                    }
                    None => Err(RpcError::Protocol(
                        "batch response entry without a known arm".into(),
                    )),
                };
                answered.push((RequestId(id), result));
            }
        }
        if !answered.is_empty() {
            let _ = replies.unbounded_send(answered);
        }
    };
    let orphans: Replies = pending
        .lock()
        .map(|mut p| {
            p.take()
                .map(|ids| {
                    // In id order (the order they were sent), whatever the set's layout.
                    let mut ids: Vec<u64> = ids.into_iter().collect();
                    ids.sort_unstable();
                    ids.into_iter()
                        .map(|id| (RequestId(id), Err(failure.clone())))
                        .collect()
                })
                .unwrap_or_default()
        })
        .unwrap_or_default();
    if !orphans.is_empty() {
        let _ = replies.unbounded_send(orphans);
    }
}

async fn pd_task<R: Runtime>(
    runtime: R,
    tasks: Tasks,
    address: String,
    mut rx: mpsc::UnboundedReceiver<Vec<Transmit>>,
    replies: mpsc::UnboundedSender<Replies>,
    config: Arc<Config>,
) {
    let mut channel: Option<R::Channel> = None;
    let mut tso: Option<TsoStream<R::Channel>> = None;
    let mut idle = IdleTimer::new(runtime.clone(), config.connection_idle_timeout);
    loop {
        let batch = match next_batch(&mut rx, &mut idle).await {
            Next::Batch(batch) => batch,
            Next::Closed => break,
            Next::Idle => {
                let unanswered = tso.as_ref().is_some_and(|(_, order)| {
                    order
                        .lock()
                        .is_ok_and(|o| o.as_ref().is_some_and(|o| !o.is_empty()))
                });
                // Bounded as the store tasks': a TSO answer the machine already gave up on
                // would otherwise keep the connection forever.
                if unanswered && idle.extend() {
                    continue;
                }
                // Idle (PD's leader moved elsewhere): as the store tasks.
                match close_queue(&mut rx) {
                    Some(leftover) => leftover,
                    None => break,
                }
            }
        };
        if channel.as_ref().is_none_or(Channel::is_closed) {
            tso = None;
            match runtime.connect(&address).await {
                Ok(connected) => channel = Some(connected),
                Err(err) => {
                    channel = None;
                    for transmit in batch {
                        fail(&replies, transmit.id, err.clone());
                    }
                    continue;
                }
            }
        }
        let Some(connected) = channel.clone() else {
            continue;
        };
        for transmit in batch {
            let Request::Pd(request) = transmit.request else {
                fail(
                    &replies,
                    transmit.id,
                    RpcError::Protocol("store request sent to PD".into()),
                );
                continue;
            };
            let framed = match request.encode(config.max_message_size) {
                Ok(framed) => framed,
                Err(err) => {
                    fail(&replies, transmit.id, RpcError::Frame(err));
                    continue;
                }
            };
            if matches!(*request, crate::rpc::PdRequest::Tso(_)) {
                let deadline = runtime.now() + transmit.timeout;
                send_tso(
                    &runtime,
                    &tasks,
                    &connected,
                    &mut tso,
                    &replies,
                    (transmit.id, deadline),
                    framed,
                )
                .await;
                continue;
            }
            let channel = connected.clone();
            let replies = replies.clone();
            let timeout = transmit.timeout;
            let id = transmit.id;
            tasks.spawn(&runtime, async move {
                let result = match channel
                    .unary(request.path(), framed, CallOptions::with_timeout(timeout))
                    .await
                {
                    Ok(payload) => request
                        .decode_response(payload)
                        .map(|r| Response::Pd(Box::new(r))),
                    Err(err) => Err(err),
                };
                let _ = replies.unbounded_send(vec![(id, result)]);
            });
        }
    }
    // Half-close the Tso stream, as the store tasks do theirs: PD ends it and its receiver
    // task ends.
    if let Some((mut sender, _)) = tso {
        let _ = sender.finish();
    }
}

/// Sends one TSO request (its id and the time its deadline passes) on the connection's Tso
/// stream, opening the stream first when there is none, it died (its receiver ended), or it
/// stalled (a request on it is past its deadline: PD answers in order, so nothing after it
/// can be answered either; the PD client's dispatcher likewise cancels a stream that misses
/// its deadline); a failure answers the request.
async fn send_tso<R: Runtime>(
    runtime: &R,
    tasks: &Tasks,
    connected: &R::Channel,
    tso: &mut Option<TsoStream<R::Channel>>,
    replies: &mpsc::UnboundedSender<Replies>,
    (id, deadline): (RequestId, Time),
    framed: Framed,
) {
    if let Some((_, order)) = tso.as_ref() {
        // A stalled stream is marked dead (its receiver stops at the next answer); the
        // machine gave up on its requests already, so their failures are only for order.
        let now = runtime.now();
        let stalled: Vec<u64> = order
            .lock()
            .map(|mut order| {
                let overdue = order
                    .as_ref()
                    .and_then(VecDeque::front)
                    .is_some_and(|(_, due)| *due <= now);
                match (overdue, order.take()) {
                    (true, Some(waiting)) => waiting.into_iter().map(|(id, _)| id).collect(),
                    (_, taken) => {
                        *order = taken;
                        Vec::new()
                    }
                }
            })
            .unwrap_or_default();
        if !stalled.is_empty() {
            let _ = replies.unbounded_send(
                stalled
                    .into_iter()
                    .map(|id| {
                        let err = RpcError::ConnectionLost("tso stream stalled".into());
                        (RequestId(id), Err(err))
                    })
                    .collect(),
            );
        }
    }
    // Registered before the send, under the lock the receiver takes when it ends: either
    // the receiver is still running and answers or fails the id, or the stream is dead.
    let register = |order: &TsoOrder| {
        order.lock().is_ok_and(|mut order| match order.as_mut() {
            Some(order) => {
                order.push_back((id.0, deadline));
                true
            }
            None => false,
        })
    };
    if !tso.as_ref().is_some_and(|(_, order)| register(order)) {
        if let Some((mut dead, _)) = tso.take() {
            let _ = dead.finish();
        }
        let opened = connected
            .open_stream(pdpb::pd::TSO.path(), CallOptions::default())
            .await;
        match opened {
            Ok((sender, receiver)) => {
                let order: TsoOrder = Arc::new(Mutex::new(Some(VecDeque::new())));
                tasks.spawn(
                    runtime,
                    tso_receiver::<R::Channel>(receiver, Arc::clone(&order), replies.clone()),
                );
                if !register(&order) {
                    fail(
                        replies,
                        id,
                        RpcError::ConnectionLost("tso stream ended".into()),
                    );
                    return;
                }
                *tso = Some((sender, order));
            }
            Err(err) => {
                fail(replies, id, err);
                return;
            }
        }
    }
    let Some((sender, order)) = tso.as_mut() else {
        return;
    };
    if let Err(err) = rpc::send(sender, framed).await {
        // Unless the receiver already failed it, answer it here; the next request opens a
        // new stream.
        let taken = order.lock().is_ok_and(|mut order| {
            order.as_mut().is_some_and(|order| {
                let before = order.len();
                order.retain(|(waiting, _)| *waiting != id.0);
                order.len() != before
            })
        });
        if taken {
            fail(replies, id, err);
        }
        *tso = None;
    }
}

/// Reads Tso responses; PD answers them in request order. When the stream ends, fails every
/// request still waiting on it and marks it dead.
async fn tso_receiver<C: Channel>(
    mut receiver: C::Receiver,
    order: TsoOrder,
    replies: mpsc::UnboundedSender<Replies>,
) {
    let failure = loop {
        let payload = match rpc::recv(&mut receiver).await {
            Some(Ok(payload)) => payload,
            Some(Err(err)) => break err,
            None => break RpcError::ConnectionLost("tso stream ended".into()),
        };
        let next = order
            .lock()
            .ok()
            .and_then(|mut o| o.as_mut().and_then(VecDeque::pop_front));
        let Some((id, _)) = next else {
            break RpcError::Protocol("TSO response without a request".into());
        };
        let result = rpc::decode::<pdpb::TsoResponse>(payload)
            .map(|tso| Response::Pd(Box::new(PdResponse::Tso(tso))));
        let _ = replies.unbounded_send(vec![(RequestId(id), result)]);
    };
    let orphans: Vec<u64> = order
        .lock()
        .map(|mut o| {
            o.take()
                .map(|o| o.into_iter().map(|(id, _)| id).collect())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    if !orphans.is_empty() {
        let _ = replies.unbounded_send(
            orphans
                .into_iter()
                .map(|id| (RequestId(id), Err(failure.clone())))
                .collect(),
        );
    }
}
