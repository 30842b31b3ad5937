package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cgwall/cgwall/internal/policy"
)

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 1)) }

// loadBreakdown splits cgwall's time to ready into parsing the policy file and
// loading the datapath (creating maps and programs, filling the maps), both
// timed in this process.
type loadBreakdown struct {
	Rules     int       `json:"rules"`
	ParseSec  []float64 `json:"parse_seconds"`
	LoadSec   []float64 `json:"load_seconds"`
	ListSec   []float64 `json:"list_seconds,omitempty"` // policy.AddList of the same prefixes, where cgwall has it
	RulesRead int       `json:"rules_read"`
}

func measureLoadBreakdown(ctx context.Context, cfg *config, files map[int]ruleSetFiles, log io.Writer) []loadBreakdown {
	var out []loadBreakdown
	for _, n := range cfg.e2eSizes {
		f, ok := files[n]
		if !ok {
			continue
		}
		lb := loadBreakdown{Rules: n}
		for r := 0; r < cfg.rounds && ctx.Err() == nil; r++ {
			t := time.Now()
			p, _, err := policy.LoadFile(f.cg)
			if err != nil {
				fmt.Fprintf(log, "load breakdown: %v\n", err)
				return out
			}
			lb.ParseSec = append(lb.ParseSec, time.Since(t).Seconds())
			lb.RulesRead = len(p.Rules)
			if lp, ok := any(policy.New()).(interface {
				AddList(string, policy.Direction, policy.Action) error
			}); ok {
				t = time.Now()
				if err := lp.AddList(f.list, policy.Egress, policy.Block); err != nil {
					fmt.Fprintf(log, "load breakdown: %v\n", err)
					return out
				}
				lb.ListSec = append(lb.ListSec, time.Since(t).Seconds())
			}
			t = time.Now()
			d, err := loadDatapath(p)
			if err != nil {
				fmt.Fprintf(log, "load breakdown: %v\n", err)
				return out
			}
			lb.LoadSec = append(lb.LoadSec, time.Since(t).Seconds())
			d.Close()
		}
		out = append(out, lb)
	}
	return out
}

// The exec latency: the time from starting a command to its first
// instruction of main, with and without 'cgwall exec' in between. The
// command is this program with stampEnv set: it prints CLOCK_MONOTONIC.

const stampEnv = "CGWALL_BENCH_STAMP"

func stampMain() {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	fmt.Println(ts.Nano())
}

type execResult struct {
	Available bool      `json:"available"`
	Note      string    `json:"note,omitempty"`
	PlainMs   []float64 `json:"plain_ms,omitempty"`
	CgwallMs  []float64 `json:"cgwall_ms,omitempty"`
}

func monoNow() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

func measureExec(ctx context.Context, cfg *config, log io.Writer) execResult {
	if out, err := exec.CommandContext(ctx, cfg.cgwall, "exec", "--help").CombinedOutput(); err != nil {
		note := strings.TrimSpace(string(out))
		if i := strings.IndexByte(note, '\n'); i >= 0 {
			note = note[:i]
		}
		fmt.Fprintf(log, "exec latency: not measured: 'cgwall exec --help' failed: %s\n", note)
		return execResult{Note: fmt.Sprintf("'cgwall exec --help' failed (%v: %s)", err, note)}
	}
	self, err := os.Executable()
	if err != nil {
		return execResult{Note: err.Error()}
	}
	res := execResult{Available: true}
	latency := func(name string, args ...string) (float64, error) {
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
		if err != nil {
			return 0, err
		}
		return float64(stamp-t0) / 1e6, nil
	}
	for r := 0; r < cfg.rounds*4; r++ {
		p, err := latency(self)
		if err != nil {
			res.Note = err.Error()
			return res
		}
		c, err := latency(cfg.cgwall, "exec", "--block", "192.0.2.1", "--log", "none", "--", self)
		if err != nil {
			res.Note = err.Error()
			res.Available = false
			return res
		}
		res.PlainMs = append(res.PlainMs, p)
		res.CgwallMs = append(res.CgwallMs, c)
	}
	fmt.Fprintf(log, "exec latency: plain %.1f ms, cgwall exec %.1f ms (medians)\n", median(res.PlainMs), median(res.CgwallMs))
	return res
}
