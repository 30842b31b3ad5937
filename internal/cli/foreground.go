package cli

import (
	"errors"
	"io"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/events"
	"github.com/cgwall/cgwall/internal/policy"
)

// foreground is a filter that lives as long as the cgwall process that holds
// it (run, exec): its links are not pinned, so they go with the process.
type foreground struct {
	d     *datapath.Datapath
	rd    *datapath.Reader
	att   *datapath.Attachment
	names *names // the resolver of a policy with name rules, or nil
}

// attachForeground loads p, puts it in force and attaches it to cg. The policy
// is in force before it is attached, and the event stream open, so that no
// packet passes unjudged and no decision goes unseen; a policy with name
// rules has its resolver serving too. With lrn (exec --learn; nil
// otherwise), the datapath records where the cgroup sends, and the
// cgroup's DNS goes through the resolver whatever the rules, so that lrn
// hears every answer.
func attachForeground(prep *datapath.Prepared, p *policy.Policy, cg cgroup.Dir, dns dnsSettings, lrn *learning, stderr io.Writer) (_ *foreground, err error) {
	f := &foreground{}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	// The policy of a foreground filter never changes, so the programs of
	// the hooks it needs are all that is loaded.
	hooks := datapath.HooksFor(p)
	if lrn != nil {
		hooks = datapath.HooksForLearning(p)
	}
	var dnsOpts []datapath.Option
	if f.names, dnsOpts, err = listenNames(p, lrn != nil); err != nil {
		return nil, err
	}
	opts := append([]datapath.Option{datapath.Fixed(), datapath.WithPrepared(prep), datapath.WithHooks(hooks...)}, dnsOpts...)
	if lrn != nil {
		opts = append(opts, datapath.WithLearning(0))
	}
	if f.d, err = datapath.Load(p, opts...); err != nil {
		return nil, explainLoadError(err)
	}
	if err = f.d.Commit(); err != nil {
		return nil, failure(err)
	}
	if f.rd, err = f.d.Events(); err != nil {
		return nil, failure(err)
	}
	if f.names != nil {
		if err = f.names.serve(p, f.d, dns, lrn, stderr); err != nil {
			return nil, err
		}
	}
	if f.att, err = f.d.Attach(cg, hooks...); err != nil {
		return nil, failure(err)
	}
	return f, nil
}

// Close detaches the filter and releases it. The resolver goes after the
// programs that send it queries, and before the datapath it learns into.
func (f *foreground) Close() error {
	var errs []error
	if f.att != nil {
		errs = append(errs, f.att.Close())
	}
	errs = append(errs, f.names.Close())
	if f.rd != nil {
		errs = append(errs, f.rd.Close())
	}
	if f.d != nil {
		errs = append(errs, f.d.Close())
	}
	return errors.Join(errs...)
}

// newStreamer streams the filter's packet and DNS decisions.
func (f *foreground) newStreamer(format events.Format, stdout, stderr io.Writer) *streamer {
	s := newStreamer(f.d, f.rd, format, stdout, stderr)
	if f.names != nil {
		s.dns = f.names.events
	}
	return s
}
