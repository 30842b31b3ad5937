package datapath

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/cgwall/cgwall/internal/policy"
)

// Reader reads the decisions a Datapath streams, naming each decision's rule
// from its own snapshot of the policy.
type Reader struct {
	rd     *ringbuf.Reader
	record ringbuf.Record
	rules  atomic.Pointer[policy.Policy]
	clock  bootClock

	since   time.Time     // Read skips events older than this
	skipped atomic.Uint64 // events Read skipped for their age
}

// Events opens the datapath's event stream, naming rules from the policy in
// force now, which it shares: a caller that edits the datapath while reading
// gives the reader a policy of its own with Use. Read is for one goroutine at
// a time.
func (d *Datapath) Events() (*Reader, error) {
	clock, err := newBootClock()
	if err != nil {
		return nil, err
	}
	rd, err := ringbuf.NewReader(d.objs.Events)
	if err != nil {
		return nil, fmt.Errorf("open event ring buffer: %w", err)
	}
	r := &Reader{rd: rd, clock: clock}
	r.rules.Store(d.policy)
	return r, nil
}

// Use makes the reader name rules from p, for a policy that another cgwall
// edited (Datapath.Refresh reads it back). The reader keeps p; the caller
// must not change it.
func (r *Reader) Use(p *policy.Policy) { r.rules.Store(p) }

// Read blocks until the next event. After Close it returns an error wrapping
// ringbuf.ErrClosed. An event whose rule the reader's policy does not have
// comes with Rule empty: Resolve names it after Use.
func (r *Reader) Read() (Event, error) {
	for {
		if err := r.rd.ReadInto(&r.record); err != nil {
			return Event{}, err
		}
		e, err := decodeEvent(r.record.RawSample, r.clock)
		if err != nil {
			return Event{}, err
		}
		if e.Time.Before(r.since) {
			r.skipped.Add(1)
			continue
		}
		r.Resolve(&e)
		return e, nil
	}
}

// SkipOlder makes Read skip the events decided before now. A persistent
// policy's ring buffer outlives its readers: what it holds when a reader
// opens it (up to some 3,600 events) may be minutes old, and from a policy
// since replaced. Ages are compared on the clock the events carry, through
// the reader's one offset to wall-clock time: setting the wall clock
// meanwhile changes nothing. Call it before the first Read.
func (r *Reader) SkipOlder() error {
	now, err := bootNow()
	if err != nil {
		return err
	}
	r.since = r.clock.wall(now)
	return nil
}

// Skipped returns how many events Read skipped since SkipOlder.
func (r *Reader) Skipped() uint64 { return r.skipped.Load() }

// Resolve names e's rule from the reader's policy: "default" when no rule
// decided, "" when the policy has no rule with its ID.
func (r *Reader) Resolve(e *Event) {
	switch rule, ok := r.rules.Load().Rule(e.RuleID); {
	case e.RuleID == 0:
		e.Rule = "default"
	case ok:
		e.Rule = rule.Match().String()
	default:
		e.Rule = ""
	}
}

// Close unblocks Read and releases the reader.
func (r *Reader) Close() error { return r.rd.Close() }

// Pending returns how many bytes of events wait in the ring buffer.
func (r *Reader) Pending() int { return r.rd.AvailableBytes() }

// Flush makes a blocked or later Read return the events pending now, then an
// error wrapping ringbuf.ErrFlushed.
func (r *Reader) Flush() error { return r.rd.Flush() }
