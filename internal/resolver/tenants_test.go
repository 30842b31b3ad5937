package resolver

import (
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// tenantsFixture is one resolver serving several tenants through
// Config.Route, as the agent runs it: each client is routed to the tenant
// its test registered before the query.
type tenantsFixture struct {
	r   *Resolver
	up  *upstream
	ev  *events
	mu  sync.Mutex
	who map[netip.AddrPort]*Tenant
	clk *clock
}

func startTenants(t *testing.T, minTTL time.Duration) *tenantsFixture {
	t.Helper()
	f := &tenantsFixture{up: startUpstream(t), ev: newEvents(), who: map[netip.AddrPort]*Tenant{}, clk: newClock()}
	r, err := Listen()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	r.now = f.clk.Now
	err = r.Serve(Config{
		Route: func(tcp bool, client netip.AddrPort) (*Tenant, netip.AddrPort, bool) {
			f.mu.Lock()
			defer f.mu.Unlock()
			ten, ok := f.who[client]
			return ten, f.up.addr, ok
		},
		MinTTL: minTTL,
		Event:  f.ev.add,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	return f
}

// ask sends name's A query from a fresh client that Route gives to ten
// (nil: to no tenant) and returns the answer's Rcode.
func (f *tenantsFixture) ask(t *testing.T, ten *Tenant, name string) int {
	t.Helper()
	v4, _ := f.r.Addrs()
	c := &dns.Client{Net: "udp", Timeout: 10 * time.Second}
	conn, err := c.Dial(v4.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client, _ := addrPort(conn.LocalAddr())
	if ten != nil {
		f.mu.Lock()
		f.who[client] = ten
		f.mu.Unlock()
	}
	req := new(dns.Msg)
	req.SetQuestion(name, dns.TypeA)
	m, _, err := c.ExchangeWithConn(req, conn)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return m.Rcode
}

func newTenant(name string, allow map[string]string) (*Tenant, *learner) {
	l := &learner{forgot: make(chan []netip.Addr, 4)}
	return &Tenant{Name: name, Judge: judge(allow), Learner: l}, l
}

// TestRouteJudgesAndLearnsPerTenant: each query is judged by its own
// tenant's policy and learned into its own tenant's datapath, and its
// event names the tenant; a client no tenant knows gets SERVFAIL.
func TestRouteJudgesAndLearnsPerTenant(t *testing.T) {
	f := startTenants(t, time.Minute)
	a, la := newTenant("a", map[string]string{"allowed.test": "allowed.test"})
	b, lb := newTenant("b", map[string]string{"two.test": "two.test"})

	if rc := f.ask(t, a, "allowed.test."); rc != dns.RcodeSuccess {
		t.Errorf("a asking allowed.test: %s", dns.RcodeToString[rc])
	}
	if rc := f.ask(t, b, "allowed.test."); rc != dns.RcodeNameError {
		t.Errorf("b asking allowed.test, which only a allows: %s", dns.RcodeToString[rc])
	}
	if rc := f.ask(t, b, "two.test."); rc != dns.RcodeSuccess {
		t.Errorf("b asking two.test: %s", dns.RcodeToString[rc])
	}
	if rc := f.ask(t, nil, "allowed.test."); rc != dns.RcodeServerFailure {
		t.Errorf("a client of no tenant: %s, want SERVFAIL", dns.RcodeToString[rc])
	}

	if got := la.calls(); len(got) != 1 || !slices.Equal(got[0].addrs, addrs("192.0.2.1")) {
		t.Errorf("a learned %v", got)
	}
	if got := lb.calls(); len(got) != 1 || !slices.Equal(got[0].addrs, addrs("192.0.2.2", "192.0.2.3")) {
		t.Errorf("b learned %v", got)
	}
	evs := f.ev.wait(4)
	want := []struct {
		tenant string
		action uint8
		failed bool
	}{{"a", 1, false}, {"b", 0, false}, {"b", 1, false}, {"", 0, true}}
	if len(evs) != len(want) {
		t.Fatalf("events: %+v", evs)
	}
	for i, w := range want {
		if e := evs[i]; e.Tenant != w.tenant || e.Action != w.action || (e.Err != nil) != w.failed {
			t.Errorf("event %d: %+v, want tenant %q action %d failed %v", i, e, w.tenant, w.action, w.failed)
		}
	}
}

// TestTenantsExpireApart: an address two tenants learned expires in each on
// its own clock, and a dropped tenant's learner is never called again.
func TestTenantsExpireApart(t *testing.T) {
	f := startTenants(t, 2*time.Second)
	a, la := newTenant("a", map[string]string{"short.test": "short.test"})
	b, lb := newTenant("b", map[string]string{"short.test": "short.test"})
	c, lc := newTenant("c", map[string]string{"short.test": "short.test"})

	f.ask(t, a, "short.test.")
	f.clk.Advance(time.Second)
	f.ask(t, b, "short.test.")
	f.ask(t, c, "short.test.")
	f.r.Drop(c)

	// At 2 s a's address is due (its floor), b's is not.
	f.after(t, time.Second, la, addrs("192.0.2.20"), "a's address at its floor")
	if got := lb.forgotten(); len(got) != 0 {
		t.Errorf("b forgot %v a second before its floor", got)
	}

	f.after(t, time.Second, lb, addrs("192.0.2.20"), "b's address at its floor")
	f.r.tables.expire()
	if got := lc.forgotten(); len(got) != 0 {
		t.Errorf("the dropped tenant's learner was told to forget %v", got)
	}
}

// TestAdoptExpiresAtTheFloor: addresses adopted from a datapath (an agent
// restarted) are forgotten after the TTL floor, unless an answer holds them
// longer; Held says when each goes, and which answers hold it.
func TestAdoptExpiresAtTheFloor(t *testing.T) {
	f := startTenants(t, 2*time.Second)
	a, la := newTenant("a", map[string]string{"allowed.test": "allowed.test"})
	f.r.Adopt(a, addrs("192.0.2.1", "198.51.100.7"))
	f.clk.Advance(time.Second)
	// allowed.test answers 192.0.2.1 with TTL 300: that address stays.
	f.ask(t, a, "allowed.test.")
	t0 := newClock().Now()
	want := []Held{
		{Addr: netip.MustParseAddr("192.0.2.1"), Expires: t0.Add(301 * time.Second), Names: []string{"allowed.test"}},
		{Addr: netip.MustParseAddr("198.51.100.7"), Expires: t0.Add(2 * time.Second)},
	}
	if got := f.r.Held(a); !slices.EqualFunc(got, want, func(x, y Held) bool {
		return x.Addr == y.Addr && x.Expires.Equal(y.Expires) && slices.Equal(x.Names, y.Names)
	}) {
		t.Errorf("held %+v, want %+v", got, want)
	}

	f.after(t, time.Second, la, addrs("198.51.100.7"), "the adopted address that no answer holds, at the floor")
	f.after(t, 300*time.Second, la, addrs("192.0.2.1"), "the answered address at its TTL")
}

// after moves the clock by d and waits for l to be told to forget want.
func (f *tenantsFixture) after(t *testing.T, d time.Duration, l *learner, want []netip.Addr, what string) {
	t.Helper()
	f.clk.Advance(d)
	f.r.tables.kick()
	select {
	case got := <-l.forgot:
		if !slices.Equal(got, want) {
			t.Errorf("%s: forgot %v, want %v", what, got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not forgotten", what)
	}
}
