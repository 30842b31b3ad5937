package datapath

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/cgwall/cgwall/internal/policy"
)

// kind is one kind of rule map of a direction. Each is an outer map of two
// generations (bpf/cgwall.c: GENERATIONS) named <direction>_<kind>.
type kind uint8

const (
	kindHost4   kind = iota // /32 rules, a hash map
	kindPrefix4             // shorter IPv4 prefixes, a hash map keyed by length and address
	kindHost6               // /128 rules, a hash map
	kindPrefix6             // shorter IPv6 prefixes, an LPM trie
	kindBitmap4             // the IPv4 bitmap of /24s or /16s; holds no rules
	kindBitmap6             // the IPv6 bitmap of hashed prefixes; holds no rules
	numKinds
)

// kindTable is everything about each kind of rule map: its name and how a
// rule's prefix is encoded as its key and read back. Adding a kind is one row
// here and one GENERATIONS line in the C.
var kindTable = [numKinds]kindInfo{
	kindHost4: ruleKind("host4", func(p netip.Prefix) [4]byte { return p.Addr().As4() },
		func(k *[4]byte) netip.Prefix { return netip.PrefixFrom(netip.AddrFrom4(*k), 32) }),
	kindPrefix4: ruleKind("prefix4",
		func(p netip.Prefix) cgwallPrefixKey4 {
			return cgwallPrefixKey4{Prefixlen: uint32(p.Bits()), Addr: be32(p.Addr().As4())}
		},
		func(k *cgwallPrefixKey4) netip.Prefix {
			return netip.PrefixFrom(netip.AddrFrom4(fromBE32(k.Addr)), int(k.Prefixlen))
		}),
	kindHost6: ruleKind("host6", func(p netip.Prefix) cgwallAddr6 { return cgwallAddr6{Addr: p.Addr().As16()} },
		func(k *cgwallAddr6) netip.Prefix { return netip.PrefixFrom(netip.AddrFrom16(k.Addr), 128) }),
	kindPrefix6: ruleKind("prefix6",
		func(p netip.Prefix) cgwallPrefixKey6 {
			return cgwallPrefixKey6{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As16()}
		},
		func(k *cgwallPrefixKey6) netip.Prefix {
			return netip.PrefixFrom(netip.AddrFrom16(k.Addr), int(k.Prefixlen))
		}),
	kindBitmap4: {name: "bitmap4"},
	kindBitmap6: {name: "bitmap6"},
}

// kindInfo describes a kind of rule map. The functions are nil for the
// bitmap, which holds no rules.
type kindInfo struct {
	name     string
	key      func(netip.Prefix) any     // a rule's key, for single edits
	newKey   func() any                 // a pointer to a zero key, to read into
	prefix   func(key any) netip.Prefix // reads newKey's pointer back
	newBatch func(n int) ruleBatch      // gathers n rules for one batch write
}

// ruleKind derives a kind's functions from one encoding of its key, so that
// batch fills and single edits cannot disagree on it.
func ruleKind[K any](name string, encode func(netip.Prefix) K, decode func(*K) netip.Prefix) kindInfo {
	return kindInfo{
		name:   name,
		key:    func(p netip.Prefix) any { return encode(p) },
		newKey: func() any { return new(K) },
		prefix: func(k any) netip.Prefix { return decode(k.(*K)) },
		newBatch: func(n int) ruleBatch {
			return &batch[K]{encode: encode, keys: make([]K, 0, n), values: make([]cgwallRule, 0, n)}
		},
	}
}

func (k kind) String() string { return kindTable[k].name }

// holdsRules says whether maps of the kind hold rules.
func (k kind) holdsRules() bool { return kindTable[k].key != nil }

// kindOf returns the kind of map that holds a prefix's rule.
func kindOf(prefix netip.Prefix) kind {
	k := kindHost4
	if !prefix.IsSingleIP() {
		k++
	}
	if !prefix.Addr().Is4() {
		k += 2
	}
	return k
}

// mapName names the outer map of a direction and kind, as the C does.
func mapName(dir policy.Direction, k kind) string { return dir.String() + "_" + k.String() }

// ruleMap is the outer map of one direction and kind.
type ruleMap struct {
	dir   policy.Direction
	kind  kind
	outer *ebpf.Map
}

func (m ruleMap) name() string { return mapName(m.dir, m.kind) }

// ruleMaps are a datapath's outer rule maps by direction and kind, found once
// after load or open.
type ruleMaps [2][numKinds]ruleMap

func newRuleMaps(loaded map[string]*ebpf.Map) (ruleMaps, error) {
	var t ruleMaps
	for _, dir := range policy.Directions {
		for k := range numKinds {
			m := loaded[mapName(dir, k)]
			if m == nil {
				return t, fmt.Errorf("no map %s in the BPF object", mapName(dir, k))
			}
			t[dir][k] = ruleMap{dir, k, m}
		}
	}
	return t, nil
}

// all lists every rule map, bitmaps included.
func (t *ruleMaps) all() []ruleMap {
	var out []ruleMap
	for _, dir := range policy.Directions {
		out = append(out, t[dir][:]...)
	}
	return out
}

// withRules lists the maps that hold rules.
func (t *ruleMaps) withRules() []ruleMap {
	var out []ruleMap
	for _, m := range t.all() {
		if m.kind.holdsRules() {
			out = append(out, m)
		}
	}
	return out
}

// of returns the map that holds dir's rule for prefix.
func (t *ruleMaps) of(dir policy.Direction, prefix netip.Prefix) ruleMap {
	return t[dir][kindOf(prefix)]
}

// ruleCounts counts a policy's rules by direction and kind.
type ruleCounts [2][numKinds]int

func countRules(p *policy.Policy) ruleCounts {
	var n ruleCounts
	for _, r := range p.Rules {
		n[r.Dir][kindOf(r.Prefix)]++
	}
	return n
}

// be32 reinterprets an address's bytes as the datapath's __u32 in network order.
func be32(b [4]byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func fromBE32(v uint32) [4]byte {
	return [4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
}

// ruleBatch gathers the rules bound for one map.
type ruleBatch interface {
	add(prefix netip.Prefix, v cgwallRule)
	writes(m *ebpf.Map) []func() error
}

// batch gathers the keys and values bound for one map.
type batch[K any] struct {
	encode func(netip.Prefix) K
	keys   []K
	values []cgwallRule
}

func (b *batch[K]) add(prefix netip.Prefix, v cgwallRule) {
	b.keys = append(b.keys, b.encode(prefix))
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

// ruleKey encodes a prefix as the key of its map.
func ruleKey(prefix netip.Prefix) any { return kindTable[kindOf(prefix)].key(prefix) }
