package datapath

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Event is one decision of the datapath, as the programs stream it.
type Event struct {
	Src        netip.Addr // invalid when the hook does not know it
	Dst        netip.Addr // invalid for a malformed packet or a socket creation
	Action     uint8      // 0 dropped (or would have been, in audit mode), 1 passed
	Hook       Hook       // the program that decided
	Proto      uint8      // IP protocol number
	SrcPort    uint16     // 0 when unknown
	DstPort    uint16     // 0 when unknown
	Len        uint32     // packet length in bytes; 0 at the socket hooks
	RuleID     uint32     // 0 when the default decided
	Rule       string     // the deciding rule's prefix, or "default"
	Audit      bool       // audit mode: the packet passed whatever Action says
	Malformed  bool       // the IP header was unreadable or invalid
	SockFamily uint8      // sock_create: the refused socket's AF_*
	SockType   uint8      // sock_create: the refused socket's SOCK_*
	Cgroup     string     // the cgroup whose policy decided, when several are watched
}

// decodeEvent reads one ring buffer record. The rule is left for the reader
// to name from its policy.
func decodeEvent(sample []byte) (Event, error) {
	var raw cgwallEvent
	if _, err := binary.Decode(sample, binary.NativeEndian, &raw); err != nil {
		return Event{}, fmt.Errorf("decode event: %w", err)
	}
	if raw.Hook >= uint8(cgwallHookHOOK_MAX) {
		return Event{}, fmt.Errorf("decode event: unknown hook %d", raw.Hook)
	}
	e := Event{
		Action:     raw.Action,
		Hook:       Hook(raw.Hook),
		Proto:      raw.Proto,
		SrcPort:    raw.Sport,
		DstPort:    raw.Dport,
		Len:        raw.Len,
		RuleID:     raw.RuleId,
		Audit:      raw.Flags&uint8(cgwallEventFlagEVENT_F_AUDIT) != 0,
		Malformed:  raw.Flags&uint8(cgwallEventFlagEVENT_F_MALFORMED) != 0,
		SockFamily: raw.SockFamily,
		SockType:   raw.SockType,
	}
	switch raw.Family {
	case 4:
		e.Src = netip.AddrFrom4([4]byte(raw.Src[:4]))
		e.Dst = netip.AddrFrom4([4]byte(raw.Dst[:4]))
	case 6:
		e.Src = netip.AddrFrom16(raw.Src)
		e.Dst = netip.AddrFrom16(raw.Dst)
	}
	if e.Hook.Socket() {
		e.Src = netip.Addr{} // the socket hooks see only the destination
	}
	return e, nil
}
