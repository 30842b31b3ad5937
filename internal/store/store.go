// Package store keeps persistent policies in bpffs: one folder per cgroup,
// named by cgroup ID, under /sys/fs/bpf/cgwall, holding the policy's pinned
// maps and links and the version of the layout they follow. It owns the
// folders, the lock that serializes changes, and the transactions that create,
// replace and remove a policy so that a crash at any point leaves one whole
// policy in force, or none where none was.
package store

import (
	"context"
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

// DefaultRoot holds one folder per cgroup with a persistent policy.
var DefaultRoot = filepath.Join(BPFFS, "cgwall")

// Folders that transactions leave only when they are interrupted. bpffs
// refuses dots in names, so they cannot be hidden.
const (
	stagingPrefix = "staging-" // a policy being built: staging-<id>-<pid>
	retiredPrefix = "retired-" // a policy being replaced by a rebuild: retired-<id>-<pid>
)

// Store is the folder of persistent policies, locked for as long as it is
// open: every command that reads or changes persistent policies holds it, so
// that concurrent edits serialize instead of racing.
type Store struct {
	root string   // the folder's name, for messages
	at   string   // the folder as opened and checked, for every path
	lock *os.File // the folder opened, and locked
}

// Open mounts bpffs if needed, creates or checks the store's folder, takes
// its lock and finishes or undoes what interrupted transactions left. It
// gives up waiting for the lock when ctx is done; waiting, if not nil, is
// called once if it has to wait.
func Open(ctx context.Context, waiting func()) (*Store, error) {
	return OpenAt(ctx, DefaultRoot, waiting)
}

// OpenAt opens the store at root, a folder on a bpffs (tests use their own).
func OpenAt(ctx context.Context, root string, waiting func()) (*Store, error) {
	if ctx.Err() != nil {
		return nil, gaveUp(ctx, root)
	}
	if root == DefaultRoot {
		if err := mountBPFFS(); err != nil {
			return nil, err
		}
	}
	f, err := openRoot(root)
	if err != nil {
		return nil, err
	}
	if err := lock(ctx, f, waiting); err != nil {
		if ctx.Err() != nil {
			return nil, gaveUp(ctx, root)
		}
		return nil, fmt.Errorf("lock %s: %w", root, err)
	}
	// Every path below goes through the folder as opened and checked, not
	// through its name, which another process could make point elsewhere.
	s := &Store{root: root, at: fmt.Sprintf("/proc/self/fd/%d", f.Fd()), lock: f}
	if err := s.recover(); err != nil {
		s.Close()
		return nil, fmt.Errorf("finish an interrupted attach: %w", err)
	}
	return s, nil
}

// lock takes the store's lock, an flock on f, waiting for it until ctx is
// done. flock cannot be interrupted, so a goroutine waits in it; if the caller
// has given up by the time the lock comes, the goroutine lets go of it at
// once, so that a command that gave up never changes anything. Unless lock
// succeeds, f is closed (by the goroutine, if it is still waiting). Where ctx
// is done as the lock comes, lock gives up too: it is done either way.
func lock(ctx context.Context, f *os.File, waiting func()) error {
	fd := int(f.Fd())
	err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	if !errors.Is(err, unix.EWOULDBLOCK) {
		if err != nil {
			f.Close()
		}
		return err
	}
	if waiting != nil {
		waiting()
	}
	got := make(chan error) // unsent if the caller gave up
	go func() {
		err := flock(fd, unix.LOCK_EX)
		select {
		case got <- err:
		case <-ctx.Done():
			f.Close()
		}
	}()
	select {
	case err = <-got:
		if err == nil && ctx.Err() != nil {
			err = ctx.Err()
		}
		if err != nil {
			f.Close()
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// flock is unix.Flock, resumed when a signal interrupts it.
func flock(fd, how int) error {
	for {
		if err := unix.Flock(fd, how); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// gaveUp is the error of an open that ctx ended before the lock was taken.
func gaveUp(ctx context.Context, root string) error {
	return fmt.Errorf("gave up waiting for the lock on %s: %w", root, context.Cause(ctx))
}

// Close releases the lock.
func (s *Store) Close() error { return s.lock.Close() }

// mountBPFFS makes sure bpffs is mounted at /sys/fs/bpf, mounting it if not.
func mountBPFFS() error {
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

// openRoot creates the store's folder, or opens the one there, and checks on
// the folder opened that it is one cgwall could have made: not a symlink,
// owned by this user, mode 0700. Where bpffs is world-writable, anybody could
// have made it first.
func openRoot(root string) (*os.File, error) {
	if err := os.Mkdir(root, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create %s: %w", root, err)
	}
	return openChecked(root)
}

// openChecked opens the store's folder and checks that cgwall made it.
func openChecked(root string) (*os.File, error) {
	f, err := os.OpenFile(root, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("refusing to use %s: %w; cgwall did not make it: check who did, then remove it", root, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("check %s: %w", root, err)
	}
	if err := madeByUs(root, &st); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// madeByUs refuses a folder of the store that this user did not make as
// cgwall makes them: a directory it owns, mode 0700.
func madeByUs(path string, st *unix.Stat_t) error {
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != uint32(os.Geteuid()) || st.Mode&0o777 != 0o700 {
		return fmt.Errorf("refusing to use %s: it is not a folder owned by uid %d with mode 0700 (found mode %o, uid %d); cgwall did not make it: check who did, then remove it", path, os.Geteuid(), st.Mode, st.Uid)
	}
	return nil
}

// Dir names the folder of the policy of a cgroup, for messages.
func (s *Store) Dir(cgroupID uint64) string {
	return filepath.Join(s.root, strconv.FormatUint(cgroupID, 10))
}

// path is the folder of the policy of a cgroup, through the store's folder
// as opened.
func (s *Store) path(cgroupID uint64) string {
	return filepath.Join(s.at, strconv.FormatUint(cgroupID, 10))
}

// Exists says whether a cgroup has a persistent policy.
func (s *Store) Exists(cgroupID uint64) bool {
	_, err := os.Lstat(s.path(cgroupID))
	return err == nil
}

// List returns the cgroup IDs that have a persistent policy.
func (s *Store) List() ([]uint64, error) {
	entries, err := os.ReadDir(s.at)
	if err != nil {
		return nil, err
	}
	var ids []uint64
	for _, e := range entries {
		id, err := strconv.ParseUint(e.Name(), 10, 64)
		if err != nil {
			continue
		}
		if err := s.checkEntry(e.Name()); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// checkEntry refuses a policy folder that cgwall did not make.
func (s *Store) checkEntry(name string) error {
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(s.at, name), &st); err != nil {
		return fmt.Errorf("check %s: %w", filepath.Join(s.root, name), err)
	}
	return madeByUs(filepath.Join(s.root, name), &st)
}

// Open opens a cgroup's persistent policy, refusing a folder of a layout this
// cgwall does not know.
func (s *Store) Open(cgroupID uint64) (*datapath.Datapath, error) {
	if err := s.checkEntry(strconv.FormatUint(cgroupID, 10)); err != nil {
		return nil, err
	}
	dir := s.path(cgroupID)
	if err := checkLayout(dir); err != nil {
		return nil, fmt.Errorf("%s: %w", s.Dir(cgroupID), err)
	}
	return datapath.Open(dir)
}

// Links says which hooks a cgroup's persistent policy has attached.
func (s *Store) Links(cgroupID uint64) (datapath.PinnedLinks, error) {
	return datapath.ReadPinnedLinks(s.path(cgroupID))
}

// Remove detaches a cgroup's persistent policy and removes its folder. A
// policy that is not there is no error.
func (s *Store) Remove(cgroupID uint64) error { return remove(s.path(cgroupID)) }

// remove detaches the links pinned in dir, then removes it with its maps.
func remove(dir string) error {
	return errors.Join(datapath.Unlink(dir), os.RemoveAll(dir))
}

// recover finishes or undoes the transactions that died while they held the
// lock, which no one holds now. A staging folder whose policy is in force is
// a rebuild that got past its commit: it takes its cgroup's place if that is
// empty. A retired folder is a policy that a rebuild replaced: it goes once
// its successor is in place, and comes back if none is.
func (s *Store) recover() error {
	entries, err := os.ReadDir(s.at)
	if err != nil {
		return err
	}
	var errs []error
	for _, prefix := range []string{stagingPrefix, retiredPrefix} {
		for _, e := range entries {
			id, ok := interrupted(e.Name(), prefix)
			if !ok {
				continue
			}
			errs = append(errs, s.settle(filepath.Join(s.at, e.Name()), id, prefix == stagingPrefix))
		}
	}
	return errors.Join(errs...)
}

// settle decides the fate of one folder that an interrupted transaction left.
func (s *Store) settle(path string, id uint64, staging bool) error {
	if s.Exists(id) || staging && !committed(path) {
		return remove(path)
	}
	return os.Rename(path, s.path(id))
}

// interrupted reads the cgroup ID out of a name <prefix><id>-<pid>.
func interrupted(name, prefix string) (uint64, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	idStr, _, _ := strings.Cut(rest, "-")
	id, err := strconv.ParseUint(idStr, 10, 64)
	return id, err == nil
}

// committed says whether the policy pinned in dir is in force.
func committed(dir string) bool {
	if checkLayout(dir) != nil {
		return false
	}
	d, err := datapath.Open(dir)
	if err != nil {
		return false
	}
	defer d.Close()
	return d.Live()
}

func (s *Store) transient(prefix string, cgroupID uint64) string {
	return filepath.Join(s.at, fmt.Sprintf("%s%d-%d", prefix, cgroupID, os.Getpid()))
}

// ViewAt opens the store at root for reading only, without its lock, for a
// reader that must not wait for a command, nor make one wait: the agent's
// metrics, read at each scrape. It changes nothing and finishes no
// interrupted transaction; what it reads may be in the middle of a change.
func ViewAt(root string) (*Store, error) {
	f, err := openChecked(root)
	if err != nil {
		return nil, err
	}
	return &Store{root: root, at: fmt.Sprintf("/proc/self/fd/%d", f.Fd()), lock: f}, nil
}
