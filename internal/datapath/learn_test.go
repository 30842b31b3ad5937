package datapath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/cgwall/cgwall/internal/policy"
)

// TestSeen: a learning load records each destination that egress judges,
// once, with its packets; not the cgroup's DNS to the resolver, not what
// arrives, not a fragment after the first, and it counts what finds the
// record full.
func TestSeen(t *testing.T) {
	p := mustPolicy(t, policy.LogDrop, "block", "192.0.2.0/24")
	p.Audit = true
	d := load(t, p, WithDNS(testResolver4, testResolver6, 0), WithLearning(0), Fixed())
	egress, ingress := d.progs[cgwallProgCgwallEgress], d.progs[cgwallProgCgwallIngress]
	web, v6, pinged := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::7"), netip.MustParseAddr("198.51.100.3")

	for range 3 {
		run(t, egress, ipv4(local4, web, policy.ProtoTCP, l4(40000, 443)))
	}
	run(t, egress, ipv4(local4, web, policy.ProtoTCP, l4(40001, 80)))
	run(t, egress, ipv4(local4, web, policy.ProtoUDP, l4(40002, 443)))
	run(t, egress, ipv6(local6, v6, policy.ProtoUDP, l4(40003, 5000)))
	run(t, egress, ipv4(local4, pinged, policy.ProtoICMP, make([]byte, 8)))
	// Not recorded: DNS to the resolver, a packet that arrives, and a
	// fragment after the first.
	run(t, egress, ipv4(local4, testResolver4.Addr(), policy.ProtoUDP, l4(40004, testResolver4.Port())))
	run(t, ingress, ipv4(pinged, local4, policy.ProtoUDP, l4(53, 40005)))
	frag := ipv4(local4, netip.MustParseAddr("203.0.113.9"), policy.ProtoUDP, l4(40006, 9))
	binary.BigEndian.PutUint16(frag[14+6:], 1)
	run(t, egress, frag)

	flows, lost, err := d.Seen()
	if err != nil {
		t.Fatal(err)
	}
	var got []seen
	for _, f := range flows {
		if f.First.IsZero() {
			t.Errorf("%s: no first time", f.Addr)
		}
		got = append(got, seen{f.Addr, f.Proto, f.Port, f.Packets})
	}
	want := []seen{
		{web, policy.ProtoTCP, 443, 3},
		{web, policy.ProtoTCP, 80, 1},
		{web, policy.ProtoUDP, 443, 1},
		{v6, policy.ProtoUDP, 5000, 1},
		{pinged, policy.ProtoICMP, 0, 1},
	}
	key := func(a, b seen) int {
		if c := a.addr.Compare(b.addr); c != 0 {
			return c
		}
		return int(a.proto)<<16 | int(a.port) - (int(b.proto)<<16 | int(b.port))
	}
	slices.SortFunc(got, key)
	slices.SortFunc(want, key)
	if !slices.Equal(got, want) || lost != 0 {
		t.Errorf("seen %v (%d lost), want %v (0 lost)", got, lost, want)
	}
}

// TestSeenFull: destinations past the capacity are counted as lost, and the
// ones recorded still count their packets.
func TestSeenFull(t *testing.T) {
	d := load(t, mustPolicy(t, policy.LogNone), WithLearning(2), Fixed())
	egress := d.progs[cgwallProgCgwallEgress]
	for _, port := range []uint16{1, 2, 3, 1} {
		run(t, egress, ipv4(local4, netip.MustParseAddr("192.0.2.1"), policy.ProtoTCP, l4(40000, port)))
	}
	flows, lost, err := d.Seen()
	if err != nil {
		t.Fatal(err)
	}
	var packets uint64
	for _, f := range flows {
		packets += f.Packets
	}
	if len(flows) != 2 || packets != 3 || lost != 1 {
		t.Errorf("%d destinations with %d packets, %d lost; want 2 with 3, 1 lost", len(flows), packets, lost)
	}
}

// TestSeenNotLearning: a datapath loaded without WithLearning has nothing
// to say, and says so; one without WithDNSAnswers copies no answer.
func TestSeenNotLearning(t *testing.T) {
	d := load(t, mustPolicy(t, policy.LogNone), Fixed())
	if _, _, err := d.Seen(); err == nil {
		t.Error("Seen of a datapath that is not learning succeeded")
	}
	d = load(t, mustPolicy(t, policy.LogNone), WithLearning(0), Fixed())
	if _, err := d.Answers(); err == nil {
		t.Error("Answers of a datapath that copies none succeeded")
	}
}

// seen is what TestSeen compares of a Flow.
type seen struct {
	addr    netip.Addr
	proto   uint8
	port    uint16
	packets uint64
}

func (s seen) String() string {
	return fmt.Sprintf("%s %s/%d ×%d", s.addr, policy.ProtoName(s.proto), s.port, s.packets)
}

// TestAnswers: a learning datapath copies the DNS answers that arrive over
// UDP from port 53, whole, and nothing else.
func TestAnswers(t *testing.T) {
	d := load(t, mustPolicy(t, policy.LogNone), WithLearning(0), WithDNSAnswers(), Fixed())
	rd, err := d.Answers()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	ingress := d.progs[cgwallProgCgwallIngress]
	server := netip.MustParseAddr("192.0.2.53")
	msg := make([]byte, 700) // any payload: the datapath does not parse it
	for i := range msg {
		msg[i] = byte(i)
	}
	run(t, ingress, ipv4(server, local4, policy.ProtoUDP, append(l4(53, 40000), msg...)))
	run(t, ingress, ipv4(server, local4, policy.ProtoTCP, append(l4(53, 40000), msg...)))
	run(t, ingress, ipv4(server, local4, policy.ProtoUDP, append(l4(5353, 40000), msg...)))
	run(t, ingress, ipv6(netip.MustParseAddr("2001:db8::53"), local6, policy.ProtoUDP, append(l4(53, 40000), msg[:10]...)))

	if err := rd.Flush(); err != nil {
		t.Fatal(err)
	}
	var got [][]byte
	for {
		a, err := rd.Read()
		if errors.Is(err, ringbuf.ErrFlushed) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if a.Time.IsZero() {
			t.Error("an answer without its time")
		}
		got = append(got, a.Msg)
	}
	if len(got) != 2 || !bytes.Equal(got[0], msg) || !bytes.Equal(got[1], msg[:10]) {
		t.Errorf("copied %d answers (%v), want the two from port 53 over UDP", len(got), got)
	}
}

// BenchmarkLearning times the egress program on a destination already
// recorded, as exec --learn loads it (audit, the name code, recording) and
// without recording, through BPF_PROG_TEST_RUN: what learning adds to each
// packet is a hash lookup and an atomic add. The figures are in
// docs/performance.md. Nothing here asserts on time.
func BenchmarkLearning(b *testing.B) {
	pkt := ipv4(local4, netip.MustParseAddr("192.0.2.10"), policy.ProtoTCP, l4(40000, 443))
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"off", []Option{Fixed(), WithDNS(testResolver4, testResolver6, 0)}},
		{"on", []Option{Fixed(), WithDNS(testResolver4, testResolver6, 0), WithLearning(0)}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			p := mustPolicy(b, policy.LogNone)
			p.Audit = true
			d := load(b, p, tc.opts...)
			ret, perPkt, err := d.progs[cgwallProgCgwallEgress].Benchmark(pkt, b.N, b.ResetTimer)
			if err != nil || policy.Action(ret) != policy.Allow {
				b.Fatalf("verdict %d, %v", ret, err)
			}
			b.ReportMetric(float64(perPkt.Nanoseconds()), "ns/pkt")
		})
	}
}
