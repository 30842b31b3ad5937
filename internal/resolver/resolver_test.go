package resolver

import (
	"errors"
	"maps"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestAllowedNameAnsweredAndLearned(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		for _, family := range []string{"v4", "v6"} {
			t.Run(network+"/"+family, func(t *testing.T) {
				f := start(t, Config{})
				v4, v6 := f.r.Addrs()
				at := map[string]netip.AddrPort{"v4": v4, "v6": v6}[family]
				m, client := query(t, network, at, "Allowed.Test.", dns.TypeA)

				if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "192.0.2.1" {
					t.Fatalf("answer:\n%v", m)
				}
				want := []learnCall{{addrs("192.0.2.1"), "allowed.test"}}
				if got := f.l.calls(); !slices.EqualFunc(got, want, sameCall) {
					t.Errorf("learned %v, want %v", got, want)
				}
				if got, want := f.org.calls(), []string{network + " " + client.String()}; !slices.Equal(got, want) {
					t.Errorf("origins asked %v, want %v", got, want)
				}
				// Forwarded over the transport the client used.
				if got, want := f.up.saw(), []string{network + " allowed.test. A"}; !slices.Equal(got, want) {
					t.Errorf("upstream saw %v, want %v", got, want)
				}
				ev := f.ev.wait(1)
				if len(ev) != 1 {
					t.Fatalf("events %v, want one", ev)
				}
				e := ev[0]
				if e.Name != "allowed.test" || e.QType != dns.TypeA || e.Action != 1 || e.Pattern != "allowed.test" ||
					e.Rule != 7 || e.Server != f.up.addr || e.Err != nil || e.Audit || e.Time.IsZero() {
					t.Errorf("event %+v", e)
				}
			})
		}
	}
}

func sameCall(a, b learnCall) bool { return a.pattern == b.pattern && slices.Equal(a.addrs, b.addrs) }

func TestBlockedNameNXDOMAINNotForwarded(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			f := start(t, Config{})
			v4, _ := f.r.Addrs()
			m, _ := query(t, network, v4, "other.test.", dns.TypeA)

			// What stub resolvers take as final: NXDOMAIN, authoritative,
			// recursion available, the question echoed.
			if m.Rcode != dns.RcodeNameError || !m.Authoritative || !m.RecursionAvailable || !m.Response ||
				len(m.Question) != 1 || m.Question[0].Name != "other.test." || len(m.Answer) != 0 {
				t.Errorf("answer:\n%v", m)
			}
			if n := f.up.queries.Load(); n != 0 {
				t.Errorf("upstream got %d queries", n)
			}
			if got := f.l.calls(); len(got) != 0 {
				t.Errorf("learned %v", got)
			}
			ev := f.ev.wait(1)
			if len(ev) != 1 || ev[0].Name != "other.test" || ev[0].Action != 0 || ev[0].Err != nil || ev[0].Server != f.up.addr {
				t.Errorf("events %+v", ev)
			}
		})
	}
}

func TestCNAMEChainFollowedUnrelatedIgnored(t *testing.T) {
	f := start(t, Config{Judge: judge(map[string]string{"www.cname.test": "*.cname.test", "loop.test": "loop.test"})})
	v4, _ := f.r.Addrs()
	m, _ := query(t, "udp", v4, "www.cname.test.", dns.TypeA)
	if len(m.Answer) != len(zone["www.cname.test. A"]) {
		t.Errorf("the client got %d records, want the whole answer:\n%v", len(m.Answer), m)
	}
	want := []learnCall{{addrs("192.0.2.10", "192.0.2.11"), "*.cname.test"}}
	if got := f.l.calls(); !slices.EqualFunc(got, want, sameCall) {
		t.Errorf("learned %v, want %v", got, want)
	}

	// A CNAME loop ends, and what it reaches counts.
	query(t, "udp", v4, "loop.test.", dns.TypeA)
	if got := f.l.calls(); len(got) != 2 || !sameCall(got[1], learnCall{addrs("192.0.2.6"), "loop.test"}) {
		t.Errorf("learned %v", got)
	}
}

func TestAAAA(t *testing.T) {
	f := start(t, Config{Judge: judge(map[string]string{"v6.test": "v6.test"})})
	_, v6 := f.r.Addrs()
	m, _ := query(t, "udp", v6, "v6.test.", dns.TypeAAAA)
	if len(m.Answer) != 2 {
		t.Fatalf("answer:\n%v", m)
	}
	// The mapped address is learned as the IPv4 address the datapath
	// judges it as.
	want := []learnCall{{addrs("2001:db8::1", "192.0.2.5"), "v6.test"}}
	if got := f.l.calls(); !slices.EqualFunc(got, want, sameCall) {
		t.Errorf("learned %v, want %v", got, want)
	}
}

func TestUpstreamOverridesOrigin(t *testing.T) {
	up := startUpstream(t)
	// The origin recorded is nowhere; Upstream wins.
	rec := &answers{}
	f := start(t, Config{Upstream: up.addr, Origins: &origins{server: netip.MustParseAddrPort("192.0.2.53:53")}, Answered: rec.add})
	v4, _ := f.r.Addrs()
	m, _ := query(t, "tcp", v4, "allowed.test.", dns.TypeA)
	if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
		t.Fatalf("answer:\n%v", m)
	}
	if up.queries.Load() != 1 || f.up.queries.Load() != 0 {
		t.Errorf("upstream got %d queries, the origin %d", up.queries.Load(), f.up.queries.Load())
	}
	if ev := f.ev.wait(1); len(ev) != 1 || ev[0].Server != up.addr {
		t.Errorf("events %+v", ev)
	}
	// Answered names the server the client asked, not the upstream.
	if got := rec.byName()["allowed.test"]; got.Asked != netip.MustParseAddrPort("192.0.2.53:53") || !got.TCP {
		t.Errorf("answered %+v, want it asked of 192.0.2.53:53 over TCP", got)
	}
}

func TestNoOriginSERVFAIL(t *testing.T) {
	f := start(t, Config{Origins: &origins{}})
	v4, _ := f.r.Addrs()
	m, _ := query(t, "udp", v4, "allowed.test.", dns.TypeA)
	if m.Rcode != dns.RcodeServerFailure || len(m.Question) != 1 {
		t.Errorf("answer:\n%v", m)
	}
	if f.up.queries.Load() != 0 || len(f.l.calls()) != 0 {
		t.Errorf("upstream got %d queries, learner %v", f.up.queries.Load(), f.l.calls())
	}
	ev := f.ev.wait(1)
	if len(ev) != 1 || ev[0].Err == nil || !strings.Contains(ev[0].Err.Error(), "no origin") || ev[0].Action != 0 {
		t.Errorf("events %+v", ev)
	}
}

func TestOriginIsTheResolverSERVFAIL(t *testing.T) {
	org := new(origins)
	f := start(t, Config{Origins: org})
	v4, _ := f.r.Addrs()
	org.mu.Lock()
	org.server = v4 // known only once the resolver listens
	org.mu.Unlock()
	m, _ := query(t, "udp", v4, "allowed.test.", dns.TypeA)
	if m.Rcode != dns.RcodeServerFailure {
		t.Errorf("answer:\n%v", m)
	}
}

func TestLearnErrorSERVFAIL(t *testing.T) {
	l := &learner{err: errors.New("map full")}
	f := start(t, Config{Learner: l})
	v4, _ := f.r.Addrs()
	m, _ := query(t, "udp", v4, "allowed.test.", dns.TypeA)
	// Fail closed: the client must not get an address it cannot reach.
	if m.Rcode != dns.RcodeServerFailure || len(m.Answer) != 0 {
		t.Errorf("answer:\n%v", m)
	}
	ev := f.ev.wait(1)
	if len(ev) != 1 || ev[0].Err == nil || !strings.Contains(ev[0].Err.Error(), "map full") || ev[0].Action != 0 {
		t.Errorf("events %+v", ev)
	}
}

func TestAnswerWaitsForLearn(t *testing.T) {
	l := &learner{entered: make(chan struct{}), release: make(chan struct{})}
	f := start(t, Config{Learner: l})
	v4, _ := f.r.Addrs()
	type result struct {
		m   *dns.Msg
		err error
	}
	got := make(chan result, 1)
	go func() {
		m, _, err := ask("udp", v4, "allowed.test.", dns.TypeA)
		got <- result{m, err}
	}()
	<-l.entered
	// Learn is running and blocked: the client must not have an answer.
	// Nothing could show its absence but a wait; a late answer would be a
	// failure of the same kind, so this wait errs only towards passing.
	select {
	case r := <-got:
		t.Fatalf("the client got an answer while Learn ran: %v %v", r.m, r.err)
	case <-time.After(200 * time.Millisecond):
	}
	close(l.release)
	r := <-got
	if r.err != nil || r.m.Rcode != dns.RcodeSuccess || len(r.m.Answer) != 1 {
		t.Fatalf("answer after Learn: %v %v", r.m, r.err)
	}
}

func TestAuditResolvesAndSaysWhatWouldHappen(t *testing.T) {
	f := start(t, Config{Audit: true, Judge: func(q string) Verdict {
		if q == "allowed.test" {
			return Verdict{Resolve: true, WouldResolve: true, Pattern: "allowed.test", Rule: 3}
		}
		return Verdict{Resolve: true, WouldResolve: false}
	}})
	v4, _ := f.r.Addrs()
	if m, _ := query(t, "udp", v4, "other.test.", dns.TypeA); m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
		t.Errorf("audit answer:\n%v", m)
	}
	if m, _ := query(t, "udp", v4, "allowed.test.", dns.TypeA); m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
		t.Errorf("audit answer:\n%v", m)
	}
	ev := f.ev.wait(2)
	if len(ev) != 2 || !ev[0].Audit || ev[0].Action != 0 || !ev[1].Audit || ev[1].Action != 1 || ev[1].Rule != 3 {
		t.Errorf("events %+v", ev)
	}
	if got := f.l.calls(); len(got) != 1 || got[0].pattern != "allowed.test" {
		t.Errorf("learned %v", got)
	}
}

func TestNoPatternNotLearned(t *testing.T) {
	// Default allow, no pattern: the name resolves, nothing is learned.
	f := start(t, Config{Judge: func(string) Verdict { return Verdict{Resolve: true} }})
	v4, _ := f.r.Addrs()
	if m, _ := query(t, "udp", v4, "other.test.", dns.TypeA); len(m.Answer) != 1 {
		t.Errorf("answer:\n%v", m)
	}
	// The upstream's own NXDOMAIN passes through.
	if m, _ := query(t, "udp", v4, "missing.test.", dns.TypeA); m.Rcode != dns.RcodeNameError {
		t.Errorf("answer:\n%v", m)
	}
	if got := f.l.calls(); len(got) != 0 {
		t.Errorf("learned %v", got)
	}
	if ev := f.ev.wait(2); len(ev) != 2 || ev[0].Action != 1 || ev[1].Action != 1 {
		t.Errorf("events %+v", ev)
	}
}

func TestExpiryThroughTheTimer(t *testing.T) {
	// Real time, short: the address of a TTL 0 answer lives MinTTL, and
	// the loop's own timer forgets it.
	l := &learner{forgot: make(chan []netip.Addr, 1)}
	f := start(t, Config{Learner: l, MinTTL: 100 * time.Millisecond, Judge: judge(map[string]string{"zero.test": "zero.test"})})
	v4, _ := f.r.Addrs()
	begin := time.Now()
	query(t, "udp", v4, "zero.test.", dns.TypeA)
	select {
	case got := <-l.forgot:
		if elapsed := time.Since(begin); elapsed < 100*time.Millisecond {
			t.Errorf("forgotten after %v, before MinTTL", elapsed)
		}
		if !slices.Equal(got, addrs("192.0.2.21")) {
			t.Errorf("forgot %v", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("never forgotten")
	}
}

func TestTTLFloorThroughTheResolver(t *testing.T) {
	// The fake clock: a 1 s record with a 2 s floor is still held at
	// 1.999 s and forgotten at 2 s.
	clk := newClock()
	l := &learner{forgot: make(chan []netip.Addr, 1)}
	f := start(t, Config{Learner: l, MinTTL: 2 * time.Second, Judge: judge(map[string]string{"short.test": "short.test"})},
		func(r *Resolver) { r.now = clk.Now })
	v4, _ := f.r.Addrs()
	query(t, "udp", v4, "short.test.", dns.TypeA)

	clk.Advance(1999 * time.Millisecond)
	f.r.table.expire()
	if got := l.forgotten(); len(got) != 0 {
		t.Fatalf("forgot %v before the floor", got)
	}
	clk.Advance(time.Millisecond)
	f.r.table.kick()
	select {
	case got := <-l.forgot:
		if !slices.Equal(got, addrs("192.0.2.20")) {
			t.Errorf("forgot %v", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not forgotten at the floor")
	}
}

func TestListen(t *testing.T) {
	r, err := Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	v4, v6 := r.Addrs()
	if v4.Addr() != loopback4 || v6.Addr() != loopback6 || v4.Port() == 0 || v6.Port() == 0 {
		t.Errorf("Addrs() = %v, %v", v4, v6)
	}
	if v4.Port() != v6.Port() {
		t.Logf("one port per family: %v, %v", v4, v6)
	}
}

func TestServeChecksConfig(t *testing.T) {
	r, err := Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, cfg := range []Config{
		{Learner: new(learner), Origins: new(origins)},
		{Judge: judge(nil), Origins: new(origins)},
		{Judge: judge(nil), Learner: new(learner)},
	} {
		if err := r.Serve(cfg); err == nil {
			t.Errorf("Serve(%+v) = nil", cfg)
		}
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	for _, name := range []string{"served", "not served", "exchange in flight"} {
		t.Run(name, func(t *testing.T) {
			r, err := Listen()
			if err != nil {
				t.Fatal(err)
			}
			up := startUpstream(t)
			if name != "not served" {
				err := r.Serve(Config{Judge: judge(map[string]string{"allowed.test": "allowed.test", "silent.test": "silent.test"}),
					Learner: new(learner), Upstream: up.addr})
				if err != nil {
					t.Fatal(err)
				}
				v4, v6 := r.Addrs()
				query(t, "udp", v4, "allowed.test.", dns.TypeA)
				query(t, "tcp", v6, "allowed.test.", dns.TypeA)
			}
			done := make(chan struct{})
			if name == "exchange in flight" {
				// The upstream never answers; Close must cut the
				// exchange instead of waiting out its timeout.
				v4, _ := r.Addrs()
				go func() {
					defer close(done)
					ask("udp", v4, "silent.test.", dns.TypeA)
				}()
				for up.queries.Load() < 3 {
					runtime.Gosched()
				}
			} else {
				close(done)
			}
			begin := time.Now()
			if err := r.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if d := time.Since(begin); d > time.Second {
				t.Errorf("Close took %v", d)
			}
			<-done
			up.close()
			if s := leaked(); s != "" {
				t.Errorf("goroutines left after Close:\n%s", s)
			}
			if err := r.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			if err := r.Serve(Config{Judge: judge(nil), Learner: new(learner), Upstream: up.addr}); err == nil {
				t.Error("Serve after Close = nil")
			}
		})
	}
}

// leaked returns the stacks of the goroutines left in the resolver's code or
// in a miekg server; the test's upstream must be closed first. A goroutine
// that has called wg.Done is still on its way out when Close returns, so
// leaked looks again for a while (as goleak does) before it reports one.
func leaked() string {
	var s string
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if s = stacks(); s == "" {
			return ""
		}
	}
	return s
}

func stacks() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "internal/resolver.(*") || strings.Contains(g, "miekg/dns.(*Server)") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// state is a fake datapath that keeps what is in force.
type state struct {
	mu sync.Mutex
	in map[netip.Addr]bool
}

func (s *state) Learn(addrs []netip.Addr, _ string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range addrs {
		s.in[a] = true
	}
	return nil
}

func (s *state) Forget(addrs []netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range addrs {
		delete(s.in, a)
	}
	return nil
}

func TestConcurrentQueriesKeepTableAndDatapathEqual(t *testing.T) {
	// A 1 ms floor on the real clock: addresses expire while other
	// queries learn them again, under several names at once.
	st := &state{in: map[netip.Addr]bool{}}
	names := []string{"allowed.test", "two.test", "shared.test", "www.cname.test"}
	allow := map[string]string{}
	for _, n := range names {
		allow[n] = n
	}
	f := start(t, Config{Learner: st, MinTTL: time.Millisecond, MaxPerName: 1, Judge: judge(allow)})
	v4, v6 := f.r.Addrs()
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				at, network := v4, "udp"
				if (g+i)%3 == 0 {
					at, network = v6, "tcp"
				}
				m, _, err := ask(network, at, names[(g+i)%len(names)]+".", dns.TypeA)
				if err != nil || m.Rcode != dns.RcodeSuccess {
					t.Errorf("query: %v %v", m, err)
					return
				}
			}
		}()
	}
	wg.Wait()

	// Quiescent (no round, no Learn): the datapath holds exactly what the
	// table holds.
	tb := f.r.table
	tb.forgetMu.Lock()
	tb.mu.Lock()
	held := map[netip.Addr]bool{}
	for a := range tb.holders {
		held[a] = true
	}
	tb.mu.Unlock()
	tb.forgetMu.Unlock()
	st.mu.Lock()
	defer st.mu.Unlock()
	if !maps.Equal(held, st.in) {
		t.Errorf("table holds %v, datapath %v", held, st.in)
	}
}

func TestQueryBeforeServeWaits(t *testing.T) {
	// The BPF programs redirect to the resolver as soon as they are loaded,
	// which is after Listen and before Serve.
	up := startUpstream(t)
	r, err := Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	v4, _ := r.Addrs()
	conn, err := dns.Dial("udp", v4.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := new(dns.Msg)
	req.SetQuestion("allowed.test.", dns.TypeA)
	if err := conn.WriteMsg(req); err != nil {
		t.Fatal(err)
	}
	if err := r.Serve(Config{Judge: judge(map[string]string{"allowed.test": "allowed.test"}), Learner: new(learner), Upstream: up.addr}); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	m, err := conn.ReadMsg()
	if err != nil || m.Id != req.Id || len(m.Answer) != 1 {
		t.Fatalf("answer: %v %v", m, err)
	}
}

// TestUDPSocketsReused: queries one after another go to the upstream from one
// UDP socket (no dial per query); TCP ones each from a connection of their
// own.
func TestUDPSocketsReused(t *testing.T) {
	f := start(t, Config{})
	v4, _ := f.r.Addrs()
	for _, network := range []string{"udp", "tcp"} {
		for range 3 {
			query(t, network, v4, "allowed.test.", dns.TypeA)
		}
	}
	var udp, tcp []string
	for _, s := range f.up.sources() {
		if strings.HasPrefix(s, "udp ") {
			udp = append(udp, s)
		} else {
			tcp = append(tcp, s)
		}
	}
	if len(udp) != 3 || udp[0] != udp[1] || udp[1] != udp[2] {
		t.Errorf("UDP queries came from %v, want one socket three times", udp)
	}
	if len(tcp) != 3 || tcp[0] == tcp[1] || tcp[1] == tcp[2] {
		t.Errorf("TCP queries came from %v, want three connections", tcp)
	}
}

// TestAnsweredEveryName: Answered hears every answer forwarded, of names no
// pattern covers too, with the asked name's addresses (none for an answer
// without), the server the client asked and its transport, before the
// client has it; the learner only those of patterns.
func TestAnsweredEveryName(t *testing.T) {
	rec := &answers{}
	f := start(t, Config{Audit: true, Judge: judge(map[string]string{"allowed.test": "allowed.test"}), Answered: rec.add})
	v4, _ := f.r.Addrs()
	query(t, "udp", v4, "www.cname.test.", dns.TypeA)
	query(t, "tcp", v4, "allowed.test.", dns.TypeA)
	query(t, "udp", v4, "nothing.test.", dns.TypeA)
	want := map[string]Answer{
		"www.cname.test": {Name: "www.cname.test", Addrs: addrs("192.0.2.10", "192.0.2.11"), Asked: f.up.addr},
		"allowed.test":   {Name: "allowed.test", Addrs: addrs("192.0.2.1"), Asked: f.up.addr, TCP: true},
		"nothing.test":   {Name: "nothing.test", Asked: f.up.addr},
	}
	if got := rec.byName(); !maps.EqualFunc(got, want, sameAnswer) {
		t.Errorf("answered %v, want %v", got, want)
	}
	if got := f.l.calls(); len(got) != 1 || got[0].pattern != "allowed.test" {
		t.Errorf("learned %v, want allowed.test's only", got)
	}
}

// answers records what Answered hears.
type answers struct {
	mu   sync.Mutex
	list []Answer
}

func (a *answers) add(ans Answer) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.list = append(a.list, ans)
}

func (a *answers) byName() map[string]Answer {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := map[string]Answer{}
	for _, ans := range a.list {
		m[ans.Name] = ans
	}
	return m
}

func sameAnswer(a, b Answer) bool {
	return a.Name == b.Name && slices.Equal(a.Addrs, b.Addrs) && a.Asked == b.Asked && a.TCP == b.TCP
}

// TestAddressesFromTheWire: an answer read off the wire gives the asked
// name's addresses, CNAMEs followed, and nothing for what is not an answer.
func TestAddressesFromTheWire(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("WWW.Example.Test.", dns.TypeA)
	m.Response = true
	m.Answer = []dns.RR{
		mustRR(t, "www.example.test. 60 IN CNAME edge.cdn.test."),
		mustRR(t, "edge.cdn.test. 60 IN A 192.0.2.7"),
		mustRR(t, "other.test. 60 IN A 192.0.2.66"),
	}
	wire, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	name, got, ok := Addresses(wire)
	if !ok || name != "www.example.test" || !slices.Equal(got, addrs("192.0.2.7")) {
		t.Errorf("Addresses = %q %v %v, want www.example.test [192.0.2.7] true", name, got, ok)
	}
	m.Response = false
	query, _ := m.Pack()
	for _, bad := range [][]byte{query, wire[:20], nil} {
		if _, _, ok := Addresses(bad); ok {
			t.Errorf("Addresses(%x) is an answer", bad)
		}
	}
}

func mustRR(t *testing.T, s string) dns.RR {
	t.Helper()
	rr, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return rr
}
