package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// Owner says who put a persistent policy in force: the agent, from which
// file and which version of it, or, when a folder has no owner pin, somebody
// by hand with 'cgwall attach'. The agent replaces and removes only the
// policies it owns.
//
// bpffs holds only pins, so the record is a pinned one-element array whose
// value is the record in JSON, padded with zeros: readable with bpftool, and
// open to new fields. It is not part of the layout: no program reads it, and
// a cgwall that does not know it removes it with the folder.
type Owner struct {
	Agent  bool   `json:"agent"`
	File   string `json:"file"`   // the policy file, absolute
	SHA256 string `json:"sha256"` // of the file's text, as applied
}

// ownerPin names the owner record in a policy folder.
const ownerPin = "owner"

// ownerSize bounds the record: a path of PATH_MAX and the rest.
const ownerSize = 4096 + 256

// Owned makes Create and Replace record o as the policy's owner. Without it,
// they record none: a policy attached by hand over one the agent owned is
// the hand's.
func Owned(o Owner) Option { return func(op *options) { op.owner = &o } }

// Option changes how a policy is put in force.
type Option func(*options)

type options struct {
	owner *Owner
}

func optionsOf(opts []Option) options {
	var o options
	for _, fn := range opts {
		fn(&o)
	}
	return o
}

// encodeOwner is the record's value.
func encodeOwner(o Owner) ([]byte, error) {
	b, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	if len(b) > ownerSize {
		return nil, fmt.Errorf("owner record of %s: %d bytes, more than %d", o.File, len(b), ownerSize)
	}
	return append(b, make([]byte, ownerSize-len(b))...), nil
}

// pinOwner records o in dir, which has no owner pin.
func pinOwner(dir string, o Owner) error {
	v, err := encodeOwner(o)
	if err != nil {
		return err
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "cgwall_owner", Type: ebpf.Array, KeySize: 4, ValueSize: ownerSize, MaxEntries: 1})
	if err != nil {
		return fmt.Errorf("create owner map: %w", err)
	}
	defer m.Close()
	if err := m.Put(uint32(0), v); err != nil {
		return fmt.Errorf("write owner: %w", err)
	}
	if err := m.Pin(filepath.Join(dir, ownerPin)); err != nil {
		return fmt.Errorf("pin owner: %w", err)
	}
	return nil
}

// setOwner records o in dir in place of the owner it has, or removes the
// record when o is nil. A record is rewritten in one map update, so a
// reader sees the old owner or the new one.
func setOwner(dir string, o *Owner) error {
	path := filepath.Join(dir, ownerPin)
	if o == nil {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove owner: %w", err)
		}
		return nil
	}
	m, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return pinOwner(dir, *o)
	}
	if err != nil {
		return fmt.Errorf("open owner pin: %w", err)
	}
	defer m.Close()
	v, err := encodeOwner(*o)
	if err != nil {
		return err
	}
	if err := m.Put(uint32(0), v); err != nil {
		return fmt.Errorf("write owner: %w", err)
	}
	return nil
}

// readOwner returns the owner recorded in dir; ok is false when there is
// none, a policy attached by hand.
func readOwner(dir string) (o Owner, ok bool, err error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, ownerPin), &ebpf.LoadPinOptions{ReadOnly: true})
	if errors.Is(err, os.ErrNotExist) {
		return Owner{}, false, nil
	}
	if err != nil {
		return Owner{}, false, fmt.Errorf("open owner pin: %w", err)
	}
	defer m.Close()
	if m.ValueSize() != ownerSize || m.Type() != ebpf.Array {
		return Owner{}, false, fmt.Errorf("owner pin is not a record cgwall made (%s, value size %d)", m.Type(), m.ValueSize())
	}
	v := make([]byte, ownerSize)
	if err := m.Lookup(uint32(0), &v); err != nil {
		return Owner{}, false, fmt.Errorf("read owner: %w", err)
	}
	if err := json.Unmarshal(bytes.TrimRight(v, "\x00"), &o); err != nil {
		return Owner{}, false, fmt.Errorf("read owner: %w", err)
	}
	return o, true, nil
}

// Owner returns who owns a cgroup's persistent policy; ok is false for a
// policy attached by hand.
func (s *Store) Owner(cgroupID uint64) (Owner, bool, error) {
	if err := s.checkEntry(fmt.Sprint(cgroupID)); err != nil {
		return Owner{}, false, err
	}
	o, ok, err := readOwner(s.path(cgroupID))
	if err != nil {
		return Owner{}, false, fmt.Errorf("%s: %w", s.Dir(cgroupID), err)
	}
	return o, ok, nil
}
