//! The server half: accepts gRPC calls on an HTTP/2 connection and hands each to a [`Handler`].
//!
//! Used by the simulated cluster and by transport tests. The handler sees the path, the
//! request metadata and deadline, a stream of request payloads and a [`Responder`]; it answers
//! with messages and a final status. Deadlines from `grpc-timeout` are enforced here: a handler
//! still running at its deadline is dropped and the call ends with `DEADLINE_EXCEEDED`.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{Either, select};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Request, Response};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Executor, map_h2_error};
use crate::frame::{FrameDecoder, Framed};
use crate::rpc::{BoxFuture, RpcError};
use crate::status::{Code, Status, decode_timeout, percent_encode};

/// HTTP/2 and gRPC settings of the server side of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Largest request payload accepted.
    pub max_recv_message_size: usize,
    /// Largest response payload sent.
    pub max_send_message_size: usize,
    /// HTTP/2 receive window per stream (TiKV's default is 2 MiB).
    pub initial_stream_window: u32,
    /// HTTP/2 receive window of the connection.
    pub initial_connection_window: u32,
    /// Most concurrent calls one connection may have open.
    pub max_concurrent_streams: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_recv_message_size: 1 << 30,
            max_send_message_size: 1 << 30,
            initial_stream_window: 2 << 20,
            initial_connection_window: 16 << 20,
            max_concurrent_streams: 1024,
        }
    }
}

/// Serves the calls of one gRPC call each.
pub trait Handler: Send + Sync + 'static {
    /// Handles one call to completion. Dropping the [`Responder`] without finishing ends the
    /// call with `INTERNAL`.
    fn call(&self, call: ServerCall) -> BoxFuture<'static, ()>;
}

/// One incoming call.
#[derive(Debug)]
pub struct ServerCall {
    /// The `:path`, `/package.Service/Method`.
    pub path: String,
    /// Request metadata (custom headers such as `tikv-forwarded-host`).
    pub headers: HeaderMap,
    /// The caller's deadline from `grpc-timeout`, if any.
    pub timeout: Option<Duration>,
    /// The request messages.
    pub requests: RequestStream,
    /// Where the answer goes.
    pub responder: Responder,
}

/// Accepts calls on `io` until the client goes away, spawning one task per call.
///
/// Errors when the HTTP/2 handshake or the connection fails; dropping the returned future
/// drops the connection, which fails every call still open on it.
pub async fn serve_connection<IO, E, H>(
    io: IO,
    executor: E,
    handler: Arc<H>,
    config: ServerConfig,
) -> Result<(), RpcError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    E: Executor,
    H: Handler + ?Sized,
{
    let mut connection = h2::server::Builder::new()
        .initial_window_size(config.initial_stream_window)
        .initial_connection_window_size(config.initial_connection_window)
        .max_concurrent_streams(config.max_concurrent_streams)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|err| RpcError::Connect {
            address: "incoming".to_owned(),
            reason: format!("http/2 handshake: {err}"),
        })?;
    while let Some(next) = connection.accept().await {
        let (request, respond) = next.map_err(|err| map_h2_error(&err))?;
        let call = dispatch(request, respond, &config);
        if let Some(call) = call {
            executor.spawn(Box::pin(run_call(
                executor.clone(),
                Arc::clone(&handler),
                call,
            )));
        }
    }
    Ok(())
}

/// Validates the request head; answers malformed requests directly and returns `None`.
fn dispatch(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    config: &ServerConfig,
) -> Option<ServerCall> {
    let (parts, body) = request.into_parts();
    let content_type = parts
        .headers
        .get("content-type")
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if parts.method != http::Method::POST || !content_type.starts_with(b"application/grpc") {
        let response = Response::builder()
            .status(415)
            .header("content-type", "text/plain")
            .body(())
            .ok()?;
        let _ = respond.send_response(response, true);
        return None;
    }
    let timeout = match parts.headers.get("grpc-timeout") {
        None => None,
        Some(value) => match decode_timeout(value.as_bytes()) {
            Some(timeout) => Some(timeout),
            None => {
                let responder = Responder::new(respond, config.max_send_message_size);
                responder.finish(Err(Status::new(
                    Code::Internal,
                    "malformed grpc-timeout header",
                )));
                return None;
            }
        },
    };
    Some(ServerCall {
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        timeout,
        requests: RequestStream {
            body: Some(body),
            decoder: FrameDecoder::new(config.max_recv_message_size),
        },
        responder: Responder::new(respond, config.max_send_message_size),
    })
}

async fn run_call<E: Executor, H: Handler + ?Sized>(
    executor: E,
    handler: Arc<H>,
    call: ServerCall,
) {
    let deadline_passed = Arc::clone(&call.responder.deadline_passed);
    let timeout = call.timeout;
    let work = handler.call(call);
    match timeout {
        None => work.await,
        Some(timeout) => {
            if let Either::Right(((), work)) = select(work, executor.sleep(timeout)).await {
                deadline_passed.store(true, Ordering::Release);
                // Dropping the handler drops its responder, which reports the deadline.
                drop(work);
            }
        }
    }
}

/// The request messages of a call.
#[derive(Debug)]
pub struct RequestStream {
    body: Option<RecvStream>,
    decoder: FrameDecoder,
}

impl RequestStream {
    /// The next request payload; `None` once the client half-closed.
    ///
    /// Errors when the client reset the stream or sent a malformed or oversized message.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, RpcError>>> {
        loop {
            match self.decoder.next_message() {
                Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Ok(None) => {}
                Err(err) => {
                    self.body = None;
                    return Poll::Ready(Some(Err(err.into())));
                }
            }
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(body.poll_data(cx)) {
                Some(Ok(data)) => {
                    let len = data.len();
                    self.decoder.push_bytes(data);
                    let _ = body.flow_control().release_capacity(len);
                }
                Some(Err(err)) => {
                    self.body = None;
                    return Poll::Ready(Some(Err(map_h2_error(&err))));
                }
                None => {
                    self.body = None;
                    if let Err(err) = self.decoder.finish() {
                        return Poll::Ready(Some(Err(err.into())));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }

    /// Awaits the next request payload.
    pub async fn next(&mut self) -> Option<Result<Bytes, RpcError>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Reads the one request of a unary call.
    ///
    /// Errors with the status to answer when there is no message, more than one, or a bad one.
    pub async fn single(mut self) -> Result<Bytes, Status> {
        let message = match self.next().await {
            Some(Ok(message)) => message,
            Some(Err(err)) => return Err(request_error_status(&err)),
            None => return Err(Status::new(Code::Internal, "unary call without a request")),
        };
        match self.next().await {
            None => Ok(message),
            Some(Ok(_)) => Err(Status::new(
                Code::Internal,
                "unary call with more than one request",
            )),
            Some(Err(err)) => Err(request_error_status(&err)),
        }
    }
}

/// The status a server answers when reading a request failed.
pub fn request_error_status(err: &RpcError) -> Status {
    match err {
        RpcError::Status(status) => status.clone(),
        other => Status::new(other.code(), other.to_string()),
    }
}

/// Answers one call: response messages, then a final status.
#[derive(Debug)]
pub struct Responder {
    respond: Option<SendResponse<Bytes>>,
    stream: Option<SendStream<Bytes>>,
    limit: usize,
    finished: bool,
    deadline_passed: Arc<AtomicBool>,
}

impl Responder {
    fn new(respond: SendResponse<Bytes>, limit: usize) -> Self {
        Self {
            respond: Some(respond),
            stream: None,
            limit,
            finished: false,
            deadline_passed: Arc::new(AtomicBool::new(false)),
        }
    }

    fn headers() -> Response<()> {
        let mut response = Response::new(());
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        response
    }

    fn stream(&mut self) -> Result<&mut SendStream<Bytes>, RpcError> {
        if self.stream.is_none() {
            let mut respond = self
                .respond
                .take()
                .ok_or_else(|| RpcError::ConnectionLost("call already answered".to_owned()))?;
            let stream = respond
                .send_response(Self::headers(), false)
                .map_err(|err| map_h2_error(&err))?;
            self.stream = Some(stream);
        }
        self.stream
            .as_mut()
            .ok_or_else(|| RpcError::ConnectionLost("call already answered".to_owned()))
    }

    /// Sends one response message, waiting for flow-control capacity (backpressure).
    ///
    /// Errors when the client went away or the message exceeds the send limit.
    pub async fn send(&mut self, message: Framed) -> Result<(), RpcError> {
        if message.payload_len() > self.limit {
            return Err(RpcError::Frame(crate::frame::FrameError::TooLarge {
                size: message.payload_len(),
                limit: self.limit,
            }));
        }
        let stream = self.stream()?;
        let mut data = message.into_bytes();
        while !data.is_empty() {
            stream.reserve_capacity(data.len());
            let capacity = poll_fn(|cx| stream.poll_capacity(cx))
                .await
                .ok_or_else(|| RpcError::ConnectionLost("client went away".to_owned()))?
                .map_err(|err| map_h2_error(&err))?;
            let chunk = data.split_to(capacity.min(data.len()));
            stream
                .send_data(chunk, false)
                .map_err(|err| map_h2_error(&err))?;
        }
        Ok(())
    }

    /// Waits until the client resets the call; lets a streaming handler notice a departed
    /// client while it has nothing to send.
    pub async fn closed(&mut self) {
        poll_fn(|cx| self.poll_closed(cx)).await;
    }

    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let result = match (&mut self.stream, &mut self.respond) {
            (Some(stream), _) => ready!(stream.poll_reset(cx)),
            (None, Some(respond)) => ready!(respond.poll_reset(cx)),
            (None, None) => return Poll::Ready(()),
        };
        let _ = result;
        Poll::Ready(())
    }

    /// Ends the call with OK (`Ok(())`) or with the given status.
    pub fn finish(mut self, outcome: Result<(), Status>) {
        self.finish_with(outcome);
    }

    fn finish_with(&mut self, outcome: Result<(), Status>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let status = outcome.err().unwrap_or_else(|| Status::new(Code::Ok, ""));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from(status.code.as_i32()));
        if !status.message.is_empty() {
            if let Ok(value) = HeaderValue::from_str(&percent_encode(&status.message)) {
                trailers.insert("grpc-message", value);
            }
        }
        if let Some(stream) = self.stream.as_mut() {
            let _ = stream.send_trailers(trailers);
        } else if let Some(mut respond) = self.respond.take() {
            // Trailers-only response: status goes in the one HEADERS frame.
            let mut response = Self::headers();
            response.headers_mut().extend(trailers);
            let _ = respond.send_response(response, true);
        }
    }

    /// Sends one message and ends the call with OK; the shape of every unary answer.
    pub async fn reply(mut self, message: Result<Framed, Status>) {
        match message {
            Ok(message) => match self.send(message).await {
                Ok(()) => self.finish(Ok(())),
                Err(err) => self.finish(Err(request_error_status(&err))),
            },
            Err(status) => self.finish(Err(status)),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.finished {
            let status = if self.deadline_passed.load(Ordering::Acquire) {
                Status::new(Code::DeadlineExceeded, "deadline exceeded")
            } else {
                Status::new(Code::Internal, "handler ended without answering")
            };
            self.finish_with(Err(status));
        }
    }
}

/// A running server: accepts connections from a listener and serves them until dropped.
///
/// Dropping the handle stops accepting and drops every open connection, failing the calls on
/// them; tests use that to play a server that dies mid-call.
#[derive(Debug)]
pub struct ServerHandle {
    address: String,
    aborts: Arc<std::sync::Mutex<Vec<futures_util::future::AbortHandle>>>,
}

impl ServerHandle {
    /// The `host:port` the server listens on.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Stops the server now; the same as dropping the handle.
    pub fn shutdown(self) {}

    fn abort_all(&self) {
        if let Ok(handles) = self.aborts.lock() {
            for handle in handles.iter() {
                handle.abort();
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.abort_all();
    }
}

/// Server-side TLS and connection settings for [`spawn_server`].
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// HTTP/2 and gRPC settings of each connection.
    pub config: ServerConfig,
    /// TLS server configuration; `None` for plaintext.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Serves every connection `incoming` yields on `executor`, with `handler` answering calls.
///
/// `address` is only recorded in the handle. Connections whose TLS or HTTP/2 handshake fails
/// are dropped without affecting the others.
pub fn spawn_server<E, H, S, IO>(
    executor: E,
    address: String,
    incoming: S,
    handler: Arc<H>,
    options: ServeOptions,
) -> ServerHandle
where
    E: Executor,
    H: Handler + ?Sized,
    S: futures_core::Stream<Item = std::io::Result<IO>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use futures_util::StreamExt as _;
    use futures_util::future::{AbortHandle, Abortable};

    let aborts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (accept_abort, registration) = AbortHandle::new_pair();
    if let Ok(mut handles) = aborts.lock() {
        handles.push(accept_abort);
    }
    let accept_aborts = Arc::clone(&aborts);
    let accept_executor = executor.clone();
    let accept = async move {
        let mut incoming = std::pin::pin!(incoming);
        while let Some(next) = incoming.next().await {
            // A failed accept (e.g. out of descriptors) affects one connection only.
            let Ok(io) = next else { continue };
            let (abort, registration) = AbortHandle::new_pair();
            if let Ok(mut handles) = accept_aborts.lock() {
                handles.retain(|handle: &AbortHandle| !handle.is_aborted());
                handles.push(abort);
            }
            let connection = serve_one(
                io,
                accept_executor.clone(),
                Arc::clone(&handler),
                options.clone(),
            );
            accept_executor.spawn(Box::pin(async move {
                let _ = Abortable::new(connection, registration).await;
            }));
        }
    };
    executor.spawn(Box::pin(async move {
        let _ = Abortable::new(accept, registration).await;
    }));
    ServerHandle { address, aborts }
}

async fn serve_one<IO, E, H>(io: IO, executor: E, handler: Arc<H>, options: ServeOptions)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    E: Executor,
    H: Handler + ?Sized,
{
    match options.tls {
        None => {
            let _ = serve_connection(io, executor, handler, options.config).await;
        }
        Some(tls) => {
            if let Ok(stream) = super::tls::accept(tls, io).await {
                let _ = serve_connection(stream, executor, handler, options.config).await;
            }
        }
    }
}
