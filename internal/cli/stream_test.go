package cli

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/cgwall/cgwall/internal/events"
	"github.com/cgwall/cgwall/internal/policy"
)

// TestStreamDNS checks that DNS decisions are printed as the log level and
// the process filter ask, all of them once stopped, and that a full queue
// drops and counts instead of waiting.
func TestStreamDNS(t *testing.T) {
	for _, tc := range []struct {
		name    string
		filter  policy.LogLevel
		process processFilter
		want    string
	}{
		{"all", policy.LogAll, processFilter{}, "DNS a.test, ACTION 1 hook=dns qtype=A rule=a.test cgroup=/cg\nDNS b.test, ACTION 0 hook=dns qtype=AAAA rule=default cgroup=/cg\n"},
		{"drops", policy.LogDrop, processFilter{}, "DNS b.test, ACTION 0 hook=dns qtype=AAAA rule=default cgroup=/cg\n"},
		{"by process", policy.LogAll, processFilter{comm: "curl"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			s := &streamer{dns: newDNSQueue(), out: bufio.NewWriter(&b), filter: tc.filter, process: tc.process, cgroup: "/cg"}
			s.dns.put(events.DNS{Name: "a.test", QType: 1, Action: 1, Rule: "a.test"})
			stop := s.printDNS()
			s.dns.put(events.DNS{Name: "b.test", QType: 28, Action: 0, Rule: "default"})
			stop()
			if b.String() != tc.want {
				t.Errorf("got\n%s\nwant\n%s", b.String(), tc.want)
			}
		})
	}
	q := newDNSQueue()
	for range dnsQueueSize + 3 {
		q.put(events.DNS{Name: "a.test"})
	}
	if q.lost.Load() != 3 {
		t.Errorf("lost %d of a full queue, want 3", q.lost.Load())
	}
}
