//! [`SimRuntime`]: the client's [`Runtime`] in the simulation. Tasks and timers run on the
//! deterministic [`Executor`]; `connect` returns a [`SimChannel`] onto the in-process
//! simulated cluster.
//!
//! A channel carries the bytes the client's batch client produces, exactly as the h2
//! transport would: unary calls, BatchCommands streams (entries answered as they finish, lock
//! waits later and out of order) and PD's Tso stream. Every message takes a seeded latency
//! (messages of one stream stay in order), replies may be lost, and a store that stops breaks
//! its connections. Requests are decoded and run by the cluster exactly as its gRPC server
//! does (see `tikv_sim::server`).

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_channel::mpsc;
use futures_core::Stream;
use prost::Message;
use tikv_core::{Config, Error, Runtime, Time};
use tikv_proto::frame::Framed;
use tikv_proto::rpc::{
    BoxFuture, CallOptions, Channel, RpcError, StreamHalves, StreamReceiver, StreamSender,
};
use tikv_proto::status::{Code, Status};
use tikv_proto::tikvpb::{self, batch_commands_response};
use tikv_sim::cluster::{FORWARDED_HOST_METADATA, PdCallContext};
use tikv_sim::tikv::{Execution, TikvRequest, TikvResponse};

use super::EPOCH_MS;
use super::executor::Executor;
use super::world::{SharedWorld, Target, lock};

/// The simulation's [`Runtime`]. Cheap to clone.
#[derive(Clone)]
pub struct SimRuntime {
    executor: Executor,
    world: SharedWorld,
}

impl std::fmt::Debug for SimRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimRuntime")
            .field("executor", &self.executor)
            .finish_non_exhaustive()
    }
}

impl SimRuntime {
    pub(crate) fn new(executor: Executor, world: SharedWorld) -> Self {
        Self { executor, world }
    }

    /// The executor tasks run on.
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    fn with<T>(&self, f: impl FnOnce(&mut super::world::World) -> T) -> T {
        f(&mut lock(&self.world))
    }
}

impl Runtime for SimRuntime {
    type Channel = SimChannel;

    fn configure(&self, config: &Config) -> Result<Self, Error> {
        // In-process messages have no wire to encrypt; accepting TLS silently would pretend.
        if config.tls().is_some() {
            return Err(Error::InvalidArgument(
                "the simulated network does not do TLS".to_owned(),
            ));
        }
        Ok(self.clone())
    }

    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.executor.spawn(task);
    }

    fn entropy(&self) -> u64 {
        self.executor.entropy()
    }

    fn sleep_until(&self, deadline: Time) -> BoxFuture<'static, ()> {
        self.executor.sleep_until(deadline)
    }

    fn now(&self) -> Time {
        self.executor.now()
    }

    fn wall_clock_ms(&self) -> u64 {
        EPOCH_MS + self.executor.now().as_micros() / 1_000
    }

    fn connect(&self, address: &str) -> BoxFuture<'static, Result<SimChannel, RpcError>> {
        let connected = self
            .with(|world| world.connect(address))
            .map(|target| SimChannel {
                runtime: self.clone(),
                conn: Arc::new(Conn {
                    address: address.to_owned(),
                    target,
                    world: Arc::clone(&self.world),
                }),
            });
        Box::pin(std::future::ready(connected))
    }
}

/// One client connection; the world counts it open until the last clone of its channel and
/// the last stream or call on it are gone.
struct Conn {
    address: String,
    target: Target,
    world: SharedWorld,
}

impl Drop for Conn {
    fn drop(&mut self) {
        lock(&self.world).disconnected(&self.address);
    }
}

/// A gRPC channel onto the simulated cluster.
#[derive(Clone)]
pub struct SimChannel {
    runtime: SimRuntime,
    conn: Arc<Conn>,
}

impl std::fmt::Debug for SimChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimChannel")
            .field("address", &self.conn.address)
            .field("target", &self.conn.target)
            .finish()
    }
}

/// Resolves to `future`'s output, or to `None` once `deadline` passed.
async fn until<T>(
    executor: &Executor,
    deadline: Option<Time>,
    future: impl Future<Output = T>,
) -> Option<T> {
    let mut future = pin!(future);
    let mut timer = deadline.map(|at| executor.sleep_until(at));
    poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        match &mut timer {
            Some(timer) => timer.as_mut().poll(cx).map(|()| None),
            None => Poll::Pending,
        }
    })
    .await
}

impl Channel for SimChannel {
    type Sender = SimSender;
    type Receiver = SimReceiver;

    fn unary(
        &self,
        path: &'static str,
        request: Framed,
        options: CallOptions,
    ) -> BoxFuture<'static, Result<Bytes, RpcError>> {
        let channel = self.clone();
        Box::pin(async move {
            let executor = channel.runtime.executor.clone();
            let deadline = options.timeout.map(|timeout| executor.now() + timeout);
            let call = unary_call(&channel, path, request.payload(), &options);
            match until(&executor, deadline, call).await {
                Some(result) => result,
                None => Err(RpcError::DeadlineExceeded(
                    options.timeout.unwrap_or_default(),
                )),
            }
        })
    }

    fn open_stream(
        &self,
        path: &'static str,
        options: CallOptions,
    ) -> BoxFuture<'static, Result<StreamHalves<Self>, RpcError>> {
        let opened = open_stream(self, path, &options);
        Box::pin(std::future::ready(opened))
    }

    fn is_closed(&self) -> bool {
        !self.runtime.with(|world| world.alive(self.conn.target))
    }
}

/// One unary call: the request travels, runs, and its answer travels back (or is lost, and
/// the caller's deadline ends the call).
async fn unary_call(
    channel: &SimChannel,
    path: &'static str,
    payload: Bytes,
    options: &CallOptions,
) -> Result<Bytes, RpcError> {
    let runtime = &channel.runtime;
    let conn = &channel.conn;
    let health = path == tikv_proto::grpc::health::v1::health::CHECK.path();
    let arrival = runtime.with(|world| {
        let mut lane = Time::ZERO;
        world.arrival(&mut lane)
    });
    runtime.executor.sleep_until(arrival).await;
    let answer = match conn.target {
        Target::Pd { .. } => {
            let Some(member) = runtime.with(|world| world.reach_pd(conn.target)) else {
                return Err(RpcError::ConnectionLost("PD member stopped".to_owned()));
            };
            runtime.with(|world| {
                let now_ms = world.wall_ms();
                let metadata = options
                    .metadata
                    .iter()
                    .map(|(key, value)| (key.as_str(), value.as_str()));
                let context = PdCallContext::with_metadata(member, metadata);
                let answer = world
                    .sim
                    .handle_pd_unary_at(&context, path, payload, now_ms);
                Some(answer.map(|framed| framed.payload()))
            })
        }
        Target::Store { .. } => {
            let Some(store_id) = runtime.with(|world| world.reach(conn.target)) else {
                return Err(RpcError::ConnectionLost("store stopped".to_owned()));
            };
            if health {
                runtime.with(|world| world.log.health_checks += 1);
                Some(health_answer())
            } else {
                match TikvRequest::decode(path, payload) {
                    Ok(request) => match serve(runtime, store_id, request).await {
                        Served::Answer(response) => {
                            Some(response.encode().map(|framed| framed.payload()))
                        }
                        Served::Failed(status) => Some(Err(status)),
                        Served::Never => None,
                    },
                    Err(status) => Some(Err(status)),
                }
            }
        }
    };
    let Some(answer) = answer else {
        runtime.with(|world| world.trace(format_args!("{} dropped a request", conn.address)));
        return std::future::pending().await;
    };
    let back = runtime.with(|world| {
        if world.reply_lost() {
            world.trace(format_args!("reply lost from {}", conn.address));
            return None;
        }
        let mut lane = Time::ZERO;
        Some(world.arrival(&mut lane))
    });
    let Some(back) = back else {
        return std::future::pending().await;
    };
    runtime.executor.sleep_until(back).await;
    if !runtime.with(|world| world.alive(conn.target)) {
        return Err(RpcError::ConnectionLost("server stopped".to_owned()));
    }
    answer.map_err(RpcError::Status)
}

fn health_answer() -> Result<Bytes, Status> {
    use tikv_proto::grpc::health::v1 as health;
    let status = health::health_check_response::ServingStatus::Serving as i32;
    Framed::encode(&health::HealthCheckResponse { status }, usize::MAX)
        .map(|framed| framed.payload())
        .map_err(|err| Status::new(Code::Internal, err.to_string()))
}

/// How the cluster answered one request, once any delay or lock wait is over.
enum Served {
    Answer(TikvResponse),
    Failed(Status),
    /// Lost by an injected fault: no answer ever.
    Never,
}

/// Runs `request` on `store_id`, waiting out injected delays, slow stores and lock waits.
async fn serve(runtime: &SimRuntime, store_id: u64, request: TikvRequest) -> Served {
    let execution = runtime.with(|world| world.execute(store_id, request));
    finish(runtime, store_id, execution).await
}

async fn finish(runtime: &SimRuntime, store_id: u64, mut execution: Execution) -> Served {
    loop {
        execution = match execution {
            Execution::Done(response) => return Served::Answer(response),
            Execution::Failed(status) => return Served::Failed(status),
            Execution::Dropped => return Served::Never,
            Execution::Parked(wait) => {
                let answer = runtime.with(|world| world.park(wait));
                return match answer.await {
                    Ok(response) => Served::Answer(response),
                    Err(_) => Served::Failed(Status::new(Code::Unavailable, "cluster stopped")),
                };
            }
            Execution::Delayed { delay_ms, request } => {
                let at = runtime.with(|world| {
                    world.trace(format_args!("store-{store_id} delayed {delay_ms} ms"));
                    world.now() + std::time::Duration::from_millis(delay_ms)
                });
                runtime.executor.sleep_until(at).await;
                runtime.with(|world| world.execute_after_delay(store_id, request))
            }
        };
    }
}

// ---------------------------------------------------------------------------------------
// Streams.
// ---------------------------------------------------------------------------------------

/// What travels from a stream's server side to its client, in order.
pub(crate) enum Down {
    /// A message, with the request ids it answers (for the trace of a lost reply).
    Message(Bytes, Vec<u64>),
    /// The stream fails with this error.
    Fail(RpcError),
    /// The server ended the stream with OK.
    End,
}

/// What travels from a stream's client to its server side: the arrival time and the payload.
type Up = (Time, Bytes);

#[derive(Clone, Copy, PartialEq, Eq)]
enum StreamKind {
    Batch,
    Tso,
}

/// The order of one stream's messages in each direction: when its last message arrives.
#[derive(Default)]
struct Lanes {
    up: Time,
    down: Time,
}

fn open_stream(
    channel: &SimChannel,
    path: &'static str,
    options: &CallOptions,
) -> Result<StreamHalves<SimChannel>, RpcError> {
    let runtime = &channel.runtime;
    let conn = &channel.conn;
    let kind = match conn.target {
        Target::Store { .. } if path == tikvpb::tikv::BATCH_COMMANDS.path() => StreamKind::Batch,
        Target::Pd { .. } if path == tikv_proto::pdpb::pd::TSO.path() => StreamKind::Tso,
        _ => {
            return Err(RpcError::Status(Status::new(
                Code::Unimplemented,
                format!("the simulated network does not stream {path}"),
            )));
        }
    };
    let (store_id, pd_member) = match conn.target {
        Target::Pd { .. } => match runtime.with(|world| world.reach_pd(conn.target)) {
            Some(member) => (None, Some(member)),
            None => return Err(RpcError::ConnectionLost("PD member stopped".to_owned())),
        },
        Target::Store { .. } => match runtime.with(|world| world.reach(conn.target)) {
            Some(id) => (Some(id), None),
            None => return Err(RpcError::ConnectionLost("store stopped".to_owned())),
        },
    };
    let forwarded_host = options
        .metadata
        .iter()
        .find(|(key, value)| key.eq_ignore_ascii_case(FORWARDED_HOST_METADATA) && !value.is_empty())
        .map(|(_, value)| value.clone());
    let conn_index = options
        .metadata
        .iter()
        .find(|(key, _)| key == "tikv-batch-conn-index")
        .map(|(_, value)| value.clone());
    let (up_tx, up_rx) = mpsc::unbounded::<Up>();
    let (down_tx, down_rx) = mpsc::unbounded::<(Time, Down)>();
    let (client_tx, client_rx) = mpsc::unbounded::<Result<Bytes, RpcError>>();
    let lanes = Arc::new(Mutex::new(Lanes::default()));
    let stream = runtime.with(|world| {
        let logged = (kind == StreamKind::Batch).then(|| conn_index.clone().unwrap_or_default());
        let generation = world.sim.cluster.tso_stream_generation();
        let pd = pd_member.map(|member| (member, Some(generation)));
        world.open_stream(&conn.address, store_id, pd, logged, down_tx.clone())
    });
    let server = StreamServer {
        runtime: runtime.clone(),
        address: conn.address.clone(),
        target: conn.target,
        conn_index: conn_index.unwrap_or_default(),
        forwarded_host,
        stream,
        lanes: Arc::clone(&lanes),
        down: down_tx,
    };
    runtime.executor.spawn(Box::pin(server.run(kind, up_rx)));
    runtime.executor.spawn(Box::pin(deliver(
        runtime.clone(),
        conn.address.clone(),
        down_rx,
        client_tx,
    )));
    let sender = SimSender {
        runtime: runtime.clone(),
        conn: Arc::clone(conn),
        kind,
        lanes,
        up: Some(up_tx),
    };
    let receiver = SimReceiver {
        _conn: Arc::clone(conn),
        messages: client_rx,
    };
    Ok((sender, receiver))
}

/// The sending half of a simulated stream.
pub struct SimSender {
    runtime: SimRuntime,
    conn: Arc<Conn>,
    kind: StreamKind,
    lanes: Arc<Mutex<Lanes>>,
    /// `None` once half-closed.
    up: Option<mpsc::UnboundedSender<Up>>,
}

impl std::fmt::Debug for SimSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimSender")
            .field("address", &self.conn.address)
            .finish_non_exhaustive()
    }
}

fn lock_lanes(lanes: &Mutex<Lanes>) -> std::sync::MutexGuard<'_, Lanes> {
    lanes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl StreamSender for SimSender {
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        let open = self.up.as_ref().is_some_and(|up| !up.is_closed());
        if open && self.runtime.with(|world| world.alive(self.conn.target)) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Ready(Err(RpcError::ConnectionLost("stream closed".to_owned())))
        }
    }

    fn start_send(&mut self, message: Framed) -> Result<(), RpcError> {
        let Some(up) = &self.up else {
            return Err(RpcError::ConnectionLost("stream half-closed".to_owned()));
        };
        let payload = message.payload();
        let address = &self.conn.address;
        let arrival = self.runtime.with(|world| {
            if self.kind == StreamKind::Batch {
                // One line per message of several requests; the requests themselves are in
                // the trace already (the driver's observer writes them).
                if let Ok(batch) = tikvpb::BatchCommandsRequest::decode(payload.clone()) {
                    if batch.request_ids.len() > 1 {
                        let ids: Vec<String> = batch
                            .request_ids
                            .iter()
                            .map(|id| format!("#{id}"))
                            .collect();
                        world.trace(format_args!("=> {address} BatchCommands {}", ids.join(",")));
                    }
                }
            }
            world.arrival(&mut lock_lanes(&self.lanes).up)
        });
        up.unbounded_send((arrival, payload))
            .map_err(|_| RpcError::ConnectionLost("stream closed".to_owned()))
    }

    fn finish(&mut self) -> Result<(), RpcError> {
        self.up = None;
        Ok(())
    }
}

/// The receiving half of a simulated stream.
pub struct SimReceiver {
    _conn: Arc<Conn>,
    messages: mpsc::UnboundedReceiver<Result<Bytes, RpcError>>,
}

impl std::fmt::Debug for SimReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimReceiver").finish_non_exhaustive()
    }
}

impl StreamReceiver for SimReceiver {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, RpcError>>> {
        Pin::new(&mut self.messages).poll_next(cx)
    }
}

/// Moves a stream's server-side output to its client, each item at its arrival time.
async fn deliver(
    runtime: SimRuntime,
    address: String,
    mut down: mpsc::UnboundedReceiver<(Time, Down)>,
    client: mpsc::UnboundedSender<Result<Bytes, RpcError>>,
) {
    while let Some((at, item)) = poll_fn(|cx| Pin::new(&mut down).poll_next(cx)).await {
        runtime.executor.sleep_until(at).await;
        match item {
            Down::Message(payload, _) => {
                let _ = client.unbounded_send(Ok(payload));
            }
            Down::Fail(error) => {
                runtime.with(|world| world.trace(format_args!("{address} stream failed: {error}")));
                let _ = client.unbounded_send(Err(error));
                return;
            }
            Down::End => return,
        }
    }
}

/// The server side of one stream.
struct StreamServer {
    runtime: SimRuntime,
    address: String,
    target: Target,
    conn_index: String,
    /// A PD stream's `pd-forwarded-host`.
    forwarded_host: Option<String>,
    stream: u64,
    lanes: Arc<Mutex<Lanes>>,
    down: mpsc::UnboundedSender<(Time, Down)>,
}

/// What the server side of a stream waits for.
enum Event {
    Message(Up),
    ClientDone,
    Late(u64, Served),
}

impl StreamServer {
    async fn run(self, kind: StreamKind, mut up: mpsc::UnboundedReceiver<Up>) {
        let (late_tx, mut late_rx) = mpsc::unbounded::<(u64, Served)>();
        let mut open = true;
        let mut outstanding = 0usize;
        let mut count = 0usize;
        loop {
            if !open && outstanding == 0 {
                // The client half-closed and every answer went out: end with OK.
                self.send_down(Down::End, false);
                break;
            }
            let event = poll_fn(|cx| {
                if open {
                    match Pin::new(&mut up).poll_next(cx) {
                        Poll::Ready(Some(message)) => return Poll::Ready(Event::Message(message)),
                        Poll::Ready(None) => return Poll::Ready(Event::ClientDone),
                        Poll::Pending => {}
                    }
                }
                match Pin::new(&mut late_rx).poll_next(cx) {
                    Poll::Ready(Some((id, served))) => Poll::Ready(Event::Late(id, served)),
                    _ => Poll::Pending,
                }
            })
            .await;
            let keep_going = match event {
                Event::ClientDone => {
                    open = false;
                    self.runtime
                        .with(|world| world.stream_ended_by_client(self.stream));
                    true
                }
                Event::Late(id, served) => {
                    outstanding = outstanding.saturating_sub(1);
                    if let Served::Answer(TikvResponse::Batch(cmd)) = served {
                        self.answer(vec![(id, cmd)]);
                    }
                    true
                }
                Event::Message((at, payload)) => {
                    self.runtime.executor.sleep_until(at).await;
                    if !self.runtime.with(|world| world.stream_open(self.stream)) {
                        // Broken by a fault or a stop: its handler is gone, the message lost.
                        break;
                    }
                    count += 1;
                    match kind {
                        StreamKind::Batch => {
                            self.on_batch(payload, count, &late_tx, &mut outstanding)
                        }
                        StreamKind::Tso => self.on_tso(payload),
                    }
                }
            };
            if !keep_going {
                break;
            }
        }
        self.runtime.with(|world| world.close_stream(self.stream));
    }

    /// Queues `item` for the client after a latency (or at once, for a failure); a lost
    /// message is never delivered.
    fn send_down(&self, item: Down, may_be_lost: bool) {
        let address = &self.address;
        let at = self.runtime.with(|world| {
            if may_be_lost && world.reply_lost() {
                match &item {
                    Down::Message(_, ids) if !ids.is_empty() => {
                        let ids: Vec<String> = ids.iter().map(|id| format!("#{id}")).collect();
                        world.trace(format_args!("reply lost {}", ids.join(",")));
                    }
                    _ => world.trace(format_args!("reply lost from {address}")),
                }
                return None;
            }
            Some(world.arrival(&mut lock_lanes(&self.lanes).down))
        });
        if let Some(at) = at {
            let _ = self.down.unbounded_send((at, item));
        }
    }

    /// Answers BatchCommands entries in one response message.
    fn answer(&self, entries: Vec<(u64, batch_commands_response::response::Cmd)>) {
        let mut response = tikvpb::BatchCommandsResponse::default();
        {
            let world = lock(&self.runtime.world);
            if let Some(store_id) = world.reach(self.target) {
                response.transport_layer_load = world.sim.transport_load(store_id);
            }
        }
        for (id, cmd) in entries {
            response.request_ids.push(id);
            response
                .responses
                .push(batch_commands_response::Response { cmd: Some(cmd) });
        }
        let ids = response.request_ids.clone();
        match Framed::encode(&response, usize::MAX) {
            Ok(framed) => self.send_down(Down::Message(framed.payload(), ids), true),
            Err(err) => self.send_down(
                Down::Fail(RpcError::Status(Status::new(
                    Code::Internal,
                    err.to_string(),
                ))),
                false,
            ),
        }
    }

    /// Runs one BatchCommands message; false when it broke the stream.
    fn on_batch(
        &self,
        payload: Bytes,
        count: usize,
        late: &mpsc::UnboundedSender<(u64, Served)>,
        outstanding: &mut usize,
    ) -> bool {
        let Some(store_id) = self.runtime.with(|world| world.reach(self.target)) else {
            self.send_down(
                Down::Fail(RpcError::ConnectionLost("store stopped".to_owned())),
                false,
            );
            return false;
        };
        let batch = match tikvpb::BatchCommandsRequest::decode(payload) {
            Ok(batch) => batch,
            Err(err) => {
                let status = Status::new(Code::Internal, err.to_string());
                self.send_down(Down::Fail(RpcError::Status(status)), false);
                return false;
            }
        };
        let broken = self.runtime.with(|world| {
            world.sim.note_batch_message(store_id, batch.requests.len());
            let broken = world.take_stream_fault(&self.conn_index, count);
            let keys = batch
                .requests
                .iter()
                .filter_map(|entry| match &entry.cmd {
                    Some(tikvpb::batch_commands_request::request::Cmd::RawGet(get)) => {
                        Some(get.key.clone())
                    }
                    _ => None,
                })
                .collect();
            world.log.messages.push(super::world::MessageLog {
                stream: self.stream,
                conn_index: self.conn_index.clone(),
                ids: batch.request_ids.clone(),
                keys,
                failed: broken,
            });
            broken
        });
        if broken {
            let status = Status::new(Code::Unavailable, "injected: stream broken");
            self.send_down(Down::Fail(RpcError::Status(status)), false);
            return false;
        }
        let mut ready = Vec::new();
        for (entry, id) in batch.requests.into_iter().zip(batch.request_ids) {
            let Some(cmd) = entry.cmd else {
                // TiKV answers an entry without a command with an empty entry.
                ready.push((
                    id,
                    batch_commands_response::response::Cmd::Empty(Default::default()),
                ));
                continue;
            };
            let execution = self
                .runtime
                .with(|world| world.execute(store_id, TikvRequest::Batch(cmd)));
            match execution {
                Execution::Done(TikvResponse::Batch(cmd)) => ready.push((id, cmd)),
                Execution::Done(_) => {}
                Execution::Failed(status) => {
                    // A gRPC failure inside the stream ends the whole stream, as TiKV does.
                    self.send_down(Down::Fail(RpcError::Status(status)), false);
                    return false;
                }
                Execution::Dropped => {
                    let address = &self.address;
                    self.runtime
                        .with(|world| world.trace(format_args!("{address} #{id} dropped")));
                }
                waiting @ (Execution::Parked(_) | Execution::Delayed { .. }) => {
                    *outstanding += 1;
                    let runtime = self.runtime.clone();
                    let late = late.clone();
                    self.runtime.executor.spawn(Box::pin(async move {
                        let served = finish(&runtime, store_id, waiting).await;
                        let _ = late.unbounded_send((id, served));
                    }));
                }
            }
        }
        if !ready.is_empty() {
            self.answer(ready);
        }
        true
    }

    /// Answers one Tso message; false when it broke the stream.
    fn on_tso(&self, payload: Bytes) -> bool {
        let answer = self.runtime.with(|world| {
            let Some(member) = world.reach_pd(self.target) else {
                return Err(Status::new(Code::Unavailable, "PD member stopped"));
            };
            let now_ms = world.wall_ms();
            let context = PdCallContext {
                member_id: member,
                allow_follower: false,
                forwarded_host: self.forwarded_host.as_deref(),
            };
            world.sim.handle_tso_at(&context, payload, now_ms)
        });
        match answer {
            Ok(framed) => {
                self.send_down(Down::Message(framed.payload(), Vec::new()), true);
                true
            }
            Err(status) => {
                self.send_down(Down::Fail(RpcError::Status(status)), false);
                false
            }
        }
    }
}
