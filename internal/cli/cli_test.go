package cli_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cgwall/cgwall/internal/cli"
)

// cgwall runs the command line as the binary would and returns what it
// printed and its exit code.
func cgwall(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = cli.Main(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), code
}

// write writes a file in a folder of the test's and returns its path.
func write(t *testing.T, dir, name, text string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const webPolicy = `# the example of docs/policy.md
egress:
  default: allow
  block:
    - 192.0.2.1
    - 198.51.100.0/24
    - "2001:db8::/32"
  allow:
    - 198.51.100.7
ingress:
  default: allow
  block: [203.0.113.0/24]
  allow: []
audit: false
log: drop
deny_raw: false
`

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	web := write(t, dir, "web.yaml", webPolicy)
	strict := write(t, dir, "strict.yaml", "egress:\n  default: block\n  allow: [192.0.2.10]\nlog: all\n")
	list := write(t, dir, "block.txt", "# blocklist\n192.0.2.1\n198.51.100.0/24   # a range\n2001:db8::/32\n")
	for _, tc := range []struct {
		name string
		args []string
		want []string // stdout, line by line
	}{
		{"the docs' example", []string{"-f", web}, []string{
			web + ": valid policy",
			"  egress: default allow; IPv4: 2 block, 1 allow; IPv6: 1 block, 0 allow",
			"  ingress: default allow; IPv4: 1 block, 0 allow; IPv6: 0 block, 0 allow",
			"  audit off, log drop, deny_raw off",
		}},
		{"flags only", []string{"--block", "192.0.2.1", "--allow-in", "2001:db8::1", "--default-in", "block", "--audit"}, []string{
			"flags: valid policy",
			"  egress: default allow; IPv4: 1 block, 0 allow; IPv6: 0 block, 0 allow",
			"  ingress: default block; IPv4: 0 block, 0 allow; IPv6: 0 block, 1 allow",
			"  audit on, log drop, deny_raw off",
		}},
		{"a list file", []string{"--block-list", list, "--deny-raw"}, []string{
			"flags: valid policy",
			"  egress: default allow; IPv4: 2 block, 0 allow; IPv6: 1 block, 0 allow",
			"  ingress: default allow; IPv4: 0 block, 0 allow; IPv6: 0 block, 0 allow",
			"  audit off, log drop, deny_raw on",
		}},
		{"flags add to the file", []string{"-f", web, "--allow", "192.0.2.9", "--block-in-list", list}, []string{
			web + ": valid policy",
			"  egress: default allow; IPv4: 2 block, 2 allow; IPv6: 1 block, 0 allow",
			"  ingress: default allow; IPv4: 3 block, 0 allow; IPv6: 1 block, 0 allow",
			"  audit off, log drop, deny_raw off",
		}},
		// The file's settings win over the flags' defaults...
		{"the file's settings", []string{"-f", strict}, []string{
			strict + ": valid policy",
			"  egress: default block; IPv4: 0 block, 1 allow; IPv6: 0 block, 0 allow",
			"  ingress: default allow; IPv4: 0 block, 0 allow; IPv6: 0 block, 0 allow",
			"  audit off, log all, deny_raw off",
		}},
		// ...and a flag given wins over the file, even when it says what
		// the flag's default says.
		{"flags override the file", []string{"-f", strict, "--default", "allow", "--log", "drop"}, []string{
			strict + ": valid policy",
			"  egress: default allow; IPv4: 0 block, 1 allow; IPv6: 0 block, 0 allow",
			"  ingress: default allow; IPv4: 0 block, 0 allow; IPv6: 0 block, 0 allow",
			"  audit off, log drop, deny_raw off",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkValid(t, tc.args, tc.want)
		})
	}
}

// TestCheckBadFiles checks that check names every problem at its file:line,
// one a line, and exits 2 with nothing on stdout.
func TestCheckBadFiles(t *testing.T) {
	dir := t.TempDir()
	bad := write(t, dir, "bad.yaml", `egress:
  default: maybe
  block: [1.1.1.300, 10.0.0.0/8]
  allow: [10.0.0.0/8]
ingress:
  bloc: [192.0.2.1]
`)
	badList := write(t, dir, "bad.txt", "192.0.2.1\n192.0.2.300\n\nnot-an-address # a comment\n")
	for _, tc := range []struct {
		name string
		args []string
		want []string // stderr, line by line
	}{
		{"every problem of a file", []string{"-f", bad}, []string{
			"cgwall: " + bad + `:2: egress.default: "maybe" is not an action: use allow or block`,
			"cgwall: " + bad + `:3: egress.block: "1.1.1.300" is not a valid IPv4 or IPv6 address`,
			"cgwall: " + bad + ":4: egress.allow: 10.0.0.0/8 is also blocked at line 3: a rule is either blocked or allowed",
			"cgwall: " + bad + `:6: unknown key "bloc" in ingress: known keys are default, block, allow, block_lists, allow_lists (4 problems)`,
		}},
		{"one problem", []string{"-f", write(t, dir, "one.yaml", "log: verbose\n")}, []string{
			"cgwall: " + filepath.Join(dir, "one.yaml") + `:1: log: "verbose" is not a log level: use none, drop or all`,
		}},
		{"YAML syntax", []string{"-f", write(t, dir, "syntax.yaml", "egress:\n  block: [192.0.2.1]\n  allow: a: b\n")}, []string{
			"cgwall: " + filepath.Join(dir, "syntax.yaml") + ":3: invalid YAML: mapping values are not allowed in this context",
		}},
		{"a missing file", []string{"-f", filepath.Join(dir, "nope.yaml")}, []string{
			"cgwall: policy file: " + filepath.Join(dir, "nope.yaml") + ": no such file or directory",
		}},
		{"a list file", []string{"--allow-list", badList}, []string{
			"cgwall: " + badList + `:2: "192.0.2.300" is not a valid IPv4 or IPv6 address`,
			"cgwall: " + badList + `:4: "not-an-address" is not a valid IPv4 or IPv6 address (2 problems)`,
		}},
		{"a list file against a flag", []string{"--block", "192.0.2.1", "--allow-list", write(t, dir, "one.txt", "192.0.2.1\n")}, []string{
			"cgwall: --allow-list: " + filepath.Join(dir, "one.txt") + ":1: 192.0.2.1/32 is both blocked and allowed for egress",
		}},
		{"a flag against the file", []string{"-f", write(t, dir, "ok.yaml", "egress:\n  block: [192.0.2.1]\n"), "--allow", "192.0.2.1"}, []string{
			"cgwall: --allow: 192.0.2.1/32 is both blocked and allowed for egress",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkRefused(t, tc.args, tc.want)
		})
	}
}

type usageCase struct {
	name string
	args []string
	want string // in the one line on stderr
}

// TestUsageErrors checks that bad input is named in one line and exits 2. All
// of it is refused before cgwall needs privileges or touches the kernel.
func TestUsageErrors(t *testing.T) {
	cases := []usageCase{
		{"unknown flag", []string{"run", "--blok", "192.0.2.1"}, "unknown flag: --blok"},
		{"unknown command", []string{"firewall"}, `unknown command "firewall" for "cgwall"`},
		{"stray argument", []string{"check", "192.0.2.1"}, `unknown command "192.0.2.1" for "cgwall check"`},
		{"flag without its value", []string{"check", "--default"}, "flag needs an argument: --default"},
		{"bool with a value", []string{"check", "--audit=maybe"}, `invalid argument "maybe" for "--audit" flag`},
		{"bad address", []string{"check", "--block", "1.1.1.300"}, `--block: "1.1.1.300" is not a valid IPv4 or IPv6 address`},
		{"host bits set", []string{"check", "--allow-in", "10.0.0.1/8"}, "--allow-in: \"10.0.0.1/8\" has bits set after the /8 prefix: did you mean 10.0.0.0/8?"},
		{"run without a cgroup", []string{"run", "--block", "192.0.2.1"}, "--cgroup is required"},
		{"attach without a cgroup", []string{"attach", "--block", "192.0.2.1"}, "--cgroup is required"},
		{"detach without a cgroup", []string{"detach"}, "myapp (or every policy: cgwall detach --all)"},
		{"block without a cgroup", []string{"block", "192.0.2.9"}, "/myapp 192.0.2.1;"},
		{"two cgroups", []string{"run", "--cgroup", "/", "--pid", "1"}, "--cgroup and --pid both name a cgroup: give one"},
		{"bad pid", []string{"run", "--pid", "init"}, `--pid: "init" is not a process ID`},
		{"cgroup that is not there", []string{"run", "--cgroup", "/cgwall-no-such-cgroup"}, "cgroup /cgwall-no-such-cgroup does not exist"},
		{"exec without --", []string{"exec", "--block", "192.0.2.1", "true"}, "put the command after --: cgwall exec [flags] -- CMD [ARG...]"},
		{"exec without a command", []string{"exec", "--block", "192.0.2.1", "--"}, "requires at least 1 arg(s), only received 0"},
		{"watch --show none", []string{"watch", "--show", "none"}, `--show: "none" is not a filter: use drop or all`},
		{"watch --log, deprecated", []string{"watch", "--log", "every"}, `--log: "every" is not a filter: use drop or all`},
		{"list -o", []string{"list", "-o", "xml"}, `-o/--format: "xml" is not an output format: use text or json`},
		{"list --output", []string{"list", "--output=yaml"}, `-o/--format: "yaml" is not an output format: use text or json`},
	}
	// The setting flags are refused alike by every command that takes them.
	for _, cmd := range []string{"run", "exec", "check", "attach"} {
		cases = append(cases,
			usageCase{cmd + " --default", []string{cmd, "--default", "deny", "--", "true"}, `--default: "deny" is not an action: use allow or block`},
			usageCase{cmd + " --default-in", []string{cmd, "--default-in", "", "--", "true"}, `--default-in: "" is not an action: use allow or block`},
			usageCase{cmd + " --log", []string{cmd, "--log=some", "--", "true"}, `--log: "some" is not a log level: use none, drop or all`},
		)
	}
	for _, cmd := range []string{"run", "exec", "watch", "list"} {
		cases = append(cases, usageCase{cmd + " --format", []string{cmd, "--format", "xml", "--", "true"}, `--format: "xml" is not an output format: use text or json`})
	}
	for _, tc := range cases {
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

// TestCompletion checks that the shell is offered the words of every flag
// that takes one of a few.
func TestCompletion(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"run", "--default"}, []string{"allow", "block"}},
		{[]string{"attach", "--default-in"}, []string{"allow", "block"}},
		{[]string{"exec", "--log"}, []string{"none", "drop", "all"}},
		{[]string{"check", "--log"}, []string{"none", "drop", "all"}},
		{[]string{"run", "--format"}, []string{"text", "json"}},
		{[]string{"watch", "--show"}, []string{"drop", "all"}},
		{[]string{"watch", "--log"}, []string{"drop", "all"}},
		{[]string{"list", "--format"}, []string{"text", "json"}},
		{[]string{"list", "-o"}, []string{"text", "json"}},
		{[]string{"list", "--output"}, []string{"text", "json"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			stdout, stderr, code := cgwall(t, append(append([]string{"__complete"}, tc.args...), "")...)
			// The words, then the directive: 4 is ShellCompDirectiveNoFileComp.
			if want := strings.Join(append(tc.want, ":4"), "\n") + "\n"; code != 0 || stdout != want {
				t.Errorf("exit %d, stdout %q, stderr %q; want %q", code, stdout, stderr, want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, tc := range []struct {
		cmd      string
		want     []string
		dontWant []string
	}{
		{"watch", []string{
			"--show drop|all ", "(--log is a deprecated alias)",
			"--log is the old name of --show: it still works, but is deprecated",
		}, []string{"--log string", "--log drop|all"}},
		{"list", []string{"-o, --format text|json ", "(--output is an alias)"}, []string{"--output string"}},
		{"run", []string{"--default allow|block ", "--log none|drop|all ", "--format text|json "}, nil},
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
			for _, w := range tc.dontWant {
				if strings.Contains(stdout, w) {
					t.Errorf("%q in\n%s", w, stdout)
				}
			}
		})
	}
}

// checkValid runs check with args and wants exit 0, nothing on stderr and
// want's lines on stdout.
func checkValid(t *testing.T, args, want []string) {
	t.Helper()
	stdout, stderr, code := cgwall(t, append([]string{"check"}, args...)...)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if w := strings.Join(want, "\n") + "\n"; stdout != w {
		t.Errorf("stdout\n%s\nwant\n%s", stdout, w)
	}
}

// checkRefused runs check with args and wants exit 2, nothing on stdout and
// want's lines on stderr.
func checkRefused(t *testing.T, args, want []string) {
	t.Helper()
	stdout, stderr, code := cgwall(t, append([]string{"check"}, args...)...)
	if code != 2 || stdout != "" {
		t.Errorf("exit %d, stdout %q; want 2 and nothing", code, stdout)
	}
	if w := strings.Join(want, "\n") + "\n"; stderr != w {
		t.Errorf("stderr\n%s\nwant\n%s", stderr, w)
	}
}
