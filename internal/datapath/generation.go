package datapath

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/cgwall/cgwall/internal/policy"
)

// generation is one generation's inner rule maps, by direction and kind (none
// for the bitmaps, which installBitmaps makes).
type generation [2][numKinds]*ebpf.Map

func (g *generation) Close() {
	for _, dir := range g {
		for _, m := range dir {
			if m != nil {
				m.Close()
			}
		}
	}
}

// install builds p's inner maps and settings in generation gen, with the
// counters given by rule ID. It does not switch to it. Kinds of rule map
// that p has no rule for get no inner map: each slot written waits for an
// RCU grace period (the writes go side by side, so that they share one), and
// an IPv4 blocklist needs two of the eight rule maps, and its bitmap.
func (d *Datapath) install(p *policy.Policy, gen uint32, counters map[uint32]Counter) error {
	e := entriesOf(p, counters, false)
	g, err := d.newGeneration(e.counts())
	if err != nil {
		return err
	}
	// The outer maps hold their own references; ours go when install returns.
	defer g.Close()
	if err := e.fill(g); err != nil {
		return err
	}
	var writes []func() error
	if err := d.installBitmaps(p, gen, &writes); err != nil {
		return err
	}
	for _, m := range d.maps.withRules() {
		writes = append(writes, func() error { return d.writeSlot(m, gen, g[m.dir][m.kind]) })
	}
	if err := concurrently(writes); err != nil {
		return err
	}
	if err := d.writeNames(p, gen); err != nil {
		return err
	}
	return d.writeSettings(p, gen)
}

// installBitmaps makes the bitmaps p calls for and adds the writes of
// generation gen's bitmap slots, which put them there or clear them.
func (d *Datapath) installBitmaps(p *policy.Policy, gen uint32, writes *[]func() error) error {
	for k, all := range map[kind][2][]uint64{kindBitmap4: bitmaps(p), kindBitmap6: bitmaps6(p)} {
		for dir, words := range all {
			o := d.maps[dir][k]
			if words == nil {
				*writes = append(*writes, func() error { return d.writeSlot(o, gen, nil) })
				continue
			}
			m, err := d.newBitmap(k, words)
			if err != nil {
				return err
			}
			*writes = append(*writes, func() error {
				defer m.Close() // the outer map holds its own reference
				return d.writeSlot(o, gen, m)
			})
		}
	}
	return nil
}

// concurrently runs fns each on its own goroutine: the slot writes, each of
// which sleeps in the kernel for an RCU grace period. Side by side, they
// share one (BenchmarkReplace/slots: a policy of four kinds of rule map, 15
// ms grace periods: 106-121 ms in sequence, 49-51 ms side by side).
func concurrently(fns []func() error) error {
	before := slotWrites.Load()
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		if sequentialSlots {
			errs[i] = fn()
			continue
		}
		wg.Go(func() { errs[i] = fn() })
	}
	wg.Wait()
	if slotWrites.Load() != before {
		slotRounds.Add(1)
	}
	return errors.Join(errs...)
}

// sequentialSlots makes concurrently run in sequence, for BenchmarkReplace.
var sequentialSlots bool

// slotWrites counts the writes of map-in-map slots, for tests: each waits
// for an RCU grace period in the kernel (maybe_wait_bpf_programs), the cost
// that dominates a small load. slotRounds counts the calls of concurrently
// that wrote any: the grace periods waited one after the other.
var slotWrites, slotRounds atomic.Int64

// writeSlot puts inner in generation gen of a rule map's outer map, or clears
// the slot for a nil inner. It is the one place that writes outer maps.
func (d *Datapath) writeSlot(m ruleMap, gen uint32, inner *ebpf.Map) error {
	if inner == nil {
		// The inner map is held open across the delete, which returns
		// only once no program can be reading it (the kernel waits for
		// a grace period after every write of a map-in-map): so it is
		// never freed under a program that looked it up before, on
		// kernels that free an inner map as soon as its last holder
		// lets go too (before 6.8).
		var old *ebpf.Map
		if err := m.outer.Lookup(gen, &old); errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil // empty already: a delete would only cost a system call
		} else if err != nil {
			return fmt.Errorf("clear generation %d of %s: %w", gen, m.name(), err)
		}
		defer old.Close()
		slotWrites.Add(1)
		if err := m.outer.Delete(gen); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("clear generation %d of %s: %w", gen, m.name(), err)
		}
		return nil
	}
	// A map the put takes the place of (a generation kept after it was
	// replaced, see switchTo) is held open across the put, as across a
	// delete: no program still reads it once the put returns.
	var old *ebpf.Map
	if err := m.outer.Lookup(gen, &old); err == nil {
		defer old.Close()
	}
	slotWrites.Add(1)
	if err := m.outer.Put(gen, inner); err != nil {
		return fmt.Errorf("install generation %d of %s: %w", gen, m.name(), err)
	}
	return nil
}

// newGeneration creates empty rule maps sized for n rules, where n has any.
func (d *Datapath) newGeneration(n ruleCounts) (generation, error) {
	var g generation
	for _, m := range d.maps.withRules() {
		rules := n[m.dir][m.kind]
		if rules == 0 {
			continue
		}
		if rules > MaxRules {
			g.Close()
			return g, fmt.Errorf("%d rules in %s: at most %d are supported", rules, m.name(), MaxRules)
		}
		inner := d.spec.Maps[m.name()].InnerMap.Copy()
		if inner.Type == ebpf.Hash {
			// LPM tries allocate per entry; their limit costs nothing.
			inner.MaxEntries = capacity(rules)
		}
		im, err := ebpf.NewMap(inner)
		if err != nil {
			g.Close()
			return g, fmt.Errorf("create %s map: %w", m.name(), err)
		}
		g[m.dir][m.kind] = im
	}
	return g, nil
}

// Replace puts p in force in place of the current policy, atomically: p is
// built in the other generation, then one write of the state switches every
// hook to it. p's rules are renumbered, in place, past every ID handed out so
// far: p is the datapath's from then on.
func (d *Datapath) Replace(p *policy.Policy) error {
	if d.fixed {
		return errFixed
	}
	if hasPortRules(p) {
		if err := d.withPortCode(); err != nil {
			return err
		}
	}
	p.Renumber(d.state.NextRuleId)
	return d.switchTo(p, nil)
}

// switchTo installs p, IDs as they are, in the other generation, with the
// counters given, and switches to it.
func (d *Datapath) switchTo(p *policy.Policy, counters map[uint32]Counter) error {
	old, next, replaced := d.state.Gen, 1-d.state.Gen, d.policy
	if err := d.install(p, next, counters); err != nil {
		d.clearGeneration(next)
		return err
	}
	d.state.Gen = next
	d.state.NextRuleId = max(d.state.NextRuleId, p.NextID())
	if err := d.writeState(); err != nil {
		return err
	}
	if err := d.relearn(d.policy, p); err != nil {
		return err
	}
	d.policy = p
	if keepsReplaced(replaced) {
		return nil
	}
	// Programs that read the old generation before the switch may still be
	// running. Clearing its slots is safe all the same (see writeSlot), and
	// each clear waits for the grace period after which none is.
	return d.clearGeneration(old)
}

// keptRules is the size up to which a replaced policy's generation stays in
// its slots until the next replacement overwrites it (install writes every
// slot of the generation it builds), instead of being cleared at once: the
// clear is a second round of slot writes, a second grace period, which
// doubles the time of a small policy's replacement
// (BenchmarkReplace/slots=concurrent, four kinds of rule map, -benchtime 40x
// -count 5: 35.3-38.3 ms with the clear, 17.4-20.4 ms without, next to a
// grace period of 8.0-8.5 ms in the same runs).
// Below 4,096 rules a generation has no /24 bitmap, and its maps take about
// 0.5 MiB at most (memlock of 4,095 rules, hosts or mixed, as
// ruleMapMemlock reads it); a larger one, which takes far longer than a
// grace period to fill, is cleared, so that a big policy never holds twice
// its memory.
var keptRules = 4096 // a variable for tests

// keepsReplaced says whether the generation of the replaced policy p stays.
func keepsReplaced(p *policy.Policy) bool {
	return p != nil && len(p.Rules)+len(p.Names) < keptRules
}

// clearGeneration drops a generation's inner maps.
func (d *Datapath) clearGeneration(gen uint32) error {
	var clears []func() error
	for _, m := range d.maps.all() {
		clears = append(clears, func() error { return d.writeSlot(m, gen, nil) })
	}
	return concurrently(clears)
}

// membarrierCmdGlobal is MEMBARRIER_CMD_GLOBAL from linux/membarrier.h.
const membarrierCmdGlobal = 1

// WaitForReaders waits for an RCU grace period: BPF programs run inside RCU
// read-side sections, and membarrier's global command is synchronize_rcu(). It
// reports whether it could (kernels with nohz_full CPUs refuse the command).
func WaitForReaders() bool {
	_, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdGlobal, 0, 0)
	return errno == 0
}

// innerMap returns the inner map of the generation in force for an outer map.
func (d *Datapath) innerMap(outer *ebpf.Map) (*ebpf.Map, error) {
	if d.fixed {
		return outer.Clone() // a rule map itself
	}
	var inner *ebpf.Map
	if err := outer.Lookup(d.state.Gen, &inner); err != nil {
		return nil, fmt.Errorf("look up generation %d of %s: %w", d.state.Gen, outer, err)
	}
	return inner, nil
}
