//! The abstract gRPC channel every transport implements, and the one error type of a call.
//!
//! The h2 transport (feature `transport`), the simulated cluster's in-process transport and
//! test doubles all implement [`Channel`]; the client core is written against it only. Payloads
//! cross this seam as bytes: messages go out already [`Framed`] and come back as raw payloads,
//! so encoding and decoding happen wherever the caller chooses (off the core's driver task).

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;

use crate::frame::{FrameError, Framed};
use crate::method::Method;
use crate::status::{Code, Status};

/// A boxed, sendable future, as returned by [`Channel`] methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a call or a stream failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The server answered with a non-OK gRPC status.
    #[error("server returned {0}")]
    Status(Status),
    /// The call's deadline passed before it completed.
    #[error("deadline of {0:?} exceeded")]
    DeadlineExceeded(Duration),
    /// A message could not be framed or unframed (too large, compressed, truncated).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A message arrived whole but is not valid protobuf of the expected type.
    #[error("cannot decode {message_type}: {reason}")]
    Decode {
        /// The protobuf type that was expected.
        message_type: &'static str,
        /// What the decoder reported.
        reason: String,
    },
    /// The connection could not be established.
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// The address that was dialled.
        address: String,
        /// What went wrong (refused, timed out, TLS handshake failure...).
        reason: String,
    },
    /// The connection or stream broke, or was closed, before the call completed.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The peer broke the HTTP/2 or gRPC protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// TLS configuration could not be loaded.
    #[error("tls configuration: {0}")]
    Tls(String),
    /// The caller cancelled the call.
    #[error("call cancelled")]
    Cancelled,
}

impl RpcError {
    /// The gRPC status code that best describes the failure, as grpc-go would report it.
    pub fn code(&self) -> Code {
        match self {
            Self::Status(status) => status.code,
            Self::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Self::Frame(FrameError::TooLarge { .. }) => Code::ResourceExhausted,
            Self::Frame(_) | Self::Decode { .. } | Self::Protocol(_) => Code::Internal,
            Self::Connect { .. } | Self::ConnectionLost(_) => Code::Unavailable,
            Self::Tls(_) => Code::InvalidArgument,
            Self::Cancelled => Code::Cancelled,
        }
    }

    /// Whether the request may not have reached the server's handler at all, so that sending
    /// it again cannot duplicate its effect. Only connection set-up failures qualify.
    pub fn is_not_sent(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }
}

/// Per-call options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// The call's deadline, measured from when it starts; sent as `grpc-timeout` and enforced
    /// locally. `None` means no deadline (streams normally have none).
    pub timeout: Option<Duration>,
    /// Extra request metadata: lower-case ASCII keys with ASCII values
    /// (e.g. `tikv-forwarded-host`).
    pub metadata: Vec<(String, String)>,
}

impl CallOptions {
    /// Options with a deadline.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
            metadata: Vec::new(),
        }
    }

    /// Adds one metadata entry.
    #[must_use]
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }
}

/// The two halves of an open stream on channel `C`.
pub type StreamHalves<C> = (<C as Channel>::Sender, <C as Channel>::Receiver);

/// A connection that can carry gRPC calls.
pub trait Channel: Clone + Send + Sync + 'static {
    /// The sending half of a stream.
    type Sender: StreamSender;
    /// The receiving half of a stream.
    type Receiver: StreamReceiver;

    /// Sends one framed request to `path` and resolves to the response payload.
    ///
    /// Errors with the server's status, a deadline, a framing limit or a broken connection.
    fn unary(
        &self,
        path: &'static str,
        request: Framed,
        options: CallOptions,
    ) -> BoxFuture<'static, Result<Bytes, RpcError>>;

    /// Opens a bidirectional (or client- or server-streaming) call to `path`.
    ///
    /// Errors when the connection is gone or the server refuses the stream.
    fn open_stream(
        &self,
        path: &'static str,
        options: CallOptions,
    ) -> BoxFuture<'static, Result<StreamHalves<Self>, RpcError>>;

    /// Whether the connection is known to be unusable; callers then dial again.
    fn is_closed(&self) -> bool;
}

/// The sending half of a stream, with backpressure.
pub trait StreamSender: Send + 'static {
    /// Resolves when the stream can take one more message without exceeding flow control.
    ///
    /// Errors when the stream or connection has failed.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>>;

    /// Queues one message; call only after [`poll_ready`](Self::poll_ready) returned ready.
    ///
    /// Errors when the stream has failed or the message exceeds the send limit.
    fn start_send(&mut self, message: Framed) -> Result<(), RpcError>;

    /// Half-closes the stream: no more messages will be sent.
    fn finish(&mut self) -> Result<(), RpcError>;
}

/// The receiving half of a stream.
pub trait StreamReceiver: Send + 'static {
    /// The next message payload; `None` when the server ended the stream with OK.
    ///
    /// Errors with the stream's final non-OK status, or how the connection failed.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, RpcError>>>;
}

/// Waits for capacity, then sends one message on a stream.
///
/// Errors as [`StreamSender::poll_ready`] and [`StreamSender::start_send`] do.
pub async fn send<S: StreamSender + ?Sized>(
    sender: &mut S,
    message: Framed,
) -> Result<(), RpcError> {
    poll_fn(|cx| sender.poll_ready(cx)).await?;
    sender.start_send(message)
}

/// Receives the next payload of a stream; `None` once the stream ended with OK.
pub async fn recv<R: StreamReceiver + ?Sized>(receiver: &mut R) -> Option<Result<Bytes, RpcError>> {
    poll_fn(|cx| receiver.poll_recv(cx)).await
}

/// Decodes a payload as message type `M`.
///
/// Errors with [`RpcError::Decode`] when the bytes are not a valid `M`.
pub fn decode<M: Message + Default>(payload: Bytes) -> Result<M, RpcError> {
    M::decode(payload).map_err(|err| RpcError::Decode {
        message_type: std::any::type_name::<M>(),
        reason: err.to_string(),
    })
}

/// Calls a unary method with typed messages: encodes, sends, awaits and decodes.
///
/// Errors as [`Channel::unary`] does, plus [`RpcError::Frame`] when the request exceeds
/// `max_message_size` and [`RpcError::Decode`] when the response is malformed.
pub async fn call<C, Req, Resp>(
    channel: &C,
    method: Method<Req, Resp>,
    request: &Req,
    options: CallOptions,
    max_message_size: usize,
) -> Result<Resp, RpcError>
where
    C: Channel,
    Req: Message,
    Resp: Message + Default,
{
    let framed = Framed::encode(request, max_message_size)?;
    let payload = channel.unary(method.path(), framed, options).await?;
    decode(payload)
}
