// Package ruleset generates the rule sets that cgwall's benchmarks time:
// host-only IPv4, a public-blocklist IPv4 mix, and IPv6, each at any size and
// the same for a given size every time, the same mix with port rules
// (ports.go), and destinations that hit or miss them. BenchmarkEgress and the
// bench harness share it, so that warm and cold figures are for the very same
// rules. Nothing is ever sent to these addresses: they are map keys and
// crafted packets.
//
// It does not import internal/policy, whose tests use it: a Rule and a
// Packet here are the policy's in plain fields.
package ruleset

import (
	"math/rand/v2"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"
)

// Set is one generated rule set and what is needed to draw destinations.
type Set struct {
	Name     string
	Family   int            // 4 or 6
	Prefixes []netip.Prefix // the distinct prefixes of the rules
	Hosts    []netip.Addr   // the prefixes that are hosts (/32, /128)
	Nets     []netip.Prefix // the prefixes shorter than a host
	// Rules are every rule of the set: one that blocks each prefix in the
	// address-only sets, and in the ports set its address and port rules.
	Rules []Rule

	seen    map[netip.Prefix]struct{}
	lengths []int // the distinct prefix lengths in the set, shortest first
	rng     *rand.Rand
	sites   map[netip.Prefix]*site // the ports set: the prefixes that have port rules
}

// Rule is one rule: policy.Rule's prefix, ports and action in plain fields.
type Rule struct {
	Prefix netip.Prefix
	Proto  uint8  // 0: every packet (an address-only rule)
	Lo, Hi uint16 // 0: every port of Proto
	Allow  bool   // else it blocks
}

// Packet is what a destination is judged by, as policy.Packet: the address,
// the protocol and the destination port (0 for none).
type Packet struct {
	Addr  netip.Addr
	Proto uint8
	Port  uint16
}

// addrPacket is what a destination of an address-only kind is sent: UDP to
// port 53, as the harness always sent.
func addrPacket(a netip.Addr) Packet { return Packet{a, unix.IPPROTO_UDP, 53} }

// Kind is a family of rule sets, built at several sizes.
type Kind struct {
	Name  string
	Build func(n int) *Set
}

// Kinds are the address-only families of rule sets. PortsKind is not among
// them: BenchmarkEgress loads the Prefixes of these as blocking rules.
var Kinds = []Kind{
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
	rs.Rules = make([]Rule, 0, n)
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
	slices.Sort(rs.lengths)
	return rs
}

// Add adds a rule that blocks p, unless the set has a rule of that prefix
// already, and says whether it did.
func (rs *Set) Add(p netip.Prefix) bool {
	if !rs.addPrefix(p) {
		return false
	}
	rs.Rules = append(rs.Rules, Rule{Prefix: p})
	return true
}

// addPrefix adds a prefix unless it is there already, and says whether it
// did.
func (rs *Set) addPrefix(p netip.Prefix) bool {
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

// DestinationKinds lists the kinds of destination of every set; the ports
// set has PortKinds too.
var DestinationKinds = []string{Hit, HitPrefix, Miss}

// Kinds returns the kinds of destination the set can have.
func (rs *Set) Kinds() []string {
	if rs.sites == nil {
		return DestinationKinds
	}
	return slices.Concat(DestinationKinds, PortKinds)
}

// Destinations returns the addresses of Packets(kind, n).
func (rs *Set) Destinations(kind string, n int) []netip.Addr {
	var out []netip.Addr
	for _, p := range rs.Packets(kind, n) {
		out = append(out, p.Addr)
	}
	return out
}

// Packets returns up to n distinct destinations of a kind, in random order,
// drawn with a seed of their own so that the set's rules are not disturbed.
// It returns fewer when the set has fewer (a set of 1,000 rules has about
// 850 host rules), and none for hit-prefix in a set without prefix rules.
// In the ports set, hit and hit-prefix are in prefixes without port rules.
// The address-only kinds are UDP to port 53.
func (rs *Set) Packets(kind string, n int) []Packet {
	rng := rand.New(rand.NewPCG(uint64(len(rs.Prefixes)), uint64(rs.Family)<<8|uint64(len(kind))))
	saved := rs.rng
	rs.rng = rng
	defer func() { rs.rng = saved }()

	var out []Packet
	switch kind {
	case Hit:
		hosts := slices.DeleteFunc(slices.Clone(rs.Hosts), func(a netip.Addr) bool { return rs.sites[netip.PrefixFrom(a, a.BitLen())] != nil })
		rng.Shuffle(len(hosts), func(i, j int) { hosts[i], hosts[j] = hosts[j], hosts[i] })
		for _, a := range hosts[:min(n, len(hosts))] {
			out = append(out, addrPacket(a))
		}
	case HitPrefix:
		if len(rs.Nets) == 0 {
			return nil
		}
		seen := map[netip.Addr]bool{}
		for tries := 0; len(out) < n && tries < 4*n; tries++ {
			a := rs.Inside(rs.Nets[rng.IntN(len(rs.Nets))])
			if rs.Family == 6 && !v6Base.Contains(a) || rs.IsHost(a) || seen[a] || rs.sites != nil && rs.sites[rs.longest(a)] != nil {
				continue
			}
			seen[a] = true
			out = append(out, addrPacket(a))
		}
	case Miss:
		seen := map[netip.Addr]bool{}
		for tries := 0; len(out) < n && tries < 20*n; tries++ {
			a := rs.randAddr()
			if rs.Covered(a) || seen[a] {
				continue
			}
			seen[a] = true
			out = append(out, addrPacket(a))
		}
	default:
		out = rs.portPackets(kind, n)
	}
	return out
}
