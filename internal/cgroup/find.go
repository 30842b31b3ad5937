package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// OfPID returns the cgroup v2 of a process, from /proc/PID/cgroup.
func OfPID(pid int) (Dir, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if errors.Is(err, os.ErrNotExist) {
		return Dir{}, fmt.Errorf("no process with PID %d", pid)
	}
	if err != nil {
		return Dir{}, fmt.Errorf("read cgroup of PID %d: %w", pid, err)
	}
	defer f.Close()
	mnt, err := Mount()
	if err != nil {
		return Dir{}, err
	}
	s := bufio.NewScanner(f)
	for s.Scan() {
		// The cgroup v2 line is "0::/path".
		if rest, ok := strings.CutPrefix(s.Text(), "0::"); ok {
			return Resolve(filepath.Join(mnt, rest))
		}
	}
	return Dir{}, fmt.Errorf("PID %d is in no cgroup v2 (its /proc/%d/cgroup has no 0:: line)", pid, pid)
}

// walk calls fn for every cgroup directory under the cgroup2 mount.
func walk(fn func(path string, d fs.DirEntry)) error {
	mnt, err := Mount()
	if err != nil {
		return err
	}
	return filepath.WalkDir(mnt, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a cgroup removed under our feet, or unreadable: skip it
		}
		if d.IsDir() {
			fn(path, d)
		}
		return nil
	})
}

// OfUnit returns the cgroup of a systemd unit: the directory named NAME, or
// NAME.service when NAME has no unit suffix.
func OfUnit(name string) (Dir, error) {
	if name == "" {
		return Dir{}, errors.New("empty unit name")
	}
	want := name
	if !strings.Contains(name, ".") {
		want = name + ".service"
	}
	var found []string
	if err := walk(func(path string, d fs.DirEntry) {
		if d.Name() == want {
			found = append(found, path)
		}
	}); err != nil {
		return Dir{}, err
	}
	return one(found, fmt.Sprintf("unit %s", want), "is it running? 'systemctl status "+want+"' tells")
}

// containerRE takes the 64-hex container ID out of the cgroup folder names
// that docker, containerd, CRI-O and podman create: docker-ID.scope,
// cri-containerd-ID.scope, crio-ID.scope, libpod-ID.scope, or a bare ID.
var containerRE = regexp.MustCompile(`^(?:[a-z-]+-)?([0-9a-f]{64})(?:\.scope)?$`)

// OfContainer returns the cgroup of the container whose ID starts with prefix.
func OfContainer(prefix string) (Dir, error) {
	if len(prefix) == 0 || strings.Trim(prefix, "0123456789abcdef") != "" {
		return Dir{}, fmt.Errorf("%q is not a container ID: give hex digits, a unique prefix of the ID", prefix)
	}
	var found []string
	if err := walk(func(path string, d fs.DirEntry) {
		if m := containerRE.FindStringSubmatch(d.Name()); m != nil && strings.HasPrefix(m[1], prefix) {
			found = append(found, path)
		}
	}); err != nil {
		return Dir{}, err
	}
	// A container's own cgroup may hold sub-cgroups named like it (podman's
	// libpod-ID.scope/container); the outermost is the container's.
	found = outermost(found)
	return one(found, fmt.Sprintf("container %s", prefix), "is it running?")
}

func outermost(paths []string) []string {
	var out []string
	for _, p := range paths {
		nested := false
		for _, q := range paths {
			if q != p && strings.HasPrefix(p, q+"/") {
				nested = true
			}
		}
		if !nested {
			out = append(out, p)
		}
	}
	return out
}

func one(found []string, what, hint string) (Dir, error) {
	switch len(found) {
	case 0:
		return Dir{}, fmt.Errorf("no cgroup found for %s: %s", what, hint)
	case 1:
		return Resolve(found[0])
	}
	return Dir{}, fmt.Errorf("%s is ambiguous: it matches %d cgroups: %s", what, len(found), strings.Join(found, ", "))
}

// PathsByID maps cgroup IDs to their current paths, for the IDs given. An ID
// missing from the result names a cgroup that no longer exists.
func PathsByID(ids []uint64) (map[uint64]string, error) {
	want := map[uint64]bool{}
	for _, id := range ids {
		want[id] = true
	}
	out := map[uint64]string{}
	err := walk(func(path string, _ fs.DirEntry) {
		var st unix.Stat_t
		if unix.Stat(path, &st) == nil && want[st.Ino] {
			out[st.Ino] = path
		}
	})
	return out, err
}

// ParsePID reads a --pid argument.
func ParsePID(s string) (int, error) {
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%q is not a process ID", s)
	}
	return pid, nil
}
