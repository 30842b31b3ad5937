package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/ruleset"
)

// BenchmarkEgress times the egress program through BPF_PROG_TEST_RUN: the
// kernel runs it b.N times on one packet and reports the mean time per run,
// which is reported as ns/pkt. ns/op is the wall time of the same syscall per
// packet, so it is ns/pkt plus the syscall's cost spread over b.N runs.
//
// Each rule set is built and loaded once per size and shared by its hit and
// miss sub-benchmarks. Every rule blocks, so a hit returns 0 and a miss 1 (the
// default, allow). The policy logs nothing, so events cost nothing.
//
// Sub-benchmarks:
//   - hit: the destination is a host rule (/32 or /128): one hash lookup.
//   - hit-prefix: the destination is in a prefix rule and no host rule: a hash
//     miss, then an LPM-trie hit. Only where the rule set has prefix rules.
//   - miss: no rule matches: a hash miss and an LPM-trie miss.
//
// The figures are in docs/performance.md. Nothing here asserts on time.
func BenchmarkEgress(b *testing.B) {
	benchEgress(b, []benchSize{{"1", 1}, {"1k", 1000}, {"100k", 100_000}, {"1M", 1_000_000}})
}

// BenchmarkEgressFixed is BenchmarkEgress, without map-MiB, for the object
// that run and exec load (Fixed), whose programs reference the rule maps
// directly, at the sizes of most policies.
func BenchmarkEgressFixed(b *testing.B) {
	benchEgress(b, []benchSize{{"1", 1}, {"10", 10}, {"100", 100}, {"1k", 1000}}, Fixed())
}

type benchSize struct {
	name string
	n    int
}

func benchEgress(b *testing.B, sizes []benchSize, opts ...Option) {
	for _, set := range ruleset.Kinds {
		b.Run(set.Name, func(b *testing.B) {
			for _, size := range sizes {
				b.Run("rules="+size.name, func(b *testing.B) {
					rs := buildBenchSet(set.Build, size.n)
					p := policy.New()
					p.Log = policy.LogNone
					for _, prefix := range rs.prefixes {
						if err := p.AddPrefix(policy.Egress, policy.Block, prefix); err != nil {
							b.Fatal(err)
						}
					}
					if len(p.Rules) != size.n {
						b.Fatalf("rule set has %d rules, want %d", len(p.Rules), size.n)
					}
					d := load(b, p, opts...)
					mib := -1.0
					if !d.fixed {
						mem, err := ruleMapMemlock(d)
						if err != nil {
							b.Fatal(err)
						}
						mib = float64(mem) / (1 << 20)
					}

					dsts := []struct {
						name string
						dst  netip.Addr
						want policy.Action
					}{
						{"hit", rs.hitHost, policy.Block},
						{"hit-prefix", rs.hitPrefix, policy.Block},
						{"miss", rs.miss, policy.Allow},
					}
					for _, dst := range dsts {
						if !dst.dst.IsValid() {
							continue // e.g. no prefix rules in a set of one
						}
						if got, _ := p.DecideAddr(policy.Egress, dst.dst); got != dst.want {
							b.Fatalf("%s: %s: reference says %s, want %s", dst.name, dst.dst, got, dst.want)
						}
						src := local4
						if dst.dst.Is6() {
							src = local6
						}
						pkt := packet(src, dst.dst)
						b.Run(dst.name, func(b *testing.B) {
							b.ResetTimer()
							ret, perPkt, err := d.progs[cgwallProgCgwallEgress].Benchmark(pkt, b.N, b.ResetTimer)
							b.StopTimer()
							if err != nil {
								b.Fatal(err)
							}
							if policy.Action(ret) != dst.want {
								b.Fatalf("%s: verdict %d, want %d", dst.dst, ret, dst.want)
							}
							b.ReportMetric(float64(perPkt.Nanoseconds()), "ns/pkt")
							if mib >= 0 {
								b.ReportMetric(mib, "map-MiB")
							}
						})
					}
				})
			}
		})
	}
}

// benchSet is one generated rule set and the destinations to time against it.
type benchSet struct {
	prefixes  []netip.Prefix
	hitHost   netip.Addr // a host rule
	hitPrefix netip.Addr // in a prefix rule of the longest length, in no host rule; invalid if there is none
	miss      netip.Addr // in no rule
}

// buildBenchSet builds a rule set of internal/ruleset, which the bench harness
// times cold, and picks one destination of each kind.
func buildBenchSet(build func(n int) *ruleset.Set, n int) benchSet {
	rs := build(n)
	set := benchSet{prefixes: rs.Prefixes, hitHost: rs.Hosts[0]}
	if misses := rs.Destinations(ruleset.Miss, 1); len(misses) > 0 {
		set.miss = misses[0]
	}
	if len(rs.Nets) == 0 {
		return set
	}
	longest := rs.Nets[0]
	for _, p := range rs.Nets {
		if p.Bits() > longest.Bits() {
			longest = p
		}
	}
	for !set.hitPrefix.IsValid() {
		// Inside the prefix, in the documentation range, and no host rule.
		if a := rs.Inside(longest); (a.Is4() || ipv6Range.Contains(a)) && !rs.IsHost(a) {
			set.hitPrefix = a
		}
	}
	return set
}

var ipv6Range = netip.MustParsePrefix("2001:db8::/32")

// ruleMapMemlock returns the kernel memory, in bytes, charged to the
// datapath's rule maps (both directions: host hash maps, IPv4 prefix hash
// maps, IPv6 prefix LPM tries) and IPv4 bitmaps where the policy has them, as
// the memlock line of each map's fdinfo states it.
func ruleMapMemlock(d *Datapath) (uint64, error) {
	var total uint64
	for _, m := range d.maps.all() {
		inner, err := d.innerMap(m.outer)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			continue // no bitmap
		}
		if err != nil {
			return 0, err
		}
		info, err := inner.Info()
		inner.Close()
		if err != nil {
			return 0, err
		}
		n, ok := info.Memlock()
		if !ok {
			return 0, fmt.Errorf("the kernel does not report the memory of %s", m.name())
		}
		total += n
	}
	return total, nil
}
