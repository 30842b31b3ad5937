package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

func TestRunBlocksIPv4(t *testing.T) {
	cg, child := testCgroup(t)
	p := startCgwall(t, "run", "--cgroup", cg, "--block", "127.0.0.2", "--block", "127.0.1.0/24", "--log", "all")
	if line := p.stderr.waitFor(t, "attached"); line != "attached egress filter to "+cg+" (2 rules)" {
		t.Errorf("ready line %q", line)
	}

	mustEPERM(t, "UDP to a blocked host", probe(t, cg, "", "udp", "127.0.0.2", "127.0.0.1"))
	mustEPERM(t, "UDP to a blocked prefix", probe(t, cg, "", "udp", "127.0.1.7", "127.0.0.1"))
	mustPass(t, "UDP to an allowed address", probe(t, cg, "", "udp", "127.0.0.3", "127.0.0.1"))
	mustBlock(t, "TCP to a blocked host", probe(t, cg, "", "tcp", "127.0.0.2", ""))
	mustPass(t, "TCP to an allowed address", probe(t, cg, "", "tcp", "127.0.0.3", ""))
	mustEPERM(t, "UDP from a child cgroup", probe(t, child, "", "udp", "127.0.0.2", "127.0.0.1"))
	mustPass(t, "UDP from outside the cgroup", probe(t, "", "", "udp", "127.0.0.2", "127.0.0.1"))

	p.stdout.waitFor(t, "DST 127.0.0.2, ACTION 0")
	p.stdout.waitFor(t, "DST 127.0.1.7, ACTION 0")
	p.stdout.waitFor(t, "DST 127.0.0.3, ACTION 1")
	if line := p.stdout.waitFor(t, "DST 127.0.1.7, ACTION 0"); !strings.Contains(line, "rule=127.0.1.0/24") || !strings.Contains(line, "proto=udp") {
		t.Errorf("decision line %q lacks its rule or protocol", line)
	}

	if code := p.stop(t); code != 0 {
		t.Fatalf("cgwall exited %d after SIGINT; stderr:\n%s", code, p.stderr)
	}
	p.stderr.waitFor(t, "detached from "+cg)
	if n := attachedCount(t, cg); n != 0 {
		t.Fatalf("%d programs still attached after run ended", n)
	}
	mustPass(t, "UDP to the blocked host after run ended", probe(t, cg, "", "udp", "127.0.0.2", "127.0.0.1"))
	mustPass(t, "TCP to the blocked host after run ended", probe(t, cg, "", "tcp", "127.0.0.2", ""))
}

func TestRunBlocksIPv6(t *testing.T) {
	cg, _ := testCgroup(t)
	ns := netns(t)
	p := startCgwall(t, "run", "--cgroup", cg, "--block", "2001:db8::2", "--block", "2001:db8:0:1::/64", "--block", "::ffff:127.0.0.2")

	mustEPERM(t, "UDP to a blocked IPv6 host", probe(t, cg, ns, "udp", "2001:db8::2", "::1"))
	mustEPERM(t, "UDP to a blocked IPv6 prefix", probe(t, cg, ns, "udp", "2001:db8:0:1::5", "::1"))
	mustPass(t, "UDP to an allowed IPv6 address", probe(t, cg, ns, "udp", "2001:db8::3", "::1"))
	mustBlock(t, "TCP to a blocked IPv6 host", probe(t, cg, ns, "tcp", "2001:db8::2", ""))
	mustPass(t, "TCP to an allowed IPv6 address", probe(t, cg, ns, "tcp", "2001:db8::3", ""))
	mustPass(t, "TCP to ::1", probe(t, cg, ns, "tcp", "::1", ""))
	// The mapped form in --block is an IPv4 rule, and an IPv6 socket that
	// reaches an IPv4 host through a mapped address is judged by it too.
	mustEPERM(t, "UDP to an IPv4 host blocked by its mapped form", probe(t, cg, ns, "udp", "127.0.0.2", "127.0.0.1"))
	for _, proto := range []string{"udp", "tcp"} {
		if got := mappedProbe(t, cg, proto, "127.0.0.2"); got != "operation not permitted" {
			t.Errorf("%s from an IPv6 socket to ::ffff:127.0.0.2: %q, want EPERM", proto, got)
		}
	}
	// The kernel hands a UDP send to a mapped address to the IPv4 path, so
	// egress judges an IPv4 packet; a TCP connect goes through connect6.
	if line := p.stdout.waitFor(t, " dport=9 rule=127.0.0.2/32 "); !strings.HasPrefix(line, "DST 127.0.0.2, ACTION 0 hook=egress ") {
		t.Errorf("the UDP send to ::ffff:127.0.0.2 was decided as %q, want an IPv4 packet at egress", line)
	}
	p.stdout.waitFor(t, "DST ::ffff:127.0.0.2, ACTION 0 hook=connect proto=tcp dport=9 rule=127.0.0.2/32")

	line := p.stdout.waitFor(t, "DST 2001:db8::2, ACTION 0")
	if !strings.Contains(line, "rule=2001:db8::2/128") {
		t.Errorf("decision line %q lacks its rule", line)
	}
	p.stdout.waitFor(t, "DST 2001:db8:0:1::5, ACTION 0")
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	mustPass(t, "UDP to the blocked IPv6 host after run ended", probe(t, cg, ns, "udp", "2001:db8::2", "::1"))
}

// TestRunLogLevels checks that --log drop (the default) prints drops only and
// that --log none prints nothing, while both still block.
func TestRunLogLevels(t *testing.T) {
	cg, _ := testCgroup(t)
	p := startCgwall(t, "run", "--cgroup", cg, "--block", "127.0.0.2")
	mustPass(t, "allowed", probe(t, cg, "", "udp", "127.0.0.3", "127.0.0.1"))
	mustEPERM(t, "blocked", probe(t, cg, "", "udp", "127.0.0.2", "127.0.0.1"))
	// Events arrive in order, so once the drop is printed the passes before it
	// would have been too.
	p.stdout.waitFor(t, "DST 127.0.0.2, ACTION 0")
	for _, line := range p.stdout.snapshot() {
		if strings.Contains(line, "ACTION 1") {
			t.Errorf("--log drop printed a pass: %q", line)
		}
	}
	p.stop(t)

	q := startCgwall(t, "run", "--cgroup", cg, "--block", "127.0.0.2", "--log", "none")
	mustEPERM(t, "blocked with --log none", probe(t, cg, "", "udp", "127.0.0.2", "127.0.0.1"))
	if code := q.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if out := q.stdout.String(); out != "" {
		t.Errorf("--log none printed %q", out)
	}
}

func TestRunJSON(t *testing.T) {
	cg, _ := testCgroup(t)
	p := startCgwall(t, "run", "--cgroup", cg, "--block", "127.0.0.2", "--format", "json")
	mustEPERM(t, "blocked", probe(t, cg, "", "udp", "127.0.0.2", "127.0.0.1"))
	line := p.stdout.waitFor(t, `"dst":"127.0.0.2"`)
	var e struct {
		Dst    string `json:"dst"`
		Action *int   `json:"action"`
		Rule   string `json:"rule"`
		Proto  string `json:"proto"`
		DPort  int    `json:"dport"`
	}
	if err := json.Unmarshal([]byte(line), &e); err != nil {
		t.Fatalf("event %q is not JSON: %v", line, err)
	}
	if e.Action == nil || *e.Action != 0 || e.Rule != "127.0.0.2/32" || e.Proto != "udp" || e.DPort == 0 {
		t.Errorf("event %q", line)
	}
	// SIGTERM ends run as SIGINT does: detached, exit 0.
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit %d after SIGTERM", code)
	}
	p.stderr.waitFor(t, "detached from "+cg)
	if n := attachedCount(t, cg); n != 0 {
		t.Errorf("%d programs attached after SIGTERM", n)
	}
}

// TestRunReportsLostEvents stops run (SIGSTOP) so that it reads nothing,
// makes far more decisions than the ring buffer holds, and resumes it: the
// events that did not fit are reported, and the packets were judged anyway.
func TestRunReportsLostEvents(t *testing.T) {
	cg, _ := testCgroup(t)
	p := startCgwall(t, "run", "--cgroup", cg, "--block", "127.0.0.2", "--log", "all")
	p.cmd.Process.Signal(syscall.SIGSTOP)
	out := runProbe(t, cg, "burst", "127.0.0.2", "10000")
	p.cmd.Process.Signal(syscall.SIGCONT)
	if out != "0" {
		t.Errorf("%s of 10000 sends to a blocked address succeeded", out)
	}
	line := p.stderr.waitFor(t, "lost ")
	var lost, total int
	// Egress refuses each send, so each is one decision; the
	// 256 KiB ring buffer holds 4096 events of 64 bytes.
	if _, err := fmt.Sscanf(line, "lost %d events (ring buffer full; %d in total)", &lost, &total); err != nil || lost < 10000-4096 || lost >= 10000 {
		t.Errorf("lost-events line %q: want all but at most 4096 of the 10000 decisions lost", line)
	}
	p.stdout.waitFor(t, "DST 127.0.0.2, ACTION 0")
}

// TestRunBlocksICMP sends ICMP from a raw socket, which no socket hook sees:
// cgroup_skb drops it.
func TestRunBlocksICMP(t *testing.T) {
	cg, _ := testCgroup(t)
	p := startCgwall(t, "run", "--cgroup", cg, "--block", "127.0.0.2")
	if got := runProbe(t, cg, "icmp", "127.0.0.2"); got != "operation not permitted" {
		t.Errorf("ICMP to a blocked address: %q, want EPERM", got)
	}
	if got := runProbe(t, cg, "icmp", "127.0.0.3"); got != "ok" {
		t.Errorf("ICMP to an allowed address: %q", got)
	}
	p.stdout.waitFor(t, "DST 127.0.0.2, ACTION 0 hook=egress src=127.0.0.1 proto=icmp rule=127.0.0.2/32")
}

// runProbe runs a probe in the cgroup and returns what it printed.
func runProbe(t *testing.T, cg string, args ...string) string {
	t.Helper()
	self, _ := os.Executable()
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), probeEnv+"=1")
	defer inCgroup(t, cmd, cg)()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("probe %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

func mappedProbe(t *testing.T, cg, proto, ipv4 string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "mapped", proto, ipv4)
	cmd.Env = append(os.Environ(), probeEnv+"=1")
	defer inCgroup(t, cmd, cg)()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("mapped probe: %v", err)
	}
	return strings.TrimSpace(string(out))
}
