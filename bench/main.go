// Command bench measures cgwall against no filter, nftables and iptables, side
// by side, on this machine: decision cost in the kernel with a cold cache,
// end-to-end packets per second through a veth, control-plane load time and
// kernel memory, and the cost of logging. See docs/performance.md.
//
// Run it as root from the repository root:
//
//	go run ./bench            # the full run, about 20 minutes
//	go run ./bench -quick     # under 2 minutes
//	go run ./bench -docs      # and write the results into docs/
//
// A reader can follow a run from here: run sets up (setup.go) and measures
// (decision.go; e2e.go with netns.go and sender.go; control.go), and
// publish writes the report (output.go: report.go, tables.go, goals.go,
// report.md.tmpl, chart.go).
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

type config struct {
	quick  bool
	rounds int
	parts  map[string]bool // decision, e2e, log, exec

	// decision cost
	decisionSizes []int
	decisionDsts  int // distinct destinations per kind
	decisionRuns  int // BPF_PROG_TEST_RUN calls per cell per round
	warmRepeat    int
	benchCPU      int

	// end to end
	e2eSizes      []int
	iptablesMax   int
	patterns      []int // distinct destinations of each traffic pattern
	batch         int
	senderCPU     int
	warmup        time.Duration
	duration      time.Duration
	statsDuration time.Duration // the window of the BPF statistics of cgwall's programs
	logRules      int
	loadTimeout   time.Duration

	cgwall string
	out    string
	docs   bool
	repo   string
}

func defaultConfig(quick bool) *config {
	cfg := &config{
		quick: quick, rounds: 5, parts: map[string]bool{"decision": true, "e2e": true, "log": true, "exec": true},
		decisionSizes: []int{1, 1000, 100_000, 1_000_000}, decisionDsts: 100_000, decisionRuns: 50_000,
		warmRepeat: 1_000_000, benchCPU: 1,
		e2eSizes: []int{1, 100, 1000, 10_000, 100_000, 1_000_000}, iptablesMax: 10_000, patterns: []int{1, 4096},
		batch: 64, senderCPU: 1, warmup: 250 * time.Millisecond, duration: time.Second,
		statsDuration: 500 * time.Millisecond, logRules: 1000, loadTimeout: 5 * time.Minute,
	}
	if quick {
		cfg.decisionSizes, cfg.decisionDsts, cfg.decisionRuns, cfg.warmRepeat = []int{1, 1000, 100_000}, 20_000, 10_000, 200_000
		cfg.e2eSizes, cfg.patterns, cfg.logRules = []int{1, 10_000}, []int{1}, 1
		cfg.warmup, cfg.duration, cfg.statsDuration = 100*time.Millisecond, 250*time.Millisecond, 200*time.Millisecond
	}
	return cfg
}

func main() {
	switch {
	case os.Getenv(senderEnv) != "":
		if err := senderMain(os.Getenv(senderEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "sender:", err)
			os.Exit(1)
		}
		return
	case os.Getenv(stampEnv) == "1":
		stampMain()
		return
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

func parseFlags(args []string) (cfg *config, render string, err error) {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	quick := fs.Bool("quick", false, "a short run (under 2 minutes): fewer sizes, shorter windows")
	rounds := fs.Int("rounds", 0, "rounds of every measurement (default 5)")
	only := fs.String("only", "", "comma-separated parts to run: decision, e2e, log, exec (default all)")
	out := fs.String("out", "", "directory for results.md, results.json and pps.png (default a new directory under /tmp)")
	docs := fs.Bool("docs", false, "also write the results into docs/performance.md and docs/img/bench-pps.png")
	cgwallBin := fs.String("cgwall", "", "the cgwall binary to measure (default: build ./cmd/cgwall)")
	patterns := fs.String("patterns", "", "end-to-end traffic patterns, as numbers of distinct destinations: 1 sends on a connected socket, more send unconnected to each in turn (default 1,4096; -quick 1)")
	e2eSizes := fs.String("e2e-sizes", "", "comma-separated rule counts for the end-to-end and control-plane runs (default 1,100,1k,10k,100k,1M; -quick 1,10k)")
	decisionSizes := fs.String("decision-sizes", "", "comma-separated rule counts for the decision cost (default 1,1k,100k,1M; -quick 1,1k,100k)")
	fs.StringVar(&render, "render", "", "write the report of an earlier run from its results.json, measuring nothing")
	if err := fs.Parse(args); err != nil {
		return nil, "", err
	}
	cfg = defaultConfig(*quick)
	cfg.out, cfg.docs, cfg.cgwall = *out, *docs, *cgwallBin
	if *rounds > 0 {
		cfg.rounds = *rounds
	}
	if *only != "" {
		cfg.parts = map[string]bool{}
		for _, p := range strings.Split(*only, ",") {
			cfg.parts[strings.TrimSpace(p)] = true
		}
	}
	for s, dst := range map[string]*[]int{*e2eSizes: &cfg.e2eSizes, *decisionSizes: &cfg.decisionSizes, *patterns: &cfg.patterns} {
		if s != "" {
			if *dst, err = parseSizes(s); err != nil {
				return nil, "", err
			}
		}
	}
	return cfg, render, nil
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
	if cfg.parts["decision"] {
		if err := runDecision(ctx, cfg, env.root, res, log); err != nil {
			return fmt.Errorf("decision cost: %w", err)
		}
	}
	if cfg.parts["e2e"] || cfg.parts["log"] {
		if err := runE2E(ctx, cfg, c, env, res, log); err != nil {
			return fmt.Errorf("end to end: %w", err)
		}
	}
	if cfg.parts["exec"] {
		res.Exec = measureExec(ctx, cfg, log)
	}
	res.Seconds = time.Since(res.Started).Seconds()
	res.Settings = cfg.settings()
	return publish(cfg, res, log)
}

// parseSizes reads "1,1k,100k,1M".
func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		mult := 1
		if n, ok := strings.CutSuffix(f, "k"); ok {
			mult, f = 1000, n
		} else if n, ok := strings.CutSuffix(f, "M"); ok {
			mult, f = 1_000_000, n
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n*mult > 1_000_000 {
			return nil, fmt.Errorf("bad count %q: use numbers from 1 to 1M, like 1,1k,100k,1M", f)
		}
		out = append(out, n*mult)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
