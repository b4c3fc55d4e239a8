//! Shared code of the integration suites.
//!
//! - [`transport_suite`]: the gRPC transport conformance suite, written once and run under
//!   every runtime (see `tests/transport_tokio.rs` and `tests/transport_async_std.rs`).
//! - [`rawkv_suite`]: client-go's raw KV tests and end-to-end raw KV checks, run under
//!   every runtime (see `tests/rawkv_tokio.rs` and `tests/rawkv_async_std.rs`).
//! - [`pd_suite`]: the client against PD as a group (leader failover, broken Tso streams,
//!   idle PD connections), run under every runtime (see `tests/pd_tokio.rs` and
//!   `tests/pd_async_std.rs`).
//! - [`snapshot_suite`]: client-go's snapshot, scan and lock-resolution tests and the lock
//!   resolver's paths, run under every runtime (see `tests/snapshot_tokio.rs` and
//!   `tests/snapshot_async_std.rs`).
//! - [`txn_fixture`]: places committed data and locks in a simulated cluster directly, as
//!   client-go's committer would leave them.
//! - [`txn_suite`]: client-go's transaction tests of the write side (2PC, 1PC, async
//!   commit, their failures, isolation, commit options), run under every runtime (see
//!   `tests/txn_tokio.rs` and `tests/txn_async_std.rs`).
//! - [`certs`]: throwaway TLS certificates for tests.
//! - [`client_go`]: building and reading the client-go harness (`benches/client-go`), used
//!   by `tests/client_go.rs` and the `compare` bench.
//! - [`simulation`]: the real client on a simulated runtime (a seeded executor with virtual
//!   time whose channels reach the simulated cluster in-process), with a raw workload under
//!   chaos and a history checker.

#![forbid(unsafe_code)]

pub mod certs;
pub mod client_go;
pub mod pd_suite;
pub mod rawkv_suite;
pub mod simulation;
pub mod snapshot_suite;
pub mod transport_suite;
pub mod txn_fixture;
pub mod txn_suite;

/// The user guide's examples, compiled (and the runnable ones run) as doc tests so that the
/// guide cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide.md")]
pub struct GuideExamples;
