package datapath

import "fmt"

// LinkFDs returns the file descriptors of the attachment's links, which stay
// the attachment's: callers duplicate what they keep. A link keeps its program
// attached for as long as any process holds a descriptor of it, so a process
// given copies holds the filter in place even after this one is gone (exec's
// guard does).
func (a *Attachment) LinkFDs() ([]int, error) {
	fds := make([]int, 0, len(a.links))
	for i, l := range a.links {
		fl, ok := l.(interface{ FD() int })
		if !ok {
			// A program attached without a link (kernels before 5.7) stays
			// attached until it is detached: it has no descriptor to share.
			return nil, fmt.Errorf("the %s program is attached without a BPF link", a.progs[i].name)
		}
		fds = append(fds, fl.FD())
	}
	return fds, nil
}
