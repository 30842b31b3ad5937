package cli

import (
	"errors"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/learn"
	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/resolver"
)

// observer is what watch --learn puts beside a persistent policy: programs
// that drop nothing and record where the cgroup sends and the DNS answers it
// gets. A packet passes only if every program of the cgroup lets it, so the
// policy in force decides as before.
type observer struct {
	d    *datapath.Datapath
	att  *datapath.Attachment
	rd   *datapath.AnswerReader
	done chan struct{} // closed when the answers are all read
}

// observerHooks are the observer's: egress records destinations, ingress
// the DNS answers, and the socket hooks name the processes that send.
var observerHooks = []datapath.Hook{datapath.HookEgress, datapath.HookIngress, datapath.HookConnect, datapath.HookSendmsg}

// observe attaches an observer to cg, whose DNS answers go to lrn.
func observe(cg cgroup.Dir, lrn *learning) (_ *observer, err error) {
	p := policy.New()
	p.Audit, p.Log = true, policy.LogNone
	o := &observer{}
	defer func() {
		if err != nil {
			o.Close()
		}
	}()
	if o.d, err = datapath.Load(p, datapath.Fixed(), datapath.WithHooks(observerHooks...), datapath.WithLearning(0), datapath.WithDNSAnswers()); err != nil {
		return nil, explainLoadError(err)
	}
	if err = o.d.Commit(); err != nil {
		return nil, failure(err)
	}
	if o.rd, err = o.d.Answers(); err != nil {
		return nil, failure(err)
	}
	o.done = make(chan struct{})
	go o.read(lrn)
	if o.att, err = o.d.Attach(cg, observerHooks...); err != nil {
		return nil, failure(err)
	}
	return o, nil
}

// read hands lrn the answers that the datapath copies, until flushed or
// closed.
func (o *observer) read(lrn *learning) {
	defer close(o.done)
	for {
		a, err := o.rd.Read()
		if err != nil {
			return
		}
		if name, addrs, ok := resolver.Addresses(a.Msg); ok {
			lrn.add(learn.Answer{Name: name, Addrs: addrs, Time: a.Time})
		}
	}
}

// stop detaches the observer and returns once every answer it copied is
// read; what it recorded stays for Seen.
func (o *observer) stop() error {
	err := o.att.Close()
	o.att = nil
	if ferr := o.rd.Flush(); ferr != nil {
		return errors.Join(err, ferr)
	}
	<-o.done
	return err
}

func (o *observer) Close() error {
	var errs []error
	if o.att != nil {
		errs = append(errs, o.att.Close())
	}
	if o.rd != nil {
		errs = append(errs, o.rd.Close())
		if o.done != nil {
			<-o.done
		}
	}
	if o.d != nil {
		errs = append(errs, o.d.Close())
	}
	return errors.Join(errs...)
}
