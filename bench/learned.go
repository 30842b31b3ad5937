package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/ruleset"
)

// The cold decision cost with learned addresses (issue #11), measured as
// decision.go measures the rule sets: a policy of one name rule, allow
// *.bench.test under default block, loaded with the name code
// (datapath.WithDNS), whose learned map holds LearnedAddrs addresses put
// there by datapath.Learn as the resolver puts them; against the same
// addresses as address rules (allow, one /32 each, default block) in a
// policy without names. hit: a learned address (or one of a rule's); miss:
// any other.

// learnedAddrs are n distinct IPv4 addresses, and as many others for the
// misses, from one seed.
func learnedAddrs(n int) (learned, others []netip.Addr) {
	rng := rand.New(rand.NewPCG(uint64(n), 111))
	seen := map[netip.Addr]bool{}
	for len(learned)+len(others) < 2*n {
		v := rng.Uint32()
		a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		if seen[a] || !a.IsGlobalUnicast() {
			continue
		}
		seen[a] = true
		if len(learned) < n {
			learned = append(learned, a)
		} else {
			others = append(others, a)
		}
	}
	return learned, others
}

// learnedPolicy is the policy of each set: default block egress, and
// either the name rule or an allow rule for each address.
func learnedPolicy(set string, addrs []netip.Addr) (*policy.Policy, error) {
	p := policy.New()
	p.Log = policy.LogNone
	p.Default[policy.Egress] = policy.Block
	if set == learnedSet {
		return p, p.Add(policy.Egress, policy.Allow, dnsPattern)
	}
	p.Grow(len(addrs))
	for _, a := range addrs {
		addRule(p, ruleset.Rule{Prefix: netip.PrefixFrom(a, 32), Allow: true})
	}
	return p, nil
}

// learnedPools are the hit and miss pools of a set, TCP SYNs to port 443
// (not 53, which the name code sends to the resolver), with the verdicts of
// the reference decision.
func learnedPools(p *policy.Policy, learned, others []netip.Addr, set string) map[string]packetPool {
	src := netip.MustParseAddr("192.0.2.1")
	isLearned := map[netip.Addr]bool{}
	if set == learnedSet {
		for _, a := range learned {
			isLearned[a] = true
		}
	}
	byName := func(a netip.Addr) (policy.Name, bool) { return policy.Name(dnsPattern), isLearned[a] }
	pools := map[string]packetPool{}
	for kind, addrs := range map[string][]netip.Addr{ruleset.Hit: learned, ruleset.Miss: others} {
		var pool packetPool
		for _, a := range addrs {
			d := ruleset.Packet{Addr: a, Proto: unix.IPPROTO_TCP, Port: 443}
			want, _ := p.DecideLearned(policy.Egress, policy.Packet{Addr: a, Proto: d.Proto, Port: d.Port}, byName)
			pool.dsts, pool.pkts, pool.wants = append(pool.dsts, d), append(pool.pkts, packet(src, d)), append(pool.wants, uint32(want))
		}
		pools[kind] = pool
	}
	return pools
}

// loadLearned loads a set's policy as cgwall run would, and for the
// learned set learns the addresses, timing both into dr.
func loadLearned(set, key string, p *policy.Policy, addrs []netip.Addr, dr *decisionRound) (*datapath.Datapath, error) {
	var opts []datapath.Option
	if set == learnedSet {
		// Nothing listens there: no packet of these goes to port 53.
		opts = append(opts, datapath.WithDNS(netip.MustParseAddrPort("127.0.0.1:53"), netip.MustParseAddrPort("[::1]:53"), len(addrs)))
	}
	start := time.Now()
	d, err := datapath.Load(p, opts...)
	if err == nil {
		err = d.Commit()
	}
	if err != nil {
		if d != nil {
			d.Close()
		}
		return nil, err
	}
	dr.LoadSec[key] = time.Since(start).Seconds()
	if set == learnedSet {
		start = time.Now()
		for chunk := range slices.Chunk(addrs, 256) { // what one answer can hold, at most
			if err := d.Learn(chunk, dnsPattern); err != nil {
				d.Close()
				return nil, err
			}
		}
		dr.LoadSec[key+" learn"] = time.Since(start).Seconds()
	}
	return d, nil
}

func runLearned(ctx context.Context, cfg *config, root string, res *results, log io.Writer) error {
	cg := filepath.Join(root, "learned")
	if err := os.Mkdir(cg, 0o755); err != nil {
		return err
	}
	n := cfg.LearnedAddrs
	learned, others := learnedAddrs(n)
	type set struct {
		p     *policy.Policy
		pools map[string]packetPool
	}
	sets := map[string]set{}
	for _, name := range []string{learnedSet, learnedLike} {
		p, err := learnedPolicy(name, learned)
		if err != nil {
			return err
		}
		sets[name] = set{p, learnedPools(p, learned, others, name)}
	}
	for r := range cfg.rounds {
		if err := ctx.Err(); err != nil {
			return err
		}
		t := time.Now()
		dr, err := func() (*decisionRound, error) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			if err := pinThread(cfg.benchCPU); err != nil {
				return nil, fmt.Errorf("pin to CPU %d: %w", cfg.benchCPU, err)
			}
			trivial, err := returnOne(ebpf.CGroupSKB, ebpf.AttachNone)
			if err != nil {
				return nil, err
			}
			defer trivial.Close()
			rng := rand.New(rand.NewPCG(uint64(r), 78))
			dr := &decisionRound{LoadSec: map[string]float64{}, MemlockMiB: map[string]float64{}}
			// Both loaded, and timed in turns (measureArms).
			var arms arms
			defer func() { arms.close() }() // the arms loaded by then
			for _, name := range []string{learnedSet, learnedLike} {
				key := name + "/" + human(n)
				d, err := loadLearned(name, key, sets[name].p, learned, dr)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", key, err)
				}
				arms = append(arms, arm{key: key, set: name, rules: n, d: d, pools: sets[name].pools})
			}
			dr.OverheadNs = timerOverhead(trivial)
			return dr, measureArms(cfg, cg, arms, dr.OverheadNs, rng, dr)
		}()
		if err != nil {
			return err
		}
		res.Learned = append(res.Learned, dr)
		fmt.Fprintf(log, "learned addresses: round %d/%d done in %.0fs\n", r+1, cfg.rounds, time.Since(t).Seconds())
	}
	return nil
}
