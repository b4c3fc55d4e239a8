//! The generic driver: one task that owns the machine (`Core`) by value and connects it to the world
//! through a [`Runtime`].
//!
//! User handles send commands over an in-memory queue; the batch client's connection tasks
//! (one or more per store address, one per PD address) turn transmits into gRPC calls and
//! send replies back. Encoding and decoding happen in the connection tasks, never in the
//! driver, so the one task that runs the machine does nothing but state transitions. The
//! loop, after quinn's connection driver: take inputs (messages from handles, replies, the
//! timer), then drain transmits to connections and finished operations to their callers,
//! then re-arm the timer.
//!
//! - **Backpressure.** At most [`COMMAND_QUEUE_CAPACITY`] commands wait in the queue; further
//!   callers wait for room, in arrival order.
//! - **Cancellation.** A caller that drops an operation's future before it finished cancels
//!   the operation in the machine (`Core::cancel`): the call tells the driver the
//!   operation's id (see `call.rs`), so no waiter is ever scanned.
//! - **Shutdown.** After [`Client::close`](crate::Client::close), or once every handle is
//!   gone, the driver takes no new commands (they fail with [`Error::Closed`]), lets the
//!   operations in flight finish, then stops every connection task and waits until each has
//!   ended and dropped its connection. Should the driver itself stop (its runtime shut
//!   down), every caller still waiting gets [`Error::Closed`].

mod batch_client;
mod call;
mod gate;
mod tasks;

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use futures_channel::{mpsc, oneshot};
use futures_core::Stream;
use tikv_proto::rpc::{BoxFuture, RpcError};

use crate::config::Config;
use crate::error::Error;
use crate::machine::{Command, Core, Event, OpId, Output, RequestId};
use crate::outbox::IdMap;
use crate::rpc::Response;
use crate::runtime::Runtime;
use crate::time::Time;

use batch_client::{Connections, Replies};
use call::Reply as CallReply;
use gate::Gate;

pub use gate::COMMAND_QUEUE_CAPACITY;

/// A reply from a connection task to the driver.
pub(crate) type Reply = (RequestId, Result<Response, RpcError>);

/// What an operation's caller gets back.
type Outcome = Result<Output, Error>;

/// What handles send to the driver.
pub(crate) enum Message {
    /// Run a command and send its result back.
    Command(Command, CallReply<Outcome>),
    /// The caller of this operation stopped waiting: cancel it.
    Cancel(OpId),
    /// Take no more commands, finish what is in flight, close every connection, then answer.
    Close(oneshot::Sender<()>),
    /// Report how many operations the machine holds (tests).
    #[cfg(feature = "testing")]
    OpsInFlight(oneshot::Sender<usize>),
    /// Report what the machine knows of PD's group (tests).
    #[cfg(feature = "testing")]
    PdView(oneshot::Sender<crate::machine::PdView>),
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Command(command, _) => f.debug_tuple("Command").field(command).finish(),
            Self::Cancel(op) => f.debug_tuple("Cancel").field(op).finish(),
            Self::Close(_) => f.write_str("Close"),
            #[cfg(feature = "testing")]
            Self::OpsInFlight(_) => f.write_str("OpsInFlight"),
            #[cfg(feature = "testing")]
            Self::PdView(_) => f.write_str("PdView"),
        }
    }
}

/// A cheap, cloneable handle to a running client driver.
#[derive(Clone, Debug)]
pub struct Handle {
    messages: mpsc::UnboundedSender<Message>,
    gate: Arc<Gate>,
}

impl Handle {
    /// Runs `command` and waits for its result, first waiting for room in the driver's
    /// command queue when it is full. Dropping the returned future before it completes
    /// cancels the operation.
    ///
    /// Errors with the operation's error, or [`Error::Closed`] when the client is closing or
    /// its driver is gone.
    async fn run(&self, command: Command) -> Result<Output, Error> {
        self.gate.acquire().await?;
        let (reply, pending) = call::call(&self.messages);
        self.messages
            .unbounded_send(Message::Command(command, reply))
            .map_err(|_| Error::Closed)?;
        pending.await?
    }

    /// Runs `call`'s command and reads its answer as the caller's type, as
    /// [`run`](Self::run) does.
    ///
    /// Errors as `run`, or with [`Error::UnexpectedResponse`] when the operation produced
    /// another kind of result (a bug in the machine).
    pub(crate) async fn call<T>(&self, call: crate::command::Call<T>) -> Result<T, Error> {
        let (command, read) = call.into_parts();
        let output = self.run(command).await?;
        crate::command::Call::read(read, output)
    }

    /// Stops taking commands, lets the operations in flight finish, closes every connection,
    /// and resolves once all that is done (at once when the driver is already gone).
    pub(crate) async fn close(&self) {
        self.gate.close();
        let (done, finished) = oneshot::channel();
        if self.messages.unbounded_send(Message::Close(done)).is_ok() {
            // Cancelled only when the driver stopped without answering: closed either way.
            let _ = finished.await;
        }
    }

    /// How many operations the machine holds, once every message sent before this call has
    /// been handled.
    ///
    /// Errors with [`Error::Closed`] when the driver is gone.
    #[cfg(feature = "testing")]
    pub(crate) async fn ops_in_flight(&self) -> Result<usize, Error> {
        let (tx, rx) = oneshot::channel();
        self.messages
            .unbounded_send(Message::OpsInFlight(tx))
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// What the machine knows of PD's group, once every message sent before this call has
    /// been handled.
    ///
    /// Errors with [`Error::Closed`] when the driver is gone.
    #[cfg(feature = "testing")]
    pub(crate) async fn pd_view(&self) -> Result<crate::machine::PdView, Error> {
        let (tx, rx) = oneshot::channel();
        self.messages
            .unbounded_send(Message::PdView(tx))
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// The most commands that ever waited in the queue at once.
    #[cfg(feature = "testing")]
    pub(crate) fn command_queue_peak(&self) -> usize {
        self.gate.peak()
    }
}

/// Sees what the driver hands the machine and the batch client (tests: the simulation's
/// trace shows every request the machine sent and every reply it got, including those the
/// transport failed before anything reached the network).
#[cfg(feature = "testing")]
pub trait Observer: Send + Sync + 'static {
    /// The machine asked for `transmit` to be sent.
    fn transmit(&self, transmit: &crate::machine::Transmit);

    /// The reply to request `id` reached the machine.
    fn reply(&self, id: RequestId, reply: &Result<Response, RpcError>);
}

/// How a driver is set up, beyond the client's [`Config`] (tests).
#[cfg(feature = "testing")]
#[derive(Clone)]
pub struct Options {
    /// Commands that may wait in the queue (default [`COMMAND_QUEUE_CAPACITY`]).
    pub queue_capacity: usize,
    /// Sees every transmit and reply.
    pub observer: Option<Arc<dyn Observer>>,
}

#[cfg(feature = "testing")]
impl Default for Options {
    fn default() -> Self {
        Self {
            queue_capacity: COMMAND_QUEUE_CAPACITY,
            observer: None,
        }
    }
}

#[cfg(feature = "testing")]
impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("queue_capacity", &self.queue_capacity)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

/// Driver settings that are not part of [`Config`].
#[derive(Clone, Default)]
pub(crate) struct Settings {
    queue_capacity: Option<usize>,
    #[cfg(feature = "testing")]
    observer: Option<Arc<dyn Observer>>,
}

#[cfg(feature = "testing")]
impl From<Options> for Settings {
    fn from(options: Options) -> Self {
        Self {
            queue_capacity: Some(options.queue_capacity),
            observer: options.observer,
        }
    }
}

/// Starts a client for the cluster behind `pd_endpoints` on `runtime` (set up for `config`
/// by [`Runtime::configure`]): spawns the driver task and returns a handle to it.
///
/// Errors with [`Error::InvalidArgument`] when no endpoint is given or the runtime cannot be
/// set up for `config` (TLS material that does not parse). Connecting happens lazily: the
/// first operation discovers PD.
pub fn start<R: Runtime>(
    runtime: R,
    pd_endpoints: Vec<String>,
    config: Config,
) -> Result<Handle, Error> {
    start_with(runtime, pd_endpoints, config, Settings::default())
}

/// [`start`] with driver settings.
pub(crate) fn start_with<R: Runtime>(
    runtime: R,
    pd_endpoints: Vec<String>,
    config: Config,
    settings: Settings,
) -> Result<Handle, Error> {
    // An unfixed seed is drawn from the runtime here: the core never reads entropy itself,
    // so that a fixed seed replays.
    let config = runtime.seed_config(config);
    let runtime = runtime.configure(&config)?;
    let core = Core::new(config.clone(), pd_endpoints, runtime.now())?;
    let (messages_tx, messages_rx) = mpsc::unbounded();
    let capacity = settings.queue_capacity.unwrap_or(COMMAND_QUEUE_CAPACITY);
    let gate = Arc::new(Gate::new(capacity));
    let task = drive(
        runtime.clone(),
        core,
        messages_rx,
        Arc::clone(&gate),
        config,
        settings,
    );
    runtime.spawn(Box::pin(task));
    Ok(Handle {
        messages: messages_tx,
        gate,
    })
}

enum Input {
    Message(Message),
    MessagesClosed,
    Replies(Replies),
    Timeout,
}

/// The driver's state besides the channels it waits on.
struct Driver<R: Runtime> {
    core: Core,
    connections: Connections<R>,
    /// Callers of the operations in flight.
    waiters: IdMap<OpId, CallReply<Outcome>>,
    gate: Arc<Gate>,
    /// Commands taken from the queue since permits were last returned.
    taken: usize,
    /// False once the client is closing: commands are refused.
    accepting: bool,
    /// Callers of [`Handle::close`], answered once everything has shut down.
    closers: Vec<oneshot::Sender<()>>,
    #[cfg(feature = "testing")]
    observer: Option<Arc<dyn Observer>>,
}

impl<R: Runtime> Driver<R> {
    fn on_message(&mut self, now: Time, message: Message) {
        match message {
            Message::Command(command, reply) => {
                self.taken += 1;
                if !self.accepting || reply.is_abandoned() {
                    // Dropping the reply answers a waiting caller with `Error::Closed`.
                    return;
                }
                let op = self.core.handle_command(now, command);
                if reply.started(op) {
                    self.waiters.insert(op, reply);
                } else {
                    // The caller gave up while the command was being started.
                    self.core.cancel(now, op);
                }
            }
            Message::Cancel(op) => {
                // An operation that finished already has no waiter: nothing to cancel.
                if self.waiters.remove(&op).is_some() {
                    self.core.cancel(now, op);
                }
            }
            Message::Close(done) => {
                self.accepting = false;
                self.gate.close();
                self.closers.push(done);
            }
            #[cfg(feature = "testing")]
            Message::OpsInFlight(answer) => {
                let _ = answer.send(self.core.ops_in_flight());
            }
            #[cfg(feature = "testing")]
            Message::PdView(answer) => {
                let _ = answer.send(self.core.pd_view());
            }
        }
    }

    fn on_reply(&mut self, now: Time, id: RequestId, reply: Result<Response, RpcError>) {
        #[cfg(feature = "testing")]
        if let Some(observer) = &self.observer {
            observer.reply(id, &reply);
        }
        self.core.handle_reply(now, id, reply);
    }

    /// Drains everything the last inputs produced: transmits to the connections (one batch
    /// per store and drain), finished operations to their callers.
    fn drain(&mut self) {
        if self.taken > 0 {
            self.gate.release(std::mem::take(&mut self.taken));
        }
        let mut sent = false;
        while let Some(transmit) = self.core.poll_transmit() {
            #[cfg(feature = "testing")]
            if let Some(observer) = &self.observer {
                observer.transmit(&transmit);
            }
            self.connections.send(transmit);
            sent = true;
        }
        if sent {
            self.connections.end_drain();
        }
        while let Some(event) = self.core.poll_event() {
            match event {
                Event::Done(op, result) => {
                    // A cancelled operation's caller is gone; its result is dropped.
                    if let Some(waiter) = self.waiters.remove(&op) {
                        waiter.send(result);
                    }
                }
            }
        }
    }
}

async fn drive<R: Runtime>(
    runtime: R,
    core: Core,
    mut messages: mpsc::UnboundedReceiver<Message>,
    gate: Arc<Gate>,
    config: Config,
    settings: Settings,
) {
    let (replies_tx, mut replies) = mpsc::unbounded::<Replies>();
    let mut driver = Driver {
        core,
        connections: Connections::new(runtime.clone(), replies_tx, config),
        waiters: IdMap::default(),
        gate,
        taken: 0,
        accepting: true,
        closers: Vec::new(),
        #[cfg(feature = "testing")]
        observer: settings.observer,
    };
    #[cfg(not(feature = "testing"))]
    let _ = settings;
    let mut timer: Option<(Time, BoxFuture<'static, ()>)> = None;
    let mut messages_open = true;

    loop {
        driver.drain();
        if !driver.accepting && driver.core.ops_in_flight() == 0 {
            break;
        }
        // Re-arm only when the machine needs waking earlier than the armed timer: a timer that
        // fires early is harmless (the machine ignores early calls), and keeping it avoids a
        // new timer every time the oldest request completes.
        if let Some(deadline) = driver.core.poll_timeout() {
            if timer.as_ref().is_none_or(|(at, _)| deadline < *at) {
                timer = Some((deadline, runtime.sleep_until(deadline)));
            }
        }

        let input = poll_fn(|cx| {
            if messages_open {
                match Pin::new(&mut messages).poll_next(cx) {
                    Poll::Ready(Some(message)) => return Poll::Ready(Input::Message(message)),
                    Poll::Ready(None) => return Poll::Ready(Input::MessagesClosed),
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
        driver.core.handle_wall_clock(runtime.wall_clock_ms());
        match input {
            Input::Message(message) => driver.on_message(now, message),
            Input::MessagesClosed => {
                // Every handle is gone: finish what is in flight, then shut down.
                messages_open = false;
                driver.accepting = false;
            }
            Input::Replies(batch) => {
                for (id, reply) in batch {
                    driver.on_reply(now, id, reply);
                }
                // Take every reply already queued before draining: one drain, one batch.
                while let Ok(batch) = replies.try_recv() {
                    for (id, reply) in batch {
                        driver.on_reply(now, id, reply);
                    }
                }
                // A StoreNotMatch among them closes that address's connections before any
                // retry is sent there.
                driver.connections.close_reported();
            }
            Input::Timeout => {
                timer = None;
                driver.core.handle_timeout(now);
            }
        }
        // Messages already queued join this drain too, so their requests batch together.
        while messages_open {
            match messages.try_recv() {
                Ok(message) => driver.on_message(now, message),
                Err(mpsc::TryRecvError::Closed) => {
                    messages_open = false;
                    driver.accepting = false;
                }
                Err(_) => break,
            }
        }
    }

    // Shut down: no operation is left. Refuse what is still queued, stop every connection
    // task and wait until each has ended (its connection closes with it), then answer the
    // callers of `close`.
    driver.gate.close();
    messages.close();
    while let Ok(message) = messages.try_recv() {
        if let Message::Close(done) = message {
            driver.closers.push(done);
        }
        // Commands are dropped unstarted: their callers get `Error::Closed`.
    }
    let Driver {
        connections,
        closers,
        ..
    } = driver;
    drop(replies);
    drop(timer);
    let tasks = connections.shut_down();
    tasks.ended().await;
    for done in closers {
        let _ = done.send(());
    }
}
