// Package policy is cgwall's rule model: what a rule is, how rules are parsed
// and checked, and Decide, the pure-Go reference of the datapath's decision rule.
package policy

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
)

// Action is what a rule, or a direction's default, does with a packet. The
// values are the datapath's verdicts, which are the Aya example's ACTION
// numbers: 0 drops, 1 passes.
type Action uint8

const (
	Block Action = 0
	Allow Action = 1
)

func (a Action) String() string {
	if a == Allow {
		return "allow"
	}
	return "block"
}

// ParseAction reads "allow" or "block".
func ParseAction(s string) (Action, error) {
	switch s {
	case "allow":
		return Allow, nil
	case "block":
		return Block, nil
	}
	return 0, fmt.Errorf("%s is not an action: use allow or block", quote(s))
}

// Direction says which address of a packet a rule matches: the destination of
// egress packets or the source of ingress ones.
type Direction uint8

const (
	Egress Direction = iota
	Ingress
)

// Directions lists every direction, in datapath order.
var Directions = []Direction{Egress, Ingress}

func (d Direction) String() string {
	if d == Ingress {
		return "ingress"
	}
	return "egress"
}

// Rule is one (direction, prefix or name, ports, action) tuple. ID ties the
// datapath's counters and events back to the rule; IDs start at 1, 0 stands
// for the default. A name rule has Name set and the zero Prefix.
type Rule struct {
	// Prefix comes first so that the small fields share its last word.
	Prefix netip.Prefix
	ID     uint32
	Dir    Direction
	Action Action
	Ports  Ports
	Name   Name
}

// Match returns what the rule matches.
func (r Rule) Match() Match { return Match{Prefix: r.Prefix, Ports: r.Ports, Name: r.Name} }

func (r Rule) String() string {
	return fmt.Sprintf("%s %s %s", r.Dir, r.Action, r.Match())
}

// Policy is a set of rules and the settings that go with them.
type Policy struct {
	// Rules are the address rules. Name rules are kept apart, in Names, so
	// that everything that loads or loops over addresses (the datapath's
	// maps, a million-rule list) stays as it was.
	Rules []Rule
	// Names are the name rules, all egress. Their IDs come from the same
	// sequence as those of Rules.
	Names   []Rule
	Default [2]Action // per Direction; the zero value would block, so use New
	Audit   bool      // decide and log, but drop nothing
	Log     LogLevel  // which decisions to stream
	DenyRaw bool      // refuse raw and packet sockets

	// Positions in Rules, built on first use: a policy that is only loaded
	// into a datapath never needs them, and for a million rules they cost
	// more than reading the rules did. nil means not built.
	index  map[ruleKey]int32
	byID   map[uint32]int
	nextID uint32
	// ranges are the port ranges of the rules by direction, prefix and
	// protocol (see rangeKey), for the partial overlaps that Check refuses;
	// nil means not built.
	ranges map[ruleKey][]Ports
	// names indexes Names, built on first use; nil means not built.
	names *nameIndex
}

// ruleKey is a rule's direction and match without the pointer that
// netip.Addr carries: the index of a million rules is then half the size, and
// no work for the garbage collector.
type ruleKey struct {
	addr  [16]byte // IPv4 in its IPv6-mapped form
	bits  uint8
	dir   Direction
	is4   bool
	ports Ports
}

func keyOf(dir Direction, m Match) ruleKey {
	a := m.Prefix.Addr()
	return ruleKey{addr: a.As16(), bits: uint8(m.Prefix.Bits()), dir: dir, is4: a.Is4(), ports: m.Ports}
}

// New returns an empty policy that allows by default and logs drops.
func New() *Policy {
	return &Policy{Default: [2]Action{Allow, Allow}, Log: LogDrop, nextID: 1}
}

// Add parses a rule token (see ParseRule) and adds the rules it stands for,
// all of them or, on an error, none. The same rule twice is kept once; the
// same match with both actions is an error, since neither could be said to
// win, and so are port ranges of one prefix and protocol that overlap partly.
func (p *Policy) Add(dir Direction, action Action, rule string) error {
	matches, err := ParseRule(rule)
	if err != nil {
		return err
	}
	// The rules of one token differ in protocol or family, so none can
	// conflict with another: checking each against the policy is enough.
	for _, m := range matches {
		if err := p.Check(dir, action, m); err != nil {
			return err
		}
	}
	for _, m := range matches {
		p.add(dir, action, m)
	}
	return nil
}

// AddPrefix adds an address-only rule for an already parsed, canonical prefix.
func (p *Policy) AddPrefix(dir Direction, action Action, prefix netip.Prefix) error {
	return p.AddMatch(dir, action, Match{Prefix: prefix})
}

// AddMatch adds a rule for an already parsed, canonical match, with the next
// free ID.
func (p *Policy) AddMatch(dir Direction, action Action, m Match) error {
	if err := p.Check(dir, action, m); err != nil {
		return err
	}
	p.add(dir, action, m)
	return nil
}

// add adds a rule that Check let through, unless the policy has it.
func (p *Policy) add(dir Direction, action Action, m Match) {
	if _, ok := p.Lookup(dir, m); !ok {
		p.AddRule(Rule{ID: p.nextID, Dir: dir, Prefix: m.Prefix, Ports: m.Ports, Name: m.Name, Action: action})
	}
}

// Check says whether a rule for m with action could join the policy: not if
// the policy has m with the other action, nor if m's port range overlaps
// partly with another of its prefix (or name) and protocol, nor if m is a
// name for ingress.
func (p *Policy) Check(dir Direction, action Action, m Match) error {
	if m.Name != "" && dir != Egress {
		return ingressName(m.Name)
	}
	if r, ok := p.Lookup(dir, m); ok {
		if r.Action != action {
			return fmt.Errorf("%s is both blocked and allowed for %s", m, dir)
		}
		return nil
	}
	r := Rule{Dir: dir, Prefix: m.Prefix, Ports: m.Ports, Name: m.Name}
	if o, ok := p.overlap(r); ok {
		return errors.New(overlapMessage(r, o))
	}
	return nil
}

// overlap returns a port range of the policy that r's overlaps partly.
func (p *Policy) overlap(r Rule) (Ports, bool) {
	if r.Name != "" {
		return p.nameIndex().overlapping(r)
	}
	return overlapping(p.rangeIndex(), r)
}

// overlapMessage says that r's port range overlaps o's partly.
func overlapMessage(r Rule, o Ports) string {
	what := "address"
	if r.Name != "" {
		what = "name"
	}
	other := Match{Prefix: r.Prefix, Ports: o, Name: r.Name}
	return fmt.Sprintf("%s overlaps %s for %s: port ranges of one %s and protocol may nest but not overlap partly", r.Match(), other, r.Dir, what)
}

// rangeKey is the key of a rule's port range in Policy.ranges: its
// direction, prefix and protocol, whose ranges must nest.
func rangeKey(r Rule) ruleKey {
	return keyOf(r.Dir, Match{Prefix: r.Prefix, Ports: Ports{Proto: r.Ports.Proto}})
}

// rangeIndex returns Policy.ranges, built if it is not.
func (p *Policy) rangeIndex() map[ruleKey][]Ports {
	if p.ranges == nil {
		p.ranges = make(map[ruleKey][]Ports)
		for _, r := range p.Rules {
			addRange(p.ranges, r)
		}
	}
	return p.ranges
}

// addRange adds r's port range to an index of ranges. One port is inside a
// range or outside it, never across, so only ranges of two ports or more
// can overlap partly, and only they are kept.
func addRange(ranges map[ruleKey][]Ports, r Rule) { addRangeAt(ranges, rangeKey(r), r.Ports) }

// overlapping returns the first range of the index, in the order they were
// added, that r's port range overlaps partly. An index keeps the check of a
// list with many ranges from comparing each with every rule.
func overlapping(ranges map[ruleKey][]Ports, r Rule) (Ports, bool) {
	return overlappingAt(ranges, rangeKey(r), r.Ports)
}

// addRangeAt and overlappingAt are addRange and overlapping for an index
// of any key: of prefixes (ruleKey) or of names (nameKey).
func addRangeAt[K comparable](ranges map[K][]Ports, k K, p Ports) {
	if p.Width() >= 2 {
		ranges[k] = append(ranges[k], p)
	}
}

func overlappingAt[K comparable](ranges map[K][]Ports, k K, p Ports) (Ports, bool) {
	if p.Width() < 2 {
		return Ports{}, false
	}
	for _, o := range ranges[k] {
		if overlapsPartly(o, p) {
			return o, true
		}
	}
	return Ports{}, false
}

// AddRule adds a rule with its ID, as read back from a datapath. The caller
// guarantees that neither its prefix (or name) nor its ID is taken.
func (p *Policy) AddRule(r Rule) {
	if r.Name != "" {
		p.addName(r)
		return
	}
	if p.index != nil {
		p.index[keyOf(r.Dir, r.Match())] = int32(len(p.Rules))
	}
	if p.byID != nil {
		p.byID[r.ID] = len(p.Rules)
	}
	if p.ranges != nil {
		addRange(p.ranges, r)
	}
	p.Rules = append(p.Rules, r)
	if r.ID >= p.nextID {
		p.nextID = r.ID + 1
	}
}

// Grow makes room for n more rules.
func (p *Policy) Grow(n int) {
	p.Rules = slices.Grow(p.Rules, n)
}

// Lookup returns the rule for a direction and match.
func (p *Policy) Lookup(dir Direction, m Match) (Rule, bool) {
	if m.Name != "" {
		return p.lookupName(dir, m)
	}
	i, ok := p.position(dir, m)
	if !ok {
		return Rule{}, false
	}
	return p.Rules[i], true
}

// position returns where the rule for a direction and match is in Rules.
func (p *Policy) position(dir Direction, m Match) (int, bool) {
	if p.index == nil {
		// Sized for the room Grow made: rules are coming.
		p.index = make(map[ruleKey]int32, cap(p.Rules))
		for i, r := range p.Rules {
			p.index[keyOf(r.Dir, r.Match())] = int32(i)
		}
	}
	i, ok := p.index[keyOf(dir, m)]
	return int(i), ok
}

// Rule returns the rule with the given ID.
func (p *Policy) Rule(id uint32) (Rule, bool) {
	if p.byID == nil {
		p.byID = make(map[uint32]int, len(p.Rules))
		for i, r := range p.Rules {
			p.byID[r.ID] = i
		}
	}
	i, ok := p.byID[id]
	if !ok {
		return p.nameRule(id)
	}
	return p.Rules[i], true
}

// NextID is the ID the next added rule gets.
func (p *Policy) NextID() uint32 { return p.nextID }

// Renumber gives the rules IDs from first on, in order: the address rules,
// then the name rules. A datapath that replaces a policy renumbers the new
// one past every ID it has handed out, so that an ID never names two rules.
func (p *Policy) Renumber(first uint32) {
	p.byID, p.names = nil, nil
	for i := range p.Rules {
		p.Rules[i].ID = first + uint32(i)
	}
	first += uint32(len(p.Rules))
	for i := range p.Names {
		p.Names[i].ID = first + uint32(i)
	}
	p.nextID = first + uint32(len(p.Names))
}

// Count returns how many rules, of addresses and names, the policy has for
// a direction.
func (p *Policy) Count(dir Direction) int {
	n := 0
	for _, r := range p.Rules {
		if r.Dir == dir {
			n++
		}
	}
	for _, r := range p.Names {
		if r.Dir == dir {
			n++
		}
	}
	return n
}

// Packet is what a decision looks at: the remote address (the destination
// of egress packets, the source of ingress ones), the protocol and the
// destination port, which is the local port of an ingress packet. Port 0
// stands for no port: a protocol without ports, or a fragment after the
// first, which carries none.
type Packet struct {
	Addr  netip.Addr
	Proto uint8
	Port  uint16
}

// Decide is the reference of the datapath's decision rule. The most specific
// matching rule decides: the longest prefix containing the address that has a
// rule matching the packet; at that prefix, a port rule beats a protocol rule
// beats an address-only rule, and the narrowest port range wins. No match
// means the direction's default. IPv4-mapped IPv6 addresses are judged by the
// IPv4 rules. It returns the action and the ID of the deciding rule, 0 for
// the default.
//
// It scans every rule: it is written to be obviously right, not fast.
func (p *Policy) Decide(dir Direction, pkt Packet) (Action, uint32) {
	addr := pkt.Addr.Unmap()
	best := -1
	for i, r := range p.Rules {
		if r.Dir != dir || !r.Prefix.Contains(addr) || !r.Ports.Matches(pkt.Proto, pkt.Port) {
			continue
		}
		if best < 0 || moreSpecific(r, p.Rules[best]) {
			best = i
		}
	}
	if best < 0 {
		return p.Default[dir], 0
	}
	return p.Rules[best].Action, p.Rules[best].ID
}

// DecideLearned is Decide with the addresses that DNS answers taught: the
// reference of the datapath's decision in a policy with name rules. learned
// says under which name pattern an address was learned (nil: none was).
//
// Address rules rank above name rules: if an address rule matches the
// packet, it decides, as in Decide. Only where the address rules leave an
// egress packet to the default, and its destination was learned under a
// pattern, do the pattern's rules judge it, with Decide's precedence at one
// prefix: a port rule beats a protocol rule beats an address-only rule, the
// narrowest range winning. Then the default. An explicit --block of a prefix
// is never opened by a DNS answer (DNS rebinding), and a name's addresses
// are only DNS's guess. Ingress packets are never judged by names: name
// rules are egress only. It returns the action and the ID of the deciding
// rule, 0 for the default.
func (p *Policy) DecideLearned(dir Direction, pkt Packet, learned func(netip.Addr) (Name, bool)) (Action, uint32) {
	if action, id := p.Decide(dir, pkt); id != 0 || dir != Egress || learned == nil {
		return action, id
	}
	pattern, ok := learned(pkt.Addr.Unmap())
	if !ok {
		return p.Default[dir], 0
	}
	best := -1
	for i, r := range p.Names {
		if r.Dir != dir || r.Name != pattern || !r.Ports.Matches(pkt.Proto, pkt.Port) {
			continue
		}
		if best < 0 || r.Ports.rank() > p.Names[best].Ports.rank() {
			best = i
		}
	}
	if best < 0 {
		return p.Default[dir], 0
	}
	return p.Names[best].Action, p.Names[best].ID
}

// moreSpecific says whether a beats b when both match a packet.
func moreSpecific(a, b Rule) bool {
	if a.Prefix.Bits() != b.Prefix.Bits() {
		return a.Prefix.Bits() > b.Prefix.Bits()
	}
	return a.Ports.rank() > b.Ports.rank()
}

// DecideAddr decides for a packet of no protocol a rule names.
func (p *Policy) DecideAddr(dir Direction, addr netip.Addr) (Action, uint32) {
	return p.Decide(dir, Packet{Addr: addr})
}

// Summary describes the policy in a few lines: per direction its default and
// its rules by family and action, then the settings.
func (p *Policy) Summary() []string {
	var out []string
	for _, dir := range Directions {
		var n [2][2]int // [v6][action]
		for _, r := range p.Rules {
			if r.Dir == dir {
				v6 := 0
				if r.Prefix.Addr().Is6() {
					v6 = 1
				}
				n[v6][r.Action]++
			}
		}
		line := fmt.Sprintf("%s: default %s; IPv4: %d block, %d allow; IPv6: %d block, %d allow",
			dir, p.Default[dir], n[0][Block], n[0][Allow], n[1][Block], n[1][Allow])
		// Names only where there are some, so that the summary of an
		// address policy reads as it did.
		if dir == Egress && p.HasNames() {
			var names [2]int
			for _, r := range p.Names {
				names[r.Action]++
			}
			line += fmt.Sprintf("; names: %d block, %d allow", names[Block], names[Allow])
		}
		out = append(out, line)
	}
	out = append(out, fmt.Sprintf("audit %s, log %s, deny_raw %s", onOff(p.Audit), p.Log, onOff(p.DenyRaw)))
	return out
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// SetAction changes the action of the rule with the given ID.
func (p *Policy) SetAction(id uint32, action Action) {
	r, ok := p.Rule(id)
	switch {
	case !ok:
	case r.Name != "":
		p.Names[p.nameIndex().at[nameKeyOf(r.Dir, r.Match())]].Action = action
	default:
		i, _ := p.position(r.Dir, r.Match())
		p.Rules[i].Action = action
	}
}

// Delete removes a rule. The last rule takes its place in Rules (or Names).
func (p *Policy) Delete(dir Direction, m Match) {
	if m.Name != "" {
		p.deleteName(dir, m)
		return
	}
	i, ok := p.position(dir, m)
	if !ok {
		return
	}
	delete(p.index, keyOf(dir, m))
	p.byID = nil // rebuilt on next use: positions change below
	if p.ranges != nil && m.Ports.Width() >= 2 {
		k := rangeKey(p.Rules[i])
		p.ranges[k] = slices.DeleteFunc(p.ranges[k], func(o Ports) bool { return o == m.Ports })
	}
	last := len(p.Rules) - 1
	if i != last {
		moved := p.Rules[last]
		p.Rules[i] = moved
		p.index[keyOf(moved.Dir, moved.Match())] = int32(i)
	}
	p.Rules = p.Rules[:last]
}

// Clone returns a deep copy.
func (p *Policy) Clone() *Policy {
	c := *p
	c.Rules = slices.Clone(p.Rules)
	c.Names = slices.Clone(p.Names)
	c.index = maps.Clone(p.index)
	c.byID, c.ranges, c.names = nil, nil, nil
	return &c
}
