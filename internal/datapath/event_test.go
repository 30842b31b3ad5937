package datapath

import (
	"encoding/binary"
	"testing"
)

// FuzzDecodeEvent feeds the event decoder records as the ring buffer could
// hold them, well formed or not: it must never panic, and an event it accepts
// must be one the programs could have sent.
func FuzzDecodeEvent(f *testing.F) {
	for _, raw := range []cgwallEvent{
		{Family: 4, Hook: uint8(HookEgress), Proto: 17, Sport: 40000, Dport: 53, Len: 35, RuleId: 1,
			Src: [16]byte{127, 0, 0, 1}, Dst: [16]byte{127, 0, 0, 2}},
		{Family: 6, Hook: uint8(HookConnect), Proto: 6, Dport: 443, Action: 1,
			Dst: [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}},
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
		e, err := decodeEvent(sample)
		if err != nil {
			return
		}
		if int(e.Hook) >= len(hookTable) {
			t.Fatalf("accepted hook %d", e.Hook)
		}
		if e.Hook.Socket() && e.Src.IsValid() {
			t.Fatalf("a socket hook's event has a source address: %+v", e)
		}
		if e.Dst.IsValid() && e.Src.IsValid() && e.Dst.Is4() != e.Src.Is4() {
			t.Fatalf("addresses of two families: %+v", e)
		}
		_ = e.Hook.String()
	})
}
