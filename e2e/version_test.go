package e2e

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestVersion checks that --version describes the binary as the Go
// toolchain recorded it: its module version, Go version and, where the build
// had them, the commit it was built from.
func TestVersion(t *testing.T) {
	stdout, stderr, code := runCgwall(t, "--version")
	if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "cgwall ") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	recorded, err := exec.Command("go", "version", "-m", cgwallBin).Output()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"built with " + regexp.MustCompile(`^\S+: (go\S+)`).FindStringSubmatch(string(recorded))[1]}
	if m := regexp.MustCompile(`\tbuild\tvcs.revision=(\S+)`).FindStringSubmatch(string(recorded)); m != nil {
		want = append(want, "commit "+m[1])
	}
	for _, w := range want {
		if !strings.Contains(stdout, w) {
			t.Errorf("cgwall --version printed %q: no %q", stdout, w)
		}
	}
}
