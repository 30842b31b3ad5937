package cli

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/events"
	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/resolver"
	"github.com/cgwall/cgwall/internal/store"
)

// A policy with name rules needs a process that answers its cgroup's DNS:
// run and exec are that process for theirs, cgwall agent for persistent
// policies (attach loads them for the agent's resolver, and refuses them
// when no agent runs).
const namesNoEdit = "live edits take no name rules: put them in the policy's file and attach it again (cgwall agent serves their DNS)"

// agentResolver returns the resolver of the agent that serves the DNS of
// persistent policies with name rules, refusing when none runs: its record
// in the store outlives it, so the resolver must answer.
func agentResolver(s *store.Store, first policy.Rule) (store.Resolver, error) {
	rec, ok, err := s.Agent()
	if err != nil {
		return store.Resolver{}, failure(err)
	}
	if ok && answers(rec.Resolver.V4) {
		return rec.Resolver, nil
	}
	where := "none has run"
	if ok {
		where = fmt.Sprintf("none answers on %s in this network namespace", rec.Resolver.V4)
	}
	return store.Resolver{}, failure(fmt.Errorf("%s: name rules in a persistent policy need cgwall agent, which serves their DNS, and %s: start it (docs/agent.md), or use cgwall run or cgwall exec", first.Match(), where))
}

// answers says whether something accepts TCP connections at a.
func answers(a netip.AddrPort) bool {
	c, err := net.DialTimeout("tcp", a.String(), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// names is the resolver of a foreground policy with name rules. It listens
// before the datapath is loaded, since the programs are loaded with its
// addresses as constants, and serves once the datapath can learn; queries
// that come in between wait in its sockets.
type names struct {
	r      *resolver.Resolver
	events *dnsQueue
}

// listenNames starts listening for a policy with name rules, or for any
// policy when learning, and returns the options that load the datapath with
// the name hooks; it returns nil otherwise.
func listenNames(p *policy.Policy, learning bool) (*names, []datapath.Option, error) {
	if !p.HasNames() && !learning {
		return nil, nil, nil
	}
	r, err := resolver.Listen()
	if err != nil {
		return nil, nil, failure(fmt.Errorf("listen for the cgroup's DNS: %w", err))
	}
	v4, v6 := r.Addrs()
	// The learned maps take the datapath's default size: a name holds at
	// most --dns-max-addresses, and expiry keeps the rest in bounds.
	return &names{r: r, events: newDNSQueue()}, []datapath.Option{datapath.WithDNS(v4, v6, 0)}, nil
}

// serve starts answering the cgroup's queries: p judges them, d learns the
// addresses of the answers and tells where each query was sent, and lrn
// (when learning) hears every answer. A failure of the resolver that no
// query caused (addresses it could not forget) is a warning on stderr.
func (n *names) serve(p *policy.Policy, d *datapath.Datapath, dns dnsSettings, lrn *learning, stderr io.Writer) error {
	var answered func(resolver.Answer)
	if lrn != nil {
		answered = lrn.answered
	}
	// Rule IDs are named once, here: the events of the resolver's goroutines
	// then read a map that nothing writes.
	rules := make(map[uint32]string, len(p.Names))
	for _, r := range p.Names {
		rules[r.ID] = r.Match().String()
	}
	err := n.r.Serve(resolver.Config{
		Judge: func(q string) resolver.Verdict {
			v := p.DecideName(q)
			return resolver.Verdict{Resolve: v.Resolve, WouldResolve: v.WouldResolve, Pattern: string(v.Pattern), Rule: v.Rule}
		},
		Learner:    d,
		Origins:    d,
		Upstream:   dns.upstream,
		MinTTL:     dns.minTTL,
		MaxPerName: dns.maxAddrs,
		Audit:      p.Audit,
		Answered:   answered,
		Event: func(e resolver.Event) {
			if e.Name == "" && e.QType == 0 {
				fmt.Fprintf(stderr, "warning: cgwall's resolver: %v\n", e.Err)
				return
			}
			// DNS decisions stream as the policy's log level says, as
			// packet decisions do.
			if p.Log.Logs(policy.Action(e.Action)) {
				n.events.put(dnsEvent(e, rules))
			}
		},
	})
	if err != nil {
		return failure(fmt.Errorf("serve the cgroup's DNS: %w", err))
	}
	return nil
}

// dnsEvent is a resolver's decision as the events package prints it.
func dnsEvent(e resolver.Event, rules map[uint32]string) events.DNS {
	d := events.DNS{Time: e.Time, Name: e.Name, QType: e.QType, Action: e.Action, Audit: e.Audit, RuleID: e.Rule, Server: e.Server, Rule: "default"}
	if e.Rule != 0 {
		if d.Rule = rules[e.Rule]; d.Rule == "" {
			d.Rule = fmt.Sprintf("removed-rule-%d", e.Rule)
		}
	}
	if e.Err != nil {
		d.Err = e.Err.Error()
	}
	return d
}

func (n *names) Close() error {
	if n == nil {
		return nil
	}
	return n.r.Close()
}

// describe ends the ready line of a policy with name rules with where its
// DNS is served.
func (n *names) describe() string {
	if n == nil {
		return ""
	}
	v4, v6 := n.r.Addrs()
	return fmt.Sprintf("; DNS served on %s and %s", v4, v6)
}

// countRules names the policy's rules for the ready line: "3 rules", or
// "1 rule, 2 name rules".
func countRules(p *policy.Policy) string {
	s := plural(len(p.Rules), "rule")
	if len(p.Names) > 0 {
		s += ", " + plural(len(p.Names), "name rule")
	}
	return s
}

// warnUnusedDNS says that the DNS flags given do nothing for a policy
// without name rules.
func warnUnusedDNS(p *policy.Policy, dns dnsSettings, learning bool, stderr io.Writer) {
	if len(dns.given) > 0 && !p.HasNames() && !learning {
		fmt.Fprintf(stderr, "warning: %s: the policy has no name rules, so cgwall serves no DNS\n", strings.Join(dns.given, ", "))
	}
}
