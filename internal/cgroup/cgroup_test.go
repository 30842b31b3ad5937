package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const hybridMountinfo = `22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
`

func TestMountFrom(t *testing.T) {
	for name, tc := range map[string]struct {
		in   string
		want string
		err  error
	}{
		"hybrid":  {in: hybridMountinfo, want: "/sys/fs/cgroup/unified"},
		"unified": {in: "29 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n", want: "/sys/fs/cgroup"},
		"escaped": {in: `29 22 0:26 / /mnt/my\040cgroups rw - cgroup2 none rw` + "\n", want: "/mnt/my cgroups"},
		"none":    {in: "31 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n", err: ErrNoCgroup2},
		"garbage": {in: "not a mountinfo line\n", err: ErrNoCgroup2},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := mountFrom(strings.NewReader(tc.in))
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Fatalf("mountFrom = %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	mnt, err := Mount()
	if err != nil {
		t.Skipf("no cgroup2 here: %v", err)
	}
	root, err := Resolve(mnt)
	if err != nil || root.Path != mnt || root.ID == 0 {
		t.Fatalf("Resolve(%s) = %+v, %v", mnt, root, err)
	}
	rel, err := Resolve(".")
	if err != nil || rel != root {
		t.Fatalf("Resolve(.) = %+v, %v; want %+v", rel, err, root)
	}

	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(mnt, "cgwall-no-such-cgroup"), "does not exist"},
		{"interface file", filepath.Join(mnt, "cgroup.procs"), "is not a directory"},
		{"file", file, "is not a directory"},
		{"not cgroup2", t.TempDir(), "is not in a cgroup v2 hierarchy"},
		{"empty", "", "empty cgroup path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Resolve(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Resolve(%q) = %v; want an error containing %q", tc.path, err, tc.want)
			}
		})
	}
}
