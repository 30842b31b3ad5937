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
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/ruleset"
)

// Decision cost, cold cache.
//
// BPF_PROG_TEST_RUN runs a program on one packet, Repeat times, and returns
// the mean time per run measured in the kernel around the program alone
// (ktime before and after the run loop). Repeating one packet keeps
// everything it touches in L1, so here every run is a separate
// BPF_PROG_TEST_RUN with Repeat=1 on the next of a large pool of distinct
// destinations, in random order: the kernel-measured duration of each run is
// one lookup path, walked once per pass over the pool. Between two runs the
// syscall itself (skb allocation, copies) runs too, as real traffic's stack
// would.
//
// A Repeat=1 duration includes the timer's own cost (two ktime reads and the
// indirect call). That is measured in the same way with a program that only
// returns 1, and subtracted: what is left is the cost of cgwall's program
// itself, comparable with BenchmarkEgress's warm figures, which amortise the
// timer over millions of runs.
//
// The rule sets are internal/ruleset's, which BenchmarkEgress uses too, so
// that the cold figures here and its warm figures are for the same rules.

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
}

// outlierNs: a Repeat=1 run longer than this was interrupted (timer tick,
// IRQ, host preemption) and is left out; a cold lookup takes far less.
const outlierNs = 20_000

// Destination kinds: every rule of the sets blocks, so only misses pass.
const (
	kindHit       = ruleset.Hit
	kindHitPrefix = ruleset.HitPrefix
	kindMiss      = ruleset.Miss
)

var kinds = ruleset.DestinationKinds

// ruleSet is a generated rule set and the packet pools drawn from it, kept
// from round to round.
type ruleSet struct {
	*ruleset.Set
	pools map[string]packetPool
}

func buildMixed4(n int) *ruleset.Set { return ruleset.Mixed4(n) }

func setKey(name string, n int) string { return name + "/" + human(n) }

func runDecision(ctx context.Context, cfg *config, root string, res *results, log io.Writer) error {
	cg := filepath.Join(root, "decide") // the egress programs are attached here, and no process joins it
	if err := os.Mkdir(cg, 0o755); err != nil {
		return err
	}
	fmt.Fprintf(log, "decision cost: generating rule sets\n")
	sets := map[string]*ruleSet{}
	for _, k := range ruleset.Kinds {
		for _, n := range cfg.decisionSizes {
			sets[setKey(k.Name, n)] = &ruleSet{k.Build(n), map[string]packetPool{}}
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

// measureDecision measures every set once, in a random order, on one pinned
// thread.
func measureDecision(ctx context.Context, cfg *config, cg string, sets map[string]*ruleSet, round int) (*decisionRound, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := pinThread(cfg.benchCPU); err != nil {
		return nil, fmt.Errorf("pin to CPU %d: %w", cfg.benchCPU, err)
	}
	rng := rand.New(rand.NewPCG(uint64(round), 77))
	res := &decisionRound{LoadSec: map[string]float64{}, MemlockMiB: map[string]float64{}}
	trivial, err := returnOne(ebpf.CGroupSKB, ebpf.AttachNone)
	if err != nil {
		return nil, err
	}
	defer trivial.Close()
	order := slices.Sorted(maps.Keys(sets))
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	var ovs []float64
	for _, key := range order {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ov := timerOverhead(trivial)
		ovs = append(ovs, ov)
		samples, loadSec, memMiB, err := measureSet(cfg, cg, sets[key], ov, rng)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		res.Samples = append(res.Samples, samples...)
		res.LoadSec[key], res.MemlockMiB[key] = loadSec, memMiB
	}
	res.OverheadNs = median(ovs)
	return res, nil
}

// egressProgram loads p with the real datapath and returns its egress
// program: attached to an empty cgroup and found again there, it is exactly
// the program cgwall runs, with the maps cgwall filled.
func egressProgram(cg string, p *policy.Policy) (_ *datapath.Datapath, _ *ebpf.Program, took time.Duration, err error) {
	start := time.Now()
	d, err := loadDatapath(p)
	took = time.Since(start)
	if err != nil {
		return nil, nil, 0, err
	}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	dir, err := cgroup.Resolve(cg)
	if err != nil {
		return nil, nil, 0, err
	}
	att, err := d.Attach(dir, datapath.HookEgress)
	if err != nil {
		return nil, nil, 0, err
	}
	defer att.Close()
	prog, err := attachedProgram(cg, ebpf.AttachCGroupInetEgress)
	return d, prog, took, err
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

// measureSet loads one set and times each kind of destination, cold and warm.
func measureSet(cfg *config, cg string, rs *ruleSet, overhead float64, rng *rand.Rand) ([]decisionSample, float64, float64, error) {
	p := policy.New()
	p.Log = policy.LogNone
	for _, prefix := range rs.Prefixes {
		if err := p.AddPrefix(policy.Egress, policy.Block, prefix); err != nil {
			return nil, 0, 0, err
		}
	}
	d, prog, took, err := egressProgram(cg, p)
	if err != nil {
		return nil, 0, 0, err
	}
	defer d.Close()
	defer prog.Close()
	mem, err := progMemlock(prog)
	if err != nil {
		return nil, 0, 0, err
	}
	var out []decisionSample
	ks := slices.Clone(kinds)
	rng.Shuffle(len(ks), func(i, j int) { ks[i], ks[j] = ks[j], ks[i] })
	for _, kind := range ks {
		pool := rs.pool(kind, cfg.decisionDsts)
		if len(pool.pkts) == 0 {
			continue
		}
		ds, outliers, err := coldRuns(prog, pool, wantVerdict(kind), cfg.decisionRuns, overhead, rng)
		if err != nil {
			return nil, 0, 0, fmt.Errorf("%s: %w", kind, err)
		}
		_, warm, err := prog.Benchmark(pool.pkts[0], cfg.warmRepeat, nil) // as BenchmarkEgress times it
		if err != nil {
			return nil, 0, 0, err
		}
		out = append(out, decisionSample{
			Set: rs.Name, Rules: len(rs.Prefixes), Kind: kind, Dsts: len(pool.pkts), Runs: len(ds),
			MeanNs: mean(ds), P50Ns: median(ds), P99Ns: quantile(ds, 0.99),
			WarmNs: float64(warm.Nanoseconds()), Outlie: outliers,
		})
	}
	return out, took.Seconds(), float64(mem) / (1 << 20), nil
}

func wantVerdict(kind string) uint32 {
	if kind == kindMiss {
		return 1
	}
	return 0
}

// coldRuns runs prog once per packet, going over the pool in a new random
// order each pass, until it has n runs; it checks every verdict and returns
// the kernel-measured durations less the timer overhead, leaving out
// interrupted runs (and counting them).
func coldRuns(prog *ebpf.Program, pool packetPool, want uint32, n int, overhead float64, rng *rand.Rand) ([]float64, int, error) {
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
			if ret != want {
				return nil, 0, fmt.Errorf("%s: verdict %d, want %d", pool.addrs[i], ret, want)
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
	pkt := udpPacket(netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.1"))
	var ds []float64
	for i := 0; i < 20000; i++ {
		if _, d, err := trivial.Benchmark(pkt, 1, nil); err == nil && d < outlierNs {
			ds = append(ds, float64(d))
		}
	}
	return mean(ds)
}

// packetPool is a kind's distinct destinations and their packets.
type packetPool struct {
	addrs []netip.Addr
	pkts  [][]byte
}

func (rs *ruleSet) pool(kind string, n int) packetPool {
	if p, ok := rs.pools[kind]; ok {
		return p
	}
	src := netip.MustParseAddr("192.0.2.1")
	if rs.Family == 6 {
		src = netip.MustParseAddr("2001:db8::1")
	}
	p := packetPool{addrs: rs.Destinations(kind, n)}
	for _, a := range p.addrs {
		p.pkts = append(p.pkts, udpPacket(src, a))
	}
	rs.pools[kind] = p
	return p
}

// udpPacket is an Ethernet + IP + UDP packet: for cgroup_skb programs the
// kernel takes the EtherType for skb->protocol and hands the program the
// bytes after the Ethernet header, as on a real egress path.
func udpPacket(src, dst netip.Addr) []byte {
	udp := binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, 40000), 53)
	udp = binary.BigEndian.AppendUint16(udp, 8)
	udp = append(udp, 0, 0) // no checksum
	var ip []byte
	etherType := uint16(unix.ETH_P_IP)
	if dst.Is4() {
		ip = []byte{0x45, 0, 0, 28, 0, 0, 0, 0, 64, unix.IPPROTO_UDP, 0, 0}
	} else {
		etherType = unix.ETH_P_IPV6
		ip = []byte{0x60, 0, 0, 0, 0, 8, unix.IPPROTO_UDP, 64}
	}
	ip = append(append(ip, src.AsSlice()...), dst.AsSlice()...)
	pkt := binary.BigEndian.AppendUint16(make([]byte, 12), etherType)
	return append(append(pkt, ip...), udp...)
}
