package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/cgwall/cgwall/internal/testutil"
)

// End to end: packets per second through the veth of netns.go with each
// variant in force, the time and kernel memory each took to load, and for
// cgwall its programs' own run time and the cost of logging.

// e2eSample is one measurement of one variant at one size in one round.
type e2eSample struct {
	Variant   string    `json:"variant"`
	Rules     int       `json:"rules"`
	Round     int       `json:"round"`
	Dsts      int       `json:"dsts"` // distinct destinations; 1: a connected socket
	Quiet     float64   `json:"quiet_wait_seconds"`
	PPS       float64   `json:"pps"`
	Sent      uint64    `json:"sent"`
	Wire      uint64    `json:"wire"`
	SendErrs  uint64    `json:"send_errors"`
	LoadSec   float64   `json:"load_seconds,omitempty"`       // to ready / command exit
	KernelMiB float64   `json:"kernel_mem_mib,omitempty"`     // meminfo delta
	Memlock   float64   `json:"memlock_mib,omitempty"`        // cgwall: its maps
	ProgNs    float64   `json:"prog_ns_per_pkt,omitempty"`    // cgwall egress: bpf_stats run_time_ns / run_cnt
	SendmsgNs float64   `json:"sendmsg_ns_per_pkt,omitempty"` // cgwall sendmsg4, per packet sent
	Events    uint64    `json:"events,omitempty"`             // cgwall --log all: lines printed
	Lost      uint64    `json:"lost,omitempty"`               // cgwall: lost events reported
	Pair      []float64 `json:"pair,omitempty"`               // no filter: the runs before and after the slot, averaged into PPS
}

// Variants.
const (
	vNone      = "no filter"
	vFloor     = "empty cgroup_skb"
	vCgwall    = "cgwall"
	vCgwallLog = "cgwall --log all"
	vNft       = "nftables"
	vIpt       = "iptables"
	vIptLegacy = "iptables-legacy"
)

// e2eVariants are the filters compared with no filter, in the report's order.
var e2eVariants = []string{vCgwall, vNft, vIpt, vIptLegacy}

func runE2E(ctx context.Context, cfg *config, c *cleanups, env *runEnv, res *results, log io.Writer) error {
	e, err := newE2E(ctx, cfg, c, env)
	if err != nil {
		return err
	}
	var sizes []int
	if cfg.parts["e2e"] {
		sizes = cfg.e2eSizes
	}
	if cfg.parts["log"] && !slices.Contains(sizes, cfg.logRules) {
		sizes = append(sizes, cfg.logRules)
	}
	files := map[int]ruleSetFiles{}
	for _, n := range sizes {
		if files[n], err = e.ruleFiles(n); err != nil {
			return err
		}
	}
	// iptables stops at a size once it fell below 1% of no filter there.
	stopped := map[string]int{}
	for r := 0; r < cfg.rounds; r++ {
		t := time.Now()
		for _, dsts := range cfg.patterns {
			for _, n := range sizes {
				variants := e2eVariantsAt(cfg, n, dsts, stopped)
				if n == sizes[0] && cfg.parts["e2e"] {
					variants = append(variants, vFloor)
				}
				round, err := e.slot(ctx, r, n, dsts, variants, files[n])
				if err != nil {
					return err
				}
				base := round[len(round)-1].PPS
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
		res.CgwallInput = map[bool]string{false: "YAML policy file (-f)", true: "list file (--block-list)"}[e.list]
	}
	return nil
}

// slot measures the variants at one size with one traffic pattern, in a
// random order, with no filter first and last: the mean of those two is
// the reference of the slot, the last sample returned.
func (e *e2eEnv) slot(ctx context.Context, round, n, dsts int, variants []string, files ruleSetFiles) ([]e2eSample, error) {
	e.rng.Shuffle(len(variants), func(i, j int) { variants[i], variants[j] = variants[j], variants[i] })
	variants = append(append([]string{vNone}, variants...), vNone)
	var out []e2eSample
	ref := e2eSample{Variant: vNone, Rules: n, Dsts: dsts, Round: round}
	for _, v := range variants {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		s, err := e.measure(ctx, v, n, dsts, files)
		if err != nil {
			return nil, fmt.Errorf("%s, %d rules, %d destinations: %w", v, n, dsts, err)
		}
		s.Round = round
		if v != vNone {
			out = append(out, s)
			continue
		}
		ref.Pair = append(ref.Pair, s.PPS)
		ref.Sent += s.Sent
		ref.Wire += s.Wire
	}
	ref.PPS = mean(ref.Pair)
	return append(out, ref), nil
}

// e2eVariantsAt lists what runs at one size and pattern: every variant, but
// iptables only up to its maximum and until it fell below 1% of no filter,
// and the logging pair only at its size on the first pattern.
func e2eVariantsAt(cfg *config, n, dsts int, stopped map[string]int) []string {
	var variants []string
	if cfg.parts["e2e"] && slices.Contains(cfg.e2eSizes, n) {
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
	var parts []string
	for _, s := range round {
		p := fmt.Sprintf(" %s %.0fk", s.Variant, s.PPS/1000)
		if base > 0 && s.Variant != vNone {
			p += fmt.Sprintf(" (%.1f%%)", 100*s.PPS/base)
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ";")
}

// measure loads a variant, times and sizes the load, sends, and unloads.
func (e *e2eEnv) measure(ctx context.Context, variant string, n, dsts int, files ruleSetFiles) (e2eSample, error) {
	s := e2eSample{Variant: variant, Rules: n, Dsts: dsts}
	// Let the frees of the previous variant (maps, sets, rule blobs, after
	// an RCU grace period) finish before anything is measured.
	s.Quiet = waitQuiet(ctx, e.cfg.senderCPU)
	pair := e.pairs["a"]
	if variant == vIptLegacy {
		pair = e.pairs["b"]
	}
	before, start := kernelMemKiB(), time.Now()
	unload, err := e.load(ctx, variant, pair, files, &s)
	if err != nil {
		return s, err
	}
	if variant != vNone && variant != vFloor {
		s.LoadSec = time.Since(start).Seconds()
		s.KernelMiB = float64(settleKernelMem()-before) / 1024
	}
	if variant == vCgwall || variant == vCgwallLog {
		if m, err := e.cgwallMemlock(); err == nil {
			s.Memlock = m
		}
	}
	res, err := e.runSender(ctx, pair, dsts, e.cfg.duration)
	if err == nil && variant == vCgwall {
		s.ProgNs, s.SendmsgNs, err = e.progCost(ctx, dsts)
	}
	if uerr := unload(); err == nil {
		err = uerr
	}
	if err != nil {
		return s, err
	}
	if res.Errors > 0 {
		return s, fmt.Errorf("%s with %d rules: %d sendmmsg calls failed (%s): the traffic should pass every filter", variant, n, res.Errors, res.LastErr)
	}
	s.PPS, s.Sent, s.Wire, s.SendErrs = res.pps(), res.Sent, res.Wire, res.Errors
	return s, nil
}

// load puts a variant's rules in force and returns what takes them out.
func (e *e2eEnv) load(ctx context.Context, variant string, pair netnsPair, files ruleSetFiles, s *e2eSample) (unload func() error, err error) {
	switch variant {
	case vNone:
		return func() error { return nil }, nil
	case vFloor:
		return attachEmpty(e.sendCg)
	case vCgwall, vCgwallLog:
		return e.startCgwall(ctx, variant, files, s)
	case vNft:
		return func() error {
			return command(context.Background(), nsenter(pair.src, "nft", "delete", "table", "inet", "cgwall_bench")...)
		}, command(ctx, nsenter(pair.src, "nft", "-f", files.nft)...)
	}
	restore, flush := "iptables-nft-restore", []string{"nft", "delete", "table", "ip", "filter"}
	if variant == vIptLegacy {
		restore, flush = "iptables-legacy-restore", []string{"iptables-legacy", "-F", "OUTPUT"}
	}
	return func() error {
		return command(context.Background(), nsenter(pair.src, flush...)...)
	}, command(ctx, nsenter(pair.src, restore, "--noflush", files.ipt)...)
}

var lostRe = regexp.MustCompile(`^lost (\d+) events.* \(ring buffer full; (\d+) in total\)`)

// startCgwall runs 'cgwall run' on the sender cgroup until its ready line;
// what it returns interrupts it and records the events it printed and the
// events it reported lost.
func (e *e2eEnv) startCgwall(ctx context.Context, variant string, files ruleSetFiles, s *e2eSample) (func() error, error) {
	args := []string{"run", "--cgroup", e.sendCg, "-f", files.cg}
	if e.list {
		args = []string{"run", "--cgroup", e.sendCg, "--block-list", files.list}
	}
	args = append(args, "--log", map[bool]string{false: "none", true: "all"}[variant == vCgwallLog])
	cmd := exec.Command(e.cfg.cgwall, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	events := &lineCount{}
	cmd.Stdout = events
	wait, cancel := context.WithTimeout(ctx, e.cfg.loadTimeout)
	defer cancel()
	p, err := testutil.Start(wait, cmd, "attached ")
	if err != nil {
		return nil, fmt.Errorf("cgwall run: %w", err)
	}
	return func() error {
		stop, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		code, err := p.Stop(stop)
		s.Events = events.n
		for _, line := range p.Stderr.All() {
			if m := lostRe.FindStringSubmatch(line); m != nil {
				total, _ := strconv.ParseUint(m[2], 10, 64)
				s.Lost = max(s.Lost, total)
			}
		}
		if err == nil && code != 0 {
			err = fmt.Errorf("cgwall run exited %d on SIGINT: %s", code, p.Stderr)
		}
		return err
	}, nil
}

// lineCount counts the lines written to it: cgwall's events, drained as fast
// as they come.
type lineCount struct{ n uint64 }

func (c *lineCount) Write(b []byte) (int, error) {
	c.n += uint64(bytes.Count(b, []byte{'\n'}))
	return len(b), nil
}

// runSender runs one sender in the sender cgroup and returns its result.
func (e *e2eEnv) runSender(ctx context.Context, pair netnsPair, dsts int, duration time.Duration) (senderResult, error) {
	var res senderResult
	job, err := json.Marshal(senderJob{Netns: netnsPath(pair.src), Dev: srcDev, Dst: firstDst, Dsts: dsts,
		Batch: e.cfg.batch, Size: payloadBytes, CPU: e.cfg.senderCPU, Warmup: e.cfg.warmup, Duration: duration})
	if err != nil {
		return res, err
	}
	cgf, err := os.Open(e.sendCg)
	if err != nil {
		return res, err
	}
	defer cgf.Close()
	ctx, cancel := context.WithTimeout(ctx, duration+e.cfg.warmup+20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.self)
	cmd.Env = append(os.Environ(), senderEnv+"="+string(job))
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgf.Fd()), Pdeathsig: syscall.SIGKILL}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return res, fmt.Errorf("sender: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return res, fmt.Errorf("sender output %q: %w", out, err)
	}
	return res, nil
}

func (e *e2eEnv) cgwallMemlock() (float64, error) {
	p, err := attachedProgram(e.sendCg, ebpf.AttachCGroupInetEgress)
	if err != nil {
		return 0, err
	}
	defer p.Close()
	m, err := progMemlock(p)
	return float64(m) / (1 << 20), err
}

// progCost sends once more with the kernel's BPF run-time statistics on and
// returns the mean run time of cgwall's egress and sendmsg4 programs,
// measured in the kernel on real traffic. Statistics cost two clock reads
// per run, so they are off while packets per second are measured.
func (e *e2eEnv) progCost(ctx context.Context, dsts int) (egress, sendmsg float64, err error) {
	eg, err := attachedProgram(e.sendCg, ebpf.AttachCGroupInetEgress)
	if err != nil {
		return 0, 0, err
	}
	defer eg.Close()
	sm, err := attachedProgram(e.sendCg, ebpf.AttachCGroupUDP4Sendmsg)
	if err != nil {
		return 0, 0, err
	}
	defer sm.Close()
	st, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		return 0, 0, fmt.Errorf("enable BPF statistics: %w", err)
	}
	defer st.Close()
	e0, s0 := runStats(eg), runStats(sm)
	if _, err := e.runSender(ctx, e.pairs["a"], dsts, e.cfg.statsDuration); err != nil {
		return 0, 0, err
	}
	e1, s1 := runStats(eg), runStats(sm)
	if e1.RunCount == e0.RunCount {
		return 0, 0, errors.New("no runs of the egress program in its statistics")
	}
	// The sender's warm-up is sent with statistics on too: divide by the
	// runs, not by the counted packets.
	return perRun(e0, e1), perRun(s0, s1), nil
}

// runStats is a program's run count and time; zero if the kernel cannot
// tell.
func runStats(p *ebpf.Program) ebpf.ProgramStats {
	if st, err := p.Stats(); err == nil {
		return *st
	}
	return ebpf.ProgramStats{}
}

func perRun(before, after ebpf.ProgramStats) float64 {
	if runs := after.RunCount - before.RunCount; runs > 0 {
		return float64((after.Runtime - before.Runtime).Nanoseconds()) / float64(runs)
	}
	return 0
}

// waitQuiet waits, up to 10 s, until kernel memory has stopped moving and
// the sender's CPU has been idle for 300 ms, and returns how long it waited:
// the frees of the previous variant (maps, sets, rule blobs, namespaces'
// work) run after an RCU grace period, in the background.
func waitQuiet(ctx context.Context, cpu int) float64 {
	start := time.Now()
	prev := kernelMemKiB()
	busy0, total0 := cpuTimes(cpu)
	for still := 0; still < 3 && time.Since(start) < 10*time.Second && ctx.Err() == nil; {
		time.Sleep(100 * time.Millisecond) // a sampling period, not a wait for an event
		cur := kernelMemKiB()
		busy, total := cpuTimes(cpu)
		idle := total > total0 && float64(busy-busy0) < 0.1*float64(total-total0)
		if abs64(cur-prev) < 512 && idle {
			still++
		} else {
			still = 0
		}
		prev, busy0, total0 = cur, busy, total
	}
	return time.Since(start).Seconds()
}

// cpuTimes returns one CPU's busy and total time from /proc/stat, in ticks.
func cpuTimes(cpu int) (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	name := fmt.Sprintf("cpu%d", cpu)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[0] != name {
			continue
		}
		for i, v := range f[1:min(len(f), 9)] { // user … steal; guest is in user already
			n, _ := strconv.ParseUint(v, 10, 64)
			total += n
			if i != 3 && i != 4 { // idle, iowait
				busy += n
			}
		}
	}
	return busy, total
}

// attachEmpty attaches programs that only return 1 to the sender cgroup's
// egress and sendmsg4 hooks, where cgwall attaches its own: what is left of
// cgwall's cost with these is the cost of its decisions, and what these cost
// is the floor that no program on these hooks can go below.
func attachEmpty(cg string) (detach func() error, err error) {
	var closers []io.Closer
	detach = func() error {
		for _, c := range slices.Backward(closers) {
			c.Close()
		}
		return nil
	}
	for typ, attach := range map[ebpf.ProgramType]ebpf.AttachType{ebpf.CGroupSKB: ebpf.AttachCGroupInetEgress, ebpf.CGroupSockAddr: ebpf.AttachCGroupUDP4Sendmsg} {
		prog, err := returnOne(typ, attach)
		if err != nil {
			detach()
			return nil, err
		}
		closers = append(closers, prog)
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cg, Attach: attach, Program: prog})
		if err != nil {
			detach()
			return nil, err
		}
		closers = append(closers, l)
	}
	return detach, nil
}

// returnOne is a program that only returns 1: pass.
func returnOne(typ ebpf.ProgramType, attach ebpf.AttachType) (*ebpf.Program, error) {
	return ebpf.NewProgram(&ebpf.ProgramSpec{Type: typ, AttachType: attach, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}})
}
