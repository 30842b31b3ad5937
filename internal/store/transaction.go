package store

import (
	"errors"
	"fmt"
	"os"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/policy"
)

// persistentHooks are attached by every persistent policy, whatever its
// rules: later edits may need any of them, and replacing a policy must not
// have to attach anything.
var persistentHooks = datapath.Hooks

// Applied says how a policy was put in force.
type Applied struct {
	Dir     string // the policy's folder
	Rebuilt bool   // it replaced a policy of another layout, by a new attachment
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
func (s *Store) Create(cg cgroup.Dir, p *policy.Policy) (Applied, error) {
	d, err := datapath.Load(p, datapath.WithPacketGuard())
	if err != nil {
		return Applied{}, err
	}
	defer d.Close()
	staging := s.transient(stagingPrefix, cg.ID)
	att, err := s.stage(d, cg, staging)
	if err != nil {
		return Applied{}, err
	}
	defer att.Close() // the pinned links stay
	if crashed("staged") {
		return Applied{}, errCrashed
	}
	if err := os.Rename(staging, s.Dir(cg.ID)); err != nil {
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

// stage attaches d to cg and pins it, links and maps and layout, in dir.
func (s *Store) stage(d *datapath.Datapath, cg cgroup.Dir, dir string) (*datapath.Attachment, error) {
	att, err := d.Attach(cg, persistentHooks...)
	if err != nil {
		return nil, err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		att.Close()
		return nil, err
	}
	if err := errors.Join(d.Pin(dir), att.Pin(dir), pinLayout(dir)); err != nil {
		att.Close()
		remove(dir)
		return nil, err
	}
	return att, nil
}

// Replace puts p in force in place of a cgroup's persistent policy, all hooks
// at once. A policy of this layout switches generations in one write; one of
// another layout is rebuilt.
func (s *Store) Replace(cg cgroup.Dir, p *policy.Policy) (Applied, error) {
	dir := s.Dir(cg.ID)
	if err := checkLayout(dir); errors.Is(err, ErrLayout) {
		return s.rebuild(cg, p)
	} else if err != nil {
		return Applied{}, err
	}
	d, err := datapath.Open(dir)
	if err != nil {
		return Applied{}, err
	}
	defer d.Close()
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
	a := Applied{Dir: dir}
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
func (s *Store) rebuild(cg cgroup.Dir, p *policy.Policy) (Applied, error) {
	d, err := datapath.Load(p, datapath.WithPacketGuard())
	if err != nil {
		return Applied{}, err
	}
	defer d.Close()
	staging := s.transient(stagingPrefix, cg.ID)
	att, err := s.stage(d, cg, staging)
	if err != nil {
		return Applied{}, err
	}
	defer att.Close()
	if err := d.Commit(); err != nil {
		remove(staging)
		return Applied{}, err
	}
	if crashed("committed") {
		return Applied{}, errCrashed
	}
	dir, retired := s.Dir(cg.ID), s.transient(retiredPrefix, cg.ID)
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
	return applied(d, dir, p, true), nil
}

func applied(d *datapath.Datapath, dir string, p *policy.Policy, rebuilt bool) Applied {
	a := Applied{Dir: dir, Rebuilt: rebuilt}
	if p.DenyRaw {
		a.PacketGuard = d.PacketGuardError()
	}
	return a
}
