package datapath

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/cgwall/cgwall/internal/policy"
)

// ruleMaps are the four rule maps of one direction.
type ruleMaps struct {
	host4, prefix4, host6, prefix6 *ebpf.Map
}

func (d *Datapath) ruleMaps(dir policy.Direction) ruleMaps {
	m := &d.objs.cgwallMaps
	if dir == policy.Ingress {
		return ruleMaps{m.IngressHost4, m.IngressPrefix4, m.IngressHost6, m.IngressPrefix6}
	}
	return ruleMaps{m.EgressHost4, m.EgressPrefix4, m.EgressHost6, m.EgressPrefix6}
}

// batch gathers the keys and values bound for one map.
type batch struct {
	keys   []any
	values []cgwallRule
}

// fill writes the settings and every rule of p.
func (d *Datapath) fill(p *policy.Policy) error {
	batches := map[*ebpf.Map]*batch{}
	for _, r := range p.Rules {
		m, key := d.slot(r.Dir, r.Prefix)
		b := batches[m]
		if b == nil {
			b = &batch{}
			batches[m] = b
		}
		b.keys = append(b.keys, key)
		b.values = append(b.values, cgwallRule{Id: r.ID, Action: uint8(r.Action)})
	}
	for m, b := range batches {
		if err := writeRules(m, b); err != nil {
			return fmt.Errorf("write rules to %s: %w", m, err)
		}
	}
	return d.writeSettings(p)
}

// slot says which map holds a prefix, and under which key.
func (d *Datapath) slot(dir policy.Direction, prefix netip.Prefix) (*ebpf.Map, any) {
	maps := d.ruleMaps(dir)
	a := prefix.Addr()
	switch {
	case a.Is4() && prefix.IsSingleIP():
		return maps.host4, a.As4()
	case a.Is4():
		return maps.prefix4, cgwallLpmKey4{Prefixlen: uint32(prefix.Bits()), Addr: be32(a.As4())}
	case prefix.IsSingleIP():
		return maps.host6, cgwallAddr6{Addr: a.As16()}
	}
	return maps.prefix6, cgwallLpmKey6{Prefixlen: uint32(prefix.Bits()), Addr: a.As16()}
}

// be32 reinterprets an address's bytes as the datapath's __u32 in network order.
func be32(b [4]byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// writeRules writes a batch in one system call where the map type allows it.
func writeRules(m *ebpf.Map, b *batch) error {
	keys := typedKeys(b.keys)
	_, err := m.BatchUpdate(keys, b.values, nil)
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
	case cgwallLpmKey4:
		return collect[cgwallLpmKey4](keys)
	case cgwallAddr6:
		return collect[cgwallAddr6](keys)
	}
	return collect[cgwallLpmKey6](keys)
}

func collect[T any](keys []any) []T {
	out := make([]T, len(keys))
	for i, k := range keys {
		out[i] = k.(T)
	}
	return out
}

func (d *Datapath) writeSettings(p *policy.Policy) error {
	cfg := cgwallConfig{LogLevel: uint8(p.Log)}
	for _, dir := range policy.Directions {
		cfg.DefaultAction[dir] = uint8(p.Default[dir])
	}
	if p.Audit {
		cfg.Audit = 1
	}
	if err := d.objs.Settings.Put(uint32(0), cfg); err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	return nil
}
