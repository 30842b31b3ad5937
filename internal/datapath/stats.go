package datapath

import (
	"fmt"
)

// Hook is one of the datapath's programs, the place a decision was made.
type Hook uint32

const (
	HookEgress     = Hook(cgwallHookHOOK_EGRESS)
	HookIngress    = Hook(cgwallHookHOOK_INGRESS)
	HookConnect    = Hook(cgwallHookHOOK_CONNECT)
	HookSendmsg    = Hook(cgwallHookHOOK_SENDMSG)
	HookSockCreate = Hook(cgwallHookHOOK_SOCK_CREATE)
)

// Hooks lists every hook.
var Hooks = []Hook{HookEgress, HookIngress, HookConnect, HookSendmsg, HookSockCreate}

func (h Hook) String() string { return hookNames[cgwallHook(h)] }

// Counter is a number of packets (or socket calls) and their bytes.
type Counter struct {
	Packets uint64
	Bytes   uint64
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
