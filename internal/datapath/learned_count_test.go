package datapath

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/cgwall/cgwall/internal/policy"
)

// learnedPolicy is a policy with one name rule, under which addresses can be
// learned.
func learnedPolicy(t testing.TB) *policy.Policy {
	t.Helper()
	p := policy.New()
	if err := p.Add(policy.Egress, policy.Allow, "a.test"); err != nil {
		t.Fatal(err)
	}
	return p
}

// learnAddrs learns n IPv4 and n/2 IPv6 addresses under a.test.
func learnAddrs(t testing.TB, d *Datapath, n int) {
	t.Helper()
	var addrs []netip.Addr
	for i := range n {
		addrs = append(addrs, netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
		if i%2 == 0 {
			addrs = append(addrs, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}))
		}
	}
	if err := d.Learn(addrs, "a.test"); err != nil {
		t.Fatal(err)
	}
}

func TestLearnedAddrs(t *testing.T) {
	d := load(t, learnedPolicy(t), WithDNS(testResolver4, testResolver6, 0))
	if v4, v6, err := d.LearnedAddrs(); err != nil || v4 != 0 || v6 != 0 {
		t.Fatalf("LearnedAddrs before learning = %d, %d, %v; want 0, 0", v4, v6, err)
	}
	// More than one batch of each family.
	learnAddrs(t, d, 3*learnedBatch+1)
	if v4, v6, err := d.LearnedAddrs(); err != nil || v4 != 3*learnedBatch+1 || v6 != 3*learnedBatch/2+1 {
		t.Fatalf("LearnedAddrs = %d, %d, %v; want %d, %d", v4, v6, err, 3*learnedBatch+1, 3*learnedBatch/2+1)
	}
	if err := d.Forget([]netip.Addr{netip.MustParseAddr("10.0.0.0")}); err != nil {
		t.Fatal(err)
	}
	if v4, _, err := d.LearnedAddrs(); err != nil || v4 != 3*learnedBatch {
		t.Fatalf("LearnedAddrs after a forget = %d, %v; want %d", v4, err, 3*learnedBatch)
	}
}

// BenchmarkLearnedAddrs counts the learned maps, as a scrape of the agent's
// metrics does for each policy with name rules: empty, with a thousand
// addresses, and full (DefaultLearnedCapacity IPv4 addresses and half as
// many IPv6 ones).
func BenchmarkLearnedAddrs(b *testing.B) {
	for _, n := range []int{0, 1000, DefaultLearnedCapacity} {
		b.Run(fmt.Sprintf("v4=%d", n), func(b *testing.B) {
			d := load(b, learnedPolicy(b), WithDNS(testResolver4, testResolver6, 0))
			learnAddrs(b, d, n)
			for b.Loop() {
				if _, _, err := d.LearnedAddrs(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
