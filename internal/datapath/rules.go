package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cgwall/cgwall/internal/policy"
)

// fillGeneration writes every rule of p, with its counters if given, into a
// generation's fresh rule maps. Most of the time of a large load is the
// kernel inserting elements, so the maps are written in chunks by one worker
// per CPU.
func fillGeneration(g generation, p *policy.Policy, n ruleCounts, counters map[uint32]Counter) error {
	// Sized up front: on a VM, fresh memory costs time, and growing slices
	// by appending touches about twice as much.
	var b [2][numKinds]ruleBatch
	for _, dir := range policy.Directions {
		for k := range numKinds {
			if k.holdsRules() && n[dir][k] > 0 {
				b[dir][k] = kindTable[k].newBatch(n[dir][k])
			}
		}
	}
	for _, r := range p.Rules {
		c := counters[r.ID]
		b[r.Dir][kindOf(r.Prefix)].add(r.Prefix, cgwallRule{Id: r.ID, Action: uint8(r.Action), Packets: c.Packets, Bytes: c.Bytes})
	}
	var writes []func() error
	for _, dir := range policy.Directions {
		for k, batch := range b[dir] {
			if batch != nil {
				writes = append(writes, batch.writes(g[dir][k])...)
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
	cfg.Bitmap4Shift, cfg.Bitmap6Len = bitmapShifts(p), bitmap6Lens(p)
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
