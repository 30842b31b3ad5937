// Package ruleset generates the rule sets that cgwall's benchmarks time:
// host-only IPv4, a public-blocklist IPv4 mix, and IPv6, each at any size and
// the same for a given size every time, and destinations that hit or miss
// them. BenchmarkEgress and the bench harness share it, so that warm and cold
// figures are for the very same rules. Nothing is ever sent to these
// addresses: they are map keys and crafted packets.
package ruleset

import (
	"math/rand/v2"
	"net/netip"
	"slices"
)

// Set is one generated rule set and what is needed to draw destinations.
type Set struct {
	Name     string
	Family   int // 4 or 6
	Prefixes []netip.Prefix
	Hosts    []netip.Addr   // the host rules (/32, /128)
	Nets     []netip.Prefix // the prefix rules (shorter than a host)

	seen    map[netip.Prefix]struct{}
	lengths []int // the distinct prefix lengths in the set
	rng     *rand.Rand
}

// Kinds are the families of rule sets; each is built at several sizes.
var Kinds = []struct {
	Name  string
	Build func(n int) *Set
}{
	{"ipv4-host", func(n int) *Set {
		return buildSet("ipv4-host", n, 4, []share{{32, n}})
	}},
	{"ipv4-mixed", Mixed4},
	{"ipv6", func(n int) *Set {
		// 85% /128, 15% prefixes from /48 to /64, all under 2001:db8::/32.
		np := n * 15 / 100
		shares := []share{{128, n - np}}
		for bits := 48; bits <= 64; bits++ {
			k := np / 17
			if bits-48 < np%17 {
				k++
			}
			shares = append(shares, share{bits, k})
		}
		return buildSet("ipv6", n, 6, shares)
	}},
}

// Mixed4 is a public-blocklist mix: 85% /32, 10% /24, 4% /16, 1% /8.
// There are only 256 /8s, so the /8s stop at 16 and the rest of that 1% are
// /32s.
func Mixed4(n int) *Set {
	n8 := min(n/100, 16)
	n16 := n * 4 / 100
	n24 := n * 10 / 100
	return buildSet("ipv4-mixed", n, 4, []share{{8, n8}, {16, n16}, {24, n24}, {32, n - n8 - n16 - n24}})
}

type share struct{ bits, count int }

var v6Base = netip.MustParsePrefix("2001:db8::/32")

// buildSet draws the shares' prefixes from a fixed seed: IPv4 ones from the
// whole address space, IPv6 ones from 2001:db8::/32.
func buildSet(name string, n, family int, shares []share) *Set {
	rs := &Set{
		Name:   name,
		Family: family,
		rng:    rand.New(rand.NewPCG(uint64(n), uint64(family))),
		seen:   make(map[netip.Prefix]struct{}, n),
	}
	rs.Prefixes = make([]netip.Prefix, 0, n)
	for _, s := range shares {
		if s.count == 0 {
			continue
		}
		rs.lengths = append(rs.lengths, s.bits)
		for added := 0; added < s.count; {
			if rs.Add(netip.PrefixFrom(rs.randAddr(), s.bits).Masked()) {
				added++
			}
		}
	}
	return rs
}

// Add adds a prefix to the set unless it is there already, and says whether
// it did.
func (rs *Set) Add(p netip.Prefix) bool {
	if _, dup := rs.seen[p]; dup {
		return false
	}
	rs.seen[p] = struct{}{}
	rs.Prefixes = append(rs.Prefixes, p)
	if p.IsSingleIP() {
		rs.Hosts = append(rs.Hosts, p.Addr())
	} else {
		rs.Nets = append(rs.Nets, p)
	}
	return true
}

func (rs *Set) randAddr() netip.Addr {
	if rs.Family == 4 {
		v := rs.rng.Uint32()
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	a := v6Base.Addr().As16()
	hi, lo := rs.rng.Uint64(), rs.rng.Uint64()
	for i := 4; i < 16; i++ {
		if i < 8 {
			a[i] = byte(hi >> (8 * (7 - i)))
		} else {
			a[i] = byte(lo >> (8 * (15 - i)))
		}
	}
	return netip.AddrFrom16(a)
}

// Covered says whether any rule of the set contains a.
func (rs *Set) Covered(a netip.Addr) bool {
	for _, bits := range rs.lengths {
		if _, ok := rs.seen[netip.PrefixFrom(a, bits).Masked()]; ok {
			return true
		}
	}
	return false
}

// IsHost says whether a is a host rule of the set.
func (rs *Set) IsHost(a netip.Addr) bool {
	_, ok := rs.seen[netip.PrefixFrom(a, a.BitLen())]
	return ok
}

// Inside returns a random address in p.
func (rs *Set) Inside(p netip.Prefix) netip.Addr {
	a := rs.randAddr().AsSlice()
	base := p.Addr().AsSlice()
	for i := range a {
		keep := min(max(p.Bits()-8*i, 0), 8)
		mask := byte(0xff << (8 - keep))
		a[i] = base[i]&mask | a[i]&^mask
	}
	addr, _ := netip.AddrFromSlice(a)
	return addr
}

// Destination kinds.
const (
	Hit       = "hit"        // a host rule: the hash map decides
	HitPrefix = "hit-prefix" // in a prefix rule, in no host rule: a prefix map decides
	Miss      = "miss"       // in no rule: the default decides
)

// DestinationKinds lists the kinds of destination.
var DestinationKinds = []string{Hit, HitPrefix, Miss}

// Destinations returns up to n distinct destinations of a kind, in random
// order, drawn with a seed of their own so that the set's rules are not
// disturbed. It returns fewer when the set has fewer (a set of 1,000 rules
// has about 850 host rules), and none for hit-prefix in a set without prefix
// rules.
func (rs *Set) Destinations(kind string, n int) []netip.Addr {
	rng := rand.New(rand.NewPCG(uint64(len(rs.Prefixes)), uint64(rs.Family)<<8|uint64(len(kind))))
	saved := rs.rng
	rs.rng = rng
	defer func() { rs.rng = saved }()

	var out []netip.Addr
	switch kind {
	case Hit:
		out = slices.Clone(rs.Hosts)
		rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
		if len(out) > n {
			out = out[:n]
		}
	case HitPrefix:
		if len(rs.Nets) == 0 {
			return nil
		}
		seen := map[netip.Addr]bool{}
		for tries := 0; len(out) < n && tries < 4*n; tries++ {
			a := rs.Inside(rs.Nets[rng.IntN(len(rs.Nets))])
			if rs.Family == 6 && !v6Base.Contains(a) || rs.IsHost(a) || seen[a] {
				continue
			}
			seen[a] = true
			out = append(out, a)
		}
	case Miss:
		seen := map[netip.Addr]bool{}
		for tries := 0; len(out) < n && tries < 20*n; tries++ {
			a := rs.randAddr()
			if rs.Covered(a) || seen[a] {
				continue
			}
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}
