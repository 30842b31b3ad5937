package main

import (
	_ "embed"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"text/template"

	"github.com/cgwall/cgwall/internal/ruleset"
)

// The report: results.md, and the block of docs/performance.md between its
// markers. Samples are grouped once, by cell, into an index; every figure of
// the report is a median over the rounds of one cell (and a ratio, the
// median of the per-round ratios to a reference cell); the prose is
// report.md.tmpl, the tables are tables.go and goals.go.

// cellKey names a cell: what was measured, at which size, with which traffic.
type cellKey struct {
	variant string // an end-to-end variant, or a decision-cost rule set
	rules   int
	dsts    int    // end to end: the traffic pattern (distinct destinations)
	kind    string // decision cost: the kind of destination
	set     string // end to end: "ports", "ipv6" (IPv6 traffic), or "" for the ipv4-mixed rules that every packet misses
}

// byRound is one figure of one cell, round by round.
type byRound map[int]float64

func (b byRound) values() []float64 { return slices.Collect(maps.Values(b)) }

// cell is one aggregated figure: the median over rounds, and the median over
// rounds of its ratio to a reference taken in the same round; NaN for none.
type cell struct{ Med, Ratio float64 }

func (c cell) ok() bool { return !math.IsNaN(c.Med) }

// cellOf is the one aggregation of the report.
func cellOf(v, ref byRound) cell {
	var ratios []float64
	for round, x := range v {
		if b := ref[round]; b > 0 {
			ratios = append(ratios, x/b)
		}
	}
	return cell{median(v.values()), median(ratios)}
}

// index is the results grouped by cell, and the sizes and patterns they have.
type index struct {
	R        *results
	S        settings
	decision map[cellKey]map[int]decisionSample
	e2e      map[cellKey]map[int]e2eSample
	// interleaved is the arms of the interleaved runs, apart: their pps
	// are of turns, not of runs of their own.
	interleaved map[cellKey]map[int]e2eSample
	dns         map[cellKey]map[int]dnsSample // by variant and kind
	learned     map[cellKey]map[int]decisionSample

	DecisionSizes []int
	Sizes         []int // end to end, the logging runs aside
	PortsSizes    []int // end to end, of the ports set
	IPv6Sizes     []int // end to end, of the ipv6 set
	Patterns      []int
}

func newIndex(r *results) *index {
	ix := &index{R: r, S: r.Settings, decision: map[cellKey]map[int]decisionSample{}, e2e: map[cellKey]map[int]e2eSample{}, interleaved: map[cellKey]map[int]e2eSample{}, dns: map[cellKey]map[int]dnsSample{}, learned: map[cellKey]map[int]decisionSample{}}
	for round, dr := range r.Decision {
		for _, s := range dr.Samples {
			add(ix.decision, cellKey{variant: s.Set, rules: s.Rules, kind: s.Kind}, round, s)
			ix.DecisionSizes = append(ix.DecisionSizes, s.Rules)
		}
	}
	for _, s := range r.E2E {
		ix.Patterns = append(ix.Patterns, s.Dsts)
		if s.Interleaved {
			add(ix.interleaved, cellKey{variant: s.Variant, rules: s.Rules, dsts: s.Dsts, set: s.Set}, s.Round, s)
			continue
		}
		add(ix.e2e, cellKey{variant: s.Variant, rules: s.Rules, dsts: s.Dsts, set: s.Set}, s.Round, s)
		switch {
		case s.Set == ruleset.PortsKind.Name:
			ix.PortsSizes = append(ix.PortsSizes, s.Rules)
		case s.Set == setIPv6:
			ix.IPv6Sizes = append(ix.IPv6Sizes, s.Rules)
		case s.Variant != vCgwallLog:
			ix.Sizes = append(ix.Sizes, s.Rules)
		}
	}
	for round, dr := range r.Learned {
		for _, s := range dr.Samples {
			add(ix.learned, cellKey{variant: s.Set, rules: s.Rules, kind: s.Kind}, round, s)
		}
	}
	for _, s := range r.DNS {
		add(ix.dns, cellKey{variant: s.Variant, kind: s.Kind}, s.Round, s)
	}
	for _, xs := range []*[]int{&ix.DecisionSizes, &ix.Sizes, &ix.PortsSizes, &ix.IPv6Sizes, &ix.Patterns} {
		slices.Sort(*xs)
		*xs = slices.Compact(*xs)
	}
	return ix
}

func add[S any](m map[cellKey]map[int]S, k cellKey, round int, s S) {
	if m[k] == nil {
		m[k] = map[int]S{}
	}
	m[k][round] = s
}

func figure[S any](samples map[int]S, f func(S) float64) byRound {
	b := byRound{}
	for round, s := range samples {
		b[round] = f(s)
	}
	return b
}

func meanNs(s decisionSample) float64 { return s.MeanNs }
func pps(s e2eSample) float64         { return s.PPS }
func loadSec(s e2eSample) float64     { return s.LoadSec }

// decCell is a decision-cost figure; its ratio is to the same set's cold miss at
// 1 rule.
func (ix *index) decCell(set string, rules int, kind string, f func(decisionSample) float64) cell {
	return cellOf(figure(ix.decision[cellKey{variant: set, rules: rules, kind: kind}], f), ix.missAt1(set))
}

// missAt1 is a set's cold miss at 1 rule, round by round: the reference of
// its decision-cost ratios.
func (ix *index) missAt1(set string) byRound {
	return figure(ix.decision[cellKey{variant: set, rules: 1, kind: ruleset.Miss}], meanNs)
}

// portsCell is the ports set's cold decision cost; its ratio is to
// ipv4-mixed's, at the same size, of the same kind.
func (ix *index) portsCell(rules int, kind string) cell {
	fig := func(set string) byRound {
		return figure(ix.decision[cellKey{variant: set, rules: rules, kind: kind}], meanNs)
	}
	return cellOf(fig(ruleset.PortsKind.Name), fig(portsLike))
}

// e2eCell is a variant's packets per second with a set (see cellKey); its
// ratio is to no filter at the same size, with the same traffic, in the
// same slots.
func (ix *index) e2eCell(set, variant string, rules, dsts int) cell {
	return cellOf(ix.e2eFig(set, variant, rules, dsts, pps), ix.e2eFig(set, vNone, rules, dsts, pps))
}

func (ix *index) e2eFig(set, variant string, rules, dsts int, f func(e2eSample) float64) byRound {
	return figure(ix.e2e[cellKey{variant: variant, rules: rules, dsts: dsts, set: set}], f)
}

func (ix *index) e2eMedian(set, variant string, rules, dsts int, f func(e2eSample) float64) float64 {
	return median(ix.e2eFig(set, variant, rules, dsts, f).values())
}

// dnsMedian is a DNS figure's median over rounds.
func (ix *index) dnsMedian(variant, kind string, f func(dnsSample) float64) float64 {
	return median(figure(ix.dns[cellKey{variant: variant, kind: kind}], f).values())
}

// dnsAdded is what cgwall's resolver added to a DNS figure: the median of
// its per-round differences to dnsmasq asked directly.
func (ix *index) dnsAdded(kind string, f func(dnsSample) float64) float64 {
	direct := figure(ix.dns[cellKey{variant: vDirect, kind: kind}], f)
	var ds []float64
	for round, x := range figure(ix.dns[cellKey{variant: vCgwall, kind: kind}], f) {
		if y, ok := direct[round]; ok {
			ds = append(ds, x-y)
		}
	}
	return median(ds)
}

// anyTraffic is the median of a figure over the rounds of every pattern: the
// control plane does not depend on the traffic.
func (ix *index) anyTraffic(variant string, rules int, f func(e2eSample) float64) float64 {
	var vs []float64
	for _, dsts := range ix.Patterns {
		vs = append(vs, ix.e2eFig("", variant, rules, dsts, f).values()...)
	}
	return median(vs)
}

// best is the best run of a variant against the best run of no filter (the
// runs before and after each slot counted one by one), over all rounds at a
// size: this host switches between a fast and a slow state every few
// seconds, and a reference caught in the slow state inflates a per-round
// ratio, while the best runs are both in the fast state.
func (ix *index) best(set, variant string, rules, dsts int) float64 {
	var best, ref float64
	for _, s := range ix.e2e[cellKey{variant: variant, rules: rules, dsts: dsts, set: set}] {
		best = max(best, s.PPS)
	}
	for _, s := range ix.e2e[cellKey{variant: vNone, rules: rules, dsts: dsts, set: set}] {
		ref = max(ref, s.PPS)
		for _, p := range s.Pair {
			ref = max(ref, p)
		}
	}
	if best == 0 || ref == 0 {
		return math.NaN()
	}
	return best / ref
}

// wins counts the rounds in which a beat b with a set.
func (ix *index) wins(set, a, b string, rules, dsts int) (won, total int) {
	bs := ix.e2eFig(set, b, rules, dsts, pps)
	for round, x := range ix.e2eFig(set, a, rules, dsts, pps) {
		if y, ok := bs[round]; ok {
			total++
			if x > y {
				won++
			}
		}
	}
	return won, total
}

// floorFig is the empty-programs variant of a pattern.
type floorFig struct {
	cell
	Best  float64
	Rules int
	Hooks string // where the empty programs were attached
}

// Floor is the empty-programs variant of a set and a pattern, at the size
// it ran at.
func (ix *index) Floor(set string, dsts int) *floorFig {
	sizes := ix.Sizes
	if set == setIPv6 {
		sizes = ix.IPv6Sizes
	}
	for _, n := range sizes {
		if c := ix.e2eCell(set, vFloor, n, dsts); c.ok() {
			// Runs from before the samples named their hooks attached
			// empty programs at egress and sendmsg4.
			hooks := []string{"egress", "sendmsg4"}
			for _, s := range ix.e2e[cellKey{variant: vFloor, rules: n, dsts: dsts, set: set}] {
				if len(s.Hooks) > 0 {
					hooks = s.Hooks
				}
			}
			return &floorFig{c, ix.best(set, vFloor, n, dsts), n, andList(hooks)}
		}
	}
	return nil
}

// SendmsgJudged says whether cgwall's sendmsg4 program ran on the traffic
// of a pattern under --log none: before issue #11 it judged each
// unconnected datagram before egress judged it again; now cgwall attaches
// none there, and egress alone judges.
func (ix *index) SendmsgJudged(dsts int) bool {
	for _, n := range ix.Sizes {
		for _, s := range ix.e2e[cellKey{variant: vCgwall, rules: n, dsts: dsts}] {
			if s.SendmsgNs > 0 {
				return true
			}
		}
	}
	return false
}

// andList is "a", "a and b", "a, b and c".
func andList(xs []string) string {
	if len(xs) <= 1 {
		return strings.Join(xs, "")
	}
	return strings.Join(xs[:len(xs)-1], ", ") + " and " + xs[len(xs)-1]
}

// table is a Markdown table whose first left columns are aligned left and
// the others right.
type table struct {
	head []string
	left int
	rows [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

// dropDashes removes column i if no row has a figure in it.
func (t *table) dropDashes(i int) {
	for _, r := range t.rows {
		if r[i] != dash {
			return
		}
	}
	t.head = slices.Delete(t.head, i, i+1)
	for j, r := range t.rows {
		t.rows[j] = slices.Delete(r, i, i+1)
	}
}

func (t *table) String() string {
	var b strings.Builder
	row := func(cells []string) { b.WriteString("| " + strings.Join(cells, " | ") + " |\n") }
	row(t.head)
	for i := range t.head {
		if i < t.left {
			b.WriteString("|---")
		} else {
			b.WriteString("|---:")
		}
	}
	b.WriteString("|\n")
	for _, r := range t.rows {
		row(r)
	}
	return b.String()
}

//go:embed report.md.tmpl
var reportText string

var reportTmpl = template.Must(template.New("").Funcs(template.FuncMap{
	"human":   human,
	"pattern": patternName,
	"sub":     func(a, b int) int { return a - b },
	"mul":     func(a, b int) int { return a * b },
	"kilo":    func(x float64) float64 { return x / 1000 },
	"pct":     func(x float64) float64 { return 100 * x },
}).Parse(reportText))

func (ix *index) markdown() (string, error) {
	var b strings.Builder
	err := reportTmpl.ExecuteTemplate(&b, "report", ix)
	return b.String(), err
}

func patternName(dsts int) string {
	if dsts == 1 {
		return "1 destination (connected)"
	}
	return fmt.Sprintf("%d destinations (unconnected)", dsts)
}
