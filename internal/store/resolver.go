package store

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"

	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/policy"
)

// Resolver is where the DNS of a persistent policy with name rules goes:
// the resolver of cgwall agent, whose addresses the policy's programs are
// loaded with (datapath.WithDNS), so that they cannot change without a
// rebuild.
type Resolver struct {
	V4 netip.AddrPort `json:"v4"`
	V6 netip.AddrPort `json:"v6"`
	// Netns is the cookie of the network namespace the resolver listens
	// in: the programs send DNS to it only from sockets there.
	Netns uint64 `json:"netns"`
}

// resolverPin names the record of a policy's resolver, in the folder of a
// policy loaded with name rules.
const resolverPin = "resolver"

// agentPin names the record of the agent that serves the store's name
// rules, in the store's folder.
const agentPin = "agent"

// ErrNoResolver is the error of a policy with name rules put in force
// without a resolver to serve them.
var ErrNoResolver = errors.New("name rules in a persistent policy need cgwall agent, which serves their DNS")

// WithResolver makes Create and Replace load a policy that has name rules
// with the code of name rules, its DNS sent to r. A policy without name
// rules ignores it.
func WithResolver(r Resolver) Option { return func(op *options) { op.resolver = &r } }

// loadOptions are the datapath's options for p.
func (o options) loadOptions(p *policy.Policy) ([]datapath.Option, error) {
	if !p.HasNames() {
		return nil, nil
	}
	if o.resolver == nil {
		return nil, ErrNoResolver
	}
	return []datapath.Option{datapath.WithDNS(o.resolver.V4, o.resolver.V6, 0), datapath.WithResolverNetns(o.resolver.Netns)}, nil
}

// pinRecords pins a new policy folder's records: its owner, and its
// resolver if p has name rules.
func (o options) pinRecords(dir string, p *policy.Policy) error {
	if o.owner != nil {
		if err := writeRecord(filepath.Join(dir, ownerPin), "owner", o.owner); err != nil {
			return err
		}
	}
	if p.HasNames() && o.resolver != nil {
		return writeRecord(filepath.Join(dir, resolverPin), "resolver", o.resolver)
	}
	return nil
}

// needsRebuild says whether p cannot replace the policy pinned in dir in
// place: it has name rules, and the programs there were loaded without name
// code or with another resolver.
func (o options) needsRebuild(dir string, p *policy.Policy) (bool, error) {
	if !p.HasNames() {
		return false, nil
	}
	if o.resolver == nil {
		return false, ErrNoResolver
	}
	var have Resolver
	ok, err := readRecord(filepath.Join(dir, resolverPin), "resolver", &have)
	if err != nil {
		return false, err
	}
	return !ok || have != *o.resolver, nil
}

// Agent is what the store records of the agent that serves its name rules.
type Agent struct {
	PID      int      `json:"pid"`
	Resolver Resolver `json:"resolver"`
	// Socket is the unix socket where the agent answers what only it
	// knows (when learned addresses expire); "" for none.
	Socket string `json:"socket,omitempty"`
}

// SetAgent records the agent that serves the store's name rules, or, with
// nil, that none does.
func (s *Store) SetAgent(a *Agent) error {
	path := filepath.Join(s.at, agentPin)
	if a == nil {
		return removeRecord(path, "agent")
	}
	return writeRecord(path, "agent", a)
}

// Agent returns the agent recorded; ok is false if none is. The record
// outlives the agent (kill -9): whether it runs is for the caller to check.
func (s *Store) Agent() (a Agent, ok bool, err error) {
	ok, err = readRecord(filepath.Join(s.at, agentPin), "agent", &a)
	if err != nil {
		return Agent{}, false, fmt.Errorf("%s: %w", s.root, err)
	}
	return a, ok, nil
}

// HasNames says whether a cgroup's persistent policy was loaded with name
// rules, and returns the resolver its DNS goes to.
func (s *Store) HasNames(cgroupID uint64) (Resolver, bool, error) {
	var r Resolver
	ok, err := readRecord(filepath.Join(s.path(cgroupID), resolverPin), "resolver", &r)
	return r, ok, err
}
