//! `tikv-sim`: a simulated PD + TiKV cluster on loopback ports, for testing TiKV clients.
//!
//! ```text
//! cargo run -p tikv-sim -- --stores 3 --api-version 2 --split-keys a,b,c
//! cargo run -p tikv-sim -- --stores 3 --region-split-keys 10
//! cargo run -p tikv-sim -- --config cluster.toml
//! ```
//!
//! `--help` lists every flag and the TiKV / PD config key it stands for; the flags and the
//! config file are read by [`tikv_sim::config`].
//!
//! Prints `PD_ENDPOINTS=127.0.0.1:<port>` and one `STORE_<id>=127.0.0.1:<port>` line per
//! store, then serves until killed (or, with `--exit-on-stdin-eof`, until its standard input
//! closes, so that a harness holding the pipe takes the cluster down with it). PD's port
//! answers gRPC and PD's HTTP API; each store's port answers gRPC and its status API.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use tikv_sim::SimServer;
use tikv_sim::config::{Parsed, Settings, parse_args, usage};

fn main() -> ExitCode {
    let settings = match parse_args(std::env::args().skip(1)) {
        Ok(Parsed::Run(settings)) => settings,
        Ok(Parsed::Help) => {
            println!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("tikv-sim: {message}\n{}", usage());
            return ExitCode::from(2);
        }
    };
    for key in &settings.ignored {
        eprintln!("tikv-sim: ignoring config key {key} (not modelled)");
    }
    // Named apart from client runtimes' `tokio-rt-worker`, so a profile of a benchmark and
    // the simulator it started tells their threads apart.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_name("tikv-sim-worker")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("tikv-sim: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tikv-sim: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> std::io::Result<()> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let sim = settings.build(now_ms).map_err(std::io::Error::other)?;
    let server = SimServer::serve(sim).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "PD_ENDPOINTS={}", server.pd_addresses().join(","))?;
    for (id, address) in server.store_addresses() {
        writeln!(out, "STORE_{id}={address}")?;
    }
    out.flush()?;
    drop(out);
    if settings.exit_on_stdin_eof {
        // Blocking reads belong on a blocking thread; EOF (or an error) ends the run.
        let _ = tokio::task::spawn_blocking(|| {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        })
        .await;
    } else {
        std::future::pending::<()>().await;
    }
    drop(server);
    Ok(())
}
