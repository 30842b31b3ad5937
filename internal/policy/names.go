package policy

import (
	"fmt"
	"slices"
)

// ingressName is the error of a name rule for ingress: a name is what a
// process asks DNS for before it connects, so it says nothing of the source
// of a packet that comes in.
func ingressName(n Name) error {
	return fmt.Errorf("%s: name rules match egress destinations only", n)
}

// egressOnly refuses the matches of one token if they are a name's and dir
// is ingress: once, as the token is one mistake, however many rules it
// stands for (example.com:443 is two).
func egressOnly(dir Direction, matches []Match) error {
	if dir != Egress && len(matches) > 0 && matches[0].Name != "" {
		return ingressName(matches[0].Name)
	}
	return nil
}

// nameKey is a name rule's direction and match, the key of its position.
type nameKey struct {
	name  Name
	dir   Direction
	ports Ports
}

func nameKeyOf(dir Direction, m Match) nameKey {
	return nameKey{name: m.Name, dir: dir, ports: m.Ports}
}

// nameRangeKey is the key of a name rule's port range: its direction, name
// and protocol, whose ranges must nest, as those of a prefix must.
func nameRangeKey(r Rule) nameKey {
	return nameKey{name: r.Name, dir: r.Dir, ports: Ports{Proto: r.Ports.Proto}}
}

// nameIndex indexes Policy.Names: positions by match and by ID, and the
// port ranges for the partial overlaps that Check refuses. It is built on
// first use, kept up to date as rules are added, and dropped (to be built
// again) when positions or IDs change.
type nameIndex struct {
	at     map[nameKey]int
	byID   map[uint32]int
	ranges map[nameKey][]Ports
}

func (x *nameIndex) add(i int, r Rule) {
	x.at[nameKeyOf(r.Dir, r.Match())] = i
	x.byID[r.ID] = i
	addRangeAt(x.ranges, nameRangeKey(r), r.Ports)
}

// overlapping returns the first range of r's name and protocol that r's
// overlaps partly.
func (x *nameIndex) overlapping(r Rule) (Ports, bool) {
	return overlappingAt(x.ranges, nameRangeKey(r), r.Ports)
}

// nameIndex returns Policy.names, built if it is not.
func (p *Policy) nameIndex() *nameIndex {
	if p.names == nil {
		x := &nameIndex{
			at:     make(map[nameKey]int, len(p.Names)),
			byID:   make(map[uint32]int, len(p.Names)),
			ranges: make(map[nameKey][]Ports),
		}
		for i, r := range p.Names {
			x.add(i, r)
		}
		p.names = x
	}
	return p.names
}

// addName appends a name rule to Names (see AddRule).
func (p *Policy) addName(r Rule) {
	if p.names != nil {
		p.names.add(len(p.Names), r)
	}
	p.Names = append(p.Names, r)
	if r.ID >= p.nextID {
		p.nextID = r.ID + 1
	}
}

// lookupName is Lookup for a name match.
func (p *Policy) lookupName(dir Direction, m Match) (Rule, bool) {
	i, ok := p.nameIndex().at[nameKeyOf(dir, m)]
	if !ok {
		return Rule{}, false
	}
	return p.Names[i], true
}

// nameRule is Rule for the ID of a name rule.
func (p *Policy) nameRule(id uint32) (Rule, bool) {
	i, ok := p.nameIndex().byID[id]
	if !ok {
		return Rule{}, false
	}
	return p.Names[i], true
}

// deleteName is Delete for a name match. The last name rule takes its
// place; the index is built again on next use, as live edits are few.
func (p *Policy) deleteName(dir Direction, m Match) {
	i, ok := p.nameIndex().at[nameKeyOf(dir, m)]
	if !ok {
		return
	}
	last := len(p.Names) - 1
	p.Names[i] = p.Names[last]
	p.Names = p.Names[:last]
	p.names = nil
}

// HasNames says whether the policy has name rules, and so needs the DNS
// resolver and the datapath's name code.
func (p *Policy) HasNames() bool { return len(p.Names) > 0 }

// NameVerdict is the decision on a DNS query (see DecideName).
type NameVerdict struct {
	// Resolve says whether the query is answered; if not, it is answered
	// NXDOMAIN. Always true in audit mode.
	Resolve bool
	// WouldResolve is what Resolve would be without audit mode: what an
	// audit event reports. Without audit it is Resolve.
	WouldResolve bool
	// Pattern is the pattern that decided, and that the answer's
	// addresses are learned under; "" if no pattern matches.
	Pattern Name
	// Rule is the ID of the pattern's rule that decided, for the event; 0
	// when the default did.
	Rule uint32
}

// DecideName is the reference decision on a DNS query for the name q (in any
// case, with or without the trailing dot).
//
// The most specific pattern that matches q decides: the exact name beats
// every wildcard, and a longer wildcard suffix a shorter one. Its rules are
// every egress name rule of that pattern. q resolves iff some traffic to it
// would be allowed: the pattern has an allow rule (which is then the deciding
// rule), or it has no address-only block rule (which would otherwise decide)
// and the egress default is allow. Where no pattern matches, q resolves iff
// the egress default is allow. In audit mode everything resolves, and
// WouldResolve says what would have happened.
//
// It scans every name rule: it is written to be obviously right, not fast.
func (p *Policy) DecideName(q string) NameVerdict {
	pattern, ok := p.patternOf(q)
	v := NameVerdict{Pattern: pattern, WouldResolve: p.Default[Egress] == Allow}
	if ok {
		v.WouldResolve, v.Rule = p.decidePattern(pattern)
	}
	v.Resolve = v.WouldResolve || p.Audit
	return v
}

// patternOf returns the most specific pattern of an egress name rule that
// matches q.
func (p *Policy) patternOf(q string) (Name, bool) {
	var best Name
	for _, r := range p.Names {
		if r.Dir != Egress || !r.Name.Matches(q) {
			continue
		}
		if best == "" || morePrecise(r.Name, best) {
			best = r.Name
		}
	}
	return best, best != ""
}

// morePrecise says whether pattern a beats pattern b when both match a name:
// an exact name beats a wildcard; of two wildcards that match one name, one
// suffix ends the other, and the longer is the more precise.
func morePrecise(a, b Name) bool {
	if a.Wildcard() != b.Wildcard() {
		return !a.Wildcard()
	}
	return len(a) > len(b)
}

// decidePattern says whether a name whose pattern is n resolves, and by
// which of n's rules (0 for the default): by its allow rule with the lowest
// ID, if it has one; not, by its address-only block rule, if it has one;
// else as the egress default says.
func (p *Policy) decidePattern(n Name) (resolve bool, rule uint32) {
	var allows []uint32
	var blockAll uint32
	for _, r := range p.Names {
		switch {
		case r.Dir != Egress || r.Name != n:
		case r.Action == Allow:
			allows = append(allows, r.ID)
		case r.Ports.Any():
			blockAll = r.ID
		}
	}
	switch {
	case len(allows) > 0:
		return true, slices.Min(allows)
	case blockAll != 0:
		return false, blockAll
	}
	return p.Default[Egress] == Allow, 0
}
