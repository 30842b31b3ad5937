package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// inCgroupRun runs a command in the cgroup to its end and returns its PID.
func inCgroupRun(t *testing.T, cg string, name string, args ...string) int {
	t.Helper()
	cmd := exec.Command(name, args...)
	closeFD := inCgroup(t, cmd, cg)
	defer closeFD()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait() // the blocked ones fail: their exit status is not the test's
	return cmd.Process.Pid
}

// sendUDPScript sends one datagram to 127.0.0.2:9 from python3, after naming
// its thread as its first argument says, if it gives one.
const sendUDPScript = `
import ctypes, socket, sys
if len(sys.argv) > 1:
    ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)  # PR_SET_NAME
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.2", 9))
except OSError:
    pass
`

// TestEventsNameTheProcess checks that the socket hooks' decisions name the
// process that made the call, by PID and command name, and that run's --comm
// shows only that command's.
func TestEventsNameTheProcess(t *testing.T) {
	cg, _ := testCgroup(t)
	p := startCgwall(t, "run", "--cgroup", cg, "--block", "127.0.0.2")
	for _, tc := range []struct {
		name, comm, hook string
		cmd              []string
	}{
		{"curl", "curl", "connect", []string{"curl", "-s", "-m", "5", "http://127.0.0.2:9/"}},
		{"python UDP sender", "python3", "egress", []string{"python3", "-c", sendUDPScript}},
		{"renamed thread", "cgw-renamed", "egress", []string{"python3", "-c", sendUDPScript, "cgw-renamed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pid := inCgroupRun(t, cg, tc.cmd[0], tc.cmd[1:]...)
			want := fmt.Sprintf("pid=%d comm=%s", pid, tc.comm)
			line := p.stdout.waitFor(t, want)
			if !strings.HasPrefix(line, "DST 127.0.0.2, ACTION 0 hook="+tc.hook) {
				t.Errorf("the decision naming %s is %q", want, line)
			}
		})
	}

	t.Run("--comm", func(t *testing.T) {
		other, _ := testCgroup(t)
		q := startCgwall(t, "run", "--cgroup", other, "--block", "127.0.0.2", "--comm", "curl")
		inCgroupRun(t, other, "python3", "-c", sendUDPScript)
		pid := inCgroupRun(t, other, "curl", "-s", "-m", "5", "http://127.0.0.2:9/")
		q.stdout.waitFor(t, fmt.Sprintf("pid=%d comm=curl", pid))
		if all := q.stdout.String(); strings.Contains(all, "comm=python3") {
			t.Errorf("--comm curl printed python3's decisions:\n%s", all)
		}
	})
}

// ownerScript connects a UDP socket to 127.0.0.2:PORT, says its local port,
// then sends once for every line it reads.
const ownerScript = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.2", int(sys.argv[1])))
print(s.getsockname()[1], flush=True)
for _ in sys.stdin:
    try:
        s.send(b"x")
    except OSError:
        pass
    print("sent", flush=True)
`

// owner is an ownerScript process in the cgroup.
type owner struct {
	pid, port int
	stdin     io.WriteCloser
	out       *bufio.Reader
}

func startOwner(t *testing.T, cg string, port int) *owner {
	t.Helper()
	cmd := exec.Command("python3", "-c", ownerScript, fmt.Sprint(port))
	stdin, out := startPiped(t, cmd, cg)
	o := &owner{pid: cmd.Process.Pid, stdin: stdin, out: out}
	if _, err := fmt.Fscan(o.out, &o.port); err != nil {
		t.Fatalf("owner probe: %v", err)
	}
	return o
}

// send makes the owner send once and waits until it has.
func (o *owner) send(t *testing.T) {
	t.Helper()
	io.WriteString(o.stdin, "go\n")
	for {
		line, err := o.out.ReadString('\n')
		if err != nil {
			t.Fatalf("owner probe: %v", err)
		}
		if line == "sent\n" {
			return
		}
	}
}

// TestEgressDropNamesTheSocketsOwner has two processes in the cgroup connect
// a socket each while the address is allowed, then blocks it live: each
// socket's packet, dropped at egress, must name the process that connected
// it, and never the other one.
func TestEgressDropNamesTheSocketsOwner(t *testing.T) {
	cg, _ := testCgroup(t)
	attachPolicy(t, cg, "--block", "127.0.0.99")
	owners := []*owner{startOwner(t, cg, 9), startOwner(t, cg, 9)}
	cgwallOK(t, "block", "--cgroup", cg, "127.0.0.2")
	w := startWatch(t, "watch", "--cgroup", cg)
	for _, o := range owners {
		o.send(t)
		line := w.stdout.waitFor(t, fmt.Sprintf("sport=%d ", o.port))
		if !strings.HasPrefix(line, "DST 127.0.0.2, ACTION 0 hook=egress") {
			t.Errorf("the drop of %d's packet is %q", o.pid, line)
		}
		if want := fmt.Sprintf("pid=%d comm=python3", o.pid); !strings.Contains(line, want) {
			t.Errorf("the drop of the socket that pid %d connected says %q, want %s", o.pid, line, want)
		}
	}
}
