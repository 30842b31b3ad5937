package policy

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unsafe"
)

// maxListProblems bounds how many problems of a list file are reported: a
// file that is not a list at all should not print a million lines.
const maxListProblems = 20

// listBuffer is what a list is read through: it also bounds the length of a
// line, as bufio.Scanner did before.
const listBuffer = bufio.MaxScanTokenSize

// AddList adds the rules of a list file: one rule a line, in any form
// ParseRule reads (most lists have an IPv4 or IPv6 address or CIDR a line);
// blank lines and everything after a '#' are ignored. This is the format of
// public blocklists, and reading it is far quicker than YAML for hundreds of
// thousands of rules. A line that stands for several rules (ADDR:PORT, any)
// is several rules for conflicts, each reported. A file with problems
// returns a *FileError listing them (the first 20).
func (p *Policy) AddList(path string, dir Direction, action Action) error {
	return p.AddListContext(context.Background(), path, dir, action)
}

// AddListContext is AddList that stops reading when ctx is done. Only a
// regular file of at most MaxFileSize bytes is read.
func (p *Policy) AddListContext(ctx context.Context, path string, dir Direction, action Action) error {
	f, err := openFile("list file", path)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := countLines(newFileReader(ctx, f))
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		return readError("list file", path, err)
	}
	problems, err := p.addListed(bufio.NewReaderSize(newFileReader(ctx, f), listBuffer), n, dir, action)
	switch {
	case errors.Is(err, bufio.ErrTooLong):
		return fmt.Errorf("read list file %s: %w", oneLine(path), err)
	case err != nil:
		return readError("list file", path, err)
	}
	if len(problems) > 0 {
		slices.SortStableFunc(problems, func(a, b Problem) int { return cmp.Compare(a.Line, b.Line) })
		return &FileError{Path: path, Problems: problems[:min(len(problems), maxListProblems)], CheckFlag: listFlag(dir, action)}
	}
	return nil
}

// listFlag is the flag that gives a list file for dir and action.
func listFlag(dir Direction, action Action) string {
	if dir == Ingress {
		return "--" + action.String() + "-in-list"
	}
	return "--" + action.String() + "-list"
}

// countLines counts the lines of a file, so that room for its rules can be
// made at once: growing a million-rule policy step by step costs more than
// parsing it. The file is read twice, through the page cache, rather than
// held in memory.
func countLines(r io.Reader) (int, error) {
	buf := make([]byte, listBuffer)
	n := 1
	for {
		k, err := r.Read(buf)
		n += bytes.Count(buf[:k], []byte("\n"))
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return 0, err
		}
	}
}

// notAList is the one problem of a file whose first entry is not a rule:
// it is more likely some other file (block_lists: [/etc/shadow]) than a list
// with a typo, so none of it is quoted.
const notAList = "not a list file: its first entry is not an IPv4 or IPv6 address or CIDR, so no line of it is shown; a list file has one rule a line, an address or CIDR with ports or without (192.0.2.0/24, 192.0.2.1:tcp/443)"

// addListed adds the rules of a list and returns the first problems. A list
// whose first entry is not a rule stops there, with notAList.
//
// Address rules are appended to Rules unsettled, and settled at the end (see
// settle): that is what makes a million-rule list quick. A name rule is added
// as AddMatch adds it; the address rules before the first name are settled
// first, and those after it are added as AddMatch adds them too, so that IDs
// follow the lines whatever the mix. Lists of names are short next to the
// blocklists of addresses.
func (p *Policy) addListed(r *bufio.Reader, n int, dir Direction, action Action) (problems []Problem, err error) {
	from := len(p.Rules)
	p.Grow(n)
	lines := make([]int32, 0, n) // of Rules[from:]
	settle := func() {
		for _, c := range p.settle(from) {
			problems = append(problems, Problem{Line: int(lines[c.pos-from]), Msg: c.msg})
		}
	}
	problem := func(line int, err error) {
		if len(problems) < maxListProblems {
			problems = append(problems, Problem{Line: line, Msg: err.Error()})
		}
	}
	listed, checked := false, false
	for line := 1; ; line++ {
		b, rerr := r.ReadSlice('\n')
		if errors.Is(rerr, bufio.ErrBufferFull) { // not a list: fail as the line scanner did
			err = bufio.ErrTooLong
			break
		}
		if len(b) == 0 {
			if rerr != io.EOF {
				err = rerr
			}
			break
		}
		// The line as a string without copying it: it is valid until the
		// next read, and nothing below keeps it (errors quote it, which
		// copies it; a name is copied before it is kept). A million small
		// copies cost more than parsing.
		l := unsafe.String(unsafe.SliceData(b), len(b))
		l, _, _ = strings.Cut(l, "#")
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		matches, perr := parseListed(l)
		if perr != nil && !listed {
			return []Problem{{Line: line, Msg: notAList}}, nil
		}
		listed = true
		if perr == nil {
			perr = egressOnly(dir, matches)
		}
		if perr != nil {
			problem(line, perr)
			continue
		}
		for _, m := range matches {
			if m.Name != "" && !checked {
				settle()
				checked = true
			}
			if checked {
				m.Name = Name(strings.Clone(string(m.Name)))
				if err := p.AddMatch(dir, action, m); err != nil {
					problem(line, err)
				}
				continue
			}
			p.Rules = append(p.Rules, Rule{Dir: dir, Prefix: m.Prefix, Ports: m.Ports, Action: action})
			lines = append(lines, int32(line))
		}
	}
	if !checked {
		settle()
	}
	return problems, err
}

// parseListed reads one entry of a list. Most entries of most lists are a
// bare IPv4 address or CIDR: those skip ParseRule's allocation.
func parseListed(l string) ([]Match, error) {
	if strings.ContainsAny(l, ":[") || equalFoldASCII(l, anyTarget) {
		return ParseRule(l)
	}
	prefix, err := ParsePrefix(l)
	if err != nil {
		return ParseRule(l) // a name, or the address's error
	}
	return []Match{{Prefix: prefix}}, nil
}
