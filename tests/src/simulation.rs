//! Deterministic simulation: one client machine and one simulated cluster in one loop.
//!
//! [`Simulation`] owns a [`Core`] and a [`Sim`] and moves messages between them over a
//! simulated network with virtual time. Every transmit is encoded to gRPC bytes as the driver
//! would send it (store commands with a BatchCommands arm go out as one `BatchCommandsRequest`
//! per store and drain; the rest as unary calls; PD calls as unary or Tso stream messages) and
//! decoded by the cluster exactly as its gRPC server does; answers travel back as bytes too.
//! A seeded PRNG decides each message's latency, which replies the network loses, and what
//! the chaos schedule does to the cluster (splits, merges, leader moves, store restarts,
//! injected region errors).
//!
//! Each [`Simulation::step`] handles one thing: the earliest of the client's timer, a message
//! arriving, a scheduled fault, or a lock wait expiring in the cluster. A run is bounded by a
//! step limit, so a livelock fails with [`SimError::Livelock`] instead of hanging. Every
//! input and output is written to a trace of stable text lines with virtual times; the same
//! seed gives the same trace (seeds come from [`seeds`], which honours `TIKV_SIM_SEED`).

mod chaos;
pub mod checker;
mod describe;
mod serve;
pub mod workload;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tikv_core::machine::testing::describe;
use tikv_core::machine::{Command, Core, Event, OpId, Output, RequestId};
use tikv_core::rand::Rng;
use tikv_core::rpc::{PdRequest, Request, Response, StoreRequest, StoreResponse};
use tikv_core::{Config, Error, Time};
use tikv_proto::frame::Framed;
use tikv_proto::rpc::RpcError;
use tikv_proto::status::{Code, Status};
use tikv_proto::tikvpb::{self, batch_commands_request};
use tikv_sim::cluster::ClusterError;
use tikv_sim::faults::FaultRule;

use tikv_sim::{Sim, SimConfig};

pub use chaos::Chaos;
pub use describe::{describe_command, describe_fault, describe_region_error, describe_result};

use describe::{describe_ids, describe_reply};

/// The environment variable that replays one seed.
pub const SEED_ENV: &str = "TIKV_SIM_SEED";
/// The cluster's wall clock at virtual time zero, in ms since the Unix epoch.
pub const EPOCH_MS: u64 = 1_700_000_000_000;
/// The address the client is given for PD.
pub const PD_ADDRESS: &str = "pd:2379";
/// The client URL PD reports for itself.
const PD_URL: &str = "http://pd:2379";

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
        /// Operations still in flight.
        ops_in_flight: usize,
    },
    /// Operations are in flight but nothing is scheduled to happen.
    Stuck {
        /// Virtual time reached.
        now: Time,
        /// Operations still in flight.
        ops_in_flight: usize,
    },
    /// The cluster could not be built.
    Cluster(ClusterError),
    /// The client machine could not be built.
    Client(Error),
    /// `TIKV_SIM_SEED` is not a number.
    BadSeed(String),
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Livelock {
                steps,
                now,
                ops_in_flight,
            } => write!(
                f,
                "livelock: {steps} steps, at {now}, {ops_in_flight} ops still in flight"
            ),
            Self::Stuck { now, ops_in_flight } => write!(
                f,
                "stuck at {now}: {ops_in_flight} ops in flight and nothing scheduled"
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
    /// The cluster's configuration; store `n` gets the address `store-n`.
    pub cluster: SimConfig,
    /// The network.
    pub network: Network,
    /// The step limit of a run.
    pub max_steps: usize,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            client: Config::default(),
            cluster: SimConfig::default(),
            network: Network::default(),
            max_steps: 200_000,
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
    /// Stop a store's process: requests to it fail in the transport.
    StopStore(u64),
    /// Restart a stopped store.
    RestartStore(u64),
    /// The regions led by a stopped store elect a leader on a running store (as Raft does
    /// after an election timeout).
    ElectAway(u64),
    /// Add a fault rule to the cluster (region errors, statuses, drops).
    Inject(FaultRule),
    /// One tick of the chaos schedule: a random fault, then the next tick.
    Chaos,
}

/// An operation that finished, and its result.
pub type Finished = (OpId, Result<Output, Error>);

/// What one [`Simulation::step`] did.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Time moved or a message was handled.
    Advanced,
    /// These operations finished (in the order the client reported them).
    Finished(Vec<Finished>),
    /// Nothing is in flight and nothing is scheduled.
    Idle,
}

/// One client machine, one simulated cluster, a network and a clock.
#[derive(Debug)]
pub struct Simulation {
    /// The client machine.
    pub core: Core,
    /// The cluster (tests split, stop stores and inject faults through it directly, too).
    pub sim: Sim,
    seed: u64,
    now: Time,
    net_rng: Rng,
    /// Extra latency for the next reply sent back (an injected delay or a slow store).
    extra_latency: Duration,
    chaos_rng: Rng,
    chaos: Option<Chaos>,
    chaos_faults: usize,
    network: Network,
    max_steps: usize,
    max_message_size: usize,
    steps: usize,
    next_seq: u64,
    /// Deliveries and scheduled faults by (time, sequence): ties go in scheduling order.
    queue: BTreeMap<(Time, u64), Pending>,
    /// Lock waits parked in the cluster, by wait id.
    parked: BTreeMap<u64, ParkedRequest>,
    finished: Vec<Finished>,
    trace: Vec<String>,
}

#[derive(Debug)]
enum Pending {
    ToPd {
        id: RequestId,
        request: PdRequest,
        frame: Framed,
    },
    ToStoreUnary {
        id: RequestId,
        address: String,
        request: StoreRequest,
        frame: Framed,
    },
    ToStoreBatch {
        address: String,
        ids: Vec<RequestId>,
        frame: Framed,
    },
    ToHealth {
        id: RequestId,
        address: String,
        frame: Framed,
    },
    Reply(Reply),
    Fault(ClusterFault),
    /// A caller's wake-up: nothing happens, but the loop stops at this time.
    Alarm,
}

#[derive(Debug)]
enum Reply {
    Pd {
        id: RequestId,
        request: PdRequest,
        result: Result<Bytes, Status>,
    },
    Unary {
        id: RequestId,
        request: StoreRequest,
        result: Result<Bytes, Status>,
    },
    Batch {
        address: String,
        frame: Framed,
    },
    Health {
        id: RequestId,
        result: Result<Bytes, Status>,
    },
    Failed {
        ids: Vec<RequestId>,
        error: RpcError,
    },
}

#[derive(Debug)]
struct ParkedRequest {
    id: RequestId,
    address: String,
    /// `Some` for a unary call, `None` for a BatchCommands entry.
    unary: Option<StoreRequest>,
}

impl Simulation {
    /// A simulation seeded with `seed`: a fresh cluster, a client that knows only PD's
    /// address, time zero.
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
        let mut root = Rng::new(seed);
        let client_seed = root.next_u64();
        let max_message_size = setup.client.max_message_size();
        let core = Core::new(
            setup.client.with_rng_seed(client_seed),
            vec![PD_ADDRESS.to_owned()],
            Time::ZERO,
        )
        .map_err(SimError::Client)?;
        Ok(Self {
            core,
            sim,
            seed,
            now: Time::ZERO,
            net_rng: root.fork(),
            extra_latency: Duration::ZERO,
            chaos_rng: root.fork(),
            chaos: None,
            chaos_faults: 0,
            network: setup.network,
            max_steps: setup.max_steps,
            max_message_size,
            steps: 0,
            next_seq: 0,
            queue: BTreeMap::new(),
            parked: BTreeMap::new(),
            finished: Vec::new(),
            trace: Vec::new(),
        })
    }

    /// The seed this run replays from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The virtual time now.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The trace so far: one stable line per input, output, message and fault.
    pub fn trace(&self) -> &[String] {
        &self.trace
    }

    /// Takes the trace, leaving it empty (scenarios drop their warm-up this way).
    pub fn take_trace(&mut self) -> Vec<String> {
        std::mem::take(&mut self.trace)
    }

    /// Adds a line of the caller's own to the trace.
    pub fn note(&mut self, text: impl fmt::Display) {
        self.trace.push(format!("{} {text}", self.now));
    }

    /// Starts an operation now; returns its id.
    pub fn submit(&mut self, command: Command) -> OpId {
        let summary = describe_command(&command);
        let op = self.core.handle_command(self.now, command);
        self.trace
            .push(format!("{} op{} start {summary}", self.now, op.get()));
        op
    }

    /// Schedules `fault` at `at` (now, if `at` is in the past).
    pub fn schedule(&mut self, at: Time, fault: ClusterFault) {
        let at = at.max(self.now);
        self.push(at, Pending::Fault(fault));
    }

    /// Makes the loop stop at `at` (a caller's own timer, such as a client's think time).
    pub fn set_alarm(&mut self, at: Time) {
        let at = at.max(self.now);
        self.push(at, Pending::Alarm);
    }

    /// Applies `fault` to the cluster now.
    pub fn apply(&mut self, fault: ClusterFault) {
        let description = describe_fault(&fault);
        let outcome = self.apply_fault(fault);
        self.trace
            .push(format!("{} fault {description}: {outcome}", self.now));
    }

    /// Starts the chaos schedule: a random fault every so often until
    /// [`stop_chaos`](Self::stop_chaos).
    pub fn start_chaos(&mut self, chaos: Chaos) {
        let first = self.now + self.chaos_interval(&chaos);
        self.chaos = Some(chaos);
        self.schedule(first, ClusterFault::Chaos);
    }

    /// Stops the chaos schedule (faults already scheduled still happen).
    pub fn stop_chaos(&mut self) {
        self.chaos = None;
    }

    /// Handles the next thing that happens: outputs of the client first, then the earliest
    /// of its timer, a message arrival, a scheduled fault or a cluster lock-wait timeout.
    ///
    /// Errors with [`SimError::Livelock`] past the step limit and [`SimError::Stuck`] when
    /// operations wait for something that can never happen.
    pub fn step(&mut self) -> Result<Step, SimError> {
        self.steps += 1;
        if self.steps > self.max_steps {
            return Err(SimError::Livelock {
                steps: self.max_steps,
                now: self.now,
                ops_in_flight: self.core.ops_in_flight(),
            });
        }
        self.flush();
        if !self.finished.is_empty() {
            return Ok(Step::Finished(std::mem::take(&mut self.finished)));
        }
        let ops = self.core.ops_in_flight();
        let queued = self.queue.keys().next().map(|(at, _)| *at);
        let lock_wait = self
            .sim
            .next_timeout_ms()
            .map(|ms| Time::from_millis(ms.saturating_sub(EPOCH_MS)));
        if ops == 0 && queued.is_none() && lock_wait.is_none() {
            return Ok(Step::Idle);
        }
        let client = self.core.poll_timeout();
        let Some(next) = [client, queued, lock_wait].into_iter().flatten().min() else {
            return Err(SimError::Stuck {
                now: self.now,
                ops_in_flight: ops,
            });
        };
        self.now = self.now.max(next);
        if client.is_some_and(|at| at <= self.now) {
            self.trace.push(format!("{} timeout", self.now));
            self.core.handle_timeout(self.now);
        } else if lock_wait.is_some_and(|at| at <= self.now) {
            self.sim.handle_timeout(self.wall_ms());
            self.answer_lock_waits();
        } else if let Some((_, pending)) = self.queue.pop_first() {
            self.handle(pending);
        }
        Ok(Step::Advanced)
    }

    /// Steps until nothing is in flight or scheduled; returns the operations that finished.
    ///
    /// Errors as [`step`](Self::step) does.
    pub fn run_until_idle(&mut self) -> Result<Vec<Finished>, SimError> {
        let mut done = Vec::new();
        loop {
            match self.step()? {
                Step::Idle => return Ok(done),
                Step::Finished(finished) => done.extend(finished),
                Step::Advanced => {}
            }
        }
    }

    /// Runs `command` alone until everything is idle; returns its result (`None` if it never
    /// reported one, which the machine's contract rules out).
    ///
    /// Errors as [`step`](Self::step) does.
    pub fn run(&mut self, command: Command) -> Result<Option<Result<Output, Error>>, SimError> {
        let op = self.submit(command);
        let done = self.run_until_idle()?;
        Ok(done
            .into_iter()
            .find(|(id, _)| *id == op)
            .map(|(_, result)| result))
    }

    fn push(&mut self, at: Time, pending: Pending) {
        self.next_seq += 1;
        self.queue.insert((at, self.next_seq), pending);
    }

    fn wall_ms(&self) -> u64 {
        EPOCH_MS + self.now.as_micros() / 1_000
    }

    fn latency(&mut self) -> Duration {
        let low = self.network.min_latency.as_micros() as u64;
        let high = self.network.max_latency.as_micros() as u64;
        Duration::from_micros(self.net_rng.between(low, high))
    }

    fn after_latency(&mut self) -> Time {
        self.now + self.latency()
    }

    /// Drains the client's outputs: transmits become messages on the network (store
    /// commands to one address coalesced into one BatchCommands message), finished
    /// operations are collected.
    fn flush(&mut self) {
        let mut batches: BTreeMap<String, Vec<(RequestId, batch_commands_request::request::Cmd)>> =
            BTreeMap::new();
        while let Some(transmit) = self.core.poll_transmit() {
            let id = transmit.id;
            self.trace.push(format!(
                "{} -> #{} {} {}",
                self.now,
                id.get(),
                transmit.address,
                describe(&transmit.request)
            ));
            match transmit.request {
                Request::Pd(request) => match request.encode(self.max_message_size) {
                    Ok(frame) => {
                        let at = self.after_latency();
                        self.push(
                            at,
                            Pending::ToPd {
                                id,
                                request: *request,
                                frame,
                            },
                        );
                    }
                    Err(err) => self.fail_now(vec![id], RpcError::Frame(err)),
                },
                Request::Health(request) => match Framed::encode(&request, self.max_message_size) {
                    Ok(frame) => {
                        let at = self.after_latency();
                        let address = transmit.address;
                        self.push(
                            at,
                            Pending::ToHealth {
                                id,
                                address: address.to_string(),
                                frame,
                            },
                        );
                    }
                    Err(err) => self.fail_now(vec![id], RpcError::Frame(err)),
                },
                Request::Store(request) => match request.into_batch() {
                    Ok(cmd) => batches
                        .entry(transmit.address.to_string())
                        .or_default()
                        .push((id, cmd)),
                    Err(request) => match request.encode(self.max_message_size) {
                        Ok(frame) => {
                            let at = self.after_latency();
                            self.push(
                                at,
                                Pending::ToStoreUnary {
                                    id,
                                    address: transmit.address.to_string(),
                                    request,
                                    frame,
                                },
                            );
                        }
                        Err(err) => self.fail_now(vec![id], RpcError::Frame(err)),
                    },
                },
            }
        }
        for (address, entries) in batches {
            let ids: Vec<RequestId> = entries.iter().map(|(id, _)| *id).collect();
            if ids.len() > 1 {
                self.trace.push(format!(
                    "{} => {address} BatchCommands {}",
                    self.now,
                    describe_ids(&ids)
                ));
            }
            let message = tikvpb::BatchCommandsRequest {
                request_ids: ids.iter().map(|id| id.get()).collect(),
                requests: entries
                    .into_iter()
                    .map(|(_, cmd)| batch_commands_request::Request { cmd: Some(cmd) })
                    .collect(),
                ..Default::default()
            };
            match Framed::encode(&message, self.max_message_size) {
                Ok(frame) => {
                    let at = self.after_latency();
                    self.push(
                        at,
                        Pending::ToStoreBatch {
                            address,
                            ids,
                            frame,
                        },
                    );
                }
                Err(err) => self.fail_now(ids, RpcError::Frame(err)),
            }
        }
        while let Some(Event::Done(op, result)) = self.core.poll_event() {
            self.trace.push(format!(
                "{} op{} done {}",
                self.now,
                op.get(),
                describe_result(&result)
            ));
            self.finished.push((op, result));
        }
    }

    fn fail_now(&mut self, ids: Vec<RequestId>, error: RpcError) {
        let now = self.now;
        self.push(now, Pending::Reply(Reply::Failed { ids, error }));
    }

    fn handle(&mut self, pending: Pending) {
        match pending {
            Pending::ToPd { id, request, frame } => self.serve_pd(id, request, frame),
            Pending::ToStoreUnary {
                id,
                address,
                request,
                frame,
            } => self.serve_unary(id, address, request, frame),
            Pending::ToStoreBatch {
                address,
                ids,
                frame,
            } => self.serve_batch(address, ids, frame),
            Pending::ToHealth { id, address, frame } => self.serve_health(id, &address, frame),
            Pending::Reply(reply) => self.deliver(reply),
            Pending::Fault(fault) => self.apply(fault),
            Pending::Alarm => {}
        }
    }

    /// Sends `reply` back over the network, unless the network loses it.
    fn send_back(&mut self, ids: &[RequestId], reply: Reply) {
        let loss = self.network.reply_loss_per_mille;
        if loss > 0 && self.net_rng.below(1_000) < loss {
            self.trace
                .push(format!("{} reply lost {}", self.now, describe_ids(ids)));
            return;
        }
        // An injected delay (or a slow store) adds to this reply's trip.
        let at = self.after_latency() + std::mem::take(&mut self.extra_latency);
        self.push(at, Pending::Reply(reply));
    }

    /// Hands a reply that reached the client to the machine, decoding it as the driver does.
    fn deliver(&mut self, reply: Reply) {
        let mut replies: Vec<(RequestId, Result<Response, RpcError>)> = Vec::new();
        match reply {
            Reply::Pd {
                id,
                request,
                result,
            } => {
                let reply = result
                    .map_err(RpcError::Status)
                    .and_then(|payload| request.decode_response(payload))
                    .map(|r| Response::Pd(Box::new(r)));
                replies.push((id, reply));
            }
            Reply::Unary {
                id,
                request,
                result,
            } => {
                let reply = result
                    .map_err(RpcError::Status)
                    .and_then(|payload| request.decode_response(payload))
                    .map(|r| Response::Store(Box::new(r)));
                replies.push((id, reply));
            }
            Reply::Batch { address, frame } => {
                match tikvpb::BatchCommandsResponse::decode(frame.payload()) {
                    Ok(batch) => {
                        for (entry, id) in batch.responses.into_iter().zip(batch.request_ids) {
                            let reply = entry
                                .cmd
                                .and_then(StoreResponse::from_batch)
                                .map(|r| Response::Store(Box::new(r)))
                                .ok_or_else(|| {
                                    RpcError::Protocol(format!("unexpected entry from {address}"))
                                });
                            replies.push((RequestId::from_wire(id), reply));
                        }
                    }
                    Err(err) => {
                        self.trace.push(format!(
                            "{} undecodable reply from {address}: {err}",
                            self.now
                        ));
                    }
                }
            }
            Reply::Health { id, result } => {
                let reply = result
                    .map_err(RpcError::Status)
                    .and_then(|payload| tikv_proto::rpc::decode(payload).map(Response::Health));
                replies.push((id, reply));
            }
            Reply::Failed { ids, error } => {
                replies.extend(ids.into_iter().map(|id| (id, Err(error.clone()))));
            }
        }
        for (id, reply) in replies {
            self.trace.push(format!(
                "{} <- #{} {}",
                self.now,
                id.get(),
                describe_reply(&reply)
            ));
            self.core.handle_reply(self.now, id, reply);
        }
    }

    fn apply_fault(&mut self, fault: ClusterFault) -> String {
        let cluster = &mut self.sim.cluster;
        let region_of = |cluster: &tikv_sim::cluster::Cluster, key: &[u8]| {
            cluster.region_by_key(key).map(|region| region.id)
        };
        let result: Result<String, ClusterError> = match fault {
            ClusterFault::Split(key) => cluster.split_at(&key).map(|created| match created {
                Some(id) => format!("new region {id}"),
                None => "already a boundary".to_owned(),
            }),
            ClusterFault::MergeRight(key) => {
                let Some(left) = cluster.region_by_key(&key).cloned() else {
                    return "no region".to_owned();
                };
                if left.end_key.is_empty() {
                    return "no region to the right".to_owned();
                }
                match region_of(cluster, &left.end_key) {
                    Some(right) => cluster
                        .merge(right, left.id)
                        .map(|()| format!("region {right} into {}", left.id)),
                    None => Ok("no region to the right".to_owned()),
                }
            }
            ClusterFault::TransferLeader { key, store_id } => match region_of(cluster, &key) {
                Some(region_id) => cluster
                    .transfer_leader(region_id, store_id)
                    .map(|()| format!("region {region_id} led from store {store_id}")),
                None => Ok("no region".to_owned()),
            },
            ClusterFault::StopStore(store_id) => {
                cluster.stop_store(store_id).map(|()| "stopped".to_owned())
            }
            ClusterFault::RestartStore(store_id) => cluster
                .restart_store(store_id)
                .map(|()| "restarted".to_owned()),
            ClusterFault::ElectAway(store_id) => Ok(chaos::elect_away(cluster, store_id)),
            ClusterFault::Inject(rule) => {
                self.sim.faults.inject(rule);
                Ok("armed".to_owned())
            }
            ClusterFault::Chaos => Ok(self.chaos_tick()),
        };
        result.unwrap_or_else(|err| format!("refused: {err}"))
    }
}

/// The address the simulation gives store `id`.
pub fn store_address(id: u64) -> String {
    format!("store-{id}")
}
