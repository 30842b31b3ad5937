package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// Layout is the version of what a policy folder holds: which maps and links,
// under which names, with which key and value types. Any change to the BPF
// object's maps, or to the pins, takes a new version. History:
//
//	1  rule maps and links (no version pin)
//	2  /24 bitmaps added (no version pin)
//	3  the version pin itself
//	4  port maps (ports, ranges); rule values carry their prefix's port flags
//	   and length
//	5  name rules' maps (learned4, learned6, asked, origins, opened); the
//	   recvmsg links
//	6  name rules in persistent policies: the record of each generation's
//	   name rules (names), the resolver record (resolver); the owner record
//	   (owner), which is not read as part of the layout
//	7  the IPv6 bitmaps in two parts, prefixes' and hosts' (the settings'
//	   bitmap6_hosts): programs of layout 6 would read their bits wrongly
//	8  the direct maps (egress_direct, ingress_direct), one single-port rule
//	   of a prefix each; rule values carry its index (struct rule: 24 -> 32
//	   bytes)
//	9  a direct rule may be a range (struct direct_rule's end_port, the
//	   site flag SITE_F_DIRECT_RANGE): programs of layout 8 would take such
//	   a rule for its first port alone
//	10 rule values of prefixes with port rules name the next shorter prefix
//	   (struct rule's shorter, the site flag SITE_F_OUTERMOST): a cgwall of
//	   layout 9 would write a shorter rule in place and leave them stale
//	11 the direct rule in the address entry itself (struct entry, 56 bytes;
//	   struct rule 32 -> 24 bytes), the direct maps gone
const Layout = 11

// layoutPin names the pin that records a folder's layout: a one-element
// array of the version, which no program reads.
const layoutPin = "layout"

// ErrLayout is the error of a folder of another layout.
var ErrLayout = errors.New("pinned by a cgwall of another layout")

// pinLayout records the current layout in dir.
func pinLayout(dir string) error {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "cgwall_layout", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return fmt.Errorf("create layout map: %w", err)
	}
	defer m.Close()
	if err := m.Put(uint32(0), uint32(Layout)); err != nil {
		return fmt.Errorf("write layout: %w", err)
	}
	if err := m.Pin(filepath.Join(dir, layoutPin)); err != nil {
		return fmt.Errorf("pin layout: %w", err)
	}
	return nil
}

// readLayout returns the layout of the folder dir, 0 for one made before
// layouts had versions.
func readLayout(dir string) (uint32, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, layoutPin), &ebpf.LoadPinOptions{ReadOnly: true})
	if errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(dir); err != nil {
			return 0, err
		}
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("open layout pin: %w", err)
	}
	defer m.Close()
	var v uint32
	if err := m.Lookup(uint32(0), &v); err != nil {
		return 0, fmt.Errorf("read layout: %w", err)
	}
	return v, nil
}

// checkLayout refuses a folder of another layout than this cgwall's, saying
// which made it and what to do.
func checkLayout(dir string) error {
	v, err := readLayout(dir)
	if err != nil {
		return err
	}
	if v == Layout {
		return nil
	}
	made := fmt.Sprintf("layout %d", v)
	if v == 0 {
		made = "a layout before versions (1 or 2)"
	}
	return fmt.Errorf("%w (%s; this cgwall reads layout %d): attach the policy again to replace it without a gap, or detach it", ErrLayout, made, Layout)
}

// CheckLayout says whether a cgroup's persistent policy follows this
// cgwall's layout: nil if it does, an error that wraps ErrLayout if not.
func (s *Store) CheckLayout(cgroupID uint64) error {
	return checkLayout(s.path(cgroupID))
}
