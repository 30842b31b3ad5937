package datapath

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/testutil"
)

// BenchmarkLoad times each mechanism that shortens Load against the same work
// without it. Each sub-benchmark is a pair that differs in one key, for
// benchstat -col:
//
//   - linfo=dropped|kept: parsing the BPF object, as Prepare does
//     (loadWithoutLineInfo) and as a Load without Prepare does (loadCgwall).
//   - templates=small|full: creating the collection's maps, the first step
//     of loadObjects, from smallTemplates(spec) and from spec itself.
//   - loading=parallel|sequential: Load of a one-rule policy with runTasks on
//     GOMAXPROCS goroutines and, with GOMAXPROCS set to 1, on one.
//   - mapbtf=kept|dropped: creating the fixed object's maps, sized for a
//     one-rule policy, with their BTF types and without (dropMapBTF).
//   - program=NAME: loading one program of the fixed object (the verifier
//     and the JIT), for a one-rule policy; no pair.
//   - object=fixed|generations: Load of a one-rule policy from the object
//     built for run and exec (Fixed), which writes no map-in-map slot, and
//     from the one with generations, which writes one and waits for an RCU
//     grace period.
//
// The machine is shared: run it in several processes so that a slow moment
// hits both halves of a pair alike, e.g.
//
//	for i in $(seq 40); do go test -run '^$' -bench BenchmarkLoad -benchtime 0.5s ./internal/datapath; done >load.txt
//	benchstat -col /linfo -filter '/linfo:(kept OR dropped)' load.txt
//
// and the same with -col and -filter for each key. Nothing here asserts on time.
func BenchmarkLoad(b *testing.B) {
	testutil.RequireBPF(b)
	p := mustPolicy(b, policy.LogNone, "block", "198.51.100.7")

	b.Run("linfo=kept", func(b *testing.B) {
		for b.Loop() {
			if _, err := loadCgwall(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("linfo=dropped", func(b *testing.B) {
		for b.Loop() {
			if _, err := loadWithoutLineInfo(_CgwallBytes); err != nil {
				b.Fatal(err)
			}
		}
	})

	spec, err := loadCgwall()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("templates=full", func(b *testing.B) { benchMaps(b, spec) })
	b.Run("templates=small", func(b *testing.B) { benchMaps(b, smallTemplates(spec)) })

	// The fixed object's maps as sizeFixed leaves them, and with their
	// types put back.
	fixedMaps := func(keep bool) *ebpf.CollectionSpec {
		s, err := loadCgwallFixed()
		if err != nil {
			b.Fatal(err)
		}
		orig := s.Copy()
		if err := sizeFixed(s, p, entriesOf(p, nil, true), true); err != nil {
			b.Fatal(err)
		}
		for name, ms := range s.Maps {
			if keep {
				ms.Key, ms.Value = orig.Maps[name].Key, orig.Maps[name].Value
			}
		}
		return &ebpf.CollectionSpec{Maps: s.Maps, Types: s.Types}
	}
	for _, keep := range []bool{true, false} {
		name := map[bool]string{true: "mapbtf=kept", false: "mapbtf=dropped"}[keep]
		spec := fixedMaps(keep)
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				coll, err := ebpf.NewCollection(spec)
				if err != nil {
					b.Fatal(err)
				}
				coll.Close()
			}
		})
	}

	b.Run("loading=parallel", func(b *testing.B) { benchLoad(b, p) })
	b.Run("loading=sequential", func(b *testing.B) {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
		benchLoad(b, p)
	})

	// One program at a time, as loadObjects loads each: verified, JITed
	// and closed, against the maps of a fixed load of p.
	d, err := Load(p, Fixed())
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	objMaps, err := d.programMaps()
	if err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{cgwallProgCgwallEgress, cgwallProgCgwallConnect4} {
		b.Run("program="+name, func(b *testing.B) {
			for b.Loop() {
				prog, err := loadProgram(d.spec.Programs[name], objMaps)
				if err != nil {
					b.Fatal(err)
				}
				prog.Close()
			}
		})
	}

	b.Run("object=generations", func(b *testing.B) { benchLoad(b, p) })
	b.Run("object=fixed", func(b *testing.B) { benchLoad(b, p, Fixed()) })
}

// benchLoad times Load of p and Close.
func benchLoad(b *testing.B, p *policy.Policy, opts ...Option) {
	for b.Loop() {
		d, err := Load(p, opts...)
		if err != nil {
			b.Fatal(err)
		}
		d.Close()
	}
}

// benchMaps times creating and closing every map of spec.
func benchMaps(b *testing.B, spec *ebpf.CollectionSpec) {
	for b.Loop() {
		var m cgwallMaps
		if err := spec.LoadAndAssign(&m, nil); err != nil {
			b.Fatal(err)
		}
		m.Close()
	}
}

// BenchmarkReplace times Replace of a policy with rules of four kinds of rule
// map (IPv4 hosts and prefixes, IPv6 hosts, an ingress prefix), whose slot
// writes each wait for a grace period, next to the grace period itself
// (grace-period). slots=sequential|concurrent writes the slots one after the
// other, or side by side (concurrently).
func BenchmarkReplace(b *testing.B) {
	testutil.RequireBPF(b)
	policies := [2]*policy.Policy{}
	for i := range policies {
		p := mustPolicy(b, policy.LogNone, "block", fmt.Sprintf("192.0.2.%d", i+1),
			"block", fmt.Sprintf("2001:db8::%d", i+1), "block", "198.51.100.0/24")
		if err := p.Add(policy.Ingress, policy.Block, "203.0.113.0/24"); err != nil {
			b.Fatal(err)
		}
		policies[i] = p
	}
	// The host's grace period, which each round of slot writes waits for.
	b.Run("grace-period", func(b *testing.B) {
		for b.Loop() {
			if !WaitForReaders() {
				b.Skip("membarrier refused: the kernel has nohz_full CPUs")
			}
		}
	})
	for _, seq := range []bool{true, false} {
		name := map[bool]string{true: "slots=sequential", false: "slots=concurrent"}[seq]
		b.Run(name, func(b *testing.B) {
			sequentialSlots = seq
			defer func() { sequentialSlots = false }()
			d, err := Load(policies[0].Clone())
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			i := 0
			for b.Loop() {
				i++
				if err := d.Replace(policies[i%2].Clone()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLoadPorts times a fixed load of a small policy with port rules of
// both families and reports the instructions that the verifier went through
// for its egress program (insns/op), a figure that does not depend on the
// machine's moods: the port code's share of what loading costs.
func BenchmarkLoadPorts(b *testing.B) {
	testutil.RequireBPF(b)
	p := mustPolicy(b, policy.LogNone, portPolicyRules...)
	var insns uint32
	for b.Loop() {
		d, err := Load(p, Fixed())
		if err != nil {
			b.Fatal(err)
		}
		insns = verifiedInstructions(b, d, cgwallProgCgwallEgress)
		d.Close()
	}
	b.ReportMetric(float64(insns), "insns/op")
}
