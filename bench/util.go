package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// cleanups is a stack of undo actions: namespaces, cgroups, temporary
// files. They run newest first, once, when the run ends, fails or is
// interrupted.
type cleanups []func()

func (c *cleanups) add(what string, fn func() error) {
	*c = append(*c, func() {
		if err := fn(); err != nil {
			fmt.Fprintf(os.Stderr, "cleanup: %s: %v\n", what, err)
		}
	})
}

func (c *cleanups) run() {
	for _, fn := range slices.Backward(*c) {
		fn()
	}
	*c = nil
}

// command runs a program; a failure carries the start of its stderr.
func command(ctx context.Context, argv ...string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 400 { // nft repeats a whole set on some errors
			msg = msg[:400] + "…"
		}
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, msg)
	}
	return nil
}

// mean of xs; 0 for none.
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

// median of xs; NaN for none.
func median(xs []float64) float64 { return quantile(xs, 0.5) }

func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(xs))
	pos := q * float64(len(s)-1)
	lo, hi := int(math.Floor(pos)), int(math.Ceil(pos))
	return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
}

// meminfo reads /proc/meminfo, in KiB.
func meminfo() map[string]int64 {
	b, _ := os.ReadFile("/proc/meminfo")
	m := map[string]int64{}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) >= 2 {
			m[strings.TrimSuffix(f[0], ":")], _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	return m
}

// kernelMemKiB is the kernel memory that rule storage can take: unreclaimable
// slab, vmalloc and per-CPU allocations. BPF maps, nftables sets and x_tables
// blobs all live there.
func kernelMemKiB() int64 {
	m := meminfo()
	return m["SUnreclaim"] + m["VmallocUsed"] + m["Percpu"]
}

// settleKernelMem waits, up to a second, for RCU-deferred frees to land
// (maps, sets and rule blobs are freed after a grace period) and returns the
// kernel memory then.
func settleKernelMem() int64 {
	prev := kernelMemKiB()
	for range 20 {
		time.Sleep(50 * time.Millisecond) // a sampling period: nothing signals the frees
		cur := kernelMemKiB()
		if abs(cur-prev) < 256 {
			return cur
		}
		prev = cur
	}
	return prev
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
		if idle := total > total0 && float64(busy-busy0) < 0.1*float64(total-total0); abs(cur-prev) < 512 && idle {
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
	b, _ := os.ReadFile("/proc/stat")
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 5 || f[0] != fmt.Sprintf("cpu%d", cpu) {
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

func abs(x int64) int64 { return max(x, -x) }

// attachedProgram is the one program of an attach type on a cgroup.
func attachedProgram(cg string, typ ebpf.AttachType) (*ebpf.Program, error) {
	p, err := attachedProgramIfAny(cg, typ)
	if err == nil && p == nil {
		err = fmt.Errorf("no %s program on %s", typ, cg)
	}
	return p, err
}

// attachedProgramIfAny is the one program of an attach type on a cgroup, or
// nil if there is none.
func attachedProgramIfAny(cg string, typ ebpf.AttachType) (*ebpf.Program, error) {
	f, err := os.Open(cg)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	q, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: typ})
	switch {
	case err != nil:
		return nil, err
	case len(q.Programs) == 0:
		return nil, nil
	case len(q.Programs) > 1:
		return nil, fmt.Errorf("%d %s programs on %s, want 1", len(q.Programs), typ, cg)
	}
	return ebpf.NewProgramFromID(q.Programs[0].ID)
}

// memlockMiB sums the memlock of every map a program uses, the inner maps
// of map-in-map maps included.
func memlockMiB(p *ebpf.Program) (float64, error) {
	info, err := p.Info()
	if err != nil {
		return 0, err
	}
	ids, ok := info.MapIDs()
	if !ok {
		return 0, fmt.Errorf("kernel does not list the maps of %s", p)
	}
	var total uint64
	for _, id := range ids {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			return 0, err
		}
		n, err := mapMemlock(m)
		m.Close()
		if err != nil {
			return 0, err
		}
		total += n
	}
	return float64(total) / (1 << 20), nil
}

func mapMemlock(m *ebpf.Map) (uint64, error) {
	info, err := m.Info()
	if err != nil {
		return 0, err
	}
	// An empty LPM trie has none, which the library takes for "not
	// reported"; every kernel cgwall runs on (5.17 and later) reports it.
	total, _ := info.Memlock()
	if t := m.Type(); t != ebpf.ArrayOfMaps && t != ebpf.HashOfMaps {
		return total, nil
	}
	var key uint32
	var inner *ebpf.Map
	it := m.Iterate()
	for it.Next(&key, &inner) {
		n, err := mapMemlock(inner)
		inner.Close()
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, it.Err()
}

// pinThread pins the calling OS thread (which must be locked) to one CPU.
func pinThread(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	return unix.SchedSetaffinity(0, &set)
}

func human(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.Itoa(n)
}
