// Command bench measures cgwall against no filter, nftables and iptables, side
// by side, on this machine: decision cost in the kernel with a cold cache,
// end-to-end packets per second through a veth, control-plane load time and
// kernel memory, and the cost of logging. docs/performance.md says how, and
// holds the results.
//
// Run it as root from the repository root:
//
//	go run ./bench            # the full run, about 20 minutes
//	go run ./bench -quick     # under 2 minutes
//	go run ./bench -docs      # and write the results into docs/
//
// A run sets up (setup.go), measures (decision.go; e2e.go with netns.go and
// sender.go; control.go; dns.go with dnsclient.go) and publishes its results (results.go) and report
// (report.go, tables.go, goals.go, report.md.tmpl, chart.go).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config is what a run measures, and how. Its settings go into
// results.json, for the report to quote.
type config struct {
	settings
	quick       bool
	rounds      int
	parts       map[string]bool // decision, e2e, ports, log, exec, dns
	warmRepeat  int             // runs of the one packet of a warm decision cost
	benchCPU    int             // the CPU the decision cost is measured on
	loadTimeout time.Duration   // for cgwall run to be ready
	cgwall      string          // the binary measured
	out         string          // the directory of the results
	docs        bool
	repo        string
	baseline    string // results.json of an earlier run
}

func defaultConfig(quick bool) *config {
	cfg := &config{
		settings: settings{
			DecisionSizes: []int{1, 10, 100, 1000, 4000, 100_000, 1_000_000}, DecisionDsts: 100_000, DecisionRuns: 50_000,
			E2ESizes: []int{1, 10, 100, 1000, 4000, 10_000, 100_000, 1_000_000}, IptablesMax: 10_000, Patterns: []int{1, 4096},
			PortsSizes: []int{100_000}, IPv6Sizes: []int{1, 10, 100, 1000, 4000}, Interleaved: slices.Clone(goal.smallSizes),
			Payload: payloadBytes, Batch: 64, SenderCPU: 1, LogRules: 1000,
			Warmup: ms(250), Duration: ms(1000), StatsDuration: ms(500),
			DNSLookups: 10_000, DNSClients: 8, DNSDuration: ms(3000), LearnedAddrs: 100_000,
		},
		quick: quick, rounds: 5, parts: map[string]bool{"decision": true, "e2e": true, "ports": true, "ipv6": true, "log": true, "exec": true, "dns": true},
		warmRepeat: 1_000_000, benchCPU: 1, loadTimeout: 5 * time.Minute,
	}
	if quick {
		cfg.DecisionSizes, cfg.DecisionDsts, cfg.DecisionRuns, cfg.warmRepeat = []int{1, 1000, 100_000}, 20_000, 10_000, 200_000
		cfg.E2ESizes, cfg.IPv6Sizes, cfg.Patterns, cfg.LogRules = []int{1, 10_000}, []int{1, 1000}, []int{1}, 1
		cfg.Warmup, cfg.Duration, cfg.StatsDuration = ms(100), ms(250), ms(200)
		cfg.DNSLookups, cfg.DNSDuration = 2000, ms(1000)
	}
	return cfg
}

func main() {
	if code, ok := child(); ok {
		os.Exit(code)
	}
	cfg, render, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if render != "" {
		err = rerender(cfg, render, os.Stdout)
	} else {
		err = measure(cfg)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		if errors.Is(err, context.Canceled) {
			os.Exit(130)
		}
		os.Exit(1)
	}
}

// child runs this program as one of the harness's own children, the sender
// or the exec stamp, if it was started as one.
func child() (code int, ok bool) {
	switch {
	case os.Getenv(senderEnv) != "":
		if err := senderMain(os.Getenv(senderEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "sender:", err)
			return 1, true
		}
		return 0, true
	case os.Getenv(interleaveEnv) != "":
		if err := interleavedMain(os.Getenv(interleaveEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "interleaved sender:", err)
			return 1, true
		}
		return 0, true
	case os.Getenv(dnsClientEnv) != "":
		if err := dnsClientMain(os.Getenv(dnsClientEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "dns client:", err)
			return 1, true
		}
		return 0, true
	case os.Getenv(stampEnv) == "1":
		fmt.Println(monoNow())
		return 0, true
	}
	return 0, false
}

func parseFlags(args []string) (cfg *config, render string, err error) {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	quick := fs.Bool("quick", false, "a short run (under 2 minutes): fewer sizes, shorter windows")
	rounds := fs.Int("rounds", 0, "rounds of every measurement (default 5)")
	only := fs.String("only", "", "comma-separated parts to run: decision, e2e, ports (end to end with port rules), ipv6 (end to end with IPv6 traffic), log, exec, dns (name rules: lookups through cgwall's resolver, decisions with learned addresses) (default all)")
	out := fs.String("out", "", "directory for results.md, results.json and pps.png (default a new directory under /tmp)")
	docs := fs.Bool("docs", false, "also write the results into docs/performance.md and docs/img/bench-pps.png")
	cgwallBin := fs.String("cgwall", "", "the cgwall binary to measure (default: build ./cmd/cgwall)")
	patterns := fs.String("patterns", "", "end-to-end traffic patterns, as numbers of distinct destinations: 1 sends on a connected socket, more send unconnected to each in turn (default 1,4096; -quick 1)")
	e2eSizes := fs.String("e2e-sizes", "", "comma-separated rule counts for the end-to-end and control-plane runs (default 1,10,100,1k,4k,10k,100k,1M; -quick 1,10k)")
	decisionSizes := fs.String("decision-sizes", "", "comma-separated rule counts for the decision cost (default 1,10,100,1k,4k,100k,1M; -quick 1,1k,100k)")
	portsSizes := fs.String("ports-sizes", "", "comma-separated rule counts of the ports set end to end (default 100k)")
	ipv6Sizes := fs.String("ipv6-sizes", "", "comma-separated rule counts of the ipv6 set end to end, with IPv6 traffic (default 1,10,100,1k,4k; -quick 1,1k)")
	baseline := fs.String("baseline", "", "results.json of an earlier run, whose address-only figures this run's are held to (the tree before a change)")
	fs.StringVar(&render, "render", "", "write the report of an earlier run from its results.json, measuring nothing")
	if err := fs.Parse(args); err != nil {
		return nil, "", err
	}
	cfg = defaultConfig(*quick)
	cfg.out, cfg.docs, cfg.cgwall, cfg.baseline = *out, *docs, *cgwallBin, *baseline
	if *rounds > 0 {
		cfg.rounds = *rounds
	}
	if *only != "" {
		cfg.parts = map[string]bool{}
		for p := range strings.SplitSeq(*only, ",") {
			cfg.parts[strings.TrimSpace(p)] = true
		}
	}
	// A slice, not a map keyed by the flags' values: two flags of the same
	// value would be one key, and one of them ignored.
	for _, f := range []struct {
		s   string
		dst *[]int
	}{{*e2eSizes, &cfg.E2ESizes}, {*decisionSizes, &cfg.DecisionSizes}, {*portsSizes, &cfg.PortsSizes}, {*ipv6Sizes, &cfg.IPv6Sizes}, {*patterns, &cfg.Patterns}} {
		if f.s != "" {
			if *f.dst, err = parseSizes(f.s); err != nil {
				return nil, "", err
			}
		}
	}
	return cfg, render, nil
}

// parseSizes reads "1,1k,100k,1M".
func parseSizes(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.NewReplacer("k", "000", "M", "000000").Replace(strings.TrimSpace(f)))
		if err != nil || n < 1 || n > 1_000_000 {
			return nil, fmt.Errorf("bad count %q: use numbers from 1 to 1M, like 1,1k,100k,1M", f)
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// measure runs the harness once, and removes all it set up when it ends,
// fails or is interrupted. A second Ctrl-C kills it at once; the next run
// removes what that left behind.
func measure(cfg *config) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, func() {
		stop()
		fmt.Fprintln(os.Stderr, "interrupted: cleaning up")
	})
	var c cleanups
	defer c.run()
	return run(ctx, cfg, &c, os.Stdout)
}

// run is the whole harness: check, set up, measure, report. Everything it
// sets up is registered with c, which the caller runs.
func run(ctx context.Context, cfg *config, c *cleanups, log io.Writer) error {
	env, err := setup(ctx, cfg, c, log)
	if err != nil {
		return err
	}
	res := &results{Started: time.Now(), Rounds: cfg.rounds, Quick: cfg.quick, Machine: machine(), Commit: commit(cfg.repo)}
	if cfg.baseline != "" {
		if res.Baseline, err = readResults(cfg.baseline); err != nil {
			return err
		}
		res.Baseline.Baseline = nil
	}
	// exec first, on a quiet machine, as a new user meets it. Run after the
	// other parts, its first runs took up to 3× its later ones (full runs
	// at 4a738a8 and 95a98a1: 45–76 ms against 21–26 ms), the machine still
	// busy with what the million-rule policies before them left to do.
	if cfg.parts["exec"] {
		res.Exec = measureExec(ctx, cfg, log)
	}
	if cfg.parts["decision"] {
		if err := runDecision(ctx, cfg, env.root, res, log); err != nil {
			return fmt.Errorf("decision cost: %w", err)
		}
	}
	if cfg.parts["e2e"] || cfg.parts["ports"] || cfg.parts["ipv6"] || cfg.parts["log"] {
		if err := runE2E(ctx, cfg, c, env, res, log); err != nil {
			return fmt.Errorf("end to end: %w", err)
		}
	}
	if cfg.parts["dns"] {
		if err := runDNS(ctx, cfg, c, env, res, log); err != nil {
			return fmt.Errorf("dns: %w", err)
		}
	}
	res.Seconds = time.Since(res.Started).Seconds()
	res.Settings = cfg.settings
	return publish(cfg, res, log)
}
