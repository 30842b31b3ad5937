package datapath

import (
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
)

// Hook is a place where the datapath decides: one or two programs (IPv4 and
// IPv6) attached at one kind of cgroup attach point. Its value is the C enum
// hook, which events and the stats map carry.
type Hook uint8

const (
	HookEgress     = Hook(cgwallHookHOOK_EGRESS)
	HookIngress    = Hook(cgwallHookHOOK_INGRESS)
	HookConnect    = Hook(cgwallHookHOOK_CONNECT)
	HookSendmsg    = Hook(cgwallHookHOOK_SENDMSG)
	HookSockCreate = Hook(cgwallHookHOOK_SOCK_CREATE)
	HookRecvmsg    = Hook(cgwallHookHOOK_RECVMSG)
)

// program is one BPF program of a hook.
type program struct {
	name   string          // in the BPF object
	pin    string          // its link's pin, "link_" + pin, in a persistent policy
	attach ebpf.AttachType //
	// optional programs may be refused by the kernel without failing the
	// load: the packet-socket guard is a BPF LSM program, which kernels
	// without BPF LSM or under lockdown refuse.
	optional bool
}

// hookTable is every hook, in the C enum's order: everything else about hooks
// (their names, the programs to load, where to attach them, their pins)
// derives from it.
var hookTable = []struct {
	hook  Hook
	name  string // as events and list name it
	progs []program
}{
	{HookEgress, "egress", []program{{cgwallProgCgwallEgress, "egress", ebpf.AttachCGroupInetEgress, false}}},
	{HookIngress, "ingress", []program{{cgwallProgCgwallIngress, "ingress", ebpf.AttachCGroupInetIngress, false}}},
	{HookConnect, "connect", []program{
		{cgwallProgCgwallConnect4, "connect4", ebpf.AttachCGroupInet4Connect, false},
		{cgwallProgCgwallConnect6, "connect6", ebpf.AttachCGroupInet6Connect, false},
	}},
	{HookSendmsg, "sendmsg", []program{
		{cgwallProgCgwallSendmsg4, "sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, false},
		{cgwallProgCgwallSendmsg6, "sendmsg6", ebpf.AttachCGroupUDP6Sendmsg, false},
	}},
	{HookSockCreate, "sock_create", []program{
		{cgwallProgCgwallSockCreate, "sock_create", ebpf.AttachCGroupInetSockCreate, false},
		{cgwallProgCgwallPacketCreate, "packet_create", ebpf.AttachLSMCgroup, true},
	}},
	// Decides nothing: it makes the resolver's DNS answers come from the
	// server asked, for policies with name rules.
	{HookRecvmsg, "recvmsg", []program{
		{cgwallProgCgwallRecvmsg4, "recvmsg4", ebpf.AttachCGroupUDP4Recvmsg, false},
		{cgwallProgCgwallRecvmsg6, "recvmsg6", ebpf.AttachCGroupUDP6Recvmsg, false},
	}},
}

// Hooks lists every hook.
var Hooks = func() []Hook {
	out := make([]Hook, len(hookTable))
	for i, h := range hookTable {
		out[i] = h.hook
	}
	return out
}()

func (h Hook) String() string {
	if int(h) < len(hookTable) {
		return hookTable[h].name
	}
	return fmt.Sprintf("hook-%d", h)
}

// Socket says whether the hook runs at a socket call (connect, sendmsg), which
// knows the destination but not the source address.
func (h Hook) Socket() bool { return h == HookConnect || h == HookSendmsg }

// ParseHook reads a hook's name.
func ParseHook(s string) (Hook, error) {
	for _, h := range hookTable {
		if h.name == s {
			return h.hook, nil
		}
	}
	return 0, fmt.Errorf("%q is not a hook: use one of %v", s, Hooks)
}

func (h Hook) programs() []program {
	if int(h) < len(hookTable) {
		return hookTable[h].progs
	}
	return nil
}

// programsOf lists the programs of hooks.
func programsOf(hooks []Hook) []program {
	var out []program
	for _, h := range hooks {
		out = append(out, h.programs()...)
	}
	return out
}

// hookOfPin returns the hook whose program has a link pinned under name, and
// whether the program is optional.
func hookOfPin(name string) (Hook, program, bool) {
	for _, h := range hookTable {
		if i := slices.IndexFunc(h.progs, func(p program) bool { return linkPinPrefix+p.pin == name }); i >= 0 {
			return h.hook, h.progs[i], true
		}
	}
	return 0, program{}, false
}
