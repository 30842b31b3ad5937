package resolver

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// newTestTable is a table on a fake clock whose expiry rounds the test runs
// itself (no loop), so every step is deterministic.
func newTestTable(minTTL time.Duration, maxPerName int) (*table, *learner, *clock) {
	l, clk := new(learner), newClock()
	return newTables(minTTL, maxPerName, clk.Now, func(*Tenant, int, error) {}).of(&Tenant{Learner: l}), l, clk
}

func rec(a string, ttl time.Duration) record { return record{netip.MustParseAddr(a), ttl} }

func mustLearn(t *testing.T, tb *table, name string, recs ...record) {
	t.Helper()
	if err := tb.learn(name, recs, "p"); err != nil {
		t.Fatal(err)
	}
}

// forgetsAt advances to at (from the start) and runs a round; it fails
// unless exactly want is forgotten then.
func forgetsAt(t *testing.T, tb *table, l *learner, clk *clock, start time.Time, at time.Duration, want ...string) {
	t.Helper()
	clk.Advance(start.Add(at).Sub(clk.Now()))
	tb.expire()
	got := l.forgotten()
	l.mu.Lock()
	l.forgets = nil
	l.mu.Unlock()
	if w := addrs(want...); !slices.Equal(got, w) {
		t.Errorf("at %v forgot %v, want %v", at, got, w)
	}
}

func TestTTLFloor(t *testing.T) {
	tb, l, clk := newTestTable(2*time.Second, 256)
	t0 := clk.Now()
	mustLearn(t, tb, "short.test", rec("192.0.2.1", time.Second), rec("192.0.2.2", 10*time.Second))
	forgetsAt(t, tb, l, clk, t0, time.Second)
	forgetsAt(t, tb, l, clk, t0, 1999*time.Millisecond)
	forgetsAt(t, tb, l, clk, t0, 2*time.Second, "192.0.2.1")
	forgetsAt(t, tb, l, clk, t0, 9999*time.Millisecond)
	forgetsAt(t, tb, l, clk, t0, 10*time.Second, "192.0.2.2")
	if len(tb.names) != 0 || len(tb.holders) != 0 || len(tb.expiry) != 0 {
		t.Errorf("table not empty: %d names, %d holders, %d in the heap", len(tb.names), len(tb.holders), len(tb.expiry))
	}
}

func TestRenewal(t *testing.T) {
	tb, l, clk := newTestTable(2*time.Second, 256)
	t0 := clk.Now()
	mustLearn(t, tb, "a.test", rec("192.0.2.1", 0), rec("192.0.2.2", 0))
	clk.Advance(1500 * time.Millisecond)
	// A later answer renews what it gives again; the other keeps its
	// expiry.
	mustLearn(t, tb, "a.test", rec("192.0.2.1", 0))
	forgetsAt(t, tb, l, clk, t0, 2*time.Second, "192.0.2.2")
	forgetsAt(t, tb, l, clk, t0, 3499*time.Millisecond)
	forgetsAt(t, tb, l, clk, t0, 3500*time.Millisecond, "192.0.2.1")
}

func TestRenewalNeverShortens(t *testing.T) {
	tb, l, clk := newTestTable(time.Second, 256)
	t0 := clk.Now()
	mustLearn(t, tb, "a.test", rec("192.0.2.1", 10*time.Second))
	clk.Advance(time.Second)
	// A cache's answer counting down must not cut the first answer's
	// lifetime: the client may hold that one.
	mustLearn(t, tb, "a.test", rec("192.0.2.1", time.Second))
	forgetsAt(t, tb, l, clk, t0, 9*time.Second)
	forgetsAt(t, tb, l, clk, t0, 10*time.Second, "192.0.2.1")
}

func TestCapPerNameEvictsOldest(t *testing.T) {
	tb, l, clk := newTestTable(time.Minute, 3)
	t0 := clk.Now()
	mustLearn(t, tb, "cdn.test", rec("192.0.2.1", 0), rec("192.0.2.2", 0), rec("192.0.2.3", 0))
	mustLearn(t, tb, "cdn.test", rec("192.0.2.4", 0))
	forgetsAt(t, tb, l, clk, t0, 0, "192.0.2.1")

	// Renewing .2 makes .3 the oldest.
	mustLearn(t, tb, "cdn.test", rec("192.0.2.2", 0))
	mustLearn(t, tb, "cdn.test", rec("192.0.2.5", 0))
	forgetsAt(t, tb, l, clk, t0, 0, "192.0.2.3")

	// Other names are not counted against this one.
	mustLearn(t, tb, "other.test", rec("192.0.2.6", 0), rec("192.0.2.7", 0), rec("192.0.2.8", 0))
	forgetsAt(t, tb, l, clk, t0, 0)
	if got := len(tb.names["cdn.test"].items); got != 3 {
		t.Errorf("cdn.test holds %d addresses", got)
	}

	// One answer over the cap keeps its last addresses.
	mustLearn(t, tb, "big.test", rec("198.51.100.1", 0), rec("198.51.100.2", 0), rec("198.51.100.3", 0), rec("198.51.100.4", 0))
	forgetsAt(t, tb, l, clk, t0, 0, "198.51.100.1")
}

func TestSharedAddressForgottenWhenBothLetGo(t *testing.T) {
	tb, l, clk := newTestTable(time.Second, 2)
	t0 := clk.Now()
	mustLearn(t, tb, "a.test", rec("192.0.2.1", 2*time.Second))
	mustLearn(t, tb, "b.test", rec("192.0.2.1", 5*time.Second))
	forgetsAt(t, tb, l, clk, t0, 2*time.Second)
	forgetsAt(t, tb, l, clk, t0, 5*time.Second, "192.0.2.1")

	// Eviction from one name is letting go too.
	mustLearn(t, tb, "a.test", rec("192.0.2.9", 10*time.Second))
	mustLearn(t, tb, "b.test", rec("192.0.2.9", 20*time.Second))
	mustLearn(t, tb, "a.test", rec("192.0.2.10", 10*time.Second), rec("192.0.2.11", 10*time.Second))
	forgetsAt(t, tb, l, clk, t0, 5*time.Second)
	forgetsAt(t, tb, l, clk, t0, 15*time.Second, "192.0.2.10", "192.0.2.11")
	forgetsAt(t, tb, l, clk, t0, 25*time.Second, "192.0.2.9")
}

func TestPendingNotExpired(t *testing.T) {
	// Between an answer's hold and its Learn the clock may pass the
	// expiry; the round must leave the address, or the Learn that
	// follows would put in an address the table no longer holds.
	tb, l, clk := newTestTable(time.Second, 256)
	tb.mu.Lock()
	it := tb.hold("a.test", netip.MustParseAddr("192.0.2.1"))
	tb.mu.Unlock()
	clk.Advance(time.Hour)
	tb.expire()
	if got := l.forgotten(); len(got) != 0 {
		t.Fatalf("forgot %v while its Learn was pending", got)
	}
	if _, ok := tb.next(); ok {
		t.Error("a pending item has an expiry for the timer")
	}
	tb.mu.Lock()
	it.pending--
	it.expiry = clk.Now()
	tb.mu.Unlock()
	tb.expire()
	if got := l.forgotten(); !slices.Equal(got, addrs("192.0.2.1")) {
		t.Errorf("forgot %v", got)
	}
}

func TestForgetInBatches(t *testing.T) {
	// The harness's size: 100k addresses under 1000 names, all expiring
	// at once.
	const names, perName = 1000, 100
	tb, l, clk := newTestTable(time.Second, 256)
	for n := range names {
		recs := make([]record, perName)
		for i := range recs {
			// 2001:db8::N:0:0:I, distinct for every name and index.
			recs[i].addr = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 8: byte(n >> 8), 9: byte(n), 15: byte(i)})
		}
		mustLearn(t, tb, fmt.Sprintf("n%d.test", n), recs...)
	}
	clk.Advance(time.Second)
	begin := time.Now()
	tb.expire()
	t.Logf("forgot %d addresses in %v", names*perName, time.Since(begin))
	if got := len(l.forgotten()); got != names*perName {
		t.Errorf("forgot %d addresses, want %d", got, names*perName)
	}
	for _, f := range l.forgets {
		if len(f) > forgetBatch {
			t.Fatalf("a Forget of %d addresses, over the batch of %d", len(f), forgetBatch)
		}
	}
	if len(tb.names) != 0 || len(tb.holders) != 0 || len(tb.expiry) != 0 {
		t.Errorf("table not empty: %d names, %d holders, %d in the heap", len(tb.names), len(tb.holders), len(tb.expiry))
	}
}
