package datapath

import (
	"cmp"
	"fmt"
	"math/bits"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/cgwall/cgwall/internal/policy"
)

// Port rules live apart from the address maps (bpf/cgwall.c: site): a prefix
// that has any keeps an entry in its address map, the address-only rule or a
// placeholder of ID 0, whose flags say which port maps to look in. The
// prefix's direct rule (pickDirect) sits in that entry itself (struct
// entry): a port hit then costs no lookup and no line past the entry's.
// Protocol rules and further single-port rules sit in the ports hash map,
// keyed by the prefix, the protocol and the port (0 for a protocol rule);
// further port ranges sit in the ranges LPM trie as aligned blocks of ports.
// Every edit of a port rule builds the other generation (Set), so the port
// fields of an entry are only ever written with the whole policy.

// flowAddr is an address as the C's flow and keys keep it: its family, and
// IPv4 in the first four bytes (an IPv4-mapped address is IPv4).
func flowAddr(a netip.Addr) (family uint8, addr [16]byte) {
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		copy(addr[:], b[:])
		return 4, addr
	}
	return 6, a.As16()
}

// addrOf reads flowAddr's encoding back.
func addrOf(family uint8, addr [16]byte) netip.Addr {
	if family == 4 {
		return netip.AddrFrom4([4]byte(addr[:4]))
	}
	return netip.AddrFrom16(addr).Unmap()
}

// portAddr is a prefix's address as the port maps key it.
func portAddr(prefix netip.Prefix) (family uint8, addr [16]byte) { return flowAddr(prefix.Addr()) }

// portPrefix reads portAddr's encoding back.
func portPrefix(family uint8, addr [16]byte, bits uint8) netip.Prefix {
	if family == familyName {
		return netip.Prefix{} // a name pattern's port rule, under its site
	}
	return netip.PrefixFrom(addrOf(family, addr), int(bits))
}

// keySite is what port rules hang from in the port maps' keys: a prefix
// (prefixSite), or a name pattern's number (nameSite).
type keySite struct {
	family uint8
	addr   [16]byte
	bits   uint8
}

func prefixSite(prefix netip.Prefix) keySite {
	family, addr := portAddr(prefix)
	return keySite{family, addr, uint8(prefix.Bits())}
}

func portKeyOf(s keySite, proto uint8, port uint16) cgwallPortKey {
	return cgwallPortKey{Addr: s.addr, Bits: s.bits, Family: s.family, Proto: proto, Port: port}
}

// rangeFixedBits is the C's RANGE_FIXED_BITS: the bits of a range key before
// its port.
const rangeFixedBits = 8 * (4 + 16)

// rangeKeyOf is the key of a block of 2^(16-blockBits) ports from lo.
func rangeKeyOf(s keySite, proto uint8, lo uint16, blockBits int) cgwallRangeKey {
	return cgwallRangeKey{
		Prefixlen: uint32(rangeFixedBits + blockBits),
		Bits:      s.bits,
		Family:    s.family,
		Proto:     proto,
		Addr:      s.addr,
		Port:      lo<<8 | lo>>8, // network order
	}
}

// siteFlags says which port maps a prefix's port rules are in.
func siteFlags(ports policy.Ports) uint8 {
	switch {
	case !ports.HasRange():
		return uint8(cgwallSiteFlagSITE_F_PROTO)
	case ports.Lo == ports.Hi:
		return uint8(cgwallSiteFlagSITE_F_PORT)
	}
	return uint8(cgwallSiteFlagSITE_F_RANGE)
}

// siteBits are what a prefix's entry in its address map says of its port
// rules: the maps they are in, a bit for each single port in the ports map
// (portBit), and its direct rule with its counters.
type siteBits struct {
	flags   uint8
	ports   uint8
	direct  policy.Rule // ID 0 for none
	counter Counter     // the direct rule's
	shorter uint8       // 1 + the length of the prefix a packet goes to next (outerOf)
}

// put sets the port fields of a prefix's address entry.
func (b siteBits) put(v *cgwallEntry) {
	v.R.Flags, v.R.PortBits = b.flags, b.ports
	v.Shorter = b.shorter
	if b.direct.ID == 0 {
		return
	}
	v.DirectId, v.DirectAction = b.direct.ID, uint8(b.direct.Action)
	v.DirectProto, v.DirectPort, v.DirectEnd = b.direct.Ports.Proto, b.direct.Ports.Lo, b.direct.Ports.Hi
	v.DirectPackets, v.DirectBytes = b.counter.Packets, b.counter.Bytes
}

// directRule reads an address entry's direct rule back.
func directRule(prefix netip.Prefix, v *cgwallEntry) policy.Rule {
	return policy.Rule{ID: v.DirectId, Prefix: prefix, Action: policy.Action(v.DirectAction),
		Ports: policy.Ports{Proto: v.DirectProto, Lo: v.DirectPort, Hi: v.DirectEnd}}
}

// outerOf tells each prefix with port rules where a packet that none of its
// rules matches goes next: the longest shorter prefix of its direction that
// has rules of any kind and contains it, or, where there is none
// (SITE_F_OUTERMOST), the default. Looked up by length, that is one lookup
// where a walk over the lengths would be one for each: "through" packets at
// 100k rules (docs/performance.md, "The next prefix named"). Hosts cannot
// contain another prefix and are left out.
func outerOf(rules []policy.Rule, sites map[site]siteBits) {
	var lengths [2][2][129]bool // by direction, IPv4 or not, prefix length
	outer := map[site]struct{}{}
	for _, r := range rules {
		if !r.Prefix.IsSingleIP() {
			lengths[r.Dir][b2i(r.Prefix.Addr().Is4())][r.Prefix.Bits()] = true
			outer[site{r.Dir, r.Prefix}] = struct{}{}
		}
	}
	for s, f := range sites {
		f.flags |= uint8(cgwallSiteFlagSITE_F_OUTERMOST)
		has := &lengths[s.dir][b2i(s.prefix.Addr().Is4())]
		for bits := s.prefix.Bits() - 1; bits >= 0; bits-- {
			if !has[bits] {
				continue
			}
			if _, ok := outer[site{s.dir, netip.PrefixFrom(s.prefix.Addr(), bits).Masked()}]; ok {
				f.flags &^= uint8(cgwallSiteFlagSITE_F_OUTERMOST)
				f.shorter = uint8(bits + 1)
				break
			}
		}
		sites[s] = f
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// withDirect makes a single-port or range rule, with its counters, the
// prefix's direct one.
func (b siteBits) withDirect(r policy.Rule, c Counter) siteBits {
	b.flags |= uint8(cgwallSiteFlagSITE_F_DIRECT)
	b.direct, b.counter = r, c
	return b
}

// pickDirect picks each prefix's direct rule, by its index in rules: its
// first single-port rule, or, where it has none, its first range with no
// other rule of its protocol inside it. Either is the narrowest rule for
// every port it holds (ranges nest or are apart: policy.Check), so the
// program takes it without looking further. A third of the port hits of
// the harness's ports set at 100k rules are ranges' (it has tcp/8000-8999),
// and each was a trie walk before ranges could be direct
// (docs/performance.md, "Direct ranges").
func pickDirect(rules []policy.Rule) map[site]int {
	pick := map[site]int{}
	var crowded map[site][]int // prefixes of more than one port rule: all of them
	for i, r := range rules {
		if !r.Ports.HasRange() {
			continue
		}
		s := site{r.Dir, r.Prefix}
		first, ok := pick[s]
		if !ok {
			pick[s] = i
			continue
		}
		if crowded == nil {
			crowded = map[site][]int{}
		}
		if crowded[s] == nil {
			crowded[s] = []int{first}
		}
		crowded[s] = append(crowded[s], i)
	}
	for s, idx := range crowded {
		if i, ok := narrowest(rules, idx); ok {
			pick[s] = i
		} else {
			delete(pick, s)
		}
	}
	return pick
}

// narrowest picks the direct rule among one prefix's port rules (indexes into
// rules, in order), as pickDirect says; false if none can be.
func narrowest(rules []policy.Rule, idx []int) (int, bool) {
	for _, i := range idx {
		if rules[i].Ports.Width() == 1 {
			return i, true
		}
	}
	for _, i := range idx {
		r := rules[i].Ports
		inside := slices.ContainsFunc(idx, func(j int) bool {
			o := rules[j].Ports
			return j != i && o.HasRange() && o.Proto == r.Proto && r.Lo <= o.Lo && o.Hi <= r.Hi
		})
		if !inside {
			return i, true
		}
	}
	return 0, false
}

func (b siteBits) with(ports policy.Ports) siteBits {
	b.flags |= siteFlags(ports)
	if ports.HasRange() && ports.Lo == ports.Hi {
		b.ports |= portBit(ports.Proto, ports.Lo)
	}
	return b
}

// portBit is the C's port_bit: a protocol and port hashed to one of eight
// bits, so that a packet to another port than a prefix's single-port rules
// mostly skips the ports map.
func portBit(proto uint8, port uint16) uint8 {
	return 1 << ((port ^ port>>3 ^ port>>8 ^ uint16(proto)) & 7)
}

// block is an aligned block of ports: 2^(16-bits) of them from lo.
type block struct {
	lo   uint16
	bits int
}

// blocks splits lo..hi into the fewest aligned blocks, at most 30.
func blocks(lo, hi uint16) []block {
	var out []block
	for l, h := uint32(lo), uint32(hi); l <= h; {
		size := uint32(1) << min(bits.TrailingZeros32(l|1<<16), 16)
		for l+size-1 > h {
			size >>= 1
		}
		out = append(out, block{uint16(l), 16 - bits.TrailingZeros32(size)})
		l += size
	}
	return out
}

// rangeBlock is a block of ports and the range rule that owns it.
type rangeBlock struct {
	block
	rule int // index into the group's rules
}

// segment gives every port of a group of range rules of one prefix and
// protocol, which nest but never overlap partly (policy.Check), to the
// narrowest range holding it, as aligned blocks: the longest block matching a
// port is then its narrowest range's, and a trie lookup finds it.
func segment(ranges []policy.Ports) []rangeBlock {
	// Widest first, so that each narrower range takes its ports from the
	// wider ones it nests in.
	order := make([]int, len(ranges))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(ranges[b].Width(), ranges[a].Width()) })
	type piece struct {
		lo, hi uint16
		rule   int
	}
	var pieces []piece
	for _, i := range order {
		r := ranges[i]
		var next []piece
		for _, p := range pieces {
			// Cut r out of p: what is left lies before and after it.
			if p.hi < r.Lo || r.Hi < p.lo {
				next = append(next, p)
				continue
			}
			if p.lo < r.Lo {
				next = append(next, piece{p.lo, r.Lo - 1, p.rule})
			}
			if r.Hi < p.hi {
				next = append(next, piece{r.Hi + 1, p.hi, p.rule})
			}
		}
		pieces = append(next, piece{r.Lo, r.Hi, i})
	}
	var out []rangeBlock
	for _, p := range pieces {
		for _, b := range blocks(p.lo, p.hi) {
			out = append(out, rangeBlock{b, p.rule})
		}
	}
	return out
}

// hasPortRules says whether p has a rule, of an address or a name, that
// names a protocol or ports.
func hasPortRules(p *policy.Policy) bool {
	for _, rules := range [][]policy.Rule{p.Rules, p.Names} {
		for _, r := range rules {
			if !r.Ports.Any() {
				return true
			}
		}
	}
	return false
}

// portCode says whether the datapath's programs look up port rules (see
// port_rules in the C): loaded for a policy with port rules, or replaced by
// withPortCode since.
func (d *Datapath) portCode() bool { return d.state.PortCode != 0 }

// withPortCode makes sure the programs look up port rules before a policy
// with some goes in: programs loaded without the lookups are loaded again
// with them, and each pinned link is moved to its new program in one atomic
// update (BPF_LINK_UPDATE), so that no packet goes unjudged. Only then is the
// state marked: killed before, the next edit does it again.
func (d *Datapath) withPortCode() error {
	if d.portCode() {
		return nil
	}
	if d.fixed {
		return errFixed
	}
	pinned, err := d.pinnedProgramLinks()
	if err != nil {
		return err
	}
	defer func() {
		for _, l := range pinned {
			l.Close()
		}
	}()
	names := map[string]bool{}
	for name := range d.progs {
		names[name] = true
	}
	for name := range pinned {
		names[name] = true
	}
	old := d.progs
	d.state.PortCode = 1 // for programMaps
	if d.rodata != nil {
		d.rodata.Close()
		d.rodata = nil
	}
	d.progs = map[string]*ebpf.Program{}
	if err := d.loadPrograms(names); err != nil {
		d.state.PortCode = 0
		return err
	}
	for _, p := range old {
		p.Close()
	}
	for name, l := range pinned {
		if err := l.Update(d.progs[name]); err != nil {
			d.state.PortCode = 0
			return fmt.Errorf("move the %s link to programs with port lookups: %w", name, err)
		}
	}
	return d.writeState()
}

// pinnedProgramLinks opens the links pinned where Open found the datapath,
// by the name of their program.
func (d *Datapath) pinnedProgramLinks() (map[string]link.Link, error) {
	out := map[string]link.Link{}
	if d.pinDir == "" {
		return out, nil
	}
	entries, err := os.ReadDir(d.pinDir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		_, p, ok := hookOfPin(e.Name())
		if !ok {
			continue
		}
		l, err := link.LoadPinnedLink(filepath.Join(d.pinDir, e.Name()), nil)
		if err != nil {
			for _, l := range out {
				l.Close()
			}
			return nil, fmt.Errorf("open pinned link %s: %w", e.Name(), err)
		}
		out[p.name] = l
	}
	return out, nil
}

// loadPrograms loads the named programs against the datapath's maps.
func (d *Datapath) loadPrograms(names map[string]bool) error {
	loaded, err := d.programMaps()
	if err != nil {
		return err
	}
	for name := range names {
		spec := d.spec.Programs[name]
		if spec == nil {
			return fmt.Errorf("load BPF programs: no program %s in the BPF object", name)
		}
		prog, err := loadProgram(spec, loaded)
		if err != nil {
			return loadError(err)
		}
		d.progs[name] = prog
	}
	return nil
}
