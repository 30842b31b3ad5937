package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/store"
)

// newEditCmd makes block, allow and remove: live edits of a persistent policy.
func newEditCmd(verb string, stdout io.Writer) *cobra.Command {
	var target targetFlags
	var ingress bool
	help := editHelp[verb]
	cmd := &cobra.Command{
		Use:     verb + " --cgroup PATH [--in] ADDR[:PORTS]...",
		Short:   help.short,
		Long:    help.long + editCommon,
		Example: help.example,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			matches, err := parseRules(verb, args)
			if err != nil {
				return err
			}
			cg, err := target.resolve(verb)
			if err != nil {
				return err
			}
			dir := policy.Egress
			if ingress {
				dir = policy.Ingress
			}
			return withStore(cmd, func(s *store.Store) error {
				if !s.Exists(cg.ID) {
					return usageErr(fmt.Errorf("no policy on %s: attach one first with 'cgwall attach --cgroup %s'", cg.Path, cg.Path))
				}
				d, err := s.Open(cg.ID)
				if err != nil {
					return failure(err)
				}
				defer d.Close()
				if err := checkEdit(d.Policy(), verb, dir, matches); err != nil {
					return err
				}
				if dir == policy.Ingress && verb != "remove" {
					// Attached on the first ingress rule, not before.
					if err := s.AttachHooks(cg, d, false, datapath.HookIngress); err != nil {
						return failure(err)
					}
				}
				return edit(d, verb, dir, matches, stdout)
			})
		},
	}
	target.bind(cmd)
	cmd.Flags().BoolVar(&ingress, "in", false, "edit ingress rules (matched against the source address and the local port)")
	return cmd
}

// editHelp is the help of each edit verb.
var editHelp = map[string]struct{ short, long, example string }{
	"block": {
		short: "Block addresses or ports in a persistent policy",
		long: `block adds a block rule for each ADDR[:PORTS] (see below) to the policy that
'cgwall attach' pinned on the cgroup, or turns an allow rule for it into a
block rule, keeping its ID and counters. Traffic to ADDR and PORTS (from ADDR
to the local PORTS, with --in) is then dropped, unless a more specific rule
allows it.`,
		example: `  cgwall block --cgroup myapp 192.0.2.1 198.51.100.0/24
  cgwall block --cgroup myapp 192.0.2.10:tcp/25 any:udp/5353
  cgwall block --cgroup myapp --in 2001:db8::/32 '[2001:db8::1]:tcp/22'
  cgwall block --unit nginx 203.0.113.7`,
	},
	"allow": {
		short: "Allow addresses or ports in a persistent policy",
		long: `allow adds an allow rule for each ADDR[:PORTS] (see below) to the policy that
'cgwall attach' pinned on the cgroup, or turns a block rule for it into an
allow rule, keeping its ID and counters. Under --default block this is how an
allowlist grows; under the default allow, an allow rule opens a hole in a
wider block rule (the most specific rule decides: 198.51.100.7:tcp/443 inside
a blocked 198.51.100.0/24).`,
		example: `  cgwall allow --cgroup myapp 192.0.2.10
  cgwall allow --cgroup myapp 198.51.100.7:tcp/8000-8999 2001:db8::1
  cgwall allow --cgroup myapp --in 192.0.2.0/24:tcp/22`,
	},
	"remove": {
		short: "Remove rules from a persistent policy",
		long: `remove takes away the rule for each ADDR[:PORTS] (in any form that names it:
as it was added, or as 'cgwall list' shows it) from the policy that 'cgwall
attach' pinned on the cgroup, whether it blocks or allows. A token that
stands for several rules removes each: 192.0.2.1:443 the TCP and the UDP
rule, any:tcp/22 the IPv4 and the IPv6 one. Traffic is then judged by the
next most specific rule, or the default. A rule that is not there is
reported, and is no error.`,
		example: `  cgwall remove --cgroup myapp 192.0.2.1
  cgwall remove --cgroup myapp 192.0.2.10/32:tcp/25 any:udp/5353
  cgwall remove --cgroup myapp --in 2001:db8::/32`,
	},
}

// editCommon ends the help of every edit verb.
const editCommon = `

The change is in force when the command returns. Edits apply to egress rules,
or with --in to ingress rules; 'cgwall list --cgroup PATH' shows the result.
Every rule is checked before anything changes, so one bad rule (or one whose
port range overlaps another's partly) leaves the policy as it was.

` + rulesHelp

// parseRules parses every rule before anything changes, so that one bad
// rule leaves the policy as it was. One token can stand for several rules
// (ADDR:PORT is a TCP and a UDP rule, any both families).
//
// Live edits take no name rules (block and allow refuse them, remove finds
// none): a name rule's pattern has a site in the maps, which an edit of one
// rule does not make; attach puts them in force.
func parseRules(verb string, args []string) ([]policy.Match, error) {
	var out []policy.Match
	for _, a := range args {
		m, err := policy.ParseRule(a)
		if err != nil {
			return nil, usageErr(err)
		}
		if len(m) > 0 && m[0].Name != "" && verb != "remove" {
			return nil, usageErr(fmt.Errorf("%s: %s: %s", verb, a, namesNoEdit))
		}
		out = append(out, m...)
	}
	return out, nil
}

// checkEdit refuses, before anything changes, a block or allow that would
// make port ranges of one prefix and protocol overlap partly, with the
// policy's or with each other: a policy with them could not be loaded. The
// other action on a rule the policy has is no conflict: it changes the rule.
func checkEdit(p *policy.Policy, verb string, dir policy.Direction, matches []policy.Match) error {
	if verb == "remove" {
		return nil
	}
	action := policy.Block
	if verb == "allow" {
		action = policy.Allow
	}
	given := policy.New()
	for _, m := range matches {
		if _, ok := p.Lookup(dir, m); !ok {
			if err := p.Check(dir, action, m); err != nil {
				return usageErr(err)
			}
		}
		if err := given.AddMatch(dir, action, m); err != nil {
			return usageErr(err)
		}
	}
	return nil
}

func edit(d *datapath.Datapath, verb string, dir policy.Direction, matches []policy.Match, stdout io.Writer) error {
	for _, m := range matches {
		var r policy.Rule
		var change datapath.Change
		var err error
		switch verb {
		case "remove":
			r, change, err = d.Remove(dir, m)
		case "block":
			r, change, err = d.Set(dir, policy.Block, m)
		default:
			r, change, err = d.Set(dir, policy.Allow, m)
		}
		if err != nil {
			return failure(err)
		}
		fmt.Fprintln(stdout, describeChange(r, change))
	}
	return nil
}

func describeChange(r policy.Rule, c datapath.Change) string {
	switch c {
	case datapath.Added:
		return fmt.Sprintf("%sed %s %s (rule %d)", r.Action, r.Dir, r.Match(), r.ID)
	case datapath.Updated:
		return fmt.Sprintf("%sed %s %s (rule %d, was %s)", r.Action, r.Dir, r.Match(), r.ID, other(r.Action))
	case datapath.Removed:
		return fmt.Sprintf("removed %s rule %s (rule %d)", r.Dir, r.Match(), r.ID)
	}
	if r.ID == 0 {
		return fmt.Sprintf("no %s rule for %s: nothing to remove", r.Dir, r.Match())
	}
	return fmt.Sprintf("%s %s already %sed (rule %d)", r.Dir, r.Match(), r.Action, r.ID)
}

func other(a policy.Action) policy.Action {
	if a == policy.Block {
		return policy.Allow
	}
	return policy.Block
}
