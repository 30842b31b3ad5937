package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/cgwall/cgwall/internal/policy"
)

// Fixed loads the filter for a policy that never changes (run, exec): the
// object built with CGWALL_FIXED, whose programs reference rule maps made to
// the policy's size, with no generations. Loading it writes no map-in-map
// slot, and each such write waits for an RCU grace period (1 to 16 ms,
// depending on the host; BenchmarkLoad/fixed measures both). Set, Remove,
// Replace and Pin refuse a fixed datapath.
func Fixed() Option { return func(o *options) { o.fixed = true } }

// errFixed is the error of an edit of a fixed datapath.
var errFixed = errors.New("the policy of this filter is fixed: it was loaded for run or exec")

// sizeFixed sizes the rule maps of the fixed object for p, before they are
// created. Its arrays (the bitmaps) lose BPF_F_INNER_MAP, which only an
// inner map needs (to differ in size from the outer map's template): the
// verifier inlines no lookup of an array that has it, and these the
// programs reference directly (BenchmarkEgressFixed, a warm miss
// at one rule, medians of runs interleaved with the flag kept: ipv4-mixed
// 68 -> 60 ns, ipv6 82 -> 71). Where narrow (no port code: Load), the address
// maps' values are struct rule alone.
func sizeFixed(spec *ebpf.CollectionSpec, p *policy.Policy, e *entries, narrow bool) error {
	n := e.counts()
	shifts := bitmapShifts(p)
	lens6, hosts6 := bitmap6Shape(p)
	for _, dir := range policy.Directions {
		for k := range numKinds {
			ms := spec.Maps[mapName(dir, k)]
			if ms == nil {
				return fmt.Errorf("no map %s in the BPF object", mapName(dir, k))
			}
			if k == kindBitmap4 || k == kindBitmap6 {
				ms.Flags &^= unix.BPF_F_INNER_MAP
			}
			if narrow && k.holdsAddresses() {
				ms.ValueSize = uint32(binary.Size(cgwallRule{}))
			}
			switch {
			case k == kindBitmap4 && shifts[dir] == 0:
				ms.MaxEntries = 1 // unread: the settings say there is none
			case k == kindBitmap4:
				ms.MaxEntries = uint32(bitmapWords(shifts[dir]))
			case k == kindBitmap6 && lens6[dir] == 0:
				ms.MaxEntries = 1
			case k == kindBitmap6:
				ms.MaxEntries = uint32(bitmap6Size(hosts6[dir]))
			case n[dir][k] > MaxRules:
				return fmt.Errorf("%d rules in %s: at most %d are supported", n[dir][k], mapName(dir, k), MaxRules)
			case ms.Type == ebpf.Hash:
				ms.MaxEntries = capacity(n[dir][k])
			}
		}
	}
	dropMapBTF(spec)
	return nil
}

// dropMapBTF takes the BTF types off the maps of the fixed object that the
// kernel does not need them for: all but socket storage (which it refuses
// without) and the data sections. Each map's types are a BTF blob of its
// own to marshal and load, and a fixed filter is never pinned, where tools
// would print a map's entries by them (BenchmarkLoad/mapbtf: creating the
// maps of a one-rule policy, 4.0 -> 2.5 ms).
func dropMapBTF(spec *ebpf.CollectionSpec) {
	for _, ms := range spec.Maps {
		if ms.Type != ebpf.SkStorage && !strings.HasPrefix(ms.Name, ".") {
			ms.Key, ms.Value = nil, nil
		}
	}
}

// installFixed writes p into the fixed object's maps, which are the rule
// maps themselves.
func (d *Datapath) installFixed(p *policy.Policy, e *entries) error {
	var g generation
	for _, m := range d.maps.withRules() {
		g[m.dir][m.kind] = m.outer
	}
	if err := e.fill(g); err != nil {
		return err
	}
	for k, all := range map[kind][2][]uint64{kindBitmap4: bitmaps(p), kindBitmap6: bitmaps6(p)} {
		for dir, words := range all {
			if words != nil {
				if err := fillBitmap(d.maps[dir][k].outer, words); err != nil {
					return err
				}
			}
		}
	}
	return d.writeSettings(p, 0)
}
