package resolver

import (
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// record is one address an answer gave for the asked name.
type record struct {
	addr netip.Addr
	ttl  time.Duration
}

// addresses returns the A and AAAA records of the answer that belong to the
// asked name: owned by it, or by a name its CNAME chain reaches. Any other
// address in the answer is ignored, since a server (or whoever forged the
// answer) could add records for names the policy never allowed. An address
// given twice keeps its longest TTL.
func addresses(resp *dns.Msg, asked string) []record {
	if resp.Rcode != dns.RcodeSuccess {
		return nil
	}
	// Owners are compared in canonical form: DNS names are case-blind and
	// answers often change the case of the question (0x20 randomization).
	reached := map[string]bool{dns.CanonicalName(asked): true}
	cnames := map[string][]string{}
	for _, rr := range resp.Answer {
		if c, ok := rr.(*dns.CNAME); ok {
			owner := dns.CanonicalName(c.Hdr.Name)
			cnames[owner] = append(cnames[owner], dns.CanonicalName(c.Target))
		}
	}
	// Walk the chain breadth-first; reached doubles as the visited set, so
	// a CNAME loop ends.
	for queue := []string{dns.CanonicalName(asked)}; len(queue) > 0; queue = queue[1:] {
		for _, target := range cnames[queue[0]] {
			if !reached[target] {
				reached[target] = true
				queue = append(queue, target)
			}
		}
	}

	var recs []record
	index := map[netip.Addr]int{}
	for _, rr := range resp.Answer {
		var a netip.Addr
		switch rr := rr.(type) {
		case *dns.A:
			a, _ = netip.AddrFromSlice(rr.A)
		case *dns.AAAA:
			a, _ = netip.AddrFromSlice(rr.AAAA)
		default:
			continue
		}
		// The datapath judges ::ffff:a.b.c.d by the IPv4 rules.
		a = a.Unmap()
		if !a.IsValid() || !reached[dns.CanonicalName(rr.Header().Name)] {
			continue
		}
		ttl := time.Duration(rr.Header().Ttl) * time.Second
		if i, ok := index[a]; ok {
			recs[i].ttl = max(recs[i].ttl, ttl)
			continue
		}
		index[a] = len(recs)
		recs = append(recs, record{a, ttl})
	}
	return recs
}

// addrsOf returns the addresses of recs.
func addrsOf(recs []record) []netip.Addr {
	if len(recs) == 0 {
		return nil
	}
	addrs := make([]netip.Addr, len(recs))
	for i, r := range recs {
		addrs[i] = r.addr
	}
	return addrs
}

// Addresses reads a DNS answer as it came off the wire, for learning a policy
// from DNS that cgwall did not serve: the name asked (lower case, no trailing
// dot) and the addresses the answer gives for it, the CNAME chain followed
// as the resolver follows it. ok is false for what is not a successful
// answer to one question.
func Addresses(wire []byte) (name string, addrs []netip.Addr, ok bool) {
	var m dns.Msg
	if err := m.Unpack(wire); err != nil || !m.Response || len(m.Question) != 1 {
		return "", nil, false
	}
	recs := addresses(&m, m.Question[0].Name)
	if len(recs) == 0 {
		return "", nil, false
	}
	return strings.ToLower(strings.TrimSuffix(m.Question[0].Name, ".")), addrsOf(recs), true
}
