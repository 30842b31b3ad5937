package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// Digest is the SHA-256 of what a policy says: its settings and its rules in
// order. It, and not a file's text, tells whether the policy in force at a
// cgroup is a file's (the agent's owner records keep it), since list files
// that a file names can change without it.
func (p *Policy) Digest() string {
	h := sha256.New()
	fmt.Fprintf(h, "default %v audit %v log %v deny_raw %v\n", p.Default, p.Audit, p.Log, p.DenyRaw)
	for _, rules := range [][]Rule{p.Rules, p.Names} {
		for _, r := range rules {
			fmt.Fprintln(h, r)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}
