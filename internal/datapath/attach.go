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
	links []link.Link
}

// Attach attaches the filter of each direction to cg. Either every direction is
// attached or, on error, none is.
func (d *Datapath) Attach(cg cgroup.Dir, dirs ...policy.Direction) (_ *Attachment, err error) {
	a := &Attachment{}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	for _, dir := range dirs {
		prog, typ := d.objs.CgwallEgress, ebpf.AttachCGroupInetEgress
		if dir == policy.Ingress {
			prog, typ = d.objs.CgwallIngress, ebpf.AttachCGroupInetIngress
		}
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cg.Path, Attach: typ, Program: prog})
		if err != nil {
			return nil, fmt.Errorf("attach %s filter to %s: %w", dir, cg.Path, err)
		}
		a.links = append(a.links, l)
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
