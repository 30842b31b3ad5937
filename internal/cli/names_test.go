package cli_test

import (
	"strings"
	"testing"
)

// badNames are name rules that every command refuses, each with what its
// one-line message must say: the token, quoted. The messages are
// policy.ParseRule's; these check that every way in reaches it, and that a
// bad name is explained as a name, not as an address.
var badNames = []struct {
	name, rule, want string
}{
	{"an empty label", "a..test", `"a..test"`},
	{"an empty first label", ".a.test", `".a.test"`},
	{"a lone star", "*", `"*"`},
	{"a star inside", "a.*.test", `"a.*.test"`},
	{"a star in a label", "*a.test", `"*a.test"`},
	{"a star at the end", "a.test.*", `"a.test.*"`},
	{"two stars", "*.*.test", `"*.*.test"`},
	{"a leading hyphen", "-a.test", `"-a.test"`},
	{"a trailing hyphen", "a-.test", `"a-.test"`},
	{"an underscore", "a_b.test", `"a_b.test"`},
	{"a space", "a b.test", `"a b.test"`},
	{"a label over 63 bytes", strings.Repeat("a", 64) + ".test", strings.Repeat("a", 64)},
	{"a name over 253 bytes", strings.Repeat("abcdefghi.", 26) + "test", strings.Repeat("abcdefghi.", 3)},
	{"a port on a bad name", "a..test:443", `"a..test`},
	{"non-ASCII, with its punycode", "bücher.test", "xn--bcher-kva.test"},
	{"non-ASCII in a wildcard", "*.münchen.test", "xn--mnchen-3ya.test"},
}

// TestBadNames checks that a bad name is refused in one line that names it,
// exiting 2 (125 for exec), by every command and flag that takes rules,
// before cgwall needs privileges or touches the kernel.
func TestBadNames(t *testing.T) {
	if len(badNames) < 10 {
		t.Fatalf("%d bad names; the issue asks for at least 10", len(badNames))
	}
	for _, bad := range badNames {
		for _, tc := range []struct {
			args   []string
			prefix string // what the message starts with after "cgwall: "
		}{
			// With =, and after --, so that "-a.test" is not a flag.
			{[]string{"check", "--block=" + bad.rule}, "--block: "},
			{[]string{"check", "--default", "block", "--allow=" + bad.rule}, "--allow: "},
			{[]string{"run", "--cgroup", "myapp", "--allow=" + bad.rule}, "--allow: "},
			{[]string{"attach", "--cgroup", "myapp", "--block=" + bad.rule}, "--block: "},
			{[]string{"exec", "--default", "block", "--allow=" + bad.rule, "--", "true"}, "--allow: "},
			{[]string{"block", "--cgroup", "myapp", "--", "192.0.2.9:tcp/443", bad.rule}, ""},
			{[]string{"allow", "--cgroup", "myapp", "--", bad.rule}, ""},
		} {
			t.Run(bad.name+"/"+strings.Join(tc.args[:len(tc.args)-1], " "), func(t *testing.T) {
				stdout, stderr, code := cgwall(t, tc.args...)
				if want := usageCode(tc.args); code != want || stdout != "" {
					t.Errorf("exit %d, stdout %q; want %d and nothing", code, stdout, want)
				}
				if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "cgwall: "+tc.prefix) || !strings.Contains(stderr, bad.want) {
					t.Errorf("stderr %q: want one line starting %q and containing %q", stderr, "cgwall: "+tc.prefix, bad.want)
				}
				if strings.Contains(stderr, "IPv4") {
					t.Errorf("stderr %q: a bad name is explained as an address", stderr)
				}
			})
		}
	}
}

// TestNameErrors checks the errors of names that are well formed but cannot
// be used where they are given, and of the DNS flags.
func TestNameErrors(t *testing.T) {
	// attach with name rules needs a running agent: e2e's
	// TestNamesAttachRefused and TestAgentNames.
	const noEdit = "live edits take no name rules: put them in the policy's file and attach it again"
	for _, tc := range []usageCase{
		{"an ingress name", []string{"check", "--allow-in", "a.test"}, "--allow-in: a.test: name rules match egress destinations only"},
		{"an ingress name with a port", []string{"check", "--default-in", "block", "--allow-in", "*.a.test:tcp/22"}, "name rules match egress destinations only"},
		{"an ingress name in exec", []string{"exec", "--block-in", "a.test", "--", "true"}, "name rules match egress destinations only"},
		{"the same name blocked and allowed", []string{"check", "--block", "a.test:443", "--allow", "A.Test.:tcp/443"}, "a.test:tcp/443 is both blocked and allowed for egress"},
		{"block", []string{"block", "--cgroup", "myapp", "192.0.2.1", "a.test"}, "block: a.test: " + noEdit},
		{"allow", []string{"allow", "--cgroup", "myapp", "*.a.test:443"}, "allow: *.a.test:443: " + noEdit},
		{"--dns-upstream a name", []string{"run", "--cgroup", "myapp", "--allow", "192.0.2.1", "--dns-upstream", "dns.test"}, `--dns-upstream: "dns.test" is not an address: use ADDR or ADDR:PORT`},
		{"--dns-upstream port 0", []string{"exec", "--dns-upstream", "192.0.2.53:0", "--", "true"}, `--dns-upstream: "192.0.2.53:0" is not an address`},
		{"--dns-upstream IPv6 without brackets", []string{"run", "--cgroup", "myapp", "--dns-upstream", "2001:db8::53:99999"}, "an IPv6 address takes brackets when a port follows"},
		{"--dns-upstream empty", []string{"run", "--cgroup", "myapp", "--dns-upstream", ""}, `--dns-upstream: "" is not an address`},
		{"--dns-min-ttl below a second", []string{"run", "--cgroup", "myapp", "--dns-min-ttl", "500ms"}, "--dns-min-ttl: 500ms is less than 1s"},
		{"--dns-min-ttl not a duration", []string{"exec", "--dns-min-ttl", "60", "--", "true"}, `invalid argument "60" for "--dns-min-ttl" flag`},
		{"--dns-max-addresses 0", []string{"run", "--cgroup", "myapp", "--dns-max-addresses", "0"}, "--dns-max-addresses: 0 is not a number of addresses: use 1 or more (default 256)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := cgwall(t, tc.args...)
			if want := usageCode(tc.args); code != want || stdout != "" {
				t.Errorf("exit %d, stdout %q; want %d and nothing", code, stdout, want)
			}
			if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "cgwall: ") || !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q: want one line containing %q", stderr, tc.want)
			}
		})
	}
}

// TestCheckNames checks that names are valid rules in flags, files and list
// files, and that check names a bad one at its file:line.
func TestCheckNames(t *testing.T) {
	dir := t.TempDir()
	good := write(t, dir, "names.yaml", `egress:
  default: block
  allow:
    - github.com:443
    - "*.githubusercontent.com:tcp/443"
    - ntp.example.org:udp/123
    - Example.COM.
  block: [ads.example.com]
`)
	list := write(t, dir, "names.txt", "# names\nregistry.npmjs.org:443\n*.example.net  # a wildcard\n192.0.2.1\n")
	for _, args := range [][]string{
		{"-f", good},
		{"--allow-list", list, "--default", "block"},
		{"--block", "a.test", "--allow", "*.b.test:tcp/443", "--allow", "192.0.2.1"},
	} {
		stdout, stderr, code := cgwall(t, append([]string{"check"}, args...)...)
		if code != 0 || stderr != "" || !strings.Contains(stdout, ": valid policy\n") {
			t.Errorf("check %s: exit %d, stdout %q, stderr %q", strings.Join(args, " "), code, stdout, stderr)
		}
	}

	bad := write(t, dir, "bad.yaml", "egress:\n  default: block\n  allow:\n    - a..test\n    - github.com:443\n    - \"*.*.test\"\n")
	badList := write(t, dir, "bad.txt", "ok.test\n-bad.test\n\nbücher.test # a comment\n")
	for _, tc := range []struct {
		name string
		args []string
		want []string // a line of stderr each, in order, from "cgwall: FILE:LINE: "
	}{
		{"a policy file", []string{"-f", bad}, []string{bad + `:4: egress.allow: "a..test"`, bad + `:6: egress.allow: "*.*.test"`}},
		{"a list file", []string{"--allow-list", badList}, []string{badList + `:2: "-bad.test"`, badList + `:4: "bücher.test"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := cgwall(t, append([]string{"check"}, tc.args...)...)
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if code != 2 || stdout != "" || len(lines) != len(tc.want) {
				t.Fatalf("exit %d, stdout %q, stderr:\n%s\nwant exit 2 and %d lines", code, stdout, stderr, len(tc.want))
			}
			for i, want := range tc.want {
				if !strings.HasPrefix(lines[i], "cgwall: "+want) {
					t.Errorf("line %d: %q, want it to start %q", i+1, lines[i], "cgwall: "+want)
				}
			}
		})
	}
}
