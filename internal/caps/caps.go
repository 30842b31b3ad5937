// Package caps reads the capabilities cgwall runs with.
package caps

import "golang.org/x/sys/unix"

// Set is a set of capabilities, by number (unix.CAP_*).
type Set [2]uint32

// Has says whether the set holds capability c.
func (s Set) Has(c int) bool { return s[c/32]&(1<<(c%32)) != 0 }

// Effective returns the effective capabilities of the calling thread.
func Effective() (Set, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return Set{}, err
	}
	return Set{data[0].Effective, data[1].Effective}, nil
}
