package metrics

import (
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/resolver"
	"github.com/cgwall/cgwall/internal/testutil"
)

// TestPacketCounters sends datagrams from a cgroup under a real policy,
// opened from its pins as the agent opens it, and reads them back in a
// scrape: per hook and verdict, per rule, and nothing lost.
func TestPacketCounters(t *testing.T) {
	p := mustPolicy(t, "block", "127.0.0.2", "allow", "127.0.0.3:udp/9")
	loaded := load(t, p)
	cg := testutil.Cgroup(t)
	a, err := loaded.Attach(cg, datapath.HooksFor(p)...)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	pins, err := os.MkdirTemp("/sys/fs/bpf", "cgwall-metrics-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(pins)
	if err := loaded.Pin(pins); err != nil {
		t.Fatal(err)
	}
	d, err := datapath.Open(pins)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	src := &source{
		policies: []Policy{{Cgroup: "test/app", File: "app.yaml", State: InForce, Datapath: d}},
		files:    map[string]State{"app.yaml": InForce, "broken.yaml": BadFile},
	}
	m := New(src, DefaultRuleLimit)
	before := scrape(t, m)
	pol := []string{"cgroup=test/app", "policy=app.yaml"}
	egress := slices.Concat(pol, []string{"hook=egress"})
	for _, v := range []string{"pass", "drop", "audit_drop", "malformed"} {
		if n := before.value(t, "cgwall_packets_total", slices.Concat(egress, []string{"verdict=" + v})...); n != 0 {
			t.Fatalf("%s packets before any was sent: %v", v, n)
		}
	}

	const dropped, passed, payload = 7, 5, 100
	sendFrom(t, cg, "127.0.0.2:9", dropped, payload)
	sendFrom(t, cg, "127.0.0.3:9", passed, payload)
	after := scrape(t, m)
	const ipLen = 20 + 8 + payload
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"cgwall_packets_total", slices.Concat(egress, []string{"verdict=drop"}), dropped},
		{"cgwall_bytes_total", slices.Concat(egress, []string{"verdict=drop"}), dropped * ipLen},
		{"cgwall_packets_total", slices.Concat(egress, []string{"verdict=pass"}), passed},
		{"cgwall_bytes_total", slices.Concat(egress, []string{"verdict=pass"}), passed * ipLen},
		{"cgwall_packets_total", slices.Concat(egress, []string{"verdict=malformed"}), 0},
		{"cgwall_events_lost_total", pol, 0},
		{"cgwall_rule_packets_total", slices.Concat(pol, []string{"rule=127.0.0.2/32", "action=block", "direction=egress"}), dropped},
		{"cgwall_rule_bytes_total", slices.Concat(pol, []string{"rule=127.0.0.2/32", "action=block", "direction=egress"}), dropped * ipLen},
		{"cgwall_rule_packets_total", slices.Concat(pol, []string{"rule=127.0.0.3/32:udp/9", "action=allow", "direction=egress"}), passed},
		{"cgwall_policy_rules", pol, 2},
		{"cgwall_learned_addresses", slices.Concat(pol, []string{"family=ipv4"}), 0},
		{"cgwall_policies", []string{"state=in_force"}, 1},
		{"cgwall_policies", []string{"state=stale"}, 0},
		{"cgwall_policy_files", []string{"state=in_force"}, 1},
		{"cgwall_policy_files", []string{"state=bad_file"}, 1},
		{"cgwall_scrape_errors_total", nil, 0},
	} {
		if got := after.value(t, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	// Socket calls have no bytes; recvmsg decides nothing.
	if ms := after.find("cgwall_bytes_total", "hook=connect"); len(ms) != 0 {
		t.Errorf("cgwall_bytes_total has %d series at connect, want none", len(ms))
	}
	if ms := after.find("cgwall_packets_total", "hook=connect"); len(ms) != 4 {
		t.Errorf("cgwall_packets_total has %d series at connect, want one per verdict", len(ms))
	}
	if ms := after.find("cgwall_packets_total", "hook=recvmsg"); len(ms) != 0 {
		t.Errorf("cgwall_packets_total has %d series at recvmsg, want none", len(ms))
	}
	if after["go_goroutines"] == nil || after["process_open_fds"] == nil {
		t.Error("the Go and process collectors are missing")
	}
}

// TestRuleLimit checks that a policy over the limit has no series per rule,
// and its count of rules, while one within has both.
func TestRuleLimit(t *testing.T) {
	small := load(t, mustPolicy(t, "block", "192.0.2.1"))
	big := load(t, mustPolicy(t, "block", "192.0.2.1", "block", "192.0.2.2", "allow", "198.51.100.0/24"))
	src := &source{policies: []Policy{
		{Cgroup: "small", File: "small.yaml", State: InForce, Datapath: small},
		{Cgroup: "big", File: "big.yaml", State: InForce, Datapath: big},
	}}
	f := scrape(t, New(src, 2))
	for _, name := range []string{"cgwall_rule_packets_total", "cgwall_rule_bytes_total"} {
		if n := len(f.find(name, "cgroup=small")); n != 1 {
			t.Errorf("%s: %d series for the policy within the limit, want 1", name, n)
		}
		if n := len(f.find(name, "cgroup=big")); n != 0 {
			t.Errorf("%s: %d series for the policy over the limit, want none", name, n)
		}
	}
	if n := f.value(t, "cgwall_policy_rules", "cgroup=big", "policy=big.yaml"); n != 3 {
		t.Errorf("cgwall_policy_rules of the policy over the limit = %v, want 3", n)
	}
	if n := f.value(t, "cgwall_policy_rules", "cgroup=small"); n != 1 {
		t.Errorf("cgwall_policy_rules of the policy within the limit = %v, want 1", n)
	}
	if n := len(scrape(t, New(src, 0)).find("cgwall_rule_packets_total")); n != 0 {
		t.Errorf("limit 0: %d series per rule, want none", n)
	}
}

// TestClosedMidScrape closes a policy's maps during the scrape, as a policy
// removed then would be: the scrape leaves it out, serves the others and
// counts the error.
func TestClosedMidScrape(t *testing.T) {
	testutil.RequireBPF(t)
	gone, err := datapath.Load(mustPolicy(t, "block", "192.0.2.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer gone.Close()
	if err := gone.Commit(); err != nil {
		t.Fatal(err)
	}
	kept := load(t, mustPolicy(t, "block", "192.0.2.1"))
	src := &source{
		policies: []Policy{
			{Cgroup: "gone", File: "gone.yaml", State: InForce, Datapath: gone},
			{Cgroup: "kept", File: "kept.yaml", State: Stale, Datapath: kept},
			{Cgroup: "none", File: "none.yaml", State: Conflict},
		},
		before: func(i int) {
			if i == 0 {
				gone.Close()
			}
		},
	}
	m := New(src, DefaultRuleLimit)
	f := scrape(t, m)
	if n := len(f.find("cgwall_packets_total", "cgroup=gone")); n != 0 {
		t.Errorf("%d series of the closed policy, want none", n)
	}
	if n := len(f.find("cgwall_packets_total", "cgroup=kept")); n == 0 {
		t.Error("no series of the policy after the closed one")
	}
	if n := f.value(t, "cgwall_scrape_errors_total"); n != 1 {
		t.Errorf("cgwall_scrape_errors_total = %v, want 1", n)
	}
	for state, want := range map[string]float64{"in_force": 1, "stale": 1, "conflict": 1, "bad_file": 0} {
		if n := f.value(t, "cgwall_policies", "state="+state); n != want {
			t.Errorf("cgwall_policies{state=%s} = %v, want %v", state, n, want)
		}
	}
	if n := scrape(t, m).value(t, "cgwall_scrape_errors_total"); n != 2 {
		t.Errorf("cgwall_scrape_errors_total after a second scrape = %v, want 2", n)
	}
}

func TestHealthz(t *testing.T) {
	m := New(&source{}, DefaultRuleLimit)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	get := func() (int, string) {
		resp, err := srv.Client().Get(srv.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(body)
	}
	if code, body := get(); code != http.StatusServiceUnavailable || body != "starting\n" {
		t.Errorf("before SetReady: %d %q, want 503 \"starting\\n\"", code, body)
	}
	m.SetReady()
	if code, body := get(); code != http.StatusOK || body != "ok\n" {
		t.Errorf("after SetReady: %d %q, want 200 \"ok\\n\"", code, body)
	}
}

// TestEventCounters checks the counters the agent moves itself.
func TestEventCounters(t *testing.T) {
	m := New(&source{}, DefaultRuleLimit)
	m.ObserveApply("a.yaml", 3*time.Millisecond, nil)
	m.ObserveApply("a.yaml", 2*time.Second, errors.New("attach failed"))
	m.ObserveApply("b.yaml", 20*time.Millisecond, nil)
	m.FileError("bad.yaml")
	m.FileError("bad.yaml")
	m.DNSQuery("resolved")
	m.DNSQuery("resolved")
	m.DNSQuery("nxdomain")
	f := scrape(t, m)
	h := f["cgwall_apply_duration_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 3 || math.Abs(h.GetSampleSum()-2.023) > 1e-9 {
		t.Errorf("apply histogram: %d applies in %v s, want 3 in 2.023 s", h.GetSampleCount(), h.GetSampleSum())
	}
	for _, b := range h.GetBucket() {
		if b.GetUpperBound() == 0.005 && b.GetCumulativeCount() != 1 || b.GetUpperBound() == 2.5 && b.GetCumulativeCount() != 3 {
			t.Errorf("bucket le=%v holds %d", b.GetUpperBound(), b.GetCumulativeCount())
		}
	}
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"cgwall_apply_errors_total", []string{"policy=a.yaml"}, 1},
		{"cgwall_policy_file_errors_total", []string{"policy=bad.yaml"}, 2},
		{"cgwall_dns_queries_total", []string{"verdict=resolved"}, 2},
		{"cgwall_dns_queries_total", []string{"verdict=nxdomain"}, 1},
		{"cgwall_dns_queries_total", []string{"verdict=audit_nxdomain"}, 0},
		{"cgwall_dns_queries_total", []string{"verdict=servfail"}, 0},
		{"cgwall_policies", []string{"state=in_force"}, 0},
	} {
		if got := f.value(t, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	if n := len(f.find("cgwall_apply_errors_total", "policy=b.yaml")); n != 0 {
		t.Errorf("an apply that worked made %d error series", n)
	}
}

func TestDNSVerdict(t *testing.T) {
	fail := errors.New("no answer")
	for _, tc := range []struct {
		e    resolver.Event
		want string
		ok   bool
	}{
		{resolver.Event{Name: "a.test", QType: 1, Action: 1}, "resolved", true},
		{resolver.Event{Name: "a.test", QType: 1}, "nxdomain", true},
		{resolver.Event{Name: "a.test", QType: 1, Audit: true}, "audit_nxdomain", true},
		{resolver.Event{Name: "a.test", QType: 1, Action: 1, Audit: true}, "resolved", true},
		{resolver.Event{Name: "a.test", QType: 1, Action: 1, Err: fail}, "servfail", true},
		{resolver.Event{QType: 2, Err: fail}, "servfail", true}, // the root
		{resolver.Event{Err: fail}, "", false},                  // a failed Forget
	} {
		got, ok := DNSVerdict(tc.e)
		if got != tc.want || ok != tc.ok {
			t.Errorf("DNSVerdict(%+v) = %q, %v; want %q, %v", tc.e, got, ok, tc.want, tc.ok)
		}
		if ok && !strings.Contains(strings.Join(dnsVerdicts, " "), got) {
			t.Errorf("%q is not among the verdicts shown at 0", got)
		}
	}
}

// TestLearnedAddresses learns addresses under a name rule and reads their
// count, by family.
func TestLearnedAddresses(t *testing.T) {
	testutil.RequireBPF(t)
	// Only programs that are never run: nothing listens at the resolver's addresses.
	d, err := datapath.Load(mustPolicy(t, "allow", "a.test"),
		datapath.WithDNS(netip.MustParseAddrPort("127.0.0.1:5353"), netip.MustParseAddrPort("[::1]:5353"), 0))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	addrs := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8::1")}
	if err := d.Learn(addrs, "a.test"); err != nil {
		t.Fatal(err)
	}
	src := &source{policies: []Policy{{Cgroup: "app", File: "app.yaml", State: InForce, Datapath: d}}}
	f := scrape(t, New(src, DefaultRuleLimit))
	for family, want := range map[string]float64{"ipv4": 2, "ipv6": 1} {
		if n := f.value(t, "cgwall_learned_addresses", "cgroup=app", "family="+family); n != want {
			t.Errorf("cgwall_learned_addresses{family=%s} = %v, want %v", family, n, want)
		}
	}
	if n := f.value(t, "cgwall_rule_packets_total", "cgroup=app", "rule=a.test", "action=allow"); n != 0 {
		t.Errorf("the name rule's packets = %v, want 0", n)
	}
}
