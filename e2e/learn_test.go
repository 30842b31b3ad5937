package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/cgwall/cgwall/internal/testutil"
)

// The tests of learning a policy (issue 13), with the name fixture of
// names_test.go: test hosts in a network namespace of their own, dnsmasq
// answering testZone, real clients.

// curlScript fetches http://HOST:PORT/LABEL for each argument HOST:PORT:LABEL,
// and fails at the first that does not come through.
func curlScript(targets ...string) string {
	var b strings.Builder
	b.WriteString("set -e\n")
	for _, t := range targets {
		hostPort, label, _ := strings.Cut(t, "/")
		b.WriteString("curl -sS --noproxy '*' --connect-timeout 10 -m 12 -o /dev/null http://" + hostPort + "/" + label + "\n")
	}
	return b.String()
}

// learnJob reaches two names (alias.test through a CNAME chain), one address
// that no name gave, two ports of one host, a name over UDP and an address
// by ping.
var learnJob = curlScript("a.test:8080/job-a", "alias.test:8080/job-alias", "192.0.2.12:8081/job-addr", "b.test:8080/job-b0", "b.test:8081/job-b1") +
	`python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"job-udp", ("a.test", 8081))'
ping -n -c 1 -W 5 192.0.2.42 >/dev/null
`

// learnedJob is what learnJob's learned policy allows: every rule names the
// protocol and port used; the DNS to dnsmasq is no rule. ping connects a UDP
// socket to port 1025 of its target first, which the connect hook judges.
var learnedJob = []string{
	"a.test:tcp/8080", "a.test:udp/8081", "alias.test:tcp/8080", "b.test:tcp/8080", "b.test:tcp/8081",
	"192.0.2.12/32:tcp/8081", "192.0.2.42/32:icmp", "192.0.2.42/32:udp/1025",
}

// learnedFile is the part of a learned file that the tests look at.
type learnedFile struct {
	Egress struct {
		Default string   `yaml:"default"`
		Allow   []string `yaml:"allow"`
		Block   []string `yaml:"block"`
	} `yaml:"egress"`
}

func readLearned(t *testing.T, path string) (learnedFile, string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f learnedFile
	if err := yaml.Unmarshal(data, &f); err != nil {
		t.Fatalf("%s: %v:\n%s", path, err, data)
	}
	return f, string(data)
}

// sameRules compares rule lists as sets.
func sameRules(got, want []string) bool {
	got, want = slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))
	return slices.Equal(got, want)
}

// exec runs cgwall exec with args in the fixture's namespace, its DNS the
// fixture's.
func (n *nameHosts) exec(t *testing.T, args ...string) client {
	t.Helper()
	return n.run(t, "", append([]string{cgwallBin, "exec"}, args...)...)
}

// TestLearn learns the policy of a job, checks it is exactly what the job
// did, runs the job again under it, and checks that what the job never did
// is blocked.
func TestLearn(t *testing.T) {
	testutil.RequireBPF(t)
	n := newNameHosts(t, testZone)
	s := n.serve(t, namesPorts...)
	file := filepath.Join(t.TempDir(), "policy.yaml")

	c := n.exec(t, "--learn", file, "--", "sh", "-c", learnJob)
	if c.code != 0 || !strings.Contains(c.stderr, "learned 8 rules into "+file) {
		t.Fatalf("exec --learn: exit %d; stderr:\n%s", c.code, c.stderr)
	}
	// Nothing was dropped, so the default --log drop printed nothing.
	if strings.Contains(c.stderr, "DNS ") || strings.Contains(c.stderr, "DST ") {
		t.Errorf("exec --learn printed decisions under --log drop:\n%s", c.stderr)
	}
	f, text := readLearned(t, file)
	if f.Egress.Default != "block" || !sameRules(f.Egress.Allow, learnedJob) || len(f.Egress.Block) != 0 {
		t.Errorf("learned default %q, allow %q, block %q; want block, %q, none:\n%s", f.Egress.Default, f.Egress.Allow, f.Egress.Block, learnedJob, text)
	}
	// Each rule says what was seen of it.
	if got := strings.Count(text, "# first "); got != len(learnedJob) {
		t.Errorf("%d rules with a comment, want %d:\n%s", got, len(learnedJob), text)
	}
	if !strings.Contains(text, "curl (pid ") {
		t.Errorf("no rule names curl as what sent:\n%s", text)
	}
	if _, stderr, code := runCgwall(t, "check", "-f", file); code != 0 {
		t.Errorf("check -f of the learned file: exit %d: %s", code, stderr)
	}
	// run takes it as it is, name rules and all.
	run := n.cgwall(t, "run", "--cgroup", testutil.Cgroup(t).Path, "-f", file)
	if code := run.stop(t); code != 0 {
		t.Errorf("run -f of the learned file exited %d", code)
	}

	// The job passes under what it learned.
	if c := n.exec(t, "-f", file, "--", "sh", "-c", strings.ReplaceAll(learnJob, "job-", "again-")); c.code != 0 {
		t.Errorf("the job under its learned policy: exit %d; stderr:\n%s", c.code, c.stderr)
	}
	for _, label := range []string{"again-a", "again-alias", "again-addr", "again-b0"} {
		if got := s.labels(t, "tcp", 8080); !slices.Contains(got, label) && !slices.Contains(s.labels(t, "tcp", 8081), label) {
			t.Errorf("%s never arrived under the learned policy", label)
		}
	}

	// What it never did is blocked: an address, another port of a learned
	// name, an unlisted name (NXDOMAIN).
	never := `! curl -sS --noproxy '*' --connect-timeout 5 http://192.0.2.13:8080/never-addr &&
		! curl -sS --noproxy '*' --connect-timeout 5 http://a.test:8081/never-port &&
		! getent hosts other.test`
	if c := n.exec(t, "-f", file, "--", "sh", "-c", never); c.code != 0 {
		t.Errorf("under the learned policy, something the job never did passed: exit %d; stderr:\n%s", c.code, c.stderr)
	}
	for _, port := range namesPorts {
		for _, got := range s.labels(t, "tcp", port) {
			if strings.HasPrefix(got, "never-") {
				t.Errorf("%s arrived under the learned policy", got)
			}
		}
	}
	noExecCgroupLeft(t)
}

// TestLearnMerge adds a second job's rules to a learned file, keeping what
// it had: rules, order and comments, a comment of the user's too.
func TestLearnMerge(t *testing.T) {
	testutil.RequireBPF(t)
	n := newNameHosts(t, testZone)
	n.serve(t, namesPorts...)
	file := filepath.Join(t.TempDir(), "policy.yaml")
	if c := n.exec(t, "--learn", file, "--", "sh", "-c", curlScript("a.test:8080/one")); c.code != 0 {
		t.Fatalf("first run: exit %d; stderr:\n%s", c.code, c.stderr)
	}
	first, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	mine := "# the build's policy, kept by hand\n" + string(first)
	if err := os.WriteFile(file, []byte(mine), 0o644); err != nil {
		t.Fatal(err)
	}

	c := n.exec(t, "--learn", file, "--learn-merge", "--", "sh", "-c", curlScript("a.test:8080/two", "port.test:8081/two"))
	if c.code != 0 || !strings.Contains(c.stderr, "learned 1 rule into "+file) {
		t.Fatalf("merge: exit %d; stderr:\n%s", c.code, c.stderr)
	}
	f, text := readLearned(t, file)
	if want := []string{"a.test:tcp/8080", "port.test:tcp/8081"}; !slices.Equal(f.Egress.Allow, want) {
		t.Errorf("merged allow %q, want %q in that order:\n%s", f.Egress.Allow, want, text)
	}
	// Everything the file had is still there, in order, before what came.
	for _, line := range strings.Split(strings.TrimSpace(mine), "\n") {
		if !strings.Contains(text, line) {
			t.Errorf("the merge lost %q:\n%s", line, text)
		}
	}
	if c := n.exec(t, "-f", file, "--", "sh", "-c", curlScript("a.test:8080/three", "port.test:8081/three")); c.code != 0 {
		t.Errorf("both jobs under the merged policy: exit %d; stderr:\n%s", c.code, c.stderr)
	}
}

// TestLearnWildcards folds names under a common parent only when asked, and
// never at a public suffix: a.test and b.test stay apart, since test is one.
func TestLearnWildcards(t *testing.T) {
	testutil.RequireBPF(t)
	n := newNameHosts(t, testZone)
	n.serve(t, namesPorts...)
	dir := t.TempDir()
	job := curlScript("x.wild.test:8080/w1", "a.b.c.wild.test:8080/w2", "a.test:8080/w3", "b.test:8080/w4")
	for _, tc := range []struct {
		flags []string
		want  []string
	}{
		{nil, []string{"x.wild.test:tcp/8080", "a.b.c.wild.test:tcp/8080", "a.test:tcp/8080", "b.test:tcp/8080"}},
		{[]string{"--learn-wildcards", "2"}, []string{"*.wild.test:tcp/8080", "a.test:tcp/8080", "b.test:tcp/8080"}},
		{[]string{"--learn-wildcards", "3"}, []string{"x.wild.test:tcp/8080", "a.b.c.wild.test:tcp/8080", "a.test:tcp/8080", "b.test:tcp/8080"}},
	} {
		t.Run(strings.Join(append([]string{"flags"}, tc.flags...), " "), func(t *testing.T) {
			file := filepath.Join(dir, strings.Join(append([]string{"p"}, tc.flags...), "")+".yaml")
			args := append(append([]string{"--learn", file}, tc.flags...), "--", "sh", "-c", job)
			if c := n.exec(t, args...); c.code != 0 {
				t.Fatalf("exit %d; stderr:\n%s", c.code, c.stderr)
			}
			if f, text := readLearned(t, file); !sameRules(f.Egress.Allow, tc.want) {
				t.Errorf("learned %q, want %q:\n%s", f.Egress.Allow, tc.want, text)
			}
		})
	}
}

// TestLearnFailingJob: a job that fails still has what it did written, and
// exec exits with its status.
func TestLearnFailingJob(t *testing.T) {
	testutil.RequireBPF(t)
	n := newNameHosts(t, testZone)
	n.serve(t, namesPorts...)
	// FILE named as a bare name, in the folder exec runs in, on another
	// file system than the temporary folder: written beside itself, it
	// is renamed into place.
	dir, err := os.MkdirTemp("/dev/shm", "cgwall-learn-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	file := filepath.Join(dir, "policy.yaml")
	c := n.run(t, "", "sh", "-c", `cd "$0" && exec "$1" exec --learn policy.yaml -- sh -c "$2"`, dir, cgwallBin, curlScript("a.test:8080/failing")+"exit 3\n")
	if c.code != 3 {
		t.Errorf("exec --learn of a job that exits 3: exit %d; stderr:\n%s", c.code, c.stderr)
	}
	if f, text := readLearned(t, file); !slices.Equal(f.Egress.Allow, []string{"a.test:tcp/8080"}) {
		t.Errorf("learned %q, want a.test:tcp/8080:\n%s", f.Egress.Allow, text)
	}
}

// TestLearnBadInput: each bad use of the learn flags is one line, exit 125,
// and the command never runs, nor is a file left.
func TestLearnBadInput(t *testing.T) {
	testutil.RequireBPF(t)
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing.yaml")
	if err := os.WriteFile(existing, []byte("egress:\n  default: block\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "ran")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--learn", filepath.Join(dir, "p.yaml"), "--learn-wildcards", "1"}, "--learn-wildcards: 1: use 2 or more"},
		{[]string{"--learn", filepath.Join(dir, "p.yaml"), "--learn-wildcards", "-2"}, "--learn-wildcards: -2: use 2 or more"},
		{[]string{"--learn-merge"}, "--learn-merge: it goes with --learn FILE"},
		{[]string{"--learn-wildcards", "2"}, "--learn-wildcards: it goes with --learn FILE"},
		{[]string{"--learn", ""}, "--learn: the FILE to write is empty"},
		{[]string{"--learn", filepath.Join(dir, "no-such-dir", "p.yaml")}, "cannot be written"},
		{[]string{"--learn", dir}, "is not a regular file"},
		{[]string{"--learn", "/dev/null"}, "is not a regular file"},
		{[]string{"--learn", existing, "--learn-merge", "--block", "192.0.2.1"}, "--block cannot be given with it"},
		{[]string{"--learn", existing, "--learn-merge", "-f", existing}, "--file cannot be given with it"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			args := append(append([]string{"exec"}, tc.args...), "--", "touch", marker)
			_, stderr, code := runCgwall(t, args...)
			if code != 125 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want 125 and one line with %q", code, stderr, tc.want)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Error("the command ran")
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Errorf("left in the folder: %v", entries)
			}
		})
	}
}

// TestWatchLearn learns from a cgroup under a persistent policy: the
// policy's rules stay in the file, names come from the DNS answers that
// arrive, and the policy in force still decides meanwhile.
func TestWatchLearn(t *testing.T) {
	testutil.RequireBPF(t)
	n := newNameHosts(t, testZone)
	s := n.serve(t, namesPorts...)
	cg := testutil.Cgroup(t).Path
	cgwallOK(t, "attach", "--cgroup", cg, "--block", "192.0.2.11")
	t.Cleanup(func() { exec.Command(cgwallBin, "detach", "--cgroup", cg).Run() })
	file := filepath.Join(t.TempDir(), "policy.yaml")
	w := startReady(t, "learning what ", "watch", "--cgroup", cg, "--learn", file)
	if got := attachedCount(t, cg); got != 3 {
		t.Errorf("%d programs at egress and ingress while watch learns, want the policy's and the observer's 2", got)
	}

	if c := n.run(t, cg, "sh", "-c", curlScript("a.test:8080/watched", "192.0.2.12:8081/watched-addr")); c.code != 0 {
		t.Errorf("the job: exit %d; stderr:\n%s", c.code, c.stderr)
	}
	// The policy in force still blocks.
	if c := n.run(t, cg, "curl", "-sS", "--noproxy", "*", "--connect-timeout", "5", "http://b.test:8080/blocked"); c.code == 0 {
		t.Error("b.test came through the persistent policy while watch learned")
	}
	if code := w.stop(t); code != 0 {
		t.Fatalf("watch exited %d; stderr:\n%s", code, strings.Join(w.stderr.snapshot(), "\n"))
	}
	f, text := readLearned(t, file)
	if want := []string{"a.test:tcp/8080", "192.0.2.12/32:tcp/8081"}; f.Egress.Default != "block" || !sameRules(f.Egress.Allow, want) ||
		!slices.Equal(f.Egress.Block, []string{"192.0.2.11/32"}) {
		t.Errorf("learned default %q, allow %q, block %q; want block, %q, the policy's 192.0.2.11/32:\n%s", f.Egress.Default, f.Egress.Allow, f.Egress.Block, want, text)
	}
	if !strings.Contains(strings.Join(w.stderr.snapshot(), "\n"), "which the policy blocks (rule 192.0.2.11/32)") {
		t.Errorf("watch did not say that the job sent to what the policy blocks:\n%s", strings.Join(w.stderr.snapshot(), "\n"))
	}
	if got := s.labels(t, "tcp", 8080); slices.Contains(got, "blocked") {
		t.Error("the blocked fetch arrived")
	}
	// The observer went with watch: the policy's program alone is left.
	if got := attachedCount(t, cg); got != 1 {
		t.Errorf("%d programs at egress and ingress after watch, want the policy's 1", got)
	}
}

// TestLearnDNSWithoutNames: a job that looks names up but connects to none
// of them gets no name rule, and so no resolver under its learned policy:
// its DNS server gets a rule instead, and the job passes again.
func TestLearnDNSWithoutNames(t *testing.T) {
	testutil.RequireBPF(t)
	n := newNameHosts(t, testZone)
	n.serve(t, namesPorts...)
	file := filepath.Join(t.TempDir(), "policy.yaml")
	job := "getent hosts a.test >/dev/null\n" + curlScript("192.0.2.12:8081/by-addr")
	if c := n.exec(t, "--learn", file, "--", "sh", "-c", job); c.code != 0 {
		t.Fatalf("exec --learn: exit %d; stderr:\n%s", c.code, c.stderr)
	}
	if f, text := readLearned(t, file); !sameRules(f.Egress.Allow, []string{"127.0.0.53/32:udp/53", "192.0.2.12/32:tcp/8081"}) {
		t.Errorf("learned %q, want the DNS server's and the address's rules:\n%s", f.Egress.Allow, text)
	}
	if c := n.exec(t, "-f", file, "--", "sh", "-c", job); c.code != 0 {
		t.Errorf("the job under its learned policy: exit %d; stderr:\n%s", c.code, c.stderr)
	}
	// With --dns-upstream, the rule is for the server the job asked, which
	// it asks again under its learned policy, not for the upstream.
	upFile := filepath.Join(t.TempDir(), "upstream.yaml")
	upJob := "dig +time=5 +tries=1 +short @198.51.100.53 a.test >/dev/null\n" + curlScript("192.0.2.12:8081/by-addr-up")
	if c := n.exec(t, "--learn", upFile, "--dns-upstream", "127.0.0.53", "--", "sh", "-c", upJob); c.code != 0 {
		t.Fatalf("exec --learn --dns-upstream: exit %d; stderr:\n%s", c.code, c.stderr)
	}
	if f, text := readLearned(t, upFile); !sameRules(f.Egress.Allow, []string{"198.51.100.53/32:udp/53", "192.0.2.12/32:tcp/8081"}) {
		t.Errorf("learned %q, want the asked server's and the address's rules:\n%s", f.Egress.Allow, text)
	}
	// A learned file without name rules is a persistent policy as it is.
	cg := testutil.Cgroup(t).Path
	cgwallOK(t, "attach", "--cgroup", cg, "-f", file)
	cgwallOK(t, "detach", "--cgroup", cg)
}

// TestLearnMergeWarns: --learn-merge into a file that does not exist makes
// it; into one whose egress default is allow, it says that the file locks
// nothing down.
func TestLearnMergeWarns(t *testing.T) {
	testutil.RequireBPF(t)
	n := newNameHosts(t, testZone)
	n.serve(t, namesPorts...)
	file := filepath.Join(t.TempDir(), "policy.yaml")
	if c := n.exec(t, "--learn", file, "--learn-merge", "--", "sh", "-c", curlScript("a.test:8080/new")); c.code != 0 || strings.Contains(c.stderr, "warning") {
		t.Fatalf("merge into no file: exit %d; stderr:\n%s", c.code, c.stderr)
	}
	if f, text := readLearned(t, file); f.Egress.Default != "block" || !slices.Equal(f.Egress.Allow, []string{"a.test:tcp/8080"}) {
		t.Errorf("merge into no file made:\n%s", text)
	}
	if err := os.WriteFile(file, []byte("egress:\n  default: allow\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := n.exec(t, "--learn", file, "--learn-merge", "--", "sh", "-c", curlScript("a.test:8080/open"))
	if c.code != 0 || !strings.Contains(c.stderr, "allows egress by default, so its allow rules lock nothing down") {
		t.Errorf("merge into a default-allow file: exit %d; stderr:\n%s", c.code, c.stderr)
	}
}
