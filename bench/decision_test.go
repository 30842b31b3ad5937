package main

import (
	"slices"
	"testing"
)

// TestSetGroups checks that every set is measured once a round, and the ports
// set of a size with ipv4-mixed of that size (and of no other), so that #10's
// ratio is of runs taken in turns.
func TestSetGroups(t *testing.T) {
	sets := map[string]*ruleSet{}
	for _, key := range []string{"ports/1k", "ipv4-mixed/1k", "ports/100k", "ipv4-mixed/100k", "ipv4-mixed/1", "ipv6/1k"} {
		sets[key] = &ruleSet{}
	}
	seen := map[string]int{}
	for _, g := range setGroups(sets) {
		for _, key := range g {
			seen[key]++
		}
		switch {
		case slices.Contains(g, "ports/1k"):
			if !slices.Equal(g, []string{"ports/1k", "ipv4-mixed/1k"}) {
				t.Errorf("group %v: want ports/1k with ipv4-mixed/1k", g)
			}
		case slices.Contains(g, "ports/100k"):
			if !slices.Equal(g, []string{"ports/100k", "ipv4-mixed/100k"}) {
				t.Errorf("group %v: want ports/100k with ipv4-mixed/100k", g)
			}
		case len(g) != 1:
			t.Errorf("group %v: want a set alone", g)
		}
	}
	for key := range sets {
		if seen[key] != 1 {
			t.Errorf("%s measured %d times a round, want once", key, seen[key])
		}
	}
}
