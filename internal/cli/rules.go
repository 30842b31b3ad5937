package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/cgwall/cgwall/internal/events"
	"github.com/cgwall/cgwall/internal/policy"
)

// ruleFlags are the flags that describe a policy. A policy file (-f) is read
// first; rule flags add to its rules, and setting flags override its settings.
type ruleFlags struct {
	fs      *pflag.FlagSet
	file    string
	block   []string
	allow   []string
	blockIn []string
	allowIn []string
	lists   [4][]string // --block-list, --allow-list, --block-in-list, --allow-in-list
	def     string
	defIn   string
	audit   bool
	denyRaw bool
	log     string
}

func (f *ruleFlags) bind(fs *pflag.FlagSet) {
	f.fs = fs
	fs.StringVarP(&f.file, "file", "f", "", "read the policy from the YAML `FILE` (see docs/policy.md)")
	fs.StringArrayVar(&f.block, "block", nil, "block egress traffic to `ADDR`, an IPv4 or IPv6 address or CIDR (repeatable)")
	fs.StringArrayVar(&f.allow, "allow", nil, "allow egress traffic to `ADDR` (repeatable); the longest prefix decides")
	fs.StringArrayVar(&f.blockIn, "block-in", nil, "block ingress traffic from `ADDR` (repeatable)")
	fs.StringArrayVar(&f.allowIn, "allow-in", nil, "allow ingress traffic from `ADDR` (repeatable)")
	fs.StringArrayVar(&f.lists[0], "block-list", nil, "block egress traffic to every address in `FILE`, one address or CIDR a line (repeatable)")
	fs.StringArrayVar(&f.lists[1], "allow-list", nil, "allow egress traffic to every address in `FILE` (repeatable)")
	fs.StringArrayVar(&f.lists[2], "block-in-list", nil, "block ingress traffic from every address in `FILE` (repeatable)")
	fs.StringArrayVar(&f.lists[3], "allow-in-list", nil, "allow ingress traffic from every address in `FILE` (repeatable)")
	fs.StringVar(&f.def, "default", "allow", "egress `ACTION` where no rule matches: allow, or block to make the rules an allowlist")
	fs.StringVar(&f.defIn, "default-in", "allow", "ingress `ACTION` where no rule matches: allow or block")
	fs.BoolVar(&f.audit, "audit", false, "decide, count and log every packet, but drop nothing")
	fs.BoolVar(&f.denyRaw, "deny-raw", false, "refuse raw (SOCK_RAW) and packet (AF_PACKET) sockets in the cgroup")
	fs.StringVar(&f.log, "log", "drop", "which decisions to print: none, drop or all")
}

// policy builds the policy that the file and the flags describe; every error
// is bad input.
func (f *ruleFlags) policy() (*policy.Policy, error) {
	p, fileSet := policy.New(), policy.FileSettings{}
	if f.file != "" {
		var err error
		if p, fileSet, err = policy.LoadFile(f.file); err != nil {
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
		{"--block", policy.Egress, policy.Block, f.block, f.lists[0]},
		{"--allow", policy.Egress, policy.Allow, f.allow, f.lists[1]},
		{"--block-in", policy.Ingress, policy.Block, f.blockIn, f.lists[2]},
		{"--allow-in", policy.Ingress, policy.Allow, f.allowIn, f.lists[3]},
	} {
		for _, addr := range r.addrs {
			if err := p.Add(r.dir, r.action, addr); err != nil {
				return nil, usageErr(fmt.Errorf("%s: %w", r.flag, err))
			}
		}
		for _, file := range r.lists {
			if err := p.AddList(file, r.dir, r.action); err != nil {
				return nil, usageErr(fmt.Errorf("%s-list: %w", r.flag, err))
			}
		}
	}
	if err := f.settings(p, fileSet); err != nil {
		return nil, usageErr(err)
	}
	return p, nil
}

// settings applies the setting flags: a flag given on the command line wins
// over the file; the file wins over a flag's default.
func (f *ruleFlags) settings(p *policy.Policy, fileSet policy.FileSettings) error {
	var errs []error
	if f.fs.Changed("default") {
		a, err := policy.ParseAction(f.def)
		errs = append(errs, flagErr("--default", err))
		p.Default[policy.Egress] = a
	}
	if f.fs.Changed("default-in") {
		a, err := policy.ParseAction(f.defIn)
		errs = append(errs, flagErr("--default-in", err))
		p.Default[policy.Ingress] = a
	}
	if f.fs.Changed("log") || !fileSet.Log {
		level, err := policy.ParseLogLevel(f.log)
		errs = append(errs, flagErr("--log", err))
		p.Log = level
	}
	p.Audit = p.Audit || f.audit
	p.DenyRaw = p.DenyRaw || f.denyRaw
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func flagErr(flag string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", flag, err)
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
	format string
}

func (f *outputFlags) bind(fs *pflag.FlagSet) {
	fs.StringVar(&f.format, "format", "text", "event format: text or json")
}

func (f *outputFlags) parse() (events.Format, error) {
	format, err := events.ParseFormat(f.format)
	if err != nil {
		return 0, usageErr(fmt.Errorf("--format: %w", err))
	}
	return format, nil
}
