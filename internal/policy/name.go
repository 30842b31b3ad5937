package policy

import (
	"fmt"
	"strings"

	"golang.org/x/net/idna"
)

// Name is the target of a name rule, in canonical form: a DNS name in lower
// case without a trailing dot, either exact (example.com, that name only) or
// a wildcard (*.example.com, every name below example.com at any depth,
// matched by whole labels, not example.com itself).
type Name string

// Limits of RFC 1035: a label is at most 63 bytes, a name in its text form
// (without the trailing dot) at most 253.
const (
	maxLabel = 63
	maxName  = 253
)

// wildcardLabel is the first label of a wildcard pattern.
const wildcardLabel = "*"

// nameHelp says what a name looks like, for errors about one.
const nameHelp = "a name is labels of letters, digits and hyphens joined by dots, as in example.com or *.example.com"

// ParseName reads a name rule's target: example.com or *.example.com, in any
// case, with or without a trailing dot. A name that no DNS server would
// answer for is refused with a one-line error that names it and says what
// would be valid: DNS has no fuzzy matching, so a rule for a name that
// cannot exist would quietly match nothing.
func ParseName(s string) (Name, error) {
	if strings.TrimSpace(s) == "" {
		return "", fmt.Errorf("empty name: give a name such as example.com or *.example.com")
	}
	bad := func(format string, args ...any) (Name, error) {
		return "", fmt.Errorf("%s is not a valid name: %s", quote(s), fmt.Sprintf(format, args...))
	}
	if i := strings.IndexFunc(s, func(r rune) bool { return r >= 0x80 }); i >= 0 {
		// The datapath and DNS see the ASCII form of an internationalized
		// name: say what it is rather than convert it silently, so that
		// the rule reads as what it matches.
		star, rest := cutWildcard(strings.TrimSuffix(s, "."))
		if a, err := idna.Lookup.ToASCII(rest); err == nil {
			return bad("it is not ASCII: use its ASCII form %s%s", star, a)
		}
		return bad("it is not ASCII: write an internationalized name in its ASCII form (xn--…)")
	}
	name := strings.ToLower(strings.TrimSuffix(s, "."))
	if name == wildcardLabel {
		return bad("* alone would match every name: write *.example.com for the names below example.com, or any for every address")
	}
	labels := strings.Split(name, ".")
	for i, l := range labels {
		if reason := labelProblem(l, i == 0 && len(labels) > 1); reason != "" {
			return bad("%s", reason)
		}
	}
	switch last := labels[len(labels)-1]; {
	case len(name) > maxName:
		return bad("it is %d bytes: a name has at most %d", len(name), maxName)
	case len(labels) < 2:
		// One label alone is not a name DNS answers for without a search
		// list, and a word that is not an address (a typo, a file that is
		// not a list) should not quietly become a rule.
		return bad("a name rule needs two labels or more, as in example.com")
	case strings.Trim(last, "0123456789") == "":
		return bad("its last label %s is all digits, which no top-level domain is: is it an address?", quote(last))
	}
	return Name(name), nil
}

// cutWildcard cuts the "*." off a wildcard, which IDNA would refuse.
func cutWildcard(s string) (star, rest string) {
	if rest, ok := strings.CutPrefix(s, wildcardLabel+"."); ok {
		return wildcardLabel + ".", rest
	}
	return "", s
}

// labelProblem says what is wrong with one label of a name, "" if nothing.
// wildcardOK says whether the label may be the * of a wildcard.
func labelProblem(l string, wildcardOK bool) string {
	switch {
	case l == "":
		return "it has an empty label (two dots together, or a dot at the start): " + nameHelp
	case l == wildcardLabel && wildcardOK:
		return ""
	case strings.Contains(l, wildcardLabel):
		return "* may only be the whole first label, as in *.example.com"
	case len(l) > maxLabel:
		return fmt.Sprintf("the label %s is %d bytes: a label has at most %d", quote(l), len(l), maxLabel)
	}
	if i := strings.IndexFunc(l, func(r rune) bool { return !isLDH(r) }); i >= 0 {
		return fmt.Sprintf("the label %s has %q: %s", quote(l), l[i], nameHelp)
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return fmt.Sprintf("the label %s begins or ends with a hyphen: a label begins and ends with a letter or a digit", quote(l))
	}
	return ""
}

// isLDH says whether r may be in a label: a letter, a digit or a hyphen
// (RFC 952's "LDH" rule, which host names follow).
func isLDH(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-'
}

// looksLikeName says whether a rule's target that is not an address should be
// read as a name, so that its error is about names. A target with a colon or
// a slash is an address or a CIDR gone wrong, and so is one whose last label
// is all digits (1.2.3.4.5, 192.0.2.300): no top-level domain is. A target
// without a dot is a word, not a name (not-an-address, a line of a file that
// is not a list); a * makes a name of it in any case.
func looksLikeName(s string) bool {
	if strings.ContainsAny(s, ":/") {
		return false
	}
	if strings.Contains(s, wildcardLabel) {
		return true
	}
	s = strings.TrimSuffix(s, ".")
	i := strings.LastIndexByte(s, '.')
	if i < 0 {
		return false
	}
	return strings.Trim(s[i+1:], "0123456789") != ""
}

// Wildcard says whether n is a wildcard pattern (*.example.com).
func (n Name) Wildcard() bool { return strings.HasPrefix(string(n), wildcardLabel+".") }

// suffix is what a wildcard's matches end with: .example.com for
// *.example.com. The dot keeps badexample.com from matching.
func (n Name) suffix() string { return string(n)[len(wildcardLabel):] }

// Matches says whether the query name q matches n: q is n, for an exact
// name, or q ends with one label or more and then n without its *, for a
// wildcard. q is compared in lower case and without a trailing dot, as names
// are case-insensitive and the dot only says the name is absolute.
func (n Name) Matches(q string) bool {
	q = canonicalQuery(q)
	if !n.Wildcard() {
		return q == string(n)
	}
	s := n.suffix()
	return len(q) > len(s) && strings.HasSuffix(q, s)
}

// canonicalQuery is a query name as names are compared: lower case, without
// the trailing dot.
func canonicalQuery(q string) string {
	return strings.ToLower(strings.TrimSuffix(q, "."))
}

// String returns the name in its canonical form.
func (n Name) String() string { return string(n) }
