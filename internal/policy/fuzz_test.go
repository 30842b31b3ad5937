package policy

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The seed corpora, in testdata/fuzz/, are the examples of docs/policy.md,
// of these tests and of the e2e tests.

// FuzzParsePrefix checks that what ParsePrefix accepts is canonical (masked,
// no zone, IPv4-mapped prefixes unmapped) and parses back to itself, and that
// what it refuses it names on one line.
func FuzzParsePrefix(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePrefix(s)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Errorf("ParsePrefix(%q): the error %q is not one line", s, err)
			}
			return
		}
		a := p.Addr()
		if !p.IsValid() || p != p.Masked() || a.Zone() != "" || (a.Is4In6() && p.Bits() >= 96) {
			t.Fatalf("ParsePrefix(%q) = %s, not canonical", s, p)
		}
		if q, err := ParsePrefix(p.String()); err != nil || q != p {
			t.Fatalf("ParsePrefix(%q) = %s, which parses back as %s, %v", s, p, q, err)
		}
	})
}

// FuzzLoadFile checks that LoadFile returns a policy of canonical, distinct
// rules or a *FileError whose every problem is at a line and on one line. The
// folder of the file holds two list files that policies may name; names that
// could leave the folder are skipped, so that no input reads the machine's
// files (or blocks on /dev/stdin).
func FuzzLoadFile(f *testing.F) {
	dir := f.TempDir()
	for name, text := range map[string]string{
		"good.txt": "# a blocklist\n192.0.2.1\n198.51.100.0/24  # a comment\n2001:db8::/32\n",
		"bad.txt":  "192.0.2.1\n192.0.2.300\nnot-an-address\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			f.Fatal(err)
		}
	}
	path := filepath.Join(dir, "policy.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if leavesFolder(data) {
			t.Skip("names a file outside the test's folder")
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		p, _, err := LoadFile(path)
		if err != nil {
			checkFileError(t, err)
			return
		}
		checkRules(t, p)
	})
}

// leavesFolder says whether any scalar of a YAML document could name a file
// outside the folder of the policy file.
func leavesFolder(data []byte) bool {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil {
		return false // LoadFile reads no list of a file it cannot parse
	}
	var walk func(n *yaml.Node) bool
	walk = func(n *yaml.Node) bool {
		if n.Kind == yaml.ScalarNode && (filepath.IsAbs(n.Value) || strings.Contains(n.Value, "..")) {
			return true
		}
		return slices.ContainsFunc(n.Content, walk)
	}
	return walk(&doc)
}

// FuzzAddList checks AddList against adding the lines of its list one at a
// time with Add, on a policy that has rules already: the same rules, IDs and
// problems at the same lines.
func FuzzAddList(f *testing.F) {
	path := filepath.Join(f.TempDir(), "list")
	f.Fuzz(func(t *testing.T, data []byte, ingress, allow bool) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		d, a := Egress, Block
		if ingress {
			d = Ingress
		}
		if allow {
			a = Allow
		}
		got, want := New(), New()
		for _, p := range []*Policy{got, want} {
			p.Add(Egress, Block, "192.0.2.0/24")
			p.Add(Ingress, Allow, "2001:db8::1")
		}
		err := got.AddList(path, d, a)
		if errors.Is(err, bufio.ErrTooLong) {
			return // a line of more than 64 KiB: not a list, and Add has no such limit
		}
		var gotProblems []string
		var fe *FileError
		if errors.As(err, &fe) {
			checkFileError(t, err)
			for _, p := range fe.Problems {
				gotProblems = append(gotProblems, fmt.Sprintf("%d: %s", p.Line, p.Msg))
			}
		} else if err != nil {
			t.Fatal(err)
		}
		if wantProblems := addLines(want, string(data), d, a); !slices.Equal(gotProblems, wantProblems) {
			t.Fatalf("problems %q\nwant     %q", gotProblems, wantProblems)
		}
		if !slices.Equal(got.Rules, want.Rules) || got.NextID() != want.NextID() {
			t.Fatalf("rules %v, next ID %d\nwant  %v, %d", got.Rules, got.NextID(), want.Rules, want.NextID())
		}
		checkRules(t, got)
	})
}

// checkFileError checks that err is a *FileError whose every problem is at a
// line of the file and on one line, as is its Error.
func checkFileError(t *testing.T, err error) {
	t.Helper()
	var fe *FileError
	if !errors.As(err, &fe) || len(fe.Problems) == 0 {
		t.Fatalf("the error %q is not a *FileError with problems", err)
	}
	if strings.ContainsAny(err.Error(), "\r\n") {
		t.Errorf("the error %q is not one line", err)
	}
	for i, p := range fe.Problems {
		if p.Line < 1 || strings.ContainsAny(p.Msg, "\r\n") {
			t.Errorf("problem %d, %q at line %d: not one line at a line of the file", i, p.Msg, p.Line)
		}
	}
}

// checkRules checks that every rule is canonical, found by Lookup and by
// Rule, and that no two have the same direction and prefix or the same ID.
func checkRules(t *testing.T, p *Policy) {
	t.Helper()
	seen := map[ruleKey]bool{}
	ids := map[uint32]bool{}
	for _, r := range p.Rules {
		k := keyOf(r.Dir, r.Match())
		if r.Prefix != r.Prefix.Masked() || seen[k] || ids[r.ID] || r.ID == 0 {
			t.Fatalf("rule %v (id %d) is not canonical, or not the only one of its prefix or ID", r, r.ID)
		}
		seen[k], ids[r.ID] = true, true
		if got, ok := p.Lookup(r.Dir, r.Match()); !ok || got != r {
			t.Fatalf("Lookup(%s) = %v, %v; want %v", r.Prefix, got, ok, r)
		}
		if got, ok := p.Rule(r.ID); !ok || got != r {
			t.Fatalf("Rule(%d) = %v, %v; want %v", r.ID, got, ok, r)
		}
	}
}
