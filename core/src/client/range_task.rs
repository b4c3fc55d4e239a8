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
use std::ops::RangeBounds;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;

use super::regions::Regions;

/// The range handed to each task (re-exported here: it is this module's currency).
pub use super::KeyRange;
use crate::error::Error;

/// Regions per task unless set (client-go `defaultRegionsPerTask`).
pub const DEFAULT_REGIONS_PER_TASK: u32 = 128;

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
