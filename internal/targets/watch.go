package targets

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

// Event says that a cgroup appeared (Created) or went (Created false).
type Event struct {
	Rel     string // relative to the cgroup2 mount, as Walk gives it
	Created bool
}

// Watcher follows the cgroup2 tree with inotify: one watch per cgroup, each
// added as the cgroup appears. inotify does not follow a tree by itself, so
// a cgroup made inside a new one before its watch is in place would be
// missed: every new cgroup is scanned once its watch is in place.
//
// Events for one path come in the order they happened, each Created followed
// by its removal, and a cgroup that comes and goes before the watcher sees
// it is not reported. Read both Events and Errors until Close: the watcher
// waits for its reader.
type Watcher struct {
	mnt    string
	fsw    *fsnotify.Watcher
	events chan Event
	errors chan error
	done   chan struct{}
	exited chan struct{}
	once   sync.Once

	// known are the cgroups reported as created and not yet removed, by
	// absolute path; only the watcher's goroutine uses it (and Watch, before
	// that starts).
	known map[string]bool
}

// ErrLost is sent on Errors when the kernel's inotify queue overflowed and
// events were lost. The watcher has rescanned the tree by then and put the
// Created and removed events that bring a reader up to date on Events, which
// is not ordered with Errors: they may be read before or after ErrLost. A
// reader that rescans with Walk on ErrLost is up to date either way.
var ErrLost = errors.New("cgroup events were lost (the inotify queue overflowed): the tree was rescanned; raise fs.inotify.max_queued_events if it happens often")

// Watch starts following the cgroup2 tree at mnt. The cgroups already there
// are watched but not reported: Walk lists them.
func Watch(mnt string) (*Watcher, error) {
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("start inotify: %w%s", err, limitHint(err))
	}
	w := &Watcher{
		mnt:    filepath.Clean(mnt),
		fsw:    fsw,
		events: make(chan Event, 64),
		errors: make(chan error, 1),
		done:   make(chan struct{}),
		exited: make(chan struct{}),
		known:  map[string]bool{},
	}
	if err := w.watchTree(); err != nil {
		fsw.Close()
		return nil, err
	}
	go w.run()
	return w, nil
}

// Events gives the cgroups created and removed; it is closed by Close.
func (w *Watcher) Events() <-chan Event { return w.events }

// Errors gives what went wrong while watching: ErrLost, or a cgroup that
// could not be watched (its own children are then not reported).
func (w *Watcher) Errors() <-chan error { return w.errors }

// Close stops the watcher and closes Events and Errors.
func (w *Watcher) Close() error {
	var err error
	w.once.Do(func() {
		close(w.done)
		err = w.fsw.Close()
		<-w.exited
	})
	return err
}

// watchTree puts a watch on every cgroup there is, each before its folder is
// read, so that a cgroup made meanwhile is seen by the one or the other.
func (w *Watcher) watchTree() error {
	return filepath.WalkDir(w.mnt, func(abs string, d fs.DirEntry, err error) error {
		switch {
		case err != nil && abs == w.mnt:
			return fmt.Errorf("watch the cgroups under %s: %w", w.mnt, err)
		case err != nil || !d.IsDir():
			return nil // removed while the walk went by, or a file
		}
		if err := w.add(abs); err != nil && !gone(err) {
			return err
		}
		if abs != w.mnt {
			w.known[abs] = true
		}
		return nil
	})
}

func (w *Watcher) run() {
	defer close(w.exited)
	defer close(w.events)
	defer close(w.errors)
	for {
		select {
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return
			}
			w.handle(ev)
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return
			}
			w.failed(err)
		case <-w.done:
			return
		}
	}
}

func (w *Watcher) handle(ev fsnotify.Event) {
	abs := filepath.Clean(ev.Name)
	// A rename reports the old name as renamed and the new as created: the
	// folder goes from the one to the other. cgroup2 refuses rename(2), but
	// the watcher follows any tree.
	if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		w.removed(abs)
	}
	if ev.Has(fsnotify.Create) {
		if fi, err := os.Lstat(abs); err == nil && fi.IsDir() {
			w.created(abs)
		}
	}
}

// created watches a new cgroup, reports it, and then scans it for the
// cgroups made in it before the watch was in place.
func (w *Watcher) created(abs string) {
	if w.known[abs] || !w.below(abs) {
		return
	}
	if err := w.add(abs); err != nil {
		if gone(err) {
			return // removed already: its removal is not reported either
		}
		w.report(err) // report the cgroup anyway: it exists
	}
	w.known[abs] = true
	w.emit(Event{Rel: relTo(w.mnt, abs), Created: true})
	entries, err := os.ReadDir(abs)
	if err != nil {
		return // removed since: its removal follows
	}
	for _, e := range entries {
		if e.IsDir() {
			w.created(filepath.Join(abs, e.Name()))
		}
	}
}

// removed reports a cgroup that went, after any inside it that are still
// known: a rename moves them all, and after lost events a parent's removal
// may be the first word of theirs.
func (w *Watcher) removed(abs string) {
	var gone []string
	for p := range w.known {
		if p == abs || strings.HasPrefix(p, abs+"/") {
			gone = append(gone, p)
		}
	}
	// Deepest first, then in reverse order: children before their parent.
	slices.SortFunc(gone, func(a, b string) int { return strings.Compare(b, a) })
	for _, p := range gone {
		delete(w.known, p)
		// The kernel drops the watch of a removed folder itself; a renamed
		// one keeps it, under a path that is no longer its own.
		_ = w.fsw.Remove(p)
		w.emit(Event{Rel: relTo(w.mnt, p), Created: false})
	}
}

// failed handles an error of inotify: lost events make the watcher rescan,
// so that what it watches and has reported is the tree again.
func (w *Watcher) failed(err error) {
	if errors.Is(err, fsnotify.ErrEventOverflow) {
		w.rescan()
		err = ErrLost
	}
	w.report(err)
}

// rescan reports the cgroups made and removed while events were lost.
func (w *Watcher) rescan() {
	rels, err := Walk(w.mnt)
	if err != nil {
		w.report(err)
		return
	}
	there := map[string]bool{}
	for _, rel := range rels {
		abs := filepath.Join(w.mnt, rel)
		there[abs] = true
		w.created(abs)
	}
	for abs := range w.known {
		if _, err := os.Lstat(abs); !there[abs] && err != nil {
			w.removed(abs)
		}
	}
}

// below says whether abs is a cgroup under the mount, not the root itself.
func (w *Watcher) below(abs string) bool {
	rel := relTo(w.mnt, abs)
	return rel != "." && rel != ".." && !strings.HasPrefix(rel, "../")
}

func (w *Watcher) add(abs string) error {
	if err := w.fsw.Add(abs); err != nil {
		return fmt.Errorf("watch cgroup %s: %w%s", abs, err, limitHint(err))
	}
	return nil
}

// limitHint says which limit to raise when inotify runs out of room.
func limitHint(err error) string {
	switch {
	case errors.Is(err, unix.ENOSPC):
		return ": raise the sysctl fs.inotify.max_user_watches (one watch per cgroup)"
	case errors.Is(err, unix.EMFILE):
		return ": raise the sysctl fs.inotify.max_user_instances"
	}
	return ""
}

// gone says whether an error means the cgroup is no longer there.
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR)
}

func (w *Watcher) emit(ev Event) {
	select {
	case w.events <- ev:
	case <-w.done:
	}
}

func (w *Watcher) report(err error) {
	select {
	case w.errors <- err:
	case <-w.done:
	}
}
