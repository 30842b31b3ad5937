package datapath

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// DefaultSeenCapacity is how many destinations (address, protocol, port) a
// learning load records: far more than a build reaches, at 40 bytes of
// kernel memory each, allocated as they come.
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

// setLearning sets the constant and the size of the seen map in spec.
func setLearning(spec *ebpf.CollectionSpec, capacity uint32) error {
	if err := spec.Variables[cgwallVarLearnFlows].Set(uint8(1)); err != nil {
		return fmt.Errorf("set learn_flows: %w", err)
	}
	spec.Maps[cgwallMapSeen].MaxEntries = capacity
	return nil
}

// foregroundMaps are the maps that only a foreground filter fills: a
// persistent policy's folder does not pin them, so that adding them took no
// new layout.
var foregroundMaps = map[string]bool{cgwallMapSeen: true, cgwallMapSeenLost: true}

// pinnedMaps are the maps of objs that a persistent policy pins.
func pinnedMaps(objs *cgwallMaps) map[string]*ebpf.Map {
	m := mapsByName(objs)
	maps.DeleteFunc(m, func(name string, _ *ebpf.Map) bool { return foregroundMaps[name] })
	return m
}

// Flow is one destination the cgroup sent to while learning.
type Flow struct {
	Addr    netip.Addr // IPv4 unmapped
	Proto   uint8
	Port    uint16 // 0 for a protocol without ports
	First   time.Time
	Packets uint64
	Owner   Owner // the process of the first packet's socket; Pid 0 when not known
}

// Owner is a process, as the datapath names it.
type Owner struct {
	Pid  uint32
	Comm string
}

// Seen returns the destinations recorded since load, and how many found the
// record full. It fails for a datapath that is not learning.
func (d *Datapath) Seen() ([]Flow, uint64, error) {
	if !d.learning {
		return nil, 0, errors.New("read what the cgroup reached: the datapath was not loaded to learn")
	}
	clock, err := newBootClock()
	if err != nil {
		return nil, 0, err
	}
	var flows []Flow
	var k cgwallSeenKey
	var v cgwallSeenFlow
	it := d.objs.Seen.Iterate()
	for it.Next(&k, &v) {
		flows = append(flows, Flow{
			Addr:    addrOf(k.Family, k.Addr),
			Proto:   k.Proto,
			Port:    k.Port,
			First:   clock.wall(v.FirstNs),
			Packets: v.Packets,
			Owner:   Owner{Pid: v.Owner.Pid, Comm: comm(v.Owner.Comm)},
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
