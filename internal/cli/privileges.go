package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"

	"github.com/cgwall/cgwall/internal/caps"
	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/store"
)

// need is what a command needs beyond loading and attaching programs, which
// every command that touches the kernel needs.
type need int

const (
	// needStore: the persistent commands pin policies in the store, a
	// folder of root's with mode 0700, and reopen them. Reopening a policy
	// opens its inner maps by ID (BPF_MAP_GET_FD_BY_ID, which takes
	// CAP_SYS_ADMIN), and the verifier accepts the full object's map-in-map
	// pointer arithmetic only with CAP_PERFMON, which CAP_SYS_ADMIN covers.
	needStore need = iota + 1
	// needCgroupMount: exec makes its command's cgroup at the top of the
	// cgroup2 hierarchy, whose root directory is mode 0555.
	needCgroupMount
)

// checkPrivileges names the privileges cgwall lacks for a command: what run
// needs, and what needs adds. Loading cgroup_skb programs takes CAP_BPF and
// CAP_NET_ADMIN; CAP_SYS_ADMIN stands in for both.
func checkPrivileges(needs ...need) error {
	have, err := caps.Effective()
	if err != nil {
		return failure(fmt.Errorf("read capabilities: %w", err))
	}
	if slices.Contains(needs, needStore) {
		if err := checkStore(have); err != nil {
			return err
		}
	} else if err := checkBPF(have); err != nil {
		return err
	}
	if slices.Contains(needs, needCgroupMount) {
		if err := checkCgroupMount(); err != nil {
			return err
		}
		// exec starts its command in a new cgroup namespace.
		if !have.Has(unix.CAP_SYS_ADMIN) {
			return failure(errors.New("missing privilege CAP_SYS_ADMIN: exec starts its command in a new cgroup namespace, which takes it: run cgwall exec as root"))
		}
	}
	return nil
}

func checkBPF(have caps.Set) error {
	if have.Has(unix.CAP_SYS_ADMIN) {
		return nil
	}
	var missing []string
	if !have.Has(unix.CAP_BPF) {
		missing = append(missing, "CAP_BPF")
	}
	if !have.Has(unix.CAP_NET_ADMIN) {
		missing = append(missing, "CAP_NET_ADMIN")
	}
	if len(missing) == 0 {
		return nil
	}
	return failure(fmt.Errorf("missing privilege %s: run cgwall as root (sudo cgwall ...) or grant it CAP_BPF and CAP_NET_ADMIN",
		strings.Join(missing, " and ")))
}

// persistentCommands are the commands that use the store.
const persistentCommands = "the persistent commands (attach, detach, block, allow, remove, list, watch, gc)"

// checkStore checks what the persistent commands need: root, whose folder
// the store is, with CAP_SYS_ADMIN, and access to that folder (or to bpffs,
// where the folder is still to be made). faccessat with AT_EACCESS asks the
// kernel with the effective credentials, capabilities included.
func checkStore(have caps.Set) error {
	if os.Geteuid() != 0 {
		return failure(fmt.Errorf("%s need root: they keep policies in %s, a folder of root's with mode 0700, and reopen them with CAP_SYS_ADMIN: "+
			"run cgwall as root (sudo cgwall ...); run needs only CAP_BPF and CAP_NET_ADMIN", persistentCommands, store.DefaultRoot))
	}
	if !have.Has(unix.CAP_SYS_ADMIN) {
		return failure(fmt.Errorf("missing privilege CAP_SYS_ADMIN: %s need it: the kernel opens a pinned policy's inner maps and verifies its full program only with it; "+
			"run cgwall as root with all its capabilities (sudo cgwall ...); run needs only CAP_BPF and CAP_NET_ADMIN", persistentCommands))
	}
	dir := store.DefaultRoot
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		dir = store.BPFFS
		if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
			return nil // the store makes it and mounts bpffs there, as CAP_SYS_ADMIN may
		}
	}
	if err := unix.Faccessat(unix.AT_FDCWD, dir, unix.R_OK|unix.W_OK|unix.X_OK, unix.AT_EACCESS); err != nil {
		return failure(fmt.Errorf("no access to %s (%v): %s keep policies in %s: run cgwall as root with all its capabilities (sudo cgwall ...)",
			dir, err, persistentCommands, store.DefaultRoot))
	}
	return nil
}

// checkCgroupMount checks that exec may make its command's cgroup.
func checkCgroupMount() error {
	mnt, err := cgroup.Mount()
	if err != nil {
		return failure(err)
	}
	if err := unix.Faccessat(unix.AT_FDCWD, mnt, unix.W_OK|unix.X_OK, unix.AT_EACCESS); err != nil {
		return failure(fmt.Errorf("exec makes a cgroup for its command in %s and may not write there (%v): run cgwall as root (sudo cgwall exec ...) or grant it CAP_DAC_OVERRIDE; "+
			"or run the command in a cgroup you may write and filter that with cgwall run, which needs only CAP_BPF and CAP_NET_ADMIN", mnt, err))
	}
	return nil
}

// kernelFeatures are the kernel features cgwall needs, with their probes.
var kernelFeatures = []struct {
	name  string
	probe func() error
}{
	{"cgroup_skb programs (CONFIG_CGROUP_BPF)", func() error { return features.HaveProgramType(ebpf.CGroupSKB) }},
	{"LPM trie maps (Linux 4.11)", func() error { return features.HaveMapType(ebpf.LPMTrie) }},
	{"BPF ring buffers (Linux 5.8)", func() error { return features.HaveMapType(ebpf.RingBuf) }},
	{"the bpf_loop helper (Linux 5.17)", func() error { return features.HaveProgramHelper(ebpf.CGroupSKB, asm.FnLoop) }},
}

// checkKernel names the kernel features cgwall needs and lacks.
func checkKernel() error {
	for _, f := range kernelFeatures {
		err := f.probe()
		if errors.Is(err, ebpf.ErrNotSupported) {
			return lacks(f.name)
		}
		if err != nil {
			return failure(fmt.Errorf("probe for %s: %w", f.name, err))
		}
	}
	return nil
}

// explainLoadError names the kernel feature that a failed load lacked, where
// a probe finds one, and otherwise returns err. run and exec probe only after
// a failure: each probe creates a BPF object, and exec's start is its
// command's.
func explainLoadError(err error) error {
	for _, f := range kernelFeatures {
		if errors.Is(f.probe(), ebpf.ErrNotSupported) {
			return lacks(f.name)
		}
	}
	return failure(err)
}

func lacks(feature string) error {
	return failure(fmt.Errorf("this kernel lacks %s: cgwall needs Linux 5.17 or later built with CONFIG_BPF_SYSCALL and CONFIG_CGROUP_BPF", feature))
}
