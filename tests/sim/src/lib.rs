//! A simulated TiKV + PD cluster for tests, served over real gRPC on loopback.
//!
//! This crate grows into the deterministic cluster machine of the design (PD, several stores,
//! MVCC, faults). Today it holds the serving layer every part will use: a tokio server that
//! hosts any [`tikv_proto::transport::server::Handler`] on a loopback port through
//! tikv-proto's shared HTTP/2 transport, and [`stub::StubPd`], a PD front that answers the
//! discovery and health calls a client makes first.

#![forbid(unsafe_code)]

pub mod cluster;
pub mod faults;
pub mod mvcc;
pub mod pd_service;
pub mod raw;
pub mod serve;
pub mod server;
pub mod sim;
pub mod stub;
pub mod tikv;

pub use server::SimServer;
pub use sim::{Sim, SimConfig};
