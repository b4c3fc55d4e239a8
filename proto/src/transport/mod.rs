//! The one gRPC-over-HTTP/2 implementation, shared by every runtime and the simulated cluster.
//!
//! Built on `h2` and generic over the IO type (anything with tokio's IO traits; wrap
//! futures-io types in [`io::FuturesIo`]) and over an [`Executor`] that spawns tasks and makes
//! timers. No runtime lives in here: tikv-tokio and tikv-async-std each supply theirs.
//!
//! - [`client::H2Channel`] implements [`crate::rpc::Channel`]: unary calls and bidirectional
//!   streams, `grpc-timeout` and local deadline enforcement, message size limits, status and
//!   trailers mapped to [`crate::rpc::RpcError`], HTTP/2 keepalive pings.
//! - [`server`] accepts gRPC calls on a connection and hands each to a [`server::Handler`].
//! - [`tls`] builds rustls configurations from PEM and wraps connections (ALPN `h2`).

use std::time::Duration;

use crate::rpc::BoxFuture;

pub mod client;
pub mod io;
pub mod server;
pub mod tls;

/// What the transport needs from a runtime: spawning detached tasks and sleeping.
pub trait Executor: Clone + Send + Sync + 'static {
    /// Runs `future` to completion in the background.
    fn spawn(&self, future: BoxFuture<'static, ()>);

    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// HTTP/2 and gRPC settings of one client connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Largest request payload this side sends.
    pub max_send_message_size: usize,
    /// Largest response payload this side accepts.
    pub max_recv_message_size: usize,
    /// HTTP/2 receive window per stream (client-go uses 128 MiB).
    pub initial_stream_window: u32,
    /// HTTP/2 receive window of the whole connection.
    pub initial_connection_window: u32,
    /// Send an HTTP/2 PING after this long; `None` disables keepalive.
    pub keepalive_interval: Option<Duration>,
    /// Close the connection when a PING is not acknowledged within this long.
    pub keepalive_timeout: Duration,
    /// The `user-agent` header value.
    pub user_agent: String,
}

/// How a runtime dials stores and PD; shared by every runtime crate.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// HTTP/2 and gRPC settings of each connection.
    pub channel: ChannelConfig,
    /// Give up dialling after this long (client-go: 5 s).
    pub connect_timeout: Duration,
    /// TLS client configuration; `None` for plaintext.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            channel: ChannelConfig::default(),
            connect_timeout: Duration::from_secs(5),
            tls: None,
        }
    }
}

impl ConnectOptions {
    /// These options with messages of up to `max_message_size` bytes each way, over TLS
    /// with `tls` (a CA and an optional client identity, PEM) or in plaintext when it is
    /// `None`; the rest (connect timeout, HTTP/2 settings) is kept.
    ///
    /// Errors with [`RpcError::Connect`](crate::rpc::RpcError::Connect) when the TLS
    /// material does not parse.
    pub fn with_client_settings(
        &self,
        max_message_size: usize,
        tls: Option<(&[u8], Option<tls::PemIdentity<'_>>)>,
    ) -> Result<Self, crate::rpc::RpcError> {
        let mut options = self.clone();
        options.channel.max_send_message_size = max_message_size;
        options.channel.max_recv_message_size = max_message_size;
        options.tls = match tls {
            Some((ca_pem, identity)) => Some(tls::client_config(ca_pem, identity)?),
            None => None,
        };
        Ok(options)
    }
}

/// Microseconds elapsed since `epoch`, saturating; how runtimes produce the core's clock.
pub fn micros_since(epoch: std::time::Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch by the system clock (0 if the clock is before 1970).
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            max_send_message_size: 1 << 30,
            max_recv_message_size: 1 << 30,
            initial_stream_window: 128 << 20,
            initial_connection_window: 128 << 20,
            keepalive_interval: Some(Duration::from_secs(10)),
            keepalive_timeout: Duration::from_secs(3),
            user_agent: concat!("tikv-rs/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Maps an h2 error onto the call error a gRPC client reports for it.
pub(crate) fn map_h2_error(err: &h2::Error) -> crate::rpc::RpcError {
    use crate::rpc::RpcError;
    use crate::status::{Code, Status};
    if err.is_io() || err.is_go_away() {
        return RpcError::ConnectionLost(err.to_string());
    }
    match err.reason() {
        Some(reason) => {
            let code = match reason {
                h2::Reason::CANCEL => Code::Cancelled,
                h2::Reason::REFUSED_STREAM => Code::Unavailable,
                h2::Reason::FLOW_CONTROL_ERROR | h2::Reason::ENHANCE_YOUR_CALM => {
                    Code::ResourceExhausted
                }
                h2::Reason::INADEQUATE_SECURITY => Code::PermissionDenied,
                _ => Code::Internal,
            };
            RpcError::Status(Status::new(code, format!("stream reset: {reason}")))
        }
        None => RpcError::ConnectionLost(err.to_string()),
    }
}
