// Package learn turns what a command did, the flows the datapath saw and the
// DNS answers the resolver gave, into the smallest egress allowlist that lets
// it do the same again, and writes that list as a policy file. It is pure Go:
// the datapath and the resolver collect, this package only decides.
package learn

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cgwall/cgwall/internal/policy"
)

// Flow is one destination that the command sent to, as the datapath saw it.
type Flow struct {
	Addr    netip.Addr // destination; IPv4 unmapped
	Proto   uint8      // IPPROTO_*
	Port    uint16     // destination port; 0 for a protocol without ports
	First   time.Time  // first packet
	Packets uint64
	Pid     uint32 // 0 when not known
	Comm    string // "" when not known
}

// Answer is one DNS answer the cgroup got: the name it asked (lower case,
// no trailing dot) and the addresses it gave for it, CNAMEs followed.
type Answer struct {
	Name  string
	Addrs []netip.Addr
	Time  time.Time // when the answer was released to the client
}

// Options say what Learn starts from and how far it may generalise.
type Options struct {
	// Base is the policy the command ran under (in audit mode). A flow that
	// one of its rules allows needs no learned rule; one that its rule blocks
	// is not allowed by a learned rule either (the user's block stands),
	// but reported in Result.Blocked. nil: an empty policy.
	Base *policy.Policy
	// Wildcards, when >= 2, folds that many or more learned names under a
	// common parent into *.parent (never at a public suffix). 0: no folding.
	Wildcards int
}

// Rule is one learned egress allow rule and what was seen of it.
type Rule struct {
	Match   policy.Match // canonical: Match.String() is the token written
	First   time.Time    // earliest first packet of the flows it covers
	Packets uint64       // sum over its flows
	Pid     uint32       // the process of the earliest flow
	Comm    string
	Names   int // names folded into a wildcard (0 when not folded)
}

// Blocked is a flow that a rule of the base policy blocks: no learned rule
// opens it, and the user is told.
type Blocked struct {
	Flow Flow
	Rule string // the base's rule that blocks it, canonical
}

// Result is what Learn learned.
type Result struct {
	Rules   []Rule // sorted: names first (by name, then ports), then addresses
	Blocked []Blocked
}

// Comment is the comment a rule's line carries, e.g.
// "first 2026-12-02T19:40:01Z, 12 packets, curl (pid 4242)";
// a wildcard adds ", 3 names".
func (r Rule) Comment() string {
	var parts []string
	if !r.First.IsZero() {
		parts = append(parts, "first "+r.First.UTC().Format(time.RFC3339))
	}
	if r.Packets == 0 {
		// A connect() that sent nothing (UDP), which the connect hook
		// judges all the same.
		parts = append(parts, "connect only")
	} else {
		parts = append(parts, plural(r.Packets, "packet"))
	}
	if p := process(r.Pid, r.Comm); p != "" {
		parts = append(parts, p)
	}
	if r.Names > 0 {
		parts = append(parts, plural(uint64(r.Names), "name"))
	}
	return strings.Join(parts, ", ")
}

func plural(n uint64, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// process names a process as "curl (pid 4242)", or what of it is known. A
// comm is whatever the process called itself (prctl can set any bytes), so
// one that would not print as it is, a newline that would end the comment
// and break the file among them, is quoted.
func process(pid uint32, comm string) string {
	if !utf8.ValidString(comm) || strings.ContainsFunc(comm, func(r rune) bool { return !unicode.IsGraphic(r) }) {
		comm = strconv.Quote(comm)
	}
	switch {
	case pid == 0:
		return comm
	case comm == "":
		return fmt.Sprintf("pid %d", pid)
	}
	return fmt.Sprintf("%s (pid %d)", comm, pid)
}

// Learn finds the rules that allow the flows: by name where a DNS answer
// gave the flow's address before it started, else by address; each with the
// protocol and the port seen, and nothing broader unless opt.Wildcards asks.
func Learn(flows []Flow, answers []Answer, opt Options) Result {
	base := opt.Base
	if base == nil {
		base = policy.New()
	}
	l := newLearner(base)
	names := indexAnswers(answers)
	var res Result
	var allowed []namedFlow // what the learned policy must let pass
	for _, f := range flows {
		f.Addr = f.Addr.Unmap()
		nf := namedFlow{Flow: f, name: names.nameOf(f.Addr, f.First)}
		action, id := base.DecideLearned(policy.Egress, nf.packet(), patternOf(base, nf.name))
		switch {
		case id != 0 && action == policy.Block:
			res.Blocked = append(res.Blocked, Blocked{Flow: f, Rule: ruleToken(base, id)})
			continue
		case id == 0:
			m, ok := nf.match()
			if !ok {
				continue
			}
			l.add(m, nf)
		}
		allowed = append(allowed, nf)
	}
	if opt.Wildcards >= 2 {
		l.fold(opt.Wildcards)
	}
	if l.hasNames() {
		allowed = slices.DeleteFunc(allowed, func(f namedFlow) bool { return isDNS(f.ports()) })
		l.dropDNS()
	}
	l.settle(allowed)
	res.Rules = l.sorted()
	slices.SortStableFunc(res.Blocked, func(a, b Blocked) int { return compareFlows(a.Flow, b.Flow) })
	return res
}

// ruleToken is the canonical token of the base's rule with the given ID.
func ruleToken(p *policy.Policy, id uint32) string {
	r, _ := p.Rule(id)
	return r.Match().String()
}

func compareFlows(a, b Flow) int {
	return cmp.Or(a.First.Compare(b.First), a.Addr.Compare(b.Addr), cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port))
}

// namedFlow is a flow and the name it is attributed to: the name of the
// latest answer that gave its address, "" if none did. The name is as the
// answer had it, which may be one no rule can name (localhost).
type namedFlow struct {
	Flow
	name string
}

func (f namedFlow) packet() policy.Packet {
	return policy.Packet{Addr: f.Addr, Proto: f.Proto, Port: f.Port}
}

// String is the flow's destination as an address rule names it:
// 192.0.2.1/32:tcp/443.
func (f Flow) String() string { return f.addressMatch().String() }

// addressMatch is the address rule that allows the flow and no more.
func (f Flow) addressMatch() policy.Match {
	return policy.Match{Prefix: netip.PrefixFrom(f.Addr, f.Addr.BitLen()), Ports: f.ports()}
}

// ports is the narrowest Ports that matches the flow: its protocol and, for
// a protocol with ports, its one port.
func (f Flow) ports() policy.Ports {
	if policy.HasPorts(f.Proto) && f.Port != 0 {
		return policy.Ports{Proto: f.Proto, Lo: f.Port, Hi: f.Port}
	}
	// Protocol 0 makes the zero Ports, every packet of the address: no
	// rule can name it (proto/0 is refused), so nothing narrower exists.
	return policy.Ports{Proto: f.Proto}
}

// match is the rule that allows the flow and no more: its name's, if a rule
// can name it, else its address's. ok is false for a flow that no rule can
// allow, as ICMP to an IPv6 address: a rule may not pair a protocol with the
// other family, so no learned rule can be written, and the packet is no real
// traffic.
func (f namedFlow) match() (policy.Match, bool) {
	ports := f.ports()
	if name, err := policy.ParseName(f.name); err == nil && f.name != "" {
		return policy.Match{Name: name, Ports: ports}, true
	}
	is6 := f.Addr.Is6()
	if ports.Proto == policy.ProtoICMP && is6 || ports.Proto == policy.ProtoICMPv6 && !is6 {
		return policy.Match{}, false
	}
	return f.addressMatch(), true
}

// patternOf gives the learned function of DecideLearned for a flow of a
// name: the pattern that p's name rules would learn the address under,
// which is what the datapath would know of it.
func patternOf(p *policy.Policy, name string) func(netip.Addr) (policy.Name, bool) {
	return func(netip.Addr) (policy.Name, bool) {
		if name == "" {
			return "", false
		}
		v := p.DecideName(name)
		return v.Pattern, v.Pattern != ""
	}
}

// answers indexes DNS answers by address, each address's in time order.
type answers map[netip.Addr][]Answer

func indexAnswers(list []Answer) answers {
	idx := answers{}
	for _, a := range list {
		for _, addr := range a.Addrs {
			idx[addr.Unmap()] = append(idx[addr.Unmap()], a)
		}
	}
	for _, as := range idx {
		// Stable: of two answers at one time, the later given wins.
		slices.SortStableFunc(as, func(a, b Answer) int { return a.Time.Compare(b.Time) })
	}
	return idx
}

// nameOf is the name of the latest answer that gave addr at or before t:
// as in the datapath, the latest answer wins. An answer after the flow
// began cannot be why it went there.
func (idx answers) nameOf(addr netip.Addr, t time.Time) string {
	as := idx[addr]
	i, _ := slices.BinarySearchFunc(as, t, func(a Answer, t time.Time) int {
		if a.Time.After(t) {
			return 1
		}
		return -1
	})
	if i == 0 {
		return ""
	}
	return as[i-1].Name
}

// learned is a rule being learned and the names of the flows it covers.
type learned struct {
	Rule
	names map[string]bool
}

// absorb adds what was seen of o to r.
func (r *learned) absorb(o *learned) {
	if o.First.Before(r.First) {
		r.First, r.Pid, r.Comm = o.First, o.Pid, o.Comm
	}
	r.Packets += o.Packets
	for n := range o.names {
		r.names[n] = true
	}
}

func newRule(m policy.Match, f namedFlow) *learned {
	r := &learned{Rule: Rule{Match: m, First: f.First, Packets: f.Packets, Pid: f.Pid, Comm: f.Comm}, names: map[string]bool{}}
	if m.Name != "" {
		r.names[f.name] = true
	}
	return r
}

// learner holds the rules learned so far, one per Match: flows that give
// the same Match merge into one rule.
type learner struct {
	base  *policy.Policy
	rules map[policy.Match]*learned
}

func newLearner(base *policy.Policy) *learner {
	return &learner{base: base, rules: map[policy.Match]*learned{}}
}

func (l *learner) add(m policy.Match, f namedFlow) {
	r := newRule(m, f)
	if have, ok := l.rules[m]; ok {
		have.absorb(r)
		return
	}
	l.rules[m] = r
}

// final is the policy the learned file makes: the base, egress default
// block, and the learned rules allowed.
func (l *learner) final() *policy.Policy {
	p := l.base.Clone()
	p.Default[policy.Egress] = policy.Block
	for m := range l.rules {
		// A learned rule never conflicts with the base: a base rule of
		// its match would have decided its flows. Should one, the check
		// of the written file says so.
		_ = p.AddMatch(policy.Egress, policy.Allow, m)
	}
	return p
}

// settle adds rules until the learned policy lets every allowed flow pass.
// A name rule is judged by the rules of its name's most specific pattern
// alone, so a learned example.com:tcp/22 takes example.com away from the
// base's *.example.com:tcp/443, and a wildcard that folded example.com's
// tcp/443 leaves it behind if example.com keeps a rule of its own for
// another port. The flow then gets its own exact rule back: never broader
// than what was seen, and it cannot open what the base blocks, which its
// address rules or the default block still do.
func (l *learner) settle(flows []namedFlow) {
	// Each round fixes at least one flow, or stops.
	for range len(flows) + 1 {
		final, fixed := l.final(), false
		for _, f := range flows {
			action, _ := final.DecideLearned(policy.Egress, f.packet(), patternOf(final, f.name))
			if action == policy.Allow {
				continue
			}
			if m, ok := f.match(); ok && l.rules[m] == nil {
				l.add(m, f)
				fixed = true
			}
		}
		if !fixed {
			return
		}
	}
}

// hasNames says whether the learned policy has name rules.
func (l *learner) hasNames() bool {
	if l.base.HasNames() {
		return true
	}
	for m := range l.rules {
		if m.Name != "" {
			return true
		}
	}
	return false
}

// dropDNS leaves out the rules of DNS, for a policy with name rules: under
// them every query to port 53, UDP or TCP, goes to cgwall's resolver,
// whatever server it was for, and no rule judges it. (What exec learns
// never has such flows, its DNS having gone to the resolver already; what
// watch learns beside a policy without name rules does.)
func (l *learner) dropDNS() {
	for m := range l.rules {
		if isDNS(m.Ports) {
			delete(l.rules, m)
		}
	}
}

// isDNS says whether ports are DNS's: UDP or TCP to port 53 alone.
func isDNS(p policy.Ports) bool {
	return (p.Proto == policy.ProtoUDP || p.Proto == policy.ProtoTCP) && p.Lo == 53 && p.Hi == 53
}

// sorted returns the rules in Result order: names first, by name then
// ports, then addresses, by prefix then ports. A wildcard's Names are the
// names it covers.
func (l *learner) sorted() []Rule {
	out := make([]Rule, 0, len(l.rules))
	for _, r := range l.rules {
		if r.Match.Name.Wildcard() {
			r.Names = len(r.names)
		}
		out = append(out, r.Rule)
	}
	slices.SortFunc(out, func(a, b Rule) int { return compareMatches(a.Match, b.Match) })
	return out
}

func compareMatches(a, b policy.Match) int {
	if (a.Name == "") != (b.Name == "") {
		if a.Name != "" {
			return -1
		}
		return 1
	}
	return cmp.Or(cmp.Compare(a.Name, b.Name), a.Prefix.Compare(b.Prefix), comparePorts(a.Ports, b.Ports))
}

func comparePorts(a, b policy.Ports) int {
	return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Lo, b.Lo), cmp.Compare(a.Hi, b.Hi))
}
