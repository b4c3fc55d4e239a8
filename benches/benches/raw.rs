//! End-to-end raw KV benchmarks against the simulated cluster on loopback.
//!
//! The cluster runs in this process on its own tokio runtime (two worker threads); the client
//! runs on another. Figures compare configurations in one run (see docs/performance.md); the
//! simulator's own cost is part of every number, identically for every client measured.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use tikv_core::Config;
use tikv_sim::{SimConfig, SimServer};

struct Fixture {
    _server_runtime: tokio::runtime::Runtime,
    _server: SimServer,
    client_runtime: tokio::runtime::Runtime,
    raw: tikv_core::RawClient,
}

fn fixture() -> Fixture {
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|err| panic!("{err}"));
    let server = server_runtime
        .block_on(SimServer::start(SimConfig::default()))
        .unwrap_or_else(|err| panic!("{err}"));
    server.with(|sim| {
        for key in ["key-0250", "key-0500", "key-0750"] {
            let _ = sim.cluster.split_at(key.as_bytes());
        }
    });
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|err| panic!("{err}"));
    let pd = server.pd_address().to_owned();
    let raw = client_runtime.block_on(async {
        let client =
            tikv_tokio::connect([pd], Config::default()).unwrap_or_else(|err| panic!("{err}"));
        let raw = client.raw();
        let pairs: Vec<(Bytes, Bytes)> = (0..1000)
            .map(|i| {
                (
                    Bytes::from(format!("key-{i:04}")),
                    Bytes::from(vec![b'v'; 64]),
                )
            })
            .collect();
        raw.batch_put(pairs)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        raw
    });
    Fixture {
        _server_runtime: server_runtime,
        _server: server,
        client_runtime,
        raw,
    }
}

fn raw_get_put(c: &mut Criterion) {
    let fixture = fixture();
    let raw = &fixture.raw;
    let mut group = c.benchmark_group("raw");
    for callers in [1usize, 64, 512] {
        group.throughput(Throughput::Elements(callers as u64));
        group.bench_with_input(BenchmarkId::new("get", callers), &callers, |b, &callers| {
            b.to_async(&fixture.client_runtime)
                .iter(|| join_all((0..callers).map(|i| raw.get(format!("key-{:04}", i % 1000)))));
        });
        group.bench_with_input(BenchmarkId::new("put", callers), &callers, |b, &callers| {
            b.to_async(&fixture.client_runtime).iter(|| {
                join_all((0..callers).map(|i| raw.put(format!("key-{:04}", i % 1000), "value")))
            });
        });
    }
    group.throughput(Throughput::Elements(100));
    group.bench_function("batch_get_100", |b| {
        let keys: Vec<Bytes> = (0..100)
            .map(|i| Bytes::from(format!("key-{:04}", i * 7)))
            .collect();
        b.to_async(&fixture.client_runtime)
            .iter(|| raw.batch_get(keys.clone()));
    });
    group.throughput(Throughput::Elements(1000));
    group.bench_function("scan_1000", |b| {
        b.to_async(&fixture.client_runtime)
            .iter(|| raw.scan("key-".."key-~", 1000));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = raw_get_put
}
criterion_main!(benches);
