package learn

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/cgwall/cgwall/internal/policy"
)

// newName names the file New writes in the error of its own check.
const newName = "learned policy"

// New writes a fresh policy file: the base policy's settings and rules
// (nil: none), egress default block, audit off, and the learned rules
// appended to egress.allow, one per line, each with its comment.
//
// The base's rules are written one canonical token each, whether they came
// from the base's own file, its list files or flags: the learned file stands
// alone. log and deny_raw are written only where they are not the defaults,
// so that the file sets no more than the base did.
func New(base *policy.Policy, rules []Rule) ([]byte, error) {
	if base == nil {
		base = policy.New()
	}
	egress := section(base, policy.Egress, policy.Block)
	allow := valueOf(egress, "allow")
	for _, r := range rules {
		allow.Content = append(allow.Content, ruleNode(r))
	}
	root := &yaml.Node{Kind: yaml.MappingNode}
	appendKey(root, "egress", trim(egress))
	if ingress := trim(section(base, policy.Ingress, base.Default[policy.Ingress])); !trivial(ingress) {
		appendKey(root, "ingress", ingress)
	}
	// The base ran in audit mode; the learned file is for enforcing.
	appendKey(root, "audit", scalar("!!bool", "false"))
	if base.Log != policy.LogDrop {
		appendKey(root, "log", scalar("!!str", base.Log.String()))
	}
	if base.DenyRaw {
		appendKey(root, "deny_raw", scalar("!!bool", "true"))
	}
	return encode(newName, &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root}})
}

func scalar(tag, value string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value}
}

// ruleNode is a learned rule's item: its token, its comment on its line.
// The encoder quotes the token where YAML would read it as something else
// (*.x.test:443 as an alias, [2001:db8::1/128]:tcp/443 as a list).
func ruleNode(r Rule) *yaml.Node {
	n := scalar("!!str", r.Match.String())
	n.LineComment = "# " + r.Comment()
	return n
}

// appendKey appends a key and its value to a mapping.
func appendKey(m *yaml.Node, key string, v *yaml.Node) {
	m.Content = append(m.Content, scalar("!!str", key), v)
}

// indexOf is the position of a key in a mapping's Content, -1 if missing.
func indexOf(m *yaml.Node, key string) int {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return i
		}
	}
	return -1
}

// valueOf is the value of a key of a mapping (nil: none), nil if missing.
func valueOf(m *yaml.Node, key string) *yaml.Node {
	if m == nil {
		return nil
	}
	if i := indexOf(m, key); i >= 0 {
		return m.Content[i+1]
	}
	return nil
}

// section is a direction's mapping in a new file: its default and its
// block and allow lists, in the base's order (the order of the rule IDs,
// which name rules share with address rules).
func section(base *policy.Policy, dir policy.Direction, def policy.Action) *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode}
	appendKey(n, "default", scalar("!!str", def.String()))
	for _, action := range []policy.Action{policy.Block, policy.Allow} {
		list := &yaml.Node{Kind: yaml.SequenceNode}
		for _, r := range baseRules(base, dir, action) {
			list.Content = append(list.Content, scalar("!!str", r.Match().String()))
		}
		appendKey(n, action.String(), list)
	}
	return n
}

func baseRules(base *policy.Policy, dir policy.Direction, action policy.Action) []policy.Rule {
	var out []policy.Rule
	for _, r := range slices.Concat(base.Rules, base.Names) {
		if r.Dir == dir && r.Action == action {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b policy.Rule) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// trim drops a section's empty lists: "allow: []" says nothing.
func trim(m *yaml.Node) *yaml.Node {
	out := &yaml.Node{Kind: yaml.MappingNode}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if v := m.Content[i+1]; v.Kind != yaml.SequenceNode || len(v.Content) > 0 {
			out.Content = append(out.Content, m.Content[i], v)
		}
	}
	return out
}

// trivial says whether a trimmed section says only what a missing one
// would: default allow and no rules.
func trivial(m *yaml.Node) bool {
	return len(m.Content) == 2 && valueOf(m, "default").Value == policy.Allow.String()
}

// encode writes a document as YAML, 2-space indent, and checks that it is a
// policy: a file that cgwall wrote and cannot read is a bug, better found
// here than when the user enforces it.
func encode(path string, doc *yaml.Node) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if _, _, err := policy.ParseFile(path, buf.Bytes()); err != nil {
		return nil, fmt.Errorf("the policy cgwall wrote does not read back (a bug in cgwall: please report it): %w", err)
	}
	return buf.Bytes(), nil
}

// Merge adds rules to an existing policy file's egress.allow (made if
// missing), keeping everything the file has: its comments, its order, its
// default. A rule already there (same canonical token) is not added again.
// path is for error messages (file:line).
//
// An allow list in flow style ([a, b]) becomes a block list when rules are
// added to it, as a flow list has no place for their comments; so does an
// egress mapping or a file in flow style around it. Blank lines between the
// file's sections are not kept: the YAML library does not keep them.
func Merge(path string, file []byte, rules []Rule) ([]byte, error) {
	if _, _, err := policy.ParseFile(path, file); err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(file, &doc); err != nil {
		// ParseFile read it: this cannot fail, but says so if it does.
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New(path + ": not a policy mapping") // ParseFile refuses these
	}
	root := doc.Content[0]
	items := newItems(valueOf(valueOf(root, "egress"), "allow"), rules)
	if len(items) > 0 {
		// Only now: a merge that adds nothing changes nothing.
		allow := allowList(root)
		allow.Content = append(allow.Content, items...)
		blockStyle(root, allow)
	}
	return encode(path, &doc)
}

// allowList returns the egress.allow list of a file's root mapping, made
// (empty, at the end of its mapping) if missing.
func allowList(root *yaml.Node) *yaml.Node {
	egress := valueOf(root, "egress")
	if egress == nil {
		egress = &yaml.Node{Kind: yaml.MappingNode}
		appendKey(root, "egress", egress)
	}
	allow := valueOf(egress, "allow")
	switch {
	case allow == nil:
		allow = &yaml.Node{Kind: yaml.SequenceNode}
		appendKey(egress, "allow", allow)
	case allow.Kind != yaml.SequenceNode:
		// "allow:" with nothing after it, which ParseFile reads as no
		// rules: a list in its place, with its comments.
		list := &yaml.Node{Kind: yaml.SequenceNode, HeadComment: allow.HeadComment, LineComment: allow.LineComment, FootComment: allow.FootComment}
		*allow = *list
	}
	return allow
}

// newItems are the items of the rules that the allow list (nil: none)
// does not have, each once.
func newItems(allow *yaml.Node, rules []Rule) []*yaml.Node {
	have := tokens(allow)
	var items []*yaml.Node
	for _, r := range rules {
		if t := r.Match.String(); !have[t] {
			have[t] = true
			items = append(items, ruleNode(r))
		}
	}
	return items
}

// tokens are the canonical tokens of a list's rules: 192.0.2.1:tcp/80 is
// there as 192.0.2.1/32:tcp/80, example.com:80 as its tcp and udp rules.
func tokens(list *yaml.Node) map[string]bool {
	have := map[string]bool{}
	if list == nil || list.Kind != yaml.SequenceNode {
		return have
	}
	for _, item := range list.Content {
		matches, _ := policy.ParseRule(item.Value) // ParseFile read them
		for _, m := range matches {
			have[m.String()] = true
		}
	}
	return have
}

// blockStyle makes the nodes on the way to the allow list block style, so
// that its new items can carry their comments.
func blockStyle(root, allow *yaml.Node) {
	egress := valueOf(root, "egress")
	unflow(root, nil)
	unflow(egress, root.Content[indexOf(root, "egress")])
	unflow(allow, egress.Content[indexOf(egress, "allow")])
}

// unflow makes a flow node block style. Its line comment ({…} # why) goes
// to the line of key: the encoder drops a block mapping's, and puts a block
// list's after its last item, away from what it was about. The root has no
// key: its comment, which followed the whole file, ends it still.
func unflow(n, key *yaml.Node) {
	if n.Style&yaml.FlowStyle == 0 {
		return
	}
	n.Style &^= yaml.FlowStyle
	switch {
	case n.LineComment == "":
	case key == nil:
		n.FootComment = strings.TrimSpace(n.FootComment + "\n" + n.LineComment)
		n.LineComment = ""
	default:
		key.LineComment = strings.TrimSpace(key.LineComment + " " + n.LineComment)
		n.LineComment = ""
	}
}
