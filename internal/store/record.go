package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
)

// Records are what the store keeps beside a policy's maps that no program
// reads: who owns it, which resolver its name rules use. bpffs holds only
// pins, so a record is a pinned one-element array whose value is the record
// in JSON, padded with zeros: readable with bpftool, and open to new fields.

// recordSize bounds a record: a path of PATH_MAX and the rest.
const recordSize = 4096 + 256

// encodeRecord is a record's value.
func encodeRecord(what string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(b) > recordSize {
		return nil, fmt.Errorf("%s record: %d bytes, more than %d", what, len(b), recordSize)
	}
	return append(b, make([]byte, recordSize-len(b))...), nil
}

// writeRecord writes v as the record pinned at path, pinning one if there is
// none. A record is rewritten in one map update: a reader sees the old
// value or the new.
func writeRecord(path, what string, v any) error {
	val, err := encodeRecord(what, v)
	if err != nil {
		return err
	}
	m, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		if m, err = ebpf.NewMap(&ebpf.MapSpec{Name: "cgwall_record", Type: ebpf.Array, KeySize: 4, ValueSize: recordSize, MaxEntries: 1}); err != nil {
			return fmt.Errorf("create %s record: %w", what, err)
		}
		defer m.Close()
		if err := m.Put(uint32(0), val); err != nil {
			return fmt.Errorf("write %s record: %w", what, err)
		}
		if err := m.Pin(path); err != nil {
			return fmt.Errorf("pin %s record: %w", what, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s record: %w", what, err)
	}
	defer m.Close()
	if err := m.Put(uint32(0), val); err != nil {
		return fmt.Errorf("write %s record: %w", what, err)
	}
	return nil
}

// readRecord reads the record pinned at path into v; ok is false when there
// is none.
func readRecord(path, what string, v any) (ok bool, err error) {
	m, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open %s record: %w", what, err)
	}
	defer m.Close()
	if m.ValueSize() != recordSize || m.Type() != ebpf.Array {
		return false, fmt.Errorf("%s record is not one cgwall made (%s, value size %d)", what, m.Type(), m.ValueSize())
	}
	val := make([]byte, recordSize)
	if err := m.Lookup(uint32(0), &val); err != nil {
		return false, fmt.Errorf("read %s record: %w", what, err)
	}
	if err := json.Unmarshal(bytes.TrimRight(val, "\x00"), v); err != nil {
		return false, fmt.Errorf("read %s record: %w", what, err)
	}
	return true, nil
}

// removeRecord removes the record pinned at path; none is no error.
func removeRecord(path, what string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s record: %w", what, err)
	}
	return nil
}
