//! The transport conformance suite: every runtime must pass it unchanged.
//!
//! Each test is an async function generic over an [`Env`], which supplies the runtime under
//! test and a way to serve a handler on loopback with that runtime's IO and executor. The
//! server side is the shared tikv-proto server; the handler, [`TestService`], answers a few
//! TiKV methods with behaviour chosen to exercise one transport feature each.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{Either, select};
use prost::Message;
use tikv_core::Runtime;
use tikv_proto::frame::{FrameError, Framed};
use tikv_proto::rpc::{self, BoxFuture, CallOptions, Channel, RpcError, StreamSender};
use tikv_proto::status::{Code, Status};
use tikv_proto::transport::server::{Handler, ServeOptions, ServerCall, ServerHandle};
use tikv_proto::transport::{ConnectOptions, tls};
use tikv_proto::{kvrpcpb, tikvpb};

use crate::certs;

/// What a runtime provides to the suite.
pub trait Env: Sync {
    /// The runtime under test.
    type Runtime: Runtime;

    /// A client runtime dialling with `options`.
    fn runtime(&self, options: ConnectOptions) -> Self::Runtime;

    /// Serves `handler` on a loopback port with this runtime's IO and executor.
    fn serve(
        &self,
        handler: Arc<dyn Handler>,
        options: ServeOptions,
    ) -> BoxFuture<'_, ServerHandle>;
}

/// Large enough for every test message, small enough to notice a runaway.
const LIMIT: usize = 64 << 20;

/// Answers the suite's calls:
///
/// - `RawGet`: echoes the key with `!` appended as the value.
/// - `RawPut`: never answers (waits until the client goes away).
/// - `RawDelete`: fails with `NOT_FOUND` and a non-ASCII message.
/// - `RawScan`: answers `limit` pairs of 1 KiB values (for size limits).
/// - `BatchCommands`: answers each request message with one response message, entries in
///   reverse order, echoing request ids, until the client half-closes.
/// - anything else: `UNIMPLEMENTED`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TestService;

impl Handler for TestService {
    fn call(&self, call: ServerCall) -> BoxFuture<'static, ()> {
        Box::pin(serve_call(call))
    }
}

async fn serve_call(call: ServerCall) {
    let ServerCall {
        path,
        mut requests,
        mut responder,
        ..
    } = call;
    if path == tikvpb::tikv::BATCH_COMMANDS.path() {
        while let Some(next) = requests.next().await {
            let Ok(payload) = next else { return };
            let Ok(batch) = tikvpb::BatchCommandsRequest::decode(payload) else {
                responder.finish(Err(Status::new(Code::Internal, "bad batch")));
                return;
            };
            let response = echo_batch(batch);
            let Ok(framed) = Framed::encode(&response, LIMIT) else {
                return;
            };
            if responder.send(framed).await.is_err() {
                return;
            }
        }
        responder.finish(Ok(()));
        return;
    }
    if path == tikvpb::tikv::RAW_PUT.path() {
        responder.closed().await;
        return;
    }
    let request = match requests.single().await {
        Ok(request) => request,
        Err(status) => return responder.finish(Err(status)),
    };
    let answer = if path == tikvpb::tikv::RAW_GET.path() {
        let request = kvrpcpb::RawGetRequest::decode(request).unwrap_or_default();
        let mut value = request.key.to_vec();
        value.push(b'!');
        Framed::encode(
            &kvrpcpb::RawGetResponse {
                value: value.into(),
                ..Default::default()
            },
            LIMIT,
        )
        .map_err(|err| Status::new(Code::Internal, err.to_string()))
    } else if path == tikvpb::tikv::RAW_DELETE.path() {
        Err(Status::new(Code::NotFound, "no such key \u{2717}"))
    } else if path == tikvpb::tikv::RAW_SCAN.path() {
        let request = kvrpcpb::RawScanRequest::decode(request).unwrap_or_default();
        let kvs = (0..request.limit)
            .map(|i| kvrpcpb::KvPair {
                key: Bytes::from(format!("k{i:08}")),
                value: Bytes::from(vec![b'v'; 1024]),
                ..Default::default()
            })
            .collect();
        Framed::encode(
            &kvrpcpb::RawScanResponse {
                kvs,
                ..Default::default()
            },
            LIMIT,
        )
        .map_err(|err| Status::new(Code::Internal, err.to_string()))
    } else {
        Err(Status::new(
            Code::Unimplemented,
            format!("unknown method {path}"),
        ))
    };
    responder.reply(answer).await;
}

fn echo_batch(batch: tikvpb::BatchCommandsRequest) -> tikvpb::BatchCommandsResponse {
    use tikvpb::batch_commands_request::request::Cmd as Req;
    use tikvpb::batch_commands_response::response::Cmd as Resp;
    let mut responses = Vec::new();
    let mut ids = Vec::new();
    for (request, id) in batch.requests.into_iter().zip(batch.request_ids).rev() {
        let cmd = match request.cmd {
            Some(Req::RawGet(get)) => {
                let mut value = get.key.to_vec();
                value.push(b'!');
                Some(Resp::RawGet(kvrpcpb::RawGetResponse {
                    value: value.into(),
                    ..Default::default()
                }))
            }
            _ => None,
        };
        responses.push(tikvpb::batch_commands_response::Response { cmd });
        ids.push(id);
    }
    tikvpb::BatchCommandsResponse {
        responses,
        request_ids: ids,
        ..Default::default()
    }
}

/// Fails the test if `future` does not finish within `limit`: nothing may hang.
async fn bounded<E: Env, T>(
    env: &E,
    limit: Duration,
    what: &str,
    future: impl Future<Output = T> + Send,
) -> T {
    let runtime = env.runtime(ConnectOptions::default());
    let deadline = runtime.now() + limit;
    match select(Box::pin(future), runtime.sleep_until(deadline)).await {
        Either::Left((value, _)) => value,
        Either::Right(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

async fn serve_test_service<E: Env>(env: &E, options: ServeOptions) -> ServerHandle {
    env.serve(Arc::new(TestService), options).await
}

async fn connect<E: Env>(
    env: &E,
    address: &str,
    options: ConnectOptions,
) -> <E::Runtime as Runtime>::Channel {
    match env.runtime(options).connect(address).await {
        Ok(channel) => channel,
        Err(err) => panic!("connecting to {address}: {err}"),
    }
}

async fn raw_get<C: Channel>(
    channel: &C,
    key: &str,
    options: CallOptions,
) -> Result<kvrpcpb::RawGetResponse, RpcError> {
    let request = kvrpcpb::RawGetRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        ..Default::default()
    };
    rpc::call(channel, tikvpb::tikv::RAW_GET, &request, options, LIMIT).await
}

/// A unary call goes out and its answer comes back; many calls share one connection.
pub async fn unary_round_trip<E: Env>(env: &E) {
    let server = serve_test_service(env, ServeOptions::default()).await;
    let channel = connect(env, server.address(), ConnectOptions::default()).await;
    let response = raw_get(
        &channel,
        "hello",
        CallOptions::with_timeout(Duration::from_secs(5)),
    )
    .await;
    assert_eq!(response.map(|r| r.value), Ok(Bytes::from_static(b"hello!")));

    let calls = (0..64).map(|i| {
        let channel = channel.clone();
        async move { raw_get(&channel, &format!("key-{i}"), CallOptions::default()).await }
    });
    let results = bounded(
        env,
        Duration::from_secs(20),
        "64 concurrent calls",
        futures_util::future::join_all(calls),
    )
    .await;
    for (i, result) in results.into_iter().enumerate() {
        assert_eq!(
            result.map(|r| r.value),
            Ok(Bytes::from(format!("key-{i}!")))
        );
    }
    assert!(!channel.is_closed());
}

/// BatchCommands-style streaming: several messages each way, answers matched by id even
/// though the server reorders them, and a clean end when the client half-closes.
pub async fn bidi_stream_round_trip<E: Env>(env: &E) {
    use tikvpb::batch_commands_request::{Request, request::Cmd as Req};
    use tikvpb::batch_commands_response::response::Cmd as Resp;

    let server = serve_test_service(env, ServeOptions::default()).await;
    let channel = connect(env, server.address(), ConnectOptions::default()).await;
    let (mut sender, mut receiver) = match channel
        .open_stream(tikvpb::tikv::BATCH_COMMANDS.path(), CallOptions::default())
        .await
    {
        Ok(halves) => halves,
        Err(err) => panic!("opening the stream: {err}"),
    };
    let mut next_id = 1u64;
    for _batch in 0..3 {
        let mut requests = Vec::new();
        let mut request_ids = Vec::new();
        for _ in 0..4 {
            requests.push(Request {
                cmd: Some(Req::RawGet(kvrpcpb::RawGetRequest {
                    key: Bytes::from(format!("id{next_id}")),
                    ..Default::default()
                })),
            });
            request_ids.push(next_id);
            next_id += 1;
        }
        let message = tikvpb::BatchCommandsRequest {
            requests,
            request_ids,
            ..Default::default()
        };
        let framed = Framed::encode(&message, LIMIT).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(rpc::send(&mut sender, framed).await, Ok(()));
    }
    let mut answered = Vec::new();
    while answered.len() < 12 {
        let payload = match bounded(
            env,
            Duration::from_secs(10),
            "stream receive",
            rpc::recv(&mut receiver),
        )
        .await
        {
            Some(Ok(payload)) => payload,
            other => panic!("stream ended early: {other:?}"),
        };
        let batch = tikvpb::BatchCommandsResponse::decode(payload).unwrap_or_default();
        assert_eq!(batch.responses.len(), batch.request_ids.len());
        for (response, id) in batch.responses.into_iter().zip(batch.request_ids) {
            match response.cmd {
                Some(Resp::RawGet(get)) => assert_eq!(get.value, Bytes::from(format!("id{id}!"))),
                other => panic!("wrong arm for id {id}: {other:?}"),
            }
            answered.push(id);
        }
    }
    // The server answers each message in reverse: ids prove out-of-order matching.
    assert_eq!(&answered[..4], &[4, 3, 2, 1]);
    answered.sort_unstable();
    assert_eq!(answered, (1..=12).collect::<Vec<_>>());

    assert_eq!(sender.finish(), Ok(()));
    let end = bounded(
        env,
        Duration::from_secs(10),
        "stream end",
        rpc::recv(&mut receiver),
    )
    .await;
    assert_eq!(
        end, None,
        "server ends the stream with OK after the client half-closes"
    );
}

/// A call whose deadline passes fails with `DeadlineExceeded`, and the connection stays usable.
pub async fn deadline_expiry_times_out<E: Env>(env: &E) {
    let server = serve_test_service(env, ServeOptions::default()).await;
    let channel = connect(env, server.address(), ConnectOptions::default()).await;
    let timeout = Duration::from_millis(200);
    let request = kvrpcpb::RawPutRequest::default();
    let result = bounded(
        env,
        Duration::from_secs(10),
        "call with a deadline",
        rpc::call(
            &channel,
            tikvpb::tikv::RAW_PUT,
            &request,
            CallOptions::with_timeout(timeout),
            LIMIT,
        ),
    )
    .await;
    assert_eq!(result, Err(RpcError::DeadlineExceeded(timeout)));
    assert_eq!(result.err().map(|e| e.code()), Some(Code::DeadlineExceeded));
    let after = raw_get(&channel, "still-alive", CallOptions::default()).await;
    assert_eq!(
        after.map(|r| r.value),
        Ok(Bytes::from_static(b"still-alive!"))
    );
}

/// A non-zero `grpc-status` reaches the caller as a typed status with its decoded message,
/// both after a normal response head and as a trailers-only response.
pub async fn server_status_is_typed<E: Env>(env: &E) {
    let server = serve_test_service(env, ServeOptions::default()).await;
    let channel = connect(env, server.address(), ConnectOptions::default()).await;
    let request = kvrpcpb::RawDeleteRequest::default();
    let result = rpc::call(
        &channel,
        tikvpb::tikv::RAW_DELETE,
        &request,
        CallOptions::default(),
        LIMIT,
    )
    .await;
    assert_eq!(
        result,
        Err(RpcError::Status(Status::new(
            Code::NotFound,
            "no such key \u{2717}"
        )))
    );
    let result = rpc::call(
        &channel,
        tikvpb::tikv::KV_GC,
        &kvrpcpb::GcRequest::default(),
        CallOptions::default(),
        LIMIT,
    )
    .await;
    match result {
        Err(RpcError::Status(status)) => {
            assert_eq!(status.code, Code::Unimplemented);
            assert!(status.message.contains("/tikvpb.Tikv/KvGC"), "{status}");
        }
        other => panic!("expected UNIMPLEMENTED, got {other:?}"),
    }
}

/// Messages over the limits are refused with a clear error on both sides, and the refusal does
/// not break the connection.
pub async fn oversized_messages_are_refused<E: Env>(env: &E) {
    let server = serve_test_service(
        env,
        ServeOptions {
            config: tikv_proto::transport::server::ServerConfig {
                max_recv_message_size: 4096,
                ..Default::default()
            },
            tls: None,
        },
    )
    .await;
    let mut options = ConnectOptions::default();
    options.channel.max_send_message_size = 1024;
    options.channel.max_recv_message_size = 8 * 1024;
    let channel = connect(env, server.address(), options).await;

    // Too big to send: refused locally, before anything goes out.
    let big_key = "k".repeat(2000);
    let result = raw_get(&channel, &big_key, CallOptions::default()).await;
    assert!(
        matches!(
            result,
            Err(RpcError::Frame(FrameError::TooLarge { limit: 1024, .. }))
        ),
        "{result:?}"
    );

    // Too big to receive: the response is refused.
    let scan = kvrpcpb::RawScanRequest {
        limit: 64,
        ..Default::default()
    };
    let result = rpc::call(
        &channel,
        tikvpb::tikv::RAW_SCAN,
        &scan,
        CallOptions::default(),
        LIMIT,
    )
    .await;
    match &result {
        Err(err @ RpcError::Frame(FrameError::TooLarge { size, limit })) => {
            assert_eq!(*limit, 8 * 1024);
            assert!(*size > 64 * 1024);
            assert_eq!(err.code(), Code::ResourceExhausted);
        }
        other => panic!("expected a receive-size error, got {other:?}"),
    }

    // Too big for the server: it answers with an error status, as grpc servers do.
    let mut options = ConnectOptions::default();
    options.channel.max_send_message_size = LIMIT;
    let unlimited = connect(env, server.address(), options).await;
    let result = raw_get(&unlimited, &"k".repeat(8000), CallOptions::default()).await;
    match result {
        Err(RpcError::Status(status)) => {
            assert_eq!(status.code, Code::ResourceExhausted, "{status}")
        }
        other => panic!("expected RESOURCE_EXHAUSTED from the server, got {other:?}"),
    }

    let fine = raw_get(&channel, "small", CallOptions::default()).await;
    assert_eq!(fine.map(|r| r.value), Ok(Bytes::from_static(b"small!")));
}

/// A server that dies with calls in flight fails every pending call and stream; nothing hangs,
/// and the channel reports itself closed.
pub async fn peer_close_fails_pending_calls<E: Env>(env: &E) {
    let server = serve_test_service(env, ServeOptions::default()).await;
    let channel = connect(env, server.address(), ConnectOptions::default()).await;
    let (_sender, mut receiver) = match channel
        .open_stream(tikvpb::tikv::BATCH_COMMANDS.path(), CallOptions::default())
        .await
    {
        Ok(halves) => halves,
        Err(err) => panic!("opening the stream: {err}"),
    };
    let pending: Vec<_> = (0..8)
        .map(|_| {
            let channel = channel.clone();
            Box::pin(async move {
                rpc::call(
                    &channel,
                    tikvpb::tikv::RAW_PUT,
                    &kvrpcpb::RawPutRequest::default(),
                    CallOptions::default(),
                    LIMIT,
                )
                .await
            })
        })
        .collect();
    let calls = futures_util::future::join_all(pending);
    let kill = async {
        // Let the calls reach the server before it dies.
        let runtime = env.runtime(ConnectOptions::default());
        runtime
            .sleep_until(runtime.now() + Duration::from_millis(200))
            .await;
        drop(server);
    };
    let (results, ()) = bounded(
        env,
        Duration::from_secs(20),
        "pending calls",
        futures_util::future::join(calls, kill),
    )
    .await;
    for result in results {
        let err = result.err().map(|err| err.code());
        assert!(
            matches!(
                err,
                Some(Code::Unavailable | Code::Internal | Code::Cancelled)
            ),
            "pending call must fail, got {err:?}"
        );
    }
    let stream_end = bounded(
        env,
        Duration::from_secs(20),
        "stream receive",
        rpc::recv(&mut receiver),
    )
    .await;
    assert!(
        matches!(stream_end, Some(Err(_))),
        "open stream must fail, got {stream_end:?}"
    );
    let runtime = env.runtime(ConnectOptions::default());
    for _ in 0..100 {
        if channel.is_closed() {
            break;
        }
        runtime
            .sleep_until(runtime.now() + Duration::from_millis(20))
            .await;
    }
    assert!(channel.is_closed());
    let after = raw_get(&channel, "x", CallOptions::default()).await;
    assert_eq!(after.err().map(|e| e.code()), Some(Code::Unavailable));
}

/// Dialling a port nobody listens on fails with a connect error.
pub async fn connect_refused_is_typed<E: Env>(env: &E) {
    let address = {
        let server = serve_test_service(env, ServeOptions::default()).await;
        server.address().to_owned()
    };
    // The listener is gone once the handle dropped; give the accept task a moment to end.
    let runtime = env.runtime(ConnectOptions::default());
    runtime
        .sleep_until(runtime.now() + Duration::from_millis(100))
        .await;
    match runtime.connect(&address).await {
        Err(RpcError::Connect {
            address: failed, ..
        }) => assert_eq!(failed, address),
        Err(other) => panic!("expected a connect error, got {other}"),
        Ok(channel) => {
            // Some platforms accept briefly on a closing listener; the first call must fail.
            let result = raw_get(&channel, "x", CallOptions::default()).await;
            assert!(result.is_err());
        }
    }
}

/// Calls work over TLS, with mutual authentication, and a client that does not trust the
/// server's certificate is refused at connect.
pub async fn tls_round_trip<E: Env>(env: &E) {
    let server_id = certs::identity(&["127.0.0.1", "localhost"]);
    let client_id = certs::identity(&["client"]);
    let server_tls = tls::server_config(
        server_id.cert_pem.as_bytes(),
        server_id.key_pem.as_bytes(),
        Some(client_id.cert_pem.as_bytes()),
    )
    .unwrap_or_else(|err| panic!("server tls: {err}"));
    let server = serve_test_service(
        env,
        ServeOptions {
            config: Default::default(),
            tls: Some(server_tls),
        },
    )
    .await;
    let client_tls = tls::client_config(
        server_id.cert_pem.as_bytes(),
        Some((client_id.cert_pem.as_bytes(), client_id.key_pem.as_bytes())),
    )
    .unwrap_or_else(|err| panic!("client tls: {err}"));
    let options = ConnectOptions {
        tls: Some(client_tls),
        ..Default::default()
    };
    let channel = connect(env, server.address(), options).await;
    let response = raw_get(&channel, "secret", CallOptions::default()).await;
    assert_eq!(
        response.map(|r| r.value),
        Ok(Bytes::from_static(b"secret!"))
    );

    let stranger = certs::identity(&["127.0.0.1"]);
    let untrusting = tls::client_config(stranger.cert_pem.as_bytes(), None)
        .unwrap_or_else(|err| panic!("client tls: {err}"));
    let options = ConnectOptions {
        tls: Some(untrusting),
        ..Default::default()
    };
    let result = env.runtime(options).connect(server.address()).await;
    assert!(
        matches!(result, Err(RpcError::Connect { .. })),
        "{:?}",
        result.err()
    );

    assert!(matches!(
        tls::client_config(b"not a pem", None),
        Err(RpcError::Tls(_))
    ));
}

/// Every suite test, by name, for runtimes to instantiate.
#[macro_export]
macro_rules! for_each_transport_test {
    ($m:ident) => {
        $m!(unary_round_trip);
        $m!(bidi_stream_round_trip);
        $m!(deadline_expiry_times_out);
        $m!(server_status_is_typed);
        $m!(oversized_messages_are_refused);
        $m!(peer_close_fails_pending_calls);
        $m!(connect_refused_is_typed);
        $m!(tls_round_trip);
    };
}
