// Package seccomp refuses packet sockets to a command with a seccomp filter.
//
// cgwall refuses packet sockets, which bypass its cgroup_skb programs, with a
// per-cgroup BPF LSM program. Kernels without BPF LSM, or under lockdown,
// refuse that program; for a command that cgwall starts itself (exec), this
// filter stands in for it: the command and everything it starts get EPERM
// from socket(AF_PACKET, ...). The filter cannot refuse what is already open:
// it is no guard for a cgroup whose processes are running (run, attach).
package seccomp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// data is the kernel's struct seccomp_data, what a filter reads.
type data struct {
	nr   int32
	arch uint32
	_    uint64 // instruction_pointer, which no filter here reads
	args [6]uint64
}

var (
	offNr   = uint32(unsafe.Offsetof(data{}.nr))
	offArch = uint32(unsafe.Offsetof(data{}.arch))
	// offArg0 is where the low 32 bits of the first argument are: a socket's
	// family is an int, and the kernel ignores the upper half.
	offArg0 = uint32(unsafe.Offsetof(data{}.args)) + lowHalf
)

// lowHalf is the offset of a 64-bit word's low 32 bits in memory.
var lowHalf = func() uint32 {
	if binary.NativeEndian.Uint16([]byte{1, 0}) == 1 {
		return 0
	}
	return 4
}()

// ErrUnavailable marks the errors of Start that leave the command unstarted
// because the filter could not be had: a machine whose system calls this
// package does not know, or a kernel that refuses the filter.
var ErrUnavailable = errors.New("no seccomp filter")

// Return values of the filter.
const (
	allow = unix.SECCOMP_RET_ALLOW
	deny  = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
)

// x32Bit marks the system calls of the x32 ABI, which run under
// AUDIT_ARCH_X86_64 with their own numbers: the common ones, socket among
// them, are the x86_64 number with this bit set.
const x32Bit = 0x40000000

// abi is one system call convention that a process on this machine can use:
// the native one, and the 32-bit compat one, which any process can enter
// (int 0x80 on x86_64), so the filter must cover it too.
type abi struct {
	arch         uint32 // AUDIT_ARCH_*
	socket       uint32
	socketcall   uint32 // i386's multiplexer, whose arguments lie in memory; 0 if none
	ioUringSetup uint32
	x32          bool // numbers may carry x32Bit
}

// abis are the conventions of each supported GOARCH, from the kernel's
// syscall tables (arch/x86/entry/syscalls, include/uapi/asm-generic/unistd.h,
// arch/arm/tools/syscall.tbl).
var abis = map[string][]abi{
	"amd64": {
		{arch: unix.AUDIT_ARCH_X86_64, socket: 41, ioUringSetup: 425, x32: true},
		{arch: unix.AUDIT_ARCH_I386, socket: 359, socketcall: 102, ioUringSetup: 425},
	},
	"arm64": {
		{arch: unix.AUDIT_ARCH_AARCH64, socket: 198, ioUringSetup: 425},
		{arch: unix.AUDIT_ARCH_ARM, socket: 281, ioUringSetup: 425},
	},
}

// sysSocket is socketcall's call number for socket().
const sysSocket = 1

// Filter returns the program that refuses, with EPERM:
//   - socket(AF_PACKET, ...);
//   - io_uring_setup(): io_uring creates sockets (IORING_OP_SOCKET) without
//     a system call that a filter could see;
//   - on i386, socketcall(SYS_SOCKET, ...): its family lies in memory, which
//     a filter cannot read, so every socket() made that way is refused
//     (i386 C libraries call socket() itself since Linux 4.3);
//   - every system call of a convention this table does not know.
//
// It lets everything else through.
func Filter() ([]bpf.Instruction, error) {
	conventions, ok := abis[runtime.GOARCH]
	if !ok {
		return nil, fmt.Errorf("%w for %s: cgwall knows the system calls of amd64 and arm64", ErrUnavailable, runtime.GOARCH)
	}
	prog := []bpf.Instruction{bpf.LoadAbsolute{Off: offArch, Size: 4}}
	for _, a := range conventions {
		block := a.block()
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: a.arch, SkipTrue: uint8(len(block))})
		prog = append(prog, block...)
	}
	return append(prog, bpf.RetConstant{Val: deny}), nil
}

// block judges the system calls of one convention. It ends in a return, so
// the next convention's test never sees its accumulator.
func (a abi) block() []bpf.Instruction {
	b := []bpf.Instruction{bpf.LoadAbsolute{Off: offNr, Size: 4}}
	if a.x32 {
		b = append(b, bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: ^uint32(x32Bit)})
	}
	b = append(b, refuseIfArg(a.socket, unix.AF_PACKET)...)
	if a.socketcall != 0 {
		b = append(b, refuseIfArg(a.socketcall, sysSocket)...)
	}
	b = append(b,
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: a.ioUringSetup, SkipTrue: 1},
		bpf.RetConstant{Val: deny},
		bpf.RetConstant{Val: allow},
	)
	return b
}

// refuseIfArg refuses system call nr when its first argument is arg, and
// lets it through otherwise; other calls go on to what follows.
func refuseIfArg(nr, arg uint32) []bpf.Instruction {
	return []bpf.Instruction{
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: nr, SkipTrue: 4},
		bpf.LoadAbsolute{Off: offArg0, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: arg, SkipTrue: 1},
		bpf.RetConstant{Val: deny},
		bpf.RetConstant{Val: allow},
	}
}

// Start starts c with the filter in place from its first instruction. Its
// errors are c.Start's, as they are, or wrap ErrUnavailable.
//
// Go cannot run code in a child between fork and exec, but a child inherits
// the seccomp filters of the thread that forks it. So Start installs the
// filter on a thread of its own, locked to one goroutine, and starts c from
// there: no other goroutine ever runs on that thread, and cgwall's other
// threads stay unfiltered. The thread lives until c exits, so that whatever
// is tied to the life of a child's parent thread (Pdeathsig) holds. Then its
// goroutine exits still locked to it, and Go ends the thread, or parks it for
// good if it is the main thread, which Linux does not let end alone.
func Start(c *exec.Cmd) error {
	filter, err := Filter()
	if err != nil {
		return err
	}
	raw, err := bpf.Assemble(filter)
	if err != nil {
		return fmt.Errorf("assemble the seccomp filter: %w", err)
	}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see above
		if err := install(raw); err != nil {
			started <- err
			return
		}
		if err := c.Start(); err != nil {
			started <- err
			return
		}
		// Opened before Start returns, and so before anyone reaps c.
		pidfd, err := unix.PidfdOpen(c.Process.Pid, 0)
		started <- nil
		if err != nil {
			select {} // no way to see c exit: keep the thread for good
		}
		waitExit(pidfd)
	}()
	return <-started
}

// waitExit blocks until the process of pidfd has exited, and closes it.
func waitExit(pidfd int) {
	defer unix.Close(pidfd)
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != unix.EINTR {
			return
		}
	}
}

// install puts the filter on the calling thread alone (no TSYNC). The kernel
// takes a filter from a thread with CAP_SYS_ADMIN as it is, and from one
// without only under no_new_privs, which then holds for the command too:
// setuid and file-capability programs lose their privileges. So
// no_new_privs is set only when the kernel asks for it, on this thread.
func install(raw []bpf.RawInstruction) error {
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	err := setFilter(&prog)
	if err == unix.EACCES {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("%w: set no_new_privs: %w", ErrUnavailable, err)
		}
		err = setFilter(&prog)
	}
	if err != nil {
		return fmt.Errorf("%w: the kernel refused it: %w", ErrUnavailable, err)
	}
	return nil
}

func setFilter(prog *unix.SockFprog) error {
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(prog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return errno
	}
	return nil
}
