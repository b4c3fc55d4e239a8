//! Everything on the far side of the simulated network: the cluster, the network's own
//! randomness, cluster faults and the chaos schedule, lock waits in flight, the trace, and
//! logs of what the stores received.
//!
//! One [`World`] is shared (behind a mutex) by the simulated runtime's channels and the
//! tasks that serve them. It never holds anything whose drop locks it again (client
//! connections are counted, not owned), and it only ever takes the executor's lock inside its
//! own, so the two locks cannot deadlock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use tikv_core::Time;
use tikv_core::rand::Rng;
use tikv_proto::rpc::RpcError;
use tikv_sim::Sim;
use tikv_sim::cluster::ClusterError;
use tikv_sim::tikv::{Execution, TikvRequest, TikvResponse};

use super::chaos::{self, Chaos};
use super::executor::Executor;
use super::{ClusterFault, EPOCH_MS, Network, describe_fault};

/// The shared world, as tasks hold it.
pub(crate) type SharedWorld = Arc<Mutex<World>>;

/// Locks the world; a poisoned lock means a test already panicked, so keep going.
pub(crate) fn lock(world: &Mutex<World>) -> MutexGuard<'_, World> {
    world
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Who a client connection reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A PD member, as it was when the connection was made (a restart breaks the connection).
    Pd {
        /// The member.
        member: u64,
        /// How many times it had stopped when the connection was made.
        incarnation: u64,
    },
    /// A store, as it was when the connection was made (a restart breaks the connection).
    Store {
        /// The store.
        id: u64,
        /// How many times it had stopped when the connection was made.
        incarnation: u64,
    },
}

/// What one stream's server side may be told to do by a stream fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamFault {
    /// The `tikv-batch-conn-index` of the BatchCommands stream to break.
    pub conn_index: String,
    /// Its message (1-based) that breaks it instead of being answered.
    pub at_message: usize,
}

/// A BatchCommands stream a store accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamLog {
    /// Serial number (0 = the first stream ever opened).
    pub id: u64,
    /// The store's address.
    pub address: String,
    /// The stream's `tikv-batch-conn-index` header.
    pub conn_index: String,
    /// Whether the client half-closed it (or dropped it).
    pub ended_by_client: bool,
}

/// A BatchCommands message as a store received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageLog {
    /// The stream it came on.
    pub stream: u64,
    /// The stream's `tikv-batch-conn-index` header.
    pub conn_index: String,
    /// The request ids it carried.
    pub ids: Vec<u64>,
    /// The keys of the raw gets it carried, in request order.
    pub keys: Vec<Bytes>,
    /// Whether it broke its stream instead of being answered.
    pub failed: bool,
}

/// What the simulated stores saw of the client's connections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetLog {
    /// Every BatchCommands stream, in opening order.
    pub streams: Vec<StreamLog>,
    /// Every BatchCommands message, in arrival order.
    pub messages: Vec<MessageLog>,
    /// Health checks answered.
    pub health_checks: usize,
    /// Connections made, per address.
    pub connects: BTreeMap<String, usize>,
    /// Tso streams opened, per PD address.
    pub tso_streams: BTreeMap<String, usize>,
}

impl NetLog {
    /// The connection indexes of the streams opened to `address`, in order.
    pub fn stream_indexes(&self, address: &str) -> Vec<&str> {
        self.streams
            .iter()
            .filter(|stream| stream.address == address)
            .map(|stream| stream.conn_index.as_str())
            .collect()
    }
}

/// The server side of one open stream, as the world tracks it (so a store or PD member stop,
/// or a Tso stream fault, can break it).
struct OpenStream {
    store_id: Option<u64>,
    /// For a PD stream: the member, and for a Tso stream the generation it opened at.
    pd: Option<(u64, Option<u64>)>,
    down: mpsc::UnboundedSender<(Time, super::runtime::Down)>,
}

/// The far side of the network.
pub(crate) struct World {
    /// The cluster.
    pub(crate) sim: Sim,
    pub(crate) executor: Executor,
    /// Itself, for the tasks it spawns.
    me: Weak<Mutex<Self>>,
    net_rng: Rng,
    network: Network,
    trace: Vec<String>,
    /// How many times each store stopped.
    incarnations: BTreeMap<u64, u64>,
    /// How many times each PD member stopped.
    pd_incarnations: BTreeMap<u64, u64>,
    /// Which PD members ran when the world last looked at the model.
    pd_running: BTreeMap<u64, bool>,
    /// The Tso stream generation the world last saw.
    tso_generation: u64,
    /// Client connections alive, per address.
    open: BTreeMap<String, usize>,
    next_stream: u64,
    streams: BTreeMap<u64, OpenStream>,
    /// Lock waits parked in the cluster, by wait id.
    parked: BTreeMap<u64, oneshot::Sender<TikvResponse>>,
    /// The wall-clock ms the lock-wait ticker is armed for.
    ticker_at: Option<u64>,
    pub(crate) log: NetLog,
    pub(crate) stream_faults: Vec<StreamFault>,
    chaos_rng: Rng,
    chaos: Option<Chaos>,
    chaos_faults: usize,
}

impl World {
    /// A world around `sim`, with the network's and the chaos schedule's randomness.
    pub(crate) fn new(
        sim: Sim,
        executor: Executor,
        network: Network,
        net_rng: Rng,
        chaos_rng: Rng,
    ) -> SharedWorld {
        Arc::new_cyclic(|me| {
            Mutex::new(Self {
                sim,
                executor,
                me: me.clone(),
                net_rng,
                network,
                trace: Vec::new(),
                incarnations: BTreeMap::new(),
                pd_incarnations: BTreeMap::new(),
                pd_running: BTreeMap::new(),
                tso_generation: 0,
                open: BTreeMap::new(),
                next_stream: 0,
                streams: BTreeMap::new(),
                parked: BTreeMap::new(),
                ticker_at: None,
                log: NetLog::default(),
                stream_faults: Vec::new(),
                chaos_rng,
                chaos: None,
                chaos_faults: 0,
            })
        })
    }

    pub(crate) fn now(&self) -> Time {
        self.executor.now()
    }

    /// The cluster's wall clock now, in ms since the Unix epoch.
    pub(crate) fn wall_ms(&self) -> u64 {
        EPOCH_MS + self.now().as_micros() / 1_000
    }

    pub(crate) fn trace(&mut self, line: impl std::fmt::Display) {
        let now = self.now();
        self.trace.push(format!("{now} {line}"));
    }

    pub(crate) fn trace_lines(&self) -> &[String] {
        &self.trace
    }

    pub(crate) fn take_trace(&mut self) -> Vec<String> {
        std::mem::take(&mut self.trace)
    }

    /// One message's one-way latency.
    fn latency(&mut self) -> Duration {
        let low = self.network.min_latency.as_micros() as u64;
        let high = self.network.max_latency.as_micros() as u64;
        Duration::from_micros(self.net_rng.between(low, high))
    }

    /// When a message sent now arrives, keeping the order of its lane (a gRPC stream delivers
    /// in order, whatever each message's latency).
    pub(crate) fn arrival(&mut self, lane: &mut Time) -> Time {
        let at = (self.now() + self.latency()).max(*lane);
        *lane = at;
        at
    }

    /// Changes how the network behaves from now on.
    pub(crate) fn set_network(&mut self, network: Network) {
        self.network = network;
    }

    /// Whether the network loses a reply now.
    pub(crate) fn reply_lost(&mut self) -> bool {
        let loss = self.network.reply_loss_per_mille;
        loss > 0 && self.net_rng.below(1_000) < loss
    }

    // -----------------------------------------------------------------------------------
    // Connections.
    // -----------------------------------------------------------------------------------

    /// Dials `address`: a running PD member, or the running store PD lists there.
    pub(crate) fn connect(&mut self, address: &str) -> Result<Target, RpcError> {
        let member = self
            .sim
            .cluster
            .pd_members()
            .iter()
            .find(|m| super::address_of(&m.client_url) == address)
            .map(|m| (m.id, m.running));
        let store = self
            .sim
            .cluster
            .stores()
            .find(|store| store.address == address)
            .map(|store| (store.id, store.running));
        let reason = match (member, store) {
            (Some((member, true)), _) => {
                let incarnation = self.pd_incarnations.get(&member).copied().unwrap_or(0);
                *self.log.connects.entry(address.to_owned()).or_default() += 1;
                *self.open.entry(address.to_owned()).or_default() += 1;
                return Ok(Target::Pd {
                    member,
                    incarnation,
                });
            }
            (Some(_), _) => "connection refused (PD member stopped)",
            (None, Some((id, true))) => {
                let incarnation = self.incarnations.get(&id).copied().unwrap_or(0);
                *self.log.connects.entry(address.to_owned()).or_default() += 1;
                *self.open.entry(address.to_owned()).or_default() += 1;
                return Ok(Target::Store { id, incarnation });
            }
            (None, Some(_)) => "connection refused (store stopped)",
            (None, None) => "no such host",
        };
        self.trace(format_args!("{address} unreachable"));
        Err(RpcError::Connect {
            address: address.to_owned(),
            reason: reason.to_owned(),
        })
    }

    /// A client connection to `address` was dropped.
    pub(crate) fn disconnected(&mut self, address: &str) {
        if let Some(open) = self.open.get_mut(address) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                self.open.remove(address);
            }
        }
    }

    /// Client connections alive, per address.
    pub(crate) fn open_connections(&self) -> &BTreeMap<String, usize> {
        &self.open
    }

    /// The store a connection reaches now, or `None` when it broke (the store stopped or
    /// restarted since the connection was made) or it is not a store connection.
    pub(crate) fn reach(&self, target: Target) -> Option<u64> {
        match target {
            Target::Pd { .. } => None,
            Target::Store { id, incarnation } => {
                let running = self.sim.cluster.store(id).is_some_and(|s| s.running);
                let same = self.incarnations.get(&id).copied().unwrap_or(0) == incarnation;
                (running && same).then_some(id)
            }
        }
    }

    /// The PD member a connection reaches now, or `None` when it broke (the member stopped
    /// or restarted since the connection was made) or it is not a PD connection.
    pub(crate) fn reach_pd(&self, target: Target) -> Option<u64> {
        match target {
            Target::Store { .. } => None,
            Target::Pd {
                member,
                incarnation,
            } => {
                let running = self
                    .sim
                    .cluster
                    .pd_member(member)
                    .is_some_and(|m| m.running);
                let same = self.pd_incarnations.get(&member).copied().unwrap_or(0) == incarnation;
                (running && same).then_some(member)
            }
        }
    }

    /// Whether a connection still works.
    pub(crate) fn alive(&self, target: Target) -> bool {
        self.reach(target).is_some() || self.reach_pd(target).is_some()
    }

    /// Registers the server side of a new stream; returns its id.
    pub(crate) fn open_stream(
        &mut self,
        address: &str,
        store_id: Option<u64>,
        pd: Option<(u64, Option<u64>)>,
        conn_index: Option<String>,
        down: mpsc::UnboundedSender<(Time, super::runtime::Down)>,
    ) -> u64 {
        let id = self.next_stream;
        self.next_stream += 1;
        if matches!(pd, Some((_, Some(_)))) {
            *self.log.tso_streams.entry(address.to_owned()).or_default() += 1;
        }
        self.streams.insert(id, OpenStream { store_id, pd, down });
        if let Some(conn_index) = conn_index {
            self.log.streams.push(StreamLog {
                id,
                address: address.to_owned(),
                conn_index,
                ended_by_client: false,
            });
        }
        id
    }

    /// The server side of a stream ended.
    pub(crate) fn close_stream(&mut self, id: u64) {
        self.streams.remove(&id);
    }

    /// Whether a stream's server side still serves it (a broken stream takes no more
    /// messages: its handler is gone).
    pub(crate) fn stream_open(&self, id: u64) -> bool {
        self.streams.contains_key(&id)
    }

    /// The client half-closed (or dropped) a stream.
    pub(crate) fn stream_ended_by_client(&mut self, id: u64) {
        if let Some(stream) = self.log.streams.iter_mut().find(|s| s.id == id) {
            stream.ended_by_client = true;
        }
    }

    /// Takes the stream fault for message `count` of a stream with `conn_index`, if armed.
    pub(crate) fn take_stream_fault(&mut self, conn_index: &str, count: usize) -> bool {
        let position = self
            .stream_faults
            .iter()
            .position(|f| f.conn_index == conn_index && f.at_message == count);
        position.map(|i| self.stream_faults.remove(i)).is_some()
    }

    /// Breaks every stream served by `store_id`, as a process that dies resets its
    /// connections.
    fn break_streams(&mut self, store_id: u64) {
        self.break_streams_where(
            |stream| stream.store_id == Some(store_id),
            |_| RpcError::ConnectionLost("store stopped".to_owned()),
        );
    }

    /// Fails (at once) every open stream `pick` selects with the error `error` gives it.
    fn break_streams_where(
        &mut self,
        pick: impl Fn(&OpenStream) -> bool,
        error: impl Fn(&OpenStream) -> RpcError,
    ) {
        let now = self.now();
        let broken: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, stream)| pick(stream))
            .map(|(id, _)| *id)
            .collect();
        for id in broken {
            if let Some(stream) = self.streams.remove(&id) {
                let _ = stream
                    .down
                    .unbounded_send((now, super::runtime::Down::Fail(error(&stream))));
            }
        }
    }

    /// Makes the network follow changes made to the model directly (through
    /// `Simulation::with` or a fault): a PD member that stopped breaks its connections and
    /// streams, and open Tso streams the model broke end with their status.
    pub(crate) fn sync_model(&mut self) {
        let mut members: Vec<(u64, bool)> = self
            .sim
            .cluster
            .pd_members()
            .iter()
            .map(|m| (m.id, m.running))
            .collect();
        // A member removed from the group is gone like a stopped one.
        let removed: Vec<(u64, bool)> = self
            .pd_running
            .keys()
            .filter(|id| !members.iter().any(|(m, _)| m == *id))
            .map(|id| (*id, false))
            .collect();
        members.extend(removed);
        for (member, running) in members {
            let was_running = self.pd_running.insert(member, running).unwrap_or(true);
            if was_running && !running {
                *self.pd_incarnations.entry(member).or_default() += 1;
                self.break_streams_where(
                    |stream| stream.pd.is_some_and(|(m, _)| m == member),
                    |_| RpcError::ConnectionLost("PD member stopped".to_owned()),
                );
            }
        }
        let generation = self.sim.cluster.tso_stream_generation();
        if generation != self.tso_generation {
            self.tso_generation = generation;
            let cluster = &self.sim.cluster;
            let statuses: BTreeMap<u64, tikv_proto::status::Status> = self
                .streams
                .iter()
                .filter_map(|(id, stream)| {
                    let opened = stream.pd.and_then(|(_, tso)| tso)?;
                    cluster.tso_stream_break(opened).map(|status| (*id, status))
                })
                .collect();
            for (id, status) in statuses {
                self.trace(format_args!("tso stream broken: {status}"));
                if let Some(stream) = self.streams.remove(&id) {
                    let now = self.now();
                    let _ = stream.down.unbounded_send((
                        now,
                        super::runtime::Down::Fail(RpcError::Status(status)),
                    ));
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Executing requests.
    // -----------------------------------------------------------------------------------

    /// Runs one request on `store_id`, then routes the answers of lock waits it finished.
    pub(crate) fn execute(&mut self, store_id: u64, request: TikvRequest) -> Execution {
        let now_ms = self.wall_ms();
        let execution = self.sim.execute(store_id, request, now_ms);
        self.after_execution();
        execution
    }

    /// The second half of a delayed request.
    pub(crate) fn execute_after_delay(&mut self, store_id: u64, request: TikvRequest) -> Execution {
        let now_ms = self.wall_ms();
        let execution = self.sim.execute_after_delay(store_id, request, now_ms);
        self.after_execution();
        execution
    }

    /// Parks the caller of lock wait `wait` until the cluster answers it.
    pub(crate) fn park(&mut self, wait: u64) -> oneshot::Receiver<TikvResponse> {
        let (tx, rx) = oneshot::channel();
        self.parked.insert(wait, tx);
        // Answers may already be waiting (a wait that finished at once).
        self.after_execution();
        rx
    }

    /// Hands finished lock waits to their callers and keeps the lock-wait ticker armed.
    fn after_execution(&mut self) {
        while let Some((wait, response)) = self.sim.poll_ready() {
            if let Some(caller) = self.parked.remove(&wait) {
                let _ = caller.send(response);
            }
        }
        let Some(due_ms) = self.sim.next_timeout_ms() else {
            return;
        };
        if self.ticker_at.is_some_and(|armed| armed <= due_ms) {
            return;
        }
        self.ticker_at = Some(due_ms);
        let at = Time::from_millis(due_ms.saturating_sub(EPOCH_MS));
        let world = self.me.clone();
        let sleep = self.executor.sleep_until(at);
        self.executor.spawn(Box::pin(async move {
            sleep.await;
            let Some(world) = world.upgrade() else {
                return;
            };
            let mut world = lock(&world);
            if world.ticker_at == Some(due_ms) {
                world.ticker_at = None;
            }
            let now_ms = world.wall_ms();
            world.sim.handle_timeout(now_ms);
            world.after_execution();
        }));
    }

    // -----------------------------------------------------------------------------------
    // Faults and chaos.
    // -----------------------------------------------------------------------------------

    /// Applies `fault` to the cluster now and traces it.
    pub(crate) fn apply(&mut self, fault: ClusterFault) {
        let description = describe_fault(&fault);
        let outcome = self.apply_fault(fault);
        self.trace(format_args!("fault {description}: {outcome}"));
        self.sync_model();
    }

    /// Applies `fault` at `at` (now, if that has passed).
    pub(crate) fn schedule(&mut self, at: Time, fault: ClusterFault) {
        let world = self.me.clone();
        let sleep = self.executor.sleep_until(at);
        self.executor.spawn(Box::pin(async move {
            sleep.await;
            if let Some(world) = world.upgrade() {
                lock(&world).apply(fault);
            }
        }));
    }

    pub(crate) fn start_chaos(&mut self, chaos: Chaos) {
        self.chaos = Some(chaos);
        self.chaos_faults = 0;
        self.schedule_chaos_tick();
    }

    pub(crate) fn stop_chaos(&mut self) {
        self.chaos = None;
    }

    fn schedule_chaos_tick(&mut self) {
        let Some(chaos) = self.chaos.clone() else {
            return;
        };
        let low = chaos.min_interval.as_micros() as u64;
        let high = chaos.max_interval.as_micros() as u64;
        let interval = Duration::from_micros(self.chaos_rng.between(low, high));
        let at = self.now() + interval;
        self.schedule(at, ClusterFault::Chaos);
    }

    /// One tick of the chaos schedule: a random fault, then the next tick.
    fn chaos_tick(&mut self) -> String {
        let Some(chaos) = self.chaos.clone() else {
            return "chaos stopped".to_owned();
        };
        self.chaos_faults += 1;
        if self.chaos_faults > chaos.max_faults {
            self.chaos = None;
            return "chaos finished".to_owned();
        }
        self.schedule_chaos_tick();
        let now = self.now();
        let (fault, later) = chaos::pick_fault(&mut self.chaos_rng, &self.sim, &chaos);
        for (after, fault) in later {
            self.schedule(now + after, fault);
        }
        let description = describe_fault(&fault);
        let outcome = self.apply_fault(fault);
        format!("{description}: {outcome}")
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
                let stopped = cluster.stop_store(store_id);
                if stopped.is_ok() {
                    *self.incarnations.entry(store_id).or_default() += 1;
                    self.break_streams(store_id);
                }
                stopped.map(|()| "stopped".to_owned())
            }
            ClusterFault::RestartStore(store_id) => cluster
                .restart_store(store_id)
                .map(|()| "restarted".to_owned()),
            ClusterFault::ElectAway(store_id) => Ok(chaos::elect_away(cluster, store_id)),
            ClusterFault::Inject(rule) => {
                self.sim.faults.inject(rule);
                Ok("armed".to_owned())
            }
            ClusterFault::StopPdMember(member) => cluster
                .stop_pd_member(member)
                .map(|()| pd_leader_note(cluster)),
            ClusterFault::StopPdLeader => match cluster.pd_leader().map(|m| m.id) {
                Some(member) => cluster
                    .stop_pd_member(member)
                    .map(|()| format!("stopped {member}; {}", pd_leader_note(cluster))),
                None => Ok("no leader".to_owned()),
            },
            ClusterFault::RestartPdMember(member) => cluster
                .restart_pd_member(member)
                .map(|()| pd_leader_note(cluster)),
            ClusterFault::MovePdLeader(Some(member)) => cluster
                .transfer_pd_leader(member)
                .map(|()| pd_leader_note(cluster)),
            ClusterFault::MovePdLeader(None) => cluster
                .resign_pd_leader()
                .map(|old| format!("{old} resigned; {}", pd_leader_note(cluster))),
            ClusterFault::ElectPdLeader => cluster
                .elect_pd_leader()
                .map(|leader| format!("leader {leader}")),
            ClusterFault::BreakTsoStreams => {
                cluster.break_tso_streams(tikv_proto::status::Status::new(
                    tikv_proto::status::Code::Unavailable,
                    "injected: tso stream broken",
                ));
                Ok("armed".to_owned())
            }
            ClusterFault::ApplyLag { store_id, lag } => {
                self.sim.set_apply_lag(store_id, lag);
                Ok("set".to_owned())
            }
            ClusterFault::Chaos => Ok(self.chaos_tick()),
        };
        result.unwrap_or_else(|err| format!("refused: {err}"))
    }
}

/// Who leads PD now, for traces.
fn pd_leader_note(cluster: &tikv_sim::cluster::Cluster) -> String {
    match cluster.pd_leader() {
        Some(leader) => format!("PD leader {}", leader.id),
        None => "no PD leader".to_owned(),
    }
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("now", &self.now())
            .field("open", &self.open)
            .field("streams", &self.streams.len())
            .field("parked", &self.parked.len())
            .finish_non_exhaustive()
    }
}
