//! Percolator MVCC storage of the simulated cluster, modelled on TiKV's transaction layer.
//!
//! [`MvccStore`] is one global, in-memory, deterministic store. It knows nothing about
//! regions or the network: the cluster layer validates region, epoch and leader first and
//! then calls the method named after the TiKV command with the `kvrpcpb` request; keys are
//! stored exactly as they arrive. Each command is atomic.
//!
//! Per key the store keeps at most one lock and a list of write records keyed by commit ts
//! (Put, Delete, Lock, Rollback; values live inside the records). The semantics follow
//! TiKV's `storage/txn/actions` and `commands`: the same conflict checks, the same
//! `KeyError` fields, async commit and 1PC timestamps derived from `max_ts` (the cluster
//! layer installs the serving store's before each command, see [`crate::concurrency`]),
//! lock TTLs judged by the physical part (`ts >> 18`) of `current_ts`.
//!
//! Pessimistic lock waits do not block: [`MvccStore::pessimistic_lock`] returns
//! [`LockAcquire::Wait`] and the caller queues the request. After each command,
//! [`MvccStore::take_released_locks`] tells which keys became free, so the caller can
//! [`MvccStore::wake_up_lock_wait`]; a wait that runs out of time ends with
//! [`MvccStore::lock_wait_timed_out`]. Waits feed the [`DeadlockDetector`].
//!
//! Not modelled: shared locks (`Op::SharedLock`), txn-file fields, flashback, the
//! transaction status cache, old values for CDC, TiKV's short/long value split.

mod actions;
mod check;
mod commit;
mod deadlock;
mod error;
mod pessimistic;
mod prewrite;
mod read;
mod resolve;
mod store;

#[cfg(test)]
mod tests;

pub use deadlock::{DeadlockDetector, key_hash};
pub use pessimistic::{DEFAULT_LOCK_WAIT_TIMEOUT_MS, LockAcquire, LockWait};
pub use store::{MvccStore, ReleasedLock};
