package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// OfPID returns the cgroup v2 of a process, from /proc/PID/cgroup. A process
// in the root cgroup (every kernel thread is) is refused with ErrRoot: its
// cgroup is every process on the host.
func OfPID(pid int) (Dir, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if errors.Is(err, os.ErrNotExist) {
		return Dir{}, fmt.Errorf("no process with PID %d", pid)
	}
	if err != nil {
		return Dir{}, fmt.Errorf("read cgroup of PID %d: %w", pid, err)
	}
	mnt, err := Mount()
	if err != nil {
		return Dir{}, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		// The cgroup v2 line is "0::/path", the path relative to the root
		// of this cgroup namespace.
		rest, ok := strings.CutPrefix(line, "0::")
		if !ok {
			continue
		}
		switch {
		case rest == "/":
			return Dir{}, &rootError{fmt.Sprintf("process %d (%s) is in the root cgroup, %s, which holds every process on the host",
				pid, describeProcess(pid), mnt)}
		case slices.Contains(strings.Split(rest, "/"), ".."):
			return Dir{}, fmt.Errorf("process %d (%s) is in cgroup %s, outside this cgroup namespace: run cgwall in the process's cgroup namespace",
				pid, describeProcess(pid), rest)
		}
		return Resolve(filepath.Join(mnt, rest))
	}
	return Dir{}, fmt.Errorf("PID %d is in no cgroup v2 (its /proc/%d/cgroup has no 0:: line)", pid, pid)
}

// pfKthread is the kernel's PF_KTHREAD flag, in /proc/PID/stat's ninth field.
const pfKthread = 0x00200000

// describeProcess names a process for a message: its command name, quoted
// if it holds what would break the line, and whether it is a kernel thread.
func describeProcess(pid int) string {
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	name := strings.TrimSuffix(string(comm), "\n")
	if err != nil {
		name = "command unknown"
	} else if q := strconv.Quote(name); q[1:len(q)-1] != name {
		name = q
	}
	if isKernelThread(pid) {
		return name + ", a kernel thread"
	}
	return name
}

func isKernelThread(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The command name, in parentheses, may hold anything: the fields that
	// follow start after the last ')'. Flags is the seventh of them.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return false
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 7 {
		return false
	}
	flags, err := strconv.ParseUint(fields[6], 10, 64)
	return err == nil && flags&pfKthread != 0
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

// UnitTypes are systemd's unit types, the suffixes of unit names.
var UnitTypes = []string{"service", "socket", "target", "device", "mount", "automount", "swap", "timer", "path", "slice", "scope"}

// UnitName is the unit that NAME names, as systemctl reads it: NAME itself if
// it ends in a unit type, and otherwise NAME.service ("app.v2" is
// app.v2.service).
func UnitName(name string) string {
	if i := strings.LastIndexByte(name, '.'); i >= 0 && slices.Contains(UnitTypes, name[i+1:]) {
		return name
	}
	return name + ".service"
}

// OfUnit returns the cgroup of a systemd unit: the directory named NAME, or
// NAME.service when NAME has no unit suffix.
func OfUnit(name string) (Dir, error) {
	if name == "" {
		return Dir{}, errors.New("empty unit name")
	}
	want := UnitName(name)
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
