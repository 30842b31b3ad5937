package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The tests of rules by port and protocol (issue 10). Each runs real
// clients in a test cgroup against test hosts at documentation addresses
// (hosts_test.go): curl for TCP, a UDP sender, and ping.

// testPorts are the ports the sinks serve, TCP and UDP alike.
var testPorts = []int{8080, 8081, 8085, 8090, 9090}

// waitEvent waits for the decision line that contains start and checks
// that it has each of fields.
func waitEvent(t *testing.T, p *proc, start string, fields ...string) {
	t.Helper()
	// start is any part of the line that tells it from the others.
	line := p.stdout.waitFor(t, start)
	for _, f := range fields {
		if !strings.Contains(line, " "+f) {
			t.Errorf("decision line %q lacks %q", line, f)
		}
	}
}

// TestPortsForms blocks one test host by each form of the table,
// and tries each with every client: what the rule names is blocked, and
// nothing else.
func TestPortsForms(t *testing.T) {
	cg, _ := testCgroup(t)
	h := newHosts(t)
	s := h.serve(t, testPorts...)
	p := startCgwall(t, "run", "--cgroup", cg,
		"--block", "192.0.2.1",
		"--block", "192.0.2.2:8080",
		"--block", "192.0.2.3:8080-8089",
		"--block", "192.0.2.4:tcp/8080",
		"--block", "192.0.2.5:udp/8080-8089",
		"--block", "192.0.2.6:tcp",
		"--block", "192.0.2.7:icmp",
		"--block", "192.0.2.8:proto/17",
		"--block", "192.0.2.9:sctp/8080",
		"--block", "[2001:db8::2]:tcp/8080",
		"--block", "[2001:db8::3]:icmpv6",
	)
	// ADDR:PORT and ADDR:LOW-HIGH are a TCP and a UDP rule each.
	if line := p.stderr.waitFor(t, "attached"); !strings.HasSuffix(line, "(13 rules)") {
		t.Errorf("ready line %q", line)
	}
	for _, tc := range []struct {
		rule  string
		reach []reach
	}{
		{"ADDR", []reach{{"tcp", "192.0.2.1", 8080, false}, {"udp", "192.0.2.1", 8081, false}, {"icmp", "192.0.2.1", 0, false}}},
		{"ADDR:PORT", []reach{
			{"tcp", "192.0.2.2", 8080, false}, {"udp", "192.0.2.2", 8080, false},
			{"tcp", "192.0.2.2", 8081, true}, {"udp", "192.0.2.2", 8081, true}, {"icmp", "192.0.2.2", 0, true},
		}},
		{"ADDR:LOW-HIGH", []reach{
			{"tcp", "192.0.2.3", 8080, false}, {"tcp", "192.0.2.3", 8085, false}, {"udp", "192.0.2.3", 8085, false},
			{"tcp", "192.0.2.3", 8090, true}, {"udp", "192.0.2.3", 8090, true},
		}},
		{"ADDR:tcp/PORT", []reach{
			{"tcp", "192.0.2.4", 8080, false}, {"tcp", "192.0.2.4", 8081, true}, {"udp", "192.0.2.4", 8080, true}, {"icmp", "192.0.2.4", 0, true},
		}},
		{"ADDR:udp/LOW-HIGH", []reach{
			{"udp", "192.0.2.5", 8080, false}, {"udp", "192.0.2.5", 8085, false}, {"udp", "192.0.2.5", 8090, true}, {"tcp", "192.0.2.5", 8085, true},
		}},
		{"ADDR:tcp", []reach{
			{"tcp", "192.0.2.6", 8080, false}, {"tcp", "192.0.2.6", 9090, false}, {"udp", "192.0.2.6", 8080, true}, {"icmp", "192.0.2.6", 0, true},
		}},
		{"ADDR:icmp", []reach{{"icmp", "192.0.2.7", 0, false}, {"tcp", "192.0.2.7", 8080, true}, {"udp", "192.0.2.7", 8080, true}}},
		{"ADDR:PROTO-NUMBER", []reach{
			{"udp", "192.0.2.8", 8080, false}, {"udp", "192.0.2.8", 9090, false}, {"tcp", "192.0.2.8", 8080, true}, {"icmp", "192.0.2.8", 0, true},
		}},
		// This kernel has no SCTP to try; an SCTP rule must not catch
		// TCP or UDP to its port.
		{"ADDR:sctp/PORT", []reach{{"tcp", "192.0.2.9", 8080, true}, {"udp", "192.0.2.9", 8080, true}}},
		{"[IPv6]:tcp/PORT", []reach{
			{"tcp", "2001:db8::2", 8080, false}, {"tcp", "2001:db8::2", 8081, true}, {"udp", "2001:db8::2", 8080, true}, {"icmpv6", "2001:db8::2", 0, true},
		}},
		{"[IPv6]:icmpv6", []reach{{"icmpv6", "2001:db8::3", 0, false}, {"tcp", "2001:db8::3", 8080, true}}},
		{"no rule", []reach{{"tcp", "192.0.2.10", 8080, true}, {"udp", "192.0.2.10", 8080, true}, {"icmp", "192.0.2.10", 0, true}}},
	} {
		t.Run(tc.rule, func(t *testing.T) {
			for _, r := range tc.reach {
				h.expect(t, cg, s, r)
			}
		})
	}
	// Each decision names the rule that made it in its canonical form,
	// with the packet's protocol and port.
	waitEvent(t, p, "DST 192.0.2.1, ACTION 0 hook=connect", "proto=tcp", "dport=8080", "rule=192.0.2.1/32")
	waitEvent(t, p, "DST 192.0.2.2, ACTION 0 hook=connect", "proto=tcp", "dport=8080", "rule=192.0.2.2/32:tcp/8080")
	waitEvent(t, p, "dport=8080 rule=192.0.2.2/32:udp/8080", "ACTION 0 hook=egress", "proto=udp")
	waitEvent(t, p, "DST 192.0.2.3, ACTION 0 hook=connect proto=tcp dport=8085", "rule=192.0.2.3/32:tcp/8080-8089")
	waitEvent(t, p, "dport=8085 rule=192.0.2.5/32:udp/8080-8089", "ACTION 0 hook=egress", "proto=udp")
	waitEvent(t, p, "DST 192.0.2.6, ACTION 0 hook=connect proto=tcp dport=9090", "rule=192.0.2.6/32:tcp")
	waitEvent(t, p, "DST 192.0.2.7, ACTION 0 hook=egress", "proto=icmp", "rule=192.0.2.7/32:icmp")
	waitEvent(t, p, "dport=9090 rule=192.0.2.8/32:udp ", "ACTION 0 hook=egress", "proto=udp")
	waitEvent(t, p, "DST 2001:db8::2, ACTION 0 hook=connect proto=tcp dport=8080", "rule=[2001:db8::2/128]:tcp/8080")
	waitEvent(t, p, "DST 2001:db8::3, ACTION 0 hook=egress", "proto=icmpv6", "rule=[2001:db8::3/128]:icmpv6")
}

// TestPortsConnectFailsFast checks that a connect() to a blocked port fails
// at once with EPERM, from the connect hook, rather than after curl's
// connect timeout, while the next port of the same host answers; and that a
// UDP send to a blocked port fails at once too.
func TestPortsConnectFailsFast(t *testing.T) {
	cg, _ := testCgroup(t)
	h := newHosts(t)
	s := h.serve(t, 8080, 8081)
	p := startCgwall(t, "run", "--cgroup", cg, "--block", "192.0.2.1:tcp/8080", "--block", "192.0.2.1:udp/8081")
	c := h.curl(t, cg, "192.0.2.1", 8080, "fast")
	if c.code != 7 || !strings.Contains(c.stderr, "Operation not permitted") || c.took > fastFail {
		t.Errorf("curl to a blocked port: exit %d after %v, want exit 7 with EPERM at once; stderr:\n%s", c.code, c.took, c.stderr)
	}
	h.expect(t, cg, s, reach{"tcp", "192.0.2.1", 8081, true})
	start := time.Now()
	if r := h.sendUDP(t, cg, "192.0.2.1", 8081, "fast"); r.Sent || !strings.Contains(r.Err, "operation not permitted") || time.Since(start) > fastFail {
		t.Errorf("UDP to a blocked port: %+v after %v, want EPERM at once", r, time.Since(start))
	}
	waitEvent(t, p, "DST 192.0.2.1, ACTION 0 hook=connect proto=tcp dport=8080", "rule=192.0.2.1/32:tcp/8080")
}

// TestPortsIngress runs servers in the cgroup under a default-block ingress
// policy that allows sources to one local port each: an ingress rule's port
// is the local port, the one the server listens on.
func TestPortsIngress(t *testing.T) {
	cg, _ := testCgroup(t)
	h := newHosts(t)
	p := startCgwall(t, "run", "--cgroup", cg, "--default-in", "block", "--log", "all",
		"--allow-in", "192.0.2.0/24:tcp/8080",
		"--allow-in", "198.51.100.0/24:udp/8081",
		// The marker's source: every UDP port, so that each port can be
		// shown to have received everything that was let through.
		"--allow-in", "198.51.100.1:udp",
	)
	l := h.listen(t, cg, "tcp/8080", "tcp/9090", "udp/8081", "udp/9090")

	if err := h.dialFrom(t, "192.0.2.9", "203.0.113.1", 8080, "allowed-tcp"); err != nil {
		t.Errorf("TCP from an allowed source to its port: %v", err)
	}
	l.p.stdout.waitFor(t, "got tcp/8080 allowed-tcp from 192.0.2.9:")
	if err := h.dialFrom(t, "192.0.2.9", "203.0.113.1", 9090, "other-port"); err == nil {
		t.Error("TCP from an allowed source to another local port was let in")
	}
	if err := h.dialFrom(t, "203.0.113.9", "203.0.113.1", 8080, "other-source"); err == nil {
		t.Error("TCP from a source no rule allows was let in")
	}

	h.sendFrom(t, "198.51.100.9", "203.0.113.1", 8081, "allowed-udp")
	h.sendFrom(t, "198.51.100.9", "203.0.113.1", 9090, "udp-other-port")
	h.sendFrom(t, "192.0.2.9", "203.0.113.1", 8081, "udp-tcp-only-source")
	for _, port := range []int{8081, 9090} {
		marker := fmt.Sprintf("marker-%d", port)
		h.sendFrom(t, "198.51.100.1", "203.0.113.1", port, marker)
		l.p.stdout.waitFor(t, fmt.Sprintf("got udp/%d %s ", port, marker))
	}
	l.p.stdout.waitFor(t, "got udp/8081 allowed-udp from 198.51.100.9:")
	for _, line := range l.p.stdout.snapshot() {
		for _, blocked := range []string{"other-port", "other-source", "udp-other-port", "udp-tcp-only-source"} {
			if strings.Contains(line, " "+blocked+" ") {
				t.Errorf("the server in the cgroup got what ingress rules block: %q", line)
			}
		}
	}
	waitEvent(t, p, "ACTION 1 hook=ingress src=192.0.2.9 proto=tcp", "dport=8080", "rule=192.0.2.0/24:tcp/8080")
	waitEvent(t, p, "ACTION 0 hook=ingress src=192.0.2.9 proto=tcp", "dport=9090", "rule=default")
	waitEvent(t, p, "ACTION 1 hook=ingress src=198.51.100.9 proto=udp", "dport=8081", "rule=198.51.100.0/24:udp/8081")
	waitEvent(t, p, "ACTION 1 hook=ingress src=198.51.100.1 proto=udp", "rule=198.51.100.1/32:udp")
}

// TestPortsRangeInBlockedPrefix blocks a /24 and allows one host of it a
// range of TCP ports, with a narrower block inside the range: the most
// specific rule decides, and what the host's rules do not match falls
// through to the /24.
func TestPortsRangeInBlockedPrefix(t *testing.T) {
	cg, _ := testCgroup(t)
	h := newHosts(t)
	s := h.serve(t, testPorts...)
	p := startCgwall(t, "run", "--cgroup", cg, "--log", "all",
		"--block", "198.51.100.0/24",
		"--allow", "198.51.100.7:tcp/8000-8999",
		"--block", "198.51.100.7:tcp/8085",
	)
	for _, r := range []reach{
		{"tcp", "198.51.100.7", 8080, true},
		{"tcp", "198.51.100.7", 8090, true},
		{"tcp", "198.51.100.7", 8085, false}, // the narrowest range wins
		{"tcp", "198.51.100.7", 9090, false}, // outside the range: the /24
		{"udp", "198.51.100.7", 8080, false}, // the range is TCP's
		{"icmp", "198.51.100.7", 0, false},
		{"tcp", "198.51.100.8", 8080, false},
		{"tcp", "203.0.113.1", 8080, true},
	} {
		h.expect(t, cg, s, r)
	}
	waitEvent(t, p, "DST 198.51.100.7, ACTION 1 hook=connect proto=tcp dport=8080", "rule=198.51.100.7/32:tcp/8000-8999")
	waitEvent(t, p, "DST 198.51.100.7, ACTION 0 hook=connect proto=tcp dport=8085", "rule=198.51.100.7/32:tcp/8085")
	waitEvent(t, p, "DST 198.51.100.7, ACTION 0 hook=connect proto=tcp dport=9090", "rule=198.51.100.0/24")
}

// TestPortsAny blocks a TCP port and ICMP for every address: any stands for
// both families, and for IPv4 alone with icmp, which is IPv4's. A host rule
// is more specific than any.
func TestPortsAny(t *testing.T) {
	cg, _ := testCgroup(t)
	h := newHosts(t)
	s := h.serve(t, testPorts...)
	p := startCgwall(t, "run", "--cgroup", cg, "--block", "any:tcp/8081", "--block", "any:icmp", "--allow", "192.0.2.1:tcp/8081")
	if line := p.stderr.waitFor(t, "attached"); !strings.HasSuffix(line, "(4 rules)") {
		t.Errorf("ready line %q: want any:tcp/8081 as 2 rules, any:icmp as 1", line)
	}
	for _, r := range []reach{
		{"tcp", "192.0.2.2", 8081, false},
		{"tcp", "198.51.100.1", 8081, false},
		{"tcp", "2001:db8::2", 8081, false},
		{"tcp", "192.0.2.1", 8081, true},
		{"tcp", "192.0.2.2", 8080, true},
		{"tcp", "2001:db8::2", 8080, true},
		{"udp", "192.0.2.2", 8081, true},
		{"udp", "2001:db8::2", 8081, true},
		{"icmp", "203.0.113.1", 0, false},
		{"icmpv6", "2001:db8::2", 0, true},
	} {
		h.expect(t, cg, s, r)
	}
	waitEvent(t, p, "DST 192.0.2.2, ACTION 0 hook=connect proto=tcp dport=8081", "rule=0.0.0.0/0:tcp/8081")
	waitEvent(t, p, "DST 2001:db8::2, ACTION 0 hook=connect proto=tcp dport=8081", "rule=[::/0]:tcp/8081")
	waitEvent(t, p, "DST 203.0.113.1, ACTION 0 hook=egress", "proto=icmp", "rule=0.0.0.0/0:icmp")
}

// TestPortsIPv6 checks IPv6 rules with ports, which take brackets, and an
// address without them: 2001:db8::8:8080 is an address, not port 8080.
func TestPortsIPv6(t *testing.T) {
	cg, _ := testCgroup(t)
	h := newHosts(t)
	s := h.serve(t, testPorts...)
	p := startCgwall(t, "run", "--cgroup", cg,
		"--block", "[2001:db8::/64]:tcp/8080-8089",
		"--allow", "[2001:db8::5]:tcp/8085",
		"--block", "2001:db8::8:8080",
	)
	for _, r := range []reach{
		{"tcp", "2001:db8::4", 8080, false},
		{"tcp", "2001:db8::4", 8085, false},
		{"tcp", "2001:db8::5", 8085, true},
		{"tcp", "2001:db8::5", 8080, false},
		{"tcp", "2001:db8::4", 8090, true},
		{"udp", "2001:db8::4", 8080, true},
		{"tcp", "2001:db8:0:1::4", 8080, true}, // outside the /64
		{"tcp", "2001:db8::8:8080", 8090, false},
		{"udp", "2001:db8::8:8080", 8090, false},
		{"icmpv6", "2001:db8::8:8080", 0, false},
		{"tcp", "2001:db8::8", 8090, true},
	} {
		h.expect(t, cg, s, r)
	}
	waitEvent(t, p, "DST 2001:db8::4, ACTION 0 hook=connect proto=tcp dport=8085", "rule=[2001:db8::/64]:tcp/8080-8089")
	waitEvent(t, p, "DST 2001:db8::8:8080, ACTION 0 hook=connect proto=tcp dport=8090", "rule=2001:db8::8:8080/128")
}

// TestPortsPolicyFile runs a default-block policy file whose rules and list
// file carry ports, then a blocklist of port rules given by --block-list.
func TestPortsPolicyFile(t *testing.T) {
	cg, _ := testCgroup(t)
	h := newHosts(t)
	s := h.serve(t, testPorts...)
	dir := t.TempDir()
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	write("allowed.txt", "# port rules, one a line\n198.51.100.0/24:tcp/8090\n203.0.113.5:udp/8085-8089   # a range\n")
	file := write("ports.yaml", `egress:
  default: block
  allow:
    - 192.0.2.1:tcp/8080
    - "[2001:db8::2]:8080"
    - any:udp/8081
  allow_lists: [allowed.txt]
`)
	want := file + `: valid policy
  egress: default block; IPv4: 0 block, 4 allow; IPv6: 0 block, 3 allow
  ingress: default allow; IPv4: 0 block, 0 allow; IPv6: 0 block, 0 allow
  audit off, log drop, deny_raw off
`
	if out := cgwallOK(t, "check", "-f", file); out != want {
		t.Errorf("check said\n%s\nwant\n%s", out, want)
	}
	p := startCgwall(t, "run", "--cgroup", cg, "-f", file)
	if line := p.stderr.waitFor(t, "attached"); !strings.HasSuffix(line, "(7 rules)") {
		t.Errorf("ready line %q", line)
	}
	for _, r := range []reach{
		{"tcp", "192.0.2.1", 8080, true},
		{"tcp", "192.0.2.1", 8081, false},
		{"udp", "192.0.2.1", 8080, false},
		{"tcp", "2001:db8::2", 8080, true},
		{"udp", "2001:db8::2", 8080, true},
		{"tcp", "2001:db8::2", 8081, false},
		{"udp", "192.0.2.9", 8081, true},
		{"udp", "2001:db8::9", 8081, true},
		{"tcp", "192.0.2.9", 8081, false},
		{"tcp", "198.51.100.3", 8090, true},
		{"udp", "203.0.113.5", 8085, true},
		{"udp", "203.0.113.5", 8090, false},
		{"icmp", "192.0.2.1", 0, false},
	} {
		h.expect(t, cg, s, r)
	}
	waitEvent(t, p, "DST 192.0.2.1, ACTION 0 hook=connect proto=tcp dport=8081", "rule=default")
	p.stop(t)

	blocklist := write("blocked.txt", "192.0.2.1:tcp/8080\n[2001:db8::2]:udp/8081\n198.51.100.0/24:8085\n")
	q := startCgwall(t, "run", "--cgroup", cg, "--block-list", blocklist)
	if line := q.stderr.waitFor(t, "attached"); !strings.HasSuffix(line, "(4 rules)") {
		t.Errorf("ready line %q", line)
	}
	for _, r := range []reach{
		{"tcp", "192.0.2.1", 8080, false},
		{"udp", "192.0.2.1", 8080, true},
		{"udp", "2001:db8::2", 8081, false},
		{"tcp", "2001:db8::2", 8081, true},
		{"tcp", "198.51.100.4", 8085, false},
		{"udp", "198.51.100.4", 8085, false},
		{"tcp", "198.51.100.4", 8080, true},
	} {
		h.expect(t, cg, s, r)
	}
	waitEvent(t, q, "dport=8085 rule=198.51.100.0/24:udp/8085", "ACTION 0 hook=egress", "proto=udp")
}

// TestPortsLiveEdits edits a persistent policy with port rules: each edit is
// in force when the command returns, on its port and no other; a bad rule
// or a partial overlap changes nothing; remove takes a rule back, and
// any:tcp/PORT removes the rule of each family.
func TestPortsLiveEdits(t *testing.T) {
	cg, _ := testCgroup(t)
	h := newHosts(t)
	s := h.serve(t, testPorts...)
	attachPolicy(t, cg, "--block", "192.0.2.0/24:tcp/9090")
	edit := func(want string, args ...string) {
		t.Helper()
		if out := cgwallOK(t, append([]string{args[0], "--cgroup", cg}, args[1:]...)...); out != want {
			t.Errorf("%v said %q, want %q", args, out, want)
		}
	}
	expect := func(rs ...reach) {
		t.Helper()
		for _, r := range rs {
			h.expect(t, cg, s, r)
		}
	}
	expect(reach{"tcp", "192.0.2.1", 9090, false}, reach{"tcp", "192.0.2.1", 8080, true})

	edit("blocked egress 192.0.2.1/32:tcp/8080 (rule 2)\n", "block", "192.0.2.1:tcp/8080")
	expect(reach{"tcp", "192.0.2.1", 8080, false}, reach{"tcp", "192.0.2.1", 8081, true}, reach{"udp", "192.0.2.1", 8080, true}, reach{"tcp", "192.0.2.2", 8080, true})
	if r := ruleOf(t, cg, "192.0.2.1/32:tcp/8080"); r.ID != 2 || r.Action != "block" || r.Packets == 0 {
		t.Errorf("list: %+v, want rule 2 blocking, with the refused connect counted", r)
	}
	if text := cgwallOK(t, "list", "--cgroup", cg); !strings.Contains(text, "192.0.2.1/32:tcp/8080") || !strings.Contains(text, "RULE") {
		t.Errorf("list text lacks the canonical rule:\n%s", text)
	}

	edit("blocked egress 192.0.2.1/32:tcp/8081 (rule 3)\nblocked egress 192.0.2.1/32:udp/8081 (rule 4)\n", "block", "192.0.2.1:8081")
	edit("allowed egress 192.0.2.1/32:tcp/8081 (rule 3, was block)\n", "allow", "192.0.2.1:TCP/8081")
	if r := ruleOf(t, cg, "192.0.2.1/32:tcp/8081"); r.ID != 3 || r.Action != "allow" {
		t.Errorf("list after the allow: %+v, want rule 3 allowing", r)
	}
	expect(reach{"tcp", "192.0.2.1", 8081, true}, reach{"udp", "192.0.2.1", 8081, false})

	// Bad input changes nothing: neither a bad rule after a good one, nor
	// a range that overlaps another partly.
	_, stderr, code := runCgwall(t, "block", "--cgroup", cg, "192.0.2.1:tcp/8085", "192.0.2.1:tcp/0")
	checkOneLineError(t, stderr, code, 2, `"192.0.2.1:tcp/0": "0" is not a port: use a number from 1 to 65535`)
	expect(reach{"tcp", "192.0.2.1", 8085, true})
	edit("blocked egress 192.0.2.1/32:tcp/8000-8085 (rule 5)\n", "block", "192.0.2.1:tcp/8000-8085")
	_, stderr, code = runCgwall(t, "allow", "--cgroup", cg, "192.0.2.1:tcp/8082-8099")
	checkOneLineError(t, stderr, code, 2, "192.0.2.1/32:tcp/8082-8099 overlaps 192.0.2.1/32:tcp/8000-8085 for egress: port ranges of one address and protocol may nest but not overlap partly")
	// The single ports nest in the range: the narrowest decides.
	expect(reach{"tcp", "192.0.2.1", 8085, false}, reach{"tcp", "192.0.2.1", 8081, true}, reach{"tcp", "192.0.2.1", 8090, true})

	edit("removed egress rule 192.0.2.1/32:tcp/8000-8085 (rule 5)\nremoved egress rule 192.0.2.1/32:tcp/8080 (rule 2)\n", "remove", "192.0.2.1:tcp/8000-8085", "192.0.2.1/32:tcp/8080")
	expect(reach{"tcp", "192.0.2.1", 8080, true}, reach{"tcp", "192.0.2.1", 8085, true})
	edit("removed egress rule 192.0.2.1/32:tcp/8081 (rule 3)\nremoved egress rule 192.0.2.1/32:udp/8081 (rule 4)\n", "remove", "192.0.2.1:8081")
	expect(reach{"udp", "192.0.2.1", 8081, true})
	edit("no egress rule for 192.0.2.1/32:udp/9: nothing to remove\n", "remove", "192.0.2.1:udp/9")

	// any:tcp/PORT is a rule for each family, added and removed together.
	edit("blocked egress 0.0.0.0/0:tcp/8090 (rule 6)\nblocked egress [::/0]:tcp/8090 (rule 7)\n", "block", "any:tcp/8090")
	expect(reach{"tcp", "203.0.113.1", 8090, false}, reach{"tcp", "2001:db8::2", 8090, false}, reach{"tcp", "203.0.113.1", 8080, true})
	edit("removed egress rule 0.0.0.0/0:tcp/8090 (rule 6)\nremoved egress rule [::/0]:tcp/8090 (rule 7)\n", "remove", "any:tcp/8090")
	expect(reach{"tcp", "203.0.113.1", 8090, true}, reach{"tcp", "2001:db8::2", 8090, true})

	// Ingress rules by local port, live.
	edit("blocked ingress 198.51.100.0/24:tcp/22 (rule 8)\n", "block", "--in", "198.51.100.0/24:tcp/22")
	if r := ruleOf(t, cg, "198.51.100.0/24:tcp/22"); r.Dir != "ingress" {
		t.Errorf("list: %+v, want an ingress rule", r)
	}
	expect(reach{"tcp", "192.0.2.1", 9090, false}) // the attached rule held throughout
}

// ruleOf returns the rule of a cgroup's policy that list shows as rule.
func ruleOf(t *testing.T, cg, rule string) listedRule {
	t.Helper()
	l := list(t, "--cgroup", cg)
	if len(l) != 1 {
		t.Fatalf("list: %+v", l)
	}
	for _, r := range l[0].Rules {
		if r.Rule == rule {
			return r
		}
	}
	t.Fatalf("list shows no rule %s: %+v", rule, l[0].Rules)
	return listedRule{}
}

// TestPortsCanonicalRoundTrip attaches rules written in many forms, checks
// that list shows each in its canonical form with its parts, and removes
// each by the text list gave: the form a rule is shown in is one every
// command takes.
func TestPortsCanonicalRoundTrip(t *testing.T) {
	cg, _ := testCgroup(t)
	attachPolicy(t, cg,
		"--block", "192.0.2.1:TCP/443",
		"--block", "[2001:db8::1]:443",
		"--allow", "198.51.100.0/24:Udp/8000-8999",
		"--block", "any:tcp/22",
		"--block", "192.0.2.2:proto/17",
		"--block", "192.0.2.3:proto/47",
		"--block", "192.0.2.4:proto/99",
		"--block", "[::ffff:192.0.2.5]:tcp/80",
		"--block", "192.0.2.6:sctp/3868",
		"--block", "203.0.113.0/24:icmp",
		"--block", "192.0.2.7",
		"--block-in", "[2001:db8::/32]:icmpv6",
		"--allow-in", "198.51.100.0/24:tcp/22",
	)
	want := []listedRule{
		{Dir: "egress", Action: "block", Rule: "192.0.2.1/32:tcp/443", Prefix: "192.0.2.1/32", Proto: "tcp", Port: 443, EndPort: 443},
		{Dir: "egress", Action: "block", Rule: "[2001:db8::1/128]:tcp/443", Prefix: "2001:db8::1/128", Proto: "tcp", Port: 443, EndPort: 443},
		{Dir: "egress", Action: "block", Rule: "[2001:db8::1/128]:udp/443", Prefix: "2001:db8::1/128", Proto: "udp", Port: 443, EndPort: 443},
		{Dir: "egress", Action: "block", Rule: "0.0.0.0/0:tcp/22", Prefix: "0.0.0.0/0", Proto: "tcp", Port: 22, EndPort: 22},
		{Dir: "egress", Action: "block", Rule: "[::/0]:tcp/22", Prefix: "::/0", Proto: "tcp", Port: 22, EndPort: 22},
		{Dir: "egress", Action: "block", Rule: "192.0.2.2/32:udp", Prefix: "192.0.2.2/32", Proto: "udp"},
		{Dir: "egress", Action: "block", Rule: "192.0.2.3/32:gre", Prefix: "192.0.2.3/32", Proto: "gre"},
		{Dir: "egress", Action: "block", Rule: "192.0.2.4/32:proto/99", Prefix: "192.0.2.4/32", Proto: "proto/99"},
		{Dir: "egress", Action: "block", Rule: "192.0.2.5/32:tcp/80", Prefix: "192.0.2.5/32", Proto: "tcp", Port: 80, EndPort: 80},
		{Dir: "egress", Action: "block", Rule: "192.0.2.6/32:sctp/3868", Prefix: "192.0.2.6/32", Proto: "sctp", Port: 3868, EndPort: 3868},
		{Dir: "egress", Action: "block", Rule: "203.0.113.0/24:icmp", Prefix: "203.0.113.0/24", Proto: "icmp"},
		{Dir: "egress", Action: "block", Rule: "192.0.2.7/32", Prefix: "192.0.2.7/32"},
		// --allow comes after every --block, whatever the order of the flags.
		{Dir: "egress", Action: "allow", Rule: "198.51.100.0/24:udp/8000-8999", Prefix: "198.51.100.0/24", Proto: "udp", Port: 8000, EndPort: 8999},
		{Dir: "ingress", Action: "block", Rule: "[2001:db8::/32]:icmpv6", Prefix: "2001:db8::/32", Proto: "icmpv6"},
		{Dir: "ingress", Action: "allow", Rule: "198.51.100.0/24:tcp/22", Prefix: "198.51.100.0/24", Proto: "tcp", Port: 22, EndPort: 22},
	}
	l := list(t, "--cgroup", cg)
	if len(l) != 1 || len(l[0].Rules) != len(want) {
		t.Fatalf("list: %+v, want %d rules", l, len(want))
	}
	text := cgwallOK(t, "list", "--cgroup", cg)
	for i, r := range l[0].Rules {
		w := want[i]
		w.ID = uint32(i + 1)
		if r != w {
			t.Errorf("rule %d: %+v, want %+v", i+1, r, w)
		}
		if !strings.Contains(text, " "+w.Rule+" ") {
			t.Errorf("list text lacks %s:\n%s", w.Rule, text)
		}
	}
	for _, r := range l[0].Rules {
		args := []string{"remove", "--cgroup", cg, r.Rule}
		if r.Dir == "ingress" {
			args = append(args, "--in")
		}
		if out := cgwallOK(t, args...); out != fmt.Sprintf("removed %s rule %s (rule %d)\n", r.Dir, r.Rule, r.ID) {
			t.Errorf("remove %s said %q", r.Rule, out)
		}
	}
	if l := list(t, "--cgroup", cg); len(l[0].Rules) != 0 {
		t.Errorf("rules left after removing each by its listed form: %+v", l[0].Rules)
	}
}

// TestPortsFirstPortRuleLive gives a persistent policy of addresses alone,
// whose programs were loaded without port lookups, its first port rules:
// by a live edit, then by an attach over it. Each must be enforced at once,
// through the same pinned links moved to programs with port lookups.
func TestPortsFirstPortRuleLive(t *testing.T) {
	cg, _ := testCgroup(t)
	h := newHosts(t)
	s := h.serve(t, testPorts...)
	attachPolicy(t, cg, "--block", "192.0.2.3")
	h.expect(t, cg, s, reach{"tcp", "192.0.2.3", 8080, false})
	h.expect(t, cg, s, reach{"tcp", "192.0.2.1", 8080, true})

	cgwallOK(t, "block", "--cgroup", cg, "192.0.2.1:tcp/8080")
	for _, r := range []reach{
		{"tcp", "192.0.2.1", 8080, false}, {"tcp", "192.0.2.1", 8081, true},
		{"udp", "192.0.2.1", 8080, true}, {"tcp", "192.0.2.3", 8081, false},
	} {
		h.expect(t, cg, s, r)
	}

	// An attach over a policy of addresses alone, with port rules.
	cg2, _ := testCgroup(t)
	attachPolicy(t, cg2, "--block", "192.0.2.3")
	attachPolicy(t, cg2, "--block", "192.0.2.2:tcp/8081")
	for _, r := range []reach{
		{"tcp", "192.0.2.2", 8081, false}, {"tcp", "192.0.2.2", 8080, true}, {"tcp", "192.0.2.3", 8080, true},
	} {
		h.expect(t, cg2, s, r)
	}
}
