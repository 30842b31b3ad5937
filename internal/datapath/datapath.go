package datapath

import (
	"errors"
	"fmt"
	"math/bits"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/cgwall/cgwall/internal/policy"
)

// minHostCapacity is the smallest size of a host-rule hash map. A hash map's
// bucket array is allocated up front (16 bytes a slot), so maps are sized for
// the policy rather than for the largest policy cgwall accepts.
const minHostCapacity = 4096

// MaxHostRules is the most host rules (/32 or /128) a direction and family can
// hold.
const MaxHostRules = 1 << 24

// Datapath is one loaded set of cgwall programs and maps: the state of one
// filtered cgroup.
type Datapath struct {
	objs   cgwallObjects
	policy *policy.Policy
}

// Load creates the maps and programs, sized for p, and fills them with p's rules
// and settings. Nothing is attached yet, so nothing is enforced until Attach.
func Load(p *policy.Policy) (*Datapath, error) {
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise memlock limit: %w", err)
	}
	spec, err := loadCgwall()
	if err != nil {
		return nil, err
	}
	if err := sizeHostMaps(spec, p); err != nil {
		return nil, err
	}
	d := &Datapath{policy: p}
	if err := spec.LoadAndAssign(&d.objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("load BPF programs: %+v", verr)
		}
		return nil, fmt.Errorf("load BPF programs: %w", err)
	}
	if err := d.fill(p); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// Close releases the maps and programs. Anything still attached through links
// from Attach stays attached until those links are closed.
func (d *Datapath) Close() error {
	return d.objs.Close()
}

// Policy returns the policy the datapath was loaded with.
func (d *Datapath) Policy() *policy.Policy { return d.policy }

func sizeHostMaps(spec *ebpf.CollectionSpec, p *policy.Policy) error {
	counts := map[string]int{}
	for _, r := range p.Rules {
		if r.Prefix.IsSingleIP() {
			counts[hostMapName(r.Dir, r.Prefix.Addr().Is4())]++
		}
	}
	for name, n := range counts {
		if n > MaxHostRules {
			return fmt.Errorf("%d host rules in %s: at most %d are supported", n, name, MaxHostRules)
		}
		spec.Maps[name].MaxEntries = hostCapacity(n)
	}
	return nil
}

// hostCapacity leaves room for live edits up to the next power of two, which the
// kernel rounds the bucket array up to anyway.
func hostCapacity(n int) uint32 {
	if n <= minHostCapacity {
		return minHostCapacity
	}
	return 1 << bits.Len(uint(n-1))
}

func hostMapName(dir policy.Direction, v4 bool) string {
	switch {
	case dir == policy.Egress && v4:
		return cgwallMapEgressHost4
	case dir == policy.Egress:
		return cgwallMapEgressHost6
	case v4:
		return cgwallMapIngressHost4
	}
	return cgwallMapIngressHost6
}
