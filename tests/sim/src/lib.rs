//! A simulated TiKV + PD cluster for tests, served over real gRPC on loopback.
//!
//! [`Sim`] is the whole cluster as one deterministic value (PD and regions, MVCC and raw
//! storage, TiKV's lock manager, replicas' apply and read progress, faults). [`SimServer`] serves it on loopback ports through tikv-proto's shared
//! HTTP/2 transport, with PD's HTTP API and each store's status API on the same ports
//! ([`http`], [`serve`]); the `tikv-sim` binary runs one from the command line.
//! [`stub::StubPd`] is a PD front that answers only the discovery and health calls.

#![forbid(unsafe_code)]

pub mod admission;
pub mod cluster;
pub mod concurrency;
pub mod config;
pub mod faults;
pub mod http;
pub mod lock_manager;
pub mod mvcc;
pub mod pd_service;
pub mod raw;
pub mod replica;
pub mod serve;
pub mod server;
pub mod sim;
pub mod stub;
pub mod tikv;

pub use server::{SimServer, split_points};
pub use sim::{Sim, SimConfig};
