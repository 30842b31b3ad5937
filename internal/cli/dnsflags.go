package cli

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/cgwall/cgwall/internal/resolver"
)

// DNS settings of the commands that serve name rules themselves (run, exec):
// the resolver's defaults.
const (
	defaultDNSMinTTL       = resolver.DefaultMinTTL
	defaultDNSMaxAddresses = resolver.DefaultMaxPerName
	// minDNSMinTTL is the least floor: an address that expired as soon as
	// it was learned would be gone before the client that asked could
	// connect to it.
	minDNSMinTTL = time.Second
)

// dnsFlags are the settings of cgwall's resolver.
type dnsFlags struct {
	fs       *pflag.FlagSet
	upstream string
	minTTL   time.Duration
	maxAddrs int
}

func (f *dnsFlags) bind(fs *pflag.FlagSet) {
	f.fs = fs
	fs.StringVar(&f.upstream, "dns-upstream", "", "with name rules, forward the cgroup's DNS queries to `ADDR[:PORT]` (port 53 if none) instead of to the server each one was sent to")
	fs.DurationVar(&f.minTTL, "dns-min-ttl", defaultDNSMinTTL, "with name rules, keep each learned address at least `DURATION`, whatever the answer's TTL")
	fs.IntVar(&f.maxAddrs, "dns-max-addresses", defaultDNSMaxAddresses, "with name rules, keep at most `N` addresses per name; the oldest go first")
}

// dnsSettings are dnsFlags checked.
type dnsSettings struct {
	upstream netip.AddrPort // zero: each query goes to the server it was sent to
	minTTL   time.Duration
	maxAddrs int
	given    []string // the flags given, to warn that they do nothing without name rules
}

func (f *dnsFlags) parse() (dnsSettings, error) {
	s := dnsSettings{minTTL: f.minTTL, maxAddrs: f.maxAddrs}
	for _, name := range []string{"dns-upstream", "dns-min-ttl", "dns-max-addresses"} {
		if f.fs.Changed(name) {
			s.given = append(s.given, "--"+name)
		}
	}
	if f.fs.Changed("dns-upstream") {
		var err error
		if s.upstream, err = parseUpstream(f.upstream); err != nil {
			return dnsSettings{}, usageErr(fmt.Errorf("--dns-upstream: %w", err))
		}
	}
	if s.minTTL < minDNSMinTTL {
		return dnsSettings{}, usageErr(fmt.Errorf("--dns-min-ttl: %v is less than %v: an address that expired at once would be gone before the client that asked could connect", s.minTTL, minDNSMinTTL))
	}
	if s.maxAddrs < 1 {
		return dnsSettings{}, usageErr(fmt.Errorf("--dns-max-addresses: %d is not a number of addresses: use 1 or more (default %d)", s.maxAddrs, defaultDNSMaxAddresses))
	}
	return s, nil
}

// parseUpstream reads ADDR or ADDR:PORT, IPv6 in brackets when a port
// follows.
func parseUpstream(s string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return netip.AddrPortFrom(a.Unmap(), 53), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Addr().Zone() != "" || ap.Port() == 0 {
		hint := ""
		if strings.Count(s, ":") > 1 && !strings.HasPrefix(s, "[") {
			hint = " (an IPv6 address takes brackets when a port follows: [2001:db8::53]:5353)"
		}
		return netip.AddrPort{}, fmt.Errorf("%q is not an address: use ADDR or ADDR:PORT, as 192.0.2.53 or 192.0.2.53:5353, with a port from 1 to 65535%s", s, hint)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}
