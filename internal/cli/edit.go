package cli

import (
	"fmt"
	"io"
	"net/netip"

	"github.com/spf13/cobra"

	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/store"
)

// newEditCmd makes block, allow and remove: live edits of a persistent policy.
func newEditCmd(verb string, stdout io.Writer) *cobra.Command {
	var target targetFlags
	var ingress bool
	cmd := &cobra.Command{
		Use:   verb + " --cgroup PATH [--in] ADDR...",
		Short: map[string]string{"block": "Block addresses in a persistent policy", "allow": "Allow addresses in a persistent policy", "remove": "Remove rules from a persistent policy"}[verb],
		Long: `The change is in force when the command returns. Edits apply to egress rules,
or with --in to ingress rules. Removing a rule that is not there is no error.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			prefixes, err := parsePrefixes(args)
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
				return edit(d, verb, dir, prefixes, stdout)
			})
		},
	}
	target.bind(cmd.Flags())
	cmd.Flags().BoolVar(&ingress, "in", false, "edit ingress rules (matched against the source address)")
	return cmd
}

// parsePrefixes parses every address before anything changes, so that one bad
// address leaves the policy as it was.
func parsePrefixes(args []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, len(args))
	for i, a := range args {
		p, err := policy.ParsePrefix(a)
		if err != nil {
			return nil, usageErr(err)
		}
		out[i] = p
	}
	return out, nil
}

func edit(d *datapath.Datapath, verb string, dir policy.Direction, prefixes []netip.Prefix, stdout io.Writer) error {
	for _, prefix := range prefixes {
		var r policy.Rule
		var change datapath.Change
		var err error
		switch verb {
		case "remove":
			r, change, err = d.Remove(dir, prefix)
		case "block":
			r, change, err = d.Set(dir, policy.Block, prefix)
		default:
			r, change, err = d.Set(dir, policy.Allow, prefix)
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
		return fmt.Sprintf("%sed %s %s (rule %d)", r.Action, r.Dir, r.Prefix, r.ID)
	case datapath.Updated:
		return fmt.Sprintf("%sed %s %s (rule %d, was %s)", r.Action, r.Dir, r.Prefix, r.ID, other(r.Action))
	case datapath.Removed:
		return fmt.Sprintf("removed %s rule %s (rule %d)", r.Dir, r.Prefix, r.ID)
	}
	if r.ID == 0 {
		return fmt.Sprintf("no %s rule for %s: nothing to remove", r.Dir, r.Prefix)
	}
	return fmt.Sprintf("%s %s already %sed (rule %d)", r.Dir, r.Prefix, r.Action, r.ID)
}

func other(a policy.Action) policy.Action {
	if a == policy.Block {
		return policy.Allow
	}
	return policy.Block
}
