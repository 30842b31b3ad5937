// Package events is the decision record that the datapath streams to userspace,
// and its text and JSON forms.
package events

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// Event is one decision of the datapath.
type Event struct {
	Addr      netip.Addr // the remote address: destination on egress, source on ingress
	Action    uint8      // 0 dropped (or would have been, in audit mode), 1 passed
	Hook      string     // the program that decided: egress, ingress
	Proto     uint8      // IP protocol number
	SrcPort   uint16     // 0 when unknown
	DstPort   uint16     // 0 when unknown
	Len       uint32     // packet length in bytes
	RuleID    uint32     // 0 when the default decided
	Rule      string     // the deciding rule's prefix, or "default"
	Audit     bool       // audit mode: the packet passed whatever Action says
	Malformed bool       // the IP header was unreadable or invalid
}

// Format is how events are printed.
type Format int

const (
	Text Format = iota
	JSON
)

// ParseFormat reads text or json.
func ParseFormat(s string) (Format, error) {
	switch s {
	case "text":
		return Text, nil
	case "json":
		return JSON, nil
	}
	return 0, fmt.Errorf("%q is not an output format: use text or json", s)
}

// Write prints one event on one line.
func Write(w io.Writer, f Format, e Event) error {
	var line []byte
	if f == JSON {
		var err error
		if line, err = json.Marshal(e.record()); err != nil {
			return err
		}
	} else {
		line = []byte(e.text())
	}
	_, err := w.Write(append(line, '\n'))
	return err
}

// text begins with the Aya example's words, "DST <addr>, ACTION <n>", then adds
// key=value fields.
func (e Event) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "DST %s, ACTION %d hook=%s", e.addrString(), e.Action, e.Hook)
	if e.Malformed {
		b.WriteString(" reason=malformed")
	} else {
		fmt.Fprintf(&b, " proto=%s", protoName(e.Proto))
		if e.SrcPort != 0 || e.DstPort != 0 {
			fmt.Fprintf(&b, " sport=%d dport=%d", e.SrcPort, e.DstPort)
		}
		fmt.Fprintf(&b, " rule=%s", e.Rule)
	}
	fmt.Fprintf(&b, " len=%d", e.Len)
	if e.Audit {
		b.WriteString(" audit=true")
	}
	return b.String()
}

func (e Event) addrString() string {
	if !e.Addr.IsValid() {
		return "-"
	}
	return e.Addr.String()
}

type record struct {
	Dst       string `json:"dst"`
	Action    uint8  `json:"action"`
	Verdict   string `json:"verdict"`
	Hook      string `json:"hook"`
	Proto     string `json:"proto,omitempty"`
	SrcPort   uint16 `json:"sport,omitempty"`
	DstPort   uint16 `json:"dport,omitempty"`
	Rule      string `json:"rule,omitempty"`
	RuleID    uint32 `json:"rule_id"`
	Len       uint32 `json:"len"`
	Audit     bool   `json:"audit"`
	Malformed bool   `json:"malformed,omitempty"`
}

func (e Event) record() record {
	r := record{
		Dst: e.addrString(), Action: e.Action, Verdict: "drop", Hook: e.Hook,
		SrcPort: e.SrcPort, DstPort: e.DstPort, Rule: e.Rule, RuleID: e.RuleID,
		Len: e.Len, Audit: e.Audit, Malformed: e.Malformed,
	}
	if e.Action == 1 {
		r.Verdict = "pass"
	}
	if !e.Malformed {
		r.Proto = protoName(e.Proto)
	}
	return r
}

func protoName(p uint8) string {
	switch p {
	case 1:
		return "icmp"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 58:
		return "icmpv6"
	}
	return strconv.Itoa(int(p))
}
