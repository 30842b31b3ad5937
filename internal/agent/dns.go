package agent

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/cgwall/cgwall/internal/cgroup"
	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/metrics"
	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/resolver"
	"github.com/cgwall/cgwall/internal/store"
)

// DNS is the agent's resolver: one listener for every cgroup whose
// persistent policy has name rules, the agent's and those attached by hand.
// Each such policy is a tenant of the resolver; a query is the tenant's
// whose datapath recorded the query's client (datapath.Origin).
type DNS struct {
	r     *resolver.Resolver
	addrs store.Resolver
	root  string // the store's folder, read without its lock on a miss
	log   *slog.Logger

	mu       sync.Mutex
	tenants  map[uint64]*tenant // by cgroup ID
	lastScan time.Time          // of the store, on a query no tenant knew
	metrics  *metrics.Metrics
}

// tenant is one cgroup's policy with name rules as the resolver sees it.
// The resolver.Tenant stays while the cgroup's policy changes, so that the
// addresses it learned expire on time; what it judges with and learns into
// is the policy in force, swapped under mu.
type tenant struct {
	rt *resolver.Tenant
	mu sync.Mutex
	d  *datapath.Datapath // opened from the store
	p  *policy.Policy
}

// NewDNS listens on port of 127.0.0.1 and [::1] (0: any free port, for
// tests).
func NewDNS(port int, root string, log *slog.Logger) (*DNS, error) {
	r, err := resolver.ListenPort(port)
	if err != nil {
		return nil, fmt.Errorf("listen for DNS on port %d of 127.0.0.1 and [::1]: %w", port, err)
	}
	cookie, err := datapath.NetnsCookie()
	if err != nil {
		r.Close()
		return nil, err
	}
	v4, v6 := r.Addrs()
	return &DNS{r: r, addrs: store.Resolver{V4: v4, V6: v6, Netns: cookie}, root: root, log: log, tenants: map[uint64]*tenant{}}, nil
}

// Addrs are where the resolver listens, which policies with name rules are
// loaded with.
func (x *DNS) Addrs() store.Resolver { return x.addrs }

// Serve starts answering, forwarding to upstream if it is valid.
func (x *DNS) Serve(upstream netip.AddrPort, minTTL time.Duration, maxPerName int) error {
	return x.r.Serve(resolver.Config{
		Route: x.route, Upstream: upstream, MinTTL: minTTL, MaxPerName: maxPerName,
		Event: x.event,
	})
}

// Close stops the resolver and closes the tenants' datapaths. The learned
// addresses stay in the maps: the policies are persistent.
func (x *DNS) Close() error {
	err := x.r.Close()
	x.mu.Lock()
	defer x.mu.Unlock()
	for id, t := range x.tenants {
		t.d.Close()
		delete(x.tenants, id)
	}
	return err
}

// route finds the tenant of a query by its client. A client no tenant knows
// may be in a cgroup whose policy was attached by hand since the agent last
// read the store: the store is read again, at most once a second, for
// policies with name rules served here.
func (x *DNS) route(tcp bool, client netip.AddrPort) (*resolver.Tenant, netip.AddrPort, bool) {
	for try := 0; try < 2; try++ {
		for _, t := range x.snapshot() {
			if asked, ok := t.origin(tcp, client); ok {
				return t.rt, asked, true
			}
		}
		if try == 0 && !x.rescan() {
			break
		}
	}
	return nil, netip.AddrPort{}, false
}

func (x *DNS) snapshot() []*tenant {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]*tenant, 0, len(x.tenants))
	for _, t := range x.tenants {
		out = append(out, t)
	}
	return out
}

// rescan reads the store for policies with name rules served here that are
// no tenant yet; it reports whether it found one.
func (x *DNS) rescan() bool {
	x.mu.Lock()
	if time.Since(x.lastScan) < time.Second {
		x.mu.Unlock()
		return false
	}
	x.lastScan = time.Now()
	x.mu.Unlock()
	s, err := store.ViewAt(x.root)
	if err != nil {
		return false
	}
	defer s.Close()
	ids, err := s.List()
	if err != nil {
		return false
	}
	var found []uint64
	for _, id := range ids {
		x.mu.Lock()
		_, known := x.tenants[id]
		x.mu.Unlock()
		if !known {
			if r, ok, err := s.HasNames(id); err == nil && ok && r == x.addrs {
				found = append(found, id)
			}
		}
	}
	paths, _ := cgroup.PathsByID(found)
	for _, id := range found {
		if err := x.Serve1(s, id, paths[id]); err != nil {
			x.log.Warn("serving the DNS of a policy attached by hand", "cgroup_id", id, "error", err)
		}
	}
	return len(found) > 0
}

// Serve1 makes the cgroup's persistent policy a tenant, or gives its tenant
// the policy now in force, when the policy has name rules served here; it
// drops the tenant otherwise. Called after every change of the policy.
func (x *DNS) Serve1(s *store.Store, id uint64, rel string) error {
	r, ok, err := s.HasNames(id)
	if err != nil {
		return err
	}
	if !ok || r != x.addrs {
		x.Drop(id)
		return nil
	}
	d, err := s.Open(id)
	if err != nil {
		return err
	}
	p := d.Policy()
	x.mu.Lock()
	t := x.tenants[id]
	x.mu.Unlock()
	if t != nil && t.rt.Audit == p.Audit {
		t.swap(d)
		return nil
	}
	// A new tenant, or one whose audit setting changed (the resolver reads
	// it with every query): what the datapath learned before expires after
	// the floor, unless an answer holds it longer.
	found, err := d.Learned()
	if err != nil {
		d.Close()
		return err
	}
	learned := make([]netip.Addr, len(found))
	for i, l := range found {
		learned[i] = l.Addr
	}
	nt := &tenant{d: d, p: p}
	nt.rt = &resolver.Tenant{Name: rel, Judge: nt.judge, Learner: nt, Audit: p.Audit}
	x.mu.Lock()
	x.tenants[id] = nt
	x.mu.Unlock()
	if t != nil {
		x.r.Drop(t.rt)
		t.close()
	}
	x.r.Adopt(nt.rt, learned)
	return nil
}

// Drop stops serving a cgroup's DNS: its policy is gone, or has no name
// rules now.
func (x *DNS) Drop(id uint64) {
	x.mu.Lock()
	t := x.tenants[id]
	delete(x.tenants, id)
	x.mu.Unlock()
	if t != nil {
		x.r.Drop(t.rt)
		t.close()
	}
}

// Held returns what the resolver holds of the cgroup's learned addresses
// (when each expires); ok is false when the agent does not serve its DNS.
func (x *DNS) Held(id uint64) (held []resolver.Held, ok bool) {
	x.mu.Lock()
	t := x.tenants[id]
	x.mu.Unlock()
	if t == nil {
		return nil, false
	}
	return x.r.Held(t.rt), true
}

// Tenants counts the cgroups whose DNS is served.
func (x *DNS) Tenants() []uint64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	ids := make([]uint64, 0, len(x.tenants))
	for id := range x.tenants {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// event logs the queries the policy refused and the resolver's failures,
// and counts every query.
func (x *DNS) event(e resolver.Event) {
	if m := x.metrics; m != nil {
		if v, ok := metrics.DNSVerdict(e); ok {
			m.DNSQuery(v)
		}
	}
	switch {
	case e.Err != nil:
		x.log.Warn("DNS", "cgroup", e.Tenant, "name", e.Name, "error", e.Err)
	case e.Action == 0:
		x.log.Info("DNS refused", "cgroup", e.Tenant, "name", e.Name, "qtype", e.QType, "audit", e.Audit)
	}
}

func (t *tenant) swap(d *datapath.Datapath) {
	t.mu.Lock()
	old := t.d
	t.d, t.p = d, d.Policy()
	t.mu.Unlock()
	old.Close()
}

func (t *tenant) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.d.Close()
}

func (t *tenant) judge(q string) resolver.Verdict {
	t.mu.Lock()
	v := t.p.DecideName(q)
	t.mu.Unlock()
	return resolver.Verdict{Resolve: v.Resolve, WouldResolve: v.WouldResolve, Pattern: string(v.Pattern), Rule: v.Rule}
}

func (t *tenant) origin(tcp bool, client netip.AddrPort) (netip.AddrPort, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.d.Origin(tcp, client)
}

// Learn and Forget make the tenant the resolver's Learner, into the policy
// in force.
func (t *tenant) Learn(addrs []netip.Addr, pattern string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.d.Learn(addrs, pattern)
}

func (t *tenant) Forget(addrs []netip.Addr) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.d.Forget(addrs)
}
