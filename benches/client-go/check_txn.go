package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	tikverr "github.com/tikv/client-go/v2/error"
	"github.com/tikv/client-go/v2/kv"
	"github.com/tikv/client-go/v2/tikv"
	"github.com/tikv/client-go/v2/txnkv"
	"github.com/tikv/client-go/v2/txnkv/transaction"
)

// Transactional scenario keys are `<prefix>txn/<scenario>/<nnn>`; split_scatter splits the
// transactional key space at key 010 of every scenario in txnSplitScenarios.
var txnSplitScenarios = []string{"2pc", "async_commit", "resolve", "snapshot", "gc"}

func txnKey(o *options, scenario string, i int) []byte {
	return []byte(fmt.Sprintf("%stxn/%s/%03d", o.prefix, scenario, i))
}

// txnCheck holds what the transactional scenarios share.
type txnCheck struct {
	o     *options
	store *txnkv.Client
}

func (c *txnCheck) scenarios() []scenario {
	return []scenario{
		{"split_scatter", c.splitScatter},
		{"txn_optimistic_2pc", c.optimistic},
		{"txn_write_conflict", c.writeConflict},
		{"txn_async_commit", c.asyncCommit},
		{"txn_1pc", c.onePC},
		{"txn_pessimistic_lock_wait", c.pessimisticWait},
		{"txn_deadlock", c.deadlock},
		{"txn_resolve_committed_lock", func(ctx context.Context) error { return c.resolve(ctx, true) }},
		{"txn_resolve_expired_lock", func(ctx context.Context) error { return c.resolve(ctx, false) }},
		{"txn_snapshot_old_ts", c.snapshotOldTS},
		// Last: it moves the GC safe point to now, so older snapshots are gone after it.
		{"gc_safe_point", c.gcSafePoint},
		{"gc_saved_safe_point_in_pd_etcd", c.savedSafePoint},
	}
}

// commit writes pairs (a nil value deletes) in one optimistic transaction and returns its
// commit ts.
func (c *txnCheck) commit(ctx context.Context, keys [][]byte, values [][]byte, setup func(*transaction.KVTxn)) (uint64, error) {
	txn, err := c.store.Begin()
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	if setup != nil {
		setup(txn)
	}
	for i, key := range keys {
		if values[i] == nil {
			err = txn.Delete(key)
		} else {
			err = txn.Set(key, values[i])
		}
		if err != nil {
			return 0, err
		}
	}
	if err := txn.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return transaction.TxnProbe{KVTxn: txn}.GetCommitTS(), nil
}

// read reads key at ts; nil when it does not exist.
func (c *txnCheck) read(ctx context.Context, ts uint64, key []byte) ([]byte, error) {
	entry, err := c.store.GetSnapshot(ts).Get(ctx, key)
	if tikverr.IsErrNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return entry.Value, nil
}

func (c *txnCheck) now(ctx context.Context) (uint64, error) {
	return c.store.GetTimestamp(ctx)
}

// regionOf asks PD (not the region cache, which may predate a split) for key's region.
func (c *txnCheck) regionOf(ctx context.Context, key []byte) (uint64, []byte, error) {
	region, err := c.store.GetPDClient().GetRegion(ctx, key)
	if err != nil {
		return 0, nil, err
	}
	if region == nil {
		return 0, nil, fmt.Errorf("PD knows no region for %q", key)
	}
	return region.Meta.GetId(), region.Meta.GetStartKey(), nil
}

func (c *txnCheck) splitScatter(ctx context.Context) error {
	var splitKeys [][]byte
	for _, name := range txnSplitScenarios {
		splitKeys = append(splitKeys, txnKey(c.o, name, 10))
	}
	ids, err := c.store.SplitRegions(ctx, splitKeys, true, nil)
	if err != nil {
		return fmt.Errorf("split: %w", err)
	}
	if len(ids) != len(splitKeys) {
		return fmt.Errorf("split at %d keys made %d regions", len(splitKeys), len(ids))
	}
	for _, id := range ids {
		if err := c.store.WaitScatterRegionFinish(ctx, id, 0); err != nil {
			return fmt.Errorf("wait for the scatter of region %d: %w", id, err)
		}
	}
	for _, key := range splitKeys {
		_, start, err := c.regionOf(ctx, key)
		if err != nil {
			return fmt.Errorf("PD lookup of %q: %w", key, err)
		}
		if !bytes.Equal(start, key) {
			return fmt.Errorf("PD's region of split key %q starts at %q", key, start)
		}
	}
	// A second split at an existing boundary changes nothing and does not fail.
	if _, err := c.store.SplitRegions(ctx, splitKeys[:1], false, nil); err != nil {
		return fmt.Errorf("split at an existing boundary: %w", err)
	}
	return nil
}

func (c *txnCheck) scenarioPairs(name string, n int) ([][]byte, [][]byte) {
	keys := make([][]byte, n)
	values := make([][]byte, n)
	for i := range keys {
		// Every fourth key, from 000, so that the range crosses the split at 010.
		keys[i] = txnKey(c.o, name, i*4)
		values[i] = []byte(fmt.Sprintf("%s-%d", name, i))
	}
	return keys, values
}

func (c *txnCheck) optimistic(ctx context.Context) error {
	keys, values := c.scenarioPairs("2pc", 5)
	before, err := c.now(ctx)
	if err != nil {
		return err
	}
	commitTS, err := c.commit(ctx, keys, values, nil)
	if err != nil {
		return err
	}
	if commitTS <= before {
		return fmt.Errorf("commit ts %d not after %d", commitTS, before)
	}
	r1, _, err := c.regionOf(ctx, keys[0])
	if err != nil {
		return err
	}
	r2, _, err := c.regionOf(ctx, keys[len(keys)-1])
	if err != nil {
		return err
	}
	if r1 == r2 {
		return fmt.Errorf("the transaction's keys lie in one region")
	}
	snapshot := c.store.GetSnapshot(commitTS)
	got, err := snapshot.BatchGet(ctx, keys)
	if err != nil {
		return fmt.Errorf("batch get: %w", err)
	}
	for i, key := range keys {
		if !bytes.Equal(got[string(key)].Value, values[i]) {
			return fmt.Errorf("key %q reads %q at the commit ts", key, got[string(key)].Value)
		}
	}
	if old, err := c.read(ctx, commitTS-1, keys[0]); err != nil || old != nil {
		return fmt.Errorf("read just before the commit ts: %q, %v", old, err)
	}
	// A scan across the region boundary.
	iter, err := snapshot.Iter(keys[0], txnKey(c.o, "2pc", 999))
	if err != nil {
		return fmt.Errorf("iter: %w", err)
	}
	defer iter.Close()
	n := 0
	for ; iter.Valid(); n++ {
		if n >= len(keys) || !bytes.Equal(iter.Key(), keys[n]) || !bytes.Equal(iter.Value(), values[n]) {
			return fmt.Errorf("scan pair %d is %q=%q", n, iter.Key(), iter.Value())
		}
		if err := iter.Next(); err != nil {
			return fmt.Errorf("iter next: %w", err)
		}
	}
	if n != len(keys) {
		return fmt.Errorf("scan returned %d pairs, want %d", n, len(keys))
	}
	return nil
}

func (c *txnCheck) writeConflict(ctx context.Context) error {
	key := txnKey(c.o, "conflict", 0)
	first, err := c.store.Begin()
	if err != nil {
		return err
	}
	second, err := c.store.Begin()
	if err != nil {
		return err
	}
	if err := first.Set(key, []byte("first")); err != nil {
		return err
	}
	if err := second.Set(key, []byte("second")); err != nil {
		return err
	}
	if err := first.Commit(ctx); err != nil {
		return fmt.Errorf("first commit: %w", err)
	}
	err = second.Commit(ctx)
	if err == nil {
		return fmt.Errorf("the second writer committed over a newer write")
	}
	if !tikverr.IsErrWriteConflict(err) {
		return fmt.Errorf("the second commit failed, but not with a write conflict: %w", err)
	}
	got, err := c.read(ctx, math.MaxUint64, key)
	if err != nil || !bytes.Equal(got, []byte("first")) {
		return fmt.Errorf("after the conflict: %q, %v", got, err)
	}
	return nil
}

func (c *txnCheck) asyncCommit(ctx context.Context) error {
	keys, values := c.scenarioPairs("async_commit", 5)
	txn, err := c.store.Begin()
	if err != nil {
		return err
	}
	txn.SetEnableAsyncCommit(true)
	for i := range keys {
		if err := txn.Set(keys[i], values[i]); err != nil {
			return err
		}
	}
	if err := txn.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if !(transaction.TxnProbe{KVTxn: txn}).IsAsyncCommit() {
		return fmt.Errorf("the transaction did not commit with async commit")
	}
	commitTS := transaction.TxnProbe{KVTxn: txn}.GetCommitTS()
	if commitTS <= txn.StartTS() {
		return fmt.Errorf("commit ts %d not after start ts %d", commitTS, txn.StartTS())
	}
	for i, key := range keys {
		got, err := c.read(ctx, commitTS, key)
		if err != nil || !bytes.Equal(got, values[i]) {
			return fmt.Errorf("key %q at the commit ts: %q, %v", key, got, err)
		}
	}
	return nil
}

func (c *txnCheck) onePC(ctx context.Context) error {
	keys, values := c.scenarioPairs("1pc", 2)
	txn, err := c.store.Begin()
	if err != nil {
		return err
	}
	txn.SetEnable1PC(true)
	for i := range keys {
		if err := txn.Set(keys[i], values[i]); err != nil {
			return err
		}
	}
	if err := txn.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if !(transaction.TxnProbe{KVTxn: txn}).GetCommitter().IsOnePC() {
		return fmt.Errorf("the transaction did not commit in one phase")
	}
	for i, key := range keys {
		got, err := c.read(ctx, transaction.TxnProbe{KVTxn: txn}.GetCommitTS(), key)
		if err != nil || !bytes.Equal(got, values[i]) {
			return fmt.Errorf("key %q at the commit ts: %q, %v", key, got, err)
		}
	}
	return nil
}

// lock takes pessimistic locks on keys, waiting up to waitMs for other holders.
func (c *txnCheck) lock(ctx context.Context, txn *transaction.KVTxn, waitMs int64, keys ...[]byte) error {
	forUpdateTS, err := c.now(ctx)
	if err != nil {
		return err
	}
	return txn.LockKeys(ctx, kv.NewLockCtx(forUpdateTS, waitMs, time.Now()), keys...)
}

func (c *txnCheck) beginPessimistic() (*transaction.KVTxn, error) {
	txn, err := c.store.Begin()
	if err != nil {
		return nil, err
	}
	txn.SetPessimistic(true)
	return txn, nil
}

func (c *txnCheck) pessimisticWait(ctx context.Context) error {
	key := txnKey(c.o, "pessimistic", 0)
	holder, err := c.beginPessimistic()
	if err != nil {
		return err
	}
	if err := c.lock(ctx, holder, kv.LockNoWait, key); err != nil {
		return fmt.Errorf("holder lock: %w", err)
	}
	waiter, err := c.beginPessimistic()
	if err != nil {
		return err
	}
	// A waiter that may not wait fails at once.
	if err := c.lock(ctx, waiter, kv.LockNoWait, key); err == nil {
		return fmt.Errorf("a no-wait lock on a locked key succeeded")
	}
	const hold = 300 * time.Millisecond
	started := time.Now()
	done := make(chan error, 1)
	go func() { done <- c.lock(ctx, waiter, 5000, key) }()
	time.Sleep(hold)
	select {
	case err := <-done:
		return fmt.Errorf("the waiter returned while the lock was held: %v", err)
	default:
	}
	if err := holder.Set(key, []byte("holder")); err != nil {
		return err
	}
	if err := holder.Commit(ctx); err != nil {
		return fmt.Errorf("holder commit: %w", err)
	}
	err = <-done
	waited := time.Since(started)
	if waited < hold {
		return fmt.Errorf("the waiter waited %v, less than the lock was held", waited)
	}
	if err != nil {
		// Woken after the holder committed, the waiter's for_update_ts is stale: TiKV
		// answers WriteConflict and the caller retries with a new one.
		if !tikverr.IsErrWriteConflict(err) {
			return fmt.Errorf("the woken waiter failed: %w", err)
		}
		if err := c.lock(ctx, waiter, kv.LockNoWait, key); err != nil {
			return fmt.Errorf("the waiter's retry: %w", err)
		}
	}
	if err := waiter.Set(key, []byte("waiter")); err != nil {
		return err
	}
	if err := waiter.Commit(ctx); err != nil {
		return fmt.Errorf("waiter commit: %w", err)
	}
	got, err := c.read(ctx, math.MaxUint64, key)
	if err != nil || !bytes.Equal(got, []byte("waiter")) {
		return fmt.Errorf("final value %q, %v", got, err)
	}
	return nil
}

func (c *txnCheck) deadlock(ctx context.Context) error {
	a, b := txnKey(c.o, "deadlock", 0), txnKey(c.o, "deadlock", 1)
	first, err := c.beginPessimistic()
	if err != nil {
		return err
	}
	second, err := c.beginPessimistic()
	if err != nil {
		return err
	}
	if err := c.lock(ctx, first, kv.LockNoWait, a); err != nil {
		return fmt.Errorf("first locks a: %w", err)
	}
	if err := c.lock(ctx, second, kv.LockNoWait, b); err != nil {
		return fmt.Errorf("second locks b: %w", err)
	}
	firstDone := make(chan error, 1)
	go func() { firstDone <- c.lock(ctx, first, 5000, b) }()
	time.Sleep(200 * time.Millisecond)
	err = c.lock(ctx, second, 5000, a)
	var deadlock *tikverr.ErrDeadlock
	if !errors.As(err, &deadlock) {
		_ = second.Rollback()
		_ = first.Rollback()
		return fmt.Errorf("closing the cycle returned %v, want a deadlock", err)
	}
	if deadlock.GetLockTs() == 0 || len(deadlock.GetLockKey()) == 0 {
		return fmt.Errorf("deadlock error without the lock it waited for: %v", deadlock)
	}
	if err := second.Rollback(); err != nil {
		return fmt.Errorf("second rollback: %w", err)
	}
	// Woken by the rollback, a waiter in TiKV's legacy wake-up mode is answered with a
	// WriteConflict (reason PessimisticRetry) and retries with a new for_update_ts.
	if err := <-firstDone; err != nil {
		if !tikverr.IsErrWriteConflict(err) {
			return fmt.Errorf("first, after the second rolled back: %w", err)
		}
		if err := c.lock(ctx, first, kv.LockNoWait, b); err != nil {
			return fmt.Errorf("first's retry: %w", err)
		}
	}
	if err := first.Set(a, []byte("a")); err != nil {
		return err
	}
	if err := first.Set(b, []byte("b")); err != nil {
		return err
	}
	if err := first.Commit(ctx); err != nil {
		return fmt.Errorf("first commit: %w", err)
	}
	return nil
}

// resolve leaves a transaction's locks behind (prewritten, the primary committed or not)
// and reads a secondary key, which must resolve the lock.
func (c *txnCheck) resolve(ctx context.Context, commitPrimary bool) error {
	name := "resolve"
	offset := 0
	if !commitPrimary {
		offset = 1
	}
	primary, secondary := txnKey(c.o, name, offset), txnKey(c.o, name, 20+offset)
	_, txn, err := prewriteOnly(ctx, c.store, [][]byte{primary, secondary}, [][]byte{[]byte("p"), []byte("s")}, commitPrimary)
	if err != nil {
		return err
	}
	reader, err := c.store.Begin()
	if err != nil {
		return err
	}
	entry, err := reader.Get(ctx, secondary)
	if commitPrimary {
		if err != nil || !bytes.Equal(entry.Value, []byte("s")) {
			return fmt.Errorf("the secondary of a committed transaction reads %q, %v", entry.Value, err)
		}
	} else if !tikverr.IsErrNotFound(err) {
		return fmt.Errorf("the secondary of an expired transaction reads %q, %v", entry.Value, err)
	}
	// A read resolves what it met in the background (client-go's ResolveLocksForRead), and
	// judges expiry by a timestamp up to 2 s old: a lock younger than that may be read
	// around rather than resolved. Resolve what is left as a caller would, until none is.
	return c.resolveUntilGone(ctx, secondary, txn.StartTS())
}

// resolveUntilGone scans key's locks and resolves them with client-go's lock resolver
// until none is left (bounded: the resolver's current ts is at most 2 s stale).
func (c *txnCheck) resolveUntilGone(ctx context.Context, key []byte, startTS uint64) error {
	end := append(append([]byte{}, key...), 0)
	deadline := time.Now().Add(5 * time.Second)
	for {
		now, err := c.now(ctx)
		if err != nil {
			return err
		}
		locks, err := tikv.StoreProbe{KVStore: c.store.KVStore}.ScanLocks(ctx, key, end, now)
		if err != nil {
			return fmt.Errorf("scan locks: %w", err)
		}
		if len(locks) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%q is still locked by transaction %d", key, startTS)
		}
		bo := tikv.NewBackofferWithVars(ctx, 5000, nil)
		if _, err := c.store.GetLockResolver().ResolveLocks(bo, now, locks); err != nil {
			return fmt.Errorf("resolve locks: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// prewriteOnly prewrites pairs in one transaction whose lock TTL is 1 ms, commits only the
// primary (the first key) when commitPrimary, and stops there, as a client that died would.
func prewriteOnly(ctx context.Context, store *txnkv.Client, keys, values [][]byte, commitPrimary bool) (transaction.CommitterProbe, *transaction.KVTxn, error) {
	txn, err := store.Begin()
	if err != nil {
		return transaction.CommitterProbe{}, nil, err
	}
	for i := range keys {
		if err := txn.Set(keys[i], values[i]); err != nil {
			return transaction.CommitterProbe{}, nil, err
		}
	}
	committer, err := transaction.TxnProbe{KVTxn: txn}.NewCommitter(1)
	if err != nil {
		return committer, nil, fmt.Errorf("committer: %w", err)
	}
	committer.SetPrimaryKey(keys[0])
	committer.SetLockTTL(1)
	if err := committer.PrewriteAllMutations(ctx); err != nil {
		return committer, nil, fmt.Errorf("prewrite: %w", err)
	}
	if commitPrimary {
		commitTS, err := store.GetTimestamp(ctx)
		if err != nil {
			return committer, nil, err
		}
		committer.SetCommitTS(commitTS)
		if err := committer.CommitMutations(ctx); err != nil {
			return committer, nil, fmt.Errorf("commit primary: %w", err)
		}
	}
	committer.CloseTTLManager()
	// Let the lock's 1 ms TTL pass on the TSO's clock.
	time.Sleep(5 * time.Millisecond)
	return committer, txn, nil
}

func (c *txnCheck) snapshotOldTS(ctx context.Context) error {
	keys, values := c.scenarioPairs("snapshot", 5)
	oldTS, err := c.commit(ctx, keys, values, nil)
	if err != nil {
		return err
	}
	newValues := [][]byte{[]byte("new"), nil, []byte("new"), nil, []byte("new")}
	newTS, err := c.commit(ctx, keys, newValues, nil)
	if err != nil {
		return err
	}
	for i, key := range keys {
		old, err := c.read(ctx, oldTS, key)
		if err != nil || !bytes.Equal(old, values[i]) {
			return fmt.Errorf("key %q at the old ts: %q, %v", key, old, err)
		}
		latest, err := c.read(ctx, newTS, key)
		if err != nil || !bytes.Equal(latest, newValues[i]) {
			return fmt.Errorf("key %q at the new ts: %q, %v", key, latest, err)
		}
	}
	// A reverse scan at the old ts, across the region boundary.
	iter, err := c.store.GetSnapshot(oldTS).IterReverse(txnKey(c.o, "snapshot", 999), keys[0])
	if err != nil {
		return fmt.Errorf("reverse iter: %w", err)
	}
	defer iter.Close()
	n := 0
	for ; iter.Valid(); n++ {
		want := len(keys) - 1 - n
		if want < 0 || !bytes.Equal(iter.Key(), keys[want]) || !bytes.Equal(iter.Value(), values[want]) {
			return fmt.Errorf("reverse scan pair %d is %q=%q", n, iter.Key(), iter.Value())
		}
		if err := iter.Next(); err != nil {
			return fmt.Errorf("iter next: %w", err)
		}
	}
	if n != len(keys) {
		return fmt.Errorf("reverse scan at the old ts returned %d pairs, want %d", n, len(keys))
	}
	return nil
}

func (c *txnCheck) gcSafePoint(ctx context.Context) error {
	keys, values := c.scenarioPairs("gc", 4)
	if _, err := c.commit(ctx, keys, values, nil); err != nil {
		return err
	}
	latest := [][]byte{[]byte("kept"), nil, []byte("kept"), nil}
	if _, err := c.commit(ctx, keys, latest, nil); err != nil {
		return err
	}
	// A lock left behind below the safe point, which GC must resolve first.
	leftover := txnKey(c.o, "gc", 30)
	pair := [][]byte{txnKey(c.o, "gc", 31), leftover}
	if _, _, err := prewriteOnly(ctx, c.store, pair, [][]byte{[]byte("primary"), []byte("left")}, true); err != nil {
		return err
	}
	safePoint, err := c.now(ctx)
	if err != nil {
		return err
	}
	pd := c.store.GetPDClient()
	// TiDB's GC worker moves the txn safe point first (service `gc_worker`), then GC.
	if _, err := pd.UpdateServiceGCSafePoint(ctx, "gc_worker", math.MaxInt64, safePoint); err != nil {
		return fmt.Errorf("advance the txn safe point: %w", err)
	}
	newSafePoint, err := c.store.GC(ctx, safePoint)
	if err != nil {
		return fmt.Errorf("GC: %w", err)
	}
	if newSafePoint != safePoint {
		return fmt.Errorf("GC moved the safe point to %d, want %d", newSafePoint, safePoint)
	}
	current, err := pd.UpdateGCSafePoint(ctx, 0)
	if err != nil {
		return fmt.Errorf("read the GC safe point: %w", err)
	}
	if current != safePoint {
		return fmt.Errorf("PD reports GC safe point %d, want %d", current, safePoint)
	}
	for i, key := range keys {
		got, err := c.read(ctx, safePoint, key)
		if err != nil || !bytes.Equal(got, latest[i]) {
			return fmt.Errorf("key %q at the safe point: %q, %v", key, got, err)
		}
	}
	got, err := c.read(ctx, safePoint, leftover)
	if err != nil || !bytes.Equal(got, []byte("left")) {
		return fmt.Errorf("the lock GC resolved reads %q, %v", got, err)
	}
	locks, err := tikv.StoreProbe{KVStore: c.store.KVStore}.ScanLocks(ctx, txnKey(c.o, "gc", 0), txnKey(c.o, "gc", 999), safePoint)
	if err != nil {
		return fmt.Errorf("scan locks: %w", err)
	}
	if len(locks) != 0 {
		return fmt.Errorf("%d locks below the safe point survived GC", len(locks))
	}
	return nil
}

// savedSafePoint writes the GC safe point where TiDB's GC worker saves it, PD's etcd, and
// reads it back as client-go's KVStore does every 10 s (a store that cannot read it fails
// every snapshot read after about 100 s).
func (c *txnCheck) savedSafePoint(ctx context.Context) error {
	probe := tikv.StoreProbe{KVStore: c.store.KVStore}
	before, err := probe.LoadSafePoint()
	if err != nil {
		return fmt.Errorf("load the saved safe point: %w", err)
	}
	safePoint, err := c.now(ctx)
	if err != nil {
		return err
	}
	if before >= safePoint {
		return fmt.Errorf("saved safe point %d is ahead of the TSO (%d)", before, safePoint)
	}
	if err := probe.SaveSafePoint(safePoint); err != nil {
		return fmt.Errorf("save the safe point: %w", err)
	}
	after, err := probe.LoadSafePoint()
	if err != nil {
		return fmt.Errorf("load the saved safe point: %w", err)
	}
	if after != safePoint {
		return fmt.Errorf("the saved safe point reads back as %d, want %d", after, safePoint)
	}
	return nil
}
