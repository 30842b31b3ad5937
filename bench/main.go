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
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cgwall/cgwall/internal/cgroup"
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
	statsDuration time.Duration
	progStats     bool
	logRules      int
	loadTimeout   time.Duration

	cgwall string
	out    string
	docs   bool
	repo   string
}

func defaultConfig(quick bool) *config {
	cfg := &config{
		quick:         quick,
		rounds:        5,
		parts:         map[string]bool{"decision": true, "e2e": true, "log": true, "exec": true},
		decisionSizes: []int{1, 1000, 100_000, 1_000_000},
		decisionDsts:  100_000,
		decisionRuns:  50_000,
		warmRepeat:    1_000_000,
		benchCPU:      1,
		e2eSizes:      []int{1, 100, 1000, 10_000, 100_000, 1_000_000},
		iptablesMax:   10_000,
		patterns:      []int{1, 4096},
		batch:         64,
		senderCPU:     1,
		warmup:        250 * time.Millisecond,
		duration:      time.Second,
		statsDuration: 500 * time.Millisecond,
		progStats:     true,
		logRules:      1000,
		loadTimeout:   5 * time.Minute,
	}
	if quick {
		cfg.decisionSizes = []int{1, 1000, 100_000}
		cfg.decisionDsts = 20_000
		cfg.decisionRuns = 10_000
		cfg.warmRepeat = 200_000
		cfg.e2eSizes = []int{1, 10_000}
		cfg.warmup = 100 * time.Millisecond
		cfg.duration = 250 * time.Millisecond
		cfg.patterns = []int{1}
		cfg.logRules = 1
		cfg.statsDuration = 200 * time.Millisecond
	}
	return cfg
}

func main() {
	if os.Getenv(senderEnv) == "1" {
		if err := senderMain(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "sender:", err)
			os.Exit(1)
		}
		return
	}
	if os.Getenv(stampEnv) == "1" {
		stampMain()
		return
	}

	quick := flag.Bool("quick", false, "a short run (under 2 minutes): fewer sizes, shorter windows")
	rounds := flag.Int("rounds", 0, "rounds of every measurement (default 5)")
	only := flag.String("only", "", "comma-separated parts to run: decision, e2e, log, exec (default all)")
	out := flag.String("out", "", "directory for results.md, results.json and pps.png (default a new directory under /tmp)")
	docs := flag.Bool("docs", false, "also write the results into docs/performance.md and docs/img/bench-pps.png")
	cgwallBin := flag.String("cgwall", "", "the cgwall binary to measure (default: build ./cmd/cgwall)")
	patterns := flag.String("patterns", "", "end-to-end traffic patterns, as numbers of distinct destinations: 1 sends on a connected socket, more send unconnected to each in turn (default 1,4096; -quick 1)")
	e2eSizes := flag.String("e2e-sizes", "", "comma-separated rule counts for the end-to-end and control-plane runs (default 1,100,1k,10k,100k,1M; -quick 1,10k)")
	decisionSizes := flag.String("decision-sizes", "", "comma-separated rule counts for the decision cost (default 1,1k,100k,1M; -quick 1,1k,100k)")
	render := flag.String("render", "", "write the report of an earlier run from its results.json, measuring nothing")
	flag.Parse()

	cfg := defaultConfig(*quick)
	if *rounds > 0 {
		cfg.rounds = *rounds
	}
	if *only != "" {
		cfg.parts = map[string]bool{}
		for _, p := range strings.Split(*only, ",") {
			cfg.parts[strings.TrimSpace(p)] = true
		}
	}
	for _, f := range []struct {
		s   string
		dst *[]int
	}{{*e2eSizes, &cfg.e2eSizes}, {*decisionSizes, &cfg.decisionSizes}, {*patterns, &cfg.patterns}} {
		if f.s == "" {
			continue
		}
		sizes, err := parseSizes(f.s)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(2)
		}
		*f.dst = sizes
	}
	cfg.out = *out
	cfg.docs = *docs
	cfg.cgwall = *cgwallBin

	if *render != "" {
		if err := rerender(cfg, *render, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}

	ctx, cancel := context.WithCancel(context.Background())
	var c cleanups
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Fprintln(os.Stderr, "interrupted: cleaning up")
		cancel()
		select {
		case <-sigs:
		case <-time.After(20 * time.Second):
		}
		c.run()
		os.Exit(130)
	}()

	err := run(ctx, cfg, &c, os.Stdout)
	c.run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		if errors.Is(err, context.Canceled) {
			os.Exit(130)
		}
		os.Exit(1)
	}
}

// run is the whole harness: check, set up, measure, report. Everything it
// sets up is registered with c, which the caller runs.
func run(ctx context.Context, cfg *config, c *cleanups, log io.Writer) error {
	if err := prerequisites(cfg); err != nil {
		return err
	}
	repo, err := repoRoot()
	if err != nil {
		return err
	}
	cfg.repo = repo
	removeStale()

	tmp, err := os.MkdirTemp("", "cgwall-bench-")
	if err != nil {
		return err
	}
	c.add("remove "+tmp, func() error { return os.RemoveAll(tmp) })
	if cfg.out == "" {
		cfg.out, err = os.MkdirTemp("", "cgwall-bench-results-")
		if err != nil {
			return err
		}
	} else if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return err
	}
	if cfg.cgwall == "" {
		cfg.cgwall = filepath.Join(tmp, "cgwall")
		fmt.Fprintln(log, "building cgwall")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", cfg.cgwall, "./cmd/cgwall")
		cmd.Dir = repo
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/cgwall: %w: %s", err, b)
		}
	}

	mnt, err := cgroup.Mount()
	if err != nil {
		return err
	}
	root := filepath.Join(mnt, fmt.Sprintf("cgwall-bench-%d", os.Getpid()))
	if err := os.Mkdir(root, 0o755); err != nil {
		return fmt.Errorf("create cgroup: %w", err)
	}
	c.add("remove cgroup "+root, func() error { return removeCgroupTree(root) })

	res := &results{Started: time.Now(), Rounds: cfg.rounds, Quick: cfg.quick, Machine: machine(), Commit: commit(repo)}
	start := time.Now()
	if cfg.parts["decision"] {
		if err := runDecision(ctx, cfg, root, res, log); err != nil {
			return fmt.Errorf("decision cost: %w", err)
		}
	}
	if cfg.parts["e2e"] || cfg.parts["log"] {
		if err := runE2E(ctx, cfg, c, mnt, root, tmp, res, log); err != nil {
			return fmt.Errorf("end to end: %w", err)
		}
	}
	if cfg.parts["exec"] {
		res.Exec = measureExec(ctx, cfg, log)
	}
	res.Seconds = time.Since(start).Seconds()
	res.Settings = cfg.settings()
	return publish(cfg, res, log)
}

// publish writes the report of r to cfg.out, and with -docs into docs/.
func publish(cfg *config, r *results, log io.Writer) error {
	rep, err := render(r)
	if err != nil {
		return err
	}
	if err := rep.write(cfg.out, log); err != nil {
		return err
	}
	if cfg.docs {
		return rep.writeDocs(cfg.repo, log)
	}
	return nil
}

// rerender writes the report of an earlier run again, from its JSON.
func rerender(cfg *config, path string, log io.Writer) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var r results
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if cfg.repo, err = repoRoot(); err != nil {
		return err
	}
	if cfg.out == "" {
		cfg.out = filepath.Dir(path)
	}
	return publish(cfg, &r, log)
}

func runDecision(ctx context.Context, cfg *config, root string, res *results, log io.Writer) error {
	cg, err := decisionCgroup(root)
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "decision cost: generating rule sets\n")
	sets := map[string]*ruleSet{}
	for _, k := range setKinds {
		for _, n := range cfg.decisionSizes {
			sets[setKey(k.name, n)] = k.build(n)
		}
	}
	for r := 0; r < cfg.rounds; r++ {
		t := time.Now()
		dr, err := measureDecision(ctx, cfg, cg, sets, r)
		if err != nil {
			return err
		}
		res.Decision = append(res.Decision, dr)
		fmt.Fprintf(log, "decision cost: round %d/%d done in %.0fs (timer overhead %.0f ns)\n", r+1, cfg.rounds, time.Since(t).Seconds(), dr.OverheadNs)
	}
	return nil
}

func runE2E(ctx context.Context, cfg *config, c *cleanups, mnt, root, tmp string, res *results, log io.Writer) error {
	e, err := newE2E(ctx, cfg, c, mnt, root, tmp)
	if err != nil {
		return err
	}
	files := map[int]ruleSetFiles{}
	sizes := cfg.e2eSizes
	if !cfg.parts["e2e"] {
		sizes = nil
	}
	if cfg.parts["log"] && !contains(sizes, cfg.logRules) {
		sizes = append(sizes, cfg.logRules)
	}
	for _, n := range sizes {
		var f ruleSetFiles
		if f.cg, f.list, f.nft, f.ipt, err = e.ruleFiles(n); err != nil {
			return err
		}
		files[n] = f
	}
	// iptables stops at a size once it fell below 1% of no filter there.
	stopped := map[string]int{}
	rng := newRand(7)
	for r := 0; r < cfg.rounds; r++ {
		t := time.Now()
		for _, dsts := range cfg.patterns {
			for _, n := range sizes {
				variants := e2eVariantsAt(cfg, n, dsts, stopped)
				if n == sizes[0] && cfg.parts["e2e"] {
					variants = append(variants, vFloor)
				}
				rng.Shuffle(len(variants), func(i, j int) { variants[i], variants[j] = variants[j], variants[i] })
				// No filter runs first and last, and the two are averaged
				// into the reference for this slot.
				variants = append(append([]string{vNone}, variants...), vNone)
				var round []e2eSample
				var bases []float64
				var baseSent, baseWire uint64
				for _, v := range variants {
					if err := ctx.Err(); err != nil {
						return err
					}
					s, err := e.measure(ctx, v, n, dsts, files[n])
					if err != nil {
						return fmt.Errorf("%s, %d rules, %d destinations: %w", v, n, dsts, err)
					}
					s.Round = r
					if v == vNone {
						bases = append(bases, s.PPS)
						baseSent += s.Sent
						baseWire += s.Wire
						continue
					}
					round = append(round, s)
				}
				base := mean(bases)
				round = append(round, e2eSample{Variant: vNone, Rules: n, Dsts: dsts, Round: r, PPS: base, Sent: baseSent, Wire: baseWire, Pair: bases})
				for _, s := range round {
					key := fmt.Sprintf("%s/%d", s.Variant, dsts)
					if (s.Variant == vIpt || s.Variant == vIptLegacy) && base > 0 && s.PPS < 0.01*base && stopped[key] == 0 {
						stopped[key] = n
						fmt.Fprintf(log, "  %s fell below 1%% of no filter at %d rules: no larger sizes\n", s.Variant, n)
					}
				}
				res.E2E = append(res.E2E, round...)
				fmt.Fprintf(log, "end to end: round %d/%d, %s, %s rules:%s\n", r+1, cfg.rounds, patternName(dsts), human(n), summarise(round, base))
			}
		}
		fmt.Fprintf(log, "end to end: round %d/%d done in %.0fs\n", r+1, cfg.rounds, time.Since(t).Seconds())
	}
	if cfg.parts["e2e"] {
		res.LoadBreakdown = measureLoadBreakdown(ctx, cfg, files, log)
		res.CgwallInput = "YAML policy file (-f)"
		if e.list {
			res.CgwallInput = "list file (--block-list)"
		}
	}
	return nil
}

// e2eVariantsAt lists what runs at one size and pattern: every variant, but
// iptables only up to its maximum and until it fell below 1% of no filter,
// and the logging pair only at its size on the first pattern.
func e2eVariantsAt(cfg *config, n, dsts int, stopped map[string]int) []string {
	var variants []string
	if cfg.parts["e2e"] && contains(cfg.e2eSizes, n) {
		variants = []string{vCgwall, vNft}
		for _, v := range []string{vIpt, vIptLegacy} {
			stop := stopped[fmt.Sprintf("%s/%d", v, dsts)]
			if n <= cfg.iptablesMax && (stop == 0 || n <= stop) {
				variants = append(variants, v)
			}
		}
	}
	if cfg.parts["log"] && n == cfg.logRules && dsts == cfg.patterns[0] {
		for _, v := range []string{vCgwall, vCgwallLog} {
			if !slices.Contains(variants, v) {
				variants = append(variants, v)
			}
		}
	}
	return variants
}

func summarise(round []e2eSample, base float64) string {
	var b strings.Builder
	for _, s := range round {
		fmt.Fprintf(&b, " %s %.0fk", s.Variant, s.PPS/1000)
		if base > 0 && s.Variant != vNone {
			fmt.Fprintf(&b, " (%.1f%%)", 100*s.PPS/base)
		}
		b.WriteString(";")
	}
	return strings.TrimSuffix(b.String(), ";")
}

// parseSizes reads "1,1k,100k,1M".
func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		mult := 1
		switch {
		case strings.HasSuffix(f, "k"):
			mult, f = 1000, strings.TrimSuffix(f, "k")
		case strings.HasSuffix(f, "M"):
			mult, f = 1_000_000, strings.TrimSuffix(f, "M")
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

func contains(xs []int, x int) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// prerequisites names the first thing missing.
func prerequisites(cfg *config) error {
	if os.Geteuid() != 0 {
		return errors.New("run as root: the harness loads BPF programs, creates network namespaces and cgroups")
	}
	if _, err := cgroup.Mount(); err != nil {
		return err
	}
	need := []string{"ip", "nsenter", "sysctl"}
	if cfg.parts["e2e"] {
		need = append(need, "nft", "iptables-nft-restore", "iptables-legacy-restore", "iptables-legacy")
	}
	if cfg.parts["e2e"] || cfg.parts["log"] {
		need = append(need, "nft")
	}
	if cfg.cgwall == "" {
		need = append(need, "go")
	}
	var missing []string
	for _, n := range need {
		if _, err := exec.LookPath(n); err != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: apt-get install -y nftables iptables iproute2 util-linux procps", strings.Join(missing, ", "))
	}
	return nil
}

// repoRoot finds the module root from the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/cgwall/cgwall") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the cgwall repository")
		}
		dir = parent
	}
}

// removeStale removes the namespaces and cgroups of earlier runs that were
// killed before they could clean up (their process is gone).
func removeStale() {
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, ent := range ents {
			if pid, ok := stalePid(ent.Name(), "cgwb-"); ok && !alive(pid) {
				command(context.Background(), "ip", "netns", "del", ent.Name())
			}
		}
	}
	if mnt, err := cgroup.Mount(); err == nil {
		if ents, err := os.ReadDir(mnt); err == nil {
			for _, ent := range ents {
				if pid, ok := stalePid(ent.Name(), "cgwall-bench-"); ok && !alive(pid) {
					removeCgroupTree(filepath.Join(mnt, ent.Name()))
				}
			}
		}
	}
}

func stalePid(name, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	digits, _, _ := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(digits)
	return pid, err == nil && pid > 0
}

// removeCgroupTree removes a cgroup and its children, deepest first, after
// killing anything left in them.
func removeCgroupTree(root string) error {
	var dirs []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- {
		if b, err := os.ReadFile(filepath.Join(dirs[i], "cgroup.procs")); err == nil {
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		var err error
		for try := 0; try < 50; try++ {
			if err = os.Remove(dirs[i]); err == nil || os.IsNotExist(err) {
				err = nil
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
