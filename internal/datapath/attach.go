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
	progs []program // one per link, for its pin
}

// HooksFor says which hooks a policy needs. Egress and connect always run:
// they are the filter. Ingress runs only when the policy judges ingress, so
// that an egress blocklist costs received packets nothing; sock_create only
// with DenyRaw. Sendmsg judges nothing (egress fails a blocked sendto()): it
// runs to name the sender in events, and to send DNS to the resolver of a
// policy with name rules, which recvmsg needs too.
func HooksFor(p *policy.Policy) []Hook { return hooksFor(p, p.HasNames()) }

// HooksForLearning says which hooks learning from a cgroup under p needs:
// the cgroup's DNS goes to cgwall's resolver whatever the rules, and
// the recording of destinations names the senders of unconnected datagrams,
// which sendmsg does.
func HooksForLearning(p *policy.Policy) []Hook { return hooksFor(p, true) }

// hooksFor is HooksFor for a cgroup whose DNS cgwall's resolver serves, or
// not.
func hooksFor(p *policy.Policy, servesDNS bool) []Hook {
	hooks := []Hook{HookEgress, HookConnect}
	if p.Log != policy.LogNone || servesDNS {
		hooks = append(hooks, HookSendmsg)
	}
	if p.Count(policy.Ingress) > 0 || p.Default[policy.Ingress] != policy.Allow {
		hooks = append(hooks, HookIngress)
	}
	if p.DenyRaw {
		hooks = append(hooks, HookSockCreate)
	}
	if servesDNS {
		hooks = append(hooks, HookRecvmsg)
	}
	return hooks
}

// LoadHooks loads the programs of hooks that the datapath has not loaded, for
// a persistent policy that comes to need a hook it was not attached with:
// Open loads no program, and Load only those it was asked for. Optional
// programs load only withOptional; their failure is PacketGuardError's.
func (d *Datapath) LoadHooks(withOptional bool, hooks ...Hook) error {
	if d.progs == nil {
		d.progs = map[string]*ebpf.Program{}
	}
	loaded, err := d.programMaps()
	if err != nil {
		return err
	}
	for _, p := range programsOf(hooks) {
		if d.progs[p.name] != nil || p.optional && !withOptional {
			continue
		}
		spec := d.spec.Programs[p.name]
		if spec == nil {
			return fmt.Errorf("load BPF programs: no program %s in the BPF object", p.name)
		}
		prog, err := loadProgram(spec, loaded)
		if err != nil && p.optional {
			d.optionalErr = err
			continue
		}
		if err != nil {
			return loadError(err)
		}
		d.progs[p.name] = prog
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
		for _, p := range h.programs() {
			prog := d.progs[p.name]
			if prog == nil && p.optional {
				continue // PacketGuardError says why, where it matters
			}
			if prog == nil {
				return nil, fmt.Errorf("attach %s program to %s: it was not loaded (see WithHooks)", h, cg.Path)
			}
			l, err := link.AttachCgroup(link.CgroupOptions{Path: cg.Path, Attach: p.attach, Program: prog})
			if err != nil {
				return nil, fmt.Errorf("attach %s program to %s: %w", h, cg.Path, err)
			}
			a.links = append(a.links, l)
			a.progs = append(a.progs, p)
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
