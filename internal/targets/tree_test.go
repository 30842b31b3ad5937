package targets

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/cgwall/cgwall/internal/cgroup"
)

// eventTimeout bounds the wait for one event: generous, as a loaded CI host
// may be slow, and reached only when an event is missing.
const eventTimeout = 10 * time.Second

// scratchCgroup makes an empty cgroup directly under the cgroup2 mount,
// named for the test and this process, and removes it and what is in it at
// the end. It returns the mount and the cgroup's name relative to it.
func scratchCgroup(t *testing.T, what string) (mnt, rel string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and this test needs root")
		}
		t.Skip("this test needs root")
	}
	mnt, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	rel = fmt.Sprintf("cgwall-targets-test-%d-%s", os.Getpid(), what)
	dir := filepath.Join(mnt, rel)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create a scratch cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := cgroup.Remove(dir); err != nil {
			t.Errorf("remove the scratch cgroup: %v", err)
		}
	})
	return mnt, rel
}

// mkdirs makes each path under root, parents as needed, in one go each.
func mkdirs(t *testing.T, root string, rels ...string) {
	t.Helper()
	for _, rel := range rels {
		if err := os.MkdirAll(filepath.Join(root, rel), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// tree is the directories of rels and every parent of them, under prefix.
func tree(prefix string, rels ...string) []string {
	var out []string
	for _, rel := range rels {
		for p := rel; p != "."; p = filepath.Dir(p) {
			if q := filepath.Join(prefix, p); !slices.Contains(out, q) {
				out = append(out, q)
			}
		}
	}
	slices.Sort(out)
	return out
}

// waitEvents waits for an event of kind created for each path in want, and
// fails on any other event under prefix, a second one for a path, or an
// error. Events for the rest of the tree, which the host changes as it
// pleases, are let by.
func waitEvents(t *testing.T, w *Watcher, prefix string, created bool, want []string) {
	t.Helper()
	missing := map[string]bool{}
	for _, p := range want {
		missing[p] = true
	}
	timer := time.NewTimer(eventTimeout)
	defer timer.Stop()
	for len(missing) > 0 {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				t.Fatal("Events closed")
			}
			if ev.Rel != prefix && !strings.HasPrefix(ev.Rel, prefix+"/") {
				continue
			}
			if ev.Created != created || !missing[ev.Rel] {
				t.Fatalf("unexpected %+v (waiting for Created=%v of %v)", ev, created, keys(missing))
			}
			delete(missing, ev.Rel)
		case err := <-w.Errors():
			t.Fatalf("watcher error: %v", err)
		case <-timer.C:
			t.Fatalf("no event with Created=%v within %v for %v", created, eventTimeout, keys(missing))
		}
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// removeAll removes the directories of paths under root, deepest first, as
// rmdir must take cgroups.
func removeAll(t *testing.T, root string, paths []string) {
	t.Helper()
	paths = slices.Clone(paths)
	slices.SortFunc(paths, func(a, b string) int { return strings.Compare(b, a) })
	for _, p := range paths {
		if err := os.Remove(filepath.Join(root, p)); err != nil {
			t.Fatal(err)
		}
	}
}

// busyTree is a tree that makes new directories faster than watches can be
// added: siblings, grandchildren and deep chains made by one MkdirAll each.
func busyTree() []string {
	rels := []string{"a", "b", "a/x", "a/y", "c/d/e/f/g"}
	for i := range 20 {
		rels = append(rels, fmt.Sprintf("n%02d/m/k", i), fmt.Sprintf("n%02d/l", i))
	}
	return rels
}

func TestWatchCgroups(t *testing.T) {
	mnt, scratch := scratchCgroup(t, "watch")
	testWatch(t, mnt, scratch)
}

// TestWatchDir runs the watcher on an ordinary folder, where it works as
// well, so that it is tested without root too.
func TestWatchDir(t *testing.T) {
	root := t.TempDir()
	mkdirs(t, root, "scratch")
	testWatch(t, root, "scratch")
}

func testWatch(t *testing.T, mnt, scratch string) {
	w, err := Watch(mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	rels := busyTree()
	mkdirs(t, filepath.Join(mnt, scratch), rels...)
	all := tree(scratch, rels...)
	waitEvents(t, w, scratch, true, all)

	removeAll(t, mnt, all)
	waitEvents(t, w, scratch, false, all)

	// A cgroup made again after its removal is new again.
	mkdirs(t, filepath.Join(mnt, scratch), "a")
	waitEvents(t, w, scratch, true, []string{scratch + "/a"})

	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for range w.Events() { // drains, then ends: Close closed it
	}
}

func TestWatchRename(t *testing.T) {
	root := t.TempDir()
	w, err := Watch(root)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	mkdirs(t, root, "s/old/child")
	waitEvents(t, w, "s", true, []string{"s", "s/old", "s/old/child"})
	if err := os.Rename(filepath.Join(root, "s/old"), filepath.Join(root, "s/new")); err != nil {
		t.Fatal(err)
	}
	waitEvents(t, w, "s/old", false, []string{"s/old", "s/old/child"})
	waitEvents(t, w, "s/new", true, []string{"s/new", "s/new/child"})
	// The moved child is watched under its new name.
	mkdirs(t, root, "s/new/child/grand")
	waitEvents(t, w, "s/new", true, []string{"s/new/child/grand"})
}

func TestWatchNoMount(t *testing.T) {
	_, err := Watch(filepath.Join(t.TempDir(), "none"))
	if err == nil || !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "watch the cgroups under ") {
		t.Fatalf("Watch of a missing folder = %v", err)
	}
}

func TestWalkCgroups(t *testing.T) {
	mnt, scratch := scratchCgroup(t, "walk")
	rels := busyTree()
	mkdirs(t, filepath.Join(mnt, scratch), rels...)
	got, err := Walk(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSorted(got) || slices.Contains(got, "") || slices.Contains(got, ".") {
		t.Errorf("Walk is not sorted, or holds the root: %q", got[:min(len(got), 10)])
	}
	var mine []string
	for _, rel := range got {
		if rel == scratch || strings.HasPrefix(rel, scratch+"/") {
			mine = append(mine, rel)
		}
	}
	if want := append([]string{scratch}, tree(scratch, rels...)...); !slices.Equal(mine, want) {
		t.Errorf("Walk gave under %s:\n%q\nwant\n%q", scratch, mine, want)
	}
	for _, rel := range mine {
		if strings.Contains(rel, "cgroup.procs") {
			t.Errorf("Walk lists a file: %s", rel)
		}
	}
}

func TestWalkMissing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "none")
	_, err := Walk(dir)
	if err == nil || !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "list the cgroups under "+dir+": ") {
		t.Fatalf("Walk of a missing folder = %v", err)
	}
}

// TestWatchLost makes the watcher miss a creation and a removal, as after an
// inotify queue overflow, and then tells it of the overflow: its rescan
// reports both, and ErrLost follows.
func TestWatchLost(t *testing.T) {
	root := t.TempDir()
	w, err := Watch(root)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	mkdirs(t, root, "s/keep", "s/gone")
	waitEvents(t, w, "s", true, []string{"s", "s/keep", "s/gone"})

	// Without watches on s and its children, nothing under s is seen.
	for _, p := range []string{"s", "s/keep", "s/gone"} {
		if err := w.fsw.Remove(filepath.Join(root, p)); err != nil {
			t.Fatal(err)
		}
	}
	mkdirs(t, root, "s/keep/new")
	removeAll(t, root, []string{"s/gone"})
	w.fsw.Errors <- fsnotify.ErrEventOverflow

	// The two channels are not ordered with each other: ErrLost may come
	// before the rescan's events are read.
	want := map[Event]bool{{Rel: "s/keep/new", Created: true}: true, {Rel: "s/gone"}: true}
	lost := false
	timer := time.NewTimer(eventTimeout)
	defer timer.Stop()
	for len(want) > 0 || !lost {
		select {
		case ev := <-w.Events():
			if !want[ev] {
				t.Fatalf("unexpected %+v", ev)
			}
			delete(want, ev)
		case err := <-w.Errors():
			if !errors.Is(err, ErrLost) || lost {
				t.Fatalf("error after the overflow = %v; want one ErrLost", err)
			}
			lost = true
		case <-timer.C:
			t.Fatalf("after the overflow, within %v: ErrLost %v, missing %v", eventTimeout, lost, want)
		}
	}
}
