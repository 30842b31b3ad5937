package resolver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// samePortTries is how often Listen looks for one port free on all four
// sockets before it settles for one port per family.
const samePortTries = 8

var (
	loopback4 = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	loopback6 = netip.IPv6Loopback()
)

// Listen binds UDP and TCP on 127.0.0.1 and [::1]. It comes before Serve
// because the BPF programs are loaded with these addresses; queries that
// arrive in between wait in the sockets.
//
// All four sockets get one port when it can find one (an ephemeral port on
// one address may be taken on another); otherwise each family has its own,
// UDP and TCP alike. IPv6 must be enabled on lo: a cgroup's IPv6 queries
// have to be redirected somewhere.
func Listen() (*Resolver, error) {
	r := new(Resolver)
	for range samePortTries {
		err := r.bind(0, 0)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, err
		}
	}
	// The port found on 127.0.0.1 kept being taken on [::1]: let [::1]
	// choose its own.
	if err := r.bind(0, -1); err != nil {
		return nil, err
	}
	return r, nil
}

// bind opens the four sockets: IPv4 on port4 (0: any), IPv6 on port6 (0:
// IPv4's port, -1: any). On an error none stays open.
func (r *Resolver) bind(port4, port6 int) (err error) {
	defer func() {
		if err != nil {
			r.closeSockets()
		}
	}()
	if r.udp[0], r.tcp[0], err = bindPair(loopback4, port4); err != nil {
		return err
	}
	r.v4 = netip.AddrPortFrom(loopback4, uint16(r.udp[0].LocalAddr().(*net.UDPAddr).Port))
	switch port6 {
	case 0:
		port6 = int(r.v4.Port())
	case -1:
		port6 = 0
	}
	if r.udp[1], r.tcp[1], err = bindPair(loopback6, port6); err != nil {
		if errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EAFNOSUPPORT) {
			return fmt.Errorf("resolver: IPv6 loopback [::1] is unavailable (IPv6 disabled? enable it with sysctl net.ipv6.conf.lo.disable_ipv6=0): %w", err)
		}
		return err
	}
	r.v6 = netip.AddrPortFrom(loopback6, uint16(r.udp[1].LocalAddr().(*net.UDPAddr).Port))
	return nil
}

// bindPair binds UDP on a:port (port 0: a free one), then TCP on the same
// port.
func bindPair(a netip.Addr, port int) (net.PacketConn, net.Listener, error) {
	u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, uint16(port))))
	if err != nil {
		return nil, nil, fmt.Errorf("resolver: listen udp %s: %w", netip.AddrPortFrom(a, uint16(port)), err)
	}
	got := netip.AddrPortFrom(a, uint16(u.LocalAddr().(*net.UDPAddr).Port))
	t, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(got))
	if err != nil {
		u.Close()
		return nil, nil, fmt.Errorf("resolver: listen tcp %s: %w", got, err)
	}
	return u, t, nil
}

func (r *Resolver) closeSockets() {
	for i := range 2 {
		if r.udp[i] != nil {
			r.udp[i].Close()
			r.udp[i] = nil
		}
		if r.tcp[i] != nil {
			r.tcp[i].Close()
			r.tcp[i] = nil
		}
	}
}

// ListenPort binds UDP and TCP on port of 127.0.0.1 and [::1], as Listen
// does on a free port: for the agent, whose persistent policies' programs
// keep its port across restarts. Port 0 is Listen.
func ListenPort(port int) (*Resolver, error) {
	if port == 0 {
		return Listen()
	}
	r := new(Resolver)
	if err := r.bind(port, 0); err != nil {
		return nil, err
	}
	return r, nil
}
