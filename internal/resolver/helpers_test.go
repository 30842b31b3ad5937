package resolver

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// zone is the test upstream's data: the answer section for each name and
// type, in presentation format. Names are under .test, addresses are
// documentation ones.
var zone = map[string][]string{
	"allowed.test. A": {"allowed.test. 300 IN A 192.0.2.1"},
	"two.test. A":     {"two.test. 300 IN A 192.0.2.2", "two.test. 30 IN A 192.0.2.3"},
	"other.test. A":   {"other.test. 300 IN A 192.0.2.4"},
	"shared.test. A":  {"shared.test. 300 IN A 192.0.2.1", "shared.test. 300 IN A 192.0.2.2"},
	"www.cname.test. A": {
		// Out of order on purpose, and with records for names the chain
		// never reaches.
		"edge.cdn.test. 60 IN CNAME e1.cdn.test.",
		"www.cname.test. 60 IN CNAME edge.cdn.test.",
		"unrelated.test. 60 IN A 192.0.2.99",
		"E1.cdn.TEST. 60 IN A 192.0.2.10",
		"e1.cdn.test. 60 IN A 192.0.2.11",
		"e2.cdn.test. 60 IN A 192.0.2.98",
		"unrelated.test. 60 IN CNAME e3.cdn.test.",
		"e3.cdn.test. 60 IN A 192.0.2.97",
	},
	"v6.test. AAAA":  {"v6.test. 300 IN AAAA 2001:db8::1", "v6.test. 300 IN AAAA ::ffff:192.0.2.5"},
	"loop.test. A":   {"loop.test. 60 IN CNAME loop2.test.", "loop2.test. 60 IN CNAME loop.test.", "loop2.test. 60 IN A 192.0.2.6"},
	"short.test. A":  {"short.test. 1 IN A 192.0.2.20"},
	"zero.test. A":   {"zero.test. 0 IN A 192.0.2.21"},
	"bench.test. A":  {"bench.test. 300 IN A 192.0.2.30"},
	"silent.test. A": nil, // no answer at all: the upstream times out
}

// upstream is an in-process DNS server on 127.0.0.1, UDP and TCP on one port.
type upstream struct {
	addr    netip.AddrPort
	queries atomic.Int64
	mu      sync.Mutex
	seen    []string // "udp allowed.test. A"
	from    []string // each query's source, "udp 127.0.0.1:40000"
	// close stops the servers and returns when their goroutines are gone.
	close func()
}

func startUpstream(t testing.TB) *upstream {
	t.Helper()
	u := new(upstream)
	var pc net.PacketConn
	var l net.Listener
	for range 8 {
		var err error
		pc, l, err = bindPair(loopback4, 0)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatal(err)
		}
	}
	if pc == nil {
		t.Fatal("no port free for the upstream on UDP and TCP")
	}
	u.addr = netip.AddrPortFrom(loopback4, uint16(pc.LocalAddr().(*net.UDPAddr).Port))
	var wg sync.WaitGroup
	servers := []*dns.Server{
		{PacketConn: pc, Handler: u},
		{Listener: l, Handler: u},
	}
	for _, s := range servers {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.ActivateAndServe()
		}()
		<-started
	}
	u.close = sync.OnceFunc(func() {
		for _, s := range servers {
			s.Shutdown()
		}
		wg.Wait()
	})
	t.Cleanup(u.close)
	return u
}

func (u *upstream) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	u.queries.Add(1)
	q := req.Question[0]
	key := strings.ToLower(q.Name) + " " + dns.TypeToString[q.Qtype]
	u.mu.Lock()
	u.seen = append(u.seen, w.RemoteAddr().Network()+" "+key)
	u.from = append(u.from, w.RemoteAddr().Network()+" "+w.RemoteAddr().String())
	u.mu.Unlock()
	rrs, ok := zone[key]
	if ok && rrs == nil {
		return
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	if !ok {
		m.Rcode = dns.RcodeNameError
	}
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		m.Answer = append(m.Answer, rr)
	}
	w.WriteMsg(m)
}

func (u *upstream) sources() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.from)
}

func (u *upstream) saw() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.seen)
}

// origins is a fake datapath's record of the servers clients asked.
type origins struct {
	server netip.AddrPort // zero: nothing recorded
	mu     sync.Mutex
	asked  []string // "tcp 127.0.0.1:40000"
}

func (o *origins) Origin(tcp bool, client netip.AddrPort) (netip.AddrPort, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := "udp"
	if tcp {
		n = "tcp"
	}
	o.asked = append(o.asked, n+" "+client.String())
	return o.server, o.server.IsValid()
}

func (o *origins) calls() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.asked)
}

// learner is a fake datapath that records Learn and Forget calls. Learn
// signals entered and then waits for release when release is set; Forget
// sends each batch to forgot when it is set.
type learner struct {
	mu      sync.Mutex
	learned []learnCall
	forgets [][]netip.Addr
	err     error

	entered chan struct{}
	release chan struct{}
	forgot  chan []netip.Addr
}

type learnCall struct {
	addrs   []netip.Addr
	pattern string
}

func (l *learner) Learn(addrs []netip.Addr, pattern string) error {
	if l.entered != nil {
		l.entered <- struct{}{}
	}
	if l.release != nil {
		<-l.release
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.learned = append(l.learned, learnCall{slices.Clone(addrs), pattern})
	return l.err
}

func (l *learner) Forget(addrs []netip.Addr) error {
	l.mu.Lock()
	l.forgets = append(l.forgets, slices.Clone(addrs))
	l.mu.Unlock()
	if l.forgot != nil {
		l.forgot <- slices.Clone(addrs)
	}
	return nil
}

func (l *learner) calls() []learnCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.learned)
}

func (l *learner) forgotten() []netip.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	var all []netip.Addr
	for _, f := range l.forgets {
		all = append(all, f...)
	}
	slices.SortFunc(all, netip.Addr.Compare)
	return all
}

// events collects the resolver's events. They come after the answer, so a
// test waits for them.
type events struct {
	mu   sync.Mutex
	all  []Event
	more chan struct{} // closed and remade on every event
}

func newEvents() *events { return &events{more: make(chan struct{})} }

func (e *events) add(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, ev)
	close(e.more)
	e.more = make(chan struct{})
}

// wait returns the events once there are n of them (or after 10 s).
func (e *events) wait(n int) []Event {
	timeout := time.After(10 * time.Second)
	for {
		e.mu.Lock()
		all, more := slices.Clone(e.all), e.more
		e.mu.Unlock()
		if len(all) >= n {
			return all
		}
		select {
		case <-more:
		case <-timeout:
			return all
		}
	}
}

// judge lets the names in allow resolve under the pattern given, and no
// other.
func judge(allow map[string]string) func(string) Verdict {
	return func(q string) Verdict {
		p, ok := allow[q]
		if !ok {
			return Verdict{}
		}
		return Verdict{Resolve: true, Pattern: p, Rule: 7}
	}
}

// fixture is a resolver in front of a test upstream.
type fixture struct {
	r   *Resolver
	up  *upstream
	org *origins
	l   *learner
	ev  *events
}

// start serves cfg; the fixture's fakes fill the fields cfg leaves nil.
func start(t testing.TB, cfg Config, opts ...func(*Resolver)) *fixture {
	t.Helper()
	f := &fixture{up: startUpstream(t), ev: newEvents()}
	if cfg.Learner == nil {
		f.l = new(learner)
		cfg.Learner = f.l
	}
	if cfg.Origins == nil {
		f.org = &origins{server: f.up.addr}
		cfg.Origins = f.org
	}
	if cfg.Judge == nil {
		cfg.Judge = judge(map[string]string{"allowed.test": "allowed.test", "two.test": "two.test"})
	}
	if cfg.Event == nil {
		cfg.Event = f.ev.add
	}
	r, err := Listen()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	for _, o := range opts {
		o(r)
	}
	if err := r.Serve(cfg); err != nil {
		t.Fatal(err)
	}
	f.r = r
	return f
}

// query asks server for name and returns the answer and the client's own
// address (what the datapath would have recorded the origin under).
func query(t testing.TB, network string, server netip.AddrPort, name string, qtype uint16) (*dns.Msg, netip.AddrPort) {
	t.Helper()
	m, client, err := ask(network, server, name, qtype)
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return m, client
}

func ask(network string, server netip.AddrPort, name string, qtype uint16) (*dns.Msg, netip.AddrPort, error) {
	c := &dns.Client{Net: network, Timeout: 10 * time.Second}
	conn, err := c.Dial(server.String())
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	defer conn.Close()
	client, _ := addrPort(conn.LocalAddr())
	req := new(dns.Msg)
	req.SetQuestion(name, qtype)
	m, _, err := c.ExchangeWithConn(req, conn)
	return m, client, err
}

func addrs(s ...string) []netip.Addr {
	var a []netip.Addr
	for _, x := range s {
		a = append(a, netip.MustParseAddr(x))
	}
	return a
}
