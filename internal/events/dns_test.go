package events

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
	"time"
)

func TestWriteDNSText(t *testing.T) {
	server := netip.MustParseAddrPort("127.0.0.53:53")
	for _, tc := range []struct {
		name string
		e    DNS
		want string
	}{
		{
			"NXDOMAIN by default",
			DNS{Name: "other.test", QType: 1, Action: 0, Rule: "default"},
			"DNS other.test, ACTION 0 hook=dns qtype=A rule=default\n",
		},
		{
			"resolved by a wildcard, forwarded",
			DNS{Name: "api.github.com", QType: 28, Action: 1, Rule: "*.github.com:tcp/443", RuleID: 4, Server: server},
			"DNS api.github.com, ACTION 1 hook=dns qtype=AAAA rule=*.github.com:tcp/443 server=127.0.0.53:53\n",
		},
		{
			"audit, dated, in a watched cgroup",
			DNS{Time: time.Date(2026, 1, 2, 3, 4, 5, 678_901_234, time.UTC), Name: "x.test", QType: 255, Action: 0, Audit: true, Rule: "x.test", RuleID: 2, Server: server, Cgroup: "/sys/fs/cgroup/web"},
			"DNS x.test, ACTION 0 hook=dns qtype=ANY rule=x.test server=127.0.0.53:53 audit=true time=2026-01-02T03:04:05.678Z cgroup=/sys/fs/cgroup/web\n",
		},
		{
			"the server did not answer",
			DNS{Name: "a.test", QType: 65, Action: 0, Rule: "a.test", Server: server, Err: "read udp: i/o timeout"},
			`DNS a.test, ACTION 0 hook=dns qtype=HTTPS rule=a.test server=127.0.0.53:53 error="read udp: i/o timeout"` + "\n",
		},
		{
			"an unnamed type, and the root",
			DNS{Name: "", QType: 65280, Action: 0, Rule: "default"},
			"DNS ., ACTION 0 hook=dns qtype=TYPE65280 rule=default\n",
		},
		{
			"a name that would break the line is quoted",
			DNS{Name: "a b\n.test", QType: 16, Action: 0, Rule: "default"},
			`DNS "a b\n.test", ACTION 0 hook=dns qtype=TXT rule=default` + "\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := WriteDNS(&b, Text, tc.e); err != nil {
				t.Fatal(err)
			}
			if b.String() != tc.want {
				t.Errorf("got  %q\nwant %q", b.String(), tc.want)
			}
		})
	}
}

func TestWriteDNSJSON(t *testing.T) {
	var b bytes.Buffer
	e := DNS{Time: time.Date(2026, 1, 2, 3, 4, 5, 6_000_000, time.UTC), Name: "other.test", QType: 1, Action: 0, Rule: "default", Server: netip.MustParseAddrPort("[::1]:53")}
	if err := WriteDNS(&b, JSON, e); err != nil {
		t.Fatal(err)
	}
	want := `{"name":"other.test","action":0,"verdict":"nxdomain","hook":"dns","qtype":"A","rule":"default","rule_id":0,"server":"[::1]:53","audit":false,"time":"2026-01-02T03:04:05.006Z"}` + "\n"
	if b.String() != want {
		t.Errorf("got  %s\nwant %s", b.String(), want)
	}
	e.Action, e.Audit = 1, true
	b.Reset()
	WriteDNS(&b, JSON, e)
	var got map[string]any
	if err := json.Unmarshal(b.Bytes(), &got); err != nil || got["verdict"] != "resolved" || got["audit"] != true {
		t.Errorf("resolved in audit mode: %s (%v)", b.String(), err)
	}
	b.Reset()
	WriteDNS(&b, JSON, DNS{Name: "a.test", Action: 0, Err: "i/o timeout"})
	if err := json.Unmarshal(b.Bytes(), &got); err != nil || got["verdict"] != "servfail" || got["error"] != "i/o timeout" {
		t.Errorf("SERVFAIL: %s (%v)", b.String(), err)
	}
}
