package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/spf13/cobra"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/policy"
)

type runOptions struct {
	process processFilter
	prep    **datapath.Prepared
	target  targetFlags
	create  bool
	rules   ruleFlags
	dns     dnsFlags
	output  outputFlags
}

func newRunCmd(prep **datapath.Prepared, stdout, stderr io.Writer) *cobra.Command {
	o := runOptions{prep: prep}
	cmd := &cobra.Command{
		Use:   "run --cgroup PATH [--create] | --pid PID | --unit NAME | --container ID [rule flags | -f FILE]",
		Short: "Filter a cgroup's traffic and print decisions until interrupted",
		Long: `run attaches the filter to the cgroup at PATH (absolute, or relative to the
cgroup2 mount), prints decisions as they happen and detaches on SIGINT or SIGTERM.
Rules are in force before the filter is attached, so no packet slips through.

With --create, run makes the cgroup at PATH (and any missing parent) if it does
not exist, says so ("created cgroup PATH"), and removes what it made when it
exits ("removed cgroup PATH"); a cgroup that still holds processes then is left
in place, and run exits 1 saying so. If PATH exists, --create uses it and
leaves it in place.

` + rulesHelp,
		Example: `  cgwall run --cgroup myapp --block 192.0.2.1 --block 198.51.100.0/24:tcp/8000-8999
  cgwall run --cgroup myapp --default block --allow 192.0.2.10:tcp/443 --allow any:udp/53
  cgwall run --cgroup myapp --default-in block --allow-in 198.51.100.0/24:tcp/22`,
		Args:        cobra.NoArgs,
		Annotations: map[string]string{preparesObject: "yes"},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), stdout, stderr)
		},
	}
	fs := cmd.Flags()
	o.target.bind(cmd)
	fs.BoolVar(&o.create, "create", false, "make the --cgroup PATH if it does not exist, and remove it on exit; an existing one is used and left in place")
	o.rules.bind(fs)
	o.dns.bind(fs)
	o.output.bind(fs)
	o.process.bind(fs)
	return cmd
}

func (o *runOptions) run(ctx context.Context, stdout, stderr io.Writer) (err error) {
	p, err := o.rules.policy(ctx)
	if err != nil {
		return err
	}
	format, err := o.output.parse()
	if err != nil {
		return err
	}
	dns, err := o.dns.parse()
	if err != nil {
		return err
	}
	var cg cgroup.Dir
	var nc *newCgroup
	if o.create {
		nc, err = o.target.planCreate("run")
	} else {
		cg, err = o.target.resolve("run")
	}
	if err != nil {
		return err
	}
	if err := checkPrivileges(); err != nil {
		return err
	}
	warnUnusedDNS(p, dns, false, stderr)
	if nc != nil {
		if cg, err = nc.make(); err != nil {
			return err
		}
		if len(nc.made) > 0 {
			fmt.Fprintf(stderr, "created cgroup %s\n", cg.Path)
		}
		// Deferred first, so it runs last: after the filter is detached.
		defer func() { err = errors.Join(err, removeCreated(nc, stderr)) }()
	}
	f, err := attachForeground(*o.prep, p, cg, dns, nil, stderr)
	if err != nil {
		return err
	}
	defer f.Close()
	if gap := packetGuardGap(f.d); gap != nil {
		fmt.Fprintf(stderr, "warning: --deny-raw refuses raw sockets but not packet sockets: %v\n", gap)
	}
	fmt.Fprintf(stderr, "attached %s to %s (%s)%s%s\n", describeHooks(f.att.Hooks, p), cg.Path, countRules(p), describeSockets(f.d), f.names.describe())
	s := f.newStreamer(format, stdout, stderr)
	s.process = o.process
	if err := s.stream(ctx, f.att.Close); err != nil {
		return failure(err)
	}
	fmt.Fprintf(stderr, "detached from %s\n", cg.Path)
	return nil
}

// removeCreated removes the cgroup that --create made, if it made one.
func removeCreated(nc *newCgroup, stderr io.Writer) error {
	if len(nc.made) == 0 {
		return nil
	}
	if err := nc.remove(); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "removed cgroup %s\n", nc.path)
	return nil
}

// describeHooks names what an attachment enforces, for the ready line.
func describeHooks(hooks []datapath.Hook, p *policy.Policy) string {
	what := "egress filter"
	if slices.Contains(hooks, datapath.HookIngress) {
		what = "egress and ingress filters"
	}
	if slices.Contains(hooks, datapath.HookSockCreate) {
		what += " and socket guard"
	}
	if p.Audit {
		what += " in audit mode"
	}
	return what
}

// describeSockets ends the ready line of a policy that denies raw sockets
// with what is refused of them, exactly.
func describeSockets(d *datapath.Datapath) string {
	p := d.Policy()
	if !p.DenyRaw {
		return ""
	}
	return "; " + socketsRefused(p.Audit, packetGuardGap(d))
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
