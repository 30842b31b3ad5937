package resolver

import (
	"net/netip"
	"slices"
	"time"
)

// Held is an address that a tenant's table holds in its datapath. The agent
// answers 'cgwall list' with it, in JSON.
type Held struct {
	Addr netip.Addr `json:"addr"`
	// Expires is when the table forgets the address, unless an answer
	// holds it longer; zero while its first answer is being learned.
	Expires time.Time `json:"expires"`
	// Names are the asked names whose answers hold it, sorted; none for
	// an address only adopted (Adopt).
	Names []string `json:"names,omitempty"`
}

// Held returns what t's table holds, by address: what only the resolver
// knows of its learned addresses, as their expiry is in no map. An evicted
// address, which the next expiry round forgets, is left out.
func (r *Resolver) Held(t *Tenant) []Held {
	s := r.tablesNow()
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tb := s.tenants[t]
	if tb == nil {
		return nil
	}
	byAddr := map[netip.Addr]*Held{}
	for asked, n := range tb.names {
		for a, it := range n.items {
			h := byAddr[a]
			if h == nil {
				h = &Held{Addr: a}
				byAddr[a] = h
			}
			h.Expires = later(h.Expires, it.expiry)
			if asked != adoptedName {
				h.Names = append(h.Names, asked)
			}
		}
	}
	out := make([]Held, 0, len(byAddr))
	for _, h := range byAddr {
		slices.Sort(h.Names)
		out = append(out, *h)
	}
	slices.SortFunc(out, func(a, b Held) int { return a.Addr.Compare(b.Addr) })
	return out
}
