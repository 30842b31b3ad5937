package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/store"
)

func newAttachCmd(stdout, stderr io.Writer) *cobra.Command {
	var target targetFlags
	var rules ruleFlags
	var forAgent bool
	cmd := &cobra.Command{
		Use:   "attach --cgroup PATH [rule flags | -f FILE]",
		Short: "Attach a persistent policy to a cgroup, or replace its policy",
		Long: `attach pins the policy's programs and maps in bpffs under /sys/fs/bpf/cgwall,
so that it stays in force after cgwall exits, and exits. On a cgroup that
already has a policy it replaces it atomically: every hook moves from the old
policy to the new one at the same instant.

` + rulesHelp,
		Example: `  cgwall attach --cgroup myapp -f policy.yaml
  cgwall attach --cgroup myapp --default block --allow 192.0.2.10:tcp/443 --allow any:udp/53
  cgwall attach --unit sshd --default-in block --allow-in 198.51.100.0/24:tcp/22
  cgwall attach --unit %n --for-agent -f /etc/cgwall/policies/web.yaml   # in ExecStartPre=`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := rules.policy(cmd.Context())
			if err != nil {
				return err
			}
			var opts []store.Option
			if forAgent {
				o, err := agentOwner(&rules, p)
				if err != nil {
					return err
				}
				opts = append(opts, store.Owned(o))
			}
			cg, err := target.resolve("attach")
			if err != nil {
				return err
			}
			return withStore(cmd, func(s *store.Store) error {
				if err := checkKernel(); err != nil {
					return err
				}
				if p.HasNames() {
					r, err := agentResolver(s, p.Names[0])
					if err != nil {
						return err
					}
					opts = append(opts, store.WithResolver(r))
				}
				return attach(s, cg, p, stdout, stderr, opts...)
			})
		},
	}
	target.bind(cmd)
	rules.bind(cmd.Flags())
	cmd.Flags().BoolVar(&forAgent, "for-agent", false, "attach -f FILE, a file of cgwall agent's folder, as the agent would: the agent adopts the policy, and replaces or detaches it as its files say (ExecStartPre=, docs/agent.md)")
	return cmd
}

// withStore runs fn with the store open and locked, after checking
// privileges. Waiting for the lock, it says so on stderr, and gives up when
// the command's context is done (Ctrl-C, SIGTERM): then nothing was changed,
// and it exits 1. Once the lock is held, fn runs to the end, and a signal
// that came meanwhile is answered by saying that the command completed.
func withStore(cmd *cobra.Command, fn func(*store.Store) error) error {
	if err := checkPrivileges(needStore); err != nil {
		return err
	}
	ctx, stderr := cmd.Context(), cmd.ErrOrStderr()
	s, err := store.Open(ctx, func() {
		fmt.Fprintf(stderr, "cgwall: waiting for the lock on %s: another command is changing persistent policies (Ctrl-C gives up)\n", store.DefaultRoot)
	})
	if err != nil {
		if ctx.Err() != nil {
			return interrupted(ctx, "while waiting for the lock on "+store.DefaultRoot)
		}
		return failure(err)
	}
	defer s.Close()
	err = fn(s)
	if err == nil && ctx.Err() != nil {
		fmt.Fprintf(stderr, "cgwall: %v after the lock was taken: the command completed, and what it printed stands\n", context.Cause(ctx))
	}
	return err
}

// attach creates the cgroup's persistent policy, or replaces the one it has.
func attach(s *store.Store, cg cgroup.Dir, p *policy.Policy, stdout, stderr io.Writer, opts ...store.Option) error {
	replacing := s.Exists(cg.ID)
	apply := s.Create
	if replacing {
		apply = s.Replace
	}
	a, err := apply(cg, p, opts...)
	if err != nil {
		return failure(err)
	}
	if a.PacketGuard != nil {
		fmt.Fprintf(stderr, "warning: --deny-raw refuses raw sockets but not packet sockets: %v\n", a.PacketGuard)
	}
	switch {
	case a.Rebuilt:
		fmt.Fprintf(stdout, "replaced policy on %s (%s), rebuilt %s, pinned in %s\n", cg.Path, plural(len(p.Rules), "rule"), a.Why, a.Dir)
	case replacing:
		fmt.Fprintf(stdout, "replaced policy on %s (%s)\n", cg.Path, plural(len(p.Rules), "rule"))
	default:
		fmt.Fprintf(stdout, "attached policy to %s (%s), pinned in %s\n", cg.Path, plural(len(p.Rules), "rule"), a.Dir)
	}
	return nil
}

func newDetachCmd(stdout io.Writer) *cobra.Command {
	var target targetFlags
	var all bool
	cmd := &cobra.Command{
		Use:   "detach --cgroup PATH | --all",
		Short: "Remove a persistent policy: its programs, links and pins",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if all && len(target.given()) > 0 {
				return usageErr(fmt.Errorf("--all and %s: give one", target.given()[0]))
			}
			var ids []uint64
			if !all {
				cg, err := target.resolve("detach")
				if err != nil {
					return err
				}
				ids = []uint64{cg.ID}
			}
			return withStore(cmd, func(s *store.Store) (err error) {
				if all {
					if ids, err = s.List(); err != nil {
						return failure(err)
					}
				}
				return detach(s, ids, all, stdout)
			})
		},
	}
	target.bind(cmd)
	cmd.Flags().BoolVar(&all, "all", false, "remove every persistent policy")
	return cmd
}

func detach(s *store.Store, ids []uint64, all bool, stdout io.Writer) error {
	paths, _ := cgroup.PathsByID(ids)
	for _, id := range ids {
		name := paths[id]
		if name == "" {
			name = fmt.Sprintf("cgroup %d (stale)", id)
		}
		if !s.Exists(id) {
			fmt.Fprintf(stdout, "no policy on %s: nothing to detach\n", name)
			continue
		}
		if err := s.Remove(id); err != nil {
			return failure(fmt.Errorf("detach from %s: %w", name, err))
		}
		fmt.Fprintf(stdout, "detached from %s\n", name)
	}
	if all && len(ids) == 0 {
		fmt.Fprintln(stdout, "no persistent policies")
	}
	return nil
}
