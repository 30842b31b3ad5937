// Package events prints the decisions that the datapath streams to userspace,
// in text and JSON.
package events

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/policy"
	"golang.org/x/sys/unix"
)

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

// event is a datapath.Event being printed.
type event struct{ datapath.Event }

// Write prints one event on one line.
func Write(w io.Writer, f Format, e datapath.Event) error {
	ev := event{e}
	return writeLine(w, f, func() any { return ev.record() }, ev.text)
}

// writeLine writes one decision on one line: the JSON of its record, or its
// text.
func writeLine(w io.Writer, f Format, record func() any, text func() string) error {
	var line []byte
	if f == JSON {
		var err error
		if line, err = json.Marshal(record()); err != nil {
			return err
		}
	} else {
		line = []byte(text())
	}
	_, err := w.Write(append(line, '\n'))
	return err
}

// text begins with the Aya example's words, "DST <addr>, ACTION <n>", then adds
// key=value fields. DST is always the packet's destination; on ingress the rules
// judged src= and dport=. rule= is the deciding rule in its canonical form, as
// the reader resolved it, so that it can be passed back to remove. time= comes late, before cgroup= alone, so that what readers
// match on stays where it was: the words and hook= first, cgroup= last.
func (e event) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "DST %s, ACTION %d hook=%s", addrString(e.Dst), e.Action, value(e.Hook.String()))
	switch {
	case e.Malformed:
		b.WriteString(" reason=malformed")
	case e.Hook == datapath.HookSockCreate:
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
	if e.Pid != 0 {
		fmt.Fprintf(&b, " pid=%d comm=%s", e.Pid, value(e.Comm))
	}
	if e.Len != 0 {
		fmt.Fprintf(&b, " len=%d", e.Len)
	}
	writeTail(&b, e.Audit, e.Time, e.Cgroup)
	return b.String()
}

// timeLayout is how events print their time: RFC 3339 in UTC, to the
// millisecond.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

func timeString(t time.Time) string { return t.UTC().Format(timeLayout) }

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
	Time      string `json:"time,omitempty"`
	Pid       uint32 `json:"pid,omitempty"`
	Comm      string `json:"comm,omitempty"`
}

func (e event) record() record {
	r := record{
		Dst: addrString(e.Dst), Action: e.Action, Verdict: "drop", Hook: e.Hook.String(),
		SrcPort: e.SrcPort, DstPort: e.DstPort, Rule: e.Rule, RuleID: e.RuleID,
		Len: e.Len, Audit: e.Audit, Malformed: e.Malformed, Cgroup: e.Cgroup,
		Pid: e.Pid, Comm: e.Comm,
	}
	if e.Action == 1 {
		r.Verdict = "pass"
	}
	if !e.Time.IsZero() {
		r.Time = timeString(e.Time)
	}
	if e.Src.IsValid() {
		r.Src = e.Src.String()
	}
	switch {
	case e.Hook == datapath.HookSockCreate:
		r.Socket = sockFamilyName(e.SockFamily) + "/" + sockTypeName(e.SockType)
		r.Rule = ""
	case !e.Malformed:
		r.Proto = protoName(e.Proto)
	}
	return r
}

// protoName names a packet's protocol as rules name it (tcp, sctp, icmpv6),
// so that a rule for it can be copied from the event; a protocol without a
// name is its number, which rules write proto/N.
func protoName(p uint8) string {
	if name, ok := policy.NamedProto(p); ok {
		return name
	}
	return strconv.Itoa(int(p))
}

func sockFamilyName(f uint8) string {
	switch f {
	case unix.AF_INET:
		return "inet"
	case unix.AF_INET6:
		return "inet6"
	case unix.AF_PACKET:
		return "packet"
	}
	return strconv.Itoa(int(f))
}

func sockTypeName(t uint8) string {
	switch t {
	case unix.SOCK_STREAM:
		return "stream"
	case unix.SOCK_DGRAM:
		return "dgram"
	case unix.SOCK_RAW:
		return "raw"
	}
	return strconv.Itoa(int(t))
}

// writeTail ends a decision's text line the same way for packets and DNS:
// audit=, then time=, then cgroup= last.
func writeTail(b *strings.Builder, audit bool, t time.Time, cgroup string) {
	if audit {
		b.WriteString(" audit=true")
	}
	if !t.IsZero() {
		fmt.Fprintf(b, " time=%s", timeString(t))
	}
	if cgroup != "" {
		fmt.Fprintf(b, " cgroup=%s", value(cgroup))
	}
}
