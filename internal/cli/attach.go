package cli

import (
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/spf13/cobra"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/store"
)

// persistentHooks are attached by every persistent policy, whatever its
// rules: later edits may need any of them, and replacing a policy must not
// have to attach anything.
var persistentHooks = []datapath.Hook{
	datapath.HookEgress, datapath.HookConnect, datapath.HookSendmsg,
	datapath.HookIngress, datapath.HookSockCreate,
}

func newAttachCmd(stdout, stderr io.Writer) *cobra.Command {
	var target targetFlags
	var rules ruleFlags
	cmd := &cobra.Command{
		Use:   "attach --cgroup PATH [rule flags | -f FILE]",
		Short: "Attach a persistent policy to a cgroup, or replace its policy",
		Long: `attach pins the policy's programs and maps in bpffs under /sys/fs/bpf/cgwall,
so that it stays in force after cgwall exits, and exits. On a cgroup that
already has a policy it replaces it atomically: every hook moves from the old
policy to the new one at the same instant.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			p, err := rules.policy()
			if err != nil {
				return err
			}
			cg, err := target.resolve("attach")
			if err != nil {
				return err
			}
			if err := checkSystem(); err != nil {
				return err
			}
			return withStore(func() error {
				if store.Exists(cg.ID) {
					return replace(cg, p, stdout, stderr)
				}
				return attachNew(cg, p, stdout, stderr)
			})
		},
	}
	target.bind(cmd.Flags())
	rules.bind(cmd.Flags())
	return cmd
}

func checkSystem() error {
	if err := checkPrivileges(); err != nil {
		return err
	}
	return checkKernel()
}

// withStore runs fn with the store locked, after checking privileges.
func withStore(fn func() error) error {
	if err := checkPrivileges(); err != nil {
		return err
	}
	unlock, err := lockStore()
	if err != nil {
		return err
	}
	defer unlock()
	return fn()
}

// lockStore mounts bpffs if needed, takes the store's lock and clears what
// interrupted attaches left.
func lockStore() (func(), error) {
	if err := store.Mount(); err != nil {
		return nil, failure(err)
	}
	unlock, err := store.Lock()
	if err != nil {
		return nil, failure(err)
	}
	if err := store.CleanStaging(); err != nil {
		unlock()
		return nil, failure(fmt.Errorf("remove leftovers of an interrupted attach: %w", err))
	}
	return unlock, nil
}

// attachNew pins a new policy in a staging folder, renames it into place and
// only then puts it in force. Killed at any point before that last write, it
// leaves programs that let everything pass, which the next cgwall removes.
func attachNew(cg cgroup.Dir, p *policy.Policy, stdout, stderr io.Writer) error {
	d, err := datapath.Load(p, datapath.WithPacketGuard())
	if err != nil {
		return failure(err)
	}
	defer d.Close()
	att, err := d.Attach(cg, persistentHooks...)
	if err != nil {
		return failure(err)
	}
	defer att.Close() // the pinned links stay
	staging := store.Staging(cg.ID)
	if err := os.Mkdir(staging, 0o700); err != nil {
		return failure(err)
	}
	if err := pinAll(d, att, staging); err != nil {
		datapath.Unpin(staging)
		return failure(err)
	}
	if err := os.Rename(staging, store.Dir(cg.ID)); err != nil {
		datapath.Unpin(staging)
		return failure(fmt.Errorf("move policy into place: %w", err))
	}
	if err := d.Commit(); err != nil {
		return failure(err)
	}
	warnPacketGuard(d, p, stderr)
	fmt.Fprintf(stdout, "attached policy to %s (%s), pinned in %s\n", cg.Path, plural(len(p.Rules), "rule"), store.Dir(cg.ID))
	return nil
}

func pinAll(d *datapath.Datapath, att *datapath.Attachment, dir string) error {
	if err := d.Pin(dir); err != nil {
		return err
	}
	return att.Pin(dir)
}

func replace(cg cgroup.Dir, p *policy.Policy, stdout, stderr io.Writer) error {
	d, err := datapath.Open(store.Dir(cg.ID))
	if err != nil {
		return failure(err)
	}
	defer d.Close()
	if err := d.Replace(p); err != nil {
		return failure(err)
	}
	if err := d.Commit(); err != nil { // a policy left uncommitted by a killed attach
		return failure(err)
	}
	if p.DenyRaw && !slices.Contains(datapath.PinnedHooks(store.Dir(cg.ID)), "packet_create") {
		fmt.Fprintln(stderr, "warning: --deny-raw refuses raw sockets but not packet sockets: this kernel refused the BPF LSM program when the policy was first attached")
	}
	fmt.Fprintf(stdout, "replaced policy on %s (%s)\n", cg.Path, plural(len(p.Rules), "rule"))
	return nil
}

func warnPacketGuard(d *datapath.Datapath, p *policy.Policy, stderr io.Writer) {
	if err := d.PacketGuardError(); err != nil && p.DenyRaw {
		fmt.Fprintf(stderr, "warning: --deny-raw refuses raw sockets but not packet sockets: %v\n", err)
	}
}

func newDetachCmd(stdout io.Writer) *cobra.Command {
	var target targetFlags
	var all bool
	cmd := &cobra.Command{
		Use:   "detach --cgroup PATH | --all",
		Short: "Remove a persistent policy: its programs, links and pins",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
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
			return withStore(func() (err error) {
				if all {
					if ids, err = store.IDs(); err != nil {
						return failure(err)
					}
				}
				return detach(ids, all, stdout)
			})
		},
	}
	target.bind(cmd.Flags())
	cmd.Flags().BoolVar(&all, "all", false, "remove every persistent policy")
	return cmd
}

func detach(ids []uint64, all bool, stdout io.Writer) error {
	paths, _ := cgroup.PathsByID(ids)
	for _, id := range ids {
		name := paths[id]
		if name == "" {
			name = fmt.Sprintf("cgroup %d (stale)", id)
		}
		if !store.Exists(id) {
			fmt.Fprintf(stdout, "no policy on %s: nothing to detach\n", name)
			continue
		}
		if err := datapath.Unpin(store.Dir(id)); err != nil {
			return failure(fmt.Errorf("detach from %s: %w", name, err))
		}
		fmt.Fprintf(stdout, "detached from %s\n", name)
	}
	if all && len(ids) == 0 {
		fmt.Fprintln(stdout, "no persistent policies")
	}
	return nil
}
