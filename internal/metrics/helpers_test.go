package metrics

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/testutil"
)

// sendEnv makes the test binary a sender of UDP datagrams instead
// (TestMain): "ADDR:PORT COUNT SIZE". The tests start it in a cgroup, whose
// programs judge every datagram it sends.
const sendEnv = "CGWALL_METRICS_TEST_SEND"

func TestMain(m *testing.M) {
	if spec := os.Getenv(sendEnv); spec != "" {
		if err := send(spec); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// send sends the datagrams of a sendEnv spec, one socket for all.
// A datagram that egress drops fails its sendto with EPERM: expected.
func send(spec string) error {
	f := strings.Fields(spec)
	if len(f) != 3 {
		return fmt.Errorf("%s=%q: want ADDR:PORT COUNT SIZE", sendEnv, spec)
	}
	to, err := net.ResolveUDPAddr("udp4", f[0])
	if err != nil {
		return err
	}
	count, _ := strconv.Atoi(f[1])
	size, _ := strconv.Atoi(f[2])
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	defer c.Close()
	for range count {
		c.WriteToUDP(make([]byte, size), to)
	}
	return nil
}

// sendFrom sends count UDP datagrams of size bytes of payload to addr from
// a process in cg.
func sendFrom(t *testing.T, cg cgroup.Dir, addr string, count, size int) {
	t.Helper()
	f, err := os.Open(cg.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %d", sendEnv, addr, count, size))
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("send from %s: %v\n%s", cg.Path, err, out)
	}
}

// mustPolicy makes a policy of egress rules: action, rule, action, rule...
func mustPolicy(t *testing.T, rules ...string) *policy.Policy {
	t.Helper()
	p := policy.New()
	for i := 0; i < len(rules); i += 2 {
		a, err := policy.ParseAction(rules[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Add(policy.Egress, a, rules[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// load loads and commits p, attached nowhere, and closes it at the end.
func load(t *testing.T, p *policy.Policy) *datapath.Datapath {
	t.Helper()
	testutil.RequireBPF(t)
	d, err := datapath.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	return d
}

// source is a Source of fixed policies and files. before, when set, runs
// before fn gets the i-th policy, while "the lock" is held.
type source struct {
	policies []Policy
	files    map[string]State
	before   func(i int)
}

func (s *source) Policies(fn func(Policy)) {
	for i, p := range s.policies {
		if s.before != nil {
			s.before(i)
		}
		fn(p)
	}
}

func (s *source) Files() map[string]State { return s.files }

// scrape serves m's handler, gets /metrics with a real client and parses
// the text format.
func scrape(t *testing.T, m *Metrics) families {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// families are the metric families of one scrape, by name.
type families map[string]*dto.MetricFamily

// find returns the series of name whose labels include want ("k=v" pairs).
func (f families) find(name string, want ...string) []*dto.Metric {
	mf := f[name]
	if mf == nil {
		return nil
	}
	var out []*dto.Metric
	for _, m := range mf.GetMetric() {
		if hasLabels(m, want) {
			out = append(out, m)
		}
	}
	return out
}

func hasLabels(m *dto.Metric, want []string) bool {
	have := map[string]string{}
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for _, kv := range want {
		k, v, _ := strings.Cut(kv, "=")
		if have[k] != v {
			return false
		}
	}
	return true
}

// value returns the value of the one series of name with the labels want.
func (f families) value(t *testing.T, name string, want ...string) float64 {
	t.Helper()
	ms := f.find(name, want...)
	if len(ms) != 1 {
		t.Fatalf("%s%v: %d series, want 1", name, want, len(ms))
	}
	m := ms[0]
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	t.Fatalf("%s%v is neither a counter nor a gauge", name, want)
	return 0
}
