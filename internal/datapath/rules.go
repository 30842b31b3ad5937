package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cgwall/cgwall/internal/policy"
)

// entries are the keys and values that a policy puts into each rule map of a
// generation, by direction and kind; nil where it puts none.
type entries [2][numKinds]ruleBatch

// counts returns how many entries each map gets.
func (e *entries) counts() ruleCounts {
	var n ruleCounts
	for dir := range e {
		for k, b := range e[dir] {
			if b != nil {
				n[dir][k] = b.len()
			}
		}
	}
	return n
}

// site is a prefix of a direction, the unit that port rules hang from.
type site struct {
	dir    policy.Direction
	prefix netip.Prefix
}

// entriesOf encodes p's rules, with their counters if given (by rule ID), as
// the entries of the rule maps: each address-only rule in its address map
// with the flags of its prefix's port rules, a placeholder for a prefix that
// only has port rules, a prefix's direct rule (pickDirect) in that entry,
// and its other port rules in the port maps.
func entriesOf(p *policy.Policy, counters map[uint32]Counter, narrow bool) *entries {
	var e entries
	// Sized up front: on a VM, fresh memory costs time, and growing slices
	// by appending touches about twice as much.
	var n ruleCounts
	flags := map[site]siteBits{} // the prefixes that have port rules
	ranges := map[rangeGroup][]policy.Rule{}
	direct := pickDirect(p.Rules)
	// The port rules first, into their maps: their prefixes' address
	// entries, written next, carry what the port rules are and where.
	for i, r := range p.Rules {
		if r.Ports.Any() {
			n[r.Dir][kindOf(r.Prefix)]++
			continue
		}
		s := site{r.Dir, r.Prefix}
		f := flags[s]
		switch j, ok := direct[s]; {
		case ok && j == i:
			f = f.withDirect(r, counters[r.ID])
		case r.Ports.Width() >= 2:
			f = f.with(r.Ports)
			g := rangeGroup{r.Dir, prefixSite(r.Prefix), r.Ports.Proto}
			ranges[g] = append(ranges[g], r)
		default:
			f = f.with(r.Ports)
			e.ports(r.Dir).put(portKeyOf(prefixSite(r.Prefix), r.Ports.Proto, r.Ports.Lo), ruleValue(r, counters[r.ID]))
		}
		flags[s] = f
	}
	if len(flags) > 0 {
		outerOf(p.Rules, flags)
	}
	address := func(dir policy.Direction, prefix netip.Prefix) addressBatch {
		k := kindOf(prefix)
		if e[dir][k] == nil {
			e[dir][k] = kindTable[k].newBatch(n[dir][k]+len(flags), narrow)
		}
		return e[dir][k].(addressBatch)
	}
	for _, r := range p.Rules {
		if !r.Ports.Any() {
			continue
		}
		v := cgwallEntry{R: ruleValue(r, counters[r.ID])}
		v.R.Bits = uint8(r.Prefix.Bits())
		if len(flags) > 0 {
			s := site{r.Dir, r.Prefix}
			if f, ok := flags[s]; ok {
				f.put(&v)
				delete(flags, s) // has its entry
			}
		}
		address(r.Dir, r.Prefix).add(r.Prefix, v)
	}
	e.addNames(p, ranges, counters)
	// The prefixes left have port rules and no address-only rule.
	for s, f := range flags {
		v := cgwallEntry{R: cgwallRule{Bits: uint8(s.prefix.Bits())}}
		f.put(&v)
		address(s.dir, s.prefix).add(s.prefix, v)
	}
	e.addRanges(ranges, counters)
	return &e
}

// ruleValue is a rule as the rule maps keep it, with its counters.
func ruleValue(r policy.Rule, c Counter) cgwallRule {
	return cgwallRule{Id: r.ID, Action: uint8(r.Action), Packets: c.Packets, Bytes: c.Bytes}
}

// ports and ranges return a direction's batches of the port maps,
// made on first use.
func (e *entries) ports(dir policy.Direction) *batch[cgwallPortKey, cgwallRule] {
	return batchOf[cgwallPortKey, cgwallRule](e, dir, kindPorts)
}

func (e *entries) ranges(dir policy.Direction) *batch[cgwallRangeKey, cgwallRangeRule] {
	return batchOf[cgwallRangeKey, cgwallRangeRule](e, dir, kindRanges)
}

func batchOf[K, V any](e *entries, dir policy.Direction, k kind) *batch[K, V] {
	if e[dir][k] == nil {
		e[dir][k] = &batch[K, V]{}
	}
	return e[dir][k].(*batch[K, V])
}

// rangeGroup is the range rules of one direction, site and protocol.
type rangeGroup struct {
	dir   policy.Direction
	site  keySite
	proto uint8
}

// addNames adds the port rules of p's name patterns to the port maps, under
// each pattern's number (nameSite), and its range rules to ranges. Their
// address-only rules go into the entries of learned addresses (Learn).
func (e *entries) addNames(p *policy.Policy, ranges map[rangeGroup][]policy.Rule, counters map[uint32]Counter) {
	if len(p.Names) == 0 {
		return
	}
	sites := nameSites(p)
	for _, r := range p.Names {
		s := nameSite(sites[r.Name])
		switch {
		case r.Ports.Any():
		case r.Ports.Width() >= 2:
			g := rangeGroup{policy.Egress, s, r.Ports.Proto}
			ranges[g] = append(ranges[g], r)
		default:
			e.ports(policy.Egress).put(portKeyOf(s, r.Ports.Proto, r.Ports.Lo), ruleValue(r, counters[r.ID]))
		}
	}
}

// addRanges adds each group's blocks to the ranges maps, with a rule's
// counters on its first block; a range that narrower ones cover whole goes
// into the ports map, marked as never looked up.
func (e *entries) addRanges(groups map[rangeGroup][]policy.Rule, counters map[uint32]Counter) {
	for g, rules := range groups {
		all := make([]policy.Ports, len(rules))
		for i, r := range rules {
			all[i] = r.Ports
		}
		counted := make([]bool, len(rules))
		for _, rb := range segment(all) {
			r := rules[rb.rule]
			var c Counter
			if !counted[rb.rule] {
				c, counted[rb.rule] = counters[r.ID], true
			}
			v := cgwallRangeRule{R: ruleValue(r, c), Lo: r.Ports.Lo, Hi: r.Ports.Hi}
			e.ranges(g.dir).put(rangeKeyOf(g.site, g.proto, rb.lo, rb.bits), v)
		}
		for i, r := range rules {
			if !counted[i] {
				k := portKeyOf(g.site, r.Ports.Proto, r.Ports.Lo)
				k.Shadowed, k.Hi = 1, r.Ports.Hi
				e.ports(g.dir).put(k, ruleValue(r, counters[r.ID]))
			}
		}
	}
}

// fill writes the entries into a generation's fresh rule maps. Most of the
// time of a large load is the kernel inserting elements, so the maps are
// written in chunks by one worker per CPU.
func (e *entries) fill(g generation) error {
	var writes []func() error
	for _, dir := range policy.Directions {
		for k, b := range e[dir] {
			if b != nil {
				writes = append(writes, b.writes(g[dir][k])...)
			}
		}
	}
	return runAll(writes)
}

// runAll runs fns on runTasks's workers and returns their errors.
func runAll(fns []func() error) error {
	errs := make([]error, len(fns))
	tasks := make([]func(), len(fns))
	for i, fn := range fns {
		tasks[i] = func() { errs[i] = fn() }
	}
	runTasks(tasks)
	return errors.Join(errs...)
}

// configFor returns p's settings as the datapath keeps them, with the lengths
// that its IPv4 prefix rules have.
func configFor(p *policy.Policy) cgwallConfig {
	cfg := cgwallConfig{LogLevel: uint8(p.Log)}
	for _, dir := range policy.Directions {
		cfg.DefaultAction[dir] = uint8(p.Default[dir])
	}
	if p.Audit {
		cfg.Audit = 1
	}
	if p.DenyRaw {
		cfg.DenyRaw = 1
	}
	cfg.Bitmap4Shift = bitmapShifts(p)
	cfg.Bitmap6Len, cfg.Bitmap6Hosts = bitmap6Shape(p)
	var present [2][32]bool // by direction and length
	for _, r := range p.Rules {
		if r.Prefix.Addr().Is4() && !r.Prefix.IsSingleIP() {
			present[r.Dir][r.Prefix.Bits()] = true
		}
	}
	for _, dir := range policy.Directions {
		cfg.Nlens4[dir] = longestFirst(present[dir][:], cfg.Lens4[dir][:])
	}
	return cfg
}

// longestFirst writes the lengths marked present into lens, longest first,
// and returns how many there are.
func longestFirst(present []bool, lens []uint8) uint8 {
	n := 0
	for l := len(present) - 1; l >= 0; l-- {
		if present[l] {
			lens[n] = uint8(l)
			n++
		}
	}
	return uint8(n)
}

// hasLength says whether a generation of settings cfg can take a rule for
// prefix in place: an IPv4 prefix of a length its lookups try, an IPv6 one
// no shorter than its IPv6 bitmap hashes. IPv4 host rules always fit.
func hasLength(cfg *cgwallConfig, dir policy.Direction, prefix netip.Prefix) bool {
	if !prefix.Addr().Is4() {
		return cfg.Bitmap6Len[dir] == 0 || prefix.Bits() >= int(cfg.Bitmap6Len[dir])
	}
	if prefix.IsSingleIP() {
		return true
	}
	return slices.Contains(cfg.Lens4[dir][:cfg.Nlens4[dir]], uint8(prefix.Bits()))
}

func (d *Datapath) writeSettings(p *policy.Policy, gen uint32) error {
	if err := d.objs.Settings.Put(gen, configFor(p)); err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	return nil
}
