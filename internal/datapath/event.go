package datapath

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Event is one decision of the datapath, as the programs stream it.
type Event struct {
	Time       time.Time  // when the datapath decided, in UTC
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
	// Pid and Comm name the process behind the decision where the kernel
	// knows it: the caller of a socket hook, or the process that connected
	// (or last sent unconnected from) the socket of a packet. Pid is 0, and
	// Comm empty, where it does not.
	Pid  uint32
	Comm string
}

// decodeEvent reads one ring buffer record, dating it with clock. The rule is
// left for the reader to name from its policy.
func decodeEvent(sample []byte, clock bootClock) (Event, error) {
	var raw cgwallEvent
	if _, err := binary.Decode(sample, binary.NativeEndian, &raw); err != nil {
		return Event{}, fmt.Errorf("decode event: %w", err)
	}
	if raw.Hook >= uint8(cgwallHookHOOK_MAX) {
		return Event{}, fmt.Errorf("decode event: unknown hook %d", raw.Hook)
	}
	e := Event{
		Time:       clock.wall(raw.BootNs),
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
		Pid:        raw.Owner.Pid,
	}
	if e.Pid != 0 {
		e.Comm = comm(raw.Owner.Comm)
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

// bootClock turns readings of CLOCK_BOOTTIME, the clock events are stamped
// with (bpf_ktime_get_boot_ns), into wall-clock time.
type bootClock struct {
	offset int64 // CLOCK_REALTIME minus CLOCK_BOOTTIME, in ns
}

// newBootClock reads the offset between the two clocks once: a stream's
// events are dated on one scale, even if the wall clock is set meanwhile.
func newBootClock() (bootClock, error) {
	boot, err := bootNow()
	if err != nil {
		return bootClock{}, err
	}
	var real unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &real); err != nil {
		return bootClock{}, fmt.Errorf("read the wall clock: %w", err)
	}
	return bootClock{offset: real.Nano() - int64(boot)}, nil
}

// wall returns the wall-clock time of a CLOCK_BOOTTIME reading.
func (c bootClock) wall(bootNS uint64) time.Time {
	return time.Unix(0, int64(bootNS)+c.offset).UTC()
}

// bootNow reads CLOCK_BOOTTIME, in ns.
func bootNow() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, fmt.Errorf("read CLOCK_BOOTTIME: %w", err)
	}
	return uint64(ts.Nano()), nil
}

// comm reads a task's command name, NUL-terminated unless it fills the array.
func comm(c [16]int8) string {
	b := make([]byte, 0, len(c))
	for _, ch := range c {
		if ch == 0 {
			break
		}
		b = append(b, byte(ch))
	}
	return string(b)
}
