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

// pinnedMaps lists the maps that make up a persistent policy, by pin name.
func (d *Datapath) pinnedMaps() map[string]**ebpf.Map {
	m := &d.objs.cgwallMaps
	return map[string]**ebpf.Map{
		cgwallMapEgressHost4: &m.EgressHost4, cgwallMapEgressPrefix4: &m.EgressPrefix4,
		cgwallMapEgressHost6: &m.EgressHost6, cgwallMapEgressPrefix6: &m.EgressPrefix6,
		cgwallMapIngressHost4: &m.IngressHost4, cgwallMapIngressPrefix4: &m.IngressPrefix4,
		cgwallMapIngressHost6: &m.IngressHost6, cgwallMapIngressPrefix6: &m.IngressPrefix6,
		cgwallMapEgressBitmap4: &m.EgressBitmap4, cgwallMapIngressBitmap4: &m.IngressBitmap4,
		cgwallMapSettings: &m.Settings,
		cgwallMapCurrent:  &m.Current, cgwallMapStats: &m.Stats, cgwallMapEvents: &m.Events,
	}
}

// Pin pins the datapath's maps in dir, which must exist on a bpffs.
func (d *Datapath) Pin(dir string) error {
	for name, m := range d.pinnedMaps() {
		if err := (*m).Pin(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("pin map %s: %w", name, err)
		}
	}
	return nil
}

// Open opens the persistent policy pinned in dir, for edits, counters and
// events. Its programs stay where they are; Open loads none.
func Open(dir string) (*Datapath, error) {
	spec, err := loadCgwall()
	if err != nil {
		return nil, err
	}
	d := &Datapath{spec: spec}
	for name, m := range d.pinnedMaps() {
		if *m, err = ebpf.LoadPinnedMap(filepath.Join(dir, name), nil); err != nil {
			d.objs.cgwallMaps.Close()
			return nil, fmt.Errorf("open pinned map %s: %w", name, err)
		}
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

	for _, o := range d.ruleOuters() {
		if err := d.eachRule(o, func(r policy.Rule, _ Counter) { p.AddRule(r) }); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// eachRule calls fn for every rule in an outer map's generation in force.
func (d *Datapath) eachRule(o outer, fn func(policy.Rule, Counter)) error {
	inner, err := d.innerMap(o.m)
	if err != nil {
		return err
	}
	defer inner.Close()
	dir := policy.Egress
	if o.name[0] == 'i' {
		dir = policy.Ingress
	}
	key := newKey(o.name)
	var val cgwallRule
	it := inner.Iterate()
	for it.Next(key, &val) {
		fn(policy.Rule{ID: val.Id, Dir: dir, Prefix: rulePrefix(key), Action: policy.Action(val.Action)},
			Counter{Packets: val.Packets, Bytes: val.Bytes})
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read rules of %s: %w", o.name, err)
	}
	return nil
}

// newKey returns a pointer to a zero key of a rule map.
func newKey(name string) any {
	switch name {
	case cgwallMapEgressHost4, cgwallMapIngressHost4:
		return new([4]byte)
	case cgwallMapEgressPrefix4, cgwallMapIngressPrefix4:
		return new(cgwallPrefixKey4)
	case cgwallMapEgressHost6, cgwallMapIngressHost6:
		return new(cgwallAddr6)
	}
	return new(cgwallPrefixKey6)
}

// RuleCounters returns the packets and bytes each rule of the policy in force
// decided, by rule ID.
func (d *Datapath) RuleCounters() (map[uint32]Counter, error) {
	out := map[uint32]Counter{}
	for _, o := range d.ruleOuters() {
		if err := d.eachRule(o, func(r policy.Rule, c Counter) { out[r.ID] = c }); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// PinLinks pins an attachment's links in dir, so that they outlive the process.
func (a *Attachment) Pin(dir string) error {
	for i, l := range a.links {
		if err := l.Pin(filepath.Join(dir, "link_"+a.names[i])); err != nil {
			return fmt.Errorf("pin %s link: %w", a.names[i], err)
		}
	}
	return nil
}

// PinnedHooks lists the hooks whose links are pinned in dir.
func PinnedHooks(dir string) []string {
	matches, _ := filepath.Glob(filepath.Join(dir, "link_*"))
	out := make([]string, len(matches))
	for i, m := range matches {
		out[i] = filepath.Base(m)[len("link_"):]
	}
	return out
}

// Unpin detaches every link pinned in dir and removes dir with every pin in
// it. Pins already gone are no error.
func Unpin(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	// Links first: once they are gone nothing enforces, and the maps can go.
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if !strings.HasPrefix(e.Name(), "link_") {
			continue
		}
		l, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("open pinned link %s: %w", path, err))
			continue
		}
		errs = append(errs, l.Unpin(), l.Close())
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
