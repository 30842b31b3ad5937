package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// privateStore holds the lock of a store of its own: a bpffs mounted at
// /sys/fs/bpf in a private mount namespace, so that the test waits on no one
// else's store, and no one on its. Commands run in it through nsenter.
type privateStore struct {
	holder *exec.Cmd
	stdin  io.WriteCloser
	stdout *lines
	done   chan struct{}
}

// newPrivateStore mounts the store, attaches a policy blocking 192.0.2.1 to
// cg in it, and takes the store's lock (flock(1) on its folder, the lock
// cgwall takes), until release.
func newPrivateStore(t *testing.T, cg string) *privateStore {
	t.Helper()
	script := `mount -t bpf bpf /sys/fs/bpf
		"$CGWALL" attach --cgroup "$CG" --block 192.0.2.1 >&2
		flock /sys/fs/bpf/cgwall sh -c 'echo locked; read x'
		echo released
		read y`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-ec", script)
	cmd.Env = append(cmd.Environ(), "CGWALL="+cgwallBin, "CG="+cg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // to end flock(1) and its shell with it
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ps := &privateStore{holder: cmd, stdin: stdin, stdout: collect(stdout), done: make(chan struct{})}
	go func() { cmd.Wait(); close(ps.done) }()
	t.Cleanup(func() {
		// The namespace goes with its last process, and the store with it.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-ps.done
	})
	ps.stdout.waitFor(t, "locked")
	if !strings.HasPrefix(stderr.String(), "attached policy to "+cg) {
		t.Fatalf("attach in the private store said %q", stderr.String())
	}
	return ps
}

// command is a cgwall command in the private store's mount namespace.
func (ps *privateStore) command(args ...string) *exec.Cmd {
	ns := fmt.Sprintf("--mount=/proc/%d/ns/mnt", ps.holder.Process.Pid)
	return exec.Command("nsenter", append([]string{ns, "--", cgwallBin}, args...)...)
}

func (ps *privateStore) run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := ps.command(args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// release lets go of the lock.
func (ps *privateStore) release(t *testing.T) {
	t.Helper()
	io.WriteString(ps.stdin, "\n")
	ps.stdout.waitFor(t, "released")
}

// TestEditInterruptedWaitingForLock checks that an edit waiting for the
// store's lock says so, gives up on SIGINT and SIGTERM saying that nothing was
// changed, exits 1, and does not land once the lock is free. The waiting line
// on stderr is the signal that it waits.
func TestEditInterruptedWaitingForLock(t *testing.T) {
	cg, _ := testCgroup(t)
	for _, tc := range []struct {
		sig  syscall.Signal
		name string // as Go's signal context says it
	}{
		{syscall.SIGINT, "interrupt"},
		{syscall.SIGTERM, "terminated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := newPrivateStore(t, cg)
			edit := ps.command("block", "--cgroup", cg, "192.0.2.2")
			stderrPipe, err := edit.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stdout bytes.Buffer
			edit.Stdout = &stdout
			if err := edit.Start(); err != nil {
				t.Fatal(err)
			}
			stderr := collect(stderrPipe)
			done := make(chan struct{})
			go func() { edit.Wait(); close(done) }()
			t.Cleanup(func() { edit.Process.Kill(); <-done })

			stderr.waitFor(t, "cgwall: waiting for the lock on /sys/fs/bpf/cgwall: another command is changing persistent policies (Ctrl-C gives up)")
			edit.Process.Signal(tc.sig)
			want := "cgwall: " + tc.name + " signal received while waiting for the lock on /sys/fs/bpf/cgwall: nothing was changed"
			stderr.waitFor(t, want)
			<-done // it exits after that line
			if code := edit.ProcessState.ExitCode(); code != 1 || stdout.String() != "" {
				t.Errorf("exit %d, stdout %q; want 1 and nothing", code, stdout.String())
			}
			if got := stderr.snapshot(); len(got) != 2 {
				t.Errorf("stderr:\n%s\nwant the waiting line and %q", strings.Join(got, "\n"), want)
			}

			ps.release(t)
			out, errOut, code := ps.run(t, "list", "--cgroup", cg)
			if code != 0 || !strings.Contains(out, "192.0.2.1/32") || strings.Contains(out, "192.0.2.2") {
				t.Errorf("list after the interrupted edit: exit %d, stderr %q\n%s", code, errOut, out)
			}
			// The lock is free: the next edit lands without waiting.
			out, errOut, code = ps.run(t, "block", "--cgroup", cg, "192.0.2.3")
			if code != 0 || errOut != "" || !strings.HasPrefix(out, "blocked egress 192.0.2.3/32") {
				t.Errorf("the next edit: exit %d, stdout %q, stderr %q", code, out, errOut)
			}
			if _, errOut, code = ps.run(t, "detach", "--cgroup", cg); code != 0 {
				t.Fatalf("detach: exit %d, %s", code, errOut)
			}
			if n := attachedCount(t, cg); n != 0 {
				t.Errorf("%d programs attached after detach", n)
			}
		})
	}
}
