package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const goodFile = `# a complete policy
egress:
  default: block
  block: [192.0.2.1, 198.51.100.0/24, "2001:db8::/32"]
  allow:
    - 198.51.100.7
    - 2001:db8:1::/48
ingress:
  default: allow
  block: [203.0.113.0/24]
audit: true
log: all
deny_raw: true
`

func TestParseFile(t *testing.T) {
	p, set, err := ParseFile("p.yaml", []byte(goodFile))
	if err != nil {
		t.Fatal(err)
	}
	if p.Default != [2]Action{Block, Allow} || !p.Audit || p.Log != LogAll || !set.Log || !p.DenyRaw {
		t.Errorf("settings: default %v audit %v log %v deny_raw %v", p.Default, p.Audit, p.Log, p.DenyRaw)
	}
	want := []string{
		"egress block 192.0.2.1/32", "egress block 198.51.100.0/24", "egress block 2001:db8::/32",
		"egress allow 198.51.100.7/32", "egress allow 2001:db8:1::/48", "ingress block 203.0.113.0/24",
	}
	if len(p.Rules) != len(want) {
		t.Fatalf("rules %v", p.Rules)
	}
	for i, r := range p.Rules {
		if r.String() != want[i] || r.ID != uint32(i+1) {
			t.Errorf("rule %d = %s (id %d), want %s", i, r, r.ID, want[i])
		}
	}
	if a, _ := p.DecideAddr(Egress, netip.MustParseAddr("198.51.100.7")); a != Allow {
		t.Error("the allowed host inside a blocked /24 is not allowed")
	}
}

// TestParseFileEmpty checks that a file that says nothing is an error, not a
// policy that allows everything: an empty file is more likely a mistake (a
// truncated copy, a template never filled in) than a wish to drop every
// rule. A policy with no rules is written {}, or with a key.
func TestParseFileEmpty(t *testing.T) {
	for name, text := range map[string]string{
		"empty":             "",
		"a comment":         "# nothing\n",
		"blank lines":       "\n   \n\n",
		"a document marker": "---\n# nothing\n",
		"an explicit null":  "~\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := ParseFile("e.yaml", []byte(text))
			if err == nil || !strings.HasPrefix(err.Error(), "e.yaml:1: the policy file is empty") {
				t.Errorf("%q: %v", text, err)
			}
		})
	}
	for name, text := range map[string]string{
		"an empty mapping":  "{}\n",
		"an empty rule key": "egress:\n  block:\n",
		"a setting":         "# audit everything\naudit: true\n",
	} {
		t.Run(name, func(t *testing.T) {
			p, set, err := ParseFile("e.yaml", []byte(text))
			if err != nil || len(p.Rules) != 0 || p.Default != [2]Action{Allow, Allow} || set.Log {
				t.Errorf("%q: %v, %+v", text, err, p)
			}
		})
	}
}

// TestParseFileDocuments checks that a second YAML document is an error at the
// line where it starts, rather than ignored.
func TestParseFileDocuments(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"two documents", "egress:\n  block: [192.0.2.1]\n---\negress:\n  block: [192.0.2.2]\n", "m.yaml:3: a second YAML document starts here"},
		{"a leading marker, then two", "---\naudit: true\n# the next one\n---\nlog: all\n", "m.yaml:4: a second YAML document starts here"},
		{"an empty second document", "audit: true\n---\n", "m.yaml:2: a second YAML document starts here"},
		{"after a document end", "audit: true\n...\n---\nlog: all\n", "m.yaml:3: a second YAML document starts here"},
		{"a bad second document", "audit: true\n---\n[\n", "m.yaml:3: invalid YAML"},
		{"an empty first document", "---\n---\naudit: true\n", "m.yaml:2: a second YAML document starts here"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseFile("m.yaml", []byte(tc.text))
			var fe *FileError
			if !errors.As(err, &fe) || len(fe.Problems) != 1 || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("%q: %v; want one problem, %q", tc.text, err, tc.want)
			}
		})
	}
	// One document, with its optional markers, is a policy.
	for _, text := range []string{"---\naudit: true\n", "audit: true\n...\n", "---\naudit: true\n...\n# the end\n"} {
		if p, _, err := ParseFile("m.yaml", []byte(text)); err != nil || !p.Audit {
			t.Errorf("%q: %v", text, err)
		}
	}
}

// TestParseFileProblems checks that every problem is reported at once, each at
// its line with the offending value.
func TestParseFileProblems(t *testing.T) {
	text := `egress:
  default: maybe
  block: [1.1.1.300, 10.0.0.0/8]
  allow: [10.0.0.0/8, ""]
  alow: [192.0.2.1]
ingress: [192.0.2.1]
audit: yes
log: everything
colour: red
`
	_, _, err := ParseFile("bad.yaml", []byte(text))
	var fe *FileError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v is not a *FileError", err)
	}
	want := []string{
		`bad.yaml:2: egress.default: "maybe" is not an action`,
		`bad.yaml:3: egress.block: "1.1.1.300" is not a valid IPv4 or IPv6 address`,
		`bad.yaml:4: egress.allow: 10.0.0.0/8 is also blocked at line 3`,
		`bad.yaml:4: egress.allow: empty address`,
		`bad.yaml:5: unknown key "alow" in egress`,
		`bad.yaml:6: ingress must be a mapping`,
		`bad.yaml:7: audit: "yes" is not a boolean`,
		`bad.yaml:8: log: "everything" is not a log level`,
		`bad.yaml:9: unknown key "colour" in the policy`,
	}
	lines := fe.Lines()
	if len(lines) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%s", len(lines), len(want), strings.Join(lines, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("problem %d = %q, want it to start with %q", i, lines[i], want[i])
		}
	}
	if !strings.HasSuffix(err.Error(), "(and 8 more; 'cgwall check -f bad.yaml' lists them all)") || strings.Contains(err.Error(), "\n") {
		t.Errorf("one-line error %q", err)
	}
}

func TestLoadFileErrors(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := LoadFile(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml: no such file or directory") {
		t.Errorf("missing file: %v", err)
	}
	if _, _, err := LoadFile(dir); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("directory: %v", err)
	}
	bad := filepath.Join(dir, "syntax.yaml")
	os.WriteFile(bad, []byte("egress:\n  block: [192.0.2.1\n"), 0o600)
	if _, _, err := LoadFile(bad); err == nil || !strings.Contains(err.Error(), "syntax.yaml:") || !strings.Contains(err.Error(), "invalid YAML") {
		t.Errorf("syntax error: %v", err)
	}
}

func TestAddList(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.txt")
	os.WriteFile(good, []byte("# a blocklist\n192.0.2.1\n\n198.51.100.0/24  # a comment\n2001:db8::/32\n192.0.2.1\n"), 0o600)
	p := New()
	if err := p.AddList(good, Egress, Block); err != nil || len(p.Rules) != 3 {
		t.Fatalf("AddList: %v, %v", err, p.Rules)
	}
	bad := filepath.Join(dir, "bad.txt")
	os.WriteFile(bad, []byte("192.0.2.1\n192.0.2.300\nnot-an-address\n"), 0o600)
	err := p.AddList(bad, Egress, Allow)
	var fe *FileError
	if !errors.As(err, &fe) || len(fe.Problems) != 3 {
		t.Fatalf("AddList of a bad file: %v", err)
	}
	for i, want := range []string{
		"bad.txt:1: 192.0.2.1/32 is both blocked and allowed for egress",
		`bad.txt:2: "192.0.2.300" is not a valid IPv4 or IPv6 address`,
		`bad.txt:3: "not-an-address" is not a valid`,
	} {
		if !strings.Contains(fe.Lines()[i], want) {
			t.Errorf("problem %d = %q, want %q", i, fe.Lines()[i], want)
		}
	}
	// A policy file names list files relative to itself.
	policyFile := filepath.Join(dir, "p.yaml")
	_, _, err = ParseFile(policyFile, []byte("ingress:\n  block_lists: [good.txt]\n  allow_lists: [missing.txt]\n"))
	if err == nil || !strings.Contains(err.Error(), "p.yaml:3: ingress.allow_lists: list file: "+filepath.Join(dir, "missing.txt")) {
		t.Fatalf("missing list: %v", err)
	}
	p2, _, err := ParseFile(policyFile, []byte("ingress:\n  block_lists: [good.txt]\n"))
	if err != nil || p2.Count(Ingress) != 3 {
		t.Fatalf("block_lists: %v, %v", err, p2)
	}
}

// TestParseFileConflicts checks that a prefix given both actions is reported
// at its later line, naming the line that last gave it the first action, and
// that a list file named in the policy counts as well.
func TestParseFileConflicts(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "good.txt"), []byte("198.51.100.0/24\n"), 0o600)
	text := `egress:
  block:
    - 192.0.2.1
    - 192.0.2.1
  allow: [192.0.2.1, 198.51.100.0/24, 198.51.100.1]
  block_lists: [good.txt]
ingress:
  allow: [192.0.2.1]
`
	_, _, err := ParseFile(filepath.Join(dir, "p.yaml"), []byte(text))
	var fe *FileError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v is not a *FileError", err)
	}
	p, good := filepath.Join(dir, "p.yaml"), filepath.Join(dir, "good.txt")
	want := []string{
		p + ":5: egress.allow: 192.0.2.1/32 is also blocked at line 4",
		p + ":6: egress.block_lists: " + good + ":1: 198.51.100.0/24 is both blocked and allowed for egress",
	}
	lines := fe.Lines()
	if len(lines) != len(want) {
		t.Fatalf("problems:\n%s", strings.Join(lines, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("problem %d = %q, want it to start with %q", i, lines[i], want[i])
		}
	}

	// A list first, then the same prefix in the policy with the other action.
	text = "egress:\n  block_lists: [good.txt]\n  allow: [198.51.100.0/24]\n"
	_, _, err = ParseFile(filepath.Join(dir, "p.yaml"), []byte(text))
	if err == nil || !strings.Contains(err.Error(), "p.yaml:3: egress.allow: 198.51.100.0/24 is also blocked by a list file") {
		t.Errorf("a policy rule against a list rule: %v", err)
	}
}

// TestProblemsOneLine checks that names which would break the line of an
// error are quoted, and names which would not are left as they are. The
// first two cases were found with FuzzLoadFile's checks.
func TestProblemsOneLine(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, text, want string
	}{
		{"repeated key with a newline", "audit: true\n\"a\\nb\": 1\n\"a\\nb\": 2\n", `p.yaml:3: "a\nb" is repeated (first at line 2)`},
		{"list name with a newline", "egress:\n  block_lists: [\"x\\ny\"]\n", `p.yaml:2: egress.block_lists: list file: "` + dir + `/x\ny": no such file or directory`},
		{"list name with a space", "egress:\n  block_lists: [\"x y\"]\n", "p.yaml:2: egress.block_lists: list file: " + dir + "/x y: no such file or directory"},
		{"plain repeated key", "audit: true\naudit: false\n", "p.yaml:2: audit is repeated (first at line 1)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseFile(filepath.Join(dir, "p.yaml"), []byte(tc.text))
			var fe *FileError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a *FileError", err)
			}
			lines := fe.Lines()
			if got := strings.TrimPrefix(lines[len(lines)-1], dir+"/"); got != tc.want {
				t.Errorf("problem %q, want %q", got, tc.want)
			}
		})
	}
}

// TestProblemsQuoteLittle checks that no problem echoes more than maxQuoted
// bytes of a value, wherever it is in the file, and that a file which is not
// a policy at all (a single value, as /etc/shadow is in YAML) is not quoted.
func TestProblemsQuoteLittle(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("x", 5<<20)
	for _, tc := range []struct{ name, text, want string }{
		{"an address", "egress:\n  block: [" + long + "]\n", `egress.block: "xxxx`},
		{"a log level", "log: " + long + "\n", `log: "xxxx`},
		{"a boolean", "audit: " + long + "\n", `audit: "xxxx`},
		{"a default", "ingress:\n  default: " + long + "\n", `ingress.default: "xxxx`},
		{"an unknown key", "audit: true\n? " + long + "\n: 1\n", `unknown key "xxxx`},
		{"a repeated key", "? " + long + "\n: 1\n? " + long + "\n: 2\naudit: true\n", `"xxxx`},
		{"a list where a string belongs", "egress:\n  block: " + long + "\n", `egress.block must be a list of addresses, not "xxxx`},
		{"a list file name", "egress:\n  block_lists: [" + long + "]\n", `egress.block_lists: "xxxx`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseFile(filepath.Join(dir, "p.yaml"), []byte(tc.text))
			var fe *FileError
			if !errors.As(err, &fe) {
				t.Fatalf("error %.300v is not a *FileError", err)
			}
			for _, line := range fe.Lines() {
				if len(line) > len(dir)+300 || !strings.Contains(line, tc.want) || !strings.Contains(line, `"… (5242880 bytes)`) {
					t.Errorf("problem %.400q: want at most %d bytes of the value, in %q", line, maxQuoted, tc.want)
				}
			}
		})
	}
	for text, want := range map[string]string{
		// The last colon of each line makes it a mapping key.
		"root:$y$j9T$secrethash:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n": "shadow:1: the policy has none of the keys egress, ingress, audit, log, deny_raw, targets, and keys that are not names: is this a policy file? (none of it is shown)",
		"password=secret\n":            "shadow:1: the policy must be a mapping with keys egress, ingress, audit, log, deny_raw, targets, not a single value: is this a policy file?",
		"- secret one\n- secret two\n": "shadow:1: the policy must be a mapping with keys egress, ingress, audit, log, deny_raw, targets, not a list: is this a policy file?",
	} {
		_, _, err := ParseFile("shadow", []byte(text))
		if err == nil || err.Error() != want {
			t.Errorf("%q: %v\nwant %s", text, err, want)
		}
	}
	// Keys that are names are a policy's, misspelt, and are shown.
	_, _, err := ParseFile("p.yaml", []byte("egres:\n  block: [192.0.2.1]\n"))
	if err == nil || !strings.HasPrefix(err.Error(), `p.yaml:1: unknown key "egres" in the policy`) {
		t.Errorf("a misspelt key: %v", err)
	}
}

// TestParseFilePorts reads a policy file with every form of rule, in block
// and flow lists, IPv6 with brackets quoted.
func TestParseFilePorts(t *testing.T) {
	text := `egress:
  default: block
  allow:
    - 192.0.2.10:tcp/443
    - "[2001:db8::1]:tcp/443"
    - "[2001:db8::/32]:udp/53"
    - 198.51.100.0/24:tcp/8000-8999
    - any:udp/53
    - 10.0.0.0/8:icmp
    - 192.0.2.20:443
    - 192.0.2.30:TCP
    - 192.0.2.40:proto/47
    - 2001:db8::1:443
  block: [198.51.100.0/24:tcp/8080-8089, "[2001:db8::1]:icmpv6"]
ingress:
  default: block
  allow: [198.51.100.0/24:tcp/22, any:icmp]
`
	p, _, err := ParseFile("p.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"egress allow 192.0.2.10/32:tcp/443",
		"egress allow [2001:db8::1/128]:tcp/443",
		"egress allow [2001:db8::/32]:udp/53",
		"egress allow 198.51.100.0/24:tcp/8000-8999",
		"egress allow 0.0.0.0/0:udp/53",
		"egress allow [::/0]:udp/53",
		"egress allow 10.0.0.0/8:icmp",
		"egress allow 192.0.2.20/32:tcp/443",
		"egress allow 192.0.2.20/32:udp/443",
		"egress allow 192.0.2.30/32:tcp",
		"egress allow 192.0.2.40/32:gre",
		"egress allow 2001:db8::1:443/128",
		"egress block 198.51.100.0/24:tcp/8080-8089",
		"egress block [2001:db8::1/128]:icmpv6",
		"ingress allow 198.51.100.0/24:tcp/22",
		"ingress allow 0.0.0.0/0:icmp",
	}
	var got []string
	for i, r := range p.Rules {
		got = append(got, r.String())
		if r.ID != uint32(i+1) {
			t.Errorf("rule %s has ID %d, want %d", r, r.ID, i+1)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, tc := range []struct {
		dir  Direction
		pkt  Packet
		want Action
	}{
		{Egress, Packet{netip.MustParseAddr("192.0.2.10"), ProtoTCP, 443}, Allow},
		{Egress, Packet{netip.MustParseAddr("192.0.2.10"), ProtoTCP, 80}, Block},
		{Egress, Packet{netip.MustParseAddr("198.51.100.1"), ProtoTCP, 8000}, Allow},
		{Egress, Packet{netip.MustParseAddr("198.51.100.1"), ProtoTCP, 8085}, Block},
		{Egress, Packet{netip.MustParseAddr("2001:db8::1"), ProtoICMPv6, 0}, Block},
		{Egress, Packet{netip.MustParseAddr("2001:db8::2"), ProtoUDP, 53}, Allow},
		{Ingress, Packet{netip.MustParseAddr("198.51.100.1"), ProtoTCP, 22}, Allow},
		{Ingress, Packet{netip.MustParseAddr("198.51.100.1"), ProtoTCP, 23}, Block},
	} {
		if got, _ := p.Decide(tc.dir, tc.pkt); got != tc.want {
			t.Errorf("%s %+v: %s, want %s", tc.dir, tc.pkt, got, tc.want)
		}
	}
}

// TestParseFilePortProblems checks that bad port rules, conflicts of one
// half of ADDR:PORT and partial range overlaps, with the policy's rules or a
// list file's, are reported each at its line.
func TestParseFilePortProblems(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "ranges.txt"), "# ranges\n192.0.2.1:tcp/5000-5999\n")
	text := `egress:
  block:
    - 192.0.2.1:tcp/0
    - 192.0.2.1:udp/53
    - 192.0.2.1:tcp/8000-8999
    - 192.0.2.1:icmp/8
    - 192.0.2.1:tcp/8080-8089
  allow:
    - 192.0.2.1:53
    - 192.0.2.1:tcp/8500-9500
    - "[2001:db8::1]:icmp"
    - 192.0.2.1:tcp/5500-6500
  block_lists: [ranges.txt]
ingress:
  allow: [192.0.2.1:tcp/8500-9500]
`
	path := filepath.Join(dir, "p.yaml")
	_, _, err := ParseFile(path, []byte(text))
	var fe *FileError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v is not a *FileError", err)
	}
	want := []string{
		`p.yaml:3: egress.block: "192.0.2.1:tcp/0": "0" is not a port: use a number from 1 to 65535`,
		`p.yaml:6: egress.block: "192.0.2.1:icmp/8": icmp has no ports: write icmp alone`,
		`p.yaml:9: egress.allow: 192.0.2.1/32:udp/53 is also blocked at line 4: a rule is either blocked or allowed`,
		`p.yaml:10: egress.allow: 192.0.2.1/32:tcp/8500-9500 overlaps 192.0.2.1/32:tcp/8000-8999 for egress: port ranges of one address and protocol may nest but not overlap partly`,
		`p.yaml:11: egress.allow: "[2001:db8::1]:icmp": icmp is IPv4's: write icmpv6 for IPv6`,
		`p.yaml:13: egress.block_lists: ` + filepath.Join(dir, "ranges.txt") + `:2: 192.0.2.1/32:tcp/5000-5999 overlaps 192.0.2.1/32:tcp/5500-6500 for egress: port ranges of one address and protocol may nest but not overlap partly`,
	}
	lines := fe.Lines()
	for i := range lines {
		lines[i] = strings.TrimPrefix(lines[i], dir+"/")
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}

	// A range from a list file first, then one in the policy that overlaps
	// it.
	text = "egress:\n  block_lists: [ranges.txt]\n  allow: [192.0.2.1:tcp/5500-6500]\n"
	_, _, err = ParseFile(path, []byte(text))
	if want := path + ":3: egress.allow: 192.0.2.1/32:tcp/5500-6500 overlaps 192.0.2.1/32:tcp/5000-5999 for egress: port ranges of one address and protocol may nest but not overlap partly"; err == nil || err.Error() != want {
		t.Errorf("a range against a list's:\n got %v\nwant %s", err, want)
	}
}

// TestParseFileBrackets checks that an IPv6 rule in brackets that YAML reads
// as something else is reported at its line, saying to quote it.
func TestParseFileBrackets(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"a block list item", "egress:\n  block:\n    - 192.0.2.1\n    - [2001:db8::1]:tcp/443\n",
			`p.yaml:4: invalid YAML: did not find expected '-' indicator; an IPv6 rule in brackets takes quotes in YAML: "[2001:db8::1]:tcp/443"`},
		{"a flow list item", "egress:\n  block: [[2001:db8::1]:tcp/443]\n",
			`p.yaml:2: egress.block: a mapping is not a rule: quote a rule that YAML reads as something else, as in "[2001:db8::1]:tcp/443"`},
		{"brackets alone", "egress:\n  block:\n    - [2001:db8::1]\n",
			`p.yaml:3: egress.block: a list is not a rule: quote a rule that YAML reads as something else, as in "[2001:db8::1]:tcp/443"`},
		{"a space after the colon", "egress:\n  block:\n    - 192.0.2.1: tcp\n",
			`p.yaml:3: egress.block: a mapping is not a rule: quote a rule that YAML reads as something else, as in "[2001:db8::1]:tcp/443"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseFile("p.yaml", []byte(tc.text))
			if err == nil || err.Error() != tc.want {
				t.Errorf("%q:\n got %v\nwant %s", tc.text, err, tc.want)
			}
		})
	}
}

// TestParseFileNames reads a policy file with name rules, and checks that
// every problem of one is at its line.
func TestParseFileNames(t *testing.T) {
	p, _, err := ParseFile("names.yaml", []byte(`egress:
  default: block
  allow: [github.com:443, "*.githubusercontent.com:443", 192.0.2.1]
  block:
    - "*.example.com"
    - Tracker.Example.COM.
`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range append(slices.Clone(p.Rules), p.Names...) {
		got = append(got, fmt.Sprintf("%d %s", r.ID, r))
	}
	want := []string{
		"5 egress allow 192.0.2.1/32",
		"1 egress allow github.com:tcp/443",
		"2 egress allow github.com:udp/443",
		"3 egress allow *.githubusercontent.com:tcp/443",
		"4 egress allow *.githubusercontent.com:udp/443",
		"6 egress block *.example.com",
		"7 egress block tracker.example.com",
	}
	if !slices.Equal(got, want) {
		t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if s := p.Summary()[0]; s != "egress: default block; IPv4: 0 block, 1 allow; IPv6: 0 block, 0 allow; names: 2 block, 4 allow" {
		t.Errorf("summary %q", s)
	}

	_, _, err = ParseFile("bad.yaml", []byte(`egress:
  allow:
    - example.com:tcp/443
    - ex_ample.com
    - "*.example.com:tcp/8000-8999"
    - "*.example.com:tcp/8500-9500"
  block: [example.com:tcp/443, "www.*.example.com", "bücher.example"]
ingress:
  allow: [example.com]
  block: [192.0.2.1, "*.example.com:22"]
`))
	var fe *FileError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v is not a *FileError", err)
	}
	wantProblems := []string{
		`bad.yaml:4: egress.allow: "ex_ample.com" is not a valid name: the label "ex_ample" has '_': a name is labels of letters, digits and hyphens joined by dots, as in example.com or *.example.com`,
		"bad.yaml:6: egress.allow: *.example.com:tcp/8500-9500 overlaps *.example.com:tcp/8000-8999 for egress: port ranges of one name and protocol may nest but not overlap partly",
		"bad.yaml:7: egress.block: example.com:tcp/443 is also allowed at line 3: a rule is either blocked or allowed",
		`bad.yaml:7: egress.block: "www.*.example.com" is not a valid name: * may only be the whole first label, as in *.example.com`,
		`bad.yaml:7: egress.block: "bücher.example" is not a valid name: it is not ASCII: use its ASCII form xn--bcher-kva.example`,
		"bad.yaml:9: ingress.allow: example.com: name rules match egress destinations only",
		"bad.yaml:10: ingress.block: *.example.com: name rules match egress destinations only",
	}
	if got := fe.Lines(); !slices.Equal(got, wantProblems) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantProblems, "\n"))
	}
}

// TestAddListNames reads a list file with names among addresses: IDs follow
// the lines, and problems are at their lines.
func TestAddListNames(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "names.txt")
	writeFile(t, list, `# trackers
192.0.2.1
tracker.example.com
*.ads.example    # every name below
198.51.100.0/24
192.0.2.1
tracker.example.com.
ex_ample.com
*.ads.example:tcp/443
2001:db8::/32
`)
	p := New()
	if err := p.Add(Egress, Allow, "*.ads.example:tcp/443"); err != nil {
		t.Fatal(err)
	}
	err := p.AddList(list, Egress, Block)
	var fe *FileError
	if !errors.As(err, &fe) {
		t.Fatalf("AddList: %v", err)
	}
	want := []string{
		`names.txt:8: "ex_ample.com" is not a valid name: the label "ex_ample" has '_': a name is labels of letters, digits and hyphens joined by dots, as in example.com or *.example.com`,
		"names.txt:9: *.ads.example:tcp/443 is both blocked and allowed for egress",
	}
	lines := fe.Lines()
	for i := range lines {
		lines[i] = strings.TrimPrefix(lines[i], dir+"/")
	}
	if !slices.Equal(lines, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	var rules []string
	for _, r := range append(slices.Clone(p.Rules), p.Names...) {
		rules = append(rules, fmt.Sprintf("%d %s", r.ID, r))
	}
	wantRules := []string{
		"2 egress block 192.0.2.1/32",
		"5 egress block 198.51.100.0/24",
		"6 egress block 2001:db8::/32",
		"1 egress allow *.ads.example:tcp/443",
		"3 egress block tracker.example.com",
		"4 egress block *.ads.example",
	}
	if !slices.Equal(rules, wantRules) {
		t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(rules, "\n"), strings.Join(wantRules, "\n"))
	}
	checkRules(t, p)

	// A list that starts with a name is a list. For ingress, a name is
	// refused once at its line, however many rules it stands for; a first
	// line refused so is still a rule, and the file a list.
	writeFile(t, list, "example.com\n192.0.2.1\n*.example.com:443\n")
	if err := New().AddList(list, Egress, Allow); err != nil {
		t.Errorf("a list that starts with a name: %v", err)
	}
	err = New().AddList(list, Ingress, Allow)
	if !errors.As(err, &fe) {
		t.Fatalf("AddList for ingress: %v", err)
	}
	want = []string{
		"names.txt:1: example.com: name rules match egress destinations only",
		"names.txt:3: *.example.com: name rules match egress destinations only",
	}
	lines = fe.Lines()
	for i := range lines {
		lines[i] = strings.TrimPrefix(lines[i], dir+"/")
	}
	if !slices.Equal(lines, want) {
		t.Errorf("ingress problems:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}
