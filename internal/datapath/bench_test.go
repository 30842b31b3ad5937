package datapath

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/cgwall/cgwall/internal/policy"
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
	sizes := []struct {
		name string
		n    int
	}{{"1", 1}, {"1k", 1000}, {"100k", 100_000}, {"1M", 1_000_000}}

	for _, set := range benchRuleSets {
		b.Run(set.name, func(b *testing.B) {
			for _, size := range sizes {
				b.Run("rules="+size.name, func(b *testing.B) {
					rs := set.build(size.n)
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
					d := load(b, p)
					mem, err := ruleMapMemlock(d)
					if err != nil {
						b.Fatal(err)
					}
					mib := float64(mem) / (1 << 20)

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
						if got, _ := p.Decide(policy.Egress, dst.dst); got != dst.want {
							b.Fatalf("%s: %s: reference says %s, want %s", dst.name, dst.dst, got, dst.want)
						}
						src := local4
						if dst.dst.Is6() {
							src = local6
						}
						pkt := packet(src, dst.dst)
						b.Run(dst.name, func(b *testing.B) {
							b.ResetTimer()
							ret, perPkt, err := d.objs.CgwallEgress.Benchmark(pkt, b.N, b.ResetTimer)
							b.StopTimer()
							if err != nil {
								b.Fatal(err)
							}
							if policy.Action(ret) != dst.want {
								b.Fatalf("%s: verdict %d, want %d", dst.dst, ret, dst.want)
							}
							b.ReportMetric(float64(perPkt.Nanoseconds()), "ns/pkt")
							b.ReportMetric(mib, "map-MiB")
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
	hitPrefix netip.Addr // in a prefix rule, in no host rule; invalid if there is none
	miss      netip.Addr // in no rule
}

// benchRuleSets are the rule sets BenchmarkEgress times. Each build returns n
// distinct canonical prefixes, the same ones every time for a given n.
var benchRuleSets = []struct {
	name  string
	build func(n int) benchSet
}{
	{"ipv4-host", func(n int) benchSet {
		return buildBenchSet(n, 4, []benchShare{{32, n}})
	}},
	{"ipv4-mixed", func(n int) benchSet {
		// A public-blocklist mix: 85% /32, 10% /24, 4% /16, 1% /8. There are
		// only 256 /8s, so the /8s stop at 16 (1/16 of the address space)
		// and the rest of that 1% become /32s.
		n8 := min(n/100, 16)
		n16 := n * 4 / 100
		n24 := n * 10 / 100
		return buildBenchSet(n, 4, []benchShare{{8, n8}, {16, n16}, {24, n24}, {32, n - n8 - n16 - n24}})
	}},
	{"ipv6", func(n int) benchSet {
		// 85% /128, 15% prefixes from /48 to /64, all under 2001:db8::/32.
		np := n * 15 / 100
		shares := []benchShare{{128, n - np}}
		for bits := 48; bits <= 64; bits++ {
			// Spread np over the 17 lengths; the first ones take the remainder.
			k := np / 17
			if bits-48 < np%17 {
				k++
			}
			shares = append(shares, benchShare{bits, k})
		}
		return buildBenchSet(n, 6, shares)
	}},
}

// benchShare asks for count distinct prefixes of one length.
type benchShare struct {
	bits, count int
}

var benchV6Base = netip.MustParsePrefix("2001:db8::/32")

// buildBenchSet draws the shares' prefixes from a fixed seed: IPv4 ones from
// the whole address space, IPv6 ones from 2001:db8::/32. Nothing is sent to
// these addresses; they are only keys.
func buildBenchSet(n, family int, shares []benchShare) benchSet {
	rng := rand.New(rand.NewPCG(uint64(n), uint64(family)))
	randAddr := func() netip.Addr {
		if family == 4 {
			var a [4]byte
			v := rng.Uint32()
			a[0], a[1], a[2], a[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
			return netip.AddrFrom4(a)
		}
		a := benchV6Base.Addr().As16()
		hi, lo := rng.Uint64(), rng.Uint64()
		for i := 4; i < 16; i++ {
			if i < 8 {
				a[i] = byte(hi >> (8 * (7 - i)))
			} else {
				a[i] = byte(lo >> (8 * (15 - i)))
			}
		}
		return netip.AddrFrom16(a)
	}

	seen := make(map[netip.Prefix]struct{}, n)
	var set benchSet
	set.prefixes = make([]netip.Prefix, 0, n)
	lengths := map[int]bool{}
	var longestPrefix netip.Prefix // a prefix rule of the longest non-host length
	for _, s := range shares {
		if s.count == 0 {
			continue
		}
		lengths[s.bits] = true
		for added := 0; added < s.count; {
			p := netip.PrefixFrom(randAddr(), s.bits).Masked()
			if _, dup := seen[p]; dup {
				continue
			}
			seen[p] = struct{}{}
			set.prefixes = append(set.prefixes, p)
			added++
			if p.IsSingleIP() {
				if !set.hitHost.IsValid() {
					set.hitHost = p.Addr()
				}
			} else if s.bits > longestPrefix.Bits() {
				longestPrefix = p
			}
		}
	}

	covered := func(a netip.Addr) bool {
		for bits := range lengths {
			if _, ok := seen[netip.PrefixFrom(a, bits).Masked()]; ok {
				return true
			}
		}
		return false
	}
	isHost := func(a netip.Addr) bool {
		_, ok := seen[netip.PrefixFrom(a, a.BitLen())]
		return ok
	}

	if longestPrefix.IsValid() {
		for {
			// An address inside the prefix: keep its bits, randomise the rest.
			a := randAddr().AsSlice()
			base := longestPrefix.Addr().AsSlice()
			bits := longestPrefix.Bits()
			for i := range a {
				keep := min(max(bits-8*i, 0), 8)
				mask := byte(0xff << (8 - keep))
				a[i] = base[i]&mask | a[i]&^mask
			}
			addr, _ := netip.AddrFromSlice(a)
			if family == 6 && !benchV6Base.Contains(addr) {
				continue
			}
			if !isHost(addr) {
				set.hitPrefix = addr
				break
			}
		}
	}
	for {
		a := randAddr()
		if !covered(a) {
			set.miss = a
			break
		}
	}
	return set
}

// ruleMapMemlock returns the kernel memory, in bytes, charged to the
// datapath's eight rule maps (both directions, both families, host hash maps
// and prefix LPM tries), as the memlock line of each map's fdinfo states it.
func ruleMapMemlock(d *Datapath) (uint64, error) {
	var total uint64
	for _, o := range d.outerMaps() {
		inner, err := d.innerMap(o.m)
		if err != nil {
			return 0, err
		}
		n, err := mapMemlock(inner)
		inner.Close()
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// mapMemlock reads the memlock line of a map's /proc/self/fdinfo entry.
func mapMemlock(m *ebpf.Map) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/self/fdinfo/%d", m.FD()))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "memlock:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no memlock line in fdinfo of %s", m)
}
