package datapath

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/cgwall/cgwall/internal/policy"
)

// FuzzDecodeEvent feeds the event decoder records as the ring buffer could
// hold them, well formed or not: it must never panic, and an event it accepts
// must be one the programs could have sent.
func FuzzDecodeEvent(f *testing.F) {
	for _, raw := range []cgwallEvent{
		{BootNs: 12_345_678_901, Family: 4, Hook: uint8(HookEgress), Proto: 17, Sport: 40000, Dport: 53, Len: 35, RuleId: 1,
			Src: [16]byte{127, 0, 0, 1}, Dst: [16]byte{127, 0, 0, 2}},
		{Family: 6, Hook: uint8(HookConnect), Proto: 6, Dport: 443, Action: 1,
			Dst: [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}, Owner: cgwallOwner{Pid: 4242, Comm: [16]int8{'c', 'u', 'r', 'l'}}},
		{Hook: uint8(HookSockCreate), SockFamily: 17, SockType: 3},
		{Hook: uint8(HookIngress), Flags: uint8(cgwallEventFlagEVENT_F_MALFORMED | cgwallEventFlagEVENT_F_AUDIT), Len: 26},
	} {
		b, err := binary.Append(nil, binary.NativeEndian, raw)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, sample []byte) {
		e, err := decodeEvent(sample, bootClock{})
		if err != nil {
			return
		}
		if int(e.Hook) >= len(hookTable) {
			t.Fatalf("accepted hook %d", e.Hook)
		}
		if e.Pid == 0 && e.Comm != "" || strings.ContainsRune(e.Comm, 0) {
			t.Fatalf("comm %q with pid %d", e.Comm, e.Pid)
		}
		if e.Hook.Socket() && e.Src.IsValid() {
			t.Fatalf("a socket hook's event has a source address: %+v", e)
		}
		if e.Dst.IsValid() && e.Src.IsValid() && e.Dst.Is4() != e.Src.Is4() {
			t.Fatalf("addresses of two families: %+v", e)
		}
		if e.Time.Location() != time.UTC {
			t.Fatalf("time %v not in UTC", e.Time)
		}
		_ = e.Hook.String()
	})
}

// TestEventTime checks that an event is dated when the program decided, in
// wall-clock time, and that SkipOlder skips the events decided before it.
func TestEventTime(t *testing.T) {
	d := load(t, mustPolicy(t, policy.LogAll, "block", "198.51.100.1"))
	rd, err := d.Events()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	decide := func(dst string) {
		t.Helper()
		pkt := packet(local4, netip.MustParseAddr(dst))
		if _, err := d.progs[cgwallProgCgwallEgress].Run(&ebpf.RunOptions{Data: pkt}); err != nil {
			t.Fatal(err)
		}
	}

	before := time.Now()
	decide("198.51.100.1")
	after := time.Now()
	e, err := rd.Read()
	if err != nil {
		t.Fatal(err)
	}
	// The reader's offset between the clocks comes from two readings, a
	// few microseconds apart at most.
	const slack = time.Millisecond
	if e.Time.Before(before.Add(-slack)) || e.Time.After(after.Add(slack)) {
		t.Fatalf("event dated %v, decided between %v and %v", e.Time, before, after)
	}

	decide("198.51.100.1") // stale by the time the reader skips
	if err := rd.SkipOlder(); err != nil {
		t.Fatal(err)
	}
	decide("198.51.100.2")
	if e, err = rd.Read(); err != nil || e.Dst != netip.MustParseAddr("198.51.100.2") {
		t.Fatalf("after SkipOlder: %+v, %v; want the event to 198.51.100.2", e, err)
	}
	if n := rd.Skipped(); n != 1 {
		t.Fatalf("Skipped = %d, want 1", n)
	}
}
