package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cgwall/cgwall/internal/ruleset"
)

// BenchmarkAddList reads a list of a million prefixes, the public-blocklist mix
// that the bench harness loads (85% /32, 10% /24, 4% /16, 1% /8). A run of
// go test has warm memory after the first round; for the figure of a fresh
// cgwall process, run it with -benchtime=1x in separate processes.
func BenchmarkAddList(b *testing.B) {
	var text strings.Builder
	for _, p := range ruleset.Mixed4(1_000_000).Prefixes {
		text.WriteString(p.String())
		text.WriteByte('\n')
	}
	path := filepath.Join(b.TempDir(), "1m.list")
	if err := os.WriteFile(path, []byte(text.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		p := New()
		if err := p.AddList(path, Egress, Block); err != nil {
			b.Fatal(err)
		}
		if len(p.Rules) != 1_000_000 {
			b.Fatalf("%d rules", len(p.Rules))
		}
	}
}
