package datapath

import (
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
