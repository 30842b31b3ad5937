package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/cgwall/cgwall/internal/policy"
)

// bitmapWords is the size of an IPv4 /24 bitmap: one bit for each of the 2^24
// /24s, 2 MiB.
const bitmapWords = 1 << 18

// bitmapThreshold is the number of IPv4 rules in a direction from which its
// generation gets a /24 bitmap. Below it the rule maps are small enough to
// stay in the caches, and the bitmap costs a cold load of its own in every
// decision it does not answer. Measured by the bench harness, `go run ./bench
// -only decision -decision-sizes 1k,10k`, ipv4-mixed rows, at 7ccd3ad (2 to 5
// runs, each a median of 5 rounds): a cold miss at 10k rules costs 169–218 ns
// with the bitmap and 449–468 ns without (this set to 1<<14); at 1k, 259–298
// ns without. A bitmap at 1k (this set to 1) took a miss to 162–213 ns but a
// hit from 112–184 ns to 181–247, so whether the threshold belongs below 4,096
// is not settled. A variable so that tests can force it.
var bitmapThreshold = 1 << 12

// bitmaps returns p's IPv4 /24 bitmaps by direction; nil for a direction with
// fewer IPv4 rules than bitmapThreshold.
func bitmaps(p *policy.Policy) [2][]uint64 {
	var out [2][]uint64
	for dir, want := range wantsBitmaps(p) {
		if want {
			out[dir] = make([]uint64, bitmapWords)
		}
	}
	for _, r := range p.Rules {
		if words := out[r.Dir]; words != nil && r.Prefix.Addr().Is4() {
			lo, n := slash24s(r.Prefix)
			setBits(words, lo, n)
		}
	}
	return out
}

// wantsBitmaps says which directions of p get a /24 bitmap.
func wantsBitmaps(p *policy.Policy) [2]bool {
	var v4 [2]int
	for _, r := range p.Rules {
		if r.Prefix.Addr().Is4() {
			v4[r.Dir]++
		}
	}
	var out [2]bool
	for _, dir := range policy.Directions {
		out[dir] = v4[dir] > 0 && v4[dir] >= bitmapThreshold
	}
	return out
}

// slash24s returns the first /24 that an IPv4 prefix overlaps, as an index,
// and how many it overlaps.
func slash24s(prefix netip.Prefix) (first, n uint32) {
	a := prefix.Addr().As4()
	first = uint32(a[0])<<16 | uint32(a[1])<<8 | uint32(a[2])
	if bits := prefix.Bits(); bits < 24 {
		return first, 1 << (24 - bits)
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

// newBitmap creates a bitmap map holding words.
func (d *Datapath) newBitmap(words []uint64) (*ebpf.Map, error) {
	m, err := ebpf.NewMap(d.spec.Maps[mapName(policy.Egress, kindBitmap4)].InnerMap.Copy())
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
	if !r.Prefix.Addr().Is4() {
		return nil
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

	lo, n := slash24s(r.Prefix)
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
	// A prefix of /18 or shorter covers whole words (n is a power of two).
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
