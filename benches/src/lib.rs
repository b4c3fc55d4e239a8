//! Benchmarks of the TiKV client (run with `cargo bench -p tikv-benches`).
//!
//! - `transport`: gRPC framing of a full BatchCommands message, and unary round trips over
//!   loopback through the shared HTTP/2 transport with 1 and 64 concurrent callers.
//!
//! - `compare`: our raw client and client-rust side by side against the simulated cluster.
//! - `compare_txn`: our transactions and client-rust's side by side.
//! - `raw`, `txn_buffer`: hot paths of the core.
//!
//! This library holds what the side-by-side benchmarks share ([`process`]).

#![forbid(unsafe_code)]

pub mod process;
