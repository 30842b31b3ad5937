package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
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
			return netip.Prefix{}, fmt.Errorf("%s is not a valid CIDR: %s", quote(s), cidrReason(s))
		}
		prefix = p
	} else {
		a, err := netip.ParseAddr(s)
		if err == nil && a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%s is not a valid IPv4 or IPv6 address: %s", quote(s), noZone)
		}
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%s is not a valid IPv4 or IPv6 address", quote(s))
		}
		prefix = netip.PrefixFrom(a, a.BitLen())
	}
	if m := prefix.Masked(); m != prefix {
		return netip.Prefix{}, fmt.Errorf("%s has bits set after the /%d prefix: did you mean %s?", quote(s), prefix.Bits(), m)
	}
	if prefix.Addr().Is4In6() && prefix.Bits() >= 96 {
		prefix = netip.PrefixFrom(prefix.Addr().Unmap(), prefix.Bits()-96)
	}
	return prefix, nil
}

// noZone says why an address with a zone (fe80::1%eth0) is refused: a rule
// matches addresses on every interface, and the datapath sees no zone.
const noZone = "an IPv6 zone (%name) is not allowed in a rule"

// cidrReason says what is wrong with a CIDR that netip rejected, in the words
// a user would look for.
func cidrReason(s string) string {
	addr, bits, _ := strings.Cut(s, "/")
	if strings.Contains(addr, "%") {
		return noZone // netip refuses every zone in a prefix, even an empty one
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return fmt.Sprintf("%s is not an IPv4 or IPv6 address", quote(addr))
	}
	return fmt.Sprintf("prefix length %s must be a number from 0 to %d", quote(bits), a.BitLen())
}

// maxQuoted is how much of a value an error quotes: enough to recognise it,
// and no more, so that an error never carries a file's worth of it.
const maxQuoted = 80

// quote quotes a value for an error, cut to maxQuoted bytes (at a character)
// with its length said when it is longer.
func quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(s[:cut]), len(s))
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

// Logs says whether the level streams a decision of action a: every one
// under all, drops under drop (the C's logs).
func (l LogLevel) Logs(a Action) bool {
	return l == LogAll || l == LogDrop && a == Block
}

// ParseLogLevel reads none, drop or all.
func ParseLogLevel(s string) (LogLevel, error) {
	for _, l := range []LogLevel{LogNone, LogDrop, LogAll} {
		if s == l.String() {
			return l, nil
		}
	}
	return 0, fmt.Errorf("%s is not a log level: use none, drop or all", quote(s))
}
