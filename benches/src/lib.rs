//! Benchmarks of the TiKV client (run with `cargo bench -p tikv-benches`).
//!
//! - `transport`: gRPC framing of a full BatchCommands message, and unary round trips over
//!   loopback through the shared HTTP/2 transport with 1 and 64 concurrent callers.
//!
//! End-to-end client benchmarks against the simulated cluster, side by side with client-rust,
//! join as the client's features land.

#![forbid(unsafe_code)]
