package cli

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/store"
)

// agentOwner returns the owner record that makes a policy attached with
// --for-agent the agent's, as if the agent had attached FILE itself. That is
// how a unit closes the window after mkdir and still leaves its policy to
// the agent: ExecStartPre= attaches the file before the unit's first process
// runs, and the agent adopts the policy when it comes to the cgroup (or
// replaces it atomically, or detaches it, as its files say by then). The
// policy must be the file's alone: a rule flag beside it would be gone at
// the agent's first look.
func agentOwner(rules *ruleFlags, p *policy.Policy) (store.Owner, error) {
	if !rules.fs.Changed("file") {
		return store.Owner{}, usageErr(errors.New("--for-agent needs -f FILE: the policy file of the agent's folder whose policy this is"))
	}
	for _, name := range slices.Concat(baseFlags, []string{"log", "audit"}) {
		if name != "file" && rules.fs.Changed(name) {
			return store.Owner{}, usageErr(fmt.Errorf("--for-agent: the policy is %s's alone, so --%s cannot be given with it: put the rule into the file", rules.file, name))
		}
	}
	if len(rules.targets) == 0 {
		return store.Owner{}, usageErr(fmt.Errorf("--for-agent: %s has no targets:, so the agent would detach its policy: give the file the cgroup's target", rules.file))
	}
	path, err := filepath.Abs(rules.file)
	if err != nil {
		return store.Owner{}, failure(err)
	}
	return store.Owner{Agent: true, File: path, SHA256: p.Digest()}, nil
}
