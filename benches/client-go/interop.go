package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	tikverr "github.com/tikv/client-go/v2/error"
	"github.com/tikv/client-go/v2/tikv"
)

// Interop keys, under the run's prefix:
//
//	interop/go/NNN        raw pairs written here (value go-N), read by the other client
//	interop/rust/NNN      raw pairs the other client wrote (value rust-N), read here
//	interop/txn/NNN       transactional pairs committed here (value go-txn-N)
//	interop/lock-KIND/NNN a transaction stopped after prewrite (KIND committed: its
//	                      primary NNN=000 was committed; KIND expired: nothing was)
//	interop/GROUP/NNN     txn-read: transactional pairs the other client committed (or
//	                      left locked) under a group the caller names
func interopKey(o *options, group string, i int) []byte {
	return []byte(fmt.Sprintf("%sinterop/%s/%03d", o.prefix, group, i))
}

// runInterop runs one step of a mixed-client test; the other client's side lives in the
// Rust test (tests/tests/client_go.rs). Steps:
//
//	raw-write     write `--count` raw pairs interop/go/NNN
//	raw-read      read the raw pairs interop/rust/NNN: get, batch get, scan, reverse scan
//	txn-write     commit `--count` pairs interop/txn/NNN in one transaction; prints COMMIT_TS
//	txn-prewrite  prewrite interop/lock-KIND/000 (primary) and /020, lock TTL 1 ms, and
//	              stop; with --commit-primary the primary is committed first. Prints
//	              START_TS, PRIMARY, COMMIT_TS (0 when not committed) and LOCK_TTL.
//	txn-read      read the transactional keys interop/GROUP/000 .. /NNN (NNN = count-1)
//	              the other client wrote, through a snapshot at --ts (default: a fresh
//	              ts): each key's get, one batch get, a scan and a reverse scan. Each key
//	              must read VALUE-PREFIX-i, or nothing with --absent. Locks met on the
//	              way are client-go's to resolve, as any reader's; the step ends when
//	              none is left in the group (client-go resolves in the background).
func runInterop(args []string) int {
	if len(args) < 1 {
		fmt.Fprintln(os.Stderr, "interop needs a step: raw-write, raw-read, txn-write, txn-prewrite or txn-read")
		return 2
	}
	step := args[0]
	var o options
	fs := flag.NewFlagSet("interop "+step, flag.ExitOnError)
	o.register(fs)
	count := fs.Int("count", 20, "pairs to write or read")
	commitPrimary := fs.Bool("commit-primary", false, "txn-prewrite: commit the primary before stopping")
	group := fs.String("group", "", "txn-read: the key group to read (keys interop/GROUP/NNN)")
	valuePrefix := fs.String("value-prefix", "", "txn-read: key i must read VALUE-PREFIX-i")
	absent := fs.Bool("absent", false, "txn-read: no key may exist")
	readTS := fs.Uint64("ts", 0, "txn-read: the snapshot's ts (0: a fresh one)")
	_ = fs.Parse(args[1:])
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, cancel := contextFor(&o)
	defer cancel()
	var r report
	switch step {
	case "raw-write", "raw-read":
		raw, err := newRaw(ctx, &o, o.keyspace)
		if err != nil {
			r.result("connect_raw", err)
			return r.finish()
		}
		defer raw.Close()
		if step == "raw-write" {
			keys := make([][]byte, *count)
			values := make([][]byte, *count)
			for i := range keys {
				keys[i] = interopKey(&o, "go", i)
				values[i] = []byte(fmt.Sprintf("go-%d", i))
			}
			r.result("raw_write", raw.BatchPut(ctx, keys, values))
			return r.finish()
		}
		keys := make([][]byte, *count)
		values := make([][]byte, *count)
		for i := range keys {
			keys[i] = interopKey(&o, "rust", i)
			values[i] = []byte(fmt.Sprintf("rust-%d", i))
		}
		r.result("raw_read_get", func() error {
			got, err := raw.Get(ctx, keys[0])
			if err != nil {
				return err
			}
			if !bytes.Equal(got, values[0]) {
				return fmt.Errorf("read %q, want %q", got, values[0])
			}
			return nil
		}())
		r.result("raw_read_batch_get", func() error {
			got, err := raw.BatchGet(ctx, keys)
			if err != nil {
				return err
			}
			for i := range keys {
				if !bytes.Equal(got[i], values[i]) {
					return fmt.Errorf("key %q read %q, want %q", keys[i], got[i], values[i])
				}
			}
			return nil
		}())
		end := interopKey(&o, "rust", 999)
		r.result("raw_read_scan", func() error {
			gotKeys, gotValues, err := raw.Scan(ctx, keys[0], end, *count+10)
			if err != nil {
				return err
			}
			return samePairs(gotKeys, gotValues, keys, values)
		}())
		r.result("raw_read_reverse_scan", func() error {
			gotKeys, gotValues, err := raw.ReverseScan(ctx, end, keys[0], *count+10)
			if err != nil {
				return err
			}
			n := len(keys)
			reversedKeys := make([][]byte, n)
			reversedValues := make([][]byte, n)
			for i := range keys {
				reversedKeys[n-1-i] = keys[i]
				reversedValues[n-1-i] = values[i]
			}
			return samePairs(gotKeys, gotValues, reversedKeys, reversedValues)
		}())
		return r.finish()
	case "txn-read":
		if *group == "" || (*valuePrefix == "") == !*absent {
			fmt.Fprintln(os.Stderr, "txn-read needs --group and one of --value-prefix or --absent")
			return 2
		}
		store, err := newTxn(&o)
		if err != nil {
			r.result("connect_txn", err)
			return r.finish()
		}
		defer store.Close()
		c := &txnCheck{o: &o, store: store}
		expected := make([][]byte, *count)
		keys := make([][]byte, *count)
		for i := range keys {
			keys[i] = interopKey(&o, *group, i)
			if !*absent {
				expected[i] = []byte(fmt.Sprintf("%s-%d", *valuePrefix, i))
			}
		}
		c.txnRead(ctx, &r, *readTS, keys, expected, interopKey(&o, *group, 999))
		return r.finish()
	case "txn-write", "txn-prewrite":
		store, err := newTxn(&o)
		if err != nil {
			r.result("connect_txn", err)
			return r.finish()
		}
		defer store.Close()
		c := &txnCheck{o: &o, store: store}
		if step == "txn-write" {
			keys := make([][]byte, *count)
			values := make([][]byte, *count)
			for i := range keys {
				keys[i] = interopKey(&o, "txn", i)
				values[i] = []byte(fmt.Sprintf("go-txn-%d", i))
			}
			commitTS, err := c.commit(ctx, keys, values, nil)
			if err == nil {
				fmt.Printf("COMMIT_TS=%d\n", commitTS)
			}
			r.result("txn_write", err)
			return r.finish()
		}
		kind := "expired"
		if *commitPrimary {
			kind = "committed"
		}
		keys := [][]byte{interopKey(&o, "lock-"+kind, 0), interopKey(&o, "lock-"+kind, 20)}
		values := [][]byte{[]byte("go-primary"), []byte("go-secondary")}
		committer, txn, err := prewriteOnly(ctx, store, keys, values, *commitPrimary)
		if err == nil {
			commitTS := uint64(0)
			if *commitPrimary {
				commitTS = committer.GetCommitTS()
			}
			fmt.Printf("START_TS=%d\nPRIMARY=%s\nCOMMIT_TS=%d\nLOCK_TTL=%d\n", txn.StartTS(), keys[0], commitTS, committer.GetLockTTL())
		}
		r.result("txn_prewrite_"+kind, err)
		return r.finish()
	default:
		fmt.Fprintf(os.Stderr, "unknown interop step %q\n", step)
		return 2
	}
}

// txnRead reads keys through snapshots at ts (a fresh ts when 0) and reports whether each
// reads its expected value (nil: must not exist): a get per key, in order, each through a
// snapshot of its own (so each meets its key's lock, if any, and resolves it), then a batch
// get, a scan up to end and a reverse scan through one snapshot.
func (c *txnCheck) txnRead(ctx context.Context, r *report, ts uint64, keys, expected [][]byte, end []byte) {
	if ts == 0 {
		now, err := c.now(ctx)
		if err != nil {
			r.result("txn_read_ts", err)
			return
		}
		ts = now
	}
	fmt.Printf("READ_TS=%d\n", ts)
	r.result("txn_read_get", func() error {
		for i, key := range keys {
			// A snapshot of its own per key: a snapshot that met one lock of a
			// transaction and found it rolled back or committed reads past the
			// transaction's other locks (TiKV's resolved and committed lock lists)
			// instead of meeting, and resolving, them.
			entry, err := c.store.GetSnapshot(ts).Get(ctx, key)
			if tikverr.IsErrNotFound(err) {
				entry.Value, err = nil, nil
			}
			if err != nil {
				return fmt.Errorf("get %q: %w", key, err)
			}
			if !sameValue(entry.Value, expected[i]) {
				return fmt.Errorf("get %q read %q, want %s", key, entry.Value, describeValue(expected[i]))
			}
		}
		return nil
	}())
	snapshot := c.store.GetSnapshot(ts)
	var wantKeys, wantValues [][]byte
	for i, key := range keys {
		if expected[i] != nil {
			wantKeys = append(wantKeys, key)
			wantValues = append(wantValues, expected[i])
		}
	}
	r.result("txn_read_batch_get", func() error {
		got, err := snapshot.BatchGet(ctx, keys)
		if err != nil {
			return err
		}
		if len(got) != len(wantKeys) {
			return fmt.Errorf("batch get found %d keys, want %d", len(got), len(wantKeys))
		}
		for i, key := range keys {
			entry, found := got[string(key)]
			if found != (expected[i] != nil) || !sameValue(entry.Value, expected[i]) {
				return fmt.Errorf("batch get of %q read %q, want %s", key, entry.Value, describeValue(expected[i]))
			}
		}
		return nil
	}())
	r.result("txn_read_scan", func() error {
		iter, err := snapshot.Iter(keys[0], end)
		if err != nil {
			return fmt.Errorf("iter: %w", err)
		}
		defer iter.Close()
		var gotKeys, gotValues [][]byte
		for iter.Valid() {
			gotKeys = append(gotKeys, append([]byte{}, iter.Key()...))
			gotValues = append(gotValues, append([]byte{}, iter.Value()...))
			if err := iter.Next(); err != nil {
				return fmt.Errorf("iter next: %w", err)
			}
		}
		return samePairs(gotKeys, gotValues, wantKeys, wantValues)
	}())
	r.result("txn_read_reverse_scan", func() error {
		iter, err := snapshot.IterReverse(end, keys[0])
		if err != nil {
			return fmt.Errorf("reverse iter: %w", err)
		}
		defer iter.Close()
		var gotKeys, gotValues [][]byte
		for iter.Valid() {
			gotKeys = append(gotKeys, append([]byte{}, iter.Key()...))
			gotValues = append(gotValues, append([]byte{}, iter.Value()...))
			if err := iter.Next(); err != nil {
				return fmt.Errorf("reverse iter next: %w", err)
			}
		}
		n := len(wantKeys)
		reversedKeys := make([][]byte, n)
		reversedValues := make([][]byte, n)
		for i := range wantKeys {
			reversedKeys[n-1-i] = wantKeys[i]
			reversedValues[n-1-i] = wantValues[i]
		}
		return samePairs(gotKeys, gotValues, reversedKeys, reversedValues)
	}())
	// client-go resolves what a read met in the background (ResolveLocksForRead); wait
	// for those goroutines, which die with this process, to finish their work.
	r.result("txn_read_locks_resolved", c.waitUnlocked(ctx, keys[0], end))
}

// waitUnlocked waits (up to 10 s) until no lock is left in [start, end), without resolving
// anything itself.
func (c *txnCheck) waitUnlocked(ctx context.Context, start, end []byte) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		now, err := c.now(ctx)
		if err != nil {
			return err
		}
		locks, err := tikv.StoreProbe{KVStore: c.store.KVStore}.ScanLocks(ctx, start, end, now)
		if err != nil {
			return fmt.Errorf("scan locks: %w", err)
		}
		if len(locks) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d locks left after the reads, the first on %q", len(locks), locks[0].Key)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sameValue compares a read value with the expected one (nil: not found; a found key's
// value is never nil here, as every interop value is non-empty).
func sameValue(got, want []byte) bool {
	if want == nil {
		return got == nil
	}
	return bytes.Equal(got, want)
}

func describeValue(want []byte) string {
	if want == nil {
		return "nothing"
	}
	return fmt.Sprintf("%q", want)
}
