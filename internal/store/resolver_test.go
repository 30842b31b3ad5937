package store

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/testutil"
)

func naming(t *testing.T, rules ...string) *policy.Policy {
	t.Helper()
	p := policy.New()
	for _, r := range rules {
		if err := p.Add(policy.Egress, policy.Allow, r); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// TestNameRules puts policies with name rules in force: refused without a
// resolver, leaving nothing; loaded with name code where there is one;
// replaced in place while the resolver is the same, and rebuilt over a
// policy loaded without name code or for another resolver.
func TestNameRules(t *testing.T) {
	root := testRoot(t)
	cg := testutil.Cgroup(t)
	s := open(t, root)
	if _, err := s.Create(cg, naming(t, "a.test:443")); !errors.Is(err, ErrNoResolver) {
		t.Fatalf("Create of name rules without a resolver: %v", err)
	}
	if s.Exists(cg.ID) || len(leftovers(t, root)) != 0 || egressPrograms(t, cg) != 0 {
		t.Fatal("a refused Create left something behind")
	}
	if _, err := s.Create(cg, blocking(t, "192.0.2.1")); err != nil {
		t.Fatal(err)
	}
	r := Resolver{V4: netip.MustParseAddrPort("127.0.0.1:5399"), V6: netip.MustParseAddrPort("[::1]:5399")}
	a, err := s.Replace(cg, naming(t, "a.test:443"), WithResolver(r))
	if err != nil || !a.Rebuilt || a.Why != "for name rules" {
		t.Fatalf("name rules over a policy without their code: %+v, %v", a, err)
	}
	if got, ok, err := s.HasNames(cg.ID); err != nil || !ok || got != r {
		t.Fatalf("the resolver record: %+v %v %v", got, ok, err)
	}
	d, err := s.Open(cg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n := d.Policy().Names; len(n) != 2 || n[0].Name != "a.test" {
		t.Errorf("the opened policy's name rules: %v", n)
	}
	d.Close()
	if a, err := s.Replace(cg, naming(t, "b.test"), WithResolver(r)); err != nil || a.Rebuilt {
		t.Fatalf("name rules with the same resolver: %+v, %v; want a replacement in place", a, err)
	}
	other := Resolver{V4: netip.MustParseAddrPort("127.0.0.1:5400"), V6: r.V6}
	if a, err := s.Replace(cg, naming(t, "b.test"), WithResolver(other)); err != nil || !a.Rebuilt {
		t.Fatalf("name rules for another resolver: %+v, %v; want a rebuild", a, err)
	}
	if egressPrograms(t, cg) != 1 || len(leftovers(t, root)) != 0 {
		t.Fatalf("after the rebuilds: %d egress programs, leftovers %v", egressPrograms(t, cg), leftovers(t, root))
	}
}

// TestAgentRecord records the agent in the store and removes it.
func TestAgentRecord(t *testing.T) {
	s := open(t, testRoot(t))
	if _, ok, err := s.Agent(); ok || err != nil {
		t.Fatalf("a new store has an agent: %v %v", ok, err)
	}
	want := Agent{PID: 42, Resolver: Resolver{V4: netip.MustParseAddrPort("127.0.0.1:5399"), V6: netip.MustParseAddrPort("[::1]:5399")}}
	if err := s.SetAgent(&want); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := s.Agent(); !ok || err != nil || got != want {
		t.Fatalf("agent %+v %v %v", got, ok, err)
	}
	if ids, err := s.List(); err != nil || len(ids) != 0 {
		t.Fatalf("the agent record is listed as a policy: %v %v", ids, err)
	}
	if err := s.SetAgent(nil); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Agent(); ok {
		t.Fatal("the agent record is still there")
	}
}
