package testutil

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// This file is the DNS server of the tests of rules by name: a real dnsmasq
// (Debian's dnsmasq-base) that answers names under .test from a hosts file
// and from CNAMEs, and nothing else, on port 53 of a loopback address, so
// that real clients (the C library's resolver, dig) can be pointed at it
// with an /etc/resolv.conf of their own.

// Zone is what the DNS fixture answers. Every name is under .test; a name
// under .test that the zone lacks is NXDOMAIN (dnsmasq is the authority for
// .test and has no upstream).
type Zone struct {
	// Hosts maps a name to its addresses: an A record for each IPv4
	// address, an AAAA record for each IPv6 one. Only loopback addresses,
	// or addresses of test namespaces, are ever connected to.
	Hosts map[string][]string
	// CNAMEs maps an alias to its target, a name of Hosts or another alias.
	CNAMEs map[string]string
	// TTL is every answer's TTL; zero is a minute.
	TTL time.Duration
	// Quiet leaves out dnsmasq's line for each query (DNS.Log), which a
	// benchmark's thousands of lookups do not need.
	Quiet bool
}

// DNSOptions say where the fixture runs.
type DNSOptions struct {
	// NetNS is the path of the network namespace to serve in (for nsenter
	// --net=); empty is the test's own.
	NetNS string
	// Addr is the loopback address to listen on, port 53, UDP and TCP; the
	// zero Addr is 127.0.0.53.
	Addr netip.Addr
}

// DNS is a running dnsmasq.
type DNS struct {
	// Addr is where it answers, on port 53.
	Addr  netip.Addr
	netns string
	// ResolvConf is a file that names Addr as the only nameserver, for
	// clients to see as /etc/resolv.conf (Command).
	ResolvConf string
	// Log is dnsmasq's log: one "query[A] NAME from ADDR" line for every
	// query it got, then how it answered it.
	Log  *Lines
	proc *Proc
}

// StartDNS starts dnsmasq serving z, waits until it has read its records,
// and stops it at the end of the test.
func StartDNS(tb testing.TB, z Zone, o DNSOptions) *DNS {
	tb.Helper()
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		tb.Fatalf("dnsmasq is missing: install dnsmasq-base (./test.sh does): %v", err)
	}
	if !o.Addr.IsValid() {
		o.Addr = netip.MustParseAddr("127.0.0.53")
	}
	// dnsmasq drops its privileges to nobody before it reads its files: the
	// folder must be open to every user.
	dir, err := os.MkdirTemp("", "cgwall-dnsmasq-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	d := &DNS{Addr: o.Addr, netns: o.NetNS, ResolvConf: filepath.Join(dir, "resolv.conf")}
	if err := os.WriteFile(d.ResolvConf, []byte("nameserver "+o.Addr.String()+"\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	args, ready, err := z.Dnsmasq(dir, o.Addr)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	p, err := Start(ctx, d.inNetNS(append([]string{"dnsmasq"}, args...)), ready)
	if err != nil {
		tb.Fatalf("start dnsmasq: %v", err)
	}
	d.proc, d.Log = p, p.Stderr
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if _, err := p.StopWith(ctx, syscall.SIGTERM); err != nil {
			tb.Error(err)
		}
	})
	return d
}

// Dnsmasq writes the zone's files into dir, which every user must be able
// to read (dnsmasq drops its privileges to nobody before it reads them), and
// returns dnsmasq's arguments to serve the zone on port 53 of addr, and the
// line of its stderr that says it is ready: the one that says the hosts file
// was read comes after the sockets are bound and before the first query is
// answered.
func (z Zone) Dnsmasq(dir string, addr netip.Addr) (args []string, ready string, err error) {
	hosts, conf := filepath.Join(dir, "hosts"), filepath.Join(dir, "dnsmasq.conf")
	// Nothing of the host's dnsmasq configuration applies.
	for path, text := range map[string]string{hosts: z.hostsFile(), conf: ""} {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			return nil, "", err
		}
	}
	return z.args(addr, hosts, conf), "read " + hosts, nil
}

// args are dnsmasq's flags: in the foreground, logging to stderr (every
// query unless Quiet), answering from its own files only.
func (z Zone) args(addr netip.Addr, hosts, conf string) []string {
	ttl := z.TTL
	if ttl == 0 {
		ttl = time.Minute
	}
	secs := strconv.Itoa(max(int(ttl/time.Second), 1))
	args := []string{
		"--keep-in-foreground", "--log-facility=-",
		"--conf-file=" + conf, "--pid-file=",
		"--no-resolv", "--no-hosts", "--no-poll",
		"--bind-interfaces", "--listen-address=" + addr.String(), "--port=53",
		// The authority for .test: what the zone lacks is NXDOMAIN.
		"--local=/test/",
		"--addn-hosts=" + hosts, "--local-ttl=" + secs,
	}
	if !z.Quiet {
		args = append(args, "--log-queries")
	}
	for _, alias := range slices.Sorted(maps.Keys(z.CNAMEs)) {
		args = append(args, "--cname="+alias+","+z.CNAMEs[alias]+","+secs)
	}
	return args
}

func (z Zone) hostsFile() string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(z.Hosts)) {
		for _, a := range z.Hosts[name] {
			fmt.Fprintf(&b, "%s %s\n", a, name)
		}
	}
	return b.String()
}

// inNetNS makes argv a command that runs in the fixture's namespace.
func (d *DNS) inNetNS(argv []string) *exec.Cmd {
	if d.netns != "" {
		argv = append([]string{"nsenter", "--net=" + d.netns, "--"}, argv...)
	}
	return exec.Command(argv[0], argv[1:]...)
}

// Command returns a command that runs argv as a client of the fixture: in
// its network namespace, in a private mount namespace in which
// /etc/resolv.conf is ResolvConf (bind-mounted), so that the C library's
// resolver, dig and every other stock client ask the fixture. The caller
// puts it in a cgroup (SysProcAttr.CgroupFD): every process of it is there,
// nsenter and unshare included.
func (d *DNS) Command(argv ...string) *exec.Cmd {
	return d.inNetNS(append([]string{
		"unshare", "--mount", "--propagation", "private",
		"sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$@"`, d.ResolvConf,
	}, argv...))
}

// WaitQuery waits until dnsmasq has logged a query of type qtype (A, AAAA)
// for name, and returns the line.
func (d *DNS) WaitQuery(ctx context.Context, qtype, name string) (string, error) {
	return d.Log.WaitFor(ctx, "query["+qtype+"] "+name+" from ")
}

// Queried says whether dnsmasq has logged a query for name, of any type, so
// far. To know that a query never came, wait for a later one first.
func (d *DNS) Queried(name string) bool {
	for _, line := range d.Log.All() {
		if _, rest, ok := strings.Cut(line, "query["); ok && strings.Contains(rest, "] "+name+" from ") {
			return true
		}
	}
	return false
}
