package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// cleanups is a stack of undo actions: namespaces, cgroups, processes. They
// run in reverse order on exit, on error and on Ctrl-C, each once.
type cleanups struct {
	mu  sync.Mutex
	fns []cleanup
}

type cleanup struct {
	what string
	fn   func() error
}

func (c *cleanups) add(what string, fn func() error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fns = append(c.fns, cleanup{what, fn})
}

// run undoes everything registered so far, newest first, and reports failures
// on stderr.
func (c *cleanups) run() {
	c.mu.Lock()
	fns := c.fns
	c.fns = nil
	c.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		if err := fns[i].fn(); err != nil {
			fmt.Fprintf(os.Stderr, "cleanup: %s: %v\n", fns[i].what, err)
		}
	}
}

// command runs a program and returns its stdout; a failure carries stderr.
func command(ctx context.Context, name string, args ...string) (string, error) {
	return commandIn(ctx, nil, name, args...)
}

func commandIn(ctx context.Context, stdin []byte, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		if len(msg) > 400 {
			msg = msg[:400] + "…"
		}
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(shorten(args), " "), err, msg)
	}
	return out.String(), nil
}

func shorten(args []string) []string {
	if len(args) > 8 {
		return append(slices.Clone(args[:8]), "…")
	}
	return args
}

// inNetns runs a program in a named network namespace with nsenter, which,
// unlike 'ip netns exec', leaves /sys alone.
func inNetns(ctx context.Context, ns string, stdin []byte, name string, args ...string) (string, error) {
	return commandIn(ctx, stdin, "nsenter", append([]string{"--net=" + netnsPath(ns), "--", name}, args...)...)
}

func netnsPath(ns string) string { return filepath.Join("/run/netns", ns) }

// median of xs; NaN for none.
func median(xs []float64) float64 { return quantile(xs, 0.5) }

func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
}

// meminfo reads /proc/meminfo in KiB.
func meminfo() (map[string]int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err == nil {
			m[k] = n
		}
	}
	return m, sc.Err()
}

// kernelMemKiB is the kernel memory that rule storage can take: unreclaimable
// slab, vmalloc and per-CPU allocations. BPF maps, nftables sets and x_tables
// blobs all live there.
func kernelMemKiB() int64 {
	m, err := meminfo()
	if err != nil {
		return 0
	}
	return m["SUnreclaim"] + m["VmallocUsed"] + m["Percpu"]
}

// settleKernelMem waits for RCU-deferred frees to land (maps, sets and rule
// blobs are freed after a grace period) and returns the kernel memory then.
func settleKernelMem() int64 {
	prev := kernelMemKiB()
	for i := 0; i < 20; i++ {
		time.Sleep(50 * time.Millisecond)
		cur := kernelMemKiB()
		if abs64(cur-prev) < 256 {
			return cur
		}
		prev = cur
	}
	return prev
}

func abs64(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// progMemlock sums the memlock of every map a program uses, from fdinfo,
// the inner maps of map-in-map maps included.
func progMemlock(p *ebpf.Program) (uint64, error) {
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
	return total, nil
}

func mapMemlock(m *ebpf.Map) (uint64, error) {
	total, err := fdMemlock(m.FD())
	if err != nil {
		return 0, err
	}
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

func fdMemlock(fd int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "memlock:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("no memlock in fdinfo %d", fd)
}

// pinThread pins the calling OS thread (which must be locked) to one CPU.
func pinThread(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	return unix.SchedSetaffinity(0, &set)
}

// alive says whether a process exists.
func alive(pid int) bool {
	return unix.Kill(pid, 0) == nil
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
