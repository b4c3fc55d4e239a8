//! The sans-IO heart of the TiKV client.
//!
//! Everything the client knows lives here as deterministic state machines: no sockets, no
//! clock reads, no unseeded randomness. The contract, after quinn-proto and str0m:
//!
//! - **Inputs** carry the current [`time::Time`]: commands from user handles, replies
//!   (decoded responses or transport errors) and timeouts.
//! - **Outputs** are drained after every input until empty: requests to transmit, the next
//!   deadline, and finished operations.
//! - **Time** is the core's own [`time::Time`]; wall-clock time, where TiKV's protocol needs
//!   it, comes from the runtime.
//!
//! The [`runtime::Runtime`] trait is the only seam to the outside world: spawn, timers, the
//! clock, and gRPC channels (the [`tikv_proto::rpc::Channel`] trait). tikv-tokio and
//! tikv-async-std implement it.
//!
//! The core forbids `unsafe`, and `clippy.toml` bans `Instant::now`, `SystemTime::now` and
//! randomly seeded hash maps inside it, so that a seeded run replays exactly.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod client;
pub mod config;
pub mod driver;
pub mod error;
pub mod machine;
pub mod oracle;
pub mod rand;
pub mod range_task;
pub mod raw_client;
pub mod region;
pub mod regions;
pub mod rpc;
pub mod runtime;
pub mod time;

pub use client::Client;
pub use config::{ApiVersion, Config};
pub use error::Error;
pub use machine::{KeyLocation, KeyMode, SplitOutcome};
pub use raw_client::{KvPair, RawClient};
pub use regions::Regions;
pub use runtime::Runtime;
pub use tikv_proto as proto;
pub use time::Time;
