//! The seam between the core and an async runtime.
//!
//! A [`Runtime`] spawns tasks, makes timers, tells the time, supplies entropy for the PRNG
//! seed and opens gRPC channels. That is all the core's driver needs; tikv-tokio and
//! tikv-async-std implement it in a few dozen lines each on top of tikv-proto's shared HTTP/2
//! transport, and a simulation runtime implements it with virtual time and the simulated
//! cluster in-process.

use tikv_proto::rpc::{BoxFuture, Channel, RpcError};

use crate::config::Config;
use crate::error::Error;
use crate::time::Time;

/// An async runtime as the client driver sees it.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// The gRPC channel type [`connect`](Self::connect) produces.
    type Channel: Channel;

    /// This runtime set up for a client with `config`: its connections use `config.tls`
    /// (plaintext when that is `None`, whatever the runtime was built with) and
    /// `config.max_message_size`. Every client start goes through this, so no way of starting
    /// a client can bypass the configuration's TLS.
    ///
    /// Errors with [`Error::InvalidArgument`] when the TLS material does not parse, or when
    /// `config.tls` is set and this runtime cannot do TLS.
    fn configure(&self, config: &Config) -> Result<Self, Error>;

    /// Runs `task` in the background until it completes.
    fn spawn(&self, task: BoxFuture<'static, ()>);

    /// A future that completes at `deadline` (at once if it has passed).
    fn sleep_until(&self, deadline: Time) -> BoxFuture<'static, ()>;

    /// The current monotonic time, measured from this runtime's epoch.
    fn now(&self) -> Time;

    /// Wall-clock time in milliseconds since the Unix epoch; used only where TiKV's protocol
    /// needs physical time (lock TTLs, TSO physical parts), never for ordering.
    fn wall_clock_ms(&self) -> u64;

    /// 64 bits of entropy, different on every call and in every process: the PRNG seed of
    /// a client whose [`Config`] does not fix one, so that clients sharing a
    /// cluster draw different backoff jitter. The core never reads entropy itself (a seeded
    /// run must replay); a simulated runtime returns values from its own seed.
    fn entropy(&self) -> u64;

    /// `config` with a PRNG seed: the one it fixes, else one drawn from
    /// [`entropy`](Self::entropy). Every client start does this; call it yourself only when
    /// building the machine (`Core`) without the driver (a machine built from a config
    /// without a seed uses a constant one).
    fn seed_config(&self, config: Config) -> Config {
        match config.rng_seed() {
            Some(_) => config,
            None => config.with_rng_seed(self.entropy()),
        }
    }

    /// Opens a channel to `address` (`host:port`), over TLS when the runtime was configured
    /// with it.
    ///
    /// Errors with [`RpcError::Connect`] when the address cannot be resolved or reached, or
    /// the TLS or HTTP/2 handshake fails.
    fn connect(&self, address: &str) -> BoxFuture<'static, Result<Self::Channel, RpcError>>;
}
