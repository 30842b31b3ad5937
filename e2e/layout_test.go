package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/cgwall/cgwall/internal/cgroup"
)

// TestOldLayoutIsReplacedWithoutAGap makes a policy folder of the layout that
// cgwall made before layouts had versions, checks that commands that read it
// refuse it with a message that says what to do (list shows it with that
// message), and that attach replaces it
// while a process in the cgroup sends without pause to an address both
// policies block: exactly none may get through.
func TestOldLayoutIsReplacedWithoutAGap(t *testing.T) {
	cg, _ := testCgroup(t)
	port, leaks := listenLeaks(t)
	flood := startFlood(t, cg, "127.0.0.2", port) // connects before any policy
	attachPolicy(t, cg, "--block", "127.0.0.2")
	dir, err := cgroup.Resolve(cg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(fmt.Sprintf("/sys/fs/bpf/cgwall/%d/layout", dir.ID)); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runCgwall(t, "block", "--cgroup", cg, "127.0.0.3")
	if code != 1 || !strings.Contains(stderr, "another layout") || !strings.Contains(stderr, "attach the policy again") {
		t.Errorf("block on an old layout: exit %d, %q", code, stderr)
	}
	// list shows it, and what to do, rather than fail on every policy.
	if out := cgwallOK(t, "list"); !strings.Contains(out, cg) || !strings.Contains(out, "not shown: ") || !strings.Contains(out, "pinned by a cgwall of another layout") ||
		!strings.Contains(out, "attach the policy again") {
		t.Errorf("list with a policy of an old layout:\n%s", out)
	}
	if l := list(t, "--cgroup", cg); len(l) != 1 || !strings.Contains(l[0].OtherLayout, "another layout") {
		t.Errorf("list -o json of a policy of an old layout: %+v", l)
	}

	flood.start()
	out := cgwallOK(t, "attach", "--cgroup", cg, "--block", "127.0.0.2", "--block", "127.0.0.10")
	res := flood.stop(t)
	if leaked := leaks(); leaked != 0 || res.Sent != 0 {
		t.Fatalf("%d packets to the blocked address got through (%d sends succeeded) while the old layout was replaced", leaked, res.Sent)
	}
	if res.EPERM == 0 {
		t.Fatalf("the sender barely ran: %+v", res)
	}
	if !strings.Contains(out, "rebuilt from an older layout") {
		t.Errorf("attach said %q", out)
	}
	if l := list(t, "--cgroup", cg); len(l) != 1 || len(l[0].Rules) != 2 || !l[0].Live {
		t.Fatalf("list after the rebuild: %+v", l)
	}
	if n := attachedCount(t, cg); n != 1 {
		t.Fatalf("%d egress and ingress programs attached after the rebuild, want one policy's egress program", n)
	}
	cgwallOK(t, "detach", "--cgroup", cg)
}

// TestHostileBPFFS mounts a world-writable bpffs in a private mount namespace,
// as some hosts have it, lets an unprivileged user make /sys/fs/bpf/cgwall
// first, and checks that root's commands refuse it, saying what to check,
// and attach nothing: before, attach pinned its policy where that user could
// hide it from list and detach.
func TestHostileBPFFS(t *testing.T) {
	cg, _ := testCgroup(t)
	for _, tc := range []struct{ name, make string }{
		{"a folder of another user", `setpriv --reuid=65534 --regid=65534 --clear-groups mkdir /sys/fs/bpf/cgwall`},
		{"a folder of root's, mode 0777", `mkdir -m 0777 /sys/fs/bpf/cgwall`},
		{"a symlink", `setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'mkdir /sys/fs/bpf/decoy && ln -s decoy /sys/fs/bpf/cgwall'`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stderr, code := inMountNamespace(t, `
				while grep -q ' /sys/fs/bpf ' /proc/self/mountinfo; do umount -l /sys/fs/bpf; done
				mount -t bpf -o mode=1777 bpf /sys/fs/bpf
				`+tc.make+`
				exec "$CGWALL" attach --cgroup `+cg+` --block 127.0.0.2`)
			checkOneLineError(t, stderr, code, 1, "refusing to use /sys/fs/bpf/cgwall")
			if !strings.Contains(stderr, "cgwall did not make it: check who did, then remove it") {
				t.Errorf("the refusal does not say what to do: %q", stderr)
			}
			if n := attachedCount(t, cg); n != 0 {
				t.Errorf("%d programs attached through a store folder cgwall did not make", n)
			}
		})
	}
}
