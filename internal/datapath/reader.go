package datapath

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/cgwall/cgwall/internal/events"
)

// Reader reads the decisions a Datapath streams.
type Reader struct {
	rd     *ringbuf.Reader
	d      *Datapath
	record ringbuf.Record
}

// Events opens the datapath's event stream.
func (d *Datapath) Events() (*Reader, error) {
	rd, err := ringbuf.NewReader(d.objs.Events)
	if err != nil {
		return nil, fmt.Errorf("open event ring buffer: %w", err)
	}
	return &Reader{rd: rd, d: d}, nil
}

// Read blocks until the next event. After Close it returns an error wrapping
// ringbuf.ErrClosed.
func (r *Reader) Read() (events.Event, error) {
	if err := r.rd.ReadInto(&r.record); err != nil {
		return events.Event{}, err
	}
	var raw cgwallEvent
	if _, err := binary.Decode(r.record.RawSample, binary.NativeEndian, &raw); err != nil {
		return events.Event{}, fmt.Errorf("decode event: %w", err)
	}
	return r.d.decode(raw), nil
}

// Close unblocks Read and releases the reader.
func (r *Reader) Close() error { return r.rd.Close() }

func (d *Datapath) decode(raw cgwallEvent) events.Event {
	e := events.Event{
		Action:     raw.Action,
		Hook:       hookNames[cgwallHook(raw.Hook)],
		Proto:      raw.Proto,
		SrcPort:    raw.Sport,
		DstPort:    raw.Dport,
		Len:        raw.Len,
		RuleID:     raw.RuleId,
		Rule:       "default",
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
	if e.Hook == "connect" || e.Hook == "sendmsg" {
		e.Src = netip.Addr{} // the socket hooks see only the destination
	}
	r, ok := d.policy.Rule(raw.RuleId)
	if !ok && raw.RuleId != 0 && d.Refresh() == nil {
		// Another cgwall edited the policy since we read it.
		r, ok = d.policy.Rule(raw.RuleId)
	}
	if ok {
		e.Rule = r.Prefix.String()
	} else if raw.RuleId != 0 {
		e.Rule = fmt.Sprintf("removed-rule-%d", raw.RuleId)
	}
	return e
}

var hookNames = map[cgwallHook]string{
	cgwallHookHOOK_EGRESS:      "egress",
	cgwallHookHOOK_INGRESS:     "ingress",
	cgwallHookHOOK_CONNECT:     "connect",
	cgwallHookHOOK_SENDMSG:     "sendmsg",
	cgwallHookHOOK_SOCK_CREATE: "sock_create",
}

// Pending returns how many bytes of events wait in the ring buffer.
func (r *Reader) Pending() int { return r.rd.AvailableBytes() }

// Flush makes a blocked or later Read return the events pending now, then an
// error wrapping ringbuf.ErrFlushed.
func (r *Reader) Flush() error { return r.rd.Flush() }
