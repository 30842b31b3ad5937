package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"
)

type results struct {
	Started       time.Time        `json:"started"`
	Seconds       float64          `json:"seconds"`
	Rounds        int              `json:"rounds"`
	Quick         bool             `json:"quick"`
	Machine       string           `json:"machine"`
	Commit        string           `json:"commit"`
	Settings      settings         `json:"settings"`
	Decision      []*decisionRound `json:"decision,omitempty"`
	E2E           []e2eSample      `json:"e2e,omitempty"`
	LoadBreakdown []loadBreakdown  `json:"load_breakdown,omitempty"`
	CgwallInput   string           `json:"cgwall_input,omitempty"`
	Exec          execResult       `json:"exec"`
}

func machine() string {
	var parts []string
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		parts = append(parts, "Linux "+strings.TrimSpace(string(b)))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				parts = append(parts, strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":")))
				break
			}
		}
	}
	parts = append(parts, fmt.Sprintf("%d CPUs", runtime.NumCPU()))
	if m, err := meminfo(); err == nil {
		parts = append(parts, fmt.Sprintf("%.0f GiB", float64(m["MemTotal"])/(1<<20)))
	}
	parts = append(parts, runtime.Version())
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/cilium/ebpf" {
				parts = append(parts, "cilium/ebpf "+d.Version)
			}
		}
	}
	return strings.Join(parts, ", ")
}

func commit(repo string) string {
	out, err := exec.Command("git", "-C", repo, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown (no git)"
	}
	c := strings.TrimSpace(string(out))
	st, _ := exec.Command("git", "-C", repo, "status", "--porcelain", "--", "bpf", "internal", "cmd").Output()
	if len(strings.TrimSpace(string(st))) > 0 {
		c += " with uncommitted changes in bpf/, internal/ or cmd/"
	}
	return c
}

// cell is one aggregated figure: the median over rounds, and the median over
// rounds of its ratio to a reference taken in the same round.
type cell struct {
	med, ratio float64
	n          int
}

func (c cell) ok() bool { return c.n > 0 }

// ---- decision cost

func (r *results) decisionCell(set string, rules int, kind string, warm bool) cell {
	var vals, ratios []float64
	for _, round := range r.Decision {
		var v, base float64 = -1, -1
		for _, s := range round.Samples {
			if s.Set == set && s.Kind == kindMiss && s.Rules == 1 {
				base = s.MeanNs
			}
			if s.Set == set && s.Rules == rules && s.Kind == kind {
				v = s.MeanNs
				if warm {
					v = s.WarmNs
				}
			}
		}
		if v < 0 {
			continue
		}
		vals = append(vals, v)
		if base > 0 {
			ratios = append(ratios, v/base)
		}
	}
	return cell{median(vals), median(ratios), len(vals)}
}

func (r *results) decisionP99(set string, rules int, kind string) float64 {
	var vals []float64
	for _, round := range r.Decision {
		for _, s := range round.Samples {
			if s.Set == set && s.Rules == rules && s.Kind == kind {
				vals = append(vals, s.P99Ns)
			}
		}
	}
	return median(vals)
}

func (r *results) decisionSizes() []int {
	var sizes []int
	for _, round := range r.Decision {
		for _, s := range round.Samples {
			if !slices.Contains(sizes, s.Rules) {
				sizes = append(sizes, s.Rules)
			}
		}
	}
	slices.Sort(sizes)
	return sizes
}

func (r *results) writeDecision(w io.Writer) {
	if len(r.Decision) == 0 {
		return
	}
	var ovs []float64
	var dsts, runs int
	for _, round := range r.Decision {
		ovs = append(ovs, round.OverheadNs)
		for _, s := range round.Samples {
			dsts = max(dsts, s.Dsts)
			runs = max(runs, s.Runs)
		}
	}
	fmt.Fprintf(w, "### Decision cost, cold cache\n\n")
	fmt.Fprintf(w, "Mean ns per packet of the egress program, net of the %.0f ns that a Repeat=1 BPF_PROG_TEST_RUN costs with an empty program; "+
		"each run a different destination from a pool of up to %s per kind, about %s runs per cell and round; median of %d rounds. "+
		"In brackets: the ratio to the same set's cold miss at 1 rule, per round, median. "+
		"p99 is the 99th percentile of single runs. Warm: one packet repeated 10⁶ times (BenchmarkEgress's method).\n\n",
		median(ovs), human(dsts), human(roundTo(runs)), len(r.Decision))
	fmt.Fprintln(w, "| set | rules | hit | hit-prefix | miss | miss p99 | warm hit | warm hit-prefix | warm miss |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, k := range setKinds {
		for _, n := range r.decisionSizes() {
			rules := n
			row := []string{k.name, human(rules)}
			for _, kind := range kinds {
				c := r.decisionCell(k.name, rules, kind, false)
				if !c.ok() {
					row = append(row, "—")
					continue
				}
				row = append(row, fmt.Sprintf("%.0f (%.1f×)", c.med, c.ratio))
			}
			if p := r.decisionP99(k.name, rules, kindMiss); !math.IsNaN(p) {
				row = append(row, fmt.Sprintf("%.0f", p))
			} else {
				row = append(row, "—")
			}
			for _, kind := range kinds {
				c := r.decisionCell(k.name, rules, kind, true)
				if !c.ok() {
					row = append(row, "—")
					continue
				}
				row = append(row, fmt.Sprintf("%.0f", c.med))
			}
			fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		}
	}
	fmt.Fprintln(w)
}

func roundTo(n int) int {
	switch {
	case n >= 10000:
		return n / 1000 * 1000
	}
	return n
}

// ---- end to end

// e2eSizes lists the sizes measured end to end (the logging runs aside).
func (r *results) e2eSizes() []int {
	var sizes []int
	for _, s := range r.E2E {
		if s.Variant != vCgwallLog && !slices.Contains(sizes, s.Rules) {
			sizes = append(sizes, s.Rules)
		}
	}
	slices.Sort(sizes)
	return sizes
}

func (r *results) patterns() []int {
	var ps []int
	for _, s := range r.E2E {
		if !slices.Contains(ps, s.Dsts) {
			ps = append(ps, s.Dsts)
		}
	}
	slices.Sort(ps)
	return ps
}

// e2eCell: packets per second, and the ratio to no filter in the same round,
// at the same size, with the same traffic.
func (r *results) e2eCell(variant string, rules, dsts int) cell {
	return r.e2eCellVs(variant, vNone, rules, dsts)
}

func (r *results) e2eCellVs(variant, ref string, rules, dsts int) cell {
	var vals, ratios []float64
	for _, s := range r.E2E {
		if s.Variant != variant || s.Rules != rules || s.Dsts != dsts {
			continue
		}
		vals = append(vals, s.PPS)
		for _, b := range r.E2E {
			if b.Variant == ref && b.Rules == rules && b.Dsts == dsts && b.Round == s.Round && b.PPS > 0 {
				ratios = append(ratios, s.PPS/b.PPS)
			}
		}
	}
	return cell{median(vals), median(ratios), len(vals)}
}

// bestRatio is the best run of a variant against the best run of no filter
// (the runs before and after each slot counted one by one), over all rounds
// at a size: this host switches between a fast and a slow state every few
// seconds, and a reference caught in the slow state inflates a per-round
// ratio, while the best runs are both in the fast state.
func (r *results) bestRatio(variant string, rules, dsts int) float64 {
	var best, ref float64
	for _, s := range r.E2E {
		if s.Rules != rules || s.Dsts != dsts {
			continue
		}
		switch s.Variant {
		case variant:
			best = max(best, s.PPS)
		case vNone:
			ref = max(ref, s.PPS)
			for _, p := range s.Pair {
				ref = max(ref, p)
			}
		}
	}
	if best == 0 || ref == 0 {
		return math.NaN()
	}
	return best / ref
}

// e2eField is the median of a field over rounds; dsts 0 takes every pattern.
func (r *results) e2eField(variant string, rules, dsts int, f func(e2eSample) float64) float64 {
	var vals []float64
	for _, s := range r.E2E {
		if s.Variant == variant && s.Rules == rules && (dsts == 0 || s.Dsts == dsts) {
			vals = append(vals, f(s))
		}
	}
	return median(vals)
}

// floor is the empty-programs variant of a pattern, and the size it ran at.
func (r *results) floor(dsts int) (cell, int) {
	for _, s := range r.E2E {
		if s.Variant == vFloor && s.Dsts == dsts {
			return r.e2eCell(vFloor, s.Rules, dsts), s.Rules
		}
	}
	return cell{}, 0
}

// wins counts the rounds in which a beat b.
func (r *results) wins(a, b string, rules, dsts int) (int, int) {
	won, total := 0, 0
	for _, s := range r.E2E {
		if s.Variant != a || s.Rules != rules || s.Dsts != dsts {
			continue
		}
		for _, t := range r.E2E {
			if t.Variant == b && t.Rules == rules && t.Dsts == dsts && t.Round == s.Round {
				total++
				if s.PPS > t.PPS {
					won++
				}
			}
		}
	}
	return won, total
}

var e2eVariants = []string{vCgwall, vNft, vIpt, vIptLegacy}

func (r *results) writeE2E(w io.Writer) {
	cfg := r.Settings
	sizes := r.e2eSizes()
	if len(sizes) == 0 {
		return
	}
	fmt.Fprintf(w, "### Packets per second, end to end\n\n")
	fmt.Fprintf(w, "UDP with %d-byte payloads, sent with sendmmsg in batches of %d by one thread pinned to CPU %d, "+
		"counted as the veth's tx_packets over %s after %s of warm-up. Every packet misses every rule and passes. "+
		"Median of %d rounds, in thousands of packets per second; in brackets the median of the per-round ratio to no filter at the same size and pattern, "+
		"then the best run against the best run of no filter (this host switches between a fast and a slow state every few seconds; "+
		"a reference run caught in the slow state inflates a ratio, and the best runs are both in the fast state).\n\n",
		cfg.Payload, cfg.Batch, cfg.SenderCPU, cfg.Duration, cfg.Warmup, r.Rounds)
	for _, dsts := range r.patterns() {
		fmt.Fprintf(w, "**%s**", patternName(dsts))
		if dsts == 1 {
			fmt.Fprintf(w, ": one flow; cgwall judges each packet once, at egress (its connect hook ran once).\n\n")
		} else {
			fmt.Fprintf(w, ": each datagram to the next of 198.19.0.1 … +%d; cgwall judges each packet twice, at sendmsg and at egress.\n\n", dsts-1)
		}
		fmt.Fprintf(w, "| rules | no filter | %s |\n", strings.Join(e2eVariants, " | "))
		fmt.Fprintf(w, "|---:|---:|%s\n", strings.Repeat("---:|", len(e2eVariants)))
		for _, n := range sizes {
			base := r.e2eCell(vNone, n, dsts)
			if !base.ok() {
				continue
			}
			row := []string{human(n), fmt.Sprintf("%.0f", base.med/1000)}
			for _, v := range e2eVariants {
				c := r.e2eCell(v, n, dsts)
				if !c.ok() {
					row = append(row, "—")
					continue
				}
				row = append(row, fmt.Sprintf("%.0f (%.1f%% / %.1f%%)", c.med/1000, 100*c.ratio, 100*r.bestRatio(v, n, dsts)))
			}
			fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		}
		fmt.Fprintln(w)
		if fl, n := r.floor(dsts); fl.ok() {
			fmt.Fprintf(w, "The hooks' floor: with programs that only return 1 on the same hooks as cgwall (egress and sendmsg4), %.0f kpps, %.1f%% / %.1f%% of no filter (at %s rules, same rounds). "+
				"No program on these hooks can do better; cgwall's decisions cost the difference.\n\n", fl.med/1000, 100*fl.ratio, 100*r.bestRatio(vFloor, n, dsts), human(n))
		}
	}

	fmt.Fprintf(w, "cgwall's programs on that traffic, from the kernel's BPF statistics (`run_time_ns / run_cnt`, "+
		"taken in a separate %s window, because statistics add two clock reads per run), against the time per packet "+
		"that cgwall added end to end (1/pps with cgwall − 1/pps with no filter, from the medians):\n\n", cfg.StatsDuration)
	fmt.Fprintln(w, "| traffic | rules | egress ns/packet | sendmsg4 ns/packet | added ns/packet end to end |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
	for _, dsts := range r.patterns() {
		for _, n := range sizes {
			eg := r.e2eField(vCgwall, n, dsts, func(s e2eSample) float64 { return s.ProgNs })
			if math.IsNaN(eg) || eg == 0 {
				continue
			}
			sm := r.e2eField(vCgwall, n, dsts, func(s e2eSample) float64 { return s.SendmsgNs })
			fmt.Fprintf(w, "| %s | %s | %.0f | %.0f | %.0f |\n", patternName(dsts), human(n), eg, sm,
				1e9/r.e2eCell(vCgwall, n, dsts).med-1e9/r.e2eCell(vNone, n, dsts).med)
		}
	}
	fmt.Fprintln(w)
}

// ---- control plane

func (r *results) writeControl(w io.Writer) {
	sizes := r.e2eSizes()
	if len(sizes) == 0 {
		return
	}
	fmt.Fprintf(w, "### Control plane: loading N rules\n\n")
	input := r.CgwallInput
	if input == "" {
		input = "YAML policy file (-f)"
	}
	fmt.Fprintf(w, "cgwall read its rules from a %s. ", input)
	fmt.Fprintf(w, "Seconds from start to rules in force (cgwall: to its `attached` line; nft and iptables-restore: to their exit, run through nsenter), "+
		"and the kernel memory that stayed allocated (/proc/meminfo SUnreclaim + VmallocUsed + Percpu, after minus before, once settled); "+
		"cgwall also by its maps' memlock. Every load of the end-to-end runs counts, so the median is of %d to %d loads.\n\n", r.Rounds, r.Rounds*len(r.patterns()))
	vs := []string{vCgwall, vNft, vIpt, vIptLegacy}
	var head []string
	for _, v := range vs {
		head = append(head, v+" s", v+" MiB")
	}
	fmt.Fprintf(w, "| rules | %s | cgwall memlock MiB |\n", strings.Join(head, " | "))
	fmt.Fprintf(w, "|---:|%s\n", strings.Repeat("---:|", 2*len(vs)+1))
	for _, n := range sizes {
		row := []string{human(n)}
		for _, v := range vs {
			t := r.e2eField(v, n, 0, func(s e2eSample) float64 { return s.LoadSec })
			m := r.e2eField(v, n, 0, func(s e2eSample) float64 { return s.KernelMiB })
			if math.IsNaN(t) {
				row = append(row, "—", "—")
				continue
			}
			row = append(row, fmt.Sprintf("%.3f", t), fmt.Sprintf("%.1f", m))
		}
		row = append(row, fmt.Sprintf("%.2f", r.e2eField(vCgwall, n, 0, func(s e2eSample) float64 { return s.Memlock })))
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
	}
	fmt.Fprintln(w)
	if len(r.LoadBreakdown) > 0 {
		fmt.Fprintln(w, "Where cgwall's time goes, timed in this process (median): reading the YAML policy into a policy (`policy.LoadFile`), or reading the same prefixes from a list file (`policy.AddList`, where cgwall has it), then `datapath.Load` and `Commit` (create the maps and programs, fill the maps, put the policy in force):")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| rules | policy.LoadFile (YAML) s | policy.AddList (list file) s | datapath.Load + Commit s | cgwall run to ready s |")
		fmt.Fprintln(w, "|---:|---:|---:|---:|---:|")
		for _, lb := range r.LoadBreakdown {
			list := "—"
			if len(lb.ListSec) > 0 {
				list = fmt.Sprintf("%.3f", median(lb.ListSec))
			}
			fmt.Fprintf(w, "| %s | %.3f | %s | %.3f | %.3f |\n", human(lb.Rules), median(lb.ParseSec), list, median(lb.LoadSec),
				r.e2eField(vCgwall, lb.Rules, 0, func(s e2eSample) float64 { return s.LoadSec }))
		}
		fmt.Fprintln(w)
	}
}

// ---- logging

func (r *results) writeLog(w io.Writer) {
	cfg := r.Settings
	if len(cfg.Patterns) == 0 {
		return
	}
	dsts := cfg.Patterns[0]
	c := r.e2eCellVs(vCgwallLog, vCgwall, cfg.LogRules, dsts)
	if !c.ok() {
		return
	}
	none := r.e2eCell(vCgwall, cfg.LogRules, dsts)
	lost := r.e2eField(vCgwallLog, cfg.LogRules, dsts, func(s e2eSample) float64 { return float64(s.Lost) })
	events := r.e2eField(vCgwallLog, cfg.LogRules, dsts, func(s e2eSample) float64 { return float64(s.Events) })
	share := r.e2eField(vCgwallLog, cfg.LogRules, dsts, func(s e2eSample) float64 {
		if s.Events+s.Lost == 0 {
			return math.NaN()
		}
		return float64(s.Lost) / float64(s.Events+s.Lost)
	})
	fmt.Fprintf(w, "### Logging\n\n")
	fmt.Fprintf(w, "cgwall with %s rules, %s, `--log none` against `--log all` (every packet an event, printed as text to a pipe that the harness drains). "+
		"Events: lines printed over the whole life of `cgwall run` (warm-up and counted window); lost: the total in its last `lost N events` line. "+
		"Median of %d rounds; the ratio is per round, against `--log none` in the same round.\n\n",
		human(cfg.LogRules), patternName(dsts), r.Rounds)
	fmt.Fprintln(w, "| --log | kpps | ratio to --log none | events printed | events lost | lost share |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
	fmt.Fprintf(w, "| none | %.0f | 100%% | — | — | — |\n", none.med/1000)
	fmt.Fprintf(w, "| all | %.0f | %.1f%% | %.0f | %.0f | %.1f%% |\n\n", c.med/1000, 100*c.ratio, events, lost, 100*share)
}

// ---- exec

func (r *results) writeExec(w io.Writer) {
	fmt.Fprintf(w, "### `cgwall exec` latency\n\n")
	if !r.Exec.Available {
		fmt.Fprintf(w, "Not measured yet: %s.\n\n", r.Exec.Note)
		return
	}
	p, c := median(r.Exec.PlainMs), median(r.Exec.CgwallMs)
	fmt.Fprintf(w, "From fork to the command's `main` (a Go program that prints CLOCK_MONOTONIC), median of %d runs each, interleaved: "+
		"plain %.1f ms, through `cgwall exec --block 192.0.2.1` %.1f ms: **%.1f ms added**.\n\n", len(r.Exec.PlainMs), p, c, c-p)
}

// ---- goals

type goal struct {
	name, verdict, figures string
}

func (r *results) goals() []goal {
	var gs []goal
	if len(r.Decision) > 0 {
		big := slices.Max(r.decisionSizes())
		var parts []string
		met := true
		for _, kind := range kinds {
			c := r.decisionCell("ipv4-mixed", big, kind, false)
			if !c.ok() {
				continue
			}
			parts = append(parts, fmt.Sprintf("%s %.0f ns = %.1f×", kind, c.med, c.ratio))
			met = met && c.ratio <= 2
		}
		base := r.decisionCell("ipv4-mixed", 1, kindMiss, false)
		gs = append(gs, goal{fmt.Sprintf("decision cost at %s mixed IPv4 rules, cold, ≤ 2× 1 rule", human(big)), verdict(met),
			fmt.Sprintf("1 rule: %.0f ns; %s: %s", base.med, human(big), strings.Join(parts, ", "))})
	}
	for _, dsts := range r.patterns() {
		c := r.e2eCell(vCgwall, 100_000, dsts)
		if !c.ok() {
			continue
		}
		nft := r.e2eCell(vNft, 100_000, dsts)
		won, total := r.wins(vCgwall, vNft, 100_000, dsts)
		best := r.bestRatio(vCgwall, 100_000, dsts)
		// Met only if it holds by both measures: the per-round ratio and the
		// best run against the best run.
		met := min(c.ratio, best) >= 0.97 && c.med > nft.med
		fig := fmt.Sprintf("cgwall %.1f%% of no filter by the per-round median, %.1f%% best against best (%.0f kpps); nftables %.1f%% / %.1f%% (%.0f kpps); cgwall ahead in %d of %d rounds",
			100*c.ratio, 100*best, c.med/1000, 100*nft.ratio, 100*r.bestRatio(vNft, 100_000, dsts), nft.med/1000, won, total)
		if fl, n := r.floor(dsts); fl.ok() {
			fig += fmt.Sprintf("; empty programs on the same hooks: %.1f%% / %.1f%%", 100*fl.ratio, 100*r.bestRatio(vFloor, n, dsts))
		}
		gs = append(gs, goal{"pps at 100k rules ≥ 97% of no filter and above nftables; " + patternName(dsts), verdict(met), fig})
	}
	if t := r.e2eField(vCgwall, 1_000_000, 0, func(s e2eSample) float64 { return s.LoadSec }); !math.IsNaN(t) {
		gs = append(gs, goal{"loading 1M rules ≤ 1 s", verdict(t <= 1), fmt.Sprintf("cgwall run to ready: %.2f s", t)})
	}
	if r.Exec.Available {
		d := median(r.Exec.CgwallMs) - median(r.Exec.PlainMs)
		gs = append(gs, goal{"exec adds ≤ 20 ms", verdict(d <= 20), fmt.Sprintf("%.1f ms", d)})
	} else {
		gs = append(gs, goal{"exec adds ≤ 20 ms", "not measured", r.Exec.Note})
	}
	return gs
}

func verdict(met bool) string {
	if met {
		return "met"
	}
	return "missed"
}

// ---- output

func (r *results) markdown() string {
	var b strings.Builder
	mode := "full"
	if r.Quick {
		mode = "quick (-quick)"
	}
	fmt.Fprintf(&b, "Generated by `go run ./bench` (%s run, %d rounds, %.0f s) on %s, %s; tree: %s.\n\n",
		mode, r.Rounds, r.Seconds, r.Started.UTC().Format("2006-01-02"), r.Machine, r.Commit)
	if gs := r.goals(); len(gs) > 0 {
		fmt.Fprintln(&b, "| goal (issue #5) | verdict | measured |")
		fmt.Fprintln(&b, "|---|---|---|")
		for _, g := range gs {
			fmt.Fprintf(&b, "| %s | **%s** | %s |\n", g.name, g.verdict, g.figures)
		}
		fmt.Fprintln(&b)
	}
	r.writeDecision(&b)
	r.writeE2E(&b)
	if len(r.e2eSizes()) > 0 {
		fmt.Fprintf(&b, "![Packets per second relative to no filter, best run against best run, against the number of rules](img/bench-pps.png)\n\n")
	}
	r.writeControl(&b)
	r.writeLog(&b)
	r.writeExec(&b)
	return b.String()
}

const (
	docsBegin = "<!-- bench:begin (generated by go run ./bench -docs; edits between these markers are overwritten) -->"
	docsEnd   = "<!-- bench:end -->"
)

// settings are what the report says about how the figures were taken.
type settings struct {
	DecisionSizes []int  `json:"decision_sizes"`
	DecisionDsts  int    `json:"decision_dsts"`
	DecisionRuns  int    `json:"decision_runs"`
	E2ESizes      []int  `json:"e2e_sizes"`
	IptablesMax   int    `json:"iptables_max"`
	Patterns      []int  `json:"patterns"`
	Payload       int    `json:"payload"`
	Batch         int    `json:"batch"`
	SenderCPU     int    `json:"sender_cpu"`
	Duration      string `json:"duration"`
	Warmup        string `json:"warmup"`
	StatsDuration string `json:"stats_duration"`
	LogRules      int    `json:"log_rules"`
}

func report(cfg *config, r *results, log io.Writer) error {
	r.Settings = settings{
		DecisionSizes: cfg.decisionSizes, DecisionDsts: cfg.decisionDsts, DecisionRuns: cfg.decisionRuns,
		E2ESizes: cfg.e2eSizes, IptablesMax: cfg.iptablesMax, Patterns: cfg.patterns,
		Payload: payloadBytes, Batch: cfg.batch, SenderCPU: cfg.senderCPU, Duration: cfg.duration.String(),
		Warmup: cfg.warmup.String(), StatsDuration: cfg.statsDuration.String(), LogRules: cfg.logRules,
	}
	return write(cfg, r, log)
}

// write writes the report of r: results.md, results.json and pps.png in
// cfg.out, and with cfg.docs the docs.
func write(cfg *config, r *results, log io.Writer) error {
	md := r.markdown()
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cfg.out, "results.json"), js, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cfg.out, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	var png []byte
	if len(r.e2eSizes()) > 0 {
		png, err = r.chart()
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(cfg.out, "pps.png"), png, 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(log, "\n%s\nresults in %s\n", md, cfg.out)
	if !cfg.docs {
		return nil
	}
	doc := filepath.Join(cfg.repo, "docs", "performance.md")
	old, err := os.ReadFile(doc)
	if err != nil {
		return err
	}
	i := strings.Index(string(old), docsBegin)
	j := strings.Index(string(old), docsEnd)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %q … %q markers to write between", doc, docsBegin, docsEnd)
	}
	updated := string(old[:i]) + docsBegin + "\n\n" + md + string(old[j:])
	if err := os.WriteFile(doc, []byte(updated), 0o644); err != nil {
		return err
	}
	if png != nil {
		if err := os.MkdirAll(filepath.Join(cfg.repo, "docs", "img"), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(cfg.repo, "docs", "img", "bench-pps.png"), png, 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(log, "wrote %s and docs/img/bench-pps.png\n", doc)
	return nil
}
