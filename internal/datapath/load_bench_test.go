package datapath

import (
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
			if _, err := loadWithoutLineInfo(); err != nil {
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

	b.Run("loading=parallel", func(b *testing.B) { benchLoad(b, p) })
	b.Run("loading=sequential", func(b *testing.B) {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
		benchLoad(b, p)
	})
}

// benchLoad times Load of p and Close.
func benchLoad(b *testing.B, p *policy.Policy) {
	for b.Loop() {
		d, err := Load(p)
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
