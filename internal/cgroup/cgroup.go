// Package cgroup finds the cgroup v2 hierarchy and resolves the cgroup
// directories that cgwall attaches to.
package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNoCgroup2 says that no cgroup v2 hierarchy is mounted.
var ErrNoCgroup2 = errors.New("no cgroup2 filesystem is mounted: mount one with 'mount -t cgroup2 none /sys/fs/cgroup' or boot with systemd.unified_cgroup_hierarchy=1")

// ErrRoot marks an error that refuses the root cgroup: it holds every process
// on the host, so a target that reaches it by accident (a process in it, a
// path that cleans to the mount) must not be taken for it.
var ErrRoot = errors.New("the root cgroup")

// rootError says how a target came to name the root cgroup; it is ErrRoot.
type rootError struct{ msg string }

func (e *rootError) Error() string        { return e.msg }
func (e *rootError) Is(target error) bool { return target == ErrRoot }

// Dir is a cgroup v2 directory.
type Dir struct {
	Path string // absolute, cleaned
	ID   uint64 // the kernel's cgroup ID, which is the directory's inode number
}

// Mount returns where the cgroup v2 hierarchy is mounted, read from
// /proc/self/mountinfo: /sys/fs/cgroup on most hosts, /sys/fs/cgroup/unified on
// hybrid ones.
func Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	defer f.Close()
	return mountFrom(f)
}

// mountFrom returns the first cgroup2 mount point in a mountinfo listing.
func mountFrom(r io.Reader) (string, error) {
	s := bufio.NewScanner(r)
	for s.Scan() {
		// Fields: id parent major:minor root mountpoint options [optional...] - fstype source super-options
		fields := strings.Fields(s.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+1 >= len(fields) {
			continue
		}
		if fields[sep+1] == "cgroup2" {
			return unescape(fields[4]), nil
		}
	}
	if err := s.Err(); err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	return "", ErrNoCgroup2
}

// unescape undoes mountinfo's octal escapes (\040 for a space, and so on).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Root returns the root of the cgroup v2 hierarchy, the cgroup2 mount itself:
// the cgroup that holds every process on the host.
func Root() (Dir, error) {
	mnt, err := Mount()
	if err != nil {
		return Dir{}, err
	}
	return Resolve(mnt)
}

// IsRoot says whether d is the root cgroup. It compares cgroup IDs, so every
// path to the root counts: ".", the mount's path, a symlink to it.
func IsRoot(d Dir) bool {
	root, err := Root()
	return err == nil && root.ID == d.ID
}

// Resolve turns a --cgroup argument into a cgroup v2 directory. A relative path
// is taken relative to the cgroup2 mount. It fails, naming the path, when the
// path does not exist, is not a directory or is not in a cgroup v2 hierarchy.
func Resolve(path string) (Dir, error) {
	if path == "" {
		return Dir{}, errors.New("empty cgroup path")
	}
	if !filepath.IsAbs(path) {
		mnt, err := Mount()
		if err != nil {
			return Dir{}, err
		}
		path = filepath.Join(mnt, path)
	}
	path = filepath.Clean(path)

	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return Dir{}, fmt.Errorf("cgroup %s does not exist: create it with mkdir, or pick an existing one", path)
		}
		return Dir{}, fmt.Errorf("cgroup %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return Dir{}, fmt.Errorf("cgroup %s is not a directory: give a cgroup v2 directory", path)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return Dir{}, fmt.Errorf("cgroup %s: %w", path, err)
	}
	if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		return Dir{}, fmt.Errorf("%s is not in a cgroup v2 hierarchy%s", path, v2Hint(fs.Type))
	}
	return Dir{Path: path, ID: st.Ino}, nil
}

func v2Hint(fsType int64) string {
	mnt, err := Mount()
	if err != nil {
		return ""
	}
	if fsType == unix.CGROUP_SUPER_MAGIC {
		return fmt.Sprintf(" (it is cgroup v1): use a cgroup under %s", mnt)
	}
	return fmt.Sprintf(": use a cgroup under %s", mnt)
}
