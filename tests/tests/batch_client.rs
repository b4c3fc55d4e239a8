//! Ports of client-go's batch client tests (`internal/client/client_test.go`,
//! `client_fail_test.go`, `client_async_test.go`) to the driver's BatchCommands connections,
//! plus extra checks of the same machinery (marked "Extra" in their doc comments).
//!
//! Most tests run a real client (`tikv_tokio::connect`) against the simulated cluster's PD
//! (one store, one replica) whose store address points at a scripted fake store,
//! [`FakeStore`], over real HTTP/2 on loopback; their assertions hold however the machine's
//! threads interleave. Tests whose outcome depends on timing or on how drains interleave
//! (a broken stream among several, idle recycling, the overload wait, answers overtaking
//! each other) run under virtual time instead, in [`virtual_time`]: the same client on the
//! simulated runtime against the simulated cluster.
//!
//! The fake store logs every BatchCommands stream, message and entry and every unary call,
//! and answers raw gets as the key's prefix (before `/`) tells it:
//!
//! | prefix | answer |
//! |---|---|
//! | none or unknown | at once |
//! | `never` | never |
//! | `never1` | never for the first attempt, at once afterwards |
//! | `late1` | first attempt after 400 ms, later ones after 150 ms |
//! | `noarm1` | first attempt with an entry that has no command arm, then normally |
//! | `wrongarm` | with a `RawPut` entry |
//! | `dup` | twice |
//!
//! A get of key `k` answered for its n-th attempt returns the value `k@n`, so a test can tell
//! which attempt's answer the caller got. Entries of one message are answered in reverse
//! order, so matching by request id is always exercised.
//!
//! Not ported: `TestConn`, `TestGetConnAfterClose`, `TestConcurrentCloseConnPanic` and the
//! async close tests (no connection pool versions or `CloseAddr`; `Client::close` closes
//! every connection at once, tested in `tests/simulation.rs`), `TestForwardMetadataBy*` and
//! the forwarding half of `TestRandomRestartStoreAndForwarding` (no forwarding),
//! `TestLimitConcurrency`,
//! `TestPrioritySentLimit`, `TestBatchPolicy` (no concurrency limit, priorities or turbo
//! batching), `TestSendWhenReconnect` and `TestFastFailWhenNoAvailableConn` (no "locked for
//! recreate" state: a task reconnects inline), `TestBatchClientReceiveHealthFeedback` (no
//! event listener; the fake store attaches feedback to every answer, so every test checks it
//! is tolerated), and Go internals (encoder pools, builder, diagnostics, RU accounting,
//! interceptors, coprocessor stream leases, `TestCollapseResolveLock`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use tikv_core::{Client, Config, Error};
use tikv_proto::frame::Framed;
use tikv_proto::grpc::health::v1 as health;
use tikv_proto::rpc::BoxFuture;
use tikv_proto::status::{Code, Status};
use tikv_proto::transport::server::{
    Handler, ServeOptions, ServerCall, ServerHandle, spawn_server,
};
use tikv_proto::{kvrpcpb, tikvpb};
use tikv_sim::cluster::ClusterConfig;
use tikv_sim::serve::ServerExecutor;
use tikv_sim::{SimConfig, SimServer};

use tikvpb::batch_commands_request::request::Cmd as Req;
use tikvpb::batch_commands_response::response::Cmd as Resp;

const LIMIT: usize = 64 << 20;

// ---------------------------------------------------------------------------------------------
// The fake store.
// ---------------------------------------------------------------------------------------------

/// One BatchCommands message as the fake store received it.
#[derive(Clone, Debug)]
struct MessageLog {
    /// The raw get keys it carried, in request order.
    keys: Vec<Bytes>,
    /// Number of entries.
    entries: usize,
    /// Whether the store ended the stream with an error instead of answering it.
    failed: bool,
}

/// Everything the fake store saw.
#[derive(Debug, Default)]
struct Seen {
    /// The `tikv-batch-conn-index` header of every BatchCommands stream, in opening order.
    streams: Vec<String>,
    /// Every BatchCommands message, in arrival order.
    messages: Vec<MessageLog>,
    /// Attempts per raw get key (batched entries and unary calls).
    attempts: BTreeMap<Bytes, u32>,
    /// Paths of unary calls other than health checks, in arrival order.
    unary: Vec<String>,
    /// Number of health checks.
    health_checks: usize,
    /// BatchCommands streams whose request side ended (the client half-closed or reset them).
    streams_ended: usize,
}

impl Seen {
    fn attempts(&self, key: &str) -> u32 {
        self.attempts
            .get(key.as_bytes())
            .copied()
            .unwrap_or_default()
    }

    fn batched_entries(&self) -> usize {
        self.messages.iter().map(|m| m.entries).sum()
    }
}

/// What the store does to whole streams.
#[derive(Debug, Default)]
struct Script {
    /// End every BatchCommands stream with UNAVAILABLE at its first message.
    fail_all: bool,
    /// Add entries with ids the client never used to every response message.
    unknown_ids: bool,
}

/// A TiKV store that answers from a script and logs what it saw.
#[derive(Debug, Default)]
struct FakeStore {
    seen: Mutex<Seen>,
    script: Mutex<Script>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FakeStore {
    fn new(script: Script) -> Arc<Self> {
        Arc::new(Self {
            seen: Mutex::default(),
            script: Mutex::new(script),
        })
    }

    fn seen(&self) -> MutexGuard<'_, Seen> {
        lock(&self.seen)
    }

    fn script(&self) -> MutexGuard<'_, Script> {
        lock(&self.script)
    }

    /// Counts an attempt of `key` and returns its number (1 = first).
    fn attempt(&self, key: &Bytes) -> u32 {
        let mut seen = self.seen();
        let count = seen.attempts.entry(key.clone()).or_default();
        *count += 1;
        *count
    }
}

/// The handler: a shared [`FakeStore`] (calls run as `'static` futures that need their own
/// reference to it).
struct Served(Arc<FakeStore>);

impl Handler for Served {
    fn call(&self, call: ServerCall) -> BoxFuture<'static, ()> {
        let store = Arc::clone(&self.0);
        Box::pin(async move {
            if call.path == tikvpb::tikv::BATCH_COMMANDS.path() {
                serve_batch_commands(store, call).await;
            } else {
                serve_unary(store, call).await;
            }
        })
    }
}

/// What the writer half of a BatchCommands call sends next.
enum Out {
    Message(tikvpb::BatchCommandsResponse),
    Fail(Status),
}

/// How one entry is answered.
enum Plan {
    Now(Resp),
    After(Duration, Resp),
    Twice(Resp),
    NoArm,
    Never,
}

fn health_feedback(seq: u64) -> Option<kvrpcpb::HealthFeedback> {
    // The client-go mock attaches feedback to every answer; so does this store.
    Some(kvrpcpb::HealthFeedback {
        store_id: 1,
        feedback_seq_no: seq,
        slow_score: 1,
    })
}

fn response(
    entries: Vec<(u64, Option<Resp>)>,
    seq: u64,
    unknown_ids: bool,
) -> tikvpb::BatchCommandsResponse {
    let mut message = tikvpb::BatchCommandsResponse {
        health_feedback: health_feedback(seq),
        ..Default::default()
    };
    for (id, cmd) in entries {
        message.request_ids.push(id);
        message
            .responses
            .push(tikvpb::batch_commands_response::Response { cmd });
        if unknown_ids {
            // An id from far outside anything the client allocated, and one near it.
            for unknown in [u64::MAX - id, id | (1 << 62)] {
                message.request_ids.push(unknown);
                message
                    .responses
                    .push(tikvpb::batch_commands_response::Response {
                        cmd: Some(Resp::RawGet(kvrpcpb::RawGetResponse {
                            value: Bytes::from_static(b"not yours"),
                            ..Default::default()
                        })),
                    });
            }
        }
    }
    message
}

fn raw_get_answer(key: &Bytes, attempt: u32) -> kvrpcpb::RawGetResponse {
    let mut value = key.to_vec();
    value.extend_from_slice(format!("@{attempt}").as_bytes());
    kvrpcpb::RawGetResponse {
        value: value.into(),
        ..Default::default()
    }
}

/// Decides how to answer one entry (see the table in the crate docs).
fn plan_entry(store: &FakeStore, cmd: Option<Req>) -> (Option<Bytes>, Plan) {
    match cmd {
        Some(Req::RawGet(get)) => {
            let key = get.key;
            let attempt = store.attempt(&key);
            let answer = Resp::RawGet(raw_get_answer(&key, attempt));
            let prefix = key
                .split(|b| *b == b'/')
                .next()
                .filter(|_| key.contains(&b'/'))
                .unwrap_or_default();
            let plan = match (prefix, attempt) {
                (b"never", _) | (b"never1", 1) => Plan::Never,
                (b"late1", 1) => Plan::After(Duration::from_millis(400), answer),
                (b"late1", _) => Plan::After(Duration::from_millis(150), answer),
                (b"noarm1", 1) => Plan::NoArm,
                (b"wrongarm", _) => Plan::Now(Resp::RawPut(kvrpcpb::RawPutResponse::default())),
                (b"dup", _) => Plan::Twice(answer),
                _ => Plan::Now(answer),
            };
            (Some(key), plan)
        }
        Some(Req::RawPut(_)) => (None, Plan::Now(Resp::RawPut(Default::default()))),
        _ => (None, Plan::NoArm),
    }
}

async fn serve_batch_commands(store: Arc<FakeStore>, call: ServerCall) {
    let ServerCall {
        headers,
        mut requests,
        mut responder,
        ..
    } = call;
    let conn_index = headers
        .get("tikv-batch-conn-index")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    store.seen().streams.push(conn_index);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Out>();
    let reader = {
        let store = Arc::clone(&store);
        async move {
            while let Some(Ok(payload)) = requests.next().await {
                let Ok(batch) = tikvpb::BatchCommandsRequest::decode(payload) else {
                    let _ = tx.send(Out::Fail(Status::new(Code::Internal, "bad batch")));
                    return;
                };
                let (fail, unknown_ids) = {
                    let script = store.script();
                    (script.fail_all, script.unknown_ids)
                };
                let mut log = MessageLog {
                    keys: Vec::new(),
                    entries: batch.requests.len(),
                    failed: fail,
                };
                let mut plans = Vec::new();
                for (request, id) in batch.requests.into_iter().zip(batch.request_ids) {
                    let (key, plan) = plan_entry(&store, request.cmd);
                    log.keys.extend(key);
                    plans.push((id, plan));
                }
                let seq = {
                    let mut seen = store.seen();
                    seen.messages.push(log);
                    seen.messages.len() as u64
                };
                if fail {
                    let _ = tx.send(Out::Fail(Status::new(
                        Code::Unavailable,
                        "injected: stream broken",
                    )));
                    return;
                }
                let mut now = Vec::new();
                for (id, plan) in plans.into_iter().rev() {
                    match plan {
                        Plan::Now(cmd) => now.push((id, Some(cmd))),
                        Plan::NoArm => now.push((id, None)),
                        Plan::Twice(cmd) => {
                            now.push((id, Some(cmd.clone())));
                            now.push((id, Some(cmd)));
                        }
                        Plan::After(delay, cmd) => {
                            let tx = tx.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                let message = response(vec![(id, Some(cmd))], seq, unknown_ids);
                                let _ = tx.send(Out::Message(message));
                            });
                        }
                        Plan::Never => {}
                    }
                }
                if !now.is_empty() {
                    let message = response(now, seq, unknown_ids);
                    let _ = tx.send(Out::Message(message));
                }
            }
            store.seen().streams_ended += 1;
        }
    };
    let writer = async move {
        while let Some(out) = rx.recv().await {
            match out {
                Out::Message(message) => {
                    let Ok(framed) = Framed::encode(&message, LIMIT) else {
                        return;
                    };
                    if responder.send(framed).await.is_err() {
                        return;
                    }
                }
                Out::Fail(status) => {
                    responder.finish(Err(status));
                    return;
                }
            }
        }
        responder.finish(Ok(()));
    };
    futures_util::future::join(reader, writer).await;
}

/// Answers health checks with SERVING and the raw commands that have no batch arm with
/// fixed values, logging each path.
async fn serve_unary(store: Arc<FakeStore>, call: ServerCall) {
    fn encode(message: &impl prost::Message) -> Result<Framed, Status> {
        Framed::encode(message, LIMIT).map_err(|err| Status::new(Code::Internal, err.to_string()))
    }
    let ServerCall {
        path,
        requests,
        responder,
        ..
    } = call;
    let request = match requests.single().await {
        Ok(request) => request,
        Err(status) => return responder.finish(Err(status)),
    };
    if path == health::health::CHECK.path() {
        store.seen().health_checks += 1;
        let serving = health::health_check_response::ServingStatus::Serving as i32;
        return responder
            .reply(encode(&health::HealthCheckResponse { status: serving }))
            .await;
    }
    store.seen().unary.push(path.clone());
    let answer = match path.as_str() {
        p if p == tikvpb::tikv::RAW_GET_KEY_TTL.path() => encode(&kvrpcpb::RawGetKeyTtlResponse {
            ttl: 42,
            ..Default::default()
        }),
        p if p == tikvpb::tikv::RAW_COMPARE_AND_SWAP.path() => encode(&kvrpcpb::RawCasResponse {
            succeed: true,
            previous_not_exist: true,
            ..Default::default()
        }),
        p if p == tikvpb::tikv::RAW_CHECKSUM.path() => encode(&kvrpcpb::RawChecksumResponse {
            checksum: 7,
            total_kvs: 3,
            total_bytes: 30,
            ..Default::default()
        }),
        p if p == tikvpb::tikv::RAW_GET.path() => {
            let get = kvrpcpb::RawGetRequest::decode(request).unwrap_or_default();
            let attempt = store.attempt(&get.key);
            encode(&raw_get_answer(&get.key, attempt))
        }
        other => Err(Status::new(Code::Unimplemented, format!("fake: {other}"))),
    };
    responder.reply(answer).await;
}

// ---------------------------------------------------------------------------------------------
// The test bed: the simulated PD, the fake store behind store 1's address, a client.
// ---------------------------------------------------------------------------------------------

/// Serves `store` on `address` (`127.0.0.1:0` for a free port) until the handle is dropped.
async fn serve_at(store: &Arc<FakeStore>, address: &str) -> ServerHandle {
    // A listener just given up closes once its aborted accept task is dropped, which happens
    // on the executor shortly after: retry a rebind of the same port for a while.
    let mut tries = 0;
    let listener = loop {
        match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => break listener,
            Err(_) if tries < 200 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => panic!("binding {address}: {err}"),
        }
    };
    let address = listener
        .local_addr()
        .unwrap_or_else(|err| panic!("{err}"))
        .to_string();
    let incoming = futures_util::stream::unfold(listener, |listener| async move {
        let next = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((next, listener))
    });
    spawn_server(
        ServerExecutor::new(tokio::runtime::Handle::current()),
        address,
        incoming,
        Arc::new(Served(Arc::clone(store))),
        ServeOptions::default(),
    )
}

struct Bed {
    /// Keeps PD up.
    _sim: SimServer,
    store: Arc<FakeStore>,
    server: Option<ServerHandle>,
    address: String,
    client: Client,
}

impl Bed {
    /// A one-store cluster whose store is `store` (or, with `None`, a port nobody listens on).
    async fn start(store: Option<Arc<FakeStore>>, config: Config) -> Self {
        let sim = SimServer::start(SimConfig {
            cluster: ClusterConfig {
                store_count: 1,
                replica_count: 1,
                ..ClusterConfig::default()
            },
            ..SimConfig::default()
        })
        .await
        .unwrap_or_else(|err| panic!("starting the cluster: {err}"));
        let (store, server, address) = match store {
            Some(store) => {
                let server = serve_at(&store, "127.0.0.1:0").await;
                let address = server.address().to_owned();
                (store, Some(server), address)
            }
            None => (
                FakeStore::new(Script::default()),
                None,
                dead_address().await,
            ),
        };
        sim.with(|sim| sim.cluster.set_store_address(1, &address, &address))
            .unwrap_or_else(|err| panic!("{err}"));
        let client = tikv_tokio::connect([sim.pd_address()], config)
            .unwrap_or_else(|err| panic!("connecting: {err}"));
        Self {
            _sim: sim,
            store,
            server,
            address,
            client,
        }
    }

    async fn with_script(script: Script, config: Config) -> Self {
        Self::start(Some(FakeStore::new(script)), config).await
    }

    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.store.seen()
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        self.client.raw().get(key.to_owned()).await
    }

    /// Gets every key at once, from as many concurrent callers (futures polled together, so
    /// every command is queued to the driver before it runs any of them).
    async fn get_all(&self, keys: &[String]) -> Vec<Result<Option<Bytes>, Error>> {
        let raw = self.client.raw();
        futures_util::future::join_all(keys.iter().map(|key| raw.get(key.clone()))).await
    }
}

/// A loopback address where connecting is refused.
async fn dead_address() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let address = listener
        .local_addr()
        .unwrap_or_else(|err| panic!("{err}"))
        .to_string();
    drop(listener);
    address
}

fn config() -> Config {
    Config::default()
        .with_read_timeout_short(Duration::from_secs(10))
        .with_raw_max_backoff(Duration::from_secs(5))
}

fn value(key: &str, attempt: u32) -> Option<Bytes> {
    Some(Bytes::from(format!("{key}@{attempt}")))
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:04}")).collect()
}

/// Fails the test when `future` takes longer than `limit`: nothing may hang.
async fn bounded<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

fn short(read_timeout_ms: u64, backoff_ms: u64) -> Config {
    Config::default()
        .with_read_timeout_short(Duration::from_millis(read_timeout_ms))
        .with_raw_max_backoff(Duration::from_millis(backoff_ms))
}

// ---------------------------------------------------------------------------------------------
// Ported tests.
// ---------------------------------------------------------------------------------------------

/// Port of `TestBatchClientRecoverAfterServerRestart`: requests succeed, fail while the store
/// is down, and succeed again once it is back on the same address, with the same client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_batch_client_recover_after_server_restart() {
    let mut bed = Bed::with_script(Script::default(), short(2_000, 300)).await;
    bounded(Duration::from_secs(20), "the whole test", async {
        for i in 0..100 {
            let key = format!("before{i:03}");
            assert_eq!(bed.get(&key).await, Ok(value(&key, 1)));
        }
        let streams_before = bed.seen().streams.len();

        drop(bed.server.take());
        for i in 0..10 {
            let result = bed.get(&format!("down{i}")).await;
            assert!(
                matches!(result, Err(Error::BackoffExhausted { .. })),
                "request {i} while the store is down: {result:?}"
            );
        }
        assert_eq!(bed.seen().attempts("down0"), 0);

        bed.server = Some(serve_at(&bed.store, &bed.address).await);
        for i in 0..100 {
            let key = format!("after{i:03}");
            assert_eq!(bed.get(&key).await, Ok(value(&key, 1)), "after restart");
        }
        assert!(
            bed.seen().streams.len() > streams_before,
            "the client opened new BatchCommands streams after the restart"
        );
    })
    .await;
}

/// Port of `TestPanicInRecvLoop`. The Rust driver has no panics to recover from; what carries
/// over is the failpoint's effect, an error in every receive loop: while every stream breaks,
/// a request fails with a typed error once its backoff budget is spent, and as soon as the
/// store behaves again requests succeed on the same client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_panic_in_recv_loop() {
    let script = Script {
        fail_all: true,
        ..Script::default()
    };
    let bed = Bed::with_script(script, short(2_000, 300)).await;
    let result = bounded(Duration::from_secs(5), "a get", bed.get("a")).await;
    assert!(
        matches!(result, Err(Error::BackoffExhausted { .. })),
        "{result:?}"
    );
    {
        let seen = bed.seen();
        assert!(seen.attempts("a") >= 1);
        assert!(seen.messages.iter().all(|m| m.failed));
    }

    bed.store.script().fail_all = false;
    let result = bounded(Duration::from_secs(5), "a get", bed.get("b")).await;
    assert_eq!(result, Ok(value("b", 1)));
}

/// Port of `TestSendRequestAsyncTimeout` ("TimeoutOnHandle"): a store that takes the request
/// and never answers makes every attempt end at the client's deadline; the operation fails
/// with the deadline as its last error once the backoff budget is spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_send_request_async_timeout() {
    let bed = Bed::with_script(Script::default(), short(200, 500)).await;
    let started = Instant::now();
    let result = bounded(Duration::from_secs(5), "a get", bed.get("never/x")).await;
    let elapsed = started.elapsed();
    match &result {
        Err(Error::BackoffExhausted { last_error, .. }) => {
            assert!(last_error.contains("deadline"), "{last_error}");
        }
        other => panic!("expected BackoffExhausted, got {other:?}"),
    }
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(bed.seen().attempts("never/x") >= 2, "it was retried");
}

/// Port of `TestCancelTimeoutRetErr` (the cancelled context): a caller that gives up (drops
/// the future, Rust's cancellation) cancels its operation and leaves the client working for
/// everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_cancel_timeout_ret_err() {
    let bed = Bed::with_script(Script::default(), config()).await;
    let raw = bed.client.raw();
    let caller = tokio::spawn(async move { raw.get("never/c").await });
    bounded(
        Duration::from_secs(5),
        "the request reaching the store",
        async {
            while bed.seen().attempts("never/c") == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        },
    )
    .await;
    caller.abort();
    let given_up = caller.await;
    assert!(
        given_up
            .as_ref()
            .is_err_and(tokio::task::JoinError::is_cancelled),
        "{given_up:?}"
    );
    assert_eq!(bed.seen().attempts("never/c"), 1);
    // The abandoned operation is cancelled in the machine, not left to time out.
    assert_eq!(bed.client.ops_in_flight().await, Ok(0));
    let result = bounded(Duration::from_secs(5), "a get", bed.get("after")).await;
    assert_eq!(result, Ok(value("after", 1)));
}

/// Port of `TestCancelTimeoutRetErr` (the zero timeout): with a zero read timeout every
/// attempt is past its deadline before any answer can arrive, so the operation must fail with
/// a deadline error once the backoff budget is spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_cancel_timeout_ret_err_zero_timeout() {
    let bed = Bed::with_script(Script::default(), short(0, 300)).await;
    let result = bounded(Duration::from_secs(5), "a get", bed.get("zero")).await;
    match &result {
        Err(Error::BackoffExhausted { last_error, .. }) => {
            assert!(last_error.contains("deadline"), "{last_error}");
        }
        other => panic!("expected BackoffExhausted, got {other:?}"),
    }
}

/// Port of `TestFastFailRequest`: a store nobody listens on (connect refused) fails the request
/// with a typed error after the backoff budget, long before the 20 s read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_fast_fail_request() {
    let bed = Bed::start(None, short(20_000, 1_000)).await;
    let started = Instant::now();
    let result = bounded(Duration::from_secs(10), "a get", bed.get("key")).await;
    let elapsed = started.elapsed();
    match &result {
        Err(Error::BackoffExhausted { slept_ms, kind, .. }) => {
            // As in client-go, the budget is spent once the total reaches it; the last sleep
            // (at most tikvRPC's 2 s cap) may overshoot it.
            assert!((1_000..3_000).contains(slept_ms), "{slept_ms}");
            assert_eq!(*kind, tikv_core::backoff::BackoffKind::TiKvRpc);
        }
        other => panic!("expected BackoffExhausted, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
}

/// Port of `TestRandomRestartStoreAndForwarding`, without forwarding (not implemented): many
/// callers keep sending while the store restarts several times on the same address; every
/// failure is a typed error, never a hang, and afterwards every request succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_random_restart_store() {
    let mut bed = Bed::with_script(Script::default(), short(500, 1_000)).await;
    let raw = bed.client.raw();
    let workers: Vec<_> = (0..32)
        .map(|w| {
            let raw = raw.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for i in 0..25 {
                    let key = format!("w{w:02}-{i:02}");
                    outcomes.push((key.clone(), raw.get(key).await));
                }
                outcomes
            })
        })
        .collect();
    for round in 0..4u64 {
        // Fixed, uneven pauses instead of client-go's random ones, so runs compare.
        tokio::time::sleep(Duration::from_millis(40 + 25 * round)).await;
        drop(bed.server.take());
        tokio::time::sleep(Duration::from_millis(30 + 20 * round)).await;
        bed.server = Some(serve_at(&bed.store, &bed.address).await);
    }
    let mut succeeded = 0;
    for worker in bounded(
        Duration::from_secs(30),
        "the workers",
        futures_util::future::join_all(workers),
    )
    .await
    {
        for (key, outcome) in worker.unwrap_or_else(|err| panic!("{err}")) {
            match outcome {
                Ok(got) => {
                    let attempts = bed.seen().attempts(&key);
                    assert!(
                        (1..=attempts).any(|n| got == value(&key, n)),
                        "{key}: {got:?}"
                    );
                    succeeded += 1;
                }
                Err(Error::BackoffExhausted { .. }) => {}
                Err(other) => panic!("{key}: unexpected error {other:?}"),
            }
        }
    }
    assert!(succeeded > 0);
    for i in 0..20 {
        let key = format!("calm{i}");
        assert_eq!(bed.get(&key).await, Ok(value(&key, 1)));
    }
}

// ---------------------------------------------------------------------------------------------
// Extra tests (no client-go counterpart).
// ---------------------------------------------------------------------------------------------

/// Extra: requests to one store from many concurrent callers share BatchCommands messages, and
/// no message carries more than `max_batch_size` entries.
///
/// On one thread, so that every caller's command is queued before the driver runs (on several
/// threads the driver starts on the first ones while the rest are queued, and how many
/// messages that takes depends on the machine's load).
#[tokio::test]
async fn extra_concurrent_requests_are_batched() {
    for max_batch_size in [128, 16] {
        let config = config()
            .with_connections_per_store(1)
            .with_max_batch_size(max_batch_size);
        let bed = Bed::with_script(Script::default(), config).await;
        let keys = keys("k", 512);
        let results = bounded(Duration::from_secs(20), "512 gets", bed.get_all(&keys)).await;
        for (key, result) in keys.iter().zip(&results) {
            assert_eq!(result, &Ok(value(key, 1)));
        }
        let seen = bed.seen();
        assert_eq!(seen.batched_entries(), 512);
        let largest = seen.messages.iter().map(|m| m.entries).max();
        assert!(largest.is_some_and(|n| n <= max_batch_size), "{largest:?}");
        // All 512 park on one region lookup and leave in one drain: full batches only.
        assert_eq!(
            seen.messages.len(),
            512 / max_batch_size,
            "messages for 512 concurrent gets"
        );
        assert_eq!(seen.streams, ["0"]);
    }
}

/// Extra: a request whose answer never comes ends at the client's read timeout and is
/// retried; the retry's answer is the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_unanswered_request_times_out_and_is_retried() {
    let bed = Bed::with_script(Script::default(), short(300, 5_000)).await;
    let started = Instant::now();
    let result = bounded(Duration::from_secs(5), "a get", bed.get("never1/a")).await;
    assert_eq!(result, Ok(value("never1/a", 2)));
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(bed.seen().attempts("never1/a"), 2);
}

/// Extra: an answer that arrives after its request timed out is dropped; the caller gets the
/// retry's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_late_answer_after_timeout_is_ignored() {
    let bed = Bed::with_script(Script::default(), short(300, 5_000)).await;
    let result = bounded(Duration::from_secs(5), "a get", bed.get("late1/a")).await;
    // The first answer comes after the deadline; a retry's answer (the second attempt's, or
    // a later one's on a machine so busy that even 150 ms overran 300 ms) is the result.
    let attempts = bed.seen().attempts("late1/a");
    assert!(attempts >= 2, "{attempts}");
    assert!(
        (2..=attempts).any(|n| result == Ok(value("late1/a", n))),
        "{result:?}"
    );
    // Afterwards the stream still works.
    assert_eq!(bed.get("b").await, Ok(value("b", 1)));
}

/// Extra: entries with ids the client never used, and second answers for the same id, are
/// ignored; every request gets its own answer once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_unknown_response_ids_are_ignored() {
    let script = Script {
        unknown_ids: true,
        ..Script::default()
    };
    let bed = Bed::with_script(script, config()).await;
    let mut keys = keys("k", 32);
    keys.extend((0..8).map(|i| format!("dup/{i}")));
    let results = bounded(Duration::from_secs(5), "gets", bed.get_all(&keys)).await;
    let seen = bed.seen();
    for (key, result) in keys.iter().zip(&results) {
        assert_eq!(result, &Ok(value(key, 1)), "{key}");
        assert_eq!(seen.attempts(key), 1, "{key}");
    }
}

/// Extra: a BatchCommands entry without a command arm fails just its own request (which is
/// retried); the other requests of the same message get their answers. On one thread so that
/// all requests share the first message (see [`extra_concurrent_requests_are_batched`]).
#[tokio::test]
async fn extra_batch_entry_without_arm_fails_only_that_request() {
    let config = config().with_connections_per_store(1);
    let bed = Bed::with_script(Script::default(), config).await;
    let mut keys = keys("k", 15);
    keys.push("noarm1/x".to_owned());
    let results = bounded(Duration::from_secs(5), "gets", bed.get_all(&keys)).await;
    let seen = bed.seen();
    for (key, result) in keys.iter().zip(&results) {
        let expected = if key.starts_with("noarm1/") { 2 } else { 1 };
        assert_eq!(result, &Ok(value(key, expected)), "{key}");
        assert_eq!(seen.attempts(key), expected, "{key}");
    }
    let first = seen
        .messages
        .iter()
        .find(|m| m.keys.iter().any(|k| k.starts_with(b"noarm1/")));
    assert!(
        first.is_some_and(|m| m.entries > 1),
        "the bad entry shared its message: {first:?}"
    );
}

/// Extra: an entry answered with another command's arm is a typed error, not a hang or a
/// wrong value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_wrong_arm_answer_is_an_error() {
    let bed = Bed::with_script(Script::default(), short(2_000, 300)).await;
    let result = bounded(Duration::from_secs(5), "a get", bed.get("wrongarm/x")).await;
    assert!(
        matches!(result, Err(Error::UnexpectedResponse(_))),
        "{result:?}"
    );
    assert_eq!(bed.get("b").await, Ok(value("b", 1)));
}

/// Extra: one and four connections per store both work; each connection opens one stream
/// (with its index in the `tikv-batch-conn-index` header) and keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_connections_per_store_one_and_four() {
    for connections in [1, 4] {
        let config = config().with_connections_per_store(connections);
        let bed = Bed::with_script(Script::default(), config).await;
        for i in 0..8 {
            let key = format!("seq{i}");
            assert_eq!(bed.get(&key).await, Ok(value(&key, 1)));
        }
        let keys = keys("k", 64);
        let results = bounded(Duration::from_secs(5), "gets", bed.get_all(&keys)).await;
        for (key, result) in keys.iter().zip(&results) {
            assert_eq!(result, &Ok(value(key, 1)));
        }
        let seen = bed.seen();
        let indexes: BTreeSet<&str> = seen.streams.iter().map(String::as_str).collect();
        let expected: BTreeSet<String> = (0..connections).map(|i| i.to_string()).collect();
        assert_eq!(
            indexes,
            expected.iter().map(String::as_str).collect::<BTreeSet<_>>()
        );
        assert_eq!(seen.streams.len(), connections, "{:?}", seen.streams);
        assert_eq!(seen.batched_entries(), 72);
    }
}

/// Extra: commands without a BatchCommands arm (RawGetKeyTTL, RawCompareAndSwap,
/// RawChecksum) go out as unary calls on their own paths, never inside a batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_unary_fallback_for_ttl_cas_checksum() {
    let bed = Bed::with_script(Script::default(), config()).await;
    assert_eq!(bed.get("warm").await, Ok(value("warm", 1)));
    let entries_before = bed.seen().batched_entries();

    let raw = bed.client.raw();
    assert_eq!(
        raw.get_key_ttl("t").await,
        Ok(Some(tikv_core::KeyTtl::Remaining(Duration::from_secs(42))))
    );
    let cas = raw
        .with_atomic_for_cas(true)
        .compare_and_swap("c", None, "v")
        .await;
    assert_eq!(
        cas,
        Ok(tikv_core::CasOutcome {
            previous: None,
            swapped: true
        })
    );
    let sum = raw
        .checksum("a".."z")
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!((sum.crc64_xor, sum.total_kvs, sum.total_bytes), (7, 3, 30));

    let seen = bed.seen();
    assert_eq!(
        seen.unary,
        [
            tikvpb::tikv::RAW_GET_KEY_TTL.path(),
            tikvpb::tikv::RAW_COMPARE_AND_SWAP.path(),
            tikvpb::tikv::RAW_CHECKSUM.path(),
        ]
    );
    assert_eq!(seen.batched_entries(), entries_before);
}

// ---------------------------------------------------------------------------------------------
// Under virtual time: the same client on the simulated runtime, against the simulated cluster
// (one store, `store-1`, every message 1 ms one way). Whatever depends on timing or on how
// drains interleave runs here, where a seed fixes both: these tests hold under any load.
// ---------------------------------------------------------------------------------------------

mod virtual_time {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use bytes::Bytes;
    use tikv_core::{Config, Error, Runtime as _, Time};
    use tikv_sim::SimConfig;
    use tikv_sim::cluster::ClusterConfig;
    use tikv_sim::faults::{FaultAction, FaultRule};
    use tikv_tests::simulation::{NetLog, Network, Setup, Simulation, StreamFault};

    const STORE: &str = "store-1";

    fn config() -> Config {
        Config::default()
            .with_read_timeout_short(Duration::from_secs(10))
            .with_raw_max_backoff(Duration::from_secs(5))
    }

    fn one_store(client: Config) -> Simulation {
        let setup = Setup {
            client,
            cluster: SimConfig {
                cluster: ClusterConfig {
                    store_count: 1,
                    replica_count: 1,
                    ..ClusterConfig::default()
                },
                ..SimConfig::default()
            },
            network: Network {
                min_latency: Duration::from_millis(1),
                max_latency: Duration::from_millis(1),
                reply_loss_per_mille: 0,
            },
            ..Setup::default()
        };
        Simulation::new(1, setup).unwrap_or_else(|err| panic!("{err}"))
    }

    fn keys(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i:04}")).collect()
    }

    fn value(key: &str) -> Option<Bytes> {
        Some(Bytes::from(format!("v-{key}")))
    }

    /// Writes `v-<key>` under every key, in one batch put.
    fn load(sim: &mut Simulation, keys: &[String]) {
        let raw = sim.client().raw();
        let pairs: Vec<(String, Bytes)> = keys
            .iter()
            .map(|key| (key.clone(), value(key).unwrap_or_default()))
            .collect();
        let loaded = sim
            .block_on(raw.batch_put(pairs))
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(loaded, Ok(()));
    }

    fn get(sim: &mut Simulation, key: &str) -> Result<Option<Bytes>, Error> {
        let raw = sim.client().raw();
        sim.block_on(raw.get(key.to_owned()))
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// How many BatchCommands messages carried a get of `key`.
    fn attempts(log: &NetLog, key: &str) -> usize {
        log.messages
            .iter()
            .flat_map(|message| &message.keys)
            .filter(|k| k.as_ref() == key.as_bytes())
            .count()
    }

    fn store_messages(log: &NetLog) -> usize {
        let streams: Vec<u64> = log
            .streams
            .iter()
            .filter(|stream| stream.address == STORE)
            .map(|stream| stream.id)
            .collect();
        log.messages
            .iter()
            .filter(|message| streams.contains(&message.stream))
            .count()
    }

    /// Port of `TestRecvErrorInMultipleRecvLoops`, with several connections per store standing
    /// in for client-go's forwarded-host streams: the server breaking one BatchCommands stream
    /// fails only the requests pending on it (and promptly, not by timeout); they are retried,
    /// that connection opens exactly one new stream, and the other stream is untouched.
    ///
    /// Under virtual time: each drain goes to the next connection, and the two waves below
    /// are two drains a fixed 0.5 ms apart, so both streams carry requests when one breaks
    /// (on real time, a busy machine could merge the waves into one drain).
    #[test]
    fn test_recv_error_in_multiple_recv_loops() {
        let mut sim = one_store(config().with_connections_per_store(2));
        let keys = keys("k", 40);
        load(&mut sim, &keys);
        // Sequential requests are separate drains, which rotate over the connections: the load
        // and the first get open one stream each.
        assert_eq!(get(&mut sim, "warm"), Ok(None));
        assert_eq!(sim.net_log().stream_indexes(STORE), ["0", "1"]);
        // The next drain goes to connection 0, whose stream breaks at its second message.
        sim.break_stream(StreamFault {
            conn_index: "0".to_owned(),
            at_message: 2,
        });
        let started = sim.now();
        let (first, second) = keys.split_at(keys.len() / 2);
        let raw = sim.client().raw();
        let runtime = sim.runtime().clone();
        let results = sim
            .block_on(async {
                let wave = |keys: &[String]| {
                    futures_util::future::join_all(keys.iter().map(|key| raw.get(key.clone())))
                };
                let later = async {
                    // The second wave leaves while the first is on its way: a later drain.
                    runtime
                        .sleep_until(runtime.now() + Duration::from_micros(500))
                        .await;
                    wave(second).await
                };
                let (mut a, b) = futures_util::future::join(wave(first), later).await;
                a.extend(b);
                a
            })
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(
            sim.now().saturating_since(started) < Duration::from_secs(5),
            "failed requests must not wait for the 10 s read timeout: {}",
            sim.now()
        );
        for (key, result) in keys.iter().zip(&results) {
            assert_eq!(result, &Ok(value(key)), "{key}");
        }
        // A few more sequential gets: every connection gets a drain again.
        for key in ["after0", "after1", "after2"] {
            assert_eq!(get(&mut sim, key), Ok(None));
        }

        let log = sim.net_log();
        let failed: Vec<_> = log.messages.iter().filter(|m| m.failed).collect();
        assert_eq!(failed.len(), 1, "{:?}", log.messages);
        assert_eq!(failed[0].conn_index, "0");
        assert_eq!(
            failed[0].stream, log.streams[0].id,
            "the stream opened first broke"
        );
        assert!(!failed[0].keys.is_empty());
        for key in &failed[0].keys {
            let key = String::from_utf8_lossy(key);
            assert!(attempts(&log, &key) >= 2, "{key} was retried");
        }
        // Keys whose first attempt went out on the other connection were answered once.
        let mut first_stream: BTreeMap<&Bytes, &str> = BTreeMap::new();
        for message in &log.messages {
            for key in &message.keys {
                first_stream.entry(key).or_insert(&message.conn_index);
            }
        }
        let on_other: Vec<String> = first_stream
            .iter()
            .filter(|(key, index)| **index == "1" && key.starts_with(b"k"))
            .map(|(key, _)| String::from_utf8_lossy(key).into_owned())
            .collect();
        assert!(!on_other.is_empty(), "both connections carried requests");
        for key in on_other {
            assert_eq!(attempts(&log, &key), 1, "{key} on the healthy stream");
        }
        let indexes = log.stream_indexes(STORE);
        let count = |index: &str| indexes.iter().filter(|i| **i == index).count();
        assert_eq!(count("0"), 2, "one reconnect: {indexes:?}");
        assert_eq!(count("1"), 1, "{indexes:?}");
        assert!(log.health_checks >= 1, "a send failure probes the store");
    }

    /// Extra: client-go's idle connection recycling. A connection with no requests for
    /// `connection_idle_timeout` half-closes its BatchCommands stream and closes; the next
    /// request dials again and opens a new stream, and nothing is lost on the way. A request
    /// still unanswered keeps an otherwise idle connection open.
    #[test]
    fn extra_idle_connections_are_recycled() {
        let mut sim = one_store(
            config()
                .with_connections_per_store(1)
                .with_connection_idle_timeout(Duration::from_millis(250)),
        );
        load(&mut sim, &["a".to_owned(), "e".to_owned(), "f".to_owned()]);
        assert_eq!(get(&mut sim, "a"), Ok(value("a")));
        // Busy: requests closer together than the timeout keep the connection.
        for key in ["b", "c", "d"] {
            sim.sleep(Duration::from_millis(100))
                .unwrap_or_else(|err| panic!("{err}"));
            assert_eq!(get(&mut sim, key), Ok(None));
        }
        let log = sim.net_log();
        assert_eq!(log.stream_indexes(STORE), ["0"]);
        assert!(log.streams.iter().all(|s| !s.ended_by_client));
        assert_eq!(sim.open_connections().get(STORE), Some(&1));
        // Idle: the stream is half-closed and the connection goes away.
        sim.sleep(Duration::from_secs(1))
            .unwrap_or_else(|err| panic!("{err}"));
        let log = sim.net_log();
        assert!(log.streams.iter().all(|s| s.ended_by_client), "{log:?}");
        assert_eq!(sim.open_connections().get(STORE), None);
        // The next request dials again and gets a fresh stream.
        assert_eq!(get(&mut sim, "e"), Ok(value("e")));
        let log = sim.net_log();
        assert_eq!(log.stream_indexes(STORE), ["0", "0"]);
        let second = log.streams.iter().rev().find(|s| s.address == STORE);
        assert_eq!(log.messages.last().map(|m| m.stream), second.map(|s| s.id));
        assert_eq!(log.connects.get(STORE), Some(&2));
        assert_eq!(sim.open_connections().get(STORE), Some(&1));
        // An answer taking 400 ms, longer than the idle timeout, keeps the connection.
        sim.with(|cluster| {
            cluster
                .faults
                .inject(FaultRule::command("RawGet", FaultAction::Delay(400), 1))
        });
        let asked = sim.now();
        assert_eq!(get(&mut sim, "f"), Ok(value("f")));
        assert!(sim.now().saturating_since(asked) >= Duration::from_millis(400));
        let log = sim.net_log();
        let ended = log
            .streams
            .iter()
            .filter(|s| s.address == STORE && s.ended_by_client)
            .count();
        assert_eq!(ended, 1, "{log:?}");
        assert_eq!(sim.open_connections().get(STORE), Some(&1));
        // Once answered and idle, it goes too.
        sim.sleep(Duration::from_secs(1))
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(sim.open_connections().get(STORE), None);
    }

    /// Extra: client-go's overload batching (`max-batch-wait-time`, `batch-wait-size`,
    /// `overload-threshold`). While the store reports a transport load above the threshold, a
    /// connection holds a small batch back until `batch_wait_size` requests are there (or the
    /// wait ends); below the threshold, or with no wait configured, every request goes at
    /// once.
    #[test]
    fn extra_overloaded_store_gets_held_back_batches() {
        // (load reported, max wait, wait size, messages expected for the 4 spaced gets)
        let cases = [
            (1_000, Duration::from_millis(500), 4, 1),
            // Fewer requests than the wait size: they leave when the wait ends.
            (1_000, Duration::from_millis(200), 8, 1),
            (100, Duration::from_millis(500), 4, 4),
            (1_000, Duration::ZERO, 4, 4),
        ];
        for (load, max_batch_wait, batch_wait_size, expected) in cases {
            let mut sim = one_store(
                config()
                    .with_connections_per_store(1)
                    .with_max_batch_wait(max_batch_wait)
                    .with_batch_wait_size(batch_wait_size)
                    .with_overload_threshold(200),
            );
            sim.with(|cluster| cluster.set_transport_load(1, load));
            // The first answer tells the connection how loaded the store is.
            assert_eq!(get(&mut sim, "warm"), Ok(None));
            let before = store_messages(&sim.net_log());
            let raw = sim.client().raw();
            let runtime = sim.runtime().clone();
            let started = sim.now();
            let gets = (0..4u64).map(|i| {
                let (raw, runtime) = (raw.clone(), runtime.clone());
                async move {
                    let at = started + Duration::from_millis(30 * i);
                    runtime.sleep_until(at).await;
                    let got = raw.get(format!("spaced{i}")).await;
                    (got, runtime.now())
                }
            });
            let results = sim
                .block_on(futures_util::future::join_all(gets))
                .unwrap_or_else(|err| panic!("{err}"));
            for (got, _) in &results {
                assert_eq!(got, &Ok(None));
            }
            let messages = store_messages(&sim.net_log()) - before;
            assert_eq!(
                messages, expected,
                "load {load}, wait {max_batch_wait:?}: {messages}"
            );
            let last = results
                .iter()
                .map(|(_, at)| *at)
                .max()
                .unwrap_or(Time::ZERO);
            let elapsed = last.saturating_since(started);
            let first_done = results[0].1.saturating_since(started);
            match (expected, batch_wait_size) {
                // Held back until the fourth request came (at 90 ms), not for the whole wait.
                (1, 4) => {
                    assert_eq!(first_done, Duration::from_millis(92), "{elapsed:?}");
                }
                // Held back for the whole wait.
                (1, _) => assert_eq!(first_done, max_batch_wait + Duration::from_millis(2)),
                // Every request on its own, at once.
                _ => assert_eq!(first_done, Duration::from_millis(2)),
            }
        }
    }

    /// Extra: answers matched by request id whatever their order: within a message and across
    /// messages (a slow answer overtaken by later ones).
    #[test]
    fn extra_out_of_order_answers_are_matched() {
        let mut sim = one_store(config().with_connections_per_store(1));
        let mut all = keys("fast", 64);
        all.push("slow".to_owned());
        load(&mut sim, &all);
        // The next get waits 400 ms at the store, well within the read timeout.
        sim.with(|cluster| {
            cluster
                .faults
                .inject(FaultRule::command("RawGet", FaultAction::Delay(400), 1))
        });
        let raw = sim.client().raw();
        let runtime = sim.runtime().clone();
        let fast = keys("fast", 64);
        let (slow, fast_results, slow_pending) = sim
            .block_on(async {
                let slow = raw.get("slow");
                let fast = async {
                    runtime
                        .sleep_until(runtime.now() + Duration::from_millis(50))
                        .await;
                    let results =
                        futures_util::future::join_all(fast.iter().map(|key| raw.get(key.clone())))
                            .await;
                    (results, runtime.now())
                };
                let ((fast, fast_done), (slow, slow_done)) =
                    futures_util::future::join(fast, async {
                        let got = slow.await;
                        (got, runtime.now())
                    })
                    .await;
                (slow, fast, slow_done > fast_done)
            })
            .unwrap_or_else(|err| panic!("{err}"));
        for (key, result) in fast.iter().zip(&fast_results) {
            assert_eq!(result, &Ok(value(key)));
        }
        assert!(slow_pending, "the slow answer came after the fast ones");
        assert_eq!(slow, Ok(value("slow")));
        let log = sim.net_log();
        assert_eq!(log.stream_indexes(STORE), ["0"], "all on one stream");
        assert!(log.messages.iter().any(|m| m.keys.len() > 1));
    }
}
