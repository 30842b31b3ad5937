package cgroup

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestOfPIDRefusesTheRoot checks that a process in the root cgroup does not
// make its cgroup, every process on the host, a target.
func TestOfPIDRefusesTheRoot(t *testing.T) {
	if _, err := Mount(); err != nil {
		t.Skipf("no cgroup2 here: %v", err)
	}
	// PID 2 is kthreadd on Linux, outside PID namespaces: a kernel thread,
	// in the root cgroup like every kernel thread.
	comm, err := os.ReadFile("/proc/2/comm")
	if err != nil || string(comm) != "kthreadd\n" {
		t.Skipf("PID 2 is not kthreadd here (a PID namespace?): %q, %v", comm, err)
	}
	_, err = OfPID(2)
	if !errors.Is(err, ErrRoot) {
		t.Fatalf("OfPID(2) = %v; want an error that is ErrRoot", err)
	}
	for _, want := range []string{"process 2 (kthreadd, a kernel thread) is in the root cgroup", "which holds every process on the host"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("OfPID(2) = %q; want it to say %q", err, want)
		}
	}
}

func TestIsKernelThread(t *testing.T) {
	if isKernelThread(os.Getpid()) {
		t.Error("the test itself is taken for a kernel thread")
	}
	if comm, _ := os.ReadFile("/proc/2/comm"); string(comm) == "kthreadd\n" && !isKernelThread(2) {
		t.Error("kthreadd is not taken for a kernel thread")
	}
}

func TestIsRoot(t *testing.T) {
	mnt, err := Mount()
	if err != nil {
		t.Skipf("no cgroup2 here: %v", err)
	}
	for _, path := range []string{mnt, mnt + "/", ".", mnt + "/."} {
		d, err := Resolve(path)
		if err != nil || !IsRoot(d) {
			t.Errorf("Resolve(%q) = %+v, %v: want the root", path, d, err)
		}
	}
}

func TestUnitName(t *testing.T) {
	for in, want := range map[string]string{
		"nginx":         "nginx.service",
		"nginx.service": "nginx.service",
		"ci-1.scope":    "ci-1.scope",
		"system.slice":  "system.slice",
		"app.v2":        "app.v2.service",
		"getty@tty1":    "getty@tty1.service",
		"backup.timer":  "backup.timer",
	} {
		if got := UnitName(in); got != want {
			t.Errorf("UnitName(%q) = %q; want %q", in, got, want)
		}
	}
}
