// Package testutil holds the fixtures that cgwall's privileged tests share.
package testutil

import (
	"fmt"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"

	"github.com/cgwall/cgwall/internal/cgroup"
)

// RequireBPF stops a test that needs root and cgroup BPF programs when they are
// missing: it skips on a developer's machine and fails in CI (CI=true), where a
// skip would hide that nothing was tested.
func RequireBPF(tb testing.TB) {
	tb.Helper()
	if reason := missingBPF(); reason != "" {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("CI=true and %s", reason)
		}
		tb.Skip(reason)
	}
}

func missingBPF() string {
	if os.Geteuid() != 0 {
		return "this test needs root"
	}
	if err := features.HaveProgramType(ebpf.CGroupSKB); err != nil {
		return fmt.Sprintf("cgroup_skb programs are unavailable: %v", err)
	}
	if _, err := cgroup.Mount(); err != nil {
		return err.Error()
	}
	return ""
}

// Cgroup creates an empty cgroup v2 directory for the test and removes it at the
// end, after killing any process still in it.
func Cgroup(tb testing.TB) cgroup.Dir {
	tb.Helper()
	mnt, err := cgroup.Mount()
	if err != nil {
		tb.Fatal(err)
	}
	path, err := os.MkdirTemp(mnt, "cgwall-test-")
	if err != nil {
		tb.Fatalf("create test cgroup: %v", err)
	}
	tb.Cleanup(func() { RemoveCgroup(tb, path) })
	dir, err := cgroup.Resolve(path)
	if err != nil {
		tb.Fatal(err)
	}
	return dir
}

// RemoveCgroup kills every process left in a cgroup and removes it and its
// children.
func RemoveCgroup(tb testing.TB, path string) {
	tb.Helper()
	if err := cgroup.Remove(path); err != nil {
		tb.Errorf("remove test cgroup: %v", err)
	}
}

// Attached counts the programs attached to the cgroup at path at one attach
// point.
func Attached(tb testing.TB, path string, typ ebpf.AttachType) int {
	tb.Helper()
	return len(AttachedIDs(tb, path, typ))
}

// AttachedIDs lists the programs attached to the cgroup at path at one attach
// point, to tell the same programs from others attached in their place.
func AttachedIDs(tb testing.TB, path string, typ ebpf.AttachType) []ebpf.ProgramID {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: typ})
	if err != nil {
		tb.Fatalf("query the programs attached to %s: %v", path, err)
	}
	ids := make([]ebpf.ProgramID, len(res.Programs))
	for i, p := range res.Programs {
		ids[i] = p.ID
	}
	return ids
}
