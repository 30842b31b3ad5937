package events

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/cgwall/cgwall/internal/datapath"
)

func TestWriteText(t *testing.T) {
	for _, tc := range []struct {
		e    datapath.Event
		want string
	}{
		{
			datapath.Event{Src: netip.MustParseAddr("127.0.0.1"), Dst: netip.MustParseAddr("127.0.0.2"), Action: 0, Hook: datapath.HookEgress, Proto: 17, SrcPort: 40000, DstPort: 53, Len: 40, RuleID: 1, Rule: "127.0.0.2/32"},
			"DST 127.0.0.2, ACTION 0 hook=egress src=127.0.0.1 proto=udp sport=40000 dport=53 rule=127.0.0.2/32 len=40\n",
		},
		{
			datapath.Event{Dst: netip.MustParseAddr("2001:db8::1"), Action: 1, Hook: datapath.HookConnect, Proto: 6, DstPort: 443, Rule: "default"},
			"DST 2001:db8::1, ACTION 1 hook=connect proto=tcp dport=443 rule=default\n",
		},
		{
			datapath.Event{Action: 0, Hook: datapath.HookSockCreate, SockFamily: 17, SockType: 3},
			"DST -, ACTION 0 hook=sock_create socket=packet/raw\n",
		},
		{
			datapath.Event{Action: 0, Hook: datapath.HookEgress, Len: 10, Malformed: true, Audit: true},
			"DST -, ACTION 0 hook=egress reason=malformed len=10 audit=true\n",
		},
	} {
		var b bytes.Buffer
		if err := Write(&b, Text, tc.e); err != nil {
			t.Fatal(err)
		}
		if b.String() != tc.want {
			t.Errorf("got  %q\nwant %q", b.String(), tc.want)
		}
	}
}

func TestWriteJSON(t *testing.T) {
	var b bytes.Buffer
	e := datapath.Event{Dst: netip.MustParseAddr("192.0.2.7"), Action: 0, Hook: datapath.HookEgress, Proto: 6, SrcPort: 1, DstPort: 443, Len: 60, RuleID: 3, Rule: "192.0.2.0/24"}
	if err := Write(&b, JSON, e); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("not one JSON object: %q: %v", b.String(), err)
	}
	for k, v := range map[string]any{"dst": "192.0.2.7", "action": 0.0, "verdict": "drop", "proto": "tcp", "dport": 443.0, "rule": "192.0.2.0/24", "rule_id": 3.0} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (in %s)", k, got[k], v, b.String())
		}
	}
	if bytes.Count(b.Bytes(), []byte("\n")) != 1 {
		t.Errorf("want exactly one line, got %q", b.String())
	}
}

func TestParseFormat(t *testing.T) {
	if f, err := ParseFormat("json"); err != nil || f != JSON {
		t.Fatal(f, err)
	}
	if _, err := ParseFormat("yaml"); err == nil {
		t.Fatal("yaml accepted")
	}
}
