package learn

import (
	"fmt"
	"slices"
	"testing"
)

// named gives each name its own address, answered before its flow to port.
func named(port uint16, names ...string) ([]Flow, []Answer) {
	var flows []Flow
	var answers []Answer
	for i, n := range names {
		addr := fmt.Sprintf("192.0.2.%d", i+1)
		flows = append(flows, tcp(addr, port, 2))
		answers = append(answers, answer(n, 1, addr))
	}
	return flows, answers
}

func TestWildcards(t *testing.T) {
	type seen struct {
		port  uint16
		names []string
	}
	tests := []struct {
		name string
		n    int
		base string
		seen []seen
		want []string
	}{
		{
			name: "two names under a parent fold",
			n:    2,
			seen: []seen{{443, []string{"a.x.test", "b.x.test"}}},
			want: []string{"*.x.test:tcp/443"},
		},
		{
			name: "fewer than N stay",
			n:    3,
			seen: []seen{{443, []string{"a.x.test", "b.x.test"}}},
			want: []string{"a.x.test:tcp/443", "b.x.test:tcp/443"},
		},
		{
			name: "never at a top-level domain",
			n:    2,
			seen: []seen{{443, []string{"a.com", "b.com", "a.test", "b.test"}}},
			want: []string{"a.com:tcp/443", "a.test:tcp/443", "b.com:tcp/443", "b.test:tcp/443"},
		},
		{
			name: "never at a public suffix",
			n:    2,
			seen: []seen{{443, []string{"a.co.uk", "b.co.uk", "a.github.io", "b.github.io"}}},
			want: []string{"a.co.uk:tcp/443", "a.github.io:tcp/443", "b.co.uk:tcp/443", "b.github.io:tcp/443"},
		},
		{
			name: "the parent itself is not below it",
			n:    2,
			seen: []seen{{443, []string{"x.test", "a.x.test"}}},
			want: []string{"a.x.test:tcp/443", "x.test:tcp/443"},
		},
		{
			name: "the deeper parent first",
			n:    3,
			seen: []seen{{443, []string{"a.b.x.test", "c.b.x.test", "e.b.x.test", "d.x.test"}}},
			want: []string{"*.b.x.test:tcp/443", "d.x.test:tcp/443"},
		},
		{
			name: "a wildcard counts as one name and folds again",
			n:    2,
			seen: []seen{{443, []string{"a.b.x.test", "c.b.x.test", "d.x.test"}}},
			want: []string{"*.x.test:tcp/443"},
		},
		{
			name: "different ports do not fold together",
			n:    2,
			seen: []seen{{443, []string{"a.x.test"}}, {80, []string{"b.x.test"}}},
			want: []string{"a.x.test:tcp/443", "b.x.test:tcp/80"},
		},
		{
			name: "each port folds on its own",
			n:    2,
			seen: []seen{{443, []string{"a.x.test", "b.x.test"}}, {80, []string{"c.x.test", "d.x.test"}}},
			want: []string{"*.x.test:tcp/80", "*.x.test:tcp/443"},
		},
		{
			name: "0 folds nothing",
			n:    0,
			seen: []seen{{443, []string{"a.x.test", "b.x.test", "c.x.test"}}},
			want: []string{"a.x.test:tcp/443", "b.x.test:tcp/443", "c.x.test:tcp/443"},
		},
		{
			name: "1 folds nothing",
			n:    1,
			seen: []seen{{443, []string{"a.x.test"}}},
			want: []string{"a.x.test:tcp/443"},
		},
		{
			// a.x.test keeps an exact rule for port 80, which makes it
			// its own pattern: the wildcard's 443 would not reach it.
			name: "a folded name with a rule of its own keeps its port",
			n:    2,
			seen: []seen{{443, []string{"a.x.test", "b.x.test"}}, {80, []string{"a.x.test"}}},
			want: []string{"*.x.test:tcp/443", "a.x.test:tcp/80", "a.x.test:tcp/443"},
		},
		{
			// The base blocks *.test:tcp/443 but lets a.x.test and
			// b.x.test be their own patterns: *.x.test:tcp/443 would be
			// c.x.test's pattern, and open what the base blocks.
			name: "not where the base blocks the port for names below",
			n:    2,
			base: `egress: {block: ["*.test:tcp/443"], allow: [a.x.test:udp/5353, b.x.test:udp/5353]}`,
			seen: []seen{{443, []string{"a.x.test", "b.x.test", "c.x.test"}}},
			want: []string{"a.x.test:tcp/443", "b.x.test:tcp/443"},
		},
		{
			name: "but where the base blocks another port",
			n:    2,
			base: `egress: {block: ["*.test:tcp/22"]}`,
			seen: []seen{{443, []string{"a.x.test", "b.x.test"}}},
			want: []string{"*.x.test:tcp/443"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var flows []Flow
			var answers []Answer
			for i, s := range tt.seen {
				f, a := named(s.port, s.names...)
				for j := range f {
					// Addresses of their own per group.
					f[j].Addr = f[j].Addr.Next().Next()
					for range i * 50 {
						f[j].Addr = f[j].Addr.Next()
					}
					a[j].Addrs[0] = f[j].Addr
				}
				flows, answers = append(flows, f...), append(answers, a...)
			}
			base := basePolicy(t, tt.base)
			res := Learn(flows, answers, Options{Base: base, Wildcards: tt.n})
			if got := ruleTokens(res.Rules); !slices.Equal(got, tt.want) {
				t.Errorf("rules = %q, want %q", got, tt.want)
			}
			if base == nil {
				base = basePolicy(t, "{}")
			}
			assertAllows(t, base, res, flows, answers)
		})
	}
}

func TestWildcardSeen(t *testing.T) {
	flows, answers := named(443, "a.b.x.test", "c.b.x.test", "d.x.test")
	flows[1].First, flows[1].Packets, flows[1].Pid, flows[1].Comm = at(0), 5, 9, "make"
	answers[1].Time = at(-1)
	flows = append(flows, tcp("198.51.100.1", 443, 3)) // d.x.test again
	answers = append(answers, answer("d.x.test", 1, "198.51.100.1"))
	res := Learn(flows, answers, Options{Wildcards: 2})
	if len(res.Rules) != 1 {
		t.Fatalf("rules = %q, want one", ruleTokens(res.Rules))
	}
	r := res.Rules[0]
	if r.Match.String() != "*.x.test:tcp/443" || r.First != at(0) || r.Packets != 8 || r.Pid != 9 || r.Comm != "make" || r.Names != 3 {
		t.Errorf("rule = %+v, want *.x.test:tcp/443 first at(0), 8 packets, make (pid 9), 3 names", r)
	}
}
