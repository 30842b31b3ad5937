package datapath

import (
	"runtime"
	"testing"

	"github.com/cgwall/cgwall/internal/testutil"
	"github.com/cilium/ebpf"
)

// lines counts the instructions that carry a source line.
func lines(spec *ebpf.CollectionSpec) int {
	n := 0
	for _, p := range spec.Programs {
		for _, ins := range p.Instructions {
			if ins.Source() != nil {
				n++
			}
		}
	}
	return n
}

func TestLoadWithoutLineInfo(t *testing.T) {
	full, err := loadCgwall()
	if err != nil {
		t.Fatal(err)
	}
	lean, err := loadWithoutLineInfo(_CgwallBytes)
	if err != nil {
		t.Fatal(err)
	}
	if lines(full) == 0 {
		t.Fatal("the BPF object has no line info to drop")
	}
	if n := lines(lean); n != 0 {
		t.Fatalf("%d instructions kept their source line", n)
	}
	if len(lean.Programs) != len(full.Programs) || len(lean.Maps) != len(full.Maps) {
		t.Fatalf("%d programs and %d maps, want %d and %d", len(lean.Programs), len(lean.Maps), len(full.Programs), len(full.Maps))
	}
	for name, p := range full.Programs {
		if got := len(lean.Programs[name].Instructions); got != len(p.Instructions) {
			t.Errorf("program %s: %d instructions, want %d", name, got, len(p.Instructions))
		}
	}
	if _, err := withoutLineInfo([]byte("not an ELF file")); err == nil {
		t.Error("no error for a file that is not ELF")
	}
}

func TestPrepareThenLoad(t *testing.T) {
	p := mustPolicy(t, 0, "block", "198.51.100.7")
	testutil.RequireBPF(t)
	prep := Prepare()
	d, err := Load(p, Fixed(), WithPrepared(prep))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if lines(d.spec) != 0 {
		t.Error("Load did not take the prepared spec")
	}
	spec, err := prep.take()
	if err != nil {
		t.Fatal(err)
	}
	if lines(spec) == 0 {
		t.Error("a second Load took the prepared spec too")
	}
}

// TestPreparedLoadCollectsNoGarbage loads a one-rule policy from a Prepared
// object, as exec and run do. Prepare's ballast is live heap, which puts the
// next collection that far off, and none runs during the Load, which then
// lets the ballast go. A test process's heap is bigger than exec's, so the
// test checks the ballast itself rather than a collection that it prevents:
// with Prepare allocating none, the heap is the same before and after it,
// and a collection ran during the Load (checked).
// What it saves exec is measured by go run ./bench -only exec.
func TestPreparedLoadCollectsNoGarbage(t *testing.T) {
	p := mustPolicy(t, 0, "block", "198.51.100.7")
	testutil.RequireBPF(t)
	var start, before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&start)
	prep := Prepare()
	// Finishes the collection that the ballast sets off, and any other.
	runtime.GC()
	runtime.ReadMemStats(&before)
	if held := int64(before.HeapAlloc) - int64(start.HeapAlloc); held < prepBallast {
		t.Errorf("Prepare holds %.1f MiB of live heap; want its ballast, %d MiB", float64(held)/(1<<20), prepBallast>>20)
	}
	d, err := Load(p, Fixed(), WithPrepared(prep))
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	t.Logf("Load allocated %.1f MiB; heap goal %.1f MiB", float64(after.TotalAlloc-before.TotalAlloc)/(1<<20), float64(before.NextGC)/(1<<20))
	if n := after.NumGC - before.NumGC; n != 0 {
		t.Errorf("%d garbage collections ran during a prepared Load; want none", n)
	}
	if prep.ballast != nil {
		t.Error("the Load kept Prepare's ballast: the collector stays held off")
	}
}
