package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cgwall/cgwall/internal/cgroup"
)

// dockerBridge is the subnet that test.sh gives dockerd's bridge
// (dockerd --bip 198.18.100.1/24): a benchmarking range, so that traffic
// from test containers goes nowhere but the host.
const dockerBridge = "198.18.100.0/24"

// passAddr is a second host address on the bridge, outside what docker
// hands to containers, which the tests' policies leave alone.
const passAddr = "198.18.100.254"

// TestContainerByNameAndID runs a real container under dockerd, filters it by
// name and by ID prefix, and proves with traffic from inside it, from busybox
// nc to listeners on the host's bridge addresses, that the block holds, that
// another address passes, and that detach lifts the block.
func TestContainerByNameAndID(t *testing.T) {
	testCgroup(t) // root and cgroup BPF, or skip (fail under CI=true)
	gateway, bridge := requireDocker(t)
	image := importBusybox(t)
	name := "cgw-test-" + randomHex(t)
	id := runContainer(t, image, name)
	cg := containerCgroup(t, name, id)

	// The second address, for traffic the policy does not block.
	ip(t, "addr", "add", passAddr+"/32", "dev", bridge)
	t.Cleanup(func() { exec.Command("ip", "addr", "del", passAddr+"/32", "dev", bridge).Run() })
	blocked, passing := listen(t, gateway), listen(t, passAddr)

	// Before any policy both are reached: what fails later, cgwall failed.
	mustReach(t, name, blocked, "before")
	mustReach(t, name, passing, "before")

	for _, tc := range []struct{ name, attachBy, detachBy string }{
		{"by name", name, id[:12]},
		{"by ID prefix in upper case", strings.ToUpper(id[:12]), name},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := cgwallOK(t, "attach", "--container", tc.attachBy, "--block", gateway)
			t.Cleanup(func() { runCgwall(t, "detach", "--cgroup", cg) })
			if want := "attached policy to " + cg + " "; !strings.HasPrefix(out, want) {
				t.Fatalf("attach --container %s said %q; want it to begin %q", tc.attachBy, out, want)
			}
			mustNotReach(t, name, blocked, "blocked "+tc.name)
			mustReach(t, name, passing, "passes "+tc.name)
			if l := list(t, "--container", tc.attachBy); len(l) != 1 || l[0].Cgroup != cg || len(l[0].Rules) != 1 || l[0].Rules[0].Prefix != gateway+"/32" {
				t.Errorf("list --container %s: %+v", tc.attachBy, l)
			}
			if out := cgwallOK(t, "detach", "--container", tc.detachBy); out != "detached from "+cg+"\n" {
				t.Errorf("detach --container %s said %q", tc.detachBy, out)
			}
			// The next to arrive is this one: nothing of the blocked try did.
			mustReach(t, name, blocked, "after detach by "+tc.detachBy)
		})
	}

	t.Run("errors", func(t *testing.T) {
		_, stderr, code := runCgwall(t, "list", "--container", name+"-gone")
		checkOneLineError(t, stderr, code, 2, fmt.Sprintf("--container: no container %s-gone (/run/docker.sock has no container of that name;", name))

		// A stopped container has no cgroup: it says so.
		docker(t, "kill", name)
		docker(t, "wait", name)
		_, stderr, code = runCgwall(t, "list", "--container", name)
		checkOneLineError(t, stderr, code, 2, fmt.Sprintf("--container: container %s (%s, on /run/docker.sock) is not running", name, id[:12]))
	})
}

// requireDocker checks that dockerd answers and that its bridge is on
// dockerBridge, and returns the bridge's host address and interface. Where
// either is missing it skips, and fails under CI=true, where test.sh
// starts dockerd.
func requireDocker(t *testing.T) (gateway, bridge string) {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		need(t, "docker is not installed (test.sh installs docker.io)")
	}
	if out, err := dockerOut("version", "--format", "{{.Server.Version}}"); err != nil {
		need(t, "dockerd does not answer on /run/docker.sock ("+out+"): start it as test.sh does, dockerd --bip 198.18.100.1/24")
	}
	out, err := dockerOut("network", "inspect", "bridge", "--format",
		`{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}} {{index .Options "com.docker.network.bridge.name"}}`)
	if err != nil {
		t.Fatalf("docker network inspect bridge: %v: %s", err, out)
	}
	var subnet string
	if _, err := fmt.Sscan(out, &subnet, &gateway, &bridge); err != nil || subnet != dockerBridge {
		need(t, fmt.Sprintf("dockerd's bridge is %q, not %s: the tests send only to benchmarking ranges; restart dockerd with --bip 198.18.100.1/24", out, dockerBridge))
	}
	return gateway, bridge
}

// need skips a test for a missing piece, or fails it under CI=true.
func need(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and %s", reason)
	}
	t.Skip(reason)
}

// importBusybox imports an image made of busybox-static's /bin/busybox with
// sh, nc and sleep linked to it: offline, no registry. It is removed at the
// end of the test.
func importBusybox(t *testing.T) string {
	t.Helper()
	const busybox = "/bin/busybox"
	f, err := elf.Open(busybox)
	if err != nil {
		need(t, fmt.Sprintf("no busybox to build an image from (%v): install busybox-static", err))
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			f.Close()
			need(t, busybox+" is dynamically linked and cannot run in an empty image: install busybox-static")
		}
	}
	f.Close()
	bin, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	entries := []*tar.Header{
		{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))},
	}
	for _, applet := range []string{"sh", "nc", "sleep"} {
		entries = append(entries, &tar.Header{Name: "bin/" + applet, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777})
	}
	for _, h := range entries {
		h.ModTime = time.Now()
		if err := w.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := w.Write(bin); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	image := "cgw-test-" + randomHex(t) + ":busybox"
	t.Cleanup(func() { dockerOut("rmi", "--force", image) })
	cmd := dockerCmd(context.Background(), "import", "-", image)
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker import: %v: %s", err, out)
	}
	return image
}

// runContainer starts `sleep 1000` in a container on the bridge network and
// returns its ID. It is removed at the end of the test.
func runContainer(t *testing.T, image, name string) string {
	t.Helper()
	t.Cleanup(func() { dockerOut("rm", "--force", name) })
	out := docker(t, "run", "--detach", "--name", name, "--network", "bridge", image, "sleep", "1000")
	// Warnings come first on the same stream (with ip_forward 0, which
	// test.sh's dockerd leaves alone: "IPv4 forwarding is disabled"); the
	// ID is the last line.
	id := out[strings.LastIndexByte(out, '\n')+1:]
	if len(id) != 64 {
		t.Fatalf("docker run printed %q, not a container ID", out)
	}
	addr := docker(t, "inspect", "--format", "{{.NetworkSettings.IPAddress}}", name)
	if _, subnet, _ := net.ParseCIDR(dockerBridge); !subnet.Contains(net.ParseIP(addr)) {
		t.Fatalf("container %s has address %q, outside %s", name, addr, dockerBridge)
	}
	return id
}

// containerCgroup finds the container's cgroup from its first process's
// /proc/PID/cgroup, apart from cgwall's lookup, and checks that it is the
// one named for the container's ID.
func containerCgroup(t *testing.T, name, id string) string {
	t.Helper()
	pid := docker(t, "inspect", "--format", "{{.State.Pid}}", name)
	data, err := os.ReadFile("/proc/" + pid + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	mnt, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			cg := filepath.Join(mnt, rest)
			if !strings.Contains(filepath.Base(cg), id) {
				t.Fatalf("container %s is in cgroup %s, not one named for its ID %s", name, cg, id)
			}
			return cg
		}
	}
	t.Fatalf("container %s's process %s is in no cgroup v2: %q", name, pid, data)
	return ""
}

// listener accepts connections on a host address and hands on the line
// each one sends.
type listener struct {
	addr, port string
	got        chan string
}

func listen(t *testing.T, addr string) *listener {
	t.Helper()
	ln, err := net.Listen("tcp4", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	l := &listener{addr: addr, port: port, got: make(chan string, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(waitTimeout))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close() // which ends nc
			l.got <- strings.TrimSuffix(line, "\n")
		}
	}()
	return l
}

// mustReach sends msg from inside the container to l with busybox nc and
// checks that it is the next thing l receives.
func mustReach(t *testing.T, container string, l *listener, msg string) {
	t.Helper()
	if out, err := nc(container, l, msg); err != nil {
		t.Fatalf("nc %s %s from the container: %v: %s", l.addr, l.port, err, out)
	}
	select {
	case got := <-l.got:
		if got != msg {
			t.Fatalf("%s received %q; want %q next", l.addr, got, msg)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("%s received nothing of %q after %v", l.addr, msg, waitTimeout)
	}
}

// mustNotReach checks that nc's connect fails with EPERM, cgwall's connect
// hook refusing it before a packet leaves. That nothing arrived the next
// mustReach on l proves: its message must be the next one l receives.
func mustNotReach(t *testing.T, container string, l *listener, msg string) {
	t.Helper()
	out, err := nc(container, l, msg)
	if err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Fatalf("nc %s %s from the container: %v: %q; want connect to fail with EPERM", l.addr, l.port, err, out)
	}
}

func nc(container string, l *listener, msg string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := dockerCmd(ctx, "exec", "--interactive", container, "nc", l.addr, l.port)
	cmd.Stdin = strings.NewReader(msg + "\n")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// docker runs the docker CLI and returns its output, trimmed; it fails the
// test if docker fails.
func docker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := dockerOut(args...)
	if err != nil {
		t.Fatalf("docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out
}

func dockerOut(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := dockerCmd(ctx, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// dockerCmd is the docker CLI talking to the daemon on /run/docker.sock,
// the socket that cgwall asks, whatever DOCKER_HOST or a docker context say.
func dockerCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST=unix:///run/docker.sock")
	return cmd
}

func randomHex(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
