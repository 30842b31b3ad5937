package main

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/cgwall/cgwall/internal/ruleset"
)

// One cold line: what a decision cannot go below. Each size is an array of
// 64-byte lines, as large as a structure that cgwall's rules could fill, and
// a program that reads the line a hash of the packet's destination picks and
// does nothing else. Timed as the rule sets are (coldRuns, the same pool
// size), it gives what one cache line of that structure costs in a cold
// decision on this host: a lower bound for any structure of that size that
// a packet must read at least once. The sizes: what one rule's maps take, a
// /24 bitmap (2 MiB), a hash map's buckets at a million rules (2^21 of 8
// bytes: 16 MiB), and a table of a million rules at 32 bytes a slot and half
// full (64 MiB), one line for the address, its verdict and its counters.
var lineSizes = []int{8 << 10, 2 << 20, 16 << 20, 64 << 20}

const lineBytes = 64

// lineSample is one size's cold cost in one round.
type lineSample struct {
	Bytes  int     `json:"bytes"`
	MeanNs float64 `json:"mean_ns"` // net of the timer cost
}

// measureLines times one cold line of each size, net of overhead, over as
// many distinct IPv4 destinations as a rule set's pool.
func measureLines(cfg *config, overhead float64, rng *rand.Rand) ([]lineSample, error) {
	pool := linePool(cfg.DecisionDsts, rng)
	var out []lineSample
	for _, size := range lineSizes {
		ns, err := measureLine(cfg, size, pool, overhead, rng)
		if err != nil {
			return nil, fmt.Errorf("one line of %d bytes: %w", size, err)
		}
		out = append(out, lineSample{Bytes: size, MeanNs: ns})
	}
	return out, nil
}

func measureLine(cfg *config, size int, pool packetPool, overhead float64, rng *rand.Rand) (float64, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: lineBytes, MaxEntries: uint32(size / lineBytes)})
	if err != nil {
		return 0, err
	}
	defer m.Close()
	prog, err := lineProgram(m, bits.Len(uint(size/lineBytes))-1)
	if err != nil {
		return 0, err
	}
	defer prog.Close()
	ds, _, err := coldRuns(prog, pool, cfg.DecisionRuns, overhead, rng)
	if err != nil {
		return 0, err
	}
	return mean(ds), nil
}

// linePool is n distinct destinations in 198.18.0.0/15, each answered 1.
func linePool(n int, rng *rand.Rand) packetPool {
	src := netip.MustParseAddr("192.0.2.1")
	base := netip.MustParseAddr("198.18.0.0").As4()
	var p packetPool
	for _, i := range rng.Perm(1 << 17)[:min(n, 1<<17)] {
		a := base
		a[1] += byte(i >> 16)
		a[2], a[3] = byte(i>>8), byte(i)
		d := ruleset.Packet{Addr: netip.AddrFrom4(a), Proto: unix.IPPROTO_UDP, Port: 53}
		p.dsts, p.pkts, p.wants = append(p.dsts, d), append(p.pkts, packet(src, d)), append(p.wants, 1)
	}
	return p
}

// lineProgram reads the IPv4 destination in place, as cgwall does, takes
// the top lineBits bits of its Fibonacci hash as the index of a line of m,
// loads a word of it and passes the packet (neither the verifier nor the JIT
// drops an unused load).
func lineProgram(m *ebpf.Map, lineBits int) (*ebpf.Program, error) {
	const (
		skbData    = 76 // offsetof(struct __sk_buff, data)
		skbDataEnd = 80
	)
	ins := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, skbData, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, skbDataEnd, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 20),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R1, asm.R2, 16, asm.Word), // daddr
		asm.HostTo(asm.BE, asm.R1, asm.Word),      // the host bits low, where the multiplier spreads them upward
		asm.Mul.Imm32(asm.R1, -1640531535),        // 2654435761, Knuth's multiplier
		asm.RSh.Imm32(asm.R1, int32(32-lineBits)),
		asm.StoreMem(asm.RFP, -4, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord), // the line: what is measured
		asm.Mov.Imm(asm.R0, 1).WithSymbol("pass"),
		asm.Return(),
	}
	return ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.CGroupSKB, AttachType: ebpf.AttachCGroupInetEgress, License: "MIT", Instructions: ins})
}
