package policy

import (
	"fmt"
	"net/netip"
	"strings"
)

// ParsePrefix reads an IPv4 or IPv6 address or CIDR. A bare address is a host
// prefix (/32 or /128). IPv4-mapped IPv6 prefixes (::ffff:a.b.c.d/n, n >= 96)
// become the IPv4 prefix they map, because the datapath judges mapped addresses
// by the IPv4 rules. Host bits set after the prefix length are an error rather
// than silently cleared: 10.0.0.1/8 is more likely a typo than a wish for 10/8.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.TrimSpace(s) == "" {
		return netip.Prefix{}, fmt.Errorf("empty address: give an IPv4 or IPv6 address or CIDR, e.g. 192.0.2.1 or 2001:db8::/32")
	}
	var prefix netip.Prefix
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a valid CIDR: %s", s, cidrReason(s))
		}
		prefix = p
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not a valid IPv4 or IPv6 address", s)
		}
		prefix = netip.PrefixFrom(a, a.BitLen())
	}
	if prefix.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not a valid CIDR: zones are not allowed", s)
	}
	if m := prefix.Masked(); m != prefix {
		return netip.Prefix{}, fmt.Errorf("%q has bits set after the /%d prefix: did you mean %s?", s, prefix.Bits(), m)
	}
	if prefix.Addr().Is4In6() && prefix.Bits() >= 96 {
		prefix = netip.PrefixFrom(prefix.Addr().Unmap(), prefix.Bits()-96)
	}
	return prefix, nil
}

// cidrReason says what is wrong with a CIDR that netip rejected, in the words
// a user would look for.
func cidrReason(s string) string {
	addr, bits, _ := strings.Cut(s, "/")
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return fmt.Sprintf("%q is not an IPv4 or IPv6 address", addr)
	}
	return fmt.Sprintf("prefix length %q must be a number from 0 to %d", bits, a.BitLen())
}

// LogLevel says which decisions are streamed to userspace.
type LogLevel uint8

const (
	LogNone LogLevel = iota
	LogDrop
	LogAll
)

func (l LogLevel) String() string {
	switch l {
	case LogNone:
		return "none"
	case LogAll:
		return "all"
	}
	return "drop"
}

// ParseLogLevel reads none, drop or all.
func ParseLogLevel(s string) (LogLevel, error) {
	for _, l := range []LogLevel{LogNone, LogDrop, LogAll} {
		if s == l.String() {
			return l, nil
		}
	}
	return 0, fmt.Errorf("%q is not a log level: use none, drop or all", s)
}
