package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/testutil"
)

// agentProc is a running cgwall agent, and how far a test has read its log.
type agentProc struct {
	*proc
	dir  string // its policies folder
	seen int    // the index of the next log line a wait looks at
}

// startAgent starts the agent on dir with args and waits for its ready line,
// which it returns.
func startAgent(t *testing.T, dir string, args ...string) (*agentProc, string) {
	t.Helper()
	p := startReady(t, "agent ready: ", append([]string{"agent", "--policies", dir}, args...)...)
	a := &agentProc{proc: p, dir: dir}
	// Waits look from the first line on: what the agent did before it was
	// ready is logged before the ready line.
	line, _ := a.stderr.WaitFor(context.Background(), "agent ready: ")
	return a, line
}

// wait returns the next line of the agent's log that holds every one of
// parts, after those a wait returned before.
func (a *agentProc) wait(t *testing.T, parts ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	line, i, err := a.stderr.WaitFrom(ctx, a.seen, parts...)
	if err != nil {
		t.Fatalf("agent: %v; its log:\n%s", err, a.stderr)
	}
	a.seen = i + 1
	return line
}

// agentCgroups makes a test cgroup and returns it, and its path relative
// to the cgroup2 mount, which targets name.
func agentCgroups(t *testing.T) (cg, rel string) {
	t.Helper()
	cg, _ = testCgroup(t)
	mnt, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	rel, err = filepath.Rel(mnt, cg)
	if err != nil {
		t.Fatal(err)
	}
	// What an agent left attached below cg goes before cg does (cleanups
	// run last first, and the agent, started later, is killed before).
	t.Cleanup(func() { detachBelow(t, cg) })
	return cg, rel
}

// detachBelow detaches every persistent policy of a cgroup and those below.
func detachBelow(t *testing.T, cg string) {
	filepath.WalkDir(cg, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		var st syscall.Stat_t
		if syscall.Stat(path, &st) == nil {
			if _, err := os.Stat(fmt.Sprintf("/sys/fs/bpf/cgwall/%d", st.Ino)); err == nil {
				runCgwall(t, "detach", "--cgroup", path)
			}
		}
		return nil
	})
}

// writePolicy writes a policy file of the agent's folder in one rename, as
// a deploy tool would.
func writePolicy(t *testing.T, dir, name, text string) {
	t.Helper()
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, path string) {
	t.Helper()
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestAgentFollows runs the agent on a folder whose file targets the ci-*
// cgroups of a test cgroup, and follows it through a cgroup made after the
// start, an edit, a file that turns bad, a cgroup removed and the file
// removed.
func TestAgentFollows(t *testing.T) {
	cg, rel := agentCgroups(t)
	mkdir(t, filepath.Join(cg, "ci-1"))
	mkdir(t, filepath.Join(cg, "other"))
	dir := t.TempDir()
	policy := fmt.Sprintf("targets:\n  - cgroup: %s/ci-*\negress:\n  block: [127.0.0.2]\n", rel)
	writePolicy(t, dir, "ci.yaml", policy)

	a, ready := startAgent(t, dir)
	if !strings.Contains(ready, "agent ready: 1 policy, 1 cgroup") {
		t.Errorf("ready line %q", ready)
	}
	mustEPERM(t, "a cgroup that existed at start", probe(t, cg+"/ci-1", "", "udp", "127.0.0.2", "127.0.0.1"))
	mustPass(t, "a cgroup no target names", probe(t, cg+"/other", "", "udp", "127.0.0.2", "127.0.0.1"))

	// A cgroup made later gets its policy, and so does one made inside it
	// in the same breath that the first target does not name.
	mkdir(t, filepath.Join(cg, "ci-2"))
	a.wait(t, `msg="policy attached"`, "cgroup="+rel+"/ci-2 ")
	mustEPERM(t, "a cgroup made after the start", probe(t, cg+"/ci-2", "", "udp", "127.0.0.2", "127.0.0.1"))

	// An edit is applied to every cgroup, with the atomic replace.
	writePolicy(t, dir, "ci.yaml", policy+"  allow: [127.0.0.3]\ningress:\n  block: [127.0.0.9]\n")
	a.wait(t, `msg="policy replaced"`, "cgroup="+rel+"/ci-1 ")
	a.wait(t, `msg="policy replaced"`, "cgroup="+rel+"/ci-2 ")
	if l := list(t, "--cgroup", cg+"/ci-1"); len(l) != 1 || len(l[0].Rules) != 3 || l[0].Agent != filepath.Join(dir, "ci.yaml") {
		t.Fatalf("after the edit: %+v", l)
	}
	if out := cgwallOK(t, "list", "--cgroup", cg+"/ci-1"); !strings.Contains(out, "attached by cgwall agent from "+filepath.Join(dir, "ci.yaml")) {
		t.Errorf("list does not name the agent's file:\n%s", out)
	}

	// A file that turns bad keeps its last good policy, and says why with
	// the file's line.
	writePolicy(t, dir, "ci.yaml", policy+"  allow: [127.0.0.300]\n")
	bad := a.wait(t, "bad policy file", "last good policy stays in force")
	if !strings.Contains(bad, "ci.yaml:5:") {
		t.Errorf("the bad file's problem does not give its line: %q", bad)
	}
	if l := list(t, "--cgroup", cg+"/ci-2"); len(l) != 1 || len(l[0].Rules) != 3 {
		t.Fatalf("a bad file changed the policy: %+v", l)
	}
	mustEPERM(t, "the last good policy after a bad edit", probe(t, cg+"/ci-2", "", "udp", "127.0.0.2", "127.0.0.1"))
	// A cgroup made while the file is bad gets the last good policy too.
	mkdir(t, filepath.Join(cg, "ci-3"))
	a.wait(t, `msg="policy attached"`, "cgroup="+rel+"/ci-3 ")

	// A removed cgroup takes its policy's folder with it.
	id := cgroupID(t, cg+"/ci-3")
	if err := os.Remove(filepath.Join(cg, "ci-3")); err != nil {
		t.Fatal(err)
	}
	a.wait(t, "policy removed with its cgroup", fmt.Sprintf("cgroup_id=%d", id))
	if _, err := os.Stat(fmt.Sprintf("/sys/fs/bpf/cgwall/%d", id)); !os.IsNotExist(err) {
		t.Errorf("the policy folder of a removed cgroup: %v", err)
	}

	// A removed file detaches what it attached, and nothing else.
	if err := os.Remove(filepath.Join(dir, "ci.yaml")); err != nil {
		t.Fatal(err)
	}
	a.wait(t, `msg="policy detached`, "cgroup="+rel+"/ci-1 ")
	a.wait(t, `msg="policy detached`, "cgroup="+rel+"/ci-2 ")
	for _, c := range []string{"ci-1", "ci-2"} {
		if n := attachedCount(t, filepath.Join(cg, c)); n != 0 {
			t.Errorf("%s: %d programs attached after its file was removed", c, n)
		}
	}
	mustPass(t, "after the file was removed", probe(t, cg+"/ci-1", "", "udp", "127.0.0.2", "127.0.0.1"))
	if code := a.stop(t); code != 0 {
		t.Errorf("SIGINT: exit %d", code)
	}
}

func cgroupID(t *testing.T, path string) uint64 {
	t.Helper()
	d, err := cgroup.Resolve(path)
	if err != nil {
		t.Fatal(err)
	}
	return d.ID
}

// TestAgentRestart kills the agent with SIGKILL while a process in a
// cgroup it guards sends without pause to an address its policy blocks,
// starts it again, and checks that not one datagram got through, that the
// restarted agent adopted the policy instead of attaching it again, and
// that SIGTERM ends it with 0 and leaves the policy in force.
func TestAgentRestart(t *testing.T) {
	cg, rel := agentCgroups(t)
	guarded := filepath.Join(cg, "svc")
	mkdir(t, guarded)
	dir := t.TempDir()
	writePolicy(t, dir, "svc.yaml", fmt.Sprintf("targets: [{cgroup: %s/svc}]\negress: {block: [127.0.0.2]}\n", rel))
	port, leaks := listenLeaks(t)
	flood := startFlood(t, guarded, "127.0.0.2", port)

	a, _ := startAgent(t, dir)
	before := testutil.AttachedIDs(t, guarded, ebpf.AttachCGroupInetEgress)
	flood.start()
	a.p.Kill()
	<-a.done
	if n := attachedCount(t, guarded); n == 0 {
		t.Fatal("SIGKILL of the agent detached its policy")
	}
	b, ready := startAgent(t, dir)
	if !strings.Contains(ready, "1 cgroup") {
		t.Errorf("ready line after the restart: %q", ready)
	}
	res := flood.stop(t)
	if leaked := leaks(); leaked != 0 || res.Sent != 0 {
		t.Fatalf("%d datagrams got through (%d sends succeeded) across the restart", leaked, res.Sent)
	}
	if res.EPERM == 0 {
		t.Fatalf("the sender barely ran: %+v", res)
	}
	for _, l := range b.stderr.All() {
		if strings.Contains(l, `msg="policy attached"`) || strings.Contains(l, `msg="policy replaced"`) {
			t.Errorf("the restarted agent applied the policy again instead of adopting it: %s", l)
		}
	}
	if after := testutil.AttachedIDs(t, guarded, ebpf.AttachCGroupInetEgress); !slices.Equal(after, before) || len(after) != 1 {
		t.Errorf("programs attached at egress: %v before the restart, %v after", before, after)
	}
	code, err := b.p.StopWith(context.Background(), syscall.SIGTERM)
	if err != nil || code != 0 {
		t.Fatalf("SIGTERM: exit %d, %v", code, err)
	}
	mustEPERM(t, "after SIGTERM", probe(t, guarded, "", "udp", "127.0.0.2", "127.0.0.1"))

	// A file removed while no agent runs: the next one detaches what the
	// file attached.
	if err := os.Remove(filepath.Join(dir, "svc.yaml")); err != nil {
		t.Fatal(err)
	}
	c, ready := startAgent(t, dir)
	if !strings.Contains(ready, "0 policies, 0 cgroups") {
		t.Errorf("ready line with the file gone: %q", ready)
	}
	c.wait(t, `msg="policy detached`, "cgroup="+rel+"/svc ")
	if n := attachedCount(t, guarded); n != 0 {
		t.Errorf("%d programs attached after the file went", n)
	}
	c.stop(t)
}

// TestAgentRebuildsOlderLayout starts an agent on a policy that an agent of
// an older layout owns, while a process in the cgroup sends without pause to
// an address both block: the new agent rebuilds it into its own layout
// through the atomic replace, and not one datagram gets through.
func TestAgentRebuildsOlderLayout(t *testing.T) {
	cg, rel := agentCgroups(t)
	guarded := filepath.Join(cg, "svc")
	mkdir(t, guarded)
	dir := t.TempDir()
	writePolicy(t, dir, "svc.yaml", fmt.Sprintf("targets: [{cgroup: %s/svc}]\negress: {block: [127.0.0.2]}\n", rel))
	port, leaks := listenLeaks(t)
	flood := startFlood(t, guarded, "127.0.0.2", port) // connects before any policy
	a, _ := startAgent(t, dir)
	a.wait(t, `msg="policy attached"`, "cgroup="+rel+"/svc ")
	if code := a.stop(t); code != 0 {
		t.Fatalf("SIGINT: exit %d", code)
	}
	// What an agent of layout 6 left: the same maps and links (layout 7
	// changed only the IPv6 bitmaps, which this policy has none of), under
	// version 6.
	setLayout(t, cgroupID(t, guarded), 6)
	flood.start()
	b, ready := startAgent(t, dir)
	res := flood.stop(t)
	b.wait(t, `msg="policy rebuilt from an older layout"`, "cgroup="+rel+"/svc ")
	if !strings.Contains(ready, "1 cgroup") {
		t.Errorf("ready line %q", ready)
	}
	if leaked := leaks(); leaked != 0 || res.Sent != 0 {
		t.Fatalf("%d datagrams got through (%d sends succeeded) while the older layout was rebuilt", leaked, res.Sent)
	}
	if res.EPERM == 0 {
		t.Fatalf("the sender barely ran: %+v", res)
	}
	if l := list(t, "--cgroup", guarded); len(l) != 1 || len(l[0].Rules) != 1 || !l[0].Live {
		t.Fatalf("list after the rebuild: %+v", l)
	}
	b.stop(t)
	cgwallOK(t, "detach", "--cgroup", guarded)
}

// setLayout rewrites the layout version a policy folder records.
func setLayout(t *testing.T, id uint64, version uint32) {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(fmt.Sprintf("/sys/fs/bpf/cgwall/%d/layout", id), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Put(uint32(0), version); err != nil {
		t.Fatal(err)
	}
}

// TestAgentSIGHUP changes a list file that a policy file names, which the
// agent does not watch, and checks that SIGHUP applies it.
func TestAgentSIGHUP(t *testing.T) {
	cg, rel := agentCgroups(t)
	dir := t.TempDir()
	list := filepath.Join(dir, "blocked.txt")
	if err := os.WriteFile(list, []byte("127.0.0.2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	writePolicy(t, dir, "lists.yaml", fmt.Sprintf("targets: [{cgroup: %s}]\negress: {block_lists: [blocked.txt]}\n", rel))
	a, _ := startAgent(t, dir)
	if err := os.WriteFile(list, []byte("127.0.0.2\n127.0.0.3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustPass(t, "an address the list gained, before SIGHUP", probe(t, cg, "", "udp", "127.0.0.3", "127.0.0.1"))
	if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	a.wait(t, "reloading")
	a.wait(t, `msg="policy replaced"`, "cgroup="+rel+" ")
	mustEPERM(t, "an address the list gained, after SIGHUP", probe(t, cg, "", "udp", "127.0.0.3", "127.0.0.1"))
	a.stop(t)
}

// TestAgentConflicts checks that the agent overwrites neither a policy
// attached by hand on a cgroup a file targets, nor picks one of two files
// that target one cgroup, and says so.
func TestAgentConflicts(t *testing.T) {
	cg, rel := agentCgroups(t)
	for _, c := range []string{"byhand", "both"} {
		mkdir(t, filepath.Join(cg, c))
	}
	attachPolicy(t, cg+"/byhand", "--block", "127.0.0.5")
	dir := t.TempDir()
	writePolicy(t, dir, "a.yaml", fmt.Sprintf("targets: [{cgroup: %s/byhand}, {cgroup: %s/both}]\negress: {block: [127.0.0.2]}\n", rel, rel))
	writePolicy(t, dir, "b.yaml", fmt.Sprintf("targets: [{cgroup: %s/both}]\negress: {block: [127.0.0.3]}\n", rel))
	a, ready := startAgent(t, dir)
	if !strings.Contains(ready, "2 policies, 0 cgroups") {
		t.Errorf("ready line %q", ready)
	}
	// The agent goes through the cgroups in order: both, then byhand.
	if both := a.wait(t, "conflict", "cgroup="+rel+"/both "); !strings.Contains(both, "a.yaml and b.yaml") {
		t.Errorf("the conflict of two files says %q", both)
	}
	hand := a.wait(t, "conflict", "cgroup="+rel+"/byhand ")
	if !strings.Contains(hand, "attached by hand") || !strings.Contains(hand, "cgwall detach --cgroup "+rel+"/byhand") {
		t.Errorf("the conflict with a policy attached by hand says %q", hand)
	}
	if l := list(t, "--cgroup", cg+"/byhand"); len(l) != 1 || len(l[0].Rules) != 1 || l[0].Rules[0].Prefix != "127.0.0.5/32" || l[0].Agent != "" {
		t.Fatalf("the policy attached by hand was changed: %+v", l)
	}
	if n := attachedCount(t, cg+"/both"); n != 0 {
		t.Errorf("a cgroup two files target has %d programs", n)
	}
	// Once the hand's policy is gone, the agent applies the file (SIGHUP:
	// a detach is not an event the agent sees).
	cgwallOK(t, "detach", "--cgroup", cg+"/byhand")
	a.cmd.Process.Signal(syscall.SIGHUP)
	a.wait(t, `msg="policy attached"`, "policy=a.yaml", "cgroup="+rel+"/byhand ")
	a.stop(t)
}

// TestAgentForAgent attaches a file's policy with --for-agent before the
// agent runs, as a unit's ExecStartPre= would: the agent adopts it without
// touching it, replaces it atomically when the file changes, and bad uses
// of the flag are refused with one line and nothing attached.
func TestAgentForAgent(t *testing.T) {
	cg, rel := agentCgroups(t)
	svc := filepath.Join(cg, "svc")
	mkdir(t, svc)
	dir := t.TempDir()
	body := fmt.Sprintf("targets: [{cgroup: %s/svc}]\negress: {block: [127.0.0.2]}\n", rel)
	writePolicy(t, dir, "svc.yaml", body)
	file := filepath.Join(dir, "svc.yaml")

	writePolicy(t, dir, "none.yaml", "egress: {block: [127.0.0.2]}\n")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--for-agent", "--block", "127.0.0.2"}, "--for-agent needs -f FILE"},
		{[]string{"--for-agent", "-f", file, "--block", "127.0.0.3"}, "--block cannot be given with it"},
		{[]string{"--for-agent", "-f", file, "--audit"}, "--audit cannot be given with it"},
		{[]string{"--for-agent", "-f", filepath.Join(dir, "none.yaml")}, "has no targets:"},
	} {
		_, stderr, code := runCgwall(t, append([]string{"attach", "--cgroup", svc}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("attach %v: exit %d, %q; want exit 2 and one line with %q", tc.args, code, stderr, tc.want)
		}
	}
	if n := attachedCount(t, svc); n != 0 {
		t.Fatalf("refused attaches left %d programs", n)
	}
	if err := os.Remove(filepath.Join(dir, "none.yaml")); err != nil {
		t.Fatal(err)
	}

	cgwallOK(t, "attach", "--cgroup", svc, "--for-agent", "-f", file)
	if l := list(t, "--cgroup", svc); len(l) != 1 || l[0].Agent != file {
		t.Fatalf("after attach --for-agent: %+v", l)
	}
	before := testutil.AttachedIDs(t, svc, ebpf.AttachCGroupInetEgress)
	a, ready := startAgent(t, dir)
	if !strings.Contains(ready, "1 policy, 1 cgroup") {
		t.Errorf("ready line %q", ready)
	}
	for _, l := range a.stderr.All() {
		if strings.Contains(l, "conflict") || strings.Contains(l, `msg="policy attached"`) || strings.Contains(l, `msg="policy replaced"`) {
			t.Errorf("the agent did not adopt the policy attached for it: %s", l)
		}
	}
	if after := testutil.AttachedIDs(t, svc, ebpf.AttachCGroupInetEgress); !slices.Equal(after, before) {
		t.Errorf("programs at egress: %v before the agent, %v after", before, after)
	}
	mustEPERM(t, "the policy attached for the agent", probe(t, svc, "", "udp", "127.0.0.2", "127.0.0.1"))

	// It is the agent's: an edit of the file replaces it.
	writePolicy(t, dir, "svc.yaml", strings.Replace(body, "]}", "], allow: [127.0.0.3]}", 1))
	a.wait(t, `msg="policy replaced"`, "cgroup="+rel+"/svc ")
	if l := list(t, "--cgroup", svc); len(l) != 1 || len(l[0].Rules) != 2 || l[0].Agent != file {
		t.Errorf("after the edit: %+v", l)
	}
	a.stop(t)
}

// TestAgentBadInput checks that bad flags and a bad folder fail at once,
// with one line and exit 2, and attach nothing.
func TestAgentBadInput(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "x.yaml")
	if err := os.WriteFile(file, []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := storeEntries(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"agent"}, "--policies DIR is required"},
		{[]string{"agent", "--policies", filepath.Join(dir, "missing")}, "no such file or directory"},
		{[]string{"agent", "--policies", file}, "is not a folder"},
		{[]string{"agent", "--policies", dir, "--metrics", "9464"}, "want ADDR:PORT"},
		{[]string{"agent", "--policies", dir, "--log-format", "xml"}, "use text or json"},
		{[]string{"agent", "--policies", dir, "--metrics-rule-limit", "-1"}, "give 0 or more"},
		{[]string{"agent", "--policies", dir, "extra"}, "unknown command"},
		{[]string{"agent", "--policies", dir, "--socket", "agent.sock"}, "give an absolute path"},
	} {
		_, stderr, code := runCgwall(t, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%v: exit %d, %q; want exit 2 and one line with %q", tc.args, code, stderr, tc.want)
		}
	}

	// Sockets it must not take: in a folder others may write to, a path
	// that is no socket, and one where something answers.
	open := filepath.Join(t.TempDir(), "open")
	mkdir(t, open)
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	busy := filepath.Join(t.TempDir(), "busy.sock")
	ln, err := net.Listen("unix", busy)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, tc := range []struct {
		socket, want string
	}{
		{filepath.Join(open, "agent.sock"), "is not root's alone"},
		{file, "is not a socket"},
		{busy, "another agent answers on " + busy},
	} {
		_, stderr, code := runCgwall(t, "agent", "--policies", dir, "--socket", tc.socket)
		if code != 1 || !strings.Contains(stderr, tc.want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("--socket %s: exit %d, %q; want exit 1 and one line with %q", tc.socket, code, stderr, tc.want)
		}
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("a refused --socket took the file: %v", err)
	}
	if after := storeEntries(t); !slices.Equal(before, after) {
		t.Errorf("bad input changed the store: %v, then %v", before, after)
	}
}

// storeEntries lists the store's folders.
func storeEntries(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("/sys/fs/bpf/cgwall")
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// TestAgentBadFileAtStart starts the agent on a folder with a good file and
// a bad one: it starts, says what is wrong with the bad one, and applies
// the good one.
func TestAgentBadFileAtStart(t *testing.T) {
	cg, rel := agentCgroups(t)
	dir := t.TempDir()
	writePolicy(t, dir, "good.yaml", fmt.Sprintf("targets: [{cgroup: %s}]\negress: {block: [127.0.0.2]}\n", rel))
	writePolicy(t, dir, "bad.yaml", "targets: [{cgroup: x}]\negress: {block: [nope]}\n")
	writePolicy(t, dir, "none.yaml", "egress: {block: [127.0.0.2]}\n")
	a, ready := startAgent(t, dir)
	if !strings.Contains(ready, "1 policy, 1 cgroup") {
		t.Errorf("ready line %q", ready)
	}
	a.wait(t, "bad policy file", "never been read good", "bad.yaml:2:")
	a.wait(t, "bad policy file", "none.yaml", "has no targets")
	mustEPERM(t, "the good file's cgroup", probe(t, cg, "", "udp", "127.0.0.2", "127.0.0.1"))
	a.stop(t)
	cgwallOK(t, "detach", "--cgroup", cg)
}

// TestCheckTargets validates an agent's policy file with check: its targets
// are listed, and a bad one is refused with its line.
func TestCheckTargets(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "ci.yaml")
	writePolicy(t, dir, "ci.yaml", "targets: [{unit: \"ci-*.scope\"}, {container: 3f4e1a}]\negress: {default: block, allow: [192.0.2.10:tcp/443]}\n")
	out := cgwallOK(t, "check", "-f", good)
	if !strings.Contains(out, "targets (for cgwall agent): unit:ci-*.scope, container:3f4e1a") {
		t.Errorf("check says:\n%s", out)
	}
	writePolicy(t, dir, "bad.yaml", "egress: {}\ntargets:\n  - unit: backup.timer\n")
	_, stderr, code := runCgwall(t, "check", "-f", filepath.Join(dir, "bad.yaml"))
	if code != 2 || !strings.Contains(stderr, "bad.yaml:3: targets: ") || !strings.Contains(stderr, "timer") {
		t.Errorf("check of a bad target: exit %d, %q", code, stderr)
	}
}

// TestAgentContainer follows a container made after the agent started: a
// file targets its ID, known from docker create before the container runs;
// once it starts, its cgroup appears, the agent applies the policy, and
// traffic from inside the container shows the block.
func TestAgentContainer(t *testing.T) {
	testCgroup(t) // root and cgroup BPF, or skip (fail under CI=true)
	gateway, _ := requireDocker(t)
	image := importBusybox(t)
	name := "cgw-agent-" + randomHex(t)
	t.Cleanup(func() { dockerOut("rm", "--force", name) })
	out := docker(t, "create", "--name", name, "--network", "bridge", image, "sleep", "1000")
	id := out[strings.LastIndexByte(out, '\n')+1:]
	if len(id) != 64 {
		t.Fatalf("docker create printed %q, not a container ID", out)
	}
	dir := t.TempDir()
	writePolicy(t, dir, "c.yaml", fmt.Sprintf("targets: [{container: %s}]\negress: {block: [%s]}\n", strings.ToUpper(id[:12]), gateway))
	a, ready := startAgent(t, dir)
	if !strings.Contains(ready, "1 policy, 0 cgroups") {
		t.Errorf("ready line before the container runs: %q", ready)
	}
	blocked := listen(t, gateway)
	docker(t, "start", name)
	cg := containerCgroup(t, name, id)
	t.Cleanup(func() { runCgwall(t, "detach", "--cgroup", cg) })
	mnt, _ := cgroup.Mount()
	rel, _ := filepath.Rel(mnt, cg)
	a.wait(t, `msg="policy attached"`, "cgroup="+rel+" ")
	mustNotReach(t, name, blocked, "blocked by the agent")
	a.stop(t)
}

// TestAgentNotifyAndJSON runs the agent as systemd's Type=notify would, with
// the JSON log: it sends READY=1 on $NOTIFY_SOCKET once ready, and every
// line it logs is a JSON object.
func TestAgentNotifyAndJSON(t *testing.T) {
	cg, rel := agentCgroups(t)
	dir := t.TempDir()
	writePolicy(t, dir, "p.yaml", fmt.Sprintf("targets: [{cgroup: %s}]\negress: {block: [127.0.0.2]}\n", rel))
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cmd := exec.Command(cgwallBin, "agent", "--policies", dir, "--log-format", "json")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	p := startCmd(t, cmd, `"agent ready: 1 policy, 1 cgroup"`)
	conn.SetReadDeadline(time.Now().Add(waitTimeout))
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("from $NOTIFY_SOCKET: %q, %v; want READY=1", buf[:n], err)
	}
	mustEPERM(t, "the policy in force", probe(t, cg, "", "udp", "127.0.0.2", "127.0.0.1"))
	if code := p.stop(t); code != 0 {
		t.Errorf("exit %d", code)
	}
	for _, line := range p.stderr.snapshot() {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec["msg"] == nil {
			t.Errorf("a log line that is not a JSON record: %q", line)
		}
	}
}

// TestAgentUnit targets a systemd unit by name without its suffix: the
// cgroup of NAME.service, wherever it is made, gets the policy.
func TestAgentUnit(t *testing.T) {
	cg, rel := agentCgroups(t)
	unit := fmt.Sprintf("cgwall-e2e-%d", os.Getpid())
	dir := t.TempDir()
	writePolicy(t, dir, "unit.yaml", fmt.Sprintf("targets: [{unit: %s}]\negress: {block: [127.0.0.2]}\n", unit))
	a, _ := startAgent(t, dir)
	mkdir(t, filepath.Join(cg, "app.slice"))
	mkdir(t, filepath.Join(cg, "app.slice", unit+".service"))
	a.wait(t, `msg="policy attached"`, "cgroup="+rel+"/app.slice/"+unit+".service ")
	mustEPERM(t, "the unit's cgroup", probe(t, filepath.Join(cg, "app.slice", unit+".service"), "", "udp", "127.0.0.2", "127.0.0.1"))
	mustPass(t, "the slice above it", probe(t, filepath.Join(cg, "app.slice"), "", "udp", "127.0.0.2", "127.0.0.1"))
	a.stop(t)
}
