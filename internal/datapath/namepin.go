package datapath

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"

	"github.com/cgwall/cgwall/internal/policy"
)

// The name rules of a persistent policy. The BPF maps know a name pattern
// only by its site number, so that a policy opened from its pins could not
// say which names its rules are for, nor learn addresses under them. The
// names record keeps them: an array of two values, one a generation, each
// the generation's name rules in JSON, which no program reads. Only a
// datapath loaded with WithDNS has it.

// namesPin names the record in a policy folder.
const namesPin = "names"

// namesSize bounds one generation's name rules in JSON: some 1,500 rules.
const namesSize = 1 << 16

// pinnedName is one name rule as the record keeps it.
type pinnedName struct {
	ID     uint32 `json:"id"`
	Action string `json:"action"`
	Rule   string `json:"rule"` // the rule's match in canonical form
}

// newNamesRecord makes the record of a datapath loaded with WithDNS.
func newNamesRecord() (*ebpf.Map, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "cgwall_names", Type: ebpf.Array, KeySize: 4, ValueSize: namesSize, MaxEntries: 2})
	if err != nil {
		return nil, fmt.Errorf("create the name rules' record: %w", err)
	}
	return m, nil
}

// writeNames records p's name rules as generation gen's.
func (d *Datapath) writeNames(p *policy.Policy, gen uint32) error {
	if d.names == nil {
		return nil
	}
	rules := make([]pinnedName, len(p.Names))
	for i, r := range p.Names {
		rules[i] = pinnedName{ID: r.ID, Action: r.Action.String(), Rule: r.Match().String()}
	}
	b, err := json.Marshal(rules)
	if err != nil {
		return err
	}
	if len(b) > namesSize {
		return fmt.Errorf("%d name rules take %d bytes, more than the %d a persistent policy records: use fewer, or wildcards", len(p.Names), len(b), namesSize)
	}
	v := append(b, make([]byte, namesSize-len(b))...)
	if err := d.names.Put(gen, v); err != nil {
		return fmt.Errorf("record the name rules: %w", err)
	}
	return nil
}

// readNames adds generation gen's name rules from the record to p.
func (d *Datapath) readNames(p *policy.Policy, gen uint32) error {
	v := make([]byte, namesSize)
	if err := d.names.Lookup(gen, &v); err != nil {
		return fmt.Errorf("read the name rules: %w", err)
	}
	var rules []pinnedName
	if b := bytes.TrimRight(v, "\x00"); len(b) > 0 {
		if err := json.Unmarshal(b, &rules); err != nil {
			return fmt.Errorf("read the name rules: %w", err)
		}
	}
	for _, r := range rules {
		action, err := policy.ParseAction(r.Action)
		if err != nil {
			return fmt.Errorf("read the name rules: %w", err)
		}
		matches, err := policy.ParseRule(r.Rule)
		if err != nil || len(matches) != 1 || matches[0].Name == "" {
			return fmt.Errorf("read the name rules: %q is not one name rule", r.Rule)
		}
		m := matches[0]
		p.AddRule(policy.Rule{ID: r.ID, Dir: policy.Egress, Action: action, Name: m.Name, Ports: m.Ports})
	}
	return nil
}

// openNames opens the record pinned in dir, if there is one: a policy
// loaded without name rules has none.
func openNames(dir string) (*ebpf.Map, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, namesPin), nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open the name rules' record: %w", err)
	}
	if m.Type() != ebpf.Array || m.ValueSize() != namesSize || m.MaxEntries() != 2 {
		m.Close()
		return nil, fmt.Errorf("%s is not a record of name rules that cgwall made", filepath.Join(dir, namesPin))
	}
	return m, nil
}

// relearn rewrites the learned addresses after a switch from old to p: each
// follows its pattern's rules in p, and goes where p has no rule for its
// pattern. An address's pattern is known from its site number in old.
func (d *Datapath) relearn(old, p *policy.Policy) error {
	if d.learned == nil {
		return nil
	}
	patterns := map[uint32]policy.Name{}
	for name, site := range nameSites(old) {
		patterns[site] = name
	}
	next := learnedValues(p)
	d.namesMu.Lock()
	d.learned = next
	d.namesMu.Unlock()
	var errs []error
	for _, m := range []*ebpf.Map{d.objs.Learned4, d.objs.Learned6} {
		var keys [][]byte
		var vals []cgwallLearned
		var k []byte
		var v cgwallLearned
		it := m.Iterate()
		for it.Next(&k, &v) {
			keys, vals = append(keys, bytes.Clone(k)), append(vals, v)
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("read the learned addresses: %w", err)
		}
		for i, key := range keys {
			cur := vals[i]
			nv, ok := next[patterns[cur.Site]]
			if !ok {
				if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					errs = append(errs, err)
				}
				d.keepCounts(cur.R)
				continue
			}
			if nv.R.Id == cur.R.Id { // the same rule: its counts go on
				nv.R.Packets, nv.R.Bytes = cur.R.Packets, cur.R.Bytes
			}
			if nv == cur {
				continue
			}
			if nv.R.Id != cur.R.Id {
				d.keepCounts(cur.R)
			}
			if err := m.Update(key, nv, ebpf.UpdateExist); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("rewrite the learned addresses for the new policy: %w", err)
	}
	return nil
}

// LearnedAddr is an address that a DNS answer put in force, and the name
// pattern whose rules decide for it.
type LearnedAddr struct {
	Addr    netip.Addr
	Pattern string // policy.Name's canonical form
}

// Learned returns every address learned, of both families, with its
// pattern: what an agent that starts again finds learned by the one before
// it, and what 'cgwall list' shows. An entry whose site no pattern of the
// policy has (none should) is left out.
func (d *Datapath) Learned() ([]LearnedAddr, error) {
	d.namesMu.Lock()
	patterns := make(map[uint32]string, len(d.learned))
	for n, v := range d.learned {
		patterns[v.Site] = string(n)
	}
	d.namesMu.Unlock()
	var out []LearnedAddr
	add := func(a netip.Addr, v cgwallLearned) {
		if p, ok := patterns[v.Site]; ok {
			out = append(out, LearnedAddr{a, p})
		}
	}
	var v cgwallLearned
	var k4 [4]byte
	it := d.objs.Learned4.Iterate()
	for it.Next(&k4, &v) {
		add(netip.AddrFrom4(k4), v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read the learned addresses: %w", err)
	}
	var k6 [16]byte
	it = d.objs.Learned6.Iterate()
	for it.Next(&k6, &v) {
		add(netip.AddrFrom16(k6), v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read the learned addresses: %w", err)
	}
	return out, nil
}
