package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// MaxFileSize is the most cgwall reads of one policy or list file: 512 MiB,
// room for tens of millions of rules, and a bound on what a wrong name makes
// it read (a /proc file has no size until it is read).
const MaxFileSize = 512 << 20

// readChunk bounds one read, so that a cancelled read of a large file stops
// within a chunk.
const readChunk = 1 << 20

// errTooLarge is a file that has more than MaxFileSize bytes.
var errTooLarge = fmt.Errorf("more than %d MiB, the most cgwall reads of one file", MaxFileSize>>20)

// openFile opens a policy or list file (kind says which, for errors). It
// refuses what is not a regular file: opening a FIFO waits for a writer, and
// a device such as /dev/zero never ends. The name is checked before it is
// opened, so that no device is opened at all, and the open file again, in
// case the name changed in between; O_NONBLOCK keeps that open from waiting.
func openFile(kind, path string) (*os.File, error) {
	if path == "" {
		return nil, fmt.Errorf("%s: empty file name: give the path of a file", kind)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", kind, unwrapPathError(err))
	}
	if err := regular(kind, path, fi); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", kind, unwrapPathError(err))
	}
	if fi, err = f.Stat(); err == nil {
		err = regular(kind, path, fi)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// regular says why a file is not a regular file of at most MaxFileSize bytes.
func regular(kind, path string, fi fs.FileInfo) error {
	if fi.Mode().IsRegular() {
		if fi.Size() > MaxFileSize {
			return fmt.Errorf("%s: %s: is %d bytes, %w", kind, oneLine(path), fi.Size(), errTooLarge)
		}
		return nil
	}
	what, hint := "not a regular file", ""
	switch m := fi.Mode(); {
	case m.IsDir():
		what = "a directory"
	case m&fs.ModeNamedPipe != 0:
		what, hint = "a pipe (FIFO)", ": write what it gives to a file, and name that"
	case m&fs.ModeCharDevice != 0:
		what = "a character device"
	case m&fs.ModeDevice != 0:
		what = "a block device"
	case m&fs.ModeSocket != 0:
		what = "a socket"
	}
	if what == "not a regular file" {
		return fmt.Errorf("%s: %s: is not a regular file", kind, oneLine(path))
	}
	return fmt.Errorf("%s: %s: is %s, not a regular file%s", kind, oneLine(path), what, hint)
}

// fileReader reads a file opened by openFile: it stops when ctx is done and
// fails once more than limit bytes have come, whatever the file's size said.
type fileReader struct {
	ctx   context.Context
	f     *os.File
	limit int64
	read  int64
}

func newFileReader(ctx context.Context, f *os.File) *fileReader {
	return &fileReader{ctx: ctx, f: f, limit: MaxFileSize}
}

func (r *fileReader) Read(p []byte) (int, error) {
	if r.ctx.Err() != nil {
		return 0, stopped(r.ctx)
	}
	n, err := r.f.Read(p[:min(len(p), readChunk)])
	if r.read += int64(n); r.read > r.limit {
		return n, errTooLarge
	}
	return n, err
}

// stopped is the error of a done context: its cause, where it has one (the
// signal, for signal.NotifyContext), and always one that errors.Is finds
// context.Canceled or DeadlineExceeded in.
func stopped(ctx context.Context) error {
	err, cause := ctx.Err(), context.Cause(ctx)
	if errors.Is(cause, err) {
		return cause
	}
	return fmt.Errorf("%w: %w", err, cause)
}

// readFile reads all of a file opened by openFile.
func readFile(ctx context.Context, kind, path string, f *os.File) ([]byte, error) {
	var size int64
	if fi, err := f.Stat(); err == nil {
		size = fi.Size()
	}
	data := make([]byte, 0, size+1) // +1: room to see the end at once
	r := newFileReader(ctx, f)
	for {
		if len(data) == cap(data) {
			data = append(data, 0)[:len(data)]
		}
		n, err := r.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		switch {
		case err == io.EOF:
			return data, nil
		case err != nil:
			return nil, readError(kind, path, err)
		}
	}
}

// readError names the file that a read failed on.
func readError(kind, path string, err error) error {
	if errors.Is(err, errTooLarge) {
		return fmt.Errorf("%s: %s: %w", kind, oneLine(path), err)
	}
	return fmt.Errorf("%s: read %s: %w", kind, oneLine(path), unwrapPathError(err))
}
