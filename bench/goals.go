package main

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/cgwall/cgwall/internal/ruleset"
)

// The goals that issues set (first #5's), and how the report checks each
// against the figures. A goal counts as met only if it holds by every
// measure the run gives.
var goal = struct {
	decisionRatio float64 // cold decision cost at the largest size, at most this × 1 rule
	ppsRules      int     // end to end, at this many rules:
	ppsShare      float64 // at least this share of no filter, and above nftables
	loadRules     int     // cgwall run reaches its ready line with this many rules
	loadSec       float64 // in at most this many seconds
	execMs        float64 // cgwall exec adds at most this to a command's start
	readyMs       float64 // cgwall run reaches its ready line with one rule in at most this
	// issue #15's: at the largest size, cold, a hit costs at most
	// coldHit × the 1-rule miss, and a miss coldMiss ×
	coldHit, coldMiss float64
	// issue #18's: at the small sizes, for the small sets,
	smallSizes []int
	smallSets  []string
	smallMiss  float64 // a cold miss costs at most this × the 1-rule miss,
	smallFloor float64 // and pps is within this of the empty programs' share
	// issue #10's: with the ports set of this many rules,
	portsRules int
	portsRatio float64 // a cold decision costs at most this × ipv4-mixed's, and pps is above nftables'
	// issue #11's: a lookup through cgwall's resolver adds at most these
	// to the same lookup asked of the server directly,
	dnsP50Us, dnsP99Us float64
	// and address-only policies cost a packet what they cost before: see
	// baselineGoal.
	baseRatio  float64 // cold decision cost, median over cells, at most this × the baseline's
	basePoints float64 // pps share of no filter, median over cells, at most this many points below
}{
	decisionRatio: 2, coldHit: 4, coldMiss: 2, ppsRules: 100_000, ppsShare: 0.97, loadRules: 1_000_000, loadSec: 1, execMs: 20, readyMs: 20,
	smallSizes: []int{10, 100, 1000, 4000}, smallSets: []string{"ipv4-mixed", "ipv6"}, smallMiss: 1.5, smallFloor: 0.03,
	portsRules: 100_000, portsRatio: 1.3,
	dnsP50Us: 100, dnsP99Us: 1000,
	baseRatio: 1.1, basePoints: 3,
}

// goalRow is one line of the table of goals.
type goalRow struct{ goal, verdict, measured string }

// goalChecks each give the rows of one goal, none if it was not measured,
// with the issues that set it.
var goalChecks = []struct {
	issues string
	rows   func(ix *index) []goalRow
}{
	{"#5", decisionGoal}, {"#15", coldGoal}, {"#18", smallMissGoal}, {"#10", portsDecisionGoal}, {"#5", ppsGoal},
	{"#18", smallPPSGoal}, {"#10", portsPPSGoal}, {"#5", loadGoal}, {"#15", readyGoal},
	{"#5, #15", execGoal}, {"#11", dnsGoal}, {"#11", baselineGoal},
}

// Goals is the table of goals, verdicts and the figures behind them.
func (ix *index) Goals() string {
	t := table{head: []string{"goal", "issue", "verdict", "measured"}, left: 4}
	for _, check := range goalChecks {
		for _, row := range check.rows(ix) {
			t.add(row.goal, check.issues, "**"+row.verdict+"**", row.measured)
		}
	}
	if len(t.rows) == 0 {
		return ""
	}
	return t.String()
}

func verdict(met bool) string {
	if met {
		return "met"
	}
	return "missed"
}

func decisionGoal(ix *index) []goalRow {
	big, parts, met := largestCold(ix, func(string) float64 { return goal.decisionRatio })
	if parts == nil {
		return nil
	}
	base := ix.decCell(largestColdSet, 1, ruleset.Miss, meanNs)
	return []goalRow{{
		fmt.Sprintf("decision cost at %s mixed IPv4 rules, cold, ≤ %g× 1 rule", human(big), goal.decisionRatio),
		verdict(met),
		fmt.Sprintf("1 rule: %.0f ns; %s: %s", base.Med, human(big), strings.Join(parts, ", ")),
	}}
}

// coldGoal is issue #15's: at the largest size, cold, hits (of host and of
// prefix rules) within coldHit × the 1-rule miss and misses within coldMiss ×.
func coldGoal(ix *index) []goalRow {
	limit := func(kind string) float64 {
		if kind == ruleset.Miss {
			return goal.coldMiss
		}
		return goal.coldHit
	}
	big, parts, met := largestCold(ix, limit)
	if parts == nil {
		return nil
	}
	return []goalRow{{
		fmt.Sprintf("at %s mixed IPv4 rules, cold, hits ≤ %g× and misses ≤ %g× 1 rule's miss", human(big), goal.coldHit, goal.coldMiss),
		verdict(met),
		strings.Join(parts, ", ") + lineFloorText(ix),
	}}
}

// lineFloorText is what one cold line puts a decision at on this host, for
// the tables a million rules fill; empty if the run did not measure it.
func lineFloorText(ix *index) string {
	var parts []string
	for _, size := range lineSizes[1:] {
		if f := ix.lineFloor(size); f.ok() {
			parts = append(parts, fmt.Sprintf("%s %.1f×", bytesText(size), f.Ratio))
		}
	}
	if parts == nil {
		return ""
	}
	return "; a decision that reads one cold line of a table of " + strings.Join(parts, ", ") + " (this host's floor)"
}

// largestColdSet is the set whose cold decisions at the largest size
// decisionGoal and coldGoal judge.
const largestColdSet = "ipv4-mixed"

// largestCold gives the largest size of the decision runs, each kind's cold
// cost there against its limit (a ratio to the 1-rule miss), and whether
// every kind is within its limit; no parts without decision runs.
func largestCold(ix *index, limit func(kind string) float64) (big int, parts []string, met bool) {
	if len(ix.R.Decision) == 0 {
		return 0, nil, false
	}
	big, met = slices.Max(ix.DecisionSizes), true
	for _, kind := range ruleset.DestinationKinds {
		c := ix.decCell(largestColdSet, big, kind, meanNs)
		if !c.ok() {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.0f ns = %.1f× (≤ %g×)", kind, c.Med, c.Ratio, limit(kind)))
		met = met && c.Ratio <= limit(kind)
	}
	return big, parts, met
}

func ppsGoal(ix *index) []goalRow {
	var rows []goalRow
	n := goal.ppsRules
	for _, dsts := range ix.Patterns {
		c := ix.e2eCell("", vCgwall, n, dsts)
		if !c.ok() {
			continue
		}
		nft := ix.e2eCell("", vNft, n, dsts)
		won, total := ix.wins("", vCgwall, vNft, n, dsts)
		best := ix.best("", vCgwall, n, dsts)
		met := min(c.Ratio, best) >= goal.ppsShare && c.Med > nft.Med
		fig := fmt.Sprintf("cgwall %.1f%% of no filter by the per-round median, %.1f%% best against best (%.0f kpps); "+
			"nftables %.1f%% / %.1f%% (%.0f kpps); cgwall ahead in %d of %d rounds",
			100*c.Ratio, 100*best, c.Med/1000, 100*nft.Ratio, 100*ix.best("", vNft, n, dsts), nft.Med/1000, won, total)
		if fl := ix.Floor("", dsts); fl != nil {
			fig += fmt.Sprintf("; empty programs on the same hooks: %.1f%% / %.1f%%", 100*fl.Ratio, 100*fl.Best)
		}
		name := fmt.Sprintf("pps at %s rules ≥ %.0f%% of no filter and above nftables; %s", human(n), 100*goal.ppsShare, patternName(dsts))
		rows = append(rows, goalRow{name, verdict(met), fig})
	}
	return rows
}

func loadGoal(ix *index) []goalRow {
	t := ix.anyTraffic(vCgwall, goal.loadRules, loadSec)
	if math.IsNaN(t) {
		return nil
	}
	return []goalRow{{fmt.Sprintf("loading %s rules ≤ %g s", human(goal.loadRules), goal.loadSec), verdict(t <= goal.loadSec), fmt.Sprintf("cgwall run to ready: %.2f s", t)}}
}

// readyGoal is issue #15's: run reaches its ready line with one rule soon.
func readyGoal(ix *index) []goalRow {
	t := ix.anyTraffic(vCgwall, 1, loadSec)
	if math.IsNaN(t) {
		return nil
	}
	ms := 1000 * t
	return []goalRow{{fmt.Sprintf("run to ready with 1 rule ≤ %g ms", goal.readyMs), verdict(ms <= goal.readyMs), fmt.Sprintf("%.1f ms%s", ms, ix.graceNote())}}
}

func execGoal(ix *index) []goalRow {
	name := fmt.Sprintf("exec adds ≤ %g ms", goal.execMs)
	if !ix.R.Exec.Available && ix.R.Exec.Note == "" {
		return nil // not run
	}
	if !ix.R.Exec.Available {
		return []goalRow{{name, "not measured", ix.R.Exec.Note}}
	}
	d := ix.ExecMs().Added
	return []goalRow{{name, verdict(d <= goal.execMs), fmt.Sprintf("%.1f ms%s", d, ix.graceNote())}}
}

// graceNote gives the host's grace period where the run timed it: startup
// figures depend on it on any host where a load writes map-in-map slots.
func (ix *index) graceNote() string {
	if g := ix.ExecMs().Grace; !math.IsNaN(g) {
		return fmt.Sprintf(" (this host's RCU grace period: %.1f ms)", g)
	}
	return ""
}

// smallMissGoal is issue #18's: small policies miss as cheaply as one rule.
func smallMissGoal(ix *index) []goalRow {
	var rows []goalRow
	for _, set := range goal.smallSets {
		var parts []string
		met := true
		for _, n := range goal.smallSizes {
			if c := ix.decCell(set, n, ruleset.Miss, meanNs); c.ok() {
				parts = append(parts, fmt.Sprintf("%s: %.0f ns = %.1f×", human(n), c.Med, c.Ratio))
				met = met && c.Ratio <= goal.smallMiss
			}
		}
		if len(parts) > 0 {
			base := ix.decCell(set, 1, ruleset.Miss, meanNs)
			rows = append(rows, goalRow{fmt.Sprintf("cold miss at 10 to 4k %s rules ≤ %g× 1 rule", set, goal.smallMiss), verdict(met),
				fmt.Sprintf("1 rule: %.0f ns; %s", base.Med, strings.Join(parts, ", "))})
		}
	}
	return rows
}

// smallPPSGoal is issue #18's: small policies cost packets what empty
// programs on the same hooks do, and less than nftables in every round,
// for each of the small sets: ipv4-mixed's end-to-end runs, and the ipv6
// set's with IPv6 traffic.
func smallPPSGoal(ix *index) []goalRow {
	var rows []goalRow
	for _, name := range goal.smallSets {
		set := ""
		if name == setIPv6 {
			set = setIPv6
		}
		for _, dsts := range ix.Patterns {
			if row, ok := ix.smallPPSRow(name, set, dsts); ok {
				rows = append(rows, row)
			}
		}
	}
	return rows
}

// smallPPSRow holds cgwall to the empty programs and nftables at each small
// size: by its interleaved runs, or in runs from before them by the median
// over rounds of the difference of cgwall's and the empty programs' shares
// of no filter in the same slot, where the empty programs ran at that size
// (runs from before that have them at the smallest size only, and are held
// to that).
func (ix *index) smallPPSRow(name, set string, dsts int) (goalRow, bool) {
	fl := ix.Floor(set, dsts)
	var parts []string
	met := true
	for _, n := range goal.smallSizes {
		if in, ok := ix.interleavedFig(set, n, dsts); ok {
			parts = append(parts, fmt.Sprintf("%s: cgwall %.1f%%, empty programs %.1f%% (%+.1f points), nftables %.1f%%, cgwall ahead in %d of %d",
				human(n), 100*in.cgwall, 100*in.floor, 100*in.gap, 100*in.nft, in.won, in.total))
			met = met && in.gap >= -goal.smallFloor && in.won == in.total
			continue
		}
		c := ix.e2eCell(set, vCgwall, n, dsts)
		if !c.ok() || fl == nil {
			continue
		}
		won, total := ix.wins(set, vCgwall, vNft, n, dsts)
		gap := c.Ratio - fl.Ratio
		if g := ix.floorGap(set, n, dsts); !math.IsNaN(g) {
			gap = g
		}
		parts = append(parts, fmt.Sprintf("%s: %.1f%% (%+.1f points), ahead of nftables in %d of %d", human(n), 100*c.Ratio, 100*gap, won, total))
		met = met && gap >= -goal.smallFloor && won == total
	}
	return goalRow{fmt.Sprintf("pps at 10 to 4k %s rules within %.0f points of empty programs on the same hooks, in the same rounds, and above nftables every round; %s",
		name, 100*goal.smallFloor, patternName(dsts)), verdict(met), strings.Join(parts, "; ")}, len(parts) > 0
}

// interleavedFig is one size's interleaved runs: medians over rounds of
// each arm's share of no filter in the same run, and
// of cgwall's less the empty programs'; and the rounds in which cgwall's
// share was above nftables'.
type interleavedFig struct {
	cgwall, floor, nft, gap float64
	won, total              int
}

func (ix *index) interleavedFig(set string, rules, dsts int) (interleavedFig, bool) {
	share := func(v string) byRound {
		out := byRound{}
		ref := ix.interleaved[cellKey{variant: vNone, rules: rules, dsts: dsts, set: set}]
		for round, s := range ix.interleaved[cellKey{variant: v, rules: rules, dsts: dsts, set: set}] {
			if b := ref[round].PPS; b > 0 {
				out[round] = s.PPS / b
			}
		}
		return out
	}
	c, f, t := share(vCgwall), share(vFloor), share(vNft)
	var fig interleavedFig
	var gaps []float64
	for round, x := range c {
		if y, ok := f[round]; ok {
			gaps = append(gaps, x-y)
		}
		if y, ok := t[round]; ok {
			fig.total++
			if x > y {
				fig.won++
			}
		}
	}
	if len(gaps) == 0 {
		return fig, false
	}
	fig.cgwall, fig.floor, fig.nft, fig.gap = median(c.values()), median(f.values()), median(t.values()), median(gaps)
	return fig, true
}

// floorGap is the median over rounds of cgwall's share of no filter less
// the empty programs' in the same slot, at one size; NaN where the empty
// programs did not run at that size.
func (ix *index) floorGap(set string, rules, dsts int) float64 {
	share := func(v string) byRound {
		c, ref := ix.e2eFig(set, v, rules, dsts, pps), ix.e2eFig(set, vNone, rules, dsts, pps)
		out := byRound{}
		for round, x := range c {
			if b := ref[round]; b > 0 {
				out[round] = x / b
			}
		}
		return out
	}
	fl := share(vFloor)
	var gaps []float64
	for round, x := range share(vCgwall) {
		if y, ok := fl[round]; ok {
			gaps = append(gaps, x-y)
		}
	}
	return median(gaps)
}

// portsDecisionGoal is issue #10's: port rules cost a cold decision little
// more than address-only rules of the same size, kind by kind.
func portsDecisionGoal(ix *index) []goalRow {
	n := goal.portsRules
	var parts []string
	met := true
	for _, kind := range slices.Concat(ruleset.PortKinds, ruleset.DestinationKinds) {
		if c := ix.portsCell(n, kind); c.ok() {
			parts = append(parts, fmt.Sprintf("%s %.0f ns = %.2f×", kind, c.Med, c.Ratio))
			met = met && c.Ratio <= goal.portsRatio
		}
	}
	if len(parts) == 0 {
		return nil
	}
	return []goalRow{{fmt.Sprintf("decision cost at %s rules, 20%% with ports, cold, ≤ %g× %s rules of the same size", human(n), goal.portsRatio, portsLike),
		verdict(met), strings.Join(parts, ", ")}}
}

// portsPPSGoal is issue #10's: with port rules too, cgwall passes more
// packets than nftables with the same rules.
func portsPPSGoal(ix *index) []goalRow {
	ports := ruleset.PortsKind.Name
	var rows []goalRow
	n := goal.portsRules
	for _, dsts := range ix.Patterns {
		c, nft := ix.e2eCell(ports, vCgwall, n, dsts), ix.e2eCell(ports, vNft, n, dsts)
		if !c.ok() || !nft.ok() {
			continue
		}
		won, total := ix.wins(ports, vCgwall, vNft, n, dsts)
		rows = append(rows, goalRow{fmt.Sprintf("pps at %s rules, 20%% with ports, above nftables with the same rules; %s", human(n), patternName(dsts)),
			verdict(c.Med > nft.Med), fmt.Sprintf("cgwall %.0f kpps (%.1f%% of no filter), nftables %.0f kpps (%.1f%%); cgwall ahead in %d of %d rounds",
				c.Med/1000, 100*c.Ratio, nft.Med/1000, 100*nft.Ratio, won, total)})
	}
	return rows
}

// dnsGoal is issue #11's: what cgwall's resolver adds to a lookup, at the
// median and at the 99th percentile.
func dnsGoal(ix *index) []goalRow {
	if ix.R.DNSNote != "" {
		return []goalRow{{fmt.Sprintf("a lookup through cgwall's resolver adds ≤ %s at p50, ≤ %s at p99", microseconds(goal.dnsP50Us), microseconds(goal.dnsP99Us)), "not measured", ix.R.DNSNote}}
	}
	var rows []goalRow
	for _, q := range []struct {
		name string
		f    func(dnsSample) float64
		max  float64
	}{{"p50", func(s dnsSample) float64 { return s.P50Us }, goal.dnsP50Us}, {"p99", func(s dnsSample) float64 { return s.P99Us }, goal.dnsP99Us}} {
		added := ix.dnsAdded(dnsLatency, q.f)
		if math.IsNaN(added) {
			continue
		}
		rows = append(rows, goalRow{fmt.Sprintf("a lookup through cgwall's resolver adds ≤ %s at %s", microseconds(q.max), q.name), verdict(added <= q.max),
			fmt.Sprintf("dnsmasq directly %.0f µs, through cgwall %.0f µs: %+.0f µs (median of the per-round differences, %s lookups a round)",
				ix.dnsMedian(vDirect, dnsLatency, q.f), ix.dnsMedian(vCgwall, dnsLatency, q.f), added, human(ix.S.DNSLookups))})
	}
	return rows
}

// microseconds is "100 µs" or "1 ms".
func microseconds(us float64) string {
	if us >= 1000 {
		return fmt.Sprintf("%g ms", us/1000)
	}
	return fmt.Sprintf("%g µs", us)
}

// baselineGoal is issue #11's "no change in per-packet cost for
// address-only policies": this run's cold decision costs of the
// address-only sets and cgwall's end-to-end share of no filter, cell by
// cell, against the same cells of a baseline run (-baseline), the tree
// before the change. This host's noise is large, so the verdict is on the
// median over cells; the worst cell is shown beside it.
func baselineGoal(ix *index) []goalRow {
	if ix.R.Baseline == nil {
		return nil
	}
	base := newIndex(ix.R.Baseline)
	var rows []goalRow
	type change struct {
		cell string
		x    float64
	}
	var ratios, points []change
	for k, samples := range ix.decision {
		if !slices.ContainsFunc(ruleset.Kinds, func(s ruleset.Kind) bool { return s.Name == k.variant }) {
			continue // address-only sets only
		}
		now, was := median(figure(samples, meanNs).values()), median(figure(base.decision[k], meanNs).values())
		if !math.IsNaN(now) && !math.IsNaN(was) && was > 0 {
			ratios = append(ratios, change{fmt.Sprintf("%s %s %s", k.variant, human(k.rules), k.kind), now / was})
		}
	}
	for k := range ix.e2e {
		if k.variant != vCgwall || k.set != "" {
			continue
		}
		now, was := ix.e2eCell("", vCgwall, k.rules, k.dsts), base.e2eCell("", vCgwall, k.rules, k.dsts)
		if now.ok() && was.ok() {
			points = append(points, change{fmt.Sprintf("%s rules, %s", human(k.rules), patternName(k.dsts)), 100 * (now.Ratio - was.Ratio)})
		}
	}
	summary := func(cs []change, worse func(a, b change) int) (float64, change) {
		var xs []float64
		for _, c := range cs {
			xs = append(xs, c.x)
		}
		return median(xs), slices.MaxFunc(cs, worse)
	}
	if len(ratios) > 0 {
		med, worst := summary(ratios, func(a, b change) int { return cmp.Compare(a.x, b.x) })
		rows = append(rows, goalRow{fmt.Sprintf("address-only policies: cold decision cost ≤ %g× the baseline's (median over cells)", goal.baseRatio), verdict(med <= goal.baseRatio),
			fmt.Sprintf("median %.2f× over %d cells; the highest %.2f× (%s); baseline tree %s", med, len(ratios), worst.x, worst.cell, ix.R.Baseline.Commit)})
	}
	if len(points) > 0 {
		med, worst := summary(points, func(a, b change) int { return cmp.Compare(b.x, a.x) })
		rows = append(rows, goalRow{fmt.Sprintf("address-only policies: cgwall's pps share of no filter at most %g points below the baseline's (median over cells)", goal.basePoints), verdict(med >= -goal.basePoints),
			fmt.Sprintf("median %+.1f points over %d cells; the lowest %+.1f (%s); baseline tree %s", med, len(points), worst.x, worst.cell, ix.R.Baseline.Commit)})
	}
	return rows
}
