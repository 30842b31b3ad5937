package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/policy"
)

// The control plane, timed in this process: where cgwall's time to ready
// goes, and what 'cgwall exec' adds to a command's start.

// loadBreakdown splits cgwall's time to ready into reading the rules and
// loading the datapath (creating maps and programs, filling the maps).
type loadBreakdown struct {
	Rules     int       `json:"rules"`
	ParseSec  []float64 `json:"parse_seconds"`
	LoadSec   []float64 `json:"load_seconds"`
	ListSec   []float64 `json:"list_seconds,omitempty"` // policy.AddList of the same prefixes
	RulesRead int       `json:"rules_read"`
}

func measureLoadBreakdown(ctx context.Context, cfg *config, files map[int]ruleFiles, log io.Writer) []loadBreakdown {
	var out []loadBreakdown
	for _, n := range cfg.E2ESizes {
		lb := loadBreakdown{Rules: n}
		for r := 0; r < cfg.rounds && ctx.Err() == nil; r++ {
			if err := lb.measure(files[n]); err != nil {
				fmt.Fprintf(log, "load breakdown: %v\n", err)
				return out
			}
		}
		out = append(out, lb)
	}
	return out
}

func (lb *loadBreakdown) measure(f ruleFiles) error {
	t := time.Now()
	p, _, err := policy.LoadFile(f["yaml"])
	if err != nil {
		return err
	}
	lb.ParseSec = append(lb.ParseSec, time.Since(t).Seconds())
	lb.RulesRead = len(p.Rules)
	t = time.Now()
	if err := policy.New().AddList(f["list"], policy.Egress, policy.Block); err != nil {
		return err
	}
	lb.ListSec = append(lb.ListSec, time.Since(t).Seconds())
	t = time.Now()
	d, err := loadDatapath(p)
	if err != nil {
		return err
	}
	lb.LoadSec = append(lb.LoadSec, time.Since(t).Seconds())
	return d.Close()
}

// The exec latency: the time from starting a command to its first
// instruction of main, with and without 'cgwall exec' in between. The
// command is this program with stampEnv set: it prints CLOCK_MONOTONIC.

const stampEnv = "CGWALL_BENCH_STAMP"

func monoNow() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

type execResult struct {
	Available bool      `json:"available"`
	Note      string    `json:"note,omitempty"`
	PlainMs   []float64 `json:"plain_ms,omitempty"`
	CgwallMs  []float64 `json:"cgwall_ms,omitempty"`
	// GraceMs is the host's RCU grace period, timed in the same rounds: a
	// load that writes map-in-map slots waits for it once per batch of writes.
	GraceMs []float64 `json:"grace_ms,omitempty"`
}

func measureExec(ctx context.Context, cfg *config, log io.Writer) execResult {
	if out, err := exec.CommandContext(ctx, cfg.cgwall, "exec", "--help").CombinedOutput(); err != nil {
		note, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		fmt.Fprintf(log, "exec latency: not measured: 'cgwall exec --help' failed: %s\n", note)
		return execResult{Note: fmt.Sprintf("'cgwall exec --help' failed (%v: %s)", err, note)}
	}
	self, err := os.Executable()
	if err != nil {
		return execResult{Note: err.Error()}
	}
	var res execResult
	for range cfg.rounds * 4 {
		plain, err := stampLatency(ctx, self)
		if err != nil {
			res.Note = err.Error()
			return res
		}
		through, err := stampLatency(ctx, cfg.cgwall, "exec", "--block", "192.0.2.1", "--log", "none", "--", self)
		if err != nil {
			res.Note = err.Error()
			return res
		}
		res.PlainMs, res.CgwallMs = append(res.PlainMs, plain), append(res.CgwallMs, through)
		res.GraceMs = append(res.GraceMs, gracePeriodMs())
	}
	res.Available = true
	fmt.Fprintf(log, "exec latency: plain %.1f ms, cgwall exec %.1f ms (medians)\n", median(res.PlainMs), median(res.CgwallMs))
	return res
}

// gracePeriodMs times one RCU grace period, what the kernel waits for after a
// write to a map-in-map.
func gracePeriodMs() float64 {
	t := monoNow()
	datapath.WaitForReaders()
	return float64(monoNow()-t) / 1e6
}

// stampLatency runs a command that ends in this program as the stamp, and
// returns the milliseconds from the start to the stamp.
func stampLatency(ctx context.Context, name string, args ...string) (float64, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), stampEnv+"=1")
	t0 := monoNow()
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", strings.Join(cmd.Args, " "), err)
	}
	fields := strings.Fields(string(out))
	if len(fields) == 0 {
		return 0, fmt.Errorf("%s printed no stamp", strings.Join(cmd.Args, " "))
	}
	stamp, err := strconv.ParseInt(fields[len(fields)-1], 10, 64)
	return float64(stamp-t0) / 1e6, err
}
