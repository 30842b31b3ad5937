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
// refuse it with a message that says what to do, and that attach replaces it
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
	for _, args := range [][]string{{"list", "--cgroup", cg}, {"block", "--cgroup", cg, "127.0.0.3"}} {
		_, stderr, code := runCgwall(t, args...)
		if code != 1 || !strings.Contains(stderr, "another layout") || !strings.Contains(stderr, "attach the policy again") {
			t.Errorf("%s on an old layout: exit %d, %q", args[0], code, stderr)
		}
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
