package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/cgwall/cgwall/internal/policy"
)

// Name rules (bpf/cgwall.c: decide_name). The addresses that DNS answers give
// for a name a rule covers go into the learned maps, one entry an address,
// which carries its pattern's address-only rule and the flags and port bits
// of its port rules. Those port rules sit in the port maps once per pattern,
// under the pattern's site number (family FAMILY_NAME) instead of a prefix,
// so that learning an address is one map update however many port rules its
// pattern has.

// familyName is the C's FAMILY_NAME: the family of a port-map key that
// belongs to a name pattern.
const familyName = 0

// DefaultLearnedCapacity is how many learned addresses of each family the
// datapath holds unless WithDNS is given another number.
const DefaultLearnedCapacity = 1 << 17

// dnsOptions are WithDNS's.
type dnsOptions struct {
	v4, v6   netip.AddrPort
	capacity uint32
	netns    uint64 // the resolver's network namespace; 0: the loader's
}

// WithResolverNetns says that the resolver of WithDNS listens in the network
// namespace of this cookie (SO_NETNS_COOKIE), not in the loader's: 'cgwall
// attach' loads for the agent's resolver, wherever attach runs. It goes after
// WithDNS.
func WithResolverNetns(cookie uint64) Option {
	return func(o *options) {
		if o.dns != nil {
			o.dns.netns = cookie
		}
	}
}

// NetnsCookie returns the cookie of this process's network namespace.
func NetnsCookie() (uint64, error) { return netnsCookie() }

// WithDNS loads the programs with the code of name rules: the socket hooks
// send DNS queries (UDP and TCP to port 53) to the resolver at v4 and v6
// instead of the server asked, answers seem to come from that server, and
// addresses learned from answers (Learn) decide what address rules leave to
// the default. The resolver must listen in the network namespace of the
// process that loads; capacity bounds the learned addresses of each family
// (0: DefaultLearnedCapacity).
func WithDNS(v4, v6 netip.AddrPort, capacity int) Option {
	return func(o *options) {
		o.dns = &dnsOptions{v4: v4, v6: v6, capacity: uint32(capacity)}
		if capacity <= 0 {
			o.dns.capacity = DefaultLearnedCapacity
		}
	}
}

// setDNS sets the constants and sizes of name rules in spec, before load.
func setDNS(spec *ebpf.CollectionSpec, o *dnsOptions) error {
	if !o.v4.Addr().Is4() || !o.v6.Addr().Is6() || o.v6.Addr().Is4In6() {
		return fmt.Errorf("resolver addresses %s and %s: want an IPv4 and an IPv6 address", o.v4, o.v6)
	}
	cookie := o.netns
	if cookie == 0 {
		var err error
		if cookie, err = netnsCookie(); err != nil {
			return err
		}
	}
	a6 := o.v6.Addr().As16()
	vars := map[string]any{
		cgwallVarNameRules:     uint8(1),
		cgwallVarResolver4:     be32(o.v4.Addr().As4()),
		cgwallVarResolver6:     [4]uint32{be32([4]byte(a6[0:4])), be32([4]byte(a6[4:8])), be32([4]byte(a6[8:12])), be32([4]byte(a6[12:16]))},
		cgwallVarResolver4Port: uint32(htons(o.v4.Port())),
		cgwallVarResolver6Port: uint32(htons(o.v6.Port())),
		cgwallVarResolverNetns: cookie,
	}
	for name, v := range vars {
		if err := spec.Variables[name].Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	for _, name := range []string{"learned4", "learned6"} {
		spec.Maps[name].MaxEntries = o.capacity
	}
	spec.Maps[cgwallMapOrigins].MaxEntries = originsSize
	return nil
}

// originsSize is the entries of the origins map where the programs have the
// name code: queries in flight to the resolver, by their sources. It is
// 1.75 MiB of kernel memory, allocated whole (LRU), which a policy without
// name rules does not pay.
const originsSize = 16384

// htons is a port in network order, as the C keeps it in a __u16.
func htons(p uint16) uint16 { return p<<8 | p>>8 }

// netnsCookie returns the cookie of this process's network namespace, which
// bpf_get_netns_cookie returns for sockets in it.
func netnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("read the network namespace's cookie: %w", err)
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("read the network namespace's cookie (SO_NETNS_COOKIE, Linux 5.14): %w", err)
	}
	return c, nil
}

// nameSites numbers p's name patterns, from 1, in order: a pattern's port
// rules sit in the port maps under its number.
func nameSites(p *policy.Policy) map[policy.Name]uint32 {
	var names []policy.Name
	for _, r := range p.Names {
		names = append(names, r.Name)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	sites := make(map[policy.Name]uint32, len(names))
	for i, n := range names {
		sites[n] = uint32(i + 1)
	}
	return sites
}

// nameSite is the port maps' site of a name pattern's number.
func nameSite(n uint32) keySite {
	var s keySite
	s.family = familyName
	s.addr[0], s.addr[1], s.addr[2], s.addr[3] = byte(n), byte(n>>8), byte(n>>16), byte(n>>24)
	return s
}

// learnedValues returns the learned maps' value of each of p's patterns:
// its address-only rule, if any, and what its port rules are.
func learnedValues(p *policy.Policy) map[policy.Name]cgwallLearned {
	sites := nameSites(p)
	out := make(map[policy.Name]cgwallLearned, len(sites))
	for _, r := range p.Names {
		v := out[r.Name]
		v.Site = sites[r.Name]
		if r.Ports.Any() {
			v.R.Id, v.R.Action = r.ID, uint8(r.Action)
		} else {
			b := siteBits{flags: v.R.Flags, ports: v.R.PortBits}.with(r.Ports)
			v.R.Flags, v.R.PortBits = b.flags, b.ports
		}
		out[r.Name] = v
	}
	return out
}

// errNoNames is the error of Learn and Forget on a datapath loaded without
// WithDNS.
var errNoNames = errors.New("this filter was loaded without name rules")

// Learn puts addrs in force as addresses of pattern, a name pattern of the
// policy (policy.Name's canonical form): its rules decide for them what the
// address rules leave to the default. An address learned before under
// another pattern follows this one from now on. Learn returns once every
// address is in force. Counters of an address-only rule that an address
// had under its pattern start again.
func (d *Datapath) Learn(addrs []netip.Addr, pattern string) error {
	d.namesMu.Lock()
	v, ok := d.learned[policy.Name(pattern)]
	noNames := d.learned == nil
	d.namesMu.Unlock()
	if noNames {
		return errNoNames
	}
	if !ok {
		return fmt.Errorf("learn addresses of %s: the policy has no rule for that name", pattern)
	}
	for _, a := range addrs {
		if err := d.learnOne(a.Unmap(), v); err != nil {
			return fmt.Errorf("learn %s for %s: %w", a, pattern, err)
		}
	}
	return nil
}

// learnedKey returns the learned map and key of an address.
func (d *Datapath) learnedKey(a netip.Addr) (*ebpf.Map, any) {
	if a.Is4() {
		return d.objs.Learned4, a.As4()
	}
	return d.objs.Learned6, a.As16()
}

// learnOne puts one address in force with v. An address that has v's
// pattern already keeps its entry, and its counters.
func (d *Datapath) learnOne(a netip.Addr, v cgwallLearned) error {
	m, key := d.learnedKey(a)
	err := m.Update(key, v, ebpf.UpdateNoExist)
	if !errors.Is(err, ebpf.ErrKeyExist) {
		return err
	}
	var had cgwallLearned
	if err := m.Lookup(key, &had); err == nil && had.Site == v.Site && had.R.Id == v.R.Id {
		return nil
	}
	if err := m.Update(key, v, ebpf.UpdateAny); err != nil {
		return err
	}
	d.keepCounts(had.R)
	return nil
}

// keepCounts keeps what a learned entry gone had counted.
func (d *Datapath) keepCounts(r cgwallRule) {
	d.namesMu.Lock()
	defer d.namesMu.Unlock()
	d.forgotten.add(r)
}

// Forget takes addrs out of force as learned addresses; the address rules
// and the default decide for them again, except for connections opened
// while they were in force. The packets an address counted against its
// pattern's address-only rule stay in that rule's counters.
func (d *Datapath) Forget(addrs []netip.Addr) error {
	if d.learned == nil {
		return errNoNames
	}
	for _, a := range addrs {
		a = a.Unmap()
		m, key := d.learnedKey(a)
		var v cgwallLearned
		if err := m.LookupAndDelete(key, &v); errors.Is(err, ebpf.ErrKeyNotExist) {
			continue
		} else if err != nil {
			return fmt.Errorf("forget %s: %w", a, err)
		}
		d.keepCounts(v.R)
	}
	return nil
}

// forgotten keeps the counts of learned addresses gone, by rule ID.
type forgotten map[uint32]Counter

func (f forgotten) add(r cgwallRule) {
	if r.Id != 0 && r.Packets != 0 {
		c := f[r.Id]
		c.Packets += r.Packets
		c.Bytes += r.Bytes
		f[r.Id] = c
	}
}

// learnedCounters adds the counts of the address-only name rules, live and
// gone, to counters.
func (d *Datapath) learnedCounters(counters map[uint32]Counter) error {
	if d.learned == nil {
		return nil
	}
	d.namesMu.Lock()
	for id, c := range d.forgotten {
		counters[id] = counters[id].plus(c)
	}
	d.namesMu.Unlock()
	for _, m := range []struct {
		m   *ebpf.Map
		key any
	}{{d.objs.Learned4, new([4]byte)}, {d.objs.Learned6, new([16]byte)}} {
		var v cgwallLearned
		it := m.m.Iterate()
		for it.Next(m.key, &v) {
			if v.R.Id != 0 {
				counters[v.R.Id] = counters[v.R.Id].plus(Counter{v.R.Packets, v.R.Bytes})
			}
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("read learned addresses: %w", err)
		}
	}
	return nil
}

// Origin returns the DNS server that a query from client (the source of a
// query that reached the resolver) was sent to before the socket hooks sent
// it to the resolver.
func (d *Datapath) Origin(tcp bool, client netip.AddrPort) (netip.AddrPort, bool) {
	k := cgwallOriginKey{Port: client.Port(), Proto: unix.IPPROTO_UDP}
	if tcp {
		k.Proto = unix.IPPROTO_TCP
	}
	k.Family, k.Addr = flowAddr(client.Addr())
	var o cgwallOrigin
	if err := d.objs.Origins.Lookup(k, &o); err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(addrOf(o.Family, o.Addr), o.Port), true
}
