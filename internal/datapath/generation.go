package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/cgwall/cgwall/internal/policy"
)

// outer is an outer map that holds each generation's inner map of one kind.
type outer struct {
	name string
	m    *ebpf.Map
}

// ruleOuters lists the outer maps of the rule maps.
func (d *Datapath) ruleOuters() []outer {
	m := &d.objs.cgwallMaps
	return []outer{
		{cgwallMapEgressHost4, m.EgressHost4}, {cgwallMapEgressPrefix4, m.EgressPrefix4},
		{cgwallMapEgressHost6, m.EgressHost6}, {cgwallMapEgressPrefix6, m.EgressPrefix6},
		{cgwallMapIngressHost4, m.IngressHost4}, {cgwallMapIngressPrefix4, m.IngressPrefix4},
		{cgwallMapIngressHost6, m.IngressHost6}, {cgwallMapIngressPrefix6, m.IngressPrefix6},
	}
}

// generation is one generation's inner maps, by outer map name.
type generation map[string]*ebpf.Map

func (g generation) Close() {
	for _, m := range g {
		m.Close()
	}
}

// install builds p's inner maps and settings in generation gen, with the
// counters given by rule ID. It does not switch to it.
func (d *Datapath) install(p *policy.Policy, gen uint32, counters map[uint32]Counter) error {
	n := countRules(p)
	g, err := d.newGeneration(n)
	if err != nil {
		return err
	}
	// The outer maps hold their own references; ours go when install returns.
	defer g.Close()
	if err := fillGeneration(g, p, n, counters); err != nil {
		return err
	}
	for _, o := range d.ruleOuters() {
		if err := o.m.Put(gen, g[o.name]); err != nil {
			return fmt.Errorf("install generation %d of %s: %w", gen, o.name, err)
		}
	}
	if err := d.installBitmaps(p, gen); err != nil {
		return err
	}
	return d.writeSettings(p, gen)
}

// installBitmaps gives generation gen the bitmaps p calls for, and none where
// it calls for none.
func (d *Datapath) installBitmaps(p *policy.Policy, gen uint32) error {
	for dir, words := range bitmaps(p) {
		o := d.bitmapOuters()[dir]
		if words == nil {
			if err := o.m.Delete(gen); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("clear generation %d of %s: %w", gen, o.name, err)
			}
			continue
		}
		m, err := d.newBitmap(words)
		if err != nil {
			return err
		}
		err = o.m.Put(gen, m)
		m.Close()
		if err != nil {
			return fmt.Errorf("install generation %d of %s: %w", gen, o.name, err)
		}
	}
	return nil
}

// newGeneration creates empty rule maps sized for n rules.
func (d *Datapath) newGeneration(n ruleCounts) (generation, error) {
	rules := map[string]int{}
	for _, dir := range policy.Directions {
		for kind, name := range ruleMapNames[dir] {
			rules[name] = n[dir][kind]
		}
	}
	g := generation{}
	for _, o := range d.ruleOuters() {
		if rules[o.name] > MaxRules {
			g.Close()
			return nil, fmt.Errorf("%d rules in %s: at most %d are supported", rules[o.name], o.name, MaxRules)
		}
		inner := d.spec.Maps[o.name].InnerMap.Copy()
		if inner.Type == ebpf.Hash {
			// LPM tries allocate per entry; their limit costs nothing.
			inner.MaxEntries = capacity(rules[o.name])
		}
		m, err := ebpf.NewMap(inner)
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("create %s map: %w", o.name, err)
		}
		g[o.name] = m
	}
	return g, nil
}

// Replace puts p in force in place of the current policy, atomically: p is
// built in the other generation, then one write of the state switches every
// hook to it. p's rules are renumbered past every ID handed out so far.
func (d *Datapath) Replace(p *policy.Policy) error {
	p.Renumber(d.state.NextRuleId)
	return d.switchTo(p, nil)
}

// switchTo installs p, IDs as they are, in the other generation, with the
// counters given, and switches to it.
func (d *Datapath) switchTo(p *policy.Policy, counters map[uint32]Counter) error {
	old, next := d.state.Gen, 1-d.state.Gen
	if err := d.install(p, next, counters); err != nil {
		d.clearGeneration(next)
		return err
	}
	d.state.Gen = next
	d.state.NextRuleId = max(d.state.NextRuleId, p.NextID())
	if err := d.writeState(); err != nil {
		return err
	}
	d.policy = p
	// Programs that read the old generation before the switch may still be
	// running; after an RCU grace period none is, and its maps can go. Where
	// the grace period cannot be waited for, they stay until the next Replace
	// overwrites them, which is safe, only wasteful.
	if !waitForReaders() {
		return nil
	}
	return d.clearGeneration(old)
}

// clearGeneration drops a generation's inner maps.
func (d *Datapath) clearGeneration(gen uint32) error {
	var errs []error
	bm := d.bitmapOuters()
	for _, o := range append(d.ruleOuters(), bm[:]...) {
		if err := o.m.Delete(gen); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// membarrierCmdGlobal is MEMBARRIER_CMD_GLOBAL from linux/membarrier.h.
const membarrierCmdGlobal = 1

// waitForReaders waits for an RCU grace period: BPF programs run inside RCU
// read-side sections, and membarrier's global command is synchronize_rcu(). It
// reports whether it could (kernels with nohz_full CPUs refuse the command).
func waitForReaders() bool {
	_, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdGlobal, 0, 0)
	return errno == 0
}

// innerMap returns the inner map of the generation in force for an outer map.
func (d *Datapath) innerMap(outer *ebpf.Map) (*ebpf.Map, error) {
	var inner *ebpf.Map
	if err := outer.Lookup(d.state.Gen, &inner); err != nil {
		return nil, fmt.Errorf("look up generation %d of %s: %w", d.state.Gen, outer, err)
	}
	return inner, nil
}
