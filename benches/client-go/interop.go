package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
)

// Interop keys, under the run's prefix:
//
//	interop/go/NNN        raw pairs written here (value go-N), read by the other client
//	interop/rust/NNN      raw pairs the other client wrote (value rust-N), read here
//	interop/txn/NNN       transactional pairs committed here (value go-txn-N)
//	interop/lock-KIND/NNN a transaction stopped after prewrite (KIND committed: its
//	                      primary NNN=000 was committed; KIND expired: nothing was)
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
func runInterop(args []string) int {
	if len(args) < 1 {
		fmt.Fprintln(os.Stderr, "interop needs a step: raw-write, raw-read, txn-write or txn-prewrite")
		return 2
	}
	step := args[0]
	var o options
	fs := flag.NewFlagSet("interop "+step, flag.ExitOnError)
	o.register(fs)
	count := fs.Int("count", 20, "pairs to write or read")
	commitPrimary := fs.Bool("commit-primary", false, "txn-prewrite: commit the primary before stopping")
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
