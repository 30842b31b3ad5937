package main

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/template"

	"github.com/cgwall/cgwall/internal/ruleset"
)

// The end-to-end setup: UDP from a process in a cgroup, out of a veth into
// a namespace that drops it. Each of two namespace pairs is a veth from a
// sending namespace (198.18.0.1/30) to a sink namespace (198.18.0.2/30)
// that does not forward, so it drops every packet silently after routing it
// and no ICMP comes back. Pair "a" serves every variant but
// iptables-legacy, whose table stays registered in a namespace once used;
// it gets pair "b". Pair "c" has nftables alone, in the interleaved runs
// (interleave.go), where the other arms send through pair "a" at the same
// time. The IPv6 runs send over the same veth, from
// 2001:db8:ffff:ffff::1/64 to 2001:db8:ffff::/64 through its peer, where a
// blackhole route drops them as silently.

const (
	payloadBytes = 18 // UDP payload: 64-byte frames on the wire with Ethernet's FCS
	srcDev       = "cgwb0"
	sinkDev      = "cgwb1"
	sinkMAC      = "02:00:00:c9:00:02"
)

var (
	trafficNet = netip.MustParsePrefix("198.18.0.0/15")
	firstDst   = netip.MustParseAddr("198.19.0.1")
	// IPv6: the ipv6 set's rules are drawn from 2001:db8::/32; those
	// overlapping this /48 are left out, as those overlapping trafficNet.
	trafficNet6 = netip.MustParsePrefix("2001:db8:ffff::/48")
	firstDst6   = netip.MustParseAddr("2001:db8:ffff::1")
)

// firstDestination is where a family's traffic begins.
func firstDestination(family int) netip.Addr {
	if family == 6 {
		return firstDst6
	}
	return firstDst
}

type netnsPair struct{ src, sink string }

// pairCommands make a pair. The sending namespace routes 198.19.0.0/16 and
// 2001:db8:ffff::/64 to the sink through static neighbour entries, so
// nothing has to answer ARP or neighbour solicitations. IPv6 is on only on
// the veth, without a link-local address and without duplicate address
// detection, so that nothing else is sent (router solicitations wait for a
// link-local address): only the MLD reports of joining the addresses'
// groups, once, when the pair is made.
func pairCommands(p netnsPair) [][]string {
	noIPv6 := []string{"sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"}
	veth6 := func(dev string) []string {
		return []string{"sysctl", "-qw", "net.ipv6.conf." + dev + ".addr_gen_mode=1", "net.ipv6.conf." + dev + ".accept_ra=0", "net.ipv6.conf." + dev + ".disable_ipv6=0"}
	}
	return [][]string{
		{"ip", "link", "add", srcDev, "address", "02:00:00:c9:00:01", "netns", p.src, "type", "veth", "peer", "name", sinkDev, "address", sinkMAC, "netns", p.sink},
		nsenter(p.src, noIPv6...),
		nsenter(p.sink, noIPv6...),
		nsenter(p.src, veth6(srcDev)...),
		nsenter(p.sink, veth6(sinkDev)...),
		nsenter(p.src, "ip", "addr", "add", "198.18.0.1/30", "dev", srcDev),
		nsenter(p.sink, "ip", "addr", "add", "198.18.0.2/30", "dev", sinkDev),
		nsenter(p.src, "ip", "-6", "addr", "add", "2001:db8:ffff:ffff::1/64", "dev", srcDev, "nodad"),
		nsenter(p.sink, "ip", "-6", "addr", "add", "2001:db8:ffff:ffff::2/64", "dev", sinkDev, "nodad"),
		nsenter(p.src, "ip", "link", "set", srcDev, "up"),
		nsenter(p.sink, "ip", "link", "set", sinkDev, "up"),
		nsenter(p.src, "ip", "neigh", "replace", "198.18.0.2", "lladdr", sinkMAC, "dev", srcDev, "nud", "permanent"),
		nsenter(p.src, "ip", "route", "add", "198.19.0.0/16", "via", "198.18.0.2", "dev", srcDev),
		nsenter(p.src, "ip", "-6", "neigh", "replace", "2001:db8:ffff:ffff::2", "lladdr", sinkMAC, "dev", srcDev, "nud", "permanent"),
		nsenter(p.src, "ip", "-6", "route", "add", "2001:db8:ffff::/64", "via", "2001:db8:ffff:ffff::2", "dev", srcDev),
		nsenter(p.sink, "ip", "-6", "route", "add", "blackhole", "2001:db8:ffff::/64"),
	}
}

func netnsPath(ns string) string { return filepath.Join("/run/netns", ns) }

// nsenter is the command line that runs args in a named network namespace:
// unlike 'ip netns exec', nsenter leaves /sys alone.
func nsenter(ns string, args ...string) []string {
	return append([]string{"nsenter", "--net=" + netnsPath(ns), "--"}, args...)
}

// sendCgroup is the sender's cgroup, as each filter names it.
type sendCgroup struct {
	Path    string // absolute: cgwall and BPF
	Rel     string // below the cgroup2 mount, with a leading /: iptables' --path
	Level   int    // its depth below the cgroup2 root: nft's socket cgroupv2 level
	NftPath string // a quoted path below /sys/fs/cgroup, where nft looks, or else the cgroup ID
}

type e2eEnv struct {
	cfg   *config
	pairs map[string]netnsPair // "a", "b", "c"
	cg    sendCgroup           // the sender's, where cgwall is
	// The interleaved runs' (interleave.go) other arms: a cgroup with the
	// empty programs, one with none, and one that nftables' rules name.
	floorCg, plainCg, nftCg sendCgroup
	dir                     string       // rule files
	self                    string       // this executable, for the sender
	list                    bool         // cgwall takes --block-list FILE (one prefix a line)
	rng                     *rand.Rand   // the order of the variants in a slot
	stopped                 map[stop]int // the size at which an iptables variant fell below 1% of no filter
}

type stop struct {
	variant string
	dsts    int
}

func newE2E(ctx context.Context, cfg *config, c *cleanups, env *runEnv) (*e2eEnv, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	e := &e2eEnv{cfg: cfg, pairs: map[string]netnsPair{}, dir: env.tmp, self: self, rng: rand.New(rand.NewPCG(7, 1)), stopped: map[stop]int{}}
	// cgwall loads large rule sets fastest from a list file; a binary given
	// with -cgwall may be older than that, and take its YAML policy file.
	if help, err := exec.CommandContext(ctx, cfg.cgwall, "run", "--help").CombinedOutput(); err == nil {
		e.list = strings.Contains(string(help), "--block-list")
	}
	for cg, name := range map[*sendCgroup]string{&e.cg: "send", &e.floorCg: "floor", &e.plainCg: "plain", &e.nftCg: "nft"} {
		if *cg, err = makeSendCgroup(env, name); err != nil {
			return nil, err
		}
	}
	for _, name := range []string{"a", "b", "c"} {
		p := netnsPair{fmt.Sprintf("cgwb-%d-%s-src", os.Getpid(), name), fmt.Sprintf("cgwb-%d-%s-sink", os.Getpid(), name)}
		for _, ns := range []string{p.src, p.sink} {
			if err := command(ctx, "ip", "netns", "add", ns); err != nil {
				return nil, err
			}
			c.add("delete netns "+ns, func() error { return command(context.Background(), "ip", "netns", "del", ns) })
		}
		for _, argv := range pairCommands(p) {
			if err := command(ctx, argv...); err != nil {
				return nil, err
			}
		}
		e.pairs[name] = p
	}
	return e, nil
}

func makeSendCgroup(env *runEnv, name string) (sendCgroup, error) {
	cg := sendCgroup{Path: filepath.Join(env.root, name)}
	if err := os.Mkdir(cg.Path, 0o755); err != nil {
		return cg, err
	}
	rel, err := filepath.Rel(env.mnt, cg.Path)
	if err != nil {
		return cg, err
	}
	cg.Rel, cg.Level = "/"+rel, len(strings.Split(rel, "/"))
	if r, err := filepath.Rel("/sys/fs/cgroup", cg.Path); err == nil && !strings.HasPrefix(r, "..") {
		cg.NftPath = strconv.Quote(r)
		return cg, nil
	}
	var st syscall.Stat_t
	err = syscall.Stat(cg.Path, &st)
	cg.NftPath = strconv.FormatUint(st.Ino, 10)
	return cg, err
}

// e2ePrefixes is the ipv4-mixed set of n rules, less any prefix that overlaps
// the benchmark range the traffic goes to, topped up with /32s outside it:
// every packet sent misses every rule and is let through, so each filter
// walks its whole structure (or list) for every packet. For family 6 it is
// e2ePrefixes6.
func e2ePrefixes(n, family int) []netip.Prefix {
	if family == 6 {
		return e2ePrefixes6(n)
	}
	rs := ruleset.Mixed4(n)
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
		if p := netip.PrefixFrom(a, 32); !trafficNet.Contains(a) && rs.Add(p) {
			out = append(out, p)
		}
	}
	return out
}

// e2ePrefixes6 is the ipv6 set of n rules, less any prefix that overlaps
// trafficNet6, topped up with /128s in 2001:db8::/32 outside it.
func e2ePrefixes6(n int) []netip.Prefix {
	var rs *ruleset.Set
	for _, k := range ruleset.Kinds {
		if k.Name == "ipv6" {
			rs = k.Build(n)
		}
	}
	out := make([]netip.Prefix, 0, n)
	for _, p := range rs.Prefixes {
		if !p.Overlaps(trafficNet6) {
			out = append(out, p)
		}
	}
	docs := netip.MustParsePrefix("2001:db8::/32")
	for len(out) < n {
		a := rs.Inside(docs)
		if p := netip.PrefixFrom(a, 128); !trafficNet6.Contains(a) && rs.Add(p) {
			out = append(out, p)
		}
	}
	return out
}

//go:embed rules.tmpl
var rulesText string

var rulesTmpl = template.Must(template.New("").Parse(rulesText))

// ruleFiles are the same prefixes in each filter's format: list, yaml, nft,
// iptables.
type ruleFiles map[string]string

// writeRules writes the ruleFiles of n prefixes of a family, but none for
// iptables above the size it is measured at, or for IPv6; and nftAlone's at
// the sizes with interleaved runs.
func (e *e2eEnv) writeRules(n, family int) (ruleFiles, error) {
	data := struct {
		sendCgroup
		Family   int
		Prefixes []netip.Prefix
	}{e.cg, family, e2ePrefixes(n, family)}
	files := ruleFiles{}
	for _, format := range []string{"list", "yaml", "nft", "iptables"} {
		if format == "iptables" && (n > e.cfg.IptablesMax || family == 6) {
			continue
		}
		path, err := writeRules(filepath.Join(e.dir, fmt.Sprintf("rules%d-%s.%s", family, human(n), format)), format, data)
		if err != nil {
			return nil, err
		}
		files[format] = path
	}
	if slices.Contains(e.cfg.Interleaved, n) {
		data.sendCgroup = e.nftCg
		path, err := writeRules(filepath.Join(e.dir, fmt.Sprintf("rules%d-%s-alone.nft", family, human(n))), "nft", data)
		if err != nil {
			return nil, err
		}
		files[nftAlone] = path
	}
	return files, nil
}

// writeRules writes the rules template tmpl, executed on data, to path.
func writeRules(path, tmpl string, data any) (string, error) {
	var b bytes.Buffer
	if err := rulesTmpl.ExecuteTemplate(&b, tmpl, data); err != nil {
		return "", err
	}
	return path, os.WriteFile(path, b.Bytes(), 0o644)
}
