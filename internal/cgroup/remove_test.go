package cgroup_test

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/testutil"
)

func TestRemove(t *testing.T) {
	testutil.RequireBPF(t)
	mnt, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		dirs  []string // below the cgroup
		procs []string // cgroups a process is started in, "" for the top
	}{
		{name: "empty"},
		{name: "one process", procs: []string{""}},
		{name: "children", dirs: []string{"a", "a/b", "c"}},
		{name: "processes throughout", dirs: []string{"a", "a/b", "c"}, procs: []string{"", "a/b", "a/b", "c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Several rounds, because a process that is killed but not yet
			// gone makes rmdir fail only now and then.
			for range 10 {
				top, err := os.MkdirTemp(mnt, "cgwall-test-remove-")
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range tc.dirs {
					if err := os.Mkdir(filepath.Join(top, d), 0o755); err != nil {
						t.Fatal(err)
					}
				}
				var cmds []*exec.Cmd
				for _, d := range tc.procs {
					cmds = append(cmds, startIn(t, filepath.Join(top, d)))
				}
				if err := cgroup.Remove(top); err != nil {
					t.Fatalf("Remove: %v", err)
				}
				if _, err := os.Stat(top); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("%s is still there: %v", top, err)
				}
				for _, c := range cmds {
					if err := c.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
						t.Errorf("a process in the cgroup ended with %v, want killed", err)
					}
				}
			}
		})
	}
}

func TestRemoveNotCgroup(t *testing.T) {
	if err := cgroup.Remove(filepath.Join(t.TempDir(), "gone")); err != nil {
		t.Errorf("a cgroup that does not exist: %v", err)
	}
	dir := t.TempDir()
	if err := cgroup.Remove(dir); err == nil || !strings.Contains(err.Error(), "has no cgroup.kill") {
		t.Errorf("a folder that is not a cgroup: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cgroup.kill")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Remove made a cgroup.kill in a folder that is not a cgroup: %v", err)
	}
}

// startIn starts a process that would run for a long time in a cgroup.
func startIn(t *testing.T, path string) *exec.Cmd {
	t.Helper()
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	c := exec.Command("sleep", "1000")
	c.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill() })
	return c
}
