//! The PRNG seed: drawn from the runtime's entropy unless fixed, so that clients with default
//! configs back off with different jitter while a fixed seed replays the same decisions.
//!
//! `Client::start` seeds its core with `Runtime::seed_config`; these tests take the
//! same step with each runtime, then drive a core from each config through the same faults in
//! virtual time and compare the backoff traces.

use std::time::Duration;

use bytes::Bytes;
use tikv_core::machine::testing::{Fault, RegionFault, Responder, run};
use tikv_core::machine::{Command, Core, RawCommand};
use tikv_core::{Config, Runtime, Time};
use tikv_tokio::{ConnectOptions, TokioRuntime};

/// The trace of one raw get whose first store requests meet ServerIsBusy: every retry waits
/// a jittered backoff, so the virtual times of the retries show the PRNG's draws.
fn busy_trace(config: Config) -> Vec<String> {
    let config = config.with_store_refresh_interval(Duration::ZERO);
    let mut core = Core::new(config, vec!["pd:2379".to_owned()], Time::ZERO)
        .unwrap_or_else(|err| panic!("{err}"));
    core.handle_command(
        Time::ZERO,
        Command::Raw(RawCommand::Get {
            key: Bytes::from_static(b"k"),
            cf: String::new(),
        }),
    );
    // PD requests answer normally under a region fault; the store requests get it.
    let faults = vec![Fault::Region(RegionFault::ServerIsBusy); 8];
    let outcome = run(
        &mut core,
        &mut Responder::default(),
        &faults,
        Time::ZERO,
        1_000,
    )
    .unwrap_or_else(|err| panic!("{err}"));
    let timeouts = outcome
        .trace
        .iter()
        .filter(|line| line.ends_with(" timeout"))
        .count();
    assert!(timeouts >= 3, "the get backed off: {:#?}", outcome.trace);
    outcome.trace
}

fn tokio_runtime() -> TokioRuntime {
    TokioRuntime::current(ConnectOptions::default()).unwrap_or_else(|err| panic!("{err}"))
}

fn async_std_runtime() -> tikv_async_std::AsyncStdRuntime {
    tikv_async_std::AsyncStdRuntime::new(ConnectOptions::default())
}

/// Each runtime's entropy differs from call to call and between the two runtimes (a repeat
/// among these 64-bit draws would take a 2^-64 coincidence).
#[tokio::test]
async fn runtime_entropy_differs_on_every_call() {
    let (tokio, async_std) = (tokio_runtime(), async_std_runtime());
    let draws = [
        tokio.entropy(),
        tokio.entropy(),
        tokio_runtime().entropy(),
        async_std.entropy(),
        async_std.entropy(),
        async_std_runtime().entropy(),
    ];
    let distinct: std::collections::BTreeSet<u64> = draws.iter().copied().collect();
    assert_eq!(distinct.len(), draws.len(), "{draws:x?}");
}

/// Two clients with default configs get different seeds from their runtime and so draw
/// different backoff jitter through the same faults.
#[tokio::test]
async fn default_configs_draw_different_jitter() {
    for (first, second) in [
        (
            tokio_runtime().seed_config(Config::default()),
            tokio_runtime().seed_config(Config::default()),
        ),
        (
            async_std_runtime().seed_config(Config::default()),
            async_std_runtime().seed_config(Config::default()),
        ),
    ] {
        assert!(first.rng_seed().is_some() && second.rng_seed().is_some());
        assert_ne!(first.rng_seed(), second.rng_seed());
        // Each of the several backoffs draws from a range 1 s wide in milliseconds: two
        // different seeds give equal traces with a chance far below 10^-9.
        assert_ne!(busy_trace(first), busy_trace(second));
    }
}

/// A fixed seed survives the runtime's draw, and the same seed replays the same trace.
#[tokio::test]
async fn a_fixed_seed_replays_the_same_trace() {
    let fixed = Config::default().with_rng_seed(7);
    let drawn = tokio_runtime().seed_config(fixed.clone());
    assert_eq!(drawn.rng_seed(), Some(7));
    let again = async_std_runtime().seed_config(fixed.clone());
    assert_eq!(again, drawn);
    let trace = busy_trace(drawn);
    assert_eq!(busy_trace(again), trace);
    // Another fixed seed is a different, equally replayable trace.
    let other = busy_trace(Config::default().with_rng_seed(8));
    assert_ne!(other, trace);
    assert_eq!(busy_trace(Config::default().with_rng_seed(8)), other);
}
