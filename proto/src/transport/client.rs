//! The client half: [`H2Channel`], one HTTP/2 connection carrying gRPC calls.

use std::future::{Future as _, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{Either, select};
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{ChannelConfig, Executor, map_h2_error};
use crate::frame::{FrameDecoder, FrameError, Framed};
use crate::rpc::{BoxFuture, CallOptions, Channel, RpcError, StreamReceiver, StreamSender};
use crate::status::{Code, Status, encode_timeout};

/// Whether the connection runs over TLS; decides the `:scheme` pseudo-header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Plaintext HTTP/2 with prior knowledge.
    Http,
    /// HTTP/2 over TLS.
    Https,
}

/// One HTTP/2 connection to a gRPC server; cheap to clone, all clones share the connection.
#[derive(Clone)]
pub struct H2Channel<E: Executor> {
    send_request: SendRequest<Bytes>,
    shared: Arc<Shared>,
    executor: E,
    authority: Arc<str>,
    scheme: Scheme,
    config: Arc<ChannelConfig>,
}

impl<E: Executor> std::fmt::Debug for H2Channel<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Channel")
            .field("authority", &self.authority)
            .field("closed", &self.shared.closed.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

/// State the connection task shares with every clone of the channel.
#[derive(Debug, Default)]
struct Shared {
    closed: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Shared {
    fn close(&self, reason: String) {
        if let Ok(mut slot) = self.reason.lock() {
            slot.get_or_insert(reason);
        }
        self.closed.store(true, Ordering::Release);
    }

    fn reason(&self) -> String {
        self.reason
            .lock()
            .ok()
            .and_then(|slot| slot.clone())
            .unwrap_or_else(|| "connection closed".to_owned())
    }
}

impl<E: Executor> H2Channel<E> {
    /// Runs the HTTP/2 handshake over an established `io` and spawns the connection task (and
    /// the keepalive task, when configured) on `executor`.
    ///
    /// `authority` is the `host:port` the calls name. Errors with [`RpcError::Connect`] when the
    /// handshake fails.
    pub async fn handshake<IO>(
        io: IO,
        executor: E,
        authority: &str,
        scheme: Scheme,
        config: ChannelConfig,
    ) -> Result<Self, RpcError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send_request, mut connection) = h2::client::Builder::new()
            .initial_window_size(config.initial_stream_window)
            .initial_connection_window_size(config.initial_connection_window)
            .max_send_buffer_size(1 << 20)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|err| RpcError::Connect {
                address: authority.to_owned(),
                reason: format!("http/2 handshake: {err}"),
            })?;
        let shared = Arc::new(Shared::default());
        let (kill_tx, kill_rx) = futures_channel::oneshot::channel::<String>();

        if let (Some(interval), Some(ping_pong)) =
            (config.keepalive_interval, connection.ping_pong())
        {
            executor.spawn(Box::pin(keepalive(
                executor.clone(),
                ping_pong,
                interval,
                config.keepalive_timeout,
                kill_tx,
            )));
        }

        let task_shared = Arc::clone(&shared);
        executor.spawn(Box::pin(async move {
            let reason = match select(connection, kill_rx).await {
                Either::Left((Ok(()), _)) => "connection closed by peer".to_owned(),
                Either::Left((Err(err), _)) => format!("connection failed: {err}"),
                Either::Right((Ok(reason), _)) => reason,
                // The keepalive task ended without a verdict; the connection was dropped with it.
                Either::Right((Err(_), _)) => "connection closed".to_owned(),
            };
            task_shared.close(reason);
        }));

        Ok(Self {
            send_request,
            shared,
            executor,
            authority: authority.into(),
            scheme,
            config: Arc::new(config),
        })
    }

    /// The `host:port` this channel calls.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    fn request_head(&self, path: &str, options: &CallOptions) -> Result<Request<()>, RpcError> {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(format!("{scheme}://{}{path}", self.authority))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("user-agent", self.config.user_agent.as_str());
        if let Some(timeout) = options.timeout {
            request = request.header("grpc-timeout", encode_timeout(timeout));
        }
        for (key, value) in &options.metadata {
            request = request.header(key.as_str(), value.as_str());
        }
        request
            .body(())
            .map_err(|err| RpcError::Protocol(format!("invalid request head: {err}")))
    }

    async fn start(
        &self,
        path: &'static str,
        options: &CallOptions,
        end_of_stream: bool,
    ) -> Result<(ResponseFuture, SendStream<Bytes>), RpcError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(RpcError::ConnectionLost(self.shared.reason()));
        }
        let head = self.request_head(path, options)?;
        let mut ready = self.send_request.clone().ready().await.map_err(|err| {
            let mapped = map_h2_error(&err);
            match mapped {
                RpcError::ConnectionLost(_) => RpcError::ConnectionLost(self.shared.reason()),
                other => other,
            }
        })?;
        ready
            .send_request(head, end_of_stream)
            .map_err(|err| map_h2_error(&err))
    }

    async fn unary_call(
        self,
        path: &'static str,
        request: Framed,
        options: CallOptions,
    ) -> Result<Bytes, RpcError> {
        check_send_limit(&request, self.config.max_send_message_size)?;
        let (response, mut send) = self.start(path, &options, false).await?;
        // h2 buffers what exceeds the peer's window and sends it as the window opens; the
        // connection-wide send buffer bound keeps this from growing without limit.
        send.send_data(request.into_bytes(), true)
            .map_err(|err| map_h2_error(&err))?;
        let mut receiver = H2Receiver::new(response, self.config.max_recv_message_size);
        let message = match poll_fn(|cx| receiver.poll_recv(cx)).await {
            Some(Ok(message)) => message,
            Some(Err(err)) => return Err(err),
            None => {
                return Err(RpcError::Protocol(
                    "server ended a unary call with OK but no response message".to_owned(),
                ));
            }
        };
        match poll_fn(|cx| receiver.poll_recv(cx)).await {
            None => Ok(message),
            Some(Ok(_)) => Err(RpcError::Protocol(
                "server sent more than one message on a unary call".to_owned(),
            )),
            Some(Err(err)) => Err(err),
        }
    }
}

/// Sets up a channel over an established connection: the TLS handshake when `tls` is given
/// (verifying the server as the host part of `address`), then the HTTP/2 handshake.
///
/// Errors with [`RpcError::Connect`] when either handshake fails, or [`RpcError::Tls`] when
/// the host is not a valid server name.
pub async fn establish<IO, E>(
    io: IO,
    executor: E,
    address: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    config: ChannelConfig,
) -> Result<H2Channel<E>, RpcError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    E: Executor,
{
    match tls {
        None => H2Channel::handshake(io, executor, address, Scheme::Http, config).await,
        Some(tls) => {
            let stream = super::tls::connect(tls, host_of(address), io).await?;
            H2Channel::handshake(stream, executor, address, Scheme::Https, config).await
        }
    }
}

/// The host part of `host:port`, without the brackets of an IPv6 literal.
pub fn host_of(address: &str) -> &str {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => address,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

fn check_send_limit(message: &Framed, limit: usize) -> Result<(), RpcError> {
    if message.payload_len() > limit {
        return Err(RpcError::Frame(FrameError::TooLarge {
            size: message.payload_len(),
            limit,
        }));
    }
    Ok(())
}

/// Races `future` against the deadline in `timeout`.
async fn with_deadline<E: Executor, T>(
    executor: &E,
    timeout: Option<Duration>,
    future: BoxFuture<'static, Result<T, RpcError>>,
) -> Result<T, RpcError> {
    match timeout {
        None => future.await,
        Some(timeout) => match select(future, executor.sleep(timeout)).await {
            // The server enforces the same deadline from `grpc-timeout` and may report it
            // first; either way the caller sees one error for one cause.
            Either::Left((Err(RpcError::Status(status)), _))
                if status.code == Code::DeadlineExceeded =>
            {
                Err(RpcError::DeadlineExceeded(timeout))
            }
            Either::Left((result, _)) => result,
            // Dropping the call resets its stream with CANCEL, which tells the server to stop.
            Either::Right(((), _)) => Err(RpcError::DeadlineExceeded(timeout)),
        },
    }
}

impl<E: Executor> Channel for H2Channel<E> {
    type Sender = H2Sender;
    type Receiver = H2Receiver;

    fn unary(
        &self,
        path: &'static str,
        request: Framed,
        options: CallOptions,
    ) -> BoxFuture<'static, Result<Bytes, RpcError>> {
        let channel = self.clone();
        Box::pin(async move {
            let executor = channel.executor.clone();
            let timeout = options.timeout;
            with_deadline(
                &executor,
                timeout,
                Box::pin(channel.unary_call(path, request, options)),
            )
            .await
        })
    }

    fn open_stream(
        &self,
        path: &'static str,
        options: CallOptions,
    ) -> BoxFuture<'static, Result<(H2Sender, H2Receiver), RpcError>> {
        let channel = self.clone();
        Box::pin(async move {
            let (response, send) = channel.start(path, &options, false).await?;
            Ok((
                H2Sender {
                    send,
                    limit: channel.config.max_send_message_size,
                },
                H2Receiver::new(response, channel.config.max_recv_message_size),
            ))
        })
    }

    fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

/// Sends HTTP/2 PINGs after each idle interval and closes the connection when one goes
/// unanswered within `timeout`.
async fn keepalive<E: Executor>(
    executor: E,
    mut ping_pong: h2::PingPong,
    interval: Duration,
    timeout: Duration,
    kill: futures_channel::oneshot::Sender<String>,
) {
    loop {
        executor.sleep(interval).await;
        if kill.is_canceled() {
            return;
        }
        let ping = Box::pin(ping_pong.ping(h2::Ping::opaque()));
        match select(ping, executor.sleep(timeout)).await {
            Either::Left((Ok(_pong), _)) => {}
            // The connection is gone; its task has already recorded why.
            Either::Left((Err(_), _)) => return,
            Either::Right(((), _)) => {
                let _ = kill.send(format!(
                    "keepalive ping not acknowledged within {timeout:?}"
                ));
                return;
            }
        }
    }
}

/// The sending half of a stream on an [`H2Channel`].
///
/// Backpressure comes from h2's flow control: [`StreamSender::poll_ready`] waits until the
/// stream has send capacity (window open and the per-stream send buffer below its bound), and
/// [`StreamSender::start_send`] hands the whole message to h2, which sends what the window
/// allows and buffers the rest.
pub struct H2Sender {
    send: SendStream<Bytes>,
    limit: usize,
}

/// How much capacity to ask for while waiting to become ready.
const READY_RESERVE: usize = 64 * 1024;

impl std::fmt::Debug for H2Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Sender")
            .field("capacity", &self.send.capacity())
            .finish_non_exhaustive()
    }
}

impl StreamSender for H2Sender {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        if let Poll::Ready(Ok(reason)) = self.send.poll_reset(cx) {
            return Poll::Ready(Err(map_h2_error(&h2::Error::from(reason))));
        }
        if self.send.capacity() > 0 {
            return Poll::Ready(Ok(()));
        }
        self.send.reserve_capacity(READY_RESERVE);
        loop {
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(0)) => continue,
                Some(Ok(_)) => return Poll::Ready(Ok(())),
                Some(Err(err)) => return Poll::Ready(Err(map_h2_error(&err))),
                None => {
                    return Poll::Ready(Err(RpcError::ConnectionLost(
                        "stream closed while sending".to_owned(),
                    )));
                }
            }
        }
    }

    fn start_send(&mut self, message: Framed) -> Result<(), RpcError> {
        check_send_limit(&message, self.limit)?;
        self.send
            .send_data(message.into_bytes(), false)
            .map_err(|err| map_h2_error(&err))
    }

    fn finish(&mut self) -> Result<(), RpcError> {
        self.send
            .send_data(Bytes::new(), true)
            .map_err(|err| map_h2_error(&err))
    }
}

/// The receiving half of a call on an [`H2Channel`].
pub struct H2Receiver {
    state: ReceiverState,
    decoder: FrameDecoder,
}

enum ReceiverState {
    /// Waiting for the response headers.
    Head(ResponseFuture),
    /// Reading DATA frames.
    Body(RecvStream),
    /// Body ended; waiting for the trailers.
    Trailers(RecvStream),
    /// Finished; later polls return `None`.
    Done,
}

impl std::fmt::Debug for H2Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            ReceiverState::Head(_) => "head",
            ReceiverState::Body(_) => "body",
            ReceiverState::Trailers(_) => "trailers",
            ReceiverState::Done => "done",
        };
        f.debug_struct("H2Receiver").field("state", &state).finish()
    }
}

impl H2Receiver {
    fn new(response: ResponseFuture, limit: usize) -> Self {
        Self {
            state: ReceiverState::Head(response),
            decoder: FrameDecoder::new(limit),
        }
    }

    fn fail(&mut self, err: RpcError) -> Poll<Option<Result<Bytes, RpcError>>> {
        self.state = ReceiverState::Done;
        Poll::Ready(Some(Err(err)))
    }
}

/// Checks the response head; `Ok(Some(status))` for a trailers-only response.
fn check_head(response: &Response<RecvStream>) -> Result<Option<Status>, RpcError> {
    let headers = response.headers();
    let status = response.status().as_u16();
    if let Some(grpc) = status_from(headers) {
        // Trailers-only: the whole outcome is in the headers.
        return Ok(Some(grpc));
    }
    if status != 200 {
        return Err(RpcError::Status(Status::new(
            Code::from_http_status(status),
            format!("unexpected HTTP status {status}"),
        )));
    }
    let content_type = headers
        .get("content-type")
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if !content_type.starts_with(b"application/grpc") {
        return Err(RpcError::Status(Status::new(
            Code::Unknown,
            format!(
                "unexpected content-type {:?}",
                String::from_utf8_lossy(content_type)
            ),
        )));
    }
    Ok(None)
}

fn status_from(headers: &HeaderMap) -> Option<Status> {
    Status::from_headers(
        headers.get("grpc-status").map(HeaderValue::as_bytes),
        headers.get("grpc-message").map(HeaderValue::as_bytes),
    )
}

impl StreamReceiver for H2Receiver {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, RpcError>>> {
        loop {
            match &mut self.state {
                ReceiverState::Head(response) => {
                    let response = match ready!(Pin::new(response).poll(cx)) {
                        Ok(response) => response,
                        Err(err) => return self.fail(map_h2_error(&err)),
                    };
                    match check_head(&response) {
                        Err(err) => return self.fail(err),
                        Ok(Some(status)) => {
                            self.state = ReceiverState::Done;
                            return Poll::Ready(outcome(status));
                        }
                        Ok(None) => self.state = ReceiverState::Body(response.into_body()),
                    }
                }
                ReceiverState::Body(body) => {
                    match self.decoder.next_message() {
                        Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                        Ok(None) => {}
                        Err(err) => return self.fail(err.into()),
                    }
                    match ready!(body.poll_data(cx)) {
                        Some(Ok(data)) => {
                            let len = data.len();
                            self.decoder.push_bytes(data);
                            // Reopen the window only for what we took in, so a slow reader
                            // pushes back on the server.
                            let _ = body.flow_control().release_capacity(len);
                        }
                        Some(Err(err)) => return self.fail(map_h2_error(&err)),
                        None => {
                            if let Err(err) = self.decoder.finish() {
                                return self.fail(err.into());
                            }
                            let ReceiverState::Body(body) =
                                std::mem::replace(&mut self.state, ReceiverState::Done)
                            else {
                                return Poll::Ready(None);
                            };
                            self.state = ReceiverState::Trailers(body);
                        }
                    }
                }
                ReceiverState::Trailers(body) => {
                    let trailers = match ready!(body.poll_trailers(cx)) {
                        Ok(trailers) => trailers,
                        Err(err) => return self.fail(map_h2_error(&err)),
                    };
                    self.state = ReceiverState::Done;
                    return Poll::Ready(match trailers.as_ref().and_then(status_from) {
                        Some(status) => outcome(status),
                        None => Some(Err(RpcError::Protocol(
                            "stream ended without grpc-status".to_owned(),
                        ))),
                    });
                }
                ReceiverState::Done => return Poll::Ready(None),
            }
        }
    }
}

fn outcome(status: Status) -> Option<Result<Bytes, RpcError>> {
    if status.code == Code::Ok {
        None
    } else {
        Some(Err(RpcError::Status(status)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(host_of("127.0.0.1:2379"), "127.0.0.1");
        assert_eq!(host_of("[::1]:20160"), "::1");
        assert_eq!(host_of("pd.example"), "pd.example");
        assert_eq!(host_of("pd.example:"), "pd.example:");
    }
}
