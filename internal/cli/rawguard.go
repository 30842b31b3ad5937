package cli

import (
	"errors"
	"fmt"
	"io"
	"os/exec"

	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/seccomp"
)

// --deny-raw refuses raw sockets with cgroup/sock_create everywhere, and
// packet sockets with a BPF LSM program where the kernel lets one load. Where
// it does not, exec, which starts its command itself, refuses them with a
// seccomp filter instead; run and attach, whose cgroups hold processes
// already running, cannot. What is enforced is said exactly: in run's ready
// line, in list, and by exec when it falls back on the filter.

// socketsRefused says what --deny-raw enforces, given why packet sockets are
// not refused (nil: they are).
func socketsRefused(audit bool, packetGap error) string {
	switch {
	case audit && packetGap == nil:
		return "raw and packet sockets logged, not refused (audit mode)"
	case audit:
		return "raw sockets logged, not refused (audit mode); packet sockets NOT seen: " + packetGap.Error()
	case packetGap == nil:
		return "raw and packet sockets refused"
	}
	return "raw sockets refused; packet sockets NOT refused: " + packetGap.Error()
}

// packetGuardGap says why a loaded filter whose policy denies raw sockets
// does not refuse packet sockets, or nil when it does (or need not).
func packetGuardGap(d *datapath.Datapath) error {
	if !d.Policy().DenyRaw {
		return nil
	}
	return d.PacketGuardError()
}

// startCommand starts exec's command. Where its policy denies raw sockets
// and the kernel refused the BPF LSM guard, the command starts under a
// seccomp filter that refuses packet sockets instead (not in audit mode,
// which refuses nothing); where that cannot be had either, it starts without
// and stderr says what is not refused.
func startCommand(c *exec.Cmd, d *datapath.Datapath, stderr io.Writer) error {
	gap := packetGuardGap(d)
	if gap == nil {
		return c.Start()
	}
	audit := d.Policy().Audit
	if audit {
		fmt.Fprintf(stderr, "warning: --deny-raw: %s\n", socketsRefused(audit, gap))
		return c.Start()
	}
	err := seccomp.Start(c)
	if !errors.Is(err, seccomp.ErrUnavailable) {
		if err == nil {
			fmt.Fprintf(stderr, "note: --deny-raw: raw sockets refused; packet sockets refused by a seccomp filter on %s (which also refuses io_uring_setup(), and logs nothing), because %v\n", c.Args[0], gap)
		}
		return err
	}
	fmt.Fprintf(stderr, "warning: --deny-raw: %s; and %v\n", socketsRefused(audit, gap), err)
	return c.Start()
}
