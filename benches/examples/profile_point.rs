//! A point-operation load for profilers: connects to a running cluster (`PD` environment
//! variable, `host:port`), loads keys, then runs `OPS` gets (or puts with `MODE=put`) from
//! `CALLERS` concurrent callers and exits. Run it under `valgrind --tool=callgrind` or
//! `perf` to see where the client's CPU goes per operation; the cluster runs in its own
//! process (`tikv-sim --exit-on-stdin-eof`), so the profile holds the client alone.

use std::time::Instant;

use bytes::Bytes;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn key(index: u64) -> String {
    format!("key-{:06}", index % 10_000)
}

fn main() {
    let pd = std::env::var("PD").unwrap_or_else(|_| panic!("set PD to the cluster's PD address"));
    let callers = env_or("CALLERS", 64);
    let ops = env_or("OPS", 100_000);
    let put = std::env::var("MODE").is_ok_and(|mode| mode == "put");
    let workers = env_or("WORKERS", 2) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap_or_else(|err| panic!("{err}"));
    runtime.block_on(async move {
        let client = tikv_tokio::connect([pd], tikv_core::Config::default())
            .unwrap_or_else(|err| panic!("{err}"));
        let raw = client.raw();
        let pairs: Vec<(Bytes, Bytes)> = (0..10_000)
            .map(|i| (Bytes::from(key(i)), Bytes::from(vec![b'v'; 64])))
            .collect();
        raw.batch_put(pairs)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let started = Instant::now();
        let per_caller = ops / callers;
        let tasks: Vec<_> = (0..callers)
            .map(|caller| {
                let raw = raw.clone();
                tokio::spawn(async move {
                    let value = Bytes::from(vec![b'w'; 64]);
                    for op in 0..per_caller {
                        let key = key(caller * 131 + op * 7);
                        if put {
                            raw.put(key, value.clone())
                                .await
                                .unwrap_or_else(|err| panic!("{err}"));
                        } else {
                            let found = raw.get(key).await.unwrap_or_else(|err| panic!("{err}"));
                            assert!(found.is_some());
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap_or_else(|err| panic!("{err}"));
        }
        let elapsed = started.elapsed();
        println!(
            "{} ops in {elapsed:?}: {:.0} ops/s",
            per_caller * callers,
            (per_caller * callers) as f64 / elapsed.as_secs_f64()
        );
    });
}
