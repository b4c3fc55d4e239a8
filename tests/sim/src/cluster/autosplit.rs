//! Automatic region splits by key count and size, as TiKV's split checker decides them.
//!
//! TiKV's coprocessor config (`coprocessor.region-split-size`, `region-max-size`,
//! `region-split-keys`, `region-max-keys`, `batch-split-limit`) sets two thresholds per
//! measure: a region is checked once it reaches the *max*, and is then cut into pieces of
//! about the *split* amount, at most `batch-split-limit` cuts at once, the last piece kept
//! only when it is big enough (otherwise it stays with the piece before it). The key count is
//! the number of committed versions (TiKV counts write-CF entries, so raw data, which lives
//! in the default CF, never splits a region by keys); the size counts every entry's key and
//! value. [`SplitPolicy`] holds those thresholds; [`SplitPolicy::split_keys`] runs TiKV's two
//! scanning checkers (`split_check::size::Checker` and `split_check::keys::Checker`) over a
//! region's entries, in key order, and returns where to cut.
//!
//! Small thresholds make client-rust's `MULTI_REGION` test mode, which writes a few thousand
//! transactional keys and waits for many regions, work in seconds.

use bytes::Bytes;

/// One MiB, the unit TiKV derives the default key thresholds from.
const MIB: u64 = 1024 * 1024;
/// TiKV's default `coprocessor.region-split-size` (since 8.3; 96 MiB before).
pub const DEFAULT_REGION_SPLIT_SIZE: u64 = 256 * MIB;
/// TiKV's default `coprocessor.batch-split-limit`.
pub const DEFAULT_BATCH_SPLIT_LIMIT: u64 = 10;

/// Why a split configuration is refused (the checks of TiKV's coprocessor `Config::validate`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SplitPolicyError {
    /// `region-max-size` below `region-split-size`.
    #[error("region max size {max} must be >= split size {split}")]
    MaxSizeBelowSplitSize {
        /// The configured max size.
        max: u64,
        /// The configured or derived split size.
        split: u64,
    },
    /// `region-max-keys` below `region-split-keys`.
    #[error("region max keys {max} must be >= split keys {split}")]
    MaxKeysBelowSplitKeys {
        /// The configured max key count.
        max: u64,
        /// The configured or derived split key count.
        split: u64,
    },
    /// A threshold that must not be zero is.
    #[error("{0} must be greater than 0")]
    Zero(&'static str),
}

/// TiKV's coprocessor split settings as given in a config file: each one optional, the
/// missing ones derived as TiKV derives them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SplitSettings {
    /// `coprocessor.region-split-size` in bytes (default 256 MiB).
    pub region_split_size: Option<u64>,
    /// `coprocessor.region-max-size` in bytes (default split size / 2 * 3).
    pub region_max_size: Option<u64>,
    /// `coprocessor.region-split-keys` (default split size in MiB * 10,000).
    pub region_split_keys: Option<u64>,
    /// `coprocessor.region-max-keys` (default split keys / 2 * 3).
    pub region_max_keys: Option<u64>,
    /// `coprocessor.batch-split-limit` (default 10).
    pub batch_split_limit: Option<u64>,
    /// `raftstore.region-split-check-diff` in bytes (default split size / 16).
    pub region_split_check_diff: Option<u64>,
}

/// When a region is too big, and where it is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitPolicy {
    /// Pieces are cut at about this many bytes (`coprocessor.region-split-size`).
    pub region_split_size: u64,
    /// A region this big is checked for a split (`coprocessor.region-max-size`).
    pub region_max_size: u64,
    /// Pieces are cut at this many committed versions (`coprocessor.region-split-keys`).
    pub region_split_keys: u64,
    /// A region with this many committed versions is checked (`coprocessor.region-max-keys`).
    pub region_max_keys: u64,
    /// At most this many cuts per check (`coprocessor.batch-split-limit`).
    pub batch_split_limit: u64,
    /// Bytes written to a region before it is checked again
    /// (`raftstore.region-split-check-diff`).
    pub region_split_check_diff: u64,
}

impl Default for SplitPolicy {
    fn default() -> Self {
        // Deriving from nothing cannot fail: every threshold follows from the defaults.
        Self::from_settings(&SplitSettings::default()).unwrap_or(Self {
            region_split_size: DEFAULT_REGION_SPLIT_SIZE,
            region_max_size: DEFAULT_REGION_SPLIT_SIZE / 2 * 3,
            region_split_keys: 2_560_000,
            region_max_keys: 3_840_000,
            batch_split_limit: DEFAULT_BATCH_SPLIT_LIMIT,
            region_split_check_diff: DEFAULT_REGION_SPLIT_SIZE / 16,
        })
    }
}

/// One stored entry as the split checker scans it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitEntry {
    /// The entry's key in region-boundary space (a split here makes it a region start).
    pub key: Bytes,
    /// Key plus value bytes, what TiKV's size checker adds up.
    pub size: u64,
    /// A committed version (write-CF entry), what TiKV's keys checker counts.
    pub commit_version: bool,
}

impl SplitPolicy {
    /// Fills in the missing settings as TiKV's coprocessor `Config::validate` does (split
    /// keys from the split size assuming 100-byte entries, each max at split / 2 * 3, the
    /// check diff at a sixteenth of the split size) and checks them as it does: a max given
    /// explicitly must not be below its split value (a derived one is not compared).
    ///
    /// Errors when an explicit max is below its split value or a threshold is zero.
    pub fn from_settings(settings: &SplitSettings) -> Result<Self, SplitPolicyError> {
        let split_size = settings
            .region_split_size
            .unwrap_or(DEFAULT_REGION_SPLIT_SIZE);
        // TiKV: split size in (fractional) MiB times 10,000.
        let derived_keys = (split_size as f64 / MIB as f64 * 10_000.0) as u64;
        let split_keys = settings.region_split_keys.unwrap_or(derived_keys);
        let max_size = settings.region_max_size.unwrap_or(split_size / 2 * 3);
        let max_keys = settings.region_max_keys.unwrap_or(split_keys / 2 * 3);
        let policy = Self {
            region_split_size: split_size,
            region_max_size: max_size,
            region_split_keys: split_keys,
            region_max_keys: max_keys,
            batch_split_limit: settings
                .batch_split_limit
                .unwrap_or(DEFAULT_BATCH_SPLIT_LIMIT),
            region_split_check_diff: settings.region_split_check_diff.unwrap_or(split_size / 16),
        };
        if settings.region_max_size.is_some() && max_size < split_size {
            return Err(SplitPolicyError::MaxSizeBelowSplitSize {
                max: max_size,
                split: split_size,
            });
        }
        if settings.region_max_keys.is_some() && max_keys < split_keys {
            return Err(SplitPolicyError::MaxKeysBelowSplitKeys {
                max: max_keys,
                split: split_keys,
            });
        }
        policy.validate()?;
        Ok(policy)
    }

    /// A policy that cuts regions into pieces of `split_keys` committed versions once they
    /// hold `split_keys / 2 * 3` (TiKV's derived max), with TiKV's default sizes.
    ///
    /// Errors only as [`SplitPolicy::from_settings`] does, which cannot happen here.
    pub fn by_keys(split_keys: u64) -> Result<Self, SplitPolicyError> {
        Self::from_settings(&SplitSettings {
            region_split_keys: Some(split_keys),
            ..SplitSettings::default()
        })
    }

    /// Checks what TiKV's raftstore config checks on its own: a zero
    /// `region-split-check-diff` is refused. (Zero split thresholds are taken, as TiKV takes
    /// them: every entry then starts a piece.)
    ///
    /// Errors with [`SplitPolicyError::Zero`].
    pub fn validate(&self) -> Result<(), SplitPolicyError> {
        if self.region_split_check_diff == 0 {
            return Err(SplitPolicyError::Zero("region-split-check-diff"));
        }
        Ok(())
    }

    /// How many written keys make a region due for another check. TiKV only counts bytes
    /// (`region-split-check-diff`); counting keys as well (a sixteenth of the split keys)
    /// makes a small `region-split-keys` work without also lowering the byte diff.
    pub fn check_diff_keys(&self) -> u64 {
        (self.region_split_keys / 16).max(1)
    }

    /// Where to cut a region holding `entries` (sorted by key), following TiKV's split check:
    /// the size checker runs when the total size reaches `region_max_size`, the keys checker
    /// when the committed versions reach `region_max_keys`; both scan the entries in order
    /// (`SplitCheckerHost::on_kv`, stopping when one is done), and the cuts of the first
    /// checker that found any win (`SplitCheckerHost::split_keys`). Empty when no split is
    /// due. Cut keys may repeat or equal the region's start (several versions of one key);
    /// the caller drops those.
    pub fn split_keys(&self, entries: &[SplitEntry]) -> Vec<Bytes> {
        let total_size: u64 = entries.iter().map(|entry| entry.size).sum();
        let total_keys = entries.iter().filter(|entry| entry.commit_version).count() as u64;
        let mut checkers = Vec::new();
        // TiKV registers the size observer before the keys observer.
        if total_size >= self.region_max_size {
            checkers.push(Checker::new(
                Measure::Size,
                self.region_max_size,
                self.region_split_size,
                self.batch_split_limit,
            ));
        }
        if total_keys >= self.region_max_keys {
            checkers.push(Checker::new(
                Measure::Keys,
                self.region_max_keys,
                self.region_split_keys,
                self.batch_split_limit,
            ));
        }
        if checkers.is_empty() {
            return Vec::new();
        }
        'scan: for entry in entries {
            for checker in &mut checkers {
                if checker.on_entry(entry) {
                    break 'scan;
                }
            }
        }
        checkers
            .into_iter()
            .map(Checker::into_split_keys)
            .find(|keys| !keys.is_empty())
            .unwrap_or_default()
    }
}

/// What a checker adds up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Measure {
    /// Entry bytes (`split_check::size::Checker`).
    Size,
    /// Committed versions (`split_check::keys::Checker`).
    Keys,
}

/// One of TiKV's scanning split checkers.
#[derive(Debug)]
struct Checker {
    measure: Measure,
    max: u64,
    split: u64,
    current: u64,
    split_keys: Vec<Bytes>,
    batch_split_limit: u64,
}

impl Checker {
    fn new(measure: Measure, max: u64, split: u64, batch_split_limit: u64) -> Self {
        Self {
            measure,
            max,
            split,
            current: 0,
            split_keys: Vec::new(),
            batch_split_limit,
        }
    }

    /// Adds one entry; returns whether the scan can stop (enough cuts, and enough seen past
    /// the last one to know it stays).
    fn on_entry(&mut self, entry: &SplitEntry) -> bool {
        let amount = match self.measure {
            Measure::Size => entry.size,
            Measure::Keys if entry.commit_version => 1,
            Measure::Keys => return false,
        };
        self.current += amount;
        let mut over_limit = self.split_keys.len() as u64 >= self.batch_split_limit;
        if self.current > self.split && !over_limit {
            self.split_keys.push(entry.key.clone());
            // The entry that crossed the threshold starts the next piece. For sizes TiKV
            // keeps it only when the piece before was exactly full.
            self.current = match self.measure {
                Measure::Keys => 1,
                Measure::Size if self.current - amount == self.split => amount,
                Measure::Size => 0,
            };
            over_limit = self.split_keys.len() as u64 >= self.batch_split_limit;
        }
        over_limit && self.current + self.split >= self.max
    }

    /// The cuts; the last one is dropped when the piece after it is too small to stand alone.
    fn into_split_keys(mut self) -> Vec<Bytes> {
        if self.current + self.split < self.max {
            self.split_keys.pop();
        }
        self.split_keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(keys: &[&str]) -> Vec<SplitEntry> {
        keys.iter()
            .map(|key| SplitEntry {
                key: Bytes::copy_from_slice(key.as_bytes()),
                size: 1,
                commit_version: true,
            })
            .collect()
    }

    fn numbered(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("k{i:03}")).collect()
    }

    fn keys(names: &[String]) -> Vec<Bytes> {
        names
            .iter()
            .map(|name| Bytes::copy_from_slice(name.as_bytes()))
            .collect()
    }

    /// Follows TiKV's coprocessor `Config::validate`: split keys from the split size
    /// (10,000 per MiB), each max at split / 2 * 3, the check diff at split size / 16.
    #[test]
    fn defaults_follow_tikv_coprocessor_config_validate() {
        let policy = SplitPolicy::default();
        assert_eq!(policy.region_split_size, 256 * MIB);
        assert_eq!(policy.region_max_size, 384 * MIB);
        assert_eq!(policy.region_split_keys, 2_560_000);
        assert_eq!(policy.region_max_keys, 3_840_000);
        assert_eq!(policy.batch_split_limit, 10);
        assert_eq!(policy.region_split_check_diff, 16 * MIB);

        let small = SplitPolicy::from_settings(&SplitSettings {
            region_split_size: Some(MIB),
            ..SplitSettings::default()
        })
        .unwrap();
        assert_eq!(
            (
                small.region_max_size,
                small.region_split_keys,
                small.region_max_keys
            ),
            (MIB / 2 * 3, 10_000, 15_000)
        );
        // client-rust's CI config: max 10, split 7.
        let client_rust = SplitPolicy::from_settings(&SplitSettings {
            region_max_keys: Some(10),
            region_split_keys: Some(7),
            batch_split_limit: Some(100),
            region_split_check_diff: Some(1),
            ..SplitSettings::default()
        })
        .unwrap();
        assert_eq!(client_rust.region_max_keys, 10);
        assert_eq!(SplitPolicy::by_keys(10).unwrap().region_max_keys, 15);
    }

    /// Follows the checks of TiKV's coprocessor `Config::validate`: an explicit max below its
    /// split value is refused (also when the split value is the derived default); a derived
    /// max is not compared (split keys 1 derives max 0, which TiKV takes).
    #[test]
    fn max_below_split_is_refused_as_tikv_config_validate_does() {
        let bad = |settings: SplitSettings| SplitPolicy::from_settings(&settings).unwrap_err();
        assert_eq!(
            bad(SplitSettings {
                region_max_keys: Some(10),
                ..SplitSettings::default()
            }),
            SplitPolicyError::MaxKeysBelowSplitKeys {
                max: 10,
                split: 2_560_000
            }
        );
        assert_eq!(
            bad(SplitSettings {
                region_split_size: Some(100),
                region_max_size: Some(99),
                ..SplitSettings::default()
            }),
            SplitPolicyError::MaxSizeBelowSplitSize {
                max: 99,
                split: 100
            }
        );
        assert_eq!(
            bad(SplitSettings {
                region_split_check_diff: Some(0),
                ..SplitSettings::default()
            }),
            SplitPolicyError::Zero("region-split-check-diff")
        );
        let tiny = SplitPolicy::by_keys(1).unwrap();
        assert_eq!(tiny.region_max_keys, 0);
        // Every committed version after the first of a piece starts a new one.
        let names = numbered(3);
        assert_eq!(tiny.split_keys(&versions_of(&names)), keys(&names[1..]));
    }

    /// Follows TiKV's `split_check::keys::Checker`: checked from `region_max_keys` committed
    /// versions on, cut every `region_split_keys` versions; the last cut goes when the piece
    /// after it would hold fewer than `max - split` versions.
    #[test]
    fn keys_checker_cuts_every_split_keys_as_tikv_keys_checker() {
        let policy = SplitPolicy::by_keys(10).unwrap(); // max 15
        let names = numbered(14);
        assert!(policy.split_keys(&versions_of(&names)).is_empty());
        // 15 versions: pieces of 10 and 5 (5 + 10 >= 15 keeps the cut).
        let names = numbered(15);
        assert_eq!(
            policy.split_keys(&versions_of(&names)),
            keys(&names[10..11])
        );
        // 34 versions: cuts at 10 and 20; the piece after 30 would hold 4, so the cut at 30
        // goes and the last piece holds 14.
        let names = numbered(34);
        let expected = keys(&[names[10].clone(), names[20].clone()]);
        assert_eq!(policy.split_keys(&versions_of(&names)), expected);
        // 35 versions: the last piece holds 5, enough.
        let names = numbered(35);
        let expected = keys(&[names[10].clone(), names[20].clone(), names[30].clone()]);
        assert_eq!(policy.split_keys(&versions_of(&names)), expected);
    }

    fn versions_of(names: &[String]) -> Vec<SplitEntry> {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        versions(&refs)
    }

    /// Follows TiKV's `split_check::keys::Checker`: only committed versions (write-CF
    /// entries) count, so locks and raw values never split a region by keys.
    #[test]
    fn keys_checker_counts_only_committed_versions_as_tikv_keys_checker() {
        let policy = SplitPolicy::by_keys(2).unwrap(); // max 3
        let mut entries = versions(&["a", "b"]);
        entries.extend((0..20).map(|i| SplitEntry {
            key: Bytes::from(format!("raw{i:02}")),
            size: 1,
            commit_version: false,
        }));
        entries.sort_by(|x, y| x.key.cmp(&y.key));
        assert!(policy.split_keys(&entries).is_empty());
        entries.push(SplitEntry {
            key: Bytes::from_static(b"z"),
            size: 1,
            commit_version: true,
        });
        // Three versions: a, b | z (the piece after the cut holds 1, and 1 + 2 >= 3).
        assert_eq!(policy.split_keys(&entries), vec![Bytes::from_static(b"z")]);
    }

    /// Follows TiKV's `split_check::keys::Checker` with `batch_split_limit`: at most that
    /// many cuts per check; the rest waits for the next check.
    #[test]
    fn batch_split_limit_caps_the_cuts_as_tikv_keys_checker() {
        let policy = SplitPolicy::from_settings(&SplitSettings {
            region_split_keys: Some(2),
            batch_split_limit: Some(3),
            ..SplitSettings::default()
        })
        .unwrap();
        let names = numbered(40);
        let expected = keys(&[names[2].clone(), names[4].clone(), names[6].clone()]);
        assert_eq!(policy.split_keys(&versions_of(&names)), expected);
    }

    /// Follows TiKV's `split_check::size::Checker`: checked from `region_max_size` bytes on,
    /// a cut at the entry that passes `region_split_size`; that entry starts the next piece
    /// only when the piece before was exactly full.
    #[test]
    fn size_checker_cuts_past_split_size_as_tikv_size_checker() {
        let policy = SplitPolicy::from_settings(&SplitSettings {
            region_split_size: Some(100),
            ..SplitSettings::default()
        })
        .unwrap(); // max size 150
        let entry = |key: &str, size: u64| SplitEntry {
            key: Bytes::copy_from_slice(key.as_bytes()),
            size,
            commit_version: false,
        };
        let under = vec![entry("a", 60), entry("b", 60), entry("c", 29)];
        assert!(policy.split_keys(&under).is_empty());
        // 60 + 60 passes 100 at "b": cut there; the count restarts at 0, then "c" and "d"
        // make 90, and 90 + 100 >= 150 keeps the cut.
        let over = vec![
            entry("a", 60),
            entry("b", 60),
            entry("c", 40),
            entry("d", 50),
        ];
        assert_eq!(policy.split_keys(&over), vec![Bytes::from_static(b"b")]);
        // Exactly full at "b" (50 + 50), passed at "c": "c" starts the next piece with its
        // 45 bytes, "d" makes 55, and 55 + 100 >= 150 keeps the cut.
        let exact = vec![
            entry("a", 50),
            entry("b", 50),
            entry("c", 45),
            entry("d", 10),
        ];
        assert_eq!(policy.split_keys(&exact), vec![Bytes::from_static(b"c")]);
        // Not exactly full at "b" (99): the count restarts at 0 after "c", "d" makes 10, and
        // 10 + 100 < 150 drops the cut.
        let inexact = vec![
            entry("a", 50),
            entry("b", 49),
            entry("c", 46),
            entry("d", 10),
        ];
        assert!(policy.split_keys(&inexact).is_empty());
    }

    /// Follows TiKV's `SplitCheckerHost::split_keys`: with both checkers running, the size
    /// checker's cuts win when it has any.
    #[test]
    fn size_cuts_win_over_key_cuts_as_tikv_split_checker_host() {
        let policy = SplitPolicy::from_settings(&SplitSettings {
            region_split_size: Some(100),
            region_split_keys: Some(2),
            ..SplitSettings::default()
        })
        .unwrap();
        let entries: Vec<SplitEntry> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|key| SplitEntry {
                key: Bytes::copy_from_slice(key.as_bytes()),
                size: 40,
                commit_version: true,
            })
            .collect();
        // Size: 40, 80, 120 passes 100 at "c"; keys alone would cut at "c" and "e".
        assert_eq!(policy.split_keys(&entries), vec![Bytes::from_static(b"c")]);
    }
}
