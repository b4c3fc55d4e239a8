//! Deadlock detection for pessimistic lock waits: a wait-for graph between transactions.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use tikv_proto::deadlock::WaitForEntry;

/// The wait-for graph: which transaction waits for which, and on which keys.
///
/// Edges go from a waiting transaction's start ts to the start ts of the lock holder.
/// Adding an edge that closes a cycle is refused and reported as a deadlock instead.
#[derive(Clone, Debug, Default)]
pub struct DeadlockDetector {
    wait_for: BTreeMap<u64, BTreeMap<u64, Vec<(u64, Bytes)>>>,
}

impl DeadlockDetector {
    /// Creates an empty graph
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `txn_ts` waits for `lock_ts` on `key`, unless that closes a cycle.
    ///
    /// Returns `Some((deadlock_key_hash, wait_chain))` on a cycle: the hash of the key on
    /// which the cycle comes back to `txn_ts`, and the chain of waits from `lock_ts` around
    /// to `txn_ts`, ending with the refused wait itself. Nothing is recorded then.
    pub fn detect(
        &mut self,
        txn_ts: u64,
        lock_ts: u64,
        key_hash: u64,
        key: &Bytes,
    ) -> Option<(u64, Vec<WaitForEntry>)> {
        if let Some(keys) = self
            .wait_for
            .get_mut(&txn_ts)
            .and_then(|edges| edges.get_mut(&lock_ts))
        {
            // Already waiting for this transaction: no new edge, so no new cycle.
            if !keys.iter().any(|(hash, _)| *hash == key_hash) {
                keys.push((key_hash, key.clone()));
            }
            return None;
        }
        if let Some((hash, mut chain)) = self.find_path(lock_ts, txn_ts) {
            chain.push(entry(txn_ts, lock_ts, key_hash, key));
            return Some((hash, chain));
        }
        self.wait_for
            .entry(txn_ts)
            .or_default()
            .insert(lock_ts, vec![(key_hash, key.clone())]);
        None
    }

    /// Forgets that `txn_ts` waits for `lock_ts` on the key with `key_hash`.
    pub fn clean_up_wait_for(&mut self, txn_ts: u64, lock_ts: u64, key_hash: u64) {
        let Some(edges) = self.wait_for.get_mut(&txn_ts) else {
            return;
        };
        if let Some(keys) = edges.get_mut(&lock_ts) {
            keys.retain(|(hash, _)| *hash != key_hash);
            if keys.is_empty() {
                edges.remove(&lock_ts);
            }
        }
        if edges.is_empty() {
            self.wait_for.remove(&txn_ts);
        }
    }

    /// Forgets every wait of `txn_ts` (it finished or stopped waiting).
    pub fn clean_up(&mut self, txn_ts: u64) {
        self.wait_for.remove(&txn_ts);
    }

    /// Returns whether `txn_ts` currently waits for anybody
    pub fn is_waiting(&self, txn_ts: u64) -> bool {
        self.wait_for.contains_key(&txn_ts)
    }

    /// Depth-first search from `from` for `to`; returns the hash where the path reaches
    /// `to` and the chain of waits along it.
    fn find_path(&self, from: u64, to: u64) -> Option<(u64, Vec<WaitForEntry>)> {
        let mut predecessor: BTreeMap<u64, u64> = BTreeMap::new();
        let mut visited = BTreeSet::from([from]);
        let mut stack = vec![from];
        while let Some(current) = stack.pop() {
            let Some(edges) = self.wait_for.get(&current) else {
                continue;
            };
            for (&next, keys) in edges {
                if next == to {
                    let (hash, key) = keys.first().cloned().unwrap_or_default();
                    let mut chain = vec![entry(current, next, hash, &key)];
                    let mut node = current;
                    while let Some(&prev) = predecessor.get(&node) {
                        chain.push(self.edge_entry(prev, node));
                        node = prev;
                    }
                    chain.reverse();
                    return Some((hash, chain));
                }
                if visited.insert(next) {
                    predecessor.insert(next, current);
                    stack.push(next);
                }
            }
        }
        None
    }

    fn edge_entry(&self, txn_ts: u64, lock_ts: u64) -> WaitForEntry {
        let (hash, key) = self
            .wait_for
            .get(&txn_ts)
            .and_then(|edges| edges.get(&lock_ts))
            .and_then(|keys| keys.first().cloned())
            .unwrap_or_default();
        entry(txn_ts, lock_ts, hash, &key)
    }
}

/// A stable 64-bit hash of a key (FNV-1a; TiKV uses farmhash, only equality matters here).
pub fn key_hash(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn entry(txn: u64, wait_for_txn: u64, key_hash: u64, key: &Bytes) -> WaitForEntry {
    WaitForEntry {
        txn,
        wait_for_txn,
        key_hash,
        key: key.clone(),
        ..Default::default()
    }
}
