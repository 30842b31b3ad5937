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
	host, v4 := prefix.IsSingleIP(), prefix.Addr().Is4()
	names := [2][4]string{
		{cgwallMapEgressHost4, cgwallMapEgressPrefix4, cgwallMapEgressHost6, cgwallMapEgressPrefix6},
		{cgwallMapIngressHost4, cgwallMapIngressPrefix4, cgwallMapIngressHost6, cgwallMapIngressPrefix6},
	}
	i := 0
	if !host {
		i++
	}
	if !v4 {
		i += 2
	}
	return names[dir][i]
}

// ruleKey encodes a prefix as the key of its map.
func ruleKey(prefix netip.Prefix) any {
	a := prefix.Addr()
	switch {
	case a.Is4() && prefix.IsSingleIP():
		return a.As4()
	case a.Is4():
		return cgwallPrefixKey4{Prefixlen: uint32(prefix.Bits()), Addr: be32(a.As4())}
	case prefix.IsSingleIP():
		return cgwallAddr6{Addr: a.As16()}
	}
	return cgwallPrefixKey6{Prefixlen: uint32(prefix.Bits()), Addr: a.As16()}
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

// batch gathers the keys and values bound for one map.
type batch struct {
	keys   []any
	values []cgwallRule
}

// fillGeneration writes every rule of p, with its counters if given, into a
// generation's fresh inner maps.
func fillGeneration(g generation, p *policy.Policy, counters map[uint32]Counter) error {
	batches := map[string]*batch{}
	for _, r := range p.Rules {
		name := mapName(r.Dir, r.Prefix)
		b := batches[name]
		if b == nil {
			b = &batch{}
			batches[name] = b
		}
		c := counters[r.ID]
		b.keys = append(b.keys, ruleKey(r.Prefix))
		b.values = append(b.values, cgwallRule{Id: r.ID, Action: uint8(r.Action), Packets: c.Packets, Bytes: c.Bytes})
	}
	for name, b := range batches {
		if err := writeRules(g[name], b); err != nil {
			return fmt.Errorf("write rules to %s: %w", name, err)
		}
	}
	return nil
}

// writeRules writes a batch in one system call where the map type allows it.
func writeRules(m *ebpf.Map, b *batch) error {
	_, err := m.BatchUpdate(typedKeys(b.keys), b.values, nil)
	if !errors.Is(err, ebpf.ErrNotSupported) {
		return err
	}
	for i, k := range b.keys {
		if err := m.Put(k, b.values[i]); err != nil {
			return err
		}
	}
	return nil
}

// typedKeys turns a batch's keys into a slice of their concrete type, which is
// what BatchUpdate marshals.
func typedKeys(keys []any) any {
	switch keys[0].(type) {
	case [4]byte:
		return collect[[4]byte](keys)
	case cgwallPrefixKey4:
		return collect[cgwallPrefixKey4](keys)
	case cgwallAddr6:
		return collect[cgwallAddr6](keys)
	}
	return collect[cgwallPrefixKey6](keys)
}

func collect[T any](keys []any) []T {
	out := make([]T, len(keys))
	for i, k := range keys {
		out[i] = k.(T)
	}
	return out
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
