package main

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/testutil"
)

// TestMain lets the test binary be the sender and the exec stamp, as the
// harness re-executes itself for both.
func TestMain(m *testing.M) {
	if code, ok := child(); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// TestQuickSmallest runs the harness end to end at its smallest
// configuration: one round, one rule, short windows. It checks that every
// part produces figures and that everything set up is removed again. No
// figure is asserted on. It skips without root or the tools the harness
// needs, and fails instead when CI=true.
func TestQuickSmallest(t *testing.T) {
	cfg := defaultConfig(true)
	testutil.RequireBPF(t)
	if err := prerequisites(cfg); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and %v", err)
		}
		t.Skip(err)
	}
	cfg.rounds, cfg.DecisionSizes, cfg.DecisionDsts, cfg.DecisionRuns, cfg.warmRepeat = 1, []int{1}, 1000, 2000, 10_000
	cfg.E2ESizes, cfg.PortsSizes, cfg.IPv6Sizes, cfg.Patterns, cfg.LogRules = []int{1}, []int{100}, []int{1}, []int{1}, 1
	cfg.Interleaved = []int{1}
	cfg.Warmup, cfg.Duration, cfg.StatsDuration = ms(50), ms(100), ms(50)
	cfg.DNSLookups, cfg.DNSDuration, cfg.LearnedAddrs = 200, ms(200), 1000
	cfg.out = t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var c cleanups
	var log strings.Builder
	err := run(ctx, cfg, &c, &log)
	c.run()
	if err != nil {
		t.Fatalf("harness: %v\n%s", err, log.String())
	}
	checkResults(t, cfg.out)
	checkNothingLeft(t)
}

func checkResults(t *testing.T, out string) {
	b, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res results
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Decision) != 1 || len(res.Decision[0].Samples) == 0 {
		t.Fatalf("no decision-cost samples")
	}
	for _, s := range res.Decision[0].Samples {
		if s.Runs == 0 || s.WarmNs <= 0 {
			t.Errorf("decision cost %s/%d/%s: %d runs, warm %v ns", s.Set, s.Rules, s.Kind, s.Runs, s.WarmNs)
		}
	}
	if lines := res.Decision[0].Lines; len(lines) != len(lineSizes) || slices.ContainsFunc(lines, func(l lineSample) bool { return math.IsNaN(l.MeanNs) }) {
		t.Errorf("one cold line: %+v, want a figure for each of %v bytes", lines, lineSizes)
	}
	seen, interleaved := map[string]bool{}, map[string]bool{}
	for _, s := range res.E2E {
		seen[s.Variant+s.Set] = true
		interleaved[s.Variant+s.Set] = interleaved[s.Variant+s.Set] || s.Interleaved
		if s.PPS <= 0 || s.Wire == 0 {
			t.Errorf("%s: %v packets per second, %d on the wire", s.Variant, s.PPS, s.Wire)
		}
		if s.Variant == vCgwallLog && s.Events+s.Lost == 0 {
			t.Errorf("%s: no events printed and none lost", s.Variant)
		}
	}
	for _, v := range append(e2eVariants, vNone, vFloor, vCgwallLog, vCgwall+"ports", vNft+"ports", vNone+"ports", vCgwall+setIPv6, vNft+setIPv6, vNone+setIPv6, vFloor+setIPv6) {
		if !seen[v] {
			t.Errorf("variant %q was not measured", v)
		}
	}
	for _, set := range []string{"", setIPv6} {
		for _, v := range interleavedVariants {
			if !interleaved[v+set] {
				t.Errorf("variant %q had no interleaved run with the %q set", v, set)
			}
		}
	}
	checkDNS(t, &res)
	if _, err := os.Stat(filepath.Join(out, "pps.png")); err != nil {
		t.Error(err)
	}
	md, err := os.ReadFile(filepath.Join(out, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Decision cost, cold cache", "Packets per second, end to end", "Packets per second with IPv6", "Control plane", "Logging", "`cgwall exec` latency", "Name rules", "One cold line"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md has no %q section", want)
		}
	}
}

// checkDNS checks that both variants' lookups were measured, and the
// decision cost with learned addresses, unless the cgwall measured has no
// name rules (the report says so).
func checkDNS(t *testing.T, res *results) {
	if len(res.Learned) != 1 || len(res.Learned[0].Samples) == 0 {
		t.Errorf("no samples of the decision cost with learned addresses")
	}
	if res.DNSNote != "" {
		t.Logf("dns: lookups not measured: %s", res.DNSNote)
		return
	}
	seen := map[string]bool{}
	for _, s := range res.DNS {
		seen[s.Variant+" "+s.Kind] = true
		if s.Answered == 0 || s.P50Us <= 0 {
			t.Errorf("dns %s %s: %d answered, p50 %v µs", s.Variant, s.Kind, s.Answered, s.P50Us)
		}
	}
	for _, v := range []string{vDirect, vCgwall} {
		for _, k := range []string{dnsLatency, dnsThroughput} {
			if !seen[v+" "+k] {
				t.Errorf("dns %s %s was not measured", v, k)
			}
		}
	}
}

// checkNothingLeft looks for the namespaces and cgroup of this run.
func checkNothingLeft(t *testing.T) {
	mnt, _ := cgroup.Mount()
	for dir, prefix := range map[string]string{"/run/netns": "cgwb-", mnt: "cgwall-bench-"} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if pid, ok := stalePid(e.Name(), prefix); ok && pid == os.Getpid() {
				t.Errorf("%s left behind", filepath.Join(dir, e.Name()))
			}
		}
	}
}
