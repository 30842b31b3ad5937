package metrics

import (
	"fmt"
	"testing"

	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/testutil"
)

// BenchmarkGather is what a scrape costs the agent, rendering aside: the
// maps of every policy read, under the agent's lock, for 1 and 100 policies
// of 10 rules.
func BenchmarkGather(b *testing.B) {
	testutil.RequireBPF(b)
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			src := &source{}
			for i := range n {
				p := policy.New()
				for r := range 10 {
					if err := p.Add(policy.Egress, policy.Block, fmt.Sprintf("192.0.2.%d", r+1)); err != nil {
						b.Fatal(err)
					}
				}
				d, err := datapath.Load(p)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { d.Close() })
				src.policies = append(src.policies, Policy{Cgroup: fmt.Sprintf("app%d", i), File: "app.yaml", State: InForce, Datapath: d})
			}
			m := New(src, DefaultRuleLimit)
			for b.Loop() {
				if _, err := m.reg.Gather(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
