package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/cgwall/cgwall/internal/policy"
)

// The granularities of the IPv4 bitmaps: the shift from an address to the
// unit that a bit stands for.
const (
	shift24 = 8  // a bit per /24: 2^24 bits, 2 MiB
	shift18 = 14 // a bit per /18: 2^18 bits, 32 KiB
	shift16 = 16 // a bit per /16: 2^16 bits, 8 KiB
)

// bitmapWords is the size, in 64-bit words, of a bitmap of a granularity.
func bitmapWords(shift uint8) int { return 1 << (32 - shift) / 64 }

// bitmapThreshold is the number of IPv4 rules in a direction from which its
// generation gets a /24 bitmap rather than a /16 one. Measured by the bench
// harness, `go run ./bench -only decision -decision-sizes 1k,10k`, ipv4-mixed
// rows, at 7ccd3ad (2 to 5 runs, each a median of 5 rounds): a cold miss at
// 10k rules costs 169–218 ns with the /24 bitmap and 449–468 ns without any
// (this set to 1<<14); at 1k, 259–298 ns without. A /24 bitmap at 1k (this
// set to 1) took a miss to 162–213 ns but a hit from 112–184 ns to 181–247:
// below the threshold, the /16 bitmap answers misses from 8 KiB, which stay
// in the caches. A variable so that tests can force it.
var bitmapThreshold = 1 << 12

// bitmap18Threshold is the number of IPv4 rules in a direction from which a
// generation below bitmapThreshold gets a /18 bitmap rather than a /16 one.
// A /16 bitmap lets through to the rule maps about 6% of the misses at 4k
// ipv4-mixed rules (a bit per host rule's /16), each of which then probes
// the host map and every length; a /18 one about 1.5%, from 32 KiB that
// still stay in the caches. A /20 one (128 KiB) let through fewer but cost
// as much as it saved (docs/performance.md). `go run ./bench -only decision
// -decision-sizes 1,1k,4k -rounds 5`, three runs each way, at 0aa50bb with
// /18 from 1,000 rules: a cold miss at 4k 75–77 ns with /16, 59–66 with
// /18; at 1k 56 against 52–55, too little to matter below 1,024; at one
// rule 49–54; hits the same. A variable so that tests can force it.
var bitmap18Threshold = 1 << 10

// bitmaps returns p's IPv4 bitmaps by direction, of the granularities that
// bitmapShifts gives; nil for a direction with no IPv4 rule.
func bitmaps(p *policy.Policy) [2][]uint64 {
	shifts := bitmapShifts(p)
	var out [2][]uint64
	for dir, shift := range shifts {
		if shift != 0 {
			out[dir] = make([]uint64, bitmapWords(shift))
		}
	}
	for _, r := range p.Rules {
		if words := out[r.Dir]; words != nil && r.Prefix.Addr().Is4() {
			lo, n := units(r.Prefix, shifts[r.Dir])
			setBits(words, lo, n)
		}
	}
	return out
}

// bitmapShifts says the granularity of each direction's bitmap: /24 from
// bitmapThreshold IPv4 rules up, /18 from bitmap18Threshold, /16 below, none
// without IPv4 rules.
func bitmapShifts(p *policy.Policy) [2]uint8 {
	var v4 [2]int
	for _, r := range p.Rules {
		if r.Prefix.Addr().Is4() {
			v4[r.Dir]++
		}
	}
	var out [2]uint8
	for _, dir := range policy.Directions {
		switch {
		case v4[dir] >= bitmapThreshold:
			out[dir] = shift24
		case v4[dir] >= bitmap18Threshold:
			out[dir] = shift18
		case v4[dir] > 0:
			out[dir] = shift16
		}
	}
	return out
}

// units returns the first unit (a /24 or /16, by shift) that an IPv4 prefix
// overlaps, as an index, and how many it overlaps.
func units(prefix netip.Prefix, shift uint8) (first, n uint32) {
	a := prefix.Addr().As4()
	first = (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) >> shift
	if width := 32 - int(shift); prefix.Bits() < width {
		return first, 1 << (width - prefix.Bits())
	}
	return first, 1
}

// setBits sets bits [lo, lo+n) of words.
func setBits(words []uint64, lo, n uint32) {
	for i := lo; i < lo+n; {
		if i%64 == 0 && lo+n-i >= 64 {
			words[i/64] = ^uint64(0)
			i += 64
			continue
		}
		words[i/64] |= 1 << (i % 64)
		i++
	}
}

// newBitmap creates a bitmap map of a kind holding words.
func (d *Datapath) newBitmap(k kind, words []uint64) (*ebpf.Map, error) {
	spec := d.spec.Maps[mapName(policy.Egress, k)].InnerMap.Copy()
	spec.MaxEntries = uint32(len(words))
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("create bitmap: %w", err)
	}
	if err := fillBitmap(m, words); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// fillBitmap writes words into a bitmap map in one copy.
func fillBitmap(m *ebpf.Map, words []uint64) error {
	mem, err := m.Memory()
	if err == nil {
		// Host byte order, as the programs read the words.
		_, err = mem.WriteAt(unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), len(words)*8), 0)
	}
	if err != nil {
		return fmt.Errorf("fill bitmap: %w", err)
	}
	return nil
}

// markBitmap sets the bits of an IPv4 rule about to be added in the bitmap of
// the generation in force, if it has one, so that no packet meets the rule
// while its bits are still clear. Bits are never cleared in place: a set bit
// only sends a lookup on to the rule maps.
func (d *Datapath) markBitmap(r policy.Rule) error {
	var cfg cgwallConfig
	if err := d.objs.Settings.Lookup(d.state.Gen, &cfg); err != nil {
		return fmt.Errorf("read settings: %w", err)
	}
	if !r.Prefix.Addr().Is4() {
		return d.markBitmap6(r, &cfg)
	}
	var bm *ebpf.Map
	err := d.maps[r.Dir][kindBitmap4].outer.Lookup(d.state.Gen, &bm)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up bitmap: %w", err)
	}
	defer bm.Close()
	lo, n := units(r.Prefix, cfg.Bitmap4Shift[r.Dir])
	if n < 64 {
		// One word, whose other bits stay as they are.
		var w uint64
		if err := bm.Lookup(lo/64, &w); err != nil {
			return fmt.Errorf("read bitmap: %w", err)
		}
		w |= (1<<n - 1) << (lo % 64)
		if err := bm.Put(lo/64, w); err != nil {
			return fmt.Errorf("write bitmap: %w", err)
		}
		return nil
	}
	// A prefix that covers 64 units or more covers whole words (n is a
	// power of two, and the prefix is aligned to it).
	keys := make([]uint32, n/64)
	vals := make([]uint64, n/64)
	for i := range keys {
		keys[i], vals[i] = lo/64+uint32(i), ^uint64(0)
	}
	if _, err := bm.BatchUpdate(keys, vals, nil); err != nil {
		return fmt.Errorf("write bitmap: %w", err)
	}
	return nil
}

// bitmap6Words is the size, in 64-bit words, of the prefix part of an IPv6
// bitmap: 2^16 bits. Its host part follows (see bpf/cgwall.c, struct
// bitmap6_map).
const bitmap6Words = 1 << 10

// The host part of an IPv6 bitmap has 2^hostBits bits, at least
// hostBitsPerRule a host rule (one in 32 misses among them finds its bit set
// and looks up the host map), from 2^16 bits (8 KiB) to 2^24 (2 MiB).
const (
	hostBitsPerRule = 32
	minHostBits     = 16
	maxHostBits     = 24
)

// bitmap6Shape returns, by direction, how many of an address's first bits
// the prefix part of the IPv6 bitmap hashes, and the host part's size as a
// power of two. The first is the length of the direction's shortest IPv6
// rule: that of its shortest prefix rule, or 128 if it has host rules only;
// 0, no bitmap, without IPv6 rules or with a ::/0 rule, which matches every
// address. The second is 0 where there is no bitmap.
func bitmap6Shape(p *policy.Policy) (lens, hosts [2]uint8) {
	var seen [2]bool
	var n [2]int // host rules
	for _, r := range p.Rules {
		if r.Prefix.Addr().Is4() {
			continue
		}
		if bits := uint8(r.Prefix.Bits()); !seen[r.Dir] || bits < lens[r.Dir] {
			lens[r.Dir], seen[r.Dir] = bits, true
		}
		if r.Prefix.IsSingleIP() {
			n[r.Dir]++
		}
	}
	for dir := range lens {
		if lens[dir] == 0 {
			continue
		}
		h := minHostBits
		for h < maxHostBits && 1<<h < n[dir]*hostBitsPerRule {
			h++
		}
		hosts[dir] = uint8(h)
	}
	return lens, hosts
}

// bitmap6Size is the words of an IPv6 bitmap whose host part has 2^hosts
// bits.
func bitmap6Size(hosts uint8) int { return bitmap6Words + 1<<hosts/64 }

// bitmaps6 returns p's IPv6 bitmaps by direction; nil for a direction with
// none (see bitmap6Shape).
func bitmaps6(p *policy.Policy) [2][]uint64 {
	lens, hosts := bitmap6Shape(p)
	var out [2][]uint64
	for dir, bits := range lens {
		if bits != 0 {
			out[dir] = make([]uint64, bitmap6Size(hosts[dir]))
		}
	}
	for _, r := range p.Rules {
		if words := out[r.Dir]; words != nil && r.Prefix.Addr().Is6() {
			i := bit6(r.Prefix, lens[r.Dir], hosts[r.Dir])
			words[i/64] |= 1 << (i % 64)
		}
	}
	return out
}

// bit6 is the bit of an IPv6 rule in a bitmap whose prefix part hashes bits
// bits and whose host part has 2^hosts: in the host part for a host rule, in
// the prefix part for the others.
func bit6(prefix netip.Prefix, bits, hosts uint8) uint32 {
	a := prefix.Addr().As16()
	if prefix.IsSingleIP() {
		return bitmap6Words*64 + uint32(hash6(a, 128)>>(64-hosts))
	}
	return uint32(hash6(a, bits) >> 48)
}

// hash6 hashes the first bits bits (1 to 128) of an IPv6 address to 64 bits,
// as the C's hash6 does; the bitmaps take its top bits.
func hash6(a [16]byte, bits uint8) uint64 {
	hi, lo := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
	if bits <= 64 {
		hi &= ^uint64(0) << ((64 - bits) & 63)
		lo = 0
	} else {
		lo &= ^uint64(0) << ((128 - bits) & 63)
	}
	return (hi ^ lo*0x9e3779b97f4a7c15) * 0xc2b2ae3d27d4eb4f
}

// markBitmap6 sets the bit of an IPv6 rule about to be added in the IPv6
// bitmap of the generation in force, if it has one; the caller has checked
// that the rule fits (a prefix rule no shorter than the prefix part hashes).
func (d *Datapath) markBitmap6(r policy.Rule, cfg *cgwallConfig) error {
	bits, hosts := cfg.Bitmap6Len[r.Dir], cfg.Bitmap6Hosts[r.Dir]
	var bm *ebpf.Map
	err := d.maps[r.Dir][kindBitmap6].outer.Lookup(d.state.Gen, &bm)
	if errors.Is(err, ebpf.ErrKeyNotExist) || bits == 0 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up bitmap: %w", err)
	}
	defer bm.Close()
	i := bit6(r.Prefix, bits, hosts)
	var w uint64
	if err := bm.Lookup(i/64, &w); err != nil {
		return fmt.Errorf("read bitmap: %w", err)
	}
	if err := bm.Put(i/64, w|1<<(i%64)); err != nil {
		return fmt.Errorf("write bitmap: %w", err)
	}
	return nil
}
