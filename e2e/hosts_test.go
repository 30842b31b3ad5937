package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cgwall/cgwall/internal/testutil"
)

// This file is the fixture of the tests of rules by port: test hosts at
// documentation addresses with servers on fixed ports, and real clients
// (curl, a UDP sender, ping) that run inside a cgroup.

// hosts is a network namespace in which every address of the documentation
// ranges is local: 192.0.2.0/24, 198.51.100.0/24 and 203.0.113.0/24 are
// routed to its loopback, and 2001:db8::/48 (netns). A packet to one of them
// never leaves the namespace.
type hosts struct {
	ns   string
	path string // of the namespace, for setns and nsenter
}

var docRanges4 = []string{"192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"}

func newHosts(t *testing.T) *hosts {
	t.Helper()
	ns := netns(t)
	for _, r := range docRanges4 {
		ip(t, "-n", ns, "route", "add", "local", r, "dev", "lo")
	}
	return &hosts{ns: ns, path: filepath.Join("/run/netns", ns)}
}

// do runs fn on a thread that has entered the namespace: sockets it opens
// are the namespace's, and outside every test cgroup. The thread is never
// unlocked, so that it ends with its goroutine and nothing else runs in the
// namespace by mistake.
func (h *hosts) do(t *testing.T, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(h.path)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter network namespace %s: %w", h.ns, err)
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// sinks are servers on every address of the hosts, outside the cgroup: an
// HTTP server (for curl) and a UDP socket on each port. Each records the
// labels it got: the path of a request, the payload of a datagram.
type sinks struct {
	h      *hosts
	mu     sync.Mutex
	got    map[string][]string // by "tcp/PORT" and "udp/PORT"
	marked map[int]chan string // the markers each UDP socket read
}

// serve starts the sinks on ports, for IPv4 and IPv6.
func (h *hosts) serve(t *testing.T, ports ...int) *sinks {
	t.Helper()
	s := &sinks{h: h, got: map[string][]string{}, marked: map[int]chan string{}}
	for _, port := range ports {
		var ln net.Listener
		var conn net.PacketConn
		h.do(t, func() (err error) {
			if ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port)); err != nil {
				return err
			}
			conn, err = net.ListenPacket("udp", fmt.Sprintf(":%d", port))
			return err
		})
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.record(fmt.Sprintf("tcp/%d", port), strings.TrimPrefix(r.URL.Path, "/"))
			fmt.Fprintf(w, "ok %d", port)
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		marks := make(chan string, 1)
		s.marked[port] = marks
		go s.readUDP(conn, port, marks)
		t.Cleanup(func() { conn.Close() })
	}
	return s
}

func (s *sinks) record(key, label string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got[key] = append(s.got[key], label)
}

func (s *sinks) readUDP(conn net.PacketConn, port int, marks chan<- string) {
	buf := make([]byte, 256)
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if label := string(buf[:n]); strings.HasPrefix(label, "marker") {
			marks <- label
		} else {
			s.record(fmt.Sprintf("udp/%d", port), label)
		}
	}
}

// labels returns what the sink for proto and port got. For UDP it first
// sends a marker to the socket from outside the cgroup and waits for it:
// loopback delivers within the sending system call, so a datagram sent
// before the marker that is not in by then never will be.
func (s *sinks) labels(t *testing.T, proto string, port int) []string {
	t.Helper()
	if proto == "udp" {
		marker := fmt.Sprintf("marker-%d", time.Now().UnixNano())
		s.h.do(t, func() error {
			conn, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				return err
			}
			defer conn.Close()
			_, err = conn.Write([]byte(marker))
			return err
		})
		select {
		case got := <-s.marked[port]:
			if got != marker {
				t.Fatalf("udp/%d: marker %q, want %q", port, got, marker)
			}
		case <-time.After(waitTimeout):
			t.Fatalf("udp/%d: the marker sent from outside the cgroup never came", port)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got[fmt.Sprintf("%s/%d", proto, port)])
}

// client is a command run inside the cgroup and the hosts' namespace: it
// is cloned into the cgroup, and nsenter enters the namespace before it
// execs the command.
type client struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

func (h *hosts) run(t *testing.T, cg string, argv ...string) client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + h.path, "--"}, argv...)...)
	cmd.Env = append(os.Environ(), probeEnv+"=1")
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	closeFD := inCgroup(t, cmd, cg)
	start := time.Now()
	err := cmd.Start()
	closeFD()
	if err == nil {
		err = cmd.Wait()
	}
	c := client{out.String(), errb.String(), cmd.ProcessState.ExitCode(), time.Since(start)}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) || ctx.Err() != nil {
		t.Fatalf("%s: %v (after %v); stderr %q", strings.Join(argv, " "), err, c.took, c.stderr)
	}
	return c
}

// curl fetches http://ADDR:PORT/LABEL. --connect-timeout 10 would make a
// connection whose SYN is dropped fail after 10 s, with exit 28; the
// connect hook makes a blocked one fail at once, with exit 7 and EPERM.
func (h *hosts) curl(t *testing.T, cg, addr string, port int, label string) client {
	t.Helper()
	url := fmt.Sprintf("http://%s/%s", net.JoinHostPort(addr, strconv.Itoa(port)), label)
	return h.run(t, cg, "curl", "-sS", "-v", "--noproxy", "*", "--connect-timeout", "10", "-m", "12", url)
}

// sendUDP sends LABEL to ADDR:PORT from an unconnected UDP socket: the
// egress judges the datagram, and a drop fails the sendto() with EPERM.
func (h *hosts) sendUDP(t *testing.T, cg, addr string, port int, label string) probeResult {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := h.run(t, cg, self, "udpsend", addr, strconv.Itoa(port), label)
	var res probeResult
	if err := jsonLine(c.stdout, &res); err != nil {
		t.Fatalf("udpsend probe: %v; stderr %q", err, c.stderr)
	}
	return res
}

// ping sends one echo request to addr (ICMP, or ICMPv6 for an IPv6 one) and
// waits a second for the reply. It names its source: without one, ping
// first connects a UDP socket to addr port 1025 to choose it, and that
// connect is judged as UDP, so that a rule for UDP to addr (or a default
// block) would refuse it before any ICMP is sent. The source is addr itself
// for IPv4 (every test host is local) and the namespace's one IPv6 address,
// as IPv6 binds only to an address an interface has.
func (h *hosts) ping(t *testing.T, cg, addr string) client {
	t.Helper()
	family, src := "-4", addr
	if netip.MustParseAddr(addr).Is6() {
		family, src = "-6", "2001:db8::1"
	}
	return h.run(t, cg, "ping", family, "-n", "-c", "1", "-W", "1", "-I", src, addr)
}

// reach is one attempt of a client, and whether it must get through.
type reach struct {
	proto string // tcp (curl), udp (a UDP sender), icmp or icmpv6 (ping)
	addr  string
	port  int
	pass  bool
}

func (r reach) String() string {
	verdict := "blocked"
	if r.pass {
		verdict = "passes"
	}
	if r.port == 0 {
		return fmt.Sprintf("%s to %s %s", r.proto, r.addr, verdict)
	}
	return fmt.Sprintf("%s to %s %s", r.proto, net.JoinHostPort(r.addr, strconv.Itoa(r.port)), verdict)
}

// fastFail bounds how long a refused client takes: it is refused at the
// system call, so the time is that of starting it.
const fastFail = 2 * time.Second

// expect makes the attempt r from the cgroup and checks its outcome. A
// blocked TCP connect or UDP send fails at once with EPERM; a blocked ping
// is lost (its raw socket is judged by cgroup_skb alone).
func (h *hosts) expect(t *testing.T, cg string, s *sinks, r reach) {
	t.Helper()
	label := strings.NewReplacer(":", "_", ".", "_").Replace(fmt.Sprintf("%s-%s-%d-%d", r.proto, r.addr, r.port, time.Now().UnixNano()))
	switch r.proto {
	case "tcp":
		c := h.curl(t, cg, r.addr, r.port, label)
		got := slices.Contains(s.labels(t, "tcp", r.port), label)
		switch {
		case r.pass && (c.code != 0 || c.stdout != fmt.Sprintf("ok %d", r.port) || !got):
			t.Errorf("%v: curl exit %d, body %q, served %v; stderr:\n%s", r, c.code, c.stdout, got, c.stderr)
		case !r.pass && (c.code != 7 || !strings.Contains(c.stderr, "Operation not permitted") || got):
			t.Errorf("%v: curl exit %d, served %v, want exit 7 with EPERM; stderr:\n%s", r, c.code, got, c.stderr)
		case !r.pass && c.took > fastFail:
			t.Errorf("%v: curl took %v to fail, want it refused at once", r, c.took)
		}
	case "udp":
		res := h.sendUDP(t, cg, r.addr, r.port, label)
		got := slices.Contains(s.labels(t, "udp", r.port), label)
		switch {
		case r.pass && (!res.Sent || !got):
			t.Errorf("%v: sent %v (%s), received %v", r, res.Sent, res.Err, got)
		case !r.pass && (res.Sent || !strings.Contains(res.Err, "operation not permitted") || got):
			t.Errorf("%v: sent %v (%q), received %v; want sendto to fail with EPERM", r, res.Sent, res.Err, got)
		}
	case "icmp", "icmpv6":
		c := h.ping(t, cg, r.addr)
		out := c.stdout + c.stderr
		// A dropped request is lost, or its sendmsg refused; a ping that
		// failed for another reason proves nothing.
		dropped := strings.Contains(out, " 0 received") || strings.Contains(out, "Operation not permitted")
		if r.pass && c.code != 0 || !r.pass && (c.code == 0 || !dropped) {
			t.Errorf("%v: ping exit %d:\n%s", r, c.code, out)
		}
	default:
		t.Fatalf("no client for %q", r.proto)
	}
}

// listenProbe is a listen probe: servers inside the cgroup, in the hosts'
// namespace, which print "got PROTO/PORT LABEL from SRC" for each
// connection or datagram.
type listenProbe struct{ p *proc }

func (h *hosts) listen(t *testing.T, cg string, specs ...string) *listenProbe {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", append([]string{"--net=" + h.path, "--", self, "listen"}, specs...)...)
	cmd.Env = append(os.Environ(), probeEnv+"=1")
	fd, err := syscall.Open(cg, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	p := startCmd(t, cmd, "listening")
	return &listenProbe{p}
}

// startCmd starts cmd, waits for a line of its stderr that contains ready,
// and kills it at the end of the test.
func startCmd(t *testing.T, cmd *exec.Cmd, ready string) *proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	p, err := testutil.Start(ctx, cmd, ready)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return &proc{p: p, cmd: p.Cmd, stdout: &lines{p.Stdout}, stderr: &lines{p.Stderr}, done: p.Done()}
}

func jsonLine(s string, v any) error { return json.Unmarshal([]byte(strings.TrimSpace(s)), v) }

// dialFrom connects from src, a host outside the cgroup, to dst:port and
// sends label; ingress drops fail it with a timeout, as no hook of the
// client's refuses it.
func (h *hosts) dialFrom(t *testing.T, src, dst string, port int, label string) error {
	t.Helper()
	var dialErr error
	h.do(t, func() error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: connectTimeout}
		conn, err := d.Dial("tcp", net.JoinHostPort(dst, strconv.Itoa(port)))
		if err != nil {
			dialErr = err
			return nil
		}
		defer conn.Close()
		_, dialErr = conn.Write([]byte(label))
		return nil
	})
	return dialErr
}

// sendFrom sends a datagram with label from src to dst:port.
func (h *hosts) sendFrom(t *testing.T, src, dst string, port int, label string) {
	t.Helper()
	h.do(t, func() error {
		conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)})
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = conn.WriteTo([]byte(label), &net.UDPAddr{IP: net.ParseIP(dst), Port: port})
		return err
	})
}
