package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/targets"
)

// file is one policy file of the folder, as last read.
type file struct {
	path string // absolute
	text string // the SHA-256 of the text last read, to tell an edit from a touch
	// good is the file's last good reading, which stays in force while
	// the file is bad; nil if the agent has never read it good.
	good *version
	err  error // the last reading's problem; nil when it was good
}

// version is a policy file read good.
type version struct {
	policy  *policy.Policy
	targets []targets.Target
	digest  string // of the policy, as the owner record keeps it
}

// name is the file's name in the folder, for logs and metrics.
func (f *file) name() string { return filepath.Base(f.path) }

// isPolicyFile says whether a name in the folder is a policy file: *.yaml,
// and not hidden, which editors' swap and backup files are.
func isPolicyFile(name string) bool {
	return strings.HasSuffix(name, ".yaml") && !strings.HasPrefix(name, ".")
}

// policyFiles lists the policy files of dir, sorted. A symlink to a regular
// file counts: a Kubernetes ConfigMap's files are symlinks into its ..data
// folder.
func policyFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read the policies folder: %w", err)
	}
	var out []string
	for _, e := range entries {
		if !isPolicyFile(e.Name()) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if st, err := os.Stat(path); err == nil && st.Mode().IsRegular() {
			out = append(out, path)
		}
	}
	sort.Strings(out)
	return out, nil
}

// read reads f again, and reports whether what it says changed: a file that
// turned bad (or bad in another way), turned good, or says another policy or
// other targets. A file whose text is as it was is not parsed again unless
// force is set (SIGHUP), for list files it names may have changed.
func (f *file) read(ctx context.Context, force, dns bool) (changed bool) {
	data, err := os.ReadFile(f.path)
	sum := sha256.Sum256(data)
	text := hex.EncodeToString(sum[:])
	if err == nil && !force && text == f.text && f.err == nil && f.good != nil {
		return false
	}
	f.text = text
	var v *version
	if err == nil {
		v, err = parse(ctx, f.path, data, dns)
	}
	if err != nil {
		changed = f.err == nil || f.err.Error() != err.Error()
		f.err = err
		return changed
	}
	changed = f.err != nil || f.good == nil || f.good.digest != v.digest || !slices.Equal(f.good.targets, v.targets)
	f.good, f.err = v, nil
	return changed
}

// parse reads the text of an agent's policy file: a policy file with
// targets; name rules only where the agent serves DNS.
func parse(ctx context.Context, path string, data []byte, dns bool) (*version, error) {
	p, set, err := policy.ParseFileContext(ctx, path, data)
	if err != nil {
		return nil, err
	}
	if len(set.Targets) == 0 {
		return nil, fmt.Errorf("%s: the file has no targets: the agent applies a policy only to the cgroups its targets: list names (see docs/agent.md)", path)
	}
	if p.HasNames() && !dns {
		return nil, fmt.Errorf("%s: name rules (%s) need the agent's resolver, which this agent runs without", path, p.Names[0].Match())
	}
	return &version{policy: p, targets: set.Targets, digest: p.Digest()}, nil
}

// problems gives a bad file's problems, one a line.
func problems(err error) []string {
	var fe *policy.FileError
	if errors.As(err, &fe) {
		return fe.Lines()
	}
	return []string{err.Error()}
}
