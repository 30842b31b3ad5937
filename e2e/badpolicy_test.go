package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadPolicies feeds bad policy files and flags to run: each is named in one
// line, exits 2 and attaches nothing. check reports the same problem.
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
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"file: bad address", []string{"-f", file("addr.yaml", "egress:\n  block: [1.1.1.300]\n")}, `addr.yaml:2: egress.block: "1.1.1.300" is not a valid IPv4 or IPv6 address`},
		{"file: bad CIDR", []string{"-f", file("cidr.yaml", "egress:\n  block:\n    - 10.0.0.0/33\n")}, `cidr.yaml:3: egress.block: "10.0.0.0/33" is not a valid CIDR`},
		{"file: empty address", []string{"-f", file("empty.yaml", "ingress:\n  allow: [\"\"]\n")}, "empty.yaml:2: ingress.allow: empty address"},
		{"file: blocked and allowed", []string{"-f", file("both.yaml", "egress:\n  block: [192.0.2.0/24]\n  allow: [192.0.2.0/24]\n")}, "both.yaml:3: egress.allow: 192.0.2.0/24 is also blocked at line 2"},
		{"file: unknown key", []string{"-f", file("key.yaml", "egress:\n  blocks: [192.0.2.1]\n")}, `key.yaml:2: unknown key "blocks" in egress`},
		{"file: unknown top-level key", []string{"-f", file("top.yaml", "firewall: on\n")}, `top.yaml:1: unknown key "firewall" in the policy`},
		{"file: bad default", []string{"-f", file("def.yaml", "egress:\n  default: deny\n")}, `def.yaml:2: egress.default: "deny" is not an action`},
		{"file: bad log", []string{"-f", file("log.yaml", "log: verbose\n")}, `log.yaml:1: log: "verbose" is not a log level`},
		{"file: audit not a boolean", []string{"-f", file("audit.yaml", "audit: sometimes\n")}, `audit.yaml:1: audit: "sometimes" is not a boolean`},
		{"file: list where a mapping belongs", []string{"-f", file("list.yaml", "egress: [192.0.2.1]\n")}, "list.yaml:1: egress must be a mapping"},
		{"file: address list is a string", []string{"-f", file("str.yaml", "egress:\n  block: 192.0.2.1\n")}, `str.yaml:2: egress.block must be a list of addresses, not "192.0.2.1"`},
		{"file: repeated key", []string{"-f", file("rep.yaml", "audit: true\naudit: false\n")}, "rep.yaml:2: audit is repeated (first at line 1)"},
		{"file: YAML syntax", []string{"-f", file("syntax.yaml", "egress:\n  block: [192.0.2.1\n")}, "syntax.yaml:"},
		{"file: not a policy at all", []string{"-f", file("scalar.yaml", "just words\n")}, "scalar.yaml:1: the policy must be a mapping"},
		{"file: missing", []string{"-f", filepath.Join(dir, "nope.yaml")}, "policy file: " + filepath.Join(dir, "nope.yaml") + ": no such file or directory"},
		{"file: a directory", []string{"-f", dir}, "policy file: " + dir + ": is a directory"},
		{"flag conflicts with file", []string{"-f", file("ok.yaml", "egress:\n  block: [192.0.2.1]\n"), "--allow", "192.0.2.1"}, "--allow: 192.0.2.1/32 is both blocked and allowed for egress"},
		{"flags conflict", []string{"--block-in", "2001:db8::/32", "--allow-in", "2001:db8::/32"}, "--allow-in: 2001:db8::/32 is both blocked and allowed for ingress"},
		{"bad --allow", []string{"--allow", "10.0.0.0/8/8"}, `--allow: "10.0.0.0/8/8" is not a valid CIDR`},
		{"bad --block-in", []string{"--block-in", "2001:db8::zz"}, `--block-in: "2001:db8::zz" is not a valid`},
		{"bad --default", []string{"--default", "deny"}, `--default: "deny" is not an action: use allow or block`},
		{"bad --default-in", []string{"--default-in", ""}, `--default-in: "" is not an action`},
		{"--audit with a value", []string{"--audit=maybe"}, `invalid argument "maybe" for "--audit"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runCgwall(t, append([]string{"run", "--cgroup", cg}, tc.args...)...)
			checkOneLineError(t, stderr, code, 2, tc.want)
			if stdout != "" {
				t.Errorf("stdout %q", stdout)
			}
			if n := attachedCount(t, cg); n != 0 {
				t.Errorf("%d programs attached after a failed run", n)
			}
			_, stderr, code = runCgwall(t, append([]string{"check"}, tc.args...)...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Errorf("check: exit %d, stderr %q; want 2 and %q", code, stderr, tc.want)
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
