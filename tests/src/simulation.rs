//! Deterministic simulation: the real client (its driver, batch client and machine) against
//! the simulated cluster, on a simulated runtime with virtual time.
//!
//! A [`Simulation`] starts a [`tikv_core::Client`] with [`SimRuntime`]: tasks run on a
//! seeded single-threaded [`Executor`] whose clock jumps to the next timer whenever every
//! task waits, and `connect` returns channels onto an in-process [`Sim`]. The client's own
//! connection tasks encode requests into gRPC messages (BatchCommands per store and drain,
//! unary calls, PD's Tso stream) exactly as over HTTP/2; the channels decode and run them on
//! the cluster as its gRPC server does. A seeded PRNG decides each message's latency, which
//! replies the network loses, the order ready tasks run in, and what the chaos schedule does
//! to the cluster (splits, merges, leader moves, store restarts, injected region errors).
//!
//! Operations go through the user API ([`Op`] runs `Client::raw()` methods). A run is bounded
//! by a step limit (task polls and time jumps), so a livelock fails with
//! [`SimError::Livelock`] instead of hanging. Messages, faults and operations are written to a
//! trace of stable text lines with virtual times; the same seed gives the same trace (seeds
//! come from [`seeds`], which honours `TIKV_SIM_SEED`).

pub mod bank;
mod chaos;
pub mod checker;
mod describe;
pub mod executor;
pub mod ops;
pub mod runtime;
pub mod txn_checker;
pub mod workload;
mod world;

use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tikv_core::rand::Rng;
use tikv_core::{Client, Config, Error, Time};
use tikv_sim::cluster::ClusterError;
use tikv_sim::faults::FaultRule;
use tikv_sim::{Sim, SimConfig};

pub use chaos::Chaos;
pub use describe::{describe_fault, describe_op, describe_region_error, describe_result};
pub use executor::Executor;
pub use ops::{Answer, Op};
pub use runtime::SimRuntime;
pub use world::{MessageLog, NetLog, StreamFault, StreamLog};

use world::{SharedWorld, World, lock};

/// The environment variable that replays one seed.
pub const SEED_ENV: &str = "TIKV_SIM_SEED";
/// The cluster's wall clock at virtual time zero, in ms since the Unix epoch.
pub const EPOCH_MS: u64 = 1_700_000_000_000;
/// The address of the first PD member (the only one by default).
pub const PD_ADDRESS: &str = "pd:2379";

/// The address the simulation gives the PD member at `index` (0-based, in member id order):
/// [`PD_ADDRESS`] for the first, `pd-<n>:2379` for the n-th after it.
pub fn pd_address(index: usize) -> String {
    if index == 0 {
        PD_ADDRESS.to_owned()
    } else {
        format!("pd-{}:2379", index + 1)
    }
}

/// `http://host:port` → `host:port`.
pub(crate) fn address_of(url: &str) -> &str {
    url.trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
}

/// The seeds to run: the one in `TIKV_SIM_SEED` when set, else `defaults`.
///
/// Errors with [`SimError::BadSeed`] when the variable is set but is not a number.
pub fn seeds(defaults: &[u64]) -> Result<Vec<u64>, SimError> {
    match std::env::var(SEED_ENV) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map(|seed| vec![seed])
            .map_err(|_| SimError::BadSeed(text)),
        Err(_) => Ok(defaults.to_vec()),
    }
}

/// Why a simulation run stopped.
#[derive(Clone, Debug, PartialEq)]
pub enum SimError {
    /// The step limit was reached: something keeps the run busy without finishing.
    Livelock {
        /// Steps taken.
        steps: usize,
        /// Virtual time reached.
        now: Time,
        /// Tasks still alive.
        tasks: usize,
    },
    /// The run waits for something, but no task is ready and no timer is armed.
    Stuck {
        /// Virtual time reached.
        now: Time,
        /// Tasks still alive.
        tasks: usize,
    },
    /// The cluster could not be built.
    Cluster(ClusterError),
    /// The client could not be started.
    Client(Error),
    /// `TIKV_SIM_SEED` is not a number.
    BadSeed(String),
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Livelock { steps, now, tasks } => {
                write!(f, "livelock: {steps} steps, at {now}, {tasks} tasks alive")
            }
            Self::Stuck { now, tasks } => write!(
                f,
                "stuck at {now}: {tasks} tasks alive, none ready and no timer armed"
            ),
            Self::Cluster(err) => write!(f, "cluster: {err}"),
            Self::Client(err) => write!(f, "client: {err}"),
            Self::BadSeed(text) => write!(f, "{SEED_ENV}={text:?} is not a number"),
        }
    }
}

impl std::error::Error for SimError {}

/// How the simulated network behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    /// Shortest one-way latency of a message.
    pub min_latency: Duration,
    /// Longest one-way latency (keep it far below the client's timeouts, so that a request
    /// never arrives after its operation gave up on it and retried).
    pub max_latency: Duration,
    /// Chance, in thousandths, that a reply is lost after the request ran.
    pub reply_loss_per_mille: u64,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            min_latency: Duration::from_micros(100),
            max_latency: Duration::from_micros(2_000),
            reply_loss_per_mille: 0,
        }
    }
}

/// Everything a [`Simulation`] is built from, besides its seed.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The client's configuration (its PRNG seed is derived from the run's seed).
    pub client: Config,
    /// The cluster's configuration; store `n` gets the address `store-n`, PD members the
    /// addresses of [`pd_address`].
    pub cluster: SimConfig,
    /// The PD endpoints the client is given; empty: every member's address.
    pub pd_endpoints: Vec<String>,
    /// The network.
    pub network: Network,
    /// The step limit of the whole simulation (task polls and time jumps).
    pub max_steps: usize,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            client: Config::default(),
            cluster: SimConfig::default(),
            pd_endpoints: Vec::new(),
            network: Network::default(),
            max_steps: 1_000_000,
        }
    }
}

/// Something that happens to the cluster at a scheduled time.
#[derive(Clone, Debug, PartialEq)]
pub enum ClusterFault {
    /// Split the region containing the key at the key.
    Split(Bytes),
    /// Merge the region containing the key with the region to its right.
    MergeRight(Bytes),
    /// Move the leadership of the region containing the key to the store.
    TransferLeader {
        /// A key in the region.
        key: Bytes,
        /// The new leader's store.
        store_id: u64,
    },
    /// Stop a store's process: its connections break and dialling it is refused.
    StopStore(u64),
    /// Restart a stopped store.
    RestartStore(u64),
    /// The regions led by a stopped store elect a leader on a running store (as Raft does
    /// after an election timeout).
    ElectAway(u64),
    /// Add a fault rule to the cluster (region errors, statuses, drops, lost writes).
    Inject(FaultRule),
    /// Stop a PD member's process: its connections break and dialling it is refused; a
    /// stopped leader loses the lease.
    StopPdMember(u64),
    /// Stop whichever PD member leads now.
    StopPdLeader,
    /// Restart a stopped PD member (as a follower).
    RestartPdMember(u64),
    /// Move PD's leadership to this member, or (`None`) make the leader resign.
    MovePdLeader(Option<u64>),
    /// End a PD election: the next running member leads.
    ElectPdLeader,
    /// End every open Tso stream with an error from the server's side.
    BreakTsoStreams,
    /// Change how far the followers and learners on a store trail their leaders, as a
    /// follower that slows down or catches up (waiting replica reads it lets through are
    /// answered).
    ApplyLag {
        /// The store (`None`: every store without a lag of its own).
        store_id: Option<u64>,
        /// The new lag.
        lag: tikv_sim::replica::ApplyLag,
    },
    /// One tick of the chaos schedule: a random fault, then the next tick.
    Chaos,
}

/// The real client, the simulated cluster, a network and a clock.
#[derive(Debug)]
pub struct Simulation {
    runtime: SimRuntime,
    world: SharedWorld,
    client: Client,
    seed: u64,
    next_op: u64,
}

impl Simulation {
    /// A simulation seeded with `seed`: a fresh cluster, a client that knows only PD's
    /// addresses, time zero.
    ///
    /// Errors when the cluster or client configuration is impossible.
    pub fn new(seed: u64, setup: Setup) -> Result<Self, SimError> {
        let mut sim = Sim::new(setup.cluster).map_err(SimError::Cluster)?;
        let store_ids: Vec<u64> = sim.cluster.stores().map(|store| store.id).collect();
        for id in store_ids {
            sim.cluster
                .set_store_address(id, &store_address(id), "")
                .map_err(SimError::Cluster)?;
        }
        let member_ids: Vec<u64> = sim.cluster.pd_members().iter().map(|m| m.id).collect();
        let every_member = setup.pd_endpoints.is_empty();
        let mut endpoints = setup.pd_endpoints.clone();
        for (index, id) in member_ids.into_iter().enumerate() {
            let address = pd_address(index);
            sim.cluster
                .set_pd_member_url(id, &format!("http://{address}"))
                .map_err(SimError::Cluster)?;
            if every_member {
                endpoints.push(address);
            }
        }
        let mut root = Rng::new(seed);
        let client_seed = root.next_u64();
        let executor = Executor::new(root.next_u64(), setup.max_steps);
        let world = World::new(
            sim,
            executor.clone(),
            setup.network,
            root.fork(),
            root.fork(),
        );
        let runtime = SimRuntime::new(executor, std::sync::Arc::clone(&world));
        let client = Client::start_with(
            runtime.clone(),
            endpoints,
            setup.client.with_rng_seed(client_seed),
            tikv_core::driver::Options {
                observer: Some(std::sync::Arc::new(Tracer {
                    world: std::sync::Arc::clone(&world),
                })),
                ..tikv_core::driver::Options::default()
            },
        )
        .map_err(SimError::Client)?;
        Ok(Self {
            runtime,
            world,
            client,
            seed,
            next_op: 0,
        })
    }

    /// The seed this run replays from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The client under test.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The runtime the client runs on.
    pub fn runtime(&self) -> &SimRuntime {
        &self.runtime
    }

    /// The virtual time now.
    pub fn now(&self) -> Time {
        self.runtime.executor().now()
    }

    /// The wall clock of the cluster and the client now, in ms since the Unix epoch
    /// ([`EPOCH_MS`] at virtual time zero): what lock TTLs and timestamps are judged by.
    pub fn wall_ms(&self) -> u64 {
        EPOCH_MS + self.now().as_micros() / 1_000
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.runtime.executor().steps()
    }

    /// Runs `f` on the cluster (split, stop stores, stop PD members, break Tso streams,
    /// inject faults, read its state...); the network then follows the model (a stopped PD
    /// member's connections break, broken Tso streams end).
    pub fn with<T>(&self, f: impl FnOnce(&mut Sim) -> T) -> T {
        let mut world = lock(&self.world);
        let result = f(&mut world.sim);
        world.sync_model();
        result
    }

    /// Every PD member's address, in member id order.
    pub fn pd_addresses(&self) -> Vec<String> {
        let count = lock(&self.world).sim.cluster.pd_members().len();
        (0..count).map(pd_address).collect()
    }

    /// The trace so far: one stable line per message, fault and operation.
    pub fn trace(&self) -> Vec<String> {
        lock(&self.world).trace_lines().to_vec()
    }

    /// Takes the trace, leaving it empty (scenarios drop their warm-up this way).
    pub fn take_trace(&mut self) -> Vec<String> {
        lock(&self.world).take_trace()
    }

    /// Adds a line of the caller's own to the trace.
    pub fn note(&mut self, text: impl fmt::Display) {
        lock(&self.world).trace(text);
    }

    /// What the stores saw of the client's connections so far.
    pub fn net_log(&self) -> NetLog {
        lock(&self.world).log.clone()
    }

    /// Client connections alive now, per address.
    pub fn open_connections(&self) -> std::collections::BTreeMap<String, usize> {
        lock(&self.world).open_connections().clone()
    }

    /// Changes how the network behaves from now on (messages already under way keep
    /// their latency).
    pub fn set_network(&mut self, network: Network) {
        lock(&self.world).set_network(network);
    }

    /// Breaks a BatchCommands stream at one of its messages (see [`StreamFault`]).
    pub fn break_stream(&mut self, fault: StreamFault) {
        lock(&self.world).stream_faults.push(fault);
    }

    /// Schedules `fault` at `at` (now, if `at` is in the past).
    pub fn schedule(&mut self, at: Time, fault: ClusterFault) {
        lock(&self.world).schedule(at, fault);
    }

    /// Applies `fault` to the cluster now.
    pub fn apply(&mut self, fault: ClusterFault) {
        lock(&self.world).apply(fault);
    }

    /// Starts the chaos schedule: a random fault every so often until
    /// [`stop_chaos`](Self::stop_chaos) (or its fault budget runs out).
    pub fn start_chaos(&mut self, chaos: Chaos) {
        lock(&self.world).start_chaos(chaos);
    }

    /// Stops the chaos schedule (faults already scheduled still happen).
    pub fn stop_chaos(&mut self) {
        lock(&self.world).stop_chaos();
    }

    /// Runs tasks with virtual time until `future` completes; returns its output.
    ///
    /// Errors with [`SimError::Livelock`] past the step limit and [`SimError::Stuck`] when
    /// `future` waits for something that can never happen.
    pub fn block_on<F: Future>(&mut self, future: F) -> Result<F::Output, SimError> {
        self.runtime.executor().block_on(future)
    }

    /// Lets virtual time pass for `duration` (tasks run meanwhile).
    ///
    /// Errors as [`block_on`](Self::block_on).
    pub fn sleep(&mut self, duration: Duration) -> Result<(), SimError> {
        let executor = self.runtime.executor().clone();
        let wake = executor.now() + duration;
        executor.block_on(executor.sleep_until(wake))
    }

    /// Runs `op` through the client's user API until it finishes, tracing its start and
    /// result; returns the result.
    ///
    /// Errors as [`block_on`](Self::block_on).
    pub fn run(&mut self, op: Op) -> Result<Result<Answer, Error>, SimError> {
        let number = self.start_op(&op);
        let client = self.client.clone();
        let result = self.block_on(async move { op.run(&client).await })?;
        self.finish_op(number, &result);
        Ok(result)
    }

    /// Runs `ops` concurrently through the client's user API (their commands reach the
    /// driver together), tracing each start and result; returns the results in order.
    ///
    /// Errors as [`block_on`](Self::block_on).
    pub fn run_concurrently(
        &mut self,
        ops: Vec<Op>,
    ) -> Result<Vec<Result<Answer, Error>>, SimError> {
        let numbers: Vec<u64> = ops.iter().map(|op| self.start_op(op)).collect();
        let client = self.client.clone();
        let tracer = self.tracer();
        let runs = ops.into_iter().zip(numbers).map(|(op, number)| {
            let (client, tracer) = (&client, &tracer);
            async move {
                let result = op.run(client).await;
                tracer.note(format_args!("op{number} done {}", describe_result(&result)));
                result
            }
        });
        self.block_on(futures_util::future::join_all(runs))
    }

    /// Numbers an operation and traces its start.
    pub(crate) fn start_op(&mut self, op: &Op) -> u64 {
        self.next_op += 1;
        let number = self.next_op;
        lock(&self.world).trace(format_args!("op{number} start {}", describe_op(op)));
        number
    }

    /// Traces an operation's result.
    pub(crate) fn finish_op(&mut self, number: u64, result: &Result<Answer, Error>) {
        lock(&self.world).trace(format_args!("op{number} done {}", describe_result(result)));
    }

    /// A cheap handle for tracing from tasks running inside the simulation.
    pub fn tracer(&self) -> Tracer {
        Tracer {
            world: std::sync::Arc::clone(&self.world),
        }
    }
}

/// Writes lines to a simulation's trace from inside its tasks.
#[derive(Clone, Debug)]
pub struct Tracer {
    world: SharedWorld,
}

impl Tracer {
    /// Adds `text` to the trace at the current virtual time.
    pub fn note(&self, text: impl fmt::Display) {
        lock(&self.world).trace(text);
    }
}

/// The client's requests and the replies that reach its machine, as the driver sees them:
/// also those that never reached the network (a store that refuses connections).
impl tikv_core::driver::Observer for Tracer {
    fn transmit(&self, transmit: &tikv_core::machine::Transmit) {
        let description = describe::describe_request(&transmit.request);
        self.note(format_args!(
            "-> #{} {} {description}",
            transmit.id.get(),
            transmit.address
        ));
    }

    fn reply(
        &self,
        id: tikv_core::machine::RequestId,
        reply: &Result<tikv_core::rpc::Response, tikv_proto::rpc::RpcError>,
    ) {
        self.note(format_args!(
            "<- #{} {}",
            id.get(),
            describe::describe_reply(reply)
        ));
    }
}

/// The address the simulation gives store `id`.
pub fn store_address(id: u64) -> String {
    format!("store-{id}")
}
