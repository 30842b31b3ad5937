// Package e2e runs the built cgwall binary as a user would, against real
// traffic from real processes placed in temporary cgroups. Traffic goes only to
// loopback or to addresses inside network namespaces the tests create.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// cgwallBin is the binary under test, built once by TestMain.
var cgwallBin string

func TestMain(m *testing.M) {
	// The test binary doubles as the probe that runs inside cgroups.
	if os.Getenv(probeEnv) != "" {
		os.Exit(probeMain(os.Args[1:]))
	}
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "cgwall-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// World-readable, so that the test of a missing privilege can run it as nobody.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cgwallBin = filepath.Join(dir, "cgwall")
	// Built as README.md builds it: static.
	build := exec.Command("go", "build", "-o", cgwallBin, "../cmd/cgwall")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "build cgwall: %v\n", err)
		return 1
	}
	return m.Run()
}
