package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The sender is this program re-executed with senderEnv set to its job. It
// is started directly in the cgroup under test (clone3 with
// CLONE_INTO_CGROUP), so every socket it opens belongs to that cgroup from
// the first instruction on.

const (
	senderEnv  = "CGWALL_BENCH_SENDER"
	maxPackets = 50_000_000 // a bound on one send, whatever its duration
	udpPort    = 9          // discard
)

// senderJob is what one sender sends: payloadBytes of UDP, from srcDev to
// Dsts consecutive destinations from its family's firstDestination.
type senderJob struct {
	Netns    string        // network namespace to send from (path)
	Family   int           // 4 or 6
	Dsts     int           // 1 uses a connected socket
	Batch    int           // datagrams per sendmmsg call
	CPU      int           // CPU to pin the sending thread to
	Warmup   time.Duration // time sent before counting
	Duration time.Duration // time counted
}

type senderResult struct {
	Sent    uint64  `json:"sent"`     // packets the sendmmsg calls accepted
	Wire    uint64  `json:"wire"`     // packets the veth transmitted
	Errors  uint64  `json:"errors"`   // failed sendmmsg calls
	LastErr string  `json:"last_err"` // the last error, if any
	Seconds float64 `json:"seconds"`
}

func (r senderResult) pps() float64 { return float64(r.Wire) / r.Seconds }

// senderMain sends UDP as fast as one thread can for the job's duration (or
// maxPackets) and prints a senderResult as JSON.
func senderMain(job string) error {
	var j senderJob
	if err := json.Unmarshal([]byte(job), &j); err != nil {
		return err
	}
	// Everything below runs on this one thread: it alone is in the namespace.
	runtime.LockOSThread()
	if err := enterNetns(j.Netns); err != nil {
		return err
	}
	if err := pinThread(j.CPU); err != nil {
		return fmt.Errorf("pin to CPU %d: %w", j.CPU, err)
	}
	s, err := newSocket(j)
	if err != nil {
		return err
	}
	defer unix.Close(s.fd)
	for end := time.Now().Add(j.Warmup); time.Now().Before(end); {
		s.send()
	}
	s.res = senderResult{}
	tx0, err := txPackets(srcDev)
	if err != nil {
		return err
	}
	start := time.Now()
	for i, end := 0, start.Add(j.Duration); s.res.Sent < maxPackets; i++ {
		s.send()
		if i%16 == 0 && !time.Now().Before(end) {
			break
		}
	}
	s.res.Seconds = time.Since(start).Seconds()
	tx1, err := txPackets(srcDev)
	s.res.Wire = tx1 - tx0
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(s.res)
}

// socket is a UDP socket and the batch of messages it sends.
type socket struct {
	fd      int
	msgs    []unix.Mmsghdr
	names   []unsafe.Pointer // a raw sockaddr per destination, cycled through; none when connected
	namelen uint32
	next    int
	res     senderResult
}

func newSocket(j senderJob) (*socket, error) {
	domain := unix.AF_INET
	if j.Family == 6 {
		domain = unix.AF_INET6
	}
	fd, err := unix.Socket(domain, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	s := &socket{fd: fd, msgs: make([]unix.Mmsghdr, j.Batch)}
	payload := make([]byte, payloadBytes)
	iov := unix.Iovec{Base: &payload[0]}
	iov.SetLen(len(payload))
	for i := range s.msgs {
		s.msgs[i].Hdr.Iov = &iov
		s.msgs[i].Hdr.SetIovlen(1)
	}
	a := firstDestination(j.Family)
	if j.Dsts == 1 {
		var sa unix.Sockaddr = &unix.SockaddrInet6{Port: udpPort, Addr: a.As16()}
		if a.Is4() {
			sa = &unix.SockaddrInet4{Port: udpPort, Addr: a.As4()}
		}
		if err := unix.Connect(fd, sa); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("connect: %w", err)
		}
		return s, nil
	}
	s.namelen = unix.SizeofSockaddrInet4
	if j.Family == 6 {
		s.namelen = unix.SizeofSockaddrInet6
	}
	for range j.Dsts {
		s.names = append(s.names, rawSockaddr(a))
		a = a.Next()
	}
	return s, nil
}

// rawSockaddr is a's sockaddr_in or sockaddr_in6, to udpPort.
func rawSockaddr(a netip.Addr) unsafe.Pointer {
	var port *uint16
	var name unsafe.Pointer
	if a.Is4() {
		sa := &unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.As4()}
		port, name = &sa.Port, unsafe.Pointer(sa)
	} else {
		sa := &unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.As16()}
		port, name = &sa.Port, unsafe.Pointer(sa)
	}
	p := (*[2]byte)(unsafe.Pointer(port)) // network order
	p[0], p[1] = udpPort>>8, udpPort&0xff
	return name
}

// send sends one batch; unconnected, each message to the next destination.
func (s *socket) send() {
	for i := 0; s.names != nil && i < len(s.msgs); i++ {
		s.msgs[i].Hdr.Name = (*byte)(s.names[s.next])
		s.msgs[i].Hdr.Namelen = s.namelen
		s.next = (s.next + 1) % len(s.names)
	}
	n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.msgs[0])), uintptr(len(s.msgs)), 0, 0, 0)
	if errno != 0 {
		s.res.Errors++
		s.res.LastErr = errno.Error()
		return
	}
	s.res.Sent += uint64(n)
}

// txPackets reads a device's transmitted packets from /proc/thread-self/net/dev,
// which shows the network namespace of the calling thread.
func txPackets(dev string) (uint64, error) {
	f, err := os.Open("/proc/thread-self/net/dev")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		// rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets ...
		if f := strings.Fields(rest); ok && strings.TrimSpace(name) == dev && len(f) >= 10 {
			return strconv.ParseUint(f[9], 10, 64)
		}
	}
	return 0, errors.New("no device " + dev + " in /proc/thread-self/net/dev")
}
