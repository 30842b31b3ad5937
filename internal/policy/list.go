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
	from := len(p.Rules)
	lines, problems, err := p.appendList(bufio.NewReaderSize(newFileReader(ctx, f), listBuffer), n, dir, action)
	for _, c := range p.settle(from) {
		problems = append(problems, Problem{Line: int(lines[c.pos-from]), Msg: c.msg})
	}
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

// appendList appends the rules of a list to Rules, unsettled (see settle),
// and returns the line of each and the first problems. A list whose first
// entry is not a rule stops there, with notAList.
func (p *Policy) appendList(r *bufio.Reader, n int, dir Direction, action Action) (lines []int32, problems []Problem, err error) {
	p.Grow(n)
	lines = make([]int32, 0, n)
	listed := false
	for line := 1; ; line++ {
		b, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) { // not a list: fail as the line scanner did
			return lines, problems, bufio.ErrTooLong
		}
		if len(b) == 0 {
			if err == io.EOF {
				err = nil
			}
			return lines, problems, err
		}
		// The line as a string without copying it: it is valid until the
		// next read, and nothing below keeps it (errors quote it, which
		// copies it). A million small copies cost more than parsing.
		l := unsafe.String(unsafe.SliceData(b), len(b))
		l, _, _ = strings.Cut(l, "#")
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		matches, err := parseListed(l)
		if err != nil && !listed {
			return lines, []Problem{{Line: line, Msg: notAList}}, nil
		}
		listed = true
		if err != nil {
			if len(problems) < maxListProblems {
				problems = append(problems, Problem{Line: line, Msg: err.Error()})
			}
			continue
		}
		for _, m := range matches {
			p.Rules = append(p.Rules, Rule{Dir: dir, Prefix: m.Prefix, Ports: m.Ports, Action: action})
			lines = append(lines, int32(line))
		}
	}
}

// parseListed reads one entry of a list. Most entries of most lists are a
// bare IPv4 address or CIDR: those skip ParseRule's allocation.
func parseListed(l string) ([]Match, error) {
	if strings.ContainsAny(l, ":[") || equalFoldASCII(l, anyTarget) {
		return ParseRule(l)
	}
	prefix, err := ParsePrefix(l)
	if err != nil {
		return nil, err
	}
	return []Match{{Prefix: prefix}}, nil
}
