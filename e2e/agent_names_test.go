package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// startAgentIn starts the agent in the name hosts' network namespace, where
// its resolver can catch the DNS of the cgroups' processes.
func (n *nameHosts) startAgent(t *testing.T, dir string, args ...string) *agentProc {
	t.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.path, "--", cgwallBin, "agent", "--policies", dir}, args...)...)
	return &agentProc{proc: startCmd(t, cmd, "agent ready: "), dir: dir}
}

// TestAgentNames runs name rules in persistent policies against dnsmasq: a
// file's and one attached by hand, both served by the agent's one resolver;
// lookups fail closed while the agent is down and learned addresses stay;
// a restarted agent serves them again; and attach refuses name rules when
// no agent runs.
func TestAgentNames(t *testing.T) {
	n := newNameHosts(t, testZone)
	s := n.serve(t, namesPorts...)
	cg, rel := agentCgroups(t)
	byFile, byHand := filepath.Join(cg, "file"), filepath.Join(cg, "hand")
	mkdir(t, byFile)
	mkdir(t, byHand)
	dir := t.TempDir()
	writePolicy(t, dir, "names.yaml", fmt.Sprintf("targets: [{cgroup: %s/file}]\negress: {default: block, allow: [\"a.test:tcp/8080\"]}\n", rel))
	a := n.startAgent(t, dir, "--metrics", "127.0.0.1:0")
	metricsAddr := regexp.MustCompile(`addr=(\S+)`).FindStringSubmatch(a.wait(t, "serving metrics"))[1]

	n.resolves(t, byFile, "a.test", "192.0.2.10")
	n.fetch(t, byFile, s, "a.test", 8080, true)
	n.fetch(t, byFile, s, "a.test", 8081, false)
	n.nxdomain(t, byFile, "other.test")
	m := n.scrape(t, metricsAddr)
	if v := m.value(t, "cgwall_dns_queries_total", "verdict=resolved"); v < 1 {
		t.Errorf("DNS queries resolved: %v", v)
	}
	if v := m.value(t, "cgwall_dns_queries_total", "verdict=nxdomain"); v < 1 {
		t.Errorf("DNS queries refused: %v", v)
	}
	if v := m.value(t, "cgwall_learned_addresses", "cgroup="+rel+"/file", "family=ipv4"); v != 1 {
		t.Errorf("learned IPv4 addresses of the file's cgroup: %v, want 1 (a.test's)", v)
	}

	// attach with name rules, in the agent's namespace: the agent serves it.
	if out, stderr, code := n.attach(t, byHand, "--default", "block", "--allow", "b.test:tcp/8080"); code != 0 {
		t.Fatalf("attach with name rules while the agent runs: exit %d, %s%s", code, out, stderr)
	}
	if out := cgwallOK(t, "list", "-o", "json", "--cgroup", byHand); !strings.Contains(out, `"learned": []`) {
		t.Errorf("list -o json of a policy with name rules before any lookup has no empty learned:\n%s", out)
	}
	n.resolves(t, byHand, "b.test", "192.0.2.11")
	n.fetch(t, byHand, s, "b.test", 8080, true)
	n.nxdomain(t, byHand, "a.test")
	if l := list(t, "--cgroup", byHand); len(l) != 1 || !strings.Contains(fmt.Sprint(l[0].Rules), "b.test:tcp/8080") {
		t.Errorf("list of a policy with name rules: %+v", l)
	}
	// list shows each learned address, and when the agent lets it go.
	l := list(t, "--cgroup", byHand)[0]
	if len(l.Learned) != 1 || l.Learned[0].Pattern != "b.test" || l.Learned[0].Addr != "192.0.2.11" ||
		l.Learned[0].Expires == nil || !l.Learned[0].Expires.After(time.Now()) || fmt.Sprint(l.Learned[0].Names) != "[b.test]" {
		t.Errorf("learned addresses listed while the agent runs: %+v (%s)", l.Learned, l.ExpiryUnknown)
	}
	if out := cgwallOK(t, "list", "--cgroup", byHand); !regexp.MustCompile(`b\.test +192\.0\.2\.11 +in [0-9hms]+ \(`).MatchString(out) {
		t.Errorf("list's text shows no learned address with its expiry:\n%s", out)
	}

	// The agent dies: lookups fail, and fail closed; the learned address
	// stays in force.
	a.p.Kill()
	<-a.done
	if c := n.getent(t, byFile, "a.test"); c.code == 0 {
		t.Errorf("a.test resolved while the agent was down: %q", c.stdout)
	}
	n.fetch(t, byFile, s, "192.0.2.10", 8080, true)
	n.fetch(t, byFile, s, "192.0.2.11", 8080, false)
	if l := list(t, "--cgroup", byFile)[0]; len(l.Learned) != 1 || l.Learned[0].Addr != "192.0.2.10" ||
		l.Learned[0].Expires != nil || !strings.Contains(l.ExpiryUnknown, "no agent answers") {
		t.Errorf("learned addresses listed while the agent is down: %+v (%s)", l.Learned, l.ExpiryUnknown)
	}

	// It comes back, and serves both again.
	b := n.startAgent(t, dir)
	n.resolves(t, byFile, "a.test", "192.0.2.10")
	n.resolves(t, byHand, "b.test", "192.0.2.11")
	n.fetch(t, byHand, s, "b.test", 8080, true)
	if code := b.stop(t); code != 0 {
		t.Errorf("SIGINT: exit %d", code)
	}

	// No agent: attach refuses name rules, and attaches nothing.
	other := filepath.Join(cg, "other")
	mkdir(t, other)
	_, stderr, code := n.attach(t, other, "--allow", "a.test")
	if code != 1 || !strings.Contains(stderr, "need cgwall agent") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("attach with name rules and no agent: exit %d, %q", code, stderr)
	}
	if c := attachedCount(t, other); c != 0 {
		t.Errorf("a refused attach left %d programs", c)
	}
}

// scrape gets the agent's /metrics from inside the hosts' namespace, where
// it listens, and parses it.
func (n *nameHosts) scrape(t *testing.T, addr string) scraped {
	t.Helper()
	c := n.run(t, "", "curl", "-sS", "--noproxy", "*", "http://"+addr+"/metrics")
	if c.code != 0 {
		t.Fatalf("curl /metrics: exit %d, %s", c.code, c.stderr)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(c.stdout))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// attach runs cgwall attach in the hosts' namespace.
func (n *nameHosts) attach(t *testing.T, cg string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.path, "--", cgwallBin, "attach", "--cgroup", cg}, args...)...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}
