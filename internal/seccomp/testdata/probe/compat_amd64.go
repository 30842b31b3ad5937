package main

import "golang.org/x/sys/unix"

// int80 makes an i386 system call, as any x86_64 process may.
func int80(nr, a1, a2, a3 uintptr) int32

// compat tries the x32 and i386 conventions.
func compat() {
	const x32Bit = 0x40000000
	report("socket_x32")(unix.RawSyscall(x32Bit|unix.SYS_SOCKET, family, typ, proto))
	reportInt80("socket_i386", int80(359, family, typ, proto))
	// socketcall(SYS_SOCKET, args): the arguments lie in memory, below 4 GiB
	// for a 32-bit call; the filter refuses before the kernel reads them.
	reportInt80("socketcall_i386", int80(102, 1, 0, 0))
}

func reportInt80(name string, r int32) {
	if r < 0 {
		report(name)(0, 0, unix.Errno(-r))
		return
	}
	report(name)(uintptr(r), 0, 0)
}
