// Command client-go-harness drives the reference Go client (github.com/tikv/client-go/v2,
// used as an ordinary module dependency) against a TiKV cluster, usually tikv-sim:
//
//	client-go-harness check   --pd ADDR [--api-version 1|2] [--keyspace NAME] [--other-keyspace NAME] [--prefix P]
//	client-go-harness bench   --pd ADDR --case CASE [--callers N] [--ops-per-caller N] [--rounds N] [--sim-pid PID]
//	                          [--keys N] [--protocol 2pc|async_commit|1pc] [--txn-round R]
//	client-go-harness interop <step> --pd ADDR [--api-version 1|2] [--keyspace NAME] [--prefix P] [--count N]
//	                          [--commit-primary] [--group G] [--value-prefix V | --absent] [--ts TS]
//
// Every result is one line that a program can read: scenario results are
// `PASS <name>` or `FAIL <name> <error>` (the error on one line), bench results one
// `ROUND key=value ...` line per round, interop results `PASS`/`FAIL` lines and
// `KEY=value` facts.
// `check` and `interop` end with `N passed, M failed` and exit 1 when anything failed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/pingcap/kvproto/pkg/kvrpcpb"
	"github.com/pingcap/log"
	"go.uber.org/zap/zapcore"
)

// options are the flags every subcommand shares.
type options struct {
	pd            string
	apiVersion    int
	keyspace      string
	otherKeyspace string
	prefix        string
	timeout       time.Duration
}

func (o *options) register(fs *flag.FlagSet) {
	fs.StringVar(&o.pd, "pd", "", "PD address(es), comma separated (required)")
	fs.IntVar(&o.apiVersion, "api-version", 1, "the cluster's API version: 1 or 2")
	fs.StringVar(&o.keyspace, "keyspace", "", "keyspace name (API V2)")
	fs.StringVar(&o.otherKeyspace, "other-keyspace", "", "a second keyspace, for isolation checks (API V2)")
	fs.StringVar(&o.prefix, "prefix", "", "prefix of every key written (default: one per run)")
	fs.DurationVar(&o.timeout, "timeout", 60*time.Second, "bound of the whole run")
}

func (o *options) validate() error {
	if o.pd == "" {
		return fmt.Errorf("--pd is required")
	}
	if o.apiVersion != 1 && o.apiVersion != 2 {
		return fmt.Errorf("--api-version must be 1 or 2, not %d", o.apiVersion)
	}
	if o.apiVersion == 2 && o.keyspace == "" {
		return fmt.Errorf("--api-version 2 needs --keyspace")
	}
	if o.prefix == "" {
		o.prefix = fmt.Sprintf("gohar-%d/", time.Now().UnixNano())
	}
	return nil
}

func (o *options) pdAddrs() []string {
	return strings.Split(o.pd, ",")
}

func (o *options) kvrpcAPIVersion() kvrpcpb.APIVersion {
	if o.apiVersion == 2 {
		return kvrpcpb.APIVersion_V2
	}
	return kvrpcpb.APIVersion_V1
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: client-go-harness check|bench|interop --pd ADDR [flags]; -h after a subcommand lists its flags")
}

func main() {
	// client-go logs every retry at info level; results are what this program prints.
	// CLIENT_GO_LOG=warn (or info, debug) shows client-go's own log on stderr.
	level := zapcore.FatalLevel
	if name := os.Getenv("CLIENT_GO_LOG"); name != "" {
		if err := level.Set(name); err != nil {
			fmt.Fprintf(os.Stderr, "CLIENT_GO_LOG: %v\n", err)
			os.Exit(2)
		}
	}
	// pingcap/log writes to stdout by default; results own stdout, the log goes to stderr.
	logger, props, err := log.InitLoggerWithWriteSyncer(&log.Config{Level: level.String()}, os.Stderr, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "logger: %v\n", err)
		os.Exit(2)
	}
	log.ReplaceGlobals(logger, props)
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var code int
	switch os.Args[1] {
	case "check":
		code = runCheck(os.Args[2:])
	case "bench":
		code = runBench(os.Args[2:])
	case "interop":
		code = runInterop(os.Args[2:])
	default:
		usage()
		code = 2
	}
	os.Exit(code)
}

// report counts and prints results in the parseable form.
type report struct {
	passed, failed int
}

func (r *report) result(name string, err error) {
	if err == nil {
		r.passed++
		fmt.Printf("PASS %s\n", name)
		return
	}
	r.failed++
	fmt.Printf("FAIL %s %s\n", name, oneLine(err.Error()))
}

func (r *report) finish() int {
	fmt.Printf("%d passed, %d failed\n", r.passed, r.failed)
	if r.failed > 0 {
		return 1
	}
	return 0
}

func oneLine(text string) string {
	return strings.Join(strings.Fields(text), " ")
}

// contextFor bounds a run.
func contextFor(o *options) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), o.timeout)
}
