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
#[cfg(feature = "testing")]
pub mod command;
#[cfg(not(feature = "testing"))]
#[allow(unreachable_pub, reason = "public only with the `testing` feature")]
mod command;
pub mod config;
pub mod driver;
mod entity;
pub mod error;
#[cfg(feature = "testing")]
pub mod machine;
#[cfg(not(feature = "testing"))]
#[allow(unreachable_pub, reason = "public only with the `testing` feature")]
mod machine;
mod op;
mod ops;
pub mod oracle;
#[cfg(feature = "testing")]
pub mod outbox;
#[cfg(not(feature = "testing"))]
#[allow(unreachable_pub, reason = "public only with the `testing` feature")]
mod outbox;
mod pd;
pub mod rand;
pub mod range_task;
pub mod raw_client;
pub mod region;
pub mod regions;
pub mod rpc;
pub mod runtime;
mod sender;
pub mod time;
mod wait;

pub use command::{KeyLocation, KeyMode, MAX_RAW_SCAN_LIMIT, RawChecksum, SplitOutcome};
pub use config::{ApiVersion, Config};
pub use driver::Client;
pub use error::Error;
pub use ops::{RAW_BATCH_PAIR_COUNT, RAW_BATCH_PUT_SIZE, SPLIT_BATCH_KEY_LIMIT};
pub use oracle::Timestamp;
pub use raw_client::{CasOutcome, ColumnFamily, KeyTtl, KvPair, RawClient};
pub use regions::Regions;
pub use runtime::Runtime;
pub use tikv_proto as proto;
pub use time::Time;
