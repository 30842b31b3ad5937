package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// killTimeout bounds the wait for killed processes to exit: one stuck in
// uninterruptible sleep holds on to its cgroup until it wakes, which may be
// never.
const killTimeout = 10 * time.Second

// Remove kills every process in the cgroup at path and below it, waits until
// the last one is gone and removes the cgroup and the cgroups below it,
// deepest first. A cgroup that does not exist is no error.
func Remove(path string) error {
	if err := kill(path); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if err := WaitEmpty(path, killTimeout); err != nil {
		return err
	}
	return removeTree(path)
}

// kill writes cgroup.kill, which sends SIGKILL to every process in the cgroup
// and its descendants. It returns fs.ErrNotExist only when the cgroup itself
// does not exist.
func kill(path string) error {
	// No O_CREATE: in a folder that is not a cgroup, that would make a file.
	f, err := os.OpenFile(filepath.Join(path, "cgroup.kill"), os.O_WRONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if _, statErr := os.Stat(path); errors.Is(statErr, fs.ErrNotExist) {
			return statErr
		}
		return fmt.Errorf("remove cgroup %s: it has no cgroup.kill: it is not a cgroup v2 below the root, or the kernel is older than 5.14", path)
	}
	if err != nil {
		return fmt.Errorf("kill the processes of cgroup %s: %w", path, err)
	}
	_, err = f.WriteString("1")
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return fmt.Errorf("kill the processes of cgroup %s: %w", path, err)
	}
	return nil
}

// WaitEmpty waits, for at most timeout, until cgroup.events says "populated 0": no process is left
// in the cgroup or below it. The kernel signals each change of the file as a
// modification, which inotify reports; cgroup.kill returns before the
// processes have exited, and rmdir fails until they have.
func WaitEmpty(path string, timeout time.Duration) error {
	events := filepath.Join(path, "cgroup.events")
	if empty, err := unpopulated(events); err != nil || empty {
		return err
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return fmt.Errorf("watch %s: %w", events, err)
	}
	// Non-blocking, so that the runtime's poller waits on it and a read
	// deadline bounds the wait.
	in := os.NewFile(uintptr(fd), "inotify")
	defer in.Close()
	if _, err := unix.InotifyAddWatch(fd, events, unix.IN_MODIFY); err != nil {
		return fmt.Errorf("watch %s: %w", events, err)
	}
	if err := in.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("watch %s: %w", events, err)
	}
	buf := make([]byte, 4096)
	for {
		// Read again now that the watch is in place, so no change is missed.
		if empty, err := unpopulated(events); err != nil || empty {
			return err
		}
		if _, err := in.Read(buf); errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("remove cgroup %s: its processes are still there %s after SIGKILL", path, timeout)
		} else if err != nil {
			return fmt.Errorf("watch %s: %w", events, err)
		}
	}
}

// unpopulated reads a cgroup.events file. A cgroup removed meanwhile is empty.
func unpopulated(events string) (bool, error) {
	data, err := os.ReadFile(events)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", events, err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "populated "); ok {
			return v == "0", nil
		}
	}
	return false, fmt.Errorf("read %s: no populated line", events)
}

// removeTree removes a cgroup and the cgroups below it, deepest first: rmdir
// refuses a cgroup that has children.
func removeTree(path string) error {
	var dirs []string
	filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil // a cgroup removed meanwhile is what we want
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove cgroup %s: %w", dirs[i], unwrapPathError(err))
		}
	}
	return nil
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
