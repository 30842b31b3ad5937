package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/testutil"
)

// execCgwall runs cgwall exec and returns its stdout, stderr and exit code.
func execCgwall(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	testutil.RequireBPF(t)
	return runCgwall(t, append([]string{"exec"}, args...)...)
}

func TestExecExitStatus(t *testing.T) {
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 3", 3},
		{"kill -TERM $$", 128 + 15},
		{"kill -KILL $$", 128 + 9},
	} {
		t.Run(tc.script, func(t *testing.T) {
			_, stderr, code := execCgwall(t, "--", "sh", "-c", tc.script)
			if code != tc.want {
				t.Errorf("exec sh -c %q: exit %d, want %d; stderr %q", tc.script, code, tc.want, stderr)
			}
			if stderr != "" {
				t.Errorf("exec sh -c %q printed %q", tc.script, stderr)
			}
		})
	}
}

// TestExecRunsInItsCgroup checks that the command starts in a fresh cgroup,
// in a cgroup namespace rooted there, under the policy, and that the cgroup
// is gone afterwards.
func TestExecRunsInItsCgroup(t *testing.T) {
	p := startExec(t, "--", "sh", "-c", `echo "pid $$"; cat /proc/self/cgroup; read x; exit 0`)
	pid := p.commandPID(t)
	cg := p.cgroupOf(t, pid)
	if want := fmt.Sprintf("cgwall-exec-%d-", p.cmd.Process.Pid); !strings.HasPrefix(filepath.Base(cg), want) {
		t.Errorf("the command's cgroup is %s, want a fresh %s*", cg, want)
	}
	// Inside its namespace, the command's cgroup is the root.
	if inside := p.stdout.waitFor(t, "0::"); inside != "0::/" {
		t.Errorf("the command sees its cgroup as %q, want 0::/ (the root of its own cgroup namespace)", inside)
	}
	if ns, mine := nsOf(t, fmt.Sprint(pid)), nsOf(t, "self"); ns == mine {
		t.Errorf("the command shares the test's cgroup namespace %s", ns)
	}
	p.stdin.Close()
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d; stderr %s", code, p.stderr)
	}
	if _, err := os.Stat(cg); !os.IsNotExist(err) {
		t.Errorf("the transient cgroup %s is still there: %v", cg, err)
	}

	self, _ := os.Executable()
	cmd := exec.Command(cgwallBin, "exec", "--block", "127.0.0.2", "--", self, "udp", "127.0.0.2", "127.0.0.1")
	cmd.Env = append(os.Environ(), probeEnv+"=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("exec probe: %v: %s", err, stderr.String())
	}
	var r probeResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatal(err)
	}
	mustEPERM(t, "UDP from a command under exec --block", r)
	if !strings.Contains(stderr.String(), "DST 127.0.0.2, ACTION 0 hook=egress") {
		t.Errorf("exec did not stream the decision to stderr: %q", stderr.String())
	}
}

// TestExecForwardsSignals sends SIGTERM to exec: the command gets it, and
// exec exits with the command's own status.
func TestExecForwardsSignals(t *testing.T) {
	testutil.RequireBPF(t)
	cmd := exec.Command(cgwallBin, "exec", "--", "sh", "-c", `trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done`)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := collect(stdout)
	l.waitFor(t, "ready")
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 42 {
		t.Errorf("exit %d, want the trap's 42", code)
	}
}

// TestExecCannotLeaveItsCgroup has the command try to move itself into the
// cgroup above its own (the cgroup2 root), directly and after setns(2) back
// into exec's cgroup namespace, as root, as root without CAP_SYS_ADMIN and as
// nobody. Where cgroup2 is mounted with nsdelegate, its cgroup namespace
// stops the direct move; only CAP_SYS_ADMIN, which setns takes, gets out.
// Without nsdelegate, any uid 0 can leave. docs/security.md says the same.
func TestExecCannotLeaveItsCgroup(t *testing.T) {
	testutil.RequireBPF(t)
	mnt, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	delegate := nsdelegate(t, mnt)
	if !delegate {
		t.Logf("cgroup2 at %s is mounted without nsdelegate: here uid 0 in the command can leave its cgroup", mnt)
	}
	// $0 is the mount; $PPID, exec, is outside the command's namespace.
	try := `if nsenter --cgroup=/proc/$PPID/ns/cgroup sh -c 'echo $$ >"$0/cgroup.procs"' "$0" 2>/dev/null; then echo setns:left; else echo setns:stayed; fi
if echo $$ 2>/dev/null >"$0/cgroup.procs"; then echo direct:left; else echo direct:stayed; fi`
	direct := map[bool]string{true: "direct:stayed", false: "direct:left"}[delegate]
	for _, tc := range []struct {
		who  string
		as   []string
		want []string
	}{
		{"root", nil, []string{"setns:left", direct}},
		{"root without CAP_SYS_ADMIN", []string{"setpriv", "--bounding-set=-sys_admin"}, []string{"setns:stayed", direct}},
		{"nobody", []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}, []string{"setns:stayed", "direct:stayed"}},
	} {
		t.Run(tc.who, func(t *testing.T) {
			args := append(append([]string{"--"}, tc.as...), "sh", "-c", try, mnt)
			stdout, stderr, code := execCgwall(t, args...)
			if got := strings.Fields(stdout); code != 0 || !slices.Equal(got, tc.want) {
				t.Errorf("exit %d, the command: %q (stderr %q); want %q (cgroup2 at %s, nsdelegate %v)", code, got, stderr, tc.want, mnt, delegate)
			}
		})
	}
}

// nsdelegate says whether the cgroup2 mount at mnt has the nsdelegate option,
// which makes cgroup namespaces delegation boundaries.
func nsdelegate(t *testing.T, mnt string) bool {
	t.Helper()
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mountinfo), "\n") {
		// id parent dev root mountpoint options [optional...] - fstype source super-options
		fields := strings.Fields(line)
		sep := slices.Index(fields, "-")
		if sep < 5 || len(fields) < sep+4 || fields[sep+1] != "cgroup2" || fields[4] != mnt {
			continue
		}
		return slices.Contains(strings.Split(fields[sep+3], ","), "nsdelegate")
	}
	t.Fatalf("no cgroup2 mount at %s in /proc/self/mountinfo", mnt)
	return false
}

// TestExecCleansUp kills the command while it has a child of its own: exec
// still ends with 128+9 and leaves no cgroup behind.
func TestExecCleansUp(t *testing.T) {
	testutil.RequireBPF(t)
	p := startExec(t, "--", "sh", "-c", `sleep 1000 & echo "pid $$"; read x; kill -KILL $$`)
	cg := p.cgroupOf(t, p.commandPID(t))
	p.stdin.Close()
	if code := p.wait(t); code != 137 {
		t.Errorf("exit %d, want 137", code)
	}
	// The sleep holds the command's stdout: at EOF, it is gone too.
	p.waitClosed(t, p.stdout, "stdout")
	if _, err := os.Stat(cg); !os.IsNotExist(err) {
		t.Errorf("the cgroup %s outlived its command: %v", cg, err)
	}
}

// TestExecExitCodes checks the codes exec adds to its command's: 125 for
// cgwall's own errors, bad flags included; 126 for a command found but not
// runnable; 127 for one not found. Each is one line, and leaves nothing
// behind, even when the command fails only once its cgroup is made.
func TestExecExitCodes(t *testing.T) {
	testutil.RequireBPF(t)
	dir := t.TempDir()
	file := func(name, text string, mode os.FileMode) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		return path
	}
	notExecutable := file("not-executable", "#!/bin/sh\n", 0o644)
	badFormat := file("bad-format", "\x7fELF nothing runnable\n", 0o755)
	noInterpreter := file("no-interpreter", "#!/cgwall-no-such-interpreter\n", 0o755)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown flag", []string{"--blok", "192.0.2.1", "--", "true"}, 125, "unknown flag: --blok"},
		{"bad address", []string{"--block", "nope", "--", "true"}, 125, `--block: "nope" is not a valid`},
		{"bad log level", []string{"--log", "some", "--", "true"}, 125, `--log: "some" is not a log level`},
		{"missing policy file", []string{"-f", filepath.Join(dir, "nope.yaml"), "--", "true"}, 125, "nope.yaml"},
		{"no --", []string{"true"}, 125, "put the command after --"},
		{"no command", []string{}, 125, "requires at least 1 arg"},
		{"not executable", []string{"--", notExecutable}, 126, "permission denied"},
		{"a directory", []string{"--", dir}, 126, "is a directory"},
		{"not a format the kernel runs", []string{"--", badFormat}, 126, "exec format error"},
		{"no such command", []string{"--", "cgwall-no-such-command"}, 127, `command cgwall-no-such-command: exec: "cgwall-no-such-command": executable file not found`},
		{"no such file", []string{"--", filepath.Join(dir, "nope")}, 127, "no such file or directory"},
		{"no such interpreter", []string{"--", noInterpreter}, 127, "its interpreter /cgwall-no-such-interpreter was not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startExec(t, tc.args...)
			code := p.wait(t)
			p.waitClosed(t, p.stderr, "stderr")
			checkOneLineError(t, p.stderr.String()+"\n", code, tc.code, tc.want)
			if out := p.stdout.String(); out != "" {
				t.Errorf("stdout %q", out)
			}
			p.noCgroupLeft(t)
		})
	}
	// The command's own codes pass through, 125 to 127 included.
	for _, status := range []int{1, 2, 125, 126, 127} {
		_, stderr, code := execCgwall(t, "--", "sh", "-c", fmt.Sprintf("exit %d", status))
		if code != status || stderr != "" {
			t.Errorf("exec sh -c 'exit %d': exit %d, stderr %q", status, code, stderr)
		}
	}
}

// v2Line picks the cgroup v2 line ("0::/path") out of a /proc/PID/cgroup.
func v2Line(procCgroup string) string {
	for _, l := range strings.Split(procCgroup, "\n") {
		if strings.HasPrefix(l, "0::") {
			return l
		}
	}
	return ""
}

// execProbe runs the e2e probe under cgwall exec with the given flags and
// returns its stdout.
func execProbe(t *testing.T, flags []string, probeArgs ...string) string {
	t.Helper()
	testutil.RequireBPF(t)
	self, _ := os.Executable()
	cmd := exec.Command(cgwallBin, append(append(append([]string{"exec"}, flags...), "--", self), probeArgs...)...)
	cmd.Env = append(os.Environ(), probeEnv+"=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("exec %q: %v: %s", flags, err, stderr.String())
	}
	return string(out)
}

// programsAt counts the programs attached to a cgroup at each attach point
// that cgwall uses.
func programsAt(t *testing.T, cg string) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for name, typ := range map[string]ebpf.AttachType{
		"egress": ebpf.AttachCGroupInetEgress, "ingress": ebpf.AttachCGroupInetIngress,
		"connect4": ebpf.AttachCGroupInet4Connect, "sendmsg6": ebpf.AttachCGroupUDP6Sendmsg,
		"sock_create": ebpf.AttachCGroupInetSockCreate,
	} {
		counts[name] = testutil.Attached(t, cg, typ)
	}
	return counts
}

// TestExecAttachesTheHooksItNeeds checks that exec attaches only the programs
// its policy needs, and that they are in force from the command's start.
func TestExecAttachesTheHooksItNeeds(t *testing.T) {
	for _, tc := range []struct {
		flags []string
		want  map[string]int
	}{
		{[]string{"--block", "127.0.0.2"}, map[string]int{"egress": 1, "connect4": 1, "sendmsg6": 1, "ingress": 0, "sock_create": 0}},
		{[]string{"--block-in", "127.0.0.2"}, map[string]int{"egress": 1, "connect4": 1, "sendmsg6": 1, "ingress": 1, "sock_create": 0}},
		{[]string{"--deny-raw"}, map[string]int{"egress": 1, "connect4": 1, "sendmsg6": 1, "ingress": 0, "sock_create": 1}},
	} {
		t.Run(strings.Join(tc.flags, " "), func(t *testing.T) {
			// Counted from outside: inside its cgroup namespace, the command
			// sees its cgroup as the root and cannot name it.
			p := startExec(t, append(tc.flags, "--", "sh", "-c", `echo "pid $$"; read x; exit 0`)...)
			got := programsAt(t, p.cgroupOf(t, p.commandPID(t)))
			p.stdin.Close()
			if code := p.wait(t); code != 0 {
				t.Fatalf("exit %d; stderr %s", code, p.stderr)
			}
			for hook, n := range tc.want {
				if got[hook] != n {
					t.Errorf("exec %q: %d programs at %s, want %d", tc.flags, got[hook], hook, n)
				}
			}
		})
	}
	// Without an ingress program the egress policy is still in force.
	var r probeResult
	if err := json.Unmarshal([]byte(execProbe(t, []string{"--block", "127.0.0.2", "--log", "none"}, "tcp", "127.0.0.2", "127.0.0.1")), &r); err != nil {
		t.Fatal(err)
	}
	mustEPERM(t, "TCP from a command under exec --block", r)
}

func TestExecDenyRaw(t *testing.T) {
	if got := strings.TrimSpace(execProbe(t, []string{"--deny-raw"}, "socket", "raw")); got != "operation not permitted" {
		t.Errorf("raw socket under exec --deny-raw: %q, want EPERM", got)
	}
	if got := strings.TrimSpace(execProbe(t, nil, "socket", "raw")); got != "ok" {
		t.Errorf("raw socket under exec without --deny-raw: %q, want ok", got)
	}
}

// TestExecKilledTakesItsCommand kills cgwall exec with SIGKILL while its
// command sends UDP without pause to an address the policy blocks. Not one
// datagram may arrive, and the command, its child and its cgroup must go.
func TestExecKilledTakesItsCommand(t *testing.T) {
	testutil.RequireBPF(t)
	recv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	arrived, sentinel := countDatagrams(recv)
	port := recv.LocalAddr().(*net.UDPAddr).Port

	// bash's /dev/udp connects a UDP socket and writes to it; the loop paces
	// itself with read -t on a stdin that never gets a line.
	send := fmt.Sprintf("echo x >/dev/udp/127.0.0.2/%d", port)
	script := fmt.Sprintf(`exec 2>/dev/null; sleep 1000 & if %s; then r=sent; else r=blocked; fi; echo "pid $$ $r"; while :; do %s; read -t 0.001; done`, send, send)
	p := startExec(t, "--block", "127.0.0.2", "--log", "none", "--", "bash", "-c", script)
	cg := p.cgroupOf(t, p.commandPID(t))
	if first := p.stdout.waitFor(t, "pid "); !strings.HasSuffix(first, " blocked") {
		t.Fatalf("the first send under --block 127.0.0.2: %q", first)
	}

	p.cmd.Process.Kill()
	p.wait(t)
	// Every process of the command holds its stdout: at EOF, all are gone.
	select {
	case <-p.stdout.Ended():
	case <-arrived:
		t.Fatalf("a datagram arrived after cgwall exec was killed: its command ran on unfiltered")
	case <-time.After(waitTimeout):
		t.Fatalf("the command still runs %v after cgwall exec was killed", waitTimeout)
	}
	if n := sentinel(t); n != 0 {
		t.Errorf("%d datagrams arrived after cgwall exec was killed", n)
	}
	// The guard holds exec's stderr until it has removed the cgroup.
	p.waitClosed(t, p.stderr, "stderr")
	if _, err := os.Stat(cg); !os.IsNotExist(err) {
		t.Errorf("the cgroup %s outlived cgwall exec and its command: %v", cg, err)
	}
	if want := "ended and left its command's cgroup " + cg; !strings.Contains(p.stderr.String(), want) {
		t.Errorf("stderr %q: want the guard to say %q", p.stderr, want)
	}
}

// TestExecGuardKilled kills exec's guard: exec must not let its command run
// on without one, and stops it with exit 125.
func TestExecGuardKilled(t *testing.T) {
	testutil.RequireBPF(t)
	p := startExec(t, "--block", "192.0.2.1", "--", "sh", "-c", `sleep 1000 & echo "pid $$"; read x`)
	cg := p.cgroupOf(t, p.commandPID(t))
	guard := guardOf(t, p.cmd.Process.Pid)
	if err := syscall.Kill(guard, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != 125 {
		t.Errorf("exit %d, want 125; stderr %s", code, p.stderr)
	}
	p.waitClosed(t, p.stdout, "stdout")
	if _, err := os.Stat(cg); !os.IsNotExist(err) {
		t.Errorf("the cgroup %s outlived cgwall exec: %v", cg, err)
	}
	if want := fmt.Sprintf("the exec guard (pid %d) ended (signal: killed) while sh ran: stopping sh", guard); !strings.Contains(p.stderr.String(), want) {
		t.Errorf("stderr %q: want %q", p.stderr, want)
	}
}

// guardOf returns the PID of exec's guard: its child running "exec __guard".
func guardOf(t *testing.T, execPID int) int {
	t.Helper()
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", execPID))
	for _, task := range tasks {
		children, _ := os.ReadFile(task)
		for _, child := range strings.Fields(string(children)) {
			cmdline, _ := os.ReadFile("/proc/" + child + "/cmdline")
			if strings.Contains(string(cmdline), "\x00exec\x00__guard\x00") {
				var pid int
				fmt.Sscan(child, &pid)
				return pid
			}
		}
	}
	t.Fatalf("cgwall exec (pid %d) has no guard", execPID)
	return 0
}

// execProc is a running cgwall exec, its stdin a pipe the test holds.
type execProc struct {
	cmd            *exec.Cmd
	stdin          *os.File
	stdout, stderr *lines
	done           chan struct{}
}

// startExec starts cgwall exec with args. Its stdout and stderr are pipes
// read as lines; unlike a buffer, they let the test wait for exec alone, or
// for every process that holds them.
func startExec(t *testing.T, args ...string) *execProc {
	t.Helper()
	testutil.RequireBPF(t)
	cmd := exec.Command(cgwallBin, append([]string{"exec"}, args...)...)
	stdin, stdinW := pipe(t)
	stdout, stdoutW := pipe(t)
	stderr, stderrW := pipe(t)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdoutW, stderrW
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	stdoutW.Close()
	stderrW.Close()
	p := &execProc{cmd: cmd, stdin: stdinW, stdout: collect(stdout), stderr: collect(stderr), done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-p.done })
	return p
}

// wait waits for exec to exit and returns its exit code.
func (p *execProc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(waitTimeout):
		t.Fatalf("cgwall exec still runs after %v; stderr:\n%s", waitTimeout, p.stderr)
	}
	return p.cmd.ProcessState.ExitCode()
}

// waitClosed waits until every process holding a stream has closed it.
func (p *execProc) waitClosed(t *testing.T, l *lines, name string) {
	t.Helper()
	select {
	case <-l.Ended():
	case <-time.After(waitTimeout):
		t.Fatalf("%s still open %v after cgwall exec exited", name, waitTimeout)
	}
}

// commandPID returns the PID that the command prints as "pid N".
func (p *execProc) commandPID(t *testing.T) int {
	t.Helper()
	var pid int
	if _, err := fmt.Sscanf(p.stdout.waitFor(t, "pid "), "pid %d", &pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// cgroupOf returns the cgroup of a process, as seen from outside its cgroup
// namespace, and removes it at the end of the test should it still be there.
func (p *execProc) cgroupOf(t *testing.T, pid int) string {
	t.Helper()
	procCgroup, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	mnt, _ := cgroup.Mount()
	cg := filepath.Join(mnt, strings.TrimPrefix(v2Line(string(procCgroup)), "0::"))
	if !strings.HasPrefix(filepath.Base(cg), "cgwall-exec-") {
		t.Fatalf("the command's cgroup: %q", procCgroup)
	}
	// Whatever the test finds, nothing it started outlives it.
	t.Cleanup(func() { testutil.RemoveCgroup(t, cg) })
	return cg
}

// noCgroupLeft checks that exec left no cgroup of its behind.
func (p *execProc) noCgroupLeft(t *testing.T) {
	t.Helper()
	mnt, _ := cgroup.Mount()
	left, _ := filepath.Glob(filepath.Join(mnt, fmt.Sprintf("cgwall-exec-%d-*", p.cmd.Process.Pid)))
	for _, cg := range left {
		t.Errorf("cgroup %s left behind", cg)
		testutil.RemoveCgroup(t, cg)
	}
}

// nsOf names the cgroup namespace of a process ("self" for this one).
func nsOf(t *testing.T, pid string) string {
	t.Helper()
	ns, err := os.Readlink("/proc/" + pid + "/ns/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// countDatagrams reads conn until it closes. arrived is closed at the first
// datagram; sentinel sends one from outside any filter, waits for it and
// returns how many others came before it. Loopback delivers in order, so
// once the sentinel is in, a datagram sent before it has arrived.
func countDatagrams(conn *net.UDPConn) (arrived <-chan struct{}, sentinel func(testing.TB) int) {
	first := make(chan struct{})
	seen := make(chan int, 1)
	go func() {
		buf := make([]byte, 64)
		n := 0
		for {
			m, err := conn.Read(buf)
			if err != nil {
				return
			}
			if string(buf[:m]) == "sentinel" {
				seen <- n
				return
			}
			if n++; n == 1 {
				close(first)
			}
		}
	}()
	return first, func(t testing.TB) int {
		t.Helper()
		c, err := net.DialUDP("udp4", nil, conn.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("sentinel")); err != nil {
			t.Fatal(err)
		}
		select {
		case n := <-seen:
			return n
		case <-time.After(waitTimeout):
			t.Fatalf("the sentinel did not arrive in %v", waitTimeout)
			return 0
		}
	}
}

// pipe makes a pipe whose two ends close at the end of the test.
func pipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}
