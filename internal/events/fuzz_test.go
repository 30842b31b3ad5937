package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cgwall/cgwall/internal/datapath"
)

// FuzzWrite checks that Write prints any event, however odd, as one line:
// text that begins with the Aya example's words, or one JSON object that
// parses and says what the event said. The seed corpus in testdata/fuzz/ is
// the events of these tests and of the e2e tests. The time comes from the
// rule ID (seconds) and the length (nanoseconds), and is unknown (zero) with
// rule ID 0; the process's PID from the ports, and its name from the rule:
// so that the corpus keeps its shape.
//
// Each input is also a DNS decision (WriteDNS) of the question name, with
// the query type from the destination port, the server from the
// destination address and the source port, and an error (the hook's name)
// when the event is malformed.
func FuzzWrite(f *testing.F) {
	f.Fuzz(func(t *testing.T, src, dst []byte, action uint8, hook string, proto uint8, sport, dport uint16,
		length, ruleID uint32, rule string, audit, malformed bool, family, typ uint8, cgroup, name string) {
		// The corpus names hooks; a name that is none stands for a number
		// past the table, which Write must print too.
		h, err := datapath.ParseHook(hook)
		if err != nil {
			h = datapath.Hook(len(hook))
		}
		e := datapath.Event{
			Action: action, Hook: h, Proto: proto, SrcPort: sport, DstPort: dport, Len: length,
			RuleID: ruleID, Rule: rule, Audit: audit, Malformed: malformed,
			SockFamily: family, SockType: typ, Cgroup: cgroup,
		}
		if ruleID != 0 {
			e.Time = time.Unix(int64(ruleID), int64(length))
		}
		if e.Pid = uint32(sport)<<16 | uint32(dport); e.Pid != 0 {
			e.Comm = rule
		}
		e.Src, _ = netip.AddrFromSlice(src)
		e.Dst, _ = netip.AddrFromSlice(dst)

		text := write(t, Text, e)
		if prefix := fmt.Sprintf("DST %s, ACTION %d ", addrString(e.Dst), e.Action); !strings.HasPrefix(text, prefix) {
			t.Errorf("text %q does not begin with %q", text, prefix)
		}
		wantTime := ""
		if !e.Time.IsZero() {
			wantTime = e.Time.UTC().Truncate(time.Millisecond).Format(time.RFC3339Nano)
			if !strings.Contains(text, " time="+timeString(e.Time)+" cgroup=") && !strings.HasSuffix(text, " time="+timeString(e.Time)+"\n") {
				t.Errorf("text %q does not end with its time %s (before cgroup=, if any)", text, timeString(e.Time))
			}
		}

		line := write(t, JSON, e)
		var got map[string]any
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatalf("JSON %q: %v", line, err)
		}
		want := map[string]any{"dst": addrString(e.Dst), "action": float64(e.Action), "hook": e.Hook.String(), "rule_id": float64(e.RuleID)}
		if e.Cgroup != "" {
			want["cgroup"] = e.Cgroup
		}
		if e.Pid != 0 {
			want["pid"] = float64(e.Pid)
			if e.Comm != "" {
				want["comm"] = e.Comm
			}
		}
		for k, v := range want {
			if s, ok := v.(string); ok && !utf8.ValidString(s) {
				continue // JSON strings are UTF-8: Marshal replaces what is not
			}
			if got[k] != v {
				t.Errorf("JSON %s = %v, want %v, in %q", k, got[k], v, line)
			}
		}
		gotTime := ""
		if s, ok := got["time"].(string); ok {
			parsed, err := time.Parse(time.RFC3339, s)
			if err != nil || !strings.HasSuffix(s, "Z") || len(s) != len("2006-01-02T15:04:05.000Z") {
				t.Errorf("JSON time %q is not RFC 3339 in UTC to the millisecond: %v", s, err)
			}
			gotTime = parsed.Format(time.RFC3339Nano)
		}
		if gotTime != wantTime {
			t.Errorf("JSON time %q, want %q, in %q", gotTime, wantTime, line)
		}

		d := DNS{Time: e.Time, Name: name, QType: dport, Action: action, Audit: audit, Rule: rule, RuleID: ruleID, Cgroup: cgroup}
		if e.Dst.IsValid() {
			d.Server = netip.AddrPortFrom(e.Dst, sport)
		}
		if malformed {
			d.Err = hook
		}
		checkDNS(t, d, wantTime)
	})
}

// checkDNS checks that a DNS decision prints as one line of text that
// begins with its words, and as one JSON object that says what it said.
func checkDNS(t *testing.T, d DNS, wantTime string) {
	t.Helper()
	text := writeDNS(t, Text, d)
	if prefix := fmt.Sprintf("DNS %s, ACTION %d hook=dns qtype=%s", value(nameString(d.Name)), d.Action, qtypeName(d.QType)); !strings.HasPrefix(text, prefix) {
		t.Errorf("text %q does not begin with %q", text, prefix)
	}
	line := writeDNS(t, JSON, d)
	var got map[string]any
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatalf("JSON %q: %v", line, err)
	}
	want := map[string]any{"name": nameString(d.Name), "action": float64(d.Action), "hook": "dns", "qtype": qtypeName(d.QType), "rule_id": float64(d.RuleID), "audit": d.Audit}
	if wantTime != "" {
		want["time"] = timeString(d.Time)
	}
	if d.Rule != "" {
		want["rule"] = d.Rule
	}
	if d.Server.IsValid() {
		want["server"] = d.Server.String()
	}
	for k, v := range want {
		if s, ok := v.(string); ok && !utf8.ValidString(s) {
			continue
		}
		if got[k] != v {
			t.Errorf("JSON %s = %v, want %v, in %q", k, got[k], v, line)
		}
	}
}

func writeDNS(t *testing.T, f Format, d DNS) string {
	t.Helper()
	var b bytes.Buffer
	if err := WriteDNS(&b, f, d); err != nil {
		t.Fatalf("WriteDNS(%d, %+v): %v", f, d, err)
	}
	out := b.String()
	if !strings.HasSuffix(out, "\n") || strings.ContainsAny(out[:len(out)-1], "\r\n") {
		t.Errorf("WriteDNS(%d, %+v) = %q: not one line", f, d, out)
	}
	return out
}

// write writes one event and checks that it is one line.
func write(t *testing.T, f Format, e datapath.Event) string {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, f, e); err != nil {
		t.Fatalf("Write(%d, %+v): %v", f, e, err)
	}
	out := b.String()
	if !strings.HasSuffix(out, "\n") || strings.ContainsAny(out[:len(out)-1], "\r\n") {
		t.Errorf("Write(%d, %+v) = %q: not one line", f, e, out)
	}
	return out
}
