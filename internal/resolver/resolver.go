// Package resolver answers the DNS queries that the BPF socket hooks redirect
// out of a cgroup. It forwards a query to the server the client asked only
// when the policy lets the name resolve, and puts the addresses of the answer
// into the datapath before the client sees them, so that the first connect
// after a lookup is already allowed. Learned addresses expire with their TTL.
//
// One resolver serves one policy (cgwall run and exec: Config's Judge,
// Learner and Origins) or many (cgwall agent: Config.Route finds the Tenant
// of each query). The package knows neither the policy nor the datapath: it
// reaches them through these functions and interfaces, so that it can be
// tested in-process without privileges.
package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Defaults for the zero values of Config.MinTTL and Config.MaxPerName.
const (
	DefaultMinTTL     = 60 * time.Second
	DefaultMaxPerName = 256
)

// upstreamTimeout bounds one forwarded exchange. Clients retry on their own
// (glibc after 5 s by default), so waiting longer only holds a goroutine.
const upstreamTimeout = 5 * time.Second

// Verdict is the policy's decision for a query name.
type Verdict struct {
	// Resolve says the query is forwarded. In audit mode it is always true.
	Resolve bool
	// WouldResolve is, in audit mode, what Resolve would have been.
	WouldResolve bool
	// Pattern is the name pattern that decided ("" when none matched); the
	// addresses of the answer are learned under it.
	Pattern string
	// Rule is the ID of the deciding rule, 0 for the default.
	Rule uint32
}

// Learner puts the addresses that answers give into force, and takes them
// out again. The datapath implements it.
type Learner interface {
	// Learn returns once the addresses are in force under pattern's rules.
	// It may be called concurrently.
	Learn(addrs []netip.Addr, pattern string) error
	// Forget takes addresses out; forgetting one that is not there is not
	// an error.
	Forget(addrs []netip.Addr) error
}

// Origins tells which server a client asked before its query was redirected.
// The datapath records it.
type Origins interface {
	Origin(tcp bool, client netip.AddrPort) (netip.AddrPort, bool)
}

// Tenant is one policy whose cgroup's DNS the resolver serves.
type Tenant struct {
	// Name names the tenant in events (the agent passes the cgroup's path).
	Name string
	// Judge decides a query name: lower case, no trailing dot. Required.
	Judge func(q string) Verdict
	// Learner receives the addresses of answers that resolve under a
	// pattern. Required.
	Learner Learner
	// Audit marks the tenant's events as audit ones; Judge is expected to
	// let everything resolve and to say what would have happened.
	Audit bool
}

// Config is what Serve needs: Judge, Learner and Origins for one policy, or
// Route for many.
type Config struct {
	// Judge decides a query name: lower case, no trailing dot. Required
	// without Route.
	Judge func(q string) Verdict
	// Learner receives the addresses of answers that resolve under a
	// pattern. Required without Route.
	Learner Learner
	// Origins finds the server each client asked. It may be nil when
	// Upstream is set.
	Origins Origins
	// Route, when set, finds the tenant of each query instead of Judge,
	// Learner, Origins and Audit (which must then be unset): by the
	// query's client, and the server the client asked (invalid if Upstream
	// is to be asked). ok false: no tenant knows the client; the query is
	// answered SERVFAIL (fail closed) and an event says so. Each tenant has
	// its own table of learned addresses, made at its first query and kept
	// until Drop: the same address learned by two tenants expires in each
	// on its own, and MaxPerName counts per tenant. It may be called
	// concurrently.
	Route func(tcp bool, client netip.AddrPort) (t *Tenant, asked netip.AddrPort, ok bool)
	// Upstream, when valid, is asked instead of the client's server.
	Upstream netip.AddrPort
	// MinTTL is the floor of a learned address's lifetime, so that a short
	// or zero TTL does not expire an address before the client connects.
	// Zero means DefaultMinTTL.
	MinTTL time.Duration
	// MaxPerName caps the addresses one asked name holds; the least recently
	// answered go first. Zero means DefaultMaxPerName.
	MaxPerName int
	// Audit marks the events as audit ones; Judge is expected to let
	// everything resolve and to say what would have happened.
	Audit bool
	// Answered, when set, hears of every answer forwarded to a client,
	// whether or not a pattern decided, before the client gets it: what
	// learning a policy needs (cgwall exec --learn). It may be called
	// concurrently. It is for one policy: Route must then be unset, as an
	// Answer does not say whose it is.
	Answered func(Answer)
	// Event, when set, receives every decision. It runs on the query's
	// path (after the answer is sent), so it should not block for long.
	Event func(Event)
}

// Event is one decision on a query, or one failure of the resolver.
type Event struct {
	// Time is when the query arrived.
	Time time.Time
	// Name is the query name, lower case without the trailing dot. It is
	// empty for a failure that no query caused (a failed Forget).
	Name string
	// QType is the question's type (dns.TypeA, …).
	QType uint16
	// Action is 1 when the client got the server's answer and 0 when it
	// got NXDOMAIN or an error. In audit mode it is what would have
	// happened (the client always gets the server's answer).
	Action uint8
	// Audit is the tenant's (Config.Audit for one policy).
	Audit bool
	// Tenant is the Name of the tenant whose query it is, or whose Forget
	// failed; empty for one policy, and for a query that no tenant knows.
	Tenant string
	// Pattern and Rule are the Verdict's.
	Pattern string
	Rule    uint32
	// Server is the server asked (or that would have been asked).
	Server netip.AddrPort
	// Err says why the client got SERVFAIL (or, with an empty Name, which
	// Forget failed).
	Err error
}

// Answer is what Config.Answered hears of an answer forwarded to a client.
type Answer struct {
	// Name is the query name, as in Event.
	Name string
	// Addrs are the answer's addresses for Name, its CNAME chain followed;
	// none for an answer without.
	Addrs []netip.Addr
	// Asked is the server the client sent its query to: the one asked, or,
	// where Upstream took its place, the origin recorded for the client
	// (invalid when none is). TCP says whether the client asked over TCP.
	Asked netip.AddrPort
	TCP   bool
}

// Resolver is cgwall's DNS forwarder on the loopback addresses.
type Resolver struct {
	v4, v6 netip.AddrPort
	udp    [2]net.PacketConn // v4, v6
	tcp    [2]net.Listener

	mu      sync.Mutex // guards the fields below and serves the Close/Serve order
	served  bool
	closed  bool
	servers []*dns.Server
	wg      sync.WaitGroup // the servers' and the expiry loop's goroutines

	cfg    Config
	tables *tables
	single *Tenant         // the one policy's, without Route
	table  *table          // single's
	ctx    context.Context // cancelled by Close: ends upstream exchanges
	cancel context.CancelFunc
	udpc   *dns.Client
	tcpc   *dns.Client
	idle   idleConns // UDP sockets to upstream servers, between exchanges

	now func() time.Time // the table's clock; tests set their own before Serve
}

// Addrs returns the addresses the resolver listens on, UDP and TCP alike.
func (r *Resolver) Addrs() (v4, v6 netip.AddrPort) { return r.v4, r.v6 }

// Serve starts answering. Queries that arrived since Listen are waiting in
// the sockets and are answered now. It fails on a Config that is not valid
// (see Config), and when called twice or after Close.
func (r *Resolver) Serve(cfg Config) error {
	if err := check(cfg); err != nil {
		return err
	}
	if cfg.MinTTL <= 0 {
		cfg.MinTTL = DefaultMinTTL
	}
	if cfg.MaxPerName <= 0 {
		cfg.MaxPerName = DefaultMaxPerName
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errors.New("resolver: Serve after Close")
	}
	if r.served {
		return errors.New("resolver: Serve called twice")
	}
	r.served = true
	r.cfg = cfg
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.udpc = &dns.Client{Net: "udp", Timeout: upstreamTimeout}
	r.tcpc = &dns.Client{Net: "tcp", Timeout: upstreamTimeout}
	now := r.now
	if now == nil {
		now = time.Now
	}
	r.tables = newTables(cfg.MinTTL, cfg.MaxPerName, now, r.forgetFailed)
	if cfg.Route == nil {
		r.single = &Tenant{Judge: cfg.Judge, Learner: cfg.Learner, Audit: cfg.Audit}
		r.table = r.tables.of(r.single)
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.tables.run()
	}()
	return r.startServers()
}

// startServers runs one dns.Server per socket and returns once all of them
// are serving, so that Close never races a server that has not started (a
// dns.Server cannot be shut down before it is).
func (r *Resolver) startServers() error {
	started := make(chan struct{}, 4)
	errs := make(chan error, 4)
	handler := dns.HandlerFunc(r.serveDNS)
	for i := range 2 {
		r.servers = append(r.servers,
			&dns.Server{PacketConn: r.udp[i], Handler: handler, UDPSize: dns.MaxMsgSize},
			&dns.Server{Listener: r.tcp[i], Handler: handler})
	}
	for _, s := range r.servers {
		s.NotifyStartedFunc = func() { started <- struct{}{} }
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if err := s.ActivateAndServe(); err != nil {
				errs <- err
			}
		}()
	}
	for range r.servers {
		select {
		case <-started:
		case err := <-errs:
			return fmt.Errorf("resolver: serve: %w", err)
		}
	}
	return nil
}

// Close stops the servers and the expiry timer and returns once their
// goroutines are gone. Queries in flight are answered first: an exchange with
// a server is cut (SERVFAIL), a Learn call is waited for. Learned addresses
// are not forgotten: the datapath goes with the process, or keeps them on
// purpose. Its error is always nil; it returns one to be an io.Closer.
func (r *Resolver) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	served := r.served
	r.mu.Unlock()

	if served {
		r.cancel()
		for _, s := range r.servers {
			// Its only error is for a server that never started, whose
			// failure Serve returned.
			_ = s.Shutdown()
		}
		r.tables.stop()
	}
	r.wg.Wait()
	r.idle.close()
	// The servers close their sockets; closing again is harmless and
	// covers a Resolver that never served.
	r.closeSockets()
	return nil
}

// check says what is wrong with cfg: one policy needs Judge, Learner, and
// Origins or Upstream; many need Route and none of those but Upstream.
func check(cfg Config) error {
	if cfg.Route != nil {
		for _, set := range []struct {
			field string
			set   bool
		}{
			{"Judge", cfg.Judge != nil},
			{"Learner", cfg.Learner != nil},
			{"Origins", cfg.Origins != nil},
			{"Audit", cfg.Audit},
			{"Answered", cfg.Answered != nil},
		} {
			if set.set {
				return fmt.Errorf("resolver: Config.%s is set with Config.Route: each Tenant has its own (Answered is for one policy only)", set.field)
			}
		}
		return nil
	}
	if cfg.Judge == nil {
		return errors.New("resolver: Config.Judge is nil")
	}
	if cfg.Learner == nil {
		return errors.New("resolver: Config.Learner is nil")
	}
	if cfg.Origins == nil && !cfg.Upstream.IsValid() {
		return errors.New("resolver: neither Config.Origins nor Config.Upstream is set")
	}
	return nil
}

// Drop forgets t's table of learned addresses without calling its Learner
// (its datapath is gone or replaced): its pending expiries are discarded.
// It returns once no call to t.Learner is under way; a query routed to t
// before Drop that has yet to learn is answered SERVFAIL. Drop t once Route
// no longer returns it: a query Route gives t afterwards starts a new table,
// as for a datapath replaced behind the same Learner. Dropping a tenant
// that has no table, or before Serve, does nothing.
func (r *Resolver) Drop(t *Tenant) {
	if tables := r.tablesNow(); tables != nil {
		tables.drop(t)
	}
}

// tablesNow returns the tenants' tables, nil before Serve.
func (r *Resolver) tablesNow() *tables {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tables
}

// forgetFailed reports a Forget error as an event without a name: the
// addresses stay allowed, which the user should hear about.
func (r *Resolver) forgetFailed(t *Tenant, n int, err error) {
	r.event(Event{Time: time.Now(), Err: fmt.Errorf("forget %d expired addresses: %w", n, err), Audit: t.Audit, Tenant: t.Name})
}

func (r *Resolver) event(e Event) {
	if r.cfg.Event != nil {
		r.cfg.Event(e)
	}
}
