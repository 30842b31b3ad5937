package policy

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strings"
)

// maxListProblems bounds how many problems of a list file are reported: a
// file that is not a list at all should not print a million lines.
const maxListProblems = 20

// AddList adds a rule for every address in a list file: one IPv4 or IPv6
// address or CIDR a line; blank lines and everything after a '#' are ignored.
// This is the format of public blocklists, and reading it is far quicker than
// YAML for hundreds of thousands of rules. A file with problems returns a
// *FileError listing them (the first 20).
func (p *Policy) AddList(path string, dir Direction, action Action) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("list file: %w", unwrapPathError(err))
	}
	// The rules go straight into Rules, with room for every line at once:
	// growing a million-rule policy step by step costs more than parsing it.
	// Repeats are found afterwards, by sorting (see settle).
	from, n := len(p.Rules), bytes.Count(data, []byte("\n"))+1
	p.Grow(n)
	lines := make([]int32, 0, n) // the line of each rule from Rules[from:]
	var problems []Problem
	s := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; s.Scan(); line++ {
		text, _, _ := strings.Cut(s.Text(), "#")
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		prefix, err := ParsePrefix(text)
		if err != nil {
			if len(problems) < maxListProblems {
				problems = append(problems, Problem{Line: line, Msg: err.Error()})
			}
			continue
		}
		p.Rules = append(p.Rules, Rule{Dir: dir, Prefix: prefix, Action: action})
		lines = append(lines, int32(line))
	}
	for _, c := range p.settle(from) {
		problems = append(problems, Problem{Line: int(lines[c.pos-from]),
			Msg: fmt.Sprintf("%s is both blocked and allowed for %s", c.rule.Prefix, c.rule.Dir)})
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("read list file %s: %w", path, err)
	}
	if len(problems) > 0 {
		slices.SortStableFunc(problems, func(a, b Problem) int { return cmp.Compare(a.Line, b.Line) })
		return &FileError{Path: path, Problems: problems[:min(len(problems), maxListProblems)]}
	}
	return nil
}

// conflict is a rule that settle dropped because an earlier rule has its
// direction and prefix with the other action.
type conflict struct {
	pos  int // where it was in Rules
	rule Rule
}

// settle makes the rules appended to Rules since from what AddPrefix would
// have made them, one at a time: a rule whose direction and prefix an earlier
// rule has is dropped, quietly if the actions agree; the others are numbered
// in order. It returns the conflicting ones in order.
//
// A million rules are settled by sorting them, not by looking each up in a
// map: the map's random accesses cost several times more.
func (p *Policy) settle(from int) []conflict {
	repeats := p.repeats(from)
	var conflicts []conflict
	kept := from
	for i := from; i < len(p.Rules); i++ {
		r := p.Rules[i]
		if len(repeats) > 0 && repeats[0].pos == i {
			if p.Rules[repeats[0].first].Action != r.Action {
				conflicts = append(conflicts, conflict{i, r})
			}
			repeats = repeats[1:]
			continue
		}
		r.ID = p.nextID
		p.nextID++
		p.Rules[kept] = r
		kept++
	}
	clear(p.Rules[kept:]) // no stale prefixes past the end
	p.Rules = p.Rules[:kept]
	// Both are rebuilt on first use.
	p.index, p.byID = nil, nil
	return conflicts
}

// repeat is a rule whose direction and prefix an earlier rule has.
type repeat struct {
	pos   int // its position in Rules
	first int // the position of the first rule with its direction and prefix
}

// repeats returns the repeats among Rules[from:], in order.
func (p *Policy) repeats(from int) []repeat {
	keys := make([]sortKey, len(p.Rules))
	for i, r := range p.Rules {
		keys[i] = sortKeyOf(r, i)
	}
	slices.SortFunc(keys, compareSortKeys)
	var out []repeat
	first := 0
	for i := 1; i < len(keys); i++ {
		if !keys[i].sameRule(keys[first]) {
			first = i
		} else if int(keys[i].pos) >= from {
			out = append(out, repeat{int(keys[i].pos), int(keys[first].pos)})
		}
	}
	slices.SortFunc(out, func(a, b repeat) int { return cmp.Compare(a.pos, b.pos) })
	return out
}

// sortKey is a rule's direction and prefix in words that sort quickly, and
// its position in Rules, which orders the rules of the same prefix.
type sortKey struct {
	hi, lo uint64 // the address, IPv4 in its IPv6-mapped form
	tag    uint32 // family, direction and prefix length
	pos    uint32
}

func sortKeyOf(r Rule, pos int) sortKey {
	a := r.Prefix.Addr()
	b := a.As16()
	tag := uint32(r.Dir)<<8 | uint32(r.Prefix.Bits())
	if a.Is4() {
		tag |= 1 << 16
	}
	return sortKey{
		hi:  binary.BigEndian.Uint64(b[:8]),
		lo:  binary.BigEndian.Uint64(b[8:]),
		tag: tag,
		pos: uint32(pos),
	}
}

func (k sortKey) sameRule(o sortKey) bool {
	return k.hi == o.hi && k.lo == o.lo && k.tag == o.tag
}

func compareSortKeys(a, b sortKey) int {
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
