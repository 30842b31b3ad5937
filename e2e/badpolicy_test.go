package e2e

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cgwall/cgwall/internal/policy"
)

// execUsageExit is what exec exits with for bad input of its own, as opposed
// to its command's exit status.
const execUsageExit = 125

// badCase is bad input to run, attach, check and exec, and what each says.
type badCase struct {
	name      string
	args      []string
	want      string
	checkWant string // what check says, where it differs from want
	dontWant  string
}

// TestBadPolicies feeds bad policy files and flags to run and attach: each is
// named in one line, exits 2 and attaches nothing. check and exec report the
// same problem. A case that would have hung (a FIFO) fails instead; what a
// file holds that is not a policy's or list's (dontWant) is never printed.
func TestBadPolicies(t *testing.T) {
	cg, _ := testCgroup(t)
	dir := t.TempDir()
	file := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := file("big.yaml", "")
	if err := os.Truncate(big, policy.MaxFileSize+1); err != nil { // sparse: no disk
		t.Fatal(err)
	}
	long := strings.Repeat("x", 5<<20)
	secret := "root:$y$j9T$e2eSecretHash:19000:0:99999:7:::"
	file("secret.txt", secret+"\n192.0.2.1\n")
	badList := file("bad.txt", "192.0.2.1\nbad-1\nbad-2\n")
	cases := []badCase{
		{name: "file: empty", args: []string{"-f", file("blank.yaml", "")}, want: "blank.yaml:1: the policy file is empty: it has no keys, only comments or blank space; give at least one key (see docs/policy.md), or {} for a policy with no rules"},
		{name: "file: only comments", args: []string{"-f", file("comments.yaml", "# to do\n\n")}, want: "comments.yaml:1: the policy file is empty"},
		{name: "file: only a document marker", args: []string{"-f", file("marker.yaml", "---\n")}, want: "marker.yaml:1: the policy file is empty"},
		{name: "file: empty name", args: []string{"-f", ""}, want: "policy file: empty file name: give the path of a file"},
		{name: "file: two documents", args: []string{"-f", file("multi.yaml", "egress:\n  block: [192.0.2.1]\n# and then\n---\negress:\n  block: [192.0.2.2]\n")}, want: "multi.yaml:4: a second YAML document starts here: a policy file is one document; merge them, or remove the '---' or '...' that splits them"},
		{name: "file: a FIFO", args: []string{"-f", fifo}, want: "policy file: " + fifo + ": is a pipe (FIFO), not a regular file: write what it gives to a file, and name that"},
		{name: "file: /dev/zero", args: []string{"-f", "/dev/zero"}, want: "policy file: /dev/zero: is a character device, not a regular file"},
		{name: "file: over the size limit", args: []string{"-f", big}, want: fmt.Sprintf("policy file: %s: is %d bytes, more than 512 MiB, the most cgwall reads of one file", big, policy.MaxFileSize+1)},
		{name: "file: a FIFO as a list", args: []string{"-f", file("fifolist.yaml", "egress:\n  block_lists: [fifo]\n")}, want: "fifolist.yaml:2: egress.block_lists: list file: " + fifo + ": is a pipe (FIFO), not a regular file"},
		{name: "file: a secret as a list", args: []string{"-f", file("secretlist.yaml", "egress:\n  block_lists: [secret.txt]\n")}, want: "secretlist.yaml:2: egress.block_lists: " + filepath.Join(dir, "secret.txt") + ":1: not a list file: its first entry is not an IPv4 or IPv6 address or CIDR, so no line of it is shown", dontWant: "e2eSecretHash"},
		{name: "file: a secret as the policy", args: []string{"-f", file("secret.conf", secret+"\nbin:*:19000:0:99999:7:::\n")}, want: "secret.conf:1: the policy has none of the keys egress, ingress, audit, log, deny_raw, targets, and keys that are not names: is this a policy file? (none of it is shown)", dontWant: "e2eSecretHash"},
		{name: "file: a 5 MB value", args: []string{"-f", file("long.yaml", "log: "+long+"\n")}, want: `long.yaml:1: log: "` + long[:80] + `"… (5242880 bytes) is not a log level: use none, drop or all`, dontWant: long[:81]},
		{name: "file: a zone", args: []string{"-f", file("zone.yaml", "egress:\n  block: [\"fe80::%lo/64\"]\n")}, want: `zone.yaml:2: egress.block: "fe80::%lo/64" is not a valid CIDR: an IPv6 zone (%name) is not allowed in a rule`},
		{name: "--block-list: a FIFO", args: []string{"--block-list", fifo}, want: "--block-list: list file: " + fifo + ": is a pipe (FIFO), not a regular file"},
		{name: "--block-list: /dev/zero", args: []string{"--block-list", "/dev/zero"}, want: "--block-list: list file: /dev/zero: is a character device, not a regular file"},
		{name: "--allow-list: over the size limit", args: []string{"--allow-list", big}, want: fmt.Sprintf("--allow-list: list file: %s: is %d bytes, more than 512 MiB", big, policy.MaxFileSize+1)},
		{name: "--block-in-list: a secret", args: []string{"--block-in-list", filepath.Join(dir, "secret.txt")}, want: "secret.txt:1: not a list file", dontWant: "e2eSecretHash"},
		{name: "--block-in-list: the hint", args: []string{"--block-in-list", badList}, want: `bad.txt:2: "bad-1" is not a valid IPv4 or IPv6 address (and 1 more; 'cgwall check --block-in-list ` + badList + "' lists them all)", checkWant: `bad.txt:3: "bad-2" is not a valid IPv4 or IPv6 address (2 problems)`},
		{name: "--block: a zone", args: []string{"--block", "fe80::%lo/64"}, want: `--block: "fe80::%lo/64" is not a valid CIDR: an IPv6 zone (%name) is not allowed in a rule`},
		{name: "--block: an address with a zone", args: []string{"--block", "fe80::1%lo"}, want: `--block: "fe80::1%lo" is not a valid IPv4 or IPv6 address: an IPv6 zone (%name) is not allowed in a rule`},
	}
	cases = append(cases, badPortCases(file)...)
	// The machine's own shadow file, where it has one: read as a list or as
	// a policy, none of it is printed.
	if shadow, err := os.ReadFile("/etc/shadow"); err == nil && len(shadow) > 0 {
		first, _, _ := strings.Cut(string(shadow), "\n")
		cases = append(cases,
			badCase{name: "file: /etc/shadow as a list", args: []string{"-f", file("shadow.yaml", "egress:\n  block_lists: [/etc/shadow]\n")}, want: "shadow.yaml:2: egress.block_lists: /etc/shadow:1: not a list file", dontWant: first},
			badCase{name: "--block-list: /etc/shadow", args: []string{"--block-list", "/etc/shadow"}, want: "--block-list: /etc/shadow:1: not a list file", dontWant: first},
		)
	}
	for _, tc := range append([]badCase{
		{"file: bad address", []string{"-f", file("addr.yaml", "egress:\n  block: [1.1.1.300]\n")}, `addr.yaml:2: egress.block: "1.1.1.300" is not a valid IPv4 or IPv6 address`, "", ""},
		{"file: bad CIDR", []string{"-f", file("cidr.yaml", "egress:\n  block:\n    - 10.0.0.0/33\n")}, `cidr.yaml:3: egress.block: "10.0.0.0/33" is not a valid CIDR`, "", ""},
		{"file: empty address", []string{"-f", file("empty.yaml", "ingress:\n  allow: [\"\"]\n")}, "empty.yaml:2: ingress.allow: empty address", "", ""},
		{"file: blocked and allowed", []string{"-f", file("both.yaml", "egress:\n  block: [192.0.2.0/24]\n  allow: [192.0.2.0/24]\n")}, "both.yaml:3: egress.allow: 192.0.2.0/24 is also blocked at line 2", "", ""},
		{"file: unknown key", []string{"-f", file("key.yaml", "egress:\n  blocks: [192.0.2.1]\n")}, `key.yaml:2: unknown key "blocks" in egress`, "", ""},
		{"file: unknown top-level key", []string{"-f", file("top.yaml", "firewall: on\n")}, `top.yaml:1: unknown key "firewall" in the policy`, "", ""},
		{"file: bad default", []string{"-f", file("def.yaml", "egress:\n  default: deny\n")}, `def.yaml:2: egress.default: "deny" is not an action`, "", ""},
		{"file: bad log", []string{"-f", file("log.yaml", "log: verbose\n")}, `log.yaml:1: log: "verbose" is not a log level`, "", ""},
		{"file: audit not a boolean", []string{"-f", file("audit.yaml", "audit: sometimes\n")}, `audit.yaml:1: audit: "sometimes" is not a boolean`, "", ""},
		{"file: list where a mapping belongs", []string{"-f", file("list.yaml", "egress: [192.0.2.1]\n")}, "list.yaml:1: egress must be a mapping", "", ""},
		{"file: address list is a string", []string{"-f", file("str.yaml", "egress:\n  block: 192.0.2.1\n")}, `str.yaml:2: egress.block must be a list of addresses, not "192.0.2.1"`, "", ""},
		{"file: repeated key", []string{"-f", file("rep.yaml", "audit: true\naudit: false\n")}, "rep.yaml:2: audit is repeated (first at line 1)", "", ""},
		{"file: YAML syntax", []string{"-f", file("syntax.yaml", "egress:\n  block: [192.0.2.1\n")}, "syntax.yaml:", "", ""},
		{"file: not a policy at all", []string{"-f", file("scalar.yaml", "just words\n")}, "scalar.yaml:1: the policy must be a mapping", "", "just words"},
		{"file: missing", []string{"-f", filepath.Join(dir, "nope.yaml")}, "policy file: " + filepath.Join(dir, "nope.yaml") + ": no such file or directory", "", ""},
		{"file: a directory", []string{"-f", dir}, "policy file: " + dir + ": is a directory", "", ""},
		{"flag conflicts with file", []string{"-f", file("ok.yaml", "egress:\n  block: [192.0.2.1]\n"), "--allow", "192.0.2.1"}, "--allow: 192.0.2.1/32 is both blocked and allowed for egress", "", ""},
		{"flags conflict", []string{"--block-in", "2001:db8::/32", "--allow-in", "2001:db8::/32"}, "--allow-in: 2001:db8::/32 is both blocked and allowed for ingress", "", ""},
		{"bad --allow", []string{"--allow", "10.0.0.0/8/8"}, `--allow: "10.0.0.0/8/8" is not a valid CIDR`, "", ""},
		{"bad --block-in", []string{"--block-in", "2001:db8::zz"}, `--block-in: "2001:db8::zz" is not a valid`, "", ""},
		{"bad --default", []string{"--default", "deny"}, `--default: "deny" is not an action: use allow or block`, "", ""},
		{"bad --default-in", []string{"--default-in", ""}, `--default-in: "" is not an action`, "", ""},
		{"--audit with a value", []string{"--audit=maybe"}, `invalid argument "maybe" for "--audit"`, "", ""},
	}, cases...) {
		t.Run(tc.name, func(t *testing.T) {
			for _, cmd := range []string{"run", "attach"} {
				stdout, stderr, code := runCgwall(t, append([]string{cmd, "--cgroup", cg}, tc.args...)...)
				if code == 0 && cmd == "attach" {
					t.Cleanup(func() { runCgwall(t, "detach", "--cgroup", cg) })
				}
				checkOneLineError(t, stderr, code, 2, tc.want)
				if stdout != "" {
					t.Errorf("%s: stdout %q", cmd, stdout)
				}
				if tc.dontWant != "" && strings.Contains(stderr, tc.dontWant) {
					t.Errorf("%s: stderr %.300q has %.100q", cmd, stderr, tc.dontWant)
				}
				if n := attachedCount(t, cg); n != 0 {
					t.Errorf("%d programs attached after a failed %s", n, cmd)
				}
			}
			checkWant := cmp.Or(tc.checkWant, tc.want)
			_, stderr, code := runCgwall(t, append([]string{"check"}, tc.args...)...)
			if code != 2 || !strings.Contains(stderr, checkWant) || tc.dontWant != "" && strings.Contains(stderr, tc.dontWant) {
				t.Errorf("check: exit %d, stderr %.500q; want 2 and %q", code, stderr, checkWant)
			}
			_, stderr, code = runCgwall(t, append(append([]string{"exec"}, tc.args...), "--", "true")...)
			if code != execUsageExit || !strings.Contains(stderr, tc.want) || tc.dontWant != "" && strings.Contains(stderr, tc.dontWant) {
				t.Errorf("exec: exit %d, stderr %.500q; want %d and %q", code, stderr, execUsageExit, tc.want)
			}
		})
	}
}

// TestCheck validates a good file and lists every problem of a bad one.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(`egress:
  default: block
  allow: [192.0.2.1, 198.51.100.0/24, "2001:db8::/32"]
ingress:
  block: [203.0.113.0/24]
audit: true
`), 0o600)
	stdout, stderr, code := runCgwall(t, "check", "-f", good)
	want := good + `: valid policy
  egress: default block; IPv4: 0 block, 2 allow; IPv6: 0 block, 1 allow
  ingress: default allow; IPv4: 1 block, 0 allow; IPv6: 0 block, 0 allow
  audit on, log drop, deny_raw off
`
	if code != 0 || stdout != want || stderr != "" {
		t.Errorf("check of a good file: exit %d\nstdout:\n%s\nwant:\n%s\nstderr: %s", code, stdout, want, stderr)
	}

	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(`egress:
  default: maybe
  block: [1.1.1.300, 10.0.0.0/8]
  allow: [10.0.0.0/8]
ingress:
  bloc: [192.0.2.1]
`), 0o600)
	stdout, stderr, code = runCgwall(t, "check", "-f", bad)
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	wantLines := []string{
		"cgwall: " + bad + `:2: egress.default: "maybe" is not an action`,
		"cgwall: " + bad + `:3: egress.block: "1.1.1.300" is not a valid IPv4 or IPv6 address`,
		"cgwall: " + bad + ":4: egress.allow: 10.0.0.0/8 is also blocked at line 3",
		"cgwall: " + bad + `:6: unknown key "bloc" in ingress`,
	}
	if code != 2 || stdout != "" || len(lines) != len(wantLines) {
		t.Fatalf("check of a bad file: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
	for i, w := range wantLines {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want it to start with %q", i, lines[i], w)
		}
	}
}

// badPortCases are bad port rules for TestBadPolicies, each named in one
// line by run, attach, check and exec, with exit 2 (125 for exec) and
// nothing attached: in every rule flag, in a policy file at its line, and in
// a list file at its line. file writes a file in the test's folder.
func badPortCases(file func(name, text string) string) []badCase {
	cases := []badCase{
		{name: "port: 0", args: []string{"--block", "192.0.2.1:0"}, want: `--block: "192.0.2.1:0": "0" is not a port: use a number from 1 to 65535`},
		{name: "port: 65536", args: []string{"--block", "192.0.2.1:tcp/65536"}, want: `--block: "192.0.2.1:tcp/65536": "65536" is not a port: use a number from 1 to 65535`},
		{name: "port: range past 65535", args: []string{"--allow", "192.0.2.1:65000-65536"}, want: `--allow: "192.0.2.1:65000-65536": "65536" is not a port`},
		{name: "port: reversed range", args: []string{"--block-in", "198.51.100.0/24:udp/9000-8000"}, want: `--block-in: "198.51.100.0/24:udp/9000-8000": range "9000-8000" is reversed: write 8000-9000`},
		{name: "port: on icmp", args: []string{"--block", "192.0.2.1:icmp/8"}, want: `--block: "192.0.2.1:icmp/8": icmp has no ports: write icmp alone`},
		{name: "port: unknown protocol", args: []string{"--allow-in", "192.0.2.1:tpc/22"}, want: `--allow-in: "192.0.2.1:tpc/22": "tpc" is not a protocol: use tcp, udp, sctp, icmp, icmpv6, gre, esp, ah, or proto/N for another one`},
		{name: "port: protocol without its port", args: []string{"--block", "192.0.2.1:tcp/"}, want: `--block: "192.0.2.1:tcp/": "" is not a port`},
		{name: "port: empty after the colon", args: []string{"--block", "192.0.2.1:"}, want: `--block: "192.0.2.1:" has nothing after the colon: give a port (443), a range (8000-8999), a protocol (tcp) or both (tcp/443)`},
		{name: "port: no address", args: []string{"--block", ":443"}, want: `--block: ":443" has no address before the colon`},
		{name: "port: missing bracket", args: []string{"--block", "[2001:db8::1:tcp/443"}, want: `--block: "[2001:db8::1:tcp/443" has no closing bracket: write [2001:db8::1]:tcp/443`},
		{name: "port: no colon after the bracket", args: []string{"--allow", "[2001:db8::1]443"}, want: `--allow: "[2001:db8::1]443" has "443" after the bracket: ports follow a colon, as in [2001:db8::1]:tcp/443`},
		{name: "port: protocol number 0", args: []string{"--block", "192.0.2.1:proto/0"}, want: `--block: "192.0.2.1:proto/0": "0" is not a protocol number: use 1 to 255`},
		{name: "port: protocol number 256", args: []string{"--block", "192.0.2.1:proto/256"}, want: `"256" is not a protocol number: use 1 to 255`},
		{name: "port: icmp on IPv6", args: []string{"--block", "[2001:db8::1]:icmp"}, want: `--block: "[2001:db8::1]:icmp": icmp is IPv4's: write icmpv6 for IPv6`},
		{name: "port: icmpv6 on IPv4", args: []string{"--block-in", "192.0.2.0/24:icmpv6"}, want: `--block-in: "192.0.2.0/24:icmpv6": icmpv6 is IPv6's: write icmp for IPv4`},
		{name: "port: leading zero", args: []string{"--block", "192.0.2.1:tcp/0443"}, want: `--block: "192.0.2.1:tcp/0443": "0443" is not a port`},
		{name: "port: a service name", args: []string{"--allow", "192.0.2.1:tcp/https"}, want: `--allow: "192.0.2.1:tcp/https": "https" is not a port`},
		{name: "port: partial overlap", args: []string{"--block", "192.0.2.0/24:tcp/1000-2000", "--allow", "192.0.2.0/24:tcp/1500-2500"}, want: "--allow: 192.0.2.0/24:tcp/1500-2500 overlaps 192.0.2.0/24:tcp/1000-2000 for egress: port ranges of one address and protocol may nest but not overlap partly"},
		{name: "port: blocked and allowed", args: []string{"--block", "192.0.2.1:443", "--allow", "192.0.2.1/32:udp/443"}, want: "--allow: 192.0.2.1/32:udp/443 is both blocked and allowed for egress"},
		{name: "port: file", args: []string{"-f", file("port.yaml", "egress:\n  block:\n    - 192.0.2.1:tcp/443\n    - 192.0.2.1:tcp/0\n")}, want: `port.yaml:4: egress.block: "192.0.2.1:tcp/0": "0" is not a port`},
		{name: "port: file, overlap", args: []string{"-f", file("overlap.yaml", "ingress:\n  allow: [198.51.100.0/24:tcp/8000-8999]\n  block: [198.51.100.0/24:tcp/8500-9500]\n")}, want: "overlap.yaml:3: ingress.block: 198.51.100.0/24:tcp/8500-9500 overlaps 198.51.100.0/24:tcp/8000-8999 for ingress"},
		{name: "port: list file", args: []string{"--block-list", file("ports.txt", "192.0.2.1:tcp/443\n192.0.2.2:icmp/8\n")}, want: `ports.txt:2: "192.0.2.2:icmp/8": icmp has no ports: write icmp alone`},
	}
	return cases
}
