package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// End-to-end: UDP from a process in a cgroup, out of a veth into a namespace
// that drops it.
//
// Two namespace pairs are made, each a veth from a sending namespace
// (198.18.0.1/30) to a sink namespace (198.18.0.2/30). The sending namespace
// routes 198.19.0.0/16 to 198.18.0.2, whose MAC is a static (permanent)
// neighbour entry, so nothing ever has to answer ARP. The sink namespace does
// not forward, so it drops every packet silently after routing it, and no
// ICMP comes back. The sender runs in its own cgroup; only that cgroup is
// filtered, and only the sending namespace holds nftables or iptables rules.
// Pair "a" serves every variant but iptables-legacy, whose table stays
// registered in a namespace once used; it gets pair "b".

const (
	payloadBytes = 18 // UDP payload: 64-byte frames on the wire with Ethernet's FCS
	srcDev       = "cgwb0"
	sinkDev      = "cgwb1"
	srcMAC       = "02:00:00:c9:00:01"
	sinkMAC      = "02:00:00:c9:00:02"
)

var (
	trafficNet = netip.MustParsePrefix("198.18.0.0/15")
	firstDst   = netip.MustParseAddr("198.19.0.1")
)

type netnsPair struct{ src, sink string }

type e2eEnv struct {
	cfg     *config
	pairs   map[string]netnsPair // "a", "b"
	root    string               // the harness's cgroup, absolute
	sendCg  string               // the sender's cgroup, absolute
	sendRel string               // the same, relative to the cgroup2 mount, with a leading /
	nftPath string               // the same as nft's socket cgroupv2 takes it
	level   int                  // its depth below the cgroup2 root
	dir     string               // rule files
	self    string               // this executable, for the sender
	list    bool                 // cgwall takes --block-list FILE (one prefix a line)
}

func newE2E(ctx context.Context, cfg *config, c *cleanups, mnt, root, dir string) (*e2eEnv, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	e := &e2eEnv{cfg: cfg, pairs: map[string]netnsPair{}, root: root, dir: dir, self: self}
	// cgwall loads large rule sets fastest from a list file, where it has
	// them; otherwise from its YAML policy file.
	if help, err := exec.CommandContext(ctx, cfg.cgwall, "run", "--help").CombinedOutput(); err == nil {
		e.list = strings.Contains(string(help), "--block-list")
	}
	e.sendCg = filepath.Join(root, "send")
	if err := os.Mkdir(e.sendCg, 0o755); err != nil {
		return nil, err
	}
	rel, err := filepath.Rel(mnt, e.sendCg)
	if err != nil {
		return nil, err
	}
	e.sendRel = "/" + rel
	e.level = len(strings.Split(rel, "/"))
	// nft resolves a cgroupv2 path under /sys/fs/cgroup; elsewhere it takes
	// the cgroup ID.
	if r, err := filepath.Rel("/sys/fs/cgroup", e.sendCg); err == nil && !strings.HasPrefix(r, "..") {
		e.nftPath = strconv.Quote(r)
	} else {
		var st syscall.Stat_t
		if err := syscall.Stat(e.sendCg, &st); err != nil {
			return nil, err
		}
		e.nftPath = strconv.FormatUint(st.Ino, 10)
	}
	for _, name := range []string{"a", "b"} {
		p := netnsPair{
			src:  fmt.Sprintf("cgwb-%d-%s-src", os.Getpid(), name),
			sink: fmt.Sprintf("cgwb-%d-%s-sink", os.Getpid(), name),
		}
		if err := makePair(ctx, c, p); err != nil {
			return nil, err
		}
		e.pairs[name] = p
	}
	return e, nil
}

func makePair(ctx context.Context, c *cleanups, p netnsPair) error {
	for _, ns := range []string{p.src, p.sink} {
		if _, err := command(ctx, "ip", "netns", "add", ns); err != nil {
			return err
		}
		c.add("delete netns "+ns, func() error {
			_, err := command(context.Background(), "ip", "netns", "del", ns)
			return err
		})
	}
	steps := []struct {
		ns   string
		args []string
	}{
		{"", []string{"ip", "link", "add", srcDev, "address", srcMAC, "netns", p.src, "type", "veth",
			"peer", "name", sinkDev, "address", sinkMAC, "netns", p.sink}},
		{p.src, []string{"sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"}},
		{p.sink, []string{"sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"}},
		{p.src, []string{"ip", "addr", "add", "198.18.0.1/30", "dev", srcDev}},
		{p.sink, []string{"ip", "addr", "add", "198.18.0.2/30", "dev", sinkDev}},
		{p.src, []string{"ip", "link", "set", srcDev, "up"}},
		{p.sink, []string{"ip", "link", "set", sinkDev, "up"}},
		{p.src, []string{"ip", "neigh", "replace", "198.18.0.2", "lladdr", sinkMAC, "dev", srcDev, "nud", "permanent"}},
		{p.src, []string{"ip", "route", "add", "198.19.0.0/16", "via", "198.18.0.2", "dev", srcDev}},
	}
	for _, s := range steps {
		var err error
		if s.ns == "" {
			_, err = command(ctx, s.args[0], s.args[1:]...)
		} else {
			_, err = inNetns(ctx, s.ns, nil, s.args[0], s.args[1:]...)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// e2ePrefixes is the ipv4-mixed set of n rules, less any prefix that overlaps
// the benchmark range the traffic goes to, topped up with /32s outside it:
// every packet sent misses every rule and is let through, so each filter
// walks its whole structure (or list) for every packet.
func e2ePrefixes(n int) []netip.Prefix {
	rs := buildMixed4(n)
	out := make([]netip.Prefix, 0, n)
	for _, p := range rs.Prefixes {
		if !p.Overlaps(trafficNet) {
			out = append(out, p)
		}
	}
	rng := rand.New(rand.NewPCG(uint64(n), 99))
	for len(out) < n {
		v := rng.Uint32()
		a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		p := netip.PrefixFrom(a, 32)
		if trafficNet.Contains(a) || !rs.Add(p) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// ruleFiles writes the same prefixes as a cgwall policy, an nftables ruleset
// and an iptables-restore file, and returns their paths.
func (e *e2eEnv) ruleFiles(n int) (cg, list, nft, ipt string, err error) {
	prefixes := e2ePrefixes(n)
	base := filepath.Join(e.dir, "rules-"+human(n))
	cg, list, nft, ipt = base+".yaml", base+".list", base+".nft", base+".iptables"

	var b strings.Builder
	for _, p := range prefixes {
		b.WriteString(p.String() + "\n")
	}
	if err = os.WriteFile(list, []byte(b.String()), 0o644); err != nil {
		return
	}
	b.Reset()
	b.WriteString("egress:\n  block:\n")
	for _, p := range prefixes {
		fmt.Fprintf(&b, "    - %s\n", p)
	}
	b.WriteString("log: none\n")
	if err = os.WriteFile(cg, []byte(b.String()), 0o644); err != nil {
		return
	}

	b.Reset()
	b.WriteString("table inet cgwall_bench {\n\tset blk {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tauto-merge\n\t\telements = {\n")
	for i, p := range prefixes {
		sep := ",\n"
		if i == len(prefixes)-1 {
			sep = "\n"
		}
		if p.IsSingleIP() {
			b.WriteString("\t\t\t" + p.Addr().String() + sep)
		} else {
			b.WriteString("\t\t\t" + p.String() + sep)
		}
	}
	fmt.Fprintf(&b, "\t\t}\n\t}\n\tchain out {\n\t\ttype filter hook output priority filter; policy accept;\n"+
		"\t\tsocket cgroupv2 level %d %s ip daddr @blk drop\n\t}\n}\n", e.level, e.nftPath)
	if err = os.WriteFile(nft, []byte(b.String()), 0o644); err != nil {
		return
	}

	if n <= e.cfg.iptablesMax {
		b.Reset()
		b.WriteString("*filter\n")
		for _, p := range prefixes {
			fmt.Fprintf(&b, "-A OUTPUT -d %s -m cgroup --path %s -j DROP\n", p, e.sendRel)
		}
		b.WriteString("COMMIT\n")
		err = os.WriteFile(ipt, []byte(b.String()), 0o644)
	}
	return
}

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

type ruleSetFiles struct{ cg, list, nft, ipt string }

// runSender runs one sender in the sender cgroup and returns its result.
func (e *e2eEnv) runSender(ctx context.Context, pair netnsPair, dsts int, duration time.Duration) (senderResult, error) {
	var res senderResult
	cgf, err := os.Open(e.sendCg)
	if err != nil {
		return res, err
	}
	defer cgf.Close()
	ctx, cancel := context.WithTimeout(ctx, duration+e.cfg.warmup+20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.self,
		"-netns", netnsPath(pair.src), "-dev", srcDev,
		"-dst", firstDst.String(), "-dsts", strconv.Itoa(dsts),
		"-batch", strconv.Itoa(e.cfg.batch), "-size", strconv.Itoa(payloadBytes),
		"-cpu", strconv.Itoa(e.cfg.senderCPU),
		"-warmup", e.cfg.warmup.String(), "-duration", duration.String())
	cmd.Env = append(os.Environ(), senderEnv+"=1")
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
	before := kernelMemKiB()
	loaded := func() { s.KernelMiB = float64(settleKernelMem()-before) / 1024 }

	var res senderResult
	var err error
	switch variant {
	case vNone:
		res, err = e.runSender(ctx, pair, s.Dsts, e.cfg.duration)
	case vFloor:
		var detach func()
		if detach, err = attachEmpty(e.sendCg); err != nil {
			return s, err
		}
		res, err = e.runSender(ctx, pair, s.Dsts, e.cfg.duration)
		detach()
	case vCgwall, vCgwallLog:
		res, err = e.withCgwall(ctx, variant, files, &s, loaded, func() (senderResult, error) {
			return e.runSender(ctx, pair, s.Dsts, e.cfg.duration)
		})
	case vNft:
		start := time.Now()
		if _, err = inNetns(ctx, pair.src, nil, "nft", "-f", files.nft); err != nil {
			return s, err
		}
		s.LoadSec = time.Since(start).Seconds()
		unload := func() error {
			_, err := inNetns(context.Background(), pair.src, nil, "nft", "delete", "table", "inet", "cgwall_bench")
			return err
		}
		loaded()
		res, err = e.runSender(ctx, pair, s.Dsts, e.cfg.duration)
		if uerr := unload(); uerr != nil && err == nil {
			err = uerr
		}
	case vIpt, vIptLegacy:
		restore, flush := "iptables-nft-restore", []string{"nft", "delete", "table", "ip", "filter"}
		if variant == vIptLegacy {
			restore, flush = "iptables-legacy-restore", []string{"iptables-legacy", "-F", "OUTPUT"}
		}
		start := time.Now()
		if _, err = inNetns(ctx, pair.src, nil, restore, "--noflush", files.ipt); err != nil {
			return s, err
		}
		s.LoadSec = time.Since(start).Seconds()
		loaded()
		res, err = e.runSender(ctx, pair, s.Dsts, e.cfg.duration)
		if _, uerr := inNetns(context.Background(), pair.src, nil, flush[0], flush[1:]...); uerr != nil && err == nil {
			err = uerr
		}
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

var lostRe = regexp.MustCompile(`^lost (\d+) events.* \(ring buffer full; (\d+) in total\)`)

// withCgwall runs 'cgwall run' on the sender cgroup, waits for its ready
// line, runs fn, then interrupts it and collects what it reported.
func (e *e2eEnv) withCgwall(ctx context.Context, variant string, files ruleSetFiles, s *e2eSample, loaded func(), fn func() (senderResult, error)) (senderResult, error) {
	log := "none"
	if variant == vCgwallLog {
		log = "all"
	}
	rules := []string{"-f", files.cg}
	if e.list {
		rules = []string{"--block-list", files.list}
	}
	args := append([]string{"run", "--cgroup", e.sendCg}, rules...)
	cmd := exec.Command(e.cfg.cgwall, append(args, "--log", log)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return senderResult{}, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return senderResult{}, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return senderResult{}, err
	}
	exited := make(chan error, 1)
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	defer stop()

	lines := make(chan uint64, 1)
	go func() {
		var n uint64
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			n++
		}
		io.Copy(io.Discard, stdout)
		lines <- n
	}()
	ready := make(chan error, 1)
	var errLines []string
	errDone := make(chan struct{})
	go func() {
		defer close(errDone)
		sc := bufio.NewScanner(stderr)
		sawReady := false
		for sc.Scan() {
			line := sc.Text()
			if !sawReady && strings.HasPrefix(line, "attached ") {
				sawReady = true
				ready <- nil
				continue
			}
			if m := lostRe.FindStringSubmatch(line); m != nil {
				total, _ := strconv.ParseUint(m[2], 10, 64)
				s.Lost = max(s.Lost, total)
				continue
			}
			errLines = append(errLines, line)
		}
		if !sawReady {
			ready <- errors.New("cgwall exited before its ready line")
		}
	}()
	go func() {
		<-errDone
		exited <- cmd.Wait()
	}()

	select {
	case err = <-ready:
	case <-time.After(e.cfg.loadTimeout):
		err = fmt.Errorf("no ready line after %s", e.cfg.loadTimeout)
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		stop()
		return senderResult{}, fmt.Errorf("cgwall run: %w: %s", err, strings.Join(errLines, "; "))
	}
	s.LoadSec = time.Since(start).Seconds()
	loaded()
	if m, err := e.cgwallMemlock(); err == nil {
		s.Memlock = m
	}

	res, err := fn()
	if err == nil && e.cfg.progStats && variant == vCgwall {
		s.ProgNs, s.SendmsgNs, err = e.progCost(ctx, s.Dsts)
	}
	stop()
	s.Events = <-lines
	return res, err
}

// attached returns the program of one attach type on the sender cgroup.
func (e *e2eEnv) attached(typ ebpf.AttachType) (*ebpf.Program, error) {
	f, err := os.Open(e.sendCg)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	q, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: typ})
	if err != nil {
		return nil, err
	}
	if len(q.Programs) != 1 {
		return nil, fmt.Errorf("%d %s programs on %s, want 1", len(q.Programs), typ, e.sendCg)
	}
	return ebpf.NewProgramFromID(q.Programs[0].ID)
}

func (e *e2eEnv) cgwallMemlock() (float64, error) {
	p, err := e.attached(ebpf.AttachCGroupInetEgress)
	if err != nil {
		return 0, err
	}
	defer p.Close()
	m, err := progMemlock(p)
	return float64(m) / (1 << 20), err
}

// progCost sends once more with the kernel's BPF run-time statistics on and
// returns the mean run time, per packet on the wire, of cgwall's egress and
// sendmsg4 programs, measured in the kernel on real traffic. Statistics cost
// two clock reads per run, so they are off while packets per second are
// measured.
func (e *e2eEnv) progCost(ctx context.Context, dsts int) (egress, sendmsg float64, err error) {
	eg, err := e.attached(ebpf.AttachCGroupInetEgress)
	if err != nil {
		return 0, 0, err
	}
	defer eg.Close()
	sm, err := e.attached(ebpf.AttachCGroupUDP4Sendmsg)
	if err != nil {
		return 0, 0, err
	}
	defer sm.Close()
	st, err := ebpf.EnableStats(0) // BPF_STATS_RUN_TIME
	if err != nil {
		return 0, 0, fmt.Errorf("enable BPF statistics: %w", err)
	}
	defer st.Close()
	e0, err := eg.Stats()
	if err != nil {
		return 0, 0, err
	}
	s0, err := sm.Stats()
	if err != nil {
		return 0, 0, err
	}
	res, err := e.runSender(ctx, e.pairs["a"], dsts, e.cfg.statsDuration)
	if err != nil {
		return 0, 0, err
	}
	e1, err := eg.Stats()
	if err != nil {
		return 0, 0, err
	}
	s1, err := sm.Stats()
	if err != nil {
		return 0, 0, err
	}
	runs := e1.RunCount - e0.RunCount
	if runs == 0 {
		return 0, 0, errors.New("the egress program did not run")
	}
	egress = float64((e1.Runtime - e0.Runtime).Nanoseconds()) / float64(runs)
	// The sender's warm-up is sent with statistics on too: divide by the
	// runs, not by the counted packets.
	if sruns := s1.RunCount - s0.RunCount; sruns > 0 {
		sendmsg = float64((s1.Runtime - s0.Runtime).Nanoseconds()) / float64(sruns)
	}
	_ = res
	return egress, sendmsg, nil
}

// waitQuiet waits, up to 10 s, until kernel memory has stopped moving and
// the sender's CPU has been idle for 300 ms, and returns how long it waited:
// the frees of the previous variant (maps, sets, rule blobs, namespaces'
// work) run after an RCU grace period, in the background.
func waitQuiet(ctx context.Context, cpu int) float64 {
	start := time.Now()
	prev := kernelMemKiB()
	busy0, total0 := cpuTimes(cpu)
	still := 0
	for still < 3 && time.Since(start) < 10*time.Second && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
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
func attachEmpty(cg string) (func(), error) {
	ret1 := asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}
	var closers []io.Closer
	detach := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i].Close()
		}
	}
	for _, p := range []struct {
		typ    ebpf.ProgramType
		attach ebpf.AttachType
	}{
		{ebpf.CGroupSKB, ebpf.AttachCGroupInetEgress},
		{ebpf.CGroupSockAddr, ebpf.AttachCGroupUDP4Sendmsg},
	} {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: p.typ, AttachType: p.attach, Instructions: ret1, License: "MIT"})
		if err != nil {
			detach()
			return nil, err
		}
		closers = append(closers, prog)
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cg, Attach: p.attach, Program: prog})
		if err != nil {
			detach()
			return nil, err
		}
		closers = append(closers, l)
	}
	return detach, nil
}
