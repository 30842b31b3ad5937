package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/cgwall/cgwall/internal/testutil"
)

// waitTimeout bounds every wait for a signal from a process. It is a deadline
// for a failure report, not a guess at how long things take.
const waitTimeout = 15 * time.Second

// lines is a stream of a process's output, read line by line.
type lines struct{ *testutil.Lines }

func collect(r io.Reader) *lines { return &lines{testutil.Collect(r)} }

// waitFor returns the first line containing substr, waiting for it to come.
func (l *lines) waitFor(t testing.TB, substr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	line, err := l.WaitFor(ctx, substr)
	if err != nil {
		t.Fatalf("%v; got:\n%s", err, l)
	}
	return line
}

func (l *lines) snapshot() []string { return l.All() }

// proc is a running cgwall.
type proc struct {
	p              *testutil.Proc
	cmd            *exec.Cmd
	stdout, stderr *lines
	done           <-chan struct{}
}

// startCgwall starts cgwall with args and waits for its ready line.
func startCgwall(t *testing.T, args ...string) *proc {
	t.Helper()
	return startReady(t, "attached ", args...)
}

// startReady starts cgwall with args and waits for a line of its stderr
// that contains ready.
func startReady(t *testing.T, ready string, args ...string) *proc {
	t.Helper()
	return startCmd(t, exec.Command(cgwallBin, args...), ready)
}

// stop sends SIGINT and returns the exit code.
func (p *proc) stop(t *testing.T) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	code, err := p.p.Stop(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// runCgwall runs cgwall to completion.
func runCgwall(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	// A command that hangs (reading a FIFO, say) is killed, and the test
	// failed, after waitTimeout.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, cgwallBin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("cgwall %s: still running after %v, killed; stderr %q", strings.Join(args, " "), waitTimeout, errb.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// probe runs a probe process inside the cgroup at cgPath (in the network
// namespace ns, if given) and returns what it saw.
func probe(t *testing.T, cgPath, ns, proto, target, marker string) probeResult {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	argv := []string{self, proto, target, marker}
	if ns != "" {
		argv = append([]string{"nsenter", "--net=" + filepath.Join("/run/netns", ns), "--"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), probeEnv+"=1")
	if cgPath != "" {
		// Clone the probe straight into the cgroup: it never runs outside it.
		fd, err := syscall.Open(cgPath, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Close(fd)
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("probe %s %s: %v: %s", proto, target, err, stderr.String())
	}
	var res probeResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("probe output %q: %v", out, err)
	}
	return res
}

// mustPass and mustBlock check a probe's outcome.
func mustPass(t *testing.T, what string, r probeResult) {
	t.Helper()
	if !r.Sent || !r.Received {
		t.Errorf("%s: want it delivered, got %+v", what, r)
	}
}

func mustBlock(t *testing.T, what string, r probeResult) {
	t.Helper()
	if r.Received {
		t.Errorf("%s: want it blocked, but it arrived: %+v", what, r)
	}
}

// mustEPERM checks a blocked UDP send: a cgroup egress drop fails sendto with
// EPERM at once.
func mustEPERM(t *testing.T, what string, r probeResult) {
	t.Helper()
	mustBlock(t, what, r)
	if r.Sent || !strings.Contains(r.Err, "operation not permitted") {
		t.Errorf("%s: want sendto to fail with EPERM, got %+v", what, r)
	}
}

// testCgroup makes a cgroup for one test, and a child cgroup inside it.
func testCgroup(t *testing.T) (parent, child string) {
	t.Helper()
	testutil.RequireBPF(t)
	cg := testutil.Cgroup(t)
	child = filepath.Join(cg.Path, "child")
	if err := os.Mkdir(child, 0o755); err != nil {
		t.Fatal(err)
	}
	return cg.Path, child
}

// attachedCount says how many programs are attached to a cgroup's egress and
// ingress hooks.
func attachedCount(t *testing.T, cgPath string) int {
	t.Helper()
	return testutil.Attached(t, cgPath, ebpf.AttachCGroupInetEgress) + testutil.Attached(t, cgPath, ebpf.AttachCGroupInetIngress)
}

// netns creates a network namespace for one test, with loopback up and
// 2001:db8::/48 all local to it, and removes it at the end.
func netns(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("cgwall-e2e-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	ip(t, "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ip(t, "-n", name, "link", "set", "lo", "up")
	ip(t, "-n", name, "-6", "addr", "add", "2001:db8::1/128", "dev", "lo", "nodad")
	ip(t, "-n", name, "-6", "route", "add", "local", "2001:db8::/48", "dev", "lo")
	return name
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// inCgroup makes cmd start inside the cgroup at path, cloned straight into it.
// The returned function closes the cgroup's descriptor once cmd has started.
func inCgroup(t *testing.T, cmd *exec.Cmd, path string) func() {
	t.Helper()
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	return func() { syscall.Close(fd) }
}

// startPiped starts cmd in the cgroup at path with pipes to its stdin and
// from its stdout, and kills it at the end of the test.
func startPiped(t *testing.T, cmd *exec.Cmd, path string) (io.WriteCloser, *bufio.Reader) {
	t.Helper()
	closeFD := inCgroup(t, cmd, path)
	defer closeFD()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return stdin, bufio.NewReader(stdout)
}

// server is a serve probe running in a cgroup.
type server struct {
	cmd  *exec.Cmd
	out  *bufio.Reader
	Port int
}

// serve starts a serve probe for proto in the cgroup and waits for its port.
func serve(t *testing.T, cgPath, proto string) *server {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "serve", proto)
	cmd.Env = append(os.Environ(), probeEnv+"=1")
	cmd.Stderr = os.Stderr
	closeFD := inCgroup(t, cmd, cgPath)
	defer closeFD()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	s := &server{cmd: cmd, out: bufio.NewReader(stdout)}
	var hello struct{ Port int }
	if err := readJSONLine(s.out, &hello); err != nil {
		t.Fatalf("serve probe did not announce its port: %v", err)
	}
	s.Port = hello.Port
	return s
}

// received waits for the probe to end and returns the labels it got.
func (s *server) received(t *testing.T) []string {
	t.Helper()
	var res struct{ Received []string }
	if err := readJSONLine(s.out, &res); err != nil {
		t.Fatalf("serve probe result: %v", err)
	}
	s.cmd.Wait()
	return res.Received
}

func readJSONLine(r *bufio.Reader, v any) error {
	line, err := r.ReadBytes('\n')
	if err != nil {
		return err
	}
	return json.Unmarshal(line, v)
}

// attachPolicy runs cgwall attach and removes the policy at the end of the test.
func attachPolicy(t *testing.T, cg string, args ...string) string {
	t.Helper()
	stdout, stderr, code := runCgwall(t, append([]string{"attach", "--cgroup", cg}, args...)...)
	if code != 0 {
		t.Fatalf("attach: exit %d: %s", code, stderr)
	}
	t.Cleanup(func() { runCgwall(t, "detach", "--cgroup", cg) })
	return stdout
}

// cgwallOK runs cgwall and fails the test unless it exits 0.
func cgwallOK(t *testing.T, args ...string) string {
	t.Helper()
	stdout, stderr, code := runCgwall(t, args...)
	if code != 0 {
		t.Fatalf("cgwall %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	return stdout
}

// listed is one policy as 'cgwall list -o json' shows it.
type listed struct {
	Cgroup string `json:"cgroup"`
	ID     uint64 `json:"cgroup_id"`
	Stale  bool   `json:"stale"`
	Live   bool   `json:"live"`
	Hooks  []string
	Agent  string                              `json:"agent_file"`
	Rules  []listedRule                        `json:"rules"`
	Totals map[string]struct{ Packets uint64 } `json:"totals"`
	// Learned is what DNS answers put in force for name rules.
	Learned []struct {
		Pattern string     `json:"pattern"`
		Addr    string     `json:"addr"`
		Expires *time.Time `json:"expires"`
		Names   []string   `json:"names"`
	} `json:"learned"`
	ExpiryUnknown string `json:"expiry_unknown"`
	OtherLayout   string `json:"other_layout"`
}

// listedRule is one rule as 'cgwall list -o json' shows it.
type listedRule struct {
	ID      uint32 `json:"id"`
	Dir     string `json:"direction"`
	Action  string `json:"action"`
	Rule    string `json:"rule"`
	Prefix  string `json:"prefix"`
	Proto   string `json:"proto"`
	Port    uint16 `json:"port"`
	EndPort uint16 `json:"end_port"`
	Packets uint64 `json:"packets"`
}

func list(t *testing.T, args ...string) []listed {
	t.Helper()
	var out []listed
	if err := json.Unmarshal([]byte(cgwallOK(t, append([]string{"list", "-o", "json"}, args...)...)), &out); err != nil {
		t.Fatal(err)
	}
	return out
}
