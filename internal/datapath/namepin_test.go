package datapath

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cgwall/cgwall/internal/policy"
)

// pinDir is a folder of the test's own on the host's bpffs.
func pinDir(t *testing.T) string {
	t.Helper()
	name := strings.ReplaceAll(t.Name(), "/", "-") // a subtest's
	dir := filepath.Join("/sys/fs/bpf", fmt.Sprintf("cgwall-dp-test-%d-%s", os.Getpid(), name))
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// pinAndOpen pins d in a new folder and opens it there, as another cgwall
// process would; it returns the opened datapath and the folder.
func pinAndOpen(t *testing.T, d *Datapath) (*Datapath, string) {
	t.Helper()
	dir := pinDir(t)
	if err := d.Pin(dir); err != nil {
		t.Fatal(err)
	}
	o, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o, dir
}

// ruleStrings lists rules with their IDs, sorted.
func ruleStrings(rules []policy.Rule) []string {
	var out []string
	for _, r := range rules {
		out = append(out, fmt.Sprintf("%d %s", r.ID, r))
	}
	slices.Sort(out)
	return out
}

// TestPinnedNames pins a policy with name rules, opens it again and finds
// its name rules, learns an address through the opened policy, and replaces
// it: addresses of a pattern the new policy keeps follow its new rules,
// those of a pattern it drops go.
func TestPinnedNames(t *testing.T) {
	p := mustPolicy(t, policy.LogNone)
	p.Default[policy.Egress] = policy.Block
	for _, r := range []string{"a.test:udp/53", "b.test", "*.c.test"} {
		if err := p.Add(policy.Egress, policy.Allow, r); err != nil {
			t.Fatal(err)
		}
	}
	d := load(t, p, WithDNS(testResolver4, testResolver6, 0))
	o, dir := pinAndOpen(t, d)
	if got, want := ruleStrings(o.Policy().Names), ruleStrings(p.Names); !slices.Equal(got, want) {
		t.Fatalf("the opened policy's name rules: %v, want %v", got, want)
	}
	if r := o.Policy().Rules; len(r) != 0 {
		t.Fatalf("the opened policy has address rules %v: the name patterns' port rules read back as addresses", r)
	}
	a, b := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	if err := o.Learn([]netip.Addr{a}, "a.test"); err != nil {
		t.Fatal(err)
	}
	if err := o.Learn([]netip.Addr{b}, "b.test"); err != nil {
		t.Fatal(err)
	}
	prog := d.progs[cgwallProgCgwallEgress]
	if run(t, prog, packet(local4, a)) != policy.Allow || run(t, prog, packet(local4, b)) != policy.Allow {
		t.Fatal("addresses learned through the opened policy do not pass")
	}

	// The new policy keeps a.test, for another port only, and drops b.test.
	next := mustPolicy(t, policy.LogNone)
	next.Default[policy.Egress] = policy.Block
	for _, r := range []string{"a.test:udp/5353", "*.c.test", "0.d.test"} {
		if err := next.Add(policy.Egress, policy.Allow, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.Replace(next); err != nil {
		t.Fatal(err)
	}
	if run(t, prog, packet(local4, a)) != policy.Block {
		t.Error("an address of a.test still passes to port 53, which the new policy no longer allows")
	}
	if run(t, prog, ipv4(local4, a, policy.ProtoUDP, l4(40000, 5353))) != policy.Allow {
		t.Error("an address of a.test does not pass to port 5353, which the new policy allows")
	}
	if run(t, prog, packet(local4, b)) != policy.Block {
		t.Error("an address of b.test, which the new policy drops, still passes")
	}
	var v cgwallLearned
	if err := o.objs.Learned4.Lookup(b.As4(), &v); err == nil {
		t.Error("b.test's address is still learned")
	}
	again, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if got, want := ruleStrings(again.Policy().Names), ruleStrings(next.Names); !slices.Equal(got, want) {
		t.Fatalf("after the replacement the record has %v, want %v", got, want)
	}
}
