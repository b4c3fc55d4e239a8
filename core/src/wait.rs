//! The one wait list: operations parked on something a service is fetching, keyed by what
//! they wait for.
//!
//! Coalescing is this list and nothing else: the first waiter on a key makes the service
//! fetch it, later waiters on the same key only join, and when the answer comes every
//! waiter gets it, addressed by the id of its own call. A cancelled operation leaves every
//! list it was on.

use std::collections::BTreeMap;

use bytes::Bytes;
use smallvec::SmallVec;

use crate::outbox::{OpId, RequestId};

/// What an operation can wait for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum WaitKey {
    /// The configured keyspace (API V2) to be loaded.
    Keyspace,
    /// The region holding a routing key (or, reversed, the region just before it).
    Region {
        /// The routing key.
        key: Bytes,
        /// Whether the region just before `key` is wanted.
        reverse: bool,
    },
    /// A store's address.
    Store(u64),
    /// A timestamp from TSO (every waiter gets its own).
    Timestamp,
    /// Another operation's status check of the transaction that started at this
    /// timestamp (the lock resolver's coalescing).
    TxnStatus(u64),
    /// The transaction safe point being fetched for reads (see `ops::visibility`).
    SafePoint,
}

/// One parked call: the operation and the id its answer will carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Waiter {
    /// Who waits.
    pub(crate) op: OpId,
    /// The id of the call the answer is for.
    pub(crate) call: RequestId,
}

/// Operations parked per key, in arrival order.
#[derive(Debug, Default)]
pub(crate) struct Waits {
    parked: BTreeMap<WaitKey, SmallVec<[Waiter; 2]>>,
}

impl Waits {
    /// Parks `waiter` on `key`. Returns `true` when it is the first waiter (the caller must
    /// start fetching what `key` names). Every call parked is answered, even several of one
    /// operation: an operation tells its calls apart by their ids.
    pub(crate) fn park(&mut self, key: WaitKey, waiter: Waiter) -> bool {
        let waiters = self.parked.entry(key).or_default();
        let first = waiters.is_empty();
        waiters.push(waiter);
        first
    }

    /// Whether anyone waits on `key`.
    pub(crate) fn is_waited(&self, key: &WaitKey) -> bool {
        self.parked.get(key).is_some_and(|w| !w.is_empty())
    }

    /// Every waiter of `key`, in arrival order; the key is no longer waited on.
    pub(crate) fn take(&mut self, key: &WaitKey) -> SmallVec<[Waiter; 2]> {
        self.parked.remove(key).unwrap_or_default()
    }

    /// The first `n` waiters of `key`; later ones stay parked.
    pub(crate) fn take_first(&mut self, key: &WaitKey, n: usize) -> SmallVec<[Waiter; 2]> {
        let Some(waiters) = self.parked.get_mut(key) else {
            return SmallVec::new();
        };
        if waiters.len() <= n {
            return self.take(key);
        }
        waiters.drain(..n).collect()
    }

    /// Removes `op` from every list (it finished or was cancelled).
    pub(crate) fn forget(&mut self, op: OpId) {
        if self.parked.is_empty() {
            return;
        }
        self.parked.retain(|_, waiters| {
            waiters.retain(|w| w.op != op);
            !waiters.is_empty()
        });
    }

    /// Appends every parked call (see `Core::leftovers`).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn leftovers(&self, left: &mut Vec<String>) {
        for (key, waiters) in &self.parked {
            left.push(format!("{key:?} awaited by {waiters:?}"));
        }
    }

    /// Whether no call is parked.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.parked.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Outbox;
    use crate::time::Time;

    fn waiter(out: &mut Outbox, op: OpId) -> Waiter {
        Waiter {
            op,
            call: out.next_id(),
        }
    }

    #[test]
    fn first_waiter_fetches_later_ones_join() {
        let mut out = Outbox::new(Time::ZERO);
        let mut waits = Waits::default();
        let a = OpId::FIRST;
        let b = a.next();
        let key = WaitKey::Store(3);
        let wa = waiter(&mut out, a);
        assert!(waits.park(key.clone(), wa));
        assert!(!waits.park(key.clone(), waiter(&mut out, b)));
        let again = waiter(&mut out, a);
        assert!(!waits.park(key.clone(), again));
        assert_eq!(waits.parked.values().map(SmallVec::len).sum::<usize>(), 3);
        let taken = waits.take(&key);
        assert_eq!(taken.len(), 3, "every call is answered");
        assert_eq!(taken[2], again);
        assert_eq!(taken[0], wa, "arrival order");
        assert!(!waits.is_waited(&key));
    }

    #[test]
    fn forget_leaves_every_list_and_take_first_splits() {
        let mut out = Outbox::new(Time::ZERO);
        let mut waits = Waits::default();
        let ops: Vec<OpId> = std::iter::successors(Some(OpId::FIRST), |op| Some(op.next()))
            .take(4)
            .collect();
        for op in &ops {
            let w = waiter(&mut out, *op);
            waits.park(WaitKey::Timestamp, w);
            waits.park(WaitKey::Keyspace, w);
        }
        waits.forget(ops[1]);
        assert_eq!(waits.parked.values().map(SmallVec::len).sum::<usize>(), 6);
        let first = waits.take_first(&WaitKey::Timestamp, 2);
        assert_eq!(
            first.iter().map(|w| w.op).collect::<Vec<_>>(),
            [ops[0], ops[2]]
        );
        assert_eq!(waits.take(&WaitKey::Timestamp).len(), 1);
        for op in &ops {
            waits.forget(*op);
        }
        assert!(waits.is_empty());
    }
}
