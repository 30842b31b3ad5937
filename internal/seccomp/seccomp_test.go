package seccomp

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// call is a system call as the filter sees it.
type call struct {
	arch uint32
	nr   uint32
	arg0 uint64
}

// input lays out a call for x/net/bpf's VM, which loads words big-endian:
// each word goes where the filter reads it, in the VM's order.
func (c call) input() []byte {
	b := make([]byte, unsafe.Sizeof(data{}))
	binary.BigEndian.PutUint32(b[offNr:], c.nr)
	binary.BigEndian.PutUint32(b[offArch:], c.arch)
	binary.BigEndian.PutUint32(b[offArg0:], uint32(c.arg0)) // the low half, as the kernel uses it
	return b
}

// TestFilter runs the filter of every supported machine on the calls it must
// refuse and on some it must let through.
func TestFilter(t *testing.T) {
	const (
		amd64, i386, arm64, arm = unix.AUDIT_ARCH_X86_64, unix.AUDIT_ARCH_I386, unix.AUDIT_ARCH_AARCH64, unix.AUDIT_ARCH_ARM
		packet, inet            = unix.AF_PACKET, unix.AF_INET
	)
	for _, tc := range []struct {
		goarch string
		name   string
		c      call
		want   uint32
	}{
		{"amd64", "socket(AF_PACKET)", call{amd64, 41, packet}, deny},
		{"amd64", "socket(AF_PACKET) with the upper half set", call{amd64, 41, 1<<32 | packet}, deny},
		{"amd64", "socket(AF_INET)", call{amd64, 41, inet}, allow},
		{"amd64", "x32 socket(AF_PACKET)", call{amd64, x32Bit | 41, packet}, deny},
		{"amd64", "x32 socket(AF_INET)", call{amd64, x32Bit | 41, inet}, allow},
		{"amd64", "io_uring_setup", call{amd64, 425, 1}, deny},
		{"amd64", "x32 io_uring_setup", call{amd64, x32Bit | 425, 1}, deny},
		{"amd64", "read", call{amd64, 0, 3}, allow},
		{"amd64", "connect (arg0 17)", call{amd64, 42, packet}, allow},
		{"amd64", "i386 socket(AF_PACKET)", call{i386, 359, packet}, deny},
		{"amd64", "i386 socket(AF_INET)", call{i386, 359, inet}, allow},
		{"amd64", "i386 socketcall(SYS_SOCKET)", call{i386, 102, sysSocket}, deny},
		{"amd64", "i386 socketcall(SYS_CONNECT)", call{i386, 102, 3}, allow},
		{"amd64", "i386 io_uring_setup", call{i386, 425, 1}, deny},
		{"amd64", "i386 x86_64's socket number", call{i386, 41, packet}, allow}, // i386's 41 is dup
		{"amd64", "an unknown convention", call{arm64, 0, 0}, deny},
		{"arm64", "socket(AF_PACKET)", call{arm64, 198, packet}, deny},
		{"arm64", "socket(AF_INET)", call{arm64, 198, inet}, allow},
		{"arm64", "io_uring_setup", call{arm64, 425, 1}, deny},
		{"arm64", "arm socket(AF_PACKET)", call{arm, 281, packet}, deny},
		{"arm64", "arm socket(AF_INET)", call{arm, 281, inet}, allow},
		{"arm64", "arm io_uring_setup", call{arm, 425, 1}, deny},
		{"arm64", "an unknown convention", call{amd64, 41, inet}, deny},
	} {
		t.Run(tc.goarch+"/"+tc.name, func(t *testing.T) {
			vm := newVM(t, tc.goarch)
			got, err := vm.Run(tc.c.input())
			if err != nil {
				t.Fatal(err)
			}
			if uint32(got) != tc.want {
				t.Errorf("filter returned %#x, want %#x", got, tc.want)
			}
		})
	}
}

// newVM loads the filter that cgwall would build on goarch.
func newVM(t *testing.T, goarch string) *bpf.VM {
	t.Helper()
	saved := abis
	abis = map[string][]abi{runtime.GOARCH: saved[goarch]}
	defer func() { abis = saved }()
	filter, err := Filter()
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(filter)
	if err != nil {
		t.Fatalf("the filter does not assemble: %v", err)
	}
	return vm
}

// TestStart runs a probe under the filter, which tries to make packet sockets
// every way it can: each must fail with EPERM, and other sockets must not.
// The test's own threads stay unfiltered.
func TestStart(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and this test needs root, for packet sockets")
		}
		t.Skip("this test needs root, for packet sockets")
	}
	probe := filepath.Join(t.TempDir(), "probe")
	if out, err := exec.Command("go", "build", "-o", probe, "./testdata/probe").CombinedOutput(); err != nil {
		t.Fatalf("build the probe: %v\n%s", err, out)
	}
	run := func(filtered bool) map[string]string {
		t.Helper()
		c := exec.Command(probe)
		var out strings.Builder
		c.Stdout, c.Stderr = &out, os.Stderr
		start := c.Start
		if filtered {
			start = func() error { return Start(c) }
		}
		if err := start(); err != nil {
			t.Fatal(err)
		}
		if err := c.Wait(); err != nil {
			t.Fatalf("probe: %v", err)
		}
		got := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			name, result, _ := strings.Cut(line, " ")
			got[name] = result
		}
		return got
	}

	eperm := "errno " + strconv.Itoa(int(unix.EPERM))
	filtered := run(true)
	for name, want := range map[string]string{
		"socket": eperm, "socket_high_bits": eperm, "io_uring_setup": eperm, "socket_inet": "ok",
	} {
		if filtered[name] != want {
			t.Errorf("under the filter, %s: %q, want %q", name, filtered[name], want)
		}
	}
	if runtime.GOARCH == "amd64" {
		for _, name := range []string{"socket_x32", "socket_i386", "socketcall_i386"} {
			if filtered[name] != eperm {
				t.Errorf("under the filter, %s: %q, want %q", name, filtered[name], eperm)
			}
		}
	}

	// The thread that started the probe ends after it (Go ends a thread whose
	// goroutine exits locked to it), or, if it is the main thread, is parked
	// for good.
	for deadline := time.Now().Add(5 * time.Second); len(filteredThreads(t)) > 0; runtime.Gosched() {
		if f := filteredThreads(t); len(f) == 1 && f[0] == os.Getpid() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("threads %v of this process still hold the filter after the probe ended", filteredThreads(t))
		}
	}

	// Without the filter the probe makes its packet sockets, and so does this
	// process.
	plain := run(false)
	if plain["socket"] != "ok" {
		t.Errorf("without the filter, socket: %q, want ok", plain["socket"])
	}
	t.Logf("without the filter: %v", plain)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0x0300)
	if err != nil {
		t.Fatalf("this process's packet socket: %v: the filter leaked out of its thread", err)
	}
	unix.Close(fd)
}

// filteredThreads lists this process's threads under a seccomp filter.
func filteredThreads(t *testing.T) []int {
	t.Helper()
	statuses, err := filepath.Glob("/proc/self/task/*/status")
	if err != nil {
		t.Fatal(err)
	}
	var tids []int
	for _, path := range statuses {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // the thread ended
		}
		if strings.Contains(string(b), "\nSeccomp:\t2\n") {
			tid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
			tids = append(tids, tid)
		}
	}
	return tids
}

// BenchmarkStart measures what the filter adds to starting a command: run
// /bin/true to its end, with Start and with exec.Cmd.Start.
func BenchmarkStart(b *testing.B) {
	for _, bc := range []struct {
		name  string
		start func(*exec.Cmd) error
	}{
		{"plain", (*exec.Cmd).Start},
		{"filtered", Start},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				c := exec.Command("/bin/true")
				if err := bc.start(c); err != nil {
					b.Fatal(err)
				}
				if err := c.Wait(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
