package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// rule is a rule of a test policy: a direction, an action and a token.
type rule struct {
	dir    Direction
	action Action
	token  string
}

// policyOf makes a policy of rules, with the egress default def.
func policyOf(t *testing.T, def Action, rules ...rule) *Policy {
	t.Helper()
	p := New()
	p.Default[Egress] = def
	for _, r := range rules {
		if err := p.Add(r.dir, r.action, r.token); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// ruleOf returns the canonical form of the rule with the given ID, "" for 0
// (the default).
func ruleOf(t *testing.T, p *Policy, id uint32) string {
	t.Helper()
	if id == 0 {
		return ""
	}
	r, ok := p.Rule(id)
	if !ok {
		t.Fatalf("no rule %d", id)
	}
	return r.Match().String()
}

func TestDecideName(t *testing.T) {
	type query struct {
		q       string
		resolve bool
		pattern Name
		by      string // the deciding rule, "" for the default
	}
	for _, tc := range []struct {
		name    string
		def     Action
		rules   []rule
		queries []query
	}{
		{
			name: "an allowlist: exact and wildcard",
			def:  Block,
			rules: []rule{
				{Egress, Allow, "example.com:443"},
				{Egress, Allow, "*.github.com:tcp/443"},
				{Egress, Allow, "*.test"},
			},
			queries: []query{
				{"example.com", true, "example.com", "example.com:tcp/443"},
				{"EXAMPLE.COM.", true, "example.com", "example.com:tcp/443"},
				{"www.example.com", false, "", ""},                                 // an exact name has no subdomains
				{"api.github.com", true, "*.github.com", "*.github.com:tcp/443"},   // depth 1
				{"a.b.c.github.com", true, "*.github.com", "*.github.com:tcp/443"}, // depth 3
				{"github.com", false, "", ""},                                      // not the apex
				{"badgithub.com", false, "", ""},                                   // whole labels
				{"other.test", true, "*.test", "*.test"},                           // an address-only allow
				{"unlisted.example", false, "", ""},                                // the default
				{"github.com.evil.test", true, "*.test", "*.test"},                 // the suffix is what counts
				{"example.com.example.org", false, "", ""},                         // and the whole name for exact names
				{"deep.a.b.c.d.e.f.github.com", true, "*.github.com", "*.github.com:tcp/443"},
			},
		},
		{
			name: "the most specific pattern decides",
			def:  Allow,
			rules: []rule{
				{Egress, Block, "*.example.com"},
				{Egress, Allow, "*.api.example.com"},
				{Egress, Allow, "www.example.com"},
				{Egress, Block, "x.api.example.com"},
			},
			queries: []query{
				{"a.example.com", false, "*.example.com", "*.example.com"},
				{"www.example.com", true, "www.example.com", "www.example.com"},       // exact beats wildcard
				{"a.api.example.com", true, "*.api.example.com", "*.api.example.com"}, // the longer suffix
				{"x.api.example.com", false, "x.api.example.com", "x.api.example.com"},
				{"api.example.com", false, "*.example.com", "*.example.com"}, // not the apex of *.api
				{"example.com", true, "", ""},                                // not the apex of *.example.com
				{"badexample.com", true, "", ""},
			},
		},
		{
			name: "a blocked name with ports under default allow resolves",
			def:  Allow,
			rules: []rule{
				{Egress, Block, "example.com:tcp/25"},
				{Egress, Block, "*.example.org:udp"},
				{Egress, Block, "blocked.test"},
			},
			queries: []query{
				// Other ports of it may pass: it resolves, by the default.
				{"example.com", true, "example.com", ""},
				{"a.example.org", true, "*.example.org", ""},
				{"blocked.test", false, "blocked.test", "blocked.test"},
				{"other.test", true, "", ""},
			},
		},
		{
			name: "a blocked name with ports under default block does not resolve",
			def:  Block,
			rules: []rule{
				{Egress, Block, "example.com:tcp/25"},
				{Egress, Allow, "allowed.test"},
			},
			queries: []query{
				{"example.com", false, "example.com", ""},
				{"allowed.test", true, "allowed.test", "allowed.test"},
			},
		},
		{
			name: "an allow beside an address-only block at one name resolves",
			def:  Block,
			rules: []rule{
				{Egress, Block, "example.com"},
				{Egress, Allow, "example.com:tcp/443"},
			},
			queries: []query{
				{"example.com", true, "example.com", "example.com:tcp/443"},
			},
		},
		{
			name: "of several allow rules, the first decides",
			def:  Block,
			rules: []rule{
				{Egress, Allow, "example.com:tcp/443"},
				{Egress, Allow, "example.com:udp/53"},
				{Egress, Allow, "example.com"},
			},
			queries: []query{
				{"example.com", true, "example.com", "example.com:tcp/443"},
			},
		},
		{
			name:  "no name rules: the default",
			def:   Block,
			rules: []rule{{Egress, Allow, "192.0.2.1"}},
			queries: []query{
				{"example.com", false, "", ""},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := policyOf(t, tc.def, tc.rules...)
			for _, q := range tc.queries {
				v := p.DecideName(q.q)
				if v.Resolve != q.resolve || v.WouldResolve != q.resolve || v.Pattern != q.pattern || ruleOf(t, p, v.Rule) != q.by {
					t.Errorf("DecideName(%q) = %+v (rule %q); want resolve %v under %q by %q", q.q, v, ruleOf(t, p, v.Rule), q.resolve, q.pattern, q.by)
				}
			}
			// Audit: everything resolves; the verdict says what would have.
			p.Audit = true
			for _, q := range tc.queries {
				v := p.DecideName(q.q)
				if !v.Resolve || v.WouldResolve != q.resolve || v.Pattern != q.pattern || ruleOf(t, p, v.Rule) != q.by {
					t.Errorf("audit: DecideName(%q) = %+v; want resolve, would %v under %q by %q", q.q, v, q.resolve, q.pattern, q.by)
				}
			}
		})
	}
}

func TestDecideLearned(t *testing.T) {
	p := policyOf(t, Block,
		rule{Egress, Block, "198.51.100.0/24"},
		rule{Egress, Allow, "203.0.113.0/24:tcp/22"},
		rule{Egress, Allow, "*.example.com"},
		rule{Egress, Block, "*.example.com:tcp"},
		rule{Egress, Allow, "*.example.com:tcp/443"},
		rule{Egress, Allow, "*.example.com:tcp/400-500"},
		rule{Egress, Block, "*.example.com:tcp/440-450"},
		rule{Egress, Allow, "api.test:udp/53"},
		rule{Ingress, Block, "192.0.2.0/24"},
	)
	p.Default[Ingress] = Allow
	learned := map[netip.Addr]Name{
		netip.MustParseAddr("192.0.2.1"):      "*.example.com",
		netip.MustParseAddr("198.51.100.7"):   "*.example.com", // an address rule blocks it
		netip.MustParseAddr("203.0.113.5"):    "api.test",
		netip.MustParseAddr("2001:db8::1"):    "*.example.com",
		netip.MustParseAddr("2001:db8::2"):    "gone.test", // a pattern with no rules now
		netip.MustParseAddr("198.18.0.1"):     "api.test",
		netip.MustParseAddr("198.18.0.2"):     "*.example.com",
		netip.MustParseAddr("2001:db8::ffff"): "api.test",
	}
	lookup := func(a netip.Addr) (Name, bool) { n, ok := learned[a]; return n, ok }
	for _, tc := range []struct {
		dir   Direction
		addr  string
		proto uint8
		port  uint16
		want  Action
		by    string
	}{
		// The learned pattern's rules: port > protocol > address-only,
		// the narrowest range first.
		{Egress, "192.0.2.1", ProtoTCP, 443, Allow, "*.example.com:tcp/443"},
		{Egress, "192.0.2.1", ProtoTCP, 445, Block, "*.example.com:tcp/440-450"},
		{Egress, "192.0.2.1", ProtoTCP, 460, Allow, "*.example.com:tcp/400-500"},
		{Egress, "192.0.2.1", ProtoTCP, 80, Block, "*.example.com:tcp"},
		{Egress, "192.0.2.1", ProtoTCP, 0, Block, "*.example.com:tcp"}, // a fragment: no port rule
		{Egress, "192.0.2.1", ProtoUDP, 443, Allow, "*.example.com"},
		{Egress, "::ffff:192.0.2.1", ProtoUDP, 443, Allow, "*.example.com"}, // mapped: the IPv4 address
		{Egress, "2001:db8::1", ProtoTCP, 443, Allow, "*.example.com:tcp/443"},
		// Address rules rank above name rules.
		{Egress, "198.51.100.7", ProtoTCP, 443, Block, "198.51.100.0/24"},
		{Egress, "203.0.113.5", ProtoTCP, 22, Allow, "203.0.113.0/24:tcp/22"},
		// Where the address rules leave it to the default, the name decides.
		{Egress, "203.0.113.5", ProtoUDP, 53, Allow, "api.test:udp/53"},
		{Egress, "198.18.0.1", ProtoUDP, 53, Allow, "api.test:udp/53"},
		{Egress, "2001:db8::ffff", ProtoUDP, 53, Allow, "api.test:udp/53"},
		// A learned pattern without a matching rule: the default.
		{Egress, "203.0.113.5", ProtoTCP, 80, Block, ""},
		{Egress, "198.18.0.1", ProtoTCP, 53, Block, ""},
		{Egress, "2001:db8::2", ProtoTCP, 443, Block, ""},
		// Not learned: the default.
		{Egress, "198.18.0.9", ProtoTCP, 443, Block, ""},
		// Ingress is never judged by names.
		{Ingress, "192.0.2.1", ProtoTCP, 443, Block, "192.0.2.0/24"},
		{Ingress, "198.18.0.2", ProtoTCP, 443, Allow, ""},
	} {
		t.Run(fmt.Sprintf("%s %s %s/%d", tc.dir, tc.addr, ProtoName(tc.proto), tc.port), func(t *testing.T) {
			pkt := Packet{Addr: netip.MustParseAddr(tc.addr), Proto: tc.proto, Port: tc.port}
			a, id := p.DecideLearned(tc.dir, pkt, lookup)
			if a != tc.want || ruleOf(t, p, id) != tc.by {
				t.Errorf("DecideLearned = %s by %q; want %s by %q", a, ruleOf(t, p, id), tc.want, tc.by)
			}
			// Without learned addresses, it is Decide.
			a, id = p.DecideLearned(tc.dir, pkt, nil)
			if da, did := p.Decide(tc.dir, pkt); a != da || id != did {
				t.Errorf("DecideLearned with nil = %s by %d; Decide = %s by %d", a, id, da, did)
			}
		})
	}
	// A learned address under default allow is judged by its pattern too.
	q := policyOf(t, Allow, rule{Egress, Block, "blocked.test:tcp/25"})
	a, id := q.DecideLearned(Egress, Packet{Addr: netip.MustParseAddr("192.0.2.1"), Proto: ProtoTCP, Port: 25},
		func(netip.Addr) (Name, bool) { return "blocked.test", true })
	if a != Block || ruleOf(t, q, id) != "blocked.test:tcp/25" {
		t.Errorf("a blocked name's port under default allow: %s by %d", a, id)
	}
}

// TestNameRuleEdits checks that the rule edits cover name rules: conflicts,
// lookups, IDs shared with address rules, deletion, renumbering, clones,
// counts and the summary.
func TestNameRuleEdits(t *testing.T) {
	p := New()
	for _, tok := range []string{"192.0.2.1", "example.com:443", "2001:db8::/32", "*.example.com:tcp/8000-8999"} {
		if err := p.Add(Egress, Allow, tok); err != nil {
			t.Fatal(err)
		}
	}
	if len(p.Rules) != 2 || len(p.Names) != 3 || !p.HasNames() || p.NextID() != 6 {
		t.Fatalf("rules %v, names %v, next ID %d", p.Rules, p.Names, p.NextID())
	}
	if New().HasNames() {
		t.Error("an empty policy has names")
	}
	m := func(tok string) Match {
		t.Helper()
		ms, err := ParseRule(tok)
		if err != nil || len(ms) != 1 {
			t.Fatalf("ParseRule(%q) = %v, %v", tok, ms, err)
		}
		return ms[0]
	}
	// IDs from one sequence, in the order the rules came.
	for tok, id := range map[string]uint32{"192.0.2.1": 1, "example.com:tcp/443": 2, "example.com:udp/443": 3, "2001:db8::/32": 4, "*.example.com:tcp/8000-8999": 5} {
		r, ok := p.Lookup(Egress, m(tok))
		if !ok || r.ID != id {
			t.Errorf("Lookup(%s) = %v, %v; want ID %d", tok, r, ok, id)
		}
		if g, ok := p.Rule(id); !ok || g != r {
			t.Errorf("Rule(%d) = %v, %v; want %v", id, g, ok, r)
		}
	}
	if r, _ := p.Rule(2); r.String() != "egress allow example.com:tcp/443" || r.Prefix.IsValid() {
		t.Errorf("rule 2 is %s, prefix %v", r, r.Prefix)
	}
	for _, tc := range []struct {
		dir    Direction
		action Action
		tok    string
		want   string
	}{
		{Egress, Block, "example.com:tcp/443", "example.com:tcp/443 is both blocked and allowed for egress"},
		{Egress, Block, "*.example.com:tcp/8500-9500", "*.example.com:tcp/8500-9500 overlaps *.example.com:tcp/8000-8999 for egress: port ranges of one name and protocol may nest but not overlap partly"},
		{Ingress, Allow, "example.com", "example.com: name rules match egress destinations only"},
		{Ingress, Block, "*.example.com:tcp/22", "*.example.com: name rules match egress destinations only"},
	} {
		if err := p.Add(tc.dir, tc.action, tc.tok); err == nil || err.Error() != tc.want {
			t.Errorf("Add(%s, %s, %s) = %v; want %s", tc.dir, tc.action, tc.tok, err, tc.want)
		}
		if err := p.AddMatch(tc.dir, tc.action, m(strings.Replace(tc.tok, ":443", ":tcp/443", 1))); err == nil || err.Error() != tc.want {
			t.Errorf("AddMatch(%s, %s, %s) = %v; want %s", tc.dir, tc.action, tc.tok, err, tc.want)
		}
	}
	// Nested ranges, other names and protocols, and repeats are fine.
	for _, tok := range []string{"*.example.com:tcp/8100-8200", "*.example.com:udp/8500-9500", "example.com:tcp/8500-9500", "example.com:443", "www.example.com"} {
		if err := p.Add(Egress, Allow, tok); err != nil {
			t.Errorf("Add(%s): %v", tok, err)
		}
	}
	if err := p.Add(Egress, Block, "other.test"); err != nil {
		t.Fatal(err)
	}
	if got := p.Count(Egress); got != 10 {
		t.Errorf("Count(egress) = %d, want 10", got)
	}
	if got, want := p.Summary()[0], "egress: default allow; IPv4: 0 block, 1 allow; IPv6: 0 block, 1 allow; names: 1 block, 7 allow"; got != want {
		t.Errorf("summary %q\nwant    %q", got, want)
	}
	if got, want := New().Summary()[0], "egress: default allow; IPv4: 0 block, 0 allow; IPv6: 0 block, 0 allow"; got != want {
		t.Errorf("summary without names %q", got)
	}

	c := p.Clone()
	p.SetAction(2, Block)
	if r, _ := p.Lookup(Egress, m("example.com:tcp/443")); r.Action != Block {
		t.Errorf("SetAction: %v", r)
	}
	p.Delete(Egress, m("example.com:tcp/443"))
	if _, ok := p.Lookup(Egress, m("example.com:tcp/443")); ok {
		t.Error("a deleted name rule is still there")
	}
	if _, ok := p.Rule(2); ok {
		t.Error("a deleted name rule is still found by ID")
	}
	for _, r := range p.Names {
		if g, ok := p.Rule(r.ID); !ok || g != r {
			t.Errorf("after Delete, Rule(%d) = %v, %v; want %v", r.ID, g, ok, r)
		}
		if g, ok := p.Lookup(r.Dir, r.Match()); !ok || g != r {
			t.Errorf("after Delete, Lookup(%s) = %v, %v", r.Match(), g, ok)
		}
	}
	// The clone kept what p had.
	if r, ok := c.Lookup(Egress, m("example.com:tcp/443")); !ok || r.Action != Allow || r.ID != 2 {
		t.Errorf("clone: %v, %v", r, ok)
	}
	if len(c.Names) != len(p.Names)+1 {
		t.Errorf("clone has %d names, the original %d", len(c.Names), len(p.Names))
	}

	// Renumber: address rules first, then names.
	c.Renumber(100)
	var ids []uint32
	for _, r := range c.Rules {
		ids = append(ids, r.ID)
	}
	for _, r := range c.Names {
		ids = append(ids, r.ID)
	}
	if want := []uint32{100, 101, 102, 103, 104, 105, 106, 107, 108, 109}; !slices.Equal(ids, want) || c.NextID() != 110 {
		t.Errorf("Renumber: IDs %v, next %d", ids, c.NextID())
	}
	if r, ok := c.Rule(102); !ok || r != c.Names[0] {
		t.Errorf("Rule(102) = %v, %v; want %v", r, ok, c.Names[0])
	}

	// AddRule, as a datapath reads rules back.
	q := New()
	q.AddRule(Rule{ID: 7, Dir: Egress, Name: "example.com", Ports: Ports{ProtoTCP, 443, 443}, Action: Allow})
	if r, ok := q.Rule(7); !ok || r.Name != "example.com" || q.NextID() != 8 || len(q.Rules) != 0 {
		t.Errorf("AddRule of a name rule: %v, %v, next %d", r, ok, q.NextID())
	}
}
