//! A snapshot-isolation checker over a history of transactions, with the bank invariant.
//!
//! Every transaction of the history is a [`TxnRecord`]: its start timestamp, what it read
//! (every read of one transaction comes from its one snapshot), what it wrote, and how its
//! commit ended. Each value a workload writes names its writer (`<balance>:t<id>`), so
//! every read tells which transaction's write it saw.
//!
//! Commits whose outcome the client could not know ([`Outcome::Unknown`]: an undetermined
//! commit, a commit future dropped half-way) are settled from the store's own record of the
//! keys after the run ([`Version`]s, read with TiKV's `MvccGetByKey`): committed at the
//! timestamp recorded there, or not at all. Outcomes the client did report are checked
//! against that record: an acknowledged commit must be there at its timestamp on every key
//! it wrote, a refused one must not be there at all.
//!
//! With every outcome settled, the checks are those of snapshot isolation:
//! - write-write conflicts are refused: two committed transactions that wrote the same key
//!   do not overlap (one committed at or before the other's start timestamp: TiKV reads
//!   at `ts` see commits at `commit_ts <= ts`, and an async-commit or 1PC commit timestamp
//!   may equal a timestamp TSO hands out later);
//! - every read returns the latest write committed at or before its snapshot's timestamp
//!   (a read of an aborted write is a dirty read, of a write committed after the snapshot
//!   a read from the future, of an older write a stale read; one snapshot's reads all
//!   checked against the same timestamp rules out fractured reads);
//! - no lost update: a committed read-modify-write read exactly the write it replaced;
//! - a transaction that began after a commit was acknowledged sees it (TSO is
//!   linearizable, and so are async commit and 1PC unless causal consistency was asked for);
//! - the bank: every read of all accounts from one snapshot sums to the bank's total.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use tikv_core::Timestamp;

/// How a transaction's commit ended, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The commit was acknowledged at this timestamp.
    Committed(Timestamp),
    /// The transaction did not commit: the commit was refused, or it never got that far, or
    /// it was stopped after prewrite (its locks must be rolled back by whoever meets them).
    Aborted(String),
    /// The client cannot tell (an undetermined commit, a commit future dropped half-way):
    /// either outcome is allowed.
    Unknown(String),
    /// A read-only transaction.
    ReadOnly,
}

/// One transaction of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnRecord {
    /// Its id (the `t<id>` in the values it writes).
    pub id: u64,
    /// What it was, for reports (`transfer 2pc`, `audit batch_get`, ...).
    pub label: String,
    /// Its start timestamp (`None`: it failed to begin).
    pub start_ts: Option<Timestamp>,
    /// When `begin` was called, on the workload's logical clock.
    pub began: u64,
    /// When its last call returned, on the workload's logical clock.
    pub ended: u64,
    /// What its snapshot returned, key by key (`None`: absent).
    pub reads: Vec<(Bytes, Option<Bytes>)>,
    /// Whether `reads` covers every account (an audit that finished its read).
    pub read_all: bool,
    /// What it wrote (its commit, if any, writes exactly these).
    pub writes: Vec<(Bytes, Bytes)>,
    /// How its commit ended.
    pub outcome: Outcome,
    /// Whether it committed with causal consistency only (no real-time order promised).
    pub causal: bool,
}

/// One committed version of a key in the store's record (TiKV's write column).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The writer's start timestamp.
    pub start_ts: u64,
    /// The commit timestamp.
    pub commit_ts: u64,
    /// The value (`None`: a delete).
    pub value: Option<Bytes>,
}

/// Something the history shows that snapshot isolation (or the bank) forbids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnViolation {
    /// The transaction at fault (the reader, the later writer, the lost commit).
    pub txn: u64,
    /// What kind: `lost commit`, `aborted but committed`, `torn commit`, `write-write
    /// overlap`, `dirty read`, `read from the future`, `stale read`, `phantom read`,
    /// `lost update`, `real-time order`, `bank total`.
    pub kind: &'static str,
    /// The details.
    pub detail: String,
}

impl fmt::Display for TxnViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}: {}: {}", self.txn, self.kind, self.detail)
    }
}

/// The value a transaction writes: the balance, and who wrote it.
pub fn bank_value(balance: u64, txn: u64) -> Bytes {
    Bytes::from(format!("{balance}:t{txn}"))
}

/// The balance and writer of a value written with [`bank_value`].
pub fn parse_bank_value(value: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (balance, writer) = text.split_once(":t")?;
    Some((balance.parse().ok()?, writer.parse().ok()?))
}

fn show(value: Option<&Bytes>) -> String {
    value.map_or("-".to_owned(), |v| String::from_utf8_lossy(v).into_owned())
}

fn text(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

/// A commit, settled: who, at what timestamp.
#[derive(Clone, Copy, Debug)]
struct Settled {
    txn: u64,
    start_ts: u64,
    commit_ts: u64,
}

/// Checks `history` against the store's record `versions` (per key, any order) and the
/// bank's `accounts` and `total`; returns every violation found (empty: the history is
/// snapshot-isolated and the bank balanced).
pub fn check(
    history: &[TxnRecord],
    versions: &BTreeMap<Bytes, Vec<Version>>,
    accounts: &[Bytes],
    total: u64,
) -> Vec<TxnViolation> {
    let mut violations = Vec::new();
    let by_id: BTreeMap<u64, &TxnRecord> = history.iter().map(|r| (r.id, r)).collect();
    let committed = settle(history, versions, &mut violations);
    let commit_of: BTreeMap<u64, Settled> = committed.iter().map(|s| (s.txn, *s)).collect();

    // Each key's committed writers in commit order.
    let mut chains: BTreeMap<&Bytes, Vec<(Settled, &Bytes)>> = BTreeMap::new();
    for settled in &committed {
        let Some(record) = by_id.get(&settled.txn) else {
            continue;
        };
        for (key, value) in &record.writes {
            chains.entry(key).or_default().push((*settled, value));
        }
    }
    for chain in chains.values_mut() {
        chain.sort_by_key(|(s, _)| s.commit_ts);
    }

    check_write_overlaps(&chains, &mut violations);
    for record in history {
        check_reads(record, &chains, &by_id, &commit_of, &mut violations);
    }
    check_lost_updates(history, &chains, &commit_of, &mut violations);
    check_real_time(history, &commit_of, &mut violations);
    check_bank(history, accounts, total, &mut violations);
    violations
}

/// Settles every commit: the client's acknowledged ones (checked against the store's
/// record), and unknown ones from the record. Returns the committed transactions.
fn settle(
    history: &[TxnRecord],
    versions: &BTreeMap<Bytes, Vec<Version>>,
    violations: &mut Vec<TxnViolation>,
) -> Vec<Settled> {
    let mut committed = Vec::new();
    for record in history {
        let (Some(start_ts), false) = (record.start_ts, record.writes.is_empty()) else {
            continue;
        };
        let start = start_ts.version();
        // What the store recorded for this transaction on each key it wrote.
        let recorded: Vec<(&Bytes, Option<&Version>)> = record
            .writes
            .iter()
            .map(|(key, _)| {
                let version = versions
                    .get(key)
                    .and_then(|list| list.iter().find(|v| v.start_ts == start));
                (key, version)
            })
            .collect();
        let mut commit_ts: Vec<u64> = recorded
            .iter()
            .filter_map(|(_, v)| v.map(|v| v.commit_ts))
            .collect();
        commit_ts.sort_unstable();
        commit_ts.dedup();
        for ((key, version), (_, written)) in recorded.iter().zip(&record.writes) {
            if let Some(version) = version
                && version.value.as_ref() != Some(written)
            {
                violations.push(TxnViolation {
                    txn: record.id,
                    kind: "torn commit",
                    detail: format!(
                        "{} recorded as {} instead of {}",
                        text(key),
                        show(version.value.as_ref()),
                        show(Some(written))
                    ),
                });
            }
        }
        let missing: Vec<String> = recorded
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(key, _)| text(key))
            .collect();
        match &record.outcome {
            Outcome::Committed(ts) => {
                if !missing.is_empty() || commit_ts.iter().any(|c| *c != ts.version()) {
                    violations.push(TxnViolation {
                        txn: record.id,
                        kind: "lost commit",
                        detail: format!(
                            "acknowledged at {ts}, but the store has {commit_ts:?} (keys never \
                             committed: [{}])",
                            missing.join(",")
                        ),
                    });
                }
                committed.push(Settled {
                    txn: record.id,
                    start_ts: start,
                    commit_ts: ts.version(),
                });
                continue;
            }
            Outcome::Aborted(why) if !commit_ts.is_empty() => violations.push(TxnViolation {
                txn: record.id,
                kind: "aborted but committed",
                detail: format!("reported {why:?}, but the store committed it at {commit_ts:?}"),
            }),
            _ => {}
        }
        match commit_ts.as_slice() {
            [] => {}
            [ts] => {
                if !missing.is_empty() {
                    violations.push(TxnViolation {
                        txn: record.id,
                        kind: "torn commit",
                        detail: format!("committed at {ts} but not on [{}]", missing.join(",")),
                    });
                }
                committed.push(Settled {
                    txn: record.id,
                    start_ts: start,
                    commit_ts: *ts,
                });
            }
            many => violations.push(TxnViolation {
                txn: record.id,
                kind: "torn commit",
                detail: format!("committed at several timestamps {many:?}"),
            }),
        }
    }
    committed
}

/// Consecutive committed writers of a key must not overlap: the later one's start timestamp
/// is at or after the earlier one's commit timestamp (then no two writers of the key
/// overlap at all).
fn check_write_overlaps(
    chains: &BTreeMap<&Bytes, Vec<(Settled, &Bytes)>>,
    violations: &mut Vec<TxnViolation>,
) {
    for (key, chain) in chains {
        for pair in chain.windows(2) {
            let (earlier, later) = (pair[0].0, pair[1].0);
            if later.start_ts < earlier.commit_ts {
                violations.push(TxnViolation {
                    txn: later.txn,
                    kind: "write-write overlap",
                    detail: format!(
                        "both t{} [{}, {}] and t{} [{}, {}] committed a write of {}",
                        earlier.txn,
                        earlier.start_ts,
                        earlier.commit_ts,
                        later.txn,
                        later.start_ts,
                        later.commit_ts,
                        text(key)
                    ),
                });
            }
        }
    }
}

/// Every read of `record` returns the latest write committed at or before its start.
fn check_reads(
    record: &TxnRecord,
    chains: &BTreeMap<&Bytes, Vec<(Settled, &Bytes)>>,
    by_id: &BTreeMap<u64, &TxnRecord>,
    commit_of: &BTreeMap<u64, Settled>,
    violations: &mut Vec<TxnViolation>,
) {
    let Some(start_ts) = record.start_ts else {
        return;
    };
    let at = start_ts.version();
    for (key, seen) in &record.reads {
        let expected = chains
            .get(key)
            .and_then(|chain| chain.iter().rev().find(|(s, _)| s.commit_ts <= at))
            .map(|(s, value)| (s.txn, *value));
        if expected.map(|(_, v)| v) == seen.as_ref() {
            continue;
        }
        let writer = seen
            .as_ref()
            .and_then(|value| parse_bank_value(value))
            .map(|(_, txn)| txn);
        let kind = match writer {
            None => "stale read",
            Some(txn) => match (by_id.get(&txn), commit_of.get(&txn)) {
                (None, _) => "phantom read",
                (Some(_), None) => "dirty read",
                (Some(_), Some(settled)) if settled.commit_ts > at => "read from the future",
                (Some(_), Some(_)) => "stale read",
            },
        };
        violations.push(TxnViolation {
            txn: record.id,
            kind,
            detail: format!(
                "{} at {at} read {}, but the latest commit at or before it is {}",
                text(key),
                show(seen.as_ref()),
                expected.map_or("none".to_owned(), |(txn, v)| format!(
                    "t{txn}'s {}",
                    show(Some(v))
                ))
            ),
        });
    }
}

/// A committed transaction that read a key and wrote it read its predecessor's write.
fn check_lost_updates(
    history: &[TxnRecord],
    chains: &BTreeMap<&Bytes, Vec<(Settled, &Bytes)>>,
    commit_of: &BTreeMap<u64, Settled>,
    violations: &mut Vec<TxnViolation>,
) {
    for record in history {
        if !commit_of.contains_key(&record.id) {
            continue;
        }
        for (key, seen) in &record.reads {
            if !record.writes.iter().any(|(written, _)| written == key) {
                continue;
            }
            let Some(chain) = chains.get(key) else {
                continue;
            };
            let Some(position) = chain.iter().position(|(s, _)| s.txn == record.id) else {
                continue;
            };
            let predecessor = position
                .checked_sub(1)
                .and_then(|p| chain.get(p))
                .map(|(s, value)| (s.txn, *value));
            if predecessor.map(|(_, v)| v) != seen.as_ref() {
                violations.push(TxnViolation {
                    txn: record.id,
                    kind: "lost update",
                    detail: format!(
                        "read {} of {} but replaced {}",
                        show(seen.as_ref()),
                        text(key),
                        predecessor.map_or("nothing".to_owned(), |(txn, v)| format!(
                            "t{txn}'s {}",
                            show(Some(v))
                        ))
                    ),
                });
            }
        }
    }
}

/// A transaction that began after a commit was acknowledged starts at or after its
/// commit timestamp, so it sees it.
fn check_real_time(
    history: &[TxnRecord],
    commit_of: &BTreeMap<u64, Settled>,
    violations: &mut Vec<TxnViolation>,
) {
    let acknowledged: Vec<(&TxnRecord, u64)> = history
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Committed(_)) && !r.causal)
        .filter_map(|r| commit_of.get(&r.id).map(|s| (r, s.commit_ts)))
        .collect();
    for later in history {
        let Some(start_ts) = later.start_ts else {
            continue;
        };
        for (earlier, commit_ts) in &acknowledged {
            if later.began > earlier.ended && start_ts.version() < *commit_ts {
                violations.push(TxnViolation {
                    txn: later.id,
                    kind: "real-time order",
                    detail: format!(
                        "began after t{} was acknowledged at {commit_ts}, yet starts at {start_ts}",
                        earlier.id
                    ),
                });
            }
        }
    }
}

/// Every read of all accounts from one snapshot sums to the total.
fn check_bank(
    history: &[TxnRecord],
    accounts: &[Bytes],
    total: u64,
    violations: &mut Vec<TxnViolation>,
) {
    for record in history.iter().filter(|r| r.read_all) {
        let mut sum = 0u64;
        let mut unreadable = Vec::new();
        for account in accounts {
            let value = record
                .reads
                .iter()
                .find(|(key, _)| key == account)
                .and_then(|(_, value)| value.as_ref());
            match value.and_then(|v| parse_bank_value(v)) {
                Some((balance, _)) => sum += balance,
                None => unreadable.push(format!("{}={}", text(account), show(value))),
            }
        }
        if sum != total || !unreadable.is_empty() {
            violations.push(TxnViolation {
                txn: record.id,
                kind: "bank total",
                detail: format!(
                    "the accounts sum to {sum}, not {total} (unreadable: [{}])",
                    unreadable.join(",")
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Bytes {
        Bytes::copy_from_slice(k.as_bytes())
    }

    fn ts(v: u64) -> Option<Timestamp> {
        Some(Timestamp::from_version(v))
    }

    /// A transaction at `start` that read `reads` and wrote `writes`, with `outcome`.
    fn txn(
        id: u64,
        start: u64,
        reads: &[(&str, Option<(u64, u64)>)],
        writes: &[(&str, u64)],
        outcome: Outcome,
    ) -> TxnRecord {
        // The clock reads like the timestamps: a commit is acknowledged when it is taken.
        let ended = match &outcome {
            Outcome::Committed(at) => at.version(),
            _ => start,
        };
        TxnRecord {
            id,
            label: String::new(),
            start_ts: ts(start),
            began: start,
            ended,
            reads: reads
                .iter()
                .map(|(k, v)| (key(k), v.map(|(b, t)| bank_value(b, t))))
                .collect(),
            read_all: false,
            writes: writes
                .iter()
                .map(|(k, b)| (key(k), bank_value(*b, id)))
                .collect(),
            outcome,
            causal: false,
        }
    }

    fn committed(at: u64) -> Outcome {
        Outcome::Committed(Timestamp::from_version(at))
    }

    /// The store's record that matches `history`'s acknowledged and `extra` commits.
    fn record_of(history: &[TxnRecord], extra: &[(u64, u64)]) -> BTreeMap<Bytes, Vec<Version>> {
        let mut versions: BTreeMap<Bytes, Vec<Version>> = BTreeMap::new();
        for r in history {
            let commit = match &r.outcome {
                Outcome::Committed(ts) => Some(ts.version()),
                _ => extra.iter().find(|(id, _)| *id == r.id).map(|(_, c)| *c),
            };
            let (Some(commit), Some(start)) = (commit, r.start_ts) else {
                continue;
            };
            for (k, v) in &r.writes {
                versions.entry(k.clone()).or_default().push(Version {
                    start_ts: start.version(),
                    commit_ts: commit,
                    value: Some(v.clone()),
                });
            }
        }
        versions
    }

    fn kinds(violations: &[TxnViolation]) -> Vec<&'static str> {
        violations.iter().map(|v| v.kind).collect()
    }

    #[test]
    fn a_serial_bank_history_passes() {
        let history = vec![
            txn(0, 1, &[], &[("a", 10), ("b", 10)], committed(2)),
            txn(
                1,
                3,
                &[("a", Some((10, 0))), ("b", Some((10, 0)))],
                &[("a", 5), ("b", 15)],
                committed(4),
            ),
            TxnRecord {
                read_all: true,
                ..txn(
                    2,
                    5,
                    &[("a", Some((5, 1))), ("b", Some((15, 1)))],
                    &[],
                    Outcome::ReadOnly,
                )
            },
        ];
        let versions = record_of(&history, &[]);
        assert_eq!(
            check(&history, &versions, &[key("a"), key("b")], 20),
            Vec::new()
        );
    }

    #[test]
    fn concurrent_writers_of_a_key_are_a_write_write_overlap_and_a_lost_update() {
        let history = vec![
            txn(0, 1, &[], &[("a", 10)], committed(2)),
            txn(1, 3, &[("a", Some((10, 0)))], &[("a", 11)], committed(5)),
            txn(2, 4, &[("a", Some((10, 0)))], &[("a", 12)], committed(6)),
        ];
        let versions = record_of(&history, &[]);
        let found = check(&history, &versions, &[key("a")], 10);
        assert_eq!(kinds(&found), vec!["write-write overlap", "lost update"]);
        assert!(found.iter().all(|v| v.txn == 2), "{found:?}");
    }

    #[test]
    fn reads_of_aborted_future_and_old_writes_are_reported() {
        let history = vec![
            txn(0, 1, &[], &[("a", 10)], committed(2)),
            txn(1, 3, &[], &[("a", 11)], Outcome::Aborted("conflict".into())),
            txn(2, 4, &[], &[("a", 12)], committed(8)),
            txn(3, 9, &[], &[("a", 13)], committed(10)),
            // Dirty: t1 never committed.
            txn(4, 5, &[("a", Some((11, 1)))], &[], Outcome::ReadOnly),
            // From the future: t2 committed at 8, after the snapshot at 6.
            txn(5, 6, &[("a", Some((12, 2)))], &[], Outcome::ReadOnly),
            // Stale: t3 committed at 10, before the snapshot at 11.
            txn(6, 11, &[("a", Some((12, 2)))], &[], Outcome::ReadOnly),
            // Nobody wrote this.
            txn(7, 11, &[("a", Some((99, 42)))], &[], Outcome::ReadOnly),
            // Absent, though t0 committed it.
            txn(8, 3, &[("a", None)], &[], Outcome::ReadOnly),
        ];
        let versions = record_of(&history, &[]);
        let found = check(&history, &versions, &[key("a")], 10);
        assert_eq!(
            kinds(&found),
            vec![
                "dirty read",
                "read from the future",
                "stale read",
                "phantom read",
                "stale read"
            ],
            "{found:?}"
        );
    }

    #[test]
    fn unknown_outcomes_are_settled_from_the_store_and_lost_commits_are_reported() {
        let history = vec![
            txn(0, 1, &[], &[("a", 10), ("b", 10)], committed(2)),
            // Unknown, and the store committed it at 5: readers after 5 must see it.
            txn(
                1,
                3,
                &[],
                &[("a", 5), ("b", 15)],
                Outcome::Unknown("dropped".into()),
            ),
            txn(2, 6, &[("a", Some((5, 1)))], &[], Outcome::ReadOnly),
            txn(3, 6, &[("b", Some((10, 0)))], &[], Outcome::ReadOnly),
            // Acknowledged, but the store never recorded it.
            txn(4, 7, &[], &[("a", 7)], committed(8)),
        ];
        let mut versions = record_of(&history, &[(1, 5)]);
        if let Some(list) = versions.get_mut(&key("a")) {
            list.retain(|v| v.commit_ts != 8);
        }
        let found = check(&history, &versions, &[key("a"), key("b")], 20);
        assert_eq!(
            kinds(&found),
            vec!["lost commit", "stale read"],
            "{found:?}"
        );
        assert_eq!(found[1].txn, 3);
    }

    #[test]
    fn a_transaction_begun_after_an_acknowledged_commit_must_see_it() {
        let mut later = txn(2, 3, &[], &[], Outcome::ReadOnly);
        later.began = 10;
        let mut earlier = txn(1, 1, &[], &[("a", 1)], committed(4));
        earlier.ended = 9;
        let history = vec![earlier, later];
        let versions = record_of(&history, &[]);
        let found = check(&history, &versions, &[key("a")], 1);
        assert_eq!(kinds(&found), vec!["real-time order"], "{found:?}");
    }

    #[test]
    fn an_unbalanced_audit_is_reported() {
        let history = vec![
            txn(0, 1, &[], &[("a", 10), ("b", 10)], committed(2)),
            TxnRecord {
                read_all: true,
                ..txn(
                    1,
                    3,
                    &[("a", Some((10, 0))), ("b", None)],
                    &[],
                    Outcome::ReadOnly,
                )
            },
        ];
        let versions = record_of(&history, &[]);
        let found = check(&history, &versions, &[key("a"), key("b")], 20);
        assert_eq!(kinds(&found), vec!["stale read", "bank total"], "{found:?}");
    }
}
