package policy

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
)

// TestParseRule reads every form of the rule grammar (docs/policy.md) and
// checks the rules each stands for, in their canonical form.
func TestParseRule(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		// ADDR: every protocol and port.
		{"192.0.2.1", []string{"192.0.2.1/32"}},
		{"198.51.100.0/24", []string{"198.51.100.0/24"}},
		{"2001:db8::1", []string{"2001:db8::1/128"}},
		{"[2001:db8::1]", []string{"2001:db8::1/128"}},
		{"::ffff:192.0.2.0/120", []string{"192.0.2.0/24"}},
		// ADDR:PORT and ADDR:LOW-HIGH: TCP and UDP.
		{"192.0.2.1:443", []string{"192.0.2.1/32:tcp/443", "192.0.2.1/32:udp/443"}},
		{"192.0.2.1:8000-8999", []string{"192.0.2.1/32:tcp/8000-8999", "192.0.2.1/32:udp/8000-8999"}},
		{"192.0.2.1:1-65535", []string{"192.0.2.1/32:tcp/1-65535", "192.0.2.1/32:udp/1-65535"}},
		{"[2001:db8::1]:443", []string{"[2001:db8::1/128]:tcp/443", "[2001:db8::1/128]:udp/443"}},
		// ADDR:PROTO/PORT and ADDR:PROTO/LOW-HIGH: one protocol.
		{"192.0.2.0/24:tcp/443", []string{"192.0.2.0/24:tcp/443"}},
		{"[2001:db8::1]:tcp/443", []string{"[2001:db8::1/128]:tcp/443"}},
		{"198.51.100.0/24:tcp/8000-8999", []string{"198.51.100.0/24:tcp/8000-8999"}},
		{"192.0.2.1:udp/1000-2000", []string{"192.0.2.1/32:udp/1000-2000"}},
		{"192.0.2.1:sctp/9", []string{"192.0.2.1/32:sctp/9"}},
		{"[2001:db8::/32]:udp/53", []string{"[2001:db8::/32]:udp/53"}},
		{"192.0.2.1:tcp/443-443", []string{"192.0.2.1/32:tcp/443"}},
		{"192.0.2.1:tcp/65535", []string{"192.0.2.1/32:tcp/65535"}},
		// ADDR:PROTO: one protocol, every port.
		{"192.0.2.1:tcp", []string{"192.0.2.1/32:tcp"}},
		{"192.0.2.1:udp", []string{"192.0.2.1/32:udp"}},
		{"192.0.2.1:sctp", []string{"192.0.2.1/32:sctp"}},
		{"10.0.0.0/8:icmp", []string{"10.0.0.0/8:icmp"}},
		{"[2001:db8::1]:icmpv6", []string{"[2001:db8::1/128]:icmpv6"}},
		{"192.0.2.1:gre", []string{"192.0.2.1/32:gre"}},
		// proto/N: by number; a name where the protocol has one.
		{"192.0.2.1:proto/47", []string{"192.0.2.1/32:gre"}},
		{"192.0.2.1:proto/6", []string{"192.0.2.1/32:tcp"}},
		{"192.0.2.1:proto/1", []string{"192.0.2.1/32:icmp"}},
		{"192.0.2.1:proto/200", []string{"192.0.2.1/32:proto/200"}},
		{"[2001:db8::1]:proto/255", []string{"[2001:db8::1/128]:proto/255"}},
		{"[2001:db8::1]:proto/58", []string{"[2001:db8::1/128]:icmpv6"}},
		// any: both families; icmp and icmpv6 only in their own.
		{"any", []string{"0.0.0.0/0", "::/0"}},
		{"any:tcp/22", []string{"0.0.0.0/0:tcp/22", "[::/0]:tcp/22"}},
		{"any:udp/53", []string{"0.0.0.0/0:udp/53", "[::/0]:udp/53"}},
		{"any:53", []string{"0.0.0.0/0:tcp/53", "0.0.0.0/0:udp/53", "[::/0]:tcp/53", "[::/0]:udp/53"}},
		{"any:icmp", []string{"0.0.0.0/0:icmp"}},
		{"any:icmpv6", []string{"[::/0]:icmpv6"}},
		{"any:proto/1", []string{"0.0.0.0/0:icmp"}},
		{"any:gre", []string{"0.0.0.0/0:gre", "[::/0]:gre"}},
		// Protocol names and any in any case; the canonical form is lower case.
		{"192.0.2.1:TCP/443", []string{"192.0.2.1/32:tcp/443"}},
		{"192.0.2.1:Udp/53", []string{"192.0.2.1/32:udp/53"}},
		{"192.0.2.1:ICMP", []string{"192.0.2.1/32:icmp"}},
		{"192.0.2.1:PROTO/47", []string{"192.0.2.1/32:gre"}},
		{"ANY:SCTP", []string{"0.0.0.0/0:sctp", "[::/0]:sctp"}},
		// Without brackets, a last group of digits is part of the IPv6
		// address.
		{"2001:db8::1:443", []string{"2001:db8::1:443/128"}},
		// IPv4-mapped, with ports: the IPv4 rule.
		{"[::ffff:192.0.2.1]:tcp/443", []string{"192.0.2.1/32:tcp/443"}},
		// The canonical forms read back.
		{"0.0.0.0/0:tcp/22", []string{"0.0.0.0/0:tcp/22"}},
		{"[::/0]:tcp/22", []string{"[::/0]:tcp/22"}},
		{"[2001:db8::1/128]:tcp/443", []string{"[2001:db8::1/128]:tcp/443"}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseRule(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if s := matchStrings(got); !slices.Equal(s, tc.want) {
				t.Errorf("ParseRule(%q) = %q; want %q", tc.in, s, tc.want)
			}
			for _, m := range got {
				checkRoundTrip(t, m)
			}
		})
	}
}

// TestParseRuleFields checks what the forms mean, field by field.
func TestParseRuleFields(t *testing.T) {
	pfx := netip.MustParsePrefix
	for in, want := range map[string][]Match{
		"192.0.2.1":             {{Prefix: pfx("192.0.2.1/32"), Ports: Ports{}}},
		"192.0.2.1:443":         {{Prefix: pfx("192.0.2.1/32"), Ports: Ports{ProtoTCP, 443, 443}}, {Prefix: pfx("192.0.2.1/32"), Ports: Ports{ProtoUDP, 443, 443}}},
		"192.0.2.1:sctp/10-20":  {{Prefix: pfx("192.0.2.1/32"), Ports: Ports{ProtoSCTP, 10, 20}}},
		"192.0.2.1:tcp":         {{Prefix: pfx("192.0.2.1/32"), Ports: Ports{Proto: ProtoTCP}}},
		"192.0.2.1:icmp":        {{Prefix: pfx("192.0.2.1/32"), Ports: Ports{Proto: ProtoICMP}}},
		"[2001:db8::1]:icmpv6":  {{Prefix: pfx("2001:db8::1/128"), Ports: Ports{Proto: ProtoICMPv6}}},
		"192.0.2.1:proto/47":    {{Prefix: pfx("192.0.2.1/32"), Ports: Ports{Proto: ProtoGRE}}},
		"192.0.2.1:proto/254":   {{Prefix: pfx("192.0.2.1/32"), Ports: Ports{Proto: 254}}},
		"any:icmp":              {{Prefix: pfx("0.0.0.0/0"), Ports: Ports{Proto: ProtoICMP}}},
		"[2001:db8::/32]:udp/1": {{Prefix: pfx("2001:db8::/32"), Ports: Ports{ProtoUDP, 1, 1}}},
	} {
		got, err := ParseRule(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ParseRule(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
}

// TestParseRuleErrors is the table of bad rules: each error is one line,
// names the token and says what would be valid.
func TestParseRuleErrors(t *testing.T) {
	const (
		notPort  = `is not a port: use a number from 1 to 65535`
		notProto = `is not a protocol: use tcp, udp, sctp, icmp, icmpv6, gre, esp, ah, or proto/N for another one`
	)
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.1:0", `"192.0.2.1:0": "0" ` + notPort},
		{"192.0.2.1:tcp/0", `"192.0.2.1:tcp/0": "0" ` + notPort},
		{"192.0.2.1:65536", `"192.0.2.1:65536": "65536" ` + notPort},
		{"192.0.2.1:99999", `"192.0.2.1:99999": "99999" ` + notPort},
		{"192.0.2.1:udp/1-65536", `"192.0.2.1:udp/1-65536": "65536" ` + notPort},
		{"192.0.2.1:tcp/99999999999999999999", `"192.0.2.1:tcp/99999999999999999999": "99999999999999999999" ` + notPort},
		{"192.0.2.1:tcp/+5", `"192.0.2.1:tcp/+5": "+5" ` + notPort},
		{"192.0.2.1:tcp/ 443", `"192.0.2.1:tcp/ 443": " 443" ` + notPort},
		{"192.0.2.1:443-80", `"192.0.2.1:443-80": range "443-80" is reversed: write 80-443`},
		{"192.0.2.1:tcp/443-80", `"192.0.2.1:tcp/443-80": range "443-80" is reversed: write 80-443`},
		{"192.0.2.1:icmp/8", `"192.0.2.1:icmp/8": icmp has no ports: write icmp alone`},
		{"[2001:db8::1]:icmpv6/128", `"[2001:db8::1]:icmpv6/128": icmpv6 has no ports: write icmpv6 alone`},
		{"192.0.2.1:gre/1", `"192.0.2.1:gre/1": gre has no ports: write gre alone`},
		{"192.0.2.1:foo/1", `"192.0.2.1:foo/1": "foo" ` + notProto},
		{"192.0.2.1:foo", `"192.0.2.1:foo": "foo" ` + notProto},
		{"192.0.2.1:ſctp", `"192.0.2.1:ſctp": "ſctp" ` + notProto},
		{"192.0.2.1:tcp/", `"192.0.2.1:tcp/": "" is not a port: write one after tcp/ (tcp/443), a range (tcp/8000-8999), or tcp alone for every port`},
		{"192.0.2.1:sctp/", `"192.0.2.1:sctp/": "" is not a port: write one after sctp/ (sctp/443), a range (sctp/8000-8999), or sctp alone for every port`},
		{"192.0.2.1:/443", `"192.0.2.1:/443" names no protocol before the slash: write tcp/PORT, udp/PORT or sctp/PORT, or PORT alone for TCP and UDP`},
		{"192.0.2.1:443/tcp", `"192.0.2.1:443/tcp": the protocol comes first: write tcp/443`},
		{"192.0.2.1:80-90/udp", `"192.0.2.1:80-90/udp": the protocol comes first: write udp/80-90`},
		// Found by FuzzParsePrefix: the suggestion echoed the newline back.
		{"192.0.2.1:0\n/tcp", `"192.0.2.1:0\n/tcp": "0\n" ` + notProto},
		{"192.0.2.1:", `"192.0.2.1:" has nothing after the colon: give a port (443), a range (8000-8999), a protocol (tcp) or both (tcp/443)`},
		{"any:", `"any:" has nothing after the colon: give a port (443), a range (8000-8999), a protocol (tcp) or both (tcp/443)`},
		{"[2001:db8::1]:", `"[2001:db8::1]:" has nothing after the colon: give a port (443), a range (8000-8999), a protocol (tcp) or both (tcp/443)`},
		{":443", `":443" has no address before the colon: ` + ruleHelp},
		{"[2001:db8::1", `"[2001:db8::1" has no closing bracket: write [2001:db8::1]:tcp/443`},
		{"[]:443", `"[]:443" has no address in its brackets: write [2001:db8::1]:tcp/443`},
		{"[2001:db8::1]443", `"[2001:db8::1]443" has "443" after the bracket: ports follow a colon, as in [2001:db8::1]:tcp/443`},
		{"[192.0.2.1]:tcp", `"[192.0.2.1]:tcp": brackets are for IPv6 addresses: write "192.0.2.1:tcp"`},
		{"[any]:tcp/22", `"[any]:tcp/22": brackets are for IPv6 addresses: write "any:tcp/22"`},
		{"192.0.2.1:proto/0", `"192.0.2.1:proto/0": "0" is not a protocol number: use 1 to 255`},
		{"192.0.2.1:proto/256", `"192.0.2.1:proto/256": "256" is not a protocol number: use 1 to 255`},
		{"192.0.2.1:proto/tcp", `"192.0.2.1:proto/tcp": "tcp" is not a protocol number: use 1 to 255`},
		{"192.0.2.1:proto/06", `"192.0.2.1:proto/06": "06" is not a protocol number: write proto/6, without the leading zero`},
		{"192.0.2.1:proto", `"192.0.2.1:proto" names no protocol number: write proto/47`},
		{"192.0.2.1:tcp/1-", `"192.0.2.1:tcp/1-": "" is not a port: the range "1-" needs both ends, as in 8000-8999`},
		{"192.0.2.1:tcp/-5", `"192.0.2.1:tcp/-5": "" is not a port: the range "-5" needs both ends, as in 8000-8999`},
		{"192.0.2.1:-", `"192.0.2.1:-": "" is not a port: the range "-" needs both ends, as in 8000-8999`},
		{"192.0.2.1:-443", `"192.0.2.1:-443": "" is not a port: the range "-443" needs both ends, as in 8000-8999`},
		{"192.0.2.1:1-2-3", `"192.0.2.1:1-2-3": "1-2-3" is not a port range: write LOW-HIGH, as in 8000-8999`},
		{"192.0.2.1:tcp/0443", `"192.0.2.1:tcp/0443": "0443" is not a port: write 443, without the leading zero`},
		{"192.0.2.1:80-0443", `"192.0.2.1:80-0443": "0443" is not a port: write 443, without the leading zero`},
		{"[2001:db8::1]:icmp", `"[2001:db8::1]:icmp": icmp is IPv4's: write icmpv6 for IPv6`},
		{"[2001:db8::1]:proto/1", `"[2001:db8::1]:proto/1": icmp is IPv4's: write icmpv6 for IPv6`},
		{"192.0.2.1:icmpv6", `"192.0.2.1:icmpv6": icmpv6 is IPv6's: write icmp for IPv4`},
		{"192.0.2.1:tcp/80:81", `"192.0.2.1:tcp/80:81" has more than one colon: one goes between the address and the ports, as in 192.0.2.1:tcp/443`},
		{"any:tcp:22", `"any:tcp:22" has more than one colon: one goes between the address and the ports, as in 192.0.2.1:tcp/443`},
		{"2001:db8::1:tcp/443", `"2001:db8::1:tcp/443": an IPv6 address with ports goes in brackets: write [2001:db8::1]:tcp/443`},
		{"2001:db8::/32:udp/53", `"2001:db8::/32:udp/53": an IPv6 address with ports goes in brackets: write [2001:db8::/32]:udp/53`},
		{"192.0.2.300:tcp/443", `"192.0.2.300" is not a valid IPv4 or IPv6 address`},
		{"[2001:db8::1%eth0]:tcp", `"2001:db8::1%eth0" is not a valid IPv4 or IPv6 address: an IPv6 zone (%name) is not allowed in a rule`},
		{"192.0.2.0/24:" + strings.Repeat("9", 200), `"192.0.2.0/24:` + strings.Repeat("9", maxQuoted-13) + `"… (213 bytes): "` + strings.Repeat("9", maxQuoted) + `"… (200 bytes) ` + notPort},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseRule(tc.in)
			if err == nil {
				t.Fatalf("ParseRule(%q) = %v; want the error %s", tc.in, got, tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("ParseRule(%q):\n got %s\nwant %s", tc.in, err, tc.want)
			}
		})
	}
}

// TestRoundTrip checks that every rule's canonical form reads back as that
// rule alone, for prefixes of both families and every kind of ports.
func TestRoundTrip(t *testing.T) {
	prefixes := []string{"192.0.2.1/32", "0.0.0.0/0", "198.51.100.0/24", "2001:db8::1/128", "::/0", "2001:db8::/32", "2001:db8:ffff::/48"}
	ports := []Ports{{}, {Proto: ProtoTCP}, {Proto: ProtoGRE}, {Proto: 99}, {Proto: 255},
		{ProtoTCP, 1, 1}, {ProtoUDP, 53, 53}, {ProtoSCTP, 1, 65535}, {ProtoTCP, 8000, 8999}, {ProtoUDP, 65535, 65535}}
	for _, s := range prefixes {
		for _, p := range append(ports, Ports{Proto: ProtoICMP}, Ports{Proto: ProtoICMPv6}) {
			prefix := netip.MustParsePrefix(s)
			if (p.Proto == ProtoICMP && prefix.Addr().Is6()) || (p.Proto == ProtoICMPv6 && prefix.Addr().Is4()) {
				continue
			}
			checkRoundTrip(t, Match{Prefix: prefix, Ports: p})
		}
	}
}

// checkRoundTrip checks that m's canonical form reads back as m alone.
func checkRoundTrip(t *testing.T, m Match) {
	t.Helper()
	got, err := ParseRule(m.String())
	if err != nil || len(got) != 1 || got[0] != m {
		t.Errorf("ParseRule(%q) = %v, %v; want [%s] (%+v)", m.String(), got, err, m, m)
	}
}

func matchStrings(ms []Match) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.String()
	}
	return out
}

// TestDecidePorts checks the precedence of Decide: the longest prefix with a
// rule that matches the packet; at one prefix a port rule over a protocol
// rule over an address-only rule, the narrowest range first; the default
// where no rule matches.
func TestDecidePorts(t *testing.T) {
	type rule struct {
		dir    Direction
		action Action
		token  string
	}
	type pkt struct {
		dir   Direction
		addr  string
		proto uint8
		port  uint16
		want  Action
		by    string // the deciding rule, "" for the default
	}
	for _, tc := range []struct {
		name  string
		rules []rule
		def   [2]Action
		pkts  []pkt
	}{
		{
			name:  "a port allowed inside a blocked prefix",
			rules: []rule{{Egress, Block, "10.0.0.0/8"}, {Egress, Allow, "10.1.2.3:tcp/443"}},
			def:   [2]Action{Allow, Allow},
			pkts: []pkt{
				{Egress, "10.1.2.3", ProtoTCP, 443, Allow, "10.1.2.3/32:tcp/443"},
				// Its /32 has no rule for tcp/80: the /8 decides.
				{Egress, "10.1.2.3", ProtoTCP, 80, Block, "10.0.0.0/8"},
				{Egress, "10.1.2.3", ProtoUDP, 443, Block, "10.0.0.0/8"},
				{Egress, "10.1.2.3", ProtoICMP, 0, Block, "10.0.0.0/8"},
				{Egress, "10.9.9.9", ProtoTCP, 443, Block, "10.0.0.0/8"},
				{Egress, "192.0.2.1", ProtoTCP, 443, Allow, ""},
				// A non-first fragment has no port: only rules without one
				// judge it.
				{Egress, "10.1.2.3", ProtoTCP, 0, Block, "10.0.0.0/8"},
				// IPv4-mapped: the IPv4 rules.
				{Egress, "::ffff:10.1.2.3", ProtoTCP, 443, Allow, "10.1.2.3/32:tcp/443"},
				{Egress, "::ffff:10.1.2.3", ProtoTCP, 80, Block, "10.0.0.0/8"},
				// Egress rules do not judge ingress.
				{Ingress, "10.1.2.3", ProtoTCP, 443, Allow, ""},
			},
		},
		{
			name: "port beats protocol beats address at one prefix",
			rules: []rule{
				{Egress, Block, "192.0.2.0/24"},
				{Egress, Allow, "192.0.2.0/24:tcp"},
				{Egress, Block, "192.0.2.0/24:tcp/22"},
				{Egress, Allow, "192.0.2.0/24:icmp"},
			},
			def: [2]Action{Allow, Allow},
			pkts: []pkt{
				{Egress, "192.0.2.7", ProtoTCP, 22, Block, "192.0.2.0/24:tcp/22"},
				{Egress, "192.0.2.7", ProtoTCP, 80, Allow, "192.0.2.0/24:tcp"},
				{Egress, "192.0.2.7", ProtoUDP, 22, Block, "192.0.2.0/24"},
				{Egress, "192.0.2.7", ProtoICMP, 0, Allow, "192.0.2.0/24:icmp"},
				{Egress, "192.0.2.7", ProtoGRE, 0, Block, "192.0.2.0/24"},
				// A fragment of TCP: the protocol rule, which names no port,
				// applies to it; the port rule does not.
				{Egress, "192.0.2.7", ProtoTCP, 0, Allow, "192.0.2.0/24:tcp"},
			},
		},
		{
			name: "the narrowest range wins",
			rules: []rule{
				{Egress, Block, "198.51.100.0/24:tcp/1-65535"},
				{Egress, Allow, "198.51.100.0/24:tcp/8000-8999"},
				{Egress, Block, "198.51.100.0/24:tcp/8080-8089"},
				{Egress, Allow, "198.51.100.0/24:tcp/8081"},
			},
			def: [2]Action{Allow, Allow},
			pkts: []pkt{
				{Egress, "198.51.100.1", ProtoTCP, 22, Block, "198.51.100.0/24:tcp/1-65535"},
				{Egress, "198.51.100.1", ProtoTCP, 8000, Allow, "198.51.100.0/24:tcp/8000-8999"},
				{Egress, "198.51.100.1", ProtoTCP, 8999, Allow, "198.51.100.0/24:tcp/8000-8999"},
				{Egress, "198.51.100.1", ProtoTCP, 8080, Block, "198.51.100.0/24:tcp/8080-8089"},
				{Egress, "198.51.100.1", ProtoTCP, 8089, Block, "198.51.100.0/24:tcp/8080-8089"},
				{Egress, "198.51.100.1", ProtoTCP, 8081, Allow, "198.51.100.0/24:tcp/8081"},
				{Egress, "198.51.100.1", ProtoTCP, 9000, Block, "198.51.100.0/24:tcp/1-65535"},
				{Egress, "198.51.100.1", ProtoUDP, 8081, Allow, ""},
				{Egress, "198.51.100.1", ProtoTCP, 0, Allow, ""},
			},
		},
		{
			name: "a longer prefix with a matching rule beats a port rule of a shorter one",
			rules: []rule{
				{Egress, Allow, "203.0.113.0/24:tcp/443"},
				{Egress, Block, "203.0.113.9"},
				{Egress, Allow, "203.0.113.0/25:udp"},
			},
			def: [2]Action{Block, Allow},
			pkts: []pkt{
				{Egress, "203.0.113.9", ProtoTCP, 443, Block, "203.0.113.9/32"},
				{Egress, "203.0.113.8", ProtoTCP, 443, Allow, "203.0.113.0/24:tcp/443"},
				{Egress, "203.0.113.8", ProtoUDP, 53, Allow, "203.0.113.0/25:udp"},
				// The /25 has no TCP rule: the /24's port rule decides.
				{Egress, "203.0.113.100", ProtoTCP, 443, Allow, "203.0.113.0/24:tcp/443"},
				{Egress, "203.0.113.200", ProtoUDP, 53, Block, ""},
				{Egress, "203.0.113.8", ProtoTCP, 80, Block, ""},
			},
		},
		{
			name: "ADDR:PORT is TCP and UDP; any is both families",
			rules: []rule{
				{Egress, Block, "any:53"},
				{Egress, Allow, "192.0.2.53:53"},
				{Egress, Block, "any:icmp"},
			},
			def: [2]Action{Allow, Allow},
			pkts: []pkt{
				{Egress, "198.51.100.1", ProtoTCP, 53, Block, "0.0.0.0/0:tcp/53"},
				{Egress, "198.51.100.1", ProtoUDP, 53, Block, "0.0.0.0/0:udp/53"},
				{Egress, "2001:db8::1", ProtoUDP, 53, Block, "[::/0]:udp/53"},
				{Egress, "192.0.2.53", ProtoUDP, 53, Allow, "192.0.2.53/32:udp/53"},
				{Egress, "192.0.2.53", ProtoTCP, 53, Allow, "192.0.2.53/32:tcp/53"},
				{Egress, "192.0.2.53", ProtoSCTP, 53, Allow, ""},
				{Egress, "198.51.100.1", ProtoICMP, 0, Block, "0.0.0.0/0:icmp"},
				// any:icmp has no IPv6 rule: icmpv6 is IPv6's.
				{Egress, "2001:db8::1", ProtoICMPv6, 0, Allow, ""},
				// A mapped address is IPv4: ::/0 does not judge it.
				{Egress, "::ffff:198.51.100.1", ProtoUDP, 53, Block, "0.0.0.0/0:udp/53"},
			},
		},
		{
			name: "ingress matches the source address and the local port",
			rules: []rule{
				{Ingress, Allow, "198.51.100.0/24:tcp/22"},
				{Ingress, Allow, "[2001:db8::/32]:tcp/22"},
				{Ingress, Allow, "any:icmp"},
				{Ingress, Allow, "any:icmpv6"},
				{Egress, Block, "198.51.100.0/24"},
			},
			def: [2]Action{Allow, Block},
			pkts: []pkt{
				{Ingress, "198.51.100.9", ProtoTCP, 22, Allow, "198.51.100.0/24:tcp/22"},
				{Ingress, "198.51.100.9", ProtoTCP, 80, Block, ""},
				{Ingress, "203.0.113.1", ProtoTCP, 22, Block, ""},
				{Ingress, "2001:db8::9", ProtoTCP, 22, Allow, "[2001:db8::/32]:tcp/22"},
				{Ingress, "::ffff:198.51.100.9", ProtoTCP, 22, Allow, "198.51.100.0/24:tcp/22"},
				{Ingress, "203.0.113.1", ProtoICMP, 0, Allow, "0.0.0.0/0:icmp"},
				{Ingress, "2001:db8::9", ProtoICMPv6, 0, Allow, "[::/0]:icmpv6"},
				// A fragment after the first: no port, the default.
				{Ingress, "198.51.100.9", ProtoTCP, 0, Block, ""},
				{Egress, "198.51.100.9", ProtoTCP, 22, Block, "198.51.100.0/24"},
			},
		},
		{
			name: "a protocol without names, by number",
			rules: []rule{
				{Egress, Block, "192.0.2.0/24:proto/47"},
				{Egress, Allow, "192.0.2.0/24:proto/200"},
			},
			def: [2]Action{Block, Allow},
			pkts: []pkt{
				{Egress, "192.0.2.1", ProtoGRE, 0, Block, "192.0.2.0/24:gre"},
				{Egress, "192.0.2.1", 200, 0, Allow, "192.0.2.0/24:proto/200"},
				{Egress, "192.0.2.1", 201, 0, Block, ""},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := New()
			p.Default = tc.def
			for _, r := range tc.rules {
				if err := p.Add(r.dir, r.action, r.token); err != nil {
					t.Fatal(err)
				}
			}
			for _, k := range tc.pkts {
				got, id := p.Decide(k.dir, Packet{netip.MustParseAddr(k.addr), k.proto, k.port})
				by := ""
				if id != 0 {
					r, ok := p.Rule(id)
					if !ok {
						t.Fatalf("Decide gave rule %d, which the policy does not have", id)
					}
					if r.Action != got {
						t.Errorf("Decide gave %s by rule %s, whose action is %s", got, r, r.Action)
					}
					by = r.Match().String()
				} else if got != p.Default[k.dir] {
					t.Errorf("Decide gave %s by the default, which is %s", got, p.Default[k.dir])
				}
				if got != k.want || by != k.by {
					t.Errorf("%s %s %s/%d: %s by %q; want %s by %q", k.dir, k.addr, ProtoName(k.proto), k.port, got, by, k.want, k.by)
				}
			}
		})
	}
}

// TestDecideAddr checks that DecideAddr is a packet of no protocol: only
// address-only rules judge it.
func TestDecideAddr(t *testing.T) {
	p := New()
	for _, tok := range []string{"192.0.2.0/24", "192.0.2.1:tcp", "192.0.2.1:443"} {
		if err := p.Add(Egress, Block, tok); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Add(Egress, Allow, "192.0.2.1:tcp/80"); err != nil {
		t.Fatal(err)
	}
	if a, id := p.DecideAddr(Egress, netip.MustParseAddr("192.0.2.1")); a != Block || id != 1 {
		t.Errorf("DecideAddr = %s by %d; want block by 1 (192.0.2.0/24)", a, id)
	}
}

// TestPortConflicts checks what may not join a policy: a match both blocked
// and allowed, and ranges of one prefix and protocol that overlap partly;
// and what may: nested ranges, ranges of other protocols, prefixes or
// directions.
func TestPortConflicts(t *testing.T) {
	base := []struct {
		action Action
		token  string
	}{
		{Block, "192.0.2.1:tcp/8000-8999"},
		{Allow, "192.0.2.1:443"},
		{Block, "any:icmp"},
		{Allow, "[2001:db8::1]:udp/100-200"},
	}
	for _, tc := range []struct {
		name   string
		dir    Direction
		action Action
		token  string
		want   string // the error; "" for none
	}{
		{"the same rule again", Egress, Block, "192.0.2.1:tcp/8000-8999", ""},
		{"the same rule, allowed", Egress, Allow, "192.0.2.1:tcp/8000-8999", "192.0.2.1/32:tcp/8000-8999 is both blocked and allowed for egress"},
		{"half of ADDR:PORT, blocked", Egress, Block, "192.0.2.1:udp/443", "192.0.2.1/32:udp/443 is both blocked and allowed for egress"},
		{"a protocol rule both ways", Egress, Allow, "0.0.0.0/0:icmp", "0.0.0.0/0:icmp is both blocked and allowed for egress"},
		{"the other direction", Ingress, Allow, "192.0.2.1:tcp/8000-8999", ""},
		{"a nested range", Egress, Allow, "192.0.2.1:tcp/8080-8089", ""},
		{"a range around it", Egress, Allow, "192.0.2.1:tcp/1-65535", ""},
		{"its first port", Egress, Allow, "192.0.2.1:tcp/8000", ""},
		{"a range that shares its first port", Egress, Allow, "192.0.2.1:tcp/8000-8001", ""},
		{"a range that ends where it starts", Egress, Allow, "192.0.2.1:tcp/7000-8000", "192.0.2.1/32:tcp/7000-8000 overlaps 192.0.2.1/32:tcp/8000-8999 for egress: port ranges of one address and protocol may nest but not overlap partly"},
		{"a range over its end", Egress, Block, "192.0.2.1:tcp/8500-9500", "192.0.2.1/32:tcp/8500-9500 overlaps 192.0.2.1/32:tcp/8000-8999 for egress: port ranges of one address and protocol may nest but not overlap partly"},
		{"the TCP half of ADDR:LOW-HIGH overlaps", Egress, Block, "192.0.2.1:8500-9500", "192.0.2.1/32:tcp/8500-9500 overlaps 192.0.2.1/32:tcp/8000-8999 for egress: port ranges of one address and protocol may nest but not overlap partly"},
		{"the same range on UDP", Egress, Allow, "192.0.2.1:udp/8500-9500", ""},
		{"the same range at another prefix", Egress, Allow, "192.0.2.0/24:tcp/8500-9500", ""},
		{"the same range in the other direction", Ingress, Allow, "192.0.2.1:tcp/8500-9500", ""},
		{"an IPv6 range over the end", Egress, Block, "[2001:db8::1]:udp/150-250", "[2001:db8::1/128]:udp/150-250 overlaps [2001:db8::1/128]:udp/100-200 for egress: port ranges of one address and protocol may nest but not overlap partly"},
		{"any is other prefixes than the host's", Egress, Block, "any:udp/150-250", ""},
		{"an IPv6 range inside", Egress, Block, "[2001:db8::1]:udp/150-160", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := New()
			for _, r := range base {
				if err := p.Add(Egress, r.action, r.token); err != nil {
					t.Fatal(err)
				}
			}
			before := slices.Clone(p.Rules)
			err := p.Add(tc.dir, tc.action, tc.token)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Add(%s %s %s): %v", tc.dir, tc.action, tc.token, err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Errorf("Add(%s %s %s): %v\nwant %s", tc.dir, tc.action, tc.token, err, tc.want)
			case tc.want != "" && !slices.Equal(p.Rules, before):
				// Nothing of a refused token is added, not even the half
				// that had no conflict.
				t.Errorf("Add(%s %s %s) failed but changed the rules:\n%v\nwant %v", tc.dir, tc.action, tc.token, p.Rules, before)
			}
			checkRules(t, p)
		})
	}
}

// TestRangeIndex checks that the index of port ranges follows the rules
// through Delete, Clone, AddRule and a list: a deleted range no longer
// conflicts, a clone does not see the original's later rules.
func TestRangeIndex(t *testing.T) {
	p := New()
	for _, tok := range []string{"192.0.2.1:tcp/100-200", "192.0.2.1:tcp/150", "192.0.2.1:tcp/300-400"} {
		if err := p.Add(Egress, Block, tok); err != nil {
			t.Fatal(err)
		}
	}
	overlaps := func(p *Policy, tok string) bool {
		t.Helper()
		ms, err := ParseRule(tok)
		if err != nil {
			t.Fatal(err)
		}
		return p.Check(Egress, Block, ms[0]) != nil
	}
	if !overlaps(p, "192.0.2.1:tcp/150-250") {
		t.Fatal("tcp/150-250 does not overlap tcp/100-200")
	}
	c := p.Clone()
	m, _ := ParseRule("192.0.2.1:tcp/100-200")
	p.Delete(Egress, m[0])
	if overlaps(p, "192.0.2.1:tcp/150-250") {
		t.Error("a deleted range still overlaps")
	}
	if !overlaps(c, "192.0.2.1:tcp/150-250") {
		t.Error("the clone lost a range when the original deleted it")
	}
	p.AddRule(Rule{ID: 50, Dir: Egress, Prefix: m[0].Prefix, Ports: Ports{ProtoTCP, 140, 160}, Action: Allow})
	if !overlaps(p, "192.0.2.1:tcp/150-250") || overlaps(c, "192.0.2.1:tcp/130-145") {
		t.Error("AddRule's range is not where it was added, or is where it was not")
	}
	list := t.TempDir() + "/l"
	writeFile(t, list, "192.0.2.1:tcp/500-600\n")
	if err := p.AddList(list, Egress, Block); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"192.0.2.1:tcp/550-650", "192.0.2.1:tcp/350-450", "192.0.2.1:tcp/130-145"} {
		if !overlaps(p, tok) {
			t.Errorf("after a list, %s overlaps nothing", tok)
		}
	}
	checkRules(t, p)
}

// TestPortsString checks the form of the ports after a rule's colon.
func TestPortsString(t *testing.T) {
	for p, want := range map[Ports]string{
		{}:                       "",
		{Proto: ProtoTCP}:        "tcp",
		{Proto: ProtoICMPv6}:     "icmpv6",
		{Proto: ProtoESP}:        "esp",
		{Proto: ProtoAH}:         "ah",
		{Proto: 3}:               "proto/3",
		{ProtoUDP, 53, 53}:       "udp/53",
		{ProtoSCTP, 1, 65535}:    "sctp/1-65535",
		{ProtoTCP, 8000, 8999}:   "tcp/8000-8999",
		{ProtoTCP, 65534, 65535}: "tcp/65534-65535",
	} {
		if got := p.String(); got != want {
			t.Errorf("%+v.String() = %q; want %q", p, got, want)
		}
	}
	for proto, want := range map[uint8]bool{ProtoTCP: true, ProtoUDP: true, ProtoSCTP: true, ProtoICMP: false, ProtoICMPv6: false, ProtoGRE: false, 0: false, 200: false} {
		if HasPorts(proto) != want {
			t.Errorf("HasPorts(%d) = %v", proto, !want)
		}
	}
	if got := fmt.Sprint(Rule{Dir: Ingress, Action: Allow, Prefix: netip.MustParsePrefix("2001:db8::/32"), Ports: Ports{ProtoTCP, 22, 22}}); got != "ingress allow [2001:db8::/32]:tcp/22" {
		t.Errorf("a rule prints as %q", got)
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}
