package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
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
	DNS           []dnsSample      `json:"dns,omitempty"`
	DNSNote       string           `json:"dns_note,omitempty"` // why the lookups were not measured
	// Baseline is an earlier run's results (-baseline) that address-only
	// policies' figures are held to: the tree before a change.
	Baseline *results `json:"baseline,omitempty"`
	// Learned is the cold decision cost with learned addresses, in rounds
	// of its own (learned.go).
	Learned []*decisionRound `json:"learned,omitempty"`
}

// settings are how the figures were taken, as the report says.
type settings struct {
	DecisionSizes []int    `json:"decision_sizes"`
	DecisionDsts  int      `json:"decision_dsts"` // distinct destinations per kind
	DecisionRuns  int      `json:"decision_runs"` // BPF_PROG_TEST_RUN calls per cell per round
	E2ESizes      []int    `json:"e2e_sizes"`
	PortsSizes    []int    `json:"ports_sizes,omitempty"`       // end to end, of the ports set
	IPv6Sizes     []int    `json:"ipv6_sizes,omitempty"`        // end to end, of the ipv6 set with IPv6 traffic
	Interleaved   []int    `json:"interleaved_sizes,omitempty"` // of ipv4-mixed and ipv6, the sizes with interleaved runs too (interleave.go)
	IptablesMax   int      `json:"iptables_max"`
	Patterns      []int    `json:"patterns"` // distinct destinations of each traffic pattern
	Payload       int      `json:"payload"`
	Batch         int      `json:"batch"`
	SenderCPU     int      `json:"sender_cpu"`
	Duration      duration `json:"duration"`
	Warmup        duration `json:"warmup"`
	StatsDuration duration `json:"stats_duration"` // the window of the BPF statistics of cgwall's programs
	LogRules      int      `json:"log_rules"`
	DNSLookups    int      `json:"dns_lookups,omitempty"` // one after another, each name once
	DNSClients    int      `json:"dns_clients,omitempty"` // at once, for the lookups per second
	DNSDuration   duration `json:"dns_duration,omitzero"`
	LearnedAddrs  int      `json:"learned_addresses,omitempty"` // the decision cost with learned addresses
}

// duration is a time.Duration that results.json spells as "250ms".
type duration struct{ time.Duration }

func ms(n int) duration { return duration{time.Duration(n) * time.Millisecond} }

func (d duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

func (d *duration) UnmarshalText(b []byte) (err error) {
	d.Duration, err = time.ParseDuration(string(b))
	return err
}

// machine is the kernel, CPU, memory and toolchain the figures were taken on.
func machine() string {
	osr, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	parts := []string{"Linux " + strings.TrimSpace(string(osr))}
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.Lines(string(cpuinfo)) {
		if k, v, _ := strings.Cut(line, ":"); strings.TrimSpace(k) == "model name" {
			parts = append(parts, strings.TrimSpace(v))
			break
		}
	}
	parts = append(parts, fmt.Sprintf("%d CPUs", runtime.NumCPU()), fmt.Sprintf("%.0f GiB", float64(meminfo()["MemTotal"])/(1<<20)), runtime.Version())
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
	if st, _ := exec.Command("git", "-C", repo, "status", "--porcelain", "--", "bpf", "internal", "cmd").Output(); len(st) > 0 {
		c += " with uncommitted changes in bpf/, internal/ or cmd/"
	}
	return c
}

// The outputs of a run: results.json (every sample), results.md (the
// report) and pps.png (the chart) in the output directory, and with -docs
// the same report and chart in docs/.

// publish writes the report of r to cfg.out, and with -docs into docs/.
func publish(cfg *config, r *results, log io.Writer) error {
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	ix := newIndex(r)
	md, err := ix.markdown()
	if err != nil {
		return err
	}
	files := map[string][]byte{"results.json": js, "results.md": []byte(md)}
	if len(ix.Sizes) > 0 { // something was measured end to end
		if files["pps.png"], err = ix.chart(); err != nil {
			return err
		}
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(cfg.out, name), b, 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(log, "\n%s\nresults in %s\n", md, cfg.out)
	if !cfg.docs {
		return nil
	}
	return writeDocs(cfg.repo, md, files["pps.png"], log)
}

// rerender writes the report of an earlier run again, from its JSON.
func rerender(cfg *config, path string, log io.Writer) error {
	r, err := readResults(path)
	if err != nil {
		return err
	}
	if cfg.baseline != "" {
		if r.Baseline, err = readResults(cfg.baseline); err != nil {
			return err
		}
		r.Baseline.Baseline = nil
	}
	if cfg.repo, err = repoRoot(); err != nil {
		return err
	}
	if cfg.out == "" {
		cfg.out = filepath.Dir(path)
	}
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return err
	}
	return publish(cfg, r, log)
}

// readResults reads a run's results.json.
func readResults(path string) (*results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r results
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

const (
	docsBegin = "<!-- bench:begin (generated by go run ./bench -docs; edits between these markers are overwritten) -->"
	docsEnd   = "<!-- bench:end -->"
)

// writeDocs puts the report between the markers of docs/performance.md and
// the chart in docs/img/bench-pps.png.
func writeDocs(repo, md string, png []byte, log io.Writer) error {
	doc := filepath.Join(repo, "docs", "performance.md")
	old, err := os.ReadFile(doc)
	if err != nil {
		return err
	}
	updated, err := splice(string(old), md)
	if err != nil {
		return fmt.Errorf("%s: %w", doc, err)
	}
	if err := os.WriteFile(doc, []byte(updated), 0o644); err != nil {
		return err
	}
	if png != nil {
		if err := os.WriteFile(filepath.Join(repo, "docs", "img", "bench-pps.png"), png, 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(log, "wrote %s and docs/img/bench-pps.png\n", doc)
	return nil
}

// splice replaces what doc has between the markers with md.
func splice(doc, md string) (string, error) {
	i := strings.Index(doc, docsBegin)
	j := strings.Index(doc, docsEnd)
	if i < 0 || j < i {
		return "", fmt.Errorf("no %q … %q markers to write between", docsBegin, docsEnd)
	}
	return doc[:i] + docsBegin + "\n\n" + md + doc[j:], nil
}
