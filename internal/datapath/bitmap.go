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
// bitmapThreshold IPv4 rules up, /16 below, none without IPv4 rules.
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
		return d.markBitmap6(r, cfg.Bitmap6Len[r.Dir])
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

// bitmap6Words is the size, in 64-bit words, of an IPv6 bitmap: 2^16 bits.
const bitmap6Words = 1 << 10

// bitmap6Lens returns, by direction, how many of an address's first bits the
// IPv6 bitmap hashes: the length of the direction's shortest IPv6 rule; 0,
// no bitmap, without IPv6 rules or with a ::/0 rule, which matches every
// address.
func bitmap6Lens(p *policy.Policy) [2]uint8 {
	var out [2]uint8
	var seen [2]bool
	for _, r := range p.Rules {
		if r.Prefix.Addr().Is4() {
			continue
		}
		if bits := uint8(r.Prefix.Bits()); !seen[r.Dir] || bits < out[r.Dir] {
			out[r.Dir], seen[r.Dir] = bits, true
		}
	}
	return out
}

// bitmaps6 returns p's IPv6 bitmaps by direction; nil for a direction with
// none (see bitmap6Lens).
func bitmaps6(p *policy.Policy) [2][]uint64 {
	lens := bitmap6Lens(p)
	var out [2][]uint64
	for dir, bits := range lens {
		if bits != 0 {
			out[dir] = make([]uint64, bitmap6Words)
		}
	}
	for _, r := range p.Rules {
		if words := out[r.Dir]; words != nil && r.Prefix.Addr().Is6() {
			h := hash6(r.Prefix.Addr().As16(), lens[r.Dir])
			words[h/64] |= 1 << (h % 64)
		}
	}
	return out
}

// hash6 hashes the first bits bits (1 to 128) of an IPv6 address to 16 bits,
// as the C's hash6 does.
func hash6(a [16]byte, bits uint8) uint32 {
	hi, lo := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
	if bits <= 64 {
		hi &= ^uint64(0) << ((64 - bits) & 63)
		lo = 0
	} else {
		lo &= ^uint64(0) << ((128 - bits) & 63)
	}
	return uint32((hi ^ lo*0x9e3779b97f4a7c15) * 0xc2b2ae3d27d4eb4f >> 48)
}

// markBitmap6 sets the bit of an IPv6 rule about to be added in the IPv6
// bitmap of the generation in force, if it has one; the caller has checked
// that the rule is no shorter than the bitmap hashes (fits).
func (d *Datapath) markBitmap6(r policy.Rule, bits uint8) error {
	var bm *ebpf.Map
	err := d.maps[r.Dir][kindBitmap6].outer.Lookup(d.state.Gen, &bm)
	if errors.Is(err, ebpf.ErrKeyNotExist) || bits == 0 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up bitmap: %w", err)
	}
	defer bm.Close()
	h := hash6(r.Prefix.Addr().As16(), bits)
	var w uint64
	if err := bm.Lookup(h/64, &w); err != nil {
		return fmt.Errorf("read bitmap: %w", err)
	}
	if err := bm.Put(h/64, w|1<<(h%64)); err != nil {
		return fmt.Errorf("write bitmap: %w", err)
	}
	return nil
}
