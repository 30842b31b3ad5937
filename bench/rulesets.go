package main

import (
	"github.com/cgwall/cgwall/internal/ruleset"
)

// The rule sets come from internal/ruleset, which BenchmarkEgress uses too, so
// that the cold-cache figures here and the warm-cache figures in
// docs/performance.md are for the very same rules.

// ruleSet is a generated rule set and the packet pools drawn from it.
type ruleSet struct {
	*ruleset.Set
	pools map[string]packetPool
}

// setKind is a family of rule sets, built at several sizes.
type setKind struct {
	name  string
	build func(n int) *ruleSet
}

var setKinds = func() []setKind {
	var out []setKind
	for _, k := range ruleset.Kinds {
		out = append(out, setKind{k.Name, func(n int) *ruleSet { return &ruleSet{Set: k.Build(n)} }})
	}
	return out
}()

func buildMixed4(n int) *ruleSet { return &ruleSet{Set: ruleset.Mixed4(n)} }

// Destination kinds.
const (
	kindHit       = ruleset.Hit
	kindHitPrefix = ruleset.HitPrefix
	kindMiss      = ruleset.Miss
)

var kinds = ruleset.DestinationKinds

// wantVerdict is the verdict cgwall must return for a destination of a kind:
// every rule of the sets blocks, so only misses pass.
func wantVerdict(kind string) uint32 {
	if kind == kindMiss {
		return 1
	}
	return 0
}
