//! The simulated cluster served over real gRPC on loopback: one port per PD member and one
//! per store, each speaking tikv-proto's shared HTTP/2 transport, and HTTP/1.1 on the same
//! ports (PD's HTTP API; each store's status API, `/config`). Each PD member's port answers as
//! that member does (the leader serves, followers refuse or forward, see
//! [`crate::cluster::PdCallKind`]); a member the model stops loses its port until it restarts.
//!
//! All ports share one [`Sim`] behind a mutex (the machine is cheap to step; the lock is never
//! held across an await). BatchCommands streams are answered entry by entry: everything that
//! finishes at once goes back in one response message, and parked requests (pessimistic
//! lock waits, replica reads waiting for their read index) are answered later on the same
//! stream, out of order, as TiKV does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message;
use tikv_proto::frame::Framed;
use tikv_proto::grpc::health::v1 as health;
use tikv_proto::kvrpcpb::ApiVersion;
use tikv_proto::rpc::BoxFuture;
use tikv_proto::status::{Code, Status};
use tikv_proto::tikvpb;
use tikv_proto::transport::server::{Handler, ServeOptions, ServerCall};
use tokio::sync::{mpsc, oneshot};

use crate::cluster::PdCallContext;
use crate::http::{HttpHandler, HttpRequest, HttpResponse};
use crate::serve::{DualServer, serve_dual_at, serve_loopback_dual};
use crate::sim::{Sim, SimConfig};
use crate::tikv::{Execution, TikvRequest, TikvResponse};

/// Wall-clock milliseconds for the served cluster (a loopback server runs in real time).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// State every handler of one served cluster shares.
#[derive(Debug)]
struct Shared {
    sim: Mutex<Sim>,
    parked: Mutex<BTreeMap<u64, oneshot::Sender<TikvResponse>>>,
    /// Bumped after every change made through [`SimServer::with`], so that open PD streams
    /// look at the model again (a Tso stream broken by a fault ends at once).
    changed: tokio::sync::watch::Sender<u64>,
    /// Tso streams opened, on any member.
    tso_streams: std::sync::atomic::AtomicUsize,
}

impl Shared {
    fn sim(&self) -> MutexGuard<'_, Sim> {
        // A handler that panicked while holding the lock leaves the model as it was before
        // the command; keep serving.
        self.sim
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Routes answers of parked requests that became ready to their callers.
    fn deliver_ready(&self, sim: &mut Sim) {
        while let Some((id, response)) = sim.poll_ready() {
            let sender = self
                .parked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&id);
            if let Some(sender) = sender {
                let _ = sender.send(response);
            }
        }
    }

    /// Runs one request; parked and delayed requests resolve through the returned receiver.
    fn execute(self: &Arc<Self>, store_id: u64, request: TikvRequest) -> Pending {
        let execution = self.sim().execute(store_id, request, now_ms());
        self.pending(store_id, execution)
    }

    fn pending(self: &Arc<Self>, store_id: u64, execution: Execution) -> Pending {
        let pending = match execution {
            Execution::Done(response) => Pending::Done(response),
            Execution::Failed(status) => Pending::Failed(status),
            Execution::Dropped => Pending::Dropped,
            Execution::Parked(id) => {
                let (tx, rx) = oneshot::channel();
                self.parked
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(id, tx);
                Pending::Parked(rx)
            }
            Execution::Delayed { delay_ms, request } => {
                let (tx, rx) = oneshot::channel();
                let shared = Arc::clone(self);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    let execution = shared
                        .sim()
                        .execute_after_delay(store_id, request, now_ms());
                    let outcome = shared.pending(store_id, execution).resolve().await;
                    if let Some(result) = outcome {
                        let _ = tx.send(result);
                    }
                });
                Pending::Delayed(rx)
            }
        };
        let mut sim = self.sim();
        self.deliver_ready(&mut sim);
        pending
    }
}

enum Pending {
    Done(TikvResponse),
    Failed(Status),
    Dropped,
    Parked(oneshot::Receiver<TikvResponse>),
    Delayed(oneshot::Receiver<Result<TikvResponse, Status>>),
}

impl Pending {
    async fn resolve(self) -> Option<Result<TikvResponse, Status>> {
        match self {
            Self::Done(response) => Some(Ok(response)),
            Self::Failed(status) => Some(Err(status)),
            Self::Dropped => None,
            Self::Parked(rx) => match rx.await {
                Ok(response) => Some(Ok(response)),
                Err(_) => Some(Err(Status::new(Code::Unavailable, "cluster stopped"))),
            },
            // A delayed request whose sender went away was dropped by a fault: no answer.
            Self::Delayed(rx) => rx.await.ok(),
        }
    }
}

/// A simulated cluster serving on loopback ports until dropped.
#[derive(Debug)]
pub struct SimServer {
    shared: Arc<Shared>,
    /// The runtime the servers run on (stopped PD members are served again on it).
    runtime: tokio::runtime::Handle,
    /// The first PD member's `host:port` (fixed: a restarted member binds its old port).
    first_pd: String,
    /// Each PD member's port, by member id.
    pd: Mutex<BTreeMap<u64, PdPort>>,
    stores: Vec<(u64, DualServer)>,
    ticker: tokio::task::JoinHandle<()>,
}

/// One PD member's port: its address, and its server while the member runs.
#[derive(Debug)]
struct PdPort {
    address: String,
    server: Option<DualServer>,
    /// gRPC connections accepted by servers of this port that were dropped (a stop).
    accepted_before: usize,
}

impl SimServer {
    /// Builds the cluster and serves every PD member and every store on free loopback ports
    /// (on the current tokio runtime).
    ///
    /// Errors when the configuration is impossible or a port cannot be bound.
    pub async fn start(config: SimConfig) -> std::io::Result<Self> {
        let sim = Sim::new(config).map_err(std::io::Error::other)?;
        Self::serve(sim).await
    }

    /// Like [`start`](Self::start), with the cluster pre-split at `user_keys` (see
    /// [`split_points`] for the boundaries each key becomes).
    ///
    /// Errors like [`start`](Self::start).
    pub async fn start_with_splits<K: AsRef<[u8]>>(
        config: SimConfig,
        user_keys: &[K],
    ) -> std::io::Result<Self> {
        let mut sim = Sim::new(config).map_err(std::io::Error::other)?;
        let points = split_points(sim.api_version(), user_keys);
        sim.cluster
            .split_keys(&points)
            .map_err(std::io::Error::other)?;
        Self::serve(sim).await
    }

    /// Serves an already built (split, loaded, faulted...) cluster: each PD member on its own
    /// loopback port, each store on its own, every port also answering HTTP/1.1 (PD's API on
    /// PD's ports, a store's status API on the store's, which is also its advertised
    /// `status_address`). Members that are stopped get a port once they run.
    ///
    /// Errors when a port cannot be bound or when called outside a tokio runtime.
    pub async fn serve(sim: Sim) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        let store_ids: Vec<u64> = sim.cluster.stores().map(|store| store.id).collect();
        let member_ids: Vec<u64> = sim.cluster.pd_members().iter().map(|m| m.id).collect();
        let (changed, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            sim: Mutex::new(sim),
            parked: Mutex::new(BTreeMap::new()),
            changed,
            tso_streams: std::sync::atomic::AtomicUsize::new(0),
        });
        let mut pd = BTreeMap::new();
        for member_id in member_ids {
            let server = serve_pd_member(&shared, &runtime, member_id, "127.0.0.1:0")?;
            let address = server.address().to_owned();
            shared
                .sim()
                .cluster
                .set_pd_member_url(member_id, &format!("http://{address}"))
                .map_err(std::io::Error::other)?;
            pd.insert(
                member_id,
                PdPort {
                    address,
                    server: Some(server),
                    accepted_before: 0,
                },
            );
        }
        let first_pd = pd
            .values()
            .next()
            .map(|port| port.address.clone())
            .unwrap_or_default();
        let mut stores = Vec::new();
        for store_id in store_ids {
            let bound = Arc::new(std::sync::OnceLock::new());
            let handle = serve_loopback_dual(
                Arc::new(StoreHandler {
                    shared: Arc::clone(&shared),
                    store_id,
                    address: Arc::clone(&bound),
                }),
                Arc::new(StatusHttp {
                    shared: Arc::clone(&shared),
                    store_id,
                }),
                ServeOptions::default(),
            )
            .await?;
            let _ = bound.set(handle.address().to_owned());
            shared
                .sim()
                .cluster
                .set_store_address(store_id, handle.address(), handle.address())
                .map_err(std::io::Error::other)?;
            stores.push((store_id, handle));
        }
        let ticker = tokio::spawn(tick(Arc::downgrade(&shared)));
        let server = Self {
            shared,
            runtime,
            first_pd,
            pd: Mutex::new(pd),
            stores,
            ticker,
        };
        // Members the model has stopped lose their ports at once.
        server.sync_pd_ports();
        Ok(server)
    }

    /// The first PD member's `host:port` (gRPC and the HTTP API); with one member, PD's.
    pub fn pd_address(&self) -> &str {
        &self.first_pd
    }

    /// The first PD member's client URL, `http://host:port`.
    pub fn pd_url(&self) -> String {
        format!("http://{}", self.first_pd)
    }

    /// Every PD member's `host:port`, in member id order (stopped members included: their
    /// ports refuse connections until they restart).
    pub fn pd_addresses(&self) -> Vec<String> {
        self.pd_ports()
            .values()
            .map(|p| p.address.clone())
            .collect()
    }

    /// The `host:port` of PD member `member_id`.
    pub fn pd_member_address(&self, member_id: u64) -> Option<String> {
        self.pd_ports().get(&member_id).map(|p| p.address.clone())
    }

    /// The id of the PD leader, `None` during an election.
    pub fn pd_leader(&self) -> Option<u64> {
        self.shared
            .sim()
            .cluster
            .pd_leader()
            .map(|leader| leader.id)
    }

    /// gRPC connections PD member `member_id` accepted so far (across restarts), and how many
    /// are open now.
    pub fn pd_connections(&self, member_id: u64) -> (usize, usize) {
        self.pd_ports().get(&member_id).map_or((0, 0), |port| {
            let (accepted, open) = port.server.as_ref().map_or((0, 0), |server| {
                (
                    server.grpc_connections_accepted(),
                    server.grpc_connections_open(),
                )
            });
            (port.accepted_before + accepted, open)
        })
    }

    /// How many Tso streams clients opened so far, on any PD member.
    pub fn tso_streams_opened(&self) -> usize {
        self.shared
            .tso_streams
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Each store's id and `host:port`.
    pub fn store_addresses(&self) -> Vec<(u64, String)> {
        self.stores
            .iter()
            .map(|(id, handle)| (*id, handle.address().to_owned()))
            .collect()
    }

    /// Runs `f` on the cluster model (split, merge, move leaders, stop PD members, break Tso
    /// streams, inject faults...), then makes the served ports follow it: a PD member the
    /// model stopped loses its port (its connections drop, dialling it is refused), one it
    /// restarted is served again on its old port, one it added gets a new port; open Tso
    /// streams the model broke end with their error.
    pub fn with<R>(&self, f: impl FnOnce(&mut Sim) -> R) -> R {
        let result = {
            let mut sim = self.shared.sim();
            let result = f(&mut sim);
            self.shared.deliver_ready(&mut sim);
            result
        };
        self.sync_pd_ports();
        result
    }

    fn pd_ports(&self) -> MutexGuard<'_, BTreeMap<u64, PdPort>> {
        self.pd
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens and closes PD members' ports as the model says they run, then tells open
    /// streams to look at the model again. A port that cannot be bound again stays closed
    /// (the member refuses connections) until the next call.
    fn sync_pd_ports(&self) {
        let members: Vec<(u64, bool)> = self
            .shared
            .sim()
            .cluster
            .pd_members()
            .iter()
            .map(|m| (m.id, m.running))
            .collect();
        let mut ports = self.pd_ports();
        // Members removed from the group lose their ports for good.
        for (member_id, port) in ports.iter_mut() {
            if !members.iter().any(|(id, _)| id == member_id) {
                if let Some(server) = port.server.take() {
                    port.accepted_before += server.grpc_connections_accepted();
                }
            }
        }
        for (member_id, running) in members {
            match ports.get_mut(&member_id) {
                Some(port) if !running => {
                    if let Some(server) = port.server.take() {
                        port.accepted_before += server.grpc_connections_accepted();
                    }
                }
                Some(port) if port.server.is_none() => {
                    port.server =
                        serve_pd_member(&self.shared, &self.runtime, member_id, &port.address).ok();
                }
                Some(_) => {}
                None if running => {
                    let Ok(server) =
                        serve_pd_member(&self.shared, &self.runtime, member_id, "127.0.0.1:0")
                    else {
                        continue;
                    };
                    let address = server.address().to_owned();
                    let _ = self
                        .shared
                        .sim()
                        .cluster
                        .set_pd_member_url(member_id, &format!("http://{address}"));
                    ports.insert(
                        member_id,
                        PdPort {
                            address,
                            server: Some(server),
                            accepted_before: 0,
                        },
                    );
                }
                None => {}
            }
        }
        drop(ports);
        self.shared.changed.send_modify(|version| *version += 1);
    }
}

/// Serves PD member `member_id` (gRPC and the HTTP API) on `address`.
fn serve_pd_member(
    shared: &Arc<Shared>,
    runtime: &tokio::runtime::Handle,
    member_id: u64,
    address: &str,
) -> std::io::Result<DualServer> {
    serve_dual_at(
        address,
        runtime,
        Arc::new(PdHandler {
            shared: Arc::clone(shared),
            member_id,
        }),
        Arc::new(PdHttp {
            shared: Arc::clone(shared),
            member_id,
        }),
        ServeOptions::default(),
    )
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

/// Expires lock waits on time.
async fn tick(shared: std::sync::Weak<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut sim = shared.sim();
        if sim.next_timeout_ms().is_some_and(|at| at <= now_ms()) {
            sim.handle_timeout(now_ms());
            shared.deliver_ready(&mut sim);
        }
    }
}

/// The boundaries that make `user_keys` region starts for clients of `api_version`: in API
/// V1/V1TTL both the key itself (RawKV's plain space) and its memcomparable form (TxnKV); in
/// API V2 the memcomparable forms of the key in the `DEFAULT` keyspace's raw and txn prefixes.
/// Sorted, without duplicates or empty keys.
pub fn split_points<K: AsRef<[u8]>>(api_version: ApiVersion, user_keys: &[K]) -> Vec<Bytes> {
    use tikv_proto::codec::{self, KeyMode, Keyspace};
    let mut points = Vec::new();
    for key in user_keys.iter().map(AsRef::as_ref) {
        match api_version {
            ApiVersion::V2 | ApiVersion::V3 => {
                for mode in [KeyMode::Raw, KeyMode::Txn] {
                    // Keyspace 0 always exists, so `new` cannot fail; skip rather than panic.
                    if let Ok(keyspace) = Keyspace::new(mode, 0) {
                        points.push(Bytes::from(codec::encode_bytes(&keyspace.encode_key(key))));
                    }
                }
            }
            ApiVersion::V1 | ApiVersion::V1ttl => {
                if !key.is_empty() {
                    points.push(Bytes::copy_from_slice(key));
                    points.push(Bytes::from(codec::encode_bytes(key)));
                }
            }
        }
    }
    points.sort();
    points.dedup();
    points
}

/// One PD member's HTTP API.
struct PdHttp {
    shared: Arc<Shared>,
    member_id: u64,
}

impl HttpHandler for PdHttp {
    fn handle(&self, request: &HttpRequest) -> HttpResponse {
        let mut sim = self.shared.sim();
        // Reports due by now reach PD before it answers (the min resolved ts).
        sim.advance_clock(now_ms());
        let url = sim
            .cluster
            .pd_member(self.member_id)
            .map(|member| member.client_url.clone())
            .unwrap_or_default();
        sim.handle_pd_http(request, &url)
    }

    fn now_ms(&self) -> Option<u64> {
        Some(now_ms())
    }
}

/// A store's status API.
struct StatusHttp {
    shared: Arc<Shared>,
    store_id: u64,
}

impl HttpHandler for StatusHttp {
    fn handle(&self, request: &HttpRequest) -> HttpResponse {
        self.shared.sim().handle_status_http(self.store_id, request)
    }

    fn now_ms(&self) -> Option<u64> {
        Some(now_ms())
    }
}

/// One PD member's gRPC service.
struct PdHandler {
    shared: Arc<Shared>,
    member_id: u64,
}

/// The PD metadata of a call, owned (it outlives the request's header map).
struct PdMetadata {
    allow_follower: bool,
    forwarded_host: Option<String>,
}

impl PdMetadata {
    fn context(&self, member_id: u64) -> PdCallContext<'_> {
        PdCallContext {
            member_id,
            allow_follower: self.allow_follower,
            forwarded_host: self.forwarded_host.as_deref(),
        }
    }
}

impl Handler for PdHandler {
    fn call(&self, call: ServerCall) -> BoxFuture<'static, ()> {
        let shared = Arc::clone(&self.shared);
        let member_id = self.member_id;
        Box::pin(async move {
            let ServerCall {
                path,
                headers,
                mut requests,
                mut responder,
                ..
            } = call;
            let metadata = {
                use crate::cluster::{FOLLOWER_HANDLE_METADATA, FORWARDED_HOST_METADATA};
                PdMetadata {
                    allow_follower: headers.contains_key(FOLLOWER_HANDLE_METADATA),
                    forwarded_host: headers
                        .get(FORWARDED_HOST_METADATA)
                        .and_then(|value| value.to_str().ok())
                        .filter(|host| !host.is_empty())
                        .map(str::to_owned),
                }
            };
            drop(headers);
            let tso = path == tikv_proto::pdpb::pd::TSO.path();
            let query = path == tikv_proto::pdpb::pd::QUERY_REGION.path();
            let tokens = path
                == tikv_proto::resource_manager::resource_manager::ACQUIRE_TOKEN_BUCKETS.path();
            if tso || query || tokens {
                // Streams: one answer per request message, in order. A Tso stream also ends
                // when the model breaks it.
                let mut changed = shared.changed.subscribe();
                let generation = shared.sim().cluster.tso_stream_generation();
                if tso {
                    shared
                        .tso_streams
                        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                }
                let mut watching = tso;
                loop {
                    let next = tokio::select! {
                        next = requests.next() => next,
                        seen = changed.changed(), if watching => {
                            if seen.is_err() {
                                watching = false;
                            } else if let Some(status) =
                                shared.sim().cluster.tso_stream_break(generation)
                            {
                                return responder.finish(Err(status));
                            }
                            continue;
                        }
                    };
                    let Some(next) = next else { break };
                    let Ok(payload) = next else { return };
                    let answer = {
                        let mut sim = shared.sim();
                        let context = metadata.context(member_id);
                        if tso {
                            match sim.cluster.tso_stream_break(generation) {
                                Some(status) => Err(status),
                                None => sim.handle_tso_at(&context, payload, now_ms()),
                            }
                        } else if tokens {
                            sim.handle_token_buckets_at(&context, payload)
                        } else {
                            sim.handle_query_region(payload)
                        }
                    };
                    match answer {
                        Ok(framed) => {
                            if responder.send(framed).await.is_err() {
                                return;
                            }
                        }
                        Err(status) => return responder.finish(Err(status)),
                    }
                }
                return responder.finish(Ok(()));
            }
            let answer = match requests.single().await {
                Ok(payload) => {
                    let context = metadata.context(member_id);
                    shared
                        .sim()
                        .handle_pd_unary_at(&context, &path, payload, now_ms())
                }
                Err(status) => Err(status),
            };
            responder.reply(answer).await;
        })
    }
}

struct StoreHandler {
    shared: Arc<Shared>,
    /// The store this port was opened for.
    store_id: u64,
    /// This port's `host:port`, once bound.
    address: Arc<std::sync::OnceLock<String>>,
}

impl Shared {
    /// The store a port serves: whichever store PD lists at `address` now (a test may move
    /// stores between addresses), else the store the port was opened for.
    fn store_at(&self, address: Option<&str>, opened_for: u64) -> u64 {
        let Some(address) = address else {
            return opened_for;
        };
        let sim = self.sim();
        if sim
            .cluster
            .store(opened_for)
            .is_some_and(|store| store.address == address)
        {
            return opened_for;
        }
        sim.cluster
            .stores()
            .find(|store| store.address == address)
            .map_or(opened_for, |store| store.id)
    }
}

impl Handler for StoreHandler {
    fn call(&self, call: ServerCall) -> BoxFuture<'static, ()> {
        let shared = Arc::clone(&self.shared);
        let store_id = self.store_id;
        let address = Arc::clone(&self.address);
        Box::pin(async move {
            if call.path == tikvpb::tikv::BATCH_COMMANDS.path() {
                return batch_commands(shared, store_id, address, call).await;
            }
            let store_id = shared.store_at(address.get().map(String::as_str), store_id);
            let ServerCall {
                path,
                requests,
                mut responder,
                ..
            } = call;
            let payload = match requests.single().await {
                Ok(payload) => payload,
                Err(status) => return responder.finish(Err(status)),
            };
            if path == health::health::CHECK.path() {
                let status = health::health_check_response::ServingStatus::Serving as i32;
                let framed = Framed::encode(&health::HealthCheckResponse { status }, usize::MAX)
                    .map_err(|err| Status::new(Code::Internal, err.to_string()));
                return responder.reply(framed).await;
            }
            let request = match TikvRequest::decode(&path, payload) {
                Ok(request) => request,
                Err(status) => return responder.finish(Err(status)),
            };
            match shared.execute(store_id, request).resolve().await {
                Some(Ok(response)) => responder.reply(response.encode()).await,
                Some(Err(status)) => responder.finish(Err(status)),
                // A dropped request is never answered; wait for the caller to give up.
                None => responder.closed().await,
            }
        })
    }
}

/// Serves one BatchCommands stream.
async fn batch_commands(
    shared: Arc<Shared>,
    opened_for: u64,
    address: Arc<std::sync::OnceLock<String>>,
    call: ServerCall,
) {
    use tikvpb::batch_commands_response::Response as Entry;
    let ServerCall {
        mut requests,
        mut responder,
        ..
    } = call;
    // Late answers (parked lock waits) come back through this channel.
    let (late_tx, mut late_rx) = mpsc::unbounded_channel::<(u64, Result<TikvResponse, Status>)>();
    let mut open = true;
    // Parked requests whose answers have not come back yet.
    let mut outstanding = 0usize;
    loop {
        if !open && outstanding == 0 {
            // The client half-closed and every answer went out: end the stream with OK.
            return responder.finish(Ok(()));
        }
        let mut ready_now: Vec<(u64, Result<TikvResponse, Status>)> = Vec::new();
        tokio::select! {
            next = requests.next(), if open => {
                let payload = match next {
                    Some(Ok(payload)) => payload,
                    Some(Err(_)) => return,
                    None => {
                        open = false;
                        continue;
                    }
                };
                let batch = match tikvpb::BatchCommandsRequest::decode(payload) {
                    Ok(batch) => batch,
                    Err(err) => {
                        return responder.finish(Err(Status::new(Code::Internal, err.to_string())));
                    }
                };
                // Resolved per message: a test may move stores between addresses.
                let store_id = shared.store_at(address.get().map(String::as_str), opened_for);
                shared.sim().note_batch_message(store_id, batch.requests.len());
                let entries = batch.requests.into_iter().zip(batch.request_ids);
                for (index, (entry, id)) in entries.enumerate() {
                    if index > 0 {
                        // TiKV hands each entry to its worker pools and goes on reading; here
                        // the entries run in turn, so let other streams (PD's TSO among
                        // them) have the thread between two entries rather than wait for
                        // the whole message.
                        tokio::task::yield_now().await;
                    }
                    let Some(cmd) = entry.cmd else {
                        // TiKV answers an entry without a command with an empty entry.
                        ready_now.push((id, Ok(TikvResponse::Batch(
                            tikvpb::batch_commands_response::response::Cmd::Empty(Default::default()),
                        ))));
                        continue;
                    };
                    match shared.execute(store_id, TikvRequest::Batch(cmd)) {
                        Pending::Done(response) => ready_now.push((id, Ok(response))),
                        Pending::Failed(status) => {
                            // A gRPC-level failure inside the stream breaks the whole stream,
                            // as TiKV does for a cluster id mismatch.
                            return responder.finish(Err(status));
                        }
                        Pending::Dropped => {}
                        parked @ (Pending::Parked(_) | Pending::Delayed(_)) => {
                            outstanding += 1;
                            let late_tx = late_tx.clone();
                            tokio::spawn(async move {
                                let result = parked.resolve().await.unwrap_or_else(|| {
                                    Err(Status::new(Code::Unavailable, "lost"))
                                });
                                let _ = late_tx.send((id, result));
                            });
                        }
                    }
                }
            }
            Some(late) = late_rx.recv() => {
                outstanding = outstanding.saturating_sub(1);
                ready_now.push(late);
            }
        }
        if ready_now.is_empty() {
            continue;
        }
        let store_id = shared.store_at(address.get().map(String::as_str), opened_for);
        let mut response = tikvpb::BatchCommandsResponse {
            transport_layer_load: shared.sim().transport_load(store_id),
            ..Default::default()
        };
        for (id, result) in ready_now {
            let Ok(TikvResponse::Batch(cmd)) = result else {
                continue;
            };
            response.request_ids.push(id);
            response.responses.push(Entry { cmd: Some(cmd) });
        }
        let framed = match Framed::encode(&response, usize::MAX) {
            Ok(framed) => framed,
            Err(err) => return responder.finish(Err(Status::new(Code::Internal, err.to_string()))),
        };
        if responder.send(framed).await.is_err() {
            return;
        }
    }
}
