package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cgwall/cgwall/internal/cgroup"
)

func TestTargetByPID(t *testing.T) {
	cg, _ := testCgroup(t)
	sleeper := exec.Command("sleep", "1000")
	defer inCgroup(t, sleeper, cg)()
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()

	out := cgwallOK(t, "attach", "--pid", fmt.Sprint(sleeper.Process.Pid), "--block", "127.0.0.2")
	t.Cleanup(func() { runCgwall(t, "detach", "--cgroup", cg) })
	if !strings.HasPrefix(out, "attached policy to "+cg+" ") {
		t.Errorf("attach --pid said %q", out)
	}
	mustEPERM(t, "UDP in the process's cgroup", probe(t, cg, "", "udp", "127.0.0.2", "127.0.0.1"))

	for _, tc := range []struct {
		pid  string
		want string
	}{
		{"0", `--pid: "0" is not a process ID`},
		{"abc", `--pid: "abc" is not a process ID`},
		{"2147483647", "--pid: no process with PID 2147483647"},
	} {
		t.Run("--pid "+tc.pid, func(t *testing.T) {
			_, stderr, code := runCgwall(t, "list", "--pid", tc.pid)
			checkOneLineError(t, stderr, code, 2, tc.want)
		})
	}
}

func TestTargetByUnit(t *testing.T) {
	cg, _ := testCgroup(t)
	unit := fmt.Sprintf("cgwall-e2e-%d", os.Getpid())
	for _, d := range []string{"a/" + unit + ".service", "b/" + unit + "-twin.service", "c/" + unit + "-twin.service"} {
		if err := os.MkdirAll(filepath.Join(cg, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	want := filepath.Join(cg, "a", unit+".service")
	out := cgwallOK(t, "attach", "--unit", unit, "--block", "127.0.0.2")
	t.Cleanup(func() { runCgwall(t, "detach", "--cgroup", want) })
	if !strings.HasPrefix(out, "attached policy to "+want+" ") {
		t.Errorf("attach --unit said %q", out)
	}
	_, stderr, code := runCgwall(t, "list", "--unit", unit+"-twin")
	checkOneLineError(t, stderr, code, 2, fmt.Sprintf("--unit: unit %s-twin.service is ambiguous: it matches 2 cgroups: %s, %s",
		unit, filepath.Join(cg, "b", unit+"-twin.service"), filepath.Join(cg, "c", unit+"-twin.service")))
	_, stderr, code = runCgwall(t, "list", "--unit", unit+"-none")
	checkOneLineError(t, stderr, code, 2, "--unit: no cgroup found for unit "+unit+"-none.service")
}

func TestTargetByContainer(t *testing.T) {
	cg, _ := testCgroup(t)
	pid := fmt.Sprintf("%08x", os.Getpid())
	ids := []string{
		"c0ffee" + pid + strings.Repeat("1", 50),
		"c0ffee" + pid + strings.Repeat("2", 50),
		"dec0de" + pid + strings.Repeat("3", 50),
	}
	dirs := []string{
		filepath.Join(cg, "docker-"+ids[0]+".scope"),
		filepath.Join(cg, "kubepods", "cri-containerd-"+ids[1]+".scope"),
		filepath.Join(cg, "libpod-"+ids[2]+".scope"),
		filepath.Join(cg, "libpod-"+ids[2]+".scope", "container"),
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out := cgwallOK(t, "attach", "--container", "dec0de"+pid, "--block", "127.0.0.2")
	t.Cleanup(func() { runCgwall(t, "detach", "--cgroup", dirs[2]) })
	if !strings.HasPrefix(out, "attached policy to "+dirs[2]+" ") {
		t.Errorf("attach --container said %q", out)
	}
	for _, id := range []string{ids[2][:20], strings.ToUpper(ids[2][:20]), ids[2]} {
		if out := cgwallOK(t, "list", "--container", id); !strings.Contains(out, dirs[2]) {
			t.Errorf("list --container %s: %q", id, out)
		}
	}
	mnt, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		id   string
		want string
	}{
		{"ambiguous", "c0ffee" + pid, fmt.Sprintf("--container: container c0ffee%s is ambiguous: 2 containers have an ID that starts with it, in cgroups %s, %s: give more of the ID", pid, dirs[0], dirs[1])},
		{"ambiguous in upper case", "C0FFEE" + pid, fmt.Sprintf("--container: container C0FFEE%s is ambiguous: 2 containers have an ID that starts with it", pid)},
		// What the runtimes' sockets answered comes first; that depends on
		// which of them run here.
		{"no such container", "c0ffee" + pid + "3", fmt.Sprintf("no cgroup under %s is named for an ID that starts with c0ffee%s3): is it running?", mnt, pid)},
		{"no such name", "cgwall-no-such-container", "--container: no container cgwall-no-such-container (/run/docker.sock "},
		{"not a name", "not-hex!", `--container: "not-hex!" is not a container name or ID: give its name, its ID or a unique prefix of the ID`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := runCgwall(t, "list", "--container", tc.id)
			checkOneLineError(t, stderr, code, 2, tc.want)
		})
	}
}

// TestTargetRootRefused checks that no target reaches the root cgroup, which
// holds every process on the host, but --cgroup /: each other way is refused
// in one line, exit 2, with nothing attached to the root.
func TestTargetRootRefused(t *testing.T) {
	cg, _ := testCgroup(t)
	mnt, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	// A process of the test's own, cloned into the root cgroup.
	sleeper := exec.Command("sleep", "1000")
	closeFD := inCgroup(t, sleeper, mnt)
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	closeFD()
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	link := filepath.Join(t.TempDir(), "root")
	if err := os.Symlink(mnt, link); err != nil {
		t.Fatal(err)
	}
	rootIs := func(arg string) string {
		return "--cgroup " + arg + " is the root cgroup, " + mnt + ", which holds every process on the host: give --cgroup / if that is really meant"
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"dot", []string{"attach", "-c", "."}, rootIs(".")},
		{"dot slash", []string{"attach", "-c", "./"}, rootIs("./")},
		{"empty", []string{"attach", "-c", ""}, `--cgroup "": an empty path names no cgroup: give a cgroup's path, or --cgroup / if the root cgroup, which holds every process on the host, is really meant`},
		{"the mount", []string{"attach", "-c", mnt}, "--cgroup " + mnt + " is the root cgroup, which holds every process on the host: give --cgroup / if that is really meant"},
		{"the mount with a slash", []string{"attach", "-c", mnt + "/"}, rootIs(mnt + "/")},
		{"up from a cgroup", []string{"attach", "-c", cg + "/.."}, rootIs(cg + "/..")},
		{"up from a relative cgroup", []string{"attach", "-c", filepath.Base(cg) + "/.."}, rootIs(filepath.Base(cg) + "/..")},
		{"a symlink to the mount", []string{"attach", "-c", link}, rootIs(link)},
		{"run --create of the mount", []string{"run", "--create", "-c", "."}, rootIs(".")},
		{"block", []string{"block", "-c", ".", "192.0.2.123"}, rootIs(".")},
		{"a process in the root cgroup", []string{"attach", "--pid", fmt.Sprint(sleeper.Process.Pid)},
			fmt.Sprintf("--pid: process %d (sleep) is in the root cgroup, %s, which holds every process on the host: give --cgroup / if that is really meant", sleeper.Process.Pid, mnt)},
	}
	if comm, _ := os.ReadFile("/proc/2/comm"); string(comm) == "kthreadd\n" {
		cases = append(cases, struct {
			name string
			args []string
			want string
		}{"a kernel thread", []string{"attach", "--pid", "2"}, "--pid: process 2 (kthreadd, a kernel thread) is in the root cgroup, " + mnt + ", which holds every process on the host"})
	}
	before := attachedCount(t, mnt)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Should the refusal fail, the policy blocks only a
			// documentation address nothing uses, run is ended in
			// waitTimeout and a persistent policy is detached at once.
			args := tc.args
			if args[0] != "block" {
				args = append(args, "--block", "192.0.2.123")
			}
			// In a cleanup, so that it runs even if runCgwall ends the
			// test on a command that did not exit.
			t.Cleanup(func() {
				if n := attachedCount(t, mnt); n != before {
					// "/" where it names the root, the mount where it did before.
					runCgwall(t, "detach", "--cgroup", "/")
					runCgwall(t, "detach", "--cgroup", mnt)
					t.Errorf("%d programs attached to the root cgroup after a refused command, %d before", n, before)
				}
			})
			stdout, stderr, code := runCgwall(t, args...)
			checkOneLineError(t, stderr, code, 2, tc.want)
			if stdout != "" {
				t.Errorf("stdout %q", stdout)
			}
		})
	}
}

// TestTargetRootByName checks that --cgroup / names the root cgroup, with a
// warning that says what that means. list resolves the target and stops
// before changing anything; no policy is on the root, so it says so.
func TestTargetRootByName(t *testing.T) {
	testCgroup(t)
	mnt, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runCgwall(t, "list", "--cgroup", "/")
	want := "warning: --cgroup / is the root cgroup, " + mnt + ": a policy there governs every process on the host\n" +
		"cgwall: no policy on " + mnt + "\n"
	if code != 2 || stdout != "" || stderr != want {
		t.Errorf("list --cgroup /: exit %d, stdout %q, stderr %q; want exit 2 and stderr %q", code, stdout, stderr, want)
	}
}

func TestTargetConflicts(t *testing.T) {
	cg, _ := testCgroup(t)
	_, stderr, code := runCgwall(t, "attach", "--cgroup", cg, "--pid", "1")
	checkOneLineError(t, stderr, code, 2, "--cgroup and --pid both name a cgroup: give one")
	_, stderr, code = runCgwall(t, "detach", "--all", "--cgroup", cg)
	checkOneLineError(t, stderr, code, 2, "--all and --cgroup: give one")
}
