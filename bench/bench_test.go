package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"

	"github.com/cgwall/cgwall/internal/cgroup"
)

// TestMain lets the test binary be the sender and the exec stamp, as the
// harness re-executes itself for both.
func TestMain(m *testing.M) {
	switch {
	case os.Getenv(senderEnv) == "1":
		if err := senderMain(os.Args[1:]); err != nil {
			os.Stderr.WriteString("sender: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	case os.Getenv(stampEnv) == "1":
		stampMain()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// requireHarness stops the test when something the harness needs is missing:
// a skip on a developer's machine, a failure in CI (CI=true).
func requireHarness(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if err := features.HaveProgramType(ebpf.CGroupSKB); err != nil {
		missing = append(missing, "cgroup_skb BPF programs ("+err.Error()+")")
	}
	if _, err := cgroup.Mount(); err != nil {
		missing = append(missing, err.Error())
	}
	for _, cmd := range []string{"ip", "nsenter", "sysctl", "nft", "iptables-nft-restore", "iptables-legacy-restore", "iptables-legacy", "go"} {
		if _, err := exec.LookPath(cmd); err != nil {
			missing = append(missing, cmd+" (apt-get install -y nftables iptables)")
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "the benchmark harness needs " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true and " + msg)
	}
	t.Skip(msg)
}

// TestQuickSmallest runs the harness end to end at its smallest
// configuration: one round, one rule, short windows. It checks that every
// part produces figures and that everything set up is removed again. No
// figure is asserted on.
func TestQuickSmallest(t *testing.T) {
	requireHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	cfg := defaultConfig(true)
	cfg.rounds = 1
	cfg.decisionSizes = []int{1}
	cfg.decisionDsts = 1000
	cfg.decisionRuns = 2000
	cfg.warmRepeat = 10_000
	cfg.e2eSizes = []int{1}
	cfg.patterns = []int{1}
	cfg.logRules = 1
	cfg.warmup = 50 * time.Millisecond
	cfg.duration = 100 * time.Millisecond
	cfg.statsDuration = 50 * time.Millisecond
	cfg.out = t.TempDir()

	var c cleanups
	var log strings.Builder
	err := run(ctx, cfg, &c, &log)
	c.run()
	if err != nil {
		t.Fatalf("harness: %v\n%s", err, log.String())
	}

	b, err := os.ReadFile(filepath.Join(cfg.out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res results
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Decision) != 1 || len(res.Decision[0].Samples) == 0 {
		t.Errorf("no decision-cost samples")
	}
	for _, s := range res.Decision[0].Samples {
		if s.Runs == 0 || s.WarmNs <= 0 {
			t.Errorf("decision cost %s/%d/%s: %d runs, warm %v ns", s.Set, s.Rules, s.Kind, s.Runs, s.WarmNs)
		}
	}
	seen := map[string]bool{}
	for _, s := range res.E2E {
		seen[s.Variant] = true
		if s.PPS <= 0 || s.Wire == 0 {
			t.Errorf("%s: %v packets per second, %d on the wire", s.Variant, s.PPS, s.Wire)
		}
		if s.Variant == vCgwallLog && s.Events+s.Lost == 0 {
			t.Errorf("%s: no events printed and none lost", s.Variant)
		}
	}
	for _, v := range []string{vNone, vFloor, vCgwall, vCgwallLog, vNft, vIpt, vIptLegacy} {
		if !seen[v] {
			t.Errorf("variant %q was not measured", v)
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.out, "pps.png")); err != nil {
		t.Error(err)
	}
	md, err := os.ReadFile(filepath.Join(cfg.out, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Decision cost, cold cache", "Packets per second, end to end", "Control plane", "Logging"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md has no %q section", want)
		}
	}

	// Nothing of the run is left behind.
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if pid, ok := stalePid(e.Name(), "cgwb-"); ok && pid == os.Getpid() {
				t.Errorf("network namespace %s left behind", e.Name())
			}
		}
	}
	mnt, _ := cgroup.Mount()
	if ents, err := os.ReadDir(mnt); err == nil {
		for _, e := range ents {
			if pid, ok := stalePid(e.Name(), "cgwall-bench-"); ok && pid == os.Getpid() {
				t.Errorf("cgroup %s left behind", e.Name())
			}
		}
	}
	t.Logf("\n%s", md)
}
