package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/cgwall/cgwall/internal/events"
	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/targets"
)

// rulesHelp says what a rule is, in the help of every command that takes
// rules: the one grammar of flags, files, list, events and remove.
const rulesHelp = `A rule is ADDR[:PORTS]. ADDR is an IPv4 or IPv6 address or CIDR, or any
(every address of both families); an IPv6 address takes brackets when ports
follow. PORTS is PORT or LOW-HIGH (TCP and UDP), tcp/PORT, udp/LOW-HIGH,
sctp/PORT, or a protocol alone: tcp, udp, sctp, icmp, icmpv6, proto/N. For
example 192.0.2.1, 198.51.100.0/24:tcp/8000-8999, [2001:db8::1]:443,
any:udp/53, 10.0.0.0/8:icmp. Egress rules match the destination and its
port, ingress rules the source and the local port. The most specific rule
decides: the longest prefix, then at one prefix a port rule over a protocol
rule over an address rule, the narrowest range first; where none matches,
the direction's default.

Egress rules may name a DNS name instead of an address: example.com (that
name only) or *.example.com (every name below it), with the same PORTS
(registry.npmjs.org:443, *.github.com:tcp/443). run and exec answer the
cgroup's DNS themselves: a name no rule allows is NXDOMAIN under --default
block, and the addresses of an allowed name's answers are allowed until their
TTL (at least --dns-min-ttl) expires. Address rules rank above name rules.`

// ruleFlags are the flags that describe a policy. A policy file (-f) is read
// first; rule flags add to its rules, and setting flags override its settings.
type ruleFlags struct {
	fs      *pflag.FlagSet
	file    string
	block   []string
	allow   []string
	blockIn []string
	allowIn []string

	blockList   []string
	allowList   []string
	blockInList []string
	allowInList []string

	def     *choice[policy.Action]
	defIn   *choice[policy.Action]
	log     *choice[policy.LogLevel]
	audit   bool
	denyRaw bool

	// targets are what the file names for the agent, which check shows.
	targets []targets.Target
}

func (f *ruleFlags) bind(fs *pflag.FlagSet) {
	f.fs = fs
	fs.StringVarP(&f.file, "file", "f", "", "read the policy from the YAML `FILE` (see docs/policy.md)")
	fs.StringArrayVar(&f.block, "block", nil, "block egress traffic to `ADDR[:PORTS]`: 192.0.2.1, 198.51.100.0/24:tcp/443, [2001:db8::1]:443, any:udp/53 (repeatable)")
	fs.StringArrayVar(&f.allow, "allow", nil, "allow egress traffic to `ADDR[:PORTS]` (repeatable); the most specific rule decides")
	fs.StringArrayVar(&f.blockIn, "block-in", nil, "block ingress traffic from `ADDR[:PORTS]`, PORTS being the local port: 203.0.113.0/24:tcp/22 (repeatable)")
	fs.StringArrayVar(&f.allowIn, "allow-in", nil, "allow ingress traffic from `ADDR[:PORTS]` to the local PORTS (repeatable)")
	fs.StringArrayVar(&f.blockList, "block-list", nil, "block egress traffic to every rule in `FILE`, one ADDR[:PORTS] a line (repeatable)")
	fs.StringArrayVar(&f.allowList, "allow-list", nil, "allow egress traffic to every rule in `FILE` (repeatable)")
	fs.StringArrayVar(&f.blockInList, "block-in-list", nil, "block ingress traffic from every rule in `FILE` (repeatable)")
	fs.StringArrayVar(&f.allowInList, "allow-in-list", nil, "allow ingress traffic from every rule in `FILE` (repeatable)")
	// The defaults are an empty policy's, so that a flag left alone says
	// what a policy without it gets.
	empty := policy.New()
	f.def, f.defIn, f.log = actionFlag(empty.Default[policy.Egress]), actionFlag(empty.Default[policy.Ingress]), logFlag(empty.Log)
	fs.Var(f.def, "default", "egress action where no rule matches; block makes the rules an allowlist")
	fs.Var(f.defIn, "default-in", "ingress action where no rule matches")
	fs.BoolVar(&f.audit, "audit", false, "decide, count and log every packet, but drop nothing")
	fs.BoolVar(&f.denyRaw, "deny-raw", false, "refuse raw (SOCK_RAW) and packet (AF_PACKET) sockets in the cgroup")
	fs.Var(f.log, "log", "which decisions the policy logs")
}

// policy builds the policy that the file and the flags describe; every error
// is bad input. It gives up when ctx is done (Ctrl-C, SIGTERM): parsing a
// large file takes seconds, and a read can block where no check of ctx
// reaches (a hung network mount), so the policy is built aside and left to
// finish on its own, nothing having been changed.
func (f *ruleFlags) policy(ctx context.Context) (*policy.Policy, error) {
	type built struct {
		p   *policy.Policy
		err error
	}
	done := make(chan built, 1)
	go func() {
		p, err := f.build(ctx)
		done <- built{p, err}
	}()
	select {
	case b := <-done:
		if b.err != nil && ctx.Err() != nil {
			return nil, interrupted(ctx, "while reading the policy")
		}
		return b.p, b.err
	case <-ctx.Done():
		return nil, interrupted(ctx, "while reading the policy")
	}
}

// interrupted is the error of a command that gave up when ctx was done,
// before it changed anything. It exits 1: the input was not at fault.
func interrupted(ctx context.Context, while string) error {
	return failure(fmt.Errorf("%v %s: nothing was changed", context.Cause(ctx), while))
}

func (f *ruleFlags) build(ctx context.Context) (*policy.Policy, error) {
	p, fileSet := policy.New(), policy.FileSettings{}
	// -f '' is an error, not "no file": an unset variable in -f "$POLICY"
	// would otherwise attach a policy that allows everything.
	if f.fs.Changed("file") {
		var err error
		if p, fileSet, err = policy.LoadFileContext(ctx, f.file); err != nil {
			return nil, usageErr(err)
		}
	}
	for _, r := range []struct {
		flag   string
		dir    policy.Direction
		action policy.Action
		addrs  []string
		lists  []string
	}{
		{"--block", policy.Egress, policy.Block, f.block, f.blockList},
		{"--allow", policy.Egress, policy.Allow, f.allow, f.allowList},
		{"--block-in", policy.Ingress, policy.Block, f.blockIn, f.blockInList},
		{"--allow-in", policy.Ingress, policy.Allow, f.allowIn, f.allowInList},
	} {
		for _, addr := range r.addrs {
			if err := p.Add(r.dir, r.action, addr); err != nil {
				return nil, usageErr(fmt.Errorf("%s: %w", r.flag, err))
			}
		}
		for _, file := range r.lists {
			if err := p.AddListContext(ctx, file, r.dir, r.action); err != nil {
				return nil, usageErr(fmt.Errorf("%s-list: %w", r.flag, err))
			}
		}
	}
	f.settings(p, fileSet)
	f.targets = fileSet.Targets
	return p, nil
}

// settings applies the setting flags: a flag given on the command line wins
// over the file; the file wins over a flag's default.
func (f *ruleFlags) settings(p *policy.Policy, fileSet policy.FileSettings) {
	if f.fs.Changed("default") {
		p.Default[policy.Egress] = f.def.val
	}
	if f.fs.Changed("default-in") {
		p.Default[policy.Ingress] = f.defIn.val
	}
	if f.fs.Changed("log") || !fileSet.Log {
		p.Log = f.log.val
	}
	p.Audit = p.Audit || f.audit
	p.DenyRaw = p.DenyRaw || f.denyRaw
}

// fileProblems returns every problem of a policy file error, or nil.
func fileProblems(err error) []string {
	var fe *policy.FileError
	if errors.As(err, &fe) {
		return fe.Lines()
	}
	return nil
}

// outputFlags say how events are printed.
type outputFlags struct {
	format *choice[events.Format]
}

func (f *outputFlags) bind(fs *pflag.FlagSet) {
	f.format = formatFlag()
	fs.Var(f.format, "format", "event format; json is one object a line")
}

// parse returns the event format. The flag was checked when it was parsed,
// so the error is always nil.
func (f *outputFlags) parse() (events.Format, error) {
	return f.format.val, nil
}
