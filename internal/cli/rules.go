package cli

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/cgwall/cgwall/internal/events"
	"github.com/cgwall/cgwall/internal/policy"
)

// ruleFlags are the flags that describe a policy.
type ruleFlags struct {
	block []string
	log   string
}

func (f *ruleFlags) bind(fs *pflag.FlagSet) {
	fs.StringArrayVar(&f.block, "block", nil, "block egress traffic to `ADDR`, an IPv4 or IPv6 address or CIDR (repeatable)")
	fs.StringVar(&f.log, "log", "drop", "which decisions to print: none, drop or all")
}

// policy builds the policy the flags describe; every error is bad input.
func (f *ruleFlags) policy() (*policy.Policy, error) {
	p := policy.New()
	for _, addr := range f.block {
		if err := p.Add(policy.Egress, policy.Block, addr); err != nil {
			return nil, usageErr(fmt.Errorf("--block: %w", err))
		}
	}
	level, err := policy.ParseLogLevel(f.log)
	if err != nil {
		return nil, usageErr(fmt.Errorf("--log: %w", err))
	}
	p.Log = level
	return p, nil
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
