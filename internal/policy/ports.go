package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Ports is the transport part of a rule: a protocol and, for a protocol with
// ports, an inclusive range of destination ports. The zero value matches
// every packet; Proto set and Lo zero match every port of that protocol.
type Ports struct {
	Proto  uint8
	Lo, Hi uint16
}

// IP protocol numbers of the protocols that rules name.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoGRE    uint8 = 47
	ProtoESP    uint8 = 50
	ProtoAH     uint8 = 51
	ProtoICMPv6 uint8 = 58
	ProtoSCTP   uint8 = 132
)

// protocols are the protocols a rule can name, in the order errors list them.
var protocols = []struct {
	name  string
	proto uint8
	ports bool // whose header starts with a source and a destination port
}{
	{"tcp", ProtoTCP, true},
	{"udp", ProtoUDP, true},
	{"sctp", ProtoSCTP, true},
	{"icmp", ProtoICMP, false},
	{"icmpv6", ProtoICMPv6, false},
	{"gre", ProtoGRE, false},
	{"esp", ProtoESP, false},
	{"ah", ProtoAH, false},
}

// protoNumber is how a protocol without a name is written: proto/47.
const protoNumber = "proto"

// ProtoName returns a protocol's name, or proto/N for one without a name.
func ProtoName(proto uint8) string {
	if name, ok := NamedProto(proto); ok {
		return name
	}
	return fmt.Sprintf("%s/%d", protoNumber, proto)
}

// NamedProto returns the name rules give a protocol, if they give it one.
func NamedProto(proto uint8) (string, bool) {
	for _, p := range protocols {
		if p.proto == proto {
			return p.name, true
		}
	}
	return "", false
}

// HasPorts says whether packets of a protocol carry ports that rules match:
// TCP, UDP and SCTP, whose headers begin with the two ports.
func HasPorts(proto uint8) bool {
	for _, p := range protocols {
		if p.proto == proto {
			return p.ports
		}
	}
	return false
}

// Any says whether p matches every packet: a rule of the address alone.
func (p Ports) Any() bool { return p == Ports{} }

// HasRange says whether p names ports, one or a range.
func (p Ports) HasRange() bool { return p.Lo != 0 }

// Width is the number of ports p names; 0 for every port.
func (p Ports) Width() int {
	if !p.HasRange() {
		return 0
	}
	return int(p.Hi) - int(p.Lo) + 1
}

// Matches says whether a packet of proto to port matches p. Port 0 stands
// for a packet whose port is not known (a non-first fragment, a protocol
// without ports): only rules that name no port match it.
func (p Ports) Matches(proto uint8, port uint16) bool {
	switch {
	case p.Proto == 0:
		return true
	case p.Proto != proto:
		return false
	case !p.HasRange():
		return true
	}
	return port != 0 && p.Lo <= port && port <= p.Hi
}

// rank orders rules of one prefix by how specific their ports are: a port
// rule beats a protocol rule beats an address-only rule, and of two port
// rules the narrower wins. A higher rank wins.
func (p Ports) rank() int {
	switch {
	case p.Proto == 0:
		return 0
	case !p.HasRange():
		return 1
	}
	return 1 + 1<<17 - p.Width()
}

// String returns p in the form rules take after the colon: tcp/443,
// udp/8000-8999, icmp, proto/47; "" for every packet.
func (p Ports) String() string {
	switch {
	case p.Proto == 0:
		return ""
	case !p.HasRange():
		return ProtoName(p.Proto)
	case p.Lo == p.Hi:
		return fmt.Sprintf("%s/%d", ProtoName(p.Proto), p.Lo)
	}
	return fmt.Sprintf("%s/%d-%d", ProtoName(p.Proto), p.Lo, p.Hi)
}

// overlapsPartly says whether two port ranges of one protocol overlap without
// one containing the other, which would leave neither the narrower.
func overlapsPartly(a, b Ports) bool {
	if !a.HasRange() || !b.HasRange() || a.Proto != b.Proto {
		return false
	}
	if a.Hi < b.Lo || b.Hi < a.Lo {
		return false
	}
	inside := func(x, y Ports) bool { return y.Lo <= x.Lo && x.Hi <= y.Hi }
	return !inside(a, b) && !inside(b, a)
}

// Match is what a rule matches: a prefix or a name, and the ports. Its
// String is the rule's canonical form, which every command reads back.
type Match struct {
	Prefix netip.Prefix
	Ports  Ports
	// Name, when set, is the target instead of Prefix, which is then the
	// zero Prefix.
	Name Name
}

func (m Match) String() string {
	if m.Name != "" {
		if m.Ports.Any() {
			return m.Name.String()
		}
		return m.Name.String() + ":" + m.Ports.String()
	}
	if m.Ports.Any() {
		return m.Prefix.String()
	}
	if m.Prefix.Addr().Is6() {
		return "[" + m.Prefix.String() + "]:" + m.Ports.String()
	}
	return m.Prefix.String() + ":" + m.Ports.String()
}

// anyTarget is the target that stands for every address of both families.
const anyTarget = "any"

var anyPrefixes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

// ruleHelp says what a rule looks like, for errors about one.
const ruleHelp = "a rule is ADDR[:PORTS] or NAME[:PORTS], e.g. 192.0.2.1, 192.0.2.0/24:tcp/443, [2001:db8::1]:443, any:udp/53, 10.0.0.0/8:icmp, example.com:443, *.example.com:tcp/443"

// ParseRule reads one rule token, TARGET[:PORTS] (see ruleHelp), into what it
// matches. One token can stand for several rules: ADDR:PORT is a TCP and a
// UDP rule, any is 0.0.0.0/0 and ::/0. An IPv6 address with ports takes
// brackets: without them, 2001:db8::1:443 is an address. A target that is
// not an address, a CIDR or any is a name (see ParseName) if it looks like
// one (see looksLikeName); otherwise its error is the address's, so that
// 192.0.2.300 is still said to be a bad address.
func ParseRule(s string) ([]Match, error) {
	target, ports, hasPorts, err := splitRule(s)
	if err != nil {
		return nil, err
	}
	var prefixes []netip.Prefix
	var name Name
	if equalFoldASCII(target, anyTarget) {
		prefixes = anyPrefixes
	} else if prefix, err := ParsePrefix(target); err == nil {
		prefixes = []netip.Prefix{prefix}
	} else if !hasPorts && strings.Contains(s, ":") {
		return nil, colonError(s, err)
	} else if !looksLikeName(target) {
		return nil, err
	} else if name, err = ParseName(target); err != nil {
		return nil, err
	}
	var all []Ports
	if hasPorts {
		if all, err = parsePorts(s, ports); err != nil {
			return nil, err
		}
	} else {
		all = []Ports{{}}
	}
	var out []Match
	if name != "" {
		// A name stands for addresses of both families, so icmp and
		// icmpv6 are both its own: each judges the packets of its family.
		for _, p := range all {
			out = append(out, Match{Name: name, Ports: p})
		}
		return out, nil
	}
	for _, prefix := range prefixes {
		for _, p := range all {
			if ok, err := familyFits(s, prefix, p, len(prefixes) > 1); err != nil {
				return nil, err
			} else if ok {
				out = append(out, Match{Prefix: prefix, Ports: p})
			}
		}
	}
	return out, nil
}

// splitRule cuts a rule token into its target and its ports.
func splitRule(s string) (target, ports string, hasPorts bool, err error) {
	if rest, ok := strings.CutPrefix(s, "["); ok {
		inside, after, ok := strings.Cut(rest, "]")
		if !ok {
			return "", "", false, fmt.Errorf("%s has no closing bracket: write [2001:db8::1]:tcp/443", quote(s))
		}
		if inside == "" {
			return "", "", false, fmt.Errorf("%s has no address in its brackets: write [2001:db8::1]:tcp/443", quote(s))
		}
		if !strings.Contains(inside, ":") {
			return "", "", false, fmt.Errorf("%s: brackets are for IPv6 addresses: write %s", quote(s), quote(inside+after))
		}
		if after == "" {
			return inside, "", false, nil
		}
		ports, ok := strings.CutPrefix(after, ":")
		if !ok {
			return "", "", false, fmt.Errorf("%s has %s after the bracket: ports follow a colon, as in [2001:db8::1]:tcp/443", quote(s), quote(after))
		}
		return inside, ports, true, nil
	}
	// Two colons or more make an IPv6 address, which takes no ports
	// without brackets.
	if strings.Count(s, ":") != 1 {
		return s, "", false, nil
	}
	target, ports, _ = strings.Cut(s, ":")
	if target == "" {
		return "", "", false, fmt.Errorf("%s has no address before the colon: %s", quote(s), ruleHelp)
	}
	return target, ports, true, nil
}

// colonError says what is wrong with a token of several colons that is not
// an IPv6 address: a rule with a colon too many, or an IPv6 address with
// ports that lacks its brackets. err is why it is not an address.
func colonError(s string, err error) error {
	first, _, _ := strings.Cut(s, ":")
	if equalFoldASCII(first, anyTarget) || isPrefix(first) {
		return fmt.Errorf("%s has more than one colon: one goes between the address and the ports, as in 192.0.2.1:tcp/443", quote(s))
	}
	if _, nerr := ParseName(first); nerr == nil && looksLikeName(first) {
		return fmt.Errorf("%s has more than one colon: one goes between the name and the ports, as in example.com:tcp/443", quote(s))
	}
	i := strings.LastIndex(s, ":")
	if addr, ports := s[:i], s[i+1:]; isPrefix(addr) {
		if _, perr := parsePorts(s, ports); perr == nil {
			return fmt.Errorf("%s: an IPv6 address with ports goes in brackets: write [%s]:%s", quote(s), addr, ports)
		}
	}
	return err
}

func isPrefix(s string) bool {
	_, err := ParsePrefix(s)
	return err == nil
}

// parsePorts reads what follows a rule's colon: PORT or LOW-HIGH (TCP and
// UDP), PROTO/PORT, PROTO/LOW-HIGH, PROTO, or proto/N.
func parsePorts(rule, s string) ([]Ports, error) {
	if s == "" {
		return nil, fmt.Errorf("%s has nothing after the colon: give a port (443), a range (8000-8999), a protocol (tcp) or both (tcp/443)", quote(rule))
	}
	name, rng, slash := strings.Cut(s, "/")
	if slash && name == "" {
		return nil, fmt.Errorf("%s names no protocol before the slash: write tcp/PORT, udp/PORT or sctp/PORT, or PORT alone for TCP and UDP", quote(rule))
	}
	if !slash && (startsWithDigit(s) || s[0] == '-') {
		lo, hi, err := parseRange(rule, s)
		if err != nil {
			return nil, err
		}
		return []Ports{{ProtoTCP, lo, hi}, {ProtoUDP, lo, hi}}, nil
	}
	if equalFoldASCII(name, protoNumber) {
		if !slash {
			return nil, fmt.Errorf("%s names no protocol number: write proto/47", quote(rule))
		}
		n, err := strconv.ParseUint(rng, 10, 8)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%s: %s is not a protocol number: use 1 to 255", quote(rule), quote(rng))
		}
		if leadingZero(rng) {
			return nil, fmt.Errorf("%s: %s is not a protocol number: write %s/%d, without the leading zero", quote(rule), quote(rng), protoNumber, n)
		}
		return []Ports{{Proto: uint8(n)}}, nil
	}
	proto, withPorts, ok := lookupProto(name)
	if !ok && slash && portText(name) {
		if p, _, ok := lookupProto(rng); ok {
			return nil, fmt.Errorf("%s: the protocol comes first: write %s/%s", quote(rule), ProtoName(p), name)
		}
	}
	if !ok {
		return nil, fmt.Errorf("%s: %s is not a protocol: use %s, or proto/N for another one", quote(rule), quote(name), protoNames())
	}
	if !slash {
		return []Ports{{Proto: proto}}, nil
	}
	if !withPorts {
		return nil, fmt.Errorf("%s: %s has no ports: write %s alone", quote(rule), ProtoName(proto), ProtoName(proto))
	}
	if rng == "" {
		n := ProtoName(proto)
		return nil, fmt.Errorf(`%s: "" is not a port: write one after %s/ (%s/443), a range (%s/8000-8999), or %s alone for every port`, quote(rule), n, n, n, n)
	}
	lo, hi, err := parseRange(rule, rng)
	if err != nil {
		return nil, err
	}
	return []Ports{{proto, lo, hi}}, nil
}

func startsWithDigit(s string) bool { return s != "" && s[0] >= '0' && s[0] <= '9' }

// portText says whether s reads as a port or a range (digits, a dash): the
// suggestion that echoes it back unquoted is made only for such text, so
// that an error stays one line whatever the rule held.
func portText(s string) bool {
	return startsWithDigit(s) && strings.Trim(s, "0123456789-") == ""
}

func lookupProto(name string) (proto uint8, ports, ok bool) {
	for _, p := range protocols {
		if equalFoldASCII(p.name, name) {
			return p.proto, p.ports, true
		}
	}
	return 0, false, false
}

// equalFoldASCII is strings.EqualFold for names that are ASCII: Unicode's
// folding would take the long s (ſ) for an s, and sctp from ſctp.
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func protoNames() string {
	names := make([]string, len(protocols))
	for i, p := range protocols {
		names[i] = p.name
	}
	return strings.Join(names, ", ")
}

// parseRange reads PORT or LOW-HIGH, each from 1 to 65535, LOW at most HIGH.
func parseRange(rule, s string) (lo, hi uint16, err error) {
	a, b, isRange := strings.Cut(s, "-")
	switch {
	case isRange && (a == "" || b == ""):
		return 0, 0, fmt.Errorf(`%s: "" is not a port: the range %s needs both ends, as in 8000-8999`, quote(rule), quote(s))
	case strings.Contains(b, "-"):
		return 0, 0, fmt.Errorf("%s: %s is not a port range: write LOW-HIGH, as in 8000-8999", quote(rule), quote(s))
	}
	if lo, err = parsePort(rule, a); err != nil {
		return 0, 0, err
	}
	if !isRange {
		return lo, lo, nil
	}
	if hi, err = parsePort(rule, b); err != nil {
		return 0, 0, err
	}
	if hi < lo {
		return 0, 0, fmt.Errorf("%s: range %s is reversed: write %d-%d", quote(rule), quote(s), hi, lo)
	}
	return lo, hi, nil
}

func parsePort(rule, s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 0 || n > 65535 {
		return 0, fmt.Errorf("%s: %s is not a port: use a number from 1 to 65535", quote(rule), quote(s))
	}
	if leadingZero(s) {
		return 0, fmt.Errorf("%s: %s is not a port: write %d, without the leading zero", quote(rule), quote(s), n)
	}
	return uint16(n), nil
}

// leadingZero says whether a number is written with a leading zero, which
// some tools read as octal: refused rather than guessed at.
func leadingZero(s string) bool { return len(s) > 1 && s[0] == '0' }

// familyFits says whether a protocol can be used with a prefix's family:
// ICMP is IPv4's and ICMPv6 IPv6's. For any, which stands for both
// families, a rule of the other family is left out; for an address it is an
// error.
func familyFits(rule string, prefix netip.Prefix, p Ports, anyFamily bool) (bool, error) {
	var other string
	switch {
	case p.Proto == ProtoICMP && prefix.Addr().Is6():
		other = "icmp is IPv4's: write icmpv6 for IPv6"
	case p.Proto == ProtoICMPv6 && prefix.Addr().Is4():
		other = "icmpv6 is IPv6's: write icmp for IPv4"
	default:
		return true, nil
	}
	if anyFamily {
		return false, nil
	}
	return false, fmt.Errorf("%s: %s", quote(rule), other)
}
