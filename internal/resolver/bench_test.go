package resolver

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// nopLearner is a datapath that is instantly in force.
type nopLearner struct{}

func (nopLearner) Learn([]netip.Addr, string) error { return nil }
func (nopLearner) Forget([]netip.Addr) error        { return nil }

// BenchmarkLookup asks the upstream for an allowed name directly and through
// the resolver (judged, forwarded, learned), alternately so that both see the
// same machine, and reports the latency percentiles of each and the p50 and
// p99 the resolver adds.
func BenchmarkLookup(b *testing.B) {
	f := start(b, Config{Learner: nopLearner{}, Judge: judge(map[string]string{"bench.test": "bench.test"})})
	v4, _ := f.r.Addrs()
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	req := new(dns.Msg)
	req.SetQuestion("bench.test.", dns.TypeA)
	lookup := func(at netip.AddrPort) time.Duration {
		begin := time.Now()
		m, _, err := c.Exchange(req, at.String())
		d := time.Since(begin)
		if err != nil || len(m.Answer) != 1 {
			b.Fatalf("lookup at %s: %v %v", at, m, err)
		}
		return d
	}
	direct := make([]time.Duration, 0, b.N)
	through := make([]time.Duration, 0, b.N)
	for b.Loop() {
		direct = append(direct, lookup(f.up.addr))
		through = append(through, lookup(v4))
	}
	d50, d99 := percentiles(direct)
	r50, r99 := percentiles(through)
	b.ReportMetric(us(d50), "direct-p50-us")
	b.ReportMetric(us(d99), "direct-p99-us")
	b.ReportMetric(us(r50), "resolver-p50-us")
	b.ReportMetric(us(r99), "resolver-p99-us")
	b.ReportMetric(us(r50-d50), "added-p50-us")
	b.ReportMetric(us(r99-d99), "added-p99-us")
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)*50/100], s[len(s)*99/100]
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
