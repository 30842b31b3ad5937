package datapath

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/testutil"
)

// The resolver's addresses for tests that only run programs: nothing listens.
var (
	testResolver4 = netip.MustParseAddrPort("127.0.0.1:5353")
	testResolver6 = netip.MustParseAddrPort("[::1]:5353")
)

// testNames are the patterns of random name rules.
var testNames = []string{"a.test", "*.b.test", "c.b.test", "*.d.test"}

// randomNames adds name rules to p: each pattern gets up to three rules of
// random ports and actions.
func randomNames(rng *rand.Rand, p *policy.Policy) {
	for _, n := range testNames {
		for k := rng.IntN(4); k > 0; k-- {
			ports := randomPorts(rng, rng.IntN(2) == 0)
			name, err := policy.ParseName(n)
			if err != nil {
				panic(err)
			}
			// A conflict is refused and the first rule kept; fine here.
			p.AddMatch(policy.Egress, policy.Action(rng.IntN(2)), policy.Match{Name: name, Ports: ports})
		}
	}
}

// TestDifferentialNames learns and forgets random addresses under random
// name patterns, whose rules decide what the address rules leave to the
// default (policy.DecideLearned): after every change the datapath must
// decide as the reference does, in both directions (ingress never learns).
func TestDifferentialNames(t *testing.T) {
	testutil.RequireBPF(t)
	rng := rand.New(rand.NewPCG(5, 6))
	const policies, changes, packets = 40, 10, 25 // 10,000 decisions
	for i := 0; i < policies; i++ {
		p := randomPolicy(rng)
		randomNames(rng, p)
		opts := []Option{WithDNS(testResolver4, testResolver6, 0)}
		if i%2 == 1 {
			opts = append(opts, Fixed())
		}
		d := load(t, p, opts...)
		rd, err := d.Events()
		if err != nil {
			t.Fatal(err)
		}
		patterns := map[policy.Name]bool{}
		for _, r := range p.Names {
			patterns[r.Name] = true
		}
		learned := map[netip.Addr]policy.Name{}
		for j := 0; j < changes; j++ {
			changeLearned(t, rng, d, patterns, learned)
			for k := 0; k < packets; k++ {
				pr := randomProbe(rng)
				want, wantID := p.DecideLearned(pr.dir, pr.reference(), func(a netip.Addr) (policy.Name, bool) {
					n, ok := learned[a.Unmap()]
					return n, ok
				})
				got, e := decideInKernel(t, d, rd, pr)
				if e.Action != uint8(want) || e.RuleID != wantID {
					t.Fatalf("policy %d %v %v (defaults %v), learned %v, %v: datapath decided %d by rule %d, reference %v by rule %d",
						i, p.Rules, p.Names, p.Default, learned, pr, e.Action, e.RuleID, want, wantID)
				}
				if wantVerdict := want == policy.Allow || p.Audit; (got == policy.Allow) != wantVerdict {
					t.Fatalf("policy %d, %v: verdict %v with decision %v and audit %v", i, pr, got, want, p.Audit)
				}
			}
		}
		rd.Close()
		d.Close()
	}
}

// changeLearned learns a few random addresses under random patterns of the
// policy, some of them learned before under another, and forgets a few.
func changeLearned(t *testing.T, rng *rand.Rand, d *Datapath, patterns map[policy.Name]bool, learned map[netip.Addr]policy.Name) {
	t.Helper()
	var names []policy.Name
	for n := range patterns {
		names = append(names, n)
	}
	if len(names) > 0 {
		for k := rng.IntN(6); k > 0; k-- {
			n := names[rng.IntN(len(names))]
			a := randomAddr(rng)
			if err := d.Learn([]netip.Addr{a}, string(n)); err != nil {
				t.Fatal(err)
			}
			learned[a.Unmap()] = n
		}
	}
	for a := range learned {
		if rng.IntN(4) == 0 {
			if err := d.Forget([]netip.Addr{a}); err != nil {
				t.Fatal(err)
			}
			delete(learned, a)
		}
	}
}

// TestResolverTrafficPasses: DNS between the cgroup and the resolver passes
// under a policy that blocks everything, in both directions; other traffic
// to the resolver's address does not.
func TestResolverTrafficPasses(t *testing.T) {
	p := mustPolicy(t, policy.LogAll, "block", "127.0.0.0/8", "block", "::1/128")
	p.Default = [2]policy.Action{policy.Block, policy.Block}
	if err := p.Add(policy.Egress, policy.Allow, "a.test"); err != nil {
		t.Fatal(err)
	}
	d := load(t, p, WithDNS(testResolver4, testResolver6, 0))
	client4, client6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	for _, tc := range []struct {
		name      string
		ingress   bool
		src, dst  netip.Addr
		proto     uint8
		sp, dp    uint16
		wantAllow bool
	}{
		{"query to the resolver, UDP", false, client4, testResolver4.Addr(), policy.ProtoUDP, 40000, 5353, true},
		{"query to the resolver, TCP", false, client4, testResolver4.Addr(), policy.ProtoTCP, 40000, 5353, true},
		{"query to the resolver, IPv6", false, client6, testResolver6.Addr(), policy.ProtoUDP, 40000, 5353, true},
		{"answer from the resolver", true, testResolver4.Addr(), client4, policy.ProtoUDP, 5353, 40000, true},
		{"answer from the resolver, IPv6", true, testResolver6.Addr(), client6, policy.ProtoUDP, 5353, 40000, true},
		{"another port of the resolver's address", false, client4, testResolver4.Addr(), policy.ProtoUDP, 40000, 5354, false},
		{"from the resolver's port, egress", false, client4, testResolver4.Addr(), policy.ProtoUDP, 5353, 40000, false},
		{"ICMP to the resolver's address", false, client4, testResolver4.Addr(), policy.ProtoICMP, 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prog := d.progs[cgwallProgCgwallEgress]
			if tc.ingress {
				prog = d.progs[cgwallProgCgwallIngress]
			}
			var pkt []byte
			payload := l4(tc.sp, tc.dp)
			if tc.src.Is4() {
				pkt = ipv4(tc.src, tc.dst, tc.proto, payload)
			} else {
				pkt = ipv6(tc.src, tc.dst, tc.proto, payload)
			}
			if got := run(t, prog, pkt) == policy.Allow; got != tc.wantAllow {
				t.Errorf("passed %v, want %v", got, tc.wantAllow)
			}
		})
	}
}

// TestLearnedCounters: the packets of an address-only name rule are counted
// by each learned address and kept when the address is forgotten.
func TestLearnedCounters(t *testing.T) {
	p := mustPolicy(t, policy.LogNone)
	p.Default[policy.Egress] = policy.Block
	if err := p.Add(policy.Egress, policy.Allow, "a.test"); err != nil {
		t.Fatal(err)
	}
	d := load(t, p, WithDNS(testResolver4, testResolver6, 0), Fixed())
	a, b := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("2001:db8::5")
	if err := d.Learn([]netip.Addr{a, b}, "a.test"); err != nil {
		t.Fatal(err)
	}
	prog := d.progs[cgwallProgCgwallEgress]
	for range 3 {
		if run(t, prog, packet(local4, a)) != policy.Allow || run(t, prog, packet(local6, b)) != policy.Allow {
			t.Fatal("a learned address of an allowed name was dropped")
		}
	}
	// Learning an address again under its pattern keeps its counts.
	if err := d.Learn([]netip.Addr{a}, "a.test"); err != nil {
		t.Fatal(err)
	}
	if err := d.Forget([]netip.Addr{a}); err != nil {
		t.Fatal(err)
	}
	if run(t, prog, packet(local4, a)) != policy.Block {
		t.Fatal("a forgotten address still passes")
	}
	c, err := d.RuleCounters()
	if err != nil {
		t.Fatal(err)
	}
	if got := c[p.Names[0].ID].Packets; got != 6 {
		t.Errorf("the name rule counted %d packets, want 6", got)
	}
	if err := d.Learn([]netip.Addr{a}, "other.test"); err == nil {
		t.Error("Learn took a pattern that the policy has no rule for")
	}
}
