package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cgwall/cgwall/internal/testutil"
)

// Name rules (issue #11): what cgwall's resolver adds to a lookup, and how
// many lookups a second it sustains. dnsmasq answers the names of a zone on
// port 53 of a loopback address of the harness's own; a client (dnsclient.go)
// in a cgroup of the harness's asks it, with nothing attached ("dnsmasq
// directly"), or under 'cgwall run --default block --allow *.bench.test',
// whose hooks send each query to cgwall's resolver, which forwards it to
// dnsmasq from outside the cgroup and puts the answer's address in the rule
// maps before it lets the answer go.

// dnsSample is one measurement of one variant in one round.
type dnsSample struct {
	Variant  string  `json:"variant"` // vDirect or vCgwall
	Kind     string  `json:"kind"`    // dnsLatency or dnsThroughput
	Round    int     `json:"round"`
	Clients  int     `json:"clients"`
	Answered int     `json:"answered"`
	Failed   int     `json:"failed"`
	LastErr  string  `json:"last_err,omitempty"`
	PerSec   float64 `json:"per_second"`
	P50Us    float64 `json:"p50_us"`
	P90Us    float64 `json:"p90_us"`
	P99Us    float64 `json:"p99_us"`
	MeanUs   float64 `json:"mean_us"`
	Quiet    float64 `json:"quiet_wait_seconds"`
}

const (
	vDirect = "dnsmasq directly"
	// dnsLatency: Lookups names, one after another, each asked once, so
	// that through cgwall each answer's address is learned anew.
	dnsLatency = "latency"
	// dnsThroughput: Clients sockets at once, each asking the next name as
	// soon as its last is answered, for DNSDuration.
	dnsThroughput = "throughput"
	dnsPattern    = "*.bench.test"     // the name rule
	dnsProbe      = "probe.other.test" // in the zone, but no rule allows it: NXDOMAIN through cgwall
	dnsTimeout    = 2 * time.Second    // a lookup not answered by then failed
	dnsProbeAddr  = "198.51.100.9"     // its address
)

// The two sets of the decision cost with learned addresses (learned.go).
const (
	learnedSet  = "learned"
	learnedLike = "same hosts as rules"
)

type dnsEnv struct {
	cfg    *config
	self   string
	cg     string         // the clients' cgroup
	server netip.AddrPort // dnsmasq
}

func runDNS(ctx context.Context, cfg *config, c *cleanups, env *runEnv, res *results, log io.Writer) error {
	names := cfg.DNSLookups
	if names > dnsMaxNames {
		return fmt.Errorf("%d lookups: the zone has room for %d names", names, dnsMaxNames)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := runLearned(ctx, cfg, env.root, res, log); err != nil {
		return fmt.Errorf("learned addresses: %w", err)
	}
	// A binary given with -cgwall may be older than name rules.
	if help, err := exec.CommandContext(ctx, cfg.cgwall, "run", "--help").CombinedOutput(); err != nil || !strings.Contains(string(help), "--dns-upstream") {
		res.DNSNote = "this cgwall has no name rules ('cgwall run --help' names no --dns-upstream)"
		fmt.Fprintf(log, "dns: not measured: %s\n", res.DNSNote)
		return nil
	}
	d := &dnsEnv{cfg: cfg, self: self, cg: filepath.Join(env.root, "dns"), server: netip.AddrPortFrom(dnsListenAddr(), 53)}
	if err := os.Mkdir(d.cg, 0o755); err != nil {
		return err
	}
	if err := startDnsmasq(ctx, c, d.server.Addr(), names); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(11, 53))
	for r := range cfg.rounds {
		t := time.Now()
		variants := []string{vDirect, vCgwall}
		rng.Shuffle(len(variants), func(i, j int) { variants[i], variants[j] = variants[j], variants[i] })
		for _, v := range variants {
			ss, err := d.measure(ctx, v, r)
			if err != nil {
				return fmt.Errorf("%s: %w", v, err)
			}
			res.DNS = append(res.DNS, ss...)
		}
		fmt.Fprintf(log, "dns: round %d/%d done in %.0fs:%s\n", r+1, cfg.rounds, time.Since(t).Seconds(), dnsReview(res.DNS, r))
	}
	return nil
}

// dnsListenAddr is dnsmasq's address, named after the harness's process ID
// as everything it sets up is: 127.83.x.y.
func dnsListenAddr() netip.Addr {
	pid := os.Getpid()
	return netip.AddrFrom4([4]byte{127, 83, byte(pid >> 8), byte(pid)})
}

// startDnsmasq starts dnsmasq on port 53 of addr with the zone of n names
// (dnsName, dnsAddr) and the probe, answering from its own files only, and
// waits until it has read them.
func startDnsmasq(ctx context.Context, c *cleanups, addr netip.Addr, n int) error {
	// dnsmasq drops its privileges to nobody before it reads its files.
	dir, err := os.MkdirTemp("", "cgwall-bench-dnsmasq-")
	if err != nil {
		return err
	}
	c.add("remove "+dir, func() error { return os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	z := testutil.Zone{Hosts: make(map[string][]string, n+1), TTL: 300 * time.Second, Quiet: true}
	for i := range n {
		z.Hosts[dnsName(i)] = []string{dnsAddr(i).String()}
	}
	z.Hosts[dnsProbe] = []string{dnsProbeAddr}
	args, ready, err := z.Dnsmasq(dir, addr)
	if err != nil {
		return err
	}
	cmd := exec.Command("dnsmasq", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	wait, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	p, err := testutil.Start(wait, cmd, ready)
	if err != nil {
		return fmt.Errorf("start dnsmasq: %w", err)
	}
	c.add("stop dnsmasq", func() error { p.Kill(); return nil })
	return nil
}

// measure runs the latency and the throughput clients with one variant in
// force, and checks that the queries went where the variant sends them:
// through cgwall's resolver, a name that no rule allows is NXDOMAIN.
func (d *dnsEnv) measure(ctx context.Context, variant string, round int) (_ []dnsSample, err error) {
	quiet := waitQuiet(ctx, d.cfg.SenderCPU)
	wantProbe := "RCodeSuccess"
	if variant == vCgwall {
		wantProbe = "RCodeNameError"
		_, stop, err := startRun(ctx, d.cfg, io.Discard, "--cgroup", d.cg, "--default", "block", "--allow", dnsPattern, "--log", "none")
		if err != nil {
			return nil, err
		}
		defer func() {
			if serr := stop(); err == nil {
				err = serr
			}
		}()
	}
	var out []dnsSample
	for _, job := range []dnsJob{
		{Lookups: d.cfg.DNSLookups, Probe: dnsProbe},
		{Clients: d.cfg.DNSClients, Duration: d.cfg.DNSDuration.Duration},
	} {
		job.Server, job.Names, job.Timeout = d.server, d.cfg.DNSLookups, dnsTimeout
		var r dnsResult
		if err := runChild(ctx, d.self, d.cg, dnsClientEnv, job, time.Minute+job.Duration+time.Duration(job.Lookups)*10*time.Millisecond, &r); err != nil {
			return nil, err
		}
		if job.Probe != "" && r.Probe != wantProbe {
			return nil, fmt.Errorf("%s was answered %s, want %s: the queries did not take the way the variant sends them", dnsProbe, r.Probe, wantProbe)
		}
		s := dnsSample{Variant: variant, Kind: dnsLatency, Round: round, Clients: max(job.Clients, 1), Answered: r.Answered, Failed: r.Failed,
			LastErr: r.LastErr, PerSec: float64(r.Answered) / r.Seconds, P50Us: median(r.Us), P90Us: quantile(r.Us, 0.9), P99Us: quantile(r.Us, 0.99),
			MeanUs: mean(r.Us), Quiet: quiet}
		if job.Lookups == 0 {
			s.Kind = dnsThroughput
		} else if r.Failed > 0 {
			return nil, fmt.Errorf("%d of %d lookups failed (%s)", r.Failed, job.Lookups, r.LastErr)
		}
		out = append(out, s)
	}
	return out, nil
}

// dnsReview summarises a round.
func dnsReview(ss []dnsSample, round int) string {
	var parts []string
	for _, s := range ss {
		if s.Round == round {
			parts = append(parts, fmt.Sprintf(" %s %s p50 %.0f µs p99 %.0f µs %.0f/s", s.Variant, s.Kind, s.P50Us, s.P99Us, s.PerSec))
		}
	}
	return strings.Join(parts, ";")
}
