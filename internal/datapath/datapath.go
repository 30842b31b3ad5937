package datapath

import (
	"errors"
	"fmt"
	"math/bits"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

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
	spec  *ebpf.CollectionSpec
	objs  cgwallMaps               // every map of the object
	maps  ruleMaps                 // the rule maps among them, by direction and kind
	progs map[string]*ebpf.Program // the programs loaded, by name; none after Open
	state cgwallState              // a copy of the current map
	// policy is the policy in force, as the maps hold it.
	policy *policy.Policy

	fixed  bool      // the policy never changes: see Fixed
	rodata *ebpf.Map // the programs' constants, made when a program is loaded
	pinDir string    // where Open found the datapath; "" for one Load made

	// optionalErr says why an optional program (the packet guard) did not
	// load, for policies that deny raw sockets.
	optionalErr error

	// Name rules (names.go): the learned maps' value of each pattern, nil
	// for programs without the name code, and the counts of addresses
	// forgotten, under namesMu (the resolver learns and forgets from
	// several goroutines).
	learned   map[policy.Name]cgwallLearned
	namesMu   sync.Mutex
	forgotten forgotten
	// names records the name rules, for a policy pinned and opened again
	// (namepin.go); nil without name code.
	names *ebpf.Map

	learning bool // the seen map is filled (WithLearning)
	answers  bool // DNS answers are copied (WithDNSAnswers)
}

// Load creates the maps and programs and installs p in generation 0. It
// renumbers p's rules, in place, with IDs from 1: p is the datapath's from
// then on. Nothing is enforced until Commit, and then only where Attach puts
// the programs.
func Load(p *policy.Policy, opts ...Option) (*Datapath, error) {
	o := options{hooks: Hooks}
	for _, opt := range opts {
		opt(&o)
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise memlock limit: %w", err)
	}
	defer o.spec.done()
	spec, err := o.takeSpec()
	if err != nil {
		return nil, err
	}
	d := &Datapath{spec: spec, progs: map[string]*ebpf.Program{}, fixed: o.fixed, policy: p}
	if hasPortRules(p) {
		d.state.PortCode = 1
	}
	p.Renumber(1)
	if o.dns != nil {
		if err := setDNS(spec, o.dns); err != nil {
			return nil, err
		}
		d.learned, d.forgotten = learnedValues(p), forgotten{}
		if d.names, err = newNamesRecord(); err != nil {
			return nil, err
		}
	}
	if o.seen > 0 {
		if err := setLearning(spec, &o); err != nil {
			return nil, err
		}
		d.learning, d.answers = true, o.answers
	}
	install := func() error { return d.install(p, 0, nil) }
	if o.fixed {
		// Programs without port code read no more of an address entry
		// than its address rule, and a fixed policy gets no port rule
		// later: its address maps keep that alone (struct rule, 24 bytes
		// against struct entry's 56). A million ipv4-mixed rules in a
		// run's list: memlock 106.7 MiB, 137.3 with whole entries (go run
		// ./bench -only e2e -e2e-sizes 1M, the control plane's memlock).
		narrow := !d.portCode()
		e := entriesOf(p, nil, narrow)
		if err := sizeFixed(spec, p, e, narrow); err != nil {
			return nil, err
		}
		install = func() error { return d.installFixed(p, e) }
	}
	// The policy goes into the maps while the verifier checks the programs.
	withOptional := p.DenyRaw
	if err := d.loadObjects(programsOf(o.hooks), withOptional, install); err != nil {
		if d.names != nil {
			d.names.Close()
		}
		return nil, err
	}
	d.policy = p
	d.state = cgwallState{Gen: 0, NextRuleId: p.NextID(), PortCode: d.state.PortCode}
	if err := d.writeState(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// Option changes what Load loads.
type Option func(*options)

type options struct {
	fixed   bool
	hooks   []Hook // the hooks whose programs to load
	spec    *Prepared
	dns     *dnsOptions // name rules' code, with WithDNS
	seen    uint32      // the seen map's size, with WithLearning; 0 without
	answers bool        // WithDNSAnswers
}

// WithPrepared loads the object that Prepare parsed ahead, for a Fixed load.
func WithPrepared(p *Prepared) Option { return func(o *options) { o.spec = p } }

// takeSpec returns the object the options call for, parsed.
func (o *options) takeSpec() (*ebpf.CollectionSpec, error) {
	if o.fixed {
		return o.spec.take()
	}
	return loadCgwall()
}

func loadError(err error) error {
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		// %+v prints the whole verifier log; the error stays in the chain.
		return fmt.Errorf("load BPF programs: %w\n%+v", err, verr)
	}
	return fmt.Errorf("load BPF programs: %w", err)
}

// PacketGuardError says why packet sockets are not refused although the
// policy denies raw sockets, or nil.
func (d *Datapath) PacketGuardError() error {
	if d.optionalErr == nil {
		return nil
	}
	return guardRefused(d.optionalErr)
}

// guardRefused words why the kernel refused the packet-socket guard.
func guardRefused(err error) error {
	const needs = `CONFIG_BPF_LSM, "bpf" in the lsm= boot list, and no lockdown`
	if errors.Is(err, unix.EPERM) {
		// The library's own hint for EPERM (the memlock limit) is no help:
		// Load lifts that limit before it loads anything.
		return fmt.Errorf("this kernel refused the BPF LSM program (%w), which needs %s", unix.EPERM, needs)
	}
	return fmt.Errorf("this kernel refused the BPF LSM program that refuses packet sockets (%w); it needs %s", err, needs)
}

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
	for _, p := range d.progs {
		p.Close()
	}
	if d.rodata != nil {
		d.rodata.Close()
	}
	if d.names != nil {
		d.names.Close()
	}
	return d.objs.Close()
}

// NextRuleID is the ID the datapath hands out next, as it last read or wrote
// its state: every rule with a lower ID is, or was, in its policy.
func (d *Datapath) NextRuleID() uint32 { return d.state.NextRuleId }

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
