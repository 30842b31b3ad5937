package cli_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/cli"
	"github.com/cgwall/cgwall/internal/testutil"
)

// TestMain runs exec's guard, which exec starts as /proc/self/exe, that is
// this test binary, as cgwall's command line rather than as the tests.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "exec" && os.Args[2] == "__guard" {
		os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestExec checks that exec exits with its command's status and leaves no
// cgroup behind, even when the command leaves a process running.
func TestExec(t *testing.T) {
	testutil.RequireBPF(t)
	mnt, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		script string
		code   int
	}{
		{"success", "true", 0},
		{"exit status", "exit 3", 3},
		{"killed by a signal", "kill -TERM $$", 128 + 15},
		{"a process left running", "sleep 1000 & exit 0", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := cgwall(t, "exec", "--block", "192.0.2.1", "--", "sh", "-c", tc.script)
			if code != tc.code || stderr != "" {
				t.Errorf("exit %d, stderr %q; want %d and nothing", code, stderr, tc.code)
			}
			left, _ := filepath.Glob(filepath.Join(mnt, fmt.Sprintf("cgwall-exec-%d-*", os.Getpid())))
			for _, path := range left {
				t.Errorf("cgroup %s left behind", path)
				testutil.RemoveCgroup(t, path)
			}
		})
	}
}

// usageCode is the exit code of bad input: 2, but 125 for exec, whose own
// errors must not look like its command's (TestExecExitCodes in e2e has
// them all).
func usageCode(args []string) int {
	if args[0] == "exec" {
		return 125
	}
	return 2
}

// TestOwnHelp checks that exec's usage line puts its flags before the
// command, that its help lists its exit codes, and that each edit verb has
// help of its own, with examples.
func TestOwnHelp(t *testing.T) {
	for _, tc := range []struct {
		cmd  string
		want []string
	}{
		{"exec", []string{"Usage:\n  cgwall exec [flags] -- CMD [ARG...]\n", "\n  125  cgwall's own error", "\n  126  CMD was found but cannot be run", "\n  127  CMD, or the interpreter", "nsdelegate", "Examples:\n  cgwall exec --block 192.0.2.1 -- "}},
		{"block", []string{"block adds a block rule for each ADDR", "Examples:\n  cgwall block --cgroup myapp 192.0.2.1", "The change is in force when the command returns."}},
		{"allow", []string{"allow adds an allow rule for each ADDR", "Examples:\n  cgwall allow --cgroup myapp 192.0.2.10", "The change is in force when the command returns."}},
		{"remove", []string{"remove takes away the rule for each ADDR", "Examples:\n  cgwall remove --cgroup myapp 192.0.2.1", "The change is in force when the command returns."}},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			stdout, stderr, code := cgwall(t, tc.cmd, "--help")
			if code != 0 || stderr != "" {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("no %q in\n%s", w, stdout)
				}
			}
		})
	}
	stdout, _, code := cgwall(t, "--version")
	if code != 0 || !strings.HasPrefix(stdout, "cgwall ") || !strings.Contains(stdout, "\nbuilt with go") {
		t.Errorf("cgwall --version: exit %d, %q", code, stdout)
	}
}
