package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestAttachPersists(t *testing.T) {
	cg, child := testCgroup(t)
	out := attachPolicy(t, cg, "--block", "127.0.0.2", "--block-in", "127.0.0.5")
	if !strings.HasPrefix(out, "attached policy to "+cg+" (2 rules), pinned in /sys/fs/bpf/cgwall/") {
		t.Errorf("attach said %q", out)
	}
	// cgwall has exited; the policy holds, in the cgroup and below it.
	mustEPERM(t, "UDP after attach exited", probe(t, cg, "", "udp", "127.0.0.2", "127.0.0.1"))
	mustEPERM(t, "UDP from a child cgroup", probe(t, child, "", "udp", "127.0.0.2", "127.0.0.1"))
	mustPass(t, "UDP to an address not blocked", probe(t, cg, "", "udp", "127.0.0.3", "127.0.0.1"))

	l := list(t, "--cgroup", cg)
	if len(l) != 1 || l[0].Cgroup != cg || !l[0].Live || len(l[0].Rules) != 2 {
		t.Fatalf("list: %+v", l)
	}
	// The hooks the policy needs, and no other: no --deny-raw, no sock_create.
	if want := []string{"egress", "ingress", "connect", "sendmsg"}; !slices.Equal(l[0].Hooks, want) {
		t.Errorf("hooks %v, want %v", l[0].Hooks, want)
	}
	if r := l[0].Rules[0]; r.Prefix != "127.0.0.2/32" || r.Packets < 2 || r.Action != "block" {
		t.Errorf("rule counters: %+v, want 127.0.0.2/32 with the 2 blocked sends", r)
	}
	if l[0].Totals["drop"].Packets < 2 || l[0].Totals["pass"].Packets == 0 {
		t.Errorf("totals %+v", l[0].Totals)
	}
	text := cgwallOK(t, "list", "--cgroup", cg)
	if !strings.Contains(text, "127.0.0.2/32") || !strings.Contains(text, "totals: pass") {
		t.Errorf("list text:\n%s", text)
	}

	if out := cgwallOK(t, "detach", "--cgroup", cg); out != "detached from "+cg+"\n" {
		t.Errorf("detach said %q", out)
	}
	if n := attachedCount(t, cg); n != 0 {
		t.Errorf("%d programs attached after detach", n)
	}
	mustPass(t, "UDP after detach", probe(t, cg, "", "udp", "127.0.0.2", "127.0.0.1"))
	if out := cgwallOK(t, "detach", "--cgroup", cg); !strings.Contains(out, "nothing to detach") {
		t.Errorf("second detach said %q", out)
	}
}

func TestLiveEdits(t *testing.T) {
	cg, _ := testCgroup(t)
	attachPolicy(t, cg, "--block", "127.0.0.2")
	// The edits build on each other, in order.
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"block two", []string{"block", "--cgroup", cg, "127.0.0.3", "127.0.2.0/24"}, "blocked egress 127.0.0.3/32 (rule 2)\nblocked egress 127.0.2.0/24 (rule 3)\n"},
		{"block again", []string{"block", "--cgroup", cg, "127.0.0.3"}, "egress 127.0.0.3/32 already blocked (rule 2)\n"},
		{"allow inside a blocked prefix", []string{"allow", "--cgroup", cg, "127.0.2.7"}, "allowed egress 127.0.2.7/32 (rule 4)\n"},
		{"allow a blocked host", []string{"allow", "--cgroup", cg, "127.0.0.2"}, "allowed egress 127.0.0.2/32 (rule 1, was block)\n"},
		{"remove a missing rule", []string{"remove", "--cgroup", cg, "127.0.0.9"}, "no egress rule for 127.0.0.9/32: nothing to remove\n"},
		{"block ingress", []string{"block", "--cgroup", cg, "--in", "127.0.0.5"}, "blocked ingress 127.0.0.5/32 (rule 5)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if out := cgwallOK(t, tc.args...); out != tc.want {
				t.Errorf("%v said %q, want %q", tc.args, out, tc.want)
			}
		})
	}
	// Every edit is in force when the command has returned.
	mustEPERM(t, "a live-blocked host", probe(t, cg, "", "udp", "127.0.0.3", "127.0.0.1"))
	mustEPERM(t, "a live-blocked prefix", probe(t, cg, "", "udp", "127.0.2.9", "127.0.0.1"))
	mustPass(t, "a host allowed inside it", probe(t, cg, "", "udp", "127.0.2.7", "127.0.0.1"))
	mustPass(t, "a block turned allow", probe(t, cg, "", "udp", "127.0.0.2", "127.0.0.1"))

	cgwallOK(t, "remove", "--cgroup", cg, "127.0.0.3", "127.0.2.0/24")
	mustPass(t, "a removed host", probe(t, cg, "", "udp", "127.0.0.3", "127.0.0.1"))
	mustPass(t, "a removed prefix", probe(t, cg, "", "udp", "127.0.2.9", "127.0.0.1"))

	// Bad input changes nothing.
	_, stderr, code := runCgwall(t, "block", "--cgroup", cg, "127.0.0.11", "127.0.0.300")
	checkOneLineError(t, stderr, code, 2, `"127.0.0.300" is not a valid IPv4 or IPv6 address`)
	mustPass(t, "the good address of a refused edit", probe(t, cg, "", "udp", "127.0.0.11", "127.0.0.1"))
	other := testutilCgroup(t)
	_, stderr, code = runCgwall(t, "block", "--cgroup", other, "127.0.0.11")
	checkOneLineError(t, stderr, code, 2, "no policy on "+other+": attach one first")
}

// TestIngressAttachedOnFirstIngressRule attaches an egress policy, which
// attaches no ingress program (received packets pay nothing), then blocks a
// source live: the edit attaches the ingress hook, and the source is blocked.
func TestIngressAttachedOnFirstIngressRule(t *testing.T) {
	cg, _ := testCgroup(t)
	attachPolicy(t, cg, "--block", "127.0.0.2")
	if l := list(t, "--cgroup", cg); slices.Contains(l[0].Hooks, "ingress") {
		t.Fatalf("an egress policy attached the ingress hook: %v", l[0].Hooks)
	}
	cgwallOK(t, "block", "--cgroup", cg, "--in", "127.0.0.5")
	if l := list(t, "--cgroup", cg); !slices.Contains(l[0].Hooks, "ingress") {
		t.Fatalf("the first ingress rule did not attach the ingress hook: %v", l[0].Hooks)
	}
	s := serve(t, cg, "udp")
	sendUDPFrom(t, s, "127.0.0.5", "127.0.0.6")
	if got := s.received(t); !slices.Equal(got, []string{"127.0.0.6"}) {
		t.Errorf("UDP server in the cgroup received from %v; want only 127.0.0.6", got)
	}
}

// TestLiveEditsGrowTheMaps adds host rules one command at a time past the
// size the maps were created with; the datapath moves to bigger maps.
func TestLiveEditsGrowTheMaps(t *testing.T) {
	cg, _ := testCgroup(t)
	attachPolicy(t, cg, "--block", "127.0.0.2")
	var addrs []string
	for i := 0; i < 4200; i++ { // past the 4096 the maps start with
		addrs = append(addrs, fmt.Sprintf("127.1.%d.%d", i/250, 1+i%250))
	}
	for i := 0; i < len(addrs); i += 1000 {
		cgwallOK(t, append([]string{"block", "--cgroup", cg}, addrs[i:min(i+1000, len(addrs))]...)...)
	}
	if l := list(t, "--cgroup", cg); len(l[0].Rules) != 4201 {
		t.Fatalf("%d rules after growing, want 4201", len(l[0].Rules))
	}
	mustEPERM(t, "the first host", probe(t, cg, "", "udp", "127.0.0.2", "127.0.0.1"))
	mustEPERM(t, "the last host", probe(t, cg, "", "udp", addrs[len(addrs)-1], "127.0.0.1"))
}

func testutilCgroup(t *testing.T) string {
	cg, _ := testCgroup(t)
	return cg
}

// TestConcurrentBlocks runs 20 block commands at once: all of them land.
func TestConcurrentBlocks(t *testing.T) {
	cg, _ := testCgroup(t)
	attachPolicy(t, cg)
	var wg sync.WaitGroup
	errs := make(chan string, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, stderr, code := runCgwall(t, "block", "--cgroup", cg, fmt.Sprintf("127.0.3.%d", i+1))
			if code != 0 {
				errs <- stderr
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("a concurrent block failed: %s", e)
	}
	l := list(t, "--cgroup", cg)
	ids := map[uint32]bool{}
	for _, r := range l[0].Rules {
		ids[r.ID] = true
	}
	if len(l[0].Rules) != 20 || len(ids) != 20 {
		t.Fatalf("%d rules with %d distinct IDs, want 20 and 20", len(l[0].Rules), len(ids))
	}
	for _, i := range []int{1, 10, 20} {
		mustEPERM(t, "a concurrently blocked host", probe(t, cg, "", "udp", fmt.Sprintf("127.0.3.%d", i), "127.0.0.1"))
	}
}

// TestAtomicReplace replaces the policy 100 times, with live edits of other
// rules going on, while a process in the cgroup sends without pause to an
// address that every policy blocks. A receiver outside counts the packets
// that got through: exactly none may.
func TestAtomicReplace(t *testing.T) {
	cg, _ := testCgroup(t)
	port, leaks := listenLeaks(t)

	flood := startFlood(t, cg, "127.0.0.2", port)
	policies := [][]string{
		{"--block", "127.0.0.2", "--block", "127.0.0.10", "--block", "198.51.100.0/24"},
		{"--block", "127.0.0.0/30", "--allow", "127.0.0.1", "--block", "127.0.0.11", "--default-in", "allow"},
	}
	attachPolicy(t, cg, policies[0]...)
	flood.start()

	editsDone := make(chan struct{})
	go func() { // live edits of other rules, all along
		defer close(editsDone)
		for i := 0; i < 40; i++ {
			addr := fmt.Sprintf("127.0.4.%d", i+1)
			runCgwall(t, "block", "--cgroup", cg, addr)
			runCgwall(t, "remove", "--cgroup", cg, addr)
		}
	}()
	for i := 0; i < 100; i++ {
		cgwallOK(t, append([]string{"attach", "--cgroup", cg}, policies[i%2]...)...)
	}
	<-editsDone
	res := flood.stop(t)
	leaked := leaks()
	t.Logf("flood: %+v, leaked %d", res, leaked)
	if res.EPERM == 0 || res.Attempts < 100 {
		t.Fatalf("the sender barely ran: %+v", res)
	}
	if leaked != 0 || res.Sent != 0 {
		t.Fatalf("%d packets to the blocked address got through (%d sends succeeded) during 100 replacements", leaked, res.Sent)
	}
}

// listenLeaks counts the UDP datagrams "leak" that reach a port on this host
// from a flood probe. leaks stops the count and returns it.
func listenLeaks(t *testing.T) (port int, leaks func() int) {
	t.Helper()
	recv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { recv.Close() })
	var leaked int
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 16)
		for {
			n, _, err := recv.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if string(buf[:n]) == "leak" {
				leaked++
			}
		}
	}()
	return recv.LocalAddr().(*net.UDPAddr).Port, func() int {
		recv.Close()
		<-done
		return leaked
	}
}

type flood struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// startFlood starts a flood probe in the cgroup and waits until it has
// connected its socket, before any policy is attached.
func startFlood(t *testing.T, cg, target string, port int) *flood {
	t.Helper()
	self, _ := os.Executable()
	cmd := exec.Command(self, "flood", target, fmt.Sprint(port))
	cmd.Env = append(os.Environ(), probeEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, out := startPiped(t, cmd, cg)
	f := &flood{cmd: cmd, stdin: stdin, out: out}
	if line, err := f.out.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("flood probe: %q, %v", line, err)
	}
	return f
}

func (f *flood) start() { io.WriteString(f.stdin, "go\n") }

func (f *flood) stop(t *testing.T) floodResult {
	t.Helper()
	f.stdin.Close()
	var res floodResult
	if err := readJSONLine(f.out, &res); err != nil {
		t.Fatalf("flood result: %v", err)
	}
	return res
}

// TestAttachSurvivesSIGKILL kills attach at random points, first on fresh
// cgroups, then while it replaces a policy. Each time exactly one whole policy
// is in force afterwards: the old one (or none) or the new one.
func TestAttachSurvivesSIGKILL(t *testing.T) {
	cg, _ := testCgroup(t)
	t.Cleanup(func() { runCgwall(t, "detach", "--cgroup", cg) })
	rng := rand.New(rand.NewPCG(3, 4))
	// Kill points spread over a whole attach, measured once unkilled.
	start := time.Now()
	cgwallOK(t, "attach", "--cgroup", cg, "--block", "127.0.0.2", "--block", "127.0.0.10")
	span := time.Since(start)
	cgwallOK(t, "detach", "--cgroup", cg)
	killed := func(args ...string) *exec.Cmd {
		cmd := exec.Command(cgwallBin, args...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(time.Duration(rng.Int64N(int64(span))), func() { cmd.Process.Signal(syscall.SIGKILL) })
		cmd.Wait()
		return cmd
	}
	blocked := func(cg, addr string) bool {
		return !probe(t, cg, "", "udp", addr, "127.0.0.1").Received
	}

	for i := 0; i < 8; i++ {
		fresh := filepath.Join(cg, fmt.Sprintf("fresh-%d", i))
		if err := os.Mkdir(fresh, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := killed("attach", "--cgroup", fresh, "--block", "127.0.0.2", "--block", "127.0.0.10")
		b2, b10 := blocked(fresh, "127.0.0.2"), blocked(fresh, "127.0.0.10")
		if b2 != b10 {
			t.Fatalf("fresh attach %d (%s): half a policy in force: .2 blocked %v, .10 %v", i, cmd.ProcessState, b2, b10)
		}
		t.Logf("fresh attach %d: %s, policy in force: %v", i, cmd.ProcessState, b2)
		runCgwall(t, "detach", "--cgroup", fresh)
	}

	// Each policy blocks 127.0.0.2 and one marker address of its own.
	markers := []string{"127.0.0.10", "127.0.0.11"}
	cgwallOK(t, "attach", "--cgroup", cg, "--block", "127.0.0.2", "--block", markers[0])
	for i := 1; i <= 12; i++ {
		cmd := killed("attach", "--cgroup", cg, "--block", "127.0.0.2", "--block", markers[i%2])
		b2, b10, b11 := blocked(cg, "127.0.0.2"), blocked(cg, markers[0]), blocked(cg, markers[1])
		if !b2 || b10 == b11 {
			t.Fatalf("replace %d (%s): not one whole policy: .2 blocked %v, .10 %v, .11 %v", i, cmd.ProcessState, b2, b10, b11)
		}
		t.Logf("replace %d: %s, policy with .%s in force", i, cmd.ProcessState, map[bool]string{true: "10", false: "11"}[b10])
	}
	// Whatever was left behind, the next attach and list work.
	cgwallOK(t, "attach", "--cgroup", cg, "--block", "127.0.0.2")
	if l := list(t, "--cgroup", cg); !l[0].Live || len(l[0].Rules) != 1 {
		t.Fatalf("after the kills: %+v", l)
	}
	if entries, _ := filepath.Glob("/sys/fs/bpf/cgwall/staging-*"); len(entries) != 0 {
		t.Errorf("staging leftovers after a later attach: %v", entries)
	}
}

// TestNested attaches policies to a parent and a child cgroup: a packet passes
// only if every level lets it pass.
func TestNested(t *testing.T) {
	cg, child := testCgroup(t)
	attachPolicy(t, cg, "--block", "127.0.0.2")
	attachPolicy(t, child, "--block", "127.0.0.3")
	mustEPERM(t, "child: blocked by the parent", probe(t, child, "", "udp", "127.0.0.2", "127.0.0.1"))
	mustEPERM(t, "child: blocked by the child", probe(t, child, "", "udp", "127.0.0.3", "127.0.0.1"))
	mustPass(t, "child: blocked by neither", probe(t, child, "", "udp", "127.0.0.4", "127.0.0.1"))
	mustPass(t, "parent: the child's rule does not apply", probe(t, cg, "", "udp", "127.0.0.3", "127.0.0.1"))
	// An allow below cannot override a block above.
	cgwallOK(t, "allow", "--cgroup", child, "127.0.0.2")
	mustEPERM(t, "child: allowed by the child, blocked by the parent", probe(t, child, "", "udp", "127.0.0.2", "127.0.0.1"))
	if l := list(t); len(l) < 2 {
		t.Errorf("list shows %d policies, want both", len(l))
	}
	// detach --all removes every policy on the machine; tests run one at a
	// time and each removes its own, so these two are all there is.
	out := cgwallOK(t, "detach", "--all")
	if !strings.Contains(out, "detached from "+cg+"\n") || !strings.Contains(out, "detached from "+child+"\n") {
		t.Errorf("detach --all said %q", out)
	}
	if out := cgwallOK(t, "list"); out != "no persistent policies\n" {
		t.Errorf("list after detach --all: %q", out)
	}
	mustPass(t, "child after detach --all", probe(t, child, "", "udp", "127.0.0.2", "127.0.0.1"))
}

// TestStaleAndGC removes a cgroup that has a policy: list shows it stale and
// gc removes it.
func TestStaleAndGC(t *testing.T) {
	_, child := testCgroup(t)
	attachPolicy(t, child, "--block", "127.0.0.2")
	id := list(t, "--cgroup", child)[0].ID
	if err := os.Remove(child); err != nil {
		t.Fatal(err)
	}
	var stale *listed
	for _, l := range list(t) {
		if l.ID == id {
			stale = &l
		}
	}
	if stale == nil || !stale.Stale || stale.Cgroup != "" {
		t.Fatalf("list after the cgroup went: %+v", stale)
	}
	if text := cgwallOK(t, "list"); !strings.Contains(text, fmt.Sprintf("cgroup %d (stale", id)) {
		t.Errorf("list text does not mark it stale:\n%s", text)
	}
	if out := cgwallOK(t, "gc"); !strings.Contains(out, fmt.Sprintf("removed the stale policy of cgroup %d", id)) {
		t.Errorf("gc said %q", out)
	}
	for _, l := range list(t) {
		if l.ID == id {
			t.Fatalf("gc left the stale policy: %+v", l)
		}
	}
	if _, err := os.Stat(fmt.Sprintf("/sys/fs/bpf/cgwall/%d", id)); !os.IsNotExist(err) {
		t.Errorf("pins left after gc: %v", err)
	}
}

// TestWatch streams the decisions of a persistent policy.
func TestWatch(t *testing.T) {
	cg, _ := testCgroup(t)
	attachPolicy(t, cg, "--block", "127.0.0.2", "--log", "all")
	w := startWatch(t, "watch", "--cgroup", cg, "--log", "drop")
	mustEPERM(t, "blocked", probe(t, cg, "", "udp", "127.0.0.2", "127.0.0.1"))
	line := w.stdout.waitFor(t, "DST 127.0.0.2, ACTION 0")
	if !strings.HasSuffix(line, "cgroup="+cg) {
		t.Errorf("watch line %q does not name the cgroup", line)
	}
	for _, l := range w.stdout.snapshot() {
		if strings.Contains(l, "ACTION 1") {
			t.Errorf("--log drop printed a pass: %q", l)
		}
	}
	if code := w.stop(t); code != 0 {
		t.Errorf("watch exited %d", code)
	}
	j := startWatch(t, "watch", "--cgroup", cg, "--format", "json")
	mustPass(t, "allowed", probe(t, cg, "", "udp", "127.0.0.3", "127.0.0.1"))
	var e map[string]any
	if err := json.Unmarshal([]byte(j.stdout.waitFor(t, `"dst":"127.0.0.3"`)), &e); err != nil || e["cgroup"] != cg || e["verdict"] != "pass" {
		t.Errorf("json watch event %v, %v", e, err)
	}
	j.stop(t)
}

func startWatch(t *testing.T, args ...string) *proc {
	t.Helper()
	return startReady(t, "watching ", args...)
}

// TestAttachMountsBPFFS runs attach where bpffs is not mounted (in a private
// mount namespace, so the host's stays): attach mounts it and pins there.
func TestAttachMountsBPFFS(t *testing.T) {
	cg, _ := testCgroup(t)
	stderr, code := inMountNamespace(t, `
		while grep -q ' /sys/fs/bpf ' /proc/self/mountinfo; do umount -l /sys/fs/bpf; done
		"$CGWALL" attach --cgroup `+cg+` --block 127.0.0.2 >&2
		grep ' /sys/fs/bpf ' /proc/self/mountinfo | grep -q ' - bpf ' || { echo "bpffs not mounted" >&2; exit 1; }
		test -e /sys/fs/bpf/cgwall/*/link_egress || { echo "no pinned link" >&2; exit 1; }
		exec "$CGWALL" detach --cgroup `+cg+` >&2`)
	if code != 0 || !strings.Contains(stderr, "attached policy to "+cg) || !strings.Contains(stderr, "detached from "+cg) {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}
