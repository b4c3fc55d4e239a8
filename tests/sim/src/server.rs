//! The simulated cluster served over real gRPC on loopback: one port for PD and one per
//! store, each speaking tikv-proto's shared HTTP/2 transport, and HTTP/1.1 on the same ports
//! (PD's HTTP API; each store's status API, `/config`).
//!
//! All ports share one [`Sim`] behind a mutex (the machine is cheap to step; the lock is never
//! held across an await). BatchCommands streams are answered entry by entry: everything that
//! finishes at once goes back in one response message, and parked pessimistic lock requests
//! are answered later on the same stream, out of order, as TiKV does.

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

use crate::http::{HttpHandler, HttpRequest, HttpResponse};
use crate::serve::{DualServer, serve_loopback_dual};
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
    pd_url: Mutex<String>,
    parked: Mutex<BTreeMap<u64, oneshot::Sender<TikvResponse>>>,
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
    pd: DualServer,
    stores: Vec<(u64, DualServer)>,
    ticker: tokio::task::JoinHandle<()>,
}

impl SimServer {
    /// Builds the cluster and serves PD and every store on free loopback ports (on the
    /// current tokio runtime).
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

    /// Serves an already built (split, loaded, faulted...) cluster: PD on one loopback port,
    /// each store on its own, every port also answering HTTP/1.1 (PD's API on PD's port, a
    /// store's status API on the store's, which is also its advertised `status_address`).
    ///
    /// Errors when a port cannot be bound or when called outside a tokio runtime.
    pub async fn serve(sim: Sim) -> std::io::Result<Self> {
        let store_ids: Vec<u64> = sim.cluster.stores().map(|store| store.id).collect();
        let shared = Arc::new(Shared {
            sim: Mutex::new(sim),
            pd_url: Mutex::new(String::new()),
            parked: Mutex::new(BTreeMap::new()),
        });
        let pd = serve_loopback_dual(
            Arc::new(PdHandler {
                shared: Arc::clone(&shared),
            }),
            Arc::new(PdHttp {
                shared: Arc::clone(&shared),
            }),
            ServeOptions::default(),
        )
        .await?;
        *shared
            .pd_url
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            format!("http://{}", pd.address());
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
        Ok(Self {
            shared,
            pd,
            stores,
            ticker,
        })
    }

    /// PD's `host:port` (gRPC and the HTTP API).
    pub fn pd_address(&self) -> &str {
        self.pd.address()
    }

    /// PD's client URL, `http://host:port`.
    pub fn pd_url(&self) -> String {
        format!("http://{}", self.pd.address())
    }

    /// Each store's id and `host:port`.
    pub fn store_addresses(&self) -> Vec<(u64, String)> {
        self.stores
            .iter()
            .map(|(id, handle)| (*id, handle.address().to_owned()))
            .collect()
    }

    /// Runs `f` on the cluster model (split, merge, move leaders, inject faults...).
    pub fn with<R>(&self, f: impl FnOnce(&mut Sim) -> R) -> R {
        let mut sim = self.shared.sim();
        let result = f(&mut sim);
        self.shared.deliver_ready(&mut sim);
        result
    }
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

/// PD's HTTP API.
struct PdHttp {
    shared: Arc<Shared>,
}

impl HttpHandler for PdHttp {
    fn handle(&self, request: &HttpRequest) -> HttpResponse {
        let pd_url = self
            .shared
            .pd_url
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        self.shared.sim().handle_pd_http(request, &pd_url)
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

struct PdHandler {
    shared: Arc<Shared>,
}

impl Handler for PdHandler {
    fn call(&self, call: ServerCall) -> BoxFuture<'static, ()> {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let ServerCall {
                path,
                mut requests,
                mut responder,
                ..
            } = call;
            let tso = path == tikv_proto::pdpb::pd::TSO.path();
            let query = path == tikv_proto::pdpb::pd::QUERY_REGION.path();
            let tokens = path
                == tikv_proto::resource_manager::resource_manager::ACQUIRE_TOKEN_BUCKETS.path();
            if tso || query || tokens {
                // Streams: one answer per request message, in order.
                while let Some(next) = requests.next().await {
                    let Ok(payload) = next else { return };
                    let answer = {
                        let mut sim = shared.sim();
                        if tso {
                            sim.handle_tso(payload, now_ms())
                        } else if tokens {
                            sim.handle_token_buckets(payload)
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
                    let pd_url = shared
                        .pd_url
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone();
                    shared
                        .sim()
                        .handle_pd_unary(&path, payload, &pd_url, now_ms())
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
                for (entry, id) in batch.requests.into_iter().zip(batch.request_ids) {
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
