package ruleset

import (
	"math/rand/v2"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"
)

// The ports set: the ipv4-mixed set's prefixes, where 20% of the rules
// carry ports, as an allowlist of services inside blocked addresses would
// (block 192.0.2.10, allow 192.0.2.10:tcp/443) and a blocklist of services
// would (block 198.51.100.0/24:tcp/22).

// Port kinds of destination, in the ports set only.
const (
	// Port matches a port or protocol rule of the longest prefix that
	// contains it: the port rules decide.
	Port = "port"
	// OtherPort is in a prefix with port rules and an address rule, to a port
	// that none of them names: the address rule decides.
	OtherPort = "other-port"
	// Through is in a prefix with port rules and no address rule, to a port
	// that none of them names: a shorter prefix or the default decides.
	Through = "through"
)

// PortKinds lists the port kinds of destination.
var PortKinds = []string{Port, OtherPort, Through}

// PortsKind is the family of the ports set.
var PortsKind = Kind{"ports", Ports}

// site is a prefix with port rules.
type site struct {
	addr  bool   // it has an address rule too
	ports []Rule // its port and protocol rules
}

// portRange is a protocol and an inclusive range of ports; 0 for every port.
type portRange struct {
	proto  uint8
	lo, hi uint16
}

// profiles are the port rules a prefix with ports gets, and how often (out
// of 20): mostly one TCP service, some DNS, a few ranges and protocol-only
// rules. No single port is inside the range (8080 would be): rules of
// nested prefixes then either name the same ports or none in common, and
// nftables, whose concatenated interval sets refuse overlapping elements,
// can hold them once the inner repeats are left out.
var profiles = []struct {
	weight int
	ports  []portRange
}{
	{8, []portRange{{unix.IPPROTO_TCP, 443, 443}}},
	{3, []portRange{{unix.IPPROTO_TCP, 80, 80}, {unix.IPPROTO_TCP, 443, 443}}},
	{2, []portRange{{unix.IPPROTO_TCP, 22, 22}}},
	{2, []portRange{{unix.IPPROTO_TCP, 25, 25}}},
	{2, []portRange{{unix.IPPROTO_UDP, 53, 53}}},
	{2, []portRange{{unix.IPPROTO_TCP, 8000, 8999}}},
	{1, []portRange{{proto: unix.IPPROTO_ICMP}}},
}

// Ports is the ports set of n rules. It goes through the ipv4-mixed set of n
// in order (/8s, /16s, /24s, /32s) and gives every fifth prefix port rules
// (a profile), half of those an address rule too, and every other prefix an
// address rule, until it has n rules: n/5 port rules and the rest address
// rules. It uses about 89% of the mixed set's prefixes: all of its shorter
// ones, and fewer /32s.
//
// Address rules block. The port rules of a prefix with an address rule allow
// (the exceptions to the block); those of a prefix without one block. A
// prefix that contains another gets no address rule, so that allowing rules
// are never shorter than a blocking one inside them: with that, nftables'
// order (allowing sets, then blocking ones) decides as cgwall does, and the
// bench harness can load the very same rules into both.
func Ports(n int) *Set {
	base := Mixed4(n)
	rs := &Set{
		Name:    "ports",
		Family:  4,
		lengths: base.lengths,
		rng:     rand.New(rand.NewPCG(uint64(n), 10)),
		seen:    make(map[netip.Prefix]struct{}, n),
		sites:   map[netip.Prefix]*site{},
	}
	outer := base.outer()
	portQuota, addrQuota := n/5, n-n/5
	ports, addrs := 0, 0
	for i, p := range base.Prefixes {
		if ports+addrs == n {
			break
		}
		if i%5 == 0 && ports < portQuota {
			withAddr := i/5%2 == 0 && !outer[p] && addrs < addrQuota
			profile := rs.profile()
			profile = profile[:min(len(profile), portQuota-ports)]
			rs.addSite(p, withAddr, profile)
			ports += len(profile)
			if withAddr {
				addrs++
			}
			continue
		}
		if addrs < addrQuota {
			rs.Add(p)
			addrs++
		}
	}
	return rs
}

func (rs *Set) profile() []portRange {
	w := rs.rng.IntN(20)
	for _, p := range profiles {
		if w < p.weight {
			return p.ports
		}
		w -= p.weight
	}
	panic("ruleset: profile weights do not add up to 20")
}

func (rs *Set) addSite(p netip.Prefix, withAddr bool, ports []portRange) {
	rs.addPrefix(p)
	s := &site{addr: withAddr}
	if withAddr {
		rs.Rules = append(rs.Rules, Rule{Prefix: p})
	}
	for _, pr := range ports {
		s.ports = append(s.ports, Rule{Prefix: p, Proto: pr.proto, Lo: pr.lo, Hi: pr.hi, Allow: withAddr})
	}
	rs.Rules = append(rs.Rules, s.ports...)
	rs.sites[p] = s
}

// outer returns the prefixes of the set that contain another one.
func (rs *Set) outer() map[netip.Prefix]bool {
	out := map[netip.Prefix]bool{}
	for _, p := range rs.Prefixes {
		for _, bits := range rs.lengths {
			if q := netip.PrefixFrom(p.Addr(), bits).Masked(); bits < p.Bits() && rs.has(q) {
				out[q] = true
			}
		}
	}
	return out
}

func (rs *Set) has(p netip.Prefix) bool {
	_, ok := rs.seen[p]
	return ok
}

// longest returns the longest prefix of the set that contains a, or the
// zero Prefix.
func (rs *Set) longest(a netip.Addr) netip.Prefix {
	for _, bits := range slices.Backward(rs.lengths) {
		if p := netip.PrefixFrom(a, bits).Masked(); rs.has(p) {
			return p
		}
	}
	return netip.Prefix{}
}

// RulesFor returns the rules of every prefix of the set that contains a:
// all the rules that can match a packet to a.
func (rs *Set) RulesFor(a netip.Addr) []Rule {
	var out []Rule
	for _, bits := range rs.lengths {
		p := netip.PrefixFrom(a, bits).Masked()
		if !rs.has(p) {
			continue
		}
		s := rs.sites[p]
		if s == nil {
			out = append(out, Rule{Prefix: p})
			continue
		}
		if s.addr {
			out = append(out, Rule{Prefix: p})
		}
		out = append(out, s.ports...)
	}
	return out
}

// portPackets draws the packets of a port kind: in a prefix with port rules
// that no longer prefix of the set is inside, to a port its rules name
// (Port) or to one they do not (OtherPort, Through).
func (rs *Set) portPackets(kind string, n int) []Packet {
	var sites []netip.Prefix
	for _, p := range rs.Prefixes {
		if s := rs.sites[p]; s != nil && (kind == Port || s.addr == (kind == OtherPort)) {
			sites = append(sites, p)
		}
	}
	if len(sites) == 0 {
		return nil
	}
	var out []Packet
	seen := map[Packet]bool{}
	for tries := 0; len(out) < n && tries < 4*n; tries++ {
		p := sites[rs.rng.IntN(len(sites))]
		a := rs.Inside(p)
		if rs.longest(a) != p {
			continue
		}
		pkt := rs.sitePacket(a, rs.sites[p], kind == Port)
		if seen[pkt] {
			continue
		}
		seen[pkt] = true
		out = append(out, pkt)
	}
	return out
}

// sitePacket is a packet to a in s to a port that one of s's rules names
// (match), or of the first rule's protocol (TCP if it has no ports) to a port
// that none names.
func (rs *Set) sitePacket(a netip.Addr, s *site, match bool) Packet {
	if match {
		r := s.ports[rs.rng.IntN(len(s.ports))]
		if r.Lo == 0 {
			return Packet{a, r.Proto, 0}
		}
		return Packet{a, r.Proto, r.Lo + uint16(rs.rng.IntN(int(r.Hi-r.Lo)+1))}
	}
	proto := s.ports[0].Proto
	if s.ports[0].Lo == 0 {
		proto = unix.IPPROTO_TCP
	}
	for {
		port := uint16(1 + rs.rng.IntN(65535))
		if !slices.ContainsFunc(s.ports, func(r Rule) bool { return r.Proto == proto && r.Lo <= port && port <= r.Hi }) {
			return Packet{a, proto, port}
		}
	}
}
