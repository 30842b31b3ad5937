package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

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
// under the policy, and that the cgroup is gone afterwards.
func TestExecRunsInItsCgroup(t *testing.T) {
	stdout, _, code := execCgwall(t, "--", "cat", "/proc/self/cgroup")
	line := v2Line(stdout)
	if code != 0 || !strings.HasPrefix(line, "0::/cgwall-exec-") {
		t.Fatalf("the command's cgroup: %q (exit %d)", line, code)
	}
	mnt, _ := cgroup.Mount()
	if _, err := os.Stat(filepath.Join(mnt, strings.TrimPrefix(line, "0::"))); !os.IsNotExist(err) {
		t.Errorf("the transient cgroup %s is still there: %v", line, err)
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
	if !strings.Contains(stderr.String(), "DST 127.0.0.2, ACTION 0 hook=sendmsg") {
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

// TestExecCleansUp kills the command while it has a child of its own: exec
// still ends with 128+9 and leaves no cgroup behind.
func TestExecCleansUp(t *testing.T) {
	stdout, _, code := execCgwall(t, "--", "sh", "-c", `sleep 1000 & cat /proc/self/cgroup; kill -KILL $$`)
	if code != 137 {
		t.Errorf("exit %d, want 137", code)
	}
	mnt, _ := cgroup.Mount()
	path := filepath.Join(mnt, strings.TrimPrefix(v2Line(stdout), "0::"))
	if !strings.Contains(path, "cgwall-exec-") {
		t.Fatalf("the command's cgroup: %q", stdout)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("the cgroup %s outlived its command: %v", path, err)
	}
}

func TestExecBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no such command", []string{"--", "cgwall-no-such-command"}, `command cgwall-no-such-command: exec: "cgwall-no-such-command": executable file not found`},
		{"bad address", []string{"--block", "nope", "--", "true"}, `--block: "nope" is not a valid`},
		{"no --", []string{"true"}, "put the command after --"},
		{"no command", []string{}, "requires at least 1 arg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := execCgwall(t, tc.args...)
			checkOneLineError(t, stderr, code, 2, tc.want)
		})
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
			var got map[string]int
			if err := json.Unmarshal([]byte(execProbe(t, tc.flags, "hooks")), &got); err != nil {
				t.Fatal(err)
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
