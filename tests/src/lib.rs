//! Shared code of the integration suites.
//!
//! - [`transport_suite`]: the gRPC transport conformance suite, written once and run under
//!   every runtime (see `tests/transport_tokio.rs` and `tests/transport_async_std.rs`).
//! - [`certs`]: throwaway TLS certificates for tests.

#![forbid(unsafe_code)]

pub mod certs;
pub mod simulation;
pub mod transport_suite;
