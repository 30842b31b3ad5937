package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cgwall/cgwall/internal/cgroup"
)

// bpfOnly runs cgwall as nobody with CAP_BPF and CAP_NET_ADMIN and nothing
// else: what loading and attaching cgroup programs takes.
var bpfOnly = []string{"--reuid=65534", "--regid=65534", "--clear-groups",
	"--inh-caps=+bpf,+net_admin", "--ambient-caps=+bpf,+net_admin"}

// rootBPFOnly runs cgwall as root limited to CAP_BPF and CAP_NET_ADMIN.
var rootBPFOnly = []string{"--bounding-set=-all,+bpf,+net_admin", "--inh-caps=-all"}

// TestRunWithBPFCapabilitiesOnly checks that run needs no more than CAP_BPF
// and CAP_NET_ADMIN: as nobody with those it attaches, filters and detaches,
// with a policy of address rules alone (programs without port code, address
// maps of the address rule alone), one with egress port rules of both
// families (the port code), and one with every part of the decision (port
// rules both ways and both families, name rules and the resolver's
// redirection). The verifier is stricter without CAP_PERFMON: no pointer
// arithmetic (nor an offset it knows on one path and not on another), no
// partial overwrite of a pointer spilled to the stack, no pointer into a map
// passed to a global function.
func TestRunWithBPFCapabilitiesOnly(t *testing.T) {
	for name, rules := range map[string][]string{
		"addresses": {"--block", "127.0.0.2", "--block", "[::1]"},
		"ports": {"--block", "127.0.0.2", "--block", "127.0.0.0/8:tcp/1-1024", "--block", "127.0.0.3:udp/9",
			"--block", "[::1]:tcp/9"},
		"everything": {"--block", "127.0.0.2", "--block", "127.0.0.3:udp/9", "--block", "[::1]:tcp/9",
			"--allow-in", "127.0.0.0/8:tcp/22", "--block-in", "[::1]:udp/9", "--allow", "a.test:tcp/443",
			"--block", "*.b.test"},
	} {
		t.Run(name, func(t *testing.T) { runAsNobody(t, rules) })
	}
}

// runAsNobody is TestRunWithBPFCapabilitiesOnly for one policy, which blocks
// UDP to 127.0.0.2.
func runAsNobody(t *testing.T, rules []string) {
	cg, _ := testCgroup(t)
	// Nobody must be able to open the cgroup, as for a cgroup of its own.
	if err := os.Chmod(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("setpriv", append(append(bpfOnly, cgwallBin, "run", "--cgroup", cg), rules...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	lines := collect(stderr)
	lines.waitFor(t, "attached ")
	mustEPERM(t, "UDP from the cgroup run filters as nobody", probe(t, cg, "", "udp", "127.0.0.2", "127.0.0.1"))
	cmd.Process.Signal(os.Interrupt)
	lines.waitFor(t, "detached from "+cg)
	<-done
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("run as nobody with CAP_BPF and CAP_NET_ADMIN: exit %d; stderr:\n%s", code, lines)
	}
}

// TestCommandsNameWhatTheyNeed checks that each command that needs more than
// run says what, in one line, exit 1, with nothing attached, instead of a
// raw "permission denied" or a verifier log.
func TestCommandsNameWhatTheyNeed(t *testing.T) {
	cg, _ := testCgroup(t)
	mnt, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	const (
		needRoot   = "cgwall: the persistent commands (attach, detach, block, allow, remove, list, watch, gc) need root: they keep policies in /sys/fs/bpf/cgwall, a folder of root's with mode 0700, and reopen them with CAP_SYS_ADMIN: run cgwall as root (sudo cgwall ...); run needs only CAP_BPF and CAP_NET_ADMIN"
		needAdmin  = "cgwall: missing privilege CAP_SYS_ADMIN: the persistent commands (attach, detach, block, allow, remove, list, watch, gc) need it: the kernel opens a pinned policy's inner maps and verifies its full program only with it; run cgwall as root with all its capabilities (sudo cgwall ...); run needs only CAP_BPF and CAP_NET_ADMIN"
		needCgroup = "and may not write there (permission denied): run cgwall as root (sudo cgwall exec ...) or grant it CAP_DAC_OVERRIDE; or run the command in a cgroup you may write and filter that with cgwall run, which needs only CAP_BPF and CAP_NET_ADMIN"
	)
	execWant := "cgwall: exec makes a cgroup for its command in " + mnt + " " + needCgroup
	for _, tc := range []struct {
		name    string
		setpriv []string
		args    []string
		want    string
	}{
		{"nobody: list", bpfOnly, []string{"list"}, needRoot},
		{"nobody: attach", bpfOnly, []string{"attach", "--cgroup", cg, "--block", "192.0.2.1"}, needRoot},
		{"nobody: block", bpfOnly, []string{"block", "--cgroup", cg, "192.0.2.1"}, needRoot},
		{"nobody: detach", bpfOnly, []string{"detach", "--all"}, needRoot},
		{"nobody: watch", bpfOnly, []string{"watch"}, needRoot},
		{"nobody: gc", bpfOnly, []string{"gc"}, needRoot},
		{"nobody: exec", bpfOnly, []string{"exec", "--block", "192.0.2.1", "--", "true"}, execWant},
		{"root with CAP_BPF and CAP_NET_ADMIN: list", rootBPFOnly, []string{"list"}, needAdmin},
		{"root with CAP_BPF and CAP_NET_ADMIN: attach", rootBPFOnly, []string{"attach", "--cgroup", cg, "--block", "192.0.2.1"}, needAdmin},
		{"root with CAP_BPF and CAP_NET_ADMIN: exec", rootBPFOnly, []string{"exec", "--block", "192.0.2.1", "--", "true"}, execWant},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("setpriv", append(append(tc.setpriv, cgwallBin), tc.args...)...)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			cmd.Run()
			want := 1
			if tc.args[0] == "exec" {
				want = 125 // exec's own failures, apart from its command's statuses
			}
			if code := cmd.ProcessState.ExitCode(); code != want || stderr.String() != tc.want+"\n" || stdout.Len() != 0 {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and stderr %q", code, stdout.String(), stderr.String(), want, tc.want)
			}
			if n := attachedCount(t, cg); n != 0 {
				t.Errorf("%d programs attached", n)
			}
		})
	}
}
