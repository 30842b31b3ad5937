package learn

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cgwall/cgwall/internal/policy"
)

var t0 = time.Date(2026, 12, 2, 19, 40, 0, 0, time.UTC)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

func tcp(addr string, port uint16, sec int) Flow {
	return Flow{Addr: netip.MustParseAddr(addr), Proto: policy.ProtoTCP, Port: port, First: at(sec), Packets: 1}
}

func udp(addr string, port uint16, sec int) Flow {
	f := tcp(addr, port, sec)
	f.Proto = policy.ProtoUDP
	return f
}

func proto(addr string, p uint8, sec int) Flow {
	return Flow{Addr: netip.MustParseAddr(addr), Proto: p, First: at(sec), Packets: 1}
}

func answer(name string, sec int, addrs ...string) Answer {
	a := Answer{Name: name, Time: at(sec)}
	for _, s := range addrs {
		a.Addrs = append(a.Addrs, netip.MustParseAddr(s))
	}
	return a
}

// basePolicy parses a policy file's text; "" is no base.
func basePolicy(t *testing.T, text string) *policy.Policy {
	t.Helper()
	if text == "" {
		return nil
	}
	p, _, err := policy.ParseFile("base.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func ruleTokens(rules []Rule) []string {
	out := []string{}
	for _, r := range rules {
		out = append(out, r.Match.String())
	}
	return out
}

func TestLearnRules(t *testing.T) {
	tests := []struct {
		name    string
		base    string
		flows   []Flow
		answers []Answer
		want    []string
	}{
		{
			name:    "answer before the first flow makes a name rule",
			flows:   []Flow{tcp("192.0.2.10", 18080, 2)},
			answers: []Answer{answer("allowed.test", 1, "192.0.2.10")},
			want:    []string{"allowed.test:tcp/18080"},
		},
		{
			name:    "answer at the time of the first flow makes a name rule",
			flows:   []Flow{tcp("192.0.2.10", 18080, 2)},
			answers: []Answer{answer("allowed.test", 2, "192.0.2.10")},
			want:    []string{"allowed.test:tcp/18080"},
		},
		{
			name:    "answer only after the first flow makes an address rule",
			flows:   []Flow{tcp("192.0.2.10", 18080, 2)},
			answers: []Answer{answer("allowed.test", 3, "192.0.2.10")},
			want:    []string{"192.0.2.10/32:tcp/18080"},
		},
		{
			name:    "an answer for another address says nothing",
			flows:   []Flow{tcp("192.0.2.11", 80, 2)},
			answers: []Answer{answer("allowed.test", 1, "192.0.2.10")},
			want:    []string{"192.0.2.11/32:tcp/80"},
		},
		{
			name:  "the latest answer before the flow wins",
			flows: []Flow{tcp("192.0.2.10", 80, 2), tcp("192.0.2.10", 443, 4)},
			answers: []Answer{
				answer("two.test", 3, "192.0.2.10"), // given out of order
				answer("one.test", 1, "192.0.2.10"),
				answer("three.test", 5, "192.0.2.10"),
			},
			want: []string{"one.test:tcp/80", "two.test:tcp/443"},
		},
		{
			name:    "a CNAME's address is the asked name's",
			flows:   []Flow{tcp("198.51.100.7", 443, 2)},
			answers: []Answer{answer("www.cname.test", 1, "198.51.100.7")},
			want:    []string{"www.cname.test:tcp/443"},
		},
		{
			name:    "IPv4 and IPv6 flows of one name make one rule per port",
			flows:   []Flow{tcp("192.0.2.10", 443, 2), tcp("2001:db8::10", 443, 3), tcp("2001:db8::10", 80, 3)},
			answers: []Answer{answer("dual.test", 1, "192.0.2.10", "2001:db8::10")},
			want:    []string{"dual.test:tcp/80", "dual.test:tcp/443"},
		},
		{
			name:  "tcp and udp to one port stay two rules",
			flows: []Flow{tcp("192.0.2.1", 8080, 1), udp("192.0.2.1", 8080, 1)},
			want:  []string{"192.0.2.1/32:tcp/8080", "192.0.2.1/32:udp/8080"},
		},
		{
			name: "icmp and icmpv6",
			flows: []Flow{
				proto("192.0.2.1", policy.ProtoICMP, 1), proto("2001:db8::1", policy.ProtoICMPv6, 1),
				proto("192.0.2.2", policy.ProtoICMP, 2), proto("2001:db8::2", policy.ProtoICMPv6, 2),
			},
			answers: []Answer{answer("ping.test", 0, "192.0.2.2", "2001:db8::2")},
			want:    []string{"ping.test:icmp", "ping.test:icmpv6", "192.0.2.1/32:icmp", "[2001:db8::1/128]:icmpv6"},
		},
		{
			name:  "icmp to an IPv6 address is no rule: none can say it",
			flows: []Flow{proto("2001:db8::1", policy.ProtoICMP, 1), proto("192.0.2.1", policy.ProtoICMPv6, 1)},
			want:  []string{},
		},
		{
			name:  "a protocol without ports",
			flows: []Flow{proto("192.0.2.1", policy.ProtoGRE, 1), proto("192.0.2.1", 253, 1)},
			want:  []string{"192.0.2.1/32:gre", "192.0.2.1/32:proto/253"},
		},
		{
			name:  "loopback is kept",
			flows: []Flow{tcp("127.0.0.1", 8080, 1), tcp("::1", 8080, 1)},
			want:  []string{"127.0.0.1/32:tcp/8080", "[::1/128]:tcp/8080"},
		},
		{
			name:    "a one-label name makes an address rule",
			flows:   []Flow{tcp("127.0.0.1", 8080, 2)},
			answers: []Answer{answer("localhost", 1, "127.0.0.1")},
			want:    []string{"127.0.0.1/32:tcp/8080"},
		},
		{
			name:  "an IPv4-mapped address is its IPv4 address",
			flows: []Flow{tcp("::ffff:192.0.2.1", 80, 2)},
			want:  []string{"192.0.2.1/32:tcp/80"},
		},
		{
			name:  "a rule of the base that allows needs no rule",
			base:  "egress: {default: block, allow: [192.0.2.1:tcp/80, 198.51.100.0/24]}",
			flows: []Flow{tcp("192.0.2.1", 80, 1), tcp("198.51.100.9", 22, 1), tcp("192.0.2.1", 81, 1)},
			want:  []string{"192.0.2.1/32:tcp/81"},
		},
		{
			name:    "a name rule of the base that allows needs no rule",
			base:    `egress: {default: block, allow: [allowed.test:tcp/443, "*.wild.test:443"]}`,
			flows:   []Flow{tcp("192.0.2.1", 443, 2), tcp("192.0.2.2", 443, 2)},
			answers: []Answer{answer("allowed.test", 1, "192.0.2.1"), answer("a.wild.test", 1, "192.0.2.2")},
			want:    []string{},
		},
		{
			name:  "a rule of the base that blocks leaves no rule",
			base:  "egress: {block: [192.0.2.66, bad.test]}",
			flows: []Flow{tcp("192.0.2.66", 80, 1), tcp("192.0.2.67", 80, 2), tcp("192.0.2.68", 80, 2)},
			answers: []Answer{
				answer("bad.test", 1, "192.0.2.67"),
				answer("fine.test", 1, "192.0.2.68"),
			},
			want: []string{"fine.test:tcp/80"},
		},
		{
			name:    "an address rule of the base ranks above names",
			base:    "egress: {allow: [192.0.2.0/24:tcp/80]}",
			flows:   []Flow{tcp("192.0.2.1", 80, 2)},
			answers: []Answer{answer("allowed.test", 1, "192.0.2.1")},
			want:    []string{},
		},
		{
			name:    "DNS makes no rule beside name rules: the resolver carries it",
			flows:   []Flow{udp("127.0.0.53", 53, 1), tcp("127.0.0.53", 53, 1), tcp("192.0.2.10", 443, 2)},
			answers: []Answer{answer("a.test", 1, "192.0.2.10")},
			want:    []string{"a.test:tcp/443"},
		},
		{
			name:  "DNS makes rules where no name rule will carry it",
			flows: []Flow{udp("127.0.0.53", 53, 1), tcp("192.0.2.10", 443, 2), udp("192.0.2.10", 5353, 2)},
			want:  []string{"127.0.0.53/32:udp/53", "192.0.2.10/32:tcp/443", "192.0.2.10/32:udp/5353"},
		},
		{
			name:  "DNS makes no rule under a base with name rules",
			base:  "egress: {allow: [b.test:443]}",
			flows: []Flow{udp("127.0.0.53", 53, 1), tcp("192.0.2.10", 443, 2)},
			want:  []string{"192.0.2.10/32:tcp/443"},
		},
		{
			name:  "names first, then addresses, each in order",
			flows: []Flow{tcp("2001:db8::1", 80, 1), tcp("192.0.2.2", 80, 1), tcp("192.0.2.1", 443, 1), tcp("192.0.2.1", 80, 1), tcp("198.51.100.1", 80, 2), tcp("198.51.100.2", 80, 2)},
			answers: []Answer{
				answer("b.test", 1, "198.51.100.1"),
				answer("a.test", 1, "198.51.100.2"),
			},
			want: []string{"a.test:tcp/80", "b.test:tcp/80", "192.0.2.1/32:tcp/80", "192.0.2.1/32:tcp/443", "192.0.2.2/32:tcp/80", "[2001:db8::1/128]:tcp/80"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := Learn(tt.flows, tt.answers, Options{Base: basePolicy(t, tt.base)})
			if got := ruleTokens(res.Rules); !slices.Equal(got, tt.want) {
				t.Errorf("rules = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestLearnKeepsWhatTheBaseAllowed covers a name that a base wildcard
// allows on one port and that the command reached on another too: the
// learned exact name would be the more specific pattern and take the
// wildcard's port away, so it gets that port as well.
func TestLearnKeepsWhatTheBaseAllowed(t *testing.T) {
	base := basePolicy(t, `egress: {default: block, allow: ["*.x.test:tcp/443"]}`)
	flows := []Flow{tcp("192.0.2.1", 443, 2), tcp("192.0.2.1", 22, 3), tcp("192.0.2.2", 443, 2)}
	answers := []Answer{answer("a.x.test", 1, "192.0.2.1"), answer("b.x.test", 1, "192.0.2.2")}
	res := Learn(flows, answers, Options{Base: base})
	want := []string{"a.x.test:tcp/22", "a.x.test:tcp/443"}
	if got := ruleTokens(res.Rules); !slices.Equal(got, want) {
		t.Errorf("rules = %q, want %q", got, want)
	}
	assertAllows(t, base, res, flows, answers)
}

// assertAllows checks that the base with the learned rules, under egress
// default block, allows every flow that the base did not block, and no flow
// that it did.
func assertAllows(t *testing.T, base *policy.Policy, res Result, flows []Flow, answers []Answer) {
	t.Helper()
	p := base.Clone()
	p.Default[policy.Egress] = policy.Block
	for _, r := range res.Rules {
		if err := p.AddMatch(policy.Egress, policy.Allow, r.Match); err != nil {
			t.Fatal(err)
		}
	}
	idx := indexAnswers(answers)
	for _, f := range flows {
		blocked := slices.ContainsFunc(res.Blocked, func(b Blocked) bool { return b.Flow == f })
		pkt := policy.Packet{Addr: f.Addr, Proto: f.Proto, Port: f.Port}
		action, _ := p.DecideLearned(policy.Egress, pkt, patternOf(p, idx.nameOf(f.Addr.Unmap(), f.First)))
		if want := !blocked; (action == policy.Allow) != want {
			t.Errorf("learned policy decides %v for %v (blocked by the base: %v); rules %q", action, pkt, blocked, ruleTokens(res.Rules))
		}
	}
}

func TestLearnMergesFlows(t *testing.T) {
	flows := []Flow{
		{Addr: netip.MustParseAddr("2001:db8::10"), Proto: policy.ProtoTCP, Port: 443, First: at(5), Packets: 3, Pid: 2, Comm: "wget"},
		{Addr: netip.MustParseAddr("192.0.2.10"), Proto: policy.ProtoTCP, Port: 443, First: at(2), Packets: 12, Pid: 4242, Comm: "curl"},
		{Addr: netip.MustParseAddr("192.0.2.11"), Proto: policy.ProtoTCP, Port: 443, First: at(9), Packets: 1, Pid: 3, Comm: "git"},
	}
	answers := []Answer{answer("dual.test", 1, "192.0.2.10", "2001:db8::10", "192.0.2.11")}
	res := Learn(flows, answers, Options{})
	want := []Rule{{Match: policy.Match{Name: "dual.test", Ports: policy.Ports{Proto: policy.ProtoTCP, Lo: 443, Hi: 443}}, First: at(2), Packets: 16, Pid: 4242, Comm: "curl"}}
	if !slices.Equal(res.Rules, want) {
		t.Errorf("rules = %+v, want %+v", res.Rules, want)
	}
}

func TestLearnBlocked(t *testing.T) {
	base := basePolicy(t, "egress: {default: allow, block: [192.0.2.66, bad.test:tcp, 198.51.100.0/24:udp/53]}")
	flows := []Flow{
		tcp("192.0.2.67", 80, 3),
		udp("198.51.100.1", 53, 2),
		tcp("192.0.2.66", 443, 1),
		tcp("192.0.2.1", 80, 1),
	}
	answers := []Answer{answer("bad.test", 0, "192.0.2.67")}
	res := Learn(flows, answers, Options{Base: base})
	want := []Blocked{
		{Flow: flows[2], Rule: "192.0.2.66/32"},
		{Flow: flows[1], Rule: "198.51.100.0/24:udp/53"},
		{Flow: flows[0], Rule: "bad.test:tcp"},
	}
	if !slices.Equal(res.Blocked, want) {
		t.Errorf("blocked = %+v, want %+v", res.Blocked, want)
	}
	if got, want := ruleTokens(res.Rules), []string{"192.0.2.1/32:tcp/80"}; !slices.Equal(got, want) {
		t.Errorf("rules = %q, want %q", got, want)
	}
	assertAllows(t, base, res, flows, answers)
}

func TestComment(t *testing.T) {
	first := time.Date(2026, 12, 2, 20, 40, 1, 500_000_000, time.FixedZone("CET", 3600))
	tests := []struct {
		name string
		rule Rule
		want string
	}{
		{"everything", Rule{First: first, Packets: 12, Pid: 4242, Comm: "curl"}, "first 2026-12-02T19:40:01Z, 12 packets, curl (pid 4242)"},
		{"one packet", Rule{First: first, Packets: 1, Pid: 4242, Comm: "curl"}, "first 2026-12-02T19:40:01Z, 1 packet, curl (pid 4242)"},
		{"no process", Rule{First: first, Packets: 2}, "first 2026-12-02T19:40:01Z, 2 packets"},
		{"a connect alone", Rule{First: first, Pid: 9, Comm: "ping"}, "first 2026-12-02T19:40:01Z, connect only, ping (pid 9)"},
		{"no comm", Rule{First: first, Packets: 2, Pid: 7}, "first 2026-12-02T19:40:01Z, 2 packets, pid 7"},
		{"no pid", Rule{First: first, Packets: 2, Comm: "make"}, "first 2026-12-02T19:40:01Z, 2 packets, make"},
		{"a comm that does not print is quoted", Rule{First: first, Packets: 2, Pid: 7, Comm: "a\nb"}, `first 2026-12-02T19:40:01Z, 2 packets, "a\nb" (pid 7)`},
		{"wildcard", Rule{First: first, Packets: 30, Pid: 1, Comm: "go", Names: 3}, "first 2026-12-02T19:40:01Z, 30 packets, go (pid 1), 3 names"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.rule.Comment(); got != tt.want {
				t.Errorf("Comment() = %q, want %q", got, tt.want)
			}
		})
	}
}
