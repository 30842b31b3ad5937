package main

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/ruleset"
)

// TestNftOrder holds the order of rules.tmpl's nftables chain for the ports
// set (allowing port and protocol rules, then blocking ones, then the
// address rules) to cgwall's decision, on packets to every rule's prefix and
// to the traffic.
func TestNftOrder(t *testing.T) {
	rules := e2ePortRules(5000, 4096)
	if len(rules) != 5000 {
		t.Fatalf("%d rules, want 5000", len(rules))
	}
	p := policy.New()
	for _, r := range rules {
		addRule(p, r)
	}
	nft := func(pkt policy.Packet) policy.Action {
		matches := func(allow bool, ports bool) bool {
			return slices.ContainsFunc(rules, func(r ruleset.Rule) bool {
				return r.Allow == allow && (r.Proto != 0) == ports && r.Prefix.Contains(pkt.Addr) &&
					(policy.Ports{Proto: r.Proto, Lo: r.Lo, Hi: r.Hi}).Matches(pkt.Proto, pkt.Port)
			})
		}
		if matches(true, true) {
			return policy.Allow
		}
		if matches(false, true) || matches(false, false) {
			return policy.Block
		}
		return policy.Allow
	}
	rng := rand.New(rand.NewPCG(1, 2))
	pkts := []policy.Packet{{Addr: firstDst, Proto: unix.IPPROTO_UDP, Port: udpPort}, {Addr: firstDst.Next(), Proto: unix.IPPROTO_TCP, Port: 443}}
	for _, r := range rules {
		a := r.Prefix.Addr().As4()
		if !r.Prefix.IsSingleIP() {
			v := rng.Uint32() >> r.Prefix.Bits()
			for i := range 4 {
				a[i] |= byte(v >> (24 - 8*i))
			}
		}
		addr := netip.AddrFrom4(a)
		pkts = append(pkts, policy.Packet{Addr: addr, Proto: r.Proto, Port: r.Lo},
			policy.Packet{Addr: addr, Proto: unix.IPPROTO_TCP, Port: uint16(1 + rng.IntN(65535))},
			policy.Packet{Addr: addr, Proto: unix.IPPROTO_ICMP})
	}
	for _, pkt := range pkts {
		want, id := p.Decide(policy.Egress, pkt)
		if got := nft(pkt); got != want {
			r, _ := p.Rule(id)
			t.Fatalf("%+v: nftables' order gives %s, cgwall %s by %v", pkt, got, want, r)
		}
	}
	if a, _ := p.Decide(policy.Egress, pkts[0]); a != policy.Allow {
		t.Errorf("the traffic is not let through")
	}
}
