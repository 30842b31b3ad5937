package policy

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/cgwall/cgwall/internal/targets"
)

// A policy file, in YAML; docs/policy.md is its reference.
//
//	egress:
//	  default: allow          # or block
//	  block: [192.0.2.1, 198.51.100.0/24, "2001:db8::/32", any:udp/53]
//	  allow: [198.51.100.7, 192.0.2.1:tcp/443, "[2001:db8::1]:tcp/443", github.com:443, "*.github.com:tcp/443"]
//	ingress:
//	  default: allow
//	  block: [203.0.113.0/24]
//	audit: false
//	log: drop                 # none | drop | all
//	deny_raw: false
//	targets:                  # for cgwall agent: the cgroups it applies to
//	  - unit: "ci-*.scope"
//	  - cgroup: system.slice/nginx.service
//	  - container: 3f4e1a

// Problem is one error in a policy file, at a line.
type Problem struct {
	Line int
	Msg  string
}

// FileError lists every problem of a policy file or a list file.
type FileError struct {
	Path     string
	Problems []Problem
	// CheckFlag is the flag that makes 'cgwall check' read the file as
	// what it is, to list all its problems: "-f" for a policy file (the
	// default), "--block-list" and the like for a list file.
	CheckFlag string
}

// Error gives the first problem on one line and says how many more there are.
func (e *FileError) Error() string {
	msg := e.Lines()[0]
	if n := len(e.Problems) - 1; n > 0 {
		flag := cmp.Or(e.CheckFlag, "-f")
		msg += fmt.Sprintf(" (and %d more; 'cgwall check %s %s' lists them all)", n, flag, oneLine(e.Path))
	}
	return msg
}

// Lines gives every problem as "FILE:LINE: message".
func (e *FileError) Lines() []string {
	out := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		out[i] = fmt.Sprintf("%s:%d: %s", oneLine(e.Path), p.Line, p.Msg)
	}
	return out
}

// FileSettings are what a policy file set explicitly, so that flags can tell
// what they override.
type FileSettings struct {
	Log bool // the file set log:
	// Targets are the cgroups the file names for the agent (targets:).
	// Other commands take the policy and leave them.
	Targets []targets.Target
}

// LoadFile reads a policy file. A file with problems returns a *FileError that
// lists all of them.
func LoadFile(path string) (*Policy, FileSettings, error) {
	return LoadFileContext(context.Background(), path)
}

// LoadFileContext is LoadFile that stops reading the file and its list files
// when ctx is done. Only a regular file of at most MaxFileSize bytes is read.
func LoadFileContext(ctx context.Context, path string) (*Policy, FileSettings, error) {
	f, err := openFile("policy file", path)
	if err != nil {
		return nil, FileSettings{}, err
	}
	data, err := readFile(ctx, "policy file", path, f)
	f.Close()
	if err != nil {
		return nil, FileSettings{}, err
	}
	return parseFile(ctx, path, data)
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", oneLine(pe.Path), pe.Err)
	}
	return err
}

// ParseFile parses the text of a policy file; path only names it in errors.
// The text is one YAML document, and not an empty one.
func ParseFile(path string, data []byte) (*Policy, FileSettings, error) {
	return parseFile(context.Background(), path, data)
}

// ParseFileContext is ParseFile that stops reading list files when ctx is
// done.
func ParseFileContext(ctx context.Context, path string, data []byte) (*Policy, FileSettings, error) {
	return parseFile(ctx, path, data)
}

func parseFile(ctx context.Context, path string, data []byte) (*Policy, FileSettings, error) {
	fp := &fileParser{ctx: ctx, p: New(), path: path}
	if root, ok := fp.document(data); ok {
		fp.root(root)
	}
	if len(fp.problems) > 0 {
		return nil, FileSettings{}, &FileError{Path: path, Problems: fp.problems}
	}
	return fp.p, fp.set, nil
}

// document returns the root node of the one YAML document of a policy file.
// A file without one (nothing but comments and blank space, or null) is an
// error: allowing everything is too much to read into a file that says
// nothing, which is more likely a mistake than a wish. A second document is
// an error at the line where it starts, as yaml.Unmarshal would ignore it.
func (fp *fileParser) document(data []byte) (*yaml.Node, bool) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc, next yaml.Node
	err := dec.Decode(&doc)
	if err == nil {
		err = dec.Decode(&next)
	}
	switch {
	case err == nil:
		fp.problem(next.Line, "a second YAML document starts here: a policy file is one document; merge them, or remove the '---' or '...' that splits them")
		return nil, false
	case !errors.Is(err, io.EOF):
		line, msg := yamlErrorLine(err)
		if at := unquotedBracket(data); at > 0 {
			// YAML reads the brackets as a list, and fails a line or two
			// away from them.
			line, msg = at, msg+`; an IPv6 rule in brackets takes quotes in YAML: "[2001:db8::1]:tcp/443"`
		}
		fp.problem(line, "%s", msg)
		return nil, false
	case len(doc.Content) == 0 || doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].Tag == "!!null":
		fp.problem(1, "the policy file is empty: it has no keys, only comments or blank space; give at least one key (see docs/policy.md), or {} for a policy with no rules")
		return nil, false
	}
	return doc.Content[0], true
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// unquotedBracketRE is an item of a block list that is an IPv6 rule with
// ports in brackets, unquoted: - [2001:db8::1]:tcp/443.
var unquotedBracketRE = regexp.MustCompile(`^\s*-\s+\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:./]*\]:`)

// unquotedBracket returns the line of the first such item, 0 if none.
func unquotedBracket(data []byte) int {
	for i, l := range bytes.Split(data, []byte("\n")) {
		if unquotedBracketRE.Match(l) {
			return i + 1
		}
	}
	return 0
}

// yamlErrorLine takes the line number out of a YAML syntax error.
func yamlErrorLine(err error) (int, string) {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n, "invalid YAML: " + m[2]
	}
	return 1, "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")
}

type fileParser struct {
	ctx      context.Context // for the list files it reads
	path     string
	p        *Policy
	set      FileSettings
	lines    []int32 // by rule ID: the line that last gave the rule; 0 if a list file did
	problems []Problem
}

func (fp *fileParser) problem(line int, format string, args ...any) {
	fp.problems = append(fp.problems, Problem{Line: line, Msg: fmt.Sprintf(format, args...)})
}

// mapping calls fn for each key of a mapping node, reporting unknown and
// repeated keys.
func (fp *fileParser) mapping(n *yaml.Node, where string, known []string, fn func(key string, v *yaml.Node)) {
	if n.Kind != yaml.MappingNode {
		fp.problem(n.Line, "%s must be a mapping with keys %s, not %s", where, strings.Join(known, ", "), describe(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := k.Value
		if prev, ok := seen[key]; ok {
			fp.problem(k.Line, "%s%s is repeated (first at line %d)", prefixed(where), shortName(key), prev)
			continue
		}
		seen[key] = k.Line
		if !contains(known, key) {
			fp.problem(k.Line, "unknown key %s in %s: known keys are %s", quote(key), where, strings.Join(known, ", "))
			continue
		}
		fn(key, v)
	}
}

// oneLine quotes a name that would break the one line an error is: one with a
// newline or another character that does not print, or not UTF-8. Every
// other name is left as it is, so that it reads as the user wrote it.
func oneLine(s string) string {
	if utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return s
	}
	return strconv.Quote(s)
}

// shortName is a name as oneLine gives it, or quoted in part if it is long.
func shortName(s string) string {
	if len(s) > maxQuoted {
		return quote(s)
	}
	return oneLine(s)
}

func prefixed(where string) string {
	if where == "the policy" {
		return ""
	}
	return where + "."
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return quote(n.Value)
	}
	return "an alias"
}

// policyKeys are the keys of a policy file's mapping.
var policyKeys = []string{"egress", "ingress", "audit", "log", "deny_raw", "targets"}

func (fp *fileParser) root(n *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		// Not a policy at all: what it holds is not quoted, as it could be
		// any file (/etc/shadow is one string in YAML).
		kind := map[yaml.Kind]string{yaml.SequenceNode: "a list", yaml.ScalarNode: "a single value"}[n.Kind]
		fp.problem(n.Line, "the policy must be a mapping with keys %s, not %s: is this a policy file?", strings.Join(policyKeys, ", "), cmp.Or(kind, "an alias"))
		return
	}
	if !policyLike(n) {
		// Not a policy either (/etc/shadow is a mapping in YAML, for the
		// colon that ends each line), and its keys could be anything.
		fp.problem(n.Line, "the policy has none of the keys %s, and keys that are not names: is this a policy file? (none of it is shown)", strings.Join(policyKeys, ", "))
		return
	}
	fp.mapping(n, "the policy", policyKeys, func(key string, v *yaml.Node) {
		switch key {
		case "egress":
			fp.direction(v, Egress)
		case "ingress":
			fp.direction(v, Ingress)
		case "audit":
			fp.p.Audit = fp.boolean(v, key)
		case "deny_raw":
			fp.p.DenyRaw = fp.boolean(v, key)
		case "log":
			level, err := ParseLogLevel(v.Value)
			if v.Kind != yaml.ScalarNode || err != nil {
				fp.problem(v.Line, "log: %s is not a log level: use none, drop or all", describe(v))
				return
			}
			fp.p.Log, fp.set.Log = level, true
		case "targets":
			fp.targets(v)
		}
	})
}

// targets reads the targets: list, each item a mapping of one kind to a
// pattern (- unit: "ci-*.scope").
func (fp *fileParser) targets(n *yaml.Node) {
	const usage = "each target is one of cgroup: PATH-OR-GLOB, unit: NAME-OR-GLOB, container: ID-OR-PREFIX"
	if n.Kind != yaml.SequenceNode {
		fp.problem(n.Line, "targets must be a list (%s), not %s", usage, describe(n))
		return
	}
	for _, item := range n.Content {
		if item.Kind != yaml.MappingNode || len(item.Content) != 2 || item.Content[1].Kind != yaml.ScalarNode {
			fp.problem(item.Line, "targets: %s is not a target: %s", describe(item), usage)
			continue
		}
		k, v := item.Content[0], item.Content[1]
		t, err := targets.Parse(k.Value, v.Value, k.Line)
		if err != nil {
			fp.problem(k.Line, "targets: %v", err)
			continue
		}
		fp.set.Targets = append(fp.set.Targets, t)
	}
}

// policyLike says whether a mapping could be a policy, and its keys may be
// quoted: it has a policy's key, or keys that are all names, as misspelt
// ones are.
func policyLike(n *yaml.Node) bool {
	for i := 0; i < len(n.Content); i += 2 {
		if contains(policyKeys, n.Content[i].Value) {
			return true
		}
	}
	for i := 0; i < len(n.Content); i += 2 {
		if !keyNameRE.MatchString(n.Content[i].Value) {
			return false
		}
	}
	return true
}

var keyNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]{0,31}$`)

func (fp *fileParser) boolean(n *yaml.Node, key string) bool {
	var b bool
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(&b) != nil {
		fp.problem(n.Line, "%s: %s is not a boolean: use true or false", key, describe(n))
	}
	return b
}

func (fp *fileParser) direction(n *yaml.Node, dir Direction) {
	fp.mapping(n, dir.String(), []string{"default", "block", "allow", "block_lists", "allow_lists"}, func(key string, v *yaml.Node) {
		switch key {
		case "default":
			action, err := ParseAction(v.Value)
			if v.Kind != yaml.ScalarNode || err != nil {
				fp.problem(v.Line, "%s.default: %s is not an action: use allow or block", dir, describe(v))
				return
			}
			fp.p.Default[dir] = action
		case "block":
			fp.rules(v, dir, Block)
		case "allow":
			fp.rules(v, dir, Allow)
		case "block_lists":
			fp.lists(v, dir, Block)
		case "allow_lists":
			fp.lists(v, dir, Allow)
		}
	})
}

// maxPath is PATH_MAX: a longer name is no file's, and is not echoed whole.
const maxPath = 4096

// lists reads list files named in the policy; a relative name is taken from
// the policy file's folder.
func (fp *fileParser) lists(n *yaml.Node, dir Direction, action Action) {
	where := fmt.Sprintf("%s.%s_lists", dir, action)
	if n.Kind != yaml.SequenceNode {
		fp.problem(n.Line, "%s must be a list of file names, not %s", where, describe(n))
		return
	}
	for _, item := range n.Content {
		name := item.Value
		if item.Kind != yaml.ScalarNode || name == "" || len(name) >= maxPath {
			fp.problem(item.Line, "%s: %s is not a file name", where, describe(item))
			continue
		}
		if !filepath.IsAbs(name) {
			name = filepath.Join(filepath.Dir(fp.path), name)
		}
		if err := fp.p.AddListContext(fp.ctx, name, dir, action); err != nil {
			fp.problem(item.Line, "%s: %v", where, err)
		}
	}
}

func (fp *fileParser) rules(n *yaml.Node, dir Direction, action Action) {
	where := fmt.Sprintf("%s.%s", dir, action)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "block:" with nothing after it
	}
	if n.Kind != yaml.SequenceNode {
		fp.problem(n.Line, "%s must be a list of addresses, not %s", where, describe(n))
		return
	}
	fp.p.Grow(len(n.Content))
	for _, item := range n.Content {
		if item.Kind != yaml.ScalarNode {
			// [2001:db8::1]:tcp/443 unquoted is a mapping in a flow
			// list, and [2001:db8::1] a list.
			fp.problem(item.Line, "%s: %s is not a rule: quote a rule that YAML reads as something else, as in \"[2001:db8::1]:tcp/443\"", where, describe(item))
			continue
		}
		matches, err := ParseRule(item.Value)
		if err == nil {
			err = egressOnly(dir, matches)
		}
		if err != nil {
			fp.problem(item.Line, "%s: %v", where, err)
			continue
		}
		for _, m := range matches {
			fp.add(item.Line, where, dir, action, m)
		}
	}
}

// add adds a rule unless the policy has its prefix (or name) already: with
// the same action, the rule is kept once; with the other, which was first is
// said.
func (fp *fileParser) add(line int, where string, dir Direction, action Action, m Match) {
	prev, ok := fp.p.Lookup(dir, m)
	switch {
	case !ok:
		r := Rule{ID: fp.p.NextID(), Dir: dir, Prefix: m.Prefix, Ports: m.Ports, Name: m.Name, Action: action}
		if o, ok := fp.p.overlap(r); ok {
			fp.problem(line, "%s: %s", where, overlapMessage(r, o))
			return
		}
		fp.p.AddRule(r)
		fp.setLine(r.ID, line)
	case prev.Action == action:
		fp.setLine(prev.ID, line)
	case fp.line(prev.ID) == 0:
		fp.problem(line, "%s: %s is also %sed by a list file: a rule is either blocked or allowed", where, m, prev.Action)
	default:
		fp.problem(line, "%s: %s is also %sed at line %d: a rule is either blocked or allowed", where, m, prev.Action, fp.line(prev.ID))
	}
}

func (fp *fileParser) line(id uint32) int {
	if int(id) < len(fp.lines) {
		return int(fp.lines[id])
	}
	return 0
}

func (fp *fileParser) setLine(id uint32, line int) {
	if n := int(id) + 1; n > len(fp.lines) {
		fp.lines = append(fp.lines, make([]int32, n-len(fp.lines))...)
	}
	fp.lines[id] = int32(line)
}
