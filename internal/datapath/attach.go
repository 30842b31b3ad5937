package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/policy"
)

// Attachment is the programs of a Datapath attached to one cgroup. Closing it
// detaches them.
type Attachment struct {
	Hooks []Hook
	links []link.Link
	names []string // one per link, for its pin
}

// HooksFor says which hooks a policy needs. Egress, connect and sendmsg always
// run: they are the filter. Ingress runs only when the policy judges ingress,
// so that an egress blocklist costs received packets nothing; sock_create only
// with DenyRaw.
func HooksFor(p *policy.Policy) []Hook {
	hooks := []Hook{HookEgress, HookConnect, HookSendmsg}
	if p.Count(policy.Ingress) > 0 || p.Default[policy.Ingress] != policy.Allow {
		hooks = append(hooks, HookIngress)
	}
	if p.DenyRaw {
		hooks = append(hooks, HookSockCreate)
	}
	return hooks
}

type program struct {
	name string
	prog *ebpf.Program
	typ  ebpf.AttachType
}

func (d *Datapath) programs(h Hook) []program {
	o := &d.objs.corePrograms
	switch h {
	case HookEgress:
		return []program{{"egress", o.CgwallEgress, ebpf.AttachCGroupInetEgress}}
	case HookIngress:
		return []program{{"ingress", o.CgwallIngress, ebpf.AttachCGroupInetIngress}}
	case HookConnect:
		return []program{
			{"connect4", o.CgwallConnect4, ebpf.AttachCGroupInet4Connect},
			{"connect6", o.CgwallConnect6, ebpf.AttachCGroupInet6Connect},
		}
	case HookSendmsg:
		return []program{
			{"sendmsg4", o.CgwallSendmsg4, ebpf.AttachCGroupUDP4Sendmsg},
			{"sendmsg6", o.CgwallSendmsg6, ebpf.AttachCGroupUDP6Sendmsg},
		}
	case HookSockCreate:
		progs := []program{{"sock_create", o.CgwallSockCreate, ebpf.AttachCGroupInetSockCreate}}
		if d.packetGuard != nil {
			progs = append(progs, program{"packet_create", d.packetGuard, ebpf.AttachLSMCgroup})
		}
		return progs
	}
	return nil
}

// Attach attaches the programs of each hook to cg. Either every hook is
// attached or, on error, none is.
func (d *Datapath) Attach(cg cgroup.Dir, hooks ...Hook) (_ *Attachment, err error) {
	a := &Attachment{Hooks: hooks}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	for _, h := range hooks {
		for _, p := range d.programs(h) {
			if p.prog == nil {
				return nil, fmt.Errorf("attach %s program to %s: it was not loaded (see WithHooks)", h, cg.Path)
			}
			l, err := link.AttachCgroup(link.CgroupOptions{Path: cg.Path, Attach: p.typ, Program: p.prog})
			if err != nil {
				return nil, fmt.Errorf("attach %s program to %s: %w", h, cg.Path, err)
			}
			a.links = append(a.links, l)
			a.names = append(a.names, p.name)
		}
	}
	return a, nil
}

// Close detaches every program of the attachment.
func (a *Attachment) Close() error {
	var errs []error
	for _, l := range a.links {
		errs = append(errs, l.Close())
	}
	a.links = nil
	return errors.Join(errs...)
}
