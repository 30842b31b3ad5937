package policy

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
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
	// Room for every line at once: growing a million-rule policy step by
	// step costs more than parsing it.
	p.Grow(bytes.Count(data, []byte("\n")) + 1)
	fe := &FileError{Path: path}
	s := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; s.Scan(); line++ {
		text, _, _ := strings.Cut(s.Text(), "#")
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		prefix, err := ParsePrefix(text)
		if err == nil {
			err = p.AddPrefix(dir, action, prefix)
		}
		if err != nil && len(fe.Problems) < maxListProblems {
			fe.Problems = append(fe.Problems, Problem{Line: line, Msg: err.Error()})
		}
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("read list file %s: %w", path, err)
	}
	if len(fe.Problems) > 0 {
		return fe
	}
	return nil
}
