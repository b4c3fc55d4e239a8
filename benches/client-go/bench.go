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
)

// The workloads of benches/benches/compare.rs, with the same constants: keys `key-0000` to
// `key-0999` are pre-loaded by the Rust bench, values are 64 bytes.
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
func runBench(args []string) int {
	var o options
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	o.register(fs)
	caseName := fs.String("case", "get", "get, put, batch_get or scan")
	callers := fs.Int("callers", 1, "concurrent callers (get and put)")
	opsPerCaller := fs.Int("ops-per-caller", 1000, "operations per caller in each measured round")
	rounds := fs.Int("rounds", 1, "measured rounds")
	simPid := fs.Int("sim-pid", 0, "the cluster's process id, to report its CPU time")
	_ = fs.Parse(args)
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	switch *caseName {
	case "get", "put":
	case "batch_get", "scan":
		*callers = 1
	default:
		fmt.Fprintf(os.Stderr, "unknown case %q\n", *caseName)
		return 2
	}
	ctx, cancel := contextFor(&o)
	defer cancel()
	client, err := newRaw(ctx, &o, o.keyspace)
	if err != nil {
		fmt.Printf("FAIL bench connect %s\n", oneLine(err.Error()))
		return 1
	}
	defer client.Close()
	w := &workload{client: client, name: *caseName, callers: *callers}
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
		machineBefore := machineBusyTicks()
		clientBefore := processTicks("self")
		simBefore := uint64(0)
		if *simPid != 0 {
			simBefore = processTicks(strconv.Itoa(*simPid))
		}
		wall, latencies, err := w.run(ctx, *opsPerCaller)
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

// workload is one case of compare.rs through client-go's raw client.
type workload struct {
	client  *rawkv.Client
	name    string
	callers int
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
				index := caller*131 + op*7
				opStarted := time.Now()
				if err := w.one(ctx, index, value); err != nil {
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

// one runs one operation and checks its result, so that no client wins by doing less.
func (w *workload) one(ctx context.Context, index int, value []byte) error {
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
		keys := make([][]byte, benchBatchKeys)
		for i := range keys {
			keys[i] = benchKey(index + i*9)
		}
		values, err := w.client.BatchGet(ctx, keys)
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
