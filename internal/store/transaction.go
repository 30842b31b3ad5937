package store

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/policy"
)

// Applied says how a policy was put in force.
type Applied struct {
	Dir string // the policy's folder
	// Rebuilt says it replaced a policy by a new attachment, not in place,
	// and Why: "from an older layout", or "for name rules" (programs loaded
	// without their code, or for another resolver).
	Rebuilt bool
	Why     string
	// PacketGuard says why packet sockets are not refused, for a policy that
	// denies raw sockets on a kernel that refused the packet-socket guard.
	PacketGuard error
}

// crashAt, in tests, names a step at which a transaction stops as if the
// process died there: it returns errCrashed and cleans nothing up.
var crashAt string

var errCrashed = errors.New("crashed on purpose")

func crashed(step string) bool { return step == crashAt }

// Create attaches p to a cgroup that has no persistent policy. The policy is
// loaded and attached inert, pinned in a staging folder, renamed into place,
// and only then put in force: killed before the rename, it leaves nothing
// (its links die with the process); after it, a policy that lets everything
// pass until an attach replaces it.
func (s *Store) Create(cg cgroup.Dir, p *policy.Policy, opts ...Option) (Applied, error) {
	d, att, staging, err := s.stage(cg, p, optionsOf(opts))
	if err != nil {
		return Applied{}, err
	}
	defer d.Close()
	defer att.Close() // the pinned links stay
	if crashed("staged") {
		return Applied{}, errCrashed
	}
	if err := os.Rename(staging, s.path(cg.ID)); err != nil {
		remove(staging)
		return Applied{}, fmt.Errorf("move policy into place: %w", err)
	}
	if crashed("renamed") {
		return Applied{}, errCrashed
	}
	if err := d.Commit(); err != nil {
		return Applied{}, err
	}
	return applied(d, s.Dir(cg.ID), p, false), nil
}

// stage loads p, attaches it inert to cg with the hooks it needs, and pins
// it, links and maps and layout, in a new staging folder. A hook that a later
// edit needs is attached then (AttachHooks): an egress policy costs received
// packets nothing. On error it leaves nothing behind.
func (s *Store) stage(cg cgroup.Dir, p *policy.Policy, o options) (_ *datapath.Datapath, _ *datapath.Attachment, dir string, err error) {
	extra, err := o.loadOptions(p)
	if err != nil {
		return nil, nil, "", err
	}
	d, err := datapath.Load(p, append(extra, datapath.WithHooks(datapath.HooksFor(p)...))...)
	if err != nil {
		return nil, nil, "", err
	}
	att, err := d.Attach(cg, datapath.HooksFor(p)...)
	if err != nil {
		d.Close()
		return nil, nil, "", err
	}
	dir = s.transient(stagingPrefix, cg.ID)
	if err = os.Mkdir(dir, 0o700); err == nil {
		err = errors.Join(d.Pin(dir), att.Pin(dir), pinLayout(dir))
		if err == nil {
			err = o.pinRecords(dir, p)
		}
		if err != nil {
			remove(dir)
		}
	}
	if err != nil {
		att.Close()
		d.Close()
		return nil, nil, "", err
	}
	return d, att, dir, nil
}

// Replace puts p in force in place of a cgroup's persistent policy, all hooks
// at once. A policy of this layout switches generations in one write; one of
// another layout is rebuilt. The owner is recorded after the switch: killed
// between the two, the policy in force is p under the old record, which the
// agent reapplies.
func (s *Store) Replace(cg cgroup.Dir, p *policy.Policy, opts ...Option) (Applied, error) {
	o := optionsOf(opts)
	dir := s.path(cg.ID)
	if err := checkLayout(dir); errors.Is(err, ErrLayout) {
		return s.rebuild(cg, p, o, "from an older layout")
	} else if err != nil {
		return Applied{}, fmt.Errorf("%s: %w", s.Dir(cg.ID), err)
	}
	// Name rules need programs loaded with their code and resolver.
	if rebuild, err := o.needsRebuild(dir, p); err != nil {
		return Applied{}, err
	} else if rebuild {
		return s.rebuild(cg, p, o, "for name rules")
	}
	d, err := datapath.Open(dir)
	if err != nil {
		return Applied{}, err
	}
	defer d.Close()
	// The new hooks go first: until the switch, they run the policy in force,
	// which does not need them and lets their packets pass.
	if err := s.AttachHooks(cg, d, p.DenyRaw, datapath.HooksFor(p)...); err != nil {
		return Applied{}, err
	}
	if err := d.Replace(p); err != nil {
		return Applied{}, err
	}
	if err := d.Commit(); err != nil { // a policy left uncommitted by a killed attach
		return Applied{}, err
	}
	// The new policy's totals start from nothing, as its rules' counters do.
	if err := d.ResetTotals(); err != nil {
		return Applied{}, fmt.Errorf("the new policy is in force, but its totals still count the old one's: %w", err)
	}
	if err := setOwner(dir, o.owner); err != nil {
		return Applied{}, fmt.Errorf("the new policy is in force, but its owner is not recorded: %w", err)
	}
	a := Applied{Dir: s.Dir(cg.ID)}
	if links, err := datapath.ReadPinnedLinks(dir); err == nil && p.DenyRaw && !links.PacketGuard {
		a.PacketGuard = errors.New("this kernel refused the BPF LSM program when the policy was first attached")
	}
	return a, nil
}

// rebuild replaces a policy that this cgwall cannot edit (another layout) by
// a new one attached beside it. Both are in force for a moment, and a packet
// passes only if both let it, so no packet passes that either blocks: there
// is no gap. Then the old one goes. Killed at any point, recover leaves
// exactly one of the two.
func (s *Store) rebuild(cg cgroup.Dir, p *policy.Policy, o options, why string) (Applied, error) {
	d, att, staging, err := s.stage(cg, p, o)
	if err != nil {
		return Applied{}, err
	}
	defer d.Close()
	defer att.Close()
	if err := d.Commit(); err != nil {
		remove(staging)
		return Applied{}, err
	}
	if crashed("committed") {
		return Applied{}, errCrashed
	}
	dir, retired := s.path(cg.ID), s.transient(retiredPrefix, cg.ID)
	if err := os.Rename(dir, retired); err != nil {
		remove(staging)
		return Applied{}, fmt.Errorf("retire the old policy: %w", err)
	}
	if crashed("retired") {
		return Applied{}, errCrashed
	}
	if err := os.Rename(staging, dir); err != nil {
		return Applied{}, fmt.Errorf("move policy into place: %w", err)
	}
	if crashed("promoted") {
		return Applied{}, errCrashed
	}
	if err := remove(retired); err != nil {
		return Applied{}, fmt.Errorf("remove the old policy: %w", err)
	}
	a := applied(d, s.Dir(cg.ID), p, true)
	a.Why = why
	return a, nil
}

func applied(d *datapath.Datapath, dir string, p *policy.Policy, rebuilt bool) Applied {
	a := Applied{Dir: dir, Rebuilt: rebuilt}
	if p.DenyRaw {
		a.PacketGuard = d.PacketGuardError()
	}
	return a
}

// AttachHooks attaches to cg those of hooks that its persistent policy has
// not attached yet, with d, the policy opened, and pins their links. Called
// before an edit or a replacement that needs them, it changes no decision:
// until then the policy in force lets everything pass at those hooks.
func (s *Store) AttachHooks(cg cgroup.Dir, d *datapath.Datapath, withOptional bool, hooks ...datapath.Hook) error {
	dir := s.path(cg.ID)
	links, err := datapath.ReadPinnedLinks(dir)
	if err != nil {
		return err
	}
	var missing []datapath.Hook
	for _, h := range hooks {
		if !slices.Contains(links.Hooks, h) {
			missing = append(missing, h)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := d.LoadHooks(withOptional, missing...); err != nil {
		return err
	}
	att, err := d.Attach(cg, missing...)
	if err != nil {
		return err
	}
	defer att.Close() // the pinned links stay
	return att.Pin(dir)
}
