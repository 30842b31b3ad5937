package policy

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
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
// what it refuses it names on one line. It checks ParseRule on the same
// input: every rule it reads is canonical and its String reads back as that
// rule alone, an address is a rule of every port, and what it refuses it
// names on one line.
func FuzzParsePrefix(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		fuzzParseRule(t, s)
		p, err := ParsePrefix(s)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Errorf("ParsePrefix(%q): the error %q is not one line", s, err)
			}
			return
		}
		checkPrefix(t, p)
		if q, err := ParsePrefix(p.String()); err != nil || q != p {
			t.Fatalf("ParsePrefix(%q) = %s, which parses back as %s, %v", s, p, q, err)
		}
		if ms, err := ParseRule(s); err != nil || !slices.Equal(ms, []Match{{Prefix: p}}) {
			t.Fatalf("ParsePrefix(%q) = %s, but ParseRule gives %v, %v", s, p, ms, err)
		}
	})
}

func fuzzParseRule(t *testing.T, s string) {
	ms, err := ParseRule(s)
	if err != nil {
		if strings.ContainsAny(err.Error(), "\r\n") {
			t.Errorf("ParseRule(%q): the error %q is not one line", s, err)
		}
		return
	}
	if len(ms) == 0 {
		t.Fatalf("ParseRule(%q) accepted it as no rule", s)
	}
	for i, m := range ms {
		checkMatch(t, m)
		if slices.Contains(ms[:i], m) {
			t.Fatalf("ParseRule(%q) = %v: %s twice", s, ms, m)
		}
		if back, err := ParseRule(m.String()); err != nil || !slices.Equal(back, []Match{m}) {
			t.Fatalf("ParseRule(%q) has %s, which parses back as %v, %v", s, m, back, err)
		}
	}
}

// checkPrefix checks that a prefix is canonical: masked, no zone, and not
// IPv4-mapped at a length that maps an IPv4 prefix.
func checkPrefix(t *testing.T, p netip.Prefix) {
	t.Helper()
	a := p.Addr()
	if !p.IsValid() || p != p.Masked() || a.Zone() != "" || (a.Is4In6() && p.Bits() >= 96) {
		t.Fatalf("prefix %s is not canonical", p)
	}
}

// checkMatch checks that a match is one ParseRule could return: a canonical
// prefix, or a canonical name and the zero prefix; ports of no protocol, of a
// protocol, or a range 1 to 65535 of a protocol with ports; for a prefix,
// icmp for IPv4 only and icmpv6 for IPv6 only.
func checkMatch(t *testing.T, m Match) {
	t.Helper()
	if m.Name != "" {
		if n, err := ParseName(string(m.Name)); err != nil || n != m.Name || m.Prefix.IsValid() {
			t.Fatalf("match %s (%+v) is not a canonical name rule: %v", m, m, err)
		}
		m.Prefix = netip.MustParsePrefix("192.0.2.0/24") // for the check of its ports
		if m.Ports.Proto == ProtoICMPv6 {
			m.Prefix = netip.MustParsePrefix("2001:db8::/32")
		}
	}
	checkPrefix(t, m.Prefix)
	p := m.Ports
	valid := true
	switch {
	case p.Proto == 0:
		valid = p == Ports{}
	case p.Lo != 0 || p.Hi != 0:
		valid = HasPorts(p.Proto) && 1 <= p.Lo && p.Lo <= p.Hi
	}
	is6 := m.Prefix.Addr().Is6()
	if !valid || (p.Proto == ProtoICMP && is6) || (p.Proto == ProtoICMPv6 && !is6) {
		t.Fatalf("match %s (%+v) is not one a rule can be", m, m)
	}
}

// FuzzLoadFile checks that LoadFile returns a policy of canonical, distinct
// rules or a *FileError whose every problem is at a line and on one line. The
// folder of the file holds three list files that policies may name; names
// that could leave the folder are skipped, so that no input reads the
// machine's files (or blocks on /dev/stdin).
func FuzzLoadFile(f *testing.F) {
	dir := f.TempDir()
	for name, text := range map[string]string{
		"good.txt":  "# a blocklist\n192.0.2.1\n198.51.100.0/24  # a comment\n2001:db8::/32\n",
		"bad.txt":   "192.0.2.1\n192.0.2.300\nnot-an-address\n",
		"ports.txt": "192.0.2.1:tcp/443\nany:udp/53\n[2001:db8::1]:tcp/8000-8999\n192.0.2.0/24:icmp\n",
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
		if !slices.Equal(got.Rules, want.Rules) || !slices.Equal(got.Names, want.Names) || got.NextID() != want.NextID() {
			t.Fatalf("rules %v %v, next ID %d\nwant  %v %v, %d", got.Rules, got.Names, got.NextID(), want.Rules, want.Names, want.NextID())
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
// Rule, that no two have the same direction and match or the same ID, and
// that no two ranges of one direction, prefix and protocol overlap partly;
// and the same of name rules, which are all egress.
func checkRules(t *testing.T, p *Policy) {
	t.Helper()
	seen := map[ruleKey]bool{}
	ids := map[uint32]bool{}
	names := map[nameKey]bool{}
	nameRanges := map[nameKey][]Rule{}
	for _, r := range p.Names {
		checkMatch(t, r.Match())
		k := nameKeyOf(r.Dir, r.Match())
		if r.Dir != Egress || names[k] || ids[r.ID] || r.ID == 0 {
			t.Fatalf("name rule %v (id %d) is not egress, or not the only one of its match or ID", r, r.ID)
		}
		names[k], ids[r.ID] = true, true
		if got, ok := p.Lookup(r.Dir, r.Match()); !ok || got != r {
			t.Fatalf("Lookup(%s) = %v, %v; want %v", r.Match(), got, ok, r)
		}
		if got, ok := p.Rule(r.ID); !ok || got != r {
			t.Fatalf("Rule(%d) = %v, %v; want %v", r.ID, got, ok, r)
		}
		k = nameRangeKey(r)
		for _, o := range nameRanges[k] {
			if overlapsPartly(o.Ports, r.Ports) {
				t.Fatalf("name rules %s and %s overlap partly", o, r)
			}
		}
		nameRanges[k] = append(nameRanges[k], r)
	}
	for _, r := range p.Rules {
		checkMatch(t, r.Match())
		k := keyOf(r.Dir, r.Match())
		if seen[k] || ids[r.ID] || r.ID == 0 {
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
	ranges := map[ruleKey][]Rule{}
	for _, r := range p.Rules {
		if !r.Ports.HasRange() {
			continue
		}
		k := rangeKey(r)
		for _, o := range ranges[k] {
			if overlapsPartly(o.Ports, r.Ports) {
				t.Fatalf("rules %s and %s overlap partly", o, r)
			}
		}
		ranges[k] = append(ranges[k], r)
	}
}
