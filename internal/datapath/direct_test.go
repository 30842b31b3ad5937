package datapath

import (
	"encoding/binary"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"testing"

	"github.com/cgwall/cgwall/internal/policy"
)

// directRules are policies whose prefixes have one single-port rule (in
// their address entry), two (the second in the ports map), or one beside
// protocol and range rules, in both families; and prefixes with ranges
// only: one (in the entry), and nested ones, whose innermost is the direct
// one.
var directRules = []string{
	"block", "192.0.2.1", "allow", "192.0.2.1:tcp/443", "allow", "192.0.2.1:tcp/80",
	"block", "198.51.100.0/24:tcp/22", "allow", "198.51.100.0/24",
	"allow", "203.0.113.0/24:udp/53", "block", "203.0.113.0/24:udp", "allow", "203.0.113.0/24:tcp/8000-8999",
	"block", "192.0.2.64/26:tcp/8000-8999",
	"block", "192.0.2.128/25:tcp/1-1024", "allow", "192.0.2.128/25:tcp/80-443", "allow", "192.0.2.128/25:udp/1-1024",
	"block", "192.0.2.128/25:tcp/2000-3000",
	"block", "[2001:db8::1]:tcp/443", "allow", "[2001:db8::1]:tcp/444",
	"block", "[2001:db8:1::/48]:udp/53", "allow", "[2001:db8:1::/48]:tcp",
}

var directProbes = []probe{
	{remote: netip.MustParseAddr("192.0.2.1"), proto: policy.ProtoTCP, dport: 443},
	{remote: netip.MustParseAddr("192.0.2.1"), proto: policy.ProtoTCP, dport: 80},
	{remote: netip.MustParseAddr("192.0.2.1"), proto: policy.ProtoUDP, dport: 443},
	{remote: netip.MustParseAddr("192.0.2.1"), proto: policy.ProtoTCP, dport: 22},
	{remote: netip.MustParseAddr("198.51.100.7"), proto: policy.ProtoTCP, dport: 22},
	{remote: netip.MustParseAddr("198.51.100.7"), proto: policy.ProtoUDP, dport: 22},
	{remote: netip.MustParseAddr("203.0.113.9"), proto: policy.ProtoUDP, dport: 53},
	{remote: netip.MustParseAddr("203.0.113.9"), proto: policy.ProtoUDP, dport: 54},
	{remote: netip.MustParseAddr("203.0.113.9"), proto: policy.ProtoTCP, dport: 8053},
	{remote: netip.MustParseAddr("203.0.113.9"), proto: policy.ProtoTCP, dport: 53},
	{remote: netip.MustParseAddr("2001:db8::1"), proto: policy.ProtoTCP, dport: 443},
	{remote: netip.MustParseAddr("2001:db8::1"), proto: policy.ProtoTCP, dport: 444},
	{remote: netip.MustParseAddr("2001:db8::1"), proto: policy.ProtoTCP, dport: 445},
	{remote: netip.MustParseAddr("2001:db8:1::5"), proto: policy.ProtoUDP, dport: 53},
	{remote: netip.MustParseAddr("2001:db8:1::5"), proto: policy.ProtoTCP, dport: 53},
	{remote: netip.MustParseAddr("192.0.2.70"), proto: policy.ProtoTCP, dport: 7999},
	{remote: netip.MustParseAddr("192.0.2.70"), proto: policy.ProtoTCP, dport: 8000},
	{remote: netip.MustParseAddr("192.0.2.70"), proto: policy.ProtoTCP, dport: 8500},
	{remote: netip.MustParseAddr("192.0.2.70"), proto: policy.ProtoTCP, dport: 8999},
	{remote: netip.MustParseAddr("192.0.2.70"), proto: policy.ProtoTCP, dport: 9000},
	{remote: netip.MustParseAddr("192.0.2.70"), proto: policy.ProtoUDP, dport: 8500},
	{remote: netip.MustParseAddr("192.0.2.200"), proto: policy.ProtoTCP, dport: 22},
	{remote: netip.MustParseAddr("192.0.2.200"), proto: policy.ProtoTCP, dport: 80},
	{remote: netip.MustParseAddr("192.0.2.200"), proto: policy.ProtoTCP, dport: 443},
	{remote: netip.MustParseAddr("192.0.2.200"), proto: policy.ProtoTCP, dport: 444},
	{remote: netip.MustParseAddr("192.0.2.200"), proto: policy.ProtoUDP, dport: 80},
	{remote: netip.MustParseAddr("192.0.2.200"), proto: policy.ProtoTCP, dport: 2500},
	{remote: netip.MustParseAddr("192.0.2.200"), proto: policy.ProtoTCP, dport: 3001},
}

// TestDirectPortRules: a prefix's first single-port rule goes into its
// address entry, or, where it has none, a range with no rule of its protocol
// inside; its others go into the ports map and the ranges trie, and all
// decide and count as the reference says, in fixed and persistent
// datapaths; a persistent policy reads them back, counters and all, when
// opened, and keeps them through a rebuild.
func TestDirectPortRules(t *testing.T) {
	p := mustPolicy(t, policy.LogAll, directRules...)
	e := entriesOf(p, nil, false)
	// 192.0.2.128/25's direct rule is tcp/80-443, inside tcp/1-1024.
	var ranges []string
	direct := 0
	for _, v := range addressEntries(e[policy.Egress]) {
		if v.DirectId != 0 {
			direct++
		}
		if v.DirectEnd != v.DirectPort {
			ranges = append(ranges, fmt.Sprintf("%d/%d-%d", v.DirectProto, v.DirectPort, v.DirectEnd))
		}
	}
	slices.Sort(ranges)
	if want := []string{"6/80-443", "6/8000-8999"}; !slices.Equal(ranges, want) {
		t.Errorf("direct ranges %v, want %v", ranges, want)
	}
	if n := e.counts()[policy.Egress]; direct != 7 || n[kindPorts] != 4 {
		t.Fatalf("%d direct rules and %d in the ports map, want 7 (one per prefix with port rules) and 4",
			direct, n[kindPorts])
	}
	for _, fixed := range []bool{false, true} {
		t.Run(fmt.Sprintf("fixed=%v", fixed), func(t *testing.T) { checkDirect(t, p.Clone(), fixed) })
	}
}

// addressEntries returns the entries of a direction's address batches.
func addressEntries(batches [numKinds]ruleBatch) []cgwallEntry {
	var out []cgwallEntry
	out = append(out, valuesOf[[4]byte](batches[kindHost4])...)
	out = append(out, valuesOf[cgwallPrefixKey4](batches[kindPrefix4])...)
	out = append(out, valuesOf[cgwallAddr6](batches[kindHost6])...)
	return append(out, valuesOf[cgwallPrefixKey6](batches[kindPrefix6])...)
}

func valuesOf[K any](b ruleBatch) []cgwallEntry {
	if b == nil {
		return nil
	}
	return b.(*encoded[K, cgwallEntry]).values
}

// checkDirect is TestDirectPortRules for one build of the object.
func checkDirect(t *testing.T, p *policy.Policy, fixed bool) {
	var opts []Option
	if fixed {
		opts = append(opts, Fixed())
	}
	d := load(t, p, opts...)
	want := decideAll(t, d, p)
	checkCounters(t, d, want)
	if fixed {
		return
	}
	o, _ := pinAndOpen(t, d)
	if got, want := ruleStrings(o.Policy().Rules), ruleStrings(p.Rules); !slices.Equal(got, want) {
		t.Fatalf("the opened policy's rules:\n%v\nwant\n%v", got, want)
	}
	checkCounters(t, o, want)
	// A port rule more: the policy moves to the other generation.
	if _, _, err := o.Set(policy.Egress, policy.Block, policy.Match{
		Prefix: netip.MustParsePrefix("192.0.2.1/32"), Ports: policy.Ports{Proto: policy.ProtoUDP, Lo: 9, Hi: 9}}); err != nil {
		t.Fatal(err)
	}
	checkCounters(t, o, want)
	// The opened datapath loads no programs: d's read the same maps.
	if got := decideAll(t, d, o.Policy()); len(got) == 0 {
		t.Fatal("no rule decided after the rebuild")
	}
}

// decideAll runs every direct probe through d's egress program, checks its
// verdict and rule against p's, and returns the packets each rule decided.
func decideAll(t *testing.T, d *Datapath, p *policy.Policy) map[uint32]uint64 {
	t.Helper()
	rd, err := d.Events()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	want := map[uint32]uint64{}
	for _, pr := range directProbes {
		pr.dir = policy.Egress
		action, id := p.Decide(pr.dir, pr.reference())
		if _, e := decideInKernel(t, d, rd, pr); e.Action != uint8(action) || e.RuleID != id {
			t.Errorf("%v: datapath decided %d by rule %d, reference %v by rule %d", pr, e.Action, e.RuleID, action, id)
		}
		if id != 0 {
			want[id]++
		}
	}
	return want
}

// checkCounters checks that the rules' packet counters are want's.
func checkCounters(t *testing.T, d *Datapath, want map[uint32]uint64) {
	t.Helper()
	c, err := d.RuleCounters()
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint32]uint64{}
	for id, n := range c {
		if n.Packets != 0 {
			got[id] = n.Packets
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("packets by rule ID %v, want %v", got, want)
	}
}

// TestNarrowEntries: a fixed datapath whose policy has no port rules keeps
// the address rule alone in its address maps (struct rule), and decides and
// counts as the reference says; one with a port rule keeps whole entries.
func TestNarrowEntries(t *testing.T) {
	for _, tc := range []struct {
		rules []string
		size  int
	}{
		{[]string{"block", "192.0.2.1", "allow", "198.51.100.0/24", "block", "203.0.113.0/24",
			"block", "2001:db8::1", "block", "2001:db8:1::/48"}, binary.Size(cgwallRule{})},
		{[]string{"block", "192.0.2.1", "allow", "192.0.2.1:tcp/443", "block", "2001:db8::1"}, binary.Size(cgwallEntry{})},
	} {
		p := mustPolicy(t, policy.LogAll, tc.rules...)
		d := load(t, p, Fixed())
		for _, k := range []kind{kindHost4, kindPrefix4, kindHost6, kindPrefix6} {
			if got := d.maps[policy.Egress][k].outer.ValueSize(); got != uint32(tc.size) {
				t.Errorf("%v: %s values of %d bytes, want %d", tc.rules, k, got, tc.size)
			}
		}
		checkCounters(t, d, decideAll(t, d, p))
	}
}
