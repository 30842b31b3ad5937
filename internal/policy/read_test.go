package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readers are the two ways a file is read: as a policy file and as a list.
var readers = []struct {
	kind string
	read func(ctx context.Context, path string) error
}{
	{"policy file", func(ctx context.Context, path string) error {
		_, _, err := LoadFileContext(ctx, path)
		return err
	}},
	{"list file", func(ctx context.Context, path string) error {
		return New().AddListContext(ctx, path, Egress, Block)
	}},
}

// within runs read and fails the test if it has not returned in 10 s: a read
// that blocks (on a FIFO without a writer) would otherwise hang the test.
func within(t *testing.T, read func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- read() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("still reading after 10 s")
		return nil
	}
}

// TestNotRegularFiles checks that what is not a regular file is refused, by
// its kind, without waiting for a writer (a FIFO) or reading without end (a
// device).
func TestNotRegularFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe() // as from --block-list <(curl ...)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	pipe := fmt.Sprintf("/proc/self/fd/%d", r.Fd())
	for _, tc := range []struct{ path, want string }{
		{fifo, ": is a pipe (FIFO), not a regular file: write what it gives to a file, and name that"},
		{pipe, ": is a pipe (FIFO), not a regular file"},
		{"/dev/zero", ": is a character device, not a regular file"},
		{dir, ": is a directory, not a regular file"},
		{"", "empty file name: give the path of a file"},
	} {
		for _, rd := range readers {
			t.Run(rd.kind+" "+tc.path, func(t *testing.T) {
				err := within(t, func() error { return rd.read(context.Background(), tc.path) })
				want := rd.kind + ": " + tc.path + tc.want
				if tc.path == "" {
					want = rd.kind + ": " + tc.want
				}
				if err == nil || !strings.HasPrefix(err.Error(), want) {
					t.Errorf("error %v, want %q", err, want)
				}
			})
		}
	}
}

// TestFileTooLarge checks the bound on what is read: a file larger than
// MaxFileSize is refused before it is read (a sparse one here, which costs no
// disk), and a file that grows past it while it is read fails there.
func TestFileTooLarge(t *testing.T) {
	big := filepath.Join(t.TempDir(), "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxFileSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, rd := range readers {
		err := within(t, func() error { return rd.read(context.Background(), big) })
		want := fmt.Sprintf("%s: %s: is %d bytes, more than 512 MiB, the most cgwall reads of one file", rd.kind, big, MaxFileSize+1)
		if err == nil || err.Error() != want {
			t.Errorf("%s: %v, want %q", rd.kind, err, want)
		}
	}

	small := filepath.Join(t.TempDir(), "small")
	os.WriteFile(small, []byte("192.0.2.1\n192.0.2.2\n"), 0o600)
	f, err = os.Open(small)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = io.ReadAll(&fileReader{ctx: context.Background(), f: f, limit: 12})
	if !errors.Is(err, errTooLarge) {
		t.Errorf("a read past the limit: %v", err)
	}
}

// TestReadCancelled checks that reading stops when the context is done, and
// says why.
func TestReadCancelled(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "list.txt")
	os.WriteFile(list, []byte("192.0.2.1\n"), 0o600)
	policy := filepath.Join(dir, "p.yaml")
	os.WriteFile(policy, []byte("egress:\n  block: [198.51.100.1]\n"), 0o600)
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errors.New("interrupt signal received")) // as signal.NotifyContext's, but for errors.Is
	for _, rd := range readers {
		path := policy
		if rd.kind == "list file" {
			path = list
		}
		err := rd.read(ctx, path)
		if !errors.Is(err, ctx.Err()) || !strings.Contains(err.Error(), "interrupt signal received") {
			t.Errorf("%s: %v", rd.kind, err)
		}
	}
	// A policy's list files are read with the policy's context.
	os.WriteFile(policy, []byte("egress:\n  block_lists: [list.txt]\n"), 0o600)
	p, _, err := parseFile(ctx, policy, []byte("egress:\n  block_lists: [list.txt]\n"))
	if err == nil || !strings.Contains(err.Error(), "interrupt signal received") {
		t.Errorf("a policy's list file: %v, %v", p, err)
	}
}
