package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
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

// The sender is this program re-executed with senderEnv set. It is started
// directly in the cgroup under test (clone3 with CLONE_INTO_CGROUP), so every
// socket it opens belongs to that cgroup from the first instruction on.

const senderEnv = "CGWALL_BENCH_SENDER"

type senderResult struct {
	Sent    uint64  `json:"sent"`     // packets the sendmmsg calls accepted
	Wire    uint64  `json:"wire"`     // packets the veth transmitted
	Errors  uint64  `json:"errors"`   // failed sendmmsg calls
	LastErr string  `json:"last_err"` // the last error, if any
	Seconds float64 `json:"seconds"`
}

func (r senderResult) pps() float64 { return float64(r.Wire) / r.Seconds }

// senderMain sends UDP as fast as one thread can for a fixed time and prints
// a senderResult as JSON. Bounded: it stops after -duration, or after
// -max-packets, whichever comes first.
func senderMain(args []string) error {
	fs := flag.NewFlagSet("sender", flag.ContinueOnError)
	netns := fs.String("netns", "", "network namespace to send from (path)")
	dev := fs.String("dev", "", "device whose tx_packets count the packets on the wire")
	dst := fs.String("dst", "", "first destination address")
	ndst := fs.Int("dsts", 1, "number of consecutive destination addresses; 1 uses a connected socket")
	port := fs.Int("port", 9, "destination UDP port")
	batch := fs.Int("batch", 64, "datagrams per sendmmsg call")
	size := fs.Int("size", 18, "UDP payload bytes")
	cpu := fs.Int("cpu", -1, "CPU to pin the sending thread to")
	warmup := fs.Duration("warmup", 200*time.Millisecond, "time sent before counting")
	duration := fs.Duration("duration", time.Second, "time counted")
	maxPackets := fs.Uint64("max-packets", 50_000_000, "stop after this many packets")
	if err := fs.Parse(args); err != nil {
		return err
	}

	// Everything below runs on this one thread: it alone is in the namespace.
	runtime.LockOSThread()
	if *netns != "" {
		f, err := os.Open(*netns)
		if err != nil {
			return err
		}
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter %s: %w", *netns, err)
		}
		f.Close()
	}
	if *cpu >= 0 {
		if err := pinThread(*cpu); err != nil {
			return fmt.Errorf("pin to CPU %d: %w", *cpu, err)
		}
	}
	first, err := netip.ParseAddr(*dst)
	if err != nil || !first.Is4() {
		return fmt.Errorf("bad -dst %q", *dst)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)

	payload := make([]byte, *size)
	iov := unix.Iovec{Base: &payload[0]}
	iov.SetLen(len(payload))
	msgs := make([]unix.Mmsghdr, *batch)
	var names []unix.RawSockaddrInet4
	if *ndst == 1 {
		if err := unix.Connect(fd, &unix.SockaddrInet4{Port: *port, Addr: first.As4()}); err != nil {
			return fmt.Errorf("connect: %w", err)
		}
	} else {
		// One name per message, cycling through the destinations.
		names = make([]unix.RawSockaddrInet4, *ndst)
		a := first
		for i := range names {
			names[i] = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.As4()}
			p := (*[2]byte)(unsafe.Pointer(&names[i].Port))
			p[0], p[1] = byte(*port>>8), byte(*port)
			a = a.Next()
		}
	}
	for i := range msgs {
		msgs[i].Hdr.Iov = &iov
		msgs[i].Hdr.SetIovlen(1)
	}

	var res senderResult
	next := 0
	send := func() {
		if names != nil {
			for i := range msgs {
				msgs[i].Hdr.Name = (*byte)(unsafe.Pointer(&names[next]))
				msgs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
				next++
				if next == len(names) {
					next = 0
				}
			}
		}
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
		if errno != 0 {
			res.Errors++
			res.LastErr = errno.Error()
			return
		}
		res.Sent += uint64(n)
	}

	end := time.Now().Add(*warmup)
	for time.Now().Before(end) {
		send()
	}
	res = senderResult{}
	tx0, err := txPackets(*dev)
	if err != nil {
		return err
	}
	start := time.Now()
	end = start.Add(*duration)
	for i := 0; res.Sent < *maxPackets; i++ {
		send()
		if i%16 == 0 && !time.Now().Before(end) {
			break
		}
	}
	res.Seconds = time.Since(start).Seconds()
	tx1, err := txPackets(*dev)
	if err != nil {
		return err
	}
	res.Wire = tx1 - tx0
	return json.NewEncoder(os.Stdout).Encode(res)
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
		if !ok || strings.TrimSpace(name) != dev {
			continue
		}
		// rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets ...
		f := strings.Fields(rest)
		if len(f) < 10 {
			break
		}
		return strconv.ParseUint(f[9], 10, 64)
	}
	return 0, errors.New("no device " + dev + " in /proc/thread-self/net/dev")
}
