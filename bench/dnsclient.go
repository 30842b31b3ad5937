package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// The DNS client is this program re-executed with dnsClientEnv set to its
// job, cloned straight into the cgroup under test, as the sender is. It asks
// for A records on connected UDP sockets, as a stub resolver does; under
// cgwall the connect4 hook sends each socket's queries to cgwall's resolver,
// and answers seem to come from the server asked.

const dnsClientEnv = "CGWALL_BENCH_DNS"

// dnsJob is what one client asks.
type dnsJob struct {
	Server   netip.AddrPort
	Names    int           // the names asked in turn: dnsName(First), dnsName(First+1), … modulo Names
	First    int           //
	Lookups  int           // latency: this many lookups, one after another, on one socket
	Clients  int           // throughput: this many sockets at once, each one lookup at a time
	Duration time.Duration // throughput: for this long
	Timeout  time.Duration // a lookup not answered by then failed
	Probe    string        // a name asked once before the others, whose RCODE the result gives
}

type dnsResult struct {
	Answered int       `json:"answered"`
	Failed   int       `json:"failed"` // timeouts, errors, and answers without the name's address
	LastErr  string    `json:"last_err,omitempty"`
	Seconds  float64   `json:"seconds"`
	Us       []float64 `json:"us"` // each answered lookup's time, µs
	Probe    string    `json:"probe_rcode"`
}

// dnsName is the i-th name of the zone, and dnsAddr its one address.
func dnsName(i int) string { return fmt.Sprintf("h%d.bench.test", i) }

func dnsAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, byte(128 + i>>8), byte(i)})
}

// dnsMaxNames is how many names dnsAddr can tell apart (198.18.128.0/17).
const dnsMaxNames = 1 << 15

func dnsClientMain(job string) error {
	var j dnsJob
	if err := json.Unmarshal([]byte(job), &j); err != nil {
		return err
	}
	var res dnsResult
	if j.Probe != "" {
		c, err := newDNSConn(j)
		if err != nil {
			return err
		}
		rcode, _, err := c.lookup(j.Probe)
		c.Close()
		if err != nil {
			return fmt.Errorf("probe %s: %w", j.Probe, err)
		}
		res.Probe = rcode.String()
	}
	start := time.Now()
	if j.Lookups > 0 {
		c, err := newDNSConn(j)
		if err != nil {
			return err
		}
		defer c.Close()
		for i := range j.Lookups {
			c.ask(j.First+i, &res)
		}
	} else {
		var mu sync.Mutex
		var wg sync.WaitGroup
		end := start.Add(j.Duration)
		for k := range j.Clients {
			c, err := newDNSConn(j)
			if err != nil {
				return err
			}
			wg.Go(func() {
				defer c.Close()
				var mine dnsResult
				for i := j.First + k; time.Now().Before(end); i += j.Clients {
					c.ask(i, &mine)
				}
				mu.Lock()
				res.Answered, res.Failed = res.Answered+mine.Answered, res.Failed+mine.Failed
				res.Us = append(res.Us, mine.Us...)
				if mine.LastErr != "" {
					res.LastErr = mine.LastErr
				}
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	res.Seconds = time.Since(start).Seconds()
	return json.NewEncoder(os.Stdout).Encode(res)
}

// dnsConn is one connected UDP socket to the server and its buffers.
type dnsConn struct {
	*net.UDPConn
	job dnsJob
	buf []byte
	rng *rand.Rand
}

func newDNSConn(j dnsJob) (*dnsConn, error) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(j.Server))
	if err != nil {
		return nil, err
	}
	return &dnsConn{c, j, make([]byte, 1500), rand.New(rand.NewPCG(rand.Uint64(), 0))}, nil
}

// ask looks up the i-th name (modulo the names) and adds the outcome to res.
func (c *dnsConn) ask(i int, res *dnsResult) {
	i %= c.job.Names
	t := time.Now()
	rcode, addr, err := c.lookup(dnsName(i))
	us := float64(time.Since(t).Nanoseconds()) / 1000
	switch {
	case err == nil && rcode != dnsmessage.RCodeSuccess:
		err = fmt.Errorf("%s: %s", dnsName(i), rcode)
	case err == nil && addr != dnsAddr(i):
		err = fmt.Errorf("%s: answered %v, want %v", dnsName(i), addr, dnsAddr(i))
	}
	if err != nil {
		res.Failed++
		res.LastErr = err.Error()
		return
	}
	res.Answered++
	res.Us = append(res.Us, us)
}

// lookup asks for name's A record and returns the answer's RCODE and its
// first address. An answer to another question (a late one, after a
// timeout) is read past.
func (c *dnsConn) lookup(name string) (dnsmessage.RCode, netip.Addr, error) {
	id := uint16(c.rng.Uint32())
	q, err := dnsQuery(id, name)
	if err != nil {
		return 0, netip.Addr{}, err
	}
	if err := c.SetDeadline(time.Now().Add(c.job.Timeout)); err != nil {
		return 0, netip.Addr{}, err
	}
	if _, err := c.Write(q); err != nil {
		return 0, netip.Addr{}, err
	}
	for {
		n, err := c.Read(c.buf)
		if err != nil {
			return 0, netip.Addr{}, err
		}
		var p dnsmessage.Parser
		h, err := p.Start(c.buf[:n])
		if err != nil || h.ID != id || !h.Response {
			continue
		}
		if err := p.SkipAllQuestions(); err != nil {
			return 0, netip.Addr{}, err
		}
		for {
			ah, err := p.AnswerHeader()
			if errors.Is(err, dnsmessage.ErrSectionDone) {
				return h.RCode, netip.Addr{}, nil
			}
			if err != nil {
				return 0, netip.Addr{}, err
			}
			if ah.Type != dnsmessage.TypeA {
				if err := p.SkipAnswer(); err != nil {
					return 0, netip.Addr{}, err
				}
				continue
			}
			a, err := p.AResource()
			if err != nil {
				return 0, netip.Addr{}, err
			}
			return h.RCode, netip.AddrFrom4(a.A), nil
		}
	}
}

// dnsQuery is a recursive query for name's A record.
func dnsQuery(id uint16, name string) ([]byte, error) {
	n, err := dnsmessage.NewName(name + ".")
	if err != nil {
		return nil, err
	}
	b := dnsmessage.NewBuilder(make([]byte, 0, 64), dnsmessage.Header{ID: id, RecursionDesired: true})
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(dnsmessage.Question{Name: n, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}); err != nil {
		return nil, err
	}
	return b.Finish()
}
