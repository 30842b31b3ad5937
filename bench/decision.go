package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/policy"
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

func measureDecision(ctx context.Context, cfg *config, cg string, sets map[string]*ruleSet, round int) (*decisionRound, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := pinThread(cfg.benchCPU); err != nil {
		return nil, fmt.Errorf("pin to CPU %d: %w", cfg.benchCPU, err)
	}

	rng := rand.New(rand.NewPCG(uint64(round), 77))
	res := &decisionRound{LoadSec: map[string]float64{}, MemlockMiB: map[string]float64{}}

	trivial, err := trivialProgram()
	if err != nil {
		return nil, err
	}
	defer trivial.Close()
	var order []string
	for _, k := range setKinds {
		for _, n := range cfg.decisionSizes {
			order = append(order, setKey(k.name, n))
		}
	}
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })

	var ovs []float64
	for _, key := range order {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ov := timerOverhead(trivial)
		ovs = append(ovs, ov)
		rs := sets[key]
		samples, loadSec, memMiB, err := measureSet(cfg, cg, rs, ov, rng)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		res.Samples = append(res.Samples, samples...)
		res.LoadSec[key] = loadSec
		res.MemlockMiB[key] = memMiB
	}
	res.OverheadNs = median(ovs)
	return res, nil
}

func setKey(name string, n int) string { return name + "/" + human(n) }

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// trivialProgram is a cgroup_skb program that returns 1: the cost of a
// Repeat=1 BPF_PROG_TEST_RUN that is not the program's.
func trivialProgram() (*ebpf.Program, error) {
	return ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.CGroupSKB,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()},
		License:      "MIT",
	})
}

// egressProgram loads p with the real datapath and returns its egress
// program. The program is not exported by internal/datapath, so it is
// attached to an empty cgroup and found again by querying that cgroup: it
// is then exactly the program cgwall runs, with the maps cgwall filled.
func egressProgram(cg string, p *policy.Policy) (*datapath.Datapath, *ebpf.Program, time.Duration, error) {
	start := time.Now()
	d, err := loadDatapath(p)
	took := time.Since(start)
	if err != nil {
		return nil, nil, 0, err
	}
	dir, err := cgroup.Resolve(cg)
	if err != nil {
		d.Close()
		return nil, nil, 0, err
	}
	att, err := d.Attach(dir, datapath.HookEgress)
	if err != nil {
		d.Close()
		return nil, nil, 0, err
	}
	defer att.Close()
	f, err := os.Open(cg)
	if err != nil {
		d.Close()
		return nil, nil, 0, err
	}
	defer f.Close()
	q, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: ebpf.AttachCGroupInetEgress})
	if err != nil || len(q.Programs) != 1 {
		d.Close()
		return nil, nil, 0, fmt.Errorf("find the egress program on %s: %v (%d programs)", cg, err, len(q.Programs))
	}
	prog, err := ebpf.NewProgramFromID(q.Programs[0].ID)
	if err != nil {
		d.Close()
		return nil, nil, 0, err
	}
	return d, prog, took, nil
}

// loadDatapath loads p and puts it in force, as cgwall run does: datapaths
// with policy generations let everything pass until a policy is committed.
func loadDatapath(p *policy.Policy) (*datapath.Datapath, error) {
	d, err := datapath.Load(p)
	if err != nil {
		return nil, err
	}
	if c, ok := any(d).(interface{ Commit() error }); ok {
		if err := c.Commit(); err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

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

	ks := slices.Clone(kinds)
	rng.Shuffle(len(ks), func(i, j int) { ks[i], ks[j] = ks[j], ks[i] })
	var out []decisionSample
	for _, kind := range ks {
		pool := rs.pool(kind, cfg.decisionDsts)
		if len(pool.pkts) == 0 {
			continue
		}
		want := wantVerdict(kind)
		ds, outliers, err := coldRuns(prog, pool, want, cfg.decisionRuns, overhead, rng)
		if err != nil {
			return nil, 0, 0, fmt.Errorf("%s: %w", kind, err)
		}
		// The warm figure, as BenchmarkEgress takes it.
		_, warm, err := prog.Benchmark(pool.pkts[0], cfg.warmRepeat, nil)
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

// coldRuns runs prog once per packet, going over the pool in a new random
// order each pass, until it has n runs; it checks every verdict and returns
// the kernel-measured durations less the timer overhead, leaving out
// interrupted runs (and counting them).
func coldRuns(prog *ebpf.Program, pool packetPool, want uint32, n int, overhead float64, rng *rand.Rand) ([]float64, int, error) {
	idx := make([]int, len(pool.pkts))
	for i := range idx {
		idx[i] = i
	}
	ds := make([]float64, 0, n)
	outliers := 0
	for len(ds)+outliers < n {
		rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		for _, i := range idx {
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
		_, d, err := trivial.Benchmark(pkt, 1, nil)
		if err == nil && d < outlierNs {
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
	key := kind
	if rs.pools == nil {
		rs.pools = map[string]packetPool{}
	}
	if p, ok := rs.pools[key]; ok {
		return p
	}
	var p packetPool
	p.addrs = rs.Destinations(kind, n)
	src := netip.MustParseAddr("192.0.2.1")
	if rs.Family == 6 {
		src = netip.MustParseAddr("2001:db8::1")
	}
	for _, a := range p.addrs {
		p.pkts = append(p.pkts, udpPacket(src, a))
	}
	rs.pools[key] = p
	return p
}

// udpPacket is an Ethernet + IP + UDP packet: for cgroup_skb programs the
// kernel takes the EtherType for skb->protocol and hands the program the
// bytes after the Ethernet header, as on a real egress path.
func udpPacket(src, dst netip.Addr) []byte {
	udp := make([]byte, 8)
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 53)
	binary.BigEndian.PutUint16(udp[4:], 8)
	var ip []byte
	var etherType uint16
	if dst.Is4() {
		etherType = 0x0800
		ip = make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], 28)
		ip[8] = 64
		ip[9] = 17
		s, d := src.As4(), dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
	} else {
		etherType = 0x86dd
		ip = make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], 8)
		ip[6] = 17
		ip[7] = 64
		s, d := src.As16(), dst.As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
	}
	pkt := make([]byte, 14, 14+len(ip)+8)
	binary.BigEndian.PutUint16(pkt[12:], etherType)
	pkt = append(pkt, ip...)
	return append(pkt, udp...)
}

// decisionCgroup creates the empty cgroup the egress programs are attached
// to while they are looked up; no process ever joins it.
func decisionCgroup(root string) (string, error) {
	cg := filepath.Join(root, "decide")
	return cg, os.Mkdir(cg, 0o755)
}
