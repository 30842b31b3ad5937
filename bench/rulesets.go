package main

import (
	"math/rand/v2"
	"net/netip"
	"slices"
)

// The rule sets are the ones internal/datapath's BenchmarkEgress times (same
// generator, same seeds), so that the cold-cache figures here and the
// warm-cache figures in docs/performance.md are for the very same rules.

// ruleSet is one generated rule set and what the harness needs to know about
// it to draw destinations.
type ruleSet struct {
	name     string
	family   int
	prefixes []netip.Prefix
	seen     map[netip.Prefix]struct{}
	lengths  []int          // the distinct prefix lengths in the set
	hosts    []netip.Addr   // the host rules (/32, /128)
	nets     []netip.Prefix // the prefix rules (shorter than a host)
	rng      *rand.Rand
	pools    map[string]packetPool
}

// setKinds are the families of rule sets; each is built at several sizes.
var setKinds = []struct {
	name  string
	build func(n int) *ruleSet
}{
	{"ipv4-host", func(n int) *ruleSet {
		return buildSet("ipv4-host", n, 4, []share{{32, n}})
	}},
	{"ipv4-mixed", buildMixed4},
	{"ipv6", func(n int) *ruleSet {
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

// buildMixed4 is a public-blocklist mix: 85% /32, 10% /24, 4% /16, 1% /8.
// There are only 256 /8s, so the /8s stop at 16 and the rest of that 1% are
// /32s.
func buildMixed4(n int) *ruleSet {
	n8 := min(n/100, 16)
	n16 := n * 4 / 100
	n24 := n * 10 / 100
	return buildSet("ipv4-mixed", n, 4, []share{{8, n8}, {16, n16}, {24, n24}, {32, n - n8 - n16 - n24}})
}

type share struct{ bits, count int }

var v6Base = netip.MustParsePrefix("2001:db8::/32")

// buildSet draws the shares' prefixes from a fixed seed: IPv4 ones from the
// whole address space, IPv6 ones from 2001:db8::/32. The draw is
// BenchmarkEgress's, so the sets are identical to its sets.
func buildSet(name string, n, family int, shares []share) *ruleSet {
	rs := &ruleSet{
		name:   name,
		family: family,
		rng:    rand.New(rand.NewPCG(uint64(n), uint64(family))),
		seen:   make(map[netip.Prefix]struct{}, n),
	}
	rs.prefixes = make([]netip.Prefix, 0, n)
	for _, s := range shares {
		if s.count == 0 {
			continue
		}
		rs.lengths = append(rs.lengths, s.bits)
		for added := 0; added < s.count; {
			p := netip.PrefixFrom(rs.randAddr(), s.bits).Masked()
			if _, dup := rs.seen[p]; dup {
				continue
			}
			rs.seen[p] = struct{}{}
			rs.prefixes = append(rs.prefixes, p)
			added++
			if p.IsSingleIP() {
				rs.hosts = append(rs.hosts, p.Addr())
			} else {
				rs.nets = append(rs.nets, p)
			}
		}
	}
	return rs
}

func (rs *ruleSet) randAddr() netip.Addr {
	if rs.family == 4 {
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

// covered says whether any rule of the set contains a.
func (rs *ruleSet) covered(a netip.Addr) bool {
	for _, bits := range rs.lengths {
		if _, ok := rs.seen[netip.PrefixFrom(a, bits).Masked()]; ok {
			return true
		}
	}
	return false
}

func (rs *ruleSet) isHost(a netip.Addr) bool {
	_, ok := rs.seen[netip.PrefixFrom(a, a.BitLen())]
	return ok
}

// inside returns a random address in p.
func (rs *ruleSet) inside(p netip.Prefix) netip.Addr {
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
	kindHit       = "hit"        // a host rule: the hash map decides
	kindHitPrefix = "hit-prefix" // in a prefix rule, in no host rule: the trie decides
	kindMiss      = "miss"       // in no rule: the default decides
)

var kinds = []string{kindHit, kindHitPrefix, kindMiss}

// destinations returns up to n distinct destinations of a kind, in random
// order, drawn with a seed of their own so that the set's rules are not
// disturbed. It returns fewer when the set has fewer (a set of 1,000 rules
// has about 850 host rules), and none for hit-prefix in a set without prefix
// rules.
func (rs *ruleSet) destinations(kind string, n int) []netip.Addr {
	rng := rand.New(rand.NewPCG(uint64(len(rs.prefixes)), uint64(rs.family)<<8|uint64(len(kind))))
	saved := rs.rng
	rs.rng = rng
	defer func() { rs.rng = saved }()

	var out []netip.Addr
	switch kind {
	case kindHit:
		out = slices.Clone(rs.hosts)
		rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
		if len(out) > n {
			out = out[:n]
		}
	case kindHitPrefix:
		if len(rs.nets) == 0 {
			return nil
		}
		seen := map[netip.Addr]bool{}
		for tries := 0; len(out) < n && tries < 4*n; tries++ {
			a := rs.inside(rs.nets[rng.IntN(len(rs.nets))])
			if rs.family == 6 && !v6Base.Contains(a) || rs.isHost(a) || seen[a] {
				continue
			}
			seen[a] = true
			out = append(out, a)
		}
	case kindMiss:
		seen := map[netip.Addr]bool{}
		for tries := 0; len(out) < n && tries < 20*n; tries++ {
			a := rs.randAddr()
			if rs.covered(a) || seen[a] {
				continue
			}
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}
