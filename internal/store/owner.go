package store

import (
	"fmt"
	"path/filepath"
)

// Owner says who put a persistent policy in force: the agent, from which
// file and which version of it, or, when a folder has no owner pin, somebody
// by hand with 'cgwall attach'. The agent replaces and removes only the
// policies it owns.
//
// It is a record (record.go).
type Owner struct {
	Agent  bool   `json:"agent"`
	File   string `json:"file"`   // the policy file, absolute
	SHA256 string `json:"sha256"` // of the file's text, as applied
}

// ownerPin names the owner record in a policy folder.
const ownerPin = "owner"

// Owned makes Create and Replace record o as the policy's owner. Without it,
// they record none: a policy attached by hand over one the agent owned is
// the hand's.
func Owned(o Owner) Option { return func(op *options) { op.owner = &o } }

// Option changes how a policy is put in force.
type Option func(*options)

type options struct {
	owner    *Owner
	resolver *Resolver
}

func optionsOf(opts []Option) options {
	var o options
	for _, fn := range opts {
		fn(&o)
	}
	return o
}

// setOwner records o in dir in place of the owner it has, or removes the
// record when o is nil.
func setOwner(dir string, o *Owner) error {
	path := filepath.Join(dir, ownerPin)
	if o == nil {
		return removeRecord(path, "owner")
	}
	return writeRecord(path, "owner", o)
}

// Owner returns who owns a cgroup's persistent policy; ok is false for a
// policy attached by hand.
func (s *Store) Owner(cgroupID uint64) (o Owner, ok bool, err error) {
	if err := s.checkEntry(fmt.Sprint(cgroupID)); err != nil {
		return Owner{}, false, err
	}
	if ok, err = readRecord(filepath.Join(s.path(cgroupID), ownerPin), "owner", &o); err != nil {
		return Owner{}, false, fmt.Errorf("%s: %w", s.Dir(cgroupID), err)
	}
	return o, ok, nil
}
