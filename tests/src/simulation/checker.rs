//! A checker over the history of raw operations: no acknowledged write is lost, no read sees
//! a value nobody wrote.
//!
//! Each key is a register. Every operation is an interval on a logical clock, from its
//! start to the moment its result was seen; a write takes effect at one point inside its
//! interval, or at any point after its start when it failed (its requests may still have
//! run, even after the failure was reported). A read of key `k` returning `v` is accepted
//! when some write of `v` to `k` started before the read finished, and no other write to `k`
//! both started after that write finished and finished before the read started (which would
//! have overwritten it for sure). Every key starts absent, as if deleted at time zero.
//!
//! Batch operations and scans are checked key by key: TiKV does not make them atomic across
//! regions either. A scan observes every key of its range up to the last pair it returned
//! (or the whole range when it returned fewer pairs than its limit).
//!
//! A write that is acknowledged but never applied is caught only when something reads the
//! key afterwards; [`final_reads`] turns a read of every key after the run into records, so
//! the checker sees the end state too.

use std::collections::BTreeMap;

use bytes::Bytes;
use tikv_core::Error;

use super::ops::{Answer, Op};

/// One operation of the history.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The operation's id, for reports.
    pub op: u64,
    /// What was asked.
    pub command: Op,
    /// When it started (logical clock).
    pub started: u64,
    /// When its result was seen and what it was; `None` while running.
    pub finished: Option<(u64, Result<Answer, Error>)>,
}

/// A read that no write explains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The reading operation.
    pub op: u64,
    /// The key.
    pub key: Bytes,
    /// The value it returned (`None`: absent).
    pub seen: Option<Bytes>,
    /// Values it could have returned.
    pub allowed: Vec<Option<Bytes>>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<Bytes>| {
            v.as_ref()
                .map_or("-".to_owned(), |v| String::from_utf8_lossy(v).into_owned())
        };
        let allowed: Vec<String> = self.allowed.iter().map(show).collect();
        write!(
            f,
            "op{} read {}={} but only [{}] were possible",
            self.op,
            String::from_utf8_lossy(&self.key),
            show(&self.seen),
            allowed.join(",")
        )
    }
}

#[derive(Clone, Debug)]
struct Write {
    value: Option<Bytes>,
    started: u64,
    /// `u64::MAX` when the write failed: it may take effect at any later time.
    finished: u64,
}

#[derive(Clone, Debug)]
struct Read {
    op: u64,
    value: Option<Bytes>,
    started: u64,
    finished: u64,
}

/// Checks the timestamps of `history`: a timestamp handed out to an operation that started
/// after another one finished must be above that one's (TSO is linearizable, across PD leader
/// changes too); returns a description of each pair out of order.
pub fn check_timestamps(history: &[Record]) -> Vec<String> {
    let stamps: Vec<(u64, u64, u64, u64)> = history
        .iter()
        .filter_map(|record| match &record.finished {
            Some((finished, Ok(Answer::Timestamp(ts)))) => {
                Some((record.op, record.started, *finished, ts.version()))
            }
            _ => None,
        })
        .collect();
    let mut out_of_order = Vec::new();
    for (op, _, finished, ts) in &stamps {
        for (later_op, later_start, _, later_ts) in &stamps {
            if later_start > finished && later_ts <= ts {
                out_of_order.push(format!("op{later_op} got {later_ts} after op{op} had {ts}"));
            }
        }
    }
    out_of_order
}

/// Checks `history` over the key space `keys` (every key operations may touch); returns
/// every read no write explains.
pub fn check(keys: &[Bytes], history: &[Record]) -> Vec<Violation> {
    let mut writes: BTreeMap<Bytes, Vec<Write>> = keys
        .iter()
        .map(|key| {
            let initial = Write {
                value: None,
                started: 0,
                finished: 0,
            };
            (key.clone(), vec![initial])
        })
        .collect();
    let mut reads: BTreeMap<Bytes, Vec<Read>> = BTreeMap::new();
    for record in history {
        let (finished, result) = match &record.finished {
            Some((at, result)) => (*at, Some(result)),
            None => (u64::MAX, None),
        };
        let ok = result.is_some_and(Result::is_ok);
        let write_end = if ok { finished } else { u64::MAX };
        let mut write = |key: &Bytes, value: Option<Bytes>| {
            writes.entry(key.clone()).or_default().push(Write {
                value,
                started: record.started,
                finished: write_end,
            });
        };
        match &record.command {
            Op::Put { key, value, .. } => write(key, Some(value.clone())),
            Op::BatchPut { pairs, .. } => {
                for (key, value) in pairs {
                    write(key, Some(value.clone()));
                }
            }
            Op::Delete { key, .. } => write(key, None),
            Op::BatchDelete { keys: deleted, .. } => {
                for key in deleted {
                    write(key, None);
                }
            }
            Op::DeleteRange { start, end, .. } => {
                for key in keys.iter().filter(|key| in_range(key, start, end)) {
                    write(key, None);
                }
            }
            _ => {}
        }
        let Some(Ok(output)) = result else {
            continue;
        };
        let mut read = |key: &Bytes, value: Option<Bytes>| {
            reads.entry(key.clone()).or_default().push(Read {
                op: record.op,
                value,
                started: record.started,
                finished,
            });
        };
        match (&record.command, output) {
            (Op::Get { key, .. }, Answer::Value(value)) => read(key, value.clone()),
            (Op::BatchGet { keys: asked, .. }, Answer::Values(values)) => {
                for (key, value) in asked.iter().zip(values) {
                    read(key, value.clone());
                }
            }
            (Op::Scan { start, end, limit }, Answer::Pairs(pairs)) => {
                let found: BTreeMap<&Bytes, &Bytes> = pairs.iter().map(|(k, v)| (k, v)).collect();
                let full = pairs.len() < *limit as usize;
                let last = pairs.last().map(|(key, _)| key);
                for key in keys.iter().filter(|key| in_range(key, start, end)) {
                    if !full && last.is_some_and(|last| key > last) {
                        break;
                    }
                    read(key, found.get(key).map(|v| (*v).clone()));
                }
                for (key, value) in pairs {
                    if !keys.contains(key) {
                        read(key, Some(value.clone()));
                    }
                }
            }
            _ => {}
        }
    }
    let mut violations = Vec::new();
    for (key, key_reads) in reads {
        let key_writes = writes.get(&key).map_or(&[][..], Vec::as_slice);
        for read in key_reads {
            // The latest start among writes that surely finished before the read started:
            // anything that finished before it is overwritten for sure.
            let horizon = key_writes
                .iter()
                .filter(|w| w.finished < read.started)
                .map(|w| w.started)
                .max()
                .unwrap_or(0);
            let allowed: Vec<&Write> = key_writes
                .iter()
                .filter(|w| w.started < read.finished && w.finished >= horizon)
                .collect();
            if !allowed.iter().any(|w| w.value == read.value) {
                let mut values: Vec<Option<Bytes>> =
                    allowed.iter().map(|w| w.value.clone()).collect();
                values.sort();
                values.dedup();
                violations.push(Violation {
                    op: read.op,
                    key: key.clone(),
                    seen: read.value,
                    allowed: values,
                });
            }
        }
    }
    violations
}

/// Reads every key of `keys` once more after a run, as records that start after every
/// record of `history` finished (each read retried until it succeeds, at most `attempts`
/// times): the end state, for [`check`] to explain.
///
/// Errors with the last error of a key that could not be read.
pub async fn final_reads(
    client: &tikv_core::Client,
    keys: &[Bytes],
    history: &[Record],
    attempts: usize,
) -> Result<Vec<Record>, Error> {
    let mut clock = history
        .iter()
        .map(|record| {
            record
                .finished
                .as_ref()
                .map_or(record.started, |(at, _)| *at)
        })
        .max()
        .unwrap_or(0);
    let first_op = history.iter().map(|record| record.op).max().unwrap_or(0) + 1;
    let mut reads = Vec::with_capacity(keys.len());
    for (index, key) in keys.iter().enumerate() {
        let op = Op::Get { key: key.clone() };
        let mut last = Error::Closed;
        let mut answer = None;
        for _ in 0..attempts.max(1) {
            match op.run(client).await {
                Ok(value) => {
                    answer = Some(value);
                    break;
                }
                Err(err) => last = err,
            }
        }
        let Some(answer) = answer else {
            return Err(last);
        };
        clock += 2;
        reads.push(Record {
            op: first_op + index as u64,
            command: op,
            started: clock - 1,
            finished: Some((clock, Ok(answer))),
        });
    }
    Ok(reads)
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    key >= start && (end.is_empty() || key < end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_read_of_a_lost_write_is_reported() {
        // An acknowledged write nothing read afterwards: only the final read can tell.
        let history = [put(1, "a", "x", 1, Some(2)), get(2, "a", None, 3, 4)];
        let violations = check(&keys(), &history);
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].seen, None);
        assert_eq!(violations[0].allowed, vec![Some(Bytes::from_static(b"x"))]);
    }

    fn put(op: u64, key: &str, value: &str, started: u64, finished: Option<u64>) -> Record {
        Record {
            op,
            command: Op::put(key, value),
            started,
            finished: finished.map(|at| (at, Ok(Answer::Unit))),
        }
    }

    fn get(op: u64, key: &str, seen: Option<&str>, started: u64, finished: u64) -> Record {
        Record {
            op,
            command: Op::get(key),
            started,
            finished: Some((
                finished,
                Ok(Answer::Value(
                    seen.map(|v| Bytes::copy_from_slice(v.as_bytes())),
                )),
            )),
        }
    }

    fn keys() -> Vec<Bytes> {
        vec![Bytes::from_static(b"a")]
    }

    #[test]
    fn lost_write_is_reported() {
        let history = [
            put(1, "a", "x", 1, Some(2)),
            put(2, "a", "y", 3, Some(4)),
            get(3, "a", Some("x"), 5, 6),
        ];
        let violations = check(&keys(), &history);
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].allowed, vec![Some(Bytes::from_static(b"y"))]);
    }

    #[test]
    fn concurrent_and_failed_writes_are_uncertain() {
        let history = [
            put(1, "a", "x", 1, Some(2)),
            // Overlaps the read: either value may be seen.
            put(2, "a", "y", 3, Some(8)),
            get(3, "a", Some("x"), 4, 5),
            get(4, "a", Some("y"), 6, 7),
            // Failed: may apply at any time after it started.
            put(5, "a", "z", 9, None),
            get(6, "a", Some("y"), 10, 11),
            get(7, "a", Some("z"), 12, 13),
        ];
        assert_eq!(check(&keys(), &history), Vec::new());
    }

    #[test]
    fn phantom_and_premature_reads_are_reported() {
        let history = [
            get(1, "a", Some("never"), 1, 2),
            get(2, "a", Some("later"), 3, 4),
            put(3, "a", "later", 5, Some(6)),
        ];
        assert_eq!(check(&keys(), &history).len(), 2);
    }

    #[test]
    fn scan_observes_absent_keys_up_to_its_limit() {
        let keys: Vec<Bytes> = ["a", "b", "c"]
            .iter()
            .map(|k| Bytes::copy_from_slice(k.as_bytes()))
            .collect();
        let scan = |op, started, pairs: Vec<(&str, &str)>| Record {
            op,
            command: Op::scan("", "", 1),
            started,
            finished: Some((
                started + 1,
                Ok(Answer::Pairs(
                    pairs
                        .into_iter()
                        .map(|(k, v)| {
                            (
                                Bytes::copy_from_slice(k.as_bytes()),
                                Bytes::copy_from_slice(v.as_bytes()),
                            )
                        })
                        .collect(),
                )),
            )),
        };
        let history = [
            put(1, "a", "x", 1, Some(2)),
            put(2, "c", "z", 3, Some(4)),
            // Limit 1 reached at "a": "b" and "c" were not observed.
            scan(3, 5, vec![("a", "x")]),
            // Skipping "a" is a lost write.
            scan(4, 7, vec![("c", "z")]),
        ];
        let violations = check(&keys, &history);
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].op, 4);
        assert_eq!(violations[0].key, Bytes::from_static(b"a"));
    }
}
