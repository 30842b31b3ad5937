package policy

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
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
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("list file: %w", unwrapPathError(err))
	}
	// The rules go straight into Rules, with room for every line at once:
	// growing a million-rule policy step by step costs more than parsing it.
	// Repeats are found afterwards, by sorting (see settle).
	from, n := len(p.Rules), bytes.Count(data, []byte("\n"))+1
	p.Grow(n)
	lines := make([]int32, 0, n) // the line of each rule from Rules[from:]
	var problems []Problem
	s := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; s.Scan(); line++ {
		text, _, _ := strings.Cut(s.Text(), "#")
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		prefix, err := ParsePrefix(text)
		if err != nil {
			if len(problems) < maxListProblems {
				problems = append(problems, Problem{Line: line, Msg: err.Error()})
			}
			continue
		}
		p.Rules = append(p.Rules, Rule{Dir: dir, Prefix: prefix, Action: action})
		lines = append(lines, int32(line))
	}
	for _, c := range p.settle(from) {
		problems = append(problems, Problem{Line: int(lines[c.pos-from]),
			Msg: fmt.Sprintf("%s is both blocked and allowed for %s", c.rule.Prefix, c.rule.Dir)})
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("read list file %s: %w", path, err)
	}
	if len(problems) > 0 {
		slices.SortStableFunc(problems, func(a, b Problem) int { return cmp.Compare(a.Line, b.Line) })
		return &FileError{Path: path, Problems: problems[:min(len(problems), maxListProblems)]}
	}
	return nil
}
