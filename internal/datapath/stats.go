package datapath

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// Counter is a number of packets (or socket calls) and their bytes. Only
// the packet hooks (egress, ingress) know bytes: the socket hooks (connect,
// sendmsg, sock_create) count calls, and 0 bytes.
type Counter struct {
	Packets uint64
	Bytes   uint64
}

func (c Counter) plus(o Counter) Counter {
	return Counter{c.Packets + o.Packets, c.Bytes + o.Bytes}
}

// Stats are a hook's verdict counters, summed over CPUs.
type Stats struct {
	Pass       Counter
	Drop       Counter // includes Malformed
	AuditDrop  Counter // would have been dropped; passed in audit mode
	Malformed  Counter // IP header unreadable or invalid
	EventsLost Counter // decisions not logged because the ring buffer was full
}

// Stats reads a hook's counters.
func (d *Datapath) Stats(hook Hook) (Stats, error) {
	var s Stats
	for stat, c := range map[cgwallStat]*Counter{
		cgwallStatSTAT_PASS:        &s.Pass,
		cgwallStatSTAT_DROP:        &s.Drop,
		cgwallStatSTAT_AUDIT_DROP:  &s.AuditDrop,
		cgwallStatSTAT_MALFORMED:   &s.Malformed,
		cgwallStatSTAT_EVENTS_LOST: &s.EventsLost,
	} {
		var perCPU []cgwallCounter
		key := uint32(hook)*uint32(cgwallStatSTAT_MAX) + uint32(stat)
		if err := d.objs.Stats.Lookup(key, &perCPU); err != nil {
			return Stats{}, fmt.Errorf("read %s counters: %w", hook, err)
		}
		for _, v := range perCPU {
			c.Packets += v.Packets
			c.Bytes += v.Bytes
		}
	}
	return s, nil
}

// EventsLost sums the lost events of every hook.
func (d *Datapath) EventsLost() (uint64, error) {
	var n uint64
	for _, h := range Hooks {
		s, err := d.Stats(h)
		if err != nil {
			return 0, err
		}
		n += s.EventsLost.Packets
	}
	return n, nil
}

// totals are the stats that ResetTotals resets.
var totals = []cgwallStat{cgwallStatSTAT_PASS, cgwallStatSTAT_DROP, cgwallStatSTAT_AUDIT_DROP, cgwallStatSTAT_MALFORMED}

// ResetTotals zeroes every hook's verdict counters, for a policy that
// replaces another: its totals start from nothing, as its rules' counters do.
// A packet judged between the switch and the reset goes uncounted. Lost
// events are not reset: they count the losses of the ring buffer, which
// outlives a policy, and watch reports them as they grow.
func (d *Datapath) ResetTotals() error {
	zero := make([]cgwallCounter, ebpf.MustPossibleCPU())
	for _, hook := range Hooks {
		for _, stat := range totals {
			key := uint32(hook)*uint32(cgwallStatSTAT_MAX) + uint32(stat)
			if err := d.objs.Stats.Update(key, zero, ebpf.UpdateExist); err != nil {
				return fmt.Errorf("reset %s counters: %w", hook, err)
			}
		}
	}
	return nil
}
