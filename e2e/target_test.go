package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
	if out := cgwallOK(t, "list", "--container", ids[2][:20]); !strings.Contains(out, dirs[2]) {
		t.Errorf("list --container: %q", out)
	}
	for _, tc := range []struct {
		name string
		id   string
		want string
	}{
		{"ambiguous", "c0ffee" + pid, fmt.Sprintf("--container: container c0ffee%s is ambiguous: it matches 2 cgroups: %s, %s", pid, dirs[0], dirs[1])},
		{"no such container", "c0ffee" + pid + "3", "--container: no cgroup found for container c0ffee" + pid + "3"},
		{"not hex", "not-hex!", `--container: "not-hex!" is not a container ID`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := runCgwall(t, "list", "--container", tc.id)
			checkOneLineError(t, stderr, code, 2, tc.want)
		})
	}
}

func TestTargetConflicts(t *testing.T) {
	cg, _ := testCgroup(t)
	_, stderr, code := runCgwall(t, "attach", "--cgroup", cg, "--pid", "1")
	checkOneLineError(t, stderr, code, 2, "--cgroup and --pid both name a cgroup: give one")
	_, stderr, code = runCgwall(t, "detach", "--all", "--cgroup", cg)
	checkOneLineError(t, stderr, code, 2, "--all and --cgroup: give one")
}
