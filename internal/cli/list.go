package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/events"
	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/store"
)

// policyView is what list shows of one persistent policy.
type policyView struct {
	Cgroup string   `json:"cgroup"`
	ID     uint64   `json:"cgroup_id"`
	Stale  bool     `json:"stale"`
	Live   bool     `json:"live"`
	Hooks  []string `json:"hooks"`
	// Owner is the policy file of the agent that attached the policy, ""
	// for one attached by hand, which the agent leaves alone.
	Owner string `json:"agent_file"`
	// PacketGuard says whether packet sockets are refused along with raw
	// ones: the guard is a BPF LSM program, which some kernels refuse.
	PacketGuard bool              `json:"packet_guard"`
	Defaults    map[string]string `json:"defaults"`
	Audit       bool              `json:"audit"`
	Log         string            `json:"log"`
	DenyRaw     bool              `json:"deny_raw"`
	Rules       []ruleView        `json:"rules"`
	Totals      map[string]count  `json:"totals"`
	LostEvents  uint64            `json:"lost_events"`
	// Learned is, for a policy with name rules, the addresses DNS answers
	// put in force (empty when none is); absent for a policy without.
	Learned *[]learnedView `json:"learned,omitempty"`
	// OtherLayout, for a policy that an older (or newer) cgwall pinned,
	// which this one cannot read, says so and what to do; nothing else
	// is shown of it.
	OtherLayout string `json:"other_layout,omitempty"`
	// ExpiryUnknown says why Learned has no expiry: no agent answers.
	ExpiryUnknown string `json:"expiry_unknown,omitempty"`
}

// ruleView is one rule: Rule is its canonical form, which block, allow and
// remove take back; the fields after it are its parts.
type ruleView struct {
	ID     uint32 `json:"id"`
	Dir    string `json:"direction"`
	Action string `json:"action"`
	Rule   string `json:"rule"`
	Prefix string `json:"prefix"` // "" for a name rule
	// Proto is the protocol's name as rules write it, "" for every
	// protocol; Port and EndPort the inclusive range, 0 for every port.
	Proto   string `json:"proto"`
	Port    uint16 `json:"port"`
	EndPort uint16 `json:"end_port"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

func newRuleView(r policy.Rule, c datapath.Counter) ruleView {
	v := ruleView{
		ID: r.ID, Dir: r.Dir.String(), Action: r.Action.String(),
		Rule: r.Match().String(), Prefix: r.Prefix.String(),
		Port: r.Ports.Lo, EndPort: r.Ports.Hi,
		Packets: c.Packets, Bytes: c.Bytes,
	}
	if r.Ports.Proto != 0 {
		v.Proto = policy.ProtoName(r.Ports.Proto)
	}
	if r.Name != "" {
		v.Prefix = "" // a name rule: Rule is its pattern
	}
	return v
}

type count struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

func newListCmd(stdout io.Writer) *cobra.Command {
	var target targetFlags
	format := formatFlag()
	cmd := &cobra.Command{
		Use:   "list [--cgroup PATH] [--format text|json]",
		Short: "Show persistent policies, their rules and counters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var views []policyView
			err := withStore(cmd, func(s *store.Store) error {
				ids, err := selectIDs(s, &target, "list")
				if err != nil {
					return err
				}
				if views, err = viewPolicies(cmd.Context(), s, ids); err != nil {
					return failure(err)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if format.val == events.JSON {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(views)
			}
			printViews(stdout, views)
			return nil
		},
	}
	fs := cmd.Flags()
	target.bind(cmd)
	fs.VarP(format, "format", "o", "output format (--output is an alias)")
	// --output, list's name before every command took --format, is the same flag.
	fs.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		if name == "output" {
			name = "format"
		}
		return pflag.NormalizedName(name)
	})
	return cmd
}

// selectIDs returns the cgroup IDs a command is about: the target's, or every
// persistent policy's when no target is given.
func selectIDs(s *store.Store, target *targetFlags, cmd string) ([]uint64, error) {
	if len(target.given()) > 0 {
		cg, err := target.resolve(cmd)
		if err != nil {
			return nil, err
		}
		if !s.Exists(cg.ID) {
			return nil, usageErr(fmt.Errorf("no policy on %s", cg.Path))
		}
		return []uint64{cg.ID}, nil
	}
	ids, err := s.List()
	if err != nil {
		return nil, failure(err)
	}
	return ids, nil
}

func viewPolicies(ctx context.Context, s *store.Store, ids []uint64) ([]policyView, error) {
	paths, err := cgroup.PathsByID(ids)
	if err != nil {
		return nil, err
	}
	views := []policyView{}
	for _, id := range ids {
		v, err := viewPolicy(ctx, s, id, paths[id])
		if errors.Is(err, store.ErrLayout) {
			// Another cgwall's policy, which this one cannot read (so
			// not whether it is live): list names it and says what to
			// do, rather than fail on every policy.
			views = append(views, policyView{Cgroup: paths[id], ID: id, Stale: paths[id] == "",
				OtherLayout: err.Error(), Rules: []ruleView{}, Totals: map[string]count{}})
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("cgroup %d: %w", id, err)
		}
		views = append(views, v)
	}
	return views, nil
}

func viewPolicy(ctx context.Context, s *store.Store, id uint64, path string) (policyView, error) {
	d, err := s.Open(id)
	if err != nil {
		return policyView{}, err
	}
	defer d.Close()
	links, err := s.Links(id)
	if err != nil {
		return policyView{}, err
	}
	p := d.Policy()
	v := policyView{
		Cgroup: path, ID: id, Stale: path == "", Live: d.Live(),
		Hooks: hookNames(links.Hooks), PacketGuard: links.PacketGuard,
		Defaults: map[string]string{"egress": p.Default[0].String(), "ingress": p.Default[1].String()},
		Audit:    p.Audit, Log: p.Log.String(), DenyRaw: p.DenyRaw,
		Rules: []ruleView{}, Totals: map[string]count{},
	}
	if o, ok, err := s.Owner(id); err != nil {
		return v, err
	} else if ok && o.Agent {
		v.Owner = o.File
	}
	counters, err := d.RuleCounters()
	if err != nil {
		return v, err
	}
	for _, rules := range [][]policy.Rule{p.Rules, p.Names} {
		for _, r := range rules {
			v.Rules = append(v.Rules, newRuleView(r, counters[r.ID]))
		}
	}
	slices.SortFunc(v.Rules, func(a, b ruleView) int { return int(a.ID) - int(b.ID) })
	if err := viewLearned(ctx, s, d, &v); err != nil {
		return v, err
	}
	for _, h := range datapath.Hooks {
		s, err := d.Stats(h)
		if err != nil {
			return v, err
		}
		add := func(name string, c datapath.Counter) {
			t := v.Totals[name]
			t.Packets += c.Packets
			t.Bytes += c.Bytes
			v.Totals[name] = t
		}
		add("pass", s.Pass)
		add("drop", s.Drop)
		add("audit_drop", s.AuditDrop)
		add("malformed", s.Malformed)
		v.LostEvents += s.EventsLost.Packets
	}
	return v, nil
}

func printViews(w io.Writer, views []policyView) {
	if len(views) == 0 {
		fmt.Fprintln(w, "no persistent policies")
		return
	}
	for i, v := range views {
		if i > 0 {
			fmt.Fprintln(w)
		}
		switch {
		case v.Stale:
			fmt.Fprintf(w, "cgroup %d (stale: the cgroup no longer exists; 'cgwall gc' removes its policy)\n", v.ID)
		default:
			fmt.Fprintf(w, "%s (cgroup %d)\n", v.Cgroup, v.ID)
		}
		if v.OtherLayout != "" {
			fmt.Fprintf(w, "  not shown: %s\n", v.OtherLayout)
			continue
		}
		if !v.Live {
			fmt.Fprintln(w, "  not in force: an attach was interrupted; attach again to replace it")
		}
		if v.Owner != "" {
			fmt.Fprintf(w, "  attached by cgwall agent from %s\n", v.Owner)
		}
		fmt.Fprintf(w, "  hooks: %v\n", v.Hooks)
		fmt.Fprintf(w, "  default egress %s, ingress %s; audit %s; log %s; deny_raw %s\n",
			v.Defaults["egress"], v.Defaults["ingress"], onOff(v.Audit), v.Log, denyRaw(v))
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  ID\tDIRECTION\tACTION\tRULE\tPACKETS\tBYTES")
		for _, r := range v.Rules {
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%d\t%d\n", r.ID, r.Dir, r.Action, r.Rule, r.Packets, r.Bytes)
		}
		tw.Flush()
		printLearned(w, v, time.Now())
		t := v.Totals
		fmt.Fprintf(w, "  totals: pass %d packets (%d bytes), drop %d (%d bytes), audit-drop %d, malformed %d; events lost %d\n",
			t["pass"].Packets, t["pass"].Bytes, t["drop"].Packets, t["drop"].Bytes, t["audit_drop"].Packets, t["malformed"].Packets, v.LostEvents)
	}
	fmt.Fprintln(w, "\n"+countersNote)
}

// countersNote says what list's counters count, once under the policies.
const countersNote = `Packet counts include the socket calls judged at connect(), sendto() and
socket(), which count no bytes: bytes are those of IP packets alone. Totals
and rule counters start from zero when a policy is replaced.`

// denyRaw says what a policy refuses of raw sockets, exactly.
func denyRaw(v policyView) string {
	switch {
	case !v.DenyRaw:
		return "off"
	case !v.PacketGuard:
		return "on (" + socketsRefused(v.Audit, errors.New("this kernel refused the BPF LSM guard when the policy was attached")) + ")"
	}
	return "on (" + socketsRefused(v.Audit, nil) + ")"
}

func hookNames(hooks []datapath.Hook) []string {
	out := make([]string, len(hooks))
	for i, h := range hooks {
		out[i] = h.String()
	}
	return out
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func newGCCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Remove the policies of cgroups that no longer exist",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStore(cmd, func(s *store.Store) error { return gc(s, stdout) })
		},
	}
}

// gc removes the policies whose cgroup is gone.
func gc(s *store.Store, stdout io.Writer) error {
	ids, err := s.List()
	if err != nil {
		return failure(err)
	}
	paths, err := cgroup.PathsByID(ids)
	if err != nil {
		return failure(err)
	}
	removed := 0
	for _, id := range ids {
		if paths[id] != "" {
			continue
		}
		if err := s.Remove(id); err != nil {
			return failure(fmt.Errorf("remove stale policy of cgroup %d: %w", id, err))
		}
		fmt.Fprintf(stdout, "removed the stale policy of cgroup %d\n", id)
		removed++
	}
	if removed == 0 {
		fmt.Fprintln(stdout, "no stale policies")
	}
	return nil
}
