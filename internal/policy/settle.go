package policy

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
)

// conflict is a rule that settle dropped because an earlier rule has its
// direction and match with the other action, or a port range of its prefix
// and protocol that it overlaps partly.
type conflict struct {
	pos  int // where it was in Rules
	rule Rule
	msg  string
}

// settle makes the rules appended to Rules since from what AddMatch would
// have made them, one at a time: a rule whose direction and match an earlier
// rule has is dropped, quietly if the actions agree, and so is one whose port
// range overlaps partly with a range kept before it; the others are numbered
// in order. It returns the conflicting ones in order.
//
// A million rules are settled by sorting them, not by looking each up in a
// map, whose random accesses cost more (BenchmarkSettle/by, a million rules:
// 335 ms by map → 49 ms by sort).
func (p *Policy) settle(from int) []conflict {
	repeats := p.repeats(from)
	var conflicts []conflict
	// The ranges of the rules kept, built when the first range comes:
	// most lists have none.
	var ranges map[ruleKey][]Ports
	// The positions of the rules dropped for a partial overlap. A repeat
	// of one is not a repeat of a rule the policy has: as Add would, it is
	// checked, and dropped, again.
	var overlapped map[int]bool
	kept := from
	for i := from; i < len(p.Rules); i++ {
		r := p.Rules[i]
		if len(repeats) > 0 && repeats[0].pos == i {
			first := repeats[0].first
			repeats = repeats[1:]
			if !overlapped[first] {
				if p.Rules[first].Action != r.Action {
					conflicts = append(conflicts, conflict{i, r, fmt.Sprintf("%s is both blocked and allowed for %s", r.Match(), r.Dir)})
				}
				continue
			}
		}
		if r.Ports.Width() >= 2 {
			if ranges == nil {
				ranges = make(map[ruleKey][]Ports)
				for _, k := range p.Rules[:kept] {
					addRange(ranges, k)
				}
			}
			if o, ok := overlapping(ranges, r); ok {
				conflicts = append(conflicts, conflict{i, r, overlapMessage(r, o)})
				if overlapped == nil {
					overlapped = make(map[int]bool)
				}
				overlapped[i] = true
				continue
			}
		}
		r.ID = p.nextID
		p.nextID++
		p.Rules[kept] = r
		kept++
		if ranges != nil {
			addRange(ranges, r)
		}
	}
	clear(p.Rules[kept:]) // no stale prefixes past the end
	p.Rules = p.Rules[:kept]
	// Rebuilt on first use; the ranges are those of the rules kept.
	p.index, p.byID, p.ranges = nil, nil, ranges
	return conflicts
}

// repeat is a rule whose direction and match an earlier rule has.
type repeat struct {
	pos   int // its position in Rules
	first int // the position of the first rule with its direction and match
}

// repeats returns the repeats among Rules[from:], in order. Rules that have
// the same direction and match are found next to each other in a sorted list
// of keys: one machine word for an IPv4 rule, which is most rules of most
// lists, and a wider key for the others.
func (p *Policy) repeats(from int) []repeat {
	words := make([]uint64, 0, len(p.Rules))
	var wide []wideKey
	// A rule and its repeat must be keyed alike, so IPv4 rules get word keys
	// only if every position fits one.
	fits := len(p.Rules) <= wordRules
	for i, r := range p.Rules {
		if fits && r.Prefix.Addr().Is4() && r.Ports.Any() {
			words = append(words, wordKeyOf(r, i))
		} else {
			wide = append(wide, wideKeyOf(r, i))
		}
	}
	var out []repeat
	words = sortWords(words)
	for i, first := 1, 0; i < len(words); i++ {
		if words[i]>>wordPosBits != words[first]>>wordPosBits {
			first = i
		} else if pos := int(words[i] & wordPosMask); pos >= from {
			out = append(out, repeat{pos, int(words[first] & wordPosMask)})
		}
	}
	slices.SortFunc(wide, compareWideKeys)
	for i, first := 1, 0; i < len(wide); i++ {
		if !wide[i].sameRule(wide[first]) {
			first = i
		} else if pos := int(wide[i].pos); pos >= from {
			out = append(out, repeat{pos, int(wide[first].pos)})
		}
	}
	slices.SortFunc(out, func(a, b repeat) int { return cmp.Compare(a.pos, b.pos) })
	return out
}

// A word key is an IPv4 rule without ports in one uint64: its direction,
// address and prefix length, then its position in Rules, so that the rules of
// one prefix sort in the order they were added.
const (
	wordPosBits = 25
	wordPosMask = 1<<wordPosBits - 1
)

// wordRules is the most rules whose positions fit a word key; tests lower it
// to try the wide keys on IPv4 rules.
var wordRules = 1 << wordPosBits

func wordKeyOf(r Rule, pos int) uint64 {
	b := r.Prefix.Addr().As4()
	return uint64(r.Dir)<<63 | uint64(binary.BigEndian.Uint32(b[:]))<<31 |
		uint64(r.Prefix.Bits())<<wordPosBits | uint64(pos)
}

// wideKey is a rule's direction, prefix and ports in words that sort
// quickly, and its position in Rules, which orders the rules of the same
// match.
type wideKey struct {
	hi, lo uint64 // the address, IPv4 in its IPv6-mapped form
	tag    uint64 // ports, family, direction and prefix length
	pos    uint32
}

func wideKeyOf(r Rule, pos int) wideKey {
	a := r.Prefix.Addr()
	b := a.As16()
	tag := uint64(r.Ports.Proto)<<56 | uint64(r.Ports.Lo)<<40 | uint64(r.Ports.Hi)<<24 |
		uint64(r.Dir)<<8 | uint64(r.Prefix.Bits())
	if a.Is4() {
		tag |= 1 << 16
	}
	return wideKey{
		hi:  binary.BigEndian.Uint64(b[:8]),
		lo:  binary.BigEndian.Uint64(b[8:]),
		tag: tag,
		pos: uint32(pos),
	}
}

func (k wideKey) sameRule(o wideKey) bool {
	return k.hi == o.hi && k.lo == o.lo && k.tag == o.tag
}

func compareWideKeys(a, b wideKey) int {
	if c := cmp.Compare(a.hi, b.hi); c != 0 {
		return c
	}
	if c := cmp.Compare(a.lo, b.lo); c != 0 {
		return c
	}
	if c := cmp.Compare(a.tag, b.tag); c != 0 {
		return c
	}
	return cmp.Compare(a.pos, b.pos)
}

// sortWords sorts words with a least-significant-digit radix sort, and
// returns them sorted, in words or in a buffer as long. A comparison sort of a
// million words makes twenty rounds of branches that it cannot predict; this
// makes five sequential passes (BenchmarkSettle/keys, a million keys: 81 ms
// with slices.Sort → 28 ms).
// A digit on which every word agrees (the direction, in a list) takes none.
func sortWords(words []uint64) []uint64 {
	const digitBits = 11
	const digits = (64 + digitBits - 1) / digitBits
	const mask = 1<<digitBits - 1
	if len(words) < 1<<12 {
		slices.Sort(words)
		return words
	}
	var counts [digits][1 << digitBits]int
	for _, w := range words {
		for d := range counts {
			counts[d][w>>(d*digitBits)&mask]++
		}
	}
	src, dst := words, make([]uint64, len(words))
	for d := range counts {
		c, shift := &counts[d], d*digitBits
		if c[src[0]>>shift&mask] == len(src) {
			continue
		}
		sum := 0
		for i, n := range c {
			c[i], sum = sum, sum+n
		}
		for _, w := range src {
			j := w >> shift & mask
			dst[c[j]] = w
			c[j]++
		}
		src, dst = dst, src
	}
	return src
}
