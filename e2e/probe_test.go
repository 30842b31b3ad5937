package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// probeEnv switches the test binary into probe mode.
const probeEnv = "CGWALL_E2E_PROBE"

// probeResult is what a probe reports on stdout.
type probeResult struct {
	Sent     bool   `json:"sent"`     // the send (UDP) or connect (TCP) succeeded
	Err      string `json:"err"`      // why it did not
	Received bool   `json:"received"` // the payload arrived at the listener
}

// probeMain is the probe binary: this test binary run with probeEnv set, as
// PROBE SUBCOMMAND ARGS. Its subcommands, each documented at its function:
// udp|tcp (sendMain), serve, socket, mapped, flood, burst, icmp, udpsend and
// listen.
func probeMain(args []string) int {
	switch {
	case len(args) == 2 && args[0] == "serve":
		return serveMain(args[1])
	case len(args) == 2 && args[0] == "socket":
		return socketMain(args[1])
	case len(args) == 3 && args[0] == "mapped":
		return mappedMain(args[1], args[2])
	case len(args) == 3 && args[0] == "flood":
		return floodMain(args[1], args[2])
	case len(args) == 3 && args[0] == "burst":
		return burstMain(args[1], args[2])
	case len(args) == 2 && args[0] == "icmp":
		return icmpMain(args[1])
	case len(args) == 4 && args[0] == "udpsend":
		return udpSendMain(args[1], args[2], args[3])
	case len(args) >= 2 && args[0] == "listen":
		return listenMain(args[1:])
	}
	return sendMain(args)
}

// sendMain runs as: PROBE udp|tcp TARGET MARKER. It listens on a wildcard
// address, sends a payload to TARGET at its own port and reports whether it
// arrived. For UDP it then sends a marker to MARKER, an address the policy
// allows: loopback delivers in order within the sending system call, so once
// the marker is in, a payload that has not arrived never will.
func sendMain(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: probe udp|tcp TARGET MARKER")
		return 2
	}
	target, err := netip.ParseAddr(args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	marker, _ := netip.ParseAddr(args[2]) // TCP needs none
	var res probeResult
	switch args[0] {
	case "udp":
		res, err = probeUDP(target, marker)
	case "tcp":
		res, err = probeTCP(target)
	default:
		err = fmt.Errorf("unknown probe %q", args[0])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		return 1
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

func network(proto string, a netip.Addr) string {
	if a.Is4() {
		return proto + "4"
	}
	return proto + "6"
}

func probeUDP(target, marker netip.Addr) (probeResult, error) {
	var res probeResult
	conn, err := net.ListenUDP(network("udp", target), nil)
	if err != nil {
		return res, err
	}
	defer conn.Close()
	port := uint16(conn.LocalAddr().(*net.UDPAddr).Port)

	_, err = conn.WriteToUDPAddrPort([]byte("payload"), netip.AddrPortFrom(target, port))
	res.Sent = err == nil
	if err != nil {
		res.Err = err.Error()
	}
	if _, err := conn.WriteToUDPAddrPort([]byte("marker"), netip.AddrPortFrom(marker, port)); err != nil {
		return res, fmt.Errorf("send marker to %s: %w", marker, err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return res, fmt.Errorf("wait for marker: %w", err)
		}
		switch string(buf[:n]) {
		case "payload":
			res.Received = true
		case "marker":
			return res, nil
		}
	}
}

// connectTimeout bounds a connect() whose SYN the filter drops: without the
// connect hooks, TCP retransmits rather than failing.
const connectTimeout = 1500 * time.Millisecond

func probeTCP(target netip.Addr) (probeResult, error) {
	var res probeResult
	ln, err := net.ListenTCP(network("tcp", target), nil)
	if err != nil {
		return res, err
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port

	conn, err := net.DialTimeout(network("tcp", target), net.JoinHostPort(target.String(), strconv.Itoa(port)), connectTimeout)
	if err != nil {
		res.Err = err.Error()
		return res, nil
	}
	defer conn.Close()
	res.Sent = true
	if _, err := conn.Write([]byte("payload")); err != nil {
		res.Err = err.Error()
		return res, nil
	}
	ln.SetDeadline(time.Now().Add(5 * time.Second))
	peer, err := ln.Accept()
	if err != nil {
		return res, fmt.Errorf("accept: %w", err)
	}
	defer peer.Close()
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 7)
	if _, err := peer.Read(buf); err == nil && string(buf) == "payload" {
		res.Received = true
	}
	return res, nil
}

// serveMain runs as: PROBE serve udp|tcp. It listens on 0.0.0.0 at a free port,
// prints {"port":N}, then collects the label each datagram or connection
// carries until the label "marker", and prints {"received":[labels]}.
func serveMain(proto string) int {
	var labels []string
	var err error
	switch proto {
	case "udp":
		labels, err = serveUDP()
	case "tcp":
		labels, err = serveTCP()
	default:
		err = fmt.Errorf("unknown protocol %q", proto)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	}
	json.NewEncoder(os.Stdout).Encode(map[string][]string{"received": labels})
	return 0
}

func announce(port int) {
	json.NewEncoder(os.Stdout).Encode(map[string]int{"port": port})
}

func serveUDP() ([]string, error) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	announce(conn.LocalAddr().(*net.UDPAddr).Port)
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	var labels []string
	buf := make([]byte, 64)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return labels, err
		}
		if string(buf[:n]) == "marker" {
			return labels, nil
		}
		labels = append(labels, string(buf[:n]))
	}
}

func serveTCP() ([]string, error) {
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4zero})
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	announce(ln.Addr().(*net.TCPAddr).Port)
	ln.SetDeadline(time.Now().Add(20 * time.Second))
	var labels []string
	for {
		conn, err := ln.Accept()
		if err != nil {
			return labels, err
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, _ := conn.Read(buf)
		conn.Close()
		if string(buf[:n]) == "marker" {
			return labels, nil
		}
		labels = append(labels, string(buf[:n]))
	}
}

// socketMain runs as: PROBE socket raw|packet. It prints the error of creating
// such a socket, or "ok".
func socketMain(kind string) int {
	family, typ, proto := syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_ICMP
	if kind == "packet" {
		family, typ, proto = syscall.AF_PACKET, syscall.SOCK_RAW, 0x0300 // htons(ETH_P_ALL)
	}
	fd, err := syscall.Socket(family, typ, proto)
	if err != nil {
		fmt.Println(err)
		return 0
	}
	syscall.Close(fd)
	fmt.Println("ok")
	return 0
}

// mappedMain runs as: PROBE mapped udp|tcp IPV4. From a dual-stack IPv6
// socket it sends to (UDP) or connects to (TCP) the IPv4-mapped form of IPV4,
// port 9, which the connect6 and sendmsg6 hooks see, and prints the error, or
// "ok". Go's net package would use an IPv4 socket for a mapped address.
func mappedMain(proto, ipv4 string) int {
	a, err := netip.ParseAddr(ipv4)
	if err != nil || !a.Is4() {
		fmt.Fprintln(os.Stderr, "mapped: want an IPv4 address")
		return 2
	}
	typ := syscall.SOCK_DGRAM
	if proto == "tcp" {
		typ = syscall.SOCK_STREAM
	}
	fd, err := syscall.Socket(syscall.AF_INET6, typ, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer syscall.Close(fd)
	syscall.SetsockoptInt(fd, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, 0)
	sa := &syscall.SockaddrInet6{Port: 9, Addr: netip.AddrFrom16(a.As16()).As16()}
	if proto == "tcp" {
		syscall.SetNonblock(fd, true) // EPERM comes at once; anything else is not waited for
		err = syscall.Connect(fd, sa)
	} else {
		err = syscall.Sendto(fd, []byte("payload"), 0, sa)
	}
	if err != nil {
		fmt.Println(err)
	} else {
		fmt.Println("ok")
	}
	return 0
}

// floodResult is what a flood probe reports.
type floodResult struct {
	Attempts int `json:"attempts"`
	EPERM    int `json:"eperm"`
	Sent     int `json:"sent"`
}

// floodMain runs as: PROBE flood TARGET PORT. It connects one UDP socket to
// TARGET:PORT at once, while the policy still allows it, so that its sends are
// judged by cgroup_skb alone; prints "ready"; waits for a line on stdin; then
// sends in turn from that socket and with sendto() from an unconnected one
// (judged by sendmsg too) until stdin closes, and reports the counts.
func floodMain(target, port string) int {
	addr := net.JoinHostPort(target, port)
	connected, err := net.Dial("udp4", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	unconnected, err := net.ListenUDP("udp4", nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr))
	fmt.Println("ready")
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return 1
	}
	stop := make(chan struct{})
	go func() { io.Copy(io.Discard, in); close(stop) }()
	var res floodResult
	for {
		select {
		case <-stop:
			json.NewEncoder(os.Stdout).Encode(res)
			return 0
		default:
		}
		var err error
		if res.Attempts%2 == 0 {
			_, err = connected.Write([]byte("leak"))
		} else {
			_, err = unconnected.WriteToUDP([]byte("leak"), dst)
		}
		res.Attempts++
		switch {
		case err == nil:
			res.Sent++
		case errors.Is(err, syscall.EPERM):
			res.EPERM++
		}
	}
}

// burstMain runs as: PROBE burst TARGET N. It sends N datagrams to TARGET:9
// and prints how many sends succeeded.
func burstMain(target, count string) int {
	n, err := strconv.Atoi(count)
	if err != nil {
		return 2
	}
	conn, err := net.ListenUDP("udp4", nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer conn.Close()
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(target), 9))
	sent := 0
	for i := 0; i < n; i++ {
		if _, err := conn.WriteToUDP([]byte("burst"), dst); err == nil {
			sent++
		}
	}
	fmt.Println(sent)
	return 0
}

// icmpMain runs as: PROBE icmp TARGET. It sends one ICMP echo request from a
// raw socket, which no socket hook sees, and prints the error, or "ok".
func icmpMain(target string) int {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_ICMP)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer syscall.Close(fd)
	echo := []byte{8, 0, 0xf7, 0xff, 0, 0, 0, 0} // type 8, code 0, checksum, id 0, seq 0
	sa := &syscall.SockaddrInet4{Addr: netip.MustParseAddr(target).As4()}
	if err := syscall.Sendto(fd, echo, 0, sa); err != nil {
		fmt.Println(err)
	} else {
		fmt.Println("ok")
	}
	return 0
}

// udpSendMain runs as: PROBE udpsend ADDR PORT LABEL. It sends LABEL to
// ADDR:PORT from an unconnected socket, so that the sendmsg hook judges the
// sendto(), and reports whether the send succeeded; the receiver says
// whether it arrived.
func udpSendMain(addr, port, label string) int {
	dst, err := netip.ParseAddrPort(net.JoinHostPort(addr, port))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	conn, err := net.ListenUDP(network("udp", dst.Addr()), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer conn.Close()
	var res probeResult
	if _, err := conn.WriteToUDPAddrPort([]byte(label), dst); err != nil {
		res.Err = err.Error()
	} else {
		res.Sent = true
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// listenMain runs as: PROBE listen PROTO/PORT... It listens on every address
// (IPv4 and IPv6) at each TCP or UDP port, says "listening" on stderr, and
// prints "got PROTO/PORT LABEL from SRC" for each connection (its first
// bytes) or datagram, until it is killed.
func listenMain(specs []string) int {
	out := make(chan string)
	for _, spec := range specs {
		proto, port, _ := strings.Cut(spec, "/")
		switch proto {
		case "tcp":
			ln, err := net.Listen("tcp", ":"+port)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			go func() {
				for {
					conn, err := ln.Accept()
					if err != nil {
						return
					}
					conn.SetReadDeadline(time.Now().Add(5 * time.Second))
					buf := make([]byte, 256)
					n, _ := io.ReadFull(conn, buf)
					out <- fmt.Sprintf("got %s %s from %s", spec, buf[:n], conn.RemoteAddr())
					conn.Close()
				}
			}()
		case "udp":
			conn, err := net.ListenPacket("udp", ":"+port)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			go func() {
				buf := make([]byte, 256)
				for {
					n, from, err := conn.ReadFrom(buf)
					if err != nil {
						return
					}
					out <- fmt.Sprintf("got %s %s from %s", spec, buf[:n], from)
				}
			}()
		default:
			fmt.Fprintf(os.Stderr, "listen: %q is not tcp/PORT or udp/PORT\n", spec)
			return 2
		}
	}
	fmt.Fprintln(os.Stderr, "listening")
	for line := range out {
		fmt.Println(line)
	}
	return 0
}
