package datapath

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/ruleset"
	"github.com/cgwall/cgwall/internal/testutil"
)

func TestWithHooksLoadsAndAttachesOnlyThose(t *testing.T) {
	testutil.RequireBPF(t)
	p := mustPolicy(t, policy.LogNone, "block", "198.51.100.7")
	hooks := HooksFor(p)
	d, err := Load(p, WithHooks(hooks...))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	for _, prog := range programsOf(Hooks) {
		if want := slices.Contains(hooks, hookOfProgram(prog.name)); (d.progs[prog.name] != nil) != want {
			t.Errorf("program %s loaded: %v, want %v", prog.name, d.progs[prog.name] != nil, want)
		}
	}
	if got := run(t, d.progs[cgwallProgCgwallEgress], packet(local4, netip.MustParseAddr("198.51.100.7"))); got != policy.Block {
		t.Fatalf("egress verdict %v for a blocked address", got)
	}

	cg := testutil.Cgroup(t)
	if a, err := d.Attach(cg, HookEgress, HookIngress); err == nil {
		a.Close()
		t.Fatal("attached the ingress hook, which was not loaded")
	}
	if n := testutil.Attached(t, cg.Path, ebpf.AttachCGroupInetEgress); n != 0 {
		t.Fatalf("a failed Attach left %d egress programs attached", n)
	}
	a, err := d.Attach(cg, hooks...)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	for typ, want := range map[ebpf.AttachType]int{
		ebpf.AttachCGroupInetEgress:     1,
		ebpf.AttachCGroupInet4Connect:   1,
		ebpf.AttachCGroupUDP6Sendmsg:    0, // judges nothing, and logs nothing under --log none
		ebpf.AttachCGroupUDP6Recvmsg:    0, // only for name rules
		ebpf.AttachCGroupInetIngress:    0,
		ebpf.AttachCGroupInetSockCreate: 0,
	} {
		if n := testutil.Attached(t, cg.Path, typ); n != want {
			t.Errorf("%d programs attached at %v, want %d", n, typ, want)
		}
	}
}

func TestWithHooksDenyRawLoadsSockCreate(t *testing.T) {
	testutil.RequireBPF(t)
	p := mustPolicy(t, policy.LogNone)
	p.DenyRaw = true
	d, err := Load(p, WithHooks(HooksFor(p)...))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.progs[cgwallProgCgwallSockCreate] == nil {
		t.Fatal("a policy that denies raw sockets did not load sock_create")
	}
	if d.progs[cgwallProgCgwallIngress] != nil {
		t.Fatal("a policy without ingress rules loaded ingress")
	}
}

// hookOfProgram returns the hook that runs a program.
func hookOfProgram(name string) Hook {
	for _, h := range hookTable {
		for _, p := range h.progs {
			if p.name == name {
				return h.hook
			}
		}
	}
	panic("no hook runs " + name)
}

// TestHookTable checks that the table's order is the C enum's, which the
// events and the stats map carry, and that every program of the object has
// exactly one row.
func TestHookTable(t *testing.T) {
	if len(hookTable) != int(cgwallHookHOOK_MAX) {
		t.Fatalf("%d hooks in the table, %d in the C enum", len(hookTable), cgwallHookHOOK_MAX)
	}
	for i, h := range hookTable {
		if h.hook != Hook(i) {
			t.Errorf("row %d is hook %d (%s)", i, h.hook, h.name)
		}
	}
	spec, err := loadCgwall()
	if err != nil {
		t.Fatal(err)
	}
	for name := range spec.Programs {
		hookOfProgram(name)
	}
	if n := len(programsOf(Hooks)); n != len(spec.Programs) {
		t.Errorf("the table has %d programs, the object %d", n, len(spec.Programs))
	}
}

// TestFixedLoadWritesNoSlot counts the map-in-map writes of loads: each
// waits for an RCU grace period, 1 to 16 ms depending on the host. A Fixed
// load (run, exec) makes none; a load with generations makes one per kind
// of rule map that the policy has rules for (here IPv4 hosts and IPv6
// prefixes) and one per bitmap (here egress's IPv4 and IPv6 ones), side
// by side.
func TestFixedLoadWritesNoSlot(t *testing.T) {
	testutil.RequireBPF(t)
	p := mustPolicy(t, policy.LogNone, "block", "198.51.100.7", "block", "2001:db8::/32")
	for _, tc := range []struct {
		name string
		opts []Option
		want int64
	}{
		{"fixed", []Option{Fixed()}, 0},
		{"generations", nil, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := slotWrites.Load()
			d, err := Load(p.Clone(), tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if n := slotWrites.Load() - before; n != tc.want {
				t.Errorf("%d map-in-map writes, want %d", n, tc.want)
			}
		})
	}
}

// TestOneGracePeriodPerLoad counts the rounds of map-in-map writes that a
// load and a replacement wait for one after the other, a grace period each:
// one, since the generation a replacement takes the place of stays in its
// slots until the next replacement overwrites it; two where that generation
// is as large as keptRules, which is cleared at once.
func TestOneGracePeriodPerLoad(t *testing.T) {
	testutil.RequireBPF(t)
	policies := [2]*policy.Policy{
		mustPolicy(t, policy.LogNone, "block", "198.51.100.7", "block", "2001:db8::/32"),
		mustPolicy(t, policy.LogNone, "block", "192.0.2.0/24", "allow", "192.0.2.1:tcp/443"),
	}
	rounds := func(what string, want int64, f func() error) {
		t.Helper()
		before := slotRounds.Load()
		if err := f(); err != nil {
			t.Fatal(err)
		}
		if n := slotRounds.Load() - before; n != want {
			t.Errorf("%s: %d rounds of slot writes, want %d", what, n, want)
		}
	}
	var d *Datapath
	rounds("load", 1, func() (err error) { d, err = Load(policies[0].Clone()); return err })
	defer d.Close()
	for i := range 4 {
		rounds(fmt.Sprintf("replacement %d", i+1), 1, func() error { return d.Replace(policies[(i+1)%2].Clone()) })
	}
	if got := d.Policy().Rules; len(got) != len(policies[0].Rules) {
		t.Fatalf("after four replacements, the policy in force has %d rules", len(got))
	}
	defer func(k int) { keptRules = k }(keptRules)
	keptRules = len(policies[0].Rules)
	rounds("replacement of a policy of keptRules", 2, func() error { return d.Replace(policies[1].Clone()) })
}

// TestHooksFor: sendmsg only where it names senders or carries DNS, recvmsg
// only for name rules.
func TestHooksFor(t *testing.T) {
	names := mustPolicy(t, policy.LogNone)
	if err := names.Add(policy.Egress, policy.Allow, "a.test"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		p    *policy.Policy
		want []Hook
	}{
		{"log none", mustPolicy(t, policy.LogNone, "block", "192.0.2.1"), []Hook{HookEgress, HookConnect}},
		{"log drop", mustPolicy(t, policy.LogDrop, "block", "192.0.2.1"), []Hook{HookEgress, HookConnect, HookSendmsg}},
		{"names", names, []Hook{HookEgress, HookConnect, HookSendmsg, HookRecvmsg}},
	} {
		if got := HooksFor(tc.p); !slices.Equal(got, tc.want) {
			t.Errorf("%s: HooksFor = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestSmallPolicyMemory holds the maps of a 100-rule policy to under 1 MiB
// of kernel memory (memlock), fixed (run, exec) and persistent alike (issue
// #18). It failed at 2.7 MiB when the name code's origins map (an LRU map,
// allocated whole) had 16,384 entries whatever the policy.
func TestSmallPolicyMemory(t *testing.T) {
	for _, fixed := range []bool{true, false} {
		p := policy.New()
		p.Log = policy.LogNone
		for _, prefix := range ruleset.Mixed4(100).Prefixes {
			if err := p.AddPrefix(policy.Egress, policy.Block, prefix); err != nil {
				t.Fatal(err)
			}
		}
		var opts []Option
		if fixed {
			opts = append(opts, Fixed())
		}
		d := load(t, p, opts...)
		maps := mapsByName(&d.objs) // a fixed datapath's are the rule maps
		for _, m := range d.maps.all() {
			if fixed {
				break
			}
			if inner, err := d.innerMap(m.outer); err == nil {
				defer inner.Close()
				maps["inner "+m.name()] = inner
			}
		}
		var total uint64
		for name, m := range maps {
			info, err := m.Info()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			n, _ := info.Memlock() // none reported: nothing allocated
			total += n
		}
		t.Logf("fixed=%v: %.2f MiB", fixed, float64(total)/(1<<20))
		if total >= 1<<20 {
			t.Errorf("fixed=%v: the maps of a 100-rule policy take %.2f MiB of kernel memory, want under 1 MiB", fixed, float64(total)/(1<<20))
		}
	}
}
