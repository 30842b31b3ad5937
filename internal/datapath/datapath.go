package datapath

import (
	"errors"
	"fmt"
	"math/bits"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/cgwall/cgwall/internal/policy"
)

// minCapacity is the smallest size of a rule map. A hash map's bucket array is
// allocated up front (16 bytes a slot), so maps are sized for the policy
// rather than for the largest policy cgwall accepts.
const minCapacity = 4096

// MaxRules is the most host rules (/32 or /128), or the most shorter prefixes,
// that a direction and family can hold.
const MaxRules = 1 << 24

// Datapath is one loaded set of cgwall programs and maps: the state of one
// filtered cgroup. The rules live in one of two generations of inner maps;
// Replace builds the other one and switches to it in one write.
type Datapath struct {
	objs   objects
	spec   *ebpf.CollectionSpec
	state  cgwallState    // a copy of the current map
	policy *policy.Policy // the policy in force, as the maps hold it

	// packetGuard refuses packet sockets; nil unless the policy denies raw
	// sockets and the kernel lets BPF LSM programs load.
	packetGuard    *ebpf.Program
	packetGuardErr error // why packetGuard is nil, for DenyRaw policies
}

// objects are the maps and the programs every supported kernel loads. The
// packet-socket guard is an LSM program that some kernels refuse (no BPF LSM,
// or lockdown), so it is loaded apart, on demand.
type objects struct {
	cgwallMaps
	corePrograms
}

type corePrograms struct {
	CgwallEgress     *ebpf.Program `ebpf:"cgwall_egress"`
	CgwallIngress    *ebpf.Program `ebpf:"cgwall_ingress"`
	CgwallConnect4   *ebpf.Program `ebpf:"cgwall_connect4"`
	CgwallConnect6   *ebpf.Program `ebpf:"cgwall_connect6"`
	CgwallSendmsg4   *ebpf.Program `ebpf:"cgwall_sendmsg4"`
	CgwallSendmsg6   *ebpf.Program `ebpf:"cgwall_sendmsg6"`
	CgwallSockCreate *ebpf.Program `ebpf:"cgwall_sock_create"`
}

func (o *objects) Close() error {
	p := &o.corePrograms
	return _CgwallClose(&o.cgwallMaps, p.CgwallEgress, p.CgwallIngress, p.CgwallConnect4,
		p.CgwallConnect6, p.CgwallSendmsg4, p.CgwallSendmsg6, p.CgwallSockCreate)
}

// Load creates the maps and programs and installs p in generation 0, with rule
// IDs from 1. Nothing is enforced until Commit, and then only where Attach
// puts the programs.
func Load(p *policy.Policy, opts ...Option) (*Datapath, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise memlock limit: %w", err)
	}
	spec, err := takeSpec()
	if err != nil {
		return nil, err
	}
	d := &Datapath{spec: spec}
	p.Renumber(1)
	// The policy goes into the maps while the verifier checks the programs.
	if err := d.loadObjects(o, func() error { return d.install(p, 0, nil) }); err != nil {
		return nil, err
	}
	if p.DenyRaw || o.packetGuard {
		d.packetGuard, d.packetGuardErr = d.loadPacketGuard()
	}
	d.policy = p
	d.state = cgwallState{Gen: 0, NextRuleId: p.NextID()}
	if err := d.writeState(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// Option changes what Load loads.
type Option func(*options)

type options struct {
	packetGuard bool
	hooks       []Hook // with someHooks, the hooks whose programs to load
	someHooks   bool
}

// WithPacketGuard loads the packet-socket guard even if the policy does not
// deny raw sockets, for persistent policies that a later edit may make do so.
func WithPacketGuard() Option { return func(o *options) { o.packetGuard = true } }

func loadError(err error) error {
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		return fmt.Errorf("load BPF programs: %+v", verr)
	}
	return fmt.Errorf("load BPF programs: %w", err)
}

// loadPacketGuard loads the LSM program that refuses packet sockets, sharing
// the maps already loaded.
func (d *Datapath) loadPacketGuard() (*ebpf.Program, error) {
	var o struct {
		Prog *ebpf.Program `ebpf:"cgwall_packet_create"`
	}
	err := d.spec.LoadAndAssign(&o, &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
		cgwallMapSettings: d.objs.Settings,
		cgwallMapCurrent:  d.objs.Current,
		cgwallMapEvents:   d.objs.Events,
		cgwallMapStats:    d.objs.Stats,
	}})
	if err != nil {
		return nil, fmt.Errorf("this kernel refused the BPF LSM program that refuses packet sockets (%w); it needs CONFIG_BPF_LSM, \"bpf\" in the lsm= boot list, and no lockdown", err)
	}
	return o.Prog, nil
}

// PacketGuardError says why packet sockets are not refused although the
// policy denies raw sockets, or nil.
func (d *Datapath) PacketGuardError() error { return d.packetGuardErr }

// Commit puts the installed policy in force. Before it, attached programs let
// everything pass.
func (d *Datapath) Commit() error {
	d.state.Live = 1
	return d.writeState()
}

// Live says whether a policy is in force.
func (d *Datapath) Live() bool { return d.state.Live != 0 }

func (d *Datapath) writeState() error {
	if err := d.objs.Current.Put(uint32(0), d.state); err != nil {
		return fmt.Errorf("write policy state: %w", err)
	}
	return nil
}

// Close releases the maps and programs. Anything still attached through links
// from Attach, or pinned, stays until those links are closed or unpinned.
func (d *Datapath) Close() error {
	if d.packetGuard != nil {
		d.packetGuard.Close()
	}
	return d.objs.Close()
}

// Policy returns the policy in force.
func (d *Datapath) Policy() *policy.Policy { return d.policy }

// capacity leaves room for live edits up to the next power of two, which the
// kernel rounds the bucket array up to anyway.
func capacity(n int) uint32 {
	if n < minCapacity {
		return minCapacity
	}
	return 1 << bits.Len(uint(n))
}
