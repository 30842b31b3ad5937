package events

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/cgwall/cgwall/internal/datapath"
)

func TestWriteText(t *testing.T) {
	for _, tc := range []struct {
		name string
		e    datapath.Event
		want string
	}{
		{
			"udp blocked",
			datapath.Event{Src: netip.MustParseAddr("127.0.0.1"), Dst: netip.MustParseAddr("127.0.0.2"), Action: 0, Hook: datapath.HookEgress, Proto: 17, SrcPort: 40000, DstPort: 53, Len: 40, RuleID: 1, Rule: "127.0.0.2/32"},
			"DST 127.0.0.2, ACTION 0 hook=egress src=127.0.0.1 proto=udp sport=40000 dport=53 rule=127.0.0.2/32 len=40\n",
		},
		{
			"connect by a process",
			datapath.Event{Dst: netip.MustParseAddr("192.0.2.7"), Action: 0, Hook: datapath.HookConnect, Proto: 6, DstPort: 443, Rule: "192.0.2.7/32", Pid: 4242, Comm: "curl"},
			"DST 192.0.2.7, ACTION 0 hook=connect proto=tcp dport=443 rule=192.0.2.7/32 pid=4242 comm=curl\n",
		},
		{
			"connect by default",
			datapath.Event{Dst: netip.MustParseAddr("2001:db8::1"), Action: 1, Hook: datapath.HookConnect, Proto: 6, DstPort: 443, Rule: "default"},
			"DST 2001:db8::1, ACTION 1 hook=connect proto=tcp dport=443 rule=default\n",
		},
		{
			"a port rule decides",
			datapath.Event{Dst: netip.MustParseAddr("192.0.2.7"), Action: 0, Hook: datapath.HookConnect, Proto: 6, DstPort: 443, RuleID: 4, Rule: "192.0.2.0/24:tcp/443", Pid: 4242, Comm: "curl"},
			"DST 192.0.2.7, ACTION 0 hook=connect proto=tcp dport=443 rule=192.0.2.0/24:tcp/443 pid=4242 comm=curl\n",
		},
		{
			"an IPv6 range rule, bracketed",
			datapath.Event{Src: netip.MustParseAddr("2001:db8::9"), Dst: netip.MustParseAddr("2001:db8::1"), Action: 1, Hook: datapath.HookEgress, Proto: 17, SrcPort: 40000, DstPort: 8053, Len: 48, RuleID: 5, Rule: "[2001:db8::/32]:udp/8000-8999"},
			"DST 2001:db8::1, ACTION 1 hook=egress src=2001:db8::9 proto=udp sport=40000 dport=8053 rule=[2001:db8::/32]:udp/8000-8999 len=48\n",
		},
		{
			"ingress by the local port",
			datapath.Event{Src: netip.MustParseAddr("198.51.100.9"), Dst: netip.MustParseAddr("192.0.2.1"), Action: 0, Hook: datapath.HookIngress, Proto: 6, SrcPort: 50000, DstPort: 22, Len: 60, RuleID: 2, Rule: "198.51.100.0/24:tcp/22"},
			"DST 192.0.2.1, ACTION 0 hook=ingress src=198.51.100.9 proto=tcp sport=50000 dport=22 rule=198.51.100.0/24:tcp/22 len=60\n",
		},
		{
			"an ICMP rule, and the protocols rules name",
			datapath.Event{Src: netip.MustParseAddr("192.0.2.9"), Dst: netip.MustParseAddr("192.0.2.1"), Action: 0, Hook: datapath.HookEgress, Proto: 1, Len: 84, RuleID: 3, Rule: "192.0.2.1/32:icmp"},
			"DST 192.0.2.1, ACTION 0 hook=egress src=192.0.2.9 proto=icmp rule=192.0.2.1/32:icmp len=84\n",
		},
		{
			"SCTP by name",
			datapath.Event{Dst: netip.MustParseAddr("192.0.2.1"), Action: 0, Hook: datapath.HookConnect, Proto: 132, DstPort: 3868, Rule: "any:sctp/3868"},
			"DST 192.0.2.1, ACTION 0 hook=connect proto=sctp dport=3868 rule=any:sctp/3868\n",
		},
		{
			"a protocol without a name, by number",
			datapath.Event{Src: netip.MustParseAddr("192.0.2.9"), Dst: netip.MustParseAddr("192.0.2.1"), Action: 0, Hook: datapath.HookEgress, Proto: 99, Len: 40, Rule: "192.0.2.1/32:proto/99"},
			"DST 192.0.2.1, ACTION 0 hook=egress src=192.0.2.9 proto=99 rule=192.0.2.1/32:proto/99 len=40\n",
		},
		{
			"packet socket refused",
			datapath.Event{Action: 0, Hook: datapath.HookSockCreate, SockFamily: 17, SockType: 3},
			"DST -, ACTION 0 hook=sock_create socket=packet/raw\n",
		},
		{
			"malformed in audit mode",
			datapath.Event{Action: 0, Hook: datapath.HookEgress, Len: 10, Malformed: true, Audit: true},
			"DST -, ACTION 0 hook=egress reason=malformed len=10 audit=true\n",
		},
		{
			"watched cgroup",
			datapath.Event{Dst: netip.MustParseAddr("192.0.2.1"), Action: 0, Hook: datapath.HookConnect, Proto: 6, DstPort: 80, RuleID: 2, Rule: "192.0.2.1/32", Cgroup: "/sys/fs/cgroup/system.slice/web.service"},
			"DST 192.0.2.1, ACTION 0 hook=connect proto=tcp dport=80 rule=192.0.2.1/32 cgroup=/sys/fs/cgroup/system.slice/web.service\n",
		},
		{
			"dated, to the millisecond in UTC, before the cgroup",
			datapath.Event{Time: time.Date(2026, 1, 2, 3, 4, 5, 678_901_234, time.FixedZone("CET", 3600)), Dst: netip.MustParseAddr("192.0.2.1"), Action: 0, Hook: datapath.HookConnect, Proto: 6, DstPort: 80, Rule: "default", Cgroup: "/sys/fs/cgroup/web"},
			"DST 192.0.2.1, ACTION 0 hook=connect proto=tcp dport=80 rule=default time=2026-01-02T02:04:05.678Z cgroup=/sys/fs/cgroup/web\n",
		},
		{
			// FuzzWrite found that a value could end the line.
			"values that would break the line are quoted",
			datapath.Event{Dst: netip.MustParseAddr("192.0.2.1"), Action: 0, Hook: datapath.HookEgress, Proto: 6, Rule: "\r", Cgroup: "/sys/fs/cgroup/my app"},
			`DST 192.0.2.1, ACTION 0 hook=egress proto=tcp rule="\r" cgroup="/sys/fs/cgroup/my app"` + "\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := Write(&b, Text, tc.e); err != nil {
				t.Fatal(err)
			}
			if b.String() != tc.want {
				t.Errorf("got  %q\nwant %q", b.String(), tc.want)
			}
		})
	}
}

func TestWriteJSON(t *testing.T) {
	var b bytes.Buffer
	e := datapath.Event{Time: time.Date(2026, 1, 2, 3, 4, 5, 6_000_000, time.UTC), Dst: netip.MustParseAddr("192.0.2.7"), Action: 0, Hook: datapath.HookEgress, Proto: 6, SrcPort: 1, DstPort: 443, Len: 60, RuleID: 3, Rule: "192.0.2.0/24:tcp/443"}
	if err := Write(&b, JSON, e); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("not one JSON object: %q: %v", b.String(), err)
	}
	for k, v := range map[string]any{"dst": "192.0.2.7", "action": 0.0, "verdict": "drop", "proto": "tcp", "dport": 443.0, "rule": "192.0.2.0/24:tcp/443", "rule_id": 3.0, "time": "2026-01-02T03:04:05.006Z"} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (in %s)", k, got[k], v, b.String())
		}
	}
	if bytes.Count(b.Bytes(), []byte("\n")) != 1 {
		t.Errorf("want exactly one line, got %q", b.String())
	}
}

func TestParseFormat(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Format
		ok   bool
	}{
		{"text", Text, true},
		{"json", JSON, true},
		{"yaml", 0, false},
		{"JSON", 0, false},
		{"", 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			f, err := ParseFormat(tc.in)
			if (err == nil) != tc.ok || f != tc.want {
				t.Errorf("ParseFormat(%q) = %v, %v", tc.in, f, err)
			}
		})
	}
}
