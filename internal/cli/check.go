package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

func newCheckCmd(stdout, stderr io.Writer) *cobra.Command {
	var rules ruleFlags
	cmd := &cobra.Command{
		Use:   "check -f FILE [rule flags]",
		Short: "Validate a policy without attaching anything",
		Long: `check reads a policy file, with any rule flags on top, exactly as run would,
and attaches nothing. It lists every problem with its file:line and exits 2, or
prints a summary of the policy and exits 0.

` + rulesHelp,
		Example: `  cgwall check -f policy.yaml
  cgwall check --block-list blocklist.txt
  cgwall check --block 198.51.100.0/24 --allow 198.51.100.7:tcp/8000-8999`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := rules.policy(cmd.Context())
			if lines := fileProblems(err); len(lines) > 1 {
				// Each problem on its line; the last one is the command's error.
				fmt.Fprintln(stderr, "cgwall: "+strings.Join(lines[:len(lines)-1], "\ncgwall: "))
				return usageErr(fmt.Errorf("%s (%d problems)", lines[len(lines)-1], len(lines)))
			}
			if err != nil {
				return err
			}
			name := rules.file
			if name == "" {
				name = "flags"
			}
			fmt.Fprintf(stdout, "%s: valid policy\n", name)
			for _, line := range p.Summary() {
				fmt.Fprintf(stdout, "  %s\n", line)
			}
			if len(rules.targets) > 0 {
				names := make([]string, len(rules.targets))
				for i, t := range rules.targets {
					names[i] = t.String()
				}
				fmt.Fprintf(stdout, "  targets (for cgwall agent): %s\n", strings.Join(names, ", "))
			}
			return nil
		},
	}
	rules.bind(cmd.Flags())
	return cmd
}
