//! Transport benchmarks: framing cost and loopback unary round trips.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::sync::Arc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tikv_core::Runtime;
use tikv_proto::frame::{FrameDecoder, Framed};
use tikv_proto::rpc::{self, CallOptions};
use tikv_proto::transport::ConnectOptions;
use tikv_proto::transport::server::ServeOptions;
use tikv_proto::{kvrpcpb, tikvpb};
use tikv_tests::transport_suite::TestService;
use tikv_tokio::TokioRuntime;

fn batch_of_gets(n: u64) -> tikvpb::BatchCommandsRequest {
    use tikvpb::batch_commands_request::{Request, request::Cmd};
    tikvpb::BatchCommandsRequest {
        requests: (0..n)
            .map(|i| Request {
                cmd: Some(Cmd::RawGet(kvrpcpb::RawGetRequest {
                    context: Some(kvrpcpb::Context {
                        region_id: 2,
                        ..Default::default()
                    }),
                    key: Bytes::from(format!("key-{i:08}")),
                    ..Default::default()
                })),
            })
            .collect(),
        request_ids: (1..=n).collect(),
        ..Default::default()
    }
}

fn framing(c: &mut Criterion) {
    let batch = batch_of_gets(128);
    let framed = Framed::encode(&batch, usize::MAX).unwrap_or_else(|err| panic!("{err}"));
    let mut group = c.benchmark_group("framing");
    group.throughput(Throughput::Bytes(framed.as_bytes().len() as u64));
    group.bench_function("encode_batch_128", |b| {
        b.iter(|| Framed::encode(&batch, usize::MAX));
    });
    group.bench_function("decode_batch_128", |b| {
        b.iter(|| {
            let mut decoder = FrameDecoder::new(usize::MAX);
            decoder.push_bytes(framed.as_bytes().clone());
            decoder.next_message()
        });
    });
    group.finish();
}

fn unary_round_trip(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|err| panic!("{err}"));
    let (_server, channel) = runtime.block_on(async {
        let server =
            tikv_sim::serve::serve_loopback(Arc::new(TestService), ServeOptions::default())
                .await
                .unwrap_or_else(|err| panic!("{err}"));
        let client =
            TokioRuntime::current(ConnectOptions::default()).unwrap_or_else(|err| panic!("{err}"));
        let channel = client
            .connect(server.address())
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        (server, channel)
    });
    let request = kvrpcpb::RawGetRequest {
        key: Bytes::from_static(b"bench-key"),
        ..Default::default()
    };
    let mut group = c.benchmark_group("unary_raw_get");
    for callers in [1usize, 64] {
        group.throughput(Throughput::Elements(callers as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(callers),
            &callers,
            |b, &callers| {
                b.to_async(&runtime).iter(|| {
                    let calls = (0..callers).map(|_| {
                        rpc::call(
                            &channel,
                            tikvpb::tikv::RAW_GET,
                            &request,
                            CallOptions::default(),
                            usize::MAX,
                        )
                    });
                    futures_util::future::join_all(calls)
                });
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = framing, unary_round_trip
}
criterion_main!(benches);
