package cli_test

import (
	"strings"
	"testing"
)

// badPortRules are rules by port and protocol that every command refuses,
// each with what its one-line message must say. The messages are
// policy.ParseRule's; these check that every way in reaches it.
var badPortRules = []struct {
	name, rule, want string
}{
	{"port 0", "192.0.2.1:0", `"192.0.2.1:0": "0" is not a port: use a number from 1 to 65535`},
	{"port 65536", "192.0.2.1:65536", `"192.0.2.1:65536": "65536" is not a port: use a number from 1 to 65535`},
	{"tcp port 0", "192.0.2.1:tcp/0", `"192.0.2.1:tcp/0": "0" is not a port`},
	{"range past 65535", "192.0.2.1:65535-65536", `"65536" is not a port`},
	{"reversed range", "198.51.100.0/24:udp/9000-8000", `range "9000-8000" is reversed: write 8000-9000`},
	{"range without its end", "198.51.100.0/24:tcp/8000-", `"198.51.100.0/24:tcp/8000-": "" is not a port`},
	{"a port on icmp", "192.0.2.1:icmp/8", "icmp has no ports: write icmp alone"},
	{"a port on icmp, any", "any:icmp/8", `"any:icmp/8": icmp has no ports`},
	{"unknown protocol", "192.0.2.1:tpc/443", `"tpc" is not a protocol: use tcp, udp, sctp, icmp, icmpv6`},
	{"a service name for a port", "192.0.2.1:tcp/https", `"https" is not a port`},
	{"protocol without its port", "192.0.2.1:tcp/", `"192.0.2.1:tcp/": "" is not a port`},
	{"empty after the colon", "192.0.2.1:", "has nothing after the colon: give a port (443), a range (8000-8999), a protocol (tcp) or both (tcp/443)"},
	{"empty after the bracket's colon", "[2001:db8::1]:", `"[2001:db8::1]:" has nothing after the colon`},
	{"no address", ":443", `":443" has no address before the colon`},
	{"missing bracket", "[2001:db8::1:tcp/443", "has no closing bracket: write [2001:db8::1]:tcp/443"},
	{"no colon after the bracket", "[2001:db8::1]443", `has "443" after the bracket: ports follow a colon`},
	{"protocol number 0", "192.0.2.1:proto/0", `"0" is not a protocol number: use 1 to 255`},
	{"protocol number 256", "192.0.2.1:proto/256", `"256" is not a protocol number`},
	{"proto without its number", "192.0.2.1:proto", "names no protocol number: write proto/47"},
	{"icmp on IPv6", "[2001:db8::1]:icmp", "icmp is IPv4's: write icmpv6 for IPv6"},
	{"icmpv6 on IPv4", "192.0.2.0/24:icmpv6", "icmpv6 is IPv6's: write icmp for IPv4"},
	{"leading zero", "192.0.2.1:tcp/0443", `"0443" is not a port`},
	{"leading zero, both protocols", "192.0.2.1:08080", `"08080" is not a port`},
	{"a port after a bad address", "192.0.2.300:443", `"192.0.2.300" is not a valid IPv4 or IPv6 address`},
}

// TestBadPortRules checks that a bad port rule is refused in one line that
// names it, exiting 2 (125 for exec), by every command and flag that takes
// rules, before cgwall needs privileges or touches the kernel.
func TestBadPortRules(t *testing.T) {
	if len(badPortRules) < 15 {
		t.Fatalf("%d bad port rules; the issue asks for at least 15", len(badPortRules))
	}
	for _, bad := range badPortRules {
		for _, tc := range []struct {
			args   []string
			prefix string // what the message starts with after "cgwall: "
		}{
			{[]string{"check", "--block", bad.rule}, "--block: "},
			{[]string{"check", "--allow-in", bad.rule}, "--allow-in: "},
			{[]string{"run", "--cgroup", "myapp", "--allow", bad.rule}, "--allow: "},
			{[]string{"attach", "--cgroup", "myapp", "--block-in", bad.rule}, "--block-in: "},
			{[]string{"exec", "--default", "block", "--allow", bad.rule, "--", "true"}, "--allow: "},
			{[]string{"block", "--cgroup", "myapp", "192.0.2.9:tcp/443", bad.rule}, ""},
			{[]string{"allow", "--cgroup", "myapp", "--in", bad.rule}, ""},
			{[]string{"remove", "--cgroup", "myapp", bad.rule}, ""},
		} {
			t.Run(bad.name+"/"+tc.args[0]+" "+tc.args[len(tc.args)-2], func(t *testing.T) {
				stdout, stderr, code := cgwall(t, tc.args...)
				if want := usageCode(tc.args); code != want || stdout != "" {
					t.Errorf("exit %d, stdout %q; want %d and nothing", code, stdout, want)
				}
				if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "cgwall: "+tc.prefix) || !strings.Contains(stderr, bad.want) {
					t.Errorf("stderr %q: want one line starting %q and containing %q", stderr, "cgwall: "+tc.prefix, bad.want)
				}
			})
		}
	}
}

// TestCheckPortRules checks that every form of the table is a valid
// rule, in flags, in a policy file and in a list file, and counts as the
// rules it stands for: ADDR:PORT is a TCP and a UDP rule, any one of each
// family.
func TestCheckPortRules(t *testing.T) {
	dir := t.TempDir()
	file := write(t, dir, "ports.yaml", `egress:
  default: block
  allow:
    - 192.0.2.1:443
    - "[2001:db8::1]:tcp/443"
    - "[2001:db8::/32]:udp/53"
    - 198.51.100.0/24:tcp/8000-8999
    - any:udp/53
    - 10.0.0.0/8:icmp
ingress:
  default: block
  allow: [198.51.100.0/24:tcp/22]
`)
	list := write(t, dir, "ports.txt", "# a list of port rules\n192.0.2.1:tcp/25\n198.51.100.0/24:udp/5000-5999  # a range\n[2001:db8::2]:sctp/3868\nany:tcp/23\n203.0.113.0/24\n")
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"every form as a flag", []string{
			"--block", "192.0.2.1", "--block", "192.0.2.2:443", "--block", "192.0.2.3:8000-8999",
			"--block", "192.0.2.4:tcp/443", "--block", "192.0.2.5:udp/5000-5999", "--block", "192.0.2.6:sctp/3868",
			"--block", "192.0.2.7:tcp", "--block", "192.0.2.8:icmp", "--block", "[2001:db8::8]:icmpv6",
			"--block", "192.0.2.9:proto/47", "--block", "any:tcp/22", "--block", "[2001:db8::1]:TCP/443",
		}, []string{
			"flags: valid policy",
			"  egress: default allow; IPv4: 12 block, 0 allow; IPv6: 3 block, 0 allow",
			"  ingress: default allow; IPv4: 0 block, 0 allow; IPv6: 0 block, 0 allow",
			"  audit off, log drop, deny_raw off",
		}},
		{"ingress by local port", []string{"--default-in", "block", "--allow-in", "198.51.100.0/24:tcp/22", "--allow-in", "any:udp/53"}, []string{
			"flags: valid policy",
			"  egress: default allow; IPv4: 0 block, 0 allow; IPv6: 0 block, 0 allow",
			"  ingress: default block; IPv4: 0 block, 2 allow; IPv6: 0 block, 1 allow",
			"  audit off, log drop, deny_raw off",
		}},
		{"a range allowed inside a blocked prefix", []string{"--block", "198.51.100.0/24", "--allow", "198.51.100.7:tcp/8000-8999", "--allow", "198.51.100.7:tcp/8080"}, []string{
			"flags: valid policy",
			"  egress: default allow; IPv4: 1 block, 2 allow; IPv6: 0 block, 0 allow",
			"  ingress: default allow; IPv4: 0 block, 0 allow; IPv6: 0 block, 0 allow",
			"  audit off, log drop, deny_raw off",
		}},
		{"a policy file", []string{"-f", file}, []string{
			file + ": valid policy",
			"  egress: default block; IPv4: 0 block, 5 allow; IPv6: 0 block, 3 allow",
			"  ingress: default block; IPv4: 0 block, 1 allow; IPv6: 0 block, 0 allow",
			"  audit off, log drop, deny_raw off",
		}},
		{"a list file", []string{"--block-list", list}, []string{
			"flags: valid policy",
			"  egress: default allow; IPv4: 4 block, 0 allow; IPv6: 2 block, 0 allow",
			"  ingress: default allow; IPv4: 0 block, 0 allow; IPv6: 0 block, 0 allow",
			"  audit off, log drop, deny_raw off",
		}},
		// Without brackets, the last group is the address's: an IPv6
		// address, no port.
		{"an IPv6 address without brackets", []string{"--block", "2001:db8::1:443"}, []string{
			"flags: valid policy",
			"  egress: default allow; IPv4: 0 block, 0 allow; IPv6: 1 block, 0 allow",
			"  ingress: default allow; IPv4: 0 block, 0 allow; IPv6: 0 block, 0 allow",
			"  audit off, log drop, deny_raw off",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkValid(t, tc.args, tc.want)
		})
	}
}

// TestCheckBadPortFiles checks that check names each bad port rule of a
// policy file or a list file at its file:line.
func TestCheckBadPortFiles(t *testing.T) {
	dir := t.TempDir()
	bad := write(t, dir, "bad.yaml", `egress:
  block:
    - 192.0.2.1:0
    - 192.0.2.1:icmp/8
    - 198.51.100.0/24:tcp/8000-8999
  allow:
    - 198.51.100.0/24:tcp/8500-9500
    - 198.51.100.0/24:tcp/8000-8999
ingress:
  allow: ["[2001:db8::1]:icmp", "192.0.2.1:tpc"]
`)
	badList := write(t, dir, "bad.txt", "192.0.2.1:tcp/443\n192.0.2.2:udp/9-1\n\n[2001:db8::1]443  # a comment\n192.0.2.3:icmpv6\n")
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"a policy file", []string{"-f", bad}, []string{
			"cgwall: " + bad + `:3: egress.block: "192.0.2.1:0": "0" is not a port: use a number from 1 to 65535`,
			"cgwall: " + bad + `:4: egress.block: "192.0.2.1:icmp/8": icmp has no ports: write icmp alone`,
			"cgwall: " + bad + ":7: egress.allow: 198.51.100.0/24:tcp/8500-9500 overlaps 198.51.100.0/24:tcp/8000-8999 for egress: port ranges of one address and protocol may nest but not overlap partly",
			"cgwall: " + bad + ":8: egress.allow: 198.51.100.0/24:tcp/8000-8999 is also blocked at line 5: a rule is either blocked or allowed",
			"cgwall: " + bad + `:10: ingress.allow: "[2001:db8::1]:icmp": icmp is IPv4's: write icmpv6 for IPv6`,
			"cgwall: " + bad + `:10: ingress.allow: "192.0.2.1:tpc": "tpc" is not a protocol: use tcp, udp, sctp, icmp, icmpv6, gre, esp, ah, or proto/N for another one (6 problems)`,
		}},
		{"a list file", []string{"--allow-in-list", badList}, []string{
			"cgwall: " + badList + `:2: "192.0.2.2:udp/9-1": range "9-1" is reversed: write 1-9`,
			"cgwall: " + badList + `:4: "[2001:db8::1]443" has "443" after the bracket: ports follow a colon, as in [2001:db8::1]:tcp/443`,
			"cgwall: " + badList + `:5: "192.0.2.3:icmpv6": icmpv6 is IPv6's: write icmp for IPv4 (3 problems)`,
		}},
		{"a port rule against a list file", []string{"--block", "192.0.2.1:tcp/443", "--allow-list", badList}, []string{
			"cgwall: " + badList + ":1: 192.0.2.1/32:tcp/443 is both blocked and allowed for egress",
			"cgwall: " + badList + `:2: "192.0.2.2:udp/9-1": range "9-1" is reversed: write 1-9`,
			"cgwall: " + badList + `:4: "[2001:db8::1]443" has "443" after the bracket: ports follow a colon, as in [2001:db8::1]:tcp/443`,
			"cgwall: " + badList + `:5: "192.0.2.3:icmpv6": icmpv6 is IPv6's: write icmp for IPv4 (4 problems)`,
		}},
		{"ranges of flags that overlap partly", []string{"--block", "192.0.2.0/24:udp/1000-2000", "--allow", "192.0.2.0/24:udp/1500-2500"}, []string{
			"cgwall: --allow: 192.0.2.0/24:udp/1500-2500 overlaps 192.0.2.0/24:udp/1000-2000 for egress: port ranges of one address and protocol may nest but not overlap partly",
		}},
		{"the same port rule blocked and allowed, in two forms", []string{"--block", "192.0.2.1:443", "--allow", "192.0.2.1/32:UDP/443"}, []string{
			"cgwall: --allow: 192.0.2.1/32:udp/443 is both blocked and allowed for egress",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkRefused(t, tc.args, tc.want)
		})
	}
}

// TestPortHelp checks that every command that takes rules says their form,
// with port examples.
func TestPortHelp(t *testing.T) {
	for _, tc := range []struct {
		cmd  string
		want []string
	}{
		{"run", []string{"--block ADDR[:PORTS] ", "--allow-in ADDR[:PORTS] ", "--block-list FILE ", "one ADDR[:PORTS] a line", "A rule is ADDR[:PORTS].", "198.51.100.0/24:tcp/8000-8999"}},
		{"attach", []string{"--block ADDR[:PORTS] ", "A rule is ADDR[:PORTS].", "--allow-in 198.51.100.0/24:tcp/22"}},
		{"check", []string{"--allow ADDR[:PORTS] ", "198.51.100.7:tcp/8000-8999"}},
		{"exec", []string{"--block ADDR[:PORTS] ", "--allow 192.0.2.10:tcp/443"}},
		{"block", []string{"block --cgroup PATH [--in] ADDR[:PORTS]...", "192.0.2.10:tcp/25 any:udp/5353"}},
		{"allow", []string{"allow --cgroup PATH [--in] ADDR[:PORTS]...", "198.51.100.7:tcp/8000-8999"}},
		{"remove", []string{"remove --cgroup PATH [--in] ADDR[:PORTS]...", "any:tcp/22 the IPv4 and the IPv6 one", "as 'cgwall list' shows it"}},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			stdout, _, code := cgwall(t, tc.cmd, "--help")
			if code != 0 {
				t.Fatalf("exit %d", code)
			}
			for _, w := range tc.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("no %q in\n%s", w, stdout)
				}
			}
		})
	}
}
