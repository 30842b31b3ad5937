package policy

import (
	"slices"
	"strings"
	"testing"
)

func TestParseName(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	// 253 bytes: labels of 63, 63, 63 and 61 bytes joined by dots.
	name253 := strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 63) + "." + strings.Repeat("e", 61)
	for in, want := range map[string]Name{
		"example.com":            "example.com",
		"Example.COM":            "example.com",
		"example.com.":           "example.com",
		"*.example.com":          "*.example.com",
		"*.Example.Com.":         "*.example.com",
		"*.test":                 "*.test",
		"a.b.c.example.test":     "a.b.c.example.test",
		"123.example.com":        "123.example.com",
		"a-b.c0m":                "a-b.c0m",
		"x.y":                    "x.y",
		"xn--bcher-kva.example":  "xn--bcher-kva.example",
		"192.0.2.1.example.test": "192.0.2.1.example.test",
		label63 + ".test":        Name(label63 + ".test"),
		name253:                  Name(name253),
	} {
		got, err := ParseName(in)
		if err != nil || got != want {
			t.Errorf("ParseName(%.40q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if len(name253) != 253 {
		t.Fatalf("the long name is %d bytes", len(name253))
	}
}

// TestParseNameErrors is the table of bad names: each error is one line,
// names the token and says what would be valid.
func TestParseNameErrors(t *testing.T) {
	const ldh = "a name is labels of letters, digits and hyphens joined by dots, as in example.com or *.example.com"
	long := strings.Repeat("a", 64) + ".test"
	tooLong := strings.Repeat(strings.Repeat("a", 49)+".", 5) + "test" // 254 bytes
	for _, tc := range []struct{ in, want string }{
		{"", "empty name: give a name such as example.com or *.example.com"},
		{"example..com", `"example..com" is not a valid name: it has an empty label (two dots together, or a dot at the start): ` + ldh},
		{".example.com", `".example.com" is not a valid name: it has an empty label (two dots together, or a dot at the start): ` + ldh},
		{"example.com..", `"example.com.." is not a valid name: it has an empty label (two dots together, or a dot at the start): ` + ldh},
		{long, `"` + long[:64] + `.test" is not a valid name: the label "` + long[:64] + `" is 64 bytes: a label has at most 63`},
		{tooLong, quote(tooLong) + " is not a valid name: it is 254 bytes: a name has at most 253"},
		{"ex_ample.com", `"ex_ample.com" is not a valid name: the label "ex_ample" has '_': ` + ldh},
		{"exa mple.com", `"exa mple.com" is not a valid name: the label "exa mple" has ' ': ` + ldh},
		{"example.com/", `"example.com/" is not a valid name: the label "com/" has '/': ` + ldh},
		{"-example.com", `"-example.com" is not a valid name: the label "-example" begins or ends with a hyphen: a label begins and ends with a letter or a digit`},
		{"example-.com", `"example-.com" is not a valid name: the label "example-" begins or ends with a hyphen: a label begins and ends with a letter or a digit`},
		{"example.com-", `"example.com-" is not a valid name: the label "com-" begins or ends with a hyphen: a label begins and ends with a letter or a digit`},
		{"*", `"*" is not a valid name: * alone would match every name: write *.example.com for the names below example.com, or any for every address`},
		{"*.", `"*." is not a valid name: * alone would match every name: write *.example.com for the names below example.com, or any for every address`},
		{"www.*.example.com", `"www.*.example.com" is not a valid name: * may only be the whole first label, as in *.example.com`},
		{"*example.com", `"*example.com" is not a valid name: * may only be the whole first label, as in *.example.com`},
		{"*w.example.com", `"*w.example.com" is not a valid name: * may only be the whole first label, as in *.example.com`},
		{"*.*.example.com", `"*.*.example.com" is not a valid name: * may only be the whole first label, as in *.example.com`},
		{"example.*", `"example.*" is not a valid name: * may only be the whole first label, as in *.example.com`},
		{"bücher.example", `"bücher.example" is not a valid name: it is not ASCII: use its ASCII form xn--bcher-kva.example`},
		{"Bücher.Example.", `"Bücher.Example." is not a valid name: it is not ASCII: use its ASCII form xn--bcher-kva.example`},
		{"*.bücher.example", `"*.bücher.example" is not a valid name: it is not ASCII: use its ASCII form *.xn--bcher-kva.example`},
		{"a\u00a0b.example", `"a\u00a0b.example" is not a valid name: it is not ASCII: write an internationalized name in its ASCII form (xn--…)`},
		{"localhost", `"localhost" is not a valid name: a name rule needs two labels or more, as in example.com`},
		{"example.123", `"example.123" is not a valid name: its last label "123" is all digits, which no top-level domain is: is it an address?`},
		{"192.0.2.1", `"192.0.2.1" is not a valid name: its last label "1" is all digits, which no top-level domain is: is it an address?`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseName(tc.in)
			if err == nil {
				t.Fatalf("ParseName(%q) = %q; want the error %s", tc.in, got, tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("ParseName(%q):\n got %s\nwant %s", tc.in, err, tc.want)
			}
		})
	}
}

// TestParseRuleNames reads names with every port form, and checks that what
// looks like an address keeps the address's error.
func TestParseRuleNames(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"example.com", []string{"example.com"}},
		{"Example.COM.", []string{"example.com"}},
		{"*.example.com", []string{"*.example.com"}},
		{"example.com:443", []string{"example.com:tcp/443", "example.com:udp/443"}},
		{"example.com:8000-8999", []string{"example.com:tcp/8000-8999", "example.com:udp/8000-8999"}},
		{"*.github.com:tcp/443", []string{"*.github.com:tcp/443"}},
		{"ntp.example.org:udp/123", []string{"ntp.example.org:udp/123"}},
		{"x.test:udp/53-60", []string{"x.test:udp/53-60"}},
		{"x.test:tcp", []string{"x.test:tcp"}},
		{"x.test:sctp/9", []string{"x.test:sctp/9"}},
		{"x.test:proto/47", []string{"x.test:gre"}},
		// A name has addresses of both families: icmp and icmpv6 are both
		// its own.
		{"x.test:icmp", []string{"x.test:icmp"}},
		{"x.test:ICMPV6", []string{"x.test:icmpv6"}},
		{"example.com.:tcp/443", []string{"example.com:tcp/443"}},
		// Addresses are still addresses.
		{"2001:db8::1:443", []string{"2001:db8::1:443/128"}},
		{"192.0.2.1:443", []string{"192.0.2.1/32:tcp/443", "192.0.2.1/32:udp/443"}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseRule(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if s := matchStrings(got); !slices.Equal(s, tc.want) {
				t.Errorf("ParseRule(%q) = %q; want %q", tc.in, s, tc.want)
			}
			for _, m := range got {
				if m.Name != "" && m.Prefix.IsValid() {
					t.Errorf("ParseRule(%q): the name rule %s has the prefix %s", tc.in, m, m.Prefix)
				}
				checkRoundTrip(t, m)
			}
		})
	}
	for _, tc := range []struct{ in, want string }{
		// What looks like an address is a bad address, not a bad name.
		{"192.0.2.300", `"192.0.2.300" is not a valid IPv4 or IPv6 address`},
		{"192.0.2.300:tcp/443", `"192.0.2.300" is not a valid IPv4 or IPv6 address`},
		{"1.2.3.4.5", `"1.2.3.4.5" is not a valid IPv4 or IPv6 address`},
		{"192.0.2.1.", `"192.0.2.1." is not a valid IPv4 or IPv6 address`},
		{"not-an-address", `"not-an-address" is not a valid IPv4 or IPv6 address`},
		{"example.com/24", `"example.com/24" is not a valid CIDR: "example.com" is not an IPv4 or IPv6 address`},
		// What looks like a name is a bad name.
		{"ex_ample.com:443", `"ex_ample.com" is not a valid name: the label "ex_ample" has '_': a name is labels of letters, digits and hyphens joined by dots, as in example.com or *.example.com`},
		{"*", `"*" is not a valid name: * alone would match every name: write *.example.com for the names below example.com, or any for every address`},
		{"*:443", `"*" is not a valid name: * alone would match every name: write *.example.com for the names below example.com, or any for every address`},
		{"*.123", `"*.123" is not a valid name: its last label "123" is all digits, which no top-level domain is: is it an address?`},
		{"bücher.example:tcp/443", `"bücher.example" is not a valid name: it is not ASCII: use its ASCII form xn--bcher-kva.example`},
		// Ports and brackets, as for addresses.
		{"example.com:", `"example.com:" has nothing after the colon: give a port (443), a range (8000-8999), a protocol (tcp) or both (tcp/443)`},
		{"example.com:tcp/0", `"example.com:tcp/0": "0" is not a port: use a number from 1 to 65535`},
		{"example.com:tcp:443", `"example.com:tcp:443" has more than one colon: one goes between the name and the ports, as in example.com:tcp/443`},
		{"[example.com]:443", `"[example.com]:443": brackets are for IPv6 addresses: write "example.com:443"`},
	} {
		t.Run("bad "+tc.in, func(t *testing.T) {
			got, err := ParseRule(tc.in)
			if err == nil || err.Error() != tc.want {
				t.Errorf("ParseRule(%q) = %v, %v; want the error %s", tc.in, got, err, tc.want)
			}
		})
	}
}

// TestNameRoundTrip checks that every name rule's canonical form reads back
// as that rule alone.
func TestNameRoundTrip(t *testing.T) {
	names := []Name{"example.com", "*.example.com", "a.b.c.test", "*.test", "xn--bcher-kva.example"}
	ports := []Ports{{}, {Proto: ProtoTCP}, {Proto: ProtoICMP}, {Proto: ProtoICMPv6}, {Proto: ProtoGRE}, {Proto: 99},
		{ProtoTCP, 443, 443}, {ProtoUDP, 53, 60}, {ProtoSCTP, 1, 65535}}
	for _, n := range names {
		for _, p := range ports {
			checkRoundTrip(t, Match{Name: n, Ports: p})
		}
	}
}

func TestNameMatches(t *testing.T) {
	for _, tc := range []struct {
		pattern Name
		q       string
		want    bool
	}{
		{"example.com", "example.com", true},
		{"example.com", "EXAMPLE.com.", true},
		{"example.com", "www.example.com", false},
		{"example.com", "badexample.com", false},
		{"example.com", "example.co", false},
		{"*.example.com", "www.example.com", true},     // depth 1
		{"*.example.com", "a.b.c.example.com", true},   // depth 3
		{"*.example.com", "WWW.Example.COM.", true},    // any case, trailing dot
		{"*.example.com", "example.com", false},        // not the apex
		{"*.example.com", "badexample.com", false},     // whole labels
		{"*.example.com", "www.badexample.com", false}, // whole labels
		{"*.example.com", "www.example.com.evil", false},
		{"*.example.com", ".example.com", false},
		{"*.test", "other.test", true},
	} {
		if got := tc.pattern.Matches(tc.q); got != tc.want {
			t.Errorf("%s.Matches(%q) = %v; want %v", tc.pattern, tc.q, got, tc.want)
		}
	}
	if Name("example.com").Wildcard() || !Name("*.example.com").Wildcard() {
		t.Error("Wildcard")
	}
}
