package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tikv/client-go/v2/rawkv"
	"github.com/tikv/client-go/v2/txnkv"
	"github.com/tikv/client-go/v2/txnkv/txnsnapshot"
)

// The workloads of benches/benches/compare.rs and compare_txn.rs, with the same constants:
// keys `key-0000` to `key-0999` are pre-loaded by the Rust bench, values are 64 bytes.
const (
	benchKeyCount  = 1000
	benchValueLen  = 64
	benchBatchKeys = 100
	benchScanLimit = 1000
)

func benchKey(index int) []byte {
	return []byte(fmt.Sprintf("key-%04d", index%benchKeyCount))
}

// runBench runs one case for a number of rounds and prints one `ROUND` line per round:
//
//	ROUND case=get callers=64 ops=N wall_us=W client_cpu_ticks=C sim_cpu_ticks=S machine_ticks=M p50_us=P p99_us=Q
//
// CPU figures are clock ticks from /proc (the reader knows CLK_TCK); sim_cpu_ticks is 0
// without --sim-pid.
//
// Raw cases (benches/benches/compare.rs): get, put, batch_get, scan. Transactional cases
// (benches/benches/compare_txn.rs): txn_commit (an optimistic transaction writing --keys
// fresh keys, committed with --protocol 2pc, async_commit or 1pc), txn_get,
// txn_batch_get and txn_scan (snapshot reads at a fresh ts each). Each txn_commit round
// writes keys no other round wrote: round r of a run writes under round number
// --txn-round + 1 + r, its warm-up under --txn-round, so a caller gives every run its own
// --txn-round (ten apart).
func runBench(args []string) int {
	var o options
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	o.register(fs)
	caseName := fs.String("case", "get", "get, put, batch_get, scan, txn_commit, txn_get, txn_batch_get or txn_scan")
	callers := fs.Int("callers", 1, "concurrent callers (get, put and txn_commit)")
	opsPerCaller := fs.Int("ops-per-caller", 1000, "operations per caller in each measured round")
	rounds := fs.Int("rounds", 1, "measured rounds")
	simPid := fs.Int("sim-pid", 0, "the cluster's process id, to report its CPU time")
	keys := fs.Int("keys", 1, "txn_commit: keys each transaction writes")
	protocol := fs.String("protocol", "2pc", "txn_commit: 2pc, async_commit or 1pc")
	txnRound := fs.Int("txn-round", 0, "txn_commit: the first round number of this run's keys")
	_ = fs.Parse(args)
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	switch *caseName {
	case "get", "put", "txn_commit":
	case "batch_get", "scan", "txn_get", "txn_batch_get", "txn_scan":
		*callers = 1
	default:
		fmt.Fprintf(os.Stderr, "unknown case %q\n", *caseName)
		return 2
	}
	switch *protocol {
	case "2pc", "async_commit", "1pc":
	default:
		fmt.Fprintf(os.Stderr, "unknown protocol %q\n", *protocol)
		return 2
	}
	ctx, cancel := contextFor(&o)
	defer cancel()
	w := &workload{name: *caseName, callers: *callers, keys: *keys, protocol: *protocol, round: *txnRound}
	if strings.HasPrefix(*caseName, "txn_") {
		store, err := newTxn(&o)
		if err != nil {
			fmt.Printf("FAIL bench connect %s\n", oneLine(err.Error()))
			return 1
		}
		defer store.Close()
		w.store = store
	} else {
		client, err := newRaw(ctx, &o, o.keyspace)
		if err != nil {
			fmt.Printf("FAIL bench connect %s\n", oneLine(err.Error()))
			return 1
		}
		defer client.Close()
		w.client = client
	}
	// A short warm-up so that connections and the region cache exist.
	warmup := *opsPerCaller / 20
	if warmup < 1 {
		warmup = 1
	}
	if _, _, err := w.run(ctx, warmup); err != nil {
		fmt.Printf("FAIL bench warm-up %s\n", oneLine(err.Error()))
		return 1
	}
	for round := 0; round < *rounds; round++ {
		w.round = *txnRound + 1 + round
		waitUntilQuiet(*simPid)
		machineBefore := machineBusyTicks()
		clientBefore := processTicks("self")
		simBefore := uint64(0)
		if *simPid != 0 {
			simBefore = processTicks(strconv.Itoa(*simPid))
		}
		wall, latencies, err := w.run(ctx, *opsPerCaller)
		waitUntilQuiet(*simPid)
		clientTicks := processTicks("self") - clientBefore
		simTicks := uint64(0)
		if *simPid != 0 {
			simTicks = processTicks(strconv.Itoa(*simPid)) - simBefore
		}
		machineTicks := machineBusyTicks() - machineBefore
		if err != nil {
			fmt.Printf("FAIL bench %s %s\n", *caseName, oneLine(err.Error()))
			return 1
		}
		sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
		fmt.Printf("ROUND case=%s callers=%d ops=%d wall_us=%d client_cpu_ticks=%d sim_cpu_ticks=%d machine_ticks=%d p50_us=%d p99_us=%d\n",
			*caseName, *callers, len(latencies), wall.Microseconds(), clientTicks, simTicks, machineTicks,
			percentile(latencies, 0.50).Microseconds(), percentile(latencies, 0.99).Microseconds())
	}
	return 0
}

// workload is one case of compare.rs (through client-go's raw client) or of
// compare_txn.rs (through its transactional client).
type workload struct {
	client  *rawkv.Client
	store   *txnkv.Client
	name    string
	callers int
	// txn_commit: keys per transaction, how it commits, and the round number in its keys.
	keys     int
	protocol string
	round    int
}

// run runs opsPerCaller sequential operations on each caller (one goroutine each) and
// returns the wall time and every operation's latency.
func (w *workload) run(ctx context.Context, opsPerCaller int) (time.Duration, []time.Duration, error) {
	latencies := make([][]time.Duration, w.callers)
	errs := make([]error, w.callers)
	var wg sync.WaitGroup
	started := time.Now()
	for caller := 0; caller < w.callers; caller++ {
		wg.Add(1)
		go func(caller int) {
			defer wg.Done()
			own := make([]time.Duration, 0, opsPerCaller)
			value := bytes.Repeat([]byte{'w'}, benchValueLen)
			for op := 0; op < opsPerCaller; op++ {
				opStarted := time.Now()
				if err := w.one(ctx, caller, op, value); err != nil {
					errs[caller] = err
					return
				}
				own = append(own, time.Since(opStarted))
			}
			latencies[caller] = own
		}(caller)
	}
	wg.Wait()
	wall := time.Since(started)
	var all []time.Duration
	for caller, own := range latencies {
		if errs[caller] != nil {
			return wall, nil, errs[caller]
		}
		all = append(all, own...)
	}
	return wall, all, nil
}

// one runs operation op of caller and checks its result, so that no client wins by doing
// less.
func (w *workload) one(ctx context.Context, caller, op int, value []byte) error {
	index := caller*131 + op*7
	switch w.name {
	case "get":
		got, err := w.client.Get(ctx, benchKey(index))
		if err != nil {
			return err
		}
		if got == nil {
			return fmt.Errorf("pre-loaded key %s missing", benchKey(index))
		}
	case "put":
		return w.client.Put(ctx, benchKey(index), value)
	case "batch_get":
		values, err := w.client.BatchGet(ctx, batchKeys(index))
		if err != nil {
			return err
		}
		found := 0
		for _, v := range values {
			if v != nil {
				found++
			}
		}
		if found != benchBatchKeys {
			return fmt.Errorf("batch get found %d of %d keys", found, benchBatchKeys)
		}
	case "scan":
		keys, _, err := w.client.Scan(ctx, []byte("key-"), []byte("key-~"), benchScanLimit)
		if err != nil {
			return err
		}
		if len(keys) != benchKeyCount {
			return fmt.Errorf("scan returned %d keys, want %d", len(keys), benchKeyCount)
		}
	case "txn_commit":
		return w.commit(ctx, txnKeys(caller, op+w.round*100000, w.keys, w.protocol), value)
	case "txn_get", "txn_batch_get", "txn_scan":
		ts, err := w.store.GetTimestamp(ctx)
		if err != nil {
			return err
		}
		return w.snapshotRead(ctx, w.store.GetSnapshot(ts), index)
	}
	return nil
}

func batchKeys(index int) [][]byte {
	keys := make([][]byte, benchBatchKeys)
	for i := range keys {
		keys[i] = benchKey(index + i*9)
	}
	return keys
}

// txnKeys are the keys transaction op of caller writes, as compare_txn.rs's `txn_keys`
// makes them: fresh ones, spread over the four regions (250 pre-loaded keys apart) unless
// the transaction commits in one phase, which needs them in one region.
func txnKeys(caller, op, keys int, protocol string) [][]byte {
	base := caller*131 + op*7
	out := make([][]byte, keys)
	for i := range out {
		spread := i * 250
		if protocol == "1pc" {
			spread = 0
		}
		out[i] = []byte(fmt.Sprintf("%s-%d-%d-%d", benchKey(base+spread), caller, op, i))
	}
	return out
}

// commit writes keys in one optimistic transaction committed with the workload's protocol.
func (w *workload) commit(ctx context.Context, keys [][]byte, value []byte) error {
	txn, err := w.store.Begin()
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	switch w.protocol {
	case "async_commit":
		txn.SetEnableAsyncCommit(true)
	case "1pc":
		txn.SetEnable1PC(true)
	}
	for _, key := range keys {
		if err := txn.Set(key, value); err != nil {
			return fmt.Errorf("set: %w", err)
		}
	}
	if err := txn.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// snapshotRead is one snapshot read of the pre-loaded keys, checked as compare_txn.rs
// checks its own.
func (w *workload) snapshotRead(ctx context.Context, snapshot *txnsnapshot.KVSnapshot, index int) error {
	switch w.name {
	case "txn_get":
		entry, err := snapshot.Get(ctx, benchKey(index))
		if err != nil {
			return fmt.Errorf("get %s: %w", benchKey(index), err)
		}
		if entry.Value == nil {
			return fmt.Errorf("pre-loaded key %s missing", benchKey(index))
		}
	case "txn_batch_get":
		got, err := snapshot.BatchGet(ctx, batchKeys(index))
		if err != nil {
			return err
		}
		if len(got) != benchBatchKeys {
			return fmt.Errorf("batch get found %d of %d keys", len(got), benchBatchKeys)
		}
	case "txn_scan":
		// The range of compare_txn.rs; it holds the committed transactions' keys too, so
		// the scan stops at the limit.
		iter, err := snapshot.Iter([]byte("key-0000"), []byte("key-1000"))
		if err != nil {
			return err
		}
		defer iter.Close()
		n := 0
		for iter.Valid() && n < benchScanLimit {
			n++
			// No step past the last pair wanted: it could fetch a batch nobody reads.
			if n < benchScanLimit {
				if err := iter.Next(); err != nil {
					return err
				}
			}
		}
		if n != benchScanLimit {
			return fmt.Errorf("scan returned %d pairs, want %d", n, benchScanLimit)
		}
	}
	return nil
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	index := int(float64(len(sorted)-1) * q)
	return sorted[index]
}

// processTicks is user + system CPU time of a process in clock ticks, from /proc/<pid>/stat.
// waitUntilQuiet returns once this process and the simulator (when its pid is known) used
// less than a fifth of a core together over 100 ms, or after 60 s. client-go commits
// secondaries in the background after Commit returns; waiting before and after a round
// charges that work to the round that caused it (compare_txn's rounds do the same).
func waitUntilQuiet(simPid int) {
	busy := func() uint64 {
		ticks := processTicks("self")
		if simPid != 0 {
			ticks += processTicks(strconv.Itoa(simPid))
		}
		return ticks
	}
	const window = 100 * time.Millisecond
	// A fifth of a core over the window, in clock ticks (100 per second on Linux).
	const quietTicks = 2
	deadline := time.Now().Add(60 * time.Second)
	before := busy()
	for time.Now().Before(deadline) {
		time.Sleep(window)
		now := busy()
		if now-before < quietTicks {
			return
		}
		before = now
	}
}

func processTicks(pid string) uint64 {
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	text := string(stat)
	// Fields after the parenthesised command name: utime and stime are the 12th and 13th.
	if i := strings.LastIndexByte(text, ')'); i >= 0 {
		text = text[i+1:]
	}
	fields := strings.Fields(text)
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseUint(fields[11], 10, 64)
	stime, _ := strconv.ParseUint(fields[12], 10, 64)
	return utime + stime
}

// machineBusyTicks is the machine's busy CPU time (user, nice, system, irq, softirq) in
// clock ticks, from /proc/stat.
func machineBusyTicks() uint64 {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line := strings.SplitN(string(stat), "\n", 2)[0]
	fields := strings.Fields(line)
	var total uint64
	for i, field := range fields[1:] {
		switch i {
		case 0, 1, 2, 5, 6:
			n, _ := strconv.ParseUint(field, 10, 64)
			total += n
		}
	}
	return total
}
