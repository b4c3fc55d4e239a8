//! `tikv-sim`: a simulated PD + TiKV cluster on loopback ports, for testing TiKV clients.
//!
//! ```text
//! cargo run -p tikv-sim -- --stores 3 --api-version 2 --split-keys a,b,c
//! ```
//!
//! Prints `PD_ENDPOINTS=127.0.0.1:<port>` and one `STORE_<id>=127.0.0.1:<port>` line per
//! store, then serves until killed (or, with `--exit-on-stdin-eof`, until its standard input
//! closes, so that a harness holding the pipe takes the cluster down with it). PD's port
//! answers gRPC and PD's HTTP API; each store's port answers gRPC and its status API.

use std::io::Write as _;
use std::process::ExitCode;

use tikv_proto::kvrpcpb::ApiVersion;
use tikv_sim::cluster::ClusterConfig;
use tikv_sim::{SimConfig, SimServer};

const USAGE: &str = "\
usage: tikv-sim [--stores N] [--replicas N] [--api-version 1|1ttl|2] [--split-keys K1,K2,...]
                [--exit-on-stdin-eof]

  --stores N            TiKV stores to start (default 3)
  --replicas N          peers per region, 1..=stores (default min(3, stores))
  --api-version V       the stores' storage.api-version: 1, 1ttl or 2 (default 1)
  --split-keys K,...    pre-split regions at these user keys (raw and txn forms)
  --exit-on-stdin-eof   stop when standard input closes
  -h, --help            print this help";

/// What the command line asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Options {
    stores: u32,
    replicas: Option<u32>,
    api_version: ApiVersion,
    split_keys: Vec<Vec<u8>>,
    exit_on_stdin_eof: bool,
}

/// What to do after parsing the arguments.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Run(Options),
    Help,
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Parsed::Run(options)) => options,
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("tikv-sim: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("tikv-sim: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tikv-sim: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> std::io::Result<()> {
    let config = SimConfig {
        cluster: ClusterConfig {
            store_count: options.stores,
            replica_count: options.replicas.unwrap_or(options.stores.min(3)),
            ..ClusterConfig::default()
        },
        api_version: options.api_version,
        ..SimConfig::default()
    };
    let server = SimServer::start_with_splits(config, &options.split_keys).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "PD_ENDPOINTS={}", server.pd_address())?;
    for (id, address) in server.store_addresses() {
        writeln!(out, "STORE_{id}={address}")?;
    }
    out.flush()?;
    drop(out);
    if options.exit_on_stdin_eof {
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

/// Parses the arguments after the program name.
///
/// Errors with a message for the user on anything unknown, missing or out of range.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut options = Options {
        stores: 3,
        replicas: None,
        api_version: ApiVersion::V1,
        split_keys: Vec::new(),
        exit_on_stdin_eof: false,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--stores" => options.stores = parse_count("--stores", &value("--stores")?)?,
            "--replicas" => {
                options.replicas = Some(parse_count("--replicas", &value("--replicas")?)?);
            }
            "--api-version" => {
                options.api_version = match value("--api-version")?.as_str() {
                    "1" | "v1" | "V1" => ApiVersion::V1,
                    "1ttl" | "v1ttl" | "V1TTL" => ApiVersion::V1ttl,
                    "2" | "v2" | "V2" => ApiVersion::V2,
                    other => return Err(format!("unknown --api-version {other:?}")),
                };
            }
            "--split-keys" => {
                options.split_keys = value("--split-keys")?
                    .split(',')
                    .filter(|key| !key.is_empty())
                    .map(|key| key.as_bytes().to_vec())
                    .collect();
            }
            "--exit-on-stdin-eof" if inline.is_none() => options.exit_on_stdin_eof = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if let Some(replicas) = options.replicas {
        if replicas > options.stores {
            return Err(format!(
                "--replicas {replicas} exceeds --stores {}",
                options.stores
            ));
        }
    }
    Ok(Parsed::Run(options))
}

fn parse_count(name: &str, text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if (1..=64).contains(&n) => Ok(n),
        _ => Err(format!(
            "{name} must be a number from 1 to 64, got {text:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn defaults() {
        let Ok(Parsed::Run(options)) = parse(&[]) else {
            panic!("no options must run");
        };
        assert_eq!(options.stores, 3);
        assert_eq!(options.replicas, None);
        assert_eq!(options.api_version, ApiVersion::V1);
        assert!(options.split_keys.is_empty());
        assert!(!options.exit_on_stdin_eof);
    }

    #[test]
    fn all_flags() {
        let parsed = parse(&[
            "--stores",
            "5",
            "--replicas=2",
            "--api-version",
            "1ttl",
            "--split-keys=a,,bc",
            "--exit-on-stdin-eof",
        ]);
        assert_eq!(
            parsed,
            Ok(Parsed::Run(Options {
                stores: 5,
                replicas: Some(2),
                api_version: ApiVersion::V1ttl,
                split_keys: vec![b"a".to_vec(), b"bc".to_vec()],
                exit_on_stdin_eof: true,
            }))
        );
        assert_eq!(parse(&["--api-version", "2", "-h"]), Ok(Parsed::Help));
    }

    #[test]
    fn bad_arguments_are_errors() {
        for args in [
            &["--stores"][..],
            &["--stores", "0"],
            &["--stores", "x"],
            &["--stores", "65"],
            &["--api-version", "3"],
            &["--replicas", "4"],
            &["--stores", "2", "--replicas", "3"],
            &["--bogus"],
            &["stray"],
            &["--exit-on-stdin-eof=1"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }
}
