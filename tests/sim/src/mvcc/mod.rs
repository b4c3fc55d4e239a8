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
//! [`LockAcquire::Wait`] and the caller (the lock manager, [`crate::lock_manager`]) queues
//! the request. After each command, [`MvccStore::take_released_locks`] tells which keys
//! became free and [`MvccStore::take_new_locks`] which keys got a new lock, so the caller can
//! answer a woken legacy waiter ([`MvccStore::lock_wait_woken`]), resume a ForceLock one
//! ([`MvccStore::resume_lock_wait`]) or refresh what waiters wait for; a wait that runs out
//! of time ends with [`MvccStore::lock_wait_timed_out`]. Waits feed the
//! [`DeadlockDetector`].
//!
//! Shared locks (`Op::SharedPessimisticLock`, prewritten as `Op::SharedLock`) are kept per
//! key as TiKV's `SharedLocks`: several transactions hold sub-locks of one key, an exclusive
//! request turns the set shrink-only and waits for it to empty, reads ignore it, and the key
//! is released only when its last holder commits or rolls back. The transaction status
//! cache ([`TxnState`]) is fed by commits, 1PC, status checks and `BroadcastTxnStatus`; the
//! cluster layer keeps one per store and installs the serving store's before each command.
//!
//! Not modelled: txn-file fields, flashback, old values for CDC, TiKV's short/long value
//! split.

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
mod txn_status;

#[cfg(test)]
mod tests;

pub use deadlock::{DeadlockDetector, key_hash};
pub use pessimistic::{LockAcquire, LockWait, LockWaitUpdate};
pub use store::ResolverLocks;
pub use store::{MvccStore, ReleasedLock};
pub(crate) use txn_status::TxnStatusCache;
pub use txn_status::{TXN_STATUS_CACHE_CAPACITY, TxnState};
