package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/spf13/pflag"

	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/events"
	"github.com/cgwall/cgwall/internal/policy"
)

// lostCheckInterval is how often the count of lost events is read and reported.
const lostCheckInterval = time.Second

// streamer prints a datapath's events and reports the ones it lost.
type streamer struct {
	d      *datapath.Datapath
	rd     *datapath.Reader
	format events.Format
	out    *bufio.Writer
	stderr io.Writer
	lost   uint64 // lost events reported so far
	// skipped is how many stale events (see Reader.SkipOlder) were reported.
	skipped uint64

	filter  policy.LogLevel // print only what this level asks for
	process processFilter   // and only the decisions about this process
	cgroup  string          // when set, name it in every event
	// refresh reads the policy back from the maps when an event names a rule
	// the reader does not know: another cgwall edited the policy.
	refresh bool
}

func newStreamer(d *datapath.Datapath, rd *datapath.Reader, format events.Format, stdout, stderr io.Writer) *streamer {
	return &streamer{d: d, rd: rd, format: format, out: bufio.NewWriter(stdout), stderr: stderr, filter: policy.LogAll}
}

// stream prints events until ctx is done, then calls stop (which detaches, so
// no new events come), prints what the ring buffer still holds and returns.
func (s *streamer) stream(ctx context.Context, stop func() error) error {
	done := make(chan error, 1)
	go func() { done <- s.print() }()

	tick := time.NewTicker(lostCheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			s.reportSkipped()
			if err := s.reportLost(); err != nil {
				return err
			}
		case err := <-done:
			return fmt.Errorf("read events: %w", err)
		case <-ctx.Done():
			stopErr := stop()
			// Flush makes the reader return what is pending, then ErrFlushed.
			if err := s.rd.Flush(); err != nil {
				return errors.Join(stopErr, err)
			}
			if err := <-done; !errors.Is(err, ringbuf.ErrFlushed) {
				return errors.Join(stopErr, err)
			}
			s.reportSkipped()
			return errors.Join(stopErr, s.reportLost())
		}
	}
}

// print writes events as they come, flushing whenever the ring buffer is empty
// so that lines appear at once without a write per event under load.
func (s *streamer) print() error {
	for {
		e, err := s.rd.Read()
		if err != nil {
			s.out.Flush()
			return err
		}
		if s.wanted(e) {
			s.resolve(&e)
			e.Cgroup = s.cgroup
			if err := events.Write(s.out, s.format, e); err != nil {
				return err
			}
		}
		if s.rd.Pending() == 0 {
			if err := s.out.Flush(); err != nil {
				return err
			}
		}
	}
}

// wanted says whether the filter lets an event through.
func (s *streamer) wanted(e datapath.Event) bool {
	return (s.filter == policy.LogAll || s.filter == policy.LogDrop && e.Action == uint8(policy.Block)) &&
		s.process.matches(e)
}

// processFilter keeps the decisions about one process, by command name or
// PID or both. An event that names no process matches neither.
type processFilter struct {
	comm string
	pid  uint32
}

func (f *processFilter) bind(fs *pflag.FlagSet) {
	fs.StringVar(&f.comm, "comm", "", "print only the decisions about processes whose command name is `NAME` (as in comm=)")
	// --pid already names a target cgroup, by a process in it.
	fs.Uint32Var(&f.pid, "from-pid", 0, "print only the decisions about process `PID` (as in pid=)")
}

func (f processFilter) matches(e datapath.Event) bool {
	return (f.comm == "" || e.Comm == f.comm) && (f.pid == 0 || e.Pid == f.pid)
}

// resolve names an event's rule that the reader's policy does not have, by
// reading the policy back where another cgwall may have added it, or as
// removed. IDs are never handed out twice, so an unknown ID below the
// datapath's next one is a removed rule, and only a newer one is worth
// reading a policy of any size back for.
func (s *streamer) resolve(e *datapath.Event) {
	if e.Rule == "" && s.refresh && e.RuleID >= s.d.NextRuleID() && s.d.Refresh() == nil {
		s.rd.Use(s.d.Policy())
		s.rd.Resolve(e)
	}
	if e.Rule == "" {
		e.Rule = fmt.Sprintf("removed-rule-%d", e.RuleID)
	}
}

// reportSkipped says how many events the reader skipped for their age since
// the last report.
func (s *streamer) reportSkipped() {
	if n := s.rd.Skipped(); n > s.skipped {
		fmt.Fprintf(s.stderr, "skipped %d events%s decided before watch started\n", n-s.skipped, s.where())
		s.skipped = n
	}
}

// where names the streamer's cgroup, for its messages.
func (s *streamer) where() string {
	if s.cgroup == "" {
		return ""
	}
	return " on " + s.cgroup
}

// reportLost says how many events the datapath dropped since the last report.
func (s *streamer) reportLost() error {
	n, err := s.d.EventsLost()
	if err != nil {
		return err
	}
	if n > s.lost {
		fmt.Fprintf(s.stderr, "lost %d events%s (ring buffer full; %d in total)\n", n-s.lost, s.where(), n)
		s.lost = n
	}
	return nil
}
