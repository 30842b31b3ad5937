package policy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
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

// TestAddListLikeAdd checks that AddList ends where adding its lines one by
// one with Add ends: the same rules with the same IDs in the same order, and
// the same problems at the same lines, on lists full of repeats, conflicts
// and bad lines, added to a policy that has rules already.
func TestAddListLikeAdd(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pick := []string{
		"192.0.2.1", "192.0.2.1/32", "::ffff:192.0.2.1", "192.0.2.0/24", "198.51.100.7",
		"2001:db8::1", "2001:db8::/32", "2001:db8::1/128", "::ffff:198.51.100.0/120", "0.0.0.0/0", "::/0",
		"10.0.0.1/8", "1.1.1.300", "", "  # a comment", "203.0.113.9 # trailing",
		// Rules with ports: repeats, both actions (192.0.2.0/24:tcp/443
		// against the policy's 192.0.2.0/24 is no conflict), nested and
		// partly overlapping ranges, ADDR:PORT, any, bad ports.
		"192.0.2.1:tcp/443", "192.0.2.1:443", "192.0.2.1:udp/443", "192.0.2.0/24:tcp/443",
		"192.0.2.1:tcp/1-1000", "192.0.2.1:tcp/500-1500", "192.0.2.1:tcp/600-700", "192.0.2.1:1-1000",
		"192.0.2.1:tcp/900-1100", "[2001:db8::1]:udp/53", "[2001:db8::1]:udp/50-60", "[2001:db8::1]:udp/55-65",
		"[2001:db8::/32]:tcp", "any:icmp", "any:53", "any", "ANY:TCP/22", "192.0.2.1:proto/47",
		"192.0.2.1:tcp/0", "192.0.2.1:icmp/8", "[2001:db8::1]:icmp", "192.0.2.1:tcp/80:81",
		// Names among them (in some rounds only, so that most lists
		// are settled whole): repeats, ports, overlaps, bad names.
	}
	names := []string{
		"example.com", "Example.com.", "*.example.com", "example.com:443", "example.com:tcp/443",
		"*.example.com:tcp/1-1000", "*.example.com:tcp/500-1500", "*.example.com:icmp", "ex_ample.com", "*",
	}
	dir := t.TempDir()
	defer func(n int) { wordRules = n }(wordRules)
	for round := range 400 {
		if round == 200 { // the rest with wide keys for IPv4 rules too
			wordRules = 0
		}
		var text strings.Builder
		withNames := round%3 == 0
		for range rng.IntN(120) {
			if withNames && rng.IntN(8) == 0 {
				text.WriteString(names[rng.IntN(len(names))] + "\n")
			} else {
				text.WriteString(pick[rng.IntN(len(pick))] + "\n")
			}
		}
		path := filepath.Join(dir, fmt.Sprint(round))
		os.WriteFile(path, []byte(text.String()), 0o600)
		d, a := Direction(rng.IntN(2)), Action(rng.IntN(2))

		got, want := New(), New()
		for _, p := range []*Policy{got, want} {
			p.Add(Egress, Block, "192.0.2.0/24")
			p.Add(Ingress, Allow, "2001:db8::1")
		}
		err := got.AddList(path, d, a)
		wantProblems := addLines(want, text.String(), d, a)

		var gotProblems []string
		var fe *FileError
		if errors.As(err, &fe) {
			for _, p := range fe.Problems {
				gotProblems = append(gotProblems, fmt.Sprintf("%d: %s", p.Line, p.Msg))
			}
		} else if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(gotProblems, wantProblems) {
			t.Fatalf("list %q:\nproblems %q\nwant     %q", text.String(), gotProblems, wantProblems)
		}
		if !slices.Equal(got.Rules, want.Rules) || !slices.Equal(got.Names, want.Names) || got.NextID() != want.NextID() {
			t.Fatalf("list %q:\nrules %v %v\nwant  %v %v", text.String(), got.Rules, got.Names, want.Rules, want.Names)
		}
		for _, r := range append(slices.Clone(want.Rules), want.Names...) {
			if g, ok := got.Lookup(r.Dir, r.Match()); !ok || g != r {
				t.Fatalf("Lookup(%s) = %v, %v; want %v", r.Prefix, g, ok, r)
			}
			if g, ok := got.Rule(r.ID); !ok || g != r {
				t.Fatalf("Rule(%d) = %v, %v; want %v", r.ID, g, ok, r)
			}
		}
	}
}

// addLines adds a list's lines one at a time, as AddList did before it
// settled them in bulk, and returns the first 20 problems. A line that
// stands for several rules (ADDR:PORT, any) adds each with AddMatch, and
// each conflict is a problem. A list whose first entry is not a rule is not a
// list: nothing of it is added, and its one problem quotes none of it.
func addLines(p *Policy, text string, dir Direction, action Action) []string {
	var problems []string
	problem := func(line int, err error) {
		if len(problems) < maxListProblems {
			problems = append(problems, fmt.Sprintf("%d: %s", line, err))
		}
	}
	listed := false
	for i, line := range strings.Split(text, "\n") {
		line, _, _ = strings.Cut(line, "#")
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		matches, err := ParseRule(line)
		if err != nil && !listed {
			return []string{fmt.Sprintf("%d: %s", i+1, notAList)}
		}
		listed = true
		if err == nil && dir == Ingress && matches[0].Name != "" {
			// A name for ingress is one problem, however many rules
			// its line stands for.
			err = p.AddMatch(dir, action, matches[0])
		}
		if err != nil {
			problem(i+1, err)
			continue
		}
		for _, m := range matches {
			if err := p.AddMatch(dir, action, m); err != nil {
				problem(i+1, err)
			}
		}
	}
	return problems
}

func TestAddListErrors(t *testing.T) {
	dir := t.TempDir()
	p := New()
	if err := p.AddList(filepath.Join(dir, "missing"), Egress, Block); err == nil || err.Error() != "list file: "+filepath.Join(dir, "missing")+": no such file or directory" {
		t.Errorf("missing file: %v", err)
	}
	if err := p.AddList(dir, Egress, Block); err == nil || err.Error() != "list file: "+dir+": is a directory, not a regular file" {
		t.Errorf("directory: %v", err)
	}
	long := filepath.Join(dir, "long")
	os.WriteFile(long, []byte("192.0.2.1\n"+strings.Repeat("x", 1<<17)+"\n"), 0o600)
	if err := p.AddList(long, Egress, Block); err == nil || !strings.Contains(err.Error(), "token too long") {
		t.Errorf("a line of 128 KiB: %v", err)
	}
}

// TestAddListLong checks a list many times longer than the read buffer, with
// bad lines, repeats and conflicts throughout: the problems must quote their
// lines as they were, however often the buffer was refilled since.
func TestAddListLong(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var lines []string
	for range 60_000 {
		lines = append(lines, netip.AddrFrom4([4]byte{198, 18, byte(rng.IntN(256)), byte(rng.IntN(256))}).String())
	}
	for i := range 2000 {
		j := rng.IntN(len(lines))
		lines[j] = lines[rng.IntN(j+1)]
		if i%2 == 0 {
			lines[j] += " # repeated"
		}
	}
	for i := range 30 {
		lines[i*len(lines)/30] = fmt.Sprintf("bad-%d", i)
	}
	text := strings.Join(lines, "\n")
	if len(text) < 10*listBuffer {
		t.Fatalf("the list is only %d bytes", len(text))
	}
	path := filepath.Join(t.TempDir(), "long.list")
	os.WriteFile(path, []byte(text), 0o600)

	got, want := New(), New()
	got.Add(Egress, Allow, lines[100])
	want.Add(Egress, Allow, lines[100])
	err := got.AddList(path, Egress, Block)
	wantProblems := addLines(want, text, Egress, Block)
	var fe *FileError
	if !errors.As(err, &fe) {
		t.Fatalf("AddList: %v", err)
	}
	var gotProblems []string
	for _, p := range fe.Problems {
		gotProblems = append(gotProblems, fmt.Sprintf("%d: %s", p.Line, p.Msg))
	}
	if !slices.Equal(gotProblems, wantProblems) {
		t.Errorf("problems %q\nwant     %q", gotProblems, wantProblems)
	}
	if !slices.Equal(got.Rules, want.Rules) || got.NextID() != want.NextID() {
		t.Errorf("%d rules, next ID %d; want %d, %d", len(got.Rules), got.NextID(), len(want.Rules), want.NextID())
	}
}

// TestAddListNotAList checks that a file whose first entry is not an address
// is taken for what it probably is, a file that is not a list: one problem,
// and none of its lines quoted. A list file's later bad lines are quoted, in
// part.
func TestAddListNotAList(t *testing.T) {
	dir := t.TempDir()
	shadow := filepath.Join(dir, "shadow")
	os.WriteFile(shadow, []byte("# comments and blank lines come first\n\nroot:$y$j9T$secrethash:19000:0:99999:7:::\n192.0.2.1\nbin:*:secret:0:99999:7:::\n"), 0o600)
	p := New()
	err := p.AddList(shadow, Egress, Block)
	var fe *FileError
	if !errors.As(err, &fe) || len(fe.Problems) != 1 || strings.Contains(err.Error(), "secret") || len(p.Rules) != 0 {
		t.Fatalf("AddList of a file that is not a list: %v, %d rules", err, len(p.Rules))
	}
	if want := shadow + ":3: not a list file: its first entry is not an IPv4 or IPv6 address or CIDR, so no line of it is shown; a list file has one rule a line, an address or CIDR with ports or without (192.0.2.0/24, 192.0.2.1:tcp/443)"; err.Error() != want {
		t.Errorf("error %q\nwant  %q", err, want)
	}

	list := filepath.Join(dir, "list")
	os.WriteFile(list, []byte("192.0.2.1\n"+strings.Repeat("y", 1000)+"\n"), 0o600)
	err = p.AddList(list, Egress, Block)
	if want := list + `:2: "` + strings.Repeat("y", maxQuoted) + `"… (1000 bytes) is not a valid IPv4 or IPv6 address`; err == nil || err.Error() != want {
		t.Errorf("a long bad line: %v", err)
	}
}

// TestListFileHint checks that a list file's error points at the check that
// lists all of its problems: check --block-list, not check -f, which would
// read it as YAML.
func TestListFileHint(t *testing.T) {
	list := filepath.Join(t.TempDir(), "list")
	os.WriteFile(list, []byte("192.0.2.1\nbad-1\nbad-2\n"), 0o600)
	for _, tc := range []struct {
		dir    Direction
		action Action
		flag   string
	}{
		{Egress, Block, "--block-list"},
		{Egress, Allow, "--allow-list"},
		{Ingress, Block, "--block-in-list"},
		{Ingress, Allow, "--allow-in-list"},
	} {
		err := New().AddList(list, tc.dir, tc.action)
		if want := "(and 1 more; 'cgwall check " + tc.flag + " " + list + "' lists them all)"; err == nil || !strings.HasSuffix(err.Error(), want) {
			t.Errorf("%s %s: %v; want it to end with %q", tc.dir, tc.action, err, want)
		}
	}
}

// TestAddListPorts reads a list of rules with ports: each line that stands
// for several rules is several for conflicts, and a repeat of a line refused
// for a partial overlap is refused again, as Add would.
func TestAddListPorts(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "ports.txt")
	writeFile(t, list, `# services
192.0.2.1:tcp/443
192.0.2.1:443            # TCP and UDP: the TCP half is there already
[2001:db8::1]:tcp/8000-8999
[2001:db8::1]:tcp/8500-9500
[2001:db8::1]:tcp/8500-9500
[2001:db8::1]:tcp/8100-8199
any:udp/53
198.51.100.0/24:tcp/99999
192.0.2.2:53
`)
	p := New()
	if err := p.Add(Egress, Allow, "192.0.2.2:udp/53"); err != nil {
		t.Fatal(err)
	}
	err := p.AddList(list, Egress, Block)
	var fe *FileError
	if !errors.As(err, &fe) {
		t.Fatalf("AddList: %v", err)
	}
	overlap := "[2001:db8::1/128]:tcp/8500-9500 overlaps [2001:db8::1/128]:tcp/8000-8999 for egress: port ranges of one address and protocol may nest but not overlap partly"
	want := []string{
		"ports.txt:5: " + overlap,
		"ports.txt:6: " + overlap,
		`ports.txt:9: "198.51.100.0/24:tcp/99999": "99999" is not a port: use a number from 1 to 65535`,
		"ports.txt:10: 192.0.2.2/32:udp/53 is both blocked and allowed for egress",
	}
	lines := fe.Lines()
	for i := range lines {
		lines[i] = strings.TrimPrefix(lines[i], dir+"/")
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	var rules []string
	for _, r := range p.Rules {
		rules = append(rules, fmt.Sprintf("%d %s", r.ID, r))
	}
	wantRules := []string{
		"1 egress allow 192.0.2.2/32:udp/53",
		"2 egress block 192.0.2.1/32:tcp/443",
		"3 egress block 192.0.2.1/32:udp/443",
		"4 egress block [2001:db8::1/128]:tcp/8000-8999",
		"5 egress block [2001:db8::1/128]:tcp/8100-8199",
		"6 egress block 0.0.0.0/0:udp/53",
		"7 egress block [::/0]:udp/53",
		"8 egress block 192.0.2.2/32:tcp/53",
	}
	if strings.Join(rules, "\n") != strings.Join(wantRules, "\n") {
		t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(rules, "\n"), strings.Join(wantRules, "\n"))
	}
	checkRules(t, p)

	// A list whose first entry is a rule with ports is a list.
	writeFile(t, list, "any:tcp/22\n")
	if err := New().AddList(list, Ingress, Allow); err != nil {
		t.Errorf("a list of one port rule: %v", err)
	}
}
