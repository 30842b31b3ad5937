package testutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDNS checks the fixture against real clients: dig over UDP and TCP, and
// getent through the C library with the fixture's resolv.conf.
func TestDNS(t *testing.T) {
	requireRoot(t)
	ns := testNetNS(t)
	d := StartDNS(t, Zone{
		Hosts: map[string][]string{
			"a.test":  {"127.0.0.2", "::1"},
			"v6.test": {"2001:db8::7"},
		},
		CNAMEs: map[string]string{"alias.test": "a.test", "alias2.test": "alias.test"},
		TTL:    3 * time.Second,
	}, DNSOptions{NetNS: ns})

	for _, tc := range []struct {
		argv []string
		want string
	}{
		{[]string{"dig", "+short", "a.test"}, "127.0.0.2\n"},
		{[]string{"dig", "+short", "+tcp", "AAAA", "a.test"}, "::1\n"},
		{[]string{"dig", "+short", "AAAA", "v6.test"}, "2001:db8::7\n"},
		{[]string{"dig", "+short", "alias2.test"}, "alias.test.\na.test.\n127.0.0.2\n"},
		{[]string{"dig", "+noall", "+answer", "a.test"}, "a.test.\t\t\t3\tIN\tA\t127.0.0.2\n"},
		{[]string{"dig", "+noall", "+comments", "nope.test"}, "status: NXDOMAIN"},
		// getent hosts asks for AAAA first; the canonical name comes first.
		{[]string{"getent", "hosts", "alias.test"}, "::1             a.test alias.test\n"},
		{[]string{"sh", "-c", "cat /etc/resolv.conf"}, "nameserver 127.0.0.53\n"},
	} {
		out, err := d.Command(tc.argv...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%s: %v; got %q, want %q in it", strings.Join(tc.argv, " "), err, out, tc.want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := d.WaitQuery(ctx, "AAAA", "v6.test"); err != nil {
		t.Error(err)
	}
	if !d.Queried("alias2.test") || d.Queried("b.test") {
		t.Errorf("Queried is wrong about alias2.test or b.test; log:\n%s", d.Log)
	}
	// The host's own resolv.conf is untouched.
	if host, err := os.ReadFile("/etc/resolv.conf"); err != nil || strings.Contains(string(host), "127.0.0.53") {
		t.Errorf("the host's /etc/resolv.conf: %q, %v", host, err)
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and this test needs root")
		}
		t.Skip("this test needs root")
	}
}

// testNetNS makes a network namespace with loopback up, and removes it at
// the end of the test.
func testNetNS(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("cgwall-testutil-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	for _, args := range [][]string{{"netns", "add", name}, {"-n", name, "link", "set", "lo", "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		if args[0] == "netns" {
			t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
		}
	}
	return "/run/netns/" + name
}
