package cli_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cgwall/cgwall/internal/cli"
)

// TestBadFilesEveryCommand checks that every command that reads a policy
// refuses a file that says nothing, says two things, or is no file to read,
// in one line that names it, and exits 2 before it needs privileges. Each
// would have been read as a policy that allows everything, or hung.
func TestBadFilesEveryCommand(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	empty := write(t, dir, "empty.yaml", "")
	comments := write(t, dir, "comments.yaml", "# the web tier's policy\n\n")
	multi := write(t, dir, "multi.yaml", "egress:\n  block: [192.0.2.1]\n---\negress:\n  block: [192.0.2.2]\n")
	badList := write(t, dir, "bad.txt", "192.0.2.1\nbad-1\nbad-2\n")
	for _, tc := range []usageCase{
		{"an empty file", []string{"-f", empty}, empty + ":1: the policy file is empty: it has no keys, only comments or blank space; give at least one key (see docs/policy.md), or {} for a policy with no rules"},
		{"only comments", []string{"-f", comments}, comments + ":1: the policy file is empty"},
		{"-f ''", []string{"-f", ""}, "policy file: empty file name: give the path of a file"},
		{"--block-list ''", []string{"--block-list", ""}, "--block-list: list file: empty file name: give the path of a file"},
		{"two documents", []string{"-f", multi}, multi + ":3: a second YAML document starts here: a policy file is one document"},
		{"a FIFO", []string{"-f", fifo}, "policy file: " + fifo + ": is a pipe (FIFO), not a regular file"},
		{"a FIFO list", []string{"--block-list", fifo}, "--block-list: list file: " + fifo + ": is a pipe (FIFO), not a regular file"},
		{"/dev/zero", []string{"-f", "/dev/zero"}, "policy file: /dev/zero: is a character device, not a regular file"},
		{"/dev/zero as a list", []string{"--allow-in-list", "/dev/zero"}, "--allow-in-list: list file: /dev/zero: is a character device, not a regular file"},
		{"a zone", []string{"--block", "fe80::%lo/64"}, `--block: "fe80::%lo/64" is not a valid CIDR: an IPv6 zone (%name) is not allowed in a rule`},
	} {
		for _, cmd := range []string{"check", "run", "exec", "attach"} {
			t.Run(cmd+" "+tc.name, func(t *testing.T) {
				args := append([]string{cmd}, tc.args...)
				if cmd == "exec" {
					args = append(args, "--", "true")
				}
				stdout, stderr, code := cgwallWithin(t, args...)
				want := 2
				if cmd == "exec" {
					want = 125 // exec's own errors, apart from its command's statuses
				}
				if code != want || stdout != "" {
					t.Errorf("exit %d, stdout %q; want %d and nothing", code, stdout, want)
				}
				if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "cgwall: ") || !strings.Contains(stderr, tc.want) {
					t.Errorf("stderr %q: want one line containing %q", stderr, tc.want)
				}
			})
		}
	}
	// The one-line error of a list file points at the check that lists it.
	_, stderr, code := cgwallWithin(t, "run", "--block-in-list", badList)
	if want := "cgwall: --block-in-list: " + badList + `:2: "bad-1" is not a valid IPv4 or IPv6 address (and 1 more; 'cgwall check --block-in-list ` + badList + "' lists them all)\n"; code != 2 || stderr != want {
		t.Errorf("exit %d, stderr %q\nwant %q", code, stderr, want)
	}
}

// cgwallWithin is cgwall that fails the test if the command has not returned
// in 10 s: reading a FIFO would block.
func cgwallWithin(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	type result struct {
		stdout, stderr string
		code           int
	}
	done := make(chan result, 1)
	go func() {
		var out, errOut bytes.Buffer
		code := cli.Main(context.Background(), args, &out, &errOut)
		done <- result{out.String(), errOut.String(), code}
	}()
	select {
	case r := <-done:
		return r.stdout, r.stderr, r.code
	case <-time.After(10 * time.Second):
		t.Fatalf("cgwall %s: still running after 10 s", strings.Join(args, " "))
		return "", "", 0
	}
}

// TestInterruptedRead checks that a command whose context is done while it
// reads its policy gives up, says so and that nothing was changed, and exits
// 1: it was not the input's fault.
func TestInterruptedRead(t *testing.T) {
	dir := t.TempDir()
	good := write(t, dir, "good.yaml", "egress:\n  block: [192.0.2.1]\n  block_lists: [list.txt]\n")
	write(t, dir, "list.txt", "198.51.100.0/24\n")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errors.New("interrupt signal received"))
	for _, args := range [][]string{
		{"check", "-f", good},
		{"attach", "--cgroup", "/cgwall-no-such-cgroup", "-f", good},
		{"check", "--block-list", filepath.Join(dir, "list.txt")},
	} {
		var out, errOut bytes.Buffer
		code := cli.Main(ctx, args, &out, &errOut)
		if want := "cgwall: interrupt signal received while reading the policy: nothing was changed\n"; code != 1 || out.String() != "" || errOut.String() != want {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 1 and %q", strings.Join(args, " "), code, out.String(), errOut.String(), want)
		}
	}
}
