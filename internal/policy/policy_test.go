package policy

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParsePrefix(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":               "192.0.2.1/32",
		"198.51.100.0/24":         "198.51.100.0/24",
		"2001:db8::1":             "2001:db8::1/128",
		"2001:db8::/32":           "2001:db8::/32",
		"::ffff:192.0.2.1":        "192.0.2.1/32",
		"::ffff:198.51.100.0/120": "198.51.100.0/24",
		"0.0.0.0/0":               "0.0.0.0/0",
		"::/0":                    "::/0",
	} {
		t.Run(in, func(t *testing.T) {
			got, err := ParsePrefix(in)
			if err != nil || got.String() != want {
				t.Errorf("ParsePrefix(%q) = %v, %v; want %s", in, got, err, want)
			}
		})
	}
	for in, want := range map[string]string{
		"":               "empty address",
		" ":              "empty address",
		"1.1.1.300":      `"1.1.1.300" is not a valid IPv4 or IPv6 address`,
		"10.0.0.0/33":    "prefix length \"33\" must be a number from 0 to 32",
		"2001:db8::/129": "from 0 to 128",
		"10.0.0.1/8":     "did you mean 10.0.0.0/8?",
		"fe80::1%eth0":   `"fe80::1%eth0" is not a valid IPv4 or IPv6 address: an IPv6 zone (%name) is not allowed in a rule`,
		"fe80::%lo/64":   `"fe80::%lo/64" is not a valid CIDR: an IPv6 zone (%name) is not allowed in a rule`,
		"fe80::%/64":     `"fe80::%/64" is not a valid CIDR: an IPv6 zone (%name) is not allowed in a rule`,
		"example.com":    "not a valid IPv4 or IPv6 address",
		"300.1.1.1/8":    `"300.1.1.1" is not an IPv4 or IPv6 address`,
	} {
		t.Run("bad "+in, func(t *testing.T) {
			if _, err := ParsePrefix(in); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("ParsePrefix(%q) error %v; want one containing %q", in, err, want)
			}
		})
	}
	// A long value is quoted in part, and its length said.
	long := "192.0.2." + strings.Repeat("1", 5<<20)
	_, err := ParsePrefix(long)
	if want := `"192.0.2.` + strings.Repeat("1", maxQuoted-8) + `"… (5242888 bytes) is not a valid IPv4 or IPv6 address`; err == nil || err.Error() != want {
		t.Errorf("a 5 MiB address: %.200v", err)
	}
}

func TestDecide(t *testing.T) {
	p := New()
	for _, r := range []struct {
		dir    Direction
		action Action
		addr   string
	}{
		{Egress, Block, "198.51.100.0/24"},
		{Egress, Allow, "198.51.100.128/25"},
		{Egress, Block, "198.51.100.200"},
		{Ingress, Block, "2001:db8::/32"},
	} {
		if err := p.Add(r.dir, r.action, r.addr); err != nil {
			t.Fatal(err)
		}
	}
	p.Default[Ingress] = Block
	for _, tc := range []struct {
		dir    Direction
		addr   string
		action Action
		id     uint32
	}{
		{Egress, "198.51.100.1", Block, 1},
		{Egress, "198.51.100.129", Allow, 2},
		{Egress, "198.51.100.200", Block, 3},
		{Egress, "::ffff:198.51.100.200", Block, 3},
		{Egress, "192.0.2.1", Allow, 0},
		{Egress, "2001:db8::1", Allow, 0}, // ingress rules do not judge egress
		{Ingress, "2001:db8::1", Block, 4},
		{Ingress, "192.0.2.1", Block, 0}, // the ingress default
	} {
		t.Run(fmt.Sprintf("%s %s", tc.dir, tc.addr), func(t *testing.T) {
			a, id := p.DecideAddr(tc.dir, netip.MustParseAddr(tc.addr))
			if a != tc.action || id != tc.id {
				t.Errorf("Decide(%s, %s) = %s by %d; want %s by %d", tc.dir, tc.addr, a, id, tc.action, tc.id)
			}
		})
	}
}

func TestAddConflictAndDuplicate(t *testing.T) {
	p := New()
	if err := p.Add(Egress, Block, "192.0.2.0/24"); err != nil {
		t.Fatal(err)
	}
	if err := p.Add(Egress, Block, "192.0.2.0/24"); err != nil || len(p.Rules) != 1 {
		t.Fatalf("a repeated rule: %v, %d rules", err, len(p.Rules))
	}
	if err := p.Add(Ingress, Allow, "192.0.2.0/24"); err != nil {
		t.Fatalf("the same prefix in the other direction: %v", err)
	}
	err := p.Add(Egress, Allow, "192.0.2.0/24")
	if err == nil || err.Error() != "192.0.2.0/24 is both blocked and allowed for egress" {
		t.Fatalf("conflict: %v", err)
	}
	if err := p.Add(Egress, Allow, "::ffff:192.0.2.0/120"); err == nil {
		t.Fatal("the mapped form of a blocked prefix was allowed too")
	}
}

// TestEdits checks the lookups that live edits use, across the index being
// built, kept up to date, dropped by AddList and rebuilt.
func TestEdits(t *testing.T) {
	p := New()
	for _, a := range []string{"192.0.2.1", "198.51.100.0/24", "2001:db8::/32", "203.0.113.7"} {
		if err := p.Add(Egress, Block, a); err != nil {
			t.Fatal(err)
		}
	}
	pfx := netip.MustParsePrefix
	has := func(p *Policy, prefix string, want Rule) {
		t.Helper()
		if r, ok := p.Lookup(Egress, Match{Prefix: pfx(prefix)}); !ok || r != want {
			t.Errorf("Lookup(%s) = %v, %v; want %v", prefix, r, ok, want)
		}
		if r, ok := p.Rule(want.ID); !ok || r != want {
			t.Errorf("Rule(%d) = %v, %v; want %v", want.ID, r, ok, want)
		}
	}
	c := p.Clone()
	p.Delete(Egress, Match{Prefix: pfx("198.51.100.0/24")}) // the last rule takes its place
	if _, ok := p.Lookup(Egress, Match{Prefix: pfx("198.51.100.0/24")}); ok || len(p.Rules) != 3 {
		t.Errorf("deleted rule still there: %v", p.Rules)
	}
	has(p, "203.0.113.7/32", Rule{ID: 4, Dir: Egress, Prefix: pfx("203.0.113.7/32"), Action: Block})
	p.SetAction(4, Allow)
	has(p, "203.0.113.7/32", Rule{ID: 4, Dir: Egress, Prefix: pfx("203.0.113.7/32"), Action: Allow})
	p.AddRule(Rule{ID: 9, Dir: Egress, Prefix: pfx("192.0.2.9/32"), Action: Allow})
	has(p, "192.0.2.9/32", Rule{ID: 9, Dir: Egress, Prefix: pfx("192.0.2.9/32"), Action: Allow})
	if p.NextID() != 10 {
		t.Errorf("next ID %d after adding rule 9", p.NextID())
	}
	// The clone kept what p had when it was made.
	has(c, "198.51.100.0/24", Rule{ID: 2, Dir: Egress, Prefix: pfx("198.51.100.0/24"), Action: Block})
	has(c, "203.0.113.7/32", Rule{ID: 4, Dir: Egress, Prefix: pfx("203.0.113.7/32"), Action: Block})
	if _, ok := c.Lookup(Egress, Match{Prefix: pfx("192.0.2.9/32")}); ok {
		t.Error("a rule added to the original shows in its clone")
	}
	// A list after the index was built; the index is rebuilt after it.
	list := filepath.Join(t.TempDir(), "l")
	os.WriteFile(list, []byte("192.0.2.9\n192.0.2.10\n"), 0o600)
	if err := p.AddList(list, Egress, Allow); err != nil {
		t.Fatal(err)
	}
	has(p, "192.0.2.10/32", Rule{ID: 10, Dir: Egress, Prefix: pfx("192.0.2.10/32"), Action: Allow})
	has(p, "203.0.113.7/32", Rule{ID: 4, Dir: Egress, Prefix: pfx("203.0.113.7/32"), Action: Allow})
	if _, ok := p.Lookup(Ingress, Match{Prefix: pfx("192.0.2.10/32")}); ok {
		t.Error("an egress rule found for ingress")
	}
	if _, ok := p.Lookup(Egress, Match{Prefix: pfx("::ffff:192.0.2.10/128")}); ok {
		t.Error("an IPv4 rule found under its IPv6-mapped prefix, which ParsePrefix never returns")
	}
}
