package datapath

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/cgwall/cgwall/internal/policy"
)

// Change says what an edit did.
type Change int

const (
	Unchanged Change = iota // the rule was already there, or already absent
	Added
	Updated // the prefix had a rule with the other action
	Removed
)

// Set makes dir's rule for m have action, in the policy in force. It is in
// force when Set returns. A rule that changes action keeps its ID and counters.
//
// An address-only rule of a prefix without port rules is written in place.
// A port rule, or an address rule of a prefix that has port rules, moves the
// policy to the other generation (rebuildWith): the entries of a prefix's
// port rules hang together (see ports.go), and a switch changes them all at
// once.
func (d *Datapath) Set(dir policy.Direction, action policy.Action, m policy.Match) (policy.Rule, Change, error) {
	if d.fixed {
		return policy.Rule{}, Unchanged, errFixed
	}
	prefix := m.Prefix
	if r, ok := d.policy.Lookup(dir, m); ok {
		if r.Action == action {
			return r, Unchanged, nil
		}
		r.Action = action
		if m.Ports.Any() { // an address rule: its entry keeps its prefix's flags
			if err := d.setAction(r); err != nil {
				return r, Unchanged, err
			}
			d.policy.SetAction(r.ID, action)
			return r, Updated, nil
		}
		return r, Updated, d.rebuild(func(next *policy.Policy) { next.SetAction(r.ID, action) })
	}
	if err := d.policy.Check(dir, action, m); err != nil {
		return policy.Rule{}, Unchanged, err
	}
	if !m.Ports.Any() {
		if err := d.withPortCode(); err != nil {
			return policy.Rule{}, Unchanged, err
		}
	}

	r := policy.Rule{ID: d.state.NextRuleId, Dir: dir, Prefix: prefix, Ports: m.Ports, Action: action}
	// Hand out the ID first, so that no crash can give it twice.
	d.state.NextRuleId++
	if err := d.writeState(); err != nil {
		return r, Unchanged, err
	}
	fits, err := d.fits(r)
	if err != nil {
		return r, Unchanged, err
	}
	if !fits || !m.Ports.Any() || d.enclosesPortRules(dir, prefix) {
		return r, Added, d.rebuildWith(r)
	}
	if err := d.markBitmap(r); err != nil {
		return r, Unchanged, err
	}
	err = d.putRule(r, cgwallEntry{R: cgwallRule{Id: r.ID, Action: uint8(action), Bits: uint8(prefix.Bits())}}, ebpf.UpdateNoExist)
	// E2BIG: the map is full. EEXIST: the prefix has port rules, and an
	// entry for them.
	if errors.Is(err, unix.E2BIG) || errors.Is(err, ebpf.ErrKeyExist) {
		return r, Added, d.rebuildWith(r)
	}
	if err != nil {
		return r, Unchanged, err
	}
	d.policy.AddRule(r)
	return r, Added, nil
}

// enclosesPortRules says whether a longer prefix of dir inside prefix has
// port rules. Its entry names the next shorter prefix with rules (outerOf),
// which a rule of prefix written in place would leave stale: such a rule
// goes in by a rebuild. A rule removed in place needs none: where the prefix
// an entry names is gone, the programs walk the lengths (judge_at in
// bpf/cgwall.c). Programs without the port lookups have no port rules.
func (d *Datapath) enclosesPortRules(dir policy.Direction, prefix netip.Prefix) bool {
	if !d.portCode() {
		return false
	}
	for _, r := range d.policy.Rules {
		if r.Dir == dir && !r.Ports.Any() && r.Prefix.Bits() > prefix.Bits() && prefix.Contains(r.Prefix.Addr()) {
			return true
		}
	}
	return false
}

// fits says whether r can go into the generation in force as it is: a prefix
// of a length that the generation does not look up cannot, nor a rule of a
// kind that the generation has no map for.
func (d *Datapath) fits(r policy.Rule) (bool, error) {
	var cfg cgwallConfig
	if err := d.objs.Settings.Lookup(d.state.Gen, &cfg); err != nil {
		return false, fmt.Errorf("read settings: %w", err)
	}
	if !hasLength(&cfg, r.Dir, r.Prefix) {
		return false, nil
	}
	m, err := d.ruleMap(r.Dir, r.Prefix)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	m.Close()
	return true, nil
}

// rebuildWith moves the whole policy, with r added and every counter kept, to
// the other generation, built for it: maps big enough, the prefix lengths it
// has, a bitmap where it calls for one.
func (d *Datapath) rebuildWith(r policy.Rule) error {
	counters, err := d.RuleCounters()
	if err != nil {
		return err
	}
	next := d.policy.Clone()
	next.AddRule(r)
	return d.switchTo(next, counters)
}

// rebuild moves the policy, changed by change and every counter kept, to the
// other generation.
func (d *Datapath) rebuild(change func(next *policy.Policy)) error {
	counters, err := d.RuleCounters()
	if err != nil {
		return err
	}
	next := d.policy.Clone()
	change(next)
	return d.switchTo(next, counters)
}

// setAction changes a rule's action in place, keeping the counters it has.
func (d *Datapath) setAction(r policy.Rule) error {
	m, err := d.ruleMap(r.Dir, r.Prefix)
	if err != nil {
		return err
	}
	defer m.Close()
	var v cgwallEntry
	if err := m.Lookup(ruleKey(r.Prefix), &v); err != nil {
		return fmt.Errorf("read rule %s: %w", r, err)
	}
	// Packets counted between this read and the write below are lost to the
	// counter, not to the decision.
	v.R.Action = uint8(r.Action)
	return d.putRule(r, v, ebpf.UpdateExist)
}

// putRule writes a rule's value into its map of the generation in force.
func (d *Datapath) putRule(r policy.Rule, v cgwallEntry, flags ebpf.MapUpdateFlags) error {
	m, err := d.ruleMap(r.Dir, r.Prefix)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.Update(ruleKey(r.Prefix), v, flags); err != nil {
		return fmt.Errorf("write rule %s: %w", r, err)
	}
	return nil
}

// Remove deletes dir's rule for prefix from the policy in force. Removing a
// rule that is not there is not an error: it reports Unchanged.
func (d *Datapath) Remove(dir policy.Direction, mt policy.Match) (policy.Rule, Change, error) {
	if d.fixed {
		return policy.Rule{}, Unchanged, errFixed
	}
	prefix := mt.Prefix
	r, ok := d.policy.Lookup(dir, mt)
	if !ok {
		return policy.Rule{Dir: dir, Prefix: prefix, Ports: mt.Ports}, Unchanged, nil
	}
	m, err := d.ruleMap(dir, prefix)
	if err != nil {
		return r, Unchanged, err
	}
	defer m.Close()
	var v cgwallEntry
	if err := m.Lookup(ruleKey(prefix), &v); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return r, Unchanged, fmt.Errorf("read rule %s: %w", r, err)
	}
	if !mt.Ports.Any() || v.R.Flags != 0 {
		// The prefix keeps an entry for its other port rules.
		return r, Removed, d.rebuild(func(next *policy.Policy) { next.Delete(dir, mt) })
	}
	if err := m.Delete(ruleKey(prefix)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return r, Unchanged, fmt.Errorf("delete rule %s: %w", r, err)
	}
	d.policy.Delete(dir, mt)
	return r, Removed, nil
}

// ruleMap returns the inner map of the generation in force that holds dir's
// rule for prefix.
func (d *Datapath) ruleMap(dir policy.Direction, prefix netip.Prefix) (*ebpf.Map, error) {
	return d.innerMap(d.maps.of(dir, prefix).outer)
}
