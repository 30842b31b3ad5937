package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// checkPrivileges names the capabilities cgwall lacks. Loading cgroup_skb
// programs takes CAP_BPF and CAP_NET_ADMIN; CAP_SYS_ADMIN stands in for both.
func checkPrivileges() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return failure(fmt.Errorf("read capabilities: %w", err))
	}
	has := func(c int) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if has(unix.CAP_SYS_ADMIN) {
		return nil
	}
	var missing []string
	if !has(unix.CAP_BPF) {
		missing = append(missing, "CAP_BPF")
	}
	if !has(unix.CAP_NET_ADMIN) {
		missing = append(missing, "CAP_NET_ADMIN")
	}
	if len(missing) == 0 {
		return nil
	}
	return failure(fmt.Errorf("missing privilege %s: run cgwall as root (sudo cgwall ...) or grant it CAP_BPF and CAP_NET_ADMIN",
		strings.Join(missing, " and ")))
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
