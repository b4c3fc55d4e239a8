//! The `tikv-sim` binary's settings: command-line flags and TOML config files.
//!
//! A config file uses TiKV's and PD's own section and key names for what tikv-sim models
//! (`[coprocessor] region-split-keys`, `[pessimistic-txn] wait-for-lock-timeout`,
//! `[replication] max-replicas`, ...), so that the settings of a real test cluster carry
//! over; what has no TiKV or PD key lives under `[sim]`. Sizes and durations are written as
//! TiKV writes them (`"96MiB"`, `"500ms"`). Keys of other TiKV or PD sections are not an
//! error: they are collected in [`Settings::ignored`] (the binary prints them) so that a real
//! `tikv.toml` or `pd.toml` can be passed as it is. Flags override files, whatever their order
//! on the command line; later files override earlier ones.
//!
//! [`parse_args`] turns the arguments into [`Settings`]; [`Settings::build`] makes the
//! [`Sim`] they describe.

use std::collections::BTreeMap;

use tikv_proto::kvrpcpb::ApiVersion;

use crate::cluster::{
    ClusterConfig, ClusterError, KeyspaceOptions, SplitPolicy, SplitPolicyError, SplitSettings,
    is_valid_keyspace_name, is_valid_label_key, is_valid_label_value,
};
use crate::lock_manager::{DEFAULT_WAIT_FOR_LOCK_TIMEOUT_MS, PessimisticTxnConfig};
use crate::replica::{ApplyLag, DEFAULT_ADVANCE_TS_INTERVAL_MS, ReplicaConfig};
use crate::server::split_points;
use crate::sim::{Sim, SimConfig};

/// Most stores (and PD members) a command line may ask for.
const MAX_COUNT: u32 = 64;

/// Why the arguments or a config file cannot describe a cluster.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An argument the binary does not know (or a value given to a flag that takes none).
    #[error("unknown argument {0:?}")]
    UnknownArgument(String),
    /// A flag that needs a value came last.
    #[error("{0} needs a value")]
    MissingValue(String),
    /// A flag or config key has a value it cannot take.
    #[error("{name}: {reason}")]
    InvalidValue {
        /// The flag (`--stores`) or config key (`coprocessor.region-split-keys`).
        name: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// A config file cannot be read.
    #[error("cannot read config file {path}: {reason}")]
    Read {
        /// The file named by `--config`.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// A config file is not valid TOML.
    #[error("config file {path} is not valid TOML: {reason}")]
    Parse {
        /// The file named by `--config`.
        path: String,
        /// The parser's message (with line and column).
        reason: String,
    },
    /// The settings contradict each other (more replicas than stores, API V2 without TTL...).
    #[error("{0}")]
    Inconsistent(String),
    /// The split settings break TiKV's rules.
    #[error("coprocessor: {0}")]
    Split(#[from] SplitPolicyError),
}

/// What the command line asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Start a cluster with these settings.
    Run(Settings),
    /// Print [`usage`] and exit.
    Help,
}

/// Everything the binary needs to start a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The cluster's configuration.
    pub sim: SimConfig,
    /// User keys to pre-split the regions at (see [`split_points`]).
    pub split_keys: Vec<Vec<u8>>,
    /// Keyspaces to create at startup, in order (PD's `keyspace.pre-alloc`).
    pub keyspaces: Vec<String>,
    /// The created keyspaces run keyspace-level GC instead of following the cluster's.
    pub keyspace_level_gc: bool,
    /// Stop when standard input closes.
    pub exit_on_stdin_eof: bool,
    /// Config file keys tikv-sim does not model (`raftstore.pd-heartbeat-tick-interval`...),
    /// left alone.
    pub ignored: Vec<String>,
}

impl Settings {
    /// Builds the cluster: the simulated cluster of [`Settings::sim`] with automatic splits
    /// on (as TiKV always runs its split checker), pre-split at [`Settings::split_keys`],
    /// with [`Settings::keyspaces`] created at `now_ms` (an existing name, such as
    /// `DEFAULT`, is skipped as PD skips it).
    ///
    /// Errors when the cluster configuration is impossible or a keyspace cannot be created.
    pub fn build(&self, now_ms: u64) -> Result<Sim, ClusterError> {
        let mut sim = Sim::new(self.sim.clone())?;
        sim.set_auto_split(true);
        let options = KeyspaceOptions {
            keyspace_level_gc: self.keyspace_level_gc,
        };
        for name in &self.keyspaces {
            let exists = name == crate::cluster::DEFAULT_KEYSPACE_NAME
                || (1..)
                    .map_while(|id| sim.cluster.keyspace(id))
                    .any(|meta| meta.name == *name);
            if !exists {
                sim.cluster.create_keyspace(name, &options, now_ms)?;
            }
        }
        let points = split_points(sim.api_version(), &self.split_keys);
        sim.cluster.split_keys(&points)?;
        Ok(sim)
    }
}

/// A command-line flag: its name, what value it takes (empty for none), the config key it
/// stands for, and what it does.
struct Flag {
    name: &'static str,
    value: &'static str,
    key: &'static str,
    help: &'static str,
}

/// Every flag, in the order `--help` lists them.
const FLAGS: &[Flag] = &[
    Flag {
        name: "--config",
        value: "FILE",
        key: "",
        help: "TOML settings (repeatable; flags win over files)",
    },
    Flag {
        name: "--stores",
        value: "N",
        key: "sim.stores",
        help: "TiKV stores to start (default 3)",
    },
    Flag {
        name: "--replicas",
        value: "N",
        key: "replication.max-replicas",
        help: "voters per region, 1..=stores (default min(3, stores))",
    },
    Flag {
        name: "--learners",
        value: "N",
        key: "sim.learners",
        help: "learners per region, on the stores after the voters",
    },
    Flag {
        name: "--api-version",
        value: "1|1ttl|2",
        key: "storage.api-version",
        help: "API version; 1ttl = 1 with storage.enable-ttl (default 1)",
    },
    Flag {
        name: "--region-split-keys",
        value: "N",
        key: "coprocessor.region-split-keys",
        help: "pieces of N committed versions (default 2560000)",
    },
    Flag {
        name: "--region-max-keys",
        value: "N",
        key: "coprocessor.region-max-keys",
        help: "split from N versions on (default split keys / 2 * 3)",
    },
    Flag {
        name: "--region-split-size",
        value: "SIZE",
        key: "coprocessor.region-split-size",
        help: "pieces of SIZE, e.g. 1MiB (default 256MiB)",
    },
    Flag {
        name: "--region-max-size",
        value: "SIZE",
        key: "coprocessor.region-max-size",
        help: "split from SIZE on (default split size / 2 * 3)",
    },
    Flag {
        name: "--batch-split-limit",
        value: "N",
        key: "coprocessor.batch-split-limit",
        help: "at most N cuts per split check (default 10)",
    },
    Flag {
        name: "--region-split-check-diff",
        value: "SIZE",
        key: "raftstore.region-split-check-diff",
        help: "bytes written between checks (default split size / 16)",
    },
    Flag {
        name: "--wait-for-lock-timeout",
        value: "DURATION",
        key: "pessimistic-txn.wait-for-lock-timeout",
        help: "longest wait for a lock, e.g. 500ms (default 1s)",
    },
    Flag {
        name: "--labels",
        value: "K=V,...",
        key: "server.labels",
        help: "labels of every store, e.g. zone=z1,host=h1",
    },
    Flag {
        name: "--store-labels",
        value: "K=V,...;...",
        key: "sim.store-labels",
        help: "labels per store, ';' between stores (win over --labels)",
    },
    Flag {
        name: "--location-labels",
        value: "K,...",
        key: "replication.location-labels",
        help: "failure-domain label keys, outermost first (zone,host)",
    },
    Flag {
        name: "--apply-lag",
        value: "DURATION",
        key: "sim.apply-lag",
        help: "followers and learners apply entries this late (default 0ms)",
    },
    Flag {
        name: "--apply-lag-entries",
        value: "N",
        key: "sim.apply-lag-entries",
        help: "followers and learners stay N entries behind (default 0)",
    },
    Flag {
        name: "--advance-ts-interval",
        value: "DURATION",
        key: "resolved-ts.advance-ts-interval",
        help: "how often leaders advance resolved ts (default 20s)",
    },
    Flag {
        name: "--pd-members",
        value: "N",
        key: "sim.pd-members",
        help: "PD members, the first one leading (default 1)",
    },
    Flag {
        name: "--keyspaces",
        value: "NAME,...",
        key: "keyspace.pre-alloc",
        help: "keyspaces to create; their bounds become region bounds",
    },
    Flag {
        name: "--keyspace-level-gc",
        value: "",
        key: "sim.keyspace-level-gc",
        help: "created keyspaces run keyspace-level GC",
    },
    Flag {
        name: "--legacy-gc",
        value: "",
        key: "sim.legacy-gc",
        help: "UpdateGCSafePoint takes any increase (PD before GC barriers)",
    },
    Flag {
        name: "--split-keys",
        value: "K,...",
        key: "sim.split-keys",
        help: "pre-split regions at these user keys (raw and txn forms)",
    },
    Flag {
        name: "--exit-on-stdin-eof",
        value: "",
        key: "",
        help: "stop when standard input closes",
    },
    Flag {
        name: "--help",
        value: "",
        key: "",
        help: "print this help (also -h)",
    },
];

/// The `--help` text: every flag with its value, the config key it stands for and what it
/// does, then an outline of the config file.
pub fn usage() -> String {
    let mut text = String::from(
        "usage: tikv-sim [--config FILE]... [FLAGS]\n\n\
         A simulated PD + TiKV cluster on loopback ports. Prints PD_ENDPOINTS=host:port and\n\
         STORE_<id>=host:port, then serves until killed.\n\n",
    );
    for flag in FLAGS {
        let head = if flag.value.is_empty() {
            flag.name.to_owned()
        } else {
            format!("{} {}", flag.name, flag.value)
        };
        text.push_str(&format!("  {head:<34}{}\n", flag.help));
        if !flag.key.is_empty() {
            text.push_str(&format!("  {:<34}[config: {}]\n", "", flag.key));
        }
    }
    text.push_str(
        "\nConfig files use TiKV's and PD's section and key names ([coprocessor],\n\
         [raftstore], [pessimistic-txn], [storage], [server], [resolved-ts], [replication],\n\
         [keyspace]) and [sim] for the rest; keys tikv-sim does not model are listed and\n\
         ignored.",
    );
    text
}

/// The settings as read so far, each one unset until a file or flag gives it.
#[derive(Clone, Debug, Default)]
struct Options {
    stores: Option<u32>,
    replicas: Option<u32>,
    learners: Option<u32>,
    api_version: Option<i64>,
    enable_ttl: Option<bool>,
    split: SplitSettings,
    wait_for_lock_timeout_ms: Option<u64>,
    labels: Option<Vec<(String, String)>>,
    store_labels: Option<Vec<Vec<(String, String)>>>,
    location_labels: Option<Vec<String>>,
    apply_lag_ms: Option<u64>,
    apply_lag_entries: Option<u64>,
    advance_ts_interval_ms: Option<u64>,
    pd_members: Option<u32>,
    keyspaces: Option<Vec<String>>,
    keyspace_level_gc: Option<bool>,
    legacy_gc: Option<bool>,
    split_keys: Option<Vec<Vec<u8>>>,
    exit_on_stdin_eof: bool,
    ignored: Vec<String>,
}

/// Parses the arguments after the program name, reading the `--config` files they name.
///
/// Errors on an unknown flag, a missing or bad value, an unreadable or malformed file, or
/// settings that contradict each other.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Parsed, ConfigError> {
    let mut flags: Vec<(&'static Flag, Option<String>)> = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name.to_owned(), Some(value)),
            _ => (arg.clone(), None),
        };
        let name = if name == "-h" { "--help" } else { &name };
        let Some(flag) = FLAGS.iter().find(|flag| flag.name == name) else {
            return Err(ConfigError::UnknownArgument(arg));
        };
        if flag.name == "--help" {
            return Ok(Parsed::Help);
        }
        let value = if flag.value.is_empty() {
            if inline.is_some() {
                return Err(ConfigError::UnknownArgument(arg));
            }
            None
        } else {
            match inline.map(str::to_owned).or_else(|| args.next()) {
                Some(value) => Some(value),
                None => return Err(ConfigError::MissingValue(flag.name.to_owned())),
            }
        };
        flags.push((flag, value));
    }
    let mut options = Options::default();
    for (flag, value) in &flags {
        if let ("--config", Some(path)) = (flag.name, value) {
            let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
                path: path.clone(),
                reason: err.to_string(),
            })?;
            apply_toml(&mut options, &text, path)?;
        }
    }
    for (flag, value) in &flags {
        apply_flag(&mut options, flag.name, value.as_deref().unwrap_or(""))?;
    }
    finish(options).map(Parsed::Run)
}

/// Parses one config file's text into settings (without flags), as `--config` would.
///
/// Errors as [`parse_args`] does for a file.
pub fn parse_toml(text: &str) -> Result<Settings, ConfigError> {
    let mut options = Options::default();
    apply_toml(&mut options, text, "<text>")?;
    finish(options)
}

fn invalid(name: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

fn apply_flag(options: &mut Options, name: &str, value: &str) -> Result<(), ConfigError> {
    match name {
        "--config" => {}
        "--stores" => options.stores = Some(parse_count(name, value)?),
        "--replicas" => options.replicas = Some(parse_count(name, value)?),
        "--learners" => {
            options.learners = Some(
                value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n <= MAX_COUNT)
                    .ok_or_else(|| {
                        invalid(name, format!("expected 0 to {MAX_COUNT}, got {value:?}"))
                    })?,
            );
        }
        "--api-version" => {
            let (version, ttl) = match value {
                "1" | "v1" | "V1" => (1, false),
                "1ttl" | "v1ttl" | "V1TTL" => (1, true),
                "2" | "v2" | "V2" => (2, true),
                other => {
                    return Err(invalid(
                        name,
                        format!("expected 1, 1ttl or 2, got {other:?}"),
                    ));
                }
            };
            options.api_version = Some(version);
            options.enable_ttl = Some(ttl);
        }
        "--region-split-keys" => options.split.region_split_keys = Some(parse_u64(name, value)?),
        "--region-max-keys" => options.split.region_max_keys = Some(parse_u64(name, value)?),
        "--region-split-size" => options.split.region_split_size = Some(parse_size(name, value)?),
        "--region-max-size" => options.split.region_max_size = Some(parse_size(name, value)?),
        "--batch-split-limit" => options.split.batch_split_limit = Some(parse_u64(name, value)?),
        "--region-split-check-diff" => {
            options.split.region_split_check_diff = Some(parse_size(name, value)?);
        }
        "--wait-for-lock-timeout" => {
            options.wait_for_lock_timeout_ms = Some(parse_duration_ms(name, value)?);
        }
        "--labels" => options.labels = Some(parse_labels(name, value)?),
        "--store-labels" => {
            options.store_labels = Some(
                value
                    .split(';')
                    .map(|one| parse_labels(name, one))
                    .collect::<Result<_, _>>()?,
            );
        }
        "--location-labels" => options.location_labels = Some(split_list(value)),
        "--apply-lag" => options.apply_lag_ms = Some(parse_duration_ms(name, value)?),
        "--apply-lag-entries" => options.apply_lag_entries = Some(parse_u64(name, value)?),
        "--advance-ts-interval" => {
            options.advance_ts_interval_ms = Some(parse_duration_ms(name, value)?);
        }
        "--pd-members" => options.pd_members = Some(parse_count(name, value)?),
        "--keyspaces" => options.keyspaces = Some(split_list(value)),
        "--keyspace-level-gc" => options.keyspace_level_gc = Some(true),
        "--legacy-gc" => options.legacy_gc = Some(true),
        "--split-keys" => {
            options.split_keys = Some(
                split_list(value)
                    .into_iter()
                    .map(String::into_bytes)
                    .collect(),
            );
        }
        "--exit-on-stdin-eof" => options.exit_on_stdin_eof = true,
        other => return Err(ConfigError::UnknownArgument(other.to_owned())),
    }
    Ok(())
}

/// Non-empty items of a comma-separated list.
fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `k=v,k=v` (possibly empty) as label pairs.
fn parse_labels(name: &str, value: &str) -> Result<Vec<(String, String)>, ConfigError> {
    split_list(value)
        .into_iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) => Ok((key.trim().to_owned(), value.trim().to_owned())),
            None => Err(invalid(name, format!("expected key=value, got {pair:?}"))),
        })
        .collect()
}

fn parse_count(name: &str, text: &str) -> Result<u32, ConfigError> {
    match text.parse::<u32>() {
        Ok(n) if (1..=MAX_COUNT).contains(&n) => Ok(n),
        _ => Err(invalid(
            name,
            format!("expected a number from 1 to {MAX_COUNT}, got {text:?}"),
        )),
    }
}

fn parse_u64(name: &str, text: &str) -> Result<u64, ConfigError> {
    text.parse::<u64>().map_err(|_| {
        invalid(
            name,
            format!("expected a non-negative integer, got {text:?}"),
        )
    })
}

fn parse_size(name: &str, text: &str) -> Result<u64, ConfigError> {
    readable_size(text).map_err(|reason| invalid(name, reason))
}

fn parse_duration_ms(name: &str, text: &str) -> Result<u64, ConfigError> {
    readable_duration_ms(text).map_err(|reason| invalid(name, reason))
}

/// A size as TiKV's `ReadableSize` reads it: a number (fractions allowed) and a binary unit
/// (`B`, `K`/`KB`/`KiB`, `M`/`MB`/`MiB`, `G`..., `T`..., `P`...; `MB` means MiB as in TiKV),
/// or plain digits for bytes.
///
/// Errors with a message on anything else.
pub fn readable_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "" | "B" => {
            if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) {
                return number
                    .parse::<u64>()
                    .map_err(|_| format!("invalid size {text:?}"));
            }
            1
        }
        "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        "T" | "TB" | "TiB" => 1 << 40,
        "P" | "PB" | "PiB" => 1 << 50,
        _ => {
            return Err(format!(
                "unknown size unit in {text:?} (B, KiB, MiB, GiB, TiB, PiB)"
            ));
        }
    };
    match number.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => Ok((n * multiplier as f64) as u64),
        _ => Err(format!("invalid size {text:?}")),
    }
}

/// A duration as TiKV's `ReadableDuration` reads it, in milliseconds: numbers (fractions
/// allowed) each followed by a unit, units in decreasing order (`d`, `h`, `m`, `s`, `ms`,
/// `us`), e.g. `1s`, `500ms`, `1m30s`.
///
/// Errors with a message on anything else, including a bare number.
pub fn readable_duration_ms(text: &str) -> Result<u64, String> {
    const UNITS: [(&str, f64); 6] = [
        ("ms", 1.0),
        ("us", 0.001),
        ("d", 86_400_000.0),
        ("h", 3_600_000.0),
        ("m", 60_000.0),
        ("s", 1_000.0),
    ];
    let bad = || format!("invalid duration {text:?} (e.g. 1s, 500ms; units d, h, m, s, ms, us)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0.0;
    // Units must come in decreasing order, each at most once.
    let mut last_scale = f64::INFINITY;
    while !rest.is_empty() {
        let at = rest
            .find(|c: char| c.is_ascii_alphabetic())
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(at);
        let (unit, scale) = UNITS
            .iter()
            .find(|(unit, _)| tail.starts_with(unit))
            .copied()
            .ok_or_else(bad)?;
        if scale >= last_scale {
            return Err(bad());
        }
        let value: f64 = number.trim().parse().map_err(|_| bad())?;
        if !value.is_finite() || value < 0.0 {
            return Err(bad());
        }
        total += value * scale;
        last_scale = scale;
        rest = &tail[unit.len()..];
    }
    Ok(total as u64)
}

/// Applies one config file's text.
fn apply_toml(options: &mut Options, text: &str, path: &str) -> Result<(), ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|err: toml::de::Error| ConfigError::Parse {
            path: path.to_owned(),
            reason: err.to_string(),
        })?;
    for (section, value) in &table {
        let toml::Value::Table(entries) = value else {
            options.ignored.push(section.clone());
            continue;
        };
        for (key, value) in entries {
            let name = format!("{section}.{key}");
            if !apply_key(options, &name, value)? {
                if section == "sim" {
                    return Err(invalid(&name, "not a tikv-sim setting"));
                }
                options.ignored.push(name);
            }
        }
    }
    Ok(())
}

/// Applies one config key; returns false when tikv-sim does not model it.
fn apply_key(options: &mut Options, name: &str, value: &toml::Value) -> Result<bool, ConfigError> {
    match name {
        "sim.stores" => options.stores = Some(toml_count(name, value, 1)?),
        "sim.learners" => options.learners = Some(toml_count(name, value, 0)?),
        "sim.pd-members" => options.pd_members = Some(toml_count(name, value, 1)?),
        "sim.store-labels" => {
            let toml::Value::Array(stores) = value else {
                return Err(invalid(name, "expected an array of tables, one per store"));
            };
            options.store_labels = Some(
                stores
                    .iter()
                    .map(|labels| toml_labels(name, labels))
                    .collect::<Result<_, _>>()?,
            );
        }
        "sim.keyspace-level-gc" => options.keyspace_level_gc = Some(toml_bool(name, value)?),
        "sim.apply-lag" => options.apply_lag_ms = Some(toml_duration_ms(name, value)?),
        "sim.apply-lag-entries" => options.apply_lag_entries = Some(toml_u64(name, value)?),
        "resolved-ts.advance-ts-interval" => {
            options.advance_ts_interval_ms = Some(toml_duration_ms(name, value)?);
        }
        "sim.legacy-gc" => options.legacy_gc = Some(toml_bool(name, value)?),
        "sim.split-keys" => {
            options.split_keys = Some(
                toml_strings(name, value)?
                    .into_iter()
                    .map(String::into_bytes)
                    .collect(),
            );
        }
        "replication.max-replicas" => options.replicas = Some(toml_count(name, value, 1)?),
        "replication.location-labels" => {
            options.location_labels = Some(toml_strings(name, value)?);
        }
        "storage.api-version" => options.api_version = Some(toml_int(name, value)?),
        "storage.enable-ttl" => options.enable_ttl = Some(toml_bool(name, value)?),
        "coprocessor.region-split-keys" => {
            options.split.region_split_keys = Some(toml_u64(name, value)?);
        }
        "coprocessor.region-max-keys" => {
            options.split.region_max_keys = Some(toml_u64(name, value)?);
        }
        "coprocessor.region-split-size" => {
            options.split.region_split_size = Some(toml_size(name, value)?);
        }
        "coprocessor.region-max-size" => {
            options.split.region_max_size = Some(toml_size(name, value)?);
        }
        "coprocessor.batch-split-limit" => {
            options.split.batch_split_limit = Some(toml_u64(name, value)?);
        }
        "raftstore.region-split-check-diff" => {
            options.split.region_split_check_diff = Some(toml_size(name, value)?);
        }
        "pessimistic-txn.wait-for-lock-timeout" => {
            options.wait_for_lock_timeout_ms = Some(toml_duration_ms(name, value)?);
        }
        "server.labels" => options.labels = Some(toml_labels(name, value)?),
        "keyspace.pre-alloc" => options.keyspaces = Some(toml_strings(name, value)?),
        _ => return Ok(false),
    }
    Ok(true)
}

fn toml_int(name: &str, value: &toml::Value) -> Result<i64, ConfigError> {
    match value {
        toml::Value::Integer(n) => Ok(*n),
        other => Err(invalid(
            name,
            format!("expected an integer, got {}", other.type_str()),
        )),
    }
}

fn toml_u64(name: &str, value: &toml::Value) -> Result<u64, ConfigError> {
    let n = toml_int(name, value)?;
    u64::try_from(n).map_err(|_| invalid(name, format!("expected a non-negative integer, got {n}")))
}

fn toml_count(name: &str, value: &toml::Value, min: u32) -> Result<u32, ConfigError> {
    let n = toml_int(name, value)?;
    u32::try_from(n)
        .ok()
        .filter(|n| (min..=MAX_COUNT).contains(n))
        .ok_or_else(|| invalid(name, format!("expected {min} to {MAX_COUNT}, got {n}")))
}

/// A duration: a `ReadableDuration` string, as TiKV writes them.
fn toml_duration_ms(name: &str, value: &toml::Value) -> Result<u64, ConfigError> {
    let toml::Value::String(text) = value else {
        return Err(invalid(name, "expected a duration string such as \"1s\""));
    };
    parse_duration_ms(name, text)
}

fn toml_bool(name: &str, value: &toml::Value) -> Result<bool, ConfigError> {
    match value {
        toml::Value::Boolean(b) => Ok(*b),
        other => Err(invalid(
            name,
            format!("expected true or false, got {}", other.type_str()),
        )),
    }
}

/// A size: an integer (bytes) or a `ReadableSize` string, as TiKV accepts both.
fn toml_size(name: &str, value: &toml::Value) -> Result<u64, ConfigError> {
    match value {
        toml::Value::String(text) => parse_size(name, text),
        toml::Value::Integer(_) => toml_u64(name, value),
        other => Err(invalid(
            name,
            format!(
                "expected a size such as \"96MiB\", got {}",
                other.type_str()
            ),
        )),
    }
}

/// A list of strings: a TOML array, or one comma-separated string (as PD also takes).
fn toml_strings(name: &str, value: &toml::Value) -> Result<Vec<String>, ConfigError> {
    match value {
        toml::Value::String(text) => Ok(split_list(text)),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                toml::Value::String(text) => Ok(text.clone()),
                other => Err(invalid(
                    name,
                    format!("expected strings, got {}", other.type_str()),
                )),
            })
            .collect(),
        other => Err(invalid(
            name,
            format!("expected an array of strings, got {}", other.type_str()),
        )),
    }
}

/// Labels as TiKV's `server.labels` takes them: a table of string values.
fn toml_labels(name: &str, value: &toml::Value) -> Result<Vec<(String, String)>, ConfigError> {
    let toml::Value::Table(labels) = value else {
        return Err(invalid(name, "expected a table such as { zone = \"z1\" }"));
    };
    labels
        .iter()
        .map(|(key, value)| match value {
            toml::Value::String(text) => Ok((key.clone(), text.clone())),
            other => Err(invalid(
                name,
                format!("label {key} must be a string, got {}", other.type_str()),
            )),
        })
        .collect()
}

/// Resolves defaults and checks the settings against each other.
fn finish(options: Options) -> Result<Settings, ConfigError> {
    let stores = options.stores.unwrap_or(3);
    let replicas = options.replicas.unwrap_or(stores.min(3));
    let learners = options.learners.unwrap_or(0);
    if replicas > stores {
        return Err(ConfigError::Inconsistent(format!(
            "{replicas} replicas need at least as many stores, got {stores}"
        )));
    }
    if replicas + learners > stores {
        return Err(ConfigError::Inconsistent(format!(
            "{replicas} replicas and {learners} learners need {} stores, got {stores}",
            replicas + learners
        )));
    }
    // TiKV's storage config: version 1 or 2, and API V2 always has TTL on.
    let api_version = match (
        options.api_version.unwrap_or(1),
        options.enable_ttl.unwrap_or(false),
    ) {
        (1, false) => ApiVersion::V1,
        (1, true) => ApiVersion::V1ttl,
        (2, true) => ApiVersion::V2,
        (2, false) => {
            return Err(ConfigError::Inconsistent(
                "storage.enable-ttl must be true in API V2 (API V2 forces TTL on)".to_owned(),
            ));
        }
        (other, _) => {
            return Err(invalid(
                "storage.api-version",
                format!("can only be 1 or 2, got {other}"),
            ));
        }
    };
    let split_policy = SplitPolicy::from_settings(&options.split)?;
    let wait_ms = options
        .wait_for_lock_timeout_ms
        .unwrap_or(DEFAULT_WAIT_FOR_LOCK_TIMEOUT_MS);
    if wait_ms == 0 {
        return Err(invalid(
            "pessimistic-txn.wait-for-lock-timeout",
            "must be greater than 0",
        ));
    }
    let shared_labels = options.labels.unwrap_or_default();
    let per_store = options.store_labels.unwrap_or_default();
    if per_store.len() > stores as usize {
        return Err(ConfigError::Inconsistent(format!(
            "labels for {} stores, but only {stores} stores",
            per_store.len()
        )));
    }
    let store_labels: Vec<Vec<(String, String)>> = if shared_labels.is_empty()
        && per_store.is_empty()
    {
        Vec::new()
    } else {
        (0..stores as usize)
            .map(|index| {
                // Per-store labels win over the shared ones, key by key; sorted by key.
                let mut merged: BTreeMap<String, String> = shared_labels.iter().cloned().collect();
                if let Some(own) = per_store.get(index) {
                    merged.extend(own.iter().cloned());
                }
                merged.into_iter().collect()
            })
            .collect()
    };
    for (key, value) in store_labels.iter().flatten() {
        if !is_valid_label_key(key) || !is_valid_label_value(value) {
            return Err(invalid(
                "server.labels",
                format!("{key:?}={value:?} does not match TiKV's label patterns"),
            ));
        }
    }
    let location_labels = options.location_labels.unwrap_or_default();
    if let Some(key) = location_labels.iter().find(|key| !is_valid_label_key(key)) {
        return Err(invalid(
            "replication.location-labels",
            format!("{key:?} is not a valid label key"),
        ));
    }
    let advance_ts_interval_ms = options
        .advance_ts_interval_ms
        .unwrap_or(DEFAULT_ADVANCE_TS_INTERVAL_MS);
    if advance_ts_interval_ms == 0 {
        return Err(invalid("resolved-ts.advance-ts-interval", "can't be zero"));
    }
    let keyspaces = options.keyspaces.unwrap_or_default();
    if let Some(name) = keyspaces.iter().find(|name| {
        *name != crate::cluster::DEFAULT_KEYSPACE_NAME && !is_valid_keyspace_name(name)
    }) {
        return Err(invalid(
            "keyspace.pre-alloc",
            format!("{name:?} is not a valid keyspace name ([-A-Za-z0-9_], 1 to 20)"),
        ));
    }
    Ok(Settings {
        sim: SimConfig {
            cluster: ClusterConfig {
                store_count: stores,
                replica_count: replicas,
                learner_count: learners,
                store_labels,
                location_labels,
                split_policy,
                pd_members: options.pd_members.unwrap_or(1),
                cap_gc_safe_point_by_txn_safe_point: !options.legacy_gc.unwrap_or(false),
                ..ClusterConfig::default()
            },
            api_version,
            pessimistic_txn: PessimisticTxnConfig {
                wait_for_lock_timeout_ms: wait_ms,
                ..PessimisticTxnConfig::default()
            },
            replicas: ReplicaConfig {
                apply_lag: ApplyLag {
                    delay_ms: options.apply_lag_ms.unwrap_or(0),
                    entries: options.apply_lag_entries.unwrap_or(0),
                },
                advance_ts_interval_ms,
            },
        },
        split_keys: options.split_keys.unwrap_or_default(),
        keyspaces,
        keyspace_level_gc: options.keyspace_level_gc.unwrap_or(false),
        exit_on_stdin_eof: options.exit_on_stdin_eof,
        ignored: options.ignored,
    })
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
