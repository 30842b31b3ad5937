package datapath

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/cgwall/cgwall/internal/policy"
)

// TestResetTotals checks that ResetTotals zeroes the verdict counters and
// keeps the count of lost events, which outlives a policy.
func TestResetTotals(t *testing.T) {
	d := load(t, mustPolicy(t, policy.LogAll, "block", "198.51.100.1"))
	// Nobody reads the ring buffer: enough decisions overflow it.
	if _, err := d.progs[cgwallProgCgwallEgress].Run(&ebpf.RunOptions{
		Data: packet(local4, netip.MustParseAddr("198.51.100.1")), Repeat: 5000,
	}); err != nil {
		t.Fatal(err)
	}
	before, err := d.Stats(HookEgress)
	if err != nil {
		t.Fatal(err)
	}
	if before.Drop.Packets != 5000 || before.Drop.Bytes == 0 || before.EventsLost.Packets == 0 {
		t.Fatalf("stats %+v: want 5000 drops, their bytes, and lost events", before)
	}
	if err := d.ResetTotals(); err != nil {
		t.Fatal(err)
	}
	after, err := d.Stats(HookEgress)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Stats{EventsLost: before.EventsLost}); after != want {
		t.Fatalf("after ResetTotals: %+v, want %+v", after, want)
	}
}
