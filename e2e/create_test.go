package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/testutil"
)

// TestCreate runs run --create on a cgroup two levels below the mount that
// does not exist: run makes both, filters the traffic of what runs in the
// inner one, and removes both when SIGINT or SIGTERM ends it.
func TestCreate(t *testing.T) {
	for _, tc := range []struct {
		name string
		sig  syscall.Signal
	}{{"SIGINT", syscall.SIGINT}, {"SIGTERM", syscall.SIGTERM}} {
		t.Run(tc.name, func(t *testing.T) {
			rel, abs := missingCgroup(t, "web")
			p := startCgwall(t, "run", "--create", "--cgroup", rel, "--block", "127.0.0.2")
			p.stderr.waitFor(t, "created cgroup "+abs)
			if line := p.stderr.waitFor(t, "attached"); line != "attached egress filter to "+abs+" (1 rule)" {
				t.Errorf("ready line %q", line)
			}
			mustEPERM(t, "UDP to a blocked host from the created cgroup", probe(t, abs, "", "udp", "127.0.0.2", "127.0.0.1"))
			mustPass(t, "UDP to an allowed address from the created cgroup", probe(t, abs, "", "udp", "127.0.0.3", "127.0.0.1"))
			p.stdout.waitFor(t, "DST 127.0.0.2, ACTION 0")

			if code := signalCgwall(t, p, tc.sig); code != 0 {
				t.Fatalf("exit %d after %s; stderr:\n%s", code, tc.name, p.stderr)
			}
			p.stderr.waitFor(t, "removed cgroup "+abs)
			for _, dir := range []string{abs, filepath.Dir(abs)} {
				if _, err := os.Stat(dir); !os.IsNotExist(err) {
					t.Errorf("%s is still there after run ended: %v", dir, err)
				}
			}
		})
	}
}

// TestCreateUsesAnExistingCgroup gives --create a cgroup that exists, by a
// path relative to the mount: run uses it and leaves it in place.
func TestCreateUsesAnExistingCgroup(t *testing.T) {
	cg, _ := testCgroup(t)
	mnt, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(mnt, cg)
	if err != nil {
		t.Fatal(err)
	}
	p := startCgwall(t, "run", "--create", "--cgroup", rel, "--block", "127.0.0.2")
	mustEPERM(t, "UDP to a blocked host", probe(t, cg, "", "udp", "127.0.0.2", "127.0.0.1"))
	p.stdout.waitFor(t, "DST 127.0.0.2, ACTION 0")
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, p.stderr)
	}
	p.stderr.waitFor(t, "detached from "+cg)
	if out := p.stderr.String(); strings.Contains(out, "created") || strings.Contains(out, "removed") {
		t.Errorf("run --create on an existing cgroup said:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(cg, "child")); err != nil {
		t.Errorf("the existing cgroup was not left in place: %v", err)
	}
	if n := attachedCount(t, cg); n != 0 {
		t.Errorf("%d programs still attached after run ended", n)
	}
}

// TestCreateLeavesABusyCgroup ends run while a process is still in the
// cgroup it made: the process is not cgwall's to end, so the cgroup stays,
// and run exits 1 saying so.
func TestCreateLeavesABusyCgroup(t *testing.T) {
	rel, abs := missingCgroup(t, "")
	p := startCgwall(t, "run", "--create", "--cgroup", rel, "--block", "127.0.0.2")
	sleeper := exec.Command("sleep", "1000")
	closeFD := inCgroup(t, sleeper, abs)
	err := sleeper.Start()
	closeFD()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })

	if code := p.stop(t); code != 1 {
		t.Errorf("exit %d, want 1; stderr:\n%s", code, p.stderr)
	}
	p.stderr.waitFor(t, "cgwall: left cgroup "+abs+" in place: device or resource busy: end or move what is in it")
	if _, err := os.Stat(abs); err != nil {
		t.Errorf("the busy cgroup is gone: %v", err)
	}
	if n := attachedCount(t, abs); n != 0 {
		t.Errorf("%d programs still attached after run ended", n)
	}
}

// TestCreateBadInput checks that run --create refuses bad input in one line
// with exit 2, before it makes anything.
func TestCreateBadInput(t *testing.T) {
	cg, _ := testCgroup(t)
	mnt, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	rel, abs := missingCgroup(t, "")
	notCgroup := t.TempDir()
	escape := fmt.Sprintf("../cgwall-test-escape-%d", os.Getpid())
	for _, tc := range []struct {
		name     string
		args     []string
		want     string
		notThere string // what must not have been made
	}{
		{"not in cgroup2", []string{"--cgroup", notCgroup + "/app"}, "--create --cgroup " + notCgroup + "/app: " + notCgroup + " is not in a cgroup v2 hierarchy", notCgroup + "/app"},
		{"below the mount's parent", []string{"--cgroup", escape + "/app"}, "is not in a cgroup v2 hierarchy", filepath.Join(mnt, escape)},
		{"below a file", []string{"--cgroup", cg + "/cgroup.procs/app"}, cg + "/cgroup.procs is not a directory", ""},
		{"newline in a name", []string{"--cgroup", rel + "/a\nb"}, "a cgroup name cannot hold a newline", abs},
		{"bad address", []string{"--cgroup", rel, "--block", "1.1.1.300"}, `"1.1.1.300" is not a valid IPv4 or IPv6 address`, abs},
		{"bad log level", []string{"--cgroup", rel, "--log", "some"}, `--log: "some" is not a log level`, abs},
		{"with --pid", []string{"--pid", "1"}, "--create makes the cgroup that --cgroup names, and --pid names one that exists", ""},
		{"two targets", []string{"--cgroup", rel, "--pid", "1"}, "--cgroup and --pid both name a cgroup: give one", abs},
		{"no --cgroup", nil, "--cgroup is required: cgroup2 is mounted at " + mnt, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runCgwall(t, append([]string{"run", "--create"}, tc.args...)...)
			checkOneLineError(t, stderr, code, 2, tc.want)
			if stdout != "" {
				t.Errorf("stdout %q", stdout)
			}
			if tc.notThere != "" {
				if _, err := os.Stat(tc.notThere); !os.IsNotExist(err) {
					t.Errorf("a refused run --create made %s: %v", tc.notThere, err)
					os.Remove(tc.notThere)
				}
			}
		})
	}
}

var missingSeq atomic.Int32

// missingCgroup names a cgroup that does not exist: a fresh folder below the
// cgroup2 mount and, if sub is given, sub inside it. It returns its path
// relative to the mount and its absolute path, and at the end of the test
// removes whatever of it a failing run left behind.
func missingCgroup(t *testing.T, sub string) (rel, abs string) {
	t.Helper()
	testutil.RequireBPF(t)
	mnt, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	top := fmt.Sprintf("cgwall-test-create-%d-%d-%d", os.Getpid(), missingSeq.Add(1), time.Now().UnixNano()%1e6)
	rel = filepath.Join(top, sub)
	abs = filepath.Join(mnt, rel)
	if _, err := os.Stat(filepath.Join(mnt, top)); !os.IsNotExist(err) {
		t.Fatalf("%s exists before the test: %v", filepath.Join(mnt, top), err)
	}
	t.Cleanup(func() { testutil.RemoveCgroup(t, filepath.Join(mnt, top)) })
	return rel, abs
}

// signalCgwall sends sig to cgwall and returns its exit code.
func signalCgwall(t *testing.T, p *proc, sig syscall.Signal) int {
	t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(waitTimeout):
		t.Fatalf("cgwall did not exit on %v; stderr:\n%s", sig, p.stderr)
	}
	return p.cmd.ProcessState.ExitCode()
}
