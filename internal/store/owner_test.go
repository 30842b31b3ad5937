package store

import (
	"github.com/cgwall/cgwall/internal/testutil"
	"testing"
)

// TestOwner follows a policy's owner record through the transactions: the
// agent's Create records it, a replacement by hand (no Owned) drops it, the
// agent's replacement writes it back, and a rebuild from an old layout
// carries it into the new folder.
func TestOwner(t *testing.T) {
	root := testRoot(t)
	cg := testutil.Cgroup(t)
	s := open(t, root)
	agent := Owner{Agent: true, File: "/etc/cgwall/policies/ci.yaml", SHA256: "ab12"}
	owner := func(want *Owner) {
		t.Helper()
		got, ok, err := s.Owner(cg.ID)
		switch {
		case err != nil:
			t.Fatal(err)
		case want == nil && ok:
			t.Fatalf("owner %+v, want none", got)
		case want != nil && (!ok || got != *want):
			t.Fatalf("owner %+v (recorded %v), want %+v", got, ok, *want)
		}
	}
	if _, err := s.Create(cg, blocking(t, "192.0.2.1"), Owned(agent)); err != nil {
		t.Fatal(err)
	}
	owner(&agent)
	if _, err := s.Replace(cg, blocking(t, "192.0.2.2")); err != nil {
		t.Fatal(err)
	}
	owner(nil)
	next := Owner{Agent: true, File: agent.File, SHA256: "cd34"}
	if _, err := s.Replace(cg, blocking(t, "192.0.2.3"), Owned(next)); err != nil {
		t.Fatal(err)
	}
	owner(&next)
	oldLayout(t, s, cg)
	a, err := s.Replace(cg, blocking(t, "192.0.2.4"), Owned(agent))
	if err != nil || !a.Rebuilt {
		t.Fatalf("replacing an old layout: %+v, %v", a, err)
	}
	owner(&agent)
	if got, _ := inForce(t, s, cg); len(got) != 1 || got[0] != "192.0.2.4/32" {
		t.Fatalf("after the rebuild: %v", got)
	}
}

// TestOwnerTooLong refuses a record that does not fit, before anything is
// attached.
func TestOwnerTooLong(t *testing.T) {
	root := testRoot(t)
	cg := testutil.Cgroup(t)
	s := open(t, root)
	long := Owner{Agent: true, File: "/" + string(make([]byte, recordSize))}
	if _, err := s.Create(cg, blocking(t, "192.0.2.1"), Owned(long)); err == nil {
		t.Fatal("Create with an owner record too long succeeded")
	}
	if s.Exists(cg.ID) || egressPrograms(t, cg) != 0 || len(leftovers(t, root)) != 0 {
		t.Fatalf("a refused Create left a folder (%v), %d programs or %v", s.Exists(cg.ID), egressPrograms(t, cg), leftovers(t, root))
	}
}
