package datapath

import (
	"encoding/binary"
	"net/netip"

	"github.com/cgwall/cgwall/internal/policy"
)

// Crafted packets for BPF_PROG_TEST_RUN. For cgroup_skb programs the kernel
// takes an Ethernet header, sets skb->protocol from its EtherType and hands the
// program the bytes after it, as it would on a real egress path.

func ethernet(etherType uint16, payload []byte) []byte {
	pkt := make([]byte, 14, 14+len(payload))
	binary.BigEndian.PutUint16(pkt[12:], etherType)
	return append(pkt, payload...)
}

func l4(sport, dport uint16) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	return b
}

// packet builds an IPv4 or IPv6 UDP packet from src to dst.
func packet(src, dst netip.Addr) []byte {
	if dst.Is4() {
		return ipv4(src, dst, policy.ProtoUDP, l4(40000, 53))
	}
	return ipv6(src, dst, policy.ProtoUDP, l4(40000, 53))
}

func ipv4(src, dst netip.Addr, proto uint8, payload []byte) []byte {
	h := make([]byte, 20, 20+len(payload))
	h[0] = 0x45 // version 4, 5 words
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	h[8] = 64
	h[9] = proto
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	return ethernet(0x0800, append(h, payload...))
}

func ipv6(src, dst netip.Addr, proto uint8, payload []byte) []byte {
	h := make([]byte, 40, 40+len(payload))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6] = proto
	h[7] = 64
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return ethernet(0x86dd, append(h, payload...))
}

// ipv6Shaped builds an IPv6 packet whose transport header follows the
// extension headers a shape calls for.
func ipv6Shaped(src, dst netip.Addr, proto uint8, s shape, payload []byte) []byte {
	const hopByHopHdr, fragmentHdr = 0, 44
	switch s {
	case nonFirstFrag, firstFrag:
		ext := make([]byte, 8)
		ext[0] = proto
		if s == nonFirstFrag {
			binary.BigEndian.PutUint16(ext[2:], 1<<3) // offset 8 bytes
		} else {
			binary.BigEndian.PutUint16(ext[2:], 1) // more fragments
		}
		return ipv6(src, dst, fragmentHdr, append(ext, payload...))
	case hopByHop:
		ext := make([]byte, 8) // next header, length 0 (8 bytes), padding
		ext[0] = proto
		return ipv6(src, dst, hopByHopHdr, append(ext, payload...))
	}
	return ipv6(src, dst, proto, payload)
}
