package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The end-to-end setup: UDP from a process in a cgroup, out of a veth into
// a namespace that drops it.
//
// Two namespace pairs are made, each a veth from a sending namespace
// (198.18.0.1/30) to a sink namespace (198.18.0.2/30). The sending namespace
// routes 198.19.0.0/16 to 198.18.0.2, whose MAC is a static (permanent)
// neighbour entry, so nothing ever has to answer ARP. The sink namespace does
// not forward, so it drops every packet silently after routing it, and no
// ICMP comes back. The sender runs in its own cgroup; only that cgroup is
// filtered, and only the sending namespace holds nftables or iptables rules.
// Pair "a" serves every variant but iptables-legacy, whose table stays
// registered in a namespace once used; it gets pair "b".

const (
	payloadBytes = 18 // UDP payload: 64-byte frames on the wire with Ethernet's FCS
	srcDev       = "cgwb0"
	sinkDev      = "cgwb1"
	srcMAC       = "02:00:00:c9:00:01"
	sinkMAC      = "02:00:00:c9:00:02"
)

var (
	trafficNet = netip.MustParsePrefix("198.18.0.0/15")
	firstDst   = netip.MustParseAddr("198.19.0.1")
)

type netnsPair struct{ src, sink string }

type e2eEnv struct {
	cfg     *config
	pairs   map[string]netnsPair // "a", "b"
	sendCg  string               // the sender's cgroup, absolute
	sendRel string               // the same, relative to the cgroup2 mount, with a leading /
	nftPath string               // the same as nft's socket cgroupv2 takes it
	level   int                  // its depth below the cgroup2 root
	dir     string               // rule files
	self    string               // this executable, for the sender
	list    bool                 // cgwall takes --block-list FILE (one prefix a line)
	rng     *rand.Rand           // the order of the variants in a slot
}

func newE2E(ctx context.Context, cfg *config, c *cleanups, env *runEnv) (*e2eEnv, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	e := &e2eEnv{cfg: cfg, pairs: map[string]netnsPair{}, sendCg: filepath.Join(env.root, "send"), dir: env.tmp, self: self, rng: newRand(7)}
	// cgwall loads large rule sets fastest from a list file; a binary given
	// with -cgwall may be older than that, and take its YAML policy file.
	if help, err := exec.CommandContext(ctx, cfg.cgwall, "run", "--help").CombinedOutput(); err == nil {
		e.list = strings.Contains(string(help), "--block-list")
	}
	if err := os.Mkdir(e.sendCg, 0o755); err != nil {
		return nil, err
	}
	rel, err := filepath.Rel(env.mnt, e.sendCg)
	if err != nil {
		return nil, err
	}
	e.sendRel, e.level = "/"+rel, len(strings.Split(rel, "/"))
	// nft resolves a cgroupv2 path under /sys/fs/cgroup; elsewhere it takes
	// the cgroup ID.
	if r, err := filepath.Rel("/sys/fs/cgroup", e.sendCg); err == nil && !strings.HasPrefix(r, "..") {
		e.nftPath = strconv.Quote(r)
	} else {
		var st syscall.Stat_t
		if err := syscall.Stat(e.sendCg, &st); err != nil {
			return nil, err
		}
		e.nftPath = strconv.FormatUint(st.Ino, 10)
	}
	for _, name := range []string{"a", "b"} {
		p := netnsPair{fmt.Sprintf("cgwb-%d-%s-src", os.Getpid(), name), fmt.Sprintf("cgwb-%d-%s-sink", os.Getpid(), name)}
		if err := makePair(ctx, c, p); err != nil {
			return nil, err
		}
		e.pairs[name] = p
	}
	return e, nil
}

func makePair(ctx context.Context, c *cleanups, p netnsPair) error {
	for _, ns := range []string{p.src, p.sink} {
		if err := command(ctx, "ip", "netns", "add", ns); err != nil {
			return err
		}
		c.add("delete netns "+ns, func() error { return command(context.Background(), "ip", "netns", "del", ns) })
	}
	noIPv6 := []string{"sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"}
	for _, argv := range [][]string{
		{"ip", "link", "add", srcDev, "address", srcMAC, "netns", p.src, "type", "veth", "peer", "name", sinkDev, "address", sinkMAC, "netns", p.sink},
		nsenter(p.src, noIPv6...),
		nsenter(p.sink, noIPv6...),
		nsenter(p.src, "ip", "addr", "add", "198.18.0.1/30", "dev", srcDev),
		nsenter(p.sink, "ip", "addr", "add", "198.18.0.2/30", "dev", sinkDev),
		nsenter(p.src, "ip", "link", "set", srcDev, "up"),
		nsenter(p.sink, "ip", "link", "set", sinkDev, "up"),
		nsenter(p.src, "ip", "neigh", "replace", "198.18.0.2", "lladdr", sinkMAC, "dev", srcDev, "nud", "permanent"),
		nsenter(p.src, "ip", "route", "add", "198.19.0.0/16", "via", "198.18.0.2", "dev", srcDev),
	} {
		if err := command(ctx, argv...); err != nil {
			return err
		}
	}
	return nil
}

// e2ePrefixes is the ipv4-mixed set of n rules, less any prefix that overlaps
// the benchmark range the traffic goes to, topped up with /32s outside it:
// every packet sent misses every rule and is let through, so each filter
// walks its whole structure (or list) for every packet.
func e2ePrefixes(n int) []netip.Prefix {
	rs := buildMixed4(n)
	out := make([]netip.Prefix, 0, n)
	for _, p := range rs.Prefixes {
		if !p.Overlaps(trafficNet) {
			out = append(out, p)
		}
	}
	rng := rand.New(rand.NewPCG(uint64(n), 99))
	for len(out) < n {
		v := rng.Uint32()
		a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		p := netip.PrefixFrom(a, 32)
		if trafficNet.Contains(a) || !rs.Add(p) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// ruleSetFiles are the same prefixes for each filter.
type ruleSetFiles struct{ cg, list, nft, ipt string }

// ruleFiles writes the same prefixes as a cgwall policy and list file, an
// nftables ruleset and an iptables-restore file.
func (e *e2eEnv) ruleFiles(n int) (ruleSetFiles, error) {
	prefixes := e2ePrefixes(n)
	base := filepath.Join(e.dir, "rules-"+human(n))
	f := ruleSetFiles{base + ".yaml", base + ".list", base + ".nft", base + ".iptables"}
	nftElem := func(p netip.Prefix) string {
		if p.IsSingleIP() {
			return "\t\t\t" + p.Addr().String()
		}
		return "\t\t\t" + p.String()
	}
	files := []struct {
		path, head, sep, tail string
		line                  func(netip.Prefix) string
	}{
		{f.list, "", "\n", "\n", netip.Prefix.String},
		{f.cg, "egress:\n  block:\n", "\n", "\nlog: none\n", func(p netip.Prefix) string { return "    - " + p.String() }},
		{f.nft, "table inet cgwall_bench {\n\tset blk {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tauto-merge\n\t\telements = {\n", ",\n",
			fmt.Sprintf("\n\t\t}\n\t}\n\tchain out {\n\t\ttype filter hook output priority filter; policy accept;\n"+
				"\t\tsocket cgroupv2 level %d %s ip daddr @blk drop\n\t}\n}\n", e.level, e.nftPath), nftElem},
		{f.ipt, "*filter\n", "\n", "\nCOMMIT\n", func(p netip.Prefix) string {
			return fmt.Sprintf("-A OUTPUT -d %s -m cgroup --path %s -j DROP", p, e.sendRel)
		}},
	}
	for _, file := range files {
		if file.path == f.ipt && n > e.cfg.iptablesMax {
			continue
		}
		var b strings.Builder
		b.WriteString(file.head)
		for i, p := range prefixes {
			if i > 0 {
				b.WriteString(file.sep)
			}
			b.WriteString(file.line(p))
		}
		b.WriteString(file.tail)
		if err := os.WriteFile(file.path, []byte(b.String()), 0o644); err != nil {
			return f, err
		}
	}
	return f, nil
}

func netnsPath(ns string) string { return filepath.Join("/run/netns", ns) }

// nsenter is the command line that runs args in a named network namespace:
// unlike 'ip netns exec', nsenter leaves /sys alone.
func nsenter(ns string, args ...string) []string {
	return append([]string{"nsenter", "--net=" + netnsPath(ns), "--"}, args...)
}
