package policy

import (
	"strings"
	"testing"
)

// TestFileTargets reads the targets: of an agent's policy file, and refuses
// each kind of bad list with its line.
func TestFileTargets(t *testing.T) {
	_, set, err := ParseFile("ci.yaml", []byte("targets:\n  - unit: ci-*.scope\n  - cgroup: /system.slice/*.service\n  - container: 3F4E1A\negress: {block: [192.0.2.1]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tg := range set.Targets {
		got = append(got, tg.String())
	}
	if want := "unit:ci-*.scope cgroup:system.slice/*.service container:3f4e1a"; strings.Join(got, " ") != want {
		t.Errorf("targets %q, want %q", got, want)
	}
	if set.Targets[1].Line != 3 {
		t.Errorf("the second target's line: %d, want 3", set.Targets[1].Line)
	}
	for _, tc := range []struct{ text, want string }{
		{"targets: system.slice\n", "x.yaml:1: targets must be a list (each target is one of cgroup: PATH-OR-GLOB, unit: NAME-OR-GLOB, container: ID-OR-PREFIX), not \"system.slice\""},
		{"egress: {}\ntargets:\n  - system.slice\n", "x.yaml:3: targets: \"system.slice\" is not a target: each target is one of"},
		{"targets:\n  - {cgroup: a, unit: b}\n", "x.yaml:2: targets: a mapping is not a target"},
		{"targets:\n  - {cgroup: [a]}\n", "x.yaml:2: targets: a mapping is not a target"},
		{"targets:\n  - host: x\n", "x.yaml:2: targets: unknown target kind \"host\": the kinds are cgroup, unit and container"},
		{"targets:\n  - container: xyz\n", "x.yaml:2: targets: "},
		{"targets:\n  - unit: ''\n", "x.yaml:2: targets: empty unit target"},
	} {
		_, _, err := ParseFile("x.yaml", []byte(tc.text))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.text, err, tc.want)
		}
	}
}
