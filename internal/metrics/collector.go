package metrics

import (
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/policy"
)

// The series read from the maps at each scrape. Every policy's series carry
// cgroup and policy first.
var (
	policyLabels = []string{"cgroup", "policy"}

	packetsDesc = prometheus.NewDesc("cgwall_packets_total",
		"Decisions of a cgroup's policy, by hook and verdict: packets at egress and ingress, socket calls at connect, "+
			"sendmsg and sock_create. drop includes malformed (packets whose IP header could not be read, dropped to "+
			"fail closed), which count in both; in audit mode they count as audit_drop instead of drop. "+
			"Starts from 0 when the policy is replaced.",
		append(policyLabels, "hook", "verdict"), nil)
	bytesDesc = prometheus.NewDesc("cgwall_bytes_total",
		"Bytes of the IP packets of cgwall_packets_total, at the packet hooks (egress, ingress) only: socket calls have none.",
		append(policyLabels, "hook", "verdict"), nil)
	eventsLostDesc = prometheus.NewDesc("cgwall_events_lost_total",
		"Decisions of a cgroup's policy that were not logged because its ring buffer was full.",
		policyLabels, nil)
	ruleRulesDesc = prometheus.NewDesc("cgwall_policy_rules",
		"Rules of the policy in force in a cgroup. Only policies of at most --metrics-rule-limit rules have cgwall_rule_* series.",
		policyLabels, nil)
	rulePacketsDesc = prometheus.NewDesc("cgwall_rule_packets_total",
		"Packets and socket calls that a rule decided, for policies of at most --metrics-rule-limit rules; "+
			"rule is the rule as 'cgwall list' prints it. Starts from 0 when the policy is replaced.",
		append(policyLabels, "rule", "action", "direction"), nil)
	ruleBytesDesc = prometheus.NewDesc("cgwall_rule_bytes_total",
		"Bytes of the IP packets that a rule decided, for policies of at most --metrics-rule-limit rules.",
		append(policyLabels, "rule", "action", "direction"), nil)
	learnedDesc = prometheus.NewDesc("cgwall_learned_addresses",
		"Addresses learned from DNS answers and in force for a cgroup's name rules, by family (ipv4, ipv6).",
		append(policyLabels, "family"), nil)
	policiesDesc = prometheus.NewDesc("cgwall_policies",
		"Cgroups the agent knows, by the state of their policy: in_force, stale, conflict, bad_file.",
		[]string{"state"}, nil)
	filesDesc = prometheus.NewDesc("cgwall_policy_files",
		"Policy files, by the state of their last read: in_force (good) or bad_file.",
		[]string{"state"}, nil)
	scrapeErrorsDesc = prometheus.NewDesc("cgwall_scrape_errors_total",
		"Policies left out of a scrape because their maps could not be read (removed during the scrape, say), "+
			"or because the agent gave their cgroup twice.",
		nil, nil)
)

// verdicts are cgwall_packets_total's verdicts and how each is read from a
// hook's stats.
var verdicts = []struct {
	name    string
	counter func(datapath.Stats) datapath.Counter
}{
	{"pass", func(s datapath.Stats) datapath.Counter { return s.Pass }},
	{"drop", func(s datapath.Stats) datapath.Counter { return s.Drop }},
	{"audit_drop", func(s datapath.Stats) datapath.Counter { return s.AuditDrop }},
	{"malformed", func(s datapath.Stats) datapath.Counter { return s.Malformed }},
}

// collector reads the counters of every policy from its maps at each scrape.
type collector struct {
	src          Source
	ruleLimit    int
	scrapeErrors atomic.Uint64
}

func newCollector(src Source, ruleLimit int) *collector {
	return &collector{src: src, ruleLimit: max(ruleLimit, 0)}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		packetsDesc, bytesDesc, eventsLostDesc, ruleRulesDesc, rulePacketsDesc, ruleBytesDesc,
		learnedDesc, policiesDesc, filesDesc, scrapeErrorsDesc,
	} {
		ch <- d
	}
}

// Collect reads each policy whole before it sends any of its series, so
// that a policy whose maps fail midway is left out rather than shown in
// part, which would look like counters that went back.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	byState := map[State]int{}
	seen := map[[2]string]bool{}
	c.src.Policies(func(p Policy) {
		byState[p.State]++
		if p.Datapath == nil {
			return
		}
		key := [2]string{p.Cgroup, p.File}
		if seen[key] {
			c.scrapeErrors.Add(1) // the registry would refuse the scrape
			return
		}
		seen[key] = true
		ms, err := c.read(p)
		if err != nil {
			c.scrapeErrors.Add(1)
			return
		}
		for _, m := range ms {
			ch <- m
		}
	})
	sendStates(ch, policiesDesc, byState)
	byFile := map[State]int{}
	for _, s := range c.src.Files() {
		byFile[s]++
	}
	sendStates(ch, filesDesc, byFile)
	ch <- prometheus.MustNewConstMetric(scrapeErrorsDesc, prometheus.CounterValue, float64(c.scrapeErrors.Load()))
}

// sendStates sends one gauge per state, every known state included.
func sendStates(ch chan<- prometheus.Metric, desc *prometheus.Desc, n map[State]int) {
	for _, s := range states {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(n[s]), string(s))
	}
	for s, v := range n {
		if !isState(s) { // a state this package does not know still counts
			ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(v), string(s))
		}
	}
}

func isState(s State) bool {
	for _, k := range states {
		if s == k {
			return true
		}
	}
	return false
}

// read reads one policy's series from its maps.
func (c *collector) read(p Policy) ([]prometheus.Metric, error) {
	var out []prometheus.Metric
	send := func(desc *prometheus.Desc, v uint64, labels ...string) {
		labels = append([]string{p.Cgroup, p.File}, labels...)
		out = append(out, prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...))
	}
	gauge := func(desc *prometheus.Desc, v int, labels ...string) {
		labels = append([]string{p.Cgroup, p.File}, labels...)
		out = append(out, prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(v), labels...))
	}
	d := p.Datapath
	var lost uint64
	for _, h := range datapath.Hooks {
		s, err := d.Stats(h)
		if err != nil {
			return nil, err
		}
		lost += s.EventsLost.Packets
		if h == datapath.HookRecvmsg {
			continue // decides nothing: its counters stay at 0
		}
		for _, v := range verdicts {
			n := v.counter(s)
			send(packetsDesc, n.Packets, h.String(), v.name)
			if h == datapath.HookEgress || h == datapath.HookIngress {
				send(bytesDesc, n.Bytes, h.String(), v.name)
			}
		}
	}
	send(eventsLostDesc, lost)

	pol := d.Policy()
	rules := len(pol.Rules) + len(pol.Names)
	gauge(ruleRulesDesc, rules)
	if rules <= c.ruleLimit {
		byRule, err := ruleCounters(d, pol)
		if err != nil {
			return nil, err
		}
		for k, n := range byRule {
			send(rulePacketsDesc, n.Packets, k.rule, k.action, k.dir)
			send(ruleBytesDesc, n.Bytes, k.rule, k.action, k.dir)
		}
	}

	v4, v6, err := d.LearnedAddrs()
	if err != nil {
		return nil, err
	}
	gauge(learnedDesc, v4, "ipv4")
	gauge(learnedDesc, v6, "ipv6")
	return out, nil
}

// ruleKey is the labels of a rule's series.
type ruleKey struct{ rule, action, dir string }

// ruleCounters returns the counters of each rule of pol by its labels. Two
// rules with the same labels, which a policy should never hold, add up
// rather than make the registry refuse the scrape.
func ruleCounters(d *datapath.Datapath, pol *policy.Policy) (map[ruleKey]datapath.Counter, error) {
	byID, err := d.RuleCounters()
	if err != nil {
		return nil, fmt.Errorf("read rule counters: %w", err)
	}
	out := map[ruleKey]datapath.Counter{}
	for _, rs := range [][]policy.Rule{pol.Rules, pol.Names} {
		for _, r := range rs {
			k := ruleKey{r.Match().String(), r.Action.String(), r.Dir.String()}
			sum, n := out[k], byID[r.ID]
			out[k] = datapath.Counter{Packets: sum.Packets + n.Packets, Bytes: sum.Bytes + n.Bytes}
		}
	}
	return out, nil
}
