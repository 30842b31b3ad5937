package ruleset_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/ruleset"
)

// load is the policy of rules: as policy rules they must all be accepted,
// no conflict and no repeat among them.
func load(t *testing.T, rules []ruleset.Rule) *policy.Policy {
	t.Helper()
	p := policy.New()
	for _, r := range rules {
		action := policy.Block
		if r.Allow {
			action = policy.Allow
		}
		m := policy.Match{Prefix: r.Prefix, Ports: policy.Ports{Proto: r.Proto, Lo: r.Lo, Hi: r.Hi}}
		if err := p.AddMatch(policy.Egress, action, m); err != nil {
			t.Fatal(err)
		}
	}
	if len(p.Rules) != len(rules) {
		t.Fatalf("%d rules make %d policy rules: some repeat", len(rules), len(p.Rules))
	}
	return p
}

func TestPortsSet(t *testing.T) {
	for _, n := range []int{1, 10, 1000, 20_000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			rs := ruleset.Ports(n)
			if again := ruleset.Ports(n); !slices.Equal(rs.Rules, again.Rules) {
				t.Fatal("two builds of one size differ")
			}
			withPorts := 0
			for _, r := range rs.Rules {
				if r.Proto != 0 {
					withPorts++
				}
			}
			if len(rs.Rules) != n || withPorts != n/5 {
				t.Fatalf("%d rules, %d with ports; want %d, %d", len(rs.Rules), withPorts, n, n/5)
			}
			load(t, rs.Rules)
		})
	}
}

// TestPackets holds every kind of destination to what it says, by the
// reference decision on the rules that can match it.
func TestPackets(t *testing.T) {
	for _, k := range append(slices.Clone(ruleset.Kinds), ruleset.PortsKind) {
		rs := k.Build(20_000)
		for _, kind := range rs.Kinds() {
			pkts := rs.Packets(kind, 500)
			if len(pkts) < 100 && !(k.Name == "ipv4-host" && kind == ruleset.HitPrefix) {
				t.Errorf("%s: %d packets of kind %s", k.Name, len(pkts), kind)
			}
			for _, pkt := range pkts {
				rules := rs.RulesFor(pkt.Addr)
				p := load(t, rules)
				_, id := p.Decide(policy.Egress, policy.Packet{Addr: pkt.Addr, Proto: pkt.Proto, Port: pkt.Port})
				if msg := check(kind, rules, p, id); msg != "" {
					t.Fatalf("%s: %s %+v: %s", k.Name, kind, pkt, msg)
				}
			}
		}
	}
}

// check says what is wrong with the deciding rule (ID id, 0 the default) of
// a packet of kind, whose longest prefix is that of the last of rules.
func check(kind string, rules []ruleset.Rule, p *policy.Policy, id uint32) string {
	var longest, deciding policy.Rule
	if len(rules) > 0 {
		longest = p.Rules[len(p.Rules)-1]
	}
	if id != 0 {
		deciding, _ = p.Rule(id)
	}
	onLongest := id != 0 && deciding.Prefix == longest.Prefix
	switch kind {
	case ruleset.Hit, ruleset.HitPrefix:
		if !onLongest || !deciding.Ports.Any() || deciding.Prefix.IsSingleIP() != (kind == ruleset.Hit) {
			return fmt.Sprintf("decided by %v, not the address rule of its prefix", deciding)
		}
	case ruleset.Miss:
		if len(rules) > 0 {
			return fmt.Sprintf("in %d rules' prefixes", len(rules))
		}
	case ruleset.Port:
		if !onLongest || deciding.Ports.Any() {
			return fmt.Sprintf("decided by %v, not a port rule of its prefix", deciding)
		}
	case ruleset.OtherPort:
		if !onLongest || !deciding.Ports.Any() || longest.Ports.Any() {
			return fmt.Sprintf("decided by %v, not the address rule of a prefix with port rules", deciding)
		}
	case ruleset.Through:
		if onLongest || longest.Ports.Any() {
			return fmt.Sprintf("decided by %v in its prefix %v with port rules only", deciding, longest)
		}
	}
	return ""
}
