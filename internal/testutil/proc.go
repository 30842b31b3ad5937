package testutil

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
)

// This file is the one way the end-to-end tests and the benchmark harness run
// a long-lived cgwall: start it, wait for the line that says its filter is in
// force, and stop it with SIGINT as a user's Ctrl-C would. Nothing here
// sleeps: every wait ends on a line, on the process's exit, or on the
// caller's context.

// Lines collects a stream's lines and lets a caller wait for one.
type Lines struct {
	mu     sync.Mutex
	all    []string
	closed bool
	change chan struct{} // closed and replaced on every new line and at the end
	end    chan struct{} // closed at the end
}

// Collect reads r line by line until it ends.
func Collect(r io.Reader) *Lines {
	l := &Lines{change: make(chan struct{}), end: make(chan struct{})}
	go func() {
		s := bufio.NewScanner(r)
		for s.Scan() {
			l.mu.Lock()
			l.all = append(l.all, s.Text())
			l.notify()
			l.mu.Unlock()
		}
		l.mu.Lock()
		l.closed = true
		l.notify()
		l.mu.Unlock()
		close(l.end)
	}()
	return l
}

func (l *Lines) notify() {
	close(l.change)
	l.change = make(chan struct{})
}

// WaitFor returns the first line containing substr, waiting for it until the
// stream ends or ctx is done.
func (l *Lines) WaitFor(ctx context.Context, substr string) (string, error) {
	line, _, err := l.WaitFrom(ctx, 0, substr)
	return line, err
}

// WaitFrom returns the first line from the from'th on that contains every
// one of substrs, and its index, waiting for it until the stream ends or ctx
// is done. A caller that waits for the same message again passes the index
// after the last one it saw.
func (l *Lines) WaitFrom(ctx context.Context, from int, substrs ...string) (string, int, error) {
	for i := from; ; {
		l.mu.Lock()
		for ; i < len(l.all); i++ {
			if containsAll(l.all[i], substrs) {
				line := l.all[i]
				l.mu.Unlock()
				return line, i, nil
			}
		}
		closed, change := l.closed, l.change
		l.mu.Unlock()
		if closed {
			return "", 0, fmt.Errorf("the stream ended without a line containing %q", substrs)
		}
		select {
		case <-change:
		case <-ctx.Done():
			return "", 0, fmt.Errorf("no line containing %q: %w", substrs, ctx.Err())
		}
	}
}

func containsAll(s string, substrs []string) bool {
	for _, sub := range substrs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// Len says how many lines have come so far.
func (l *Lines) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.all)
}

// Ended is closed when the stream has ended.
func (l *Lines) Ended() <-chan struct{} { return l.end }

// All returns the lines so far.
func (l *Lines) All() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.all...)
}

func (l *Lines) String() string { return strings.Join(l.All(), "\n") }

// Proc is a started process whose output is collected line by line.
type Proc struct {
	Cmd    *exec.Cmd
	Stdout *Lines // nil when the caller set Cmd.Stdout
	Stderr *Lines
	done   chan struct{}
}

// Start starts cmd and waits until a line of its stderr contains ready. If
// the process exits first, or ctx ends first, it is killed and the error
// carries what it printed on stderr. ctx bounds the wait, not the process.
func Start(ctx context.Context, cmd *exec.Cmd, ready string) (*Proc, error) {
	p := &Proc{Cmd: cmd, done: make(chan struct{})}
	var stdout io.Reader
	var err error
	if cmd.Stdout == nil {
		if stdout, err = cmd.StdoutPipe(); err != nil {
			return nil, err
		}
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	streams := []*Lines{Collect(stderr)}
	p.Stderr = streams[0]
	if stdout != nil {
		p.Stdout = Collect(stdout)
		streams = append(streams, p.Stdout)
	}
	go func() {
		// exec.Cmd.Wait closes the pipes: read them to their end first.
		for _, l := range streams {
			<-l.end
		}
		cmd.Wait()
		close(p.done)
	}()
	if _, err := p.Stderr.WaitFor(ctx, ready); err != nil {
		p.Kill()
		return nil, fmt.Errorf("%s: %w; stderr:\n%s", cmd.Path, err, p.Stderr)
	}
	return p, nil
}

// Done is closed once the process has exited and its output has been read.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Stop sends SIGINT and waits for the process to exit, as long as ctx lets
// it; then it kills it. It returns the exit code.
func (p *Proc) Stop(ctx context.Context) (int, error) {
	return p.StopWith(ctx, os.Interrupt)
}

// StopWith is Stop with another signal, for a process that SIGINT does not
// end (dnsmasq ends on SIGTERM).
func (p *Proc) StopWith(ctx context.Context, sig os.Signal) (int, error) {
	p.Cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return p.Cmd.ProcessState.ExitCode(), nil
	case <-ctx.Done():
		p.Kill()
		return -1, fmt.Errorf("%s did not exit on %v: %w; stderr:\n%s", p.Cmd.Path, sig, ctx.Err(), p.Stderr)
	}
}

// Kill kills the process, if it still runs, and waits for it.
func (p *Proc) Kill() {
	p.Cmd.Process.Kill() // fails only when it has exited already
	<-p.done
}
