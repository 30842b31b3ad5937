package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/ruleset"
)

// Decision cost, cold cache. Repeating one packet (BPF_PROG_TEST_RUN's
// Repeat, BenchmarkEgress's method) keeps all it touches in L1, so here every
// run is its own BPF_PROG_TEST_RUN with Repeat=1, on the next of a pool of
// distinct destinations in random order. Such a run's duration also holds
// the timer's own cost (two clock reads and the indirect call): that is
// measured with a program that only returns 1 and subtracted, so that what
// is left compares with BenchmarkEgress's figures, on the same rule sets
// (internal/ruleset).

// decisionSample is one cell of one round.
type decisionSample struct {
	Set    string  `json:"set"`
	Rules  int     `json:"rules"`
	Kind   string  `json:"kind"`
	Dsts   int     `json:"distinct_dsts"` // the pool size
	Runs   int     `json:"runs"`
	MeanNs float64 `json:"mean_ns"` // net of the timer cost
	P50Ns  float64 `json:"p50_ns"`  // net
	P99Ns  float64 `json:"p99_ns"`  // net
	WarmNs float64 `json:"warm_ns"` // one packet repeated (BenchmarkEgress's method)
	Outlie int     `json:"outliers"`
}

type decisionRound struct {
	OverheadNs float64            `json:"timer_overhead_ns"`
	Samples    []decisionSample   `json:"samples"`
	LoadSec    map[string]float64 `json:"load_seconds"` // datapath.Load, in process
	MemlockMiB map[string]float64 `json:"memlock_mib"`
	Lines      []lineSample       `json:"one_line,omitempty"` // what one cold line costs, by size
}

// outlierNs: a Repeat=1 run longer than this was interrupted (timer tick,
// IRQ, host preemption) and is left out; a cold lookup takes far less.
const outlierNs = 20_000

// ruleSet is a generated rule set and its pools of destinations, kept from
// round to round.
type ruleSet struct {
	*ruleset.Set
	pools map[string]packetPool // by kind of destination
}

// packetPool is distinct destinations of one kind, their packets and the
// verdict the reference gives each.
type packetPool struct {
	dsts  []ruleset.Packet
	pkts  [][]byte
	wants []uint32
}

// decisionKinds are the sets whose decision cost is measured.
var decisionKinds = append(slices.Clone(ruleset.Kinds), ruleset.PortsKind)

// portsLike is the address-only set that the ports set is made from, and
// compared with.
const portsLike = "ipv4-mixed"

// newRuleSet draws the set's pools of destinations. For ipv4-mixed, ports
// (else nil) gives the pools of the port kinds too, as UDP to port 53: the
// ports set's addresses judged by address-only rules, to set its port kinds
// against.
func newRuleSet(s *ruleset.Set, n int, ports *ruleset.Set) *ruleSet {
	src := netip.MustParseAddr("192.0.2.1")
	if s.Family == 6 {
		src = netip.MustParseAddr("2001:db8::1")
	}
	rs := &ruleSet{s, map[string]packetPool{}}
	kinds := s.Kinds()
	if ports != nil {
		kinds = slices.Concat(kinds, ruleset.PortKinds)
	}
	for _, kind := range kinds {
		var p packetPool
		dsts := s.Packets(kind, n)
		if ports != nil && slices.Contains(ruleset.PortKinds, kind) {
			dsts = ports.Packets(kind, n)
			for i := range dsts {
				dsts[i].Proto, dsts[i].Port = unix.IPPROTO_UDP, 53
			}
		}
		for _, d := range dsts {
			p.dsts = append(p.dsts, d)
			p.pkts = append(p.pkts, packet(src, d))
			p.wants = append(p.wants, uint32(reference(s, d)))
		}
		rs.pools[kind] = p
	}
	return rs
}

// reference is the verdict of the policy reference on a packet, from the
// rules of the set that can match it.
func reference(s *ruleset.Set, d ruleset.Packet) policy.Action {
	p := policy.New()
	for _, r := range s.RulesFor(d.Addr) {
		addRule(p, r)
	}
	a, _ := p.Decide(policy.Egress, policy.Packet{Addr: d.Addr, Proto: d.Proto, Port: d.Port})
	return a
}

// addRule adds a rule of a set to an egress policy. The sets have no
// conflicts (their tests load them with AddMatch), so it skips the checks,
// which at a million rules take seconds for the ranges of the ports set.
func addRule(p *policy.Policy, r ruleset.Rule) {
	action := policy.Block
	if r.Allow {
		action = policy.Allow
	}
	p.AddRule(policy.Rule{ID: p.NextID(), Dir: policy.Egress, Prefix: r.Prefix, Ports: policy.Ports{Proto: r.Proto, Lo: r.Lo, Hi: r.Hi}, Action: action})
}

func runDecision(ctx context.Context, cfg *config, root string, res *results, log io.Writer) error {
	cg := filepath.Join(root, "decide") // the egress programs are attached here, and no process joins it
	if err := os.Mkdir(cg, 0o755); err != nil {
		return err
	}
	fmt.Fprintf(log, "decision cost: generating rule sets\n")
	sets := map[string]*ruleSet{} // by name/size
	for _, n := range cfg.DecisionSizes {
		ports := ruleset.Ports(n)
		for _, k := range decisionKinds {
			s, like := ports, (*ruleset.Set)(nil)
			if k.Name != ports.Name {
				s = k.Build(n)
			}
			if k.Name == portsLike {
				like = ports
			}
			sets[k.Name+"/"+human(n)] = newRuleSet(s, cfg.DecisionDsts, like)
		}
	}
	for r := range cfg.rounds {
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

// measureDecision measures every set once, in a random order, on one pinned
// thread; the ports set of each size with ipv4-mixed of its size, in turns
// (measureArms).
func measureDecision(ctx context.Context, cfg *config, cg string, sets map[string]*ruleSet, round int) (*decisionRound, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := pinThread(cfg.benchCPU); err != nil {
		return nil, fmt.Errorf("pin to CPU %d: %w", cfg.benchCPU, err)
	}
	rng := rand.New(rand.NewPCG(uint64(round), 77))
	dr := &decisionRound{LoadSec: map[string]float64{}, MemlockMiB: map[string]float64{}}
	trivial, err := returnOne(ebpf.CGroupSKB, ebpf.AttachNone)
	if err != nil {
		return nil, err
	}
	defer trivial.Close()
	groups := setGroups(sets)
	rng.Shuffle(len(groups), func(i, j int) { groups[i], groups[j] = groups[j], groups[i] })
	var ovs []float64
	for _, keys := range groups {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ovs = append(ovs, timerOverhead(trivial))
		if err := measureSets(cfg, cg, keys, sets, ovs[len(ovs)-1], rng, dr); err != nil {
			return nil, fmt.Errorf("%s: %w", strings.Join(keys, ", "), err)
		}
	}
	ov := timerOverhead(trivial)
	ovs = append(ovs, ov)
	if dr.Lines, err = measureLines(cfg, ov, rng); err != nil {
		return nil, err
	}
	dr.OverheadNs = median(ovs)
	return dr, nil
}

// setGroups lists the sets' keys (name/size) in the groups that are measured
// together: the ports set of a size with portsLike of that size, every other
// set alone.
func setGroups(sets map[string]*ruleSet) [][]string {
	var groups [][]string
	for _, key := range slices.Sorted(maps.Keys(sets)) {
		name, size, _ := strings.Cut(key, "/")
		like := portsLike + "/" + size
		switch {
		case name == portsLike && sets[ruleset.PortsKind.Name+"/"+size] != nil:
			// With its ports set.
		case name == ruleset.PortsKind.Name && sets[like] != nil:
			groups = append(groups, []string{key, like})
		default:
			groups = append(groups, []string{key})
		}
	}
	return groups
}

// measureSets loads the sets of keys as cgwall would and times them together
// (measureArms) into dr.
func measureSets(cfg *config, cg string, keys []string, sets map[string]*ruleSet, overhead float64, rng *rand.Rand, dr *decisionRound) error {
	var arms arms
	defer func() { arms.close() }() // the arms loaded by then
	for _, key := range keys {
		rs := sets[key]
		p := policy.New()
		p.Log = policy.LogNone
		p.Grow(len(rs.Rules))
		for _, r := range rs.Rules {
			addRule(p, r)
		}
		start := time.Now()
		d, err := loadDatapath(p)
		if err != nil {
			return err
		}
		dr.LoadSec[key] = time.Since(start).Seconds()
		arms = append(arms, arm{key: key, set: rs.Name, rules: len(rs.Rules), d: d, pools: rs.pools})
	}
	return measureArms(cfg, cg, arms, overhead, rng, dr)
}

// arm is a loaded rule set whose decisions a round times, with its pools of
// destinations by kind.
type arm struct {
	key   string // name/size
	set   string
	rules int
	d     *datapath.Datapath
	pools map[string]packetPool
}

// arms are the sets that a round times together.
type arms []arm

func (as arms) close() {
	for _, a := range as {
		a.d.Close()
	}
}

// armTurns is how many turns the arms of measureArms take at each kind.
const armTurns = 10

// measureArms times each kind of destination, cold and warm, with every
// arm's egress program, into dr. The arms take turns, a tenth of a kind's
// runs each, so that the ratio of two arms (the ports set to ipv4-mixed of
// its size) is of runs moments apart. Measured one after the other, seconds
// apart, that ratio at 100k swung by ±0.15× between runs of the same tree
// (docs/performance.md, "Direct ranges").
func measureArms(cfg *config, cg string, arms arms, overhead float64, rng *rand.Rand, dr *decisionRound) error {
	progs := make([]*ebpf.Program, len(arms))
	defer func() {
		for _, p := range progs {
			if p != nil {
				p.Close()
			}
		}
	}()
	kinds := map[string]bool{}
	for i, a := range arms {
		prog, err := egressProgram(a.d, cg)
		if err != nil {
			return err
		}
		progs[i] = prog
		if dr.MemlockMiB[a.key], err = memlockMiB(prog); err != nil {
			return err
		}
		for kind, pool := range a.pools {
			kinds[kind] = kinds[kind] || len(pool.pkts) > 0
		}
	}
	order := slices.Sorted(maps.Keys(kinds))
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for _, kind := range order {
		ds, outliers := make([][]float64, len(arms)), make([]int, len(arms))
		for turn := range armTurns {
			n := cfg.DecisionRuns*(turn+1)/armTurns - cfg.DecisionRuns*turn/armTurns
			for _, i := range rng.Perm(len(arms)) {
				pool := arms[i].pools[kind]
				if len(pool.pkts) == 0 {
					continue
				}
				d, o, err := coldRuns(progs[i], pool, n, overhead, rng)
				if err != nil {
					return fmt.Errorf("%s %s: %w", arms[i].key, kind, err)
				}
				ds[i], outliers[i] = append(ds[i], d...), outliers[i]+o
			}
		}
		for i, a := range arms {
			pool := a.pools[kind]
			if len(pool.pkts) == 0 {
				continue
			}
			_, warm, err := progs[i].Benchmark(pool.pkts[0], cfg.warmRepeat, nil) // as BenchmarkEgress times it
			if err != nil {
				return err
			}
			dr.Samples = append(dr.Samples, decisionSample{
				Set: a.set, Rules: a.rules, Kind: kind, Dsts: len(pool.pkts), Runs: len(ds[i]),
				MeanNs: mean(ds[i]), P50Ns: median(ds[i]), P99Ns: quantile(ds[i], 0.99),
				WarmNs: float64(warm.Nanoseconds()), Outlie: outliers[i],
			})
		}
	}
	return nil
}

// loadDatapath loads p and puts it in force, as cgwall run does.
func loadDatapath(p *policy.Policy) (*datapath.Datapath, error) {
	d, err := datapath.Load(p)
	if err != nil {
		return nil, err
	}
	if err := d.Commit(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// egressProgram attaches d's egress program to an empty cgroup and finds it
// there again: it is exactly the program cgwall runs, with the maps cgwall
// filled.
func egressProgram(d *datapath.Datapath, cg string) (*ebpf.Program, error) {
	dir, err := cgroup.Resolve(cg)
	if err != nil {
		return nil, err
	}
	att, err := d.Attach(dir, datapath.HookEgress)
	if err != nil {
		return nil, err
	}
	defer att.Close()
	return attachedProgram(cg, ebpf.AttachCGroupInetEgress)
}

// coldRuns runs prog once per packet, going over the pool in a new random
// order each pass, until it has n runs; it checks every verdict against the
// reference and returns the kernel-measured durations less the timer
// overhead, leaving out interrupted runs (and counting them).
func coldRuns(prog *ebpf.Program, pool packetPool, n int, overhead float64, rng *rand.Rand) ([]float64, int, error) {
	ds := make([]float64, 0, n)
	outliers := 0
	for len(ds)+outliers < n {
		for _, i := range rng.Perm(len(pool.pkts)) {
			if len(ds)+outliers >= n {
				break
			}
			ret, dur, err := prog.Benchmark(pool.pkts[i], 1, nil)
			if err != nil {
				return nil, 0, err
			}
			if ret != pool.wants[i] {
				return nil, 0, fmt.Errorf("%+v: verdict %d, want %d", pool.dsts[i], ret, pool.wants[i])
			}
			if dur >= outlierNs {
				outliers++
				continue
			}
			ds = append(ds, float64(dur)-overhead)
		}
	}
	return ds, outliers, nil
}

// timerOverhead is the mean duration of a Repeat=1 run of the trivial
// program: the timer's and the call's own cost.
func timerOverhead(trivial *ebpf.Program) float64 {
	pkt := packet(netip.MustParseAddr("192.0.2.1"), ruleset.Packet{Addr: netip.MustParseAddr("198.51.100.1"), Proto: unix.IPPROTO_UDP, Port: 53})
	var ds []float64
	for range 20000 {
		if _, d, err := trivial.Benchmark(pkt, 1, nil); err == nil && d < outlierNs {
			ds = append(ds, float64(d))
		}
	}
	return mean(ds)
}

// packet is an Ethernet + IP + TCP, UDP or ICMP packet from src to d: for
// cgroup_skb programs the kernel takes the EtherType for skb->protocol and
// hands the program the bytes after the Ethernet header, as on a real
// egress path. TCP is a SYN and ICMP an echo request, from port 40000; no
// checksums.
func packet(src netip.Addr, d ruleset.Packet) []byte {
	var l4 []byte
	switch d.Proto {
	case unix.IPPROTO_TCP:
		l4 = binary.BigEndian.AppendUint16([]byte{0x9c, 0x40}, d.Port)
		l4 = append(l4, 0, 0, 0, 0, 0, 0, 0, 0, 5<<4, 0x02, 0xff, 0xff, 0, 0, 0, 0)
	case unix.IPPROTO_UDP:
		l4 = binary.BigEndian.AppendUint16([]byte{0x9c, 0x40}, d.Port)
		l4 = append(l4, 0, 8, 0, 0)
	default:
		l4 = []byte{8, 0, 0, 0, 0, 0, 0, 0} // ICMP echo request
	}
	etherType := uint16(unix.ETH_P_IP)
	ip := binary.BigEndian.AppendUint16([]byte{0x45, 0}, uint16(20+len(l4)))
	ip = append(ip, 0, 0, 0, 0, 64, d.Proto, 0, 0)
	if d.Addr.Is6() {
		etherType = unix.ETH_P_IPV6
		ip = binary.BigEndian.AppendUint16([]byte{0x60, 0, 0, 0}, uint16(len(l4)))
		ip = append(ip, d.Proto, 64)
	}
	pkt := binary.BigEndian.AppendUint16(make([]byte, 12), etherType)
	pkt = append(append(append(pkt, ip...), src.AsSlice()...), d.Addr.AsSlice()...)
	return append(pkt, l4...)
}
