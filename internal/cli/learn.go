package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/cgwall/cgwall/internal/datapath"
	"github.com/cgwall/cgwall/internal/learn"
	"github.com/cgwall/cgwall/internal/policy"
	"github.com/cgwall/cgwall/internal/resolver"
)

// learnFlags ask exec (and watch) to write the policy that what the cgroup
// did calls for.
type learnFlags struct {
	fs        *pflag.FlagSet
	file      string
	merge     bool
	wildcards int
}

func (f *learnFlags) bind(fs *pflag.FlagSet) {
	f.fs = fs
	fs.StringVar(&f.file, "learn", "", "drop nothing, and write to `FILE` the policy that allows what the cgroup did and nothing more: default block, names where it used DNS")
	fs.BoolVar(&f.merge, "learn-merge", false, "with --learn, add to FILE if it exists, keeping its rules, order and comments; FILE is then the policy the cgroup runs under")
	fs.IntVar(&f.wildcards, "learn-wildcards", 0, "with --learn, fold `N` or more learned names (N at least 2) under one parent into *.parent, never at a public suffix; 0 folds none")
}

// baseFlags are the flags that make a policy: with --learn-merge, FILE is
// the policy, and these would say something that the file does not keep.
var baseFlags = []string{"file", "block", "allow", "block-in", "allow-in", "block-list", "allow-list", "block-in-list", "allow-in-list", "default", "default-in", "deny-raw"}

// prepare checks the flags and, for exec's merge into an existing FILE,
// makes FILE the policy that rules read (watch has no rules: nil). It
// returns nil without --learn.
func (f *learnFlags) prepare(rules *ruleFlags) (*learning, error) {
	if !f.fs.Changed("learn") {
		for _, name := range []string{"learn-merge", "learn-wildcards"} {
			if f.fs.Changed(name) {
				return nil, usageErr(fmt.Errorf("--%s: it goes with --learn FILE", name))
			}
		}
		return nil, nil
	}
	if f.file == "" {
		return nil, usageErr(errors.New("--learn: the FILE to write is empty"))
	}
	if f.wildcards < 0 || f.wildcards == 1 {
		return nil, usageErr(fmt.Errorf("--learn-wildcards: %d: use 2 or more names to fold under a parent, or 0 to fold none", f.wildcards))
	}
	if fi, err := os.Stat(f.file); err == nil && !fi.Mode().IsRegular() {
		// Found at the end, it would lose what the command did.
		return nil, usageErr(fmt.Errorf("--learn: %s is not a regular file", f.file))
	}
	l := &learning{path: f.file, wildcards: f.wildcards}
	if !f.merge {
		return l, nil
	}
	data, err := os.ReadFile(f.file)
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, usageErr(fmt.Errorf("--learn-merge: %w", err))
	}
	l.merging = data
	if rules == nil {
		// watch: the persistent policy is what the cgroup runs under.
		return l, nil
	}
	for _, name := range baseFlags {
		if rules.fs.Changed(name) {
			return nil, usageErr(fmt.Errorf("--learn-merge: %s is the policy the command runs under, so --%s cannot be given with it: put the rule into the file", f.file, name))
		}
	}
	if err := rules.fs.Set("file", f.file); err != nil {
		return nil, failure(err)
	}
	return l, nil
}

// learning is a policy being learned: where it goes, and the DNS answers
// that the cgroup got meanwhile.
type learning struct {
	path      string
	wildcards int
	merging   []byte         // FILE as it was, when adding to it; nil for a new file
	base      *policy.Policy // the policy as given, before audit mode
	tmp       *os.File       // made at start, so that a FILE that cannot be written fails before CMD runs

	mu      sync.Mutex
	answers []learn.Answer
	servers map[dnsServer]*learn.Flow // the DNS servers the cgroup asked (see answered)
}

type dnsServer struct {
	addr netip.AddrPort
	tcp  bool
}

// start takes the policy the cgroup runs under, as given (FILE keeps its
// rules), and makes the file that FILE becomes at the end.
func (l *learning) start(base *policy.Policy) error {
	l.base = base.Clone()
	// Beside FILE, for the rename at the end: in "." for a bare name, not
	// in the temporary folder that CreateTemp takes "" for.
	tmp, err := os.CreateTemp(filepath.Dir(l.path), "."+filepath.Base(l.path)+".*")
	if err != nil {
		return usageErr(fmt.Errorf("--learn: %s cannot be written: %w", l.path, err))
	}
	l.tmp = tmp
	return nil
}

// answered keeps what the resolver heard of an answer the cgroup got: its
// addresses, for names, and the server the query was for, as a flow, since
// the resolver took the query and the datapath saw none. The servers make
// rules only in a policy without name rules, where no resolver carries DNS.
func (l *learning) answered(a resolver.Answer) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(a.Addrs) > 0 {
		l.answers = append(l.answers, learn.Answer{Name: a.Name, Addrs: a.Addrs, Time: now})
	}
	if a.Asked.IsValid() {
		l.queried(a.Asked, a.TCP, now)
	}
}

// queried counts a query to server, under l.mu.
func (l *learning) queried(server netip.AddrPort, tcp bool, t time.Time) {
	k := dnsServer{server, tcp}
	if f := l.servers[k]; f != nil {
		f.Packets++
		return
	}
	if l.servers == nil {
		l.servers = map[dnsServer]*learn.Flow{}
	}
	proto := policy.ProtoUDP
	if tcp {
		proto = policy.ProtoTCP
	}
	l.servers[k] = &learn.Flow{Addr: server.Addr().Unmap(), Proto: proto, Port: server.Port(), First: t, Packets: 1}
}

// add keeps an answer that watch's observer read off the wire.
func (l *learning) add(a learn.Answer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.answers = append(l.answers, a)
}

// finish writes FILE from what d saw the cgroup do, and says what it wrote
// and what it could not learn.
func (l *learning) finish(d *datapath.Datapath, stderr io.Writer) error {
	flows, lost, err := d.Seen()
	if err != nil {
		return failure(err)
	}
	l.mu.Lock()
	answers := slices.Clone(l.answers)
	for _, f := range l.servers {
		flows = append(flows, *f)
	}
	l.mu.Unlock()
	res := learn.Learn(flows, answers, learn.Options{Base: l.base, Wildcards: l.wildcards})
	var out []byte
	if l.merging != nil {
		out, err = learn.Merge(l.path, l.merging, res.Rules)
	} else {
		out, err = learn.New(l.base, res.Rules)
	}
	if err != nil {
		return failure(fmt.Errorf("--learn: %w", err))
	}
	if err := l.commit(out); err != nil {
		return failure(fmt.Errorf("--learn: write %s: %w", l.path, err))
	}
	for _, b := range res.Blocked {
		fmt.Fprintf(stderr, "warning: learn: the cgroup sent to %s, which the policy blocks (rule %s): %s does not allow it\n", b.Flow, b.Rule, l.path)
	}
	if l.merging != nil && l.base.Default[policy.Egress] == policy.Allow {
		// Merge keeps the file's own settings, its default among them.
		fmt.Fprintf(stderr, "warning: learn: %s allows egress by default, so its allow rules lock nothing down: set egress default: block in it\n", l.path)
	}
	if lost > 0 {
		fmt.Fprintf(stderr, "warning: learn: %d destinations or DNS answers were not recorded (more than %d destinations, or answers faster than cgwall read them): %s lacks them\n", lost, datapath.DefaultSeenCapacity, l.path)
	}
	fmt.Fprintf(stderr, "learned %s into %s\n", plural(len(res.Rules), "rule"), l.path)
	return nil
}

// commit puts out in place of FILE at once: a reader never sees half of it.
func (l *learning) commit(out []byte) error {
	tmp := l.tmp
	l.tmp = nil
	defer os.Remove(tmp.Name()) // gone once renamed; else, not left behind
	_, err := tmp.Write(out)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), l.path)
}

// discard removes the file that was to become FILE, when nothing is
// written: cgwall failed before the command ran.
func (l *learning) discard() {
	if l == nil || l.tmp == nil {
		return
	}
	l.tmp.Close()
	os.Remove(l.tmp.Name())
	l.tmp = nil
}
