package datapath

import (
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/testutil"
)

// attached counts the programs attached to cg at one attach point.
func attached(t *testing.T, path string, typ ebpf.AttachType) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: typ})
	if err != nil {
		t.Fatal(err)
	}
	return len(res.Programs)
}

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
	o := &d.objs.corePrograms
	if o.CgwallIngress != nil || o.CgwallSockCreate != nil {
		t.Fatalf("an egress policy loaded ingress (%v) or sock_create (%v)", o.CgwallIngress, o.CgwallSockCreate)
	}
	for _, p := range []*ebpf.Program{o.CgwallEgress, o.CgwallConnect4, o.CgwallConnect6, o.CgwallSendmsg4, o.CgwallSendmsg6} {
		if p == nil {
			t.Fatal("a program of the policy's hooks was not loaded")
		}
	}
	if got := run(t, o.CgwallEgress, packet(local4, netip.MustParseAddr("198.51.100.7"))); got != policy.Block {
		t.Fatalf("egress verdict %v for a blocked address", got)
	}

	cg := testutil.Cgroup(t)
	if a, err := d.Attach(cg, HookEgress, HookIngress); err == nil {
		a.Close()
		t.Fatal("attached the ingress hook, which was not loaded")
	}
	if n := attached(t, cg.Path, ebpf.AttachCGroupInetEgress); n != 0 {
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
		ebpf.AttachCGroupUDP6Sendmsg:    1,
		ebpf.AttachCGroupInetIngress:    0,
		ebpf.AttachCGroupInetSockCreate: 0,
	} {
		if n := attached(t, cg.Path, typ); n != want {
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
	o := &d.objs.corePrograms
	if o.CgwallSockCreate == nil {
		t.Fatal("a policy that denies raw sockets did not load sock_create")
	}
	if o.CgwallIngress != nil {
		t.Fatal("a policy without ingress rules loaded ingress")
	}
}
