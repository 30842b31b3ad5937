package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/store"
	"github.com/cgwall/cgwall/internal/testutil"
)

// BenchmarkNewCgroup measures what docs/agent.md quotes: the time from the
// mkdir of a cgroup that a file targets to its policy being in force (the
// store's Create returned), one cgroup at a time, 200 per run. It reports
// the median and the 99th percentile.
//
//	go test -run '^$' -bench BenchmarkNewCgroup -benchtime 1x -count 5 ./internal/agent
func BenchmarkNewCgroup(b *testing.B) {
	const cgroups = 200
	parent, rel, a, applied := benchAgent(b)
	var took []time.Duration
	for b.Loop() {
		for i := range cgroups {
			name := fmt.Sprintf("ci-%d-%d", len(took), i)
			start := time.Now()
			if err := os.Mkdir(filepath.Join(parent, name), 0o755); err != nil {
				b.Fatal(err)
			}
			want := rel + "/" + name
			for got := range applied {
				if got == want {
					break
				}
			}
			took = append(took, time.Since(start))
			if err := os.Remove(filepath.Join(parent, name)); err != nil {
				b.Fatal(err)
			}
		}
	}
	_ = a
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op")
}

// benchAgent runs an agent with a store of its own on a folder whose file
// targets the ci-* cgroups of a test cgroup.
func benchAgent(b *testing.B) (parent, rel string, a *Agent, applied <-chan string) {
	testutil.RequireBPF(b)
	cg := testutil.Cgroup(b)
	mnt, err := cgroup.Mount()
	if err != nil {
		b.Fatal(err)
	}
	rel, _ = filepath.Rel(mnt, cg.Path)
	dir := b.TempDir()
	policy := fmt.Sprintf("targets: [{cgroup: %s/ci-*}]\negress: {block: [192.0.2.1]}\n", rel)
	if err := os.WriteFile(filepath.Join(dir, "ci.yaml"), []byte(policy), 0o644); err != nil {
		b.Fatal(err)
	}
	root := filepath.Join(store.BPFFS, fmt.Sprintf("cgwall-bench-%d", os.Getpid()))
	b.Cleanup(func() { os.RemoveAll(root) })
	ch := make(chan string, 16)
	a, err = New(Config{Policies: dir, Mount: mnt, StoreRoot: root, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Applied: func(rel string) { ch <- rel }})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	readyCh := make(chan struct{})
	go func() { done <- a.Run(ctx, func(Ready) { close(readyCh) }) }()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case <-readyCh:
	case err := <-done:
		b.Fatal(err)
	}
	return cg.Path, rel, a, ch
}
