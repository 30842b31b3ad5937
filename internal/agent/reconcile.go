package agent

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/metrics"
	"github.com/cgwall/cgwall/internal/store"
	"github.com/cgwall/cgwall/internal/targets"
)

// full reads the files and the cgroup tree again and puts in force what they
// say: every cgroup that exists and that one good file targets has that
// file's policy, and no policy the agent owns is left where no file wants
// it. force parses files whose text did not change too (SIGHUP).
func (a *Agent) full(ctx context.Context, force bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.readFiles(ctx, force); err != nil {
		return err
	}
	if err := a.readTree(); err != nil {
		return err
	}
	s, err := a.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	ids, err := s.List()
	if err != nil {
		return err
	}
	exists := map[uint64]bool{}
	var errs []error
	for _, rel := range sortedKeys(a.cgroups) {
		id := a.cgroups[rel]
		exists[id] = true
		if a.targeted(rel) || s.Exists(id) {
			errs = append(errs, a.apply(s, rel, id), a.followDNS(s, rel, id))
		}
	}
	for _, id := range ids {
		if !exists[id] {
			errs = append(errs, a.removeStale(s, id))
		}
	}
	return errors.Join(errs...)
}

// readFiles reads every policy file of the folder, logging each that turned
// bad or good or changed, and forgets those that are gone.
func (a *Agent) readFiles(ctx context.Context, force bool) error {
	paths, err := policyFiles(a.cfg.Policies)
	if err != nil {
		return err
	}
	for path := range a.files {
		if !slices.Contains(paths, path) {
			a.log.Info("policy file removed: what it attached is detached", "policy", filepath.Base(path))
			delete(a.files, path)
		}
	}
	for _, path := range paths {
		f := a.files[path]
		if f == nil {
			f = &file{path: path}
			a.files[path] = f
		}
		if !f.read(ctx, force, a.cfg.DNS != nil) {
			continue
		}
		if f.err != nil {
			a.badFile(f)
			continue
		}
		a.log.Info("policy file read", "policy", f.name(), "rules", len(f.good.policy.Rules), "targets", targetList(f.good.targets))
	}
	return nil
}

// badFile counts a file that turned bad, and logs each of its problems.
func (a *Agent) badFile(f *file) {
	kept := "it has never been read good: the policies it attached stay as they are"
	if f.good != nil {
		kept = "its last good policy stays in force"
	}
	// Counted before it is logged: the log line is what a reader (and the
	// tests) wait on, and a scrape after it must see the count.
	if a.metrics != nil {
		a.metrics.FileError(f.name())
	}
	for _, line := range problems(f.err) {
		a.log.Error("bad policy file: "+kept, "policy", f.name(), "problem", line)
	}
}

// readTree lists the cgroups that exist, with their IDs.
func (a *Agent) readTree() error {
	rels, err := targets.Walk(a.cfg.Mount)
	if err != nil {
		return fmt.Errorf("read the cgroup tree at %s: %w", a.cfg.Mount, err)
	}
	a.cgroups = map[string]uint64{}
	for _, rel := range rels {
		if id, ok := a.cgroupID(rel); ok {
			a.cgroups[rel] = id
		}
	}
	return nil
}

// cgroupID is the ID of the cgroup at rel, its directory's inode; ok is
// false for one removed meanwhile.
func (a *Agent) cgroupID(rel string) (uint64, bool) {
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(a.cfg.Mount, rel), &st); err != nil {
		return 0, false
	}
	return st.Ino, true
}

// cgroupEvent follows one cgroup made or removed.
func (a *Agent) cgroupEvent(ctx context.Context, ev targets.Event) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ev.Created {
		id, ok := a.cgroupID(ev.Rel)
		if !ok {
			return nil // gone already: its removal follows
		}
		a.cgroups[ev.Rel] = id
		if !a.targeted(ev.Rel) {
			return nil
		}
		s, err := a.openStore(ctx)
		if err != nil {
			return err
		}
		defer s.Close()
		return errors.Join(a.apply(s, ev.Rel, id), a.followDNS(s, ev.Rel, id))
	}
	id, ok := a.cgroups[ev.Rel]
	delete(a.cgroups, ev.Rel)
	if !ok || a.states[id] == nil {
		return nil
	}
	s, err := a.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	return a.removeStale(s, id)
}

// targeted says whether a good file's targets name the cgroup at rel.
func (a *Agent) targeted(rel string) bool {
	return len(a.wanting(rel)) > 0
}

// wanting returns the files whose last good targets name the cgroup at rel,
// sorted.
func (a *Agent) wanting(rel string) []*file {
	var out []*file
	for _, path := range sortedKeys(a.files) {
		f := a.files[path]
		if f.good != nil && targets.Matches(f.good.targets, rel) {
			out = append(out, f)
		}
	}
	return out
}

// apply puts in force at one cgroup what the files say, as far as the agent
// may: the policy of the one file that targets it, unless somebody attached
// one by hand there; none of the agent's where no file targets it.
func (a *Agent) apply(s *store.Store, rel string, id uint64) error {
	want := a.wanting(rel)
	var owner store.Owner
	var owned bool
	if s.Exists(id) {
		o, ok, err := s.Owner(id)
		if err != nil {
			return err
		}
		owner, owned = o, ok && o.Agent
	}
	switch {
	case len(want) == 0:
		return a.unwanted(s, rel, id, owner, owned)
	case len(want) > 1:
		names := make([]string, len(want))
		for i, f := range want {
			names[i] = f.name()
		}
		a.conflict(id, rel, want[0].path, fmt.Sprintf("targeted by %s: each cgroup takes one policy file; its policy is left as it is until one file targets it", strings.Join(names, " and ")))
		return nil
	}
	f := want[0]
	if s.Exists(id) && !owned {
		a.conflict(id, rel, f.path, fmt.Sprintf("has a policy attached by hand, which %s targets: it is not overwritten; 'cgwall detach --cgroup %s' lets the agent apply the file", f.name(), rel))
		return nil
	}
	state := metrics.InForce
	if f.err != nil {
		state = metrics.Stale
	}
	if owned && owner.File == f.path && owner.SHA256 == f.good.digest && s.CheckLayout(id) == nil && a.sameResolver(s, id, f) {
		a.set(id, rel, f.path, state) // adopted as it is: nothing to do
		return nil
	}
	return a.put(s, rel, id, f, state, s.Exists(id))
}

// sameResolver says whether the policy in force at a cgroup sends its DNS
// where this agent serves it, for a file with name rules: a restarted agent
// on another port rebuilds it.
func (a *Agent) sameResolver(s *store.Store, id uint64, f *file) bool {
	if !f.good.policy.HasNames() {
		return true
	}
	r, ok, err := s.HasNames(id)
	return err == nil && ok && a.cfg.DNS != nil && r == a.cfg.DNS.Addrs()
}

// put attaches or replaces the policy of f at a cgroup, recording the agent
// as its owner.
func (a *Agent) put(s *store.Store, rel string, id uint64, f *file, state metrics.State, replacing bool) error {
	cg := cgroup.Dir{Path: filepath.Join(a.cfg.Mount, rel), ID: id}
	op, verb := s.Create, "attached"
	if replacing {
		op, verb = s.Replace, "replaced"
	}
	start := time.Now()
	opts := []store.Option{store.Owned(store.Owner{Agent: true, File: f.path, SHA256: f.good.digest})}
	if a.cfg.DNS != nil {
		opts = append(opts, store.WithResolver(a.cfg.DNS.Addrs()))
	}
	applied, err := op(cg, f.good.policy, opts...)
	if a.metrics != nil {
		a.metrics.ObserveApply(f.name(), time.Since(start), err)
	}
	if err != nil {
		if replacing {
			a.set(id, rel, f.path, metrics.Stale) // the policy it had stays
		}
		return fmt.Errorf("apply %s to %s: %w", f.name(), rel, err)
	}
	if applied.Rebuilt {
		verb = "rebuilt " + applied.Why
	}
	a.log.Info("policy "+verb, "cgroup", rel, "policy", f.name(), "rules", len(f.good.policy.Rules), "took", time.Since(start).Round(time.Microsecond))
	a.set(id, rel, f.path, state)
	if a.cfg.Applied != nil {
		a.cfg.Applied(rel)
	}
	return nil
}

// unwanted handles a cgroup that no good file targets: the agent's policy
// there goes, unless its file is bad and was never read good, so that what
// it says is not known and what it attached stays.
func (a *Agent) unwanted(s *store.Store, rel string, id uint64, owner store.Owner, owned bool) error {
	if !owned {
		delete(a.states, id)
		return nil
	}
	if f := a.files[owner.File]; f != nil && f.good == nil {
		a.set(id, rel, owner.File, metrics.BadFile)
		return nil
	}
	if err := s.Remove(id); err != nil {
		return fmt.Errorf("detach from %s: %w", rel, err)
	}
	a.log.Info("policy detached: no file targets the cgroup now", "cgroup", rel, "policy", filepath.Base(owner.File))
	delete(a.states, id)
	return nil
}

// followDNS serves the DNS of the cgroup's policy if it has name rules,
// whoever attached it, and stops serving it if not.
func (a *Agent) followDNS(s *store.Store, rel string, id uint64) error {
	if a.cfg.DNS == nil {
		return nil
	}
	if !s.Exists(id) {
		a.cfg.DNS.Drop(id)
		return nil
	}
	if err := a.cfg.DNS.Serve1(s, id, rel); err != nil {
		return fmt.Errorf("serve the DNS of %s: %w", rel, err)
	}
	return nil
}

// removeStale removes the agent's policy of a cgroup that is gone.
func (a *Agent) removeStale(s *store.Store, id uint64) error {
	defer delete(a.states, id)
	if a.cfg.DNS != nil {
		a.cfg.DNS.Drop(id)
	}
	if !s.Exists(id) {
		return nil
	}
	o, ok, err := s.Owner(id)
	if err != nil || !ok || !o.Agent {
		return err
	}
	if err := s.Remove(id); err != nil {
		return fmt.Errorf("remove the policy of removed cgroup %d: %w", id, err)
	}
	a.log.Info("policy removed with its cgroup", "policy", filepath.Base(o.File), "cgroup_id", id)
	return nil
}

// conflict records a cgroup the agent leaves alone, logging why once.
func (a *Agent) conflict(id uint64, rel, file, why string) {
	st := a.set(id, rel, file, metrics.Conflict)
	if st.why != why {
		a.log.Warn("conflict: cgroup "+why, "cgroup", rel, "policy", filepath.Base(file))
		st.why = why
	}
}

func (a *Agent) set(id uint64, rel, file string, state metrics.State) *cgroupState {
	st := a.states[id]
	if st == nil {
		st = &cgroupState{}
		a.states[id] = st
	}
	st.rel, st.file, st.state = rel, file, state
	if state != metrics.Conflict {
		st.why = ""
	}
	return st
}

func targetList(ts []targets.Target) string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.String()
	}
	return strings.Join(out, " ")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
