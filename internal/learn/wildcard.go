package learn

import (
	"slices"
	"strings"

	"golang.org/x/net/publicsuffix"

	"github.com/cgwall/cgwall/internal/policy"
)

// fold folds learned names into wildcards, port by port: among the name
// rules of one Ports, the deepest parent with n or more members strictly
// below it becomes *.parent, in their place; then again, until no parent
// has enough. A wildcard folded before is one member, so that *.a.x.test and
// b.x.test can fold into *.x.test, but five names under a.x.test do not count
// as five for x.test. Deepest first, so that a wildcard is no broader than
// the names under it ask for.
func (l *learner) fold(n int) {
	for ports, members := range l.nameGroups() {
		for {
			parent, ok := l.foldable(members, ports, n)
			if !ok {
				break
			}
			members = l.foldInto(parent, ports, members)
		}
	}
}

// nameGroups are the learned names by Ports.
func (l *learner) nameGroups() map[policy.Ports][]policy.Name {
	groups := map[policy.Ports][]policy.Name{}
	for m := range l.rules {
		if m.Name != "" {
			groups[m.Ports] = append(groups[m.Ports], m.Name)
		}
	}
	for _, g := range groups {
		// In order, so that of two members first seen at one time the
		// same one gives its process to the wildcard, run after run.
		slices.Sort(g)
	}
	return groups
}

// foldable returns the deepest parent that has n or more members below it
// and may be folded at; of two as deep, the first in order, so that the
// same flows always learn the same file.
func (l *learner) foldable(members []policy.Name, ports policy.Ports, n int) (string, bool) {
	count := map[string]int{}
	for _, m := range members {
		for _, p := range parents(m) {
			count[p]++
		}
	}
	best := ""
	for p, c := range count {
		if c < n || !l.mayFold(p, ports) {
			continue
		}
		if best == "" || depth(p) > depth(best) || depth(p) == depth(best) && p < best {
			best = p
		}
	}
	return best, best != ""
}

// parents are the parents a member is strictly below: the proper suffixes
// of whole labels of its name (of the name after "*." for a wildcard, which
// is below its name's parents, not below its name), of two labels or more.
func parents(m policy.Name) []string {
	name := strings.TrimPrefix(m.String(), "*.")
	var out []string
	for {
		_, rest, ok := strings.Cut(name, ".")
		if !ok || !strings.Contains(rest, ".") {
			return out
		}
		out = append(out, rest)
		name = rest
	}
}

func depth(name string) int { return strings.Count(name, ".") + 1 }

// mayFold says whether names under parent may be folded into *.parent for
// ports. Not at a public suffix (co.uk, github.io, and any unknown top-level
// domain, as publicsuffix takes one): its names are not one owner's. Nor
// where a block rule of the base judges these ports for names below parent
// through a wildcard at or above it: *.parent would be the more specific
// pattern for the names it covers, and open what the user blocked.
func (l *learner) mayFold(parent string, ports policy.Ports) bool {
	if suffix, _ := publicsuffix.PublicSuffix(parent); suffix == parent {
		return false
	}
	for _, r := range l.base.Names {
		covers := r.Name == policy.Name("*."+parent) || r.Name.Wildcard() && r.Name.Matches(parent)
		if r.Action == policy.Block && covers && r.Ports.Matches(ports.Proto, ports.Lo) {
			return false
		}
	}
	return true
}

// foldInto replaces the members below parent with one rule *.parent:ports
// that carries what was seen of them all, and returns the members left.
func (l *learner) foldInto(parent string, ports policy.Ports, members []policy.Name) []policy.Name {
	wild := policy.Name("*." + parent)
	m := policy.Match{Name: wild, Ports: ports}
	var folded *learned
	var left []policy.Name
	for _, name := range members {
		if !below(name, parent) {
			left = append(left, name)
			continue
		}
		key := policy.Match{Name: name, Ports: ports}
		r := l.rules[key]
		delete(l.rules, key)
		if folded == nil {
			folded = &learned{Rule: Rule{Match: m, First: r.First, Pid: r.Pid, Comm: r.Comm}, names: map[string]bool{}}
		}
		folded.absorb(r)
	}
	l.rules[m] = folded
	return append(left, wild)
}

// below says whether a member is strictly below parent.
func below(m policy.Name, parent string) bool { return slices.Contains(parents(m), parent) }
