package datapath

import (
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// WithoutMapBTF creates the maps without BTF for their keys and values, where
// the kernel does not need it. Only tools read it (bpftool prints typed
// values with it), and it costs a marshalled blob and a BPF_BTF_LOAD per map,
// inner maps included: some 3 ms of exec's start. For filters that live and
// die with one process (run, exec).
func WithoutMapBTF() Option { return func(o *options) { o.noMapBTF = true } }

// stripMapBTF drops the key and value types of the maps that work without
// them.
func stripMapBTF(spec *ebpf.CollectionSpec) {
	for _, m := range spec.Maps {
		for ms := m; ms != nil; ms = ms.InnerMap {
			if plainMap(ms) {
				ms.Key, ms.Value = nil, nil
			}
			if ms.InnerMap == ms {
				break
			}
		}
	}
}

// plainMap says whether a map works without BTF: a type that never needs it,
// holding no special field (a spin lock, a timer, a kptr...), which the kernel
// finds through BTF.
func plainMap(ms *ebpf.MapSpec) bool {
	switch ms.Type {
	case ebpf.Hash, ebpf.Array, ebpf.PerCPUHash, ebpf.PerCPUArray, ebpf.LRUHash, ebpf.LRUCPUHash,
		ebpf.LPMTrie, ebpf.RingBuf, ebpf.ArrayOfMaps, ebpf.HashOfMaps:
		return !specialField(ms.Value, 0)
	}
	return false
}

// specialField says whether t holds a field that the kernel looks for in BTF:
// a struct bpf_* (spin lock, timer, list head...) or a tagged pointer (kptr).
// It errs on the side of yes.
func specialField(t btf.Type, depth int) bool {
	if depth > 32 {
		return true
	}
	if p, ok := t.(*btf.Pointer); ok {
		_, tagged := p.Target.(*btf.TypeTag)
		return tagged
	}
	switch t := btf.UnderlyingType(t).(type) {
	case *btf.Struct:
		return strings.HasPrefix(t.Name, "bpf_") || membersSpecial(t.Members, depth)
	case *btf.Union:
		return strings.HasPrefix(t.Name, "bpf_") || membersSpecial(t.Members, depth)
	case *btf.Array:
		return specialField(t.Type, depth+1)
	case *btf.Pointer:
		return specialField(t, depth+1)
	}
	return false
}

func membersSpecial(members []btf.Member, depth int) bool {
	for _, m := range members {
		if specialField(m.Type, depth+1) {
			return true
		}
	}
	return false
}
