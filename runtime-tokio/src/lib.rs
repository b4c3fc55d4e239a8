//! Run the TiKV client on tokio.
//!
//! [`TokioRuntime`] implements [`tikv_core::Runtime`]: tasks go to the tokio runtime the
//! client was created in, timers are tokio timers, and connections are TCP (optionally TLS)
//! streams carrying tikv-proto's shared HTTP/2 gRPC transport.

#![forbid(unsafe_code)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tikv_core::{Client, Config, Error, Runtime, Time};
use tikv_proto::rpc::{BoxFuture, RpcError};
use tikv_proto::transport::client::{self, H2Channel};
use tikv_proto::transport::{Executor, micros_since, unix_millis};

pub use tikv_core;
pub use tikv_proto;
pub use tikv_proto::transport::{ChannelConfig, ConnectOptions};

/// The tokio [`Executor`] for tikv-proto's transport.
#[derive(Clone, Debug)]
pub struct TokioExecutor {
    handle: tokio::runtime::Handle,
}

impl TokioExecutor {
    /// An executor on the current tokio runtime.
    ///
    /// Errors when called outside a tokio runtime.
    pub fn current() -> Result<Self, tokio::runtime::TryCurrentError> {
        tokio::runtime::Handle::try_current().map(|handle| Self { handle })
    }

    /// An executor on the runtime behind `handle`.
    pub fn new(handle: tokio::runtime::Handle) -> Self {
        Self { handle }
    }
}

impl Executor for TokioExecutor {
    fn spawn(&self, future: BoxFuture<'static, ()>) {
        drop(self.handle.spawn(future));
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        // The timer registers with the executor's runtime even when polled elsewhere.
        let _guard = self.handle.enter();
        Box::pin(tokio::time::sleep(duration))
    }
}

/// [`Runtime`] for tokio.
#[derive(Clone, Debug)]
pub struct TokioRuntime {
    executor: TokioExecutor,
    epoch: Instant,
    options: Arc<ConnectOptions>,
}

impl TokioRuntime {
    /// A runtime on the current tokio runtime with `options` (their TLS and message size
    /// limits are replaced by the client's [`Config`] when a client starts on it).
    ///
    /// Errors when called outside a tokio runtime.
    pub fn current(options: ConnectOptions) -> Result<Self, tokio::runtime::TryCurrentError> {
        Ok(Self::new(TokioExecutor::current()?, options))
    }

    /// A runtime on `executor` with `options` (their TLS and message size limits are
    /// replaced by the client's [`Config`] when a client starts on it).
    pub fn new(executor: TokioExecutor, options: ConnectOptions) -> Self {
        Self {
            executor,
            epoch: Instant::now(),
            options: Arc::new(options),
        }
    }

    /// The executor tasks and timers run on.
    pub fn executor(&self) -> &TokioExecutor {
        &self.executor
    }
}

async fn dial(
    executor: TokioExecutor,
    options: Arc<ConnectOptions>,
    address: String,
) -> Result<H2Channel<TokioExecutor>, RpcError> {
    let connect_error = |reason: String| RpcError::Connect {
        address: address.clone(),
        reason,
    };
    let stream = match tokio::time::timeout(
        options.connect_timeout,
        tokio::net::TcpStream::connect(address.as_str()),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return Err(connect_error(err.to_string())),
        Err(_) => {
            return Err(connect_error(format!(
                "timed out after {:?}",
                options.connect_timeout
            )));
        }
    };
    // Requests are small and latency-bound; never let Nagle hold them back.
    stream
        .set_nodelay(true)
        .map_err(|err| connect_error(err.to_string()))?;
    client::establish(
        stream,
        executor,
        &address,
        options.tls.clone(),
        options.channel.clone(),
    )
    .await
}

impl Runtime for TokioRuntime {
    type Channel = H2Channel<TokioExecutor>;

    fn configure(&self, config: &Config) -> Result<Self, Error> {
        let tls = config.tls().map(tikv_core::config::TlsConfig::as_pem);
        let options = self
            .options
            .with_client_settings(config.max_message_size(), tls)
            .map_err(|err| Error::InvalidArgument(err.to_string()))?;
        Ok(Self {
            options: Arc::new(options),
            ..self.clone()
        })
    }

    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.executor.spawn(task);
    }

    fn sleep_until(&self, deadline: Time) -> BoxFuture<'static, ()> {
        let at = self.epoch + deadline.since_epoch();
        let _guard = self.executor.handle.enter();
        Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(at)))
    }

    fn now(&self) -> Time {
        Time::from_micros(micros_since(self.epoch))
    }

    fn wall_clock_ms(&self) -> u64 {
        unix_millis()
    }

    fn entropy(&self) -> u64 {
        // std seeds each thread's hash keys from the OS and steps them for every new
        // `RandomState`, so each call hashes under fresh keys; the clock adds a little more.
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(unix_millis());
        hasher.write_u64(micros_since(self.epoch));
        hasher.finish()
    }

    fn connect(&self, address: &str) -> BoxFuture<'static, Result<Self::Channel, RpcError>> {
        Box::pin(dial(
            self.executor.clone(),
            Arc::clone(&self.options),
            address.to_owned(),
        ))
    }
}

/// Connects to the cluster whose PD answers at `pd_endpoints` (`host:port`), with TLS when
/// `config.tls()` is set, and returns the client.
///
/// Connections are made lazily by the first operation. Errors with
/// [`Error::InvalidArgument`] when no endpoint is given, when the TLS material does not
/// parse, or when called outside a tokio runtime.
pub fn connect(
    pd_endpoints: impl IntoIterator<Item = impl Into<String>>,
    config: Config,
) -> Result<Client, Error> {
    // `Client::start` applies the configuration's TLS and limits to the runtime.
    let runtime = TokioRuntime::current(ConnectOptions::default())
        .map_err(|err| Error::InvalidArgument(format!("not inside a tokio runtime: {err}")))?;
    Client::start(
        runtime,
        pd_endpoints.into_iter().map(Into::into).collect(),
        config,
    )
}
