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
	"unicode"
	"unicode/utf8"
)

// Event is one decision of the datapath.
type Event struct {
	Src        netip.Addr // invalid when the hook does not know it
	Dst        netip.Addr // invalid for a malformed packet or a socket creation
	Action     uint8      // 0 dropped (or would have been, in audit mode), 1 passed
	Hook       string     // the program that decided: egress, ingress, connect, sendmsg, sock_create
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
// key=value fields. DST is always the packet's destination; on ingress the rules
// judged src=.
func (e Event) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "DST %s, ACTION %d hook=%s", addrString(e.Dst), e.Action, value(e.Hook))
	switch {
	case e.Malformed:
		b.WriteString(" reason=malformed")
	case e.Hook == "sock_create":
		fmt.Fprintf(&b, " socket=%s/%s", sockFamilyName(e.SockFamily), sockTypeName(e.SockType))
	default:
		if e.Src.IsValid() {
			fmt.Fprintf(&b, " src=%s", e.Src)
		}
		fmt.Fprintf(&b, " proto=%s", protoName(e.Proto))
		if e.SrcPort != 0 {
			fmt.Fprintf(&b, " sport=%d", e.SrcPort)
		}
		if e.DstPort != 0 {
			fmt.Fprintf(&b, " dport=%d", e.DstPort)
		}
		fmt.Fprintf(&b, " rule=%s", value(e.Rule))
	}
	if e.Len != 0 {
		fmt.Fprintf(&b, " len=%d", e.Len)
	}
	if e.Audit {
		b.WriteString(" audit=true")
	}
	if e.Cgroup != "" {
		fmt.Fprintf(&b, " cgroup=%s", value(e.Cgroup))
	}
	return b.String()
}

// value quotes a field's value when it would otherwise end the line or the
// field, as a cgroup path with a space or a control character would; the
// hooks and rules that cgwall names never need it.
func value(s string) string {
	plain := utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool {
		return r == ' ' || r == '"' || r == '=' || r == '\\' || !unicode.IsPrint(r)
	})
	if plain {
		return s
	}
	return strconv.Quote(s)
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}

type record struct {
	Dst       string `json:"dst"`
	Action    uint8  `json:"action"`
	Verdict   string `json:"verdict"`
	Hook      string `json:"hook"`
	Src       string `json:"src,omitempty"`
	Proto     string `json:"proto,omitempty"`
	SrcPort   uint16 `json:"sport,omitempty"`
	DstPort   uint16 `json:"dport,omitempty"`
	Rule      string `json:"rule,omitempty"`
	RuleID    uint32 `json:"rule_id"`
	Len       uint32 `json:"len"`
	Audit     bool   `json:"audit"`
	Malformed bool   `json:"malformed,omitempty"`
	Socket    string `json:"socket,omitempty"`
	Cgroup    string `json:"cgroup,omitempty"`
}

func (e Event) record() record {
	r := record{
		Dst: addrString(e.Dst), Action: e.Action, Verdict: "drop", Hook: e.Hook,
		SrcPort: e.SrcPort, DstPort: e.DstPort, Rule: e.Rule, RuleID: e.RuleID,
		Len: e.Len, Audit: e.Audit, Malformed: e.Malformed, Cgroup: e.Cgroup,
	}
	if e.Action == 1 {
		r.Verdict = "pass"
	}
	if e.Src.IsValid() {
		r.Src = e.Src.String()
	}
	switch {
	case e.Hook == "sock_create":
		r.Socket = sockFamilyName(e.SockFamily) + "/" + sockTypeName(e.SockType)
		r.Rule = ""
	case !e.Malformed:
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

func sockFamilyName(f uint8) string {
	switch f {
	case 2:
		return "inet"
	case 10:
		return "inet6"
	case 17:
		return "packet"
	}
	return strconv.Itoa(int(f))
}

func sockTypeName(t uint8) string {
	switch t {
	case 1:
		return "stream"
	case 2:
		return "dgram"
	case 3:
		return "raw"
	}
	return strconv.Itoa(int(t))
}
