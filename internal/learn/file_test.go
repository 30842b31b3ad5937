package learn

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cgwall/cgwall/internal/policy"
)

// describe is a policy as lines that two equal policies share: settings,
// then every rule, sorted.
func describe(p *policy.Policy) []string {
	out := []string{fmt.Sprintf("egress default %s, ingress default %s, audit %v, log %s, deny_raw %v",
		p.Default[policy.Egress], p.Default[policy.Ingress], p.Audit, p.Log, p.DenyRaw)}
	var rules []string
	for _, r := range slices.Concat(p.Rules, p.Names) {
		rules = append(rules, r.String())
	}
	slices.Sort(rules)
	return append(out, rules...)
}

func parse(t *testing.T, out []byte) *policy.Policy {
	t.Helper()
	p, _, err := policy.ParseFile("out.yaml", out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return p
}

func match(t *testing.T, token string) policy.Match {
	t.Helper()
	ms, err := policy.ParseRule(token)
	if err != nil || len(ms) != 1 {
		t.Fatalf("ParseRule(%q) = %v, %v: want one match", token, ms, err)
	}
	return ms[0]
}

func learnedRule(t *testing.T, token string) Rule {
	return Rule{Match: match(t, token), First: at(1), Packets: 12, Pid: 4242, Comm: "curl"}
}

func TestNewRoundTrip(t *testing.T) {
	rules := []Rule{
		learnedRule(t, "allowed.test:tcp/18080"),
		learnedRule(t, "*.x.test:tcp/443"),
		learnedRule(t, "192.0.2.10/32:udp/8125"),
		learnedRule(t, "[2001:db8::1/128]:tcp/443"),
		learnedRule(t, "127.0.0.1/32:icmp"),
	}
	rules[1].Names = 3
	tests := []struct {
		name string
		base string
	}{
		{"no base", ""},
		{"empty base", "{}"},
		{"a base of every kind of rule and setting", `
egress:
  default: allow
  block: [192.0.2.66, "2001:db8:bad::/48", any:udp/53, bad.test, "*.worse.test:tcp"]
  allow: [198.51.100.0/24:tcp/8000-8999, good.test:443]
ingress:
  default: block
  block: [203.0.113.9]
  allow: [203.0.113.0/24:tcp/22, "[2001:db8::2]:sctp/9"]
audit: true
log: all
deny_raw: true
`},
		{"a base with ingress rules and its default", "ingress: {allow: [203.0.113.0/24]}"},
		{"a base with log none", "log: none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := basePolicy(t, tt.base)
			out, err := New(base, rules)
			if err != nil {
				t.Fatal(err)
			}
			want := policy.New()
			if base != nil {
				want = base.Clone()
			}
			want.Default[policy.Egress], want.Audit = policy.Block, false
			for _, r := range rules {
				if err := want.AddMatch(policy.Egress, policy.Allow, r.Match); err != nil {
					t.Fatal(err)
				}
			}
			if got, want := describe(parse(t, out)), describe(want); !slices.Equal(got, want) {
				t.Errorf("New reads back as\n%s\nwant\n%s\nfile:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"), out)
			}
		})
	}
}

func TestNewText(t *testing.T) {
	base := basePolicy(t, "egress: {allow: [192.0.2.1:tcp/80]}")
	rules := []Rule{
		learnedRule(t, "allowed.test:tcp/18080"),
		learnedRule(t, "*.x.test:tcp/443"),
		learnedRule(t, "[2001:db8::1/128]:tcp/443"),
	}
	rules[0].First = at(1).Add(500_000_000) // the comment has seconds
	rules[1].Names = 2
	out, err := New(base, rules)
	if err != nil {
		t.Fatal(err)
	}
	want := `egress:
  default: block
  allow:
    - 192.0.2.1/32:tcp/80
    - allowed.test:tcp/18080 # first 2026-12-02T19:40:01Z, 12 packets, curl (pid 4242)
    - '*.x.test:tcp/443' # first 2026-12-02T19:40:01Z, 12 packets, curl (pid 4242), 2 names
    - '[2001:db8::1/128]:tcp/443' # first 2026-12-02T19:40:01Z, 12 packets, curl (pid 4242)
audit: false
`
	if string(out) != want {
		t.Errorf("New wrote\n%s\nwant\n%s", out, want)
	}
}

func TestNewNothingLearned(t *testing.T) {
	out, err := New(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "egress:\n  default: block\naudit: false\n"; string(out) != want {
		t.Errorf("New wrote %q, want %q", out, want)
	}
}

// TestNewChecksWhatItWrote gives New a rule that its base blocks, which Learn
// never makes: the file would not read back, and New says so.
func TestNewChecksWhatItWrote(t *testing.T) {
	base := basePolicy(t, "egress: {block: [192.0.2.1:tcp/80]}")
	_, err := New(base, []Rule{learnedRule(t, "192.0.2.1/32:tcp/80")})
	if err == nil || !strings.Contains(err.Error(), "does not read back") || !strings.Contains(err.Error(), "is also blocked") {
		t.Errorf("New = %v, want an error that the file does not read back", err)
	}
}

// commentLines are the comments of a text, in order.
func commentLines(text string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if _, c, ok := strings.Cut(l, "#"); ok {
			out = append(out, strings.TrimSpace(c))
		}
	}
	return out
}

// inOrder says whether every line of want is in got, in want's order.
func inOrder(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

func TestMerge(t *testing.T) {
	newRules := []Rule{learnedRule(t, "allowed.test:tcp/18080"), learnedRule(t, "[2001:db8::1/128]:tcp/443")}
	tests := []struct {
		name string
		file string
		// items are egress.allow's tokens after the merge, in order.
		items []string
		// def is the egress default after the merge.
		def policy.Action
	}{
		{
			name: "comments and order are kept, new rules appended",
			file: `# CI policy, learned and then edited by hand
egress: # what the build reaches
  default: block # an allowlist
  # the mirror
  allow:
    - mirror.test:tcp/443 # apt
    # registries
    - "*.registry.test:443"
  block:
    - 192.0.2.66 # a bad host
# the rest is the defaults
log: drop # drops only
`,
			items: []string{"mirror.test:tcp/443", "*.registry.test:443", "allowed.test:tcp/18080", "[2001:db8::1/128]:tcp/443"},
			def:   policy.Block,
		},
		{
			name:  "a flow-style list becomes a block list",
			file:  "egress: {default: block, allow: [mirror.test:tcp/443, 192.0.2.1]} # flow\n",
			items: []string{"mirror.test:tcp/443", "192.0.2.1", "allowed.test:tcp/18080", "[2001:db8::1/128]:tcp/443"},
			def:   policy.Block,
		},
		{
			name:  "a flow-style file becomes block style",
			file:  "{egress: {allow: [mirror.test:tcp/443] # list\n}, log: all} # file\n",
			items: []string{"mirror.test:tcp/443", "allowed.test:tcp/18080", "[2001:db8::1/128]:tcp/443"},
			def:   policy.Allow,
		},
		{
			name: "a flow-style list keeps its line comment",
			file: `egress:
  default: block
  allow: [mirror.test:tcp/443] # the mirror
`,
			items: []string{"mirror.test:tcp/443", "allowed.test:tcp/18080", "[2001:db8::1/128]:tcp/443"},
			def:   policy.Block,
		},
		{
			name:  "an empty allow",
			file:  "egress:\n  default: block\n  allow: # nothing yet\n",
			items: []string{"allowed.test:tcp/18080", "[2001:db8::1/128]:tcp/443"},
			def:   policy.Block,
		},
		{
			name:  "no allow list",
			file:  "egress:\n  default: block # an allowlist\n",
			items: []string{"allowed.test:tcp/18080", "[2001:db8::1/128]:tcp/443"},
			def:   policy.Block,
		},
		{
			name:  "no egress section keeps the default",
			file:  "# only settings\nlog: all\n",
			items: []string{"allowed.test:tcp/18080", "[2001:db8::1/128]:tcp/443"},
			def:   policy.Allow,
		},
		{
			name:  "rules that are there already are not added",
			file:  "egress:\n  default: block\n  allow:\n    - allowed.test:18080 # tcp and udp\n    - 2001:db8::1\n    - '[2001:db8::1]:tcp/443'\n",
			items: []string{"allowed.test:18080", "2001:db8::1", "[2001:db8::1]:tcp/443"},
			def:   policy.Block,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Merge("policy.yaml", []byte(tt.file), newRules)
			if err != nil {
				t.Fatal(err)
			}
			p := parse(t, out)
			if p.Default[policy.Egress] != tt.def {
				t.Errorf("egress default %s, want %s", p.Default[policy.Egress], tt.def)
			}
			if got := allowItems(t, out); !slices.Equal(got, tt.items) {
				t.Errorf("egress.allow = %q, want %q\n%s", got, tt.items, out)
			}
			if got, want := commentLines(string(out)), commentLines(tt.file); !inOrder(got, want) {
				t.Errorf("comments %q, want %q in order\n%s", got, want, out)
			}
			for _, r := range newRules {
				if !slices.Contains(tt.items, r.Match.String()) {
					continue // there already
				}
				if line := ruleLine(r); !strings.Contains(string(out), line) {
					t.Errorf("no line %q in\n%s", line, out)
				}
			}
		})
	}
}

// ruleLine is a learned rule's line in a file's egress.allow.
func ruleLine(r Rule) string {
	token := r.Match.String()
	if strings.ContainsAny(token[:1], "*[") {
		token = "'" + token + "'"
	}
	return "    - " + token + " # " + r.Comment() + "\n"
}

// allowItems are the tokens of egress.allow in a file, in order.
func allowItems(t *testing.T, file []byte) []string {
	t.Helper()
	out := []string{}
	var in bool
	for _, l := range strings.Split(string(file), "\n") {
		trimmed := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "  allow:"):
			in = true
		case in && strings.HasPrefix(trimmed, "- "):
			item, _, _ := strings.Cut(strings.TrimPrefix(trimmed, "- "), " #")
			out = append(out, strings.Trim(item, `'"`))
		case in && trimmed != "" && !strings.HasPrefix(trimmed, "#"):
			in = false
		}
	}
	return out
}

func TestMergeDedupesCanonically(t *testing.T) {
	file := "egress:\n  default: block\n  allow: [192.0.2.1:tcp/80, 'example.test:443']\n"
	rules := []Rule{
		learnedRule(t, "192.0.2.1/32:tcp/80"),
		learnedRule(t, "example.test:udp/443"),
		learnedRule(t, "192.0.2.1/32:tcp/81"),
		learnedRule(t, "192.0.2.1/32:tcp/81"), // twice in the rules
	}
	out, err := Merge("policy.yaml", []byte(file), rules)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"192.0.2.1:tcp/80", "example.test:443", "192.0.2.1/32:tcp/81"}
	if got := allowItems(t, out); !slices.Equal(got, want) {
		t.Errorf("egress.allow = %q, want %q\n%s", got, want, out)
	}
}

// TestMergeNothingNew leaves a file whose rules are all there as it was:
// no egress section made, no flow list turned into a block list.
func TestMergeNothingNew(t *testing.T) {
	file := "log: all # loud\n"
	out, err := Merge("policy.yaml", []byte(file), nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != file {
		t.Errorf("Merge wrote %q, want %q", out, file)
	}
}

func TestMergeBadFile(t *testing.T) {
	tests := []struct {
		name, file, want string
	}{
		{"a bad rule", "egress:\n  default: block\n  allow: [192.0.2.300]\n", "policy.yaml:3: "},
		{"not YAML", "egress:\n  default: [block\n", "policy.yaml:"},
		{"not a policy", "- 192.0.2.1\n", "policy.yaml:1: "},
		{"an empty file", "# nothing\n", "policy.yaml:1: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Merge("policy.yaml", []byte(tt.file), []Rule{learnedRule(t, "allowed.test:tcp/80")})
			var fe *policy.FileError
			if !errors.As(err, &fe) || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("Merge = %v, want a policy file error starting %q", err, tt.want)
			}
		})
	}
}

// TestMergeChecksWhatItWrote merges a rule that the file blocks: the merged
// file would not read back, and Merge says so.
func TestMergeChecksWhatItWrote(t *testing.T) {
	file := "egress:\n  block: [192.0.2.1:tcp/80]\n"
	_, err := Merge("policy.yaml", []byte(file), []Rule{learnedRule(t, "192.0.2.1/32:tcp/80")})
	if err == nil || !strings.Contains(err.Error(), "does not read back") || !strings.Contains(err.Error(), "policy.yaml:") {
		t.Errorf("Merge = %v, want an error that the file does not read back, at a line", err)
	}
}

// TestLearnNewMerge is the loop a user runs: learn, write, learn again and
// merge; the file then allows both runs' flows.
func TestLearnNewMerge(t *testing.T) {
	answers := []Answer{answer("allowed.test", 0, "192.0.2.10")}
	first := Learn([]Flow{tcp("192.0.2.10", 18080, 1), tcp("192.0.2.20", 80, 1)}, answers, Options{})
	out, err := New(nil, first.Rules)
	if err != nil {
		t.Fatal(err)
	}
	base := parse(t, out)
	second := Learn([]Flow{tcp("192.0.2.10", 18080, 1), tcp("192.0.2.10", 18081, 1)}, answers, Options{Base: base})
	if got, want := ruleTokens(second.Rules), []string{"allowed.test:tcp/18081"}; !slices.Equal(got, want) {
		t.Errorf("second run learned %q, want %q", got, want)
	}
	merged, err := Merge("policy.yaml", out, second.Rules)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"allowed.test:tcp/18080", "192.0.2.20/32:tcp/80", "allowed.test:tcp/18081"}
	if got := allowItems(t, merged); !slices.Equal(got, want) {
		t.Errorf("egress.allow = %q, want %q\n%s", got, want, merged)
	}
	p := parse(t, merged)
	pkt := policy.Packet{Addr: netip.MustParseAddr("192.0.2.20"), Proto: policy.ProtoTCP, Port: 81}
	if action, _ := p.Decide(policy.Egress, pkt); action != policy.Block {
		t.Errorf("merged policy decides %s for %v, which no run reached", action, pkt)
	}
}
