package cli

import (
	"net/netip"
	"testing"
)

func TestParseUpstream(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.53":            "192.0.2.53:53",
		"192.0.2.53:5353":       "192.0.2.53:5353",
		"2001:db8::53":          "[2001:db8::53]:53",
		"[2001:db8::53]:5353":   "[2001:db8::53]:5353",
		"::ffff:192.0.2.53":     "192.0.2.53:53",
		"[::ffff:192.0.2.53]:1": "192.0.2.53:1",
	} {
		got, err := parseUpstream(in)
		if err != nil || got != netip.MustParseAddrPort(want) {
			t.Errorf("parseUpstream(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "dns.test", "192.0.2.53:0", "192.0.2.53:65536", "fe80::1%eth0", "[fe80::1%eth0]:53", "192.0.2.53:", ":53"} {
		if got, err := parseUpstream(in); err == nil {
			t.Errorf("parseUpstream(%q) = %v, want an error", in, got)
		}
	}
}
