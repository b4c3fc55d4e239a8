//! TiKV's lock manager for the simulated cluster: the waiter manager's timeouts and the
//! per-key lock-waiting queues (`LockWaitQueues`), on virtual time.
//!
//! A pessimistic lock request that meets another transaction's lock is parked here. Its wait
//! ends at `now + min(wait_timeout, wait-for-lock-timeout)` (a request's 0 means the
//! configured timeout, as TiKV's `WaitTimeout::into_duration_with_ceiling`). When the lock
//! is released, [`LockManager::pop_for_waking_up`] hands out the queue's head, the waiter
//! with the smallest start ts (with all the shared-lock requests right behind it when the
//! head asks for a shared lock). Waking a legacy (normal-mode) waiter answers it
//! WriteConflict and arms the key's delayed wake-up: once the wake-up delay has passed since
//! the latest such wake-up, every waiter that was queued before it is answered WriteConflict
//! too ([`LockManagerEvent::DelayedWakeUp`], TiKV's `delayed_notify_all`), up to the first
//! ForceLock waiter, which is resumed instead. Waiters queued after the wake-up keep waiting.
//!
//! The manager only keeps the queues and the clock; answering waiters is the caller's job
//! ([`crate::sim::Sim`] with [`crate::mvcc::MvccStore`]).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::mvcc::LockWait;

/// TiKV's default `pessimistic-txn.wait-for-lock-timeout` (ms).
pub const DEFAULT_WAIT_FOR_LOCK_TIMEOUT_MS: u64 = 1000;

/// TiKV's default `pessimistic-txn.wake-up-delay-duration` (ms).
pub const DEFAULT_WAKE_UP_DELAY_DURATION_MS: u64 = 20;

/// The `[pessimistic-txn]` settings of TiKV's lock manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PessimisticTxnConfig {
    /// `wait-for-lock-timeout`: the wait of a request that asks for the default, and the
    /// longest wait any request gets (ms). TiKV refuses 0.
    pub wait_for_lock_timeout_ms: u64,
    /// `wake-up-delay-duration`: after a legacy waiter of a key is woken, how long the other
    /// waiters of the key keep waiting before they are answered WriteConflict too (ms).
    pub wake_up_delay_duration_ms: u64,
}

impl Default for PessimisticTxnConfig {
    fn default() -> Self {
        Self {
            wait_for_lock_timeout_ms: DEFAULT_WAIT_FOR_LOCK_TIMEOUT_MS,
            wake_up_delay_duration_ms: DEFAULT_WAKE_UP_DELAY_DURATION_MS,
        }
    }
}

impl PessimisticTxnConfig {
    /// Checks the settings as TiKV's `Config::validate` does.
    ///
    /// Errors with TiKV's message when the wait-for-lock timeout is 0.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.wait_for_lock_timeout_ms == 0 {
            return Err("pessimistic-txn.wait-for-lock-timeout can not be 0");
        }
        Ok(())
    }
}

/// A parked pessimistic lock request.
#[derive(Clone, Debug, PartialEq)]
pub struct Waiter {
    /// The id its caller waits under ([`crate::tikv::Execution::Parked`]).
    pub id: u64,
    /// The request and what it waits for.
    pub wait: LockWait,
    /// When the wait times out (virtual ms); kept when a resumed request waits again.
    pub deadline_ms: u64,
    /// When the lock it waits for last changed, if it did since it was parked.
    pub last_updated_ms: Option<u64>,
    /// The key's wake-up count when the waiter was queued: a delayed wake-up only answers
    /// waiters queued before the wake-up that armed it.
    legacy_wake_up_index: Option<usize>,
}

impl Waiter {
    /// How long ago the lock it waits for last changed, as TiKV reports it on a timeout:
    /// 0 when it never changed, otherwise at least 1 ms.
    pub fn duration_to_last_update_ms(&self, now_ms: u64) -> u64 {
        self.last_updated_ms
            .map_or(0, |at| now_ms.saturating_sub(at).max(1))
    }
}

/// One key's queue (TiKV's `KeyLockWaitState`).
#[derive(Clone, Debug, Default)]
struct KeyQueue {
    /// How many legacy waiters of the key were woken so far.
    legacy_wake_up_index: usize,
    /// The queued waiters as (start ts, id): the smallest start ts is woken first.
    queue: BTreeSet<(u64, u64)>,
    /// The transaction and commit ts of the latest release that woke a waiter.
    last_conflict_start_ts: u64,
    last_conflict_commit_ts: u64,
    /// When the armed delayed wake-up fires.
    delayed_wake_up_at_ms: Option<u64>,
}

/// What a due timer of the lock manager produced ([`LockManager::pop_due`]).
#[derive(Clone, Debug, PartialEq)]
pub enum LockManagerEvent {
    /// A wait ran out of time; the waiter has left its queue.
    TimedOut(Waiter),
    /// A key's delayed wake-up fired.
    DelayedWakeUp {
        /// Legacy waiters to answer WriteConflict, smallest start ts first.
        legacy: Vec<Waiter>,
        /// The ForceLock waiter the wake-up stopped at, to resume.
        resumable: Option<Waiter>,
        /// The transaction whose release armed the wake-up.
        conflict_start_ts: u64,
        /// Its commit ts (0 if it was rolled back).
        conflict_commit_ts: u64,
    },
}

/// The lock manager: parked requests with their deadlines and the per-key queues.
#[derive(Clone, Debug)]
pub struct LockManager {
    config: PessimisticTxnConfig,
    waiters: BTreeMap<u64, Waiter>,
    queues: BTreeMap<Bytes, KeyQueue>,
    next_id: u64,
}

impl LockManager {
    /// An empty manager with `config`.
    pub fn new(config: PessimisticTxnConfig) -> Self {
        Self {
            config,
            waiters: BTreeMap::new(),
            queues: BTreeMap::new(),
            next_id: 1,
        }
    }

    /// The settings in use.
    pub fn config(&self) -> PessimisticTxnConfig {
        self.config
    }

    /// How long a request that asked for `requested_ms` waits (`None` = the default): the
    /// configured timeout caps it (TiKV's `normalize_deadline`).
    pub fn wait_timeout_ms(&self, requested_ms: Option<u64>) -> u64 {
        let ceiling = self.config.wait_for_lock_timeout_ms;
        requested_ms.map_or(ceiling, |ms| ms.min(ceiling))
    }

    /// Parks `wait` at `now_ms`; returns the id its answer will come under.
    pub fn push(&mut self, wait: LockWait, now_ms: u64) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let deadline_ms = now_ms.saturating_add(self.wait_timeout_ms(wait.requested_timeout_ms()));
        self.enqueue(Waiter {
            id,
            wait,
            deadline_ms,
            last_updated_ms: None,
            legacy_wake_up_index: None,
        });
        id
    }

    /// Queues a resumed ForceLock waiter again: same id and deadline, and it counts as newly
    /// queued for the key's delayed wake-ups.
    pub fn push_back(&mut self, mut waiter: Waiter) {
        waiter.legacy_wake_up_index = None;
        self.enqueue(waiter);
    }

    fn enqueue(&mut self, mut waiter: Waiter) {
        let queue = self.queues.entry(waiter.wait.key.clone()).or_default();
        if waiter.legacy_wake_up_index.is_none() {
            waiter.legacy_wake_up_index = Some(queue.legacy_wake_up_index);
        }
        queue.queue.insert((waiter.wait.start_ts, waiter.id));
        self.waiters.insert(waiter.id, waiter);
    }

    /// The lock on `key` was released by `conflict_start_ts` (committed at
    /// `conflict_commit_ts`, 0 if rolled back): takes the waiters to wake now (TiKV's
    /// `pop_for_waking_up`). That is the head of the key's queue, and when the head asks for
    /// a shared lock, every shared-lock waiter right behind it. Waking a legacy waiter arms
    /// (or pushes back to `now_ms` + the wake-up delay) the key's delayed wake-up if others
    /// still wait.
    pub fn pop_for_waking_up(
        &mut self,
        key: &[u8],
        conflict_start_ts: u64,
        conflict_commit_ts: u64,
        now_ms: u64,
    ) -> Vec<Waiter> {
        let Some(queue) = self.queues.get_mut(key) else {
            return Vec::new();
        };
        queue.last_conflict_start_ts = conflict_start_ts;
        queue.last_conflict_commit_ts = conflict_commit_ts;
        let Some((_, head_id)) = queue.queue.pop_first() else {
            self.queues.remove(key);
            return Vec::new();
        };
        let mut popped = vec![head_id];
        let head_shared = self
            .waiters
            .get(&head_id)
            .is_some_and(|waiter| waiter.wait.shared);
        if head_shared {
            while let Some(&(start_ts, id)) = queue.queue.first() {
                if !self
                    .waiters
                    .get(&id)
                    .is_some_and(|waiter| waiter.wait.shared)
                {
                    break;
                }
                queue.queue.remove(&(start_ts, id));
                popped.push(id);
            }
        }
        let woken: Vec<Waiter> = popped
            .into_iter()
            .filter_map(|id| self.waiters.remove(&id))
            .collect();
        let legacy_woken = woken.iter().filter(|w| !w.wait.is_force_lock()).count();
        queue.legacy_wake_up_index += legacy_woken;
        if legacy_woken > 0 && !queue.queue.is_empty() {
            // A delayed wake-up already armed is pushed back rather than doubled.
            queue.delayed_wake_up_at_ms =
                Some(now_ms.saturating_add(self.config.wake_up_delay_duration_ms));
        }
        if queue.queue.is_empty() {
            self.queues.remove(key);
        }
        woken
    }

    /// The next time [`pop_due`](Self::pop_due) has something to do.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let timeouts = self.waiters.values().map(|waiter| waiter.deadline_ms);
        let wake_ups = self
            .queues
            .values()
            .filter_map(|queue| queue.delayed_wake_up_at_ms);
        timeouts.chain(wake_ups).min()
    }

    /// Takes the earliest timer due at `now_ms`, if any: a timed-out waiter or a delayed
    /// wake-up. Timers due at the same ms go in a fixed order (timeouts first, then by id or
    /// key), so runs are reproducible.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<LockManagerEvent> {
        let timeout = self
            .waiters
            .values()
            .filter(|waiter| waiter.deadline_ms <= now_ms)
            .map(|waiter| (waiter.deadline_ms, waiter.id))
            .min();
        let wake_up = self
            .queues
            .iter()
            .filter_map(|(key, queue)| queue.delayed_wake_up_at_ms.map(|at| (at, key)))
            .filter(|(at, _)| *at <= now_ms)
            .min()
            .map(|(at, key)| (at, key.clone()));
        match (timeout, wake_up) {
            (Some((timeout_at, id)), wake_up)
                if wake_up.as_ref().is_none_or(|(at, _)| timeout_at <= *at) =>
            {
                self.remove(id).map(LockManagerEvent::TimedOut)
            }
            (_, Some((_, key))) => Some(self.delayed_wake_up(&key)),
            _ => None,
        }
    }

    /// TiKV's `delayed_notify_all` on `key`: pops the waiters queued before the latest
    /// legacy wake-up, stopping after the first ForceLock waiter.
    fn delayed_wake_up(&mut self, key: &Bytes) -> LockManagerEvent {
        let mut legacy = Vec::new();
        let mut resumable = None;
        let (mut conflict_start_ts, mut conflict_commit_ts) = (0, 0);
        if let Some(queue) = self.queues.get_mut(key) {
            queue.delayed_wake_up_at_ms = None;
            conflict_start_ts = queue.last_conflict_start_ts;
            conflict_commit_ts = queue.last_conflict_commit_ts;
            while let Some(&(start_ts, id)) = queue.queue.first() {
                let queued_later = self
                    .waiters
                    .get(&id)
                    .and_then(|waiter| waiter.legacy_wake_up_index)
                    .is_some_and(|index| index >= queue.legacy_wake_up_index);
                if queued_later {
                    break;
                }
                queue.queue.remove(&(start_ts, id));
                let Some(waiter) = self.waiters.remove(&id) else {
                    continue;
                };
                if waiter.wait.is_force_lock() {
                    resumable = Some(waiter);
                    break;
                }
                legacy.push(waiter);
            }
            if queue.queue.is_empty() {
                self.queues.remove(key);
            }
        }
        LockManagerEvent::DelayedWakeUp {
            legacy,
            resumable,
            conflict_start_ts,
            conflict_commit_ts,
        }
    }

    /// Takes waiter `id` out of the manager (it finished some other way).
    pub fn remove(&mut self, id: u64) -> Option<Waiter> {
        let waiter = self.waiters.remove(&id)?;
        let key = &waiter.wait.key;
        if let Some(queue) = self.queues.get_mut(key) {
            queue.queue.remove(&(waiter.wait.start_ts, id));
            if queue.queue.is_empty() {
                self.queues.remove(key);
            }
        }
        Some(waiter)
    }

    /// The ids of the requests queued on `key`, in wake-up order.
    pub fn queued_on(&self, key: &[u8]) -> Vec<u64> {
        self.queues
            .get(key)
            .map(|queue| queue.queue.iter().map(|(_, id)| *id).collect())
            .unwrap_or_default()
    }

    /// Parked waiter `id`, to update what it waits for.
    pub fn waiter_mut(&mut self, id: u64) -> Option<&mut Waiter> {
        self.waiters.get_mut(&id)
    }

    /// Parked waiter `id`.
    pub fn waiter(&self, id: u64) -> Option<&Waiter> {
        self.waiters.get(&id)
    }

    /// How many requests are parked.
    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    /// Whether no request is parked.
    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// When `key`'s delayed wake-up fires, if one is armed.
    pub fn delayed_wake_up_at_ms(&self, key: &[u8]) -> Option<u64> {
        self.queues.get(key)?.delayed_wake_up_at_ms
    }
}
