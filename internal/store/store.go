// Package store keeps persistent policies in bpffs: one folder per cgroup,
// named by cgroup ID, under /sys/fs/bpf/cgwall, holding the policy's pinned
// maps and links.
package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cgwall/cgwall/internal/datapath"
)

// BPFFS is where bpffs is mounted, by convention.
const BPFFS = "/sys/fs/bpf"

// Root holds one folder per cgroup with a persistent policy.
var Root = filepath.Join(BPFFS, "cgwall")

// bpffs refuses dots in names, so no hidden folder.
const stagingPrefix = "staging-"

// Mount makes sure bpffs is mounted at /sys/fs/bpf, mounting it if not.
func Mount() error {
	var fs unix.Statfs_t
	if err := unix.Statfs(BPFFS, &fs); err == nil && fs.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := os.MkdirAll(BPFFS, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", BPFFS, err)
	}
	if err := unix.Mount("bpf", BPFFS, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs on %s: %w", BPFFS, err)
	}
	return nil
}

// Lock takes the store's lock, which every command that changes a persistent
// policy holds, so that concurrent edits serialize instead of racing.
func Lock() (unlock func(), err error) {
	if err := os.MkdirAll(Root, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", Root, err)
	}
	f, err := os.Open(Root)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", Root, err)
	}
	return func() { f.Close() }, nil
}

// Dir is the folder of the policy of a cgroup.
func Dir(cgroupID uint64) string {
	return filepath.Join(Root, strconv.FormatUint(cgroupID, 10))
}

// Staging is a folder in which an attach pins a new policy before it renames
// it into place: the rename is what makes the policy exist, all at once.
func Staging(cgroupID uint64) string {
	return filepath.Join(Root, fmt.Sprintf("%s%d-%d", stagingPrefix, cgroupID, os.Getpid()))
}

// Exists says whether a cgroup has a persistent policy.
func Exists(cgroupID uint64) bool {
	_, err := os.Stat(Dir(cgroupID))
	return err == nil
}

// IDs lists the cgroup IDs that have a persistent policy.
func IDs() ([]uint64, error) {
	entries, err := os.ReadDir(Root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []uint64
	for _, e := range entries {
		if id, err := strconv.ParseUint(e.Name(), 10, 64); err == nil && e.IsDir() {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// CleanStaging removes what attaches that died before their rename left
// behind. Their programs never went live, so removing them changes no
// decision. Callers hold the lock, so no staging folder is in use.
func CleanStaging() error {
	entries, err := os.ReadDir(Root)
	if err != nil {
		return nil
	}
	var errs []error
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), stagingPrefix) {
			errs = append(errs, datapath.Unpin(filepath.Join(Root, e.Name())))
		}
	}
	return errors.Join(errs...)
}
