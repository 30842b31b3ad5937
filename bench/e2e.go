package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
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

	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/ruleset"
	"github.com/cgwall/cgwall/internal/testutil"
)

// End to end: packets per second through the veth of netns.go with each
// variant in force, the time and kernel memory each took to load, and for
// cgwall its programs' own run time and the cost of logging.

// e2eSample is one measurement of one variant at one size in one round.
type e2eSample struct {
	Variant   string    `json:"variant"`
	Set       string    `json:"set,omitempty"` // "ports", or "ipv6" (IPv6 traffic); else the ipv4-mixed rules that every packet misses
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
	Hooks     []string  `json:"hooks,omitempty"`              // cgwall: where it had programs; empty cgroup_skb: where it attached them
	// Interleaved: one arm of an interleaved run (interleave.go), its PPS
	// the arm's packets over the time of its turns.
	Interleaved bool `json:"interleaved,omitempty"`
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

// setIPv6 is the end-to-end runs with IPv6 traffic: the ipv6 set's rules,
// which every packet misses, against nftables (issue #18).
const setIPv6 = "ipv6"

// setFamily is the address family of a set's traffic.
func setFamily(set string) int {
	if set == setIPv6 {
		return 6
	}
	return 4
}

// netfilter is how each netfilter variant loads its rule file in the
// sending namespace, and removes it again.
var netfilter = map[string]struct {
	format       string
	load, unload []string
}{
	vNft:       {"nft", []string{"nft", "-f"}, []string{"nft", "delete", "table", "inet", "cgwall_bench"}},
	vIpt:       {"iptables", []string{"iptables-nft-restore", "--noflush"}, []string{"nft", "delete", "table", "ip", "filter"}},
	vIptLegacy: {"iptables", []string{"iptables-legacy-restore", "--noflush"}, []string{"iptables-legacy", "-F", "OUTPUT"}},
}

func runE2E(ctx context.Context, cfg *config, c *cleanups, env *runEnv, res *results, log io.Writer) error {
	e, err := newE2E(ctx, cfg, c, env)
	if err != nil {
		return err
	}
	var sizes []int
	if cfg.parts["e2e"] {
		sizes = slices.Clone(cfg.E2ESizes)
	}
	if cfg.parts["log"] && !slices.Contains(sizes, cfg.LogRules) {
		sizes = append(sizes, cfg.LogRules)
	}
	files, portFiles, ipv6Files := map[int]ruleFiles{}, map[int]ruleFiles{}, map[int]ruleFiles{}
	for _, n := range sizes {
		if files[n], err = e.writeRules(n, 4); err != nil {
			return err
		}
	}
	var ipv6Sizes []int
	if cfg.parts["ipv6"] {
		ipv6Sizes = cfg.IPv6Sizes
	}
	for _, n := range ipv6Sizes {
		if ipv6Files[n], err = e.writeRules(n, 6); err != nil {
			return err
		}
	}
	var portsSizes []int
	if cfg.parts["ports"] {
		portsSizes = cfg.PortsSizes
	}
	for _, n := range portsSizes {
		if portFiles[n], err = e.writePortRules(n); err != nil {
			return err
		}
	}
	for r := range cfg.rounds {
		t := time.Now()
		for _, dsts := range cfg.Patterns {
			for _, n := range sizes {
				slot, err := e.slot(ctx, r, n, dsts, "", e.variantsAt(n, dsts), files[n])
				if err != nil {
					return err
				}
				res.E2E = append(res.E2E, slot...)
				fmt.Fprintf(log, "end to end: round %d/%d, %s, %s rules:%s\n", r+1, cfg.rounds, patternName(dsts), human(n), e.review(slot, log))
				if err := e.interleave(ctx, r, n, dsts, "", files[n], res, log); err != nil {
					return err
				}
			}
			for _, n := range portsSizes {
				slot, err := e.slot(ctx, r, n, dsts, ruleset.PortsKind.Name, []string{vCgwall, vNft}, portFiles[n])
				if err != nil {
					return err
				}
				res.E2E = append(res.E2E, slot...)
				fmt.Fprintf(log, "end to end: round %d/%d, %s, %s port rules:%s\n", r+1, cfg.rounds, patternName(dsts), human(n), e.review(slot, log))
			}
			for _, n := range ipv6Sizes {
				variants := []string{vCgwall, vNft}
				if n == ipv6Sizes[0] {
					variants = append(variants, vFloor)
				}
				slot, err := e.slot(ctx, r, n, dsts, setIPv6, variants, ipv6Files[n])
				if err != nil {
					return err
				}
				res.E2E = append(res.E2E, slot...)
				fmt.Fprintf(log, "end to end: round %d/%d, %s, %s ipv6 rules, IPv6 traffic:%s\n", r+1, cfg.rounds, patternName(dsts), human(n), e.review(slot, log))
				if err := e.interleave(ctx, r, n, dsts, setIPv6, ipv6Files[n], res, log); err != nil {
					return err
				}
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

// variantsAt lists what runs at one size and pattern besides no filter:
// every variant, but iptables only up to its maximum and until it fell below
// 1% of no filter, the logging pair only at its size on the first pattern,
// and the empty programs only at the smallest size (at issue #18's small
// sizes cgwall is held to them in interleaved runs).
func (e *e2eEnv) variantsAt(n, dsts int) []string {
	cfg := e.cfg
	var variants []string
	if cfg.parts["e2e"] && slices.Contains(cfg.E2ESizes, n) {
		variants = []string{vCgwall, vNft}
		for _, v := range []string{vIpt, vIptLegacy} {
			if stop := e.stopped[stop{v, dsts}]; n <= cfg.IptablesMax && (stop == 0 || n <= stop) {
				variants = append(variants, v)
			}
		}
		if n == cfg.E2ESizes[0] {
			variants = append(variants, vFloor)
		}
	}
	if cfg.parts["log"] && n == cfg.LogRules && dsts == cfg.Patterns[0] {
		for _, v := range []string{vCgwall, vCgwallLog} {
			if !slices.Contains(variants, v) {
				variants = append(variants, v)
			}
		}
	}
	return variants
}

// slot measures the variants at one size of a rule set with one traffic
// pattern, in slotOrder, with no filter first and last: the mean of those
// two is the reference of the slot, the last sample returned.
func (e *e2eEnv) slot(ctx context.Context, round, n, dsts int, set string, variants []string, files ruleFiles) ([]e2eSample, error) {
	variants = slotOrder(variants, e.rng)
	var out []e2eSample
	ref := e2eSample{Variant: vNone, Set: set, Rules: n, Dsts: dsts, Round: round}
	for _, v := range slices.Concat([]string{vNone}, variants, []string{vNone}) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		s, err := e.measure(ctx, v, set, n, dsts, files)
		if err != nil {
			return nil, fmt.Errorf("%s, %d rules, %d destinations: %w", v, n, dsts, err)
		}
		s.Round, s.Set = round, set
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

// slotOrder shuffles a slot's variants, then puts the empty programs right
// before or after cgwall, at random: issue #18's goal is the difference of
// those two in a slot, and this host's throughput drifts by more than the
// goal's 3 points from one measurement to one a few seconds later (the
// two no-filter runs of a slot differed by more than 3% in 99 of 140 slots
// of the full run at 4a738a8).
func slotOrder(variants []string, rng *rand.Rand) []string {
	out := slices.Clone(variants)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	if !slices.Contains(out, vCgwall) || !slices.Contains(out, vFloor) {
		return out
	}
	out = slices.DeleteFunc(out, func(v string) bool { return v == vFloor })
	at := slices.Index(out, vCgwall) + rng.IntN(2) // before or after
	return slices.Insert(out, at, vFloor)
}

// review summarises a slot, and notes the iptables variants that fell below
// 1% of no filter in it: they are not measured at larger sizes.
func (e *e2eEnv) review(slot []e2eSample, log io.Writer) string {
	base := slot[len(slot)-1].PPS
	var parts []string
	for _, s := range slot {
		p := fmt.Sprintf(" %s %.0fk", s.Variant, s.PPS/1000)
		if base > 0 && s.Variant != vNone {
			p += fmt.Sprintf(" (%.1f%%)", 100*s.PPS/base)
		}
		parts = append(parts, p)
		if k := (stop{s.Variant, s.Dsts}); (s.Variant == vIpt || s.Variant == vIptLegacy) && s.PPS < 0.01*base && e.stopped[k] == 0 {
			e.stopped[k] = s.Rules
			fmt.Fprintf(log, "  %s fell below 1%% of no filter at %d rules: no larger sizes\n", s.Variant, s.Rules)
		}
	}
	return strings.Join(parts, ";")
}

// measure loads a variant, times and sizes the load, sends the traffic of
// the set's family, and unloads.
func (e *e2eEnv) measure(ctx context.Context, variant, set string, n, dsts int, files ruleFiles) (e2eSample, error) {
	s := e2eSample{Variant: variant, Rules: n, Dsts: dsts}
	family := setFamily(set)
	// Let the frees of the previous variant (maps, sets, rule blobs, after
	// an RCU grace period) finish before anything is measured.
	s.Quiet = waitQuiet(ctx, e.cfg.SenderCPU)
	pair := e.pairs["a"]
	if variant == vIptLegacy {
		pair = e.pairs["b"]
	}
	before, start := kernelMemKiB(), time.Now()
	unload, err := e.load(ctx, variant, family, pair.src, files, &s)
	if err != nil {
		return s, err
	}
	if variant != vNone && variant != vFloor {
		s.LoadSec = time.Since(start).Seconds()
		s.KernelMiB = float64(settleKernelMem()-before) / 1024
	}
	if variant == vCgwall || variant == vCgwallLog {
		s.Hooks = attachedHooks(e.cg.Path, family)
		if p, err := attachedProgram(e.cg.Path, ebpf.AttachCGroupInetEgress); err == nil {
			s.Memlock, _ = memlockMiB(p) // a figure of its own: the run goes on without it
			p.Close()
		}
	}
	res, err := e.runSender(ctx, pair, family, dsts, e.cfg.Duration.Duration)
	if err == nil && variant == vCgwall {
		s.ProgNs, s.SendmsgNs, err = e.progCost(ctx, family, dsts)
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

// load puts a variant's rules in force and returns what takes them out; the
// empty programs go where cgwall's would be for traffic of the family.
func (e *e2eEnv) load(ctx context.Context, variant string, family int, ns string, files ruleFiles, s *e2eSample) (unload func() error, err error) {
	switch variant {
	case vNone:
		return func() error { return nil }, nil
	case vFloor:
		s.Hooks = floorHooks(family)
		return attachEmpty(e.cg.Path, s.Hooks)
	case vCgwall, vCgwallLog:
		return e.startCgwall(ctx, variant == vCgwallLog, files, s)
	}
	nf := netfilter[variant]
	if err := command(ctx, append(nsenter(ns, nf.load...), files[nf.format])...); err != nil {
		return nil, err
	}
	return func() error { return command(context.Background(), nsenter(ns, nf.unload...)...) }, nil
}

var lostRe = regexp.MustCompile(`^lost \d+ events.* \(ring buffer full; (\d+) in total\)`)

// startCgwall runs 'cgwall run' on the sender cgroup until its ready line;
// what it returns interrupts it and records the events it printed and the
// events it reported lost.
func (e *e2eEnv) startCgwall(ctx context.Context, logAll bool, files ruleFiles, s *e2eSample) (func() error, error) {
	rules, logMode := []string{"-f", files["yaml"]}, "none"
	if e.list {
		rules = []string{"--block-list", files["list"]}
		if files["allow-list"] != "" {
			rules = append(rules, "--allow-list", files["allow-list"])
		}
	}
	if logAll {
		logMode = "all"
	}
	events := &lineCount{}
	p, stop, err := startRun(ctx, e.cfg, events, slices.Concat([]string{"--cgroup", e.cg.Path}, rules, []string{"--log", logMode})...)
	if err != nil {
		return nil, err
	}
	return func() error {
		err := stop()
		s.Events = events.n
		for _, line := range p.Stderr.All() {
			if m := lostRe.FindStringSubmatch(line); m != nil {
				total, _ := strconv.ParseUint(m[1], 10, 64)
				s.Lost = max(s.Lost, total)
			}
		}
		return err
	}, nil
}

// startRun runs 'cgwall run ARGS' until its ready line, its events going to
// stdout; stop interrupts it as Ctrl-C would and waits for it to exit 0.
func startRun(ctx context.Context, cfg *config, stdout io.Writer, args ...string) (p *testutil.Proc, stop func() error, err error) {
	cmd := exec.Command(cfg.cgwall, append([]string{"run"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdout = stdout
	wait, cancel := context.WithTimeout(ctx, cfg.loadTimeout)
	defer cancel()
	if p, err = testutil.Start(wait, cmd, "attached "); err != nil {
		return nil, nil, fmt.Errorf("cgwall run: %w", err)
	}
	return p, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		code, err := p.Stop(ctx)
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
func (e *e2eEnv) runSender(ctx context.Context, pair netnsPair, family, dsts int, duration time.Duration) (senderResult, error) {
	var res senderResult
	job := senderJob{Netns: netnsPath(pair.src), Family: family, Dsts: dsts, Batch: e.cfg.Batch, CPU: e.cfg.SenderCPU, Warmup: e.cfg.Warmup.Duration, Duration: duration}
	err := runChild(ctx, e.self, e.cg.Path, senderEnv, job, duration+e.cfg.Warmup.Duration+20*time.Second, &res)
	return res, err
}

// runChild runs this program (self) as the child that env names, cloned
// straight into cgroup cg, with job, and reads its JSON result into out.
func runChild(ctx context.Context, self, cg, env string, job any, timeout time.Duration, out any) error {
	js, err := json.Marshal(job)
	if err != nil {
		return err
	}
	cgf, err := os.Open(cg)
	if err != nil {
		return err
	}
	defer cgf.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), env+"="+string(js))
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgf.Fd()), Pdeathsig: syscall.SIGKILL}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("%s child: %w: %s", env, err, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s child's output %.200q: %w", env, b, err)
	}
	return nil
}

// progCost sends once more with the kernel's BPF run-time statistics on and
// returns the mean run time of cgwall's egress and sendmsg programs,
// measured in the kernel on real traffic; a sendmsg4 program that cgwall did
// not attach (it attaches one only where the policy logs or has name rules)
// costs 0. Statistics cost two clock reads per run, so they are off while
// packets per second are measured.
func (e *e2eEnv) progCost(ctx context.Context, family, dsts int) (egress, sendmsg float64, err error) {
	st, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		return 0, 0, fmt.Errorf("enable BPF statistics: %w", err)
	}
	defer st.Close()
	eg, err := attachedProgram(e.cg.Path, ebpf.AttachCGroupInetEgress)
	if err != nil {
		return 0, 0, err
	}
	defer eg.Close()
	sendmsgAttach := ebpf.AttachCGroupUDP4Sendmsg
	if family == 6 {
		sendmsgAttach = ebpf.AttachCGroupUDP6Sendmsg
	}
	sm, err := attachedProgramIfAny(e.cg.Path, sendmsgAttach)
	if err != nil {
		return 0, 0, err
	}
	if sm != nil {
		defer sm.Close()
	}
	eg0, sm0 := runStats(eg), runStats(sm)
	if _, err := e.runSender(ctx, e.pairs["a"], family, dsts, e.cfg.StatsDuration.Duration); err != nil {
		return 0, 0, err
	}
	if egress = perRun(eg, eg0); egress == 0 {
		return 0, 0, errors.New("no runs of the egress program in its statistics")
	}
	return egress, perRun(sm, sm0), nil
}

// runStats is a program's run count and time; zero for no program, or if
// the kernel cannot tell.
func runStats(p *ebpf.Program) ebpf.ProgramStats {
	if p == nil {
		return ebpf.ProgramStats{}
	}
	if st, err := p.Stats(); err == nil {
		return *st
	}
	return ebpf.ProgramStats{}
}

// perRun is p's mean run time since before. The sender's warm-up is sent
// with statistics on too: this divides by the runs, not by the packets
// counted.
func perRun(p *ebpf.Program, before ebpf.ProgramStats) float64 {
	if p == nil {
		return 0
	}
	if after := runStats(p); after.RunCount > before.RunCount {
		return float64((after.Runtime - before.Runtime).Nanoseconds()) / float64(after.RunCount-before.RunCount)
	}
	return 0
}

// trafficHooks are the attach points of cgwall's hooks that the harness's
// traffic (UDP out of a socket, connected or not, of one family) runs
// through, and a program type for an empty program on each.
var trafficHooks = []struct {
	hook   datapath.Hook
	family int // 0: both
	name   string
	typ    ebpf.ProgramType
	attach ebpf.AttachType
}{
	{datapath.HookEgress, 0, "egress", ebpf.CGroupSKB, ebpf.AttachCGroupInetEgress},
	{datapath.HookIngress, 0, "ingress", ebpf.CGroupSKB, ebpf.AttachCGroupInetIngress},
	{datapath.HookConnect, 4, "connect4", ebpf.CGroupSockAddr, ebpf.AttachCGroupInet4Connect},
	{datapath.HookSendmsg, 4, "sendmsg4", ebpf.CGroupSockAddr, ebpf.AttachCGroupUDP4Sendmsg},
	{datapath.HookConnect, 6, "connect6", ebpf.CGroupSockAddr, ebpf.AttachCGroupInet6Connect},
	{datapath.HookSendmsg, 6, "sendmsg6", ebpf.CGroupSockAddr, ebpf.AttachCGroupUDP6Sendmsg},
}

// floorHooks are the hooks on which cgwall attaches programs for the
// end-to-end runs' policies (address rules, --log none), as the datapath
// decides, among the trafficHooks of a family's traffic.
func floorHooks(family int) []string {
	p := policy.New()
	p.Log = policy.LogNone
	addRule(p, ruleset.Rule{Prefix: netip.MustParsePrefix("192.0.2.1/32")})
	hooks := datapath.HooksFor(p)
	var out []string
	for _, h := range trafficHooks {
		if (h.family == 0 || h.family == family) && slices.Contains(hooks, h.hook) {
			out = append(out, h.name)
		}
	}
	return out
}

// attachedHooks names the trafficHooks of a family's traffic on which cg
// has a program.
func attachedHooks(cg string, family int) []string {
	var out []string
	for _, h := range trafficHooks {
		if h.family != 0 && h.family != family {
			continue
		}
		if p, err := attachedProgramIfAny(cg, h.attach); err == nil && p != nil {
			p.Close()
			out = append(out, h.name)
		}
	}
	return out
}

// attachEmpty attaches programs that only return 1 to the sender cgroup's
// hooks of trafficHooks that are named, where cgwall attaches its own: what
// these cost is the floor that no program on these hooks can go below.
func attachEmpty(cg string, hooks []string) (detach func() error, err error) {
	var links []link.Link
	detach = func() error {
		for _, l := range links {
			l.Close()
		}
		return nil
	}
	for _, h := range trafficHooks {
		if !slices.Contains(hooks, h.name) {
			continue
		}
		prog, err := returnOne(h.typ, h.attach)
		if err != nil {
			detach()
			return nil, err
		}
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cg, Attach: h.attach, Program: prog})
		prog.Close() // an attached program stays loaded as long as its link
		if err != nil {
			detach()
			return nil, fmt.Errorf("attach an empty %s program: %w", h.name, err)
		}
		links = append(links, l)
	}
	return detach, nil
}

// returnOne is a program that only returns 1: pass.
func returnOne(typ ebpf.ProgramType, attach ebpf.AttachType) (*ebpf.Program, error) {
	return ebpf.NewProgram(&ebpf.ProgramSpec{Type: typ, AttachType: attach, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}})
}
