package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/cgwall/cgwall/internal/policy"
)

// Pin pins every map of the datapath in dir, which must exist on a bpffs, by
// its name in the BPF object.
func (d *Datapath) Pin(dir string) error {
	if d.fixed {
		return errFixed
	}
	for name, m := range pinnedMaps(&d.objs) {
		if err := m.Pin(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("pin map %s: %w", name, err)
		}
	}
	if d.names != nil {
		if err := d.names.Pin(filepath.Join(dir, namesPin)); err != nil {
			return fmt.Errorf("pin the name rules' record: %w", err)
		}
	}
	return nil
}

// Open opens the persistent policy pinned in dir, for edits, counters and
// events. Its programs stay where they are; Open loads none. Each pinned map
// must be one this cgwall's object could have made (cilium/ebpf's
// compatibility check); Open names the first that is missing or is not.
func Open(dir string) (*Datapath, error) {
	spec, err := loadCgwall()
	if err != nil {
		return nil, err
	}
	pinned := map[string]*ebpf.Map{}
	defer func() {
		for _, m := range pinned {
			m.Close() // LoadAndAssign uses clones
		}
	}()
	for name := range pinnedMaps(&cgwallMaps{}) {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if err != nil {
			return nil, fmt.Errorf("open pinned map %s: %w", name, err)
		}
		pinned[name] = m
	}
	// The learned maps and origins are sized at load (WithDNS): take the
	// size they have.
	for _, name := range []string{"learned4", "learned6", cgwallMapOrigins} {
		if m := pinned[name]; m != nil {
			spec.Maps[name].MaxEntries = m.MaxEntries()
		}
	}
	d := &Datapath{spec: spec, pinDir: dir}
	if err := spec.LoadAndAssign(&d.objs, &ebpf.CollectionOptions{MapReplacements: pinned}); err != nil {
		return nil, fmt.Errorf("open pinned maps in %s: %w", dir, err)
	}
	if d.names, err = openNames(dir); err != nil {
		d.Close()
		return nil, err
	}
	if d.maps, err = newRuleMaps(mapsByName(&d.objs)); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.Refresh(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// Refresh reads the state and the policy in force back from the maps, to see
// what other cgwall processes changed.
func (d *Datapath) Refresh() error {
	if err := d.objs.Current.Lookup(uint32(0), &d.state); err != nil {
		return fmt.Errorf("read policy state: %w", err)
	}
	p, err := d.readPolicy()
	if err != nil {
		return err
	}
	d.policy = p
	if d.names != nil {
		d.namesMu.Lock()
		d.learned = learnedValues(p)
		if d.forgotten == nil {
			d.forgotten = forgotten{}
		}
		d.namesMu.Unlock()
	}
	return nil
}

// readPolicy reads the policy in force back from the maps.
func (d *Datapath) readPolicy() (*policy.Policy, error) {
	p := policy.New()
	var cfg cgwallConfig
	if err := d.objs.Settings.Lookup(d.state.Gen, &cfg); err != nil {
		return nil, fmt.Errorf("read settings: %w", err)
	}
	for _, dir := range policy.Directions {
		p.Default[dir] = policy.Action(cfg.DefaultAction[dir])
	}
	p.Audit, p.DenyRaw, p.Log = cfg.Audit != 0, cfg.DenyRaw != 0, policy.LogLevel(cfg.LogLevel)

	seen := map[uint32]bool{} // a range rule has an entry per block
	for _, m := range d.maps.withRules() {
		err := d.eachRule(m, func(r policy.Rule, _ Counter) {
			// A name pattern's port rules, under its site: the names
			// record gives them.
			if !seen[r.ID] && r.Prefix.IsValid() {
				seen[r.ID] = m.kind == kindRanges
				p.AddRule(r)
			}
		})
		if err != nil {
			return nil, err
		}
	}
	if d.names != nil {
		if err := d.readNames(p, d.state.Gen); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// eachRule calls fn for every rule in a rule map's generation in force.
func (d *Datapath) eachRule(m ruleMap, fn func(policy.Rule, Counter)) error {
	inner, err := d.innerMap(m.outer)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil // no rule of the kind
	}
	if err != nil {
		return err
	}
	defer inner.Close()
	err = kindTable[m.kind].each(inner, func(r policy.Rule, c Counter) {
		if r.ID != 0 { // not a prefix that only has port rules
			r.Dir = m.dir
			fn(r, c)
		}
	})
	if err != nil {
		return fmt.Errorf("read rules of %s: %w", m.name(), err)
	}
	return nil
}

// RuleCounters returns the packets and bytes each rule of the policy in force
// decided, by rule ID.
func (d *Datapath) RuleCounters() (map[uint32]Counter, error) {
	out := map[uint32]Counter{}
	for _, m := range d.maps.withRules() {
		// A range rule's counts are spread over its blocks.
		err := d.eachRule(m, func(r policy.Rule, c Counter) {
			sum := out[r.ID]
			out[r.ID] = sum.plus(c)
		})
		if err != nil {
			return nil, err
		}
	}
	if err := d.learnedCounters(out); err != nil {
		return nil, err
	}
	return out, nil
}

// linkPinPrefix starts the pin name of every link.
const linkPinPrefix = "link_"

// Pin pins an attachment's links in dir, so that they outlive the process.
func (a *Attachment) Pin(dir string) error {
	for i, l := range a.links {
		if err := l.Pin(filepath.Join(dir, linkPinPrefix+a.progs[i].pin)); err != nil {
			return fmt.Errorf("pin %s link: %w", a.progs[i].pin, err)
		}
	}
	return nil
}

// PinnedLinks says what the links pinned in a folder attach.
type PinnedLinks struct {
	Hooks       []Hook // hooks with every required program's link pinned
	PacketGuard bool   // the optional packet-socket guard is pinned too
}

// ReadPinnedLinks reads which links are pinned in dir.
func ReadPinnedLinks(dir string) (PinnedLinks, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return PinnedLinks{}, err
	}
	pinned := map[string]bool{}
	for _, e := range entries {
		if _, p, ok := hookOfPin(e.Name()); ok {
			pinned[p.name] = true
		}
	}
	var out PinnedLinks
	for _, h := range Hooks {
		whole := true
		for _, p := range h.programs() {
			if p.optional {
				out.PacketGuard = out.PacketGuard || pinned[p.name]
			} else {
				whole = whole && pinned[p.name]
			}
		}
		if whole {
			out.Hooks = append(out.Hooks, h)
		}
	}
	return out, nil
}

// Unlink detaches every link pinned in dir and removes its pin. Links go
// first: once they are gone nothing enforces, and the maps can go. Pins
// already gone are no error.
func Unlink(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		// Any link, including one of a program this cgwall does not know.
		if !strings.HasPrefix(e.Name(), linkPinPrefix) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		l, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("open pinned link %s: %w", path, err))
			continue
		}
		errs = append(errs, l.Unpin(), l.Close())
	}
	return errors.Join(errs...)
}
