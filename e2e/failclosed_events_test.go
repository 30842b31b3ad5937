package e2e

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// timeField finds an event's time= in a text line.
var timeField = regexp.MustCompile(` time=(\S+)`)

// eventTime parses an event's time, which must be RFC 3339 in UTC to the
// millisecond, and checks that it lies between two moments of the test.
func eventTime(t *testing.T, s string, after, before time.Time) {
	t.Helper()
	got, err := time.Parse(time.RFC3339, s)
	if err != nil || len(s) != len("2006-01-02T15:04:05.000Z") || !strings.HasSuffix(s, "Z") {
		t.Errorf("event time %q is not RFC 3339 in UTC to the millisecond: %v", s, err)
		return
	}
	// The event is dated to the millisecond, rounded down.
	if got.Before(after.Truncate(time.Millisecond)) || got.After(before) {
		t.Errorf("event dated %s, decided between %s and %s", s, after.UTC().Format(time.RFC3339Nano), before.UTC().Format(time.RFC3339Nano))
	}
}

// TestWatchSkipsStaleEvents checks that watch prints only what is decided
// after it starts: a persistent policy's ring buffer keeps the events that
// nobody read, and they are not news. Each printed event carries its time.
func TestWatchSkipsStaleEvents(t *testing.T) {
	cg, _ := testCgroup(t)
	attachPolicy(t, cg, "--block", "127.0.0.2", "--block", "127.0.0.4", "--log", "all")
	mustEPERM(t, "UDP before watch", probe(t, cg, "", "udp", "127.0.0.2", "127.0.0.1"))

	w := startWatch(t, "watch", "--cgroup", cg)
	start := time.Now()
	mustEPERM(t, "UDP under watch", probe(t, cg, "", "udp", "127.0.0.4", "127.0.0.1"))
	end := time.Now()
	line := w.stdout.waitFor(t, "DST 127.0.0.4, ACTION 0")
	// The ring buffer is read in order: had the stale event been printed, it
	// would have been before this one.
	for _, l := range w.stdout.snapshot() {
		if strings.HasPrefix(l, "DST 127.0.0.2,") {
			t.Errorf("watch printed an event from before it started: %q", l)
		}
	}
	m := timeField.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("event %q has no time=", line)
	}
	eventTime(t, m[1], start, end)
	if code := w.stop(t); code != 0 {
		t.Errorf("watch exited %d", code)
	}
	w.stderr.waitFor(t, "decided before watch started")

	j := startWatch(t, "watch", "--cgroup", cg, "--format", "json")
	start = time.Now()
	mustEPERM(t, "UDP under watch --format json", probe(t, cg, "", "udp", "127.0.0.2", "127.0.0.1"))
	end = time.Now()
	var e struct{ Dst, Time string }
	if err := json.Unmarshal([]byte(j.stdout.waitFor(t, `"dst":"127.0.0.2"`)), &e); err != nil {
		t.Fatal(err)
	}
	eventTime(t, e.Time, start, end)
	j.stop(t)
}

// TestReplaceResetsTotals checks that list's totals, like its rule counters,
// count the policy in force: replacing a policy starts both from zero.
func TestReplaceResetsTotals(t *testing.T) {
	cg, _ := testCgroup(t)
	attachPolicy(t, cg, "--block", "127.0.0.2")
	mustEPERM(t, "UDP to a blocked address", probe(t, cg, "", "udp", "127.0.0.2", "127.0.0.1"))
	before := list(t, "--cgroup", cg)[0]
	if before.Totals["drop"].Packets == 0 || before.Totals["pass"].Packets == 0 || before.Rules[0].Packets == 0 {
		t.Fatalf("before the replace: totals %+v, rules %+v; want drops and passes counted", before.Totals, before.Rules)
	}

	cgwallOK(t, "attach", "--cgroup", cg, "--block", "127.0.0.2", "--block", "127.0.0.4")
	after := list(t, "--cgroup", cg)[0]
	for verdict, c := range after.Totals {
		if c.Packets != 0 {
			t.Errorf("after the replace, totals[%s] = %d, want 0", verdict, c.Packets)
		}
	}
	for _, r := range after.Rules {
		if r.Packets != 0 {
			t.Errorf("after the replace, rule %s counts %d, want 0", r.Prefix, r.Packets)
		}
	}

	mustEPERM(t, "UDP to a blocked address, again", probe(t, cg, "", "udp", "127.0.0.2", "127.0.0.1"))
	if again := list(t, "--cgroup", cg)[0]; again.Totals["drop"].Packets != before.Totals["drop"].Packets {
		t.Errorf("the same traffic under the new policy: %d drops, want %d as under the old one", again.Totals["drop"].Packets, before.Totals["drop"].Packets)
	}
}

// socketsLine matches what a ready line says --deny-raw enforces.
var socketsLine = regexp.MustCompile(`; (raw and packet sockets refused|raw sockets refused; packet sockets NOT refused: .+)$`)

// TestRunSaysWhatDenyRawRefuses checks that run's ready line says exactly
// what --deny-raw enforces, and that it is true: packet sockets are refused
// where it says so, and not where it says they are not (the kernel refused
// the BPF LSM guard, as this host's does).
func TestRunSaysWhatDenyRawRefuses(t *testing.T) {
	cg, _ := testCgroup(t)
	p := startCgwall(t, "run", "--cgroup", cg, "--deny-raw")
	line := p.stderr.waitFor(t, "attached ")
	m := socketsLine.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("ready line %q does not say which sockets are refused", line)
	}
	t.Logf("ready line: %s", line)
	if got := socketProbe(t, cg, "raw"); got != "operation not permitted" {
		t.Errorf("raw socket: %q, want EPERM", got)
	}
	want := "operation not permitted"
	if strings.Contains(m[1], "NOT refused") {
		want = "ok"
	}
	if got := socketProbe(t, cg, "packet"); got != want {
		t.Errorf("packet socket: %q, want %q, as the ready line says", got, want)
	}
	p.stop(t)
}

// TestListSaysWhatDenyRawRefuses checks list's account of --deny-raw against
// what a process in the cgroup can do.
func TestListSaysWhatDenyRawRefuses(t *testing.T) {
	cg, _ := testCgroup(t)
	attachPolicy(t, cg, "--deny-raw")
	text := cgwallOK(t, "list", "--cgroup", cg)
	var guarded []struct {
		PacketGuard bool `json:"packet_guard"`
	}
	if err := json.Unmarshal([]byte(cgwallOK(t, "list", "--cgroup", cg, "-o", "json")), &guarded); err != nil || len(guarded) != 1 {
		t.Fatalf("list -o json: %v", err)
	}
	want, socket := "deny_raw on (raw sockets refused; packet sockets NOT refused: ", "ok"
	if guarded[0].PacketGuard {
		want, socket = "deny_raw on (raw and packet sockets refused)", "operation not permitted"
	}
	if !strings.Contains(text, want) {
		t.Errorf("list does not say %q:\n%s", want, text)
	}
	if got := socketProbe(t, cg, "packet"); got != socket {
		t.Errorf("packet socket: %q, want %q, as list says", got, socket)
	}
}

// TestExecDenyRawRefusesPacketSockets checks that a command under exec
// --deny-raw cannot make a packet socket on any kernel: where the BPF LSM
// guard cannot load (this host), a seccomp filter refuses them. The probe
// tries every way a process here can: socket() natively, with the family's
// upper half set, as x32 and as i386 (int 0x80), and, where the filter is in
// place, socketcall() and io_uring_setup(), which it refuses too.
func TestExecDenyRawRefusesPacketSockets(t *testing.T) {
	if got := strings.TrimSpace(execProbe(t, []string{"--deny-raw"}, "socket", "packet")); got != "operation not permitted" {
		t.Errorf("packet socket under exec --deny-raw: %q, want EPERM", got)
	}
	if got := strings.TrimSpace(execProbe(t, nil, "socket", "packet")); got != "ok" {
		t.Errorf("packet socket under exec without --deny-raw: %q, want ok", got)
	}

	probe := filepath.Join(t.TempDir(), "packet-probe")
	if out, err := exec.Command("go", "build", "-o", probe, "../internal/seccomp/testdata/probe").CombinedOutput(); err != nil {
		t.Fatalf("build the packet-socket probe: %v\n%s", err, out)
	}
	stdout, stderr, code := runCgwall(t, "exec", "--deny-raw", "--log", "none", "--", probe)
	if code != 0 {
		t.Fatalf("exec: exit %d: %s", code, stderr)
	}
	t.Logf("%s%s", stderr, stdout)
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		name, result, _ := strings.Cut(line, " ")
		got[name] = result
	}
	const eperm = "errno 1"
	refused := []string{"socket", "socket_high_bits"}
	if runtime.GOARCH == "amd64" {
		refused = append(refused, "socket_x32", "socket_i386")
	}
	filtered := strings.Contains(stderr, "packet sockets refused by a seccomp filter")
	if filtered {
		refused = append(refused, "io_uring_setup")
		if runtime.GOARCH == "amd64" {
			refused = append(refused, "socketcall_i386")
		}
	}
	for _, name := range refused {
		// Without the filter, an x32 call fails with ENOSYS where the kernel
		// has no x32: no socket all the same.
		if got[name] != eperm && (filtered || got[name] == "ok" || got[name] == "") {
			t.Errorf("%s under exec --deny-raw: %q, want %q", name, got[name], eperm)
		}
	}
	if got["socket_inet"] != "ok" {
		t.Errorf("a UDP socket under exec --deny-raw: %q, want ok", got["socket_inet"])
	}
}
