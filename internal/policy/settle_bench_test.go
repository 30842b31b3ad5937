package policy

import (
	"slices"
	"testing"

	"github.com/cgwall/cgwall/internal/ruleset"
)

// BenchmarkSettle times settle's two mechanisms against the same work without
// them, on the rules AddList appends for a list of a million prefixes
// (BenchmarkAddList's mix), one in a thousand of them a repeat of an earlier
// one, half of those with the other action. Pairs differ in one key, for
// benchstat -col:
//
//   - by=sort|map: settle, which finds repeats next to each other in sorted
//     keys, and settleByMap, which looks each rule up in a map of the rules
//     before it, as adding them one at a time with AddPrefix does.
//   - keys=radix|slices: sorting the one-word keys of those rules with
//     sortWords and with slices.Sort, the one step of settle where they
//     differ.
//
// Copying the unsettled rules or keys in is not timed. A run of go test
// reuses its heap from one round to the next; a fresh cgwall process also
// faults in the memory of the map or the sort buffer, so the map pays more
// there (see BenchmarkAddList).
func BenchmarkSettle(b *testing.B) {
	rules := unsettledRules(1_000_000)
	if err := sameSettling(rules); err != "" {
		b.Fatal(err)
	}
	p := New()
	for _, s := range []struct {
		name   string
		settle func(*Policy, int) []conflict
	}{{"by=sort", (*Policy).settle}, {"by=map", settleByMap}} {
		b.Run(s.name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				p.Rules = append(p.Rules[:0], rules...)
				p.nextID = 1
				b.StartTimer()
				s.settle(p, 0)
			}
		})
	}

	keys := make([]uint64, len(rules))
	for i, r := range rules {
		keys[i] = wordKeyOf(r, i)
	}
	for _, s := range []struct {
		name string
		sort func([]uint64) []uint64
	}{{"keys=radix", sortWords}, {"keys=slices", func(w []uint64) []uint64 { slices.Sort(w); return w }}} {
		b.Run(s.name, func(b *testing.B) {
			words := make([]uint64, len(keys))
			for b.Loop() {
				b.StopTimer()
				copy(words, keys)
				b.StartTimer()
				s.sort(words)
			}
		})
	}
}

// unsettledRules returns n egress block rules of the public-blocklist mix, one
// in a thousand replaced by a copy of an earlier rule, every other copy with
// the other action.
func unsettledRules(n int) []Rule {
	prefixes := ruleset.Mixed4(n).Prefixes
	rules := make([]Rule, len(prefixes))
	for i, prefix := range prefixes {
		rules[i] = Rule{Dir: Egress, Prefix: prefix, Action: Block}
		if i%1000 == 999 {
			rules[i] = rules[i/2]
			if i%2000 == 999 {
				rules[i].Action = Allow
			}
		}
	}
	return rules
}

// settleByMap does what settle does, looking each rule up in a map of the
// rules kept before it instead of sorting.
func settleByMap(p *Policy, from int) []conflict {
	index := make(map[ruleKey]int32, len(p.Rules))
	for i, r := range p.Rules[:from] {
		index[keyOf(r.Dir, r.Match())] = int32(i)
	}
	var conflicts []conflict
	kept := from
	for i := from; i < len(p.Rules); i++ {
		r := p.Rules[i]
		k := keyOf(r.Dir, r.Match())
		if j, ok := index[k]; ok {
			if p.Rules[j].Action != r.Action {
				conflicts = append(conflicts, conflict{i, r, ""})
			}
			continue
		}
		index[k] = int32(kept)
		r.ID = p.nextID
		p.nextID++
		p.Rules[kept] = r
		kept++
	}
	clear(p.Rules[kept:])
	p.Rules = p.Rules[:kept]
	p.index, p.byID = nil, nil
	return conflicts
}

// sameSettling says how settle and settleByMap differ on rules, if they do,
// so that BenchmarkSettle compares the same work.
func sameSettling(rules []Rule) string {
	got, want := New(), New()
	got.Rules, want.Rules = slices.Clone(rules), slices.Clone(rules)
	gotConflicts, wantConflicts := got.settle(0), settleByMap(want, 0)
	switch {
	case len(gotConflicts) == 0:
		return "no conflicts to settle"
	case !slices.Equal(gotConflicts, wantConflicts):
		return "settle and settleByMap find different conflicts"
	case !slices.Equal(got.Rules, want.Rules) || got.nextID != want.nextID:
		return "settle and settleByMap keep different rules"
	}
	return ""
}
