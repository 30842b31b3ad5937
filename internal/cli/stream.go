package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/spf13/pflag"

	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/events"
	"github.com/cgwall/cgwall/internal/policy"
)

// lostCheckInterval is how often the count of lost events is read and reported.
const lostCheckInterval = time.Second

// streamer prints a datapath's events, and the resolver's DNS decisions
// in the same stream, and reports the ones it lost.
type streamer struct {
	d      *datapath.Datapath
	rd     *datapath.Reader
	dns    *dnsQueue // nil without name rules
	format events.Format
	mu     sync.Mutex // out is written by the packet and the DNS printers
	out    *bufio.Writer
	stderr io.Writer
	lost   uint64 // lost events reported so far
	// dnsLost is how many lost DNS decisions were reported.
	dnsLost uint64
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
	dnsDone := s.printDNS()
	defer dnsDone()

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
		if err := s.write(e); err != nil {
			return err
		}
	}
}

// write prints a packet decision the filter lets through, flushing when the
// ring buffer has nothing more.
func (s *streamer) write(e datapath.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wanted(e) {
		s.resolve(&e)
		e.Cgroup = s.cgroup
		if err := events.Write(s.out, s.format, e); err != nil {
			return err
		}
	}
	if s.rd.Pending() == 0 {
		return s.out.Flush()
	}
	return nil
}

// printDNS prints the resolver's decisions as they come, until the
// function it returns is called; that prints what is left, and returns
// once it is printed. A failed write ends nothing: the packet stream,
// which writes to the same place, reports it.
func (s *streamer) printDNS() (stop func()) {
	if s.dns == nil {
		return func() {}
	}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case e := <-s.dns.ch:
				s.writeDNS(e)
			case <-quit:
				for {
					select {
					case e := <-s.dns.ch:
						s.writeDNS(e)
					default:
						return
					}
				}
			}
		}
	}()
	return func() { close(quit); <-done }
}

// writeDNS prints a DNS decision the filters let through. It names no
// process, so a filter by process leaves it out.
func (s *streamer) writeDNS(e events.DNS) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.filter.Logs(policy.Action(e.Action)) && s.process == (processFilter{}) {
		e.Cgroup = s.cgroup
		events.WriteDNS(s.out, s.format, e)
	}
	if len(s.dns.ch) == 0 {
		s.out.Flush()
	}
}

// wanted says whether the filter lets an event through.
func (s *streamer) wanted(e datapath.Event) bool {
	return s.filter.Logs(policy.Action(e.Action)) && s.process.matches(e)
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

// reportLost says how many events the datapath and the resolver dropped
// since the last report.
func (s *streamer) reportLost() error {
	if s.dns != nil {
		if n := s.dns.lost.Load(); n > s.dnsLost {
			fmt.Fprintf(s.stderr, "lost %d DNS events%s (queue full; %d in total)\n", n-s.dnsLost, s.where(), n)
			s.dnsLost = n
		}
	}
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

// dnsQueueSize is how many DNS decisions wait to be printed before more are
// dropped: about as many as the ring buffer holds packet events.
const dnsQueueSize = 4096

// dnsQueue carries the resolver's decisions to the streamer. The resolver
// never waits for it: a decision that finds it full is dropped and counted,
// as the datapath drops events when its ring buffer is full, so that a slow
// reader of the events never slows the cgroup's DNS.
type dnsQueue struct {
	ch   chan events.DNS
	lost atomic.Uint64
}

func newDNSQueue() *dnsQueue { return &dnsQueue{ch: make(chan events.DNS, dnsQueueSize)} }

func (q *dnsQueue) put(e events.DNS) {
	select {
	case q.ch <- e:
	default:
		q.lost.Add(1)
	}
}
