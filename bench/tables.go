package main

import (
	"fmt"
	"math"
	"slices"

	"github.com/cgwall/cgwall/internal/ruleset"
)

// The tables of the report and the figures its prose quotes, in the order
// of report.md.tmpl. Every figure comes from the index.

const dash = "—" // a cell that was not measured

// Overhead is the timer cost subtracted from every decision-cost run.
func (ix *index) Overhead() float64 {
	var ovs []float64
	for _, round := range ix.R.Decision {
		ovs = append(ovs, round.OverheadNs)
	}
	return median(ovs)
}

// DecisionPool is the largest pool of destinations of a kind, and about
// how many runs a cell had in a round.
func (ix *index) DecisionPool() (pool struct{ Dsts, Runs int }) {
	for _, round := range ix.R.Decision {
		for _, s := range round.Samples {
			pool.Dsts, pool.Runs = max(pool.Dsts, s.Dsts), max(pool.Runs, s.Runs)
		}
	}
	if pool.Runs >= 10_000 {
		pool.Runs = pool.Runs / 1000 * 1000
	}
	return pool
}

func (ix *index) DecisionTable() string {
	t := table{head: []string{"set", "rules", "hit", "hit-prefix", "miss", "miss p99", "warm hit", "warm hit-prefix", "warm miss"}, left: 1}
	warm := func(s decisionSample) float64 { return s.WarmNs }
	for _, k := range decisionKinds {
		for _, n := range ix.DecisionSizes {
			row := []string{k.Name, human(n)}
			measured := false
			for _, kind := range ruleset.DestinationKinds {
				c := ix.decCell(k.Name, n, kind, meanNs)
				row = append(row, withRatio(c, "%.1f×"))
				measured = measured || c.ok()
			}
			if !measured {
				continue // a set this run did not measure
			}
			p99 := ix.decCell(k.Name, n, ruleset.Miss, func(s decisionSample) float64 { return s.P99Ns })
			row = append(row, orDash(p99.Med, "%.0f"))
			for _, kind := range ruleset.DestinationKinds {
				c := ix.decCell(k.Name, n, kind, warm)
				row = append(row, cellText(c, "%.0f", c.Med))
			}
			t.add(row...)
		}
	}
	return t.String()
}

// PortsTable sets the ports set's cold decision cost against ipv4-mixed's of
// the same size, kind by kind; for the port kinds, ipv4-mixed was sent the
// same addresses.
func (ix *index) PortsTable() string {
	kinds := slices.Concat(ruleset.PortKinds, ruleset.DestinationKinds)
	t := table{head: append([]string{"rules", "set"}, kinds...), left: 2}
	for _, n := range ix.DecisionSizes {
		ports, like := []string{human(n), ruleset.PortsKind.Name}, []string{human(n), portsLike}
		measured := false
		for _, kind := range kinds {
			c := ix.portsCell(n, kind)
			ports = append(ports, cellText(c, "%.0f (%.2f×)", c.Med, c.Ratio))
			like = append(like, orDash(ix.decCell(portsLike, n, kind, meanNs).Med, "%.0f"))
			measured = measured || c.ok()
		}
		if measured {
			t.add(ports...)
			t.add(like...)
		}
	}
	if len(t.rows) == 0 {
		return ""
	}
	return t.String()
}

// PPSTable is one traffic pattern's packets per second at every size.
func (ix *index) PPSTable(dsts int) string {
	t := table{head: append([]string{"rules", "no filter"}, e2eVariants...)}
	for _, n := range ix.Sizes {
		base := ix.e2eCell("", vNone, n, dsts)
		if !base.ok() {
			continue
		}
		row := []string{human(n), fmt.Sprintf("%.0f", base.Med/1000)}
		for _, v := range e2eVariants {
			c := ix.e2eCell("", v, n, dsts)
			row = append(row, cellText(c, "%.0f (%.1f%% / %.1f%%)", c.Med/1000, 100*c.Ratio, 100*ix.best("", v, n, dsts)))
		}
		t.add(row...)
	}
	return t.String()
}

// PortsPPSTable is packets per second with the ports set, cgwall against
// nftables.
func (ix *index) PortsPPSTable() string {
	return ix.setPPSTable(ruleset.PortsKind.Name, ix.PortsSizes, "sendmsg4")
}

// IPv6PPSTable is packets per second with the ipv6 set and IPv6 traffic,
// cgwall against nftables.
func (ix *index) IPv6PPSTable() string { return ix.setPPSTable(setIPv6, ix.IPv6Sizes, "sendmsg6") }

// setPPSTable is packets per second with a set other than ipv4-mixed's,
// cgwall against nftables, and cgwall's programs' run time.
func (ix *index) setPPSTable(set string, sizes []int, sendmsg string) string {
	t := table{head: []string{"traffic", "rules", "no filter", vCgwall, vNft, "cgwall ahead in", "cgwall egress ns/packet", sendmsg + " ns/packet"}, left: 1}
	for _, dsts := range ix.Patterns {
		for _, n := range sizes {
			base, c, nft := ix.e2eCell(set, vNone, n, dsts), ix.e2eCell(set, vCgwall, n, dsts), ix.e2eCell(set, vNft, n, dsts)
			if !base.ok() {
				continue
			}
			won, total := ix.wins(set, vCgwall, vNft, n, dsts)
			prog := func(f func(e2eSample) float64) string { return costText(ix.e2eMedian(set, vCgwall, n, dsts, f)) }
			t.add(patternName(dsts), human(n), fmt.Sprintf("%.0f", base.Med/1000), cellText(c, "%.0f (%.1f%%)", c.Med/1000, 100*c.Ratio),
				cellText(nft, "%.0f (%.1f%%)", nft.Med/1000, 100*nft.Ratio), fmt.Sprintf("%d of %d rounds", won, total),
				prog(func(s e2eSample) float64 { return s.ProgNs }), prog(func(s e2eSample) float64 { return s.SendmsgNs }))
		}
	}
	if len(t.rows) == 0 {
		return ""
	}
	t.dropDashes(7) // no sendmsg program where cgwall attached none
	return t.String()
}

// ProgTable sets cgwall's programs' own run time against what cgwall added
// end to end.
func (ix *index) ProgTable() string {
	t := table{head: []string{"traffic", "rules", "egress ns/packet", "sendmsg4 ns/packet", "added ns/packet end to end"}, left: 1}
	for _, dsts := range ix.Patterns {
		for _, n := range ix.Sizes {
			eg := ix.e2eMedian("", vCgwall, n, dsts, func(s e2eSample) float64 { return s.ProgNs })
			if math.IsNaN(eg) || eg == 0 {
				continue
			}
			sm := ix.e2eMedian("", vCgwall, n, dsts, func(s e2eSample) float64 { return s.SendmsgNs })
			added := 1e9/ix.e2eCell("", vCgwall, n, dsts).Med - 1e9/ix.e2eCell("", vNone, n, dsts).Med
			t.add(patternName(dsts), human(n), fmt.Sprintf("%.0f", eg), costText(sm), fmt.Sprintf("%.0f", added))
		}
	}
	t.dropDashes(3) // no sendmsg4 program where cgwall attached none
	return t.String()
}

func (ix *index) LoadTable() string {
	t := table{head: []string{"rules"}}
	for _, v := range e2eVariants {
		t.head = append(t.head, v+" s", v+" MiB")
	}
	t.head = append(t.head, "cgwall memlock MiB")
	for _, n := range ix.Sizes {
		row := []string{human(n)}
		for _, v := range e2eVariants {
			s := ix.anyTraffic(v, n, loadSec)
			if math.IsNaN(s) {
				row = append(row, dash, dash)
				continue
			}
			row = append(row, fmt.Sprintf("%.3f", s), fmt.Sprintf("%.1f", ix.anyTraffic(v, n, func(s e2eSample) float64 { return s.KernelMiB })))
		}
		row = append(row, fmt.Sprintf("%.2f", ix.anyTraffic(vCgwall, n, func(s e2eSample) float64 { return s.Memlock })))
		t.add(row...)
	}
	return t.String()
}

// BreakdownTable is where cgwall's load time goes, if it was measured.
func (ix *index) BreakdownTable() string {
	if len(ix.R.LoadBreakdown) == 0 {
		return ""
	}
	t := table{head: []string{"rules", "policy.LoadFile (YAML) s", "policy.AddList (list file) s", "datapath.Load + Commit s", "cgwall run to ready s"}}
	for _, lb := range ix.R.LoadBreakdown {
		t.add(human(lb.Rules), fmt.Sprintf("%.3f", median(lb.ParseSec)), orDash(median(lb.ListSec), "%.3f"),
			fmt.Sprintf("%.3f", median(lb.LoadSec)), fmt.Sprintf("%.3f", ix.anyTraffic(vCgwall, lb.Rules, loadSec)))
	}
	return t.String()
}

// LogTable is --log all against --log none, if the logging runs were made.
func (ix *index) LogTable() string {
	if len(ix.S.Patterns) == 0 {
		return ""
	}
	n, dsts := ix.S.LogRules, ix.S.Patterns[0] // the logging pair runs on the first pattern only
	// The ratio is to --log none, in the same round.
	all := cellOf(ix.e2eFig("", vCgwallLog, n, dsts, pps), ix.e2eFig("", vCgwall, n, dsts, pps))
	if !all.ok() {
		return ""
	}
	fig := func(f func(e2eSample) float64) float64 { return ix.e2eMedian("", vCgwallLog, n, dsts, f) }
	events := fig(func(s e2eSample) float64 { return float64(s.Events) })
	lost := fig(func(s e2eSample) float64 { return float64(s.Lost) })
	share := fig(func(s e2eSample) float64 {
		if s.Events+s.Lost == 0 {
			return math.NaN()
		}
		return float64(s.Lost) / float64(s.Events+s.Lost)
	})
	t := table{head: []string{"--log", "kpps", "ratio to --log none", "events printed", "events lost", "lost share"}, left: 1}
	t.add("none", fmt.Sprintf("%.0f", ix.e2eCell("", vCgwall, n, dsts).Med/1000), "100%", dash, dash, dash)
	t.add("all", fmt.Sprintf("%.0f", all.Med/1000), fmt.Sprintf("%.1f%%", 100*all.Ratio), fmt.Sprintf("%.0f", events), fmt.Sprintf("%.0f", lost), fmt.Sprintf("%.1f%%", 100*share))
	return t.String()
}

// execMs are the medians of the exec latency, plain and through cgwall exec,
// and of the host's grace period, NaN where it was not timed.
type execMs struct{ Plain, Cgwall, Added, Grace float64 }

// ExecMs is the median exec latency, plain and through cgwall exec.
func (ix *index) ExecMs() execMs {
	p, c := median(ix.R.Exec.PlainMs), median(ix.R.Exec.CgwallMs)
	return execMs{p, c, c - p, median(ix.R.Exec.GraceMs)}
}

// cellText formats a cell's figures, or a dash for a cell that was not
// measured.
func cellText(c cell, layout string, args ...any) string {
	if !c.ok() {
		return dash
	}
	return fmt.Sprintf(layout, args...)
}

// withRatio is a cell's median with its ratio in brackets, laid out by
// ratio; the median alone where the run measured no reference for the
// ratio (a decision run without the 1-rule size).
func withRatio(c cell, ratio string) string {
	if math.IsNaN(c.Ratio) {
		return cellText(c, "%.0f", c.Med)
	}
	return cellText(c, "%.0f ("+ratio+")", c.Med, c.Ratio)
}

// costText is a program's run time per packet: a dash where it did not run
// (not attached, or not on that traffic's path).
func costText(ns float64) string {
	if ns == 0 {
		return dash
	}
	return orDash(ns, "%.0f")
}

func orDash(x float64, layout string) string {
	if math.IsNaN(x) {
		return dash
	}
	return fmt.Sprintf(layout, x)
}

// DNSTable sets lookups through cgwall's resolver against the same lookups
// asked of dnsmasq directly.
func (ix *index) DNSTable() string {
	if len(ix.dns) == 0 {
		return ""
	}
	t := table{head: []string{"", vDirect, "through cgwall", "added"}, left: 1}
	for _, q := range []struct {
		name string
		f    func(dnsSample) float64
	}{
		{"p50", func(s dnsSample) float64 { return s.P50Us }},
		{"p90", func(s dnsSample) float64 { return s.P90Us }},
		{"p99", func(s dnsSample) float64 { return s.P99Us }},
		{"mean", func(s dnsSample) float64 { return s.MeanUs }},
	} {
		t.add("lookup, one at a time: "+q.name+" µs", orDash(ix.dnsMedian(vDirect, dnsLatency, q.f), "%.0f"),
			orDash(ix.dnsMedian(vCgwall, dnsLatency, q.f), "%.0f"), orDash(ix.dnsAdded(dnsLatency, q.f), "%+.0f"))
	}
	perSec := func(s dnsSample) float64 { return s.PerSec }
	failed := func(s dnsSample) float64 { return float64(s.Failed) }
	c := cellOf(figure(ix.dns[cellKey{variant: vCgwall, kind: dnsThroughput}], perSec), figure(ix.dns[cellKey{variant: vDirect, kind: dnsThroughput}], perSec))
	t.add(fmt.Sprintf("lookups per second, %d clients at once", ix.S.DNSClients), orDash(ix.dnsMedian(vDirect, dnsThroughput, perSec), "%.0f"),
		cellText(c, "%.0f (%.1f%%)", c.Med, 100*c.Ratio), dash)
	t.add("failed lookups under that load, per round", orDash(ix.dnsMedian(vDirect, dnsThroughput, failed), "%.0f"),
		orDash(ix.dnsMedian(vCgwall, dnsThroughput, failed), "%.0f"), dash)
	return t.String()
}

// LearnedTable is the cold decision cost with learned addresses, against
// the same addresses as address rules; in brackets the ratio to those, per
// round, median.
func (ix *index) LearnedTable() string {
	if len(ix.R.Learned) == 0 {
		return ""
	}
	n := ix.S.LearnedAddrs
	kinds := []string{ruleset.Hit, ruleset.Miss}
	t := table{head: []string{"set", "addresses", "hit", "miss", "hit p99", "miss p99", "warm hit", "warm miss"}, left: 1}
	for _, set := range []string{learnedSet, learnedLike} {
		row := []string{set, human(n)}
		fig := func(set, kind string, f func(decisionSample) float64) byRound {
			return figure(ix.learned[cellKey{variant: set, rules: n, kind: kind}], f)
		}
		for _, kind := range kinds {
			c := cellOf(fig(set, kind, meanNs), fig(learnedLike, kind, meanNs))
			if set == learnedSet {
				row = append(row, cellText(c, "%.0f (%.2f×)", c.Med, c.Ratio))
			} else {
				row = append(row, orDash(c.Med, "%.0f"))
			}
		}
		for _, f := range []func(decisionSample) float64{func(s decisionSample) float64 { return s.P99Ns }, func(s decisionSample) float64 { return s.WarmNs }} {
			for _, kind := range kinds {
				row = append(row, orDash(median(fig(set, kind, f).values()), "%.0f"))
			}
		}
		t.add(row...)
	}
	return t.String()
}

// LearnSec is how long datapath.Learn took to learn the addresses of the
// learned set, median over rounds.
func (ix *index) LearnSec() float64 {
	var ss []float64
	for _, dr := range ix.R.Learned {
		if s, ok := dr.LoadSec[learnedSet+"/"+human(ix.S.LearnedAddrs)+" learn"]; ok {
			ss = append(ss, s)
		}
	}
	return median(ss)
}

// lineCosts is one cold line's cost at one size, round by round.
func (ix *index) lineCosts(size int) byRound {
	b := byRound{}
	for round, dr := range ix.R.Decision {
		for _, s := range dr.Lines {
			if s.Bytes == size {
				b[round] = s.MeanNs
			}
		}
	}
	return b
}

// lineFloor is the least that a decision reading one cold line of a table
// of size bytes costs, round by round: the 1-rule miss of largestColdSet,
// whose maps stay cached, with its line of the smallest table traded for
// one of this size. Its ratio is to that miss.
func (ix *index) lineFloor(size int) cell {
	ref := ix.missAt1(largestColdSet)
	small, big := ix.lineCosts(lineSizes[0]), ix.lineCosts(size)
	floor := byRound{}
	for round, r := range ref {
		s, okS := small[round]
		b, okB := big[round]
		if okS && okB {
			floor[round] = r - s + b
		}
	}
	return cellOf(floor, ref)
}

// LineTable is what one cold line costs by the size of its table, and what
// that puts a decision at.
func (ix *index) LineTable() string {
	t := table{head: []string{"table", "one cold line, ns", "a decision that reads one, ns", "× 1 rule's miss"}, left: 1}
	for _, size := range lineSizes {
		line := median(ix.lineCosts(size).values())
		if math.IsNaN(line) {
			continue
		}
		f := ix.lineFloor(size)
		t.add(bytesText(size), fmt.Sprintf("%.0f", line), orDash(f.Med, "%.0f"), orDash(f.Ratio, "%.1f×"))
	}
	if len(t.rows) == 0 {
		return ""
	}
	return t.String()
}

// bytesText is 8 KiB, 2 MiB.
func bytesText(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}
