package datapath

import (
	"encoding/binary"
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
	kindPorts               // protocol and single-port rules of every prefix, a hash map
	kindRanges              // port-range rules, an LPM trie of blocks of ports
	numKinds
)

// kindTable is everything about each kind of rule map: its name and how a
// rule is encoded as its key and value and read back. Adding a kind is one
// row here and one GENERATIONS line in the C.
var kindTable = [numKinds]kindInfo{
	kindHost4: addressKind("host4", func(p netip.Prefix) [4]byte { return p.Addr().As4() },
		func(k *[4]byte) netip.Prefix { return netip.PrefixFrom(netip.AddrFrom4(*k), 32) }),
	kindPrefix4: addressKind("prefix4",
		func(p netip.Prefix) cgwallPrefixKey4 {
			return cgwallPrefixKey4{Prefixlen: uint32(p.Bits()), Addr: be32(p.Addr().As4())}
		},
		func(k *cgwallPrefixKey4) netip.Prefix {
			return netip.PrefixFrom(netip.AddrFrom4(fromBE32(k.Addr)), int(k.Prefixlen))
		}),
	kindHost6: addressKind("host6", func(p netip.Prefix) cgwallAddr6 { return cgwallAddr6{Addr: p.Addr().As16()} },
		func(k *cgwallAddr6) netip.Prefix { return netip.PrefixFrom(netip.AddrFrom16(k.Addr), 128) }),
	kindPrefix6: addressKind("prefix6",
		func(p netip.Prefix) cgwallPrefixKey6 {
			return cgwallPrefixKey6{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As16()}
		},
		func(k *cgwallPrefixKey6) netip.Prefix {
			return netip.PrefixFrom(netip.AddrFrom16(k.Addr), int(k.Prefixlen))
		}),
	kindBitmap4: {name: "bitmap4"},
	kindBitmap6: {name: "bitmap6"},
	kindPorts: ruleKind("ports", func(k *cgwallPortKey, v *cgwallRule) (policy.Rule, Counter) {
		ports := policy.Ports{Proto: k.Proto, Lo: k.Port, Hi: k.Port}
		if k.Shadowed != 0 {
			ports.Hi = k.Hi
		}
		return policy.Rule{ID: v.Id, Prefix: portPrefix(k.Family, k.Addr, k.Bits), Action: policy.Action(v.Action),
			Ports: ports}, counterOf(v)
	}),
	kindRanges: ruleKind("ranges", func(k *cgwallRangeKey, v *cgwallRangeRule) (policy.Rule, Counter) {
		return policy.Rule{ID: v.R.Id, Prefix: portPrefix(k.Family, k.Addr, k.Bits), Action: policy.Action(v.R.Action),
			Ports: policy.Ports{Proto: k.Proto, Lo: v.Lo, Hi: v.Hi}}, counterOf(&v.R)
	}),
}

// kindInfo describes a kind of rule map. The functions are nil for the
// bitmaps, which hold no rules; key and newBatch are nil for the port maps,
// whose entries ports.go makes.
type kindInfo struct {
	name string
	// each reads every entry of a map of the kind: its rules (an address
	// entry's address rule, of ID 0 for a prefix that only has port rules,
	// and its direct rule, if it has one) and their counters.
	each func(m *ebpf.Map, fn func(policy.Rule, Counter)) error
	key  func(netip.Prefix) any // an address rule's key, for single edits
	// newBatch gathers n address rules for one batch write, as struct
	// rule alone where narrow (a fixed policy without port code: Load).
	newBatch func(n int, narrow bool) addressBatch
}

// addressKind derives an address kind's functions from one encoding of its
// key, so that batch fills, single edits and reading back cannot disagree.
func addressKind[K any](name string, encode func(netip.Prefix) K, decode func(*K) netip.Prefix) kindInfo {
	return kindInfo{
		name: name,
		each: func(m *ebpf.Map, fn func(policy.Rule, Counter)) error {
			address := func(k *K, v *cgwallRule) {
				fn(policy.Rule{ID: v.Id, Prefix: decode(k), Action: policy.Action(v.Action)}, counterOf(v))
			}
			if m.ValueSize() == uint32(binary.Size(cgwallRule{})) {
				return iterate(m, address)
			}
			return iterate(m, func(k *K, v *cgwallEntry) {
				address(k, &v.R)
				if v.DirectId != 0 {
					fn(directRule(decode(k), v), Counter{Packets: v.DirectPackets, Bytes: v.DirectBytes})
				}
			})
		},
		key: func(p netip.Prefix) any { return encode(p) },
		newBatch: func(n int, narrow bool) addressBatch {
			if narrow {
				return newEncoded(n, encode, func(v *cgwallEntry) cgwallRule { return v.R })
			}
			return newEncoded(n, encode, func(v *cgwallEntry) cgwallEntry { return *v })
		},
	}
}

// ruleKind makes a kind whose entries decode reads back, one rule each.
func ruleKind[K, V any](name string, decode func(*K, *V) (policy.Rule, Counter)) kindInfo {
	return kindInfo{name: name, each: func(m *ebpf.Map, fn func(policy.Rule, Counter)) error {
		return iterate(m, func(k *K, v *V) { fn(decode(k, v)) })
	}}
}

// iterate calls fn for every entry of m.
func iterate[K, V any](m *ebpf.Map, fn func(*K, *V)) error {
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		fn(&k, &v)
	}
	return it.Err()
}

func counterOf(v *cgwallRule) Counter { return Counter{Packets: v.Packets, Bytes: v.Bytes} }

func (k kind) String() string { return kindTable[k].name }

// holdsAddresses says whether maps of the kind are address maps, whose
// values are struct entry.
func (k kind) holdsAddresses() bool { return k <= kindPrefix6 }

// holdsRules says whether maps of the kind hold rules.
func (k kind) holdsRules() bool { return kindTable[k].each != nil }

// kindOf returns the kind of address map that holds a prefix's rule.
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

// ruleCounts counts a policy's map entries by direction and kind.
type ruleCounts [2][numKinds]int

// be32 reinterprets an address's bytes as the datapath's __u32 in network order.
func be32(b [4]byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func fromBE32(v uint32) [4]byte {
	return [4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
}

// ruleBatch gathers the entries bound for one map.
type ruleBatch interface {
	len() int
	writes(m *ebpf.Map) []func() error
}

// addressBatch gathers the rules of an address map, by prefix.
type addressBatch interface {
	ruleBatch
	add(prefix netip.Prefix, v cgwallEntry)
}

// batch gathers the keys and values bound for one map.
type batch[K, V any] struct {
	keys   []K
	values []V
}

func (b *batch[K, V]) put(k K, v V) {
	b.keys = append(b.keys, k)
	b.values = append(b.values, v)
}

func (b *batch[K, V]) len() int { return len(b.keys) }

// encoded is a batch of an address kind, which encodes its keys from
// prefixes and its values from entries: whole, or the address rule alone.
type encoded[K, V any] struct {
	batch[K, V]
	encode func(netip.Prefix) K
	value  func(*cgwallEntry) V
}

func newEncoded[K, V any](n int, encode func(netip.Prefix) K, value func(*cgwallEntry) V) *encoded[K, V] {
	return &encoded[K, V]{batch: batch[K, V]{keys: make([]K, 0, n), values: make([]V, 0, n)}, encode: encode, value: value}
}

func (b *encoded[K, V]) add(prefix netip.Prefix, v cgwallEntry) { b.put(b.encode(prefix), b.value(&v)) }

// chunk is the most rules one system call writes: small enough to spread a
// large map over the CPUs, large enough that the calls cost nothing.
const chunk = 1 << 16

// writes returns the writes that put the batch into m, a chunk each.
func (b *batch[K, V]) writes(m *ebpf.Map) []func() error {
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
func writeRules[K, V any](m *ebpf.Map, keys []K, values []V) error {
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
