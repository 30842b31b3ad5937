// The probe of the seccomp tests: it tries to make packet sockets every way
// a process of this machine can, and prints, one line each, "NAME ok" or
// "NAME errno N". It is built and run by the tests, under the filter and not.
package main

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// What a packet socket asks for: AF_PACKET, SOCK_RAW, htons(ETH_P_ALL).
const (
	family = unix.AF_PACKET
	typ    = unix.SOCK_RAW
	proto  = 0x0300
)

func main() {
	report("socket")(unix.RawSyscall(unix.SYS_SOCKET, family, typ, proto))
	report("socket_inet")(unix.RawSyscall(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_DGRAM, 0))
	// The family's upper half, which the kernel ignores, set.
	report("socket_high_bits")(unix.RawSyscall(unix.SYS_SOCKET, 1<<32|family, typ, proto))
	var params [120]byte // struct io_uring_params
	report("io_uring_setup")(unix.RawSyscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params)), 0))
	compat()
}

// report prints the outcome of a system call that makes a socket.
func report(name string) func(fd, _ uintptr, errno unix.Errno) {
	return func(fd, _ uintptr, errno unix.Errno) {
		if errno != 0 {
			fmt.Printf("%s errno %d\n", name, int(errno))
			return
		}
		unix.Close(int(fd))
		fmt.Printf("%s ok\n", name)
	}
}
