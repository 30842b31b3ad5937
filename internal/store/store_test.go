package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/testutil"
)

// testRoot returns a store folder of the test's own on the host's bpffs.
func testRoot(t *testing.T) string {
	t.Helper()
	testutil.RequireBPF(t)
	if err := mountBPFFS(); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(BPFFS, fmt.Sprintf("cgwall-test-%d", os.Getpid()))
	t.Cleanup(func() {
		entries, _ := os.ReadDir(root)
		for _, e := range entries {
			remove(filepath.Join(root, e.Name()))
		}
		os.Remove(root)
	})
	return root
}

func open(t *testing.T, root string) *Store {
	t.Helper()
	s, err := OpenAt(context.Background(), root, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func blocking(t *testing.T, addrs ...string) *policy.Policy {
	t.Helper()
	p := policy.New()
	for _, a := range addrs {
		if err := p.Add(policy.Egress, policy.Block, a); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// egressPrograms counts the programs attached at cg's egress.
func egressPrograms(t *testing.T, cg cgroup.Dir) int {
	t.Helper()
	return testutil.Attached(t, cg.Path, ebpf.AttachCGroupInetEgress)
}

// inForce returns the prefixes of the cgroup's persistent policy and whether
// it is live.
func inForce(t *testing.T, s *Store, cg cgroup.Dir) ([]string, bool) {
	t.Helper()
	d, err := s.Open(cg.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var out []string
	for _, r := range d.Policy().Rules {
		out = append(out, r.Prefix.String())
	}
	return out, d.Live()
}

// leftovers lists the folders of interrupted transactions.
func leftovers(t *testing.T, root string) []string {
	t.Helper()
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), stagingPrefix) || strings.HasPrefix(e.Name(), retiredPrefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestCreateReplaceRemove(t *testing.T) {
	root := testRoot(t)
	cg := testutil.Cgroup(t)
	s := open(t, root)
	if _, err := s.Create(cg, blocking(t, "192.0.2.1")); err != nil {
		t.Fatal(err)
	}
	if got, live := inForce(t, s, cg); !live || len(got) != 1 || got[0] != "192.0.2.1/32" {
		t.Fatalf("after Create: %v, live %v", got, live)
	}
	links, err := s.Links(cg.ID)
	want := []datapath.Hook{datapath.HookEgress, datapath.HookConnect, datapath.HookSendmsg}
	if err != nil || !slices.Equal(links.Hooks, want) {
		t.Fatalf("links %+v, %v: want %v, an egress policy's", links, err, want)
	}
	if n := testutil.Attached(t, cg.Path, ebpf.AttachCGroupInetIngress); n != 0 {
		t.Fatalf("an egress policy attached %d ingress programs", n)
	}
	// A replacement that judges ingress attaches the ingress hook.
	next := blocking(t, "198.51.100.0/24", "203.0.113.9")
	if err := next.Add(policy.Ingress, policy.Block, "192.0.2.9"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Replace(cg, next); err != nil {
		t.Fatal(err)
	}
	if n := testutil.Attached(t, cg.Path, ebpf.AttachCGroupInetIngress); n != 1 {
		t.Fatalf("%d ingress programs after a replacement with ingress rules, want 1", n)
	}
	if got, _ := inForce(t, s, cg); len(got) != 3 {
		t.Fatalf("after Replace: %v", got)
	}
	if n := egressPrograms(t, cg); n != 1 {
		t.Fatalf("%d egress programs after Replace, want 1", n)
	}
	if ids, err := s.List(); err != nil || len(ids) != 1 || ids[0] != cg.ID {
		t.Fatalf("List: %v, %v", ids, err)
	}
	if err := s.Remove(cg.ID); err != nil {
		t.Fatal(err)
	}
	if s.Exists(cg.ID) || egressPrograms(t, cg) != 0 {
		t.Fatalf("Remove left the folder (%v) or %d programs", s.Exists(cg.ID), egressPrograms(t, cg))
	}
	if err := s.Remove(cg.ID); err != nil {
		t.Fatalf("removing a policy that is gone: %v", err)
	}
}

// crash makes the next transaction stop at step as if killed there.
func crash(t *testing.T, step string) {
	crashAt = step
	t.Cleanup(func() { crashAt = "" })
}

// TestCreateKilled kills Create at each step and checks what the next
// opener of the store finds: nothing before the rename, an inert policy
// after it.
func TestCreateKilled(t *testing.T) {
	root := testRoot(t)
	for _, step := range []string{"staged", "renamed"} {
		t.Run(step, func(t *testing.T) {
			cg := testutil.Cgroup(t)
			s := open(t, root)
			crash(t, step)
			if _, err := s.Create(cg, blocking(t, "192.0.2.1")); !errors.Is(err, errCrashed) {
				t.Fatalf("Create: %v", err)
			}
			s.Close()
			crashAt = ""

			s = open(t, root)
			if l := leftovers(t, root); len(l) != 0 {
				t.Fatalf("left %v", l)
			}
			switch step {
			case "staged":
				if s.Exists(cg.ID) || egressPrograms(t, cg) != 0 {
					t.Fatalf("a Create killed before its rename left a policy (%v) or %d programs", s.Exists(cg.ID), egressPrograms(t, cg))
				}
			case "renamed":
				if _, live := inForce(t, s, cg); live {
					t.Fatal("a Create killed before its commit left a policy in force")
				}
				if _, err := s.Replace(cg, blocking(t, "192.0.2.2")); err != nil {
					t.Fatal(err)
				}
				if _, live := inForce(t, s, cg); !live {
					t.Fatal("Replace did not put the interrupted policy in force")
				}
				s.Remove(cg.ID)
			}
		})
	}
}

// oldLayout turns a cgroup's policy folder into one made before layouts had
// versions, as cgwall at 7ccd3ad made them.
func oldLayout(t *testing.T, s *Store, cg cgroup.Dir) {
	t.Helper()
	if err := os.Remove(filepath.Join(s.Dir(cg.ID), layoutPin)); err != nil {
		t.Fatal(err)
	}
}

func TestOldLayoutIsRefused(t *testing.T) {
	root := testRoot(t)
	cg := testutil.Cgroup(t)
	s := open(t, root)
	if _, err := s.Create(cg, blocking(t, "192.0.2.1")); err != nil {
		t.Fatal(err)
	}
	oldLayout(t, s, cg)
	_, err := s.Open(cg.ID)
	if !errors.Is(err, ErrLayout) {
		t.Fatalf("Open of an old layout: %v", err)
	}
	for _, want := range []string{"before versions", fmt.Sprintf("layout %d", Layout), "attach the policy again"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q does not say %q", err, want)
		}
	}
}

// TestRebuildKilled replaces a policy of an old layout, killed at each step
// of the rebuild, and checks that the next opener finds exactly one whole
// policy attached: the old one if the rebuild died before it retired it, the
// new one after.
func TestRebuildKilled(t *testing.T) {
	root := testRoot(t)
	for _, tc := range []struct {
		step string
		want string // the prefix in force afterwards
	}{
		{"committed", "192.0.2.1/32"},
		{"retired", "198.51.100.7/32"},
		{"promoted", "198.51.100.7/32"},
		{"", "198.51.100.7/32"}, // not killed
	} {
		t.Run("at "+tc.step, func(t *testing.T) {
			cg := testutil.Cgroup(t)
			s := open(t, root)
			if _, err := s.Create(cg, blocking(t, "192.0.2.1")); err != nil {
				t.Fatal(err)
			}
			oldLayout(t, s, cg)
			crash(t, tc.step)
			a, err := s.Replace(cg, blocking(t, "198.51.100.7"))
			if tc.step != "" && !errors.Is(err, errCrashed) || tc.step == "" && (err != nil || !a.Rebuilt) {
				t.Fatalf("Replace: %+v, %v", a, err)
			}
			s.Close()
			crashAt = ""

			s = open(t, root)
			defer s.Remove(cg.ID)
			if l := leftovers(t, root); len(l) != 0 {
				t.Fatalf("left %v", l)
			}
			if n := egressPrograms(t, cg); n != 1 {
				t.Fatalf("%d egress programs attached, want the one of one policy", n)
			}
			if tc.want == "192.0.2.1/32" {
				if _, err := s.Open(cg.ID); !errors.Is(err, ErrLayout) {
					t.Fatalf("the old policy is not the one in place: %v", err)
				}
				return
			}
			if got, live := inForce(t, s, cg); !live || len(got) != 1 || got[0] != tc.want {
				t.Fatalf("in force: %v (live %v), want %s", got, live, tc.want)
			}
		})
	}
}

func TestRootNotMadeByCgwall(t *testing.T) {
	root := testRoot(t)
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := OpenAt(context.Background(), root, nil)
	if err == nil || !strings.Contains(err.Error(), "refusing to use") {
		t.Fatalf("OpenAt of a folder with mode 0755: %v", err)
	}
}

// openTimeout bounds a wait for the lock in these tests: a deadline for a
// failure report, not a guess at how long anything takes.
const openTimeout = 15 * time.Second

// openAsync opens the store at root in a goroutine, calling waiting if it
// has to wait for the lock.
func openAsync(ctx context.Context, root string, waiting func()) <-chan error {
	result := make(chan error, 1)
	go func() {
		s, err := OpenAt(ctx, root, waiting)
		if s != nil {
			s.Close()
		}
		result <- err
	}()
	return result
}

func within(t *testing.T, result <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-result:
		return err
	case <-time.After(openTimeout):
		t.Fatalf("%s: still waiting after %v", what, openTimeout)
		return nil
	}
}

// TestOpenGivesUp checks that a command waiting for the lock gives up when
// its context is done, says why, and does not take the lock afterwards: once
// the holder lets go, the store opens at once.
func TestOpenGivesUp(t *testing.T) {
	root := testRoot(t)
	holder := open(t, root)
	ctx, cancel := context.WithCancelCause(context.Background())
	waiting := make(chan struct{})
	result := openAsync(ctx, root, func() { close(waiting) })
	select {
	case <-waiting:
	case err := <-result:
		t.Fatalf("OpenAt did not wait for the lock: %v", err)
	case <-time.After(openTimeout):
		t.Fatalf("OpenAt did not say that it waits after %v", openTimeout)
	}
	cancel(fmt.Errorf("interrupt signal received: %w", context.Canceled))
	err := within(t, result, "OpenAt after its context was cancelled")
	if want := "gave up waiting for the lock on " + root + ": interrupt signal received"; err == nil || !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("OpenAt cancelled while waiting: %v; want %q", err, want)
	}
	// The abandoned wait gets the lock when the holder lets go, and lets go
	// of it at once.
	holder.Close()
	if err := within(t, openAsync(context.Background(), root, nil), "OpenAt after the holder let go"); err != nil {
		t.Fatal(err)
	}
}

// TestOpenDone checks that a context done before OpenAt makes it give up even
// where the lock is free, and that a free lock is taken without waiting.
func TestOpenDone(t *testing.T) {
	root := testRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := OpenAt(ctx, root, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("OpenAt with a done context: %v", err)
	}
	s, err := OpenAt(context.Background(), root, func() { t.Error("OpenAt waited for a free lock") })
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}
