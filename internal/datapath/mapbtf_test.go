package datapath

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/testutil"
)

func TestStripMapBTFKeepsSpecialFields(t *testing.T) {
	u32 := &btf.Int{Name: "u32", Size: 4}
	lock := &btf.Struct{Name: "bpf_spin_lock", Size: 4, Members: []btf.Member{{Name: "val", Type: u32}}}
	withLock := &btf.Struct{Name: "v", Size: 8, Members: []btf.Member{{Name: "n", Type: u32}, {Name: "l", Type: lock, Offset: 32}}}
	kptr := &btf.Struct{Name: "k", Size: 8, Members: []btf.Member{{Name: "p", Type: &btf.Pointer{Target: &btf.TypeTag{Value: "kptr", Type: u32}}}}}
	plain := &btf.Struct{Name: "p", Size: 8, Members: []btf.Member{{Name: "a", Type: &btf.Array{Type: u32, Nelems: 2}}}}
	spec := &ebpf.CollectionSpec{Maps: map[string]*ebpf.MapSpec{
		"plain":   {Type: ebpf.Hash, Key: u32, Value: plain},
		"lock":    {Type: ebpf.Array, Key: u32, Value: withLock},
		"kptr":    {Type: ebpf.Hash, Key: u32, Value: kptr},
		"storage": {Type: ebpf.SkStorage, Key: u32, Value: u32},
		"outer":   {Type: ebpf.ArrayOfMaps, Key: u32, Value: u32, InnerMap: &ebpf.MapSpec{Type: ebpf.LPMTrie, Key: u32, Value: plain}},
	}}
	stripMapBTF(spec)
	for name, stripped := range map[string]bool{"plain": true, "lock": false, "kptr": false, "storage": false, "outer": true} {
		if got := spec.Maps[name].Value == nil; got != stripped {
			t.Errorf("map %s: BTF stripped %v, want %v", name, got, stripped)
		}
	}
	if spec.Maps["outer"].InnerMap.Value != nil {
		t.Error("the inner map of outer kept its BTF")
	}
}

func TestWithoutMapBTF(t *testing.T) {
	testutil.RequireBPF(t)
	p := mustPolicy(t, policy.LogNone, "block", "198.51.100.7")
	d, err := Load(p, WithoutMapBTF())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	for _, rm := range d.maps.withRules() {
		inner, err := d.innerMap(rm.outer)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			continue // the policy has no rule of the kind
		}
		if err != nil {
			t.Fatal(err)
		}
		defer inner.Close()
		for _, m := range []*ebpf.Map{rm.outer, inner} {
			info, err := m.Info()
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := info.BTFID(); ok {
				t.Errorf("map %s has BTF", rm.name())
			}
		}
	}
	if got := run(t, d.progs[cgwallProgCgwallEgress], packet(local4, netip.MustParseAddr("198.51.100.7"))); got != policy.Block {
		t.Fatalf("egress verdict %v for a blocked address", got)
	}
}
