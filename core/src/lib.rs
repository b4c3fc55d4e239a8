//! The sans-IO heart of the TiKV client.
//!
//! Everything the client knows lives here as deterministic state machines: no sockets, no
//! clock reads, no unseeded randomness. Applications use the handles ([`Client`],
//! [`RawClient`], [`Regions`]) through a runtime crate (tikv-tokio, tikv-async-std), whose
//! [`Runtime`] is the only seam to the outside world: spawn, timers, the clock, entropy and
//! gRPC channels. The generic driver ([`driver`]) runs the machine on any runtime.
//!
//! # The machine's contract
//!
//! The machine (`machine::Core`, public with the `testing` feature for simulations, fuzzing
//! and other drivers) follows quinn-proto's and str0m's shape: inputs in, outputs drained.
//!
//! **Inputs.** Each takes the current monotonic [`Time`]:
//! - `handle_command(now, command) -> OpId` starts an operation;
//! - `handle_reply(now, id, reply)` feeds the answer (or transport failure) to request `id`;
//! - `handle_timeout(now)` runs every timer due at `now` (calling it early is harmless);
//! - `cancel(now, op)` abandons an operation and its children (its caller went away): it
//!   reports nothing, and answers still coming for it are dropped;
//! - `handle_wall_clock(unix_ms)` sets the wall clock (milliseconds since the Unix epoch),
//!   read only where TiKV's protocol speaks wall-clock time (lock TTLs).
//!
//! **Outputs**, drained after inputs, in this order:
//! 1. `poll_transmit()` until `None`: requests to send. Drain it first: draining is when
//!    operations waiting for a timestamp are batched into one TSO request, and every
//!    request sent arms its deadline.
//! 2. `poll_event()` until `None`: user operations that finished.
//! 3. `poll_timeout()`: when to call `handle_timeout` next. Read it last, because step 1
//!    may have armed an earlier deadline.
//!
//! Several inputs may come before one drain, and should when they are ready together: every
//! request the inputs produced for one store then leaves as one `BatchCommands` message,
//! and every timestamp they asked for comes from one TSO request.
//!
//! **Time.** [`Time`] is the machine's own monotonic clock (microseconds from the client's
//! start), so tests build exact times and traces replay. An input with a `now` earlier than
//! one already seen is taken at the later time: monotonic time never runs backwards inside
//! the machine. The wall clock may step backwards (a clock adjustment): it is taken as given,
//! nothing is ordered by it, and until the first `handle_wall_clock` it reads 0, at which no
//! lock looks expired. TSO values are [`Timestamp`]s, distinct from both clocks.
//!
//! **Randomness.** One PRNG, seeded from [`Config`]: a fixed seed replays the same
//! decisions; without one, the driver draws it from the runtime's entropy, so clients of
//! one fleet do not back off in lockstep.
//!
//! The canonical loop, with a scripted cluster standing in for the network:
//!
//! ```
//! # #[cfg(feature = "testing")]
//! # fn main() -> Result<(), tikv_core::Error> {
//! use tikv_core::machine::{Command, Core, Event, Output, RawCommand, testing::Responder};
//! use tikv_core::{Config, Time};
//!
//! let mut core = Core::new(Config::default(), vec!["pd:2379".into()], Time::ZERO)?;
//! let mut cluster = Responder::default();
//! let mut now = Time::ZERO;
//! core.handle_wall_clock(1_700_000_000_000);
//! let get = core.handle_command(
//!     now,
//!     Command::Raw(RawCommand::Get { key: "k".into(), cf: String::new() }),
//! );
//! let mut result = None;
//! while result.is_none() {
//!     // Drain: transmits first, then events, then the deadline.
//!     let mut replies = Vec::new();
//!     while let Some(transmit) = core.poll_transmit() {
//!         replies.push((transmit.id, cluster.answer(&transmit)));
//!     }
//!     while let Some(Event::Done(op, outcome)) = core.poll_event() {
//!         if op == get {
//!             result = Some(outcome);
//!         }
//!     }
//!     let deadline = core.poll_timeout();
//!     // Inputs: every reply that is ready, then the timer if nothing else came.
//!     if !replies.is_empty() {
//!         for (id, reply) in replies {
//!             core.handle_reply(now, id, reply);
//!         }
//!     } else if let Some(at) = deadline {
//!         now = now.max(at);
//!         core.handle_timeout(now);
//!     }
//! }
//! // The scripted store answers every read with an empty value.
//! assert!(matches!(result, Some(Ok(Output::Value(Some(_))))));
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "testing"))]
//! # fn main() {}
//! ```
//!
//! The core forbids `unsafe`, and `clippy.toml` bans `Instant::now`, `SystemTime::now` and
//! randomly seeded hash maps inside it, so that a seeded run replays exactly.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod client;
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
pub mod region;
mod resolver;
pub mod rpc;
pub mod runtime;
mod safe_point;
mod sender;
pub mod time;
pub mod txn;
mod wait;

pub use client::{Client, range_task, raw_client, regions, snapshot, transaction};
pub use command::{KeyLocation, KeyMode, MAX_RAW_SCAN_LIMIT, RawChecksum, SplitOutcome};
pub use config::{ApiVersion, Config};
pub use error::Error;
#[cfg(any(test, feature = "testing"))]
pub use ops::txn::commit::CommitKnobs;
pub use ops::txn::commit::{
    Assertion, AssertionLevel, CommitMode, CommitOptions, CommitOutcome, CommitRequest,
    CommitTsUpperBoundCheck, DiskFullOpt, Mutation, MutationOp, PrewriteLockPolicy,
};
pub use ops::txn::{IsolationLevel, Priority, ReadOptions, SnapshotRead, TxnEntry};
pub use ops::{RAW_BATCH_PAIR_COUNT, RAW_BATCH_PUT_SIZE, SPLIT_BATCH_KEY_LIMIT};
pub use oracle::Timestamp;
pub use raw_client::{CasOutcome, ColumnFamily, KeyTtl, KvPair, RawClient};
pub use regions::Regions;
pub use resolver::{ReadLockSets, ResolveOutcome, TxnAction, TxnStatus};
pub use runtime::Runtime;
pub use snapshot::{Scanner, Snapshot};
pub use tikv_proto as proto;
pub use time::Time;
pub use transaction::{CommitCallback, CommitInfo, KvFilter, Transaction, TransactionOptions};
