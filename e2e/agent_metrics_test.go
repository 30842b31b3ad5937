package e2e

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestAgentMetrics scrapes the agent's /metrics with a real HTTP client,
// parses it with the Prometheus text parser, and checks that the counters
// move with real traffic, that a policy over --metrics-rule-limit has no
// series per rule, and that a bad file shows in the states and counters.
func TestAgentMetrics(t *testing.T) {
	cg, rel := agentCgroups(t)
	mkdir(t, filepath.Join(cg, "small"))
	mkdir(t, filepath.Join(cg, "big"))
	dir := t.TempDir()
	small := fmt.Sprintf("targets: [{cgroup: %s/small}]\negress: {block: [127.0.0.2]}\n", rel)
	writePolicy(t, dir, "small.yaml", small)
	writePolicy(t, dir, "big.yaml", fmt.Sprintf("targets: [{cgroup: %s/big}]\negress: {block: [127.0.0.2, 127.0.0.3, 127.0.0.4]}\n", rel))
	a, _ := startAgent(t, dir, "--metrics", "127.0.0.1:0", "--metrics-rule-limit", "2")
	addr := regexp.MustCompile(`addr=(\S+)`).FindStringSubmatch(a.wait(t, "serving metrics"))[1]

	if code, body := get(t, "http://"+addr+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz once ready: %d %q", code, body)
	}
	for range 3 {
		mustEPERM(t, "a blocked send", probe(t, cg+"/small", "", "udp", "127.0.0.2", "127.0.0.1"))
	}
	m := scrapeAgent(t, addr)
	smallCg := "cgroup=" + rel + "/small"
	if n := m.value(t, "cgwall_packets_total", smallCg, "policy=small.yaml", "hook=egress", "verdict=drop"); n < 3 {
		t.Errorf("egress drops of small: %v, want at least the 3 sent", n)
	}
	if n := m.value(t, "cgwall_rule_packets_total", smallCg, "rule=127.0.0.2/32", "action=block", "direction=egress"); n < 3 {
		t.Errorf("the rule's packets: %v, want at least 3", n)
	}
	bigCg := "cgroup=" + rel + "/big"
	if s := m.find("cgwall_rule_packets_total", bigCg); len(s) != 0 {
		t.Errorf("a policy of 3 rules over a limit of 2 has %d series per rule", len(s))
	}
	if n := m.value(t, "cgwall_policy_rules", bigCg); n != 3 {
		t.Errorf("cgwall_policy_rules of big: %v", n)
	}
	if n := m.value(t, "cgwall_policies", "state=in_force"); n != 2 {
		t.Errorf("policies in force: %v, want 2", n)
	}
	if n := m.value(t, "cgwall_apply_duration_seconds"); n != 2 {
		t.Errorf("applies counted: %v, want 2", n)
	}

	writePolicy(t, dir, "small.yaml", small+"ingress: {default: nope}\n")
	a.wait(t, "bad policy file", "small.yaml")
	m = scrapeAgent(t, addr)
	if n := m.value(t, "cgwall_policy_file_errors_total", "policy=small.yaml"); n != 1 {
		t.Errorf("file errors of small.yaml: %v, want 1", n)
	}
	if n := m.value(t, "cgwall_policy_files", "state=bad_file"); n != 1 {
		t.Errorf("bad files: %v, want 1", n)
	}
	if n := m.value(t, "cgwall_policies", "state=stale"); n != 1 {
		t.Errorf("stale policies: %v, want 1 (small's last good in force)", n)
	}
	a.stop(t)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// scraped is one scrape's metric families, by name.
type scraped map[string]*dto.MetricFamily

func scrapeAgent(t *testing.T, addr string) scraped {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// find returns the series of name whose labels include want ("k=v").
func (s scraped) find(name string, want ...string) []*dto.Metric {
	var out []*dto.Metric
	for _, m := range s[name].GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		ok := true
		for _, kv := range want {
			k, v, _ := strings.Cut(kv, "=")
			ok = ok && have[k] == v
		}
		if ok {
			out = append(out, m)
		}
	}
	return out
}

// value is the value of the one series of name with the labels want; a
// histogram's is its count.
func (s scraped) value(t *testing.T, name string, want ...string) float64 {
	t.Helper()
	ms := s.find(name, want...)
	if len(ms) != 1 {
		t.Fatalf("%s%v: %d series, want 1", name, want, len(ms))
	}
	switch m := ms[0]; {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	t.Fatalf("%s: neither counter, gauge nor histogram", name)
	return 0
}
