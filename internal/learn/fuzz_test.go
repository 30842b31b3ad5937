package learn

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/cgwall/cgwall/internal/policy"
)

// FuzzMerge merges learned rules into any file: a file that is a policy
// takes them and still reads back as one, with every rule it had and every
// learned one; any other is refused with the policy's own error, never with
// the bug guard's, and nothing panics. The seed corpus, in testdata/fuzz/,
// is the files of these tests and of docs/policy.md's examples.
func FuzzMerge(f *testing.F) {
	for _, seed := range []string{
		"egress:\n  default: block\n  allow:\n    - a.test:tcp/443 # first\n",
		"# mine\negress: {default: block, allow: [192.0.2.1:tcp/80]}\n",
		"ingress:\n  default: block\n",
		"",
	} {
		f.Add(seed)
	}
	learned := []Rule{
		{Match: policy.Match{Name: "new.test", Ports: policy.Ports{Proto: policy.ProtoTCP, Lo: 443, Hi: 443}}, Packets: 3, Comm: "curl\n#"},
		{Match: policy.Match{Prefix: netip.MustParsePrefix("198.51.100.7/32"), Ports: policy.Ports{Proto: policy.ProtoUDP, Lo: 53, Hi: 53}}},
	}
	f.Fuzz(func(t *testing.T, file string) {
		before, _, perr := policy.ParseFile("p.yaml", []byte(file))
		out, err := Merge("p.yaml", []byte(file), learned)
		if perr != nil {
			if err == nil {
				t.Fatalf("Merge took a file that is no policy (%v):\n%s", perr, file)
			}
			return
		}
		if err != nil {
			var fe *policy.FileError
			// The file may block what was learned: then the merged file
			// does not read back, and Merge says so. Anything else is a bug.
			if !errors.As(err, &fe) || !strings.Contains(err.Error(), "does not read back") {
				t.Fatalf("Merge of a policy failed: %v\n%s", err, file)
			}
			return
		}
		after, _, err := policy.ParseFile("p.yaml", out)
		if err != nil {
			t.Fatalf("the merged file does not read back: %v\n%s", err, out)
		}
		for _, r := range append(before.Rules, before.Names...) {
			if _, ok := after.Lookup(r.Dir, r.Match()); !ok {
				t.Errorf("the merge lost %s:\n%s", r.Match(), out)
			}
		}
		for _, r := range learned {
			if got, ok := after.Lookup(policy.Egress, r.Match); !ok || got.Action != policy.Allow {
				if _, blocked := before.Lookup(policy.Egress, r.Match); !blocked {
					t.Errorf("the merge did not allow %s:\n%s", r.Match, out)
				}
			}
		}
	})
}
