//! The TiKV and PD wire: schema, method table, framing, and the shared gRPC transport.
//!
//! - The protobuf schema lives in `schema/*.proto` (our own files, wire-identical to TiKV's
//!   kvproto for every message and field we use) and is compiled at build time with prost and
//!   the pure-Rust `protox` compiler; each protobuf package is a module here ([`kvrpcpb`],
//!   [`pdpb`], [`tikvpb`], ...). Bytes fields are [`bytes::Bytes`] so decoding never copies keys
//!   and values, and map fields are `BTreeMap` so iteration order is deterministic.
//! - Every service gets a generated method table: one typed [`method::Method`] constant per
//!   rpc (`tikvpb::tikv::KV_GET`), used by clients and servers alike.
//! - [`frame`] and [`status`] hold gRPC's message framing, status codes and header formats as
//!   pure functions; [`rpc`] holds the [`rpc::Channel`] seam every transport implements.
//! - With the `transport` feature, `transport` provides the one gRPC-over-HTTP/2 client channel
//!   and server (on h2), generic over the IO type and an executor, shared by every runtime and by
//!   the simulated cluster.

#![forbid(unsafe_code)]

pub mod codec;
pub mod frame;
pub mod method;
pub mod rpc;
pub mod status;
#[cfg(feature = "transport")]
pub mod transport;

#[allow(
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    clippy::all,
    clippy::pedantic,
    clippy::use_self,
    rustdoc::all
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/schema.rs"));
    include!(concat!(env!("OUT_DIR"), "/services.rs"));
}

pub use generated::*;

/// A client certificate chain and its private key, PEM-encoded (TLS configuration input).
pub type PemIdentity<'a> = (&'a [u8], &'a [u8]);
