package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/cgwall/cgwall/internal/learn"
)

// DefaultSeenCapacity is how many destinations (address, protocol, port) a
// learning load records: far more than a build reaches, at some 100 bytes
// of kernel memory each (key, value and the hash's element), allocated as
// they come.
const DefaultSeenCapacity = 65536

// WithLearning records every destination that egress judges (see Seen), for
// a policy to be learned from what the cgroup did. capacity bounds the
// destinations recorded (0: DefaultSeenCapacity); those past it are
// counted, not recorded.
func WithLearning(capacity int) Option {
	return func(o *options) {
		o.seen = uint32(capacity)
		if capacity <= 0 {
			o.seen = DefaultSeenCapacity
		}
	}
}

// WithDNSAnswers, with WithLearning, also copies the DNS answers that arrive
// over UDP from port 53 (see Answers), for a learner that does not serve the
// cgroup's DNS itself.
func WithDNSAnswers() Option { return func(o *options) { o.answers = true } }

// setLearning sets the constants and the sizes of the learning maps in spec.
func setLearning(spec *ebpf.CollectionSpec, o *options) error {
	if err := spec.Variables[cgwallVarLearnFlows].Set(uint8(1)); err != nil {
		return fmt.Errorf("set learn_flows: %w", err)
	}
	spec.Maps[cgwallMapSeen].MaxEntries = o.seen
	if !o.answers {
		return nil
	}
	if err := spec.Variables[cgwallVarLearnAnswers].Set(uint8(1)); err != nil {
		return fmt.Errorf("set learn_answers: %w", err)
	}
	spec.Maps[cgwallMapAnswers].MaxEntries = answersSize
	return nil
}

// answersSize is the answers ring buffer's size while learning: some 120
// answers of the largest kind waiting for the reader.
const answersSize = 256 << 10

// foregroundMaps are the maps that only a foreground filter fills: a
// persistent policy's folder does not pin them, so that adding them took no
// new layout.
var foregroundMaps = map[string]bool{cgwallMapSeen: true, cgwallMapSeenLost: true, cgwallMapAnswers: true}

// pinnedMaps are the maps of objs that a persistent policy pins.
func pinnedMaps(objs *cgwallMaps) map[string]*ebpf.Map {
	m := mapsByName(objs)
	maps.DeleteFunc(m, func(name string, _ *ebpf.Map) bool { return foregroundMaps[name] })
	return m
}

// Seen returns the destinations recorded since load, in the terms of the
// package that learns from them, and how many found the record (or, with
// WithDNSAnswers, the answers' ring buffer) full. It fails for a datapath
// that is not learning.
func (d *Datapath) Seen() ([]learn.Flow, uint64, error) {
	if !d.learning {
		return nil, 0, errors.New("read what the cgroup reached: the datapath was not loaded to learn")
	}
	clock, err := newBootClock()
	if err != nil {
		return nil, 0, err
	}
	var flows []learn.Flow
	var k cgwallSeenKey
	var v cgwallSeenFlow
	it := d.objs.Seen.Iterate()
	for it.Next(&k, &v) {
		flows = append(flows, learn.Flow{
			Addr:    addrOf(k.Family, k.Addr),
			Proto:   k.Proto,
			Port:    k.Port,
			First:   clock.wall(v.FirstNs),
			Packets: v.Packets,
			Pid:     v.Owner.Pid,
			Comm:    comm(v.Owner.Comm),
		})
	}
	if err := it.Err(); err != nil {
		return nil, 0, fmt.Errorf("read what the cgroup reached: %w", err)
	}
	var lost uint64
	if err := d.objs.SeenLost.Lookup(uint32(0), &lost); err != nil {
		return nil, 0, fmt.Errorf("read what the cgroup reached: %w", err)
	}
	return flows, lost, nil
}

// DNSAnswer is a DNS message that arrived over UDP from port 53 while
// learning, as the datapath copied it (cut at 2047 bytes).
type DNSAnswer struct {
	Time time.Time
	Msg  []byte
}

// AnswerReader reads the DNS answers that a learning datapath copies.
type AnswerReader struct {
	rd    *ringbuf.Reader
	clock bootClock
}

// Answers opens the DNS answers of a datapath loaded WithDNSAnswers.
func (d *Datapath) Answers() (*AnswerReader, error) {
	if !d.answers {
		return nil, errors.New("read the cgroup's DNS answers: the datapath was not loaded to copy them")
	}
	clock, err := newBootClock()
	if err != nil {
		return nil, err
	}
	rd, err := ringbuf.NewReader(d.objs.Answers)
	if err != nil {
		return nil, fmt.Errorf("read the cgroup's DNS answers: %w", err)
	}
	return &AnswerReader{rd: rd, clock: clock}, nil
}

// Read waits for the next answer. After Flush, it returns what is left, then
// ringbuf.ErrFlushed; after Close, os.ErrClosed.
func (r *AnswerReader) Read() (DNSAnswer, error) {
	rec, err := r.rd.Read()
	if err != nil {
		return DNSAnswer{}, err
	}
	var raw cgwallDnsAnswer
	hdr := int(unsafe.Offsetof(raw.Data))
	if len(rec.RawSample) < hdr {
		return DNSAnswer{}, fmt.Errorf("read the cgroup's DNS answers: a record of %d bytes", len(rec.RawSample))
	}
	boot := binary.NativeEndian.Uint64(rec.RawSample)
	n := int(binary.NativeEndian.Uint32(rec.RawSample[8:]))
	if n > len(rec.RawSample)-hdr {
		return DNSAnswer{}, fmt.Errorf("read the cgroup's DNS answers: a record says %d bytes, holds %d", n, len(rec.RawSample)-hdr)
	}
	return DNSAnswer{Time: r.clock.wall(boot), Msg: slices.Clone(rec.RawSample[hdr : hdr+n])}, nil
}

// Flush makes Read return what is pending, then ringbuf.ErrFlushed.
func (r *AnswerReader) Flush() error { return r.rd.Flush() }

func (r *AnswerReader) Close() error { return r.rd.Close() }
