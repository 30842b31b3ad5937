package policy

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// maxListProblems bounds how many problems of a list file are reported: a
// file that is not a list at all should not print a million lines.
const maxListProblems = 20

// AddList adds a rule for every address in a list file: one IPv4 or IPv6
// address or CIDR a line; blank lines and everything after a '#' are ignored.
// This is the format of public blocklists, and reading it is far quicker than
// YAML for hundreds of thousands of rules. A file with problems returns a
// *FileError listing them (the first 20).
func (p *Policy) AddList(path string, dir Direction, action Action) error {
	text, err := readString(path)
	if err != nil {
		return fmt.Errorf("list file: %w", unwrapPathError(err))
	}
	from := len(p.Rules)
	lines, problems, err := p.appendList(text, dir, action)
	for _, c := range p.settle(from) {
		problems = append(problems, Problem{Line: int(lines[c.pos-from]),
			Msg: fmt.Sprintf("%s is both blocked and allowed for %s", c.rule.Prefix, c.rule.Dir)})
	}
	if err != nil {
		return fmt.Errorf("read list file %s: %w", path, err)
	}
	if len(problems) > 0 {
		slices.SortStableFunc(problems, func(a, b Problem) int { return cmp.Compare(a.Line, b.Line) })
		return &FileError{Path: path, Problems: problems[:min(len(problems), maxListProblems)]}
	}
	return nil
}

// appendList appends a rule for every address of a list to Rules, unsettled
// (see settle), and returns the line of each and the first problems.
func (p *Policy) appendList(text string, dir Direction, action Action) (lines []int32, problems []Problem, err error) {
	// Room for every line at once: growing a million-rule policy step by
	// step costs more than parsing it.
	n := strings.Count(text, "\n") + 1
	p.Grow(n)
	lines = make([]int32, 0, n)
	for line := 1; len(text) > 0; line++ {
		var l string
		l, text, _ = strings.Cut(text, "\n")
		if len(l) > bufio.MaxScanTokenSize { // not a list: fail as the line scanner did
			return lines, problems, bufio.ErrTooLong
		}
		l, _, _ = strings.Cut(l, "#")
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		prefix, err := ParsePrefix(l)
		if err != nil {
			if len(problems) < maxListProblems {
				problems = append(problems, Problem{Line: line, Msg: err.Error()})
			}
			continue
		}
		p.Rules = append(p.Rules, Rule{Dir: dir, Prefix: prefix, Action: action})
		lines = append(lines, int32(line))
	}
	return lines, problems, nil
}

// readString reads a file into a string without the copy that converting
// os.ReadFile's bytes makes: the lines of a list are cut from it, and parsed,
// without allocating.
func readString(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var b strings.Builder
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		b.Grow(int(fi.Size()))
	}
	if _, err := io.Copy(&b, f); err != nil {
		return "", err
	}
	return b.String(), nil
}
