package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestAllowlist blocks everything by default and allows two addresses.
func TestAllowlist(t *testing.T) {
	cg, _ := testCgroup(t)
	p := startCgwall(t, "run", "--cgroup", cg, "--default", "block", "--allow", "127.0.0.1", "--allow", "127.0.0.3")
	mustPass(t, "UDP to an allowed address", probe(t, cg, "", "udp", "127.0.0.3", "127.0.0.1"))
	mustPass(t, "TCP to an allowed address", probe(t, cg, "", "tcp", "127.0.0.3", ""))
	mustEPERM(t, "UDP to an address no rule allows", probe(t, cg, "", "udp", "127.0.0.2", "127.0.0.1"))
	r := probe(t, cg, "", "tcp", "127.0.0.2", "")
	mustBlock(t, "TCP to an address no rule allows", r)
	if !strings.Contains(r.Err, "operation not permitted") {
		t.Errorf("blocked connect failed with %q, want EPERM at once", r.Err)
	}
	line := p.stdout.waitFor(t, "DST 127.0.0.2, ACTION 0 hook=egress")
	if !strings.Contains(line, "rule=default") {
		t.Errorf("a drop by the default says %q", line)
	}
	p.stdout.waitFor(t, "DST 127.0.0.2, ACTION 0 hook=connect")
}

// sendUDPFrom sends a datagram to the server from each source, labelled with
// the source, then the marker from 127.0.0.1 that ends what it receives.
func sendUDPFrom(t *testing.T, s *server, sources ...string) {
	t.Helper()
	for _, from := range sources {
		sendUDP(t, from, s.Port, from)
	}
	sendUDP(t, "127.0.0.1", s.Port, "marker")
}

// TestIngress runs a server in the cgroup and sends to it from outside, from a
// blocked source and from an allowed one.
func TestIngress(t *testing.T) {
	cg, _ := testCgroup(t)
	p := startCgwall(t, "run", "--cgroup", cg, "--block-in", "127.0.0.5", "--block-in", "127.0.1.0/24")
	if line := p.stderr.waitFor(t, "attached"); !strings.Contains(line, "egress and ingress filters") {
		t.Errorf("ready line %q does not mention ingress", line)
	}

	s := serve(t, cg, "udp")
	sendUDPFrom(t, s, "127.0.0.5", "127.0.1.9", "127.0.0.6")
	if got := s.received(t); !slices.Equal(got, []string{"127.0.0.6"}) {
		t.Errorf("UDP server in the cgroup received from %v; want only 127.0.0.6", got)
	}

	s = serve(t, cg, "tcp")
	if err := sendTCP(from("127.0.0.5"), s.Port, "127.0.0.5"); err == nil {
		t.Error("TCP connect from a blocked source succeeded")
	}
	for _, src := range []string{"127.0.0.6", "127.0.0.1"} {
		label := src
		if src == "127.0.0.1" {
			label = "marker"
		}
		if err := sendTCP(from(src), s.Port, label); err != nil {
			t.Fatalf("TCP from %s: %v", src, err)
		}
	}
	if got := s.received(t); !slices.Equal(got, []string{"127.0.0.6"}) {
		t.Errorf("TCP server in the cgroup received from %v; want only 127.0.0.6", got)
	}
	line := p.stdout.waitFor(t, "ACTION 0 hook=ingress src=127.0.0.5")
	if !strings.Contains(line, "rule=127.0.0.5/32") {
		t.Errorf("ingress drop line %q", line)
	}
	p.stdout.waitFor(t, "ACTION 0 hook=ingress src=127.0.1.9")
}

func from(ip string) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: connectTimeout}
}

func sendUDP(t *testing.T, src string, port int, label string) {
	t.Helper()
	conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(src)}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(label)); err != nil {
		t.Fatalf("send from %s: %v", src, err)
	}
}

func sendTCP(d *net.Dialer, port int, label string) error {
	conn, err := d.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(label))
	return err
}

// TestCurlFailsFast runs curl in the cgroup: a blocked address fails at once
// with EPERM from the connect hook, not after a timeout; an allowed one works.
func TestCurlFailsFast(t *testing.T) {
	cg, _ := testCgroup(t)
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "hello from outside") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	port := ln.Addr().(*net.TCPAddr).Port

	p := startCgwall(t, "run", "--cgroup", cg, "--block", "127.0.0.2")
	_, stderr, code := curl(t, cg, fmt.Sprintf("http://127.0.0.2:%d/", port))
	// With --connect-timeout 20 a hang would end in exit 28 after 20 s; the
	// connect hook makes curl fail with exit 7 and EPERM.
	if code != 7 || !strings.Contains(stderr, "Operation not permitted") {
		t.Errorf("curl to a blocked address: exit %d, stderr:\n%s", code, stderr)
	}
	out, stderr, code := curl(t, cg, fmt.Sprintf("http://127.0.0.3:%d/", port))
	if code != 0 || out != "hello from outside" {
		t.Errorf("curl to an allowed address: exit %d, body %q, stderr:\n%s", code, out, stderr)
	}
	p.stdout.waitFor(t, fmt.Sprintf("DST 127.0.0.2, ACTION 0 hook=connect proto=tcp dport=%d rule=127.0.0.2/32", port))
}

func curl(t *testing.T, cg, url string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command("curl", "-sS", "-v", "--connect-timeout", "20", url)
	defer inCgroup(t, cmd, cg)()
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	cmd.Run()
	t.Logf("curl %s: exit %d after %v", url, cmd.ProcessState.ExitCode(), time.Since(start).Round(time.Millisecond))
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// TestAudit blocks nothing but logs what it would have blocked.
func TestAudit(t *testing.T) {
	cg, _ := testCgroup(t)
	p := startCgwall(t, "run", "--cgroup", cg, "--audit", "--block", "127.0.0.2")
	if line := p.stderr.waitFor(t, "attached"); !strings.Contains(line, "in audit mode") {
		t.Errorf("ready line %q does not say audit", line)
	}
	mustPass(t, "UDP to a blocked address in audit mode", probe(t, cg, "", "udp", "127.0.0.2", "127.0.0.1"))
	mustPass(t, "TCP to a blocked address in audit mode", probe(t, cg, "", "tcp", "127.0.0.2", ""))
	for _, hook := range []string{"egress", "connect"} {
		line := p.stdout.waitFor(t, "DST 127.0.0.2, ACTION 0 hook="+hook)
		if !strings.Contains(line, " audit=true") {
			t.Errorf("audited %s decision %q lacks audit=true", hook, line)
		}
	}
}

// TestDenyRaw checks that raw sockets are refused in the cgroup and created
// normally outside it. Packet sockets are refused by a BPF LSM program where
// the kernel lets one load; where it does not, cgwall must say so.
func TestDenyRaw(t *testing.T) {
	cg, child := testCgroup(t)
	p := startCgwall(t, "run", "--cgroup", cg, "--deny-raw")
	guarded := !strings.Contains(p.stderr.String(), "warning: --deny-raw refuses raw sockets but not packet sockets")
	t.Logf("packet sockets guarded: %v", guarded)

	for _, cgroup := range []string{cg, child} {
		if got := socketProbe(t, cgroup, "raw"); got != "operation not permitted" {
			t.Errorf("raw socket in %s: %q, want EPERM", cgroup, got)
		}
		got := socketProbe(t, cgroup, "packet")
		if guarded && got != "operation not permitted" {
			t.Errorf("packet socket in %s: %q, want EPERM", cgroup, got)
		}
		if !guarded && got != "ok" {
			t.Errorf("packet socket in %s: %q although cgwall warned it could not refuse it", cgroup, got)
		}
	}
	for _, kind := range []string{"raw", "packet"} {
		if got := socketProbe(t, "", kind); got != "ok" {
			t.Errorf("%s socket outside the cgroup: %q, want ok", kind, got)
		}
	}
	mustPass(t, "UDP with --deny-raw", probe(t, cg, "", "udp", "127.0.0.3", "127.0.0.1"))
	p.stdout.waitFor(t, "DST -, ACTION 0 hook=sock_create socket=inet/raw")
	if guarded {
		p.stdout.waitFor(t, "DST -, ACTION 0 hook=sock_create socket=packet/raw")
	}
	p.stop(t)
	if got := socketProbe(t, cg, "raw"); got != "ok" {
		t.Errorf("raw socket after run ended: %q", got)
	}
}

func socketProbe(t *testing.T, cg, kind string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "socket", kind)
	cmd.Env = append(os.Environ(), probeEnv+"=1")
	if cg != "" {
		defer inCgroup(t, cmd, cg)()
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("socket probe: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestPolicyFile runs with a policy file and a flag on top.
func TestPolicyFile(t *testing.T) {
	cg, _ := testCgroup(t)
	file := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(file, []byte(`
egress:
  block: [127.0.0.0/24]
  allow: [127.0.0.1, 127.0.0.3]
log: all
`), 0o600)
	p := startCgwall(t, "run", "--cgroup", cg, "-f", file, "--block", "127.0.0.9")
	if line := p.stderr.waitFor(t, "attached"); !strings.HasSuffix(line, "(4 rules)") {
		t.Errorf("ready line %q", line)
	}
	mustPass(t, "an allowed host inside a blocked /24", probe(t, cg, "", "udp", "127.0.0.3", "127.0.0.1"))
	mustEPERM(t, "the rest of the /24", probe(t, cg, "", "udp", "127.0.0.2", "127.0.0.1"))
	mustEPERM(t, "the flag's rule", probe(t, cg, "", "udp", "127.0.0.9", "127.0.0.1"))
	mustPass(t, "outside the /24", probe(t, cg, "", "udp", "127.0.1.1", "127.0.0.1"))
	// log: all from the file
	p.stdout.waitFor(t, "DST 127.0.0.3, ACTION 1")
}
