//! Run the TiKV client on async-std, or on any runtime built on `async-io` (smol).
//!
//! [`AsyncStdRuntime`] implements [`tikv_core::Runtime`]: TCP streams from async-std (seen
//! through tikv-proto's futures-io adapter), `async-io` timers, and tikv-proto's shared HTTP/2
//! gRPC transport. Tasks are spawned on async-std unless a different spawner is supplied.
//!
//! async-std is no longer maintained upstream; see this crate's README.

#![forbid(unsafe_code)]

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tikv_core::{Client, Config, Error, Runtime, Time};
use tikv_proto::rpc::{BoxFuture, RpcError};
use tikv_proto::transport::client::{self, H2Channel};
use tikv_proto::transport::io::FuturesIo;
use tikv_proto::transport::{Executor, micros_since, unix_millis};

pub use tikv_core;
pub use tikv_proto;
pub use tikv_proto::transport::{ChannelConfig, ConnectOptions};

/// A function that runs a future in the background.
pub type Spawner = Arc<dyn Fn(BoxFuture<'static, ()>) + Send + Sync>;

/// The [`Executor`] for tikv-proto's transport: a spawner and `async-io` timers.
#[derive(Clone)]
pub struct AsyncStdExecutor {
    spawner: Spawner,
}

impl fmt::Debug for AsyncStdExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncStdExecutor").finish_non_exhaustive()
    }
}

impl AsyncStdExecutor {
    /// Spawns on async-std's global executor.
    pub fn new() -> Self {
        Self::with_spawner(Arc::new(|future| {
            drop(async_std::task::spawn(future));
        }))
    }

    /// Spawns with `spawner` (for example `smol::spawn(f).detach()`).
    pub fn with_spawner(spawner: Spawner) -> Self {
        Self { spawner }
    }
}

impl Default for AsyncStdExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl Executor for AsyncStdExecutor {
    fn spawn(&self, future: BoxFuture<'static, ()>) {
        (self.spawner)(future);
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            async_io::Timer::after(duration).await;
        })
    }
}

/// [`Runtime`] for async-std and other async-io runtimes.
#[derive(Clone, Debug)]
pub struct AsyncStdRuntime {
    executor: AsyncStdExecutor,
    epoch: Instant,
    options: Arc<ConnectOptions>,
}

impl AsyncStdRuntime {
    /// A runtime spawning on async-std with `options` (their TLS and message size limits are
    /// replaced by the client's [`Config`] when a client starts on it).
    pub fn new(options: ConnectOptions) -> Self {
        Self::with_executor(AsyncStdExecutor::new(), options)
    }

    /// A runtime spawning on `executor` with `options` (their TLS and message size limits
    /// are replaced by the client's [`Config`] when a client starts on it).
    pub fn with_executor(executor: AsyncStdExecutor, options: ConnectOptions) -> Self {
        Self {
            executor,
            epoch: Instant::now(),
            options: Arc::new(options),
        }
    }

    /// The executor tasks and timers run on.
    pub fn executor(&self) -> &AsyncStdExecutor {
        &self.executor
    }
}

async fn dial(
    executor: AsyncStdExecutor,
    options: Arc<ConnectOptions>,
    address: String,
) -> Result<H2Channel<AsyncStdExecutor>, RpcError> {
    let connect_error = |reason: String| RpcError::Connect {
        address: address.clone(),
        reason,
    };
    let stream = match async_std::future::timeout(
        options.connect_timeout,
        async_std::net::TcpStream::connect(address.as_str()),
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
        FuturesIo(stream),
        executor,
        &address,
        options.tls.clone(),
        options.channel.clone(),
    )
    .await
}

impl Runtime for AsyncStdRuntime {
    type Channel = H2Channel<AsyncStdExecutor>;

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
        Box::pin(async move {
            async_io::Timer::at(at).await;
        })
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
/// parse.
pub fn connect(
    pd_endpoints: impl IntoIterator<Item = impl Into<String>>,
    config: Config,
) -> Result<Client, Error> {
    // `Client::start` applies the configuration's TLS and limits to the runtime.
    let runtime = AsyncStdRuntime::new(ConnectOptions::default());
    Client::start(
        runtime,
        pd_endpoints.into_iter().map(Into::into).collect(),
        config,
    )
}
