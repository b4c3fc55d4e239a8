//! client-go's range task runner (`txnkv/rangetask`): cut a key range into tasks of a few
//! regions each and run a handler on them, several at a time.
//!
//! ```no_run
//! # async fn demo(client: tikv_core::Client) -> Result<(), tikv_core::range_task::TaskFailure> {
//! use tikv_core::range_task::{RangeTaskRunner, TaskStat};
//!
//! let raw = client.raw();
//! let runner = RangeTaskRunner::new(raw.regions(), 4);
//! let total = runner
//!     .run_on_range("a".."z", |range| {
//!         let raw = raw.clone();
//!         async move {
//!             // A task's range is itself a range the raw API takes.
//!             let sum = raw.checksum(range).await?;
//!             println!("{} pairs", sum.total_kvs);
//!             Ok(TaskStat { completed_regions: 1, failed_regions: 0 })
//!         }
//!     })
//!     .await?;
//! # let _ = total;
//! # Ok(()) }
//! ```

use std::future::{Future, poll_fn};
use std::ops::{Bound, RangeBounds};
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;

use crate::error::Error;
use crate::regions::Regions;

/// Regions per task unless set (client-go `defaultRegionsPerTask`).
pub const DEFAULT_REGIONS_PER_TASK: u32 = 128;

/// A key range handed to a task handler: `[start_key, end_key)`, `end_key` empty meaning the
/// end of the key space (the form TiKV's requests carry).
///
/// It is a [`RangeBounds<[u8]>`](RangeBounds), so a handler can pass it straight to
/// [`RawClient::scan`](crate::RawClient::scan), [`delete_range`](crate::RawClient::delete_range)
/// and the like.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyRange {
    /// First key (empty: from the start of the key space).
    pub start_key: Bytes,
    /// First key after the range (empty: no bound).
    pub end_key: Bytes,
}

impl KeyRange {
    /// `range` in `[start_key, end_key)` form, or `None` when it holds no key (so callers
    /// skip the request). An excluded start or an included end becomes the key followed by
    /// a zero byte, the next key in byte order; an unbounded side becomes the empty key.
    pub(crate) fn from_bounds<K: AsRef<[u8]> + ?Sized>(
        range: &impl RangeBounds<K>,
    ) -> Option<Self> {
        let start_key = match range.start_bound() {
            Bound::Included(key) => Bytes::copy_from_slice(key.as_ref()),
            Bound::Excluded(key) => successor(key.as_ref()),
            Bound::Unbounded => Bytes::new(),
        };
        let end_key = match range.end_bound() {
            // No key sorts below the empty key; an empty `end_key` would read as unbounded.
            Bound::Excluded(key) if key.as_ref().is_empty() => return None,
            Bound::Excluded(key) => Bytes::copy_from_slice(key.as_ref()),
            Bound::Included(key) => successor(key.as_ref()),
            Bound::Unbounded => Bytes::new(),
        };
        let empty = !end_key.is_empty() && start_key >= end_key;
        (!empty).then_some(Self { start_key, end_key })
    }
}

/// The first key after `key` in byte order.
fn successor(key: &[u8]) -> Bytes {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next.into()
}

impl RangeBounds<[u8]> for KeyRange {
    fn start_bound(&self) -> Bound<&[u8]> {
        Bound::Included(&self.start_key)
    }

    fn end_bound(&self) -> Bound<&[u8]> {
        if self.end_key.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(&self.end_key)
        }
    }
}

/// What a task (or a whole run) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskStat {
    /// Regions finished.
    pub completed_regions: u64,
    /// Regions that failed.
    pub failed_regions: u64,
}

impl TaskStat {
    fn add(&mut self, other: Self) {
        self.completed_regions += other.completed_regions;
        self.failed_regions += other.failed_regions;
    }
}

/// A failed task or run: what was done anyway, and why it failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{error} ({} regions completed, {} failed)", stat.completed_regions, stat.failed_regions)]
pub struct TaskFailure {
    /// What was done before (or despite) the failure.
    pub stat: TaskStat,
    /// The first error.
    pub error: Error,
}

impl From<Error> for TaskFailure {
    fn from(error: Error) -> Self {
        Self {
            stat: TaskStat::default(),
            error,
        }
    }
}

/// Runs a handler over a key range, a few regions per task, `concurrency` tasks at a time.
#[derive(Clone, Debug)]
pub struct RangeTaskRunner {
    regions: Regions,
    concurrency: usize,
    regions_per_task: u32,
}

impl RangeTaskRunner {
    /// A runner over the regions of `regions`' key space, running up to `concurrency` tasks
    /// at once (at least one), [`DEFAULT_REGIONS_PER_TASK`] regions each.
    pub fn new(regions: Regions, concurrency: usize) -> Self {
        Self {
            regions,
            concurrency: concurrency.max(1),
            regions_per_task: DEFAULT_REGIONS_PER_TASK,
        }
    }

    /// Sets how many regions one task covers.
    ///
    /// Errors with [`Error::InvalidArgument`] for zero.
    pub fn with_regions_per_task(mut self, regions_per_task: u32) -> Result<Self, Error> {
        if regions_per_task == 0 {
            return Err(Error::InvalidArgument(
                "a range task needs at least one region".to_owned(),
            ));
        }
        self.regions_per_task = regions_per_task;
        Ok(self)
    }

    /// Cuts `range` (any Rust range of keys: `"a".."z"`, `"a"..`, `..=key`; for every key,
    /// `run_on_range::<[u8], _, _>(.., handler)`) at region boundaries into tasks of up to
    /// the configured number of regions, and runs `handler` on each, several at once. Each
    /// task's [`KeyRange`] is clamped to `range`. An empty range runs nothing. Returns the
    /// handlers' stats summed.
    ///
    /// Errors with the first failure: locating the regions, or a handler's error. No new
    /// task starts after a failure; the ones running finish, and the returned stats count
    /// everything done.
    pub async fn run_on_range<K, F, Fut>(
        &self,
        range: impl RangeBounds<K>,
        handler: F,
    ) -> Result<TaskStat, TaskFailure>
    where
        K: AsRef<[u8]> + ?Sized,
        F: Fn(KeyRange) -> Fut,
        Fut: Future<Output = Result<TaskStat, TaskFailure>>,
    {
        let mut total = TaskStat::default();
        let Some(KeyRange {
            start_key: start,
            end_key: end,
        }) = KeyRange::from_bounds(&range)
        else {
            return Ok(total);
        };
        let mut next_start = Some(start);
        let mut failure: Option<Error> = None;
        let mut running: Vec<Pin<Box<Fut>>> = Vec::new();
        loop {
            while failure.is_none() && running.len() < self.concurrency {
                let Some(from) = next_start.take() else {
                    break;
                };
                match self.next_task(from, &end).await {
                    Ok((task, rest)) => {
                        next_start = rest;
                        running.push(Box::pin(handler(task)));
                    }
                    Err(error) => failure = Some(error),
                }
            }
            if running.is_empty() {
                break;
            }
            let (index, outcome) = poll_fn(|cx| {
                for (index, task) in running.iter_mut().enumerate() {
                    if let Poll::Ready(outcome) = task.as_mut().poll(cx) {
                        return Poll::Ready((index, outcome));
                    }
                }
                Poll::Pending
            })
            .await;
            drop(running.swap_remove(index));
            match outcome {
                Ok(stat) => total.add(stat),
                Err(task_failure) => {
                    total.add(task_failure.stat);
                    failure.get_or_insert(task_failure.error);
                }
            }
        }
        match failure {
            None => Ok(total),
            Some(error) => Err(TaskFailure { stat: total, error }),
        }
    }

    /// The task starting at `from`: up to the configured number of regions, clamped to
    /// `end`; and where the next task starts (`None`: this was the last).
    async fn next_task(
        &self,
        from: Bytes,
        end: &Bytes,
    ) -> Result<(KeyRange, Option<Bytes>), Error> {
        let span = KeyRange {
            start_key: from.clone(),
            end_key: end.clone(),
        };
        let found = self
            .regions
            .locate_range_limited(span, self.regions_per_task)
            .await?;
        let region_end = found
            .last()
            .map(|location| location.end_key.clone())
            .unwrap_or_default();
        let last = region_end.is_empty() || (!end.is_empty() && region_end >= *end);
        let task_end = if last {
            end.clone()
        } else {
            region_end.clone()
        };
        let task = KeyRange {
            start_key: from,
            end_key: task_end,
        };
        Ok((task, (!last).then_some(region_end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: &'static str, end: &'static str) -> Option<KeyRange> {
        Some(KeyRange {
            start_key: Bytes::from_static(start.as_bytes()),
            end_key: Bytes::from_static(end.as_bytes()),
        })
    }

    #[test]
    fn rust_ranges_become_half_open_ranges_with_an_empty_end_for_no_bound() {
        assert_eq!(KeyRange::from_bounds(&("a".."k")), range("a", "k"));
        assert_eq!(KeyRange::from_bounds(&("a"..="k")), range("a", "k\0"));
        assert_eq!(KeyRange::from_bounds(&("a"..)), range("a", ""));
        assert_eq!(KeyRange::from_bounds(&(.."k")), range("", "k"));
        assert_eq!(KeyRange::from_bounds(&(..="k")), range("", "k\0"));
        assert_eq!(KeyRange::from_bounds::<[u8]>(&..), range("", ""));
        let excluded_start = (Bound::Excluded("a"), Bound::Included("k"));
        assert_eq!(
            KeyRange::from_bounds::<str>(&excluded_start),
            range("a\0", "k\0")
        );
        let from_empty = (Bound::Excluded(""), Bound::Unbounded);
        assert_eq!(KeyRange::from_bounds::<str>(&from_empty), range("\0", ""));
        // Owned and byte keys work the same way.
        let owned = String::from("a")..String::from("k");
        assert_eq!(KeyRange::from_bounds(&owned), range("a", "k"));
        let bytes = Bytes::from_static(b"a")..=Bytes::from_static(b"k");
        assert_eq!(KeyRange::from_bounds(&bytes), range("a", "k\0"));
    }

    #[test]
    fn ranges_holding_no_key_are_none() {
        assert_eq!(KeyRange::from_bounds(&("k".."a")), None);
        assert_eq!(KeyRange::from_bounds(&("a".."a")), None);
        assert_eq!(
            KeyRange::from_bounds(&(.."")),
            None,
            "nothing sorts below the empty key"
        );
        assert_eq!(KeyRange::from_bounds(&("a"..)), range("a", ""));
        let excluded_both = (Bound::Excluded("a"), Bound::Excluded("a\0"));
        assert_eq!(KeyRange::from_bounds::<str>(&excluded_both), None);
        assert_eq!(KeyRange::from_bounds(&("a"..="a")), range("a", "a\0"));
        // The empty key itself is a key: `..=""` holds it.
        assert_eq!(KeyRange::from_bounds(&(..="")), range("", "\0"));
    }

    #[test]
    fn a_key_range_reads_back_as_the_same_range() {
        for original in [
            range("a", "k"),
            range("a", ""),
            range("", "k"),
            range("", ""),
        ] {
            let original = original.unwrap_or_default();
            assert_eq!(KeyRange::from_bounds(&original), Some(original.clone()));
        }
        let unbounded = range("a", "").unwrap_or_default();
        assert_eq!(unbounded.end_bound(), Bound::Unbounded);
        assert!(unbounded.contains(&b"zzz"[..]));
        let bounded = range("a", "k").unwrap_or_default();
        assert!(bounded.contains(&b"a"[..]) && !bounded.contains(&b"k"[..]));
    }

    #[test]
    fn stats_add_up_and_failures_show_them() {
        let mut total = TaskStat::default();
        total.add(TaskStat {
            completed_regions: 2,
            failed_regions: 1,
        });
        total.add(TaskStat {
            completed_regions: 3,
            failed_regions: 0,
        });
        assert_eq!(
            total,
            TaskStat {
                completed_regions: 5,
                failed_regions: 1
            }
        );
        let failure = TaskFailure {
            stat: total,
            error: Error::Timeout,
        };
        assert_eq!(
            failure.to_string(),
            "operation timed out (5 regions completed, 1 failed)"
        );
        assert_eq!(TaskFailure::from(Error::Closed).stat, TaskStat::default());
    }
}
