package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// results is everything a run measured: results.json, and all that the
// report is rendered from.
type results struct {
	Started       time.Time        `json:"started"`
	Seconds       float64          `json:"seconds"`
	Rounds        int              `json:"rounds"`
	Quick         bool             `json:"quick"`
	Machine       string           `json:"machine"`
	Commit        string           `json:"commit"`
	Settings      settings         `json:"settings"`
	Decision      []*decisionRound `json:"decision,omitempty"`
	E2E           []e2eSample      `json:"e2e,omitempty"`
	LoadBreakdown []loadBreakdown  `json:"load_breakdown,omitempty"`
	CgwallInput   string           `json:"cgwall_input,omitempty"`
	Exec          execResult       `json:"exec"`
}

// settings are what the report says about how the figures were taken.
type settings struct {
	DecisionSizes []int  `json:"decision_sizes"`
	DecisionDsts  int    `json:"decision_dsts"`
	DecisionRuns  int    `json:"decision_runs"`
	E2ESizes      []int  `json:"e2e_sizes"`
	IptablesMax   int    `json:"iptables_max"`
	Patterns      []int  `json:"patterns"`
	Payload       int    `json:"payload"`
	Batch         int    `json:"batch"`
	SenderCPU     int    `json:"sender_cpu"`
	Duration      string `json:"duration"`
	Warmup        string `json:"warmup"`
	StatsDuration string `json:"stats_duration"`
	LogRules      int    `json:"log_rules"`
}

func (cfg *config) settings() settings {
	return settings{
		DecisionSizes: cfg.decisionSizes, DecisionDsts: cfg.decisionDsts, DecisionRuns: cfg.decisionRuns,
		E2ESizes: cfg.e2eSizes, IptablesMax: cfg.iptablesMax, Patterns: cfg.patterns,
		Payload: payloadBytes, Batch: cfg.batch, SenderCPU: cfg.senderCPU, Duration: cfg.duration.String(),
		Warmup: cfg.warmup.String(), StatsDuration: cfg.statsDuration.String(), LogRules: cfg.logRules,
	}
}

func machine() string {
	var parts []string
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		parts = append(parts, "Linux "+strings.TrimSpace(string(b)))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				parts = append(parts, strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":")))
				break
			}
		}
	}
	parts = append(parts, fmt.Sprintf("%d CPUs", runtime.NumCPU()))
	if m, err := meminfo(); err == nil {
		parts = append(parts, fmt.Sprintf("%.0f GiB", float64(m["MemTotal"])/(1<<20)))
	}
	parts = append(parts, runtime.Version())
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/cilium/ebpf" {
				parts = append(parts, "cilium/ebpf "+d.Version)
			}
		}
	}
	return strings.Join(parts, ", ")
}

func commit(repo string) string {
	out, err := exec.Command("git", "-C", repo, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown (no git)"
	}
	c := strings.TrimSpace(string(out))
	st, _ := exec.Command("git", "-C", repo, "status", "--porcelain", "--", "bpf", "internal", "cmd").Output()
	if len(strings.TrimSpace(string(st))) > 0 {
		c += " with uncommitted changes in bpf/, internal/ or cmd/"
	}
	return c
}
