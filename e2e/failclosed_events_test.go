package e2e

import (
	"encoding/json"
	"regexp"
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
