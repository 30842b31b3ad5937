// Package metrics is the agent's Prometheus metrics: the counters of every
// policy in force, read from its BPF maps when /metrics is scraped (the
// datapath counts in the kernel; nothing here runs per packet or in the
// background), and the agent's own events (applies, bad files, DNS queries)
// counted as they happen. docs/metrics.md lists every series.
package metrics

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cgwall/cgwall/internal/datapath"
)

// State is what became of a cgroup's policy, or of a policy file.
type State string

const (
	InForce  State = "in_force" // the file's policy is in force
	Stale    State = "stale"    // an older policy of the file stays in force: its latest text is bad, or could not be applied
	Conflict State = "conflict" // left as it is: two files target the cgroup, or a policy attached by hand is there
	BadFile  State = "bad_file" // the file could not be read or parsed
)

// states are the values of State, each of which the state gauges show, at 0
// when nothing is in it.
var states = []State{InForce, Stale, Conflict, BadFile}

// Policy is one cgroup's policy as the agent holds it.
type Policy struct {
	Cgroup   string             // label "cgroup": path relative to the cgroup2 mount
	File     string             // label "policy": the policy file's name in the policies folder
	State    State              //
	Datapath *datapath.Datapath // the policy in force, opened (datapath.Open of its pin folder); nil when none is
}

// Source is the agent, asked at each scrape.
type Source interface {
	// Policies calls fn for each cgroup the agent knows, while the agent
	// holds its lock: fn must not keep p.Datapath past the call.
	Policies(fn func(p Policy))
	// Files gives the state of each policy file: InForce when its last
	// read was good, BadFile when not.
	Files() map[string]State
}

// DefaultRuleLimit is --metrics-rule-limit's default.
const DefaultRuleLimit = 1000

// Metrics is the agent's metrics and the handler that serves them.
type Metrics struct {
	reg   *prometheus.Registry
	ready atomic.Bool

	applyDuration prometheus.Histogram
	applyErrors   *prometheus.CounterVec
	fileErrors    *prometheus.CounterVec
	dnsQueries    *prometheus.CounterVec
}

// applyBuckets bound an apply's duration, from 1 ms (a small policy
// replaced) to 10 s (a million-rule one loaded).
var applyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// New makes the metrics of src. Only policies of at most ruleLimit rules
// (--metrics-rule-limit) get series per rule; 0 gives none any.
func New(src Source, ruleLimit int) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		applyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cgwall_apply_duration_seconds",
			Help:    "Time to apply a policy file's policy to a cgroup: create, replace or remove, successful or not.",
			Buckets: applyBuckets,
		}),
		applyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cgwall_apply_errors_total",
			Help: "Applies of a policy file's policy to a cgroup that failed, by file.",
		}, []string{"policy"}),
		fileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cgwall_policy_file_errors_total",
			Help: "Reads of a policy file that failed: unreadable, or not a valid policy.",
		}, []string{"policy"}),
		dnsQueries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cgwall_dns_queries_total",
			Help: "DNS queries answered by the agent's resolver, by verdict: resolved, nxdomain (refused by the policy), " +
				"audit_nxdomain (would have been refused; resolved in audit mode), servfail (the server did not answer).",
		}, []string{"verdict"}),
	}
	for _, v := range dnsVerdicts {
		m.dnsQueries.WithLabelValues(v) // at 0 from the start, for rate()
	}
	m.reg.MustRegister(
		newCollector(src, ruleLimit),
		m.applyDuration, m.applyErrors, m.fileErrors, m.dnsQueries,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Handler serves /metrics, in Prometheus' formats, and /healthz.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// The collector skips what it cannot read rather than fail; should
		// anything else fail, the rest is still worth serving.
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("/healthz", m.healthz)
	return mux
}

// healthz answers 503 until the agent is ready, 200 after.
func (m *Metrics) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !m.ready.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("starting\n"))
		return
	}
	w.Write([]byte("ok\n"))
}

// SetReady makes /healthz answer 200: every existing matching cgroup has
// its policy.
func (m *Metrics) SetReady() { m.ready.Store(true) }

// ObserveApply counts one apply (create, replace or remove) of a file's
// policy to a cgroup, which took d and failed with err, or not.
func (m *Metrics) ObserveApply(file string, d time.Duration, err error) {
	m.applyDuration.Observe(d.Seconds())
	if err != nil {
		m.applyErrors.WithLabelValues(file).Inc()
	}
}

// FileError counts a read of a policy file that failed to read or parse.
func (m *Metrics) FileError(file string) { m.fileErrors.WithLabelValues(file).Inc() }

// DNSQuery counts one DNS query answered by the agent's resolver, with its
// verdict as DNSVerdict words it.
func (m *Metrics) DNSQuery(verdict string) { m.dnsQueries.WithLabelValues(verdict).Inc() }
