package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/testutil"
)

// The tests of rules by name (issue 11). Each runs in a network namespace of
// its own (the test hosts of hosts_test.go: every documentation address is
// local there), with dnsmasq answering the names of testZone on
// 127.0.0.53:53, cgwall running in the same namespace (its resolver can only
// catch the DNS of processes in its own), and real clients in the test
// cgroup whose /etc/resolv.conf names dnsmasq: curl and getent through the C
// library's resolver, dig, and python3's socket module.

// testZone is what dnsmasq answers. Every address is a test host's.
var testZone = testutil.Zone{
	Hosts: map[string][]string{
		"a.test":          {"192.0.2.10"},
		"b.test":          {"192.0.2.11"},
		"other.test":      {"192.0.2.12"},
		"x.wild.test":     {"192.0.2.13"},
		"a.b.c.wild.test": {"192.0.2.14"},
		"wild.test":       {"192.0.2.15"},
		"notwild.test":    {"192.0.2.16"},
		"real.test":       {"192.0.2.20"},
		"v6.test":         {"2001:db8::30"},
		"tcp.test":        {"192.0.2.40"},
		"port.test":       {"192.0.2.41"},
		"good.test":       {"192.0.2.42"},
		"bad.test":        {"192.0.2.43"},
	},
	// alias.test -> mid.test -> real.test
	CNAMEs: map[string]string{"alias.test": "mid.test", "mid.test": "real.test"},
}

// namesPorts are the ports the test hosts serve HTTP and UDP on.
var namesPorts = []int{8080, 8081}

// nameHosts are test hosts with a DNS server.
type nameHosts struct {
	*hosts
	dns *testutil.DNS
}

func newNameHosts(t *testing.T, z testutil.Zone) *nameHosts {
	t.Helper()
	h := newHosts(t)
	// An IPv4 address that is not loopback, as every host has: without one
	// the C library's getaddrinfo with AI_ADDRCONFIG (getent ahosts) asks
	// for no A record at all.
	ip(t, "-n", h.ns, "addr", "add", "198.18.0.1/32", "dev", "lo")
	return &nameHosts{hosts: h, dns: testutil.StartDNS(t, z, testutil.DNSOptions{NetNS: h.path})}
}

// cgwall starts cgwall with args in the hosts' namespace and waits for its
// ready line.
func (n *nameHosts) cgwall(t *testing.T, args ...string) *proc {
	t.Helper()
	testutil.RequireBPF(t)
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.path, "--", cgwallBin}, args...)...)
	return startCmd(t, cmd, "attached ")
}

// client runs argv in the cgroup cg (none if empty) as a client of the DNS
// fixture, and waits for it as long as ctx lets it.
func (n *nameHosts) client(t *testing.T, ctx context.Context, cg string, argv ...string) client {
	t.Helper()
	cmd := n.dns.Command(argv...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	closeFD := func() {}
	if cg != "" {
		closeFD = inCgroup(t, cmd, cg)
	}
	start := time.Now()
	err := cmd.Start()
	closeFD()
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err = <-waited:
	case <-ctx.Done():
		cmd.Process.Kill()
		<-waited
		t.Fatalf("%s: still running after %v, killed; stdout %q, stderr %q", strings.Join(argv, " "), time.Since(start), out.String(), errb.String())
	}
	c := client{out.String(), errb.String(), cmd.ProcessState.ExitCode(), time.Since(start)}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%s: %v; stderr %q", strings.Join(argv, " "), err, c.stderr)
	}
	return c
}

// run is client bounded by waitTimeout.
func (n *nameHosts) run(t *testing.T, cg string, argv ...string) client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	return n.client(t, ctx, cg, argv...)
}

// getent looks name up through the C library (gethostbyname2: AAAA, then A).
func (n *nameHosts) getent(t *testing.T, cg, name string) client {
	t.Helper()
	return n.run(t, cg, "getent", "hosts", name)
}

// dig asks for name with dig's flags, and returns its full answer.
func (n *nameHosts) dig(t *testing.T, cg string, args ...string) client {
	t.Helper()
	return n.run(t, cg, append([]string{"dig", "+time=5", "+tries=1"}, args...)...)
}

// resolves checks that name resolves to want in the cgroup, through the C
// library.
func (n *nameHosts) resolves(t *testing.T, cg, name, want string) {
	t.Helper()
	c := n.getent(t, cg, name)
	if c.code != 0 || !strings.HasPrefix(c.stdout, want+" ") {
		t.Errorf("getent hosts %s: exit %d, %q; want %s; stderr %q", name, c.code, c.stdout, want, c.stderr)
	}
}

// nxdomain checks that name does not resolve in the cgroup: getent finds
// nothing (exit 2), and dig sees NXDOMAIN, the answer that ends a search
// list, not REFUSED or SERVFAIL, and not a timeout.
func (n *nameHosts) nxdomain(t *testing.T, cg, name string) {
	t.Helper()
	if c := n.getent(t, cg, name); c.code != 2 || c.stdout != "" {
		t.Errorf("getent hosts %s: exit %d, %q; want exit 2 and nothing", name, c.code, c.stdout)
	}
	if c := n.dig(t, cg, name); c.code != 0 || !strings.Contains(c.stdout, "status: NXDOMAIN") {
		t.Errorf("dig %s: exit %d, want status: NXDOMAIN in\n%s%s", name, c.code, c.stdout, c.stderr)
	}
}

// fetch runs curl for http://HOST:PORT/LABEL in the cgroup and checks that
// it got through (the host's sink saw the label) or was refused at once with
// EPERM, as the connect hook refuses.
func (n *nameHosts) fetch(t *testing.T, cg string, s *sinks, host string, port int, pass bool) {
	t.Helper()
	label := strings.NewReplacer(":", "_", ".", "_", "*", "_").Replace(fmt.Sprintf("%s-%d-%d", host, port, time.Now().UnixNano()))
	url := fmt.Sprintf("http://%s/%s", net.JoinHostPort(host, strconv.Itoa(port)), label)
	c := n.run(t, cg, "curl", "-sS", "-v", "--noproxy", "*", "--connect-timeout", "10", "-m", "12", url)
	got := slices.Contains(s.labels(t, "tcp", port), label)
	switch {
	case pass && (c.code != 0 || c.stdout != fmt.Sprintf("ok %d", port) || !got):
		t.Errorf("curl %s: exit %d, body %q, served %v; want it through; stderr:\n%s", url, c.code, c.stdout, got, c.stderr)
	case !pass && (c.code != 7 || !strings.Contains(c.stderr, "Operation not permitted") || got):
		t.Errorf("curl %s: exit %d, served %v; want exit 7 with EPERM; stderr:\n%s", url, c.code, got, c.stderr)
	case !pass && c.took > fastFail:
		t.Errorf("curl %s took %v to fail, want it refused at once", url, c.took)
	}
}

// neverAsked checks that dnsmasq never got a query for any of names: cgwall
// answered them itself. It first asks dnsmasq for a name from outside the
// cgroup and waits for that query: dnsmasq logs in order, so a query for one
// of names that cgwall had forwarded before would be in the log by then.
func (n *nameHosts) neverAsked(t *testing.T, names ...string) {
	t.Helper()
	if c := n.run(t, "", "dig", "+short", "good.test"); c.code != 0 {
		t.Fatalf("dig good.test from outside the cgroup: exit %d, %s", c.code, c.stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := n.dns.WaitQuery(ctx, "A", "good.test"); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if n.dns.Queried(name) {
			t.Errorf("dnsmasq was asked for %s: a name no rule allows left the cgroup; its log:\n%s", name, n.dns.Log)
		}
	}
}

// TestNamesAllowlist runs a default-block policy of name rules against
// every kind of name: each allowed name resolves and its addresses pass,
// each other name is NXDOMAIN and never leaves the cgroup, and no address
// passes that no answer opened.
func TestNamesAllowlist(t *testing.T) {
	cg, _ := testCgroup(t)
	n := newNameHosts(t, testZone)
	s := n.serve(t, namesPorts...)
	p := n.cgwall(t, "run", "--cgroup", cg, "--default", "block", "--log", "all",
		"--allow", "a.test", "--allow", "*.wild.test", "--allow", "alias.test", "--allow", "v6.test",
		"--allow", "tcp.test", "--allow", "port.test:tcp/8081")

	t.Run("an allowed name", func(t *testing.T) {
		n.resolves(t, cg, "a.test", "192.0.2.10")
		waitEvent(t, p, "DNS a.test, ACTION 1 hook=dns qtype=A", "rule=a.test", "server=127.0.0.53:53")
		n.fetch(t, cg, s, "a.test", 8080, true)
		waitEvent(t, p, "DST 192.0.2.10, ACTION 1 hook=connect", "rule=a.test")
	})
	t.Run("an address no name opened", func(t *testing.T) {
		// b.test's address, never asked for.
		n.fetch(t, cg, s, "192.0.2.11", 8080, false)
		waitEvent(t, p, "DST 192.0.2.11, ACTION 0 hook=connect", "rule=default")
	})
	t.Run("an unlisted name", func(t *testing.T) {
		n.nxdomain(t, cg, "other.test")
		waitEvent(t, p, "DNS other.test, ACTION 0 hook=dns qtype=A", "rule=default")
		n.fetch(t, cg, s, "192.0.2.12", 8080, false)
		n.neverAsked(t, "other.test")
	})
	t.Run("wildcards", func(t *testing.T) {
		n.fetch(t, cg, s, "x.wild.test", 8080, true)
		n.fetch(t, cg, s, "a.b.c.wild.test", 8080, true)
		waitEvent(t, p, "DNS a.b.c.wild.test, ACTION 1 hook=dns qtype=A", "rule=*.wild.test")
		// Not the apex, and not a name that merely ends the same way.
		n.nxdomain(t, cg, "wild.test")
		n.nxdomain(t, cg, "notwild.test")
		n.fetch(t, cg, s, "192.0.2.15", 8080, false)
		n.fetch(t, cg, s, "192.0.2.16", 8080, false)
		n.neverAsked(t, "wild.test", "notwild.test")
	})
	t.Run("a CNAME chain", func(t *testing.T) {
		c := n.dig(t, cg, "+noall", "+answer", "alias.test")
		for _, want := range []string{"alias.test.\t", "CNAME\tmid.test.", "mid.test.\t", "CNAME\treal.test.", "real.test.\t", "A\t192.0.2.20"} {
			if !strings.Contains(c.stdout, want) {
				t.Errorf("dig alias.test: no %q in\n%s", want, c.stdout)
			}
		}
		n.fetch(t, cg, s, "alias.test", 8080, true)
		waitEvent(t, p, "DST 192.0.2.20, ACTION 1 hook=connect", "rule=alias.test")
		// The chain's names are not allowed by themselves.
		n.nxdomain(t, cg, "real.test")
	})
	t.Run("AAAA", func(t *testing.T) {
		if c := n.dig(t, cg, "+short", "AAAA", "v6.test"); c.stdout != "2001:db8::30\n" {
			t.Errorf("dig AAAA v6.test: exit %d, %q, want 2001:db8::30; stderr %q", c.code, c.stdout, c.stderr)
		}
		waitEvent(t, p, "DNS v6.test, ACTION 1 hook=dns qtype=AAAA", "rule=v6.test")
		n.fetch(t, cg, s, "v6.test", 8080, true)
		waitEvent(t, p, "DST 2001:db8::30, ACTION 1 hook=connect", "rule=v6.test")
		n.fetch(t, cg, s, "2001:db8::31", 8080, false)
	})
	t.Run("DNS over TCP", func(t *testing.T) {
		if c := n.dig(t, cg, "+tcp", "+short", "tcp.test"); c.stdout != "192.0.2.40\n" {
			t.Errorf("dig +tcp tcp.test: exit %d, %q, want 192.0.2.40; stderr %q", c.code, c.stdout, c.stderr)
		}
		// The address learned from the answer over TCP opens it.
		n.fetch(t, cg, s, "192.0.2.40", 8080, true)
		if c := n.dig(t, cg, "+tcp", "b.test"); !strings.Contains(c.stdout, "status: NXDOMAIN") {
			t.Errorf("dig +tcp b.test: exit %d, want NXDOMAIN in\n%s%s", c.code, c.stdout, c.stderr)
		}
		n.neverAsked(t, "b.test")
	})
	t.Run("a name with a port", func(t *testing.T) {
		n.fetch(t, cg, s, "port.test", 8081, true)
		n.fetch(t, cg, s, "port.test", 8080, false)
		waitEvent(t, p, "DST 192.0.2.41, ACTION 0 hook=connect", "dport=8080", "rule=default")
	})

	if code := p.stop(t); code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, p.stderr)
	}
	if n := attachedCount(t, cg); n != 0 {
		t.Errorf("%d programs still attached after run exited", n)
	}
}

// TestNamesBlockUnderAllow blocks one name under default allow: it is
// NXDOMAIN, every other name resolves and passes. Events are JSON.
func TestNamesBlockUnderAllow(t *testing.T) {
	cg, _ := testCgroup(t)
	n := newNameHosts(t, testZone)
	s := n.serve(t, namesPorts...)
	p := n.cgwall(t, "run", "--cgroup", cg, "--block", "bad.test", "--format", "json", "--log", "all")

	n.nxdomain(t, cg, "bad.test")
	// getent asks for AAAA first, then A.
	line := p.stdout.waitFor(t, `"name":"bad.test","action":0,"verdict":"nxdomain","hook":"dns","qtype":"A",`)
	for _, want := range []string{`"rule":"bad.test"`, `"rule_id":1,`, `"server":"127.0.0.53:53"`, `"audit":false`} {
		if !strings.Contains(line, want) {
			t.Errorf("event %s lacks %s", line, want)
		}
	}
	n.neverAsked(t, "bad.test")
	n.resolves(t, cg, "good.test", "192.0.2.42")
	n.fetch(t, cg, s, "good.test", 8080, true)
	p.stdout.waitFor(t, `"name":"good.test","action":1`)
}

// TestNamesAudit: in audit mode every name resolves and every connection
// passes, and the events say what would have been refused.
func TestNamesAudit(t *testing.T) {
	cg, _ := testCgroup(t)
	n := newNameHosts(t, testZone)
	s := n.serve(t, namesPorts...)
	p := n.cgwall(t, "run", "--cgroup", cg, "--audit", "--default", "block", "--allow", "a.test")
	if line := p.stderr.waitFor(t, "attached "); !strings.Contains(line, "in audit mode") {
		t.Errorf("ready line %q does not say audit", line)
	}
	n.resolves(t, cg, "other.test", "192.0.2.12")
	waitEvent(t, p, "DNS other.test, ACTION 0 hook=dns qtype=A", "rule=default", "audit=true")
	n.fetch(t, cg, s, "other.test", 8080, true)
	waitEvent(t, p, "DST 192.0.2.12, ACTION 0 hook=connect", "rule=default", "audit=true")
	// dnsmasq answered it: audit forwards what it would have refused.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := n.dns.WaitQuery(ctx, "A", "other.test"); err != nil {
		t.Error(err)
	}
}

// TestNamesExec runs a command under name rules with exec: it resolves and
// reaches the allowed name, and nothing else.
func TestNamesExec(t *testing.T) {
	testutil.RequireBPF(t)
	n := newNameHosts(t, testZone)
	s := n.serve(t, namesPorts...)
	script := `getent hosts a.test && curl -sS --noproxy '*' -o /dev/null http://a.test:8080/from-exec &&
		! getent hosts other.test && ! curl -sS --noproxy '*' http://192.0.2.12:8080/not-from-exec`
	c := n.run(t, "", cgwallBin, "exec", "--default", "block", "--allow", "a.test", "--", "sh", "-c", script)
	if c.code != 0 {
		t.Errorf("exec: exit %d; stdout %q; stderr:\n%s", c.code, c.stdout, c.stderr)
	}
	if got := s.labels(t, "tcp", 8080); !slices.Contains(got, "from-exec") || slices.Contains(got, "not-from-exec") {
		t.Errorf("the sink got %q, want from-exec and not not-from-exec", got)
	}
	for _, want := range []string{"DNS other.test, ACTION 0 hook=dns qtype=A rule=default", "DST 192.0.2.12, ACTION 0 hook=connect"} {
		if !strings.Contains(c.stderr, want) {
			t.Errorf("exec's stderr lacks %q:\n%s", want, c.stderr)
		}
	}
	noExecCgroupLeft(t)
}

// noExecCgroupLeft checks that no exec left its cgroup behind.
func noExecCgroupLeft(t *testing.T) {
	t.Helper()
	mnt, _ := cgroup.Mount()
	left, _ := filepath.Glob(filepath.Join(mnt, "cgwall-exec-*"))
	for _, cg := range left {
		// Another test's exec may run now: only a cgroup of an exec that
		// has exited is left behind.
		var pid int
		if _, err := fmt.Sscanf(filepath.Base(cg), "cgwall-exec-%d-", &pid); err == nil && !alive(pid) {
			t.Errorf("cgroup %s left behind", cg)
		}
	}
}

func alive(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}

// TestNamesUpstream forwards to --dns-upstream whatever server the client
// asked, and the answer still comes from the server asked: dig checks that
// the reply's source is the address it sent to.
func TestNamesUpstream(t *testing.T) {
	cg, _ := testCgroup(t)
	n := newNameHosts(t, testZone)
	p := n.cgwall(t, "run", "--cgroup", cg, "--default", "block", "--allow", "a.test",
		"--dns-upstream", "127.0.0.53", "--log", "all")
	for _, server := range []string{"198.51.100.53", "127.0.0.99"} {
		for _, tcp := range []string{"+notcp", "+tcp"} {
			if c := n.dig(t, cg, "@"+server, tcp, "+short", "a.test"); c.code != 0 || c.stdout != "192.0.2.10\n" {
				t.Errorf("dig @%s %s a.test: exit %d, %q, want 192.0.2.10; stderr %q", server, tcp, c.code, c.stdout, c.stderr)
			}
		}
	}
	waitEvent(t, p, "DNS a.test, ACTION 1 hook=dns qtype=A", "server=127.0.0.53:53")
	if line := p.stderr.waitFor(t, "attached "); !strings.Contains(line, "(0 rules, 1 name rule); DNS served on 127.0.0.1:") {
		t.Errorf("ready line %q does not count the name rule or say where DNS is served", line)
	}
	// SIGTERM ends it as Ctrl-C does, with nothing left behind.
	if code := signalCgwall(t, p, syscall.SIGTERM); code != 0 {
		t.Errorf("exit %d on SIGTERM; stderr:\n%s", code, p.stderr)
	}
	p.stderr.waitFor(t, "detached from "+cg)
	if n := attachedCount(t, cg); n != 0 {
		t.Errorf("%d programs still attached after run exited", n)
	}
}

// TestNamesOtherNetNS: a process of the cgroup in another network namespace
// than cgwall's cannot be sent to cgwall's resolver, and its DNS fails
// closed: nothing reaches its server, and it learns nothing.
func TestNamesOtherNetNS(t *testing.T) {
	cg, _ := testCgroup(t)
	n := newNameHosts(t, testZone)
	// cgwall in a namespace of its own, the client in the hosts'. Under
	// default allow, only the name hooks stand between the client and a
	// blocked name's answer.
	elsewhere := netns(t)
	cmd := exec.Command("nsenter", "--net=/run/netns/"+elsewhere, "--", cgwallBin, "run", "--cgroup", cg, "--block", "a.test")
	testutil.RequireBPF(t)
	startCmd(t, cmd, "attached ")
	if c := n.getent(t, cg, "a.test"); c.code == 0 {
		t.Errorf("getent hosts a.test from another namespace: exit 0, %q; want it to fail", c.stdout)
	}
	n.neverAsked(t, "a.test")
}

// TestNamesRace looks up 1,000 names, each followed at once by a connect to
// its answer: each connect finds its address in force, since the answer is
// released only once it is.
// listen listens on addr in the test's network namespace, for as long as
// the test runs, and hands each connection to handle.
func (n *nameHosts) listen(t *testing.T, network, addr string, handle func(net.Conn)) {
	t.Helper()
	var ln net.Listener
	n.do(t, func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			handle(conn)
		}
	}()
}

func TestNamesRace(t *testing.T) {
	const count = 1000
	z := testutil.Zone{Hosts: map[string][]string{}}
	for i := range count {
		z.Hosts[fmt.Sprintf("n%d.race.test", i)] = []string{fmt.Sprintf("127.1.%d.%d", i/250, i%250+1)}
	}
	cg, _ := testCgroup(t)
	n := newNameHosts(t, z)
	var accepted atomic.Int64
	n.listen(t, "tcp4", ":9100", func(conn net.Conn) {
		accepted.Add(1)
		conn.Close()
	})
	n.cgwall(t, "run", "--cgroup", cg, "--default", "block", "--allow", "*.race.test")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := n.client(t, ctx, cg, "python3", "-c", raceScript, "9100", strconv.Itoa(count))
	if want := fmt.Sprintf("%d of %d connected\n", count, count); c.code != 0 || c.stdout != want {
		t.Errorf("exit %d, %q, want %q; the first failures:\n%s", c.code, c.stdout, want, c.stderr)
	}
	if got := accepted.Load(); got != count {
		t.Errorf("the listener accepted %d connections, want %d", got, count)
	}
}

// raceScript looks each name up through the C library and connects to the
// answer at once, and says how many connected.
const raceScript = `
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
fails = []
for i in range(count):
    name = "n%d.race.test" % i
    try:
        addr = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)[0][4]
        s = socket.create_connection(addr, timeout=5)
        s.close()
    except OSError as e:
        fails.append("%s: %s" % (name, e))
print("%d of %d connected" % (count - len(fails), count))
for f in fails[:10]:
    print(f, file=sys.stderr)
sys.exit(1 if fails else 0)
`

// TestNamesExpiry learns an address with a TTL of one second: once it
// expires a new connection to it is refused, while a stream opened before
// goes on flowing across the expiry.
func TestNamesExpiry(t *testing.T) {
	z := testutil.Zone{Hosts: map[string][]string{"exp.test": {"192.0.2.50"}}, TTL: time.Second}
	cg, _ := testCgroup(t)
	n := newNameHosts(t, z)
	n.listen(t, "tcp", ":9200", func(conn net.Conn) {
		go func() { io.Copy(conn, conn); conn.Close() }()
	})
	p := n.cgwall(t, "run", "--cgroup", cg, "--default", "block", "--allow", "exp.test", "--dns-min-ttl", "1s")

	cmd := n.dns.Command("python3", "-c", expiryScript, "9200")
	cmd.Stderr = os.Stderr
	stdin, out := startPiped(t, cmd, cg)
	ask := func(what string) string {
		t.Helper()
		if _, err := io.WriteString(stdin, what+"\n"); err != nil {
			t.Fatalf("the client: %v", err)
		}
		return readLineWithin(t, out, waitTimeout)
	}
	if line := readLineWithin(t, out, waitTimeout); line != "connected 192.0.2.50" {
		t.Fatalf("the client: %q", line)
	}
	opened := time.Now()
	if got := ask("ping before"); got != "reply ping before" {
		t.Fatalf("the stream before expiry: %q", got)
	}
	// Poll the condition until a deadline: the sweep that expires addresses
	// runs on its own clock, at most a few seconds past the TTL.
	deadline := time.Now().Add(waitTimeout)
	for {
		got := ask("new")
		if strings.HasPrefix(got, "new failed") {
			if !strings.Contains(got, "Operation not permitted") {
				t.Errorf("a new connection after expiry failed, but not with EPERM: %q", got)
			}
			break
		}
		if got != "new ok" || time.Now().After(deadline) {
			t.Fatalf("a new connection %v after the lookup (TTL 1 s): %q", time.Since(opened), got)
		}
		time.Sleep(100 * time.Millisecond) // between polls, not instead of one
	}
	t.Logf("the address expired %v after the lookup", time.Since(opened).Round(time.Millisecond))
	waitEvent(t, p, "DST 192.0.2.50, ACTION 0 hook=connect", "rule=default")
	for i := range 3 {
		if got := ask(fmt.Sprintf("ping after %d", i)); got != fmt.Sprintf("reply ping after %d", i) {
			t.Errorf("the stream opened before expiry, after it: %q", got)
		}
	}
}

// expiryScript connects to exp.test, then on each line of stdin: "new"
// tries a new connection, "ping ..." sends the line on the first and reads
// the echo.
const expiryScript = `
import socket, sys
port = int(sys.argv[1])
addr = socket.getaddrinfo("exp.test", port, socket.AF_INET, socket.SOCK_STREAM)[0][4]
s = socket.create_connection(addr, timeout=5)
print("connected", addr[0], flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "new":
        try:
            socket.create_connection(addr, timeout=5).close()
            print("new ok", flush=True)
        except OSError as e:
            print("new failed:", e, flush=True)
    else:
        s.sendall((cmd + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            b = s.recv(100)
            if not b:
                sys.exit("the stream was closed")
            buf += b
        print("reply", buf.decode().strip(), flush=True)
`

// readLineWithin reads a line, failing the test if none comes in time.
func readLineWithin(t *testing.T, r *bufio.Reader, d time.Duration) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		line, err := r.ReadString('\n')
		if err != nil {
			line = "read: " + err.Error()
		}
		got <- strings.TrimSuffix(line, "\n")
	}()
	select {
	case line := <-got:
		return line
	case <-time.After(d):
		t.Fatalf("no line within %v", d)
		return ""
	}
}

// badNames are name rules that no command takes, and what the error says.
var badNames = []struct{ rule, want string }{
	{"a..test", `"a..test"`},
	{".test", `".test"`},
	{"*", `"*"`},
	{"a.*.test", `"a.*.test"`},
	{"*a.test", `"*a.test"`},
	{"-a.test", `"-a.test"`},
	{"a-.test", `"a-.test"`},
	{"a_b.test", `"a_b.test"`},
	{strings.Repeat("a", 64) + ".test", strings.Repeat("a", 64)},
	{strings.Repeat("abcdefghi.", 26) + "test", strings.Repeat("abcdefghi.", 3)},
	{"bücher.test", "xn--bcher-kva.test"},
}

// TestNamesBadInput checks that a bad name is refused in one line, exit 2
// (125 for exec, whose 2 could be the command's), with nothing attached or
// left behind.
func TestNamesBadInput(t *testing.T) {
	cg, _ := testCgroup(t)
	for _, tc := range badNames {
		t.Run(tc.rule, func(t *testing.T) {
			_, stderr, code := runCgwall(t, "run", "--cgroup", cg, "--default", "block", "--allow="+tc.rule)
			checkOneLineError(t, stderr, code, 2, tc.want)
			_, stderr, code = runCgwall(t, "exec", "--block="+tc.rule, "--", "true")
			checkOneLineError(t, stderr, code, 125, tc.want)
			// What is wrong is said of the name, not of an address.
			if strings.Contains(stderr, "IPv4") {
				t.Errorf("stderr %q: a bad name is explained as an address", stderr)
			}
			if n := attachedCount(t, cg); n != 0 {
				t.Errorf("%d programs attached", n)
			}
		})
	}
	_, stderr, code := runCgwall(t, "run", "--cgroup", cg, "--allow-in", "a.test")
	checkOneLineError(t, stderr, code, 2, "name rules match egress destinations only")
	noExecCgroupLeft(t)
}

// TestNamesAttachRefused: a persistent policy needs cgwall agent to answer
// its DNS once attach exits, so attach refuses name rules when no agent runs
// (exit 1: the input is fine, the system lacks the agent), and the live
// edits block and allow refuse them always.
func TestNamesAttachRefused(t *testing.T) {
	cg, _ := testCgroup(t)
	const want = "example.test:tcp/443: name rules in a persistent policy need cgwall agent, which serves their DNS"
	_, stderr, code := runCgwall(t, "attach", "--cgroup", cg, "--default", "block", "--allow", "192.0.2.1", "--allow", "a.example.test:443")
	checkOneLineError(t, stderr, code, 1, "a."+want)
	if !strings.Contains(stderr, "use cgwall run or cgwall exec") {
		t.Errorf("stderr %q does not say what to use", stderr)
	}
	if n := attachedCount(t, cg); n != 0 {
		t.Errorf("%d programs attached", n)
	}
	attachPolicy(t, cg, "--block", "192.0.2.1")
	for _, verb := range []string{"block", "allow"} {
		_, stderr, code := runCgwall(t, verb, "--cgroup", cg, "*.example.test")
		checkOneLineError(t, stderr, code, 2, "live edits take no name rules")
	}
	got := list(t, "--cgroup", cg)
	if len(got) != 1 || len(got[0].Rules) != 1 {
		t.Errorf("the policy changed: %+v", got)
	}
}
