package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/cgwall/cgwall/internal/policy"
)

// mapName names the outer map that holds a prefix's rule.
func mapName(dir policy.Direction, prefix netip.Prefix) string {
	return ruleMapNames[dir][mapKind(prefix)]
}

// mapKind indexes a prefix's rule map among a direction's (see ruleMapNames).
func mapKind(prefix netip.Prefix) int {
	i := kindHost4
	if !prefix.IsSingleIP() {
		i++
	}
	if !prefix.Addr().Is4() {
		i += 2
	}
	return i
}

// ruleCounts counts a policy's rules by direction and map kind.
type ruleCounts [2][4]int

func countRules(p *policy.Policy) ruleCounts {
	var n ruleCounts
	for _, r := range p.Rules {
		n[r.Dir][mapKind(r.Prefix)]++
	}
	return n
}

// The kinds of rule maps, as mapKind returns them.
const (
	kindHost4 = iota
	kindPrefix4
	kindHost6
	kindPrefix6
)

// ruleKey encodes a prefix as the key of its map.
func ruleKey(prefix netip.Prefix) any {
	switch mapKind(prefix) {
	case kindHost4:
		return prefix.Addr().As4()
	case kindPrefix4:
		return prefixKey4(prefix)
	case kindHost6:
		return cgwallAddr6{Addr: prefix.Addr().As16()}
	}
	return prefixKey6(prefix)
}

func prefixKey4(prefix netip.Prefix) cgwallPrefixKey4 {
	return cgwallPrefixKey4{Prefixlen: uint32(prefix.Bits()), Addr: be32(prefix.Addr().As4())}
}

func prefixKey6(prefix netip.Prefix) cgwallPrefixKey6 {
	return cgwallPrefixKey6{Prefixlen: uint32(prefix.Bits()), Addr: prefix.Addr().As16()}
}

// rulePrefix decodes a rule map key.
func rulePrefix(key any) netip.Prefix {
	switch k := key.(type) {
	case *[4]byte:
		return netip.PrefixFrom(netip.AddrFrom4(*k), 32)
	case *cgwallPrefixKey4:
		return netip.PrefixFrom(netip.AddrFrom4(fromBE32(k.Addr)), int(k.Prefixlen))
	case *cgwallAddr6:
		return netip.PrefixFrom(netip.AddrFrom16(k.Addr), 128)
	case *cgwallPrefixKey6:
		return netip.PrefixFrom(netip.AddrFrom16(k.Addr), int(k.Prefixlen))
	}
	panic(fmt.Sprintf("unknown rule key %T", key))
}

// be32 reinterprets an address's bytes as the datapath's __u32 in network order.
func be32(b [4]byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func fromBE32(v uint32) [4]byte {
	return [4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
}

// fillGeneration writes every rule of p, with its counters if given, into a
// generation's fresh rule maps. Most of the time of a large load is the
// kernel inserting elements, so the maps are written in chunks by one worker
// per CPU.
func fillGeneration(g generation, p *policy.Policy, n ruleCounts, counters map[uint32]Counter) error {
	// Sized up front: on a VM, fresh memory costs time, and growing slices
	// by appending touches about twice as much.
	var b batches
	for _, dir := range policy.Directions {
		b.host4[dir].alloc(n[dir][kindHost4])
		b.prefix4[dir].alloc(n[dir][kindPrefix4])
		b.host6[dir].alloc(n[dir][kindHost6])
		b.prefix6[dir].alloc(n[dir][kindPrefix6])
	}
	for _, r := range p.Rules {
		c := counters[r.ID]
		v := cgwallRule{Id: r.ID, Action: uint8(r.Action), Packets: c.Packets, Bytes: c.Bytes}
		switch mapKind(r.Prefix) {
		case kindHost4:
			b.host4[r.Dir].add(r.Prefix.Addr().As4(), v)
		case kindPrefix4:
			b.prefix4[r.Dir].add(prefixKey4(r.Prefix), v)
		case kindHost6:
			b.host6[r.Dir].add(cgwallAddr6{Addr: r.Prefix.Addr().As16()}, v)
		default:
			b.prefix6[r.Dir].add(prefixKey6(r.Prefix), v)
		}
	}
	var writes []func() error
	for _, dir := range policy.Directions {
		names := ruleMapNames[dir]
		writes = append(writes, b.host4[dir].writes(g[names[kindHost4]])...)
		writes = append(writes, b.prefix4[dir].writes(g[names[kindPrefix4]])...)
		writes = append(writes, b.host6[dir].writes(g[names[kindHost6]])...)
		writes = append(writes, b.prefix6[dir].writes(g[names[kindPrefix6]])...)
	}
	return runAll(writes)
}

// ruleMapNames names the rule maps by direction: host4, prefix4, host6, prefix6.
var ruleMapNames = [2][4]string{
	{cgwallMapEgressHost4, cgwallMapEgressPrefix4, cgwallMapEgressHost6, cgwallMapEgressPrefix6},
	{cgwallMapIngressHost4, cgwallMapIngressPrefix4, cgwallMapIngressHost6, cgwallMapIngressPrefix6},
}

// batches gathers a policy's rules by the map they go to.
type batches struct {
	host4   [2]batch[[4]byte]
	prefix4 [2]batch[cgwallPrefixKey4]
	host6   [2]batch[cgwallAddr6]
	prefix6 [2]batch[cgwallPrefixKey6]
}

// batch gathers the keys and values bound for one map.
type batch[K any] struct {
	keys   []K
	values []cgwallRule
}

func (b *batch[K]) alloc(n int) {
	b.keys = make([]K, 0, n)
	b.values = make([]cgwallRule, 0, n)
}

func (b *batch[K]) add(k K, v cgwallRule) {
	b.keys = append(b.keys, k)
	b.values = append(b.values, v)
}

// chunk is the most rules one system call writes: small enough to spread a
// large map over the CPUs, large enough that the calls cost nothing.
const chunk = 1 << 16

// writes returns the writes that put the batch into m, a chunk each.
func (b *batch[K]) writes(m *ebpf.Map) []func() error {
	var out []func() error
	for lo := 0; lo < len(b.keys); lo += chunk {
		hi := min(lo+chunk, len(b.keys))
		out = append(out, func() error {
			if err := writeRules(m, b.keys[lo:hi], b.values[lo:hi]); err != nil {
				return fmt.Errorf("write rules to %s: %w", m, err)
			}
			return nil
		})
	}
	return out
}

// writeRules writes rules in one system call where the map type allows it
// (LPM tries do not).
func writeRules[K any](m *ebpf.Map, keys []K, values []cgwallRule) error {
	_, err := m.BatchUpdate(keys, values, nil)
	if !errors.Is(err, ebpf.ErrNotSupported) {
		return err
	}
	for i, k := range keys {
		if err := m.Put(k, values[i]); err != nil {
			return err
		}
	}
	return nil
}

// runAll runs fns on runTasks's workers and returns their errors.
func runAll(fns []func() error) error {
	errs := make([]error, len(fns))
	tasks := make([]func(), len(fns))
	for i, fn := range fns {
		tasks[i] = func() { errs[i] = fn() }
	}
	runTasks(tasks)
	return errors.Join(errs...)
}

// configFor returns p's settings as the datapath keeps them, with the lengths
// that its IPv4 prefix rules have.
func configFor(p *policy.Policy) cgwallConfig {
	cfg := cgwallConfig{LogLevel: uint8(p.Log)}
	for _, dir := range policy.Directions {
		cfg.DefaultAction[dir] = uint8(p.Default[dir])
	}
	if p.Audit {
		cfg.Audit = 1
	}
	if p.DenyRaw {
		cfg.DenyRaw = 1
	}
	var present [2][32]bool // by direction and length
	for _, r := range p.Rules {
		if r.Prefix.Addr().Is4() && !r.Prefix.IsSingleIP() {
			present[r.Dir][r.Prefix.Bits()] = true
		}
	}
	for _, dir := range policy.Directions {
		cfg.Nlens4[dir] = longestFirst(present[dir][:], cfg.Lens4[dir][:])
	}
	return cfg
}

// longestFirst writes the lengths marked present into lens, longest first,
// and returns how many there are.
func longestFirst(present []bool, lens []uint8) uint8 {
	n := 0
	for l := len(present) - 1; l >= 0; l-- {
		if present[l] {
			lens[n] = uint8(l)
			n++
		}
	}
	return uint8(n)
}

// hasLength says whether cfg's prefix lengths include prefix's. Host rules
// and IPv6 prefixes (in an LPM trie) need none.
func hasLength(cfg *cgwallConfig, dir policy.Direction, prefix netip.Prefix) bool {
	if prefix.IsSingleIP() || !prefix.Addr().Is4() {
		return true
	}
	return slices.Contains(cfg.Lens4[dir][:cfg.Nlens4[dir]], uint8(prefix.Bits()))
}

func (d *Datapath) writeSettings(p *policy.Policy, gen uint32) error {
	if err := d.objs.Settings.Put(gen, configFor(p)); err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	return nil
}
