package main

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/ruleset"
)

// End to end with port rules (issue #10): the ports set in cgwall's list
// files and in nftables, and traffic that port rules let through, so that
// every packet is judged by its port.

// trafficDsts is where the sender sends, as netns.go routes it.
var trafficDsts = netip.MustParsePrefix("198.19.0.0/16")

// e2ePortRules is the ports set of n rules with rules for the traffic: each
// of its first destinations (up to dsts, and to a tenth of the rules) is
// blocked but for UDP to the sender's port, and so is the rest of
// 198.19.0.0/16, so that every packet passes by a port rule. The other rules
// are the ports set's, less any that overlaps the benchmark range, topped up
// with /32s outside it.
func e2ePortRules(n, dsts int) []ruleset.Rule {
	var out []ruleset.Rule
	service := func(p netip.Prefix) {
		out = append(out, ruleset.Rule{Prefix: p}, ruleset.Rule{Prefix: p, Proto: unix.IPPROTO_UDP, Lo: udpPort, Hi: udpPort, Allow: true})
	}
	service(trafficDsts)
	for a, i := firstDst, 0; i < min(dsts, n/10); a, i = a.Next(), i+1 {
		service(netip.PrefixFrom(a, 32))
	}
	rs := ruleset.Ports(max(n-len(out), 0))
	for _, r := range rs.Rules {
		if !r.Prefix.Overlaps(trafficNet) {
			out = append(out, r)
		}
	}
	rng := rand.New(rand.NewPCG(uint64(n), 98))
	for len(out) < n {
		v := rng.Uint32()
		a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		if p := netip.PrefixFrom(a, 32); !trafficNet.Contains(a) && rs.Add(p) {
			out = append(out, ruleset.Rule{Prefix: p})
		}
	}
	return out
}

// portRules are a ports rule set as cgwall and nftables take it.
type portRules struct {
	sendCgroup
	Block, Allow []string // cgwall: rule tokens, for --block-list and --allow-list
	// nftables: elements of its sets. Every address-only rule blocks.
	Prefixes               []string // address . nothing: the address-only rules
	AllowPorts, BlockPorts []string // address . protocol . port or range
	AllowProto, BlockProto []string // address . protocol
}

// nftRules sorts rules into nftables' sets. An element is left out where a
// shorter prefix has one of the same ports and action: nftables' interval
// sets refuse overlapping elements, and the outer one decides the same. The
// chain (rules.tmpl) tries the allowing sets first, then the blocking ones:
// that decides as cgwall does because no allowing rule of the ports set
// has a blocking prefix inside it (internal/ruleset), and because the
// traffic's /16 has only the traffic's /32s inside, which allow the same.
func nftRules(rules []ruleset.Rule, pr *portRules) {
	type key struct {
		prefix netip.Prefix
		proto  uint8
		lo, hi uint16
		allow  bool
	}
	keys := map[key]bool{}
	for _, r := range rules {
		keys[key{r.Prefix, r.Proto, r.Lo, r.Hi, r.Allow}] = true
	}
	shadowed := func(r ruleset.Rule) bool {
		for bits := range r.Prefix.Bits() {
			if keys[key{netip.PrefixFrom(r.Prefix.Addr(), bits).Masked(), r.Proto, r.Lo, r.Hi, r.Allow}] {
				return true
			}
		}
		return false
	}
	for _, r := range rules {
		addr := r.Prefix.String()
		if r.Prefix.IsSingleIP() {
			addr = r.Prefix.Addr().String()
		}
		proto := policy.ProtoName(r.Proto)
		switch {
		case r.Proto == 0:
			pr.Prefixes = append(pr.Prefixes, addr) // merged by auto-merge
		case shadowed(r):
		case r.Lo == 0 && r.Allow:
			pr.AllowProto = append(pr.AllowProto, addr+" . "+proto)
		case r.Lo == 0:
			pr.BlockProto = append(pr.BlockProto, addr+" . "+proto)
		case r.Allow:
			pr.AllowPorts = append(pr.AllowPorts, fmt.Sprintf("%s . %s . %s", addr, proto, portText(r)))
		default:
			pr.BlockPorts = append(pr.BlockPorts, fmt.Sprintf("%s . %s . %s", addr, proto, portText(r)))
		}
	}
}

func portText(r ruleset.Rule) string {
	if r.Lo == r.Hi {
		return fmt.Sprint(r.Lo)
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// writePortRules writes the ports rule set of n rules for cgwall (a block
// list and an allow list, or a YAML policy) and nftables.
func (e *e2eEnv) writePortRules(n int) (ruleFiles, error) {
	rules := e2ePortRules(n, slices.Max(e.cfg.Patterns))
	pr := portRules{sendCgroup: e.cg}
	for _, r := range rules {
		m := policy.Match{Prefix: r.Prefix, Ports: policy.Ports{Proto: r.Proto, Lo: r.Lo, Hi: r.Hi}}
		if r.Allow {
			pr.Allow = append(pr.Allow, m.String())
		} else {
			pr.Block = append(pr.Block, m.String())
		}
	}
	nftRules(rules, &pr)
	files := ruleFiles{}
	for format, tmpl := range map[string]string{"list": "ports-block", "allow-list": "ports-allow", "yaml": "ports-yaml", "nft": "ports-nft"} {
		path, err := writeRules(filepath.Join(e.dir, "ports-"+human(n)+"."+format), tmpl, pr)
		if err != nil {
			return nil, err
		}
		files[format] = path
	}
	return files, nil
}
