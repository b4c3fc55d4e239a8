use super::*;
use crate::cluster::{DEFAULT_REGION_SPLIT_SIZE, SplitSettings};

fn parse(args: &[&str]) -> Result<Parsed, ConfigError> {
    parse_args(args.iter().map(|s| (*s).to_owned()))
}

/// The settings of a successful parse; a parse error or `--help` fails the test.
fn run(args: &[&str]) -> Settings {
    match parse(args) {
        Ok(Parsed::Run(settings)) => settings,
        other => panic!("{args:?} must parse into settings, got {other:?}"),
    }
}

/// Whether an error is the one a case expects.
type IsExpected = fn(&ConfigError) -> bool;

fn toml_ok(text: &str) -> Settings {
    parse_toml(text).unwrap_or_else(|err| panic!("{err}\n{text}"))
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A config file with a unique name in the temp directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "tikv-sim-config-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap_or_else(|err| panic!("{err}"));
        Self(path)
    }

    fn path(&self) -> &str {
        self.0
            .to_str()
            .unwrap_or_else(|| panic!("temp path is not UTF-8"))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn no_arguments_give_tikv_and_pd_defaults() {
    let settings = run(&[]);
    let expected = SimConfig {
        cluster: ClusterConfig {
            store_count: 3,
            replica_count: 3,
            ..ClusterConfig::default()
        },
        ..SimConfig::default()
    };
    assert_eq!(settings.sim, expected);
    assert_eq!(settings.sim.pessimistic_txn.wait_for_lock_timeout_ms, 1000);
    assert_eq!(settings.sim.cluster.pd_members, 1);
    assert_eq!(settings.sim.api_version, ApiVersion::V1);
    // TiKV's `resolved-ts.advance-ts-interval`, and followers that keep up.
    assert_eq!(settings.sim.replicas.advance_ts_interval_ms, 20_000);
    assert_eq!(settings.sim.replicas.apply_lag, ApplyLag::default());
    assert_eq!(
        settings.sim.cluster.split_policy.region_split_size,
        DEFAULT_REGION_SPLIT_SIZE
    );
    assert!(settings.split_keys.is_empty() && settings.keyspaces.is_empty());
    assert!(!settings.exit_on_stdin_eof && !settings.keyspace_level_gc);
    assert!(settings.ignored.is_empty());
    // One store: one replica by default.
    assert_eq!(run(&["--stores", "1"]).sim.cluster.replica_count, 1);
}

#[test]
fn every_flag_is_parsed() {
    let settings = run(&[
        "--stores",
        "5",
        "--replicas=2",
        "--learners",
        "1",
        "--api-version",
        "2",
        "--region-split-keys",
        "10",
        "--region-max-keys=20",
        "--region-split-size",
        "1MiB",
        "--region-max-size",
        "2MiB",
        "--batch-split-limit",
        "4",
        "--region-split-check-diff",
        "1B",
        "--wait-for-lock-timeout",
        "250ms",
        "--labels",
        "zone=z0,rack=r1",
        "--store-labels",
        "zone=z1,host=h1;;zone=z3,host=h3",
        "--location-labels",
        "zone,host",
        "--apply-lag",
        "150ms",
        "--apply-lag-entries",
        "3",
        "--advance-ts-interval=2s",
        "--pd-members",
        "1",
        "--keyspaces",
        "ks1,,ks2",
        "--keyspace-level-gc",
        "--legacy-gc",
        "--split-keys=a,,bc",
        "--exit-on-stdin-eof",
    ]);
    let cluster = &settings.sim.cluster;
    assert_eq!(
        (
            cluster.store_count,
            cluster.replica_count,
            cluster.learner_count
        ),
        (5, 2, 1)
    );
    assert_eq!(settings.sim.api_version, ApiVersion::V2);
    assert_eq!(
        cluster.split_policy,
        SplitPolicy {
            region_split_size: 1 << 20,
            region_max_size: 2 << 20,
            region_split_keys: 10,
            region_max_keys: 20,
            batch_split_limit: 4,
            region_split_check_diff: 1,
        }
    );
    assert_eq!(settings.sim.pessimistic_txn.wait_for_lock_timeout_ms, 250);
    assert_eq!(
        cluster.store_labels,
        vec![
            labels(&[("host", "h1"), ("rack", "r1"), ("zone", "z1")]),
            labels(&[("rack", "r1"), ("zone", "z0")]),
            labels(&[("host", "h3"), ("rack", "r1"), ("zone", "z3")]),
            labels(&[("rack", "r1"), ("zone", "z0")]),
            labels(&[("rack", "r1"), ("zone", "z0")]),
        ]
    );
    assert_eq!(cluster.location_labels, vec!["zone", "host"]);
    assert_eq!(
        settings.sim.replicas,
        ReplicaConfig {
            apply_lag: ApplyLag {
                delay_ms: 150,
                entries: 3,
            },
            advance_ts_interval_ms: 2_000,
        }
    );
    assert_eq!(settings.sim.cluster.pd_members, 1);
    assert_eq!(settings.keyspaces, vec!["ks1", "ks2"]);
    assert!(settings.keyspace_level_gc);
    assert!(!cluster.cap_gc_safe_point_by_txn_safe_point);
    assert_eq!(settings.split_keys, vec![b"a".to_vec(), b"bc".to_vec()]);
    assert!(settings.exit_on_stdin_eof);
    assert_eq!(parse(&["--api-version", "2", "-h"]), Ok(Parsed::Help));
    assert_eq!(
        run(&["--api-version", "1ttl"]).sim.api_version,
        ApiVersion::V1ttl
    );
}

#[test]
fn bad_arguments_are_errors() {
    let cases: &[(&[&str], IsExpected)] = &[
        (
            &["--stores"],
            |e| matches!(e, ConfigError::MissingValue(f) if f == "--stores"),
        ),
        (&["--stores", "0"], |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
        (&["--stores", "x"], |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
        (&["--stores", "65"], |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
        (&["--api-version", "3"], |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
        (&["--replicas", "4"], |e| {
            matches!(e, ConfigError::Inconsistent(_))
        }),
        (&["--stores", "3", "--learners", "1"], |e| {
            matches!(e, ConfigError::Inconsistent(_))
        }),
        (&["--region-split-keys", "ten"], |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
        (&["--region-max-keys", "10"], |e| {
            matches!(
                e,
                ConfigError::Split(SplitPolicyError::MaxKeysBelowSplitKeys { .. })
            )
        }),
        (&["--region-split-size", "1XB"], |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
        (&["--wait-for-lock-timeout", "100"], |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
        (&["--wait-for-lock-timeout", "0s"], |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
        (&["--labels", "zone"], |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
        (&["--labels", "-zone=z1"], |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
        (&["--labels", "zone=z 1"], |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
        (&["--stores", "1", "--store-labels", "zone=a;zone=b"], |e| {
            matches!(e, ConfigError::Inconsistent(_))
        }),
        (&["--location-labels", "zone,$"], |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
        (&["--pd-members", "0"], |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
        (&["--apply-lag", "5"], |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
        (&["--apply-lag-entries", "-1"], |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
        (&["--advance-ts-interval", "0s"], |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
        (&["--keyspaces", "has space"], |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
        (&["--bogus"], |e| {
            matches!(e, ConfigError::UnknownArgument(_))
        }),
        (&["stray"], |e| matches!(e, ConfigError::UnknownArgument(_))),
        (&["--exit-on-stdin-eof=1"], |e| {
            matches!(e, ConfigError::UnknownArgument(_))
        }),
        (&["--config", "/nonexistent/tikv-sim.toml"], |e| {
            matches!(e, ConfigError::Read { .. })
        }),
    ];
    for (args, expected) in cases {
        match parse(args) {
            Err(err) => assert!(expected(&err), "{args:?}: unexpected error {err:?}"),
            Ok(parsed) => panic!("{args:?} must be refused, got {parsed:?}"),
        }
    }
}

/// The file uses TiKV's and PD's own keys: what a real `tikv.toml` / `pd.toml` says carries
/// over.
#[test]
fn config_file_uses_tikv_and_pd_keys() {
    let settings = toml_ok(
        r#"
        [sim]
        stores = 4
        learners = 1
        pd-members = 1
        store-labels = [{ zone = "z1", host = "h1" }, { zone = "z2" }]
        keyspace-level-gc = true
        legacy-gc = true
        split-keys = ["m"]
        apply-lag = "1s"
        apply-lag-entries = 2

        [storage]
        api-version = 1
        enable-ttl = true

        [resolved-ts]
        advance-ts-interval = "5s"

        [coprocessor]
        region-split-keys = 7
        region-max-keys = 10
        region-split-size = "1.5MiB"
        region-max-size = 3145728
        batch-split-limit = 100

        [raftstore]
        region-split-check-diff = "1B"

        [pessimistic-txn]
        wait-for-lock-timeout = "1m30s"

        [server]
        labels = { zone = "z0", disk = "ssd" }

        [replication]
        max-replicas = 3
        location-labels = ["zone", "host"]

        [keyspace]
        pre-alloc = ["a", "b"]
        "#,
    );
    let cluster = &settings.sim.cluster;
    assert_eq!(
        (
            cluster.store_count,
            cluster.replica_count,
            cluster.learner_count
        ),
        (4, 3, 1)
    );
    assert_eq!(settings.sim.api_version, ApiVersion::V1ttl);
    assert_eq!(
        cluster.split_policy,
        SplitPolicy {
            region_split_size: 3 << 19,
            region_max_size: 3 << 20,
            region_split_keys: 7,
            region_max_keys: 10,
            batch_split_limit: 100,
            region_split_check_diff: 1,
        }
    );
    assert_eq!(
        settings.sim.pessimistic_txn.wait_for_lock_timeout_ms,
        90_000
    );
    assert_eq!(
        cluster.store_labels[0],
        labels(&[("disk", "ssd"), ("host", "h1"), ("zone", "z1")])
    );
    assert_eq!(
        cluster.store_labels[1],
        labels(&[("disk", "ssd"), ("zone", "z2")])
    );
    assert_eq!(
        cluster.store_labels[3],
        labels(&[("disk", "ssd"), ("zone", "z0")])
    );
    assert_eq!(cluster.location_labels, vec!["zone", "host"]);
    assert_eq!(settings.keyspaces, vec!["a", "b"]);
    assert!(settings.keyspace_level_gc && !cluster.cap_gc_safe_point_by_txn_safe_point);
    assert_eq!(settings.split_keys, vec![b"m".to_vec()]);
    assert_eq!(
        settings.sim.replicas,
        ReplicaConfig {
            apply_lag: ApplyLag {
                delay_ms: 1_000,
                entries: 2,
            },
            advance_ts_interval_ms: 5_000,
        }
    );
    assert!(settings.ignored.is_empty(), "{:?}", settings.ignored);
    // PD also takes location labels as one comma-separated string.
    let settings = toml_ok("[replication]\nlocation-labels = \"zone,host\"");
    assert_eq!(settings.sim.cluster.location_labels, vec!["zone", "host"]);
}

/// client-rust's CI config files, as they are: the split settings apply, the rest of TiKV's
/// and PD's keys are listed as ignored (in file order, each file's keys sorted).
#[test]
fn client_rust_config_files_carry_over() {
    let tikv = TempFile::new(
        "client-rust-tikv",
        r#"
        [coprocessor]
        region-max-keys = 10
        region-split-keys = 7
        batch-split-limit = 100

        [raftstore]
        region-split-check-diff = "1B"
        pd-heartbeat-tick-interval = "2s"

        [storage]
        api-version = 2
        enable-ttl = true
        reserve-space = "0MiB"

        [server]
        grpc-compression-type = "gzip"
        "#,
    );
    let pd = TempFile::new(
        "client-rust-pd",
        "[schedule]\nmax-merge-region-size = 1\nmax-merge-region-keys = 3\n",
    );
    let settings = run(&["--config", tikv.path(), "--config", pd.path()]);
    assert_eq!(settings.sim.api_version, ApiVersion::V2);
    let policy = settings.sim.cluster.split_policy;
    assert_eq!(
        (
            policy.region_split_keys,
            policy.region_max_keys,
            policy.batch_split_limit
        ),
        (7, 10, 100)
    );
    assert_eq!(policy.region_split_check_diff, 1);
    assert_eq!(
        settings.ignored,
        vec![
            "raftstore.pd-heartbeat-tick-interval",
            "server.grpc-compression-type",
            "storage.reserve-space",
            "schedule.max-merge-region-keys",
            "schedule.max-merge-region-size",
        ]
    );
}

#[test]
fn flags_override_config_files_whatever_their_order() {
    let file = TempFile::new(
        "override",
        "[sim]\nstores = 5\n[coprocessor]\nregion-split-keys = 100\n[storage]\napi-version = 2\nenable-ttl = true\n",
    );
    let settings = run(&[
        "--region-split-keys",
        "10",
        "--config",
        file.path(),
        "--api-version",
        "1",
    ]);
    assert_eq!(settings.sim.cluster.store_count, 5);
    assert_eq!(settings.sim.cluster.split_policy.region_split_keys, 10);
    assert_eq!(settings.sim.api_version, ApiVersion::V1);
}

/// Follows TiKV's storage `Config::validate` (API V2 needs `enable-ttl`; only versions 1 and
/// 2) and coprocessor `Config::validate` (max keys not below split keys).
#[test]
fn bad_config_files_are_errors_as_tikv_config_validate() {
    let cases: &[(&str, IsExpected)] = &[
        ("[sim\nstores = 3", |e| {
            matches!(e, ConfigError::Parse { .. })
        }),
        ("[sim]\nstores = \"three\"", |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
        (
            "[sim]\nstorez = 3",
            |e| matches!(e, ConfigError::InvalidValue { name, .. } if name == "sim.storez"),
        ),
        ("[storage]\napi-version = 2", |e| {
            matches!(e, ConfigError::Inconsistent(_))
        }),
        ("[storage]\napi-version = 3\nenable-ttl = true", |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
        (
            "[coprocessor]\nregion-split-keys = 10\nregion-max-keys = 9",
            |e| {
                matches!(
                    e,
                    ConfigError::Split(SplitPolicyError::MaxKeysBelowSplitKeys { .. })
                )
            },
        ),
        ("[coprocessor]\nregion-split-size = \"lots\"", |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
        ("[pessimistic-txn]\nwait-for-lock-timeout = 1000", |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
        ("[server]\nlabels = { zone = 1 }", |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
        ("[replication]\nmax-replicas = 4", |e| {
            matches!(e, ConfigError::Inconsistent(_))
        }),
        ("[keyspace]\npre-alloc = [\"ok\", 7]", |e| {
            matches!(e, ConfigError::InvalidValue { .. })
        }),
    ];
    for (text, expected) in cases {
        match parse_toml(text) {
            Err(err) => assert!(expected(&err), "{text:?}: unexpected error {err:?}"),
            Ok(settings) => panic!("{text:?} must be refused, got {settings:?}"),
        }
    }
    let broken = TempFile::new("broken", "[coprocessor\n");
    match parse(&["--config", broken.path()]) {
        Err(ConfigError::Parse { path, .. }) => assert_eq!(path, broken.path()),
        other => panic!("a malformed file must be a parse error, got {other:?}"),
    }
}

/// The README's example config is a valid file and its table lists every flag (the
/// documentation stays true).
#[test]
fn readme_example_config_parses() {
    let readme = include_str!("../README.md");
    let start = readme
        .find("```toml\n")
        .unwrap_or_else(|| panic!("README has no toml example"));
    let body = &readme[start + "```toml\n".len()..];
    let end = body
        .find("```")
        .unwrap_or_else(|| panic!("README's toml example is not closed"));
    let settings = toml_ok(&body[..end]);
    assert!(settings.ignored.is_empty(), "{:?}", settings.ignored);
    assert_eq!(settings.sim.cluster.split_policy.region_split_keys, 10);
    assert_eq!(settings.sim.api_version, ApiVersion::V2);
    assert_eq!(settings.sim.cluster.store_labels.len(), 3);
    // The README's flag table names every flag and its config key.
    for flag in FLAGS.iter().filter(|flag| flag.name != "--help") {
        assert!(
            readme.contains(&format!("`{} ", flag.name))
                || readme.contains(&format!("`{}`", flag.name)),
            "README misses {}",
            flag.name
        );
        if !flag.key.is_empty() {
            assert!(
                readme.contains(&format!("`{}`", flag.key)),
                "README misses {}",
                flag.key
            );
        }
    }
}

/// Follows TiKV's `ReadableSize::from_str`: binary units, `MB` meaning MiB, fractions,
/// plain digits as bytes.
#[test]
fn sizes_read_as_tikv_readable_size() {
    for (text, bytes) in [
        ("0", 0),
        ("1B", 1),
        ("512", 512),
        ("1KB", 1024),
        ("1KiB", 1024),
        ("1.5K", 1536),
        ("96MB", 96 << 20),
        ("96MiB", 96 << 20),
        ("1GiB", 1 << 30),
        (" 2 TiB ", 2 << 40),
        ("1PB", 1 << 50),
    ] {
        assert_eq!(readable_size(text), Ok(bytes), "{text}");
    }
    for text in ["", "MiB", "1XB", "1 M B", "-1MiB", "abc", "1.2.3K"] {
        assert!(readable_size(text).is_err(), "{text}");
    }
}

/// Follows TiKV's `ReadableDuration::from_str`: units in decreasing order, fractions allowed,
/// no bare numbers.
#[test]
fn durations_read_as_tikv_readable_duration() {
    for (text, ms) in [
        ("1s", 1000),
        ("500ms", 500),
        ("1.5s", 1500),
        ("1m30s", 90_000),
        ("1h", 3_600_000),
        ("1d", 86_400_000),
        ("2000us", 2),
        ("1s500ms", 1500),
    ] {
        assert_eq!(readable_duration_ms(text), Ok(ms), "{text}");
    }
    for text in ["", "100", "1x", "1s1m", "1s1s", "s", "-1s", "1ms5"] {
        assert!(readable_duration_ms(text).is_err(), "{text}");
    }
}

#[test]
fn usage_lists_every_flag_and_its_config_key() {
    let text = usage();
    assert!(text.starts_with("usage: tikv-sim"));
    for flag in FLAGS {
        assert!(
            text.contains(flag.name),
            "{} missing from --help",
            flag.name
        );
        if !flag.key.is_empty() {
            assert!(text.contains(flag.key), "{} missing from --help", flag.key);
        }
        // Every flag except the ones that steer the binary itself reaches a setting.
        if !matches!(flag.name, "--config" | "--help" | "--exit-on-stdin-eof") {
            assert!(!flag.key.is_empty(), "{} has no config key", flag.name);
        }
    }
}

/// Follows PD's keyspace manager `Bootstrap` (pre-allocated keyspaces created at startup,
/// an existing name skipped) and `splitKeyspaceRegion` (each keyspace's bounds split).
#[test]
fn build_creates_keyspaces_and_turns_auto_split_on() {
    let settings = run(&[
        "--api-version",
        "2",
        "--keyspaces",
        "DEFAULT,ks1,ks1,ks2",
        "--keyspace-level-gc",
        "--split-keys",
        "m",
    ]);
    let sim = settings.build(5_000).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        sim.cluster.keyspace(1).map(|m| m.name.as_str()),
        Some("ks1")
    );
    assert_eq!(
        sim.cluster.keyspace(2).map(|m| m.name.as_str()),
        Some("ks2")
    );
    assert!(sim.cluster.keyspace(3).is_none());
    assert_eq!(sim.cluster.keyspace(1).map(|m| m.created_at), Some(5));
    assert!(sim.cluster.keyspace(2).is_some_and(|m| {
        m.config.get("gc_management_type").map(String::as_str) == Some("keyspace_level")
    }));
    // Region starts: "", then for each of raw and txn: DEFAULT's start, "m" inside DEFAULT,
    // and the starts of keyspaces 1, 2 and 3 (the end of 2).
    assert_eq!(sim.cluster.region_count(), 1 + 2 * 5);
    assert!(sim.auto_split());
    // The library's default stays off, so that tests place every split themselves.
    assert!(!Sim::new(SimConfig::default()).is_ok_and(|sim| sim.auto_split()));
}

#[test]
fn split_settings_reach_the_policy_as_tikv_derives_them() {
    let settings = run(&["--region-split-size", "1MiB"]);
    let expected = SplitPolicy::from_settings(&SplitSettings {
        region_split_size: Some(1 << 20),
        ..SplitSettings::default()
    })
    .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(settings.sim.cluster.split_policy, expected);
    assert_eq!(expected.region_split_keys, 10_000);
}
