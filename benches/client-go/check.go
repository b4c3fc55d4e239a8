package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"
)

// scenario is one named check; it returns nil when client-go saw what TiKV would give.
type scenario struct {
	name string
	run  func(context.Context) error
}

// runCheck runs every scenario against the cluster and prints one result line each.
func runCheck(args []string) int {
	var o options
	fs := flag.NewFlagSet("check", flag.ExitOnError)
	o.register(fs)
	only := fs.String("only", "", "run only the scenario of this name")
	linger := fs.Duration("linger", 0, "keep the clients open this long after the scenarios, then read once more (shows client-go's background work against the cluster, with CLIENT_GO_LOG=info)")
	group := fs.String("group", "all", "raw, txn or all: which scenarios to run (under API V1, raw region splits are not valid transactional keys and break a transactional client's whole-cluster walks, such as GC: run the groups on separate clusters)")
	_ = fs.Parse(args)
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, cancel := contextFor(&o)
	defer cancel()
	var r report
	raw, err := newRaw(ctx, &o, o.keyspace)
	if err != nil {
		r.result("connect_raw", err)
		return r.finish()
	}
	defer raw.Close()
	id, err := keyspaceID(ctx, &o, raw)
	if err != nil {
		r.result("load_keyspace", err)
		return r.finish()
	}
	store, err := newTxn(&o)
	if err != nil {
		r.result("connect_txn", err)
		return r.finish()
	}
	defer store.Close()
	fmt.Printf("PREFIX=%s\n", o.prefix)
	rc := &rawCheck{o: &o, raw: raw, keyspaceID: id}
	tc := &txnCheck{o: &o, store: store}
	// The split goes first so that the other scenarios' ranges cross regions.
	var all []scenario
	switch *group {
	case "raw":
		all = rc.scenarios()
	case "txn":
		all = tc.scenarios()
	case "all":
		txnScenarios := tc.scenarios()
		all = append([]scenario{txnScenarios[0]}, rc.scenarios()...)
		all = append(all, txnScenarios[1:]...)
	default:
		fmt.Fprintf(os.Stderr, "unknown group %q\n", *group)
		return 2
	}
	for _, s := range all {
		if *only != "" && s.name != *only {
			continue
		}
		started := time.Now()
		err := runOne(ctx, s)
		r.result(s.name, err)
		fmt.Fprintf(os.Stderr, "%s took %v\n", s.name, time.Since(started))
	}
	if *linger > 0 {
		time.Sleep(*linger)
		r.result("read_after_linger", runOne(ctx, scenario{"read_after_linger", func(ctx context.Context) error {
			ts, err := tc.now(ctx)
			if err != nil {
				return err
			}
			_, err = tc.read(ctx, ts, txnKey(&o, "linger", 0))
			return err
		}}))
	}
	return r.finish()
}

// runOne runs a scenario, turning a panic inside client-go into a failure.
func runOne(ctx context.Context, s scenario) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	scenarioCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return s.run(scenarioCtx)
}
