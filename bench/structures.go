package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Candidate rule structures, measured like the decision cost (cold, one
// BPF_PROG_TEST_RUN per distinct destination) on the ipv4-mixed set. The
// programs are built here with cilium/ebpf's assembler, so no clang is
// needed; each only parses the IPv4 destination and runs its lookups (no
// settings, counters or events), so compare each with itself at 1 rule, not
// with the figures of cgwall's program.
//
//   - hash+lpm: a /32 hash map, then an LPM trie of the other prefixes: the
//     structure cgwall had for IPv4 until these figures chose another, and
//     still has for IPv6.
//   - hash+lens: the /32 hash map, then one hash map per prefix length in
//     the set, longest first (for ipv4-mixed: /24, /16, /8): what cgwall has
//     for IPv4 policies under 4,096 rules (one map keyed by length and
//     address rather than a map per length).
//   - bitmap+hash+lpm, bitmap+hash+lens: the same behind a bitmap of the 2²⁴
//     /24s (2 MiB), a bit set where any rule overlaps that /24. An address
//     whose /24 bit is clear matches no rule: one load decides.
//     bitmap+hash+lens is what cgwall has for larger IPv4 policies.

type structSample struct {
	Round     int     `json:"round"`
	Structure string  `json:"structure"`
	Rules     int     `json:"rules"`
	Kind      string  `json:"kind"`
	MeanNs    float64 `json:"mean_ns"`
	Runs      int     `json:"runs"`
}

var structures = []string{"hash+lpm", "hash+lens", "bitmap+hash+lpm", "bitmap+hash+lens"}

// structMaps are the maps of every candidate, filled for one rule set.
type structMaps struct {
	hosts  *ebpf.Map
	lpm    *ebpf.Map
	lens   []*ebpf.Map // parallel to lenBits, longest first
	bits   []int
	bitmap *ebpf.Map
}

func (m *structMaps) Close() {
	for _, x := range append([]*ebpf.Map{m.hosts, m.lpm, m.bitmap}, m.lens...) {
		if x != nil {
			x.Close()
		}
	}
}

const bpfNoPrealloc = 1 // BPF_F_NO_PREALLOC

func buildStructMaps(rs *ruleSet) (*structMaps, error) {
	m := &structMaps{}
	ok := false
	defer func() {
		if !ok {
			m.Close()
		}
	}()
	hash := func(n int) (*ebpf.Map, error) {
		return ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, Flags: bpfNoPrealloc,
			MaxEntries: uint32(max(4096, 1<<bits.Len(uint(n))))})
	}
	fill := func(mp *ebpf.Map, keys [][4]byte) error {
		if len(keys) == 0 {
			return nil
		}
		vals := make([]uint64, len(keys))
		for i := range vals {
			vals[i] = uint64(i + 1)
		}
		_, err := mp.BatchUpdate(keys, vals, nil)
		return err
	}
	var err error
	byLen := map[int][][4]byte{}
	var hosts [][4]byte
	for _, p := range rs.Prefixes {
		if p.Bits() == 32 {
			hosts = append(hosts, p.Addr().As4())
		} else {
			byLen[p.Bits()] = append(byLen[p.Bits()], p.Addr().As4())
		}
	}
	if m.hosts, err = hash(len(hosts)); err != nil {
		return nil, err
	}
	if err := fill(m.hosts, hosts); err != nil {
		return nil, err
	}
	for l := range byLen {
		m.bits = append(m.bits, l)
	}
	slices.Sort(m.bits)
	slices.Reverse(m.bits)
	for _, l := range m.bits {
		mp, err := hash(len(byLen[l]))
		if err != nil {
			return nil, err
		}
		m.lens = append(m.lens, mp)
		if err := fill(mp, byLen[l]); err != nil {
			return nil, err
		}
	}
	if m.lpm, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.LPMTrie, KeySize: 8, ValueSize: 8, Flags: bpfNoPrealloc, MaxEntries: 1 << 24}); err != nil {
		return nil, err
	}
	for _, l := range m.bits {
		for _, a := range byLen[l] {
			var key [8]byte
			binary.LittleEndian.PutUint32(key[:4], uint32(l))
			copy(key[4:], a[:])
			if err := m.lpm.Put(key, uint64(1)); err != nil {
				return nil, err
			}
		}
	}
	// The bitmap: bit (a<<16|b<<8|c) for every /24 a.b.c that a rule overlaps.
	words := make([]uint64, 1<<18)
	for _, p := range rs.Prefixes {
		a := p.Addr().As4()
		first := uint32(a[0])<<16 | uint32(a[1])<<8 | uint32(a[2])
		count := uint32(1)
		if p.Bits() < 24 {
			count = 1 << (24 - p.Bits())
		}
		for i := first; i < first+count; i++ {
			words[i>>6] |= 1 << (i & 63)
		}
	}
	if m.bitmap, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1 << 18}); err != nil {
		return nil, err
	}
	keys := make([]uint32, len(words))
	for i := range keys {
		keys[i] = uint32(i)
	}
	if _, err := m.bitmap.BatchUpdate(keys, words, nil); err != nil {
		return nil, err
	}
	ok = true
	return m, nil
}

// structProgram assembles a cgroup_skb program that returns 0 when the
// packet's IPv4 destination matches a rule and 1 when not.
func structProgram(name string, m *structMaps) (*ebpf.Program, error) {
	const (
		dstOff  = -8  // the destination, network order, as loaded
		keyOff  = -16 // a u32 key
		lpmOff  = -24 // struct { u32 prefixlen; u32 addr }
		labPass = "pass"
		labDrop = "drop"
	)
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		// bpf_skb_load_bytes(skb, 16, fp-8, 4): the IPv4 destination.
		asm.Mov.Imm(asm.R2, 16),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, dstOff),
		asm.Mov.Imm(asm.R4, 4),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, labPass),
		asm.LoadMem(asm.R7, asm.RFP, dstOff, asm.Word),
	}
	lookup := func(mp *ebpf.Map, keyAt int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMapPtr(asm.R1, mp.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, int32(keyAt)),
			asm.FnMapLookupElem.Call(),
		}
	}
	if name == "bitmap+hash+lpm" || name == "bitmap+hash+lens" {
		insns = append(insns,
			asm.Mov.Reg(asm.R8, asm.R7),
			asm.HostTo(asm.BE, asm.R8, asm.Word), // a<<24|b<<16|c<<8|d
			asm.RSh.Imm(asm.R8, 8),               // the /24's index
			asm.Mov.Reg(asm.R9, asm.R8),
			asm.RSh.Imm(asm.R9, 6), // its word
			asm.StoreMem(asm.RFP, keyOff, asm.R9, asm.Word),
		)
		insns = append(insns, lookup(m.bitmap, keyOff)...)
		insns = append(insns,
			asm.JEq.Imm(asm.R0, 0, labPass),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
			asm.And.Imm(asm.R8, 63),
			asm.RSh.Reg(asm.R1, asm.R8),
			asm.And.Imm(asm.R1, 1),
			asm.JEq.Imm(asm.R1, 0, labPass),
		)
	}
	insns = append(insns, lookup(m.hosts, dstOff)...)
	insns = append(insns, asm.JNE.Imm(asm.R0, 0, labDrop))
	switch name {
	case "hash+lpm", "bitmap+hash+lpm":
		insns = append(insns,
			asm.StoreImm(asm.RFP, lpmOff, 32, asm.Word),
			asm.StoreMem(asm.RFP, lpmOff+4, asm.R7, asm.Word),
		)
		insns = append(insns, lookup(m.lpm, lpmOff)...)
		insns = append(insns, asm.JNE.Imm(asm.R0, 0, labDrop))
	default:
		for i, l := range m.bits {
			// The loaded word holds the address's bytes in memory order, so on
			// a little-endian machine the first byte is the lowest.
			mask := int32(uint32(1)<<l - 1)
			if l == 32 {
				mask = -1
			}
			if nativeBigEndian() {
				mask = int32(^uint32(0) << (32 - l))
			}
			insns = append(insns,
				asm.Mov.Reg(asm.R1, asm.R7),
				asm.And.Imm32(asm.R1, mask),
				asm.StoreMem(asm.RFP, keyOff, asm.R1, asm.Word),
			)
			insns = append(insns, lookup(m.lens[i], keyOff)...)
			insns = append(insns, asm.JNE.Imm(asm.R0, 0, labDrop))
		}
	}
	insns = append(insns,
		asm.Mov.Imm(asm.R0, 1).WithSymbol(labPass),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol(labDrop),
		asm.Return(),
	)
	// The pass label sits on the first instruction after the lookups; jumps
	// to it from above are resolved by symbol.
	return ebpf.NewProgram(&ebpf.ProgramSpec{Name: "cgwb_struct", Type: ebpf.CGroupSKB, Instructions: insns, License: "MIT"})
}

func nativeBigEndian() bool { return binary.NativeEndian.Uint16([]byte{0, 1}) == 1 }

// measureStructures times every candidate on the ipv4-mixed sets of the
// given sizes, cold, in one round.
func measureStructures(ctx context.Context, cfg *config, sets map[string]*ruleSet, round int) ([]structSample, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := pinThread(cfg.benchCPU); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(uint64(round), 78))
	trivial, err := trivialProgram()
	if err != nil {
		return nil, err
	}
	defer trivial.Close()
	var out []structSample
	sizes := slices.Clone(cfg.structSizes)
	rng.Shuffle(len(sizes), func(i, j int) { sizes[i], sizes[j] = sizes[j], sizes[i] })
	for _, n := range sizes {
		rs := sets[setKey("ipv4-mixed", n)]
		m, err := buildStructMaps(rs)
		if err != nil {
			return nil, fmt.Errorf("structures, %d rules: %w", n, err)
		}
		names := slices.Clone(structures)
		rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
		for _, name := range names {
			if ctx.Err() != nil {
				m.Close()
				return nil, ctx.Err()
			}
			prog, err := structProgram(name, m)
			if err != nil {
				m.Close()
				return nil, fmt.Errorf("structure %s: %w", name, err)
			}
			ov := timerOverhead(trivial)
			for _, kind := range kinds {
				pool := rs.pool(kind, cfg.decisionDsts)
				if len(pool.pkts) == 0 {
					continue
				}
				want := wantVerdict(kind)
				ds, _, err := coldRuns(prog, pool, want, cfg.structRuns, ov, rng)
				if err != nil {
					prog.Close()
					m.Close()
					return nil, fmt.Errorf("structure %s, %d rules, %s: %w", name, n, kind, err)
				}
				out = append(out, structSample{Round: round, Structure: name, Rules: n, Kind: kind, MeanNs: mean(ds), Runs: len(ds)})
			}
			prog.Close()
		}
		m.Close()
	}
	return out, nil
}
